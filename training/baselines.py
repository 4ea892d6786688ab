"""Two classic baselines the network must beat, fitted on training-voice speech.

* Loudness: jawOpen is a linear function of the log energy around the frame; frames quieter
  than a "closure" threshold (but louder than silence) count as closed lips.
* MFCC templates: 13 MFCCs at the frame and +-10 ms, nearest class mean per viseme; the
  face is the mean ARKit target of that viseme's training frames.
Both read the same centre time as the network (sample 4160 of the window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import dct

from training.channels import ARKIT_BLENDSHAPES, SAMPLE_RATE, VISEMES
from training.model import hz_to_mel, mel_to_hz

FRAME = 400  # 25 ms analysis frames
N_FFT = 512
N_MELS = 26
N_MFCC = 13
CONTEXT = (-160, 0, 160)  # frame offsets (samples) stacked for the template matcher
_JAW = ARKIT_BLENDSHAPES.index("jawOpen")
_CLOSE = ARKIT_BLENDSHAPES.index("mouthClose")
_SIL, _PP, _AA = VISEMES.index("sil"), VISEMES.index("PP"), VISEMES.index("aa")


def _frames(audio: np.ndarray, centres: np.ndarray) -> np.ndarray:
    padded = np.pad(audio, (FRAME, FRAME))
    idx = centres[:, None] - FRAME // 2 + FRAME + np.arange(FRAME)
    return padded[idx] * np.hamming(FRAME)


def log_energy(audio: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.log10(np.mean(_frames(audio, centres) ** 2, axis=1) + 1e-10)


def _mel_matrix() -> np.ndarray:
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    edges = mel_to_hz(np.linspace(hz_to_mel(60.0), hz_to_mel(7800.0), N_MELS + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


_MEL = _mel_matrix()


def mfcc(audio: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[T, 13 * len(CONTEXT)] stacked MFCCs (c0 included, so level matters as it would)."""
    feats = []
    for off in CONTEXT:
        spec = np.abs(np.fft.rfft(_frames(audio, centres + off), N_FFT)) ** 2
        feats.append(dct(np.log(spec @ _MEL.T + 1e-10), type=2, norm="ortho", axis=1)[:, :N_MFCC])
    return np.concatenate(feats, axis=1)


def _face(jaw: np.ndarray, closed: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blend = np.zeros((len(jaw), len(ARKIT_BLENDSHAPES)), np.float32)
    blend[:, _JAW] = jaw
    blend[:, _CLOSE] = np.where(closed, 0.9, 0.0)
    return blend, np.eye(len(VISEMES), dtype=np.float32)[vis]


@dataclass
class Loudness:
    slope: float
    intercept: float
    silence: float  # log10 energy below which the frame is silence
    closure: float  # ... below which (and above silence) the lips count as closed

    @classmethod
    def fit(cls, energy: np.ndarray, jaw: np.ndarray, labels: np.ndarray) -> Loudness:
        slope, intercept = np.polyfit(energy, jaw, 1)
        grid = np.quantile(energy, np.linspace(0.01, 0.6, 40))
        silence = max(grid, key=lambda t: np.mean((energy < t) == (labels == _SIL)))
        closed = labels == _PP

        def f1(t: float) -> float:
            pred = (energy >= silence) & (energy < t)
            tp = np.sum(pred & closed)
            return 2 * tp / (np.sum(pred) + np.sum(closed) + 1e-9)

        closure = max((t for t in grid if t > silence), key=f1, default=silence)
        return cls(float(slope), float(intercept), float(silence), float(closure))

    def __call__(self, audio: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = log_energy(audio, centres)
        jaw = np.clip(self.slope * e + self.intercept, 0.0, 1.0)
        closed = (e >= self.silence) & (e < self.closure)
        vis = np.where(e < self.silence, _SIL, np.where(closed, _PP, _AA))
        jaw = np.where(e < self.silence, 0.0, jaw)
        return _face(jaw, closed, vis)


@dataclass
class MfccTemplates:
    mean: np.ndarray
    std: np.ndarray
    templates: np.ndarray  # [15, D] (rows of unseen visemes are +inf: never chosen)
    faces: np.ndarray  # [15, 52] mean training target per viseme

    @classmethod
    def fit(cls, feats: np.ndarray, blend: np.ndarray, labels: np.ndarray) -> MfccTemplates:
        mean, std = feats.mean(0), feats.std(0) + 1e-6
        z = (feats - mean) / std
        templates = np.full((len(VISEMES), z.shape[1]), np.inf)
        faces = np.zeros((len(VISEMES), len(ARKIT_BLENDSHAPES)))
        for v in range(len(VISEMES)):
            if np.any(labels == v):
                templates[v] = z[labels == v].mean(0)
                faces[v] = blend[labels == v].mean(0)
        return cls(mean, std, templates, faces.astype(np.float32))

    def __call__(self, audio: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (mfcc(audio, centres) - self.mean) / self.std
        d = ((z[:, None, :] - np.nan_to_num(self.templates, posinf=1e6)[None]) ** 2).sum(-1)
        vis = d.argmin(1)
        return self.faces[vis], np.eye(len(VISEMES), dtype=np.float32)[vis]
