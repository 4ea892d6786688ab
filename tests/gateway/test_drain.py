"""Graceful drain against a real gateway and the embedded Triton: SIGTERM makes `/ready` 503
and refuses new connections with `shutting_down`, lets an open session finish, and tells a
session still open when `--drain_s` runs out (close 1001) before the process exits; with
several workers, every one of them does."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import soundfile
import websockets
from a2f_triton.gateway_process import run_gateway
from a2f_triton.launch import EmbeddedTriton
from websockets.asyncio.client import ClientConnection, connect

from a2f_protocol.frames import pack_push_audio, unpack_frame

DRAIN_S = 4.0
START = json.dumps({"type": "StartSession", "blinks": False})


def ready_status(http: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{http}/ready", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def start(ws: ClientConnection) -> None:
    await ws.send(START)
    assert json.loads(await ws.recv())["type"] == "SessionStarted"


async def read_until_text(ws: ClientConnection) -> tuple[int, dict[str, Any]]:
    """Frames counted until the next JSON message."""
    frames = 0
    while isinstance(message := await ws.recv(), bytes):
        unpack_frame(message)
        frames += 1
    return frames, json.loads(message)


async def goodbye(ws: ClientConnection) -> tuple[dict[str, Any], int | None]:
    """The last message before the close, and the close code."""
    last: dict[str, Any] = {}
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            message = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(message, str):
                last = json.loads(message)
    return last, closed.value.rcvd.code if closed.value.rcvd else None


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_sessions_then_closes_the_rest(
    workers: int, triton: EmbeddedTriton, fixtures_dir: Path, tmp_path: Path
) -> None:
    speech, _ = soundfile.read(fixtures_dir / "speech_16k.wav", dtype="int16")
    half = speech.size // 2

    async def run(http: str, url: str, process: Any) -> None:
        async with connect(url) as finishing, connect(url) as lingering, connect(url) as idle:
            await start(finishing)
            await start(lingering)
            await finishing.send(pack_push_audio(0, speech[:half]))
            await lingering.send(pack_push_audio(0, speech[:half]))
            process.send_signal(signal.SIGTERM)
            # Readiness drops at once; the listener stays open to say so.
            for _ in range(100):
                status, body = ready_status(http)
                if status == 503:
                    break
                await asyncio.sleep(0.05)
            assert (status, body["draining"]) == (503, True)
            # A new connection is told why it is refused; so is an open one without a session.
            async with connect(url) as late:
                assert await goodbye(late) == (
                    {"type": "Error", "message": "Server is shutting down: reconnect to continue",
                     "code": "shutting_down"},
                    1001,
                )  # fmt: skip
            assert (await goodbye(idle))[1] == 1001
            # An open session goes on to its end, every frame included.
            await finishing.send(pack_push_audio(half, speech[half:]))
            await finishing.send(json.dumps({"type": "EndSession"}))
            frames, message = await read_until_text(finishing)
            assert message["type"] == "SessionEnded"
            assert frames == -(-speech.size * 60 // 16000)  # every frame up to the end
            assert (await goodbye(finishing))[1] == 1001
            # One that outlives the grace period is told to go, then closed with 1001.
            last, code = await goodbye(lingering)
            assert (last["code"], code) == ("shutting_down", 1001)

    with run_gateway(
        triton.grpc_url,
        *("--drain_s", str(DRAIN_S), "--workers", str(workers)),
        log=tmp_path / "gateway.log",
        drain_s=DRAIN_S,
    ) as gateway:
        asyncio.run(run(gateway.http, gateway.url, gateway.process))
        assert gateway.process.wait(timeout=30) in (0, -signal.SIGTERM)
