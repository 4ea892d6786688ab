"""Resuming a stream in a new session (pure): the origin lies on both clocks, early enough for
the first missing frame's window, and renumbered frames continue the stream's clock."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from a2f_client.resume import RESUME_CONTEXT_SAMPLES, AudioTape, ResumePoint, resume_point
from a2f_protocol.clock import FrameClock
from a2f_protocol.frames import BlendshapeFrame

RATES = [Fraction(60), Fraction(30), Fraction(30000, 1001), Fraction(24)]


@given(
    fps=st.sampled_from(RATES),
    rate=st.sampled_from([8_000, 16_000, 22_050, 44_100, 48_000]),
    next_frame=st.integers(0, 5_000),
)
def test_the_origin_is_exact_on_both_clocks_and_early_enough(
    fps: Fraction, rate: int, next_frame: int
) -> None:
    clock = FrameClock(fps)
    point = resume_point(clock, next_frame, rate)
    assert point.timestamp == clock.timestamp(point.first_frame)
    assert point.first_frame <= next_frame
    assert (
        point.timestamp == 0
        or point.timestamp <= clock.timestamp(next_frame) - RESUME_CONTEXT_SAMPLES
    )
    assert point.sample * 16_000 == point.timestamp * rate  # the same instant, exactly
    # Every later frame of a session starting there falls on the stream's clock.
    for j in range(0, 200, 7):
        assert clock.timestamp(point.first_frame + j) == point.timestamp + clock.timestamp(j)


def test_the_origin_is_the_latest_that_fits() -> None:
    clock = FrameClock(Fraction(60))  # every third frame is a whole number of samples
    point = resume_point(clock, 600, 16_000)  # frame 600 is at sample 160000
    assert point == ResumePoint(567, 151200, 151200)  # 151200 <= 160000 - 8320 < 152000


def frame(index: int, clock: FrameClock) -> BlendshapeFrame:
    weights = np.full(2, index, np.float32)
    return BlendshapeFrame(index, clock.timestamp(index), clock.timestamp(index + 1), weights)


def test_a_resumed_session_continues_the_stream_without_duplicates() -> None:
    clock = FrameClock(Fraction(60))
    tape = AudioTape(16_000)
    tape.clock = clock
    tape.append(np.zeros(16_000 * 10, np.int16))
    assert tape.resume() == ResumePoint(0, 0, 0)
    delivered = [tape.deliver(frame(k, clock)) for k in range(600)]
    assert [f.frame_index for f in delivered if f] == list(range(600))
    origin = tape.resume()  # the gateway went away after frame 599
    assert origin.first_frame == 567
    # The new session's frames 0..32 were delivered already; 33 on are the stream's 600 on.
    again = [tape.deliver(frame(j, clock)) for j in range(60)]
    assert again[:33] == [None] * 33
    resumed = [f for f in again if f is not None]
    assert [f.frame_index for f in resumed] == list(range(600, 627))
    assert [f.timestamp_current for f in resumed] == [clock.timestamp(k) for k in range(600, 627)]
    assert [f.timestamp_next for f in resumed] == [clock.timestamp(k + 1) for k in range(600, 627)]


def test_the_tape_keeps_only_what_a_resume_may_resend() -> None:
    clock = FrameClock(Fraction(30000, 1001))
    tape = AudioTape(48_000)
    tape.clock = clock
    block = np.arange(4_800, dtype=np.int16)  # 0.1 s
    for _ in range(100):
        tape.append(block)
    for k in range(250):
        tape.deliver(frame(k, clock))
    tape.append(block)  # trims
    origin = resume_point(clock, 250, 48_000)
    blocks = tape.since(origin.sample)
    assert blocks[0].start == origin.sample
    assert blocks[-1].start + blocks[-1].pcm.size == tape.end
    held = sum(block.pcm.size for block in tape.since(0))
    assert held < tape.end - origin.sample + block.size  # older blocks are gone
    # The resent audio is the audio sent, sample for sample.
    np.testing.assert_array_equal(
        np.concatenate([b.pcm for b in blocks]), np.tile(block, 101)[origin.sample :]
    )


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_nothing_delivered_yet_resends_everything(rate: int) -> None:
    tape = AudioTape(rate)
    tape.append(np.ones(100, np.int16))
    assert tape.resume() == ResumePoint(0, 0, 0)
    assert tape.since(0)[0].start == 0


def test_emotion_changes_are_resent_where_they_happened() -> None:
    tape = AudioTape(16_000)
    tape.clock = FrameClock(Fraction(60))
    joy, calm = {"joy": 1.0}, {"joy": 0.0}
    tape.append(np.zeros(1000, np.int16))
    tape.append(np.zeros(1000, np.int16), joy)
    tape.append(np.zeros(1000, np.int16), calm)
    assert tape.emotions_at(0) is None and tape.emotions_at(1000) is None
    assert tape.emotions_at(1500) == joy and tape.emotions_at(2001) == calm
    # A resend from inside the joyful block starts joyful and changes where it changed.
    blocks = tape.since(1500)
    assert [(b.start, b.emotions) for b in blocks] == [(1500, None), (2000, calm)]
    # Trimmed blocks keep the emotion they left in effect.
    for _ in range(30):
        tape.append(np.zeros(16_000, np.int16))
    for k in range(1000):
        tape.deliver(frame(k, tape.clock))
    tape.append(np.zeros(16_000, np.int16))  # trims
    assert tape.since(0)[0].start > 3000 and tape.emotions_at(tape.end) == calm
