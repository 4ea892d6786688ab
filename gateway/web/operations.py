"""HTTP routes next to the WebSocket: health, readiness, live sessions, Prometheus metrics."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.drain import Drain
from gateway.services import Services
from gateway.stores.base import STORE_RETRY_S, SessionsReport, StoreUnavailable
from gateway.stores.workers_state import read_workers_state
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.tenants import Identity
from gateway.web.guards import authenticated, entry


class Operations(Controller):
    """Probes and introspection for operators and load balancers."""

    tags = ["operations"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get("/health")
    async def health(self, services: NamedDependency[Services]) -> dict[str, object]:
        """Liveness: always 200 while the process runs. The body also says whether a Triton
        endpoint can serve (`"triton": "ready"` or `"unavailable"`) and each endpoint's state
        from its latest probe; `"store"`: where sessions are counted and whether it answers
        (`"reachable"`, and `"unreachable_for_s"` while Redis does not); under a supervisor
        (`--workers`), `"workers"`: how many run, restarts, whether one crash-loops
        (`gateway.stores.workers_state`). `"model"`: the model version the healthy endpoints
        serve (`"served"`: `a2f_net`'s version directory and the `network`'s own version, as
        Triton reports them) beside the manifest this gateway read (`"version"`,
        `"repository_version"`). Use `/ready` to route traffic."""
        ready = services.triton.ready
        model = services.model
        body: dict[str, object] = {
            "status": "ok",
            "triton": "ready" if ready else "unavailable",
            "model": {
                "name": model.name,
                "version": model.version,
                "repository_version": model.repository_version,
                "served": services.triton.served_versions(),
            },
            "endpoints": services.triton.report(),
            "store": services.registry.state(),
        }
        if (workers := read_workers_state()) is not None:  # under a supervisor (--workers)
            body["workers"] = workers
        return body

    @get("/ready")
    async def ready(
        self, services: NamedDependency[Services], drain: NamedDependency[Drain]
    ) -> Response[dict[str, object]]:
        """At least one Triton endpoint passes its probes (a real inference through the
        ensemble) and the gateway is not draining: 200, else 503. The body lists every
        endpoint's state and model versions."""
        ok = not drain.draining and services.triton.ready
        body: dict[str, object] = {
            "ready": ok,
            "model": services.triton.model,
            "endpoints": services.triton.report(),
        }
        if drain.draining:
            body["draining"] = True
        return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)

    @get("/sessions", guards=[authenticated], opt=entry("sessions"))
    async def sessions(
        self,
        services: NamedDependency[Services],
        gatekeeper: NamedDependency[Gatekeeper],
        identity: NamedDependency[Identity],
    ) -> SessionsReport:
        """Live sessions and their counters (no audio), of every worker on the host: the
        caller's tenant's only, with its own `max_sessions` (null: none of its own), unless the
        key is an admin's (or there is no tenants file): then all, with the host's limit.
        503 while the shared store (Redis) does not answer."""
        try:
            report = await services.registry.report()
        except StoreUnavailable as exc:
            raise ServiceUnavailableException(
                f"Sessions not counted: {exc}", headers={"Retry-After": str(round(STORE_RETRY_S))}
            ) from exc
        if identity.tenant.admin or gatekeeper.open:
            return report
        own = [stats for stats in report.sessions if stats.tenant == identity.tenant_id]
        return SessionsReport(len(own), identity.tenant.max_sessions, own)

    @get(
        "/metrics",
        sync_to_thread=False,
        include_in_schema=False,
        guards=[authenticated],
        opt=entry("metrics", admin=True),
    )
    def metrics(self, services: NamedDependency[Services]) -> Response[bytes]:
        """Prometheus text exposition (an admin key, when there is a tenants file)."""
        return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
