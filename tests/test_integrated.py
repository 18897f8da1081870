"""integrated_gradients / attributions against closed forms (polynomials), completeness, and Captum on a PyTorch
MLP exported to ONNX."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from _tol import EPS32, assert_f32_close

import jaxsens
from jaxsens._integrated import attributions, draw_baselines, quadrature, reference_sample


def _poly_model():
    """f0 = x0^2 x1 + 3 x2, f1 = x0 x1 x2, f2 = x3 (degree <= 3: the integrand is a polynomial of degree <= 2 in
    alpha, integrated exactly by 2 Gauss-Legendre points)."""
    return jaxsens.Model.from_function(
        lambda p, x: jnp.stack([x[0] ** 2 * x[1] + 3 * x[2], x[0] * x[1] * x[2], p * x[3]]),
        jnp.float32(1.0), input_shape=(4,),
    )


def _poly_closed_form(x: np.ndarray) -> np.ndarray:
    """``[n, 3, 4]`` IG from the zero baseline: a monomial of degree p gives input j ``deg_j / p`` of its value."""
    x = x.astype(np.float64)
    a = np.zeros((len(x), 3, 4))
    m = x[:, 0] ** 2 * x[:, 1]
    a[:, 0, 0], a[:, 0, 1], a[:, 0, 2] = 2 / 3 * m, 1 / 3 * m, 3 * x[:, 2]
    p = x[:, 0] * x[:, 1] * x[:, 2]
    a[:, 1, 0] = a[:, 1, 1] = a[:, 1, 2] = p / 3
    a[:, 2, 3] = x[:, 3]
    return a


@pytest.mark.parametrize("n_steps", [2, 32])
def test_polynomial_is_exact_from_the_zero_baseline(n_steps):
    xs = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    want = _poly_closed_form(xs)
    magnitude = 3 * np.abs(xs).max() ** 3 + 3  # size of the terms of f and of the weighted gradient sums
    got = attributions(_poly_model(), xs, n_steps=n_steps, batch_size=16)
    assert got.shape == (50, 3, 4) and got.dtype == np.float32
    assert_f32_close(got, want, n_terms=n_steps + 8, magnitude=magnitude)
    r = jaxsens.integrated_gradients(_poly_model(), xs, n_steps=n_steps, batch_size=16)
    assert r.importance.shape == r.stderr.shape == r.mean.shape == (3, 4) and r.n_samples == 50
    assert_f32_close(r.importance, np.abs(want).mean(0), n_terms=n_steps + 8 + 16, magnitude=magnitude)
    assert_f32_close(r.mean, want.mean(0), n_terms=n_steps + 8 + 16, magnitude=magnitude)
    assert_f32_close(r.stderr, np.abs(want).std(0, ddof=1) / np.sqrt(50), n_terms=n_steps + 8 + 16,
                     magnitude=magnitude)
    assert r.completeness_error.shape == (3,)
    assert np.all(r.completeness_error <= 2 * (n_steps + 8) * EPS32 * magnitude)
    np.testing.assert_array_equal(r.baseline, np.zeros(4))
    # an input the model ignores gets exactly 0 (x3 in outputs 0 and 1; x0..x2 in output 2)
    assert np.all(r.importance[0, 3] == 0) and np.all(r.importance[2, :3] == 0)


def test_rules_match_captum_points_and_weights():
    import captum.attr._utils.approximation_methods as captum
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"):
        steps, alphas = captum.approximation_parameters(rule)
        a, w = quadrature(rule, 7)
        np.testing.assert_allclose(a, alphas(7), rtol=1e-6, atol=1e-7, err_msg=rule)  # torch.linspace: float32
        np.testing.assert_allclose(w, steps(7), rtol=1e-12, err_msg=rule)


def _tanh_mlp(seed=1, n_in=5, hidden=8, n_out=3):
    rng = np.random.default_rng(seed)
    layers = [{"W": rng.normal(size=(n_in, hidden)).astype(np.float32),
               "b": rng.normal(scale=0.1, size=hidden).astype(np.float32)},
              {"W": rng.normal(scale=0.7, size=(hidden, n_out)).astype(np.float32),
               "b": rng.normal(scale=0.1, size=n_out).astype(np.float32)}]
    return jaxsens.dense_model(layers, ("tanh", "identity")), layers


def test_completeness_error_is_float32_rounding_for_a_smooth_mlp():
    model, _ = _tanh_mlp()
    xs = np.random.default_rng(2).normal(size=(60, 5)).astype(np.float32)
    base = np.full(5, 0.3, np.float32)
    r = jaxsens.integrated_gradients(model, xs, baseline=base, n_steps=32, batch_size=16)
    a = attributions(model, xs, baseline=base, n_steps=32, batch_size=16).astype(np.float64)
    y = np.asarray(model(xs), np.float64)
    yb = np.asarray(model(base[None]), np.float64)
    # terms: the attributions summed over inputs, the two outputs; each a float32 chain of fan-in 8 and 32 steps
    magnitude = np.abs(a).sum(-1).max(0) + np.abs(y).max(0) + np.abs(yb[0])
    gap = np.abs(a.sum(-1) - (y - yb)).max(0)
    assert_f32_close(r.completeness_error, gap, n_terms=2 * (32 + 5 + 8 + 2), magnitude=magnitude)
    assert np.all(r.completeness_error <= 2 * (32 + 5 + 8 + 2) * EPS32 * magnitude), (r.completeness_error, magnitude)
    np.testing.assert_array_equal(r.baseline, base.astype(np.float64))
    # few Riemann steps: a real quadrature error, reported (not hidden by the float32 bound)
    coarse = jaxsens.integrated_gradients(model, xs, baseline=base, n_steps=2, rule="riemann_left")
    assert np.max(coarse.completeness_error) > 1e3 * np.max(r.completeness_error)


def test_attributions_equal_the_streamed_statistics_and_do_not_depend_on_batch_size():
    model, _ = _tanh_mlp(seed=3)
    xs = np.random.default_rng(4).normal(size=(37, 5)).astype(np.float32)
    a7 = attributions(model, xs, baseline="mean", rule="riemann_trapezoid", n_steps=16, batch_size=7)
    a64 = attributions(model, xs, baseline="mean", rule="riemann_trapezoid", n_steps=16, batch_size=64)
    one = np.concatenate([attributions(model, xs[i:i + 1], baseline=xs.astype(np.float64).mean(0), n_steps=16,
                                       rule="riemann_trapezoid") for i in (0, 36)])
    mag = np.abs(a64).max()
    assert_f32_close(a7, a64, n_terms=2 * (16 + 8 + 5), magnitude=mag)
    assert_f32_close(one, a64[[0, 36]], n_terms=2 * (16 + 8 + 5) + 37, magnitude=mag)
    sub = attributions(model, xs, outputs=[2, 0], n_steps=16, rule="riemann_trapezoid", baseline="mean")
    assert_f32_close(sub, a64[:, [2, 0]], n_terms=2 * (16 + 8 + 5), magnitude=mag)
    for bs in (5, 64):
        r = jaxsens.integrated_gradients(model, xs, baseline="mean", rule="riemann_trapezoid", n_steps=16,
                                         batch_size=bs)
        assert_f32_close(r.baseline, xs.astype(np.float64).mean(0), n_terms=37, magnitude=np.abs(xs).max())
        a = a64.astype(np.float64)
        assert_f32_close(r.importance, np.abs(a).mean(0), n_terms=2 * (16 + 8 + 5) + 37, magnitude=mag)
        assert_f32_close(r.mean, a.mean(0), n_terms=2 * (16 + 8 + 5) + 37, magnitude=mag)
        assert_f32_close(r.stderr, np.abs(a).std(0, ddof=1) / np.sqrt(37), n_terms=2 * (16 + 8 + 5) + 37,
                         magnitude=mag)




@pytest.fixture(scope="module")
def torch_mlp(tmp_path_factory):
    import torch
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
    path = tmp_path_factory.mktemp("ig-torch") / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter
        torch.onnx.export(net, (torch.randn(3, 6),), str(path), input_names=["x"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    return net, jaxsens.load_model(str(path))


@pytest.mark.parametrize("rule", ["riemann_trapezoid", "gausslegendre"])
def test_equal_to_captum_on_a_torch_mlp_exported_to_onnx(torch_mlp, rule):
    import captum.attr as captum_attr
    import torch
    net, model = torch_mlp
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(20, 6)).astype(np.float32)
    base = rng.normal(scale=0.5, size=6).astype(np.float32)
    ig = captum_attr.IntegratedGradients(net)
    want = np.stack([
        ig.attribute(torch.from_numpy(xs), baselines=torch.from_numpy(base[None]), target=k, n_steps=24,
                     method=rule).detach().numpy()
        for k in range(3)
    ], axis=1).astype(np.float64)  # Captum: one target per call
    got = attributions(model, xs, baseline=base, n_steps=24, rule=rule)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
    r = jaxsens.integrated_gradients(model, xs, baseline=base, n_steps=24, rule=rule, batch_size=8)
    np.testing.assert_allclose(r.importance, np.abs(want).mean(0), rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(r.mean, want.mean(0), rtol=0, atol=1e-4 * scale)


def test_bad_options_are_refused_naming_the_argument():
    model, _ = _tanh_mlp()
    xs = np.random.default_rng(6).normal(size=(10, 5)).astype(np.float32)
    with pytest.raises(jaxsens.ArgumentError, match=r"baseline has shape \[3\]"):
        jaxsens.integrated_gradients(model, xs, baseline=np.zeros(3))
    with pytest.raises(jaxsens.ArgumentError, match="baseline must be 'zeros', 'mean'"):
        jaxsens.integrated_gradients(model, xs, baseline="median")
    with pytest.raises(jaxsens.ArgumentError, match="NaN"):
        jaxsens.integrated_gradients(model, xs, baseline=np.full(5, np.nan))
    with pytest.raises(jaxsens.ArgumentError, match="rule must be one of"):
        jaxsens.integrated_gradients(model, xs, rule="simpson")
    with pytest.raises(jaxsens.ArgumentError, match="needs n_steps >= 2"):
        jaxsens.integrated_gradients(model, xs, rule="riemann_left", n_steps=1)
    with pytest.raises(jaxsens.ArgumentError, match="n_steps must be >= 1"):
        jaxsens.integrated_gradients(model, xs, n_steps=0)
    with pytest.raises(jaxsens.ArgumentError, match="method must be 'integrated_gradients'"):
        attributions(model, xs, method="expected_gradients")
    with pytest.raises(jaxsens.DataError, match=r"expected \[n_samples, 5\]"):
        attributions(model, xs[:, :4])
    bad = xs.copy()
    bad[3, 1] = np.nan
    with pytest.raises(jaxsens.DataError, match=r"row 3 holds NaN"):
        attributions(model, bad)
    one_shot = (xs[i:i + 5] for i in range(0, 10, 5))  # a generator cannot be read twice for baseline="mean"
    with pytest.raises(jaxsens.DataError):
        jaxsens.integrated_gradients(model, one_shot, baseline="mean")


# ------------------------------------------------------------------------------------------ expected gradients
def _linear_model(d=4, k=2, seed=9):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(k, d)).astype(np.float32)
    c = rng.normal(size=k).astype(np.float32)
    return jaxsens.Model.from_function(lambda p, x: p[0] @ x + p[1], (jnp.asarray(w), jnp.asarray(c)),
                                       input_shape=(d,)), w


def test_expected_gradients_of_a_linear_model_are_w_times_x_minus_the_drawn_baselines_mean(tmp_path):
    model, w = _linear_model()
    rng = np.random.default_rng(10)
    xs = rng.normal(size=(29, 4)).astype(np.float32)
    ref = rng.normal(loc=1.0, size=(40, 4)).astype(np.float32)  # 40 <= reference_rows: the sample is every row
    np.testing.assert_array_equal(reference_sample(ref, input_shape=(4,), key=3), ref)
    idx = draw_baselines(3, np.arange(29), n_reference=40, n_baselines=5)
    assert idx.shape == (29, 5) and idx.min() >= 0 and idx.max() < 40
    drawn_mean = ref.astype(np.float64)[idx].mean(axis=1)  # [29, 4]
    want = w.astype(np.float64)[None] * (xs.astype(np.float64) - drawn_mean)[:, None]  # [29, 2, 4]
    mag = np.abs(w).max() * (np.abs(xs).max() + np.abs(ref).max())
    got = attributions(model, xs, baseline=ref, n_baselines=5, n_steps=1, key=3, batch_size=8)
    assert got.shape == (29, 2, 4)
    assert_f32_close(got, want, n_terms=2 * (5 + 4 + 2), magnitude=mag)
    r = jaxsens.integrated_gradients(model, xs, baseline=ref, n_baselines=5, n_steps=1, key=3, batch_size=8)
    assert r.n_baselines == 5 and r.n_reference == 40 and r.options["seed"] == 3
    assert_f32_close(r.importance, np.abs(want).mean(0), n_terms=2 * (5 + 4 + 2) + 29, magnitude=mag)
    assert_f32_close(r.mean, want.mean(0), n_terms=2 * (5 + 4 + 2) + 29, magnitude=mag)
    assert_f32_close(r.baseline, ref.astype(np.float64).mean(0), n_terms=40, magnitude=np.abs(ref).max())
    # completeness per row against the drawn baselines: only float32 rounding for a linear model
    assert np.all(r.completeness_error <= 2 * 2 * (5 + 4 + 2) * EPS32 * (np.abs(want).sum(-1).max() + 4 * mag))
    # the same reference from every kind of data source, and batch size / key behaviour
    np.save(tmp_path / "ref.npy", ref)
    import pandas as pd

    pd.DataFrame(ref, columns=[f"x{j}" for j in range(4)]).to_csv(tmp_path / "ref.csv", index=False)
    pd.DataFrame(ref, columns=[f"x{j}" for j in range(4)]).to_parquet(tmp_path / "ref.parquet")
    for source in (str(tmp_path / "ref.npy"), tmp_path / "ref.csv", jaxsens.open_data(tmp_path / "ref.parquet"),
                   [ref[:13], ref[13:]]):
        other = jaxsens.integrated_gradients(model, xs, baseline=source, n_baselines=5, n_steps=1, key=3,
                                             batch_size=64)
        assert_f32_close(other.importance, r.importance, n_terms=4 * (5 + 4 + 2) + 29, magnitude=mag,
                         err_msg=type(source).__name__)
    assert not np.allclose(jaxsens.integrated_gradients(model, xs, baseline=ref, n_baselines=5, n_steps=1,
                                                        key=4).mean, r.mean)
    default = jaxsens.integrated_gradients(model, xs, baseline=ref, n_steps=1)
    assert default.n_baselines == 16 and default.options["seed"] == 0
    np.testing.assert_array_equal(default.importance,
                                  jaxsens.integrated_gradients(model, xs, baseline=ref, n_steps=1, key=0).importance)


def test_expected_gradients_converge_to_w_times_x_minus_the_reference_mean():
    """In expectation over the draws, EG of a linear model is w * (x - E[b]): many baselines per row get within
    the Monte-Carlo error of the drawn means (a 6-sigma bound from the reference's own spread)."""
    model, w = _linear_model()
    rng = np.random.default_rng(11)
    xs = rng.normal(size=(6, 4)).astype(np.float32)
    ref = rng.normal(loc=-0.5, scale=2.0, size=(300, 4)).astype(np.float32)
    n_b = 2048
    got = attributions(model, xs, baseline=ref, n_baselines=n_b, n_steps=1, key=1)
    ref64 = ref.astype(np.float64)
    want = w.astype(np.float64)[None] * (xs.astype(np.float64) - ref64.mean(0))[:, None]
    sigma = np.abs(w)[None] * ref64.std(0)[None, None] / np.sqrt(n_b)
    assert np.all(np.abs(got - want) <= 6 * sigma + 1e-4), np.abs(got - want).max()


def test_expected_gradients_reference_sample_is_bounded_and_seeded():
    model, w = _linear_model()
    rng = np.random.default_rng(12)
    xs = rng.normal(size=(10, 4)).astype(np.float32)
    ref = rng.normal(size=(500, 4)).astype(np.float32)
    ref[:, 0] = np.arange(500)  # rows identifiable by their first column
    sample = reference_sample(ref, input_shape=(4,), key=7, max_rows=64)
    assert sample.shape == (64, 4)
    rows = sample[:, 0].astype(int)
    assert np.all(np.diff(rows) > 0)  # distinct rows, in row order
    np.testing.assert_array_equal(sample, ref[rows])
    np.testing.assert_array_equal(sample, reference_sample([ref[:77], ref[77:]], input_shape=(4,), key=7,
                                                           max_rows=64))  # independent of the blocks read
    assert not np.array_equal(sample, reference_sample(ref, input_shape=(4,), key=8, max_rows=64))
    r = jaxsens.integrated_gradients(model, xs, baseline=ref, reference_rows=64, n_baselines=3, n_steps=1, key=7)
    assert r.n_reference == 64
    idx = draw_baselines(7, np.arange(10), n_reference=64, n_baselines=3)
    want = w.astype(np.float64)[None] * (xs - sample.astype(np.float64)[idx].mean(1))[:, None]
    mag = np.abs(w).max() * (np.abs(xs).max() + np.abs(ref[:, 1:]).max() + 500)
    assert_f32_close(r.mean, want.mean(0), n_terms=2 * (3 + 4 + 2) + 10, magnitude=mag)


def _int_product(p, q, r, s):
    """``int_0^1 (p + alpha q) (r + alpha s) d alpha``."""
    return p * r + (p * s + q * r) / 2 + q * s / 3


def _poly_ig_from(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[n, 3, 4]`` closed-form IG of :func:`_poly_model` from per-row baselines ``b`` ``[n, 4]`` (float64)."""
    x, b = x.astype(np.float64), b.astype(np.float64)
    d = x - b
    a = np.zeros((len(x), 3, 4))
    a[:, 0, 0] = d[:, 0] * 2 * _int_product(b[:, 0], d[:, 0], b[:, 1], d[:, 1])  # d/dx0 x0^2 x1 = 2 x0 x1
    a[:, 0, 1] = d[:, 1] * _int_product(b[:, 0], d[:, 0], b[:, 0], d[:, 0])  # d/dx1 = x0^2
    a[:, 0, 2] = 3 * d[:, 2]
    a[:, 1, 0] = d[:, 0] * _int_product(b[:, 1], d[:, 1], b[:, 2], d[:, 2])
    a[:, 1, 1] = d[:, 1] * _int_product(b[:, 0], d[:, 0], b[:, 2], d[:, 2])
    a[:, 1, 2] = d[:, 2] * _int_product(b[:, 0], d[:, 0], b[:, 1], d[:, 1])
    a[:, 2, 3] = d[:, 3]
    return a


def test_expected_gradients_of_a_polynomial_equal_the_closed_form_path_integrals():
    rng = np.random.default_rng(13)
    xs = rng.normal(size=(21, 4)).astype(np.float32)
    ref = rng.normal(scale=0.7, size=(33, 4)).astype(np.float32)
    n_b = 6
    idx = draw_baselines(5, np.arange(21), n_reference=33, n_baselines=n_b)
    want = np.mean([_poly_ig_from(xs, ref[idx[:, l]]) for l in range(n_b)], axis=0)
    magnitude = 3 * (np.abs(xs).max() + np.abs(ref).max()) ** 3 + 3
    got = attributions(_poly_model(), xs, baseline=ref, n_baselines=n_b, n_steps=2, key=5, batch_size=8)
    assert_f32_close(got, want, n_terms=2 + 8 + n_b, magnitude=magnitude)
    r = jaxsens.integrated_gradients(_poly_model(), xs, baseline=ref, n_baselines=n_b, n_steps=2, key=5)
    assert_f32_close(r.mean, want.mean(0), n_terms=2 + 8 + n_b + 21, magnitude=magnitude)
    # completeness against the mean output at the drawn baselines: exact up to float32 rounding
    assert np.all(r.completeness_error <= 2 * (2 + 8 + n_b) * EPS32 * magnitude), r.completeness_error
    # an input an output ignores gets exactly 0 (x3 in outputs 0 and 1)
    assert np.all(r.importance[:2, 3] == 0) and np.all(got[:, :2, 3] == 0)


def test_expected_gradients_do_not_depend_on_batch_size():
    model, _ = _tanh_mlp(seed=3)
    rng = np.random.default_rng(14)
    xs = rng.normal(size=(37, 5)).astype(np.float32)
    ref = rng.normal(size=(90, 5)).astype(np.float32)
    opts = {"baseline": ref, "n_baselines": 4, "n_steps": 8, "rule": "riemann_trapezoid", "key": 2}
    a5 = attributions(model, xs, batch_size=5, **opts)
    a64 = attributions(model, xs, batch_size=64, **opts)
    mag = np.abs(a64).max()
    n_terms = 2 * (8 + 8 + 5 + 4)
    assert_f32_close(a5, a64, n_terms=n_terms, magnitude=mag)
    for bs in (6, 64):
        r = jaxsens.integrated_gradients(model, xs, batch_size=bs, **opts)
        assert_f32_close(r.importance, np.abs(a64.astype(np.float64)).mean(0), n_terms=n_terms + 37, magnitude=mag)
        assert_f32_close(r.mean, a64.astype(np.float64).mean(0), n_terms=n_terms + 37, magnitude=mag)


@pytest.mark.parametrize("rule", ["riemann_trapezoid", "gausslegendre"])
def test_expected_gradients_equal_captum_averaged_over_the_drawn_baselines(torch_mlp, rule):
    """Captum's GradientShap draws its own baselines (and a random alpha), so the oracle is Captum's
    ``IntegratedGradients`` run once per drawn baseline (per-row baselines) with the same rule and steps, averaged."""
    import captum.attr as captum_attr
    import torch
    net, model = torch_mlp
    rng = np.random.default_rng(15)
    xs = rng.normal(size=(20, 6)).astype(np.float32)
    ref = rng.normal(scale=0.5, size=(30, 6)).astype(np.float32)
    n_b = 3
    idx = draw_baselines(6, np.arange(20), n_reference=30, n_baselines=n_b)
    ig = captum_attr.IntegratedGradients(net)
    want = np.mean([
        np.stack([
            ig.attribute(torch.from_numpy(xs), baselines=torch.from_numpy(ref[idx[:, l]]), target=k, n_steps=24,
                         method=rule).detach().numpy()
            for k in range(3)
        ], axis=1).astype(np.float64)
        for l in range(n_b)
    ], axis=0)
    got = attributions(model, xs, baseline=ref, n_baselines=n_b, n_steps=24, rule=rule, key=6)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
    r = jaxsens.integrated_gradients(model, xs, baseline=ref, n_baselines=n_b, n_steps=24, rule=rule, key=6,
                                     batch_size=8)
    np.testing.assert_allclose(r.importance, np.abs(want).mean(0), rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(r.mean, want.mean(0), rtol=0, atol=1e-4 * scale)


def test_expected_gradients_refuse_bad_reference_data(tmp_path):
    model, _ = _tanh_mlp()
    xs = np.random.default_rng(16).normal(size=(10, 5)).astype(np.float32)
    with pytest.raises(jaxsens.DataError, match="reference data of expected gradients.*no rows"):
        jaxsens.integrated_gradients(model, xs, baseline=np.zeros((0, 5), np.float32))
    with pytest.raises(jaxsens.ArgumentError, match=r"baseline has shape \[8, 4\]; expected one sample's shape \[5\]"):
        jaxsens.integrated_gradients(model, xs, baseline=np.zeros((8, 4), np.float32))
    np.save(tmp_path / "narrow.npy", np.zeros((8, 4), np.float32))
    with pytest.raises(jaxsens.DataError, match=r"reference data of expected gradients.*\[5\].*\[4\]|"
                                                r"reference data of expected gradients.*4.*5"):
        jaxsens.integrated_gradients(model, xs, baseline=str(tmp_path / "narrow.npy"))
    with pytest.raises(jaxsens.ArgumentError, match="n_baselines=4 applies to expected gradients"):
        jaxsens.integrated_gradients(model, xs, n_baselines=4)
    with pytest.raises(jaxsens.ArgumentError, match="reference_rows=9 applies to expected gradients"):
        attributions(model, xs, baseline=np.zeros(5), reference_rows=9)
    with pytest.raises(jaxsens.ArgumentError, match="n_baselines must be >= 1"):
        jaxsens.integrated_gradients(model, xs, baseline=xs, n_baselines=0)
    bad = xs.copy()
    bad[2, 0] = np.inf
    with pytest.raises(jaxsens.DataError, match="reference data of expected gradients"):
        jaxsens.integrated_gradients(model, xs, baseline=bad)
    with pytest.warns(UserWarning, match="deterministic; key= is ignored"):
        jaxsens.integrated_gradients(model, xs, key=3)
    assert "seed" not in jaxsens.integrated_gradients(model, xs).options


def test_cli_expected_gradients_from_a_reference_file_equal_the_library(tmp_path, capsys):
    """``jaxsens importance --method integrated-gradients --baseline REF.npy --n-baselines 5``: the reference file
    is expected gradients' data source, as ``baseline=path`` is in Python; the result is the library's, bit for bit,
    and a reference file of the wrong row shape is refused by name."""
    from jaxsens._dense import dense_onnx
    from jaxsens.cli import main

    rng = np.random.default_rng(12)
    layers = [{"W": rng.normal(size=(4, 6)), "b": rng.normal(size=6)}, {"W": rng.normal(size=(6, 2)),
                                                                        "b": rng.normal(size=2)}]
    onnx_path = tmp_path / "m.onnx"
    import onnx

    onnx.save(dense_onnx(layers, hidden="Tanh", output="Sigmoid"), onnx_path)
    xs, ref = rng.normal(size=(37, 4)).astype(np.float32), rng.normal(loc=0.5, size=(50, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", xs)
    np.save(tmp_path / "ref.npy", ref)
    out = tmp_path / "out"
    code = main(["importance", str(onnx_path), str(tmp_path / "x.npy"), "--method", "integrated-gradients",
                 "--baseline", str(tmp_path / "ref.npy"), "--n-baselines", "5", "--n-steps", "4", "--out", str(out),
                 "--quiet", "--no-plot"])
    assert code == 0, capsys.readouterr().err
    got = jaxsens.load_result(out / "importance.json")
    lib = jaxsens.integrated_gradients(jaxsens.load_model(str(onnx_path)), tmp_path / "x.npy",
                                       baseline=str(tmp_path / "ref.npy"), n_baselines=5, n_steps=4)
    assert got.n_baselines == 5 and got.n_reference == 50
    np.testing.assert_array_equal(got.importance, lib.importance)
    zeros = jaxsens.integrated_gradients(jaxsens.load_model(str(onnx_path)), tmp_path / "x.npy", n_steps=4)
    assert not np.allclose(got.importance, zeros.importance)  # the reference file was used, not the default
    np.save(tmp_path / "bad.npy", ref[:, :3])
    code = main(["importance", str(onnx_path), str(tmp_path / "x.npy"), "--method", "integrated-gradients",
                 "--baseline", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o2"), "--quiet", "--no-plot"])
    assert code == 2 and "baseline" in capsys.readouterr().err
