"""Litestar's side of the gatekeeper: HTTP callers identified, refusals as HTTP errors."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException

from gateway.drivers.asgi import caller_of
from gateway.tenancy.gatekeeper import AuthFailure, Gatekeeper
from gateway.tenancy.tenants import Identity


def http_error(failure: AuthFailure) -> HTTPException:
    return HTTPException(detail=str(failure), status_code=failure.status, headers=failure.headers())


def require(
    connection: ASGIConnection[Any, Any, Any, Any], entry: str, *, admin: bool = False
) -> Identity:
    """The HTTP caller's identity, or the matching HTTP error (401/403/429)."""
    gatekeeper: Gatekeeper = connection.app.state.gatekeeper
    try:
        identity = gatekeeper.authenticate(caller_of(connection), entry)
    except AuthFailure as failure:
        raise http_error(failure) from failure
    if admin and not gatekeeper.open and not identity.tenant.admin:
        raise http_error(AuthFailure(403, "forbidden", "This needs an admin key"))
    return identity
