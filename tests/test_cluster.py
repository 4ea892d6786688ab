"""`make cluster` for real: HAProxy in front of 2 gateways on 2 embedded Tritons, on loopback.

SIGTERM to the gateway carrying two sessions: HAProxy stops routing new connections to it, the
session that ends within the drain gets every frame, and the streaming client whose session
outlives the drain is told `shutting_down`, reconnects through HAProxy and finishes on the
other gateway with every frame in order, at the stream's timestamps, equal to one unbroken run.
Then a Triton killed outright is restarted and comes back into every gateway's pool, and the
drained gateway, which has exited, is back behind HAProxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from contextlib import AsyncExitStack, suppress
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from a2f_triton.cluster import running_cluster
from a2f_triton.processes import answers_ok
from a2f_triton.restarting import RestartingGateway
from conftest import listed_sessions
from websockets import ConnectionClosed
from websockets.asyncio.client import ClientConnection, connect

from a2f_client import stream
from a2f_protocol.clock import FrameClock
from a2f_protocol.frames import pack_push_audio, unpack_frame
from a2f_protocol.messages import SessionStarted

DRAIN_S = 2.0
START = json.dumps({"type": "StartSession", "blinks": False})
NEW_SESSIONS = 4  # in a row on the other gateway, none refused
BACK_TIMEOUT_S = 120.0  # a Triton's start on a loaded 2-core host


def healthy_endpoints(http: str) -> int:
    try:
        with urllib.request.urlopen(f"{http}/ready", timeout=5) as response:
            return sum(e["status"] == "healthy" for e in json.loads(response.read())["endpoints"])
    except OSError:
        return 0


def sessions_on(gateway: RestartingGateway) -> set[str]:
    """The sessions this gateway serves: its `/sessions` lists the whole cluster's (shared
    Redis), each with the pid serving it."""
    return listed_sessions(gateway.current.http, gateway.current.process.pid)


async def start(ws: ClientConnection) -> dict[str, Any]:
    with suppress(ConnectionClosed):  # a draining gateway may have said goodbye already
        await ws.send(START)
    try:
        return json.loads(await asyncio.wait_for(ws.recv(), 10))
    except ConnectionClosed as closed:  # ... or be exiting: uvicorn closes with 1012
        assert closed.rcvd is not None and closed.rcvd.code in (1001, 1012), closed
        return {"type": "Error", "code": "shutting_down"}


@pytest.fixture(scope="module")
def speech(fixtures_dir: Path) -> np.ndarray:
    pcm, _ = soundfile.read(fixtures_dir / "speech_16k.wav", dtype="int16")
    return pcm


def test_a_drained_gateway_finishes_its_sessions_while_haproxy_routes_to_the_other(
    speech: np.ndarray, tmp_path: Path
) -> None:
    clock = FrameClock(Fraction(60))
    with running_cluster(drain_s=DRAIN_S, run_dir=tmp_path) as cluster:
        gateways = {g.current.http: g for g in cluster.gateways}
        whole = asyncio.run(frames_of(stream(speech, cluster.url, blinks=False)))

        async def run() -> None:
            started: list[SessionStarted] = []
            resumed = asyncio.create_task(
                frames_of(
                    stream(
                        speech, cluster.url, realtime=True, blinks=False, on_started=started.append
                    )
                )
            )
            while not started:
                await asyncio.sleep(0.05)
            home = next(h for h in gateways if started[0].session_id in sessions_on(gateways[h]))
            other = next(h for h in gateways if h != home)
            async with AsyncExitStack() as stack:
                # A second session on the same gateway (leastconn alternates).
                while True:
                    ws = await stack.enter_async_context(connect(cluster.url))
                    finishing = (await start(ws))["session_id"]
                    if finishing in sessions_on(gateways[home]):
                        break
                await ws.send(pack_push_audio(0, speech))
                frames = 0
                while frames < clock.frames_before(speech.size - 4160):
                    unpack_frame(await asyncio.wait_for(ws.recv(), 30))
                    frames += 1

                gateways[home].current.process.send_signal(signal.SIGTERM)
                assert not answers_ok(f"{home}/ready")  # at once
                # The session ending within the drain asks for its tail now (read below): how
                # long the checks in between take on a loaded host is no part of the drain.
                await ws.send(json.dumps({"type": "EndSession"}))
                # New connections: refused by the draining gateway until HAProxy notices,
                # then all on the other one (with leastconn, the drained gateway holding fewer
                # connections would get them if it were still in rotation).
                in_a_row = 0
                for _ in range(100):
                    new = await stack.enter_async_context(connect(cluster.url))
                    reply = await start(new)
                    if reply["type"] == "SessionStarted":
                        assert reply["session_id"] in sessions_on(gateways[other])
                        in_a_row += 1
                        if in_a_row == NEW_SESSIONS:
                            break
                    else:
                        assert reply["code"] == "shutting_down"
                        in_a_row = 0
                        await asyncio.sleep(0.1)
                assert in_a_row == NEW_SESSIONS

                # The session ending within the drain got its tail and SessionEnded.
                while isinstance(message := await asyncio.wait_for(ws.recv(), 30), bytes):
                    unpack_frame(message)
                    frames += 1
                assert json.loads(message)["type"] == "SessionEnded"
                assert frames == clock.frames_before(speech.size)

            # The stream outlived the drain: one reconnect, on the other gateway.
            got = await asyncio.wait_for(resumed, 60)
            assert len(started) == 2
            assert [f.frame_index for f in got] == list(range(clock.frames_before(speech.size)))
            assert [f.timestamp_current for f in got] == [
                clock.timestamp(k) for k in range(len(got))
            ]
            assert [f.timestamp_next for f in got] == [
                clock.timestamp(k + 1) for k in range(len(got))
            ]
            np.testing.assert_allclose(
                np.stack([f.weights for f in got]), np.stack([f.weights for f in whole]), atol=1e-5
            )

        asyncio.run(run())

        triton = cluster.tritons[0]
        killed = triton.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + BACK_TIMEOUT_S
        while not all(healthy_endpoints(g.current.http) == 2 for g in cluster.gateways):
            assert time.monotonic() < deadline, "the killed Triton is not back in the pools"
            cluster.check()  # what `make cluster` does every 2 s
            time.sleep(0.5)
        assert triton.pid not in (None, killed)
        assert all(g.current.process.poll() is None for g in cluster.gateways)
        assert answers_ok(f"{cluster.http}/ready")


async def frames_of(frames: Any) -> list[Any]:
    return [frame async for frame in frames]
