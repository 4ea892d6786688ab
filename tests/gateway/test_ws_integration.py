"""End to end: real Triton, the real gateway (`python -m gateway`), a real WebSocket client.

Expected weights come from running the same windows through the `a2f` ensemble directly (and,
for neutral parameters, through the ONNX model with onnxruntime); blinks are switched off
where raw weights are compared and tested on their own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import soundfile
import soxr
import tritonclient.grpc as grpcclient
import websockets
from a2f_triton.repository import NETWORK_WEIGHTS, network_directory
from litestar.testing import TestClient
from websockets.asyncio.client import ClientConnection, connect

from a2f_protocol.clock import FrameClock
from a2f_protocol.frames import BlendshapeFrame, pack_push_audio, unpack_frame
from gateway.model_info import ModelInfo
from gateway.session.animation import Animator
from gateway.settings import Settings
from gateway.web.app import create_app

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = ModelInfo.load(PROJECT_ROOT / "model_repository")
WINDOW, OFFSET = MODEL.window, MODEL.offset
NTSC = Fraction(30000, 1001)
NO_BLINKS = {"type": "StartSession", "blinks": False}


@pytest.fixture(scope="module")
def speech(fixtures_dir: Path) -> np.ndarray:
    pcm, rate = soundfile.read(fixtures_dir / "speech_16k.wav", dtype="int16")
    assert rate == 16000 and pcm.ndim == 1
    return pcm


# -- reference computation -------------------------------------------------------------------


def windows_of(audio: np.ndarray, clock: FrameClock, frames: int) -> np.ndarray:
    """Frame windows cut from the whole signal (silence before 0 and after the end)."""
    signal = np.concatenate([np.zeros(OFFSET), audio / 32768.0, np.zeros(WINDOW)]).astype(
        np.float32
    )
    return np.stack(
        [signal[clock.timestamp(k) : clock.timestamp(k) + WINDOW] for k in range(frames)]
    )


def ensemble(grpc_url: str, windows: np.ndarray, **params: np.ndarray) -> np.ndarray:
    """[frames, 52 + 15] straight from the `a2f` ensemble."""
    client = grpcclient.InferenceServerClient(grpc_url)
    parts = []
    for start in range(0, len(windows), 512):
        chunk = windows[start : start + 512]
        inputs = [grpcclient.InferInput("AUDIO", list(chunk.shape), "FP32")]
        inputs[0].set_data_from_numpy(chunk)
        for name, row in params.items():
            tiled = np.tile(row.astype(np.float32), (len(chunk), 1))
            inputs.append(grpcclient.InferInput(name, list(tiled.shape), "FP32"))
            inputs[-1].set_data_from_numpy(tiled)
        result = client.infer("a2f", inputs)
        parts.append(
            np.concatenate([result.as_numpy("BLENDSHAPES"), result.as_numpy("VISEMES")], 1)
        )
    return np.concatenate(parts)


def onnx_model(windows: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        str(network_directory(PROJECT_ROOT / "model_repository") / NETWORK_WEIGHTS)
    )
    blendshapes, visemes = session.run(["BLENDSHAPES", "VISEMES"], {"AUDIO": windows})
    return np.concatenate([blendshapes, visemes], 1)


# -- client ----------------------------------------------------------------------------------


def chunked(pcm: np.ndarray, seed: int, largest: int = 4000) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pushes, start = [], 0
    while start < pcm.size:
        size = int(rng.integers(1, largest))
        pushes.append((start, pcm[start : start + size]))
        start += size
    return pushes


class Result:
    """What one session produced."""

    def __init__(self) -> None:
        self.started: dict[str, Any] = {}
        self.frames: list[BlendshapeFrame] = []
        self.raw: list[bytes] = []
        self.errors: list[dict[str, Any]] = []
        self.ended: dict[str, Any] = {}

    @property
    def weights(self) -> np.ndarray:
        return np.stack([f.weights for f in self.frames])


async def read_session(ws: ClientConnection, result: Result) -> None:
    """Read until SessionEnded."""
    async for message in ws:
        if isinstance(message, bytes):
            result.raw.append(message)
            result.frames.append(unpack_frame(message))
            continue
        data = json.loads(message)
        if data["type"] == "SessionStarted":
            result.started = data
        elif data["type"] == "Error":
            result.errors.append(data)
        elif data["type"] == "SessionEnded":
            result.ended = data
            return


async def session(
    url: str,
    pushes: list[tuple[int, np.ndarray]],
    start: dict[str, Any] | None = None,
    between: list[str | bytes] | None = None,
) -> Result:
    """One full session: StartSession, pushes (each followed by `between` extras), EndSession."""
    result = Result()
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps(start or NO_BLINKS))
        reader = asyncio.create_task(read_session(ws, result))
        for index, (at, pcm) in enumerate(pushes):
            await ws.send(pack_push_audio(at, pcm))
            if between and index == 0:
                for extra in between:
                    await ws.send(extra)
        await ws.send(json.dumps({"type": "EndSession"}))
        await asyncio.wait_for(reader, 120)
    return result


def check_clock(result: Result, fps: Fraction, samples: int) -> None:
    clock = FrameClock(fps)
    count = clock.frames_before(samples)
    assert [f.frame_index for f in result.frames] == list(range(count))
    assert [f.timestamp_current for f in result.frames] == [
        clock.timestamp(k) for k in range(count)
    ]
    assert [f.timestamp_next for f in result.frames] == [
        clock.timestamp(k + 1) for k in range(count)
    ]


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [Fraction(60), NTSC], ids=["60", "30000-1001"])
def test_speech_in_random_chunks_gives_the_model_frames(
    fps: Fraction,
    speech: np.ndarray,
    triton,
    start_gateway,
    gateway,  # type: ignore[no-untyped-def]
) -> None:
    server = gateway if fps == 60 else start_gateway("--fps", "30000/1001")
    start = {
        **NO_BLINKS,
        "frame_rate": {"numerator": fps.numerator, "denominator": fps.denominator},
    }
    result = asyncio.run(session(server.url, chunked(speech, seed=1), start))
    assert result.errors == [] and result.ended["session_id"] == result.started["session_id"]
    check_clock(result, fps, speech.size)
    assert result.started["frame_rate"] == {
        "numerator": fps.numerator,
        "denominator": fps.denominator,
    }
    assert result.started["channels"] == list(MODEL.blendshapes)
    assert result.started["weight_count"] == 52 and result.started["sampling_rate"] == 16000
    windows = windows_of(speech, FrameClock(fps), len(result.frames))
    expected = ensemble(triton.grpc_url, windows)
    np.testing.assert_allclose(result.weights, expected[:, :52], atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.weights, onnx_model(windows)[:, :52], atol=1e-5, rtol=0)


def test_any_chunking_gives_identical_frames(speech: np.ndarray, gateway) -> None:  # type: ignore[no-untyped-def]
    start = {"type": "StartSession", "seed": 11}  # blinks on: they must be deterministic too
    a = asyncio.run(session(gateway.url, chunked(speech, seed=2, largest=300), start))
    b = asyncio.run(session(gateway.url, [(0, speech)], start))
    c = asyncio.run(session(gateway.url, chunked(speech, seed=3, largest=20000), start))
    assert len(a.raw) == FrameClock(Fraction(60)).frames_before(speech.size)
    assert a.raw == b.raw == c.raw


def test_blinks_and_smoothing_shape_the_model_output(speech: np.ndarray, triton, gateway) -> None:  # type: ignore[no-untyped-def]
    start = {"type": "StartSession", "seed": 2, "postprocess": {"smoothing": 0.5}}
    result = asyncio.run(session(gateway.url, chunked(speech, seed=4), start))
    clock = FrameClock(Fraction(60))
    count = len(result.frames)
    raw = ensemble(triton.grpc_url, windows_of(speech, clock, count))
    blink = np.array(
        [MODEL.blendshapes.index("eyeBlinkLeft"), MODEL.blendshapes.index("eyeBlinkRight")]
    )
    stamps = np.array([clock.timestamp(k) for k in range(count + 1)], np.int64)
    expected = Animator(0.5, blink, seed=2).apply(raw, stamps)[:, :52]
    np.testing.assert_allclose(result.weights, expected, atol=1e-5, rtol=0)
    assert result.weights[:, blink].max() > 0.8  # at least one blink in ~6 s of speech


def test_one_second_gap_is_silence_and_no_error(speech: np.ndarray, triton, gateway) -> None:  # type: ignore[no-untyped-def]
    first, second = speech[:32000], speech[32000:48000]
    result = asyncio.run(session(gateway.url, [(0, first), (48000, second)]))
    assert result.errors == []
    total = 64000
    check_clock(result, Fraction(60), total)
    audio = np.concatenate([first, np.zeros(16000, np.int16), second])
    clock = FrameClock(Fraction(60))
    expected = ensemble(triton.grpc_url, windows_of(audio, clock, len(result.frames)))
    np.testing.assert_allclose(result.weights, expected[:, :52], atol=1e-5, rtol=0)
    silence = ensemble(triton.grpc_url, np.zeros((1, WINDOW), np.float32))[0, :52]
    inside = [f for f in result.frames if f.timestamp_current - OFFSET >= 32000
              and f.timestamp_current + OFFSET <= 48000]  # fmt: skip
    assert len(inside) > 5
    for frame in inside:
        np.testing.assert_allclose(frame.weights, silence, atol=1e-5)


def test_end_session_flushes_the_tail(speech: np.ndarray, triton, gateway) -> None:  # type: ignore[no-untyped-def]
    short = speech[8000:9000]  # too short for any complete window: every frame is tail
    result = asyncio.run(session(gateway.url, [(0, short)]))
    check_clock(result, Fraction(60), short.size)
    assert len(result.frames) == 4  # frames at 0, 266, 533 and 800 lie inside 1000 samples
    expected = ensemble(triton.grpc_url, windows_of(short, FrameClock(Fraction(60)), 4))
    np.testing.assert_allclose(result.weights, expected[:, :52], atol=1e-5, rtol=0)


ERROR_CASES = [
    (b"\x00" * 7, "Invalid PushAudio binary payload"),
    (b"\x00" * 8 + b"\x01", "Invalid PushAudio binary payload"),
    (pack_push_audio(-5, np.zeros(10, np.int16)), "startSampleIndex must be >= 0"),
    (pack_push_audio(0, np.zeros(10, np.int16)), "out-of-order"),
    (pack_push_audio(4000 + 160_001, np.zeros(10, np.int16)), "Audio gap too large"),
    ('{"type":"StartSession"}', "Session already started for this connection"),
    ('{"type":"EndSession","session_id":"nope"}', "does not match active session"),
    ('{"type":"Dance"}', "$.type"),
    ("{oops", "Invalid JSON"),
    ('{"type":"SetEmotion","emotions":{"glee":1}}', "unknown emotions: glee"),
]


def test_every_error_keeps_the_session_working(speech: np.ndarray, triton, gateway) -> None:  # type: ignore[no-untyped-def]
    audio = speech[:12000]
    pushes = [(0, audio[:4000]), (4000, audio[4000:])]
    extras = [message for message, _ in ERROR_CASES]
    result = asyncio.run(session(gateway.url, pushes, between=extras))
    assert len(result.errors) == len(ERROR_CASES)
    for error, (_, text) in zip(result.errors, ERROR_CASES, strict=True):
        assert text in error["message"]
    assert all("code" in e for e in result.errors)
    check_clock(result, Fraction(60), audio.size)
    expected = ensemble(
        triton.grpc_url, windows_of(audio, FrameClock(Fraction(60)), len(result.frames))
    )
    np.testing.assert_allclose(result.weights, expected[:, :52], atol=1e-5, rtol=0)


async def first_reply(ws: ClientConnection, message: str | bytes) -> dict[str, Any]:
    await ws.send(message)
    reply = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(reply, str)
    return json.loads(reply)


@pytest.mark.parametrize(
    ("start", "text"),
    [({"fps": 30}, "Requested frame_rate 30/1 does not match server 60/1"),
     ({"model": "other.json"}, "Requested model does not match server model"),
     ({"options": {"use_gpu_solver": False}}, "options.use_gpu_solver does not match server"),
     ({"emotions": {"glee": 1}}, "unknown emotions"),
     ({"channels": ["jawOpen", "nope"]}, "unknown channels: nope"),
     ({"sample_rate": 1000}, "$.sample_rate")],
)  # fmt: skip
def test_start_session_mismatches(start: dict[str, Any], text: str, gateway) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        async with connect(gateway.url) as ws:
            assert await first_reply(ws, pack_push_audio(0, [1, 2])) == {
                "type": "Error",
                "message": "StartSession must be called before PushAudio",
                "code": "no_session",
            }
            reply = await first_reply(ws, json.dumps({"type": "StartSession", **start}))
            assert reply["type"] == "Error" and text in reply["message"]
            reply = await first_reply(ws, json.dumps({"type": "EndSession"}))
            assert reply["message"] == "No active session for this connection"
            reference = {"type": "StartSession", "fps": 60,
                         "options": {"use_gpu_solver": True, "execution_option": "SkinTongue"}}  # fmt: skip
            assert (await first_reply(ws, json.dumps(reference)))["type"] == "SessionStarted"

    asyncio.run(run())


def test_sessions_follow_each_other_on_one_connection(speech: np.ndarray, gateway) -> None:  # type: ignore[no-untyped-def]
    async def run() -> list[Result]:
        results = []
        async with connect(gateway.url) as ws:
            for _ in range(2):
                result = Result()
                await ws.send(json.dumps(NO_BLINKS))
                reader = asyncio.create_task(read_session(ws, result))
                await ws.send(pack_push_audio(0, speech[:8000]))
                await ws.send(json.dumps({"type": "EndSession"}))
                await asyncio.wait_for(reader, 30)
                results.append(result)
        return results

    first, second = asyncio.run(run())
    assert first.started["session_id"] != second.started["session_id"]
    assert first.raw == second.raw and len(first.raw) == 30


def test_channels_emotions_and_postprocess(speech: np.ndarray, triton, gateway) -> None:  # type: ignore[no-untyped-def]
    audio = speech[:24000]
    names = ["jawOpen", "mouthSmileLeft", "aa", "sil"]
    start = {**NO_BLINKS, "channels": names, "emotions": {"joy": 1.0}, "emotion_strength": 0.5,
             "postprocess": {"multipliers": {"jawOpen": 0.5}, "clamp": [0.0, 0.9]}}  # fmt: skip
    joy_then_anger = json.dumps({"type": "SetEmotion", "emotions": {"anger": 1.0}})
    pushes = [(0, audio[:12000]), (12000, audio[12000:])]
    result = asyncio.run(session(gateway.url, pushes, start, between=[joy_then_anger]))
    assert result.errors == []
    assert result.started["channels"] == names and result.started["weight_count"] == 4
    assert result.started["channel_groups"] == [
        {"name": "arkit", "count": 2},
        {"name": "visemes", "count": 2},
    ]
    every = MODEL.blendshapes + MODEL.visemes
    pick = [every.index(n) for n in names]
    clock = FrameClock(Fraction(60))
    windows = windows_of(audio, clock, len(result.frames))
    emotion = {e: np.zeros(10, np.float32) for e in ("joy", "anger")}
    emotion["joy"][MODEL.emotions.index("joy")] = 1.0
    emotion["anger"][MODEL.emotions.index("anger")] = 1.0
    multiplier = np.ones(52, np.float32)
    multiplier[MODEL.blendshapes.index("jawOpen")] = 0.5
    common = {"CHANNEL_MULTIPLIER": multiplier, "CHANNEL_OFFSET": np.zeros(52, np.float32),
              "CLAMP": np.array([0.0, 0.9], np.float32), "THRESHOLD": np.zeros(1, np.float32)}  # fmt: skip
    first_push = clock.frames_before(12000 - OFFSET + 1)  # frames the first PushAudio completed
    joy = ensemble(triton.grpc_url, windows[:first_push], EMOTION=emotion["joy"],
                   EMOTION_STRENGTH=np.array([0.5]), **common)  # fmt: skip
    anger = ensemble(triton.grpc_url, windows[first_push:], EMOTION=emotion["anger"],
                     EMOTION_STRENGTH=np.array([1.0]), **common)  # fmt: skip
    expected = np.concatenate([joy, anger])[:, pick]
    np.testing.assert_allclose(result.weights, expected, atol=1e-5, rtol=0)
    neutral = ensemble(triton.grpc_url, windows[:first_push])[:, pick]
    assert (result.weights[:first_push, 1] > neutral[:, 1] + 0.05).all()  # the smile shows


def test_48k_input_matches_the_16k_path(speech: np.ndarray, gateway) -> None:  # type: ignore[no-untyped-def]
    pcm48 = np.clip(soxr.resample(speech.astype(np.float32), 16000, 48000), -32768, 32767)
    pcm48 = pcm48.round().astype(np.int16)
    direct = asyncio.run(session(gateway.url, chunked(speech, seed=5)))
    start = {**NO_BLINKS, "sample_rate": 48000}
    resampled = asyncio.run(session(gateway.url, chunked(pcm48, seed=6, largest=12000), start))
    assert resampled.errors == [] and len(resampled.frames) == len(direct.frames)
    assert [f.timestamp_current for f in resampled.frames] == [
        f.timestamp_current for f in direct.frames
    ]
    difference = np.abs(resampled.weights - direct.weights)
    assert difference.max() < 0.05 and difference.mean() < 0.005


def test_max_sessions_and_disconnect_frees_a_slot(start_gateway) -> None:  # type: ignore[no-untyped-def]
    server = start_gateway("--max_sessions", "2")

    async def run() -> None:
        first, second, third = await asyncio.gather(*(connect(server.url) for _ in range(3)))
        for ws in (first, second):
            assert (await first_reply(ws, json.dumps(NO_BLINKS)))["type"] == "SessionStarted"
        busy = await first_reply(third, json.dumps(NO_BLINKS))
        assert busy == {
            "type": "Error",
            "message": "Server busy (no free sessions)",
            "code": "busy",
        }
        await first.close()
        for _ in range(50):  # the server sees the disconnect within moments
            if sessions(server.http)["count"] < 2:
                break
            await asyncio.sleep(0.02)
        assert (await first_reply(third, json.dumps(NO_BLINKS)))["type"] == "SessionStarted"
        await second.close()
        await third.close()

    asyncio.run(run())


def sessions(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{http}/sessions", timeout=5) as response:
        return json.loads(response.read())


def test_http_endpoints(speech: np.ndarray, gateway) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(session(gateway.url, [(0, speech[:16000])]))
    for path in ("/health", "/ready", "/schema/openapi.json"):
        with urllib.request.urlopen(gateway.http + path, timeout=5) as response:
            assert response.status == 200
    with urllib.request.urlopen(gateway.http + "/health", timeout=5) as response:
        health = json.loads(response.read())
    assert (health["status"], health["triton"]) == ("ok", "ready")
    (endpoint,) = health["endpoints"]
    assert endpoint["status"] == "healthy" and endpoint["versions"]["network"] == MODEL.version
    served = health["model"]["served"]
    assert (served["network"], served["a2f_net"]) == (MODEL.version, str(MODEL.repository_version))
    report = sessions(gateway.http)
    assert report["count"] == 0 and report["max_sessions"] >= 1
    with urllib.request.urlopen(gateway.http + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for name in ("a2f_sessions_active", "a2f_frames_total", "a2f_frame_latency_seconds_bucket",
                 "a2f_triton_request_seconds_bucket", "a2f_triton_endpoint_healthy{endpoint=",
                 "a2f_triton_endpoint_requests_total{endpoint="):  # fmt: skip
        assert name in text


def test_health_is_live_and_reports_triton_unavailable(tmp_path: Path) -> None:
    """Triton down: /health still 200 (liveness) and says so; /ready is 503."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = Settings(triton_urls=[f"127.0.0.1:{closed}"], grpc_port=0)
    with TestClient(create_app(settings)) as client:
        health = client.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert (body["status"], body["triton"]) == ("ok", "unavailable")
        assert body["endpoints"][0]["status"] == "unhealthy"
        assert client.get("/ready").status_code == 503


