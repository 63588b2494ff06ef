"""The OpenAPI document of the V2 REST face: its shape, its check against the proto
annotations, and schemathesis against a real gateway, positive and negative cases."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorSet
from processes import ROOT, start_server

from gateway import start_gateway
from gateway.build import build
from gateway.openapi import DocumentMismatch, annotated_operations, build_openapi
from gateway.paths import BuildOutputs

SCHEMATHESIS = ROOT / ".venv" / "bin" / "schemathesis"
# Every check schemathesis has for a stateless run: every reply must match the document
# (status, content type, schema, headers) and none may be a 5xx; data the document forbids
# must be refused with a 4xx, data it allows accepted. Left out: unsupported_method (the
# transcoder answers 404, not 405, to a wrong method). Real names and versions in the path,
# so calls reach the model. Inference is exempt from positive_data_acceptance: a
# schema-valid tensor of the wrong shape for digits is rightly a 400 (the document covers
# every model; each model decides its shapes).
CONFIG = """
[parameters]
"path.model_name" = "digits"
"path.model_version" = "2"

[checks]
unsupported_method.enabled = false

[[operations]]
include-path-regex = "/infer$"
checks.positive_data_acceptance.enabled = false
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildOutputs:
    return build(tmp_path_factory.mktemp("gateway-build"))


@pytest.fixture(scope="module")
def document(built: BuildOutputs) -> dict[str, Any]:
    return json.loads(built.openapi_path.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def descriptor_set(built: BuildOutputs) -> FileDescriptorSet:
    return FileDescriptorSet.FromString(built.descriptor_path.read_bytes())


def test_the_document_has_the_annotated_operations(
    document: dict[str, Any], descriptor_set: FileDescriptorSet
) -> None:
    documented = {(verb, path) for path, item in document["paths"].items() for verb in item}
    assert documented == annotated_operations(descriptor_set)
    assert ("post", "/v2/models/{model_name}/versions/{model_version}/infer") in documented


def test_a_document_that_drifts_from_the_annotations_is_not_built(
    descriptor_set: FileDescriptorSet,
) -> None:
    drifted = FileDescriptorSet()
    drifted.CopyFrom(descriptor_set)
    for file in drifted.file:
        for service in file.service:
            if service.name == "HTTPInferenceService":
                del service.method[-1]
    with pytest.raises(DocumentMismatch, match="only documented"):
        build_openapi(drifted)


def _schemas(document: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"]  # type: ignore[no-any-return]


def test_shapes_and_counters_are_integers(document: dict[str, Any]) -> None:
    schemas = _schemas(document)
    tensor = schemas["ModelMetadataResponse"]["properties"]["inputs"]["items"]
    assert tensor["properties"]["shape"]["items"] == {"type": "integer", "minimum": -1}
    request_input = schemas["InferenceRequest"]["properties"]["inputs"]["items"]
    assert request_input["properties"]["shape"]["items"] == {"type": "integer", "minimum": 0}


def test_inference_takes_json_or_binary_data(document: dict[str, Any]) -> None:
    infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert set(infer["responses"]["200"]["content"]) == {
        "application/json",
        "application/octet-stream",
    }
    header = next(p for p in infer["parameters"] if p["in"] == "header")
    assert header["name"] == "Inference-Header-Content-Length"
    assert [p["name"] for p in infer["parameters"] if p["in"] == "path"] == ["model_name"]
    assert not [p for p in infer["parameters"] if p["in"] == "query"]


def test_errors_are_v2_error_objects(document: dict[str, Any]) -> None:
    assert _schemas(document)["Error"]["required"] == ["error"]
    for item in document["paths"].values():
        for operation in item.values():
            default = operation["responses"]["default"]["content"]["application/json"]
            assert default["schema"] == {"$ref": "#/components/schemas/Error"}


def test_the_config_is_the_object_itself(document: dict[str, Any]) -> None:
    config = document["paths"]["/v2/models/{model_name}/config"]["get"]["responses"]["200"]
    assert config["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ModelConfig"
    }
    assert "max_batch_size" in _schemas(document)["ModelConfig"]["properties"]


@pytest.mark.slow
def test_schemathesis_against_the_gateway(built: BuildOutputs, tmp_path: Path) -> None:
    # A server of its own (digits only). Loading and unloading stay out: a generated call
    # could unload digits under the other operations; test_gateway*.py call them.
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
                *("--mode", "all"),  # positive and negative cases
                *("--phases", "examples,coverage,fuzzing"),
                *("--max-examples", "25", "--seed", "20240", "--request-timeout", "30"),
                *("--exclude-path-regex", "^/v2/repository/models/"),
                "--no-color",
            ],
            cwd=tmp_path,  # schemathesis keeps its state in the working directory
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "0 generated" not in result.stdout
