"""Read a converted ONNX graph as a dense stack: ``x -> act_1(x W_1 + b_1) -> ... -> act_L(. W_L + b_L)``.

:func:`dense_layers` walks the graph of an :class:`~converters.onnx_to_jax.graph.OnnxFunction` from its input to
the explained output; the graph must be a chain of ``MatMul`` (+ ``Add`` bias) or ``Gemm`` nodes with elementwise
activations between them (PyTorch ``nn.Sequential`` exported with ``torch.onnx.export``, scikit-learn
``MLPRegressor`` / ``MLPClassifier`` through skl2onnx, Keras ``Dense`` stacks through tf2onnx). ``Identity``,
``Dropout``, ``Cast`` and shape-only ops (``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze``) are skipped;
scikit-learn's binary-classifier tail ``[1 - sigmoid(z), sigmoid(z)]`` is read as a two-unit sigmoid layer with
weights ``[-w, w]`` (exact, since ``1 - sigmoid(z) = sigmoid(-z)``); Keras 3's ``hard_sigmoid`` (``relu6(z + 3) / 6``)
is read as ``clip`` with the ``/ 6`` folded into the next layer.

This is the only code that reads the interpreter's node lists for the weight-based methods: they ask
``Model.dense_layers()``, which calls :func:`dense_layers` with the model's current ``params``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError

__all__ = ["DenseLayer", "NotDenseError", "dense_layers"]


class NotDenseError(ArgumentError):
    """The model is not a stack of dense layers, so a weight-based method is undefined for it."""


class DenseLayer(NamedTuple):
    """One dense layer ``y = activation(x @ W + b)``.

    Attributes:
        W: ``[n_in, n_out]`` weights.
        b: ``[n_out]`` bias (zeros where the model has none).
        activation: canonical activation name (see :data:`ACTIVATIONS`), ``"identity"`` for a linear layer.
        attrs: the activation's parameters as ``((name, value), ...)``, e.g. ``(("alpha", 0.2),)``.
    """

    W: Any
    b: Any
    activation: str
    attrs: tuple = ()


# ONNX op -> (canonical name, attributes kept with their ONNX defaults)
_ONNX_ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "Relu": ("relu", {}),
    "Tanh": ("tanh", {}),
    "Sigmoid": ("sigmoid", {}),
    "Softmax": ("softmax", {}),
    "LogSoftmax": ("log_softmax", {}),
    "LeakyRelu": ("leaky_relu", {"alpha": 0.01}),
    "Elu": ("elu", {"alpha": 1.0}),
    "Selu": ("selu", {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "Softplus": ("softplus", {}),
    "Softsign": ("softsign", {}),
    "HardSigmoid": ("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
    "HardSwish": ("hard_swish", {}),
    "Gelu": ("gelu", {"approximate": "none"}),
    "Swish": ("swish", {"alpha": 1.0}),
    "Mish": ("mish", {}),
    "Celu": ("celu", {"alpha": 1.0}),
    "ThresholdedRelu": ("thresholded_relu", {"alpha": 1.0}),
}
# ops that mark a network as recurrent / convolutional / attention-based (named in error messages)
_NOT_DENSE = {
    **dict.fromkeys(("LSTM", "GRU", "RNN", "Loop", "Scan"), "recurrent"),
    **dict.fromkeys(("Conv", "ConvTranspose"), "convolutional"),
    **dict.fromkeys(("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"), "pooling"),
    **dict.fromkeys(("Attention", "Einsum"), "attention"),
}
_SHAPE_READERS = frozenset({"Shape", "Size"})  # read only the shape of a tensor, not its values
_SHAPE_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_PASSTHROUGH = frozenset({"Identity", "Dropout", "Cast"}) | _SHAPE_OPS


@dataclasses.dataclass(frozen=True)
class _LinearSpec:
    node: str  # MatMul / Gemm node name (for messages)
    weight: str  # tensor name of the weight
    transpose: bool  # Gemm transB=1: the weight is stored [n_out, n_in]
    scale: float  # Gemm alpha
    bias: str | None
    bias_scale: float  # Gemm beta
    activation: str = "identity"
    attrs: tuple = ()
    # a constant factor on this layer's input (the folded `activation * c` of the layer before)
    in_scale: float = 1.0
    extra_bias: tuple[str, ...] = ()  # constants added after the product (MatMul + Add; Gemm + Add)
    mirror: tuple[int, ...] | None = None  # binary tail: output j is sign[j] * z (-1 for 1 - sigmoid(z))


def dense_layers(fn, params: Mapping[str, Any] | None = None, *, method: str = "dense_layers") -> list[DenseLayer]:
    """The dense layers of the converted graph ``fn``, input layer first.

    Args:
        fn: an :class:`~converters.onnx_to_jax.graph.OnnxFunction`.
        params: the weights to read (``Model.params``: ``{initializer name: array}``); default ``fn.params``.
        method: the calling method's name, used in error messages.

    Returns:
        ``[DenseLayer(W [n_in, n_out], b [n_out], activation, attrs), ...]``; ``W`` and ``b`` are JAX arrays.

    Raises:
        NotDenseError: the graph is not a dense stack; the message names the first node that is not part of one
            (e.g. an ``LSTM`` or ``Conv`` op) and points to the methods that work on any model.
    """
    specs = _onnx_specs(fn, method)
    return [_materialise(fn, params, s) for s in specs]


def _onnx_specs(fn, method: str) -> list[_LinearSpec]:
    """Walk the graph from its input to ``fn.output``; the static structure of the dense stack."""

    def fail(node, why: str) -> NotDenseError:
        where = f"node {node.name!r} ({node.op_type}) " if node is not None else ""
        return NotDenseError(
            f"{method}() needs a dense network (MatMul/Gemm layers with elementwise activations), "
            f"but {where}{why}. "
            "Use jacobian_importance() or perturbation_importance(), which work on any model."
        )

    if len(fn.input_names) != 1:
        raise fail(None, f"the model has {len(fn.input_names)} inputs {fn.input_names}")

    producer = {o: n for n in fn.nodes for o in n.outputs if o}
    needed: set[int] = set()  # ids of nodes the chosen output depends on
    stack = [fn.output]
    seen = set()
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        node = producer[t]
        needed.add(id(node))
        stack.extend(i for i in node.inputs if i)
    for n in fn.nodes:
        if id(n) in needed and n.op_type in _NOT_DENSE:
            raise fail(n, f"is a {_NOT_DENSE[n.op_type]} layer, not a dense one")
    consumers: dict[str, list] = {}
    for n in fn.nodes:
        if id(n) in needed and n.op_type not in _SHAPE_READERS:
            for i in dict.fromkeys(n.inputs):
                if i:
                    consumers.setdefault(i, []).append(n)

    def static(name: str):
        if name in fn.params or name in fn.consts:
            return name
        node = producer.get(name)
        if node is not None and node.op_type == "Constant" and "value" in node.attrs:
            return name
        return None

    specs: list[_LinearSpec] = []
    pending: _LinearSpec | None = None
    reshaped = None
    scale = 1.0
    cur = fn.input_names[0]
    while cur != fn.output:
        users = consumers.get(cur, [])
        if not users:
            raise fail(None, f"tensor {cur!r} does not lead to the output {fn.output!r}")
        ops = sorted(u.op_type for u in users)
        if len(users) == 2 and ops == ["Mul", "Sigmoid"] and pending is not None:  # swish: z * sigmoid(z)
            sig = next(u for u in users if u.op_type == "Sigmoid")
            mul = next(u for u in users if u.op_type == "Mul")
            if sorted(mul.inputs) == sorted((cur, sig.outputs[0])):
                specs.append(dataclasses.replace(pending, activation="swish"))
                pending, cur = None, mul.outputs[0]
                continue
        if len(users) == 2 and ops == ["Concat", "Sub"] and pending is None and specs:  # sklearn binary tail
            cur = _binary_tail(fn, users, cur, specs, static, fail)
            continue
        if len(users) > 1:
            raise fail(None, f"tensor {cur!r} forks into several nodes ({', '.join(u.name for u in users)})")
        node = users[0]
        op = node.op_type
        if op in _PASSTHROUGH:
            if op == "Cast" and np.dtype(_onnx_np_dtype(node.attrs.get("to", 1))).kind != "f":
                raise fail(node, "casts to a non-float type")
            if op in _SHAPE_OPS and not _keeps_rows(fn, node):
                reshaped = node  # fine at the tail (scikit-learn's [n, 1] -> [n]), not before another layer
            cur = node.outputs[0]
        elif op in ("MatMul", "Gemm"):
            if reshaped is not None:
                raise fail(reshaped, "reshapes the data between dense layers")
            if pending is not None:
                specs.append(pending)
            pending, cur = _linear(node, cur, static, fail)
            pending, scale = dataclasses.replace(pending, in_scale=scale), 1.0
            # Adds of constants right after the product are the layer's bias (Keras 3's hard_sigmoid adds 3
            # more).
            while len(nxt := consumers.get(cur, [])) == 1 and nxt[0].op_type == "Add":
                add = nxt[0]
                other = add.inputs[1] if add.inputs[0] == cur else add.inputs[0]
                if other == cur or not static(other):
                    break
                pending = dataclasses.replace(pending, extra_bias=pending.extra_bias + (other,))
                cur = add.outputs[0]
        elif op == "Clip" and pending is not None:
            lo = node.attrs.get("min", -np.inf) if len(node.inputs) < 2 or not node.inputs[1] else None
            hi = node.attrs.get("max", np.inf) if len(node.inputs) < 3 or not node.inputs[2] else None
            bounds = []
            for value, slot in ((lo, 1), (hi, 2)):
                if value is None:
                    if not static(node.inputs[slot]):
                        raise fail(node, "has clip bounds that depend on the data")
                    value = float(np.asarray(_value(fn, node.inputs[slot])))
                bounds.append(float(value))
            specs.append(
                dataclasses.replace(
                    pending, activation="clip", attrs=(("low", bounds[0]), ("high", bounds[1]))
                )
            )
            pending, cur = None, node.outputs[0]
        elif (
            op in ("Mul", "Div")
            and pending is None
            and specs
            and _scalar_operand(fn, node, cur, static) is not None
        ):
            # `activation(z) * c` (Keras 3 hard_sigmoid = relu6(z + 3) / 6): folded into the next layer's
            # weights
            c = _scalar_operand(fn, node, cur, static)
            scale *= c if op == "Mul" else 1.0 / c
            cur = node.outputs[0]
        elif op in _ONNX_ACTIVATIONS:
            if pending is None:
                where = "before the first dense layer" if not specs else "right after another activation"
                raise fail(node, f"is an activation {where}")
            name, defaults = _ONNX_ACTIVATIONS[op]
            if op in ("Softmax", "LogSoftmax") and node.attrs.get("axis", -1) not in (-1, 1):
                raise fail(node, f"takes the softmax over axis {node.attrs['axis']}, not the last one")
            attrs = tuple((k, node.attrs.get(k, v)) for k, v in defaults.items())
            specs.append(dataclasses.replace(pending, activation=name, attrs=attrs))
            pending, cur = None, node.outputs[0]
        elif op == "Add" and all(i == cur or static(i) for i in node.inputs):
            raise fail(node, "adds a constant outside a MatMul + Add layer (input scaling?)")
        else:
            raise fail(node, "is not a dense-layer op")
    if pending is not None:
        specs.append(pending)
    if scale != 1.0:
        raise fail(None, f"the output is scaled by {scale:g} after the last activation")
    if not specs:
        raise fail(None, "the graph has no MatMul / Gemm layer")
    shape = fn.input_shapes[0]
    if shape is not None and len(shape) != 2:
        raise fail(
            None, f"its input {fn.input_names[0]!r} has per-sample shape {tuple(shape[1:])}, not a vector"
        )
    return specs


def _linear(node, cur, static, fail) -> tuple[_LinearSpec, str]:
    if node.op_type == "MatMul":
        if node.inputs[0] != cur or not static(node.inputs[1]):
            raise fail(node, "is not `data @ constant weights`")
        return _LinearSpec(node.name, node.inputs[1], False, 1.0, None, 1.0), node.outputs[0]
    a = node.attrs
    if a.get("transA", 0) or node.inputs[0] != cur or not static(node.inputs[1]):
        raise fail(node, "is not `data @ constant weights (+ bias)`")
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if bias is not None and not static(bias):
        raise fail(node, "has a bias that depends on the data")
    spec = _LinearSpec(
        node.name,
        node.inputs[1],
        bool(a.get("transB", 0)),
        float(a.get("alpha", 1.0)),
        bias,
        float(a.get("beta", 1.0)),
    )
    return spec, node.outputs[0]


def _binary_tail(fn, users, cur, specs, static, fail) -> str:
    """``probabilities = Concat(1 - s, s)`` after a one-unit sigmoid layer (skl2onnx's binary classifier)."""
    sub = next(u for u in users if u.op_type == "Sub")
    cat = next(u for u in users if u.op_type == "Concat")
    last = specs[-1]
    one = sub.inputs[0]
    ok = (
        last.activation == "sigmoid"
        and last.mirror is None
        and sub.inputs[1] == cur
        and static(one)
        and np.allclose(_value(fn, one), 1.0)
        and cat.attrs.get("axis") in (1, -1)
        and sorted(cat.inputs) == sorted((sub.outputs[0], cur))
        and len(cat.inputs) == 2
    )
    if not ok:
        raise fail(cat, "is not the binary tail [1 - sigmoid(z), sigmoid(z)]")
    signs = tuple(-1 if i == sub.outputs[0] else 1 for i in cat.inputs)
    specs[-1] = dataclasses.replace(last, mirror=signs)
    return cat.outputs[0]


def _keeps_rows(fn, node) -> bool:
    """Whether a shape op leaves a ``[batch, units]`` tensor as it is (Flatten(axis=1), Reshape to [-1 | 0, k])."""
    if node.op_type == "Flatten":
        return node.attrs.get("axis", 1) == 1
    if node.op_type == "Reshape" and len(node.inputs) > 1 and node.inputs[1] in fn.consts:
        target = np.asarray(fn.consts[node.inputs[1]]).reshape(-1)
        return target.size == 2 and target[0] in (-1, 0) and target[1] > 0
    return False


def _scalar_operand(fn, node, cur, static) -> float | None:
    """The constant scalar ``c`` of ``Mul(cur, c)`` / ``Mul(c, cur)`` / ``Div(cur, c)``, else None."""
    if len(node.inputs) != 2 or cur not in node.inputs:
        return None
    other = node.inputs[1] if node.inputs[0] == cur else node.inputs[0]
    if node.op_type == "Div" and node.inputs[0] != cur:
        return None
    if other == cur or not static(other):
        return None
    value = np.asarray(_value(fn, other))
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _onnx_np_dtype(to: int):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(int(to))


def _value(fn, name: str, params: Mapping[str, Any] | None = None):
    if params is not None and name in params:
        return jnp.asarray(params[name])
    if name in fn.params:
        return jnp.asarray(fn.params[name])
    if name in fn.consts:
        return jnp.asarray(fn.consts[name])
    node = next(n for n in fn.nodes if name in n.outputs)
    return jnp.asarray(node.attrs["value"])


def _materialise(fn, params, s: _LinearSpec) -> DenseLayer:
    W = _value(fn, s.weight, params)
    if W.ndim != 2:
        raise NotDenseError(
            f"the weight {s.weight!r} of node {s.node!r} has shape {W.shape}, not [n_in, n_out]"
        )
    W = (W.T if s.transpose else W) * (s.scale * s.in_scale)
    n_out = W.shape[1]
    b = jnp.zeros((n_out,), W.dtype)
    terms = ([(s.bias, s.bias_scale)] if s.bias is not None else []) + [(name, 1.0) for name in s.extra_bias]
    for name, factor in terms:
        value = _value(fn, name, params) * factor
        if value.size not in (1, n_out) or (value.ndim > 1 and value.shape[-1] != value.size):
            raise NotDenseError(
                f"the bias {name!r} of node {s.node!r} has shape {value.shape}; expected [{n_out}]"
            )
        b = b + jnp.broadcast_to(value.reshape(-1), (n_out,))
    if s.mirror is not None:
        signs = jnp.asarray(s.mirror, W.dtype)
        W = W[:, [0] * len(s.mirror)] * signs
        b = b[jnp.zeros(len(s.mirror), int)] * signs
    return DenseLayer(W, b, s.activation, s.attrs)
