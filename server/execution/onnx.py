"""ONNX Runtime sessions: one per loaded model version.

`OnnxModel.run` is called from worker threads; ONNX Runtime releases the GIL while it
computes, so the event loop keeps serving. Its exceptions are converted to domain errors
where they are raised. ONNX string tensors hold text, so BYTES inputs are decoded from
UTF-8 here, the one place that needs text; other consumers keep the bytes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from server.core import datatypes
from server.core.errors import InvalidRequest, RepositoryError, RuntimeFailure
from server.core.model_config import ModelConfig, WarmupInput
from server.core.tensors import Signature, TensorSpec
from server.execution.cores import available_cores

log = logging.getLogger(__name__)

_ORT = ort.capi.onnxruntime_pybind11_state

# Every exception class ONNX Runtime's binding defines (Fail, InvalidArgument,
# RuntimeException, NotImplemented, EPFail, InvalidGraph, ...). Since onnxruntime 1.32 they
# derive from Exception only, not RuntimeError, so they are found by module, not by base;
# RuntimeError stays for what the binding raises as a plain C++ exception.
ORT_ERRORS: tuple[type[Exception], ...] = (
    *(
        value
        for value in vars(_ORT).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ),
    RuntimeError,
)


@contextlib.contextmanager
def runtime_errors(model: str) -> Iterator[None]:
    """Turn ONNX Runtime's exceptions into domain errors, naming the model: the input's
    fault (InvalidArgument) is InvalidRequest, anything else the runtime raises is
    RuntimeFailure. Neither is logged here: the batcher logs a RuntimeFailure once, and
    the status mapping knows both, so no error of the runtime reaches it unmapped."""
    try:
        yield
    except _ORT.InvalidArgument as exc:
        raise InvalidRequest(f"model '{model}' rejected the input: {exc}", model=model) from exc
    except ORT_ERRORS as exc:
        raise RuntimeFailure(f"model '{model}' failed while executing: {exc}", model=model) from exc


def _texts(name: str, array: np.ndarray) -> np.ndarray:
    """An ONNX string input takes Python str; BYTES elements must then be UTF-8."""
    flat = array.ravel()
    texts = np.empty(flat.shape, dtype=object)
    try:
        texts[:] = [item.decode("utf-8") if isinstance(item, bytes) else item for item in flat]
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"input '{name}': BYTES elements must be UTF-8 text for this model's string input",
            tensor=name,
        ) from exc
    return texts.reshape(array.shape)


def default_intra_op_threads(workers: int, instances: int) -> int:
    """Split the cores this process may use (cgroup quota included) so that workers x
    instances x threads does not oversubscribe them."""
    return max(1, available_cores() // max(1, workers * instances))


class OnnxModel:
    """One ONNX Runtime session and the signature the server validates against."""

    def __init__(self, path: Path, config: ModelConfig, *, workers: int = 1) -> None:
        self.name = config.name
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads or default_intra_op_threads(
            workers, config.instances
        )
        options.inter_op_num_threads = config.inter_op_threads
        options.log_severity_level = 4  # errors surface as exceptions, not stderr noise
        # No CPU memory arena: the arena keeps the largest working set it has ever served
        # (minilm: +226 MiB once a 32 x 128-token batch ran, for good), so memory would
        # follow the largest request ever sent, not the load; without it a run's buffers go
        # back after it. Measured: digits unchanged, text_direction 3 % faster, minilm 1-6 %
        # slower per run (docs/performance.md).
        options.enable_cpu_mem_arena = False
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            shown = f"{config.name}/{path.parent.name}/{path.name}"  # no server paths in errors
            raise RepositoryError(
                f"ONNX Runtime could not load {shown}: {str(exc).replace(str(path), shown)}"
            ) from exc
        self.signature = _signature(self._session, config)
        self._text_inputs = frozenset(
            spec.name for spec in self.signature.inputs if spec.datatype.itemsize == 0
        )
        self._run_options = ort.RunOptions()  # shared by every run, so terminate() stops all

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        inputs = dict(feeds)
        for name in self._text_inputs & inputs.keys():
            inputs[name] = _texts(name, inputs[name])
        with runtime_errors(self.name):
            result: list[Any] = self._session.run(list(outputs), inputs, self._run_options)
        return result

    def terminate(self) -> None:
        """Abort the runs in progress, and fail any later one, with RuntimeFailure: for a
        shutdown whose grace has run out, when nobody waits for their results."""
        self._run_options.terminate = True

    def warm_up(self, overrides: Sequence[WarmupInput] = ()) -> None:
        """Run once so that the first client does not pay for lazy initialisation.

        Inputs get zeros with dynamic dimensions of 1, unless `overrides` says otherwise.
        """
        batch = (1,) if self.signature.max_batch_size > 0 else ()
        chosen = {entry.name: entry for entry in overrides}
        feeds = {}
        for spec in self.signature.inputs:
            entry = chosen.get(spec.name, WarmupInput(spec.name))
            shape = entry.shape
            if shape is None:
                shape = batch + tuple(1 if d < 0 else d for d in spec.dims)
            if spec.datatype.itemsize == 0:
                feeds[spec.name] = np.full(shape, str(entry.value), dtype=object)
            else:
                feeds[spec.name] = np.full(shape, entry.value, dtype=spec.datatype.numpy)
        self.run(feeds, [spec.name for spec in self.signature.outputs])


def _signature(session: ort.InferenceSession, config: ModelConfig) -> Signature:
    batched = config.max_batch_size > 0
    declared_inputs = _from_onnx(session.get_inputs(), batched, config.name)
    declared_outputs = _from_onnx(session.get_outputs(), batched, config.name)
    inputs = _reconcile("input", config.inputs, declared_inputs, config.name)
    outputs = _reconcile("output", config.outputs, declared_outputs, config.name)
    return Signature(config.max_batch_size, inputs, outputs)


def _from_onnx(nodes: Sequence[Any], batched: bool, model: str) -> tuple[TensorSpec, ...]:
    specs = []
    for node in nodes:
        dtype = datatypes.BY_ONNX.get(node.type)
        if dtype is None:
            raise RepositoryError(f"model '{model}': {node.name} has unsupported type {node.type}")
        dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (node.shape or ()))
        if batched:
            if not dims or dims[0] != -1:
                raise RepositoryError(
                    f"model '{model}': max_batch_size > 0 needs a dynamic first dimension "
                    f"on '{node.name}', which has shape {list(dims)}"
                )
            dims = dims[1:]
        specs.append(TensorSpec(node.name, dtype, dims))
    return tuple(specs)


def _reconcile(
    kind: str,
    configured: tuple[TensorSpec, ...] | None,
    declared: tuple[TensorSpec, ...],
    model: str,
) -> tuple[TensorSpec, ...]:
    """Config overrides the ONNX declaration, but may only name tensors the file has."""
    if configured is None:
        return declared
    by_name = {spec.name: spec for spec in declared}
    for spec in configured:
        onnx_spec = by_name.get(spec.name)
        if onnx_spec is None:
            raise RepositoryError(
                f"model '{model}': config {kind} '{spec.name}' is not in the ONNX file, "
                f"which has {sorted(by_name)}"
            )
        if onnx_spec.datatype != spec.datatype:
            raise RepositoryError(
                f"model '{model}': config {kind} '{spec.name}' is {spec.datatype.name} "
                f"but the ONNX file says {onnx_spec.datatype.name}"
            )
    return configured
