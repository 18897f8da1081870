"""`Model`: a network as a pure per-sample JAX function plus its parameters."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import (
    ArgumentError,
    ArgumentTypeError,
    ConversionError,
    DataError,
    ModelFileError,
)

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
        "outputs_sum_to_one",
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
        outputs_sum_to_one: the outputs sum to one for every input (a softmax over the model's only output axis,
            of at least two entries): read off the graph for converted models
            (:func:`converters.onnx_to_jax.heads.sums_to_one`), declared (and checked) for wrapped functions.
            Every row of such a model's Jacobian sums to zero.

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
    outputs_sum_to_one: bool = False
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
        outputs_sum_to_one: bool = False,
    ) -> Model:
        """Wrap a per-sample JAX function ``fn(params, x)``; the output shape is found with ``jax.eval_shape``.

        ``outputs_sum_to_one=True`` declares that ``fn``'s outputs (one axis, at least two entries) sum to one for
        every input (a softmax head); methods then use it (e.g. one backward pass fewer per Jacobian). The
        declaration is checked on two samples (zeros and a seeded normal draw); a function that breaks it is
        refused. Nothing is inferred from a function: the default is ``False``.
        """
        input_shape = tuple(int(d) for d in input_shape)
        try:
            out = jax.eval_shape(fn, params, jax.ShapeDtypeStruct(input_shape, dtype))
        except Exception as e:  # noqa: BLE001 - the user's function, traced on a sample of input_shape
            raise ArgumentError(
                f"fn(params, x) fails on one sample of input_shape={input_shape}: {type(e).__name__}: {e}"
            ) from e
        if not hasattr(out, "shape"):
            raise ArgumentTypeError(f"fn(params, x) must return one array, got {type(out).__name__}")
        output_shape = tuple(out.shape)
        if not isinstance(outputs_sum_to_one, bool | np.bool_):
            raise ArgumentTypeError(
                f"outputs_sum_to_one takes True or False, got {type(outputs_sum_to_one).__name__} "
                f"{outputs_sum_to_one!r}"
            )
        if outputs_sum_to_one:
            _check_sums_to_one(fn, params, input_shape, output_shape, dtype)
        return cls(
            apply=fn,
            params=params,
            input_shape=input_shape,
            output_shape=output_shape,
            feature_names=_names(feature_names, input_shape[-1] if input_shape else 1, "x", "feature_names"),
            output_names=_names(output_names, int(np.prod(output_shape)), "y", "output_names"),
            outputs_sum_to_one=bool(outputs_sum_to_one),
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
        base_dir: str | os.PathLike | None = None,
    ) -> Model:
        """Convert an ONNX model (path, bytes or ``onnx.ModelProto``) into a :class:`Model`.

        Args:
            output: which graph output to explain (name or index); default the first floating-point output
                (e.g. the probabilities of a scikit-learn classifier, not its labels).
            input_shape: per-sample input shape (without the batch axis), needed only when the graph leaves
                non-batch axes unknown, e.g. ``(10, 3)`` for an input declared ``[N, T, 3]``; single-input models.
            base_dir: for bytes / a ``ModelProto`` with external data, the folder holding that data (a file's
                external data is always read from the file's own folder, never from elsewhere).

        Raises:
            ConversionError: the graph cannot be converted (its subclasses name the file, op or node); also a
                graph whose op reduces or normalises over the batch axis in a way with no per-sample meaning
                (see :mod:`converters.onnx_to_jax.rows`; reductions with a per-sample meaning give a warning).
        """
        from converters.onnx_to_jax.columns import merge_column_inputs
        from converters.onnx_to_jax.batch_axis import make_batch_symbolic
        from converters.onnx_to_jax.graph import (
            FEATURE_NAMES_KEY,
            OUTPUT_NAMES_KEY,
            OnnxFunction,
            load_onnx_proto,
            metadata_json,
        )
        from converters.onnx_to_jax.heads import sums_to_one

        proto, _ = load_onnx_proto(source, base_dir=base_dir)
        proto = merge_column_inputs(proto)  # skl2onnx DataFrame exports: one input per column -> one input
        # a batch fixed at N > 1 (torch.onnx.export without dynamic axes): made symbolic where proved, else refused
        proto = make_batch_symbolic(proto, output=output, input_shape=input_shape)
        fn = OnnxFunction(proto, output=output)
        if not fn.input_names:  # the interpreter evaluates such graphs (constant folding), but a model needs input
            raise ConversionError("the graph has no inputs (every input is an initializer); nothing to explain")
        shapes = _input_shapes(fn, input_shape)
        in_shape = shapes[0] if len(shapes) == 1 else tuple(shapes)
        params = {k: jnp.asarray(v) for k, v in fn.params.items()}
        output_shape, batched = _check_batch_axis(fn, params, shapes)
        batched = batched and len(shapes) == 1
        meta_features = metadata_json(fn.metadata, FEATURE_NAMES_KEY, list, None)
        meta_outputs = metadata_json(fn.metadata, OUTPUT_NAMES_KEY, list, None)
        last = shapes[0][-1] if len(shapes) == 1 and shapes[0] else 1
        n_out = int(np.prod(output_shape))
        if feature_names is None and meta_features is not None and len(meta_features) != last:
            meta_features = None  # names written for another shape (a hand-edited file): fall back to x0, x1, ...
        if output_names is None and meta_outputs is not None and len(meta_outputs) != n_out:
            meta_outputs = None
        return cls(
            apply=fn,
            params=params,
            input_shape=in_shape,
            output_shape=output_shape,
            feature_names=_names(feature_names if feature_names is not None else meta_features, last, "x",
                                 "feature_names"),
            output_names=_names(output_names if output_names is not None else meta_outputs, n_out, fn.output,
                                "output_names"),
            layer_names=fn.layer_names,
            input_names=fn.input_names,
            batched=batched,
            outputs_sum_to_one=len(output_shape) == 1 and n_out >= 2 and sums_to_one(fn),
            source=os.fspath(source) if isinstance(source, str | os.PathLike) else "<onnx>",
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

    @property
    def input_dtypes(self) -> tuple[np.dtype, ...]:
        """The dtype each input is declared with (ONNX graph inputs; float32 for wrapped functions): an integer
        input (token ids feeding an Embedding / Gather) has no derivative and takes no continuous noise."""
        declared = getattr(self.apply, "input_dtypes", None)
        if declared is not None and len(declared) == self.n_inputs:
            return tuple(np.dtype(d) for d in declared)
        return (np.dtype(np.float32),) * self.n_inputs

    def with_params(self, params) -> Model:
        """The same architecture with other weights (compiled kernels are reused)."""
        return dataclasses.replace(self, params=params)

    @property
    def unroll(self) -> int | None:
        """The tracing option of recurrent ops (see :meth:`with_unroll`); ``None``: the default."""
        return getattr(self.apply, "unroll", None)

    def with_unroll(self, steps: int | None) -> Model:
        """The same model with its recurrences (ONNX ``RNN`` / ``GRU`` / ``LSTM``) traced another way.

        Over a batch, sequences of at most ``steps`` time steps run as a static Python loop and longer ones in
        ``jax.lax.scan``; ``steps=0`` always uses ``lax.scan`` (gradient kernels want it: reverse mode through an
        unrolled cell measured 3-5x slower); ``None`` restores the default (32 steps). The values are the same
        either way (up to float32 rounding). The option is static metadata of the model's pytree: each value
        compiles its own kernel, the same value reuses it; call it inside or outside ``jit``. A model wrapping a
        plain function has no converted recurrences: it is returned unchanged.

        Example:
            >>> import jaxsens
            >>> m = jaxsens.load_model(jaxsens.examples.default_model_path())
            >>> m.with_unroll(0).unroll, m.unroll
            (0, None)
        """
        from converters.onnx_to_jax.graph import check_unroll

        steps = check_unroll(steps)
        if not hasattr(self.apply, "with_unroll"):
            return self
        apply = self.apply.with_unroll(steps)
        return self if apply is self.apply else dataclasses.replace(self, apply=apply)

    @property
    def reverse_only(self) -> bool:
        """Whether the model is traced for first-order reverse mode only (see :meth:`with_reverse_only`)."""
        return bool(getattr(self.apply, "reverse_only", False))

    def with_reverse_only(self, flag: bool = True) -> Model:
        """The same model traced for one reverse-mode derivative only: converted ops may then use hand-written
        pull-backs (``jax.custom_vjp``) that are faster than JAX's transpose of their forward computation. The
        values and first derivatives are the same (up to float32 rounding); forward mode (``jax.jvp``) and second
        derivatives of such a model are refused by JAX. Static metadata of the model's pytree, like
        :meth:`with_unroll`; a model wrapping a plain function is returned unchanged.

        Example:
            >>> import jaxsens
            >>> m = jaxsens.load_model(jaxsens.examples.default_model_path())
            >>> m.with_reverse_only().reverse_only, m.reverse_only
            (True, False)
        """
        if not hasattr(self.apply, "with_reverse_only"):
            return self
        apply = self.apply.with_reverse_only(flag)
        return self if apply is self.apply else dataclasses.replace(self, apply=apply)

    def dense_layers(self, *, method: str = "dense_layers") -> list:
        """The model as a dense stack, input layer first: ``[DenseLayer(W [n_in, n_out], b [n_out], activation,
        attrs), ...]`` with weights read from ``self.params`` (so :meth:`with_params` is seen).

        Converted models are read off their graph (:func:`converters.onnx_to_jax.dense.dense_layers`); wrapped
        functions must declare ``dense_activations`` (:func:`jaxsens.dense_model` does).

        Raises:
            NotDenseError: the model is not a stack of dense layers; the message names the first node that is not
                part of one, or says how to declare the layers of a wrapped function. ``method`` names the caller.
        """
        from converters.onnx_to_jax.dense import NotDenseError, dense_layers
        from converters.onnx_to_jax.graph import OnnxFunction

        if hasattr(self.apply, "dense_activations"):
            from jaxsens._dense import function_layers

            return function_layers(self, method)
        if isinstance(self.apply, OnnxFunction):
            return dense_layers(self.apply, self.params, method=method)
        raise NotDenseError(
            f"{method}() cannot see the layers of a model built from a plain function "
            f"({self.source or self.apply!r}); "
            "build it with jaxsens.dense_model(layers, activations) or give its apply a `dense_activations` "
            "attribute and params [{'W': [n_in, n_out], 'b': [n_out]}, ...]"
        )

    # ------------------------------------------------------------------ evaluation
    def check_batch(self, xs, what: str = "data") -> None:
        """Raise :class:`DataError` (expected vs got) unless ``xs`` is a batch of samples of ``input_shape``."""

        if self.n_inputs != 1:
            return
        try:
            shape = tuple(np.shape(xs))
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise DataError(f"{what} is not an array of samples of shape {tuple(self.input_shape)}: {e}") from None
        if shape[1:] != tuple(self.input_shape):
            raise DataError(
                f"{what} has shape {shape}; the model expects [n_samples, {', '.join(map(str, self.input_shape))}] "
                f"(per-sample input shape {tuple(self.input_shape)})"
            )

    def __call__(self, xs, *, batch_size: int = 8192) -> np.ndarray:
        """Predict a batch: ``xs`` is ``[n_samples, *input_shape]``; returns ``[n_samples, *output_shape]``."""
        if self.n_inputs == 1:
            self.check_batch(xs)
            from jaxsens._data import as_chunk_dtype, check_float32_input

            check_float32_input(xs)  # non-real dtypes, finite values that float32 would turn into inf
            n = int(np.shape(xs)[0])
            # chunks padded to a power-of-two size (at most batch_size): a ragged tail, or a new n, reuses one of
            # a few compiled shapes instead of compiling its own
            size = min(batch_size, 1 << max(n - 1, 0).bit_length())
            parts = []
            for i in range(0, n, size):
                chunk = as_chunk_dtype(xs[i : i + size], self.input_dtypes[0])  # token ids stay exact int32
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
            raise ArgumentTypeError("intermediates() needs a model converted from ONNX / Keras; this one wraps a function")
        names = tuple(self.layer_names if names is None else names)
        unknown = [n for n in names if n not in self.layer_names and n not in _tensor_names(fn)]
        if unknown:
            raise ArgumentError(f"unknown layer(s) {unknown}; layers: {list(self.layer_names)}")
        if self.n_inputs == 1:
            self.check_batch(xs)
            from jaxsens._data import as_chunk_dtype, check_float32_input

            check_float32_input(xs)
            xs = jnp.asarray(as_chunk_dtype(xs, self.input_dtypes[0]))  # token ids stay exact int32
        else:
            xs = _multi(xs, self.input_names)
        out = _intermediates(self, xs, names)
        return {k: np.asarray(out[k]) for k in names}  # layer order (jit returns dicts sorted by key)

    def layer_shape(self, name: str) -> tuple[int, ...]:
        """The per-sample shape of layer ``name`` (as :meth:`intermediates` gives it without the batch axis), found
        with ``jax.eval_shape`` (nothing is computed).

        Example:
            >>> import jaxsens
            >>> m = jaxsens.load_model(jaxsens.examples.default_model_path())
            >>> m.layer_shape(m.layer_names[0])
            (64,)
        """
        return tuple(int(d) for d in self.layer_structs((name,), caller="layer_shape()")[name].shape)

    def layer_structs(self, names: Sequence[str] | None = None, *, caller: str = "layer_structs()"
                      ) -> dict[str, jax.ShapeDtypeStruct]:
        """``{name: jax.ShapeDtypeStruct}``: per-sample shape and dtype of each layer (every layer by default; a
        graph tensor's name is accepted too), from one abstract trace of :meth:`intermediates`. ``caller`` names
        the call in errors (e.g. ``"jacobian_importance(wrt='dense')"``).

        Raises:
            ArgumentError: a model that wraps a plain function (it has no layers to name), an unknown layer (the
                message lists ``layer_names``).
        """
        fn = self.apply
        if not hasattr(fn, "intermediates"):
            raise ArgumentError(
                f"{caller} needs a model converted from ONNX / Keras (load_model / Model.from_keras), whose layers "
                f"have names; this one wraps a plain function ({self.source or fn!r})"
            )
        names = tuple(self.layer_names if names is None else names)
        unknown = [n for n in names if n not in self.layer_names and n not in _tensor_names(fn)
                   and n not in self.input_names]
        if unknown:
            raise ArgumentError(
                f"{caller}: no layer named {', '.join(map(repr, unknown))}; the model's layers are "
                f"{list(self.layer_names)}"
            )
        _, shapes, dtypes = _engine_inputs(self)
        structs = tuple(jax.ShapeDtypeStruct(s, jax.dtypes.canonicalize_dtype(d)) for s, d in zip(shapes, dtypes))
        params = jax.tree.map(lambda v: jax.ShapeDtypeStruct(np.shape(v), v.dtype), self.params)
        x = structs if self.n_inputs > 1 else structs[0]
        out = jax.eval_shape(lambda p, v: fn.intermediates(p, v, names), params, x)
        return {n: out[n] for n in names}


def _input_shapes(fn, input_shape) -> list[tuple[int, ...]]:
    """Per-sample input shapes: the graph's declared shapes without the batch axis, or ``input_shape``."""

    if input_shape is not None:
        if len(fn.input_names) != 1:
            raise ArgumentError(
                f"input_shape= is for single-input models; this one has {len(fn.input_names)} inputs "
                f"{fn.input_names}, whose shapes must be fixed in the ONNX file"
            )
        if isinstance(input_shape, int | np.integer) and not isinstance(input_shape, bool):
            input_shape = (input_shape,)
        try:
            given = tuple(int(d) for d in input_shape)
            ok = all(float(d) == g for d, g in zip(input_shape, given)) and all(g > 0 for g in given)
        except (TypeError, ValueError):
            raise ArgumentTypeError(
                f"input_shape={input_shape!r} is not a sequence of positive integers, e.g. input_shape=(10, 3)"
            ) from None
        if not ok:
            raise ArgumentError(f"input_shape={input_shape!r} must hold positive integers, e.g. input_shape=(10, 3)")
        declared = fn.input_shapes[0]
        if declared is not None:
            per_sample = declared[1:]
            if len(per_sample) != len(given) or any(d is not None and d != g for d, g in zip(per_sample, given)):
                shown = ["?" if d is None else d for d in per_sample]
                raise ArgumentError(
                    f"input_shape={given} does not fit ONNX input {fn.input_names[0]!r}, declared [batch, "
                    f"{', '.join(map(str, shown))}] (per-sample shape {tuple(shown)}; '?' = any size)"
                )
        return [given]
    shapes = []
    for name, shape in zip(fn.input_names, fn.input_shapes):
        per_sample = None if shape is None else shape[1:]
        if shape is not None and not shape:
            raise ConversionError(f"ONNX input {name!r} is a scalar: it has no batch axis to hold samples")
        if per_sample is None or any(d is None for d in per_sample):
            shown = "unknown" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
            hint = (
                "pass input_shape=(...) (the shape of one sample, e.g. load_model(path, input_shape=(10, 3)); "
                "CLI: --input-shape 10,3)"
                if len(fn.input_names) == 1
                else "fix these axes in the ONNX file (input_shape= is for single-input models)"
            )
            raise ConversionError(f"ONNX input {name!r} has shape {shown} with unknown non-batch axes; {hint}")
        shapes.append(tuple(per_sample))
    from converters.onnx_to_jax.registry import max_tensor_bytes

    for name, shape, dt in zip(fn.input_names, shapes, fn.input_dtypes):  # before ops size arrays from them
        if any(d < 1 for d in shape):
            raise ConversionError(
                f"ONNX input {name!r} declares a per-sample shape {shape} with an empty or negative axis: a "
                f"sample would hold no values (corrupt file?)"
            )
        if math.prod(shape) * dt.itemsize > max_tensor_bytes():
            raise ConversionError(
                f"ONNX input {name!r} declares a per-sample shape {shape}: more than the budget of "
                f"{max_tensor_bytes():,} bytes per tensor (corrupt file? raise JAXSENS_MAX_TENSOR_BYTES if it "
                f"is real)"
            )
    return shapes


def _check_batch_axis(fn, params, shapes) -> tuple[tuple[int, ...], bool]:
    """The graph must keep samples on axis 0: rows in, as many rows out (not e.g. ``Reshape(-1, 1)``).

    Returns ``(output_shape, batched)``: the per-sample output shape, and whether the graph may run whole
    batches: a symbolic batch axis whose rows stay independent (:func:`converters.onnx_to_jax.rows.batch_findings`
    follows the batch axis through the traced graph; a ``ReduceSum`` over the batch that steers a ``Loop``, say,
    makes it ``False``). ``False`` is safe for the rows: the per-sample function then runs under ``vmap``, each
    sample as a batch of one. Where that changes the graph's meaning (an op that normalises over the batch axis, an
    operand that broadcasts it), the graph is refused with a :class:`ConversionError` naming the node; where it
    gives a well-defined per-sample meaning (a reduction over the batch axis), a warning says so
    (:func:`converters.onnx_to_jax.rows.judge_findings`).
    """
    from converters.onnx_to_jax.rows import batch_findings

    leaves = jax.tree.leaves(params)

    def trace(n):
        batch = [jax.ShapeDtypeStruct((n, *s), d) for s, d in zip(shapes, fn.input_dtypes)]
        return jax.make_jaxpr(fn.apply_batch)(params, *batch), [None] * len(leaves) + [0] * len(batch)

    try:
        one, axes = trace(1)
    except ConversionError:
        raise
    except Exception as e:
        raise ConversionError(
            f"the graph cannot run on one sample of shape {shapes}: {type(e).__name__}: {e}"
        ) from e
    out = one.out_avals[0]
    if not out.shape or out.shape[0] != 1:
        findings = batch_findings(one, axes, values=leaves)
        broadcast = [f for f in findings if f.kind == "broadcast" and f.node]
        if broadcast:
            refusals, _ = _judge(fn, broadcast)
            raise ConversionError(refusals[0])
        raise ConversionError(
            f"output {fn.output!r} does not keep samples on its first axis: one input row gives shape "
            f"{tuple(out.shape)} (the graph reshapes or broadcasts the batch axis together with others); export "
            "the model with the batch axis kept, or choose another output="
        )
    output_shape = tuple(out.shape[1:])
    fixed = [shape[0] for shape in fn.input_shapes if shape and shape[0] is not None]
    if fixed:  # a fixed batch axis: the per-sample function runs it with batch 1 only
        if any(d != 1 for d in fixed):  # a fixed batch of 1 is the graph's own meaning: nothing changes
            _judge(fn, batch_findings(one, axes, values=leaves), raise_=True)
        return output_shape, False
    n = 7  # a prime batch size: unlikely to coincide with another axis in the reshape rules
    try:
        closed, axes = trace(n)
    except Exception:  # noqa: BLE001 - graphs that cannot run wider batches are still fine per sample
        _judge(fn, batch_findings(one, axes, values=leaves), raise_=True)
        return output_shape, False
    out = closed.out_avals[0]
    findings = batch_findings(closed, axes, values=leaves)
    if not out.shape or out.shape[0] != n:
        culprit = next((f for f in findings if f.node and f.kind != "unknown"), None)
        where = f"; {_op_types(fn).get(culprit.node, '?')} node {culprit.node!r}: {culprit.reason}" if culprit else ""
        raise ConversionError(
            f"output {fn.output!r} does not keep samples on its first axis: {n} input rows give shape "
            f"{tuple(out.shape)}{where} (the graph reduces or reshapes the batch axis together with others, e.g. "
            "skl2onnx's Reshape(-1, 1) for multi-output regressors); export the model with the batch axis kept, or "
            "choose another output="
        )
    _judge(fn, findings, raise_=True)
    return output_shape, not findings


def _judge(fn, findings, *, raise_: bool = False) -> tuple[list[str], list[str]]:
    """Refusals and warnings for ``findings`` (see :func:`converters.onnx_to_jax.rows.judge_findings`); with
    ``raise_``, raise the first refusal and emit the warnings."""
    import warnings

    from converters.onnx_to_jax.rows import judge_findings

    refusals, warns = judge_findings(findings, _op_types(fn))
    if raise_:
        if refusals:
            more = f" ({len(refusals) - 1} more such node(s))" if len(refusals) > 1 else ""
            raise ConversionError(refusals[0] + more)
        for w in warns:
            warnings.warn(w, UserWarning, stacklevel=4)
    return refusals, warns


def _op_types(fn) -> dict[str, str]:
    """Node name -> op type for every node of the graph and of its sub-graphs (names as the converter gives them)."""
    import onnx

    out: dict[str, str] = {}

    def visit(graph):
        for i, n in enumerate(graph.node):
            out.setdefault(n.name or f"{n.op_type}_{i}", n.op_type)
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    visit(sub)

    for node in getattr(fn, "nodes", ()):
        out[node.name] = node.op_type
        for value in node.attrs.values():
            if isinstance(value, onnx.GraphProto):
                visit(value)
    return out


def _engine_inputs(model):
    from jaxsens._engine import model_inputs

    return model_inputs(model)


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


def _check_sums_to_one(fn, params, input_shape, output_shape, dtype) -> None:
    """Refuse ``outputs_sum_to_one=True`` for a function whose outputs do not sum to one on two samples."""
    n_out = int(np.prod(output_shape))
    if len(output_shape) != 1 or n_out < 2:
        raise ArgumentError(
            f"outputs_sum_to_one=True needs one output axis of at least two entries (class probabilities), but fn "
            f"returns shape {output_shape}; leave it False"
        )
    samples = [np.zeros(input_shape), np.random.default_rng(0).standard_normal(input_shape)]
    for x in samples:
        y = np.asarray(fn(params, jnp.asarray(x, dtype)), np.float64)
        total = float(np.sum(y))
        # float32 softmax: each output is off by ~eps relative, so the sum by ~n_out * eps
        if not abs(total - 1.0) <= 8 * n_out * np.finfo(np.float32).eps + 1e-6:
            raise ArgumentError(
                f"outputs_sum_to_one=True, but fn's outputs sum to {total!r} on a sample of shape {input_shape}; "
                f"declare it only for a softmax head (outputs that sum to one for every input)"
            )


def _names(given, n: int, prefix: str, what: str) -> tuple[str, ...]:
    """``given`` checked (``n`` names), or ``prefix0, prefix1, ...`` (``prefix[0], prefix[1], ...`` when the prefix
    ends in a digit, e.g. the Keras layer ``dense_2``: never ``dense_20``), or ``prefix`` alone when ``n == 1``."""
    if given is None:
        if n == 1:
            return (prefix,)
        return tuple(f"{prefix}[{i}]" if prefix[-1:].isdigit() else f"{prefix}{i}" for i in range(n))
    if isinstance(given, str | bytes) or not hasattr(given, "__iter__"):
        raise ArgumentTypeError(f"{what} takes a sequence of {n} names, got {type(given).__name__} {given!r}")
    given = tuple(str(g) for g in given)
    if len(given) != n:
        raise ArgumentError(f"{what} has {len(given)} names, expected {n}")
    return given


def load_model(
    source,
    *,
    weights: str | os.PathLike | None = None,
    safe: bool = True,
    output: str | int | None = None,
    feature_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
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
        input_shape: the shape of one sample, for single-input models whose file leaves non-batch axes unknown
            (e.g. ``(10, 3)`` for an input declared ``[N, T, 3]``).

    Raises:
        ModelFileNotFoundError: the path does not exist.
        ModelFileError: unreadable (permission denied), empty, truncated or corrupt file, a folder that is not a
            SavedModel; UnsafeModelError: code or files outside the model's folder; ConversionError otherwise.

    Example:
        >>> import jaxsens
        >>> m = jaxsens.load_model(jaxsens.examples.default_model_path())
        >>> m.input_shape, m.output_shape
        ((82,), (2,))
    """
    import onnx

    from converters.onnx_to_jax.graph import check_model_path

    kw = {"output": output, "feature_names": feature_names, "output_names": output_names, "input_shape": input_shape}
    if isinstance(source, onnx.ModelProto | bytes | bytearray):
        return Model.from_onnx(source, **kw)
    if not isinstance(source, str | os.PathLike):
        if hasattr(source, "layers") or type(source).__module__.startswith(("keras", "tf_keras")):
            return Model.from_keras(source, safe=safe, **kw)
        raise ArgumentTypeError(
            f"load_model() takes a path, an ONNX ModelProto or a Keras model, got {type(source).__name__}"
        )
    path = os.fspath(source)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    check_model_path(path, "model file", folder_ok=True)
    is_dir = os.path.isdir(path)
    if is_dir and not any(os.path.isfile(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise ModelFileError(
            f"{path!r} is a folder, not a model file; pass the model file inside it (e.g. model.onnx, model.keras) "
            f"or, for TensorFlow, a SavedModel folder holding saved_model.pb"
        )
    lower = path.lower()
    if lower.endswith(".onnx") and not is_dir:
        if weights is not None:
            raise ArgumentError(
                f"weights={os.fspath(weights)!r} is only used with a legacy Keras JSON structure file, not with "
                f"the ONNX file {path!r}"
            )
        return Model.from_onnx(path, **kw)
    from converters.keras import keras_file_to_onnx

    proto = keras_file_to_onnx(path, weights=weights, safe=safe)
    model = Model.from_onnx(proto, **kw)
    return dataclasses.replace(model, source=path)
