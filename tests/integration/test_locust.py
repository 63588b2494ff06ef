"""The locust load test (loadtests/locust) against a real server and gateway.

Locust runs as a subprocess, as `make loadtest` runs it: importing it here would
monkey-patch this process with gevent. Each run is bounded: a few users, each paced
(`--user-rate`), for a few seconds; every process a test starts is stopped by it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from onnx import TensorProto, helper
from processes import ROOT, ServerProcess, free_port, start_server
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtests import launch

LOCUSTFILE = ROOT / "loadtests" / "locust" / "locustfile.py"
# The user classes and the request type each reports under (locust's "Type" column).
CLASSES = {
    "GrpcUser": "gRPC",
    "GrpcStreamUser": "gRPC-stream",
    "RestUser": "REST",
    "GrpcWebUser": "gRPC-web",
}
STATS_COLUMNS = {
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time",
    "Average Response Time", "Requests/s", "95%", "99%",
}  # fmt: skip

pytestmark = pytest.mark.slow


@dataclass
class LocustRun:
    code: int
    output: str
    prefix: Path  # --csv prefix
    html: Path

    def stats(self) -> list[dict[str, str]]:
        with open(f"{self.prefix}_stats.csv", newline="") as f:
            return list(csv.DictReader(f))

    def failures(self) -> list[dict[str, str]]:
        with open(f"{self.prefix}_failures.csv", newline="") as f:
            return list(csv.DictReader(f))

    def counts(self, request_type: str) -> tuple[int, int]:
        """(requests, failures) of one request type, from locust's own CSV."""
        rows = [row for row in self.stats() if row["Type"] == request_type]
        return (
            sum(int(row["Request Count"]) for row in rows),
            sum(int(row["Failure Count"]) for row in rows),
        )

    def summary(self) -> dict[str, dict[str, float]]:
        document = json.loads(Path(f"{self.prefix}_summary.json").read_text())
        return {row["user_class"]: row for row in document["classes"]}

    def history_users(self) -> list[int]:
        with open(f"{self.prefix}_stats_history.csv", newline="") as f:
            return [int(row["User Count"]) for row in csv.DictReader(f)]

    def exceptions(self) -> list[dict[str, str]]:
        """Errors raised in user code, outside any request event (locust's own CSV)."""
        with open(f"{self.prefix}_exceptions.csv", newline="") as f:
            return list(csv.DictReader(f))

    def errors(self, request_type: str) -> set[str]:
        return {row["Error"] for row in self.failures() if row["Method"] == request_type}


def run_locust(out: Path, seconds: int, *args: str, timeout: float = 120) -> LocustRun:
    """Run locust headless for `seconds`; it stops itself, and is killed if it hangs."""
    out.mkdir(parents=True, exist_ok=True)
    prefix, html = out / "locust", out / "report.html"
    command = [
        sys.executable,
        *("-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-t", f"{seconds}s"),
        *("--csv", str(prefix), "--csv-full-history", "--html", str(html), "--only-summary"),
        *args,
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:  # timed out (or interrupted): stop it and its workers
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return LocustRun(process.returncode, output, prefix, html)


# --- every user class against the default models ---------------------------------------------


@pytest.fixture(scope="module")
def gateway(default_server: ServerProcess) -> Iterator[launch.Gateway]:
    with launch.gateway(default_server.grpc_port) as running:
        yield running


@pytest.fixture(scope="module")
def smoke(
    default_server: ServerProcess,
    gateway: launch.Gateway,
    tmp_path_factory: pytest.TempPathFactory,
) -> LocustRun:
    """About 10 s of every user class on every default model: 8 users, 25 requests/s each."""
    run = run_locust(
        tmp_path_factory.mktemp("locust-smoke"),
        10,
        *("-u", "8", "-r", "8", "--user-rate", "25"),
        *("--host", gateway.url, "--grpc-target", default_server.grpc_address),
        *CLASSES,
    )
    assert "Traceback" not in run.output, run.output[-3000:]
    return run


@pytest.mark.parametrize(
    "user_class",
    [
        "GrpcUser",
        "GrpcStreamUser",
        "RestUser",
        "GrpcWebUser",
    ],
)
def test_every_user_class_gets_right_answers(smoke: LocustRun, user_class: str) -> None:
    requests, failures = smoke.counts(CLASSES[user_class])
    assert requests > 0, smoke.output[-3000:]
    assert failures == 0, [row for row in smoke.failures() if row["Method"] == CLASSES[user_class]]
    summary = smoke.summary()[user_class]
    # Counted from the same events; a request in flight at the stop may land in one only.
    assert abs(summary["requests"] - requests) <= 8
    assert summary["failures"] == 0
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]


def test_every_model_is_exercised(smoke: LocustRun) -> None:
    names = {row["Name"] for row in smoke.stats() if row["Type"] == "gRPC"}
    assert names == {"digits", "minilm", "text_direction", "silero_vad"}


