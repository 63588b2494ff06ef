"""gRPC-web framing over plain HTTP/1.1, for the GrpcWebUser (binary mode).

A gRPC-web call is a POST to `/<package>.<Service>/<Method>` with
`content-type: application/grpc-web+proto` and `x-grpc-web: 1`. Request and response bodies
are sequences of frames: one flag byte, a 4-byte big-endian length, the payload. Flag 0x00
carries a serialized message; flag 0x80 carries the trailers as HTTP/1 header lines
(`grpc-status: 0\\r\\ngrpc-message: ...\\r\\n`). A call that fails before any message can
also come back "trailers-only": no body frames, `grpc-status` in the HTTP headers.

No maintained Python gRPC-web client fits here: `sonora`'s client (0.2.3, 2023) pins
urllib3 < 2 and runs its own connection pool, outside locust's HTTP client and statistics,
so this module frames the messages and locust's FastHttpUser carries them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

CONTENT_TYPE = "application/grpc-web+proto"
HEADERS = {"Content-Type": CONTENT_TYPE, "X-Grpc-Web": "1", "Accept": CONTENT_TYPE}
MESSAGE, TRAILERS = 0x00, 0x80
_PREFIX = struct.Struct(">BI")


class FramingError(Exception):
    """The body is not a well-formed gRPC-web response."""


@dataclass(frozen=True, slots=True)
class Reply:
    messages: list[bytes]
    status: int  # grpc-status; 0 is OK
    message: str  # grpc-message, percent-decoded


def frame(message: bytes) -> bytes:
    return _PREFIX.pack(MESSAGE, len(message)) + message


def parse(body: bytes, headers: Mapping[str, str]) -> Reply:
    """Split a response into its messages and status (from trailers, or headers if
    trailers-only)."""
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    at = 0
    while at < len(body):
        if len(body) - at < _PREFIX.size:
            raise FramingError(f"a frame header is cut short at byte {at} of {len(body)}")
        flag, length = _PREFIX.unpack_from(body, at)
        at += _PREFIX.size
        payload = body[at : at + length]
        if len(payload) != length:
            raise FramingError(f"a frame says {length} bytes, {len(payload)} follow")
        at += length
        if flag & TRAILERS:
            trailers.update(_trailer_lines(payload))
        elif flag == MESSAGE:
            messages.append(payload)
        else:
            raise FramingError(f"unknown frame flag {flag:#x} (compressed frames are not sent)")
    source = trailers or {key.lower(): value for key, value in headers.items()}
    if "grpc-status" not in source:
        raise FramingError("no grpc-status in the trailers or headers")
    status = source["grpc-status"].strip()
    if not status.isdigit():
        raise FramingError(f"grpc-status {status[:20]!r} is not a number")
    return Reply(messages, int(status), unquote(source.get("grpc-message", "")))


def _trailer_lines(payload: bytes) -> dict[str, str]:
    lines = {}
    for line in payload.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            lines[name.strip().lower()] = value.strip()
    return lines
