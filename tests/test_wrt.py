"""Hidden-unit sensitivity: ``jacobian_importance(model, data, wrt="LAYER")`` (issue 12, item 4).

The outputs are differentiated with respect to a layer's units, ``J(x) = d f(x; h + d) / d d`` at ``d = 0``
(``OnnxFunction.apply_offset`` adds ``d`` right after the node computing ``h``). Real Keras 3 models converted
through tf2onnx; oracles independent of the converter:

* closed forms from the Keras weights: a linear head after the layer gives ``|W_out|^T`` for every sample; a
  softmax head ``mean_rows |(diag(p) - p p^T) W_out^T|``; two layers after it ``W3^T diag(s') W2^T``, all in
  float64 numpy from Keras' own hidden activations (sub-models ``keras.Model(inputs, layer.output)``);
* an Embedding model (token ids) whose Jacobian with respect to the embedding output is the Dense kernel;
* ``wrt`` = the model's input == the plain input Jacobian; the identity for the output layer itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax.numpy as jnp
import keras
import numpy as np
import pytest
from _tol import EPS32, assert_f32_close

import jaxsens
from jaxsens import ArgumentError

N_ROWS, N_IN = 40, 6
SEQ, VOCAB, DIM = 5, 50, 4


def _rows(seed=0, n=N_ROWS, d=N_IN):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _dense_net(head: str, seed: int):
    """``Input(6) -> Dense(8, relu / tanh, "hidden") -> Dense(3, head, "out")``."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((N_IN,), name="x")
    h = keras.layers.Dense(8, activation="relu" if head == "linear" else "tanh", name="hidden")(x)
    y = keras.layers.Dense(3, activation=head, name="out")(h)
    return keras.Model(x, y)


@pytest.fixture(scope="module")
def linear_net():
    km = _dense_net("linear", 1)
    return km, jaxsens.Model.from_keras(km)


@pytest.fixture(scope="module")
def softmax_net():
    km = _dense_net("softmax", 2)
    return km, jaxsens.Model.from_keras(km)


@pytest.fixture(scope="module")
def deep_net():
    """``Input(5) -> Dense(7, tanh, "h1") -> Dense(6, sigmoid, "h2") -> Dense(2, "out")``."""
    keras.utils.set_random_seed(3)
    x = keras.Input((5,), name="x")
    h1 = keras.layers.Dense(7, activation="tanh", name="h1")(x)
    h2 = keras.layers.Dense(6, activation="sigmoid", name="h2")(h1)
    km = keras.Model(x, keras.layers.Dense(2, name="out")(h2))
    return km, jaxsens.Model.from_keras(km)


def _embedding_net(dtype):
    """``Embedding(50, 4, "embedding") -> Flatten -> Dense(1)`` on ``SEQ`` token ids (input declared ``dtype``;
    ``None``: Keras 3's float input, which the graph casts to integers)."""
    keras.utils.set_random_seed(4)
    kw = {"dtype": dtype} if dtype else {}
    ids = keras.Input((SEQ,), name="tokens", **kw)
    h = keras.layers.Flatten(name="flatten")(keras.layers.Embedding(VOCAB, DIM, name="embedding")(ids))
    return keras.Model(ids, keras.layers.Dense(1, name="dense")(h))


@pytest.fixture(scope="module", params=["int32", None], ids=["int32_ids", "float_ids"])
def embedding_net(request):
    km = _embedding_net(request.param)
    return km, jaxsens.Model.from_keras(km)


def _token_ids(n=N_ROWS, seed=5):
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, SEQ)).astype(np.int32)


def _sub(km, layer: str, xs) -> np.ndarray:
    """Keras' own activations of ``layer``, float64."""
    return np.asarray(keras.Model(km.inputs, km.get_layer(layer).output).predict(xs, verbose=0), np.float64)


