"""Shared fixtures for the in-process unit tests: event loops, tiny ONNX repositories and a
real server.

Unit tests may import `server` and the generated `inference` package, but never
`tritonclient`: its generated modules register the same message names in the default
descriptor pool as ours do.

Event loops. pytest-asyncio asks `pytest_asyncio_loop_factories` (below) which loops an
async test runs on, and runs it once on each. A module lists its loops in a module-level
`LOOPS` tuple of names from `LOOP_FACTORIES` (without one: the standard asyncio loop). A
test marked `@pytest.mark.asyncio(loop_factories=[...])` picks its loops by name from all
of `LOOP_FACTORIES` instead: the batching tests that move the clock run on "fake-clock"
only, since nothing can move uvloop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import onnx
import pytest
import pytest_asyncio
import uvloop
from onnx import TensorProto, helper

from inference import grpc_service_pb2_grpc as pb_grpc
from server.app import InferenceServer
from server.settings import Settings

# onnx 1.23 writes IR version 14 by default, which this ONNX Runtime refuses.
IR_VERSION = 9
OPSET = 17

# The tiny model frees its one slot within microseconds, so with no queue delay a burst of
# in-process unary calls sometimes formed almost no batches (991 executions for 1,000
# requests); 2 ms lets every burst batch up, so "batching happened" is not left to chance.
DOUBLE_CONFIG = """\
max_batch_size: 16
instances: 1
dynamic_batching:
  max_queue_delay_us: 2000
  max_queue_size: 4096
"""

# --- event loops -----------------------------------------------------------------------------

# How long the fake-clock loop may block in select, in real seconds, however far off its
# next timer is on the virtual clock.
REAL_SELECT_CAP = 0.005


class _CappedSelector(selectors.DefaultSelector):
    """The platform's selector, but a wait for a timer never blocks longer than the cap.

    The loop computes its select timeout from the virtual clock, so a timer due in a
    virtual hour would otherwise block for a real hour. Threads still wake the loop at
    once through its self-pipe (`call_soon_threadsafe`), and an indefinite wait (no
    timer at all) stays indefinite."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return super().select(None if timeout is None else min(timeout, REAL_SELECT_CAP))


class FakeClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock only moves on `advance`.

    `time()` is virtual: timers (`call_at`, `call_later`, `asyncio.timeout`) fire when a
    test moves the clock past them, never on their own. Call `advance` from the loop's
    own thread, that is from the test's coroutine.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        super().__init__(_CappedSelector())

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"the clock cannot go back {-seconds} s")
        self._now += seconds


class TimerCountingUvloop(uvloop.Loop):  # type: ignore[misc]
    """uvloop, recording the callback of every `call_at` and `call_later` it is asked for.

    uvloop's own `call_at` calls `self.call_later`, which the override would see as a
    second timer; `_in_call_at` keeps that from counting twice."""

    def __init__(self) -> None:
        super().__init__()
        self.timer_callbacks: list[Callable[..., Any]] = []
        self._in_call_at = False

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        self.timer_callbacks.append(callback)
        self._in_call_at = True
        try:
            return super().call_at(when, callback, *args, **kw)
        finally:
            self._in_call_at = False

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if not self._in_call_at:
            self.timer_callbacks.append(callback)
        return super().call_later(delay, callback, *args, **kw)

    def timers_armed_by(self, owner: object) -> int:
        """How many timers were set for methods of `owner`."""
        return sum(getattr(cb, "__self__", None) is owner for cb in self.timer_callbacks)


LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "fake-clock": FakeClockLoop,
    "uvloop": uvloop.new_event_loop,
    "uvloop-timer-count": TimerCountingUvloop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    marker = item.get_closest_marker("asyncio")
    if marker is not None and "loop_factories" in marker.kwargs:
        return LOOP_FACTORIES  # the marker picks by name
    module = getattr(item, "module", None)
    names: tuple[str, ...] = getattr(module, "LOOPS", ("asyncio",))
    return {name: LOOP_FACTORIES[name] for name in names}


@dataclass(frozen=True)
class LoopClock:
    """The running fake-clock loop's time, as a test reads and moves it."""

    loop: FakeClockLoop

    @property
    def now(self) -> float:
        return self.loop.time()

    def advance(self, seconds: float) -> None:
        self.loop.advance(seconds)


@pytest_asyncio.fixture
async def clock() -> LoopClock:
    """A handle on the virtual clock of the loop the test runs on."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, FakeClockLoop):
        pytest.fail(
            f"the clock fixture needs the fake-clock loop, not {type(loop).__name__}; mark "
            "the test @pytest.mark.asyncio(loop_factories=['fake-clock'])"
        )
    return LoopClock(loop)


# --- models and servers ----------------------------------------------------------------------


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", OPSET)]
    )
    onnx.checker.check_model(model)
    return model


def affine_model(width: int = 4) -> onnx.ModelProto:
    """y = x * 2 + 1 on FP32 inputs of shape [batch, width], batch dynamic."""
    return _model(
        helper.make_graph(
            [
                helper.make_node("Mul", ["x", "two"], ["twice"]),
                helper.make_node("Add", ["twice", "one"], ["y"]),
            ],
            "affine",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
            initializer=[
                helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
                helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            ],
        )
    )


def text_echo_model() -> onnx.ModelProto:
    """out = text on ONNX string tensors of shape [batch, 1]: a BYTES model."""
    return _model(
        helper.make_graph(
            [helper.make_node("Identity", ["text"], ["out"])],
            "echo",
            [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 1])],
            [helper.make_tensor_value_info("out", TensorProto.STRING, ["batch", 1])],
        )
    )


def write_model(
    root: Path, name: str, model: onnx.ModelProto, config: str, version: int = 1
) -> Path:
    """Write `root/name/config.yaml` and `root/name/version/model.onnx`."""
    model_dir = root / name
    (model_dir / str(version)).mkdir(parents=True)
    (model_dir / "config.yaml").write_text(config)
    onnx.save(model, model_dir / str(version) / "model.onnx")
    return model_dir


@pytest.fixture
def double_repository(tmp_path: Path) -> Path:
    """A repository with one model, `double`: y = x * 2 + 1, x of shape [batch, 4]."""
    root = tmp_path / "models"
    write_model(root, "double", affine_model(), DOUBLE_CONFIG)
    return root


@contextlib.asynccontextmanager
async def serving(root: Path) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    """A stub over a ready channel to the real grpc.aio server, started in process on a
    free port and serving the repository at `root`."""
    settings = Settings(model_repository=root, host="127.0.0.1", grpc_port=0, shutdown_grace_s=1.0)
    server = InferenceServer(settings)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    try:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop()


@pytest_asyncio.fixture
async def stub(double_repository: Path) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    """A stub to a real server serving `double_repository`."""
    async with serving(double_repository) as connected:
        yield connected


@pytest_asyncio.fixture
async def text_stub(tmp_path: Path) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    """A stub to a real server serving one BYTES model, `echo`: out = text, [batch, 1]."""
    root = tmp_path / "text-models"
    write_model(root, "echo", text_echo_model(), "max_batch_size: 8\n")
    async with serving(root) as connected:
        yield connected
