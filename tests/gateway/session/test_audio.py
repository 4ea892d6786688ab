"""The session state machine: frame clock, windows, gaps, errors, flush, memory, resampling."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a2f_protocol.clock import FrameClock
from gateway.inference.batch import SpanBatch
from gateway.model_info import load_repository_module
from gateway.session.audio import MAX_GAP_SECONDS, AudioError, AudioStream

framing = load_repository_module(
    Path(__file__).resolve().parents[3] / "model_repository/a2f_span/1/framing.py"
)
WINDOW, OFFSET = 8320, 4160
RATES = [Fraction(60), Fraction(30000, 1001), Fraction(24), Fraction(25), Fraction(50)]


@given(st.sampled_from(RATES), st.integers(0, 10**7))
def test_timestamps_are_exact_floors(fps: Fraction, k: int) -> None:
    clock = FrameClock(fps)
    exact = Fraction(k) * 16000 / fps
    assert clock.timestamp(k) == exact.__floor__()


def test_30000_over_1001_does_not_drift() -> None:
    clock = FrameClock(Fraction(30000, 1001))
    # After exactly 30000 frames (1001 s) the clock sits exactly on a whole second.
    assert clock.timestamp(30000) == 1001 * 16000
    assert clock.timestamp(30000 * 1000) == 1001 * 16000 * 1000


@given(st.sampled_from(RATES), st.integers(-100, 10**6))
def test_frames_before_counts_timestamps(fps: Fraction, sample: int) -> None:
    clock = FrameClock(fps)
    n = clock.frames_before(sample)
    assert n == 0 or clock.timestamp(n - 1) < sample
    assert clock.timestamp(n) >= sample


def expected_windows(audio: np.ndarray, clock: FrameClock, frames: int) -> np.ndarray:
    """Windows cut straight from the whole (silence-padded) signal."""
    padded = np.concatenate([np.zeros(OFFSET, np.float32), audio, np.zeros(WINDOW, np.float32)])
    return np.stack(
        [padded[clock.timestamp(k) : clock.timestamp(k) + WINDOW] for k in range(frames)]
    )


def windows_of(batch: SpanBatch) -> np.ndarray:
    """The windows the dispatcher cuts into a request for `batch`'s frames."""
    windows = np.empty((batch.count, WINDOW), np.float32)
    batch.cut_windows(windows, slice(None), WINDOW, OFFSET)
    return windows


def run(stream: AudioStream, chunks: list[np.ndarray], start: int = 0) -> list[SpanBatch]:
    """Push contiguous chunks from `start`, collecting every batch, then flush."""
    starts = (start + np.cumsum([0] + [chunk.size for chunk in chunks])[:-1]).tolist()
    return run_with_starts(stream, list(zip(starts, chunks, strict=True)))


