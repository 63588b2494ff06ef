"""The repository through its injected version factory: fakes stand in for ONNX Runtime.

Model files only need to exist; the fake factory builds a version from the config and the
path, and fails where a test tells it to.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from pathlib import Path

import pytest

from server.core import datatypes
from server.core.errors import (
    ControlDisabled,
    ForbiddenPath,
    InferenceError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    RepositoryError,
)
from server.core.inference import InferenceRequest, Plan
from server.core.model_config import ModelConfig
from server.core.models import IndexEntry, Outputs
from server.core.statistics import BatcherStatistics, ModelStats
from server.core.tensors import Signature, TensorSpec
from server.repository import poller as poller_module
from server.repository.poller import Poller, Snapshot
from server.repository.repository import Fingerprint, Repository

FP32 = datatypes.BY_NAME["FP32"]
SIGNATURE = Signature(0, (TensorSpec("x", FP32, (1,)),), (TensorSpec("y", FP32, (1,)),))


class FakeVersion:
    """A served version that answers nothing; it only remembers whether it was closed
    or aborted."""

    def __init__(self, name: str, version: int, config: ModelConfig, path: Path) -> None:
        self.name, self.version, self.config, self.path = name, version, config, path
        self.signature = SIGNATURE
        self.stats = ModelStats()
        self.closed = False
        self.aborted: InferenceError | None = None

    def validate(self, request: InferenceRequest) -> Plan:
        raise NotImplementedError

    def submit(self, plan: Plan, deadline: float | None, eager: bool) -> asyncio.Future[Outputs]:
        raise NotImplementedError

    def statistics(self) -> BatcherStatistics:
        return BatcherStatistics(0, 0, 1)

    def abort(self, error: InferenceError) -> None:
        self.aborted = error

    async def close(self) -> None:
        self.closed = True


class FakeFactory:
    """Builds FakeVersions; `failing` holds (model, version) pairs that raise instead."""

    def __init__(self) -> None:
        self.built: list[FakeVersion] = []
        self.failing: set[tuple[str, int]] = set()

    def __call__(self, name: str, number: int, config: ModelConfig, path: Path) -> FakeVersion:
        if (name, number) in self.failing:
            raise RepositoryError(f"cannot load {name}/{number}")
        version = FakeVersion(name, number, config, path)
        self.built.append(version)
        return version


def add_version(root: Path, name: str, version: int, config: str = "") -> None:
    (root / name / str(version)).mkdir(parents=True, exist_ok=True)
    (root / name / str(version) / "model.onnx").write_bytes(b"not read by the fake")
    if config or not (root / name / "config.yaml").exists():
        (root / name / "config.yaml").write_text(config)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    add_version(root, "a", 1)
    add_version(root, "a", 2)
    add_version(root, "b", 1, "version_policy: {all: true}\n")
    add_version(root, "b", 3)
    return root


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def changes() -> list[tuple[str, bool]]:
    return []


@pytest.fixture
def repository(root: Path, factory: FakeFactory, changes: list[tuple[str, bool]]) -> Repository:
    return Repository(root, factory, on_change=lambda name, ready: changes.append((name, ready)))


def served(repository: Repository, name: str) -> list[int]:
    return [v.version for v in repository.versions(name)]


async def test_load_all_builds_the_versions_each_policy_selects(
    repository: Repository, factory: FakeFactory, root: Path, changes: list[tuple[str, bool]]
) -> None:
    await repository.start()
    assert served(repository, "a") == [2]  # latest 1 by default
    assert served(repository, "b") == [1, 3]
    assert repository.resolve("b").version == 3
    assert repository.resolve("b", "1").version == 1
    assert {(v.name, v.version, v.path) for v in factory.built} == {
        (("a", 2, root / "a" / "2")),
        ("b", 1, root / "b" / "1"),
        ("b", 3, root / "b" / "3"),
    }
    assert sorted(changes) == [("a", True), ("b", True)]
    assert repository.is_ready()
    assert repository.index() == [
        IndexEntry("a", "2", "READY", ""),
        IndexEntry("b", "1", "READY", ""),
        IndexEntry("b", "3", "READY", ""),
    ]


async def test_resolve_refuses_unknown_models_versions_and_malformed_versions(
    repository: Repository,
) -> None:
    await repository.start()
    with pytest.raises(ModelNotFound, match="unknown model 'zzz'"):
        repository.resolve("zzz")
    with pytest.raises(ModelNotFound, match=r"model 'a' has no ready version 1; ready: \[2\]"):
        repository.resolve("a", "1")
    with pytest.raises(InvalidRequest, match="model_version 'v2' must be an integer or empty"):
        repository.resolve("a", "v2")


async def test_a_reload_serves_new_versions_and_drains_the_old_ones(
    repository: Repository, factory: FakeFactory, root: Path
) -> None:
    await repository.start()
    old = repository.resolve("a")
    add_version(root, "a", 5)
    await repository.load("a")
    assert served(repository, "a") == [5]
    assert old.closed  # type: ignore[attr-defined]
    assert repository.index()[0] == IndexEntry("a", "5", "READY", "")


async def test_a_failed_reload_keeps_the_old_versions_serving(
    repository: Repository, factory: FakeFactory, root: Path
) -> None:
    await repository.start()
    old = repository.resolve("a")
    add_version(root, "a", 7)
    factory.failing.add(("a", 7))
    with pytest.raises(RepositoryError, match="cannot load a/7") as refused:
        await repository.load("a")
    assert (refused.value.model, refused.value.reason) == ("a", "repository_error")
    assert repository.resolve("a") is old
    assert not old.closed  # type: ignore[attr-defined]
    entries = [e for e in repository.index() if e.name == "a"]
    assert entries[0] == IndexEntry(
        "a", "", "UNAVAILABLE", "reload failed, previous versions serve: version 7: cannot load a/7"
    )
    assert entries[1] == IndexEntry("a", "2", "READY", "")


async def test_one_broken_version_does_not_stop_the_others(
    repository: Repository, factory: FakeFactory
) -> None:
    factory.failing.add(("b", 1))
    await repository.start()
    assert served(repository, "b") == [3]
    assert [e for e in repository.index() if e.name == "b"] == [
        IndexEntry("b", "1", "UNAVAILABLE", "version 1: cannot load b/1"),
        IndexEntry("b", "3", "READY", ""),
    ]


async def test_a_model_that_cannot_load_is_unavailable_and_the_server_not_ready(
    repository: Repository, factory: FakeFactory, changes: list[tuple[str, bool]]
) -> None:
    factory.failing.add(("a", 2))
    await repository.start()
    with pytest.raises(ModelUnavailable, match="model 'a' has no ready version"):
        repository.resolve("a")
    assert ("a", False) in changes
    assert not repository.is_ready()


async def test_a_bad_config_is_reported_in_the_index(repository: Repository, root: Path) -> None:
    (root / "a" / "config.yaml").write_text("max_batch_size: '3'\n")
    await repository.start()
    (entry,) = [e for e in repository.index() if e.name == "a"]
    assert entry.state == "UNAVAILABLE"
    assert "max_batch_size must be an integer, got '3'" in entry.reason


async def test_unloading_what_is_not_loaded_succeeds(repository: Repository) -> None:
    await repository.start(["b"])
    await repository.unload("a")
    assert [e for e in repository.index() if e.name == "a"] == [
        IndexEntry("a", "", "UNAVAILABLE", "unloaded")
    ]
    with pytest.raises(ModelNotFound, match="no model 'nope' in the repository"):
        await repository.unload("nope")


async def test_abort_reaches_every_loaded_version(repository: Repository) -> None:
    await repository.start()
    error = InferenceError("out of time")
    repository.abort(error)
    versions = repository.loaded()
    assert len(versions) > 1
    assert all(v.aborted is error for v in versions)  # type: ignore[attr-defined]


async def test_unload_drains_the_versions_and_leaves_the_server_ready(
    repository: Repository, changes: list[tuple[str, bool]]
) -> None:
    await repository.start()
    versions = repository.versions("b")
    await repository.unload("b")
    assert all(v.closed for v in versions)  # type: ignore[attr-defined]
    with pytest.raises(ModelUnavailable):
        repository.resolve("b")
    assert changes[-1] == ("b", False)
    assert [e for e in repository.index() if e.name == "b"] == [
        IndexEntry("b", "1", "UNAVAILABLE", "unloaded"),
        IndexEntry("b", "3", "UNAVAILABLE", "unloaded"),
    ]
    assert repository.is_ready()  # an explicit unload removes the expectation
    await repository.load("b")
    assert served(repository, "b") == [1, 3]


async def test_model_names_must_stay_inside_the_repository(repository: Repository) -> None:
    for name in ("../a", "a/1", "", ".."):
        with pytest.raises(ForbiddenPath):
            await repository.load(name)
    with pytest.raises(ModelNotFound, match="no model 'nope' in the repository"):
        await repository.load("nope")


async def test_close_drains_every_version(repository: Repository) -> None:
    await repository.start()
    versions = repository.loaded()
    await repository.close()
    assert len(versions) == 3
    assert all(v.closed for v in versions)  # type: ignore[attr-defined]
    assert repository.loaded() == []


async def test_labels_name_versions(repository: Repository, root: Path) -> None:
    (root / "b" / "config.yaml").write_text(
        "version_policy: {all: true}\nlabels: {stable: 1, canary: 3}\n"
    )
    await repository.start()
    assert repository.resolve("b", "stable").version == 1
    assert repository.resolve("b", "canary").version == 3
    with pytest.raises(InvalidRequest) as info:
        repository.resolve("b", "beta")
    assert str(info.value) == (
        "model_version 'beta' must be an integer, one of the labels ['canary', 'stable'], or empty"
    )


async def test_a_reload_rebuilds_only_the_versions_that_changed(
    repository: Repository, factory: FakeFactory, root: Path
) -> None:
    await repository.start()
    one, three = repository.versions("b")
    one.stats.inference_count = 7  # statistics survive for what is kept
    (root / "b" / "3" / "model.onnx").write_bytes(b"a new version 3, longer than before")
    add_version(root, "b", 4)
    await repository.load("b")
    kept, rebuilt, added = repository.versions("b")
    assert kept is one
    assert kept.stats.inference_count == 7
    assert rebuilt is not three and rebuilt.version == 3
    assert three.closed  # type: ignore[attr-defined]
    assert not one.closed  # type: ignore[attr-defined]
    assert added.version == 4


async def test_a_config_change_rebuilds_every_version(
    repository: Repository, factory: FakeFactory, root: Path
) -> None:
    await repository.start()
    before = repository.versions("b")
    (root / "b" / "config.yaml").write_text("version_policy: {all: true}\nmax_batch_size: 4\n")
    await repository.load("b")
    after = repository.versions("b")
    assert all(new is not old for new, old in zip(after, before, strict=True))
    assert all(v.config.max_batch_size == 4 for v in after)


async def test_a_label_or_deprecation_edit_keeps_every_version_and_applies_at_once(
    repository: Repository, factory: FakeFactory, root: Path
) -> None:
    await repository.start()
    one, three = repository.versions("b")
    one.stats.inference_count, three.stats.inference_count = 5, 9
    built = len(factory.built)

    (root / "b" / "config.yaml").write_text(
        "version_policy: {all: true}\nlabels: {stable: 1, canary: 3}\n"
    )
    await repository.load("b")  # a label edit
    assert repository.versions("b") == [one, three]  # the same objects: nothing rebuilt
    assert repository.resolve("b", "stable") is one
    assert repository.resolve("b", "canary") is three

    (root / "b" / "config.yaml").write_text(
        "version_policy: {all: true}\nlabels: {stable: 3}\n"
        "deprecated:\n  - {version: 1, sunset: 2099-06-30, replacement: stable}\n"
    )
    await repository.load("b")  # the label moves, and version 1 is deprecated
    assert repository.versions("b") == [one, three]
    assert repository.resolve("b", "stable") is three
    assert one.config.deprecated[1].replacement == "stable"
    assert three.config.deprecated == one.config.deprecated  # every kept version's config
    assert dict(three.config.labels) == {"stable": 3}
    assert len(factory.built) == built
    assert (one.stats.inference_count, three.stats.inference_count) == (5, 9)
    assert not one.closed and not three.closed  # type: ignore[attr-defined]

    (root / "b" / "config.yaml").write_text(
        "version_policy: {all: true}\nlabels: {stable: 3}\nmax_batch_size: 2\n"
    )
    await repository.load("b")  # anything else still rebuilds
    rebuilt = repository.versions("b")
    assert all(new is not old for new, old in zip(rebuilt, [one, three], strict=True))
    assert len(factory.built) == built + 2


async def test_start_loads_only_the_models_asked_for(repository: Repository) -> None:
    await repository.start(["b"])
    assert served(repository, "b") == [1, 3]
    assert repository.versions("a") == []
    assert repository.is_ready()  # 'a' was never expected
    assert [e for e in repository.index() if e.name == "a"] == [
        IndexEntry("a", "", "UNAVAILABLE", "not loaded")
    ]


async def test_the_rpcs_are_refused_when_control_is_not_explicit(
    root: Path, factory: FakeFactory
) -> None:
    repository = Repository(root, factory, rpc_control=False, mode="poll")
    await repository.start()
    for action in (repository.load, repository.unload):
        with pytest.raises(ControlDisabled) as info:
            await action("a")
        assert "disabled in model control mode 'poll'" in str(info.value)
    assert served(repository, "a") == [2]


async def test_a_cancelled_load_still_finishes_and_leaves_true_states(
    root: Path,
) -> None:
    release = threading.Event()

    def slow(name: str, number: int, config: ModelConfig, path: Path) -> FakeVersion:
        release.wait(10)
        return FakeVersion(name, number, config, path)

    repository = Repository(root, slow)
    caller = asyncio.create_task(repository.load("a"))
    while not any(e.state == "LOADING" for e in repository.index()):
        await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    while any(e.state == "LOADING" for e in repository.index()):
        await asyncio.sleep(0.01)
    assert served(repository, "a") == [2]
    assert [e for e in repository.index() if e.name == "a"] == [IndexEntry("a", "2", "READY", "")]


async def test_a_link_out_of_the_repository_is_refused_and_recorded(
    repository: Repository, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    add_version(outside, "evil", 1)
    (root / "evil").symlink_to(outside / "evil")
    await repository.start()
    assert [e for e in repository.index() if e.name == "evil"] == [
        IndexEntry(
            "evil", "", "UNAVAILABLE", "model 'evil' is a link that resolves outside the repository"
        )
    ]
    assert not repository.is_ready()
    assert str(outside) not in repository.index()[-1].reason


async def test_the_poller_follows_the_directory(
    repository: Repository, root: Path, factory: FakeFactory
) -> None:
    await repository.start()
    poller = Poller(repository, 3600)
    poller.start()
    try:
        add_version(root, "c", 1)  # a new model
        await poller.poll()
        assert served(repository, "c") == [1]

        shutil.rmtree(root / "c")  # a removed model is forgotten
        await poller.poll()
        with pytest.raises(ModelNotFound):
            repository.resolve("c")

        add_version(root, "c", 1)  # and back, with fresh statistics
        await poller.poll()
        assert repository.resolve("c").stats.inference_count == 0

        add_version(root, "b", 5)  # a new version of an existing model
        await poller.poll()
        assert served(repository, "b") == [1, 3, 5]
        shutil.rmtree(root / "b" / "1")  # and a removed one
        await poller.poll()
        assert served(repository, "b") == [3, 5]

        (root / "a" / "config.yaml").write_text("max_batch_size: 2\n")  # a config edit
        await poller.poll()
        assert repository.resolve("a").config.max_batch_size == 2

        built = len(factory.built)
        await poller.poll()  # nothing changed: nothing is rebuilt
        assert len(factory.built) == built
    finally:
        await poller.stop()


async def test_a_failed_poll_is_logged_once_and_the_poller_keeps_polling(
    repository: Repository, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await repository.start()
    poller = Poller(repository, 0.01)
    poller.start()
    real, calls = poller.scan, 0

    def flaky() -> Snapshot:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise FileNotFoundError("a model directory was removed while it was listed")
        return real()

    poller.scan = flaky  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.INFO, logger="server.repository.poller"):
            add_version(root, "c", 1)
            while not repository.versions("c"):
                await asyncio.sleep(0.01)
        assert calls > 5
        failed = [r for r in caplog.records if r.getMessage().startswith("repository poll failed")]
        assert len(failed) == 1  # five failures in a row, logged once (rate-limited)
        assert failed[0].levelno == logging.WARNING
        assert failed[0].exc_info is not None
        assert any(r.getMessage() == "repository poll recovered" for r in caplog.records)
        assert served(repository, "c") == [1]
    finally:
        await poller.stop()


async def test_a_directory_that_vanishes_mid_scan_is_gone_and_the_rest_still_polls(
    repository: Repository, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await repository.start()
    poller = Poller(repository, 3600)
    poller.start()
    real = poller_module._versions

    def vanishing(model_dir: Path) -> dict[str, Fingerprint]:
        if model_dir.name == "b":  # listed, then removed before its versions are read
            shutil.rmtree(model_dir)
        return real(model_dir)

    monkeypatch.setattr(poller_module, "_versions", vanishing)
    add_version(root, "a", 3)
    await poller.poll()
    with pytest.raises(ModelNotFound):
        repository.resolve("b")
    assert served(repository, "a") == [3]
    await poller.stop()


async def test_a_vanished_root_fails_the_poll_and_leaves_every_model_serving(
    repository: Repository, root: Path
) -> None:
    await repository.start()
    poller = Poller(repository, 3600)
    poller.start()
    shutil.move(root, root.with_name("elsewhere"))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        await poller.poll()
    assert served(repository, "a") == [2]
    assert served(repository, "b") == [1, 3]
    shutil.move(root.with_name("elsewhere"), root)
    await poller.poll()  # back: nothing changed, nothing removed
    assert served(repository, "a") == [2]
    await poller.stop()


async def test_stopping_the_poller_mid_load_leaves_the_load_to_finish(root: Path) -> None:
    release = threading.Event()

    def slow(name: str, number: int, config: ModelConfig, path: Path) -> FakeVersion:
        if name == "c":
            release.wait(10)
        return FakeVersion(name, number, config, path)

    repository = Repository(root, slow, rpc_control=False, mode="poll")
    await repository.start()
    poller = Poller(repository, 0.01)
    poller.start()
    add_version(root, "c", 1)
    while not any(e.name == "c" and e.state == "LOADING" for e in repository.index()):
        await asyncio.sleep(0.01)
    await poller.stop()  # cancels the poll that waits on the load
    release.set()
    while any(e.state == "LOADING" for e in repository.index()):
        await asyncio.sleep(0.01)
    assert served(repository, "c") == [1]
    assert [e for e in repository.index() if e.name == "c"] == [IndexEntry("c", "1", "READY", "")]
