"""``hessian_importance`` against independent oracles.

* a closed form with a constant Hessian, ``y = x1^2 + 0.5 x2 + x2 x3`` (exact: every value is exact in float32);
* a one-hidden-layer tanh MLP against its Hessian written out in numpy float64,
  ``H_k = sum_h W2[h, k] tanh''(z_h) W1[:, h] W1[:, h]^T`` with ``tanh'' = -2 tanh (1 - tanh^2)``;
* a Keras MLP converted with ``jaxsens.load_model`` against TensorFlow's nested ``GradientTape`` s;
* a sequence input ``[T, F]``: the by-feature aggregate against the full ``[T * F, T * F]`` statistics.

The shared invariants (exact zero, batch size, devices, NaN policy, CLI, save / load) are in tests/test_methods.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tol import assert_f32_close

import jaxsens

N = 48


def _stats64(h: np.ndarray) -> dict[str, np.ndarray]:
    """What the result reports, from per-sample Hessians ``[N, k, n, n]`` in float64."""
    a = np.abs(h)
    rows = a.sum(-1)
    n = h.shape[0]
    return {
        "mean_abs": a.mean(0),
        "mean_abs_stderr": a.std(0, ddof=1) / np.sqrt(n),
        "mean": h.mean(0),
        "std": h.std(0, ddof=1),
        "rms": np.sqrt((h * h).mean(0)),
        "importance": rows.mean(0),
        "stderr": rows.std(0, ddof=1) / np.sqrt(n),
    }


def _assert_stats(result, h64, n_terms, err_msg=""):
    want = _stats64(h64)
    scale = float(np.abs(h64).max()) * h64.shape[-1]  # a row sum adds n terms of at most this size
    for field, value in want.items():
        got = getattr(result, field)
        assert got.shape == value.shape, (field, got.shape, value.shape)
        assert_f32_close(got, value, n_terms=n_terms, magnitude=scale, err_msg=f"{field} {err_msg}")


# --------------------------------------------------------------------------------------------- closed form
def _closed_form_model():
    # features x0..x4; y = x1^2 + 0.5 x2 + x2 x3 (x0 and x4 are ignored)
    return jaxsens.Model.from_function(
        lambda p, x: (x[1] ** 2 + p * x[2] + x[2] * x[3])[None], 0.5, input_shape=(5,),
        feature_names=("x0", "x1", "x2", "x3", "x4"),
    )


def test_closed_form_constant_hessian_is_exact():
    xs = np.random.default_rng(0).normal(size=(N, 5)).astype(np.float32)
    r = jaxsens.hessian_importance(_closed_form_model(), xs, batch_size=10)
    want = np.zeros((1, 5, 5))
    want[0, 1, 1] = 2.0
    want[0, 2, 3] = want[0, 3, 2] = 1.0
    np.testing.assert_array_equal(r.mean, want)
    np.testing.assert_array_equal(r.mean_abs, want)
    np.testing.assert_array_equal(r.rms, want)
    np.testing.assert_array_equal(r.std, np.zeros_like(want))
    np.testing.assert_array_equal(r.mean_abs_stderr, np.zeros_like(want))
    np.testing.assert_array_equal(r.importance, [[0.0, 2.0, 1.0, 1.0, 0.0]])
    np.testing.assert_array_equal(r.stderr, np.zeros((1, 5)))
    assert r.n_samples == N and r.time_aggregate is None
    assert [n for n, _, _ in r.ranking()][:3] == ["x1", "x2", "x3"]
    pairs = r.interactions()
    assert pairs[0] == ("x2", "x3", 1.0, 0.0)
    assert len(pairs) == 10 and all(v == 0.0 for _, _, v, _ in pairs[1:])  # the only off-diagonal interaction
    assert len(r.interactions(top=3)) == 3 and len(r.interactions(top=None)) == 10


def test_plot_draws_ranking_and_interaction_heatmap(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
    r = jaxsens.hessian_importance(_closed_form_model(), xs)
    fig = r.plot(top=3, path=tmp_path / "h.png")
    try:
        bars, heat = fig.axes[0], fig.axes[1]
        assert len(bars.patches) == 3 and "top 3 of 5 features" in fig._suptitle.get_text()
        image = heat.get_images()[0].get_array()
        np.testing.assert_array_equal(image, [[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # x1, x2, x3
        assert [t.get_text() for t in heat.get_yticklabels()] == ["x1", "x2", "x3"]
    finally:
        plt.close(fig)
    assert (tmp_path / "h.png").stat().st_size > 0


def test_bad_arguments_are_refused():
    xs = np.ones((4, 5), np.float32)
    r = jaxsens.hessian_importance(_closed_form_model(), xs)
    with pytest.raises(jaxsens.ArgumentError, match="by must be"):
        r.interactions(by="pairs")
    with pytest.raises(jaxsens.ArgumentError, match="out of range"):
        r.interactions(output=3)


# ----------------------------------------------------------------------------------------------- tanh MLP
def _mlp(seed=3, d=5, hidden=7, k=2):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(scale=0.6, size=(d, hidden)).astype(np.float32)
    b1 = rng.normal(scale=0.2, size=hidden).astype(np.float32)
    w2 = rng.normal(scale=0.8, size=(hidden, k)).astype(np.float32)
    b2 = rng.normal(scale=0.1, size=k).astype(np.float32)
    model = jaxsens.dense_model([{"W": w1, "b": b1}, {"W": w2, "b": b2}], ("tanh", "identity"))
    xs = rng.normal(size=(N, d)).astype(np.float32)
    return model, xs, (w1, b1, w2, b2)


def _mlp_hessians64(xs, w1, b1, w2, b2):
    """``[N, k, d, d]``: the tanh MLP's Hessian written out in float64."""
    w1, b1, w2 = (np.asarray(a, np.float64) for a in (w1, b1, w2))
    t = np.tanh(xs.astype(np.float64) @ w1 + b1)  # [N, h]
    t2 = -2.0 * t * (1.0 - t * t)  # tanh''
    return np.einsum("hk,nh,ih,jh->nkij", w2, t2, w1, w1)


