"""Phones -> visemes -> ARKit targets, with coarticulation by dominance functions.

Each viseme has a target face (a few ARKit weights; everything else 0 = neutral). Each phone
segment exerts a dominance over time (Cohen & Massaro 1993): a plateau ``alpha`` inside the
segment that decays exponentially outside it (``tau_before`` = anticipation, ``tau_after`` =
carry-over). The face at time t is the dominance-weighted mean of the segments' targets.
Dominance is separate for the jaw and for the lips, so "lip-neutral" consonants (t, k, h, s,
...) keep the jaw of their own segment but let a neighbouring rounded vowel's lip shape
spread through them, while bilabials and labiodentals dominate the lips to make sure the
lips really close or touch the teeth.
"""

from __future__ import annotations

import numpy as np

from training.channels import ARKIT_BLENDSHAPES, VISEMES
from training.phones import PHONE_VISEMES, Phone

_IDX = {name: i for i, name in enumerate(ARKIT_BLENDSHAPES)}


def _both(name: str, value: float) -> dict[str, float]:
    return {f"{name}Left": value, f"{name}Right": value}


# Target face of each viseme (ARKit weights; unlisted channels are 0).
VISEME_TARGETS: dict[str, dict[str, float]] = {
    "sil": {},
    "PP": {"jawOpen": 0.04, "mouthClose": 0.9, **_both("mouthPress", 0.6), "mouthRollLower": 0.15, "mouthRollUpper": 0.1},
    "FF": {"jawOpen": 0.1, "mouthRollLower": 0.6, **_both("mouthUpperUp", 0.35), "mouthClose": 0.1},
    "TH": {"jawOpen": 0.2, "tongueOut": 0.35, **_both("mouthUpperUp", 0.1), **_both("mouthLowerDown", 0.1)},
    "DD": {"jawOpen": 0.18, **_both("mouthLowerDown", 0.15), **_both("mouthStretch", 0.1)},
    "kk": {"jawOpen": 0.25, **_both("mouthLowerDown", 0.1), **_both("mouthStretch", 0.1)},
    "CH": {"jawOpen": 0.15, "mouthFunnel": 0.5, "mouthPucker": 0.25, **_both("mouthUpperUp", 0.2), "mouthShrugUpper": 0.15},
    "SS": {"jawOpen": 0.07, **_both("mouthStretch", 0.3), **_both("mouthSmile", 0.15), **_both("mouthUpperUp", 0.1)},
    "nn": {"jawOpen": 0.16, **_both("mouthLowerDown", 0.1)},
    "RR": {"jawOpen": 0.15, "mouthFunnel": 0.3, "mouthPucker": 0.35},
    "aa": {"jawOpen": 0.65, **_both("mouthLowerDown", 0.3), **_both("mouthUpperUp", 0.1)},
    "E": {"jawOpen": 0.4, **_both("mouthStretch", 0.35), **_both("mouthSmile", 0.15), **_both("mouthLowerDown", 0.2)},
    "I": {"jawOpen": 0.2, **_both("mouthStretch", 0.45), **_both("mouthSmile", 0.3)},
    "O": {"jawOpen": 0.45, "mouthFunnel": 0.6, "mouthPucker": 0.3, **_both("mouthLowerDown", 0.1)},
    "U": {"jawOpen": 0.15, "mouthPucker": 0.75, "mouthFunnel": 0.4},
}  # fmt: skip

# Open vowels differ in how far the jaw drops; scale the viseme's jawOpen per phone.
JAW_SCALE = {"ax": 0.5, "ah": 0.75, "ae": 0.9, "ih": 0.8, "uh": 1.3, "er": 1.2, "hh": 0.6}

# Channels moved by the jaw; every other non-zero channel belongs to the lips.
JAW_CHANNELS = ("jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight", "tongueOut")

