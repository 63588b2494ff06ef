"""The domain operations behind every RPC, independent of the transport.

A face decodes its message, calls one method here, and encodes what comes back. Every
request's outcome is recorded here, once: success, failure, or cancellation.

A model whose config asks for payload logging gets a sample of its requests handed, with
their outcome, to the `PayloadObserver` the assembly gives (`server.telemetry.payloads`);
the others pay one attribute check.

Every operation that names a model asks the `Authorizer` first (`server.core.access`),
and the repository operations ask for admin rights, so each face gets the same checks
without making them itself. A model the caller may not use is PERMISSION_DENIED whether
or not it exists, so that a caller cannot probe for names.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Protocol

from server.core.access import UNRESTRICTED, Authorizer
from server.core.errors import InferenceError, VersionRetired
from server.core.inference import InferenceRequest, InferenceResponse, Plan
from server.core.model_config import Deprecation
from server.core.models import IndexEntry, ModelStore, Outputs, ServedModel
from server.core.tensors import Tensor, TensorSpec

log = logging.getLogger(__name__)

NOTICE_INTERVAL_S = 60.0  # a deprecated version's use is logged at most this often

EXTENSIONS = (
    "model_configuration",
    "model_repository",
    "statistics",
    "binary_tensor_data",
    "classification",
)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    name: str
    version: str
    extensions: tuple[str, ...] = EXTENSIONS


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for dynamic dimensions, the batch dimension included


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]  # every ready version
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


class PayloadObserver(Protocol):
    """Receives the sampled requests of models with `payload_logging` in their config."""

    def __call__(
        self,
        request: InferenceRequest,
        served: ServedModel,
        response: InferenceResponse | None,
        error: BaseException | None,
    ) -> None: ...


class DataPlane:
    def __init__(
        self,
        models: ModelStore,
        info: ServerInfo,
        payloads: PayloadObserver | None = None,
        authorizer: Authorizer = UNRESTRICTED,
    ) -> None:
        self._models = models
        self._authorizer = authorizer
        self.info = info
        self._payloads = payloads
        self.live = True  # until the process exits, draining included
        self.accepting = True  # False from the start of shutdown
        self._noticed: dict[tuple[str, int], float] = {}  # deprecated use last logged

    def ready(self) -> bool:
        return self.accepting and self._models.is_ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        self._authorizer.check_model(name)
        try:
            self._models.resolve(name, version)
        except InferenceError:
            return False
        return True

    def model(self, name: str, version: str = "") -> ServedModel:
        self._authorizer.check_model(name)
        return self._models.resolve(name, version)

    def metadata(self, name: str, version: str = "") -> ModelMetadata:
        self._authorizer.check_model(name)
        served = self._models.resolve(name, version)
        signature = served.signature

        def tensor(spec: TensorSpec) -> TensorMetadata:
            return TensorMetadata(spec.name, spec.datatype.name, signature.full_shape(spec))

        return ModelMetadata(
            name=served.name,
            versions=tuple(str(v.version) for v in self._models.versions(name)),
            platform=served.config.platform,
            inputs=tuple(tensor(spec) for spec in signature.inputs),
            outputs=tuple(tensor(spec) for spec in signature.outputs),
        )

    def statistics(self, name: str = "", version: str = "") -> list[ServedModel]:
        """Every loaded version (that the caller may see); one model's versions; or one
        version."""
        if not name:
            allows = self._authorizer.allows
            return [served for served in self._models.loaded() if allows(served.name)]
        self._authorizer.check_model(name)
        if version:
            return [self._models.resolve(name, version)]
        self._models.resolve(name)  # NOT_FOUND or UNAVAILABLE for unknown names
        return self._models.versions(name)

    def index(self, ready_only: bool) -> list[IndexEntry]:
        self._authorizer.check_admin()
        return self._models.index(ready_only)

    async def load(self, name: str) -> None:
        self._authorizer.check_admin()
        await self._models.load(name)

    async def unload(self, name: str) -> None:
        self._authorizer.check_admin()
        await self._models.unload(name)

    async def infer(
        self, request: InferenceRequest, timeout: float | None = None
    ) -> InferenceResponse:
        """Validate, queue, and answer one request; `timeout` is the seconds it has left."""
        running = self.begin(request, timeout, eager=True)
        try:
            await running.future
        except asyncio.CancelledError:  # the client went away
            running.abandon()
            raise
        except Exception:  # noqa: S110 (response() raises it and records it)
            pass
        return running.response()

    def begin(
        self, request: InferenceRequest, timeout: float | None = None, eager: bool = False
    ) -> Running:
        """Validate and queue a request. Once its future is done, call `response()`; if
        the caller gives up on it first, `abandon()`."""
        start = time.perf_counter_ns()
        self._authorizer.check_infer(request.model_name)
        served = self._models.resolve(request.model_name, request.model_version)
        deprecation = None
        if served.config.deprecated:
            deprecation = served.config.deprecated.get(served.version)
            if deprecation is not None:
                self._deprecated_use(served, deprecation)
        payloads = None
        sampled = served.config.payload_logging
        if sampled is not None and self._payloads is not None and random.random() < sampled.sample:  # noqa: S311 (sampling)
            payloads = self._payloads
        try:
            plan = served.validate(request)
            deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
            future = served.submit(plan, deadline, eager)
        except Exception as exc:
            served.stats.record_request(False, time.perf_counter_ns() - start, 0, type(exc))
            if payloads is not None:
                payloads(request, served, None, exc)
            raise
        running = Running(request.id, served, plan, future, start, deprecation)
        if payloads is not None:
            running.payloads, running.request = payloads, request
        return running

    def _deprecated_use(self, served: ServedModel, deprecation: Deprecation) -> None:
        """Count and log (at most once per interval) a use; refuse it after the sunset."""
        if time.time() >= deprecation.sunset.timestamp():
            served.stats.record_request(False, 0, 0, VersionRetired)
            raise VersionRetired(
                f"model '{served.name}' version {served.version} was retired on "
                f"{deprecation.sunset.isoformat()}; use version {deprecation.replacement} "
                f"({deprecation.link})",
                model=served.name,
                version=str(served.version),
            )
        served.stats.deprecated_uses += 1
        key = (served.name, served.version)
        now = time.monotonic()
        if now - self._noticed.get(key, -NOTICE_INTERVAL_S) >= NOTICE_INTERVAL_S:
            self._noticed[key] = now
            log.warning(
                "deprecated model version in use",
                extra={
                    "model": served.name,
                    "version": served.version,
                    "sunset": deprecation.sunset.isoformat(),
                    "replacement": deprecation.replacement,
                    "uses": served.stats.deprecated_uses,
                },
            )


@dataclass(slots=True)
class Running:
    """A request queued for its model version."""

    id: str
    served: ServedModel
    plan: Plan
    future: asyncio.Future[Outputs]
    start: int  # perf_counter_ns when it arrived
    deprecation: Deprecation | None = None  # the served version is on its way out
    payloads: PayloadObserver | None = None  # set when this request's payload is logged
    request: InferenceRequest | None = None  # kept only for the payload log

    def response(self) -> InferenceResponse:
        """The reply once the future is done; raises the request's error, if any."""
        try:
            results = self.future.result()
        except BaseException as exc:
            self.served.stats.record_request(
                False, time.perf_counter_ns() - self.start, 0, type(exc)
            )
            if self.payloads is not None and self.request is not None:
                self.payloads(self.request, self.served, None, exc)
            raise
        self.served.stats.record_request(
            True, time.perf_counter_ns() - self.start, time.time_ns() // 1_000_000
        )
        plan = self.plan
        response = InferenceResponse(
            model_name=self.served.name,
            model_version=str(self.served.version),
            id=self.id,
            outputs=[
                Tensor(name, datatype, data)
                for name, datatype, data in zip(
                    plan.outputs, plan.output_types, results, strict=True
                )
            ],
            deprecation=self.deprecation,
        )
        if self.payloads is not None and self.request is not None:
            self.payloads(self.request, self.served, response, None)
        return response

    def abandon(self) -> None:
        """The caller went away before the answer: cancel it and count it as failed."""
        self.future.cancel()
        self.served.stats.record_request(
            False, time.perf_counter_ns() - self.start, 0, asyncio.CancelledError
        )
