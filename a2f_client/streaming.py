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
from contextlib import aclosing, asynccontextmanager, suppress
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from a2f_client._audio import AudioSource, WireAudio, to_pcm16, wire_audio
from a2f_client._sync import iterate_in_thread
from a2f_client.credentials import Credentials, has_ticket, redacted, unreachable
from a2f_client.errors import (
    AUTH_CLOSE_CODES,
    A2FError,
    AuthError,
    ServerError,
    ServerUnavailableError,
    server_error,
)
from a2f_client.resume import AudioTape
from a2f_client.urls import websocket_url
from a2f_protocol import LOCAL_URL
from a2f_protocol.clock import MODEL_SAMPLE_RATE, FrameClock
from a2f_protocol.frames import (
    MAX_MESSAGE_BYTES,
    BlendshapeFrame,
    pack_push_audio,
    unpack_frame,
)
from a2f_protocol.messages import (
    SHUTTING_DOWN,
    EndSession,
    Error,
    SessionEnded,
    SessionStarted,
    SetEmotion,
    StartSession,
    decode_server_message,
    encode_message,
)

DEFAULT_WS_URL = LOCAL_URL
SOURCE_CLOSE_WAIT_S = 1.0  # how long a closed connection waits to learn the source failed
DEFAULT_RECONNECTS = 5  # in a row, without a frame between them
RECONNECT_BACKOFF_S = 0.25  # doubling up to 2 s: a load balancer needs a second or two to
# notice a draining gateway, during which it may route a reconnect to it once more
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
                raise _closed(exc) from exc
            if isinstance(message, bytes):
                yield unpack_frame(message)
                continue
            match decode_server_message(message):
                case SessionEnded():
                    self.ended = True
                case Error(message=text, code=code, retry_after_s=retry_after_s):
                    raise server_error(text, code, retry_after_s)
                case other:
                    raise ServerError(f"unexpected message {type(other).__name__}", "protocol")


def _closed(exc: websockets.ConnectionClosed) -> ServerError:
    """A close without an `Error` before it: a refusal by its close code, else a cut."""
    close = exc.rcvd
    if close is not None and close.code in AUTH_CLOSE_CODES:
        return AuthError(close.reason or "closed by the server", AUTH_CLOSE_CODES[close.code])
    return ServerError(f"connection closed by the server: {exc}", "closed")


async def _refusal(socket: ClientConnection, exc: websockets.ConnectionClosed) -> ServerError:
    """Why the server closed before the session started: the `Error` it sent before closing
    (still unread when our send failed), else what the close says."""
    with suppress(websockets.ConnectionClosed, msgspec.DecodeError, TimeoutError):
        while True:
            message = await asyncio.wait_for(socket.recv(), SOURCE_CLOSE_WAIT_S)
            if isinstance(message, str) and isinstance(
                error := decode_server_message(message), Error
            ):
                return server_error(error.message, error.code, error.retry_after_s)
    return _closed(exc)


@asynccontextmanager
async def connect(
    url: str = DEFAULT_WS_URL,
    params: StartSession | None = None,
    *,
    api_key: str | None = None,
    ticket: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    **fields: Any,
) -> AsyncIterator[StreamSession]:
    """Open a connection and start a session (`StartSession` fields as keywords).

    `url` may also be http(s):// or host:port (the gateway serves both on one port).
    `api_key` (default `$A2F_API_KEY`) or a one-use `ticket` for a gateway with tenants;
    `ca_file` / `insecure` for its TLS certificate (`a2f_client.credentials`). A refused key
    raises `AuthError`."""
    credentials = Credentials.resolve(api_key, ticket, ca_file, insecure)
    async with _connected(url, credentials, start_request(params, **fields)) as session:
        yield session


