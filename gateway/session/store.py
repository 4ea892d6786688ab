"""Where live sessions are counted: the `SessionStore` interface and the report it gives.

A store hands out `--max_sessions` slots and keeps each live session's counters, which the
connection core updates and `/sessions` shows. `gateway.session.registry` keeps them in this
process (one worker); `gateway.session.host_store` in a table every worker on the host shares.
Slots carry a tenant so that a per-tenant quota can be counted by the same stores; another
backend (a Redis shared by hosts) implements this interface too.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from gateway.scheduler import DEFAULT_TENANT


class SessionCounters(Protocol):
    """The live counters of one session, updated in place by the worker that serves it."""

    session_id: str
    audio_samples: int  # client samples received, gaps included
    frames_sent: int
    requests_in_flight: int
    queued_frames: int
    errors: int


class SessionStats(msgspec.Struct, kw_only=True):
    """One live session as `/sessions` reports it (no audio)."""

    session_id: str
    started_at: float  # unix seconds
    sample_rate: int
    tenant: str = DEFAULT_TENANT
    worker_pid: int = 0  # the gateway process serving it
    audio_samples: int = 0
    frames_sent: int = 0
    requests_in_flight: int = 0
    queued_frames: int = 0
    errors: int = 0


class SessionsReport(msgspec.Struct):
    count: int
    max_sessions: int
    sessions: list[SessionStats]


class SessionStore(Protocol):
    """Bounded set of live sessions; a slot is freed the moment its session ends."""

    max_sessions: int

    def acquire(
        self, session_id: str, sample_rate: int, tenant: str = DEFAULT_TENANT
    ) -> SessionCounters | None:
        """A new session's counters, or None when every slot is taken."""
        ...

    def release(self, session_id: str) -> None:
        """Free the slot of a session this process acquired (no-op when it is not live)."""
        ...

    def count(self, tenant: str | None = None) -> int:
        """Live sessions, all of them or one tenant's."""
        ...

    def report(self) -> SessionsReport: ...
