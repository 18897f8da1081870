r"""``integrated_gradients``: path attributions from a baseline, streamed over a data set; ``attributions`` per row.

For a model :math:`f: \mathbb{R}^{d} \to \mathbb{R}^{m}`, a sample :math:`x` and a baseline :math:`b`, the integrated
gradient of output :math:`k` with respect to input element :math:`j` is (Sundararajan, Taly & Yan 2017, "Axiomatic
attribution for deep networks", ICML, eq. 1)

.. math::  a_{kj}(x) = (x_j - b_j) \int_0^1 \partial f_k(b + \alpha (x - b)) / \partial x_j \, d\alpha
           \approx (x_j - b_j) \sum_s w_s \, \partial f_k(b + \alpha_s (x - b)) / \partial x_j

with the quadrature rule :math:`(\alpha_s, w_s)` on :math:`[0, 1]` of Captum's ``approximation_methods``:
``"gausslegendre"`` (``numpy.polynomial.legendre.leggauss(n_steps)`` mapped to :math:`[0, 1]`: exact for a
polynomial :math:`f` of degree up to :math:`2 n_{steps}`), ``"riemann_trapezoid"`` (``linspace(0, 1, n)``, weights
``1/n`` halved at both ends, as Captum writes it), ``"riemann_left"`` / ``"riemann_right"`` / ``"riemann_middle"``
(weights ``1/n``). By the fundamental theorem of calculus the attributions of an output sum to
:math:`f_k(x) - f_k(b)` (completeness); the quadrature's departure from it is reported as ``completeness_error``.

**Expected gradients** (Erion, Janizek, Sturmfels, Lundberg & Lee 2021, "Improving performance of deep learning
models with axiomatic attribution priors and expected gradients", Nature Machine Intelligence 3): with a data
source as baseline, the attribution is the integrated gradient averaged over baselines drawn from that reference
data, :math:`\mathbb{E}_{b \sim D}[a_{kj}(x; b)]`. Here it is estimated, per row :math:`x^{(r)}`, from
``n_baselines`` baselines :math:`b_1..b_B` drawn uniformly with replacement from a reference sample, each path
integrated with the chosen quadrature rule (the same ``alphas`` / ``weights`` on every path):

.. math::  \hat a_{kj}(x) = \frac{1}{B} \sum_{l=1}^{B} (x_j - b_{l,j}) \sum_s w_s \,
           \partial f_k(b_l + \alpha_s (x - b_l)) / \partial x_j

(a deterministic quadrature on each path; Erion's Monte-Carlo form draws one :math:`\alpha \sim U(0, 1)` per
baseline instead, and satisfies completeness only in expectation). Completeness holds per row against the drawn
baselines, :math:`\sum_j \hat a_{kj} = f_k(x) - \frac{1}{B} \sum_l f_k(b_l)`, so ``completeness_error`` is still
the quadrature error of every row. The reference sample is at most ``reference_rows`` rows of the reference data
(default 1024), a uniform sample without replacement (all rows when there are fewer), read once from any data source
and held on the device: ``reference_rows * prod(input_shape) * 4`` bytes, independent of the size of the reference
data. Randomness: with ``(k_ref, k_row) = jax.random.split(key)``, the sample keeps the rows of the smallest
priorities ``bits(fold_in(fold_in(k_ref, 0x1E4), i))`` over reference rows ``i`` (:func:`reference_sample`) and row
``r`` of the data draws its ``B`` indices into the sample with ``randint(fold_in(k_row, r), (B,), 0, n_reference)``
(:func:`draw_baselines`): the result does not depend on the batch size or the number of devices.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import types
import warnings
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError, DataError
from jaxsens import _engine, _stats
from jaxsens._checks import check_model
from jaxsens._data import DataSpec, Source, open_source
from jaxsens._jacobian import chunk_jacobians
from jaxsens._method import Call, Method, Option, Plan, output_names, resolve_key, resolve_outputs
from jaxsens._model import Model, apply_rows
from jaxsens._results import Result, result_class

__all__ = ["SPEC", "IntegratedGradients", "attributions", "draw_baselines", "integrated_gradients", "quadrature",
           "reference_sample"]

RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")
BASELINES = ("zeros", "mean")
N_BASELINES = 16  # expected gradients: baselines drawn per row (default)
REFERENCE_ROWS = 1024  # expected gradients: rows of the reference sample held on the device (default bound)


def quadrature(rule: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` ``[n_steps]`` float64 of ``rule`` on ``[0, 1]``, as Captum's
    ``captum.attr._utils.approximation_methods`` defines them.

    Example:
        >>> a, w = quadrature("riemann_trapezoid", 3)
        >>> a.tolist(), w.tolist()
        ([0.0, 0.5, 1.0], [0.16666666666666666, 0.3333333333333333, 0.16666666666666666])
    """
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return 0.5 * (1.0 + nodes), 0.5 * weights
    n = n_steps
    weights = np.full(n, 1.0 / n)
    if rule == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        return np.linspace(0.0, 1.0, n), weights
    if rule == "riemann_left":
        return np.linspace(0.0, 1.0 - 1.0 / n, n), weights
    if rule == "riemann_right":
        return np.linspace(1.0 / n, 1.0, n), weights
    if rule == "riemann_middle":
        return np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n), weights
    raise ArgumentError(f"rule must be one of {list(RULES)}, got {rule!r}")


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["model", "baseline", "alphas", "weights", "reference", "key"],
                   meta_fields=["n_baselines", "key_impl"])
