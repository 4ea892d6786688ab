"""NVIDIA's Audio2Face-3D gRPC API against a real gateway and Triton, with a client built only
from NVIDIA's PyPI packages (`nvidia-audio2face-3d`, `nvidia-ace`) and grpcio, written the way
NVIDIA's sample apps call the NIM: header, audio chunks with emotion keyframes, end of audio,
then read until the server ends the call (they never half-close and set no deadline).

Frame count rule: a clip of `n` samples at rate `r` gives every frame k whose time k/30 s lies
inside the audio after resampling to 16 kHz, ceil(m * 30 / 16000) frames for m = the 16 kHz
length (m = n at 16 kHz). Frame k has time code k/30 s and carries input samples
[floor(k r / 30), floor((k + 1) r / 30)), so the frames return the whole clip.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import soundfile
import soxr
from a2f_triton.gateway_process import GatewayProcess, run_gateway
from a2f_triton.launch import EmbeddedTriton
from a2f_triton.processes import free_port
from nvidia_ace.audio_pb2 import AudioHeader
from nvidia_ace.status_pb2 import Status
from nvidia_audio2face_3d.audio2face_pb2_grpc import A2FControllerServiceStub
from nvidia_audio2face_3d.messages_pb2 import (
    AudioWithEmotion,
    AudioWithEmotionStream,
    AudioWithEmotionStreamHeader,
    EmotionAggregate,
    EmotionWithTimeCode,
    EventType,
)

SERVICE = "nvidia_ace.services.a2f_controller.v1.A2FControllerService"
AGGREGATE_URL = "type.googleapis.com/nvidia_ace.emotion_aggregate.v1.EmotionAggregate"
# NVIDIA's 52 names, in the order of the comment on BlendShapeParameters in its protocol.
NIM_NAMES = [
    "EyeBlinkLeft",
    "EyeLookDownLeft",
    "EyeLookInLeft",
    "EyeLookOutLeft",
    "EyeLookUpLeft",
    "EyeSquintLeft",
    "EyeWideLeft",
    "EyeBlinkRight",
    "EyeLookDownRight",
    "EyeLookInRight",
    "EyeLookOutRight",
    "EyeLookUpRight",
    "EyeSquintRight",
    "EyeWideRight",
    "JawForward",
    "JawLeft",
    "JawRight",
    "JawOpen",
    "MouthClose",
    "MouthFunnel",
    "MouthPucker",
    "MouthLeft",
    "MouthRight",
    "MouthSmileLeft",
    "MouthSmileRight",
    "MouthFrownLeft",
    "MouthFrownRight",
    "MouthDimpleLeft",
    "MouthDimpleRight",
    "MouthStretchLeft",
    "MouthStretchRight",
    "MouthRollLower",
    "MouthRollUpper",
    "MouthShrugLower",
    "MouthShrugUpper",
    "MouthPressLeft",
    "MouthPressRight",
    "MouthLowerDownLeft",
    "MouthLowerDownRight",
    "MouthUpperUpLeft",
    "MouthUpperUpRight",
    "BrowDownLeft",
    "BrowDownRight",
    "BrowInnerUp",
    "BrowOuterUpLeft",
    "BrowOuterUpRight",
    "CheekPuff",
    "CheekSquintLeft",
    "CheekSquintRight",
    "NoseSneerLeft",
    "NoseSneerRight",
    "TongueOut",
]
FPS = 30


@dataclass
class Reply:
    """Everything one call returned."""

    names: list[str] = field(default_factory=list)
    audio_header: AudioHeader | None = None
    times: list[float] = field(default_factory=list)
    weights: list[list[float]] = field(default_factory=list)
    audio: bytes = b""
    aggregates: list[Any] = field(default_factory=list)  # (type URL, EmotionAggregate)
    statuses: list[tuple[int, str]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # stream_part of every message, in order
    code: grpc.StatusCode | None = None
    details: str = ""
    trailing: dict[str, str] = field(default_factory=dict)


def header(rate: int, **fields: Any) -> AudioWithEmotionStream:
    audio = AudioHeader(
        audio_format=AudioHeader.AUDIO_FORMAT_PCM,
        channel_count=fields.pop("channel_count", 1),
        samples_per_second=rate,
        bits_per_sample=fields.pop("bits_per_sample", 16),
    )
    return AudioWithEmotionStream(
        audio_stream_header=AudioWithEmotionStreamHeader(audio_header=audio, **fields)
    )


def chunk(pcm: np.ndarray, keyframes: Sequence[EmotionWithTimeCode] = ()) -> AudioWithEmotionStream:
    return AudioWithEmotionStream(
        audio_with_emotion=AudioWithEmotion(
            audio_buffer=pcm.astype("<i2").tobytes(), emotions=list(keyframes)
        )
    )


END = AudioWithEmotionStream(end_of_audio=AudioWithEmotionStream.EndOfAudio())


def clip(
    pcm: np.ndarray, rate: int, keyframes: Sequence[EmotionWithTimeCode] = (), **fields: Any
) -> list[AudioWithEmotionStream]:
    """As NVIDIA's sample sends a file: the header, one second per chunk (keyframes with the
    first), the end of audio."""
    chunks = [chunk(pcm[i : i + rate]) for i in range(0, pcm.size, rate)]
    chunks[0] = chunk(pcm[:rate], keyframes)
    return [header(rate, **fields), *chunks, END]


async def call(
    target: str,
    messages: Sequence[AudioWithEmotionStream],
    metadata: Sequence[tuple[str, str]] = (),
    pause_s: float = 0.0,
) -> Reply:
    """Write `messages` (never half-closing), read until the server ends the call."""
    reply = Reply()
    async with grpc.aio.insecure_channel(target) as channel:
        stream = A2FControllerServiceStub(channel).ProcessAudioStream(metadata=tuple(metadata))

        async def write() -> None:
            for message in messages:
                await stream.write(message)
                if pause_s:
                    await asyncio.sleep(pause_s)

        writer = asyncio.create_task(write())
        try:
            while (message := await stream.read()) != grpc.aio.EOF:
                read(message, reply)
        except grpc.aio.AioRpcError:
            pass
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        reply.code = await stream.code()
        reply.details = await stream.details() or ""
        reply.trailing = {k: v for k, v in (await stream.trailing_metadata() or ())}
    return reply


def read(message: Any, reply: Reply) -> None:
    part = message.WhichOneof("stream_part")
    reply.kinds.append(part)
    if part == "animation_data_stream_header":
        head = message.animation_data_stream_header
        reply.names = list(head.skel_animation_header.blend_shapes)
        reply.audio_header = head.audio_header
    elif part == "animation_data":
        data = message.animation_data
        for frame in data.skel_animation.blend_shape_weights:
            reply.times.append(frame.time_code)
            reply.weights.append(list(frame.values))
        reply.audio += data.audio.audio_buffer
        if "emotion_aggregate" in data.metadata:
            packed = data.metadata["emotion_aggregate"]
            aggregate = EmotionAggregate()
            aggregate.ParseFromString(packed.value)
            reply.aggregates.append((packed.type_url, aggregate))
    elif part == "status":
        reply.statuses.append((message.status.code, message.status.message))
    elif part == "event":
        assert message.event.event_type == EventType.END_OF_A2F_AUDIO_PROCESSING


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ace_gateway(
    triton: EmbeddedTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway serving both protocols at 30 fps (so their frames can be compared)."""
    log = tmp_path_factory.mktemp("ace") / "gateway.log"
    flags = ("--fps", "30", "--busy_latency_ms", "0", "--fair_latency_ms", "0")
    with run_gateway(triton.grpc_url, *flags, grpc_port=free_port(), log=log) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def speech(fixtures_dir: Path) -> np.ndarray:
    pcm, rate = soundfile.read(fixtures_dir / "speech_16k.wav", dtype="int16")
    assert rate == 16_000
    return pcm[: 3 * rate]


