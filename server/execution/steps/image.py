"""`decode_image`: BYTES PNG or JPEG -> an FP32 tensor, with Pillow.

One encoded image per row. Each is decoded, composited over `background` if it has
transparency, converted to `mode`, resized into `size`, and normalized:
`(pixel * scale - mean) / std`, per channel. Options:

    mode: RGB               # L (grey), RGB, or BGR (for models trained on OpenCV's order)
    size: [48, 192]         # [height, width] of the output
    resize: stretch         # stretch: to size exactly; letterbox: keep the aspect ratio,
                            # fit and centre; fit_height: to the height keeping the aspect
                            # ratio, width at most size's (wider ones squeezed), left-aligned
                            # (PP-OCR's text-line resize)
    resample: bilinear      # nearest, box, bilinear, hamming, bicubic, lanczos (Pillow's)
    background: 255         # the grey level transparent pixels take (0 black .. 255 white)
    invert: false           # 255 - pixel, before scaling (dark ink on white -> bright ink)
    scale: 0.00392156862745 # 1/255 by default: pixels in 0..1
    mean: 0                 # a number, or one per channel
    std: 1
    pad: 0                  # the output value of the area letterbox and fit_height leave
    layout: NCHW            # or NHWC (N is the batch: rows)
    flatten: false          # one flat vector per row (e.g. 64 values for an 8x8 grey image)
    max_pixels: 16777216    # larger images are refused before they are decoded

Only PNG and JPEG are opened (no other Pillow decoder is reachable from a request).
Anything that does not decode is refused with INVALID_ARGUMENT naming the row.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from server.core import datatypes
from server.core.errors import InvalidRequest
from server.core.tensors import TensorSpec
from server.execution.steps.options import Options
from server.execution.steps.step import require

BYTES = datatypes.BY_NAME["BYTES"]
FP32 = datatypes.BY_NAME["FP32"]
FORMATS = ("PNG", "JPEG")
CHANNELS = {"L": 1, "RGB": 3, "BGR": 3}
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
RESIZE = ("stretch", "letterbox", "fit_height")


class DecodeImage:
    inputs = ("image",)

    def __init__(self, options: Mapping[str, Any], directory: Path) -> None:
        read = Options(options)
        self.mode = read.choice("mode", tuple(CHANNELS), "RGB")
        self.height, self.width = read.integers("size", 2)
        self.resize = read.choice("resize", RESIZE, "stretch")
        self.resample = RESAMPLE[read.choice("resample", tuple(RESAMPLE), "bilinear")]
        self.background = read.integer("background", 255, minimum=0)
        require(self.background <= 255, "options.background must be 0..255")
        self.invert = read.boolean("invert", False)
        self.scale = read.number("scale", 1 / 255)
        channels = CHANNELS[self.mode]
        self.mean = _per_channel("mean", read.numbers("mean", (0.0,)), channels)
        self.std = _per_channel("std", read.numbers("std", (1.0,)), channels)
        require(bool(np.all(self.std != 0)), "options.std must not be 0")
        self.pad = read.number("pad", 0.0)
        self.layout = read.choice("layout", ("NCHW", "NHWC"), "NCHW")
        self.flatten = read.boolean("flatten", False)
        self.max_pixels = read.integer("max_pixels", 16_777_216)
        read.finish()
        shape = (self.height, self.width, channels)
        dims = shape if self.layout == "NHWC" else (channels, self.height, self.width)
        self.dims: tuple[int, ...] = (math.prod(dims),) if self.flatten else dims

    def bind(self, inputs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
        image = inputs["image"]
        require(
            image.datatype is BYTES and image.dims == (),
            f"input 'image' must be BYTES with one encoded image per row (dims []), got "
            f"{image.datatype.name} {list(image.dims)}",
        )
        return {"pixels": TensorSpec("pixels", FP32, self.dims)}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self.decode(row, item) for row, item in enumerate(inputs["image"])]
        return {"pixels": np.stack(rows)}

    def decode(self, row: int, data: object) -> np.ndarray:
        """One encoded image -> its tensor, without the batch dimension."""
        if not isinstance(data, bytes) or not data:
            raise InvalidRequest(f"input 'image' row {row} is empty", tensor="image")
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                if image.width * image.height > self.max_pixels:
                    raise InvalidRequest(
                        f"input 'image' row {row} is {image.width}x{image.height}, more than "
                        f"max_pixels {self.max_pixels}",
                        tensor="image",
                    )
                placed, left, top = self._resized(self._converted(image))
        except InvalidRequest:
            raise
        except UnidentifiedImageError as exc:
            raise InvalidRequest(
                f"input 'image' row {row} is not a PNG or JPEG image", tensor="image"
            ) from exc
        except Exception as exc:  # whatever a decoder raises, the bytes were the problem
            raise InvalidRequest(
                f"input 'image' row {row} does not decode: {exc}", tensor="image"
            ) from exc
        pixels = np.asarray(placed, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        elif self.mode == "BGR":
            pixels = pixels[:, :, ::-1]
        if self.invert:
            pixels = 255 - pixels
        values = (pixels * self.scale - self.mean) / self.std
        if values.shape[:2] != (self.height, self.width):
            canvas = np.full((self.height, self.width, values.shape[2]), self.pad, np.float32)
            canvas[top : top + values.shape[0], left : left + values.shape[1]] = values
            values = canvas
        if self.layout == "NCHW":
            values = values.transpose(2, 0, 1)
        values = np.ascontiguousarray(values, dtype=np.float32)
        return values.reshape(self.dims)

    def _converted(self, image: Image.Image) -> Image.Image:
        if image.has_transparency_data:
            rgba = image.convert("RGBA")
            grey = self.background
            flat = Image.new("RGBA", rgba.size, (grey, grey, grey, 255))
            flat.alpha_composite(rgba)
            image = flat
        return image.convert("L" if self.mode == "L" else "RGB")

    def _resized(self, image: Image.Image) -> tuple[Image.Image, int, int]:
        """The resized image and where its top-left corner goes in the output."""
        width, height = image.size
        if self.resize == "stretch":
            return image.resize((self.width, self.height), self.resample), 0, 0
        if self.resize == "letterbox":
            factor = min(self.width / width, self.height / height)
            new = (max(1, round(width * factor)), max(1, round(height * factor)))
            left, top = (self.width - new[0]) // 2, (self.height - new[1]) // 2
            return image.resize(new, self.resample), left, top
        new_width = min(self.width, math.ceil(self.height * width / height))
        return image.resize((new_width, self.height), self.resample), 0, 0


def _per_channel(key: str, values: tuple[float, ...], channels: int) -> np.ndarray:
    require(
        len(values) in (1, channels),
        f"options.{key} must be one number or {channels} (one per channel), got {list(values)}",
    )
    return np.array(values, dtype=np.float32)
