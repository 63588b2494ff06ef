"""JSON Schemas of the V2 REST bodies, as the server's codec (server/api/http) reads and
writes them.

They hold the server to its word both ways: what a schema allows, the server accepts (in
form; whether tensors fit the model is the model's business), and what it forbids, the
server refuses with a 4xx. Objects admit unknown keys, because the server ignores them, as
V2 servers do; the load and unload parameters are the exception, since the server refuses
the overrides it does not support. Integers are JSON integers, never strings.
"""

from typing import Any

Schema = dict[str, Any]

DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
CONFIG_DATATYPES = [f"TYPE_{name}" for name in DATATYPES[:-1]] + ["TYPE_STRING"]
STATES = ["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], required: list[str], **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


_COUNT: Schema = {"type": "integer", "minimum": 0}
_STRING: Schema = {"type": "string"}
_BOOLEAN: Schema = {"type": "boolean"}
_PARAMETER: Schema = {"anyOf": [_BOOLEAN, {"type": "number"}, _STRING]}


def _parameters(known: dict[str, Schema], description: str) -> Schema:
    return _object(known, [], additionalProperties=_PARAMETER, description=description)


def _duration() -> Schema:
    return _object({"count": _COUNT, "ns": _COUNT}, ["count", "ns"])


_TENSOR_DATA: Schema = {
    "type": "array",
    "description": "The tensor's elements in row-major order, flat or nested: booleans "
    "for BOOL, integers for the integer types, numbers for FP16/FP32/FP64, UTF-8 strings "
    "for BYTES. The count must match the shape.",
    "items": {"anyOf": [{"type": "number"}, _BOOLEAN, _STRING, {"type": "array", "items": {}}]},
}

_INPUT_SIZE = _parameters(
    {"binary_data_size": _COUNT},
    "binary_data_size: the input's bytes in the binary data after the JSON header "
    "(Inference-Header-Content-Length); other parameters are passed on to the model.",
)

_REQUEST_INPUT = _object(
    {
        "name": _STRING,
        "shape": _array(_COUNT),
        "datatype": {"type": "string", "enum": DATATYPES},
        "parameters": _INPUT_SIZE,
        "data": _TENSOR_DATA,
    },
    ["name", "shape", "datatype"],
    description="An input tensor: JSON `data`, or `parameters.binary_data_size` bytes of "
    "binary data (exactly one of the two).",
    oneOf=[
        {
            "required": ["data"],
            "properties": {"parameters": {"not": {"required": ["binary_data_size"]}}},
        },
        {
            "required": ["parameters"],
            "not": {"required": ["data"]},
            "properties": {"parameters": {"required": ["binary_data_size"]}},
        },
    ],
)

_REQUEST_OUTPUT = _object(
    {
        "name": _STRING,
        "parameters": _parameters(
            {"binary_data": _BOOLEAN},
            "binary_data: answer this output as binary data rather than JSON.",
        ),
    },
    ["name"],
)

_RESPONSE_OUTPUT = _object(
    {
        "name": _STRING,
        "shape": _array(_COUNT),
        "datatype": {"type": "string", "enum": DATATYPES},
        "parameters": _object({"binary_data_size": _COUNT}, ["binary_data_size"]),
        "data": _TENSOR_DATA,
    },
    ["name", "shape", "datatype"],
    description="`data` (flat), or `parameters.binary_data_size` when the output is binary.",
)

_TENSOR_METADATA = _object(
    {
        "name": _STRING,
        "datatype": {"type": "string", "enum": DATATYPES},
        "shape": _array({"type": "integer", "minimum": -1}),
    },
    ["name", "datatype", "shape"],
    description="-1 marks a dynamic dimension, the batch dimension included.",
)

_CONFIG_TENSOR: dict[str, Schema] = {
    "name": _STRING,
    "data_type": {"type": "string", "enum": CONFIG_DATATYPES},
    "dims": _array({"type": "integer", "minimum": -1}),
}

SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {"error": _STRING},
        ["error"],
        description="Every error: the message, with the "
        "HTTP status mapped from the error's kind (docs/gateway.md).",
    ),
    "ServerLiveResponse": _object({"live": _BOOLEAN}, ["live"]),
    "ServerReadyResponse": _object({"ready": _BOOLEAN}, ["ready"]),
    "ModelReadyResponse": _object({"name": _STRING, "ready": _BOOLEAN}, ["name", "ready"]),
    "ServerMetadataResponse": _object(
        {"name": _STRING, "version": _STRING, "extensions": _array(_STRING)},
        ["name", "version", "extensions"],
    ),
    "ModelMetadataResponse": _object(
        {
            "name": _STRING,
            "versions": _array(_STRING),
            "platform": _STRING,
            "inputs": _array(_TENSOR_METADATA),
            "outputs": _array(_TENSOR_METADATA),
        },
        ["name", "versions", "platform", "inputs", "outputs"],
    ),
    "InferenceRequest": _object(
        {
            "id": {"type": "string", "description": "Echoed in the response."},
            "parameters": _parameters(
                {"binary_data_output": _BOOLEAN},
                "binary_data_output: answer every output that does not say otherwise as "
                "binary data; other parameters are passed on to the model.",
            ),
            "inputs": _array(_REQUEST_INPUT),
            "outputs": {**_array(_REQUEST_OUTPUT), "description": "Absent: every output."},
        },
        ["inputs"],
        description="The path names the model and version: a `model_name` or "
        "`model_version` key naming another is refused with 400.",
    ),
    "InferenceResponse": _object(
        {
            "model_name": _STRING,
            "model_version": _STRING,
            "id": _STRING,
            "outputs": _array(_RESPONSE_OUTPUT),
        },
        ["model_name", "model_version", "outputs"],
    ),
    "ModelConfig": _object(
        {
            "name": _STRING,
            "platform": _STRING,
            "backend": _STRING,
            "version_policy": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {
                    "latest": _object({"num_versions": _COUNT}, ["num_versions"]),
                    "all": {"type": "object"},
                    "specific": _object({"versions": _array(_COUNT)}, ["versions"]),
                },
            },
            "max_batch_size": _COUNT,
            "input": _array(
                _object({**_CONFIG_TENSOR, "optional": _BOOLEAN}, ["name", "data_type", "dims"])
            ),
            "output": _array(
                _object(
                    {**_CONFIG_TENSOR, "label_filename": _STRING}, ["name", "data_type", "dims"]
                )
            ),
            "instance_group": _array(
                _object(
                    {"name": _STRING, "kind": {"type": "string"}, "count": _COUNT},
                    ["name", "kind", "count"],
                )
            ),
            "dynamic_batching": _object(
                {
                    "preferred_batch_size": _array(_COUNT),
                    "max_queue_delay_microseconds": _COUNT,
                    "preserve_ordering": _BOOLEAN,
                    "default_queue_policy": {"type": "object"},
                },
                ["max_queue_delay_microseconds"],
            ),
            "ensemble_scheduling": _object(
                {
                    "step": _array(
                        _object(
                            {
                                "model_name": _STRING,
                                "model_version": {"type": "integer", "minimum": -1},
                                "input_map": {"type": "object"},
                                "output_map": {"type": "object"},
                            },
                            ["model_name", "model_version"],
                        )
                    )
                },
                ["step"],
            ),
        },
        ["name", "platform", "backend", "max_batch_size", "input", "output"],
        description="The model configuration in Triton's JSON form (what perf_analyzer and "
        "tritonclient.http read): the object itself, not wrapped in `config`.",
    ),
    "ModelStatisticsResponse": _object(
        {
            "model_stats": _array(
                _object(
                    {
                        "name": _STRING,
                        "version": _STRING,
                        "last_inference": {**_COUNT, "description": "ms since the epoch"},
                        "inference_count": _COUNT,
                        "execution_count": _COUNT,
                        "inference_stats": {
                            "type": "object",
                            "additionalProperties": _duration(),
                        },
                        "batch_stats": _array(
                            {
                                "type": "object",
                                "required": ["batch_size"],
                                "properties": {"batch_size": _COUNT},
                                "additionalProperties": {"oneOf": [_COUNT, _duration()]},
                            }
                        ),
                    },
                    ["name", "version", "inference_count", "execution_count"],
                )
            )
        },
        ["model_stats"],
    ),
    "RepositoryIndexRequest": _object({"ready": {**_BOOLEAN, "description": "Ready only."}}, []),
    "RepositoryIndexResponse": _array(
        _object(
            {
                "name": _STRING,
                "version": _STRING,
                "state": {"type": "string", "enum": STATES},
                "reason": _STRING,
            },
            ["name", "version", "state", "reason"],
        )
    ),
    "RepositoryModelRequest": _object(
        {
            "parameters": _object(
                {"unload_dependents": _BOOLEAN},
                [],
                additionalProperties=False,
                description="Triton's config and file: overrides are refused: the server "
                "loads models from its repository only.",
            )
        },
        [],
    ),
    "Empty": {"type": "object", "maxProperties": 0},
}
