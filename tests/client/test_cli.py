"""The client library and the `a2f` CLI end to end against the real gateway and Triton."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile

from a2f_client import ServerUnavailableError, animate_sync, stream, stream_sync
from a2f_protocol.audio_files import CorruptAudioError
from a2f_protocol.export_formats import parse_a2fb, parse_jsonl, parse_live_link_csv
from gateway.model_info import ModelInfo

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INFO = ModelInfo.load(PROJECT_ROOT / "model_repository")


def a2f(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process; `env` adds to this process's environment."""
    command = [sys.executable, "-m", "a2f_client.cli", *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], done.stderr


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again on exit: nothing listens there


@pytest.fixture(scope="module")
def pcm(speech_path: Path) -> np.ndarray:
    samples, _ = soundfile.read(speech_path, dtype="int16")
    return samples


def test_cli_animate_and_stream_write_the_same_frames(
    gateway, speech_path: Path, tmp_path: Path
) -> None:
    batch_csv, streamed_jsonl, streamed_a2fb = (
        tmp_path / n for n in ("a.csv", "s.jsonl", "s.a2fb")
    )
    done = a2f(
        "animate",
        str(speech_path),
        "--url",
        gateway.http,
        "--out",
        str(batch_csv),
        "--progress",
    )
    assert done.returncode == 0, done.stderr
    assert "353 frames" in done.stderr and "100%" in done.stderr  # progress bar on request
    for out in (streamed_jsonl, streamed_a2fb):
        done = a2f(
            "stream", str(speech_path), "--url", gateway.url, "--out", str(out), "--chunk-ms", "50"
        )
        assert done.returncode == 0, done.stderr
    batch = parse_live_link_csv(batch_csv.read_text(), INFO.blendshapes, Fraction(60))
    streamed = parse_jsonl(streamed_jsonl.read_bytes().splitlines())
    assert streamed.channels == INFO.blendshapes
    binary = parse_a2fb(streamed_a2fb.read_bytes(), INFO.blendshapes)
    np.testing.assert_allclose(batch.select(INFO.blendshapes), streamed.weights, atol=1e-5)
    np.testing.assert_allclose(binary.weights, streamed.weights, atol=1e-8)  # JSON: 8 decimals
    np.testing.assert_array_equal(binary.timestamps, streamed.timestamps)


def test_cli_realtime_stream_with_parameters(
    gateway, speech_path: Path, tmp_path: Path, pcm: np.ndarray
) -> None:
    out = tmp_path / "short.csv"
    short = tmp_path / "short.wav"
    soundfile.write(short, pcm[:8000], 16_000, subtype="PCM_16")  # 0.5 s
    done = a2f("stream", str(short), "--url", gateway.url, "--out", str(out), "--realtime",
               "--emotions", "joy:0.5", "--channels", "jawOpen,aa", "--no-blinks")  # fmt: skip
    assert done.returncode == 0, done.stderr
    header = out.read_text().splitlines()[0]
    assert header == "Timecode,BlendShapeCount,JawOpen,HeadYaw,HeadPitch,HeadRoll," + (
        "LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll,aa"
    )


@pytest.mark.parametrize("command", ["animate", "stream"])
def test_cli_says_plainly_when_the_server_is_down(
    command: str, speech_path: Path, tmp_path: Path
) -> None:
    scheme = "http" if command == "animate" else "ws"
    url = f"{scheme}://127.0.0.1:{closed_port()}/"
    done = a2f(command, str(speech_path), "--url", url, "--out", str(tmp_path / "x.jsonl"))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("a2f: error: cannot connect to"), done.stderr


def test_cli_reports_server_refusals(gateway, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 100)
    done = a2f("animate", str(junk), "--url", gateway.http, "--out", str(tmp_path / "x.csv"))
    assert done.returncode == 1
    assert "a2f: error:" in done.stderr


def test_cli_serve_runs_the_project_runner() -> None:
    done = a2f("serve", "--help")
    assert done.returncode == 0
    assert "--port" in done.stdout and "gateway" in done.stdout.lower()


