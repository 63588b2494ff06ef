"""The `--workers` parent's /metrics: every worker's scrape in one, labelled by worker.

Each worker serves its own metrics on a loopback port only the parent knows. On each
scrape the parent fetches them all (in parallel, bounded by `timeout_s`), adds
`worker="<index>"` to every series, and answers them as one exposition. Nothing is summed
here: counters, histograms and gauges stay exact per worker, and PromQL's `sum without
(worker)` gives the totals. `inference_worker_up{worker}` says which workers answered;
a worker that did not is missing from that scrape rather than counted as zero.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

WORKER = "worker"
SCRAPE_TIMEOUT_S = 5.0


def _fetch(port: int, timeout_s: float) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            return str(r.read().decode("utf-8"))
    except OSError:
        return None


def merge(scrapes: Sequence[str | None]) -> list[Metric]:
    """Worker i's families (None: it did not answer), with `worker="i"` on each sample."""
    families: dict[str, Metric] = {}
    up = GaugeMetricFamily(
        "inference_worker_up", "1 when the worker answered this scrape", labels=[WORKER]
    )
    for index, text in enumerate(scrapes):
        worker = str(index)
        up.add_metric([worker], 0 if text is None else 1)
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
            merged.samples.extend(
                Sample(s.name, {**s.labels, WORKER: worker}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            )
    return [*families.values(), up]


class WorkerMetrics:
    def __init__(self, ports: Sequence[int], timeout_s: float = SCRAPE_TIMEOUT_S) -> None:
        self._ports = list(ports)
        self._timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max(1, len(self._ports)), thread_name_prefix="scrape")

    def render(self) -> bytes:
        scrapes = list(self._pool.map(lambda p: _fetch(p, self._timeout_s), self._ports))
        families = merge(scrapes)

        class Collector:
            def collect(self) -> Iterator[Metric]:
                return iter(families)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector())  # type: ignore[arg-type]
        return generate_latest(registry)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
