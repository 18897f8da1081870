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
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError, DataError
from jaxsens import _engine, _stats
from jaxsens._checks import check_model
from jaxsens._jacobian import chunk_jacobians
from jaxsens._method import Call, Method, Option, Plan, output_names, resolve_outputs
from jaxsens._model import Model, apply_rows
from jaxsens._results import Result, result_class

__all__ = ["SPEC", "IntegratedGradients", "attributions", "integrated_gradients", "quadrature"]

RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")
BASELINES = ("zeros", "mean")


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


@functools.partial(jax.tree_util.register_dataclass, data_fields=["model", "baseline", "alphas", "weights"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class _Path:
    """What crosses ``jit``: the model, the baseline ``[*input_shape]`` and the rule's ``alphas`` / ``weights``
    ``[n_steps]`` (float32). It answers ``input_shape`` / ``feature_names`` for :func:`jaxsens._engine.run`."""

    model: Any
    baseline: Any
    alphas: Any
    weights: Any

    @property
    def input_shape(self) -> tuple:
        return tuple(self.model.input_shape)

    @property
    def feature_names(self):
        return self.model.feature_names


def _chunk_attributions(path: _Path, xs, *, outputs, sums_to_one):
    """``(a [batch, k, *input_shape], gap_error [batch, k])`` of one chunk: every interpolation point of every row
    goes through :func:`jaxsens._jacobian.chunk_jacobians` at once (``[batch * n_steps]`` rows, reverse mode: one
    pull-back per output), then the weighted sum over steps times ``x - b``."""
    model, b = path.model, path.baseline
    batch, shape, n_steps = xs.shape[0], xs.shape[1:], path.alphas.shape[0]
    d = xs - b[None]  # [B, *shape]
    alphas = path.alphas.reshape((1, n_steps) + (1,) * len(shape))
    points = (b[None, None] + alphas * d[:, None]).reshape((batch * n_steps, *shape))
    jac = chunk_jacobians(model, points, mode="reverse", outputs=outputs, sums_to_one=sums_to_one)
    jac = jac.reshape((batch, n_steps) + jac.shape[1:])  # [B, S, k, *shape]
    avg = jnp.tensordot(path.weights, jac, axes=((0,), (1,)), precision=jax.lax.Precision.HIGHEST)  # [B, k, *shape]
    a = avg * d[:, None]

    def f(rows):
        y = apply_rows(model, model.params, rows).reshape(rows.shape[0], -1)
        return y if outputs is None else y[:, np.asarray(outputs)]

    gap = f(xs) - f(b[None])  # [B, k]
    error = jnp.abs(jnp.sum(a.reshape(a.shape[:2] + (-1,)), axis=-1) - gap)
    return a, error


@functools.partial(jax.jit, static_argnames=("outputs", "sums_to_one"))
def _kernel(path: _Path, xs, mask, row_index, *, outputs, sums_to_one):
    """Per chunk: moments of the attribution and of its absolute value; the largest completeness error."""
    del row_index  # deterministic
    a, error = _chunk_attributions(path, xs, outputs=outputs, sums_to_one=sums_to_one)
    return {"abs": _stats.moments_of(jnp.abs(a), mask), "signed": _stats.moments_of(a, mask),
            "completeness": _stats.extrema_of(error, mask)}


@functools.partial(jax.jit, static_argnames=("outputs", "sums_to_one"))
def _rows_kernel(path: _Path, xs, *, outputs, sums_to_one):
    return _chunk_attributions(path, xs, outputs=outputs, sums_to_one=sums_to_one)[0]


@result_class
class IntegratedGradients(Result):
    r"""Statistics of the integrated gradients :math:`a_{kj}(x)` over a data set (see the module docstring).

    ``importance`` is :math:`\overline{|a|}` ``[n_outputs, *input_shape]`` (``mean_abs``) and ``stderr`` its
    standard error ``std(|a|) / sqrt(n_samples)`` (ddof = 1).

    Attributes (besides those of :class:`jaxsens.Result`):
        mean: :math:`\overline{a}`, the signed mean attribution ``[n_outputs, *input_shape]``.
        completeness_error: ``[n_outputs]`` largest :math:`|\sum_j a_{kj} - (f_k(x) - f_k(b))|` over the rows:
            the quadrature error (plus float32 rounding); raise ``n_steps`` when it is not small against the
            attributions.
        baseline: ``[*input_shape]`` the baseline :math:`b` used (zeros, the data's means, or the given array).
        rule: the quadrature rule; n_steps: its number of points.
    """

    mean: np.ndarray
    completeness_error: np.ndarray
    baseline: np.ndarray
    rule: str = "gausslegendre"
    n_steps: int = 32

    importance_label: ClassVar[str] = "mean |integrated gradient|"
    stderr_rule: ClassVar[str] = "std(|a|) / sqrt(n_samples)"

    @property
    def mean_abs(self) -> np.ndarray:
        r""":math:`\overline{|a|}`: the same array as ``importance``."""
        return self.importance

    def _extra_columns(self):
        return {"mean": self.mean}


def _check_options(shape: tuple[int, ...], baseline, n_steps: int, rule: str, fn: str):
    """The baseline as given (``"zeros"``, ``"mean"``, or a float32 array of one sample's shape, checked) and the
    rule's points; refusals name the argument."""
    if rule not in RULES:
        raise ArgumentError(f"{fn}(): rule must be one of {list(RULES)}, got {rule!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral):
        raise ArgumentTypeError(f"{fn}(): n_steps must be an integer, got {n_steps!r}")
    low = 1 if rule == "gausslegendre" else 2
    if n_steps < low:
        raise ArgumentError(f"{fn}(): rule={rule!r} needs n_steps >= {low}, got {n_steps}")
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ArgumentError(
                f"{fn}(): baseline must be 'zeros', 'mean' or an array of one sample's shape {list(shape)}, "
                f"got {baseline!r}"
            )
    else:
        try:
            arr = np.asarray(baseline, dtype=np.float64)
        except (TypeError, ValueError):
            raise ArgumentTypeError(
                f"{fn}(): baseline must be 'zeros', 'mean' or an array of one sample's shape {list(shape)}, got "
                f"{type(baseline).__name__} (a data source as baseline, expected gradients, is not supported)"
            ) from None
        if arr.shape != shape:
            raise ArgumentError(
                f"{fn}(): baseline has shape {list(arr.shape)}; it must be one sample's shape {list(shape)} "
                "(or 'zeros' / 'mean')"
            )
        if not np.all(np.isfinite(arr)):
            raise ArgumentError(f"{fn}(): baseline holds NaN / Inf; pass finite values (or 'zeros' / 'mean')")
        baseline = arr.astype(np.float32)
    alphas, weights = quadrature(rule, int(n_steps))
    return baseline, alphas, weights


def _path(model, baseline: np.ndarray, alphas, weights) -> _Path:
    return _Path(model, jnp.asarray(baseline, jnp.float32), jnp.asarray(alphas, jnp.float32),
                 jnp.asarray(weights, jnp.float32))


def _per_row_bytes(model: Model, shape, outputs, n_steps: int) -> int:
    """Memory bound for one row in the kernel: ``n_steps`` per-sample Jacobians plus the attributions."""
    k = model.n_outputs if outputs is None else len(outputs)

    def f(x):
        y = jnp.ravel(model.apply(model.params, x))
        return y if outputs is None else y[np.asarray(outputs)]

    one = _engine.model_bytes_per_sample(model, ("integrated-gradients", outputs), jax.jacrev(f),
                                         jax.ShapeDtypeStruct(shape, jnp.float32))
    return n_steps * (one + 4 * k * math.prod(shape)) + 6 * 4 * k * math.prod(shape)


@jax.jit
def _moments_kernel(model, xs, mask, row_index):
    """First pass for ``baseline="mean"``: per-element moments of the inputs."""
    del model, row_index
    return _stats.moments_of(xs.astype(jnp.float32), mask)


def _prepare(call: Call) -> Plan:
    model, opts, fn = call.model, call.options, "integrated_gradients"
    (shape,) = check_model(model, fn, family="gradient")
    baseline, alphas, weights = _check_options(shape, opts["baseline"], opts["n_steps"], opts["rule"], fn)
    first = None
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
        n_samples=info.n_samples,
        n_skipped=info.n_skipped,
        feature_names=tuple(names),
        output_names=output_names(model, call.outputs),
        input_shape=tuple(shape),
        method="integrated-gradients",
        options=call.record(),
    )


def attributions(model: Model, xs, *, method: str = "integrated_gradients", baseline="zeros", n_steps: int = 32,
                 rule: str = "gausslegendre", outputs=None, batch_size: int | None = None) -> np.ndarray:
    r"""Per-sample integrated gradients ``[n_samples, n_outputs, *input_shape]`` (float32), for research code.

    The same computation as :func:`jaxsens.integrated_gradients` (see there for the formula and the rules), row by
    row: chunks of ``batch_size`` rows (padded to one compiled shape) go through one kernel, so the memory beyond
    the returned array is bounded by the chunk. ``baseline="mean"`` is the mean of ``xs``.

    Args:
        model: a :class:`jaxsens.Model` with one floating-point input.
        xs: ``[n_samples, *input_shape]`` array (finite).
        method: ``"integrated_gradients"`` (the one method so far).
        baseline: ``"zeros"``, ``"mean"`` or an array ``[*input_shape]``.
        n_steps, rule: the quadrature (see :func:`jaxsens.integrated_gradients`).
        outputs: explain only these outputs (indices or names), or ``None`` for all.
        batch_size: rows per chunk (default from a memory budget).

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
    base, alphas, weights = _check_options(shape, baseline, n_steps, rule, fn)
    if isinstance(base, str):
        base = (xs.astype(np.float64).mean(axis=0) if base == "mean" else np.zeros(shape)).astype(np.float32)
    n = xs.shape[0]
    if batch_size is None:
        batch_size = _engine.choose_batch_size(_per_row_bytes(model, shape, selected, alphas.size), n_rows=n,
                                               devices=jax.devices()[:1])
    batch_size = int(min(batch_size, n))
    path = _path(model, base, alphas, weights)
    k = model.n_outputs if selected is None else len(selected)
    out = np.empty((n, k, *shape), np.float32)
    for start in range(0, n, batch_size):
        chunk = xs[start:start + batch_size]
        m = len(chunk)
        if m < batch_size:  # pad with the baseline: one compiled shape
            pad = np.broadcast_to(base, (batch_size - m, *shape))
            chunk = np.concatenate([chunk, pad], axis=0)
        a = _rows_kernel(path, jnp.asarray(chunk), outputs=selected, sums_to_one=bool(model.outputs_sum_to_one))
        out[start:start + m] = np.asarray(a)[:m]
    return out


SPEC = Method(
    name="integrated-gradients",
    function_name="integrated_gradients",
    family="gradient",
    summary="mean |integrated gradient| from a baseline (Sundararajan 2017), all outputs at once, with the "
            "completeness error",
    doc=r"""Integrated gradients from a baseline, streamed over ``data``: mean absolute attribution per output.

    :math:`a_{kj}(x) = (x_j - b_j) \sum_s w_s \partial f_k(b + \alpha_s (x - b)) / \partial x_j` (Sundararajan,
    Taly & Yan 2017; see the module docstring for the rules). All ``n_steps`` interpolation points of a chunk's rows
    are differentiated in one compiled kernel (reverse mode, one pull-back per output: every output at once, where
    Captum takes one target per call); the moments of :math:`a` and :math:`|a|` are merged in float64 and the
    largest completeness error :math:`|\sum_j a_{kj} - (f_k(x) - f_k(b))|` over the rows is kept.
    ``baseline="mean"`` streams the data once more first, for its element means. Per-row attributions for
    research code: :func:`jaxsens.attributions`. A data source as baseline (expected gradients) is not supported.

    Returns:
        An :class:`IntegratedGradients`: ``importance`` (``mean_abs``) ``[n_outputs, *input_shape]``, ``stderr``,
        ``mean``, ``completeness_error`` ``[n_outputs]``, ``baseline`` ``[*input_shape]``.

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
               "more pass) or an array of one sample's shape (API only: the CLI uses zeros)", cli=False),
        Option("n_steps", int, 32, "points of the quadrature rule on [0, 1]", minimum=1),
        Option("rule", str, "gausslegendre", "quadrature rule (Captum's approximation methods)", choices=RULES),
    ),
    prepare=_prepare,
    kernel=_kernel,
    finalize=_finalize,
)

integrated_gradients = SPEC.as_function()
