"""uvicorn protocol classes with the time limits a hostile client must not escape.

* HTTP: a request's head (the WebSocket upgrade included) must arrive within
  `handshake_timeout_s`; uvicorn itself waits for ever, so a client trickling one byte a
  second would hold its socket indefinitely.
* WebSocket: a message sent with `LAST_MESSAGE` set, and the close frame, are written even
  while the peer is not reading (they are small and final), so a client cut off as too slow
  finds the reason behind the frames it has not read. After the app is done the peer gets
  `LINGER_S` to read what is left, then the connection is dropped: uvicorn's graceful close
  would otherwise wait for ever on a peer that never reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

LAST_MESSAGE = "a2f.last_message"
"""Key of an ASGI `websocket.send` event: the app sends nothing but a close after it."""
LINGER_S = 10.0


class GuardedWebSocket(WebSocketsSansIOProtocol):
    """Final messages skip the write backpressure; the socket is dropped after a linger."""

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "websocket.close" or message.get(LAST_MESSAGE):
            # Nothing follows, so this cannot grow the buffer without bound.
            self.writable.set()
        await super().send(message)

    _linger: asyncio.TimerHandle | None = None

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.disconnected:
            self._linger = self.loop.call_later(LINGER_S, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()  # the timer would keep this protocol alive for nothing
        super().connection_lost(exc)
        # No data comes after this. The frame parser is a generator holding its protocol: a
        # cycle only the garbage collector would free, whose full passes stall every stream.
        self.conn.parser.close()


def handshake_deadline(timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol, closing a connection whose request head is not complete
    `timeout_s` after the connection (or its previous response)."""

    class HandshakeDeadline(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self) -> None:
            super().handle_websocket_upgrade()
            # The WebSocket protocol has the connection now and this one hears nothing more,
            # so let it go as uvicorn's `connection_lost` would have (which it never gets):
            # its parser calls back into it, a cycle for the garbage collector otherwise.
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self.parser = None  # type: ignore[assignment]

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _expire(self) -> None:
            self._deadline = None  # never armed past an upgrade (`handle_websocket_upgrade`)
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return HandshakeDeadline
