"""/metrics on a real server: exact counts and label sets after a known sequence of requests,
agreement with ModelStatistics, the port flags, and --workers 2 adding up."""

from __future__ import annotations

import io
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import pytest
from PIL import Image
from processes import ROOT, ServerProcess, start_server
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

Stub: TypeAlias = service_pb2_grpc.GRPCInferenceServiceStub
Writer = Callable[[Path, str, dict[int, bytes], str], Path]
Samples = dict[str, list[tuple[dict[str, str], float]]]

ADD_CONFIG = """\
max_batch_size: 8
version_policy: {all: true}
deprecated:
  - {version: 1, sunset: 2000-01-01, replacement: "2"}
"""
OLD_CONFIG = """\
max_batch_size: 8
deprecated:
  - {version: 1, sunset: 2100-01-01, replacement: "2"}
"""
INFER = "inference.GRPCInferenceService/ModelInfer"


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        return str(reply.read().decode())


def scrape(port: int) -> Samples:
    """Every sample by sample name: (labels, value)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(scrape_text(port)):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def values(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """One sample's values keyed by the given labels' values."""
    return {tuple(labels[k] for k in keys): value for labels, value in samples.get(name, [])}


def metrics_port(server: ServerProcess) -> int:
    return int(server.start_line["metrics_port"])  # type: ignore[call-overload]


def request(
    model: str, rows: int, version: str = "", width: int = 2
) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    message.inputs.add(name="x", datatype="FP32", shape=[rows, width])
    message.raw_input_contents.append(np.ones((rows, width), np.float32).tobytes())
    return message


def expect(stub: Stub, message: service_pb2.ModelInferRequest, code: grpc.StatusCode) -> None:
    if code == grpc.StatusCode.OK:
        stub.ModelInfer(message, timeout=30)
        return
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(message, timeout=30)
    assert info.value.code() == code  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def repository(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Writer,
    add_constant_model: Callable[[float], bytes],
) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_model(root, "add", {1: add_constant_model(1.0), 2: add_constant_model(2.0)}, ADD_CONFIG)
    write_model(root, "old", {1: add_constant_model(3.0)}, OLD_CONFIG)
    return root


@pytest.fixture(scope="module")
def exercised(repository: Path) -> Iterator[tuple[ServerProcess, Stub]]:
    """A server that has answered a known sequence of requests, one at a time."""
    with start_server(repository) as server:
        channel = grpc.insecure_channel(server.grpc_address)
        stub = Stub(channel)
        ok, invalid = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
        for _ in range(5):
            expect(stub, request("add", 3), ok)  # 5 executions of 3 rows
        for _ in range(2):
            expect(stub, request("add", 1), ok)  # 2 executions of 1 row
        for _ in range(3):
            expect(stub, request("add", 1, width=3), invalid)  # fails validation
        for _ in range(2):
            expect(stub, request("add", 1, version="1"), grpc.StatusCode.FAILED_PRECONDITION)
        for _ in range(4):
            expect(stub, request("old", 2), ok)  # a deprecated version, still served
        expect(stub, request("nope", 1), grpc.StatusCode.NOT_FOUND)  # no model to count it on
        bad = request("add", 1)
        bad.inputs[0].datatype = "FP99"  # refused by the codec, before any model
        expect(stub, bad, invalid)
        yield server, stub
        channel.close()


def test_request_counts_by_model_version_and_status(
    exercised: tuple[ServerProcess, Stub],
) -> None:
    server, _ = exercised
    samples = scrape(metrics_port(server))
    requests = values(samples, "inference_requests_total", "model", "version", "status")
    assert requests == {
        ("add", "1", "OK"): 0,
        ("add", "1", "FAILED_PRECONDITION"): 2,
        ("add", "2", "OK"): 7,
        ("add", "2", "INVALID_ARGUMENT"): 3,
        ("old", "1", "OK"): 4,
    }
    durations = values(
        samples, "inference_request_duration_seconds_count", "model", "version", "status"
    )
    assert durations == requests
    assert values(samples, "inference_inferences_total", "model", "version") == {
        ("add", "1"): 0,
        ("add", "2"): 17,
        ("old", "1"): 8,
    }
    assert values(samples, "inference_executions_total", "model", "version") == {
        ("add", "1"): 0,
        ("add", "2"): 7,
        ("old", "1"): 4,
    }
    assert values(samples, "inference_deprecated_uses_total", "model", "version") == {
        ("add", "1"): 0,
        ("add", "2"): 0,
        ("old", "1"): 4,
    }


def test_histograms_have_the_documented_buckets(exercised: tuple[ServerProcess, Stub]) -> None:
    server, _ = exercised
    samples = scrape(metrics_port(server))
    batch = values(samples, "inference_batch_size_bucket", "model", "version", "le")
    assert [batch[("add", "2", le)] for le in ("1.0", "2.0", "4.0", "8.0", "+Inf")] == [
        2,
        2,
        7,
        7,
        7,
    ]
    assert values(samples, "inference_batch_size_sum", "model", "version")[("add", "2")] == 17
    queue = [labels["le"] for labels, _ in samples["inference_queue_duration_seconds_bucket"]]
    expected = ["0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025"]
    expected += ["0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"]
    assert queue[: len(expected)] == expected
    queued = values(samples, "inference_queue_duration_seconds_count", "model", "version")
    assert queued == {("add", "1"): 0, ("add", "2"): 7, ("old", "1"): 4}
    computed = values(samples, "inference_compute_duration_seconds_count", "model", "version")
    assert computed == {("add", "1"): 0, ("add", "2"): 7, ("old", "1"): 4}


def test_label_sets(exercised: tuple[ServerProcess, Stub]) -> None:
    server, _ = exercised
    samples = scrape(metrics_port(server))
    expected = {
        "inference_requests_total": {"model", "version", "status"},
        "inference_inferences_total": {"model", "version"},
        "inference_executions_total": {"model", "version"},
        "inference_compute_time_seconds_total": {"model", "version", "phase"},
        "inference_deprecated_uses_total": {"model", "version"},
        "inference_pending_requests": {"model", "version"},
        "inference_active_executions": {"model", "version"},
        "inference_execution_slots": {"model", "version"},
        "inference_queue_limit": {"model", "version"},
        "inference_model_state": {"model", "version", "state"},
        "inference_server_ready": set(),
        "inference_request_duration_seconds_bucket": {"model", "version", "status", "le"},
        "inference_queue_duration_seconds_bucket": {"model", "version", "le"},
        "inference_compute_duration_seconds_bucket": {"model", "version", "le"},
        "inference_batch_size_bucket": {"model", "version", "le"},
        "rpc_server_call_duration_seconds_bucket": {
            "rpc_system_name",
            "rpc_method",
            "rpc_response_status_code",
            "le",
        },
    }
    for name, keys in expected.items():
        assert name in samples, name
        assert {frozenset(labels) for labels, _ in samples[name]} == {frozenset(keys)}, name
    assert values(samples, "inference_server_ready") == {(): 1}
    states = values(samples, "inference_model_state", "model", "version", "state")
    assert states[("add", "2", "READY")] == 1
    assert states[("add", "2", "LOADING")] == 0
    assert values(samples, "inference_pending_requests", "model", "version")[("add", "2")] == 0
    assert values(samples, "inference_execution_slots", "model", "version")[("add", "2")] == 1


def test_rpc_metrics_count_every_call_by_code(exercised: tuple[ServerProcess, Stub]) -> None:
    server, _ = exercised
    samples = scrape(metrics_port(server))
    calls = values(
        samples, "rpc_server_call_duration_seconds_count", "rpc_method", "rpc_response_status_code"
    )
    infer = {code: n for (method, code), n in calls.items() if method == INFER}
    # The codec's refusal and the unknown model count here, not on any model.
    assert infer == {"OK": 11, "INVALID_ARGUMENT": 4, "FAILED_PRECONDITION": 2, "NOT_FOUND": 1}
    for labels, _ in samples["rpc_server_call_duration_seconds_count"]:
        assert labels["rpc_system_name"] == "grpc"


def test_model_statistics_and_metrics_agree(exercised: tuple[ServerProcess, Stub]) -> None:
    server, stub = exercised
    stats = stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="add"), timeout=30)
    samples = scrape(metrics_port(server))
    requests = values(samples, "inference_requests_total", "model", "version", "status")
    queue_sum = values(samples, "inference_queue_duration_seconds_sum", "model", "version")
    compute = values(samples, "inference_compute_time_seconds_total", "model", "version", "phase")
    request_sum = values(
        samples, "inference_request_duration_seconds_sum", "model", "version", "status"
    )
    for s in stats.model_stats:
        version = s.version
        failed = sum(
            n for (m, v, code), n in requests.items() if (m, v) == ("add", version) and code != "OK"
        )
        assert s.inference_stats.success.count == requests[("add", version, "OK")]
        assert s.inference_stats.fail.count == failed
        assert (
            s.inference_count
            == values(samples, "inference_inferences_total", "model", "version")[("add", version)]
        )
        assert (
            s.execution_count
            == values(samples, "inference_executions_total", "model", "version")[("add", version)]
        )
        assert queue_sum[("add", version)] == pytest.approx(
            s.inference_stats.queue.ns / 1e9, abs=1e-9
        )
        assert request_sum[("add", version, "OK")] == pytest.approx(
            s.inference_stats.success.ns / 1e9, abs=1e-9
        )
        for phase in ("input", "infer", "output"):
            ns = getattr(s.inference_stats, f"compute_{phase}").ns
            assert compute[("add", version, phase)] == pytest.approx(ns / 1e9, abs=1e-9)


def test_only_metrics_is_served(exercised: tuple[ServerProcess, Stub]) -> None:
    server, _ = exercised
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(server)}/", timeout=10)
    assert info.value.code == 404


def test_metrics_off(repository: Path) -> None:
    with start_server(repository, "--metrics", "false") as server:
        assert server.start_line["metrics_port"] is None


def test_a_taken_metrics_port_is_a_startup_error(repository: Path) -> None:
    with start_server(repository) as first:
        taken = str(metrics_port(first))
        refused = pytest.raises(RuntimeError, match="cannot bind the metrics port")
        with refused, start_server(repository, "--metrics-port", taken):
            pass


def test_two_workers_add_up(repository: Path) -> None:
    """Each worker counts its own requests; the parent's one endpoint serves both, labelled
    by worker, and the totals are the requests sent."""
    sent = 40
    with start_server(repository, "--workers", "2") as server:
        for _ in range(sent):  # a new connection each time, so both workers get some
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(server.grpc_address, options=options) as channel:
                Stub(channel).ModelInfer(request("add", 2), timeout=30)
        samples = scrape(metrics_port(server))
    assert values(samples, "inference_worker_up", "worker") == {("0",): 1, ("1",): 1}
    ok = values(samples, "inference_requests_total", "model", "version", "status", "worker")
    per_worker = {w: n for (m, v, code, w), n in ok.items() if (m, v, code) == ("add", "2", "OK")}
    assert set(per_worker) == {"0", "1"}
    assert sum(per_worker.values()) == sent
    assert all(n > 0 for n in per_worker.values()), per_worker
    rows = values(samples, "inference_inferences_total", "model", "version", "worker")
    assert sum(n for (m, v, _), n in rows.items() if (m, v) == ("add", "2")) == 2 * sent
    ready = values(samples, "inference_server_ready", "worker")
    assert ready == {("0",): 1, ("1",): 1}


# --- a pipeline's steps -------------------------------------------------------------------


def _png(rows: int) -> service_pb2.ModelInferRequest:
    """digit_from_png with `rows` grey 16x16 PNGs (or bytes that are no image, rows < 0)."""
    images = [b"not an image"] if rows < 0 else []
    for _ in range(max(rows, 0)):
        buffer = io.BytesIO()
        Image.new("L", (16, 16), 128).save(buffer, "PNG")
        images.append(buffer.getvalue())
    message = service_pb2.ModelInferRequest(model_name="digit_from_png")
    message.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
    message.raw_input_contents.append(b"".join(len(i).to_bytes(4, "little") + i for i in images))
    return message


@pytest.fixture(scope="module")
def pipeline_exercised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """digits and the digit_from_png pipeline after a known sequence, one request at a time:
    4 that pass (5 images), 2 that decode_image refuses."""
    root = tmp_path_factory.mktemp("pipeline")
    for name in ("digits", "digit_from_png"):
        shutil.copytree(ROOT / "models" / name, root / name)
    with start_server(root) as server, grpc.insecure_channel(server.grpc_address) as channel:
        stub = Stub(channel)
        for rows in (1, 1, 1, 2):
            expect(stub, _png(rows), grpc.StatusCode.OK)
        for _ in range(2):
            expect(stub, _png(-1), grpc.StatusCode.INVALID_ARGUMENT)
        yield server


def test_pipeline_steps_have_their_own_series_with_exact_counts(
    pipeline_exercised: ServerProcess,
) -> None:
    samples = scrape(metrics_port(pipeline_exercised))
    keys = ("model", "version", "step", "status")
    requests = {
        ("digit_from_png", "1", "decode_image", "OK"): 4,
        ("digit_from_png", "1", "decode_image", "INVALID_ARGUMENT"): 2,
        ("digit_from_png", "1", "digits", "OK"): 4,
    }
    assert values(samples, "inference_pipeline_step_requests_total", *keys) == requests
    durations = values(samples, "inference_pipeline_step_request_duration_seconds_count", *keys)
    assert durations == requests
    # Batcher series only for the step with a batcher of its own; digits' are its own series.
    step = ("model", "version", "step")
    decode = ("digit_from_png", "1", "decode_image")
    assert values(samples, "inference_pipeline_step_inferences_total", *step) == {decode: 5}
    assert values(samples, "inference_pipeline_step_executions_total", *step) == {decode: 4}
    for name in ("queue", "compute"):
        counts = values(samples, f"inference_pipeline_step_{name}_duration_seconds_count", *step)
        assert counts == {decode: 4}, name
    for name, labels in {
        "inference_pipeline_step_requests_total": set(keys),
        "inference_pipeline_step_inferences_total": set(step),
        "inference_pipeline_step_executions_total": set(step),
        "inference_pipeline_step_request_duration_seconds_bucket": {*keys, "le"},
        "inference_pipeline_step_queue_duration_seconds_bucket": {*step, "le"},
        "inference_pipeline_step_compute_duration_seconds_bucket": {*step, "le"},
    }.items():
        assert {frozenset(labels) for labels, _ in samples[name]} == {frozenset(labels)}, name
    # The pipeline and its model keep their own series, each request counted once in each.
    assert values(samples, "inference_requests_total", "model", "version", "status") == {
        ("digit_from_png", "1", "OK"): 4,
        ("digit_from_png", "1", "INVALID_ARGUMENT"): 2,
        ("digits", "1", "OK"): 0,
        ("digits", "2", "OK"): 4,
    }
    assert values(samples, "inference_inferences_total", "model", "version")[("digits", "2")] == 5
