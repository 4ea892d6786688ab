"""Clients that ask for a lot of inference at once, legally: what `make bench` runs beside
real-time canaries to measure how much one session's backlog delays everyone else.

Each client starts a session and, until `--seconds` have passed, alternates a 4 MiB push
(about 131 s of 16 kHz audio: thousands of frames in one message) with an 8-byte push that
opens a 10 s gap (zero-filled: 600 frames at 60 fps), reading every frame it is sent.

    python -m loadtest.flood --url ws://127.0.0.1:8765/ --clients 2 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from a2f_protocol import LOCAL_URL
from a2f_protocol.clock import MODEL_SAMPLE_RATE
from a2f_protocol.frames import MAX_MESSAGE_BYTES, pack_push_audio
from a2f_protocol.messages import EndSession, StartSession, encode_message

GAP_S = 10


async def flood(url: str, until: float, seed: int) -> int:
    """One client's pushes until `until`; the number of frames it received."""
    rng = np.random.default_rng(seed)
    big = (rng.standard_normal((MAX_MESSAGE_BYTES - 64) // 2) * 3000).astype(np.int16)
    frames = 0
    async with connect(url, max_size=None) as socket:
        await socket.send(encode_message(StartSession()).decode())
        await socket.recv()  # SessionStarted
        reader = asyncio.create_task(_count(socket))
        start = 0
        while time.monotonic() < until:
            await socket.send(pack_push_audio(start, big))
            start += big.size + GAP_S * MODEL_SAMPLE_RATE
            await socket.send(pack_push_audio(start, big[:4]))
            start += 4
            await asyncio.sleep(1.0)
        await socket.send(encode_message(EndSession()).decode())
        frames = await reader
    return frames


async def _count(socket: ClientConnection) -> int:
    frames = 0
    async for message in socket:
        if isinstance(message, bytes):
            frames += 1
        elif '"SessionEnded"' in message:
            break
    return frames


async def run(args: argparse.Namespace) -> dict[str, object]:
    until = time.monotonic() + args.seconds
    counts = await asyncio.gather(*(flood(args.url, until, i) for i in range(args.clients)))
    return {"clients": args.clients, "frames": sum(counts)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=LOCAL_URL)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    print(json.dumps(asyncio.run(run(parser.parse_args(argv)))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
