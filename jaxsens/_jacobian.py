r"""``jacobian_importance``: statistics of the full per-sample Jacobian, streamed over a data set.

For a model :math:`f: \mathbb{R}^{d} \to \mathbb{R}^{m}` and samples :math:`x^{(1..N)}`, the per-sample
Jacobian :math:`J_{ij}(x) = \partial f_i(x) / \partial x_j` is aggregated into the mean absolute value (the
importance), the mean (direction), the standard deviation and the root mean square (the three measures of
NeuralSens: J. Pizarroso, J. Portela, A. Muñoz, "NeuralSens: Sensitivity Analysis of Neural Networks",
Journal of Statistical Software 102(7), 2022), with the standard error of the mean absolute value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError
from jaxsens import _engine, _stats
from jaxsens._checks import check_model, per_architecture
from jaxsens._data import chunk_dtype
from jaxsens._method import Call, Method, Option, Plan, output_names
from jaxsens._model import Model, apply_rows
from jaxsens._results import Result, Results, result_class

__all__ = ["SPEC", "JacobianImportance", "chunk_jacobians", "jacobian_importance"]

_MODES = ("auto", "reverse", "forward")
_SCALES = (None, "std")
_PRECISIONS = ("float32", "tensorfloat32", "bfloat16")
_MAX_CORRELATED_FEATURES = 1024
_CORRELATION_THRESHOLD = 0.9
#: default rows per chunk (per CPU device) for Jacobians through loops (recurrences in ``lax.scan``), see
#: :func:`_bytes_per_sample`
_LOOP_ROWS_CPU = 256
_LOOP_PRIMITIVES = frozenset({"scan", "while"})


def _per_sample_jacobian(model: Model, mode: str, outputs: tuple[int, ...] | None, sums_to_one: bool = False,
                         wrt: str | None = None):
    """``x -> J(x)`` of shape ``[n_selected_outputs, *input_shape]`` for one sample (for several inputs ``x`` is a
    tuple and ``J(x)`` the tuple of ``[n_selected_outputs, *input_shape_i]``).

    With ``sums_to_one`` (all outputs of a softmax head: ``sum_k f_k(x) = 1`` for every ``x``) the rows of ``J``
    sum to zero, so reverse mode pulls back only ``K - 1`` rows and the last is minus their sum: one backward pass
    fewer per sample (a 2-class classifier costs 2 instead of 3 forward-pass equivalents).

    With ``wrt`` (a layer of a converted model) ``J(x) = d f(x; h + d) / d d`` at ``d = 0``, ``h`` the layer's
    output (:meth:`~converters.onnx_to_jax.graph.OnnxFunction.apply_offset`): ``[n_selected_outputs,
    *layer_shape]``, the sensitivity of the outputs to the layer's units.
    """
    if wrt is not None:
        layer = model.layer_structs((wrt,), caller=f"jacobian_importance(wrt={wrt!r})")[wrt]

        def jac_wrt(x):
            def g(d):
                y = jnp.ravel(model.apply.apply_offset(model.params, x, {wrt: d}))
                return y if outputs is None else y[np.asarray(outputs)]

            # no sums_to_one shortcut: an offset on the softmax output itself breaks sum_k f_k = 1
            return _derivative(g, mode, False)(jnp.zeros(layer.shape, layer.dtype))

        return jac_wrt

    def f(x):
        y = jnp.ravel(model.apply(model.params, x))
        return y if outputs is None else y[np.asarray(outputs)]

    return _derivative(f, mode, sums_to_one and outputs is None)


def _derivative(f, mode: str, rows_sum_to_zero: bool):
    """``jax.jacrev(f)`` or ``jax.jacfwd(f)``; with ``rows_sum_to_zero`` reverse mode pulls back all rows but the
    last, which is minus their sum (``v`` one array, or a tuple of arrays)."""
    if mode == "reverse" and rows_sum_to_zero:

        def jac(v):
            head = jax.jacrev(lambda u: f(u)[:-1])(v)
            return jax.tree.map(
                lambda h: jnp.concatenate([h, -jnp.sum(h, axis=0, keepdims=True)], axis=0), head
            )

        return jac
    return jax.jacrev(f) if mode == "reverse" else jax.jacfwd(f)


def _batch_jacobian(model: Model, mode: str, outputs: tuple[int, ...] | None, sums_to_one: bool = False):
    """``xs -> J`` of shape ``[batch, n_selected_outputs, *input_shape]`` through the whole-batch graph.

    Only for ``model.batched`` graphs, whose rows are proven independent: then the pull-back of the cotangent
    "output k of every row" is every row's gradient of output k, and the push-forward of "input element j of
    every row" is every row's column j. Reverse mode pulls back one cotangent per selected output (``K - 1``
    for a softmax head, see :func:`_per_sample_jacobian`), forward mode pushes one tangent per input element;
    both ``vmap`` over those directions, which keeps the batch axis inside the graph (recurrent cells keep it
    on the minor axis of their state).
    """
    input_shape = tuple(model.input_shape)
    n_in = math.prod(input_shape)

    def f(xs):
        y = apply_rows(model, model.params, xs).reshape(xs.shape[0], -1)
        return y if outputs is None else y[:, np.asarray(outputs)]

    def jac(xs):
        n = xs.shape[0]
        if mode == "reverse":
            y, pull = jax.vjp(f, xs)
            k = y.shape[1]
            rows = k - 1 if sums_to_one and outputs is None else k
            cts = jnp.broadcast_to(jnp.eye(k, dtype=y.dtype)[:rows, None, :], (rows, n, k))
            (head,) = jax.vmap(pull)(cts)  # [rows, n, *input_shape]
            if rows < k:
                head = jnp.concatenate([head, -jnp.sum(head, axis=0, keepdims=True)], axis=0)
            return jnp.moveaxis(head, 0, 1)
        tangents = jnp.broadcast_to(
            jnp.eye(n_in, dtype=xs.dtype).reshape(n_in, 1, *input_shape), (n_in, n, *input_shape)
        )
        cols = jax.vmap(lambda t: jax.jvp(f, (xs,), (t,))[1])(tangents)  # [n_in, n, k]
        return jnp.moveaxis(cols, 0, -1).reshape(n, cols.shape[-1], *input_shape)

    return jac


def chunk_jacobians(model: Model, xs, *, mode: str, outputs: tuple[int, ...] | None, precision: str = "float32",
                    sums_to_one: bool = False, wrt: str | None = None):
    """The per-sample Jacobians of one chunk, ``[batch, n_selected_outputs, *input_shape]`` (a tuple of those, one
    per input, when ``xs`` is a tuple): the first step of the Jacobian kernel, public for the methods built on the
    same derivatives (PaD). Call it inside ``jax.jit`` with ``mode`` / ``outputs`` / ``precision`` /
    ``sums_to_one`` / ``wrt`` static, as :data:`SPEC`'s ``prepare`` resolves them (``plan.static``).

    ``wrt``: a layer name (``model.layer_names``) to differentiate with respect to that layer's output instead of
    the inputs: ``[batch, n_selected_outputs, *layer_shape]`` (per sample through ``vmap``, also for batched
    graphs); ``None``: the inputs.

    In reverse mode the model is traced :meth:`~jaxsens.Model.with_reverse_only`: the result is not meant to be
    differentiated again (second derivatives: :mod:`jaxsens._hessian`).
    """
    # recurrences in lax.scan: differentiating an unrolled one measured 3-5x slower (reverse) and 3x (forward)
    model = model.with_unroll(0)  # explicit, static: part of the compile key
    if mode == "reverse":
        # one reverse-mode derivative and no other: ops may use their hand-written pull-backs (a Jacobian computed
        # here is never differentiated again; JAX refuses, loudly, if a caller tries)
        model = model.with_reverse_only()
    with jax.default_matmul_precision(precision):
        if model.batched and wrt is None:  # static: part of the model's pytree metadata
            return _batch_jacobian(model, mode, outputs, sums_to_one)(xs)  # [B, k, *input_shape]
        return jax.vmap(_per_sample_jacobian(model, mode, outputs, sums_to_one, wrt))(xs)


@functools.partial(jax.jit, static_argnames=("mode", "outputs", "correlate", "precision", "sums_to_one", "wrt"))
def _jacobian_kernel(
    model: Model, xs, mask, row_index, *, mode, outputs, correlate, precision, sums_to_one=False, wrt=None
):
    """Per-chunk summaries: moments of ``J`` and ``|J|``, of their sums over time, and of the inputs.

    For several inputs ``xs`` is a tuple of chunks and ``correlate`` a tuple of flags; the result is a tuple of
    per-input summaries (each input's block of the Jacobian, from one pass through the model). With ``wrt`` the
    Jacobian is with respect to that layer's units (``[B, k, *layer_shape]``).
    """
    del row_index  # deterministic method: no per-row randomness
    jac = chunk_jacobians(model, xs, mode=mode, outputs=outputs, precision=precision, sums_to_one=sums_to_one,
                          wrt=wrt)
    if isinstance(xs, tuple):
        return tuple(_input_stats(j, x, mask, c) for j, x, c in zip(jac, xs, correlate))
    return _input_stats(jac, xs, mask, correlate)


def _jacobian_rows(model: Model, xs, mask, row_index, *, mode, outputs, correlate, precision, sums_to_one=False,
                   **rest):
    """:func:`_jacobian_kernel`'s summaries and the per-row ``|J|`` ``[batch, k, *input_shape]`` (a tuple, one
    per input, for several inputs), from one Jacobian: the ``rows`` hook of :class:`jaxsens._method.Method`, with
    which :func:`jaxsens.compare` pairs versions row by row. Not jitted: called inside the caller's kernel."""
    del row_index  # deterministic method: no per-row randomness
    jac = chunk_jacobians(model, xs, mode=mode, outputs=outputs, precision=precision, sums_to_one=sums_to_one,
                          **rest)
    if isinstance(xs, tuple):
        stats = tuple(_input_stats(j, x, mask, c) for j, x, c in zip(jac, xs, correlate))
        return stats, tuple(jnp.abs(j) for j in jac)
    return _input_stats(jac, xs, mask, correlate), jnp.abs(jac)