# ------------------------------------------------------------------------------------------- closed forms
def test_linear_head_gives_abs_w_out_for_every_sample(linear_net):
    km, m = linear_net
    w_out = np.asarray(km.get_layer("out").kernel, np.float64)  # [8, 3]
    r = jaxsens.jacobian_importance(m, _rows(), wrt="hidden")
    assert r.importance.shape == r.stderr.shape == (3, 8) and r.input_shape == (8,)
    assert r.feature_names == tuple(f"hidden[{i}]" for i in range(8))
    assert r.output_names == m.output_names and r.options["wrt"] == "hidden"
    # the same float32 number on every row, averaged: exact up to the float32 moments of N_ROWS terms
    assert_f32_close(r.importance, np.abs(w_out).T, n_terms=2 * N_ROWS)
    assert_f32_close(r.mean, w_out.T, n_terms=2 * N_ROWS)
    scale = np.abs(w_out).max()
    assert np.all(r.stderr <= 2 * N_ROWS * EPS32 * scale) and np.all(r.std <= 2 * N_ROWS * EPS32 * scale)
    assert r.input_mean is None and r.input_std is None and r.correlated_pairs is None
    assert r.mode == "reverse"  # auto: 3 outputs < 8 units


def test_modes_batch_sizes_and_outputs_agree(linear_net):
    km, m = linear_net
    xs = _rows(1)
    ref = jaxsens.jacobian_importance(m, xs, wrt="hidden", mode="reverse", batch_size=64)
    w_out = np.abs(np.asarray(km.get_layer("out").kernel, np.float64))
    for kw in ({"mode": "forward"}, {"batch_size": 7}):
        other = jaxsens.jacobian_importance(m, xs, wrt="hidden", **kw)
        assert_f32_close(other.importance, ref.importance, n_terms=2 * N_ROWS, err_msg=str(kw))
    one = jaxsens.jacobian_importance(m, xs, wrt="hidden", outputs=[1])
    assert one.importance.shape == (1, 8) and one.output_names == (m.output_names[1],)
    assert_f32_close(one.importance[0], w_out[:, 1], n_terms=2 * N_ROWS)


def test_softmax_head_matches_the_float64_closed_form(softmax_net):
    km, m = softmax_net
    xs = _rows(2)
    h = _sub(km, "hidden", xs)  # [N, 8], Keras' own hidden activations
    w = np.asarray(km.get_layer("out").kernel, np.float64)
    b = np.asarray(km.get_layer("out").bias, np.float64)
    z = h @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    jac = np.einsum("nij,kj->nik", np.einsum("ni,ij->nij", p, np.eye(3)) - p[:, :, None] * p[:, None, :], w)
    r = jaxsens.jacobian_importance(m, xs, wrt="hidden")
    assert m.outputs_sum_to_one and r.importance.shape == (3, 8)
    # float32 chain: the hidden layer (fan-in 6), the head (fan-in 8), softmax, the pull-back, the mean of N rows
    n_terms = 2 * (N_IN + 8 + 3 + N_ROWS)
    assert_f32_close(r.importance, np.abs(jac).mean(0), n_terms=n_terms, magnitude=np.abs(jac).max())
    assert_f32_close(r.mean, jac.mean(0), n_terms=n_terms, magnitude=np.abs(jac).max())
    # each row of J sums to zero (softmax), but not through the shortcut: computed in full
    assert_f32_close(r.mean.sum(0), np.zeros(8), n_terms=n_terms, magnitude=np.abs(jac).max())


def test_the_output_layer_itself_gives_the_identity(softmax_net):
    """An offset on the softmax output breaks ``sum_k f_k = 1``: the K - 1 rows shortcut must not be used."""
    _, m = softmax_net
    for mode in ("reverse", "forward"):
        r = jaxsens.jacobian_importance(m, _rows(3), wrt="out", mode=mode)
        np.testing.assert_array_equal(r.importance, np.eye(3), err_msg=mode)
        np.testing.assert_array_equal(r.mean, np.eye(3), err_msg=mode)


