r"""``dgsm``: derivative-based global sensitivity measures (Sobol & Kucherenko 2009), streamed.

For independent inputs :math:`X_1 \dots X_D` and an output :math:`f(X)`, the measure of input :math:`i` is

.. math::
    \nu_i = E\left[\left(\frac{\partial f}{\partial x_i}(X)\right)^2\right]

(Sobol' & Kucherenko 2009, "Derivative based global sensitivity measures and their link with global sensitivity
indices", Math. Comput. Simul. 79(10)). It bounds the total Sobol index: for :math:`X_i \sim U(a, b)`,
:math:`S_{T_i} \le \frac{(b - a)^2}{\pi^2} \frac{\nu_i}{V}`, and for :math:`X_i \sim N(\mu, \sigma^2)`,
:math:`S_{T_i} \le \sigma^2 \nu_i / V`, with :math:`V = \mathrm{Var} f` (ddof 0). No such bound is given for the
triangular and lognormal inputs nor for empirical marginals (a data source as the problem: the inputs are
resampled from the data's columns, see :func:`jaxsens._sobol.empirical_marginals`): their ``total_order_bound`` is
NaN (with a warning), not a number computed from the data's variance that would not be a proven bound.

Estimator: plain Monte Carlo, :math:`\hat\nu_i = \frac1n \sum_j (\partial f / \partial x_i)(x_j)^2` with the exact
Jacobian (automatic differentiation, :func:`jaxsens._jacobian.chunk_jacobians`), not SALib's finite differences
(``SALib.analyze.dgsm`` uses :math:`((f(x + h e_i) - f(x)) / h)^2`: the two agree as :math:`h \to 0`). ``V`` is
the variance of :math:`f` over the same rows, folded in the same pass. ``stderr`` is the standard error of the
mean of :math:`(\partial f / \partial x_i)^2` (ddof 1). An input the model ignores has a Jacobian column of exact
zeros, so its ``nu`` and bound are exactly 0.

Sampling: row ``j`` is drawn from ``fold_in(fold_in(key, 0), j)`` exactly as row ``j`` of Sobol's matrix ``A``
(:func:`jaxsens._sobol.sample_ab`), so the rows do not depend on the batch size or the number of devices and
nothing of size ``n`` is held on the host.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import DataError
from jaxsens import _engine, _stats
from jaxsens._jacobian import chunk_jacobians
from jaxsens._method import Call, Method, Option, Plan, output_names
from jaxsens._results import Result, result_class

# private helpers of the Sobol module, reused on purpose (one problem parser, one sampler)
from jaxsens._sobol import (
    EMPIRICAL,
    _dist_arrays,
    _outputs_of,
    median_shift,
    resolve_problem,
    row_source,
    sample_ab,
    table_leaf,
)

__all__ = ["SPEC", "DGSMResult", "dgsm"]


@result_class
class DGSMResult(Result):
    r"""Derivative-based global sensitivity measures per output and input.

    ``importance`` is ``nu`` ``[n_outputs, n_features]`` and ``stderr`` its Monte Carlo standard error.

    Attributes (besides those of :class:`jaxsens.Result`):
        nu: :math:`\nu_i = E[(\partial f_k / \partial x_i)^2]` ``[n_outputs, n_features]``.
        total_order_bound: the Sobol-Kucherenko upper bound on the total Sobol index ``[n_outputs, n_features]``
            (uniform: ``(b - a)^2 / pi^2 * nu / variance``; normal: ``sd^2 * nu / variance``; NaN for
            triangular and lognormal inputs and empirical marginals).
        variance: ``[n_outputs]`` the output variance over the sample rows (ddof 0).
        problem: the input distributions (SALib's problem dict).
    """

    nu: np.ndarray
    total_order_bound: np.ndarray
    variance: np.ndarray
    problem: dict

    importance_label: ClassVar[str] = "DGSM nu (mean squared derivative)"
    stderr_rule: ClassVar[str] = "standard error of the mean of (df/dx_i)^2 over the sample rows (ddof 1)"

    def _extra_columns(self):
        return {"total_order_bound": self.total_order_bound}


@functools.partial(jax.tree_util.register_dataclass, data_fields=["model", "key", "shift", "p0", "p1", "p2",
                                                                   "table"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class _State:
    """What the kernel reads; the engine streams one dummy column of row numbers (``input_shape`` (1,))."""

    model: Any
    key: Any
    shift: Any  # [k] f at the inputs' medians: the variance sums see f - shift
    p0: Any
    p1: Any
    p2: Any
    table: Any  # [m, D] sorted columns of empirical marginals ([1, D] zeros otherwise)

    input_shape = (1,)
    feature_names = None


@functools.partial(jax.jit, static_argnames=("outputs", "codes", "mode"))
def _kernel(state, xs, mask, row_index, *, outputs, codes, mode):
    """Per chunk: moments of ``(df/dx)^2`` ``[k, D]`` and of ``f - shift`` ``[k]``, and a count of non-finite
    rows."""
    del xs  # the rows are generated from row_index
    x, _ = sample_ab(state.key, row_index, codes, state.p0, state.p1, state.p2, state.table)  # [batch, D]
    jac = chunk_jacobians(state.model, x, mode=mode, outputs=outputs)  # [batch, k, D]
    f = jax.vmap(_outputs_of(state.model.with_unroll(0), outputs))(x)  # [batch, k]
    bad = (jnp.sum(~jnp.isfinite(f), axis=1) + jnp.sum(~jnp.isfinite(jac), axis=(1, 2))) > 0
    return {"j2": _stats.moments_of(jac * jac, mask), "f": _stats.moments_of(f - state.shift, mask),
            "bad": _stats.total_of(bad.astype(jnp.float32), mask)}


def _prepare(call: Call) -> Plan:
    model, fn = call.model, "dgsm"
    problem, n_features, table = resolve_problem(call, fn)
    codes, p0, p1, p2 = _dist_arrays(problem)
    table = table_leaf(table, n_features)
    shift = median_shift(model, call.outputs, codes, p0, p1, p2, fn, table)
    k = int(shift.shape[0])
    mode = "forward" if n_features <= k else "reverse"
    state = _State(model, jax.random.fold_in(call.key, 0), shift, p0, p1, p2, table)
    n = call.options["n"]
    example = jax.ShapeDtypeStruct((n_features,), jnp.float32)
    per_eval = _engine.model_bytes_per_sample(model, ("dgsm", call.outputs), _outputs_of(model, call.outputs),
                                              example)
    per_row = (min(n_features, k) + 2) * per_eval + 4 * (8 * n_features + 4 * k * n_features)
    source = row_source(n, "DGSM sample rows")
    return Plan(state=state, static={"outputs": call.outputs, "codes": codes, "mode": mode},
                bytes_per_sample=per_row, context=problem, data=source)


def _bound_factor(problem: dict) -> np.ndarray:
    """``[D]``: ``(b - a)^2 / pi^2`` for uniform inputs, ``sd^2`` for normal ones, NaN otherwise."""
    out = np.full(problem["num_vars"], np.nan)
    for i, (dist, b) in enumerate(zip(problem["dists"], problem["bounds"])):
        if dist == "unif":
            out[i] = (b[1] - b[0]) ** 2 / np.pi**2
        elif dist == "norm":
            out[i] = b[1] ** 2
    return out


def _finalize(stats, info, plan: Plan, call: Call) -> DGSMResult:
    problem, model = plan.context, call.model
    n = info.n_samples
    bad = int(stats["bad"].value)
    if bad:
        raise DataError(
            f"dgsm(): the model's output or its derivative is NaN or Inf at {bad} of the {n} sample rows; narrow "
            "the problem's bounds (or choose bounded distributions) to the range the model accepts"
        )
    j2, f = stats["j2"], stats["f"]
    nu = np.asarray(j2.mean, np.float64)
    stderr = np.sqrt(np.asarray(_stats.variance(j2, ddof=1), np.float64) / n)
    var = np.asarray(f.m2, np.float64) / n
    factor = _bound_factor(problem)
    outs = output_names(model, call.outputs)
    other = [problem["names"][i] for i in np.flatnonzero(np.isnan(factor))]
    if other and all(t == EMPIRICAL for t in problem["dists"]):
        warnings.warn("dgsm(): no total-order bound for empirical marginals (the Sobol-Kucherenko bound is proven "
                      "for uniform and normal inputs only; the data's own variance would give a number that is "
                      "no bound): total_order_bound is NaN", stacklevel=5)
    elif other:
        warnings.warn(f"dgsm(): no total-order bound for input(s) {other} (only uniform and normal inputs have "
                      "one): their total_order_bound is NaN", stacklevel=5)
    flat = ~(var > 0)
    if flat.any():
        warnings.warn(f"dgsm(): output(s) {[outs[i] for i in np.flatnonzero(flat)]} do not vary over the "
                      "problem's inputs (variance 0): their total_order_bound is undefined (NaN)", stacklevel=5)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.where(var[:, None] > 0, factor[None] * nu / np.where(var > 0, var, 1.0)[:, None], np.nan)
    return DGSMResult(
        importance=nu,
        stderr=stderr,
        nu=nu,
        total_order_bound=bound,
        variance=var,
        problem=problem,
        n_samples=n,
        feature_names=tuple(problem["names"]),
        output_names=outs,
        input_shape=(problem["num_vars"],),
        method="dgsm",
        options=call.record(),
    )


SPEC = Method(
    name="dgsm",
    function_name="dgsm",
    family="global",
    summary="derivative-based global sensitivity nu_i = E[(df/dx_i)^2] and the total Sobol index bound "
            "(Sobol & Kucherenko 2009)",
    doc=r"""Derivative-based global sensitivity measures of every output: ``nu_i = E[(df/dx_i)^2]`` over the
    problem's input distribution, and the Sobol-Kucherenko upper bound on the total Sobol index.

    See the module docstring of ``jaxsens._dgsm`` for the estimator and the sampling.

    Args:
        data: the input distributions as SALib's problem dict (as for :func:`jaxsens.sobol_indices`). The bound
            exists for ``"unif"`` and ``"norm"`` inputs; for the others it is NaN (with a warning). ``None``:
            every input U(0, 1), with a warning. Or a data source whose columns give the inputs' empirical
            marginals (resampled independently: correlations are ignored; ``total_order_bound`` is then NaN).

    Returns:
        A :class:`DGSMResult`: ``nu`` (``importance``) and ``total_order_bound``, each
        ``[n_outputs, n_features]``, and ``variance`` ``[n_outputs]``.

    Example:
        >>> import jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] + 2 * x[1:2], None, input_shape=(3,))
        >>> problem = {"num_vars": 3, "names": ["a", "b", "c"], "bounds": [[0, 1]] * 3}
        >>> r = jaxsens.dgsm(m, problem, n=1024, key=0)
        >>> r.nu.tolist()
        [[1.0, 4.0, 0.0]]
    """,
    result=DGSMResult,
    needs_data=False,
    random=True,
    options=(
        Option("n", int, 2**12, "sample rows (one Jacobian and one model evaluation each)", minimum=2),
    ),
    memory="streams the n Jacobians: memory independent of n",
    prepare=_prepare,
    kernel=_kernel,
    finalize=_finalize,
)

dgsm = SPEC.as_function()
