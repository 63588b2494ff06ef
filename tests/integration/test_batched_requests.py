"""Requests that share a batch each get their own answer, and only their own errors.

Model `lookup` gathers rows of a constant table. Its config holds a partial batch for 30 s,
and a batch of 2 is full, so two concurrent one-row requests always run as one batch: no
timing is involved. (A lone request would wait 30 s: every test sends pairs.)
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from onnx import NodeProto, TensorProto, ValueInfoProto, helper
from processes import ROOT, ServerProcess, start_server
from sklearn.datasets import load_digits
from tritonclient.grpc import service_pb2, service_pb2_grpc

Stub: TypeAlias = service_pb2_grpc.GRPCInferenceServiceStub
MakeRequest: TypeAlias = Callable[..., service_pb2.ModelInferRequest]
Decode: TypeAlias = Callable[[service_pb2.ModelInferResponse], dict[str, np.ndarray]]

TABLE = [10.0, 20.0, 30.0, 40.0]
CONFIG = "max_batch_size: 2\ndynamic_batching: {max_queue_delay_us: 30000000}\n"
WAIT_S = 20  # a guard against a hang, far above the time a batch takes


def lookup_graph() -> tuple[list[NodeProto], list[ValueInfoProto], list[ValueInfoProto]]:
    """value[i] = TABLE[index[i]]; an index out of range fails inside ONNX Runtime."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [4], TABLE)
    return (
        [
            helper.make_node("Constant", [], ["t"], value=table),
            helper.make_node("Gather", ["t", "index"], ["value"], axis=0),
        ],
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1])],
    )


@pytest.fixture(scope="module")
def lookup_server(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[[Path, str, dict[int, bytes], str], Path],
    onnx_model: Callable[..., bytes],
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("batching")
    for name in ("lookup", "lookup_poisoned"):
        write_model(root, name, {1: onnx_model(*lookup_graph())}, CONFIG)
    with start_server(root) as server:
        yield server


@pytest.fixture(scope="module")
def stub(lookup_server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]) -> Stub:
    return Stub(connect(lookup_server))


def send_together(
    stub: Stub, requests: list[service_pb2.ModelInferRequest]
) -> list[service_pb2.ModelInferResponse | grpc.RpcError]:
    futures = [stub.ModelInfer.future(request) for request in requests]
    outcomes: list[service_pb2.ModelInferResponse | grpc.RpcError] = []
    for future in futures:
        try:
            outcomes.append(future.result(timeout=WAIT_S))
        except grpc.RpcError as error:
            outcomes.append(error)
    return outcomes


def counts(stub: Stub) -> tuple[int, int]:
    """Model `lookup`'s inference (rows) and execution (runs) counts."""
    request = service_pb2.ModelStatisticsRequest(name="lookup")
    [stats] = stub.ModelStatistics(request).model_stats
    return stats.inference_count, stats.execution_count


def test_a_batch_is_split_back_to_its_requests(
    stub: Stub, raw_request: MakeRequest, decode: Decode
) -> None:
    requests = [
        raw_request("lookup", {"index": np.array([[i]], np.int64)}, request_id=f"r{i}")
        for i in (3, 1)
    ]
    before = counts(stub)
    first, second = send_together(stub, requests)
    assert isinstance(first, service_pb2.ModelInferResponse)
    assert isinstance(second, service_pb2.ModelInferResponse)
    assert (first.id, decode(first)["value"].tolist()) == ("r3", [[40.0]])
    assert (second.id, decode(second)["value"].tolist()) == ("r1", [[20.0]])

    after = counts(stub)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)  # two rows, one run


def test_typed_and_raw_requests_share_a_batch_and_keep_their_encoding(
    stub: Stub, raw_request: MakeRequest, typed_request: MakeRequest, decode: Decode
) -> None:
    index = {"index": np.array([[2]], np.int64)}
    raw, typed = send_together(stub, [raw_request("lookup", index), typed_request("lookup", index)])
    assert isinstance(raw, service_pb2.ModelInferResponse)
    assert isinstance(typed, service_pb2.ModelInferResponse)
    assert len(raw.raw_output_contents) == 1
    assert not typed.raw_output_contents
    assert decode(raw)["value"].tolist() == decode(typed)["value"].tolist() == [[30.0]]


