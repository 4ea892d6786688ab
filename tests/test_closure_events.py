"""The event-level lip-closure score (training/closures.py) on hand-made frame sequences."""

from __future__ import annotations

import numpy as np
import pytest

from training.closures import ClosureEvents, bilabial_spans, closure_runs, score

BILABIALS = frozenset({"p", "b", "m"})
FPS = 50
TIMES = np.arange(100) / FPS  # 2 s of frames, 20 ms apart


def closed_between(*spans: tuple[float, float]) -> np.ndarray:
    closed = np.zeros(len(TIMES), bool)
    for start, end in spans:
        closed |= (start - 1e-9 <= TIMES) & (end + 1e-9 >= TIMES)
    return closed


def test_touching_bilabials_are_one_closure() -> None:
    phones = [("s", 0.0, 0.1), ("m", 0.1, 0.2), ("b", 0.2, 0.3), ("ah", 0.3, 0.5), ("p", 0.6, 0.7)]
    assert bilabial_spans(phones, BILABIALS) == [(0.1, 0.3), (0.6, 0.7)]


def test_runs_of_closed_frames() -> None:
    closed = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], bool)
    assert closure_runs(closed) == [(0, 1), (4, 4), (6, 8)]
    assert closure_runs(np.zeros(5, bool)) == []


def test_closures_on_every_bilabial_and_nowhere_else_score_one() -> None:
    spans = [(0.40, 0.48), (1.00, 1.10)]
    events = score(closed_between(*spans), TIMES, spans, speech_s=2.0)
    assert events == ClosureEvents(targets=2, hits=2, events=2, false_events=0, speech_s=2.0)
    assert events.recall == events.precision == events.f1 == 1.0
    assert events.false_per_minute == 0.0


def test_a_closure_within_the_tolerance_counts_and_one_beyond_it_is_false() -> None:
    spans = [(0.50, 0.56), (1.50, 1.56)]
    # One closes a frame before the first phone starts (20 ms: inside the +- 20 ms); the other
    # closes only 60 ms after the second phone ended.
    closed = closed_between((0.48, 0.48), (1.62, 1.64))
    events = score(closed, TIMES, spans, speech_s=2.0)
    assert (events.hits, events.events, events.false_events) == (1, 2, 1)
    assert events.recall == 0.5 and events.precision == 0.5
    assert events.f1 == pytest.approx(0.5)
    assert events.false_per_minute == pytest.approx(30.0)


def test_one_long_closure_over_two_bilabials_hits_both_as_one_event() -> None:
    spans = [(0.40, 0.46), (0.52, 0.60)]
    events = score(closed_between((0.40, 0.60)), TIMES, spans, speech_s=2.0)
    assert (events.targets, events.hits, events.events, events.false_events) == (2, 2, 1, 0)


def test_lips_that_never_close_miss_everything_without_false_closures() -> None:
    events = score(np.zeros(len(TIMES), bool), TIMES, [(0.4, 0.5)], speech_s=2.0)
    assert events.recall == 0.0 and events.precision == 1.0 and events.f1 == 0.0


def test_counts_add_up_over_recordings_and_false_closures_are_per_minute() -> None:
    silence = score(closed_between((0.2, 0.3), (1.0, 1.0)), TIMES, [], speech_s=30.0)
    speech = score(closed_between((0.4, 0.5)), TIMES, [(0.4, 0.5)], speech_s=30.0)
    total = silence + speech
    assert total == ClosureEvents(targets=1, hits=1, events=3, false_events=2, speech_s=60.0)
    assert total.false_per_minute == pytest.approx(2.0)
    assert total.precision == pytest.approx(1 / 3)
    assert ClosureEvents().false_per_minute == 0.0
