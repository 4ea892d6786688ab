"""The gateway's only door to Triton: one shared gRPC (asyncio) client, a transport only.

Windows go to the ensemble (`a2f`), streams' and uploads' alike. Which frames share a
request, and when it leaves, is decided elsewhere (`gateway.inference.scheduler`, `gateway.inference.dispatcher`).
Every call has a deadline: a Triton that hangs without failing must not hold a session's
frames forever. `probe` is the one health check of an endpoint, used by the gateway's endpoint
pool and by the launcher's watchdog alike: "server ready" is not enough, since a killed
python-backend stub leaves the server and its models reporting ready while every request fails
or hangs; only a real inference through the ensemble shows the model answers. When Triton is on this
host, window audio can travel through a shared-memory region instead of the request
(`gateway.inference.shared_inputs`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpcclient
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from gateway.inference.contract import InferenceError, ModelContract, ProbeError, ProbeReport
from gateway.inference.shared_inputs import SharedInputs, Slot

OUTPUTS = ("BLENDSHAPES", "VISEMES")
DEFAULT_TIMEOUT_S = 10.0
NETWORK_MODEL = "a2f_net"
# Written into the ensemble's config by the repository renderer (a2f_triton.repository).
CHANNEL_PARAMETERS = ("blendshape_channels", "viseme_channels")
NETWORK_VERSION_PARAMETER = "network_version"
# Statuses that say the endpoint itself is gone or hung, not that one request was bad.
_ENDPOINT_FAULTS = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
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


SHARE_RETRY_S = 1.0  # a Triton that could not map the region is asked again this often
log = logging.getLogger(__name__)


class TritonClient:
    """Inference of audio windows (or spans) through one ensemble, each call with a deadline."""

    def __init__(self, url: str, model: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url, channel_args=CHANNEL_ARGS)
        self._shared: SharedInputs | None = None
        self._registered = False
        self._last_share_try = -float("inf")

    def share_inputs(self, shared: SharedInputs) -> None:
        """Send window audio through `shared` where a slot is given, once Triton maps it."""
        self._shared = shared

    async def _register(self) -> bool:
        """Whether Triton maps the region now; asked at most once per `SHARE_RETRY_S`.

        Registration is lost when Triton restarts, and refused by a Triton on another host or
        in another container: until it succeeds, requests carry their audio as bytes.
        """
        shared = self._shared
        now = time.monotonic()
        if shared is None or self._registered or now - self._last_share_try < SHARE_RETRY_S:
            return self._registered
        self._last_share_try = now
        try:
            with contextlib.suppress(InferenceServerException):  # a stale registration
                await self._client.unregister_system_shared_memory(
                    shared.region, client_timeout=self.timeout_s
                )
            await self._client.register_system_shared_memory(
                shared.region, shared.key, shared.byte_size, client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            log.warning("audio goes to Triton as bytes: shared memory refused (%s)", exc.message())
            return False
        self._registered = True
        return True

    async def probe(self) -> ProbeReport:
        """Server and models ready, the contract read, one silent window inferred through the
        ensemble; `ProbeError` names the step that failed. The caller bounds the time."""
        try:
            if not await self._client.is_server_ready(client_timeout=self.timeout_s):
                raise ProbeError("server not ready")
            if not await self._client.is_model_ready(self.model, client_timeout=self.timeout_s):
                raise ProbeError(f"model {self.model} not ready")
            # As dicts, not through tritonclient's `as_json`: its detour through a JSON text
            # leaves reference cycles behind on every probe, garbage that only a full
            # collection frees, which pauses every stream.
            timeout = self.timeout_s
            metadata = _as_dict(
                await self._client.get_model_metadata(self.model, client_timeout=timeout)
            )
            config = _as_dict(
                await self._client.get_model_config(self.model, client_timeout=timeout)
            )
            network = _as_dict(
                await self._client.get_model_metadata(NETWORK_MODEL, client_timeout=timeout)
            )
        except InferenceServerException as exc:
            raise ProbeError(exc.message() or str(exc)) from exc
        ensemble = msgspec.convert(metadata, _Metadata, strict=False)
        parameters = msgspec.convert(config["config"], _Config).parameters
        contract = ModelContract(
            inputs=tuple(tensor.described() for tensor in ensemble.inputs),
            outputs=tuple(tensor.described() for tensor in ensemble.outputs),
            channels=tuple(
                name
                for key in CHANNEL_PARAMETERS
                if key in parameters
                for name in parameters[key].string_value.split(",")
            ),
        )
        audio = next((t for t in ensemble.inputs if t.name == "AUDIO"), None)
        if audio is None:
            raise ProbeError(f"model {self.model} has no AUDIO input")
        try:
            await self.infer(np.zeros((1, audio.shape[-1]), np.float32), {})
        except InferenceError as exc:
            raise ProbeError(f"inference failed: {exc}") from exc
        versions = {
            self.model: ",".join(ensemble.versions),
            NETWORK_MODEL: ",".join(msgspec.convert(network, _Metadata, strict=False).versions),
        }
        if NETWORK_VERSION_PARAMETER in parameters:
            versions["network"] = parameters[NETWORK_VERSION_PARAMETER].string_value
        return ProbeReport(contract, versions)

    async def infer(
        self,
        windows: npt.NDArray[np.float32],
        parameters: Mapping[str, npt.NDArray[np.float32]],
        slot: Slot | None = None,
    ) -> npt.NDArray[np.float32]:
        """`[frames, 52 + 15]`: blendshapes then visemes per window. A parameter is one row
        for all frames or one row per frame. `windows` may lie at the start of a shared `slot`:
        then Triton reads them there when it can."""
        frames = windows.shape[0]
        tensors = {}
        for name, rows in parameters.items():
            width = rows.shape[-1]
            tensors[name] = np.ascontiguousarray(np.broadcast_to(rows, (frames, width)))
        inputs = [_tensor(name, array, "FP32") for name, array in tensors.items()]
        if slot is not None and self._shared is not None and await self._register():
            audio = grpcclient.InferInput("AUDIO", list(windows.shape), "FP32")
            audio.set_shared_memory(self._shared.region, windows.nbytes, slot.offset)
            try:
                return await self._infer(self.model, [audio, *inputs], frames)
            except InferenceError as exc:
                if "shared memory" not in str(exc):
                    raise
                # Triton restarted and forgot the region: bytes now, register at the next request
                self._registered = False
                self._last_share_try = -float("inf")
        return await self._infer(self.model, [_tensor("AUDIO", windows, "FP32"), *inputs], frames)

    async def _infer(
        self, model: str, inputs: list[grpcclient.InferInput], frames: int
    ) -> npt.NDArray[np.float32]:
        outputs = [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]
        try:
            result = await self._client.infer(
                model, inputs, outputs=outputs, client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            fault = exc.status() in _ENDPOINT_FAULTS
            raise InferenceError(exc.message() or str(exc), endpoint_fault=fault) from exc
        parts = [result.as_numpy(name) for name in OUTPUTS]
        if any(part is None or part.shape[0] != frames for part in parts):
            raise InferenceError("Triton returned an unexpected output shape")
        rows: npt.NDArray[np.float32] = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
        return rows

    async def close(self) -> None:
        if self._shared is not None and self._registered:
            try:
                await self._client.unregister_system_shared_memory(
                    self._shared.region, client_timeout=self.timeout_s
                )
            except InferenceServerException as exc:
                log.warning("could not unregister the shared audio region: %s", exc.message())
        await self._client.close()


# The parts of Triton's JSON model metadata and config that the probe reads (int64 values
# arrive as strings, hence the non-strict conversion).
class _Tensor(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]

    def described(self) -> tuple[str, str, tuple[int, ...]]:
        return (self.name, self.datatype, tuple(self.shape))


class _Metadata(msgspec.Struct):
    inputs: list[_Tensor] = []
    outputs: list[_Tensor] = []
    versions: list[str] = []


class _Parameter(msgspec.Struct):
    string_value: str = ""


class _Config(msgspec.Struct):
    parameters: dict[str, _Parameter] = {}


def _tensor(name: str, array: npt.NDArray[np.generic], dtype: str) -> grpcclient.InferInput:
    numpy_type = np.float32 if dtype == "FP32" else np.int64
    tensor = grpcclient.InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=numpy_type))
    return tensor


def _as_dict(message: Any) -> dict[str, Any]:
    """A Triton reply as tritonclient's `as_json` gives it (protobuf's JSON mapping)."""
    reply: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
    return reply
