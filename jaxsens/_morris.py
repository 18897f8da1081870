r"""``morris``: Morris elementary-effects screening (Morris 1991; mu* of Campolongo et al. 2007), streamed.

Each input is scaled to the unit interval and gridded on ``p = n_levels`` levels :math:`\{0, 1/(p-1), \dots,
1\}` (``p`` even); the step is :math:`\Delta = p / (2 (p - 1))` (SALib's ``_compute_delta``). A trajectory is
``D + 1`` points that change one input at a time; the elementary effect of input :math:`i` is

.. math::
    EE_i = \frac{f(x + \Delta_i e_i) - f(x)}{\Delta_i}, \qquad \Delta_i = \pm \Delta

in units of the unit-scaled input (SALib's ``morris.analyze`` with ``scaled=False``). Over ``r =
n_trajectories`` trajectories: ``mu`` is the mean of :math:`EE_i`, ``mu_star`` the mean of :math:`|EE_i|` (the
headline ``importance``), ``sigma`` their standard deviation (ddof 1, as SALib). ``stderr`` is the standard error
of ``mu_star`` (standard deviation of :math:`|EE_i|`, ddof 1, over :math:`\sqrt r`). An input the model ignores
has every :math:`EE_i` exactly 0: the change between two points is taken as ``where(f1 == f2, 0, f1 - f2)``
(:func:`jaxsens._sobol.exact_difference`). A plain ``f1 - f2`` is not enough: XLA fuses the subtraction into the
model's last operations and contracts the last multiplication (a softmax's normalisation) with it into a fused
multiply-add, so two outputs equal as float32 values differed by ~1e-8 (measured on a softmax MLP whose weights
from the input are exactly 0).

Design (:func:`trajectories`): trajectory ``t`` is drawn from ``fold_in(key, t)``: a start level per input,
uniform on the ``p`` levels, and a uniformly random order of the inputs. Step ``s`` moves input ``order[s]`` by
:math:`+\Delta` when its start level is in the lower half of the grid and by :math:`-\Delta` otherwise, so every
point is on the grid and each input's levels are uniform over the trajectories (Morris's design, with the
direction set by the start level instead of drawn). Not Campolongo's optimised selection: the trajectories are
independent, so the results do not depend on the batch size or the number of devices and nothing of size ``r``
is held on the host. Only uniform inputs (``dists`` ``"unif"``) are supported: the grid's end levels 0 and 1 map
to infinite values for unbounded distributions.

A data source as the problem: each input's grid level :math:`l / (p - 1)` maps to the empirical quantile of its
column, :math:`v_{(\min(\lfloor l m / (p - 1) \rfloor, m - 1))}` over the ``m`` sorted values of its quantile table
(:func:`jaxsens._sobol.empirical_marginals`; level 0 is the column's minimum, level 1 its maximum), the inputs
independent (**correlations in the data are ignored**); the elementary effects are then per unit of the input's
quantile level (its rank scale), not of its own unit.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, DataError
from jaxsens import _engine, _stats
from jaxsens._method import Call, Method, Option, Plan, output_names
from jaxsens._results import Result, result_class

# private helpers of the Sobol module, reused on purpose (one problem parser)
from jaxsens._sobol import (
    EMPIRICAL,
    _dist_arrays,
    _outputs_of,
    exact_difference,
    resolve_problem,
    row_source,
    table_leaf,
)

__all__ = ["SPEC", "MorrisResult", "morris", "trajectories"]


@result_class
class MorrisResult(Result):
    r"""Morris elementary-effects statistics per output and input.

    ``importance`` is ``mu_star`` ``[n_outputs, n_features]`` and ``stderr`` its standard error.

    Attributes (besides those of :class:`jaxsens.Result`):
        mu: mean elementary effect ``[n_outputs, n_features]``.
        mu_star: mean absolute elementary effect.
        sigma: standard deviation of the elementary effects (ddof 1).
        problem: the input distributions (SALib's problem dict, uniform inputs).
        n_levels: grid levels ``p``.

    ``n_samples`` is the number of trajectories (the model ran ``n_samples * (n_features + 1)`` times).
    """

    mu: np.ndarray
    mu_star: np.ndarray
    sigma: np.ndarray
    problem: dict
    n_levels: int

    importance_label: ClassVar[str] = "Morris mu* (mean |elementary effect|)"
    stderr_rule: ClassVar[str] = "standard deviation of |EE| (ddof 1) / sqrt(n_trajectories)"

    def _extra_columns(self):
        return {"mu": self.mu, "sigma": self.sigma}

    def plot(self, *, top: int = 20, output: int | str | None = None, path=None):
        """Per output (or the one ``output``): the ``top`` inputs' ``mu_star`` as ranked bars with 95% intervals,
        and Morris's chart beside them, ``sigma`` against ``mu_star`` with each input a labelled point (the
        ``top`` inputs by ``mu_star`` labelled) and the line ``sigma = mu_star`` for reference (points above it:
        effects dominated by interactions or non-linearity). Returns the matplotlib ``Figure``.
        """
        from jaxsens._results import _short, bar_plot, finish_figure, output_index, pyplot

        plt = pyplot()
        which = range(self.n_outputs) if output is None else [output_index(output, self.output_names)]
        n_feat = self.mu_star.shape[-1]
        k = max(min(int(top), n_feat), 1)
        fig, axes = plt.subplots(len(which), 2, figsize=(13, len(which) * max(4.5, 1.6 + 0.3 * k)), squeeze=False,
                                 width_ratios=[2, 3])
        for (bars, ax), o in zip(axes, which):
            bar_plot(bars, self.ranking(o), top=k, xlabel=self.importance_label)
            mu_star, sigma = self.mu_star[o], self.sigma[o]
            ax.scatter(mu_star, sigma, s=28, color="#4C72B0", zorder=3)
            for j in np.argsort(-np.nan_to_num(mu_star), kind="stable")[:k]:
                ax.annotate(_short(self.feature_names[j], 20), (mu_star[j], sigma[j]), textcoords="offset points",
                            xytext=(4, 3), fontsize=8)
            finite = np.concatenate([mu_star[np.isfinite(mu_star)], sigma[np.isfinite(sigma)]])
            hi = float(finite.max()) * 1.05 if finite.size and finite.max() > 0 else 1.0
            ax.plot([0.0, hi], [0.0, hi], color="#999999", linestyle="--", linewidth=0.9, label="sigma = mu*")
            ax.set_xlim(left=0.0)
            ax.set_ylim(bottom=0.0)
            ax.set_xlabel("mu* (mean |elementary effect|)")
            ax.set_ylabel("sigma (std of the elementary effects)")
            name = self.output_names[o] if self.output_names else str(o)
            bars.set_title(f"output {name}", fontsize=9)
            ax.set_title(f"output {name}: mu* - sigma", fontsize=9)
            ax.legend(loc="upper left", fontsize=8)
        fig.suptitle(f"{self.method}: top {k} of {n_feat} features by mu* ({self.n_samples} trajectories, "
                     f"{self.n_levels} levels)", fontsize=10)
        return finish_figure(fig, path)


def trajectories(key, row_index, n_features: int, n_levels: int):
    """Trajectories ``row_index`` in the unit cube: ``(points [batch, D + 1, D], order [batch, D], step
    [batch, D])``; ``order[s]`` is the input moved at step ``s`` and ``step[i]`` its signed move (``+-delta``)."""
    delta = n_levels / (2.0 * (n_levels - 1))

    def one(i):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        level = jax.random.randint(k1, (n_features,), 0, n_levels)
        order = jax.random.permutation(k2, n_features)
        step = jnp.where(level < n_levels // 2, delta, -delta).astype(jnp.float32)
        rank = jnp.argsort(order)  # rank[i]: the step at which input i moves
        moved = rank[None, :] < jnp.arange(n_features + 1)[:, None]  # [D + 1, D]
        x0 = level.astype(jnp.float32) / (n_levels - 1)
        return x0[None] + jnp.where(moved, step[None], 0.0), order, step

    return jax.vmap(one)(row_index)


def _grid_quantile(u, table, n_levels: int):
    """Grid points ``u`` ``[..., D]`` (levels ``l / (p - 1)``) -> the empirical quantiles ``table[min(floor(l m /
    (p - 1)), m - 1), i]``, in integer arithmetic from the level ``l`` (so that a level reached by different float
    paths, ``1/3`` or ``1 - 2/3``, maps to one value)."""
    m, d = table.shape
    level = jnp.round(u * (n_levels - 1)).astype(jnp.int32)
    idx = jnp.clip((level * m) // (n_levels - 1), 0, m - 1)
    return jnp.take_along_axis(table, idx.reshape(-1, d), axis=0).reshape(u.shape)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["model", "key", "p0", "p1", "table"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class _State:
    """What the kernel reads; the engine streams one dummy column of row numbers (``input_shape`` (1,))."""

    model: Any
    key: Any
    p0: Any
    p1: Any
    table: Any  # [m, D] sorted columns of empirical marginals ([1, D] zeros otherwise)

    input_shape = (1,)
    feature_names = None


@functools.partial(jax.jit, static_argnames=("outputs", "n_features", "n_levels", "empirical"))
def _kernel(state, xs, mask, row_index, *, outputs, n_features, n_levels, empirical=False):
    """Per chunk of trajectories: moments of ``EE`` and ``|EE|`` ``[k, D]`` and a count of non-finite rows."""
    del xs  # the trajectories are generated from row_index
    u, order, step = trajectories(state.key, row_index, n_features, n_levels)
    # evaluated step-major ([D + 1, batch, D], as Sobol's matrices): the points that differ only in an ignored
    # input sit at the same row offset of their blocks
    u = jnp.swapaxes(u, 0, 1)  # [D + 1, batch, D]
    x = _grid_quantile(u, state.table, n_levels) if empirical else state.p0 + (state.p1 - state.p0) * u
    f = jnp.swapaxes(jax.vmap(jax.vmap(_outputs_of(state.model.with_unroll(0), outputs)))(x), 0, 1)  # [batch, D+1, k]
    bad = jnp.sum(~jnp.isfinite(f), axis=(1, 2)) > 0
    by_step = exact_difference(f[:, 1:], f[:, :-1])  # [batch, D, k]: the change at step s, exactly 0 if none
    rank = jnp.argsort(order, axis=1)  # [batch, D]
    change = jnp.take_along_axis(by_step, rank[:, :, None], axis=1)  # [batch, D (input), k]
    ee = jnp.swapaxes(change, 1, 2) / step[:, None, :]  # [batch, k, D]
    return {"ee": _stats.moments_of(ee, mask), "abs": _stats.moments_of(jnp.abs(ee), mask),
            "bad": _stats.total_of(bad.astype(jnp.float32), mask)}


def _prepare(call: Call) -> Plan:
    model, fn = call.model, "morris"
    n_levels = call.options["n_levels"]
    if n_levels % 2:
        raise ArgumentError(f"{fn}(): n_levels must be even (the step p / (2 (p - 1)) stays on the grid only "
                            f"then), got {n_levels}; use e.g. 4 or 6")
    problem, n_features, table = resolve_problem(call, fn)
    empirical = table is not None
    other = [(problem["names"][i], d) for i, d in enumerate(problem["dists"]) if d not in ("unif", EMPIRICAL)]
    if other:
        raise ArgumentError(f"{fn}(): only uniform inputs (or a data source's empirical marginals) are supported (the "
                            f"grid's levels 0 and 1 are the bounds); input(s) {other} are not: give them 'unif' "
                            "bounds, or use sobol_indices or dgsm")
    _, p0, p1, _ = _dist_arrays(problem)
    r = call.options["n_trajectories"]
    example = jax.ShapeDtypeStruct((n_features,), jnp.float32)
    per_eval = _engine.model_bytes_per_sample(model, ("morris", call.outputs), _outputs_of(model, call.outputs),
                                              example)
    per_row = (n_features + 1) * (per_eval + 8 * n_features) + 64 * n_features
    source = row_source(r, "Morris trajectories")
    state = _State(model, call.key, p0, p1, table_leaf(table, n_features))
    return Plan(state=state, static={"outputs": call.outputs, "n_features": n_features, "n_levels": n_levels,
                                     "empirical": empirical},
                bytes_per_sample=per_row, context=problem, data=source)


def _finalize(stats, info, plan: Plan, call: Call) -> MorrisResult:
    problem, model = plan.context, call.model
    r = info.n_samples
    bad = int(stats["bad"].value)
    if bad:
        raise DataError(f"morris(): the model's output is NaN or Inf on {bad} of the {r} trajectories; narrow the "
                        "problem's bounds to the range the model accepts")
    ee, ab = stats["ee"], stats["abs"]
    mu = np.asarray(ee.mean, np.float64)
    mu_star = np.asarray(ab.mean, np.float64)
    sigma = np.sqrt(np.asarray(_stats.variance(ee, ddof=1), np.float64))
    stderr = np.sqrt(np.asarray(_stats.variance(ab, ddof=1), np.float64) / r)
    return MorrisResult(
        importance=mu_star,
        stderr=stderr,
        mu=mu,
        mu_star=mu_star,
        sigma=sigma,
        problem=problem,
        n_levels=call.options["n_levels"],
        n_samples=r,
        feature_names=tuple(problem["names"]),
        output_names=output_names(model, call.outputs),
        input_shape=(problem["num_vars"],),
        method="morris",
        options=call.record(),
    )


SPEC = Method(
    name="morris",
    function_name="morris",
    family="global",
    summary="Morris elementary-effects screening: mu, mu_star, sigma (Morris 1991, Campolongo 2007)",
    doc=r"""Morris elementary-effects screening of every output over uniform inputs: ``mu``, ``mu_star``
    (``importance``) and ``sigma``, the ``n_trajectories * (n_features + 1)`` evaluations streamed.

    See the module docstring of ``jaxsens._morris`` for the trajectory design and the conventions (elementary
    effects per unit of the unit-scaled input, as SALib's ``morris.analyze``).

    Args:
        data: the input ranges as SALib's problem dict (``num_vars``, ``names``, ``bounds``; ``dists`` must be
            ``"unif"``), or a data source whose columns give the inputs' empirical marginals (grid levels mapped
            through each column's quantile function; correlations ignored). ``None``: every input U(0, 1), with
            a warning.

    Returns:
        A :class:`MorrisResult`: ``mu``, ``mu_star`` (``importance``) and ``sigma``, each
        ``[n_outputs, n_features]``.

    Example:
        >>> import jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] + 2 * x[1:2], None, input_shape=(3,))
        >>> problem = {"num_vars": 3, "names": ["a", "b", "c"], "bounds": [[0, 1]] * 3}
        >>> r = jaxsens.morris(m, problem, n_trajectories=64, key=0)
        >>> r.mu_star.round(4).tolist(), r.sigma.round(4).tolist()
        ([[1.0, 2.0, 0.0]], [[0.0, 0.0, 0.0]])
    """,
    result=MorrisResult,
    needs_data=False,
    random=True,
    options=(
        Option("n_trajectories", int, 100, "Morris trajectories (the model runs n_trajectories * "
               "(n_features + 1) times)", minimum=2),
        Option("n_levels", int, 4, "grid levels p per input (even)", minimum=2),
    ),
    memory="streams the trajectories: memory independent of n_trajectories",
    # an ignored input's effect f(x') - f(x) is taken by exact_difference: exactly 0 (see the module docstring)
    exact_zero=True,
    prepare=_prepare,
    kernel=_kernel,
    finalize=_finalize,
)

morris = SPEC.as_function()
