"""Canary sessions for fault tests: real speech pushed at real-time pace, every frame checked."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
import websockets
from websockets.asyncio.client import ClientConnection, connect

from a2f_protocol.clock import FrameClock
from a2f_protocol.frames import pack_push_audio, unpack_frame
from gateway.model_info import ModelInfo

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPEECH, RATE = soundfile.read(PROJECT_ROOT / "tests" / "fixtures" / "speech_16k.wav", dtype="int16")
MODEL = ModelInfo.load(PROJECT_ROOT / "model_repository")
FPS = Fraction(60)
CLOCK = FrameClock(FPS)
CHUNK = RATE // 10  # 100 ms pushes
START = json.dumps({"type": "StartSession", "blinks": False})
EXPECTED_FRAMES = CLOCK.frames_before(SPEECH.size)


@dataclass
class Canary:
    """What one session saw: frame indices in arrival order, each frame's lateness (arrival
    minus the moment its window's last sample was pushed), protocol errors, how it ended."""

    frames: list[int] = field(default_factory=list)
    lateness_s: list[float] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    ended: bool = False
    close_code: int | None = None

    @property
    def complete(self) -> bool:
        """Every frame once, in order, no Error, SessionEnded."""
        return self.frames == list(range(EXPECTED_FRAMES)) and not self.errors and self.ended

    def p99_ms(self) -> float:
        return float(np.percentile(self.lateness_s, 99) * 1000) if self.lateness_s else 0.0


async def stream_canary(url: str, headers: dict[str, str] | None = None) -> Canary:
    """One session streaming the speech fixture at real-time pace, then EndSession."""
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(START)
        await asyncio.wait_for(ws.recv(), 30)  # SessionStarted
        return await stream_started(ws)


async def stream_started(ws: ClientConnection) -> Canary:
    """The speech fixture at real-time pace on `ws`, whose session has started; then
    EndSession."""
    seen = Canary()
    began = time.monotonic()

    async def send() -> None:
        for start in range(0, SPEECH.size, CHUNK):
            await asyncio.sleep(max(0.0, began + start / RATE - time.monotonic()))
            await ws.send(pack_push_audio(start, SPEECH[start : start + CHUNK]))
        await ws.send(json.dumps({"type": "EndSession"}))

    sender = asyncio.create_task(send())
    try:
        while True:
            message = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(message, bytes):
                index = unpack_frame(message).frame_index
                needed = min(CLOCK.timestamp(index) + MODEL.window - MODEL.offset, SPEECH.size)
                seen.frames.append(index)
                seen.lateness_s.append(time.monotonic() - began - needed / RATE)
            elif (decoded := json.loads(message))["type"] == "Error":
                seen.errors.append(decoded)
            elif decoded["type"] == "SessionEnded":
                seen.ended = True
                break
    except websockets.ConnectionClosed:
        pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    seen.close_code = ws.close_code
    return seen
