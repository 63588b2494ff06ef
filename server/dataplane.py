"""The domain operations behind every RPC, independent of the transport.

The servicer decodes a message, calls one method here, and encodes what it returns.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from server.errors import InferenceError
from server.repository import IndexEntry, ModelVersion, Repository
from server.tensors import InferenceRequest, InferenceResponse, Tensor

EXTENSIONS = (
    "model_configuration",
    "model_repository",
    "statistics",
    "binary_tensor_data",
)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    name: str
    version: str
    extensions: tuple[str, ...] = EXTENSIONS


class DataPlane:
    def __init__(self, repository: Repository, info: ServerInfo) -> None:
        self.repository = repository
        self.info = info
        self.live = True

    def ready(self) -> bool:
        return self.live and self.repository.is_ready()

    def model(self, name: str, version: str = "") -> ModelVersion:
        return self.repository.resolve(name, version)

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.repository.resolve(name, version)
        except InferenceError:
            return False
        return True

    def versions(self, name: str) -> list[ModelVersion]:
        return self.repository.versions(name)

    def statistics(self, name: str = "", version: str = "") -> list[ModelVersion]:
        if not name:
            return self.repository.loaded()
        if version:
            return [self.repository.resolve(name, version)]
        self.repository.resolve(name)  # NOT_FOUND or UNAVAILABLE for unknown names
        return self.repository.versions(name)

    def index(self, ready_only: bool) -> list[IndexEntry]:
        return self.repository.index(ready_only)

    async def load(self, name: str) -> None:
        await self.repository.load(name)

    async def unload(self, name: str) -> None:
        await self.repository.unload(name)

    async def infer(
        self, request: InferenceRequest, deadline: float | None = None
    ) -> InferenceResponse:
        """Validate, queue for the batcher, and wrap the outputs; `deadline` is monotonic."""
        running = self.begin(request, deadline, eager=True)
        try:
            await running.future
        except asyncio.CancelledError:  # the client went away
            running.version.stats.fail.add(time.perf_counter_ns() - running.start)
            raise
        except Exception:
            pass  # response() raises it and counts it
        return running.response()

    def begin(
        self, request: InferenceRequest, deadline: float | None = None, eager: bool = False
    ) -> Running:
        """Validate and queue a request; `Running.response()` once its future is done."""
        start = time.perf_counter_ns()
        version = self.repository.resolve(request.model_name, request.model_version)
        try:
            rows, outputs = version.validator.check(request)
            feeds = {tensor.name: tensor.data for tensor in request.inputs}
            future = version.batcher.enqueue(feeds, outputs, rows, deadline, eager)
        except Exception:
            version.stats.fail.add(time.perf_counter_ns() - start)
            raise
        return Running(request, version, outputs, future, start)


@dataclass(slots=True)
class Running:
    """A request queued for its model version."""

    request: InferenceRequest
    version: ModelVersion
    outputs: tuple[str, ...]
    future: asyncio.Future[list[np.ndarray]]
    start: int  # perf_counter_ns when it arrived

    def response(self) -> InferenceResponse:
        """The reply once the future is done; raises the request's error, if any."""
        stats = self.version.stats
        try:
            results = self.future.result()
        except BaseException:
            stats.fail.add(time.perf_counter_ns() - self.start)
            raise
        stats.success.add(time.perf_counter_ns() - self.start)
        stats.last_inference_ms = time.time_ns() // 1_000_000
        types = self.version.output_types
        return InferenceResponse(
            model_name=self.version.name,
            model_version=str(self.version.version),
            id=self.request.id,
            outputs=[
                Tensor(name, types[name], data)
                for name, data in zip(self.outputs, results, strict=True)
            ],
            raw=self.request.raw,
        )
