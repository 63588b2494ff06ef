"""Dynamic batching: one `Batcher` per loaded model version.

Requests whose non-batch dimensions match are concatenated on axis 0, executed in one
`run`, and the outputs are split back to their requests as views. With `padding`
(sequence models), requests whose lengths on axis 1 fall in the same bucket share a batch:
their padded inputs are filled out to the batch's longest, and the padded outputs are cut
back to each request's own length.

Policy: whenever an execution slot is free and the queue holds requests, a batch leaves
at the end of the current event-loop iteration (so the requests that arrived together
leave together), and low load adds no latency. While every slot is busy, requests accumulate and
batches grow with load. `max_queue_delay_us` bounds how long a partial batch may wait
for more, and `preferred_batch_sizes` lets a batch leave early at a size the model likes.

One clock: every decision reads the event loop's clock, and the delay timer is set on
that clock with `call_at`. uvloop keeps timers in whole milliseconds, so a timer may fire
a fraction of a millisecond before its due time by the clock; a fired timer therefore
counts as its due time having come (`_reached`), and a wait never re-arms in a spin.

Backpressure: the queue holds at most `max_queue_size` requests; one more is refused at
once with QueueFull, never parked. A request whose future is cancelled (the client went
away) or whose deadline passed while queued is dropped before compute.

Execution runs on `instances` worker threads (ONNX Runtime releases the GIL), or, with
`inline`, on the event loop itself: for models whose largest batch takes microseconds,
the thread hop (about 0.1 ms of wake-ups and GIL hand-offs) costs more than the model.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from server.core.errors import InvalidRequest, ModelUnavailable, QueueFull, RequestExpired
from server.core.inference import Plan
from server.core.model_config import BatchingConfig, Padding
from server.core.models import Outputs
from server.core.observers import BatchObserver
from server.core.statistics import BatcherStatistics, ModelStats

log = logging.getLogger(__name__)


class Runner(Protocol):
    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Outputs: ...


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Outputs]
    feeds: Mapping[str, np.ndarray]
    outputs: tuple[str, ...]
    rows: int  # batch dimension size; 0 for models without one
    key: object  # requests with equal keys can share a batch
    enqueued: float  # on the loop's clock, for decisions
    deadline: float | None
    arrived_ns: int  # perf_counter_ns, for the queue statistics
    length: int = 0  # its padded inputs' length on axis 1, when the model pads
    dispatched_ns: int = 0  # when its (last) batch left the queue
    solo: bool = False  # retried alone after its batch failed
    trace: object | None = None  # the observer's token for the caller's trace


def batch_cut(
    rows: Sequence[int],
    full: bool,
    preferred: Collection[int],
    waited: float,
    max_delay: float,
) -> int | None:
    """How many of the compatible requests at the head of the queue leave now, or None to wait.

    `rows` are their batch sizes, already capped so that they fit in one batch; `full` says
    that the batch cannot grow any more. `waited` is the age of the oldest of them.
    """
    if full:
        return len(rows)
    if preferred:
        total, best = 0, 0
        for index, size in enumerate(rows, 1):
            total += size
            if total in preferred:
                best = index
        if best:
            return best
    if waited >= max_delay:
        return len(rows)
    return None


class Batcher:
    """Queues requests for one model version and runs them in batches on `instances` slots."""

    def __init__(
        self,
        model: str,
        runner: Runner,
        max_batch_size: int,
        config: BatchingConfig,
        instances: int,
        stats: ModelStats,
        inline: bool = False,
        observer: BatchObserver | None = None,
    ) -> None:
        self._model = model
        self._observer = observer
        self._runner = runner
        self._max_batch_size = max_batch_size
        self._max_delay = config.max_queue_delay_us / 1e6
        self._preferred = frozenset(config.preferred_batch_sizes)
        self._max_queue_size = config.max_queue_size
        padding = config.padding or Padding({}, ())
        self._pad_values = dict(padding.inputs)
        self._pad_outputs = frozenset(padding.outputs)
        self._bucket = padding.bucket
        self._slots = instances
        self._free = instances
        self._stats = stats
        self._loop: asyncio.AbstractEventLoop | None = None  # the first enqueue's loop
        self._reached = 0.0  # the latest due time a fired timer vouched for
        self._queue: deque[_Pending] = deque()
        self._running: dict[int, list[_Pending]] = {}  # batches in the threads, by id
        self._inline = inline
        self._executor = (
            None if inline else ThreadPoolExecutor(instances, thread_name_prefix=f"run-{model}")
        )
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    def statistics(self) -> BatcherStatistics:
        return BatcherStatistics(len(self._queue), self._slots - self._free, self._slots)

    def enqueue(
        self, plan: Plan, deadline: float | None = None, eager: bool = False
    ) -> asyncio.Future[Outputs]:
        """Queue one validated request; the future resolves to its outputs. Callers that
        handle many requests at once (streams) wait on it without a task per request.

        `deadline` is on the event loop's clock. `eager`: an inline model that is idle
        runs the request now, so a lone unary call never suspends its handler. Streams
        leave it off: their requests arrive together and should share a batch."""
        if self._closed:
            raise ModelUnavailable(f"model '{self._model}' is unloading", model=self._model)
        if self._max_queue_size and len(self._queue) >= self._max_queue_size:
            # Clients that went away still sit in the queue; only live requests count.
            self._queue = deque(p for p in self._queue if not p.future.done())
        if self._max_queue_size and len(self._queue) >= self._max_queue_size:
            raise QueueFull(
                f"model '{self._model}' has {len(self._queue)} queued requests, the "
                f"max_queue_size; retry later",
                model=self._model,
            )
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        if (
            eager
            and self._executor is None
            and self._free == self._slots
            and not self._queue
            and self._observer is None
            and not self._pad_values
            and (deadline is None or deadline > loop.time())
        ):
            self._run_alone(plan, future)  # the batch of one that the queue would form
            return future
        feeds = plan.feeds
        if self._pad_values:
            key, length = self._padded_key(plan)
        else:
            key = (plan.outputs, tuple((name, array.shape[1:]) for name, array in feeds.items()))
            length = 0
        self._queue.append(
            _Pending(
                future,
                feeds,
                plan.outputs,
                plan.rows,
                key,
                self._now(),
                deadline,
                time.perf_counter_ns(),
                length,
                trace=None if self._observer is None else self._observer.capture(),
            )
        )
        self._idle.clear()
        if eager and self._executor is None and self._free and len(self._queue) == 1:
            self._dispatch()  # inline and idle: run now and hand back a finished future
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return future

    def _padded_key(self, plan: Plan) -> tuple[object, int]:
        """The batch key of a padding model's request, with its padded length bucketed."""
        lengths = {
            name: array.shape[1] for name, array in plan.feeds.items() if name in self._pad_values
        }
        if len(set(lengths.values())) > 1:
            raise InvalidRequest(
                f"the padded inputs of model '{self._model}' must have one length on axis 1 "
                f"(dynamic_batching.padding), got {lengths}",
                model=self._model,
            )
        length = next(iter(lengths.values()), 0)
        bucket = -(-length // self._bucket)
        shapes = tuple(
            (name, (bucket, *array.shape[2:]) if name in lengths else array.shape[1:])
            for name, array in plan.feeds.items()
        )
        return (plan.outputs, shapes), length

    def _run_alone(self, plan: Plan, future: asyncio.Future[Outputs]) -> None:
        """An idle inline model runs a lone unary request with no queue entry, timer or
        batch bookkeeping: the result, and the statistics, are those of a batch of one."""
        try:
            results, infer_ns = _timed_run(self._runner, plan.feeds, plan.outputs)
        except Exception as exc:
            if not isinstance(exc, InvalidRequest):
                log.error("request to model '%s' failed", self._model, exc_info=exc)
            future.set_exception(exc)
            return
        future.set_result(results)
        self._stats.record_execution(plan.rows or 1, (0,), 0, infer_ns, 0)

    def _now(self) -> float:
        assert self._loop is not None
        return max(self._loop.time(), self._reached)

    async def close(self) -> None:
        """Refuse new requests, let queued and running ones finish, then stop the threads."""
        self._closed = True
        self._dispatch()
        await self._idle.wait()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def abort(self, error: Exception) -> None:
        """Refuse new requests and fail the queued and running ones with `error` now; the
        runs themselves finish (or are terminated) in their threads."""
        self._closed = True
        for pending in itertools.chain(self._queue, *self._running.values()):
            if not pending.future.done():
                pending.future.set_exception(error)
        self._queue.clear()

    def _dispatch(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._free and self._queue:
            batch = self._next_batch()
            if batch is None:
                break
            if batch:
                self._execute(batch)
        if not self._queue and self._free == self._slots:
            self._idle.set()

    def _on_timer(self, due: float) -> None:
        self._timer = None
        self._reached = max(self._reached, due)
        self._dispatch()

    def _next_batch(self) -> list[_Pending] | None:
        """Take the next batch off the queue; [] if only dead requests were dropped."""
        now = self._now()
        head = self._queue[0]
        if self._max_batch_size == 0 or head.solo:
            self._queue.popleft()
            return [head] if self._alive(head, now) else []
        chosen: list[_Pending] = []
        rest: deque[_Pending] = deque()
        total = 0
        full = False
        for pending in self._queue:
            if full or pending.key != head.key:
                rest.append(pending)
            elif not self._alive(pending, now):
                continue
            elif total + pending.rows > self._max_batch_size:
                full = True
                rest.append(pending)
            else:
                chosen.append(pending)
                total += pending.rows
                full = total == self._max_batch_size
        if not chosen:
            self._queue = rest
            return []
        due = chosen[0].enqueued + self._max_delay
        # Compare the clock with the due time itself: at now == due, the instant the
        # timer was set for, `now - enqueued` can fall short of the delay in floating point.
        waited = self._max_delay if now >= due else now - chosen[0].enqueued
        cut = batch_cut(
            [p.rows for p in chosen], full or self._closed, self._preferred, waited, self._max_delay
        )
        if cut is None:
            self._queue = deque(chosen) + rest if rest else deque(chosen)
            assert self._loop is not None
            self._timer = self._loop.call_at(due, self._on_timer, due)
            return None
        leftover = chosen[cut:]
        self._queue = deque(leftover) + rest if leftover else rest
        return chosen[:cut]

    def _alive(self, pending: _Pending, now: float) -> bool:
        if pending.future.done():  # cancelled by the client
            return False
        if pending.deadline is not None and pending.deadline <= now:
            pending.future.set_exception(
                RequestExpired(
                    f"deadline passed while queued for model '{self._model}'", model=self._model
                )
            )
            return False
        return True

    def _execute(self, batch: list[_Pending]) -> None:
        self._free -= 1
        start_ns = time.perf_counter_ns()
        for pending in batch:
            pending.dispatched_ns = start_ns
        if len(batch) == 1:
            feeds = batch[0].feeds
        elif self._pad_values and _uneven(batch):
            feeds = self._padded_feeds(batch)
        else:
            feeds = {
                name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds
            }
        input_ns = time.perf_counter_ns() - start_ns
        if self._executor is None:
            try:
                outcome = _timed_run(self._runner, feeds, batch[0].outputs)
            except Exception as exc:
                self._finish(batch, input_ns, None, exc)
            else:
                self._finish(batch, input_ns, outcome, None)
            return
        assert self._loop is not None
        self._running[id(batch)] = batch
        future = self._loop.run_in_executor(
            self._executor, _timed_run, self._runner, feeds, batch[0].outputs
        )
        future.add_done_callback(lambda done: self._completed(batch, input_ns, done))

    def _padded_feeds(self, batch: list[_Pending]) -> dict[str, np.ndarray]:
        """The batch's inputs, the padded ones filled out to the longest request's length."""
        longest = max(p.length for p in batch)
        rows = sum(p.rows for p in batch)
        feeds = {}
        for name, first in batch[0].feeds.items():
            if name not in self._pad_values:
                feeds[name] = np.concatenate([p.feeds[name] for p in batch])
                continue
            joined = np.full(
                (rows, longest, *first.shape[2:]), self._pad_values[name], dtype=first.dtype
            )
            offset = 0
            for pending in batch:
                joined[offset : offset + pending.rows, : pending.length] = pending.feeds[name]
                offset += pending.rows
            feeds[name] = joined
        return feeds

    def _completed(
        self, batch: list[_Pending], input_ns: int, done: asyncio.Future[tuple[Outputs, int]]
    ) -> None:
        """A worker thread finished: deliver, then refill the free slot."""
        del self._running[id(batch)]
        error = done.exception()
        self._finish(batch, input_ns, None if error else done.result(), error)
        self._dispatch()

    def _finish(
        self,
        batch: list[_Pending],
        input_ns: int,
        outcome: tuple[Outputs, int] | None,
        error: BaseException | None,
    ) -> None:
        self._free += 1
        if error is not None and all(p.future.done() for p in batch):
            return  # nobody waits for it: its clients left, or a shutdown aborted the run
        if self._observer is not None:
            self._observer.executed(
                [p.trace for p in batch],
                [p.arrived_ns for p in batch],
                batch[0].dispatched_ns,
                time.perf_counter_ns(),
                sum(p.rows for p in batch) or 1,
                error,
            )
        if error is not None and len(batch) > 1:
            # One request's values may be what the model rejects: rerun each alone, at the
            # head of the queue, so that only the culprit fails (and logs the traceback).
            log.warning(
                "batch of model '%s' failed (%s); retrying its requests one by one",
                self._model,
                error,
            )
            for pending in reversed(batch):
                pending.key, pending.solo = object(), True
                self._queue.appendleft(pending)
            return
        if error is not None:
            if not isinstance(error, InvalidRequest):
                log.error("request to model '%s' failed", self._model, exc_info=error)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        assert outcome is not None
        results, infer_ns = outcome
        start_ns = time.perf_counter_ns()
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(results)
        else:
            # Outputs named in padding.outputs go back at each request's own length, when
            # the batch was padded; every other split is a plain row slice.
            trims = (
                [name in self._pad_outputs for name in batch[0].outputs]
                if self._pad_outputs and _uneven(batch)
                else None
            )
            offset = 0
            for pending in batch:
                end = offset + pending.rows
                if not pending.future.done():
                    if trims is None:
                        pending.future.set_result([r[offset:end] for r in results])
                    else:
                        pending.future.set_result(
                            [
                                r[offset:end, : pending.length] if trim else r[offset:end]
                                for r, trim in zip(results, trims, strict=True)
                            ]
                        )
                offset = end
        output_ns = time.perf_counter_ns() - start_ns
        rows = sum(p.rows for p in batch) or 1
        queue_ns = [p.dispatched_ns - p.arrived_ns for p in batch]
        self._stats.record_execution(rows, queue_ns, input_ns, infer_ns, output_ns)


def _timed_run(
    runner: Runner, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]
) -> tuple[Outputs, int]:
    start = time.perf_counter_ns()
    results = runner.run(feeds, outputs)
    return results, time.perf_counter_ns() - start


def _uneven(batch: list[_Pending]) -> bool:
    """Whether the batch's requests differ in padded length (and so were padded)."""
    first = batch[0].length
    return any(p.length != first for p in batch)
