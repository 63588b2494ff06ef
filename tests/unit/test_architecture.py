"""docs/architecture.md names every module under server/, and only modules that exist, so
that the page cannot silently go stale.

A module is named by its path, either from the repository root (`server/app.py`) or from
`server/` (`core/limits.py`), or by its dotted name (`server.core.limits`). A package is
named by its folder (`execution/steps/`) or its dotted name.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"
DOC = ROOT / "docs" / "architecture.md"
LAYERS = ("api", "core", "execution", "repository", "security", "telemetry")


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _names(path: Path) -> tuple[str, str]:
    """A file's path from server/ (a folder's ending in /) and its dotted module name."""
    relative = path.relative_to(SERVER)
    if path.name == "__init__.py":
        folder = relative.parent
        return f"{folder.as_posix()}/", ".".join(("server", *folder.parts))
    return relative.as_posix(), ".".join(("server", *relative.with_suffix("").parts))


def _named(text: str, relative: str, dotted: str) -> bool:
    # Not part of a longer path or name: `core/access.py` is not `telemetry/access.py`'s
    # `access.py`, nor is `server/__main__.py` that of `security/__main__.py`.
    by_path = rf"(?<![\w/.])(?:server/)?{re.escape(relative)}"
    by_path += "" if relative.endswith("/") else r"(?![\w/])"
    by_name = rf"(?<![\w.]){re.escape(dotted)}(?!\w)"
    return re.search(by_path, text) is not None or re.search(by_name, text) is not None


def _modules() -> list[Path]:
    return sorted(p for p in SERVER.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_under_server_is_named_in_the_architecture_page() -> None:
    text = _doc()
    missing = []
    for path in _modules():
        if path == SERVER / "__init__.py":
            continue  # the package itself: the whole page is about it
        relative, dotted = _names(path)
        if not _named(text, relative, dotted):
            missing.append(relative)
    assert not missing, (
        f"docs/architecture.md does not name {missing}: add each to its layer's table "
        "(and to the diagrams if it is on the ModelInfer or RepositoryModelLoad path)"
    )


def test_every_module_the_architecture_page_names_exists() -> None:
    layers = "|".join(LAYERS)
    named = re.findall(rf"(?<![\w/.])(?:server/)?((?:{layers})/[\w/]*?\w+\.py)(?![\w/])", _doc())
    assert named, "the pattern no longer finds the page's module paths"
    gone = sorted({path for path in named if not (SERVER / path).is_file()})
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_the_check_tells_similar_paths_apart() -> None:
    """The matching itself: a name inside a longer path or name does not count."""
    assert _named("`telemetry/access.py`", "telemetry/access.py", "server.telemetry.access")
    assert not _named("`telemetry/access.py`", "core/access.py", "server.core.access")
    assert not _named("`security/__main__.py`", "__main__.py", "server.__main__")
    assert _named("`server/__main__.py`", "__main__.py", "server.__main__")
    assert _named("`server.core.limits.MAX_BATCH_ROWS`", "core/limits.py", "server.core.limits")
    assert not _named("`server.core.limitsx`", "core/limits.py", "server.core.limits")
    assert not _named("`core/limits.pyi`", "core/limits.py", "server.core.limits")
    assert _named("`execution/steps/`", "execution/steps/", "server.execution.steps")
