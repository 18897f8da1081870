"""A data source as the problem of the global methods: each column resampled independently from its empirical
distribution (``jaxsens._sobol.empirical_marginals``). Closed forms from large uniform / normal samples, a direct
numpy computation (sorted columns, the documented quantile rule) plus SALib on the same rows, the bounded
subsample of a long data set, save / load, the CLI's DATA for a global method, and the refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _ishigami import PI
from _ishigami import ishigami as _ishigami
from _ishigami import ishigami_np as _ishigami_np

import jaxsens
from jaxsens import _morris, _sobol
from jaxsens._data import Source

ST = np.array([0.5576, 0.4424, 0.2437, 0.0])
S1 = np.array([0.3139, 0.4424, 0.0, 0.0])


def _linear():
    return jaxsens.Model.from_function(lambda p, x: 3 * x[:1] + x[1:2], None, input_shape=(3,))


def _uniforms(key: int, n: int, d: int) -> np.ndarray:
    """The documented draws of Sobol's A and B: ``uniform(fold_in(fold_in(key, 0), j), (2, d)) + 2**-24``."""
    k = jax.random.fold_in(jax.random.key(key), 0)
    one = lambda j: jax.random.uniform(jax.random.fold_in(k, j), (2, d), jnp.float32) + jnp.float32(2.0**-24)
    return np.asarray(jax.jit(jax.vmap(one))(jnp.arange(n, dtype=jnp.uint32)))


