"""One broken model must not take the gateway down: Envoy checks the server's health
service inference.GRPCInferenceService (accepting requests), not "" (every model ready).

A repository holds digits and `broken`, whose config.yaml has an unknown key, so its load
fails. Through the gateway: the server is live, digits answers over V2 REST, gRPC-web and
gRPC, the index shows why broken failed, and readiness answers as V2 REST says (4xx)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from processes import ROOT, start_server
from tritonclient.grpc import service_pb2

from gateway import RunningGateway, start_gateway
from gateway.build import build

BROKEN_CONFIG = "max_batch_size: 8\nno_such_setting: 1\n"
PIXELS = np.zeros((1, 64), np.float32).ravel().tolist()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("broken-repository")
    shutil.copytree(ROOT / "models" / "digits", root / "digits")
    (root / "broken" / "1").mkdir(parents=True)
    shutil.copy(ROOT / "models" / "digits" / "1" / "model.onnx", root / "broken" / "1")
    (root / "broken" / "config.yaml").write_text(BROKEN_CONFIG)
    built = build(tmp_path_factory.mktemp("gateway-build"))
    with (
        start_server(root) as server,
        # Waits until the upstream passes its health check: with service "" it never would.
        start_gateway(server.grpc_port, build_dir=built.descriptor_path.parent) as gw,
    ):
        yield gw


@pytest.fixture
def rest(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


def test_live(rest: httpx.Client) -> None:
    reply = rest.get("/v2/health/live")
    assert (reply.status_code, reply.json()) == (200, {"live": True})


def test_the_good_model_answers_over_rest(rest: httpx.Client) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": PIXELS}]}
    reply = rest.post("/v2/models/digits/infer", json=body)
    assert reply.status_code == 200, reply.text
    assert [o["name"] for o in reply.json()["outputs"]] == ["label", "probabilities"]


def test_the_good_model_answers_over_grpc_web(rest: httpx.Client) -> None:
    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend(PIXELS)
    message = request.SerializeToString()
    reply = rest.post(
        "/inference.GRPCInferenceService/ModelInfer",
        content=b"\0" + len(message).to_bytes(4, "big") + message,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    assert reply.status_code == 200
    length = int.from_bytes(reply.content[1:5], "big")
    response = service_pb2.ModelInferResponse.FromString(reply.content[5 : 5 + length])
    assert response.model_name == "digits"


def test_the_good_model_answers_over_grpc(gateway: RunningGateway) -> None:
    client = triton.InferenceServerClient(gateway.address)
    try:
        assert client.is_server_live()
        assert client.is_model_ready("digits")
        assert not client.is_model_ready("broken")
    finally:
        client.close()


def test_the_index_says_why(rest: httpx.Client) -> None:
    reply = rest.post("/v2/repository/index", json={})
    assert reply.status_code == 200
    states = {entry["name"]: entry for entry in reply.json()}
    assert states["digits"]["state"] == "READY"
    assert states["broken"]["state"] == "UNAVAILABLE"
    assert "no_such_setting" in states["broken"]["reason"]


def test_readiness_by_status(rest: httpx.Client) -> None:
    server = rest.get("/v2/health/ready")
    assert server.status_code == 400  # V2 REST: 4xx is false
    assert "broken (UNAVAILABLE)" in server.json()["error"]
    assert rest.get("/v2/models/digits/ready").status_code == 200
    broken = rest.get("/v2/models/broken/ready")
    assert broken.status_code == 400
    assert "broken" in broken.json()["error"]


def test_the_broken_models_metadata_is_unavailable(rest: httpx.Client) -> None:
    reply = rest.get("/v2/models/broken")
    assert reply.status_code == 503
    assert reply.json() == {"error": "model 'broken' has no ready version"}
