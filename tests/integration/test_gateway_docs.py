"""The REST and grpcurl examples of README.md and docs/gateway.md work as written, through a
real gateway in front of the default models (addresses swapped for the test's ports)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from processes import ROOT, ServerProcess

from gateway import RunningGateway, start_gateway
from gateway.build import build

GATEWAY_ADDRESS = "127.0.0.1:8000"
SERVER_ADDRESS = "127.0.0.1:8001"
DOCS = {"README.md": ROOT / "README.md", "docs/gateway.md": ROOT / "docs" / "gateway.md"}
GRPCURL = ROOT / "examples" / "grpcurl.py"


@pytest.fixture(scope="module")
def gateway(
    default_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    built = build(tmp_path_factory.mktemp("gateway-build"))
    with start_gateway(default_server.grpc_port, build_dir=built.descriptor_path.parent) as gw:
        yield gw


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("doc", list(DOCS))
def test_tritonclient_http_examples_run(gateway: RunningGateway, doc: str) -> None:
    blocks = [b for b in _python_blocks(DOCS[doc].read_text()) if "tritonclient.http" in b]
    assert blocks, f"{doc} has no tritonclient.http example"
    for block in blocks:
        assert GATEWAY_ADDRESS in block
        code = block.replace(GATEWAY_ADDRESS, gateway.address)
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines and all(line == "[0] expected 0" for line in lines), result.stdout


@pytest.mark.parametrize("doc", list(DOCS))
def test_the_curl_inference_example_works(gateway: RunningGateway, doc: str) -> None:
    call = re.search(
        r"curl -s -X POST (?:localhost|127\.0\.0\.1):8000(\S+) \\\n.*?-d '(.+?)'\n",
        DOCS[doc].read_text(),
        re.DOTALL,
    )
    assert call is not None, f"the digits example is gone from {doc}"
    path, body = call.groups()
    reply = httpx.post(
        gateway.url + path, content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [3]}
    ]


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GRPCURL), *args], capture_output=True, text=True, timeout=60
    )


def test_the_readme_grpcurl_lines_run(default_server: ServerProcess) -> None:
    lines = re.findall(r"^python examples/grpcurl\.py (.+)$", DOCS["README.md"].read_text(), re.M)
    assert len(lines) == 2
    listed, metadata = (
        _grpcurl(*shlex.split(line.replace(SERVER_ADDRESS, default_server.grpc_address)))
        for line in lines
    )
    assert listed.returncode == 0, listed.stderr
    assert "inference.GRPCInferenceService" in listed.stdout.split()
    assert metadata.returncode == 0, metadata.stderr
    assert '"name": "digits"' in metadata.stdout and '"versions"' in metadata.stdout


def test_grpcurl_through_the_gateway(gateway: RunningGateway) -> None:
    described = _grpcurl(gateway.address, "describe", "inference.GRPCInferenceService")
    assert described.returncode == 0, described.stderr
    assert (
        "ModelInfer(inference.ModelInferRequest) returns (inference.ModelInferResponse)"
        in described.stdout
    )
    ready = _grpcurl(
        "-d", '{"name": "digits"}', gateway.address, "inference.GRPCInferenceService/ModelReady"
    )
    assert ready.returncode == 0 and '"ready": true' in ready.stdout


def test_grpcurl_reports_errors(default_server: ServerProcess) -> None:
    result = _grpcurl(
        "-d", '{"name": "nope"}', default_server.grpc_address,
        "inference.GRPCInferenceService/ModelMetadata",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "ERROR: NOT_FOUND: unknown model 'nope'"