def joined(batches: list[SpanBatch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame indices, timestamps incl. next, windows) of consecutive batches."""
    indices = np.concatenate([np.arange(b.first_index, b.first_index + b.count) for b in batches])
    timestamps = np.concatenate(
        [b.timestamps[:-1] for b in batches] + [batches[-1].timestamps[-1:]]
    )
    return indices, timestamps, np.concatenate([windows_of(b) for b in batches])


def split(audio: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(audio, sorted({min(c, audio.size) for c in cuts}))


PCM = np.random.default_rng(1).integers(-20000, 20000, 30000).astype(np.int16)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(RATES), st.lists(st.integers(0, PCM.size), max_size=12))
def test_any_chunking_gives_the_same_frames(fps: Fraction, cuts: list[int]) -> None:
    clock = FrameClock(fps)
    batches = run(AudioStream(clock, WINDOW, OFFSET), split(PCM, cuts))
    indices, timestamps, windows = joined(batches)
    frames = clock.frames_before(PCM.size)  # every frame whose time lies inside the audio
    assert indices.tolist() == list(range(frames))
    assert timestamps.tolist() == [clock.timestamp(k) for k in range(frames + 1)]
    np.testing.assert_array_equal(windows, expected_windows(PCM / np.float32(32768), clock, frames))


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(RATES), st.lists(st.integers(0, PCM.size), max_size=8), st.integers(1, 300))
def test_server_side_framing_cuts_the_windows_the_gateway_cuts(
    fps: Fraction, cuts: list[int], max_frames: int
) -> None:
    """a2f_span's `window_view` on a span == `SpanBatch.cut_windows`, any chunking and size."""
    stream = AudioStream(FrameClock(fps), WINDOW, OFFSET)
    chunks = split(PCM, cuts)
    starts = np.cumsum([0, *map(len, chunks)])[:-1].tolist()
    spans = []
    for chunk, start in zip(chunks, starts, strict=True):
        stream.push(start, chunk)
        while (batch := stream.take_span(max_frames)) is not None:
            assert batch.count <= max_frames
            spans.append(batch)
    stream.finish()
    while (batch := stream.take_span(max_frames)) is not None:
        spans.append(batch)
    assert sum(span.count for span in spans) == FrameClock(fps).frames_before(PCM.size)
    for span in spans:
        view, rows = framing.window_view(span.samples, span.centres, WINDOW, OFFSET)
        np.testing.assert_array_equal(view[rows], windows_of(span))


def test_frames_are_ready_as_soon_as_their_window_is_complete() -> None:
    clock = FrameClock(Fraction(60))
    stream = AudioStream(clock, WINDOW, OFFSET)
    stream.push(0, np.zeros(4159, np.int16))
    assert stream.take_span(1024) is None  # frame 0 needs samples up to 4160 (exclusive)
    stream.push(4159, np.zeros(1, np.int16))
    batch = stream.take_span(1024)
    assert batch is not None and (batch.first_index, batch.count) == (0, 1)
    stream.push(4160, np.zeros(265, np.int16))  # frame 1 at 266 needs 4426 samples
    assert stream.take_span(1024) is None
    stream.push(4425, np.zeros(1, np.int16))
    batch = stream.take_span(1024)
    assert batch is not None and batch.first_index == 1 and batch.timestamps.tolist() == [266, 533]


def test_take_limits_the_batch_size() -> None:
    stream = AudioStream(FrameClock(Fraction(60)), WINDOW, OFFSET)
    stream.push(0, np.zeros(16000, np.int16))
    sizes = []
    while (batch := stream.take_span(10)) is not None:
        sizes.append(batch.count)
    assert sizes == [10, 10, 10, 10, 5]  # 45 frames complete in the first second


def test_gap_is_zero_filled() -> None:
    clock = FrameClock(Fraction(60))
    ones = np.full(8000, 16384, np.int16)
    stream = AudioStream(clock, WINDOW, OFFSET)
    _, _, windows = joined(run_with_starts(stream, [(0, ones), (24000, ones)]))
    audio = np.concatenate([ones, np.zeros(16000, np.int16), ones]) / np.float32(32768)
    frames = clock.frames_before(audio.size)
    np.testing.assert_array_equal(windows, expected_windows(audio, clock, frames))


def run_with_starts(stream: AudioStream, pushes: list[tuple[int, np.ndarray]]) -> list[SpanBatch]:
    batches = []
    for start, chunk in pushes:
        stream.push(start, chunk)
        while (batch := stream.take_span(1024)) is not None:
            batches.append(batch)
    stream.finish()
    while (batch := stream.take_span(1024)) is not None:
        batches.append(batch)
    return batches


@pytest.mark.parametrize(
    ("start", "code"),
    [(-1, "negative_index"), (50, "out_of_order"), (100 + 160_001, "gap_too_large")],
)
def test_refused_chunks_leave_the_session_usable(start: int, code: str) -> None:
    stream = AudioStream(FrameClock(Fraction(60)), WINDOW, OFFSET)
    stream.push(0, np.zeros(100, np.int16))
    with pytest.raises(AudioError) as caught:
        stream.push(start, np.zeros(10, np.int16))
    assert caught.value.code == code
    assert stream.received == 100
    stream.push(100 + 160_000, np.zeros(10, np.int16))  # exactly 10 s of gap is fine
    assert stream.received == 160_110


def test_gap_limit_counts_client_samples() -> None:
    stream = AudioStream(FrameClock(Fraction(60)), WINDOW, OFFSET, input_rate=48000)
    assert stream.max_gap == MAX_GAP_SECONDS * 48000
    stream.push(480_000, np.zeros(10, np.int16))
    with pytest.raises(AudioError):
        stream.push(480_010 + 480_001, np.zeros(10, np.int16))


def test_memory_stays_bounded() -> None:
    """A minute of audio (3.8 MB as float32) leaves about a window and a chunk held."""
    stream = AudioStream(FrameClock(Fraction(60)), WINDOW, OFFSET)
    chunk = np.zeros(1600, np.int16)
    held = 4 * (WINDOW + chunk.size)
    tracemalloc.start()
    try:
        for i in range(600):  # one minute
            stream.push(i * chunk.size, chunk)
            while stream.take_span(1024) is not None:
                pass
            if i == 10:
                base = tracemalloc.get_traced_memory()[0]
            elif i > 10:
                assert tracemalloc.get_traced_memory()[0] - base <= 2 * held
    finally:
        tracemalloc.stop()


def test_push_after_finish_is_refused() -> None:
    stream = AudioStream(FrameClock(Fraction(60)), WINDOW, OFFSET)
    stream.finish()
    assert stream.take_span(1024) is None  # no audio, no frames
    with pytest.raises(AudioError):
        stream.push(0, np.zeros(1, np.int16))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 3 * PCM.size), max_size=8))
def test_resampled_stream_is_chunking_invariant_and_close_to_16k(cuts: list[int]) -> None:
    clock = FrameClock(Fraction(60))
    t = np.arange(3 * PCM.size) / 48000
    pcm48 = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    once = joined(run(AudioStream(clock, WINDOW, OFFSET, 48000), [pcm48]))
    chunked = joined(run(AudioStream(clock, WINDOW, OFFSET, 48000), split(pcm48, cuts)))
    for a, b in zip(once, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
    pcm16 = (8000 * np.sin(2 * np.pi * 220 * np.arange(PCM.size) / 16000)).astype(np.int16)
    direct = joined(run(AudioStream(clock, WINDOW, OFFSET), [pcm16]))
    assert once[0].tolist() == direct[0].tolist() and once[1].tolist() == direct[1].tolist()
    assert np.abs(once[2] - direct[2]).max() < 0.01
