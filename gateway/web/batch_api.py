"""`POST /v1/animate`: an audio file in, the whole animation out as a streamed response.

Body: the file itself (any Content-Type) or `multipart/form-data` with a `file` part. Session
parameters as in `StartSession` come as query fields (`fps=30`, `emotions=joy:0.8,anger:0.1`
or a JSON object, `emotion_strength`, `channels=arkit|visemes|all|name,name`, `blinks=false`,
`seed`, `postprocess=<JSON>`, `frame_rate=30000/1001`), as a `params=<JSON object>` query field,
or as multipart form fields; unlike a WebSocket session any frame rate may be asked for.
`format=jsonl|csv|a2fb` or the `Accept` header picks the response format (a2f_protocol.export_formats).

Everything that can be wrong with a request is found before the response starts: the body is
spooled to disk (bounded memory), decoded and resampled once into a 16 kHz float32 spool file
(so a truncated file is a 422, not a broken 200), then frames stream out while Triton computes
them. The frames come from the same `FramePipeline` as a WebSocket session (frame clock,
which frames are ready, padded past the end as `EndSession` does, smoothing, blinks, channel
selection).

The frames go through the same dispatcher as every stream's (`gateway.inference.dispatcher`),
as jobs of the caller's tenant marked `bulk`: the scheduler serves them in slices with the
room the streams' frames leave (one request at a time, at most half of it, while any stream
is open; whole requests when none is), round robin across tenants and uploads. So an upload
never delays a live frame by a request, uploads of several tenants share what is left fairly,
and an upload is slowed, not failed, when streams need the host. Admission applies as to a
new session: while the host's live frames are late, or the tenant is over its fair share of
a host past capacity, a new upload gets 503 with `Retry-After` (before its audio is decoded
or charged to the tenant's quota), and may be sent again then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import IO, Any

import msgspec
import numpy as np
import numpy.typing as npt
from litestar import Request, Router, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.response import Stream
from litestar.status_codes import (
    HTTP_403_FORBIDDEN,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from a2f_protocol.audio_files import AudioFileError, check_duration, decode_16k, probe
from a2f_protocol.export_formats import FrameBlock, choose_format, make_encoder
from a2f_protocol.messages import ProtocolError, StartSession, decode_json
from a2f_protocol.params import parse_channels, parse_emotions, parse_frame_rate
from gateway.drivers.asgi import caller_of
from gateway.inference.batch import Job, Outcome, SpanBatch
from gateway.inference.contract import InferenceError
from gateway.inference.dispatcher import Dispatcher
from gateway.services import Services
from gateway.session.config import SessionConfig
from gateway.session.pipeline import FramePipeline
from gateway.settings import Settings
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.quota import STORE_UNAVAILABLE, TenantPolicy
from gateway.tenancy.tenants import Identity
from gateway.web.batch_metrics import BatchMetrics
from gateway.web.batch_openapi import AnimateOperation
from gateway.web.guards import authenticated, entry

JOB_FRAMES = 1024  # frames per job handed to the dispatcher (17 s of audio at 60 fps)
# Jobs per upload waiting at once: the scheduler always has rows of it while we encode the
# frames of the one before. Bounds the upload's audio held in memory to a few jobs' spans.
AHEAD = 2
SPOOL_BYTES = 4 << 20  # in memory up to this, then on disk
COPY_BYTES = 1 << 20
MAX_FPS = 1000
_PARAMETERS = set(StartSession.__struct_fields__) - {"sample_rate"}  # files carry their rate
_SAMPLE = np.dtype("<f4")


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(detail=message, status_code=HTTP_422_UNPROCESSABLE_ENTITY)


def session_request(fields: Mapping[str, str]) -> StartSession:
    """A `StartSession` from query/form text fields (`params` = a JSON object of them)."""
    values: dict[str, Any] = {}
    if "params" in fields:
        parsed = _json_field("params", fields["params"])
        if not isinstance(parsed, dict):
            raise _unprocessable("params must be a JSON object of StartSession fields")
        values = parsed
    for name, raw in fields.items():
        if name in ("params", "format"):
            continue
        if name not in _PARAMETERS:
            raise _unprocessable(
                f"unknown parameter {name!r}; known: format, params, {', '.join(sorted(_PARAMETERS))}"
            )
        values[name] = _field_value(name, raw)
    values.pop("sample_rate", None)
    try:
        return msgspec.convert(values, StartSession, strict=False)
    except msgspec.ValidationError as exc:
        raise _unprocessable(str(exc)) from exc


def _field_value(name: str, raw: str) -> object:
    text = raw.strip()
    if text.startswith(("{", "[")):
        return _json_field(name, text)
    try:
        if name == "emotions":
            return parse_emotions(text)
        if name == "frame_rate":
            rate = parse_frame_rate(text)
            return {"numerator": rate.numerator, "denominator": rate.denominator}
        if name == "channels":
            return parse_channels(text)
    except ValueError as exc:
        raise _unprocessable(str(exc)) from exc
    return text


def _json_field(name: str, text: str) -> object:
    """A JSON query or form field, bounded in size and nesting as a WebSocket message is."""
    try:
        return decode_json(text)
    except ProtocolError as exc:
        raise _unprocessable(f"{name} is not valid JSON: {exc}") from exc


def session_config(request: StartSession, services: Services) -> SessionConfig:
    """Validated like a WebSocket `StartSession`, but the frame rate is the caller's choice."""
    profile = services.profile
    fps = request.requested_frame_rate or profile.fps
    if fps > MAX_FPS:
        raise _unprocessable(f"frame rate {fps} is above the limit of {MAX_FPS}")
    batch_profile = dataclasses.replace(profile, fps=fps)
    try:
        return SessionConfig.from_start(request, batch_profile, services.model)
    except ProtocolError as exc:
        raise _unprocessable(str(exc)) from exc


