r"""``jacobian_importance``: statistics of the full per-sample Jacobian, streamed over a data set.

For a model :math:`f: \mathbb{R}^{d} \to \mathbb{R}^{m}` and samples :math:`x^{(1..N)}`, the per-sample
Jacobian :math:`J_{ij}(x) = \partial f_i(x) / \partial x_j` is aggregated into the mean absolute value (the
importance), the mean (direction), the standard deviation and the root mean square (the three measures of
NeuralSens: J. Pizarroso, J. Portela, A. Muñoz, "NeuralSens: Sensitivity Analysis of Neural Networks",
Journal of Statistical Software 102(7), 2022), with the standard error of the mean absolute value.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError
from converters.onnx_to_jax.ops.rnn import unroll_limit
from jaxsens import _engine, _stats
from jaxsens._model import Model, apply_rows
from jaxsens._results import JacobianImportance

__all__ = ["check_gradient_model", "jacobian_importance"]

_MODES = ("auto", "reverse", "forward")
_SCALES = (None, "std")
_PRECISIONS = ("float32", "tensorfloat32", "bfloat16")
_MAX_CORRELATED_FEATURES = 1024
_CORRELATION_THRESHOLD = 0.9


def _per_sample_jacobian(model: Model, mode: str, outputs: tuple[int, ...] | None, sums_to_one: bool = False):
    """``x -> J(x)`` of shape ``[n_selected_outputs, *input_shape]`` for one sample (for several inputs ``x`` is a
    tuple and ``J(x)`` the tuple of ``[n_selected_outputs, *input_shape_i]``).

    With ``sums_to_one`` (all outputs of a softmax head: ``sum_k f_k(x) = 1`` for every ``x``) the rows of ``J``
    sum to zero, so reverse mode pulls back only ``K - 1`` rows and the last is minus their sum: one backward pass
    fewer per sample (a 2-class classifier costs 2 instead of 3 forward-pass equivalents).
    """

    def f(x):
        y = jnp.ravel(model.apply(model.params, x))
        return y if outputs is None else y[np.asarray(outputs)]

    if mode == "reverse" and sums_to_one and outputs is None:

        def jac(x):  # x: one array, or a tuple of arrays (one per input)
            head = jax.jacrev(lambda v: f(v)[:-1])(x)
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


def _softmax_head(model: Model) -> bool:
    """True when the model's output is a softmax over its (only) output axis, read off the ONNX graph."""
    from converters.onnx_to_jax.graph import OnnxFunction

    fn = model.apply
    if not isinstance(fn, OnnxFunction) or len(model.output_shape) != 1 or model.n_outputs < 2:
        return False
    producer = {o: node for node in fn.nodes for o in node.outputs}
    node = producer.get(fn.output)
    while node is not None and node.op_type == "Identity":
        node = producer.get(node.inputs[0])
    if node is None or node.op_type != "Softmax":
        return False
    return node.attrs.get("axis", -1 if fn.opset >= 13 else 1) in (-1, 1)


@functools.partial(jax.jit, static_argnames=("mode", "outputs", "correlate", "precision", "sums_to_one"))
def _jacobian_kernel(
    model: Model, xs, mask, row_index, *, mode, outputs, correlate, precision, sums_to_one=False
):
    """Per-chunk summaries: moments of ``J`` and ``|J|``, of their sums over time, and of the inputs.

    For several inputs ``xs`` is a tuple of chunks and ``correlate`` a tuple of flags; the result is a tuple of
    per-input summaries (each input's block of the Jacobian, from one pass through the model).
    """
    del row_index  # deterministic method: no per-row randomness
    # recurrences in lax.scan: differentiating an unrolled one measured 3-5x slower (reverse) and 3x (forward)
    with jax.default_matmul_precision(precision), unroll_limit(0):
        if model.batched:  # static: part of the model's pytree metadata
            jac = _batch_jacobian(model, mode, outputs, sums_to_one)(xs)  # [B, k, *input_shape]
        else:
            jac = jax.vmap(_per_sample_jacobian(model, mode, outputs, sums_to_one))(xs)
    if isinstance(xs, tuple):
        return tuple(_input_stats(j, x, mask, c) for j, x, c in zip(jac, xs, correlate))
    return _input_stats(jac, xs, mask, correlate)


