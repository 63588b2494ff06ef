"""Ceiling B: ONNX Runtime in-process, with no RPC, at a given batch size.

The session is ONNX Runtime's own, with the session options the server gives the model
(thread counts from its config.yaml, by the server's rule; the CPU execution provider), see
`loadtests.model_info`.
Calls are back to back on `instances` threads at once, as the batcher's slots make them.
Measured while no server runs, so it is what these cores can do for this model alone. It
is the best of a few short runs: a ceiling is an upper bound, and on a shared machine a
single run measures whatever else ran at the time as much as the model.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from loadtests import model_info
from loadtests.workloads import Workload

REPEATS = 3
MIN_SECONDS = 0.4  # per repeat
MIN_CALLS = 2


@dataclass(frozen=True, slots=True)
class CeilingB:
    model: str
    version: str
    batch: int
    rows_per_s: float
    calls_per_s: float

    @property
    def ms_per_call(self) -> float:
        return 1000 / self.calls_per_s


class Session:
    """One model version loaded as the server (with `workers` processes) would load it."""

    def __init__(self, repository: Path, workload: Workload, version: str, workers: int = 1):
        self._info = model_info.read(repository, workload.model, version)
        self._session = ort.InferenceSession(
            str(self._info.path),
            model_info.session_options(self._info, workers),
            providers=["CPUExecutionProvider"],
        )
        self._workload = workload
        self._version = version
        self.max_batch_size = self._info.max_batch_size
        self._instances = self._info.instances

    def measure(self, batch: int) -> CeilingB:
        feeds = self._workload.feeds(self._info, batch)
        outputs = [tensor.name for tensor in self._info.outputs]
        self._session.run(outputs, feeds)  # first call at this shape allocates

        def back_to_back(start: float) -> int:
            calls = 0
            while time.perf_counter() - start < MIN_SECONDS or calls < MIN_CALLS:
                self._session.run(outputs, feeds)
                calls += 1
            return calls

        calls_per_s = 0.0
        with ThreadPoolExecutor(self._instances) as pool:
            for _ in range(REPEATS):
                start = time.perf_counter()
                slots = [pool.submit(back_to_back, start) for _ in range(self._instances)]
                calls = sum(slot.result() for slot in slots)
                calls_per_s = max(calls_per_s, calls / (time.perf_counter() - start))
        return CeilingB(
            self._workload.model, self._version, batch, calls_per_s * batch, calls_per_s
        )