def test_messages_over_4_mb_get_an_error_and_the_session_goes_on(gateway) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        async with connect(gateway.url, max_size=None) as ws:
            await ws.send(json.dumps(NO_BLINKS))
            await ws.recv()
            await ws.send(pack_push_audio(0, np.zeros(2 * 1024 * 1024, np.int16)))  # 4 MiB + 8
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert error["type"] == "Error" and error["code"] == "too_large"
            assert "4194312 bytes exceeds the 4194304-byte limit" in error["message"]
            await ws.send(pack_push_audio(0, np.zeros(16_000, np.int16)))  # nothing was lost
            frame = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(frame, bytes) and unpack_frame(frame).frame_index == 0

    asyncio.run(run())


def test_messages_over_8_mb_close_the_connection(gateway) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        async with connect(gateway.url, max_size=None) as ws:
            await ws.send(json.dumps(NO_BLINKS))
            await ws.recv()
            with pytest.raises(websockets.ConnectionClosed):
                await ws.send(pack_push_audio(0, np.zeros(4 * 1024 * 1024 + 1, np.int16)))
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1009  # message too big

    asyncio.run(run())


def cut_off(http: str) -> bool:
    """Whether the gateway has cut off exactly one slow client."""
    with urllib.request.urlopen(http + "/metrics", timeout=30) as response:
        return 'a2f_errors_total{kind="too_slow"} 1.0' in response.read().decode()