@dataclasses.dataclass(frozen=True)
class _Path:
    """What crosses ``jit``: the model, the baseline ``[*input_shape]`` and the rule's ``alphas`` / ``weights``
    ``[n_steps]`` (float32); for expected gradients also the reference sample ``[n_reference, *input_shape]``, the
    raw data of the per-row key ``k_row`` and (static) ``n_baselines`` and the key's impl name (``reference`` and
    ``key`` are ``None`` for one fixed baseline). It answers ``input_shape`` / ``feature_names`` for
    :func:`jaxsens._engine.run`."""

    model: Any
    baseline: Any
    alphas: Any
    weights: Any
    reference: Any = None
    key: Any = None
    n_baselines: int = 0
    key_impl: str | None = None

    @property
    def input_shape(self) -> tuple:
        return tuple(self.model.input_shape)

    @property
    def feature_names(self):
        return self.model.feature_names


def _split(key):
    """``(k_ref, k_row)``: the reference sample's key and the per-row draws' key (see the module docstring)."""
    k_ref, k_row = jax.random.split(key)
    return k_ref, k_row


def _draw(k_row, row_index, n_reference: int, n_baselines: int):
    """``[batch, n_baselines]`` int32 indices into the reference sample: ``randint(fold_in(k_row, r), ...)``."""
    return jax.vmap(lambda r: jax.random.randint(jax.random.fold_in(k_row, r), (n_baselines,), 0, n_reference))(
        row_index)


def draw_baselines(key, row_index, n_reference: int, n_baselines: int = N_BASELINES) -> np.ndarray:
    """The indices into the reference sample of the baselines that expected gradients draws for rows ``row_index``.

    Row ``r`` (its global row number in the data) draws ``n_baselines`` indices uniformly with replacement from
    ``[0, n_reference)`` with ``randint(fold_in(k_row, r), (n_baselines,), 0, n_reference)``, ``k_row`` the second
    key of ``jax.random.split(key)``; :func:`jaxsens.integrated_gradients` and :func:`jaxsens.attributions` with a
    data source as baseline use exactly these draws (``baselines = reference_sample(...)[indices]``).

    Args:
        key: the call's ``key``: an int seed, a JAX PRNG key, or ``None`` (seed 0).
        row_index: ``[n]`` global row numbers.
        n_reference: rows of the reference sample (:func:`reference_sample`).
        n_baselines: baselines per row.

    Returns:
        ``[n, n_baselines]`` int32 indices.

    Example:
        >>> idx = draw_baselines(0, np.arange(3), n_reference=5, n_baselines=4)
        >>> idx.shape, bool(((idx >= 0) & (idx < 5)).all())
        ((3, 4), True)
    """
    _, k_row = _split(resolve_key(key, "draw_baselines"))
    return np.asarray(_draw(k_row, jnp.asarray(np.asarray(row_index), jnp.uint32), int(n_reference),
                            int(n_baselines)))


def _baselines(path: _Path, xs, row_index):
    """``[batch or 1, n_baselines or 1, *input_shape]``: the one baseline, or each row's drawn baselines."""
    if path.reference is None:
        return path.baseline[None, None]
    k_row = jax.random.wrap_key_data(path.key, impl=path.key_impl)
    idx = _draw(k_row, row_index, path.reference.shape[0], path.n_baselines)  # [B, n_baselines]
    return path.reference[idx]


