"""Where live sessions are counted: the `SessionStore` interface and the report it gives.

A store hands out `--max_sessions` slots and keeps each live session's counters, which the
connection core updates and `/sessions` shows. Every method is a coroutine: the Redis store
talks to a server that may be slow or gone, so nothing on the event loop may wait for it
synchronously (the in-process and host stores answer at once, without suspending). A store
that cannot answer within its deadline raises `StoreUnavailable`, never a refusal.

`gateway.stores.local` keeps them in this process (one worker); `gateway.stores.host` in a
table every worker on the host shares. Slots carry a tenant, and `acquire` holds a per-tenant
limit in the same atomic step as the host's. `gateway.stores.redis_store` implements this
interface, and `LimitStore`'s audio-rate, failed-attempt and single-use-ticket ledgers, in a
Redis that several processes or hosts share; `gateway.stores.local.MemoryLimits` keeps those
ledgers in one process.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from gateway.defaults import DEFAULT_TENANT
from gateway.metrics import WEBSOCKET

MINUTE_S = 60.0


def seconds_to_next_minute(now: float) -> float:
    return MINUTE_S - now % MINUTE_S


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
    protocol: str = WEBSOCKET  # how it arrived (gateway.metrics.PROTOCOLS)
    audio_samples: int = 0
    frames_sent: int = 0
    requests_in_flight: int = 0
    queued_frames: int = 0
    errors: int = 0


class StoreState(msgspec.Struct):
    """Where the sessions are counted, and whether it answers (for `/health`)."""

    kind: str  # "process", "host" or "redis"
    reachable: bool = True
    unreachable_for_s: float = 0.0


class SessionsReport(msgspec.Struct):
    count: int
    # The host's limit; in one tenant's view, that tenant's own (None: it has none, only the
    # host's applies, and that is shared with every other tenant).
    max_sessions: int | None
    sessions: list[SessionStats]


class QuotaExceeded(Exception):
    """A tenant is at one of its limits; `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# A slot frees when some session of the tenant ends: no time can be promised, only a pause.
SESSION_RETRY_S = 5.0


def tenant_full(limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"Quota: {limit} concurrent sessions for this tenant; end one first", SESSION_RETRY_S
    )


class StoreUnavailable(Exception):
    """The shared store did not answer in time: nothing was decided (not a refusal)."""


# A store found unreachable is asked again after about this long (its heartbeat's period).
STORE_RETRY_S = 1.0


class SessionStore(Protocol):
    """Bounded set of live sessions; a slot is freed the moment its session ends."""

    max_sessions: int

    async def acquire(
        self,
        session_id: str,
        sample_rate: int,
        tenant: str = DEFAULT_TENANT,
        tenant_limit: int | None = None,
        protocol: str = WEBSOCKET,
    ) -> SessionCounters | None:
        """A new session's counters, or None when every slot is taken; `QuotaExceeded` when
        `tenant` already holds `tenant_limit` sessions; `StoreUnavailable`. `protocol` is
        only reported."""
        ...

    async def release(self, session_id: str) -> None:
        """Free the slot of a session this process acquired (no-op when it is not live)."""
        ...

    async def count(self, tenant: str | None = None) -> int:
        """Live sessions, all of them or one tenant's."""
        ...

    async def report(self) -> SessionsReport: ...

    def state(self) -> StoreState:
        """Known without asking the store: what the latest call found."""
        ...


class LimitStore(Protocol):
    """Per-tenant ledgers shared by everyone who enforces the same limits."""

    async def charge_audio(
        self, tenant: str, seconds: float, per_minute: float, owed: float = 0.0
    ) -> float:
        """Count `seconds` of audio against `tenant`'s `per_minute` in this minute: 0 when they
        fit (and are counted), else the seconds until the next minute (nothing counted).
        `owed`: audio already streamed uncounted (while the store was unreachable), counted
        first whatever the quota says."""
        ...

    async def redeem(self, nonce: str, expires_at: float) -> bool:
        """True the first time `nonce` is presented before `expires_at` (unix s), else False."""
        ...

    async def failures(self, client: str) -> tuple[int, float]:
        """Failed authentications from the address `client` in this minute, and the seconds
        until the minute ends."""
        ...

    async def count_failure(self, client: str) -> None:
        """One more failed authentication from `client` in this minute."""
        ...
