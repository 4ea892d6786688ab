"""The log rate limiter, with a hand-driven clock."""

from __future__ import annotations

import pytest

from gateway.drivers.log_throttle import RateLimiter


def test_one_event_per_key_and_interval_with_the_count_left_out() -> None:
    limiter = RateLimiter(10.0)
    assert limiter.allow("utf8", 0.0) == 0
    assert [limiter.allow("utf8", t) for t in (0.0, 1.0, 9.9)] == [None, None, None]
    assert limiter.allow("http", 5.0) == 0  # keys are independent
    assert limiter.allow("utf8", 10.0) == 3
    assert limiter.allow("utf8", 10.5) is None
    assert limiter.allow("utf8", 30.0) == 1


def test_zero_interval_allows_everything() -> None:
    limiter = RateLimiter(0.0)
    assert [limiter.allow("k", 1.0) for _ in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError, match="negative"):
        RateLimiter(-1.0)