def _chunk_attributions(path: _Path, xs, row_index, *, outputs, sums_to_one):
    """``(a [batch, k, *input_shape], gap_error [batch, k])`` of one chunk: every interpolation point of every path
    of every row goes through :func:`jaxsens._jacobian.chunk_jacobians` at once (``[batch * n_paths * n_steps]``
    rows, reverse mode: one pull-back per output), the weighted sum over steps times ``x - b``, then the mean over
    the row's baselines (one for integrated gradients)."""
    model = path.model
    batch, shape, n_steps = xs.shape[0], xs.shape[1:], path.alphas.shape[0]
    bases = _baselines(path, xs, row_index)  # [1 | batch, P, *shape]
    n_paths = bases.shape[1]
    d = xs[:, None] - bases  # [batch, P, *shape]
    alphas = path.alphas.reshape((1, 1, n_steps) + (1,) * len(shape))
    points = (bases[:, :, None] + alphas * d[:, :, None]).reshape((batch * n_paths * n_steps, *shape))
    jac = chunk_jacobians(model, points, mode="reverse", outputs=outputs, sums_to_one=sums_to_one)
    jac = jac.reshape((batch, n_paths, n_steps) + jac.shape[1:])  # [batch, P, S, k, *shape]
    # the weighted sum over the steps: [batch, P, k, *shape]
    avg = jnp.tensordot(path.weights, jac, axes=((0,), (2,)), precision=jax.lax.Precision.HIGHEST)
    a = jnp.mean(avg * d[:, :, None], axis=1)  # [batch, k, *shape]

    def f(rows):
        y = apply_rows(model, model.params, rows).reshape(rows.shape[0], -1)
        return y if outputs is None else y[:, np.asarray(outputs)]

    f_bases = f(bases.reshape((-1, *shape))).reshape(bases.shape[:2] + (-1,))  # [1 | batch, P, k]
    gap = f(xs) - jnp.mean(f_bases, axis=1)  # [batch, k]
    error = jnp.abs(jnp.sum(a.reshape(a.shape[:2] + (-1,)), axis=-1) - gap)
    return a, error


@functools.partial(jax.jit, static_argnames=("outputs", "sums_to_one"))
def _kernel(path: _Path, xs, mask, row_index, *, outputs, sums_to_one):
    """Per chunk: moments of the attribution and of its absolute value; the largest completeness error."""
    a, error = _chunk_attributions(path, xs, row_index, outputs=outputs, sums_to_one=sums_to_one)
    return {"abs": _stats.moments_of(jnp.abs(a), mask), "signed": _stats.moments_of(a, mask),
            "completeness": _stats.extrema_of(error, mask)}


@functools.partial(jax.jit, static_argnames=("outputs", "sums_to_one"))
def _rows_kernel(path: _Path, xs, row_index, *, outputs, sums_to_one):
    return _chunk_attributions(path, xs, row_index, outputs=outputs, sums_to_one=sums_to_one)[0]


@result_class
class IntegratedGradients(Result):
    r"""Statistics of the integrated gradients :math:`a_{kj}(x)` over a data set (see the module docstring).

    ``importance`` is :math:`\overline{|a|}` ``[n_outputs, *input_shape]`` (``mean_abs``) and ``stderr`` its
    standard error ``std(|a|) / sqrt(n_samples)`` (ddof = 1).

    Attributes (besides those of :class:`jaxsens.Result`):
        mean: :math:`\overline{a}`, the signed mean attribution ``[n_outputs, *input_shape]``.
        completeness_error: ``[n_outputs]`` largest :math:`|\sum_j a_{kj} - (f_k(x) - f_k(b))|` over the rows:
            the quadrature error (plus float32 rounding); raise ``n_steps`` when it is not small against the
            attributions. For expected gradients :math:`f_k(b)` is the mean of :math:`f_k` over the row's drawn
            baselines (completeness holds per row against them, see the module docstring).
        baseline: ``[*input_shape]`` the baseline :math:`b` used (zeros, the data's means, or the given array);
            for expected gradients the mean of the reference sample (the expectation of the drawn baselines; each
            row's own baselines differ).
        rule: the quadrature rule; n_steps: its number of points.
        n_baselines: expected gradients: baselines drawn per row; ``None`` for one fixed baseline.
        n_reference: expected gradients: rows of the reference sample the baselines are drawn from
            (``min(reference_rows, rows of the reference data)``); ``None`` for one fixed baseline.
    """

    mean: np.ndarray
    completeness_error: np.ndarray
    baseline: np.ndarray
    rule: str = "gausslegendre"
    n_steps: int = 32
    n_baselines: int | None = None
    n_reference: int | None = None

    importance_label: ClassVar[str] = "mean |integrated gradient|"
    stderr_rule: ClassVar[str] = "std(|a|) / sqrt(n_samples)"

    @property
    def mean_abs(self) -> np.ndarray:
        r""":math:`\overline{|a|}`: the same array as ``importance``."""
        return self.importance

    def _extra_columns(self):
        return {"mean": self.mean}


