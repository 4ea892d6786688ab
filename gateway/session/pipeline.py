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
from gateway.session.animation import Animator
from gateway.session.audio import AudioStream
from gateway.session.config import SessionConfig

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
        self.stream = AudioStream(self.clock, model.window, model.offset, config.input_rate)
        self.animator = Animator(
            config.smoothing, blink_channels(config, model), config.seed, model.sample_rate
        )

    def shape(self, batch: SpanBatch, weights: npt.NDArray[np.float32]) -> FrameBlock:
        """The frames of `batch` from the model's rows for it (calls in frame order)."""
        shaped = self.animator.apply(weights, batch.timestamps)
        return FrameBlock(
            batch.first_index, batch.timestamps, shaped[:, self.config.channels.indices]
        )
