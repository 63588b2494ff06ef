"""Deprecated versions and version labels (config.yaml's `deprecated` and `labels`,
server/repository/config.py), directly over gRPC and through the real gateway.

A deprecated version answers with initial metadata `deprecation`, `sunset` and `link`
until its sunset, and FAILED_PRECONDITION naming its replacement from then on. Through
Envoy the initial metadata become HTTP response headers, on V2 REST and on gRPC-web
alike; after the sunset, V2 REST answers 400 and gRPC-web FAILED_PRECONDITION, both with
the message that names the replacement.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import grpc_web
import httpx
import numpy as np
import pytest
from processes import ServerProcess, start_server
from traffic import output, raw_fp32_request
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway import start_gateway
from gateway.build import build

WriteModel: TypeAlias = Callable[[Path, str, dict[int, bytes], str], Path]
Stub: TypeAlias = service_pb2_grpc.GRPCInferenceServiceStub
X = np.array([[1.0, 2.0]], np.float32)
DEPRECATION_KEYS = {"deprecation", "sunset", "link"}

SUNSET_AHEAD = """\
max_batch_size: 4
version_policy: {all: true}
labels: {stable: 2, canary: 3}
deprecated:
  - {version: 1, sunset: 2099-06-30, replacement: "2"}
"""
SUNSET_PASSED = """\
max_batch_size: 4
version_policy: {all: true}
labels: {stable: 2}
deprecated:
  - {version: 1, sunset: 2020-01-31T12:00:00Z, replacement: stable}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: WriteModel,
    add_constant_model: Callable[[float], bytes],
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("deprecation")
    three = {n: add_constant_model(float(n)) for n in (1, 2, 3)}
    write_model(root, "ahead", three, SUNSET_AHEAD)
    write_model(root, "passed", three, SUNSET_PASSED)
    with start_server(root) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]) -> Stub:
    return Stub(connect(server))


def infer(
    stub: Stub, model: str, version: str
) -> tuple[service_pb2.ModelInferResponse, dict[str, str]]:
    """The response, and the initial metadata it came with (keys the server chose)."""
    request = raw_fp32_request(model, "x", X)
    request.model_version = version
    response, call = stub.ModelInfer.with_call(request, timeout=30)
    metadata = {key: value for key, value in call.initial_metadata()}
    return response, metadata


def added(response: service_pb2.ModelInferResponse) -> float:
    return float((output(response, "y", np.float32) - X)[0, 0])


def test_a_deprecated_version_answers_with_deprecation_metadata(stub: Stub) -> None:
    response, metadata = infer(stub, "ahead", "1")
    assert (response.model_version, added(response)) == ("1", 1.0)
    assert {key: metadata[key] for key in DEPRECATION_KEYS} == {
        "deprecation": "true",
        "sunset": "Tue, 30 Jun 2099 00:00:00 GMT",
        "link": '</v2/models/ahead/versions/2>; rel="successor-version"',
    }


@pytest.mark.parametrize("version", ["", "2", "3", "stable", "canary"])
def test_other_versions_carry_no_deprecation_metadata(stub: Stub, version: str) -> None:
    response, metadata = infer(stub, "ahead", version)
    assert response.model_version in ("2", "3")
    assert DEPRECATION_KEYS.isdisjoint(metadata), metadata


@pytest.mark.parametrize(("label", "version"), [("stable", "2"), ("canary", "3")])
def test_labels_work_as_model_version(stub: Stub, label: str, version: str) -> None:
    response, _ = infer(stub, "ahead", label)
    assert (response.model_version, added(response)) == (version, float(version))


def test_an_unknown_label_names_the_labels(
    stub: Stub, rpc_error: Callable[[Callable[[], object], grpc.StatusCode], str]
) -> None:
    message = rpc_error(lambda: infer(stub, "ahead", "beta"), grpc.StatusCode.INVALID_ARGUMENT)
    assert message == (
        "model_version 'beta' must be an integer, one of the labels ['canary', 'stable'], or empty"
    )


def test_after_the_sunset_a_deprecated_version_is_refused_naming_its_replacement(
    stub: Stub, rpc_error: Callable[[Callable[[], object], grpc.StatusCode], str]
) -> None:
    message = rpc_error(lambda: infer(stub, "passed", "1"), grpc.StatusCode.FAILED_PRECONDITION)
    assert message == (
        "model 'passed' version 1 was retired on 2020-01-31T12:00:00+00:00; use version "
        "stable (/v2/models/passed/versions/stable)"
    )
    response, metadata = infer(stub, "passed", "stable")  # the replacement serves
    assert (response.model_version, added(response)) == ("2", 2.0)
    assert DEPRECATION_KEYS.isdisjoint(metadata)


