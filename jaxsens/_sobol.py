r"""``sobol``: first- and total-order Sobol indices, the model evaluations streamed through the engine.

For independent inputs :math:`X_1 \dots X_D` and an output :math:`Y = f(X)`, the first-order index of input
:math:`i` is :math:`S_i = V[E(Y | X_i)] / V(Y)` (the share of the output variance that :math:`X_i` explains alone)
and the total-order index :math:`S_{T_i} = E[V(Y | X_{\sim i})] / V(Y)` (its share with all its interactions);
Sobol' (1993, 2001). With two independent sample matrices :math:`A, B` ``[n, D]`` and :math:`A_B^{(i)}` (``A``
with column ``i`` taken from ``B``), the estimators are (Saltelli et al. 2010, "Variance based sensitivity
analysis of model output", Comput. Phys. Commun. 181, table 2, (b) and (f)):

.. math::
    S_i = \frac{\frac1n \sum_j f(B)_j \, (f(A_B^{(i)})_j - f(A)_j)}{V}, \qquad
    S_{T_i} = \frac{\frac{1}{2n} \sum_j (f(A)_j - f(A_B^{(i)})_j)^2}{V}

(Jansen 1999 for the total order), with :math:`V` the variance (ddof 0) of :math:`f` over the rows of ``A`` and
``B`` together. As in SALib's ``sobol.analyze``, ``f(B)`` in the first-order numerator is centred by the mean of
all ``n (D + 2)`` evaluations (this removes the estimator's sensitivity to an output offset), so given the same
``A`` and ``B`` the indices equal SALib's to float rounding.

Sampling: plain Monte Carlo from ``jax.random``: row ``j`` of ``A`` and ``B`` is drawn from ``fold_in(key, j)``
(uniforms mapped through each input's inverse CDF), so the rows, and therefore the results, do not depend on the
batch size or the number of devices, and nothing of size ``n`` is ever held on the host. The engine streams the
row numbers ``0 .. n - 1``; each chunk builds its ``A``, ``B`` and the ``D`` matrices :math:`A_B^{(i)}` inside the
kernel and evaluates the ``(D + 2) * batch_size`` rows in one call of the model. Independent (not quasi-random)
rows make the bootstrap below valid; a scrambled Sobol' sequence would converge faster but its rows are not
independent draws.

Intervals: a streamed Poisson bootstrap over the rows ``j`` (Hanley & MacGibbon 2006; :func:`jaxsens._stats.
poisson_weights`, ``n_bootstrap`` replicates): every replicate's weighted sums are folded in the same pass, and
``*_conf`` is ``1.96`` times the replicates' standard deviation (SALib's rule, with Poisson weights instead of
resampled rows). ``stderr`` is ``total_order_conf / 1.96``.

Second order (``second_order=True``): Saltelli's (2002) scheme, as SALib's ``calc_second_order=True``. The
matrices :math:`B_A^{(i)}` (``B`` with column ``i`` taken from ``A``) join the chunk, ``n (2D + 2)`` evaluations
in all, still built inside the kernel from the row keys. With :math:`f` centred by the mean of all ``n (2D + 2)``
evaluations (SALib's normalisation; the first-order centring then uses that mean too),

.. math::
    S_{ik} = \frac{\frac1n \sum_j \left(f(B_A^{(i)})_j f(A_B^{(k)})_j - f(A)_j f(B)_j\right)}{V} - S_i - S_k,
    \qquad i < k

(SALib's ``second_order``), computed in the algebraically equal form :math:`\frac1n \sum (f(B_A^{(i)}) - f(B))
f(A_B^{(k)}) / V - S_i` (no cancellation of large terms; exactly 0 when input ``i`` never changes the output).
``second_order`` is ``[n_outputs, D, D]`` with :math:`S_{ik}` in the upper triangle ``i < k`` and NaN on the
diagonal and below (SALib's layout); ``second_order_conf`` its 95% half-widths from the same Poisson bootstrap.
For a pair ``(i, k)`` with an input the model ignores the estimate is exactly 0 when the ignored input is ``i``
(the first of the pair) and 0 within its interval when it is ``k`` (the estimator then compares two different
estimates of :math:`S_i`).

Inputs: SALib's problem dict (uniform, normal, triangular, lognormal inputs), or a **data source** whose columns
give the inputs' empirical marginals (:func:`empirical_marginals`): each column is resampled independently, so
**correlations between the inputs in the data are ignored** (Sobol indices of dependent inputs need other
estimators). The inverse CDF of column ``i`` at ``u`` is its empirical quantile
:math:`Q_i(u) = v_{(\min(\lfloor u m \rfloor, m - 1))}` over the sorted values :math:`v_{(0)} \le \dots \le
v_{(m-1)}` of a quantile table of ``m`` rows (every row of the data up to ``2**16`` rows, else a seeded uniform
subsample of ``2**16`` rows, read in one streamed pass).

Exact zeros: the differences :math:`f(A_B^{(i)}) - f(A)` (and :math:`f(B_A^{(i)}) - f(B)`) are taken as
``where(f1 == f2, 0, f1 - f2)`` (:func:`exact_difference`): XLA fuses a subtraction into the computation of its
operands and may contract the model's last multiplication with it into one fused multiply-add, so two outputs
that are equal as float32 values (an input the model ignores, even through weights that are exactly 0) would
differ by one product's rounding error (~1e-8 relative, measured on a softmax MLP); a comparison is not
contracted. The total and first-order indices of an ignored input are then exactly 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError, DataError
from jaxsens import _engine, _stats
from jaxsens._checks import check_model
from jaxsens._data import Source
from jaxsens._method import Call, Method, Option, Plan, output_names
from jaxsens._results import Result, result_class

__all__ = ["SPEC", "SobolIndices", "sobol_indices"]

Z95 = 1.959963984540054  # norm.ppf(0.975)
DISTS = ("unif", "norm", "triang", "lognorm")
EMPIRICAL = "empirical"  # a data source's column (empirical_marginals); not a SALib distribution
_BOUNDS_RULE = {
    "unif": "[lower, upper] with lower < upper",
    "norm": "[mean, standard deviation] with standard deviation > 0",
    "triang": "[start, end, peak] with start < end and the peak a fraction of the width in [0, 1)",
    "lognorm": "[mean, standard deviation] of ln(x) with standard deviation > 0",
}


@result_class
class SobolIndices(Result):
    r"""First- and total-order Sobol indices per output and input, with 95% bootstrap half-widths.

    ``importance`` is ``total_order`` ``[n_outputs, n_features]`` and ``stderr`` is ``total_order_conf / 1.96``.

    Attributes (besides those of :class:`jaxsens.Result`):
        first_order: :math:`S_i` ``[n_outputs, n_features]`` (Saltelli 2010).
        total_order: :math:`S_{T_i}` ``[n_outputs, n_features]`` (Jansen 1999).
        first_order_conf: 95% half-width of ``first_order`` (Poisson bootstrap over the sample rows).
        total_order_conf: 95% half-width of ``total_order``.
        variance: ``[n_outputs]`` the output variance :math:`V` over the rows of ``A`` and ``B`` (ddof 0).
        problem: the input distributions (SALib's problem dict: ``num_vars``, ``names``, ``bounds``, ``dists``;
            for empirical marginals ``dists`` are ``"empirical"``, ``bounds`` each column's ``(min, max)``, and
            ``source``, ``n_rows``, ``table_rows`` say what was read, see :func:`empirical_marginals`).
        n_bootstrap: bootstrap replicates behind the intervals.
        second_order: :math:`S_{ik}` ``[n_outputs, n_features, n_features]``, upper triangle ``i < k``, NaN on
            and below the diagonal (SALib's layout); ``None`` unless ``second_order=True``.
        second_order_conf: its 95% half-widths (same layout), or ``None``.

    ``n_samples`` is ``n``, the rows of ``A`` (the model ran ``n * (n_features + 2)`` times, ``n * (2 n_features
    + 2)`` with second order).
    """

    first_order: np.ndarray
    total_order: np.ndarray
    first_order_conf: np.ndarray
    total_order_conf: np.ndarray
    variance: np.ndarray
    problem: dict
    n_bootstrap: int
    second_order: np.ndarray | None = None
    second_order_conf: np.ndarray | None = None

    importance_label: ClassVar[str] = "total-order Sobol index"
    plot_xlabel: ClassVar[str] = "Sobol index (share of the output variance): first order S1, total order ST"
    plot_bars_per_feature: ClassVar[int] = 2  # plot(): S1 and ST side by side
    stderr_rule: ClassVar[str] = "total_order_conf / 1.96 (Poisson bootstrap over the sample rows)"

    def _extra_columns(self):
        return {"first_order": self.first_order, "first_order_conf": self.first_order_conf,
                "total_order_conf": self.total_order_conf}

    def interactions(self, output: int | str | None = None, top: int | None = 20
                     ) -> tuple[tuple[str, str, float, float], ...]:
        """Pairs ``i < k`` by decreasing second-order index: ``((name_i, name_k, S_ik, S_ik_conf), ...)``.

        Args:
            output: index or name of the output; may be left out when there is one output (indices of
                different outputs are not averaged).
            top: pairs to return (``None``: all ``n_features * (n_features - 1) / 2``).

        Raises:
            ArgumentError: the result has no second-order indices (``second_order=False``), or several outputs
                and no ``output``.

        Example:
            >>> import jaxsens
            >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] * x[1:2] + x[2:3], None, input_shape=(3,))
            >>> problem = {"num_vars": 3, "names": ["a", "b", "c"], "bounds": [[-1, 1]] * 3}
            >>> r = jaxsens.sobol_indices(m, problem, n=4096, key=0, second_order=True)
            >>> [(a, b) for a, b, _, _ in r.interactions(top=1)]
            [('a', 'b')]
        """
        from jaxsens._results import output_index, ranked

        if self.second_order is None:
            raise ArgumentError("this SobolIndices has no second-order indices: run sobol_indices(..., "
                                "second_order=True)")
        if output is None and self.n_outputs != 1:
            raise ArgumentError(f"interactions(): the result has {self.n_outputs} outputs {list(self.output_names)}; "
                                "pick one with output= (indices of different outputs are not averaged)")
        o = 0 if output is None else output_index(output, self.output_names)
        i, k = np.triu_indices(self.n_features, k=1)
        names = np.asarray(self.feature_names)
        rows = ranked([f"{a}\x00{b}" for a, b in zip(names[i], names[k])], self.second_order[o][i, k],
                      self.second_order_conf[o][i, k])
        out = tuple((*label.split("\x00"), v, e) for label, v, e in rows)
        return out if top is None else out[: int(top)]

    def plot(self, *, top: int = 20, output: int | str | None = None, path=None):
        """S1 and ST bars side by side per input with their 95% intervals (``first_order_conf``,
        ``total_order_conf``), the ``top`` inputs by total order; one panel per output (or the one ``output``).
        With second-order indices, a heatmap of :math:`S_{ik}` over the same inputs beside each panel (the
        upper-triangle estimates shown mirrored; the diagonal blank).

        Indices of different outputs are not averaged (a mean of indices is no index): with several outputs and
        ``output=None`` every output gets its own panel. Returns the matplotlib ``Figure``.
        """
        from jaxsens._results import _short, finish_figure, output_index, pyplot

        plt = pyplot()
        which = range(self.n_outputs) if output is None else [output_index(output, self.output_names)]
        n_feat = self.total_order.shape[-1]
        k = max(min(int(top), n_feat), 1)
        two = self.second_order is not None
        fig, axes = plt.subplots(len(which), 2 if two else 1, figsize=(14 if two else 8, len(which) * (1.6 + 0.45 * k)),
                                 squeeze=False, **({"width_ratios": [3, 2]} if two else {}))
        for row, o in enumerate(which):
            ax = axes[row, 0]
            st = self.total_order[o]
            order = sorted(range(n_feat), key=lambda j: (not np.isfinite(st[j]), -np.nan_to_num(st[j])))[:k]
            pos = np.arange(len(order))[::-1].astype(np.float64)  # largest on top
            h = 0.38
            ax.barh(pos + h / 2, self.first_order[o, order], h, xerr=np.nan_to_num(self.first_order_conf[o, order]),
                    color="#4C72B0", ecolor="#333333", capsize=2, label="first order S1 (95% interval)")
            ax.barh(pos - h / 2, self.total_order[o, order], h, xerr=np.nan_to_num(self.total_order_conf[o, order]),
                    color="#DD8452", ecolor="#333333", capsize=2, label="total order ST (95% interval)")
            ax.set_yticks(pos, [_short(self.feature_names[j]) for j in order])
            ax.axvline(0.0, color="#999999", linewidth=0.8)
            ax.set_xlabel(self.plot_xlabel)
            ax.set_ylabel("feature")
            name = self.output_names[o] if self.output_names else str(o)
            ax.set_title(f"output {name}", fontsize=9)
            ax.legend(loc="lower right", fontsize=8)
            if two:
                s2 = self.second_order[o][np.ix_(order, order)]
                shown = np.where(np.isnan(s2), s2.T, s2)  # the i < k estimate in both triangles
                hm = axes[row, 1]
                im = hm.imshow(shown, cmap="viridis", interpolation="nearest")
                labels = [_short(self.feature_names[j], 20) for j in order]
                hm.set_xticks(np.arange(len(order)), labels, rotation=90)
                hm.set_yticks(np.arange(len(order)), labels)
                hm.set_title(f"second-order S_ik, output {name}", fontsize=9)
                fig.colorbar(im, ax=hm, label="S_ik")
        fig.suptitle(f"{self.method}: top {k} of {n_feat} features by total order (n = {self.n_samples}, "
                     f"{self.n_bootstrap} bootstrap replicates)", fontsize=10)
        return finish_figure(fig, path)


# ------------------------------------------------------------------------------------------ the problem
def check_problem(problem, n_features: int, fn: str = "sobol_indices") -> dict:
    """SALib's problem dict, validated against the model: ``{"num_vars", "names", "bounds", "dists"}`` with
    ``names``, ``bounds`` (floats) and ``dists`` as tuples, ``dists`` filled in (``"unif"`` by default)."""
    if not isinstance(problem, Mapping):
        raise ArgumentTypeError(
            f"{fn}() takes the input distributions as its data argument: SALib's problem dict "
            f"{{'num_vars': D, 'names': [...], 'bounds': [[lo, hi], ...], 'dists': [...]}}, got "
            f"{type(problem).__name__}"
        )
    unknown = sorted(set(problem) - {"num_vars", "names", "bounds", "dists", "groups", "outputs"})
    if unknown:
        raise ArgumentError(f"{fn}(): problem has unknown key(s) {unknown}; its keys are num_vars, names, bounds, "
                            "dists")
    if problem.get("groups") is not None:
        raise ArgumentError(f"{fn}(): problem['groups'] (grouped indices) is not supported; remove it")
    missing = [k for k in ("num_vars", "bounds") if k not in problem]
    if missing:
        raise ArgumentError(f"{fn}(): problem needs {missing}; e.g. {{'num_vars': 2, 'names': ['a', 'b'], "
                            "'bounds': [[0, 1], [-1, 1]]}")
    d = problem["num_vars"]
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
        raise ArgumentError(f"{fn}(): problem['num_vars'] must be a positive integer, got {d!r}")
    d = int(d)
    if d != n_features:
        raise ArgumentError(f"{fn}(): problem['num_vars'] is {d} but the model has {n_features} input features; "
                            "describe every input")
    names = problem.get("names")
    if names is None:
        names = [f"x{i}" for i in range(d)]
    if isinstance(names, str) or len(names) != d or not all(isinstance(n, str) for n in names):
        raise ArgumentError(f"{fn}(): problem['names'] must be {d} strings, got {names!r:.200}")
    if len(set(names)) != d:
        raise ArgumentError(f"{fn}(): problem['names'] repeats a name: {list(names)}")
    dists = problem.get("dists")
    dists = ["unif"] * d if dists is None else dists
    if isinstance(dists, str) or len(dists) != d:
        raise ArgumentError(f"{fn}(): problem['dists'] must list {d} distributions, got {dists!r:.200}")
    for i, dist in enumerate(dists):
        if dist == EMPIRICAL:
            raise ArgumentError(f"{fn}(): problem['dists'][{i}] is 'empirical': empirical marginals come from data; "
                                "pass the data itself (an array, a .npy / .csv / .parquet path) instead of the dict")
        if dist not in DISTS:
            raise ArgumentError(f"{fn}(): problem['dists'][{i}] ({names[i]!r}) is {dist!r}; supported: {list(DISTS)}")
    bounds = problem["bounds"]
    if isinstance(bounds, str | bytes) or not hasattr(bounds, "__len__") or len(bounds) != d:
        raise ArgumentError(f"{fn}(): problem['bounds'] must list {d} entries, one per input, got {bounds!r:.200}")
    out = []
    for i, (b, dist) in enumerate(zip(bounds, dists)):
        rule = _BOUNDS_RULE[dist]
        where = f"{fn}(): problem['bounds'][{i}] ({names[i]!r}, {dist})"
        try:
            vals = [float(v) for v in b]
        except (TypeError, ValueError):
            raise ArgumentError(f"{where} must be {rule}, got {b!r:.80}") from None
        n_vals = 3 if dist == "triang" else 2
        if len(vals) != n_vals or not all(math.isfinite(v) for v in vals):
            raise ArgumentError(f"{where} must be {n_vals} finite numbers, {rule}, got {b!r:.80}")
        ok = {"unif": lambda v: v[0] < v[1], "norm": lambda v: v[1] > 0, "lognorm": lambda v: v[1] > 0,
              "triang": lambda v: v[0] < v[1] and 0 <= v[2] < 1}[dist](vals)
        if not ok:
            raise ArgumentError(f"{where} must be {rule}, got {vals}")
        out.append(tuple(vals))
    return {"num_vars": d, "names": tuple(names), "bounds": tuple(out), "dists": tuple(dists)}


def _unit_cube(n_features: int, names) -> dict:
    return {"num_vars": n_features, "names": tuple(names), "bounds": ((0.0, 1.0),) * n_features,
            "dists": ("unif",) * n_features}


def _dist_arrays(problem: dict):
    """``(codes, p0, p1, p2)``: the distribution of each input as a static tuple of codes and three parameter
    vectors (float32); empirical marginals have code ``len(DISTS)`` (their values are in a quantile table)."""
    codes = tuple(len(DISTS) if t == EMPIRICAL else DISTS.index(t) for t in problem["dists"])
    p = np.zeros((3, problem["num_vars"]), np.float32)
    for i, (b, t) in enumerate(zip(problem["bounds"], problem["dists"])):
        if t != EMPIRICAL:
            p[: len(b), i] = b
    return codes, jnp.asarray(p[0]), jnp.asarray(p[1]), jnp.asarray(p[2])


def exact_difference(f1, f2):
    """``f1 - f2``, exactly 0 where ``f1 == f2``.

    XLA fuses a subtraction into the computation of its operands and may contract the model's last multiplication
    with it (``a * b - c * d`` as ``fma(a, b, -(c * d))``): two outputs equal as float32 values then differ by the
    rounding error of one product. A comparison is not contracted, so an input the model ignores keeps a
    difference of exactly 0 (see the module docstring).
    """
    return jnp.where(f1 == f2, jnp.zeros_like(f1), f1 - f2)


def _quantile(u, table):
    """The empirical quantile ``table[min(floor(u m), m - 1), i]`` of column ``i`` at ``u[..., i]`` (``table``
    ``[m, D]``, each column sorted)."""
    m, d = table.shape
    idx = jnp.clip(jnp.floor(u * jnp.float32(m)).astype(jnp.int32), 0, m - 1)
    return jnp.take_along_axis(table, idx.reshape(-1, d), axis=0).reshape(u.shape)


def _inverse_cdf(u, codes, p0, p1, p2, table=None):
    """``[..., D]`` uniforms in (0, 1) -> the inputs' values (SALib's meaning of ``bounds`` per distribution;
    the empirical quantile of ``table``'s column for empirical marginals)."""
    if len(DISTS) in codes:
        if not all(c == len(DISTS) for c in codes):
            raise ArgumentError("empirical marginals cannot be mixed with SALib distributions")
        return _quantile(u, table)
    z = jax.scipy.special.ndtri(u)
    unif = p0 + (p1 - p0) * u
    norm = p0 + p1 * z
    lognorm = jnp.exp(p0 + p1 * z)
    width = p1 - p0
    triang = p0 + width * jnp.where(u < p2, jnp.sqrt(u * p2), 1.0 - jnp.sqrt((1.0 - u) * (1.0 - p2)))
    code = jnp.asarray(codes)
    return jnp.where(code == 0, unif, jnp.where(code == 1, norm, jnp.where(code == 2, triang, lognorm)))


