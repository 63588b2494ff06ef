"""The REST and grpcurl examples of README.md and docs/gateway.md work as written, through a
real gateway in front of the default models (addresses swapped for the test's ports). The
curl lines run with the real curl, given the arguments a shell would give it, and their
output is checked against what the docs say it is."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from processes import ROOT, ServerProcess

from gateway import RunningGateway, start_gateway
from gateway.build import build

GATEWAY_ADDRESS = "127.0.0.1:8000"
DOC_GATEWAYS = (GATEWAY_ADDRESS, "localhost:8000")  # `make run`'s gateway, as the docs write it
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


# --- curl, as written --------------------------------------------------------------------


@dataclass(frozen=True)
class CurlExample:
    command: str  # as a shell reads it: continuations joined, quotes still in place
    shown: list[str]  # the output the doc shows for it ("..." stands for anything)

    @property
    def path(self) -> str:
        found = re.search(r"(?:127\.0\.0\.1|localhost):8000(/\S*)", self.command)
        assert found is not None, self.command
        return found.group(1)


def _shell_commands(lines: list[str]) -> list[tuple[str, list[str]]]:
    """A shell block's curl commands, each with the lines after it that are not commands
    (its output). A backslash-newline continues a command; a quoted argument may span lines."""
    commands: list[tuple[str, list[str]]] = []
    pending = ""
    for line in lines:
        if not pending and not line.startswith("curl "):
            if commands and line.strip():
                commands[-1][1].append(line)
            continue
        pending += line + "\n"
        if line.endswith("\\"):
            continue
        try:
            shlex.split(pending)
        except ValueError:  # an open quote: the command goes on
            continue
        commands.append((pending.strip(), []))
        pending = ""
    assert not pending, f"unterminated command: {pending!r}"
    return commands


def curl_examples(text: str) -> list[CurlExample]:
    """Every curl command in a doc's fenced blocks that calls the gateway. A block holding
    one command and nothing else may show its output in the block right after it."""
    blocks = list(re.finditer(r"^```[a-z]*\n(.*?)^```\n", text, flags=re.DOTALL | re.M))
    examples = []
    for index, block in enumerate(blocks):
        commands = _shell_commands(block.group(1).splitlines())
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if (
            len(commands) == 1
            and not commands[0][1]
            and following is not None
            and not text[block.end() : following.start()].strip()
            and not _shell_commands(following.group(1).splitlines())
        ):
            commands[0][1].extend(following.group(1).splitlines())
        for command, shown in commands:
            if any(gateway in command for gateway in DOC_GATEWAYS):
                examples.append(CurlExample(command, shown))
    return examples


def curl_argv(example: CurlExample, gateway: RunningGateway) -> list[str]:
    """The example's argv, as a shell splits it, pointed at the test's gateway."""
    argv = shlex.split(example.command.replace("\\\n", ""))
    assert argv[0] == "curl", example.command
    for address in DOC_GATEWAYS:
        argv = [arg.replace(address, gateway.address) for arg in argv]
    return argv


def run_curl(example: CurlExample, gateway: RunningGateway) -> str:
    """Run the example with the real curl; its stdout."""
    curl = shutil.which("curl")
    assert curl is not None, (
        "no curl on PATH: the docs' examples need it (Debian: apt install curl)"
    )
    argv = curl_argv(example, gateway)
    result = subprocess.run([curl, *argv[1:]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{example.command}\n{result.stderr}"
    return result.stdout


def assert_shown(output: str, shown: str) -> None:
    """`output` is what the doc shows, each "..." standing for anything."""
    pieces = shown.split("...")
    assert output.startswith(pieces[0]) and output.endswith(pieces[-1]), (output, shown)
    at = len(pieces[0])
    for piece in pieces[1:-1]:
        found = output.find(piece, at)
        assert found >= 0, (output, shown)
        at = found + len(piece)


def _readme_curl(path: str) -> CurlExample:
    [example] = [e for e in curl_examples(DOCS["README.md"].read_text()) if e.path == path]
    return example


def test_the_readme_curl_lines_are_all_run() -> None:
    """Each README curl line to the gateway has a test below that runs it."""
    paths = [e.path for e in curl_examples(DOCS["README.md"].read_text())]
    assert paths == [
        "/v2/health/ready",
        "/v2/models/digits/infer",
        "/v2/models/sentence_embedding/infer",
    ]


def test_the_readme_health_and_digits_curl_lines_run(gateway: RunningGateway) -> None:
    ready = _readme_curl("/v2/health/ready")
    assert json.loads(run_curl(ready, gateway)) == {"ready": True}
    reply = run_curl(_readme_curl("/v2/models/digits/infer"), gateway)
    assert '"data":[3]' in reply  # "The reply carries `"data":[3]` for the label."
    assert json.loads(reply)["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [3]}
    ]


def test_the_gateway_docs_curl_examples_answer_as_shown(gateway: RunningGateway) -> None:
    examples = curl_examples(DOCS["docs/gateway.md"].read_text())
    assert [e.path for e in examples] == [
        "/v2/models/digits/infer",
        "/v2/models/nope",
        "/v2/models/digits/config",
        "/v2/repository/index",
    ]
    for example in examples:
        assert len(example.shown) == 1, example
        assert_shown(run_curl(example, gateway), example.shown[0])


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


def test_the_readme_raw_text_curl_call_works(
    gateway: RunningGateway, default_client: grpcclient.InferenceServerClient
) -> None:
    """The curl call, run as written through the gateway with the real curl, answers
    unit-length embeddings equal to the same sentences over gRPC."""
    example = _readme_curl(f"/v2/models/{PIPELINE}/infer")
    assert example.command in _readme_section(RAW_TEXT)
    argv = curl_argv(example, gateway)
    body = argv[argv.index("-d") + 1]
    reply = json.loads(run_curl(example, gateway))
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
