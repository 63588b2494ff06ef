"""`--workers N`: processes share one port, each serves with its own batchers, and all stop
together."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from processes import ServerProcess, start_server, stop_process
from traffic import wait_until
from tritonclient.grpc import service_pb2, service_pb2_grpc

Writer = Callable[[Path, str, dict[int, bytes], str], Path]


def _workers(pid: int) -> set[int]:
    """The worker processes of a server (multiprocessing also starts a resource tracker)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(int(child))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _infer_on_new_connection(server: ServerProcess) -> tuple[float, int]:
    """One request on its own TCP connection; returns y and the count the serving worker
    reports for the model (each worker keeps its own statistics)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(server.grpc_address, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        x = np.array([[1.0, 2.0]], np.float32)
        request = service_pb2.ModelInferRequest(model_name="add")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        request.raw_input_contents.append(x.tobytes())
        reply = stub.ModelInfer(request, timeout=30)
        y = np.frombuffer(reply.raw_output_contents[0], np.float32)
        stats = stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="add"), timeout=30)
        return float(y[0]), int(stats.model_stats[0].inference_count)


def test_two_workers_share_the_port_and_stop_together(
    tmp_path: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> None:
    write_model(tmp_path, "add", {1: add_constant_model(10.0)}, "max_batch_size: 4\n")
    with start_server(tmp_path, "--workers", "2") as server:
        assert server.start_line["workers"] == 2
        workers = _workers(server.process.pid)
        assert len(workers) == 2
        # If one worker took every connection, each would report all requests so far.
        spread = False
        for sent in range(1, 65):
            y, count = _infer_on_new_connection(server)
            assert y == 11.0
            if count < sent:
                spread = True
                break
        assert spread, "64 connections all reached the same worker"
        # SIGHUP to the supervisor reaches each worker, which re-reads its security files.
        server.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: sum('"event": "security_reload"' in line for line in server.log_lines) == 2,
            30,
            "both workers' security_reload lines",
        )
        assert server.process.poll() is None and all(_alive(pid) for pid in workers)
        assert stop_process(server.process) == 0
        assert not any(_alive(pid) for pid in workers)
    assert sum('"event": "stopped"' in line for line in server.log_lines) == 2


def test_a_worker_that_dies_stops_the_server(
    tmp_path: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> None:
    write_model(tmp_path, "add", {1: add_constant_model(1.0)}, "max_batch_size: 4\n")
    with start_server(tmp_path, "--workers", "2") as server:
        workers = sorted(_workers(server.process.pid))
        os.kill(workers[0], signal.SIGKILL)
        assert server.process.wait(timeout=30) == 1
        assert not any(_alive(pid) for pid in workers)
