"""One session's framing and output shaping, without I/O: audio in, spans of frames out, model
rows in, frames out.

It bundles the pieces every path must combine the same way -- the session's `AudioStream`
(frame clock and windows), the `Animator` (smoothing, seeded blinks) and the channel
selection -- so the batch API gives the frames the WebSocket gives for the same audio and
parameters. Triton sits between `stream.take_span()` and `shape()`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from a2f_protocol.clock import FrameClock
from a2f_protocol.export_formats import FrameBlock
from gateway.inference.batch import SpanBatch
from gateway.model_info import ModelInfo
from gateway.session.animation import IDLE_BLINKS, SPEECH_BLINKS, Animator
from gateway.session.audio import AudioStream
from gateway.session.config import SessionConfig
from gateway.session.idle import IdleMotion

BLINK_PREFIX = "eyeBlink"  # ARKit eyelid channels the blink generator drives


def blink_channels(config: SessionConfig, model: ModelInfo) -> npt.NDArray[np.intp] | None:
    """Indices (into blendshapes + visemes) that blinks drive, or None when blinks are off."""
    if not config.blinks:
        return None
    every = model.blendshapes + model.visemes
    return np.array([i for i, name in enumerate(every) if name.startswith(BLINK_PREFIX)], np.intp)


class FramePipeline:
    """Audio stream + animator + channel selection of one session."""

    def __init__(self, config: SessionConfig, model: ModelInfo) -> None:
        self.config = config
        self.clock = FrameClock(config.fps, model.sample_rate)
        self.stream = AudioStream(
            self.clock,
            model.window,
            model.offset,
            config.input_rate,
            normalise_level=config.normalise_level,
        )
        self.animator = Animator(
            config.smoothing,
            blink_channels(config, model),
            config.seed,
            model.sample_rate,
            IDLE_BLINKS if config.idle else SPEECH_BLINKS,
        )
        self.idle = (
            IdleMotion(
                model.blendshapes + model.visemes,
                config.seed,
                model.sample_rate,
                float(1 / config.fps),
            )
            if config.idle
            else None
        )

    def shape(self, batch: SpanBatch, weights: npt.NDArray[np.float32]) -> FrameBlock:
        """The frames of `batch` from the model's rows for it (calls in frame order, mixed
        with `shape_idle`'s)."""
        if self.idle is not None:
            weights = self.idle.speech(weights)
        return self._shaped(batch.first_index, batch.timestamps, weights)

    def shape_idle(self, first_index: int, timestamps: npt.NDArray[np.int64]) -> FrameBlock:
        """Frames `first_index ..` at `timestamps` (one more than frames) of a pause, without
        the model (a session with idle frames only)."""
        assert self.idle is not None, "idle frames of a session without them"
        return self._shaped(first_index, timestamps, self.idle.pause(timestamps[:-1]))

    def _shaped(
        self, first_index: int, timestamps: npt.NDArray[np.int64], rows: npt.NDArray[np.float32]
    ) -> FrameBlock:
        shaped = self.animator.apply(rows, timestamps)
        return FrameBlock(first_index, timestamps, shaped[:, self.config.channels.indices])
