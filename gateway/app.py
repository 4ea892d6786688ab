"""Application factory: `create_app(settings)` wires routes, state and the Triton lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from a2f_protocol.messages import SessionOptions
from gateway.dispatcher import Dispatcher
from gateway.endpoint_pool import EndpointPool
from gateway.file_api import batch_router
from gateway.http import Operations
from gateway.metrics import Metrics
from gateway.model_info import ModelInfo
from gateway.scheduler import FairScheduler
from gateway.services import Services
from gateway.session.config import ServerProfile, neutral_parameters
from gateway.session.registry import SessionRegistry
from gateway.session.store import SessionStore
from gateway.settings import Settings
from gateway.triton_client import TritonClient
from gateway.ws import a2f_socket


def create_app(settings: Settings, sessions: SessionStore | None = None) -> Litestar:
    """A gateway for `settings`; Triton is connected when the app starts (lifespan).
    Sessions are counted in `sessions` (shared by the workers), else in this process."""
    model = ModelInfo.load(settings.model_repository)
    profile = ServerProfile(
        model=settings.model,
        fps=settings.frame_rate,
        options=SessionOptions(settings.use_gpu_solver, settings.execution_option),
    )

    @asynccontextmanager
    async def triton_lifespan(app: Litestar) -> AsyncIterator[None]:
        metrics = Metrics()
        triton = EndpointPool(
            [
                TritonClient(url, settings.model, settings.triton_timeout_s)
                for url in settings.triton_urls
            ],
            model=settings.model,
            timeout_s=settings.triton_timeout_s,
            probe_interval_s=settings.triton_probe_interval_s,
            probe_timeout_s=settings.triton_probe_timeout_s,
            metrics=metrics,
        )
        await triton.start()
        dispatcher = Dispatcher(
            triton,
            FairScheduler(settings.request_max_frames, settings.session_request_frames),
            window=model.window,
            offset=model.offset,
            neutral=neutral_parameters(model),
            in_flight=settings.merge_in_flight,
            tick_s=settings.dispatch_tick_ms / 1000,
            metrics=metrics,
        )
        dispatcher.start()
        app.state.services = Services(
            triton=triton,
            dispatcher=dispatcher,
            model=model,
            profile=profile,
            registry=SessionRegistry(settings.max_sessions) if sessions is None else sessions,
            metrics=metrics,
            max_queued_frames=settings.max_queued_frames,
            send_timeout_s=settings.send_timeout_s,
        )
        try:
            yield
        finally:
            await dispatcher.close()
            await triton.close()

    return Litestar(
        route_handlers=[a2f_socket, Operations, batch_router(settings)],
        lifespan=[triton_lifespan],
        state=State({"settings": settings}),
        openapi_config=OpenAPIConfig(
            title="open-a2f gateway",
            version="0.1.0",
            description="Audio2Face-3D compatible WebSocket at `/` (see a2f_protocol/PROTOCOL.md).",
        ),
    )
