"""Security settings: off by default, and combinations that cannot work refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app import StartupError, build_security, grpc_options
from server.core.access import UNRESTRICTED
from server.core.errors import PermissionDenied
from server.security.authorizer import CallerAuthorizer
from server.settings import Settings, parse


def test_everything_is_off_by_default() -> None:
    settings = parse([], environ={})
    assert not settings.authentication
    security = build_security(settings)
    assert security.admission is None  # no interceptor at all
    assert security.authorizer is UNRESTRICTED
    assert security.tls is None
    assert security.summary == {"auth": [], "tls": "off", "rate_limit": "off"}


def test_a_rate_limit_alone_installs_the_interceptor() -> None:
    security = build_security(parse(["--rate-limit", "5"], environ={}))
    assert security.admission is not None
    assert isinstance(security.authorizer, CallerAuthorizer)
    assert security.summary["rate_limit"] == "5 requests/s (burst 5)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--jwt-secret-file", "s"], "JWT authentication needs --jwt-issuer and --jwt-audience"),
        (["--jwt-jwks-file", "j", "--jwt-issuer", "i"], "needs --jwt-issuer and --jwt-audience"),
        (["--tls-cert-file", "c"], "--tls-cert-file and --tls-key-file go together"),
        (["--tls-client-ca-file", "ca"], "--tls-client-ca-file (mutual TLS) needs"),
        (["--rate-limit", "-1"], "--rate-limit must not be negative"),
        (["--max-batch-rows", "0"], "--max-batch-rows must be at least 1"),
        (["--max-connection-age-s", "-1"], "--max-connection-age-s must not be negative"),
    ],
)
def test_impossible_combinations_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(argv, environ={})
    assert message in capsys.readouterr().err


def test_security_files_come_from_the_environment_too(tmp_path: Path) -> None:
    settings = parse([], environ={"INFERENCE_API_KEYS_FILE": str(tmp_path / "keys.yaml")})
    assert settings.api_keys_file == tmp_path / "keys.yaml" and settings.authentication
    assert parse([], environ={"INFERENCE_AUTH_EXEMPT": ""}).auth_exempt == ()


def test_a_bad_keys_file_is_a_start_up_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [{name: a}]")
    with pytest.raises(StartupError, match="key 'a': 'sha256' must be 64 lowercase hex digits"):
        build_security(Settings(api_keys_file=path))
    with pytest.raises(StartupError, match="cannot read the keys file"):
        build_security(Settings(api_keys_file=tmp_path / "absent.yaml"))


def test_limits_become_grpc_options() -> None:
    options = dict(
        grpc_options(
            Settings(
                max_metadata_bytes=1000,
                max_concurrent_streams=7,
                keepalive_min_ping_interval_s=1.5,
                keepalive_permit_without_calls=True,
                keepalive_max_ping_strikes=3,
            ),
            reuse_port=False,
        )
    )
    assert options["grpc.max_metadata_size"] == options["grpc.absolute_max_metadata_size"] == 1000
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 1500
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_ping_strikes"] == 3
    assert "grpc.max_connection_age_ms" not in options
    aged = dict(grpc_options(Settings(max_connection_age_s=60), reuse_port=False))
    assert aged["grpc.max_connection_age_ms"] == 60_000
    assert aged["grpc.max_connection_age_grace_ms"] == 30_000


def test_the_authorizer_refuses_a_call_it_has_no_caller_for() -> None:
    """Fail closed: a data plane call that did not pass the interceptor may do nothing."""
    authorizer = CallerAuthorizer()
    for check in (authorizer.check_model, authorizer.check_infer):
        with pytest.raises(PermissionDenied, match="not admitted"):
            check("digits")
    with pytest.raises(PermissionDenied, match="not admitted"):
        authorizer.check_admin()
    assert not authorizer.allows("digits")
