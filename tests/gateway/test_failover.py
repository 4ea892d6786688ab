"""Failover across Triton endpoints, against real processes: two embedded Tritons, one real
gateway given both, canary sessions streaming real speech at real-time pace.

Losing one Triton (killed, or stopped past the request deadline) costs the canaries latency,
never a frame or an Error: requests are stateless windows, retried once on the other endpoint.
Only with both gone does a session get `Error` `inference`; sessions work again as soon as
one is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from a2f_triton.gateway_process import GatewayProcess, run_gateway
from a2f_triton.launch import EmbeddedTriton
from canary import Canary, stream_canary
from conftest import embedded_triton
from test_launcher import alive, wait_until

FAULT_AT_S = 2.0  # into the canaries' stream
STOPPED_S = 3.0  # beyond the gateway's 1 s deadline
GATEWAY_FLAGS = (
    "--triton_timeout_s", "1", "--triton_probe_interval_s", "0.25",
    "--triton_probe_timeout_s", "1",
)  # fmt: skip


def ready(http: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{http}/ready", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:  # 503 carries the same body
        return error.code, json.load(error)


def statuses(http: str) -> list[str]:
    return [endpoint["status"] for endpoint in ready(http)[1]["endpoints"]]


def group_members(leader: int) -> list[int]:
    """Processes in `leader`'s process group (a Triton and its python-backend stubs)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == leader:
                members.append(int(entry.name))
    return members


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[list[EmbeddedTriton], GatewayProcess]]:
    run = tmp_path_factory.mktemp("failover")
    servers = [embedded_triton(run / "a"), embedded_triton(run / "b")]
    try:
        for server in servers:
            server.start()
        urls = [server.grpc_url for server in servers]
        with run_gateway(urls, *GATEWAY_FLAGS, log=run / "gateway.log") as gateway:
            yield servers, gateway
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def both(
    cluster: tuple[list[EmbeddedTriton], GatewayProcess],
) -> tuple[list[EmbeddedTriton], GatewayProcess]:
    """Both Tritons running and healthy in the gateway's eyes (a previous test may have
    killed one)."""
    servers, gateway = cluster
    for server in servers:
        if server.pid is None or server.exit_code is not None:
            server.stop()
            server.start()
    assert wait_until(lambda: statuses(gateway.http) == ["healthy", "healthy"], 20)
    return servers, gateway


async def canaries_through(url: str, fault: object, count: int = 2) -> list[Canary]:
    async def at_fault_time() -> None:
        await asyncio.sleep(FAULT_AT_S)
        await asyncio.to_thread(fault)  # type: ignore[arg-type]

    *seen, _ = await asyncio.gather(*(stream_canary(url) for _ in range(count)), at_fault_time())
    return seen


def lossless_across(url: str, fault: object) -> float:
    """Two canaries across `fault`: each gets every frame and no Error. Their worst p99 frame
    lateness, in ms."""
    seen = asyncio.run(canaries_through(url, fault))
    for canary in seen:
        assert canary.complete, (canary.errors, len(canary.frames))
    return max(canary.p99_ms() for canary in seen)


@pytest.mark.timeout(120)
def test_kill_9_of_one_triton_loses_no_frame(
    both: tuple[list[EmbeddedTriton], GatewayProcess],
) -> None:
    (victim, _), gateway = both
    stubs = [pid for pid in group_members(victim.pid) if pid != victim.pid]
    assert stubs, "the python-backend stubs share their server's process group"
    marked: list[float] = []

    def kill() -> None:
        killed = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        assert wait_until(lambda: statuses(gateway.http)[0] == "unhealthy", 10)
        marked.append(time.monotonic() - killed)

    p99_ms = lossless_across(gateway.url, kill)
    print(
        f"kill -9 of one of two Tritons: 0 frames lost, 0 Errors; endpoint out of /ready "
        f"after {marked[0]:.2f} s; frame lateness p99 {p99_ms:.0f} ms"
    )
    assert statuses(gateway.http)[1] == "healthy" and ready(gateway.http)[0] == 200
    victim.stop()  # what is left of the killed server's group goes with it
    assert wait_until(lambda: not any(alive(pid) for pid in stubs), 10)


@pytest.mark.timeout(120)
def test_a_stopped_triton_is_retried_elsewhere_past_the_deadline(
    both: tuple[list[EmbeddedTriton], GatewayProcess],
) -> None:
    (_, victim), gateway = both

    def stop_then_continue() -> None:
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            time.sleep(STOPPED_S)
            assert statuses(gateway.http)[1] == "unhealthy"
        finally:
            os.kill(victim.pid, signal.SIGCONT)

    p99_ms = lossless_across(gateway.url, stop_then_continue)
    print(
        f"SIGSTOP of one of two Tritons for {STOPPED_S:g} s: 0 frames lost, 0 Errors; "
        f"frame lateness p99 {p99_ms:.0f} ms"
    )
    assert wait_until(lambda: statuses(gateway.http) == ["healthy", "healthy"], 10)


@pytest.mark.timeout(120)
def test_both_tritons_down_is_an_inference_error_and_sessions_recover(
    both: tuple[list[EmbeddedTriton], GatewayProcess],
) -> None:
    servers, gateway = both

    def kill_both() -> None:
        for server in servers:
            os.kill(server.pid, signal.SIGKILL)

    (seen,) = asyncio.run(canaries_through(gateway.url, kill_both, count=1))
    assert [error.get("code") for error in seen.errors] == ["inference"]
    assert seen.close_code == 1011
    assert ready(gateway.http)[0] == 503

    servers[0].stop()
    servers[0].start()  # the same ports
    back = time.monotonic()
    assert wait_until(lambda: ready(gateway.http)[0] == 200, 10)
    print(
        f"both Tritons down: Error inference; /ready 200 {time.monotonic() - back:.2f} s after one is back"
    )
    assert asyncio.run(stream_canary(gateway.url)).complete
