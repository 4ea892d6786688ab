"""Hostile and broken clients against a real gateway on real Triton: each defect the fuzzing
run found, reproduced, now answered with the documented Error or close and nobody else hurt.

A dedicated gateway with short limits (idle, handshake, send timeouts), its log in a known
file; the memory checks run one gateway in this process, with the garbage collector off.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import socket
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
import uvicorn
import websockets
from a2f_triton.gateway_process import GatewayProcess, run_gateway
from a2f_triton.launch import EmbeddedTriton
from a2f_triton.processes import free_port
from hostile import masked_frame
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.asyncio.client import ClientConnection, connect

import gateway.drivers.core_driver
from a2f_protocol.frames import pack_push_audio, unpack_frame
from gateway.drivers.transport_guards import GuardedWebSocket
from gateway.processes.server import HEAP_TRIM_THRESHOLD, uvicorn_config
from gateway.session.connection import Connection
from gateway.settings import Settings
from gateway.web.app import create_app

START = json.dumps({"type": "StartSession", "blinks": False})
LIMITS = ("--idle_timeout_s", "2", "--handshake_timeout_s", "2", "--send_timeout_s", "2",
          "--max_queued_frames", "1200", "--send_buffer_bytes", "16384")  # fmt: skip
WAIT_S = 60.0
ROUNDS = 4  # bounded, generous: a loaded 2-core host may starve the gateway a while


@pytest.fixture(scope="module")
def hardened_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hardened") / "gateway.log"


@pytest.fixture(scope="module")
def hardened(triton: EmbeddedTriton, hardened_log: Path) -> Iterator[GatewayProcess]:
    """A gateway with short limits, logging to `hardened_log`."""
    with run_gateway(triton.grpc_url, *LIMITS, log=hardened_log) as server:
        yield server


@pytest.fixture(scope="module")
def speech(fixtures_dir: Path) -> np.ndarray:
    pcm, _ = soundfile.read(fixtures_dir / "speech_16k.wav", dtype="int16")
    return pcm


def port_of(server: GatewayProcess) -> int:
    return int(server.http.rsplit(":", 1)[1])


async def reply(ws: ClientConnection, message: str | bytes) -> dict[str, Any]:
    """The next text message after sending `message` (frames in between are skipped)."""
    await ws.send(message)
    while isinstance(answer := await asyncio.wait_for(ws.recv(), WAIT_S), bytes):
        pass
    return json.loads(answer)


def metric(server: GatewayProcess, kind: str) -> float:
    with urllib.request.urlopen(server.http + "/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f'a2f_errors_total{{kind="{kind}"}}'):
                return float(line.split()[-1])
    return 0.0


# -- validation at the boundary ----------------------------------------------------------------

DEEP = '{"type":"EndSession","x":' + "[" * 1000 + "]" * 1000 + "}"


def test_deep_json_is_an_error_and_the_session_goes_on(hardened: GatewayProcess) -> None:
    async def run() -> None:
        async with connect(hardened.url) as ws:
            assert (await reply(ws, START))["type"] == "SessionStarted"
            error = await reply(ws, DEEP)
            assert error["code"] == "invalid_message" and "nested deeper" in error["message"]
            await ws.send(pack_push_audio(0, np.zeros(16_000, np.int16)))
            frame = await asyncio.wait_for(ws.recv(), 30)
            assert isinstance(frame, bytes) and unpack_frame(frame).frame_index == 0
            assert (await reply(ws, DEEP))["code"] == "invalid_message"

    asyncio.run(run())


def test_out_of_range_postprocess_is_refused_at_start_session(hardened: GatewayProcess) -> None:
    async def run() -> None:
        async with connect(hardened.url) as ws:
            for post, text in (
                (
                    {"multipliers": {"jawOpen": 1e39}},
                    "multipliers.jawOpen must lie in [-1000, 1000]",
                ),
                ({"offsets": {"jawOpen": -1e39}}, "offsets.jawOpen must lie in [-1000, 1000]"),
                ({"clamp": [0, 3.5e38]}, "clamp must lie in [-1000, 1000]"),
            ):
                message = json.dumps({"type": "StartSession", "postprocess": post})
                error = await reply(ws, message)
                assert error["type"] == "Error" and error["code"] == "invalid_message"
                assert text in error["message"]
            assert (await reply(ws, START))["type"] == "SessionStarted"

    asyncio.run(run())


@pytest.mark.parametrize(
    ("field", "value"),
    [("params", "[" * 1000), ("postprocess", "[" * 1000), ("emotions", "{" * 1000),
     ("params", '{"emotion_strength": 1e39}'), ("postprocess", '{"threshold": -1}'),
     ("emotion_strength", "nan")],
)  # fmt: skip
def test_batch_api_deep_or_out_of_range_fields_are_422(
    hardened: GatewayProcess, speech: np.ndarray, field: str, value: str
) -> None:
    query = urllib.parse.urlencode({field: value})
    body = io.BytesIO()
    soundfile.write(body, speech[:1600], 16_000, format="WAV", subtype="PCM_16")
    response = httpx.post(
        f"{hardened.http}/v1/animate?{query}", content=body.getvalue(), timeout=60
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "nested deeper" in detail or "must lie in" in detail


# -- timeouts ----------------------------------------------------------------------------------


def test_a_trickled_handshake_is_closed(hardened: GatewayProcess) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(hardened)), timeout=WAIT_S) as sock:
        try:
            for byte in request:  # one byte every 0.25 s: the head would take 18 s
                sock.sendall(bytes([byte]))
                time.sleep(0.25)
                assert time.monotonic() - started < WAIT_S
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed under the client's feet: what this test wants
        else:
            assert sock.recv(1024) == b""
    assert time.monotonic() - started < len(request) * 0.25  # before the head was complete


def test_an_idle_session_that_answers_pings_is_closed(hardened: GatewayProcess) -> None:
    async def run() -> tuple[dict[str, Any], int | None]:
        async with connect(hardened.url, ping_interval=0.5, ping_timeout=5) as ws:
            assert (await reply(ws, START))["type"] == "SessionStarted"
            error = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT_S)
            return error, ws.close_code

    error, code = asyncio.run(run())
    assert error == {
        "type": "Error",
        "message": "No message for 2 s (idle timeout)",
        "code": "idle_timeout",
    }
    assert code == 1008


async def cut_off(server: GatewayProcess, count: float) -> None:
    """Until the gateway has cut off `count` clients as too slow in all."""
    deadline = time.monotonic() + WAIT_S
    while await asyncio.to_thread(metric, server, "too_slow") < count:
        assert time.monotonic() < deadline, "the never-reading clients were not cut off"
        await asyncio.sleep(0.2)


async def never_reading_gap_client(server: GatewayProcess, cut_offs: float, read: bool) -> str:
    """StartSession, then 8-byte pushes each opening a 10 s gap (600 frames), not reading
    until the gateway has cut off `cut_offs` clients; then reads what reached the socket
    when `read`. Returns the last text it read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port_of(server)))
    last = ""
    async with connect(
        server.url, sock=sock, max_queue=1, max_size=None, ping_interval=None, close_timeout=1
    ) as ws:
        await ws.send(START)
        with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
            for k in range(1, 100):
                await asyncio.wait_for(
                    ws.send(pack_push_audio(k * 160_000, np.zeros(4, np.int16))), WAIT_S
                )
        await cut_off(server, cut_offs)
        if read:
            with contextlib.suppress(websockets.ConnectionClosed):
                async with asyncio.timeout(WAIT_S):
                    async for message in ws:
                        if isinstance(message, str):
                            last = message
    return last


