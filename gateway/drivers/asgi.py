"""The caller of an ASGI connection (HTTP or WebSocket), as the gatekeeper sees every caller."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection

from gateway.tenancy.gatekeeper import Caller


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    peer = connection.client.host if connection.client is not None else ""
    return Caller(peer, connection.headers, connection.query_params)
