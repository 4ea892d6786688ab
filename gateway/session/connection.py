"""One WebSocket connection's protocol, as a state machine without I/O.

The driver (`gateway.drivers.websocket`, the ACE gRPC driver, a test, or the naive baseline)
moves bytes, calls Triton and the stores; everything the protocol decides -- validation and
its errors, the session's life, which frames are ready, the order of everything sent,
backpressure -- is here. The core never calls a store: shared state (Redis) may be slow or
gone, and a blocking round trip here would freeze every stream of the process.

Events in (methods): `receive_text`, `receive_bytes`, `inference_done`, `sent` (units left
the socket), `idle`, `tick`, `connection_lost`, and the answers to the store actions below.

Time comes in as events only: `arrived` with each message, and `tick(now)`, which a driver
calls every `tick_period` seconds while that is not None (a session with idle frames: its
pauses become silence as real time passes, see `tick`). The core never reads a clock.

Actions out (`take_actions()`), to carry out in order:
- `SendText`, `SendFrames`: to the client; then call `sent(units)`.
- `Submit`, `Withdraw`: a job to the dispatcher; forget this connection's waiting jobs.
- `Close`: say why, then close.
- `AcquireSlot`: claim a session slot; answer `slot_granted(counters)` or
  `slot_refused(error)` (busy, quota, or the store unreachable).
- `ChargeAudio`: count a push's audio against the tenant; answer `audio_granted()` or
  `audio_refused(error)` (quota, or the store unreachable).
- `ReleaseSlot`: free a slot; no answer.
`gateway.drivers.shared_state.carry_out` carries out the last three for any driver.

While an `AcquireSlot` or `ChargeAudio` waits for its answer, whatever the client sends next
waits in this core (`backlogged` is true, so the driver should stop reading): the answer
comes first, then the messages behind it, in order. A driver may answer at once (stores in
memory do), so the normal path sends the same bytes in the same order as without a store.

Order: whatever the client is told leaves in protocol order. Texts and frame batches queue in
one outbox; a batch waits there until its inference is back, and nothing behind it leaves
before it. Backpressure: `backlogged` is true while more than `max_queued_frames` frames and
messages wait (for Triton or for the socket); the driver then stops reading the client.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from a2f_protocol.frames import MAX_MESSAGE_BYTES, FrameFormatError, pack_frames, parse_push_audio
from a2f_protocol.messages import (
    EndSession,
    Error,
    FrameRate,
    ProtocolError,
    SessionEnded,
    SessionStarted,
    SetEmotion,
    StartSession,
    decode_client_message,
    encode_message,
)
from gateway.defaults import DEFAULT_TENANT
from gateway.inference.admission import Refusal
from gateway.inference.batch import Job, Outcome, SpanBatch
from gateway.metrics import WEBSOCKET, Metrics
from gateway.model_info import ModelInfo
from gateway.session.audio import AudioStream
from gateway.session.config import ServerProfile, SessionConfig, emotion_parameters
from gateway.session.pipeline import FramePipeline
from gateway.stores.base import SessionCounters, SessionStats

JOB_FRAMES = 64  # frames per job: a long push streams its frames out as they are computed
# How far a session with idle frames lets its audio fall behind real time before the rest is
# silence: a chunk that is late by a network hiccup, or a client's 100-200 ms chunking, is not
# a pause, so a client keeping time never sees its audio land behind silence.
IDLE_AFTER_S = 0.25
WS_1008_POLICY_VIOLATION = 1008
WS_1011_INTERNAL_ERROR = 1011


@dataclass(frozen=True, slots=True)
class SendText:
    data: bytes


@dataclass(frozen=True, slots=True)
class SendFrames:
    """Consecutive BlendshapeFrames of one session; `arrived` is when their audio came in.
    `idle`: frames of a pause, made without audio: they add no latency to measure."""

    frames: list[bytes]
    arrived: float
    stats: SessionCounters
    idle: bool = False


@dataclass(frozen=True, slots=True)
class Submit:
    job: Job


@dataclass(frozen=True, slots=True)
class Withdraw:
    """The connection that submitted jobs is gone: forget its waiting jobs, and it."""


@dataclass(frozen=True, slots=True)
class Close:
    """Say why (best effort), then close with `code`."""

    code: int
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class AcquireSlot:
    """Claim a slot for a new session: answer `slot_granted` or `slot_refused`."""

    session_id: str
    sample_rate: int
    tenant: str
    tenant_limit: int | None
    protocol: str


@dataclass(frozen=True, slots=True)
class ChargeAudio:
    """Count `seconds` of pushed audio against the tenant: answer `audio_granted` or
    `audio_refused`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ReleaseSlot:
    """The session ended: free its slot (no answer)."""

    session_id: str


