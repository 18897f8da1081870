"""ONNX graph -> a pure JAX function.

:class:`OnnxFunction` reads an ONNX model once: it decodes initializers, splits them into *parameters* (floating
weights: arguments of the function, never constants baked into a trace) and *static constants* (integer tensors,
anything feeding a shape-like input), checks every op against the registry, and records which tensors depend on the
data (the model's "layers"). Calling it interprets the node list with the registered ``jnp`` implementations. Nodes
whose inputs are all static (``Shape`` -> ``Gather`` -> ``Concat`` -> ``Reshape`` chains) are evaluated with numpy-
valued results at trace time, so the compiled program contains only the data path.

Two ``OnnxFunction`` objects of the same architecture (same nodes, attributes, static constants and weight shapes)
compare and hash equal, so two weekly versions of one model share every compiled kernel.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.errors import ConversionError, ModelFileError, UnsafeModelError, UnsupportedOpError
from converters.onnx_to_jax.registry import OpContext, get_op, supported_ops

__all__ = ["OnnxFunction", "load_onnx_proto", "LAYER_NAMES_KEY"]

# metadata_props key under which our Keras converter stores the Keras layer names (JSON list).
LAYER_NAMES_KEY = "jaxsens.layer_names"
LAYER_OUTPUTS_KEY = "jaxsens.layer_outputs"  # JSON {layer name: tensor name}
FEATURE_NAMES_KEY = "jaxsens.feature_names"
OUTPUT_NAMES_KEY = "jaxsens.output_names"

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def load_onnx_proto(source, *, base_dir: str | None = None) -> tuple[onnx.ModelProto, str | None]:
    """Read an ONNX model from a path, bytes or a ``ModelProto``; external data is read only from inside its folder.

    Returns ``(model_proto, base_dir)``.
    """
    if isinstance(source, onnx.ModelProto):
        proto = source
    elif isinstance(source, bytes | bytearray):
        try:
            proto = onnx.load_model_from_string(bytes(source))
        except Exception as e:
            raise ModelFileError(f"the given bytes are not a valid ONNX model: {e}") from e
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ModelFileError(f"ONNX file {path!r} does not exist")
        if os.path.getsize(path) == 0:
            raise ModelFileError(f"ONNX file {path!r} is empty")
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as e:
            raise ModelFileError(f"ONNX file {path!r} is truncated or corrupt: {type(e).__name__}: {e}") from e
        base_dir = os.path.dirname(os.path.abspath(path))
    if not proto.graph.node and not proto.graph.output:
        raise ModelFileError("the ONNX model has an empty graph (truncated or corrupt file?)")
    _load_external_data(proto, base_dir)
    return proto, base_dir


def _iter_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _iter_graphs(g)


def _load_external_data(proto: onnx.ModelProto, base_dir: str | None) -> None:
    external = [
        t
        for g in _iter_graphs(proto.graph)
        for t in g.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if not external:
        return
    if base_dir is None:
        raise UnsafeModelError("the ONNX model references external data; load it from its file path instead")
    root = os.path.realpath(base_dir)
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        target = os.path.realpath(os.path.join(root, location))
        if os.path.isabs(location) or os.path.commonpath([root, target]) != root:
            raise UnsafeModelError(
                f"initializer {t.name!r} points to external data {location!r}, which resolves outside the model's "
                f"folder {root!r}; refusing to read it"
            )
        if not os.path.isfile(target):
            raise ModelFileError(f"external data file {location!r} for initializer {t.name!r} is missing")
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, root)
    except Exception as e:
        raise ModelFileError(f"could not read the ONNX model's external data: {e}") from e


def _subgraph_free_names(graph: onnx.GraphProto) -> set[str]:
    """Names a sub-graph reads from enclosing scopes."""
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    used = set()
    for n in graph.node:
        used.update(i for i in n.input if i)
        for attr in n.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                used.update(_subgraph_free_names(sub))
        defined.update(n.output)
    return used - defined


def _pruned(graph: onnx.GraphProto, output: str) -> onnx.GraphProto:
    """A copy of ``graph`` with only the nodes (and initializers) that ``output`` depends on."""
    needed = {output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    needed.update(_subgraph_free_names(sub))
    out = onnx.GraphProto()
    out.name = graph.name
    out.node.extend(reversed(keep))
    out.initializer.extend(t for t in graph.initializer if t.name in needed)
    out.input.extend(vi for vi in graph.input if vi.name in needed or vi.name not in {t.name for t in graph.initializer})
    out.output.extend(vi for vi in graph.output if vi.name == output)
    out.value_info.extend(graph.value_info)
    return out


def _decode_attr(attr: onnx.AttributeProto):
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8") for v in value]
    if isinstance(value, list) and value and isinstance(value[0], onnx.TensorProto):
        return [numpy_helper.to_array(v) for v in value]
    return value


def _value_shape(vi: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)


def _is_static(v) -> bool:
    return v is None or isinstance(v, np.ndarray | np.generic)


class _Node:
    __slots__ = ("name", "op_type", "domain", "inputs", "outputs", "attrs", "spec")

    def __init__(self, node: onnx.NodeProto, index: int):
        self.name = node.name or f"{node.op_type}_{index}"
        self.op_type = node.op_type
        self.domain = node.domain if node.domain not in ("ai.onnx",) else ""
        self.inputs = tuple(node.input)
        self.outputs = tuple(node.output)
        self.attrs = {a.name: _decode_attr(a) for a in node.attribute}
        self.spec = get_op(self.op_type, self.domain)


class OnnxFunction:
    """A pure function ``f(params, *inputs) -> outputs`` interpreted from an ONNX graph.

    Args:
        proto: the ONNX model.
        output: the graph output the per-sample function returns (name or index); default the first floating one.

    Attributes:
        input_names, input_shapes, input_dtypes: graph inputs (initializers excluded), shapes with the batch axis.
        output_names: every graph output; ``output`` is the chosen one.
        params: ``dict[name, np.ndarray]`` of the floating initializers (the weights).
        layer_names: readable names of the data-dependent layers, in graph order.
    """

    def __init__(self, proto: onnx.ModelProto, *, output: str | int | None = None):
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        graph = proto.graph
        self.graph_name = graph.name
        self.output_names = tuple(vi.name for vi in graph.output)
        self.output_dtypes = tuple(
            np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
            if vi.type.HasField("tensor_type")
            else np.dtype(object)
            for vi in graph.output
        )
        self.output = self._choose_output(output, graph)
        # Keep only the nodes the chosen output depends on: e.g. a scikit-learn classifier's label / ZipMap branch
        # (ai.onnx.ml ops) is dropped when its probabilities are explained.
        graph = _pruned(graph, self.output)
        self._check_supported(graph)
        self.nodes = [_Node(n, i) for i, n in enumerate(graph.node)]
        self._check_attributes()

        initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        init_types = {t.name: t.data_type for t in graph.initializer}
        static_slots = self._static_slots(graph)
        self.params: dict[str, np.ndarray] = {}
        self.consts: dict[str, np.ndarray] = {}
        for name, arr in initializers.items():
            if init_types[name] in _FLOAT_TYPES and name not in static_slots:
                self.params[name] = arr
            else:
                self.consts[name] = arr

        graph_inputs = [vi for vi in graph.input if vi.name not in initializers]
        self.input_names = tuple(vi.name for vi in graph_inputs)
        self.input_shapes = tuple(_value_shape(vi) for vi in graph_inputs)
        self.input_dtypes = tuple(
            np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)) for vi in graph_inputs
        )
        self._layers = self._find_layers()
        self.layer_names = tuple(self._layers)
        self.fingerprint = self._fingerprint(graph)

    # ---------------------------------------------------------------- construction helpers
    def _check_supported(self, graph: onnx.GraphProto) -> None:
        for g in _iter_graphs(graph):
            for i, n in enumerate(g.node):
                domain = n.domain if n.domain not in ("ai.onnx",) else ""
                if get_op(n.op_type, domain) is None:
                    where = f"{domain}:{n.op_type}" if domain else n.op_type
                    raise UnsupportedOpError(
                        f"ONNX op {where!r} (node {n.name or i!r}) is not supported by jaxsens. "
                        f"Supported ops: {', '.join(supported_ops(None))}"
                    )

    def _check_attributes(self) -> None:
        _check_node_attributes(self.nodes)

    @staticmethod
    def _static_slots(graph: onnx.GraphProto) -> set[str]:
        """Tensors that must stay known at conversion time, and everything they are computed from.

        Seeds: the ``static_inputs`` of every op (shapes, axes, pads), a ``Loop``'s trip count and condition, and the
        condition its body computes (a loop over time steps is unrolled into ``lax.scan`` only when its trip count
        is known). Propagation runs backwards through every (sub-)graph to a fixed point, so e.g. a float sequence
        length that a body compares its counter with stays a constant instead of becoming a parameter.
        """
        graphs = list(_iter_graphs(graph))
        names: set[str] = set()
        for g in graphs:
            for n in g.node:
                spec = get_op(n.op_type, n.domain if n.domain not in ("ai.onnx",) else "")
                slots = spec.static_inputs
                if n.op_type == "Loop":
                    slots = (0, 1)
                    body = next(a.g for a in n.attribute if a.name == "body")
                    names.add(body.output[0].name)
                for i in slots:
                    if i < len(n.input) and n.input[i]:
                        names.add(n.input[i])
        while True:
            before = len(names)
            for g in graphs:
                for n in reversed(g.node):
                    # Shape / Size read only the (static) shape of their input, never its values
                    if n.op_type not in _SHAPE_READERS and any(o in names for o in n.output):
                        names.update(i for i in n.input if i)
            if len(names) == before:
                return names

    def _choose_output(self, output, graph: onnx.GraphProto) -> str:
        if isinstance(output, int):
            return self.output_names[output]
        if isinstance(output, str):
            if output not in self.output_names:
                raise ConversionError(f"output {output!r} is not an output of the graph; outputs: {self.output_names}")
            return output
        for name, dt in zip(self.output_names, self.output_dtypes):
            if dt.kind == "f":
                return name
        # scikit-learn classifiers exported with ZipMap: explain the probability tensor that feeds it.
        for node in graph.node:
            if node.op_type == "ZipMap" and any(o in self.output_names for o in node.output):
                return node.input[0]
        raise ConversionError(f"the graph has no floating-point output (outputs: {self.output_names})")

    def _find_layers(self) -> dict[str, str]:
        """Readable layer name -> the tensor holding that layer's output (its last data-dependent node)."""
        dynamic = set(self.input_names) | set(self.params)
        data_dependent: list[_Node] = []
        for node in self.nodes:
            if any(i in dynamic for i in node.inputs if i):
                dynamic.update(node.outputs)
                data_dependent.append(node)
        exact = json.loads(self.metadata.get(LAYER_OUTPUTS_KEY, "{}"))
        if exact:  # our Keras converter recorded which tensor holds each layer's output
            produced = {o for node in data_dependent for o in node.outputs} | set(self.input_names)
            return {name: tensor for name, tensor in exact.items() if tensor in produced}
        known = json.loads(self.metadata.get(LAYER_NAMES_KEY, "[]"))
        layers: dict[str, str] = {}
        for node in data_dependent:
            parts = [p for p in node.name.split("/") if p]
            key = None
            if known:
                key = next((p for p in parts if p in known), None)
                if key is None:
                    key = next((k for k in known if node.name.startswith(k + "_") or node.outputs[0] == k), None)
            if key is None:
                key = parts[-2] if len(parts) >= 2 else node.name
            layers.pop(key, None)  # keep graph order of the *last* node of each layer
            layers[key] = node.outputs[0]
        return layers

    def _fingerprint(self, graph: onnx.GraphProto) -> str:
        g = onnx.GraphProto()
        g.CopyFrom(graph)
        for t in g.initializer:
            if t.name in self.params:
                dims, dt, name = list(t.dims), t.data_type, t.name
                t.Clear()
                t.name, t.data_type = name, dt
                t.dims.extend(dims)
        h = hashlib.sha256(g.SerializeToString(deterministic=True))
        h.update(repr((self.opset, self.output)).encode())
        return h.hexdigest()

    def __eq__(self, other):
        return isinstance(other, OnnxFunction) and other.fingerprint == self.fingerprint

    def __hash__(self):
        return hash(self.fingerprint)

    def __repr__(self):
        return f"OnnxFunction({self.graph_name!r}, {len(self.nodes)} nodes, opset {self.opset})"

    # ---------------------------------------------------------------- evaluation
    def layer_tensor(self, name: str) -> str:
        if name in self._layers:
            return self._layers[name]
        return name  # a raw tensor name

    def run(self, params: Mapping[str, Any], inputs: Mapping[str, Any], want: Sequence[str]) -> dict[str, Any]:
        """Evaluate the graph on batched ``inputs`` and return the tensors named in ``want``."""
        env: dict[str, Any] = dict(self.consts)
        env.update(params)
        env.update(inputs)
        env = _run_nodes(self.nodes, env, self.opset)
        missing = [w for w in want if w not in env]
        if missing:
            raise KeyError(f"no tensor named {missing} in the graph; layers: {list(self.layer_names)}")
        return {w: env[w] for w in want}

    def apply_batch(self, params, *xs):
        """Batched call: ``xs`` carry the batch axis; returns the chosen output."""
        inputs = {name: _as_input(x, dt) for name, x, dt in zip(self.input_names, xs, self.input_dtypes)}
        return self.run(params, inputs, [self.output])[self.output]

    def __call__(self, params, x):
        """Per-sample call: ``x`` is one sample (an array, or a tuple / dict for several inputs)."""
        xs = _per_sample_inputs(self, x)
        return self.apply_batch(params, *xs)[0]

    def intermediates(self, params, x, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Per-sample layer outputs ``{name: array}`` (every layer when ``names`` is None)."""
        names = list(self.layer_names) if names is None else list(names)
        xs = _per_sample_inputs(self, x)
        inputs = {n: _as_input(v, dt) for n, v, dt in zip(self.input_names, xs, self.input_dtypes)}
        tensors = [self.layer_tensor(n) for n in names]
        out = self.run(params, inputs, tensors)
        return {n: _unbatch(out[t]) for n, t in zip(names, tensors)}


def _check_node_attributes(nodes: Sequence[_Node]) -> None:
    for node in nodes:
        for value in node.attrs.values():
            if isinstance(value, onnx.GraphProto):
                _check_node_attributes([_Node(n, i) for i, n in enumerate(value.node)])
        if node.spec.attributes is None:
            continue
        unknown = set(node.attrs) - node.spec.attributes
        if unknown:
            raise UnsupportedOpError(
                f"{node.op_type} node {node.name!r} has attribute(s) {sorted(unknown)} that jaxsens does not "
                f"implement (supported: {sorted(node.spec.attributes)})"
            )


def _unbatch(v):
    import jax.numpy as jnp

    v = jnp.asarray(v)
    return v[0] if v.ndim and v.shape[0] == 1 else v


def _per_sample_inputs(fn: OnnxFunction, x) -> list:
    if isinstance(x, Mapping):
        try:
            xs = [x[n] for n in fn.input_names]
        except KeyError as e:
            raise ValueError(f"missing model input {e}; the model's inputs are {fn.input_names}") from None
    elif isinstance(x, tuple | list):
        xs = list(x)
    else:
        xs = [x]
    if len(xs) != len(fn.input_names):
        raise ValueError(f"the model takes {len(fn.input_names)} input(s) {fn.input_names}, got {len(xs)}")
    return [v[None] for v in xs]


def _as_input(x, dtype):
    import jax.numpy as jnp

    x = jnp.asarray(x)
    return x.astype(dtype) if dtype.kind in "fiub" and x.dtype != dtype else x


def _run_nodes(nodes: Sequence[_Node], env: dict[str, Any], opset: int) -> dict[str, Any]:
    import jax

    for node in nodes:
        args = [env[i] if i else None for i in node.inputs]
        ctx = OpContext(node.name, node.op_type, opset, _subgraph_runner(env, opset), env, node.inputs, node.outputs)
        try:
            if all(_is_static(a) for a in args) and node.op_type not in _NEVER_FOLD:
                with jax.ensure_compile_time_eval():
                    out = node.spec.fn(ctx, *args, **node.attrs)
                out = tuple(np.asarray(o) for o in out) if isinstance(out, tuple | list) else np.asarray(out)
            else:
                out = node.spec.fn(ctx, *args, **node.attrs)
        except ConversionError:
            raise
        except Exception as e:
            shapes = [getattr(a, "shape", None) for a in args]
            raise ConversionError(
                f"{node.op_type} node {node.name!r} failed on inputs {list(node.inputs)} with shapes {shapes}: "
                f"{type(e).__name__}: {e}"
            ) from e
        outs = out if isinstance(out, tuple | list) else (out,)
        for name, value in zip(node.outputs, outs):
            if name:
                env[name] = value
    return env


def _subgraph_runner(env, opset):
    return lambda graph, inputs: run_subgraph(graph, inputs, env, opset)


# Ops that must not be constant-folded even with static inputs (random generators).
# Ops whose result depends only on the shape of their input.
_SHAPE_READERS = frozenset({"Shape", "Size"})

# Sub-graph ops read the enclosing scope (possibly the traced input), so they are never folded either.
_NEVER_FOLD = frozenset({"If", "Loop", "Scan", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})


def run_subgraph(graph: onnx.GraphProto, inputs: Sequence[Any], outer_env: Mapping[str, Any], opset: int = 13):
    """Run a sub-graph (``Loop`` / ``Scan`` / ``If`` body) with ``inputs`` bound to its formal inputs.

    Names of the enclosing scopes are visible (ONNX lexical scoping). Returns the list of the body's outputs.
    """
    env: dict[str, Any] = dict(outer_env)
    for t in graph.initializer:
        env[t.name] = numpy_helper.to_array(t)
    for vi, v in zip(graph.input, inputs):
        env[vi.name] = v
    nodes = [_Node(n, i) for i, n in enumerate(graph.node)]
    env = _run_nodes(nodes, env, opset)
    return [env[vi.name] for vi in graph.output]
