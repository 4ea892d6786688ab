"""Write ``1/model.onnx``: the postprocessor of ``1/postprocess.py`` as an ONNX graph.

The official Triton container then serves the whole ``a2f`` ensemble natively (ONNX Runtime
or TensorRT for the network, ONNX Runtime for this step), with no python-backend hop. The
constants (expression table, mouth-corner mask, lip-rounding channels) come from the numpy
reference itself, so the two cannot drift; ``tests/test_post_onnx.py`` checks that they agree.

Each optional parameter is an overridable initializer holding its neutral value as one row
that broadcasts over every window: a request that omits it gets the neutral value, as in the
numpy reference. The ONNX Runtime backend accepts such optional inputs only on a model that
does not batch (``max_batch_size: 0``), hence the explicit row dimension in the config.

Run after changing ``expressions.json`` or the channel layout (needs the ``onnx`` package of
the dev extra): ``python model_repository/a2f_post/build_onnx.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
from a2f_triton.repository import manifest_path
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
MODEL = HERE / "1" / "model.onnx"
# ONNX Runtime 1.19 (Triton 24.10, the container this repository targets) reads IR 10 at most;
# opset 17 is the network's.
OPSET = 17
IR_VERSION = 8


def _reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_a2f_postprocess", HERE / "1" / "postprocess.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(channels: tuple[str, ...], visemes: tuple[str, ...]) -> onnx.ModelProto:
    """The postprocessor for one channel layout, equal to ``Postprocessor.apply``."""
    pp = _reference()
    post = pp.Postprocessor(channels, visemes)
    width = {"BLENDSHAPES_RAW": len(channels), "VISEMES_RAW": len(visemes)}

    def value(name: str, rows: str, columns: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [rows, columns])

    inputs = [value(name, "rows", width[name]) for name in pp.RAW_INPUTS]
    initializers = []
    for name, spec in pp.PARAMETERS.items():
        # Own row symbol: the neutral row (1) broadcasts over the request's rows.
        inputs.append(value(name, f"{name.lower()}_rows", post.width(name)))
        neutral = np.broadcast_to(np.float32(spec.neutral), (1, post.width(name)))
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(neutral), name))
    constants = {
        "zero": np.float32(0.0),
        "one": np.float32(1.0),
        "expression_table": post.table,
        "mouth_corners": post.corners.astype(np.float32),
        "lip_rounding": np.asarray(post.rounding, np.int64),
        "low_column": np.int64([0]),
        "high_column": np.int64([1]),
        "column_end": np.int64([2]),
        "column_axis": np.int64([1]),
    }
    initializers += [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()]

    node = helper.make_node
    weights = "BLENDSHAPES_RAW"
    nodes = [
        # emotion = clip(EMOTION * EMOTION_STRENGTH); delta = clip(emotion @ table)
        node("Mul", ["EMOTION", "EMOTION_STRENGTH"], ["emotion_scaled"]),
        node("Clip", ["emotion_scaled", "zero", "one"], ["emotion"]),
        node("MatMul", ["emotion", "expression_table"], ["delta_raw"]),
        node("Clip", ["delta_raw", "zero", "one"], ["delta_clipped"]),
    ]
    delta = "delta_clipped"
    if post.rounding:
        # Rounded lips fade the mouth-corner deltas: delta * (1 - rounded * corner), which is
        # delta itself off the corners (times exactly 1) and delta * (1 - rounded) on them.
        nodes += [
            node("Gather", [weights, "lip_rounding"], ["rounding_weights"], axis=1),
            node("ReduceMax", ["rounding_weights"], ["rounded_raw"], axes=[1], keepdims=1),
            node("Clip", ["rounded_raw", "zero", "one"], ["rounded"]),
            node("Mul", ["rounded", "mouth_corners"], ["corner_fade"]),
            node("Sub", ["one", "corner_fade"], ["corner_keep"]),
            node("Mul", ["delta_clipped", "corner_keep"], ["delta_faded"]),
        ]
        delta = "delta_faded"
    nodes += [
        # Screen blend: w + d * (1 - w)
        node("Sub", ["one", weights], ["headroom"]),
        node("Mul", [delta, "headroom"], ["raised"]),
        node("Add", [weights, "raised"], ["blended"]),
        node("Mul", ["blended", "CHANNEL_MULTIPLIER"], ["scaled"]),
        node("Add", ["scaled", "CHANNEL_OFFSET"], ["shifted"]),
        # Per-row bounds, so Max/Min rather than Clip (scalar bounds): np.clip's order.
        node("Slice", ["CLAMP", "low_column", "high_column", "column_axis"], ["low"]),
        node("Slice", ["CLAMP", "high_column", "column_end", "column_axis"], ["high"]),
        node("Max", ["shifted", "low"], ["above_low"]),
        node("Min", ["above_low", "high"], ["clamped"]),
        node("Abs", ["clamped"], ["magnitude"]),
        node("Less", ["magnitude", "THRESHOLD"], ["below_threshold"]),
        node("Where", ["below_threshold", "zero", "clamped"], ["BLENDSHAPES"]),
        node("Identity", ["VISEMES_RAW"], ["VISEMES"]),
    ]
    outputs = [
        value("BLENDSHAPES", "rows", len(channels)),
        value("VISEMES", "rows", len(visemes)),
    ]
    graph = helper.make_graph(nodes, "a2f_post", inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="open-a2f"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> int:
    pp = _reference()
    # Every network version has the same channels (the renderer refuses others): any will do.
    model = build_model(*pp.load_channels(manifest_path(HERE.parent)))
    MODEL.write_bytes(model.SerializeToString())
    print(f"wrote {MODEL} ({MODEL.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
