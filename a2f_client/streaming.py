"""WebSocket client for the Audio2Face-3D session protocol (async core, sync wrapper).

Low level: `connect()` opens a session and gives a `StreamSession` to push audio, change the
emotion and iterate frames. High level: `stream()` sends a whole source (file, array or live
async iterable) from a background task while the caller iterates the frames.
Messages are built and parsed with the gateway's own protocol definitions.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from a2f_client._audio import AudioSource, WireAudio, to_pcm16, wire_audio
from a2f_client._sync import iterate_in_thread
from a2f_client.errors import ServerError, ServerUnavailableError
from a2f_client.urls import websocket_url
from a2f_protocol.clock import MODEL_SAMPLE_RATE
from a2f_protocol.frames import (
    MAX_MESSAGE_BYTES,
    BlendshapeFrame,
    pack_push_audio,
    unpack_frame,
)
from a2f_protocol.messages import (
    EndSession,
    Error,
    SessionEnded,
    SessionStarted,
    SetEmotion,
    StartSession,
    decode_server_message,
    encode_message,
)

DEFAULT_WS_URL = "ws://127.0.0.1:8765/"
SOURCE_CLOSE_WAIT_S = 1.0  # how long a closed connection waits to learn the source failed
EmotionChange = tuple[float, Mapping[str, float]]
"""(audio seconds, {emotion: weight}): send `SetEmotion` when the audio reaches that time."""


def start_request(params: StartSession | None = None, **fields: Any) -> StartSession:
    """A `StartSession` from a base message and/or keyword fields (validated like the server)."""
    base = msgspec.to_builtins(params) if params is not None else {"type": "StartSession"}
    return msgspec.convert(base | fields, StartSession)


class StreamSession:
    """One started session on an open connection. Iterate it for frames until `SessionEnded`."""

    def __init__(self, socket: ClientConnection, started: SessionStarted) -> None:
        self.socket = socket
        self.started = started
        self.next_sample = 0  # startSampleIndex of the next push, in the client's samples
        self.ended = False

    @property
    def channels(self) -> list[str]:
        return self.started.channels

    async def push(self, samples: npt.NDArray[np.generic], start: int | None = None) -> None:
        """Send audio (int16, or float in [-1, 1]) following the previous push, or at `start`."""
        pcm = to_pcm16(samples)
        index = self.next_sample if start is None else start
        await self.socket.send(pack_push_audio(index, pcm))
        self.next_sample = index + pcm.size

    async def set_emotion(
        self, emotions: Mapping[str, float], strength: float | None = None
    ) -> None:
        await self.socket.send(encode_message(SetEmotion(dict(emotions), strength)).decode())

    async def end(self) -> None:
        """Ask for the remaining frames; iteration stops after they arrive."""
        await self.socket.send(encode_message(EndSession(self.started.session_id)).decode())

    async def __aiter__(self) -> AsyncIterator[BlendshapeFrame]:
        while not self.ended:
            try:
                message = await self.socket.recv()
            except websockets.ConnectionClosed as exc:
                raise ServerError(f"connection closed by the server: {exc}", "closed") from exc
            if isinstance(message, bytes):
                yield unpack_frame(message)
                continue
            match decode_server_message(message):
                case SessionEnded():
                    self.ended = True
                case Error(message=text, code=code):
                    raise ServerError(text, code)
                case other:
                    raise ServerError(f"unexpected message {type(other).__name__}", "protocol")


@asynccontextmanager
async def connect(
    url: str = DEFAULT_WS_URL, params: StartSession | None = None, **fields: Any
) -> AsyncIterator[StreamSession]:
    """Open a connection and start a session (`StartSession` fields as keywords).

    `url` may also be http(s):// or host:port (the gateway serves both on one port)."""
    request = start_request(params, **fields)
    address = websocket_url(url)
    try:
        socket = await ws_connect(address, max_size=MAX_MESSAGE_BYTES, compression=None)
    except (TimeoutError, OSError, websockets.InvalidHandshake) as exc:
        raise ServerUnavailableError(f"cannot connect to {address}: {exc}") from exc
    except websockets.InvalidURI as exc:
        raise ValueError(str(exc)) from exc
    try:
        await socket.send(encode_message(request).decode())
        reply = decode_server_message(await socket.recv())
        if isinstance(reply, Error):
            raise ServerError(reply.message, reply.code)
        if not isinstance(reply, SessionStarted):
            raise ServerError(f"expected SessionStarted, got {type(reply).__name__}", "protocol")
        yield StreamSession(socket, reply)
    except websockets.ConnectionClosed as exc:
        raise ServerError(f"connection closed by the server: {exc}", "closed") from exc
    finally:
        await socket.close()


async def stream(
    source: AudioSource,
    url: str = DEFAULT_WS_URL,
    *,
    params: StartSession | None = None,
    sample_rate: int = MODEL_SAMPLE_RATE,
    realtime: bool = False,
    chunk_seconds: float = 0.1,
    emotion_changes: Sequence[EmotionChange] = (),
    on_started: Callable[[SessionStarted], None] | None = None,
    **fields: Any,
) -> AsyncGenerator[BlendshapeFrame, None]:
    """Frames for a whole audio source, as the server computes them.

    `source`: a path / binary file (sent at its own rate, which the session resamples
    exactly as the batch API does), an array at `sample_rate` (the server
    resamples), or an async iterable of blocks for live audio (sent as they come). `realtime`
    paces file/array audio at its own speed. `emotion_changes` sends `SetEmotion` when the
    sent audio reaches each time. `on_started(SessionStarted)` is called once, before frames.
    """
    audio = wire_audio(source, sample_rate, chunk_seconds)
    if audio.rate != MODEL_SAMPLE_RATE:
        fields["sample_rate"] = audio.rate
    async with connect(url, params, **fields) as session:
        if on_started is not None:
            on_started(session.started)
        sender = asyncio.create_task(_send_all(session, audio, realtime, emotion_changes))
        try:
            async for frame in session:
                yield frame
        except ServerError as exc:
            # The sender closes the socket when the source fails: report why, not the close.
            if exc.code == "closed":
                await asyncio.wait({sender}, timeout=SOURCE_CLOSE_WAIT_S)
            if sender.done() and not sender.cancelled() and sender.exception() is not None:
                await sender
            raise
        finally:
            if not sender.done():
                sender.cancel()
                with suppress(asyncio.CancelledError):
                    await sender
        await sender  # surfaces a failure to read the source


async def _send_all(
    session: StreamSession,
    audio: WireAudio,
    realtime: bool,
    emotion_changes: Sequence[EmotionChange],
) -> None:
    pending = sorted(emotion_changes, key=lambda change: change[0])
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        async for pcm in audio.blocks:
            seconds = session.next_sample / audio.rate
            while pending and pending[0][0] <= seconds:
                await session.set_emotion(pending[0][1])
                pending = pending[1:]
            if realtime and not audio.live:
                delay = began + seconds - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await session.push(pcm)
        await session.end()
    except Exception:
        # Without EndSession the frame reader would wait forever: closing wakes it.
        await session.socket.close()
        raise


def stream_sync(
    source: str | os.PathLike[str] | npt.NDArray[np.generic],
    url: str = DEFAULT_WS_URL,
    **options: Any,
) -> Iterator[BlendshapeFrame]:
    """Blocking version of `stream` (same arguments) for scripts without an event loop."""
    return iterate_in_thread(lambda: stream(source, url, **options))
