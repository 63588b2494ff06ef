"""V2 REST inference bodies <-> domain requests and responses.

A request body is a V2 inference request object, optionally followed by binary tensor
data (`server.api.http.binary`). It decodes to the same `InferenceRequest` the gRPC codec
produces; the core checks it against the model. The path names the model and version: a
body's `model_name` or `model_version` that names another is refused, never obeyed.
Unknown keys are ignored, as V2 servers do; known keys of the wrong type are a 400.

Outputs are JSON `data` unless the request asks for binary: per output with
`parameters.binary_data`, or for every output it does not decide with the request's
`parameters.binary_data_output`. Transport parameters (`binary_data*`) stay in the codec;
the others pass through to the domain request, as over gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from server.api.http import binary, tensors
from server.core import datatypes
from server.core.errors import InvalidRequest
from server.core.inference import InferenceRequest, InferenceResponse, Parameter, Parameters
from server.core.limits import MAX_BATCH_ROWS, MAX_ELEMENT_BYTES, element_count
from server.core.tensors import Tensor

BINARY_SIZE = "binary_data_size"
BINARY_OUTPUT = "binary_data"
BINARY_OUTPUTS = "binary_data_output"


@dataclass(frozen=True, slots=True)
class OutputForm:
    """Which outputs a reply carries as binary data."""

    default_binary: bool = False  # the request's binary_data_output
    binary: Mapping[str, bool] | None = None  # each requested output's binary_data

    def is_binary(self, name: str) -> bool:
        if self.binary is not None and name in self.binary:
            return self.binary[name]
        return self.default_binary


def parse_object(text: bytes | memoryview, what: str) -> dict[str, Any]:
    """A JSON object body; an empty body is an empty object."""
    if not len(text):
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object, not {_kind(value)}")
    return value


def decode_request(
    model_name: str,
    model_version: str,
    body: bytes,
    header_length: str | None,
    max_elements: int,
    max_rows: int = MAX_BATCH_ROWS,
    max_element_bytes: int = MAX_ELEMENT_BYTES,
) -> tuple[InferenceRequest, OutputForm]:
    header, data = binary.split(body, header_length)
    request = parse_object(header, "the inference request")
    _check_path_fields(request, model_name, model_version)
    request_id = request.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidRequest(f"id must be a string, not {_kind(request_id)}")
    parameters = _parameters(request.get("parameters"), "parameters")
    default_binary = parameters.pop(BINARY_OUTPUTS, False)
    if not isinstance(default_binary, bool):
        raise InvalidRequest(f"parameters.{BINARY_OUTPUTS} must be a boolean")
    raw = binary.BinaryData(data, declared=header_length is not None)
    inputs = request.get("inputs")
    if not isinstance(inputs, list):
        raise InvalidRequest(f"inputs must be a JSON array, not {_kind(inputs)}")
    limits = (max_elements, max_rows, max_element_bytes)
    decoded = [_input(item, index, raw, *limits) for index, item in enumerate(inputs)]
    raw.finish()
    names, output_parameters, choices = _outputs(request.get("outputs"))
    inference = InferenceRequest(
        model_name=model_name,
        model_version=model_version,
        id=request_id,
        inputs=decoded,
        requested_outputs=names,
    )
    if parameters:
        inference.parameters = parameters
    if output_parameters:
        inference.output_parameters = output_parameters
    return inference, OutputForm(default_binary, choices)


def _check_path_fields(request: dict[str, Any], model_name: str, model_version: str) -> None:
    """The path decides: a body naming another model or version is a mistake to report."""
    for key, path_value in (("model_name", model_name), ("model_version", model_version)):
        if key in request and request[key] != path_value:
            raise InvalidRequest(
                f"the body's {key} {request[key]!r} differs from the path's {path_value!r}; "
                "the path names the model and version, leave them out of the body"
            )


def _input(
    item: Any,
    index: int,
    raw: binary.BinaryData,
    max_elements: int,
    max_rows: int,
    max_element_bytes: int,
) -> Tensor:
    if not isinstance(item, dict):
        raise InvalidRequest(f"inputs[{index}] must be a JSON object, not {_kind(item)}")
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidRequest(f"inputs[{index}].name must be a string")
    datatype_name = item.get("datatype")
    datatype = datatypes.BY_NAME.get(datatype_name) if isinstance(datatype_name, str) else None
    if datatype is None:
        raise InvalidRequest(
            f"input '{name}': datatype {datatype_name!r} is not one of {datatypes.NAMES}",
            tensor=name,
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise InvalidRequest(
            f"input '{name}': shape must be an array of non-negative integers, not "
            f"{orjson.dumps(shape).decode()}",
            tensor=name,
        )
    dims = tuple(shape)
    count = element_count(name, dims, max_elements, max_rows)
    parameters = _parameters(item.get("parameters"), f"input '{name}' parameters")
    size = parameters.get(BINARY_SIZE)
    if size is None:
        if "data" not in item:
            raise InvalidRequest(
                f"input '{name}': neither data nor parameters.{BINARY_SIZE}", tensor=name
            )
        data = tensors.decode(name, datatype, dims, count, item["data"], max_element_bytes)
        return Tensor(name, datatype, data)
    if "data" in item:
        raise InvalidRequest(
            f"input '{name}': both data and parameters.{BINARY_SIZE}; send one", tensor=name
        )
    if not isinstance(size, int) or not _is_count(size):
        raise InvalidRequest(
            f"input '{name}': parameters.{BINARY_SIZE} must be a non-negative integer",
            tensor=name,
        )
    data = binary.decode(name, datatype, dims, count, raw.take(name, size), max_element_bytes)
    return Tensor(name, datatype, data)


def _outputs(
    outputs: Any,
) -> tuple[list[str], dict[str, Parameters], dict[str, bool] | None]:
    """Requested output names, their domain parameters, and their binary_data choices."""
    if outputs is None:
        return [], {}, None
    if not isinstance(outputs, list):
        raise InvalidRequest(f"outputs must be a JSON array, not {_kind(outputs)}")
    names: list[str] = []
    domain: dict[str, Parameters] = {}
    choices: dict[str, bool] = {}
    for index, item in enumerate(outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest(f"outputs[{index}] must be an object with a string name")
        name = item["name"]
        parameters = _parameters(item.get("parameters"), f"output '{name}' parameters")
        choice = parameters.pop(BINARY_OUTPUT, None)
        if choice is not None:
            if not isinstance(choice, bool):
                raise InvalidRequest(
                    f"output '{name}': parameters.{BINARY_OUTPUT} must be a boolean"
                )
            choices[name] = choice
        names.append(name)
        if parameters:
            domain[name] = parameters
    return names, domain, choices


def _parameters(value: Any, where: str) -> dict[str, Parameter]:
    """A parameters object: plain JSON values, as V2 REST sends them."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object, not {_kind(value)}")
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise InvalidRequest(
                f"{where}: '{key}' must be a boolean, number or string, not {_kind(item)}"
            )
    return dict(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kind(value: Any) -> str:
    """A JSON value's kind, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def encode_response(response: InferenceResponse, form: OutputForm) -> tuple[bytes, int | None]:
    """The reply body, and the JSON header's length when binary data follows it."""
    outputs: list[dict[str, Any]] = []
    parts: list[bytes | memoryview] = []
    for tensor in response.outputs:
        output: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype.name,
            "shape": list(tensor.data.shape),
        }
        if form.is_binary(tensor.name):
            raw = binary.encode(tensor)
            output["parameters"] = {BINARY_SIZE: len(raw)}
            parts.append(raw)
        else:
            output["data"] = tensors.encode(tensor)
        outputs.append(output)
    reply: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id:
        reply["id"] = response.id
    reply["outputs"] = outputs
    header = orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)
    if not parts:
        return header, None
    return b"".join([header, *parts]), len(header)
