"""`POST /v1/tickets`: trade an API key for a browser ticket (see `gateway.tenancy.tickets`)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post
from litestar.exceptions import NotFoundException

from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.web.guards import require


class TicketGranted(msgspec.Struct):
    ticket: str  # pass as `?ticket=` on the WebSocket URL, once, before it expires
    expires_in_s: float


@post("/v1/tickets", name="tickets", tags=["auth"], status_code=201, sync_to_thread=False)
def create_ticket(request: Request[Any, Any, Any]) -> TicketGranted:
    """A single-use ticket for one WebSocket connection, for a web page that must not hold
    the key. Authenticated by the key (`Authorization: Bearer` or `X-API-Key`); 401/403/429
    as every entry point; 404 when the gateway has no tenants file (no key is needed)."""
    gatekeeper: Gatekeeper = request.app.state.gatekeeper
    if gatekeeper.open:
        raise NotFoundException("no tenants file: connections need no key, and no ticket")
    ticket, ttl = gatekeeper.issue_ticket(require(request, "tickets"))
    return TicketGranted(ticket, ttl)
