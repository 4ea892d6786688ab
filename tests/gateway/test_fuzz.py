"""Seeded fuzzing against a real gateway on real Triton, inside `make test`.

While a canary session streams real speech at real-time pace, workers open connection after
connection and send hostile input (hostile.py: bad, deep, wrongly typed or out-of-range JSON,
messages out of order, odd binary frames, text that is not UTF-8, oversized messages). Every
hostile message must get its documented `Error` or close code, the canary must get every frame
(equal to a quiet run of the same audio), and the gateway must stay healthy and quiet in its log.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
import urllib.request
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import websockets
from a2f_triton.gateway_process import GatewayProcess, run_gateway
from a2f_triton.launch import EmbeddedTriton
from hostile import STARTED, RawText, Step, draw, masked_frame
from websockets.asyncio.client import ClientConnection, connect

from a2f_protocol.clock import FrameClock
from a2f_protocol.frames import pack_push_audio, unpack_frame

SEED = 15
BUDGET_S = 20.0  # the canary streams this much audio in real time while the workers fuzz
WORKERS = 4
CHUNK = 1600  # 100 ms at 16 kHz
WAIT_S = 60.0


@pytest.fixture(scope="module")
def fuzz_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "gateway.log"


@pytest.fixture(scope="module")
def fuzzed(triton: EmbeddedTriton, fuzz_log: Path) -> Iterator[GatewayProcess]:
    """A gateway with the default limits, logging to `fuzz_log`."""
    with run_gateway(triton.grpc_url, log=fuzz_log) as server:
        yield server


async def next_text(ws: ClientConnection) -> dict[str, Any]:
    while isinstance(message := await asyncio.wait_for(ws.recv(), WAIT_S), bytes):
        pass
    return json.loads(message)


async def send(ws: ClientConnection, payload: str | bytes | RawText) -> None:
    if isinstance(payload, RawText):
        ws.transport.write(masked_frame(0x1, payload.payload))
    else:
        await ws.send(payload)


async def play(url: str, name: str, steps: list[Step]) -> int:
    """One hostile connection; asserts each documented answer. Returns messages sent."""
    async with connect(url, max_size=None, close_timeout=2) as ws:
        for sent, step in enumerate(steps, 1):
            try:
                await send(ws, step.send)
                if isinstance(step.expect, int):
                    while True:
                        await asyncio.wait_for(ws.recv(), WAIT_S)
            except websockets.ConnectionClosed:
                assert ws.close_code == step.expect, (name, step, ws.close_code)
                return sent
            if step.expect is None:
                continue
            answer = await next_text(ws)
            if step.expect == "SessionStarted":
                assert answer["type"] == "SessionStarted", (name, answer)
            else:
                assert answer["type"] == "Error" and answer["code"] == step.expect, (name, answer)
        return len(steps)


async def worker(url: str, seed: int, until: float, tally: collections.Counter[str]) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        name, steps = draw(rng)
        sent = await play(url, name, steps)  # (not `+= await`: workers share the tally)
        tally["messages"] += sent
        tally[name] += 1


async def canary(url: str, audio: np.ndarray, pace_s: float) -> np.ndarray:
    """A whole session of `audio` pushed in 100 ms chunks every `pace_s`; its weights."""
    frames = []
    async with connect(url, max_size=None) as ws:
        await ws.send(STARTED.send)
        assert (await next_text(ws))["type"] == "SessionStarted"

        async def read() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    frames.append(unpack_frame(message))
                    continue
                answer = json.loads(message)
                assert answer["type"] == "SessionEnded", answer
                return

        reader = asyncio.create_task(read())
        for start in range(0, audio.size, CHUNK):
            await ws.send(pack_push_audio(start, audio[start : start + CHUNK]))
            await asyncio.sleep(pace_s)
        await ws.send(json.dumps({"type": "EndSession"}))
        await asyncio.wait_for(reader, WAIT_S)
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    assert len(frames) == FrameClock(Fraction(60)).frames_before(audio.size)
    return np.stack([f.weights for f in frames])


def get(server: GatewayProcess, path: str) -> tuple[int, Any]:
    with urllib.request.urlopen(server.http + path, timeout=30) as response:
        return response.status, json.loads(response.read())


def test_hostile_clients_do_not_hurt_a_streaming_session(
    fuzzed: GatewayProcess, fuzz_log: Path, fixtures_dir: Path
) -> None:
    speech, _ = soundfile.read(fixtures_dir / "speech_16k.wav", dtype="int16")
    audio = np.resize(speech, int(BUDGET_S * 16_000))
    quiet = asyncio.run(canary(fuzzed.url, audio, 0.0))
    tally: collections.Counter[str] = collections.Counter()

    async def run() -> np.ndarray:
        until = time.monotonic() + BUDGET_S
        workers = [worker(fuzzed.url, SEED + i, until, tally) for i in range(WORKERS)]
        streamed, *_ = await asyncio.gather(canary(fuzzed.url, audio, CHUNK / 16_000), *workers)
        return streamed

    streamed = asyncio.run(run())
    print(f"fuzz: seed {SEED}, {BUDGET_S:g} s, {tally['messages']} hostile messages:", dict(tally))
    np.testing.assert_allclose(streamed, quiet, atol=1e-5, rtol=0)  # not one frame lost
    assert tally["messages"] > 100
    assert fuzzed.process.poll() is None
    status, health = get(fuzzed, "/health")
    assert status == 200 and (health["status"], health["triton"]) == ("ok", "ready")
    assert get(fuzzed, "/ready")[0] == 200
    deadline = time.monotonic() + WAIT_S
    while get(fuzzed, "/sessions")[1]["count"]:  # every slot freed
        assert time.monotonic() < deadline
        time.sleep(0.2)
    log = fuzz_log.read_text()
    assert "Traceback" not in log and "Exception in ASGI" not in log
