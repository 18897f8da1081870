"""Test tolerances derived from float32 arithmetic, never from one machine's rounding.

A float32 sum of ``n`` terms, in any order (sequential, pairwise, vectorised partial sums), is within
``(n - 1) * u * sum(|terms|)`` of the exact sum, ``u = eps / 2`` (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., section 4.2); a chain of ``n`` multiplications or elementary functions adds about ``u`` of
relative error per step. So the tolerance for a float32 result is

    safety * n_terms * eps32 * magnitude

with ``magnitude`` the size of the terms being accumulated (``sum(|terms|)`` for a sum, ``mean(|terms|)`` for a
mean: *not* the result, which cancellation can make much smaller), ``n_terms`` the length of the longest
accumulation (rows summed in one chunk, fan-in of a dot product, steps of a recurrence, added up over both sides
when two float32 computations are compared), and ``safety`` a small factor. Using ``eps`` rather than ``u`` already
doubles the classical bound, so the default ``safety`` is 2.

For long sums (thousands of rows) the worst case, linear in ``n``, says little; ``probabilistic=True`` uses Higham
and Mary's probabilistic bound instead (SIAM J. Sci. Comput. 41(5), 2019, theorem 2.4): with rounding errors
independent and of mean zero, ``|error| <= lambda * sqrt(n) * u * sum(|terms|)`` with probability at least
``1 - 2 n exp(-lambda^2 / 2)``. There ``safety`` is ``lambda / 2`` (in units of ``eps``), default 4: ``lambda = 8``,
a failure probability below ``1e-9`` for ``n <= 1e5``.

Equalities that hold by construction (exact zeros, the same arithmetic in the same order, values that are exact in
float32) stay exact: ``np.testing.assert_array_equal``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EPS32", "assert_f32_close", "f32_tol"]

EPS32 = float(np.finfo(np.float32).eps)  # 2 ** -23


def f32_tol(magnitude, n_terms: int, *, safety: float | None = None, probabilistic: bool = False):
    """``safety * n_terms * eps32 * |magnitude|`` (``sqrt(n_terms)`` when ``probabilistic``), elementwise.

    Example:
        >>> print(f"{f32_tol(5.76, 240):.2e}")  # the MSE of 240 rows of size ~5.8, summed in float32
        3.30e-04
    """
    if n_terms < 1:
        raise ValueError(f"n_terms must be >= 1, got {n_terms}")
    if safety is None:
        safety = 4.0 if probabilistic else 2.0
    growth = np.sqrt(n_terms) if probabilistic else n_terms
    return safety * growth * EPS32 * np.abs(np.asarray(magnitude, np.float64))


def assert_f32_close(actual, desired, *, n_terms: int, magnitude=None, safety: float | None = None,
                     probabilistic: bool = False, err_msg: str = ""):
    """Assert ``|actual - desired| <= f32_tol(magnitude, n_terms, ...)`` elementwise.

    ``magnitude`` defaults to ``max |desired|``, the array's scale (right when its elements are of one size and
    carry no cancellation); pass the size of the accumulated terms otherwise (e.g. ``mean_abs`` for a signed mean),
    either a scalar or an array that broadcasts against ``desired``. NaNs must match; shapes must match.
    """
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, f"shapes differ: {actual.shape} vs {desired.shape} {err_msg}"
    if magnitude is None:
        finite = desired[np.isfinite(desired)]
        magnitude = np.abs(finite).max() if finite.size else 0.0
    tol = np.broadcast_to(f32_tol(magnitude, n_terms, safety=safety, probabilistic=probabilistic), desired.shape)
    both_nan = np.isnan(actual) & np.isnan(desired)
    err = np.where(both_nan, 0.0, np.abs(actual - desired))
    bad = ~(err <= tol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(tol, np.finfo(float).tiny), 0)), bad.shape)
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} elements differ by more than the float32 bound "
            f"({n_terms} terms{', probabilistic' if probabilistic else ''}); worst at {tuple(int(k) for k in i)}: actual {actual[i]!r}, "
            f"desired {desired[i]!r}, |diff| {err[i]:.3g} > tol {tol[i]:.3g} {err_msg}"
        )