def test_tanh_mlp_matches_float64_closed_form():
    model, xs, weights = _mlp()
    r = jaxsens.hessian_importance(model, xs, batch_size=16)
    # each H entry: a chain of ~hidden + d roundings; the moments add N rows
    _assert_stats(r, _mlp_hessians64(xs, *weights), n_terms=2 * (N + 4 * (7 + 5)))
    sub = jaxsens.hessian_importance(model, xs, outputs=[1], batch_size=16)
    np.testing.assert_allclose(sub.mean_abs[0], r.mean_abs[1], rtol=1e-6, atol=1e-7)
    assert sub.output_names == (r.output_names[1],)


def test_batch_size_does_not_change_the_result():
    model, xs, _ = _mlp(seed=4)
    a = jaxsens.hessian_importance(model, xs[:45], batch_size=7)
    b = jaxsens.hessian_importance(model, xs[:45], batch_size=64)
    scale = float(np.abs(a.mean_abs).max()) * 5
    for field in ("importance", "stderr", "mean_abs", "mean_abs_stderr", "mean", "std", "rms"):
        assert_f32_close(getattr(a, field), getattr(b, field), n_terms=4 * 45, magnitude=scale, err_msg=field)


# --------------------------------------------------------------------------------------------- Keras / TF
def _tf_nested_tapes(net, xs):
    """The oracle: TensorFlow's Hessian of every output over the flattened per-sample elements, from nested tapes
    (``batch_jacobian`` of ``batch_jacobian``), symmetrised: ``[N, n_outputs, E, E]`` float64."""
    import tensorflow as tf

    x = tf.constant(xs)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = net(x, training=False)
        g = inner.batch_jacobian(y, x)  # [N, k, *input_shape]
    n, e = xs.shape[0], int(np.prod(xs.shape[1:]))
    h = np.asarray(outer.batch_jacobian(g, x), np.float64).reshape(n, -1, e, e)
    return 0.5 * (h + np.swapaxes(h, -1, -2))


