"""Fair share against the real gateway and Triton: a tenant over its share of a host past
capacity is held back while another tenant's frames are late, loses nothing, and is let go
once that tenant leaves."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from a2f_triton.gateway_process import GatewayProcess
from websockets.asyncio.client import connect

from a2f_protocol.frames import pack_push_audio, unpack_frame
from tests.canary import EXPECTED_FRAMES, SPEECH, START, stream_canary
from tests.gateway.test_tenants import add_key, bearer, http


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | Path]:
    path = tmp_path_factory.mktemp("fair") / "tenants.toml"
    return {
        "path": path,
        "heavy": add_key(path, "heavy")[1],
        "light": add_key(path, "light")[1],
        "admin": add_key(path, "ops", "--admin")[1],
    }


@pytest.fixture(scope="module")
def gateway(start_gateway, keys) -> GatewayProcess:  # type: ignore[no-untyped-def]
    # A bound every frame misses: throttling starts as soon as the light tenant has frames back.
    return start_gateway("--tenants_file", str(keys["path"]), "--fair_latency_ms", "0.001")


def held_rate(gateway: GatewayProcess, admin: str) -> float:
    status, _, body = http(f"{gateway.http}/metrics", bearer(admin))
    assert status == 200
    found = re.search(rb"^a2f_fair_share_rows_per_second (\S+)$", body, re.MULTILINE)
    assert found is not None
    return float(found.group(1))


async def pushed_at_once(url: str, key: str) -> list[int]:
    """A session pushing the speech fixture in one message (a backlog: the host is past
    capacity for a moment); the indices of the frames it got back."""
    indices: list[int] = []
    await asyncio.sleep(1)  # the light tenant's frames are coming back by then
    async with connect(url, additional_headers=bearer(key)) as ws:
        await ws.send(START)
        assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "SessionStarted"
        await ws.send(pack_push_audio(0, SPEECH))
        await ws.send(json.dumps({"type": "EndSession"}))
        while isinstance(message := await asyncio.wait_for(ws.recv(), 60), bytes):
            indices.append(unpack_frame(message).frame_index)
        assert json.loads(message)["type"] == "SessionEnded", message
    return indices


async def first_reply(url: str, key: str) -> dict[str, object]:
    async with connect(url, additional_headers=bearer(key)) as ws:
        await ws.send(START)
        answer = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if answer["type"] == "SessionStarted":
            await ws.send(json.dumps({"type": "EndSession"}))
        return answer


def test_a_tenant_over_its_share_is_held_back_and_loses_nothing(gateway, keys) -> None:  # type: ignore[no-untyped-def]
    heavy, light, admin = keys["heavy"], keys["light"], keys["admin"]

    async def run() -> None:
        streams = [stream_canary(gateway.url, bearer(heavy)) for _ in range(2)]
        streams.append(stream_canary(gateway.url, bearer(light)))
        running = [asyncio.create_task(stream) for stream in streams]
        bulk = asyncio.create_task(pushed_at_once(gateway.url, heavy))
        for _ in range(100):  # the light tenant's frames come back late: throttling starts
            if await asyncio.to_thread(held_rate, gateway, admin) > 0:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the tenant over its share was never held back")
        refused = await first_reply(gateway.url, heavy)
        assert refused["type"] == "Error" and refused["code"] == "busy"
        assert "fair share" in str(refused["message"])
        assert (await first_reply(gateway.url, light))["type"] == "SessionStarted"
        seen = await asyncio.gather(*running)
        assert all(canary.complete for canary in seen), [c.errors for c in seen]
        assert await bulk == list(range(EXPECTED_FRAMES))

    asyncio.run(run())
    deadline = time.monotonic() + 10
    while held_rate(gateway, admin) > 0:  # everyone left: nobody is over a share any more
        assert time.monotonic() < deadline, "the tenant over its share was never let go"
        time.sleep(0.05)
