"""Run an ONNX graph with PyTorch, for the network on a GPU inside the python backend.

The embedded ``nvidia-pytriton`` server has only the python backend, and ONNX Runtime's CUDA
build is too large to carry and clashes with the CPU ``onnxruntime``; PyTorch is what a GPU
host has. This module reads the committed ``model.onnx`` itself (a small protobuf reader, so
neither the ``onnx`` package nor a converter has to be installed there) and evaluates its
nodes with torch operators, in FP32 on whatever device it is given.

Only the operators the network uses are implemented; an unknown one fails at load, naming it.
``read_graph`` imports nothing but the standard library and numpy, so the tests check it
against the ``onnx`` package on machines without PyTorch.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# TensorProto.DataType values this reader decodes.
_DTYPES = {1: np.float32, 6: np.int32, 7: np.int64}

Attribute = float | int | bytes | np.ndarray | list[float] | list[int]


class Node(NamedTuple):
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attributes: dict[str, Attribute]


class Graph(NamedTuple):
    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[str]  # graph inputs that are not initializers, in order
    outputs: list[str]


def read_graph(path: Path) -> Graph:
    """The main graph of an ONNX model file: nodes, weights, input and output names."""
    model = memoryview(Path(path).read_bytes())
    graph = next(value for number, value in _fields(model) if number == 7)
    nodes, initializers, inputs, outputs = [], {}, [], []
    for number, value in _fields(graph):
        if number == 1:
            nodes.append(_node(value))
        elif number == 5:
            name, array = _tensor(value)
            initializers[name] = array
        elif number in (11, 12):
            name = next(bytes(v).decode() for n, v in _fields(value) if n == 1)
            (inputs if number == 11 else outputs).append(name)
    return Graph(nodes, initializers, [i for i in inputs if i not in initializers], outputs)


# -- protobuf wire format: just enough of it for ModelProto ------------------------------------


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, Any]]:
    """(field number, value) pairs: an int for varints, raw bytes for everything else."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _ints(value: int | memoryview) -> list[int]:
    """A repeated int64 field entry: one varint, or a packed run of them."""
    if isinstance(value, int):
        return [_signed(value)]
    out, pos = [], 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(_signed(item))
    return out


def _floats(value: memoryview) -> list[float]:
    return list(struct.unpack(f"<{len(value) // 4}f", value))


def _tensor(data: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    dtype, name, raw = 1, "", None
    floats: list[float] = []
    ints: list[int] = []
    for number, value in _fields(data):
        if number == 1:
            dims += _ints(value)
        elif number == 2:
            dtype = value
        elif number == 4:
            floats += _floats(value)
        elif number in (5, 7):
            ints += _ints(value)
        elif number == 8:
            name = bytes(value).decode()
        elif number == 9:
            raw = bytes(value)
        elif number == 14:
            raise ValueError(f"tensor {name or '?'} keeps its data outside the model file")
    if dtype not in _DTYPES:
        raise ValueError(f"tensor {name or '?'} has unsupported data type {dtype}")
    if raw is not None:
        array = np.frombuffer(raw, _DTYPES[dtype]).copy()
    else:
        array = np.asarray(floats if dtype == 1 else ints, _DTYPES[dtype])
    return name, array.reshape(dims)


def _node(data: memoryview) -> Node:
    node = Node("", [], [], {})
    for number, value in _fields(data):
        if number == 1:
            node.inputs.append(bytes(value).decode())
        elif number == 2:
            node.outputs.append(bytes(value).decode())
        elif number == 4:
            node = node._replace(op_type=bytes(value).decode())
        elif number == 5:
            name, attribute = _attribute(value)
            node.attributes[name] = attribute
    return node


def _attribute(data: memoryview) -> tuple[str, Attribute]:
    name, found = "", None
    floats: list[float] = []
    ints: list[int] = []
    for number, value in _fields(data):
        if number == 1:
            name = bytes(value).decode()
        elif number == 2:
            found = struct.unpack("<f", value)[0]
        elif number == 3:
            found = _signed(value)
        elif number == 4:
            found = bytes(value)
        elif number == 5:
            found = _tensor(value)[1]
        elif number == 7:
            floats += _floats(value)
        elif number == 8:
            ints += _ints(value)
    if found is None:
        found = floats if floats else ints
    return name, found


# -- evaluation with torch ---------------------------------------------------------------------


def _slice(data: Any, starts: Any, ends: Any, axes: Any = None, steps: Any = None):
    index = [slice(None)] * data.dim()
    axes_list = range(len(starts)) if axes is None else axes.tolist()
    steps_list = [1] * len(starts) if steps is None else steps.tolist()
    for axis, start, end, step in zip(
        axes_list, starts.tolist(), ends.tolist(), steps_list, strict=True
    ):
        if step < 1:
            raise ValueError("Slice with steps below 1 is not implemented")
        size = data.shape[axis]
        index[axis] = slice(max(min(start, size), -size), max(min(end, size), -size - 1), step)
    return data[tuple(index)]


def _reshape(x: Any, shape: Any) -> Any:
    # ONNX: 0 keeps the input's dimension there (allowzero is never set by our exports)
    dims = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(shape.tolist())]
    return x.reshape(dims)


