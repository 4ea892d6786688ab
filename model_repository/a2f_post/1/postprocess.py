"""Postprocessing maths of the ``a2f_post`` model: pure numpy, importable without Triton.

The network predicts neutral, speech-driven weights. This module applies the per-request
parameters to a whole batch in one vectorised pass, in this order:

1. **emotion** -- ``EMOTION`` (Audio2Face order, each in [0, 1]) times ``EMOTION_STRENGTH``
   selects expression deltas from :data:`EXPRESSION_TABLE`; they are screen-blended into the
   speech weights: ``w + d * (1 - w)``. The blend only raises weights and stays in [0, 1].
2. **multiplier / offset** -- ``w * CHANNEL_MULTIPLIER + CHANNEL_OFFSET`` per channel.
3. **clamp** -- into ``[CLAMP[0], CLAMP[1]]``.
4. **threshold** -- a weight whose magnitude is below ``THRESHOLD`` becomes 0.

Why the emotion blend cannot fight the lip sync: the table may only name *expression*
channels (upper face, cheeks, nose and the mouth corners); the channels that shape speech
(jaw, lips, tongue) and the eye gaze/blink channels are never touched, and because the
blend only adds, nothing the audio opened is closed. Mouth-corner expressions are also
faded out while the lips are rounded (``mouthPucker``/``mouthFunnel`` for O/U sounds), so a
smile does not stretch a rounded vowel flat.

Visemes pass through unchanged (validated only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Audio2Face-3D emotions in input order, each with its expression deltas; the gateway reads
# the same file for the names (data, so it never runs this module).
EXPRESSIONS_FILE = Path(__file__).resolve().parent / "expressions.json"
EXPRESSION_TABLE: dict[str, dict[str, float]] = json.loads(
    EXPRESSIONS_FILE.read_text(encoding="utf-8")
)["emotions"]
EMOTIONS: tuple[str, ...] = tuple(EXPRESSION_TABLE)

# Channels emotions may drive: upper face and cheeks/nose, plus the mouth corners.
UPPER_FACE_CHANNELS: frozenset[str] = frozenset({
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
})  # fmt: skip
MOUTH_CORNER_CHANNELS: frozenset[str] = frozenset({
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
})  # fmt: skip
# Lip rounding that mouth-corner expressions must not flatten.
LIP_ROUNDING_CHANNELS: tuple[str, ...] = ("mouthPucker", "mouthFunnel")


class Parameter(NamedTuple):
    """An optional per-window input of ``a2f_post`` / ``a2f`` and its neutral value."""

    width: int | None  # None: one value per blendshape channel
    neutral: float | tuple[float, ...]


# Input tensor name -> shape and the value used when a request omits it.
PARAMETERS: dict[str, Parameter] = {
    "EMOTION": Parameter(len(EMOTIONS), 0.0),
    "EMOTION_STRENGTH": Parameter(1, 1.0),
    "CHANNEL_MULTIPLIER": Parameter(None, 1.0),
    "CHANNEL_OFFSET": Parameter(None, 0.0),
    "CLAMP": Parameter(2, (0.0, 1.0)),
    "THRESHOLD": Parameter(1, 0.0),
}

RAW_INPUTS: tuple[str, str] = ("BLENDSHAPES_RAW", "VISEMES_RAW")


def load_channels(manifest_path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Blendshape and viseme channel names from the network's manifest."""
    outputs = json.loads(Path(manifest_path).read_text(encoding="utf-8"))["outputs"]
    return tuple(outputs["BLENDSHAPES"]["channels"]), tuple(outputs["VISEMES"]["channels"])


class Batch(NamedTuple):
    """All valid requests of one ``execute()`` call, stacked row-wise, parameters filled."""

    blendshapes: np.ndarray  # [rows, channels]
    visemes: np.ndarray  # [rows, visemes]
    params: dict[str, np.ndarray]  # name -> [rows, width]
    rows: list[int]  # rows per request, to split the result again


