"""The instruments the pacing policies share: a window of recent latencies judged by one
percentile (admission, fair share, uploads' share), and a token bucket that lets rows leave at
a rate (fair share, uploads' share). Pure: the caller passes the clock."""

from __future__ import annotations

from collections import deque

import numpy as np

# Not the p99: a busy host late on many frames is what counts, not one stall (a collection,
# a noisy neighbour) that a higher percentile of a couple of hundred samples would catch.
PERCENTILE = 95


class LatencyWindow:
    """The latencies observed over the last `window_s`."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, latency_s: float) -> None:
        self._samples.append((now, latency_s))

    def forget(self, now: float) -> int:
        """Drop what is older than the window; the samples left."""
        samples = self._samples
        while samples and samples[0][0] < now - self.window_s:
            samples.popleft()
        return len(samples)

    def percentile(self) -> float:
        """The `PERCENTILE` of the samples in the window (at least one)."""
        return float(np.percentile([latency for _, latency in self._samples], PERCENTILE))

    def clear(self) -> None:
        """Forget everything: the next decision sees only frames served after it."""
        self._samples.clear()

    def __len__(self) -> int:
        return len(self._samples)


class TokenBucket:
    """Rows that may leave now, refilled at the rate the caller's control loop sets, at most
    `burst` at once (one request's part)."""

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self._tokens = 0.0
        self._refilled_at: float | None = None

    def restart(self, now: float) -> None:
        """Empty, refilling from `now`."""
        self._tokens, self._refilled_at = 0.0, now

    def allowance(self, now: float, rate: float) -> int:
        last = now if self._refilled_at is None else self._refilled_at
        self._tokens = min(self._tokens + (now - last) * rate, float(self.burst))
        self._refilled_at = now
        return max(int(self._tokens), 0)

    def take(self, rows: int) -> None:
        self._tokens -= rows

    def wait_s(self, rate: float) -> float:
        """How long until a row may leave again at `rate`."""
        return max(1.0 - self._tokens, 0.0) / rate
