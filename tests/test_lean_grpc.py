"""The load generator's own gRPC client (`loadtest.lean_grpc`) against a real grpc.aio server:
messages both ways, a status that is not OK with its details, trailers-only refusals, a
message larger than the server's HTTP/2 windows and frames, and a lost connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from a2f_triton.processes import free_port
from nvidia_ace.animation_pb2 import AnimationData, AudioWithTimeCode
from nvidia_audio2face_3d.messages_pb2 import A2F3DAnimationDataStream, AudioWithEmotionStream

from loadtest.lean_grpc import CallEnded, open_call

SERVICE = "open_a2f.LeanTest"
ECHO, REFUSE, FAIL_AFTER_ONE = f"/{SERVICE}/Echo", f"/{SERVICE}/Refuse", f"/{SERVICE}/FailAfterOne"


def _request(audio: bytes) -> AudioWithEmotionStream:
    return AudioWithEmotionStream(audio_with_emotion={"audio_buffer": audio})


def _reply(audio: bytes, time_code: float = 0.0) -> A2F3DAnimationDataStream:
    audio_part = AudioWithTimeCode(time_code=time_code, audio_buffer=audio)
    return A2F3DAnimationDataStream(animation_data=AnimationData(audio=audio_part))


async def _echo(requests: Any, context: grpc.aio.ServicerContext) -> None:
    """Each request's audio back, then one more message with the metadata's `who`."""
    del requests
    while (message := await context.read()) is not grpc.aio.EOF:
        await context.write(_reply(message.audio_with_emotion.audio_buffer))
    who = dict(context.invocation_metadata() or ()).get("who", "")
    await context.write(_reply(who.encode()))


async def _refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
    del requests
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy: retry in 2 s (ü)")


async def _fail_after_one(requests: Any, context: grpc.aio.ServicerContext) -> None:
    del requests
    await context.read()
    await context.write(_reply(b"one"))
    context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
    context.set_details("second header")


@pytest.fixture
async def target() -> AsyncIterator[str]:
    handlers = {
        name: grpc.stream_stream_rpc_method_handler(
            function,
            request_deserializer=AudioWithEmotionStream.FromString,
            response_serializer=A2F3DAnimationDataStream.SerializeToString,
        )
        for name, function in (
            ("Echo", _echo),
            ("Refuse", _refuse),
            ("FailAfterOne", _fail_after_one),
        )
    }
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_messages_go_both_ways_with_metadata_and_end_ok(target: str) -> None:
    call = await open_call(target, ECHO, [("who", "tenant-a")], A2F3DAnimationDataStream.FromString)
    for k in range(50):
        await call.write(_request(bytes([k]) * 1280))
        reply = await call.read()
        assert reply.animation_data.audio.audio_buffer == bytes([k]) * 1280
    await call.done_writing()
    last = await call.read()
    assert last.animation_data.audio.audio_buffer == b"tenant-a"
    assert await call.read() is grpc.aio.EOF


async def test_a_message_larger_than_the_windows_and_frames_arrives_whole(target: str) -> None:
    audio = bytes(range(256)) * 12_000  # 3 MB: past the 64 KiB windows and 16 KiB frames
    call = await open_call(target, ECHO, [], A2F3DAnimationDataStream.FromString)
    await call.write(_request(audio))
    reply = await call.read()
    assert reply.animation_data.audio.audio_buffer == audio
    await call.done_writing()


async def test_a_refusal_raises_its_status_and_details(target: str) -> None:
    call = await open_call(target, REFUSE, [], A2F3DAnimationDataStream.FromString)
    with pytest.raises(CallEnded) as refused:
        await call.read()
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details == "busy: retry in 2 s (ü)"
    with pytest.raises(CallEnded):
        await call.write(_request(b"late"))


async def test_a_status_after_messages_comes_after_them(target: str) -> None:
    call = await open_call(target, FAIL_AFTER_ONE, [], A2F3DAnimationDataStream.FromString)
    await call.write(_request(b"x"))
    assert (await call.read()).animation_data.audio.audio_buffer == b"one"
    with pytest.raises(CallEnded) as failed:
        await call.read()
    assert failed.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details == "second header"


async def test_a_lost_server_is_unavailable() -> None:
    handlers = {
        "Echo": grpc.stream_stream_rpc_method_handler(
            _echo,
            request_deserializer=AudioWithEmotionStream.FromString,
            response_serializer=A2F3DAnimationDataStream.SerializeToString,
        )
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    call = await open_call(f"127.0.0.1:{port}", ECHO, [], A2F3DAnimationDataStream.FromString)
    await call.write(_request(b"x"))
    await call.read()
    await server.stop(None)
    with pytest.raises(CallEnded) as lost:
        await call.read()
    assert lost.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
