"""The model repository: `<root>/<name>/config.yaml` and `<root>/<name>/<version>/...`.

Loads are atomic: new versions are built and warmed up off the event loop, then swapped in
with one assignment. Requests already holding the old version finish on it while it
drains. A failed load leaves whatever was serving in place and records why. A reload
rebuilds only what changed: a version whose files and config are as they were is kept,
statistics and all. Labels and deprecation do not count as a config change (`rebuild_key`):
moving a label or deprecating a version applies to the kept versions at once.

Loads and unloads run as tasks the repository owns, so a client that gives up on its RPC
cannot leave a model half-loaded: the work finishes, and the states stay true.

Readiness (ServerReady, health service ""), as Triton defines it: every model the server
is expected to serve has a ready version. Loading a model adds the expectation; an
explicit unload, or its directory leaving the repository in poll mode, removes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.core.errors import (
    ControlDisabled,
    ForbiddenPath,
    InferenceError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    RepositoryError,
)
from server.core.model_config import ModelConfig
from server.core.models import LOADING, READY, UNAVAILABLE, UNLOADING, IndexEntry, ServedModel
from server.repository.config import CONFIG_FILE, load_config

log = logging.getLogger(__name__)

VersionFactory = Callable[[str, int, ModelConfig, Path], ServedModel]
"""Builds one servable version from its config and its version directory (a model file
in it, or nothing: a pipeline's); runs in a worker thread, and raises when the version
cannot be served."""

Fingerprint = tuple[tuple[str, int, int], ...]  # (file, mtime_ns, size) for each file


def fingerprint(directory: Path) -> Fingerprint:
    """What a reload compares: every file's name, modification time and size."""
    if not directory.is_dir():
        return ()
    prints = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed since it was listed: it is not there
            prints.append((str(path.relative_to(directory)), stat.st_mtime_ns, stat.st_size))
    return tuple(prints)


def config_fingerprint(model_dir: Path) -> Fingerprint:
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return ()
    stat = path.stat()
    return ((CONFIG_FILE, stat.st_mtime_ns, stat.st_size),)


def rebuild_key(config: ModelConfig) -> ModelConfig:
    """What a version is built from: its config without the version labels and the
    deprecation notices, which serving reads from `ServedModel.config` per request, so a
    reload gives them to the versions it keeps without rebuilding them."""
    return dataclasses.replace(config, labels={}, deprecated={})


@dataclass(slots=True)
class _Built:
    """The outcome of building one model's versions in a worker thread."""

    config: ModelConfig
    labels: dict[str, int]
    versions: dict[int, tuple[ServedModel, Fingerprint]]
    failures: dict[int, str]


@dataclass(slots=True)
class _Model:
    """What the repository knows about one model name."""

    versions: dict[int, ServedModel] = field(default_factory=dict)  # ready ones
    prints: dict[int, Fingerprint] = field(default_factory=dict)  # of the ready ones
    built_from: ModelConfig | None = None  # rebuild_key of the ready versions' config
    labels: dict[str, int] = field(default_factory=dict)
    newest: ServedModel | None = None
    states: dict[str, tuple[str, str]] = field(default_factory=dict)  # version -> state
    expected: bool = False  # counted in server readiness
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Repository:
    """Implements the data plane's `ModelStore`; versions come from `build`.

    `rpc_control`: whether the load and unload RPCs may change what is served (the
    explicit control mode); in the none and poll modes they answer ControlDisabled."""

    def __init__(
        self,
        root: Path,
        build: VersionFactory,
        on_change: Callable[[str, bool], None] = lambda name, ready: None,
        rpc_control: bool = True,
        mode: str = "explicit",
    ) -> None:
        self.root = root.resolve()
        self._build_version = build
        self._on_change = on_change
        self._rpc_control = rpc_control
        self._mode = mode
        self._models: dict[str, _Model] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    def model_names(self) -> list[str]:
        """Every model directory in the repository, loaded or not."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    async def start(self, names: Sequence[str] | None = None) -> None:
        """Load `names` (every model when None); one that fails is recorded in the index
        and does not stop the rest."""
        chosen = self.model_names() if names is None else list(names)
        # Pipelines load after the other models, since they check the models they name.
        pipelines = {name for name in chosen if _is_pipeline(self.root / name)}
        for wave in ([n for n in chosen if n not in pipelines], sorted(pipelines)):
            await asyncio.gather(*(self.apply(name) for name in wave), return_exceptions=True)
        self._started = True

    def is_ready(self) -> bool:
        return self._started and all(
            m.newest is not None for m in self._models.values() if m.expected
        )

    def resolve(self, name: str, version: str = "") -> ServedModel:
        """The version to serve: the newest ready one when `version` is empty; a label
        names the version the config gives it."""
        model = self._models.get(name)
        if model is None or (not model.versions and not model.states):
            raise ModelNotFound(f"unknown model '{name}'", model=name)
        if not version:
            if model.newest is None:
                raise ModelUnavailable(f"model '{name}' has no ready version", model=name)
            return model.newest
        if version.isascii() and version.isdigit():
            number = int(version)
        elif version in model.labels:
            number = model.labels[version]
        else:
            labels = f", one of the labels {sorted(model.labels)}," if model.labels else ""
            raise InvalidRequest(
                f"model_version '{version}' must be an integer{labels} or empty",
                model=name,
                version=version,
            )
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

    # --- the repository RPCs ------------------------------------------------------------

    async def load(self, name: str) -> None:
        """RepositoryModelLoad: load or reload; raises RepositoryError when no version
        could be served."""
        self._check_control("load")
        await self._owned(self.apply(name))

    async def unload(self, name: str) -> None:
        """RepositoryModelUnload: stop serving every version. Unloading a model that is
        not loaded succeeds; a name with no directory is ModelNotFound."""
        self._check_control("unload")
        await self._owned(self._unload(name))

    def _check_control(self, action: str) -> None:
        if not self._rpc_control:
            raise ControlDisabled(
                f"model {action} is disabled in model control mode '{self._mode}'; "
                "start the server with --model-control-mode explicit to use it"
            )

    # --- what poll mode changes (server.repository.poller) ------------------------------

    async def reload(self, name: str) -> None:
        """Load or reload `name` from its directory, whatever the control mode, as a task
        the repository owns: stopping the poller cannot leave its states at LOADING."""
        await self._owned(self.apply(name))

    async def remove(self, name: str) -> None:
        """The model's directory is gone: stop serving it and forget it, as an owned task."""
        await self._owned(self._remove(name))

    async def _owned(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task of the repository's: cancelling the caller does not stop it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    # --- what changes the served versions ----------------------------------------------

    async def apply(self, name: str) -> None:
        """Load or reload `name` from its directory, rebuilding only what changed."""
        try:
            model_dir = self._model_dir(name)
        except ForbiddenPath as exc:
            if name in self.model_names():  # a listed directory that links outside
                refused = self._models.setdefault(name, _Model())
                refused.expected = True
                self._record_failure(name, refused, str(exc))
            raise
        model = self._models.setdefault(name, _Model())
        model.expected = True
        async with model.lock:
            for version in list(model.states) or [""]:
                model.states[version] = (LOADING, "")
            old = {n: (served, model.prints[n]) for n, served in model.versions.items()}
            try:
                built = await asyncio.get_running_loop().run_in_executor(
                    None, self._build, name, model_dir, model.built_from, old
                )
            except Exception as exc:
                self._record_failure(name, model, str(exc))
                if isinstance(exc, RepositoryError):
                    raise
                raise RepositoryError(
                    f"model '{name}' could not be loaded: {exc}", model=name
                ) from exc
            if not built.versions:
                reason = "; ".join(built.failures.values()) or (
                    f"no version directory: expected {name}/<number>/ holding the model"
                )
                self._record_failure(name, model, reason)
                raise RepositoryError(f"model '{name}' could not be loaded: {reason}", model=name)
            kept = {
                n for n, (served, _) in built.versions.items() if n in old and old[n][0] is served
            }
            retired = [served for n, (served, _) in old.items() if n not in kept]
            model.versions = {n: served for n, (served, _) in sorted(built.versions.items())}
            model.prints = {n: prints for n, (_, prints) in sorted(built.versions.items())}
            for number in kept:  # an edit of labels or deprecation only: theirs now
                model.versions[number].config = built.config
            model.built_from = rebuild_key(built.config)
            model.labels = built.labels
            model.newest = model.versions[max(model.versions)]
            model.states = {str(n): (READY, "") for n in model.versions}
            model.states.update({str(n): (UNAVAILABLE, why) for n, why in built.failures.items()})
        log.info(
            "loaded model",
            extra={"model": name, "versions": sorted(model.versions), "kept": sorted(kept)},
        )
        self._on_change(name, True)
        await _drain(retired)

    async def _unload(self, name: str) -> None:
        model = self._models.get(name)
        if model is None:
            self._model_dir(name)  # NOT_FOUND for a name with no directory
            model = self._models[name] = _Model()
        async with model.lock:
            old = model.versions
            if not old:  # nothing to stop: keep what the index says, drop the expectation
                model.expected = False
                model.states = model.states or {"": (UNAVAILABLE, "unloaded")}
                self._on_change(name, False)
                return
            model.states = {str(n): (UNLOADING, "") for n in old}
            model.versions, model.prints, model.newest = {}, {}, None
            model.built_from = None
            model.expected = False
            self._on_change(name, False)
            await _drain(old.values())
            model.states = {str(n): (UNAVAILABLE, "unloaded") for n in old}
        log.info("unloaded model", extra={"model": name})

    async def _remove(self, name: str) -> None:
        model = self._models.get(name)
        if model is None:
            return
        async with model.lock:
            old = model.versions
            del self._models[name]
            self._on_change(name, False)
            await _drain(old.values())
        log.info("removed model", extra={"model": name})

    def abort(self, error: InferenceError) -> None:
        """Fail every request still waiting on a version (see `ServedModel.abort`)."""
        for version in self.loaded():
            version.abort(error)

    async def close(self) -> None:
        """Drain every version; sessions are released with their last reference.
        Cancelled (a shutdown out of time), the versions abort what still runs."""
        versions = self.loaded()
        for model in self._models.values():
            model.versions, model.newest = {}, None
        await asyncio.gather(*(v.close() for v in versions))

    def _model_dir(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ForbiddenPath(
                f"model name '{name}' must name a directory directly inside the repository"
            )
        path = (self.root / name).resolve()
        if path.parent != self.root:
            raise ForbiddenPath(
                f"model '{name}' is a link that resolves outside the repository", model=name
            )
        if not path.is_dir():
            raise ModelNotFound(f"no model '{name}' in the repository", model=name)
        return path

    def _build(
        self,
        name: str,
        model_dir: Path,
        built_from: ModelConfig | None,
        old: dict[int, tuple[ServedModel, Fingerprint]],
    ) -> _Built:
        """Runs in a thread: parse the config, then build each selected version whose
        files or config (but for labels and deprecation) changed, and keep the others."""
        config = load_config(model_dir)
        unchanged = built_from is not None and rebuild_key(config) == built_from
        available = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        versions: dict[int, tuple[ServedModel, Fingerprint]] = {}
        failures: dict[int, str] = {}
        for number in config.version_policy.select(available):
            version_dir = model_dir / str(number)
            prints = fingerprint(version_dir)
            previous = old.get(number)
            if previous is not None and previous[1] == prints and unchanged:
                versions[number] = previous
                continue
            try:
                versions[number] = (self._build_version(name, number, config, version_dir), prints)
            except Exception as exc:  # a broken version must not stop the others
                log.warning(
                    "version failed to load",
                    extra={"model": name, "version": number, "reason": str(exc)},
                )
                failures[number] = f"version {number}: {exc}"
        return _Built(config, dict(config.labels), versions, failures)

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
    except (RepositoryError, OSError):
        return False  # its load reports the error


async def _drain(versions: Iterable[ServedModel]) -> None:
    """Let retired versions finish what they hold. Shielded: a caller that is cancelled
    (the poller, when shutdown begins) must not abort requests still running on them."""
    await asyncio.shield(asyncio.gather(*(v.close() for v in versions)))