# (alpha_jaw, alpha_lips, tau_before, tau_after) per phone class; taus in seconds.
_VOWEL = (1.0, 1.0, 0.05, 0.04)
_ROUNDED = (1.0, 1.5, 0.12, 0.06)  # lip rounding is anticipated early
_NEUTRAL_CONSONANT = (0.8, 0.15, 0.03, 0.03)
DOMINANCE: dict[str, tuple[float, float, float, float]] = {
    **{p: _VOWEL for p in ("aa", "ae", "ah", "ax", "eh", "ih", "iy", "ay", "aw", "ey", "er")},
    **{p: _ROUNDED for p in ("ao", "uh", "uw", "w", "ow", "oy", "r")},
    **{p: _NEUTRAL_CONSONANT for p in ("t", "d", "k", "g", "hh", "n", "ng", "l", "y", "s", "z", "th", "dh")},
    **{p: (1.2, 1.2, 0.05, 0.04) for p in ("ch", "jh", "sh", "zh")},
    **{p: (3.0, 6.0, 0.004, 0.004) for p in ("p", "b", "m")},
    **{p: (2.0, 3.0, 0.015, 0.01) for p in ("f", "v")},
    "sil": (0.6, 0.6, 0.04, 0.06),
}  # fmt: skip
assert set(DOMINANCE) == set(PHONE_VISEMES)

# Visemes use short symmetric dominance: near-hard labels with soft edges.
_VISEME_TAU = 0.02


def target_vector(viseme: str, phone: str) -> np.ndarray:
    out = np.zeros(len(ARKIT_BLENDSHAPES), np.float32)
    for name, value in VISEME_TARGETS[viseme].items():
        out[_IDX[name]] = value
    out[_IDX["jawOpen"]] *= JAW_SCALE.get(phone, 1.0)
    return out


class _Segment:
    __slots__ = ("dom", "end", "phone", "start", "viseme")

    def __init__(self, phone: str, viseme: str, start: float, end: float) -> None:
        self.phone, self.viseme, self.start, self.end = phone, viseme, start, end
        self.dom = DOMINANCE[phone]


def _segments(phones: list[Phone]) -> list[_Segment]:
    """Expand diphthongs into two half segments with their own visemes."""
    segs = []
    for ph in phones:
        vis = PHONE_VISEMES[ph.name]
        step = (ph.end - ph.start) / len(vis)
        for k, v in enumerate(vis):
            segs.append(_Segment(ph.name, v, ph.start + k * step, ph.start + (k + 1) * step))
    return segs


def _dominance(
    t: np.ndarray, seg: _Segment, alpha: float, before: float, after: float
) -> np.ndarray:
    early = np.clip(seg.start - t, 0.0, None)
    late = np.clip(t - seg.end, 0.0, None)
    return alpha * np.exp(-early / before - late / after)


def frame_labels(phones: list[Phone], times: np.ndarray) -> np.ndarray:
    """Hard viseme index of the segment containing each time (``sil`` outside speech)."""
    labels = np.zeros(len(times), np.int64)
    for seg in _segments(phones):
        labels[(times >= seg.start) & (times < seg.end)] = VISEMES.index(seg.viseme)
    return labels


def frame_targets(phones: list[Phone], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coarticulated ARKit targets [T, 52] and soft viseme targets [T, 15] at ``times``.

    Times outside the aligned phones count as silence (the neutral face).
    """
    first, last = phones[0].start, phones[-1].end
    padded = [Phone("sil", min(first, float(times.min())) - 1.0, first), *phones,
              Phone("sil", last, max(last, float(times.max())) + 1.0)]  # fmt: skip
    segs = _segments(padded)
    jaw_mask = np.zeros(len(ARKIT_BLENDSHAPES), bool)
    jaw_mask[[_IDX[c] for c in JAW_CHANNELS]] = True
    num = np.zeros((len(times), len(ARKIT_BLENDSHAPES)), np.float64)
    den_jaw = np.zeros(len(times))
    den_lip = np.zeros(len(times))
    vis_num = np.zeros((len(times), len(VISEMES)))
    for seg in segs:
        a_jaw, a_lip, before, after = seg.dom
        tgt = target_vector(seg.viseme, seg.phone)
        d_jaw = _dominance(times, seg, a_jaw, before, after)
        d_lip = _dominance(times, seg, a_lip, before, after)
        num += np.where(jaw_mask, d_jaw[:, None], d_lip[:, None]) * tgt
        den_jaw += d_jaw
        den_lip += d_lip
        vis_num[:, VISEMES.index(seg.viseme)] += _dominance(
            times, seg, 1.0, _VISEME_TAU, _VISEME_TAU
        )
    arkit = num / np.where(jaw_mask, den_jaw[:, None], den_lip[:, None])
    visemes = vis_num / vis_num.sum(axis=1, keepdims=True)
    return arkit.astype(np.float32), visemes.astype(np.float32)
