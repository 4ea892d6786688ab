"""The drivers' overdue timer: it measures the read or write in progress, never the time
between them."""

from __future__ import annotations

import asyncio

from gateway.drivers.overdue import Overdue

PERIOD_S = 0.2  # the steps below keep 0.7 of it clear of each edge


async def _fired_during(timer_steps: list[str]) -> int:
    fired: list[float] = []
    timer = Overdue(PERIOD_S, lambda: fired.append(asyncio.get_running_loop().time()))
    for step in timer_steps:
        if step == "read":
            timer.begin()
        elif step == "heard":
            timer.end()
        else:
            await asyncio.sleep(float(step) * PERIOD_S)
    timer.cancel()
    return len(fired)


def test_a_read_waiting_past_the_period_fires() -> None:
    assert asyncio.run(_fired_during(["read", "1.7"])) == 1


def test_messages_arriving_within_the_period_never_fire() -> None:
    steps = ["read", "0.3", "heard", "read", "0.3", "heard", "read", "0.3", "heard"]
    assert asyncio.run(_fired_during(steps)) == 0


def test_time_between_reads_does_not_count() -> None:
    assert asyncio.run(_fired_during(["read", "0.3", "heard", "2", "read", "0.3"])) == 0
