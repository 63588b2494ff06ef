"""The default model repository: every model that models/build.py writes loads in ONNX
Runtime and gives sensible answers, and the committed config.yaml files fit the models.

The models are built into a temporary directory, so this tests the build script itself
and never touches models/<name>/<version>/ (which a running server may be polling).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from server.repository.config import load_config

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["digits", "text_direction", "minilm", "silero_vad"]


def _load_build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("models_build", ROOT / "models" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_script()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("models")
    build.build(repo)
    return repo


def session(repository: Path, name: str, version: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    path = repository / name / str(version) / "model.onnx"
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_build_writes_every_version_and_rebuilding_changes_nothing(repository: Path) -> None:
    built = sorted(str(p.relative_to(repository)) for p in repository.glob("*/*/model.onnx"))
    assert built == [
        "digits/1/model.onnx",
        "digits/2/model.onnx",
        "minilm/1/model.onnx",
        "silero_vad/1/model.onnx",
        "text_direction/1/model.onnx",
    ]
    assert build.build(repository) == []


def test_every_model_has_an_ir_version_onnx_runtime_reads(repository: Path) -> None:
    for path in repository.glob("*/*/model.onnx"):
        assert onnx.load(str(path), load_external_data=False).ir_version <= 10, path


@pytest.mark.parametrize("version", [1, 2])
def test_digits_classifies_held_out_digits(repository: Path, version: int) -> None:
    _, x_test, _, y_test = build.digits_split()
    sess = session(repository, "digits", version)
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert not isinstance(sess.get_inputs()[0].shape[0], int), "batch dim must be dynamic"
    label, probabilities = sess.run(["label", "probabilities"], {"input": x_test})
    assert label.dtype == np.int64 and label.shape == (len(x_test),)
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(x_test), 10)
    assert (label == y_test).mean() > 0.9
    np.testing.assert_array_equal(label, probabilities.argmax(axis=1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    single = sess.run(["label"], {"input": x_test[:1]})[0]
    assert single.shape == (1,)


def test_digits_versions_are_different_models(repository: Path) -> None:
    _, x_test, _, _ = build.digits_split()
    v1, v2 = (session(repository, "digits", v).run(None, {"input": x_test})[1] for v in (1, 2))
    assert not np.allclose(v1, v2, atol=1e-3)


def test_minilm_embeds_similar_sentences_closer(repository: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(build.shipped_file(*build.TOKENIZER)))
    sentences = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
    ]
    encodings = tokenizer.encode_batch(sentences)  # padded to 128 tokens by tokenizer.json
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], np.int64),
    }
    (hidden,) = session(repository, "minilm").run(["last_hidden_state"], feeds)
    assert hidden.shape == (3, feeds["input_ids"].shape[1], 384)
    mask = feeds["attention_mask"][..., None]
    embeddings = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > 0.6
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    assert similarity[0, 1] > similarity[1, 2] + 0.3


def _text_lines(count: int) -> np.ndarray:
    """Lines of dark handwritten digits on white, 48x192, normalised as PP-OCR does."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(count):
        glyphs = [np.kron(images[i], np.ones((4, 3))) for i in rng.choice(len(images), 8)]
        line = np.pad(np.concatenate(glyphs, axis=1), ((8, 8), (0, 0)))  # 48 x 192
        gray = 1.0 - line / 16.0
        lines.append(np.repeat(gray[None], 3, axis=0))
    return ((np.stack(lines) - 0.5) / 0.5).astype(np.float32)


def test_text_direction_tells_upright_from_upside_down(repository: Path) -> None:
    sess = session(repository, "text_direction")
    (output,) = sess.get_outputs()
    upright = _text_lines(8)
    upside_down = np.ascontiguousarray(upright[:, :, ::-1, ::-1])
    (p_upright,) = sess.run([output.name], {"x": upright})
    (p_flipped,) = sess.run([output.name], {"x": upside_down})
    assert p_upright.shape == (8, 2)
    np.testing.assert_allclose(p_upright.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p_flipped.sum(axis=1), 1.0, rtol=1e-5)
    assert (p_upright.argmax(axis=1) == 0).all()  # class 0: 0 degrees, class 1: 180
    assert (p_flipped[:, 1] > p_upright[:, 1]).all()


def test_silero_vad_runs_on_a_chunk_and_returns_a_new_state(repository: Path) -> None:
    sess = session(repository, "silero_vad")
    rng = np.random.default_rng(0)
    # At 16 kHz the model takes 512 new samples after the previous chunk's last 64.
    chunk = (0.1 * rng.standard_normal((1, 64 + 512))).astype(np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    sr = np.array(16000, np.int64)
    for _ in range(2):  # the second call feeds back the first call's state
        probability, new_state = sess.run(
            ["output", "stateN"], {"input": chunk, "state": state, "sr": sr}
        )
        assert probability.shape == (1, 1) and 0.0 <= probability.item() <= 1.0
        assert new_state.shape == (2, 1, 128) and not np.array_equal(new_state, state)
        state = new_state


@pytest.mark.parametrize("name", MODELS)
def test_the_committed_config_parses_as_the_server_reads_it(name: str) -> None:
    """The server's own parser, with its strict integers, accepts every committed config."""
    config = load_config(ROOT / "models" / name)
    raw = yaml.safe_load((ROOT / "models" / name / "config.yaml").read_text())
    assert config.name == name
    assert config.max_batch_size == raw["max_batch_size"]


@pytest.mark.parametrize("name", MODELS)
def test_config_fits_the_model(repository: Path, name: str) -> None:
    """Batched models need a dynamic first dim everywhere; declared tensors must exist."""
    config = yaml.safe_load((ROOT / "models" / name / "config.yaml").read_text())
    versions = sorted(p.parent.name for p in (repository / name).glob("*/model.onnx"))
    assert versions
    for version in versions:
        sess = session(repository, name, int(version))
        nodes = {n.name: n for n in [*sess.get_inputs(), *sess.get_outputs()]}
        if config["max_batch_size"] > 0:
            for node in nodes.values():
                assert not isinstance(node.shape[0], int), f"{name}: {node.name} {node.shape}"
        for spec in [*config.get("inputs", []), *config.get("outputs", [])]:
            assert spec["name"] in nodes, f"{name}: {spec['name']} not in {sorted(nodes)}"
    assert (config["max_batch_size"] == 0) == (name == "silero_vad")
