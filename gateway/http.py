"""HTTP routes next to the WebSocket: health, readiness, live sessions, Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.auth import require
from gateway.drain import Drain
from gateway.services import Services
from gateway.session.store import SessionsReport

HEALTH_TRITON_TIMEOUT_S = 0.5  # /health answers promptly even when Triton hangs


class Operations(Controller):
    """Probes and introspection for operators and load balancers."""

    tags = ["operations"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get("/health")
    async def health(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """Liveness: always 200 while the process runs. The body also says whether Triton
        and the ensemble are ready (`"triton": "ready"` or `"unavailable"`, asked with a
        short timeout); use `/ready` to route traffic."""
        services: Services = request.app.state.services
        try:
            ready = await asyncio.wait_for(services.triton.ready(), HEALTH_TRITON_TIMEOUT_S)
        except TimeoutError:
            ready = False
        return {"status": "ok", "triton": "ready" if ready else "unavailable"}

    @get("/ready")
    async def ready(self, request: Request[Any, Any, Any]) -> Response[dict[str, object]]:
        """Triton is up and the ensemble is loaded: 200, else 503 (also while draining)."""
        services: Services = request.app.state.services
        drain: Drain = request.app.state.drain
        ok = not drain.draining and await services.triton.ready()
        body: dict[str, object] = {"ready": ok, "model": services.triton.model}
        if drain.draining:
            body["draining"] = True
        return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)

    @get("/sessions", sync_to_thread=False)
    def sessions(self, request: Request[Any, Any, Any]) -> SessionsReport:
        """Live sessions and their counters (no audio), of every worker on the host: the
        caller's tenant's only, unless the key is an admin's (or there is no tenants file)."""
        identity = require(request, "sessions")
        services: Services = request.app.state.services
        report = services.registry.report()
        if identity.tenant.admin or request.app.state.gatekeeper.open:
            return report
        own = [stats for stats in report.sessions if stats.tenant == identity.tenant_id]
        return SessionsReport(len(own), report.max_sessions, own)

    @get("/metrics", sync_to_thread=False, include_in_schema=False)
    def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Prometheus text exposition (an admin key, when there is a tenants file)."""
        require(request, "metrics", admin=True)
        services: Services = request.app.state.services
        return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
