"""The WebSocket route: one session per connection, a receiver and a sender per connection.

The receiver reads raw ASGI events (binary = PushAudio, text = JSON control), drives the pure
session state machine and starts one Triton request per PushAudio (all frames it completed);
requests run concurrently. Everything for the client goes through one bounded queue in
protocol order; the sender awaits each request's result in that order, so frames leave in
order whatever order Triton answers in. The queue is bounded: when it is full the receiver
stops reading the client's audio until frames drain (TCP backpressure on the client), so a
slow Triton slows a fast client down instead of failing it. A client that stops reading
stalls a send for `send_timeout_s` and is cut off with `Error` "client too slow".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.status_codes import WS_1008_POLICY_VIOLATION, WS_1011_INTERNAL_ERROR

from a2f_protocol.frames import (
    MAX_MESSAGE_BYTES,
    FrameFormatError,
    pack_frame,
    parse_push_audio,
)
from a2f_protocol.messages import (
    EndSession,
    Error,
    FrameRate,
    ProtocolError,
    SessionEnded,
    SessionStarted,
    SetEmotion,
    StartSession,
    decode_client_message,
    encode_message,
)
from gateway.services import Services
from gateway.session.audio import WindowBatch
from gateway.session.config import SessionConfig, emotion_parameters
from gateway.session.pipeline import FramePipeline
from gateway.session.registry import SessionStats
from gateway.triton_client import InferenceError

log = logging.getLogger(__name__)

MAX_BATCH_FRAMES = 1024  # the ensemble's max_batch_size
CLOSE_TIMEOUT_S = 1.0


@dataclass(slots=True)
class LiveSession:
    """A started session: its framing and output shaping, parameters and counters."""

    session_id: str
    config: SessionConfig
    pipeline: FramePipeline
    parameters: dict[str, npt.NDArray[np.float32]]
    stats: SessionStats


@dataclass(slots=True)
class PendingFrames:
    """Frames of one Triton request, queued for sending in order."""

    session: LiveSession
    batch: WindowBatch
    result: asyncio.Future[npt.NDArray[np.float32]]
    arrived: float  # monotonic time of the PushAudio (or EndSession) that completed them


@dataclass(slots=True)
class Text:
    """An encoded JSON message."""

    data: bytes


Outgoing = PendingFrames | Text


class Fatal(Exception):
    """Ends the connection: tell the client (best effort), then close with `close_code`."""

    def __init__(self, message: str, kind: str, close_code: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.close_code = close_code


class ClientGone(Exception):
    """The client disconnected."""


@dataclass(slots=True)
class Connection:
    socket: WebSocket
    services: Services
    session: LiveSession | None = None
    queue: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    queued_units: int = 0  # frames + messages waiting; bounded by max_queued_frames
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # set when units leave
    in_flight: set[asyncio.Future[npt.NDArray[np.float32]]] = field(default_factory=set)

    async def run(self) -> None:
        # The pair ends together: whichever side stops first (disconnect, fatal error) cancels
        # the other. (Not asyncio.TaskGroup: a disconnect is an ordinary end, not an error group.)
        loops = [asyncio.create_task(self._receive()), asyncio.create_task(self._send())]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            failure = next(iter(done)).exception()
            if isinstance(failure, Fatal):
                await self._fail(failure)
            elif failure is not None and not isinstance(failure, ClientGone):
                raise failure
        finally:
            for loop in loops:
                loop.cancel()
            for call in list(self.in_flight):
                call.cancel()
            if self.session is not None:
                self._end_session(self.session)

    # -- receiving ---------------------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            event = await self.socket.receive()
            if event["type"] == "websocket.disconnect":
                raise ClientGone
            arrived = time.monotonic()
            if (size := _message_bytes(event)) > MAX_MESSAGE_BYTES:
                await self._error(
                    f"Message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
                    "too_large",
                    self.session,
                )
            elif event.get("bytes") is not None:
                await self._on_audio(event["bytes"], arrived)
            elif event.get("text") is not None:
                await self._on_text(event["text"], arrived)

    async def _on_audio(self, data: bytes, arrived: float) -> None:
        session = self.session
        if session is None:
            await self._error("StartSession must be called before PushAudio", "no_session")
            return
        try:
            push = parse_push_audio(data)
            session.pipeline.stream.push(push.start_sample_index, push.pcm)
        except FrameFormatError as exc:
            await self._error(str(exc), "invalid_audio", session)
            return
        except ProtocolError as exc:
            await self._error(str(exc), exc.code, session)
            return
        session.stats.audio_samples = session.pipeline.stream.received
        await self._dispatch_ready(session, arrived)

    async def _on_text(self, text: str, arrived: float) -> None:
        try:
            message = decode_client_message(text)
            match message:
                case StartSession():
                    await self._start(message)
                case EndSession():
                    await self._finish(message, arrived)
                case SetEmotion():
                    self._set_emotion(message)
        except ProtocolError as exc:
            await self._error(str(exc), exc.code, self.session)

    async def _start(self, request: StartSession) -> None:
        if self.session is not None:
            raise ProtocolError("Session already started for this connection", "session_exists")
        services = self.services
        config = SessionConfig.from_start(request, services.profile, services.model)
        session_id = secrets.token_hex(16)
        stats = services.registry.acquire(session_id, config.input_rate)
        if stats is None:
            raise ProtocolError("Server busy (no free sessions)", "busy")
        model = services.model
        self.session = LiveSession(
            session_id=session_id,
            config=config,
            pipeline=FramePipeline(config, model),
            parameters=dict(config.parameters),
            stats=stats,
        )
        services.metrics.sessions.inc()
        services.metrics.sessions_active.set(len(services.registry))
        profile = services.profile
        started = SessionStarted(
            session_id=session_id,
            model=profile.model,
            options=profile.options,
            sampling_rate=model.sample_rate,
            frame_rate=FrameRate(config.fps.numerator, config.fps.denominator),
            weight_count=len(config.channels.names),
            channels=list(config.channels.names),
            channel_groups=list(config.channels.groups),
        )
        await self._enqueue(Text(encode_message(started)), 1)

    async def _finish(self, request: EndSession, arrived: float) -> None:
        session = self.session
        if session is None:
            raise ProtocolError("No active session for this connection", "no_session")
        if request.session_id is not None and request.session_id != session.session_id:
            raise ProtocolError(
                "EndSession.session_id does not match active session", "session_mismatch"
            )
        session.pipeline.stream.finish()
        await self._dispatch_ready(session, arrived)
        # The slot frees now, as in the reference server; the tail frames still go out first.
        self._end_session(session)
        await self._enqueue(Text(encode_message(SessionEnded(session.session_id))), 1)

    def _set_emotion(self, request: SetEmotion) -> None:
        session = self.session
        if session is None:
            raise ProtocolError("No active session for this connection", "no_session")
        session.parameters |= emotion_parameters(
            request.emotions, request.emotion_strength, self.services.model
        )

    async def _dispatch_ready(self, session: LiveSession, arrived: float) -> None:
        while (batch := session.pipeline.stream.take(MAX_BATCH_FRAMES)) is not None:
            result = self._infer(session, batch)
            await self._enqueue(PendingFrames(session, batch, result, arrived), batch.count)

    def _infer(
        self, session: LiveSession, batch: WindowBatch
    ) -> asyncio.Future[npt.NDArray[np.float32]]:
        # Parameters as they are now: a later SetEmotion applies to later frames only.
        result = self.services.triton.submit(batch.windows, dict(session.parameters))
        metrics = self.services.metrics
        session.stats.requests_in_flight += 1
        started = time.perf_counter()

        def settled(_: asyncio.Future[npt.NDArray[np.float32]]) -> None:
            self.in_flight.discard(result)
            session.stats.requests_in_flight -= 1
            metrics.triton_latency.observe(time.perf_counter() - started)
            metrics.triton_batch.observe(batch.count)

        self.in_flight.add(result)
        result.add_done_callback(settled)
        return result

    async def _error(self, message: str, kind: str, session: LiveSession | None = None) -> None:
        self.services.metrics.errors.labels(kind).inc()
        if session is not None:
            session.stats.errors += 1
        await self._enqueue(Text(encode_message(Error(message, kind))), 1)

    async def _enqueue(self, item: Outgoing, units: int) -> None:
        # Backpressure: wait for room (an item larger than the bound goes alone). The sender
        # always makes progress or fails: its writes time out when the client stops reading.
        while self.queued_units and self.queued_units + units > self.services.max_queued_frames:
            self.drained.clear()
            await self.drained.wait()
        self.queued_units += units
        if isinstance(item, PendingFrames):
            item.session.stats.queued_frames += units
        self.queue.put_nowait(item)

    # -- sending -----------------------------------------------------------------------------

    async def _send(self) -> None:
        while True:
            item = await self.queue.get()
            if isinstance(item, Text):
                async with self._deadline():
                    await self.socket.send_text(item.data)
                self._sent(1)
            else:
                await self._send_frames(item)

    async def _send_frames(self, item: PendingFrames) -> None:
        try:
            weights = await item.result
        except InferenceError as exc:
            raise Fatal(f"Inference failed: {exc}", "inference", WS_1011_INTERNAL_ERROR) from exc
        session, batch = item.session, item.batch
        block = session.pipeline.shape(batch, weights)
        timestamps = block.timestamps.tolist()
        metrics = self.services.metrics
        frames = [
            pack_frame(
                block.first_index + row, timestamps[row], timestamps[row + 1], block.weights[row]
            )
            for row in range(batch.count)
        ]
        async with self._deadline():  # one deadline per batch, not a timer task per frame
            for frame in frames:
                await self.socket.send_bytes(frame)
                self._sent(1)
                session.stats.queued_frames -= 1
                session.stats.frames_sent += 1
        metrics.frames.inc(batch.count)
        latency = time.monotonic() - item.arrived
        for _ in range(batch.count):
            metrics.frame_latency.observe(latency)

    def _sent(self, units: int) -> None:
        self.queued_units -= units
        self.drained.set()

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        """Socket writes inside must finish within send_timeout_s: if they stall, the client
        has stopped reading."""
        try:
            async with asyncio.timeout(self.services.send_timeout_s):
                yield
        except TimeoutError as exc:
            raise Fatal("client too slow", "too_slow", WS_1008_POLICY_VIOLATION) from exc
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:
            # RuntimeError: uvicorn closed the socket itself (keepalive ping unanswered) and
            # refuses further sends; for this connection that is the client going away.
            raise ClientGone from exc

    # -- ending ------------------------------------------------------------------------------

    def _end_session(self, session: LiveSession) -> None:
        services = self.services
        services.registry.release(session.session_id)
        services.metrics.sessions_active.set(len(services.registry))
        self.session = None

    async def _fail(self, failure: Fatal) -> None:
        log.info("closing connection: %s", failure)
        self.services.metrics.errors.labels(failure.kind).inc()
        # The socket may be the very thing that is stuck: bounded effort to say why, then close.
        with contextlib.suppress(Exception):
            message = encode_message(Error(str(failure), failure.kind))
            await asyncio.wait_for(self.socket.send_text(message), CLOSE_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.socket.close(failure.close_code), CLOSE_TIMEOUT_S)


def _message_bytes(event: Mapping[str, Any]) -> int:
    if event.get("bytes") is not None:
        return len(event["bytes"])
    text = event.get("text") or ""
    # UTF-8 takes at most 4 bytes a character: only a long text needs encoding to be sure.
    return len(text.encode()) if len(text) * 4 > MAX_MESSAGE_BYTES else len(text)


@websocket("/", name="a2f")
async def a2f_socket(socket: WebSocket) -> None:
    """The Audio2Face-3D session protocol (see a2f_protocol/PROTOCOL.md)."""
    await socket.accept()
    await Connection(socket, socket.app.state.services).run()
