"""Admission by capacity: whether the host has headroom for one more session.

`--max_sessions` is a fixed count; what a host can really carry depends on the streams' frame
rates, the model and whatever else runs there. So the dispatcher also reports how late the
frames of real-time streams are, and a new session is refused (`Error` `busy`) while they are
measurably late: an overloaded host then keeps the sessions it already has on time instead
of making everyone late. Pure: the caller passes the clock.

What is measured is the dispatch latency of *small* jobs (at most one session's share of a
request): from the moment a session's frames are ready to the moment their outputs are back,
the part of each frame's added latency the gateway controls. Big jobs (a 4 MiB push, a long
zero-filled gap) are left out: they wait in slices by design, and their own backlog says
nothing about the host's headroom.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.inference.pacing import PERCENTILE, LatencyWindow


class Refusal(NamedTuple):
    """Why a new session is refused as busy, and when it may be asked again at the earliest."""

    message: str
    retry_after_s: float


class Admission:
    """Recent dispatch latencies in, a reason to refuse a new session (or None) out."""

    def __init__(self, bound_s: float, *, window_s: float = 2.0, min_samples: int = 100) -> None:
        self.bound_s = bound_s  # 0: never refuse on latency
        self.window_s = window_s
        self.min_samples = min_samples
        self._latencies = LatencyWindow(window_s)

    def observe(self, now: float, latency_s: float) -> None:
        """The outputs of a small job came back `latency_s` after its frames were ready."""
        if self.bound_s <= 0:
            return
        self._latencies.add(now, latency_s)
        self._latencies.forget(now)

    def refusal(self, now: float) -> Refusal | None:
        """Why a new session would not be served on time, or None when there is headroom.
        Retry after the window: by then the late frames it judged on are forgotten."""
        if self.bound_s <= 0 or self._latencies.forget(now) < self.min_samples:
            return None
        p95 = self._latencies.percentile()
        if p95 <= self.bound_s:
            return None
        message = (
            f"Server busy: frames of live sessions are late (p{PERCENTILE} dispatch latency "
            f"{p95 * 1000:.0f} ms over the last {self.window_s:g} s, bound "
            f"{self.bound_s * 1000:.0f} ms); retry later"
        )
        return Refusal(message, self.window_s)
