"""PaD (Dimopoulos) against a float64 closed form, and its invariants."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from _tol import assert_f32_close

import jaxsens
from jaxsens._pad import partial_derivatives


def _tanh_net():
    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(5, 4))
    w2 = rng.normal(size=(2, 5))
    params = {"w1": jnp.asarray(w1, jnp.float32), "w2": jnp.asarray(w2, jnp.float32)}
    model = jaxsens.Model.from_function(lambda p, x: p["w2"] @ jnp.tanh(p["w1"] @ x), params, input_shape=(4,))
    return model, w1, w2


def test_pad_matches_float64_closed_form():
    model, w1, w2 = _tanh_net()
    xs = np.random.default_rng(4).normal(size=(500, 4))
    # d y_k / d x_i = sum_h w2[k,h] (1 - tanh(w1 x)_h^2) w1[h,i]
    s = 1 - np.tanh(xs @ w1.T) ** 2  # [n, h]
    d = np.einsum("kh,nh,hi->nki", w2, s, w1)
    ssd = (d**2).sum(axis=0)
    want = ssd / ssd.sum(axis=1, keepdims=True)
    got = partial_derivatives(model, xs.astype(np.float32), batch_size=64)
    # float32: inputs rounded, 4 + 5 products summed, tanh, 1 - t^2, a square; chunk sums of 64 rows
    n_terms = 64 + 2 * (1 + 4 + 5 + 3)
    assert_f32_close(got.ssd, ssd, n_terms=n_terms)
    assert_f32_close(got.importance, want, n_terms=n_terms + 4 + 1)  # + the row total of 4 inputs, a divide
    np.testing.assert_allclose(got.importance.sum(axis=1), 1.0, rtol=1e-12)  # normalised in float64
    assert_f32_close(got.mean, d.mean(axis=0), n_terms=n_terms, magnitude=np.sqrt(ssd / len(xs)).max())


def test_pad_sequence_input_sums_time_steps_and_round_trips(tmp_path):
    w = jnp.asarray(np.random.default_rng(0).normal(size=(3,)), jnp.float32)
    model = jaxsens.Model.from_function(lambda p, x: jnp.atleast_1d(jnp.sum(jnp.tanh(x @ p))), w, input_shape=(6, 3))
    xs = np.random.default_rng(1).normal(size=(200, 6, 3)).astype(np.float32)
    got = partial_derivatives(model, xs)
    d = (1 - np.tanh(xs.astype(np.float64) @ np.asarray(w, np.float64)) ** 2)[..., None] * np.asarray(w, np.float64)
    ssd = (d**2).sum(axis=(0, 1))
    # 200 rows in one chunk; per row 3 products, tanh, 1 - t^2, a square; 6 time steps summed
    assert_f32_close(got.ssd[0], ssd, n_terms=200 + 6 + 3 + 3)
    got.save(tmp_path / "pad.json")
    back = jaxsens.load_result(tmp_path / "pad.json")
    np.testing.assert_array_equal(back.importance, got.importance)
    assert [r[0] for r in back.ranking()] == [r[0] for r in got.ranking()]
