"""What one input may ask for, and the length-prefixed form of BYTES elements: the same
rules for every face, checked before anything is allocated for the input.

`source` in the messages is the face's own word for where the bytes came from ("raw
content" on gRPC, "binary data" on V2 REST), so that a client reads the field it sent.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from server.core.errors import InvalidRequest

# The defaults of --max-batch-rows and --max-element-bytes (server.settings).
MAX_BATCH_ROWS = 1024
MAX_ELEMENT_BYTES = 8 * 1024 * 1024

_LENGTH = struct.Struct("<I")


def element_count(name: str, shape: tuple[int, ...], max_elements: int, max_rows: int) -> int:
    """The elements `shape` holds (its dimensions are non-negative), within the limits."""
    count = math.prod(shape)
    if count > max_elements:
        raise InvalidRequest(
            f"input '{name}': {count} elements exceed the limit of {max_elements}", tensor=name
        )
    if shape and shape[0] > max_rows:
        raise InvalidRequest(
            f"input '{name}': {shape[0]} rows exceed the limit of {max_rows} (--max-batch-rows)",
            tensor=name,
        )
    if not count and math.prod(d for d in shape if d) > max_elements:  # numpy refuses them
        raise InvalidRequest(
            f"input '{name}': shape {list(shape)} has no elements, but its other "
            f"dimensions exceed the limit of {max_elements}",
            tensor=name,
        )
    return count


def too_long(name: str, length: int, longest: int) -> InvalidRequest:
    return InvalidRequest(
        f"input '{name}': a BYTES element of {length} bytes exceeds the limit of {longest} "
        "(--max-element-bytes)",
        tensor=name,
    )


def split_bytes(
    name: str,
    source: str,
    shape: tuple[int, ...],
    count: int,
    raw: bytes | memoryview,
    longest: int,
) -> np.ndarray:
    """BYTES elements, each a 4-byte little-endian length and then its bytes, as an object
    array of `shape`. The loop stops at the element count the shape declares, so a body
    cannot make it run longer than the request admits to."""
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if len(items) == count:
            raise InvalidRequest(
                f"input '{name}': {source} holds more than the {count} BYTES elements "
                f"that shape {list(shape)} declares",
                tensor=name,
            )
        if offset + 4 > end:
            raise InvalidRequest(
                f"input '{name}': {source} ends inside a BYTES length prefix", tensor=name
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        if length > longest:
            raise too_long(name, length, longest)
        offset += 4
        if offset + length > end:
            raise InvalidRequest(
                f"input '{name}': a BYTES element runs past the end of the {source}",
                tensor=name,
            )
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidRequest(
            f"input '{name}': {source} holds {len(items)} BYTES elements but shape "
            f"{list(shape)} needs {count}",
            tensor=name,
        )
    return objects(items, shape)


def objects(items: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    """BYTES elements as an object array (numpy would make fixed-width bytes of them)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def element_bytes(item: object) -> bytes:
    """A BYTES element as bytes: ONNX Runtime hands back text as str."""
    return item.encode("utf-8") if isinstance(item, str) else bytes(item)  # type: ignore[call-overload]


def join_bytes(data: np.ndarray) -> bytes:
    """BYTES elements in the length-prefixed form `split_bytes` reads."""
    parts = []
    for item in data.ravel():
        encoded = element_bytes(item)
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)
