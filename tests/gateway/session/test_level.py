"""The gated input level normaliser: quiet speech lifted, noise and silence left alone, the
same output for any chunking (alone and inside the session's `AudioStream`)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2f_protocol.clock import MODEL_SAMPLE_RATE, PCM_SCALE, FrameClock
from a2f_protocol.messages import SessionOptions, StartSession
from gateway.model_info import ModelInfo
from gateway.session import level
from gateway.session.audio import AudioStream
from gateway.session.config import ServerProfile, SessionConfig
from gateway.session.level import LevelNormaliser
from gateway.session.pipeline import FramePipeline
from gateway.settings import Settings, load_settings

RATE = MODEL_SAMPLE_RATE
WINDOW, OFFSET = 8320, 4160


def speech_like(seconds: float, peak_dbfs: float, seed: int = 0) -> np.ndarray:
    """Voiced syllables (harmonics of 120 Hz, 120-250 ms, Hann envelope) 4-5 a second with a
    half-second pause every two seconds: the level's rise and fall of speech."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * RATE), np.float32)
    t = 0.3
    while t < seconds - 0.3:
        n = int(rng.uniform(0.12, 0.25) * RATE)
        k = np.arange(n) / RATE
        f0 = rng.uniform(100, 140)
        tone = sum(np.sin(2 * np.pi * f0 * h * k) / h for h in range(1, 30) if f0 * h < 4000)
        start = int(t * RATE)
        out[start : start + n] += (tone * np.hanning(n)).astype(np.float32)
        t += n / RATE + rng.uniform(0.05, 0.12) + (0.5 if t % 2 < 0.25 else 0.0)
    return out * np.float32(10 ** (peak_dbfs / 20) / np.abs(out).max())


def normalised(audio: np.ndarray, cuts: list[int] | None = None) -> np.ndarray:
    normaliser = LevelNormaliser()
    pieces = np.split(audio, sorted({min(c, audio.size) for c in cuts or []}))
    return np.concatenate([normaliser.process(piece) for piece in pieces])


def gains_db(audio: np.ndarray) -> np.ndarray:
    """The gain after each 10 ms block."""
    normaliser = LevelNormaliser()
    out = []
    for start in range(0, audio.size, level.BLOCK):
        normaliser.process(audio[start : start + level.BLOCK])
        out.append(normaliser.gain_db)
    return np.array(out)


def dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(x).max()))


QUIET = speech_like(6.0, -40.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, QUIET.size), max_size=20))
def test_any_chunking_gives_the_same_output(cuts: list[int]) -> None:
    np.testing.assert_array_equal(normalised(QUIET, cuts), normalised(QUIET))


def test_quiet_speech_is_lifted_towards_the_trained_level() -> None:
    out = normalised(QUIET)
    gains = gains_db(QUIET)
    assert gains[: level.MIN_HEARD].max() == 0.0  # no decision before enough audio
    assert gains[-100:].min() >= 20.0  # after a few seconds of speech: +20 dB or more
    assert gains.max() <= level.MAX_GAIN_DB
    assert dbfs(out[-2 * RATE :]) > -16.0 and dbfs(out) <= 0.0


def test_speech_at_a_normal_level_passes_bit_for_bit() -> None:
    loud = speech_like(6.0, -6.0)
    np.testing.assert_array_equal(normalised(loud), loud)


def test_the_gain_moves_smoothly() -> None:
    gains = gains_db(QUIET)
    assert np.diff(gains).max() <= level.UP_DB + 1e-9  # at most 0.3 dB up per 10 ms
    # Sample by sample, the linear ramp inside a block: neighbouring samples' gains differ by
    # at most a block's step spread over its 160 samples.
    both = (np.abs(QUIET[1:]) > 1e-4) & (np.abs(QUIET[:-1]) > 1e-4)
    ratio = normalised(QUIET) / np.where(QUIET == 0, 1, QUIET)
    step = np.abs(np.diff(ratio))[both] / ratio[1:][both]
    assert step.max() < (10 ** (level.UP_DB / 20) - 1) / level.BLOCK * 1.01 + 1e-4


def coloured(kind: str, seconds: float, dbfs_rms: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    if kind == "hum":
        t = np.arange(n) / RATE
        x = sum(
            np.sin(2 * np.pi * 50 * h * t) / h for h in (1, 2, 3, 5)
        ) + 0.05 * rng.standard_normal(n)
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
        x = np.fft.irfft(spec / f ** {"white": 0.0, "pink": 0.5, "brown": 1.0}[kind], n)
    x = x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs_rms / 20)
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "hum"])
@pytest.mark.parametrize("dbfs_rms", [-70.0, -50.0, -30.0])
def test_steady_noise_is_never_boosted(kind: str, dbfs_rms: float) -> None:
    noise = coloured(kind, 8.0, dbfs_rms)
    np.testing.assert_array_equal(normalised(noise), noise)


