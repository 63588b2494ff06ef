"""Fuzzing ModelInfer and ModelStreamInfer with hypothesis, in process, through a real
grpc.aio channel: random datatypes, shapes (negative, zero, huge), byte lengths, names,
missing and duplicate inputs, NaN and Inf, raw mixed with typed contents, oversized
strings, and random or mutated protobuf bytes.

Every answer is OK (and then correct) or a specific status: never INTERNAL, UNKNOWN, a
crash or a hang (each call has a deadline). A refusal names what it refuses: an input,
`raw_input_contents`, `model_version`, a requested output, the model, or the message
type. Valid requests are still answered correctly afterwards.

CI runs HYPOTHESIS_MAX_EXAMPLES examples per test (default 150, derandomized, so a run
is repeatable); `make fuzz` runs 10,000 with fresh randomness.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import onnx
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server.app import InferenceServer
from server.settings import Settings

MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize="HYPOTHESIS_MAX_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
CALL_TIMEOUT_S = 10.0  # a call that takes longer is a hang
MAX_ELEMENTS = 1 << 20  # the server's --max-input-elements here
WIDTH = 4
DATATYPES = (
    *("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"),
    *("FP16", "FP32", "FP64", "BF16", "BYTES"),
)
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
ITEMSIZE = {
    "BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
    "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8,
}  # fmt: skip
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,  # a model with no ready version
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # a message beyond --max-message-bytes
}
NOT_A_REQUEST = "the request is not a valid inference.ModelInferRequest"

T = TypeVar("T")


# --- the server ------------------------------------------------------------------------------


def _save(model_dir: Path, graph: onnx.GraphProto, config: str) -> None:
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.yaml").write_text(config)
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, model_dir / "1" / "model.onnx")


def _repository(root: Path) -> Path:
    """`double`: y = 2x + 1, FP32 [batch, 4]; `echo`: out = text, BYTES [batch, 1]."""
    _save(
        root / "double",
        helper.make_graph(
            [
                helper.make_node("Mul", ["x", "two"], ["twice"]),
                helper.make_node("Add", ["twice", "one"], ["y"]),
            ],
            "double",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
            initializer=[
                helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
                helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            ],
        ),
        "max_batch_size: 16\n",
    )
    _save(
        root / "echo",
        helper.make_graph(
            [helper.make_node("Identity", ["text"], ["out"])],
            "echo",
            [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 1])],
            [helper.make_tensor_value_info("out", TensorProto.STRING, ["batch", 1])],
        ),
        "max_batch_size: 8\n",
    )
    return root


class Fuzzed:
    """Calls into the in-process server from hypothesis's thread, over the loop's
    grpc.aio channel; each call has a deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, channel: grpc.aio.Channel) -> None:
        self._loop = loop
        self.stub = pb_grpc.GRPCInferenceServiceStub(channel)
        self._raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(CALL_TIMEOUT_S + 5)

    def infer(self, request: pb.ModelInferRequest) -> tuple[grpc.StatusCode, str, Any]:
        return self._outcome(lambda: self.stub.ModelInfer(request, timeout=CALL_TIMEOUT_S))

    def infer_bytes(self, data: bytes) -> tuple[grpc.StatusCode, str, Any]:
        return self._outcome(lambda: self._raw(data, timeout=CALL_TIMEOUT_S))

    def _outcome(self, start: Callable[[], Any]) -> tuple[grpc.StatusCode, str, Any]:
        async def wait() -> tuple[grpc.StatusCode, str, Any]:
            try:
                return grpc.StatusCode.OK, "", await start()  # started on the loop
            except grpc.aio.AioRpcError as error:
                return error.code(), str(error.details()), None

        return self.run(wait())


