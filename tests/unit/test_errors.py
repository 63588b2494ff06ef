"""The domain error hierarchy: its shape, its `reason` labels, and the structured fields
(model, version, tensor, reason) that telemetry reads instead of parsing messages."""

from __future__ import annotations

import pytest

from server.core import errors

# Each error class: its parent and its reason label. Labels feed metrics; they are stable.
HIERARCHY: dict[type[errors.InferenceError], tuple[type[Exception], str]] = {
    errors.InferenceError: (Exception, "error"),
    errors.InvalidRequest: (errors.InferenceError, "invalid_request"),
    errors.ModelNotFound: (errors.InferenceError, "model_not_found"),
    errors.ModelUnavailable: (errors.InferenceError, "model_unavailable"),
    errors.ShuttingDown: (errors.ModelUnavailable, "shutting_down"),
    errors.VersionRetired: (errors.InferenceError, "version_retired"),
    errors.ControlDisabled: (errors.InferenceError, "control_disabled"),
    errors.QueueFull: (errors.InferenceError, "queue_full"),
    errors.RequestExpired: (errors.InferenceError, "request_expired"),
    errors.RepositoryError: (errors.InferenceError, "repository_error"),
    errors.ForbiddenPath: (errors.RepositoryError, "forbidden_path"),
    errors.RuntimeFailure: (errors.InferenceError, "runtime_failure"),
    errors.Unauthenticated: (errors.InferenceError, "unauthenticated"),
    errors.PermissionDenied: (errors.InferenceError, "permission_denied"),
    errors.RateLimited: (errors.InferenceError, "rate_limited"),
}


def test_the_hierarchy_is_pinned_and_drawn_in_the_docstring() -> None:
    defined = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.InferenceError)
    }
    assert defined == set(HIERARCHY)
    assert errors.__doc__ is not None
    for cls, (parent, _) in HIERARCHY.items():
        assert cls.__bases__ == (parent,)
        assert cls.__name__ in errors.__doc__


@pytest.mark.parametrize(("cls", "reason"), [(c, r) for c, (_, r) in HIERARCHY.items()])
def test_each_class_has_its_reason_label(cls: type[errors.InferenceError], reason: str) -> None:
    assert cls.reason == reason
    assert cls("why").reason == reason


def test_the_fields_default_to_empty_and_the_message_is_the_text() -> None:
    error = errors.ModelNotFound("unknown model 'm'")
    assert (error.model, error.version, error.tensor) == ("", "", "")
    assert error.message == str(error) == "unknown model 'm'"
    assert error.args == ("unknown model 'm'",)


def test_the_structured_fields_are_kept_beside_the_message() -> None:
    error = errors.InvalidRequest("input 'x': bad", model="m", version="3", tensor="x")
    assert (error.model, error.version, error.tensor, error.reason) == (
        "m",
        "3",
        "x",
        "invalid_request",
    )
    assert str(error) == "input 'x': bad"


def test_a_reason_given_to_one_error_overrides_the_label_for_it_alone() -> None:
    error = errors.InvalidRequest("too big", reason="too_many_elements")
    assert error.reason == "too_many_elements"
    assert errors.InvalidRequest.reason == "invalid_request"
    assert errors.InvalidRequest("other").reason == "invalid_request"


def test_the_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        errors.InvalidRequest("message", "m")  # type: ignore[misc]
