"""The gateway's only door to Triton: one shared gRPC (asyncio) client, ensemble `a2f` only."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

OUTPUTS = ("BLENDSHAPES", "VISEMES")


class InferenceError(RuntimeError):
    """Triton refused or failed a request."""


class TritonClient:
    """Batched inference of audio windows through one ensemble.

    Every call is one request whose batch dimension is the number of frames, so Triton's
    dynamic batcher can merge the requests of many sessions.
    """

    def __init__(self, url: str, model: str) -> None:
        self.url = url
        self.model = model
        self._client = grpcclient.InferenceServerClient(url)

    async def ready(self) -> bool:
        """Server live and the ensemble loaded."""
        try:
            return bool(await self._client.is_server_ready()) and bool(
                await self._client.is_model_ready(self.model)
            )
        except InferenceServerException:
            return False

    async def infer(
        self, windows: npt.NDArray[np.float32], parameters: Mapping[str, npt.NDArray[np.float32]]
    ) -> npt.NDArray[np.float32]:
        """`[frames, 52 + 15]`: blendshapes then visemes per window.

        `parameters` maps optional ensemble inputs to one row; it is repeated for every frame.
        """
        frames = windows.shape[0]
        tensors = {"AUDIO": windows}
        for name, row in parameters.items():
            tensors[name] = np.ascontiguousarray(np.broadcast_to(row, (frames, row.size)))
        inputs = []
        for name, array in tensors.items():
            tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]
        try:
            result = await self._client.infer(self.model, inputs, outputs=outputs)
        except InferenceServerException as exc:
            raise InferenceError(exc.message() or str(exc)) from exc
        parts = [result.as_numpy(name) for name in OUTPUTS]
        if any(part is None or part.shape[0] != frames for part in parts):
            raise InferenceError("Triton returned an unexpected output shape")
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    async def close(self) -> None:
        await self._client.close()
