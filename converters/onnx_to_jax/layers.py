"""The layers of a converted graph: which ONNX nodes make up each layer, which weights they read, which layers
feed which.

Works from an :class:`~converters.onnx_to_jax.graph.OnnxFunction`: its ``nodes`` (topologically sorted), its layer
map ``_layers`` (layer name -> the tensor holding the layer's output; exact for Keras files, whose converter records
it, read off node names otherwise) and its initializers (``params``: floating weights, ``consts``: the rest).

The rules, in the order they are applied:

* **Ownership.** Layers are visited in graph order; each one claims its output's producer and every ancestor no
  earlier layer has claimed (the rule the Keras converter names its nodes by, so it reproduces Keras' grouping).
  Nodes after the last layer output (an ``Identity`` naming the graph output) join the layer they read.
* **Plumbing.** A node whose outputs only serve as shapes, axes or other conversion-time constants (``Shape``
  and everything computing a ``Reshape`` target from it) is plumbing: it moves no values from layer to layer, so
  it neither connects layers nor shows in ``op_types``. Nodes that never depend on a graph input (weight
  preprocessing folded into the graph) do not show in ``op_types`` either.
* **Parameters.** A layer's parameters are the floating initializers its nodes read, directly or through
  constant-only nodes (a weight ``Transpose``), each counted once per layer; 0-d initializers are scalar
  constants of the export (``0.0`` of an initial state), not weights. The bias ``B`` of an ONNX ``RNN`` / ``GRU``
  / ``LSTM`` holds ``[Wb, Rb]``; TensorFlow's cells have one bias and export ``Rb = 0``, so the recurrent half is
  counted only when it holds a non-zero value (a Keras ``GRU(reset_after=True)`` or a PyTorch cell has both).
  With these rules the counts equal Keras' ``layer.count_params()`` for Dense, Conv, LSTM / GRU and Embedding
  layers, with one caveat: tf2onnx's optimiser drops an ``Add`` of an all-zero bias (an untrained Keras model),
  and then the bias is no longer in the graph. A count recorded by the converter in the metadata
  (:data:`LAYER_PARAMS_KEY`, e.g. Keras' own ``count_params()``) therefore takes precedence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import onnx

__all__ = ["LAYER_PARAMS_KEY", "GraphLayer", "graph_layers", "layer_tensors"]

# JSON {layer name: parameter count}, written by a converter that knows them (e.g. Keras' count_params())
LAYER_PARAMS_KEY = "jaxsens.layer_params"
_SHAPE_READERS = frozenset({"Shape", "Size"})  # read only the (static) shape of their input
_RECURRENT = frozenset({"RNN", "GRU", "LSTM"})


@dataclasses.dataclass(frozen=True)
class GraphLayer:
    """One layer of a converted graph.

    Attributes:
        name: the layer name (``OnnxFunction.layer_names``, plus the graph output when no layer holds it).
        tensor: the ONNX tensor holding the layer's output.
        nodes: names of the ONNX nodes the layer owns, in graph order.
        op_types: distinct op types of its data-path nodes, in order of first appearance (``("Identity",)`` for a
            layer that only passes another layer's value on, e.g. Dropout at inference).
        params: names of the floating initializers (weights) it reads.
        n_params: their element count (see the module docstring for the recurrent-bias rule).
        inputs: names of the graph inputs and layers whose values it reads, in order of first use.
    """

    name: str
    tensor: str
    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    params: tuple[str, ...]
    n_params: int
    inputs: tuple[str, ...]


def layer_tensors(fn) -> dict[str, str]:
    """Layer name -> output tensor, in graph order: ``fn``'s layer map, plus the graph output itself (under its
    tensor name) when no layer holds its value (a graph whose node names gave no layer for its last node)."""
    layers = dict(fn._layers)
    producer = _producers(fn.nodes)
    chain, t = {fn.output}, fn.output
    while t in producer and fn.nodes[producer[t]].op_type == "Identity" and fn.nodes[producer[t]].inputs:
        t = fn.nodes[producer[t]].inputs[0]
        chain.add(t)
    if not chain & set(layers.values()) and fn.output not in layers:
        layers[fn.output] = fn.output
    return layers


def graph_layers(fn) -> list[GraphLayer]:
    """The layers of ``fn`` (an ``OnnxFunction``) in graph order, graph inputs excluded.

    Example:
        >>> import jaxsens
        >>> from converters.onnx_to_jax.layers import graph_layers
        >>> m = jaxsens.load_model(jaxsens.examples.default_model_path())
        >>> [(g.name, g.op_types, g.n_params, g.inputs) for g in graph_layers(m.apply)][:2]
        [('dense_0', ('MatMul', 'Add', 'Relu'), 5312, ('input',)), ('dense_1', ('MatMul', 'Add', 'Relu'), 4160, ('dense_0',))]
    """
    nodes = list(fn.nodes)
    tensors = layer_tensors(fn)
    producer = _producers(nodes)
    deps = [_dependencies(node) for node in nodes]
    graph_inputs = set(fn.input_names)

    # ownership: each layer claims its output's producer and every ancestor not claimed yet
    owner: dict[int, str] = {}
    for name, tensor in tensors.items():
        first = producer.get(tensor)
        if first is None or first in owner:
            continue
        stack = [first]
        while stack:
            i = stack.pop()
            if i in owner:
                continue
            owner[i] = name
            stack.extend(producer[t] for t in deps[i] if t in producer and producer[t] not in owner)
    # trailing nodes (an Identity naming the graph output) join the layer they read
    for i, ts in enumerate(deps):
        if i not in owner:
            parent = next((owner[producer[t]] for t in ts if t in producer and producer[t] in owner), None)
            if parent is not None:
                owner[i] = parent

    dependent = _data_dependent(nodes, deps, graph_inputs)
    plumbing = _plumbing(nodes, deps, keep=set(tensors.values()) | {fn.output})
    weights = {k: np.asarray(v) for k, v in fn.params.items()}

    members: dict[str, list[int]] = {}
    for i in sorted(owner):
        members.setdefault(owner[i], []).append(i)
    recorded = _recorded_counts(fn)
    out = []
    for name, tensor in tensors.items():
        mine = members.get(name, [])
        ops: list[str] = []
        feeds: list[str] = []
        for i in mine:
            node = nodes[i]
            if i in plumbing:
                continue
            if i in dependent and node.op_type not in ops:
                ops.append(node.op_type)
            for t in _data_inputs(node, deps[i]):
                src = t if t in graph_inputs else owner.get(producer[t]) if t in producer else None
                if producer.get(t) is not None and producer[t] not in dependent:
                    src = None  # a constant computed in the graph, not another layer's value
                if src is not None and src != name and src not in feeds:
                    feeds.append(src)
        if not mine:  # the value of an input or of an earlier layer, passed on
            src = tensor if tensor in graph_inputs else owner.get(producer.get(tensor, -1))
            feeds = [src] if src is not None else []
        if ops != ["Identity"] and "Identity" in ops:
            ops.remove("Identity")
        used = _weights_read(mine, nodes, deps, producer, dependent, weights)
        out.append(
            GraphLayer(
                name=name,
                tensor=tensor,
                nodes=tuple(nodes[i].name for i in mine),
                op_types=tuple(ops) or ("Identity",),
                params=tuple(used),
                n_params=recorded.get(name, sum(used.values())),
                inputs=tuple(feeds),
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ helpers
def _recorded_counts(fn) -> dict[str, int]:
    """Per-layer parameter counts a converter recorded in the metadata (:data:`LAYER_PARAMS_KEY`), if any."""
    import json

    text = getattr(fn, "metadata", {}).get(LAYER_PARAMS_KEY)
    if not text:
        return {}
    try:
        counts = json.loads(text)
    except ValueError:
        counts = None
    if not isinstance(counts, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()
    ):
        from converters.errors import ModelFileError

        raise ModelFileError(f"the model's metadata {LAYER_PARAMS_KEY!r} must map layer names to counts >= 0")
    return {str(k): int(v) for k, v in counts.items()}


def _producers(nodes) -> dict[str, int]:
    return {o: i for i, node in enumerate(nodes) for o in node.outputs if o}


def _dependencies(node) -> list[str]:
    """The tensors a node reads: its inputs, then the outer-scope names its sub-graphs (Loop / Scan / If) use."""
    names = [t for t in node.inputs if t]
    for value in node.attrs.values():
        for g in value if isinstance(value, list | tuple) else (value,):
            if isinstance(g, onnx.GraphProto):
                names.extend(sorted(_outer_refs(g) - set(names)))
    return names


def _outer_refs(graph: onnx.GraphProto) -> set[str]:
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    refs: set[str] = set()
    for n in graph.node:
        refs.update(t for t in n.input if t and t not in defined)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                refs.update(_outer_refs(sub) - defined)
        defined.update(n.output)
    return refs


def _data_dependent(nodes, deps, graph_inputs: set[str]) -> set[int]:
    """Indices of the nodes whose outputs depend on a graph input (through values or shapes)."""
    dynamic, out = set(graph_inputs), set()
    for i, node in enumerate(nodes):
        if any(t in dynamic for t in deps[i]):
            out.add(i)
            dynamic.update(node.outputs)
    return out


def _plumbing(nodes, deps, keep: set[str]) -> set[int]:
    """Indices of the nodes whose outputs serve only as conversion-time constants (shapes, axes): ``Shape`` /
    ``Size`` and every node all of whose outputs are read only at static slots or by other plumbing nodes."""
    uses: dict[str, list[tuple[int, int]]] = {}
    for j, node in enumerate(nodes):
        for slot, t in enumerate(node.inputs):
            if t:
                uses.setdefault(t, []).append((j, slot))
        for t in deps[j][len([t for t in node.inputs if t]) :]:
            uses.setdefault(t, []).append((j, -1))  # read inside a sub-graph: a value
    out: set[int] = set()
    for i in reversed(range(len(nodes))):
        node = nodes[i]
        if node.op_type in _SHAPE_READERS:
            out.add(i)
            continue
        outs = [o for o in node.outputs if o]
        if outs and all(
            o not in keep
            and uses.get(o)
            and all(j in out or (slot >= 0 and slot in nodes[j].spec.static_inputs) for j, slot in uses[o])
            for o in outs
        ):
            out.add(i)
    return out


def _data_inputs(node, deps: list[str]) -> Iterator[str]:
    """The tensors a node reads as values (static slots left out)."""
    static = set(node.spec.static_inputs)
    for slot, t in enumerate(node.inputs):
        if t and slot not in static:
            yield t
    n_direct = len([t for t in node.inputs if t])
    yield from deps[n_direct:]


def _weights_read(mine, nodes, deps, producer, dependent, weights) -> dict[str, int]:
    """``{initializer: counted size}`` of the floating initializers the nodes ``mine`` read, directly or through
    constant-only nodes."""
    used: dict[str, int] = {}
    seen: set[int] = set()
    stack = list(mine)
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        node = nodes[i]
        for t in deps[i]:
            if t in weights and t not in used and np.ndim(weights[t]) > 0:
                used[t] = _counted_size(node, t, weights[t])
            elif t in producer and producer[t] not in dependent:
                stack.append(producer[t])  # a weight preprocessed in the graph (Transpose, Concat, ...)
    order = {name: k for k, name in enumerate(weights)}
    return dict(sorted(used.items(), key=lambda kv: order[kv[0]]))


def _counted_size(node, tensor: str, value: np.ndarray) -> int:
    """Elements of ``value``; for the bias ``B = [Wb, Rb]`` of a recurrent op, ``Rb`` only when it is non-zero."""
    size = int(value.size)
    if node.op_type in _RECURRENT and len(node.inputs) > 3 and node.inputs[3] == tensor and value.ndim == 2:
        half = value.shape[1] // 2
        if value.shape[1] == 2 * half and not np.any(value[:, half:]):
            return size // 2
    return size
