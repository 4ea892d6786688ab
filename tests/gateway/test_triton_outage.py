"""Triton going away mid-session, and coming back: real Triton (its own, since this test kills
it), real gateway, real WebSocket client.

A session whose inference fails cannot continue (its frames are gone): it gets `Error` with
code "inference" and close code 1011. The gateway itself must stay up, report the outage on
`/health`, and serve new sessions as soon as Triton is back on the same address.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import websockets
from conftest import embedded_triton, run_gateway
from websockets.asyncio.client import connect

from a2f_protocol.frames import pack_push_audio, unpack_frame

if TYPE_CHECKING:
    from launch import EmbeddedTriton

START = json.dumps({"type": "StartSession", "blinks": False})
SECOND = np.zeros(16_000, np.int16)
RECOVERY_S = 10.0  # the channel's reconnect backoff is capped at 1 s


def health(http: str) -> dict[str, str]:
    try:
        with urllib.request.urlopen(f"{http}/health", timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # 503 still carries the JSON body
        return json.load(error)


async def first_frame(url: str) -> int:
    async with connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send(pack_push_audio(0, SECOND))
        return unpack_frame(await asyncio.wait_for(ws.recv(), 30)).frame_index


async def session_across_outage(url: str, server: EmbeddedTriton) -> dict:
    """A session that has its first frames, then Triton stops and more audio arrives."""
    async with connect(url) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send(pack_push_audio(0, SECOND))
        assert isinstance(await asyncio.wait_for(ws.recv(), 30), bytes)
        await asyncio.to_thread(server.stop)
        await ws.send(pack_push_audio(SECOND.size, SECOND))
        error = None
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                message = await asyncio.wait_for(ws.recv(), 30)
                if isinstance(message, str):
                    error = json.loads(message)
        return {"error": error, "close_code": ws.close_code}


@pytest.mark.timeout(240)
def test_triton_outage_fails_the_session_clearly_and_the_gateway_recovers(tmp_path: Path) -> None:
    server = embedded_triton(tmp_path / "triton")
    with server, run_gateway(server.grpc_url, log=tmp_path / "gateway.log") as gateway:
        result = asyncio.run(session_across_outage(gateway.url, server))
        assert result["error"]["type"] == "Error"
        assert result["error"]["code"] == "inference"
        assert result["error"]["message"].startswith("Inference failed")
        assert result["close_code"] == 1011
        assert gateway.process.poll() is None  # the gateway is still serving
        assert health(gateway.http)["triton"] == "unavailable"

        server.start()  # the same ports: the gateway's channel reconnects by itself
        deadline = time.monotonic() + RECOVERY_S
        while health(gateway.http)["triton"] != "ready":  # what a readiness probe sees
            assert time.monotonic() < deadline, "the gateway did not see Triton come back"
            time.sleep(0.2)
        assert asyncio.run(first_frame(gateway.url)) == 0
