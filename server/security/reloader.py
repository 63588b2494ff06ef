"""Re-reads the keys file, the JWT secret and the JWKS when they change.

Every `interval_s` the files' identities (inode, size, modification time) are compared
with those last loaded, so an edit, a rename into place or a Kubernetes secret update is
picked up without a restart; SIGHUP checks at once and re-reads everything. A file that
fails to load leaves what was loaded before in force, and the failure is logged (with
the reason, never the contents).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[int, int, int] | None, ...]


class Reloadable(Protocol):
    @property
    def paths(self) -> tuple[Path, ...]: ...

    def reload(self) -> None:
        """Re-read the files; raise ValueError (with a reason) and keep the old state if
        they are unusable."""
        ...


def fingerprint(paths: Sequence[Path]) -> Fingerprint:
    prints: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            prints.append(None)
        else:
            prints.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(prints)


class Reloader:
    def __init__(self, sources: Sequence[Reloadable], interval_s: float) -> None:
        self._sources = list(sources)
        self._interval_s = interval_s
        self._prints = [fingerprint(source.paths) for source in self._sources]
        self._task: asyncio.Task[None] | None = None

    def check(self, force: bool = False) -> None:
        """Reload the sources whose files changed (all of them when `force`)."""
        for index, source in enumerate(self._sources):
            current = fingerprint(source.paths)
            if not force and current == self._prints[index]:
                continue
            self._prints[index] = current
            files = [str(path) for path in source.paths]
            try:
                source.reload()
            except ValueError as exc:
                log.error(
                    "reload failed; what was loaded before stays in force",
                    extra={"event": "security_reload_failed", "files": files, "reason": str(exc)},
                )
            else:
                log.info("reloaded", extra={"event": "security_reloaded", "files": files})

    def start(self) -> None:
        if self._sources and self._interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.check()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
