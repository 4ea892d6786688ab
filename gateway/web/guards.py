"""Litestar's side of the gatekeeper: a guard that identifies HTTP callers, the `identity`
dependency it leaves, and the one exception handler that turns refusals into HTTP errors.

A route names its entry point (what audit lines and failure counts call it) in its `opt`:
`guards=[authenticated], opt=entry("animate")`, or `entry("metrics", admin=True)` for an
admin key. Without a tenants file every caller is the open identity.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.exceptions.responses import create_exception_response
from litestar.handlers.base import BaseRouteHandler

from gateway.drivers.asgi import caller_of
from gateway.tenancy.gatekeeper import AuthFailure, Gatekeeper
from gateway.tenancy.tenants import Identity

_ENTRY, _ADMIN, _IDENTITY = "entry", "admin", "identity"


def entry(name: str, *, admin: bool = False) -> dict[str, Any]:
    """A route's `opt`: the entry point `authenticated` checks the caller for."""
    return {_ENTRY: name, _ADMIN: admin}


async def authenticated(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard: a valid key (or none needed) for the route's entry point; refusals raise
    `AuthFailure` (401/403/429), which `auth_failure_response` answers."""
    gatekeeper: Gatekeeper = connection.app.state.gatekeeper  # guards get no dependencies
    identity = await gatekeeper.authenticate(caller_of(connection), handler.opt[_ENTRY])
    if handler.opt.get(_ADMIN) and not gatekeeper.open and not identity.tenant.admin:
        raise AuthFailure(403, "forbidden", "This needs an admin key")
    connection.state[_IDENTITY] = identity


def provide_identity(request: Request[Any, Any, Any]) -> Identity:
    """The caller `authenticated` identified (the `identity` dependency)."""
    identity: Identity = request.state[_IDENTITY]
    return identity


def auth_failure_response(request: Request[Any, Any, Any], failure: AuthFailure) -> Response[Any]:
    """An `AuthFailure` as the HTTP error it stands for, with its headers (`WWW-Authenticate`,
    `Retry-After`)."""
    error = HTTPException(
        detail=str(failure), status_code=failure.status, headers=failure.headers()
    )
    return create_exception_response(request, error)
