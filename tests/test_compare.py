"""jaxsens.compare: paired per-row differences folded in one pass, replicates, Holm, rankings, files.

Oracles: each method run alone on each version (the paired route must give exactly its results), float64 numpy
per-row differences of a closed-form Jacobian, scipy's pooled t-test, sklearn's nDCG, a brute-force Holm.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

import jaxsens
from jaxsens import _compare
from jaxsens._compare import holm, ndcg
from tests._tol import assert_f32_close, f32_tol

F = 5
N = 300
BATCH = 64
RNG = np.random.default_rng(1234)
X = RNG.normal(size=(N, F)).astype(np.float32)


def _tanh_fn(p, x):
    return jnp.tanh(p["W"] @ x + p["b"])


def tanh_model(W, b=None, fn=_tanh_fn):
    W = np.asarray(W, np.float32)
    b = np.zeros(W.shape[0], np.float32) if b is None else np.asarray(b, np.float32)
    return jaxsens.Model.from_function(
        fn, {"W": jnp.asarray(W), "b": jnp.asarray(b)}, input_shape=(W.shape[1],)
    )


def tanh_abs_jacobian(W, b, xs) -> np.ndarray:
    """float64 oracle: per-row |J| of tanh(W x + b), ``[n, k, F]``."""
    W, b = np.asarray(W, np.float64), np.asarray(b, np.float64)
    z = np.tanh(xs.astype(np.float64) @ W.T + b)  # [n, k]
    return np.abs((1 - z**2)[:, :, None] * W[None])


def additive_fn(p, x):
    """f_k(x) = sum_j tanh(W_kj x_j): feature j's derivative depends on W[:, j] and x_j only."""
    return jnp.sum(jnp.tanh(p["W"] * x[None, :]), axis=1)


def additive_model(W):
    return jaxsens.Model.from_function(
        additive_fn, {"W": jnp.asarray(W, jnp.float32)}, input_shape=(np.shape(W)[1],)
    )


W0 = RNG.normal(size=(2, F)).astype(np.float32)
B0 = RNG.normal(scale=0.1, size=2).astype(np.float32)


# ------------------------------------------------------------------------------------------ paired == alone
@pytest.mark.parametrize("method", ["jacobian", "gradient-x-input", "perturbation"])
def test_paired_route_gives_each_methods_own_result(method):
    other = lambda p, x: jnp.sin(p["W"] @ x) + p["b"]  # a second architecture: its own group
    models = [tanh_model(W0, B0), tanh_model(1.3 * W0, B0), tanh_model(W0, B0, fn=other)]
    kw = {"key": 7} if method == "perturbation" else {}
    comp = jaxsens.compare(models, X, method=method, batch_size=BATCH, **kw)
    assert comp.noise == "rows, paired"
    fn = jaxsens.methods()[method].function
    for v, m in enumerate(models):
        alone = fn(m, X, batch_size=BATCH, **kw)
        (got,) = comp.results[v]
        assert type(got) is type(alone)
        for field in ("importance", "stderr", "mean"):
            want = getattr(alone, field)
            assert_f32_close(
                getattr(got, field),
                want,
                n_terms=BATCH,
                magnitude=np.abs(alone.importance).max(),
                err_msg=f"{method} {field} version {v}",
            )
        np.testing.assert_array_equal(comp.importance[v], got.importance)
        assert got.n_samples == N


def test_delta_and_its_stderr_equal_float64_paired_differences():
    W1 = W0.copy()
    W1[:, 2] *= 1.5
    W1[1, 0] = -0.2
    comp = jaxsens.compare([tanh_model(W0, B0), tanh_model(W1, B0)], X, batch_size=BATCH)
    d = tanh_abs_jacobian(W1, B0, X) - tanh_abs_jacobian(W0, B0, X)  # [n, k, F]
    mag = max(np.abs(W0).max(), np.abs(W1).max())
    assert comp.delta.shape == comp.delta_stderr.shape == (1, 2, F)
    assert_f32_close(comp.delta[0], d.mean(axis=0), n_terms=BATCH, magnitude=mag)
    se = d.std(axis=0, ddof=1) / math.sqrt(N)
    assert_f32_close(comp.delta_stderr[0], se, n_terms=BATCH, magnitude=mag / math.sqrt(N))
    z = comp.delta[0] / comp.delta_stderr[0]
    np.testing.assert_allclose(comp.p_value[0], 2 * sps.norm.sf(np.abs(z)), rtol=1e-12)
    assert any("data-sampling noise only" in n for n in comp.notes)


