"""``a2f_net`` for servers with only the python backend (the embedded ``nvidia-pytriton`` one).

Runs the same ``model.onnx`` through ONNX Runtime with the same name, inputs and outputs as
the ``onnxruntime_onnx`` flavour, so the ensemble and every client are unchanged.
``triton/repository.py`` copies this file into ``a2f_net/1/`` when it renders the python
flavour; Triton ignores this directory otherwise (version directories are numeric).

All requests of one ``execute()`` call go through a single ``session.run``: the dynamic
batcher's merge is what buys the throughput, so splitting it again would waste it.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        threads = int(config["parameters"]["intra_op_thread_count"]["string_value"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Triton's instances already run concurrently; ORT's spinning threads would only
        # steal the other instance's core on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = config["input"][0]["name"]
        self.outputs = [o["name"] for o in config["output"]]
        # On the hot path of every stream: keep the loaded libraries out of later full GC
        # passes, which otherwise stall this stub for tens of milliseconds at a time.
        gc.collect()
        gc.freeze()

    def execute(self, requests: list) -> list:
        audio = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        # NaN/inf audio would poison only its own rows, but answering it with an error here
        # tells the client why instead of leaving it to the postprocessor's output check.
        finite = [bool(np.isfinite(a).all()) for a in audio]
        valid = [a for a, ok in zip(audio, finite, strict=True) if ok]
        if valid:
            merged = valid[0] if len(valid) == 1 else np.concatenate(valid)
            results = self.session.run(self.outputs, {self.input: merged})
        responses, start = [], 0
        for part, ok in zip(audio, finite, strict=True):
            if not ok:
                error = pb_utils.TritonError(f"{self.input} contains NaN or infinity")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            end = start + part.shape[0]
            tensors = [
                pb_utils.Tensor(name, value[start:end])
                for name, value in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses
