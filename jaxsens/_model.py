"""`Model`: a network as a pure per-sample JAX function plus its parameters."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Model", "apply_rows", "load_model"]

Shape = tuple[int, ...]


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["params"],
    meta_fields=[
        "apply",
        "input_shape",
        "output_shape",
        "feature_names",
        "output_names",
        "layer_names",
        "input_names",
        "batched",
    ],
    # `source` is only a label for reports: kept out of the pytree so that two weekly files of one architecture,
    # loaded from different paths, still share compiled code (unflattened copies inside jit see the default).
    drop_fields=["source"],
)
@dataclasses.dataclass(frozen=True, repr=False)
class Model:
    """A network as ``apply(params, x)``: a pure function of **one sample** and a pytree of parameters.

    ``Model`` is a frozen pytree: ``params`` are its leaves, everything else is static. Passing a model into a
    ``jax.jit``-compiled function therefore compiles once per architecture: two weekly versions of one network
    (same structure, new weights) reuse every compiled kernel.

    Attributes:
        apply: ``apply(params, x) -> y`` for one sample ``x`` of shape ``input_shape`` (a tuple / dict of arrays
            for models with several inputs); ``y`` has shape ``output_shape``.
        params: pytree of arrays (for ONNX models, the floating initializers by name).
        input_shape: per-sample input shape, e.g. ``(82,)`` or ``(10, 3)``; a tuple of shapes for several inputs.
        output_shape: per-sample output shape, e.g. ``(2,)``.
        feature_names: names of the last input axis (``n_features`` of them).
        output_names: names of the flattened outputs (``n_outputs`` of them).
        layer_names: names accepted by :meth:`intermediates`.
        input_names: names of the model's inputs (one for single-input models).
        source: where the model came from (for reports).
        batched: the converted graph may run whole batches at once (``apply.apply_batch(params, xs)``): checked at
            conversion, every output row provably depends on its own input row only; see :func:`apply_rows`.

    Example:
        >>> import jax.numpy as jnp
        >>> m = Model.from_function(lambda p, x: jnp.tanh(p["w"] @ x), {"w": jnp.eye(3)}, input_shape=(3,))
        >>> m(jnp.zeros((5, 3))).shape
        (5, 3)
    """

    apply: Callable[[Any, Any], Any]
    params: Any
    input_shape: tuple
    output_shape: Shape
    feature_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    layer_names: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ("x",)
    batched: bool = False
    source: str = dataclasses.field(default="", compare=False)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_function(
        cls,
        fn: Callable[[Any, Any], Any],
        params: Any,
        *,
        input_shape: Sequence[int],
        feature_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        dtype=jnp.float32,
    ) -> Model:
        """Wrap a per-sample JAX function ``fn(params, x)``; the output shape is found with ``jax.eval_shape``."""
        input_shape = tuple(int(d) for d in input_shape)
        out = jax.eval_shape(fn, params, jax.ShapeDtypeStruct(input_shape, dtype))
        output_shape = tuple(out.shape)
        return cls(
            apply=fn,
            params=params,
            input_shape=input_shape,
            output_shape=output_shape,
            feature_names=_names(feature_names, input_shape[-1] if input_shape else 1, "x", "feature_names"),
            output_names=_names(output_names, int(np.prod(output_shape)), "y", "output_names"),
            source=getattr(fn, "__qualname__", repr(fn)),
        )

    @classmethod
    def from_onnx(
        cls,
        source,
        *,
        output: str | int | None = None,
        feature_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> Model:
        """Convert an ONNX model (path, bytes or ``onnx.ModelProto``) into a :class:`Model`.

        Args:
            output: which graph output to explain (name or index); default the first floating-point output
                (e.g. the probabilities of a scikit-learn classifier, not its labels).
            input_shape: per-sample input shape, needed only when the graph leaves non-batch axes unknown.
        """
        from converters.onnx_to_jax.graph import FEATURE_NAMES_KEY, OUTPUT_NAMES_KEY, OnnxFunction, load_onnx_proto

        proto, _ = load_onnx_proto(source)
        fn = OnnxFunction(proto, output=output)
        shapes = []
        for name, shape in zip(fn.input_names, fn.input_shapes):
            per_sample = None if shape is None else shape[1:]
            if input_shape is not None and len(fn.input_names) == 1:
                per_sample = tuple(int(d) for d in input_shape)
            if per_sample is None or any(d is None for d in per_sample):
                raise ValueError(
                    f"ONNX input {name!r} has shape {shape} with unknown non-batch axes; pass input_shape=..."
                )
            shapes.append(tuple(per_sample))
        in_shape = shapes[0] if len(shapes) == 1 else tuple(shapes)
        params = {k: jnp.asarray(v) for k, v in fn.params.items()}
        example = (
            jax.ShapeDtypeStruct(in_shape, fn.input_dtypes[0])
            if len(shapes) == 1
            else tuple(jax.ShapeDtypeStruct(s, d) for s, d in zip(shapes, fn.input_dtypes))
        )
        out = jax.eval_shape(fn, params, example)
        output_shape = tuple(out.shape)
        batched = _check_batch_axis(fn, params, shapes) and len(shapes) == 1
        meta_features = json.loads(fn.metadata.get(FEATURE_NAMES_KEY, "null"))
        meta_outputs = json.loads(fn.metadata.get(OUTPUT_NAMES_KEY, "null"))
        last = shapes[0][-1] if len(shapes) == 1 and shapes[0] else 1
        return cls(
            apply=fn,
            params=params,
            input_shape=in_shape,
            output_shape=output_shape,
            feature_names=_names(feature_names or meta_features, last, "x", "feature_names"),
            output_names=_names(output_names or meta_outputs, int(np.prod(output_shape)), fn.output, "output_names"),
            layer_names=fn.layer_names,
            input_names=fn.input_names,
            batched=batched,
            source=source if isinstance(source, str | os.PathLike) and not isinstance(source, bytes) else "<onnx>",
        )

    @classmethod
    def from_keras(cls, keras_model, *, safe: bool = True, **kwargs) -> Model:
        """Convert an in-memory Keras model (Keras 3 or tf_keras) through ONNX. Needs the ``keras`` extra."""
        from converters.keras import keras_to_onnx

        return cls.from_onnx(keras_to_onnx(keras_model, safe=safe), **kwargs)

    def __repr__(self) -> str:  # the default dataclass repr would print every weight
        n_params = sum(int(np.size(v)) for v in jax.tree.leaves(self.params))
        layers = list(self.layer_names[:8]) + (["..."] if len(self.layer_names) > 8 else [])
        return (
            f"Model(source={self.source!r}, input_shape={self.input_shape}, output_shape={self.output_shape}, "
            f"n_params={n_params:,}, layers={layers}, batched={self.batched})"
        )

    # ------------------------------------------------------------------ derived
    @property
    def n_features(self) -> int:
        return int(self.input_shape[-1]) if self.input_shape and isinstance(self.input_shape[0], int) else 0

    @property
    def n_outputs(self) -> int:
        return int(np.prod(self.output_shape))

    @property
    def n_inputs(self) -> int:
        return len(self.input_names)

    def with_params(self, params) -> Model:
        """The same architecture with other weights (compiled kernels are reused)."""
        return dataclasses.replace(self, params=params)

    # ------------------------------------------------------------------ evaluation
    def check_batch(self, xs, what: str = "data") -> None:
        """Raise ``ValueError`` (expected vs got) unless ``xs`` is a batch of samples of ``input_shape``."""
        if self.n_inputs != 1:
            return
        shape = tuple(np.shape(xs))
        if shape[1:] != tuple(self.input_shape):
            raise ValueError(
                f"{what} has shape {shape}; the model expects [n_samples, {', '.join(map(str, self.input_shape))}] "
                f"(per-sample input shape {tuple(self.input_shape)})"
            )

    def __call__(self, xs, *, batch_size: int = 8192) -> np.ndarray:
        """Predict a batch: ``xs`` is ``[n_samples, *input_shape]``; returns ``[n_samples, *output_shape]``."""
        if self.n_inputs == 1:
            self.check_batch(xs)
            n = int(np.shape(xs)[0])
            # chunks padded to a power-of-two size (at most batch_size): a ragged tail, or a new n, reuses one of
            # a few compiled shapes instead of compiling its own
            size = min(batch_size, 1 << max(n - 1, 0).bit_length())
            parts = []
            for i in range(0, n, size):
                chunk = np.asarray(xs[i : i + size], np.float32)
                m = chunk.shape[0]
                if m < size:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - m, axis=0)])
                parts.append(np.asarray(_predict(self, jnp.asarray(chunk)))[:m])
            return np.concatenate(parts) if parts else np.zeros((0, *self.output_shape), np.float32)
        return np.asarray(_predict(self, _multi(xs, self.input_names)))

    def intermediates(self, xs, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Every layer's output for a batch ``xs``: ``{layer_name: [n_samples, ...]}`` (all layers by default)."""
        fn = self.apply
        if not hasattr(fn, "intermediates"):
            raise TypeError("intermediates() needs a model converted from ONNX / Keras; this one wraps a function")
        names = tuple(self.layer_names if names is None else names)
        unknown = [n for n in names if n not in self.layer_names and n not in _tensor_names(fn)]
        if unknown:
            raise KeyError(f"unknown layer(s) {unknown}; layers: {list(self.layer_names)}")
        if self.n_inputs == 1:
            self.check_batch(xs)
            xs = jnp.asarray(xs, jnp.float32)
        else:
            xs = _multi(xs, self.input_names)
        out = _intermediates(self, xs, names)
        return {k: np.asarray(out[k]) for k in names}  # layer order (jit returns dicts sorted by key)


