"""One bidirectional gRPC call over a minimal HTTP/2 client of its own, for load generation.

The load generator shares the cores it measures. grpcio's asyncio client costs about 85 us of
CPU per message pair on the 2-core development machine (every read and write is an operation
that completes on grpcio's polling thread and wakes the event loop), twice what the WebSocket
driver's client costs; this one parses HTTP/2 frames in `data_received` and writes a frame
with one `transport.write`, at about 40 us. It speaks what a call needs and nothing more:
plain TCP (the bench dials loopback), one stream per connection (as `OWN_CONNECTION` gives
grpcio's client), no compression, HPACK through the `hpack` package.

HTTP/2 flow control: the server's windows are honoured (large writes wait for its
WINDOW_UPDATE); ours are opened to the maximum at the start and topped up after each GiB,
so the server never waits on this client for room.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast
from urllib.parse import unquote

import grpc
import hpack
from google.protobuf.message import Message

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 3, 4, 6, 7, 8, 9,
)  # fmt: skip
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x2, 0x4, 0x5
DEFAULT_WINDOW, DEFAULT_MAX_FRAME = 65_535, 16_384
MAX_WINDOW = 2**31 - 1
TOP_UP = 2**30  # received bytes after which our windows are opened again
STREAM = 1  # the connection's one stream
STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
# A stream reset without a grpc-status: gRPC's mapping of HTTP/2 error codes.
RESET_STATUS = {
    7: grpc.StatusCode.UNAVAILABLE,
    8: grpc.StatusCode.CANCELLED,
    11: grpc.StatusCode.RESOURCE_EXHAUSTED,
    12: grpc.StatusCode.PERMISSION_DENIED,
}

Response = TypeVar("Response", bound=Message)


class CallEnded(Exception):
    """The call ended with a status other than OK (or its connection was lost: UNAVAILABLE)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload
    )


def _unpadded(flags: int, payload: memoryview) -> memoryview:
    return payload[1 : len(payload) - payload[0]] if flags & PADDED else payload


