"""Envoy's access log: one JSON object per request, to standard output or a file.

It joins the server's logs and traces by `request_id` (x-request-id, kept from the caller
or made by Envoy, and forwarded to the server) and `trace_id`, the caller's W3C
`traceparent` trace id. Envoy makes no spans of its own (that would need a collector for
the gateway too): it forwards `traceparent` and `tracestate` untouched, so the server's
span is the caller's child, and the `header_to_metadata` filter below copies the trace id
out of `traceparent` for this log.
"""

from pathlib import Path
from typing import Any

from gateway.settings import GatewaySettings

_EXTENSIONS = "type.googleapis.com/envoy.extensions."

# Dynamic metadata where the trace id is kept for the log line.
TRACE_METADATA = ("gateway.trace", "trace_id")

# A traceparent is `version-traceid-parentid-flags`; anything else leaves the trace id
# empty (the second alternative matches, group 1 is empty), so no metadata. Lengths are
# not checked: RE2 counts each repetition, and Envoy refuses programs over 100.
_TRACEPARENT = r"^(?:[[:xdigit:]]{2}-([[:xdigit:]]+)-[[:xdigit:]]+-[[:xdigit:]]{2}|.*)$"

# Each value is one Envoy command, so numbers stay numbers; an absent value is null.
FIELDS = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    # The path the caller sent, before the transcoder rewrote it to the gRPC method.
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS(NUMBER)%",
    "response_flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_host": "%UPSTREAM_HOST%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "trace_id": f"%DYNAMIC_METADATA({':'.join(TRACE_METADATA)})%",
    "user_agent": "%REQ(USER-AGENT)%",
}


def access_logs(settings: GatewaySettings) -> list[dict[str, Any]]:
    """The connection manager's access loggers for `settings.access_log`."""
    if not settings.access_log:
        return []
    log_format = {"json_format": FIELDS}
    if settings.access_log == "-":
        kind = "stdout"
        config: dict[str, Any] = {"@type": f"{_EXTENSIONS}access_loggers.stream.v3.StdoutAccessLog"}
    else:
        kind = "file"
        config = {
            "@type": f"{_EXTENSIONS}access_loggers.file.v3.FileAccessLog",
            "path": str(Path(settings.access_log).resolve()),
        }
    return [
        {
            "name": f"envoy.access_loggers.{kind}",
            "typed_config": {**config, "log_format": log_format},
        }
    ]


def trace_id_filter() -> dict[str, Any]:
    """An HTTP filter that copies the trace id of `traceparent` into dynamic metadata."""
    namespace, key = TRACE_METADATA
    rule = {
        "header": "traceparent",
        "on_header_present": {
            "metadata_namespace": namespace,
            "key": key,
            "regex_value_rewrite": {"pattern": {"regex": _TRACEPARENT}, "substitution": r"\1"},
        },
        "remove": False,
    }
    return {
        "name": "envoy.filters.http.header_to_metadata",
        "typed_config": {
            "@type": f"{_EXTENSIONS}filters.http.header_to_metadata.v3.Config",
            "request_rules": [rule],
        },
    }
