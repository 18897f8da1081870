"""Perturbation-type methods: perturbation importance, input perturbation, permutation, improved stepwise,
Lek's profile. Oracles: closed forms on linear models, float64 numpy re-computations, scikit-learn (its
metrics and its
``permutation_importance`` on the original sklearn MLP), and Keras ``predict`` for seed 001's LSTM."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tol import assert_f32_close, f32_tol

import jaxsens
from jaxsens import (
    improved_stepwise,
    input_perturbation,
    lek_profile,
    permutation_importance,
    perturbation_importance,
    sklearn_permutations,
)
from jaxsens._metrics import Metric, accuracy, log_loss, mae, mse
from jaxsens._results import load_result

KEY = jax.random.key(0)
MLP_CHAIN = 4 + 6 + 2  # float32 roundings along one row of the test MLP: fan-ins 4 and 6, bias and tanh


# --------------------------------------------------------------------------------------------------- fixtures
def _mlp_params(seed=0, n_in=4, n_hidden=6, n_out=2, dead=(3,)):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(n_in, n_hidden))
    w1[list(dead)] = 0.0  # the model ignores these inputs (zero weights, still multiplied)
    return {
        "W1": w1.astype(np.float32),
        "b1": rng.normal(size=n_hidden).astype(np.float32),
        "W2": rng.normal(size=(n_hidden, n_out)).astype(np.float32),
    }


def _mlp_apply(p, x):
    return jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"]


def _mlp_numpy(p, X):
    """float64 oracle of the same network."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    return np.tanh(X @ p["W1"] + p["b1"]) @ p["W2"]


@pytest.fixture(scope="module")
def mlp():
    params = _mlp_params()
    model = jaxsens.Model.from_function(
        _mlp_apply, params, input_shape=(4,), feature_names=["a", "b", "c", "d"]
    )
    X = np.random.default_rng(1).normal(size=(203, 4)).astype(np.float32)  # 203: ragged for every batch size
    y = (_mlp_numpy(params, X) + 0.3 * np.random.default_rng(2).normal(size=(203, 2))).astype(np.float32)
    return model, X, y, params


def _seq_apply(p, x):  # [T=5, F=3] -> [T]: feature 2 ignored (sliced away)
    return jnp.tanh(x[:, :2] @ p["w"]) * p["v"]


@pytest.fixture(scope="module")
def seq():
    p = {"w": jnp.array([1.5, -0.7]), "v": jnp.linspace(0.5, 1.0, 5)}
    model = jaxsens.Model.from_function(_seq_apply, p, input_shape=(5, 3))
    X = np.random.default_rng(3).uniform(size=(97, 5, 3)).astype(np.float32)
    y = np.asarray(model(X)) + 0.05
    return model, X, y


# -------------------------------------------------------------------------------------------------- one table
# every method as (model, X, y, batch_size) -> its per-feature array (features first); a new method is a row
# and must pass every invariant below
METHODS = {
    "perturbation": lambda m, X, y, b: (
        perturbation_importance(m, X, key=KEY, n_draws=2, batch_size=b).effect_per_output
    ),
    "input_perturbation": lambda m, X, y, b: (
        input_perturbation(m, X, y, key=KEY, batch_size=b).error_increase
    ),
    "permutation": lambda m, X, y, b: (
        permutation_importance(m, X, y, key=KEY, n_repeats=3, batch_size=b).importances
    ),
    "improved_stepwise_1": lambda m, X, y, b: improved_stepwise(m, X, y, variant=1, batch_size=b).importance,
    "improved_stepwise_2": lambda m, X, y, b: improved_stepwise(m, X, variant=2, batch_size=b).per_output,
    "lek_profile": lambda m, X, y, b: lek_profile(m, X, steps=9, batch_size=b).importance_per_output,
}


