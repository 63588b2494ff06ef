"""grpc.health.v1 wiring. The services and what they mean:

""                               readiness: every model the server is expected to
                                 serve is ready (Kubernetes readiness, ServerReady)
inference.GRPCInferenceService   accepting requests: SERVING from the end of start-up
                                 loading (the "listening" line) until shutdown begins,
                                 whatever the models' states (the gateway's upstream
                                 health check)
live                             the process is up: SERVING until it exits, through
                                 loading and draining (Kubernetes liveness)
<model name>                     that model has a ready version
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health, health_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class _Servicer(health.aio.HealthServicer):
    """grpc_health's servicer, whose Watch streams can be ended: they never finish on
    their own, so each one would hold a graceful shutdown for its whole grace."""

    def __init__(self) -> None:
        super().__init__()
        self._watches: set[asyncio.Task[Any]] = set()
        self._ended = False

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        if self._ended:
            return
        task = asyncio.current_task()
        if task is None:  # a handler always runs in a task; nothing to end otherwise
            return await super().Watch(request, context)
        self._watches.add(task)
        try:
            await super().Watch(request, context)
        except asyncio.CancelledError:
            if not self._ended:  # the client went away
                raise
            # The last word, which the loop above may not have sent yet.
            status = self._server_status.get(request.service, SERVICE_UNKNOWN)
            await context.write(health_pb2.HealthCheckResponse(status=status))
        finally:
            self._watches.discard(task)

    def end_watches(self) -> None:
        """End every Watch stream with OK; a later one ends at once."""
        self._ended = True
        for task in self._watches:
            task.cancel()


class Health:
    def __init__(self) -> None:
        self.servicer = _Servicer()
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

    def end_watches(self) -> None:
        """End the Watch streams, once watchers have seen NOT_SERVING: the server is about
        to wait for its admitted RPCs to finish, and these never would."""
        self.servicer.end_watches()