def resampled(pcm: np.ndarray, rate: int) -> np.ndarray:
    floats = soxr.resample(pcm.astype(np.float32) / 32768, 16_000, rate)
    return np.clip(np.round(floats * 32768), -32768, 32767).astype(np.int16)


# -- the stream --------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_a_clip_gives_named_frames_its_audio_and_the_end(
    rate: int, speech: np.ndarray, ace_gateway: GatewayProcess
) -> None:
    pcm = speech if rate == 16_000 else resampled(speech, rate)
    reply = run(call(ace_gateway.grpc, clip(pcm, rate)))
    assert reply.code == grpc.StatusCode.OK, reply.details
    assert reply.kinds[0] == "animation_data_stream_header"
    assert reply.names == NIM_NAMES
    assert reply.audio_header.samples_per_second == rate
    assert reply.audio_header.bits_per_sample == 16 and reply.audio_header.channel_count == 1
    at_16k = (
        pcm.size
        if rate == 16_000
        else soxr.resample(np.zeros(pcm.size, np.float32), rate, 16_000).size
    )
    assert len(reply.times) == math.ceil(at_16k * FPS / 16_000)
    assert reply.times == pytest.approx([k / FPS for k in range(len(reply.times))], abs=1e-9)
    assert all(len(row) == 52 for row in reply.weights)
    assert reply.audio == pcm.astype("<i2").tobytes()
    assert reply.kinds[-2:] == ["event", "status"]
    assert reply.statuses[-1][0] == Status.SUCCESS
    assert all(url == AGGREGATE_URL for url, _ in reply.aggregates)
    assert len(reply.aggregates) == len(reply.times)
