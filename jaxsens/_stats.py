"""Mergeable streaming statistics: per-chunk ``*_of`` on the device, ``merge`` in float64 on the host.

Every statistic is a frozen pytree dataclass with three functions:

* ``moments_of(values, mask)`` / ``comoments_of(xs, mask)`` / ``total_of(values, mask)`` summarise **one
  chunk** (batch axis 0; rows with ``mask == False`` are ignored, NaN-safe through ``jnp.where``). They run
  inside a jitted kernel, in float32.
* :func:`merge` folds two summaries of the same kind (Chan, Golub & LeVeque's parallel update). It is
  associative up to float64 rounding, so chunk size and device count change speed, never results.
* ``init`` is "no summary yet": :func:`merge` accepts ``None`` on the left.

Per-chunk moments are computed in two passes about a shift (the first valid row), so constant inputs give
exact means and zero variances, and the float32 sums only see deviations. Merging then happens in float64.

Reference: T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing the sample variance: analysis and
recommendations", The American Statistician 37(3), 1983 (pairwise update, eq. 2.1).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BOOT_SEED",
    "N_BOOT",
    "CoMoments",
    "CorrelatedInputsWarning",
    "Extrema",
    "Moments",
    "Total",
    "bootstrap_stderr",
    "comoments_of",
    "correlated_pairs",
    "correlation",
    "extrema_of",
    "merge",
    "moments_of",
    "poisson_weights",
    "rms",
    "scale_std",
    "std",
    "to_host",
    "total_of",
    "variance",
    "warn_correlated",
]


def _stat(cls):
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=[])


@_stat
@dataclasses.dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations (``m2``) of every element of a per-row value.

    Attributes:
        count: scalar, number of rows summarised.
        mean: ``[*value_shape]``.
        m2: ``[*value_shape]``, ``sum_rows (v - mean) ** 2``.
    """

    count: Any
    mean: Any
    m2: Any


@_stat
@dataclasses.dataclass(frozen=True)
class CoMoments:
    """Count, mean and co-moment matrix of a per-row vector (for streaming correlations).

    Attributes:
        count: scalar.
        mean: ``[n_features]``.
        c2: ``[n_features, n_features]``, ``sum_rows (x - mean)(x - mean)^T``.
    """

    count: Any
    mean: Any
    c2: Any


@_stat
@dataclasses.dataclass(frozen=True)
class Total:
    """A plain sum over rows (counts of events, e.g. non-finite outputs)."""

    value: Any


@_stat
@dataclasses.dataclass(frozen=True)
class Extrema:
    """Element-wise minimum and maximum of a per-row value (``+inf`` / ``-inf`` where no row was summarised).

    Attributes:
        min: ``[*value_shape]``.
        max: ``[*value_shape]``.
    """

    min: Any
    max: Any


def _expand(mask, ndim):
    return mask.reshape(mask.shape + (1,) * (ndim - 1))


def moments_of(values, mask) -> Moments:
    """Moments of one chunk, element-wise over ``values[i]``.

    Args:
        values: ``[batch, *value_shape]``.
        mask: ``[batch]`` bool; False rows (padding, skipped rows) are ignored even when they hold NaN.

    Returns:
        ``Moments`` with ``count`` scalar and ``mean``, ``m2`` of shape ``value_shape`` (float32).
    """
    values = jnp.asarray(values)
    m = _expand(mask, values.ndim)
    count = jnp.sum(mask, dtype=jnp.float32)
    shift = jax.lax.stop_gradient(values[jnp.argmax(mask)])
    d = jnp.where(m, values - shift, 0)
    mean_d = jnp.sum(d, axis=0) / jnp.maximum(count, 1)
    dev = jnp.where(m, d - mean_d, 0)
    return Moments(count, shift + mean_d, jnp.sum(dev * dev, axis=0))


def comoments_of(xs, mask) -> CoMoments:
    """Co-moments of one chunk of vectors.

    Args:
        xs: ``[batch, n_features]``.
        mask: ``[batch]`` bool.
    """
    m = mask[:, None]
    count = jnp.sum(mask, dtype=jnp.float32)
    mean = jnp.sum(jnp.where(m, xs, 0), axis=0) / jnp.maximum(count, 1)
    dev = jnp.where(m, xs - mean, 0)
    c2 = jnp.matmul(dev.T, dev, precision=jax.lax.Precision.HIGHEST)
    return CoMoments(count, mean, c2)


def total_of(values, mask) -> Total:
    """Sum of ``values[i]`` over the rows with ``mask[i]``."""
    values = jnp.asarray(values)
    return Total(jnp.sum(jnp.where(_expand(mask, values.ndim), values, 0), axis=0))