class LeanCall(asyncio.Protocol, Generic[Response]):
    """The call: `write` requests, `read` responses until `grpc.aio.EOF`; a status other than
    OK is raised by `read` (and by `write` once the call has ended) as `CallEnded`."""

    def __init__(
        self, headers: Sequence[tuple[str, str]], parse: Callable[[bytes], Response]
    ) -> None:
        self._headers = headers
        self._parse = parse
        self._transport: asyncio.Transport | None = None
        self._inbox = bytearray()
        self._body = bytearray()  # DATA payloads not yet a whole gRPC message
        self._responses: deque[Response] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._hpack = hpack.Decoder()
        self._block = bytearray()  # a header block until END_HEADERS
        self._block_ends_stream = False
        self._stream_window = self._initial_window = DEFAULT_WINDOW
        self._connection_window = DEFAULT_WINDOW
        self._max_frame = DEFAULT_MAX_FRAME
        self._received = 0
        self._status: tuple[int, str] | None = None  # set when the call ends (`_end`)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        settings = struct.pack(
            ">HIHI", SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW
        )
        self._transport.write(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))
            + frame(HEADERS, END_HEADERS, STREAM, hpack.Encoder().encode(self._headers))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._status is None:
            lost = f"connection lost: {exc or 'closed by the server'}"
            self._end((grpc.StatusCode.UNAVAILABLE.value[0], lost))

    def data_received(self, data: bytes) -> None:
        inbox = self._inbox
        inbox += data
        at, size = 0, len(inbox)
        view = memoryview(inbox)
        try:
            while size - at >= 9:
                end = at + 9 + int.from_bytes(view[at : at + 3], "big")
                if end > size:
                    break
                stream = int.from_bytes(view[at + 5 : at + 9], "big") & 0x7FFF_FFFF
                self._frame(view[at + 3], view[at + 4], stream, view[at + 9 : end])
                at = end
        finally:
            view.release()
        del inbox[:at]

    # -- frames -------------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream: int, payload: memoryview) -> None:
        if kind == DATA:
            self._data(flags, payload)
        elif kind in (HEADERS, CONTINUATION):
            self._header_block(kind, flags, payload)
        elif kind == SETTINGS and not flags & ACK:
            self._settings(payload)
        elif kind == PING and not flags & ACK:
            self._write(frame(PING, ACK, 0, bytes(payload)))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload, "big") & 0x7FFF_FFFF
            if stream:
                self._stream_window += increment
            else:
                self._connection_window += increment
            self._writable.set()
        elif kind == RST_STREAM:
            error = int.from_bytes(payload, "big")
            code = RESET_STATUS.get(error, grpc.StatusCode.INTERNAL)
            self._end((code.value[0], f"stream reset (HTTP/2 error {error})"))
        elif kind == GOAWAY and int.from_bytes(payload[:4], "big") & 0x7FFF_FFFF < STREAM:
            # Not processed: a stream up to the last one named goes on to its own end.
            self._end((grpc.StatusCode.UNAVAILABLE.value[0], "server went away"))

    def _data(self, flags: int, payload: memoryview) -> None:
        self._received += len(payload)
        if self._received >= TOP_UP:
            top_up = self._received.to_bytes(4, "big")
            self._write(
                frame(WINDOW_UPDATE, 0, 0, top_up) + frame(WINDOW_UPDATE, 0, STREAM, top_up)
            )
            self._received = 0
        body = self._body
        body += _unpadded(flags, payload)
        at, size = 0, len(body)
        while size - at >= 5 and size - at - 5 >= (
            n := int.from_bytes(body[at + 1 : at + 5], "big")
        ):
            self._responses.append(self._parse(bytes(body[at + 5 : at + 5 + n])))
            at += 5 + n
        if at:
            del body[:at]
            self._readable.set()
        if flags & END_STREAM:
            self._end(None)

    def _header_block(self, kind: int, flags: int, payload: memoryview) -> None:
        if kind == HEADERS:
            payload = _unpadded(flags, payload)
            if flags & PRIORITY:
                payload = payload[5:]
            self._block_ends_stream = bool(flags & END_STREAM)
        self._block += payload
        if not flags & END_HEADERS:
            return
        fields = dict(self._hpack.decode(bytes(self._block)))
        self._block.clear()
        if self._block_ends_stream:
            status = fields.get("grpc-status")
            self._end(
                None if status is None else (int(status), unquote(fields.get("grpc-message", "")))
            )

    def _settings(self, payload: memoryview) -> None:
        for at in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, at)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                self._stream_window += value - self._initial_window
                self._initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self._max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self._writable.set()

    def _end(self, status: tuple[int, str] | None) -> None:
        """The call's end with its status (None: the stream ended without one); the first
        end counts."""
        if self._status is not None:
            return
        self._status = status or (
            grpc.StatusCode.INTERNAL.value[0],
            "the call ended without a status",
        )
        self._readable.set()
        self._writable.set()
        self.cancel()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _failure(self) -> CallEnded | None:
        """The ended call's status unless it is OK."""
        assert self._status is not None
        code, details = self._status
        if code == 0:
            return None
        return CallEnded(STATUS_CODES.get(code, grpc.StatusCode.UNKNOWN), details)

    # -- the call -----------------------------------------------------------------------------

    async def read(self) -> Response | object:
        """The next response, or `grpc.aio.EOF` after the last of a call that ended OK."""
        while not self._responses:
            if self._status is not None:
                if failure := self._failure():
                    raise failure
                return grpc.aio.EOF
            self._readable.clear()
            await self._readable.wait()
        return self._responses.popleft()

    async def write(self, request: Message) -> None:
        message = request.SerializeToString()
        data = memoryview(b"\0" + len(message).to_bytes(4, "big") + message)
        while data:
            if self._status is not None:
                raise self._failure() or CallEnded(grpc.StatusCode.INTERNAL, "the call has ended")
            room = min(len(data), self._stream_window, self._connection_window, self._max_frame)
            if room <= 0:
                self._writable.clear()
                await self._writable.wait()
                continue
            self._write(frame(DATA, 0, STREAM, bytes(data[:room])))
            self._stream_window -= room
            self._connection_window -= room
            data = data[room:]

    async def done_writing(self) -> None:
        if self._status is None:
            self._write(frame(DATA, END_STREAM, STREAM))

    def cancel(self) -> None:
        """Closes the connection (which cancels the call on the server, as grpcio's does)."""
        if self._transport is not None:
            self._transport.close()


async def open_call(
    target: str,
    path: str,
    metadata: Sequence[tuple[str, str]],
    parse: Callable[[bytes], Response],
) -> LeanCall[Response]:
    """A call to `path` (`/package.Service/Method`) at `target` (`host:port`)."""
    host, _, port = target.rpartition(":")
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", target),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *metadata,
    ]
    loop = asyncio.get_running_loop()
    _, call = await loop.create_connection(
        lambda: LeanCall(headers, parse), host.strip("[]"), int(port)
    )
    return call
