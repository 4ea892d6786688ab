"""How fast uploads' frames may go to Triton beside live streams: the rest of the host's capacity.

Upload rows go in requests of their own, one at a time while streams are open
(`gateway.inference.dispatcher`). That alone is not enough: an upload always has rows
waiting, so it would keep Triton (and the cores it shares with the gateway) busy all the
time, and the streams' frames would queue behind its work in every process on the path.

So upload rows leave at a rate this policy sets, following the live frames' p95 dispatch
latency over the last `window_s`, decided once a period: cut to `decrease` times the rate
while it is above the bound, grown by `increase` while it is within and the uploads used
most of what they were allowed, or while no live frame came at all (connections open but
idle). Uploads are slowed, never stopped (`FLOOR_ROWS_S`), so one always completes. With no
stream open nothing limits them. Pure: the caller passes the clock.
"""

from __future__ import annotations

from gateway.inference.pacing import LatencyWindow, TokenBucket

FLOOR_ROWS_S = 60.0  # two 30 fps streams' worth: an upload beside a busy host still moves
START_ROWS_S = 500.0  # about what 16 streams at 30 fps take: grown from there while on time
# Grown only while the uploads took at least this part of what the rate allowed: a rate they
# do not use says nothing about what the streams can bear.
GROW_USE = 0.5


class BulkShare:
    """Live frames' latencies in; upload rows allowed now out."""

    def __init__(
        self,
        bound_s: float,
        *,
        burst_rows: int,
        period_s: float = 0.25,
        window_s: float = 1.0,
        min_samples: int = 8,
        decrease: float = 0.7,
        increase: float = 1.25,
    ) -> None:
        self.bound_s = bound_s  # 0: uploads are not slowed
        self.period_s = period_s
        self.min_samples = min_samples
        self.decrease = decrease
        self.increase = increase
        self.rate = START_ROWS_S  # rows/s allowed to uploads while streams are open
        self._live = LatencyWindow(window_s)
        self._taken = 0  # rows uploads took this period
        self._period_start: float | None = None
        self._bucket = TokenBucket(burst_rows)  # rows they may take at once (a request's part)

    def observe(self, now: float, latency_s: float) -> None:
        """A live frame came back `latency_s` after it was ready."""
        if self.bound_s > 0:
            self._live.add(now, latency_s)

    def taken(self, rows: int) -> None:
        """A request left carrying `rows` upload rows."""
        self._taken += rows
        self._bucket.take(rows)

    def allowance(self, now: float) -> int | None:
        """Upload rows that may leave now; None: as many as they like."""
        if self.bound_s <= 0:
            return None
        self._control(now)
        return self._bucket.allowance(now, self.rate)

    def wait_s(self) -> float:
        """How long until uploads may take a row again."""
        if self.bound_s <= 0:
            return 0.0
        return self._bucket.wait_s(self.rate)

    def _control(self, now: float) -> None:
        if self._period_start is None:
            self._period_start = now
        elapsed = now - self._period_start
        if elapsed < self.period_s:
            return
        taken, self._taken, self._period_start = self._taken / elapsed, 0, now
        samples = self._live.forget(now)
        if samples < self.min_samples:
            if not samples and taken >= self.rate * GROW_USE:
                self.rate *= self.increase  # open streams sending nothing: none to protect
            return
        if self._live.percentile() > self.bound_s:
            self._live.clear()  # the next decision sees only frames served under the new rate
            self.rate = max(self.rate * self.decrease, FLOOR_ROWS_S)
        elif taken >= self.rate * GROW_USE:
            self.rate *= self.increase
