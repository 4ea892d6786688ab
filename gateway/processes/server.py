"""One gateway process: start-up tuning, the app and uvicorn on a port or a given socket; a
signal drains it before uvicorn stops (`gateway.drain`)."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import signal
import socket
from types import FrameType

import uvicorn
from litestar import Litestar

from a2f_protocol.frames import TRANSPORT_MAX_MESSAGE_BYTES
from gateway.drain import Drain
from gateway.drivers.rejections import quiet_uvicorn_rejections
from gateway.drivers.transport_guards import GuardedWebSocket, handshake_deadline
from gateway.processes.reload_signal import take_reload_signal
from gateway.settings import Settings
from gateway.stores.base import SessionStore
from gateway.web.app import create_app


def bounded_websocket_protocol(send_buffer_bytes: int) -> type[GuardedWebSocket]:
    """The sans-I/O websockets protocol (its send awaits drain) with small send buffers.

    Kernel and transport buffers hold what a client has not read yet; left at their defaults
    (megabytes on loopback) they hide a stalled client for minutes. Capping them bounds memory
    per connection and lets the gateway's own queue limit notice a slow client promptly.
    """

    class BoundedSendBuffer(GuardedWebSocket):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
            if isinstance(transport, asyncio.WriteTransport):
                transport.set_write_buffer_limits(high=send_buffer_bytes)
            super().connection_made(transport)

    return BoundedSendBuffer


HEAP_TRIM_THRESHOLD = 128 << 20
"""Freed heap glibc keeps for reuse before it returns memory to the system."""


def keep_large_buffers_on_heap() -> None:
    """Serve multi-megabyte buffers (merged audio windows, gRPC messages) from the heap.

    glibc hands such buffers out as fresh mmap()s and returns them on free(), so every
    request paid page faults and page zeroing for each byte it copied: measured (load test,
    64 windows per Triton request) 7.3 ms of CPU per request in the Triton client, 2.1 ms with
    these thresholds. The price is up to 128 MB of freed heap kept for reuse. No-op off glibc.
    """
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's upper limit for this threshold
    libc.mallopt(m_trim_threshold, HEAP_TRIM_THRESHOLD)


def freeze_startup_objects() -> None:
    """Keep the imported libraries' objects out of every later garbage collection.

    A full collection walks every tracked object; after start-up that is mostly litestar,
    gRPC, numpy and their modules, which live as long as the process. Measured under load
    (40 streams): a full collection stalled the event loop for 18 ms, a p99-sized hole in
    every session's frame stream. Frozen, a collection walks only what sessions allocated.
    """
    gc.collect()
    gc.freeze()


class DrainingServer(uvicorn.Server):
    """uvicorn, whose stop signal first drains the app for up to `drain_s`.

    uvicorn's own stop closes the listening socket and every WebSocket at once; here the
    listener stays open through the drain, so probes see `/ready` 503 and new clients are told
    why they are refused, and uvicorn's stop begins only once the drain has finished.
    """

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_s = drain_s
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self.should_exit:  # not serving yet, or stopping already
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)  # re-raised by uvicorn after it stopped, as usual
        # A signal handler runs between two bytecodes of the loop: hand the work to the loop.
        self._loop.call_soon_threadsafe(self.drain.begin, self.drain_s)

    async def on_tick(self, counter: int) -> bool:
        if self.drain.finished:
            self.should_exit = True
        return await super().on_tick(counter)


def uvicorn_config(settings: Settings, app: Litestar) -> uvicorn.Config:
    """How uvicorn serves `app` (also for tests that run the gateway in their own process)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws=bounded_websocket_protocol(settings.send_buffer_bytes),
        ws_max_size=TRANSPORT_MAX_MESSAGE_BYTES,  # larger messages: close code 1009
        ws_per_message_deflate=False,  # PCM and float frames barely compress
        ssl_certfile=settings.ssl_certfile or None,  # https:// and wss:// (keys never in clear)
        ssl_keyfile=settings.ssl_keyfile or None,
        http=handshake_deadline(settings.handshake_timeout_s),
    )
    quiet_uvicorn_rejections()  # after uvicorn.Config: it configures its loggers there
    return config


def serve(
    settings: Settings, sock: socket.socket | None = None, sessions: SessionStore | None = None
) -> None:
    """Serve until SIGINT or SIGTERM (then drain): on `sock` when given, else on
    `settings.host:port`; sessions counted in `sessions`, else in this process alone."""
    # SIGHUP reloads the tenants file: ignored until the app listens for it (with a file).
    take_reload_signal(signal.SIG_IGN)
    keep_large_buffers_on_heap()
    app = create_app(settings, sessions)
    freeze_startup_objects()
    config = uvicorn_config(settings, app)
    server = DrainingServer(config, app.state.drain, settings.drain_s)
    server.run(sockets=None if sock is None else [sock])
