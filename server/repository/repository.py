"""The model repository: `<root>/<name>/config.yaml` and `<root>/<name>/<version>/model.onnx`.

Loads are atomic: new versions are built and warmed up off the event loop, then swapped in
with one assignment. Requests already holding the old version finish on it while its
batcher drains. A failed load leaves whatever was serving in place and records why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from server.core.errors import (
    ForbiddenPath,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    RepositoryError,
)
from server.core.model_config import ModelConfig
from server.core.models import LOADING, READY, UNAVAILABLE, UNLOADING, IndexEntry, ServedModel
from server.repository.config import load_config

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"

VersionFactory = Callable[[str, int, ModelConfig, Path], ServedModel]
"""Builds one servable version from its config and model file (a pipeline, which has no
file: its version directory); runs in a worker thread."""


@dataclass(slots=True)
class _Model:
    """What the repository knows about one model name."""

    versions: dict[int, ServedModel] = field(default_factory=dict)  # ready ones
    newest: ServedModel | None = None
    states: dict[str, tuple[str, str]] = field(default_factory=dict)  # version -> state
    unloaded: bool = False  # explicitly unloaded: not counted against server readiness
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Repository:
    """Implements the data plane's `ModelStore`; versions come from `build`."""

    def __init__(
        self,
        root: Path,
        build: VersionFactory,
        on_change: Callable[[str, bool], None] = lambda name, ready: None,
    ) -> None:
        self.root = root.resolve()
        self._build_version = build
        self._on_change = on_change
        self._models: dict[str, _Model] = {}
        self._started = False  # load_all has run

    def model_names(self) -> list[str]:
        """Every model directory in the repository, loaded or not."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    async def load_all(self) -> None:
        """Load every model; one that fails is recorded in the index and does not stop the rest.

        Pipelines load after the other models, since they check the models they name."""
        names = self.model_names()
        pipelines = {name for name in names if _is_pipeline(self.root / name)}
        for wave in ([n for n in names if n not in pipelines], sorted(pipelines)):
            await asyncio.gather(*(self.load(name) for name in wave), return_exceptions=True)
        self._started = True

    def is_ready(self) -> bool:
        """Every model the server was asked to load, and not since asked to unload, serves."""
        return self._started and all(
            m.newest is not None or m.unloaded for m in self._models.values()
        )

    def resolve(self, name: str, version: str = "") -> ServedModel:
        """The version to serve: the newest ready one when `version` is empty."""
        model = self._models.get(name)
        if model is None or (not model.versions and not model.states):
            raise ModelNotFound(f"unknown model '{name}'", model=name)
        if not version:
            if model.newest is None:
                raise ModelUnavailable(f"model '{name}' has no ready version", model=name)
            return model.newest
        if not (version.isascii() and version.isdigit()):
            raise InvalidRequest(
                f"model_version '{version}' must be an integer or empty", model=name
            )
        number = int(version)
        found = model.versions.get(number)
        if found is None:
            raise ModelNotFound(
                f"model '{name}' has no ready version {version}; ready: {sorted(model.versions)}",
                model=name,
                version=version,
            )
        return found

    def versions(self, name: str) -> list[ServedModel]:
        model = self._models.get(name)
        return [model.versions[v] for v in sorted(model.versions)] if model else []

    def loaded(self) -> list[ServedModel]:
        return [v for name in sorted(self._models) for v in self.versions(name)]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        entries = []
        for name in sorted(set(self.model_names()) | set(self._models)):
            model = self._models.get(name)
            states = model.states if model else {"": (UNAVAILABLE, "not loaded")}
            for version, (state, reason) in sorted(states.items()):
                if not ready_only or state == READY:
                    entries.append(IndexEntry(name, version, state, reason))
        return entries

    async def load(self, name: str) -> None:
        """Load or reload a model; raises RepositoryError when no version could be served."""
        model_dir = self._model_dir(name)
        model = self._models.setdefault(name, _Model())
        async with model.lock:
            for version in list(model.states) or [""]:
                model.states[version] = (LOADING, "")
            try:
                built, failures = await asyncio.get_running_loop().run_in_executor(
                    None, self._build, name, model_dir
                )
            except Exception as exc:
                self._record_failure(name, model, str(exc))
                if isinstance(exc, RepositoryError):
                    raise
                raise RepositoryError(f"model '{name}' could not be loaded: {exc}") from exc
            if not built:
                reason = "; ".join(failures.values()) or "no version directory with model.onnx"
                self._record_failure(name, model, reason)
                raise RepositoryError(f"model '{name}' could not be loaded: {reason}")
            old = model.versions
            model.versions = built
            model.newest = model.versions[max(model.versions)]
            model.unloaded = False
            model.states = {str(n): (READY, "") for n in model.versions}
            model.states.update({str(n): (UNAVAILABLE, why) for n, why in failures.items()})
        log.info("loaded model", extra={"model": name, "versions": sorted(model.versions)})
        self._on_change(name, True)
        await _drain(old.values())

    async def unload(self, name: str) -> None:
        model = self._models.get(name)
        if model is None or not model.versions:
            self._model_dir(name)
            raise ModelNotFound(f"model '{name}' is not loaded")
        async with model.lock:
            old = model.versions
            model.states = {str(n): (UNLOADING, "") for n in old}
            model.versions, model.newest = {}, None
            model.unloaded = True
            self._on_change(name, False)
            await _drain(old.values())
            model.states = {str(n): (UNAVAILABLE, "unloaded") for n in old}
        log.info("unloaded model", extra={"model": name})

    async def close(self) -> None:
        """Drain every batcher; sessions are released with their last reference."""
        versions = self.loaded()
        for model in self._models.values():
            model.versions, model.newest = {}, None
        await _drain(versions)

    def _model_dir(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not name or "/" in name or "\\" in name or path.parent != self.root:
            raise ForbiddenPath(
                f"model name '{name}' must name a directory directly inside the repository"
            )
        if not path.is_dir():
            raise ModelNotFound(f"no model '{name}' in the repository")
        return path

    def _build(self, name: str, model_dir: Path) -> tuple[dict[int, ServedModel], dict[int, str]]:
        """Runs in a thread: parse the config, then load and warm up each selected version."""
        config = load_config(model_dir)
        pipeline = bool(config.steps)  # a pipeline's version directories hold no file
        available = [
            int(p.name)
            for p in model_dir.iterdir()
            if p.is_dir() and p.name.isdigit() and (pipeline or (p / MODEL_FILE).is_file())
        ]
        built: dict[int, ServedModel] = {}
        failures: dict[int, str] = {}
        for number in config.version_policy.select(available):
            version_dir = model_dir / str(number)
            try:
                built[number] = self._build_version(
                    name, number, config, version_dir if pipeline else version_dir / MODEL_FILE
                )
            except Exception as exc:  # a broken version must not stop the others
                log.warning(
                    "version failed to load",
                    extra={"model": name, "version": number, "reason": str(exc)},
                )
                failures[number] = f"version {number}: {exc}"
        return built, failures

    def _record_failure(self, name: str, model: _Model, reason: str) -> None:
        log.warning("model failed to load", extra={"model": name, "reason": reason})
        if model.versions:  # the old versions keep serving
            model.states = {str(n): (READY, "") for n in model.versions}
            model.states[""] = (UNAVAILABLE, f"reload failed, previous versions serve: {reason}")
        else:
            model.states = {"": (UNAVAILABLE, reason)}
            self._on_change(name, False)


def _is_pipeline(model_dir: Path) -> bool:
    try:
        return bool(load_config(model_dir).steps)
    except RepositoryError:
        return False  # its load reports the error


async def _drain(versions: Iterable[ServedModel]) -> None:
    await asyncio.gather(*(v.close() for v in versions))
