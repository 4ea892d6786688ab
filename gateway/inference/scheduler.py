"""Which waiting frames go into the next Triton request: the gateway-wide merge policy.

Pure: no clocks, no I/O, no Triton. Sessions add `Job`s (one batch of consecutive frames);
`take()` builds the next request from them. A request holds at most `max_rows` frames and at
most `session_rows` of any one session, taken round robin across tenants and, within a
tenant, across sessions. So a session with a large backlog (a 4 MiB push, a zero-filled gap)
is served in slices interleaved with everyone else's frames, and a tenant with many sessions
gets no more of a crowded request than a tenant with few. Tenants over their share of a
host past capacity can be held to a number of rows per request (`gateway.inference.fair_share`).

Frames of file uploads (`Job.bulk`, the batch API) wait in a lane of their own, shared the
same way (round robin across tenants, then uploads), and go in requests of their own
(`take_bulk`): a live frame never waits for upload rows in its request, and an upload of
hours of audio is no backlog of the streams'.
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


class _Lane:
    """Waiting jobs by tenant and session, handed out round robin."""

    def __init__(self) -> None:
        self.pending_rows = 0
        self.jobs: dict[Hashable, deque[Job]] = {}
        self._tenants: dict[str, _Tenant] = {}
        self._tenant_order: deque[str] = deque()

    def add(self, job: Job) -> None:
        queue = self.jobs.get(job.owner)
        if queue is None:
            queue = self.jobs[job.owner] = deque()
            tenant = self._tenants.get(job.tenant)
            if tenant is None:
                tenant = self._tenants[job.tenant] = _Tenant()
                self._tenant_order.append(job.tenant)
            tenant.sessions.append(job.owner)
        queue.append(job)
        self.pending_rows += job.count - job.taken

    def withdraw(self, owner: Hashable) -> None:
        queue = self.jobs.pop(owner, None)
        if queue is None:
            return
        self.pending_rows -= sum(job.count - job.taken for job in queue)
        for name, tenant in list(self._tenants.items()):
            if owner in tenant.sessions:
                tenant.sessions.remove(owner)
                if not tenant.sessions:
                    self._drop_tenant(name)
                return

    def take(
        self,
        room: int,
        share: int,
        left: int,
        capped: Callable[[str], bool] | None,
        slices: list[Slice],
        *,
        once: bool = True,
    ) -> tuple[int, int]:
        """Up to `room` rows into `slices`, at most `share` per session and pass, at most
        `left` from the `capped` tenants; the room and `left` that remain. `once`: one pass
        per session (a share of the request at most), else passes until the room is full."""
        served: set[Hashable] = set()
        progressed = True
        while room and progressed:
            progressed = False
            for name in list(self._tenant_order):  # one turn per tenant and pass
                tenant = self._tenants.get(name)
                if not room or tenant is None:
                    continue
                owner = next((s for s in tenant.sessions if s not in served), None)
                limited = capped is not None and capped(name)
                if owner is None or (limited and left <= 0):
                    continue
                served.add(owner)
                progressed = True
                tenant.sessions.remove(owner)  # to the back of its tenant's turn
                given = self._take_from(owner, min(room, share, left if limited else room), slices)
                room -= given
                if limited:
                    left -= given
                if self.jobs[owner]:
                    tenant.sessions.append(owner)
                else:
                    del self.jobs[owner]
                    if not tenant.sessions:
                        self._drop_tenant(name)
            if not once:
                served.clear()
        self._tenant_order.rotate(-1)  # the next request starts with the next tenant
        return room, left

    def _take_from(self, owner: Hashable, share: int, slices: list[Slice]) -> int:
        queue = self.jobs[owner]
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


class FairScheduler:
    """Waiting jobs of every session, handed out as requests of bounded, fair shares."""

    def __init__(self, max_rows: int, session_rows: int) -> None:
        if max_rows <= 0 or session_rows <= 0:
            raise ValueError("max_rows and session_rows must be positive")
        self.max_rows = max_rows
        self.session_rows = min(session_rows, max_rows)
        self._streams = _Lane()
        self._bulk = _Lane()

    @property
    def pending_rows(self) -> int:
        """Rows of streams waiting (uploads' rows are `bulk_rows`)."""
        return self._streams.pending_rows

    @property
    def bulk_rows(self) -> int:
        """Rows of uploads waiting."""
        return self._bulk.pending_rows

    def add(self, job: Job) -> None:
        if job.count == 0:
            job.deliver(0, np.empty((0, 0), np.float32))
            return
        (self._bulk if job.bulk else self._streams).add(job)

    def waiting(self, owner: Hashable) -> bool:
        """Whether rows of this session (or upload) wait to be taken."""
        return owner in self._streams.jobs or owner in self._bulk.jobs

    def withdraw(self, owner: Hashable) -> None:
        """Forget a session's waiting jobs (it went away); rows in flight still return."""
        self._streams.withdraw(owner)
        self._bulk.withdraw(owner)

    def take(self, cap: int | None = None, capped: Callable[[str], bool] = _never) -> list[Slice]:
        """The next request of streams' rows: up to `max_rows` rows, at most `session_rows`
        per session, and at most `cap` rows in all from the tenants that are `capped`."""
        slices: list[Slice] = []
        left = self.max_rows if cap is None else cap  # for the capped tenants
        limit = None if cap is None else capped
        self._streams.take(self.max_rows, self.session_rows, left, limit, slices)
        return slices

    def take_bulk(self, rows: int) -> list[Slice]:
        """The next request of uploads' rows: up to `rows` (at most `max_rows`), each upload
        `session_rows` at a turn; an upload has no frame clock to keep, so one alone may fill
        the request."""
        slices: list[Slice] = []
        room = min(rows, self.max_rows)
        self._bulk.take(room, self.session_rows, room, None, slices, once=False)
        return slices