def test_a_retired_version_is_refused_on_a_stream_too(stub: Stub) -> None:
    request = raw_fp32_request("passed", "x", X)
    request.model_version, request.id = "1", "old"
    [reply] = list(stub.ModelStreamInfer(iter([request]), timeout=30))
    assert reply.error_message.startswith("model 'passed' version 1 was retired on ")
    assert reply.infer_response.id == "old"
    assert reply.infer_response.parameters["error_code"].string_param == "FAILED_PRECONDITION"


def test_refusals_are_counted_as_failures(stub: Stub) -> None:
    def failed() -> int:
        stats = stub.ModelStatistics(
            service_pb2.ModelStatisticsRequest(name="passed", version="1"), timeout=30
        )
        return int(stats.model_stats[0].inference_stats.fail.count)

    before = failed()
    with pytest.raises(grpc.RpcError):
        infer(stub, "passed", "1")
    assert failed() == before + 1


def test_use_of_a_deprecated_version_is_logged_at_most_once_a_minute(
    stub: Stub, server: ServerProcess
) -> None:
    for _ in range(5):
        infer(stub, "ahead", "1")
    notices = [
        e
        for e in server.logs()
        if e.get("message") == "deprecated model version in use" and e.get("model") == "ahead"
    ]
    assert len(notices) == 1, notices
    assert notices[0]["level"] == "WARNING"
    assert (notices[0]["version"], notices[0]["replacement"]) == (1, "2")
    assert notices[0]["sunset"] == "2099-06-30T00:00:00+00:00"


# --- through the gateway (Envoy): V2 REST and gRPC-web -------------------------------------

AHEAD_HEADERS = {
    "deprecation": "true",
    "sunset": "Tue, 30 Jun 2099 00:00:00 GMT",
    "link": '</v2/models/ahead/versions/2>; rel="successor-version"',
}
RETIRED = (
    "model 'passed' version 1 was retired on 2020-01-31T12:00:00+00:00; use version "
    "stable (/v2/models/passed/versions/stable)"
)
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def gateway(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    built = build(tmp_path_factory.mktemp("gateway-build"))
    with (
        start_gateway(server.grpc_port, build_dir=built.descriptor_path.parent) as running,
        httpx.Client(base_url=running.url, timeout=30) as client,
    ):
        yield client


def rest_infer(client: httpx.Client, model: str, version: str) -> httpx.Response:
    path = (
        f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
    )
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
    return client.post(path, json=body)


def grpc_web_infer(client: httpx.Client, model: str, version: str) -> grpc_web.Reply:
    request = raw_fp32_request(model, "x", X)
    request.model_version = version
    return grpc_web.call(client, MODEL_INFER, request.SerializeToString())


def test_a_deprecated_versions_headers_arrive_over_rest_through_envoy(
    gateway: httpx.Client,
) -> None:
    reply = rest_infer(gateway, "ahead", "1")
    assert reply.status_code == 200, reply.text
    assert reply.json()["model_version"] == "1"
    assert {key: reply.headers.get(key) for key in DEPRECATION_KEYS} == AHEAD_HEADERS
    for version in ("2", "stable", ""):  # the others carry none
        other = rest_infer(gateway, "ahead", version)
        assert other.status_code == 200, other.text
        assert DEPRECATION_KEYS.isdisjoint(other.headers), (version, other.headers)


def test_a_deprecated_versions_headers_arrive_over_grpc_web_through_envoy(
    gateway: httpx.Client,
) -> None:
    reply = grpc_web_infer(gateway, "ahead", "1")
    assert reply.status == grpc.StatusCode.OK.value[0], reply.message
    [message] = reply.messages
    assert service_pb2.ModelInferResponse.FromString(message).model_version == "1"
    assert {key: reply.headers.get(key) for key in DEPRECATION_KEYS} == AHEAD_HEADERS
    other = grpc_web_infer(gateway, "ahead", "2")
    assert other.status == grpc.StatusCode.OK.value[0], other.message
    assert DEPRECATION_KEYS.isdisjoint(other.headers), other.headers


def test_after_the_sunset_rest_answers_400_naming_the_replacement(gateway: httpx.Client) -> None:
    reply = rest_infer(gateway, "passed", "1")
    assert reply.status_code == 400, reply.text
    assert reply.json() == {"error": RETIRED}
    served = rest_infer(gateway, "passed", "stable")  # the replacement serves
    assert served.status_code == 200, served.text
    assert served.json()["model_version"] == "2"


def test_after_the_sunset_grpc_web_answers_failed_precondition(gateway: httpx.Client) -> None:
    reply = grpc_web_infer(gateway, "passed", "1")
    assert reply.status == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert urllib.parse.unquote(reply.message) == RETIRED
    assert reply.messages == []