def test_rms_headline_uses_the_delta_method_on_paired_moments():
    """perturbation's importance is sqrt(mean of per-row squared change): compare its delta stderr with the
    delta method on float64 per-row values rebuilt from the same noise (one draw, normal, key 3)."""
    import jax

    W1 = W0 * np.asarray([1.0, 1.0, 2.0, 1.0, 1.0], np.float32)
    models = [tanh_model(W0, B0), tanh_model(W1, B0)]
    comp = jaxsens.compare(models, X, method="perturbation", key=3, noise_scale=0.3, batch_size=BATCH)
    key = jax.random.key(3)
    eps = np.stack(
        [np.asarray(jax.random.normal(jax.random.fold_in(key, i), (1, F), jnp.float32))[0] for i in range(N)]
    ).astype(np.float64)  # [n, F], the draws the variants use
    sq = []
    for W in (W0, W1):
        f = lambda xs, W=W: np.tanh(xs @ W.astype(np.float64).T + B0)
        base = f(X.astype(np.float64))
        rows = []
        for j in range(F):
            moved = X.astype(np.float64).copy()
            moved[:, j] += 0.3 * eps[:, j]
            rows.append((f(moved) - base) ** 2)  # [n, k]
        sq.append(np.stack(rows, axis=2))  # [n, k, F]
    m0, m1 = sq[0].mean(0), sq[1].mean(0)
    r0, r1 = np.sqrt(m0), np.sqrt(m1)
    lin = sq[1] / (2 * r1) - sq[0] / (2 * r0)  # linearised per-row difference
    se = lin.std(axis=0, ddof=1) / math.sqrt(N)
    np.testing.assert_allclose(comp.importance[0], r0, rtol=1e-4)
    np.testing.assert_allclose(comp.delta[0], r1 - r0, atol=1e-4 * r1.max())
    np.testing.assert_allclose(comp.delta_stderr[0], se, rtol=2e-3)


# ------------------------------------------------------------------------------------------ null and planted
@pytest.mark.parametrize("method", ["jacobian", "perturbation"])
def test_the_same_model_twice_changes_nothing(method):
    m = tanh_model(W0, B0)
    comp = jaxsens.compare([m, m], X, method=method, batch_size=BATCH)  # perturbation: same key for both
    np.testing.assert_array_equal(comp.delta, 0.0)
    np.testing.assert_array_equal(comp.delta_stderr, 0.0)
    np.testing.assert_array_equal(comp.p_value, 1.0)
    assert not comp.changed.any()
    assert comp.drift == 0.0 and comp.ndcg.tolist() == [1.0] and comp.spearman.tolist() == [1.0]
    np.testing.assert_array_equal(comp.importance[0], comp.importance[1])


def test_a_planted_change_is_found_and_an_ignored_feature_is_near_zero():
    W = np.asarray([[1.0, -0.8, 0.6, 0.0, 0.9], [0.5, 0.7, -1.1, 0.0, 0.4]], np.float32)
    W2 = W.copy()
    W2[:, 1] *= 3.0
    comp = jaxsens.compare(
        [additive_model(W), additive_model(W2)], X, names=["last", "this"], batch_size=BATCH
    )
    assert comp.versions == ("last", "this")
    changed_features = {comp.feature_names[j] for j in np.flatnonzero(comp.changed[0].any(axis=0))}
    assert changed_features == {"x1"}
    assert comp.p_value[0][:, 1].max() < 1e-10
    assert comp.near_zero == ("x3",)
    top = comp.changes(top=2)
    assert [r["feature"] for r in top] == ["x1", "x1"] and all(r["changed"] for r in top)
    assert top[0]["version"] == "this" and abs(top[0]["delta"]) >= abs(top[1]["delta"])


def test_near_zero_fraction_is_validated_and_used():
    W = np.asarray([[1.0, 0.04, 0.5, 0.0, 0.9]], np.float32)
    m = additive_model(W)
    assert set(jaxsens.compare([m], X, near_zero=0.1).near_zero) == {"x1", "x3"}
    assert jaxsens.compare([m], X, near_zero=0.01).near_zero == ("x3",)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(jaxsens.ArgumentError, match="near_zero"):
            jaxsens.compare([m], X, near_zero=bad)


# ------------------------------------------------------------------------------------------------ replicates
def _replicates(seed, n, scale):
    rng = np.random.default_rng(seed)
    return [tanh_model(W0 * scale + 0.2 * rng.normal(size=W0.shape).astype(np.float32), B0) for _ in range(n)]


def test_replicates_give_the_noise_floor_and_pooled_t_tests():
    ref, new = _replicates(1, 3, 1.0), _replicates(2, 4, 1.2)
    comp = jaxsens.compare([ref, new], X, batch_size=BATCH, moderate=False)  # the plain per-entry t-test
    assert comp.noise == "replicates" and comp.n_replicates == (3, 4) and comp.prior is None
    imps = [np.stack([r.importance for r in comp.results[v]]) for v in range(2)]
    for v in range(2):
        np.testing.assert_allclose(comp.noise_floor[v], imps[v].std(axis=0, ddof=1), rtol=1e-12)
        np.testing.assert_allclose(comp.importance[v], imps[v].mean(axis=0), rtol=1e-12)
    t = sps.ttest_ind(imps[1], imps[0], axis=0, equal_var=True)
    np.testing.assert_allclose(comp.p_value[0], t.pvalue, rtol=1e-6)
    s = np.sqrt((2 * imps[0].var(0, ddof=1) + 3 * imps[1].var(0, ddof=1)) / 5)
    np.testing.assert_allclose(comp.delta_stderr[0], s * math.sqrt(1 / 3 + 1 / 4), rtol=1e-12)
    assert_f32_close(comp.delta[0], imps[1].mean(0) - imps[0].mean(0), n_terms=BATCH, magnitude=imps[1].max())
    fi = [np.stack([r.feature_importance()[0].mean(0) for r in comp.results[v]]) for v in range(2)]
    sf = np.sqrt((2 * fi[0].var(0, ddof=1) + 3 * fi[1].var(0, ddof=1)) / 5)
    np.testing.assert_allclose(comp.feature_stderr, sf[None] / np.sqrt([[3], [4]]), rtol=1e-12)