def _check_batch_axis(fn, params, shapes) -> bool:
    """The graph must keep samples on axis 0: rows in, as many rows out (not e.g. ``Reshape(-1, 1)``).

    Returns whether the graph may run whole batches: a symbolic batch axis whose rows stay independent
    (:func:`converters.onnx_to_jax.rows.rows_independent` follows the batch axis through the traced graph; a
    ``ReduceSum`` over the batch that steers a ``Loop``, say, makes it ``False``). ``False`` is always safe: the
    per-sample function then runs under ``vmap``.
    """
    from converters.onnx_to_jax.rows import rows_independent

    if any(shape and shape[0] is not None for shape in fn.input_shapes):
        return False  # a fixed batch axis (often 1): the per-sample function runs it with batch 1 only
    n = 7  # a prime batch size: unlikely to coincide with another axis in the reshape rules
    batch = [jax.ShapeDtypeStruct((n, *s), d) for s, d in zip(shapes, fn.input_dtypes)]
    try:
        closed = jax.make_jaxpr(fn.apply_batch)(params, *batch)
    except Exception:  # noqa: BLE001 - graphs that cannot run wider batches are still fine per sample
        return False
    out = closed.out_avals[0]
    if not out.shape or out.shape[0] != n:
        raise ValueError(
            f"output {fn.output!r} does not keep samples on its first axis: {n} input rows give shape "
            f"{tuple(out.shape)} (the graph reshapes the batch axis together with others, e.g. skl2onnx's "
            "Reshape(-1, 1) for multi-output regressors); export the model with the batch axis kept, or choose "
            "another output="
        )
    leaves = jax.tree.leaves(params)
    ok, _ = rows_independent(closed, [None] * len(leaves) + [0] * len(batch), values=leaves)
    return ok


