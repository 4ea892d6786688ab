"""Response formats of the batch API: JSON lines, Live Link Face CSV, concatenated A2FB frames.

Each format is an encoder (header bytes, then bytes per block of frames, then trailer bytes)
so a response can stream while frames are computed, plus a parser that reads the whole
output back into an `Animation` (used by the client library and the tests).

JSON lines: the first line is a `header` (channel names in weight order, frame rate), then one
`frames` line per computed block, then `end` with the frame count; a failure after the
response started is reported as an `error` line (the HTTP status is already sent).

CSV, Live Link Face layout: `Timecode,BlendShapeCount,<ARKit names>,<head and eye rotations>`
then any non-ARKit channels (visemes). Live Link Face spells ARKit names with a capital first
letter (`eyeBlinkLeft` -> `EyeBlinkLeft`) and lists them in the ARKit order of our manifest
except that it puts two pairs Right-first (`JawRight,JawLeft`, `MouthRight,MouthLeft`); that
rule is all this module knows, the names themselves come from the model's manifest. The nine
rotation columns are zeros (the model predicts no head pose) and exist because importers look
for them; `BlendShapeCount` is the number of value columns (61 for the default ARKit set, as
the app writes). `Timecode` is `HH:MM:SS:FF.mmm` from the start of the audio, `FF` counted at
the nominal integer frame rate and `.mmm` the sub-frame fraction.

A2FB: the WebSocket `BlendshapeFrame` messages, back to back (a2f_protocol.frames).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from a2f_protocol.clock import MODEL_SAMPLE_RATE
from a2f_protocol.frames import (
    FRAME_HEADER_BYTES,
    FrameFormatError,
    pack_frame,
    unpack_frame,
)
from a2f_protocol.messages import FrameRate

ExportFormat = Literal["jsonl", "csv", "a2fb"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("jsonl", "csv", "a2fb")
MEDIA_TYPES: dict[ExportFormat, str] = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "a2fb": "application/octet-stream",
}
# Accept values understood besides MEDIA_TYPES' own (first match in the client's order wins).
_ACCEPT_ALIASES: dict[str, ExportFormat] = {
    "application/jsonl": "jsonl",
    "application/json-lines": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/json": "jsonl",
    "application/vnd.a2f.a2fb": "a2fb",
}

TEXT_DECIMALS = 8  # weights in JSON lines and CSV: exact to 5e-9

# Live Link Face writes these two pairs Right-first; otherwise it follows the ARKit order.
LIVE_LINK_RIGHT_FIRST: tuple[tuple[str, str], ...] = (
    ("jawLeft", "jawRight"),
    ("mouthLeft", "mouthRight"),
)
LIVE_LINK_ROTATIONS: tuple[str, ...] = (
    "HeadYaw", "HeadPitch", "HeadRoll",
    "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FrameBlock:
    """Consecutive frames `first_index ..`: `timestamps` has one entry more than `weights`
    rows (the last is the next frame's time), as in the gateway's `SpanBatch`."""

    first_index: int
    timestamps: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Animation:
    """A whole parsed response: frame `i` is `frame_indices[i]` at `timestamps[i]` (16 kHz
    samples) with `weights[i]` named by `channels`."""

    channels: tuple[str, ...]
    frame_indices: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32]

    def column(self, name: str) -> npt.NDArray[np.float32]:
        return self.weights[:, self.channels.index(name)]

    def select(self, names: Sequence[str]) -> npt.NDArray[np.float32]:
        """Weights with columns in the order of `names` (to compare formats)."""
        return self.weights[:, [self.channels.index(n) for n in names]]


class Encoder(Protocol):
    media_type: str

    def header(self) -> bytes: ...
    def block(self, frames: FrameBlock) -> bytes: ...
    def trailer(self, frame_count: int) -> bytes: ...
    def error(self, message: str) -> bytes: ...


def choose_format(explicit: str | None, accept: str | None) -> ExportFormat:
    """`format=` wins; else the first `Accept` entry we know; else JSON lines.

    Raises `ValueError` naming the formats when `explicit` is unknown.
    """
    if explicit is not None:
        name = explicit.strip().lower()
        if name in ("ndjson", "json"):
            return "jsonl"
        if name not in EXPORT_FORMATS:
            raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}; got {explicit!r}")
        return name
    known = {media: name for name, media in MEDIA_TYPES.items()} | _ACCEPT_ALIASES
    for entry in (accept or "").split(","):
        media = entry.split(";", 1)[0].strip().lower()
        if media in known:
            return known[media]
    return "jsonl"


def make_encoder(
    kind: ExportFormat, channels: Sequence[str], arkit_names: Sequence[str], fps: Fraction
) -> Encoder:
    if kind == "jsonl":
        return JsonLinesEncoder(channels, fps)
    if kind == "csv":
        return LiveLinkCsvEncoder(channels, arkit_names, fps)
    return A2fbEncoder()


# --- JSON lines ---------------------------------------------------------------------------


class JsonLine(msgspec.Struct, tag_field="type"):
    pass


class Header(JsonLine, tag="header"):
    channels: list[str]
    frame_rate: FrameRate
    sampling_rate: int = MODEL_SAMPLE_RATE


class Frames(JsonLine, tag="frames"):
    first_frame: int
    timestamps: list[int]  # one more than weights rows: the last is the next frame's time
    weights: list[list[float]]


class End(JsonLine, tag="end"):
    frame_count: int


class ErrorLine(JsonLine, tag="error"):
    message: str


_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(Header | Frames | End | ErrorLine)


class StreamError(RuntimeError):
    """The server reported a failure after the response had started."""


class JsonLinesEncoder:
    media_type = MEDIA_TYPES["jsonl"]

    def __init__(self, channels: Sequence[str], fps: Fraction) -> None:
        self._header = Header(list(channels), FrameRate(fps.numerator, fps.denominator))

    def header(self) -> bytes:
        return _json_encoder.encode(self._header) + b"\n"

    def block(self, frames: FrameBlock) -> bytes:
        # float32 -> float64 prints 17 digits ("0.10000000149011612"); 8 decimals are exact
        # to 5e-9, far inside the 1e-5 every format agrees to, and half the size.
        weights = np.round(frames.weights.astype(np.float64), TEXT_DECIMALS).tolist()
        line = Frames(frames.first_index, frames.timestamps.tolist(), weights)
        return _json_encoder.encode(line) + b"\n"

    def trailer(self, frame_count: int) -> bytes:
        return _json_encoder.encode(End(frame_count)) + b"\n"

    def error(self, message: str) -> bytes:
        return _json_encoder.encode(ErrorLine(message)) + b"\n"


def parse_jsonl(lines: Iterable[bytes | str]) -> Animation:
    """Read a whole JSON-lines response; raises `StreamError` on an `error` line or when the
    `end` line is missing (a cut-off response)."""
    header: Header | None = None
    indices: list[npt.NDArray[np.int64]] = []
    stamps: list[npt.NDArray[np.int64]] = []
    weights: list[npt.NDArray[np.float32]] = []
    ended = False
    for raw in lines:
        if not raw.strip():
            continue
        match _json_decoder.decode(raw):
            case Header() as header:
                pass
            case Frames(first_frame=first, timestamps=ts, weights=w):
                indices.append(np.arange(first, first + len(w), dtype=np.int64))
                stamps.append(np.asarray(ts[:-1], dtype=np.int64))
                weights.append(np.asarray(w, dtype=np.float32).reshape(len(w), -1))
            case End(frame_count=count):
                ended = True
                if count != sum(map(len, indices)):
                    raise StreamError(f"end line says {count} frames, got {sum(map(len, indices))}")
            case ErrorLine(message=message):
                raise StreamError(message)
    if header is None or not ended:
        raise StreamError("incomplete JSON-lines response (no header or no end line)")
    return _animation(tuple(header.channels), indices, stamps, weights)


# --- Live Link Face CSV -------------------------------------------------------------------


def live_link_name(arkit_name: str) -> str:
    """`eyeBlinkLeft` -> `EyeBlinkLeft`."""
    return arkit_name[:1].upper() + arkit_name[1:]


def live_link_order(arkit_names: Sequence[str]) -> list[str]:
    """The manifest's ARKit names (camelCase) in Live Link Face's column order."""
    order = list(arkit_names)
    for left, right in LIVE_LINK_RIGHT_FIRST:
        if left in order and right in order:
            i, j = order.index(left), order.index(right)
            order[i], order[j] = order[j], order[i]
    return order


def timecode(frame_index: int, fps: Fraction) -> str:
    """`HH:MM:SS:FF.mmm` of a frame from the start, frames at the nominal integer rate."""
    seconds = Fraction(frame_index) / fps
    whole = int(seconds)
    nominal = max(round(fps), 1)
    frame = (seconds - whole) * nominal
    ff = int(frame)
    milli = min(int((frame - ff) * 1000), 999)
    hours, rest = divmod(whole, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}:{ff:02d}.{milli:03d}"


def parse_timecode(text: str, fps: Fraction) -> Fraction:
    """Seconds from a `timecode` (to the millisecond of a frame)."""
    hh, mm, ss, frame = text.split(":")
    nominal = max(round(fps), 1)
    return int(hh) * 3600 + int(mm) * 60 + int(ss) + Fraction(frame) / nominal


class LiveLinkCsvEncoder:
    media_type = MEDIA_TYPES["csv"]

    def __init__(self, channels: Sequence[str], arkit_names: Sequence[str], fps: Fraction) -> None:
        self.fps = fps
        arkit = set(arkit_names)
        position = {name: i for i, name in enumerate(channels)}
        chosen_arkit = [n for n in live_link_order(arkit_names) if n in position]
        others = [n for n in channels if n not in arkit]
        # Column j of a row comes from weight column _take[j]; rotations are zero columns.
        self._arkit = np.array([position[n] for n in chosen_arkit], dtype=np.intp)
        self._others = np.array([position[n] for n in others], dtype=np.intp)
        self.columns = (
            [live_link_name(n) for n in chosen_arkit] + list(LIVE_LINK_ROTATIONS) + others
        )

    def header(self) -> bytes:
        return ("Timecode,BlendShapeCount," + ",".join(self.columns) + "\n").encode()

    def block(self, frames: FrameBlock) -> bytes:
        rows = frames.weights.shape[0]
        values = np.concatenate(
            (
                frames.weights[:, self._arkit],
                np.zeros((rows, len(LIVE_LINK_ROTATIONS)), np.float32),
                frames.weights[:, self._others],
            ),
            axis=1,
        )
        prefix = [
            f"{timecode(frames.first_index + r, self.fps)},{len(self.columns)}" for r in range(rows)
        ]
        out = io.StringIO()
        np.savetxt(out, values, fmt=f"%.{TEXT_DECIMALS}f", delimiter=",")
        body = out.getvalue().splitlines()
        return "".join(f"{p},{b}\n" for p, b in zip(prefix, body, strict=True)).encode()

    def trailer(self, frame_count: int) -> bytes:
        return b""

    def error(self, message: str) -> bytes:
        # CSV has no error row; a cut-off table is what the client sees (it also gets no
        # complete chunked response, which HTTP clients report).
        return b""


def parse_live_link_csv(text: str, arkit_names: Sequence[str], fps: Fraction) -> Animation:
    """Read a Live Link Face CSV back; ARKit columns get the manifest's camelCase names,
    rotation columns are dropped. Timestamps come from the timecodes (1 ms resolution)."""
    by_live_link = {live_link_name(n): n for n in arkit_names}
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    if header[:2] != ["Timecode", "BlendShapeCount"]:
        raise ValueError(
            "not a Live Link Face CSV (first columns must be Timecode,BlendShapeCount)"
        )
    keep = [i for i, name in enumerate(header[2:], start=2) if name not in LIVE_LINK_ROTATIONS]
    channels = tuple(by_live_link.get(header[i], header[i]) for i in keep)
    times: list[Fraction] = []
    rows: list[list[float]] = []
    for record in reader:
        if not record:
            continue
        times.append(parse_timecode(record[0], fps))
        rows.append([float(record[i]) for i in keep])
    indices = np.array([round(t * fps) for t in times], dtype=np.int64)
    stamps = np.array([int(t * MODEL_SAMPLE_RATE) for t in times], dtype=np.int64)
    weights = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(channels))
    return Animation(channels, indices, stamps, weights)


# --- A2FB ---------------------------------------------------------------------------------


class A2fbEncoder:
    media_type = MEDIA_TYPES["a2fb"]

    def header(self) -> bytes:
        return b""

    def block(self, frames: FrameBlock) -> bytes:
        ts = frames.timestamps.tolist()
        return b"".join(
            pack_frame(frames.first_index + r, ts[r], ts[r + 1], row)
            for r, row in enumerate(frames.weights)
        )

    def trailer(self, frame_count: int) -> bytes:
        return b""

    def error(self, message: str) -> bytes:
        return b""


def iter_a2fb(data: bytes | memoryview) -> Iterator[tuple[int, int, int, npt.NDArray[np.float32]]]:
    """Split concatenated A2FB frames: (frame_index, timestamp_current, timestamp_next, weights)."""
    view = memoryview(data)
    position = 0
    while position < len(view):
        if len(view) - position < FRAME_HEADER_BYTES:
            raise FrameFormatError(f"A2FB stream ends inside a frame header at byte {position}")
        count = int.from_bytes(view[position + 8 : position + 12], "little")
        end = position + FRAME_HEADER_BYTES + 4 * count
        frame = unpack_frame(bytes(view[position:end]))
        yield frame.frame_index, frame.timestamp_current, frame.timestamp_next, frame.weights
        position = end


def parse_a2fb(data: bytes, channels: Sequence[str]) -> Animation:
    """Read concatenated A2FB frames; the names come from elsewhere (e.g. `channels=`)."""
    frames = list(iter_a2fb(data))
    width = len(channels)
    return Animation(
        tuple(channels),
        np.array([f[0] for f in frames], dtype=np.int64),
        np.array([f[1] for f in frames], dtype=np.int64),
        np.array([f[3] for f in frames], dtype=np.float32).reshape(len(frames), width),
    )


def _animation(
    channels: tuple[str, ...],
    indices: list[npt.NDArray[np.int64]],
    stamps: list[npt.NDArray[np.int64]],
    weights: list[npt.NDArray[np.float32]],
) -> Animation:
    if not weights:
        empty = np.zeros(0, np.int64)
        return Animation(channels, empty, empty, np.zeros((0, len(channels)), np.float32))
    return Animation(
        channels, np.concatenate(indices), np.concatenate(stamps), np.concatenate(weights)
    )
