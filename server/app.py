"""Assembles one server process and runs it until SIGINT or SIGTERM.

Shutdown is a sequence of named steps, each bounded (`InferenceServer.stop`):
1. mark NOT_SERVING: readiness, the inference service and every model; liveness stays;
2. keep serving for `--shutdown-delay-s`, so that load balancers notice step 1 first;
3. stop accepting RPCs (new ones get UNAVAILABLE) and let every admitted RPC finish on
   the models it needs, for at most `--shutdown-grace-s`;
4. drain the batchers, which by now hold nothing an admitted RPC waits for;
5. release the sessions, and exit 0.
A second SIGINT or SIGTERM exits at once with status 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from inference import grpc_service_pb2 as pb
from inference import http_service_pb2_grpc as http_pb_grpc
from server.api.grpc.health import Health
from server.api.grpc.servicer import InferenceServicer
from server.api.http.servicer import RestServicer
from server.core.dataplane import DataPlane, ServerInfo
from server.execution.version import OnnxVersions
from server.repository.poller import Poller
from server.repository.repository import Repository
from server.settings import Settings

log = logging.getLogger("server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
LIVENESS = "live"  # health service name: SERVING until the process exits
DRAIN_BOUND_S = 5.0  # step 4: the batchers hold only orphaned work by then


class StartupError(Exception):
    """The server cannot start as configured; the message says why, for the operator."""


def _version() -> str:
    try:
        return package_version("v2-inference-server")
    except PackageNotFoundError:
        return "0+unknown"


def check_repository(path: os.PathLike[str]) -> None:
    """A typo in the repository path must not give a healthy-looking empty server."""
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        raise StartupError(f"--model-repository {os.fspath(path)!r} does not exist") from None
    except NotADirectoryError:
        raise StartupError(f"--model-repository {os.fspath(path)!r} is not a directory") from None
    except PermissionError:
        raise StartupError(f"--model-repository {os.fspath(path)!r} is not readable") from None
    del entries


class InferenceServer:
    """One grpc.aio server with the inference, health and reflection services.

    `reuse_port`: share the port with sibling processes (the `--workers` supervisor's
    own workers only); a lone server refuses a port that something else serves."""

    def __init__(
        self, settings: Settings, worker: int | None = None, reuse_port: bool = False
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.health = Health()
        mode = settings.model_control_mode
        self.repository = Repository(
            settings.model_repository,
            OnnxVersions(settings.workers),
            on_change=self._model_changed,
            rpc_control=mode == "explicit",
            mode=mode,
        )
        self.poller = (
            Poller(self.repository, settings.repository_poll_secs) if mode == "poll" else None
        )
        self.dataplane = DataPlane(self.repository, ServerInfo(settings.server_name, _version()))
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ]
        )
        InferenceServicer(
            self.dataplane, settings.max_input_elements, settings.max_stream_requests
        ).register(self.server)
        # V2 REST, for the gateway (docs/gateway.md); not in reflection, which lists the
        # services clients call.
        http_pb_grpc.add_HTTPInferenceServiceServicer_to_server(
            RestServicer(self.dataplane, settings.max_input_elements), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = 0

    def _model_changed(self, name: str, ready: bool) -> None:
        self.health.set(name, ready)
        self.health.set("", self.dataplane.ready())

    def _startup_models(self) -> list[str] | None:
        chosen = self.settings.load_model
        return None if not chosen or "*" in chosen else list(chosen)

    async def start(self) -> int:
        """Listen first (so liveness answers during loading), then load the models."""
        check_repository(self.settings.model_repository)
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise StartupError(f"cannot bind the gRPC port at {address}: in use?") from exc
        if not self.port:
            raise StartupError(f"cannot bind the gRPC port at {address}: in use?")
        self.health.set(LIVENESS, True)
        self.health.set("", False)
        await self.server.start()
        self.health.set(SERVICE_NAME, True)
        await self.repository.start(self._startup_models())
        if self.poller is not None:
            self.poller.start()
        self.health.set("", self.dataplane.ready())  # from now on, "" follows ServerReady
        log.info(
            "listening",
            extra={
                # Under --workers the parent announces "listening" once all workers do.
                "event": "listening" if self.worker is None else "worker_listening",
                "worker": self.worker,
                "grpc_port": self.port,
                "grpc_address": f"{self.settings.host}:{self.port}",
                "model_control_mode": self.settings.model_control_mode,
                "models": [v.name + "/" + str(v.version) for v in self.repository.loaded()],
            },
        )
        return self.port

    async def stop(self) -> None:
        """Graceful shutdown, in the steps the module docstring names."""
        settings = self.settings
        log.info("shutting down", extra={"event": "stopping", "worker": self.worker})
        self.dataplane.accepting = False  # 1. not serving
        if self.poller is not None:
            await self.poller.stop()
        await self.health.shutdown(keep=LIVENESS)
        if settings.shutdown_delay_s:  # 2. still serving, while reported as not
            await asyncio.sleep(settings.shutdown_delay_s)
        started = time.monotonic()
        await self.server.stop(settings.shutdown_grace_s)  # 3. finish admitted RPCs
        remaining = max(settings.shutdown_grace_s - (time.monotonic() - started), 0.0)
        try:  # 4. drain the batchers
            await asyncio.wait_for(self.repository.close(), min(remaining, DRAIN_BOUND_S) + 0.1)
        except TimeoutError:
            log.warning("batchers did not drain in time", extra={"event": "drain_timeout"})
        log.info("stopped", extra={"event": "stopped", "worker": self.worker})  # 5.


def _force_exit() -> None:
    log.warning("second signal: exiting now", extra={"event": "forced_exit"})
    sys.stdout.flush()
    os._exit(1)


async def run(
    settings: Settings,
    on_ready: Callable[[int], None] = lambda port: None,
    worker: int | None = None,
    reuse_port: bool = False,
) -> None:
    server = InferenceServer(settings, worker, reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            _force_exit()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    on_ready(await server.start())
    await stop.wait()
    await server.stop()
