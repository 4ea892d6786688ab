"""The connection's protocol state machine, driven without sockets or Triton.

The "inference" here is a fake (rows of the frame index): these tests are about what the
protocol decides, in which order, and which errors it reports.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np
import pytest

from a2f_protocol.frames import MAX_MESSAGE_BYTES, pack_push_audio, unpack_frame
from a2f_protocol.messages import ProtocolError, SessionOptions, decode_server_message
from gateway.drivers.shared_state import carry_out
from gateway.inference.admission import Refusal
from gateway.inference.batch import Job
from gateway.metrics import Metrics
from gateway.model_info import ModelInfo
from gateway.session.config import ServerProfile
from gateway.session.connection import (
    AcquireSlot,
    ChargeAudio,
    Close,
    Connection,
    ConnectionLimits,
    ReleaseSlot,
    SendFrames,
    SendText,
    Submit,
    TenantHooks,
    Withdraw,
)
from gateway.stores.base import SessionCounters, SessionStats, StoreUnavailable
from gateway.stores.local import SessionRegistry

INFO = ModelInfo.load(Path(__file__).resolve().parents[3] / "model_repository")
PROFILE = ServerProfile("a2f", Fraction(30), SessionOptions(True, "SkinTongue"))
OUTPUTS = len(INFO.blendshapes) + len(INFO.visemes)
T = TypeVar("T")


def at_once(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (the in-process stores answer so)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise AssertionError("the coroutine waited")


class Harness:
    """A connection and what it asked for so far."""

    def __init__(
        self,
        registry: SessionRegistry | None = None,
        max_queued: int = 4096,
        refusal: Callable[[], Refusal | None] = lambda: None,
        answer: bool = True,
        hooks: TenantHooks | None = None,
    ) -> None:
        self.registry = registry if registry is not None else SessionRegistry(4)
        self.metrics = Metrics()
        self.connection = Connection(
            INFO,
            PROFILE,
            self.metrics,
            ConnectionLimits(max_queued),
            refusal=refusal,
            tenant_hooks=hooks,
        )
        self.answer = answer  # the store's questions answered at once (else kept in `asked`)
        self.asked: list[AcquireSlot | ChargeAudio | ReleaseSlot] = []
        self.jobs: list[Job] = []
        self.sent: list[object] = []  # decoded texts and unpacked frames, in order
        self.closed: Close | None = None
        self.withdrawn = False

    def text(self, message: str | dict) -> None:
        data = message if isinstance(message, str) else msgspec.json.encode(message).decode()
        self.connection.receive_text(data, 0.0)
        self.collect()

    def audio(self, start: int, samples: int) -> None:
        self.connection.receive_bytes(pack_push_audio(start, np.ones(samples, np.int16)), 0.0)
        self.collect()

    def compute(self, fail: Exception | None = None) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            first = job.batch.first_index
            rows = np.repeat(np.arange(first, first + job.count, dtype=np.float32), OUTPUTS)
            job.done(job, fail or rows.reshape(job.count, OUTPUTS))
        self.collect()

    def collect(self) -> None:
        while actions := self.connection.take_actions():
            for action in actions:
                self.act(action)

    def act(self, action: object) -> None:
        match action:
            case Submit(job):
                self.jobs.append(job)
            case SendText(data):
                self.sent.append(decode_server_message(data))
                self.connection.sent(1)
            case SendFrames(frames=frames):
                self.sent += [unpack_frame(f) for f in frames]
                self.connection.sent(len(frames))
            case Withdraw():
                self.withdrawn = True
            case Close():
                self.closed = action
            case AcquireSlot() | ChargeAudio() | ReleaseSlot() if self.answer:
                at_once(carry_out(action, self.connection, self.registry))
            case AcquireSlot() | ChargeAudio() | ReleaseSlot():
                self.asked.append(action)

    def errors(self) -> list[str | None]:
        return [m.code for m in self.sent if type(m).__name__ == "Error"]


def started() -> Harness:
    harness = Harness()
    harness.text({"type": "StartSession"})
    assert type(harness.sent[0]).__name__ == "SessionStarted"
    return harness


def test_lifecycle_frames_in_order_then_session_ended() -> None:
    harness = started()
    harness.audio(0, 16000)  # 1 s at 30 fps: the frames whose window is complete
    assert harness.jobs
    harness.text({"type": "EndSession"})  # the tail, padded
    assert len(harness.registry) == 0  # the slot frees at EndSession
    assert type(harness.sent[-1]).__name__ == "SessionStarted"  # nothing before the frames
    harness.compute()
    kinds = [type(m).__name__ for m in harness.sent]
    assert kinds[0] == "SessionStarted" and kinds[-1] == "SessionEnded"
    frames = harness.sent[1:-1]
    assert [f.frame_index for f in frames] == list(range(30))
    assert all(f.weights[0] == f.frame_index for f in frames)
    assert harness.connection.queued_units == 0


def test_a_new_session_may_follow_on_the_same_connection() -> None:
    harness = started()
    harness.text({"type": "EndSession"})
    harness.text({"type": "StartSession"})
    assert [type(m).__name__ for m in harness.sent][-1] == "SessionStarted"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "invalid_message"),
        ({"type": "Nope"}, "invalid_message"),
        ({"type": "StartSession", "fps": -1}, "invalid_message"),
        ({"type": "StartSession", "fps": 25}, "mismatch"),
        ({"type": "StartSession", "model": "other"}, "mismatch"),
        ({"type": "StartSession", "channels": "nope"}, "invalid_channels"),
        ({"type": "StartSession", "emotions": {"glee": 1}}, "invalid_emotion"),
        ({"type": "EndSession"}, "no_session"),
        ({"type": "SetEmotion", "emotions": {"joy": 1}}, "no_session"),
    ],
)
def test_refused_messages_get_an_error_and_nothing_else(message, code) -> None:
    harness = Harness()
    harness.text(message)
    assert harness.errors() == [code]
    assert len(harness.registry) == 0 and harness.closed is None


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "StartSession"}, "session_exists"),
        ({"type": "EndSession", "session_id": "someone-else"}, "session_mismatch"),
        ({"type": "SetEmotion", "emotions": {"glee": 1}}, "invalid_emotion"),
    ],
)
def test_errors_inside_a_session_keep_it(message, code) -> None:
    harness = started()
    harness.text(message)
    assert harness.errors() == [code]
    assert harness.connection.session is not None
    assert harness.connection.session.stats.errors == 1


def test_audio_errors() -> None:
    harness = Harness()
    harness.audio(0, 10)
    assert harness.errors() == ["no_session"]
    harness = started()
    harness.connection.receive_bytes(b"\x00" * 9, 0.0)  # odd PCM length
    harness.collect()
    harness.audio(-5, 10)
    harness.audio(100, 10)
    harness.audio(50, 10)  # behind what was received
    harness.audio(10**9, 10)  # a gap over 10 s
    assert harness.errors() == ["invalid_audio", "negative_index", "out_of_order", "gap_too_large"]


def test_oversized_messages_are_refused_and_the_session_goes_on() -> None:
    harness = started()
    harness.connection.receive_bytes(b"\x00" * (MAX_MESSAGE_BYTES + 2), 0.0)
    harness.connection.receive_text(" " * (MAX_MESSAGE_BYTES + 1), 0.0)
    harness.collect()
    assert harness.errors() == ["too_large", "too_large"]
    harness.audio(0, 16000)
    assert harness.jobs


def test_busy_when_every_slot_is_taken() -> None:
    registry = SessionRegistry(1)
    first, second = Harness(registry), Harness(registry)
    first.text({"type": "StartSession"})
    second.text({"type": "StartSession"})
    assert second.errors() == ["busy"]
    first.connection.connection_lost()
    first.collect()
    second.text({"type": "StartSession"})
    assert type(second.sent[-1]).__name__ == "SessionStarted"


def test_busy_when_the_host_has_no_headroom_and_no_slot_is_taken() -> None:
    reason: list[Refusal | None] = [Refusal("Server busy: frames of live sessions are late", 2)]
    harness = Harness(refusal=lambda: reason[0])
    harness.text({"type": "StartSession"})
    assert harness.errors() == ["busy"]
    assert "late" in harness.sent[-1].message and harness.sent[-1].retry_after_s == 2
    assert len(harness.registry) == 0
    reason[0] = None
    harness.text({"type": "StartSession"})
    assert type(harness.sent[-1]).__name__ == "SessionStarted"


def test_a_sessions_tail_after_end_session_is_not_a_live_stream() -> None:
    harness = started()
    harness.audio(0, 16000)
    assert all(job.live for job in harness.jobs)
    harness.compute()
    harness.text({"type": "EndSession"})
    assert harness.jobs and not any(job.live for job in harness.jobs)


def test_tail_frames_after_end_session_do_not_count_into_the_freed_slot() -> None:
    harness = started()
    assert harness.connection.session is not None
    slot = harness.connection.session.stats  # the registry's record, reusable once freed
    harness.audio(0, 16000)
    harness.compute()
    sent_before = slot.frames_sent
    harness.text({"type": "EndSession"})
    jobs, harness.jobs = harness.jobs, []
    for job in jobs:
        job.done(job, np.zeros((job.count, OUTPUTS), np.float32))
    tails = [a for a in harness.connection.take_actions() if isinstance(a, SendFrames)]
    assert tails and all(action.stats is not slot for action in tails)
    assert slot.frames_sent == sent_before


def test_an_inference_failure_closes_with_1011_and_frees_the_slot() -> None:
    harness = started()
    harness.audio(0, 16000)
    harness.compute(fail=RuntimeError("model process died"))
    assert harness.closed is not None and harness.closed.code == 1011
    assert harness.closed.kind == "inference" and "model process died" in harness.closed.message
    assert len(harness.registry) == 0


def test_backpressure_and_withdraw_on_disconnect() -> None:
    harness = Harness(max_queued=10)
    harness.text({"type": "StartSession"})
    harness.audio(0, 16000)  # 14 frames ready, none computed
    assert harness.connection.backlogged
    harness.connection.connection_lost()
    harness.collect()
    assert harness.withdrawn and len(harness.registry) == 0


# -- shared state: questions out, answers in ---------------------------------------------------


class OpenTenant:
    """Tenant hooks that allow everything: the core then asks to charge every push."""

    session_limit: int | None = None

    def check(self, request: object) -> None:
        pass

    def session_started(self, session_id: str) -> None:
        pass

    def session_ended(
        self, session_id: str, stats: SessionCounters, sample_rate: int, frames: int
    ) -> None:
        pass


def test_messages_wait_behind_a_store_answer_and_keep_their_order() -> None:
    harness = Harness(answer=False, hooks=OpenTenant())
    harness.text({"type": "StartSession"})
    (acquire,) = harness.asked
    assert isinstance(acquire, AcquireSlot) and harness.connection.backlogged
    harness.audio(0, 16000)
    harness.text({"type": "EndSession"})
    assert harness.sent == [] and harness.jobs == []  # nothing overtakes the answer
    harness.connection.slot_granted(SessionStats(session_id=acquire.session_id, started_at=0,
                                                 sample_rate=16000))  # fmt: skip
    harness.collect()
    assert [type(m).__name__ for m in harness.sent] == ["SessionStarted"]
    assert harness.asked[-1] == ChargeAudio(1.0) and harness.connection.backlogged
    harness.connection.audio_refused(ProtocolError("Quota: 1 s", "quota", retry_after_s=3.0))
    harness.collect()
    assert harness.errors() == ["quota"] and harness.jobs == []  # the push dropped, then:
    assert type(harness.sent[-1]).__name__ == "SessionEnded"
    assert harness.asked[-1] == ReleaseSlot(acquire.session_id)
    assert not harness.connection.backlogged


def test_granted_audio_makes_the_same_frames() -> None:
    harness = Harness(hooks=OpenTenant())
    harness.text({"type": "StartSession"})
    harness.audio(0, 16000)
    harness.compute()
    assert [f.frame_index for f in harness.sent[1:]] == list(range(len(harness.sent) - 1))
    assert len(harness.sent) > 20


def test_a_slot_granted_after_the_client_left_is_released() -> None:
    harness = Harness(answer=False)
    harness.text({"type": "StartSession"})
    (acquire,) = harness.asked
    harness.connection.connection_lost()
    harness.connection.slot_granted(SessionStats(session_id=acquire.session_id, started_at=0,
                                                 sample_rate=16000))  # fmt: skip
    harness.collect()
    assert harness.asked[-1] == ReleaseSlot(acquire.session_id) and harness.sent == []


class UnreachableStore(SessionRegistry):
    async def acquire(self, *args: Any, **kwargs: Any) -> SessionStats | None:
        raise StoreUnavailable("the shared store (Redis) did not answer within 0.5 s")


def test_an_unreachable_store_is_named_never_reported_as_quota_or_busy() -> None:
    harness = Harness(UnreachableStore(4))
    harness.text({"type": "StartSession"})
    assert harness.errors() == ["store_unavailable"]
    error = harness.sent[-1]
    assert "Redis" in error.message and error.retry_after_s == 1.0  # type: ignore[attr-defined]
    assert harness.connection.session is None and not harness.connection.backlogged


def test_set_emotion_applies_to_later_frames_only() -> None:
    harness = started()
    harness.audio(0, 9000)
    before = harness.jobs[-1].parameters
    harness.text({"type": "SetEmotion", "emotions": {"joy": 1.0}})
    harness.audio(9000, 4000)
    assert "EMOTION" not in before
    assert harness.jobs[-1].parameters["EMOTION"][INFO.emotions.index("joy")] == 1.0


# -- hostile or idle clients -----------------------------------------------------------------


def test_deep_or_out_of_range_json_gets_an_error_and_the_session_goes_on() -> None:
    harness = started()
    harness.text('{"type":"EndSession","x":' + "[" * 1000 + "]" * 1000 + "}")
    harness.text({"type": "SetEmotion", "emotions": {"joy": 1e39}})
    assert harness.errors() == ["invalid_message", "invalid_message"]
    assert "must lie in [0, 1]" in harness.sent[-1].message  # type: ignore[attr-defined]
    harness.audio(0, 16000)
    assert harness.jobs and harness.closed is None


def test_out_of_range_postprocess_is_refused_at_start_session() -> None:
    harness = Harness()
    harness.text({"type": "StartSession", "postprocess": {"multipliers": {"jawOpen": 1e39}}})
    assert harness.errors() == ["invalid_message"]
    assert "[-1000, 1000]" in harness.sent[0].message  # type: ignore[attr-defined]
    assert len(harness.registry) == 0


def test_idle_closes_with_idle_timeout_unless_frames_are_owed() -> None:
    harness = started()
    harness.audio(0, 16000)
    harness.connection.idle(60)  # frames still in Triton: the client is waiting on us
    assert harness.closed is None
    harness.compute()
    harness.connection.idle(60)
    harness.collect()
    assert harness.closed == Close(1008, "idle_timeout", "No message for 60 s (idle timeout)")
    assert len(harness.registry) == 0
    before = len(harness.sent)
    harness.text({"type": "StartSession"})  # a closed connection takes no more input
    assert len(harness.sent) == before


def test_a_closed_connection_holds_no_reference_to_its_driver() -> None:
    """The driver passes a hook bound to itself; a lost connection lets go of it, so the pair
    is not a reference cycle left to the garbage collector."""
    connection = started().connection
    assert getattr(connection.on_job_done, "__self__", None) is connection
    connection.connection_lost()
    assert getattr(connection.on_job_done, "__self__", None) is None
