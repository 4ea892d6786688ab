"""Several gateway workers on one port: one host-wide session limit, one report, one metrics."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from contextlib import AsyncExitStack
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

SPREAD_TIMEOUT_S = 60.0  # the second worker may still be starting when the first is ready
STOP_TIMEOUT_S = 15.0


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
                assert "\na2f_sessions_active 3.0\n" in metrics
            return workers

    workers = asyncio.run(run())
    gateway.process.terminate()  # SIGTERM to the supervisor stops every worker
    assert gateway.process.wait(STOP_TIMEOUT_S) == 0
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the supervisor"
        time.sleep(0.1)
