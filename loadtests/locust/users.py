"""The user classes, one per face of the server, each a real client of it.

- GrpcUser: unary ModelInfer with grpcio (tritonclient's generated stubs), one channel
  and connection per user, cooperative under locust's gevent through
  `grpc.experimental.gevent.init_gevent()` (called from locust's init event, in every
  process, before any channel exists).
- GrpcStreamUser: ModelStreamInfer, one bidirectional stream per user keeping
  `--stream-inflight` requests in flight; replies are matched by id, timed from their send;
  a reply not in within `--request-timeout` fails as DEADLINE_EXCEEDED.
- RestUser: V2 REST through the gateway (`--host`), JSON or binary tensors.
- GrpcWebUser: gRPC-web (binary) through the gateway (`--host`).

Every request fires locust's request event with its type (the face), the model as its
name, the response time, the response length and an exception when it failed: a status
that is not OK, or an answer that fails its model's check (samples.py). A reply that
cannot be decoded fails the same way (`Workload.judge`), never as a user exception.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.queue
import grpc
import grpc.experimental.gevent
from locust import FastHttpUser, User, constant_throughput, events, task
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from loadtests.locust import codec_grpc, codec_rest, grpc_web
from loadtests.locust.options import LoadOptions
from loadtests.locust.samples import Sample, Workload, workload

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # One connection per user, as separate clients have: channels to one target would
    # otherwise share the process's subchannel, hence one TCP connection.
    ("grpc.use_local_subchannel_pool", 1),
]


class StatusError(Exception):
    """A call ended with a gRPC status other than OK (message kept short and stable, since
    locust groups failures by their text)."""

    def __init__(self, code: grpc.StatusCode | str, details: str) -> None:
        name = code.name if isinstance(code, grpc.StatusCode) else code
        super().__init__(f"{name}: {details}")


@events.init.add_listener
def _grpc_under_gevent(**_: Any) -> None:
    grpc.experimental.gevent.init_gevent()


class Models:
    """One user's workloads, and which to use next (weighted by --models)."""

    def __init__(self, options: LoadOptions) -> None:
        self._rng = random.Random()
        self._workloads = [
            workload(name, self._rng, options.tokenizer) for name, _ in options.models
        ]
        self._weights = [weight for _, weight in options.models]

    def pick(self) -> Workload:
        if len(self._workloads) == 1:
            return self._workloads[0]
        return self._rng.choices(self._workloads, self._weights)[0]


def _wait_time(user: Any) -> float:
    wait: Callable[[Any], float] | None = user.wait
    return 0.0 if wait is None else wait(user)


class _Face:
    """What every user class shares: options, workloads, pacing."""

    request_type = ""
    options: LoadOptions
    models: Models
    wait: Callable[[Any], float] | None = None

    def setup(self, parsed: Any) -> None:
        self.options = LoadOptions.of(parsed)
        self.models = Models(self.options)
        if self.options.user_rate > 0:
            self.wait = constant_throughput(self.options.user_rate)

    def fire(
        self, sample: Sample, seconds: float, length: int, exception: Exception | None
    ) -> None:
        """One request event; `seconds` is the call's time, without the answer's check."""
        environment = self.environment  # type: ignore[attr-defined]
        environment.events.request.fire(
            request_type=self.request_type,
            name=sample.model,
            response_time=seconds * 1000,
            response_length=length,
            exception=exception,
            context={},
        )


