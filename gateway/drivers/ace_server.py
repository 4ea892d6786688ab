"""The gRPC server beside the HTTP/WebSocket one: NVIDIA's A2F controller service, the standard
health service and server reflection, started and stopped with the app (`ace_lifespan`).

Each call is authenticated by the same gatekeeper as the WebSocket (`authorization: Bearer
<key>` metadata, as NVIDIA's hosted API is called), then driven by `gateway.drivers.ace_grpc`.
With `--workers` every process binds the port with SO_REUSEPORT and the kernel spreads
connections, as for HTTP; a single process binds it alone, so a port in use fails the start
instead of being shared with a stranger. Health answers as `/ready` does: SERVING while a
Triton endpoint can serve and the process is not draining (NOT_SERVING from the drain's first
moment; new calls then get UNAVAILABLE), so a gRPC readiness probe (Kubernetes' `grpc:`)
routes both protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from litestar import Litestar
from nvidia_audio2face_3d import audio2face_pb2_grpc, messages_pb2

from a2f_protocol.frames import MAX_MESSAGE_BYTES
from gateway.drain import Drain
from gateway.drivers import ace_messages as out
from gateway.drivers.ace_grpc import GOODBYE, AceStream, Context
from gateway.services import Services
from gateway.settings import Settings
from gateway.tenancy.gatekeeper import AuthFailure, Caller, Gatekeeper
from gateway.tenancy.quota import TenantPolicy

log = logging.getLogger(__name__)

ENTRY = "grpc"  # the gatekeeper's and the audit lines' name for this entry point
STOP_GRACE_S = 1.0  # after the drain: calls still open are cancelled this long after stop
# HTTP/2 streams one client connection may hold at once (gRPC's usual bound); more wait.
MAX_STREAMS_PER_CONNECTION = 100
# Pings from the server find dead peers on idle connections; a client may ping at most every
# 10 s without data (a flood of pings ends its connection).
KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
)


def peer_address(peer: str) -> str:
    """`ipv4:1.2.3.4:5678` / `ipv6:[::1]:5678` -> the address alone."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer


class A2FController(audio2face_pb2_grpc.A2FControllerServiceServicer):
    """`ProcessAudioStream` for the app's services and tenants."""

    def __init__(
        self, settings: Settings, services: Services, gatekeeper: Gatekeeper, drain: Drain
    ) -> None:
        self.settings = settings
        self.services = services
        self.gatekeeper = gatekeeper
        self.drain = drain
        self.profile = dataclasses.replace(services.profile, fps=settings.grpc_frame_rate)

    async def ProcessAudioStream(self, requests: Any, context: Context) -> None:
        if self.drain.draining:
            await _refuse(requests, context, grpc.StatusCode.UNAVAILABLE, GOODBYE.message)
        metadata = context.invocation_metadata() or ()
        caller = Caller(
            peer_address(context.peer()),
            {key.lower(): value for key, value in metadata if isinstance(value, str)},
            {},
        )
        gatekeeper = self.gatekeeper
        try:
            identity = await gatekeeper.authenticate(caller, ENTRY)
        except AuthFailure as failure:
            details, trailing = out.status_details(str(failure), failure.retry_after_s)
            await _refuse(requests, context, out.status_of(failure.code), details, trailing)
        policy = TenantPolicy(
            identity,
            gatekeeper.client(caller),
            gatekeeper.limits,
            gatekeeper.audit,
            self.services.metrics,
            entry=ENTRY,
        )
        stream = AceStream(
            context, self.services, self.profile, self.settings.idle_timeout_s, self.drain, policy
        )
        gatekeeper.register(stream, identity)
        try:
            await stream.run()
        finally:
            gatekeeper.unregister(stream)


def _credentials(settings: Settings) -> grpc.ServerCredentials:
    certificate = Path(settings.ssl_certfile).read_bytes()
    key = Path(settings.ssl_keyfile or settings.ssl_certfile).read_bytes()
    client_ca = Path(settings.ssl_client_ca).read_bytes() if settings.ssl_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, certificate)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def build_server(settings: Settings, controller: A2FController) -> tuple[grpc.aio.Server, Any]:
    """The server with its services on `settings.host:grpc_port` (not started), and its
    health servicer."""
    options = [
        ("grpc.so_reuseport", int(settings.workers > 1)),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        *KEEPALIVE_OPTIONS,
    ]
    server = grpc.aio.server(options=options)
    audio2face_pb2_grpc.add_A2FControllerServiceServicer_to_server(controller, server)  # type: ignore[no-untyped-call]
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    descriptor = messages_pb2.DESCRIPTOR.package + ".A2FControllerService"
    reflection.enable_server_reflection(
        (out.SERVICE_NAME, descriptor, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    try:
        if settings.ssl_certfile:
            server.add_secure_port(address, _credentials(settings))
        else:
            server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(
            f"cannot serve gRPC on {address} (in use? --grpc_port 0 turns the gRPC API off)"
        ) from exc
    return server, checks


async def _set_health(checks: Any, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse
    for name in ("", out.SERVICE_NAME):
        await checks.set(name, status.SERVING if serving else status.NOT_SERVING)


async def _follow_readiness(checks: Any, ready: Callable[[], bool], interval_s: float) -> None:
    """Health set to `ready()` whenever it changes, looked at every `interval_s` (the Triton
    probes' period); the drain's start is told at once besides (`ace_lifespan`)."""
    serving = ready()
    while True:
        await asyncio.sleep(interval_s)
        if ready() != serving:
            serving = not serving
            await _set_health(checks, serving)


@asynccontextmanager
async def ace_lifespan(app: Litestar) -> AsyncIterator[None]:
    """The gRPC server for the app's lifetime (after the Triton lifespan: it uses its
    services); nothing when `--grpc_port 0`."""
    settings: Settings = app.state.settings
    if not settings.grpc_port:
        yield
        return
    drain: Drain = app.state.drain
    controller = A2FController(settings, app.state.services, app.state.gatekeeper, drain)
    server, checks = build_server(settings, controller)
    services: Services = app.state.services

    def ready() -> bool:
        return not drain.draining and services.triton.ready

    await server.start()
    await _set_health(checks, ready())
    follower = asyncio.create_task(
        _follow_readiness(checks, ready, settings.triton_probe_interval_s)
    )
    tasks: set[Any] = {follower}

    def on_drain() -> None:
        # Told once, when the drain begins: a callback left registered would hold it open.
        drain.unregister(on_drain)
        task = asyncio.ensure_future(_set_health(checks, serving=False))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    drain.register(on_drain)
    log.info("gRPC (Audio2Face-3D NIM API) on %s:%d", settings.host, settings.grpc_port)
    try:
        yield
    finally:
        drain.unregister(on_drain)
        follower.cancel()
        with contextlib.suppress(Exception):
            await server.stop(STOP_GRACE_S)


FIRST_MESSAGE_WAIT_S = 1.0


async def _refuse(
    requests: Any,
    context: Context,
    code: grpc.StatusCode,
    details: str,
    trailing: Sequence[tuple[str, str]] = (),
) -> NoReturn:
    """End a call refused before it started, once the client's first message (its header) is
    in: grpcio's client reports a status that arrives while it is still writing as INTERNAL
    "Internal error from Core", so a refusal sent at once reached clients as that, at random."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(FIRST_MESSAGE_WAIT_S):
            await anext(aiter(requests))
    await context.abort(code, details, trailing_metadata=trailing)
    raise AssertionError("unreachable: abort raises")
