"""The load test's bookkeeping: which chunk completes a frame, added latency, loss."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from a2f_protocol.clock import FrameClock
from a2f_protocol.frames import pack_frame, parse_push_audio
from loadtest.accounting import CHUNK_SAMPLES, LoopingSpeech, StreamAccount

TAIL = 4160  # window - offset of the 8320-sample window centred on the frame


def frame(clock: FrameClock, index: int) -> bytes:
    return pack_frame(index, clock.timestamp(index), clock.timestamp(index + 1), np.zeros(52))


def test_latency_counts_from_the_chunk_that_completed_the_window() -> None:
    fps = Fraction(30)
    clock = FrameClock(fps)
    account = StreamAccount(fps, TAIL)
    for chunk in range(20):
        account.sent(at=chunk * 0.04)
    # Frame 3 sits at sample 1600; its window ends at 5760, the end of chunk 8 (640 * 9).
    assert np.isclose(account.received(frame(clock, 3), at=0.4), 0.4 - 8 * 0.04)
    # Frame 4 (sample 2133) needs 6293 samples: chunk 9 (ends at 6400) completed it.
    assert np.isclose(account.received(frame(clock, 4), at=1.0), 1.0 - 9 * 0.04)


def test_skipped_and_missing_frames_are_lost() -> None:
    fps = Fraction(60)
    clock = FrameClock(fps)
    account = StreamAccount(fps, TAIL)
    for chunk in range(50):  # 2 s of audio: 120 frames once EndSession flushed the tail
        account.sent(at=chunk * 0.04)
    for index in (0, 1, 2, 5, 6):
        account.received(frame(clock, index), at=5.0)
    assert account.gaps == 2
    assert account.expected_frames() == 120
    assert account.lost() == 115


def test_tail_frames_have_no_latency_and_warmup_latencies_are_dropped() -> None:
    fps = Fraction(30)
    clock = FrameClock(fps)
    account = StreamAccount(fps, TAIL, measure_from=0.2)
    for chunk in range(10):
        account.sent(at=chunk * 0.04)
    assert account.received(frame(clock, 0), at=0.5) is not None  # chunk 6 (0.24 s) completed it
    assert account.received(frame(clock, 11), at=0.6) is None  # beyond the audio sent
    assert account.latencies == [0.5 - 0.24]


def test_looping_speech_chunks_are_consecutive_push_audio() -> None:
    speech = LoopingSpeech()
    first, later = parse_push_audio(speech.chunk(0)), parse_push_audio(speech.chunk(1000))
    assert first.start_sample_index == 0 and first.pcm.size == CHUNK_SAMPLES
    assert later.start_sample_index == 1000 * CHUNK_SAMPLES and later.pcm.size == CHUNK_SAMPLES
