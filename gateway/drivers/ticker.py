"""The timer of a connection whose session has idle frames, for any driver.

The core (`gateway.session.connection`) reads no clock: while `tick_period` is not None it
needs `tick(now)` that often, and a pause then becomes silence as real time passes. A late
tick costs nothing but jitter: the core works from `now`, so frames never drift.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.session.connection import Connection


async def tick(connection: Connection, wanted: asyncio.Event, act: Callable[[], None]) -> None:
    """Forever (cancel it): `connection.tick` every `tick_period`, then `act()` to carry out
    what it decided; while there is no period, waits for `wanted`, which the driver sets when
    one appears."""
    while True:
        period = connection.tick_period
        if period is None:
            wanted.clear()
            await wanted.wait()
            continue
        await asyncio.sleep(period)
        connection.tick(time.monotonic())
        act()