def test_a_request_failing_at_run_time_does_not_fail_its_batch_neighbours(
    stub: Stub, raw_request: MakeRequest, decode: Decode
) -> None:
    good, bad = send_together(
        stub,
        [
            raw_request("lookup_poisoned", {"index": np.array([[1]], np.int64)}),
            raw_request("lookup_poisoned", {"index": np.array([[99]], np.int64)}),
        ],
    )
    assert isinstance(bad, grpc.RpcError)
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "model 'lookup_poisoned' rejected the input" in bad.details()  # type: ignore[attr-defined]
    assert isinstance(good, service_pb2.ModelInferResponse), good.details()  # type: ignore[union-attr]
    assert decode(good)["value"].tolist() == [[20.0]]


def test_concurrent_requests_on_a_real_model_get_their_own_rows(
    default_stub: Stub, raw_request: MakeRequest, decode: Decode
) -> None:
    """32 requests at once: whatever batches form, each answer is the one for its input."""
    data = load_digits().data[:32].astype(np.float32)
    session = ort.InferenceSession(str(ROOT / "models" / "digits" / "2" / "model.onnx"))
    labels, probabilities = session.run(["label", "probabilities"], {"input": data})
    requests = [raw_request("digits", {"input": data[i : i + 1]}) for i in range(32)]
    for i, outcome in enumerate(send_together(default_stub, requests)):
        assert isinstance(outcome, service_pb2.ModelInferResponse)
        outputs = decode(outcome)
        assert outputs["label"].tolist() == [labels[i]]
        np.testing.assert_allclose(outputs["probabilities"][0], probabilities[i], rtol=1e-5)


PADDING = """\
  padding:
    inputs: {input_ids: 0, attention_mask: 0, token_type_ids: 0}
    outputs: [last_hidden_state]
    bucket: 16
"""


@pytest.fixture(scope="module")
def padding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """minilm as shipped, but padded, and a batch leaves only when it holds 16 requests."""
    model = tmp_path_factory.mktemp("padding") / "minilm"
    (model / "1").mkdir(parents=True)
    shutil.copy(ROOT / "models" / "minilm" / "1" / "model.onnx", model / "1" / "model.onnx")
    config = (ROOT / "models" / "minilm" / "config.yaml").read_text()
    config = config.replace("max_batch_size: 32", "max_batch_size: 16")
    config = config.replace("max_queue_delay_us: 0", "max_queue_delay_us: 30000000")
    config = config.replace("dynamic_batching:\n", f"dynamic_batching:\n{PADDING}")
    assert PADDING in config
    (model / "config.yaml").write_text(config)
    with start_server(model.parent) as server:
        yield server


def test_sequences_of_different_lengths_share_a_padded_batch_and_get_their_own_states(
    padding_server: ServerProcess,
    default_stub: Stub,
    connect: Callable[[ServerProcess], grpc.Channel],
    raw_request: MakeRequest,
    decode: Decode,
) -> None:
    """16 token sequences of lengths 1 to 16 (one bucket) leave as one batch, padded to 16;
    each gets last_hidden_state of its own length, equal to minilm's answer to it alone."""
    rng = np.random.default_rng(7)
    requests = []
    for length in range(1, 17):
        ids = rng.integers(1000, 20000, (1, length), dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        feeds["token_type_ids"] = np.zeros_like(ids)
        requests.append(raw_request("minilm", feeds))
    padded = Stub(connect(padding_server))
    statistics = service_pb2.ModelStatisticsRequest(name="minilm")
    outcomes = send_together(padded, requests)
    [stats] = padded.ModelStatistics(statistics).model_stats
    assert [(b.batch_size, b.compute_infer.count) for b in stats.batch_stats] == [(16, 1)]
    for length, (request, outcome) in enumerate(zip(requests, outcomes, strict=True), 1):
        assert isinstance(outcome, service_pb2.ModelInferResponse), outcome
        states = decode(outcome)["last_hidden_state"]
        assert states.shape == (1, length, 384)
        alone = decode(default_stub.ModelInfer(request, timeout=WAIT_S))["last_hidden_state"]
        np.testing.assert_allclose(states, alone, atol=1e-5)
