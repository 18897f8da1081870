"""PaD (Dimopoulos) against a float64 closed form, its bootstrap standard error, and its invariants.

Oracles: the derivatives of a tanh network in closed form (float64); the documented Poisson bootstrap redone in
float64 from those derivatives with the same weights (``Poisson(1)`` from ``fold_in(key(BOOT_SEED), row)``).
"""

from __future__ import annotations

import jax

from jaxsens import _stats
import jax.numpy as jnp
import numpy as np
import pytest
from _tol import assert_f32_close

import jaxsens
from jaxsens._pad import PartialDerivatives, partial_derivatives
from jaxsens._stats import BOOT_SEED, N_BOOT


def _tanh_net(n_in=4, seed=3):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(5, n_in))
    w2 = rng.normal(size=(2, 5))
    params = {"w1": jnp.asarray(w1, jnp.float32), "w2": jnp.asarray(w2, jnp.float32)}
    model = jaxsens.Model.from_function(lambda p, x: p["w2"] @ jnp.tanh(p["w1"] @ x), params, input_shape=(n_in,))
    # the float32 weights, in float64, for the closed form
    return model, np.asarray(params["w1"], np.float64), np.asarray(params["w2"], np.float64)


def _derivatives(xs, w1, w2):
    """d y_k / d x_i = sum_h w2[k,h] (1 - tanh(w1 x)_h^2) w1[h,i], per row: [n, k, i] in float64."""
    s = 1 - np.tanh(np.asarray(xs, np.float64) @ w1.T) ** 2  # [n, h]
    return np.einsum("kh,nh,hi->nki", w2, s, w1)


def _bootstrap_stderr(d):
    """The documented bootstrap in float64: replicate r weighs row n by Poisson(1) from fold_in(key, n)."""
    key = jax.random.key(BOOT_SEED)
    draw = lambda rows: _stats.poisson_weights(key, rows, N_BOOT)  # noqa: E731 - the documented weights
    w = np.asarray(draw(np.arange(len(d))))  # [n, n_boot]
    ssd = np.einsum("nr,nk...->rk...", w.astype(np.float64), d**2)  # [n_boot, k, *shape]
    k = d.shape[1]
    shares = ssd / ssd.reshape(N_BOOT, k, -1).sum(axis=2).reshape(N_BOOT, k, *(1,) * (d.ndim - 2))
    return shares.std(axis=0, ddof=1), shares


# float32 roundings along one derivative: the input, 4 + 5 products summed, tanh, 1 - t^2, a square
CHAIN = 2 * (1 + 4 + 5 + 3)


def test_pad_matches_float64_closed_form():
    model, w1, w2 = _tanh_net()
    xs = np.random.default_rng(4).normal(size=(500, 4)).astype(np.float32)
    d = _derivatives(xs, w1, w2)
    ssd = (d**2).sum(axis=0)
    want = ssd / ssd.sum(axis=1, keepdims=True)
    got = partial_derivatives(model, xs, batch_size=64)
    assert isinstance(got, PartialDerivatives) and got.method == "pad" and got.n_samples == 500
    n_terms = 64 + CHAIN  # chunk sums of 64 rows
    assert_f32_close(got.ssd, ssd, n_terms=n_terms)
    assert_f32_close(got.importance, want, n_terms=n_terms + 4 + 1)  # + the row total of 4 inputs, a divide
    np.testing.assert_allclose(got.importance.sum(axis=1), 1.0, rtol=1e-12)  # normalised in float64
    assert_f32_close(got.mean, d.mean(axis=0), n_terms=n_terms, magnitude=np.sqrt(ssd / len(xs)).max())


def test_pad_stderr_is_the_documented_poisson_bootstrap():
    model, w1, w2 = _tanh_net()
    xs = np.random.default_rng(4).normal(size=(300, 4)).astype(np.float32)
    d = _derivatives(xs, w1, w2)
    want, shares = _bootstrap_stderr(d)
    got = partial_derivatives(model, xs, batch_size=128)
    assert np.isfinite(got.stderr).all() and (got.stderr > 0).all()  # a non-degenerate model: every share varies
    # each replicate share carries the float32 error of a 128-row chunk sum (Poisson weights are small exact
    # integers); a standard deviation moves by at most sqrt(B / (B - 1)) times the largest change of its inputs
    assert_f32_close(got.stderr, want, n_terms=128 + CHAIN + 4 + 1, magnitude=1.02 * shares.max())
    assert got.stderr_rule.startswith(f"std of the shares over {N_BOOT} Poisson-bootstrap replicates")


