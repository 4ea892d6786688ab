"""The WebSocket route: a thin driver around the connection's protocol state machine.

`gateway.session.connection.Connection` decides everything; this module moves bytes. A
receiver reads raw ASGI events (binary = PushAudio, text = JSON control) into the state
machine and carries out its actions: jobs go to the dispatcher, texts and frames to a
sender. The receiver stops reading while the connection is backlogged (TCP backpressure on
the client), so a slow Triton slows a fast client down instead of failing it. A client that
stops reading stalls a send for `send_timeout_s` and is cut off with `Error` "client too
slow". While the process drains (`gateway.drain`), a connection is closed with `Error`
`shutting_down` (1001) once it has no session and nothing left to send, or when the grace
period ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from a2f_protocol.messages import SHUTTING_DOWN, Error, encode_message
from gateway.auth import OPEN, AuthFailure, Gatekeeper
from gateway.drain import Drain
from gateway.quota import TenantPolicy
from gateway.scheduler import Job, Outcome
from gateway.services import Services
from gateway.session.connection import (
    WS_1008_POLICY_VIOLATION,
    Close,
    Connection,
    ConnectionLimits,
    SendFrames,
    SendText,
    Submit,
    Withdraw,
)

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 1.0
WS_1001_GOING_AWAY = 1001
GOODBYE = Close(WS_1001_GOING_AWAY, SHUTTING_DOWN, "Server is shutting down: reconnect to continue")


class ClientGone(Exception):
    """The client disconnected."""


class Driver:
    """Socket and dispatcher I/O for one `Connection`."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        services: Services,
        policy: TenantPolicy | None = None,
    ) -> None:
        self.socket = socket
        self.services = services
        self.connection = Connection(
            services.model,
            services.profile,
            services.registry,
            services.metrics,
            ConnectionLimits(services.max_queued_frames),
            tenant=OPEN.tenant_id if policy is None else policy.tenant_id,
            tenant_hooks=policy,
            on_job_done=self._inference_done,
            refusal=lambda: services.admission.refusal(time.monotonic()),
        )
        self._outgoing: deque[SendText | SendFrames | Close] = deque()
        self._ready = asyncio.Event()  # something to send
        self._drained = asyncio.Event()  # units left the socket
        self.drain: Drain = socket.app.state.drain
        self._leaving = False  # told to go: GOODBYE is queued

    async def run(self) -> None:
        # The pair ends together: whichever side stops first (disconnect, close) cancels the
        # other. (Not asyncio.TaskGroup: a disconnect is an ordinary end, not an error group.)
        loops = [asyncio.create_task(self._receive()), asyncio.create_task(self._send())]
        self.drain.register(self._check_drain)
        self._check_drain()
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            failure = next(iter(done)).exception()
            if isinstance(failure, CloseConnection):
                await self._close(failure.close)
            elif failure is not None and not isinstance(failure, ClientGone):
                raise failure
        finally:
            self.drain.unregister(self._check_drain)
            for loop in loops:
                loop.cancel()
            self.connection.connection_lost()
            self._act()

    # -- receiving ---------------------------------------------------------------------------

    async def _receive(self) -> None:
        connection = self.connection
        while True:
            while connection.backlogged:
                self._drained.clear()
                await self._drained.wait()
            event = await self.socket.receive()
            if event["type"] == "websocket.disconnect":
                raise ClientGone
            arrived = time.monotonic()
            if isinstance(data := event.get("bytes"), bytes):
                connection.receive_bytes(data, arrived)
            elif isinstance(text := event.get("text"), str):
                connection.receive_text(text, arrived)
            self._act()

    def _inference_done(self, job: Job, outcome: Outcome) -> None:
        self.connection.inference_done(job, outcome)
        self._act()

    def _act(self) -> None:
        dispatcher = self.services.dispatcher
        for action in self.connection.take_actions():
            match action:
                case Submit(job):
                    dispatcher.submit(job)
                case Withdraw():
                    dispatcher.withdraw(self.connection)
                case SendText() | SendFrames() | Close():
                    self._outgoing.append(action)
                    self._ready.set()
        self._check_drain()

    def _check_drain(self) -> None:
        """While draining: queue the goodbye once the connection is idle or time is up."""
        drain, connection = self.drain, self.connection
        if self._leaving or not drain.draining:
            return
        idle = connection.session is None and connection.queued_units == 0
        if idle or drain.expired:
            self._leaving = True
            self._outgoing.append(GOODBYE)
            self._ready.set()

    # -- sending -----------------------------------------------------------------------------

    async def _send(self) -> None:
        outgoing, connection, metrics = self._outgoing, self.connection, self.services.metrics
        while True:
            while not outgoing:
                self._ready.clear()
                await self._ready.wait()
            item = outgoing.popleft()
            if isinstance(item, Close):
                raise CloseConnection(item)
            async with self._deadline():  # one deadline per batch, not a timer per frame
                if isinstance(item, SendText):
                    await self.socket.send_text(item.data)
                    connection.sent(1)
                else:
                    for frame in item.frames:
                        await self.socket.send_bytes(frame)
                    count = len(item.frames)
                    connection.sent(count)
                    item.stats.queued_frames -= count
                    item.stats.frames_sent += count
                    metrics.frames.inc(count)
                    metrics.frame_latency.observe(time.monotonic() - item.arrived)
            self._drained.set()
            self._check_drain()

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        """Socket writes inside must finish within send_timeout_s: if they stall, the client
        has stopped reading."""
        try:
            async with asyncio.timeout(self.services.send_timeout_s):
                yield
        except TimeoutError as exc:
            close = Close(WS_1008_POLICY_VIOLATION, "too_slow", "client too slow")
            self.services.metrics.errors.labels(close.kind).inc()
            raise CloseConnection(close) from exc
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:
            # RuntimeError: uvicorn closed the socket itself (keepalive ping unanswered) and
            # refuses further sends; for this connection that is the client going away.
            raise ClientGone from exc

    # -- ending ------------------------------------------------------------------------------

    def revoke(self, message: str) -> None:
        """End the connection: its key is no longer valid."""
        failure = AuthFailure(401, "unauthorized", message)
        self._outgoing.append(Close(failure.close_code, failure.code, message))
        self._ready.set()

    async def _close(self, close: Close) -> None:
        log.info("closing connection: %s (%s)", close.message, close.kind)
        # The socket may be the very thing that is stuck: bounded effort to say why, then close.
        with contextlib.suppress(Exception):
            message = encode_message(Error(close.message, close.kind))
            await asyncio.wait_for(self.socket.send_text(message), CLOSE_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.socket.close(close.code), CLOSE_TIMEOUT_S)


class CloseConnection(Exception):
    """Ends the connection with `close`."""

    def __init__(self, close: Close) -> None:
        super().__init__(close.message)
        self.close = close


@websocket("/", name="a2f")
async def a2f_socket(socket: WebSocket[Any, Any, Any]) -> None:
    """The Audio2Face-3D session protocol (see a2f_protocol/PROTOCOL.md)."""
    services: Services = socket.app.state.services
    gatekeeper: Gatekeeper = socket.app.state.gatekeeper
    try:
        identity = gatekeeper.authenticate(socket, "websocket", tickets_ok=True)
    except AuthFailure as failure:
        # Accepted only to say why: a browser sees neither an HTTP status nor its body.
        await socket.accept()
        with contextlib.suppress(Exception):
            await socket.send_text(encode_message(failure.error()))
            await socket.close(failure.close_code)
        return
    await socket.accept()
    client = gatekeeper.client(socket)
    policy = TenantPolicy(identity, client, gatekeeper.limits, gatekeeper.audit, services.metrics)
    driver = Driver(socket, services, policy)
    gatekeeper.register(driver, identity)
    try:
        await driver.run()
    finally:
        gatekeeper.unregister(driver)
