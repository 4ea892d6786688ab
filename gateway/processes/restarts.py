"""When a process that exited is started again: the policy shared by the workers' supervisor
(`gateway.processes.workers`), `make serve` and `make cluster` (`a2f_triton`).

The first exit is answered at once: a worker killed by accident (out of memory, an operator's
`kill -9`) should be back before its clients retry. Exits that follow within `window_s`
wait longer each time, so a process that fails at start-up does not spin, and once `limit`
exits fall within `window_s` it is a crash loop: starting it again would only repeat the
failure, so the caller gives up on it and says so.
"""

from __future__ import annotations

import signal
from collections import deque

RESTART_LIMIT = 5  # exits within the window, then a crash loop
RESTART_WINDOW_S = 60.0
FIRST_BACKOFF_S = 0.5  # the second exit in a row waits this long; each further one twice more
MAX_BACKOFF_S = 8.0


class Restarts:
    """The exits of one process (one worker slot, one gateway) and what to do after each."""

    def __init__(
        self,
        *,
        limit: int = RESTART_LIMIT,
        window_s: float = RESTART_WINDOW_S,
        first_backoff_s: float = FIRST_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.total = 0  # restarts decided so far
        self._exits: deque[float] = deque()

    def exited(self, now: float) -> float | None:
        """Record an exit at `now` (monotonic seconds): the delay before the restart, or None
        when this exit makes a crash loop (no restart)."""
        self._exits.append(now)
        while self._exits[0] <= now - self.window_s:
            self._exits.popleft()
        recent = len(self._exits)
        if recent >= self.limit:
            return None
        self.total += 1
        if recent == 1:
            return 0.0
        return min(self.max_backoff_s, self.first_backoff_s * 2.0 ** (recent - 2))

    def describe_loop(self) -> str:
        return f"{self.limit} exits within {self.window_s:g} s"


def how_it_ended(exitcode: int | None) -> str:
    """A process's end in words, from its exit code (negative: the signal that killed it)."""
    if exitcode is not None and exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"