def test_pad_stderr_shrinks_like_one_over_sqrt_n():
    model, _, _ = _tanh_net()
    small = np.random.default_rng(5).normal(size=(500, 4)).astype(np.float32)
    large = np.random.default_rng(6).normal(size=(16 * 500, 4)).astype(np.float32)
    ratio = partial_derivatives(model, small).stderr / partial_derivatives(model, large).stderr
    # expected sqrt(16) = 4. A bootstrap standard error from B = 64 replicates has relative noise about
    # 1 / sqrt(2 (B - 1)) = 0.089; two independent ones, plus the sampling noise of the plug-in estimate at
    # n = 500 (~0.05), give a log-ratio sd of ~0.135. Allow 4.5 sd: exp(+-0.61) around 4. (No pooled check over
    # the 8 elements: they share the replicate weights, so their bootstrap noise is correlated.)
    assert np.all((ratio > 4 * np.exp(-0.61)) & (ratio < 4 * np.exp(0.61))), ratio


def test_pad_is_batch_size_invariant_including_the_bootstrap():
    model, _, _ = _tanh_net()
    xs = np.random.default_rng(7).normal(size=(300, 4)).astype(np.float32)
    ref = partial_derivatives(model, xs, batch_size=300)
    for b in (7, 64, 1024):  # ragged last chunk, several chunks, one padded chunk
        got = partial_derivatives(model, xs, batch_size=b)
        n_terms = 2 * (300 + CHAIN) + 4 + 1  # both sides: chunk sums of up to 300 rows, the normalisation
        assert_f32_close(got.importance, ref.importance, n_terms=n_terms, magnitude=1.0)
        # the replicates use the same row weights (keyed by global row index), so only rounding differs
        assert_f32_close(got.stderr, ref.stderr, n_terms=n_terms, magnitude=1.02)


def test_pad_ignored_input_gets_exactly_zero_and_linear_model_no_spread():
    w = jnp.array([[1.0, 0.0, -2.0]])
    m = jaxsens.Model.from_function(lambda p, x: p @ jnp.tanh(x), w, input_shape=(3,))
    xs = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    got = partial_derivatives(m, xs, batch_size=16)
    assert got.importance[0, 1] == 0.0 and got.stderr[0, 1] == 0.0 and got.ssd[0, 1] == 0.0
    assert (got.stderr[0, [0, 2]] > 0).all()
    lin = jaxsens.Model.from_function(lambda p, x: p @ x, w, input_shape=(3,))
    r = partial_derivatives(lin, xs)
    np.testing.assert_array_equal(r.importance, [[0.2, 0.0, 0.8]])  # 1 / 5, 4 / 5: exact in float64
    assert np.abs(r.stderr).max() < 1e-15  # constant derivatives: every replicate has the same shares


def test_pad_sequence_input_is_per_element_and_ranks_features_by_the_sum(tmp_path):
    w = jnp.asarray(np.random.default_rng(0).normal(size=(3,)), jnp.float32)
    model = jaxsens.Model.from_function(lambda p, x: jnp.atleast_1d(jnp.sum(jnp.tanh(x @ p))), w, input_shape=(6, 3))
    xs = np.random.default_rng(1).normal(size=(200, 6, 3)).astype(np.float32)
    got = partial_derivatives(model, xs)
    w64 = np.asarray(w, np.float64)
    d = (1 - np.tanh(xs.astype(np.float64) @ w64) ** 2)[..., None] * w64  # [n, 6, 3]
    ssd = (d**2).sum(axis=0)
    assert got.importance.shape == got.stderr.shape == got.ssd.shape == got.mean.shape == (1, 6, 3)
    # 200 rows in one chunk; per row 3 products, tanh, 1 - t^2, a square
    assert_f32_close(got.ssd[0], ssd, n_terms=200 + 3 + 3)
    assert_f32_close(got.importance[0], ssd / ssd.sum(), n_terms=200 + 3 + 3 + 18 + 1, magnitude=ssd.max() / ssd.sum())
    share, err = got.feature_importance()
    np.testing.assert_array_equal(share, got.importance.sum(axis=1))  # features: the shares summed over time
    np.testing.assert_allclose(share.sum(), 1.0, rtol=1e-12)
    # the exact bootstrap stderr of the feature share is at most the sum of the per-step ones (triangle
    # inequality on the replicates), and matches the float64 bootstrap of the summed shares
    assert (err > 0).all() and (err <= got.stderr.sum(axis=1) * (1 + 1e-12)).all()
    _, shares = _bootstrap_stderr(d[:, None])  # [n_boot, 1, 6, 3]
    assert_f32_close(err, shares.sum(axis=2).std(axis=0, ddof=1), n_terms=200 + 3 + 3 + 18 + 1, magnitude=1.02)
    assert [r[0] for r in got.ranking()] == [f"x{j}" for j in np.argsort(-share[0], kind="stable")]
    assert len(got.ranking(by="element")) == 18
    frame = got.to_frame()
    assert {"feature", "output", "step", "importance", "stderr", "ssd", "mean", "rank"} <= set(frame.columns)
    got.save(tmp_path / "pad.json")
    back = jaxsens.load_result(tmp_path / "pad.json")
    np.testing.assert_array_equal(back.importance, got.importance)
    np.testing.assert_array_equal(back.feature_stderr, got.feature_stderr)
    assert back.ranking() == got.ranking()


