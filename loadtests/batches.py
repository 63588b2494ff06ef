"""Which batch sizes the server's batcher formed during one measurement.

Read from ModelStatistics before and after a run: `batch_stats` counts executions per
batch size, as Triton reports them. One channel is kept for a server's lifetime, so that
under `--workers N` every snapshot comes from the same worker (a sample of 1/N of the load).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import grpc

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

Snapshot = dict[str, Counter[int]]  # version -> executions per batch size


@dataclass(frozen=True, slots=True)
class BatchMix:
    version: str  # the version that ran
    executions: int
    mean: float  # rows per execution


class StatisticsClient:
    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def snapshot(self, model: str) -> Snapshot:
        reply = self._stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=10)
        return {
            stats.version: Counter({b.batch_size: b.compute_infer.count for b in stats.batch_stats})
            for stats in reply.model_stats
        }


def mix(before: Snapshot, after: Snapshot) -> BatchMix | None:
    """The batches formed between two snapshots, for the version that ran the most."""
    deltas = {version: counts - before.get(version, Counter()) for version, counts in after.items()}
    version, counts = max(deltas.items(), key=lambda item: item[1].total(), default=("", None))
    if not counts:
        return None
    executions = counts.total()
    rows = sum(size * count for size, count in counts.items())
    return BatchMix(version, executions, rows / executions)
