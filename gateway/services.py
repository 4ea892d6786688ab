"""The app-wide objects every route shares, built by the app factory (`app.state.services`)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.inference.dispatcher import Dispatcher
from gateway.inference.endpoint_pool import EndpointPool
from gateway.metrics import Metrics
from gateway.model_info import ModelInfo
from gateway.session.config import ServerProfile
from gateway.stores.base import SessionStore


@dataclass(frozen=True, slots=True)
class Services:
    """Shared, app-wide objects a connection or request needs."""

    triton: EndpointPool
    dispatcher: Dispatcher
    model: ModelInfo
    profile: ServerProfile
    registry: SessionStore
    metrics: Metrics
    max_queued_frames: int
    send_timeout_s: float
