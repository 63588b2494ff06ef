"""`make bench`'s pipeline rows: `sentence_embedding` (raw text in, embeddings out) against
minilm fed the same sentences tokenized by the client, at concurrency 32, in one run.

    python -m loadtests.pipeline_bench [--rounds 3] [--seconds 10] [--concurrency 32]

Three scenarios against one server, interleaved in rounds (the median round is reported):

- `minilm_128`: the client tokenizes with minilm's shipped tokenizer.json, which pads every
  text to 128 tokens, and calls minilm (what the bench's minilm rows send);
- `minilm`: the client tokenizes each sentence to its own length and calls minilm;
- `sentence_embedding`: the client sends the sentence; the server tokenizes, runs minilm
  and pools (the pooling that a minilm client would still do is not in the rows above).

Issue 12's target: server-side tokenization and pooling cost at most 20 % of throughput,
`sentence_embedding` / `minilm` >= 0.8. The client is Python, closed loop: `--concurrency`
calls in flight on one grpc.aio channel (uvloop), raw tensor contents, the locust users'
24 English sentences (12 to 20 tokens) in turn. perf_analyzer cannot be the client here:
it cannot send an input whose only dimension is the batch, as `text` is ([-1]). Each row
also gives the server's CPU time per sentence (all threads, /proc), which holds on a shared
machine where sentences/s moves with whatever else runs. Writes
loadtests/results/pipelines.txt.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import uvloop

from inference import grpc_service_pb2 as pb
from loadtests import launch
from loadtests.closed_loop import closed_loop
from loadtests.locust import samples

RESULT = Path(__file__).parent / "results" / "pipelines.txt"
Point = tuple[float, float, float, float]  # sentences/s, p50 ms, p99 ms, CPU ms per sentence
SCENARIOS = ("minilm_128", "minilm", "sentence_embedding")
MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TARGET = 0.8


def requests() -> dict[str, list[pb.ModelInferRequest]]:
    """One request per sentence and scenario, raw contents."""
    from tokenizers import Tokenizer

    padded = samples.minilm_tokens(samples.tokenizer_path())
    tokenizer = Tokenizer.from_file(str(samples.tokenizer_path()))
    tokenizer.no_padding()
    own = [
        dict(zip(MINILM_INPUTS, (e.ids, e.attention_mask, e.type_ids), strict=True))
        for e in tokenizer.encode_batch(list(samples.SENTENCES))
    ]

    def tokens(feeds: Mapping[str, Sequence[int]]) -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name="minilm")
        for name in MINILM_INPUTS:
            row = np.asarray([feeds[name]], np.int64)
            request.inputs.add(name=name, datatype="INT64", shape=row.shape)
            request.raw_input_contents.append(row.tobytes())
        return request

    def text(sentence: str) -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name="sentence_embedding")
        request.inputs.add(name="text", datatype="BYTES", shape=[1])
        encoded = sentence.encode()
        request.raw_input_contents.append(struct.pack("<I", len(encoded)) + encoded)
        return request

    count = len(samples.SENTENCES)
    return {
        "minilm_128": [tokens({n: padded[n][i] for n in MINILM_INPUTS}) for i in range(count)],
        "minilm": [tokens(feeds) for feeds in own],
        "sentence_embedding": [text(sentence) for sentence in samples.SENTENCES],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.pipeline_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    made = requests()
    rows: dict[str, list[Point]] = {name: [] for name in SCENARIOS}
    with launch.real_server(1) as server:
        for round_ in range(1, args.rounds + 1):
            for name in SCENARIOS:
                before, started = launch.cpu_seconds(server.pid), time.monotonic()
                rate, latencies = uvloop.run(
                    closed_loop(server.address, made[name], args.concurrency, args.seconds)
                )
                # Sentences over the whole run, warm-up included, at the measured rate.
                sentences = rate * (time.monotonic() - started)
                cpu_ms = (launch.cpu_seconds(server.pid) - before) / sentences * 1e3
                p50, p99 = np.percentile(latencies, [50, 99])
                rows[name].append((rate, float(p50), float(p99), cpu_ms))
                print(
                    f"round {round_} {name}: {rate:,.1f} sentences/s, p50 {p50:,.1f} ms, "
                    f"{cpu_ms:.2f} ms CPU per sentence",
                    file=sys.stderr,
                    flush=True,
                )
    text = report(rows, args)
    print(text)
    RESULT.write_text(text)
    return 0


def report(rows: dict[str, list[Point]], args: argparse.Namespace) -> str:
    medians = {name: sorted(runs)[(len(runs) - 1) // 2] for name, runs in rows.items()}
    base = medians["minilm"][0]
    lines = [
        f"sentence_embedding against minilm, concurrency {args.concurrency}, Python closed "
        f"loop, {args.seconds:g} s per point, median of {args.rounds} rounds",
        f"{'scenario':<20}{'sentences/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'x minilm':>10}"
        f"{'server CPU per sentence':>25}",
    ]
    for name in SCENARIOS:
        rate, p50, p99, cpu_ms = medians[name]
        lines.append(
            f"{name:<20}{rate:>12,.1f}{p50:>9,.1f}{p99:>9,.1f}{rate / base:>10.2f}"
            f"{cpu_ms:>22.2f} ms"
        )
    per_round = [
        pipeline[0] / minilm[0]
        for pipeline, minilm in zip(rows["sentence_embedding"], rows["minilm"], strict=True)
    ]
    ratio = medians["sentence_embedding"][0] / base
    lines.append(
        f"target: sentence_embedding / minilm >= {TARGET}: {ratio:.2f} "
        f"({'met' if ratio >= TARGET else 'NOT met'}); per round "
        + ", ".join(f"{r:.2f}" for r in per_round)
        + f" (median {statistics.median(per_round):.2f})"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
