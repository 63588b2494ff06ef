"""The Dockerfile and its build context, read the way Docker reads them, for tests that run
the recipe without a Docker engine (test_dockerfile.py) and check what it sets
(test_manifests.py).

Only what this repository's Dockerfile uses is understood: one instruction per logical
line (backslash continuations, comment lines inside them dropped), `FROM image AS name`,
`KEY=value` pairs in ENV, JSON (exec) form in ENTRYPOINT, CMD and HEALTHCHECK CMD. A
.dockerignore pattern is Go's filepath.Match syntax plus `**`, matched against a path and
each of its parent directories; the last matching line wins and `!` re-includes.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from processes import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    """Upper case: RUN, COPY, ENV, ..."""
    arguments: str
    """The rest of the logical line."""

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """Leading `--name=value` flags (as in `RUN --mount=...`, `COPY --from=...`)."""
        flags: dict[str, str] = {}
        rest = self.arguments
        while match := re.match(r"--([a-z-]+)=(\S+)\s+", rest):
            flags.setdefault(match.group(1), match.group(2))
            rest = rest[match.end() :]
        return flags, rest

    def exec_form(self) -> list[str]:
        """The JSON array of ENTRYPOINT, CMD (or what follows HEALTHCHECK's options)."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text[text.index(" CMD ") + len(" CMD ") :]
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
        return value


@dataclass(slots=True)
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"stage {self.name}: {len(found)} {keyword} instructions"
        return found[0]

    def env(self) -> dict[str, str]:
        """Every ENV of the stage, in order; values as written (`$PATH` unexpanded)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for pair in shlex.split(instruction.arguments):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {instruction.arguments!r}: use KEY=value"
                values[key] = value
        return values


def _logical_lines(text: str) -> Iterator[str]:
    parts: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not parts and not line):
            continue
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        yield " ".join(p for p in parts if p)
        parts = []
    assert not parts, "the Dockerfile ends inside a continuation"


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The stages in order; ARGs before the first FROM are left out."""
    found: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(found))
            found.append(Stage(words[0], name))
        elif found:
            found[-1].instructions.append(Instruction(keyword, arguments.strip()))
    return found


def stage(name: str, path: Path = DOCKERFILE) -> Stage:
    return next(s for s in stages(path) if s.name == name)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_rules(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) per line: excludes is False for a `!` exception."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        rules.append((not include, _pattern_regex(line.lstrip("!").strip("/"))))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether .dockerignore keeps `relative` (a path inside the context) out."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for excludes, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = excludes
    return verdict


def build_context(root: Path = ROOT) -> list[str]:
    """The files `docker build .` sends from a checkout: what git tracks (plus new files
    not yet added, minus what .gitignore keeps out), less what .dockerignore excludes."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    rules = dockerignore_rules(root / ".dockerignore")
    return sorted(p for p in listed if p and (root / p).is_file() and not ignored(p, rules))
