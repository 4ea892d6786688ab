"""POST /v1/animate on the real gateway and Triton: formats in and out, parameters, limits,
and frame-for-frame equality with a WebSocket session on the same audio."""

from __future__ import annotations

import asyncio
import io
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import soundfile
import soxr
from litestar.exceptions import HTTPException

from a2f_client import Animation, animate, animate_sync, stream, stream_sync
from a2f_protocol.clock import FrameClock
from a2f_protocol.export_formats import parse_a2fb, parse_jsonl, parse_live_link_csv
from a2f_protocol.frames import BlendshapeFrame
from gateway.inference.admission import Admission
from gateway.inference.dispatcher import Dispatcher
from gateway.inference.scheduler import FairScheduler
from gateway.metrics import Metrics
from gateway.web.batch_api import check_ready

ANIMATE = "/v1/animate"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def speech(speech_path: Path) -> np.ndarray:
    audio, rate = soundfile.read(speech_path, dtype="float32")
    assert rate == 16_000
    return audio


@pytest.fixture(scope="module")
def reference(gateway, speech_path: Path) -> Animation:
    """The fixture file at 60 fps, default parameters, JSON lines."""
    return animate_sync(speech_path, url=gateway.http)


def encode(audio: np.ndarray, rate: int, fmt: str, subtype: str, channels: int = 1) -> bytes:
    if rate != 16_000:
        audio = soxr.resample(audio, 16_000, rate)
    if channels == 2:
        audio = np.stack([audio, audio], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def post(gateway, body: bytes, **params: str) -> httpx.Response:
    return httpx.post(gateway.http + ANIMATE, params=params, content=body, timeout=120)


def test_reference_frames_follow_the_clock(reference: Animation, speech: np.ndarray) -> None:
    clock = FrameClock(Fraction(60))
    count = clock.frames_before(speech.size)  # every frame whose time lies inside the audio
    assert reference.weights.shape == (count, 52)
    np.testing.assert_array_equal(reference.frame_indices, np.arange(count))
    np.testing.assert_array_equal(reference.timestamps, [clock.timestamp(k) for k in range(count)])
    assert np.ptp(reference.column("jawOpen")) > 0  # speech moves the jaw


@pytest.mark.parametrize("kind", ["jsonl", "csv", "a2fb"])
def test_response_formats_parse_back_to_the_same_frames(
    gateway, speech_path: Path, reference: Animation, kind: str
) -> None:
    response = post(gateway, speech_path.read_bytes(), format=kind)
    assert response.status_code == 200, response.text
    channels = tuple(response.headers["x-a2f-channels"].split(","))
    assert int(response.headers["x-a2f-frame-count"]) == reference.weights.shape[0]
    if kind == "jsonl":
        assert response.headers["content-type"].startswith("application/x-ndjson")
        animation = parse_jsonl(response.content.splitlines())
    elif kind == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        animation = parse_live_link_csv(response.text, channels, Fraction(60))
    else:
        animation = parse_a2fb(response.content, channels)
    np.testing.assert_allclose(
        animation.select(reference.channels), reference.weights, atol=TOLERANCE
    )
    np.testing.assert_array_equal(animation.frame_indices, reference.frame_indices)


def test_accept_header_picks_the_format(gateway, speech_path: Path) -> None:
    response = httpx.post(
        gateway.http + ANIMATE,
        content=speech_path.read_bytes(),
        headers={"accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.text.startswith("Timecode,BlendShapeCount,EyeBlinkLeft,")


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels", "tolerance"),
    [
        ("WAV", "PCM_16", 16_000, 1, TOLERANCE),
        ("WAV", "PCM_24", 44_100, 1, 0.05),
        ("WAV", "FLOAT", 48_000, 2, 0.05),
        ("WAV", "PCM_16", 8_000, 1, None),  # telephone band: count only
        ("FLAC", "PCM_16", 22_050, 2, 0.05),
        ("FLAC", "PCM_24", 16_000, 1, 1e-3),
        ("OGG", "VORBIS", 48_000, 2, None),  # lossy: count only
    ],
)
def test_audio_formats_and_rates(
    gateway, speech: np.ndarray, reference: Animation,
    fmt: str, subtype: str, rate: int, channels: int, tolerance: float | None,
) -> None:  # fmt: skip
    body = encode(speech, rate, fmt, subtype, channels)
    response = post(gateway, body, blinks="false")
    assert response.status_code == 200, response.text
    animation = parse_jsonl(response.content.splitlines())
    expected = reference.weights.shape[0]
    assert abs(animation.weights.shape[0] - expected) <= 1  # resampled length may round
    if tolerance is not None:
        plain = animate_sync(
            encode(speech, 16_000, "WAV", "PCM_16"), url=gateway.http, blinks=False
        )
        rows = min(animation.weights.shape[0], expected)
        difference = np.abs(animation.weights[:rows] - plain.weights[:rows])
        assert difference.max() <= tolerance


def test_multipart_upload_with_form_fields(gateway, speech_path: Path) -> None:
    response = httpx.post(
        gateway.http + ANIMATE,
        files={"file": ("speech.wav", speech_path.read_bytes(), "audio/wav")},
        data={"fps": "30", "channels": "jawOpen,aa", "format": "csv"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-a2f-channels"] == "jawOpen,aa"
    assert response.text.splitlines()[0].endswith("RightEyeRoll,aa")
    assert response.headers["x-a2f-frame-rate"] == "30/1"


def test_any_frame_rate_with_exact_timestamps(
    gateway, speech_path: Path, speech: np.ndarray
) -> None:
    animation = animate_sync(speech_path, url=gateway.http, format="a2fb",
                             frame_rate={"numerator": 30000, "denominator": 1001})  # fmt: skip
    clock = FrameClock(Fraction(30000, 1001))
    count = clock.frames_before(speech.size)
    np.testing.assert_array_equal(animation.timestamps, [clock.timestamp(k) for k in range(count)])


PARAMETERS = {
    "emotions": {"joy": 0.8, "sadness": 0.3},
    "emotion_strength": 0.9,
    "channels": "all",
    "seed": 11,
    "postprocess": {"multipliers": {"jawOpen": 1.3}, "offsets": {"browInnerUp": 0.05},
                    "clamp": [0.0, 0.95], "threshold": 0.01, "smoothing": 0.4},
}  # fmt: skip


def test_batch_equals_websocket_session(gateway, speech_path: Path, speech: np.ndarray) -> None:
    """Same audio, same parameters: the same frames, to 1e-5, through one framing path."""
    batch = animate_sync(speech_path, url=gateway.http, format="a2fb", **PARAMETERS)
    pcm = np.rint(speech * 32768).astype(np.int16)  # the file's own PCM16 samples
    frames = list(stream_sync(pcm, gateway.url, chunk_seconds=0.137, **PARAMETERS))
    streamed = np.stack([f.weights for f in frames])
    assert [f.frame_index for f in frames] == batch.frame_indices.tolist()
    assert [f.timestamp_current for f in frames] == batch.timestamps.tolist()
    np.testing.assert_allclose(streamed, batch.weights, atol=TOLERANCE, rtol=0)
    assert batch.weights.shape[1] == 52 + 15


def test_emotion_parameters_change_the_output(
    gateway, speech_path: Path, reference: Animation
) -> None:
    joyful = animate_sync(speech_path, url=gateway.http, emotions={"joy": 1.0})
    assert not np.allclose(joyful.weights, reference.weights)


@pytest.fixture(scope="module")
def limited(start_gateway):
    """A gateway with small batch limits: 150 kB bodies, 2 s of audio."""
    return start_gateway("--batch_max_bytes", "150000", "--batch_max_seconds", "2")


def test_body_over_the_limit_is_413(limited, speech_path: Path) -> None:
    response = post(limited, speech_path.read_bytes())  # 188 kB
    assert response.status_code == 413
    assert "larger than the limit of 150000 bytes" in response.json()["detail"]


def test_duration_over_the_limit_is_413(limited, speech: np.ndarray) -> None:
    response = post(limited, encode(speech[:48_000], 8_000, "WAV", "PCM_16"))  # 3 s, 48 kB
    assert response.status_code == 413
    assert "the limit is 2 s" in response.json()["detail"]


def test_multipart_over_the_limit_is_413(limited, speech_path: Path) -> None:
    files = {"file": ("speech.wav", speech_path.read_bytes(), "audio/wav")}
    response = httpx.post(limited.http + ANIMATE, files=files)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "params", "status", "message"),
    [
        (b"", {}, 422, "request body is empty"),
        (b"definitely not audio " * 50, {}, 415, "unsupported audio format"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", {}, 422, "corrupt audio"),
        ("truncated-flac", {}, 422, "corrupt or truncated"),
        ("wav", {"fsp": "60"}, 422, "unknown parameter 'fsp'"),
        ("wav", {"emotions": "glee:1"}, 422, "unknown emotions: glee"),
        ("wav", {"emotions": "joy:2"}, 422, "emotions"),
        ("wav", {"channels": "jawOpen,nose"}, 422, "unknown channels: nose"),
        ("wav", {"fps": "0"}, 422, "fps"),
        ("wav", {"postprocess": "{bad json"}, 422, "postprocess is not valid JSON"),
        ("wav", {"params": "[1]"}, 422, "params must be a JSON object"),
        ("wav", {"format": "xml"}, 422, "format must be one of jsonl, csv, a2fb"),
    ],
)
def test_bad_requests_are_4xx_with_a_reason(
    gateway,
    speech: np.ndarray,
    body: bytes | str,
    params: dict[str, str],
    status: int,
    message: str,
) -> None:
    if body == "wav":
        body = encode(speech[:16_000], 16_000, "WAV", "PCM_16")
    elif body == "truncated-flac":
        whole = encode(speech, 48_000, "FLAC", "PCM_16")
        body = whole[: len(whole) // 2]
    response = post(gateway, body, **params)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_multipart_without_a_file_is_422(gateway) -> None:
    response = httpx.post(gateway.http + ANIMATE, data={"fps": "30"}, files={"x": ("", b"", "")})
    assert response.status_code == 422


def dispatched(gateway, lane: str) -> float:
    text = httpx.get(gateway.http + "/metrics").text
    line = f'a2f_dispatched_frames_total{{lane="{lane}"}} '
    return sum(float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line))


async def test_a_stream_beside_a_large_upload_loses_nothing(gateway, speech: np.ndarray) -> None:
    """The upload's frames go through the dispatcher (its upload lane), and a real-time
    stream started with it receives every frame."""
    minute = np.resize(speech, 60 * 16_000)
    body = encode(minute, 16_000, "WAV", "PCM_16")
    pcm = np.rint(speech[: 3 * 16_000] * 32768).astype(np.int16)
    uploaded, streamed = dispatched(gateway, "upload"), dispatched(gateway, "stream")

    async def live() -> list[BlendshapeFrame]:
        return [frame async for frame in stream(pcm, gateway.url, realtime=True)]

    animation, frames = await asyncio.gather(animate(body, url=gateway.http), live())
    assert animation.weights.shape[0] == FrameClock(Fraction(60)).frames_before(minute.size)
    assert [f.frame_index for f in frames] == list(
        range(FrameClock(Fraction(60)).frames_before(pcm.size))
    )
    assert dispatched(gateway, "upload") - uploaded == animation.weights.shape[0]
    assert dispatched(gateway, "stream") - streamed >= len(frames)


def test_a_new_upload_on_a_busy_host_is_503_with_retry_after() -> None:
    """Admission as for a new session: live frames measurably late refuse the upload before
    its audio is decoded or charged (the policy itself: tests/gateway/test_admission.py)."""
    admission = Admission(0.001, min_samples=1)
    admission.observe(time.monotonic(), 1.0)
    dispatcher = Dispatcher(
        None,  # type: ignore[arg-type]  # nothing is sent
        FairScheduler(8, 4),
        window=1,
        offset=0,
        neutral={},
        in_flight=2,
        tick_s=0.004,
        metrics=Metrics(),
        admission=admission,
    )
    services = SimpleNamespace(triton=SimpleNamespace(ready=True), dispatcher=dispatcher)
    with pytest.raises(HTTPException) as refused:
        check_ready(services, "tenant")  # type: ignore[arg-type]
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "2"}
    assert "late" in refused.value.detail
