"""The merge policy, without Triton: bounded requests, fair shares, backlogs sliced."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from a2f_protocol.clock import FrameClock
from gateway.inference.batch import Job, Outcome, SpanBatch
from gateway.inference.scheduler import FairScheduler
from gateway.session.audio import AudioAccumulator

WINDOW, OFFSET = 8320, 4160


def span(frames: int) -> SpanBatch:
    accumulator = AudioAccumulator(FrameClock(Fraction(60)), WINDOW, OFFSET)
    accumulator.append(np.zeros(WINDOW + frames * 300, np.float32))
    batch = accumulator.take_span(frames)
    assert batch is not None and batch.count == frames
    return batch


def job(
    owner: object, frames: int, tenant: str = "", log: list | None = None, *, bulk: bool = False
) -> Job:
    def done(finished: Job, outcome: Outcome) -> None:
        if log is not None:
            log.append((finished.owner, outcome))

    return Job(owner, span(frames), {}, done, tenant, live=not bulk, bulk=bulk)


def test_requests_are_bounded_and_shares_capped() -> None:
    scheduler = FairScheduler(max_rows=8, session_rows=3)
    for owner in "abcd":
        scheduler.add(job(owner, 5))
    assert scheduler.pending_rows == 20
    first = scheduler.take()
    assert sum(s.rows for s in first) == 8
    assert all(s.rows <= 3 for s in first)
    assert [s.job.owner for s in first] == ["a", "b", "c"]
    assert scheduler.pending_rows == 12


def test_a_backlog_is_sliced_and_a_canary_goes_in_the_next_request() -> None:
    """A session that pushed minutes of audio at once cannot hold another session back:
    each request carries at most its share, so the canary's frames leave within one."""
    scheduler = FairScheduler(max_rows=64, session_rows=16)
    flood = job("flood", 7800)
    scheduler.add(flood)
    requests = [scheduler.take()]
    canary = job("canary", 1)
    scheduler.add(canary)
    requests.append(scheduler.take())
    assert requests[0][0].rows == 16  # the flood alone still gets only its share
    assert any(s.job is canary for s in requests[1])
    assert sum(s.rows for s in requests[1] if s.job is flood) == 16


def test_tenants_alternate_whatever_their_session_count() -> None:
    scheduler = FairScheduler(max_rows=4, session_rows=1)
    for i in range(20):
        scheduler.add(job(f"a{i}", 1, tenant="A"))
    scheduler.add(job("b0", 1, tenant="B"))
    scheduler.add(job("b1", 1, tenant="B"))
    request = scheduler.take()
    tenants = [s.job.tenant for s in request]
    assert tenants.count("B") == 2


def test_slices_deliver_in_place_and_complete_once() -> None:
    log: list = []
    scheduler = FairScheduler(max_rows=4, session_rows=4)
    big = job("a", 10, log=log)
    scheduler.add(big)
    parts = [scheduler.take() for _ in range(3)]
    assert [p[0].rows for p in parts] == [4, 4, 2]
    for request in reversed(parts):  # answers may come back in any order
        for s in request:
            s.job.deliver(s.start, np.full((s.rows, 2), s.start, np.float32))
    assert len(log) == 1
    rows = log[0][1]
    assert rows.shape == (10, 2)
    np.testing.assert_array_equal(rows[:, 0], [0, 0, 0, 0, 4, 4, 4, 4, 8, 8])


def test_a_failure_completes_the_job_once() -> None:
    log: list = []
    failing = job("a", 4, log=log)
    failing.fail(RuntimeError("boom"))
    failing.deliver(0, np.zeros((4, 2), np.float32))
    failing.fail(RuntimeError("again"))
    assert len(log) == 1 and isinstance(log[0][1], RuntimeError)


def test_withdraw_forgets_a_sessions_waiting_rows() -> None:
    scheduler = FairScheduler(max_rows=8, session_rows=8)
    scheduler.add(job("a", 3))
    scheduler.add(job("b", 2))
    scheduler.withdraw("a")
    assert scheduler.pending_rows == 2
    assert [s.job.owner for s in scheduler.take()] == ["b"]
    assert scheduler.take() == []
    assert scheduler.pending_rows == 0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FairScheduler(0, 1)


def test_capped_tenants_share_the_cap_and_the_others_take_the_rest() -> None:
    scheduler = FairScheduler(max_rows=16, session_rows=4)
    for owner in ("a1", "a2", "a3"):
        scheduler.add(job(owner, 8, tenant="a"))
    scheduler.add(job("b1", 8, tenant="b"))

    def heavy(tenant: str) -> bool:
        return tenant == "a"

    first = scheduler.take(5, heavy)
    assert sum(s.rows for s in first if s.job.tenant == "a") == 5
    assert sum(s.rows for s in first if s.job.tenant == "b") == 4  # its session's share
    assert [s.job.owner for s in scheduler.take(0, heavy)] == ["b1"]
    assert scheduler.take(0, heavy) == []  # only capped rows wait, and none may go
    assert sum(s.rows for s in scheduler.take()) == 12  # no cap: each session its share


def test_uploads_wait_in_their_own_lane_and_go_in_their_own_requests() -> None:
    scheduler = FairScheduler(max_rows=16, session_rows=4)
    scheduler.add(job("upload", 1000, tenant="a", bulk=True))
    for owner in ("s1", "s2", "s3"):
        scheduler.add(job(owner, 4, tenant="b"))
    assert (scheduler.pending_rows, scheduler.bulk_rows) == (12, 1000)
    assert {s.job.owner for s in scheduler.take()} == {"s1", "s2", "s3"}  # streams only
    assert scheduler.take() == []
    bulk = scheduler.take_bulk(8)
    assert sum(s.rows for s in bulk) == 8 and all(s.job.bulk for s in bulk)  # one alone fills it
    assert sum(s.rows for s in scheduler.take_bulk(100)) == 16  # never more than a request
    assert scheduler.bulk_rows == 1000 - 24


def test_uploads_of_two_tenants_share_the_room_and_withdraw_forgets_them() -> None:
    scheduler = FairScheduler(max_rows=16, session_rows=4)
    for owner in ("a1", "a2", "a3"):
        scheduler.add(job(owner, 100, tenant="a", bulk=True))
    scheduler.add(job("b1", 100, tenant="b", bulk=True))
    request = scheduler.take_bulk(8)
    assert sorted(s.job.tenant for s in request) == ["a", "b"]  # tenant by tenant
    assert scheduler.waiting("b1")
    scheduler.withdraw("b1")
    assert not scheduler.waiting("b1") and scheduler.bulk_rows == 300 - 4
