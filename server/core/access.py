"""The authorization seam: what the data plane asks before it touches a model.

The data plane knows which model each operation names, whatever face the request came in
on (the gRPC codec's `model_name`, a REST path's `{name}`), so it is the one place that
asks. It asks an `Authorizer`, which knows who is calling (`server.security` implements
it, reading the caller that the transport's interceptor recorded). Without an authorizer,
as with authentication off, nothing is asked.
"""

from __future__ import annotations

from typing import Protocol


class Authorizer(Protocol):
    def check_model(self, name: str) -> None:
        """Raise PermissionDenied unless the caller may use model `name` (metadata,
        config, readiness, statistics)."""
        ...

    def check_infer(self, name: str) -> None:
        """As `check_model`, for one inference request; also charges the caller's rate
        limit where the transport leaves that to each request (stream messages), and
        raises RateLimited when it is spent."""
        ...

    def allows(self, name: str) -> bool:
        """Whether the caller may use model `name`: to filter lists of models."""
        ...

    def check_admin(self) -> None:
        """Raise PermissionDenied unless the caller may use the repository RPCs."""
        ...


class Unrestricted:
    """Every caller may do everything: authentication is off."""

    __slots__ = ()

    def check_model(self, name: str) -> None:
        pass

    def check_infer(self, name: str) -> None:
        pass

    def allows(self, name: str) -> bool:
        return True

    def check_admin(self) -> None:
        pass


UNRESTRICTED = Unrestricted()
