"""The Envoy gateway: REST/JSON and gRPC-web in front of the gRPC server, on one port.

Envoy transcodes REST with the descriptor set built from protos/, turns
gRPC-web into gRPC, and passes native gRPC through. See docs/gateway.md.
`gateway.build.build()` makes the files Envoy needs; `start_gateway()` runs it.
"""

from gateway.process import GatewayError, RunningGateway, start_gateway
from gateway.settings import GatewaySettings, StaticFile

__all__ = [
    "GatewayError",
    "GatewaySettings",
    "RunningGateway",
    "StaticFile",
    "start_gateway",
]
