"""Rendering the Envoy configuration from gateway/envoy.yaml and the settings."""

import json
import re
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from gateway import upstream
from gateway.access_log import access_logs, trace_id_filter
from gateway.settings import GatewaySettings, StaticFile
from gateway.tls import listener_transport_socket, upstream_transport_socket

# Room for the OpenAPI document and a demo page, each read into memory.
MAX_STATIC_BYTES = 4 * 1024 * 1024

# The line of the template that the static routes replace; its indentation
# is theirs.
_STATIC_ROUTES_LINE = re.compile(r"^( *)\$\{static_routes\}$", re.MULTILINE)

# Selects REST callers when Envoy replies itself. A gRPC-web request has
# become gRPC by then, and a REST request too once the transcoder has rewritten
# it (which it marks with x-envoy-original-path): the transcoder's own errors
# after that point (a malformed body) must still be JSON.
_REST_CALLER = {
    "or_filter": {
        "filters": [
            {
                "header_filter": {
                    "header": {
                        "name": "content-type",
                        "string_match": {"prefix": "application/grpc"},
                        "invert_match": True,
                        "treat_missing_header_as_empty": True,
                    }
                }
            },
            {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}},
        ]
    }
}


def local_reply_mappers() -> list[dict[str, Any]]:
    """Envoy's own error replies to REST callers (no route, no healthy upstream, a body too
    large) in V2 REST's error shape, `{"error": "..."}`, as the server's own errors."""
    status = {"default_value": 400, "runtime_key": "gateway.local_reply.error_status"}
    return [
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        {"status_code_filter": {"comparison": {"op": "GE", "value": status}}},
                        _REST_CALLER,
                    ]
                }
            },
            "body_format_override": {"json_format": {"error": "%LOCAL_REPLY_BODY%"}},
        }
    ]


def cors_origin_matcher(origin: str) -> dict[str, Any]:
    """An Envoy string matcher for one allowed origin (see GatewaySettings.cors_origins)."""
    if origin == "*":
        return {"safe_regex": {"regex": ".*"}}
    if "*" not in origin:
        return {"exact": origin}
    pattern = "[^/]*".join(re.escape(part) for part in origin.split("*"))
    return {"safe_regex": {"regex": pattern}}


def _static_route(static: StaticFile) -> dict[str, Any]:
    return {
        "match": {
            "path": static.url_path,
            "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
        },
        "direct_response": {"status": 200, "body": {"filename": str(static.file.resolve())}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": static.content_type},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "typed_per_filter_config": {
            "envoy.filters.http.grpc_json_transcoder": {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True,
            }
        },
    }


def render(settings: GatewaySettings, secrets_dir: Path) -> str:
    """The Envoy configuration (YAML) for these settings; its TLS secrets are read from
    `secrets_dir` (gateway.tls.write_secrets)."""
    text = (resources.files("gateway") / "envoy.yaml").read_text()
    placeholder = _STATIC_ROUTES_LINE.search(text)
    assert placeholder is not None, "envoy.yaml lost its ${static_routes} line"
    items = [f"- {json.dumps(_static_route(s))}" for s in settings.served_files()]
    static_routes = f"\n{placeholder.group(1)}".join(items)
    values = {
        "admin_host": settings.admin_host,
        "admin_port": settings.admin_port,
        "listen_host": settings.listen_host,
        "listen_port": settings.listen_port,
        "retry_policy": upstream.retry_policy(),
        "health_checks": upstream.health_checks(settings),
        "outlier_detection": upstream.outlier_detection(),
        "circuit_breakers": upstream.circuit_breakers(),
        "load_assignment": upstream.load_assignment(settings),
        "descriptor_path": str(settings.built.descriptor_path),
        "cors_origins": [cors_origin_matcher(o) for o in settings.cors_origins],
        "max_static_bytes": MAX_STATIC_BYTES,
        "local_reply_mappers": local_reply_mappers(),
        "access_log": access_logs(settings),
        "trace_id_filter": trace_id_filter(),
        "listener_transport_socket": listener_transport_socket(settings, secrets_dir),
        "upstream_transport_socket": upstream_transport_socket(settings, secrets_dir),
    }
    rendered = {key: json.dumps(value) for key, value in values.items()}
    return Template(text).substitute(rendered, static_routes=static_routes)
