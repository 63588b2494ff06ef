"""The data plane's Authorizer (`server.core.access`): may the current caller use this?

The caller is the one the transport's interceptor recorded for this RPC (`caller.CALLER`).
No caller at all means the interceptor did not admit the call, and nothing is allowed.
"""

from __future__ import annotations

from server.core.errors import PermissionDenied
from server.security.bucket import refusal
from server.security.caller import CALLER, Caller

NO_CALLER = "the call was not admitted by the server's authentication"


def _caller() -> Caller:
    caller = CALLER.get(None)
    if caller is None:
        raise PermissionDenied(NO_CALLER)
    return caller


class CallerAuthorizer:
    __slots__ = ()

    def check_model(self, name: str) -> None:
        principal = _caller().principal
        if not principal.models.allows(name):
            raise PermissionDenied(f"{principal} may not use model '{name}'", model=name)

    def check_infer(self, name: str) -> None:
        caller = _caller()
        principal = caller.principal
        if not principal.models.allows(name):
            raise PermissionDenied(f"{principal} may not use model '{name}'", model=name)
        bucket = caller.per_request
        if bucket is not None:
            wait = bucket.take()
            if wait:
                raise refusal(principal, bucket, wait)

    def allows(self, name: str) -> bool:
        caller = CALLER.get(None)
        return caller is not None and caller.principal.models.allows(name)

    def check_admin(self) -> None:
        principal = _caller().principal
        if not principal.admin:
            raise PermissionDenied(
                f"{principal} may not use the repository RPCs: they need an admin key or "
                "the token scope 'admin'"
            )
