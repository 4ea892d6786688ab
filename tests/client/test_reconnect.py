"""The streaming client resumes a stream in a new session (unit: a fake gateway in-process).

The fake computes frame k of a session as the audio sample at its timestamp, so a frame shows
which audio the session saw there: after a resume, every frame must still show the stream's
own sample at the stream's timestamp. The real gateway behind HAProxy: tests/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from a2f_client import ServerError, stream
from a2f_client.resume import RESUME_CONTEXT_SAMPLES
from a2f_protocol.clock import FrameClock
from a2f_protocol.frames import pack_frame, parse_push_audio
from a2f_protocol.messages import (
    SHUTTING_DOWN,
    ChannelGroup,
    Error,
    FrameRate,
    SessionEnded,
    SessionOptions,
    SessionStarted,
    encode_message,
)

CLOCK = FrameClock(Fraction(60))
LEAD = 4160
SAMPLES = 16_000 * 3
AUDIO = (np.arange(SAMPLES) % 32_000).astype(np.int16)


def started(n: int) -> str:
    return encode_message(
        SessionStarted(
            session_id=f"s{n}", model="a2f", options=SessionOptions(), sampling_rate=16_000,
            frame_rate=FrameRate(60, 1), weight_count=1, channels=["jawOpen"],
            channel_groups=[ChannelGroup("arkit", 1)],
        )
    ).decode()  # fmt: skip


class FakeGateway:
    """Sessions that compute frames from the audio; session n ends after `cut_after[n]` frames
    (by `how`: an Error code, or "cut" for a close without a word)."""

    def __init__(self, cut_after: dict[int, int], how: str = SHUTTING_DOWN) -> None:
        self.cut_after = cut_after
        self.how = how
        self.sessions = 0
        self.first_samples: list[int] = []  # the first audio each session got
        self.emotions: list[tuple[int, int, Any]] = []  # (session, at sample, emotions)

    async def handle(self, ws: ServerConnection) -> None:
        n, self.sessions = self.sessions, self.sessions + 1
        request = json.loads(await ws.recv())
        assert request["type"] == "StartSession"
        self.emotions.append((n, 0, request.get("emotions")))
        await ws.send(started(n))
        audio = np.zeros(0, np.int16)
        sent, ended = 0, False
        async for message in ws:
            if isinstance(message, bytes):
                push = parse_push_audio(message)
                if audio.size == 0:
                    self.first_samples.append(int(push.pcm[0]))
                assert push.start_sample_index == audio.size
                audio = np.concatenate([audio, push.pcm])
            else:
                control = json.loads(message)
                ended = control["type"] == "EndSession"
                if control["type"] == "SetEmotion":
                    self.emotions.append((n, audio.size, control["emotions"]))
            ready = CLOCK.frames_before(audio.size if ended else audio.size - LEAD)
            while sent < ready:
                if sent == self.cut_after.get(n):
                    if self.how == "cut":
                        await ws.close(1011)
                    else:
                        await ws.send(encode_message(Error("going", self.how)).decode())
                        await ws.close(1001)
                    return
                at = CLOCK.timestamp(sent)
                value = float(audio[at]) if at < audio.size else 0.0
                await ws.send(pack_frame(sent, at, CLOCK.timestamp(sent + 1), [value]))
                sent += 1
            if ended:
                await ws.send(encode_message(SessionEnded(f"s{n}")).decode())
                return


async def frames_through(fake: FakeGateway, **options: Any) -> list[Any]:
    async with serve(fake.handle, "127.0.0.1", 0, max_queue=None) as server:
        port = server.sockets[0].getsockname()[1]
        frames = stream(AUDIO, f"ws://127.0.0.1:{port}/", chunk_seconds=0.05, **options)
        return [frame async for frame in frames]


def check_continuous(frames: list[Any]) -> None:
    count = CLOCK.frames_before(SAMPLES)
    assert [f.frame_index for f in frames] == list(range(count))
    assert [f.timestamp_current for f in frames] == [CLOCK.timestamp(k) for k in range(count)]
    assert [f.timestamp_next for f in frames] == [CLOCK.timestamp(k + 1) for k in range(count)]
    assert [f.weights[0] for f in frames] == [
        float(AUDIO[CLOCK.timestamp(k)]) for k in range(count)
    ]


@pytest.mark.parametrize("how", [SHUTTING_DOWN, "cut"])
def test_a_stream_goes_on_in_a_new_session_after_the_gateway_leaves(how: str) -> None:
    fake = FakeGateway({0: 70, 1: 40}, how)
    seen: list[SessionStarted] = []
    frames = asyncio.run(frames_through(fake, on_started=seen.append))
    check_continuous(frames)
    assert [s.session_id for s in seen] == ["s0", "s1", "s2"]
    # A new session starts the resend context before its first missing frame (at most one
    # 800-sample step more, where 60 fps and 16 kHz meet exactly), not from the top.
    assert fake.first_samples[0] == 0
    first_frame_of_second = fake.first_samples[1] * 60 // 16_000
    for origin, missing in zip(
        fake.first_samples[1:], (70, first_frame_of_second + 40), strict=True
    ):
        latest = CLOCK.timestamp(missing) - RESUME_CONTEXT_SAMPLES
        assert latest - 800 < origin <= latest


def test_other_errors_and_too_many_cuts_reach_the_caller() -> None:
    with pytest.raises(ServerError) as busy:
        asyncio.run(frames_through(FakeGateway({0: 10}, "busy")))
    assert busy.value.code == "busy"
    with pytest.raises(ServerError) as gone:
        asyncio.run(frames_through(FakeGateway({n: 10 for n in range(4)}), reconnects=2))
    assert gone.value.code == SHUTTING_DOWN


def test_a_live_source_is_read_once_across_sessions() -> None:
    async def microphone() -> AsyncIterator[np.ndarray]:
        for start in range(0, SAMPLES, 320):
            yield AUDIO[start : start + 320]
            await asyncio.sleep(0)

    async def run() -> list[Any]:
        fake = FakeGateway({0: 50})
        async with serve(fake.handle, "127.0.0.1", 0, max_queue=None) as server:
            port = server.sockets[0].getsockname()[1]
            return [f async for f in stream(microphone(), f"ws://127.0.0.1:{port}/")]

    check_continuous(asyncio.run(run()))


@pytest.mark.parametrize("cut_at", [50, 100], ids=["before-the-change", "after-the-change"])
def test_emotion_changes_take_effect_at_the_same_audio_in_a_resumed_session(cut_at: int) -> None:
    fake = FakeGateway({0: cut_at})
    joy = {"joy": 1.0}
    check_continuous(asyncio.run(frames_through(fake, emotion_changes=[(1.0, joy)])))
    first_session = [(0, 0, None), (0, 16_000, joy)]
    origin = fake.first_samples[1]
    if origin < 16_000:  # the resend crosses the change: made again at the same audio
        assert fake.emotions == [*first_session, (1, 0, None), (1, 16_000 - origin, joy)]
    else:  # the resend starts after it: the new session starts with it
        assert fake.emotions == [*first_session, (1, 0, joy)]
