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

from converters.onnx_to_jax.ops.rnn import unroll_limit
from jaxsens import _engine, _stats
from jaxsens._model import Model, apply_rows
from jaxsens._results import JacobianImportance

__all__ = ["jacobian_importance"]

_MODES = ("auto", "reverse", "forward")
_SCALES = (None, "std")
_PRECISIONS = ("float32", "tensorfloat32", "bfloat16")
_MAX_CORRELATED_FEATURES = 1024
_CORRELATION_THRESHOLD = 0.9


def _per_sample_jacobian(model: Model, mode: str, outputs: tuple[int, ...] | None, sums_to_one: bool = False):
    """``x -> J(x)`` of shape ``[n_selected_outputs, *input_shape]`` for one sample.

    With ``sums_to_one`` (all outputs of a softmax head: ``sum_k f_k(x) = 1`` for every ``x``) the rows of ``J``
    sum to zero, so reverse mode pulls back only ``K - 1`` rows and the last is minus their sum: one backward pass
    fewer per sample (a 2-class classifier costs 2 instead of 3 forward-pass equivalents).
    """

    def f(x):
        y = jnp.ravel(model.apply(model.params, x))
        return y if outputs is None else y[np.asarray(outputs)]

    if mode == "reverse" and sums_to_one and outputs is None:

        def jac(x):
            head = jax.jacrev(lambda v: f(v)[:-1])(x)
            return jnp.concatenate([head, -jnp.sum(head, axis=0, keepdims=True)], axis=0)

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
def _jacobian_kernel(model: Model, xs, mask, row_index, *, mode, outputs, correlate, precision, sums_to_one=False):
    """Per-chunk summaries: moments of ``J`` and ``|J|``, of their sums over time, and of the inputs."""
    del row_index  # deterministic method: no per-row randomness
    # recurrences in lax.scan: differentiating an unrolled one measured 3-5x slower (reverse) and 3x (forward)
    with jax.default_matmul_precision(precision), unroll_limit(0):
        if model.batched:  # static: part of the model's pytree metadata
            jac = _batch_jacobian(model, mode, outputs, sums_to_one)(xs)  # [B, k, *input_shape]
        else:
            jac = jax.vmap(_per_sample_jacobian(model, mode, outputs, sums_to_one))(xs)
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
) -> JacobianImportance:
    r"""Mean absolute, mean, std and RMS of the per-sample Jacobian over a data set, in one streaming pass.

    For every sample, :math:`J(x) = \partial f(x) / \partial x` of shape ``[n_outputs, *input_shape]`` is
    computed with ``jax.vmap(jax.jacrev(f))`` (or ``jacfwd``) inside one compiled kernel per model
    architecture and chunk shape (for converted graphs whose rows are proven independent, ``model.batched``:
    one pull-back per output, or push-forward per input element, of the whole-batch graph, which gives the same
    per-sample Jacobians); per-chunk moments are merged in float64 (Chan et al.), so ``batch_size`` and
    the number of devices do not change the results beyond float32 rounding (< 1e-6 relative).

    Args:
        model: a :class:`jaxsens.Model` with one input.
        data: ``[n_samples, *input_shape]`` as a numpy / JAX array or DataFrame; a path to a ``.npy``
            (streamed from disk), ``.npz`` (first array, or ``"file.npz:name"``), ``.csv`` or ``.parquet``
            file (header names become ``feature_names``; a header holding all of the model's feature names
            selects them); or any iterable of batches (a tuple batch ``(x, y)`` uses ``x``).
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
            ``s_j >= 0``.
        progress: ``True`` for a progress bar, or a callable ``progress(rows_done, rows_total_or_None)``.
        nan_policy: ``"raise"`` (default; the error names the first bad row) or ``"skip"`` rows with NaN / Inf
            (counted in ``n_skipped``).
        precision: matmul precision inside the kernel: ``"float32"`` (default; true float32 products, needed
            for the 1e-5 accuracy of a million-row mean), or ``"tensorfloat32"`` / ``"bfloat16"`` (faster on
            GPU tensor cores, ~1e-3 relative error).
        devices: devices to shard the batch axis over; default all local devices.

    Returns:
        A :class:`JacobianImportance`. Input pairs whose Pearson correlation exceeds 0.9 in absolute value
        (over features, pooled over time steps) are listed in ``correlated_pairs`` and reported with a
        :class:`jaxsens._stats.CorrelatedInputsWarning`.

    Raises:
        ValueError: bad option values, data whose shape does not match ``model.input_shape``, NaN / Inf rows
            (``nan_policy="raise"``), or no usable rows.

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
    if not isinstance(model, Model):
        raise TypeError(
            f"jacobian_importance() needs a jaxsens.Model, got {type(model).__name__}; see load_model()"
        )
    if model.n_inputs != 1 or not all(isinstance(d, int) for d in model.input_shape):
        raise ValueError(
            "jacobian_importance() supports models with one input; "
            f"this one has inputs {list(model.input_names)}"
        )
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if scale not in _SCALES:
        raise ValueError(f"scale must be None or 'std', got {scale!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    input_shape = tuple(model.input_shape)
    if not input_shape:
        raise ValueError(
            "jacobian_importance() needs inputs with at least one axis (features); got a scalar input"
        )
    selected = _resolve_outputs(outputs, model.output_names or (), model.n_outputs)
    n_selected = model.n_outputs if selected is None else len(selected)
    n_in = math.prod(input_shape)
    resolved = ("reverse" if n_selected < n_in else "forward") if mode == "auto" else mode
    n_features = input_shape[-1]
    correlate = n_features <= _MAX_CORRELATED_FEATURES

    kernel = functools.partial(
        _jacobian_kernel,
        mode=resolved,
        outputs=selected,
        correlate=correlate,
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

    feature_names = info.feature_names or model.feature_names or tuple(f"x{i}" for i in range(n_features))
    all_outputs = model.output_names or tuple(f"y{i}" for i in range(model.n_outputs))
    output_names = all_outputs if selected is None else tuple(all_outputs[i] for i in selected)

    input_std = _stats.std(stats["x"])
    s = input_std if scale == "std" else np.ones(n_features)
    finals = _finalize(stats["jac"], stats["abs"], s)
    aggregate = None
    if "agg" in stats:
        aggregate = _finalize(stats["agg"], stats["agg_abs"], s)
    pairs = None
    if correlate:
        pairs = _stats.correlated_pairs(stats["xcorr"], feature_names, threshold=_CORRELATION_THRESHOLD)
        _stats.warn_correlated(pairs, threshold=_CORRELATION_THRESHOLD, method="jacobian_importance")
    return JacobianImportance(
        **finals,
        n_samples=info.n_samples,
        feature_names=tuple(feature_names),
        output_names=tuple(output_names),
        input_shape=input_shape,
        mode=resolved,
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
    per_sample = _engine.model_bytes_per_sample(
        model,
        ("jacobian", mode, outputs),
        _per_sample_jacobian(model, mode, outputs),
        jax.ShapeDtypeStruct(tuple(model.input_shape), jnp.float32),
    )
    return per_sample + 6 * 4 * n_selected * math.prod(model.input_shape)  # J, |J| and the moments' deviations


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
        raise ValueError("outputs= is empty; pass None for all outputs, or indices / names of outputs")
    idx = []
    for o in items:
        if isinstance(o, str):
            if o not in names:
                raise ValueError(
                    f"outputs= names an unknown output {o!r}; the model's outputs are {list(names)}"
                )
            idx.append(list(names).index(o))
        elif isinstance(o, int | np.integer) and not isinstance(o, bool):
            if not -n_outputs <= int(o) < n_outputs:
                raise ValueError(
                    f"outputs= index {int(o)} is out of range for a model with {n_outputs} outputs"
                )
            idx.append(int(o) % n_outputs)
        else:
            raise TypeError(f"outputs= takes output indices or names, got {o!r}")
    if len(set(idx)) != len(idx):
        raise ValueError(f"outputs= repeats an output: {items}")
    return tuple(idx)
