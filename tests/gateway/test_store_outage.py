"""A Redis outage under live streams: 2 workers share a real redis-server; one tenant with an
audio quota streams 8 sessions at real-time pace while Redis is paused (SIGSTOP), then killed
and started again, empty, on the same port.

What must hold: every running session gets every frame, never more than `MAX_GAP_S` after the
one before, and no `Error` (no `quota`: the tenant is far within it); a new session started
during the pause is answered within `ANSWER_S` (started, or an `Error` naming the store);
`/health` and `/ready` answer within `PROBE_S` throughout; after the restart `/sessions` lists
the running sessions again and the host limit counts them.

A shared test host stalls now and then for its own reasons (a 2-core machine running other
suites stalled every stream here by 0.2-1.1 s, Redis or not). A control stream on another
gateway (no Redis) measures those stalls: a wait counts against the store only by what the
control did not wait at the same time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from a2f_triton.gateway_process import GatewayProcess
from a2f_triton.processes import free_port
from conftest import GatewayFactory, redis_server
from websockets.asyncio.client import ClientConnection, connect

from a2f_protocol.clock import FrameClock
from a2f_protocol.frames import pack_push_audio, unpack_frame
from tests.canary import RATE, SPEECH, START
from tests.gateway.test_tenants import add_key, bearer, http

SESSIONS = 8
PAUSE_S = 10.0
CHUNK = RATE // 25  # 40 ms pushes
AUDIO = np.tile(SPEECH, 4)  # 23.5 s: a second before the pause, the rest after the restart
CLOCK = FrameClock(Fraction(30))  # the rate; half the host's work of 60 fps
MAX_GAP_S = 0.2
ANSWER_S = 2.0
PROBE_S = 1.0


@dataclass
class Stream:
    """One running session: its frames' indices and arrival times, and any `Error`."""

    ws: ClientConnection
    session_id: str
    frames: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False

    def host_stall_s(self, begin: float, end: float) -> float:
        """As the control stream: its longest silence within [begin, end], beyond the usual."""
        times = np.clip(self.arrivals, begin, end)
        silences = np.diff(np.concatenate(([begin], times, [end])))
        return max(0.0, float(silences.max() - np.median(np.diff(self.arrivals))))

    def gaps(self) -> list[tuple[float, float]]:
        """(begin, end) of every wait between two frames."""
        return list(zip(self.arrivals, self.arrivals[1:], strict=False))


async def start(url: str, key: str) -> tuple[ClientConnection, dict[str, Any], float]:
    """A new connection, the answer to its `StartSession` and how long that took."""
    began = time.monotonic()
    ws = await connect(url, additional_headers=bearer(key), max_size=None)
    await ws.send(START)
    answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return ws, answer, time.monotonic() - began


async def stream(session: Stream, audio: npt.NDArray[np.int16] = AUDIO) -> None:
    """`audio` at real-time pace, then `EndSession`; everything the gateway sends recorded."""
    began = time.monotonic()

    async def send() -> None:
        for first in range(0, audio.size, CHUNK):
            await asyncio.sleep(max(0.0, began + first / RATE - time.monotonic()))
            await session.ws.send(pack_push_audio(first, audio[first : first + CHUNK]))
        await session.ws.send(json.dumps({"type": "EndSession"}))

    sender = asyncio.create_task(send())
    try:
        while True:
            message = await asyncio.wait_for(session.ws.recv(), 30)
            if isinstance(message, bytes):
                session.frames.append(unpack_frame(message).frame_index)
                session.arrivals.append(time.monotonic())
            elif (decoded := json.loads(message))["type"] == "Error":
                session.errors.append(decoded)
            elif decoded["type"] == "SessionEnded":
                session.ended = True
                return
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


async def probe(
    base: str, stop: asyncio.Event, waits: list[tuple[float, float]], reachable: list[bool]
) -> None:
    """`/health` and `/ready` asked again and again: (begin, end) of each answer kept, and
    whether `/health` found the store reachable."""
    while not stop.is_set():
        for route in ("health", "ready"):
            began = time.monotonic()
            status, _, body = await asyncio.to_thread(http, f"{base}/{route}")
            assert status == 200, route
            waits.append((began, time.monotonic()))
            if route == "health":
                reachable.append(json.loads(body)["store"]["reachable"])
        await asyncio.sleep(0.2)