def test_keras_mlp_matches_tensorflow_nested_tapes(tmp_path):
    import keras

    rng = np.random.default_rng(5)
    net = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(6, activation="tanh"),
        keras.layers.Dense(5, activation="softplus"),
        keras.layers.Dense(3),
    ])
    net.set_weights([rng.normal(scale=0.6, size=tuple(w.shape)).astype(np.float32) for w in net.weights])
    path = tmp_path / "mlp.keras"
    net.save(path)
    model = jaxsens.load_model(str(path))
    xs = rng.normal(size=(24, 4)).astype(np.float32)
    h = _tf_nested_tapes(net, xs)  # [N, k, d, d]
    r = jaxsens.hessian_importance(model, xs, batch_size=10)
    _assert_stats(r, h, n_terms=2 * (24 + 4 * (4 + 6 + 5)), err_msg="vs TensorFlow nested tapes")


# --------------------------------------------------------------------------------------------- sequences
def test_sequence_input_full_hessian_and_by_feature_aggregate():
    rng = np.random.default_rng(6)
    t_steps, f = 3, 2
    w = rng.normal(scale=0.5, size=(t_steps * f, 4)).astype(np.float32)
    v = rng.normal(size=4).astype(np.float32)
    model = jaxsens.Model.from_function(lambda p, x: (jax_tanh(x.reshape(-1) @ p[0]) @ p[1])[None], (w, v),
                                        input_shape=(t_steps, f), feature_names=("u", "v"))
    xs = rng.normal(size=(N, t_steps, f)).astype(np.float32)
    r = jaxsens.hessian_importance(model, xs, batch_size=16)
    n = t_steps * f
    z = xs.reshape(N, n).astype(np.float64) @ w.astype(np.float64)
    t2 = -2.0 * np.tanh(z) * (1.0 - np.tanh(z) ** 2)
    h64 = np.einsum("h,nh,ih,jh->nij", v.astype(np.float64), t2, w.astype(np.float64), w.astype(np.float64))
    h64 = h64[:, None]  # [N, 1, n, n]
    want = _stats64(h64)
    scale = float(np.abs(h64).max()) * n * n
    assert r.mean_abs.shape == (1, n, n) and r.importance.shape == (1, t_steps, f)
    assert_f32_close(r.mean_abs, want["mean_abs"], n_terms=2 * (N + 16), magnitude=scale)
    assert_f32_close(r.importance.reshape(1, n), want["importance"], n_terms=2 * (N + 16), magnitude=scale)
    # the by-feature aggregate: sum over every pair of time steps of |H|, per sample, then the mean
    agg = np.abs(h64).reshape(N, 1, t_steps, f, t_steps, f).sum(axis=(2, 4))  # [N, 1, F, F]
    assert_f32_close(r.time_aggregate["mean_abs"], agg.mean(0), n_terms=2 * (N + 16), magnitude=scale)
    assert_f32_close(r.time_aggregate["stderr"], agg.std(0, ddof=1) / np.sqrt(N), n_terms=2 * (N + 16),
                     magnitude=scale)
    imp, err = r.feature_importance()
    assert imp.shape == err.shape == (1, f)
    assert_f32_close(imp, agg.sum(-1).mean(0), n_terms=2 * (N + 16), magnitude=scale)
    assert_f32_close(imp, r.importance.sum(axis=1), n_terms=2 * (N + 16), magnitude=scale)
    assert_f32_close(err, agg.sum(-1).std(0, ddof=1) / np.sqrt(N), n_terms=2 * (N + 16), magnitude=scale)
    # the signed aggregate: sum over every pair of time steps of H itself (the Hessian along a shift of the
    # features at every step), its mean, std (ddof = 1) and rms over samples
    signed = h64.reshape(N, 1, t_steps, f, t_steps, f).sum(axis=(2, 4))
    assert_f32_close(r.time_aggregate["mean"], signed.mean(0), n_terms=2 * (N + 16), magnitude=scale)
    assert_f32_close(r.time_aggregate["std"], signed.std(0, ddof=1), n_terms=2 * (N + 16), magnitude=scale)
    assert_f32_close(r.time_aggregate["rms"], np.sqrt((signed**2).mean(0)), n_terms=2 * (N + 16), magnitude=scale)
    assert not np.allclose(r.time_aggregate["mean"], r.time_aggregate["mean_abs"])  # signs do cancel here
    # an independent oracle of S: the Hessian of x -> f(x) along the shift of feature u and of v at every step
    def along(c):
        return lambda a, b: model.apply(model.params, c + a * np.eye(f)[0] + b * np.eye(f)[1])[0]

    s0 = np.asarray(jax.hessian(along(jnp.asarray(xs[0])), argnums=(0, 1))(0.0, 0.0), np.float64)
    assert_f32_close(s0, signed[0, 0], n_terms=4 * n, magnitude=scale)
    (a, b, value, _), = r.interactions()
    assert (a, b) == ("u", "v") and value == r.time_aggregate["mean_abs"][0, 0, 1]
    assert len(r.interactions(by="element", top=None)) == n * (n - 1) // 2


