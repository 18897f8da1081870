"""Sobol indices: closed forms (Ishigami, Sobol's G function), an ignored input, SALib 1.6 on the same samples,
batch-size invariance and the refusals of bad problems.

Monte Carlo estimates are checked against the truth within twice their 95% half-width (about 4 standard errors:
a correct estimator fails with probability ~1e-4 per index), and the half-widths are checked to be small, so
the checks have teeth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsens
from jaxsens import _sobol

ISHIGAMI_A, ISHIGAMI_B = 7.0, 0.1
PI_BOUNDS = [[-np.pi, np.pi]] * 3
G_A = np.array([0.0, 1.0, 4.5, 9.0, 99.0])


def ishigami():
    def f(params, x):
        a, b = params
        return jnp.sin(x[:1]) + a * jnp.sin(x[1:2]) ** 2 + b * x[2:3] ** 4 * jnp.sin(x[:1])

    return jaxsens.Model.from_function(f, (ISHIGAMI_A, ISHIGAMI_B), input_shape=(3,))


def g_function(n_ignored: int = 0):
    """Sobol's G function of 5 inputs, plus ``n_ignored`` inputs the model never reads."""

    def f(a, x):
        return jnp.prod((jnp.abs(4 * x[:5] - 2) + a) / (1 + a), keepdims=True)

    return jaxsens.Model.from_function(f, jnp.asarray(G_A, jnp.float32), input_shape=(5 + n_ignored,))


def ishigami_truth():
    a, b = ISHIGAMI_A, ISHIGAMI_B
    v1 = 0.5 * (1 + b * np.pi**4 / 5) ** 2
    v2 = a**2 / 8
    v13 = b**2 * np.pi**8 * (1 / 18 - 1 / 50)
    v = v1 + v2 + v13
    return np.array([v1, v2, 0]) / v, np.array([v1 + v13, v2, v13]) / v


def g_truth():
    vi = 1 / (3 * (1 + G_A) ** 2)
    v = np.prod(1 + vi) - 1
    return vi / v, vi * np.array([np.prod(np.delete(1 + vi, i)) for i in range(5)]) / v


def _problem(bounds, names=None, dists=None):
    p = {"num_vars": len(bounds), "names": names or [f"x{i}" for i in range(len(bounds))], "bounds": bounds}
    if dists is not None:
        p["dists"] = dists
    return p


@pytest.fixture(scope="module")
def ishigami_result():
    return jaxsens.sobol_indices(ishigami(), _problem(PI_BOUNDS), n=2**13, key=0)


def test_ishigami_matches_the_closed_form(ishigami_result):
    r = ishigami_result
    s1, st = ishigami_truth()
    np.testing.assert_allclose(s1, [0.3139, 0.4424, 0.0], atol=5e-5)  # the figures
    np.testing.assert_allclose(st, [0.5576, 0.4424, 0.2437], atol=5e-5)
    assert r.first_order.shape == r.total_order.shape == r.first_order_conf.shape == (1, 3)
    assert np.all(r.first_order_conf < 0.035) and np.all(r.total_order_conf < 0.035)
    assert np.all(np.abs(r.first_order[0] - s1) <= 2 * r.first_order_conf[0]), (r.first_order, r.first_order_conf)
    assert np.all(np.abs(r.total_order[0] - st) <= 2 * r.total_order_conf[0]), (r.total_order, r.total_order_conf)
    np.testing.assert_array_equal(r.importance, r.total_order)
    np.testing.assert_allclose(r.stderr, r.total_order_conf / 1.959963984540054, rtol=1e-12)
    assert r.n_samples == 2**13 and r.feature_names == ("x0", "x1", "x2") and r.method == "sobol"


def test_g_function_matches_the_closed_form_and_an_ignored_input_gets_exactly_zero():
    r = jaxsens.sobol_indices(g_function(n_ignored=1), _problem([[0, 1]] * 6), n=2**13, key=3)
    s1, st = g_truth()
    assert np.all(np.abs(r.first_order[0, :5] - s1) <= 2 * r.first_order_conf[0, :5] + 1e-6), (r.first_order, s1)
    assert np.all(np.abs(r.total_order[0, :5] - st) <= 2 * r.total_order_conf[0, :5] + 1e-6), (r.total_order, st)
    assert r.total_order_conf[0, 0] < 0.05
    for field in ("first_order", "total_order", "first_order_conf", "total_order_conf", "importance", "stderr"):
        assert getattr(r, field)[0, 5] == 0.0, (field, getattr(r, field))
    assert r.ranking()[-1][0] == "x5"


