"""`--model-control-mode poll`: follow the repository directory.

A plain scan every `--repository-poll-secs` (no inotify: it works the same on every file
system, including the network and overlay mounts that model repositories live on). A
model is reloaded when its config.yaml or any file of a version directory changes, or
when a version directory appears or goes; it is loaded when its directory appears and
removed when it goes. The repository rebuilds only the versions that changed.

A poll that fails (an unreadable or vanished repository root, say) changes nothing and is
logged, at most once every ERROR_LOG_INTERVAL_S; the next one tries again. A model
directory that vanishes while it is scanned counts as gone, and one whose files change
while they are read is compared again at the next poll. Loads and removals run as tasks
the repository owns, so stopping the poller never leaves a model half-loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from server.core.errors import InferenceError
from server.repository.repository import Fingerprint, Repository, config_fingerprint, fingerprint

log = logging.getLogger(__name__)

Snapshot = dict[str, tuple[Fingerprint, dict[str, Fingerprint]]]

ERROR_LOG_INTERVAL_S = 60.0


class Poller:
    def __init__(self, repository: Repository, interval_s: float) -> None:
        self._repository = repository
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self._last: Snapshot = {}
        self._failures = 0  # polls failed in a row
        self._logged_at: float | None = None  # when the last failure was logged

    def scan(self) -> Snapshot:
        """Every model directory's config and version fingerprints. Raises OSError when
        the root itself cannot be read: a vanished root is a failed poll, not the removal
        of every model."""
        root = self._repository.root
        if not root.is_dir():
            raise FileNotFoundError(f"the model repository {root} is not a directory")
        snapshot: Snapshot = {}
        for name in self._repository.model_names():
            model_dir = root / name
            try:
                snapshot[name] = (config_fingerprint(model_dir), _versions(model_dir))
            except OSError as exc:
                if not model_dir.is_dir():
                    continue  # removed while it was scanned: it is gone
                # Changing while it was read: this poll leaves it as it was, and the next
                # one compares it again.
                log.info(
                    "model directory changed while scanned",
                    extra={"model": name, "reason": str(exc)},
                )
                if name in self._last:
                    snapshot[name] = self._last[name]
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
            try:
                await self.poll()
            except Exception as exc:
                self._failed(exc)
            else:
                if self._failures:
                    log.info("repository poll recovered", extra={"failed_polls": self._failures})
                    self._failures, self._logged_at = 0, None

    def _failed(self, exc: Exception) -> None:
        """Log a failed poll, at most once every ERROR_LOG_INTERVAL_S."""
        self._failures += 1
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < ERROR_LOG_INTERVAL_S:
            return
        self._logged_at = now
        log.warning(
            "repository poll failed; the served models stay as they are, and the next poll "
            "tries again",
            exc_info=exc,
            extra={"failed_polls": self._failures, "reason": str(exc)},
        )

    async def poll(self) -> None:
        """Apply whatever changed since the last scan."""
        loop = asyncio.get_running_loop()
        current = await loop.run_in_executor(None, self.scan)
        previous, self._last = self._last, dict(current)
        removed = sorted(previous.keys() - current.keys())
        changed = [name for name in sorted(current) if previous.get(name) != current[name]]
        unexpected: list[Exception] = []
        for name in removed + changed:
            try:
                if name in removed:
                    await self._repository.remove(name)
                else:
                    await self._repository.reload(name)
            except InferenceError:
                pass  # recorded in the index and logged; retried when the directory changes
            except Exception as exc:
                # Not the model's fault: the next poll tries it again.
                unexpected.append(exc)
                if name in previous:
                    self._last[name] = previous[name]
                else:
                    self._last.pop(name, None)
        if changed or removed:
            log.info(
                "repository poll applied changes", extra={"models": changed, "removed": removed}
            )
        if unexpected:
            raise unexpected[0]


def _versions(model_dir: Path) -> dict[str, Fingerprint]:
    return {p.name: fingerprint(p) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}