def _term_size(method, model, X, y, value):
    """Size of the per-row terms a method averages: a float32 sum's rounding error scales with it (tests/_tol.py)."""
    f = np.asarray(model(X), np.float64)
    if method in ("perturbation", "lek_profile"):  # output values and their changes
        return np.abs(f).max()
    if method == "improved_stepwise_2":  # squared output changes, |change| <= 2 max |f|
        return (2 * np.abs(f).max()) ** 2
    # error increases: the difference of two mean squared errors, the baseline and the baseline + the increase
    return 2 * np.mean((np.asarray(y, np.float64) - f) ** 2, axis=0).max() + np.abs(value)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_batch_size_never_changes_the_result(method, mlp):
    model, X, y, _ = mlp
    fn = METHODS[method]
    # 203 rows: 29 chunks of 7, or one padded chunk (the default); per-row keys fold_in(key, row_index), so only
    # float32 rounding differs: each side sums at most 203 rows in a chunk, after MLP_CHAIN roundings per row
    a, b = fn(model, X, y, None), fn(model, X, y, 7)
    assert_f32_close(b, a, n_terms=2 * (len(X) + MLP_CHAIN), magnitude=_term_size(method, model, X, y, a))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_an_ignored_input_gets_exactly_zero(method, mlp, seq):
    model, X, y, _ = mlp  # input "d" has zero weights
    out = np.asarray(METHODS[method](model, X, y, None))
    assert np.all(out[3] == 0) and np.all(np.abs(out[:3]) > 0), out
    smodel, SX, sy = seq  # feature 2 is sliced away; sequence inputs perturb the last axis at every step
    out = np.asarray(METHODS[method](smodel, SX, sy, None))
    assert np.all(out[2] == 0) and np.all(np.abs(out[:2]) > 0)


def _onnx_mlp_ignoring_last_input():
    """A converted graph (runs whole batches, ``model.batched``): 4 -> tanh(8) -> 2, input 3 has zero weights."""
    from _onnx_graphs import single_input_model
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(5)
    w1 = rng.normal(size=(4, 8)).astype(np.float32)
    w1[3] = 0.0
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(size=(8, 2)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Tanh", ["hb"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["y"]),
    ]
    proto = single_input_model(nodes, inits, n_in=4, n_out=2, name="mlp")
    return jaxsens.Model.from_onnx(proto)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_batched_graphs_keep_exact_zeros_and_equal_the_per_sample_path(method):
    """Whole-batch graphs: every variant slot runs the same code at the same positions, so the ignored input still
    gets exactly 0, and the result equals the per-sample (vmap) path of the same graph."""
    import dataclasses

    model = _onnx_mlp_ignoring_last_input()
    assert model.batched
    X = np.random.default_rng(6).normal(size=(150, 4)).astype(np.float32)
    y = np.asarray(model(X)) + 0.1
    out = np.asarray(METHODS[method](model, X, y, None))
    assert np.all(out[3] == 0) and np.all(np.abs(out[:3]) > 0), out
    per_sample = np.asarray(METHODS[method](dataclasses.replace(model, batched=False), X, y, None))
    chain = 4 + 8 + 2  # fan-ins 4 and 8, bias and tanh
    assert_f32_close(out, per_sample, n_terms=2 * (len(X) + chain),
                     magnitude=_term_size(method, model, X, y, per_sample))


