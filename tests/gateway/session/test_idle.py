"""Idle frames (the StartSession `idle` extension) in the connection core, on a fake clock.

The "model" is a fake: every row holds `SPEECH` (a wide-open mouth), far from the idle face,
so a hand-over without blending would show as a jump.
"""

from __future__ import annotations

import itertools
import math

import msgspec
import numpy as np
import pytest

from a2f_protocol.frames import BlendshapeFrame, pack_push_audio, unpack_frame
from a2f_protocol.messages import decode_server_message
from gateway.drivers.shared_state import carry_out
from gateway.inference.batch import Job
from gateway.metrics import Metrics
from gateway.session.connection import (
    IDLE_AFTER_S,
    AcquireSlot,
    ChargeAudio,
    Close,
    Connection,
    ConnectionLimits,
    ReleaseSlot,
    SendFrames,
    SendText,
    Submit,
)
from gateway.session.idle import HANDOVER_S
from gateway.stores.local import SessionRegistry
from tests.gateway.session.test_connection import INFO, OUTPUTS, PROFILE, at_once

FPS = float(PROFILE.fps)
TICK = 1 / FPS
CHANNELS = INFO.blendshapes + INFO.visemes
JAW, BLINK = CHANNELS.index("jawOpen"), CHANNELS.index("eyeBlinkLeft")
LOOKAHEAD_S = (INFO.window - INFO.offset) / INFO.sample_rate
SPEECH = np.full(OUTPUTS, 0.6, np.float32)


class Clocked:
    """A connection driven as a driver would: messages and ticks at fake times."""

    def __init__(self, start: dict[str, object]) -> None:
        self.registry = SessionRegistry(4)
        self.connection = Connection(INFO, PROFILE, Metrics(), ConnectionLimits(4096))
        self.now = 0.0
        self.jobs: list[Job] = []
        self.frames: list[BlendshapeFrame] = []
        self.raw: list[bytes] = []
        self.idle_flags: list[bool] = []
        self.errors: list[str | None] = []
        self.closed: Close | None = None
        self.text(msgspec.json.encode({"type": "StartSession", **start}).decode())

    def text(self, data: str) -> None:
        self.connection.receive_text(data, self.now)
        self.collect()

    def audio(self, start: int, samples: int) -> None:
        pcm = (3000 * np.sin(np.arange(samples) / 7)).astype(np.int16)
        self.connection.receive_bytes(pack_push_audio(start, pcm), self.now)
        self.collect()

    def run_until(self, end: float) -> None:
        """Ticks every frame period up to `end` (the last at `end`), the model answering at
        once."""
        while self.now < end - 1e-9:
            self.now = min(self.now + TICK, end)
            self.connection.tick(self.now)
            self.collect()

    def collect(self) -> None:
        while actions := self.connection.take_actions():
            for action in actions:
                match action:
                    case Submit(job):
                        self.jobs.append(job)
                    case SendText(data):
                        message = decode_server_message(data)
                        if type(message).__name__ == "Error":
                            self.errors.append(message.code)  # type: ignore[union-attr]
                        self.connection.sent(1)
                    case SendFrames(frames=frames, idle=idle):
                        self.raw += frames
                        self.frames += [unpack_frame(f) for f in frames]
                        self.idle_flags += [idle] * len(frames)
                        self.connection.sent(len(frames))
                    case Close():
                        self.closed = action
                    case AcquireSlot() | ChargeAudio() | ReleaseSlot():
                        at_once(carry_out(action, self.connection, self.registry))
            jobs, self.jobs = self.jobs, []
            for job in jobs:
                job.done(job, np.repeat(SPEECH[np.newaxis], job.count, axis=0))

    def weights(self, channel: int) -> np.ndarray:
        return np.array([f.weights[channel] for f in self.frames])


def check_contiguous(frames: list[BlendshapeFrame]) -> None:
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    for before, after in itertools.pairwise(frames):
        assert before.timestamp_next == after.timestamp_current


def test_frames_keep_coming_at_the_frame_rate_without_audio() -> None:
    session = Clocked({"idle": True, "channels": "all"})
    counts = []
    for second in range(1, 31):
        before = len(session.frames)
        session.run_until(second)
        counts.append(len(session.frames) - before)
    check_contiguous(session.frames)
    assert all(session.idle_flags)  # made without the model: silence needs no inference
    # Frames follow real time, a pause's latency (IDLE_AFTER_S) plus a window's lookahead
    # behind it, one frame period each.
    assert all(count in (29, 30, 31) for count in counts[2:]), counts
    latest = session.frames[-1].timestamp_current / INFO.sample_rate
    assert 30 - IDLE_AFTER_S - LOOKAHEAD_S - 2 * TICK <= latest <= 30 - IDLE_AFTER_S


