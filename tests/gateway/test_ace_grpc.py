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
import contextlib
import itertools
import json
import math
import re
import signal
import threading
import time
import urllib.request
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
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from litestar.testing import TestClient
from nvidia_ace.audio_pb2 import AudioHeader
from nvidia_ace.status_pb2 import Status
from nvidia_audio2face_3d.audio2face_pb2_grpc import A2FControllerServiceStub
from nvidia_audio2face_3d.messages_pb2 import (
    AudioWithEmotion,
    AudioWithEmotionStream,
    AudioWithEmotionStreamHeader,
    BlendShapeParameters,
    EmotionAggregate,
    EmotionParameters,
    EmotionPostProcessingParameters,
    EmotionWithTimeCode,
    EventType,
    FaceParameters,
)
from websockets.asyncio.client import connect

from a2f_protocol.frames import pack_push_audio, unpack_frame
from gateway.settings import Settings
from gateway.tenancy.cli import main as tenants_cli
from gateway.web.app import create_app
from tests.conftest import listed_sessions
from tests.gateway.test_tenants import add_key

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
    credentials: grpc.ChannelCredentials | None = None,
    hold_open: bool = True,
    own_connection: bool = False,
) -> Reply:
    """Write `messages` (never half-closing unless `hold_open` is false), read until the
    server ends the call (over TLS with `credentials`; on a connection of its own, as a new
    client process makes, with `own_connection`: grpc shares one between equal channels).

    The blocking client: grpc.aio's overwrites the server's status with INTERNAL when one of
    its writes loses a race with that status (grpc/grpc#36066), which a refused call invites.
    """
    return await asyncio.to_thread(
        call_blocking, target, messages, metadata, pause_s, credentials, hold_open, own_connection
    )


def call_blocking(
    target: str,
    messages: Sequence[AudioWithEmotionStream],
    metadata: Sequence[tuple[str, str]],
    pause_s: float,
    credentials: grpc.ChannelCredentials | None,
    hold_open: bool,
    own_connection: bool = False,
) -> Reply:
    reply = Reply()
    ended = threading.Event()

    def requests() -> Iterator[AudioWithEmotionStream]:
        for message in messages:
            yield message
            time.sleep(pause_s)
        if hold_open:  # as NVIDIA's samples: the client never closes its side
            ended.wait()

    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
    channel = (
        grpc.insecure_channel(target, options)
        if credentials is None
        else grpc.secure_channel(target, credentials, options)
    )
    with channel:
        stream = A2FControllerServiceStub(channel).ProcessAudioStream(
            requests(), metadata=tuple(metadata)
        )
        try:
            for message in stream:
                read(message, reply)
        except grpc.RpcError:
            pass
        finally:
            ended.set()
        reply.code = stream.code()
        reply.details = stream.details() or ""
        reply.trailing = dict(stream.trailing_metadata() or ())
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


def test_weights_equal_the_websockets_for_the_same_audio_and_parameters(
    speech: np.ndarray, ace_gateway: GatewayProcess
) -> None:
    blendshapes = BlendShapeParameters(
        bs_weight_multipliers={"JawOpen": 1.5, "MouthSmileLeft": 0.5},
        bs_weight_offsets={"BrowInnerUp": 0.1},
    )
    reply = run(
        call(
            ace_gateway.grpc,
            clip(
                speech,
                16_000,
                blendshape_params=blendshapes,
                emotion_params=EmotionParameters(beginning_emotion={"joy": 0.5}),
                emotion_post_processing_params=EmotionPostProcessingParameters(
                    emotion_strength=0.8
                ),
            ),
        )
    )
    assert reply.code == grpc.StatusCode.OK, reply.details
    start = {
        "type": "StartSession",
        "emotions": {"joy": 0.5},
        "emotion_strength": 0.8,
        "postprocess": {
            "multipliers": {"jawOpen": 1.5, "mouthSmileLeft": 0.5},
            "offsets": {"browInnerUp": 0.1},
        },
    }
    frames = run(websocket_frames(ace_gateway.url, start, speech))
    assert len(frames) == len(reply.weights)
    assert np.allclose(np.array(reply.weights), frames, atol=1e-5)


