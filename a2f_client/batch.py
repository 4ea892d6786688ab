"""HTTP client for the batch API `POST /v1/animate` (async core, sync wrappers).

`animate()` returns the whole parsed `Animation`; `animate_to()` streams the response into a
file as it arrives (bounded memory for long audio). Both accept a path, bytes or an open
binary file, `StartSession` fields as keywords (fps, emotions, postprocess, channels, ...),
and report progress as a fraction of the frames the server announced.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import msgspec

from a2f_client._audio import require_samples
from a2f_client.credentials import Credentials, has_ticket, unreachable
from a2f_client.errors import (
    AUTH_HTTP_STATUSES,
    ServerError,
    ServerUnavailableError,
    server_error,
)
from a2f_client.urls import http_url, with_path
from a2f_protocol import DEFAULT_PORT
from a2f_protocol.export_formats import (
    Animation,
    ExportFormat,
    parse_a2fb,
    parse_jsonl,
    parse_live_link_csv,
)
from a2f_protocol.frames import FRAME_HEADER_BYTES
from a2f_protocol.messages import StartSession

DEFAULT_HTTP_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
ANIMATE_PATH = "/v1/animate"
UPLOAD_BLOCK = 1 << 20
Progress = Callable[[float], None]
"""Called with the fraction (0..1) of the announced frames received so far."""


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What the server announces in the response headers before the first frame."""

    channels: tuple[str, ...]
    fps: Fraction
    frame_count: int
    duration_s: float


def query_params(params: StartSession | None = None, **fields: Any) -> dict[str, str]:
    """`StartSession` fields as the batch API's `params=` JSON query value."""
    merged = msgspec.to_builtins(params) if params is not None else {}
    merged |= fields
    merged.pop("type", None)
    merged = {k: v for k, v in merged.items() if v is not None}
    # Validate here so a typo fails before the upload, with msgspec's message.
    msgspec.convert(merged, StartSession)
    return {"params": msgspec.json.encode(merged).decode()} if merged else {}


FORMAT_SUFFIXES: dict[str, ExportFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".a2fb": "a2fb",
    ".bin": "a2fb",
}


