"""NVIDIA's Audio2Face-3D gRPC stream (`ProcessAudioStream`): a driver of the connection core.

`gateway.session.connection.Connection` decides everything, as for the WebSocket; this module
translates. In: the stream header becomes a `StartSession` (`gateway.drivers.ace_params`),
each audio chunk a `PushAudio` at the next sample index, each emotion keyframe a `SetEmotion`
fed between the audio before its time code and the audio after, and `end_of_audio` an
`EndSession`. Out: `SessionStarted` becomes the stream header (and a `Status` WARNING for each
parameter it could not honour), every frame an `AnimationData` with the audio it covers and
its emotions, `SessionEnded` the end event and `Status` SUCCESS, after which the call ends:
NVIDIA's clients never half-close and set no deadline, so the server must end it. An `Error`
or a close ends the call with the matching gRPC status (`gateway.drivers.ace_messages`).

Frames leave as soon as their window is complete; the clip's tail follows `end_of_audio`. A
backlogged connection is not read (HTTP/2 flow control then holds the client back), a stream
silent for `idle_timeout_s` with nothing owed to it ends with DEADLINE_EXCEEDED, and a client
that cancels (or whose deadline passes) frees its slot at once: gRPC cancels this handler.
A stream with idle frames (`face_params` `idleFrames` 1) gets a ticker, as the WebSocket's:
its frames go on through pauses, carrying no audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import grpc
import numpy as np
from nvidia_audio2face_3d.messages_pb2 import (
    A2F3DAnimationDataStream,
    AudioWithEmotionStream,
    EmotionWithTimeCode,
)

from a2f_protocol.clock import MODEL_SAMPLE_RATE, FrameClock
from a2f_protocol.frames import pack_push_audio, unpack_frame
from a2f_protocol.messages import (
    SHUTTING_DOWN,
    EndSession,
    Error,
    ProtocolError,
    SessionEnded,
    SessionStarted,
    SetEmotion,
    decode_server_message,
    encode_message,
)
from gateway.drain import Drain
from gateway.drivers import ace_messages as out
from gateway.drivers.ace_params import StreamSetup, keyframe_emotions, nim_name, stream_setup
from gateway.drivers.core_driver import CoreDriver
from gateway.drivers.overdue import Overdue
from gateway.drivers.rejections import REJECTIONS
from gateway.drivers.ticker import tick
from gateway.inference.batch import Job
from gateway.metrics import ACE_GRPC
from gateway.services import Services
from gateway.session.config import ServerProfile
from gateway.session.connection import (
    Close,
    SendFrames,
)
from gateway.tenancy.quota import TenantPolicy

PCM_BYTES = 2


@dataclass(frozen=True, slots=True)
class Ending:
    """Why the call ends with a status other than OK: an `Error` kind and its text."""

    kind: str
    message: str
    retry_after_s: float | None = None


GOODBYE = Ending(SHUTTING_DOWN, "Server is shutting down: reconnect to continue")

Context = Any  # grpc.aio.ServicerContext: grpcio ships no type information


class _Keyframe:
    """An emotion keyframe waiting for the audio before its time code to be pushed."""

    __slots__ = ("emotions", "message", "split")

    def __init__(self, split: int, emotions: dict[str, float], message: EmotionWithTimeCode):
        self.split = split  # input samples pushed before it applies
        self.emotions = emotions
        self.message = message


class _InputAudio:
    """The client's audio, kept until the frames covering it return it. The returned prefix
    is dropped once it is half the buffer: a long unpaced clip waiting for its frames costs
    amortised constant work per byte, not a copy of the whole backlog per frame."""

    def __init__(self) -> None:
        self.received = 0  # samples
        self.returned = 0  # samples
        self._data = bytearray()
        self._start = 0  # the sample `_data` starts at

    def append(self, pcm: bytes) -> None:
        self._data += pcm
        self.received += len(pcm) // PCM_BYTES

    def take(self, end: int) -> bytes:
        """The samples up to `end` (at most those received) not returned yet."""
        begin = (self.returned - self._start) * PCM_BYTES
        stop = max((min(end, self.received) - self._start) * PCM_BYTES, begin)
        audio = bytes(self._data[begin:stop])
        self.returned = self._start + stop // PCM_BYTES
        if 2 * stop > len(self._data):
            del self._data[:stop]
            self._start = self.returned
        return audio


class AceStream(CoreDriver[Ending]):
    """gRPC I/O for one `ProcessAudioStream` call and its `Connection`."""

    def __init__(
        self,
        context: Context,
        services: Services,
        profile: ServerProfile,
        idle_timeout_s: float,
        drain: Drain,
        policy: TenantPolicy | None = None,
    ) -> None:
        super().__init__(services, profile, idle_timeout_s, drain, policy, ACE_GRPC)
        self.context = context
        self.clock = FrameClock(profile.fps, services.model.sample_rate)
        # Input.
        self._setup: StreamSetup | None = None
        self._ended = False  # end_of_audio (or the client's half-close) seen
        self._keyframes: list[_Keyframe] = []  # by `split`
        self._audio = _InputAudio()  # pushed, until returned with its frames
        self._next_frame = 0  # the first frame not submitted yet
        self._emotions: dict[str, float] = {}  # those of the frames being sent
        self._changes: deque[tuple[int, dict[str, float], EmotionWithTimeCode]] = deque()
        self._animation = out.AnimationFrames()

    async def run(self) -> None:
        """Until the stream ends; an error or a close ends the call with its status."""
        receiver = asyncio.create_task(self._receive())
        ticker = asyncio.create_task(tick(self.connection, self._ticking, self._act))
        self.drain.register(self._check_drain)
        self._check_drain()
        try:
            ending = await self._send()
            if ending is not None:
                self._end_call(ending)
        finally:
            for task in (receiver, ticker):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._finish()

    # -- receiving ---------------------------------------------------------------------------

    async def _receive(self) -> None:
        """Until `end_of_audio` or a refusal. A read is never cancelled for the idle timeout
        (that could lose a message), nor wrapped in a task per message: a timer checks how
        long the read in progress has waited."""
        connection, dispatcher = self.connection, self.services.dispatcher
        idle = Overdue(self.idle_timeout_s, self._idle)
        try:
            while not (self._ended or self._leaving or connection.closed):
                while connection.backlogged or dispatcher.holds(connection):
                    self._drained.clear()
                    await self._drained.wait()
                idle.begin()
                message = await self.context.read()
                idle.end()
                arrived = time.monotonic()
                try:
                    if message is grpc.aio.EOF:
                        self._half_closed(arrived)
                    else:
                        await self._handle(message, arrived)
                except ProtocolError as exc:
                    self._refuse(str(exc), exc.code)
                await self._answer()
        finally:
            idle.cancel()

    async def _handle(self, message: AudioWithEmotionStream, arrived: float) -> None:
        part = message.WhichOneof("stream_part")
        if part == "audio_stream_header":
            if self._setup is not None:
                raise ProtocolError("audio_stream_header sent twice", "session_exists")
            model = self.services.model
            self._setup = stream_setup(message.audio_stream_header, model, self.profile.fps)
            self._emotions = dict(self._setup.start.emotions or {})
            self.connection.receive_text(encode_message(self._setup.start).decode(), arrived)
            return
        if self._setup is None:
            raise ProtocolError(
                f"{part or 'an empty message'} before audio_stream_header: the header comes first",
                "no_session",
            )
        if part == "audio_with_emotion":
            chunk = message.audio_with_emotion
            self._take_keyframes(self._setup, chunk.emotions)
            await self._push(chunk.audio_buffer, arrived)
        elif part == "end_of_audio":
            self._end(arrived)
        else:
            raise ProtocolError("AudioWithEmotionStream without a stream_part")

    def _half_closed(self, arrived: float) -> None:
        """The client closed its side: the end of its audio, if a stream was set up."""
        if self._setup is None:
            raise ProtocolError("the stream ended before its audio_stream_header", "no_session")
        self._end(arrived)

    def _end(self, arrived: float) -> None:
        self._ended = True
        self.connection.receive_text(encode_message(EndSession()).decode(), arrived)

    def _take_keyframes(self, setup: StreamSetup, keyframes: Sequence[EmotionWithTimeCode]) -> None:
        """Queue keyframes to apply once the audio before their time code is pushed."""
        model = self.services.model
        for keyframe in keyframes:
            emotions = keyframe_emotions(keyframe, setup.max_emotions)
            # The first frame at or after the time code; it must not be computed before the
            # keyframe applies, so the keyframe goes in before the audio that completes its
            # window (`offset` past the frame, `window - offset` after it).
            frame = math.ceil(Fraction(keyframe.time_code) * self.profile.fps)
            complete = self.clock.timestamp(frame) - model.offset + model.window
            split = 0 if frame == 0 else (complete - 1) * setup.sample_rate // MODEL_SAMPLE_RATE
            self._keyframes.append(_Keyframe(split, emotions, keyframe))
        self._keyframes.sort(key=lambda keyframe: keyframe.split)
        self._apply_keyframes()

    def _apply_keyframes(self) -> None:
        setup = self._setup
        assert setup is not None
        while self._keyframes and self._keyframes[0].split <= self._audio.received:
            keyframe = self._keyframes.pop(0)
            request = SetEmotion(keyframe.emotions, setup.start.emotion_strength)
            self.connection.receive_text(encode_message(request).decode(), time.monotonic())
            # Frames already submitted keep the emotion they were computed with.
            self._changes.append((self._next_frame, keyframe.emotions, keyframe.message))

    async def _push(self, pcm: bytes, arrived: float) -> None:
        """Push `pcm`, a keyframe's emotion between the audio before and after its time code;
        each part's charge is answered before the next goes in, so a keyframe applies from
        the first frame not submitted yet."""
        if len(pcm) % PCM_BYTES:
            raise ProtocolError(
                "audio_buffer must hold whole 16-bit samples (an even number of bytes)",
                "invalid_audio",
            )
        samples = np.frombuffer(pcm, dtype="<i2")
        begin = 0
        while begin < len(samples):
            end = len(samples)
            if self._keyframes:
                end = min(end, max(self._keyframes[0].split - self._audio.received + begin, begin))
            if end > begin:
                part = samples[begin:end]
                self.connection.receive_bytes(pack_push_audio(self._audio.received, part), arrived)
                self._audio.append(part.tobytes())
                begin = end
                await self._answer()
            if self._keyframes:
                self._apply_keyframes()

    # -- actions -----------------------------------------------------------------------------

    def _submitted(self, job: Job) -> None:
        self._next_frame = job.batch.first_index + job.batch.count

    def _refuse(self, message: str, kind: str) -> None:
        """A request the driver itself refuses: the call ends with its status."""
        self.services.metrics.errors.labels(kind).inc()
        self._close(Ending(kind, message))

    def _close(self, ending: Ending) -> None:
        self._leaving = True
        self._outgoing.append(ending)
        self._ready.set()
        self._drained.set()

    def _say_goodbye(self) -> None:
        self._close(GOODBYE)

    def revoke(self, message: str) -> None:
        """End the call: its key is no longer valid."""
        self._close(Ending("unauthorized", message))

    # -- sending -----------------------------------------------------------------------------

    async def _send(self) -> Ending | None:
        """Until the stream's end (None) or a refusal or close (returned). Writes stalled for
        `send_timeout_s` (the client stopped reading) are cancelled: "too_slow"."""
        with self._sending() as deadline:
            while True:
                item = await self._next_outgoing()
                if isinstance(item, Ending):
                    return item
                if isinstance(item, Close):
                    return Ending(item.kind, item.message)
                ended = False
                messages: Iterable[A2F3DAnimationDataStream]
                if isinstance(item, SendFrames):
                    messages = self._frames(item)
                else:
                    reply = decode_server_message(item.data)
                    if isinstance(reply, Error):
                        kind = reply.code or "invalid_message"
                        return Ending(kind, reply.message, reply.retry_after_s)
                    ended = isinstance(reply, SessionEnded)
                    messages = self._reply(reply)
                if not await self._written(deadline, self._write(messages)):  # one deadline
                    return Ending("too_slow", "client too slow")
                if isinstance(item, SendFrames):
                    self._frames_sent(item)
                else:
                    self.connection.sent(1)
                self._drained.set()
                self._check_drain()
                if ended:
                    return None

    async def _write(self, messages: Iterable[A2F3DAnimationDataStream]) -> None:
        for message in messages:
            await self.context.write(message)

    def _reply(self, reply: SessionStarted | SessionEnded) -> list[A2F3DAnimationDataStream]:
        setup = self._setup
        assert setup is not None
        if isinstance(reply, SessionStarted):
            header = out.stream_header(setup.sample_rate, [nim_name(c) for c in reply.channels])
            return [header, *(out.warning(text) for text in setup.warnings)]
        start = self._audio.returned / setup.sample_rate
        rest = self._audio.take(self._audio.received)
        tail = [out.trailing_audio(start, rest)] if rest else []
        return [*tail, *out.end_of_processing()]

    def _frames(self, item: SendFrames) -> Iterator[A2F3DAnimationDataStream]:
        """Each frame's message, made when the one before it has been written (they are one
        reused message: `out.AnimationFrames`)."""
        setup = self._setup
        assert setup is not None
        fps, rate = self.profile.fps, setup.sample_rate
        for data in item.frames:
            frame = unpack_frame(data)
            index = frame.frame_index
            inputs = []
            while self._changes and self._changes[0][0] <= index:
                _, self._emotions, given = self._changes.popleft()
                inputs.append(given)
            # Frame k covers input samples [k / fps, (k + 1) / fps) of the clip, less the
            # pauses' silence its audio moved past (idle frames).
            end = (index + 1) * rate * fps.denominator // fps.numerator
            audio = self._audio.take(end - self.connection.audio_lag)
            time_code = index * fps.denominator / fps.numerator  # int / int: correctly rounded
            yield self._animation.frame(time_code, frame.weights, audio, inputs, self._emotions)

    def _end_call(self, ending: Ending) -> None:
        """The call's status, which gRPC sends once the handler returns. Not `context.abort`:
        it waits until the status is written, which for a client that stopped reading is never
        (the status queues behind the frames its flow-control window holds back), and would
        keep this handler and its session's slot until the client left. Set, the status
        reaches such a client after the frames it has yet to read."""
        REJECTIONS.report(ending.kind, f"ending gRPC stream: {ending.message} ({ending.kind})")
        details, trailing = out.status_details(ending.message, ending.retry_after_s)
        self.context.set_code(out.status_of(ending.kind))
        self.context.set_details(details)
        self.context.set_trailing_metadata(trailing)
