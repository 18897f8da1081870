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
    "perturbation": lambda m, X, y, b: (  # outputs first: transposed for this features-first table
        perturbation_importance(m, X, key=KEY, n_draws=2, batch_size=b).importance.T
    ),
    "input_perturbation": lambda m, X, y, b: (  # the curves [n_levels, n_features], transposed
        input_perturbation(m, X, y, key=KEY, batch_size=b).curves.T
    ),
    "permutation": lambda m, X, y, b: (
        permutation_importance(m, X, y, key=KEY, n_repeats=3, batch_size=b).importances
    ),
    "improved_stepwise_1": lambda m, X, y, b: improved_stepwise(m, X, y, variant=1, batch_size=b).importance,
    "improved_stepwise_2": lambda m, X, y, b: improved_stepwise(m, X, variant=2, batch_size=b).output_change.T,
    "lek_profile": lambda m, X, y, b: lek_profile(m, X, steps=9, batch_size=b).importance.T,
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


def _assert_round_trip(r, tmp_path) -> None:
    """``r.save`` / ``load_result`` give back the same class and every field (arrays bit for bit, NaN as NaN)."""
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
    assert_f32_close(four.importance, one.importance, n_terms=n_terms, magnitude=outputs)
    assert_f32_close(four.mean, one.mean, n_terms=n_terms, magnitude=outputs)
    assert np.all(four.effect[3] == 0) and np.all(four.importance[:, 3] == 0)


def test_perturbation_streams_a_npy_file_like_an_array(mlp, tmp_path):
    model, X, _, _ = mlp
    np.save(tmp_path / "x.npy", X)
    a = perturbation_importance(model, X, key=KEY, n_draws=2)
    b = perturbation_importance(model, str(tmp_path / "x.npy"), key=KEY, n_draws=2)
    np.testing.assert_array_equal(a.importance, b.importance)
    assert a.n_samples == b.n_samples == 203


# ----------------------------------------------------------------------------------------------- closed forms
def _linear(w, n_out=1):
    w = jnp.asarray(w, jnp.float32)
    return jaxsens.Model.from_function(lambda p, x: jnp.full((n_out,), x @ p), w, input_shape=(len(w),))


def test_perturbation_effect_closed_form_and_seed_measure():
    w = np.array([2.0, -1.0, 0.5])
    X = np.random.default_rng(0).uniform(size=(4000, 3))
    r = perturbation_importance(_linear(w, 2), X, noise_scale=0.2, key=KEY)
    # f(x') - f(x) = w_j * 0.2 * eps: RMS -> |w_j| * 0.2 (4000 draws: 2.2% relative sd of an RMS estimate)
    np.testing.assert_allclose(r.effect, np.abs(w) * 0.2, rtol=0.06)
    assert r.importance.shape == r.stderr.shape == r.mean.shape == (2, 3)  # outputs first
    np.testing.assert_allclose(r.importance, r.effect[None, :].repeat(2, 0), rtol=1e-6)
    assert np.all(r.effect_stderr > 0) and np.all(r.effect_stderr < 0.03 * r.effect)
    # both outputs are the same function: the per-output stderr is the aggregate's
    np.testing.assert_allclose(r.stderr, r.effect_stderr[None, :].repeat(2, 0), rtol=1e-6)
    u = perturbation_importance(_linear(w), X, noise_scale=0.2, noise="uniform", n_draws=3, key=KEY)
    np.testing.assert_allclose(
        u.effect, np.abs(w) * 0.2 / math.sqrt(3), rtol=0.05
    )  # RMS of U(-s, s) = s / sqrt 3
    per = perturbation_importance(_linear(w), X, noise_scale=[0.0, 0.2, 0.4], features=["x1", 2], key=KEY)
    assert per.feature_names == ("x1", "x2") and per.feature_index.tolist() == [1, 2]
    assert per.importance.shape == (1, 2) and per.noise_scale.tolist() == [0.2, 0.4]
    np.testing.assert_allclose(per.effect, [0.2, 0.2], rtol=0.06)
    # the noise of a feature does not depend on which other features are selected: the same terms, summed over at
    # most 4000 rows in float32 on each side (x @ w: 3 products)
    assert_f32_close(
        per.effect[0],
        perturbation_importance(_linear(w), X, noise_scale=0.2, features=[1], key=KEY).effect[0],
        n_terms=2 * (len(X) + 3),
    )


