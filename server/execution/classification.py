"""Triton's classification extension, for every served version (ONNX models and pipelines).

A requested output with the parameter `classification: k` comes back as BYTES of shape
[rows, k] (or [k] for a model without a batch dimension) instead of the tensor itself:
each element is "<value>:<index>" or, when the model's config has class labels for that
output (`class_labels`),
"<value>:<index>:<label>", the k highest values of the row in descending order. Values are
printed as Triton's C++ does (`std::to_string`: six decimals for floats, plain integers),
so clients that parse Triton's strings parse ours. k larger than the number of classes
gives them all, as Triton does.

Requests that ask for no classification keep their plan and their future: the one cost on
the hot path is the caller's check that the request has output parameters at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from server.core import datatypes
from server.core.errors import InvalidRequest, RepositoryError
from server.core.inference import Parameters, Plan
from server.core.models import Outputs
from server.core.tensors import Signature

PARAMETER = "classification"
BYTES = datatypes.BY_NAME["BYTES"]
# Triton classifies integer and floating-point outputs only.
_CLASSIFIABLE = frozenset(t.name for t in datatypes.ALL if t.numpy.kind in "iuf")


@dataclass(frozen=True, slots=True)
class ClassifiedPlan(Plan):
    """A plan some of whose outputs are returned as top-k classes (`counts`, 0: as is)."""

    counts: tuple[int, ...] = ()


class Classification:
    """One version's classifiable outputs and their labels, checked once at load."""

    def __init__(
        self, model: str, signature: Signature, labels: Mapping[str, tuple[str, ...]]
    ) -> None:
        self._model = model
        self._batched = signature.max_batch_size > 0
        self._types = {spec.name: spec.datatype for spec in signature.outputs}
        unknown = sorted(set(labels) - set(self._types))
        if unknown:
            raise RepositoryError(
                f"model '{model}': class_labels name {unknown}, which are not outputs; "
                f"outputs: {sorted(self._types)}"
            )
        self._labels = labels

    def plan(self, plan: Plan, parameters: Mapping[str, Parameters]) -> Plan:
        """The plan with classified outputs typed BYTES, or `plan` itself if none asks."""
        counts = []
        for name in plan.outputs:
            count = parameters.get(name, {}).get(PARAMETER, 0)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise InvalidRequest(
                    f"output '{name}': parameter '{PARAMETER}' must be a non-negative "
                    f"integer (the number of classes), got {count!r}",
                    model=self._model,
                    tensor=name,
                )
            if count and self._types[name].name not in _CLASSIFIABLE:
                raise InvalidRequest(
                    f"output '{name}': classification needs an integer or floating-point "
                    f"output; it is {self._types[name].name}",
                    model=self._model,
                    tensor=name,
                )
            counts.append(count)
        if not any(counts):
            return plan
        types = tuple(
            BYTES if count else datatype
            for count, datatype in zip(counts, plan.output_types, strict=True)
        )
        return ClassifiedPlan(plan.feeds, plan.outputs, types, plan.rows, tuple(counts))

    def results(
        self, plan: ClassifiedPlan, future: asyncio.Future[Outputs]
    ) -> asyncio.Future[Outputs]:
        """A future of `future`'s outputs with the classified ones turned into classes."""

        def classify(outputs: Outputs) -> Outputs:
            return [
                self.top(name, array, count) if count else array
                for name, array, count in zip(plan.outputs, outputs, plan.counts, strict=True)
            ]

        return _then(future, classify)

    def top(self, output: str, array: np.ndarray, count: int) -> np.ndarray:
        """The `count` highest values of each row (of the whole tensor without batching)."""
        rows = array.reshape(array.shape[0], -1) if self._batched else array.reshape(1, -1)
        classes = top_classes(rows, count, self._labels.get(output, ()))
        return classes if self._batched else classes[0]


def top_classes(rows: np.ndarray, count: int, labels: Sequence[str]) -> np.ndarray:
    """[n, classes] values -> [n, min(count, classes)] BYTES "value:index[:label]"."""
    count = min(count, rows.shape[1])
    # Stable on the negated values: equal values keep ascending index order.
    order = np.argsort(-rows, axis=1, kind="stable")[:, :count]
    integer = rows.dtype.kind in "iu"
    classes = np.empty(order.shape, dtype=object)
    for row, indices in enumerate(order):
        for column, index in enumerate(indices):
            value = rows[row, index]
            text = f"{int(value)}:{index}" if integer else f"{float(value):f}:{index}"
            if index < len(labels):
                text += ":" + labels[index]
            classes[row, column] = text.encode("utf-8")
    return classes


def _then(
    future: asyncio.Future[Outputs], change: Callable[[Outputs], Outputs]
) -> asyncio.Future[Outputs]:
    """`change` applied to the future's result; cancelling the result cancels `future`."""
    loop = future.get_loop()
    result: asyncio.Future[Outputs] = loop.create_future()

    def settle(done: asyncio.Future[Outputs]) -> None:
        if result.done():
            return
        if done.cancelled():
            result.cancel()
        elif (error := done.exception()) is not None:
            result.set_exception(error)
        else:
            try:
                result.set_result(change(done.result()))
            except Exception as exc:
                result.set_exception(exc)

    def forward_cancel(outer: asyncio.Future[Outputs]) -> None:
        if outer.cancelled():
            future.cancel()

    if future.done():  # an inline model that ran at once: answer at once
        settle(future)
    else:
        future.add_done_callback(settle)
        result.add_done_callback(forward_cancel)
    return result