async def websocket_frames(url: str, start: dict[str, Any], pcm: np.ndarray) -> np.ndarray:
    """The same clip through the WebSocket protocol: its frames' weights."""
    rows = []
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps(start))
        assert json.loads(await ws.recv())["type"] == "SessionStarted"
        await ws.send(pack_push_audio(0, pcm))
        await ws.send(json.dumps({"type": "EndSession"}))
        while isinstance(message := await ws.recv(), bytes):
            rows.append(unpack_frame(message).weights)
        assert json.loads(message)["type"] == "SessionEnded"
    return np.array(rows)


def test_an_emotion_keyframe_changes_the_weights_from_its_time_code_on(
    speech: np.ndarray, ace_gateway: GatewayProcess
) -> None:
    joy = EmotionWithTimeCode(time_code=1.0, emotion={"joy": 1.0})
    plain = run(call(ace_gateway.grpc, clip(speech, 16_000)))
    keyed = run(call(ace_gateway.grpc, clip(speech, 16_000, [joy])))
    before, after = np.array(plain.weights), np.array(keyed.weights)
    first = FPS  # the frame at 1.0 s
    assert np.allclose(before[:first], after[:first], atol=1e-6)
    smile = NIM_NAMES.index("MouthSmileLeft")
    assert np.all(after[first:, smile] > before[first:, smile] + 0.1)
    given = [(i, list(a.input_emotions)) for i, (_, a) in enumerate(keyed.aggregates)]
    assert [i for i, inputs in given if inputs] == [first]
    assert dict(keyed.aggregates[first][1].a2f_smoothed_output[0].emotion) == {"joy": 1.0}
    assert not keyed.aggregates[first - 1][1].a2f_smoothed_output[0].emotion


def test_parameters_without_meaning_here_are_named_in_a_warning(
    speech: np.ndarray, ace_gateway: GatewayProcess
) -> None:
    reply = run(
        call(
            ace_gateway.grpc,
            clip(
                speech[:16_000],
                16_000,
                face_params=FaceParameters(
                    float_params={"faceMaskLevel": 0.6, "skinStrength": 1.1}
                ),
                blendshape_params=BlendShapeParameters(bs_weight_multipliers={"TongueTipUp": 1.0}),
                emotion_post_processing_params=EmotionPostProcessingParameters(live_blend_coef=0.7),
            ),
        )
    )
    assert reply.code == grpc.StatusCode.OK, reply.details
    warnings = " ".join(text for code, text in reply.statuses if code == Status.WARNING)
    for name in ("faceMaskLevel", "TongueTipUp", "live_blend_coef"):
        assert name in warnings
    assert "skinStrength" not in warnings
    assert reply.kinds[1] == "status"  # right after the header


# -- errors ------------------------------------------------------------------------------------

PCM = np.zeros(1600, np.int16)
BAD_STREAMS = {
    "audio before the header": [chunk(PCM)],
    "a second header": [header(16_000), header(16_000)],
    "8-bit audio": [header(16_000, bits_per_sample=8)],
    "stereo": [header(16_000, channel_count=2)],
    "8 kHz": [header(8_000)],
    "half a sample": [
        header(16_000),
        AudioWithEmotionStream(audio_with_emotion=AudioWithEmotion(audio_buffer=b"\0\0\0")),
    ],
    "an unknown emotion": [
        header(16_000),
        chunk(PCM, [EmotionWithTimeCode(time_code=0.0, emotion={"boredom": 1.0})]),
    ],
    "a negative time code": [
        header(16_000),
        chunk(PCM, [EmotionWithTimeCode(time_code=-1.0, emotion={"joy": 1.0})]),
    ],
}


@pytest.mark.parametrize("name", BAD_STREAMS)
def test_a_bad_stream_is_an_invalid_argument(name: str, ace_gateway: GatewayProcess) -> None:
    reply = run(call(ace_gateway.grpc, BAD_STREAMS[name]))
    assert reply.code == grpc.StatusCode.INVALID_ARGUMENT, (reply.code, reply.details)
    assert reply.details


