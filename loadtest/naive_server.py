"""The baseline: naive per-session serving, as the seed services are built.

`python -m loadtest.naive_server --port 8766 --fps 30`

A minimal WebSocket server speaking the same protocol as the gateway (the gateway's message
types, A2FB framing, session state machine and output shaping) that runs ONNX Runtime in
process for each session on each chunk: no Triton, no batching across sessions. Every
PushAudio's frames are one `session.run` on a worker thread (ONNX Runtime releases the GIL,
so sessions overlap on the cores), and the connection waits for it before reading on, the
way a request/response handler does. The postprocessor's numpy maths runs on the result with
neutral parameters, so it does the same work per frame as the Triton path. The protocol itself is
the gateway's connection core (`gateway.session.connection`), so both servers answer every
message alike; the baseline ignores per-session postprocessing parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import uvloop
from a2f_triton.repository import NETWORK_WEIGHTS, network_directory
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from a2f_protocol.messages import SessionOptions
from gateway.drivers.shared_state import carry_out as carry_out_store
from gateway.metrics import Metrics
from gateway.model_info import ModelInfo, load_postprocess_module
from gateway.session.config import ServerProfile
from gateway.session.connection import (
    AcquireSlot,
    ChargeAudio,
    Close,
    Connection,
    ConnectionLimits,
    ReleaseSlot,
    SendFrames,
    SendText,
    Submit,
)
from gateway.stores.local import SessionRegistry
from loadtest.accounting import MODEL_REPOSITORY

MAX_SESSIONS = 1 << 20  # the baseline admits whatever connects
MAX_QUEUED = 1 << 20  # it reads on only after every frame went out anyway


class Model:
    """The ONNX network plus the postprocessor, for one window batch at a time."""

    def __init__(self, model_repository: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one call per session chunk; sessions overlap
        # The version Triton serves by default: the highest.
        self.info = ModelInfo.load(model_repository)
        network = network_directory(model_repository, self.info.repository_version)
        path = network / NETWORK_WEIGHTS
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        post = load_postprocess_module(model_repository)
        self.post = post.Postprocessor(self.info.blendshapes, self.info.visemes)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="ort")

    def run(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        blendshapes, visemes = self.session.run(["BLENDSHAPES", "VISEMES"], {"AUDIO": windows})
        raw = {"BLENDSHAPES_RAW": blendshapes, "VISEMES_RAW": visemes}
        shaped, visemes = self.post.apply(self.post.collate([raw]))
        return np.concatenate((shaped, visemes), axis=1)

    async def infer(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.run, windows)


async def serve_connection(socket: ServerConnection, model: Model, profile: ServerProfile) -> None:
    """One client through the gateway's own connection core; every job is inferred on the
    spot and awaited before the next message is read, the way a request handler does."""
    connection = Connection(model.info, profile, Metrics(), ConnectionLimits(MAX_QUEUED))
    registry = SessionRegistry(MAX_SESSIONS)  # this connection's: the baseline admits all
    try:
        async for message in socket:
            if isinstance(message, bytes):
                connection.receive_bytes(message, time.monotonic())
            else:
                connection.receive_text(message, time.monotonic())
            if not await carry_out(connection, socket, model, registry):
                return
    except ConnectionClosed:
        pass
    finally:
        connection.connection_lost()


async def carry_out(
    connection: Connection, socket: ServerConnection, model: Model, registry: SessionRegistry
) -> bool:
    """Do what the core asked until it asks nothing more; False once it closed."""
    while actions := connection.take_actions():
        for action in actions:
            match action:
                case Submit(job):
                    windows = np.empty((job.count, model.info.window), np.float32)
                    job.batch.cut_windows(
                        windows, slice(None), model.info.window, model.info.offset
                    )
                    job.done(job, await model.infer(windows))
                case SendText(data):
                    await socket.send(data.decode())
                    connection.sent(1)
                case SendFrames(frames=frames):
                    for frame in frames:  # one message each (an iterable would fragment)
                        await socket.send(frame)
                    connection.sent(len(frames))
                case Close(code=code, message=message):
                    await socket.close(code, message[:120])
                    return False
                case AcquireSlot() | ChargeAudio() | ReleaseSlot():
                    await carry_out_store(action, connection, registry)
    return True


async def serve_forever(args: argparse.Namespace) -> None:
    model = Model(args.model_repository, args.threads)
    profile = ServerProfile(model="a2f", fps=Fraction(args.fps), options=SessionOptions())

    async def handler(socket: ServerConnection) -> None:
        await serve_connection(socket, model, profile)

    async with serve(
        handler, args.host, args.port, max_size=4 << 20, compression=None, ping_interval=None
    ) as server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="inference worker threads"
    )
    uvloop.run(serve_forever(parser.parse_args(argv)))  # as uvicorn serves the gateway


if __name__ == "__main__":
    main(sys.argv[1:])
