"""NVIDIA's Audio2Face-3D gRPC API (the NIM's `ProcessAudioStream`) as a client mode.

    from a2f_client.ace import stream_sync
    for frame in stream_sync("line.wav", "127.0.0.1:52000", emotions={"joy": 0.6}):
        ...

The gateway serves the NIM's API on a port of its own (52000) beside the WebSocket. `stream`
sends a file, array or live source over one call and yields the same `BlendshapeFrame`s as
the WebSocket client (indices and 16 kHz timestamps from the time codes, ARKit channel names),
so the exports work the same. Messages are NVIDIA's own classes (PyPI `nvidia-audio2face-3d`,
`nvidia-ace`), installed without their dependency pins beside `open-a2f[ace]` (grpcio,
protobuf): `nvidia-ace` asks for an old grpcio that the server's tritonclient rules out.

A refusal is the call's gRPC status, raised as the library's errors with a one-line message:
UNAUTHENTICATED / PERMISSION_DENIED as `AuthError`, RESOURCE_EXHAUSTED as `ServerError` with
`retry_after_s` (the server's `retry-after-s` trailer), a gateway that cannot be reached as
`ServerUnavailableError`. A stream is one call: it does not resume after a cut.
"""

from __future__ import annotations

try:
    import grpc
    from nvidia_ace.audio_pb2 import AudioHeader
    from nvidia_ace.status_pb2 import Status
    from nvidia_audio2face_3d.audio2face_pb2_grpc import A2FControllerServiceStub
    from nvidia_audio2face_3d.messages_pb2 import (
        A2F3DAnimationDataStream,
        AudioWithEmotion,
        AudioWithEmotionStream,
        AudioWithEmotionStreamHeader,
        BlendShapeParameters,
        EmotionParameters,
        EmotionPostProcessingParameters,
        EmotionWithTimeCode,
    )
except ModuleNotFoundError as exc:  # the base install: say how to get the ACE mode
    raise ModuleNotFoundError(
        f"the ACE mode needs {exc.name or 'gRPC'}: pip install 'open-a2f[ace]', then NVIDIA's message "
        "packages without their pins: pip install --no-deps nvidia-audio2face-3d nvidia-ace",
        name=exc.name,
    ) from exc

import asyncio
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from a2f_client._audio import AudioSource, WireAudio, wire_audio
from a2f_client._sync import iterate_in_thread
from a2f_client.credentials import Credentials, untrusted
from a2f_client.errors import A2FError, AuthError, ServerError, ServerUnavailableError
from a2f_client.streaming import EmotionChange
from a2f_client.urls import DEFAULT_ACE_URL, grpc_target
from a2f_protocol import ACE_FPS
from a2f_protocol.clock import MODEL_SAMPLE_RATE, FrameClock
from a2f_protocol.frames import MAX_MESSAGE_BYTES, BlendshapeFrame

ACE_RATES = (16_000, 144_000)  # the input rates the NIM takes
RETRY_AFTER_KEY = "retry-after-s"  # the gateway's trailer on RESOURCE_EXHAUSTED (seconds)
TIME_CODE_TOLERANCE = 1e-4  # of a frame: time codes are float seconds
# Kinds, as `ServerError.code`, of the statuses a gateway ends a call with; `AuthError` for
# the credential ones, so callers handle both protocols' refusals alike.
KIND_OF_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: "unauthorized",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "resource_exhausted",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
}
AUTH_STATUSES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
# A stream's channel option for a connection of its own. gRPC otherwise gives every channel of
# a process to the same server one shared connection, on which a server bounds the streams at
# once (open-a2f: 100): past that, a new stream waits, silently, for one of the others to end.
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


@dataclass(frozen=True, slots=True)
class AceStarted:
    """The stream header: the frames' channels (ARKit names, as the WebSocket's), the NIM's
    names for them, the returned audio's rate and the frame rate the frames are counted at."""

    channels: list[str]
    names: list[str]
    sample_rate: int
    fps: Fraction


