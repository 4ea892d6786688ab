"""The per-session audio state machine: no I/O, no clocks, no Triton.

Feed it PushAudio chunks; it validates the sample indices, zero-fills gaps, resamples when the
client's rate is not 16 kHz, lifts quiet speech (`gateway.session.level`), and hands out the
frames that became computable as the stretch of audio their windows cover (a `SpanBatch`, whose
windows `SpanBatch.cut_windows` or Triton's `a2f_span` cut). Frame k sits at 16 kHz sample `k * 16000 * den / num` (exact rationals,
floored to a whole sample, so 30000/1001 never drifts); its window is the `window` samples
starting `offset` before it, zeros before sample 0. A frame is ready as soon as its window's
last sample arrived.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from a2f_protocol.clock import MODEL_SAMPLE_RATE, PCM_SCALE, FrameClock
from a2f_protocol.messages import ProtocolError
from gateway.inference.batch import SpanBatch
from gateway.session.level import ENABLED_BY_DEFAULT, LevelNormaliser

MAX_GAP_SECONDS = 10
# 16 kHz samples a resampled stream's last push rings on into the silence after it (soxr's
# filter): frames whose windows reach these still go to the model.
RESAMPLER_RINGING = 64


class AudioAccumulator:
    """Contiguous 16 kHz audio from sample 0; hands out each frame's window exactly once.

    Memory stays bounded: samples before the next pending frame's window are dropped.
    """

    def __init__(self, clock: FrameClock, window: int, offset: int) -> None:
        if not 0 <= offset <= window:
            raise ValueError("offset must lie inside the window")
        self.clock = clock
        self.window = window
        self.offset = offset
        self.received = 0  # samples appended so far
        self.next_frame = 0  # first frame not handed out yet
        self._base = 0  # absolute index of _samples[0]
        self._samples = np.zeros(0, dtype=np.float32)

    def append(self, samples: npt.NDArray[np.float32]) -> None:
        """Add audio that follows the audio received so far."""
        self._samples = np.concatenate((self._samples, samples.astype(np.float32, copy=False)))
        self.received += int(samples.size)

    def take_span(
        self, max_frames: int, *, flush: bool = False, silent_from: int | None = None
    ) -> SpanBatch | None:
        """Up to `max_frames` frames not handed out yet whose windows are complete, as the
        received audio their windows cover.

        With `flush` (end of audio), every frame whose time lies inside the received audio is
        complete: its window is padded with silence past the end. With `silent_from`, only
        frames whose windows begin before that sample (see `take_silence`).
        """
        timestamps = self._ready(max_frames, flush)
        if timestamps is None:
            return None
        if silent_from is not None:
            count = int(np.count_nonzero(self._window_starts(timestamps) < silent_from))
            if count == 0:
                return None
            timestamps = timestamps[: count + 1]
        start = max(int(timestamps[0]) - self.offset, 0)
        end = min(int(timestamps[-2]) - self.offset + self.window, self.received)
        # A view: appends and trims build new arrays, so these samples never change.
        samples = self._samples[start - self._base : end - self._base]
        return self._handed_out(SpanBatch(self.next_frame, timestamps, start, samples))

    def take_silence(
        self, max_frames: int, silent_from: int, *, flush: bool = False
    ) -> SpanBatch | None:
        """Up to `max_frames` complete frames whose windows lie wholly at or after sample
        `silent_from`, where the stream holds only silence: their span holds no samples."""
        timestamps = self._ready(max_frames, flush)
        if timestamps is None:
            return None
        starts = self._window_starts(timestamps)
        if starts[0] < silent_from:
            return None
        count = int(np.count_nonzero(starts >= silent_from))
        timestamps = timestamps[: count + 1]
        empty = np.zeros(0, dtype=np.float32)
        return self._handed_out(SpanBatch(self.next_frame, timestamps, int(timestamps[0]), empty))

    def _window_starts(self, timestamps: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Where the windows of the frames at `timestamps[:-1]` begin (sample 0 at the least:
        before it lies nothing)."""
        return np.maximum(timestamps[:-1] - self.offset, 0)

    def _ready(self, max_frames: int, flush: bool) -> npt.NDArray[np.int64] | None:
        """Timestamps of the next up to `max_frames` complete frames, plus the one after."""
        if flush:
            end_frame = self.clock.frames_before(self.received)
        else:
            # Frame k is complete when timestamp(k) - offset + window <= received.
            end_frame = self.clock.frames_before(self.received - (self.window - self.offset) + 1)
        end_frame = min(end_frame, self.next_frame + max_frames)
        if end_frame <= self.next_frame:
            return None
        return np.fromiter(
            (self.clock.timestamp(k) for k in range(self.next_frame, end_frame + 1)),
            dtype=np.int64,
            count=end_frame + 1 - self.next_frame,
        )

    def _handed_out(self, batch: SpanBatch) -> SpanBatch:
        self.next_frame = batch.first_index + batch.count
        self._trim()
        return batch

    def _trim(self) -> None:
        keep_from = max(self.clock.timestamp(self.next_frame) - self.offset, 0)
        drop = min(keep_from, self.received) - self._base
        if drop > 0:
            # A view, not a copy: copying the rest at every job made one 4 MiB push cost
            # 62 copies of megabytes (104 of its 124 ms in the event loop). The next append's
            # concatenation compacts, and views already handed out stay valid either way.
            self._samples = self._samples[drop:]
            self._base += drop


