"""Scale-out through Envoy (gateway/upstream.py): two real server replicas behind one real
Envoy, real gRPC clients through it. A replica killed under load costs (almost) no
request and no wrong answer; it restarts on its port and takes traffic again; a rolling
restart with SIGTERM loses nothing.

The tests share one cluster and run in order, each leaving every replica healthy. Every
wait is on something observable: Envoy's admin view of each replica (/clusters: health
flags, requests in flight, answered), a process's exit, the clients' answers.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from processes import ROOT, ServerProcess, free_port, start_server
from traffic import SteadyLoad, check_digits, digits_request, wait_until
from tritonclient.grpc import service_pb2_grpc

from gateway import RunningGateway, start_gateway
from gateway.admin import Admin
from gateway.build import build

OK = grpc.StatusCode.OK
REPLICAS = 2
CLIENTS = 4
HEALTH_CHECK_S = 0.1
# Above the interval plus the check's 1 s timeout, with room for a loaded CI runner: Envoy
# has taken the replica out before it stops accepting (docs/deployment.md).
SHUTDOWN_DELAY_S = 2.0
WAIT_S = 60.0  # bound of every wait; none should come near it


@dataclass(frozen=True, slots=True)
class Host:
    """One replica as Envoy sees it."""

    answered: int  # rq_success
    in_flight: int  # rq_active
    health: dict[str, object]

    @property
    def healthy(self) -> bool:
        return self.health == {"eds_health_status": "HEALTHY"}


@dataclass
class Cluster:
    """The replicas, on ports of their own that they keep across restarts, and Envoy."""

    repository: Path
    ports: list[int]
    gateway: RunningGateway | None = None
    servers: dict[int, ServerProcess] = field(default_factory=dict)
    _stops: dict[int, contextlib.ExitStack] = field(default_factory=dict)

    def start(self, replica: int) -> None:
        """(Re)start a replica on its port; the previous process has exited."""
        self._stops.pop(replica, contextlib.ExitStack()).close()
        stop = contextlib.ExitStack()
        self.servers[replica] = stop.enter_context(
            start_server(
                self.repository,
                *("--shutdown-delay-s", str(SHUTDOWN_DELAY_S)),
                grpc_port=self.ports[replica],
            )
        )
        self._stops[replica] = stop

    def stop_all(self) -> None:
        for stop in self._stops.values():
            stop.close()

    def host(self, replica: int) -> Host:
        assert self.gateway is not None
        clusters = json.loads(Admin(self.gateway.admin_address).get("/clusters?format=json"))
        (inference,) = [c for c in clusters["cluster_statuses"] if c["name"] == "inference"]
        for status in inference["host_statuses"]:
            if status["address"]["socket_address"]["port_value"] == self.ports[replica]:
                stats = {s["name"]: int(s.get("value", 0)) for s in status["stats"]}
                return Host(stats["rq_success"], stats["rq_active"], status["health_status"])
        raise AssertionError(f"Envoy has no host on port {self.ports[replica]}")

    def counter(self, name: str) -> int:
        """A counter of the upstream cluster, e.g. upstream_rq_retry_success."""
        assert self.gateway is not None
        text = Admin(self.gateway.admin_address).get(f"/stats?filter=^cluster.inference.{name}$")
        return int(text.rsplit(":", 1)[1]) if text.strip() else 0

    def wait_healthy(self, replica: int, healthy: bool = True) -> None:
        """Until Envoy has the replica in rotation (or, with `healthy` false, out of it)."""
        wait_until(
            lambda: self.host(replica).healthy == healthy,
            WAIT_S,
            f"replica {replica} {'in' if healthy else 'out of'} rotation",
        )

    def wait_answered(self, replica: int, more: int) -> None:
        """Until the replica has answered `more` requests beyond what it had now."""
        start = self.host(replica).answered
        wait_until(
            lambda: self.host(replica).answered >= start + more,
            WAIT_S,
            f"{more} answers from replica {replica}",
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    repository = tmp_path_factory.mktemp("repository")
    shutil.copytree(ROOT / "models" / "digits", repository / "digits")
    built = build(tmp_path_factory.mktemp("gateway-build"))
    state = Cluster(repository, [free_port() for _ in range(REPLICAS)])
    try:
        for replica in range(REPLICAS):
            state.start(replica)
        with start_gateway(
            *state.ports,
            build_dir=built.descriptor_path.parent,
            health_check_interval_s=HEALTH_CHECK_S,
            log_path=tmp_path_factory.mktemp("envoy") / "envoy.log",
        ) as gateway:
            state.gateway = gateway
            yield state
    finally:
        state.stop_all()


def _load(cluster: Cluster) -> SteadyLoad:
    assert cluster.gateway is not None
    return SteadyLoad(cluster.gateway.address, digits_request, check_digits, CLIENTS)


def _assert_all_correct(load: SteadyLoad, max_failed: int) -> None:
    outcomes = load.snapshot()
    wrong = [o for o in outcomes if o.details.startswith("wrong answer")]
    failed = [o for o in outcomes if o.code != OK]
    assert wrong == [], wrong[:3]
    assert len(failed) <= max_failed, (len(failed), len(outcomes), failed[:5])


def test_one_connection_is_balanced_per_request(cluster: Cluster) -> None:
    """Native gRPC on a single connection reaches both replicas: Envoy balances each
    request (HTTP/2 stream), not each connection as kube-proxy would."""
    assert cluster.gateway is not None
    before = [cluster.host(r).answered for r in range(REPLICAS)]
    with grpc.insecure_channel(cluster.gateway.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for n in range(200):
            request = digits_request(0, n)
            check_digits(request, stub.ModelInfer(request, timeout=30))
    served = [cluster.host(r).answered - before[r] for r in range(REPLICAS)]
    assert sum(served) == 200
    assert min(served) >= 20, served


def test_a_replica_killed_under_load_costs_under_a_thousandth(cluster: Cluster) -> None:
    """SIGKILL with requests in flight on the victim: Envoy retries them on the other
    replica (reset), ejects the victim, and every answer is right.

    The victim is stopped (SIGSTOP) until Envoy counts requests in flight on it, then
    killed: a kill that fell between two requests would prove nothing about the ones it
    cuts off."""
    victim = cluster.servers[0].process
    retried = cluster.counter("upstream_rq_retry_success")
    with _load(cluster) as load:
        for replica in range(REPLICAS):
            cluster.wait_answered(replica, 100)
        victim.send_signal(signal.SIGSTOP)
        wait_until(lambda: cluster.host(0).in_flight >= 1, WAIT_S, "requests on the victim")
        victim.kill()
        victim.wait()
        killed_at = len(load.snapshot())
        wait_until(lambda: len(load.snapshot()) >= killed_at + 1000, WAIT_S, "1000 answers after")
    total = len(load.snapshot())
    _assert_all_correct(load, max_failed=(total - 1) // 1000)  # below 0.1%
    assert cluster.counter("upstream_rq_retry_success") > retried, "nothing was cut off"
    assert not cluster.host(0).healthy


def test_the_killed_replica_restarts_on_its_port_and_rejoins(cluster: Cluster) -> None:
    """A replica back on its port passes its health check and takes traffic again, and
    no request fails while it rejoins."""
    victim = cluster.servers[0].process
    if victim.poll() is None:  # run alone, without the test before
        victim.kill()
        victim.wait()
    cluster.wait_healthy(0, healthy=False)
    with _load(cluster) as load:
        cluster.wait_answered(1, 50)
        cluster.start(0)
        cluster.wait_healthy(0)
        cluster.wait_answered(0, 200)
    _assert_all_correct(load, max_failed=0)


def test_a_rolling_restart_with_sigterm_loses_nothing(cluster: Cluster) -> None:
    """One replica at a time: SIGTERM, NOT_SERVING for the shutdown delay (Envoy takes it
    out), exit 0, restart on the same port, back in rotation and answering; 0 failures."""
    for replica in range(REPLICAS):
        cluster.wait_healthy(replica)
    with _load(cluster) as load:
        for replica in range(REPLICAS):
            cluster.wait_answered(replica, 50)
            server = cluster.servers[replica].process
            server.send_signal(signal.SIGTERM)
            cluster.wait_healthy(replica, healthy=False)  # during the shutdown delay
            assert server.wait(SHUTDOWN_DELAY_S + 15) == 0
            cluster.start(replica)
            cluster.wait_healthy(replica)
            cluster.wait_answered(replica, 50)
    _assert_all_correct(load, max_failed=0)
    assert len(load.snapshot()) >= 200 * REPLICAS