@pytest.mark.parametrize("moderate", [False, True])
def test_replicate_intervals_use_the_t_quantile_of_the_test(moderate):
    """With replicates the p-values come from Student t; the 95% bounds (near_zero, printed intervals) must use
    the same quantile, not 1.96 (an interval excluding 0 beside p > 0.05 was printed)."""
    ref, new = _replicates(1, 3, 1.0), _replicates(2, 1, 1.2)
    comp = jaxsens.compare([ref, new], X, batch_size=BATCH, moderate=moderate)
    crit = _compare.critical95(comp.noise, comp.n_replicates, comp.prior)
    df = 2 + (comp.prior["d0"] if moderate else 0)  # pooled df = 3 - 1, plus the prior's d0 when moderated

    def isf(a):  # d0 = inf (10 entries whose spreads differ no more than chance here): the normal
        return sps.norm.isf(a) if math.isinf(df) else sps.t.isf(a, df)

    assert comp.noise == ("replicates, moderated" if moderate else "replicates")
    assert crit == pytest.approx(isf(0.025), rel=1e-12)  # 4.30 for plain
    t = np.abs(comp.delta) / comp.delta_stderr
    np.testing.assert_array_equal(t > crit, comp.p_value < 0.05)  # the interval excludes 0 <=> p < 0.05
    assert _compare.critical95("rows, paired", (1, 1)) == pytest.approx(1.959964, abs=1e-6)
    upper = comp.feature_importance + crit * comp.feature_stderr
    bound = comp.near_zero_fraction * comp.feature_importance.max(axis=1, keepdims=True)
    assert comp.near_zero == tuple(n for n, z in zip(comp.feature_names, (upper < bound).all(0)) if z)
    power = [n for n in comp.notes if "marks a change only where" in n]
    need = isf(0.05 / (2 * np.isfinite(comp.p_value).sum()))
    assert len(power) == 1 and f"{need:.3g} x delta_stderr" in power[0]


# ------------------------------------------------------------------------------ moderated replicate variances
def test_trigamma_inverse_inverts_trigamma():
    from scipy.special import polygamma

    y = np.logspace(-8, 8, 81)
    x = _compare.trigamma_inverse(y)
    mid = (y >= 1e-6) & (y <= 1e7)  # Newton's method, stopped at a relative step of 1e-8 (quadratic: far below)
    np.testing.assert_allclose(polygamma(1, x[mid]), y[mid], rtol=1e-8)
    # the asymptotes: trigamma(1/y) = y (1 + y/2 + ...), trigamma(y^-1/2) = y + pi^2/6 + ...
    np.testing.assert_allclose(polygamma(1, x[~mid]), y[~mid], rtol=1e-6)
    assert np.all(x > 0)
    with pytest.raises(jaxsens.ArgumentError, match="positive"):
        _compare.trigamma_inverse([1.0, 0.0])


@pytest.mark.parametrize(
    "d0,s0_sq,df,tol_d0,tol_s0",
    # tolerances: 4 sampling standard deviations of the estimator at 50,000 entries, measured over 30 seeds
    # (d0: 2.1% and 3.4%; s0^2: 1.2% and 0.64%); at 5,000 entries they are about 3 times larger
    [(4.0, 2.0, 2, 0.09, 0.05), (8.0, 0.5, 3, 0.14, 0.03)],
)
def test_moderation_prior_recovers_a_simulated_prior(d0, s0_sq, df, tol_d0, tol_s0):
    """sigma_g^2 ~ s0^2 d0 / chi2(d0) (the scaled inverse-chi-square prior), s_g^2 = sigma_g^2 chi2(d) / d."""
    rng = np.random.default_rng(2004)
    sigma_sq = s0_sq * d0 / rng.chisquare(d0, 50_000)
    s2 = sigma_sq * rng.chisquare(df, sigma_sq.size) / df
    got_d0, got_s0 = _compare.moderation_prior(s2, df)
    assert got_d0 == pytest.approx(d0, rel=tol_d0) and got_s0 == pytest.approx(s0_sq, rel=tol_s0)
    low, _ = _compare.moderation_prior(s2, df, confidence=0.95)
    assert low < got_d0  # the lower end of the one-sided interval
    # zeros (entries constant across replicates) and NaN are left out of the fit
    assert _compare.moderation_prior(np.concatenate([s2, [0.0, 0.0, np.nan]]), df) == (got_d0, got_s0)


