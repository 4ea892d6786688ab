"""Which waiting frames go into the next Triton request: the gateway-wide merge policy.

Pure: no clocks, no I/O, no Triton. Sessions add `Job`s (one batch of consecutive frames);
`take()` builds the next request from them. A request holds at most `max_rows` frames and at
most `session_rows` of any one session, taken round robin across tenants and, within a
tenant, across sessions. So a session with a large backlog (a 4 MiB push, a zero-filled gap)
is served in slices interleaved with everyone else's frames, and a tenant with many sessions
gets no more of a crowded request than a tenant with few. Tenants over their share of a
host past capacity can be held to a number of rows per request (`gateway.inference.fair_share`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from gateway.inference.batch import Job


@dataclass(frozen=True, slots=True)
class Slice:
    """Rows `start .. stop` of a job, in one request."""

    job: Job
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(slots=True)
class _Tenant:
    sessions: deque[Hashable] = field(default_factory=deque)  # round-robin order


def _never(tenant: str) -> bool:
    return False


class FairScheduler:
    """Waiting jobs of every session, handed out as requests of bounded, fair shares."""

    def __init__(self, max_rows: int, session_rows: int) -> None:
        if max_rows <= 0 or session_rows <= 0:
            raise ValueError("max_rows and session_rows must be positive")
        self.max_rows = max_rows
        self.session_rows = min(session_rows, max_rows)
        self.pending_rows = 0
        self._jobs: dict[Hashable, deque[Job]] = {}
        self._tenants: dict[str, _Tenant] = {}
        self._tenant_order: deque[str] = deque()

    def add(self, job: Job) -> None:
        if job.count == 0:
            job.deliver(0, np.empty((0, 0), np.float32))
            return
        queue = self._jobs.get(job.owner)
        if queue is None:
            queue = self._jobs[job.owner] = deque()
            tenant = self._tenants.get(job.tenant)
            if tenant is None:
                tenant = self._tenants[job.tenant] = _Tenant()
                self._tenant_order.append(job.tenant)
            tenant.sessions.append(job.owner)
        queue.append(job)
        self.pending_rows += job.count - job.taken

    def waiting(self, owner: Hashable) -> bool:
        """Whether rows of this session wait to be taken."""
        return owner in self._jobs

    def withdraw(self, owner: Hashable) -> None:
        """Forget a session's waiting jobs (it went away); rows in flight still return."""
        queue = self._jobs.pop(owner, None)
        if queue is None:
            return
        self.pending_rows -= sum(job.count - job.taken for job in queue)
        for name, tenant in list(self._tenants.items()):
            if owner in tenant.sessions:
                tenant.sessions.remove(owner)
                if not tenant.sessions:
                    self._drop_tenant(name)
                return

    def take(self, cap: int | None = None, capped: Callable[[str], bool] = _never) -> list[Slice]:
        """The next request: up to `max_rows` rows, at most `session_rows` per session, and
        at most `cap` rows in all from the tenants that are `capped`."""
        slices: list[Slice] = []
        room = self.max_rows
        left = self.max_rows if cap is None else cap  # for the capped tenants
        served: set[Hashable] = set()
        progressed = True
        while room and progressed:
            progressed = False
            for name in list(self._tenant_order):  # one turn per tenant and pass
                tenant = self._tenants.get(name)
                if not room or tenant is None:
                    continue
                owner = next((s for s in tenant.sessions if s not in served), None)
                limited = cap is not None and capped(name)
                if owner is None or (limited and left <= 0):
                    continue
                served.add(owner)
                progressed = True
                tenant.sessions.remove(owner)  # to the back of its tenant's turn
                share = min(room, self.session_rows, left if limited else room)
                given = self._take_from(owner, share, slices)
                room -= given
                if limited:
                    left -= given
                if self._jobs[owner]:
                    tenant.sessions.append(owner)
                else:
                    del self._jobs[owner]
                    if not tenant.sessions:
                        self._drop_tenant(name)
        self._tenant_order.rotate(-1)  # the next request starts with the next tenant
        return slices

    def _take_from(self, owner: Hashable, share: int, slices: list[Slice]) -> int:
        queue = self._jobs[owner]
        given = 0
        while queue and given < share:
            job = queue[0]
            rows = min(job.count - job.taken, share - given)
            slices.append(Slice(job, job.taken, job.taken + rows))
            job.taken += rows
            given += rows
            if job.taken == job.count:
                queue.popleft()
        self.pending_rows -= given
        return given

    def _drop_tenant(self, name: str) -> None:
        del self._tenants[name]
        self._tenant_order.remove(name)
