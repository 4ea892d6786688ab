"""JSON control messages of the Audio2Face-3D WebSocket protocol, plus our extensions.

Client messages are one msgspec tagged union decoded by a single module-level decoder;
validation failures carry msgspec's text (it names the offending path), which the gateway
sends back verbatim as the `Error` message.
"""

from __future__ import annotations

from typing import Annotated, Union

import msgspec
from msgspec import Meta, Struct

PROTOCOL_VERSION = 1
"""Value of `SessionStarted.protocol.version` and of the A2FB header version."""

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000

PositiveInt = Annotated[int, Meta(gt=0, le=2**31 - 1)]
UnitFloat = Annotated[float, Meta(ge=0.0, le=1.0)]
Seed = Annotated[int, Meta(ge=0, le=2**63 - 1)]
SampleRate = Annotated[int, Meta(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)]
# Names are looked up in the model's channel/emotion lists; the caps keep hostile input small.
Name = Annotated[str, Meta(min_length=1, max_length=64)]
NameList = Annotated[list[Name], Meta(min_length=1, max_length=256)]


class FrameRate(Struct, forbid_unknown_fields=True):
    """An exact frame rate, e.g. 30000/1001."""

    numerator: PositiveInt
    denominator: PositiveInt


class SessionOptions(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The reference server's executor options; a request must match the server's values."""

    use_gpu_solver: bool | None = None
    execution_option: str | None = None


class PostProcess(Struct, forbid_unknown_fields=True):
    """Per-session output shaping (extension).

    `multipliers`/`offsets`/`clamp`/`threshold` are applied by the Triton postprocessor to the
    ARKit channels; `smoothing` is a per-session exponential smoothing factor applied by the
    gateway (0 = off, closer to 1 = smoother).
    """

    multipliers: dict[Name, float] = msgspec.field(default_factory=dict)
    offsets: dict[Name, float] = msgspec.field(default_factory=dict)
    clamp: tuple[float, float] = (0.0, 1.0)
    threshold: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    smoothing: Annotated[float, Meta(ge=0.0, lt=1.0)] = 0.0


class ClientMessage(Struct, tag_field="type"):
    """Base of every client -> server JSON message."""


class StartSession(ClientMessage, tag="StartSession"):
    """Open a session; every field is optional. Reference fields first, extensions after."""

    model: str | None = None
    fps: PositiveInt | None = None
    frame_rate: FrameRate | None = None
    options: SessionOptions | None = None
    # Extensions (ignored by the reference server, so old clients never send them).
    emotions: dict[Name, UnitFloat] | None = None
    emotion_strength: UnitFloat | None = None
    sample_rate: SampleRate | None = None
    postprocess: PostProcess | None = None
    channels: Name | NameList | None = None
    blinks: bool = True
    seed: Seed | None = None


class EndSession(ClientMessage, tag="EndSession"):
    """Flush the remaining frames and close the session (the connection stays open)."""

    session_id: str | None = None


class SetEmotion(ClientMessage, tag="SetEmotion"):
    """Change the emotion for frames computed from now on (extension)."""

    emotions: dict[Name, UnitFloat] = msgspec.field(default_factory=dict)
    emotion_strength: UnitFloat | None = None


ClientMessageType = Union[StartSession, EndSession, SetEmotion]  # noqa: UP007 (msgspec needs a runtime union)


class ProtocolInfo(Struct):
    version: int = PROTOCOL_VERSION


class ChannelGroup(Struct):
    """A run of consecutive weights of one kind (`arkit` or `visemes`)."""

    name: str
    count: int


class ServerMessage(Struct, tag_field="type"):
    """Base of every server -> client JSON message."""


class SessionStarted(ServerMessage, tag="SessionStarted", kw_only=True):
    """Reply to `StartSession`; `channels` names the weights of every frame, in order."""

    protocol: ProtocolInfo = msgspec.field(default_factory=ProtocolInfo)
    session_id: str
    model: str
    options: SessionOptions
    sampling_rate: int
    frame_rate: FrameRate
    weight_count: int
    channels: list[str]
    channel_groups: list[ChannelGroup]


class SessionEnded(ServerMessage, tag="SessionEnded"):
    session_id: str


class Error(ServerMessage, tag="Error", omit_defaults=True):
    """A recoverable (or, just before a close, fatal) problem; `code` is a stable kind.
    `retry_after_s` (extension) says when a refused request may succeed (`quota`)."""

    message: str
    code: str | None = None
    retry_after_s: float | None = None


ServerMessageType = Union[SessionStarted, SessionEnded, Error]  # noqa: UP007

SHUTTING_DOWN = "shutting_down"
"""`Error.code` of a gateway going away (close 1001): the client should reconnect, through its
load balancer, and go on in a new session."""


class ProtocolError(ValueError):
    """A client message that cannot be accepted; `str()` is the text for the client."""

    def __init__(
        self, message: str, code: str = "invalid_message", *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


_client_decoder = msgspec.json.Decoder(ClientMessageType)
_server_decoder = msgspec.json.Decoder(ServerMessageType)
_encoder = msgspec.json.Encoder()


def decode_client_message(data: str | bytes) -> StartSession | EndSession | SetEmotion:
    """Parse one client text frame; raises `ProtocolError` with the client-facing text."""
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"Invalid JSON: {exc}") from exc


def decode_server_message(data: str | bytes) -> SessionStarted | SessionEnded | Error:
    """Parse one server text frame (for clients and tests)."""
    return _server_decoder.decode(data)


def encode_message(message: ClientMessage | ServerMessage) -> bytes:
    """JSON bytes of any protocol message, `type` first."""
    return _encoder.encode(message)
