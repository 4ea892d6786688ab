"""Graceful stop of one gateway process: stop taking work, let open sessions finish, then go.

On the first SIGTERM (or SIGINT) the process starts draining: `/ready` answers 503 at once so a
load balancer sends new connections elsewhere, a new connection gets `Error` `shutting_down`
and close 1001, and each open connection is closed the same way as soon as it has no session
and nothing left to send. Sessions still open after the grace period (`--drain_s`) are told
`shutting_down` and closed too; a second signal ends the grace period at once. The server
exits when no connection is left (or shortly after the grace period, whatever a client does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

CLOSE_ALLOWANCE_S = 3.0  # after the grace period: time to tell the last clients and close


class Drain:
    """The draining state one process's connections and probes consult (`app.state.drain`).

    Connections register a callback, called when draining starts and when the grace period
    ends; they decide themselves whether to close (they know whether a session is open).
    """

    def __init__(self) -> None:
        self.draining = False
        self.expired = False
        self._deadline = 0.0
        self._connections: set[Callable[[], None]] = set()

    def register(self, check: Callable[[], None]) -> None:
        self._connections.add(check)

    def unregister(self, check: Callable[[], None]) -> None:
        self._connections.discard(check)

    def begin(self, grace_s: float) -> None:
        """Start draining with `grace_s` for open sessions; again: end the grace period now."""
        if self.draining:
            self.expire()
            return
        self.draining = True
        self._deadline = time.monotonic() + grace_s
        asyncio.get_running_loop().call_later(grace_s, self.expire)
        self._notify()

    def expire(self) -> None:
        if self.expired:
            return
        self.expired = True
        self._deadline = min(self._deadline, time.monotonic())
        self._notify()

    @property
    def finished(self) -> bool:
        """Draining, and every connection has closed (or had its allowance to close)."""
        if not self.draining:
            return False
        return not self._connections or time.monotonic() > self._deadline + CLOSE_ALLOWANCE_S

    def _notify(self) -> None:
        for check in list(self._connections):
            check()