def test_perturbation_sequence_closed_form():
    v = np.array([1.0, 2.0, 3.0, 4.0])  # f(x)_t = v_t * x[t, 0]: each output sees its own step's noise
    m = jaxsens.Model.from_function(lambda p, x: p * x[:, 0], jnp.asarray(v, jnp.float32), input_shape=(4, 2))
    X = np.random.default_rng(5).normal(size=(3000, 4, 2))
    r = perturbation_importance(m, X, noise_scale=0.1, key=jax.random.key(7))
    assert r.importance.shape == (4, 2) and r.input_shape == (2,)  # [n_outputs, n_features]: per feature
    np.testing.assert_allclose(r.importance[:, 0], 0.1 * v, rtol=0.06)
    np.testing.assert_allclose(r.effect[0], 0.1 * np.sqrt(np.mean(v**2)), rtol=0.05)
    assert r.effect[1] == 0 and np.all(r.importance[:, 1] == 0)
    assert np.all(np.abs(r.mean[:, 0]) < 4 * 0.1 * v / np.sqrt(3000))  # symmetric noise: no drift


def test_input_perturbation_closed_form(mlp):
    w = np.array([3.0, -1.0, 0.0])
    X = np.random.default_rng(0).normal(size=(3000, 3)) * [1.0, 2.0, 0.5]
    y = X @ w
    levels = (0.1, 0.3, 0.5)
    r = input_perturbation(_linear(w), X, y[:, None], levels=levels, key=KEY)
    assert r.metric == "mse"  # metric="auto" on float targets
    std = X.std(axis=0, ddof=1)
    # streamed float32 moments (about a shift, 3000 rows per chunk at most) of X rounded to float32
    assert_f32_close(r.input_std**2, std**2, n_terms=len(X) + 3, magnitude=4 * std**2)
    # y = f(X) exactly: the MSE increase is (level * std_j * w_j)^2 * mean(eps^2); one draw shared by the
    # levels
    expected = (np.outer(levels, std * w)) ** 2  # [n_levels, n_features]
    np.testing.assert_allclose(r.curves, expected, rtol=0.07, atol=1e-9)
    ratio = r.curves[:, :2] / np.square(levels)[:, None]
    # one draw shared by the levels: the same squared terms, scaled; float32 means of 3000 rows (+ x @ w and noise)
    assert_f32_close(ratio, ratio[:1].repeat(3, 0), n_terms=2 * (len(X) + 3 + 2))
    # the headline is the mean over the levels (its per-row mean streamed: the same terms, averaged)
    assert_f32_close(r.importance, r.curves.mean(0), n_terms=2 * (len(X) + 3 + 2) + 3,
                     magnitude=r.curves.max(0))
    assert np.all(r.stderr[:2] > 0) and r.stderr[2] == 0 and r.importance[2] == 0
    # the levels share each row's draw, so the stderr of the mean is below the mean of the per-level stderrs
    assert np.all(r.stderr[:2] <= r.curves_stderr[:, :2].mean(0) * (1 + 1e-6))
    # y = X @ w in float64; the model sees X rounded to float32 and sums 3 products in float32
    assert r.baseline <= f32_tol(np.abs(X) @ np.abs(w), 3 + 1).max() ** 2
    assert [n for n, _, _ in r.ranking()][:2] == ["x0", "x1"]


