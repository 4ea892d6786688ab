"""Asyncio load generator for NVIDIA's gRPC API (`ProcessAudioStream`): N streams, one JSON line.

`python -m loadtest.drive_ace --url 127.0.0.1:52000 --streams 32 --seconds 10 [--unpaced]`

`loadtest.drive` for the ACE front door: the same flags, bookkeeping (`loadtest.accounting`)
and JSON result, one HTTP/2 connection per stream as independent clients have. Every stream
opens its call and has its stream header back before any audio goes out. The calls go
through `loadtest.lean_grpc`, a client that costs the shared cores half what grpcio's does;
`--grpcio` makes them with grpcio's asyncio client instead (NVIDIA's samples use grpcio).

* Paced (the serving figure): 40 ms of speech every 40 ms on the wall clock, phases spread as
  in `loadtest.drive`, for `--seconds`; then `end_of_audio`, and frames are read until the
  server ends the call. Frames are judged by their added latency, as WebSocket frames are.
* `--unpaced`, as NVIDIA's NIM performance test: every stream sends `--seconds` of speech in
  one-second chunks as fast as HTTP/2 flow control lets it. Throughput, first-packet latency
  and frames per second per stream (over each stream's run); nothing must be lost, latency is
  not judged.

Besides `loadtest.drive`'s figures, the performance test's own, as it measures them
(`nim_*`): first-packet latency from the stream header sent to the first reply (the answering
header), and frames per second per stream as messages received over the time from that first
reply to the end of the call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import grpc
from nvidia_ace.status_pb2 import Status
from nvidia_audio2face_3d.audio2face_pb2_grpc import A2FControllerServiceStub
from nvidia_audio2face_3d.messages_pb2 import A2F3DAnimationDataStream

from a2f_client.ace import END_OF_AUDIO, OWN_CONNECTION, audio_chunk, frames_of, stream_header
from a2f_client.urls import DEFAULT_ACE_URL, grpc_target
from a2f_protocol import ACE_FPS
from a2f_protocol.clock import MODEL_SAMPLE_RATE, FrameClock
from gateway.drivers.ace_messages import SERVICE_NAME
from gateway.model_info import ModelInfo
from loadtest.accounting import CHUNK_SECONDS, LoopingSpeech, StreamAccount, percentiles
from loadtest.drive import (
    CONNECT_TIMEOUT_S,
    END_TIMEOUT_S,
    Stream,
    arguments_parser,
    checked,
    cpu_over,
    drive,
    summary,
)
from loadtest.lean_grpc import CallEnded, open_call
from loadtest.procstat import cpu_snapshot, spent

UNPACED_CHUNK_SECONDS = 1  # what NVIDIA's performance test sends per message
PATH = f"/{SERVICE_NAME}/ProcessAudioStream"
Call = Any  # grpc.aio.StreamStreamCall or loadtest.lean_grpc.LeanCall: the same four methods
CALL_ERRORS = (grpc.aio.AioRpcError, CallEnded)


@dataclass
class Opened:
    """A call whose stream header came back (the session is started), and when."""

    call: Call
    close: Callable[[], Awaitable[None]]
    header_sent: float
    header_back: float


@dataclass
class AceStream(Stream):
    """`Stream` with the messages received and when the call ended (the NIM's fps)."""

    messages: int = 0
    call_ended: float | None = None


def _error(exc: grpc.aio.AioRpcError | CallEnded) -> str:
    if isinstance(exc, CallEnded):
        return str(exc)
    return f"{exc.code().name}: {exc.details()}"


async def _open(target: str, metadata: list[tuple[str, str]], grpcio: bool) -> Opened:
    if grpcio:
        channel = grpc.aio.insecure_channel(target, [OWN_CONNECTION])
        call = A2FControllerServiceStub(channel).ProcessAudioStream(metadata=metadata)
        close = channel.close
    else:
        call = await open_call(target, PATH, metadata, A2F3DAnimationDataStream.FromString)

        async def close() -> None:
            call.cancel()

    try:
        sent = time.monotonic()
        await call.write(stream_header(MODEL_SAMPLE_RATE))
        reply = await call.read()
        if (
            reply is grpc.aio.EOF
            or reply.WhichOneof("stream_part") != "animation_data_stream_header"
        ):
            raise RuntimeError(f"no stream header: {reply}")
    except BaseException:
        await close()
        raise
    return Opened(call, close, sent, time.monotonic())


async def _receive(call: Call, stream: AceStream, clock: FrameClock) -> None:
    """Frames until the server ends the call; SUCCESS sets `ended`."""
    try:
        while (message := await call.read()) is not grpc.aio.EOF:
            now = time.monotonic()
            stream.messages += 1
            part = message.WhichOneof("stream_part")
            if part == "animation_data":
                for frame in frames_of(message, clock):
                    stream.account.received_frame(frame.frame_index, frame.timestamp_current, now)
                    stream.arrivals.append(now)
            elif part == "status":
                if message.status.code == Status.SUCCESS:
                    stream.ended.set()
                else:
                    stream.errors.append(f"status {message.status.code}: {message.status.message}")
    except CALL_ERRORS as exc:
        stream.errors.append(_error(exc))
    stream.call_ended = time.monotonic()


async def _play(
    call: Call,
    stream: AceStream,
    speech: LoopingSpeech,
    clock: FrameClock,
    start: float,
    chunks: int,
    paced: bool,
) -> None:
    """Send `chunks` chunks from `start` (on the wall clock when `paced`), then end the audio
    and wait for the end of the call."""
    receiver = asyncio.create_task(_receive(call, stream, clock))
    try:
        await asyncio.sleep(max(start - time.monotonic(), 0))
        for index in range(chunks):
            due = start + index * CHUNK_SECONDS if paced else time.monotonic()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await call.write(audio_chunk(speech.samples(index)))
            stream.sent(due)
        await call.write(END_OF_AUDIO)
        await call.done_writing()
        await asyncio.wait_for(asyncio.shield(receiver), END_TIMEOUT_S)
        if not stream.ended.is_set() and not stream.errors:
            stream.errors.append("the call ended without SUCCESS")
    except TimeoutError:
        stream.errors.append("the call did not end in time")
    except CALL_ERRORS as exc:
        stream.errors.append(_error(exc))
    finally:
        call.cancel()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver


async def run(args: argparse.Namespace) -> dict[str, object]:
    model = ModelInfo.load(args.model_repository)
    paced = not args.unpaced
    chunk_seconds = CHUNK_SECONDS if paced else UNPACED_CHUNK_SECONDS
    chunk_samples = round(chunk_seconds * MODEL_SAMPLE_RATE)
    speech = LoopingSpeech(args.audio, chunk_samples)
    target, _ = grpc_target(args.url)
    metadata = [(name.lower(), value) for name, value in args.header]
    opened = await asyncio.wait_for(
        asyncio.gather(
            *(_open(target, metadata, args.grpcio) for _ in range(args.streams)),
            return_exceptions=True,
        ),
        CONNECT_TIMEOUT_S + args.streams * 0.05,
    )
    calls = [c for c in opened if isinstance(c, Opened)]
    refused = [repr(c) for c in opened if isinstance(c, BaseException)]
    fps = Fraction(args.fps)
    clock = FrameClock(fps)
    t0 = time.monotonic() + 0.5
    measure_from = t0 + args.warmup if paced else t0
    chunks = round(args.seconds / chunk_seconds)
    window_tail = model.window - model.offset
    streams = [
        AceStream(StreamAccount(fps, window_tail, chunk_samples, measure_from=measure_from))
        for _ in calls
    ]
    watch = dict(args.watch) | {"loadgen": os.getpid()}
    # Paced streams' phases spread evenly, as independent clients' would be.
    phases = [j * CHUNK_SECONDS / len(calls) if paced else 0.0 for j in range(len(calls))]
    plays = [
        _play(opened.call, stream, speech, clock, t0 + phase, chunks, paced)
        for opened, stream, phase in zip(calls, streams, phases, strict=True)
    ]
    try:
        if paced:
            stop = t0 + args.seconds
            cpu_task = asyncio.create_task(cpu_over(watch, measure_from, stop))
            await asyncio.gather(*plays)
            cpu = await cpu_task
        else:
            await asyncio.sleep(max(t0 - time.monotonic(), 0))
            before = cpu_snapshot(watch)
            await asyncio.gather(*plays)
            stop = time.monotonic()
            after = cpu_snapshot(watch)
            cpu = spent(before, after)
    finally:
        for opened in calls:
            await opened.close()
    result = summary(args, streams, refused, measure_from, stop, cpu, paced)
    return result | nim_figures(calls, streams) | {"unpaced": not paced}


def nim_figures(calls: list[Opened], streams: list[AceStream]) -> dict[str, float]:
    """NVIDIA's performance test's two figures, as it measures them (see above)."""
    first = [(c.header_back - c.header_sent) * 1e3 for c in calls]
    # From the first reply, which the test's audio follows at once (here: from the audio).
    spans = [
        (s, s.call_ended - max(c.header_back, s.first_sent))
        for c, s in zip(calls, streams, strict=True)
        if s.call_ended is not None and s.first_sent is not None
    ]
    rates = [(s.messages + 1) / span for s, span in spans if span > 0]  # the header is one
    p50, p99 = percentiles(first, (50, 99))
    return {
        "nim_first_packet_p50_ms": p50,
        "nim_first_packet_p99_ms": p99,
        "nim_fps_p50": percentiles(rates, (50,))[0],
        "nim_fps_min": min(rates, default=float("nan")),
    }


def main(argv: list[str] | None = None) -> None:
    parser = arguments_parser(__doc__.splitlines()[0], DEFAULT_ACE_URL)
    parser.set_defaults(fps=ACE_FPS)
    parser.add_argument(
        "--unpaced", action="store_true", help="send as fast as possible (throughput)"
    )
    parser.add_argument("--grpcio", action="store_true", help="make the calls with grpcio's client")
    drive(run, checked(parser, argv))


if __name__ == "__main__":
    main(sys.argv[1:])
