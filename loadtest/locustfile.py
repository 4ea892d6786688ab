"""Locust load test: each user is one real-time speech stream over the Audio2Face-3D protocol.

    locust -f loadtest/locustfile.py --headless -u 32 -r 32 -t 60s --csv out \\
        --host ws://127.0.0.1:8765 --fps 30

Every user opens the WebSocket, starts a session at `--fps` (it must equal the server's
`--fps`), and sends the speech file (`--audio`, looped) as 40 ms PushAudio chunks on the wall
clock while a second greenlet reads the frames. What reaches Locust's statistics:

* `WS frame`: one entry per frame received; its "response time" is the frame's added latency
  in ms (arrival minus the send time of the chunk that completed its window);
* `WS frame lost`: one failure per frame lost (skipped indices while streaming, and frames
  still missing after `EndSession` when the user stops);
* `WS server error`: one failure per `Error` message from the server.

The bookkeeping is `loadtest.accounting`, shared with the asyncio driver `make bench` uses.
Locust runs on gevent; `websocket-client` is plain blocking sockets, which gevent's monkey
patching makes cooperative, so hundreds of users share one process. On a 2-core machine that
process competes with the server: watch Locust's own CPU warning.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import gevent
import websocket
from gevent.event import Event
from locust import User, events, task
from locust.env import Environment

from a2f_protocol import LOCAL_URL
from a2f_protocol.messages import (
    EndSession,
    Error,
    SessionEnded,
    SessionStarted,
    StartSession,
    decode_server_message,
    encode_message,
)
from gateway.model_info import ModelInfo
from loadtest.accounting import (
    CHUNK_SECONDS,
    MODEL_REPOSITORY,
    SPEECH_FILE,
    LoopingSpeech,
    StreamAccount,
)

END_TIMEOUT_S = 10.0


class FramesLost(Exception):
    """Frames the server never sent."""


class ServerError(Exception):
    """An `Error` message from the server."""


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--fps", type=int, default=30, help="frame rate (the server's --fps)")
    parser.add_argument("--audio", type=str, default=str(SPEECH_FILE), help="16 kHz speech file")
    parser.add_argument("--model-repository", type=str, default=str(MODEL_REPOSITORY))


class SpeechStream(User):
    """One connection streaming speech in real time until Locust stops the user."""

    host = LOCAL_URL
    _speech: LoopingSpeech | None = None  # shared by all users: read the file once

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        options = environment.parsed_options
        self.fps = Fraction(options.fps if options else 30)
        audio = Path(options.audio) if options else SPEECH_FILE
        repository = Path(options.model_repository) if options else MODEL_REPOSITORY
        if SpeechStream._speech is None:
            SpeechStream._speech = LoopingSpeech(audio)
        info = ModelInfo.load(repository)
        self.account = StreamAccount(self.fps, info.window - info.offset)
        self.ended = Event()
        self.socket: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None

    def on_start(self) -> None:
        self.socket = websocket.create_connection(
            self.host.rstrip("/") + "/", enable_multithread=True
        )
        self.socket.send(encode_message(StartSession(fps=int(self.fps))).decode())
        reply = decode_server_message(self.socket.recv())
        if not isinstance(reply, SessionStarted):
            self._fire("server error", 0, ServerError(str(reply)))
            raise RuntimeError(f"StartSession refused: {reply}")
        self.reader = gevent.spawn(self._read)

    @task
    def stream(self) -> None:
        """Send chunks on the wall clock; runs until Locust stops the user (GreenletExit)."""
        assert self._speech is not None and self.socket is not None
        start = time.monotonic()
        index = 0
        while True:
            delay = start + index * CHUNK_SECONDS - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            data = self._speech.chunk(index)
            self.account.sent(time.monotonic())
            self.socket.send_binary(data)
            index += 1

    def on_stop(self) -> None:
        if self.socket is None:
            return
        try:
            self.socket.send(encode_message(EndSession()).decode())
            self.ended.wait(END_TIMEOUT_S)
        except websocket.WebSocketException:
            pass
        missing = self.account.lost() - self.account.gaps  # gaps were reported as they came
        for _ in range(max(missing, 0)):
            self._fire("frame lost", 0, FramesLost("missing after EndSession"))
        if self.reader is not None:
            self.reader.kill()
        self.socket.close()

    def _read(self) -> None:
        assert self.socket is not None
        try:
            while True:
                opcode, data = self.socket.recv_data()
                arrived = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    gaps = self.account.gaps
                    latency = self.account.received(data, arrived)
                    for _ in range(self.account.gaps - gaps):
                        self._fire("frame lost", 0, FramesLost("frame index skipped"))
                    if latency is not None:
                        self._fire("frame", latency * 1e3, None, len(data))
                elif opcode == websocket.ABNF.OPCODE_TEXT:
                    message = decode_server_message(data)
                    if isinstance(message, Error):
                        self._fire("server error", 0, ServerError(message.message))
                    elif isinstance(message, SessionEnded):
                        self.ended.set()
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    return
        except (websocket.WebSocketException, OSError) as exc:
            if not self.ended.is_set():
                self._fire("server error", 0, ServerError(f"connection lost: {exc}"))

    def _fire(self, name: str, ms: float, exception: Exception | None, size: int = 0) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=ms,
            response_length=size,
            exception=exception,
            context={},
        )
