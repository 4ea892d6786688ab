"""Application factory: `create_app(settings)` wires routes, state and the Triton lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from a2f_protocol.messages import SessionOptions
from gateway.drain import Drain
from gateway.drivers.ace_server import ace_lifespan
from gateway.drivers.websocket import a2f_socket
from gateway.inference.admission import Admission
from gateway.inference.bulk_share import BulkShare
from gateway.inference.dispatcher import IDLE_BULK_IN_FLIGHT, Dispatcher
from gateway.inference.endpoint_pool import EndpointPool
from gateway.inference.fair_share import FairShare
from gateway.inference.scheduler import FairScheduler
from gateway.inference.shared_inputs import SharedInputs, is_local_url
from gateway.inference.triton_client import TritonClient
from gateway.metrics import Metrics
from gateway.model_info import ModelInfo
from gateway.services import Services
from gateway.session.config import ServerProfile, neutral_parameters
from gateway.settings import Settings
from gateway.stores.base import LimitStore, SessionStore, StoreUnavailable
from gateway.stores.local import MemoryLimits, SessionRegistry
from gateway.stores.redis_store import HEARTBEAT_S, RedisStore
from gateway.tenancy.audit import Audit
from gateway.tenancy.gatekeeper import AuthFailure, Gatekeeper, redact_tickets_in_logs
from gateway.tenancy.quota import LeasedAudio
from gateway.web.batch_api import batch_router
from gateway.web.demo import demo_router
from gateway.web.dependencies import DEPENDENCIES
from gateway.web.docs import SECURITY_COMPONENTS, docs_assets_router, render_plugins
from gateway.web.guards import auth_failure_response, authenticated, entry
from gateway.web.operations import Operations
from gateway.web.tickets_api import create_ticket


async def _heartbeat(store: RedisStore, leases: LeasedAudio, metrics: Metrics) -> None:
    """Renew this process's slots in Redis, and find it back after an outage (the heartbeat
    is the probe that reaches a Redis the other callers have stopped asking); then charge
    the audio streamed while it was away."""
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        with contextlib.suppress(StoreUnavailable):  # logged by the store; tried again
            await store.heartbeat()
            await leases.settle()
        metrics.store_reachable.set(store.reachable)


def create_app(settings: Settings, sessions: SessionStore | None = None) -> Litestar:
    """A gateway for `settings`; Triton is connected when the app starts (lifespan).
    Sessions are counted in the Redis of `--redis_url` (shared by hosts), else in `sessions`
    (shared by the workers), else in this process."""
    model = ModelInfo.load(settings.model_repository, settings.model_version)
    profile = ServerProfile(
        model=settings.model,
        fps=settings.frame_rate,
        options=SessionOptions(settings.use_gpu_solver, settings.execution_option),
        normalise_level=settings.normalise_level,
    )

    @asynccontextmanager
    async def triton_lifespan(app: Litestar) -> AsyncIterator[None]:
        metrics = Metrics()
        clients = [
            TritonClient(url, settings.model, settings.triton_timeout_s)
            for url in settings.triton_urls
        ]
        triton = EndpointPool(
            clients,
            model=settings.model,
            timeout_s=settings.triton_timeout_s,
            probe_interval_s=settings.triton_probe_interval_s,
            probe_timeout_s=settings.triton_probe_timeout_s,
            metrics=metrics,
        )
        await triton.start()
        admission = Admission(settings.busy_latency_ms / 1000)
        shared_audio = None
        local = [client for client in clients if is_local_url(client.url)]
        if settings.triton_shared_memory and local:
            # one slot per request in flight (the streams' and the uploads'), and one more for
            # the next request being built
            slots = max(settings.merge_in_flight, 1) + IDLE_BULK_IN_FLIGHT + 1
            shared_audio = SharedInputs(slots, settings.request_max_frames * model.window)
            for client in local:
                client.share_inputs(shared_audio)
        dispatcher = Dispatcher(
            triton,
            FairScheduler(settings.request_max_frames, settings.session_request_frames),
            window=model.window,
            offset=model.offset,
            neutral=neutral_parameters(model),
            in_flight=settings.merge_in_flight,
            tick_s=settings.dispatch_tick_ms / 1000,
            metrics=metrics,
            admission=admission,
            fair=FairShare(settings.fair_latency_ms / 1000, burst_rows=settings.request_max_frames),
            bulk=BulkShare(
                settings.upload_latency_ms / 1000,
                burst_rows=max(settings.request_max_frames // 2, 1),
            ),
            shared=shared_audio,
        )
        dispatcher.start()
        redis = (
            RedisStore(settings.redis_url, settings.max_sessions) if settings.redis_url else None
        )
        leases = None if redis is None else LeasedAudio(redis)
        limits: LimitStore = MemoryLimits() if leases is None else leases
        registry: SessionStore = SessionRegistry(settings.max_sessions)
        if redis is not None:  # shared by hosts: it holds every limit
            registry = redis
        elif sessions is not None:
            registry = sessions
        gatekeeper = Gatekeeper(settings, limits, Audit(settings.audit_client_address), metrics)
        app.state.gatekeeper = gatekeeper
        redact_tickets_in_logs()
        tasks = [asyncio.create_task(gatekeeper.watch())]
        metrics.store_reachable.set(1)
        metrics.sessions_capacity.set(settings.max_sessions)
        if redis is not None and leases is not None:
            tasks.append(asyncio.create_task(_heartbeat(redis, leases, metrics)))
        app.state.services = Services(
            triton=triton,
            dispatcher=dispatcher,
            model=model,
            profile=profile,
            registry=registry,
            metrics=metrics,
            max_queued_frames=settings.max_queued_frames,
            send_timeout_s=settings.send_timeout_s,
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await dispatcher.close()
            await triton.close()
            if shared_audio is not None:
                shared_audio.close()
            if redis is not None:
                with contextlib.suppress(Exception):
                    await redis.close()

    return Litestar(
        route_handlers=[
            a2f_socket,
            Operations,
            batch_router(settings),
            create_ticket,
            demo_router(),
            docs_assets_router(),
        ],
        lifespan=[triton_lifespan, ace_lifespan],  # gRPC uses the services Triton's builds
        state=State({"settings": settings, "drain": Drain()}),
        dependencies=DEPENDENCIES,
        exception_handlers={AuthFailure: auth_failure_response},
        openapi_config=OpenAPIConfig(
            title="open-a2f gateway",
            version="0.1.0",
            description="Audio2Face-3D compatible WebSocket at `/` (see a2f_protocol/PROTOCOL.md).",
            openapi_router=_docs_router(settings),
            render_plugins=render_plugins(),
            components=SECURITY_COMPONENTS,
        ),
    )


def _docs_router(settings: Settings) -> Router:
    """`/schema` and its viewers: behind a key like every other entry point once there is a
    tenants file, unless `--public_docs` says the API's description is no secret."""
    guards = [] if settings.public_docs else [authenticated]
    return Router(path="/schema", route_handlers=[], guards=guards, opt=entry("docs"))