Action = SendText | SendFrames | Submit | Withdraw | Close | AcquireSlot | ChargeAudio | ReleaseSlot


class TenantHooks(Protocol):
    """What the connection asks of its tenant's policy (`gateway.tenancy.quota.TenantPolicy`):
    local decisions only, never a store."""

    session_limit: int | None

    def check(self, request: StartSession | SetEmotion) -> None:
        """Raises `ProtocolError` for a request the tenant may not make."""

    def session_started(self, session_id: str) -> None: ...

    def session_ended(
        self, session_id: str, stats: SessionCounters, sample_rate: int, frames: int
    ) -> None:
        """`frames`: every frame the session produced (its tail may still be on its way)."""


@dataclass(slots=True)
class _Session:
    session_id: str
    config: SessionConfig
    pipeline: FramePipeline
    parameters: dict[str, npt.NDArray[np.float32]]
    stats: SessionCounters
    started: float  # when its StartSession arrived: sample 0 of its real-time line


@dataclass(slots=True)
class _Idle:
    """Frames of a pause in the outbox: made when they reach its head, in frame order."""

    session: _Session
    first_index: int
    timestamps: npt.NDArray[np.int64]
    arrived: float


@dataclass(slots=True)
class _Pending:
    """A job's frames in the outbox, waiting for their inference."""

    session: _Session
    job: Job
    arrived: float
    outcome: Outcome | None = None


@dataclass(slots=True)
class _Starting:
    """A session waiting for its slot."""

    session_id: str
    config: SessionConfig
    arrived: float


@dataclass(slots=True)
class _Push:
    """A push of audio waiting for its charge."""

    session: _Session
    start_sample_index: int
    pcm: npt.NDArray[np.int16]
    arrived: float


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_queued_frames: int


def _ignore_outcome(job: Job, outcome: Outcome) -> None:
    """What a job still in flight when its connection ended comes back to."""


def _detached(stats: SessionCounters) -> SessionStats:
    """The counters' values, in an object of their own."""
    return SessionStats(
        session_id=stats.session_id,
        started_at=0.0,
        sample_rate=0,
        audio_samples=stats.audio_samples,
        frames_sent=stats.frames_sent,
        requests_in_flight=stats.requests_in_flight,
        queued_frames=stats.queued_frames,
        errors=stats.errors,
    )