@pytest.mark.parametrize("before", ["digital silence", "a quiet room"])
def test_a_noise_switched_on_is_not_boosted(before: str) -> None:
    quiet = (
        np.zeros(2 * RATE, np.float32)
        if before == "digital silence"
        else coloured("pink", 2.0, -80.0)
    )
    fan = coloured("brown", 8.0, -50.0, seed=2) + coloured("hum", 8.0, -60.0)
    audio = np.concatenate([quiet, fan])
    np.testing.assert_array_equal(normalised(audio), audio)


def test_key_clicks_in_a_quiet_room_are_not_boosted() -> None:
    rng = np.random.default_rng(3)
    audio = coloured("white", 8.0, -75.0)
    for start in np.cumsum(rng.uniform(0.08, 0.3, 40)) * RATE:
        n = int(rng.integers(40, 160))  # 2.5-10 ms of decaying broadband click
        s = int(start)
        burst = rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 4)) * 10 ** (-40 / 20)
        audio[s : s + n] += burst[: audio.size - s].astype(np.float32)
    np.testing.assert_array_equal(normalised(audio), audio)


def test_silence_stays_silence_even_after_boosted_speech() -> None:
    audio = np.concatenate([np.zeros(RATE, np.float32), QUIET, np.zeros(2 * RATE, np.float32)])
    out = normalised(audio)
    assert not out[:RATE].any() and not out[-2 * RATE :].any()


def test_the_gain_returns_to_unity_once_speech_has_stopped() -> None:
    hold_s = level.HOLD_BLOCKS * level.BLOCK / RATE
    audio = np.concatenate([QUIET, coloured("pink", hold_s + 6.0, -70.0)])
    gains = gains_db(audio)
    assert gains[QUIET.size // level.BLOCK] > 20.0  # held over the first pause
    assert gains[-1] == 0.0


def test_a_sudden_loud_talker_is_not_boosted_into_clipping() -> None:
    loud = speech_like(3.0, -3.0, seed=5)
    gains = gains_db(np.concatenate([QUIET, loud]))
    out = normalised(np.concatenate([QUIET, loud]))[QUIET.size :]
    assert gains[QUIET.size // level.BLOCK] > 20.0  # boosted when it starts
    assert np.mean(np.abs(out) >= 1.0) < 0.01  # the limiter stops all but a few samples
    assert gains[QUIET.size // level.BLOCK + 150 :].max() == 0.0  # unity within 1.5 s


PCM = np.round(QUIET[: 3 * RATE] / np.float32(PCM_SCALE)).astype(np.int16)


def stream_windows(
    input_rate: int, pcm: np.ndarray, cuts: list[int], normalise: bool
) -> np.ndarray:
    stream = AudioStream(
        FrameClock(Fraction(30)), WINDOW, OFFSET, input_rate, normalise_level=normalise
    )
    start = 0
    windows = []
    for chunk in np.split(pcm, sorted({min(c, pcm.size) for c in cuts})):
        stream.push(start, chunk)
        start += chunk.size
    stream.finish()
    while (batch := stream.take_span(64)) is not None:
        out = np.zeros((batch.count, WINDOW), np.float32)
        batch.cut_windows(out, slice(None), WINDOW, OFFSET)
        windows.append(out)
    return np.concatenate(windows)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([16000, 8000, 44100]), st.lists(st.integers(0, PCM.size), max_size=8))
def test_the_session_stream_normalises_once_for_any_chunking(rate: int, cuts: list[int]) -> None:
    whole = stream_windows(rate, PCM, [], normalise=True)
    np.testing.assert_allclose(stream_windows(rate, PCM, cuts, normalise=True), whole, atol=1e-5)
    raw = stream_windows(rate, PCM, [], normalise=False)
    assert np.abs(whole).max() > 3 * np.abs(raw).max()  # the stream itself was lifted


def test_off_by_default_everywhere_and_a_setting_turns_it_on() -> None:
    """The service's setting, the profile and the session configuration share one default,
    and a profile with it off gives sessions whose audio is not lifted."""
    assert Settings().normalise_level is level.ENABLED_BY_DEFAULT is False
    assert load_settings(["--normalise-level"], {}).normalise_level is True
    assert load_settings([], {"A2F_NORMALISE_LEVEL": "1"}).normalise_level is True
    assert load_settings(["--no-normalise-level"], {}).normalise_level is False
    info = ModelInfo.load(Path(__file__).resolve().parents[3] / "model_repository")
    windows = {}
    for enabled in (True, False):
        profile = ServerProfile("a2f", Fraction(30), SessionOptions(True, "SkinTongue"), enabled)
        config = SessionConfig.from_start(StartSession(), profile, info)
        assert config.normalise_level is enabled
        stream = FramePipeline(config, info).stream
        stream.push(0, PCM)
        stream.finish()
        batch = stream.take_span(10_000)
        assert batch is not None
        windows[enabled] = np.zeros((batch.count, WINDOW), np.float32)
        batch.cut_windows(windows[enabled], slice(None), WINDOW, OFFSET)
    assert np.abs(windows[True]).max() > 3 * np.abs(windows[False]).max()
