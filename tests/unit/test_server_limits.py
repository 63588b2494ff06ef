"""The server's transport limits on a real grpc.aio server, in process, each just under and
just over: metadata size, concurrent streams per connection, concurrent RPCs, keepalive
ping enforcement and connection age. Keepalive and connection age are HTTP/2 matters, so
those tests speak HTTP/2 frames themselves (hyperframe) and read the server's GOAWAY.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from hyperframe.frame import Frame, GoAwayFrame, PingFrame, SettingsFrame

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server.app import InferenceServer
from server.settings import Settings

Code = grpc.StatusCode


@asynccontextmanager
async def serving(root: Path, **limits: Any) -> AsyncIterator[int]:
    root.mkdir(exist_ok=True)
    settings = Settings(
        model_repository=root, host="127.0.0.1", grpc_port=0, shutdown_grace_s=0.5, **limits
    )
    server = InferenceServer(settings)
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop()


async def _open_stream(stub: pb_grpc.GRPCInferenceServiceStub) -> Any:
    """A stream the server has admitted: it answered a request on it (an error reply, as
    the repository is empty). The stream stays open until cancelled."""
    stream = stub.ModelStreamInfer()
    await stream.write(pb.ModelInferRequest(model_name="absent"))
    reply = await stream.read()
    assert reply.error_message == "unknown model 'absent'"
    return stream


async def _live(stub: pb_grpc.GRPCInferenceServiceStub, **kwargs: Any) -> Code:
    try:
        await stub.ServerLive(pb.ServerLiveRequest(), **kwargs)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return Code.OK


async def test_metadata_up_to_the_limit_passes_and_beyond_is_refused(tmp_path: Path) -> None:
    async with (
        serving(tmp_path / "models", max_metadata_bytes=4096) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        # gRPC counts each entry as name + value + 32 bytes, pseudo-headers included
        # (about 600 bytes for this client's own headers).
        assert await _live(stub, metadata=(("x-pad", "a" * 3000),)) == Code.OK
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ServerLive(pb.ServerLiveRequest(), metadata=(("x-pad", "a" * 4096),))
        assert info.value.code() == Code.RESOURCE_EXHAUSTED
        assert "metadata size exceeds hard limit" in str(info.value.details())
        assert "vs. 4096" in str(info.value.details())


async def test_streams_per_connection_beyond_the_limit_wait(tmp_path: Path) -> None:
    async with serving(tmp_path / "models", max_concurrent_streams=2) as port:
        address = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            first = await _open_stream(stub)
            assert await _live(stub, timeout=5) == Code.OK  # 2 of 2
            second = await _open_stream(stub)
            # A third stream on this connection waits for a free one; it cannot start.
            assert await _live(stub, timeout=1) == Code.DEADLINE_EXCEEDED
            async with grpc.aio.insecure_channel(
                address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as other:  # the limit is per connection
                assert await _live(pb_grpc.GRPCInferenceServiceStub(other), timeout=5) == Code.OK
            first.cancel()
            assert await _live(stub, timeout=5) == Code.OK
            second.cancel()


async def test_rpcs_beyond_the_limit_are_refused_at_once(tmp_path: Path) -> None:
    async with (
        serving(tmp_path / "models", max_concurrent_rpcs=3) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        streams = [await _open_stream(stub) for _ in range(2)]
        assert await _live(stub, timeout=5) == Code.OK  # the third
        streams.append(await _open_stream(stub))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
        assert info.value.code() == Code.RESOURCE_EXHAUSTED
        assert info.value.details() == "Concurrent RPC limit exceeded!"
        for stream in streams:
            stream.cancel()


# --- HTTP/2 frames -------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Frames:
    """A bare HTTP/2 client connection: the preface, pings, and the frames that come back
    (read with hyperframe, so that gRPC's GOAWAY-then-PING shutdown is simply read)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())
        self._buffer = b""

    def ping(self, index: int) -> None:
        self.sock.sendall(PingFrame(0, opaque_data=index.to_bytes(8, "big")).serialize())

    def goaway(self, within_s: float) -> GoAwayFrame | None:
        """The server's first GOAWAY, if one comes within `within_s`."""
        deadline = time.monotonic() + within_s
        while True:
            while len(self._buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
                if len(self._buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(self._buffer[9 : 9 + length]))
                self._buffer = self._buffer[9 + length :]
                if isinstance(frame, GoAwayFrame):
                    return frame
                if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                    self.sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            self._buffer += data

    def close(self) -> None:
        self.sock.close()


def _pings(port: int, count: int, gap_s: float) -> GoAwayFrame | None:
    frames = Frames(port)
    try:
        for index in range(count):
            frames.ping(index)
            if gap_s and (goaway := frames.goaway(gap_s)) is not None:
                return goaway
        return frames.goaway(0.5)
    finally:
        frames.close()


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


ENHANCE_YOUR_CALM, NO_ERROR = 0xB, 0x0


def _too_many_pings(goaway: GoAwayFrame | None) -> bool:
    return (
        goaway is not None
        and goaway.error_code == ENHANCE_YOUR_CALM
        and goaway.additional_data == b"too_many_pings"
    )


async def test_pings_slower_than_the_minimum_interval_are_fine(tmp_path: Path) -> None:
    async with serving(
        tmp_path / "models", keepalive_min_ping_interval_s=0.1, keepalive_permit_without_calls=True
    ) as port:
        assert await _in_thread(_pings, port, 5, 0.25) is None


async def test_pings_faster_than_the_minimum_interval_get_goaway(tmp_path: Path) -> None:
    async with serving(
        tmp_path / "models", keepalive_min_ping_interval_s=0.1, keepalive_permit_without_calls=True
    ) as port:
        assert _too_many_pings(await _in_thread(_pings, port, 10, 0.0))


async def test_pings_without_calls_get_goaway_unless_permitted(tmp_path: Path) -> None:
    async with serving(tmp_path / "models", keepalive_min_ping_interval_s=0.1) as port:
        assert _too_many_pings(await _in_thread(_pings, port, 5, 0.25))


async def test_ping_strikes_zero_tolerates_any_number(tmp_path: Path) -> None:
    async with serving(
        tmp_path / "models",
        keepalive_min_ping_interval_s=0.1,
        keepalive_permit_without_calls=True,
        keepalive_max_ping_strikes=0,
    ) as port:
        assert await _in_thread(_pings, port, 10, 0.0) is None


def _age(port: int, within_s: float) -> GoAwayFrame | None:
    frames = Frames(port)
    try:
        return frames.goaway(within_s)
    finally:
        frames.close()


async def test_connections_older_than_the_maximum_age_are_closed(tmp_path: Path) -> None:
    async with serving(
        tmp_path / "models", max_connection_age_s=0.5, max_connection_age_grace_s=0.5
    ) as port:
        event = await _in_thread(_age, port, 5.0)  # at 0.5 s, give or take gRPC's 10% jitter
        assert event is not None and event.error_code == NO_ERROR
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await _live(pb_grpc.GRPCInferenceServiceStub(channel)) == Code.OK


async def test_connections_younger_than_the_maximum_age_stay_open(tmp_path: Path) -> None:
    async with serving(tmp_path / "models", max_connection_age_s=30) as port:
        assert await _in_thread(_age, port, 1.5) is None
