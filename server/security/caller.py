"""The caller of the RPC being served, in a context variable.

The transport's interceptor sets it when it admits a call; grpc.aio serves each RPC in a
task of its own, so the value belongs to that RPC (and to the tasks it starts, which copy
its context). The data plane's authorizer reads it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from server.security.bucket import TokenBucket
from server.security.principal import Principal


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    # Charged once per inference request by the authorizer: set on streams, whose
    # messages are requests; None where the interceptor charged the whole call.
    per_request: TokenBucket | None = None


CALLER: ContextVar[Caller] = ContextVar("caller")
