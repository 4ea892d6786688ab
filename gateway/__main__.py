"""`python -m gateway [flags]`: serve the gateway with uvicorn (see `--help`)."""

from __future__ import annotations

import asyncio
import socket
import sys

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gateway.app import create_app
from gateway.protocol.frames import MAX_MESSAGE_BYTES
from gateway.settings import load_settings


def bounded_websocket_protocol(send_buffer_bytes: int) -> type[WebSocketsSansIOProtocol]:
    """The sans-I/O websockets protocol (its send awaits drain) with small send buffers.

    Kernel and transport buffers hold what a client has not read yet; left at their defaults
    (megabytes on loopback) they hide a stalled client for minutes. Capping them bounds memory
    per connection and lets the gateway's own queue limit notice a slow client promptly.
    """

    class BoundedSendBuffer(WebSocketsSansIOProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
            if isinstance(transport, asyncio.WriteTransport):
                transport.set_write_buffer_limits(high=send_buffer_bytes)
            super().connection_made(transport)

    return BoundedSendBuffer


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(argv)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws=bounded_websocket_protocol(settings.send_buffer_bytes),
        ws_max_size=MAX_MESSAGE_BYTES,  # larger messages are refused with close code 1009
        ws_per_message_deflate=False,  # PCM and float frames barely compress
    )


if __name__ == "__main__":
    main(sys.argv[1:])
