"""Tiny ONNX models written by the tests (a few hundred bytes), to exercise the real loading,
preprocessing, batching and inference code without any downloaded weights."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper


def channel_mean_model(path: Path) -> Path:
    """[N,3,224,224] -> [N,3]: the mean of each normalised colour channel. Its output tells
    exactly what preprocessing fed it."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["embedding"], axes=[2, 3], keepdims=0)],
        "channel_mean",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