def test_an_oversized_chunk_is_resource_exhausted(ace_gateway: GatewayProcess) -> None:
    big = np.zeros(3 * 1024 * 1024, np.int16)  # 6 MiB
    reply = run(call(ace_gateway.grpc, [header(16_000), chunk(big)]))
    assert reply.code == grpc.StatusCode.RESOURCE_EXHAUSTED, reply.details


def test_health_and_reflection_answer(ace_gateway: GatewayProcess) -> None:
    async def ask() -> tuple[list[int], list[str]]:
        async with grpc.aio.insecure_channel(ace_gateway.grpc) as channel:
            checks = health_pb2_grpc.HealthStub(channel)
            statuses = [
                (await checks.Check(health_pb2.HealthCheckRequest(service=name))).status
                for name in ("", SERVICE)
            ]
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            services = []
            async for answer in stub.ServerReflectionInfo(iter([request])):
                services += [s.name for s in answer.list_services_response.service]
            return statuses, services

    statuses, services = run(ask())
    assert statuses == [health_pb2.HealthCheckResponse.SERVING] * 2
    assert SERVICE in services and "grpc.health.v1.Health" in services


def test_health_is_not_serving_while_no_triton_endpoint_can(tmp_path: Path) -> None:
    """gRPC health answers as /ready does (a readiness probe for both protocols)."""
    port, unreachable = free_port(), free_port()  # nobody listens on the second
    settings = Settings(triton_urls=[f"127.0.0.1:{unreachable}"], grpc_port=port)
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").status_code == 503
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            checks = health_pb2_grpc.HealthStub(channel)
            statuses = [
                checks.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
                for name in ("", SERVICE)
            ]
    assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING] * 2


# -- tenants -----------------------------------------------------------------------------------


@dataclass
class Tenants:
    gateway: GatewayProcess
    path: Path
    key: str
    other: str  # another tenant's key, held to one session
    basic: str  # a key of a tenant without the postprocess extension


