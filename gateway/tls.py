"""TLS on both sides of the gateway: Envoy transport sockets whose certificates come from
file-based SDS.

Why SDS and not certificates inline in the bootstrap: Envoy reads an inline certificate
once, but re-reads an SDS secret's files whenever a file is moved into their directory (a
rename, or Kubernetes' symlink swap of a mounted secret), so a rotated certificate is
served from the next handshake on, without a restart. Each secret is a small file,
`<secrets dir>/<name>.yaml`, that names the certificate files; the gateway writes it beside
its configuration.
"""

import ipaddress
import json
from pathlib import Path
from typing import Any

from gateway.settings import GatewaySettings

_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
LISTENER_CERT = "listener_cert"
UPSTREAM_CA = "upstream_ca"
UPSTREAM_CLIENT_CERT = "upstream_client_cert"


def _certificate(cert_file: Path, key_file: Path) -> dict[str, Any]:
    # Absolute: Envoy resolves relative paths against its working directory.
    return {
        "tls_certificate": {
            "certificate_chain": {"filename": str(cert_file.resolve())},
            "private_key": {"filename": str(key_file.resolve())},
        }
    }


def secrets(settings: GatewaySettings) -> dict[str, dict[str, Any]]:
    """The SDS secrets these settings need, by name (a Secret resource without its name)."""
    found: dict[str, dict[str, Any]] = {}
    if settings.tls is not None:
        found[LISTENER_CERT] = _certificate(settings.tls.cert_file, settings.tls.key_file)
    upstream = settings.upstream_tls
    if upstream is not None:
        trusted = {"trusted_ca": {"filename": str(upstream.ca_file.resolve())}}
        found[UPSTREAM_CA] = {"validation_context": trusted}
        if upstream.cert_file is not None and upstream.key_file is not None:
            found[UPSTREAM_CLIENT_CERT] = _certificate(upstream.cert_file, upstream.key_file)
    return found


def write_secrets(settings: GatewaySettings, directory: Path) -> None:
    """Write each secret's SDS file into `directory` (which the configuration names)."""
    for name, secret in secrets(settings).items():
        directory.mkdir(parents=True, exist_ok=True)
        resource = {"@type": f"{_TLS}Secret", "name": name, **secret}
        (directory / f"{name}.yaml").write_text(json.dumps({"resources": [resource]}))


def _sds(name: str, directory: Path) -> dict[str, Any]:
    source = {"path_config_source": {"path": str((directory / f"{name}.yaml").resolve())}}
    return {"name": name, "sds_config": {**source, "resource_api_version": "V3"}}


def _transport_socket(context: dict[str, Any]) -> dict[str, Any]:
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def listener_transport_socket(settings: GatewaySettings, directory: Path) -> dict[str, Any] | None:
    """The listener's TLS, offering h2 (gRPC) and HTTP/1.1 (curl, browsers) by ALPN."""
    if settings.tls is None:
        return None
    common = {
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_certificate_sds_secret_configs": [_sds(LISTENER_CERT, directory)],
    }
    return _transport_socket({"@type": f"{_TLS}DownstreamTlsContext", "common_tls_context": common})


def _subject_alt_name(name: str) -> dict[str, Any]:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return {"san_type": "DNS", "matcher": {"exact": name}}
    return {"san_type": "IP_ADDRESS", "matcher": {"exact": name}}


def upstream_transport_socket(settings: GatewaySettings, directory: Path) -> dict[str, Any] | None:
    """TLS to the server: its certificate must chain to the CA and carry the server's name
    (any certificate the CA ever signed would do otherwise); a client certificate for
    mutual TLS when one is configured. gRPC servers insist on ALPN h2."""
    upstream = settings.upstream_tls
    if upstream is None:
        return None
    name = upstream.server_name or settings.upstreams[0].host  # replicas share one name
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": [_subject_alt_name(name)]
            },
            "validation_context_sds_secret_config": _sds(UPSTREAM_CA, directory),
        },
    }
    if upstream.cert_file is not None:
        common["tls_certificate_sds_secret_configs"] = [_sds(UPSTREAM_CLIENT_CERT, directory)]
    context: dict[str, Any] = {"@type": f"{_TLS}UpstreamTlsContext", "common_tls_context": common}
    if _subject_alt_name(name)["san_type"] == "DNS":
        context["sni"] = name
    return _transport_socket(context)