def _salib_layout(model, problem, n, key):
    """The rows jaxsens evaluated, in SALib's Saltelli layout (calc_second_order=False): per row j,
    ``A_j, A_B^(1)_j .. A_B^(D)_j, B_j``; and the model's outputs on them."""
    codes, p0, p1, p2 = _sobol._dist_arrays(_sobol.check_problem(problem, problem["num_vars"]))
    a, b = jax.jit(_sobol.sample_ab, static_argnums=2)(jax.random.fold_in(jax.random.key(key), 0),
                                                       jnp.arange(n, dtype=jnp.uint32), codes, p0, p1, p2)
    a, b = np.asarray(a), np.asarray(b)
    d = a.shape[1]
    rows = np.empty((n, d + 2, d), np.float32)
    rows[:, 0], rows[:, -1] = a, b
    for i in range(d):
        rows[:, 1 + i] = a
        rows[:, 1 + i, i] = b[:, i]
    rows = rows.reshape(-1, d)
    return rows, np.asarray(model(rows), np.float64)[:, 0]


def test_equals_salib_on_the_same_samples(ishigami_result):
    from SALib.analyze import sobol as salib_sobol

    problem = _problem(PI_BOUNDS)
    rows, y = _salib_layout(ishigami(), problem, 2**13, 0)
    # the layout is right: the A rows are inside the problem's box and the B rows differ from them
    assert np.all(np.abs(rows) <= np.pi) and not np.array_equal(rows[0::5], rows[4::5])
    s = salib_sobol.analyze(problem, y, calc_second_order=False, num_resamples=200, seed=1)
    r = ishigami_result
    # the same estimators on the same evaluations: equal to float32 rounding of the summed terms
    np.testing.assert_allclose(r.first_order[0], s["S1"], atol=2e-5)
    np.testing.assert_allclose(r.total_order[0], s["ST"], atol=2e-5)
    # both bootstraps estimate the same spread (Poisson weights vs resampled rows)
    np.testing.assert_allclose(r.first_order_conf[0], s["S1_conf"], rtol=0.5)
    np.testing.assert_allclose(r.total_order_conf[0], s["ST_conf"], rtol=0.5)


def test_distributions_follow_salib_meaning_of_bounds():
    from SALib.util import scale_samples

    problem = _problem([[1, 3], [2, 0.5], [1, 3, 0.25], [0.1, 0.3]], dists=["unif", "norm", "triang", "lognorm"])
    checked = _sobol.check_problem(problem, 4)
    codes, p0, p1, p2 = _sobol._dist_arrays(checked)
    u = np.random.default_rng(0).uniform(0.01, 0.99, size=(200, 4)).astype(np.float32)
    ours = np.asarray(_sobol._inverse_cdf(jnp.asarray(u), codes, p0, p1, p2), np.float64)
    theirs = scale_samples(u.astype(np.float64), problem)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-5)


def test_batch_size_and_outputs_do_not_change_the_result():
    two = jaxsens.Model.from_function(lambda p, x: jnp.stack([x[0] * x[1], x[2] + x[0] ** 2]), None,
                                      input_shape=(3,))
    problem = _problem([[0, 1], [-1, 1], [0, 2]])
    a = jaxsens.sobol_indices(two, problem, n=1000, batch_size=64, n_bootstrap=20)
    b = jaxsens.sobol_indices(two, problem, n=1000, batch_size=300, n_bootstrap=20)
    c = jaxsens.sobol_indices(two, problem, n=1000, batch_size=128, n_bootstrap=20, outputs=[1])
    for field in ("first_order", "total_order", "first_order_conf", "total_order_conf"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=1e-5, err_msg=field)
        np.testing.assert_allclose(getattr(a, field)[1:], getattr(c, field), atol=1e-5, err_msg=field)
    assert a.output_names == ("y0", "y1") and c.output_names == ("y1",)
    assert a.total_order[1, 1] == 0.0  # output 1 ignores x1