def _input_stats(jac, xs, mask, correlate: bool) -> dict:
    """Moments of one input's Jacobian block ``[B, k, *input_shape]`` and of the input ``[B, *input_shape]``."""
    abs_jac = jnp.abs(jac)
    stats = {"jac": _stats.moments_of(jac, mask), "abs": _stats.moments_of(abs_jac, mask)}
    if xs.ndim > 2:  # sequence / image inputs: the per-feature aggregate over the leading input axes
        lead = tuple(range(2, jac.ndim - 1))
        stats["agg"] = _stats.moments_of(jnp.sum(jac, axis=lead), mask)
        stats["agg_abs"] = _stats.moments_of(jnp.sum(abs_jac, axis=lead), mask)
    n_features = xs.shape[-1]
    rows = xs.reshape(-1, n_features)  # every (sample, time step) is an observation of the features
    row_mask = jnp.repeat(mask, rows.shape[0] // xs.shape[0])
    stats["x"] = _stats.moments_of(rows, row_mask)
    if correlate:
        stats["xcorr"] = _stats.comoments_of(rows, row_mask)
    return stats


def jacobian_importance(
    model: Model,
    data,
    *,
    batch_size: int | None = None,
    mode: str = "auto",
    outputs: int | str | Sequence[int | str] | None = None,
    scale: str | None = None,
    progress=None,
    nan_policy: str = "raise",
    precision: str = "float32",
    devices: Sequence[jax.Device] | None = None,
) -> JacobianImportance | dict[str, JacobianImportance]:
    r"""Mean absolute, mean, std and RMS of the per-sample Jacobian over a data set, in one streaming pass.

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

    **Integer inputs** (token ids feeding an ``Embedding`` / ``Gather``, declared integer or bool in the model)
    have no derivative: they are refused (:class:`~jaxsens.ArgumentError`); use
    :func:`jaxsens.permutation_importance`, whose discrete perturbation (ids permuted across rows) is defined
    for them. Differentiating with respect to the embedding output is not available yet.

    Args:
        model: a :class:`jaxsens.Model` with floating-point inputs (one, or several).
        data: ``[n_samples, *input_shape]`` as a numpy / JAX array or DataFrame; a path to a ``.npy``
            (streamed from disk), ``.npz`` (first array, or ``"file.npz:name"``), ``.csv`` or ``.parquet``
            file (header names become ``feature_names``; a header holding all of the model's feature names
            selects them); or any iterable of batches (a tuple batch ``(x, y)`` uses ``x``). For several inputs
            a tuple or dict of these, one per input (see above).
        batch_size: rows per compiled chunk (rounded up to a multiple of the device count); default from the
            memory the per-sample Jacobian needs (see :func:`jaxsens._engine.choose_batch_size`).
        mode: ``"reverse"`` (``jacrev``, cost ~ n_outputs backward passes), ``"forward"`` (``jacfwd``, cost ~
            n_inputs forward passes) or ``"auto"``: reverse when the number of explained outputs is smaller
            than the number of input elements.
        outputs: explain only these outputs (indices into the flattened output, or names from
            ``model.output_names``); the model is applied, then indexed, then differentiated, so reverse mode
            costs proportionally less.
        scale: ``None``, or ``"std"`` to report statistics of ``J_ij * s_j`` with ``s_j`` the standard
            deviation (ddof = 1) of feature ``j`` over the same rows (pooled over time steps for sequence
            inputs), which makes inputs with different units comparable. ``s`` is accumulated in the same pass
            and applied when the statistics are finalized; this is exact, since every statistic is linear in
            ``s_j >= 0``. Refused (``DataError``) with fewer than 2 rows or a constant feature, where ``s_j``
            is undefined or 0 and the scaled importance would say nothing about the model.
        progress: ``True`` for a progress bar, or a callable ``progress(rows_done, rows_total_or_None)``.
        nan_policy: ``"raise"`` (default; the error names the first bad row) or ``"skip"`` rows with NaN / Inf
            (counted in ``n_skipped``).
        precision: matmul precision inside the kernel: ``"float32"`` (default; true float32 products, needed
            for the 1e-5 accuracy of a million-row mean), or ``"tensorfloat32"`` / ``"bfloat16"`` (faster on
            GPU tensor cores, ~1e-3 relative error).
        devices: devices to shard the batch axis over; default all local devices.

    Returns:
        A :class:`JacobianImportance` (several inputs: ``dict[input_name, JacobianImportance]``). Input pairs
        whose Pearson correlation exceeds 0.9 in absolute value (over features, pooled over time steps) are
        listed in ``correlated_pairs`` and reported with a :class:`jaxsens._stats.CorrelatedInputsWarning`.

    Raises:
        ArgumentError: bad option values; an integer / bool model input.
        DataError: data whose shape does not match ``model.input_shape``, NaN / Inf rows
            (``nan_policy="raise"``), no usable rows, inputs whose row counts differ.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from jaxsens import Model
        >>> w = jnp.array([[1.0, -2.0, 0.5]])
        >>> m = Model.from_function(lambda p, x: p @ x, w, input_shape=(3,))
        >>> xs = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
        >>> r = jacobian_importance(m, xs)
        >>> r.mean.tolist(), r.mean_abs.tolist()
        ([[1.0, -2.0, 0.5]], [[1.0, 2.0, 0.5]])
    """
    shapes = check_gradient_model(model, "jacobian_importance")
    if mode not in _MODES:
        raise ArgumentError(f"mode must be one of {_MODES}, got {mode!r}")
    if scale not in _SCALES:
        raise ArgumentError(f"scale must be None or 'std', got {scale!r}")
    if precision not in _PRECISIONS:
        raise ArgumentError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    multi = len(shapes) > 1
    selected = _resolve_outputs(outputs, model.output_names or (), model.n_outputs)
    n_selected = model.n_outputs if selected is None else len(selected)
    n_in = sum(math.prod(s) for s in shapes)
    resolved = ("reverse" if n_selected < n_in else "forward") if mode == "auto" else mode
    correlate = tuple(s[-1] <= _MAX_CORRELATED_FEATURES for s in shapes)

    kernel = functools.partial(
        _jacobian_kernel,
        mode=resolved,
        outputs=selected,
        correlate=correlate if multi else correlate[0],
        precision=precision,
        sums_to_one=_softmax_head(model),
    )
    per_sample = None if batch_size is not None else _bytes_per_sample(model, resolved, selected)
    stats, info = _engine.run(
        kernel,
        model,
        data,
        batch_size=batch_size,
        bytes_per_sample=per_sample,
        nan_policy=nan_policy,
        progress=progress,
        devices=devices,
    )

    all_outputs = model.output_names or tuple(f"y{i}" for i in range(model.n_outputs))
    output_names = all_outputs if selected is None else tuple(all_outputs[i] for i in selected)
    if not multi:
        names = info.feature_names or model.feature_names or tuple(f"x{i}" for i in range(shapes[0][-1]))
        return _result(stats, info, names, output_names, shapes[0], resolved, scale, correlate[0])
    results = {}
    for name, shape, part, header, corr in zip(
        model.input_names, shapes, stats, info.feature_names, correlate
    ):
        names = header or tuple(f"{name}[{j}]" for j in range(shape[-1]))
        results[name] = _result(part, info, names, output_names, shape, resolved, scale, corr)
    return results


def check_gradient_model(model, method: str) -> tuple[tuple[int, ...], ...]:
    """Boundary check of the gradient methods; returns the per-sample shape of each input.

    Refuses a non-``Model``, an input without a feature axis, and integer / bool inputs (token ids): their
    derivative is zero everywhere, a silent wrong answer if it were reported.
    """
    if not isinstance(model, Model):
        raise ArgumentTypeError(
            f"{method}() needs a jaxsens.Model, got {type(model).__name__}; see load_model()"
        )
    _, shapes, _ = _engine.model_inputs(model)
    for name, shape in zip(model.input_names, shapes):
        if not shape or not all(isinstance(d, int | np.integer) for d in shape):
            raise ArgumentError(
                f"{method}() needs inputs with at least one axis (features); input {name!r} has per-sample "
                f"shape {shape}"
            )
    ints = _engine.integer_inputs(model)
    if ints:
        name, dtype = ints[0]
        more = f" (also {[n for n, _ in ints[1:]]})" if len(ints) > 1 else ""
        raise ArgumentError(
            f"{method}() differentiates the model with respect to its inputs, but input {name!r} is {dtype}"
            f"{more}: integer inputs (e.g. token ids feeding an Embedding / Gather) have no derivative, and the "
            "gradient through them is 0 everywhere. Use permutation_importance(), the perturbation method that "
            "defines a discrete perturbation for them (ids permuted across rows); differentiating with respect "
            "to the embedding output is not available yet. If the values are really continuous, export the "
            "model with a float input"
        )
    shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    cut = _cut_inputs(model, shapes)
    if cut:
        raise ArgumentError(
            f"{method}() differentiates the model with respect to its inputs, but input {cut[0]!r} reaches the "
            "output only through operations without a derivative (a Cast to an integer type, e.g. token ids in a "
            "float input feeding an Embedding / Gather, or Round / Floor / ArgMax): its derivative is 0 "
            "everywhere although the output depends on it. Use permutation_importance(), the perturbation method "
            "that defines a discrete perturbation for ids (permuted across rows); differentiating with respect to "
            "the embedding output is not available yet"
        )
    return shapes


_CUT_CACHE: dict = {}


def _cut_inputs(model: Model, shapes) -> tuple[str, ...]:
    """Inputs the output depends on but whose derivative is structurally zero (traced once per architecture).

    Two abstract traces, no evaluation: the output's dependence on each input in the jaxpr of ``apply``, and the
    dependence of the JVP's output tangent on each input tangent. An input in the first but not in the second
    reaches the output only through operations whose derivative JAX knows to be zero (``convert_element_type``
    to an integer, ``round``, ``floor``, ``argmax``, ``stop_gradient``): its Jacobian is 0 for every ``x``.
    Both analyses over-approximate through control flow (``scan``, ``while``, ``cond`` count as depending on all
    their operands), so a differentiable input is never reported.
    """
    leaves, treedef = jax.tree.flatten(model)
    key = (treedef, tuple((np.shape(v), str(getattr(v, "dtype", type(v)))) for v in leaves))
    try:
        return _CUT_CACHE[key]
    except TypeError:  # unhashable static metadata: analyse without caching
        key = None
    except KeyError:
        pass
    examples = tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes)
    multi = len(shapes) > 1

    def f(x):
        return model.apply(model.params, x)

    def tangent(x, t):
        return jax.jvp(f, (x,), (t,))[1]

    x = examples if multi else examples[0]
    with unroll_limit(0):
        primal = jax.make_jaxpr(f)(x).jaxpr
        linear = jax.make_jaxpr(tangent)(x, x).jaxpr
    n = len(shapes)
    cut = []
    for i, name in enumerate(model.input_names):
        hot = [j == i for j in range(n)]
        if any(_reaches(primal, hot)) and not any(_reaches(linear, [False] * n + hot)):
            cut.append(name)
    cut = tuple(cut)
    if key is not None and len(_CUT_CACHE) < 256:
        _CUT_CACHE[key] = cut
    return cut


