"""`make loadtest` and `make loadtest-ui`: locust against a server and gateway.

    python -m loadtests.locust.run [--users 16] [--spawn-rate 8] [--duration 30s]
        [--host http://gateway:8000 --grpc-target server:8001] [--processes N]
        [--workers N] [--classes "GrpcUser GrpcWebUser"] [--results-root DIR] [--ui]
        [-- locust arguments]

Without `--host`/`--grpc-target` it starts the server (`--workers`, default repository)
and the gateway in front of it on free loopback ports, and stops both at the end. Headless
runs write locust's CSV files (`locust_stats.csv`, `_failures`, `_exceptions`,
`_stats_history`) and HTML report (`report.html`) to `loadtests/results/<timestamp>/`,
with `locust_summary.{txt,json}` (per user class, and the CPU the client spent) and
`run.json` (what ran, and the CPU the server and gateway started here spent), then print
the summary. The exit code is locust's: 1 if any request failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtests import launch

LOCUSTFILE = launch.ROOT / "loadtests" / "locust" / "locustfile.py"
RESULTS = launch.ROOT / "loadtests" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Targets:
    host: str  # the gateway's URL
    grpc_target: str  # host:port for the gRPC users
    pids: dict[str, int]  # processes started here, by role, for CPU accounting


def parse(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.locust.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--users", type=int, default=16, help="peak users (-u)")
    parser.add_argument("--spawn-rate", type=float, default=8, help="users started per s (-r)")
    parser.add_argument("--duration", default="30s", help="run time (-t), e.g. 30s, 2m")
    parser.add_argument("--host", default="", help="the gateway's URL; default: start one here")
    parser.add_argument(
        "--grpc-target", default="", help="host:port for the gRPC users; default: start a server"
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes, if started")
    parser.add_argument(
        "--repository", default="models", help="model repository of a server started here"
    )
    parser.add_argument("--processes", type=int, default=0, help="locust worker processes")
    parser.add_argument("--classes", default="", help="user classes, space-separated; default all")
    parser.add_argument(
        "--results-root",
        type=Path,
        default=RESULTS,
        help="where the <timestamp> folder goes (default loadtests/results)",
    )
    parser.add_argument(
        "--results", type=Path, help="the results folder itself; default: <root>/<timestamp>"
    )
    parser.add_argument("--ui", action="store_true", help="the web UI instead of a headless run")
    parser.add_argument("--web-port", type=int, default=8089)
    args, extra = parser.parse_known_args(argv)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return args, extra


@contextlib.contextmanager
def targets(args: argparse.Namespace) -> Iterator[Targets]:
    """The given deployment, or a server and a gateway started (and stopped) here."""
    if args.host or args.grpc_target:
        host = args.host or "http://127.0.0.1:8000"
        yield Targets(host, args.grpc_target or "127.0.0.1:8001", {})
        return
    with (
        launch.real_server(args.workers, args.repository) as server,
        launch.gateway(server.port) as gateway,
    ):
        print(f"server {server.address} (x{args.workers}), gateway {gateway.url}", flush=True)
        yield Targets(gateway.url, server.address, {"server": server.pid, "gateway": gateway.pid})


def locust_command(
    args: argparse.Namespace, found: Targets, results: Path | None, extra: list[str]
) -> list[str]:
    command = [
        sys.executable,
        *("-m", "locust", "-f", str(LOCUSTFILE)),
        *("--host", found.host, "--grpc-target", found.grpc_target),
        *("-u", str(args.users), "-r", str(args.spawn_rate)),
    ]
    if args.processes:
        command += ["--processes", str(args.processes)]
    if args.ui:
        command += ["--web-host", "127.0.0.1", "--web-port", str(args.web_port)]
    else:
        assert results is not None
        command += ["--headless", "-t", args.duration, "--only-summary"]
        command += ["--csv", str(results / "locust"), "--csv-full-history"]
        command += ["--html", str(results / "report.html")]
    return command + extra + args.classes.split()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants, from /proc (Linux)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
    return total


def run(args: argparse.Namespace, extra: list[str]) -> int:
    results = None
    if not args.ui:
        results = args.results or args.results_root / time.strftime("%Y%m%d-%H%M%S")
        results.mkdir(parents=True, exist_ok=True)
    with targets(args) as found:
        command = locust_command(args, found, results, extra)
        print(" ".join(command), flush=True)
        before = {role: tree_cpu_seconds(pid) for role, pid in found.pids.items()}
        # Its own session: Ctrl-C reaches this process only, which hands locust one SIGINT
        # (locust then stops its users and writes its reports) before stopping the servers.
        process = subprocess.Popen(command, cwd=launch.ROOT, start_new_session=True)
        try:
            code = process.wait()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
        # Idle before and after the test, so their CPU over the whole run is the test's.
        cpu = {role: tree_cpu_seconds(pid) - before[role] for role, pid in found.pids.items()}
    if results is None:
        return code
    summary = results / "locust_summary.json"
    seconds = json.loads(summary.read_text())["seconds"] if summary.exists() else 0.0
    report = {
        "command": command,
        "exit_code": code,
        "test_s": seconds,
        "cpu_s": {role: round(spent, 2) for role, spent in cpu.items()},
        "cores": {role: round(spent / seconds, 2) for role, spent in cpu.items() if seconds},
    }
    (results / "run.json").write_text(json.dumps(report, indent=2) + "\n")
    text = results / "locust_summary.txt"
    print(f"\nSummary, from {results}:")
    print(text.read_text().rstrip() if text.exists() else "(no requests were made)")
    if report["cores"]:
        print(", ".join(f"{role} CPU: {n:.2f} cores" for role, n in report["cores"].items()))
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse(argv)
    os.chdir(launch.ROOT)
    # SIGTERM and SIGINT (Ctrl-C) both stop locust, then the server and gateway, even when
    # started where SIGINT is ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    return run(args, extra)


if __name__ == "__main__":
    sys.exit(main())
