"""Continuing a stream in a new session after its gateway went away, without I/O.

A session's frame k is shown at 16 kHz sample `clock.timestamp(k)` and computed from a model
window reaching `WINDOW_LEAD_SAMPLES` before it (PROTOCOL.md). To go on after frame n-1 in a
new session, the client resends its audio from an origin some way before frame n: the new
session's frame 0 is then the old stream's frame `first_frame`, and its frames up to n-1 are
duplicates to drop. The origin is a frame whose timestamp is a whole number of samples at both
16 kHz and the client's rate, so that every later frame of the new session falls on exactly
the old clock: renumbered, frames and timestamps go on as if nothing happened, and frames from
n on see the same audio and emotions as in one session (blinks and smoothing restart with the
new session). `AudioTape` keeps the sent audio and emotion changes that a resume may need, and
renumbers frames.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from a2f_protocol.clock import MODEL_SAMPLE_RATE, WINDOW_LEAD_SAMPLES, FrameClock
from a2f_protocol.frames import BlendshapeFrame

Emotions = Mapping[str, float]
RESUME_CONTEXT_SAMPLES = 2 * WINDOW_LEAD_SAMPLES
"""Audio resent before the first missing frame: its window, and as much again for the
session's resampler (when the client's rate is not 16 kHz) to settle."""


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a new session starts: its frame 0 is the stream's `first_frame`, shown at 16 kHz
    sample `timestamp`, and its audio starts at the client's sample `sample`."""

    first_frame: int
    timestamp: int
    sample: int


def resume_point(clock: FrameClock, next_frame: int, rate: int) -> ResumePoint:
    """The latest origin at least `RESUME_CONTEXT_SAMPLES` before frame `next_frame` (or the
    stream's start) that both clocks hit exactly."""
    limit = clock.timestamp(next_frame) - RESUME_CONTEXT_SAMPLES
    frame = min(next_frame, clock.frames_before(limit + 1))  # the last frame at or before limit
    while frame > 0:
        timestamp = clock.timestamp(frame)
        exact = (frame * clock.sample_rate / clock.fps).denominator == 1
        if timestamp <= limit and exact and timestamp * rate % MODEL_SAMPLE_RATE == 0:
            return ResumePoint(frame, timestamp, timestamp * rate // MODEL_SAMPLE_RATE)
        frame -= 1
    return ResumePoint(0, 0, 0)


@dataclass(frozen=True, slots=True)
class Block:
    """Audio from sample `start`, sent after `SetEmotion(emotions)` when that is not None."""

    start: int
    pcm: npt.NDArray[np.int16]
    emotions: Emotions | None = None


class AudioTape:
    """The audio sent so far at `rate` (int16 blocks) with the emotion changes sent between
    them, from the oldest sample a resume may need, and the frames delivered so far."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.end = 0  # samples appended in all
        self.finished = False  # the source has no more audio
        self.next_frame = 0  # frames delivered to the caller
        self.clock: FrameClock | None = None  # known once the first session has started
        self.origin = ResumePoint(0, 0, 0)  # of the current session
        self._blocks: deque[Block] = deque()
        self._trimmed_emotions: Emotions | None = None  # the last change among trimmed blocks

    def append(self, pcm: npt.NDArray[np.int16], emotions: Emotions | None = None) -> None:
        """Audio following the previous block, after an emotion change if one is given."""
        self._blocks.append(Block(self.end, pcm, emotions))
        self.end += pcm.size
        self._trim()

    def since(self, sample: int) -> list[Block]:
        """Blocks covering `sample` .. `end`; the first starts at `sample` (its emotion
        change, if it came before `sample`, is `emotions_at(sample)`'s)."""
        blocks = []
        for block in self._blocks:
            if block.start + block.pcm.size > sample:
                skip = max(0, sample - block.start)
                blocks.append(Block(sample, block.pcm[skip:]) if skip else block)
        return blocks

    def emotions_at(self, sample: int) -> Emotions | None:
        """The emotions set before audio `sample` (None: none since the session request's)."""
        latest = self._trimmed_emotions
        for block in self._blocks:
            if block.start >= sample:
                break
            if block.emotions is not None:
                latest = block.emotions
        return latest

    def resume(self) -> ResumePoint:
        """Start a new session: where its audio and frames begin."""
        if self.clock is None:  # no session got going: start from the top
            self.origin = ResumePoint(0, 0, 0)
        else:
            self.origin = resume_point(self.clock, self.next_frame, self.rate)
        return self.origin

    def deliver(self, frame: BlendshapeFrame) -> BlendshapeFrame | None:
        """A frame of the current session as a frame of the stream; None for one delivered
        before (from the audio resent ahead of the first missing frame)."""
        index = self.origin.first_frame + frame.frame_index
        if index < self.next_frame:
            return None
        self.next_frame = index + 1
        shift = self.origin.timestamp
        return replace(
            frame,
            frame_index=index,
            timestamp_current=frame.timestamp_current + shift,
            timestamp_next=frame.timestamp_next + shift,
        )

    def _trim(self) -> None:
        if self.clock is None:
            return
        keep = resume_point(self.clock, self.next_frame, self.rate).sample
        while self._blocks and self._blocks[0].start + self._blocks[0].pcm.size <= keep:
            if (emotions := self._blocks.popleft().emotions) is not None:
                self._trimmed_emotions = emotions
