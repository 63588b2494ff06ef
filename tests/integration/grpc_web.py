"""gRPC-web as a browser sends it, over plain HTTP/1.1: frames, replies, and one call.

Imported by test modules like processes.py (plain helpers, no fixtures). Messages are
tritonclient's generated ones; never the server's `inference` package.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

CONTENT_TYPE = "application/grpc-web+proto"


def frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def reply(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Split a gRPC-web body into its messages and its trailers."""
    messages, trailers, at = [], {}, 0
    while at < len(body):
        flags, length = body[at], int.from_bytes(body[at + 1 : at + 5], "big")
        payload = body[at + 5 : at + 5 + length]
        at += 5 + length
        if flags & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return messages, trailers


@dataclass(frozen=True)
class Reply:
    status: int
    """The gRPC status: from the headers of a trailers-only reply, else the trailer frame."""
    message: str
    messages: list[bytes]
    headers: httpx.Headers


def call(
    client: httpx.Client, method: str, message: bytes, headers: dict[str, str] | None = None
) -> Reply:
    """One unary gRPC-web call of `method` (`/package.Service/Method`)."""
    sent = {"content-type": CONTENT_TYPE, "x-grpc-web": "1", **(headers or {})}
    answer = client.post(method, content=frame(message), headers=sent)
    assert answer.status_code == 200, answer.text  # gRPC-web errors are statuses, not HTTP's
    messages, trailers = reply(answer.content)
    status = answer.headers.get("grpc-status", trailers.get("grpc-status"))
    assert status is not None, "the reply carries no grpc-status"
    message = answer.headers.get("grpc-message", trailers.get("grpc-message", ""))
    return Reply(int(status), message, messages, answer.headers)
