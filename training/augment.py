"""Augmentation for real microphones: tempo/pitch, EQ, reverb, resampling, noise, gain.

Every function takes a numpy ``Generator`` so a corpus is reproducible from its seed.
Tempo changes move the phone timings; everything else keeps them (reverb uses a room
response whose direct path is at lag 0, so the face stays aligned with the dry speech).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

from training.channels import SAMPLE_RATE
from training.phones import Phone

SR = SAMPLE_RATE


def tempo_pitch(
    audio: np.ndarray, phones: list[Phone], rng: np.random.Generator
) -> tuple[np.ndarray, list[Phone]]:
    """sox ``tempo`` (WSOLA, speech mode) and ``pitch``; phone times scale with the length."""
    factor = float(rng.uniform(0.85, 1.2))
    cents = float(rng.uniform(-300, 300))
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(src, audio, SR, subtype="FLOAT")
        subprocess.run(
            ["sox", "-q", str(src), str(dst), "tempo", "-s", f"{factor:.3f}", "pitch", f"{cents:.0f}"],
            check=True, capture_output=True,
        )  # fmt: skip
        out, _ = sf.read(dst, dtype="float32")
    scale = len(out) / len(audio)
    return out, [Phone(p.name, p.start * scale, p.end * scale) for p in phones]


def speed(
    audio: np.ndarray, phones: list[Phone], rng: np.random.Generator
) -> tuple[np.ndarray, list[Phone]]:
    """Play faster or slower (resampling): formants, pitch and timing all move together,
    which imitates a different vocal tract length, i.e. a new speaker."""
    factor = float(rng.uniform(0.88, 1.15))
    out = soxr.resample(audio, SR * factor, SR).astype(np.float32)
    return out, [Phone(p.name, p.start / factor, p.end / factor) for p in phones]


NOISE_KINDS = ("white", "pink", "brown", "hum")


def coloured_noise(n: int, rng: np.random.Generator, kind: int | None = None) -> np.ndarray:
    """White, pink, brown or mains-hum noise (``NOISE_KINDS``, random by default), unit RMS."""
    kind = int(rng.integers(4)) if kind is None else kind
    if kind == 3:
        t = np.arange(n) / SR
        f0 = rng.choice([50.0, 60.0])
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3, 5))
        x = x + 0.1 * rng.standard_normal(n)
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
        spec /= f ** (0.5 * kind)  # 0 white, 1 pink (1/f power), 2 brown (1/f^2)
        x = np.fft.irfft(spec, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def room_response(rng: np.random.Generator) -> np.ndarray:
    """Synthetic room: direct path at lag 0 plus exponentially decaying diffuse tail."""
    rt60 = rng.uniform(0.1, 0.7)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.003 * SR)] = 0.0  # first reflections arrive after a few ms
    h = tail * rng.uniform(0.05, 0.4) / np.sqrt(np.sum(tail**2) + 1e-12)
    h[0] = 1.0
    return h.astype(np.float32)


def equalise(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random microphone/channel colouring: telephone band, low-pass, high-pass or tilt."""
    kind = rng.integers(4)
    if kind == 0:
        sos = signal.butter(
            2, [rng.uniform(200, 400), rng.uniform(3000, 3600)], "bandpass", fs=SR, output="sos"
        )
    elif kind == 1:
        sos = signal.butter(2, rng.uniform(2500, 6000), "lowpass", fs=SR, output="sos")
    elif kind == 2:
        sos = signal.butter(2, rng.uniform(100, 500), "highpass", fs=SR, output="sos")
    else:  # gentle tilt: mix in a first-order low-pass or high-pass copy
        sos = signal.butter(
            1, rng.uniform(500, 2000), rng.choice(["lowpass", "highpass"]), fs=SR, output="sos"
        )
        return (audio + rng.uniform(0.5, 2.0) * signal.sosfilt(sos, audio)).astype(np.float32)
    return signal.sosfilt(sos, audio).astype(np.float32)


def degrade_codec(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resampling artefacts (down and up again) or coarse quantisation."""
    if rng.random() < 0.7:
        low = int(rng.choice([8000, 11025, 12000, 22050]))
        quality = str(rng.choice(["QQ", "LQ", "MQ"]))
        down = soxr.resample(audio, SR, low, quality=quality)
        out = soxr.resample(down, low, SR, quality=quality)
        out = np.pad(out, (0, max(0, len(audio) - len(out))))[: len(audio)]
        return out.astype(np.float32)
    mu = 255.0  # 8-bit mu-law round trip
    peak = np.max(np.abs(audio)) + 1e-9
    y = np.sign(audio) * np.log1p(mu * np.abs(audio / peak)) / np.log1p(mu)
    y = np.round(y * 127) / 127
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu * peak).astype(np.float32)


def add_noise(audio: np.ndarray, speech_rms: float, rng: np.random.Generator) -> np.ndarray:
    snr_db = rng.uniform(0.0, 35.0)
    noise = coloured_noise(len(audio), rng) * speech_rms * 10 ** (-snr_db / 20)
    return audio + noise


def add_events(
    audio: np.ndarray, quiet: list[tuple[int, int]], level: float, rng: np.random.Generator
) -> np.ndarray:
    """Non-speech sounds (noise bursts, clicks, hum) inside the silent stretches."""
    out = audio.copy()
    for a, b in quiet:
        if b - a < SR // 20 or rng.random() < 0.5:
            continue
        n = int(rng.integers(SR // 50, min(b - a, SR // 2)))
        s = int(rng.integers(a, b - n + 1))
        burst = coloured_noise(n, rng) * np.hanning(n) * level * rng.uniform(0.05, 1.0)
        if rng.random() < 0.3:  # a click
            burst = np.zeros(n, np.float32)
            burst[n // 2] = level * rng.uniform(0.5, 2.0)
        out[s : s + n] += burst
    return out


def set_level(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Peak level between -40 and +3 dBFS; the +3 dB cases clip like a hot microphone."""
    peak = np.max(np.abs(audio)) + 1e-9
    gain = 10 ** (rng.uniform(-40.0, 3.0) / 20) / peak
    return np.clip(audio * gain, -1.0, 1.0).astype(np.float32)
