"""Ceiling A: a no-op V2 server on the real server's stack, for `make bench`.

Everything but the hot path is the real server's code: the same `InferenceServicer` (so
ServerMetadata, ModelMetadata and ModelConfig, which perf_analyzer calls first, are the
real replies), the same grpc.aio options and uvloop. Only ModelInfer and ModelStreamInfer
differ: they answer a digits reply built once at start-up by the real pipeline, without
reading the input. What the real server loses against this one is its own overhead:
decode, validation, batching, ONNX Runtime and encode.

`python -m loadtests.noop_server --model-repository models --grpc-port P` prints the same
JSON "listening" line as the server and stops on SIGTERM. For the multi-process ceiling,
start several on one fixed port: they share it through SO_REUSEPORT, as `--workers` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import uvloop

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server.dataplane import EXTENSIONS, DataPlane, ServerInfo
from server.repository import Repository
from server.servicer import InferenceServicer
from server.settings import Settings
from server.tensors import decode_request, encode_response

MODEL = "digits"


class NoopServicer(InferenceServicer):
    """The real servicer with a hot path that only returns a prebuilt reply."""

    def __init__(self, dataplane: DataPlane, max_elements: int, reply: pb.ModelInferResponse):
        super().__init__(dataplane, max_elements)
        self._reply = reply
        self._stream_reply = pb.ModelStreamInferResponse(infer_response=reply)

    def _answer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """perf_analyzer's async client matches replies to requests by id, so echo it."""
        if not request.id:
            return self._reply
        reply = pb.ModelInferResponse()
        reply.CopyFrom(self._reply)
        reply.id = request.id
        return reply

    async def ModelInfer(self, request: pb.ModelInferRequest, context: object) -> object:
        return self._answer(request)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: object
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in request_iterator:
            if request.id:
                yield pb.ModelStreamInferResponse(infer_response=self._answer(request))
            else:
                yield self._stream_reply


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The options `server.app.InferenceServer` passes to grpc.aio.server."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1),
    ]


async def _prebuilt_reply(dataplane: DataPlane) -> pb.ModelInferResponse:
    """A real reply to one all-zero digits row, as the server encodes it for perf_analyzer."""
    version = dataplane.model(MODEL)
    request = pb.ModelInferRequest(model_name=MODEL)
    for spec in version.signature.inputs:
        shape = (1, *spec.dims)
        request.inputs.add(name=spec.name, datatype=spec.datatype.name, shape=shape)
        request.raw_input_contents.append(np.zeros(shape, spec.datatype.numpy).tobytes())
    decoded = decode_request(request, 1 << 20)
    return encode_response(await dataplane.infer(decoded))


async def serve(settings: Settings) -> None:
    repository = Repository(settings.model_repository)
    await repository.load(MODEL)  # at start-up, off the hot path
    # Without the statistics extension perf_analyzer does not ask for counters that never move.
    extensions = tuple(e for e in EXTENSIONS if e != "statistics")
    dataplane = DataPlane(repository, ServerInfo(settings.server_name, "noop", extensions))
    servicer = NoopServicer(
        dataplane, settings.max_input_elements, await _prebuilt_reply(dataplane)
    )
    server = grpc.aio.server(options=server_options(settings))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await server.start()
    print(json.dumps({"event": "listening", "grpc_port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    await repository.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args(argv)
    uvloop.run(
        serve(
            Settings(
                model_repository=args.model_repository, host=args.host, grpc_port=args.grpc_port
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
