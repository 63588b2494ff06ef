"""`decode_image` on real PNG and JPEG bytes: equal to Pillow and numpy run directly, for
each mode, resize and layout, and the exact refusals of what does not decode."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server.core import datatypes
from server.core.errors import InvalidRequest
from server.core.tensors import TensorSpec
from server.execution.steps.image import DecodeImage

BYTES = datatypes.BY_NAME["BYTES"]
FP32 = datatypes.BY_NAME["FP32"]


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image with smooth gradients and noise, so resampling has work to do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    channels = [x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _encoded(image: Image.Image, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return buffer.getvalue()


def _rows(*items: bytes) -> dict[str, np.ndarray]:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return {"image": array}


def _run(options: dict[str, object], *items: bytes) -> np.ndarray:
    step = DecodeImage(options, Path("."))
    spec = step.bind({"image": TensorSpec("image", BYTES, ())})["pixels"]
    pixels = step.run(_rows(*items))["pixels"]
    assert spec.datatype is FP32 and pixels.dtype == np.float32
    assert pixels.shape == (len(items), *spec.dims)
    return pixels


def test_rgb_stretch_nchw_equals_pillow_and_numpy() -> None:
    photo = _photo(120, 90)
    data = _encoded(photo)
    got = _run({"size": [48, 64], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}, data)
    resized = Image.open(io.BytesIO(data)).convert("RGB").resize((64, 48), Image.BILINEAR)
    pixels = np.asarray(resized, np.float32) / 255
    want = ((pixels - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.3]).transpose(2, 0, 1)
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-6)


def test_jpeg_grey_nhwc_with_box_filter_and_scale_equals_pillow() -> None:
    data = _encoded(_photo(64, 64, seed=1), "JPEG")
    got = _run(
        {"mode": "L", "size": [8, 8], "resample": "box", "scale": 16 / 255, "layout": "NHWC"},
        data,
    )
    grey = Image.open(io.BytesIO(data)).convert("L").resize((8, 8), Image.BOX)
    want = np.asarray(grey, np.float32)[:, :, None] * (16 / 255)
    np.testing.assert_allclose(got[0], want, rtol=1e-6)


def test_bgr_reverses_the_channels_of_rgb() -> None:
    data = _encoded(_photo(40, 30))
    rgb = _run({"size": [30, 40]}, data)
    bgr = _run({"mode": "BGR", "size": [30, 40]}, data)
    np.testing.assert_array_equal(bgr[0], rgb[0, ::-1])


def test_fit_height_resizes_to_the_height_and_pads_the_right_as_pp_ocr() -> None:
    """PP-OCR's text-line resize: height 48, width ceil(48 * w / h) at most 192."""
    narrow, wide = _photo(100, 40, seed=2), _photo(600, 40, seed=3)
    options = {"mode": "BGR", "size": [48, 192], "resize": "fit_height", "mean": 0.5, "std": 0.5}
    got = _run(options, _encoded(narrow), _encoded(wide))
    for row, image in enumerate([narrow, wide]):
        width = min(192, math.ceil(48 * image.width / image.height))
        resized = image.resize((width, 48), Image.BILINEAR)
        values = (np.asarray(resized, np.float32)[:, :, ::-1] / 255 - 0.5) / 0.5
        want = np.zeros((3, 48, 192), np.float32)
        want[:, :, :width] = values.transpose(2, 0, 1)
        np.testing.assert_allclose(got[row], want, rtol=1e-6, atol=1e-6)
    assert math.ceil(48 * 100 / 40) == 120  # the narrow one was padded, the wide one squeezed


def test_letterbox_keeps_the_aspect_ratio_centred_with_the_pad_value() -> None:
    image = _photo(100, 50, seed=4)
    got = _run({"size": [64, 64], "resize": "letterbox", "pad": -1.0}, _encoded(image))
    resized = np.asarray(image.resize((64, 32), Image.BILINEAR), np.float32) / 255
    want = np.full((64, 64, 3), -1.0, np.float32)
    want[16:48] = resized
    np.testing.assert_allclose(got[0], want.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)


def test_transparency_is_composited_over_the_background_before_inverting() -> None:
    """Dark ink on a transparent canvas, as a browser's canvas exports it."""
    canvas = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    canvas.paste((17, 17, 17, 255), (4, 4, 12, 12))
    options = {"mode": "L", "size": [16, 16], "invert": True, "scale": 1.0, "flatten": True}
    got = _run(options, _encoded(canvas))[0].reshape(16, 16)
    want = np.zeros((16, 16), np.float32)
    want[4:12, 4:12] = 255 - 17
    np.testing.assert_array_equal(got, want)
    black = _run({**options, "background": 0}, _encoded(canvas))[0].reshape(16, 16)
    assert black[0, 0] == 255  # transparent over black, inverted


def test_rows_of_one_batch_are_decoded_each_on_its_own() -> None:
    images = [_photo(32, 32, seed=s) for s in range(3)]
    batch = _run({"size": [16, 16]}, *(_encoded(i) for i in images))
    for row, image in enumerate(images):
        np.testing.assert_array_equal(batch[row], _run({"size": [16, 16]}, _encoded(image))[0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "input 'image' row 0 is empty"),
        (b"this is text, not an image", "input 'image' row 0 is not a PNG or JPEG image"),
        (_encoded(_photo(8, 8), "GIF"), "input 'image' row 0 is not a PNG or JPEG image"),
        (_encoded(_photo(64, 64))[:200], "input 'image' row 0 does not decode: "),
        (
            _encoded(Image.new("L", (5000, 4000))),
            "input 'image' row 0 is 5000x4000, more than max_pixels 16777216",
        ),
    ],
)
def test_what_does_not_decode_is_refused_naming_the_row(data: bytes, message: str) -> None:
    step = DecodeImage({"size": [8, 8]}, Path("."))
    with pytest.raises(InvalidRequest) as info:
        step.run(_rows(data))
    assert info.value.message.startswith(message)
    assert info.value.tensor == "image"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "options.size is required"),
        ({"size": [8]}, "options.size must be a list of 2 positive integers, got [8]"),
        ({"size": [8, 8], "mode": "CMYK"}, "options.mode must be one of ['L', 'RGB', 'BGR']"),
        ({"size": [8, 8], "resize": "crop"}, "options.resize must be one of ['stretch', "),
        ({"size": [8, 8], "mean": [0.1, 0.2]}, "options.mean must be one number or 3"),
        ({"size": [8, 8], "std": 0}, "options.std must not be 0"),
        ({"size": [8, 8], "layout": "CHW"}, "options.layout must be one of ['NCHW', 'NHWC']"),
        ({"size": [8, 8], "colour": "red"}, "unknown option(s) ['colour']"),
    ],
)
def test_options_are_checked_and_refusals_name_the_key(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        DecodeImage(options, Path("."))
    assert str(info.value).startswith(message)


def test_bind_declares_the_output_dims_for_each_layout() -> None:
    image = {"image": TensorSpec("image", BYTES, ())}
    dims = [
        DecodeImage(options, Path(".")).bind(image)["pixels"].dims
        for options in (
            {"size": [48, 192]},
            {"size": [48, 192], "layout": "NHWC"},
            {"size": [8, 8], "mode": "L", "flatten": True},
        )
    ]
    assert dims == [(3, 48, 192), (48, 192, 3), (64,)]
    with pytest.raises(ValueError, match=r"input 'image' must be BYTES with one encoded image"):
        DecodeImage({"size": [8, 8]}, Path(".")).bind(
            {"image": TensorSpec("image", FP32, (3, 8, 8))}
        )
