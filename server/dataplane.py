"""The domain operations behind every RPC, independent of the transport.

The servicer decodes a message, calls one method here, and encodes what it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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
        start = time.perf_counter_ns()
        version = self.repository.resolve(request.model_name, request.model_version)
        stats = version.stats
        try:
            rows, outputs = version.validator.check(request)
            feeds = {tensor.name: tensor.data for tensor in request.inputs}
            results = await version.batcher.submit(feeds, outputs, rows, deadline)
        except BaseException:
            stats.fail.add(time.perf_counter_ns() - start)
            raise
        end = time.perf_counter_ns()
        stats.success.add(end - start)
        stats.last_inference_ms = time.time_ns() // 1_000_000
        types = version.output_types
        return InferenceResponse(
            model_name=version.name,
            model_version=str(version.version),
            id=request.id,
            outputs=[
                Tensor(name, types[name], data) for name, data in zip(outputs, results, strict=True)
            ],
            raw=request.raw,
        )
