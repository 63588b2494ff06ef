"""Overload: about ten times what a model can hold (200 requests at once against 8 rows
in execution and 16 in its queue). The excess is refused at once with
RESOURCE_EXHAUSTED, every admitted request is answered correctly, and afterwards the
server serves as before, with statistics that add up.

Bounded in requests (3 rounds of 200) and in seconds (every call has a deadline); no
assertion is about wall-clock time. "Refused at once" shows in the server's own
statistics: refused requests were never queued or executed, and took the server a small
fraction of the time a served one did.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import tritonclient.grpc as triton
from onnx import NodeProto, TensorProto, helper, numpy_helper
from processes import start_server
from traffic import OWN_CONNECTION, output, raw_fp32_request
from tritonclient.grpc import service_pb2_grpc

WriteModel: TypeAlias = Callable[[Path, str, dict[int, bytes], str], Path]
WIDTH = 1024
DEPTH = 48  # MatMul + Tanh layers: about 0.1 s per batch of 8 rows on one core
MAX_QUEUE = 16
AT_ONCE = 200
ROUNDS = 3
CHANNELS = 8
OK = grpc.StatusCode.OK
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
CONFIG = f"""\
max_batch_size: 8
instances: 1
dynamic_batching:
  max_queue_delay_us: 0
  max_queue_size: {MAX_QUEUE}
"""


def slow_model(onnx_model: Callable[..., bytes]) -> bytes:
    """y = x + 1, after DEPTH layers of work whose result is multiplied by zero; tanh
    keeps it finite, so y is exactly x + 1."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(
        (rng.standard_normal((WIDTH, WIDTH)) / WIDTH**0.5).astype(np.float32), "w"
    )
    nodes: list[NodeProto] = [helper.make_node("Constant", [], ["w"], value=weight)]
    previous = "x"
    for layer in range(DEPTH):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"m{layer}"]))
        nodes.append(helper.make_node("Tanh", [f"m{layer}"], [f"t{layer}"]))
        previous = f"t{layer}"
    nodes += [
        helper.make_node(
            "Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
        ),
        helper.make_node(
            "Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
        ),
        helper.make_node("Mul", [previous, "zero"], ["nothing"]),
        helper.make_node("Add", ["x", "nothing"], ["same"]),
        helper.make_node("Add", ["same", "one"], ["y"]),
    ]
    return onnx_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
    )


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-50, 50, (1, WIDTH)).astype(np.float32)


Outcome: TypeAlias = tuple[int, grpc.StatusCode, str, "np.ndarray | None"]


def _round(stubs: list[service_pb2_grpc.GRPCInferenceServiceStub], first: int) -> list[Outcome]:
    """AT_ONCE requests at once, built beforehand; (seed, code, details, y) for each."""
    requests = [raw_fp32_request("slow", "x", _x(first + n)) for n in range(AT_ONCE)]
    calls = [
        stubs[n % len(stubs)].ModelInfer.future(request, timeout=60)
        for n, request in enumerate(requests)
    ]
    results: list[Outcome] = []
    for n, call in enumerate(calls):
        try:
            response = call.result(timeout=90)
        except grpc.RpcError as error:
            results.append((first + n, error.code(), str(error.details()), None))
        else:
            results.append((first + n, OK, "", output(response, "y", np.float32)))
    return results


def test_ten_times_capacity_is_refused_fast_and_the_server_recovers(
    tmp_path: Path, write_model: WriteModel, onnx_model: Callable[..., bytes]
) -> None:
    write_model(tmp_path, "slow", {1: slow_model(onnx_model)}, CONFIG)
    with start_server(tmp_path) as server:
        channels = [
            grpc.insecure_channel(server.grpc_address, options=OWN_CONNECTION)
            for _ in range(CHANNELS)
        ]
        client = triton.InferenceServerClient(server.grpc_address)
        try:
            stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in channels]
            for channel in channels:
                grpc.channel_ready_future(channel).result(timeout=30)
            answered = refused = 0
            for round_number in range(ROUNDS):
                results = _round(stubs, round_number * AT_ONCE)
                codes = [code for _, code, _, _ in results]
                assert set(codes) <= {OK, EXHAUSTED}, [
                    r[:3] for r in results if r[1] not in (OK, EXHAUSTED)
                ][:5]
                admitted = [r for r in results if r[1] == OK]
                refusals = [r for r in results if r[1] == EXHAUSTED]
                assert len(admitted) >= MAX_QUEUE and refusals
                for seed, _, _, y in admitted:
                    assert np.array_equal(y, _x(seed) + 1.0), seed
                assert {d for _, _, d, _ in refusals} == {
                    f"model 'slow' has {MAX_QUEUE} queued requests, the max_queue_size; retry later"
                }
                answered += len(admitted)
                refused += len(refusals)

            # Recovered: requests at a pace the model can hold all succeed.
            for seed in range(10_000, 10_010):
                response = stubs[0].ModelInfer(raw_fp32_request("slow", "x", _x(seed)), timeout=30)
                assert np.array_equal(output(response, "y", np.float32), _x(seed) + 1.0)
            answered += 10
            [stats] = client.get_inference_statistics("slow").model_stats
            assert stats.inference_stats.success.count == answered
            assert stats.inference_stats.fail.count == refused
            assert stats.inference_count == answered  # one row each
            assert stats.inference_stats.queue.count == answered
            assert 0 < stats.execution_count <= answered
            # Refused at enqueue, before any wait: on average, a refusal takes the server
            # less than a tenth of what a served request does (its own clock, one run).
            inference = stats.inference_stats
            mean_refusal = inference.fail.ns / inference.fail.count
            assert mean_refusal < 0.1 * inference.success.ns / inference.success.count
        finally:
            client.close()
            for channel in channels:
                channel.close()
        assert [e for e in server.logs() if e["level"] in ("ERROR", "CRITICAL")] == []