def test_improved_stepwise_matches_float64_numpy(mlp):
    model, X, y, params = mlp
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    base = _mlp_numpy(params, X64)
    fixed = [np.where(np.arange(4) == j, X64.mean(0), X64) for j in range(4)]
    mse1 = np.array([np.mean((y64 - _mlp_numpy(params, f)) ** 2) for f in fixed]) - np.mean((y64 - base) ** 2)
    out2 = np.array([np.mean((_mlp_numpy(params, f) - base) ** 2, axis=0) for f in fixed])
    r1 = improved_stepwise(model, X, y)  # targets given: variant 1
    r2 = improved_stepwise(model, X)  # no targets: variant 2
    assert (r1.variant, r2.variant, r1.metric) == (1, 2, "mse")  # metric "auto" on float targets: mse
    n_terms = len(X) + MLP_CHAIN  # a float32 mean over the rows of a float32 network's outputs
    base_mse = np.mean((y64 - base) ** 2)
    assert_f32_close(r1.importance, mse1, n_terms=n_terms, magnitude=2 * base_mse + np.abs(mse1))
    assert_f32_close(r1.baseline, base_mse, n_terms=n_terms, magnitude=base_mse)
    squared_changes = (2 * np.abs(base).max()) ** 2
    assert_f32_close(r2.output_change, out2.T, n_terms=n_terms, magnitude=squared_changes)
    assert_f32_close(r2.importance, out2.mean(1), n_terms=n_terms, magnitude=squared_changes)
    np.testing.assert_allclose(r2.relative.sum(), 100.0)
    assert r1.stderr.shape == (4,) and np.isnan(r2.baseline)
    # stderr: the streamed std / sqrt(n) of the per-row values (float64 numpy of the same per-row terms)
    per_row = np.stack([np.mean((y64 - _mlp_numpy(params, f)) ** 2, axis=1) for f in fixed], 1)
    per_row -= np.mean((y64 - base) ** 2, axis=1)[:, None]
    np.testing.assert_allclose(r1.stderr, per_row.std(0, ddof=1) / np.sqrt(len(X)), rtol=1e-3)
    with pytest.warns(DeprecationWarning, match="baseline_error is deprecated"):
        assert r1.baseline_error == r1.baseline
    with pytest.warns(DeprecationWarning, match="per_output is deprecated"):
        np.testing.assert_array_equal(r2.per_output, r2.output_change.T)


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
    # a range: the difference of two curve values; importance is [n_outputs, n_features]
    assert r.importance.shape == r.stderr.shape == (1, 3) and r.n_sample_rows == 300
    assert_f32_close(r.importance[0], np.abs(w) * (X.max(0) - X.min(0)), n_terms=2 * (3 + 1), magnitude=size)
    # parallel curves: every setting gives the same range, so the bootstrap over settings is ~0 (rounding only)
    assert np.all(r.stderr <= f32_tol(size, 4 * (3 + 1))) and r.stderr[0, 2] == 0
    k = lek_profile(_linear(w), X, steps=5, n_clusters=3, key=KEY)
    from sklearn.cluster import KMeans

    seed_free = KMeans(n_clusters=3, n_init=10, random_state=0).fit(X).cluster_centers_
    assert k.settings.shape == (3, 3) and k.cluster_sizes.sum() == 300
    # same partition as an independent k-means run (centres up to order)
    np.testing.assert_allclose(np.sort(k.settings[:, 0]), np.sort(seed_free[:, 0]), atol=1e-6)
    # key=None is the documented default seed
    np.testing.assert_array_equal(lek_profile(_linear(w), X, steps=5, n_clusters=3).settings,
                                  lek_profile(_linear(w), X, steps=5, n_clusters=3, key=0).settings)


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
    n_terms, size = 2 * (len(X) + 5 + 8 + 2), 2 * abs(r.baseline) + np.abs(sk.importances)
    assert r.n_blocks == 1 and r.importance.shape == r.stderr.shape == (5,)
    np.testing.assert_array_equal(r.importances_mean, r.importance)
    np.testing.assert_allclose(r.stderr, r.importances.std(1, ddof=1) / 2, rtol=1e-12)  # 4 repeats
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
                     magnitude=2 * (1 + abs(r.baseline)) + np.abs(sk.importances))
    assert_f32_close(r.baseline, r2_score(y, est.predict(X)), n_terms=n_terms, magnitude=1 + abs(r.baseline))
    # a plain callable is a loss: importance = its increase (same numbers as the built-in mse, which sums in
    # float32 where the callable gets float32 predictions and sums in float64)
    from sklearn.metrics import mean_squared_error

    a = permutation_importance(model, X, y, metric=mean_squared_error, key=KEY, n_repeats=2)
    b = permutation_importance(model, X, y, metric="mse", key=KEY, n_repeats=2)
    assert_f32_close(a.importances, b.importances, n_terms=n_terms,
                     magnitude=2 * b.baseline + np.abs(b.importances))


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
    """permutation, improved stepwise (both variants) and Lek's profile: shared result base, save / load, frames,
    plots, deprecated names."""
    import matplotlib

    matplotlib.use("Agg")
    model, X, y, _ = mlp
    results = [
        permutation_importance(model, X, y, key=KEY, n_repeats=2),
        improved_stepwise(model, X, y),
        improved_stepwise(model, X, variant=2),
        lek_profile(model, X, steps=5),
    ]
    for r in results:
        assert isinstance(r, jaxsens.Result) and r.stderr.shape == r.importance.shape
        assert np.all(np.isfinite(r.stderr)) and np.all(r.stderr >= 0)
        _assert_round_trip(r, tmp_path)
        df = r.to_frame()
        n_out = max(r.n_outputs, 1)  # Lek's profile is per output (2), the others aggregate the outputs
        assert list(df["feature"]) == ["a", "b", "c", "d"] * n_out and sorted(df["rank"]) == sorted([1, 2, 3, 4] * n_out)
        assert r.ranking()[-1][0] == "d"  # the ignored input ranks last
        fig = r.plot(path=tmp_path / f"{type(r).__name__}.png")
        assert os.path.getsize(tmp_path / f"{type(r).__name__}.png") > 0
        assert "top 4 of 4" in fig._suptitle.get_text()
        matplotlib.pyplot.close(fig)
    perm, _, _, lek = results
    assert lek.importance.shape == (2, 4) and len(lek.curves_frame()) == lek.curves.size
    with pytest.warns(DeprecationWarning, match="baseline_score is deprecated"):
        assert perm.baseline_score == -perm.baseline  # scikit-learn's score of a loss: -mse
    with pytest.warns(DeprecationWarning, match="importance_per_output is deprecated"):
        np.testing.assert_array_equal(lek.importance_per_output, lek.importance.T)
    figs = lek.plot_curves(output="y1", top=None, path=tmp_path / "lek.png")
    assert len(figs) == 1 and sorted(os.listdir(tmp_path)).count("lek-1.png") == 1
    for f in figs:
        matplotlib.pyplot.close(f)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m, X, y: perturbation_importance(m, X, key=-1), "an int key is a seed"),
        (lambda m, X, y: perturbation_importance(m, X, key=KEY, features=["zz"]), "'zz'.*features: \\['a'"),
        (lambda m, X, y: perturbation_importance(m, X, key=KEY, noise="cauchy"), "noise must be one of"),
        (lambda m, X, y: perturbation_importance(m, X, key=KEY, noise_scale=[1, 2]), "one per feature \\(4\\)"),
        (lambda m, X, y: perturbation_importance(m, X, noise_scale=-0.1), "noise_scale must be >= 0"),
        (lambda m, X, y: perturbation_importance(m, X, n_draws=0), "n_draws must be >= 1"),
        (lambda m, X, y: perturbation_importance(m, X, scale=0.1, noise_scale=0.1), "pass only noise_scale"),
        (lambda m, X, y: perturbation_importance(m, X[:, :3], key=KEY), "expects \\[n_samples, 4\\]"),
        (lambda m, X, y: input_perturbation(m, X, y[:, :1], key=KEY), "metric 'mse' needs \\[2\\] per row"),
        (lambda m, X, y: input_perturbation(m, X, y, metric="r2", key=KEY), "metric must be one of"),
        (lambda m, X, y: input_perturbation(m, X, y, levels=(0.1, -0.2)), "levels must be >= 0"),
        (lambda m, X, y: input_perturbation(m, X, y, outputs=[0]), "outputs= does not apply"),
        (lambda m, X, y: input_perturbation(m, iter([X]), y), "one-shot iterator"),
        (lambda m, X, y: input_perturbation(m, X, np.full(203, 5), metric="accuracy"), "outside 0..1"),
        (lambda m, X, y: input_perturbation(m, X, np.full(203, 0.5), metric="accuracy"), "not whole numbers"),
        (lambda m, X, y: input_perturbation(m, X), "needs targets"),
        (
            lambda m, X, y: permutation_importance(m, X, y, permutations=np.zeros((2, 203), int)),
            "permutations of",
        ),
        (lambda m, X, y: permutation_importance(m, X, y[:10], key=KEY), "have 10 rows but the data"),
        (lambda m, X, y: permutation_importance(m, X, y, key=KEY, block_rows=100, permutations=np.zeros((2, 203))),
         "must then be one block"),
        (lambda m, X, y: permutation_importance(m, X, y, metric=Metric("l", mse), n_repeats=1), "n_repeats >= 2"),
        (lambda m, X, y: permutation_importance(m, X, y, outputs=[0]), "outputs= does not apply"),
        (
            lambda m, X, y: permutation_importance(m, X, np.full(203, 5), metric="accuracy", key=KEY),
            "labels outside",
        ),
        (lambda m, X, y: improved_stepwise(m, X, variant=1), "needs targets"),
        (lambda m, X, y: improved_stepwise(m, X, y, variant=2), "takes no targets"),
        (lambda m, X, y: improved_stepwise(m, X, y, metric=Metric("l", mse)), "per-sample"),
        (
            lambda m, X, y: improved_stepwise(m, X, np.where(np.arange(203)[:, None] == 9, np.nan, y)),
            "targets.* row 9, column 0 holds nan",
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


# ------------------------------------------------------------- perturbation / input perturbation: the protocol
def test_perturbation_and_input_perturbation_results_round_trip_frame_and_plot(mlp, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    model, X, y, _ = mlp
    p = perturbation_importance(model, X, key=KEY)
    q = input_perturbation(model, X, y, key=KEY)
    assert p.importance.shape == p.stderr.shape == (2, 4) and p.output_names == ("y0", "y1")
    assert q.importance.shape == q.stderr.shape == (4,) and q.output_names == () and q.curves.shape == (5, 4)
    for r in (p, q):
        _assert_round_trip(r, tmp_path)
        df = r.to_frame()
        assert sorted(set(df["feature"])) == ["a", "b", "c", "d"] and len(df) == r.importance.size
        assert {"importance", "stderr", "ci_low", "ci_high", "rank"} <= set(df.columns)
        assert r.ranking()[-1][0] == "d"  # the ignored input ranks last
        fig = r.plot(path=tmp_path / f"{type(r).__name__}.png")
        assert os.path.getsize(tmp_path / f"{type(r).__name__}.png") > 0
        matplotlib.pyplot.close(fig)
    assert list(p.to_frame()["output"]) == ["y0"] * 4 + ["y1"] * 4
    assert {"mean"} <= set(p.to_frame().columns)
    assert [f"increase@{lv:g}" for lv in q.levels] == list(q.to_frame().columns[-5:])
    np.testing.assert_array_equal(q.to_frame()["increase@0.5"], q.curves[-1])


def test_input_perturbation_plot_curves_names_the_top_features(mlp, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    model, X, y, _ = mlp
    r = input_perturbation(model, X, y)
    fig = r.plot_curves(top=2, path=tmp_path / "curves.png")
    assert os.path.getsize(tmp_path / "curves.png") > 0
    (ax,) = fig.axes
    top2 = [n for n, _, _ in r.ranking()[:2]]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"1. {top2[0]}", f"2. {top2[1]}", "95% interval (1.96 x stderr)"]
    assert "top 2 of 4" in ax.get_title()
    assert "noise level" in ax.get_xlabel() and "mse increase" in ax.get_ylabel()
    assert len(ax.lines) == 3  # two curves and the zero line
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), r.curves[:, r.feature_names.index(top2[0])])
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="top must be a positive integer"):
        r.plot_curves(top=0)