def test_four_devices_give_the_single_device_result(tmp_path):
    """Per-row keys fold_in(key, row_index): sharding the chunks over 4 (forced host) devices draws the same noise
    for every row, so the effects equal the 1-device run here; the whole-batch graph is sharded on its batch axis."""
    script = textwrap.dedent(
        f"""
        import sys, jax, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_perturbation import _onnx_mlp_ignoring_last_input, KEY
        import jaxsens
        assert len(jax.local_devices()) == 4, jax.local_devices()
        X = np.random.default_rng(6).normal(size=(301, 4)).astype(np.float32)
        r = jaxsens.perturbation_importance(_onnx_mlp_ignoring_last_input(), X, key=KEY, n_draws=3, batch_size=64)
        r.save({str(tmp_path / "r4.json")!r})
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    four = load_result(tmp_path / "r4.json")
    X = np.random.default_rng(6).normal(size=(301, 4)).astype(np.float32)
    one = perturbation_importance(_onnx_mlp_ignoring_last_input(), X, key=KEY, n_draws=3, batch_size=64)
    assert four.n_samples == one.n_samples == 301
    # same noise per row; float32 sums of at most 64 rows per chunk (16 per device with 4), merged in float64
    outputs = np.abs(np.asarray(_onnx_mlp_ignoring_last_input()(X), np.float64)).max()
    n_terms = 2 * (64 + 4 + 8 + 2)
    assert_f32_close(four.effect_per_output, one.effect_per_output, n_terms=n_terms, magnitude=outputs)
    assert_f32_close(four.mean_change, one.mean_change, n_terms=n_terms, magnitude=outputs)
    assert np.all(four.effect[3] == 0)


def test_perturbation_streams_a_npy_file_like_an_array(mlp, tmp_path):
    model, X, _, _ = mlp
    np.save(tmp_path / "x.npy", X)
    a = perturbation_importance(model, X, key=KEY, n_draws=2)
    b = perturbation_importance(model, str(tmp_path / "x.npy"), key=KEY, n_draws=2)
    np.testing.assert_array_equal(a.effect_per_output, b.effect_per_output)
    assert a.n_samples == b.n_samples == 203


# ----------------------------------------------------------------------------------------------- closed forms
def _linear(w, n_out=1):
    w = jnp.asarray(w, jnp.float32)
    return jaxsens.Model.from_function(lambda p, x: jnp.full((n_out,), x @ p), w, input_shape=(len(w),))


def test_perturbation_effect_closed_form_and_seed_measure():
    w = np.array([2.0, -1.0, 0.5])
    X = np.random.default_rng(0).uniform(size=(4000, 3))
    r = perturbation_importance(_linear(w, 2), X, scale=0.2, key=KEY)
    # f(x') - f(x) = w_j * 0.2 * eps: RMS -> |w_j| * 0.2 (4000 draws: 2.2% relative sd of an RMS estimate)
    np.testing.assert_allclose(r.effect, np.abs(w) * 0.2, rtol=0.06)
    np.testing.assert_allclose(r.effect_per_output, r.effect[:, None].repeat(2, 1), rtol=1e-6)
    assert np.all(r.stderr > 0) and np.all(r.stderr < 0.03 * r.effect)
    u = perturbation_importance(_linear(w), X, scale=0.2, noise="uniform", n_draws=3, key=KEY)
    np.testing.assert_allclose(
        u.effect, np.abs(w) * 0.2 / math.sqrt(3), rtol=0.05
    )  # RMS of U(-s, s) = s / sqrt 3
    per = perturbation_importance(_linear(w), X, scale=[0.0, 0.2, 0.4], features=["x1", 2], key=KEY)
    assert per.feature_names == ("x1", "x2") and per.feature_index.tolist() == [1, 2]
    np.testing.assert_allclose(per.effect, [0.2, 0.2], rtol=0.06)
    # the noise of a feature does not depend on which other features are selected: the same terms, summed over at
    # most 4000 rows in float32 on each side (x @ w: 3 products)
    assert_f32_close(
        per.effect[0],
        perturbation_importance(_linear(w), X, scale=0.2, features=[1], key=KEY).effect[0],
        n_terms=2 * (len(X) + 3),
    )


def test_perturbation_sequence_closed_form():
    v = np.array([1.0, 2.0, 3.0, 4.0])  # f(x)_t = v_t * x[t, 0]: each output sees its own step's noise
    m = jaxsens.Model.from_function(lambda p, x: p * x[:, 0], jnp.asarray(v, jnp.float32), input_shape=(4, 2))
    X = np.random.default_rng(5).normal(size=(3000, 4, 2))
    r = perturbation_importance(m, X, scale=0.1, key=jax.random.key(7))
    np.testing.assert_allclose(r.effect_per_output[0], 0.1 * v, rtol=0.06)
    np.testing.assert_allclose(r.effect[0], 0.1 * np.sqrt(np.mean(v**2)), rtol=0.05)
    assert r.effect[1] == 0 and np.all(r.effect_per_output[1] == 0)
    assert np.all(np.abs(r.mean_change[0]) < 4 * 0.1 * v / np.sqrt(3000))  # symmetric noise: no drift


def test_input_perturbation_closed_form(mlp):
    w = np.array([3.0, -1.0, 0.0])
    X = np.random.default_rng(0).normal(size=(3000, 3)) * [1.0, 2.0, 0.5]
    y = X @ w
    levels = (0.1, 0.3, 0.5)
    r = input_perturbation(_linear(w), X, y[:, None], levels=levels, key=KEY)
    std = X.std(axis=0, ddof=1)
    np.testing.assert_allclose(r.input_std, std, rtol=1e-12)
    # y = f(X) exactly: the MSE increase is (level * std_j * w_j)^2 * mean(eps^2); one draw shared by the
    # levels
    expected = (np.outer(std * w, levels)) ** 2
    np.testing.assert_allclose(r.error_increase, expected, rtol=0.07, atol=1e-9)
    ratio = r.error_increase[:2] / np.square(levels)
    # one draw shared by the levels: the same squared terms, scaled; float32 means of 3000 rows (+ x @ w and noise)
    assert_f32_close(ratio, ratio[:, :1].repeat(3, 1), n_terms=2 * (len(X) + 3 + 2))
    # y = X @ w in float64; the model sees X rounded to float32 and sums 3 products in float32
    assert r.baseline_error <= f32_tol(np.abs(X) @ np.abs(w), 3 + 1).max() ** 2
    assert [n for n, _, _ in r.ranking()][:2] == ["x0", "x1"]


def test_improved_stepwise_matches_float64_numpy(mlp):
    model, X, y, params = mlp
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    base = _mlp_numpy(params, X64)
    fixed = [np.where(np.arange(4) == j, X64.mean(0), X64) for j in range(4)]
    mse1 = np.array([np.mean((y64 - _mlp_numpy(params, f)) ** 2) for f in fixed]) - np.mean((y64 - base) ** 2)
    out2 = np.array([np.mean((_mlp_numpy(params, f) - base) ** 2, axis=0) for f in fixed])
    r1 = improved_stepwise(model, X, y, variant=1)
    r2 = improved_stepwise(model, X, variant=2)
    n_terms = len(X) + MLP_CHAIN  # a float32 mean over the rows of a float32 network's outputs
    base_mse = np.mean((y64 - base) ** 2)
    assert_f32_close(r1.importance, mse1, n_terms=n_terms, magnitude=2 * base_mse + np.abs(mse1))
    assert_f32_close(r1.baseline_error, base_mse, n_terms=n_terms, magnitude=base_mse)
    squared_changes = (2 * np.abs(base).max()) ** 2
    assert_f32_close(r2.per_output, out2, n_terms=n_terms, magnitude=squared_changes)
    assert_f32_close(r2.importance, out2.mean(1), n_terms=n_terms, magnitude=squared_changes)
    np.testing.assert_allclose(r2.relative.sum(), 100.0)
    assert r1.stderr.shape == (4,) and np.isnan(r2.baseline_error)


def test_lek_profile_closed_form_quantiles_and_clusters():
    w = np.array([2.0, -1.0, 0.0])
    X = np.random.default_rng(0).uniform(-1, 1, size=(300, 3))
    r = lek_profile(_linear(w), X, steps=11)
    assert r.curves.shape == (3, 6, 11, 1) and r.settings.shape == (6, 3)
    np.testing.assert_allclose(r.settings, np.quantile(X, [0, 0.2, 0.4, 0.6, 0.8, 1.0], axis=0))
    np.testing.assert_allclose(r.grid[:, [0, -1]], np.stack([X.min(0), X.max(0)], 1))
    # linear model: each curve is w_j * grid + sum_{i != j} w_i * setting_i; its range is |w_j| * (max - min)
    expect = r.grid[0] * w[0] + (r.settings[:, 1:] @ w[1:])[:, None]
    size = np.abs(w) @ np.abs(X).max(0)  # of the 3 products summed in float32 (inputs rounded to float32: +1)
    assert_f32_close(r.curves[0, :, :, 0], expect, n_terms=3 + 1, magnitude=size)
    # a range: the difference of two curve values
    assert_f32_close(r.importance, np.abs(w) * (X.max(0) - X.min(0)), n_terms=2 * (3 + 1), magnitude=size)
    k = lek_profile(_linear(w), X, steps=5, n_clusters=3, key=KEY)
    from sklearn.cluster import KMeans

    seed_free = KMeans(n_clusters=3, n_init=10, random_state=0).fit(X).cluster_centers_
    assert k.settings.shape == (3, 3) and k.cluster_sizes.sum() == 300
    # same partition as an independent k-means run (centres up to order)
    np.testing.assert_allclose(np.sort(k.settings[:, 0]), np.sort(seed_free[:, 0]), atol=1e-6)
    with pytest.raises(ValueError, match="key="):
        lek_profile(_linear(w), X, n_clusters=3)


def test_lek_profile_jax_kmeans_fallback():
    from jaxsens._profile import _lloyd

    rng = np.random.default_rng(0)
    groups = [rng.normal(size=(50, 2)) * 0.1 + c for c in ([0, 0], [5, 5], [0, 5])]
    centres, sizes = _lloyd(np.concatenate(groups), 3, jax.random.key(1))
    code = lambda c: c[..., 0] + 10 * c[..., 1]  # noqa: E731 - orders the centres
    # float32 means of 50 points each, against float64
    assert_f32_close(np.sort(code(centres)), np.sort([code(g.mean(0)) for g in groups]), n_terms=50 + 2,
                     magnitude=11 * np.abs(np.concatenate(groups)).max())
    assert sorted(sizes.tolist()) == [50, 50, 50]


def test_lek_profile_sequence_input(seq):
    model, X, _ = seq
    r = lek_profile(model, X, steps=4, quantiles=(0.5,))
    assert r.curves.shape == (3, 1, 4, 5)
    x = np.median(X, axis=0)  # the swept feature takes each grid value at every time step
    x[:, 1] = r.grid[1, 2]
    # the same float32 network on the same point; the sweep may vectorise it differently (2 products, tanh, scale)
    assert_f32_close(r.curves[1, 0, 2], np.asarray(model(x[None].astype(np.float32)))[0], n_terms=2 * (2 + 3))


# ----------------------------------------------------------------------------------------------- scikit-learn
@pytest.fixture(scope="module")
def sk_models():
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 5)).astype(np.float32)
    yr = (
        X[:, 0] - 2 * X[:, 1] + np.sin(X[:, 2]) + 0.1 * rng.normal(size=240)
    )  # one output: skl2onnx reshapes several to [-1, 1]
    yc = (X[:, 0] + X[:, 2] > 0).astype(int) + (X[:, 1] > 1)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0).fit(X, yr)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0).fit(X, yc)
    out = {}
    for name, est, y in (("reg", reg, yr), ("clf", clf, yc)):
        model = jaxsens.Model.from_onnx(
            to_onnx(est, X[:1], options={"zipmap": False} if name == "clf" else None)
        )
        out[name] = (est, model, y)
    return X, out


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "kind,metric,scoring",
    [
        ("reg", "mse", "neg_mean_squared_error"),
        ("reg", "mae", "neg_mean_absolute_error"),
        ("clf", "accuracy", "accuracy"),
        ("clf", "log_loss", "neg_log_loss"),
    ],
)
def test_permutation_equals_sklearn(sk_models, kind, metric, scoring):
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    X, models = sk_models
    est, model, y = models[kind]
    sk = sk_permutation_importance(est, X, y, scoring=scoring, n_repeats=4, random_state=11)
    perms = sklearn_permutations(len(X), X.shape[1], 4, 11)
    r = permutation_importance(model, X, y, metric=metric, permutations=perms, batch_size=50)
    # each importance is the difference of two scores, float32 means over 240 rows of a float32 network (fan-ins 5
    # and 8, 2 activations), on both sides; their terms are of the size of the scores
    n_terms, size = 2 * (len(X) + 5 + 8 + 2), 2 * abs(r.baseline_score) + np.abs(sk.importances)
    assert_f32_close(r.importances, sk.importances, n_terms=n_terms, magnitude=size)
    assert_f32_close(r.importances_mean, sk.importances_mean, n_terms=n_terms, magnitude=size.max(1))
    assert_f32_close(r.importances_std, sk.importances_std, n_terms=n_terms, magnitude=size.max(1))
    # the shared-per-feature form [n_repeats, n_samples] is the same thing (other chunks: other rounding)
    assert_f32_close(
        permutation_importance(model, X, y, metric=metric, permutations=perms[0]).importances,
        r.importances,
        n_terms=n_terms,
        magnitude=size,
    )


def test_permutation_callable_score_equals_sklearn_r2(sk_models):
    from sklearn.inspection import permutation_importance as sk_permutation_importance
    from sklearn.metrics import r2_score

    X, models = sk_models
    est, model, y = models["reg"]
    sk = sk_permutation_importance(est, X, y, scoring="r2", n_repeats=3, random_state=4)
    r = permutation_importance(
        model,
        X,
        y,
        metric=Metric("r2", r2_score, greater_is_better=True),
        permutations=sklearn_permutations(len(X), 5, 3, 4),
    )
    n_terms = 2 * (len(X) + 5 + 8 + 2)  # as in test_permutation_equals_sklearn
    # R^2 = 1 - SSE / SST: terms of the size of 1 + |R^2|
    assert_f32_close(r.importances, sk.importances, n_terms=n_terms,
                     magnitude=2 * (1 + abs(r.baseline_score)) + np.abs(sk.importances))
    assert_f32_close(r.baseline_score, r2_score(y, est.predict(X)), n_terms=n_terms,
                     magnitude=1 + abs(r.baseline_score))
    # a plain callable is a loss: importance = its increase (same numbers as the built-in mse, which sums in
    # float32 where the callable gets float32 predictions and sums in float64)
    from sklearn.metrics import mean_squared_error

    a = permutation_importance(model, X, y, metric=mean_squared_error, key=KEY, n_repeats=2)
    b = permutation_importance(model, X, y, metric="mse", key=KEY, n_repeats=2)
    assert_f32_close(a.importances, b.importances, n_terms=n_terms,
                     magnitude=2 * b.baseline_score + np.abs(b.importances))


def test_metrics_match_sklearn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    yt, yp = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    # float32 means of 150 nonnegative terms (inputs rounded to float32, a difference and a square: +3)
    np.testing.assert_allclose(mse(yt, yp), skm.mean_squared_error(yt, yp), rtol=f32_tol(1, yt.size + 3))
    np.testing.assert_allclose(mae(yt, yp), skm.mean_absolute_error(yt, yp), rtol=f32_tol(1, yt.size + 3))
    probs = rng.dirichlet(np.ones(4), size=50).astype(np.float32)
    labels = rng.integers(0, 4, size=50)
    np.testing.assert_allclose(accuracy(labels, probs), skm.accuracy_score(labels, probs.argmax(1)))
    np.testing.assert_allclose(  # 50 terms -log p, each a few roundings
        log_loss(labels, probs), skm.log_loss(labels, probs, labels=range(4)), rtol=f32_tol(1, 50 + 3)
    )
    p1 = rng.uniform(size=(50, 1)).astype(np.float32)
    b = rng.integers(0, 2, size=(50, 1))
    np.testing.assert_allclose(log_loss(b, p1), skm.log_loss(b[:, 0], p1[:, 0]), rtol=f32_tol(1, 50 + 3))
    np.testing.assert_allclose(accuracy(b, p1), skm.accuracy_score(b[:, 0], p1[:, 0] > 0.5))
    pk = rng.uniform(size=(50, 6)).astype(
        np.float32
    )  # per-element binary labels (seed 001: one per time step)
    bk = rng.integers(0, 2, size=(50, 6))
    np.testing.assert_allclose(accuracy(bk, pk), np.mean((pk > 0.5) == bk), rtol=f32_tol(1, 1))  # count / n
    np.testing.assert_allclose(log_loss(bk, pk), skm.log_loss(bk.reshape(-1), pk.reshape(-1)),
                               rtol=f32_tol(1, bk.size + 3))
    mask = np.arange(50) < 20
    np.testing.assert_allclose(  # the masked rows are selected away (jnp.where), not summed
        jax.jit(mse)(yt, yp, mask), skm.mean_squared_error(yt[:20], yp[:20]), rtol=f32_tol(1, yt.size + 3)
    )


# ------------------------------------------------------------------------------------------- results & errors
def test_results_round_trip_frame_and_plot(mlp, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    model, X, y, _ = mlp
    results = [
        perturbation_importance(model, X, key=KEY),
        input_perturbation(model, X, y, key=KEY),
        permutation_importance(model, X, y, key=KEY, n_repeats=2),
        improved_stepwise(model, X, y),
        improved_stepwise(model, X, variant=2),
        lek_profile(model, X, steps=5),
    ]
    for r in results:
        path = tmp_path / f"{type(r).__name__}.json"
        r.save(path)
        back = load_result(path)
        assert type(back) is type(r)
        for f in r.__dataclass_fields__:
            a, b = getattr(r, f), getattr(back, f)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            elif isinstance(a, float) and math.isnan(a):
                assert math.isnan(b)
            else:
                assert a == b, f
        df = r.to_frame()
        assert list(df["feature"]) == ["a", "b", "c", "d"] and sorted(df["rank"]) == [1, 2, 3, 4]
        assert r.ranking()[-1][0] == "d"  # the ignored input ranks last
        fig = r.plot(path=tmp_path / f"{type(r).__name__}.png")
        assert os.path.getsize(tmp_path / f"{type(r).__name__}.png") > 0
        if type(r).__name__ == "LekProfile":
            assert len([ax for ax in fig.axes if ax.get_visible()]) == 4  # one panel per input
            assert len(r.curves_frame()) == r.curves.size
        matplotlib.pyplot.close(fig)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m, X, y: perturbation_importance(m, X, key=None), "key=jax.random.key"),
        (lambda m, X, y: perturbation_importance(m, X, key=KEY, features=["zz"]), "'zz'.*features: \\['a'"),
        (lambda m, X, y: perturbation_importance(m, X, key=KEY, noise="cauchy"), "noise must be"),
        (lambda m, X, y: perturbation_importance(m, X, key=KEY, scale=[1, 2]), "one per feature \\(4\\)"),
        (lambda m, X, y: perturbation_importance(m, X[:, :3], key=KEY), "expects \\[n_samples, 4\\]"),
        (lambda m, X, y: input_perturbation(m, X, y[:, :1], key=KEY), "needs \\[203, 2\\]"),
        (lambda m, X, y: input_perturbation(m, X, y, metric="r2", key=KEY), "not a known metric"),
        (lambda m, X, y: permutation_importance(m, X, y), "key=jax.random.key\\(seed\\) or permutations="),
        (
            lambda m, X, y: permutation_importance(m, X, y, permutations=np.zeros((2, 203), int)),
            "permutations of",
        ),
        (lambda m, X, y: permutation_importance(m, X, y[:10], key=KEY), "expected 203 rows"),
        (
            lambda m, X, y: permutation_importance(m, X, np.full(203, 5), metric="accuracy", key=KEY),
            "labels outside",
        ),
        (lambda m, X, y: improved_stepwise(m, X), "needs targets y"),
        (
            lambda m, X, y: improved_stepwise(m, X, np.where(np.arange(203)[:, None] == 9, np.nan, y)),
            "y row 9",
        ),
        (lambda m, X, y: improved_stepwise(m, X, y, variant=3), "variant must be 1"),
        (lambda m, X, y: lek_profile(m, X, quantiles=(0.5, 2)), "quantiles must be"),
        (lambda m, X, y: lek_profile(m, X, steps=1), "steps must be"),
    ],
)
def test_errors_name_the_argument_and_the_fix(mlp, call, match):
    model, X, y, _ = mlp
    with pytest.raises(ValueError, match=match):
        call(model, X, y)


# --------------------------------------------------------------------------------------------------- seed 001
@pytest.mark.slow
def test_seed001_lstm_variables_1_and_2_dominate():
    """Seed 001: 3-layer LSTM on y_t = x0_t * x1_t < 0.25; effects of variables 1 and 2 >> variable 3."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(2019)
    inp = keras.layers.Input(shape=(10, 3))
    h = keras.layers.LSTM(10, activation="relu", return_sequences=True)(inp)
    h = keras.layers.LSTM(5, activation="relu", return_sequences=True)(h)
    h = keras.layers.LSTM(1, activation="sigmoid", return_sequences=True)(h)
    net = keras.models.Model(inp, keras.layers.Flatten()(h))
    net.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    rng = np.random.default_rng(2019)
    X = rng.random((4000, 10, 3)).astype(np.float32)
    net.fit(X, (X[:, :, 0] * X[:, :, 1] < 0.25).astype(np.float32), batch_size=32, epochs=4, verbose=0)

    model = jaxsens.Model.from_keras(net)
    sample = rng.random((1000, 10, 3)).astype(np.float32)
    # two float32 LSTM stacks, 10 steps; per step the gates sum fan-ins 3 + 10, 10 + 5 and 5 + 1, plus ~6
    # activations and products per layer; outputs are sigmoids (size 1)
    assert_f32_close(model(sample), net.predict(sample, verbose=0), n_terms=2 * 10 * (13 + 15 + 6 + 3 * 6),
                     magnitude=1.0)
    r = perturbation_importance(model, sample, scale=0.2, key=jax.random.key(2019))
    e = r.effect
    assert e[0] > 5 * e[2] and e[1] > 5 * e[2], e
    # the seed's own loop (Keras predict, numpy noise) agrees within sampling error
    orig = net.predict(sample, verbose=0)
    for i in range(3):
        new = sample.copy()
        new[:, :, i] += rng.normal(0.0, 0.2, size=new.shape[:2])
        loop = np.sqrt(np.mean((orig - net.predict(new, verbose=0)) ** 2))
        np.testing.assert_allclose(e[i], loop, rtol=0.15)
    # accuracy drops when x0 or x1 is permuted, not when x2 is
    y = (sample[:, :, 0] * sample[:, :, 1] < 0.25).astype(np.float32)
    p = permutation_importance(model, sample, y, metric="accuracy", key=KEY, n_repeats=2)
    assert p.importances_mean[0] > 0.05 and p.importances_mean[1] > 0.05 and abs(p.importances_mean[2]) < 0.02
