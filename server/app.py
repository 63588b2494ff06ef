"""Assembles one server process and runs it until SIGINT or SIGTERM.

Shutdown is a sequence of named steps, each bounded (`InferenceServer.stop`):
1. mark NOT_SERVING: readiness, the inference service and every model; liveness stays;
2. keep serving for `--shutdown-delay-s`, so that load balancers notice step 1 first;
3. stop accepting RPCs (new ones get UNAVAILABLE) and let every admitted RPC finish on
   the models it needs, for at most `--shutdown-grace-s`; those still waiting then get
   UNAVAILABLE, and anything left half a second later is cancelled;
4. drain the batchers, which by now hold nothing an admitted RPC waits for;
5. release the sessions, stop the metrics endpoint, flush the spans, and exit 0.
A second SIGINT or SIGTERM exits at once with status 1. SIGHUP re-reads the security files
(API keys, JWT secret or JWKS, TLS certificates) without a restart.

Telemetry (docs/observability.md) is wired here: the metrics read the repository's and
the interceptor's counters; tracing, when an exporter is chosen, adds the RPC span
interceptor and an observer to every batcher; models that ask for payload logging get the
payload logger through the data plane.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter

from inference import grpc_service_pb2 as pb
from inference import http_service_pb2_grpc as http_pb_grpc
from server.api.grpc import telemetry as grpc_telemetry
from server.api.grpc.admission import Admission
from server.api.grpc.health import Health
from server.api.grpc.servicer import InferenceServicer
from server.api.grpc.tls import CertificateFiles
from server.api.http.servicer import RestServicer
from server.core.access import UNRESTRICTED, Authorizer
from server.core.dataplane import DataPlane, ServerInfo
from server.core.errors import ShuttingDown
from server.execution.factory import Versions
from server.execution.pipeline_factory import PipelineVersions
from server.execution.version import OnnxVersions
from server.repository.poller import Poller
from server.repository.repository import Repository
from server.security.authorizer import CallerAuthorizer
from server.security.bucket import Buckets
from server.security.credentials import Authenticator
from server.security.keys import KeyTable
from server.security.principal import UNLIMITED, Rate
from server.security.reloader import Reloader
from server.security.tokens import TokenVerifier
from server.settings import Settings
from server.telemetry.access import AccessLog
from server.telemetry.endpoint import MetricsEndpoint
from server.telemetry.metrics import Metrics, Sources
from server.telemetry.payloads import PayloadLogger
from server.telemetry.rpc import RpcStats
from server.telemetry.traces import Tracing, exporter_for

log = logging.getLogger("server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
LIVENESS = "live"  # health service name: SERVING until the process exits
ABORT_LEAD_S = 0.5  # step 3: time to answer the requests failed at the end of the grace
DRAIN_BOUND_S = 5.0  # step 4: the batchers hold only orphaned work by then


class StartupError(Exception):
    """The server cannot start as configured; the message says why, for the operator."""


def _version() -> str:
    try:
        return package_version("v2-inference-server")
    except PackageNotFoundError:
        return "0+unknown"


def check_repository(path: os.PathLike[str]) -> None:
    """A typo in the repository path must not give a healthy-looking empty server."""
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        raise StartupError(f"--model-repository {os.fspath(path)!r} does not exist") from None
    except NotADirectoryError:
        raise StartupError(f"--model-repository {os.fspath(path)!r} is not a directory") from None
    except PermissionError:
        raise StartupError(f"--model-repository {os.fspath(path)!r} is not readable") from None
    del entries


class InferenceServer:
    """One grpc.aio server with the inference, health and reflection services.

    `reuse_port`: share the port with sibling processes (the `--workers` supervisor's
    own workers only); a lone server refuses a port that something else serves.

    `metrics_address`: where the /metrics endpoint listens (`run` passes --host and
    --metrics-port); None, as for servers embedded in tests, serves no endpoint, though
    `metrics` still renders. `span_exporter`: trace to this exporter, synchronously,
    whatever --trace-exporter says (tests)."""

    def __init__(
        self,
        settings: Settings,
        worker: int | None = None,
        reuse_port: bool = False,
        *,
        metrics_address: tuple[str, int] | None = None,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.health = Health()
        resource = Resource.create(
            {"service.name": settings.server_name, "service.version": _version()}
        )
        self.tracing: Tracing | None = None
        if span_exporter is not None or settings.trace_exporter != "none":
            self.tracing = Tracing(
                span_exporter
                or exporter_for(settings.trace_exporter, settings.trace_otlp_endpoint),
                settings.trace_sample_ratio,
                resource,
                synchronous=span_exporter is not None,
            )
        mode = settings.model_control_mode
        self.repository = Repository(
            settings.model_repository,
            # Pipelines resolve their models through the repository, once it exists.
            Versions(
                OnnxVersions(settings.workers, self.tracing.observer if self.tracing else None),
                PipelineVersions(lambda: self.repository),
            ),
            on_change=self._model_changed,
            rpc_control=mode == "explicit",
            mode=mode,
        )
        self.poller = (
            Poller(self.repository, settings.repository_poll_secs) if mode == "poll" else None
        )
        self.security = build_security(settings)
        self.dataplane = DataPlane(
            self.repository,
            ServerInfo(settings.server_name, _version()),
            PayloadLogger(),
            self.security.authorizer,
        )
        self.rpc_stats = RpcStats() if settings.metrics else None
        self.metrics: Metrics | None = None
        if settings.metrics:
            sources = Sources(
                versions=self.repository.loaded,
                states=lambda: self.dataplane.index(False),
                ready=self.dataplane.ready,
                status_name=grpc_telemetry.status_name,
                rpc=self.rpc_stats,
            )
            self.metrics = Metrics(sources, resource)
        self._metrics_address = metrics_address
        self._endpoint: MetricsEndpoint | None = None
        self.metrics_port = 0
        self.interceptors = self._interceptors()
        self.server = grpc.aio.server(
            options=grpc_options(settings, reuse_port),
            interceptors=self.interceptors or None,
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        InferenceServicer(
            self.dataplane,
            settings.max_input_elements,
            settings.max_stream_requests,
            settings.max_batch_rows,
            settings.max_element_bytes,
        ).register(self.server)
        # V2 REST, for the gateway (docs/gateway.md); not in reflection, which lists the
        # services clients call.
        http_pb_grpc.add_HTTPInferenceServiceServicer_to_server(
            RestServicer(
                self.dataplane,
                settings.max_input_elements,
                settings.max_batch_rows,
                settings.max_element_bytes,
            ),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = 0

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Outermost first: the RPC span, then the timing and access log inside it, then
        admission (credentials, rate limits), so that refusals are traced and counted."""
        chosen: list[grpc.aio.ServerInterceptor] = []
        if self.tracing is not None:
            chosen.append(grpc_telemetry.tracing_interceptor(self.tracing))
        sample = self.settings.access_log_sample
        access = AccessLog(sample) if sample > 0 else None
        if self.rpc_stats is not None or access is not None:
            chosen.append(grpc_telemetry.TelemetryInterceptor(self.rpc_stats, access))
        if self.security.admission is not None:
            chosen.append(self.security.admission)
        return chosen

    def _start_metrics(self) -> None:
        if self.metrics is None:
            return
        self.metrics.bind(asyncio.get_running_loop())
        if self._metrics_address is None:
            return
        host, port = self._metrics_address
        self._endpoint = MetricsEndpoint(self.metrics.exposition, host, port)
        try:
            self.metrics_port = self._endpoint.start()
        except OSError as exc:
            self._endpoint = None
            raise StartupError(
                f"cannot bind the metrics port at {host}:{port}: {exc.strerror or exc}"
            ) from exc

    def _model_changed(self, name: str, ready: bool) -> None:
        log.info("model state", extra={"event": "model_state", "model": name, "ready": ready})
        self.health.set(name, ready)
        self.health.set("", self.dataplane.ready())

    def _startup_models(self) -> list[str] | None:
        chosen = self.settings.load_model
        return None if not chosen or "*" in chosen else list(chosen)

    async def start(self) -> int:
        """Listen first (so liveness answers during loading), then load the models."""
        check_repository(self.settings.model_repository)
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        tls = self.security.tls
        try:
            if tls is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, tls.credentials())
        except RuntimeError as exc:
            raise StartupError(f"cannot bind the gRPC port at {address}: in use?") from exc
        if not self.port:
            raise StartupError(f"cannot bind the gRPC port at {address}: in use?")
        self._start_metrics()
        self.health.set(LIVENESS, True)
        self.health.set("", False)
        # Accepting requests only once the start-up loads have ended (failed ones too): a
        # replica restarted behind Envoy would otherwise get traffic it answers NOT_FOUND.
        self.health.set(SERVICE_NAME, False)
        await self.server.start()
        await self.repository.start(self._startup_models())
        self.health.set(SERVICE_NAME, True)
        if self.poller is not None:
            self.poller.start()
        self.security.reloader.start()
        self.health.set("", self.dataplane.ready())  # from now on, "" follows ServerReady
        log.info(
            "listening",
            extra={
                # Under --workers the parent announces "listening" once all workers do.
                "event": "listening" if self.worker is None else "worker_listening",
                "worker": self.worker,
                "grpc_port": self.port,
                "grpc_address": f"{self.settings.host}:{self.port}",
                "model_control_mode": self.settings.model_control_mode,
                "metrics_port": self.metrics_port or None,
                "trace_exporter": "custom"
                if self._custom_tracing()
                else self.settings.trace_exporter,
                **self.security.summary,
                "models": [v.name + "/" + str(v.version) for v in self.repository.loaded()],
            },
        )
        return self.port

    async def stop(self) -> None:
        """Graceful shutdown, in the steps the module docstring names."""
        settings = self.settings
        log.info("shutting down", extra={"event": "stopping", "worker": self.worker})
        self.dataplane.accepting = False  # 1. not serving
        if self.poller is not None:
            await self.poller.stop()
        await self.security.reloader.stop()
        await self.health.shutdown(keep=LIVENESS)
        if settings.shutdown_delay_s:  # 2. still serving, while reported as not
            await asyncio.sleep(settings.shutdown_delay_s)
        started = time.monotonic()
        self.health.end_watches()
        await self._finish_admitted(settings.shutdown_grace_s)  # 3.
        remaining = max(settings.shutdown_grace_s - (time.monotonic() - started), 0.0)
        try:  # 4. drain the batchers
            await asyncio.wait_for(self.repository.close(), min(remaining, DRAIN_BOUND_S) + 0.1)
        except TimeoutError:
            log.warning("batchers did not drain in time", extra={"event": "drain_timeout"})
        if self._endpoint is not None:  # 5.
            self._endpoint.stop()
        if self.metrics is not None:
            self.metrics.shutdown()
        if self.tracing is not None:
            tracing = self.tracing
            if not await asyncio.get_running_loop().run_in_executor(None, tracing.shutdown):
                log.warning("spans not exported in time", extra={"event": "trace_flush_timeout"})
        log.info("stopped", extra={"event": "stopped", "worker": self.worker})

    async def _finish_admitted(self, grace: float) -> None:
        """Stop taking RPCs and let the admitted ones finish. Those still waiting on a
        model when the grace runs out are failed with UNAVAILABLE, a status clients retry
        on, and get ABORT_LEAD_S to send it before grpc cancels whatever is left."""
        stopping = asyncio.ensure_future(self.server.stop(grace + ABORT_LEAD_S))
        await asyncio.wait({stopping}, timeout=grace)
        if not stopping.done():
            self.repository.abort(
                ShuttingDown(
                    f"the server is shutting down, and this request did not finish within "
                    f"its {grace:g} s grace (--shutdown-grace-s)"
                )
            )
        await stopping

    def _custom_tracing(self) -> bool:
        return self.tracing is not None and self.settings.trace_exporter == "none"


