"""The frame clock every party shares: which 16 kHz sample each frame is shown at.

Frame k sits at sample `k * 16000 * den / num` for a rational frame rate `num/den`, floored to
a whole sample, so 30000/1001 never drifts. The gateway, the client and the load test all
count frames with this one object.
"""

from __future__ import annotations

from fractions import Fraction

MODEL_SAMPLE_RATE = 16_000
"""The network's input rate; timestamps on the wire count samples at this rate."""

WINDOW_SAMPLES = 8320
"""A frame's model window (PROTOCOL.md): this many 16 kHz samples ..."""
WINDOW_LEAD_SAMPLES = 4160
"""... starting this many before the frame's timestamp. A client that cannot read the model
repository (one load-testing a remote deployment) knows from these two when a frame can be
computed: once `WINDOW_SAMPLES - WINDOW_LEAD_SAMPLES` samples after its timestamp arrived."""

PCM_SCALE = 1.0 / 32768.0
"""int16 full scale to [-1, 1), as the reference server."""


class FrameClock:
    """Exact frame timestamps in samples for a rational frame rate."""

    def __init__(self, fps: Fraction, sample_rate: int = MODEL_SAMPLE_RATE) -> None:
        if fps <= 0:
            raise ValueError("frame rate must be positive")
        self.fps = fps
        self.sample_rate = sample_rate
        # Integer form of samples-per-frame = sample_rate * den / num.
        self._mul = sample_rate * fps.denominator
        self._div = fps.numerator

    def timestamp(self, frame_index: int) -> int:
        """First sample (floored) at or after which frame `frame_index` is shown."""
        return frame_index * self._mul // self._div

    def frames_before(self, sample: int) -> int:
        """How many frames have a timestamp strictly before `sample`."""
        if sample <= 0:
            return 0
        # floor(k*mul/div) < sample  <=>  k*mul < sample*div  <=>  k < ceil(sample*div/mul)
        return -(-sample * self._div // self._mul)
