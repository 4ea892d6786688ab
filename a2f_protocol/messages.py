"""JSON control messages of the Audio2Face-3D WebSocket protocol, plus our extensions.

Client messages are one msgspec tagged union decoded by a single module-level decoder;
validation failures carry msgspec's text (it names the offending path), which the gateway
sends back verbatim as the `Error` message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Union

import msgspec
import numpy as np
from msgspec import Meta, Struct

PROTOCOL_VERSION = 1
"""Value of `SessionStarted.protocol.version` and of the A2FB header version."""

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000

MAX_JSON_BYTES = 64 * 1024
"""Largest JSON control message (or JSON query field of the batch API): the largest sensible
StartSession (256 channel names, every postprocess entry) is a few kilobytes."""
MAX_JSON_DEPTH = 16
"""Deepest JSON nesting accepted (a StartSession nests 3 deep). Checked before parsing, so no
parser recurses into hostile input (msgspec and json both raise RecursionError near 1000)."""

PositiveInt = Annotated[int, Meta(gt=0, le=2**31 - 1)]
Seed = Annotated[int, Meta(ge=0, le=2**63 - 1)]
SampleRate = Annotated[int, Meta(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)]
# Names are looked up in the model's channel/emotion lists; the caps keep hostile input small.
Name = Annotated[str, Meta(min_length=1, max_length=64)]
NameList = Annotated[list[Name], Meta(min_length=1, max_length=256)]
NamedFloats = Annotated[dict[Name, float], Meta(max_length=256)]


@dataclass(frozen=True, slots=True)
class Bounds:
    """The interval a float parameter must lie in. Every bound is a finite float32, and NaN
    lies in no interval, so whatever passes reaches Triton as a finite float32."""

    low: float
    high: float
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        return self.low <= value and (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def check(self, name: str, value: float) -> None:
        """Raise `ValueError` naming the parameter and its range (msgspec adds the path)."""
        if value not in self:
            raise ValueError(f"{name} must lie in {self}, got {value!r}")


UNIT = Bounds(0.0, 1.0)
"""Emotion weights, emotion_strength and the postprocess threshold."""
SMOOTHING = Bounds(0.0, 1.0, high_open=True)
POSTPROCESS_RANGE = Bounds(-1000.0, 1000.0)
"""Multipliers, offsets and clamp bounds. Weights lie near [0, 1], so `w * m + o` stays far
inside float32 (a multiplier of 1e39 is infinity there, which Triton refuses mid-stream)."""


def _check_emotions(emotions: Mapping[str, float] | None, strength: float | None) -> None:
    for name, weight in (emotions or {}).items():
        UNIT.check(f"emotions.{name}", weight)
    if strength is not None:
        UNIT.check("emotion_strength", strength)


class FrameRate(Struct, forbid_unknown_fields=True):
    """An exact frame rate, e.g. 30000/1001."""

    numerator: PositiveInt
    denominator: PositiveInt

    @property
    def fraction(self) -> Fraction:
        return Fraction(self.numerator, self.denominator)


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

    multipliers: NamedFloats = msgspec.field(default_factory=dict)
    offsets: NamedFloats = msgspec.field(default_factory=dict)
    clamp: tuple[float, float] = (0.0, 1.0)
    threshold: float = 0.0
    smoothing: float = 0.0

    def __post_init__(self) -> None:
        for field, values in (("multipliers", self.multipliers), ("offsets", self.offsets)):
            for name, value in values.items():
                POSTPROCESS_RANGE.check(f"postprocess.{field}.{name}", value)
        for bound in self.clamp:
            POSTPROCESS_RANGE.check("postprocess.clamp", bound)
        UNIT.check("postprocess.threshold", self.threshold)
        SMOOTHING.check("postprocess.smoothing", self.smoothing)


class ClientMessage(Struct, tag_field="type"):
    """Base of every client -> server JSON message."""


class StartSession(ClientMessage, tag="StartSession"):
    """Open a session; every field is optional. Reference fields first, extensions after."""

    model: str | None = None
    fps: PositiveInt | None = None
    frame_rate: FrameRate | None = None
    options: SessionOptions | None = None
    # Extensions (ignored by the reference server, so old clients never send them).
    emotions: NamedFloats | None = None
    emotion_strength: float | None = None
    sample_rate: SampleRate | None = None
    postprocess: PostProcess | None = None
    channels: Name | NameList | None = None
    blinks: bool = True
    seed: Seed | None = None
    # Frames keep coming through pauses (PROTOCOL.md, Idle frames); off: the reference's
    # behaviour, frames only for audio.
    idle: bool = False

    def __post_init__(self) -> None:
        _check_emotions(self.emotions, self.emotion_strength)

    @property
    def requested_frame_rate(self) -> Fraction | None:
        """The rate the client names (`frame_rate`, else `fps`); None: it leaves it to us."""
        if self.frame_rate is not None:
            return self.frame_rate.fraction
        return None if self.fps is None else Fraction(self.fps)


class EndSession(ClientMessage, tag="EndSession"):
    """Flush the remaining frames and close the session (the connection stays open)."""

    session_id: str | None = None


class SetEmotion(ClientMessage, tag="SetEmotion"):
    """Change the emotion for frames computed from now on (extension)."""

    emotions: NamedFloats = msgspec.field(default_factory=dict)
    emotion_strength: float | None = None

    def __post_init__(self) -> None:
        _check_emotions(self.emotions, self.emotion_strength)


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
    `retry_after_s` (extension) says when a refused request may succeed (`quota`, `busy`)."""

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


# Declared: mypy sees a Decoder of a runtime Union alias as Decoder[Any].
_client_decoder: msgspec.json.Decoder[StartSession | EndSession | SetEmotion]
_client_decoder = msgspec.json.Decoder(ClientMessageType)
_server_decoder: msgspec.json.Decoder[SessionStarted | SessionEnded | Error]
_server_decoder = msgspec.json.Decoder(ServerMessageType)
_encoder = msgspec.json.Encoder()


# Strings may hold any bracket; only brackets outside them nest.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPENERS, _CLOSERS = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def check_json_bounds(data: str | bytes) -> bytes:
    """`data` as UTF-8 bytes if it is at most `MAX_JSON_BYTES` long and nested at most
    `MAX_JSON_DEPTH` deep; else `ProtocolError` (`too_large` / `invalid_message`)."""
    raw = data.encode(errors="surrogatepass") if isinstance(data, str) else data
    if len(raw) > MAX_JSON_BYTES:
        raise ProtocolError(
            f"JSON message of {len(raw)} bytes exceeds the {MAX_JSON_BYTES}-byte limit",
            "too_large",
        )
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:  # else it cannot nest that deep
        codes = np.frombuffer(_JSON_STRING.sub(b"", raw), np.uint8)
        steps = np.isin(codes, _OPENERS).astype(np.int32) - np.isin(codes, _CLOSERS)
        if steps.size and int(np.cumsum(steps).max()) > MAX_JSON_DEPTH:
            raise ProtocolError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return raw


def decode_json(data: str | bytes) -> object:
    """Any JSON value within the size and depth bounds; `ProtocolError` otherwise."""
    try:
        return msgspec.json.decode(check_json_bounds(data))
    except msgspec.DecodeError as exc:
        raise ProtocolError(str(exc)) from exc


def decode_client_message(data: str | bytes) -> StartSession | EndSession | SetEmotion:
    """Parse one client text frame; raises `ProtocolError` with the client-facing text."""
    try:
        return _client_decoder.decode(check_json_bounds(data))
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
