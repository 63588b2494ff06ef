"""Streaming handlers come in two shapes, and interceptors that wrap them must take both."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any


async def replies(result: Any) -> AsyncIterator[Any]:
    """A streaming behavior's replies, whether it yields them or writes them itself
    (`context.write`) and returns a coroutine."""
    if inspect.isasyncgen(result):
        async for reply in result:
            yield reply
    else:
        await result
