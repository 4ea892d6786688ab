"""The dispatcher merges sessions' frames into few Triton requests, invisibly (real Triton)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from a2f_protocol.clock import FrameClock
from gateway.inference.admission import Admission
from gateway.inference.batch import Job, Outcome, SpanBatch
from gateway.inference.dispatcher import Dispatcher
from gateway.inference.scheduler import FairScheduler
from gateway.inference.shared_inputs import SharedInputs
from gateway.inference.triton_client import TritonClient
from gateway.metrics import Metrics
from gateway.model_info import ModelInfo
from gateway.session.audio import AudioAccumulator
from gateway.session.config import emotion_parameters, neutral_parameters

INFO = ModelInfo.load(Path(__file__).resolve().parents[2] / "model_repository")


def span(frames: int, seed: int) -> SpanBatch:
    accumulator = AudioAccumulator(FrameClock(Fraction(30)), INFO.window, INFO.offset)
    audio = np.random.default_rng(seed).uniform(-0.5, 0.5, 16000).astype(np.float32)
    accumulator.append(audio)
    batch = accumulator.take_span(frames)
    assert batch is not None and batch.count == frames
    return batch


async def run_jobs(
    triton: TritonClient,
    in_flight: int,
    jobs: list[tuple[SpanBatch, dict]],
    admission: Admission | None = None,
    shared: SharedInputs | None = None,
) -> list[Outcome]:
    dispatcher = Dispatcher(
        triton,
        FairScheduler(max_rows=8, session_rows=3),
        window=INFO.window,
        offset=INFO.offset,
        neutral=neutral_parameters(INFO),
        in_flight=in_flight,
        tick_s=0.002,
        metrics=Metrics(),
        admission=admission or Admission(0.05),
        shared=shared,
    )
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in jobs]
    dispatcher.start()
    try:
        for i, (batch, parameters) in enumerate(jobs):
            done = futures[i]
            dispatcher.submit(Job(i, batch, parameters, lambda _, out, f=done: f.set_result(out)))
        return await asyncio.gather(*futures)
    finally:
        await dispatcher.close()


async def test_merged_requests_equal_separate_requests(triton) -> None:
    client = TritonClient(triton.grpc_url, "a2f")
    joy = emotion_parameters({"joy": 1.0}, None, INFO)
    jobs = [(span(1 + i % 5, i), joy if i % 2 else {}) for i in range(12)]
    # a bound no real request meets: every observed small job is "late"
    admission = Admission(1e-9, min_samples=1)
    try:
        merged = await run_jobs(client, 1, jobs, admission)
        alone = [await client.infer(windows(b), p) for b, p in jobs]
    finally:
        await client.close()
    for got, want, (batch, _) in zip(merged, alone, jobs, strict=True):
        assert isinstance(got, np.ndarray)
        assert got.shape == (batch.count, 52 + 15)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert admission.refusal(time.monotonic()) is not None  # the dispatcher reported them


async def test_audio_through_shared_memory_equals_audio_in_the_request(triton) -> None:
    client = TritonClient(triton.grpc_url, "a2f")
    shared = SharedInputs(2, 8 * INFO.window)
    client.share_inputs(shared)
    jobs = [(span(1 + i % 4, 40 + i), {}) for i in range(10)]
    try:
        through_memory = await run_jobs(client, 2, jobs, shared=shared)
        # Triton forgets the region (as when it restarts): the same request goes as bytes
        # and the region is registered again
        await client._client.unregister_system_shared_memory(shared.region)
        after_loss = await run_jobs(client, 2, jobs, shared=shared)
        status = await client._client.get_system_shared_memory_status(shared.region)
        alone = [await client.infer(windows(b), p) for b, p in jobs]
    finally:
        await client.close()
        shared.close()
    for got, again, want in zip(through_memory, after_loss, alone, strict=True):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(again, want)
    assert len(status.regions) == 1


async def test_an_unreachable_triton_fails_every_job(triton) -> None:
    client = TritonClient("127.0.0.1:9", "a2f", timeout_s=2.0)
    try:
        outcomes = await run_jobs(client, 2, [(span(2, 0), {}), (span(3, 1), {})])
    finally:
        await client.close()
    assert all(isinstance(outcome, Exception) for outcome in outcomes)


def windows(batch: SpanBatch) -> np.ndarray:
    out = np.empty((batch.count, INFO.window), np.float32)
    batch.cut_windows(out, slice(None), INFO.window, INFO.offset)
    return out


class MarkedTriton:
    """A stand-in Triton that answers after `delay_s` and notes, per request, its upload rows
    (their audio is all 1.0, streams' -1.0) and how many upload requests were out at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.requests: list[tuple[int, int]] = []  # (stream rows, upload rows)
        self.out = 0
        self.most_out = 0

    async def infer(self, windows: np.ndarray, parameters: dict, slot=None) -> np.ndarray:  # type: ignore[no-untyped-def]
        uploads = int((windows.max(axis=1) == 1.0).sum())
        self.requests.append((windows.shape[0] - uploads, uploads))
        self.out += uploads > 0
        self.most_out = max(self.most_out, self.out)
        await asyncio.sleep(self.delay_s)
        self.out -= uploads > 0
        return np.zeros((windows.shape[0], 4), np.float32)


def marked_span(frames: int, value: float) -> SpanBatch:
    accumulator = AudioAccumulator(FrameClock(Fraction(30)), INFO.window, INFO.offset)
    accumulator.append(np.full(INFO.window + frames * 534, value, np.float32))
    batch = accumulator.take_span(frames)
    assert batch is not None and batch.count == frames
    return batch


async def run_upload_beside(streams: int, delay_s: float) -> tuple[MarkedTriton, Metrics]:
    """One 300-frame upload of tenant "u" beside `streams` streams of tenant "s" that each
    send a frame every 5 ms until the upload is done."""
    triton, metrics = MarkedTriton(delay_s), Metrics()
    dispatcher = Dispatcher(
        triton,  # type: ignore[arg-type]
        FairScheduler(max_rows=16, session_rows=4),
        window=INFO.window,
        offset=INFO.offset,
        neutral=neutral_parameters(INFO),
        in_flight=2,
        tick_s=0.002,
        metrics=metrics,
        admission=Admission(0.05),
    )
    loop = asyncio.get_running_loop()
    upload: asyncio.Future[Outcome] = loop.create_future()
    stream_jobs: list[asyncio.Future[Outcome]] = []

    def settle(future: asyncio.Future[Outcome]) -> Callable[[Job, Outcome], None]:
        return lambda _, outcome: future.set_result(outcome)

    dispatcher.start()
    try:
        job = Job("upload", marked_span(300, 1.0), {}, settle(upload), "u", live=False, bulk=True)
        dispatcher.submit(job)
        while not upload.done():
            for owner in range(streams):
                stream_jobs.append(loop.create_future())
                live = Job(owner, marked_span(1, -1.0), {}, settle(stream_jobs[-1]), "s")
                dispatcher.submit(live)
            await asyncio.sleep(0.005)
        outcomes = await asyncio.gather(upload, *stream_jobs)
    finally:
        await dispatcher.close()
    assert all(isinstance(outcome, np.ndarray) for outcome in outcomes)
    return triton, metrics


def dispatched(metrics: Metrics, lane: str) -> float:
    return metrics.registry.get_sample_value("a2f_dispatched_frames_total", {"lane": lane}) or 0


async def test_an_upload_goes_in_its_own_half_requests_one_at_a_time_beside_streams() -> None:
    triton, metrics = await run_upload_beside(streams=4, delay_s=0.004)
    with_uploads = [uploads for _, uploads in triton.requests if uploads]
    assert sum(with_uploads) == 300 == dispatched(metrics, "upload")
    assert max(with_uploads) <= 16 // 2 and triton.most_out == 1
    assert all(not (rows and uploads) for rows, uploads in triton.requests)  # never mixed
    assert sum(rows for rows, _ in triton.requests) == dispatched(metrics, "stream")


async def test_an_upload_alone_takes_whole_requests_and_every_slot() -> None:
    triton, metrics = await run_upload_beside(streams=0, delay_s=0.004)
    assert max(uploads for _, uploads in triton.requests) == 16 and triton.most_out == 2
    assert dispatched(metrics, "upload") == 300


async def test_the_bytes_sent_to_triton_are_counted() -> None:
    _, metrics = await run_upload_beside(streams=2, delay_s=0.004)
    frames = dispatched(metrics, "stream") + dispatched(metrics, "upload")
    sent = metrics.registry.get_sample_value("a2f_triton_input_bytes_total")
    assert frames > 0 and sent == frames * INFO.window * 4  # float32 windows, no parameters