def is_reference(baseline, shape: tuple[int, ...]) -> bool:
    """Whether ``baseline`` is reference data (expected gradients) rather than ``"zeros"`` / ``"mean"`` / one
    sample of ``shape``: a string other than those two (a path), a path object, a :class:`jaxsens.open_data` spec,
    a ``Source``, a DataFrame, an array of rows ``[n_reference, *shape]``, or an iterable of batches."""
    if isinstance(baseline, str):
        return baseline not in BASELINES
    if isinstance(baseline, os.PathLike | Source | DataSpec) or type(baseline).__name__ == "DataFrame":
        return True
    if hasattr(baseline, "__array__") or isinstance(baseline, list | tuple | numbers.Number):
        batches = isinstance(baseline, list | tuple)
        try:
            arr_shape = tuple(np.shape(baseline))
        except (TypeError, ValueError):
            return batches  # a list of batches of unequal sizes
        if batches and len(arr_shape) == len(shape) + 2 and arr_shape[2:] == tuple(shape):
            return True  # a list of equal batches
        return len(arr_shape) == len(shape) + 1 and arr_shape[1:] == tuple(shape)
    return hasattr(baseline, "__iter__")


def _check_options(shape: tuple[int, ...], baseline, n_steps: int, rule: str, fn: str, n_baselines=None,
                   reference_rows=None):
    """The baseline as given (``"zeros"``, ``"mean"``, a float32 array of one sample's shape, checked, or a
    :class:`_Reference` for a data source) and the rule's points; refusals name the argument."""
    if rule not in RULES:
        raise ArgumentError(f"{fn}(): rule must be one of {list(RULES)}, got {rule!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral):
        raise ArgumentTypeError(f"{fn}(): n_steps must be an integer, got {n_steps!r}")
    low = 1 if rule == "gausslegendre" else 2
    if n_steps < low:
        raise ArgumentError(f"{fn}(): rule={rule!r} needs n_steps >= {low}, got {n_steps}")
    for name, value in (("n_baselines", n_baselines), ("reference_rows", reference_rows)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ArgumentError(f"{fn}(): {name} must be a positive integer, got {value!r}")
    alphas, weights = quadrature(rule, int(n_steps))
    sample = f"one sample's shape {list(shape)}"
    rows = f"[n_reference, {', '.join(map(str, shape))}]"
    if isinstance(baseline, str) and baseline not in BASELINES and not (
            os.path.splitext(baseline)[1] or os.path.exists(baseline)):
        raise ArgumentError(
            f"{fn}(): baseline must be 'zeros', 'mean', an array of {sample}, or reference data (rows {rows}: an "
            f"array, a .npy / .npz / .csv / .parquet path, batches) for expected gradients, got {baseline!r}"
        )
    arr = None
    if not isinstance(baseline, str) and not is_reference(baseline, shape):
        try:
            arr = np.asarray(baseline, dtype=np.float64)
        except (TypeError, ValueError):
            raise ArgumentTypeError(
                f"{fn}(): baseline must be 'zeros', 'mean', an array of {sample}, or reference data (rows {rows}) "
                f"for expected gradients, got {type(baseline).__name__}"
            ) from None
        if arr.shape != shape:
            raise ArgumentError(
                f"{fn}(): baseline has shape {list(arr.shape)}; expected {sample} (one baseline) or {rows} "
                "(reference data for expected gradients), or 'zeros' / 'mean'"
            )
    if arr is not None or isinstance(baseline, str) and baseline in BASELINES:
        for name, value in (("n_baselines", n_baselines), ("reference_rows", reference_rows)):
            if value is not None:
                raise ArgumentError(
                    f"{fn}(): {name}={value} applies to expected gradients (a data source as baseline); with "
                    f"baseline={baseline if isinstance(baseline, str) else 'an array of ' + sample} leave it None"
                )
        if arr is None:
            return baseline, alphas, weights
        if not np.all(np.isfinite(arr)):
            raise ArgumentError(f"{fn}(): baseline holds NaN / Inf; pass finite values (or 'zeros' / 'mean')")
        return arr.astype(np.float32), alphas, weights
    ref = _Reference(baseline, N_BASELINES if n_baselines is None else int(n_baselines),
                     REFERENCE_ROWS if reference_rows is None else int(reference_rows))
    return ref, alphas, weights


@dataclasses.dataclass(frozen=True)
class _Reference:
    """A data source as baseline (expected gradients), as checked by :func:`_check_options`."""

    data: Any
    n_baselines: int
    max_rows: int


def reference_sample(data, *, input_shape, key=None, max_rows: int = REFERENCE_ROWS, nan_policy: str = "raise",
                     fn: str = "reference_sample") -> np.ndarray:
    """The reference sample expected gradients draws its baselines from: at most ``max_rows`` rows of ``data``.

    One streamed pass over ``data`` (anything the methods read: an array, a ``.npy`` / ``.npz`` / ``.csv`` /
    ``.parquet`` path, :func:`jaxsens.open_data`, a DataFrame, batches) keeps the rows of the ``max_rows``
    smallest priorities ``bits(fold_in(fold_in(k_ref, 0x1E4), i))`` over row numbers ``i`` (``k_ref`` the first
    key of ``jax.random.split(key)``): a uniform sample without replacement, in row order, that does not depend on
    how the data are read, and all rows (in order) when there are at most ``max_rows``. Memory: ``max_rows`` rows
    plus one block, whatever the size of ``data``.

    Args:
        data: the reference data, rows ``[n, *input_shape]``.
        input_shape: one sample's shape.
        key: an int seed, a JAX PRNG key, or ``None`` (seed 0).
        max_rows: the most rows kept.
        nan_policy: ``"raise"`` or ``"skip"`` (rows with NaN / Inf).

    Returns:
        ``[min(max_rows, n), *input_shape]`` float32.

    Example:
        >>> reference_sample(np.arange(6.0).reshape(3, 2), input_shape=(2,)).tolist()  # 3 <= max_rows: all rows
        [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    """
    from jaxsens._profile import _scan  # the reservoir of the profile methods' first pass

    shape = tuple(int(d) for d in input_shape)
    what = f"{fn}(): baseline (the reference data of expected gradients)"
    try:
        src = data if isinstance(data, Source) else open_source(data, input_shape=shape)
        k_ref, _ = _split(resolve_key(key, fn))
        _, _, sample, _, _, _ = _scan(types.SimpleNamespace(key=k_ref, nan_policy=nan_policy), src, shape,
                                      int(max_rows), None)
    except DataError as e:
        raise DataError(f"{what}: {e}") from None
    return sample.astype(np.float32)


def _path(model, baseline, alphas, weights, *, reference=None, key=None, n_baselines: int = 0) -> _Path:
    """The kernel's state: one fixed baseline, or (``reference`` given) expected gradients' reference sample and
    the per-row key ``k_row`` of ``key`` (a typed key)."""
    raw = impl = None
    if reference is not None:
        _, k_row = _split(key)
        raw, impl = jax.random.key_data(k_row), str(jax.random.key_impl(k_row))
        reference = jnp.asarray(reference, jnp.float32)
    return _Path(model, jnp.asarray(baseline, jnp.float32), jnp.asarray(alphas, jnp.float32),
                 jnp.asarray(weights, jnp.float32), reference, raw, int(n_baselines), impl)


def _per_row_bytes(model: Model, shape, outputs, n_steps: int, n_paths: int = 1) -> int:
    """Memory bound for one row in the kernel: ``n_paths * n_steps`` per-sample Jacobians plus the attributions."""
    k = model.n_outputs if outputs is None else len(outputs)

    def f(x):
        y = jnp.ravel(model.apply(model.params, x))
        return y if outputs is None else y[np.asarray(outputs)]

    one = _engine.model_bytes_per_sample(model, ("integrated-gradients", outputs), jax.jacrev(f),
                                         jax.ShapeDtypeStruct(shape, jnp.float32))
    return n_paths * (n_steps * (one + 4 * k * math.prod(shape)) + 4 * k * math.prod(shape)) \
        + 6 * 4 * k * math.prod(shape)


@jax.jit
def _moments_kernel(model, xs, mask, row_index):
    """First pass for ``baseline="mean"``: per-element moments of the inputs."""
    del model, row_index
    return _stats.moments_of(xs.astype(jnp.float32), mask)


def _prepare(call: Call) -> Plan:
    model, opts, fn = call.model, call.options, "integrated_gradients"
    (shape,) = check_model(model, fn, family="gradient")
    baseline, alphas, weights = _check_options(shape, opts["baseline"], opts["n_steps"], opts["rule"], fn,
                                               opts["n_baselines"], opts["reference_rows"])
    first = None
    if isinstance(baseline, _Reference):  # expected gradients: the reference sample, one pass over its data
        ref = baseline
        sample = reference_sample(ref.data, input_shape=shape, key=call.key, max_rows=ref.max_rows,
                                  nan_policy=call.nan_policy, fn=fn)
        per_row = None if call.batch_size is not None else _per_row_bytes(model, shape, call.outputs, alphas.size,
                                                                          ref.n_baselines)
        mean = sample.astype(np.float64).mean(axis=0)
        return Plan(state=_path(model, np.zeros(shape), alphas, weights, reference=sample, key=call.key,
                                n_baselines=ref.n_baselines),
                    static={"outputs": call.outputs, "sums_to_one": bool(model.outputs_sum_to_one)},
                    bytes_per_sample=per_row,
                    context={"shape": shape, "baseline": mean, "first": None, "n_baselines": ref.n_baselines,
                             "n_reference": len(sample)})
    if isinstance(baseline, str) and baseline == "mean":  # a first streamed pass: the data's element means
        moments, first = _engine.run(_moments_kernel, model, call.data, batch_size=call.batch_size,
                                     bytes_per_sample=16 * math.prod(shape), nan_policy=call.nan_policy,
                                     devices=call.devices)
        baseline = np.asarray(moments.mean, np.float32).reshape(shape)
    elif isinstance(baseline, str):
        baseline = np.zeros(shape, np.float32)
    per_row = None if call.batch_size is not None else _per_row_bytes(model, shape, call.outputs, alphas.size)
    return Plan(state=_path(model, baseline, alphas, weights),
                static={"outputs": call.outputs, "sums_to_one": bool(model.outputs_sum_to_one)},
                bytes_per_sample=per_row, context={"shape": shape, "baseline": baseline, "first": first})


def _finalize(stats, info, plan: Plan, call: Call) -> IntegratedGradients:
    shape, model, first = plan.context["shape"], call.model, plan.context["first"]
    if first is not None and first.n_samples != info.n_samples:
        raise DataError(
            f"integrated_gradients(baseline='mean') reads the data twice (means, then attributions), but the "
            f"second pass saw {info.n_samples} rows and the first {first.n_samples}: the data changed between "
            "passes, or is a one-shot iterable (pass an array, a file, or a re-iterable source)"
        )
    names = info.feature_names or model.feature_names or tuple(f"x{j}" for j in range(shape[-1]))
    return IntegratedGradients(
        importance=np.asarray(stats["abs"].mean, np.float64),
        stderr=_stats.std(stats["abs"]) / math.sqrt(info.n_samples),
        mean=np.asarray(stats["signed"].mean, np.float64),
        completeness_error=np.asarray(stats["completeness"].max, np.float64),
        baseline=np.asarray(plan.context["baseline"], np.float64),
        rule=call.options["rule"],
        n_steps=int(call.options["n_steps"]),
        n_baselines=plan.context.get("n_baselines"),
        n_reference=plan.context.get("n_reference"),
        n_samples=info.n_samples,
        n_skipped=info.n_skipped,
        feature_names=tuple(names),
        output_names=output_names(model, call.outputs),
        input_shape=tuple(shape),
        method="integrated-gradients",
        options=call.record(),
    )


def attributions(model: Model, xs, *, method: str = "integrated_gradients", baseline="zeros", n_steps: int = 32,
                 rule: str = "gausslegendre", outputs=None, batch_size: int | None = None, key=None,
                 n_baselines: int | None = None, reference_rows: int | None = None) -> np.ndarray:
    r"""Per-sample integrated gradients ``[n_samples, n_outputs, *input_shape]`` (float32), for research code.

    The same computation as :func:`jaxsens.integrated_gradients` (see there for the formula and the rules), row by
    row: chunks of ``batch_size`` rows (padded to one compiled shape) go through one kernel, so the memory beyond
    the returned array is bounded by the chunk. ``baseline="mean"`` is the mean of ``xs``. With reference data as
    ``baseline`` these are expected gradients, row ``i`` of ``xs`` drawing its baselines as global row ``i`` (the
    same draws as :func:`jaxsens.integrated_gradients` on the same data and key).

    Args:
        model: a :class:`jaxsens.Model` with one floating-point input.
        xs: ``[n_samples, *input_shape]`` array (finite).
        method: ``"integrated_gradients"`` (the one method so far; expected gradients is its data baseline).
        baseline: ``"zeros"``, ``"mean"``, an array ``[*input_shape]``, or reference data (rows
            ``[n_reference, *input_shape]``: an array, a path, :func:`jaxsens.open_data`, batches) for expected
            gradients.
        n_steps, rule: the quadrature (see :func:`jaxsens.integrated_gradients`).
        outputs: explain only these outputs (indices or names), or ``None`` for all.
        batch_size: rows per chunk (default from a memory budget).
        key: expected gradients only: an int seed or a JAX PRNG key (``None``: seed 0).
        n_baselines: expected gradients only: baselines drawn per row (default 16).
        reference_rows: expected gradients only: the most rows of the reference sample (default 1024).

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda w, x: (w @ x) ** 2, jnp.array([[1.0, 2.0]]), input_shape=(2,))
        >>> attributions(m, np.array([[1.0, 1.0]], np.float32), n_steps=2).round(4).tolist()
        [[[3.0, 6.0]]]
    """
    fn = "attributions"
    if not isinstance(model, Model):
        raise ArgumentTypeError(f"{fn}() needs a jaxsens.Model, got {type(model).__name__}; see load_model()")
    if method != "integrated_gradients":
        raise ArgumentError(f"{fn}(): method must be 'integrated_gradients' (the one supported), got {method!r}")
    (shape,) = check_model(model, fn, family="gradient")
    try:
        xs = np.asarray(xs, dtype=np.float32)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"{fn}(): xs must be an array [n_samples, {', '.join(map(str, shape))}], got "
                                f"{type(xs).__name__}") from None
    if xs.ndim != len(shape) + 1 or xs.shape[1:] != shape:
        raise DataError(f"{fn}(): xs has shape {list(xs.shape)}; expected [n_samples, {', '.join(map(str, shape))}]")
    if xs.shape[0] == 0:
        raise DataError(f"{fn}(): xs has no rows")
    bad = np.flatnonzero(~np.isfinite(xs.reshape(len(xs), -1)).all(axis=1))
    if bad.size:
        raise DataError(f"{fn}(): xs row {int(bad[0])} holds NaN / Inf ({bad.size} such row(s)); drop them first")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                   or batch_size < 1):
        raise ArgumentError(f"{fn}(): batch_size must be a positive integer, got {batch_size!r}")
    selected = resolve_outputs(outputs, model) if outputs is not None else None
    base, alphas, weights = _check_options(shape, baseline, n_steps, rule, fn, n_baselines, reference_rows)
    n_paths, path = 1, None
    if isinstance(base, _Reference):
        typed = resolve_key(key, fn)
        sample = reference_sample(base.data, input_shape=shape, key=typed, max_rows=base.max_rows, fn=fn)
        n_paths = base.n_baselines
        path = _path(model, np.zeros(shape, np.float32), alphas, weights, reference=sample, key=typed,
                     n_baselines=n_paths)
        base = sample[0]  # padding rows
    else:
        if key is not None:
            warnings.warn(f"{fn}() with baseline={baseline!r:.40} is deterministic; key= is ignored", stacklevel=2)
        if isinstance(base, str):
            base = (xs.astype(np.float64).mean(axis=0) if base == "mean" else np.zeros(shape)).astype(np.float32)
    n = xs.shape[0]
    if batch_size is None:
        batch_size = _engine.choose_batch_size(_per_row_bytes(model, shape, selected, alphas.size, n_paths),
                                               n_rows=n, devices=jax.devices()[:1])
    batch_size = int(min(batch_size, n))
    path = path or _path(model, base, alphas, weights)
    k = model.n_outputs if selected is None else len(selected)
    out = np.empty((n, k, *shape), np.float32)
    for start in range(0, n, batch_size):
        chunk = xs[start:start + batch_size]
        m = len(chunk)
        if m < batch_size:  # pad with the baseline: one compiled shape
            pad = np.broadcast_to(base, (batch_size - m, *shape))
            chunk = np.concatenate([chunk, pad], axis=0)
        rows = jnp.arange(start, start + batch_size, dtype=jnp.uint32)  # global row numbers: per-row draws
        a = _rows_kernel(path, jnp.asarray(chunk), rows, outputs=selected,
                         sums_to_one=bool(model.outputs_sum_to_one))
        out[start:start + m] = np.asarray(a)[:m]
    return out