@pytest.mark.parametrize("df", [1, 2, 3, 5])
def test_equal_variances_give_an_infinite_d0_and_the_mean_variance(df):
    """Variances equal up to chi-square noise (here its quantiles, so the spread of the logs is just below the
    chi-square's own: no seed decides): var(e) - trigamma(d/2) <= 0, d0 = inf, s0^2 = exp(mean e), which is the
    common variance; every moderated variance is s0^2."""
    from scipy.special import digamma

    n = 5000
    s2 = 3.0 * sps.chi2.ppf((np.arange(n) + 0.5) / n, df) / df
    d0, s0_sq = _compare.moderation_prior(s2, df)
    assert math.isinf(d0)
    assert s0_sq == pytest.approx(3.0, rel=1e-3) and s0_sq == pytest.approx(s2.mean(), rel=1e-3)
    # the lower end of d0's interval is finite (tens of prior degrees of freedom are as consistent with these
    # variances), but large: the moderated variances are nearly s0^2 either way
    assert 5 < _compare.moderation_prior(s2, df, confidence=0.95)[0] < math.inf
    np.testing.assert_array_equal(_compare.moderated_variance(s2[:7], df, (d0, s0_sq)), np.full(7, s0_sq))
    same = _compare.moderation_prior(np.full(10, 0.25), df)  # no spread at all: exp(e), e's log-bias corrected
    expected = 0.25 * math.exp(math.log(df / 2) - float(digamma(df / 2)))
    assert math.isinf(same[0]) and same[1] == pytest.approx(expected, rel=1e-12)
    assert _compare.moderation_prior([0.0, 0.0, 2.0], df) is None  # fewer than two entries that vary


def test_moderated_tests_keep_the_family_wise_error_rate():
    """Simulated from the prior model itself (82 entries, d0 = 3, 2 replicates against 1: d = 1): Holm on the
    moderated t rejects a true "no change" in at most alpha of the families. With Smyth's point estimate of d0
    this is about 30% (d0 estimated far too large, often inf); the lower bound of its interval keeps it ~1-2%."""
    rng = np.random.default_rng(12)
    n_sim, F, alpha = 400, 82, 0.05
    rejected = 0
    for _ in range(n_sim):
        sigma = np.sqrt(3.0 / rng.chisquare(3.0, F))
        a, b = rng.normal(size=(2, F)) * sigma, rng.normal(size=(1, F)) * sigma
        s2, df = a.var(axis=0, ddof=1), 1
        prior = _compare.moderation_prior(s2, df, confidence=_compare.D0_CONFIDENCE)
        se = np.sqrt(_compare.moderated_variance(s2, df, prior) * (1 / 2 + 1))
        p = _compare._two_sided(b[0] - a.mean(0), se, t_df=None if math.isinf(prior[0]) else prior[0] + df)
        rejected += bool(holm(p, alpha)[1].any())
    assert rejected <= sps.binom.ppf(0.999, n_sim, alpha)  # 35 of 400: fails for a rate of ~8% or more


def _linear_fn(w, x):
    return w @ x


def _linear_replicates(rng, w, sigma, n):
    """Retrained replicates of f(x) = w . x: jacobian importance |w_j| (exactly, per row), w_j + sigma_j N(0, 1)."""
    return [
        jaxsens.Model.from_function(
            _linear_fn, jnp.asarray((w + sigma * rng.normal(size=w.shape))[None], jnp.float32), input_shape=(w.size,)
        )
        for _ in range(n)
    ]


def _linear_setup(seed, n_features=30):
    rng = np.random.default_rng(seed)
    w = 1.0 + 0.05 * np.arange(n_features)  # away from 0: |w + noise| = w + noise
    sigma = 0.02 * np.sqrt(6.0 / rng.chisquare(6.0, n_features))  # retraining noise per feature, from a prior
    w[-1], sigma[-1] = 0.0, 0.0  # an input every replicate ignores: zero spread
    return rng, w, sigma


def test_a_planted_change_is_found_and_replicates_of_one_version_are_not():
    rng, w, sigma = _linear_setup(0)
    xs = np.random.default_rng(1).normal(size=(64, w.size)).astype(np.float32)
    moved = w.copy()
    moved[5] += 0.5  # about 25 retraining standard deviations
    ref, new = _linear_replicates(rng, w, sigma, 3), _linear_replicates(rng, moved, sigma, 1)
    comp = jaxsens.compare([ref, new], xs)
    plain = jaxsens.compare([ref, new], xs, moderate=False)
    assert comp.noise == "replicates, moderated" and plain.noise == "replicates"
    assert np.flatnonzero(comp.changed[0, 0]).tolist() == [5]
    assert not plain.changed.any()  # 2 degrees of freedom and Holm over 30 entries: |t| > 22 needed
    assert comp.p_value[0, 0, -1] == 1.0 and comp.delta_stderr[0, 0, -1] > 0  # ignored input: moderated, no change
    assert any("moderated across the 29 entries that vary" in n for n in comp.notes)  # the zero-spread entry is not fitted
    false_families = 0
    for seed in range(1, 9):  # two replicates against a third of the same version: nothing changed
        rng, w, sigma = _linear_setup(seed)
        reps = _linear_replicates(rng, w, sigma, 3)
        false_families += bool(jaxsens.compare([reps[:2], reps[2:]], xs).changed.any())
    assert false_families <= sps.binom.ppf(0.999, 8, 0.05)  # 2 of 8


