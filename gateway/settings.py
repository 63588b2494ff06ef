"""The gateway's settings: one frozen object, built once at start-up."""

from dataclasses import dataclass
from pathlib import Path

from gateway.paths import BUILD_DIR, BuildOutputs

# Local development pages, on any port; `*` alone allows every origin.
DEFAULT_CORS_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*")


@dataclass(frozen=True, slots=True)
class StaticFile:
    """A file the gateway serves itself at one exact path (read at start-up)."""

    url_path: str
    file: Path
    content_type: str


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Where Envoy listens, where it forwards to, and what it serves itself."""

    listen_host: str = "127.0.0.1"
    """Address of the one listener for REST, gRPC-web and native gRPC."""
    listen_port: int = 8000
    """Its port; 0 picks a free one (the launcher reports which)."""
    upstream_host: str = "127.0.0.1"
    """The inference server's gRPC address: an IP or a DNS name."""
    upstream_port: int = 8001
    admin_host: str = "127.0.0.1"
    """Envoy's admin interface; keep it on loopback, it can stop the proxy."""
    admin_port: int = 9901
    """0 picks a free one."""
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    """Origins allowed to call from a browser: exact, `*` as a wildcard within one (as in
    `http://localhost:*`), or `*` alone for any origin."""
    build_dir: Path = BUILD_DIR
    """Where `python -m gateway build` put the descriptor set and the OpenAPI document."""
    static_files: tuple[StaticFile, ...] = ()
    """More files to serve, such as a demo page."""

    @property
    def built(self) -> BuildOutputs:
        return BuildOutputs.in_dir(self.build_dir)

    def served_files(self) -> tuple[StaticFile, ...]:
        """Every file Envoy answers for itself: the OpenAPI document, then the extras."""
        openapi = StaticFile("/openapi.json", self.built.openapi_path, "application/json")
        return (openapi, *self.static_files)
