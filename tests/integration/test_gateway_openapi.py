"""The OpenAPI document of the REST face: its shape, and schemathesis against a real gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from processes import ROOT, start_server

from gateway import start_gateway
from gateway.build import build
from gateway.paths import BuildOutputs

SCHEMATHESIS = ROOT / ".venv" / "bin" / "schemathesis"
# What the document promises and schemathesis can hold the gateway to. Left out:
# positive_data_acceptance (the server rejects schema-valid but meaningless tensors with
# 400), negative_data_rejection (the transcoder ignores unknown JSON fields) and
# unsupported_method (the transcoder answers 404, not 405, to a wrong method).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


# Real names and versions in the path, so calls reach the model instead of 404.
CONFIG = """
[parameters]
"path.name" = "digits"
"path.model_name" = "digits"
"path.version" = "1"
"path.model_version" = "2"
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildOutputs:
    return build(tmp_path_factory.mktemp("gateway-build"))


@pytest.fixture(scope="module")
def document(built: BuildOutputs) -> dict[str, Any]:
    return json.loads(built.openapi_path.read_text())  # type: ignore[no-any-return]


def _operation(document: dict[str, Any], path: str, verb: str) -> dict[str, Any]:
    return document["paths"][path][verb]  # type: ignore[no-any-return]


def test_version_bindings_have_their_own_operations(document: dict[str, Any]) -> None:
    infer = _operation(document, "/v2/models/{model_name}/infer", "post")
    versioned = _operation(
        document, "/v2/models/{model_name}/versions/{model_version}/infer", "post"
    )
    assert (infer["operationId"], versioned["operationId"]) == ("ModelInfer", "ModelInfer2")
    assert [p["name"] for p in versioned["parameters"]] == ["model_name", "model_version"]
    assert all(p["in"] == "path" and p["required"] for p in versioned["parameters"])


def test_path_fields_leave_the_body(document: dict[str, Any]) -> None:
    versioned = _operation(
        document, "/v2/models/{model_name}/versions/{model_version}/infer", "post"
    )
    body = versioned["requestBody"]["content"]["application/json"]["schema"]
    assert "model_name" not in body["properties"]
    assert "model_version" not in body["properties"]
    assert "inputs" in body["properties"]


def test_get_fields_not_in_the_path_are_query_parameters(document: dict[str, Any]) -> None:
    ready = _operation(document, "/v2/models/{name}/ready", "get")
    assert [(p["name"], p["in"]) for p in ready["parameters"]] == [
        ("name", "path"),
        ("version", "query"),
    ]


def test_streams_are_json_arrays(document: dict[str, Any]) -> None:
    stream = _operation(document, "/v2/stream_infer", "post")
    body = stream["requestBody"]["content"]["application/json"]["schema"]
    reply = stream["responses"]["200"]["content"]["application/json"]["schema"]
    assert body["type"] == reply["type"] == "array"
    assert reply["items"] == {"$ref": "#/components/schemas/inference.ModelStreamInferResponse"}


def test_proto3_json_mapping(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    output = schemas["inference.ModelInferResponse.InferOutputTensor"]["properties"]
    # int64 prints as a decimal string and parses from either form.
    assert {s["type"] for s in output["shape"]["items"]["oneOf"]} == {"string", "integer"}
    contents = schemas["inference.InferTensorContents"]["properties"]
    assert contents["bytes_contents"]["items"] == {"type": "string", "format": "byte"}
    assert "NaN" in contents["fp32_contents"]["items"]["oneOf"][1]["enum"]
    assert schemas["inference.DataType"]["enum"][:2] == ["TYPE_INVALID", "TYPE_BOOL"]
    # A oneof allows at most one of its fields.
    parameter = schemas["inference.InferParameter"]
    assert parameter["maxProperties"] == 1
    assert "At most one of: bool_param, int64_param," in parameter["description"]


def test_errors_are_google_rpc_status(document: dict[str, Any]) -> None:
    for item in document["paths"].values():
        for operation in item.values():
            error = operation["responses"]["default"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/google.rpc.Status"}


def test_proto_comments_become_descriptions(document: dict[str, Any]) -> None:
    assert (
        _operation(document, "/v2/models/{model_name}/infer", "post")["summary"] == "Run inference."
    )
    contents = document["components"]["schemas"]["inference.InferTensorContents"]
    assert "row-major" in contents["description"]


@pytest.mark.slow
def test_schemathesis_against_the_gateway(built: BuildOutputs, tmp_path: Path) -> None:
    # A server of its own (digits only): generated calls may unload models.
    repository = tmp_path / "repository"
    shutil.copytree(ROOT / "models" / "digits", repository / "digits")
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    with (
        start_server(repository) as server,
        start_gateway(server.grpc_port, build_dir=built.descriptor_path.parent) as gateway,
    ):
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                f"{gateway.url}/openapi.json",
                "--checks",
                ",".join(CHECKS),
                "--phases",
                "examples,fuzzing",
                "--max-examples",
                "5",
                "--seed",
                "20240",
                "--request-timeout",
                "30",
                "--exclude-path-regex",
                "^/v2/repository/models/",
                "--no-color",
            ],
            cwd=tmp_path,  # schemathesis keeps its state in the working directory
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
