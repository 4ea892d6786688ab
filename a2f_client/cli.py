"""`a2f`: animate audio files through the gateway, or run the whole service.

    a2f animate speech.wav --out speech.csv                       # batch API (HTTP)
    a2f stream speech.wav --realtime --out frames.jsonl           # WebSocket session
    a2f stream speech.wav --protocol ace --out frames.csv         # NVIDIA's gRPC API (ACE)
    a2f serve --port 8765                                          # Triton + gateway (make serve)

The output format follows the file suffix (.csv for Live Link Face, .jsonl, .a2fb) or --format.
--url takes ws://, wss://, http://, https:// or host:port for either command (for
--protocol ace: host:port of the gRPC API, grpcs:// for TLS). A gateway with tenants wants a
key: --api-key or $A2F_API_KEY; one with its own TLS certificate may need --ca-file. The output file appears when it is complete (a failure leaves none).
Errors are one line on stderr and a non-zero exit status (2 for bad flags).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TypeVar

import msgspec
import numpy as np

from a2f_client._audio import probe_file
from a2f_client.batch import DEFAULT_HTTP_URL, animate_to, format_for_path
from a2f_client.credentials import API_KEY_ENV, CA_FILE_ENV
from a2f_client.errors import A2FError, AuthError
from a2f_client.progress import ProgressBar
from a2f_client.streaming import DEFAULT_WS_URL, start_request, stream
from a2f_client.urls import DEFAULT_ACE_URL
from a2f_protocol import ACE_FPS
from a2f_protocol.audio_files import AudioFileError
from a2f_protocol.clock import MODEL_SAMPLE_RATE
from a2f_protocol.export_formats import (
    Encoder,
    ExportFormat,
    FrameBlock,
    StreamError,
    make_encoder,
)
from a2f_protocol.frames import BlendshapeFrame
from a2f_protocol.messages import UNIT, SessionStarted
from a2f_protocol.params import parse_channels, parse_emotions, parse_frame_rate

SERVE_MODULE = "a2f_triton.serve"  # installed with the `server` extra
T = TypeVar("T")
N = TypeVar("N", int, float)
WRITE_EVERY_FRAMES = 120  # stream output is encoded in blocks of this many frames
# (default URL, the variable that overrides it) by command, or by protocol for `stream`.
URLS = {
    "animate": (DEFAULT_HTTP_URL, "A2F_HTTP_URL"),
    "websocket": (DEFAULT_WS_URL, "A2F_WS_URL"),
    "ace": (DEFAULT_ACE_URL, "A2F_ACE_URL"),
}
# What the ACE API's stream header can carry of the session parameters: emotions, their
# strength, and per-channel multipliers and offsets.
ACE_FIELDS = ("emotions", "emotion_strength", "postprocess")
ACE_POSTPROCESS = ("multipliers", "offsets")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    # argparse prints an ArgumentTypeError's own text, but only "invalid value" for others.
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _positive(kind: Callable[[str], N]) -> Callable[[str], N]:
    def convert(text: str) -> N:
        wrong = f"must be a positive number, got {text!r}"
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(wrong) from None
        if not value > 0:  # NaN too
            raise ValueError(wrong)
        return value

    return convert


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


def _emotion_strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number, got {text!r}") from None
    UNIT.check("emotion_strength", value)
    return value


def _connection_arguments(parser: argparse.ArgumentParser, schemes: str, *urls: str) -> None:
    group = parser.add_argument_group("the gateway")
    defaults = "; ".join(f"{URLS[name][0]}, or ${URLS[name][1]}" for name in urls)
    group.add_argument("--url", help=f"{schemes} or host:port (default {defaults})")
    group.add_argument(
        "--api-key",
        help=f"key of a gateway with tenants (default ${API_KEY_ENV}; the variable keeps it "
        "out of the process list)",
    )
    trust = group.add_mutually_exclusive_group()
    trust.add_argument(
        "--ca-file",
        type=Path,
        help=f"PEM certificate(s) to trust for wss://, https:// and grpcs://, e.g. a self-signed one "
        f"(default ${CA_FILE_ENV}, else the system's)",
    )
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help=".csv, .jsonl or .a2fb")
    parser.add_argument("--format", choices=("jsonl", "csv", "a2fb"), help="override the suffix")


def _session_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("session parameters (as in StartSession)")
    group.add_argument(
        "--emotions", type=_checked(parse_emotions), help="joy:0.8,anger:0.2 or JSON"
    )
    group.add_argument("--emotion-strength", type=_checked(_emotion_strength), help="0..1")
    group.add_argument(
        "--channels",
        type=_checked(parse_channels),
        help="arkit (default), visemes, all, or name,name,...",
    )
    group.add_argument("--no-blinks", dest="blinks", action="store_false", default=None)
    group.add_argument("--seed", type=int, help="blink generator seed")
    group.add_argument(
        "--postprocess",
        type=_checked(_json_object),
        help="JSON: multipliers, offsets, clamp, threshold, smoothing",
    )
    group.add_argument(
        "--params", type=_checked(_json_object), help="JSON object of StartSession fields"
    )


def _progress_arguments(parser: argparse.ArgumentParser) -> None:
    # Default: a bar when stderr is a terminal.
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--progress", dest="progress", action="store_true", default=None)
    choice.add_argument("--no-progress", dest="progress", action="store_false")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="a2f", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    animate = commands.add_parser("animate", help="animate a file with the batch API (HTTP)")
    animate.add_argument("file", type=Path)
    _connection_arguments(animate, "http://, https://", "animate")
    _output_arguments(animate)
    animate.add_argument(
        "--fps", type=_checked(_positive(int)), help="any rate (default: the server's)"
    )
    animate.add_argument(
        "--frame-rate", type=_checked(parse_frame_rate), help="exact, like 30000/1001"
    )
    _progress_arguments(animate)
    _session_arguments(animate)

    streaming = commands.add_parser(
        "stream", help="stream a file through a WebSocket session or NVIDIA's gRPC API"
    )
    streaming.add_argument("file", type=Path)
    streaming.add_argument(
        "--protocol",
        choices=("websocket", "ace"),
        default="websocket",
        help="ace: NVIDIA's Audio2Face-3D gRPC API (ProcessAudioStream), as the NIM serves it; "
        "needs `pip install 'open-a2f[ace]'` and NVIDIA's packages (see the README)",
    )
    _connection_arguments(streaming, "ws://, wss:// (ace: grpc://, grpcs://)", "websocket", "ace")
    _output_arguments(streaming)
    streaming.add_argument("--realtime", action="store_true", help="send audio at its own pace")
    streaming.add_argument(
        "--chunk-ms", type=_checked(_positive(float)), default=100.0, help="PushAudio size"
    )
    # A session streams at the server's one rate; other rates are the batch API's job.
    streaming.add_argument(
        "--fps",
        type=_checked(_positive(int)),
        help="check that the server streams at this rate (ace: the gateway's --grpc_fps, "
        f"default {ACE_FPS})",
    )
    _progress_arguments(streaming)
    _session_arguments(streaming)

    commands.add_parser(
        "serve",
        help="run Triton + the gateway (flags go to python -m a2f_triton.serve)",
        add_help=False,
    )
    return parser


def _session_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = dict(args.params or {})
    for name in ("emotions", "emotion_strength", "channels", "blinks", "seed", "postprocess"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.command == "animate":
        if args.fps is not None:
            fields["fps"] = args.fps
        if args.frame_rate is not None:
            rate = args.frame_rate
            fields["frame_rate"] = {"numerator": rate.numerator, "denominator": rate.denominator}
    return fields


def _credentials(args: argparse.Namespace) -> dict[str, Any]:
    return {"api_key": args.api_key, "ca_file": args.ca_file, "insecure": args.insecure}


@contextmanager
def _complete_file(path: Path) -> Iterator[Path]:
    """A scratch path beside `path` that becomes `path` once the block succeeds: a failure
    leaves no partial output behind, nor a truncated earlier file."""
    scratch = path.with_name(f".{path.name}.part")
    try:
        yield scratch
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    os.replace(scratch, path)


def _show_progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else args.progress


async def _animate(args: argparse.Namespace) -> None:
    fmt: ExportFormat = args.format or format_for_path(args.out)
    bar = ProgressBar(probe_file(args.file).duration_s, enabled=_show_progress(args))
    with _complete_file(args.out) as scratch:
        info = await animate_to(
            args.file, scratch, args.url, format=fmt, on_progress=bar.update,
            **_credentials(args), **_session_fields(args),
        )  # fmt: skip
    bar.close()
    print(f"{args.out}: {info.frame_count} frames at {info.fps} fps", file=sys.stderr)


class _FrameWriter:
    """Encodes streamed frames into one file, block by block, across the sessions of a stream
    (a reconnect goes on where the last session stopped: the header is written once). The
    file is created when the first session has started, so a refused one leaves nothing."""

    def __init__(self, path: Path, fmt: ExportFormat, fps: int | None) -> None:
        self.path = path
        self.fmt = fmt
        self.fps = fps
        self.file: BinaryIO | None = None
        self.encoder: Encoder | None = None
        self.pending: list[BlendshapeFrame] = []
        self.count = 0
        self.sessions: list[SessionStarted] = []

    @property
    def reconnects(self) -> int:
        return max(len(self.sessions) - 1, 0)

    def start(self, started: SessionStarted) -> None:
        self.sessions.append(started)
        first = self.sessions[0]
        if started is not first:
            # Another gateway may have taken over: its frames must fit the same columns.
            if (started.channels, started.frame_rate) != (first.channels, first.frame_rate):
                raise A2FError(
                    "the stream reconnected to a gateway with other channels or frame rate; "
                    "the output would mix them"
                )
            return
        fps = started.frame_rate.fraction
        if self.fps is not None and fps != self.fps:
            raise A2FError(
                f"the server streams at {fps} fps, not {self.fps}: leave out --fps, or use "
                f"`a2f animate --fps {self.fps}` (the batch API computes any rate)"
            )
        offset = 0  # ARKit channels are the `arkit` groups of the session's channel list
        arkit: list[str] = []
        for group in started.channel_groups:
            if group.name == "arkit":
                arkit += started.channels[offset : offset + group.count]
            offset += group.count
        self.begin(started.channels, arkit, fps)

    def begin(self, channels: list[str], arkit: list[str], fps: Fraction) -> None:
        """Open the file for frames of `channels` (`arkit` among them) at `fps`."""
        self.encoder = make_encoder(self.fmt, channels, arkit, fps)
        self.file = self.path.open("wb")
        self.file.write(self.encoder.header())

    def add(self, frame: BlendshapeFrame) -> None:
        self.pending.append(frame)
        if len(self.pending) >= WRITE_EVERY_FRAMES:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.encoder is None or self.file is None:
            return
        frames = self.pending
        stamps = [f.timestamp_current for f in frames] + [frames[-1].timestamp_next]
        block = FrameBlock(
            frames[0].frame_index,
            np.array(stamps, dtype=np.int64),
            np.stack([f.weights for f in frames]),
        )
        self.file.write(self.encoder.block(block))
        self.count += len(frames)
        self.pending = []

    def close(self) -> None:
        if self.file is None or self.encoder is None:
            return
        self.flush()
        self.file.write(self.encoder.trailer(self.count))
        self.file.close()

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()


def _ace_stream(args: argparse.Namespace, writer: _FrameWriter) -> AsyncIterator[BlendshapeFrame]:
    """The frames of NVIDIA's gRPC API, with the stream's parameters as its header's."""
    try:
        from a2f_client import ace  # grpc and NVIDIA's packages: the `ace` extra
    except ModuleNotFoundError as exc:
        raise A2FError(str(exc)) from None
    fields = _session_fields(args)
    postprocess = fields.pop("postprocess", {})

    def warn(text: str) -> None:
        print(f"a2f: warning: {text}", file=sys.stderr)

    return ace.stream(
        args.file, args.url, realtime=args.realtime, chunk_seconds=args.chunk_ms / 1000,
        fps=args.fps or ACE_FPS, on_warning=warn,
        on_started=lambda started: writer.begin(started.channels, started.channels, started.fps),
        **postprocess, **_credentials(args), **fields,
    )  # fmt: skip