async def _receive_upload(request: Request[Any, Any, Any]) -> tuple[IO[bytes], dict[str, str]]:
    """The uploaded file (spooled) and the multipart text fields, within the size limit."""
    limit = request.route_handler.resolve_request_max_body_size()
    try:
        if request.content_type[0] == "multipart/form-data":
            return await _multipart(request)
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        return spool, {}
    except RequestEntityTooLarge as exc:
        raise HTTPException(
            detail=f"request body is larger than the limit of {limit} bytes",
            status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        ) from exc


async def _multipart(request: Request[Any, Any, Any]) -> tuple[IO[bytes], dict[str, str]]:
    try:
        form = await request.form()
    except RequestEntityTooLarge:
        raise  # a ClientException too, but it gets its own 413 message
    except ClientException as exc:
        raise _unprocessable(f"bad multipart body: {exc.detail}") from exc
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
    if len(files) != 1:
        raise _unprocessable(f"multipart body must hold exactly one file part, got {len(files)}")
    return files[0].file, fields


def _decode_to_spool(upload: IO[bytes], max_seconds: float) -> tuple[IO[bytes], int]:
    """The whole upload as 16 kHz float32 samples in a spool file, and their count."""
    upload.seek(0, 2)
    if upload.tell() == 0:
        raise _unprocessable("request body is empty: send an audio file")
    check_duration(probe(upload), max_seconds)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    samples = 0
    try:
        for block in decode_16k(upload, max_seconds=max_seconds):
            spool.write(block.astype(_SAMPLE, copy=False).tobytes())
            samples += block.size
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, samples


class Upload:
    """One request's frames in the dispatcher: the owner of its jobs."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        tenant: str,
        parameters: Mapping[str, npt.NDArray[np.float32]],
    ) -> None:
        self.dispatcher = dispatcher
        self.tenant = tenant
        self.parameters = parameters

    def submit(self, batch: SpanBatch) -> asyncio.Future[Outcome]:
        """The batch's model rows (or the error), once the dispatcher has them."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def done(_: Job, outcome: Outcome) -> None:
            if not future.done():  # not if the upload was given up meanwhile
                future.set_result(outcome)

        job = Job(self, batch, self.parameters, done, self.tenant, live=False, bulk=True)
        self.dispatcher.submit(job)
        return future

    def withdraw(self) -> None:
        """Forget the rows still waiting (the client went away, or a job failed)."""
        self.dispatcher.withdraw(self)


async def _rows(future: asyncio.Future[Outcome]) -> npt.NDArray[np.float32]:
    outcome = await future
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def animate_frames(
    pipeline: FramePipeline, upload: Upload, audio: IO[bytes]
) -> AsyncIterator[FrameBlock]:
    """Frames for 16 kHz float32 `audio`, in order, the tail padded as `EndSession` does."""
    stream = pipeline.stream
    step = JOB_FRAMES * max(pipeline.clock.timestamp(1), 1)  # audio for about one job
    pending: deque[tuple[SpanBatch, asyncio.Future[Outcome]]] = deque()
    try:
        finished = False
        while not finished:
            data = audio.read(step * _SAMPLE.itemsize)
            if data:
                # Files arrive at 16 kHz already (decode_16k), so samples go straight in.
                stream.accumulator.append(np.frombuffer(data, dtype=_SAMPLE))
            else:
                stream.finish()
                finished = True
            while (batch := stream.take_span(JOB_FRAMES)) is not None:
                if len(pending) >= AHEAD:
                    done, future = pending.popleft()
                    yield pipeline.shape(done, await _rows(future))
                pending.append((batch, upload.submit(batch)))
        while pending:
            done, future = pending.popleft()
            yield pipeline.shape(done, await _rows(future))
    finally:
        upload.withdraw()


