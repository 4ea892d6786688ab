"""`POST /v1/tickets`: trade an API key for a browser ticket (see `gateway.tenancy.tickets`)."""

from __future__ import annotations

import msgspec
from litestar import post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException

from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.tenants import Identity
from gateway.web.guards import authenticated, entry


class TicketGranted(msgspec.Struct):
    ticket: str  # pass as `?ticket=` on the WebSocket URL, once, before it expires
    expires_in_s: float


@post(
    "/v1/tickets",
    name="tickets",
    tags=["auth"],
    status_code=201,
    sync_to_thread=False,
    guards=[authenticated],
    opt=entry("tickets"),
)
def create_ticket(
    gatekeeper: NamedDependency[Gatekeeper], identity: NamedDependency[Identity]
) -> TicketGranted:
    """A single-use ticket for one WebSocket connection, for a web page that must not hold
    the key. Authenticated by the key (`Authorization: Bearer` or `X-API-Key`); 401/403/429
    as every entry point; 404 when the gateway has no tenants file (no key is needed)."""
    if gatekeeper.open:
        raise NotFoundException("no tenants file: connections need no key, and no ticket")
    ticket, ttl = gatekeeper.issue_ticket(identity)
    return TicketGranted(ticket, ttl)
