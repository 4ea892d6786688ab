"""Per-session shaping of the model's output frames: temporal smoothing and eye blinks.

Both are functions of the frame sequence only (frame index and 16 kHz timestamp), never of how
audio was chunked or when requests returned, so equal audio and parameters give equal frames.
Frames must be fed in order, exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from a2f_protocol.clock import MODEL_SAMPLE_RATE

# Human spontaneous blinking: roughly 10-20 per minute at irregular intervals, each about a
# quarter of a second, closing faster than opening.
BLINK_MIN_INTERVAL_S = 1.5
BLINK_MEAN_EXTRA_INTERVAL_S = 2.5
BLINK_CLOSE_S = 0.08
BLINK_HOLD_S = 0.03
BLINK_OPEN_S = 0.15
BLINK_S = BLINK_CLOSE_S + BLINK_HOLD_S + BLINK_OPEN_S


@dataclass(frozen=True, slots=True)
class BlinkTiming:
    """The pause from one blink's end to the next one's start: `shortest_s` plus an
    exponential of mean `mean_extra_s`, cut at `longest_s`."""

    shortest_s: float
    mean_extra_s: float
    longest_s: float = math.inf


SPEECH_BLINKS = BlinkTiming(BLINK_MIN_INTERVAL_S, BLINK_MEAN_EXTRA_INTERVAL_S)
# A face with nothing to say is watched for its blinks: their starts lie 2.2-9.5 s apart, never
# the rare 12 s stare an uncut exponential gives (mean about 4.5 s, 13 a minute).
IDLE_BLINKS = BlinkTiming(2.2 - BLINK_S, BLINK_MEAN_EXTRA_INTERVAL_S, 9.5 - BLINK_S)


class BlinkSchedule:
    """Seeded, irregular blink times with their eyelid curve (0 open .. 1 closed)."""

    def __init__(self, seed: int, timing: BlinkTiming = SPEECH_BLINKS) -> None:
        self._rng = np.random.default_rng(seed)
        self._timing = timing
        # (start seconds, peak amplitude) of the current and upcoming blink.
        self._start, self._peak = self._draw(0.0)

    def _draw(self, after: float) -> tuple[float, float]:
        timing = self._timing
        interval = timing.shortest_s + self._rng.exponential(timing.mean_extra_s)
        return after + min(interval, timing.longest_s), 0.85 + 0.15 * self._rng.random()

    def value(self, seconds: float) -> float:
        """Eyelid closure at `seconds`; calls must not go back in time."""
        while seconds >= self._start + BLINK_S:
            self._start, self._peak = self._draw(self._start + BLINK_S)
        phase = seconds - self._start
        if phase < 0:
            return 0.0
        if phase < BLINK_CLOSE_S:
            shape = math.sin(0.5 * math.pi * phase / BLINK_CLOSE_S)
        elif phase < BLINK_CLOSE_S + BLINK_HOLD_S:
            shape = 1.0
        else:
            shape = math.cos(0.5 * math.pi * (phase - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S)
        return self._peak * shape


class Animator:
    """Smoothing then blinks over full output rows (blendshapes + visemes, model order).

    `smoothing` s in [0, 1): y[k] = s * y[k-1] + (1 - s) * x[k], starting from the first frame.
    Blinks are laid over the `blink_channels` with max(), after smoothing so they stay crisp.
    """

    def __init__(
        self,
        smoothing: float,
        blink_channels: npt.NDArray[np.intp] | None,
        seed: int,
        sample_rate: int = MODEL_SAMPLE_RATE,
        blink_timing: BlinkTiming = SPEECH_BLINKS,
    ) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError("smoothing must lie in [0, 1)")
        self.smoothing = np.float32(smoothing)
        self.blink_channels = blink_channels
        self.sample_rate = sample_rate
        self._schedule = BlinkSchedule(seed, blink_timing) if blink_channels is not None else None
        self._previous: npt.NDArray[np.float32] | None = None

    @property
    def active(self) -> bool:
        """False when frames pass through unchanged."""
        return bool(self.smoothing > 0) or self._schedule is not None

    def apply(
        self, weights: npt.NDArray[np.float32], timestamps: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """Shape consecutive frames `weights[n, channels]` shown at `timestamps[:n]`."""
        if not self.active:
            return weights
        out = np.array(weights, dtype=np.float32, copy=True)
        if self.smoothing > 0:
            keep = self.smoothing
            for row in range(out.shape[0]):
                if self._previous is not None:
                    out[row] = keep * self._previous + (1 - keep) * out[row]
                self._previous = out[row].copy()
        if self._schedule is not None and self.blink_channels is not None:
            for row in range(out.shape[0]):
                blink = self._schedule.value(int(timestamps[row]) / self.sample_rate)
                if blink > 0:
                    current = out[row, self.blink_channels]
                    out[row, self.blink_channels] = np.maximum(current, np.float32(blink))
        return out
