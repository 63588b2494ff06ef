"""Trace context and request ids through a real Envoy: a REST and a gRPC-web call carrying
a caller's `traceparent` become server spans that continue the caller's trace, and Envoy's
JSON access log names the same trace id and the request id the caller got back.

One server (console span exporter, spans on its stdout) and one Envoy for the module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc_web
import httpx
import numpy as np
import pytest
from processes import ServerProcess, start_server
from traffic import wait_until
from tritonclient.grpc import service_pb2

from gateway import RunningGateway, start_gateway
from gateway.build import build

PARENT_ID = "00f067aa0ba902b7"
TRACESTATE = "vendor=opaque"
ORIGIN = "http://localhost:5173"


@dataclass
class Observed:
    server: ServerProcess
    gateway: RunningGateway
    access_log: Path

    def span(self, name: str, trace_id: str) -> dict[str, Any]:
        """The server's span `name` in trace `trace_id`, once the exporter wrote it."""

        def find() -> dict[str, Any] | None:
            for line in list(self.server.log_lines):
                if f'"0x{trace_id}"' in line:
                    record = json.loads(line)
                    if record.get("name") == name:
                        return record  # type: ignore[no-any-return]
            return None

        return wait_until(find, 30, f"span {name} of trace {trace_id}")  # type: ignore[return-value]

    def access(self, request_id: str) -> dict[str, Any]:
        """Envoy's access log line for `request_id`, once Envoy flushed it (every second)."""

        def find() -> dict[str, Any] | None:
            lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
            records = [json.loads(line) for line in lines]
            return next((r for r in records if r["request_id"] == request_id), None)

        return wait_until(find, 30, f"access log line {request_id}")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> Iterator[Observed]:
    root = tmp_path_factory.mktemp("observed")
    write_model(root / "models", "add", {1: add_constant_model(1.0)}, "max_batch_size: 4\n")
    built = build(root / "build")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export spans within 50 ms, not 5 s
        with (
            start_server(root / "models", "--trace-exporter", "console") as server,
            start_gateway(
                server.grpc_port,
                build_dir=built.descriptor_path.parent,
                log_path=root / "envoy.log",
                access_log=root / "access.log",
            ) as gateway,
        ):
            yield Observed(server, gateway, root / "access.log")


@pytest.fixture
def client(observed: Observed) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=observed.gateway.url, timeout=30) as http:
        yield http


def _traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{PARENT_ID}-01"


def _assert_continues(span: dict[str, Any], trace_id: str) -> None:
    assert span["kind"] == "SpanKind.SERVER"
    assert span["context"]["trace_id"] == f"0x{trace_id}"
    assert span["parent_id"] == f"0x{PARENT_ID}"
    assert "vendor" in span["context"]["trace_state"]  # tracestate came along


def test_a_rest_call_continues_the_callers_trace(observed: Observed, client: httpx.Client) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}'
    headers = {
        "traceparent": _traceparent(trace_id),
        "tracestate": TRACESTATE,
        "content-type": "application/json",
    }
    reply = client.post("/v2/models/add/infer", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["data"] == [2.0, 3.0]
    request_id = reply.headers["x-request-id"]  # made by Envoy, returned to the caller

    _assert_continues(
        observed.span("/inference.HTTPInferenceService/ModelInfer", trace_id), trace_id
    )
    line = observed.access(request_id)
    assert line["trace_id"] == trace_id
    assert (line["method"], line["path"], line["response_code"]) == (
        "POST",
        "/v2/models/add/infer",
        200,
    )
    assert line["grpc_status"] == 0
    assert int(line["upstream_service_time_ms"]) <= line["duration_ms"]
    assert line["bytes_received"] == len(body)
    assert line["bytes_sent"] == len(reply.content)
    assert line["upstream_host"] == observed.server.grpc_address
    assert line["start_time"].endswith("Z")


def test_a_grpc_web_call_continues_the_callers_trace(
    observed: Observed, client: httpx.Client
) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    request = service_pb2.ModelInferRequest(model_name="add")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.array([[1, 2]], np.float32).tobytes())
    headers = {"traceparent": _traceparent(trace_id), "tracestate": TRACESTATE}
    reply = grpc_web.call(
        client, "/inference.GRPCInferenceService/ModelInfer", request.SerializeToString(), headers
    )
    assert reply.status == 0, reply.message
    request_id = reply.headers["x-request-id"]

    _assert_continues(
        observed.span("/inference.GRPCInferenceService/ModelInfer", trace_id), trace_id
    )
    line = observed.access(request_id)
    assert line["trace_id"] == trace_id
    assert line["path"] == "/inference.GRPCInferenceService/ModelInfer"
    assert line["response_code"] == 200


def test_a_callers_request_id_is_kept_and_a_bad_traceparent_is_not_a_trace_id(
    observed: Observed, client: httpx.Client
) -> None:
    headers = {"x-request-id": "checkout-7f3a", "traceparent": "not-a-traceparent"}
    reply = client.get("/v2/health/live", headers=headers)
    assert reply.json() == {"live": True}
    assert reply.headers["x-request-id"] == "checkout-7f3a"
    line = observed.access("checkout-7f3a")
    assert line["trace_id"] is None
    assert line["path"] == "/v2/health/live"


def test_an_error_envoy_answers_itself_is_logged_too(
    observed: Observed, client: httpx.Client
) -> None:
    reply = client.get("/nowhere", headers={"traceparent": _traceparent("1" * 32)})
    assert reply.status_code == 404
    line = observed.access(reply.headers["x-request-id"])
    assert (line["response_code"], line["trace_id"], line["upstream_host"]) == (404, "1" * 32, None)


def test_browsers_may_send_trace_context_and_read_the_request_id(client: httpx.Client) -> None:
    sent = "traceparent, tracestate, x-request-id, x-api-key, authorization"
    preflight = client.options(
        "/v2/models/add/infer",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": sent,
        },
    )
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {h.strip() for h in sent.split(",")} <= allowed
    reply = client.get("/v2/health/live", headers={"origin": ORIGIN})
    exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "retry-after", "www-authenticate"} <= exposed