def test_a_never_reading_client_finds_too_slow_behind_its_frames(
    hardened: GatewayProcess,
) -> None:
    before = metric(hardened, "too_slow")
    last = asyncio.run(never_reading_gap_client(hardened, before + 1, read=True))
    assert json.loads(last) == {"type": "Error", "message": "client too slow", "code": "too_slow"}
    assert metric(hardened, "too_slow") == before + 1


# -- log hygiene -------------------------------------------------------------------------------


def test_invalid_utf8_frames_log_one_line_and_no_traceback(
    hardened: GatewayProcess, hardened_log: Path
) -> None:
    async def bad_text() -> int | None:
        async with connect(hardened.url) as ws:
            ws.transport.write(masked_frame(0x1, b"\xff\xfe\xfd"))  # a text frame, not UTF-8
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT_S)
            return ws.close_code

    async def run() -> list[int | None]:
        return list(await asyncio.gather(*(bad_text() for _ in range(20))))

    assert asyncio.run(run()) == [1007] * 20
    line = "rejected text frame not UTF-8 (closed 1007)"
    # uvicorn may log after the close frame has left: give the line a moment to arrive
    deadline = time.monotonic() + WAIT_S
    while line not in hardened_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = hardened_log.read_text()
    assert "Traceback" not in log and "UnicodeDecodeError" not in log
    assert 1 <= log.count(line) <= 2


# -- memory ------------------------------------------------------------------------------------


class Tracker:
    """Every Connection the in-process gateway makes: how many, and which are alive; and the
    same of uvicorn's protocols (HTTP, then WebSocket: whatever holds them alive, Litestar's
    socket included, holds them)."""

    def __init__(self) -> None:
        self.made = 0
        self.alive: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.transports: weakref.WeakSet[object] = weakref.WeakSet()


@pytest.fixture
def tracked_connections(monkeypatch: pytest.MonkeyPatch) -> Tracker:
    tracker = Tracker()

    class Tracked(Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            tracker.made += 1
            tracker.alive.add(self)

    monkeypatch.setattr(gateway.drivers.core_driver, "Connection", Tracked)
    for cls in (HttpToolsProtocol, GuardedWebSocket):
        made = cls.__init__

        def tracked_init(self: Any, *args: Any, _made: Any = made, **kwargs: Any) -> None:
            _made(self, *args, **kwargs)
            tracker.transports.add(self)

        monkeypatch.setattr(cls, "__init__", tracked_init)
    return tracker


def test_closed_connections_are_freed_without_the_garbage_collector(
    triton: EmbeddedTriton, speech: np.ndarray, tracked_connections: Tracker
) -> None:
    """Cut off as too slow, idle, gone mid-stream or ended normally: with the collector off,
    every Connection (and what it holds: queued frames, audio, jobs) dies once its socket
    closes, and so do uvicorn's protocols and Litestar's socket, so nothing waits for a full
    collection, which would pause every stream."""
    settings = Settings(
        port=free_port(), grpc_port=0, triton_urls=[triton.grpc_url], log_level="warning",
        send_timeout_s=1.0, idle_timeout_s=1.0, max_queued_frames=1200, send_buffer_bytes=16384,
    )  # fmt: skip
    address = f"127.0.0.1:{settings.port}"
    server = GatewayProcess(f"ws://{address}/", f"http://{address}", None)  # type: ignore[arg-type]

    async def vanishing() -> None:
        async with connect(server.url) as ws:
            await reply(ws, START)
            await ws.send(pack_push_audio(0, speech))
            await asyncio.sleep(0.05)
            ws.transport.abort()  # gone with frames in flight

    async def normal() -> None:
        async with connect(server.url) as ws:
            await reply(ws, START)
            await ws.send(pack_push_audio(0, speech[:16_000]))
            await ws.send(json.dumps({"type": "EndSession"}))
            async for message in ws:
                if isinstance(message, str) and "SessionEnded" in message:
                    break

    async def idle() -> None:
        async with connect(server.url) as ws:
            await reply(ws, START)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT_S)

    async def run() -> None:
        uvicorn_server = uvicorn.Server(uvicorn_config(settings, create_app(settings)))
        serving = asyncio.create_task(uvicorn_server.serve())
        while not uvicorn_server.started:
            await asyncio.sleep(0.05)
        try:
            gc.disable()
            clients = [never_reading_gap_client(server, 3, read=False) for _ in range(3)]
            await asyncio.gather(*clients, vanishing(), normal(), idle())
            alive = tracked_connections.alive
            deadline = time.monotonic() + WAIT_S  # jobs in flight hold theirs until Triton answers
            while alive and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert tracked_connections.made == 6
            assert not alive, f"{len(alive)} closed Connection(s) still alive"
            transports = tracked_connections.transports
            while transports and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert not transports, f"still alive: {sorted(type(t).__name__ for t in transports)}"
        finally:
            gc.enable()
            uvicorn_server.should_exit = True
            await serving

    asyncio.run(run())


def rss(process: Any) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_never_reading_gap_clients_leave_rss_within_the_trim_threshold(
    start_gateway: Any,
) -> None:
    """Rounds of 6 clients that open 10 s gaps and never read, each cut off as too slow: the
    gateway's resident memory stays within its start (after one such round) plus the heap
    glibc may keep (`HEAP_TRIM_THRESHOLD`); before, every round's connections stayed."""
    server = start_gateway("--send_timeout_s", "2", "--send_buffer_bytes", "16384")

    async def round_of_clients() -> None:
        before = await asyncio.to_thread(metric, server, "too_slow")
        clients = [never_reading_gap_client(server, before + 6, read=False) for _ in range(6)]
        await asyncio.gather(*clients)
        deadline = time.monotonic() + WAIT_S
        while (await asyncio.to_thread(sessions_count, server)) > 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)

    asyncio.run(round_of_clients())  # the gateway's working set for this load
    baseline = rss(server.process)
    sizes = []
    for _ in range(ROUNDS):
        asyncio.run(round_of_clients())
        sizes.append(rss(server.process))
    print(f"RSS baseline {baseline >> 20} MiB, after each round", [s >> 20 for s in sizes])
    assert max(sizes) <= baseline + HEAP_TRIM_THRESHOLD


def sessions_count(server: GatewayProcess) -> int:
    with urllib.request.urlopen(server.http + "/sessions", timeout=30) as response:
        return int(json.loads(response.read())["count"])