def _pad(functional: Any, x: Any, pads: Any) -> Any:
    begin_end = pads.tolist()
    rank = len(begin_end) // 2
    # F.pad takes (last dim begin, end, previous dim begin, end, ...)
    order = [p for i in reversed(range(rank)) for p in (begin_end[i], begin_end[rank + i])]
    return functional.pad(x, order)


def _gemm(torch: Any, attributes: dict[str, Any], a: Any, b: Any, c: Any = None):
    a = a.t() if attributes.get("transA", 0) else a
    b = b.t() if attributes.get("transB", 0) else b
    alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))
    if c is None:
        return alpha * (a @ b)
    return torch.addmm(c, a, b, beta=beta, alpha=alpha)


def _operators(torch: Any) -> dict[str, Callable[..., Any]]:
    """op_type -> f(attributes, *inputs) for the operators the network uses."""
    functional = torch.nn.functional
    return {
        "Add": lambda _, a, b: a + b,
        "Mul": lambda _, a, b: a * b,
        "Relu": lambda _, x: torch.relu(x),
        "Sigmoid": lambda _, x: torch.sigmoid(x),
        "Log": lambda _, x: torch.log(x),
        "Softmax": lambda at, x: torch.softmax(x, dim=int(at.get("axis", -1))),
        "Concat": lambda at, *xs: torch.cat(xs, dim=int(at["axis"])),
        "Reshape": lambda _, x, shape: _reshape(x, shape),
        "Pad": lambda _, x, pads: _pad(functional, x, pads),
        "Slice": lambda _, *xs: _slice(*xs),
        "MatMul": lambda _, a, b: torch.matmul(a, b),
        "Gemm": lambda at, *xs: _gemm(torch, at, *xs),
    }


class TorchGraph:
    """``graph`` as a torch callable on ``device``: ``outputs = graph(*inputs)``."""

    def __init__(self, graph: Graph, device: str) -> None:
        import torch

        self.torch = torch
        operators = _operators(torch)
        known = {*operators, "Constant"}
        unknown = sorted({n.op_type for n in graph.nodes} - known)
        if unknown:
            raise ValueError(f"operators not implemented for PyTorch: {', '.join(unknown)}")
        self.device = torch.device(device)
        # Shape-like tensors (Slice bounds, axes) stay on the host: they are read as numbers.
        self.values: dict[str, Any] = {
            name: self._place(array) for name, array in graph.initializers.items()
        }
        self.steps: list[tuple[Callable[..., Any], dict[str, Any], list[str], list[str]]] = []
        for node in graph.nodes:
            if node.op_type == "Constant":
                self.values[node.outputs[0]] = self._place(node.attributes["value"])
                continue
            self.steps.append((operators[node.op_type], node.attributes, node.inputs, node.outputs))
        self.inputs, self.outputs = graph.inputs, graph.outputs

    def _place(self, array: Any) -> Any:
        tensor = self.torch.from_numpy(np.ascontiguousarray(array))
        return tensor if tensor.dtype == self.torch.int64 else tensor.to(self.device)

    def __call__(self, *inputs: Any) -> list[Any]:
        values = dict(self.values)
        values.update(zip(self.inputs, inputs, strict=True))
        for operator, attributes, names, outputs in self.steps:
            result = operator(attributes, *(values[n] for n in names if n))
            values[outputs[0]] = result
        return [values[name] for name in self.outputs]