def jax_tanh(z):
    import jax.numpy as jnp

    return jnp.tanh(z)


def test_keras_lstm_matches_tensorflow_nested_tapes(tmp_path):
    """Seed 001's shape scaled down, ``Input(T=5, F=3) -> LSTM(4) -> Dense(1)``: the full ``[T * F, T * F]``
    statistics and the by-feature aggregate against TensorFlow's nested tapes over the flattened elements."""
    import keras

    t_steps, f, units, n = 5, 3, 4, 16
    rng = np.random.default_rng(7)
    net = keras.Sequential([keras.Input((t_steps, f)), keras.layers.LSTM(units), keras.layers.Dense(1)])
    net.set_weights([rng.normal(scale=0.5, size=tuple(w.shape)).astype(np.float32) for w in net.weights])
    path = tmp_path / "lstm.keras"
    net.save(path)
    model = jaxsens.load_model(str(path))
    xs = rng.normal(size=(n, t_steps, f)).astype(np.float32)
    h = _tf_nested_tapes(net, xs)  # [N, 1, T * F, T * F]
    assert np.abs(h).max() > 1e-3  # a Hessian that is not trivially zero
    r = jaxsens.hessian_importance(model, xs, batch_size=8)
    assert r.importance.shape == (1, t_steps, f) and r.mean_abs.shape == (1, t_steps * f, t_steps * f)
    # each H entry: T recurrent steps of fan-in F + 4 * units, three passes (forward, reverse, tangent), both sides
    n_terms = 2 * (n + 3 * t_steps * (f + 4 * units))
    want = _stats64(h)
    scale = float(np.abs(h).max()) * t_steps * f
    for field in ("mean_abs", "mean_abs_stderr", "mean", "std", "rms"):
        assert_f32_close(getattr(r, field), want[field], n_terms=n_terms, magnitude=scale, err_msg=field)
    for field in ("importance", "stderr"):
        assert_f32_close(getattr(r, field).reshape(1, -1), want[field], n_terms=n_terms, magnitude=scale,
                         err_msg=field)
    agg = np.abs(h).reshape(n, 1, t_steps, f, t_steps, f).sum(axis=(2, 4))  # [N, 1, F, F]
    scale_agg = scale * t_steps * t_steps
    assert_f32_close(r.time_aggregate["mean_abs"], agg.mean(0), n_terms=n_terms, magnitude=scale_agg)
    imp, err = r.feature_importance()
    assert_f32_close(imp, agg.sum(-1).mean(0), n_terms=n_terms, magnitude=scale_agg)
    assert_f32_close(err, agg.sum(-1).std(0, ddof=1) / np.sqrt(n), n_terms=n_terms, magnitude=scale_agg)