def test_moderated_p_values_are_the_t_test_on_d0_plus_d():
    rng, w, sigma = _linear_setup(3, n_features=40)
    xs = np.random.default_rng(4).normal(size=(64, w.size)).astype(np.float32)
    ref, new = _linear_replicates(rng, w, sigma, 3), _linear_replicates(rng, 1.01 * w, sigma, 2)
    comp = jaxsens.compare([ref, new], xs)
    imps = [np.stack([r.importance for r in comp.results[v]]).astype(np.float64) for v in range(2)]
    s2 = (2 * imps[0].var(0, ddof=1) + imps[1].var(0, ddof=1)) / 3
    d0, s0_sq = _compare.moderation_prior(s2, 3, confidence=0.95)
    assert comp.prior["scale"] == "absolute" and sorted(comp.prior) == ["d0", "d0_estimate", "s0_sq", "scale"]
    np.testing.assert_allclose(  # s2 here and there differ by float64 rounding (sqrt then square)
        [comp.prior["d0"], comp.prior["s0_sq"], comp.prior["d0_estimate"]],
        [d0, s0_sq, _compare.moderation_prior(s2, 3)[0]], rtol=1e-9,
    )
    assert math.isfinite(d0)
    mod = (d0 * s0_sq + 3 * s2) / (d0 + 3)
    se = np.sqrt(mod * (1 / 3 + 1 / 2))
    delta = imps[1].mean(0) - imps[0].mean(0)
    np.testing.assert_allclose(comp.delta_stderr[0], se, rtol=1e-12)
    np.testing.assert_allclose(comp.p_value[0], 2 * sps.t.sf(np.abs(delta) / se, d0 + 3), rtol=1e-9)
    np.testing.assert_allclose(comp.stderr, np.sqrt(mod)[None] / np.sqrt([3, 2])[:, None, None], rtol=1e-12)
    np.testing.assert_allclose(comp.feature_stderr, comp.stderr[:, 0], rtol=1e-9)  # one output: same entries
    assert _compare.critical95(comp.noise, comp.n_replicates, comp.prior) == pytest.approx(sps.t.isf(0.025, d0 + 3))
    with pytest.raises(jaxsens.ArgumentError, match="prior"):
        _compare.critical95(comp.noise, comp.n_replicates)


def _softmax2_fn(p, x):
    return jax.nn.softmax(p["W"] @ jnp.tanh(p["V"] @ x))


def test_two_softmax_outputs_are_one_hypothesis_per_feature():
    """p1 = 1 - p0: both outputs have the same importance, so Holm's m is the number of features, not twice it;
    the change is marked for both outputs."""
    rng = np.random.default_rng(8)
    V = rng.normal(size=(6, F)).astype(np.float32)
    W = rng.normal(size=(2, 6)).astype(np.float32)

    def model(v):
        return jaxsens.Model.from_function(
            _softmax2_fn, {"W": jnp.asarray(W), "V": jnp.asarray(v)}, input_shape=(F,), outputs_sum_to_one=True
        )

    v2 = V.copy()
    v2[:, 0] *= 1.03  # a small change in feature 0
    p = jaxsens.compare([model(V), model(v2)], X, batch_size=BATCH).p_value[0]
    np.testing.assert_allclose(p[0], p[1], rtol=1e-6)
    alpha = 1.5 * F * np.min(p)  # Holm rejects the smallest p over F entries, not over 2F
    comp = jaxsens.compare([model(V), model(v2)], X, batch_size=BATCH, alpha=alpha)
    assert not holm(p, alpha)[1].any()
    _, once = holm(p[:1], alpha)
    assert once.any()
    np.testing.assert_array_equal(comp.changed[0], np.broadcast_to(once, p.shape))
    assert any("sum to one" in n for n in comp.notes)
    plain = jaxsens.compare([model(V), model(v2)], X, batch_size=BATCH, outputs=[0])  # one output: no note
    assert not any("sum to one" in n for n in plain.notes)


def test_replicates_of_an_exact_method_use_the_pooled_t_test():
    rng = np.random.default_rng(5)
    reps = [
        [
            jaxsens.dense_model(
                [
                    {"W": s * rng.normal(size=(4, 3)), "b": np.zeros(3)},
                    {"W": rng.normal(size=(3, 2)), "b": np.zeros(2)},
                ],
                ["tanh", "identity"],
            )
            for _ in range(3)
        ]
        for s in (1.0, 1.5)
    ]
    comp = jaxsens.compare(reps, method="connection-weights", moderate=False)
    assert comp.noise == "replicates" and comp.n_samples == 0
    imps = [np.stack([r.importance for r in comp.results[v]]) for v in range(2)]
    np.testing.assert_allclose(comp.p_value[0], sps.ttest_ind(imps[1], imps[0], axis=0).pvalue, rtol=1e-6)


def test_an_exact_method_without_replicates_has_no_noise_estimate():
    rng = np.random.default_rng(6)
    ms = [
        jaxsens.dense_model(
            [
                {"W": rng.normal(size=(4, 3)), "b": np.zeros(3)},
                {"W": rng.normal(size=(3, 2)), "b": np.zeros(2)},
            ],
            ["tanh", "identity"],
        )
        for _ in range(2)
    ]
    comp = jaxsens.compare(ms, method="garson")
    assert comp.noise == "none"
    assert np.isnan(comp.p_value).all() and not comp.changed.any()
    assert any("no noise estimate" in n and "replicates" in n for n in comp.notes)


