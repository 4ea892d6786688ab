"""Fair share between tenants, as a pure policy: streams and latencies in, a rate out."""

from __future__ import annotations

import pytest

from gateway.inference.fair_share import FLOOR_ROWS_S, FairShare

PERIOD = 0.25


def busy_host(bound_s: float = 0.015) -> FairShare:
    """Tenant "a" streams 6 sessions, "b" 2: "a" is over its share, "b" within it."""
    fair = FairShare(bound_s, burst_rows=64, period_s=PERIOD, min_samples=4)
    for i in range(6):
        fair.stream(("a", i), "a")
    for i in range(2):
        fair.stream(("b", i), "b")
    return fair


def period(
    fair: FairShare, start: float, *, b_latency: float, a_rows: int, backlog: bool = True
) -> float:
    """One control period: b's frames come back `b_latency` late, "a" takes `a_rows`, and
    rows wait beyond one request (`backlog`) or not."""
    fair.allowance(start, backlog)
    for i in range(8):
        fair.observe(start + i * PERIOD / 8, "b", b_latency)
        fair.observe(start, "a", 1.0)  # a heavy tenant's own lateness is not what is protected
    fair.taken(a_rows)
    end = start + PERIOD
    fair.allowance(end, backlog)
    return end


def test_shares_follow_the_stream_counts() -> None:
    fair = busy_host()
    assert fair.over_share("a") and not fair.over_share("b")
    assert not fair.over_share("c")  # a tenant with no stream here
    for i in range(4):
        fair.ended(("a", i))
    assert not fair.over_share("a")  # 2 and 2: nobody is over
    lone = FairShare(0.015, burst_rows=64)
    lone.stream("x", "only")
    assert not lone.over_share("only")  # one tenant has the whole host


def test_late_light_frames_throttle_the_heavy_tenant_from_what_it_took() -> None:
    fair = busy_host()
    now = period(fair, 0.0, b_latency=0.005, a_rows=500)
    assert not fair.throttling and fair.allowance(now, True) is None
    now = period(fair, now, b_latency=0.040, a_rows=500)  # 2,000 rows/s while b was late
    assert fair.rate == pytest.approx(2000 * 0.8)
    assert fair.refusal("a") is not None and fair.refusal("b") is None
    # tokens accrue at the rate, up to one request's worth
    assert fair.allowance(now + 0.01, True) == 16
    fair.taken(16)
    assert fair.allowance(now + 0.01, True) == 0
    assert fair.wait_s() == pytest.approx(1 / 1600, rel=0.01)
    assert fair.allowance(now + 0.2, True) == 64  # within the period: no new decision yet


def test_the_rate_falls_grows_back_and_is_let_go() -> None:
    fair = busy_host()
    now = 0.0
    for _ in range(3):  # b stays late: each period "a" may take a fifth less
        now = period(fair, now, b_latency=0.040, a_rows=int((fair.rate or 1000) * PERIOD))
    rate = fair.rate
    assert rate == pytest.approx(1000 * 0.8**3, rel=0.02)
    now = period(fair, now, b_latency=0.005, a_rows=int(rate * PERIOD))
    assert fair.rate == pytest.approx(rate * 1.1)
    # "a" asks for less than half of what it may take: no need to hold it back any more
    now = period(fair, now, b_latency=0.005, a_rows=1)
    assert not fair.throttling and fair.refusal("a") is None


def test_too_few_light_frames_or_a_zero_bound_never_throttle() -> None:
    fair = busy_host()
    fair.allowance(0.0, True)
    fair.observe(0.0, "b", 1.0)  # one late frame is no evidence
    fair.taken(500)
    fair.allowance(PERIOD, True)
    assert not fair.throttling
    off = busy_host(bound_s=0.0)
    assert period(off, 0.0, b_latency=1.0, a_rows=500) and off.allowance(1.0, True) is None


def test_a_rate_is_held_while_too_few_fresh_frames_judge_it() -> None:
    fair = busy_host()
    now = period(fair, 0.0, b_latency=0.040, a_rows=500)
    rate = fair.rate
    fair.observe(now, "b", 0.001)  # one timely frame: not enough to grow the rate on
    fair.taken(int(rate * PERIOD))  # "a" takes all it may: still held back
    fair.allowance(now + PERIOD, True)
    assert fair.rate == rate


def test_a_slow_host_is_not_held_back_and_a_hold_that_cannot_help_rests() -> None:
    fair = busy_host()
    now = period(fair, 0.0, b_latency=0.040, a_rows=500, backlog=False)
    assert not fair.throttling  # late, but nothing waits: slow, not past capacity
    while fair.rate != FLOOR_ROWS_S:  # past capacity, and b stays late however little "a" gets
        now = period(fair, now, b_latency=0.040, a_rows=int((fair.rate or 1000) * PERIOD))
    now = period(fair, now, b_latency=0.040, a_rows=int(FLOOR_ROWS_S * PERIOD))
    assert not fair.throttling  # at the floor and still late: holding back does not help
    rest_ends = now + 10.0
    while now + PERIOD < rest_ends:  # each period decided on before the rest ends
        now = period(fair, now, b_latency=0.040, a_rows=500)
        assert not fair.throttling
    now = period(fair, now, b_latency=0.040, a_rows=500)
    assert fair.throttling  # rested: it may try again
