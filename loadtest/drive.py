"""Asyncio load generator: N real-time streams from one process, one JSON result line out.

`python -m loadtest.drive --url ws://127.0.0.1:8765/ --streams 64 --fps 30 --seconds 10`

What `bench` runs at every level of its ramp. Locust's gevent users cost several times more
CPU per frame, and on a 2-core host the load generator shares the cores with the service, so
the ramp uses this lean driver; the per-stream bookkeeping is `loadtest.accounting`, the same
code the Locust user reports through.

All streams connect and start their sessions first; then stream j sends chunk i at
`t0 + j/N * 40 ms + i * 40 ms` (phases spread evenly, as independent clients would be), for
`--seconds`. Latencies of the first `--warmup` seconds are not kept. At the end every stream
sends `EndSession` and waits for `SessionEnded`, so frames still missing then are lost.
With `--watch name=PID`, the CPU seconds of those process trees (and of this process) over
the measured interval are reported too. Beside the added latency, the two figures NVIDIA's NIM
performance test reports, here for any protocol: first-packet latency (a stream's first frame
after its first chunk left) and frames per second per stream. `loadtest.drive_ace` drives
NVIDIA's gRPC API the same way, and counts those two the test's own way too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from a2f_protocol import LOCAL_URL
from a2f_protocol.messages import (
    EndSession,
    Error,
    SessionEnded,
    SessionStarted,
    StartSession,
    decode_server_message,
    encode_message,
)
from gateway.model_info import ModelInfo
from loadtest.accounting import (
    CHUNK_SECONDS,
    MODEL_REPOSITORY,
    SPEECH_FILE,
    LoopingSpeech,
    StreamAccount,
    percentiles,
)
from loadtest.procstat import cpu_snapshot, spent

CONNECT_TIMEOUT_S = 20.0
END_TIMEOUT_S = 10.0  # EndSession -> SessionEnded, the tail frames included


@dataclass
class Stream:
    """One connection's account and what went wrong on it."""

    account: StreamAccount
    errors: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    send_lag: list[float] = field(default_factory=list)  # how late chunks left (load gen health)
    arrivals: list[float] = field(default_factory=list)  # arrival times of frames (for rate)
    first_sent: float | None = None  # when its first chunk left

    def sent(self, due: float) -> None:
        """A chunk due at `due` left now."""
        now = time.monotonic()
        self.account.sent(now)
        self.send_lag.append(now - due)
        if self.first_sent is None:
            self.first_sent = now


async def _receive(socket: ClientConnection, stream: Stream) -> None:
    try:
        async for message in socket:
            now = time.monotonic()
            if isinstance(message, bytes):
                stream.account.received(message, now)
                stream.arrivals.append(now)
                continue
            reply = decode_server_message(message)
            if isinstance(reply, Error):
                stream.errors.append(f"{reply.code}: {reply.message}")
            elif isinstance(reply, SessionEnded):
                stream.ended.set()
    except ConnectionClosed as exc:
        if not stream.ended.is_set():
            stream.errors.append(f"connection closed: {exc}")


async def _start(
    url: str, fps: int, headers: dict[str, str]
) -> tuple[ClientConnection, SessionStarted]:
    socket = await connect(
        url, max_size=None, compression=None, ping_interval=None, additional_headers=headers
    )
    await socket.send(encode_message(StartSession(fps=fps)).decode())
    reply = decode_server_message(await socket.recv())
    if not isinstance(reply, SessionStarted):
        await socket.close()
        raise RuntimeError(f"StartSession refused: {reply}")
    return socket, reply


