"""Locust load test of any open-a2f deployment: real-time speech streams and batch uploads.

    make locust ARGS="--headless -u 32 -r 32 -t 60s --csv out --host ws://127.0.0.1:8765"
    A2F_API_KEY=a2f_... .venv/bin/locust -f loadtest/locustfile.py --headless -u 40 -r 10 \\
        -t 5m --host wss://a2f.example.com --ca-file cert.pem --batch-weight 1

It needs nothing from the server's files: the frame rate and channels are the server's (from
`SessionStarted`) unless `--fps` / `--channels` ask for others, and the model window is the
protocol's. A deployment with tenants wants `--api-key` (or `A2F_API_KEY`); one with its own
certificate `--ca-file` (or `A2F_CA_FILE`), or `--insecure`. A refused key stops the test at
once with one line: retrying would only count against the address's failure limit.

Three kinds of user, mixed by `--stream-weight` (1), `--ace-weight` (0) and `--batch-weight` (0):

* `SpeechStream`: one WebSocket session sending the speech file (`--audio`, looped) as 40 ms
  `PushAudio` chunks on the wall clock while a second greenlet reads the frames. Statistics:
  `WS frame`, one entry per frame, its "response time" the frame's added latency in ms
  (arrival minus the send time of the chunk that completed its window); `WS frame lost`, one
  failure per frame lost (skipped indices while streaming, and frames still missing after
  `EndSession` when the user stops); `WS server error`, one failure per `Error` message;
  `WS stream`, one entry per user when it stops (its length: the frames it received; a
  failure if it received none).
* `AceStream`: the same real-time speech over NVIDIA's gRPC API (`ProcessAudioStream`) at
  `--grpc-url` (default: `--host`'s host on port 52000; TLS when `--host` is wss:// or
  https://), frames counted at `--grpc-fps` (30, the gateway's `--grpc_fps`), the key as
  `authorization` metadata. The same statistics under `gRPC` (`gRPC frame`, `gRPC frame lost`,
  `gRPC server error`, `gRPC stream`). It needs the client's ACE mode (`open-a2f[ace]` and
  NVIDIA's packages, see the README); grpc is told to cooperate with gevent.
* `BatchUpload`: `POST /v1/animate` of the same file once per its duration (the audio of one
  real-time stream), A2FB back; a failure unless every announced frame arrives.

The stream bookkeeping is `loadtest.accounting`, shared with the asyncio driver `make bench`
uses. Locust runs on gevent; `websocket-client` is plain blocking sockets, which gevent's monkey
patching makes cooperative, so hundreds of users share one process. On a 2-core machine that
process competes with the server: watch Locust's own CPU warning.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
import soundfile
import websocket
from gevent.event import Event
from locust import HttpUser, User, constant_pacing, events, task
from locust.env import Environment
from locust.exception import StopUser

from a2f_client.credentials import API_KEY_ENV, CA_FILE_ENV
from a2f_client.errors import AUTH_CODES
from a2f_client.urls import grpc_target, http_url, websocket_url, with_path
from a2f_protocol import ACE_FPS, ACE_PORT, LOCAL_URL
from a2f_protocol.clock import MODEL_SAMPLE_RATE, WINDOW_LEAD_SAMPLES, WINDOW_SAMPLES, FrameClock
from a2f_protocol.frames import FRAME_HEADER_BYTES
from a2f_protocol.messages import (
    EndSession,
    Error,
    SessionEnded,
    SessionStarted,
    StartSession,
    decode_server_message,
    encode_message,
)
from a2f_protocol.params import parse_channels
from loadtest.accounting import CHUNK_SECONDS, SPEECH_FILE, LoopingSpeech, StreamAccount

END_TIMEOUT_S = 10.0
DEFAULT_HOST = LOCAL_URL
log = logging.getLogger(__name__)


class FramesLost(Exception):
    """Frames the server never sent."""


class ServerError(Exception):
    """An `Error` message from the server, or a failed batch request."""


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    env = os.environ.get
    parser.add_argument("--fps", type=int, help="ask for this frame rate (default: the server's)")
    parser.add_argument("--channels", type=str, help="arkit, visemes, all or name,name,...")
    parser.add_argument("--audio", type=str, default=str(SPEECH_FILE), help="16 kHz speech file")
    parser.add_argument(
        "--api-key", type=str, default="", help=f"key of a deployment with tenants (${API_KEY_ENV})"
    )  # the variable's value is not shown: the web UI and --help print defaults
    parser.add_argument("--ca-file", type=str, default=env(CA_FILE_ENV, ""), help="PEM to trust")
    parser.add_argument("--insecure", action="store_true", help="do not verify certificates")
    parser.add_argument("--stream-weight", type=int, default=1, help="share of SpeechStream users")
    parser.add_argument("--batch-weight", type=int, default=0, help="share of BatchUpload users")
    parser.add_argument("--ace-weight", type=int, default=0, help="share of AceStream users")
    parser.add_argument("--grpc-url", type=str, default="", help="the gRPC API's host:port")
    parser.add_argument("--grpc-fps", type=int, default=ACE_FPS, help="the gateway's --grpc_fps")


@events.init.add_listener
def _weights(environment: Environment, **_: Any) -> None:
    # Here, not as class attributes: Locust drops a class of weight 0 before options exist.
    options = environment.parsed_options
    if options is not None:
        SpeechStream.weight = options.stream_weight
        BatchUpload.weight = options.batch_weight
        AceStream.weight = options.ace_weight
        if options.ace_weight:
            # Before any channel exists: grpc's threads must yield to gevent's loop.
            import grpc.experimental.gevent as grpc_gevent

            grpc_gevent.init_gevent()


def _option(environment: Environment, name: str, default: Any = None) -> Any:
    options = environment.parsed_options
    return getattr(options, name, default) if options is not None else default


def _api_key(environment: Environment) -> str:
    return str(_option(environment, "api_key") or os.environ.get(API_KEY_ENV, ""))


def _fire(
    environment: Environment,
    request_type: str,
    name: str,
    ms: float,
    exception: Exception | None,
    size: int = 0,
) -> None:
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=ms,
        response_length=size,
        exception=exception,
        context={},
    )


def _report_end(fire: Callable[..., None], account: StreamAccount, last_message: str) -> None:
    """A stream's end: each frame that never came, then one `stream` entry (a failure when no
    frame came at all)."""
    missing = account.lost() - account.gaps  # gaps were reported as they came
    for _ in range(max(missing, 0)):
        fire("frame lost", 0, FramesLost(f"missing after {last_message}"))
    frames = account.frames
    fire("stream", 0, None if frames else FramesLost("no frames at all"), frames)


_stopping = Event()  # one refused key ends the test, with one line


def _refused(environment: Environment, message: Error) -> None:
    if _stopping.is_set():
        return
    _stopping.set()
    log.error("refused (%s): %s; stopping the test", message.code, message.message)
    if environment.runner is not None:
        gevent.spawn(environment.runner.quit)  # not from this user's greenlet: it is stopped


class SpeechStream(User):
    """One connection streaming speech in real time until Locust stops the user."""

    host = DEFAULT_HOST
    _speech: LoopingSpeech | None = None  # shared by all users: read the file once

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if SpeechStream._speech is None:
            SpeechStream._speech = LoopingSpeech(Path(_option(environment, "audio", SPEECH_FILE)))
        self.account: StreamAccount | None = None
        self.ended = Event()
        self.socket: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None

    def on_start(self) -> None:
        environment = self.environment
        key = _api_key(environment)
        ca_file = _option(environment, "ca_file")
        sslopt: dict[str, Any] = {"ca_certs": ca_file} if ca_file else {}
        if _option(environment, "insecure", False):
            sslopt = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        self.socket = websocket.create_connection(
            websocket_url(self.host),
            enable_multithread=True,
            suppress_origin=True,  # a program, not a browser page: an Origin would be checked
            header=[f"Authorization: Bearer {key}"] if key else None,
            sslopt=sslopt,
        )
        fields: dict[str, Any] = {}
        if (fps := _option(environment, "fps")) is not None:
            fields["fps"] = fps
        if (channels := _option(environment, "channels")) is not None:
            fields["channels"] = parse_channels(channels)
        self.socket.send(encode_message(StartSession(**fields)).decode())
        reply = decode_server_message(self.socket.recv())
        if not isinstance(reply, SessionStarted):
            self._fire("server error", 0, ServerError(str(reply)))
            if isinstance(reply, Error) and reply.code in AUTH_CODES:
                _refused(environment, reply)
            self.socket.close()
            self.socket = None  # the task sees it and stops this user, without a traceback
            return
        rate = Fraction(reply.frame_rate.numerator, reply.frame_rate.denominator)
        self.account = StreamAccount(rate, WINDOW_SAMPLES - WINDOW_LEAD_SAMPLES)
        self.reader = gevent.spawn(self._read)

    @task
    def stream(self) -> None:
        """Send chunks on the wall clock; runs until Locust stops the user (GreenletExit)."""
        if self.socket is None or self.account is None:
            raise StopUser()
        assert self._speech is not None
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
        if self.socket is None or self.account is None:
            return
        try:
            self.socket.send(encode_message(EndSession()).decode())
            self.ended.wait(END_TIMEOUT_S)
        except websocket.WebSocketException:
            pass
        _report_end(self._fire, self.account, "EndSession")
        if self.reader is not None:
            self.reader.kill()
        self.socket.close()

    def _read(self) -> None:
        assert self.socket is not None and self.account is not None
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
                        if message.code in AUTH_CODES:  # a key revoked mid-stream
                            _refused(self.environment, message)
                    elif isinstance(message, SessionEnded):
                        self.ended.set()
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    return
        except (websocket.WebSocketException, OSError) as exc:
            if not self.ended.is_set():
                self._fire("server error", 0, ServerError(f"connection lost: {exc}"))

    def _fire(self, name: str, ms: float, exception: Exception | None, size: int = 0) -> None:
        _fire(self.environment, "WS", name, ms, exception, size)


class AceStream(User):
    """One `ProcessAudioStream` call streaming speech in real time until Locust stops the user:
    grpc pulls the paced requests from `_requests` in its own thread, a greenlet reads."""

    host = DEFAULT_HOST

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if SpeechStream._speech is None:
            SpeechStream._speech = LoopingSpeech(Path(_option(environment, "audio", SPEECH_FILE)))
        self.clock = FrameClock(Fraction(_option(environment, "grpc_fps", ACE_FPS)))
        self.account = StreamAccount(self.clock.fps, WINDOW_SAMPLES - WINDOW_LEAD_SAMPLES)
        self.stopping = Event()  # the requests end: end_of_audio
        self.answered = Event()  # the stream header came back (or the call ended)
        self.finished = Event()  # the call ended
        self.ended = False  # with SUCCESS
        self.channel: Any = None
        self.reader: gevent.Greenlet | None = None

    def on_start(self) -> None:
        import grpc  # the ACE extra: only users of this class need it
        from nvidia_audio2face_3d.audio2face_pb2_grpc import A2FControllerServiceStub

        from a2f_client.ace import OWN_CONNECTION

        environment = self.environment
        target, tls = grpc_target(_option(environment, "grpc_url") or _grpc_url(self.host))
        options = [OWN_CONNECTION]  # each user a client of its own
        if tls:
            root = _root(environment, target)
            credentials = grpc.ssl_channel_credentials(root)
            self.channel = grpc.secure_channel(target, credentials, options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        key = _api_key(environment)
        call = A2FControllerServiceStub(self.channel).ProcessAudioStream(
            self._requests(), metadata=[("authorization", f"Bearer {key}")] if key else None
        )
        self.reader = gevent.spawn(self._read, call)

    @task
    def stream(self) -> None:
        """Wait for the call; runs until Locust stops the user (GreenletExit)."""
        self.finished.wait()
        raise StopUser()

    def on_stop(self) -> None:
        self.stopping.set()
        self.finished.wait(END_TIMEOUT_S)
        _report_end(self._fire, self.account, "end_of_audio")
        if self.reader is not None:
            self.reader.kill()
        if self.channel is not None:
            self.channel.close()

    def _requests(self) -> Any:
        from a2f_client.ace import END_OF_AUDIO, audio_chunk, stream_header

        assert SpeechStream._speech is not None
        yield stream_header(MODEL_SAMPLE_RATE)
        # Audio after the answer, as a2f_client.ace sends it: a refused call still being
        # written to ends as INTERNAL for grpcio's client, not with the server's status.
        self.answered.wait()
        start = time.monotonic()
        index = 0
        while not self.stopping.is_set():
            delay = start + index * CHUNK_SECONDS - time.monotonic()
            if delay > 0 and self.stopping.wait(delay):
                break
            self.account.sent(time.monotonic())
            yield audio_chunk(SpeechStream._speech.samples(index))
            index += 1
        yield END_OF_AUDIO

    def _read(self, call: Any) -> None:
        import grpc
        from nvidia_ace.status_pb2 import Status

        from a2f_client.ace import frames_of

        try:
            for message in call:
                arrived = time.monotonic()
                part = message.WhichOneof("stream_part")
                self.answered.set()
                if part == "animation_data":
                    for frame in frames_of(message, self.clock):
                        gaps = self.account.gaps
                        latency = self.account.received_frame(
                            frame.frame_index, frame.timestamp_current, arrived
                        )
                        for _ in range(self.account.gaps - gaps):
                            self._fire("frame lost", 0, FramesLost("frame index skipped"))
                        if latency is not None:
                            self._fire("frame", latency * 1e3, None, message.ByteSize())
                elif part == "status" and message.status.code == Status.SUCCESS:
                    self.ended = True
                elif part == "status" and message.status.code == Status.ERROR:
                    self._fire("server error", 0, ServerError(message.status.message))
        except grpc.RpcError as exc:
            self._fire("server error", 0, ServerError(f"{exc.code().name}: {exc.details()}"))
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                _refused(self.environment, Error(exc.details(), "unauthorized"))
        finally:
            self.stopping.set()
            self.answered.set()
            self.finished.set()

    def _fire(self, name: str, ms: float, exception: Exception | None, size: int = 0) -> None:
        _fire(self.environment, "gRPC", name, ms, exception, size)


def _grpc_url(host: str) -> str:
    """`--host`'s host on the gRPC API's port, with TLS when `--host` has it."""
    parts = urlsplit(websocket_url(host))
    scheme = "grpcs" if parts.scheme == "wss" else "grpc"
    name = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{scheme}://{name}:{ACE_PORT}"


def _root(environment: Environment, target: str) -> bytes | None:
    """The certificate(s) to trust: `--ca-file`; with `--insecure` whichever one the server
    presents (gRPC cannot skip verification); else gRPC's own roots."""
    if _option(environment, "insecure", False):
        host, _, port = target.rpartition(":")
        return ssl.get_server_certificate((host.strip("[]"), int(port))).encode()
    ca_file = _option(environment, "ca_file")
    return Path(ca_file).read_bytes() if ca_file else None


