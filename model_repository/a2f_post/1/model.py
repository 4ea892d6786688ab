"""Triton python-backend glue for the postprocessor; the maths is in ``postprocess.py``.

Stateless and batched: every ``execute()`` call runs one vectorised numpy pass over the
rows of all its valid requests, then answers each request in order. A malformed request
(wrong shape, NaN, bad clamp) gets an error response of its own; the others still succeed.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

# The stub imports this file by path; make the sibling pure-numpy module importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_python_backend_utils as pb_utils
from postprocess import PARAMETERS, RAW_INPUTS, Postprocessor, load_channels

INPUTS = (*RAW_INPUTS, *PARAMETERS)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        # The manifest path is a config parameter, relative to this model's directory.
        manifest = config["parameters"]["manifest"]["string_value"]
        channels, visemes = load_channels(Path(args["model_repository"]) / manifest)
        self.post = Postprocessor(channels, visemes)
        for output in config["output"]:
            width = {"BLENDSHAPES": len(channels), "VISEMES": len(visemes)}[output["name"]]
            if list(output["dims"]) != [width]:
                raise ValueError(f"{output['name']} dims {output['dims']} != manifest [{width}]")
        # On the hot path of every stream: keep the loaded libraries out of later full GC
        # passes, which otherwise stall this stub for tens of milliseconds at a time.
        gc.collect()
        gc.freeze()

    def execute(self, requests: list) -> list:
        tensors = []
        for request in requests:
            found = {name: pb_utils.get_input_tensor_by_name(request, name) for name in INPUTS}
            tensors.append({k: v.as_numpy() for k, v in found.items() if v is not None})
        errors = [self.post.validate(t) for t in tensors]
        valid = [t for t, e in zip(tensors, errors, strict=True) if e is None]
        if valid:
            blendshapes, visemes = self.post.apply(self.post.collate(valid))
        responses, start = [], 0
        for t, error in zip(tensors, errors, strict=True):
            if error is not None:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(error)))
                continue
            end = start + t["BLENDSHAPES_RAW"].shape[0]
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("BLENDSHAPES", blendshapes[start:end]),
                        pb_utils.Tensor("VISEMES", visemes[start:end]),
                    ]
                )
            )
            start = end
        return responses