def test_streams_outlive_a_paused_then_emptied_redis(
    start_gateway: GatewayFactory, gateway: GatewayProcess, tmp_path: Path
) -> None:
    port, run_dir = free_port(), tmp_path / "redis"
    run_dir.mkdir()
    tenants = tmp_path / "tenants.toml"
    _, key = add_key(tenants, "acme", "--audio-seconds-per-minute", "1000")
    _, admin = add_key(tenants, "ops", "--admin")
    with ExitStack() as redis:
        first = redis.enter_context(redis_server(port, run_dir))
        outage = start_gateway(
            "--workers", "2", "--redis_url", f"redis://127.0.0.1:{port}/0",
            "--tenants_file", str(tenants), "--max_sessions", str(SESSIONS + 1),
            "--fps", str(CLOCK.fps),
        )  # fmt: skip

        def live_ids() -> set[str]:
            """The sessions `/sessions` lists; none while it answers 503 (Redis not back)."""
            status, _, body = http(f"{outage.http}/sessions", bearer(admin))
            if status == 503:
                return set()
            assert status == 200, body
            return {s["session_id"] for s in json.loads(body)["sessions"]}

        async def run() -> None:
            async with AsyncExitStack() as stack:
                ws, answer, _ = await start(gateway.url, key)  # the control, on a gateway alone
                stack.push_async_callback(ws.close)
                assert answer["type"] == "SessionStarted", answer
                control = Stream(ws, answer["session_id"])
                controlled = asyncio.create_task(stream(control, np.tile(AUDIO, 2)))
                sessions = []
                for _ in range(SESSIONS):
                    ws, answer, _ = await start(outage.url, key)
                    stack.push_async_callback(ws.close)
                    assert answer["type"] == "SessionStarted", answer
                    sessions.append(Stream(ws, answer["session_id"]))
                streams = [asyncio.create_task(stream(s)) for s in sessions]
                stop, waits, answers = asyncio.Event(), list[tuple[float, float]](), []
                reachable: list[bool] = []
                probes = asyncio.create_task(probe(outage.http, stop, waits, reachable))
                await asyncio.sleep(1.0)

                os.kill(first.pid, signal.SIGSTOP)
                paused = time.monotonic()
                await asyncio.sleep(2.0)  # the workers have met the pause
                for _ in range(2):  # either worker may take it
                    began = time.monotonic()
                    ws, answer, took = await start(outage.url, key)
                    await ws.close()
                    answers.append((began, began + took))
                    if answer["type"] == "Error":
                        assert answer["code"] == "store_unavailable", answer
                        assert "Redis" in answer["message"], answer
                await asyncio.sleep(max(0.0, paused + PAUSE_S - time.monotonic()))

                os.kill(first.pid, signal.SIGKILL)

                def restart() -> None:  # in a thread: this loop reads the streams meanwhile
                    redis.close()
                    redis.enter_context(redis_server(port, run_dir))  # empty, same port

                assert False in reachable, "/health never said the store was unreachable"
                await asyncio.to_thread(restart)
                ids = {s.session_id for s in sessions}
                deadline = time.monotonic() + 10
                while not ids <= await asyncio.to_thread(live_ids):
                    assert time.monotonic() < deadline, "running sessions not registered again"
                    await asyncio.sleep(0.5)
                ws, answer, _ = await start(outage.url, key)  # the host's last slot
                stack.push_async_callback(ws.close)
                assert answer["type"] == "SessionStarted", answer
                ws, answer, _ = await start(outage.url, key)
                stack.push_async_callback(ws.close)
                assert answer["code"] == "busy", answer  # the running sessions hold the rest

                await asyncio.gather(*streams)
                stop.set()
                await probes
                assert reachable[-1], "/health never found the store back"
                controlled.cancel()
            expected = list(range(CLOCK.frames_before(AUDIO.size)))
            for session in sessions:
                assert not session.errors and session.ended, session.errors
                assert session.frames == expected
                late = [
                    (round(begin - paused, 2), round(end - begin, 3))
                    for begin, end in session.gaps()
                    if end - begin - control.host_stall_s(begin, end) > MAX_GAP_S
                ]
                assert not late, f"frames late (s after the pause, gap): {late}"
            slow = [
                (round(begin - paused, 2), round(end - begin, 3))
                for begin, end in waits
                if end - begin - control.host_stall_s(begin, end) > PROBE_S
            ]
            assert not slow, f"slow probes (s after the pause, wait): {slow}"
            slow = [
                (round(begin - paused, 2), round(end - begin, 3))
                for begin, end in answers
                if end - begin - control.host_stall_s(begin, end) > ANSWER_S
            ]
            assert not slow, f"new sessions answered late (s after the pause, wait): {slow}"

        asyncio.run(run())
        outage.process.terminate()
        assert outage.process.wait(15) == 0
