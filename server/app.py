"""Assembles one server process and runs it until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server.api.grpc.health import Health
from server.api.grpc.servicer import InferenceServicer
from server.core.dataplane import DataPlane, ServerInfo
from server.execution.factory import Versions
from server.execution.pipeline_factory import PipelineVersions
from server.execution.version import OnnxVersions
from server.repository.repository import Repository
from server.settings import Settings

log = logging.getLogger("server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
LIVENESS = "live"  # health service name: SERVING until the process exits


def _version() -> str:
    try:
        return package_version("v2-inference-server")
    except PackageNotFoundError:
        return "0+unknown"


class InferenceServer:
    """One grpc.aio server with the inference, health and reflection services."""

    def __init__(self, settings: Settings, worker: int | None = None) -> None:
        self.settings = settings
        self.worker = worker
        self.health = Health()
        self.repository = Repository(
            settings.model_repository,
            # Pipelines resolve their models through the repository, once it exists.
            Versions(OnnxVersions(settings.workers), PipelineVersions(lambda: self.repository)),
            on_change=self._model_changed,
        )
        self.dataplane = DataPlane(self.repository, ServerInfo(settings.server_name, _version()))
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 1),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.dataplane, settings.max_input_elements), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = 0

    def _model_changed(self, name: str, ready: bool) -> None:
        self.health.set(name, ready)
        self.health.set("", self.dataplane.ready())

    async def start(self) -> int:
        """Listen first (so liveness answers during loading), then load every model."""
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        self.port = self.server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"could not bind the gRPC port at {address}")
        self.health.set(LIVENESS, True)
        self.health.set("", False)
        await self.server.start()
        self.health.set(SERVICE_NAME, True)
        await self.repository.load_all()
        self.health.set("", self.dataplane.ready())  # from now on, "" follows ServerReady
        log.info(
            "listening",
            extra={
                # Under --workers the parent announces "listening" once all workers do.
                "event": "listening" if self.worker is None else "worker_listening",
                "worker": self.worker,
                "grpc_port": self.port,
                "grpc_address": f"{self.settings.host}:{self.port}",
                "models": [v.name + "/" + str(v.version) for v in self.repository.loaded()],
            },
        )
        return self.port

    async def stop(self) -> None:
        """Graceful shutdown, step by step."""
        log.info("shutting down", extra={"event": "stopping"})
        self.dataplane.live = False
        await self.health.shutdown(keep=LIVENESS)  # mark not serving
        await self.repository.close()  # drain batchers: queued requests leave now
        await self.server.stop(self.settings.shutdown_grace_s)  # stop accepting; finish RPCs
        log.info("stopped", extra={"event": "stopped"})


async def run(
    settings: Settings,
    on_ready: Callable[[int], None] = lambda port: None,
    worker: int | None = None,
) -> None:
    server = InferenceServer(settings, worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    on_ready(await server.start())
    await stop.wait()
    await server.stop()
