"""JSON log lines on standard output: one object per line, with any `extra` fields.

A line written while a traced request is current carries its `trace_id` and `span_id`
(32 and 16 hex digits, as in `traceparent`), so logs join traces. The access log
(`server.access`) and the payload log (`server.payload`) are ordinary loggers on the same
stream; `configure(payload_file=...)` sends the payload log to a file of its own instead.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from opentelemetry import trace

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

ACCESS = "server.access"
PAYLOAD = "server.payload"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if "trace_id" not in entry:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                entry["trace_id"] = format(context.trace_id, "032x")
                entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str, payload_file: str = "") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    payload = logging.getLogger(PAYLOAD)
    payload.handlers.clear()
    payload.propagate = True
    if payload_file:
        sink = logging.FileHandler(payload_file)
        sink.setFormatter(JsonFormatter())
        payload.handlers.append(sink)
        payload.propagate = False