SPEC = Method(
    name="integrated-gradients",
    function_name="integrated_gradients",
    family="gradient",
    summary="mean |integrated gradient| from a baseline (Sundararajan 2017), or expected gradients from reference "
            "data (Erion 2021), all outputs at once, with the completeness error",
    doc=r"""Integrated gradients from a baseline, streamed over ``data``: mean absolute attribution per output.

    :math:`a_{kj}(x) = (x_j - b_j) \sum_s w_s \partial f_k(b + \alpha_s (x - b)) / \partial x_j` (Sundararajan,
    Taly & Yan 2017; see the module docstring for the rules). All ``n_steps`` interpolation points of a chunk's rows
    are differentiated in one compiled kernel (reverse mode, one pull-back per output: every output at once, where
    Captum takes one target per call); the moments of :math:`a` and :math:`|a|` are merged in float64 and the
    largest completeness error :math:`|\sum_j a_{kj} - (f_k(x) - f_k(b))|` over the rows is kept.
    ``baseline="mean"`` streams the data once more first, for its element means. Per-row attributions for
    research code: :func:`jaxsens.attributions`.

    **Expected gradients** (Erion et al. 2021): reference data as ``baseline`` (rows ``[n_reference,
    *input_shape]``: an array, a ``.npy`` / ``.npz`` / ``.csv`` / ``.parquet`` path, :func:`jaxsens.open_data`,
    batches) is read once into a seeded uniform sample of at most ``reference_rows`` rows held on the device; each
    row then averages the integrated gradients from ``n_baselines`` baselines drawn from it with its own key
    ``fold_in(k_row, row_index)``, every path with the same quadrature rule (so ``n_baselines * n_steps`` gradients
    per row; a few steps often suffice: ``completeness_error``, now against the mean output at the row's drawn
    baselines, reports the quadrature error). The draws do not depend on ``batch_size`` or the devices; ``key``
    (default seed 0) changes them. See the module docstring for the exact estimator and draws.

    Returns:
        An :class:`IntegratedGradients`: ``importance`` (``mean_abs``) ``[n_outputs, *input_shape]``, ``stderr``,
        ``mean``, ``completeness_error`` ``[n_outputs]``, ``baseline`` ``[*input_shape]`` (expected gradients: the
        reference sample's mean), ``n_baselines`` and ``n_reference`` (expected gradients).

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda w, x: w @ x, jnp.array([[2.0, -1.0]]), input_shape=(2,))
        >>> xs = np.array([[1.0, 3.0], [-1.0, 1.0]], np.float32)
        >>> r = jaxsens.integrated_gradients(m, xs, n_steps=1)  # a linear model: one Gauss-Legendre point is exact
        >>> r.importance.tolist(), r.mean.tolist(), r.completeness_error.tolist()
        ([[2.0, 2.0]], [[0.0, -2.0]], [0.0])
    """,
    result=IntegratedGradients,
    options=(
        Option("baseline", "any", "zeros", "the path's start: 'zeros', 'mean' (the data's element means, one "
               "more pass), an array of one sample's shape (API), or reference data for expected gradients (a "
               "data file's path, or from Python any data source)", cli_type=str),
        Option("n_steps", int, 32, "points of the quadrature rule on [0, 1]", minimum=1),
        Option("rule", str, "gausslegendre", "quadrature rule (Captum's approximation methods)", choices=RULES),
        Option("n_baselines", int, None, f"expected gradients: baselines drawn per row (default {N_BASELINES})",
               minimum=1),
        Option("reference_rows", int, None, "expected gradients: the most rows of the reference sample held on "
               f"the device (default {REFERENCE_ROWS})", minimum=1),
    ),
    random_if=lambda options, model: is_reference(options["baseline"], tuple(model.input_shape)),
    prepare=_prepare,
    kernel=_kernel,
    finalize=_finalize,
)

integrated_gradients = SPEC.as_function()