async def stream(
    source: AudioSource,
    url: str = DEFAULT_ACE_URL,
    *,
    sample_rate: int = MODEL_SAMPLE_RATE,
    realtime: bool = False,
    chunk_seconds: float = 0.1,
    fps: int | Fraction = ACE_FPS,
    emotions: Mapping[str, float] | None = None,
    emotion_strength: float | None = None,
    multipliers: Mapping[str, float] | None = None,
    offsets: Mapping[str, float] | None = None,
    emotion_changes: Sequence[EmotionChange] = (),
    on_started: Callable[[AceStarted], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    api_key: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    insecure: bool = False,
) -> AsyncGenerator[BlendshapeFrame, None]:
    """Frames for a whole audio source over one `ProcessAudioStream` call.

    `source`, `sample_rate`, `realtime`, `chunk_seconds`, `emotion_changes`: as for
    `a2f_client.stream` (here 16 to 144 kHz; a file at another rate is resampled first).
    `url`: host:port (plaintext), grpc:// or grpcs:// (TLS; https:// and wss:// too). `fps`:
    the gateway's `--grpc_fps` (30, the NIM's, unless it was changed): time codes in seconds
    become frame indices at this rate. `emotions` and `emotion_strength` start the stream;
    `multipliers` / `offsets` by ARKit channel name go out as the NIM's blendshape parameters.
    `on_started(AceStarted)` before the first frame; `on_warning(text)` for each `Status`
    WARNING (parameters the server could not honour). `api_key` (default `$A2F_API_KEY`)
    travels as `authorization: Bearer` metadata; `ca_file` trusts a certificate, `insecure`
    trusts whichever one the server presents (gRPC cannot skip verification)."""
    audio = wire_audio(source, sample_rate, chunk_seconds, ACE_RATES)
    header = stream_header(audio.rate, emotions, emotion_strength, multipliers, offsets)
    credentials = Credentials.resolve(api_key, None, ca_file, insecure)
    target, tls = grpc_target(url)
    sender = _Sender(header, audio, realtime, emotion_changes)
    clock = FrameClock(Fraction(fps))
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        OWN_CONNECTION,
    ]
    if tls:
        channel = grpc.aio.secure_channel(
            target, await _channel_credentials(target, credentials), options
        )
    else:
        channel = grpc.aio.insecure_channel(target, options)
    metadata = [("authorization", f"Bearer {credentials.api_key}")] if credentials.api_key else []
    async with channel:
        stub = A2FControllerServiceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.ProcessAudioStream(sender.messages(), metadata=metadata)
        started = False
        try:
            async for message in call:
                part = message.WhichOneof("stream_part")
                if part == "animation_data_stream_header":
                    started = True
                    sender.started.set()
                    if on_started is not None:
                        on_started(_started(message, clock.fps))
                elif part == "animation_data":
                    for frame in frames_of(message, clock):
                        yield frame
                elif part == "status":
                    _status(message.status, on_warning)
        except grpc.aio.AioRpcError as exc:
            if sender.failure is not None:
                raise sender.failure from None
            raise rpc_error(exc, target, tls, started) from None
        finally:
            call.cancel()  # a caller that leaves early frees the server's slot at once
    if sender.failure is not None:
        raise sender.failure


def stream_sync(
    source: str | os.PathLike[str] | npt.NDArray[np.generic],
    url: str = DEFAULT_ACE_URL,
    **options: Any,
) -> Iterator[BlendshapeFrame]:
    """Blocking version of `stream` (same arguments) for scripts without an event loop."""
    return iterate_in_thread(lambda: stream(source, url, **options))


def nim_name(channel: str) -> str:
    """The NIM's spelling of an ARKit channel: `jawOpen` -> `JawOpen`."""
    return channel[:1].upper() + channel[1:]


def arkit_name(name: str) -> str:
    """The ARKit spelling of a NIM name: `JawOpen` -> `jawOpen`."""
    return name[:1].lower() + name[1:]


def rpc_error(exc: grpc.aio.AioRpcError, target: str, tls: bool, started: bool) -> A2FError:
    """The library's exception for a call that ended with a status other than OK."""
    code, details = exc.code(), exc.details() or ""
    retry_after = None
    for key, value in exc.trailing_metadata() or ():
        if key == RETRY_AFTER_KEY:
            retry_after = value
    if code == grpc.StatusCode.UNAVAILABLE and not started and _not_reached(details):
        return ServerUnavailableError(_unreachable(target, tls, details))
    kind = KIND_OF_STATUS.get(code, code.name.lower())
    if code in AUTH_STATUSES:
        return AuthError(details, kind)
    if retry_after is not None:
        # The status text carries the hint too: ServerError words it once, the library's way.
        details = details.removesuffix(f" (retry after {retry_after} s)")
        return ServerError(f"{code.name}: {details}", kind, float(retry_after))
    return ServerError(f"{code.name}: {details}", kind)


def _not_reached(details: str) -> bool:
    """gRPC's words for a call that never reached a server (the server's own UNAVAILABLE,
    a drain or a lost Triton, names its cause)."""
    return any(
        words in details
        for words in ("failed to connect", "Connection refused", "DNS resolution", "Ssl", "SSL")
    )


def _unreachable(target: str, tls: bool, details: str) -> str:
    if tls and "CERTIFICATE_VERIFY_FAILED" in details:
        return untrusted(f"grpcs://{target}", "certificate verify failed")
    return f"cannot connect to {target}: {details}"


async def _channel_credentials(target: str, credentials: Credentials) -> grpc.ChannelCredentials:
    root: bytes | None = None
    if credentials.insecure:
        host, _, port = target.rpartition(":")
        address = (host.strip("[]"), int(port))
        try:
            root = (await asyncio.to_thread(ssl.get_server_certificate, address)).encode()
        except OSError as exc:
            raise ServerUnavailableError(f"cannot connect to {target}: {exc}") from None
    elif credentials.ca_file is not None:
        try:
            root = Path(credentials.ca_file).read_bytes()
        except OSError as exc:
            path = os.fspath(credentials.ca_file)
            raise ValueError(f"cannot use CA file {path!r}: {exc}") from None
    return grpc.ssl_channel_credentials(root)


