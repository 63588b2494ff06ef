"""Envoy's admin interface: what the launcher asks a running Envoy."""

import json
import urllib.error
import urllib.request
from dataclasses import dataclass


class AdminUnavailable(RuntimeError):
    """The admin interface did not answer (Envoy is starting or gone)."""


@dataclass(frozen=True, slots=True)
class Admin:
    """The admin interface at `address` ("host:port", as Envoy writes it)."""

    address: str

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(f"http://{self.address}{path}", timeout=5) as reply:
                return reply.read().decode()
        except (urllib.error.URLError, ConnectionError) as exc:
            raise AdminUnavailable(f"{self.address}{path}: {exc}") from exc

    def is_ready(self) -> bool:
        """Initialized: clusters warmed (first health check done), listeners bound."""
        try:
            return self.get("/ready").strip() == "LIVE"
        except (AdminUnavailable, ValueError):
            return False

    def listener_port(self, name: str) -> int:
        """The port a listener is bound to (what port 0 became)."""
        statuses = json.loads(self.get("/listeners?format=json"))["listener_statuses"]
        listener = next(s for s in statuses if s["name"] == name)
        return int(listener["local_address"]["socket_address"]["port_value"])

    def cluster_healthy(self, cluster: str) -> bool:
        """Whether every host of `cluster` passes its active health check."""
        flags = [
            line.rsplit("::", 1)[1]
            for line in self.get("/clusters").splitlines()
            if line.startswith(f"{cluster}::") and "::health_flags::" in line
        ]
        return bool(flags) and all(f == "healthy" for f in flags)
