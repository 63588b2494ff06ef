"""The REST and grpcurl examples of README.md and docs/gateway.md work as written, through a
real gateway in front of the default models (addresses swapped for the test's ports)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
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


# --- README's raw-text calls to the sentence_embedding pipeline -----------------------------

PIPELINE = "sentence_embedding"
RAW_TEXT = "Send text and images, not tensors"  # the README section that shows them


def _readme_section(title: str) -> str:
    text = DOCS["README.md"].read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_the_readme_raw_text_grpc_call_runs(default_server: ServerProcess) -> None:
    """The tritonclient.grpc call prints what its last comment says, and says what to install."""
    section = _readme_section(RAW_TEXT)
    [block] = [b for b in _python_blocks(section) if "tritonclient.grpc" in b and PIPELINE in b]
    assert "pip install 'tritonclient[grpc]'" in section.split(block)[0]
    assert SERVER_ADDRESS in block
    printed = re.search(r"^print\(.*\)  # (.+)$", block, re.M)
    assert printed is not None, "the call's print line says what it prints"
    code = block.replace(SERVER_ADDRESS, default_server.grpc_address)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == printed.group(1)


def _readme_curl(path: str) -> list[str]:
    """The README's curl command that posts to `path`, as argv."""
    call = re.search(
        rf"^curl -s -X POST {re.escape(GATEWAY_ADDRESS + path)} \\\n.*?(?=\n```)",
        _readme_section(RAW_TEXT),
        re.M | re.DOTALL,
    )
    assert call is not None, f"README.md has no curl to {path}"
    return shlex.split(call.group(0).replace("\\\n", " "))


def test_the_readme_raw_text_curl_call_works(
    gateway: RunningGateway, default_client: grpcclient.InferenceServerClient
) -> None:
    """The curl call, run as written through the gateway (with httpx where curl is missing),
    answers unit-length embeddings equal to the same sentences over gRPC."""
    path = f"/v2/models/{PIPELINE}/infer"
    argv = [arg.replace(GATEWAY_ADDRESS, gateway.address) for arg in _readme_curl(path)]
    body = argv[argv.index("-d") + 1]
    if shutil.which("curl"):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        reply = json.loads(result.stdout)
    else:
        posted = httpx.post(
            gateway.url + path, content=body, headers={"content-type": "application/json"}
        )
        assert posted.status_code == 200, posted.text
        reply = posted.json()
    assert reply["model_name"] == PIPELINE, reply
    [output] = reply["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("embedding", "FP32", [2, 384])
    embeddings = np.array(output["data"], np.float32).reshape(2, 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    [sent] = json.loads(body)["inputs"]
    assert (sent["datatype"], sent["shape"]) == ("BYTES", [2])
    text = grpcclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in sent["data"]], dtype=object))
    over_grpc = default_client.infer(PIPELINE, [text]).as_numpy("embedding")
    np.testing.assert_allclose(embeddings, over_grpc, atol=1e-5)
