"""NVIDIA's message packages, installed without their dependency pins (ace_requirements.txt),
run on the project's grpcio and protobuf, and grpc.aio runs on the gateway's event loop
(uvloop, as uvicorn picks it)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import grpc
import uvloop
from nvidia_ace.status_pb2 import Status
from nvidia_audio2face_3d import audio2face_pb2_grpc
from nvidia_audio2face_3d.messages_pb2 import A2F3DAnimationDataStream, AudioWithEmotionStream

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_versions_are_the_pinned_ones() -> None:
    text = (PROJECT_ROOT / "ace_requirements.txt").read_text()
    pins = dict(re.findall(r"^([\w-]+)==([\w.]+)$", text, re.M))
    assert pins.keys() == {"nvidia-audio2face-3d", "nvidia-ace"}
    for name, pinned in pins.items():
        assert version(name) == pinned


class Echo(audio2face_pb2_grpc.A2FControllerServiceServicer):  # type: ignore[misc]
    async def ProcessAudioStream(self, requests, context):  # type: ignore[no-untyped-def]
        async for request in requests:
            part = request.WhichOneof("stream_part")
            yield A2F3DAnimationDataStream(status=Status(code=Status.INFO, message=part))


def test_the_generated_service_runs_on_uvloop() -> None:
    async def run() -> list[str]:
        server = grpc.aio.server()
        audio2face_pb2_grpc.add_A2FControllerServiceServicer_to_server(Echo(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = audio2face_pb2_grpc.A2FControllerServiceStub(channel)
                call = stub.ProcessAudioStream(
                    iter([AudioWithEmotionStream(end_of_audio=AudioWithEmotionStream.EndOfAudio())])
                )
                return [reply.status.message async for reply in call]
        finally:
            await server.stop(None)

    assert uvloop.run(run()) == ["end_of_audio"]
