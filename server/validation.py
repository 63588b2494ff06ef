"""Checks a decoded request against the signature of the model version that will run it.

Runs before a request joins a batch, so a bad request fails alone with a message that
names the input and the expected value, and never poisons its neighbours.
"""

from __future__ import annotations

from server.config import TensorSpec
from server.errors import InvalidRequest
from server.runtime import Signature
from server.tensors import InferenceRequest


class Validator:
    """Per-version lookup tables, built once at load so the hot path only reads them."""

    def __init__(self, model: str, signature: Signature) -> None:
        self._model = model
        self._batched = signature.max_batch_size > 0
        self._max_batch_size = signature.max_batch_size
        self._inputs = {spec.name: spec for spec in signature.inputs}
        self._required = frozenset(spec.name for spec in signature.inputs if not spec.optional)
        self._outputs = tuple(spec.name for spec in signature.outputs)
        self._output_set = frozenset(self._outputs)
        self._full_shapes = {spec.name: signature.full_shape(spec) for spec in signature.inputs}

    def check(self, request: InferenceRequest) -> tuple[int, tuple[str, ...]]:
        """Return the batch size (0 for unbatched models) and the output names to compute."""
        seen: set[str] = set()
        batch = -1
        for tensor in request.inputs:
            spec = self._inputs.get(tensor.name)
            if spec is None:
                raise InvalidRequest(
                    f"unexpected input '{tensor.name}' for model '{self._model}'; "
                    f"expected inputs: {sorted(self._inputs)}"
                )
            if tensor.name in seen:
                raise InvalidRequest(f"input '{tensor.name}' appears more than once")
            seen.add(tensor.name)
            if tensor.datatype is not spec.datatype:
                raise InvalidRequest(
                    f"input '{tensor.name}': datatype {tensor.datatype.name} does not match "
                    f"the model's {spec.datatype.name}"
                )
            size = self._check_shape(spec, tensor.data.shape)
            if batch not in (-1, size):
                raise InvalidRequest(
                    f"input '{tensor.name}': batch size {size} differs from the other "
                    f"inputs' {batch}"
                )
            batch = size
        missing = self._required - seen
        if missing:
            raise InvalidRequest(
                f"missing input(s) {sorted(missing)} for model '{self._model}'; "
                f"expected inputs: {sorted(self._inputs)}"
            )
        return max(batch, 0), self._requested(request.requested_outputs)

    def _check_shape(self, spec: TensorSpec, shape: tuple[int, ...]) -> int:
        dims = shape[1:] if self._batched else shape
        expected = self._full_shapes[spec.name]
        if len(shape) != len(expected) or any(
            want not in (-1, got) for want, got in zip(spec.dims, dims, strict=True)
        ):
            raise InvalidRequest(
                f"input '{spec.name}': shape {list(shape)} does not match the model's "
                f"{list(expected)} (-1 is any size)"
            )
        if not self._batched:
            return 0
        if not 1 <= shape[0] <= self._max_batch_size:
            raise InvalidRequest(
                f"input '{spec.name}': batch size {shape[0]} is outside 1..{self._max_batch_size}"
                f" (max_batch_size of model '{self._model}')"
            )
        return shape[0]

    def _requested(self, names: list[str]) -> tuple[str, ...]:
        if not names:
            return self._outputs
        if len(set(names)) != len(names):
            raise InvalidRequest(f"requested outputs {names} name an output more than once")
        for name in names:
            if name not in self._output_set:
                raise InvalidRequest(
                    f"requested output '{name}' is not an output of model '{self._model}'; "
                    f"expected one of {list(self._outputs)}"
                )
        return tuple(names)