class AudioError(ProtocolError):
    """A PushAudio chunk the session refuses; the session stays usable."""


class AudioStream:
    """Client-side sample indices -> 16 kHz accumulator (validation, gap fill, resampling).

    `input_rate` is the client's PCM rate; `startSampleIndex` and the gap limit count the
    client's samples, frame timestamps stay at 16 kHz.
    """

    def __init__(
        self,
        clock: FrameClock,
        window: int,
        offset: int,
        input_rate: int = MODEL_SAMPLE_RATE,
        *,
        normalise_level: bool = ENABLED_BY_DEFAULT,
    ) -> None:
        self.input_rate = input_rate
        self.max_gap = MAX_GAP_SECONDS * input_rate
        self.received = 0  # client samples, gaps and filled silence included
        # Only a stream with idle frames fills silence (`fill_silence`); then `received` runs
        # ahead of `audio_end`, the end of the last push, and `lag` is how far pushes moved
        # past silence filled where they would have landed.
        self.audio_end = 0
        self.lag = 0
        self.finished = False
        self.accumulator = AudioAccumulator(clock, window, offset)
        self._resampler = (
            None
            if input_rate == MODEL_SAMPLE_RATE
            else soxr.ResampleStream(input_rate, MODEL_SAMPLE_RATE, 1, dtype="float32")
        )
        # Once here, at the model's rate, so every path (WebSocket, gRPC, batch) hears the same.
        self._level = LevelNormaliser() if normalise_level else None

    def push(self, start_sample_index: int, pcm: npt.NDArray[np.int16]) -> None:
        """Accept one chunk; raises `AudioError` (nothing changes) when it is refused.

        Collect the frames it completed with `take_span`.
        """
        if self.finished:
            raise AudioError("PushAudio after the end of the audio", "session_ended")
        if start_sample_index < 0:
            raise AudioError("startSampleIndex must be >= 0", "negative_index")
        index = start_sample_index + self.lag
        if index < self.audio_end:
            raise AudioError(
                "PushAudio startSampleIndex is behind the accumulator (out-of-order audio)",
                "out_of_order",
            )
        # Behind filled silence only (never without idle frames: there `audio_end` is
        # `received`): the audio follows the silence, and so does every later push.
        lag = max(self.received - index, 0)
        gap = index + lag - self.received
        if gap > self.max_gap:
            raise AudioError("Audio gap too large", "gap_too_large")
        samples = np.zeros(gap + pcm.size, dtype=np.float32)
        samples[gap:] = pcm * np.float32(PCM_SCALE)
        self.lag += lag
        self.received += samples.size
        self.audio_end = self.received
        self.accumulator.append(self._to_model(samples, last=False))

    def fill_silence(self, until: int) -> None:
        """Silence up to client sample `until` (nothing when the stream is there already): a
        pause of a session with idle frames, taken as a push of zeros would be."""
        if self.finished or until <= self.received:
            return
        samples = np.zeros(until - self.received, dtype=np.float32)
        self.received = until
        self.accumulator.append(self._to_model(samples, last=False))

    @property
    def silent_from(self) -> int:
        """The 16 kHz sample from which the stream holds only filled silence: the end of the
        last push, and past a resampler's filter its ringing."""
        if self._resampler is None or self.audio_end == 0:
            return self.audio_end
        return -(-self.audio_end * MODEL_SAMPLE_RATE // self.input_rate) + RESAMPLER_RINGING

    def finish(self) -> None:
        """End of audio: drain the resampler; `take_span` then also returns the padded tail
        frames."""
        if self._resampler is not None and not self.finished:
            self.accumulator.append(self._to_model(np.zeros(0, dtype=np.float32), last=True))
        self.finished = True

    def take_span(self, max_frames: int) -> SpanBatch | None:
        """The next up to `max_frames` computable frames as one contiguous span of audio (call
        until it returns None)."""
        return self.accumulator.take_span(max_frames, flush=self.finished)

    def take_frames(self, max_frames: int) -> tuple[SpanBatch, bool] | None:
        """For a stream that fills silence: the next up to `max_frames` computable frames,
        and whether their windows hold only filled silence (no audio: no model needed)."""
        accumulator, silent_from = self.accumulator, self.silent_from
        span = accumulator.take_span(max_frames, flush=self.finished, silent_from=silent_from)
        if span is not None:
            return span, False
        silence = accumulator.take_silence(max_frames, silent_from, flush=self.finished)
        return None if silence is None else (silence, True)

    def _to_model(self, samples: npt.NDArray[np.float32], *, last: bool) -> npt.NDArray[np.float32]:
        """Client samples -> the model's rate and level."""
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        return samples if self._level is None else self._level.process(samples)
