"""CPU time and context switches per request, by thread, at a fixed request rate: the
server on digits against the no-op server (ceiling A), and optionally against the server
at another git revision, in alternating rounds of one run. `--model` drives another model
instead (with the bench's inputs, loadtests/workloads.py), without the no-op server.

    python -m loadtests.cpu_budget [--model digits] [--rate 1500] [--rounds 3] [--window-ms 3000]
        [--against REV ...] [--server-args "--max-concurrent-rpcs 0"]
        [--variant "no-metrics=--metrics false" ...]

Why a fixed rate: at a fixed rate a process's CPU time per request is what the request
costs it, whatever else runs on the machine; throughput on a shared 2-core machine says as
much about the neighbours as about the server. Why by thread: the event loop's thread is
our Python and grpc.aio's; grpc's own threads (its poller, timers, executor) and ONNX
Runtime's pools show where hand-offs between threads cost.

perf_analyzer (`make perf-analyzer`) sends the load, gRPC, batch 1, random inputs. The
requests of a run are rate x its wall time, start-up included (within about 1 %), for
every variant alike. `--against REV` checks REV out in a temporary git worktree (its
generated code built with this interpreter, the models shared; it serves every model, as
old revisions cannot load one alone), so that a change is measured against its parent in
the same run; `--variant NAME=FLAGS` adds a server with
further flags, to price a setting.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtests.launch import ROOT, Server, noop_server, real_server, server_in
from loadtests.workloads import SMALL, WORKLOADS

TICKS = os.sysconf("SC_CLK_TCK")
THROUGHPUT = "infer/s"
PERF_ANALYZER = ROOT / ".venv" / "bin" / "perf_analyzer"


@dataclass(frozen=True, slots=True)
class Usage:
    """One thread group's CPU seconds and context switches (voluntary + involuntary)."""

    cpu_s: float
    switches: int


def threads(pid: int) -> dict[str, Usage]:
    """Every thread of `pid`, grouped by name with digits dropped (grpc's and ONNX
    Runtime's pools number their threads); the process's first thread is `loop`."""
    groups: dict[str, list[Usage]] = defaultdict(list)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
            name = "loop" if task.name == str(pid) else re.sub(r"[\d-]+$", "", _comm(stat))
            fields = stat.rsplit(")", 1)[1].split()
            switches = sum(
                int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
            )
            groups[name].append(Usage((int(fields[11]) + int(fields[12])) / TICKS, switches))
    return {
        name: Usage(sum(u.cpu_s for u in usages), sum(u.switches for u in usages))
        for name, usages in groups.items()
    }


def _comm(stat: str) -> str:
    return stat[stat.index("(") + 1 : stat.rindex(")")]