@pytest.mark.slow  # TF's nested pfor over three LSTM loops and jaxsens' forward-over-reverse compile: ~1 min
def test_seed001_lstm_stack_matches_tensorflow_nested_tapes(tmp_path):
    """Seed 001's whole network, ``Input(10, 3) -> LSTM(10, relu) -> LSTM(5, relu) -> LSTM(1, sigmoid) ->
    Flatten`` (every LSTM ``return_sequences=True``: 10 outputs), random seeded weights, saved as ``.keras``: the
    ``[10, 30, 30]`` statistics over the flattened ``T * F`` elements, for all 10 outputs, and the by-feature
    aggregate ``[10, 3, 3]``, against TensorFlow's nested tapes."""
    import keras

    t_steps, f, n = 10, 3, 16
    units, acts = (10, 5, 1), ("relu", "relu", "sigmoid")
    rng = np.random.default_rng(8)
    h = inputs = keras.Input((t_steps, f))
    for u, act in zip(units, acts):
        h = keras.layers.LSTM(u, activation=act, return_sequences=True)(h)
    net = keras.Model(inputs, keras.layers.Flatten()(h))
    net.set_weights([rng.normal(scale=0.5, size=tuple(w.shape)).astype(np.float32) for w in net.weights])
    path = tmp_path / "seed001_lstm.keras"
    net.save(path)
    model = jaxsens.load_model(str(path))
    xs = rng.normal(size=(n, t_steps, f)).astype(np.float32)
    e = t_steps * f
    h = _tf_nested_tapes(net, xs)  # [N, 10, T * F, T * F]
    assert np.abs(h).max() > 1e-3 and np.abs(h[:, -1]).max() > 1e-3  # not trivially zero, up to the last output
    r = jaxsens.hessian_importance(model, xs, batch_size=8)
    assert r.mean_abs.shape == r.mean.shape == r.std.shape == r.rms.shape == (t_steps, e, e)
    assert r.importance.shape == (t_steps, t_steps, f) and r.time_aggregate["mean_abs"].shape == (t_steps, f, f)
    # each H entry: T recurrent steps through three stacked cells of fan-in (n_in + 4 * units), three passes
    # (forward, reverse, tangent), both sides; the statistics add N rows
    chain = sum(n_in + 4 * u for n_in, u in zip((f, *units[:-1]), units))
    n_terms = 2 * (n + 3 * t_steps * chain)
    want = _stats64(h)
    scale = float(np.abs(h).max()) * e
    for field in ("mean_abs", "mean_abs_stderr", "mean", "std", "rms"):
        assert_f32_close(getattr(r, field), want[field], n_terms=n_terms, magnitude=scale, err_msg=field)
    for field in ("importance", "stderr"):
        assert_f32_close(getattr(r, field).reshape(t_steps, -1), want[field], n_terms=n_terms, magnitude=scale,
                         err_msg=field)
    agg = np.abs(h).reshape(n, t_steps, t_steps, f, t_steps, f).sum(axis=(2, 4))  # [N, 10, F, F]
    scale_agg = scale * t_steps * t_steps
    assert_f32_close(r.time_aggregate["mean_abs"], agg.mean(0), n_terms=n_terms, magnitude=scale_agg)
    imp, err = r.feature_importance()
    assert imp.shape == (t_steps, f)
    assert_f32_close(imp, agg.sum(-1).mean(0), n_terms=n_terms, magnitude=scale_agg)
    assert_f32_close(err, agg.sum(-1).std(0, ddof=1) / np.sqrt(n), n_terms=n_terms, magnitude=scale_agg)