@contextlib.asynccontextmanager
async def fuzzed(tmp_path: Path) -> AsyncIterator[Fuzzed]:
    settings_ = Settings(
        model_repository=_repository(tmp_path / "models"),
        host="127.0.0.1",
        grpc_port=0,
        shutdown_grace_s=1.0,
        max_input_elements=MAX_ELEMENTS,
        max_message_bytes=8 * 1024 * 1024,
    )
    server = InferenceServer(settings_)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    try:
        yield Fuzzed(asyncio.get_running_loop(), channel)
    finally:
        await channel.close()
        await server.stop()


# --- requests --------------------------------------------------------------------------------

names = st.one_of(
    st.sampled_from(["x", "text", "y", "out", "", "X", "x "]),
    st.text(max_size=12),
    st.just("n" * 100_000),  # oversized
)
datatypes = st.one_of(st.sampled_from(DATATYPES), st.sampled_from(["fp32", "FP33", "", "STRING"]))
dims = st.one_of(
    st.integers(0, 17),
    st.sampled_from([-1, -(2**63), 2**63 - 1, 2**31, 2**40, MAX_ELEMENTS + 1]),
)
shapes = st.lists(dims, max_size=4)
floats = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 3.4e38]),
)


def _count(shape: list[int]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


@st.composite
def typed_values(draw: st.DrawFn, kind: str, count: int) -> list[Any]:
    """Values for the `contents` field `kind`: usually as many as the shape needs."""
    n = count if 0 <= count <= 64 and draw(st.booleans()) else draw(st.integers(0, 20))
    element = {
        "bool_contents": st.booleans(),
        "int_contents": st.integers(-(2**31), 2**31 - 1),
        "int64_contents": st.integers(-(2**63), 2**63 - 1),
        "uint_contents": st.integers(0, 2**32 - 1),
        "uint64_contents": st.integers(0, 2**64 - 1),
        "fp32_contents": floats,
        "fp64_contents": st.floats(),
        "bytes_contents": st.one_of(st.binary(max_size=16), st.just(b"\xff" * 70_000)),
    }[kind]
    return draw(st.lists(element, min_size=n, max_size=n))


@st.composite
def raw_content(draw: st.DrawFn, datatype: str, count: int) -> bytes:
    """Raw bytes: usually the length the shape needs (NaN and Inf included), sometimes
    not; BYTES as length-prefixed elements, sometimes cut short or overlong."""
    if datatype == "BYTES":
        items = draw(st.lists(st.binary(max_size=8), max_size=6))
        body = b"".join(len(i).to_bytes(4, "little") + i for i in items)
        cut = draw(st.sampled_from([None, None, 1, 3, 5]))
        return body if cut is None else body[:-cut] + draw(st.binary(max_size=3))
    size = ITEMSIZE.get(datatype, 4)
    if 0 <= count <= 64 and draw(st.booleans()):
        if datatype == "FP32":
            return np.array(draw(st.lists(floats, min_size=count, max_size=count)), "<f4").tobytes()
        return draw(st.binary(min_size=count * size, max_size=count * size))
    return draw(st.binary(max_size=80))


@st.composite
def tensors(draw: st.DrawFn) -> tuple[pb.ModelInferRequest.InferInputTensor, bytes | None]:
    """One input, and its raw content when it goes raw."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=draw(names), datatype=draw(datatypes), shape=draw(shapes)
    )
    count = _count(list(tensor.shape))
    how = draw(st.sampled_from(["raw", "typed", "both", "none"]))
    if how in ("typed", "both"):
        field = CONTENTS.get(tensor.datatype, draw(st.sampled_from(sorted(set(CONTENTS.values())))))
        getattr(tensor.contents, field).extend(draw(typed_values(field, count)))
    raw = draw(raw_content(tensor.datatype, count)) if how in ("raw", "both") else None
    return tensor, raw


@st.composite
def random_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=draw(st.one_of(st.sampled_from(["double", "echo", "nope", ""]), names)),
        model_version=draw(
            st.one_of(
                st.sampled_from(["", "1", "2", "-1", "1.0", "latest", "٣", "9" * 40]),
                st.text(max_size=6),
            )
        ),
        id=draw(st.text(max_size=8)),
    )
    drawn = draw(st.lists(tensors(), max_size=4))
    for tensor, _ in drawn:
        request.inputs.append(tensor)
    raws = [raw for _, raw in drawn]
    if any(raw is not None for raw in raws):
        if draw(st.booleans()):  # one entry per input, as the protocol asks
            request.raw_input_contents.extend(raw or b"" for raw in raws)
        else:  # or any number of entries
            request.raw_input_contents.extend(r for r in raws if r is not None)
    for name in draw(st.lists(st.one_of(st.sampled_from(["y", "out"]), names), max_size=3)):
        request.outputs.add(name=name)
    if draw(st.booleans()):
        request.parameters["priority"].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    return request


@st.composite
def near_valid_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """A valid request for `double` or `echo`, then one or two mutations: most random
    requests fail at the first check, these reach the later ones."""
    rows = draw(st.integers(1, 16))
    if draw(st.booleans()):
        x = np.array(draw(st.lists(floats, min_size=rows * WIDTH, max_size=rows * WIDTH)), "<f4")
        request = pb.ModelInferRequest(model_name="double")
        request.inputs.add(name="x", datatype="FP32", shape=[rows, WIDTH])
        if draw(st.booleans()):
            request.raw_input_contents.append(x.tobytes())
        else:
            request.inputs[0].contents.fp32_contents.extend(x.tolist())
    else:
        request = pb.ModelInferRequest(model_name="echo")
        request.inputs.add(name="text", datatype="BYTES", shape=[rows, 1])
        texts = draw(st.lists(st.binary(max_size=10), min_size=rows, max_size=rows))
        if draw(st.booleans()):
            request.raw_input_contents.append(
                b"".join(len(t).to_bytes(4, "little") + t for t in texts)
            )
        else:
            request.inputs[0].contents.bytes_contents.extend(texts)
    for _ in range(draw(st.integers(0, 2))):
        mutation = draw(
            st.sampled_from(
                [
                    "shape", "datatype", "name", "duplicate", "drop", "extra_raw", "typed_too",
                    "version", "output", "batch_mismatch", "truncate_raw",
                ]
            )
        )  # fmt: skip
        _mutate(draw, request, mutation)
    return request


def _mutate(draw: st.DrawFn, request: pb.ModelInferRequest, mutation: str) -> None:
    if not request.inputs:
        return
    tensor = request.inputs[0]
    if mutation == "shape":
        tensor.shape[draw(st.integers(0, len(tensor.shape) - 1))] = draw(dims)
    elif mutation == "datatype":
        tensor.datatype = draw(datatypes)
    elif mutation == "name":
        tensor.name = draw(names)
    elif mutation == "duplicate":
        request.inputs.append(tensor)
        if request.raw_input_contents:
            request.raw_input_contents.append(request.raw_input_contents[0])
    elif mutation == "drop":
        del request.inputs[0]
    elif mutation == "extra_raw":
        request.raw_input_contents.append(draw(st.binary(max_size=16)))
    elif mutation == "typed_too":
        tensor.contents.fp32_contents.append(1.0)
    elif mutation == "version":
        request.model_version = draw(st.sampled_from(["2", "0", "x", "-1", " 1", "1"]))
    elif mutation == "output":
        request.outputs.add(name=draw(st.sampled_from(["y", "out", "nope", ""])))
    elif mutation == "batch_mismatch":
        extra = request.inputs.add(name="z", datatype="FP32", shape=[1, WIDTH])
        extra.contents.fp32_contents.extend([0.0] * WIDTH)
    elif mutation == "truncate_raw" and request.raw_input_contents:
        request.raw_input_contents[0] = request.raw_input_contents[0][: draw(st.integers(0, 7))]


# --- checks ----------------------------------------------------------------------------------

# What a refusal names: an input, requested output, model or version (quoted as sent),
# or one of the request's fields.
FIELDS = re.compile(
    r"raw_input_contents|model_version|repository_name|contents\.|datatype|shape|"
    r"input\(s\)|expected inputs|requested output|max_batch_size|batch size|"
    r"inference\.ModelInferRequest|message larger than max"
)


def _quoted_names(request: pb.ModelInferRequest) -> list[str]:
    """How a message quotes what the request named; a long name may be elided after its
    start (status.bounded), so only the start is looked for."""
    named = [t.name for t in request.inputs] + [o.name for o in request.outputs]
    names = [*named, request.model_name, request.model_version]
    return [f"'{name[:40]}" if name else "''" for name in names]


def assert_specific(request: pb.ModelInferRequest, code: grpc.StatusCode, message: str) -> None:
    assert code in REFUSALS, (code, message)
    assert message, code
    assert FIELDS.search(message) or any(q in message for q in _quoted_names(request)), message


def assert_correct(request: pb.ModelInferRequest, response: pb.ModelInferResponse) -> None:
    """An accepted request was a valid one; its answer is what the model computes."""
    [tensor] = request.inputs
    [out] = response.outputs
    shape = tuple(tensor.shape)
    assert tuple(out.shape) == shape
    if request.model_name == "double":
        if request.raw_input_contents:
            x = np.frombuffer(request.raw_input_contents[0], "<f4").reshape(shape)
            y = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(shape)
        else:
            x = np.array(tensor.contents.fp32_contents, np.float32).reshape(shape)
            y = np.array(out.contents.fp32_contents, np.float32).reshape(shape)
        with np.errstate(over="ignore", invalid="ignore"):  # Inf and NaN are inputs too
            np.testing.assert_array_equal(y, x * np.float32(2) + np.float32(1))
    else:
        assert request.model_name == "echo"
        if request.raw_input_contents:
            assert response.raw_output_contents[0] == request.raw_input_contents[0]
        else:
            assert list(out.contents.bytes_contents) == list(tensor.contents.bytes_contents)


def assert_still_serving(fuzz: Fuzzed) -> None:
    request = pb.ModelInferRequest(model_name="double")
    request.inputs.add(name="x", datatype="FP32", shape=[2, WIDTH])
    x = np.arange(2 * WIDTH, dtype="<f4")
    request.raw_input_contents.append(x.tobytes())
    code, message, response = fuzz.infer(request)
    assert code == grpc.StatusCode.OK, message
    assert_correct(request, response)


def _check_request(fuzz: Fuzzed, request: pb.ModelInferRequest) -> str:
    code, message, response = fuzz.infer(request)
    if code == grpc.StatusCode.OK:
        assert_correct(request, response)
        return "OK"
    assert_specific(request, code, message)
    return code.name


def _tally(outcomes: dict[str, int], outcome: str) -> None:
    outcomes[outcome] = outcomes.get(outcome, 0) + 1


# --- the tests -------------------------------------------------------------------------------


async def test_random_requests_get_ok_or_a_specific_refusal(tmp_path: Path) -> None:
    outcomes: dict[str, int] = {}
    async with fuzzed(tmp_path) as fuzz:

        @FUZZ
        @given(request=random_requests())
        def check(request: pb.ModelInferRequest) -> None:
            _tally(outcomes, _check_request(fuzz, request))

        await asyncio.to_thread(check)
        await asyncio.to_thread(assert_still_serving, fuzz)
    assert set(outcomes) > {"INVALID_ARGUMENT"}, outcomes


async def test_near_valid_requests_get_ok_or_a_specific_refusal(tmp_path: Path) -> None:
    outcomes: dict[str, int] = {}
    async with fuzzed(tmp_path) as fuzz:

        @FUZZ
        @given(request=near_valid_requests())
        def check(request: pb.ModelInferRequest) -> None:
            _tally(outcomes, _check_request(fuzz, request))

        await asyncio.to_thread(check)
        await asyncio.to_thread(assert_still_serving, fuzz)
    assert {"OK", "INVALID_ARGUMENT"} <= set(outcomes), outcomes


def _valid_bytes() -> bytes:
    request = pb.ModelInferRequest(model_name="double", id="r")
    request.inputs.add(name="x", datatype="FP32", shape=[1, WIDTH])
    request.raw_input_contents.append(np.ones(WIDTH, "<f4").tobytes())
    return request.SerializeToString()


@st.composite
def request_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid request's bytes with bytes flipped, cut or inserted."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(_valid_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


async def test_random_and_mutated_bytes_never_break_the_server(tmp_path: Path) -> None:
    outcomes: dict[str, int] = {}
    async with fuzzed(tmp_path) as fuzz:

        @FUZZ
        @given(data=request_bytes())
        def check(data: bytes) -> None:
            code, message, reply = fuzz.infer_bytes(data)
            try:
                request = pb.ModelInferRequest.FromString(data)
            except DecodeError:
                assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, NOT_A_REQUEST)
                _tally(outcomes, "not a request")
                return
            if code == grpc.StatusCode.OK:
                assert_correct(request, pb.ModelInferResponse.FromString(reply))
            else:
                assert_specific(request, code, message)
            _tally(outcomes, code.name)

        await asyncio.to_thread(check)
        await asyncio.to_thread(assert_still_serving, fuzz)
    assert "not a request" in outcomes, outcomes


async def test_a_stream_of_fuzzed_requests_answers_each_one(tmp_path: Path) -> None:
    """One reply per request, correlated by id; failures carry a specific error_code."""
    async with fuzzed(tmp_path) as fuzz:

        @FUZZ
        @given(requests=st.lists(st.one_of(random_requests(), near_valid_requests()), max_size=8))
        def check(requests: list[pb.ModelInferRequest]) -> None:
            for n, request in enumerate(requests):
                request.id = str(n)

            async def exchange() -> list[pb.ModelStreamInferResponse]:
                call = fuzz.stub.ModelStreamInfer(iter(requests), timeout=CALL_TIMEOUT_S)
                return [reply async for reply in call]

            replies = fuzz.run(exchange())
            assert sorted(int(r.infer_response.id) for r in replies) == list(range(len(requests)))
            for reply in replies:
                request = requests[int(reply.infer_response.id)]
                if reply.error_message:
                    code = reply.infer_response.parameters["error_code"].string_param
                    assert_specific(request, grpc.StatusCode[code], reply.error_message)
                else:
                    assert_correct(request, reply.infer_response)

        await asyncio.to_thread(check)
        await asyncio.to_thread(assert_still_serving, fuzz)


async def test_an_empty_shape_with_huge_dimensions_is_refused(tmp_path: Path) -> None:
    """Found by this fuzzer: no elements, so within the element limit, but numpy cannot
    shape an array that way; that was INTERNAL."""
    shapes = ([2**63 - 1, 16, 5, 0], [2**40, 13, 2**31, 0], [0, MAX_ELEMENTS + 1])
    async with fuzzed(tmp_path) as fuzz:
        for shape in shapes:
            for raw in (True, False):
                request = pb.ModelInferRequest(model_name="double")
                request.inputs.add(name="x", datatype="FP32", shape=shape)
                if raw:
                    request.raw_input_contents.append(b"")
                code, message, _ = await asyncio.to_thread(fuzz.infer, request)
                assert code == grpc.StatusCode.INVALID_ARGUMENT
                assert message in (  # the batch-row limit may refuse it first
                    f"input 'x': shape {shape} has no elements, but its other dimensions "
                    f"exceed the limit of {MAX_ELEMENTS}",
                    f"input 'x': {shape[0]} rows exceed the limit of 1024 (--max-batch-rows)",
                )
        await asyncio.to_thread(assert_still_serving, fuzz)
