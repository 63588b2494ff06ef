"""Checks a decoded request against the signature of the model version that will run it.

Runs before a request joins a batch, so a bad request fails alone with a message that
names the input and the expected value, and never poisons its neighbours.
"""

from __future__ import annotations

from server.core.datatypes import DataType
from server.core.errors import InvalidRequest
from server.core.inference import InferenceRequest, Plan
from server.core.tensors import Signature, TensorSpec


class Validator:
    """Per-version lookup tables, built once at load so the hot path only reads them."""

    def __init__(self, model: str, signature: Signature) -> None:
        self._model = model
        self._batched = signature.max_batch_size > 0
        self._max_batch_size = signature.max_batch_size
        self._inputs = {spec.name: spec for spec in signature.inputs}
        self._required = frozenset(spec.name for spec in signature.inputs if not spec.optional)
        self._outputs = tuple(spec.name for spec in signature.outputs)
        self._output_types = {spec.name: spec.datatype for spec in signature.outputs}
        self._all_output_types = tuple(spec.datatype for spec in signature.outputs)
        self._full_shapes = {spec.name: signature.full_shape(spec) for spec in signature.inputs}

    def _invalid(self, message: str, tensor: str = "") -> InvalidRequest:
        return InvalidRequest(message, model=self._model, tensor=tensor)

    def check(self, request: InferenceRequest) -> Plan:
        """The request as a plan, or InvalidRequest naming the input and what was expected."""
        seen: set[str] = set()
        batch = -1
        for tensor in request.inputs:
            spec = self._inputs.get(tensor.name)
            if spec is None:
                raise self._invalid(
                    f"unexpected input '{tensor.name}' for model '{self._model}'; "
                    f"expected inputs: {sorted(self._inputs)}",
                    tensor.name,
                )
            if tensor.name in seen:
                raise self._invalid(f"input '{tensor.name}' appears more than once", tensor.name)
            seen.add(tensor.name)
            if tensor.datatype is not spec.datatype:
                raise self._invalid(
                    f"input '{tensor.name}': datatype {tensor.datatype.name} does not match "
                    f"the model's {spec.datatype.name}",
                    tensor.name,
                )
            size = self._check_shape(spec, tensor.data.shape)
            if batch not in (-1, size):
                raise self._invalid(
                    f"input '{tensor.name}': batch size {size} differs from the other "
                    f"inputs' {batch}",
                    tensor.name,
                )
            batch = size
        missing = self._required - seen
        if missing:
            raise self._invalid(
                f"missing input(s) {sorted(missing)} for model '{self._model}'; "
                f"expected inputs: {sorted(self._inputs)}",
                min(missing),
            )
        outputs, types = self._requested(request.requested_outputs)
        return Plan(
            {tensor.name: tensor.data for tensor in request.inputs}, outputs, types, max(batch, 0)
        )

    def _check_shape(self, spec: TensorSpec, shape: tuple[int, ...]) -> int:
        dims = shape[1:] if self._batched else shape
        expected = self._full_shapes[spec.name]
        if len(shape) != len(expected) or any(
            want not in (-1, got) for want, got in zip(spec.dims, dims, strict=True)
        ):
            raise self._invalid(
                f"input '{spec.name}': shape {list(shape)} does not match the model's "
                f"{list(expected)} (-1 is any size)",
                spec.name,
            )
        if not self._batched:
            return 0
        if not 1 <= shape[0] <= self._max_batch_size:
            raise self._invalid(
                f"input '{spec.name}': batch size {shape[0]} is outside 1..{self._max_batch_size}"
                f" (max_batch_size of model '{self._model}')",
                spec.name,
            )
        return shape[0]

    def _requested(self, names: list[str]) -> tuple[tuple[str, ...], tuple[DataType, ...]]:
        if not names:
            return self._outputs, self._all_output_types
        if len(set(names)) != len(names):
            raise self._invalid(f"requested outputs {names} name an output more than once")
        for name in names:
            if name not in self._output_types:
                raise self._invalid(
                    f"requested output '{name}' is not an output of model '{self._model}'; "
                    f"expected one of {list(self._outputs)}",
                    name,
                )
        return tuple(names), tuple(self._output_types[name] for name in names)
