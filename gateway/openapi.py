"""The OpenAPI 3.0 document of the V2 REST face, written by hand to say what the server
really accepts and answers (schemas in `gateway.v2_schemas`).

Its paths are checked against the google.api.http rules of inference.HTTPInferenceService,
which Envoy's transcoder routes by: `build_openapi` refuses to write a document whose
paths and methods differ from the descriptor set's, so the two cannot drift apart.
"""

import json
import re
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor_pb2 import FileDescriptorSet

from gateway.v2_schemas import SCHEMAS, Schema, ref

SERVICE = "inference.HTTPInferenceService"
TITLE = "Open Inference Protocol (KServe V2) REST API"
API_VERSION = "2"
DESCRIPTION = """\
The V2 REST protocol (KServe Open Inference Protocol, HTTP/REST) with Triton's binary \
tensor data, model configuration, statistics and model repository extensions, as \
tritonclient.http and perf_analyzer speak it. The path alone names the model and \
version; no endpoint takes query parameters (a query string is refused with 400). \
Errors are `{"error": "..."}` with the status of their kind: 400 a malformed request or \
one that does not fit the model, 404 an unknown model, version or path, 429 a full \
queue, 503 a model without a ready version or the server unreachable, 504 a deadline \
passed, 500 anything else."""

Operation = dict[str, Any]


class DocumentMismatch(RuntimeError):
    """The document's operations are not the annotated REST bindings."""


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _path_parameter(name: str) -> dict[str, Any]:
    if name == "model_version":
        schema: Schema = {"type": "string", "pattern": "^[0-9]+$"}
        description = "A model version: an integer directory of the model."
    else:
        schema = {"type": "string", "minLength": 1}
        description = "A model's name in the repository."
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Binary tensor data extension: the body's JSON header is this many bytes; "
    "the inputs' binary data follows it.",
}

_ERRORS = {
    "400": "Malformed, or does not fit the model",
    "404": "No such model, version or path",
    "503": "The model has no ready version, or the server is unreachable",
    "default": "Any other error",
}


def _responses(ok: Schema, *errors: str, ok_description: str = "OK") -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": ok_description, "content": _json(ok)}}
    for status in (*errors, "default"):
        responses[status] = {"description": _ERRORS[status], "content": _json(ref("Error"))}
    return responses


def _operation(
    operation_id: str, summary: str, path: str, responses: dict[str, Any], **extra: Any
) -> Operation:
    names = re.findall(r"\{(\w+)\}", path)
    return {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [_path_parameter(n) for n in names] + extra.pop("parameters", []),
        "responses": responses,
        **extra,
    }


def _model_paths(suffix: str) -> list[tuple[str, str]]:
    """The unversioned and versioned path of a model endpoint, with operation id suffixes."""
    return [
        (f"/v2/models/{{model_name}}{suffix}", ""),
        (f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}", "Version"),
    ]


def _readiness(summary: str, schema: str, errors: tuple[str, ...]) -> dict[str, Any]:
    return _responses(ref(schema), *errors, ok_description=summary)


