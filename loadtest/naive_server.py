"""The baseline: naive per-session serving, as the seed services are built.

`python -m loadtest.naive_server --port 8766 --fps 30`

A minimal WebSocket server speaking the same protocol as the gateway (the gateway's message
types, A2FB framing, session state machine and output shaping) that runs ONNX Runtime in
process for each session on each chunk: no Triton, no batching across sessions. Every
PushAudio's frames are one `session.run` on a worker thread (ONNX Runtime releases the GIL,
so sessions overlap on the cores), and the connection waits for it before reading on, the
way a request/response handler does. The postprocessor's numpy maths runs on the result with
neutral parameters, so it does the same work per frame as the Triton path. It implements only
what the benchmark streams use (StartSession, PushAudio, EndSession).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from a2f_protocol.frames import FrameFormatError, pack_frame, parse_push_audio
from a2f_protocol.messages import (
    EndSession,
    Error,
    FrameRate,
    ProtocolError,
    SessionEnded,
    SessionOptions,
    SessionStarted,
    StartSession,
    decode_client_message,
    encode_message,
)
from gateway.model_info import ModelInfo, load_postprocess_module
from gateway.session.config import ServerProfile, SessionConfig
from gateway.session.pipeline import FramePipeline
from loadtest.accounting import MODEL_REPOSITORY

MAX_FRAMES = 1024


class Model:
    """The ONNX network plus the postprocessor, for one window batch at a time."""

    def __init__(self, model_repository: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one call per session chunk; sessions overlap
        path = model_repository / "a2f_net" / "1" / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        post = load_postprocess_module(model_repository)
        self.info = ModelInfo.load(model_repository)
        self.post = post.Postprocessor(self.info.blendshapes, self.info.visemes)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="ort")

    def run(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        blendshapes, visemes = self.session.run(["BLENDSHAPES", "VISEMES"], {"AUDIO": windows})
        raw = {"BLENDSHAPES_RAW": blendshapes, "VISEMES_RAW": visemes}
        shaped, visemes = self.post.apply(self.post.collate([raw]))
        return np.concatenate((shaped, visemes), axis=1)

    async def infer(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.run, windows)


class Connection:
    """One client: at most one session at a time, every chunk inferred before the next."""

    def __init__(self, socket: ServerConnection, model: Model, profile: ServerProfile) -> None:
        self.socket = socket
        self.model = model
        self.profile = profile
        self.pipeline: FramePipeline | None = None
        self.session_id = ""

    async def serve(self) -> None:
        try:
            async for message in self.socket:
                try:
                    if isinstance(message, bytes):
                        await self._audio(message)
                    else:
                        await self._control(message)
                except ProtocolError as exc:
                    await self.socket.send(encode_message(Error(str(exc), exc.code)).decode())
        except ConnectionClosed:
            pass

    async def _control(self, text: str) -> None:
        match decode_client_message(text):
            case StartSession() as request:
                if self.pipeline is not None:
                    raise ProtocolError("Session already started", "session_exists")
                config = SessionConfig.from_start(request, self.profile, self.model.info)
                self.pipeline = FramePipeline(config, self.model.info)
                self.session_id = secrets.token_hex(16)
                await self.socket.send(encode_message(self._started(config)).decode())
            case EndSession():
                pipeline = self._session()
                pipeline.stream.finish()
                await self._emit(pipeline)
                self.pipeline = None
                await self.socket.send(encode_message(SessionEnded(self.session_id)).decode())
            case _:
                raise ProtocolError("not supported by the naive baseline", "unsupported")

    async def _audio(self, data: bytes) -> None:
        pipeline = self._session()
        try:
            push = parse_push_audio(data)
        except FrameFormatError as exc:
            raise ProtocolError(str(exc), "invalid_audio") from exc
        pipeline.stream.push(push.start_sample_index, push.pcm)
        await self._emit(pipeline)

    async def _emit(self, pipeline: FramePipeline) -> None:
        while (batch := pipeline.stream.take(MAX_FRAMES)) is not None:
            block = pipeline.shape(batch, await self.model.infer(batch.windows))
            stamps = block.timestamps.tolist()
            for row in range(block.weights.shape[0]):
                frame = pack_frame(
                    block.first_index + row, stamps[row], stamps[row + 1], block.weights[row]
                )
                await self.socket.send(frame)

    def _session(self) -> FramePipeline:
        if self.pipeline is None:
            raise ProtocolError("StartSession must be called before PushAudio", "no_session")
        return self.pipeline

    def _started(self, config: SessionConfig) -> SessionStarted:
        return SessionStarted(
            session_id=self.session_id,
            model=self.profile.model,
            options=self.profile.options,
            sampling_rate=self.model.info.sample_rate,
            frame_rate=FrameRate(config.fps.numerator, config.fps.denominator),
            weight_count=len(config.channels.names),
            channels=list(config.channels.names),
            channel_groups=list(config.channels.groups),
        )


async def serve_forever(args: argparse.Namespace) -> None:
    model = Model(args.model_repository, args.threads)
    profile = ServerProfile(model="a2f", fps=Fraction(args.fps), options=SessionOptions())

    async def handler(socket: ServerConnection) -> None:
        await Connection(socket, model, profile).serve()

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
