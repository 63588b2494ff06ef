"""Scripted perf_analyzer runs per model: shapes, concurrency ranges, request rates,
streaming, gRPC and HTTP (`make perf-scenarios`, docs/loadtesting.md).

    python -m loadtests.perf_analyzer.scenarios [--list] [--smoke] [--grpc HOST:PORT]
        [--http HOST:PORT] [--out DIR] [SCENARIO ...]

Without `--grpc` it starts the server and the gateway (for `-i http`) on free loopback
ports. Each scenario writes `<name>.csv` (perf_analyzer's `-f`, one row per load level)
and `<name>.log` (its output) to `--out` (default `loadtests/results/<timestamp>-perf/`),
plus `README.md`: per scenario its command, outcome and how to read its CSV. Inputs are
the ones the locust users send (loadtests/locust/samples.py), written as perf_analyzer
`--input-data` JSON under `data/`: real digits, real sentences' tokens, rendered text lines.

`--smoke` runs each scenario at its first load level only, with short windows: it checks
that the scenarios run, not how fast. Scenarios marked `pending` are expected to fail
for the reason given (a failure there is reported, not counted); when one passes, the
mark can go. The exit code is 1 if any other scenario failed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loadtests import launch
from loadtests.loadgen import PERF_ANALYZER, UNSTABLE
from loadtests.locust import samples

RESULTS = launch.ROOT / "loadtests" / "results"
MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    model: str
    args: tuple[str, ...]  # perf_analyzer's, besides -m, -i, -u and -f
    note: str  # how to read its CSV
    protocol: str = "grpc"
    data: str = ""  # an --input-data file made by `write_data`, or ""
    interval_ms: int = 2000
    pending: str = ""  # why it is expected to fail, for now

    def command(self, grpc: str, http: str, out: Path, smoke: bool) -> list[str]:
        args = list(self.args)
        if smoke:
            args = [_first_level(arg) for arg in args]
        address = http if self.protocol == "http" else grpc
        command = [
            str(PERF_ANALYZER),
            *("-m", self.model, "-i", self.protocol, "-u", address),
            *(["--input-data", str(out / "data" / self.data)] if self.data else []),
            *args,
            *("-f", str(out / f"{self.name}.csv")),
        ]
        if smoke:  # any three windows count as stable: it checks the scenario, not speed
            stability = ("--measurement-interval", "300", "--stability-percentage", "1000")
            return [*command, *stability, "--max-trials", "3"]
        stability = ("--measurement-interval", str(self.interval_ms), "--stability-percentage")
        return [*command, *stability, "25", "--max-trials", "6"]


def _first_level(arg: str) -> str:
    """`1:25:8` -> `1`: a range's first level (only range values contain a colon)."""
    if arg.count(":") == 2 and all(part.replace(".", "").isdigit() for part in arg.split(":")):
        return arg.split(":")[0]
    return arg