def test_client_reports_server_unavailable(speech_path: Path) -> None:
    with pytest.raises(ServerUnavailableError):
        animate_sync(speech_path, url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ServerUnavailableError):
        list(stream_sync(speech_path, f"ws://127.0.0.1:{closed_port()}/"))


def test_set_emotion_mid_stream_changes_later_frames_only(gateway, pcm: np.ndarray) -> None:
    plain = np.stack([f.weights for f in stream_sync(pcm, gateway.url)])
    changed = np.stack([
        f.weights for f in stream_sync(pcm, gateway.url, emotion_changes=[(3.0, {"joy": 1.0})])
    ])  # fmt: skip
    # A window of frame k reaches 0.26 s past it, so frames before ~2.7 s were computed earlier.
    early = int(2.5 * 60)
    np.testing.assert_allclose(changed[:early], plain[:early], atol=1e-6)
    assert not np.allclose(changed[int(3.5 * 60) :], plain[int(3.5 * 60) :], atol=1e-3)


def test_live_async_source_gives_the_same_frames(gateway, pcm: np.ndarray) -> None:
    async def microphone() -> AsyncIterator[np.ndarray]:
        for start in range(0, pcm.size, 320):  # 20 ms blocks, as a capture callback would
            yield pcm[start : start + 320]
            await asyncio.sleep(0)

    async def run() -> np.ndarray:
        return np.stack([f.weights async for f in stream(microphone(), gateway.url)])

    live = asyncio.run(run())
    whole = np.stack([f.weights for f in stream_sync(pcm, gateway.url, chunk_seconds=1.0)])
    np.testing.assert_allclose(live, whole, atol=1e-5)


def test_float_arrays_at_another_rate_are_resampled_by_the_server(gateway, pcm: np.ndarray) -> None:
    import soxr

    audio = soxr.resample(pcm.astype(np.float32) / 32768, 16_000, 48_000)
    frames = list(stream_sync(audio, gateway.url, sample_rate=48_000))
    assert abs(len(frames) - 353) <= 1


@pytest.fixture
def empty_wav(tmp_path: Path) -> Path:
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, np.int16), 16_000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("command", ["animate", "stream"])
def test_cli_refuses_empty_audio_at_once(command: str, empty_wav: Path, tmp_path: Path) -> None:
    url = f"127.0.0.1:{closed_port()}"  # never reached: the file is refused first
    done = a2f(command, str(empty_wav), "--url", url, "--out", str(tmp_path / "x.csv"), timeout=30)
    assert_one_line_error(done, "holds no samples")
    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.touch()
    done = a2f(command, str(zero_bytes), "--url", url, "--out", str(tmp_path / "x.csv"), timeout=30)
    assert_one_line_error(done, "empty")