class BatchUpload(HttpUser):
    """`POST /v1/animate` of the speech file, once per its duration."""

    host = DEFAULT_HOST
    _body: bytes | None = None
    _duration_s = 1.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if BatchUpload._body is None:
            path = Path(_option(environment, "audio", SPEECH_FILE))
            BatchUpload._body = path.read_bytes()
            BatchUpload._duration_s = soundfile.info(str(path)).duration
        self.url = with_path(http_url(self.host), "/v1/animate")
        key = _api_key(environment)
        self.headers = {"content-type": "application/octet-stream"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        ca_file = _option(environment, "ca_file")
        self.client.verify = ca_file or not _option(environment, "insecure", False)

    def wait_time(self) -> float:
        return constant_pacing(self._duration_s)(self)

    @task
    def upload(self) -> None:
        with self.client.post(
            self.url,
            params={"format": "a2fb"},
            data=self._body,
            headers=self.headers,
            name="POST /v1/animate",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                if response.status_code in (401, 403):
                    _refused(self.environment, Error(response.text, "unauthorized"))
                return
            channels = response.headers.get("x-a2f-channels", "").split(",")
            expected = int(response.headers.get("x-a2f-frame-count", "-1"))
            frame_bytes = FRAME_HEADER_BYTES + 4 * len(channels)
            got, rest = divmod(len(response.content), frame_bytes)
            if rest or got != expected:
                response.failure(f"{got} frames (+{rest} bytes), {expected} announced")