class Postprocessor:
    """Emotion blend, multiplier/offset, clamp and threshold for one channel layout."""

    def __init__(self, channels: Sequence[str], visemes: Sequence[str]) -> None:
        self.channels = tuple(channels)
        self.visemes = tuple(visemes)
        index = {name: i for i, name in enumerate(self.channels)}
        allowed = UPPER_FACE_CHANNELS | MOUTH_CORNER_CHANNELS
        table = np.zeros((len(EMOTIONS), len(self.channels)), np.float32)
        for e, emotion in enumerate(EMOTIONS):
            for name, weight in EXPRESSION_TABLE[emotion].items():
                if name not in allowed:
                    raise ValueError(f"{emotion} would drive lip-sync channel {name}")
                if name in index:  # a layout without the channel just loses that delta
                    table[e, index[name]] = weight
        self.table = table
        self.corners = np.array([n in MOUTH_CORNER_CHANNELS for n in self.channels])
        self.rounding = [index[n] for n in LIP_ROUNDING_CHANNELS if n in index]

    def width(self, name: str) -> int:
        """Number of values per window of a parameter or raw input."""
        if name == "BLENDSHAPES_RAW":
            return len(self.channels)
        if name == "VISEMES_RAW":
            return len(self.visemes)
        return PARAMETERS[name].width or len(self.channels)

    def validate(self, tensors: Mapping[str, np.ndarray | None]) -> str | None:
        """Why one request's tensors cannot be processed, or None when they can."""
        raw = tensors.get("BLENDSHAPES_RAW")
        if raw is None or tensors.get("VISEMES_RAW") is None:
            return "BLENDSHAPES_RAW and VISEMES_RAW are required"
        rows = raw.shape[0] if raw.ndim == 2 else -1
        for name in (*RAW_INPUTS, *PARAMETERS):
            value = tensors.get(name)
            if value is None:
                continue
            expected = (rows, self.width(name))
            if value.shape != expected:
                return f"{name} has shape {list(value.shape)}, expected {list(expected)}"
            if not np.isfinite(value).all():
                return f"{name} contains NaN or infinity"
        return _check_ranges(tensors)

    def collate(self, requests: Sequence[Mapping[str, np.ndarray | None]]) -> Batch:
        """Stack valid requests row-wise; omitted parameters take their neutral value."""
        rows = [r["BLENDSHAPES_RAW"].shape[0] for r in requests]
        total = sum(rows)
        params: dict[str, np.ndarray] = {}
        for name, spec in PARAMETERS.items():
            given = [r.get(name) for r in requests]
            if all(g is None for g in given):
                # Broadcast view: no per-row copy for parameters nobody sent.
                neutral = np.asarray(spec.neutral, np.float32).reshape(1, -1)
                params[name] = np.broadcast_to(neutral, (total, self.width(name)))
                continue
            filled = np.empty((total, self.width(name)), np.float32)
            start = 0
            for n, g in zip(rows, given, strict=True):
                filled[start : start + n] = spec.neutral if g is None else g
                start += n
            params[name] = filled
        return Batch(
            _stack([r["BLENDSHAPES_RAW"] for r in requests]),
            _stack([r["VISEMES_RAW"] for r in requests]),
            params,
            rows,
        )

    def apply(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Postprocessed blendshapes and visemes for every row of ``batch``."""
        p = batch.params
        weights = batch.blendshapes.astype(np.float32, copy=False)
        emotion = np.clip(p["EMOTION"] * p["EMOTION_STRENGTH"], 0.0, 1.0)
        delta = np.clip(emotion @ self.table, 0.0, 1.0)
        if self.rounding:
            rounded = weights[:, self.rounding].max(axis=1, keepdims=True).clip(0.0, 1.0)
            delta = np.where(self.corners, delta * (1.0 - rounded), delta)
        out = weights + delta * (1.0 - weights)
        out = out * p["CHANNEL_MULTIPLIER"] + p["CHANNEL_OFFSET"]
        out = np.clip(out, p["CLAMP"][:, :1], p["CLAMP"][:, 1:])
        out = np.where(np.abs(out) < p["THRESHOLD"], 0.0, out).astype(np.float32)
        return out, batch.visemes.astype(np.float32, copy=False)


def _check_ranges(tensors: Mapping[str, np.ndarray | None]) -> str | None:
    emotion, strength = tensors.get("EMOTION"), tensors.get("EMOTION_STRENGTH")
    clamp, threshold = tensors.get("CLAMP"), tensors.get("THRESHOLD")
    if emotion is not None and ((emotion < 0) | (emotion > 1)).any():
        return "EMOTION values must lie in [0, 1]"
    if strength is not None and (strength < 0).any():
        return "EMOTION_STRENGTH must not be negative"
    if clamp is not None and (clamp[:, 0] > clamp[:, 1]).any():
        return "CLAMP must be [min, max] with min <= max"
    if threshold is not None and (threshold < 0).any():
        return "THRESHOLD must not be negative"
    return None


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    # One request (the common no-merge case) keeps its array: no copy.
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