def test_library_refuses_empty_audio_before_connecting(empty_wav: Path) -> None:
    with pytest.raises(CorruptAudioError, match="no samples"):
        animate_sync(empty_wav, url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(CorruptAudioError, match="no samples"):
        list(stream_sync(empty_wav, f"ws://127.0.0.1:{closed_port()}/"))
    with pytest.raises(ValueError, match="empty"):
        list(stream_sync(np.zeros(0, np.int16), f"ws://127.0.0.1:{closed_port()}/"))


def test_a_source_failing_mid_stream_ends_the_stream(gateway, pcm: np.ndarray) -> None:
    async def failing() -> AsyncIterator[np.ndarray]:
        yield pcm[:1600]
        raise OSError("microphone unplugged")

    async def run() -> None:
        async for _ in stream(failing(), gateway.url):
            pass

    with pytest.raises(OSError, match="unplugged"):
        asyncio.run(asyncio.wait_for(run(), timeout=30))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["stream", "missing.wav"], ["No such file"]),
        (["animate", "."], ["Is a directory"]),
        (["stream", "{speech}", "--out", "x.txt"], ["x.txt", ".csv"]),
        (["animate", "{speech}", "--out", "x"], ["suffix"]),
        (["stream", "{speech}", "--url", "ftp://host"], ["unsupported URL"]),
        (["animate", "{speech}", "--url", "http://"], ["no host"]),
        (["stream", "{speech}", "--chunk-ms", "0"], ["--chunk-ms"]),
        (["animate", "{speech}", "--fps", "-30"], ["--fps"]),
        (["animate", "{speech}", "--frame-rate", "30/0"], ["--frame-rate"]),
        (["stream", "{speech}", "--emotions", "joy"], ["--emotions", "joy:0.8"]),
        (["stream", "{speech}", "--params", "[1]"], ["--params", "JSON object"]),
        (["animate", "{speech}", "--postprocess", "{"], ["--postprocess", "JSON"]),
        (["stream", "{speech}", "--seed", "-1"], ["seed"]),
    ],
)
def test_cli_user_mistakes_are_one_line(
    args: list[str], words: list[str], speech_path: Path, tmp_path: Path
) -> None:
    args = [arg.replace("{speech}", str(speech_path)) for arg in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "x.jsonl")]
    url = f"127.0.0.1:{closed_port()}"
    done = a2f(*args, *([] if "--url" in args else ["--url", url]), timeout=30)
    assert_one_line_error(done, *words)
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    "flags", [["--emotion-strength", "2"], ["--params", '{"fps": 0}'], ["--seed", "-1"]]
)
def test_cli_bad_session_flags_exit_2_before_reading_audio(
    flags: list[str], speech_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x.csv"
    url = f"127.0.0.1:{closed_port()}"  # never reached: the flags are checked first
    done = a2f("stream", str(speech_path), "--out", str(out), "--url", url, *flags, timeout=30)
    assert_one_line_error(done, "error")
    assert done.returncode == 2 and not out.exists()


def test_cli_at_a_port_that_speaks_grpc_is_one_line(
    triton, speech_path: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "x.csv"
    url = f"http://{triton.grpc_url}"
    done = a2f("animate", str(speech_path), "--url", url, "--out", str(out), timeout=60)
    assert_one_line_error(done, triton.grpc_url)
    assert not out.exists()


@pytest.mark.parametrize("command", ["animate", "stream"])
def test_cli_commands_take_any_gateway_url(
    command: str, gateway, speech_path: Path, tmp_path: Path, pcm: np.ndarray
) -> None:
    short = tmp_path / "short.wav"
    soundfile.write(short, pcm[:8000], 16_000, subtype="PCM_16")
    host_port = gateway.http.removeprefix("http://").rstrip("/")
    for url in (gateway.url, gateway.http, host_port):
        out = tmp_path / "x.jsonl"
        done = a2f(command, str(short), "--url", url, "--out", str(out), timeout=60)
        assert done.returncode == 0, (url, done.stderr)
        assert len(parse_jsonl(out.read_bytes().splitlines()).weights) == 30


def test_cli_stream_names_the_servers_rate(gateway, speech_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    done = a2f("stream", str(speech_path), "--url", gateway.url, "--out", str(out), "--fps", "30")
    assert_one_line_error(done, "60 fps", "animate --fps 30")
    assert not out.exists()
    done = a2f("stream", str(speech_path), "--url", gateway.url, "--out", str(out), "--fps", "60")
    assert done.returncode == 0, done.stderr


def test_stream_and_animate_agree_on_resampled_files(
    gateway, tmp_path: Path, pcm: np.ndarray
) -> None:
    """The bound a2f_client/README.md states for 16-bit mono files at any rate."""
    import soxr

    resampled = soxr.resample(pcm.astype(np.float32) / 32768, 16_000, 22_050)
    audio = tmp_path / "speech_22k.wav"
    soundfile.write(audio, resampled, 22_050, subtype="PCM_16")
    batch, streamed = tmp_path / "b.jsonl", tmp_path / "s.jsonl"
    done = a2f("animate", str(audio), "--url", gateway.http, "--out", str(batch))
    assert done.returncode == 0, done.stderr
    done = a2f("stream", str(audio), "--url", gateway.url, "--out", str(streamed))
    assert done.returncode == 0, done.stderr
    expected = parse_jsonl(batch.read_bytes().splitlines())
    got = parse_jsonl(streamed.read_bytes().splitlines())
    np.testing.assert_array_equal(got.timestamps, expected.timestamps)
    np.testing.assert_allclose(got.weights, expected.weights, atol=1e-5)
