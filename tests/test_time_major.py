"""The time-major rewrite computes what the channel-major export computes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from training.time_major import time_major

SAMPLES, HOP, BANDS = 640, 32, 6


def _channel_major(rng: np.random.Generator) -> onnx.ModelProto:
    """A small network shaped like the torch export: filterbank, log power, BN, conv, dense."""

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.3, shape).astype(np.float32)

    def ints(*v: int) -> np.ndarray:
        return np.array(v, np.int64)

    consts = {
        "axis1": ints(1), "re_start": ints(0), "re_end": ints(BANDS), "im_end": ints(2 * BANDS),
        "floor": np.array(1e-7, np.float32), "front_w": w(2 * BANDS, 1, 2 * HOP),
        "bn_g": w(BANDS) + 1, "bn_b": w(BANDS), "bn_m": w(BANDS), "bn_v": np.abs(w(BANDS)) + 0.5,
        "conv_w": w(8, BANDS, 3), "conv_b": w(8), "centre_start": ints(5), "centre_end": ints(12),
        "axis2": ints(2), "fc_w": w(4, 8 * 10 + BANDS * 7), "fc_b": w(4),
    }  # fmt: skip
    n = helper.make_node
    nodes = [
        n("Unsqueeze", ["AUDIO", "axis1"], ["x"]),
        n("Conv", ["x", "front_w"], ["z"], kernel_shape=[2 * HOP], strides=[HOP], pads=[0, 0]),
        n("Slice", ["z", "re_start", "re_end", "axis1"], ["re"]),
        n("Slice", ["z", "re_end", "im_end", "axis1"], ["im"]),
        n("Mul", ["re", "re"], ["re2"]),
        n("Mul", ["im", "im"], ["im2"]),
        n("Add", ["re2", "im2"], ["p"]),
        n("Add", ["p", "floor"], ["pf"]),
        n("Log", ["pf"], ["f"]),
        n("BatchNormalization", ["f", "bn_g", "bn_b", "bn_m", "bn_v"], ["fn"], epsilon=1e-5),
        n("Conv", ["fn", "conv_w", "conv_b"], ["c"], kernel_shape=[3], strides=[2], pads=[1, 1]),
        n("Relu", ["c"], ["cr"]),
        n("Slice", ["fn", "centre_start", "centre_end", "axis2"], ["centre"]),
        n("Flatten", ["cr"], ["cf"], axis=1),
        n("Flatten", ["centre"], ["centref"], axis=1),
        n("Concat", ["cf", "centref"], ["cat"], axis=1),
        n("Gemm", ["cat", "fc_w", "fc_b"], ["g"], transB=1),
        n("Sigmoid", ["g"], ["OUT"]),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("AUDIO", TensorProto.FLOAT, ["batch", SAMPLES])],
        [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, audio: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"AUDIO": audio})[0]


def test_rewrite_matches_the_channel_major_graph() -> None:
    rng = np.random.default_rng(0)
    source = _channel_major(rng)
    rewritten = time_major(source)
    assert not any(node.op_type == "Conv" for node in rewritten.graph.node)
    for batch in (1, 5):
        audio = rng.normal(0, 0.2, (batch, SAMPLES)).astype(np.float32)
        np.testing.assert_allclose(_run(rewritten, audio), _run(source, audio), atol=1e-5)


def test_unknown_operators_are_refused() -> None:
    source = _channel_major(np.random.default_rng(1))
    source.graph.node[-1].op_type = "Tanh"
    with pytest.raises(ValueError, match="no rewrite for Tanh"):
        time_major(source)
