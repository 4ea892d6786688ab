"""The gateway's only door to Triton: one shared gRPC (asyncio) client. Windows go to the
ensemble (`a2f`); long files go as contiguous spans to `a2f_span`, which frames them
server-side and calls the same ensemble (`infer_span`).

Calls from many sessions are merged into few Triton requests (`merge_in_flight`): a call
that finds `merge_in_flight` requests already running waits, and when one returns, every
call that waited meanwhile leaves as one request. An idle gateway therefore sends each call
at once (no added delay), and a busy one sends a few large requests instead of one small
request per PushAudio: profiling showed the per-request cost (gRPC in the gateway, ensemble
scheduling and two python-backend round trips in Triton) dominating the CPU at 30 fps,
while the network itself is cheap per window. Triton's dynamic batcher still merges the
requests in flight (and those of other gateways).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

OUTPUTS = ("BLENDSHAPES", "VISEMES")
# Windows per merged request, at most (a single larger call still goes alone). Measured: a
# backlog merged into requests of hundreds of windows (tens of MB) costs more per window than
# it saves (copies into fresh pages, shared-memory growth in the python backend) and keeps the
# backlog alive; capped requests drain it.
MERGE_MAX_ROWS = 64
SPAN_MODEL = "a2f_span"  # server-side framing in front of the ensemble
# tritonclient's message-size defaults, plus a short reconnect backoff: with gRPC's default
# (1 s, growing to 120 s) a restarted Triton stays unreachable for up to two minutes, every
# request failing fast meanwhile; 100 ms growing to 1 s brings the gateway back within a
# second of Triton being back (tests/gateway/test_triton_outage.py).
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class InferenceError(RuntimeError):
    """Triton refused or failed a request."""


@dataclass(slots=True)
class _Call:
    """One `submit` call waiting to be merged into a request."""

    windows: npt.NDArray[np.float32]
    parameters: Mapping[str, npt.NDArray[np.float32]]
    result: asyncio.Future[npt.NDArray[np.float32]]


class TritonClient:
    """Batched inference of audio windows through one ensemble.

    Every request's batch dimension is frames; with `merge_in_flight` > 0 the frames of
    concurrent calls (any sessions, same parameter names) share requests, at most that many
    requests run at once. 0 sends every call as its own request.
    """

    def __init__(self, url: str, model: str, merge_in_flight: int = 2) -> None:
        self.url = url
        self.model = model
        self.merge_in_flight = merge_in_flight
        self._client = grpcclient.InferenceServerClient(url, channel_args=CHANNEL_ARGS)
        # Calls waiting for a free request slot, by their parameter names (rows of calls
        # with the same names stack; others go in a request of their own).
        self._waiting: dict[tuple[str, ...], deque[_Call]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def ready(self, model: str | None = None) -> bool:
        """Server live and `model` (default: the ensemble) loaded."""
        try:
            return bool(await self._client.is_server_ready()) and bool(
                await self._client.is_model_ready(model or self.model)
            )
        except InferenceServerException:
            return False

    async def infer_span(
        self,
        samples: npt.NDArray[np.float32],
        centres: npt.NDArray[np.int64],
        parameters: Mapping[str, npt.NDArray[np.float32]],
    ) -> npt.NDArray[np.float32]:
        """`[frames, 52 + 15]` for the windows centred on `centres` (relative to the start of
        the contiguous 16 kHz `samples`; zeros outside them), framed by Triton: the audio
        crosses the network once instead of once per overlapping window.

        `parameters` maps optional ensemble inputs to one row; it applies to every frame.
        """
        tensors = [
            _tensor("AUDIO_SPAN", samples, "FP32"),
            _tensor("FRAME_CENTERS", centres, "INT64"),
        ]
        tensors += [_tensor(name, row.reshape(-1), "FP32") for name, row in parameters.items()]
        return await self._infer(SPAN_MODEL, tensors, int(centres.size))

    def submit(
        self, windows: npt.NDArray[np.float32], parameters: Mapping[str, npt.NDArray[np.float32]]
    ) -> asyncio.Future[npt.NDArray[np.float32]]:
        """A future of `[frames, 52 + 15]`: blendshapes then visemes per window.

        `parameters` maps optional ensemble inputs to one row; it applies to every frame.
        Cancel the future to withdraw the call. A merged call costs no task of its own: the
        streaming path submits one per PushAudio.
        """
        if self.merge_in_flight <= 0:
            return asyncio.ensure_future(self._request(windows, parameters))
        call = _Call(windows, parameters, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(tuple(sorted(parameters)), deque()).append(call)
        self._launch()
        return call.result

    def _launch(self) -> None:
        while self._waiting and len(self._running) < self.merge_in_flight:
            key = next(iter(self._waiting))
            queue = self._waiting[key]
            calls, rows = [], 0
            while queue and (not calls or rows + queue[0].windows.shape[0] <= MERGE_MAX_ROWS):
                call = queue.popleft()
                if not call.result.done():  # a session that went away cancelled its call
                    calls.append(call)
                    rows += call.windows.shape[0]
            if not queue:
                del self._waiting[key]
            if calls:
                task = asyncio.create_task(self._merged(calls))
                self._running.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._launch()

    async def _merged(self, calls: list[_Call]) -> None:
        try:
            if len(calls) == 1:
                results = [await self._request(calls[0].windows, calls[0].parameters)]
            else:
                results = await self._merged_request(calls)
        except InferenceError as exc:
            if len(calls) == 1:
                _settle(calls[0].result, exc)
                return
            # One bad call must not fail the others: ask again one by one.
            for call in calls:
                try:
                    _settle(call.result, await self._request(call.windows, call.parameters))
                except InferenceError as single:
                    _settle(call.result, single)
            return
        except BaseException:
            for call in calls:
                call.result.cancel()
            raise
        for call, result in zip(calls, results, strict=True):
            _settle(call.result, result)

    async def _merged_request(self, calls: list[_Call]) -> list[npt.NDArray[np.float32]]:
        counts = [call.windows.shape[0] for call in calls]
        windows = np.concatenate([call.windows for call in calls])
        parameters = {
            name: np.concatenate(
                [
                    np.broadcast_to(c.parameters[name], (n, c.parameters[name].size))
                    for c, n in zip(calls, counts, strict=True)
                ]
            )
            for name in calls[0].parameters
        }
        merged = await self._request(windows, parameters)
        return np.split(merged, np.cumsum(counts)[:-1])

    async def _request(
        self, windows: npt.NDArray[np.float32], parameters: Mapping[str, npt.NDArray[np.float32]]
    ) -> npt.NDArray[np.float32]:
        """One Triton request; a parameter is one row for all frames or one row per frame."""
        frames = windows.shape[0]
        tensors = {"AUDIO": windows}
        for name, rows in parameters.items():
            width = rows.shape[-1]
            tensors[name] = np.ascontiguousarray(np.broadcast_to(rows, (frames, width)))
        inputs = [_tensor(name, array, "FP32") for name, array in tensors.items()]
        return await self._infer(self.model, inputs, frames)

    async def _infer(
        self, model: str, inputs: list[grpcclient.InferInput], frames: int
    ) -> npt.NDArray[np.float32]:
        outputs = [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]
        try:
            result = await self._client.infer(model, inputs, outputs=outputs)
        except InferenceServerException as exc:
            raise InferenceError(exc.message() or str(exc)) from exc
        parts = [result.as_numpy(name) for name in OUTPUTS]
        if any(part is None or part.shape[0] != frames for part in parts):
            raise InferenceError("Triton returned an unexpected output shape")
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    async def close(self) -> None:
        for task in self._running:
            task.cancel()
        await self._client.close()


def _tensor(name: str, array: npt.NDArray[np.generic], dtype: str) -> grpcclient.InferInput:
    numpy_type = np.float32 if dtype == "FP32" else np.int64
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=numpy_type))
    return tensor


def _settle(
    future: asyncio.Future[npt.NDArray[np.float32]], outcome: npt.NDArray[np.float32] | Exception
) -> None:
    if future.done():  # cancelled by its session meanwhile
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
