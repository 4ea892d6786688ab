"""The pytorch flavour: the network's ONNX read without the onnx package and evaluated by
PyTorch, on a GPU inside the embedded Triton. The reader is checked everywhere; evaluation
where PyTorch is installed (CPU), and GPU against CPU only where PyTorch sees CUDA."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from a2f_triton import launch, repository
from onnx import numpy_helper

from gateway.model_info import load_repository_module

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "model_repository"
NETWORK = repository.network_directory(SOURCE) / repository.NETWORK_WEIGHTS
onnx_torch = load_repository_module(SOURCE / "a2f_net" / "python_flavour" / "onnx_torch.py")

# Torch on the CPU follows ONNX Runtime to rounding (measured 4e-7). On a GPU, strict FP32
# (TF32 off, as the flavour sets it) reorders sums in the GEMMs; the bound leaves room
# for that and is still far below anything visible in a blendshape weight.
CPU_BOUND = 1e-5
GPU_BOUND = 1e-4

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_CUDA = launch.torch_sees_cuda()
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device visible to PyTorch")


def windows(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((rows, 8320)) * rng.uniform(0.001, 0.5, (rows, 1))
    audio[0] = 0.0  # silence: the log filterbank's floor
    return audio.astype(np.float32)


def onnxruntime_outputs(audio: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(NETWORK), providers=["CPUExecutionProvider"])
    return session.run(["BLENDSHAPES", "VISEMES"], {"AUDIO": audio})


def test_reader_matches_the_onnx_package() -> None:
    graph = onnx_torch.read_graph(NETWORK)
    model = onnx.load(str(NETWORK))
    assert graph.inputs == ["AUDIO"] and graph.outputs == ["BLENDSHAPES", "VISEMES"]
    assert set(graph.initializers) == {t.name for t in model.graph.initializer}
    for tensor in model.graph.initializer:
        expected = numpy_helper.to_array(tensor)
        got = graph.initializers[tensor.name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, tensor.name
        np.testing.assert_array_equal(got, expected)
    assert len(graph.nodes) == len(model.graph.node)
    for node, reference in zip(graph.nodes, model.graph.node, strict=True):
        assert (node.op_type, node.inputs, node.outputs) == (
            reference.op_type,
            list(reference.input),
            list(reference.output),
        )
        for attribute in reference.attribute:
            expected = onnx.helper.get_attribute_value(attribute)
            got = node.attributes[attribute.name]
            if isinstance(expected, onnx.TensorProto):
                np.testing.assert_array_equal(got, numpy_helper.to_array(expected))
            else:
                assert got == pytest.approx(expected), (node.op_type, attribute.name)


@needs_torch
def test_unknown_operator_is_named_at_load() -> None:
    graph = onnx_torch.read_graph(NETWORK)
    graph.nodes.append(onnx_torch.Node("Einsum", ["AUDIO"], ["x"], {}))
    with pytest.raises(ValueError, match="Einsum"):
        onnx_torch.TorchGraph(graph, "cpu")


def test_auto_picks_pytorch_only_with_cuda_and_without_onnxruntime() -> None:
    assert repository.choose_flavour("auto", {"python"}, SOURCE, cuda=True) == "pytorch"
    assert repository.choose_flavour("auto", {"python"}, SOURCE, cuda=False) == "python"
    both = {"python", "onnxruntime"}
    assert repository.choose_flavour("auto", both, SOURCE, cuda=True) == "onnxruntime"


def test_pytorch_render(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    repository.render_repository(
        SOURCE, target, flavour="pytorch", available_backends={"python"}, instances=2
    )
    net = (target / "a2f_net" / "config.pbtxt").read_text()
    assert 'backend: "python"' in net and "count: 2, kind: KIND_CPU" in net
    assert '"runtime", value: { string_value: "pytorch" }' in net
    assert '"device", value: { string_value: "cuda" }' in net
    served = repository.network_directory(SOURCE).name
    assert (target / "a2f_net" / served / "onnx_torch.py").is_file()
    assert 'backend: "python"' in (target / "a2f_post" / "config.pbtxt").read_text()


def test_launcher_without_torch_sees_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: None)
    assert launch.torch_sees_cuda() is False


def test_forced_pytorch_without_cuda_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(launch, "torch_sees_cuda", lambda: False)
    with pytest.raises(launch.LaunchError, match=r"PyTorch.*CUDA"):
        launch.EmbeddedTriton(flavour="pytorch", run_dir=tmp_path).start()


def torch_outputs(audio: np.ndarray, device: str) -> list[np.ndarray]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    graph = onnx_torch.TorchGraph(onnx_torch.read_graph(NETWORK), device)
    with torch.inference_mode():
        return [o.cpu().numpy() for o in graph(torch.from_numpy(audio).to(device))]


@needs_torch
def test_torch_on_cpu_equals_onnxruntime() -> None:
    audio = windows(48)
    for got, want in zip(torch_outputs(audio, "cpu"), onnxruntime_outputs(audio), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=CPU_BOUND, rtol=0)


@needs_cuda
def test_torch_on_gpu_equals_onnxruntime_on_cpu() -> None:
    audio = windows(512, seed=1)
    got, want = torch_outputs(audio, "cuda"), onnxruntime_outputs(audio)
    worst = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
    print(f"GPU vs CPU: max |diff| {worst:.2e} (bound {GPU_BOUND:.0e})")
    assert worst <= GPU_BOUND


@needs_cuda
async def test_embedded_triton_on_the_gpu_equals_the_cpu_flavour(tmp_path: Path) -> None:
    import tritonclient.grpc.aio as grpcclient
    from conftest import embedded_triton

    audio = windows(40, seed=2)
    emotion = np.random.default_rng(3).random((40, 10), dtype=np.float32)
    results = []
    for flavour in ("pytorch", "python"):
        with embedded_triton(tmp_path / flavour, flavour=flavour) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            try:
                inputs = []
                for name, value in (("AUDIO", audio), ("EMOTION", emotion)):
                    tensor = grpcclient.InferInput(name, list(value.shape), "FP32")
                    tensor.set_data_from_numpy(value)
                    inputs.append(tensor)
                result = await client.infer("a2f", inputs)
                results.append([result.as_numpy(n) for n in ("BLENDSHAPES", "VISEMES")])
            finally:
                await client.close()
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, atol=GPU_BOUND, rtol=0)
