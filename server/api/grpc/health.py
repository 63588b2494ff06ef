"""grpc.health.v1 wiring. The services and what they mean:

""                               readiness: every model the server is expected to
                                 serve is ready (Kubernetes readiness, ServerReady)
inference.GRPCInferenceService   accepting requests: SERVING from listening until
                                 shutdown begins, whatever the models' states (the
                                 gateway's upstream health check)
live                             the process is up: SERVING until it exits, through
                                 loading and draining (Kubernetes liveness)
<model name>                     that model has a ready version
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self._tasks: set[asyncio.Task[None]] = set()
        self._statuses: set[str] = set()
        self._closed = False

    def set(self, service: str, serving: bool) -> None:
        """Record a status from synchronous code; it is published on the next loop turn.
        Ignored once shutdown has begun."""
        if self._closed:
            return
        self._statuses.add(service)
        task = asyncio.get_running_loop().create_task(
            self.servicer.set(service, SERVING if serving else NOT_SERVING)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self, keep: str) -> None:
        """Every service but `keep` NOT_SERVING, and no later change: the server is going
        away, but its process is still alive and finishing what it admitted."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._closed = True
        for service in list(self._statuses):
            if service != keep:
                await self.servicer.set(service, NOT_SERVING)
