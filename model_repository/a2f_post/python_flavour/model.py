"""``a2f_post`` for servers with only the python backend (the embedded ``nvidia-pytriton`` one).

Runs the same ``1/model.onnx`` as the official container, through ONNX Runtime: one source
of the maths (measured on the 2-core host, ONNX Runtime also takes 28-160 us per call where
the numpy reference takes 31-180 us, for 1 to 512 rows). ``triton/repository.py`` copies this
file into ``a2f_post/1/`` when it renders the python flavour.

Stateless and batched: every ``execute()`` call runs the rows of all its valid requests at
once, then answers each request in order. A malformed request (wrong shape, NaN, bad clamp;
``postprocess.Postprocessor.validate``) gets an error response of its own, so that it cannot
fail the merged run of the others.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

# The stub imports this file by path; make the sibling pure-numpy module importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnxruntime as ort
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
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The parameters' neutral values are overridable initializers, which ORT warns about.
        options.log_severity_level = 3
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
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
            batch = self.post.collate(valid)
            # A parameter no request sent stays out: the graph's neutral row applies.
            sent = {name for t in valid for name in t if name in PARAMETERS}
            feed = {"BLENDSHAPES_RAW": batch.blendshapes, "VISEMES_RAW": batch.visemes}
            feed |= {name: batch.params[name] for name in sent}
            blendshapes, visemes = self.session.run(["BLENDSHAPES", "VISEMES"], feed)
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
