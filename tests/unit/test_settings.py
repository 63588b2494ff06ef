"""Settings from flags and the environment: types, precedence, errors that name their
source, and a `--help` that describes every setting."""

from __future__ import annotations

import dataclasses

import pytest

from server.settings import ENV_PREFIX, Settings, parse


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str]) -> str:
    """The error line of a parse that must exit as argparse does on bad input (status 2)."""
    with pytest.raises(SystemExit) as exited:
        parse(argv, environ=environ)
    assert exited.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_nothing_given_is_the_defaults() -> None:
    assert parse([], environ={}) == Settings()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("false", False),
        ("true", True),
        ("False", False),
        ("TRUE", True),
        (" false ", False),
        ("0", False),
        ("1", True),
        ("no", False),
        ("yes", True),
        ("off", False),
        ("on", True),
    ],
)
def test_a_boolean_parses_from_the_environment(text: str, value: bool) -> None:
    assert parse([], environ={"INFERENCE_METRICS": text}).metrics is value
    environ = {"INFERENCE_KEEPALIVE_PERMIT_WITHOUT_CALLS": text}
    assert parse([], environ=environ).keepalive_permit_without_calls is value


@pytest.mark.parametrize(("text", "value"), [("false", False), ("true", True)])
def test_a_boolean_parses_from_the_command_line(text: str, value: bool) -> None:
    assert parse(["--metrics", text], environ={}).metrics is value
    argv = ["--keepalive-permit-without-calls", text]
    assert parse(argv, environ={}).keepalive_permit_without_calls is value


def test_flags_win_over_the_environment() -> None:
    environ = {"INFERENCE_METRICS": "true", "INFERENCE_WORKERS": "3", "INFERENCE_LOAD_MODEL": "a"}
    settings = parse(["--metrics", "false", "--workers", "2", "--load-model", "b"], environ)
    assert (settings.metrics, settings.workers, settings.load_model) == (False, 2, ("b",))
    settings = parse([], environ)
    assert (settings.metrics, settings.workers, settings.load_model) == (True, 3, ("a",))


def test_a_list_comes_comma_separated_from_the_environment_and_repeated_from_flags() -> None:
    assert parse([], {"INFERENCE_LOAD_MODEL": "a, b,,c"}).load_model == ("a", "b", "c")
    argv = ["--load-model", "a", "--load-model", "b"]
    assert parse(argv, environ={}).load_model == ("a", "b")


def test_an_out_of_range_environment_value_is_overridden_by_a_good_flag() -> None:
    assert parse(["--workers", "2"], environ={"INFERENCE_WORKERS": "0"}).workers == 2


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("INFERENCE_GRPC_PORT", "3.5", "expected an integer, got '3.5'"),
        ("INFERENCE_WORKERS", "two", "expected an integer, got 'two'"),
        ("INFERENCE_SHUTDOWN_GRACE_S", "soon", "expected a number, got 'soon'"),
        ("INFERENCE_METRICS", "maybe", "expected true or false, got 'maybe'"),
        ("INFERENCE_METRICS", "", "expected true or false, got ''"),
        ("INFERENCE_TRACE_EXPORTER", "zipkin", "expected one of ['none', 'otlp', 'console']"),
        ("INFERENCE_MODEL_CONTROL_MODE", "auto", "expected one of ['explicit', 'poll', 'none']"),
    ],
)
def test_a_bad_environment_value_is_an_error_naming_the_variable(
    variable: str, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _refused(capsys, [], {variable: text})
    assert error == f"python -m server: error: environment variable {variable}: {message}"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"INFERENCE_WORKERS": "0"}, "INFERENCE_WORKERS must be at least 1"),
        ({"INFERENCE_GRPC_PORT": "70000"}, "INFERENCE_GRPC_PORT must be 0..65535"),
        ({"INFERENCE_METRICS_PORT": "-1"}, "INFERENCE_METRICS_PORT must be 0..65535"),
        (
            {"INFERENCE_REPOSITORY_POLL_SECS": "0"},
            "INFERENCE_REPOSITORY_POLL_SECS must be positive",
        ),
        ({"INFERENCE_SHUTDOWN_DELAY_S": "-1"}, "INFERENCE_SHUTDOWN_DELAY_S must not be negative"),
        (
            {"INFERENCE_MAX_STREAM_REQUESTS": "0"},
            "INFERENCE_MAX_STREAM_REQUESTS must be at least 1",
        ),
        (
            {"INFERENCE_TRACE_SAMPLE_RATIO": "1.5"},
            "INFERENCE_TRACE_SAMPLE_RATIO must be between 0 and 1",
        ),
        ({"INFERENCE_RATE_BURST": "-1"}, "INFERENCE_RATE_BURST must not be negative"),
        ({"INFERENCE_MAX_BATCH_ROWS": "0"}, "INFERENCE_MAX_BATCH_ROWS must be at least 1"),
        (
            {"INFERENCE_MAX_CONNECTION_AGE_S": "-5"},
            "INFERENCE_MAX_CONNECTION_AGE_S must not be negative",
        ),
        (
            {"INFERENCE_LOAD_MODEL": "a", "INFERENCE_MODEL_CONTROL_MODE": "poll"},
            "INFERENCE_LOAD_MODEL needs environment variable INFERENCE_MODEL_CONTROL_MODE explicit",
        ),
    ],
)
def test_a_range_error_names_the_environment_variable_it_came_from(
    environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _refused(capsys, [], environ)
    assert error == f"python -m server: error: environment variable {message}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--grpc-port", "70000"], "--grpc-port must be 0..65535"),
        (["--shutdown-grace-s", "-1"], "--shutdown-grace-s must not be negative"),
        (["--access-log-sample", "2"], "--access-log-sample must be between 0 and 1"),
        (
            ["--load-model", "a", "--model-control-mode", "none"],
            "--load-model needs --model-control-mode explicit",
        ),
    ],
)
def test_a_range_error_names_the_flag_it_came_from(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The environment holds a good value for each: the flag is what is wrong.
    environ = {"INFERENCE_WORKERS": "2", "INFERENCE_GRPC_PORT": "9001"}
    assert _refused(capsys, argv, environ) == f"python -m server: error: {message}"


def test_a_mixed_error_names_each_setting_by_where_it_came_from(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = _refused(capsys, ["--model-control-mode", "poll"], {"INFERENCE_LOAD_MODEL": "a"})
    assert error.endswith(
        "environment variable INFERENCE_LOAD_MODEL needs --model-control-mode explicit"
    )


def test_help_shows_every_setting_with_its_description_and_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["--help"], environ={})
    assert exited.value.code == 0
    # argparse wraps lines (and may break at hyphens), so compare without whitespace.
    shown = "".join(capsys.readouterr().out.split())
    for setting in dataclasses.fields(Settings):
        flag = "--" + setting.name.replace("_", "-")
        variable = ENV_PREFIX + setting.name.upper()
        description = "".join(setting.metadata["help"].split())
        assert flag in shown
        assert f"{description}(env{variable};default:" in shown, setting.name


def test_help_shows_a_default_from_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--help"], environ={"INFERENCE_WORKERS": "4"})
    assert "(envINFERENCE_WORKERS;default:4)" in "".join(capsys.readouterr().out.split())
