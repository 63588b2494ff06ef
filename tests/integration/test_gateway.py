"""The Envoy gateway end to end: a real Envoy in front of a real server, real clients.

V2 REST with httpx (tritonclient.http and perf_analyzer: test_gateway_rest.py), gRPC-web as
raw frames over HTTP/1.1, native gRPC with tritonclient.
Nothing here imports the server's `inference` package; protobuf messages for gRPC-web
come from tritonclient's copy of the same contract.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc_web
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from processes import ROOT, ServerProcess, free_port, start_server
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from gateway import RunningGateway, start_gateway
from gateway.build import build
from gateway.paths import BuildOutputs

ORIGIN = "http://localhost:5173"
GRPC_WEB_LIVE = "/inference.GRPCInferenceService/ServerLive"
GRPC_WEB_INFER = "/inference.GRPCInferenceService/ModelInfer"


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildOutputs:
    return build(tmp_path_factory.mktemp("gateway-build"))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding only digits (versions 1 and 2), built by `make models`."""
    source = ROOT / "models" / "digits"
    assert (source / "1" / "model.onnx").exists(), "run `make models` first"
    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(source, root / "digits")
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    with start_server(repository) as process:
        yield process


@pytest.fixture(scope="module")
def gateway(
    server: ServerProcess, built: BuildOutputs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    log = tmp_path_factory.mktemp("envoy") / "envoy.log"
    with start_gateway(
        server.grpc_port, build_dir=built.descriptor_path.parent, log_path=log
    ) as running:
        yield running


@pytest.fixture
def rest(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def triton_via_gateway(gateway: RunningGateway) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(gateway.address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def triton_direct(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


# --- inputs and decoding --------------------------------------------------------------------

ROWS = np.random.default_rng(4).integers(0, 17, size=(3, 64)).astype(np.float32)


def _rest_body(rows: np.ndarray, nested: bool = False) -> dict[str, Any]:
    """A V2 inference request for digits, its pixels as JSON data."""
    data = rows.tolist() if nested else rows.ravel().tolist()
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": data}]
    }


def _binary_body(
    rows: np.ndarray, extra: bytes = b"", declared: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The same request with the pixels as binary tensor data (`extra` bytes appended)."""
    raw = rows.astype(np.float32).tobytes()
    size = len(raw) if declared is None else declared
    tensor = {"name": "input", "datatype": "FP32", "shape": list(rows.shape)}
    header = json.dumps({"inputs": [tensor | {"parameters": {"binary_data_size": size}}]}).encode()
    headers = {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }
    return header + raw + extra, headers


def _rest_outputs(reply: dict[str, Any]) -> dict[str, np.ndarray]:
    """Outputs of a V2 REST inference reply as arrays."""
    dtypes = {"INT64": np.int64, "FP32": np.float32}
    return {
        o["name"]: np.array(o["data"], dtype=dtypes[o["datatype"]]).reshape(o["shape"])
        for o in reply["outputs"]
    }


def _triton_outputs(
    client: triton.InferenceServerClient, rows: np.ndarray, version: str = ""
) -> dict[str, np.ndarray]:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("digits", [tensor], model_version=version)
    return {name: result.as_numpy(name) for name in ("label", "probabilities")}


def _decode_grpc_web_text(body: bytes) -> bytes:
    # Envoy base64-encodes each chunk on its own, padding included, so decode per
    # 4-character quantum rather than the body as one string.
    return b"".join(base64.b64decode(body[i : i + 4]) for i in range(0, len(body), 4))


def _infer_request(rows: np.ndarray, model: str = "digits") -> bytes:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    return request.SerializeToString()


# --- V2 REST: every path ------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One REST call: the OpenAPI path it exercises, what to send, what must come back."""

    template: str
    method: str
    path: str
    body: Any
    status: int
    check: Callable[[Any], bool]


_INFER_BODY = _rest_body(ROWS[:1])
_HAS_LABEL = lambda reply: [o["name"] for o in reply["outputs"]] == ["label", "probabilities"]  # noqa: E731
_ERROR = lambda text: lambda reply: text in reply["error"] and list(reply) == ["error"]  # noqa: E731

CALLS = [
    Call("/v2/health/live", "GET", "/v2/health/live", None, 200, lambda r: r == {"live": True}),
    Call("/v2/health/ready", "GET", "/v2/health/ready", None, 200, lambda r: r == {"ready": True}),
    Call("/v2", "GET", "/v2", None, 200, lambda r: "binary_tensor_data" in r["extensions"]),
    Call(
        "/v2/models/{model_name}",
        "GET",
        "/v2/models/digits",
        None,
        200,
        lambda r: r["versions"] == ["1", "2"] and r["inputs"][0]["shape"] == [-1, 64],
    ),
    Call(
        "/v2/models/{model_name}/versions/{model_version}",
        "GET",
        "/v2/models/digits/versions/1",
        None,
        200,
        lambda r: r["name"] == "digits" and r["platform"] == "onnxruntime_onnx",
    ),
    Call(
        "/v2/models/{model_name}/ready",
        "GET",
        "/v2/models/digits/ready",
        None,
        200,
        lambda r: r == {"name": "digits", "ready": True},
    ),
    Call(
        "/v2/models/{model_name}/versions/{model_version}/ready",
        "GET",
        "/v2/models/digits/versions/7/ready",
        None,
        404,  # V2 REST: readiness by status, 4xx is false
        _ERROR("no ready version 7"),
    ),
    Call(
        "/v2/models/{model_name}/config",
        "GET",
        "/v2/models/digits/config",
        None,
        200,
        lambda r: r["max_batch_size"] == 64 and r["input"][0]["dims"] == [64],
    ),
    Call(
        "/v2/models/{model_name}/versions/{model_version}/config",
        "GET",
        "/v2/models/digits/versions/2/config",
        None,
        200,
        lambda r: r["input"][0]["data_type"] == "TYPE_FP32",
    ),
    Call(
        "/v2/models/{model_name}/stats",
        "GET",
        "/v2/models/digits/stats",
        None,
        200,
        lambda r: {s["version"] for s in r["model_stats"]} == {"1", "2"},
    ),
    Call(
        "/v2/models/{model_name}/versions/{model_version}/stats",
        "GET",
        "/v2/models/digits/versions/1/stats",
        None,
        200,
        lambda r: [s["version"] for s in r["model_stats"]] == ["1"],
    ),
    Call(
        "/v2/models/stats",
        "GET",
        "/v2/models/stats",
        None,
        200,
        lambda r: {s["name"] for s in r["model_stats"]} == {"digits"},
    ),
    Call(
        "/v2/models/{model_name}/infer",
        "POST",
        "/v2/models/digits/infer",
        _INFER_BODY,
        200,
        lambda r: r["model_version"] == "2" and _HAS_LABEL(r),
    ),
    Call(
        "/v2/models/{model_name}/versions/{model_version}/infer",
        "POST",
        "/v2/models/digits/versions/1/infer",
        _INFER_BODY | {"id": "a"},
        200,
        lambda r: (r["model_version"], r["id"]) == ("1", "a") and _HAS_LABEL(r),
    ),
    Call(
        "/v2/repository/index",
        "POST",
        "/v2/repository/index",
        {"ready": True},
        200,
        lambda r: (
            [(m["name"], m["version"], m["state"]) for m in r]
            == [("digits", "1", "READY"), ("digits", "2", "READY")]
        ),
    ),
    # Loading and unloading a real model: test_repository_load_and_unload.
    Call(
        "/v2/repository/models/{model_name}/load",
        "POST",
        "/v2/repository/models/nope/load",
        {},
        404,
        _ERROR("no model 'nope'"),
    ),
    Call(
        "/v2/repository/models/{model_name}/unload",
        "POST",
        "/v2/repository/models/nope/unload",
        {},
        404,
        _ERROR("nope"),
    ),
]


@pytest.mark.parametrize("call", CALLS, ids=[f"{c.method} {c.path}" for c in CALLS])
def test_rest_path(rest: httpx.Client, call: Call) -> None:
    reply = rest.request(call.method, call.path, json=call.body)
    assert reply.status_code == call.status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert not any(h.startswith("grpc-") or h == "x-v2-status" for h in reply.headers)
    assert call.check(reply.json()), reply.text


def test_every_documented_path_is_called(rest: httpx.Client) -> None:
    documented = set(rest.get("/openapi.json").json()["paths"])
    assert documented == {c.template for c in CALLS}


def test_repository_load_and_unload(repository: Path, built: BuildOutputs) -> None:
    # A server of its own: unloading must not disturb the other tests.
    with (
        start_server(repository) as server,
        start_gateway(server.grpc_port, build_dir=built.descriptor_path.parent) as gateway,
        httpx.Client(base_url=gateway.url) as rest,
    ):
        assert rest.post("/v2/repository/models/digits/unload", json={}).json() == {}
        reply = rest.get("/v2/models/digits/ready")
        assert reply.status_code == 400 and "no ready version" in reply.json()["error"]
        assert rest.get("/v2/health/ready").status_code == 200  # unloaded on purpose
        assert rest.post("/v2/repository/models/digits/load").json() == {}
        assert rest.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}


# --- V2 REST: results and errors ------------------------------------------------------------


@pytest.mark.parametrize("version", ["", "1", "2"])
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_rest_inference_equals_grpc(
    rest: httpx.Client, triton_direct: triton.InferenceServerClient, version: str, nested: bool
) -> None:
    path = f"/v2/models/digits/versions/{version}/infer" if version else "/v2/models/digits/infer"
    reply = rest.post(path, json=_rest_body(ROWS, nested))
    assert reply.status_code == 200, reply.text
    over_rest = _rest_outputs(reply.json())
    over_grpc = _triton_outputs(triton_direct, ROWS, version)
    np.testing.assert_array_equal(over_rest["label"], over_grpc["label"])
    # JSON prints each float32 in its shortest round-tripping form: exact equality holds.
    np.testing.assert_array_equal(over_rest["probabilities"], over_grpc["probabilities"])


def test_binary_rest_inference_equals_grpc(
    rest: httpx.Client, triton_direct: triton.InferenceServerClient
) -> None:
    body, headers = _binary_body(ROWS)
    request = json.loads(body[: int(headers["inference-header-content-length"])])
    request["parameters"] = {"binary_data_output": True}
    header = json.dumps(request).encode()
    headers["inference-header-content-length"] = str(len(header))
    reply = rest.post("/v2/models/digits/infer", content=header + ROWS.tobytes(), headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/octet-stream"
    length = int(reply.headers["inference-header-content-length"])
    label, probabilities = json.loads(reply.content[:length])["outputs"]
    data = reply.content[length:]
    assert (
        len(data)
        == label["parameters"]["binary_data_size"] + probabilities["parameters"]["binary_data_size"]
    )
    labels = np.frombuffer(data[: 3 * 8], np.int64)
    np.testing.assert_array_equal(labels, _triton_outputs(triton_direct, ROWS)["label"])


def _error(reply: httpx.Response, status: int) -> str:
    """The message of a V2 REST error reply, after checking its shape."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    return str(body["error"])


_ONE = ROWS[:1]
_BAD_DATATYPE = {"inputs": [_INFER_BODY["inputs"][0] | {"datatype": "FP99"}]}

ERRORS = [
    # path, body (or bytes and headers), status, part of the message
    pytest.param(
        "/v2/models/digits/infer",
        _rest_body(ROWS[:, :63]),
        400,
        "input 'input': shape [3, 63]",
        id="wrong-shape",
    ),
    pytest.param(
        "/v2/models/nope/infer", _INFER_BODY, 404, "unknown model 'nope'", id="unknown-model"
    ),
    pytest.param(
        "/v2/models/digits/versions/9/infer",
        _INFER_BODY,
        404,
        "no ready version 9",
        id="unknown-version",
    ),
    pytest.param(
        "/v2/models/digits/infer",
        _BAD_DATATYPE,
        400,
        "datatype 'FP99' is not one of",
        id="bad-datatype",
    ),
    pytest.param(
        "/v2/models/digits/infer",
        [_INFER_BODY],
        400,
        "must be a JSON object, not an array",
        id="not-an-object",
    ),
    pytest.param(
        "/v2/models/digits/infer", (b"{not json", {}), 400, "is not valid JSON", id="malformed"
    ),
    pytest.param(
        "/v2/models/digits/infer",
        _binary_body(_ONE, declared=260),
        400,
        "binary_data_size 260 runs past",
        id="binary-shorter",
    ),
    pytest.param(
        "/v2/models/digits/infer",
        _binary_body(_ONE, extra=b"\0" * 4),
        400,
        "holds 260 bytes of binary data but",
        id="binary-longer",
    ),
    pytest.param(
        "/v2/models/digits/infer",
        _binary_body(_ONE, extra=b"\0" * 4, declared=260),
        400,
        "binary_data_size is 260 but shape [1, 64] of FP32 needs 256",
        id="binary-size-wrong",
    ),
    pytest.param(
        "/v2/models/digits/infer",
        _INFER_BODY | {"model_name": "other"},
        400,
        "the path names the model",
        id="body-names-another-model",
    ),
    pytest.param(
        "/v2/models/digits/versions/1/infer",
        _INFER_BODY | {"model_version": "2"},
        400,
        "the path names the model",
        id="body-names-another-version",
    ),
    pytest.param(
        "/v2/models/digits/infer?model_name=other",
        _INFER_BODY,
        400,
        "no query parameters",
        id="query-names-another-model",
    ),
    pytest.param(
        "/v2/models/digits?model_version=1", None, 400, "no query parameters", id="query-on-a-get"
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), ERRORS)
def test_rest_errors(rest: httpx.Client, path: str, body: Any, status: int, message: str) -> None:
    if body is None:
        reply = rest.get(path)
    elif isinstance(body, tuple):
        content, headers = body
        reply = rest.post(path, content=content, headers=headers)
    else:
        reply = rest.post(path, json=body)
    assert message in _error(reply, status)


@pytest.mark.slow
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_large_rest_reply(built: BuildOutputs, tmp_path: Path, binary: bool) -> None:
    # minilm's hidden states for two 512-token sentences: 1.5 MB of floats, 5 MB of JSON,
    # more than Envoy buffers by default.
    shutil.copytree(ROOT / "models" / "minilm", tmp_path / "minilm")
    tokens = [101, *range(2000, 2510), 102] * 2
    inputs = [
        {"name": name, "datatype": "INT64", "shape": [2, 512], "data": values}
        for name, values in (
            ("input_ids", tokens),
            ("attention_mask", [1] * 1024),
            ("token_type_ids", [0] * 1024),
        )
    ]
    with (
        start_server(tmp_path) as server,
        start_gateway(server.grpc_port, build_dir=built.descriptor_path.parent) as gateway,
    ):
        body = {"inputs": inputs, "parameters": {"binary_data_output": binary}}
        reply = httpx.post(f"{gateway.url}/v2/models/minilm/infer", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    if binary:
        length = int(reply.headers["inference-header-content-length"])
        (output,) = json.loads(reply.content[:length])["outputs"]
        assert (
            len(reply.content) - length
            == output["parameters"]["binary_data_size"]
            == 2 * 512 * 384 * 4
        )
    else:
        (output,) = reply.json()["outputs"]
        assert len(output["data"]) == 2 * 512 * 384
    assert output["shape"] == [2, 512, 384]


def test_large_rest_request(rest: httpx.Client) -> None:
    # 3 MB of JSON, more than Envoy buffers by default: it reaches the server.
    rows = np.ones((1, 300_000), dtype=np.float32)
    message = _error(rest.post("/v2/models/digits/infer", json=_rest_body(rows)), 400)
    assert "shape [1, 300000]" in message  # the server's shape check, not 413 from Envoy


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/v2/nope"),
        ("POST", "/v2/models/digits/ready"),
        ("DELETE", "/v2/health/live"),
        ("GET", "/openapi.yaml"),
    ],
)
def test_unknown_path_is_json_404(rest: httpx.Client, method: str, path: str) -> None:
    _error(rest.request(method, path, json={}), 404)


# --- CORS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [GRPC_WEB_INFER, "/v2/models/digits/infer"])
def test_cors_preflight_from_an_allowed_origin(rest: httpx.Client, path: str) -> None:
    reply = rest.options(
        path,
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,x-user-agent,grpc-timeout",
        },
    )
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"} <= allowed
    exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message", "deprecation", "sunset"} <= exposed


def test_cors_refuses_other_origins(rest: httpx.Client) -> None:
    headers = {"origin": "https://elsewhere.example", "access-control-request-method": "POST"}
    reply = rest.options(GRPC_WEB_INFER, headers=headers)
    assert "access-control-allow-origin" not in reply.headers


def test_cors_headers_on_a_rest_reply(rest: httpx.Client) -> None:
    reply = rest.get("/v2/health/live", headers={"origin": ORIGIN})
    assert reply.headers["access-control-allow-origin"] == ORIGIN


# --- gRPC-web -------------------------------------------------------------------------------


@pytest.mark.parametrize("text_mode", [False, True], ids=["binary", "text"])
def test_grpc_web_inference_equals_grpc(
    rest: httpx.Client,
    triton_direct: triton.InferenceServerClient,
    text_mode: bool,
) -> None:
    body = grpc_web.frame(_infer_request(ROWS))
    kind = "application/grpc-web-text" if text_mode else "application/grpc-web+proto"
    headers = {"content-type": kind, "accept": kind, "x-grpc-web": "1", "origin": ORIGIN}
    reply = rest.post(
        GRPC_WEB_INFER, content=base64.b64encode(body) if text_mode else body, headers=headers
    )
    assert reply.status_code == 200
    raw = _decode_grpc_web_text(reply.content) if text_mode else reply.content
    messages, trailers = grpc_web.reply(raw)
    assert trailers["grpc-status"] == "0"
    response = service_pb2.ModelInferResponse.FromString(messages[0])
    labels = list(response.outputs[0].contents.int64_contents)
    assert labels == _triton_outputs(triton_direct, ROWS)["label"].tolist()


def test_grpc_web_error_status(rest: httpx.Client) -> None:
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    reply = rest.post(
        GRPC_WEB_INFER, content=grpc_web.frame(_infer_request(ROWS, "nope")), headers=headers
    )
    # A trailers-only reply: the status travels in the HTTP headers.
    assert reply.headers["grpc-status"] == "5"
    assert "nope" in reply.headers["grpc-message"]


@pytest.mark.parametrize("te", [None, "gzip", "trailers"])
def test_grpc_web_whatever_te_header_the_browser_sends(rest: httpx.Client, te: str | None) -> None:
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    if te is not None:
        headers["te"] = te
    _, trailers = grpc_web.reply(
        rest.post(GRPC_WEB_LIVE, content=grpc_web.frame(b""), headers=headers).content
    )
    assert trailers["grpc-status"] == "0"


def test_grpc_web_server_streaming(rest: httpx.Client) -> None:
    # Health/Watch: the first message is the current status; the stream then stays open.
    request = health_pb2.HealthCheckRequest(service="").SerializeToString()
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    path = "/grpc.health.v1.Health/Watch"
    with rest.stream("POST", path, content=grpc_web.frame(request), headers=headers) as reply:
        received = b""
        for chunk in reply.iter_bytes():
            received += chunk
            if len(received) >= 5 and len(received) >= 5 + int.from_bytes(received[1:5], "big"):
                break
    status = health_pb2.HealthCheckResponse.FromString(received[5:])
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_without_te_trailers_still_reaches_the_server(gateway: RunningGateway) -> None:
    # gRPC servers reject a request without `te: trailers`; Envoy strips hop-by-hop
    # headers. The gateway adds it on every upstream request (see envoy.yaml).
    with httpx.Client(http1=False, http2=True) as h2c:
        reply = h2c.post(
            gateway.url + GRPC_WEB_LIVE,
            content=grpc_web.frame(b""),
            headers={"content-type": "application/grpc"},
        )
    assert reply.http_version == "HTTP/2"
    assert reply.headers.get("grpc-status", "0") == "0", reply.headers.get("grpc-message")
    assert service_pb2.ServerLiveResponse.FromString(reply.content[5:]).live


# --- native gRPC ----------------------------------------------------------------------------


def test_tritonclient_through_the_gateway(
    triton_via_gateway: triton.InferenceServerClient,
    triton_direct: triton.InferenceServerClient,
) -> None:
    assert triton_via_gateway.is_server_live()
    assert triton_via_gateway.is_model_ready("digits")
    metadata = triton_via_gateway.get_model_metadata("digits", as_json=True)
    assert metadata["versions"] == ["1", "2"]
    config = triton_via_gateway.get_model_config("digits", as_json=True)
    assert config["config"]["max_batch_size"] == 64
    via, direct = (_triton_outputs(c, ROWS) for c in (triton_via_gateway, triton_direct))
    np.testing.assert_array_equal(via["label"], direct["label"])
    np.testing.assert_array_equal(via["probabilities"], direct["probabilities"])


def test_server_reflection_through_the_gateway(gateway: RunningGateway) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


def test_tritonclient_error_through_the_gateway(
    triton_via_gateway: triton.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as error:
        triton_via_gateway.get_model_metadata("nope")
    assert error.value.status() == "StatusCode.NOT_FOUND"


# --- the upstream down ----------------------------------------------------------------------


def test_upstream_down(built: BuildOutputs) -> None:
    """Against a closed port: REST gets JSON 503, gRPC and gRPC-web get UNAVAILABLE."""
    with (
        start_gateway(
            free_port(), build_dir=built.descriptor_path.parent, wait_for_upstream=False
        ) as gw,
        httpx.Client(base_url=gw.url) as rest,
    ):
        assert "no healthy upstream" in _error(rest.get("/v2/health/ready"), 503)
        _error(rest.post("/v2/models/digits/infer", json=_INFER_BODY), 503)

        headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
        reply = rest.post(GRPC_WEB_LIVE, content=grpc_web.frame(b""), headers=headers)
        assert reply.headers["grpc-status"] == "14"

        client = triton.InferenceServerClient(gw.address)
        with pytest.raises(InferenceServerException) as error:
            client.is_server_live()
        client.close()
        assert error.value.status() == "StatusCode.UNAVAILABLE"


def test_a_failed_call_is_still_a_v2_error(built: BuildOutputs) -> None:
    """An upstream without the REST service (a server older than its gateway) fails every
    REST call outright with UNIMPLEMENTED; the reply is still `{"error": ...}`."""
    upstream = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    checks = health.HealthServicer()
    checks.set("inference.GRPCInferenceService", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, upstream)
    port = upstream.add_insecure_port("127.0.0.1:0")
    upstream.start()
    try:
        with (
            start_gateway(port, build_dir=built.descriptor_path.parent) as gw,
            httpx.Client(base_url=gw.url) as rest,
        ):
            assert _error(rest.get("/v2/health/live"), 501) == "Method not found!"
            _error(rest.post("/v2/models/digits/infer", json=_INFER_BODY), 501)
    finally:
        upstream.stop(None)


def test_gateway_recovers_when_the_server_comes_up(repository: Path, built: BuildOutputs) -> None:
    # The health check's short no_traffic_interval: an idle gateway notices within a second
    # or so instead of a minute (wait_for_upstream's deadline is far above either).
    port = free_port()
    with start_gateway(port, build_dir=built.descriptor_path.parent, wait_for_upstream=False) as gw:
        assert httpx.get(gw.url + "/v2/health/live").status_code == 503
        with start_server(repository, "--grpc-port", str(port)):
            gw.wait_for_upstream(timeout=10)
            assert httpx.get(gw.url + "/v2/health/live").json() == {"live": True}


# --- the machine ----------------------------------------------------------------------------


def test_two_gateways_side_by_side(server: ServerProcess, built: BuildOutputs) -> None:
    with (
        start_gateway(server.grpc_port, build_dir=built.descriptor_path.parent) as first,
        start_gateway(server.grpc_port, build_dir=built.descriptor_path.parent) as second,
    ):
        assert first.http_port != second.http_port
        for gw in (first, second):
            assert httpx.get(gw.url + "/v2/health/live").json() == {"live": True}


# --- OpenAPI --------------------------------------------------------------------------------


def test_openapi_document_is_served(rest: httpx.Client, built: BuildOutputs) -> None:
    reply = rest.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == json.loads(built.openapi_path.read_text())
    assert reply.json()["openapi"].startswith("3.0")


# --- the documentation ----------------------------------------------------------------------


def test_the_documented_digits_call_works(rest: httpx.Client) -> None:
    docs = (ROOT / "docs" / "gateway.md").read_text()
    call = re.search(r"curl -s -X POST localhost:8000(\S+) \\\n.*?-d '(.+?)'\n", docs, re.DOTALL)
    assert call is not None, "the digits example is gone from docs/gateway.md"
    path, body = call.groups()
    reply = rest.post(path, content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["data"] == [3]
