"""Per-method RPC statistics: call durations by method and status code, for the metrics.

Recorded by the gRPC face's telemetry interceptor on the event loop thread, read by the
metrics on the same thread (`snapshot`), so there is no lock. Methods and codes are the
face's strings; this module knows no transport.
"""

from __future__ import annotations

from server.core.statistics import Buckets


class RpcStats:
    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], Buckets] = {}

    def buckets(self, method: str, code: str) -> Buckets:
        """The histogram of `method` (its full name, `package.Service/Method`) ending with
        `code`; callers may keep it and `add` to it directly."""
        key = (method, code)
        buckets = self._calls.get(key)
        if buckets is None:
            buckets = self._calls[key] = Buckets()
        return buckets

    def record(self, method: str, code: str, ns: int) -> None:
        """One call of `method` ended with `code`."""
        self.buckets(method, code).add(ns)

    def snapshot(self) -> dict[tuple[str, str], Buckets]:
        """Copies, to be read off the event loop thread."""
        return {key: Buckets(b.bounds, list(b.counts), b.total) for key, b in self._calls.items()}
