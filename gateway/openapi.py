"""The OpenAPI 3.0 document of the REST face, generated from the descriptor set.

It reads the same google.api.http rules that Envoy's transcoder routes by, so
the document cannot drift from what the gateway serves. No maintained
generator installs from the registries we reach: grpc-gateway's
protoc-gen-openapiv2 and gnostic's protoc-gen-openapi are Go programs (the PyPI
package protoc-gen-openapiv2 holds only annotation protos), hence this small one.
"""

import json
import re
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor_pb2 import (
    FieldDescriptorProto,
    FileDescriptorSet,
    MethodDescriptorProto,
)

from gateway.protoindex import ProtoIndex
from gateway.schemas import Schema, SchemaBuilder, component_ref

SERVICES = ("inference.GRPCInferenceService",)
TITLE = "Open Inference Protocol (KServe V2) REST API"
DESCRIPTION = (
    "The REST face of inference.GRPCInferenceService, transcoded to gRPC by the gateway. "
    "Bodies are the proto3 JSON mapping of the gRPC messages, with proto field names: "
    "64-bit integers print as decimal strings, bytes as base64."
)
# The API is versioned by its proto package: `inference` is V2.
API_VERSION = "2"

_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
# How deep query parameters reach into nested request messages.
_MAX_QUERY_DEPTH = 3

_STATUS = "google.rpc.Status"
_STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "An error: a gRPC status code and message. The HTTP status is mapped "
    "from the code (NOT_FOUND 404, INVALID_ARGUMENT 400, UNAVAILABLE 503, ...).",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}


def _bindings(rule: http_pb2.HttpRule) -> list[http_pb2.HttpRule]:
    return [rule, *rule.additional_bindings]


def _verb_and_template(rule: http_pb2.HttpRule) -> tuple[str, str] | None:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        return None
    if pattern == "custom":
        return rule.custom.kind.lower(), rule.custom.path
    return str(pattern), str(getattr(rule, pattern))


class _Generator:
    def __init__(self, descriptor_set: FileDescriptorSet) -> None:
        self.index = ProtoIndex(descriptor_set)
        self.schemas = SchemaBuilder(self.index)
        self.paths: dict[str, dict[str, Any]] = {}

    def add_service(self, service_name: str) -> None:
        for method in self.index.services[service_name].method:
            rule = method.options.Extensions[annotations_pb2.http]  # empty when unannotated
            for n, binding in enumerate(_bindings(rule), start=1):
                route = _verb_and_template(binding)
                if route is None:
                    continue
                verb, template = route
                operation_id = method.name if n == 1 else f"{method.name}{n}"
                path = _VARIABLE.sub(r"{\1}", template)
                self.paths.setdefault(path, {})[verb] = self._operation(
                    service_name, method, binding, template, operation_id
                )

    def _operation(
        self,
        service_name: str,
        method: MethodDescriptorProto,
        binding: http_pb2.HttpRule,
        template: str,
        operation_id: str,
    ) -> dict[str, Any]:
        request = method.input_type.lstrip(".")
        bound = _VARIABLE.findall(template)
        summary, _, description = self.index.comment(f"{service_name}.{method.name}").partition(
            "\n"
        )
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "tags": [service_name],
            "summary": summary,
            "parameters": [self._path_parameter(request, name) for name in bound],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": self._response(method)}},
                },
                "default": {
                    "description": "Error",
                    "content": {"application/json": {"schema": component_ref(_STATUS)}},
                },
            },
        }
        if description:
            operation["description"] = description.strip()
        if binding.body:
            # An empty body is an empty message.
            operation["requestBody"] = {
                "content": {
                    "application/json": {"schema": self._body(method, binding.body, bound)}
                },
            }
        else:
            operation["parameters"] += self._query_parameters(request, frozenset(bound), "", 0)
        return operation

    def _response(self, method: MethodDescriptorProto) -> Schema:
        schema = self.schemas.ref(method.output_type.lstrip("."))
        # The transcoder prints a stream of responses as one JSON array.
        return {"type": "array", "items": schema} if method.server_streaming else schema

    def _body(self, method: MethodDescriptorProto, body: str, bound: list[str]) -> Schema:
        request = method.input_type.lstrip(".")
        if body == "*":
            # Path-bound fields come from the path, not the body.
            top_level = frozenset(name for name in bound if "." not in name)
            schema = self.schemas.message(request, exclude=top_level)
        else:
            schema = self.schemas.field(*self._field(request, body))
        # The transcoder reads a stream of requests from one JSON array.
        return {"type": "array", "items": schema} if method.client_streaming else schema

    def _field(self, message_name: str, dotted: str) -> tuple[str, FieldDescriptorProto]:
        """The field at a dotted path, and the name of the message that declares it."""
        *parents, last = dotted.split(".")
        for part in parents:
            field = next(f for f in self.index.messages[message_name].field if f.name == part)
            message_name = field.type_name.lstrip(".")
        field = next(f for f in self.index.messages[message_name].field if f.name == last)
        return message_name, field

    def _path_parameter(self, request: str, dotted: str) -> dict[str, Any]:
        schema = self.schemas.field(*self._field(request, dotted))
        parameter = {"name": dotted, "in": "path", "required": True, "schema": schema}
        return self._lift_description(parameter)

    def _query_parameters(
        self, message_name: str, bound: frozenset[str], prefix: str, depth: int
    ) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = []
        for field in self.index.messages[message_name].field:
            dotted = f"{prefix}{field.name}"
            if dotted in bound:
                continue
            if field.type != FieldDescriptorProto.TYPE_MESSAGE:
                schema = self.schemas.field(message_name, field)
                parameter = {"name": dotted, "in": "query", "schema": schema}
                parameters.append(self._lift_description(parameter))
            elif depth < _MAX_QUERY_DEPTH and not self.schemas.is_map(field):
                nested = field.type_name.lstrip(".")
                parameters += self._query_parameters(nested, bound, f"{dotted}.", depth + 1)
        return parameters

    @staticmethod
    def _lift_description(parameter: dict[str, Any]) -> dict[str, Any]:
        description = parameter["schema"].pop("description", None)
        return parameter | {"description": description} if description else parameter

    def document(self) -> dict[str, Any]:
        self.schemas.components[_STATUS] = _STATUS_SCHEMA
        return {
            "openapi": "3.0.3",
            "info": {"title": TITLE, "version": API_VERSION, "description": DESCRIPTION},
            "paths": dict(sorted(self.paths.items())),
            "components": {"schemas": dict(sorted(self.schemas.components.items()))},
        }


def build_openapi(descriptor_set: FileDescriptorSet) -> dict[str, Any]:
    """The OpenAPI document for the annotated RPCs of SERVICES."""
    generator = _Generator(descriptor_set)
    for service in SERVICES:
        generator.add_service(service)
    return generator.document()


def write_openapi(descriptor_path: Path, output: Path) -> Path:
    """Generate the document from the descriptor set file and write it as JSON."""
    descriptor_set = FileDescriptorSet.FromString(descriptor_path.read_bytes())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(build_openapi(descriptor_set), indent=2) + "\n")
    return output
