"""The `inference.HTTPInferenceService` servicer: the V2 REST face behind the gateway.

Each method decodes the HTTP body and path fields, calls the same DataPlane as the gRPC
face, and encodes a V2 REST reply (`reply.rest_call` maps errors). Readiness answers by
status code, as V2 REST specifies: 200 true; false is a 4xx (404 for an unknown model or
version, 400 otherwise, as Triton answers).
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable
from typing import Any

from inference import http_service_pb2 as pb
from inference import http_service_pb2_grpc as pb_grpc
from server.api.http import replies
from server.api.http.binary import HEADER_LENGTH
from server.api.http.codec import decode_request, encode_response, parse_object
from server.api.http.reply import Headers, Reply, error_reply, rest_call
from server.api.http.status import error_body
from server.core.dataplane import DataPlane
from server.core.errors import InferenceError, InvalidRequest, ModelNotFound
from server.core.limits import MAX_BATCH_ROWS, MAX_ELEMENT_BYTES
from server.core.model_config import Deprecation
from server.core.models import READY

NOT_READY = 400


def _header(context: Any, key: str) -> str | None:
    metadata: Iterable[tuple[str, Any]] = context.invocation_metadata() or ()
    for name, value in metadata:
        if name == key:
            return str(value)
    return None


def _not_ready(message: str) -> Reply:
    return Reply(error_body(message), NOT_READY)


def _deprecation_headers(deprecation: Deprecation | None) -> Headers:
    """A deprecated version's notice: the draft-standard Deprecation header, RFC 8594
    Sunset, and a successor-version Link (as the gRPC face's initial metadata)."""
    if deprecation is None:
        return ()
    return (
        ("deprecation", "true"),
        ("sunset", email.utils.format_datetime(deprecation.sunset, usegmt=True)),
        ("link", f'<{deprecation.link}>; rel="successor-version"'),
    )


class RestServicer(pb_grpc.HTTPInferenceServiceServicer):
    def __init__(
        self,
        dataplane: DataPlane,
        max_elements: int,
        max_rows: int = MAX_BATCH_ROWS,
        max_element_bytes: int = MAX_ELEMENT_BYTES,
    ) -> None:
        self._dataplane = dataplane
        self._limits = (max_elements, max_rows, max_element_bytes)

    @rest_call
    async def ServerLive(self, request: pb.RestServerRequest, context: Any) -> Reply:
        if not self._dataplane.live:
            return _not_ready("the server is shutting down")
        return Reply(replies.live(True))

    @rest_call
    async def ServerReady(self, request: pb.RestServerRequest, context: Any) -> Reply:
        if self._dataplane.ready():
            return Reply(replies.ready(True))
        if not self._dataplane.accepting:
            return _not_ready("the server is shutting down")
        waiting = sorted(
            {f"{e.name} ({e.state})" for e in self._dataplane.index(False) if e.state != READY}
        )
        return _not_ready(f"the server is not ready; models not ready: {', '.join(waiting)}")

    @rest_call
    async def ModelReady(self, request: pb.RestModelRequest, context: Any) -> Reply:
        try:
            self._dataplane.model(request.model_name, request.model_version)
        except InferenceError as exc:
            if isinstance(exc, ModelNotFound):
                return error_reply(exc)
            return _not_ready(str(exc))
        return Reply(replies.model_ready(request.model_name, True))

    @rest_call
    async def ServerMetadata(self, request: pb.RestServerRequest, context: Any) -> Reply:
        return Reply(replies.server_metadata(self._dataplane.info))

    @rest_call
    async def ModelMetadata(self, request: pb.RestModelRequest, context: Any) -> Reply:
        metadata = self._dataplane.metadata(request.model_name, request.model_version)
        return Reply(replies.model_metadata(metadata))

    @rest_call
    async def ModelConfig(self, request: pb.RestModelRequest, context: Any) -> Reply:
        version = self._dataplane.model(request.model_name, request.model_version)
        return Reply(replies.model_config(version))

    @rest_call
    async def ModelStatistics(self, request: pb.RestModelRequest, context: Any) -> Reply:
        versions = self._dataplane.statistics(request.model_name, request.model_version)
        return Reply(replies.model_statistics(versions))

    @rest_call
    async def ModelInfer(self, request: pb.RestModelRequest, context: Any) -> Reply:
        decoded, form = decode_request(
            request.model_name,
            request.model_version,
            request.body.data,
            _header(context, HEADER_LENGTH),
            *self._limits,
        )
        response = await self._dataplane.infer(decoded, context.time_remaining())
        body, header_length = encode_response(response, form)
        headers = _deprecation_headers(response.deprecation)
        return Reply(body, header_length=header_length, headers=headers)

    @rest_call
    async def RepositoryIndex(self, request: pb.RestServerRequest, context: Any) -> Reply:
        body = parse_object(request.body.data, "the index request")
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidRequest("ready must be a boolean")
        return Reply(replies.repository_index(self._dataplane.index(ready)))

    @rest_call
    async def RepositoryModelLoad(self, request: pb.RestModelRequest, context: Any) -> Reply:
        _check_repository_parameters(parse_object(request.body.data, "the load request"))
        await self._dataplane.load(request.model_name)
        return Reply(replies.empty())

    @rest_call
    async def RepositoryModelUnload(self, request: pb.RestModelRequest, context: Any) -> Reply:
        _check_repository_parameters(parse_object(request.body.data, "the unload request"))
        await self._dataplane.unload(request.model_name)
        return Reply(replies.empty())


# Load and unload parameters the server accepts: unload_dependents (a model has none).
_REPOSITORY_PARAMETERS = frozenset({"unload_dependents"})


def _check_repository_parameters(body: dict[str, Any]) -> None:
    """Triton's `config` and `file:` overrides are not supported: refuse rather than load
    the on-disk model the caller asked to replace."""
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidRequest("parameters must be a JSON object")
    unsupported = sorted(set(parameters) - _REPOSITORY_PARAMETERS)
    if unsupported:
        raise InvalidRequest(
            f"unsupported repository parameters {unsupported}: the server loads models "
            "from its repository only"
        )
    if not isinstance(parameters.get("unload_dependents", False), bool):
        raise InvalidRequest("parameters.unload_dependents must be a boolean")
