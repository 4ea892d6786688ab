"""Python client for the open-a2f gateway: WebSocket streaming and the batch API.

    from a2f_client import animate_sync, stream_sync
    animation = animate_sync("line.wav", url="http://127.0.0.1:8765", fps=30)
    for frame in stream_sync("line.wav", "ws://127.0.0.1:8765/", emotions={"joy": 0.6}):
        ...

Async: `animate`, `animate_to`, `stream`, `connect` (a `StreamSession` for live audio).
NVIDIA's Audio2Face-3D gRPC API (the NIM's, on the gateway's port 52000): `a2f_client.ace`,
the same frames, with the `ace` extra.
Wire formats come from the gateway package (`a2f_protocol`, `a2f_protocol.export_formats`).
"""

from __future__ import annotations

from a2f_client.batch import (
    DEFAULT_HTTP_URL,
    ResponseInfo,
    animate,
    animate_sync,
    animate_to,
    animate_to_sync,
)
from a2f_client.errors import A2FError, AuthError, ServerError, ServerUnavailableError
from a2f_client.streaming import DEFAULT_WS_URL, StreamSession, connect, stream, stream_sync
from a2f_protocol.export_formats import Animation
from a2f_protocol.frames import BlendshapeFrame

__all__ = [
    "DEFAULT_HTTP_URL",
    "DEFAULT_WS_URL",
    "A2FError",
    "Animation",
    "AuthError",
    "BlendshapeFrame",
    "ResponseInfo",
    "ServerError",
    "ServerUnavailableError",
    "StreamSession",
    "animate",
    "animate_sync",
    "animate_to",
    "animate_to_sync",
    "connect",
    "stream",
    "stream_sync",
]
