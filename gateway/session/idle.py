"""The face of a pause: model rows for frames whose windows hold only silence, and the
hand-over back to speech.

Why synthesised, not computed: a pause's frames are the model's answer to silence, which is
one pose (the network is a function of its window, and every such window is zeros). Sending
zeros through Triton would cost a speaking session's share of batches for every idle face, to
get that pose again at each frame. So an idle frame is the last row the model gave (the
session's frames before a pause are computed with silence after the audio, so that row is
the model's silent face), or zeros before any, plus a slow breathing motion; the `Animator`
then smooths it and lays its blinks over it like any other row.

Everything is a function of the frame sequence (timestamps and the order of model and idle
rows), never of clocks, so equal audio and pauses give equal frames.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

# Resting breaths: 12-17 a minute. The period wanders +-20 % over `BREATH_DRIFT_S` and the
# depth +-30 % over `BREATH_DEPTH_DRIFT_S`, so no two breaths are alike.
BREATH_PERIOD_S = 4.2
BREATH_DRIFT_S = 23.0
BREATH_DRIFT = 0.2
BREATH_DEPTH_DRIFT_S = 37.0
BREATH_DEPTH_DRIFT = 0.3
# At full breath: the jaw drops a little and the nostrils flare, a movement one sees without
# reading it as speech (mouth shapes stay at rest).
BREATH_SHAPES = {"jawOpen": 0.035, "noseSneerLeft": 0.05, "noseSneerRight": 0.05}
BREATH_FADE_S = 1.0  # breathing eases in after speech stops
HANDOVER_S = 0.2  # speech's first frames blend in from the last idle pose over this long


class IdleMotion:
    """Rows of idle frames and the blend from them into speech, over full model rows
    (blendshapes + visemes). Feed rows in frame order: `speech` for the model's, `pause` for
    frames that have none."""

    def __init__(
        self, channels: tuple[str, ...], seed: int, sample_rate: int, frame_seconds: float
    ) -> None:
        self.sample_rate = sample_rate
        self._breath = np.zeros(len(channels), np.float32)
        for name, depth in BREATH_SHAPES.items():
            if name in channels:
                self._breath[channels.index(name)] = depth
        # Seeded phases, so equal seeds breathe alike and different sessions do not.
        rng = np.random.default_rng([seed, 0x1D1E])
        self._phase, self._depth_phase = (float(x) for x in rng.uniform(0, 2 * math.pi, 2))
        self._handover_frames = max(1, round(HANDOVER_S / frame_seconds))
        self._rest = np.zeros(len(channels), np.float32)
        self._paused_at: float | None = None  # seconds the current pause began (None: speech)
        self._last_idle: npt.NDArray[np.float32] | None = None  # where the blend starts
        self._blended = 0  # speech frames blended since the last pause

    def breath(self, seconds: float) -> float:
        """The breathing curve at `seconds` of the session: 0 (out) .. about 1.3 (deep in)."""
        drift = BREATH_DRIFT * BREATH_DRIFT_S / BREATH_PERIOD_S
        phase = 2 * math.pi * seconds / BREATH_PERIOD_S + drift * math.sin(
            2 * math.pi * seconds / BREATH_DRIFT_S + self._phase
        )
        depth = 1 + BREATH_DEPTH_DRIFT * math.sin(
            2 * math.pi * seconds / BREATH_DEPTH_DRIFT_S + self._depth_phase
        )
        return depth * 0.5 * (1 - math.cos(phase))

    def pause(self, timestamps: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Rows for consecutive idle frames at `timestamps` (16 kHz samples)."""
        rows = np.repeat(self._rest[np.newaxis], timestamps.size, axis=0)
        for row, stamp in enumerate(timestamps.tolist()):
            seconds = stamp / self.sample_rate
            if self._paused_at is None:
                self._paused_at = seconds
            ease = min(1.0, (seconds - self._paused_at) / BREATH_FADE_S)
            ease = ease * ease * (3 - 2 * ease)  # smoothstep: no kink where it starts
            rows[row] += np.float32(ease * self.breath(seconds)) * self._breath
        if rows.shape[0]:
            self._last_idle = rows[-1].copy()
            self._blended = 0
        return rows

    def speech(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The model's rows for consecutive frames, the first after a pause blended in from
        its last pose (unchanged when no pause came before them)."""
        if rows.shape[0] == 0:
            return rows
        self._paused_at = None
        last = self._last_idle
        out = rows
        if last is not None and self._blended < self._handover_frames:
            out = np.array(rows, dtype=np.float32, copy=True)
            steps = self._handover_frames + 1
            for row in range(min(out.shape[0], self._handover_frames - self._blended)):
                share = np.float32((self._blended + 1) / steps)  # of speech, rising to 1
                out[row] = (1 - share) * last + share * out[row]
                self._blended += 1
        self._rest = out[-1].copy()
        return out