BAD = [
    (3, "a number", "SALib's problem dict .* or a data source"),
    (_problem([[0, 1]] * 3, dists=["unif", "empirical", "unif"]), None, r"'empirical': empirical marginals come"),
    ({"num_vars": 2, "bounds": [[0, 1]] * 2}, None, r"num_vars'\] is 2 but the model has 3"),
    ({"bounds": [[0, 1]] * 3}, None, r"needs \['num_vars'\]"),
    (_problem([[0, 1], [1, 0], [0, 1]]), None, r"bounds'\]\[1\] \('x1', unif\) must be \[lower, upper\]"),
    (_problem([[0, 1], [0, 1]] + [[0]]), None, r"bounds'\]\[2\].*must be 2 finite numbers"),
    (_problem([[0, 1], [0, np.nan], [0, 1]]), None, "finite"),
    (_problem([[0, 1]] * 3, dists=["unif", "beta", "unif"]), None, r"dists'\]\[1\] \('x1'\) is 'beta'"),
    (_problem([[0, 1], [0, -1], [0, 1]], dists=["unif", "norm", "unif"]), None, "standard deviation > 0"),
    (_problem([[0, 1], [0, 2, 1.5], [0, 1]], dists=["unif", "triang", "unif"]), None, r"\[0, 1\)"),
    (_problem([[0, 1], [2, 0.5], [0, 1]], dists=["unif", "triang", "unif"]), None, "must be 3 finite numbers"),
    (_problem([[0, 1]] * 3, names=["a", "a", "b"]), None, "repeats a name"),
    ({**_problem([[0, 1]] * 3), "groups": ["g", "g", "h"]}, None, "groups"),
    ({**_problem([[0, 1]] * 3), "bound": 1}, None, "unknown key"),
]


@pytest.mark.parametrize(("problem", "note", "match"), BAD, ids=[m for _, _, m in BAD])
def test_bad_problems_are_refused_naming_the_entry(problem, note, match):
    del note
    with pytest.raises((jaxsens.ArgumentError, jaxsens.ArgumentTypeError), match=match):
        jaxsens.sobol_indices(ishigami(), problem, n=64)


def test_a_list_of_bounds_is_read_as_data_and_refused_naming_both_readings():
    with pytest.raises(jaxsens.DataError, match=r"empirical marginals .* SALib's problem dict is a dict.*\[3, 2\]"):
        jaxsens.sobol_indices(ishigami(), [[0, 1]] * 3, n=64)


def test_no_problem_is_the_unit_cube_with_a_warning_and_save_load_keeps_the_problem(tmp_path):
    with pytest.warns(UserWarning, match=r"U\(0, 1\)"):
        r = jaxsens.sobol_indices(ishigami(), n=256, n_bootstrap=10)
    assert r.problem["bounds"] == ((0.0, 1.0),) * 3
    r.save(tmp_path / "s.json")
    back = jaxsens.load_result(tmp_path / "s.json")
    assert back.problem == r.problem and np.array_equal(back.first_order_conf, r.first_order_conf)


def test_non_finite_outputs_are_refused():
    m = jaxsens.Model.from_function(lambda p, x: jnp.log(x[:1]) + x[1:2], None, input_shape=(2,))
    with pytest.raises(jaxsens.DataError, match="NaN or Inf at"):
        jaxsens.sobol_indices(m, _problem([[0.5, 2], [-1, 1]], dists=["norm", "unif"]), n=2000, n_bootstrap=10)


# ------------------------------------------------------------------------------------------- second order
def _salib_layout2(model, problem, n, key):
    """SALib's Saltelli layout with calc_second_order=True from the rows jaxsens drew: per row j,
    ``A_j, A_B^(1)_j .. A_B^(D)_j, B_A^(1)_j .. B_A^(D)_j, B_j``; and the model's outputs on them."""
    codes, p0, p1, p2 = _sobol._dist_arrays(_sobol.check_problem(problem, problem["num_vars"]))
    a, b = jax.jit(_sobol.sample_ab, static_argnums=2)(jax.random.fold_in(jax.random.key(key), 0),
                                                       jnp.arange(n, dtype=jnp.uint32), codes, p0, p1, p2)
    a, b = np.asarray(a), np.asarray(b)
    d = a.shape[1]
    rows = np.empty((n, 2 * d + 2, d), np.float32)
    rows[:, 0], rows[:, -1] = a, b
    for i in range(d):
        rows[:, 1 + i], rows[:, 1 + d + i] = a, b
        rows[:, 1 + i, i], rows[:, 1 + d + i, i] = b[:, i], a[:, i]
    rows = rows.reshape(-1, d)
    return rows, np.asarray(model(rows), np.float64)[:, 0]