def test_first_hidden_layer_of_a_three_layer_net(deep_net):
    km, m = deep_net
    xs = _rows(4, d=5)
    h1 = _sub(km, "h1", xs)
    w2, b2 = (np.asarray(v, np.float64) for v in km.get_layer("h2").weights)
    w3 = np.asarray(km.get_layer("out").kernel, np.float64)
    s = 1.0 / (1.0 + np.exp(-(h1 @ w2 + b2)))  # [N, 6]
    jac = np.einsum("jk,nj,ij->nki", w3, s * (1 - s), w2)  # [N, 2, 7]: W3^T diag(s') W2^T
    r = jaxsens.jacobian_importance(m, xs, wrt="h1")
    assert r.importance.shape == (2, 7) and m.layer_shape("h1") == (7,)
    assert r.mode == "reverse"
    n_terms = 2 * (5 + 7 + 6 + N_ROWS)
    scale = np.abs(jac).max()
    assert_f32_close(r.importance, np.abs(jac).mean(0), n_terms=n_terms, magnitude=scale)
    assert_f32_close(r.mean, jac.mean(0), n_terms=n_terms, magnitude=scale)
    assert_f32_close(r.stderr, np.abs(jac).std(0, ddof=1) / np.sqrt(N_ROWS), n_terms=n_terms, magnitude=scale)
    assert np.all(r.stderr > 0)  # varies with x through the sigmoid


def test_wrt_the_input_is_the_input_jacobian(deep_net):
    _, m = deep_net
    xs = _rows(5, d=5)
    plain = jaxsens.jacobian_importance(m, xs)
    name = m.input_names[0]
    via = jaxsens.jacobian_importance(m, xs, wrt=name)
    assert via.importance.shape == plain.importance.shape == (2, 5)
    assert_f32_close(via.importance, plain.importance, n_terms=2 * (5 + 7 + 6 + N_ROWS))


# ------------------------------------------------------------------------------------------- token ids
def test_embedding_output_gives_the_dense_kernel(embedding_net):
    km, m = embedding_net
    ids = _token_ids()
    w = np.asarray(km.get_layer("dense").kernel, np.float64).reshape(SEQ, DIM)
    r = jaxsens.jacobian_importance(m, ids, wrt="embedding")
    assert r.importance.shape == (1, SEQ, DIM) and r.input_shape == (SEQ, DIM)
    assert r.feature_names == tuple(f"embedding[{i}]" for i in range(DIM))
    assert_f32_close(r.importance[0], np.abs(w), n_terms=2 * N_ROWS)
    assert_f32_close(r.mean[0], w, n_terms=2 * N_ROWS)
    # per embedding dimension, summed over the sequence (the time aggregate)
    by = r.by_feature()
    assert by.importance.shape == (1, DIM)
    assert_f32_close(by.importance[0], np.abs(w).sum(0), n_terms=2 * N_ROWS + SEQ)


def test_token_ids_without_wrt_are_refused_naming_the_fix(embedding_net):
    _, m = embedding_net
    with pytest.raises(ArgumentError) as info:
        jaxsens.jacobian_importance(m, _token_ids())
    text = str(info.value)
    assert "wrt='embedding'" in text and "permutation_importance()" in text, text


def test_an_integer_tensor_is_refused_as_wrt():
    km = _embedding_net("int32")
    m = jaxsens.Model.from_keras(km)
    with pytest.raises(ArgumentError, match="no derivative.*embedding"):
        jaxsens.jacobian_importance(m, _token_ids(), wrt=m.input_names[0])


# ------------------------------------------------------------------------------------------- errors
def test_unknown_layer_lists_the_layers(linear_net):
    _, m = linear_net
    with pytest.raises(ArgumentError) as info:
        jaxsens.jacobian_importance(m, _rows(), wrt="nope")
    text = str(info.value)
    assert "wrt='nope'" in text and all(repr(n) in text for n in m.layer_names), text


