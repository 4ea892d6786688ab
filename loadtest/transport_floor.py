"""The transports' own cost per message pair, with no gateway behind them.

`python -m loadtest.transport_floor --streams 64` starts two bare echo servers in turn, each
on uvloop as the gateway runs them: `grpc.aio` with a bidirectional stream of NVIDIA's own
messages (an `AudioWithEmotionStream` in, an `A2F3DAnimationDataStream` with its audio back),
and uvicorn with its websockets protocol (binary in, binary back). Paced clients in this
process send one message per 1/30 s per stream and read the reply; the servers' CPU per
message pair is the floor under what the gateway's ACE and WebSocket drivers can cost per
frame. It is how `make bench`'s gRPC/WebSocket gap is traced to the transport. The clients'
own CPU per pair is printed too, for the gRPC echo twice: with grpcio's client and with the
load generator's (`loadtest.lean_grpc`), which `make bench` uses since it shares the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import grpc
import uvicorn
import uvloop
from a2f_triton.processes import accepts_connections, free_port, running
from nvidia_ace.animation_pb2 import AnimationData, AudioWithTimeCode
from nvidia_audio2face_3d.messages_pb2 import A2F3DAnimationDataStream, AudioWithEmotionStream
from websockets.asyncio.client import connect

from a2f_client.ace import OWN_CONNECTION
from loadtest.lean_grpc import open_call
from loadtest.procstat import tree_cpu_seconds

METHOD = "/open_a2f.TransportFloor/Echo"
CHUNK = bytes(1066)  # 1/30 s of 16 kHz 16-bit audio, as a frame's share comes back


async def _echo_stream(requests: Any, context: Any) -> None:
    del requests
    while (message := await context.read()) is not grpc.aio.EOF:
        audio = AudioWithTimeCode(
            time_code=0.0, audio_buffer=message.audio_with_emotion.audio_buffer
        )
        await context.write(A2F3DAnimationDataStream(animation_data=AnimationData(audio=audio)))


async def _serve_grpc(port: int) -> None:
    handler = grpc.stream_stream_rpc_method_handler(
        _echo_stream,
        request_deserializer=AudioWithEmotionStream.FromString,
        response_serializer=A2F3DAnimationDataStream.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("open_a2f.TransportFloor", {"Echo": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (event := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "bytes": event["bytes"]})


def _serve_websocket(port: int) -> None:
    uvicorn.run(
        _echo_app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        ws="websockets-sansio",
        log_level="warning",
    )


async def _grpc_stream(port: int, messages: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", [OWN_CONNECTION]) as channel:
        call = channel.stream_stream(
            METHOD,
            request_serializer=AudioWithEmotionStream.SerializeToString,
            response_deserializer=A2F3DAnimationDataStream.FromString,
        )()
        await _echoes(call, messages)


async def _lean_grpc_stream(port: int, messages: int) -> None:
    call = await open_call(f"127.0.0.1:{port}", METHOD, [], A2F3DAnimationDataStream.FromString)
    await _echoes(call, messages)
    await call.read()  # EOF: the server ended the call


async def _echoes(call: Any, messages: int) -> None:
    """Paced request and reply pairs on a call (grpcio's or the lean client's), then the end
    of the requests."""
    request = AudioWithEmotionStream(audio_with_emotion={"audio_buffer": CHUNK})

    async def one() -> None:
        await call.write(request)
        await call.read()

    await _paced(one, messages)
    await call.done_writing()


async def _websocket_stream(port: int, messages: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/") as ws:

        async def one() -> None:
            await ws.send(CHUNK)
            await ws.recv()

        await _paced(one, messages)


async def _paced(
    exchange: Callable[[], Awaitable[None]], messages: int, rate: float = 30.0
) -> None:
    start = time.monotonic()
    for k in range(messages):
        await exchange()
        await asyncio.sleep(max(0.0, start + (k + 1) / rate - time.monotonic()))


SERVERS: dict[str, Callable[[int], None]] = {
    "grpc": lambda port: asyncio.run(_serve_grpc(port)),
    "websocket": _serve_websocket,
}
# name: (server, client)
PAIRS: dict[str, tuple[str, Callable[[int, int], Awaitable[None]]]] = {
    "grpc.aio, grpcio's client": ("grpc", _grpc_stream),
    "grpc.aio, the load generator's client": ("grpc", _lean_grpc_stream),
    "websockets (uvicorn)": ("websocket", _websocket_stream),
}


def measure(
    transport: str, client: Callable[[int, int], Awaitable[None]], streams: int, seconds: float
) -> tuple[float, float]:
    """Server and client CPU microseconds per message pair for `streams` paced streams."""
    port = free_port()
    command = [sys.executable, "-m", "loadtest.transport_floor", "--serve", transport, str(port)]
    ready = partial(accepts_connections, "127.0.0.1", port)
    with running(command, ready, name=f"{transport} echo server", timeout_s=30) as server:
        messages = round(seconds * 30)
        before, own = tree_cpu_seconds(server.pid), time.process_time()
        asyncio.run(_streams(client, port, streams, messages))
        server_s = tree_cpu_seconds(server.pid) - before
        pairs = streams * messages
        return server_s / pairs * 1e6, (time.process_time() - own) / pairs * 1e6


async def _streams(
    stream: Callable[[int, int], Awaitable[None]], port: int, n: int, messages: int
) -> None:
    await asyncio.gather(*(stream(port, messages) for _ in range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--serve", nargs=2, metavar=("TRANSPORT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    uvloop.install()
    if args.serve:
        SERVERS[args.serve[0]](int(args.serve[1]))
        return
    print(f"{args.streams} paced streams, 30 messages/s each, {args.seconds:.0f} s:")
    for name, (transport, client) in PAIRS.items():
        server, own = measure(transport, client, args.streams, args.seconds)
        print(f"  {name}: {server:.0f} us of server CPU per message pair, client {own:.0f}")


if __name__ == "__main__":
    main()