def test_input_perturbation_streams_npy_data_and_targets_like_arrays(mlp, tmp_path):
    model, X, y, _ = mlp
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    a = input_perturbation(model, X, y, batch_size=64)
    b = input_perturbation(model, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), batch_size=64)
    # the same rows in the same chunks, the same noise (per-row keys): bit for bit
    for f in ("importance", "stderr", "curves", "curves_stderr", "input_std"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.baseline == b.baseline and a.n_samples == b.n_samples == 203


def test_input_perturbation_reads_a_target_column_of_a_csv(mlp, tmp_path):
    import pandas as pd

    model, X, y, _ = mlp
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    frame["t0"], frame["t1"] = y[:, 0], y[:, 1]
    frame.to_csv(tmp_path / "d.csv", index=False, float_format="%.9g")
    a = input_perturbation(model, X, y, batch_size=64)
    b = input_perturbation(model, str(tmp_path / "d.csv"), ["t0", "t1"], batch_size=64)
    assert b.feature_names == ("a", "b", "c", "d") and b.n_samples == 203
    # %.9g round-trips float32 exactly: the same numbers
    np.testing.assert_array_equal(a.curves, b.curves)


def test_input_perturbation_progress_counts_both_passes(mlp):
    model, X, y, _ = mlp
    calls = []
    input_perturbation(model, X, y, batch_size=50, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (2 * 203, 2 * 203)
    assert all(t == 406 for _, t in calls) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert (203, 406) in calls  # the first pass ends half way
    seen = []
    perturbation_importance(model, X, batch_size=50, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (203, 203)


def _classifier(n_out=3, softmax=True):
    w = np.random.default_rng(4).normal(size=(4, n_out)).astype(np.float32)

    def apply(p, x):
        z = x @ p
        return jax.nn.softmax(z) if softmax else jax.nn.sigmoid(z)

    return jaxsens.Model.from_function(apply, w, input_shape=(4,), outputs_sum_to_one=softmax and n_out > 1)


def test_input_perturbation_metric_auto_follows_the_targets():
    X = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    soft = _classifier(3, softmax=True)
    labels = np.asarray(soft(X)).argmax(1)
    flipped = np.where(np.arange(300) % 7 == 0, (labels + 1) % 3, labels)  # not a perfect classifier
    auto = input_perturbation(soft, X, flipped)  # integer labels, outputs summing to one: log_loss
    assert auto.metric == "log_loss" and auto.options["metric"] == "log_loss" and not auto.greater_is_better
    np.testing.assert_array_equal(auto.curves, input_perturbation(soft, X, flipped, metric="log_loss").curves)
    # the baseline is sklearn's log loss of the model's probabilities (float32 network: fan-in 4, softmax)
    from sklearn.metrics import log_loss as sk_log_loss

    probs = np.asarray(soft(X), np.float64)
    probs /= probs.sum(1, keepdims=True)  # float32 probabilities sum to 1 within a few eps; sklearn wants exactly 1
    # a float32 mean of 300 terms -log p, each after a chain of a 4-term dot product, a softmax (3 terms) and a log:
    # the chain's relative errors in p become absolute errors of -log p (size 1 each)
    assert_f32_close(auto.baseline, sk_log_loss(flipped, probs, labels=range(3)), n_terms=300 + 4 + 3 + 3,
                     magnitude=(-np.log(probs[np.arange(300), flipped])).max() + 1)
    sig = _classifier(3, softmax=False)  # three sigmoids: labels, but the outputs do not sum to one: accuracy
    acc = input_perturbation(sig, X, flipped)
    assert acc.metric == "accuracy" and acc.greater_is_better and "accuracy decrease" in acc.importance_label
    # accuracy of argmax against the labels, a count over 300 rows
    assert acc.baseline == pytest.approx(np.mean(np.asarray(sig(X)).argmax(1) == flipped), abs=1e-6)
    np.testing.assert_array_equal(acc.curves, input_perturbation(sig, X, flipped, metric="accuracy").curves)
    bool_labels = input_perturbation(_classifier(1, softmax=False), X, labels == 0)  # bool -> labels
    assert bool_labels.metric == "accuracy"
    values = input_perturbation(soft, X, np.asarray(soft(X)) + 0.1)  # float targets: mse
    assert values.metric == "mse"
    np.testing.assert_array_equal(values.curves, input_perturbation(soft, X, np.asarray(soft(X)) + 0.1,
                                                                    metric="mse").curves)


def test_input_perturbation_whole_data_set_metric_is_bounded_and_agrees(mlp, monkeypatch):
    from sklearn.metrics import mean_squared_error

    model, X, y, _ = mlp
    streamed = input_perturbation(model, X, y, levels=(0.2, 0.5))
    whole = input_perturbation(model, X, y, levels=(0.2, 0.5),
                               metric=Metric("mse_sklearn", mean_squared_error, per_sample=False))
    assert whole.metric == "mse_sklearn" and whole.options["metric"] == "mse_sklearn"
    # the same noise, the same predictions; float32 means over 203 rows against sklearn's float64 mean
    size = 2 * np.mean((y - np.asarray(model(X))) ** 2) + np.abs(streamed.curves)
    assert_f32_close(whole.curves, streamed.curves, n_terms=2 * (len(X) + MLP_CHAIN), magnitude=size)
    assert whole.curves[:, 3].tolist() == [0.0, 0.0]  # the ignored input
    # a bootstrap over rows (64 replicates: ~9% relative sd) estimates the same standard errors
    np.testing.assert_allclose(whole.stderr[:3], streamed.stderr[:3], rtol=0.5)
    assert whole.stderr[3] == 0
    from jaxsens import _perturbation

    monkeypatch.setattr(_perturbation, "_WHOLE_SET_BYTES", 100 * 4 * (1 + 2 * 4) * 2 + 400 * 4)
    with pytest.raises(jaxsens.DataError, match="203 rows, more than the limit of 1"):
        input_perturbation(model, X, y, levels=(0.2, 0.5), metric=Metric("m", mean_squared_error))


def test_perturbation_noise_scale_alias_warns_and_gives_the_same_result(mlp):
    model, X, y, _ = mlp
    new = perturbation_importance(model, X, noise_scale=0.3)
    with pytest.warns(DeprecationWarning, match="scale= is deprecated; use noise_scale="):
        old = perturbation_importance(model, X, scale=0.3)
    np.testing.assert_array_equal(old.importance, new.importance)
    assert old.options == new.options and old.options["noise_scale"] == (0.3,)
    with pytest.warns(DeprecationWarning, match="effect_per_output is deprecated"):
        np.testing.assert_array_equal(new.effect_per_output, new.importance.T)
    with pytest.warns(DeprecationWarning, match="mean_change is deprecated"):
        np.testing.assert_array_equal(new.mean_change, new.mean.T)
    with pytest.warns(DeprecationWarning, match="scale is deprecated"):
        np.testing.assert_array_equal(new.scale, new.noise_scale)
    model_ip = input_perturbation(model, X, y)
    with pytest.warns(DeprecationWarning, match="error_increase is deprecated"):
        np.testing.assert_array_equal(model_ip.error_increase, model_ip.curves.T)
    with pytest.warns(DeprecationWarning, match="baseline_error is deprecated"):
        assert model_ip.baseline_error == model_ip.baseline


@pytest.mark.parametrize("method", ["perturbation", "input_perturbation"])
def test_default_key_is_seed_0_and_int_keys_are_seeds(method, mlp):
    model, X, y, _ = mlp
    run = (lambda **k: perturbation_importance(model, X, **k)) if method == "perturbation" else (
        lambda **k: input_perturbation(model, X, y, **k))
    default = run()
    np.testing.assert_array_equal(default.importance, run().importance)  # deterministic by default
    np.testing.assert_array_equal(default.importance, run(key=0).importance)
    np.testing.assert_array_equal(default.importance, run(key=jax.random.key(0)).importance)
    np.testing.assert_array_equal(default.importance, run(key=jax.random.PRNGKey(0)).importance)
    seven = run(key=7)
    np.testing.assert_array_equal(seven.importance, run(key=jax.random.key(7)).importance)
    assert not np.array_equal(seven.importance, default.importance)
    assert default.options["seed"] == 0 and seven.options["seed"] == 7
    with pytest.raises(TypeError, match="int seed or a JAX PRNG key"):
        run(key="7")


def test_perturbation_outputs_selects_outputs(mlp):
    model, X, _, _ = mlp
    full = perturbation_importance(model, X, n_draws=2)
    one = perturbation_importance(model, X, n_draws=2, outputs=["y1"])
    assert one.output_names == ("y1",) and one.importance.shape == (1, 4)
    # the same noise and predictions; only the reported output differs. Not bitwise: selecting an output changes
    # the compiled graph, and XLA may fuse (FMA-contract) the last layer differently on another CPU. Each
    # prediction is a float32 chain of fan-in 4 and 6; the statistics then sum len(X) rows in float32.
    n_terms = 2 * (4 + 6 + len(X))
    assert_f32_close(one.importance[0], full.importance[1], n_terms=n_terms)
    assert_f32_close(one.mean[0], full.mean[1], n_terms=n_terms, magnitude=np.abs(full.importance[1]).max())
    assert_f32_close(one.effect, full.importance[1], n_terms=n_terms)  # one output: the RMS over outputs is its RMS


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
    r = perturbation_importance(model, sample, noise_scale=0.2, key=jax.random.key(2019))
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