def stream_header(
    rate: int,
    emotions: Mapping[str, float] | None = None,
    emotion_strength: float | None = None,
    multipliers: Mapping[str, float] | None = None,
    offsets: Mapping[str, float] | None = None,
) -> AudioWithEmotionStream:
    """The first message of a call: PCM16 mono at `rate` and the stream's parameters."""
    header = AudioWithEmotionStreamHeader(
        audio_header=AudioHeader(
            audio_format=AudioHeader.AUDIO_FORMAT_PCM,
            channel_count=1,
            samples_per_second=rate,
            bits_per_sample=16,
        ),
        blendshape_params=BlendShapeParameters(
            bs_weight_multipliers={nim_name(c): v for c, v in (multipliers or {}).items()},
            bs_weight_offsets={nim_name(c): v for c, v in (offsets or {}).items()},
        ),
        emotion_params=EmotionParameters(beginning_emotion=dict(emotions or {})),
    )
    if emotion_strength is not None:
        header.emotion_post_processing_params.CopyFrom(
            EmotionPostProcessingParameters(emotion_strength=emotion_strength)
        )
    return AudioWithEmotionStream(audio_stream_header=header)


def audio_chunk(pcm: npt.NDArray[np.int16]) -> AudioWithEmotionStream:
    return AudioWithEmotionStream(
        audio_with_emotion=AudioWithEmotion(audio_buffer=pcm.astype("<i2").tobytes())
    )


END_OF_AUDIO = AudioWithEmotionStream(end_of_audio=AudioWithEmotionStream.EndOfAudio())


class _Sender:
    """The request stream: the header, then, once the server has answered it (`started`),
    the audio (paced or not) with the emotion changes as keyframes at their time, then
    `end_of_audio`. A source that fails to read is kept in `failure` (gRPC would report it as
    a cancelled call) and ends the requests.

    Audio waits for the answer: a call refused at once (a wrong key, a full server) while its
    client still writes ends, for grpcio's client, as INTERNAL "Internal error from Core"
    instead of the server's status."""

    def __init__(
        self,
        header: AudioWithEmotionStream,
        audio: WireAudio,
        realtime: bool,
        emotion_changes: Sequence[EmotionChange],
    ) -> None:
        self.header = header
        self.audio = audio
        self.realtime = realtime
        self.pending = sorted(emotion_changes, key=lambda change: change[0])
        self.failure: BaseException | None = None
        self.started = asyncio.Event()

    async def messages(self) -> AsyncIterator[AudioWithEmotionStream]:
        yield self.header
        await self.started.wait()
        loop = asyncio.get_running_loop()
        began, sent = loop.time(), 0
        try:
            async for pcm in self.audio.blocks:
                seconds = sent / self.audio.rate
                if self.realtime and not self.audio.live:
                    delay = began + seconds - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                keyframes = []
                end = (sent + pcm.size) / self.audio.rate
                while self.pending and self.pending[0][0] < end:
                    at, emotions = self.pending.pop(0)
                    keyframes.append(EmotionWithTimeCode(time_code=at, emotion=dict(emotions)))
                chunk = audio_chunk(pcm)
                chunk.audio_with_emotion.emotions.extend(keyframes)
                yield chunk
                sent += pcm.size
        except Exception as exc:
            self.failure = exc
            raise
        yield END_OF_AUDIO


def _started(message: A2F3DAnimationDataStream, fps: Fraction) -> AceStarted:
    header = message.animation_data_stream_header
    names = list(header.skel_animation_header.blend_shapes)
    rate = header.audio_header.samples_per_second
    return AceStarted([arkit_name(n) for n in names], names, rate, fps)


def frames_of(message: A2F3DAnimationDataStream, clock: FrameClock) -> Iterator[BlendshapeFrame]:
    """The frames of one `animation_data` (an audio-only one, the clip's tail, has none)."""
    for weights in message.animation_data.skel_animation.blend_shape_weights:
        exact = weights.time_code * clock.fps
        index = round(exact)
        if abs(exact - index) > TIME_CODE_TOLERANCE:
            raise ServerError(
                f"time code {weights.time_code} s is no frame at {clock.fps} fps: give the "
                "gateway's --grpc_fps (fps=, a2f stream --fps)",
                "protocol",
            )
        values = np.asarray(weights.values, dtype=np.float32)
        yield BlendshapeFrame(index, clock.timestamp(index), clock.timestamp(index + 1), values)


def _status(status: Status, on_warning: Callable[[str], None] | None) -> None:
    if status.code == Status.ERROR:
        raise ServerError(f"server error: {status.message}", "error")
    if status.code == Status.WARNING and on_warning is not None:
        on_warning(status.message)