async def _stream(args: argparse.Namespace) -> None:
    fmt = args.format or format_for_path(args.out)
    duration = probe_file(args.file).duration_s
    bar = ProgressBar(duration, enabled=_show_progress(args))
    with _complete_file(args.out) as scratch:
        ace = args.protocol == "ace"
        writer = _FrameWriter(scratch, fmt, None if ace else args.fps)
        frames = (
            _ace_stream(args, writer)
            if ace
            else stream(
                args.file, args.url, realtime=args.realtime,
                chunk_seconds=args.chunk_ms / 1000, on_started=writer.start,
                **_credentials(args), **_session_fields(args),
            )
        )  # fmt: skip
        try:
            async for frame in frames:
                writer.add(frame)
                bar.update(frame.timestamp_next / MODEL_SAMPLE_RATE / duration)
        except BaseException:
            writer.discard()
            raise
        writer.close()
    bar.close()
    reconnects = writer.reconnects
    after = f" ({reconnects} reconnect{'s' * (reconnects != 1)})" if reconnects else ""
    print(f"{args.out}: {writer.count} frames{after}", file=sys.stderr)


def _serve(flags: Sequence[str]) -> int:
    if importlib.util.find_spec(SERVE_MODULE.partition(".")[0]) is None:
        print("a2f: error: the server is not installed; `pip install 'open-a2f[server]'`",
              file=sys.stderr)  # fmt: skip
        return 2
    # Replace this process, so Ctrl-C and SIGTERM reach the runner directly.
    os.execv(sys.executable, [sys.executable, "-m", SERVE_MODULE, *flags])
    return 0  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    protocol = getattr(args, "protocol", "websocket")
    default_url, url_env = URLS[args.command if args.command == "animate" else protocol]
    args.url = args.url or os.environ.get(url_env, default_url)
    try:  # every session parameter checked as the server will, before any audio is read
        fields = _session_fields(args)
        start_request(None, **fields)
    except (msgspec.ValidationError, ValueError) as exc:
        parser.error(f"bad session parameters: {exc}")
    if protocol == "ace":
        unsupported = [name for name in fields if name not in ACE_FIELDS]
        unsupported += [
            f"postprocess.{k}" for k in fields.get("postprocess", {}) if k not in ACE_POSTPROCESS
        ]
        if unsupported:
            parser.error(
                f"--protocol ace: the NIM's stream header has no {', '.join(unsupported)} "
                "(it takes --emotions, --emotion-strength and --postprocess multipliers/offsets)"
            )
    try:
        asyncio.run(_animate(args) if args.command == "animate" else _stream(args))
    except (A2FError, StreamError, AudioFileError, OSError, ValueError) as exc:
        keyless = isinstance(exc, AuthError) and not (args.api_key or os.environ.get(API_KEY_ENV))
        hint = f" (give --api-key or set {API_KEY_ENV})" if keyless else ""
        print(f"a2f: error: {exc}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
