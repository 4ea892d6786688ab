"""The browser demo: `/demo` (a face drawn from the streamed weights, live plots, emotion
sliders), its assets under `/demo/assets/`, its tickets (`POST /demo/ticket`) and the `/`
landing page that links it.

Everything the page runs ships in `demo_assets/` and is served here: the page fetches nothing
from the internet, and its Content-Security-Policy lets it load nothing but this origin's
scripts, styles and WebSocket. With a tenants file the page holds no key: the operator names
the tenant whose quotas bound the demo (`--demo_tenant`), and every session gets a fresh
single-use ticket on that tenant's key, handed only to pages of the tenant's allowed origins.
Without `--demo_tenant` a gateway with a tenants file serves no demo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.exceptions import (
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.router import Router
from litestar.static_files import create_static_files_router

from gateway.settings import Settings
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.tenants import Identity

ASSETS = Path(__file__).with_name("demo_assets")

# 'self' covers the page's own ws:// and wss:// origin too (CSP Level 3, as browsers do it).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "Cache-Control": "no-store",
}

_LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>open-a2f gateway</title>
<link rel="icon" href="data:,"></head>
<body><h1>open-a2f gateway</h1>
<p>An Audio2Face-3D compatible WebSocket is at this address (<code>ws://</code> or
<code>wss://</code>, path <code>/</code>).</p>
<ul>{demo}
<li><a href="/schema">API documentation</a></li>
<li><a href="/health">/health</a> and <a href="/ready">/ready</a></li>
</ul></body></html>
"""
_DEMO_LINK = '\n<li><a href="/demo">Live face demo</a>: speak or drop an audio file</li>'


class DemoTicket(msgspec.Struct):
    """What the page connects with: `?ticket=` on the WebSocket URL, or nothing (None) when
    the gateway has no tenants file."""

    ticket: str | None
    expires_in_s: float | None = None


def demo_open(settings: Settings) -> bool:
    """Whether this gateway serves the demo page: always without a tenants file (it is open,
    and on loopback unless the operator said otherwise), else only for a named demo tenant."""
    return not settings.tenants_file or bool(settings.demo_tenant)


def _demo_identity(gatekeeper: Gatekeeper, tenant_id: str) -> Identity:
    """The demo tenant through the first of its keys still in force."""
    directory = gatekeeper.directory
    tenant = directory.file.tenants.get(tenant_id) if directory is not None else None
    identity = None
    if directory is not None and tenant is not None:
        identities = (directory.by_key_id(key.id) for key in tenant.keys)
        identity = next((found for found in identities if found is not None), None)
    if identity is None:  # the file was reloaded without it
        raise ServiceUnavailableException(f"the demo tenant {tenant_id} has no key in force")
    return identity


def _page(body: str) -> Response[str]:
    return Response(body, media_type=MediaType.HTML, headers=PAGE_HEADERS)


@get("/", include_in_schema=False, sync_to_thread=False)
def landing(settings: NamedDependency[Settings]) -> Response[str]:
    """What a browser pointed at the gateway sees: links to the demo and the docs."""
    return _page(_LANDING.format(demo=_DEMO_LINK if demo_open(settings) else ""))


@get("/demo", include_in_schema=False, sync_to_thread=False)
def demo_page(settings: NamedDependency[Settings]) -> Response[str]:
    if not demo_open(settings):
        raise NotFoundException("the demo is off: a tenants file without --demo_tenant")
    return _page((ASSETS / "index.html").read_text())


@post("/demo/ticket", include_in_schema=False, status_code=201, sync_to_thread=False)
def demo_ticket(
    request: Request[Any, Any, Any],
    settings: NamedDependency[Settings],
    gatekeeper: NamedDependency[Gatekeeper],
) -> DemoTicket:
    """A fresh single-use ticket of the demo tenant for one WebSocket session of a page served
    from one of that tenant's allowed origins (a browser always sends `Origin` with a POST)."""
    if not demo_open(settings):
        raise NotFoundException("the demo is off: a tenants file without --demo_tenant")
    if gatekeeper.open:
        return DemoTicket(None)
    identity = _demo_identity(gatekeeper, settings.demo_tenant)
    origin = request.headers.get("origin")
    if origin is None or origin not in identity.tenant.allowed_origins:
        raise PermissionDeniedException(f"Origin {origin} is not allowed for the demo")
    ticket, ttl = gatekeeper.issue_ticket(identity)
    return DemoTicket(ticket, ttl)


def demo_router() -> Router:
    """The landing page, the demo page, its tickets and its assets."""
    assets = create_static_files_router(
        path="/demo/assets", directories=[ASSETS], name="demo_assets", include_in_schema=False
    )
    return Router(path="/", route_handlers=[landing, demo_page, demo_ticket, assets])
