"""Strict reading of a step's `options` from config.yaml.

Each getter names the key in its error; `finish` refuses keys no getter asked for, so a
typo fails the load instead of silently falling back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_REQUIRED: Any = object()


class Options:
    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = raw
        self._read: set[str] = set()

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        if key in self._raw:
            return self._raw[key]
        if default is _REQUIRED:
            raise ValueError(f"options.{key} is required")
        return default

    def choice(self, key: str, choices: Sequence[str], default: str = _REQUIRED) -> str:
        value = self._get(key, default)
        if value not in choices:
            raise ValueError(f"options.{key} must be one of {list(choices)}, got {value!r}")
        return str(value)

    def boolean(self, key: str, default: bool = _REQUIRED) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ValueError(f"options.{key} must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int = _REQUIRED, minimum: int = 1) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"options.{key} must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, key: str, default: float = _REQUIRED) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"options.{key} must be a number, got {value!r}")
        return float(value)

    def numbers(self, key: str, default: Sequence[float] = _REQUIRED) -> tuple[float, ...]:
        """A number or a list of numbers (one per channel)."""
        value = self._get(key, default)
        values = value if isinstance(value, list | tuple) else [value]
        if not values or any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
            raise ValueError(f"options.{key} must be a number or a list of numbers, got {value!r}")
        return tuple(float(v) for v in values)

    def integers(
        self, key: str, length: int, default: Sequence[int] = _REQUIRED
    ) -> tuple[int, ...]:
        """A list of `length` positive integers."""
        value = self._get(key, default)
        if (
            not isinstance(value, list | tuple)
            or len(value) != length
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
        ):
            raise ValueError(
                f"options.{key} must be a list of {length} positive integers, got {value!r}"
            )
        return tuple(value)

    def file(self, key: str, directory: Path) -> Path:
        """A file inside `directory` (the version directory): nothing outside it is read."""
        path = self.optional_file(key, directory)
        if path is None:
            raise ValueError(f"options.{key} is required")
        return path

    def optional_file(self, key: str, directory: Path) -> Path | None:
        value = self._get(key, None)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ValueError(f"options.{key} must be a file name, got {value!r}")
        root = directory.resolve()
        path = (root / value).resolve()
        if root not in path.parents:
            raise ValueError(f"options.{key}: {value!r} must be a file in the version directory")
        if not path.is_file():
            raise ValueError(f"options.{key}: no file {value!r} in {root}")
        return path

    def finish(self) -> None:
        unknown = sorted(set(self._raw) - self._read)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; this step takes {sorted(self._read)}")
