"""Evaluation-only listening conditions: noise sources the training never hears, fixed rooms,
telephone and 8 kHz channels.

Training (``augment.py``) adds white/pink/brown/hum noise, noise bursts and single clicks;
none of the sources here is made that way, so the report is not tuned to them:

* babble: six espeak-ng variants that no training voice uses, reading held-out sentences;
* fan: low-passed broadband air noise with blade-pass harmonics and a slow wobble;
* street: traffic rumble, passing vehicles (swelling band noise) and the odd horn;
* music: a chord progression of decaying harmonic notes over a bass line and a tick on beats;
* keyboard: key press and release clicks (short band-passed bursts) at a typist's rhythm.

Every source is synthesised once from a seed (babble is cached in ``training/work``), and each
test utterance reads its own stretch of it, so conditions are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import soxr
from scipy import signal

from training.channels import SAMPLE_RATE
from training.synth import Prosody, Voice, synthesize
from training.text import is_held_out, sentences

SR = SAMPLE_RATE
SOURCE_SECONDS = 60  # each source's length; utterances read random stretches of it
BABBLE_VOICES = ("en-us+m4", "en+m6", "en-us+m8", "en-us+f1", "en+klatt4", "en+linda")
NOISE_SNRS_DB = (20, 10, 5)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return (x / (np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)).astype(np.float32)


def _band_noise(n: int, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    sos = signal.butter(2, [low, high], "bandpass", fs=SR, output="sos")
    return signal.sosfilt(sos, rng.standard_normal(n))


def babble(seed: int, talkers: tuple[str, ...] = BABBLE_VOICES) -> np.ndarray:
    """Several talkers at once, each reading held-out sentences back to back."""
    rnd = random.Random(seed)
    held_out = [s for s in sentences() if is_held_out(s)]
    n = SOURCE_SECONDS * SR
    mix = np.zeros(n, np.float64)
    for name in talkers:
        track: list[np.ndarray] = []
        length = 0
        while length < n:
            utt = synthesize(Voice("espeak", name), rnd.choice(held_out), Prosody())
            pause = np.zeros(int(rnd.uniform(0.05, 0.4) * SR), np.float32)
            track += [utt.audio, pause]
            length += utt.audio.size + pause.size
        mix += _unit_rms(np.concatenate(track)[:n])
    return _unit_rms(mix)


def fan(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = SOURCE_SECONDS * SR
    t = np.arange(n) / SR
    air = signal.sosfilt(
        signal.butter(2, 900, "lowpass", fs=SR, output="sos"), rng.standard_normal(n)
    )
    air += 0.3 * _band_noise(n, rng, 1500, 4000)
    blade = rng.uniform(70, 110)  # blade-pass frequency
    tones = sum(
        np.sin(2 * np.pi * blade * h * t + rng.uniform(0, 6.3)) / h**1.5 for h in range(1, 6)
    )
    wobble = 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t)
    return _unit_rms((_unit_rms(air) + 0.3 * _unit_rms(tones)) * wobble)


def street(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = SOURCE_SECONDS * SR
    t = np.arange(n) / SR
    rumble = signal.sosfilt(
        signal.butter(2, 250, "lowpass", fs=SR, output="sos"), rng.standard_normal(n)
    )
    out = _unit_rms(rumble)
    car = _unit_rms(_band_noise(n, rng, 80, 3000))
    for centre in np.cumsum(rng.uniform(2.0, 7.0, SOURCE_SECONDS)):  # passing vehicles
        if centre > SOURCE_SECONDS:
            break
        width = rng.uniform(0.8, 2.0)
        out += car * rng.uniform(1.0, 4.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    for start in rng.uniform(0, SOURCE_SECONDS - 1, 4):  # horns
        k = (t >= start) & (t < start + rng.uniform(0.3, 0.7))
        f = rng.uniform(350, 500)
        out[k] += 2.0 * sum(np.sin(2 * np.pi * f * r * t[k]) for r in (1.0, 1.26, 2.0))
    return _unit_rms(out)


def music(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = SOURCE_SECONDS * SR
    out = np.zeros(n)
    beat = rng.uniform(0.4, 0.6)  # seconds
    roots = (0, 5, 7, 3, 8, 10)  # semitones above A3: a loop of major/minor chords
    step = int(beat * 2 * SR)
    for k, start in enumerate(range(0, n, step)):
        root = 220.0 * 2 ** (roots[k % len(roots)] / 12)
        length = min(step, n - start)
        tt = np.arange(length) / SR
        env = np.exp(-tt / rng.uniform(0.4, 0.9))
        third = 4 if k % 3 else 3
        for semis in (0, third, 7, 12):
            f = root * 2 ** (semis / 12)
            out[start : start + length] += env * sum(
                np.sin(2 * np.pi * f * h * tt) * 0.6**h for h in range(1, 6)
            )
        out[start : start + length] += 1.5 * env * np.sin(2 * np.pi * root / 2 * tt)  # bass
    tick = _band_noise(int(0.03 * SR), rng, 5000, 7500) * np.exp(-np.arange(int(0.03 * SR)) / 80)
    for start in range(0, n - tick.size, int(beat * SR)):
        out[start : start + tick.size] += 0.8 * tick
    return _unit_rms(out)


def keyboard(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = SOURCE_SECONDS * SR
    out = 1e-3 * rng.standard_normal(n)  # the room's own floor, 60 dB under the clicks
    t = 0.0
    while t < SOURCE_SECONDS - 0.5:
        for delay in (0.0, rng.uniform(0.06, 0.12)):  # press, then release
            length = int(rng.integers(40, 200))
            burst = _band_noise(length, rng, 800, 6000) * np.exp(-np.arange(length) / (length / 5))
            s = int((t + delay) * SR)
            out[s : s + length] += burst * rng.uniform(0.3, 1.0) * (1.0 if delay == 0 else 0.5)
        t += rng.uniform(0.1, 0.35) + (rng.uniform(0.5, 2.0) if rng.random() < 0.1 else 0.0)
    return _unit_rms(out)


NOISE_SOURCES: dict[str, Callable[[int], np.ndarray]] = {
    "babble": babble,
    "fan": fan,
    "street": street,
    "music": music,
    "keyboard": keyboard,
}


def stretch_of(source: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``source`` from a random start (wrapping around)."""
    start = int(rng.integers(0, source.size))
    return np.resize(np.roll(source, -start), n).astype(np.float32)


