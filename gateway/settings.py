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
class ListenerTls:
    """The listener's certificate chain (PEM, leaf first) and its unencrypted key. Envoy
    watches their directory and serves a certificate renamed into place from the next
    handshake on."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How Envoy checks the server's certificate, and the client certificate it shows a
    server that asks for one (mutual TLS). Watched like ListenerTls."""

    ca_file: Path
    """The CA bundle the server's certificate must chain to."""
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    """The name (or IP) the server's certificate must carry; default: the first upstream's
    host. A DNS name is also sent as SNI."""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both its certificate and key files")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One inference server (replica) the gateway forwards to."""

    host: str
    """An IP or a DNS name; every address a name resolves to is a replica."""
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


DEFAULT_UPSTREAMS = (Upstream("127.0.0.1", 8001),)
DEFAULT_HEALTH_CHECK_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Where Envoy listens, where it forwards to, and what it serves itself."""

    listen_host: str = "127.0.0.1"
    """Address of the one listener for REST, gRPC-web and native gRPC."""
    listen_port: int = 8000
    """Its port; 0 picks a free one (the launcher reports which)."""
    upstreams: tuple[Upstream, ...] = DEFAULT_UPSTREAMS
    """The inference servers' gRPC addresses; with several, each request goes to one of
    them (gateway/upstream.py)."""
    health_check_interval_s: float = DEFAULT_HEALTH_CHECK_INTERVAL_S
    """How often each upstream's health is checked; a replica's --shutdown-delay-s must
    exceed it plus the 1 s timeout, so that it is out of rotation before it stops."""
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
    access_log: str = "-"
    """Envoy's JSON access log, one line per request: `-` for standard output, a file
    path, or empty for none."""
    tls: ListenerTls | None = None
    """TLS on the listener (HTTPS, and gRPC over TLS); None: plaintext."""
    upstream_tls: UpstreamTls | None = None
    """TLS from Envoy to the server; None: plaintext h2c."""

    @property
    def built(self) -> BuildOutputs:
        return BuildOutputs.in_dir(self.build_dir)

    def served_files(self) -> tuple[StaticFile, ...]:
        """Every file Envoy answers for itself: the OpenAPI document, then the extras."""
        openapi = StaticFile("/openapi.json", self.built.openapi_path, "application/json")
        return (openapi, *self.static_files)
