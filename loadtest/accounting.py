"""What a real-time stream sends and how its frames are judged; pure, the caller supplies times.

A stream plays a speech file in a loop, one `PushAudio` of `CHUNK_SAMPLES` (40 ms) per 40 ms
of wall clock. Frame k's window ends `window - offset` samples after its timestamp; the chunk
that completed the window is the first one whose end reaches that sample, and the frame's
**added latency** is its arrival time minus that chunk's send time: the delay the service adds
on top of the audio a real-time client can possibly have sent. Frames are lost when an index is
skipped or when fewer frames arrive than the audio sent calls for.

The wire format comes from `a2f_protocol`; nothing here redefines it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from a2f_protocol.clock import MODEL_SAMPLE_RATE, FrameClock
from a2f_protocol.frames import pack_push_audio, unpack_frame

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPEECH_FILE = PROJECT_ROOT / "tests" / "fixtures" / "speech_16k.wav"
MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
CHUNK_SECONDS = 0.04
CHUNK_SAMPLES = round(CHUNK_SECONDS * MODEL_SAMPLE_RATE)
LATENCY_GOAL_S = 0.030


def passed(result: dict) -> bool:
    """A driver run's verdict: every stream connected, nothing lost, out of order or refused,
    and p99 added latency within the goal (unless the audio was sent unpaced: no real time)."""
    return (
        "failed" not in result
        and result["connected"] == result["streams"]
        and result["lost"] == 0
        and result["disorder"] == 0
        and result["errors"] == 0
        and (result.get("unpaced", False) or result["p99_ms"] <= LATENCY_GOAL_S * 1e3)
    )


class LoopingSpeech:
    """A 16 kHz mono speech file as an endless sequence of `PushAudio` chunks."""

    def __init__(self, path: Path = SPEECH_FILE, chunk_samples: int = CHUNK_SAMPLES) -> None:
        pcm, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
        if rate != MODEL_SAMPLE_RATE:
            raise ValueError(f"{path} is {rate} Hz; the load test streams 16 kHz audio")
        self.chunk_samples = chunk_samples
        # Two copies back to back: every chunk, wherever it starts in the loop, is one slice.
        mono = pcm[:, 0]
        repeats = 1 + math.ceil(chunk_samples / mono.size)
        self._loop: npt.NDArray[np.int16] = np.tile(mono, repeats + 1)
        self._period = mono.size

    def chunk(self, index: int) -> bytes:
        """`PushAudio` bytes of chunk `index` (absolute samples `index * chunk_samples ..`)."""
        return pack_push_audio(index * self.chunk_samples, self.samples(index))

    def samples(self, index: int) -> npt.NDArray[np.int16]:
        """The PCM of chunk `index`, as a protocol without sample indices sends it."""
        offset = index * self.chunk_samples % self._period
        return self._loop[offset : offset + self.chunk_samples]


@dataclass
class StreamAccount:
    """Bookkeeping of one stream: chunks sent, frames received, loss, added latency.

    `window_tail` = window - offset (samples after a frame's timestamp its window needs).
    Latencies of frames completed by chunks sent before `measure_from` are not kept (warm-up).
    """

    fps: Fraction
    window_tail: int
    chunk_samples: int = CHUNK_SAMPLES
    measure_from: float = -math.inf
    chunks_sent: int = 0
    frames: int = 0  # frames received
    gaps: int = 0  # frames skipped by the indices (lost while the stream runs)
    disorder: int = 0  # repeated or backwards indices (a protocol violation)
    latencies: list[float] = field(default_factory=list)
    _clock: FrameClock = field(init=False)
    _sent_at: deque[float] = field(default_factory=deque, init=False)  # from chunk _first_kept
    _first_kept: int = field(default=0, init=False)
    _next_index: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._clock = FrameClock(self.fps)

    def sent(self, at: float) -> None:
        """Chunk number `chunks_sent` left at time `at`."""
        self._sent_at.append(at)
        self.chunks_sent += 1

    def received(self, data: bytes, at: float) -> float | None:
        """One A2FB frame arrived at `at`: its added latency in seconds, or None when no chunk
        completed its window (the tail frames `EndSession` flushes, padded with silence)."""
        frame = unpack_frame(data)
        return self.received_frame(frame.frame_index, frame.timestamp_current, at)

    def received_frame(self, index: int, timestamp: int, at: float) -> float | None:
        """`received` for frame `index` at 16 kHz sample `timestamp`, whatever its wire form."""
        if index < self._next_index:
            self.disorder += 1
            return None
        self.gaps += index - self._next_index
        self._next_index = index + 1
        self.frames += 1
        window_end = timestamp + self.window_tail
        chunk = -(-window_end // self.chunk_samples) - 1  # first chunk whose end >= window_end
        if chunk >= self.chunks_sent:
            return None
        sent_at = self._sent_at[max(chunk - self._first_kept, 0)]
        # Frames come in order, so chunks before this one are never asked about again.
        while self._first_kept < chunk:
            self._sent_at.popleft()
            self._first_kept += 1
        latency = at - sent_at
        if sent_at >= self.measure_from:
            self.latencies.append(latency)
        return latency

    @property
    def samples_sent(self) -> int:
        return self.chunks_sent * self.chunk_samples

    def expected_frames(self) -> int:
        """Frames the audio sent so far calls for once `EndSession` flushed the tail."""
        return self._clock.frames_before(self.samples_sent)

    def lost(self) -> int:
        """Frames missing after the session ended (skipped indices included)."""
        return max(self.expected_frames() - self.frames, 0)


def percentiles(values: list[float], points: tuple[float, ...] = (50, 95, 99)) -> list[float]:
    """Percentiles (same units as `values`); NaN when there are none."""
    if not values:
        return [math.nan] * len(points)
    return [float(v) for v in np.percentile(np.asarray(values), points)]