@post(
    "/v1/animate",
    name="animate",
    tags=["batch"],
    status_code=200,
    guards=[authenticated],
    opt=entry("animate"),
    operation_class=AnimateOperation,
)
async def animate(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    settings: NamedDependency[Settings],
    gatekeeper: NamedDependency[Gatekeeper],
    identity: NamedDependency[Identity],
) -> Stream:
    """Animate an audio file (WAV, FLAC, OGG/Vorbis; any rate; stereo is downmixed).

    Errors: 401/403 no, bad or not-allowed key (with a tenants file), 413 body or duration
    over the limit (the tenant's or the server's), 415 not a supported audio format, 422 bad
    parameters or a corrupt/truncated/empty file, 429 the tenant's audio quota is spent (see
    `Retry-After`), 503 Triton not ready, or the host busy (its live frames are late, or the
    tenant is over its fair share of a host past capacity; see `Retry-After`); the `detail`
    says what was wrong. Response headers `X-A2F-Channels`, `X-A2F-Frame-Rate`,
    `X-A2F-Frame-Count` and `X-A2F-Duration` describe the animation before the first frame.
    Frames are computed beside the live streams' frames, in the room those leave.
    """
    policy = TenantPolicy(
        identity, gatekeeper.client(caller_of(request)), gatekeeper.limits, gatekeeper.audit,
        services.metrics, entry="animate",
    )  # fmt: skip
    upload, form_fields = await _receive_upload(request)
    try:
        _check_tenant_size(upload, identity.tenant.batch_max_bytes)
        fields = dict(request.query_params) | form_fields
        try:
            kind = choose_format(fields.get("format"), request.headers.get("accept"))
        except ValueError as exc:
            raise _unprocessable(str(exc)) from exc
        start = session_request(fields)
        try:
            policy.check(start)
        except ProtocolError as exc:
            raise HTTPException(detail=str(exc), status_code=HTTP_403_FORBIDDEN) from exc
        config = session_config(start, services)
        check_ready(services, policy.tenant_id)
        try:
            audio, samples = await asyncio.to_thread(
                _decode_to_spool, upload, settings.batch_max_seconds
            )
        except AudioFileError as exc:
            raise HTTPException(detail=str(exc), status_code=exc.status_code) from exc
    finally:
        upload.close()
    try:
        await policy.charge_audio(samples / services.model.sample_rate)
    except ProtocolError as exc:
        audio.close()
        retry = str(max(1, round(exc.retry_after_s or 1)))
        # the store not answering is no fault of the tenant's: not a quota refusal
        status = (
            HTTP_503_SERVICE_UNAVAILABLE
            if exc.code == STORE_UNAVAILABLE
            else HTTP_429_TOO_MANY_REQUESTS
        )
        raise HTTPException(
            detail=str(exc), status_code=status, headers={"Retry-After": retry}
        ) from exc
    policy.metrics.tenant_audio_seconds.labels(policy.tenant_id).inc(
        samples / services.model.sample_rate
    )
    pipeline = FramePipeline(config, services.model)
    names = config.channels.names
    encoder = make_encoder(kind, names, services.model.blendshapes, config.fps)
    frame_count = pipeline.clock.frames_before(samples)

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        try:
            yield encoder.header()
            upload = Upload(services.dispatcher, policy.tenant_id, config.parameters)
            frames = animate_frames(pipeline, upload, audio)
            async for block in frames:
                sent += block.weights.shape[0]
                yield encoder.block(block)
            yield encoder.trailer(sent)
        except InferenceError as exc:
            services.metrics.errors.labels("inference").inc()
            yield encoder.error(f"inference failed after {sent} frames: {exc}")
            if kind != "jsonl":
                raise  # no in-band error: abort the chunked body so the client sees it cut off
        finally:
            audio.close()
        services.metrics.frames.inc(sent)

    headers = {
        "X-A2F-Channels": ",".join(names),
        "X-A2F-Frame-Rate": f"{config.fps.numerator}/{config.fps.denominator}",
        "X-A2F-Frame-Count": str(frame_count),
        "X-A2F-Duration": f"{samples / services.model.sample_rate:.6f}",
    }
    return Stream(body, media_type=encoder.media_type, headers=headers)


def check_ready(services: Services, tenant: str) -> None:
    """503 unless Triton can serve and the host has room for the tenant's new work."""
    if not services.triton.ready:
        raise HTTPException(
            detail="Triton is not ready; try again shortly",
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
        )
    if (refusal := services.dispatcher.refusal(tenant)) is not None:
        retry = str(max(1, math.ceil(refusal.retry_after_s)))
        raise HTTPException(
            detail=refusal.message,
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": retry},
        )


def _check_tenant_size(upload: IO[bytes], limit: int | None) -> None:
    if limit is None:
        return
    upload.seek(0, 2)
    if upload.tell() > limit:
        raise HTTPException(
            detail=f"request body is larger than this tenant's limit of {limit} bytes",
            status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )


def batch_router(settings: Settings) -> Router:
    """The batch API with the configured body size limit."""
    return Router(
        path="/",
        route_handlers=[animate],
        request_max_body_size=settings.batch_max_bytes,
        middleware=[BatchMetrics],
    )
