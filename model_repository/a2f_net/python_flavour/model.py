"""``a2f_net`` for servers with only the python backend (the embedded ``nvidia-pytriton`` one).

Runs the same ``model.onnx`` with the same name, inputs and outputs as the
``onnxruntime_onnx`` flavour, so the ensemble and every client are unchanged. The config's
``runtime`` parameter picks how: ``onnxruntime`` (CPU) or ``pytorch`` (the graph evaluated by
``onnx_torch.py`` on the config's ``device``, normally a GPU; tensors in and out through
DLPack). ``triton/repository.py`` copies this directory into the served version's directory
(``a2f_net/N/``) when it renders a python-backend flavour; Triton ignores it otherwise (version
directories are numeric).

All requests of one ``execute()`` call go through a single run of the network: the dynamic
batcher's merge is what buys the throughput, so splitting it again would waste it.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub imports this file by path; make the sibling module importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))


class OnnxRuntimeNetwork:
    """The network through ONNX Runtime on the CPU; arrays are numpy views of Triton's."""

    def __init__(self, path: Path, threads: int, input_name: str, outputs: list[str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Triton's instances already run concurrently; ORT's spinning threads would only
        # steal the other instance's core on a small machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input, self.outputs = input_name, outputs

    def take(self, tensor: Any) -> np.ndarray:
        return tensor.as_numpy()

    def finite(self, rows: np.ndarray) -> bool:
        return bool(np.isfinite(rows).all())

    def run(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        merged = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self.session.run(self.outputs, {self.input: merged})

    def tensor(self, name: str, value: np.ndarray) -> Any:
        return pb_utils.Tensor(name, value)


class TorchNetwork:
    """The network through PyTorch on ``device``, strict FP32 (no TF32: the log filterbank
    turns its rounding into visible weight changes)."""

    def __init__(self, path: Path, threads: int, device: str, window: int) -> None:
        import torch
        from onnx_torch import TorchGraph, read_graph

        torch.set_num_threads(threads)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.torch = torch
        self.device = torch.device(device)
        self.graph = TorchGraph(read_graph(path), device)
        # The CUDA context and kernels load here, not in the first stream's first frame.
        self.run([torch.zeros((1, window))])

    def take(self, tensor: Any) -> Any:
        return self.torch.utils.dlpack.from_dlpack(tensor.to_dlpack())

    def finite(self, rows: Any) -> bool:
        return bool(self.torch.isfinite(rows).all())

    def run(self, parts: list[Any]) -> list[Any]:
        merged = parts[0] if len(parts) == 1 else self.torch.cat(parts)
        with self.torch.inference_mode():
            outputs = self.graph(merged.to(self.device))
            # One copy back for the whole batch; the postprocessor runs on the host.
            return [output.cpu() for output in outputs]

    def tensor(self, name: str, value: Any) -> Any:
        return pb_utils.Tensor.from_dlpack(name, self.torch.utils.dlpack.to_dlpack(value))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
        threads = int(parameters["intra_op_thread_count"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.input = config["input"][0]["name"]
        self.outputs = [o["name"] for o in config["output"]]
        runtime = parameters.get("runtime", "onnxruntime")
        if runtime == "pytorch":
            window = int(config["input"][0]["dims"][0])
            self.network: OnnxRuntimeNetwork | TorchNetwork = TorchNetwork(
                path, threads, parameters.get("device", "cuda"), window
            )
        elif runtime == "onnxruntime":
            self.network = OnnxRuntimeNetwork(path, threads, self.input, self.outputs)
        else:
            raise ValueError(f"unknown runtime {runtime!r}: onnxruntime or pytorch")
        # On the hot path of every stream: keep the loaded libraries out of later full GC
        # passes, which otherwise stall this stub for tens of milliseconds at a time.
        gc.collect()
        gc.freeze()

    def execute(self, requests: list) -> list:
        network = self.network
        audio = [network.take(pb_utils.get_input_tensor_by_name(r, self.input)) for r in requests]
        # NaN/inf audio would poison only its own rows, but answering it with an error here
        # tells the client why instead of leaving it to the postprocessor.
        finite = [network.finite(a) for a in audio]
        valid = [a for a, ok in zip(audio, finite, strict=True) if ok]
        if valid:
            results = network.run(valid)
        responses, start = [], 0
        for part, ok in zip(audio, finite, strict=True):
            if not ok:
                error = pb_utils.TritonError(f"{self.input} contains NaN or infinity")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            end = start + part.shape[0]
            tensors = [
                network.tensor(name, value[start:end])
                for name, value in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses
