"""`mean_pool`, `l2_normalize`, `softmax`, `argmax` and `classify` against numpy written out
directly, and `classify`'s strings in Triton's classification format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.core import datatypes
from server.core.tensors import TensorSpec
from server.execution.steps.pooling import L2Normalize, MeanPool
from server.execution.steps.scores import Argmax, Classify, Softmax

FP32 = datatypes.BY_NAME["FP32"]
INT64 = datatypes.BY_NAME["INT64"]
BYTES = datatypes.BY_NAME["BYTES"]
HERE = Path(".")


def test_mean_pool_averages_the_states_where_the_mask_is_1() -> None:
    rng = np.random.default_rng(0)
    states = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], np.int64)
    got = MeanPool({}, HERE).run({"input": states, "attention_mask": mask})["output"]
    want = np.stack([states[row, : mask[row].sum()].mean(axis=0) for row in range(3)])
    assert got.dtype == np.float32 and got.shape == (3, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mean_pool_of_an_all_zero_mask_is_zero_not_nan() -> None:
    got = MeanPool({}, HERE).run(
        {"input": np.ones((1, 2, 3), np.float32), "attention_mask": np.zeros((1, 2), np.int64)}
    )["output"]
    np.testing.assert_array_equal(got, np.zeros((1, 3), np.float32))


def test_mean_pool_binds_seq_and_dim_and_refuses_what_does_not_fit() -> None:
    pool = MeanPool({}, HERE)
    out = pool.bind(
        {
            "input": TensorSpec("input", FP32, (-1, 384)),
            "attention_mask": TensorSpec("attention_mask", INT64, (-1,)),
        }
    )
    assert out == {"output": TensorSpec("output", FP32, (384,))}
    with pytest.raises(ValueError, match=r"input 'attention_mask' must be integer or BOOL"):
        pool.bind(
            {
                "input": TensorSpec("input", FP32, (8, 384)),
                "attention_mask": TensorSpec("attention_mask", INT64, (9,)),
            }
        )
    with pytest.raises(ValueError, match=r"input 'input' must be floating point with dims"):
        pool.bind(
            {
                "input": TensorSpec("input", INT64, (-1, 384)),
                "attention_mask": TensorSpec("attention_mask", INT64, (-1,)),
            }
        )


def test_l2_normalize_divides_by_the_norm_of_the_last_axis() -> None:
    values = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], np.float32)
    got = L2Normalize({}, HERE).run({"input": values})["output"]
    np.testing.assert_allclose(got, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)


def test_softmax_equals_exp_over_the_sum_and_survives_large_values() -> None:
    values = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 999.0]], np.float32)
    got = Softmax({}, HERE).run({"input": values})["output"]
    first = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    second = np.exp([0.0, 0.0, -1.0]) / np.exp([0.0, 0.0, -1.0]).sum()
    np.testing.assert_allclose(got, [first, second], rtol=1e-6)
    assert got.dtype == np.float32


def test_argmax_gives_the_index_and_the_score_of_the_highest_value() -> None:
    values = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], np.float32)
    step = Argmax({}, HERE)
    got = step.run({"input": values})
    np.testing.assert_array_equal(got["index"], [1, 0])
    assert got["index"].dtype == np.int64
    np.testing.assert_array_equal(got["score"], np.array([0.7, 0.5], np.float32))
    assert step.bind({"input": TensorSpec("input", FP32, (3,))}) == {
        "index": TensorSpec("index", INT64, ()),
        "score": TensorSpec("score", FP32, ()),
    }


def test_classify_gives_triton_strings_value_index_label(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("apple\npickle\nbanana\norange\n")
    step = Classify({"k": 2, "labels": "labels.txt"}, tmp_path)
    values = np.array([[1.1, 3.3, 0.5, 2.4], [0.0, 0.0, 9.0, 0.0]], np.float32)
    got = step.run({"input": values})["classes"]
    assert got.tolist() == [
        [b"3.300000:1:pickle", b"2.400000:3:orange"],
        [b"9.000000:2:banana", b"0.000000:0:apple"],  # ties: the lower index first
    ]
    assert step.bind({"input": TensorSpec("input", FP32, (4,))}) == {
        "classes": TensorSpec("classes", BYTES, (2,))
    }


def test_classify_without_labels_and_on_integers_as_triton_prints_them() -> None:
    step = Classify({"k": 3}, HERE)
    got = step.run({"input": np.array([[1, 5, 10, 4]], np.int32)})["classes"]
    assert got.tolist() == [[b"10:2", b"5:1", b"4:3"]]
    everything = Classify({"k": 9}, HERE).run({"input": np.array([[2.0, 1.0]], np.float32)})
    assert everything["classes"].tolist() == [[b"2.000000:0", b"1.000000:1"]]


@pytest.mark.parametrize("step", [MeanPool, L2Normalize, Softmax, Argmax])
def test_steps_without_options_refuse_any(step: type) -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['axis'\]"):
        step({"axis": 1}, HERE)
