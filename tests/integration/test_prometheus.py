"""A real Prometheus (Debian's package) scrapes a real server: PromQL sees the request count,
the alert rules load and evaluate, promtool accepts the rules and a scrape, and every
metric the dashboard and the rules name exists in a real scrape."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from processes import ROOT, ServerProcess, start_server, stop_process
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
OBSERVABILITY = ROOT / "deploy" / "observability"
ALERTS = OBSERVABILITY / "alerts.yaml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
SENT = 12
METRIC_NAME = re.compile(r"\b(?:inference|rpc)_[a-z0-9_]+\b")
# What is not a metric name in PromQL: label matchers, grouping labels, template text.
NOT_NAMES = re.compile(r"\{[^}]*\}|\b(?:by|without|on|ignoring)\s*\([^)]*\)")

Writer = Callable[[Path, str, dict[int, bytes], str], Path]


def _tool(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: apt-get install prometheus (make test installs it)")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(server: ServerProcess) -> str:
    port = server.start_line["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def _sample_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Writer,
    add_constant_model: Callable[[float], bytes],
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("models")
    write_model(root, "add", {1: add_constant_model(1.0)}, "max_batch_size: 4\n")
    with start_server(root) as running:
        with grpc.insecure_channel(running.grpc_address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(SENT):
                message = service_pb2.ModelInferRequest(model_name="add")
                message.inputs.add(name="x", datatype="FP32", shape=[1, 2])
                message.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
                stub.ModelInfer(message, timeout=30)
        yield running


@pytest.fixture(scope="module")
def prometheus(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus on a free port, scraping the server every second, with our alert rules."""
    binary = _tool(PROMETHEUS)
    work = tmp_path_factory.mktemp("prometheus")
    (work / "alerts.yaml").write_text(ALERTS.read_text())
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yaml"],
        "scrape_configs": [
            {
                "job_name": "inference-server",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{server.start_line['metrics_port']}"]}],
            }
        ],
    }
    (work / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = _free_port()
    process = subprocess.Popen(
        [
            str(binary),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "prometheus.log").open("w"),
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)  # type: ignore[arg-type]


def _api(base: str, path: str, **params: str) -> dict[str, object]:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]  # type: ignore[no-any-return]


def _until(probe: Callable[[], object], timeout_s: float = 60.0) -> object:
    """Poll until `probe` returns something truthy; Prometheus scrapes on its own clock."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as exc:  # not listening yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    pytest.fail(f"gave up waiting; last answer: {last!r}")


def test_promql_returns_the_request_count(prometheus: str) -> None:
    query = 'sum(inference_requests_total{model="add", version="1", status="OK"})'

    def count() -> float | None:
        result = _api(prometheus, "query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None  # type: ignore[index]

    assert _until(lambda: count() == SENT)
    targets = _api(prometheus, "targets")["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]  # type: ignore[index, union-attr]


def test_the_alert_rules_load_and_evaluate(prometheus: str) -> None:
    def evaluated() -> list[dict[str, object]] | None:
        groups = _api(prometheus, "rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]  # type: ignore[union-attr, index]
        done = rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules)
        return rules if done and all(r["health"] == "ok" for r in rules) else None

    rules = _until(evaluated)
    assert {r["name"] for r in rules} == {  # type: ignore[attr-defined]
        "InferenceErrorRatioHigh",
        "InferenceLatencyP99High",
        "InferenceQueueSaturated",
        "InferenceServerNotReady",
        "InferenceModelLoadingTooLong",
        "InferenceWorkerMetricsMissing",
    }
    # A ready server with no errors fires nothing.
    assert all(r["state"] == "inactive" for r in rules), rules  # type: ignore[attr-defined]


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [str(_tool(PROMTOOL)), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_promtool_accepts_a_scrape(server: ServerProcess) -> None:
    result = subprocess.run(
        [str(_tool(PROMTOOL)), "check", "metrics"],
        input=_scrape(server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""  # no lint findings either


def _names(expressions: list[str]) -> set[str]:
    return {name for e in expressions for name in METRIC_NAME.findall(NOT_NAMES.sub(" ", e))}


def _names_in_dashboard() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [
        v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    return _names(expressions)


def _names_in_rules() -> set[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return _names([r["expr"] for g in rules["groups"] for r in g["rules"]])


def test_every_metric_the_dashboard_and_rules_use_exists(server: ServerProcess) -> None:
    scraped = _sample_names(_scrape(server))
    used = _names_in_dashboard() | _names_in_rules()
    assert len(used) >= 12, used  # the regex found the expressions
    # inference_worker_up exists only under --workers: checked on such a server below.
    missing = used - scraped - {"inference_worker_up"}
    assert not missing, missing


def test_worker_metric_exists_under_workers(
    tmp_path: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> None:
    write_model(tmp_path, "add", {1: add_constant_model(1.0)}, "max_batch_size: 4\n")
    with start_server(tmp_path, "--workers", "2") as server:
        with grpc.insecure_channel(server.grpc_address) as channel:
            message = service_pb2.ModelInferRequest(model_name="add")
            message.inputs.add(name="x", datatype="FP32", shape=[1, 2])
            message.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=30)
        scraped = _sample_names(_scrape(server))
    assert "inference_worker_up" in scraped
    used = _names_in_dashboard() | _names_in_rules()
    assert not used - scraped, used - scraped