@asynccontextmanager
async def _connected(
    url: str, credentials: Credentials, request: StartSession
) -> AsyncIterator[StreamSession]:
    address = credentials.websocket_address(websocket_url(url))
    shown = redacted(address)
    context = credentials.ssl_context() if address.startswith("wss:") else None
    tls: dict[str, Any] = {"ssl": context} if context else {}  # ws:// takes no ssl at all
    try:
        socket = await ws_connect(
            address,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            additional_headers=credentials.headers(),
            **tls,
        )
    except (TimeoutError, OSError, websockets.InvalidHandshake) as exc:
        raise ServerUnavailableError(unreachable(shown, exc)) from exc
    except websockets.InvalidURI as exc:
        raise ValueError(f"bad URL {shown!r}: {exc.msg}") from exc
    try:
        try:
            await socket.send(encode_message(request).decode())
            reply = decode_server_message(await socket.recv())
        except websockets.ConnectionClosed as exc:
            raise await _refusal(socket, exc) from exc
        if isinstance(reply, Error):
            raise server_error(reply.message, reply.code, reply.retry_after_s)
        if not isinstance(reply, SessionStarted):
            raise ServerError(f"expected SessionStarted, got {type(reply).__name__}", "protocol")
        yield StreamSession(socket, reply)
    except websockets.ConnectionClosed as exc:
        raise _closed(exc) from exc
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
    reconnects: int = DEFAULT_RECONNECTS,
    api_key: str | None = None,
    ticket: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    **fields: Any,
) -> AsyncGenerator[BlendshapeFrame, None]:
    """Frames for a whole audio source, as the server computes them.

    `source`: a path / binary file (sent at its own rate, which the session resamples
    exactly as the batch API does), an array at `sample_rate` (the server
    resamples), or an async iterable of blocks for live audio (sent as they come). `realtime`
    paces file/array audio at its own speed. `emotion_changes` sends `SetEmotion` when the
    sent audio reaches each time. `on_started(SessionStarted)` is called for each session,
    before its frames. `api_key`, `ticket`, `ca_file`, `insecure`: as for `connect`.

    A gateway that shuts down (`Error` `shutting_down`) or a connection cut off mid-stream
    costs a reconnect to `url` (a load balancer's, to reach another gateway), up to
    `reconnects` times in a row: the stream goes on in a new session from the audio its next
    frame needs (`a2f_client.resume`), and frames keep their indices and timestamps. A ticket
    opens one connection only, so a stream with one does not reconnect. A refusal of the
    credentials (`AuthError`) is never retried.
    """
    audio = wire_audio(source, sample_rate, chunk_seconds)
    if audio.rate != MODEL_SAMPLE_RATE:
        fields["sample_rate"] = audio.rate
    credentials = Credentials.resolve(api_key, ticket, ca_file, insecure)
    resuming = _ResumingStream(
        url, credentials, start_request(params, **fields), audio, realtime, emotion_changes,
        on_started,
    )  # fmt: skip
    if credentials.ticket is not None or has_ticket(url):
        reconnects = 0
    async with aclosing(resuming.frames(reconnects)) as frames:
        async for frame in frames:
            yield frame


