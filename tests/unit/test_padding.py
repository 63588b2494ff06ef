"""Sequence padding (`dynamic_batching.padding`) on real ONNX Runtime sessions: what a
model version refuses at load, and requests of different lengths sharing one padded batch
with each answer equal to the request run alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import _model, affine_model, write_model
from onnx import TensorProto, helper

from server.core import datatypes
from server.core.errors import RepositoryError
from server.core.inference import InferenceRequest
from server.core.tensors import Tensor
from server.execution.version import BatchedVersion, OnnxVersions
from server.repository.config import load_config

INT64 = datatypes.BY_NAME["INT64"]

PADDED = """\
max_batch_size: 8
dynamic_batching:
  padding: {inputs: {ids: 0, mask: 0}, outputs: [doubled], bucket: 8}
"""


def sequence_model() -> onnx.ModelProto:
    """doubled = ids * 2 ([batch, seq]); total = the sum of ids over the mask ([batch, 1]):
    `doubled` has the sequence axis, `total` depends on padding only through the mask."""
    return _model(
        helper.make_graph(
            [
                helper.make_node("Mul", ["ids", "two"], ["doubled"]),
                helper.make_node("Mul", ["ids", "mask"], ["kept"]),
                helper.make_node("ReduceSum", ["kept", "axis"], ["total"], keepdims=1),
            ],
            "sequence",
            [
                helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]),
            ],
            [
                helper.make_tensor_value_info("doubled", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("total", TensorProto.INT64, ["batch", 1]),
            ],
            initializer=[
                helper.make_tensor("two", TensorProto.INT64, [], [2]),
                helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
            ],
        )
    )


def build(root: Path, model: onnx.ModelProto, config: str) -> BatchedVersion:
    directory = write_model(root, "m", model, config)
    return OnnxVersions()("m", 1, load_config(directory), directory / "1")


@pytest.mark.parametrize(
    ("model", "config", "message"),
    [
        pytest.param(
            sequence_model(),
            "max_batch_size: 8\ndynamic_batching: {padding: {inputs: {tokens: 0}}}\n",
            "model 'm' dynamic_batching.padding: no input 'tokens'; the inputs are ['ids', 'mask']",
            id="unknown input",
        ),
        pytest.param(
            sequence_model(),
            "max_batch_size: 8\n"
            "dynamic_batching: {padding: {inputs: {ids: 0}, outputs: [total]}}\n",
            "model 'm' dynamic_batching.padding: output 'total' has no variable length after "
            "the batch dimension (dims [1])",
            id="output of fixed length",
        ),
        pytest.param(
            affine_model(),
            "max_batch_size: 8\ndynamic_batching: {padding: {inputs: {x: 0}}}\n",
            "model 'm' dynamic_batching.padding: input 'x' has no variable length after the "
            "batch dimension (dims [4])",
            id="input of fixed length",
        ),
        pytest.param(
            sequence_model(),
            "max_batch_size: 0\ndynamic_batching: {padding: {inputs: {ids: 0}}}\n",
            "model 'm' dynamic_batching.padding: the model does not batch (max_batch_size 0)",
            id="no batch dimension",
        ),
    ],
)
def test_a_padding_the_model_cannot_take_is_refused_at_load(
    tmp_path: Path, model: onnx.ModelProto, config: str, message: str
) -> None:
    with pytest.raises(RepositoryError) as refused:
        build(tmp_path, model, config)
    assert str(refused.value) == message


def request(ids: list[int]) -> InferenceRequest:
    row = np.array([ids], dtype=np.int64)
    inputs = [Tensor("ids", INT64, row), Tensor("mask", INT64, np.ones_like(row))]
    return InferenceRequest("m", "", "", inputs, [])


async def test_lengths_in_one_bucket_share_a_padded_batch_and_get_their_own_answers(
    tmp_path: Path,
) -> None:
    version = build(tmp_path, sequence_model(), PADDED)
    sequences = [[3, 1, 4], [1, 5, 9, 2, 6, 5], [3], [5, 8, 9, 7, 9, 3, 2, 3], [8, 4, 6, 2, 6]]
    try:
        # Submitted in one loop turn, the five queue together and leave as one batch.
        futures = [version.submit(version.validate(request(ids)), None, False) for ids in sequences]
        answers = await asyncio.wait_for(asyncio.gather(*futures), 10)
    finally:
        await version.close()
    assert version.stats.execution_count == 1
    assert sorted(version.stats.batches) == [5]
    for ids, (doubled, total) in zip(sequences, answers, strict=True):
        np.testing.assert_array_equal(doubled, [[2 * i for i in ids]])  # its own length
        np.testing.assert_array_equal(total, [[sum(ids)]])  # the mask hid the padding
