"""Several server processes sharing one gRPC port through SO_REUSEPORT.

Python spends most of a small request in the interpreter, so one process saturates one
core; N processes, each with its own event loop and batchers, use N. The kernel spreads
new connections across the processes' listening sockets. The parent only supervises: it
reserves the port (so that `--grpc-port 0` works), waits until every worker listens,
forwards SIGINT/SIGTERM, bounds how long each worker may take to stop, and exits
non-zero if a worker dies on its own: 2 (a start-up error, as for a lone server) when
one fails before it listens, 1 when one dies afterwards. A second signal kills the
workers at once. SIGHUP goes to every worker that has started, which re-reads its
security files.

Metrics: each worker serves its own on a loopback port it reports when ready, and the
parent serves them all on --metrics-port, each series labelled with its worker
(`telemetry.aggregate`): one scrape target per server, whatever N is.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

import uvloop

from server import app
from server.settings import Settings
from server.telemetry import logs
from server.telemetry.aggregate import WorkerMetrics
from server.telemetry.endpoint import MetricsEndpoint

log = logging.getLogger("server")


JOIN_MARGIN_S = 5.0  # beyond a worker's own shutdown bound, before it is killed


def _reserve_port(host: str, port: int) -> socket.socket:
    """Claim the port for our workers only.

    First a plain bind, which fails while anything else holds the port (a lone server,
    or another supervisor's workers), so two servers never silently share connections.
    Then hold it with SO_REUSEPORT, bound but not listening, so the workers can bind it
    too and `--grpc-port 0` picks one port for all of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise app.StartupError(
                f"cannot bind the gRPC port at {host}:{port}: {exc.strerror}"
            ) from None
        port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(settings: Settings, index: int, ready: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards it as SIGTERM
    logs.configure(settings.log_level, settings.payload_log_file)

    def on_ready(server: app.InferenceServer) -> None:
        ready.send((server.port, server.metrics_port))

    try:
        uvloop.run(
            app.run(
                settings,
                on_ready=on_ready,
                worker=index,
                reuse_port=True,
                metrics_host="127.0.0.1",
            )
        )
    except app.StartupError as exc:
        log.error(str(exc), extra={"event": "startup_failed", "worker": index})
        sys.exit(2)


def run(settings: Settings) -> int:
    """Start the workers, supervise them, and stop them all on a signal or a death."""
    app.check_repository(settings.model_repository)
    reserved = _reserve_port(settings.host, settings.grpc_port)
    port = reserved.getsockname()[1]
    worker_settings = dataclasses.replace(settings, grpc_port=port)
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    pipes: list[Connection] = []
    stopping = False
    signalled: set[int] = set()  # workers sent SIGTERM already
    join_s = settings.shutdown_delay_s + settings.shutdown_grace_s + JOIN_MARGIN_S

    def forward(_signum: int, _frame: object) -> None:
        """The first signal stops each worker gracefully; a second one kills them."""
        nonlocal stopping
        if stopping:
            log.warning("second signal: killing the workers", extra={"event": "forced_exit"})
            _kill(processes)
            sys.stdout.flush()
            os._exit(1)
        stopping = True
        _terminate(processes, signalled)

    serving: list[BaseProcess] = []  # started, so they handle SIGHUP (it would kill them before)

    def hangup(_signum: int, _frame: object) -> None:
        for process in serving:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, hangup)
    for index in range(settings.workers):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker, args=(worker_settings, index, send), name=f"worker-{index}"
        )
        process.start()
        send.close()  # the worker holds the other end; its death closes the pipe
        processes.append(process)
        pipes.append(receive)
    metrics_ports: list[int] = []
    for receive, started in zip(pipes, processes, strict=True):
        ready = _await_ready(receive, started)
        if ready is None:  # a start-up failure, as a lone server's: exit status 2
            stopping = True
            _stop(processes, join_s, signalled)
            log.error(
                "a worker failed to start; stopped the others",
                extra={"event": "startup_failed", "worker": started.name},
            )
            reserved.close()
            return 2
        metrics_ports.append(ready[1])
        serving.append(started)
    endpoint = None
    if settings.metrics:
        aggregate = WorkerMetrics(metrics_ports)
        endpoint = MetricsEndpoint(aggregate.render, settings.host, settings.metrics_port)
        try:
            metrics_port = endpoint.start()
        except OSError as exc:
            log.error(
                f"cannot bind the metrics port at {settings.host}:{settings.metrics_port}: "
                f"{exc.strerror or exc}",
                extra={"event": "startup_failed"},
            )
            stopping = True
            _stop(processes, join_s, signalled)
            return 2
    log.info(
        "listening",
        extra={
            "event": "listening",
            "grpc_port": port,
            "grpc_address": f"{settings.host}:{port}",
            "workers": settings.workers,
            "metrics_port": metrics_port if endpoint is not None else None,
        },
    )
    sentinels = [p.sentinel for p in processes]
    wait(sentinels)  # the first worker to exit, on a signal or on its own
    unexpected = not stopping
    if unexpected:
        log.error("a worker exited; stopping the others", extra={"event": "worker_exited"})
        stopping = True
    _stop(processes, join_s, signalled)
    reserved.close()
    if endpoint is not None:
        endpoint.stop()
    failed = unexpected or any(p.exitcode not in (0, None) for p in processes)
    return 1 if failed else 0


def _await_ready(receive: Connection, process: BaseProcess) -> tuple[int, int] | None:
    """The worker's gRPC and metrics ports once it reports them; None if it dies (or
    closes the pipe) first."""
    while process.is_alive():
        try:
            if receive.poll(0.2):
                grpc_port, metrics_port = receive.recv()
                return int(grpc_port), int(metrics_port)
        except (EOFError, OSError):
            return None
    return None


def _terminate(processes: list[BaseProcess], signalled: set[int]) -> None:
    """SIGTERM each live worker once: a second SIGTERM forces a stopping worker to exit
    with status 1, or kills one whose event loop has already closed."""
    for process in processes:
        if process.pid is not None and process.is_alive() and process.pid not in signalled:
            signalled.add(process.pid)
            process.terminate()


def _stop(processes: list[BaseProcess], join_s: float, signalled: set[int]) -> None:
    """SIGTERM the live workers, wait for each within the shutdown bound, then kill."""
    _terminate(processes, signalled)
    deadline = time.monotonic() + join_s
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0.0))
    _kill(processes)
    sys.stdout.flush()


def _kill(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
