"""The batcher's one tracing seam: what a tracer needs to see of queueing and execution.

The core names the hook; `server.telemetry.traces` implements it with OpenTelemetry; the
batcher calls it only when one is given, so an untraced server pays one `is None` check
per request and per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class BatchObserver(Protocol):
    def capture(self) -> object | None:
        """Called as a request is queued, in its caller's context: a token for the caller's
        trace, or None when the caller is not traced."""
        ...

    def executed(
        self,
        tokens: Sequence[object | None],
        arrived_ns: Sequence[int],
        dispatched_ns: int,
        finished_ns: int,
        rows: int,
        error: BaseException | None,
    ) -> None:
        """One execution ended; one token and arrival time (perf_counter_ns) per request."""
        ...