@pytest.fixture(scope="module")
def second_order_result():
    from _ishigami import ishigami as ishigami4
    from _ishigami import problem as problem4

    return jaxsens.sobol_indices(ishigami4(), problem4(), n=2**13, key=2, second_order=True)


def test_second_order_ishigami_closed_form(second_order_result):
    r = second_order_result
    s1, st = ishigami_truth()
    v = ISHIGAMI_A**2 / 8 + 0.5 * (1 + ISHIGAMI_B * np.pi**4 / 5) ** 2 + ISHIGAMI_B**2 * np.pi**8 * (1 / 18 - 1 / 50)
    s13 = ISHIGAMI_B**2 * np.pi**8 * (1 / 18 - 1 / 50) / v  # V_13 = b^2 pi^8 (1/18 - 1/50): the only interaction
    np.testing.assert_allclose(s13, st[0] - s1[0], rtol=1e-12)  # = ST_1 - S_1 = ST_3 - S_3 (x3 acts only with x1)
    np.testing.assert_allclose(s13, 0.2437, atol=5e-5)
    truth = np.zeros((4, 4))
    truth[0, 2] = s13
    assert r.second_order.shape == r.second_order_conf.shape == (1, 4, 4)
    upper = np.triu(np.ones((4, 4), bool), k=1)
    assert np.all(np.isnan(r.second_order[0][~upper])) and np.all(np.isnan(r.second_order_conf[0][~upper]))
    s2, conf = r.second_order[0][upper], r.second_order_conf[0][upper]
    assert np.all(conf > 0) and np.all(conf < 0.08), conf
    assert np.all(np.abs(s2 - truth[upper]) <= 2 * conf), (r.second_order, conf)  # S13 = 0.2437, the rest 0
    # first and total order unchanged in meaning (centred by the mean of all n (2D + 2) evaluations)
    assert np.all(np.abs(r.first_order[0, :3] - s1) <= 2 * r.first_order_conf[0, :3])
    assert np.all(np.abs(r.total_order[0, :3] - st) <= 2 * r.total_order_conf[0, :3])
    assert r.total_order[0, 3] == 0.0 and r.first_order[0, 3] == 0.0
    top = r.interactions(top=2)
    assert (top[0][0], top[0][1]) == ("x1", "x3") and top[0][2] == r.second_order[0, 0, 2]
    assert top[0][3] == r.second_order_conf[0, 0, 2] and len(r.interactions(top=None)) == 6


def test_second_order_equals_salib_on_the_same_samples(second_order_result):
    from _ishigami import ishigami as ishigami4
    from _ishigami import problem as problem4
    from _tol import assert_f32_close
    from SALib.analyze import sobol as salib_sobol

    n = 2**13
    rows, y = _salib_layout2(ishigami4(), problem4(), n, 2)
    assert np.all(np.abs(rows) <= np.pi) and not np.array_equal(rows[0::10], rows[9::10])
    s = salib_sobol.analyze(problem4(), y, calc_second_order=True, num_resamples=200, seed=1)
    r = second_order_result
    # the same estimators on the same evaluations: sums of n float32 products of centred outputs, whose size in
    # units of the variance is about mean(y^2) / var(y)
    scale = float(np.mean((y - y.mean()) ** 2) / np.var(y) + 1.0)
    for ours, theirs in ((r.first_order[0], s["S1"]), (r.total_order[0], s["ST"]), (r.second_order[0], s["S2"])):
        assert_f32_close(ours, theirs, n_terms=n, magnitude=scale, probabilistic=True)
    # both bootstraps estimate the same spread (Poisson weights vs resampled rows)
    upper = np.triu(np.ones((4, 4), bool), k=1)
    np.testing.assert_allclose(r.second_order_conf[0][upper], s["S2_conf"][upper], rtol=0.5)