def format_for_path(path: str | os.PathLike[str]) -> ExportFormat:
    """The export format a file name asks for; `ValueError` for a suffix that names none."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMAT_SUFFIXES:
        known = ", ".join(FORMAT_SUFFIXES)
        raise ValueError(f"cannot tell the format of {str(path)!r} from its suffix: use {known}")
    return FORMAT_SUFFIXES[suffix]


@dataclass(frozen=True, slots=True)
class _Request:
    url: str
    credentials: Credentials
    fmt: ExportFormat
    query: dict[str, str]
    timeout: float | None


@asynccontextmanager
async def _post(
    source: str | os.PathLike[str] | bytes | BinaryIO, request: _Request
) -> AsyncIterator[tuple[ResponseInfo, httpx.Response]]:
    require_samples(source)
    if has_ticket(request.url):
        raise ValueError(
            "a ticket opens one WebSocket only; the batch API needs an API key "
            "(api_key= or $A2F_API_KEY)"
        )
    endpoint = with_path(http_url(request.url), ANIMATE_PATH)
    query = {**request.query, "format": request.fmt}
    verify = request.credentials.ssl_context() or True
    timeout = httpx.Timeout(request.timeout, connect=10.0)
    async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
        try:
            async with client.stream(
                "POST",
                endpoint,
                params=query,
                content=_body(source),
                headers={
                    "content-type": "application/octet-stream",
                    **request.credentials.headers(),
                },
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _refused(response)
                yield _info(response), response
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnavailableError(unreachable(endpoint, exc)) from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ValueError(f"bad URL {endpoint!r}: {exc}") from exc
        except httpx.RemoteProtocolError as exc:
            raise ServerError(f"response cut off: {exc}", "incomplete") from exc
        except httpx.TransportError as exc:  # e.g. a port that speaks gRPC, not HTTP/1.1
            reason = str(exc) or type(exc).__name__
            raise ServerError(f"no HTTP answer from {endpoint}: {reason}", "protocol") from exc


def _refused(response: httpx.Response) -> ServerError:
    status = response.status_code
    retry_after = response.headers.get("retry-after")
    return server_error(
        _error_text(response),
        AUTH_HTTP_STATUSES.get(status, str(status)),
        float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


async def _body(source: str | os.PathLike[str] | bytes | BinaryIO) -> AsyncIterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            while block := await asyncio.to_thread(handle.read, UPLOAD_BLOCK):
                yield block
        return
    source.seek(0)  # the empty-file check read its header
    while block := await asyncio.to_thread(source.read, UPLOAD_BLOCK):
        yield block


def _error_text(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return (
        f"HTTP {response.status_code}: {detail or response.text.strip() or response.reason_phrase}"
    )


def _info(response: httpx.Response) -> ResponseInfo:
    headers = response.headers
    channels = tuple(filter(None, headers.get("x-a2f-channels", "").split(",")))
    return ResponseInfo(
        channels=channels,
        fps=Fraction(headers.get("x-a2f-frame-rate", "60")),
        frame_count=int(headers.get("x-a2f-frame-count", "0")),
        duration_s=float(headers.get("x-a2f-duration", "0")),
    )


class _FrameCounter:
    """Counts complete frames in a response as its bytes arrive (for the progress callback)."""

    def __init__(self, fmt: ExportFormat, info: ResponseInfo) -> None:
        self.fmt = fmt
        self.frame_bytes = FRAME_HEADER_BYTES + 4 * len(info.channels)
        self.total = info.frame_count
        self.received = 0
        self.newlines = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> float:
        self.received += len(chunk)
        if self.fmt == "a2fb":
            frames = self.received // self.frame_bytes
        elif self.fmt == "csv":
            self.newlines += chunk.count(b"\n")
            frames = max(self.newlines - 1, 0)
        else:  # one `frames` line holds many frames: count its weight rows
            lines = (self._tail + chunk).split(b"\n")
            self._tail = lines.pop()
            self.newlines += sum(line.count(b"],[") + 1 for line in lines if b'"frames"' in line)
            frames = self.newlines
        return min(frames / self.total, 1.0) if self.total else 0.0


async def animate_to(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    out: str | os.PathLike[str] | BinaryIO,
    url: str = DEFAULT_HTTP_URL,
    *,
    format: ExportFormat | None = None,
    params: StartSession | None = None,
    on_progress: Progress | None = None,
    timeout: float | None = None,
    api_key: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    **fields: Any,
) -> ResponseInfo:
    """Stream the response into `out` (a path picks the format by suffix unless `format=`).
    `api_key` (default `$A2F_API_KEY`), `ca_file`, `insecure`: as for `a2f_client.connect`."""
    path = Path(out) if isinstance(out, str | os.PathLike) else None
    fmt = format or (format_for_path(path) if path is not None else "jsonl")
    credentials = Credentials.resolve(api_key, None, ca_file, insecure)
    request = _Request(url, credentials, fmt, query_params(params, **fields), timeout)
    async with _post(source, request) as (info, resp):
        counter = _FrameCounter(fmt, info)
        with _writable(out) as handle:
            async for chunk in resp.aiter_bytes():
                handle.write(chunk)
                if on_progress is not None:
                    on_progress(counter.feed(chunk))
    if fmt == "jsonl" and path is not None:
        _check_jsonl_file(path)
    return info


def _writable(out: str | os.PathLike[str] | BinaryIO) -> AbstractContextManager[BinaryIO]:
    # A file we open is ours to close; the caller's open file stays open.
    if isinstance(out, str | os.PathLike):
        return open(out, "wb")
    return nullcontext(out)


def _check_jsonl_file(path: Path) -> None:
    # The last line says whether the server finished: `end`, or an `error` after the 200.
    with path.open("rb") as file:
        file.seek(max(path.stat().st_size - 4096, 0))
        last = file.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if not last.startswith(b'{"type":"end"'):
        parse_jsonl([last])  # raises StreamError with the server's message


async def animate(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    url: str = DEFAULT_HTTP_URL,
    *,
    format: ExportFormat = "jsonl",
    params: StartSession | None = None,
    on_progress: Progress | None = None,
    timeout: float | None = None,
    api_key: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    **fields: Any,
) -> Animation:
    """Animate a whole file and return the parsed frames (any response format).
    `api_key` (default `$A2F_API_KEY`), `ca_file`, `insecure`: as for `a2f_client.connect`."""
    credentials = Credentials.resolve(api_key, None, ca_file, insecure)
    request = _Request(url, credentials, format, query_params(params, **fields), timeout)
    async with _post(source, request) as (info, resp):
        counter = _FrameCounter(format, info)
        parts: list[bytes] = []
        async for chunk in resp.aiter_bytes():
            parts.append(chunk)
            if on_progress is not None:
                on_progress(counter.feed(chunk))
    data = b"".join(parts)
    if format == "jsonl":
        return parse_jsonl(data.splitlines())
    if format == "csv":
        return parse_live_link_csv(data.decode(), info.channels, info.fps)
    return parse_a2fb(data, info.channels)


def animate_sync(source: str | os.PathLike[str] | bytes | BinaryIO, **options: Any) -> Animation:
    """Blocking `animate` (same arguments)."""
    return asyncio.run(animate(source, **options))


def animate_to_sync(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    out: str | os.PathLike[str] | BinaryIO,
    **options: Any,
) -> ResponseInfo:
    """Blocking `animate_to` (same arguments)."""
    return asyncio.run(animate_to(source, out, **options))