def _input_stats(jac, xs, mask, correlate: bool) -> dict:
    """Moments of one input's Jacobian block ``[B, k, *input_shape]`` (``*layer_shape`` with ``wrt``) and of the
    input ``[B, *input_shape]`` (as float32: token ids too)."""
    abs_jac = jnp.abs(jac)
    stats = {"jac": _stats.moments_of(jac, mask), "abs": _stats.moments_of(abs_jac, mask)}
    if jac.ndim > 3:  # sequence / image inputs (or layers): the per-feature aggregate over the leading axes
        lead = tuple(range(2, jac.ndim - 1))
        stats["agg"] = _stats.moments_of(jnp.sum(jac, axis=lead), mask)
        stats["agg_abs"] = _stats.moments_of(jnp.sum(abs_jac, axis=lead), mask)
    n_features = xs.shape[-1]
    rows = xs.reshape(-1, n_features).astype(jnp.float32)  # every (sample, time step) observes the features
    row_mask = jnp.repeat(mask, rows.shape[0] // xs.shape[0])
    stats["x"] = _stats.moments_of(rows, row_mask)
    if correlate:
        stats["xcorr"] = _stats.comoments_of(rows, row_mask)
    return stats


@result_class
class JacobianImportance(Result):
    r"""Statistics of the per-sample Jacobian :math:`J_{ij}(x) = \partial f_i / \partial x_j` over a data set.

    ``importance`` is :math:`\overline{|J|}` (``[n_outputs, *input_shape]``, float64; NeuralSens' ``mean
    |sens|``) and ``stderr`` its standard error ``std(|J|) / sqrt(n_samples)`` (ddof = 1). With
    ``scale="std"`` every statistic is of ``J_ij * s_j``, ``s_j`` the standard deviation of feature ``j``.

    Attributes (besides those of :class:`jaxsens.Result`):
        mean: :math:`\overline{J}`, the direction of the effect.
        std: standard deviation of :math:`J` over samples (NeuralSens' ``std``).
        rms: :math:`\sqrt{\overline{J^2}}` (NeuralSens' ``meanSensSQ``).
        mode: ``"reverse"`` or ``"forward"``, how the Jacobian was computed.
        scale: ``None`` or ``"std"``.
        input_mean: ``[n_features]`` mean of each feature (pooled over time steps for sequence inputs).
        input_std: ``[n_features]`` its standard deviation (ddof = 1).
        correlated_pairs: ``(name_a, name_b, r)`` for feature pairs with ``|r| > 0.9``, strongest first;
            ``None`` if not checked (more than 1024 features).
        time_aggregate: for inputs with more than one axis, statistics of the per-sample sums over every axis
            but the last (``sum_t |J_tf|`` for ``mean_abs`` / ``stderr``; ``sum_t J_tf`` for ``mean`` /
            ``std`` / ``rms``), each ``[n_outputs, n_features]``; see :meth:`by_feature`. The per-feature
            ranking of a sequence input uses it (exact stderr).
    """

    mean: np.ndarray
    std: np.ndarray
    rms: np.ndarray
    mode: str = "reverse"
    scale: str | None = None
    input_mean: np.ndarray | None = None
    input_std: np.ndarray | None = None
    correlated_pairs: tuple[tuple[str, str, float], ...] | None = ()
    time_aggregate: dict[str, np.ndarray] | None = None

    stderr_rule: ClassVar[str] = "std(|J|) / sqrt(n_samples)"

    @property
    def mean_abs(self) -> np.ndarray:
        r""":math:`\overline{|J|}`: the same array as ``importance``."""
        return self.importance

    def by_feature(self) -> JacobianImportance:
        """Aggregate a sequence input ``[T, F]`` (or any ``[..., F]``) over its leading axes: ``[n_outputs, F]``.

        ``importance`` is the mean over samples of ``sum_t |J_tf|`` (the total absolute effect of feature ``f``
        through all its time steps), ``stderr`` its exact standard error; ``mean``, ``std`` and ``rms`` describe
        ``sum_t J_tf``. Accumulated in the same pass. 1-D inputs return ``self``.
        """
        if len(self.input_shape) <= 1:
            return self
        agg = self.time_aggregate
        if agg is None:
            raise ArgumentError("this result has no time aggregate (it was built without one)")
        return dataclasses.replace(
            self, importance=agg["mean_abs"], mean=agg["mean"], std=agg["std"], rms=agg["rms"],
            stderr=agg["stderr"], input_shape=(self.input_shape[-1],), time_aggregate=None,
        )

    def feature_importance(self):
        if len(self.input_shape) > 1 and self.time_aggregate is not None:
            return self.time_aggregate["mean_abs"], self.time_aggregate["stderr"]
        return super().feature_importance()

    def _extra_columns(self):
        return {"mean": self.mean, "std": self.std, "rms": self.rms}

    @property
    def importance_label(self) -> str:
        wrt = (self.options or {}).get("wrt")
        if wrt is not None:
            return f"mean |dy/dh|, h = layer {wrt}"
        return "mean |dy/dx| x std(x)" if self.scale == "std" else "mean |dy/dx|"


def _prepare(call: Call) -> Plan:
    model, opts = call.model, call.options
    if opts.get("wrt") is not None:  # PaD reuses this step with its own options (no wrt)
        return _prepare_wrt(call)
    shapes = check_model(model, "jacobian_importance", family="gradient", multi_input=True)
    selected = call.outputs
    n_selected = model.n_outputs if selected is None else len(selected)
    n_in = sum(math.prod(s) for s in shapes)
    mode = opts["mode"]
    resolved = ("reverse" if n_selected < n_in else "forward") if mode == "auto" else mode
    correlate = tuple(s[-1] <= _MAX_CORRELATED_FEATURES for s in shapes)
    static = {
        "mode": resolved,
        "outputs": selected,
        "correlate": correlate if len(shapes) > 1 else correlate[0],
        "precision": opts["precision"],
        "sums_to_one": bool(model.outputs_sum_to_one),
        "wrt": None,
    }
    per_sample = None if call.batch_size is not None else _bytes_per_sample(model, resolved, selected)
    return Plan(state=model, static=static, bytes_per_sample=per_sample,
                context={"shapes": shapes, "mode": resolved, "correlate": correlate},
                rows_ok=opts.get("scale") is None)  # PaD's options have no scale


def _prepare_wrt(call: Call) -> Plan:
    """``wrt=LAYER``: the Jacobian with respect to a layer's units (one input, a float layer, no ``scale``)."""
    model, opts, wrt = call.model, call.options, call.options["wrt"]
    where = f"jacobian_importance(wrt={wrt!r})"
    if opts["scale"] is not None:
        raise ArgumentError(
            f"{where}: scale={opts['scale']!r} multiplies by the inputs' standard deviations, which says nothing "
            f"about the units of layer {wrt!r}; leave scale=None with wrt="
        )
    if model.n_inputs > 1:
        raise ArgumentError(
            f"{where} handles a model with one input; this one has {model.n_inputs} inputs "
            f"{list(model.input_names)}. Leave wrt=None to differentiate with respect to every input"
        )
    layer = model.layer_structs((wrt,), caller=where)[wrt]  # a wrapped function, an unknown layer: refused
    if not jnp.issubdtype(layer.dtype, jnp.floating):
        structs = model.layer_structs(caller=where)
        floats = [n for n, s in structs.items() if jnp.issubdtype(s.dtype, jnp.floating)]
        raise ArgumentError(
            f"{where}: layer {wrt!r} holds {layer.dtype} values (e.g. token ids), which have no derivative; "
            f"choose a floating-point layer downstream, one of {floats}"
        )
    layer_shape = tuple(int(d) for d in layer.shape)
    if not layer_shape:
        raise ArgumentError(f"{where}: layer {wrt!r} holds one value per sample (shape ()); choose a layer with units")
    shapes = check_model(model, "jacobian_importance", family="gradient", wrt=wrt)  # integer inputs are fine here
    selected = call.outputs
    n_selected = model.n_outputs if selected is None else len(selected)
    mode = opts["mode"]
    resolved = ("reverse" if n_selected < math.prod(layer_shape) else "forward") if mode == "auto" else mode
    static = {
        "mode": resolved,
        "outputs": selected,
        "correlate": False,
        "precision": opts["precision"],
        "sums_to_one": False,  # an offset on the softmax output itself breaks sum_k f_k = 1
        "wrt": wrt,
    }
    per_sample = None if call.batch_size is not None else _bytes_per_sample(model, resolved, selected, wrt,
                                                                            math.prod(layer_shape))
    return Plan(state=model, static=static, bytes_per_sample=per_sample,
                context={"shapes": shapes, "mode": resolved, "correlate": (False,), "wrt": wrt,
                         "layer_shape": layer_shape})


def _finalize_result(stats, info, plan: Plan, call: Call):
    model, ctx = call.model, plan.context
    shapes = ctx["shapes"]
    outs = output_names(model, call.outputs)
    common = {"output_names": outs, "mode": ctx["mode"], "scale": call.options["scale"], "options": call.record()}
    if ctx.get("wrt") is not None:  # the layer's units are the features: "<layer>[i]" along its last axis
        wrt, shape = ctx["wrt"], ctx["layer_shape"]
        names = tuple(f"{wrt}[{i}]" for i in range(shape[-1]))
        return _result(stats, info, names, shape, False, wrt=wrt, **common)
    if len(shapes) == 1:
        names = info.feature_names or model.feature_names or tuple(f"x{i}" for i in range(shapes[0][-1]))
        return _result(stats, info, names, shapes[0], ctx["correlate"][0], **common)
    results = {}
    for name, shape, part, header, corr in zip(model.input_names, shapes, stats, info.feature_names,
                                               ctx["correlate"]):
        names = header or tuple(f"{name}[{j}]" for j in range(shape[-1]))
        results[name] = _result(part, info, names, shape, corr, **common)
    return Results(results)


SPEC = Method(
    name="jacobian",
    function_name="jacobian_importance",
    family="gradient",
    summary="mean |dy/dx| over the data, with mean, std and RMS of the per-sample Jacobian (NeuralSens' measures)",
    doc=r"""Mean absolute, mean, std and RMS of the per-sample Jacobian over a data set, in one streaming pass.

    For every sample, :math:`J(x) = \partial f(x) / \partial x` of shape ``[n_outputs, *input_shape]`` is
    computed with ``jax.vmap(jax.jacrev(f))`` (or ``jacfwd``) inside one compiled kernel per model
    architecture and chunk shape (for converted graphs whose rows are proven independent, ``model.batched``:
    one pull-back per output, or push-forward per input element, of the whole-batch graph, which gives the same
    per-sample Jacobians); per-chunk moments are merged in float64 (Chan et al.), so ``batch_size`` and
    the number of devices do not change the results beyond float32 rounding (< 1e-6 relative).

    **Several inputs.** For a model with inputs ``a`` ``[4]`` and ``b`` ``[3, 2]`` (say), ``data`` is a tuple
    ``(xa, xb)`` in the model's input order, or a dict ``{"a": xa, "b": xb}``, of arrays ``[n_samples, 4]``
    and ``[n_samples, 3, 2]`` (or any sources below, one per input: row ``n`` of every input is sample ``n``;
    row counts that differ raise :class:`~jaxsens.DataError`). The result is a dict ``{input_name:
    JacobianImportance}`` in the model's input order, the one for input ``i`` holding that input's block of the
    Jacobian, ``[n_outputs, *input_shape_i]`` (``[n_outputs, 4]`` and ``[n_outputs, 3, 2]`` here), as
    ``jax.jacrev`` of ``f((a, b))`` returns it. All inputs are read chunk by chunk together (memory does not
    grow with ``n_samples``) and differentiated in the same pass; a row with NaN / Inf in any input is one bad
    row. Feature names are a CSV / DataFrame header's, else ``"<input>[j]"``; ``scale="std"`` and
    ``correlated_pairs`` are per input. ``mode="auto"`` compares the explained outputs with the input elements
    of all inputs together.

    **Hidden units** (``wrt="LAYER"``, a name of ``model.layer_names``, converted models with one input): the
    outputs are differentiated with respect to that layer's units instead of the inputs,
    :math:`J(x) = \partial f(x; h + d) / \partial d` at :math:`d = 0`, ``h`` the layer's output for sample ``x``
    (the offset ``d`` is added right after the node computing ``h``, so every consumer of the layer sees it):
    ``importance`` is ``[n_outputs, *layer_shape]`` (``model.layer_shape("LAYER")``), the features are the units
    ``"LAYER[i]"`` along the layer's last axis and ``input_shape`` is the layer's shape. For ``Dense`` layers
    ``y = W_out^T h + b`` after the layer it is exactly ``|W_out|^T`` for every sample; through non-linear
    layers it varies with ``x``. ``scale="std"`` is refused with ``wrt`` (it scales by the inputs' standard
    deviations), the input statistics (``input_mean``, ``correlated_pairs``) are not reported, and
    ``mode="auto"`` compares the outputs with the layer's size.

    **Integer inputs** (token ids feeding an ``Embedding`` / ``Gather``, declared integer or bool in the model)
    have no derivative: with ``wrt=None`` they are refused (:class:`~jaxsens.ArgumentError`, naming the
    floating-point layers to pass as ``wrt``). Differentiate with respect to the embedding output instead,
    ``wrt="embedding"`` (its Keras layer name): ``[n_outputs, seq_len, embedding_dim]``; or use
    :func:`jaxsens.permutation_importance`, whose discrete perturbation (ids permuted across rows) is defined
    for the ids themselves.

    Args (besides the shared ones, see below):
        model: a :class:`jaxsens.Model` with floating-point inputs (one, or several).
        data: ``[n_samples, *input_shape]`` as a numpy / JAX array or DataFrame; a path to a ``.npy``
            (streamed from disk), ``.npz`` (first array, or ``"file.npz:name"``), ``.csv`` or ``.parquet``
            file (header names become ``feature_names``); or any iterable of batches. For several inputs
            a tuple or dict of these, one per input (see above).
        outputs: explain only these outputs (indices into the flattened output, or names); the model is
            applied, then indexed, then differentiated, so reverse mode costs proportionally less.
        mode, scale, precision: see Options below. ``scale="std"`` reports statistics of ``J_ij * s_j`` with
            ``s_j`` the standard deviation (ddof = 1) of feature ``j`` over the same rows (pooled over time
            steps), accumulated in the same pass and applied at the end (exact: every statistic is linear in
            ``s_j >= 0``); refused (``DataError``) with fewer than 2 rows or a constant feature.

    Returns:
        A :class:`JacobianImportance` (several inputs: :class:`jaxsens.Results`, ``{input_name: JacobianImportance}``). Input pairs
        whose Pearson correlation exceeds 0.9 in absolute value (over features, pooled over time steps) are
        listed in ``correlated_pairs`` and reported with a :class:`jaxsens._stats.CorrelatedInputsWarning`.

    Raises:
        ArgumentError: bad option values; an integer / bool model input (without ``wrt``); ``wrt`` naming no
            layer (the message lists them), a model wrapping a plain function, several inputs, or ``scale``.
        DataError: data whose shape does not match ``model.input_shape``, NaN / Inf rows
            (``nan_policy="raise"``), no usable rows, inputs whose row counts differ.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from jaxsens import Model
        >>> w = jnp.array([[1.0, -2.0, 0.5]])
        >>> m = Model.from_function(lambda p, x: p @ x, w, input_shape=(3,))
        >>> xs = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
        >>> r = jacobian_importance(m, xs)
        >>> r.mean.tolist(), r.importance.tolist()
        ([[1.0, -2.0, 0.5]], [[1.0, 2.0, 0.5]])
""",
    result=JacobianImportance,
    options=(
        Option("mode", str, "auto", "reverse (jacrev), forward (jacfwd), or auto: reverse when fewer outputs "
               "than input elements", choices=_MODES),
        Option("scale", str, None, "std: report statistics of J_ij * std(x_j) (unit-free)", choices=("std",)),
        Option("precision", str, "float32", "matmul precision in the kernel (tensorfloat32 / bfloat16: faster "
               "on GPUs, ~1e-3 relative error)", choices=_PRECISIONS),
        Option("wrt", str, None, "a layer name (model.layer_names): differentiate with respect to that layer's "
               "units instead of the inputs (e.g. an Embedding's output for token ids)"),
    ),
    prepare=_prepare,
    kernel=_jacobian_kernel,
    finalize=_finalize_result,
    rows=_jacobian_rows,
    multi_input=True,
)


def _result(stats, info, feature_names, input_shape, correlate, *, output_names, mode, scale, options, wrt=None
            ) -> JacobianImportance:
    """One input's :class:`JacobianImportance` from its merged statistics (with ``wrt``: the layer's, whose
    input statistics are not reported)."""
    n_features = input_shape[-1]
    input_std = _stats.std(stats["x"])
    s = _stats.scale_std(stats["x"], feature_names) if scale == "std" else np.ones(n_features)
    finals = _finalize(stats["jac"], stats["abs"], s)
    aggregate = None
    if "agg" in stats:
        aggregate = _finalize(stats["agg"], stats["agg_abs"], s)
    pairs = None
    if correlate:
        pairs = _stats.correlated_pairs(stats["xcorr"], feature_names, threshold=_CORRELATION_THRESHOLD)
        _stats.warn_correlated(pairs, threshold=_CORRELATION_THRESHOLD, method="jacobian_importance", stacklevel=7)
    return JacobianImportance(
        importance=finals["mean_abs"],
        stderr=finals["stderr"],
        mean=finals["mean"],
        std=finals["std"],
        rms=finals["rms"],
        n_samples=info.n_samples,
        n_skipped=info.n_skipped,
        feature_names=tuple(feature_names),
        output_names=tuple(output_names),
        input_shape=tuple(input_shape),
        method="jacobian",
        options=options,
        mode=mode,
        scale=scale,
        input_mean=None if wrt else np.asarray(stats["x"].mean, np.float64),
        input_std=None if wrt else input_std,
        correlated_pairs=None if wrt else pairs,
        time_aggregate=aggregate,
    )


def _bytes_per_sample(model: Model, mode: str, outputs: tuple[int, ...] | None, wrt: str | None = None,
                      layer_size: int = 0) -> int:
    """Memory bound for one sample in the kernel (traced once per architecture, then cached); with ``wrt``, the
    Jacobian has ``layer_size`` columns."""
    n_selected = model.n_outputs if outputs is None else len(outputs)
    _, shapes, dtypes = _engine.model_inputs(model)
    # the chunks' dtypes: float32; int32 / bool for token ids (with wrt=; otherwise integer inputs are refused)
    example = tuple(jax.ShapeDtypeStruct(s, chunk_dtype(d)) for s, d in zip(shapes, dtypes))
    per_sample = _engine.model_bytes_per_sample(
        model,
        ("jacobian", mode, outputs, wrt),
        _per_sample_jacobian(model, mode, outputs, wrt=wrt),
        example if len(shapes) > 1 else example[0],
    )
    n_in = sum(math.prod(s) for s in shapes) if wrt is None else layer_size
    per_sample += 6 * 4 * n_selected * n_in  # J, |J| and the moments' deviations
    if jax.local_devices()[0].platform == "cpu" and _has_loops(model, example if len(shapes) > 1 else example[0]):
        # Speed, not memory: every step of a recurrence's derivative loop reads and writes the whole chunk's
        # per-step arrays (states, gates, one copy per cotangent), which stay in the CPU's caches only for small
        # chunks. Raising the bound makes the default chunk _LOOP_ROWS_CPU rows: on the seed-001 LSTM (issue 14)
        # 256-row chunks ran 1.3x faster than the 512 rows the memory bound alone gave, and 128 rows no faster.
        per_sample = max(per_sample, _engine._BUDGET_BYTES["cpu"] // _LOOP_ROWS_CPU)
    return per_sample


_LOOPS_CACHE: dict = {}


def _has_loops(model: Model, example) -> bool:
    """Whether the model's forward pass on one sample holds a loop primitive (``lax.scan`` / ``while``: converted
    recurrences, or a function's own loops); traced once per architecture and input shape, then cached."""
    def trace():
        closed = jax.make_jaxpr(lambda x: model.with_unroll(0).apply(model.params, x))(example)
        return _jaxpr_has(closed.jaxpr, _LOOP_PRIMITIVES)

    return per_architecture(_LOOPS_CACHE, model, trace, str(example), persist="has-loops", decode=_flag)


def _flag(value) -> bool | None:
    """A kept record's flag, or ``None`` for a malformed one."""
    return value if isinstance(value, bool) else None


def _jaxpr_has(jaxpr, names: frozenset[str]) -> bool:
    """Whether ``jaxpr`` or any of its sub-jaxprs (``pjit``, ``custom_jvp_call``, ``cond`` branches, ...) holds
    an equation whose primitive is named in ``names``."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in names:
            return True
        for p in eqn.params.values():
            for sub in p if isinstance(p, list | tuple) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns") and _jaxpr_has(inner, names):
                    return True
    return False


def _finalize(jac: _stats.Moments, abs_jac: _stats.Moments, s: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of ``J * s`` (``s`` broadcast over the last axis) from the moments of ``J`` and ``|J|``."""
    n = float(jac.count)
    mean = np.asarray(jac.mean, np.float64)
    out = {
        "mean_abs": np.asarray(abs_jac.mean, np.float64),
        "mean": mean,
        "std": _stats.std(jac),
        "rms": _stats.rms(jac),
        "stderr": _stats.std(abs_jac) / math.sqrt(n),
    }
    return {k: v * s for k, v in out.items()}


jacobian_importance = SPEC.as_function()
