"""The TypeScript client and the demo page (examples/web/), through a real gateway.

The Node tests (gRPC-web unary calls, Health/Watch streaming, error statuses, the
pipelines digit_from_png and sentence_embedding) and the browser test (headless Chromium on
the demo page, screenshot in tests/artifacts/web-demo.png) live in examples/web/test/; this
module builds the page, starts a server and a gateway that serves the page at /web/, and runs
them against it.
"""

from __future__ import annotations

import functools
import mimetypes
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from processes import ROOT, ServerProcess, start_server

from gateway import RunningGateway, StaticFile, start_gateway
from gateway.build import build

WEB = ROOT / "examples" / "web"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT = ROOT / "tests" / "artifacts" / "web-demo.png"
NPM_TIMEOUT_S = 300
TEST_TIMEOUT_S = 120


def _npm(*args: str, env: dict[str, str] | None = None, timeout: float = TEST_TIMEOUT_S) -> str:
    """Run npm in examples/web; fail the test with its output if it fails."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: install Node.js 20 or newer")
    done = subprocess.run(
        [npm, *args],
        cwd=WEB,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"npm {' '.join(args)} exited with {done.returncode}:\n{output[-6000:]}")
    return output


def _served_files(dist: Path) -> tuple[StaticFile, ...]:
    """Every file of dist/ at /web/<name>, and the page itself at /web/."""
    files = [StaticFile("/web/", dist / "index.html", "text/html; charset=utf-8")]
    for path in sorted(dist.iterdir()):
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files.append(StaticFile(f"/web/{path.name}", path, content_type))
    return tuple(files)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dist() -> Path:
    """The page, built from the current sources (and the packages, installed once)."""
    if not (WEB / "node_modules").is_dir():
        _npm("ci", "--no-audit", "--no-fund", timeout=NPM_TIMEOUT_S)
    _npm("run", "build")
    return WEB / "dist"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The models and pipelines the page calls, from the default repository (`make models`)."""
    repository = tmp_path_factory.mktemp("repository")
    for model in ("digits", "minilm", "digit_from_png", "sentence_embedding"):
        source = ROOT / "models" / model
        assert (source / "1").is_dir(), "run `make models` first"
        shutil.copytree(source, repository / model)
    with start_server(repository) as process:
        yield process


@pytest.fixture(scope="module")
def gateway(
    server: ServerProcess, dist: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    built = build(tmp_path_factory.mktemp("gateway-build"))
    log = tmp_path_factory.mktemp("envoy") / "envoy.log"
    with start_gateway(
        server.grpc_port,
        static_files=_served_files(dist),
        build_dir=built.descriptor_path.parent,
        log_path=log,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def other_origin(dist: Path) -> Iterator[str]:
    """dist/ served from another origin (allowed by the gateway's default CORS origins)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(dist))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as http:
        threading.Thread(target=http.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{http.server_address[1]}"
        http.shutdown()


# --- tests ----------------------------------------------------------------------------------


def test_the_gateway_serves_the_page(gateway: RunningGateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        page = client.get("/web/")
        script = client.get("/web/app.js")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert 'src="app.js"' in page.text
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript"


def _ts_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```ts\n(.*?)```", markdown.read_text(), flags=re.DOTALL)


def test_documented_snippet_is_the_tested_one() -> None:
    """docs/web.md (and README.md, where it shows one) show examples/web/snippet.ts."""
    snippet = (WEB / "snippet.ts").read_text()
    assert _ts_blocks(ROOT / "docs" / "web.md") == [snippet]
    for block in _ts_blocks(ROOT / "README.md"):
        assert block == snippet, "README.md's TypeScript example differs from snippet.ts"


def test_snippet_runs(gateway: RunningGateway, dist: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is missing: install Node.js 20 or newer"
    done = subprocess.run(
        [node, "--import", "tsx", "snippet.ts"],
        cwd=WEB,
        env={**os.environ, "GATEWAY_URL": gateway.url},
        capture_output=True,
        text=True,
        timeout=TEST_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "digits 2 1n\n"


def test_grpc_web_from_node(gateway: RunningGateway) -> None:
    """Connect's gRPC-web transport: unary, server streaming, errors (examples/web/test/)."""
    output = _npm("test", env={"GATEWAY_URL": gateway.url})
    counts = dict(re.findall(r"^# (pass|fail|skipped) (\d+)$", output, re.MULTILINE))
    assert counts["fail"] == "0", output
    assert counts["skipped"] == "0", output
    assert int(counts["pass"]) >= 10, output


@pytest.mark.slow
def test_browser_demo(gateway: RunningGateway) -> None:
    """Headless Chromium on the page the gateway serves: a sample digit, a drawn digit and
    two sentences; the screenshot is tests/artifacts/web-demo.png."""
    SCREENSHOT.unlink(missing_ok=True)
    _browser(gateway, SCREENSHOT=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 0


@pytest.mark.slow
def test_browser_demo_from_another_origin(gateway: RunningGateway, other_origin: str) -> None:
    """The same page served elsewhere calls the gateway cross-origin (CORS)."""
    _browser(gateway, PAGE_URL=f"{other_origin}/?gateway={gateway.url}")


def _browser(gateway: RunningGateway, **env: str) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    output = _npm(
        "run",
        "test:browser",
        env={"GATEWAY_URL": gateway.url, "CHROMIUM": str(CHROMIUM), **env},
    )
    assert re.search(r"^# pass 1$", output, re.MULTILINE), output
