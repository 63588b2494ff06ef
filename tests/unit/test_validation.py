"""A decoded request against a model's signature: a fitting one becomes a Plan, and each
refusal names the input and what was expected, in the exact words clients see, and in
the error's structured fields."""

from __future__ import annotations

import numpy as np
import pytest

from server.core import datatypes
from server.core.errors import InvalidRequest
from server.core.inference import InferenceRequest, Plan
from server.core.tensors import Signature, Tensor, TensorSpec
from server.core.validation import Validator

FP32 = datatypes.BY_NAME["FP32"]
INT64 = datatypes.BY_NAME["INT64"]

BATCHED = Signature(
    max_batch_size=4,
    inputs=(
        TensorSpec("x", FP32, (3,)),
        TensorSpec("ids", INT64, (-1,)),
        TensorSpec("mask", INT64, (-1,), optional=True),
    ),
    outputs=(TensorSpec("y", FP32, (3,)), TensorSpec("z", FP32, (1,))),
)
UNBATCHED = Signature(
    max_batch_size=0,
    inputs=(TensorSpec("x", FP32, (2, -1)),),
    outputs=(TensorSpec("y", FP32, (2,)),),
)


def _request(*tensors: Tensor, outputs: tuple[str, ...] = ()) -> InferenceRequest:
    return InferenceRequest("m", "", "r", list(tensors), list(outputs))


def _x(*shape: int) -> Tensor:
    return Tensor("x", FP32, np.zeros(shape, np.float32))


def _ids(*shape: int, name: str = "ids") -> Tensor:
    return Tensor(name, INT64, np.zeros(shape, np.int64))


def _error(signature: Signature, request: InferenceRequest, tensor: str | None = None) -> str:
    """The refusal's message; the error names model 'm' and `tensor` (default: input x)."""
    with pytest.raises(InvalidRequest) as failure:
        Validator("m", signature).check(request)
    error = failure.value
    assert (error.model, error.version, error.reason) == ("m", "", "invalid_request")
    assert error.tensor == ("x" if tensor is None else tensor)
    return str(error)


def test_a_fitting_request_becomes_a_plan_of_its_feeds_rows_and_every_output() -> None:
    x, ids = _x(2, 3), _ids(2, 7)
    plan = Validator("m", BATCHED).check(_request(x, ids))
    assert isinstance(plan, Plan)
    assert (plan.outputs, plan.output_types, plan.rows) == (("y", "z"), (FP32, FP32), 2)
    assert list(plan.feeds) == ["x", "ids"]
    assert plan.feeds["x"] is x.data  # the decoded arrays, not copies
    assert plan.feeds["ids"] is ids.data


def test_requested_outputs_keep_the_clients_order_and_types() -> None:
    wide = Signature(
        2, (TensorSpec("x", FP32, (3,)),), (*BATCHED.outputs, TensorSpec("n", INT64, ()))
    )
    plan = Validator("m", wide).check(_request(_x(1, 3), outputs=("n", "y")))
    assert (plan.outputs, plan.output_types, plan.rows) == (("n", "y"), (INT64, FP32), 1)


def test_an_optional_input_may_be_sent() -> None:
    request = _request(_x(1, 3), _ids(1, 1), _ids(1, 4, name="mask"), outputs=("z", "y"))
    plan = Validator("m", BATCHED).check(request)
    assert (sorted(plan.feeds), plan.outputs, plan.rows) == (["ids", "mask", "x"], ("z", "y"), 1)


def test_an_unbatched_model_has_no_rows() -> None:
    plan = Validator("m", UNBATCHED).check(_request(_x(2, 9)))
    assert (plan.rows, plan.outputs) == (0, ("y",))


def test_an_unexpected_input_is_named() -> None:
    assert _error(BATCHED, _request(_x(1, 3), _ids(1, 1), _ids(1, 1, name="extra")), "extra") == (
        "unexpected input 'extra' for model 'm'; expected inputs: ['ids', 'mask', 'x']"
    )


def test_an_input_given_twice_is_refused() -> None:
    assert _error(BATCHED, _request(_x(1, 3), _x(1, 3), _ids(1, 1))) == (
        "input 'x' appears more than once"
    )


def test_a_wrong_datatype_is_named() -> None:
    wrong = Tensor("x", INT64, np.zeros((1, 3), np.int64))
    assert _error(BATCHED, _request(wrong, _ids(1, 1))) == (
        "input 'x': datatype INT64 does not match the model's FP32"
    )


@pytest.mark.parametrize("shape", [(1, 4), (1, 3, 1), (3,)])
def test_a_wrong_shape_is_named_with_the_expected_one(shape: tuple[int, ...]) -> None:
    assert _error(BATCHED, _request(_x(*shape), _ids(1, 1))) == (
        f"input 'x': shape {list(shape)} does not match the model's [-1, 3] (-1 is any size)"
    )


def test_an_unbatched_shape_is_checked_without_a_batch_dimension() -> None:
    assert _error(UNBATCHED, _request(_x(3, 9))) == (
        "input 'x': shape [3, 9] does not match the model's [2, -1] (-1 is any size)"
    )


@pytest.mark.parametrize("rows", [0, 5])
def test_the_batch_size_must_be_within_max_batch_size(rows: int) -> None:
    assert _error(BATCHED, _request(_x(rows, 3), _ids(rows, 1))) == (
        f"input 'x': batch size {rows} is outside 1..4 (max_batch_size of model 'm')"
    )


def test_inputs_must_agree_on_the_batch_size() -> None:
    assert _error(BATCHED, _request(_x(2, 3), _ids(3, 1)), "ids") == (
        "input 'ids': batch size 3 differs from the other inputs' 2"
    )


def test_a_missing_required_input_is_named_but_an_optional_one_may_be_left_out() -> None:
    assert _error(BATCHED, _request(_x(1, 3)), "ids") == (
        "missing input(s) ['ids'] for model 'm'; expected inputs: ['ids', 'mask', 'x']"
    )


def test_an_unknown_requested_output_is_named() -> None:
    assert _error(BATCHED, _request(_x(1, 3), _ids(1, 1), outputs=("y", "w")), "w") == (
        "requested output 'w' is not an output of model 'm'; expected one of ['y', 'z']"
    )


def test_an_output_requested_twice_is_refused() -> None:
    assert _error(BATCHED, _request(_x(1, 3), _ids(1, 1), outputs=("y", "y")), "") == (
        "requested outputs ['y', 'y'] name an output more than once"
    )