class Connection:
    """The protocol of one connection: at most one session at a time, many over its life."""

    def __init__(
        self,
        model: ModelInfo,
        profile: ServerProfile,
        metrics: Metrics,
        limits: ConnectionLimits,
        *,
        tenant: str = DEFAULT_TENANT,
        protocol: str = WEBSOCKET,
        tenant_hooks: TenantHooks | None = None,
        new_id: Callable[[], str] = lambda: secrets.token_hex(16),
        refusal: Callable[[], Refusal | None] = lambda: None,
        on_job_done: Callable[[Job, Outcome], None] | None = None,
    ) -> None:
        self.model = model
        self.profile = profile
        self.metrics = metrics
        self.limits = limits
        self.tenant = tenant
        self.protocol = protocol  # the driver's (gateway.metrics.PROTOCOLS): for reports only
        self.tenant_hooks = tenant_hooks
        self.new_id = new_id
        # Why the host cannot take one more session now (admission by capacity), or None.
        self.refusal = refusal
        # A driver that must act on the actions an outcome causes passes its own hook, which
        # calls `inference_done` and then takes the actions.
        self.on_job_done = on_job_done or self.inference_done
        self.session: _Session | None = None
        self.closed = False
        self.queued_units = 0  # frames and messages not yet sent, in Triton or the outbox
        self._outbox: deque[SendText | _Pending | _Idle] = deque()
        self._actions: list[Action] = []
        self._submitted = False  # the dispatcher knows this connection
        self._asked: _Starting | _Push | None = None  # what waits for a store's answer
        self._inbox: deque[tuple[str | bytes, float]] = deque()  # messages behind it
        self._ended_lag = 0  # `audio_lag` of the session that ended, for its tail frames

    # -- events ------------------------------------------------------------------------------

    def receive_text(self, text: str, arrived: float) -> None:
        if self.closed:
            return
        if self._asked is not None:
            self._inbox.append((text, arrived))
            return
        try:  # the decoder bounds the text's size and nesting before it parses
            message = decode_client_message(text)
            match message:
                case StartSession():
                    self._start(message, arrived)
                case EndSession():
                    self._finish(message, arrived)
                case SetEmotion():
                    self._set_emotion(message)
        except ProtocolError as exc:
            self._error(str(exc), exc.code, exc.retry_after_s)

    def receive_bytes(self, data: bytes, arrived: float) -> None:
        if self.closed:
            return
        if self._asked is not None:
            self._inbox.append((data, arrived))
            return
        if self._refuse_oversized(len(data)):
            return
        session = self.session
        if session is None:
            self._error("StartSession must be called before PushAudio", "no_session")
            return
        try:
            push = parse_push_audio(data)
        except FrameFormatError as exc:
            self._error(str(exc), "invalid_audio")
            return
        waiting = _Push(session, push.start_sample_index, push.pcm, arrived)
        if self.tenant_hooks is None:
            self._push(waiting)
            return
        self._asked = waiting
        self._actions.append(ChargeAudio(push.pcm.size / session.config.input_rate))

    def slot_granted(self, stats: SessionCounters) -> None:
        """The answer to `AcquireSlot`: the slot is the session's, `stats` its counters."""
        starting = self._asked
        assert isinstance(starting, _Starting), "no AcquireSlot waits for an answer"
        self._asked = None
        if self.closed:  # the client left while the store answered
            self._actions.append(ReleaseSlot(starting.session_id))
            return
        self._started(starting, stats)
        self._read_inbox()

    def slot_refused(self, error: ProtocolError) -> None:
        """The answer to `AcquireSlot`: no slot (busy, quota, or the store unreachable)."""
        assert isinstance(self._asked, _Starting), "no AcquireSlot waits for an answer"
        self._asked = None
        if not self.closed:
            self._error(str(error), error.code, error.retry_after_s)
            self._read_inbox()

    def audio_granted(self) -> None:
        """The answer to `ChargeAudio`: the push counts, its frames go on."""
        push = self._asked
        assert isinstance(push, _Push), "no ChargeAudio waits for an answer"
        self._asked = None
        if not self.closed:
            self._push(push)
            self._read_inbox()

    def audio_refused(self, error: ProtocolError) -> None:
        """The answer to `ChargeAudio`: the push is dropped (the session goes on)."""
        assert isinstance(self._asked, _Push), "no ChargeAudio waits for an answer"
        self._asked = None
        if not self.closed:
            self._error(str(error), error.code, error.retry_after_s)
            self._read_inbox()

    def inference_done(self, job: Job, outcome: Outcome) -> None:
        """A job's outputs (or its failure) are back."""
        for entry in self._outbox:
            if isinstance(entry, _Pending) and entry.job is job:
                entry.outcome = outcome
                entry.session.stats.requests_in_flight -= 1
                break
        self._flush()

    def sent(self, units: int) -> None:
        """`units` frames or messages left through the socket."""
        self.queued_units -= units

    def idle(self, seconds: float) -> None:
        """The client sent nothing for `seconds`. Closes the connection unless frames or
        messages are still owed to it (then the client is waiting on us, not idle). Frames of
        a pause are not owed: they go on only while the client keeps the session open."""
        if self.closed or (self.queued_units and not self._only_idle_owed()):
            return
        self._fail(
            f"No message for {seconds:g} s (idle timeout)", "idle_timeout", WS_1008_POLICY_VIOLATION
        )

    @property
    def tick_period(self) -> float | None:
        """Seconds between the `tick`s the core needs now (a frame's), or None: no ticks."""
        session = self.session
        if session is None or not session.config.idle or session.pipeline.stream.finished:
            return None
        return float(1 / session.config.fps)

    @property
    def audio_lag(self) -> int:
        """Input samples the session's pushes move by, past silence filled where they would
        have landed (only with idle frames): frame k covers input sample `k / fps * rate +
        audio_lag`."""
        return self._ended_lag if self.session is None else self.session.pipeline.stream.lag

    def tick(self, now: float) -> None:
        """Real time is `now` (the clock of `arrived`). A session with idle frames takes the
        audio it lacks up to `IDLE_AFTER_S` before now as silence, as if the client had
        pushed zeros there: the frames whose windows reach its audio go to the model, those
        of pure silence are made here (`gateway.session.idle`). Nothing while a store's
        answer or the client's reading is awaited: the next tick catches up."""
        session = self.session
        if self.closed or session is None or not session.config.idle or self.backlogged:
            return
        stream = session.pipeline.stream
        behind = now - session.started - IDLE_AFTER_S
        stream.fill_silence(int(behind * stream.input_rate))
        self._submit_ready(session, now)

    def connection_lost(self) -> None:
        """The connection ended (either side): free the slot, withdraw waiting work. A slot
        still being acquired is released when its answer comes."""
        if self.session is not None:
            self._release(self.session)
        self._inbox.clear()
        if self._submitted:
            self._submitted = False
            self._actions.append(Withdraw())
        self._outbox.clear()
        self.closed = True
        # The hook is usually the driver's, and the driver holds this connection: without this
        # the pair is a reference cycle that only the garbage collector would free.
        self.on_job_done = _ignore_outcome

    # -- outputs -----------------------------------------------------------------------------

    @property
    def backlogged(self) -> bool:
        return self._asked is not None or self.queued_units >= self.limits.max_queued_frames

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    # -- protocol ----------------------------------------------------------------------------

    def _read_inbox(self) -> None:
        """The messages that waited behind a store's answer, until the next question."""
        while self._inbox and self._asked is None and not self.closed:
            message, arrived = self._inbox.popleft()
            if isinstance(message, bytes):
                self.receive_bytes(message, arrived)
            else:
                self.receive_text(message, arrived)

    def _push(self, push: _Push) -> None:
        session = push.session
        try:
            session.pipeline.stream.push(push.start_sample_index, push.pcm)
        except ProtocolError as exc:
            self._error(str(exc), exc.code, exc.retry_after_s)
            return
        session.stats.audio_samples = session.pipeline.stream.received
        self._submit_ready(session, push.arrived)

    def _refuse_oversized(self, size: int) -> bool:
        if size <= MAX_MESSAGE_BYTES:
            return False
        self._error(
            f"Message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit", "too_large"
        )
        return True

    def _start(self, request: StartSession, arrived: float) -> None:
        if self.session is not None:
            raise ProtocolError("Session already started for this connection", "session_exists")
        hooks = self.tenant_hooks
        if hooks is not None:
            hooks.check(request)
        config = SessionConfig.from_start(request, self.profile, self.model)
        if (refused := self.refusal()) is not None:
            raise ProtocolError(refused.message, "busy", retry_after_s=refused.retry_after_s)
        starting = _Starting(self.new_id(), config, arrived)
        self._asked = starting
        limit = None if hooks is None else hooks.session_limit
        self._actions.append(
            AcquireSlot(starting.session_id, config.input_rate, self.tenant, limit, self.protocol)
        )

    def _started(self, starting: _Starting, stats: SessionCounters) -> None:
        session_id, config = starting.session_id, starting.config
        self.session = _Session(
            session_id,
            config,
            FramePipeline(config, self.model),
            dict(config.parameters),
            stats,
            starting.arrived,
        )
        self.metrics.sessions.labels(self.protocol).inc()
        self.metrics.sessions_active.labels(self.protocol).inc()
        if self.tenant_hooks is not None:
            self.tenant_hooks.session_started(session_id)
        channels = config.channels
        started = SessionStarted(
            session_id=session_id,
            model=self.profile.model,
            options=self.profile.options,
            sampling_rate=self.model.sample_rate,
            frame_rate=FrameRate(config.fps.numerator, config.fps.denominator),
            weight_count=len(channels.names),
            channels=list(channels.names),
            channel_groups=list(channels.groups),
        )
        self._queue_text(encode_message(started))

    def _finish(self, request: EndSession, arrived: float) -> None:
        session = self.session
        if session is None:
            raise ProtocolError("No active session for this connection", "no_session")
        if request.session_id is not None and request.session_id != session.session_id:
            raise ProtocolError(
                "EndSession.session_id does not match active session", "session_mismatch"
            )
        session.pipeline.stream.finish()
        self._submit_ready(session, arrived, live=False)
        # The slot frees now, as in the reference server; the tail frames still go out first.
        self._release(session)
        self._queue_text(encode_message(SessionEnded(session.session_id)))

    def _set_emotion(self, request: SetEmotion) -> None:
        session = self.session
        if session is None:
            raise ProtocolError("No active session for this connection", "no_session")
        if self.tenant_hooks is not None:
            self.tenant_hooks.check(request)
        session.parameters |= emotion_parameters(
            request.emotions, request.emotion_strength, self.model
        )

    def _submit_ready(self, session: _Session, arrived: float, live: bool = True) -> None:
        """Jobs for the frames ready now; `live`: of a stream still going (a session's tail
        after EndSession is not, and does not count towards admission's latency)."""
        # Parameters as they are now: a later SetEmotion applies to later frames only.
        parameters = dict(session.parameters)
        stream = session.pipeline.stream
        while (batch := self._take(stream, session, arrived)) is not None:
            job = Job(self, batch, parameters, self.on_job_done, self.tenant, live=live)
            self._outbox.append(_Pending(session, job, arrived))
            self.queued_units += batch.count
            session.stats.queued_frames += batch.count
            session.stats.requests_in_flight += 1
            self._actions.append(Submit(job))
            self._submitted = True

    def _take(self, stream: AudioStream, session: _Session, arrived: float) -> SpanBatch | None:
        """The next frames for the model; frames of pure silence of a session with idle
        frames go to the outbox on the way, made without it."""
        if not session.config.idle:
            return stream.take_span(JOB_FRAMES)
        while (taken := stream.take_frames(JOB_FRAMES)) is not None:
            batch, silent = taken
            if not silent:
                return batch
            self._outbox.append(_Idle(session, batch.first_index, batch.timestamps, arrived))
            self.queued_units += batch.count
            session.stats.queued_frames += batch.count
            self._flush()
        return None

    def _only_idle_owed(self) -> bool:
        """Nothing but a pause's frames (and texts) waits to be sent: no inference is out."""
        session = self.session
        if session is None or not session.config.idle:
            return False
        stream = session.pipeline.stream
        pausing = stream.received > stream.audio_end
        return pausing and not any(isinstance(entry, _Pending) for entry in self._outbox)

    def _error(self, message: str, kind: str, retry_after_s: float | None = None) -> None:
        self.metrics.errors.labels(kind).inc()
        if self.session is not None:
            self.session.stats.errors += 1
        self._queue_text(encode_message(Error(message, kind, retry_after_s)))

    def _queue_text(self, data: bytes) -> None:
        self._outbox.append(SendText(data))
        self.queued_units += 1
        self._flush()

    def _flush(self) -> None:
        """Everything at the head of the outbox that can leave, in order."""
        outbox = self._outbox
        while outbox:
            head = outbox[0]
            if isinstance(head, SendText):
                outbox.popleft()
                self._actions.append(head)
                continue
            if isinstance(head, _Idle):
                outbox.popleft()
                pipeline = head.session.pipeline
                block = pipeline.shape_idle(head.first_index, head.timestamps)
                frames = pack_frames(block.first_index, block.timestamps, block.weights)
                self._actions.append(SendFrames(frames, head.arrived, head.session.stats, True))
                continue
            if head.outcome is None:
                return
            outbox.popleft()
            if isinstance(head.outcome, Exception):
                self._fail(f"Inference failed: {head.outcome}", "inference", WS_1011_INTERNAL_ERROR)
                return
            block = head.session.pipeline.shape(head.job.batch, head.outcome)
            frames = pack_frames(block.first_index, block.timestamps, block.weights)
            self._actions.append(SendFrames(frames, head.arrived, head.session.stats))

    def _fail(self, message: str, kind: str, code: int) -> None:
        self.metrics.errors.labels(kind).inc()
        self._actions.append(Close(code, kind, message))
        self.connection_lost()

    def _release(self, session: _Session) -> None:
        if self.tenant_hooks is not None:  # before the release: a shared record may be reused
            self.tenant_hooks.session_ended(
                session.session_id,
                session.stats,
                session.config.input_rate,
                session.pipeline.stream.accumulator.next_frame,
            )
        self._actions.append(ReleaseSlot(session.session_id))
        # The freed slot may go to another session at once (a table shared by workers): the
        # tail frames still to count after EndSession go to a private copy instead.
        session.stats = _detached(session.stats)
        self._ended_lag = session.pipeline.stream.lag
        self.metrics.sessions_active.labels(
            self.protocol
        ).dec()  # this process's count: workers' counts add up
        self.session = None