# ------------------------------------------------------------------------------------------- compile and keys
def test_versions_of_one_architecture_trace_once():
    """The model is traced as often for 3 or 5 versions as for one method call alone: the versions are stacked
    and vmapped in one kernel, compiled once."""

    def counted():
        count = [0]

        def fn(p, x):
            count[0] += 1
            return jnp.tanh(p["W"] @ x + p["b"])

        return fn, count

    xs = X[:100]  # ragged: 100 rows in chunks of 32
    fn, count = counted()
    m = tanh_model(W0, B0, fn=fn)
    before = count[0]
    jaxsens.jacobian_importance(m, xs, batch_size=32)
    single = count[0] - before
    for n_versions in (3, 5):
        fn, count = counted()
        ms = [tanh_model(W0 * (1 + 0.1 * i), B0, fn=fn) for i in range(n_versions)]
        before, cache = count[0], _compare._compare_kernel._cache_size()
        jaxsens.compare(ms, xs, batch_size=32)
        assert count[0] - before == single
        assert _compare._compare_kernel._cache_size() == cache + 1


def test_random_methods_use_one_key_for_every_version():
    m = tanh_model(W0, B0)
    a = jaxsens.compare([m, m], X, method="perturbation", key=11, n_draws=2)
    np.testing.assert_array_equal(a.delta, 0.0)
    alone = jaxsens.perturbation_importance(m, X, key=11, n_draws=2)
    assert_f32_close(a.importance[0], alone.importance, n_terms=N, magnitude=alone.importance.max())
    b = jaxsens.compare([m, m], X, method="perturbation", key=12, n_draws=2)
    assert not np.array_equal(a.importance, b.importance)
    assert a.options["seed"] == 11


# ------------------------------------------------------------------------------------------ every method
def _dense(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return jaxsens.dense_model(
        [
            {"W": scale * rng.normal(size=(4, 3)), "b": 0.1 * rng.normal(size=3)},
            {"W": rng.normal(size=(3, 2)), "b": np.zeros(2)},
        ],
        ["tanh", "softmax"],
        feature_names=["a", "b", "c", "d"],
    )


CHEAP = {
    "permutation": {"n_repeats": 2},
    "profile": {"steps": 5},
    "improved-stepwise": {},
    "stepwise": {"epochs": 2, "max_steps": 1},
    "perturbation": {"n_draws": 1},
    "input-perturbation": {"levels": (0.5,)},
}


@pytest.mark.parametrize("method", list(jaxsens.methods()))
def test_every_method_compares_with_the_right_shapes(method):
    spec = jaxsens.methods()[method]
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(120, 4)).astype(np.float32)
    ys = rng.integers(0, 2, size=120)
    models = [_dense(1), _dense(2, 1.5), _dense(3)]
    targets = ys if spec.needs_targets else None
    data = xs if spec.needs_data else None
    comp = jaxsens.compare(models, data, targets, method=method, **CHEAP.get(method, {}))
    head = comp.results[0][0].importance.shape
    assert comp.importance.shape == comp.stderr.shape == (3, *head)
    assert (
        comp.delta.shape == comp.delta_stderr.shape == comp.p_value.shape == comp.changed.shape == (2, *head)
    )
    assert comp.feature_importance.shape == comp.feature_stderr.shape == (3, 4)
    assert comp.spearman.shape == comp.kendall.shape == comp.ndcg.shape == (2,)
    assert comp.weight_sums.shape == (3, 4) and comp.weight_sums_spearman.shape == (3,)
    assert comp.output_names == (() if not spec.per_output else ("y0", "y1"))
    assert comp.changed.dtype == bool
    assert 0.0 <= comp.drift <= 1.0 or (
        math.isnan(comp.drift) and any("nDCG is undefined" in n for n in comp.notes)
    )
    paired = spec.rows is not None
    assert comp.noise == (
        "rows, paired" if paired else "none" if spec.family == "weights" else "rows, independent runs"
    )
    np.testing.assert_allclose(
        comp.delta,
        comp.importance[1:] - comp.importance[:1],
        atol=f32_tol(np.nanmax(np.abs(comp.importance)), 120),
    )
    retrains = [n for n in comp.notes if "retrains the architecture" in n]
    assert len(retrains) == (1 if spec.family == "retraining" else 0)


def test_options_that_change_the_headline_fall_back_to_independent_runs():
    comp = jaxsens.compare([tanh_model(W0, B0), tanh_model(1.2 * W0, B0)], X, scale="std")
    assert comp.noise == "rows, independent runs"
    alone = [
        jaxsens.jacobian_importance(m, X, scale="std") for m in (tanh_model(W0, B0), tanh_model(1.2 * W0, B0))
    ]
    np.testing.assert_allclose(comp.delta_stderr[0], np.hypot(alone[0].stderr, alone[1].stderr), rtol=1e-6)
    assert any("independent" in n for n in comp.notes)