def test_second_order_is_absent_unless_asked_and_survives_save_load(tmp_path, second_order_result):
    r = jaxsens.sobol_indices(ishigami(), _problem(PI_BOUNDS), n=256, n_bootstrap=10)
    assert r.second_order is None and r.second_order_conf is None
    with pytest.raises(jaxsens.ArgumentError, match=r"no second-order indices: run sobol_indices\(\.\.\., "
                                                   "second_order=True"):
        r.interactions()
    second_order_result.save(tmp_path / "s2.json")
    back = jaxsens.load_result(tmp_path / "s2.json")
    np.testing.assert_array_equal(back.second_order, second_order_result.second_order)
    np.testing.assert_array_equal(back.second_order_conf, second_order_result.second_order_conf)
    assert back.options["second_order"] is True


def test_second_order_an_ignored_first_input_gets_exactly_zero_and_outputs_are_kept_apart():
    two = jaxsens.Model.from_function(lambda p, x: jnp.stack([x[1] * x[2], x[2] + x[1] ** 2]), None,
                                      input_shape=(3,))
    r = jaxsens.sobol_indices(two, _problem([[0, 1], [-1, 1], [0, 2]]), n=2000, n_bootstrap=20, second_order=True)
    assert r.second_order.shape == (2, 3, 3)
    for field in ("second_order", "second_order_conf"):
        np.testing.assert_array_equal(getattr(r, field)[:, 0, 1:], 0.0)  # x0 is never read
    assert abs(r.second_order[0, 1, 2]) > 0.1 and r.second_order[1, 1, 2] < 2 * r.second_order_conf[1, 1, 2]
    with pytest.raises(jaxsens.ArgumentError, match=r"2 outputs .* pick one with output="):
        r.interactions()
    assert r.interactions(output="y0", top=1)[0][:2] == ("x1", "x2")
    fig = r.plot(output=0)
    assert len(fig.axes) == 3  # S1 / ST bars, the S2 heatmap and its colour bar
    shown = fig.axes[1].images[0].get_array()
    order = np.argsort(-r.total_order[0])
    np.testing.assert_array_equal(shown[0, 1], r.second_order[0][min(order[0], order[1]), max(order[0], order[1])])


# ------------------------------------------------------------------------------------- the plot and the CLI
def _bar_values(ax):
    """``[(widths, centres, half-widths)]`` per bar group of ``ax``, read back from the drawn artists."""
    out = []
    for c in ax.containers:
        if not hasattr(c, "patches"):
            continue
        widths = np.array([p.get_width() for p in c.patches])
        centres = np.array([p.get_y() + p.get_height() / 2 for p in c.patches])
        segs = c.errorbar.lines[2][0].get_segments()
        half = np.array([(s[1][0] - s[0][0]) / 2 for s in segs])
        mids = np.array([(s[1][0] + s[0][0]) / 2 for s in segs])
        np.testing.assert_allclose(mids, widths, rtol=1e-6, atol=1e-12)  # the interval is centred on the bar
        out.append((widths, centres, half))
    return out


