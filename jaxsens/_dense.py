"""Read a converted model as a dense stack: ``x -> act_1(x W_1 + b_1) -> ... -> act_L(. W_L + b_L)``.

The weight-based importance methods (connection weights, Garson, weight sums) and stepwise selection need the
layers of a multilayer perceptron, not just a function. :func:`dense_layers` recovers them from

* models converted from ONNX (PyTorch ``nn.Sequential`` exported with ``torch.onnx.export``, scikit-learn
  ``MLPRegressor`` / ``MLPClassifier`` through skl2onnx, Keras ``Dense`` stacks through tf2onnx): the graph is
  walked by :func:`converters.onnx_to_jax.dense.dense_layers` (a chain of ``MatMul`` (+ ``Add`` bias) or ``Gemm``
  nodes with elementwise activations between them);
* models built with :func:`dense_model` (or ``Model.from_function`` with a function that has a
  ``dense_activations`` attribute and params ``[{"W": [n_in, n_out], "b": [n_out]}, ...]``).

Both are what ``Model.dense_layers()`` answers; :func:`dense_layers` is that method behind the argument check.
Weights are always read from ``model.params`` at call time, so ``model.with_params(new)`` is seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError
from converters.onnx_to_jax.dense import DenseLayer, NotDenseError  # the graph walk lives in the converters

__all__ = [
    "ACTIVATIONS",
    "DenseLayer",
    "DenseStack",
    "NotDenseError",
    "activation_fn",
    "apply_layers",
    "dense_layers",
    "dense_model",
    "split_activation",
]


# ------------------------------------------------------------------------------------------------ activations
def _hard_sigmoid(x, *, alpha=0.2, beta=0.5):
    return jnp.clip(alpha * x + beta, 0.0, 1.0)


def _gelu(x, *, approximate="none"):
    return jax.nn.gelu(x, approximate=approximate == "tanh")


def _selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return gamma * jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0)))


#: canonical name -> ``fn(x, **attrs)`` (per sample, last axis = units).
ACTIVATIONS: dict[str, Callable[..., Any]] = {
    "identity": lambda x: x,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
    "leaky_relu": lambda x, *, alpha=0.01: jnp.where(x >= 0, x, alpha * x),
    "elu": lambda x, *, alpha=1.0: jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0))),
    "selu": _selu,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "hard_sigmoid": _hard_sigmoid,
    "swish": lambda x, *, alpha=1.0: x * jax.nn.sigmoid(alpha * x),
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "celu": lambda x, *, alpha=1.0: jnp.maximum(x, 0.0) + jnp.minimum(0.0, alpha * jnp.expm1(x / alpha)),
    "thresholded_relu": lambda x, *, alpha=1.0: jnp.where(x > alpha, x, 0.0),
    "clip": lambda x, *, low=-jnp.inf, high=jnp.inf: jnp.clip(x, low, high),
    "hard_swish": jax.nn.hard_swish,
    "gelu": _gelu,
}
_ALIASES = {"linear": "identity", "logistic": "sigmoid", "silu": "swish", None: "identity"}

def split_activation(entry) -> tuple[str, tuple]:
    """``"relu"`` or ``("leaky_relu", (("alpha", 0.2),))`` -> ``(canonical name, attrs)``; unknown names
    raise."""
    name, attrs = (entry, ()) if isinstance(entry, str) or entry is None else (entry[0], tuple(entry[1]))
    key = _ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        raise ArgumentError(
            f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)} (and {sorted(map(str, _ALIASES))})"
        )
    return key, tuple((str(k), v) for k, v in attrs)


def activation_fn(name, attrs: Sequence[tuple[str, Any]] = ()) -> Callable[[Any], Any]:
    """The ``jnp`` function of an activation.

    ``name`` is a canonical name (aliases: ``linear``, ``logistic``, ``silu``) with optional ``attrs``
    ``((name, value), ...)``, or a ``(name, attrs)`` pair.
    """
    if not isinstance(name, str) and name is not None:
        name, attrs = name[0], tuple(name[1]) + tuple(attrs)
    key = _ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        raise ArgumentError(
            f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)} (and {sorted(map(str, _ALIASES))})"
        )
    fn = ACTIVATIONS[key]
    kw = dict(attrs)
    return (lambda x: fn(x, **kw)) if kw else fn


# ------------------------------------------------------------------------------------------- JAX-built stacks
@dataclasses.dataclass(frozen=True)
class DenseStack:
    """Per-sample ``apply(params, x)`` of a dense stack, ``params = [{"W": [n_in, n_out], "b": [n_out]}]``.

    This is the documented convention for models built in JAX: any ``apply`` with a ``dense_activations``
    attribute (one activation per layer: a name such as ``"relu"``, or ``(name, ((attr, value), ...))`` such
    as ``("leaky_relu", (("alpha", 0.2),))``) and params of this form is read by :func:`dense_layers`.

    Example:
        >>> import numpy as np
        >>> f = DenseStack(("tanh", "identity"))
        >>> p = [{"W": np.ones((2, 3)), "b": np.zeros(3)}, {"W": np.ones((3, 1)), "b": np.zeros(1)}]
        >>> float(f(p, np.zeros(2))[0])
        0.0
    """

    activations: tuple

    @property
    def dense_activations(self) -> tuple:
        return self.activations

    def __call__(self, params, x):
        for layer, act in zip(params, self.activations, strict=True):
            x = activation_fn(act)(x @ layer["W"] + layer["b"])
        return x


def dense_onnx(
    layers: Sequence[Mapping[str, Any]],
    *,
    hidden: str = "Relu",
    output: str = "Softmax",
    layer_names: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
    graph_name: str = "mlp",
):
    """Write a dense stack as an ONNX model: per layer ``MatMul`` -> ``Add`` -> activation.

    Nodes are named like tf2onnx names Keras layers (``dense_0/MatMul``), so the converted model's intermediates
    carry the layer names; the input is ``input`` ``[batch, n_features]``, the output ``probabilities`` for a
    softmax head, else ``output``.

    Args:
        layers: ``[{"W": [n_in, n_out], "b": [n_out]}, ...]``, input layer first.
        hidden: ONNX op of the hidden layers' activation (``"Relu"``, ``"Tanh"``, ``"Sigmoid"``).
        output: ONNX op of the last layer (``"Softmax"`` over the last axis, ``"Identity"``, ...).
        layer_names: default ``dense_0, dense_1, ..., output``.
        metadata: extra ``metadata_props`` (e.g. ``jaxsens.feature_names`` as JSON).

    Returns:
        An ``onnx.ModelProto`` (opset 17, IR version 9) that passes ``onnx.checker``.
    """
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    names = list(layer_names or [f"dense_{i}" for i in range(len(layers) - 1)] + ["output"])
    out_name = "probabilities" if output == "Softmax" else "output"
    nodes, inits, prev = [], [], "input"
    for i, (layer, name) in enumerate(zip(layers, names)):
        w, b = f"{name}/kernel", f"{name}/bias"
        inits += [numpy_helper.from_array(np.asarray(layer["W"], np.float32), w)]
        inits += [numpy_helper.from_array(np.asarray(layer["b"], np.float32), b)]
        nodes.append(helper.make_node("MatMul", [prev, w], [f"{name}/MatMul:0"], name=f"{name}/MatMul"))
        nodes.append(
            helper.make_node("Add", [f"{name}/MatMul:0", b], [f"{name}/BiasAdd:0"], name=f"{name}/BiasAdd")
        )
        last = i == len(layers) - 1
        act = output if last else hidden
        out = out_name if last else f"{name}/{act}:0"
        attrs = {"axis": -1} if act == "Softmax" else {}
        nodes.append(helper.make_node(act, [f"{name}/BiasAdd:0"], [out], name=f"{name}/{act}", **attrs))
        prev = out
    n_in, n_out = np.shape(layers[0]["W"])[0], np.shape(layers[-1]["W"])[1]
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", int(n_in)])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", int(n_out)])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9, producer_name="jaxsens"
    )
    for key, value in {"jaxsens.layer_names": json.dumps(names), **(metadata or {})}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def dense_model(
    layers: Sequence[Mapping[str, Any] | tuple],
    activations: Sequence[str],
    *,
    feature_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
):
    """Build a :class:`~jaxsens.Model` from explicit dense layers.

    Args:
        layers: ``[{"W": [n_in, n_out], "b": [n_out]}, ...]`` (or ``(W, b)`` pairs), input layer first.
        activations: one per layer, e.g. ``("tanh", "identity")`` or ``(("leaky_relu", (("alpha", 0.2),)),
            "identity")``; see :data:`ACTIVATIONS`.
        feature_names, output_names: optional names of the inputs / outputs.

    Returns:
        A ``Model`` whose ``apply`` is a :class:`DenseStack`; every dense method accepts it.

    Example:
        >>> import numpy as np
        >>> m = dense_model([{"W": np.eye(2), "b": np.zeros(2)}], ["relu"])
        >>> m.input_shape, m.output_shape
        ((2,), (2,))
    """
    from jaxsens._model import Model

    params = []
    for i, layer in enumerate(layers):
        W, b = (layer["W"], layer["b"]) if isinstance(layer, Mapping) else layer
        W, b = jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32)
        if W.ndim != 2 or b.shape != (W.shape[1],):
            raise ArgumentError(
                f"layers[{i}] has W {W.shape} and b {b.shape}; expected W [n_in, n_out] and b [n_out]"
            )
        if params and params[-1]["W"].shape[1] != W.shape[0]:
            raise ArgumentError(
                f"layers[{i}] takes {W.shape[0]} inputs but layers[{i - 1}] has "
                f"{params[-1]['W'].shape[1]} units"
            )
        params.append({"W": W, "b": b})
    if len(activations) != len(params):
        raise ArgumentError(
            f"activations has {len(activations)} names for {len(params)} layers; give one per layer"
        )
    acts = tuple(a if not split_activation(a)[1] else split_activation(a) for a in activations)  # validates
    softmax_head = bool(acts) and split_activation(acts[-1])[0] == "softmax" and int(params[-1]["W"].shape[1]) >= 2
    return Model.from_function(
        DenseStack(acts),
        params,
        input_shape=(int(params[0]["W"].shape[0]),),
        feature_names=feature_names,
        output_names=output_names,
        outputs_sum_to_one=softmax_head,
    )


# --------------------------------------------------------------------------------------------- reading models
def dense_layers(model, *, method: str = "dense_layers") -> list[DenseLayer]:
    """The dense layers of ``model``, input layer first, with weights taken from ``model.params``.

    Args:
        model: a :class:`~jaxsens.Model` converted from ONNX / Keras, or built with :func:`dense_model`.
        method: the calling method's name, used in error messages.

    Returns:
        ``[DenseLayer(W [n_in, n_out], b [n_out], activation, attrs), ...]``; ``W`` and ``b`` are JAX arrays.

    Raises:
        NotDenseError: the model is not a dense stack; the message names the first node that is not part of
            one (e.g. an ``LSTM`` or ``Conv`` op) and points to the methods that work on any model.

    Example:
        >>> import numpy as np
        >>> m = dense_model(
        ...     [{"W": np.ones((3, 2)), "b": np.zeros(2)}, {"W": np.ones((2, 1)), "b": np.ones(1)}],
        ...     ["relu", "identity"],
        ... )
        >>> [(tuple(l.W.shape), l.activation) for l in dense_layers(m)]
        [((3, 2), 'relu'), ((2, 1), 'identity')]
    """
    from jaxsens._model import Model

    if not isinstance(model, Model):
        raise ArgumentTypeError(f"{method}() needs a jaxsens.Model, got {type(model).__name__}; see load_model()")
    return model.dense_layers(method=method)


def function_layers(model, method: str = "dense_layers") -> list[DenseLayer]:
    """The layers of a model whose ``apply`` declares ``dense_activations`` (see :class:`DenseStack`)."""
    acts = tuple(model.apply.dense_activations)
    params = model.params
    ok = isinstance(params, Sequence) and all(isinstance(p, Mapping) and {"W", "b"} <= set(p) for p in params)
    if not ok or len(params) != len(acts):
        raise NotDenseError(
            f"{method}(): the model declares dense_activations={acts} but its params are not a list of "
            f"{len(acts)} {{'W': [n_in, n_out], 'b': [n_out]}} dicts"
        )
    layers = []
    for i, (p, a) in enumerate(zip(params, acts)):
        name, attrs = split_activation(a)
        W, b = jnp.asarray(p["W"]), jnp.asarray(p["b"])
        if W.ndim != 2 or b.shape != (W.shape[1],) or (layers and layers[-1].W.shape[1] != W.shape[0]):
            raise NotDenseError(
                f"{method}(): params[{i}] has W {W.shape} and b {b.shape}, which do not chain"
            )
        layers.append(DenseLayer(W, b, name, attrs))
    return layers


def apply_layers(layers: Sequence[DenseLayer], x):
    """Evaluate a dense stack on one sample ``x`` ``[n_in]`` (or a batch ``[..., n_in]``)."""
    for layer in layers:
        x = activation_fn(layer.activation, layer.attrs)(x @ layer.W + layer.b)
    return x
