"""``jaxsens.dgsm``: closed forms on Ishigami, the Sobol-Kucherenko bound, exact zeros, normal inputs, and
SALib's finite-difference ``dgsm.analyze`` on the same sample rows."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _ishigami import PI, A, B
from _ishigami import ishigami as _ishigami
from _ishigami import ishigami_np as _ishigami_np
from _ishigami import problem as _problem

import jaxsens
from jaxsens import _sobol

N = 2**13
# Ishigami on U(-pi, pi)^3: d/dx1 = cos x1 (1 + b x3^4), d/dx2 = a sin 2 x2, d/dx3 = 4 b x3^3 sin x1;
# E[cos^2] = E[sin^2] = 1/2, E[x^4] = pi^4 / 5, E[x^6] = pi^6 / 7, E[x^8] = pi^8 / 9
NU = np.array([0.5 * (1 + 2 * B * PI**4 / 5 + B**2 * PI**8 / 9), A**2 / 2, 8 * B**2 * PI**6 / 7, 0.0])
VAR = A**2 / 8 + B * PI**4 / 5 + B**2 * PI**8 / 18 + 0.5
ST = np.array([0.5576, 0.4424, 0.2437, 0.0])



@pytest.fixture(scope="module")
def result():
    return jaxsens.dgsm(_ishigami(), _problem(), n=N, key=0)


def test_ishigami_closed_form_bound_and_exact_zero(result):
    r = result
    assert r.nu.shape == r.total_order_bound.shape == r.stderr.shape == (1, 4)
    # Monte Carlo: within 4 standard errors of the closed form (float32 rounding is far below that)
    assert np.all(np.abs(r.nu[0, :3] - NU[:3]) <= 4 * r.stderr[0, :3]), (r.nu, NU, r.stderr)
    assert np.all(r.stderr[0, :3] < 0.03 * NU[:3])
    assert abs(r.variance[0] - VAR) < 0.05 * VAR
    np.testing.assert_array_equal(r.importance, r.nu)
    # the Sobol-Kucherenko bound holds: (2 pi)^2 / pi^2 * nu / V >= ST
    np.testing.assert_allclose(r.total_order_bound[0], 4 * r.nu[0] / r.variance[0], rtol=1e-12)
    assert np.all(r.total_order_bound[0, :3] >= ST[:3]), r.total_order_bound
    for field in ("nu", "total_order_bound", "stderr", "importance"):
        assert getattr(r, field)[0, 3] == 0.0, (field, getattr(r, field))
    assert r.ranking()[0][0] == "x2" and r.ranking()[-1][0] == "x4"
    assert "total_order_bound" in r.to_frame().columns


def test_equals_salib_finite_differences_on_the_same_rows(result):
    from SALib.analyze import dgsm as salib_dgsm

    problem = _problem()
    codes, p0, p1, p2 = _sobol._dist_arrays(_sobol.check_problem(problem, 4))
    x, _ = jax.jit(_sobol.sample_ab, static_argnums=2)(jax.random.fold_in(jax.random.key(0), 0),
                                                       jnp.arange(N, dtype=jnp.uint32), codes, p0, p1, p2)
    x = np.asarray(x, np.float64)
    assert np.all(np.abs(x) <= PI)
    h = 1e-6  # float64 forward differences: truncation error ~ h * |f''| / |f'|, far below the tolerance
    rows = np.repeat(x[:, None], 5, axis=1)  # SALib's finite_diff layout: base, then one perturbed row per input
    for i in range(4):
        rows[:, 1 + i, i] += h
    rows = rows.reshape(-1, 4)
    s = salib_dgsm.analyze(problem, rows, _ishigami_np(rows), num_resamples=10, seed=1)
    r = result
    # same definition (mean squared derivative; bound = (b - a)^2 / pi^2 * nu / var(base), ddof 0): jaxsens sums
    # N float32 squares of exact derivatives, SALib float64 finite differences
    np.testing.assert_allclose(r.nu[0], s["vi"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r.total_order_bound[0], s["dgsm"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r.variance[0], np.var(_ishigami_np(x)), rtol=1e-4)


def test_normal_inputs_bound_and_other_dists_refused():
    # y = 3 x0 + x1, x0 ~ N(1, 2^2), x1 ~ U(0, 1): for a linear term in a normal input the bound is tight
    # (sd^2 nu / V = ST); for the uniform input it is 1 / pi^2 * nu / V, above ST = (1 / 12) / V
    m = jaxsens.Model.from_function(lambda p, x: 3 * x[:1] + x[1:2], None, input_shape=(2,))
    problem = {"num_vars": 2, "names": ["a", "b"], "bounds": [[1.0, 2.0], [0.0, 1.0]], "dists": ["norm", "unif"]}
    r = jaxsens.dgsm(m, problem, n=4096, key=3)
    np.testing.assert_allclose(r.nu[0], [9.0, 1.0], rtol=1e-6)  # constant derivatives: exact
    var = 36.0 + 1 / 12
    st = np.array([36.0, 1 / 12]) / var
    np.testing.assert_allclose(r.total_order_bound[0], [36.0, 1 / PI**2] / r.variance[0], rtol=1e-5)
    assert r.total_order_bound[0, 1] > st[1] * var / r.variance[0]
    assert abs(r.variance[0] - var) < 0.1 * var
    triang = dict(problem, dists=["triang", "unif"], bounds=[[0.0, 1.0, 0.5], [0.0, 1.0]])
    with pytest.warns(UserWarning, match=r"no total-order bound for input\(s\) \['a'\]"):
        r = jaxsens.dgsm(m, triang, n=256, key=3)
    assert np.isnan(r.total_order_bound[0, 0]) and np.isfinite(r.total_order_bound[0, 1])
    np.testing.assert_allclose(r.nu[0], [9.0, 1.0], rtol=1e-6)


def test_bad_problem_names_dgsm():
    with pytest.raises(jaxsens.ArgumentError, match=r"dgsm\(\): problem\['num_vars'\] is 3"):
        jaxsens.dgsm(_ishigami(), {"num_vars": 3, "bounds": [[0, 1]] * 3}, n=16, key=0)
