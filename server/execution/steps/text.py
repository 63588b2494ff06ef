"""`tokenize`: BYTES text -> input_ids, attention_mask, token_type_ids, with `tokenizers`.

The tokenizer is a `tokenizer.json` in the version directory (what Hugging Face tokenizers
save). Its own padding and truncation settings are replaced by the step's options:

    max_length: 256        # tokens, special tokens included
    truncation: true       # true: longer texts are cut to max_length; false: refused
    padding: longest       # longest: to the longest text of the batch; max_length: always

`padding: longest` pads to the longest text among those tokenized together: the rows of
the requests that share a batch of this step. They then have the same sequence length,
so they share a batch of the model too; the padded positions are masked out, so a text's
embedding does not depend on its neighbours (within float rounding).

Elements are bytes and must be UTF-8 here, the one place that needs text; an empty text
is refused (an embedding of no words is noise that would be compared silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from server.core import datatypes
from server.core.errors import InvalidRequest
from server.core.tensors import TensorSpec
from server.execution.steps.options import Options
from server.execution.steps.step import require

BYTES = datatypes.BY_NAME["BYTES"]
INT64 = datatypes.BY_NAME["INT64"]
OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Tokenize:
    inputs = ("text",)

    def __init__(self, options: Mapping[str, Any], directory: Path) -> None:
        read = Options(options)
        path = read.file("tokenizer", directory)
        self.max_length = read.integer("max_length")
        self.truncation = read.boolean("truncation", True)
        self.padding = read.choice("padding", ("longest", "max_length"), "longest")
        read.finish()
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception for a bad file
            raise ValueError(
                f"options.tokenizer: {path.name} is not a tokenizer.json: {exc}"
            ) from exc
        padding = tokenizer.padding or {"pad_id": 0, "pad_token": tokenizer.id_to_token(0)}
        tokenizer.no_truncation()
        if self.truncation:
            tokenizer.enable_truncation(self.max_length)
        tokenizer.enable_padding(
            pad_id=padding["pad_id"],
            pad_token=padding["pad_token"],
            length=self.max_length if self.padding == "max_length" else None,
        )
        self._tokenizer = tokenizer

    def bind(self, inputs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
        text = inputs["text"]
        require(
            text.datatype is BYTES and text.dims == (),
            f"input 'text' must be BYTES with one text per row (dims []), got "
            f"{text.datatype.name} {list(text.dims)}",
        )
        length = self.max_length if self.padding == "max_length" else -1
        return {name: TensorSpec(name, INT64, (length,)) for name in OUTPUTS}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [_text(row, item) for row, item in enumerate(inputs["text"])]
        encodings = self._tokenizer.encode_batch(texts)
        if not self.truncation:
            for row, encoding in enumerate(encodings):
                tokens = sum(encoding.attention_mask)
                if tokens > self.max_length:
                    raise InvalidRequest(
                        f"input 'text' row {row} has {tokens} tokens, more than max_length "
                        f"{self.max_length} (truncation is off)",
                        tensor="text",
                    )
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }


def _text(row: int, item: object) -> str:
    if not isinstance(item, bytes):
        raise InvalidRequest(f"input 'text' row {row} is not BYTES", tensor="text")
    try:
        text = item.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"input 'text' row {row} is not UTF-8 text (invalid byte at offset {exc.start})",
            tensor="text",
        ) from exc
    if not text.strip():
        raise InvalidRequest(f"input 'text' row {row} is empty", tensor="text")
    return text