async def _play(
    socket: ClientConnection,
    stream: Stream,
    speech: LoopingSpeech,
    start: float,
    stop: float,
) -> None:
    """Send chunks on the wall clock from `start` until `stop`, then end the session."""
    receiver = asyncio.create_task(_receive(socket, stream))
    try:
        index = 0
        while (due := start + index * CHUNK_SECONDS) < stop:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await socket.send(speech.chunk(index))
            stream.sent(due)
            index += 1
        await socket.send(encode_message(EndSession()).decode())
        await asyncio.wait_for(stream.ended.wait(), END_TIMEOUT_S)
    except TimeoutError:
        stream.errors.append("no SessionEnded in time")
    except ConnectionClosed as exc:
        stream.errors.append(f"connection closed: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await socket.close()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver


async def run(args: argparse.Namespace) -> dict[str, object]:
    model = ModelInfo.load(args.model_repository)
    speech = LoopingSpeech(args.audio)
    opened = await asyncio.wait_for(
        asyncio.gather(
            *(_start(args.url, args.fps, dict(args.header)) for _ in range(args.streams)),
            return_exceptions=True,
        ),
        CONNECT_TIMEOUT_S + args.streams * 0.05,
    )
    sockets = [s for s in opened if not isinstance(s, BaseException)]
    refused = [repr(s) for s in opened if isinstance(s, BaseException)]
    t0 = time.monotonic() + 0.5
    measure_from, stop = t0 + args.warmup, t0 + args.seconds
    fps = Fraction(args.fps)
    streams = [
        Stream(StreamAccount(fps, model.window - model.offset, measure_from=measure_from))
        for _ in sockets
    ]
    watch = dict(args.watch) | {"loadgen": os.getpid()}
    cpu_task = asyncio.create_task(cpu_over(watch, measure_from, stop))
    await asyncio.gather(
        *(
            _play(socket, stream, speech, t0 + j * CHUNK_SECONDS / len(sockets), stop)
            for j, ((socket, _), stream) in enumerate(zip(sockets, streams, strict=True))
        )
    )
    return summary(args, streams, refused, measure_from, stop, await cpu_task)


def summary(
    args: argparse.Namespace,
    streams: list[Stream],
    refused: list[str],
    measure_from: float,
    stop: float,
    cpu: dict[str, float],
    paced: bool = True,
) -> dict[str, object]:
    """The run's one JSON object. Unpaced streams (`loadtest.drive_ace --unpaced`) have no
    real-time latency to judge: their rates are over each stream's whole run."""
    latencies = [x for s in streams for x in s.account.latencies]
    measured = stop - measure_from
    in_window = sum(1 for s in streams for t in s.arrivals if measure_from <= t < stop)
    errors = [e for s in streams for e in s.errors] + refused
    p50, p95, p99 = percentiles(latencies)
    lag99 = percentiles([x for s in streams for x in s.send_lag], (99,))[0]
    # (first chunk sent, frame arrivals) of every stream that got frames
    heard = [(s.first_sent, s.arrivals) for s in streams if s.arrivals and s.first_sent]
    first = percentiles([arrivals[0] - sent for sent, arrivals in heard], (50, 99))
    if paced:
        rates = [
            sum(measure_from <= t < stop for t in arrivals) / measured for _, arrivals in heard
        ]
        delivered = in_window / measured
    else:
        rates = [len(arrivals) / (arrivals[-1] - sent) for sent, arrivals in heard]
        span = max((a[-1] for _, a in heard), default=0.0) - min((t for t, _ in heard), default=0.0)
        delivered = sum(len(a) for _, a in heard) / span if span > 0 else math.nan
    return {
        "streams": args.streams,
        "connected": len(streams),
        "fps": args.fps,
        "seconds": args.seconds,
        "frames": sum(s.account.frames for s in streams),
        "expected": sum(s.account.expected_frames() for s in streams),
        "lost": sum(s.account.lost() for s in streams),
        "disorder": sum(s.account.disorder for s in streams),
        "frames_per_s": delivered,
        "p50_ms": p50 * 1e3,
        "p95_ms": p95 * 1e3,
        "p99_ms": p99 * 1e3,
        "max_ms": max(latencies, default=math.nan) * 1e3,
        "first_packet_p50_ms": first[0] * 1e3,
        "first_packet_p99_ms": first[1] * 1e3,
        "stream_fps_p50": percentiles(rates, (50,))[0],
        "stream_fps_min": min(rates, default=math.nan),
        "send_lag_p99_ms": lag99 * 1e3,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "cpu_cores": {name: seconds / measured for name, seconds in cpu.items()},
    }


async def cpu_over(watch: dict[str, int], start: float, stop: float) -> dict[str, float]:
    await asyncio.sleep(max(start - time.monotonic(), 0))
    before = cpu_snapshot(watch)
    await asyncio.sleep(max(stop - time.monotonic(), 0))
    after = cpu_snapshot(watch)
    return spent(before, after)


def _watch(text: str) -> tuple[str, int]:
    name, _, pid = text.partition("=")
    return name, int(pid)


def _header(text: str) -> tuple[str, str]:
    name, _, value = text.partition(":")
    return name.strip(), value.strip()


def arguments_parser(description: str, url: str) -> argparse.ArgumentParser:
    """The drivers' flags (`loadtest.drive_ace` adds its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default=url)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0, help="streaming time")
    parser.add_argument("--warmup", type=float, default=2.0, help="latencies not kept before")
    parser.add_argument("--audio", type=Path, default=SPEECH_FILE)
    parser.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    parser.add_argument("--watch", type=_watch, action="append", default=[], metavar="NAME=PID")
    parser.add_argument(
        "--header", type=_header, action="append", default=[], metavar="NAME: VALUE",
        help="sent with every connection (an API key: 'Authorization: Bearer <key>')",
    )  # fmt: skip
    return parser


def checked(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.seconds:
        parser.error("--warmup must be at least 0 and shorter than --seconds")
    return args


def drive(
    run_driver: Callable[[argparse.Namespace], Awaitable[dict[str, object]]],
    args: argparse.Namespace,
) -> None:
    """Run a driver and print its JSON line."""
    # A full GC pass over the imported libraries would stall every stream's receive loop and
    # show up as the server's latency.
    gc.collect()
    gc.freeze()
    # uvloop (installed with uvicorn[standard]): less CPU per message on cores the server shares.
    print(json.dumps(uvloop.run(run_driver(args))), flush=True)


def main(argv: list[str] | None = None) -> None:
    drive(run, checked(arguments_parser(__doc__.splitlines()[0], LOCAL_URL), argv))


if __name__ == "__main__":
    main(sys.argv[1:])
