"""Ceiling A: a no-op V2 server on the server's stack, for `make bench`.

Its own small grpc.aio servicer on the generated stubs of the public contract (the
`inference` package that `make protos` builds from protos/), with the server's grpc.aio
options and uvloop. ModelInfer and ModelStreamInfer answer a digits reply built once at
start-up, without reading the input: the real model's outputs for one all-zero row, in raw
contents, as the server encodes replies to raw requests. ServerMetadata, ModelMetadata and
ModelConfig describe digits as the server does (from its ONNX file and config.yaml), so
perf_analyzer drives both servers in the same way. What the real server loses against this
one is its own overhead: decode, validation, batching, ONNX Runtime and encode.

Per request it does what the first version (a subclass of the server's servicer) did: the
prebuilt reply as is, or a copy carrying the request's id (perf_analyzer's asynchronous
client matches replies to requests by id). ServerMetadata leaves `statistics` out of its
extensions, so perf_analyzer does not ask for counters that never move.

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
import onnxruntime as ort
import uvloop

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from inference import model_config_pb2 as mc
from loadtests import model_info
from loadtests.model_info import ModelInfo

MODEL = "digits"
SERVER_NAME = "v2-inference-server"
# The server's extensions less `statistics` (see the module docstring).
EXTENSIONS = ("model_configuration", "model_repository", "binary_tensor_data")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the server's default --max-message-bytes


class NoopServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Metadata for one model, and a hot path that only returns a prebuilt reply."""

    def __init__(self, info: ModelInfo, reply: pb.ModelInferResponse) -> None:
        self._info = info
        self._reply = reply
        self._stream_reply = pb.ModelStreamInferResponse(infer_response=reply)
        self._metadata = _model_metadata(info)
        self._config = _model_config(info)

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

    async def ServerLive(self, request: pb.ServerLiveRequest, context: object) -> object:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: object) -> object:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: object) -> object:
        return pb.ModelReadyResponse(ready=self._known(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: object) -> object:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version="noop", extensions=list(EXTENSIONS)
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> object:
        if not self._known(request.name, request.version):
            await self._not_found(request.name, request.version, context)
        return self._metadata

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> object:
        if not self._known(request.name, request.version):
            await self._not_found(request.name, request.version, context)
        return self._config

    def _known(self, name: str, version: str) -> bool:
        return name == self._info.name and version in ("", *self._info.versions)

    async def _not_found(self, name: str, version: str, context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"the no-op server serves only '{self._info.name}', not '{name}' version '{version}'",
        )


def _model_metadata(info: ModelInfo) -> pb.ModelMetadataResponse:
    def tensor(t: model_info.Tensor) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(
            name=t.name, datatype=t.datatype, shape=info.full_shape(t)
        )

    return pb.ModelMetadataResponse(
        name=info.name,
        versions=list(info.versions if info.all_versions else (info.version,)),
        platform="onnxruntime_onnx",
        inputs=[tensor(t) for t in info.inputs],
        outputs=[tensor(t) for t in info.outputs],
    )


def _model_config(info: ModelInfo) -> pb.ModelConfigResponse:
    config = mc.ModelConfig(
        name=info.name,
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=info.max_batch_size,
        input=[
            mc.ModelInput(name=t.name, data_type=mc.DataType.Value(t.config_enum), dims=t.dims)
            for t in info.inputs
        ],
        output=[
            mc.ModelOutput(name=t.name, data_type=mc.DataType.Value(t.config_enum), dims=t.dims)
            for t in info.outputs
        ],
        instance_group=[
            mc.ModelInstanceGroup(
                name=f"{info.name}_0", count=info.instances, kind=mc.ModelInstanceGroup.KIND_CPU
            )
        ],
    )
    if info.all_versions:
        config.version_policy.all.SetInParent()
    else:
        config.version_policy.latest.num_versions = 1
    if info.max_batch_size > 0:
        config.dynamic_batching.default_queue_policy.max_queue_size = 1024
    return pb.ModelConfigResponse(config=config)


def prebuilt_reply(info: ModelInfo) -> pb.ModelInferResponse:
    """The model's real reply to one all-zero row, in raw contents."""
    session = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    batch = (1,) if info.max_batch_size > 0 else ()
    feeds = {t.name: np.zeros((*batch, *t.dims), t.numpy) for t in info.inputs}
    arrays = session.run([t.name for t in info.outputs], feeds)
    reply = pb.ModelInferResponse(model_name=info.name, model_version=info.version)
    for tensor, array in zip(info.outputs, arrays, strict=True):
        reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=array.shape)
        reply.raw_output_contents.append(np.ascontiguousarray(array, tensor.numpy).tobytes())
    return reply


async def serve(repository: Path, host: str, port: int) -> None:
    info = model_info.read(repository, MODEL)
    servicer = NoopServicer(info, prebuilt_reply(info))  # at start-up, off the hot path
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(json.dumps({"event": "listening", "grpc_port": bound}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.model_repository, args.host, args.grpc_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
