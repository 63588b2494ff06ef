"""Every way a request can be wrong: the status code, and a message that names the input and
what was expected. A bad request fails alone; the server keeps serving."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import TypeAlias

import grpc
import numpy as np
import pytest
from processes import ROOT, ServerProcess, start_server
from tritonclient.grpc import service_pb2, service_pb2_grpc

Stub: TypeAlias = service_pb2_grpc.GRPCInferenceServiceStub
MakeRequest: TypeAlias = Callable[..., service_pb2.ModelInferRequest]
RpcError: TypeAlias = Callable[[Callable[[], object], grpc.StatusCode], str]

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ROW = np.arange(64, dtype=np.float32).reshape(1, 64) % 17
DATATYPES = (
    "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"
)


@pytest.fixture(scope="module")
def infer_error(default_stub: Stub, rpc_error: RpcError) -> Callable[..., str]:
    """Send a ModelInfer request that must fail with `code`; return the message."""

    def call(request: service_pb2.ModelInferRequest, code: grpc.StatusCode = INVALID) -> str:
        return rpc_error(lambda: default_stub.ModelInfer(request), code)

    return call


def digits(raw_request: MakeRequest, x: np.ndarray = ROW) -> service_pb2.ModelInferRequest:
    return raw_request("digits", {"input": x})


def minilm(seq: int = 8) -> dict[str, np.ndarray]:
    ids = np.ones((1, seq), np.int64)
    return {"input_ids": ids, "attention_mask": ids, "token_type_ids": ids * 0}


# --- model and version ----------------------------------------------------------------------


def test_unknown_model(raw_request: MakeRequest, infer_error: Callable[..., str]) -> None:
    assert infer_error(raw_request("nope", {"input": ROW}), NOT_FOUND) == "unknown model 'nope'"


def test_unknown_version(raw_request: MakeRequest, infer_error: Callable[..., str]) -> None:
    request = raw_request("digits", {"input": ROW}, version="7")
    assert infer_error(request, NOT_FOUND) == "model 'digits' has no ready version 7; ready: [1, 2]"


@pytest.mark.parametrize("version", ["latest", "1.0", " 1x"])
def test_non_integer_version(
    raw_request: MakeRequest, infer_error: Callable[..., str], version: str
) -> None:
    request = raw_request("digits", {"input": ROW}, version=version)
    assert infer_error(request) == f"model_version '{version}' must be an integer or empty"


@pytest.mark.parametrize("version", ["0_2", "+1", "\uff12"])
def test_version_strings_that_are_not_plain_digits_are_refused(
    raw_request: MakeRequest, infer_error: Callable[..., str], version: str
) -> None:
    request = raw_request("digits", {"input": ROW}, version=version)
    assert infer_error(request) == f"model_version '{version}' must be an integer or empty"


def test_metadata_and_config_of_unknown_models(default_stub: Stub, rpc_error: RpcError) -> None:
    assert (
        rpc_error(
            lambda: default_stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope")),
            NOT_FOUND,
        )
        == "unknown model 'nope'"
    )
    assert "no ready version 9" in rpc_error(
        lambda: default_stub.ModelConfig(
            service_pb2.ModelConfigRequest(name="digits", version="9")
        ),
        NOT_FOUND,
    )
    assert "must be an integer" in rpc_error(
        lambda: default_stub.ModelMetadata(
            service_pb2.ModelMetadataRequest(name="digits", version="x")
        ),
        INVALID,
    )


@pytest.mark.parametrize(("name", "version"), [("nope", ""), ("digits", "7"), ("digits", "x")])
def test_model_ready_is_false_for_what_does_not_exist(
    default_stub: Stub, name: str, version: str
) -> None:
    request = service_pb2.ModelReadyRequest(name=name, version=version)
    assert not default_stub.ModelReady(request).ready


# --- inputs against the model -----------------------------------------------------------------


def test_wrong_input_name(raw_request: MakeRequest, infer_error: Callable[..., str]) -> None:
    message = infer_error(raw_request("digits", {"INPUT0": ROW}))
    assert message == "unexpected input 'INPUT0' for model 'digits'; expected inputs: ['input']"


def test_wrong_datatype(raw_request: MakeRequest, infer_error: Callable[..., str]) -> None:
    message = infer_error(digits(raw_request, ROW.astype(np.float64)))
    assert message == "input 'input': datatype FP64 does not match the model's FP32"


@pytest.mark.parametrize(
    "shape", [(64,), (1, 63), (1, 65), (1, 64, 1), (1, 8, 8)], ids=lambda s: str(list(s))
)
def test_wrong_shape(
    raw_request: MakeRequest, infer_error: Callable[..., str], shape: tuple[int, ...]
) -> None:
    x = np.zeros(shape, np.float32)
    message = infer_error(digits(raw_request, x))
    assert message == (
        f"input 'input': shape {list(shape)} does not match the model's [-1, 64] (-1 is any size)"
    )


def test_wrong_shape_of_an_unbatched_input(
    raw_request: MakeRequest, infer_error: Callable[..., str]
) -> None:
    request = raw_request(
        "silero_vad",
        {
            "input": np.zeros((1, 576), np.float32),
            "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array([16000], np.int64),
        },
    )
    message = infer_error(request)
    assert message == "input 'sr': shape [1] does not match the model's [] (-1 is any size)"


@pytest.mark.parametrize("rows", [0, 65])
def test_batch_size_outside_max_batch_size(
    raw_request: MakeRequest, infer_error: Callable[..., str], rows: int
) -> None:
    message = infer_error(digits(raw_request, np.zeros((rows, 64), np.float32)))
    assert message == (
        f"input 'input': batch size {rows} is outside 1..64 (max_batch_size of model 'digits')"
    )


def test_inputs_with_different_batch_sizes(
    raw_request: MakeRequest, infer_error: Callable[..., str]
) -> None:
    inputs = minilm()
    inputs["attention_mask"] = np.ones((2, 8), np.int64)
    message = infer_error(raw_request("minilm", inputs))
    assert message == "input 'attention_mask': batch size 2 differs from the other inputs' 1"


def test_missing_input(raw_request: MakeRequest, infer_error: Callable[..., str]) -> None:
    inputs = minilm()
    del inputs["attention_mask"], inputs["token_type_ids"]
    message = infer_error(raw_request("minilm", inputs))
    assert message == (
        "missing input(s) ['attention_mask', 'token_type_ids'] for model 'minilm'; "
        "expected inputs: ['attention_mask', 'input_ids', 'token_type_ids']"
    )


def test_no_inputs_at_all(infer_error: Callable[..., str]) -> None:
    message = infer_error(service_pb2.ModelInferRequest(model_name="digits"))
    assert message.startswith("missing input(s) ['input'] for model 'digits'")


def test_extra_input(raw_request: MakeRequest, infer_error: Callable[..., str]) -> None:
    message = infer_error(raw_request("digits", {"input": ROW, "extra": ROW}))
    assert message == "unexpected input 'extra' for model 'digits'; expected inputs: ['input']"


def test_duplicate_input(raw_request: MakeRequest, infer_error: Callable[..., str]) -> None:
    request = digits(raw_request)
    request.inputs.add().CopyFrom(request.inputs[0])
    request.raw_input_contents.append(request.raw_input_contents[0])
    assert infer_error(request) == "input 'input' appears more than once"


def test_unknown_requested_output(
    raw_request: MakeRequest, infer_error: Callable[..., str]
) -> None:
    request = raw_request("digits", {"input": ROW}, outputs=["label", "nope"])
    assert infer_error(request) == (
        "requested output 'nope' is not an output of model 'digits'; "
        "expected one of ['label', 'probabilities']"
    )


# --- the request's own consistency ------------------------------------------------------------


@pytest.mark.parametrize("datatype", ["FLOAT32", "fp32", "", "BF16"])
def test_unknown_datatype_string(
    raw_request: MakeRequest, infer_error: Callable[..., str], datatype: str
) -> None:
    request = digits(raw_request)
    request.inputs[0].datatype = datatype
    message = infer_error(request)
    assert message == f"input 'input': datatype '{datatype}' is not one of {DATATYPES}"


def test_negative_dimension(raw_request: MakeRequest, infer_error: Callable[..., str]) -> None:
    request = digits(raw_request)
    request.inputs[0].shape[:] = [-1, 64]
    assert infer_error(request) == "input 'input': shape [-1, 64] has a negative dimension"


@pytest.mark.parametrize("size", [0, 252, 260])
def test_raw_length_does_not_match_the_shape(
    raw_request: MakeRequest, infer_error: Callable[..., str], size: int
) -> None:
    request = digits(raw_request)
    request.raw_input_contents[0] = bytes(size)
    assert infer_error(request) == (
        f"input 'input': raw content has {size} bytes but shape [1, 64] of FP32 needs 256"
    )


def test_raw_input_contents_count_mismatch(
    raw_request: MakeRequest, infer_error: Callable[..., str]
) -> None:
    request = digits(raw_request)
    request.raw_input_contents.append(b"")
    assert infer_error(request) == (
        "raw_input_contents has 2 entries but the request has 1 inputs; "
        "expected one entry per input, in input order"
    )


def test_raw_contents_missing_for_one_input(
    raw_request: MakeRequest, infer_error: Callable[..., str]
) -> None:
    request = raw_request("minilm", minilm())
    del request.raw_input_contents[2]
    assert infer_error(request).startswith("raw_input_contents has 2 entries but the request has 3")


def test_both_raw_and_typed_contents(
    raw_request: MakeRequest, infer_error: Callable[..., str]
) -> None:
    request = digits(raw_request)
    request.inputs[0].contents.fp32_contents.extend(ROW.ravel().tolist())
    assert infer_error(request) == (
        "input 'input': sets contents although the request uses raw_input_contents; "
        "use one or the other"
    )


@pytest.mark.parametrize("count", [0, 63, 65])
def test_typed_contents_with_the_wrong_element_count(
    typed_request: MakeRequest, infer_error: Callable[..., str], count: int
) -> None:
    request = typed_request("digits", {"input": ROW})
    del request.inputs[0].contents.fp32_contents[:]
    request.inputs[0].contents.fp32_contents.extend([1.0] * count)
    assert infer_error(request) == (
        f"input 'input': contents.fp32_contents has {count} elements but shape [1, 64] needs 64"
    )


def test_typed_contents_in_the_wrong_field(
    typed_request: MakeRequest, infer_error: Callable[..., str]
) -> None:
    request = typed_request("digits", {"input": ROW})
    request.inputs[0].contents.fp64_contents.extend(request.inputs[0].contents.fp32_contents)
    del request.inputs[0].contents.fp32_contents[:]
    assert infer_error(request).startswith("input 'input': contents.fp32_contents has 0 elements")


def test_a_bad_request_does_not_disturb_the_next(
    default_stub: Stub, raw_request: MakeRequest, infer_error: Callable[..., str]
) -> None:
    infer_error(digits(raw_request, np.zeros((1, 63), np.float32)))
    response = default_stub.ModelInfer(digits(raw_request))
    assert [o.name for o in response.outputs] == ["label", "probabilities"]


# --- limits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("limited")
    shutil.copytree(ROOT / "models" / "digits", root / "digits")
    with start_server(root, "--max-input-elements", "100") as server:
        yield server


def test_too_many_elements(
    limited_server: ServerProcess,
    connect: Callable[[ServerProcess], grpc.Channel],
    raw_request: MakeRequest,
    rpc_error: RpcError,
) -> None:
    stub = Stub(connect(limited_server))
    assert len(stub.ModelInfer(digits(raw_request)).outputs) == 2  # 64 elements pass
    request = digits(raw_request, np.zeros((2, 64), np.float32))
    message = rpc_error(lambda: stub.ModelInfer(request), INVALID)
    assert message == "input 'input': 128 elements exceed the limit of 100"


def test_too_many_elements_is_checked_before_the_bytes_are_read(
    limited_server: ServerProcess,
    connect: Callable[[ServerProcess], grpc.Channel],
    raw_request: MakeRequest,
    rpc_error: RpcError,
) -> None:
    """A huge declared shape with tiny contents fails on the limit, not on allocation."""
    stub = Stub(connect(limited_server))
    request = digits(raw_request)
    request.inputs[0].shape[:] = [2**40, 64]
    message = rpc_error(lambda: stub.ModelInfer(request), INVALID)
    assert message == f"input 'input': {2**40 * 64} elements exceed the limit of 100"
