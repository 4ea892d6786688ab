"""HTTP routes next to the WebSocket: health, readiness, live sessions, Prometheus metrics."""

from __future__ import annotations

from litestar import Controller, Request, Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.registry import SessionsReport
from gateway.ws import Services


class Operations(Controller):
    """Probes and introspection for operators and load balancers."""

    tags = ["operations"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get("/health", sync_to_thread=False)
    def health(self) -> dict[str, str]:
        """The process is alive (does not look at Triton)."""
        return {"status": "ok"}

    @get("/ready")
    async def ready(self, request: Request) -> Response[dict[str, object]]:
        """Triton is up and the ensemble is loaded: 200, else 503."""
        services: Services = request.app.state.services
        ok = await services.triton.ready()
        body: dict[str, object] = {"ready": ok, "model": services.triton.model}
        return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)

    @get("/sessions", sync_to_thread=False)
    def sessions(self, request: Request) -> SessionsReport:
        """Live sessions and their counters (no audio)."""
        services: Services = request.app.state.services
        return services.registry.report()

    @get("/metrics", sync_to_thread=False, include_in_schema=False)
    def metrics(self, request: Request) -> Response[bytes]:
        """Prometheus text exposition."""
        services: Services = request.app.state.services
        return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