def _force_exit() -> None:
    log.warning("second signal: exiting now", extra={"event": "forced_exit"})
    sys.stdout.flush()
    os._exit(1)


async def run(
    settings: Settings,
    on_ready: Callable[[InferenceServer], None] = lambda server: None,
    worker: int | None = None,
    reuse_port: bool = False,
    metrics_host: str | None = None,
) -> None:
    """Serve until a signal. The metrics endpoint listens on --host and --metrics-port,
    or on `metrics_host` and a free port (the --workers supervisor's workers)."""
    address = None
    if settings.metrics:
        address = (
            (settings.host, settings.metrics_port) if metrics_host is None else (metrics_host, 0)
        )
    server = InferenceServer(settings, worker, reuse_port, metrics_address=address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            _force_exit()
        stop.set()

    # Under --workers, Ctrl-C sends SIGINT to the whole process group and the supervisor
    # forwards it as SIGTERM: a worker that heeded both would take the second as forcing.
    for sig in (signal.SIGINT, signal.SIGTERM) if worker is None else (signal.SIGTERM,):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGHUP, server.security.reload)
    await server.start()
    on_ready(server)
    await stop.wait()
    await server.stop()


# --- Security and hard limits (docs/security.md) -------------------------------------------


def grpc_options(settings: Settings, reuse_port: bool) -> list[tuple[str, int]]:
    """The server's channel arguments: message, metadata, stream and keepalive limits."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # Soft and hard limit alike: between the two gRPC refuses at random.
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            ms(settings.keepalive_min_ping_interval_s),
        ),
        ("grpc.keepalive_permit_without_calls", int(settings.keepalive_permit_without_calls)),
        ("grpc.http2.max_ping_strikes", settings.keepalive_max_ping_strikes),
    ]
    if settings.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", settings.max_concurrent_streams))
    if settings.max_connection_age_s:
        options.append(("grpc.max_connection_age_ms", ms(settings.max_connection_age_s)))
        options.append(
            ("grpc.max_connection_age_grace_ms", ms(settings.max_connection_age_grace_s))
        )
    return options


@dataclass(slots=True)
class Security:
    """What one process needs for authentication, rate limits and TLS."""

    admission: Admission | None  # the interceptor; None: nothing to check, none installed
    authorizer: Authorizer
    reloader: Reloader
    tls: CertificateFiles | None
    summary: dict[str, object]  # for the start-up line

    def reload(self) -> None:
        """SIGHUP: re-read every security file now."""
        log.info("SIGHUP: reloading security files", extra={"event": "security_reload"})
        self.reloader.check(force=True)
        if self.tls is not None:
            self.tls.request_reload()


def build_security(settings: Settings) -> Security:
    try:
        keys = tokens = tls = None
        if settings.api_keys_file is not None:
            keys = KeyTable(settings.api_keys_file, settings.rate_burst)
        if settings.jwt_secret_file is not None or settings.jwt_jwks_file is not None:
            tokens = TokenVerifier(
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                secret_file=settings.jwt_secret_file,
                jwks_file=settings.jwt_jwks_file,
                leeway_s=settings.jwt_leeway_s,
                scope_claim=settings.jwt_scope_claim,
            )
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            tls = CertificateFiles(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
            )
    except ValueError as exc:  # KeysFileError, TokenConfigError, TlsError
        raise StartupError(str(exc)) from None
    authenticator = None if keys is None and tokens is None else Authenticator(keys, tokens)
    rate = Rate.of(settings.rate_limit, settings.rate_burst) if settings.rate_limit else UNLIMITED
    admission = None
    if authenticator is not None or settings.rate_limit:
        admission = Admission(authenticator, Buckets(rate), settings.auth_exempt)
    return Security(
        admission=admission,
        authorizer=UNRESTRICTED if admission is None else CallerAuthorizer(),
        reloader=Reloader([s for s in (keys, tokens) if s is not None], settings.security_reload_s),
        tls=tls,
        summary={
            "auth": [kind for kind, on in (("api-key", keys), ("jwt", tokens)) if on is not None],
            "tls": "off" if tls is None else "mutual" if tls.mutual else "on",
            "rate_limit": str(rate) if rate.per_second else "off",
        },
    )
