"""Domain errors -> V2 REST statuses: every row of `server.api.http.status.STATUSES`."""

from __future__ import annotations

import logging

import orjson
import pytest

from server.api.http.status import GENERIC_MESSAGE, STATUSES, error_body, status_for
from server.core import errors

ROWS: dict[type[BaseException], int] = {
    errors.InvalidRequest: 400,
    errors.ModelNotFound: 404,
    errors.ModelUnavailable: 503,
    errors.QueueFull: 429,
    errors.RequestExpired: 504,
    errors.VersionRetired: 400,
    errors.ControlDisabled: 503,
    errors.RepositoryError: 500,
    errors.ForbiddenPath: 400,
    errors.RuntimeFailure: 500,
    errors.PermissionDenied: 403,
}


class _NarrowerNotFound(errors.ModelNotFound):
    """Has no row of its own: inherits its parent's status along the MRO."""


def test_the_table_has_exactly_these_rows() -> None:
    assert STATUSES == ROWS


@pytest.mark.parametrize(("error", "status"), ROWS.items(), ids=[e.__name__ for e in ROWS])
def test_each_error_maps_to_its_status(error: type[Exception], status: int) -> None:
    assert status_for(error("what happened")) == (status, "what happened")


def test_a_subclass_inherits_its_parents_status() -> None:
    assert status_for(_NarrowerNotFound("gone")) == (404, "gone")


def test_unknown_errors_are_500_with_a_generic_message(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert status_for(KeyError("secret detail")) == (500, GENERIC_MESSAGE)
    assert "secret detail" not in GENERIC_MESSAGE
    assert caplog.records[0].exc_info is not None


def test_the_error_body_is_v2_rest_json() -> None:
    assert orjson.loads(error_body('a "quoted" é')) == {"error": 'a "quoted" é'}
