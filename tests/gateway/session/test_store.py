"""The session stores: the same contract in one process and across processes on one host."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.metrics import WEBSOCKET
from gateway.stores.base import SessionStore
from gateway.stores.host import HostSessionStore, create_table
from gateway.stores.local import SessionRegistry


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "sessions"
    create_table(path, 2)
    return path


@pytest.fixture(params=["in-process", "host"])
def store(request: pytest.FixtureRequest, table: Path) -> Iterator[SessionStore]:
    if request.param == "in-process":
        yield SessionRegistry(2)
        return
    host = HostSessionStore(table)
    yield host
    host.close()


async def test_slots_are_limited_freed_and_reused(store: SessionStore) -> None:
    assert await store.acquire("a", 16000) is not None
    assert await store.acquire("b", 16000, "tenant-1") is not None
    assert await store.acquire("c", 16000) is None
    await store.release("a")
    await store.release("a")  # twice: no-op
    assert await store.acquire("c", 48000) is not None
    report = await store.report()
    assert report.count == 2 and report.max_sessions == 2
    assert {s.session_id for s in report.sessions} == {"b", "c"}
    assert await store.count() == 2 and await store.count("tenant-1") == 1


async def test_counters_show_in_the_report(store: SessionStore) -> None:
    counters = await store.acquire("a", 24000, "t")
    assert counters is not None
    counters.audio_samples = 24000
    counters.frames_sent += 30
    counters.queued_frames += 4
    counters.requests_in_flight += 1
    counters.errors += 1
    counters.queued_frames -= 1
    (stats,) = (await store.report()).sessions
    assert (stats.session_id, stats.tenant, stats.sample_rate, stats.worker_pid) == (
        "a", "t", 24000, os.getpid(),
    )  # fmt: skip
    assert (stats.audio_samples, stats.frames_sent, stats.queued_frames) == (24000, 30, 3)
    assert (stats.requests_in_flight, stats.errors) == (1, 1)
    assert stats.protocol == WEBSOCKET


async def test_two_stores_on_one_table_share_the_slots_and_the_report(table: Path) -> None:
    first, second = HostSessionStore(table), HostSessionStore(table)
    counters = await first.acquire("a", 16000)
    assert counters is not None and await second.acquire("b", 16000) is not None
    assert await first.acquire("c", 16000) is None and await second.acquire("c", 16000) is None
    counters.frames_sent = 7
    assert {(s.session_id, s.frames_sent) for s in (await second.report()).sessions} == {
        ("a", 7), ("b", 0),
    }  # fmt: skip
    await second.release("a")  # not its session: still live
    assert await second.count() == 2
    await first.release("a")
    assert await second.acquire("c", 16000) is not None


CLAIM_AND_DIE = """
import asyncio, os, sys
from pathlib import Path
from gateway.stores.host import HostSessionStore
assert asyncio.run(HostSessionStore(Path(sys.argv[1])).acquire("crashed", 16000)) is not None
os._exit(0)  # no release: as if killed
"""


async def test_a_dead_workers_slots_are_free_again(table: Path) -> None:
    subprocess.run([sys.executable, "-c", CLAIM_AND_DIE, str(table)], check=True)
    store = HostSessionStore(table)
    assert await store.count() == 0  # not reported...
    assert await store.acquire("a", 16000) is not None
    assert await store.acquire("b", 16000) is not None  # ...and its slot reclaimed


HOLD = """
import asyncio, sys, time
from pathlib import Path
from gateway.stores.host import HostSessionStore
assert asyncio.run(HostSessionStore(Path(sys.argv[1])).acquire("held", 16000)) is not None
print("held", flush=True)
time.sleep(60)
"""


async def test_a_live_process_holds_its_slot(table: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(table)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        store = HostSessionStore(table)
        (stats,) = (await store.report()).sessions
        assert (stats.session_id, stats.worker_pid) == ("held", holder.pid)
        assert await store.acquire("a", 16000) is not None
        assert await store.acquire("b", 16000) is None
    finally:
        holder.kill()
        holder.wait()


async def test_overlong_ids_are_refused(table: Path) -> None:
    with pytest.raises(ValueError):
        await HostSessionStore(table).acquire("x" * 65, 16000)
