"""Decoding uploads: every container/subtype and rate to 16 kHz mono, errors classified."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from a2f_protocol.audio_files import (
    AudioTooLongError,
    CorruptAudioError,
    UnsupportedAudioError,
    check_duration,
    decode_16k,
    probe,
)


def tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> io.BytesIO:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    buffer.seek(0)
    return buffer


def decode_all(file: io.BytesIO, **kwargs: object) -> np.ndarray:
    return np.concatenate(list(decode_16k(file, **kwargs)))


@pytest.mark.parametrize(
    ("fmt", "subtype", "tolerance"),
    [
        ("WAV", "PCM_16", 1e-4),
        ("WAV", "PCM_24", 1e-6),
        ("WAV", "FLOAT", 1e-7),
        ("FLAC", "PCM_16", 1e-4),
        ("OGG", "VORBIS", 0.05),
    ],
)
@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000])
def test_formats_and_rates_give_16k_mono(
    fmt: str, subtype: str, tolerance: float, rate: int
) -> None:
    seconds = 1.0
    audio = decode_all(
        encode(tone(rate, seconds, channels=2), rate, fmt, subtype), block_frames=4096
    )
    assert audio.dtype == np.float32
    assert abs(audio.size - 16_000 * seconds) <= 2
    expected = tone(16_000, seconds)[: audio.size]
    middle = slice(800, audio.size - 800)  # resampler edges aside
    if rate != 16_000:
        tolerance = max(tolerance, 2e-3)  # resampling a 440 Hz tone, not bit-exact
    assert np.max(np.abs(audio[middle] - expected[middle])) < tolerance


def test_pcm16_at_16k_is_bit_exact_with_the_websocket_scaling() -> None:
    pcm = (np.random.default_rng(1).standard_normal(20_000) * 3000).astype(np.int16)
    audio = decode_all(encode(pcm, 16_000, "WAV", "PCM_16"), block_frames=1000)
    np.testing.assert_array_equal(audio, pcm.astype(np.float32) / 32768)


def test_stereo_is_averaged() -> None:
    left = np.full(16_000, 0.5)
    right = np.full(16_000, -0.25)
    audio = decode_all(encode(np.stack([left, right], axis=1), 16_000, "WAV", "FLOAT"))
    np.testing.assert_allclose(audio, 0.125)


def test_block_size_does_not_change_resampled_output() -> None:
    file = encode(tone(44_100, 2.0), 44_100, "WAV", "FLOAT")
    whole = decode_all(file, block_frames=1 << 20)
    pieces = decode_all(file, block_frames=777)
    np.testing.assert_allclose(whole, pieces, atol=1e-6)


def test_probe_reads_the_header() -> None:
    info = probe(encode(tone(48_000, 1.5, channels=2), 48_000, "FLAC", "PCM_24"))
    assert (info.format, info.sample_rate, info.channels, info.frames) == (
        "FLAC",
        48_000,
        2,
        72_000,
    )
    assert info.duration_s == pytest.approx(1.5)


@pytest.mark.parametrize("data", [b"this is not audio at all" * 20, b"\x00" * 1000])
def test_not_audio_is_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedAudioError, match="unsupported audio format"):
        probe(io.BytesIO(data))


def test_an_empty_file_is_called_empty() -> None:
    with pytest.raises(CorruptAudioError, match="empty"):
        probe(io.BytesIO(b""))


def test_truncated_flac_is_corrupt() -> None:
    data = encode(tone(48_000, 3.0), 48_000, "FLAC", "PCM_16").getvalue()
    with pytest.raises(CorruptAudioError, match="corrupt"):
        decode_all(io.BytesIO(data[: len(data) // 2]))


def test_broken_wav_header_is_corrupt() -> None:
    with pytest.raises(CorruptAudioError):
        probe(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEfmt "))


def test_empty_wav_is_corrupt() -> None:
    with pytest.raises(CorruptAudioError, match="no samples"):
        decode_all(encode(np.zeros(0), 16_000, "WAV", "PCM_16"))


def test_duration_limits() -> None:
    file = encode(tone(16_000, 3.0), 16_000, "WAV", "PCM_16")
    with pytest.raises(AudioTooLongError, match=r"3\.0 s long; the limit is 2 s"):
        check_duration(probe(file), 2.0)
    with pytest.raises(AudioTooLongError):
        decode_all(file, max_seconds=2.0)
    assert decode_all(file, max_seconds=3.0).size == 48_000