def extrema_of(values, mask) -> Extrema:
    """Minimum and maximum of one chunk, element-wise over ``values[i]`` (rows with ``mask == False`` ignored).

    Args:
        values: ``[batch, *value_shape]``.
        mask: ``[batch]`` bool.

    Returns:
        ``Extrema`` with ``min`` and ``max`` of shape ``value_shape`` (floating; a NaN in a valid row propagates).
    """
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.floating):
        values = values.astype(jnp.float32)
    m = _expand(mask, values.ndim)
    return Extrema(
        jnp.min(jnp.where(m, values, jnp.inf), axis=0), jnp.max(jnp.where(m, values, -jnp.inf), axis=0)
    )


# ------------------------------------------------------------------------------------------ merging
def _merge_moments(a: Moments, b: Moments) -> Moments:
    if b.count == 0:
        return a
    if a.count == 0:
        return b
    n = a.count + b.count
    delta = b.mean - a.mean
    return Moments(n, a.mean + delta * (b.count / n), a.m2 + b.m2 + delta * delta * (a.count * b.count / n))


def _merge_comoments(a: CoMoments, b: CoMoments) -> CoMoments:
    if b.count == 0:
        return a
    if a.count == 0:
        return b
    n = a.count + b.count
    delta = b.mean - a.mean
    return CoMoments(
        n, a.mean + delta * (b.count / n), a.c2 + b.c2 + np.outer(delta, delta) * (a.count * b.count / n)
    )


def _merge_total(a: Total, b: Total) -> Total:
    return Total(a.value + b.value)


def _merge_extrema(a: Extrema, b: Extrema) -> Extrema:
    return Extrema(np.minimum(a.min, b.min), np.maximum(a.max, b.max))  # NaN propagates, as in extrema_of


_MERGE = {Moments: _merge_moments, CoMoments: _merge_comoments, Total: _merge_total, Extrema: _merge_extrema}


def _is_stat(x) -> bool:
    return type(x) in _MERGE


def merge(a, b):
    """Merge two pytrees of host (numpy float64) summaries of one structure; ``a`` may be ``None`` (init)."""
    if a is None:
        return b
    return jax.tree.map(lambda s, t: _MERGE[type(s)](s, t), a, b, is_leaf=_is_stat)


def to_host(stats):
    """Copy a pytree of device summaries to numpy float64 (counts become Python-exact float64 integers)."""
    return jax.tree.map(lambda v: np.asarray(v, dtype=np.float64), jax.device_get(stats))


# ----------------------------------------------------------------------------------------- finalize
def variance(m: Moments, *, ddof: int = 1) -> np.ndarray:
    """``m2 / (count - ddof)``; NaN where ``count <= ddof``."""
    m2 = np.asarray(m.m2, np.float64)
    if m.count <= ddof:
        return np.full_like(m2, np.nan)
    return m2 / np.float64(m.count - ddof)


def std(m: Moments, *, ddof: int = 1) -> np.ndarray:
    """Standard deviation ``sqrt(m2 / (count - ddof))``."""
    return np.sqrt(variance(m, ddof=ddof))


def rms(m: Moments) -> np.ndarray:
    """Root mean square ``sqrt(mean(v^2)) = sqrt(m2 / count + mean^2)``, in float64."""
    mean = np.asarray(m.mean, np.float64)
    return np.sqrt(np.asarray(m.m2, np.float64) / float(m.count) + mean * mean)


def scale_std(m: Moments, names: Sequence[str], *, option: str = "scale='std'") -> np.ndarray:
    """Per-feature standard deviation (ddof = 1) to scale sensitivities by, refusing the cases where it is
    meaningless: fewer than 2 rows (no standard deviation: NaN) or a constant feature (std 0, so its scaled
    importance would be 0 whatever the model does).

    Args:
        m: moments of the inputs, per feature.
        names: the feature names, for the message.
        option: the option being applied, for the message.

    Raises:
        DataError: naming the row count, or the constant feature(s).
    """
    from converters.errors import DataError

    n = int(m.count)
    what = f"{option} multiplies each sensitivity by its input's standard deviation"
    if n < 2:
        raise DataError(
            f"{what}, which needs at least 2 rows; the data has {n} usable row(s). Pass more rows, or scale=None"
        )
    s = std(m)
    constant = np.flatnonzero(~(s > 0))
    if constant.size:
        shown = ", ".join(
            f"{names[j]!r} (column {j})" if j < len(names) else f"column {j}" for j in constant[:10]
        )
        more = f" and {constant.size - 10} more" if constant.size > 10 else ""
        raise DataError(
            f"{what}; feature {shown}{more} is constant over the {n} rows (std 0), so its scaled importance "
            "would be 0 whatever the model does. Drop the constant feature(s), or pass scale=None"
        )
    return s