@pytest.fixture(scope="module")
def tenants(triton: EmbeddedTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    folder = tmp_path_factory.mktemp("ace-tenants")
    path = folder / "tenants.toml"
    _, key = add_key(path, "acme")
    _, other = add_key(path, "solo", "--max-sessions", "1")
    _, basic = add_key(path, "basic", "--extensions", "emotions")
    flags = (
        "--tenants_file", str(path), "--tenants_reload_s", "0.2", "--idle_timeout_s", "1.5",
        "--max_sessions", "2",
        "--busy_latency_ms", "0", "--fair_latency_ms", "0",
    )  # fmt: skip
    log = folder / "gateway.log"
    with run_gateway(triton.grpc_url, *flags, grpc_port=free_port(), log=log) as gateway:
        yield Tenants(gateway, path, key, other, basic)


def bearer(key: str) -> list[tuple[str, str]]:
    """gRPC metadata with `key`, as NVIDIA's hosted API is called."""
    return [("authorization", f"Bearer {key}")]


def test_a_key_is_needed_and_checked(speech: np.ndarray, tenants: Tenants) -> None:
    target = tenants.gateway.grpc
    messages = clip(speech[:16_000], 16_000)
    assert run(call(target, messages)).code == grpc.StatusCode.UNAUTHENTICATED
    wrong = run(call(target, messages, bearer("a2f_not-a-key")))
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED
    assert run(call(target, messages, bearer(tenants.key))).code == grpc.StatusCode.OK


def test_a_session_quota_is_resource_exhausted(speech: np.ndarray, tenants: Tenants) -> None:
    async def two() -> tuple[Reply, Reply]:
        slow = [header(16_000), *(chunk(speech[i : i + 1600]) for i in range(0, 32_000, 1600)), END]
        first = asyncio.create_task(call(tenants.gateway.grpc, slow, bearer(tenants.other), 0.1))
        await asyncio.sleep(0.5)
        second = await call(
            tenants.gateway.grpc, clip(speech[:1600], 16_000), bearer(tenants.other)
        )
        return await first, second

    first, second = run(two())
    assert first.code == grpc.StatusCode.OK, first.details
    assert second.code == grpc.StatusCode.RESOURCE_EXHAUSTED, second.details
    assert "retry-after-s" in second.trailing


def test_a_stream_silent_past_the_idle_timeout_is_deadline_exceeded(tenants: Tenants) -> None:
    async def silent() -> Reply:
        reply = Reply()
        async with grpc.aio.insecure_channel(tenants.gateway.grpc) as channel:
            stream = A2FControllerServiceStub(channel).ProcessAudioStream(
                metadata=tuple(bearer(tenants.key))
            )
            await stream.write(header(16_000))
            with contextlib.suppress(grpc.aio.AioRpcError):
                while (message := await stream.read()) != grpc.aio.EOF:
                    read(message, reply)
            reply.code = await stream.code()
        return reply

    assert run(silent()).code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_key_revoked_mid_stream_ends_it(speech: np.ndarray, tenants: Tenants) -> None:
    key_id, key = add_key(tenants.path, "doomed")  # a tenant of its own: no other call ends

    async def revoked() -> Reply:
        long = [header(16_000), *(chunk(speech[i : i + 1600]) for i in range(0, 48_000, 1600)), END]
        streaming = asyncio.create_task(call(tenants.gateway.grpc, long, bearer(key), 0.1))
        await asyncio.sleep(0.5)
        tenants_cli(["revoke", str(tenants.path), key_id])
        return await streaming

    reply = run(revoked())
    assert reply.code == grpc.StatusCode.UNAUTHENTICATED, reply.details
    assert "revoked" in reply.details


def test_a_forbidden_extension_is_permission_denied(speech: np.ndarray, tenants: Tenants) -> None:
    plain = clip(speech[:16_000], 16_000)
    assert run(call(tenants.gateway.grpc, plain, bearer(tenants.basic))).code == grpc.StatusCode.OK
    shaped = clip(
        speech[:16_000],
        16_000,
        blendshape_params=BlendShapeParameters(bs_weight_multipliers={"JawOpen": 2.0}),
    )
    reply = run(call(tenants.gateway.grpc, shaped, bearer(tenants.basic)))
    assert reply.code == grpc.StatusCode.PERMISSION_DENIED, reply.details
    assert "postprocess" in reply.details


# -- drain -------------------------------------------------------------------------------------


def test_a_drain_ends_streams_unavailable_and_health_says_not_serving(
    speech: np.ndarray, triton: EmbeddedTriton, tmp_path: Path
) -> None:
    flags = ("--drain_s", "1", "--busy_latency_ms", "0", "--fair_latency_ms", "0")
    port = free_port()
    with run_gateway(
        triton.grpc_url, *flags, grpc_port=port, log=tmp_path / "gateway.log"
    ) as gateway:
        target = gateway.grpc

        async def drained() -> tuple[Reply, int, Reply]:
            long = [
                header(16_000),
                *(chunk(speech[i : i + 1600]) for i in range(0, 48_000, 1600)),
                END,
            ]
            streaming = asyncio.create_task(call(target, long, (), 0.1))
            await asyncio.sleep(0.5)
            gateway.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with grpc.aio.insecure_channel(target) as channel:
                request = health_pb2.HealthCheckRequest(service=SERVICE)
                status = (await health_pb2_grpc.HealthStub(channel).Check(request)).status
            refused = await call(target, clip(speech[:1600], 16_000))
            return await streaming, status, refused

        stream, status, refused = run(drained())
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert refused.code == grpc.StatusCode.UNAVAILABLE
    assert stream.code == grpc.StatusCode.UNAVAILABLE, stream.details
    assert "shutting down" in stream.details
    assert stream.times  # it streamed until the grace period ended


# -- both protocols at once --------------------------------------------------------------------


def request_frames(http: str) -> tuple[float, float]:
    """The gateway's Triton requests so far: (frames, requests)."""
    with urllib.request.urlopen(f"{http}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = dict(re.findall(r"^a2f_triton_request_frames_(sum|count) (\S+)$", text, re.M))
    return float(values["sum"]), float(values["count"])


def test_grpc_streams_and_websocket_sessions_share_triton_requests(
    speech: np.ndarray, ace_gateway: GatewayProcess
) -> None:
    clip_pcm = speech[: 2 * 16_000]
    paced = [
        header(16_000),
        *(chunk(clip_pcm[i : i + 1600]) for i in range(0, clip_pcm.size, 1600)),
        END,
    ]

    async def websocket(pcm: np.ndarray) -> np.ndarray:
        await asyncio.sleep(0)
        rows = []
        async with connect(ace_gateway.url) as ws:
            await ws.send(json.dumps({"type": "StartSession"}))
            assert json.loads(await ws.recv())["type"] == "SessionStarted"

            async def push() -> None:
                for i in range(0, pcm.size, 1600):
                    await ws.send(pack_push_audio(i, pcm[i : i + 1600]))
                    await asyncio.sleep(0.1)
                await ws.send(json.dumps({"type": "EndSession"}))

            pushing = asyncio.create_task(push())
            while isinstance(message := await ws.recv(), bytes):
                rows.append(unpack_frame(message).weights)
            await pushing
        return np.array(rows)

    async def both() -> tuple[list[Reply], list[np.ndarray]]:
        streams = [call(ace_gateway.grpc, paced, (), 0.1) for _ in range(8)]
        sessions = [websocket(clip_pcm) for _ in range(8)]
        results = await asyncio.gather(*streams, *sessions)
        return list(results[:8]), list(results[8:])

    frames_before, requests_before = request_frames(ace_gateway.http)
    replies, sessions = run(both())
    frames_after, requests_after = request_frames(ace_gateway.http)
    expected = math.ceil(clip_pcm.size * FPS / 16_000)
    for reply in replies:
        assert reply.code == grpc.StatusCode.OK, reply.details
        assert len(reply.times) == expected
    for rows in sessions:
        assert len(rows) == expected
    # Same audio, same parameters, same frames, whichever protocol and whatever request.
    for reply, rows in zip(replies, sessions, strict=True):
        assert np.allclose(np.array(reply.weights), rows, atol=1e-5)
    frames = frames_after - frames_before
    assert frames == 16 * expected  # every frame of both protocols went through these requests
    print(f"mean Triton request: {frames / (requests_after - requests_before):.1f} frames")


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_with_client_certificates(
    speech: np.ndarray,
    triton: EmbeddedTriton,
    self_signed_certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """The certificate flags serve gRPC over TLS; `--ssl_client_ca` then requires a client
    certificate signed by it (here the self-signed one, its own CA)."""
    cert, key = self_signed_certificate
    flags = ("--ssl_certfile", str(cert), "--ssl_keyfile", str(key), "--ssl_client_ca", str(cert))
    root = cert.read_bytes()
    with run_gateway(
        triton.grpc_url, *flags, grpc_port=free_port(), log=tmp_path / "g.log"
    ) as gateway:
        messages = clip(speech[:16_000], 16_000)
        mutual = grpc.ssl_channel_credentials(root, key.read_bytes(), cert.read_bytes())
        reply = run(call(gateway.grpc, messages, credentials=mutual))
        assert reply.code == grpc.StatusCode.OK, reply.details
        assert len(reply.times) == FPS
        # Half-closing: a call refused before it reached the server would hold the blocking
        # client's request thread, and with it the call, forever.
        anonymous = run(
            call(
                gateway.grpc,
                messages,
                credentials=grpc.ssl_channel_credentials(root),
                hold_open=False,
            )
        )
        assert anonymous.code == grpc.StatusCode.UNAVAILABLE
        assert not anonymous.times


def test_a_full_host_is_resource_exhausted(speech: np.ndarray, tenants: Tenants) -> None:
    async def three() -> list[Reply]:
        slow = [header(16_000), *(chunk(speech[i : i + 1600]) for i in range(0, 24_000, 1600)), END]
        holding = [
            asyncio.create_task(call(tenants.gateway.grpc, slow, bearer(key), 0.1))
            for key in (tenants.key, tenants.basic)
        ]
        await asyncio.sleep(0.5)
        third = await call(tenants.gateway.grpc, clip(speech[:1600], 16_000), bearer(tenants.key))
        return [*(await asyncio.gather(*holding)), third]

    *held, third = run(three())
    assert [reply.code for reply in held] == [grpc.StatusCode.OK] * 2
    assert third.code == grpc.StatusCode.RESOURCE_EXHAUSTED, third.details
    assert "busy" in third.details.lower()


def test_a_cancelled_call_frees_its_slot_at_once(
    speech: np.ndarray, ace_gateway: GatewayProcess
) -> None:
    async def cancelled() -> tuple[int, float]:
        async with grpc.aio.insecure_channel(ace_gateway.grpc) as channel:
            stream = A2FControllerServiceStub(channel).ProcessAudioStream()
            await stream.write(header(16_000))
            await stream.write(chunk(speech[:16_000]))
            assert (await stream.read()).HasField("animation_data_stream_header")
            open_sessions = len(listed_sessions(ace_gateway.http))
            stream.cancel()
        cancelled_at = time.monotonic()
        while listed_sessions(ace_gateway.http):
            await asyncio.sleep(0.02)
        return open_sessions, time.monotonic() - cancelled_at

    open_sessions, freed_after_s = run(cancelled())
    assert open_sessions == 1
    assert freed_after_s < 2.0  # at once, give or take a loaded host


def test_workers_share_the_grpc_port(
    speech: np.ndarray, triton: EmbeddedTriton, tmp_path: Path
) -> None:
    flags = ("--workers", "2", "--busy_latency_ms", "0", "--fair_latency_ms", "0")
    with run_gateway(
        triton.grpc_url, *flags, grpc_port=free_port(), log=tmp_path / "g.log"
    ) as gateway:

        async def four() -> list[Reply]:
            messages = clip(speech[:16_000], 16_000)
            return list(await asyncio.gather(*(call(gateway.grpc, messages) for _ in range(4))))

        replies = run(four())
    assert [(reply.code, len(reply.times)) for reply in replies] == [(grpc.StatusCode.OK, FPS)] * 4


def test_a_client_that_stops_reading_frees_its_slot_and_learns_why_when_it_reads(
    speech: np.ndarray, triton: EmbeddedTriton, tmp_path: Path
) -> None:
    """It keeps sending audio but reads nothing: its frames fill HTTP/2's flow-control window
    and the gateway's writes stall; after `--send_timeout_s` the session ends and frees its
    slot, though the client still holds the call; reading again, it gets the frames written
    before and RESOURCE_EXHAUSTED, "client too slow". (It keeps sending because however wide
    grpc's window for it opens, audio without end fills it; a client that stopped sending
    too would be idle once the window took all its frames.)"""
    flags = ("--send_timeout_s", "1", "--busy_latency_ms", "0", "--fair_latency_ms", "0")
    seconds = [chunk(speech[i : i + 16_000]) for i in range(0, speech.size - 15_999, 16_000)]
    with run_gateway(
        triton.grpc_url, *flags, grpc_port=free_port(), log=tmp_path / "g.log"
    ) as gateway:

        async def unread() -> tuple[bool, int, int, grpc.StatusCode, str]:
            options = [("grpc.http2.bdp_probe", 0)]
            async with grpc.aio.insecure_channel(gateway.grpc, options=options) as channel:
                stream = A2FControllerServiceStub(channel).ProcessAudioStream()
                await stream.write(header(16_000))
                sent, freed, stopped = 0, False, False

                async def send() -> None:
                    # Not cancelled: cancelling a write cancels the call.
                    nonlocal sent
                    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                        for message in itertools.cycle(seconds):
                            if stopped:
                                return
                            await stream.write(message)
                            sent += 1

                sender = asyncio.create_task(send())
                started = False
                for _ in range(300):  # not reading, until the gateway lets go of the session
                    await asyncio.sleep(0.1)
                    listed = bool(listed_sessions(gateway.http))
                    started |= listed
                    if freed := started and not listed:
                        break
                stopped = True
                frames = 0
                with contextlib.suppress(grpc.aio.AioRpcError):
                    while (message := await stream.read()) != grpc.aio.EOF:
                        frames += message.HasField("animation_data")
                await sender
                return freed, frames, sent, await stream.code(), await stream.details()

        freed, frames, sent, code, details = run(unread())
    assert freed
    assert 0 < frames < sent * FPS
    assert (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "client too slow")