def _load(port: int, load: tuple[str, ...], window_ms: int) -> tuple[float, float]:
    """Drive `port` for three windows; returns the wall seconds and perf_analyzer's
    inferences/s."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "pa.csv"
        ran = subprocess.run(
            [
                str(PERF_ANALYZER),
                *("-i", "grpc", "-u", f"127.0.0.1:{port}", *load),
                *("-p", str(window_ms), "--stability-percentage", "1000", "--max-trials", "3"),
                *("-f", str(report)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        if ran.returncode:
            raise RuntimeError(f"perf_analyzer failed ({ran.returncode}):\n{ran.stdout[-2000:]}")
        with report.open() as f:
            throughput = float(next(csv.DictReader(f))["Inferences/Second"])
    return time.monotonic() - started, throughput


def measure(server: Server, load: tuple[str, ...], window_ms: int) -> dict[str, Usage]:
    """µs of CPU and context switches per request, per thread group and in total; the
    throughput rides along as `infer/s` (its cpu_s field)."""
    before = threads(server.pid)
    wall, throughput = _load(server.port, load, window_ms)
    requests = throughput * wall
    after = threads(server.pid)
    per_request = {
        name: Usage(
            (usage.cpu_s - before.get(name, Usage(0, 0)).cpu_s) / requests * 1e6,
            round((usage.switches - before.get(name, Usage(0, 0)).switches) / requests),
        )
        for name, usage in after.items()
    }
    per_request["total"] = Usage(
        sum(u.cpu_s for u in per_request.values()),
        sum(u.switches for u in per_request.values()),
    )
    per_request[THROUGHPUT] = Usage(throughput, 0)
    return per_request


def _built_models(configs: Path, into: Path) -> None:
    """The models a revision knows, with its files and the version directories built here."""
    for model in sorted(p for p in configs.iterdir() if p.is_dir()):
        built = ROOT / "models" / model.name
        if not built.is_dir():
            continue
        shutil.copytree(model, into / model.name)
        for version in built.iterdir():
            if version.is_dir() and version.name.isdigit():
                shutil.copytree(version, into / model.name / version.name, dirs_exist_ok=True)


@contextlib.contextmanager
def revision(rev: str) -> Iterator[Path]:
    """REV checked out with its generated code, and its models: its own config.yaml files
    with this tree's built versions (an older parser refuses newer configs' keys)."""
    with tempfile.TemporaryDirectory(prefix="cpu-budget-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), rev], check=True)
        try:
            (tree / "models").rename(tree / "models.src")
            _built_models(tree / "models.src", tree / "models")
            (tree / ".venv").symlink_to(ROOT / ".venv")
            # The linked .venv looks older than the checkout; it is not to be rebuilt.
            subprocess.run(
                ["make", "-s", "-C", str(tree), "-o", ".venv/.installed-run", "protos"], check=True
            )
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1500, help="requests/s")
    parser.add_argument(
        "--concurrency", type=int, help="closed loop with this many requests in flight instead"
    )
    parser.add_argument(
        "--model",
        default=SMALL,
        choices=sorted(WORKLOADS),
        help="the model to load and drive; the no-op server (digits' replies) runs only for digits",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=3000)
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="REV",
        help="also measure the server at REV (repeatable)",
    )
    parser.add_argument("--server-args", default="", help="extra flags for every server")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="also measure the server with these further flags",
    )
    args = parser.parse_args(argv)
    if not PERF_ANALYZER.exists():
        print("perf_analyzer is missing: run `make perf-analyzer`", file=sys.stderr)
        return 2
    flags = ("--load-model", args.model, *args.server_args.split())
    load = (
        *("-m", args.model, *WORKLOADS[args.model].perf_analyzer_args()),
        *(
            ("--concurrency-range", f"{args.concurrency}:{args.concurrency}")
            if args.concurrency
            else ("--request-rate-range", f"{args.rate}:{args.rate}")
        ),
    )
    results: dict[str, list[dict[str, Usage]]] = defaultdict(list)
    with contextlib.ExitStack() as stack:
        servers = {"noop": stack.enter_context(noop_server(1))} if args.model == SMALL else {}
        servers["server"] = stack.enter_context(real_server(1, "models", *flags))
        for variant in args.variant:
            name, _, more = variant.partition("=")
            servers[name] = stack.enter_context(real_server(1, "models", *flags, *more.split()))
        for rev in args.against:
            tree = stack.enter_context(revision(rev))
            servers[rev] = stack.enter_context(server_in(tree, *args.server_args.split()))
        names = list(servers)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                usage = measure(servers[name], load, args.window_ms)
                results[name].append(usage)
                print(
                    f"round {round_ + 1} {name:10s} {usage['total'].cpu_s:6.1f} us CPU, "
                    f"{usage['total'].switches} switches per request",
                    file=sys.stderr,
                    flush=True,
                )
    load_name = f"concurrency {args.concurrency}" if args.concurrency else f"{args.rate}/s"
    report(results, f"{args.model} at {load_name}")
    return 0


def report(results: dict[str, list[dict[str, Usage]]], load: str) -> None:
    """Medians over the rounds, per thread group; groups under 1 µs are left out."""
    print(f"{load}, medians of {len(results['server'])} rounds")
    print(f"{'variant':10s} {'thread':16s} {'CPU us/req':>10s} {'switches/req':>12s}")
    base = results.get("noop") or results["server"]  # the ratios' denominator
    noop_total = statistics.median(r["total"].cpu_s for r in base)
    noop_rate = statistics.median(r[THROUGHPUT].cpu_s for r in base)
    against = "noop" if "noop" in results else "server"
    for name, rounds in results.items():
        groups = sorted(
            {g for r in rounds for g in r} - {THROUGHPUT}, key=lambda g: (g == "total", g)
        )
        for group in groups:
            cpu = statistics.median(r.get(group, Usage(0, 0)).cpu_s for r in rounds)
            switches = statistics.median(r.get(group, Usage(0, 0)).switches for r in rounds)
            if cpu >= 1 or group == "total":
                print(f"{name:10s} {group:16s} {cpu:10.1f} {switches:12.0f}")
        total = statistics.median(r["total"].cpu_s for r in rounds)
        rate = statistics.median(r[THROUGHPUT].cpu_s for r in rounds)
        print(
            f"{name:10s} {'x ' + against:16s} {total / noop_total:10.2f} CPU; "
            f"{rate:,.0f} infer/s = {rate / noop_rate:.2f}x {against}"
        )


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
