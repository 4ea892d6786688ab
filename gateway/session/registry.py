"""The in-process `SessionStore`: the session slots of a gateway that runs as one process."""

from __future__ import annotations

import os
import time

from gateway.scheduler import DEFAULT_TENANT
from gateway.session.store import SessionsReport, SessionStats, tenant_full


class SessionRegistry:
    """`max_sessions` slots held in a dict; the counters are the reported structs themselves."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._live: dict[str, SessionStats] = {}

    def __len__(self) -> int:
        return len(self._live)

    def acquire(
        self,
        session_id: str,
        sample_rate: int,
        tenant: str = DEFAULT_TENANT,
        tenant_limit: int | None = None,
    ) -> SessionStats | None:
        if len(self._live) >= self.max_sessions:
            return None
        if tenant_limit is not None and self.count(tenant) >= tenant_limit:
            raise tenant_full(tenant_limit)
        stats = SessionStats(
            session_id=session_id,
            started_at=time.time(),
            sample_rate=sample_rate,
            tenant=tenant,
            worker_pid=os.getpid(),
        )
        self._live[session_id] = stats
        return stats

    def release(self, session_id: str) -> None:
        self._live.pop(session_id, None)

    def count(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self._live)
        return sum(stats.tenant == tenant for stats in self._live.values())

    def report(self) -> SessionsReport:
        return SessionsReport(len(self._live), self.max_sessions, list(self._live.values()))
