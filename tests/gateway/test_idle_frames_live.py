"""Idle frames end to end: real Triton, a real gateway, a WebSocket and an ACE gRPC client.

A session with the extension on gets frames while it sends no audio, then its speech frames
follow on (contiguous indices and timestamps), and the stream ends as usual.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile
from a2f_triton.gateway_process import GatewayProcess
from a2f_triton.processes import free_port
from nvidia_audio2face_3d.messages_pb2 import AudioWithEmotionStreamHeader, FaceParameters
from websockets.asyncio.client import connect

from a2f_protocol.frames import BlendshapeFrame, pack_push_audio, unpack_frame
from a2f_protocol.messages import ProtocolError
from gateway.drivers.ace_params import IDLE_FRAMES, stream_setup
from gateway.model_info import ModelInfo
from tests.gateway.test_ace_grpc import END, call, chunk, header

FPS = 30
RATE = 16_000
PAUSE_S = 1.5
MODEL = ModelInfo.load(Path(__file__).resolve().parents[2] / "model_repository")


@pytest.fixture(scope="module")
def idle_gateway(start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    """Both protocols at 30 fps."""
    return start_gateway("--fps", str(FPS), grpc_port=free_port())


@pytest.fixture(scope="module")
def speech(fixtures_dir: Path) -> np.ndarray:
    pcm, rate = soundfile.read(fixtures_dir / "speech_16k.wav", dtype="int16")
    assert rate == RATE
    return pcm[: 2 * RATE]


async def pause_then_speak(url: str, speech: np.ndarray) -> tuple[list[object], int]:
    """Everything received; how many frames came before the first audio was sent."""
    received: list[object] = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "StartSession", "idle": True}))
        started = json.loads(await ws.recv())
        assert started["type"] == "SessionStarted", started
        began = time.monotonic()

        async def read() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    received.append(unpack_frame(message))
                    continue
                received.append(json.loads(message))
                if received[-1]["type"] == "SessionEnded":
                    return

        reader = asyncio.create_task(read())
        await asyncio.sleep(PAUSE_S)
        before = sum(isinstance(m, BlendshapeFrame) for m in received)
        # Speech from the real-time index on, paced in 100 ms chunks as a microphone sends it.
        start = round((time.monotonic() - began) * RATE)
        for offset in range(0, speech.size, RATE // 10):
            await ws.send(pack_push_audio(start + offset, speech[offset : offset + RATE // 10]))
            await asyncio.sleep(0.1)
        await ws.send(json.dumps({"type": "EndSession"}))
        await asyncio.wait_for(reader, 30)
    return received, before


def test_idle_frames_arrive_then_speech_frames_continue(
    idle_gateway: GatewayProcess, speech: np.ndarray
) -> None:
    received, before = asyncio.run(pause_then_speak(idle_gateway.url, speech))
    errors = [m for m in received if isinstance(m, dict) and m["type"] == "Error"]
    assert errors == []
    frames = [m for m in received if isinstance(m, BlendshapeFrame)]
    # About PAUSE_S less the pause's latency (0.25 s and a window's lookahead) of frames.
    assert before >= 15, before
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    assert all(a.timestamp_next == b.timestamp_current for a, b in itertools.pairwise(frames))
    assert len(frames) >= before + speech.size * FPS // RATE
    jaw = np.array([f.weights[17] for f in frames])  # jawOpen (the arkit preset's order)
    assert jaw[:before].max() < 0.1  # breathing, not speech
    assert jaw[before:].max() > jaw[:before].max() + 0.1  # the speech moves the mouth


def test_an_ace_stream_with_idle_frames_has_frames_through_its_pauses(
    idle_gateway: GatewayProcess, speech: np.ndarray
) -> None:
    face = FaceParameters(integer_params={IDLE_FRAMES: 1})
    second = speech[:RATE]
    # The header, a pause, a second of speech, a pause, the end.
    messages = [header(RATE, face_params=face), chunk(second), END]
    reply = asyncio.run(call(idle_gateway.grpc, messages, pause_s=PAUSE_S))
    assert reply.code == grpc.StatusCode.OK, reply.details
    times = np.array(reply.times)
    assert np.allclose(times, np.arange(times.size) / FPS)  # every frame, in order
    assert times.size >= FPS + 2 * 15  # the speech's and two pauses'
    assert reply.audio == second.astype("<i2").tobytes()  # its audio, once, in order


def ace_header(**integers: int) -> AudioWithEmotionStreamHeader:
    audio = header(RATE).audio_stream_header.audio_header
    face = FaceParameters(integer_params=integers)
    return AudioWithEmotionStreamHeader(audio_header=audio, face_params=face)


def test_the_ace_switch_is_a_face_parameter_of_zero_or_one() -> None:
    assert stream_setup(ace_header(), MODEL, Fraction(FPS)).start.idle is False
    assert stream_setup(ace_header(**{IDLE_FRAMES: 0}), MODEL, Fraction(FPS)).start.idle is False
    on = stream_setup(ace_header(**{IDLE_FRAMES: 1}), MODEL, Fraction(FPS))
    assert on.start.idle is True and on.warnings == ()  # ours: no "not known here"
    with pytest.raises(ProtocolError, match=IDLE_FRAMES):
        stream_setup(ace_header(**{IDLE_FRAMES: 2}), MODEL, Fraction(FPS))
