"""Where the gateway finds the contract and puts what it builds.

Everything is absolute: Envoy resolves relative paths in its configuration
against its own working directory, not against the configuration file.
"""

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTOS_DIR = REPO_ROOT / "protos"
BUILD_DIR = REPO_ROOT / "build" / "gateway"


@dataclass(frozen=True, slots=True)
class BuildOutputs:
    """The files `python -m gateway build` writes into one directory."""

    descriptor_path: Path
    openapi_path: Path

    @classmethod
    def in_dir(cls, build_dir: Path) -> "BuildOutputs":
        build_dir = build_dir.resolve()
        return cls(build_dir / "inference.pb", build_dir / "openapi.json")

    def missing(self) -> list[Path]:
        return [p for p in (self.descriptor_path, self.openapi_path) if not p.is_file()]