def _reaches(jaxpr, tainted_in: Sequence[bool]) -> list[bool]:
    """For each output of ``jaxpr``: does it depend on an input flagged in ``tainted_in``? (forward taint)"""
    tainted = {v for v, t in zip(jaxpr.invars, tainted_in) if t}

    def hit(v):
        return not hasattr(v, "val") and v in tainted  # literals carry ``val`` and depend on nothing

    for eqn in jaxpr.eqns:
        ins = [hit(v) for v in eqn.invars]
        if not any(ins):
            continue
        sub = next((eqn.params[k] for k in ("jaxpr", "call_jaxpr") if k in eqn.params), None)
        sub = getattr(sub, "jaxpr", sub)
        if eqn.primitive.name in ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint") and (
            sub is not None and len(sub.invars) == len(ins) and len(sub.outvars) == len(eqn.outvars)
        ):
            outs = _reaches(sub, ins)
        else:  # control flow, custom rules: every output depends on every operand
            outs = [True] * len(eqn.outvars)
        tainted.update(v for v, o in zip(eqn.outvars, outs) if o)
    return [hit(v) for v in jaxpr.outvars]


def _result(
    stats, info, feature_names, output_names, input_shape, mode, scale, correlate
) -> JacobianImportance:
    """One input's :class:`JacobianImportance` from its merged statistics."""
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
        _stats.warn_correlated(
            pairs, threshold=_CORRELATION_THRESHOLD, method="jacobian_importance", stacklevel=4
        )
    return JacobianImportance(
        **finals,
        n_samples=info.n_samples,
        feature_names=tuple(feature_names),
        output_names=tuple(output_names),
        input_shape=tuple(input_shape),
        mode=mode,
        scale=scale,
        n_skipped=info.n_skipped,
        input_mean=np.asarray(stats["x"].mean, np.float64),
        input_std=input_std,
        correlated_pairs=pairs,
        time_aggregate=aggregate,
    )