def correlation(c: CoMoments) -> np.ndarray:
    """Pearson correlation matrix ``[n_features, n_features]``; NaN rows/columns for constant features."""
    c2 = np.asarray(c.c2, np.float64)
    d = np.sqrt(np.diag(c2))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = c2 / np.outer(d, d)
    r[~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0)


class CorrelatedInputsWarning(UserWarning):
    """Strongly correlated inputs: their sensitivities are not separable (the model may use either one)."""


def correlated_pairs(
    c: CoMoments, names: Sequence[str], *, threshold: float = 0.9
) -> tuple[tuple[str, str, float], ...]:
    """Pairs of features with ``|r| > threshold``, strongest first, as ``(name_a, name_b, r)``."""
    r = correlation(c)
    i, j = np.triu_indices(len(r), k=1)
    vals = r[i, j]
    hit = np.flatnonzero(np.abs(np.nan_to_num(vals)) > threshold)
    hit = hit[np.argsort(-np.abs(vals[hit]), kind="stable")]
    return tuple((str(names[i[h]]), str(names[j[h]]), float(vals[h])) for h in hit)


def warn_correlated(pairs, *, threshold: float = 0.9, method: str, stacklevel: int = 3) -> None:
    """``warnings.warn`` a :class:`CorrelatedInputsWarning` naming the pairs (at most 10 in the message)."""
    if not pairs:
        return
    shown = ", ".join(f"{a} ~ {b} (r={r:+.3f})" for a, b, r in pairs[:10])
    more = f" and {len(pairs) - 10} more" if len(pairs) > 10 else ""
    warnings.warn(
        f"{len(pairs)} input pair(s) have |correlation| > {threshold}: {shown}{more}. {method}() measures "
        "the model's response to each input with the others held fixed; a model may rely on either of two "
        "correlated inputs, so do not read a low score as 'this quantity does not matter'. The pairs are "
        "stored on the result (.correlated_pairs).",
        CorrelatedInputsWarning,
        stacklevel=stacklevel,
    )


# ------------------------------------------------------------------------------------ Poisson bootstrap
N_BOOT = 64
"""Replicates of the streamed Poisson bootstrap (stderr of statistics without a closed form)."""

BOOT_SEED = 0x5EED
"""Key of the bootstrap weights of deterministic methods: their stderr is reproducible too."""


def poisson_weights(key, row_index, n_boot: int = N_BOOT):
    """``[batch, n_boot]`` float32 bootstrap weights, ``w ~ Poisson(1)`` per row and replicate.

    The streamed ("Poisson") bootstrap of Hanley & MacGibbon (2006) / Oza (2005): instead of resampling rows,
    each row enters replicate ``b`` with an independent Poisson(1) count. Weighted sums of per-row values are
    then mergeable like any :class:`Total`, so the bootstrap runs in the same single pass, in memory
    independent of the number of rows. Weights come from ``fold_in(key, row_index)``: they do not depend on
    the batch size or the device count.

    Args:
        key: a typed PRNG key.
        row_index: ``[batch]`` global row numbers.
        n_boot: replicates.
    """

    def one(i):  # inverse CDF of one uniform: ~18x faster than jax.random.poisson on CPU, exact to 1e-15
        u = jax.random.uniform(jax.random.fold_in(key, i), (n_boot,), jnp.float32)
        return jnp.sum(u[:, None] >= _POISSON1_CDF, axis=1).astype(jnp.float32)

    return jax.vmap(one)(row_index)


_POISSON1_CDF = np.asarray(  # P(X <= k) for X ~ Poisson(1), k = 0..15 (P(X > 15) < 1e-13); numpy, not jnp: an
    np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, k + 1, dtype=np.float64)) for k in range(16)]), np.float32
)  # import must not start JAX's backends (jax.distributed.initialize() has to come first)


def bootstrap_stderr(replicates: np.ndarray, axis: int = 0) -> np.ndarray:
    """Standard deviation (ddof = 1) of bootstrap replicates along ``axis``: the bootstrap standard error.

    Replicates marked NaN (degenerate: e.g. one that drew no usable row) are left out; fewer than 2 valid
    replicates give NaN.
    """
    reps = np.asarray(replicates, np.float64)
    n = np.sum(~np.isnan(reps), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice: its result is NaN, said above
        mean = np.nanmean(reps, axis=axis, keepdims=True) if reps.size else reps
        var = np.nansum((reps - mean) ** 2, axis=axis) / (n - 1)
    return np.where(n >= 2, np.sqrt(var), np.nan)
