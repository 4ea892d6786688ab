"""What the gRPC driver sends, as NVIDIA's message classes, and its errors as gRPC statuses.

The classes come from NVIDIA's PyPI packages (`nvidia-audio2face-3d`, `nvidia-ace`); nothing
here defines a message. One deliberate difference from those packages: the `emotion_aggregate`
metadata is packed under the type URL NVIDIA's sample clients unpack
(`nvidia_ace.emotion_aggregate.v1.EmotionAggregate`, the NIM's own proto package), not under
the packages' `com.nvidia...` name, which those clients would skip.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import grpc
import numpy as np
import numpy.typing as npt
from nvidia_ace.animation_pb2 import (
    AnimationData,
    AudioWithTimeCode,
    SkelAnimationHeader,
)
from nvidia_ace.audio_pb2 import AudioHeader
from nvidia_ace.status_pb2 import Status
from nvidia_audio2face_3d.messages_pb2 import (
    A2F3DAnimationDataStream,
    A2F3DAnimationDataStreamHeader,
    EmotionAggregate,
    EmotionWithTimeCode,
    Event,
    EventType,
)

from a2f_protocol.messages import SHUTTING_DOWN
from gateway.drivers.ace_params import BITS_PER_SAMPLE

SERVICE_NAME = "nvidia_ace.services.a2f_controller.v1.A2FControllerService"
EMOTION_AGGREGATE_URL = "type.googleapis.com/nvidia_ace.emotion_aggregate.v1.EmotionAggregate"
EMOTION_AGGREGATE_KEY = "emotion_aggregate"
RETRY_AFTER_KEY = "retry-after-s"  # trailing metadata of RESOURCE_EXHAUSTED: seconds, as text

# The protocol's error kinds (`Error.code`, auth failures) as the gRPC status a NIM client
# expects; every other kind is a request the client got wrong (INVALID_ARGUMENT).
STATUS_OF_KIND: Mapping[str, grpc.StatusCode] = {
    "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "quota": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,  # as gRPC's own message size limit
    "too_slow": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unauthorized": grpc.StatusCode.UNAUTHENTICATED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "idle_timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "inference": grpc.StatusCode.UNAVAILABLE,
    SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
}


def status_of(kind: str | None) -> grpc.StatusCode:
    return STATUS_OF_KIND.get(kind or "", grpc.StatusCode.INVALID_ARGUMENT)


def status_details(
    message: str, retry_after_s: float | None
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The status text and trailing metadata of a refusal, with its retry hint in both."""
    if retry_after_s is None:
        return message, ()
    hint = f"{retry_after_s:.3g}"
    return f"{message} (retry after {hint} s)", ((RETRY_AFTER_KEY, hint),)


def stream_header(sample_rate: int, names: Sequence[str]) -> A2F3DAnimationDataStream:
    """The first message out: the returned audio's format, the blendshape names, the start."""
    return A2F3DAnimationDataStream(
        animation_data_stream_header=A2F3DAnimationDataStreamHeader(
            audio_header=audio_header(sample_rate),
            skel_animation_header=SkelAnimationHeader(blend_shapes=list(names)),
            start_time_code_since_epoch=time.time(),
        )
    )


def audio_header(sample_rate: int) -> AudioHeader:
    return AudioHeader(
        audio_format=AudioHeader.AUDIO_FORMAT_PCM,
        channel_count=1,
        samples_per_second=sample_rate,
        bits_per_sample=BITS_PER_SAMPLE,
    )


class AnimationFrames:
    """One stream's frames as NVIDIA's messages: each frame's weights, the audio it covers and
    the emotions behind it (those the client gave that take effect at this frame, and the
    emotion the frame was made with).

    Every frame is written into the same message, which `frame` returns: grpc.aio serialises
    a message when `write` is called, and the driver awaits each write before it asks for the
    next frame. Building the nest and its emotion map anew for every frame cost 14.6 us a
    frame against 3.3 on the 2-core development host, on the event loop's thread.
    """

    def __init__(self) -> None:
        self._message = A2F3DAnimationDataStream()
        data = self._message.animation_data
        self._weights = data.skel_animation.blend_shape_weights.add()
        self._audio = data.audio
        self._metadata = data.metadata[EMOTION_AGGREGATE_KEY]
        self._metadata.type_url = EMOTION_AGGREGATE_URL
        self._aggregate = EmotionAggregate()
        self._smoothed = self._aggregate.a2f_smoothed_output.add()
        self._emotions: dict[str, float] = {}

    def frame(
        self,
        time_code: float,
        weights: npt.NDArray[np.float32],
        audio: bytes,
        inputs: Iterable[EmotionWithTimeCode],
        emotions: Mapping[str, float],
    ) -> A2F3DAnimationDataStream:
        if emotions != self._emotions:
            self._emotions = dict(emotions)
            self._smoothed.emotion.clear()
            self._smoothed.emotion.update(self._emotions)
        self._smoothed.time_code = time_code
        del self._aggregate.input_emotions[:]
        self._aggregate.input_emotions.extend(inputs)
        self._metadata.value = self._aggregate.SerializeToString()
        self._weights.time_code = time_code
        self._weights.values[:] = weights.tolist()
        self._audio.time_code = time_code
        self._audio.audio_buffer = audio
        return self._message


def trailing_audio(time_code: float, audio: bytes) -> A2F3DAnimationDataStream:
    """Audio past the last frame's span (a resampled clip can end inside it): returned too."""
    return A2F3DAnimationDataStream(
        animation_data=AnimationData(
            audio=AudioWithTimeCode(time_code=time_code, audio_buffer=audio)
        )
    )


def status(code: int, message: str) -> A2F3DAnimationDataStream:
    return A2F3DAnimationDataStream(status=Status(code=code, message=message))  # type: ignore[arg-type]


def warning(message: str) -> A2F3DAnimationDataStream:
    return status(Status.WARNING, message)


def end_of_processing() -> list[A2F3DAnimationDataStream]:
    """The NIM's last two messages: the end event, then SUCCESS."""
    return [
        A2F3DAnimationDataStream(event=Event(event_type=EventType.END_OF_A2F_AUDIO_PROCESSING)),
        status(Status.SUCCESS, "Audio processing completed"),
    ]
