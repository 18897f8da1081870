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

Second-order indices are not computed.
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
        problem: the input distributions (SALib's problem dict: ``num_vars``, ``names``, ``bounds``, ``dists``).
        n_bootstrap: bootstrap replicates behind the intervals.

    ``n_samples`` is ``n``, the rows of ``A`` (the model ran ``n * (n_features + 2)`` times).
    """

    first_order: np.ndarray
    total_order: np.ndarray
    first_order_conf: np.ndarray
    total_order_conf: np.ndarray
    variance: np.ndarray
    problem: dict
    n_bootstrap: int

    importance_label: ClassVar[str] = "total-order Sobol index"
    plot_xlabel: ClassVar[str] = "Sobol index (share of the output variance): first order S1, total order ST"
    plot_bars_per_feature: ClassVar[int] = 2  # plot(): S1 and ST side by side
    stderr_rule: ClassVar[str] = "total_order_conf / 1.96 (Poisson bootstrap over the sample rows)"

    def _extra_columns(self):
        return {"first_order": self.first_order, "first_order_conf": self.first_order_conf,
                "total_order_conf": self.total_order_conf}

    def plot(self, *, top: int = 20, output: int | str | None = None, path=None):
        """S1 and ST bars side by side per input with their 95% intervals (``first_order_conf``,
        ``total_order_conf``), the ``top`` inputs by total order; one panel per output (or the one ``output``).

        Indices of different outputs are not averaged (a mean of indices is no index): with several outputs and
        ``output=None`` every output gets its own panel. Returns the matplotlib ``Figure``.
        """
        from jaxsens._results import _short, finish_figure, output_index, pyplot

        plt = pyplot()
        which = range(self.n_outputs) if output is None else [output_index(output, self.output_names)]
        n_feat = self.total_order.shape[-1]
        k = max(min(int(top), n_feat), 1)
        fig, axes = plt.subplots(len(which), 1, figsize=(8, len(which) * (1.6 + 0.45 * k)), squeeze=False)
        for ax, o in zip(axes[:, 0], which):
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
    vectors (float32)."""
    codes = tuple(DISTS.index(t) for t in problem["dists"])
    p = np.zeros((3, problem["num_vars"]), np.float32)
    for i, b in enumerate(problem["bounds"]):
        p[: len(b), i] = b
    return codes, jnp.asarray(p[0]), jnp.asarray(p[1]), jnp.asarray(p[2])


def _inverse_cdf(u, codes, p0, p1, p2):
    """``[..., D]`` uniforms in (0, 1) -> the inputs' values (SALib's meaning of ``bounds`` per distribution)."""
    z = jax.scipy.special.ndtri(u)
    unif = p0 + (p1 - p0) * u
    norm = p0 + p1 * z
    lognorm = jnp.exp(p0 + p1 * z)
    width = p1 - p0
    triang = p0 + width * jnp.where(u < p2, jnp.sqrt(u * p2), 1.0 - jnp.sqrt((1.0 - u) * (1.0 - p2)))
    code = jnp.asarray(codes)
    return jnp.where(code == 0, unif, jnp.where(code == 1, norm, jnp.where(code == 2, triang, lognorm)))


def sample_ab(key, row_index, codes, p0, p1, p2):
    """Rows ``row_index`` of ``A`` and ``B``: ``([batch, D], [batch, D])`` from ``fold_in(key, row)``.

    Uniforms are ``jax.random.uniform`` (multiples of 2**-23) shifted by 2**-24 into the open interval (0, 1),
    so the normal and lognormal inverse CDFs stay finite.
    """
    d = len(codes)

    def one(i):
        return jax.random.uniform(jax.random.fold_in(key, i), (2, d), jnp.float32) + jnp.float32(2.0**-24)

    u = jax.vmap(one)(row_index)
    x = _inverse_cdf(u, codes, p0, p1, p2)
    return x[:, 0], x[:, 1]


# ------------------------------------------------------------------------------------------- the kernel
@functools.partial(jax.tree_util.register_dataclass, data_fields=["model", "key", "boot_key", "shift", "p0",
                                                                   "p1", "p2"], meta_fields=[])
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

    input_shape = (1,)
    feature_names = None


def _outputs_of(model, outputs):
    def f(x):
        y = model.apply(model.params, x).reshape(-1)
        return y if outputs is None else y[jnp.asarray(outputs)]

    return f


@functools.partial(jax.jit, static_argnames=("outputs", "codes", "n_boot"))
def _kernel(state, xs, mask, row_index, *, outputs, codes, n_boot):
    """Per chunk: moments of ``f(A)``, ``f(B)``, ``d_i = f(A_B^i) - f(A)`` and ``f(B) d_i`` (shifted), their
    Poisson-weighted sums per bootstrap replicate, and a count of non-finite outputs."""
    del xs  # the rows are generated from row_index
    a, b = sample_ab(state.key, row_index, codes, state.p0, state.p1, state.p2)  # [batch, D]
    d = a.shape[1]
    ab = jnp.where(jnp.eye(d, dtype=bool)[:, None, :], b[None], a[None])  # [D, batch, D]
    rows = jnp.concatenate([a[None], b[None], ab], axis=0)  # [D + 2, batch, D]
    f = jax.vmap(jax.vmap(_outputs_of(state.model.with_unroll(0), outputs)))(rows)  # [D + 2, batch, k]
    bad = jnp.sum(~jnp.isfinite(f), axis=(0, 2)) > 0  # [batch]
    fa, fb = f[0] - state.shift, f[1] - state.shift  # [batch, k]
    diff = jnp.moveaxis(f[2:] - f[0][None], 0, -1)  # [batch, k, D]  f(A_B^i) - f(A): exactly 0 for an unused input
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
    return stats


def resolve_problem(call: Call, fn: str) -> tuple[dict, int]:
    """The checked problem of a global method's call and the model's number of features (shared by every method
    of the "global" family): a vector-input model; ``data=None`` means independent U(0, 1) inputs, with a
    warning."""
    model = call.model
    (shape,) = check_model(model, fn, family="global")
    if len(shape) != 1:
        raise ArgumentError(f"{fn}() needs a model whose input is a vector of features; this one takes per-sample "
                            f"shape {list(shape)}")
    n_features = shape[0]
    if call.data is not None:
        return check_problem(call.data, n_features, fn), n_features
    names = model.feature_names or tuple(f"x{i}" for i in range(n_features))
    warnings.warn(
        f"{fn}(): no problem given: every input is taken as independent U(0, 1) (the unit hypercube). Pass "
        "SALib's problem dict as data ({'num_vars', 'names', 'bounds', 'dists'}) for the inputs' real ranges",
        stacklevel=6,
    )
    return _unit_cube(n_features, names), n_features


def median_shift(model, outputs, codes, p0, p1, p2, fn: str):
    """The model's outputs at the inputs' medians (a shift that keeps the streamed variance sums well conditioned),
    refused when not finite."""
    n_features = int(p0.shape[0])
    median = _inverse_cdf(jnp.full((n_features,), 0.5, jnp.float32), codes, p0, p1, p2)
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
    problem, n_features = resolve_problem(call, fn)
    codes, p0, p1, p2 = _dist_arrays(problem)
    key = call.key
    shift = median_shift(model, call.outputs, codes, p0, p1, p2, fn)
    state = _State(model, jax.random.fold_in(key, 0), jax.random.fold_in(key, 1), shift, p0, p1, p2)
    n, n_boot = call.options["n"], call.options["n_bootstrap"]
    k = int(shift.shape[0])
    example = jax.ShapeDtypeStruct((n_features,), jnp.float32)
    per_eval = _engine.model_bytes_per_sample(model, ("sobol", call.outputs), _outputs_of(model, call.outputs),
                                              example)
    per_row = (n_features + 2) * (per_eval + 8 * n_features) + 4 * (n_boot + 8 * k * n_features * (n_boot + 1))
    source = row_source(n, "Sobol sample rows")
    return Plan(state=state, static={"outputs": call.outputs, "codes": codes, "n_boot": n_boot},
                bytes_per_sample=per_row, context=problem, data=source)


def _estimates(ma, mb, m2a, m2b, md, md2, mbd, count):
    """``(first, total, variance)`` from the (shifted) means; ``m2a``/``m2b`` are sums of squared deviations.

    ``ma``, ``mb``, ``m2a``, ``m2b``: ``[..., k]``; ``md`` (mean d), ``md2`` (mean d^2), ``mbd`` (mean of
    ``(f(B) - shift) d``): ``[..., k, D]``.
    """
    d = md.shape[-1]
    var = (m2a + m2b + 0.5 * count * (ma - mb) ** 2) / (2.0 * count)  # [..., k]  np.var(r_[A, B]), ddof 0
    grand = ((d + 1) * ma + mb + md.sum(-1)) / (d + 2)  # mean of all n (D + 2) evaluations, shifted
    with np.errstate(invalid="ignore", divide="ignore"):
        first = (mbd - grand[..., None] * md) / var[..., None]
        total = 0.5 * md2 / var[..., None]
    return first, total, var


def _finalize(stats, info, plan: Plan, call: Call) -> SobolIndices:
    problem, model = plan.context, call.model
    n = info.n_samples
    bad = int(stats["bad"].value)
    if bad:
        raise DataError(
            f"sobol_indices(): the model's output is NaN or Inf at {bad} of the {n} sample rows; narrow the "
            "problem's bounds (or choose bounded distributions) to the range the model accepts"
        )
    a, b, d, bd = stats["a"], stats["b"], stats["d"], stats["bd"]
    md2 = d.m2 / n + d.mean**2
    first, total, var = _estimates(a.mean, b.mean, a.m2, b.m2, d.mean, md2, bd.mean, n)
    boot = stats["boot"]
    w = boot["w"].value[:, None]  # [n_boot, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ma, mb = boot["a"].value / w, boot["b"].value / w
        m2a, m2b = boot["a2"].value - w * ma**2, boot["b2"].value - w * mb**2
        wd = w[..., None]
        f_b, t_b, _ = _estimates(ma, mb, m2a, m2b, boot["d"].value / wd, boot["d2"].value / wd,
                                 boot["bd"].value / wd, w)
    first_conf = Z95 * _stats.bootstrap_stderr(f_b)
    total_conf = Z95 * _stats.bootstrap_stderr(t_b)
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
    summary="first- and total-order Sobol indices over an input distribution (Saltelli 2010, Jansen 1999)",
    doc=r"""First- and total-order Sobol indices of every output, the ``n * (D + 2)`` model evaluations streamed.

    See the module docstring of ``jaxsens._sobol`` for the estimators, the sampling and the intervals.

    Args:
        data: the input distributions as SALib's problem dict: ``num_vars``, ``names``, ``bounds`` and optional
            ``dists`` (``"unif"``: [lower, upper]; ``"norm"``: [mean, sd]; ``"triang"``: [start, end, peak as a
            fraction of the width]; ``"lognorm"``: [mean, sd] of ln x). The inputs are independent. ``None``:
            every input U(0, 1), with a warning.

    Returns:
        A :class:`SobolIndices`: ``first_order``, ``total_order`` (``importance``), ``first_order_conf``,
        ``total_order_conf`` (95% half-widths), each ``[n_outputs, n_features]``.

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
    ),
    memory="streams the n * (n_features + 2) evaluations: memory independent of n",
    prepare=_prepare,
    kernel=_kernel,
    finalize=_finalize,
)

sobol_indices = SPEC.as_function()