CUT_OFF_WAIT_S = 180.0  # bounded, generous: a loaded 2-core host may starve the gateway a while


def test_a_client_that_never_reads_is_cut_off(speech: np.ndarray, start_gateway) -> None:  # type: ignore[no-untyped-def]
    server = start_gateway(
        "--max_queued_frames", "120", "--send_timeout_s", "3", "--send_buffer_bytes", "16384"
    )  # fmt: skip
    port = int(server.http.rsplit(":", 1)[1])

    async def stalled() -> str:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room in the kernel
        sock.connect(("127.0.0.1", port))
        # No keepalive pings: a client that reads nothing never sees the pong and would close
        # the connection itself (ping_interval + ping_timeout) before the gateway's verdict.
        async with connect(
            server.url, sock=sock, max_queue=1, max_size=None, ping_interval=None
        ) as ws:
            await ws.send(json.dumps(NO_BLINKS))

            async def push() -> None:  # 30 s of audio (1800 frames, far more than the buffers)
                for i in range(60):
                    await ws.send(pack_push_audio(i * 8000, np.resize(speech, 8000)))

            # The gateway stops reading audio while its queue is full, so the pushes may block.
            pusher = asyncio.create_task(push())
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + CUT_OFF_WAIT_S
                # Not reading, however long the loaded machine takes to compute the frames.
                while not await asyncio.to_thread(cut_off, server.http):
                    assert loop.time() < deadline, "the stalled client was not cut off"
                    await asyncio.sleep(0.2)
                # Reading now drains what the buffers held; then the connection must end.
                async with asyncio.timeout(CUT_OFF_WAIT_S):
                    async for message in ws:
                        if isinstance(message, str) and "client too slow" in message:
                            return message
            except websockets.ConnectionClosed:
                pass
            finally:
                pusher.cancel()
                await asyncio.gather(pusher, return_exceptions=True)
            return "closed"

    async def realtime() -> tuple[list[float], float]:
        """Arrival times of the frames of a session that streams 3 s in real time, and the
        time its last chunk was sent."""
        arrivals: list[float] = []
        loop = asyncio.get_running_loop()
        async with connect(server.url) as ws:
            await ws.send(json.dumps(NO_BLINKS))
            await ws.recv()

            async def read() -> None:
                async for message in ws:
                    if isinstance(message, bytes):
                        arrivals.append(loop.time())
                    elif "SessionEnded" in message:
                        return

            reader = asyncio.create_task(read())
            for i in range(30):  # 100 ms chunks
                await ws.send(pack_push_audio(i * 1600, speech[i * 1600 : (i + 1) * 1600]))
                await asyncio.sleep(0.1)
            last_sent = loop.time()
            await ws.send(json.dumps({"type": "EndSession"}))
            await asyncio.wait_for(reader, CUT_OFF_WAIT_S)
        return arrivals, last_sent

    async def run() -> tuple[str, tuple[list[float], float]]:
        return await asyncio.gather(stalled(), realtime())

    slow, (arrivals, last_sent) = asyncio.run(run())
    assert slow == "closed" or "client too slow" in slow
    assert cut_off(server.http), "the stalled client was not cut off (or another one was too)"
    # The well-behaved session got all its frames, and they streamed while its audio arrived
    # (not held back behind the stalled client until the end).
    assert len(arrivals) == FrameClock(Fraction(60)).frames_before(30 * 1600)
    assert arrivals[0] < last_sent
