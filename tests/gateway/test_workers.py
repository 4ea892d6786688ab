"""Several gateway workers on one port: one host-wide session limit, one report, one metrics;
a worker killed outright is started again while the other streams on, and nothing of it stays."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from canary import stream_started
from test_launcher import children_of
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake

from gateway.processes.restarts import Restarts

SPREAD_TIMEOUT_S = 60.0  # the second worker may still be starting when the first is ready
STOP_TIMEOUT_S = 15.0
SHARED_MEMORY = Path("/dev/shm")
BACK_WITHIN_S = 5.0  # a killed worker accepts sessions again


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def sessions(http: str) -> dict[str, Any]:
    return json.loads(get(f"{http}/sessions"))


async def start_session(ws: ClientConnection) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "StartSession", "blinks": False}))
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def end_session(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "EndSession"}))
    while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "SessionEnded":
        pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_the_session_limit_report_and_metrics(start_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway("--workers", "2", "--max_sessions", "3")

    async def run() -> set[int]:
        async with AsyncExitStack() as stack:
            live: dict[str, ClientConnection] = {}
            deadline = time.monotonic() + SPREAD_TIMEOUT_S
            while True:  # sessions on both workers: connections land on either at random
                ws = await stack.enter_async_context(connect(gateway.url))
                started = await start_session(ws)
                assert started["type"] == "SessionStarted", started
                live[started["session_id"]] = ws
                if len(live) < 3:
                    continue
                workers = {s["worker_pid"] for s in sessions(gateway.http)["sessions"]}
                if len(workers) == 2:
                    break
                assert time.monotonic() < deadline, "every session landed on one worker"
                await end_session(live.popitem()[1])
                await asyncio.sleep(0.2)

            refused = await start_session(await stack.enter_async_context(connect(gateway.url)))
            assert (refused["type"], refused["code"]) == ("Error", "busy")
            for _ in range(8):  # new HTTP connections: answered by either worker
                report = sessions(gateway.http)
                assert report["count"] == 3 and report["max_sessions"] == 3
                assert {s["session_id"] for s in report["sessions"]} == set(live)
                metrics = get(f"{gateway.http}/metrics").decode()
                assert '\na2f_sessions_active{protocol="websocket"} 3.0\n' in metrics
                assert {s["protocol"] for s in report["sessions"]} == {"websocket"}
            return workers

    workers = asyncio.run(run())
    gateway.process.terminate()  # SIGTERM to the supervisor stops every worker
    assert gateway.process.wait(STOP_TIMEOUT_S) == 0
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the supervisor"
        time.sleep(0.1)


def leftovers(supervisor: int, workers: set[int]) -> list[Path]:
    """The run directory of `supervisor` and the shared-memory regions of `workers`."""
    return [
        *Path(tempfile.gettempdir()).glob(f"a2f-gateway-{supervisor}-*"),
        *(path for pid in workers for path in SHARED_MEMORY.glob(f"a2f-gateway-{pid}-*")),
    ]


def test_a_killed_worker_is_restarted_and_the_other_streams_on(start_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway("--workers", "2", "--max_sessions", "16")
    supervisor = gateway.process.pid

    async def on_worker(stack: AsyncExitStack) -> tuple[ClientConnection, int]:
        """A new session, and the PID of the worker it landed on."""
        ws = await stack.enter_async_context(connect(gateway.url))
        started = await start_session(ws)
        assert started["type"] == "SessionStarted", started
        report = sessions(gateway.http)["sessions"]
        return ws, next(s["worker_pid"] for s in report if s["session_id"] == started["session_id"])

    async def run() -> set[int]:
        async with AsyncExitStack() as stack:
            streams: dict[int, list[ClientConnection]] = {}
            deadline = time.monotonic() + SPREAD_TIMEOUT_S
            while len(streams) < 2 or min(len(on) for on in streams.values()) < 3:
                ws, pid = await on_worker(stack)
                if len(on := streams.setdefault(pid, [])) < 3:
                    on.append(ws)
                else:
                    await end_session(ws)
                assert time.monotonic() < deadline, "the sessions did not spread over 2 workers"
            victim, survivor = streams
            canaries = {
                pid: [asyncio.create_task(stream_started(ws)) for ws in on]
                for pid, on in streams.items()
            }
            await asyncio.sleep(1.5)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            while True:  # new connections land on either worker: until one lands on the new one
                try:
                    ws, pid = await on_worker(stack)
                except (OSError, InvalidHandshake):  # queued on the killed worker's socket
                    continue
                assert pid != victim
                if pid != survivor:
                    break
                await end_session(ws)
            back_s = time.monotonic() - killed
            assert back_s < BACK_WITHIN_S, f"the worker took {back_s:.1f} s to come back"
            print(f"killed worker: a new one served a session after {back_s:.2f} s")
            assert victim not in {s["worker_pid"] for s in sessions(gateway.http)["sessions"]}
            state = json.loads(get(f"{gateway.http}/health"))["workers"]
            assert state["running"] == 2 and state["restarts"] == 1, state
            assert not state["crash_loop"] and "SIGKILL" in state["last_exit"]

            survived = await asyncio.gather(*canaries[survivor])
            assert all(canary.complete for canary in survived), survived
            for task in canaries[victim]:
                assert not (await task).complete  # they were on the killed worker
            return {victim, survivor, pid}

    workers = asyncio.run(run())
    gateway.process.terminate()
    assert gateway.process.wait(STOP_TIMEOUT_S) == 0
    assert leftovers(supervisor, workers) == []


def test_what_a_killed_supervisor_leaves_is_removed_at_the_next_start(start_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = start_gateway("--workers", "2")
    supervisor = gateway.process.pid
    workers = set(children_of(supervisor))  # and its resource tracker, which has no region
    os.killpg(supervisor, signal.SIGKILL)  # the supervisor, its workers, everything
    gateway.process.wait()
    left = leftovers(supervisor, workers)
    assert any(path.is_dir() for path in left), "its run directory stays"
    start_gateway()
    assert [path for path in left if path.exists()] == []


def test_a_worker_is_restarted_at_once_then_later_and_not_in_a_crash_loop() -> None:
    restarts = Restarts(limit=4, window_s=60.0, first_backoff_s=0.5, max_backoff_s=1.0)
    assert [restarts.exited(now) for now in (0.0, 1.0, 2.0)] == [0.0, 0.5, 1.0]
    assert restarts.exited(3.0) is None  # 4 exits within a minute
    assert restarts.total == 3
    assert Restarts().exited(0.0) == 0.0
    steady = Restarts(limit=2, window_s=60.0)
    assert steady.exited(0.0) == 0.0
    assert steady.exited(61.0) == 0.0  # the earlier exit has left the window
