"""Triton python-backend glue for server-side framing; the maths is in ``framing.py``.

``execute`` is a coroutine: each request's windows go to the ``a2f`` ensemble as BLS
requests of at most ``sub_batch`` rows, all awaited together, so they join the dynamic
batcher with live sessions' requests. A bad request gets an error response of its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np

# The stub imports this file by path; make the sibling pure-numpy module importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_python_backend_utils as pb_utils
from framing import check, sub_batches, window_view

OUTPUTS = ("BLENDSHAPES", "VISEMES")


class RequestError(Exception):
    """This request (only) failed."""


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
        manifest_path = Path(args["model_repository"]) / parameters["manifest"]
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.window, self.offset = int(manifest["window"]), int(manifest["offset"])
        self.ensemble = parameters["ensemble"]
        self.sub_batch = int(parameters["sub_batch"])
        # The optional inputs are the ensemble's parameters: one row, width = dims.
        self.widths = {i["name"]: int(i["dims"][0]) for i in config["input"] if i.get("optional")}
        self.empty = {
            o["name"]: np.zeros((0, int(o["dims"][-1])), np.float32) for o in config["output"]
        }

    async def execute(self, requests: list) -> list:
        return list(await asyncio.gather(*(self._answer(request) for request in requests)))

    async def _answer(self, request: object) -> object:
        try:
            outputs = await self._frames(request)
        except RequestError as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, outputs[name]) for name in OUTPUTS]
        )

    async def _frames(self, request: object) -> dict[str, np.ndarray]:
        span = pb_utils.get_input_tensor_by_name(request, "AUDIO_SPAN").as_numpy()
        centres = pb_utils.get_input_tensor_by_name(request, "FRAME_CENTERS").as_numpy()
        problem = check(span, centres)
        if problem is not None:
            raise RequestError(problem)
        rows = {}
        for name, width in self.widths.items():
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                value = tensor.as_numpy().astype(np.float32, copy=False).reshape(-1)
                if value.size != width:
                    raise RequestError(f"{name} must hold {width} values, got {value.size}")
                rows[name] = value
        if centres.size == 0:
            return self.empty
        view, starts = window_view(span, centres, self.window, self.offset)
        parts = await asyncio.gather(
            *(
                self._infer(view[starts[part]], rows)
                for part in sub_batches(starts.size, self.sub_batch)
            )
        )
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(OUTPUTS)}

    async def _infer(self, windows: np.ndarray, rows: dict[str, np.ndarray]) -> list[np.ndarray]:
        count = windows.shape[0]
        inputs = [pb_utils.Tensor("AUDIO", np.ascontiguousarray(windows))]
        for name, row in rows.items():
            inputs.append(
                pb_utils.Tensor(name, np.ascontiguousarray(np.broadcast_to(row, (count, row.size))))
            )
        response = await pb_utils.InferenceRequest(
            model_name=self.ensemble, requested_output_names=list(OUTPUTS), inputs=inputs
        ).async_exec()
        if response.has_error():
            raise RequestError(f"{self.ensemble}: {response.error().message()}")
        return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in OUTPUTS]
