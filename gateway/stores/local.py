"""The in-process stores of a gateway that runs as one process: its session slots
(`SessionRegistry`) and its ledgers (`MemoryLimits`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from gateway.defaults import DEFAULT_TENANT
from gateway.metrics import WEBSOCKET
from gateway.stores.base import (
    MINUTE_S,
    SessionsReport,
    SessionStats,
    StoreState,
    seconds_to_next_minute,
    tenant_full,
)


class SessionRegistry:
    """`max_sessions` slots held in a dict; the counters are the reported structs themselves."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._live: dict[str, SessionStats] = {}

    def __len__(self) -> int:
        return len(self._live)

    async def acquire(
        self,
        session_id: str,
        sample_rate: int,
        tenant: str = DEFAULT_TENANT,
        tenant_limit: int | None = None,
        protocol: str = WEBSOCKET,
    ) -> SessionStats | None:
        if len(self._live) >= self.max_sessions:
            return None
        if tenant_limit is not None and self._count(tenant) >= tenant_limit:
            raise tenant_full(tenant_limit)
        stats = SessionStats(
            session_id=session_id,
            started_at=time.time(),
            sample_rate=sample_rate,
            tenant=tenant,
            worker_pid=os.getpid(),
            protocol=protocol,
        )
        self._live[session_id] = stats
        return stats

    async def release(self, session_id: str) -> None:
        self._live.pop(session_id, None)

    async def count(self, tenant: str | None = None) -> int:
        return self._count(tenant)

    def _count(self, tenant: str | None) -> int:
        if tenant is None:
            return len(self._live)
        return sum(stats.tenant == tenant for stats in self._live.values())

    async def report(self) -> SessionsReport:
        return SessionsReport(len(self._live), self.max_sessions, list(self._live.values()))

    def state(self) -> StoreState:
        return StoreState("process")


class MemoryLimits:
    """Audio ledgers, failed authentications and redeemed tickets of this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._audio: dict[str, tuple[int, float]] = {}  # tenant -> (minute, seconds used)
        self._redeemed: dict[str, float] = {}  # nonce -> its ticket's expiry
        self._failed: dict[str, int] = {}  # client address -> failures in `_failed_minute`
        self._failed_minute = -1

    async def charge_audio(
        self, tenant: str, seconds: float, per_minute: float, owed: float = 0.0
    ) -> float:
        now = self._clock()
        minute = int(now // MINUTE_S)
        counted, used = self._audio.get(tenant, (minute, 0.0))
        if counted != minute:
            used = 0.0
        used += owed
        self._audio[tenant] = (minute, used)
        if used + seconds > per_minute:
            return seconds_to_next_minute(now)
        self._audio[tenant] = (minute, used + seconds)
        return 0.0

    async def failures(self, client: str) -> tuple[int, float]:
        now = self._clock()
        return self._failures_now(now).get(client, 0), seconds_to_next_minute(now)

    async def count_failure(self, client: str) -> None:
        failed = self._failures_now(self._clock())
        failed[client] = failed.get(client, 0) + 1

    def _failures_now(self, now: float) -> dict[str, int]:
        minute = int(now // MINUTE_S)
        if minute != self._failed_minute:  # a new minute forgets every address at once
            self._failed, self._failed_minute = {}, minute
        return self._failed

    async def redeem(self, nonce: str, expires_at: float) -> bool:
        now = self._clock()
        # An expired ticket fails on its expiry alone: its nonce need not be kept.
        self._redeemed = {n: until for n, until in self._redeemed.items() if until > now}
        if expires_at <= now or nonce in self._redeemed:
            return False
        self._redeemed[nonce] = expires_at
        return True
