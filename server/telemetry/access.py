"""The access log: one JSON record per sampled RPC, on the logger `server.access`.

Off by default (`--access-log-sample 0`); then the gRPC face installs no access logging
at all. When on, a fraction of RPCs is logged, decided per RPC with one random draw:

    {"event": "access", "method": "inference.GRPCInferenceService/ModelInfer",
     "request_id": "7", "model": "digits", "version": "2", "status": "OK",
     "duration_ms": 0.41, "trace_id": "4bf9..."}

`trace_id` is the RPC span's when tracing is on, and otherwise the one in the incoming
`traceparent` (Envoy's, say), so the line joins the trace either way.
"""

from __future__ import annotations

import logging
import random

from opentelemetry import trace

from server.telemetry.logs import ACCESS

log = logging.getLogger(ACCESS)


def trace_id_of(traceparent: str) -> str:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), or ""."""
    parts = traceparent.split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1].lower()
    return ""


class AccessLog:
    def __init__(self, sample: float) -> None:
        self.sample = sample
        self._random = random.random

    def sampled(self) -> bool:
        return self._random() < self.sample

    def write(
        self,
        method: str,
        status: str,
        duration_ns: int,
        request_id: str = "",
        model: str = "",
        version: str = "",
        traceparent: str = "",
        messages: int | None = None,
    ) -> None:
        context = trace.get_current_span().get_span_context()
        trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        record = {
            "event": "access",
            "method": method,
            "request_id": request_id,
            "model": model,
            "version": version,
            "status": status,
            "duration_ms": round(duration_ns / 1e6, 3),
            "trace_id": trace_id or trace_id_of(traceparent),
        }
        if messages is not None:
            record["messages"] = messages
        log.info("access", extra=record)
