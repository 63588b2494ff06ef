"""The upstream cluster's policies: which replica takes a request, and what happens when one
fails or stops (docs/deployment.md, "Scale-out with Envoy").

- Balancing is per request (HTTP/2 streams, native gRPC included), to the replica with the
  fewer requests in flight of two picked at random (LEAST_REQUEST).
- An active gRPC health check of `inference.GRPCInferenceService` takes a replica out of
  rotation when it stops accepting requests: during its shutdown delay (steps 1-2 in
  docs/operations.md) or when it is gone. No healthy replica means 503 at once, never
  traffic to a failing one (no panic mode).
- Outlier detection ejects a replica that fails between health checks: refused
  connections and resets at once, UNAVAILABLE or 5xx answers after a few in a row.
- Retries only for failures whose request is safe to send again: the server never
  started it (connect failure, refused stream, gRPC UNAVAILABLE from a stopping server),
  or it was cut off before any answer (reset), which is safe because every RPC behind the
  gateway is idempotent (stateless inference, reads, load/unload). A retry goes to another
  replica, and a budget bounds retries to a share of the requests in flight.
"""

from typing import Any

from gateway.settings import GatewaySettings

HEALTH_SERVICE = "inference.GRPCInferenceService"
HEALTH_CHECK_TIMEOUT_S = 1.0
RETRY_ON = "connect-failure,refused-stream,reset,unavailable"


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def load_assignment(settings: GatewaySettings) -> dict[str, Any]:
    """One endpoint per --upstream; a DNS name that resolves to several addresses (a
    headless Kubernetes Service) becomes one host per address (STRICT_DNS)."""
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": u.host, "port_value": u.port}}}}
        for u in settings.upstreams
    ]
    return {"cluster_name": "inference", "endpoints": [{"lb_endpoints": endpoints}]}


def health_checks(settings: GatewaySettings) -> list[dict[str, Any]]:
    """Accepting requests, whatever the models' states: service "" is readiness (every
    model ready), and one broken model must not take every replica out.

    One failed check takes a replica out and one passed check brings it back, so a
    replica's --shutdown-delay-s must exceed interval + timeout for it to be out of
    rotation before it stops accepting. An unhealthy replica, and a cluster without
    traffic yet (default 60 s), are checked at least every second, so a restarted replica
    rejoins within one."""
    interval = settings.health_check_interval_s
    fast = _duration(min(interval, 1.0))
    return [
        {
            "grpc_health_check": {"service_name": HEALTH_SERVICE},
            "timeout": _duration(HEALTH_CHECK_TIMEOUT_S),
            "interval": _duration(interval),
            "no_traffic_interval": fast,
            "unhealthy_interval": fast,
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
        }
    ]


def outlier_detection() -> dict[str, Any]:
    """Passive checks on live traffic, between health checks. Local-origin failures
    (refused connections, resets, timeouts: a dead replica) eject after 2 in a row; answers
    Envoy maps from gRPC status to 5xx (UNAVAILABLE 503, INTERNAL 500, DEADLINE_EXCEEDED
    504) after 3 gateway errors or 5 of any kind in a row. A client's own errors
    (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED) are 4xx and never eject. At most
    half the replicas are ejected (at least one always may be); a passed health check
    brings a replica back early."""
    return {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 2,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100,
        "consecutive_5xx": 5,
        "interval": "1s",
        "base_ejection_time": "5s",
        "max_ejection_time": "60s",
        "max_ejection_percent": 50,
    }


def circuit_breakers() -> dict[str, Any]:
    """The retry budget: retries in flight at most 20% of the requests in flight, and at
    least 8 whatever the load, so a replica's death retries its few requests in flight
    while a cluster-wide failure cannot double the load."""
    budget = {"budget_percent": {"value": 20.0}, "min_retry_concurrency": 8}
    return {"thresholds": [{"priority": "DEFAULT", "retry_budget": budget}]}


def retry_policy() -> dict[str, Any]:
    """Up to 2 retries of the failures in RETRY_ON, each on a replica not tried yet.
    Envoy replays a request only while it holds its whole body (1 MiB by default); larger
    requests are not retried."""
    return {
        "retry_on": RETRY_ON,
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }
