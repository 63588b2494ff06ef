"""The default repository's pipelines through real clients: tritonclient.grpc (sync and
asyncio), gRPC-web and REST through a real Envoy gateway.

Every answer is compared with the same computation done here, on the client side, with
the models served directly: tokenization with `tokenizers`, decoding with Pillow,
pooling with numpy.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import math
import shutil
from collections.abc import Iterator
from types import ModuleType

import grpc
import grpc_web
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from PIL import Image, ImageDraw, ImageFont
from processes import ROOT, ServerProcess, start_server
from tokenizers import Tokenizer
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway import RunningGateway, start_gateway
from gateway.build import build

GUITAR = "A man is playing a guitar."
PARAPHRASE = "Someone plays the guitar."
UNRELATED = "The stock market fell sharply today."
TEXT_DIRECTION_OUTPUT = "save_infer_model/scale_0.tmp_1"
MAX_TOKENS = 256  # models/sentence_embedding/config.yaml
TOKENIZER = ROOT / "models" / "sentence_embedding" / "1" / "tokenizer.json"


def _build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("models_build", ROOT / "models" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- client-side references -------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """The tokenizer the pipeline uses, set up as its config says: truncated, unpadded."""
    assert TOKENIZER.is_file(), "run `make models` first"
    loaded = Tokenizer.from_file(str(TOKENIZER))
    loaded.no_padding()
    loaded.enable_truncation(MAX_TOKENS)
    return loaded


def _reference_embedding(
    client: triton.InferenceServerClient, tokenizer: Tokenizer, text: str
) -> np.ndarray:
    """Tokenize here, run minilm itself, mean-pool and normalize with numpy."""
    encoding = tokenizer.encode(text)
    inputs = []
    for name, values in [
        ("input_ids", encoding.ids),
        ("attention_mask", encoding.attention_mask),
        ("token_type_ids", encoding.type_ids),
    ]:
        tensor = triton.InferInput(name, [1, len(values)], "INT64")
        tensor.set_data_from_numpy(np.array([values], np.int64))
        inputs.append(tensor)
    states = client.infer("minilm", inputs).as_numpy("last_hidden_state")[0]
    mask = np.array(encoding.attention_mask, np.float32)[:, None]
    pooled = (states * mask).sum(axis=0) / mask.sum()
    return pooled / np.linalg.norm(pooled)


def _texts(*texts: str | bytes) -> np.ndarray:
    array = np.empty(len(texts), dtype=object)
    array[:] = [t.encode() if isinstance(t, str) else t for t in texts]
    return array


def _bytes_input(name: str, items: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(items)], "BYTES")
    tensor.set_data_from_numpy(items)
    return tensor


def _embed(client: triton.InferenceServerClient, *texts: str | bytes) -> np.ndarray:
    result = client.infer("sentence_embedding", [_bytes_input("text", _texts(*texts))])
    return result.as_numpy("embedding")


def _digit_png(pixels: np.ndarray, scale: int = 4) -> bytes:
    """A load_digits image (0..16, ink bright) as a scan would be: dark ink on white."""
    grey = (255 - np.round(pixels.reshape(8, 8) * 255 / 16)).astype(np.uint8)
    image = Image.fromarray(grey, "L").resize((8 * scale, 8 * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _digit_pixels(png: bytes) -> np.ndarray:
    """What the pipeline should feed digits: Pillow and numpy, as its config says."""
    grey = Image.open(io.BytesIO(png)).convert("L").resize((8, 8), Image.BOX)
    return ((255 - np.asarray(grey, np.float32)) * np.float32(16 / 255)).reshape(1, 64)


def _text_line(text: str) -> Image.Image:
    font = ImageFont.load_default(size=28)
    image = Image.new("RGB", (int(font.getlength(text)) + 16, 40), "white")
    ImageDraw.Draw(image).text((8, 4), text, fill=(20, 20, 20), font=font)
    return image


def _encoded(image: Image.Image, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return buffer.getvalue()


def _pp_ocr_input(image: Image.Image) -> np.ndarray:
    """PP-OCR's text-line preparation (rapidocr's resize_norm_img), with Pillow for cv2."""
    width = min(192, math.ceil(48 * image.width / image.height))
    resized = np.asarray(image.resize((width, 48), Image.BILINEAR), np.float32)[:, :, ::-1]
    padded = np.zeros((3, 48, 192), np.float32)
    padded[:, :, :width] = ((resized / 255 - 0.5) / 0.5).transpose(2, 0, 1)
    return padded[None]


# --- sentence_embedding over gRPC ---------------------------------------------------------


def test_metadata_describes_the_pipeline_itself(
    default_client: triton.InferenceServerClient,
) -> None:
    metadata = default_client.get_model_metadata("sentence_embedding")
    assert metadata.platform == "ensemble"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("text", "BYTES", [-1])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("embedding", "FP32", [-1, 384])
    ]
    config = default_client.get_model_config("sentence_embedding").config
    assert (config.platform, config.max_batch_size) == ("ensemble", 32)


def test_embeddings_are_unit_length_and_a_paraphrase_scores_above_an_unrelated_pair(
    default_client: triton.InferenceServerClient,
) -> None:
    embeddings = _embed(default_client, GUITAR, PARAPHRASE, UNRELATED)
    assert embeddings.shape == (3, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    similar, unrelated = embeddings[0] @ embeddings[1], embeddings[0] @ embeddings[2]
    assert similar > 0.8 and unrelated < 0.1, (similar, unrelated)


def test_embeddings_equal_client_side_tokenization_minilm_and_pooling(
    default_client: triton.InferenceServerClient, tokenizer: Tokenizer
) -> None:
    texts = [GUITAR, UNRELATED, "Déjà vu in a naïve café, 東京 — ünïcödé", "word " * 300]
    got = _embed(default_client, *texts)  # one request: padded to its longest text
    for row, text in enumerate(texts):
        want = _reference_embedding(default_client, tokenizer, text)
        np.testing.assert_allclose(got[row], want, atol=1e-5, err_msg=text[:40])


def test_text_over_256_tokens_is_truncated_as_configured(
    default_client: triton.InferenceServerClient, tokenizer: Tokenizer
) -> None:
    long = " ".join(f"word{i}" for i in range(400))
    untruncated = Tokenizer.from_file(str(TOKENIZER))
    untruncated.no_truncation()
    assert len(untruncated.encode(long).ids) > MAX_TOKENS
    cut, longer = _embed(default_client, long, long + " and then a different ending entirely")
    np.testing.assert_allclose(cut, longer, atol=1e-6)  # nothing past 256 tokens counts
    want = _reference_embedding(default_client, tokenizer, long)
    np.testing.assert_allclose(cut, want, atol=1e-5)


# --- bad input ----------------------------------------------------------------------------

BAD_INPUTS = [
    (
        "sentence_embedding",
        "text",
        b"caf\xe9",
        "pipeline 'sentence_embedding' step 'tokenize': input 'text' row 0 is not UTF-8 "
        "text (invalid byte at offset 3)",
    ),
    (
        "sentence_embedding",
        "text",
        b"",
        "pipeline 'sentence_embedding' step 'tokenize': input 'text' row 0 is empty",
    ),
    (
        "digit_from_png",
        "image",
        b"%PDF-1.7 not an image",
        "pipeline 'digit_from_png' step 'decode_image': input 'image' row 0 is not a PNG or "
        "JPEG image",
    ),
    (
        "digit_from_png",
        "image",
        b"",
        "pipeline 'digit_from_png' step 'decode_image': input 'image' row 0 is empty",
    ),
    (
        "text_direction_from_image",
        "image",
        b"\xff\xd8\xff\xe0 a JPEG that stops",
        "pipeline 'text_direction_from_image' step 'decode_image': input 'image' row 0 does "
        "not decode: ",
    ),
]


@pytest.mark.parametrize(("model", "name", "data", "message"), BAD_INPUTS)
def test_bad_input_is_invalid_argument_naming_the_step_and_the_server_stays_correct(
    default_client: triton.InferenceServerClient,
    model: str,
    name: str,
    data: bytes,
    message: str,
) -> None:
    with pytest.raises(InferenceServerException) as info:
        default_client.infer(model, [_bytes_input(name, _texts(data))])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert str(info.value.message()).startswith(message)
    good = _encoded(_text_line("fine")) if name == "image" else GUITAR.encode()
    result = default_client.infer(model, [_bytes_input(name, _texts(good, good))])
    assert result.as_numpy(result.get_response().outputs[0].name).shape[0] == 2


@pytest.mark.parametrize("contents", ["raw", "typed"])
def test_a_png_sent_to_an_unknown_model_is_not_found_not_a_codec_error(
    default_stub: service_pb2_grpc.GRPCInferenceServiceStub, contents: str
) -> None:
    """BYTES are bytes: the codec does not read them as text, so non-UTF-8 elements meet the
    model lookup first, in raw contents (as tritonclient sends them) and in typed ones."""
    png = _digit_png(np.full(64, 8.0))
    with pytest.raises(UnicodeDecodeError):
        png.decode()
    request = service_pb2.ModelInferRequest(model_name="no_such_model")
    request.inputs.add(name="image", datatype="BYTES", shape=[2])
    if contents == "raw":
        request.raw_input_contents.append(
            b"".join(len(p).to_bytes(4, "little") + p for p in (png, b"\xff\xfe"))
        )
    else:
        request.inputs[0].contents.bytes_contents.extend([png, b"\xff\xfe"])
    with pytest.raises(grpc.RpcError) as info:
        default_stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert info.value.details() == "unknown model 'no_such_model'"  # type: ignore[attr-defined]


# --- digit_from_png and text_direction_from_image -----------------------------------------


@pytest.fixture(scope="module")
def held_out_digits() -> tuple[np.ndarray, np.ndarray]:
    _, x_test, _, y_test = _build_script().digits_split()
    return x_test, y_test


def test_digit_from_png_classifies_held_out_digits_rendered_to_png(
    default_client: triton.InferenceServerClient, held_out_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x_test, y_test = held_out_digits
    pngs = np.array([_digit_png(row) for row in x_test], dtype=object)
    labels = []
    for start in range(0, len(pngs), 64):
        result = default_client.infer(
            "digit_from_png", [_bytes_input("image", pngs[start : start + 64])]
        )
        labels.append(result.as_numpy("label"))
    accuracy = (np.concatenate(labels) == y_test).mean()
    assert accuracy >= 0.9, accuracy


def test_digit_from_png_feeds_digits_what_pillow_decodes(
    default_client: triton.InferenceServerClient, held_out_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    for row in held_out_digits[0][:5]:
        for png in (_digit_png(row, scale=1), _digit_png(row, scale=4)):
            piped = default_client.infer("digit_from_png", [_bytes_input("image", _texts(png))])
            tensor = triton.InferInput("input", [1, 64], "FP32")
            tensor.set_data_from_numpy(_digit_pixels(png))
            direct = default_client.infer("digits", [tensor])
            for name in ("label", "probabilities"):
                np.testing.assert_allclose(piped.as_numpy(name), direct.as_numpy(name), atol=1e-6)


@pytest.mark.parametrize("model", ["digit_from_png", "digits"])
def test_classification_gives_labelled_top_classes_in_tritons_format(
    default_client: triton.InferenceServerClient,
    held_out_digits: tuple[np.ndarray, np.ndarray],
    model: str,
) -> None:
    rows, labels = held_out_digits[0][:4], held_out_digits[1][:4]
    if model == "digits":
        tensor = triton.InferInput("input", [4, 64], "FP32")
        tensor.set_data_from_numpy(rows.astype(np.float32))
    else:
        tensor = _bytes_input("image", np.array([_digit_png(r) for r in rows], dtype=object))
    outputs = [
        triton.InferRequestedOutput("probabilities", class_count=3),
        triton.InferRequestedOutput("label"),
    ]
    result = default_client.infer(model, [tensor], outputs=outputs)
    classes = result.as_numpy("probabilities")
    assert classes.shape == (4, 3)
    for row, label in zip(classes, result.as_numpy("label"), strict=True):
        parsed = [item.decode().split(":") for item in row]
        assert [len(p) for p in parsed] == [3, 3, 3]
        assert all(index == name for _, index, name in parsed)  # labels "0".."9"
        assert int(parsed[0][1]) == label
        scores = [float(score) for score, _, _ in parsed]
        assert scores == sorted(scores, reverse=True)
        assert all(len(score.split(".")[1]) == 6 for score, _, _ in parsed)  # std::to_string
    assert (result.as_numpy("label") == labels).all()


def test_text_direction_from_image_answers_as_the_model_on_pp_ocr_input(
    default_client: triton.InferenceServerClient,
) -> None:
    lines = [_text_line(t) for t in ("Hello world", "Invoice 2024-05", "ONNX Runtime")]
    images = [*lines, *(line.rotate(180) for line in lines)]
    kinds = ["PNG", "JPEG"] * 3
    encoded = [_encoded(image, kind) for image, kind in zip(images, kinds, strict=True)]
    result = default_client.infer(
        "text_direction_from_image", [_bytes_input("image", np.array(encoded, dtype=object))]
    )
    assert result.as_numpy("label").tolist() == [0, 0, 0, 1, 1, 1]
    for row, data in enumerate(encoded):
        tensor = triton.InferInput("x", [1, 3, 48, 192], "FP32")
        tensor.set_data_from_numpy(_pp_ocr_input(Image.open(io.BytesIO(data)).convert("RGB")))
        probabilities = default_client.infer("text_direction", [tensor]).as_numpy(
            TEXT_DIRECTION_OUTPUT
        )[0]
        assert result.as_numpy("label")[row] == probabilities.argmax()
        np.testing.assert_allclose(result.as_numpy("score")[row], probabilities.max(), atol=1e-5)


# --- many at once -------------------------------------------------------------------------


async def _concurrent(
    address: str, requests: list[tuple[str, str, bytes]]
) -> list[service_pb2.ModelInferResponse]:
    client = triton_aio.InferenceServerClient(address)
    try:

        async def one(index: int, model: str, name: str, data: bytes) -> object:
            tensor = triton_aio.InferInput(name, [1], "BYTES")
            tensor.set_data_from_numpy(np.array([data], dtype=object))
            return await client.infer(model, [tensor], request_id=f"r{index}")

        calls = [one(i, *request) for i, request in enumerate(requests)]
        return await asyncio.gather(*calls)  # type: ignore[return-value]
    finally:
        await client.close()


def test_500_concurrent_pipeline_requests_each_get_their_own_answer(
    default_server: ServerProcess,
    default_client: triton.InferenceServerClient,
    tokenizer: Tokenizer,
    held_out_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    rows = held_out_digits[0]
    words = ["river", "guitar", "market", "winter", "engine", "garden", "letter", "silver"]
    requests = []
    for i in range(500):
        if i % 2:
            text = f"Sentence {i} is about {words[i % 8]} and {words[(i // 8) % 8]}."
            requests.append(("sentence_embedding", "text", text.encode()))
        else:
            requests.append(("digit_from_png", "image", _digit_png(rows[i % len(rows)])))
    results = asyncio.run(_concurrent(default_server.grpc_address, requests))
    for index, (result, (model, _, data)) in enumerate(zip(results, requests, strict=True)):
        response = result.get_response()  # type: ignore[attr-defined]
        assert (response.id, response.model_name) == (f"r{index}", model)
        if model == "sentence_embedding":
            want = _reference_embedding(default_client, tokenizer, data.decode())
            np.testing.assert_allclose(result.as_numpy("embedding")[0], want, atol=1e-5)  # type: ignore[attr-defined]
        else:
            tensor = triton.InferInput("input", [1, 64], "FP32")
            tensor.set_data_from_numpy(_digit_pixels(data))
            want = default_client.infer("digits", [tensor]).as_numpy("probabilities")
            np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)  # type: ignore[attr-defined]


# --- a pipeline that cannot load ----------------------------------------------------------


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(ROOT / "models" / "digits", root / "digits")
    shutil.copytree(ROOT / "models" / "digit_from_png", root / "digit_from_png")
    lost = root / "lost"
    shutil.copytree(ROOT / "models" / "digit_from_png", lost)
    config = (lost / "config.yaml").read_text().replace("model: digits", "model: no_such_model")
    (lost / "config.yaml").write_text(config)
    with start_server(root) as server:
        yield server


def test_a_pipeline_naming_a_missing_model_does_not_load_and_the_index_says_why(
    broken_server: ServerProcess,
) -> None:
    client = triton.InferenceServerClient(broken_server.grpc_address)
    try:
        index = {m.name: (m.state, m.reason) for m in client.get_model_repository_index().models}
        assert index["lost"] == (
            "UNAVAILABLE",
            "version 1: pipeline 'lost' step 'no_such_model': unknown model 'no_such_model'",
        )
        assert index["digit_from_png"] == ("READY", "")
        png = _digit_png(np.full(64, 8.0))
        result = client.infer("digit_from_png", [_bytes_input("image", _texts(png))])
        assert result.as_numpy("label").shape == (1,)
    finally:
        client.close()


# --- through the gateway: gRPC-web and REST -----------------------------------------------


@pytest.fixture(scope="module")
def gateway(
    default_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    built = build(tmp_path_factory.mktemp("gateway-build"))
    log = tmp_path_factory.mktemp("envoy") / "envoy.log"
    with start_gateway(
        default_server.grpc_port, build_dir=built.descriptor_path.parent, log_path=log
    ) as running:
        yield running


def test_sentence_embedding_over_grpc_web_equals_grpc(
    gateway: RunningGateway, default_client: triton.InferenceServerClient
) -> None:
    """Raw sentences as raw BYTES contents, framed as a browser's gRPC-web client does."""
    request = service_pb2.ModelInferRequest(model_name="sentence_embedding")
    request.inputs.add(name="text", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(
        b"".join(len(t).to_bytes(4, "little") + t for t in _texts(GUITAR, PARAPHRASE))
    )
    message = request.SerializeToString()
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        reply = http.post(
            "/inference.GRPCInferenceService/ModelInfer",
            content=grpc_web.frame(message),
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
    assert reply.status_code == 200
    [payload], trailers = grpc_web.reply(reply.content)
    assert trailers["grpc-status"] == "0", trailers
    response = service_pb2.ModelInferResponse.FromString(payload)
    embeddings = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 384)
    np.testing.assert_allclose(embeddings, _embed(default_client, GUITAR, PARAPHRASE), atol=1e-5)


PIPELINES = ("sentence_embedding", "digit_from_png", "text_direction_from_image")
MODEL_OF = {
    "sentence_embedding": "minilm",
    "digit_from_png": "digits",
    "text_direction_from_image": "text_direction",
}


@pytest.mark.parametrize("name", PIPELINES)
def test_a_pipelines_config_is_an_ensembles_over_grpc_and_rest(
    gateway: RunningGateway, default_client: triton.InferenceServerClient, name: str
) -> None:
    """As Triton reports an ensemble: platform "ensemble", an empty backend, no instance
    groups or dynamic batching, and its models under ensemble_scheduling (perf_analyzer
    reads them); the same over V2 REST."""
    config = default_client.get_model_config(name).config
    assert (config.platform, config.backend) == ("ensemble", "")
    assert not config.instance_group
    assert config.WhichOneof("scheduling_choice") == "ensemble_scheduling"
    steps = [(s.model_name, s.model_version) for s in config.ensemble_scheduling.step]
    assert steps == [(MODEL_OF[name], -1)]
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        reply = http.get(f"/v2/models/{name}/config")
    assert reply.status_code == 200, reply.text
    document = reply.json()
    assert (document["name"], document["platform"], document["backend"]) == (name, "ensemble", "")
    assert document["max_batch_size"] == config.max_batch_size
    assert "instance_group" not in document and "dynamic_batching" not in document
    rest_steps = document["ensemble_scheduling"]["step"]
    assert [(s["model_name"], s["model_version"]) for s in rest_steps] == steps
    assert [s["input_map"] for s in rest_steps] == [
        dict(s.input_map) for s in config.ensemble_scheduling.step
    ]
    assert [i["name"] for i in document["input"]] == [i.name for i in config.input]
    assert [o["name"] for o in document["output"]] == [o.name for o in config.output]


def test_sentence_embedding_over_rest_equals_grpc(
    gateway: RunningGateway, default_client: triton.InferenceServerClient
) -> None:
    """V2 REST JSON: BYTES elements are strings in `data`, as the V2 REST protocol says."""
    body = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [2],
                "data": [t.decode() for t in _texts(GUITAR, UNRELATED)],
            }
        ]
    }
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        reply = http.post("/v2/models/sentence_embedding/infer", json=body)
    assert reply.status_code == 200, reply.text
    [output] = reply.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("embedding", "FP32", [2, 384])
    embeddings = np.array(output["data"], np.float32).reshape(2, 384)
    np.testing.assert_allclose(embeddings, _embed(default_client, GUITAR, UNRELATED), atol=1e-5)
