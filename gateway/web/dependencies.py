"""What route handlers are given (Litestar dependencies): the app-wide objects the app
factory and its lifespan keep on the app's state, and the caller the guard identified."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from gateway.drain import Drain
from gateway.services import Services
from gateway.settings import Settings
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.web.guards import provide_identity


def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_gatekeeper(state: State) -> Gatekeeper:
    gatekeeper: Gatekeeper = state.gatekeeper
    return gatekeeper


def provide_drain(state: State) -> Drain:
    drain: Drain = state.drain
    return drain


DEPENDENCIES = {
    "services": Provide(provide_services, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "gatekeeper": Provide(provide_gatekeeper, sync_to_thread=False),
    "drain": Provide(provide_drain, sync_to_thread=False),
    "identity": Provide(provide_identity, sync_to_thread=False),
}
