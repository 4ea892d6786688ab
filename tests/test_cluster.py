"""`make cluster` for real: HAProxy in front of 2 gateways on 2 embedded Tritons, on loopback.

SIGTERM to the gateway carrying two sessions: HAProxy stops routing new connections to it, the
session that ends within the drain gets every frame, and the streaming client whose session
outlives the drain is told `shutting_down`, reconnects through HAProxy and finishes on the
other gateway with every frame in order, at the stream's timestamps, equal to one unbroken run.
Then a Triton killed outright is restarted and comes back into every gateway's pool, and the
drained gateway, which has exited, is back behind HAProxy.

The Audio2Face-3D gRPC API through HAProxy's gRPC port: SIGTERM to the gateway carrying a
stream, whose health at once says NOT_SERVING; the stream, which outlives the drain, ends
UNAVAILABLE saying the server is shutting down, and new calls all go to the other gateway and
complete.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AsyncExitStack, suppress
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import soundfile
from a2f_triton.cluster import Cluster, running_cluster
from a2f_triton.processes import answers_ok
from a2f_triton.restarting import RestartingGateway
from conftest import listed_sessions
from grpc_health.v1 import health_pb2, health_pb2_grpc
from websockets import ConnectionClosed
from websockets.asyncio.client import ClientConnection, connect

from a2f_client import stream
from a2f_protocol.clock import FrameClock
from a2f_protocol.frames import pack_push_audio, unpack_frame
from a2f_protocol.messages import SessionStarted
from tests.gateway.test_ace_grpc import END, SERVICE, Reply, call, chunk, clip, header

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module: its tests drain a gateway each, which comes back."""
    with running_cluster(drain_s=DRAIN_S, run_dir=tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def test_a_drained_gateway_finishes_its_sessions_while_haproxy_routes_to_the_other(
    speech: np.ndarray, cluster: Cluster
) -> None:
    clock = FrameClock(Fraction(60))
    gateways = {g.current.http: g for g in cluster.gateways}
    whole = asyncio.run(frames_of(stream(speech, cluster.url, blinks=False)))

    async def run() -> None:
        started: list[SessionStarted] = []
        resumed = asyncio.create_task(
            frames_of(
                stream(speech, cluster.url, realtime=True, blinks=False, on_started=started.append)
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
        assert [f.timestamp_current for f in got] == [clock.timestamp(k) for k in range(len(got))]
        assert [f.timestamp_next for f in got] == [clock.timestamp(k + 1) for k in range(len(got))]
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


def protocols_on(gateway: RestartingGateway) -> list[str]:
    """The protocols of the sessions this gateway serves (see `sessions_on`)."""
    with urllib.request.urlopen(f"{gateway.current.http}/sessions", timeout=10) as response:
        sessions = json.loads(response.read())["sessions"]
    return [s["protocol"] for s in sessions if s["worker_pid"] == gateway.current.process.pid]


def grpc_streams_started(gateway: RestartingGateway) -> float:
    with urllib.request.urlopen(f"{gateway.current.http}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(r'^a2f_sessions_total\{protocol="ace_grpc"\} (\S+)$', text, re.M)
    assert found is not None, "no a2f_sessions_total for ace_grpc"
    return float(found[1])


async def grpc_health(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=SERVICE)
        return int((await health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)).status)


def test_a_drained_gateway_ends_its_grpc_streams_and_haproxy_sends_new_calls_to_the_other(
    speech: np.ndarray, cluster: Cluster
) -> None:
    assert cluster.grpc is not None
    deadline = time.monotonic() + BACK_TIMEOUT_S
    while not all(answers_ok(f"{g.current.http}/ready") for g in cluster.gateways):
        assert time.monotonic() < deadline, "a gateway is not back"
        cluster.check()  # a gateway drained before has exited: started again
        time.sleep(0.5)
    # Real time for twice the clip: it outlives the drain whenever it started.
    audio = np.concatenate([speech, speech])
    long = [header(16_000), *(chunk(audio[i : i + 1600]) for i in range(0, audio.size, 1600)), END]
    second = speech[:16_000]

    async def run() -> Reply:
        assert cluster.grpc is not None
        streaming = asyncio.create_task(call(cluster.grpc, long, pause_s=0.1, own_connection=True))
        home = None
        while home is None:
            assert not streaming.done(), "the stream ended before it was seen"
            await asyncio.sleep(0.1)
            home = next((g for g in cluster.gateways if "ace_grpc" in protocols_on(g)), None)
        other = next(g for g in cluster.gateways if g is not home)
        before = grpc_streams_started(other)
        assert home.current.grpc is not None
        home.current.process.send_signal(signal.SIGTERM)
        assert await grpc_health(home.current.grpc) == health_pb2.HealthCheckResponse.NOT_SERVING

        # New calls, each a new client's connection, two at a time (with the draining gateway
        # in rotation, leastconn would give it the second): refused by the draining gateway
        # until HAProxy notices (none completes there), then all on the other one.
        in_a_row = completed = 0
        for _ in range(50):
            new = clip(second, 16_000)
            pair = await asyncio.gather(
                *(call(cluster.grpc, new, own_connection=True) for _ in range(2))
            )
            for reply in pair:
                if reply.code == grpc.StatusCode.OK:
                    assert len(reply.times) == math.ceil(second.size * 30 / 16_000)
                    completed += 1
                    in_a_row += 1
                else:
                    assert reply.code == grpc.StatusCode.UNAVAILABLE, reply.details
                    in_a_row = 0
            if in_a_row >= NEW_SESSIONS:
                break
            await asyncio.sleep(0.1)
        assert in_a_row >= NEW_SESSIONS
        assert grpc_streams_started(other) - before == completed
        return await asyncio.wait_for(streaming, 60)

    stream = asyncio.run(run())
    assert stream.code == grpc.StatusCode.UNAVAILABLE, stream.details
    assert "shutting down" in stream.details
    assert stream.times  # it streamed until the drain ended
