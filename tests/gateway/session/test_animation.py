"""Smoothing and blinks: deterministic per frame sequence, independent of batching."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from a2f_protocol.clock import FrameClock
from gateway.session.animation import Animator

CLOCK = FrameClock(Fraction(60))
FRAMES = 60 * 30  # thirty seconds
TIMESTAMPS = np.array([CLOCK.timestamp(k) for k in range(FRAMES + 1)], np.int64)
WEIGHTS = np.random.default_rng(0).random((FRAMES, 5), dtype=np.float32) * 0.2
BLINK = np.array([0, 3], np.intp)


def shaped(animator: Animator, cuts: list[int]) -> np.ndarray:
    bounds = [0, *sorted(set(cuts)), FRAMES]
    parts = [
        animator.apply(WEIGHTS[a:b], TIMESTAMPS[a : b + 1]) for a, b in itertools.pairwise(bounds)
    ]
    return np.concatenate(parts)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, FRAMES), max_size=10))
def test_output_does_not_depend_on_batching(cuts: list[int]) -> None:
    whole = shaped(Animator(0.6, BLINK, seed=5), [])
    np.testing.assert_array_equal(shaped(Animator(0.6, BLINK, seed=5), cuts), whole)


def test_off_is_identity() -> None:
    animator = Animator(0.0, None, seed=0)
    assert not animator.active
    assert animator.apply(WEIGHTS, TIMESTAMPS) is WEIGHTS


def test_blinks_are_natural_and_seeded() -> None:
    out = shaped(Animator(0.0, BLINK, seed=1), [])
    closed = out[:, 0] > 0.8
    starts = np.flatnonzero(closed[1:] & ~closed[:-1])
    assert 5 <= starts.size <= 20  # 10-40 blinks a minute over 30 s
    intervals = np.diff(starts)
    assert intervals.min() >= 60  # at least a second apart
    assert intervals.std() > 10  # irregular
    np.testing.assert_array_equal(closed, out[:, 3] > 0.8)  # both eyes together
    np.testing.assert_array_equal(out[:, [1, 2, 4]], WEIGHTS[:, [1, 2, 4]])  # others untouched
    assert not np.array_equal(shaped(Animator(0.0, BLINK, seed=2), []), out)


def test_smoothing_is_an_exponential_filter() -> None:
    step = np.zeros((4, 1), np.float32)
    step[1:] = 1.0
    out = Animator(0.5, None, seed=0).apply(step, TIMESTAMPS[:5])
    np.testing.assert_allclose(out[:, 0], [0.0, 0.5, 0.75, 0.875])
