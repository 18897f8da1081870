"""Small hand-built ONNX graphs for tests: one float input ``x`` ``[batch, n_in]``, one output ``y``."""

from __future__ import annotations

from onnx import ModelProto, TensorProto, helper


def single_input_model(nodes, inits=(), *, n_in: int, n_out: int, batch: str = "N", name: str = "g") -> ModelProto:
    """``x [batch, n_in] -> y [batch, n_out]`` through ``nodes`` (opset 17, IR 9 for onnxruntime)."""
    graph = helper.make_graph(
        list(nodes),
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_out])],
        list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
