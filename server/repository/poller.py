"""`--model-control-mode poll`: follow the repository directory.

A plain scan every `--repository-poll-secs` (no inotify: it works the same on every file
system, including the network and overlay mounts that model repositories live on). A
model is reloaded when its config.yaml or any file of a version directory changes, or
when a version directory appears or goes; it is loaded when its directory appears and
removed when it goes. The repository rebuilds only the versions that changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from server.core.errors import InferenceError
from server.repository.repository import Fingerprint, Repository, config_fingerprint, fingerprint

log = logging.getLogger(__name__)

Snapshot = dict[str, tuple[Fingerprint, dict[str, Fingerprint]]]


class Poller:
    def __init__(self, repository: Repository, interval_s: float) -> None:
        self._repository = repository
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self._last: Snapshot = {}

    def scan(self) -> Snapshot:
        """Every model directory's config and version fingerprints."""
        root = self._repository.root
        snapshot: Snapshot = {}
        for name in self._repository.model_names():
            model_dir = root / name
            versions = {
                p.name: fingerprint(p)
                for p in model_dir.iterdir()
                if p.is_dir() and p.name.isdigit()
            }
            snapshot[name] = (config_fingerprint(model_dir), versions)
        return snapshot

    def start(self) -> None:
        """Take the state loaded at start-up as the baseline, then poll."""
        self._last = self.scan()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.poll()

    async def poll(self) -> None:
        """Apply whatever changed since the last scan."""
        loop = asyncio.get_running_loop()
        current = await loop.run_in_executor(None, self.scan)
        previous, self._last = self._last, current
        for name in sorted(previous.keys() - current.keys()):
            await self._repository.remove(name)
        changed = [name for name in sorted(current) if previous.get(name) != current[name]]
        for name in changed:
            with contextlib.suppress(InferenceError):  # recorded in the index and logged
                await self._repository.apply(name)
        if changed:
            log.info("repository poll applied changes", extra={"models": changed})