def test_reports_exist_and_parse(smoke: LocustRun) -> None:
    rows = smoke.stats()
    assert set(rows[0]) >= STATS_COLUMNS
    assert {row["Type"] for row in rows} >= set(CLASSES.values())
    assert rows[-1]["Name"] == "Aggregated"
    for suffix in ("failures", "exceptions", "stats_history"):
        with open(f"{smoke.prefix}_{suffix}.csv", newline="") as f:
            assert next(csv.reader(f)), suffix  # a header row
    with open(f"{smoke.prefix}_failures.csv", newline="") as f:
        failure_columns = set(csv.DictReader(f).fieldnames or ())
    assert failure_columns >= {"Method", "Name", "Error", "Occurrences"}
    html = smoke.html.read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "gRPC-web" in html and "digits" in html
    summary = json.loads(Path(f"{smoke.prefix}_summary.json").read_text())
    assert summary["seconds"] > 5
    assert summary["client_cpu_s"] > 0
    assert Path(f"{smoke.prefix}_summary.txt").read_text().startswith("user class")


@pytest.mark.parametrize("user_class", ["GrpcUser", "GrpcStreamUser"])
def test_grpc_calls_overlap_under_gevent(
    default_server: ServerProcess, tmp_path: Path, user_class: str
) -> None:
    """Four users in one process keep about four minilm calls in flight (Little's law:
    requests/s x mean latency); blocking calls would serialize them, to about one."""
    run = run_locust(
        tmp_path,
        5,
        *("-u", "4", "-r", "4", "--models", "minilm"),
        *("--grpc-target", default_server.grpc_address),
        user_class,
    )
    assert run.code == 0, run.output[-3000:]
    (row,) = [r for r in run.stats() if r["Type"] == CLASSES[user_class]]
    in_flight = float(row["Requests/s"]) * float(row["Average Response Time"]) / 1000
    assert in_flight > 2.5, row


# --- the checks can fail -----------------------------------------------------------------------


def _constant_digits() -> bytes:
    """digits' signature, always answering label 9: input FP32 [N, 64] -> label INT64 [N],
    probabilities FP32 [N, 10] (IR 9, opset 17, which ONNX Runtime accepts)."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [64, 10], [0.0] * 640)
    bias = helper.make_tensor("b", TensorProto.FLOAT, [10], [0.0] * 9 + [1.0])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["scores"]),
            helper.make_node("Add", ["scores", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "constant_digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
        ],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


@pytest.fixture(scope="module")
def wrong_server(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[[Path, str, dict[int, bytes], str], Path],
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("wrong-repository")
    write_model(root, "digits", {1: _constant_digits()}, "max_batch_size: 64\n")
    with start_server(root) as server:
        yield server


def test_wrong_answers_are_failures(wrong_server: ServerProcess, tmp_path: Path) -> None:
    """Every class, RestUser (binary tensors through the gateway) included."""
    with launch.gateway(wrong_server.grpc_port) as front:
        run = run_locust(
            tmp_path,
            4,
            *("-u", "4", "-r", "4", "--user-rate", "20", "--models", "digits"),
            *("--host", front.url, "--grpc-target", wrong_server.grpc_address),
            *CLASSES,
        )
    assert run.code == 1, run.output[-3000:]  # locust's exit code when a request failed
    for user_class, request_type in CLASSES.items():
        requests, failures = run.counts(request_type)
        assert 0 < failures <= requests, user_class
        # locust writes the exception's repr
        assert run.errors(request_type) == {
            """WrongAnswer("digits: a label differs from the image's true label")"""
        }, user_class
    assert run.exceptions() == []


def test_a_stopped_server_is_failures(tmp_path: Path) -> None:
    """Nothing listens on the gRPC port, and the gateway in front of it has no healthy
    upstream: every request of every class fails."""
    port = free_port()
    with launch.gateway(port) as front:
        run = run_locust(
            tmp_path,
            3,
            *("-u", "4", "-r", "4", "--user-rate", "20", "--models", "digits"),
            *("--host", front.url, "--grpc-target", f"127.0.0.1:{port}"),
            *CLASSES,
        )
    assert run.code == 1, run.output[-3000:]
    for user_class, request_type in CLASSES.items():
        requests, failures = run.counts(request_type)
        assert requests > 0 and failures == requests, user_class
    for request_type in ("gRPC", "gRPC-stream"):
        errors = run.errors(request_type)
        assert errors and all("UNAVAILABLE" in error for error in errors), errors
    # Envoy's own replies: to a REST caller in V2 REST's error shape, to gRPC-web a 503.
    assert run.errors("REST") == {"CatchResponseError('HTTP 503: no healthy upstream')"}
    assert run.errors("gRPC-web") == {"CatchResponseError('HTTP 503')"}
    assert run.exceptions() == []


# --- replies that cannot be read, and stream replies that never come ------------------------


def _unreadable_digits(request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferResponse:
    """digits' outputs, but 7 raw bytes for the INT64 label: no whole element."""
    rows = request.inputs[0].shape[0]
    reply = service_pb2.ModelInferResponse(model_name="digits", id=request.id)
    reply.outputs.add(name="label", datatype="INT64", shape=[rows])
    reply.outputs.add(name="probabilities", datatype="FP32", shape=[rows, 10])
    reply.raw_output_contents.extend([b"\x00" * 7, np.zeros((rows, 10), np.float32).tobytes()])
    return reply


