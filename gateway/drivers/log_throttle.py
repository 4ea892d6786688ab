"""A per-key rate limiter for log lines: pure, the caller passes the clock.

Hostile clients can make the same rejection happen thousands of times a second; one line per
kind and interval, with a count of what was left out, keeps the log readable and cheap.
"""

from __future__ import annotations


class RateLimiter:
    """At most one event per key every `interval_s`; counts the ones it refuses."""

    def __init__(self, interval_s: float) -> None:
        if interval_s < 0:
            raise ValueError("interval_s must not be negative")
        self.interval_s = interval_s
        self._next: dict[str, float] = {}  # key -> earliest time of the next allowed event
        self._skipped: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None when the event of `key` at `now` is to be dropped; else how many events of
        `key` were dropped since the last one allowed."""
        if now < self._next.get(key, now):
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval_s
        return self._skipped.pop(key, 0)
