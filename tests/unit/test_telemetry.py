"""Telemetry pieces in process: histogram buckets, the status names the metrics use, the
--workers merge, the metrics of cancelled and refused requests, telemetry settings and the
payload_logging key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server import settings as settings_module
from server.api.grpc.status import CODES
from server.api.grpc.telemetry import status_name
from server.app import InferenceServer
from server.core import errors
from server.core.errors import RepositoryError
from server.core.model_config import PayloadLogging
from server.core.statistics import DURATION_BOUNDS_NS, Buckets
from server.repository.config import load_config
from server.settings import Settings
from server.telemetry.access import trace_id_of
from server.telemetry.aggregate import merge
from tests.unit.conftest import affine_model, write_model

# One request waits up to 2 s for company, so the test can cancel it while it is queued,
# and the queue of one is then full.
SLOW_CONFIG = """\
max_batch_size: 16
dynamic_batching:
  max_queue_delay_us: 2000000
  max_queue_size: 1
"""


def test_buckets_are_inclusive_upper_bounds() -> None:
    b = Buckets()
    assert len(b.counts) == len(DURATION_BOUNDS_NS) + 1
    assert DURATION_BOUNDS_NS[0] == 100_000 and DURATION_BOUNDS_NS[-1] == 10_000_000_000
    b.add(100_000)  # exactly 100 us: in le="0.0001"
    b.add(100_001)
    b.add(10_000_000_001)  # above 10 s: +Inf only
    assert b.counts[0] == 1 and b.counts[1] == 1 and b.counts[-1] == 1
    assert b.count == 3 and b.total == 100_000 + 100_001 + 10_000_000_001


@pytest.mark.parametrize("error", sorted(CODES, key=lambda cls: cls.__name__))
def test_status_names_follow_the_status_table(error: type[BaseException]) -> None:
    assert status_name(error) == CODES[error].name


def test_status_names_of_the_rest() -> None:
    class Subclass(errors.QueueFull):
        pass

    assert status_name(Subclass) == "RESOURCE_EXHAUSTED"  # along the MRO
    assert status_name(asyncio.CancelledError) == "CANCELLED"
    assert status_name(ValueError) == "INTERNAL"  # what status_for answers for it


def test_merge_labels_every_series_with_its_worker() -> None:
    worker0 = '# HELP a_total A\n# TYPE a_total counter\na_total{model="m"} 3.0\n'
    worker1 = '# HELP a_total A\n# TYPE a_total counter\na_total{model="m"} 4.0\n'
    families = {f.name: f for f in merge([worker0, None, worker1])}
    samples = [(s.name, s.labels, s.value) for s in families["a"].samples]
    assert samples == [
        ("a_total", {"model": "m", "worker": "0"}, 3.0),
        ("a_total", {"model": "m", "worker": "2"}, 4.0),
    ]
    up = [(s.labels["worker"], s.value) for s in families["inference_worker_up"].samples]
    assert up == [("0", 1), ("1", 0), ("2", 1)]


def test_trace_id_of_a_traceparent() -> None:
    assert trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert trace_id_of("00-" + "0" * 32 + "-00f067aa0ba902b7-01") == ""  # invalid id
    assert trace_id_of("garbage") == ""


def _request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    return request


def _samples(server: InferenceServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    assert server.metrics is not None
    text = server.metrics.render(server.metrics.snapshot()).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_cancelled_and_refused_requests_are_counted(tmp_path: Path) -> None:
    write_model(tmp_path, "slow", affine_model(), SLOW_CONFIG)
    server = InferenceServer(Settings(model_repository=tmp_path, host="127.0.0.1", grpc_port=0))
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            queued = stub.ModelInfer(_request())
            for _ in range(100):  # until it sits in the queue
                if server.repository.resolve("slow").statistics().queue_depth:
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(grpc.aio.AioRpcError) as full:
                await stub.ModelInfer(_request())
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (
                _samples(server)[
                    ("inference_pending_requests", frozenset({("model", "slow"), ("version", "1")}))
                ]
                == 1
            )
            queued.cancel()
            for _ in range(100):  # the server sees the cancellation on its own time
                if server.repository.resolve("slow").stats.fail.count == 2:
                    break
                await asyncio.sleep(0.01)
        samples = _samples(server)
        labels = {("model", "slow"), ("version", "1")}
        by_status = {
            status: samples[("inference_requests_total", frozenset({*labels, ("status", status)}))]
            for status in ("OK", "RESOURCE_EXHAUSTED", "CANCELLED")
        }
        assert by_status == {"OK": 0, "RESOURCE_EXHAUSTED": 1, "CANCELLED": 1}
        rpc = {
            dict(key[1])["rpc_response_status_code"]: value
            for key, value in samples.items()
            if key[0] == "rpc_server_call_duration_seconds_count"
        }
        assert rpc == {"OK": 0, "RESOURCE_EXHAUSTED": 1, "CANCELLED": 1}
    finally:
        await server.stop()


def test_telemetry_settings() -> None:
    parsed = settings_module.parse([], environ={})
    assert (parsed.metrics, parsed.metrics_port, parsed.trace_exporter) == (True, 8002, "none")
    assert (parsed.trace_sample_ratio, parsed.access_log_sample) == (1.0, 0.0)
    assert not settings_module.parse(["--metrics", "false"], environ={}).metrics
    assert not settings_module.parse([], environ={"INFERENCE_METRICS": "false"}).metrics
    assert settings_module.parse(["--metrics-port", "0"], environ={}).metrics_port == 0
    chosen = settings_module.parse(
        ["--trace-exporter", "otlp", "--trace-sample-ratio", "0.25"], environ={}
    )
    assert (chosen.trace_exporter, chosen.trace_sample_ratio) == ("otlp", 0.25)


@pytest.mark.parametrize(
    "argv",
    [
        ["--trace-sample-ratio", "1.5"],
        ["--access-log-sample", "-0.1"],
        ["--metrics-port", "70000"],
        ["--trace-exporter", "jaeger"],
        ["--metrics", "maybe"],
    ],
)
def test_bad_telemetry_settings_stop_the_server(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        settings_module.parse(argv, environ={})


def _config(tmp_path: Path, text: str) -> PayloadLogging | None:
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    (model / "config.yaml").write_text(text)
    return load_config(model).payload_logging


def test_payload_logging_key(tmp_path: Path) -> None:
    assert _config(tmp_path, "max_batch_size: 4\n") is None
    assert _config(tmp_path, "payload_logging: {}\n") == PayloadLogging(1.0, 0)
    assert _config(
        tmp_path, "payload_logging: {sample: 0.01, max_output_elements: 16}\n"
    ) == PayloadLogging(0.01, 16)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("payload_logging: {rate: 1}", "unknown key(s) in payload_logging: ['rate']"),
        ("payload_logging: {sample: 0}", "payload_logging.sample must be a number in (0, 1]"),
        ("payload_logging: {sample: 1.5}", "payload_logging.sample must be a number in (0, 1]"),
        ("payload_logging: {sample: '0.5'}", "payload_logging.sample must be a number"),
        ("payload_logging: {sample: true}", "payload_logging.sample must be a number"),
        (
            "payload_logging: {max_output_elements: -1}",
            "payload_logging.max_output_elements must be a non-negative integer",
        ),
        ("payload_logging: [1]", "payload_logging must be a mapping"),
    ],
)
def test_payload_logging_is_parsed_strictly(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RepositoryError) as info:
        _config(tmp_path, text + "\n")
    assert message in str(info.value)