# ------------------------------------------------------------------------------------------------ weight sums
def test_weight_sums_are_first_layer_abs_sums_and_disagreement_is_noted():
    W1 = np.asarray([[10.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]], np.float32)
    W2 = np.asarray([[0.0], [1.0], [1.0]], np.float32)  # hidden unit 0 (fed by x0 only) goes nowhere
    m = jaxsens.dense_model([{"W": W1, "b": np.zeros(3)}, {"W": W2, "b": np.zeros(1)}], ["tanh", "identity"])
    xs = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    comp = jaxsens.compare([m, m], xs, names=["a", "b"])
    np.testing.assert_allclose(comp.weight_sums, np.abs(W1).sum(axis=1)[None].repeat(2, 0), rtol=1e-6)
    assert comp.weight_sums_spearman[0] < 0.5
    assert any(
        "first-layer weight sums rank the features differently" in n and "'a'" in n for n in comp.notes
    )
    agree = jaxsens.compare(
        [m.with_params([{"W": W1, "b": np.zeros(3)}, {"W": np.ones((3, 1)), "b": np.zeros(1)}])], xs
    )  # every hidden unit used: weight sums and behaviour rank alike
    assert agree.weight_sums_spearman[0] == pytest.approx(1.0) and not any(
        "weight sums" in n for n in agree.notes
    )
    assert jaxsens.compare([tanh_model(W0, B0)], X).weight_sums is None  # not a dense stack


# ------------------------------------------------------------------------------------------ statistics pieces
def _holm_brute(p, alpha):
    """Holm by definition: reject p_(1..i) while p_(i) <= alpha / (m - i + 1) for i = 1..m."""
    flat = p.reshape(-1)
    ok = [i for i in range(flat.size) if not np.isnan(flat[i])]
    order = sorted(ok, key=lambda i: flat[i])
    rejected = np.zeros(flat.size, bool)
    for rank, i in enumerate(order):
        if flat[i] <= alpha / (len(order) - rank):
            rejected[i] = True
        else:
            break
    return rejected.reshape(p.shape)


def test_holm_matches_its_definition():
    rng = np.random.default_rng(9)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=(2, 7)) ** rng.uniform(0.5, 3)
        p[rng.random(p.shape) < 0.2] = np.nan
        adj, rej = holm(p, 0.05)
        np.testing.assert_array_equal(rej, _holm_brute(p, 0.05))
        assert np.array_equal(np.isnan(adj), np.isnan(p))
        assert np.all(adj[~np.isnan(p)] >= p[~np.isnan(p)])


def test_ndcg_matches_sklearn_with_and_without_ties():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(4)
    for ties in (False, True):
        for _ in range(50):
            rel = rng.random(12)
            score = rng.random(12)
            if ties:
                score = np.round(score * 3)
            assert math.isclose(ndcg(score, rel), ndcg_score(rel[None], score[None]), rel_tol=1e-12)
    assert ndcg([3, 2, 1], [3, 2, 1]) == 1.0 and math.isnan(ndcg([1, 2], [0, 0]))


# ------------------------------------------------------------------------------------------ views and files
def test_single_version_and_views(tmp_path):
    comp = jaxsens.compare([tanh_model(W0, B0)], X, names=["only"])
    assert comp.delta.shape == comp.p_value.shape == (0, 2, F) and comp.drift == 0.0 and comp.changes() == []
    assert comp.noise == "rows, paired" and comp.ndcg.shape == (0,) and len(comp.to_frame()) == 2 * F
    comp2 = jaxsens.compare([tanh_model(W0, B0), tanh_model(W0 * 2, B0)], X)
    df = comp2.to_frame()
    assert len(df) == 2 * 2 * F and set(df["version"]) == {"v0", "v1"}
    assert df[df.version == "v0"]["p_value"].isna().all() and not df[df.version == "v0"]["changed"].any()
    text = comp2.summary()
    assert "drift" in text and "largest changes" in text and "v1" in text
    assert "<table>" in comp2._repr_html_()


