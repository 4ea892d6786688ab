"""Event-level lip-closure score: did the lips close for each p/b/m, and how often did they
close where no p/b/m was?

The frame-exact F1 punishes a closure that starts one frame early as much as a missed one,
while a viewer only sees whether the lips met for the "m" and whether they snapped shut in
the middle of a vowel. So each aligned bilabial (touching p/b/m segments, as in "some bread",
are one closure of the lips) is a *target*, hit when some frame within its span widened by
``TOLERANCE_S`` each side has mouthClose >= the closure threshold; each run of consecutive
closed frames is a *closure event*, false when it overlaps no widened target. Numpy only, so
the tests need no corpus and no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

TOLERANCE_S = 0.02  # a closure within the phone +- 20 ms counts for it


@dataclass(frozen=True)
class ClosureEvents:
    """Counts from one or more recordings (add them up with ``+``)."""

    targets: int = 0  # bilabial closures aligned in the speech
    hits: int = 0  # ... of which the lips closed for
    events: int = 0  # runs of closed frames
    false_events: int = 0  # ... of which overlap no bilabial
    speech_s: float = 0.0  # seconds of speech (first to last non-pause phone), or of audio

    def __add__(self, other: ClosureEvents) -> ClosureEvents:
        return ClosureEvents(
            self.targets + other.targets,
            self.hits + other.hits,
            self.events + other.events,
            self.false_events + other.false_events,
            self.speech_s + other.speech_s,
        )

    @property
    def recall(self) -> float:
        return self.hits / self.targets if self.targets else 0.0

    @property
    def precision(self) -> float:
        """Share of closure events that belong to a bilabial (1 when the lips never closed)."""
        return (self.events - self.false_events) / self.events if self.events else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_per_minute(self) -> float:
        return 60.0 * self.false_events / self.speech_s if self.speech_s else 0.0


def bilabial_spans(
    phones: Iterable[tuple[str, float, float]], bilabials: frozenset[str]
) -> list[tuple[float, float]]:
    """(start, end) of each bilabial closure; touching bilabial phones merge into one."""
    spans: list[tuple[float, float]] = []
    for name, start, end in phones:
        if name not in bilabials:
            continue
        if spans and start - spans[-1][1] < 1e-3:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def closure_runs(closed: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[first, last] frame index of each run of consecutive closed frames."""
    edges = np.diff(np.concatenate(([0], closed.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def score(
    closed: npt.NDArray[np.bool_],
    times: npt.NDArray[np.float64],
    spans: list[tuple[float, float]],
    speech_s: float,
    tolerance: float = TOLERANCE_S,
) -> ClosureEvents:
    """Events of one recording: ``closed[i]`` is the lips' state at ``times[i]`` (seconds,
    increasing); ``spans`` its bilabial closures; ``speech_s`` what false closures are per."""
    near = np.zeros(len(times), bool)  # frame lies within some widened target
    hits = 0
    for start, end in spans:
        inside = (times >= start - tolerance) & (times <= end + tolerance)
        near |= inside
        hits += bool(np.any(closed & inside))
    runs = closure_runs(closed)
    false_events = sum(not near[a : b + 1].any() for a, b in runs)
    return ClosureEvents(len(spans), hits, len(runs), false_events, speech_s)