def _bytes_per_sample(model: Model, mode: str, outputs: tuple[int, ...] | None) -> int:
    """Memory bound for one sample in the kernel (traced once per architecture, then cached)."""
    n_selected = model.n_outputs if outputs is None else len(outputs)
    _, shapes, _ = _engine.model_inputs(model)
    example = tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes)
    per_sample = _engine.model_bytes_per_sample(
        model,
        ("jacobian", mode, outputs),
        _per_sample_jacobian(model, mode, outputs),
        example if len(shapes) > 1 else example[0],
    )
    n_in = sum(math.prod(s) for s in shapes)
    return per_sample + 6 * 4 * n_selected * n_in  # J, |J| and the moments' deviations


def _finalize(jac: _stats.Moments, abs_jac: _stats.Moments, s: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of ``J * s`` (``s`` broadcast over the last axis) from the moments of ``J`` and ``|J|``."""
    n = float(jac.count)
    mean = np.asarray(jac.mean, np.float64)
    out = {
        "mean_abs": np.asarray(abs_jac.mean, np.float64),
        "mean": mean,
        "std": _stats.std(jac),
        "rms": np.sqrt(np.asarray(jac.m2, np.float64) / n + mean * mean),
        "stderr": _stats.std(abs_jac) / math.sqrt(n),
    }
    return {k: v * s for k, v in out.items()}


def _resolve_outputs(outputs, names: Sequence[str], n_outputs: int) -> tuple[int, ...] | None:
    """Indices into the flattened output for ``outputs=`` (indices or names)."""
    if outputs is None:
        return None
    items = [outputs] if isinstance(outputs, str | int | np.integer) else list(outputs)
    if not items:
        raise ArgumentError("outputs= is empty; pass None for all outputs, or indices / names of outputs")
    idx = []
    for o in items:
        if isinstance(o, str):
            if o not in names:
                raise ArgumentError(
                    f"outputs= names an unknown output {o!r}; the model's outputs are {list(names)}"
                )
            idx.append(list(names).index(o))
        elif isinstance(o, int | np.integer) and not isinstance(o, bool):
            if not -n_outputs <= int(o) < n_outputs:
                raise ArgumentError(
                    f"outputs= index {int(o)} is out of range for a model with {n_outputs} outputs"
                )
            idx.append(int(o) % n_outputs)
        else:
            raise ArgumentTypeError(f"outputs= takes output indices or names, got {o!r}")
    if len(set(idx)) != len(idx):
        raise ArgumentError(f"outputs= repeats an output: {items}")
    return tuple(idx)
