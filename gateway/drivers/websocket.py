"""The WebSocket route: a thin driver around the connection's protocol state machine.

`gateway.session.connection.Connection` decides everything; this module moves bytes. A
receiver reads raw ASGI events (binary = PushAudio, text = JSON control) into the state
machine and carries out its actions: jobs go to the dispatcher, texts and frames to a
sender, questions to the stores (`gateway.drivers.shared_state`) are awaited in order before
the next message is read. The receiver stops reading while the connection is backlogged (TCP backpressure on
the client), so a slow Triton slows a fast client down instead of failing it. A client that
stops reading stalls a send for `send_timeout_s` and is cut off with `Error` "client too
slow". One that sends nothing for `idle_timeout_s` (while nothing is owed to it) is closed
with `Error` `idle_timeout`. A session with idle frames gets a ticker, which tells the core
the time once a frame period (`Connection.tick_period`). While the process drains (`gateway.drain`), a connection is
closed with `Error` `shutting_down` (1001) once it has no session and nothing left to
send, or when the grace period ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.types import WebSocketSendEvent

from a2f_protocol.messages import SHUTTING_DOWN, Error, encode_message
from gateway.drain import Drain
from gateway.drivers.asgi import caller_of
from gateway.drivers.core_driver import CoreDriver
from gateway.drivers.overdue import Overdue
from gateway.drivers.rejections import REJECTIONS
from gateway.drivers.ticker import tick
from gateway.drivers.transport_guards import LAST_MESSAGE
from gateway.metrics import WEBSOCKET
from gateway.services import Services
from gateway.session.connection import WS_1008_POLICY_VIOLATION, Close, SendFrames, SendText
from gateway.settings import Settings
from gateway.tenancy.gatekeeper import AuthFailure, Gatekeeper
from gateway.tenancy.quota import TenantPolicy

CLOSE_TIMEOUT_S = 1.0
WS_1001_GOING_AWAY = 1001
GOODBYE = Close(WS_1001_GOING_AWAY, SHUTTING_DOWN, "Server is shutting down: reconnect to continue")


class Driver(CoreDriver[Close]):
    """Socket I/O for one `Connection`.

    The loops end by returning (a `Close` to carry out, or None when the client left), not by
    raising: an exception kept as a task's result links, through its traceback, the task,
    the timeout that fired in it and this driver into a cycle, and a closed connection's
    memory would then wait for the garbage collector (which `gc.freeze()` makes rare).
    """

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        services: Services,
        idle_timeout_s: float,
        drain: Drain,
        policy: TenantPolicy | None = None,
    ) -> None:
        super().__init__(services, services.profile, idle_timeout_s, drain, policy, WEBSOCKET)
        self.socket = socket

    async def run(self) -> None:
        # The pair ends together: whichever side stops first (disconnect, close) cancels the
        # other. (Not asyncio.TaskGroup: a disconnect is an ordinary end, not an error group.)
        loops = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._send()),
            asyncio.create_task(tick(self.connection, self._ticking, self._act)),
        ]
        self.drain.register(self._check_drain)
        self._check_drain()
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            close = next(iter(done)).result()  # a bug's exception propagates to uvicorn
            if close is not None:
                await self._close(close)
        finally:
            for loop in loops:
                loop.cancel()
            loops.clear()
            self._finish()

    # -- receiving ---------------------------------------------------------------------------

    async def _receive(self) -> None:
        """Until the client leaves; a closed connection takes no more input."""
        connection, dispatcher = self.connection, self.services.dispatcher
        idle = Overdue(self.idle_timeout_s, self._idle)
        try:
            while True:
                while connection.backlogged or connection.closed or dispatcher.holds(connection):
                    self._drained.clear()
                    await self._drained.wait()
                idle.begin()
                event = await self.socket.receive()
                idle.end()
                if event["type"] == "websocket.disconnect":
                    return
                arrived = time.monotonic()
                if isinstance(data := event.get("bytes"), bytes):
                    connection.receive_bytes(data, arrived)
                elif isinstance(text := event.get("text"), str):
                    connection.receive_text(text, arrived)
                await self._answer()
        finally:
            idle.cancel()

    def _say_goodbye(self) -> None:
        self._leaving = True
        self._outgoing.append(GOODBYE)
        self._ready.set()

    # -- sending -----------------------------------------------------------------------------

    async def _send(self) -> Close | None:
        """Until a `Close` comes up (returned) or the client is gone (None). A batch of
        writes stalled for `send_timeout_s` means the client stopped reading: "too_slow"."""
        with self._sending() as deadline:
            while True:
                item = await self._next_outgoing()
                if isinstance(item, Close):
                    return item
                try:  # one deadline per batch, not a timer per frame
                    if not await self._written(deadline, self._write(item)):
                        return Close(WS_1008_POLICY_VIOLATION, "too_slow", "client too slow")
                except (WebSocketDisconnect, OSError, RuntimeError):
                    # RuntimeError: uvicorn closed the socket itself (keepalive ping
                    # unanswered) and refuses further sends; for this connection that is the
                    # client going away.
                    return None
                self._drained.set()
                self._check_drain()

    async def _write(self, item: SendText | SendFrames) -> None:
        if isinstance(item, SendText):
            await self.socket.send_text(item.data)
            self.connection.sent(1)
            return
        for frame in item.frames:
            await self.socket.send_bytes(frame)
        self._frames_sent(item)

    # -- ending ------------------------------------------------------------------------------

    def revoke(self, message: str) -> None:
        """End the connection: its key is no longer valid."""
        failure = AuthFailure(401, "unauthorized", message)
        self._outgoing.append(Close(failure.close_code, failure.code, message))
        self._ready.set()

    async def _close(self, close: Close) -> None:
        REJECTIONS.report(close.kind, f"closing connection: {close.message} ({close.kind})")
        # Say why, then close: written even if the client is not reading (behind what it has
        # not read yet, see gateway.drivers.transport_guards), and bounded in time either way.
        reason = encode_message(Error(close.message, close.kind)).decode()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                last = {"type": "websocket.send", "text": reason, LAST_MESSAGE: True}
                await self.socket.send(cast("WebSocketSendEvent", last))  # an extension key
                await self.socket.close(close.code)


@websocket("/", name="a2f")
async def a2f_socket(
    socket: WebSocket[Any, Any, Any],
    services: NamedDependency[Services],
    gatekeeper: NamedDependency[Gatekeeper],
    settings: NamedDependency[Settings],
    drain: NamedDependency[Drain],
) -> None:
    """The Audio2Face-3D session protocol (see a2f_protocol/PROTOCOL.md)."""
    try:
        await _serve(socket, services, gatekeeper, settings, drain)
    finally:
        # Litestar wraps the socket's receive and send in closures over the socket itself: a
        # cycle holding the whole connection (uvicorn's protocol, buffers, parser), which only
        # a full garbage collection would free, a pause every stream feels. Nothing uses the
        # socket once this handler returns.
        del socket.receive, socket.send


async def _serve(
    socket: WebSocket[Any, Any, Any],
    services: Services,
    gatekeeper: Gatekeeper,
    settings: Settings,
    drain: Drain,
) -> None:
    try:
        identity = await gatekeeper.authenticate(caller_of(socket), "websocket", tickets_ok=True)
    except AuthFailure as failure:
        # Accepted only to say why: a browser sees neither an HTTP status nor its body.
        await socket.accept()
        with contextlib.suppress(Exception):
            await socket.send_text(encode_message(failure.error()))
            await socket.close(failure.close_code)
        return
    await socket.accept()
    client = gatekeeper.client(caller_of(socket))
    policy = TenantPolicy(identity, client, gatekeeper.limits, gatekeeper.audit, services.metrics)
    driver = Driver(socket, services, settings.idle_timeout_s, drain, policy)
    gatekeeper.register(driver, identity)
    try:
        await driver.run()
    finally:
        gatekeeper.unregister(driver)