CONCURRENCY_NOTE = (
    "One row per concurrency (requests kept in flight). `Inferences/Second` is rows/s "
    "(requests/s x batch); latencies (`p50`..`p99 latency`, `Avg latency`) are in µs, "
    "client-measured. Throughput that stops growing while latency grows in step with "
    "concurrency means the server is saturated; the `Server Queue` and `Server Compute "
    "Infer` columns (from ModelStatistics) say whether the time goes to waiting for a "
    "batch slot or to ONNX Runtime."
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "digits-concurrency",
        "digits",
        ("--concurrency-range", "1:25:8", "-a"),
        CONCURRENCY_NOTE,
        data="digits.json",
        interval_ms=1500,
    ),
    Scenario(
        "digits-batch8",
        "digits",
        ("-b", "8", "--concurrency-range", "1:9:4", "-a"),
        "Eight rows per request: `Inferences/Second` is 8 x requests/s. Compare with "
        "digits-concurrency at the same concurrency: per-request costs (gRPC, decoding, "
        "the event loop) are shared by eight rows, so rows/s rises far more than latency.",
        data="digits.json",
        interval_ms=1500,
    ),
    Scenario(
        "digits-streaming",
        "digits",
        ("--streaming", "--concurrency-range", "8:32:8"),
        "ModelStreamInfer: one bidirectional stream per in-flight request slot. Read it "
        "next to digits-concurrency: a stream's requests skip the per-call cost and reach "
        "the batcher together, so throughput at the same concurrency is higher; "
        "`Server Compute Infer` per row falls as batches grow.",
        data="digits.json",
        interval_ms=1500,
    ),
    Scenario(
        "digits-request-rate",
        "digits",
        ("--request-rate-range", "500:2500:1000", "--request-distribution", "poisson"),
        "Open loop: requests arrive at the `Request Rate` (Poisson), whatever the latency. "
        "While `Inferences/Second` keeps up with the rate, latency is service time; once "
        "it falls behind (perf_analyzer also warns that it failed to maintain the load), "
        "the queue grows and p99 latency shows it. A closed loop (concurrency) hides this.",
        data="digits.json",
        interval_ms=2000,
    ),
    Scenario(
        "digits-http",
        "digits",
        ("--concurrency-range", "1:9:8", "-a"),
        "V2 REST through the gateway (`-i http`), the same columns as digits-concurrency; "
        "compare the two at the same concurrency for the cost of JSON and Envoy.",
        protocol="http",
        data="digits.json",
        interval_ms=1500,
    ),
    Scenario(
        "minilm-sentences",
        "minilm",
        ("--concurrency-range", "1:9:4", "-a"),
        "Real sentences' tokens, padded to 128 (as the shipped tokenizer does), so "
        "requests share batches. minilm is compute-bound (~12 ms per row on one core): "
        "throughput should approach ceiling B (docs/performance.md) and latency grow "
        "with concurrency once both instances are busy.",
        data="minilm.json",
        interval_ms=4000,
    ),
    Scenario(
        "minilm-shapes",
        "minilm",
        (
            *("--input-data", "zero", "--concurrency-range", "4", "-a"),
            *(arg for name in MINILM_INPUTS for arg in ("--shape", f"{name}:32")),
        ),
        "Dynamic dims set with `--shape` (32 tokens instead of 128, zeros: valid token "
        "ids, unlike random INT64). Rows/s against minilm-sentences at concurrency 4+ "
        "shows how the cost scales with sequence length.",
        interval_ms=3000,
    ),
    Scenario(
        "text_direction-concurrency",
        "text_direction",
        ("--concurrency-range", "1:9:4", "-a"),
        CONCURRENCY_NOTE + " Each request is 110 KB of FP32 pixels, so decoding and copying "
        "show up in `Network+Server Send/Recv` more than for digits.",
        data="text_lines.json",
        interval_ms=2000,
    ),
    Scenario(
        "text_direction-streaming",
        "text_direction",
        ("--streaming", "--concurrency-range", "16"),
        "Streaming at concurrency 16: compare with text_direction-concurrency for the "
        "batch sizes a stream forms (Inference count / Execution count in the log).",
        data="text_lines.json",
        interval_ms=2000,
    ),
    Scenario(
        "silero_vad-chunks",
        "silero_vad",
        ("--concurrency-range", "1", "--shape", "input:1,576", "--shape", "state:2,1,128"),
        "One 16 kHz chunk (64 samples of context + 512) per request, state of one stream.",
        data="silero_vad.json",
        pending="perf_analyzer 2.41 cannot send the 0-dim input `sr` ('unable to set shape "
        "for the input'); the locust users drive silero_vad",
    ),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def write_data(folder: Path) -> None:
    """perf_analyzer `--input-data` files from the locust users' inputs; one entry per
    request, cycled. With max_batch_size > 0 an entry holds one row, without batch dim."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def entry(**tensors: np.ndarray) -> dict[str, object]:
        return {
            name: {"content": array.ravel().tolist(), "shape": list(array.shape)}
            for name, array in tensors.items()
        }

    def dump(name: str, entries: list[dict[str, object]]) -> None:
        (folder / name).write_text(json.dumps({"data": entries}))

    images, _ = samples.digits_images()
    dump("digits.json", [entry(input=image) for image in images[:256]])
    tokens = samples.minilm_tokens(samples.tokenizer_path())
    dump(
        "minilm.json",
        [entry(**{n: tokens[n][i] for n in MINILM_INPUTS}) for i in range(len(samples.SENTENCES))],
    )
    lines, _ = samples.text_lines()
    dump("text_lines.json", [entry(x=line) for line in lines[rng.choice(len(lines), 8)]])
    vad = samples.SileroVad(random.Random(0)).sample(1)
    dump("silero_vad.json", [entry(**{t.name: t.array for t in vad.inputs})])


@dataclass(slots=True)
class Outcome:
    scenario: Scenario
    command: list[str]
    code: int
    rows: int
    unstable: bool = False
    levels: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.rows > 0


def run_one(scenario: Scenario, grpc: str, http: str, out: Path, smoke: bool) -> Outcome:
    command = scenario.command(grpc, http, out, smoke)
    log = out / f"{scenario.name}.log"
    timeout = 600 if not smoke else 120
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    unstable = proc.returncode == UNSTABLE
    if unstable:  # noisy machine: once more, accepting any three windows
        loose = [*command, "--stability-percentage", "1000"]
        proc = subprocess.run(loose, capture_output=True, text=True, timeout=timeout)
        command = loose
    log.write_text(" ".join(command) + "\n\n" + proc.stdout + proc.stderr)
    report = out / f"{scenario.name}.csv"
    levels = list(csv.DictReader(report.open())) if report.exists() else []
    return Outcome(scenario, command, proc.returncode, len(levels), unstable, levels)


def readme(outcomes: list[Outcome], out: Path) -> str:
    lines = [
        "# perf_analyzer scenarios",
        "",
        f"Written by `python -m loadtests.perf_analyzer.scenarios` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Times in the CSVs are µs.",
    ]
    for outcome in outcomes:
        scenario = outcome.scenario
        if outcome.ok:
            status = f"{outcome.rows} level(s)" + (" (loose stability)" if outcome.unstable else "")
        else:
            status = f"FAILED (exit {outcome.code}, see {scenario.name}.log)"
        if scenario.pending:
            status += f"; pending: {scenario.pending}"
        lines += [
            "",
            f"## {scenario.name}: {status}",
            "",
            "```",
            " ".join(str(Path(a).relative_to(out)) if a.startswith(str(out)) else a
                     for a in outcome.command),
            "```",
            "",
            scenario.note,
        ]  # fmt: skip
        for level in outcome.levels:
            key = "Concurrency" if "Concurrency" in level else "Request Rate"
            lines.append(
                f"- {key} {level.get(key)}: {float(level['Inferences/Second']):,.0f} infer/s, "
                f"p50 {int(level['p50 latency']) / 1000:.2f} ms, "
                f"p99 {int(level['p99 latency']) / 1000:.2f} ms"
            )
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def targets(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if args.grpc:
        yield args.grpc, args.http or "127.0.0.1:8000"
        return
    with launch.real_server(1) as server, launch.gateway(server.port) as gateway:
        yield server.address, gateway.url.removeprefix("http://")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.perf_analyzer.scenarios", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--smoke", action="store_true", help="first level only, short windows")
    parser.add_argument("--grpc", default="", help="host:port; default: start a server here")
    parser.add_argument("--http", default="", help="the gateway's host:port, for -i http")
    parser.add_argument("--out", type=Path, help="default: loadtests/results/<timestamp>-perf")
    args = parser.parse_args(argv)
    if args.list:
        for scenario in SCENARIOS:
            mark = f"  [pending: {scenario.pending}]" if scenario.pending else ""
            print(f"{scenario.name:<28} {scenario.protocol:<5} {scenario.model}{mark}")
        return 0
    unknown = set(args.names) - set(BY_NAME)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; see --list")
    if not PERF_ANALYZER.exists():
        print(f"{PERF_ANALYZER} is missing: run `make perf-analyzer`", file=sys.stderr)
        return 1
    chosen = [BY_NAME[name] for name in args.names] or list(SCENARIOS)
    out = (args.out or RESULTS / time.strftime("%Y%m%d-%H%M%S-perf")).absolute()
    write_data(out / "data")
    outcomes = []
    with targets(args) as (grpc, http):
        for scenario in chosen:
            outcome = run_one(scenario, grpc, http, out, args.smoke)
            outcomes.append(outcome)
            state = "ok" if outcome.ok else ("pending" if scenario.pending else "FAILED")
            print(f"{scenario.name}: {state} ({outcome.rows} level(s))", flush=True)
    (out / "README.md").write_text(readme(outcomes, out))
    print(f"wrote {out}/README.md and a CSV per scenario")
    return 1 if any(not o.ok and not o.scenario.pending for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