def test_save_and_load_round_trip(tmp_path):
    comp = jaxsens.compare([_replicates(1, 2, 1.0), _replicates(2, 2, 1.1)[:1]], X, names=["a", "b"])
    path = tmp_path / "c.json"
    comp.save(path)
    back = jaxsens.load_comparison(path)
    assert back.results is None
    for f in _compare.dataclasses.fields(comp):
        if f.name == "results":
            continue
        a, b = getattr(comp, f.name), getattr(back, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
        elif isinstance(a, float) and math.isnan(a):
            assert math.isnan(b)
        else:
            assert a == b, f.name
    with pytest.raises(jaxsens.DataError, match="not a jaxsens comparison file"):
        (tmp_path / "x.json").write_text('{"a": 1}')
        jaxsens.load_comparison(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError):
        jaxsens.load_comparison(tmp_path / "missing.json")
    with pytest.raises(jaxsens.DataError, match="comparison file .*not valid JSON"):
        (tmp_path / "t.json").write_text('{"format": ')  # truncated
        jaxsens.load_comparison(tmp_path / "t.json")
    with pytest.raises(jaxsens.DataError, match="folder, not a comparison file"):
        jaxsens.load_comparison(tmp_path)


def test_default_names_are_file_stems(tmp_path):
    import shutil

    src = jaxsens.examples.default_model_path()
    a, b = tmp_path / "week1.onnx", tmp_path / "week2.onnx"
    shutil.copy(src, a)
    shutil.copy(src, b)
    xs = np.random.default_rng(0).normal(size=(20, 82)).astype(np.float32)
    comp = jaxsens.compare([str(a), b], xs, method="weight-sums")
    assert comp.versions == ("week1", "week2")
    assert _compare._stem("x/model_structure.json") == "model"


# ---------------------------------------------------------------------------------------------- refusals
BAD = [
    ({"models": tanh_model(W0)}, jaxsens.ArgumentTypeError, "models must be a list of versions"),
    ({"models": []}, jaxsens.ArgumentError, "models is empty"),
    ({"models": [[]]}, jaxsens.ArgumentError, r"models\[0\] is an empty list"),
    ({"models": [3]}, jaxsens.ArgumentTypeError, r"models\[0\] is a int"),
    ({"names": "a"}, jaxsens.ArgumentTypeError, "names must be a list"),
    ({"names": ["a"]}, jaxsens.ArgumentError, "names has 1 entries for 2 versions"),
    ({"names": ["a", "a"]}, jaxsens.ArgumentError, r"names repeat \['a'\]"),
    ({"names": ["a", ""]}, jaxsens.ArgumentError, r"names\[1\]"),
    ({"alpha": 0.0}, jaxsens.ArgumentError, r"alpha must be in \(0, 1\)"),
    ({"alpha": 1.0}, jaxsens.ArgumentError, "alpha"),
    ({"alpha": "0.05"}, jaxsens.ArgumentTypeError, "alpha"),
    ({"alpha": True}, jaxsens.ArgumentTypeError, "alpha"),
    ({"near_zero": None}, jaxsens.ArgumentTypeError, "near_zero"),
    ({"moderate": "yes"}, jaxsens.ArgumentTypeError, "moderate must be True or False"),
    ({"method": "nope"}, jaxsens.ArgumentError, r"unknown method='nope'; use one of \['jacobian', 'pad'"),
    ({"method": jaxsens.jacobian_importance}, jaxsens.ArgumentTypeError, "method must be a method name"),
    (
        {"models": [tanh_model(W0), tanh_model(W0[:, :3])]},
        jaxsens.ArgumentError,
        r"version 'v1' has input shape \(3,\), the reference 'v0' has \(5,\)",
    ),
    (
        {"models": [tanh_model(W0), tanh_model(W0[:1])]},
        jaxsens.ArgumentError,
        "version 'v1' has output shape",
    ),
    (
        {"models": [tanh_model(W0), [tanh_model(W0), tanh_model(W0[:1])]]},
        jaxsens.ArgumentError,
        r"version 'v1' \(replicate 1\) has output shape",
    ),
    ({"mode": "sideways"}, jaxsens.ArgumentError, "mode must be one of"),
    ({"bogus": 1}, jaxsens.ArgumentError, r"unknown option\(s\) \['bogus'\]"),
    ({"data": None}, jaxsens.ArgumentError, "needs data"),
]


@pytest.mark.parametrize("kw,error,fragment", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_arguments_are_refused_naming_them(kw, error, fragment):
    kw = dict(kw)
    args = {"models": kw.pop("models", [tanh_model(W0), tanh_model(W0)]), "data": kw.pop("data", X[:10])}
    with pytest.raises(error, match=fragment):
        jaxsens.compare(args["models"], args["data"], **kw)


def test_mismatched_feature_names_are_refused():
    a = jaxsens.Model.from_function(_tanh_fn, {"W": jnp.asarray(W0), "b": jnp.zeros(2)}, input_shape=(F,))
    b = jaxsens.Model.from_function(
        _tanh_fn,
        {"W": jnp.asarray(W0), "b": jnp.zeros(2)},
        input_shape=(F,),
        feature_names=["p", "q", "r", "s", "t"],
    )
    with pytest.raises(
        jaxsens.ArgumentError, match=r"version 'new' has feature names 5 names, e.g. \[0\] 'p'"
    ):
        jaxsens.compare([a, b], X, names=["old", "new"])


def test_a_one_shot_iterator_is_refused_when_the_versions_run_separately():
    batches = (X[i : i + 50] for i in range(0, N, 50))
    with pytest.raises(jaxsens.ArgumentError, match="one-shot iterator"):
        jaxsens.compare([_dense(1), _dense(2)], (b[:, :4] for b in batches), method="profile", steps=5)
    comp = jaxsens.compare([tanh_model(W0), tanh_model(W0)], (X[i : i + 50] for i in range(0, N, 50)))
    assert comp.n_samples == N  # the paired route reads the data once


def test_hidden_units_compared_by_index_carry_a_note():
    """wrt=LAYER: unit i of one training is not unit i of another (permutation symmetry); the comparison says so,
    and compares the units of each version exactly as jacobian_importance(wrt=) alone does."""
    keras = pytest.importorskip("keras")

    def net(seed):
        keras.utils.set_random_seed(seed)
        x = keras.Input((F,), name="x")
        h = keras.layers.Dense(4, activation="tanh", name="hidden")(x)
        return jaxsens.Model.from_keras(keras.Model(x, keras.layers.Dense(2, name="out")(h)))

    a, b = net(1), net(2)
    comp = jaxsens.compare([a, b], X, wrt="hidden", batch_size=BATCH)
    assert comp.importance.shape == (2, 2, 4)
    assert any("wrt='hidden'" in n and "do not correspond" in n for n in comp.notes)
    alone = jaxsens.jacobian_importance(b, X, wrt="hidden", batch_size=BATCH)
    assert_f32_close(comp.importance[1], alone.importance, n_terms=BATCH, magnitude=alone.importance.max())
    plain = jaxsens.compare([a, b], X, batch_size=BATCH)
    assert not any("do not correspond" in n for n in plain.notes)