def sample_ab(key, row_index, codes, p0, p1, p2, table=None):
    """Rows ``row_index`` of ``A`` and ``B``: ``([batch, D], [batch, D])`` from ``fold_in(key, row)``.

    Uniforms are ``jax.random.uniform`` (multiples of 2**-23) shifted by 2**-24 into the open interval (0, 1),
    so the normal and lognormal inverse CDFs stay finite. ``table``: the quantile table of empirical marginals.
    """
    d = len(codes)

    def one(i):
        return jax.random.uniform(jax.random.fold_in(key, i), (2, d), jnp.float32) + jnp.float32(2.0**-24)

    u = jax.vmap(one)(row_index)
    x = _inverse_cdf(u, codes, p0, p1, p2, table)
    return x[:, 0], x[:, 1]


# ------------------------------------------------------------------------------ empirical marginals
TABLE_ROWS = 2**16
"""Rows of an empirical marginal's quantile table: data sets up to this size are used whole."""
_TABLE_SEED = 0x5AB1E


def _row_priority(rows: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random uint64 per global row number (splitmix64 of the row number and a seed)."""
    z = rows.astype(np.uint64) + np.uint64((_TABLE_SEED * 0x9E3779B97F4A7C15) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def empirical_marginals(data, n_features: int, feature_names=None, fn: str = "sobol_indices",
                        table_rows: int = TABLE_ROWS) -> tuple[dict, np.ndarray]:
    """The empirical marginal of every column of ``data``: ``(problem, table)``, read in one streamed pass.

    ``table`` ``[m, n_features]`` float32 holds each column's values sorted (independently per column). Up to
    ``table_rows`` rows, ``m`` is the number of rows and the table is exactly the data. Above it the table holds
    a uniform random subsample of ``table_rows`` rows (without replacement), the rows of smallest
    pseudo-random priority, a fixed hash of the row number, with its first and last entries replaced by the
    column's minimum and maximum over all rows (so that ``bounds`` and Morris's end levels are the data's range):
    the same data always gives the same table,
    whatever the block sizes, and memory stays ``O(table_rows * n_features)`` for any number of rows. A
    subsample rather than a streaming quantile sketch: exact for data up to ``table_rows`` rows, simple, and its
    quantiles are within ~``sqrt(p (1 - p) / table_rows)`` (< 0.002 in probability at ``2**16``) of the data's,
    far below the Monte Carlo error of the indices.

    The inputs are then **independent** draws from these marginals: correlations between the columns of the
    data are ignored.

    Returns:
        ``problem``: ``{"num_vars", "names", "bounds" ((min, max) per column), "dists" ("empirical", ...),
        "source" (what was read), "n_rows", "table_rows"}`` (names from the data's header, else
        ``feature_names``, else ``x0, x1, ...``), and ``table``.
    """
    from jaxsens._data import open_source

    generic = tuple(f"x{i}" for i in range(n_features))
    names = None if feature_names is None or tuple(feature_names) == generic else tuple(feature_names)
    try:
        source = data if isinstance(data, Source) else open_source(data, input_shape=(n_features,),
                                                                  feature_names=names)
    except ArgumentTypeError:
        raise ArgumentTypeError(
            f"{fn}() takes the input distributions as its data argument: SALib's problem dict {{'num_vars': D, "
            "'names': [...], 'bounds': [[lo, hi], ...], 'dists': [...]}, or a data source whose columns give the "
            "inputs' empirical marginals (an array [n_rows, D], a DataFrame, a .npy / .npz / .csv / .parquet path, "
            f"jaxsens.open_data(...)); got {type(data).__name__}"
        ) from None
    except DataError as e:
        raise DataError(f"{fn}(): data is read as the inputs' empirical marginals (a data source of "
                        f"{n_features} columns; SALib's problem dict is a dict): {e}") from None
    kept = np.empty((0, n_features), np.float32)
    prio = np.empty((0,), np.uint64)
    lo, hi = np.full(n_features, np.inf, np.float32), np.full(n_features, -np.inf, np.float32)
    seen = 0
    for block in source.blocks(table_rows):
        block = np.asarray(block, np.float32).reshape(-1, n_features)
        bad = ~np.isfinite(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            col = (source.feature_names or generic)[c] if c < len(source.feature_names or generic) else c
            raise DataError(f"{fn}(): {source.description} has a non-finite value ({block[r, c]}) at row "
                            f"{seen + r}, column {col!r}; the empirical marginals need finite values: drop or fill "
                            "those rows")
        if len(block):
            lo, hi = np.minimum(lo, block.min(0)), np.maximum(hi, block.max(0))
        p = _row_priority(np.arange(seen, seen + len(block), dtype=np.uint64))
        seen += len(block)
        kept, prio = np.concatenate([kept, block]), np.concatenate([prio, p])
        if len(prio) > table_rows:
            keep = np.argpartition(prio, table_rows - 1)[:table_rows]
            kept, prio = kept[keep], prio[keep]
    if seen == 0:
        raise DataError(f"{fn}(): {source.description} has no rows; the empirical marginals need data")
    table = np.sort(kept, axis=0)
    table[0], table[-1] = lo, hi  # the extremes of all rows (a subsample may miss them): Q(0) = min, Q(1) = max
    names = source.feature_names or names or generic
    problem = {"num_vars": n_features, "names": tuple(names),
               "bounds": tuple((float(lo), float(hi)) for lo, hi in zip(table[0], table[-1])),
               "dists": (EMPIRICAL,) * n_features, "source": source.description, "n_rows": seen,
               "table_rows": len(table)}
    return problem, table


# ------------------------------------------------------------------------------------------- the kernel
@functools.partial(jax.tree_util.register_dataclass, data_fields=["model", "key", "boot_key", "shift", "p0",
                                                                   "p1", "p2", "table"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class _State:
    """What the kernel reads; the engine streams one dummy column of row numbers (``input_shape`` (1,))."""

    model: Any
    key: Any
    boot_key: Any
    shift: Any  # [k] f at the inputs' medians: the sums see f - shift (well-conditioned)
    p0: Any
    p1: Any
    p2: Any
    table: Any  # [m, D] sorted columns of empirical marginals ([1, D] zeros otherwise)

    input_shape = (1,)
    feature_names = None


def _outputs_of(model, outputs):
    def f(x):
        y = model.apply(model.params, x).reshape(-1)
        return y if outputs is None else y[jnp.asarray(outputs)]

    return f


@functools.partial(jax.jit, static_argnames=("outputs", "codes", "n_boot", "second_order"))
def _kernel(state, xs, mask, row_index, *, outputs, codes, n_boot, second_order=False):
    """Per chunk: moments of ``f(A)``, ``f(B)``, ``d_i = f(A_B^i) - f(A)`` and ``f(B) d_i`` (shifted), with
    second order also ``e_i = f(B_A^i) - f(B)`` and ``e_i f(A_B^k)``; their Poisson-weighted sums per bootstrap
    replicate, and a count of non-finite outputs."""
    del xs  # the rows are generated from row_index
    a, b = sample_ab(state.key, row_index, codes, state.p0, state.p1, state.p2, state.table)  # [batch, D]
    d = a.shape[1]
    eye = jnp.eye(d, dtype=bool)[:, None, :]
    blocks = [a[None], b[None], jnp.where(eye, b[None], a[None])]  # A, B, A_B^i [D, batch, D]
    if second_order:
        blocks.append(jnp.where(eye, a[None], b[None]))  # B_A^i
    rows = jnp.concatenate(blocks, axis=0)  # [D + 2 (2D + 2), batch, D]
    f = jax.vmap(jax.vmap(_outputs_of(state.model.with_unroll(0), outputs)))(rows)  # [.., batch, k]
    bad = jnp.sum(~jnp.isfinite(f), axis=(0, 2)) > 0  # [batch]
    fa, fb = f[0] - state.shift, f[1] - state.shift  # [batch, k]
    diff = jnp.moveaxis(exact_difference(f[2:d + 2], f[0][None]), 0, -1)  # [batch, k, D]: 0 for an unused input
    bd = fb[..., None] * diff
    stats = {"a": _stats.moments_of(fa, mask), "b": _stats.moments_of(fb, mask),
             "d": _stats.moments_of(diff, mask), "bd": _stats.moments_of(bd, mask),
             "bad": _stats.total_of(bad.astype(jnp.float32), mask)}
    w = jnp.where(mask[:, None], _stats.poisson_weights(state.boot_key, row_index, n_boot), 0.0)  # [batch, n_boot]

    def wsum(v):
        v = jnp.where(mask.reshape(mask.shape + (1,) * (v.ndim - 1)), v, 0.0)
        return _stats.Total(jnp.einsum("jn,j...->n...", w, v, precision=jax.lax.Precision.HIGHEST))

    stats["boot"] = {"w": _stats.Total(jnp.sum(w, axis=0)), "a": wsum(fa), "a2": wsum(fa * fa), "b": wsum(fb),
                     "b2": wsum(fb * fb), "d": wsum(diff), "d2": wsum(diff * diff), "bd": wsum(bd)}
    if second_order:
        e = jnp.where(mask[:, None, None], jnp.moveaxis(exact_difference(f[d + 2:], f[1][None]), 0, -1), 0.0)
        fab = jnp.where(mask[:, None, None], jnp.moveaxis(f[2:d + 2], 0, -1) - state.shift[:, None], 0.0)
        hi = jax.lax.Precision.HIGHEST
        stats["e"] = _stats.Total(jnp.sum(e, axis=0))  # [k, D]
        stats["ep"] = _stats.Total(jnp.einsum("jki,jkl->kil", e, fab, precision=hi))  # [k, D, D]
        stats["boot"]["e"] = _stats.Total(jnp.einsum("jn,jki->nki", w, e, precision=hi))
        stats["boot"]["ep"] = _stats.Total(jnp.einsum("jn,jki,jkl->nkil", w, e, fab, precision=hi))
    return stats


def resolve_problem(call: Call, fn: str) -> tuple[dict, int, np.ndarray | None]:
    """The checked problem of a global method's call, the model's number of features and, for empirical
    marginals, their quantile table (shared by every method of the "global" family): a vector-input model;
    ``data=None`` means independent U(0, 1) inputs, with a warning; a dict is SALib's problem; any other data
    is a data source of empirical marginals (:func:`empirical_marginals`)."""
    model = call.model
    (shape,) = check_model(model, fn, family="global")
    if len(shape) != 1:
        raise ArgumentError(f"{fn}() needs a model whose input is a vector of features; this one takes per-sample "
                            f"shape {list(shape)}")
    n_features = shape[0]
    if isinstance(call.data, Mapping):
        return check_problem(call.data, n_features, fn), n_features, None
    if call.data is not None:
        problem, table = empirical_marginals(call.data, n_features, model.feature_names, fn)
        return problem, n_features, table
    names = model.feature_names or tuple(f"x{i}" for i in range(n_features))
    warnings.warn(
        f"{fn}(): no problem given: every input is taken as independent U(0, 1) (the unit hypercube). Pass "
        "SALib's problem dict as data ({'num_vars', 'names', 'bounds', 'dists'}) for the inputs' real ranges, or "
        "data whose columns give their empirical distributions",
        stacklevel=6,
    )
    return _unit_cube(n_features, names), n_features, None


def table_leaf(table, n_features: int):
    """The quantile table as a kernel leaf: ``[m, D]`` float32, or ``[1, D]`` zeros for SALib problems."""
    return jnp.zeros((1, n_features), jnp.float32) if table is None else jnp.asarray(table, jnp.float32)


def median_shift(model, outputs, codes, p0, p1, p2, fn: str, table=None):
    """The model's outputs at the inputs' medians (a shift that keeps the streamed variance sums well conditioned),
    refused when not finite."""
    n_features = int(p0.shape[0])
    median = _inverse_cdf(jnp.full((n_features,), 0.5, jnp.float32), codes, p0, p1, p2, table)
    shift = _outputs_of(model, outputs)(median)
    if not bool(jnp.all(jnp.isfinite(shift))):
        raise DataError(f"{fn}(): the model's output at the inputs' medians is not finite ({np.asarray(shift)}); "
                        "check the problem's bounds against the ranges the model accepts")
    return shift


def row_source(n: int, what: str) -> Source:
    """``n`` rows of one dummy column: the engine streams row numbers, the kernel draws each row from its key."""
    return Source(
        blocks=lambda rows: (np.zeros((min(rows, n - s), 1), np.float32) for s in range(0, n, max(int(rows), 1))),
        n_rows=n, feature_names=None, description=f"{n} {what}", dtype=np.dtype(np.float32), row_shape=(1,),
    )


def _prepare(call: Call) -> Plan:
    model, fn = call.model, "sobol_indices"
    problem, n_features, table = resolve_problem(call, fn)
    codes, p0, p1, p2 = _dist_arrays(problem)
    table = table_leaf(table, n_features)
    key = call.key
    shift = median_shift(model, call.outputs, codes, p0, p1, p2, fn, table)
    state = _State(model, jax.random.fold_in(key, 0), jax.random.fold_in(key, 1), shift, p0, p1, p2, table)
    n, n_boot, second = call.options["n"], call.options["n_bootstrap"], call.options["second_order"]
    k = int(shift.shape[0])
    example = jax.ShapeDtypeStruct((n_features,), jnp.float32)
    per_eval = _engine.model_bytes_per_sample(model, ("sobol", call.outputs), _outputs_of(model, call.outputs),
                                              example)
    n_eval = 2 * n_features + 2 if second else n_features + 2
    per_row = n_eval * (per_eval + 8 * n_features) + 4 * (n_boot + 8 * k * n_features * (n_boot + 1))
    if second:
        per_row += 4 * 2 * k * n_features * (n_features + n_boot)
    source = row_source(n, "Sobol sample rows")
    return Plan(state=state, static={"outputs": call.outputs, "codes": codes, "n_boot": n_boot,
                                     "second_order": second},
                bytes_per_sample=per_row, context=problem, data=source)


def _estimates(ma, mb, m2a, m2b, md, md2, mbd, count, me=None, mep=None):
    """``(first, total, variance, second)`` from the (shifted) means; ``m2a``/``m2b`` are sums of squared
    deviations; ``second`` is ``None`` without ``me``.

    ``ma``, ``mb``, ``m2a``, ``m2b``: ``[..., k]``; ``md`` (mean d), ``md2`` (mean d^2), ``mbd`` (mean of
    ``(f(B) - shift) d``), ``me`` (mean e): ``[..., k, D]``; ``mep`` (mean of ``e_i (f(A_B^l) - shift)``):
    ``[..., k, D, D]``.
    """
    d = md.shape[-1]
    var = (m2a + m2b + 0.5 * count * (ma - mb) ** 2) / (2.0 * count)  # [..., k]  np.var(r_[A, B]), ddof 0
    if me is None:
        grand = ((d + 1) * ma + mb + md.sum(-1)) / (d + 2)  # mean of all n (D + 2) evaluations, shifted
    else:
        grand = ((d + 1) * (ma + mb) + md.sum(-1) + me.sum(-1)) / (2 * d + 2)  # of all n (2D + 2)
    second = None
    with np.errstate(invalid="ignore", divide="ignore"):
        first = (mbd - grand[..., None] * md) / var[..., None]
        total = 0.5 * md2 / var[..., None]
        if me is not None:  # SALib: V_ik / V - S_i - S_k with V_ik = mean(f(B_A^i) f(A_B^k) - f(A) f(B))
            second = (mep - grand[..., None, None] * me[..., None]) / var[..., None, None] - first[..., None]
            upper = np.triu(np.ones((d, d), bool), k=1)
            second = np.where(upper, second, np.nan)
    return first, total, var, second


def _finalize(stats, info, plan: Plan, call: Call) -> SobolIndices:
    problem, model = plan.context, call.model
    n = info.n_samples
    bad = int(stats["bad"].value)
    if bad:
        raise DataError(
            f"sobol_indices(): the model's output is NaN or Inf at {bad} of the {n} sample rows; narrow the "
            "problem's bounds (or choose bounded distributions) to the range the model accepts"
        )
    second = call.options["second_order"]
    a, b, d, bd = stats["a"], stats["b"], stats["d"], stats["bd"]
    md2 = d.m2 / n + d.mean**2
    extra = {"me": stats["e"].value / n, "mep": stats["ep"].value / n} if second else {}
    first, total, var, s2 = _estimates(a.mean, b.mean, a.m2, b.m2, d.mean, md2, bd.mean, n, **extra)
    boot = stats["boot"]
    w = boot["w"].value[:, None]  # [n_boot, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ma, mb = boot["a"].value / w, boot["b"].value / w
        m2a, m2b = boot["a2"].value - w * ma**2, boot["b2"].value - w * mb**2
        wd = w[..., None]
        extra = {"me": boot["e"].value / wd, "mep": boot["ep"].value / wd[..., None]} if second else {}
        f_b, t_b, _, s2_b = _estimates(ma, mb, m2a, m2b, boot["d"].value / wd, boot["d2"].value / wd,
                                       boot["bd"].value / wd, w, **extra)
    first_conf = Z95 * _stats.bootstrap_stderr(f_b)
    total_conf = Z95 * _stats.bootstrap_stderr(t_b)
    s2_conf = None
    if second:
        s2_conf = np.where(np.isnan(s2), np.nan, Z95 * _stats.bootstrap_stderr(s2_b))
    outs = output_names(model, call.outputs)
    flat = ~(var > 0)
    if flat.any():
        warnings.warn(f"sobol_indices(): output(s) {[outs[i] for i in np.flatnonzero(flat)]} do not vary over the "
                      "problem's inputs (variance 0): their indices are undefined (NaN)", stacklevel=5)
    return SobolIndices(
        importance=total,
        stderr=total_conf / Z95,
        first_order=np.asarray(first, np.float64),
        total_order=np.asarray(total, np.float64),
        first_order_conf=np.asarray(first_conf, np.float64),
        total_order_conf=np.asarray(total_conf, np.float64),
        variance=np.asarray(var, np.float64),
        problem=problem,
        n_bootstrap=call.options["n_bootstrap"],
        second_order=None if s2 is None else np.asarray(s2, np.float64),
        second_order_conf=None if s2_conf is None else np.asarray(s2_conf, np.float64),
        n_samples=n,
        feature_names=tuple(problem["names"]),
        output_names=outs,
        input_shape=(problem["num_vars"],),
        method="sobol",
        options=call.record(),
    )


SPEC = Method(
    name="sobol",
    function_name="sobol_indices",
    family="global",
    summary="first-, total- (and second-) order Sobol indices over an input distribution or the data's "
            "marginals (Saltelli 2010, Jansen 1999)",
    doc=r"""First- and total-order Sobol indices of every output (second order on request), the ``n * (D + 2)``
    model evaluations (``n * (2D + 2)`` with ``second_order=True``) streamed.

    See the module docstring of ``jaxsens._sobol`` for the estimators, the sampling and the intervals.

    Args:
        data: the input distributions: SALib's problem dict, ``num_vars``, ``names``, ``bounds`` and optional
            ``dists`` (``"unif"``: [lower, upper]; ``"norm"``: [mean, sd]; ``"triang"``: [start, end, peak as a
            fraction of the width]; ``"lognorm"``: [mean, sd] of ln x); or a **data source** (an array
            ``[n_rows, D]``, a DataFrame, a ``.npy`` / ``.npz`` / ``.csv`` / ``.parquet`` path,
            ``jaxsens.open_data(...)``) whose columns give each input's empirical distribution, resampled
            independently: **correlations between the columns are ignored** (see
            :func:`jaxsens._sobol.empirical_marginals`; names from the data's header). The inputs are
            independent. ``None``: every input U(0, 1), with a warning.

    Returns:
        A :class:`SobolIndices`: ``first_order``, ``total_order`` (``importance``), ``first_order_conf``,
        ``total_order_conf`` (95% half-widths), each ``[n_outputs, n_features]``; with ``second_order=True``
        also ``second_order`` and ``second_order_conf`` ``[n_outputs, n_features, n_features]`` (upper
        triangle; :meth:`SobolIndices.interactions` ranks the pairs).

    Example:
        >>> import jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] + 2 * x[1:2], None, input_shape=(3,))
        >>> problem = {"num_vars": 3, "names": ["a", "b", "c"], "bounds": [[0, 1]] * 3}
        >>> r = jaxsens.sobol_indices(m, problem, n=4096, key=0)
        >>> r.total_order.round(1).tolist(), float(r.total_order[0, 2])
        ([[0.2, 0.8, 0.0]], 0.0)
    """,
    result=SobolIndices,
    needs_data=False,
    random=True,
    options=(
        Option("n", int, 2**14, "rows of each sample matrix A and B (the model runs n * (n_features + 2) times)",
               minimum=2),
        Option("n_bootstrap", int, 100, "Poisson bootstrap replicates for the 95% intervals", minimum=2),
        Option("second_order", bool, False, "also the second-order indices S_ik (Saltelli 2002; the model runs "
               "n * (2 n_features + 2) times)"),
    ),
    memory="streams the n * (n_features + 2) evaluations: memory independent of n (a data source's marginals: "
           "a quantile table of at most 2**16 rows)",
    prepare=_prepare,
    kernel=_kernel,
    finalize=_finalize,
)

sobol_indices = SPEC.as_function()
