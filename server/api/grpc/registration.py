"""Registers a servicer's methods from the service descriptor, with tolerant decoding.

grpc's generated registration decodes with `FromString`, and a request whose bytes do
not parse then fails inside grpc as UNKNOWN "Unexpected DecodeError", with a traceback
logged at ERROR for each one: an easy way to flood the logs. Here such bytes decode to a
`Malformed` marker instead, and the handler answers INVALID_ARGUMENT naming the message
type (`status.grpc_errors`, the stream reader). Malformed requests are counted and logged
at most once per `LOG_INTERVAL_S`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0


class Malformed:
    """A request whose bytes are not a valid message of its type."""

    __slots__ = ("type_name",)
    model_name = model_version = id = ""  # read by the stream's error replies

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> str:
        return f"the request is not a valid {self.type_name}"


class _MalformedLog:
    """Counts malformed requests and logs the count at most once per interval."""

    def __init__(self) -> None:
        self.count = 0
        self._logged_count = 0
        self._logged_at = -LOG_INTERVAL_S

    def add(self, type_name: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_S:
            log.warning(
                "malformed requests refused",
                extra={
                    "message_type": type_name,
                    "since_last_log": self.count - self._logged_count,
                },
            )
            self._logged_at, self._logged_count = now, self.count


MALFORMED = _MalformedLog()


def _tolerant(message_class: type[Message]) -> Callable[[bytes], Any]:
    type_name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            MALFORMED.add(type_name)
            return Malformed(type_name)

    return parse


_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def register(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Serve every method of `service` from the servicer's method of the same name."""
    handlers = {}
    for method in service.methods:
        make = _HANDLERS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_tolerant(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