class _BrokenServer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """ModelInfer answers every request unreadably. ModelStreamInfer does the same for
    requests with an even id and never answers those with an odd one."""

    def ModelInfer(self, request: service_pb2.ModelInferRequest, context: object) -> object:
        return _unreadable_digits(request)

    def ModelStreamInfer(self, requests: Iterator[object], context: object) -> Iterator[object]:
        for request in requests:
            assert isinstance(request, service_pb2.ModelInferRequest)
            if int(request.id) % 2 == 0:
                yield service_pb2.ModelStreamInferResponse(
                    infer_response=_unreadable_digits(request)
                )


@pytest.fixture
def broken_server() -> Iterator[int]:
    """A gRPC server in this process (threads, no gevent here), healthy to the gateway."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_BrokenServer(), server)
    checks = health.HealthServicer()
    checks.set("inference.GRPCInferenceService", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def _await_upstream(address: str, timeout: float = 10.0) -> None:
    """Until a call through the gateway reaches the upstream (its first health check)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while True:
            try:
                stub.ModelInfer(_digits_request(), timeout=2)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _digits_request() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(bytes(256))
    return request


def test_unreadable_and_missing_replies_are_failures(broken_server: int, tmp_path: Path) -> None:
    """A reply that cannot be decoded is a failure event, never a user exception (which
    locust keeps apart, outside the request's statistics); a stream reply that does not come
    within --request-timeout is a DEADLINE_EXCEEDED failure, and its slot sends again."""
    with launch.gateway(broken_server) as front:
        _await_upstream(f"127.0.0.1:{front.port}")
        run = run_locust(
            tmp_path,
            3,
            *("-u", "3", "-r", "3", "--user-rate", "20", "--models", "digits"),
            *("--request-timeout", "0.5", "--stream-inflight", "2"),
            *("--host", front.url, "--grpc-target", f"127.0.0.1:{broken_server}"),
            "GrpcUser", "GrpcStreamUser", "GrpcWebUser",
        )  # fmt: skip
    assert run.code == 1, run.output[-3000:]
    assert run.exceptions() == [], run.output[-3000:]
    unreadable = (
        "WrongAnswer('digits: the reply cannot be read "
        "(ValueError: buffer size must be a multiple of element size)')"
    )
    for user_class in ("GrpcUser", "GrpcStreamUser", "GrpcWebUser"):
        requests, failures = run.counts(CLASSES[user_class])
        assert requests > 0 and failures == requests, user_class
    assert run.errors("gRPC") == run.errors("gRPC-web") == {unreadable}
    assert run.errors("gRPC-stream") == {
        unreadable,
        "StatusError('DEADLINE_EXCEEDED: no reply within 0.5 s on the stream')",
    }
    # The odd ids time out: with 2 slots over 3 s, several, each after 0.5 s.
    deadline_rows = [
        row
        for row in run.failures()
        if row["Method"] == "gRPC-stream" and "DEADLINE" in row["Error"]
    ]
    assert int(deadline_rows[0]["Occurrences"]) >= 3


# --- load profiles and several processes -------------------------------------------------------


def test_step_profile_over_two_processes(default_server: ServerProcess, tmp_path: Path) -> None:
    """--load-profile step: 2 users, then 4; spread over two locust worker processes."""
    run = run_locust(
        tmp_path,
        6,
        *("-u", "4", "-r", "4", "--load-profile", "step", "--step-users", "2"),
        *("--step-seconds", "3", "--user-rate", "20", "--models", "digits", "--processes", "2"),
        *("--grpc-target", default_server.grpc_address),
        "GrpcUser",
    )
    assert run.code == 0, run.output[-3000:]
    users = [count for count in run.history_users() if count]
    assert users[0] == 2 and max(users) == 4, users
    requests, failures = run.counts("gRPC")
    assert requests > 0 and failures == 0


def test_spike_profile(default_server: ServerProcess, tmp_path: Path) -> None:
    """--load-profile spike: a quarter of -u, all of it in the middle, a quarter again."""
    run = run_locust(
        tmp_path,
        6,
        *("-u", "4", "-r", "4", "--load-profile", "spike", "--spike-seconds", "2"),
        *("--user-rate", "20", "--models", "digits"),
        *("--grpc-target", default_server.grpc_address),
        "GrpcUser",
    )
    assert run.code == 0, run.output[-3000:]
    users = [count for count in run.history_users() if count]
    peak = users.index(4)
    assert users[0] == 1 and users[-1] == 1 and 0 < peak < len(users) - 1, users