def test_blinks_come_every_two_to_ten_seconds_and_breathing_varies() -> None:
    session = Clocked({"idle": True, "channels": "all", "seed": 7})
    session.run_until(120)
    blink = session.weights(BLINK)
    closed = blink >= 0.5
    onsets = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    times = onsets / FPS
    assert times[0] <= 10
    gaps = np.diff(times)
    assert gaps.min() >= 2 and gaps.max() <= 10, gaps
    # Breathing: the jaw rises and falls, and no two breaths alike.
    jaw = session.weights(JAW)[int(2 * FPS) :]  # past the ease-in
    assert jaw.max() - jaw.min() > 0.03
    peaks = [i for i in range(1, jaw.size - 1) if jaw[i - 1] < jaw[i] >= jaw[i + 1]]
    assert 20 <= len(peaks) <= 40  # 10-20 breaths a minute
    depths, periods = jaw[peaks], np.diff(peaks) / FPS
    assert depths.max() - depths.min() > 0.005 and periods.max() - periods.min() > 0.3


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_speech_takes_over_smoothly_at_the_real_time_index(smoothing: float) -> None:
    start = {"idle": True, "channels": "all", "postprocess": {"smoothing": smoothing}}
    session = Clocked(start)
    session.run_until(5)
    paused = len(session.frames)
    for chunk in range(50):  # 2 s of speech in 40 ms chunks, each at its real-time index
        session.audio(5 * INFO.sample_rate + 640 * chunk, 640)
        session.run_until(5 + 0.04 * (chunk + 1))
    session.run_until(session.now + 3)  # and a pause again
    frames = session.frames
    check_contiguous(frames)
    assert session.errors == [] and session.connection.session is not None
    assert session.connection.session.pipeline.stream.lag == 0  # nothing landed behind
    flags = session.idle_flags
    assert all(flags[:paused]) and not all(flags) and flags[-1]
    # No channel but the eyelids jumps: the blend into speech takes HANDOVER_S, at most
    # SPEECH / frames of it per frame (smoothing only spreads steps further).
    rows = np.array([f.weights for f in frames])
    steps = np.abs(np.diff(np.delete(rows, [BLINK, CHANNELS.index("eyeBlinkRight")], 1), axis=0))
    handover = max(1, round(HANDOVER_S * FPS))
    assert steps.max() <= 0.6 / (handover + 1) + 0.01
    assert rows[flags.index(False) + handover + 2, JAW] == pytest.approx(0.6, abs=0.05)


def test_audio_that_lands_behind_a_pause_follows_it() -> None:
    session = Clocked({"idle": True})
    session.run_until(3)
    covered = session.frames[-1].timestamp_next
    session.audio(0, 16000)  # a client counting only its own samples
    session.run_until(3.5)
    stream = session.connection.session.pipeline.stream  # type: ignore[union-attr]
    assert session.errors == [] and stream.lag >= covered
    session.audio(16000, 1600)  # the next push follows on, moved by the same lag
    session.audio(16000, 1600)  # audio over audio is still out of order
    assert session.errors == ["out_of_order"]
    assert session.connection.audio_lag == stream.lag
    session.text('{"type":"EndSession"}')  # its tail frames still map past the lag
    assert session.connection.session is None and session.connection.audio_lag == stream.lag
    check_contiguous(session.frames)


def test_idle_timeout_closes_a_silent_client_whose_frames_go_on() -> None:
    session = Clocked({"idle": True})
    session.run_until(2)
    session.connection.queued_units += 1  # a pause's frame still on its way
    session.connection.idle(60)
    session.collect()
    assert session.closed is not None and session.closed.kind == "idle_timeout"
    assert session.connection.tick_period is None


def test_idle_timeout_spares_a_client_waiting_for_speech_frames() -> None:
    session = Clocked({"idle": True})
    session.connection.receive_bytes(pack_push_audio(0, np.ones(16000, np.int16)), 0.0)
    session.connection.take_actions()  # its job stays out
    session.connection.idle(60)
    assert session.connection.take_actions() == [] and not session.connection.closed


def test_without_the_extension_ticks_do_nothing_and_frames_are_byte_identical() -> None:
    def run(start: dict[str, object]) -> list[bytes]:
        session = Clocked(start)
        assert session.connection.tick_period is None
        for chunk in range(10):
            session.audio(chunk * 4000, 4000)
            session.run_until(session.now + 2)
        session.text('{"type":"EndSession"}')
        return session.raw

    absent = run({})
    assert len(absent) == math.floor(40000 * FPS / INFO.sample_rate)
    assert run({"idle": False}) == absent
    assert run({"idle": False, "seed": 3, "channels": "all"}) == run({"seed": 3, "channels": "all"})