def speech_rms(audio: np.ndarray) -> float:
    """RMS of the speech itself (digital silence around it left out)."""
    return float(np.sqrt(np.mean(audio[np.abs(audio) > 1e-4] ** 2)))


def with_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    return (audio + noise * speech_rms(audio) * 10 ** (-snr_db / 20)).astype(np.float32)


# Two fixed rooms: a furnished office and a bare hall (direct path at lag 0, so the face stays
# aligned with the dry speech; the tail's energy relative to the direct sound sets the level).
ROOMS = {"small room (RT60 0.3 s)": (0.3, 0.3), "large hall (RT60 0.9 s)": (0.9, 0.8)}


def room(rt60: float, tail: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    h = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    h[: int(0.003 * SR)] = 0.0
    h *= tail / np.sqrt(np.sum(h**2))
    h[0] = 1.0
    return h


def reverberant(audio: np.ndarray, rt60: float, tail: float, seed: int) -> np.ndarray:
    return np.convolve(audio, room(rt60, tail, seed))[: audio.size].astype(np.float32)


def telephone(audio: np.ndarray) -> np.ndarray:
    """300-3400 Hz band, 8 kHz, 8-bit mu-law (G.711), back to 16 kHz."""
    sos = signal.butter(4, [300, 3400], "bandpass", fs=SR, output="sos")
    narrow = soxr.resample(signal.sosfilt(sos, audio), SR, 8000)
    mu = 255.0
    y = np.sign(narrow) * np.log1p(mu * np.minimum(np.abs(narrow), 1.0)) / np.log1p(mu)
    y = np.round(y * 127) / 127
    coded = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu
    return _fit(soxr.resample(coded, 8000, SR), audio.size)


def from_8khz(audio: np.ndarray) -> np.ndarray:
    """Recorded at 8 kHz, resampled to 16 kHz as the gateway does for an 8 kHz client."""
    return _fit(soxr.resample(soxr.resample(audio, SR, 8000), 8000, SR), audio.size)


def _fit(audio: np.ndarray, n: int) -> np.ndarray:
    return np.pad(audio, (0, max(0, n - audio.size)))[:n].astype(np.float32)