def test_pad_is_in_the_table_with_the_jacobian_options():
    spec = jaxsens.methods()["pad"]
    assert spec.function is jaxsens.partial_derivatives and spec.family == "gradient" and not spec.random
    assert [o.name for o in spec.options] == ["mode", "precision"]
    model, _, _ = _tanh_net()
    xs = np.random.default_rng(8).normal(size=(40, 4)).astype(np.float32)
    rev = partial_derivatives(model, xs, mode="reverse")
    fwd = partial_derivatives(model, xs, mode="forward")
    assert_f32_close(fwd.importance, rev.importance, n_terms=2 * (40 + CHAIN) + 5, magnitude=1.0)
    one = partial_derivatives(model, xs, outputs=[1])
    assert one.output_names == ("y1",)
    assert_f32_close(one.importance, rev.importance[1:], n_terms=2 * (40 + CHAIN) + 5, magnitude=1.0)
    with pytest.raises(ValueError, match=r"partial_derivatives\(\) does not use targets"):
        partial_derivatives(model, xs, np.zeros(40))


def test_pad_two_inputs_share_the_total_over_all_inputs():
    rng = np.random.default_rng(9)
    wa, wb, v = rng.normal(size=(5, 3)), rng.normal(size=(5, 4, 2)), rng.normal(size=(2, 5))
    params = {k: jnp.asarray(a, jnp.float32) for k, a in (("wa", wa), ("wb", wb), ("v", v))}

    def apply(p, x):
        a, b = x
        return p["v"] @ jnp.tanh(p["wa"] @ a + jnp.einsum("htf,tf->h", p["wb"], b))

    model = jaxsens.Model(apply=apply, params=params, input_shape=((3,), (4, 2)), output_shape=(2,),
                          input_names=("a", "b"))
    xa = rng.normal(size=(120, 3)).astype(np.float32)
    xb = rng.normal(size=(120, 4, 2)).astype(np.float32)
    got = partial_derivatives(model, (xa, xb), batch_size=50)
    assert isinstance(got, jaxsens.Results) and list(got) == ["a", "b"]
    wa64, wb64, v64 = (np.asarray(params[k], np.float64) for k in ("wa", "wb", "v"))
    g = 1 - np.tanh(xa.astype(np.float64) @ wa64.T + np.einsum("htf,ntf->nh", wb64, xb.astype(np.float64))) ** 2
    d = {"a": np.einsum("kh,nh,hi->nki", v64, g, wa64), "b": np.einsum("kh,nh,htf->nktf", v64, g, wb64)}
    ssd = {k: (x**2).sum(axis=0) for k, x in d.items()}
    total = ssd["a"].sum(axis=1) + ssd["b"].sum(axis=(1, 2))
    n_terms = 50 + 2 * (1 + 3 + 8 + 5 + 3) + 11 + 1
    assert_f32_close(got["a"].importance, ssd["a"] / total[:, None], n_terms=n_terms, magnitude=1.0)
    assert_f32_close(got["b"].importance, ssd["b"] / total[:, None, None], n_terms=n_terms, magnitude=1.0)
    np.testing.assert_allclose(got["a"].importance.sum(1) + got["b"].importance.sum((1, 2)), 1.0, rtol=1e-12)
    # the bootstrap replicates normalise over both inputs together, as the point estimate does
    key = jax.random.key(BOOT_SEED)
    w = np.asarray(_stats.poisson_weights(key, jax.numpy.arange(120, dtype=jax.numpy.uint32), N_BOOT))
    ra = np.einsum("nr,nki->rki", w.astype(np.float64), d["a"] ** 2)
    rb = np.einsum("nr,nktf->rktf", w.astype(np.float64), d["b"] ** 2)
    rt = ra.sum(axis=2) + rb.sum(axis=(2, 3))  # each replicate's total over both inputs
    assert_f32_close(got["a"].stderr, (ra / rt[..., None]).std(axis=0, ddof=1), n_terms=n_terms, magnitude=1.02)
    assert_f32_close(got["b"].stderr, (rb / rt[..., None, None]).std(axis=0, ddof=1), n_terms=n_terms, magnitude=1.02)
    assert got["b"].feature_stderr.shape == (2, 2) and got["a"].feature_stderr is None
    assert got["b"].feature_names == ("b[0]", "b[1]")
