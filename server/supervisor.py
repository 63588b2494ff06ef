"""Several server processes sharing one gRPC port through SO_REUSEPORT.

Python spends most of a small request in the interpreter, so one process saturates one
core; N processes, each with its own event loop and batchers, use N. The kernel spreads
new connections across the processes' listening sockets. The parent only supervises: it
reserves the port (so that `--grpc-port 0` works), waits until every worker listens,
forwards SIGINT/SIGTERM, and exits non-zero if a worker dies on its own.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import signal
import socket
import sys
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

import uvloop

from server import app
from server.settings import Settings
from server.telemetry import logs

log = logging.getLogger("server")


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) so the port is ours; the workers bind it too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(settings: Settings, index: int, ready: Connection) -> None:
    logs.configure(settings.log_level)
    uvloop.run(app.run(settings, on_ready=lambda port: ready.send(port), worker=index))


def run(settings: Settings) -> int:
    reserved = _reserve_port(settings.host, settings.grpc_port)
    port = reserved.getsockname()[1]
    worker_settings = dataclasses.replace(settings, grpc_port=port)
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    pipes: list[Connection] = []
    stopping = False

    def forward(_signum: int, _frame: object) -> None:
        """Each worker stops gracefully on SIGTERM."""
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.pid is not None and process.is_alive():
                process.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(settings.workers):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker, args=(worker_settings, index, send), name=f"worker-{index}"
        )
        process.start()
        processes.append(process)
        pipes.append(receive)
    for receive, started in zip(pipes, processes, strict=True):
        if not _await_ready(receive, started):
            forward(signal.SIGTERM, None)
            _join(processes)
            log.error("a worker failed to start", extra={"worker": started.name})
            return 1
    log.info(
        "listening",
        extra={
            "event": "listening",
            "grpc_port": port,
            "grpc_address": f"{settings.host}:{port}",
            "workers": settings.workers,
        },
    )
    sentinels = [p.sentinel for p in processes]
    wait(sentinels)  # the first worker to exit, on a signal or on its own
    if not stopping:
        log.error("a worker exited; stopping the others", extra={"event": "worker_exited"})
        forward(signal.SIGTERM, None)
    _join(processes)
    reserved.close()
    failed = stopping is False or any(p.exitcode not in (0, None) for p in processes)
    return 1 if failed else 0


def _await_ready(receive: Connection, process: BaseProcess) -> bool:
    while process.is_alive():
        if receive.poll(0.2):
            receive.recv()
            return True
    return False


def _join(processes: list[BaseProcess]) -> None:
    for process in processes:
        process.join()
    sys.stdout.flush()
