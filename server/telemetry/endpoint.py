"""The /metrics HTTP endpoint: a small threaded HTTP server off the event loop.

GET /metrics answers the Prometheus text format from `render`; any other path is 404, and
a render that fails (the event loop did not answer in time) is 503, so that Prometheus
records the scrape as failed instead of reading partial numbers.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

PATH = "/metrics"


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class MetricsEndpoint:
    def __init__(self, render: Callable[[], bytes], host: str, port: int) -> None:
        self._render = render
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind and serve in a daemon thread; returns the bound port (for port 0)."""
        render = self._render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != PATH:
                    self.send_error(404, f"metrics are at {PATH}")
                    return
                try:
                    body = render()
                except Exception as exc:
                    log.warning("metrics scrape failed", extra={"reason": str(exc)})
                    self.send_error(503, "metrics unavailable")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes are not worth a log line each

        server_class = _Server6 if ":" in self._address[0] else ThreadingHTTPServer
        self._server = server_class(self._address, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
