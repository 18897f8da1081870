"""``jaxsens.morris``: exact elementary effects on a linear model, exact zeros, the trajectory design, and SALib's
``morris.analyze`` on the same trajectories."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _ishigami import PI
from _ishigami import ishigami as _ishigami
from _ishigami import ishigami_np as _ishigami_np
from _ishigami import problem as _problem

import jaxsens
from jaxsens import _morris


def test_trajectory_design():
    u, order, step = jax.jit(_morris.trajectories, static_argnums=(2, 3))(
        jax.random.key(5), jnp.arange(200, dtype=jnp.uint32), 4, 4)
    u, order, step = np.asarray(u), np.asarray(order), np.asarray(step)
    assert u.shape == (200, 5, 4)
    levels = u * 3
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-6)  # every point on the 4-level grid
    assert levels.min() > -1e-6 and levels.max() < 3 + 1e-6
    diffs = np.diff(u, axis=1)  # one input moves per step, by +-2/3, in the drawn order
    for t in range(200):
        for s in range(4):
            nz = np.flatnonzero(diffs[t, s])
            assert nz.tolist() == [order[t, s]]
            np.testing.assert_allclose(diffs[t, s, nz[0]], step[t, nz[0]], rtol=1e-6)
            assert abs(abs(step[t, nz[0]]) - 2 / 3) < 1e-6
    # start levels uniform over the 4 levels (200 * 4 draws: each level ~ 200 +- 3 sd)
    counts = np.bincount(np.round(levels[:, 0]).astype(int).ravel(), minlength=4)
    assert np.all(np.abs(counts - 200) < 3 * np.sqrt(200 * 0.75)), counts


def test_linear_exact_and_ignored_input():
    m = jaxsens.Model.from_function(lambda p, x: jnp.stack([3 * x[0] - x[1], x[1] * x[2]]), None,
                                    input_shape=(4,))
    problem = {"num_vars": 4, "names": ["a", "b", "c", "d"], "bounds": [[0, 2], [0, 1], [-1, 1], [5, 6]]}
    r = jaxsens.morris(m, problem, n_trajectories=50, key=1)
    assert r.mu.shape == r.mu_star.shape == r.sigma.shape == r.stderr.shape == (2, 4)
    # output 0: EE per unit of the unit-scaled input = slope * width; no interaction: sigma 0
    np.testing.assert_allclose(r.mu[0], [6.0, -1.0, 0.0, 0.0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.mu_star[0], [6.0, 1.0, 0.0, 0.0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r.sigma[0], 0.0, atol=1e-4)
    # output 1 = b * c: EE_b = c * 1 (c on the grid {-1, -1/3, 1/3, 1}), EE_c = 2 * b: interactions, sigma > 0
    assert np.all(r.sigma[1, 1:3] > 0.1)
    for field in ("mu", "mu_star", "sigma", "importance", "stderr"):
        assert getattr(r, field)[0, 3] == 0.0 and getattr(r, field)[1, 3] == 0.0, field
        assert getattr(r, field)[1, 0] == 0.0, field
    np.testing.assert_array_equal(r.importance, r.mu_star)


def test_equals_salib_on_the_same_trajectories():
    from SALib.analyze import morris as salib_morris

    r_traj = 256
    r = jaxsens.morris(_ishigami(), _problem(), n_trajectories=r_traj, key=7)
    u, _, _ = jax.jit(_morris.trajectories, static_argnums=(2, 3))(
        jax.random.key(7), jnp.arange(r_traj, dtype=jnp.uint32), 4, 4)
    x = (-PI + 2 * PI * np.asarray(u, np.float64)).reshape(-1, 4)
    s = salib_morris.analyze(_problem(), x, _ishigami_np(x), num_levels=4, num_resamples=10, seed=1)
    # the same definitions on the same points: jaxsens sums r float32 effects of magnitude ~ |f| / delta
    scale = np.abs(_ishigami_np(x)).max() / (2 / 3)
    np.testing.assert_allclose(r.mu[0], s["mu"], atol=1e-5 * scale)
    np.testing.assert_allclose(r.mu_star[0], s["mu_star"], atol=1e-5 * scale)
    np.testing.assert_allclose(r.sigma[0], s["sigma"], atol=1e-5 * scale)
    assert r.mu_star[0, 3] == 0.0 and r.ranking()[-1][0] == "x4"


def test_refusals_name_the_problem():
    m = _ishigami()
    with pytest.raises(jaxsens.ArgumentError, match="n_levels must be even.*got 5"):
        jaxsens.morris(m, _problem(), n_trajectories=4, n_levels=5, key=0)
    with pytest.raises(jaxsens.ArgumentError, match=r"only uniform inputs.*\('x1', 'norm'\)"):
        jaxsens.morris(m, dict(_problem(), dists=["norm", "unif", "unif", "unif"],
                               bounds=[[0, 1]] * 4), n_trajectories=4, key=0)


def test_plot_draws_the_mu_star_sigma_scatter(tmp_path):
    m = jaxsens.Model.from_function(lambda p, x: jnp.stack([3 * x[0] + x[1] * x[2], x[2] ** 2]), None,
                                    input_shape=(4,))
    problem = {"num_vars": 4, "names": ["a", "b", "c", "d"], "bounds": [[0, 1]] * 4}
    r = jaxsens.morris(m, problem, n_trajectories=40, key=2)
    fig = r.plot(path=tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0
    assert len(fig.axes) == 4  # per output (effects of two outputs are not averaged): mu* bars, the scatter
    for o, ax in enumerate(fig.axes[1::2]):
        points = ax.collections[0].get_offsets()
        np.testing.assert_allclose(points[:, 0], r.mu_star[o], rtol=1e-6)
        np.testing.assert_allclose(points[:, 1], r.sigma[o], rtol=1e-6)
        labels = {t.get_text(): t.xy for t in ax.texts}
        assert set(labels) == {"a", "b", "c", "d"}
        np.testing.assert_allclose(labels["a"], (r.mu_star[o, 0], r.sigma[o, 0]), rtol=1e-6)
        (line,) = ax.lines  # the reference sigma = mu*
        np.testing.assert_array_equal(line.get_xdata(), line.get_ydata())
    bars, ax = r.plot(output=1, top=1).axes
    assert [t.get_text() for t in ax.texts] == ["c"]  # the top input of output 1 (x2 ** 2), the only label
    assert [t.get_text() for t in bars.get_yticklabels()] == ["c"]
    np.testing.assert_allclose(bars.patches[0].get_width(), r.mu_star[1, 2], rtol=1e-6)


def test_inputs_a_keras_softmax_mlp_ignores_get_exactly_zero(tmp_path):
    """A real Keras MLP whose first-layer weights from input 2 are exactly 0: before exact_difference, XLA's fused
    multiply-add in the softmax's last product left |EE| ~ 1e-8 for that input."""
    import keras

    rng = np.random.default_rng(3)
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                            keras.layers.Dense(3, activation="softmax")])
    weights = [rng.normal(size=tuple(w.shape)).astype(np.float32) for w in net.weights]
    weights[0][2] = 0.0
    net.set_weights(weights)
    net.save(tmp_path / "mlp.keras")
    model = jaxsens.load_model(str(tmp_path / "mlp.keras"))
    problem = {"num_vars": 5, "names": list("abcde"), "bounds": [[-2, 2]] * 5}
    r = jaxsens.morris(model, problem, n_trajectories=64, key=0, batch_size=16)
    for field in ("mu", "mu_star", "sigma", "stderr"):
        np.testing.assert_array_equal(getattr(r, field)[:, 2], 0.0, err_msg=field)
    assert np.all(r.mu_star[:, [0, 1, 3, 4]] > 1e-3)
    s = jaxsens.sobol_indices(model, problem, n=256, n_bootstrap=10, batch_size=16, second_order=True)
    for field in ("first_order", "total_order", "first_order_conf", "total_order_conf"):
        np.testing.assert_array_equal(getattr(s, field)[:, 2], 0.0, err_msg=field)
    np.testing.assert_array_equal(s.second_order[:, 2, 3:], 0.0)  # the ignored input first in the pair