def test_plot_draws_s1_and_st_side_by_side_with_their_intervals(tmp_path):
    r = jaxsens.sobol_indices(ishigami(), _problem(PI_BOUNDS), n=2048, n_bootstrap=20, key=3)
    fig = r.plot(top=2, path=tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0
    (ax,) = fig.axes
    (s1, s1_y, s1_half), (st, st_y, st_half) = _bar_values(ax)
    order = np.argsort(-r.total_order[0])[:2]  # the top 2 by total order, largest on top
    np.testing.assert_allclose(st, r.total_order[0, order], rtol=1e-6)
    np.testing.assert_allclose(s1, r.first_order[0, order], rtol=1e-6)
    np.testing.assert_allclose(st_half, r.total_order_conf[0, order], rtol=1e-6)
    np.testing.assert_allclose(s1_half, r.first_order_conf[0, order], rtol=1e-6)
    assert np.all(st_half > 0) and st_y[0] > st_y[1]  # side by side: S1 just above ST of the same feature
    np.testing.assert_allclose(s1_y - st_y, 0.38, rtol=1e-6)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [r.feature_names[j] for j in order]
    two = jaxsens.Model.from_function(lambda p, x: jnp.stack([x[0] * x[1], x[2] + x[0] ** 2]), None,
                                      input_shape=(3,))
    r2 = jaxsens.sobol_indices(two, _problem([[0, 1], [-1, 1], [0, 2]]), n=512, n_bootstrap=10)
    assert len(r2.plot().axes) == 2  # one panel per output: indices of two outputs are not averaged
    (ax1,) = r2.plot(output="y1").axes
    np.testing.assert_allclose(sorted(_bar_values(ax1)[1][0]), sorted(r2.total_order[1]), rtol=1e-6)


def _cli(tmp_path, *extra):
    from jaxsens import examples
    from jaxsens.cli import main

    out = tmp_path / "out"
    code = main(["importance", examples.default_model_path(), *extra, "--out", str(out), "--quiet"])
    return code, out


def test_cli_bounds_equals_the_api_call(tmp_path):
    from jaxsens import examples

    d = 82
    rng = np.random.default_rng(7)
    lo = np.round(rng.uniform(-2, 0, d), 3)
    hi = np.round(lo + rng.uniform(0.5, 2, d), 3)
    bounds = ",".join(f"{a}:{b}" for a, b in zip(lo, hi))
    code, out = _cli(tmp_path, "--method", "sobol", f"--bounds={bounds}", "--n", "64", "--n-bootstrap", "2",
                     "--seed", "5", "--no-plot")
    assert code == 0
    saved = jaxsens.load_result(out / "importance.json")
    model = jaxsens.load_model(examples.default_model_path())
    problem = {"num_vars": d, "names": list(model.feature_names), "bounds": np.stack([lo, hi], 1).tolist()}
    api = jaxsens.sobol_indices(model, problem, n=64, n_bootstrap=2, key=5)
    for field in ("first_order", "total_order", "first_order_conf", "total_order_conf"):
        np.testing.assert_array_equal(getattr(saved, field), getattr(api, field), err_msg=field)
    assert saved.problem["bounds"] == tuple(zip(lo.tolist(), hi.tolist()))
    assert saved.feature_names == model.feature_names


def test_cli_problem_file_equals_the_api_call_and_a_bad_file_is_named(tmp_path, capsys):
    import json

    from jaxsens import examples

    d = 82
    model = jaxsens.load_model(examples.default_model_path())
    problem = {"num_vars": d, "names": [f"p{i}" for i in range(d)], "bounds": [[0, 1]] * (d - 1) + [[0.5, 0.2]],
               "dists": ["unif"] * (d - 1) + ["norm"]}
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(problem))
    code, out = _cli(tmp_path, "--method", "sobol", "--problem", str(path), "--n", "64", "--n-bootstrap", "2")
    assert code == 0 and (out / "importance.png").exists()
    saved = jaxsens.load_result(out / "importance.json")
    api = jaxsens.sobol_indices(model, problem, n=64, n_bootstrap=2)
    np.testing.assert_array_equal(saved.total_order, api.total_order)
    np.testing.assert_array_equal(saved.first_order_conf, api.first_order_conf)
    assert saved.feature_names == tuple(problem["names"])
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    for text, match in (("{not json", "not a readable JSON"), (json.dumps({**problem, "num_vars": 3}), "num_vars")):
        bad.write_text(text)
        assert _cli(tmp_path / "b", "--method", "sobol", "--problem", str(bad), "--n", "8")[0] == 2
        err = capsys.readouterr().err
        assert str(bad) in err and match in err
    assert _cli(tmp_path / "m", "--method", "sobol", "--problem", str(tmp_path / "nope.json"))[0] == 2
    assert "nope.json" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "match"), [
    (["--method", "jacobian"], "--method jacobian needs DATA"),
    (["--method", "jacobian", "--bounds=0:1"], "--bounds describes the inputs of the global methods"),
    (["DATA", "--method", "jacobian", "--problem", "p.json"], "--problem describes the inputs of the global"),
    (["--method", "sobol", "--bounds=0:1", "--problem", "p.json"], "pass one of them"),
    (["DATA", "--method", "sobol", "--bounds=0:1"], "drop DATA"),
    (["--method", "sobol", "--bounds=0:1,1:2"], "gives 2 ranges; the model has 82"),
    (["--method", "sobol", "--bounds=" + ",".join(["0:1"] * 81 + ["2:1"])], r"item 81 \('2:1'\)"),
    (["--method", "sobol", "--bounds=" + ",".join(["0:1"] * 81 + ["x"])], r"item 81 \('x'\) must be lo:hi"),
])
def test_cli_global_argument_rules(argv, match, tmp_path, capsys):
    import re

    from jaxsens import examples

    argv = [examples.default_data_path() if a == "DATA" else a for a in argv]
    assert _cli(tmp_path, *argv)[0] == 2
    assert re.search(match, capsys.readouterr().err)
