"""gradient_x_input against closed forms in float64: a linear model and a one-hidden-layer tanh network."""

import numpy as np
import jax.numpy as jnp

import jaxsens
from _tol import assert_f32_close


def test_linear_model_attribution_is_w_times_x():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 5)).astype(np.float32)
    m = jaxsens.Model.from_function(lambda w, x: w @ x, W, input_shape=(5,))
    xs = rng.normal(size=(700, 5)).astype(np.float32)
    r = jaxsens.gradient_x_input(m, xs, batch_size=64)
    a = W.astype(np.float64)[None] * xs.astype(np.float64)[:, None, :]  # [n, 3, 5]
    assert r.importance.shape == r.stderr.shape == (3, 5) and r.n_samples == 700
    assert_f32_close(r.importance, np.abs(a).mean(0), n_terms=64 + 5)
    assert_f32_close(r.mean, a.mean(0), n_terms=64 + 5, magnitude=np.abs(a).mean(0))
    assert_f32_close(r.stderr, np.abs(a).std(0, ddof=1) / np.sqrt(700), n_terms=64 + 5)


def test_tanh_network_matches_the_closed_form_gradient():
    rng = np.random.default_rng(1)
    p = {"U": rng.normal(size=(6, 4)).astype(np.float32), "V": rng.normal(size=(2, 6)).astype(np.float32)}
    m = jaxsens.Model.from_function(lambda p, x: p["V"] @ jnp.tanh(p["U"] @ x), p, input_shape=(4,))
    xs = rng.normal(size=(300, 4)).astype(np.float32)
    r = jaxsens.gradient_x_input(m, xs, outputs=[1], batch_size=100)
    U, V, x = p["U"].astype(np.float64), p["V"].astype(np.float64), xs.astype(np.float64)
    g = 1 - np.tanh(x @ U.T) ** 2  # [n, 6]
    J = np.einsum("h,nh,hj->nj", V[1], g, U)  # d y_1 / d x_j
    a = J * x
    assert r.output_names == (m.output_names or ("y0", "y1"))[1:]
    assert_f32_close(r.importance[0], np.abs(a).mean(0), n_terms=100 + 4 + 6 + 3)