class _ResumingStream:
    """One stream over as many sessions as it takes: a sender task reads the source onto the
    tape and into the current session; the reader delivers frames and reconnects."""

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        request: StartSession,
        audio: WireAudio,
        realtime: bool,
        emotion_changes: Sequence[EmotionChange],
        on_started: Callable[[SessionStarted], None] | None,
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.request = request
        self.audio = audio
        self.realtime = realtime
        self.emotion_changes = sorted(emotion_changes, key=lambda change: change[0])
        self.on_started = on_started
        self.tape = AudioTape(audio.rate)
        self.session: StreamSession | None = None
        self._sent = 0  # the tape's samples the current session has
        self._ended = False  # EndSession sent in the current session
        self._source_failed = False
        self._started = asyncio.Event()  # the first session is there to send to
        self._lock = asyncio.Lock()  # one writer at a time keeps the pushes in order

    async def frames(self, reconnects: int) -> AsyncGenerator[BlendshapeFrame, None]:
        sender = asyncio.create_task(self._send_all())
        failures = 0
        try:
            while True:
                try:
                    async with aclosing(self._session()) as frames:
                        async for frame in frames:
                            failures = 0  # progress: the next cut gets the full allowance
                            yield frame
                    break
                except (ServerError, ServerUnavailableError) as exc:
                    # The sender closes the socket when the source fails: report why.
                    if isinstance(exc, ServerError) and exc.code == "closed":
                        await asyncio.wait({sender}, timeout=SOURCE_CLOSE_WAIT_S)
                    if sender.done() and not sender.cancelled() and sender.exception() is not None:
                        await sender
                    # Nothing at the URL at all: a mistake to report, not an outage to ride out.
                    nothing_there = isinstance(exc, ServerUnavailableError) and (
                        self.tape.clock is None and failures == 0
                    )
                    if nothing_there or not _resumable(exc) or failures >= reconnects:
                        raise
                    await asyncio.sleep(min(RECONNECT_BACKOFF_S * 2**failures, 2.0))
                    failures += 1
        finally:
            if not sender.done():
                sender.cancel()
                with suppress(asyncio.CancelledError):
                    await sender
        await sender  # surfaces a failure to read the source

    async def _session(self) -> AsyncGenerator[BlendshapeFrame, None]:
        origin = self.tape.resume()
        request = self.request
        if (emotions := self.tape.emotions_at(origin.sample)) is not None:
            request = msgspec.structs.replace(request, emotions=dict(emotions))
        async with _connected(self.url, self.credentials, request) as session:
            if self.tape.clock is None:
                rate = session.started.frame_rate
                self.tape.clock = FrameClock(rate.fraction)
            if self.on_started is not None:
                self.on_started(session.started)
            async with self._lock:
                self.session, self._sent, self._ended = session, origin.sample, False
            self._started.set()
            try:
                if self._source_failed:  # between two sessions: nobody closed this one
                    await session.socket.close()
                await self._flush()
                async for frame in session:
                    if (delivered := self.tape.deliver(frame)) is not None:
                        yield delivered
            finally:
                self.session = None

    async def _flush(self) -> None:
        """Bring the current session up to the tape: the audio and emotion changes it lacks,
        then the end."""
        async with self._lock:
            session = self.session
            if session is None:
                return
            base = self.tape.origin.sample
            try:
                for block in self.tape.since(self._sent):
                    if block.emotions is not None:
                        await session.set_emotion(block.emotions)
                    await session.push(block.pcm, block.start - base)
                    self._sent = block.start + block.pcm.size
                if self.tape.finished and not self._ended:
                    await session.end()
                    self._ended = True
            except websockets.ConnectionClosed:
                pass  # the reader sees the close too, and resumes from the tape

    async def _send_all(self) -> None:
        pending = self.emotion_changes
        tape, rate = self.tape, self.audio.rate
        await self._started.wait()
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async for pcm in self.audio.blocks:
                seconds = tape.end / rate
                change = None  # of several due at once, the last is the one in effect
                while pending and pending[0][0] <= seconds:
                    change, pending = pending[0][1], pending[1:]
                if self.realtime and not self.audio.live:
                    delay = began + seconds - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                tape.append(pcm, change)
                await self._flush()
            tape.finished = True
            await self._flush()
        except Exception:
            # Without EndSession the frame reader would wait forever: closing wakes it.
            self._source_failed = True
            if self.session is not None:
                await self.session.socket.close()
            raise


def _resumable(exc: A2FError) -> bool:
    """The gateway went away (told us, or vanished); anything else is the caller's to see."""
    if isinstance(exc, ServerUnavailableError):
        return True
    return isinstance(exc, ServerError) and exc.code in (SHUTTING_DOWN, "closed")


def stream_sync(
    source: str | os.PathLike[str] | npt.NDArray[np.generic],
    url: str = DEFAULT_WS_URL,
    **options: Any,
) -> Iterator[BlendshapeFrame]:
    """Blocking version of `stream` (same arguments) for scripts without an event loop."""
    return iterate_in_thread(lambda: stream(source, url, **options))
