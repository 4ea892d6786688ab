"""The app-wide objects every route shares, built by the app factory (`app.state.services`)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.admission import Admission
from gateway.dispatcher import Dispatcher
from gateway.metrics import Metrics
from gateway.model_info import ModelInfo
from gateway.session.config import ServerProfile
from gateway.session.store import SessionStore
from gateway.triton_client import TritonClient


@dataclass(frozen=True, slots=True)
class Services:
    """Shared, app-wide objects a connection or request needs."""

    triton: TritonClient
    dispatcher: Dispatcher
    model: ModelInfo
    profile: ServerProfile
    registry: SessionStore
    metrics: Metrics
    admission: Admission
    max_queued_frames: int
    send_timeout_s: float