def _tensor_names(fn) -> set[str]:
    names = set()
    for node in getattr(fn, "nodes", ()):
        names.update(node.outputs)
    return names


def _multi(xs, names):
    if isinstance(xs, Mapping):
        return {k: jnp.asarray(xs[k]) for k in names}
    return tuple(jnp.asarray(v) for v in xs)


def apply_rows(model: Model, params, xs):
    """``model.apply`` over a batch ``xs`` ``[batch, *input_shape]`` -> ``[batch, *output_shape]`` (traceable).

    Converted graphs whose batch axis keeps its rows (``model.batched``) run the batch through the graph at
    once, so an op sees every row: the recurrent ops then put the batch on the minor axis of their state
    (vectorised gate maths). Otherwise ``vmap`` of the per-sample function. Both compute every row
    independently; per-sample transformations (``jacrev`` per row) keep using ``model.apply``.
    """
    if model.batched and hasattr(model.apply, "apply_batch"):
        return model.apply.apply_batch(params, xs)
    return jax.vmap(model.apply, in_axes=(None, 0))(params, xs)


@jax.jit
def _predict(model: Model, xs):
    return apply_rows(model, model.params, xs)


@functools.partial(jax.jit, static_argnums=2)
def _intermediates(model: Model, xs, names):
    return jax.vmap(lambda x: model.apply.intermediates(model.params, x, names))(xs)


def _names(given, n: int, prefix: str, what: str) -> tuple[str, ...]:
    if given is None:
        return tuple(f"{prefix}{i}" for i in range(n)) if n > 1 else (prefix,)
    given = tuple(str(g) for g in given)
    if len(given) != n:
        raise ValueError(f"{what} has {len(given)} names, expected {n}")
    return given


def load_model(
    source,
    *,
    weights: str | os.PathLike | None = None,
    safe: bool = True,
    output: str | int | None = None,
    feature_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> Model:
    """Load a model from any supported format and convert it, once, into a pure JAX :class:`Model`.

    Formats: ``.onnx`` (PyTorch, scikit-learn, Keras exports); Keras ``.keras`` and ``.h5`` files; TensorFlow
    SavedModel folders; the legacy Keras pair ``load_model("x_structure.json", weights="x_weights.h5")``; an in-memory
    Keras model; an ``onnx.ModelProto``. Keras formats need the ``keras`` extra (TensorFlow + tf2onnx).

    Args:
        source: path, folder, Keras model or ONNX proto.
        weights: the weights ``.h5`` of a legacy JSON structure file.
        safe: refuse Keras ``Lambda`` layers and custom objects (they run arbitrary code); ``safe=False`` opts in.
        output: which ONNX output to explain (default: the first floating output).

    Example:
        >>> import jaxsens
        >>> m = jaxsens.load_model(jaxsens.examples.default_model_path())
        >>> m.input_shape, m.output_shape
        ((82,), (2,))
    """
    import onnx

    kw = dict(output=output, feature_names=feature_names, output_names=output_names)
    if isinstance(source, onnx.ModelProto | bytes):
        return Model.from_onnx(source, **kw)
    if not isinstance(source, str | os.PathLike):
        if hasattr(source, "layers") or type(source).__module__.startswith(("keras", "tf_keras")):
            return Model.from_keras(source, safe=safe, **kw)
        raise TypeError(f"load_model() takes a path, an ONNX ModelProto or a Keras model, got {type(source).__name__}")
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    lower = path.lower()
    if lower.endswith(".onnx"):
        if weights is not None:
            raise ValueError("weights= is only used with a legacy Keras JSON structure file")
        return Model.from_onnx(path, **kw)
    from converters.keras import keras_file_to_onnx

    proto = keras_file_to_onnx(path, weights=weights, safe=safe)
    model = Model.from_onnx(proto, **kw)
    return dataclasses.replace(model, source=path)