def _quantile_np(u: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Q_i(u) = sorted column i at min(floor(u m), m - 1), in float32 arithmetic as documented."""
    cols = np.sort(data.astype(np.float32), axis=0)
    m = cols.shape[0]
    idx = np.minimum(np.floor(u.astype(np.float32) * np.float32(m)).astype(np.int64), m - 1)
    return np.take_along_axis(cols, idx.reshape(-1, cols.shape[1]), axis=0).reshape(u.shape)


def test_a_large_uniform_sample_reproduces_ishigami_through_the_subsample():
    data = np.random.default_rng(0).uniform(-PI, PI, size=(150_000, 4)).astype(np.float32)
    r = jaxsens.sobol_indices(_ishigami(), data, n=2**13, key=1)
    assert r.problem["dists"] == ("empirical",) * 4 and r.problem["n_rows"] == 150_000
    assert r.problem["table_rows"] == _sobol.TABLE_ROWS  # a bounded subsample of the 150,000 rows
    np.testing.assert_array_equal(np.asarray(r.problem["bounds"]), np.stack([data.min(0), data.max(0)], 1))
    assert np.all(r.total_order_conf[0, :3] < 0.04)
    assert np.all(np.abs(r.total_order[0] - ST) <= 2 * r.total_order_conf[0] + 1e-4), (r.total_order, ST)
    assert np.all(np.abs(r.first_order[0] - S1) <= 2 * r.first_order_conf[0] + 1e-4), (r.first_order, S1)
    assert r.total_order[0, 3] == 0.0 and r.first_order[0, 3] == 0.0  # the ignored input: exactly 0


def test_the_subsample_is_uniform_bounded_and_independent_of_the_block_size():
    data = np.random.default_rng(1).normal(size=(70_001, 2)).astype(np.float32)
    p1, t1 = _sobol.empirical_marginals(data, 2)
    blocks = Source(lambda rows: (data[s:s + 999] for s in range(0, len(data), 999)), None, None, "blocks")
    p2, t2 = _sobol.empirical_marginals(blocks, 2)
    np.testing.assert_array_equal(t1, t2)
    assert t1.shape == (2**16, 2) and np.all(np.diff(t1, axis=0) >= 0)
    assert np.all(np.isin(t1, data))  # values of the data, no interpolation
    assert p1["n_rows"] == p2["n_rows"] == 70_001 and p1["source"] != p2["source"]
    # a uniform subsample: its quantiles are the data's within sampling error (sd sqrt(p (1 - p) / m) < 0.002)
    for q in (0.01, 0.25, 0.5, 0.75, 0.99):
        rank = np.searchsorted(np.sort(data[:, 0]), t1[int(q * len(t1)), 0]) / len(data)
        assert abs(rank - q) < 0.01, (q, rank)
    _, table = _sobol.empirical_marginals(data[:100], 2)  # small data: the table is the data, sorted
    np.testing.assert_array_equal(table, np.sort(data[:100], axis=0))


def test_equals_numpy_and_salib_on_the_same_rows():
    from _tol import assert_f32_close
    from SALib.analyze import sobol as salib_sobol

    data = np.random.default_rng(2).uniform(-PI, PI, size=(500, 4)).astype(np.float32)
    n = 2**12
    r = jaxsens.sobol_indices(_ishigami(), data, n=n, key=3, n_bootstrap=20)
    u = _uniforms(3, n, 4)
    x = _quantile_np(u, data)
    a, b = x[:, 0], x[:, 1]
    assert np.all(np.isin(a, data))
    rows = np.empty((n, 6, 4), np.float32)  # SALib's layout (calc_second_order=False): A, A_B^(i), B
    rows[:, 0], rows[:, -1] = a, b
    for i in range(4):
        rows[:, 1 + i] = a
        rows[:, 1 + i, i] = b[:, i]
    y = np.asarray(_ishigami()(rows.reshape(-1, 4)), np.float64)[:, 0]
    np.testing.assert_allclose(y, _ishigami_np(rows.reshape(-1, 4).astype(np.float64)), rtol=1e-5, atol=1e-5)
    problem = {"num_vars": 4, "names": ["x1", "x2", "x3", "x4"], "bounds": [[-PI, PI]] * 4}
    s = salib_sobol.analyze(problem, y, calc_second_order=False, num_resamples=20, seed=1)
    scale = float(np.mean((y - y.mean()) ** 2) / np.var(y) + 1.0)
    assert_f32_close(r.first_order[0], s["S1"], n_terms=n, magnitude=scale, probabilistic=True)
    assert_f32_close(r.total_order[0], s["ST"], n_terms=n, magnitude=scale, probabilistic=True)
    assert r.feature_names == ("x0", "x1", "x2", "x3")  # an array names no columns: the model's names


def test_normal_columns_give_the_linear_closed_form_in_sobol_and_dgsm_without_a_bound():
    rng = np.random.default_rng(3)
    data = np.stack([rng.normal(size=50_000), 2 * rng.normal(size=50_000), rng.normal(size=50_000)], 1)
    data = data.astype(np.float32)
    s = jaxsens.sobol_indices(_linear(), data, n=2**13, key=4)
    truth = np.array([9.0, 4.0, 0.0]) / 13.0  # y = 3 x0 + x1, Var x0 = 1, Var x1 = 4
    assert np.all(np.abs(s.total_order[0] - truth) <= 2 * s.total_order_conf[0] + 1e-4), s.total_order
    assert np.all(np.abs(s.first_order[0] - truth) <= 2 * s.first_order_conf[0] + 1e-4), s.first_order
    with pytest.warns(UserWarning, match="no total-order bound for empirical marginals"):
        d = jaxsens.dgsm(_linear(), data, n=1024, key=4)
    np.testing.assert_allclose(d.nu[0], [9.0, 1.0, 0.0], rtol=1e-6)  # constant derivatives: exact
    assert np.all(np.isnan(d.total_order_bound))
    np.testing.assert_allclose(d.variance[0], 9 * np.var(data[:, 0]) + np.var(data[:, 1]), rtol=0.1)


def test_morris_maps_the_grid_through_the_quantiles_as_salib_on_the_unit_grid():
    from SALib.analyze import morris as salib_morris

    data = np.random.default_rng(5).exponential(size=(300, 4)).astype(np.float32)
    r_traj = 64
    r = jaxsens.morris(_ishigami(), data, n_trajectories=r_traj, key=6)
    u, _, _ = jax.jit(_morris.trajectories, static_argnums=(2, 3))(
        jax.random.key(6), jnp.arange(r_traj, dtype=jnp.uint32), 4, 4)
    u = np.asarray(u).reshape(-1, 4)
    col = np.sort(data, axis=0)
    level = np.round(u * 3).astype(np.int64)  # grid level l -> sorted column at min(floor(l m / 3), m - 1)
    x = np.take_along_axis(col, np.minimum(level * 300 // 3, 299), axis=0)
    np.testing.assert_array_equal(x[u == 0], np.broadcast_to(col[0], u.shape)[u == 0])  # level 0: the minimum
    np.testing.assert_array_equal(x[u == 1], np.broadcast_to(col[-1], u.shape)[u == 1])  # level 1: the maximum
    y = np.asarray(_ishigami()(x), np.float64)[:, 0]
    unit = {"num_vars": 4, "names": ["x1", "x2", "x3", "x4"], "bounds": [[0, 1]] * 4}
    s = salib_morris.analyze(unit, u.astype(np.float64), y, num_levels=4, num_resamples=10, seed=1)
    scale = np.abs(y).max() / (2 / 3)
    np.testing.assert_allclose(r.mu_star[0], s["mu_star"], atol=1e-5 * scale)
    np.testing.assert_allclose(r.mu[0], s["mu"], atol=1e-5 * scale)
    assert r.mu_star[0, 3] == 0.0


def test_csv_header_names_the_inputs_and_the_problem_survives_save_load(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.uniform(size=(200, 3)), columns=["speed", "load", "noise"])
    frame["target"] = 0.0
    frame.to_csv(tmp_path / "d.csv", index=False)
    spec = jaxsens.open_data(tmp_path / "d.csv", exclude=["target"])
    r = jaxsens.sobol_indices(_linear(), spec, n=512, n_bootstrap=10)
    assert r.feature_names == ("speed", "load", "noise") == r.problem["names"]
    assert r.total_order[0, 2] == 0.0
    r.save(tmp_path / "r.json")
    back = jaxsens.load_result(tmp_path / "r.json")
    assert back.problem == r.problem and back.problem["dists"] == ("empirical",) * 3
    np.testing.assert_array_equal(back.total_order, r.total_order)


def test_bad_data_is_refused_naming_what_was_expected():
    with pytest.raises(jaxsens.DataError, match=r"empirical marginals \(a data source of 3 columns.*\[n_samples, 3\]"):
        jaxsens.sobol_indices(_linear(), np.zeros((10, 2), np.float32), n=16)
    bad = np.zeros((10, 3), np.float32)
    bad[4, 1] = np.nan
    with pytest.raises(jaxsens.DataError, match=r"dgsm\(\).*non-finite value \(nan\) at row 4, column 'x1'"):
        jaxsens.dgsm(_linear(), bad, n=16)
    with pytest.raises(jaxsens.ArgumentTypeError, match=r"morris\(\).*SALib's problem dict.*or a data source"):
        jaxsens.morris(_linear(), 2.5, n_trajectories=4)


def test_cli_data_for_a_global_method_is_the_empirical_marginals(tmp_path):
    from jaxsens import examples
    from jaxsens.cli import main

    out = tmp_path / "out"
    code = main(["importance", examples.default_model_path(), examples.default_data_path(), "--method", "sobol",
                 "--n", "64", "--n-bootstrap", "2", "--seed", "5", "--no-plot", "--out", str(out), "--quiet"])
    assert code == 0
    saved = jaxsens.load_result(out / "importance.json")
    model = jaxsens.load_model(examples.default_model_path())
    api = jaxsens.sobol_indices(model, examples.default_data_path(), n=64, n_bootstrap=2, key=5)
    np.testing.assert_array_equal(saved.total_order, api.total_order)
    np.testing.assert_array_equal(saved.first_order_conf, api.first_order_conf)
    assert saved.problem["dists"] == ("empirical",) * 82 and saved.problem == api.problem