def test_a_wrapped_function_is_refused():
    m = jaxsens.Model.from_function(lambda p, x: jnp.tanh(p @ x), jnp.ones((2, N_IN)), input_shape=(N_IN,))
    with pytest.raises(ArgumentError, match="needs a model converted from ONNX / Keras"):
        jaxsens.jacobian_importance(m, _rows(), wrt="hidden")


def test_scale_std_with_wrt_is_refused(linear_net):
    _, m = linear_net
    with pytest.raises(ArgumentError, match="scale='std'.*wrt"):
        jaxsens.jacobian_importance(m, _rows(), wrt="hidden", scale="std")


# ------------------------------------------------------------------------------------------- building blocks
def test_apply_offset_adds_to_the_layer_and_to_the_input(linear_net):
    km, m = linear_net
    fn, x = m.apply, _rows(6)[0]
    w, b = (np.asarray(v, np.float64) for v in km.get_layer("out").weights)
    np.testing.assert_array_equal(np.asarray(fn.apply_offset(m.params, x, {})), np.asarray(fn(m.params, x)))
    h = np.asarray(m.intermediates(x[None], ["hidden"])["hidden"][0], np.float64)
    d = np.linspace(-1.0, 1.0, 8, dtype=np.float32)
    got = np.asarray(fn.apply_offset(m.params, x, {"hidden": d}))
    assert_f32_close(got, (h + d) @ w + b, n_terms=2 * 8, magnitude=np.abs(h + d).max() * np.abs(w).max() * 8)
    dx = np.full(N_IN, 0.5, np.float32)
    assert_f32_close(np.asarray(fn.apply_offset(m.params, x, {m.input_names[0]: dx})),
                     np.asarray(fn(m.params, x + dx)), n_terms=2 * (N_IN + 8))
    with pytest.raises(ArgumentError, match="no such tensor"):
        fn.apply_offset(m.params, x, {"nope": d})
    with pytest.raises(ArgumentError, match="one value per unit"):
        fn.apply_offset(m.params, x, {"hidden": d[:3]})


def test_layer_shape_is_the_per_sample_shape_of_intermediates(embedding_net, deep_net):
    for m, xs in ((embedding_net[1], _token_ids(3)), (deep_net[1], _rows(d=5)[:3])):
        acts = m.intermediates(xs)
        for name in m.layer_names:
            assert m.layer_shape(name) == acts[name].shape[1:], name
    with pytest.raises(ArgumentError, match="no layer named 'nope'"):
        deep_net[1].layer_shape("nope")


def test_result_saves_and_loads(linear_net, tmp_path):
    _, m = linear_net
    r = jaxsens.jacobian_importance(m, _rows(), wrt="hidden")
    r.save(tmp_path / "r.json")
    back = jaxsens.load_result(tmp_path / "r.json")
    np.testing.assert_array_equal(back.importance, r.importance)
    assert back.feature_names == r.feature_names and back.options["wrt"] == "hidden"
    assert back.importance_label == r.importance_label == "mean |dy/dh|, h = layer hidden"


def test_the_command_line_takes_wrt(tmp_path, capsys):
    from jaxsens import examples
    from jaxsens.cli import main

    data = tmp_path / "x.npy"
    np.save(data, np.load(examples.default_data_path())[:64])
    model = jaxsens.load_model(examples.default_model_path())
    layer = model.layer_names[-2]  # the last hidden layer
    code = main(["importance", examples.default_model_path(), str(data), "--out", str(tmp_path / "o"), "--quiet",
                 "--wrt", layer, "--no-plot"])
    assert code == 0
    got = jaxsens.load_result(tmp_path / "o" / "importance.json")
    lib = jaxsens.jacobian_importance(model, data, wrt=layer)
    assert got.input_shape == model.layer_shape(layer) and got.feature_names[0] == f"{layer}[0]"
    np.testing.assert_array_equal(got.importance, lib.importance)
    assert main(["importance", examples.default_model_path(), str(data), "--out", str(tmp_path / "p"), "--quiet",
                 "--wrt", "nope"]) == 2
    assert "no layer named 'nope'" in capsys.readouterr().err
