"""The classification extension on any version: plans, Triton's strings, the refusals.

Through a server: tests/unit/test_pipelines.py (a model and a pipeline output)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.core import datatypes
from server.core.errors import InvalidRequest, RepositoryError
from server.core.inference import Plan
from server.core.tensors import Signature, TensorSpec
from server.execution.classification import Classification, ClassifiedPlan

FP32 = datatypes.BY_NAME["FP32"]
INT64 = datatypes.BY_NAME["INT64"]
BYTES = datatypes.BY_NAME["BYTES"]
OUTPUTS = (
    TensorSpec("scores", FP32, (4,)),
    TensorSpec("label", INT64, ()),
    TensorSpec("names", BYTES, ()),
)
LABELS = {"scores": ("a", "b", "c", "d")}


def _plan(*outputs: str) -> Plan:
    types = tuple(spec.datatype for spec in OUTPUTS if spec.name in outputs)
    return Plan({}, outputs, types, 2)


def _classification(max_batch_size: int = 8) -> Classification:
    return Classification("m", Signature(max_batch_size, (), OUTPUTS), LABELS)


def test_a_plan_without_classification_is_the_plan_itself() -> None:
    plan = _plan("scores", "label")
    assert _classification().plan(plan, {"scores": {"other": 1}}) is plan
    assert _classification().plan(plan, {"scores": {"classification": 0}}) is plan


def test_a_classified_output_is_typed_bytes_and_the_others_are_kept() -> None:
    plan = _classification().plan(_plan("scores", "label"), {"scores": {"classification": 2}})
    assert isinstance(plan, ClassifiedPlan)
    assert plan.output_types == (BYTES, INT64)
    assert plan.counts == (2, 0)


async def test_results_turn_each_row_into_its_top_classes() -> None:
    classification = _classification()
    plan = classification.plan(_plan("scores", "label"), {"scores": {"classification": 2}})
    assert isinstance(plan, ClassifiedPlan)
    future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
    result = classification.results(plan, future)
    scores = np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]], np.float32)
    future.set_result([scores, np.array([1, 0], np.int64)])
    classes, label = await result
    assert classes.tolist() == [
        [b"0.600000:1:b", b"0.200000:2:c"],
        [b"0.700000:0:a", b"0.100000:1:b"],
    ]
    assert label.tolist() == [1, 0]


async def test_cancelling_the_result_cancels_the_model_future() -> None:
    classification = _classification()
    plan = classification.plan(_plan("scores"), {"scores": {"classification": 1}})
    assert isinstance(plan, ClassifiedPlan)
    future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
    classification.results(plan, future).cancel()
    await asyncio.sleep(0)
    assert future.cancelled()


def test_without_a_batch_dimension_the_whole_tensor_is_one_row() -> None:
    classes = _classification(max_batch_size=0).top("scores", np.array([3, 9, 1, 9]), 3)
    assert classes.tolist() == [b"9:1:b", b"9:3:d", b"3:0:a"]


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"scores": {"classification": -1}},
            "output 'scores': parameter 'classification' must be a non-negative integer (the "
            "number of classes), got -1",
        ),
        (
            {"scores": {"classification": True}},
            "output 'scores': parameter 'classification' must be a non-negative integer (the "
            "number of classes), got True",
        ),
        (
            {"names": {"classification": 1}},
            "output 'names': classification needs an integer or floating-point output; it is BYTES",
        ),
    ],
)
def test_a_bad_request_is_invalid_naming_the_output(
    parameters: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        _classification().plan(_plan("scores", "names"), parameters)  # type: ignore[arg-type]
    assert info.value.message == message


def test_labels_for_an_output_the_model_does_not_have_refuse_the_load() -> None:
    with pytest.raises(RepositoryError) as info:
        Classification("m", Signature(8, (), OUTPUTS), {"probabilities": ("x",)})
    assert info.value.message == (
        "model 'm': class_labels name ['probabilities'], which are not outputs; "
        "outputs: ['label', 'names', 'scores']"
    )
