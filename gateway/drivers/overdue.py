"""A deadline for the read or write in progress, cheap enough to keep around every message.

The drivers watch each client read (the idle timeout) and each batch of writes (a client
that stopped reading) with one of these per connection and direction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Overdue:
    """Calls `on_overdue` once the operation in progress (from `begin` to `end`) has lasted
    `timeout_s`, and again after each further `timeout_s`. One timer, re-armed at most once
    a period: per message, `begin` and `end` only note the time, where an `asyncio.timeout`
    would make and cancel a timer every time."""

    def __init__(self, timeout_s: float, on_overdue: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout_s = timeout_s
        self._on_overdue = on_overdue
        self._since: float | None = None  # when the operation in progress began; None: none
        self._handle: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        self._since = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(self._since + self._timeout_s, self._fire)

    def end(self) -> None:
        self._since = None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self._since is None:
            return  # between operations: the next one arms the timer again
        now, due = self._loop.time(), self._since + self._timeout_s
        if now >= due:
            self._since, due = now, now + self._timeout_s
            self._on_overdue()
        self._handle = self._loop.call_at(due, self._fire)
