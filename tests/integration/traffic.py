"""Client-side traffic for the lifecycle tests: steady load from threads, every outcome
recorded, and bounded waits on observable conditions.

Imported by test modules like processes.py (plain helpers, no fixtures). Clients are raw
stubs from tritonclient's generated modules; never the server's `inference` package.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from processes import ROOT
from sklearn.datasets import load_digits
from tritonclient.grpc import service_pb2, service_pb2_grpc

# A channel of its own per client: the local subchannel pool gives each one its own TCP
# connection, so that under --workers the kernel spreads them across the workers.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.02
) -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def first_done(calls: Sequence[grpc.Future], timeout: float) -> None:
    """Wait until any of the calls has finished."""
    finished = threading.Event()
    for call in calls:
        call.add_done_callback(lambda _: finished.set())
    if not finished.wait(timeout):
        raise AssertionError(f"no call finished within {timeout} s")


def all_done(calls: Sequence[grpc.Future], timeout: float) -> None:
    """Wait until every call has finished."""
    deadline = time.monotonic() + timeout
    for call in calls:
        try:
            call.exception(timeout=max(deadline - time.monotonic(), 0.0))
        except grpc.FutureTimeoutError:
            raise AssertionError(f"calls still running after {timeout} s") from None


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def raw_fp32_request(model: str, name: str, x: np.ndarray) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(np.ascontiguousarray(x, np.float32).tobytes())
    return request


def output(response: service_pb2.ModelInferResponse, name: str, dtype: type) -> np.ndarray:
    """One raw output of a response, as numpy in its declared shape."""
    for index, tensor in enumerate(response.outputs):
        if tensor.name == name:
            array = np.frombuffer(response.raw_output_contents[index], dtype)
            return array.reshape(tuple(tensor.shape))
    raise AssertionError(f"no output {name!r} in {[t.name for t in response.outputs]}")


@cache
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64 images, and digits version 2's labels and probabilities for them."""
    x = load_digits().data[:64].astype(np.float32)
    session = ort.InferenceSession(
        str(ROOT / "models" / "digits" / "2" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    label, probabilities = session.run(["label", "probabilities"], {"input": x})
    return x, label, probabilities


def digits_request(client: int, n: int) -> service_pb2.ModelInferRequest:
    """The n-th request of a client: one of 64 images, for digits version 2."""
    x = _digits()[0]
    request = raw_fp32_request("digits", "input", x[(client * 7 + n) % 64][None])
    request.model_version = "2"
    request.id = str((client * 7 + n) % 64)
    return request


def check_digits(
    request: service_pb2.ModelInferRequest, response: service_pb2.ModelInferResponse
) -> None:
    """Raises AssertionError unless the response is ONNX Runtime's answer to the request."""
    _, labels, probabilities = _digits()
    row = int(request.id)
    assert response.id == request.id
    assert output(response, "label", np.int64).tolist() == [labels[row]]
    np.testing.assert_allclose(
        output(response, "probabilities", np.float32), probabilities[row : row + 1], rtol=1e-5
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    client: int
    sent: float  # time.monotonic() just before the call
    done: float
    code: grpc.StatusCode
    details: str
    version: str = ""  # the version that answered, for successes


Make = Callable[[int, int], service_pb2.ModelInferRequest]
Check = Callable[[service_pb2.ModelInferRequest, service_pb2.ModelInferResponse], None]


@dataclass
class SteadyLoad:
    """`clients` threads, each on its own connection, sending one request after another
    until `stop()`. `make(client, n)` builds the n-th request of a client; `check` raises
    AssertionError when a successful response is wrong (the outcome then records the
    failure as INTERNAL with the assertion's text, which no test accepts)."""

    address: str
    make: Make
    check: Check
    clients: int = 4
    timeout_s: float = 30.0
    channel_options: Sequence[tuple[str, object]] = tuple(OWN_CONNECTION)
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> SteadyLoad:
        for client in range(self.clients):
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
            assert not thread.is_alive(), "a load thread did not finish"

    def _run(self, client: int) -> None:
        with grpc.insecure_channel(self.address, options=self.channel_options) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            n = 0
            while not self._stop.is_set():
                request = self.make(client, n)
                n += 1
                sent = time.monotonic()
                try:
                    response = stub.ModelInfer(request, timeout=self.timeout_s)
                except grpc.RpcError as error:
                    outcome = Outcome(
                        client,
                        sent,
                        time.monotonic(),
                        error.code(),  # type: ignore[attr-defined]
                        str(error.details()),  # type: ignore[attr-defined]
                    )
                else:
                    try:
                        self.check(request, response)
                    except AssertionError as wrong:
                        code, details = grpc.StatusCode.INTERNAL, f"wrong answer: {wrong}"
                    else:
                        code, details = grpc.StatusCode.OK, ""
                    outcome = Outcome(
                        client, sent, time.monotonic(), code, details, response.model_version
                    )
                with self._lock:
                    self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def successes(self) -> int:
        return sum(o.code == grpc.StatusCode.OK for o in self.snapshot())

    def failures_per_client(self) -> dict[int, int]:
        counts = dict.fromkeys(range(self.clients), 0)
        for o in self.snapshot():
            if o.code != grpc.StatusCode.OK:
                counts[o.client] += 1
        return counts