def _infer(path: str, operation_id: str) -> Operation:
    binary_reply = {
        "schema": {"type": "string", "format": "binary"},
        "description": "The JSON header (an InferenceResponse, Inference-Header-Content-Length "
        "bytes), then the binary outputs' bytes in output order.",
    }
    responses = _responses(ref("InferenceResponse"), "400", "404", "503")
    responses["200"]["content"]["application/octet-stream"] = binary_reply
    responses["200"]["headers"] = {
        "Inference-Header-Content-Length": {
            "description": "Set when binary data follows the JSON header: its length.",
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    responses["429"] = {"description": "The model's queue is full", "content": _json(ref("Error"))}
    return _operation(
        operation_id,
        "Run inference",
        path,
        responses,
        parameters=[_HEADER_LENGTH],
        requestBody={
            "required": True,
            "content": {
                **_json(ref("InferenceRequest")),
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "Binary tensor data extension: an InferenceRequest JSON "
                    "header of Inference-Header-Content-Length bytes, then each binary "
                    "input's bytes in input order (little-endian; BYTES as 4-byte lengths "
                    "and bytes).",
                },
            },
        },
    )


def _repository(path: str, operation_id: str, summary: str) -> Operation:
    return _operation(
        operation_id,
        summary,
        path,
        _responses(ref("Empty"), "400", "404"),
        requestBody={"required": False, "content": _json(ref("RepositoryModelRequest"))},
    )


def paths() -> dict[str, dict[str, Operation]]:
    """Every V2 REST operation, by path and method."""
    found: dict[str, dict[str, Operation]] = {
        "/v2/health/live": {
            "get": _operation(
                "ServerLive", "Live: 200 while the server runs", "/v2/health/live",
                _readiness("Live", "ServerLiveResponse", ("400",)),
            )
        },
        "/v2/health/ready": {
            "get": _operation(
                "ServerReady",
                "Ready: 200 when every model is ready, 400 otherwise (V2: 4xx is false)",
                "/v2/health/ready",
                _readiness("Ready", "ServerReadyResponse", ("400",)),
            )
        },
        "/v2": {
            "get": _operation(
                "ServerMetadata", "Server metadata", "/v2",
                _responses(ref("ServerMetadataResponse")),
            )
        },
        "/v2/models/stats": {
            "get": _operation(
                "ModelStatistics", "Statistics of every model", "/v2/models/stats",
                _responses(ref("ModelStatisticsResponse")),
            )
        },
        "/v2/repository/index": {
            "post": _operation(
                "RepositoryIndex", "The models in the repository and their states",
                "/v2/repository/index",
                _responses(ref("RepositoryIndexResponse"), "400"),
                requestBody={"required": False, "content": _json(ref("RepositoryIndexRequest"))},
            )
        },
        "/v2/repository/models/{model_name}/load": {
            "post": _repository(
                "/v2/repository/models/{model_name}/load", "RepositoryModelLoad", "Load a model"
            )
        },
        "/v2/repository/models/{model_name}/unload": {
            "post": _repository(
                "/v2/repository/models/{model_name}/unload", "RepositoryModelUnload",
                "Unload a model",
            )
        },
    }  # fmt: skip
    # The model-level GETs that answer a message or an error: (path tail, operation id,
    # the id's suffix on the unversioned path, summary, reply schema). ModelStatistics
    # alone needs one there, since the bare name is the service-wide operation's.
    reads = (
        ("", "ModelMetadata", "", "Model metadata", "ModelMetadataResponse"),
        ("/config", "ModelConfig", "", "Model configuration (Triton's JSON)", "ModelConfig"),
        ("/stats", "ModelStatistics", "Model", "Statistics of a model or version",
         "ModelStatisticsResponse"),
    )  # fmt: skip
    for tail, name, unversioned, summary, schema in reads:
        for path, suffix in _model_paths(tail):
            found[path] = {
                "get": _operation(
                    name + (suffix or unversioned), summary, path,
                    _responses(ref(schema), "400", "404", "503"),
                )
            }  # fmt: skip
    for path, suffix in _model_paths("/ready"):
        found[path] = {
            "get": _operation(
                f"ModelReady{suffix}",
                "Model ready: 200 when ready; 404 unknown, 400 not ready (V2: 4xx is false)",
                path,
                _readiness("Ready", "ModelReadyResponse", ("400", "404")),
            )
        }
    for path, suffix in _model_paths("/infer"):
        found[path] = {"post": _infer(path, f"ModelInfer{suffix}")}
    return dict(sorted(found.items()))


def annotated_operations(descriptor_set: FileDescriptorSet) -> set[tuple[str, str]]:
    """(method, path) of every google.api.http binding of SERVICE."""
    package, _, name = SERVICE.rpartition(".")
    found = set()
    for file in descriptor_set.file:
        if file.package != package:
            continue
        for service in (s for s in file.service if s.name == name):
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    found.add(_binding(binding))
    return found


def _binding(rule: http_pb2.HttpRule) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    if pattern is None or pattern == "custom":
        raise ValueError(f"an http rule without a standard method: {rule}")
    return str(pattern), str(getattr(rule, pattern))


def build_openapi(descriptor_set: FileDescriptorSet) -> dict[str, Any]:
    """The document, after checking it against the annotations in `descriptor_set`."""
    document_paths = paths()
    documented = {(verb, path) for path, item in document_paths.items() for verb in item}
    annotated = annotated_operations(descriptor_set)
    if documented != annotated:
        raise DocumentMismatch(
            f"{SERVICE} annotations and the OpenAPI document differ: only annotated "
            f"{sorted(annotated - documented)}, only documented {sorted(documented - annotated)}"
        )
    return {
        "openapi": "3.0.3",
        "info": {"title": TITLE, "version": API_VERSION, "description": DESCRIPTION},
        "paths": document_paths,
        "components": {"schemas": SCHEMAS},
    }


def write_openapi(descriptor_path: Path, output: Path) -> Path:
    """Check the document against the descriptor set file and write it as JSON."""
    descriptor_set = FileDescriptorSet.FromString(descriptor_path.read_bytes())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(build_openapi(descriptor_set), indent=2) + "\n")
    return output
