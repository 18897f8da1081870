"""integrated_gradients / attributions against closed forms (polynomials), completeness, and Captum on a PyTorch
MLP exported to ONNX."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from _tol import EPS32, assert_f32_close

import jaxsens
from jaxsens._integrated import attributions, quadrature


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
    captum = pytest.importorskip("captum.attr._utils.approximation_methods")
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
    torch = pytest.importorskip("torch")
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
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
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
