"""Uploads beside streams, as a pure policy: live latencies in, a rate for uploads out."""

from __future__ import annotations

from gateway.inference.bulk_share import FLOOR_ROWS_S, START_ROWS_S, BulkShare

PERIOD = 0.25


def period(bulk: BulkShare, start: float, *, latency: float, rows: int) -> float:
    """One control period: live frames come back `latency` late, uploads take `rows`."""
    bulk.allowance(start)
    for i in range(8):
        bulk.observe(start + i * PERIOD / 8, latency)
    bulk.taken(rows)
    end = start + PERIOD
    bulk.allowance(end)
    return end


def test_late_live_frames_slow_uploads_down_to_a_floor_and_on_time_lets_them_grow() -> None:
    bulk = BulkShare(0.012, burst_rows=32, period_s=PERIOD)
    now = period(bulk, 0.0, latency=0.005, rows=0)
    assert bulk.rate == START_ROWS_S  # unused: not grown
    now = period(bulk, now, latency=0.005, rows=int(START_ROWS_S * PERIOD))
    assert bulk.rate > START_ROWS_S  # used and on time: grown
    for _ in range(40):
        now = period(bulk, now, latency=0.050, rows=10)
    assert bulk.rate == FLOOR_ROWS_S  # slowed, never stopped
    bulk.taken(32)
    assert 0 < bulk.wait_s() <= 33 / FLOOR_ROWS_S


def test_streams_that_send_nothing_do_not_hold_uploads_back() -> None:
    bulk = BulkShare(0.012, burst_rows=32, period_s=PERIOD)
    now = 0.0
    for _ in range(4):
        bulk.allowance(now)
        bulk.taken(int(bulk.rate * PERIOD))
        now += PERIOD
    bulk.allowance(now)
    assert bulk.rate > START_ROWS_S * 1.5  # no live frame at all: grown as used


def test_tokens_refill_at_the_rate_and_at_most_one_burst() -> None:
    bulk = BulkShare(0.012, burst_rows=32)
    assert bulk.allowance(0.0) == 0
    assert bulk.allowance(0.02) == int(0.02 * START_ROWS_S)
    assert bulk.allowance(10.0) == 32
    bulk.taken(32)
    assert bulk.allowance(10.0) == 0


def test_a_zero_bound_leaves_uploads_alone() -> None:
    bulk = BulkShare(0.0, burst_rows=32)
    bulk.observe(0.0, 5.0)
    assert bulk.allowance(1.0) is None and bulk.wait_s() == 0.0