class GrpcUser(_Face, User):
    """Unary ModelInfer on the gRPC port (`--grpc-target`)."""

    request_type = "gRPC"
    wait_time = _wait_time

    def on_start(self) -> None:
        self.setup(self.environment.parsed_options)
        self.channel = grpc.insecure_channel(self.options.grpc_target, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def infer(self) -> None:
        chosen = self.models.pick()
        sample = chosen.sample(self.options.batch_size)
        message = codec_grpc.request(
            sample, self.options.contents == "raw", self.options.model_version
        )
        started = time.perf_counter()
        try:
            response = self.stub.ModelInfer(message, timeout=self.options.timeout_s)
        except grpc.RpcError as exc:
            error = StatusError(exc.code(), exc.details() or "")  # type: ignore[attr-defined]
            self.fire(sample, time.perf_counter() - started, 0, error)
            return
        seconds = time.perf_counter() - started
        exception = chosen.judge(sample, lambda: codec_grpc.outputs(response))
        self.fire(sample, seconds, response.ByteSize(), exception)


class GrpcStreamUser(_Face, User):
    """ModelStreamInfer on the gRPC port: one stream per user, `--stream-inflight` requests
    in flight on it. Each in-flight slot is its own client (own workloads, so silero_vad's
    state stays per audio stream); a slot sends its next request once its reply is in, or
    once `--request-timeout` has passed without one (a DEADLINE_EXCEEDED failure; a reply
    that comes later is dropped)."""

    request_type = "gRPC-stream"
    wait_time = _wait_time

    def on_start(self) -> None:
        self.setup(self.environment.parsed_options)
        self.channel = grpc.insecure_channel(self.options.grpc_target, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self._slots = [self.models] + [
            Models(self.options) for _ in range(self.options.stream_inflight - 1)
        ]
        self._free: gevent.queue.Queue[int] = gevent.queue.Queue()
        for slot in range(len(self._slots)):
            self._free.put(slot)
        self._ids = itertools.count()
        self._pending: dict[str, tuple[int, Workload, Sample, float]] = {}
        self._outbox: gevent.queue.Queue[pb.ModelInferRequest | None] | None = None
        self._receiver: gevent.Greenlet | None = None

    def on_stop(self) -> None:
        self._close_stream()
        self.channel.close()

    def _open_stream(self) -> None:
        outbox: gevent.queue.Queue[pb.ModelInferRequest | None] = gevent.queue.Queue()
        replies = self.stub.ModelStreamInfer(iter(outbox.get, None))
        self._outbox = outbox
        self._receiver = gevent.spawn(self._receive, replies)

    def _close_stream(self) -> None:
        if self._outbox is not None:
            self._outbox.put(None)
            self._outbox = None
        if self._receiver is not None:
            self._receiver.kill(block=False)
            self._receiver = None

    @task
    def send(self) -> None:
        slot = self._next_slot()
        if self._outbox is None:
            self._open_stream()
        assert self._outbox is not None
        chosen = self._slots[slot].pick()
        sample = chosen.sample(self.options.batch_size)
        request_id = str(next(self._ids))
        message = codec_grpc.request(
            sample, self.options.contents == "raw", self.options.model_version, request_id
        )
        self._pending[request_id] = (slot, chosen, sample, time.perf_counter())
        self._outbox.put(message)

    def _next_slot(self) -> int:
        """A free slot. While every slot has a request in flight, this waits until the
        oldest one's deadline at most, then fails every request past its deadline."""
        while True:
            wait = None
            if self._pending:  # in send order, so the first is the oldest
                _, _, _, started = next(iter(self._pending.values()))
                wait = max(0.0, started + self.options.timeout_s - time.perf_counter())
            try:
                return self._free.get(timeout=wait)
            except gevent.queue.Empty:
                self._expire()

    def _expire(self) -> None:
        now = time.perf_counter()
        error = StatusError(
            "DEADLINE_EXCEEDED", f"no reply within {self.options.timeout_s:g} s on the stream"
        )
        for request_id, (slot, _, sample, started) in list(self._pending.items()):
            if now - started < self.options.timeout_s:
                break
            del self._pending[request_id]
            self.fire(sample, now - started, 0, error)
            self._free.put(slot)

    def _receive(self, replies: Any) -> None:
        """Runs beside the user's task: one event per reply; a broken stream fails every
        request still in flight, and the next send opens a new stream."""
        try:
            for reply in replies:
                self._answer(reply)
        except grpc.RpcError as exc:
            error = StatusError(exc.code(), exc.details() or "")  # type: ignore[attr-defined]
        else:
            error = StatusError("STREAM_CLOSED", "the server ended the stream")
        # Retire this stream first, so that a freed slot's next send opens a new one.
        if self._outbox is not None:
            self._outbox.put(None)
        self._outbox = None
        self._receiver = None
        now = time.perf_counter()
        for request_id in list(self._pending):
            slot, _, sample, started = self._pending.pop(request_id)
            self.fire(sample, now - started, 0, error)
            self._free.put(slot)

    def _answer(self, reply: pb.ModelStreamInferResponse) -> None:
        received = time.perf_counter()
        pending = self._pending.pop(reply.infer_response.id, None)
        if pending is None:
            return  # not ours: a reply to a request of a stream that already failed
        slot, chosen, sample, started = pending
        seconds = received - started
        exception: Exception | None = None
        if reply.error_message:
            exception = StatusError("STREAM_ERROR", reply.error_message)
        else:
            exception = chosen.judge(sample, lambda: codec_grpc.outputs(reply.infer_response))
        self.fire(sample, seconds, reply.ByteSize(), exception)
        self._free.put(slot)


class RestUser(_Face, FastHttpUser):
    """V2 REST inference through the gateway (`--host`): JSON (`--contents typed`) or
    Triton's binary tensors (`--contents raw`)."""

    abstract = False
    request_type = "REST"
    wait_time = _wait_time

    def on_start(self) -> None:
        self.setup(self.environment.parsed_options)

    @task
    def infer(self) -> None:
        chosen = self.models.pick()
        sample = chosen.sample(self.options.batch_size)
        body, headers = codec_rest.request(sample, binary=self.options.contents == "raw")
        with self.client.post(
            codec_rest.path(sample.model, self.options.model_version),
            data=body,
            headers=headers,
            name=sample.model,
            catch_response=True,
        ) as response:
            response.request_meta["request_type"] = self.request_type
            content = response.content or b""
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {codec_rest.error(content)}")
                return
            headers = response.headers or {}
            wrong = chosen.judge(sample, lambda: codec_rest.outputs(sample.model, content, headers))
            if wrong is not None:
                response.failure(wrong)


class GrpcWebUser(_Face, FastHttpUser):
    """gRPC-web ModelInfer through the gateway (`--host`), binary frames over HTTP/1.1."""

    abstract = False
    request_type = "gRPC-web"
    wait_time = _wait_time

    def on_start(self) -> None:
        self.setup(self.environment.parsed_options)

    @task
    def infer(self) -> None:
        chosen = self.models.pick()
        sample = chosen.sample(self.options.batch_size)
        message = codec_grpc.request(
            sample, self.options.contents == "raw", self.options.model_version
        )
        with self.client.post(
            MODEL_INFER,
            data=grpc_web.frame(message.SerializeToString()),
            headers=grpc_web.HEADERS,
            name=sample.model,
            catch_response=True,
        ) as response:
            response.request_meta["request_type"] = self.request_type
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                reply = grpc_web.parse(response.content or b"", response.headers or {})
                if reply.status != 0:
                    raise StatusError(grpc_status_name(reply.status), reply.message)
                if len(reply.messages) != 1:
                    raise grpc_web.FramingError(f"{len(reply.messages)} messages, expected 1")
            except (StatusError, grpc_web.FramingError) as exc:
                response.failure(exc)
                return
            message = reply.messages[0]
            wrong = chosen.judge(
                sample, lambda: codec_grpc.outputs(pb.ModelInferResponse.FromString(message))
            )
            if wrong is not None:
                response.failure(wrong)


_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def grpc_status_name(status: int) -> str:
    return _STATUS_NAMES.get(status, f"STATUS_{status}")


USER_CLASSES: dict[str, type[_Face]] = {
    cls.__name__: cls for cls in (GrpcUser, GrpcStreamUser, RestUser, GrpcWebUser)
}
"""User class name -> class; each class's requests carry its `request_type`."""
