"""scikit-learn models fit on a DataFrame: one ONNX input per column, merged back into one feature matrix.

skl2onnx exports a pipeline fit on a ``pandas.DataFrame`` (``to_onnx(pipe, df)``) with one graph input per column,
named after the column and shaped ``[N, 1]``, which the graph then concatenates (``FeatureVectorizer`` for a
``Pipeline``, ``Concat`` inside a ``ColumnTransformer``). :func:`merge_column_inputs` turns such a graph back into a
model of one ``[N, n_columns]`` input whose feature names are the column names (stored under
``jaxsens.feature_names`` in the model's metadata, where :meth:`jaxsens.Model.from_onnx` reads them): each former
column input becomes ``Gather(X, [j], axis=1)``, so the numbers computed are unchanged, and a DataFrame holding those
columns (in any order) can be explained directly.

Only skl2onnx exports are rewritten, and only when every input is a float column of one element type; other
several-input models keep their inputs.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["merge_column_inputs"]

FEATURE_NAMES_KEY = "jaxsens.feature_names"  # the key graph.py reads (graph.FEATURE_NAMES_KEY)
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


def _column_dim0(vi: onnx.ValueInfoProto):
    """The batch dim of a ``[N, 1]`` float tensor input, or ``None`` when ``vi`` is not one."""
    t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if t is None or t.elem_type not in _FLOAT_TYPES or not t.HasField("shape") or len(t.shape.dim) != 2:
        return None
    d1 = t.shape.dim[1]
    return t.shape.dim[0] if d1.HasField("dim_value") and d1.dim_value == 1 else None


def merge_column_inputs(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its per-column inputs merged into one ``[N, n_columns]`` input (see the module docstring),
    or ``proto`` itself when it is not a skl2onnx export with several float column inputs.

    Example:
        >>> from onnx import TensorProto, helper
        >>> cols = [helper.make_tensor_value_info(c, TensorProto.FLOAT, [None, 1]) for c in ("age", "income")]
        >>> node = helper.make_node("Concat", ["age", "income"], ["y"], axis=1)
        >>> out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
        >>> m = helper.make_model(helper.make_graph([node], "g", cols, [out]), producer_name="skl2onnx")
        >>> merged = merge_column_inputs(m)
        >>> [vi.name for vi in merged.graph.input], [p.value for p in merged.metadata_props]
        (['X'], ['["age", "income"]'])
    """
    graph = proto.graph
    stored = {t.name for t in graph.initializer} | {sp.values.name for sp in graph.sparse_initializer}
    inputs = [vi for vi in graph.input if vi.name not in stored]
    if proto.producer_name != "skl2onnx" or len(inputs) < 2:
        return proto
    dims = [_column_dim0(vi) for vi in inputs]
    elem_types = {vi.type.tensor_type.elem_type for vi in inputs}
    if any(d is None for d in dims) or len(elem_types) != 1:
        return proto
    taken = {vi.name for vi in graph.input} | stored | {o for n in graph.node for o in n.output}
    taken |= {n.name for n in graph.node}

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    merged = onnx.ModelProto()
    merged.CopyFrom(proto)
    g = merged.graph
    x_name = fresh("X")
    x = helper.make_tensor_value_info(x_name, elem_types.pop(), [None, len(inputs)])
    x.type.tensor_type.shape.dim[0].CopyFrom(dims[0])
    gathers, indices = [], []
    for j, vi in enumerate(inputs):
        index = fresh(f"{vi.name}_column_index")
        indices.append(numpy_helper.from_array(np.asarray([j], np.int64), index))
        gathers.append(
            helper.make_node("Gather", [x_name, index], [vi.name], name=fresh(f"{vi.name}_column"), axis=1)
        )
    column_names = {vi.name for vi in inputs}
    kept = [vi for vi in g.input if vi.name not in column_names]
    del g.input[:]
    g.input.extend([x, *kept])
    g.initializer.extend(indices)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(gathers + nodes)
    if not any(p.key == FEATURE_NAMES_KEY for p in merged.metadata_props):
        entry = merged.metadata_props.add()
        entry.key, entry.value = FEATURE_NAMES_KEY, json.dumps([vi.name for vi in inputs])
    return merged
