"""The inside view (issue 12 item 3): activations, activation_stats, architecture.

Oracles, all independent of the converter:

* Keras sub-models ``keras.Model(inputs, layer.output).predict`` for every layer's output (seed 003's model,
  saved as ``.keras`` and loaded with ``jaxsens.load_model``; an LSTM, a Conv1D and a two-input model);
* Keras' ``layer.name``, ``layer.output.shape`` and ``layer.count_params()`` for :func:`jaxsens.architecture`;
* numpy over the full activations for :func:`jaxsens.activation_stats`, on a ReLU network with small integer
  weights and integer-valued inputs: every activation is then exact in float32, so minimum, maximum and the
  fraction of exact zeros must match exactly, and means / standard deviations to the float32 bound of their sums.
"""

from __future__ import annotations

import functools
import json

import jax
import keras
import numpy as np
import pytest
from _tol import EPS32, assert_f32_close

import jaxsens
from converters.keras import keras_to_onnx
from converters.onnx_to_jax.layers import LAYER_PARAMS_KEY
from jaxsens import _inside
from jaxsens.errors import ArgumentError, ArgumentTypeError, DataError, ModelFileError

K = keras


def _seed_weights(model, seed: int, scale: float = 0.3) -> None:
    """Random weights, biases included (tf2onnx drops an all-zero bias from the graph)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale, tuple(w.shape)).astype(np.float32) for w in model.weights])


def _sub_model(keras_model, layer, xs):
    return np.asarray(K.Model(keras_model.inputs, layer.output).predict(xs, verbose=0))


def _assert_close_1e5(got, want, err_msg=""):
    """The issue's bound: within 1e-5 relative to the layer's magnitude (max |value|)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape, err_msg)
    bound = 1e-5 * max(float(np.max(np.abs(want))), np.finfo(np.float32).tiny)
    assert np.max(np.abs(got - want)) <= bound, (err_msg, float(np.max(np.abs(got - want))), bound)


# ------------------------------------------------------------------------------------------------ seed 003
def _seed003_keras():
    """Seed 003's model, exactly (Keras 3 functional API)."""
    inputs = K.Input(shape=(50, 50))
    h = K.layers.Dense(75, activation="relu")(inputs)
    h = K.layers.Dense(50, activation="relu", name="my_dense")(h)
    h = K.layers.Dense(25, activation="relu")(h)
    h = K.layers.Dense(10, activation="relu")(h)
    h = K.layers.Flatten()(h)
    model = K.Model(inputs, K.layers.Dense(5, activation="softmax")(h), name="simple_model")
    _seed_weights(model, seed=3)
    return model


@pytest.fixture(scope="module")
def seed003(tmp_path_factory):
    keras_model = _seed003_keras()
    path = tmp_path_factory.mktemp("seed003") / "seed003.keras"
    keras_model.save(path)
    model = jaxsens.load_model(path)
    xs = np.random.default_rng(0).random((5, 50, 50)).astype(np.float32)  # np.random.sample, as in the seed
    return keras_model, model, xs


def test_seed003_every_layer_equals_its_keras_sub_model(seed003):
    keras_model, model, xs = seed003
    layers = [layer for layer in keras_model.layers if type(layer).__name__ != "InputLayer"]
    batch = jaxsens.activations(model, xs)
    one = jaxsens.activations(model, xs[2])
    assert list(batch) == [layer.name for layer in layers] == list(model.layer_names)
    assert "my_dense" in batch and list(batch)[-1] == keras_model.layers[-1].name  # the output layer included
    for layer in layers:
        want = _sub_model(keras_model, layer, xs)
        assert batch[layer.name].shape == want.shape == (5, *tuple(layer.output.shape)[1:])
        _assert_close_1e5(batch[layer.name], want, layer.name)
        assert one[layer.name].shape == want.shape[1:]  # one sample: per-sample arrays
        _assert_close_1e5(one[layer.name], want[2], layer.name)
    np.testing.assert_allclose(batch[layers[-1].name].sum(axis=1), 1.0, rtol=0, atol=8 * 5 * EPS32)  # softmax


def test_seed003_architecture_matches_keras(seed003):
    keras_model, model, _ = seed003
    rows = jaxsens.architecture(model)
    assert all(isinstance(r, jaxsens.LayerInfo) for r in rows)
    assert [r.name for r in rows] == [layer.name for layer in keras_model.layers]  # the InputLayer first
    for r, layer in zip(rows, keras_model.layers):
        assert r.output_shape == tuple(layer.output.shape)[1:], r
        assert r.n_params == layer.count_params(), r
    assert [r.n_params for r in rows] == [0, 3825, 3800, 1275, 260, 0, 2505]  # seed 003's model.summary()
    names = [r.name for r in rows]
    assert rows[0].op_types == ("Input",) and rows[0].inputs == ()
    assert [r.inputs for r in rows[1:]] == [(n,) for n in names[:-1]]  # a chain
    assert "MatMul" in rows[2].op_types and "Relu" in rows[2].op_types and "Shape" not in rows[2].op_types
    assert rows[-1].op_types[-1] == "Softmax" and rows[5].op_types == ("Reshape",)  # Flatten
    frame = _inside.architecture_frame(model)
    assert list(frame["name"]) == names and list(frame["n_params"]) == [r.n_params for r in rows]


def test_layers_are_selected_by_name_or_index_in_graph_order(seed003):
    keras_model, model, xs = seed003
    names = model.layer_names
    got = jaxsens.activations(model, xs, layers=[-1, "my_dense", 0, "my_dense"])
    assert list(got) == [names[0], "my_dense", names[-1]]  # graph order, each once
    assert list(jaxsens.activations(model, xs[0], layers="my_dense")) == ["my_dense"]
    want = _sub_model(keras_model, keras_model.get_layer("my_dense"), xs)
    _assert_close_1e5(got["my_dense"], want)


def test_recorded_parameter_counts_take_precedence_over_the_graph():
    """tf2onnx drops an all-zero bias (an untrained Keras Dense) from the graph; the Keras converter records Keras'
    own count_params() in the metadata, and that count wins over the graph's initializers."""
    keras_model = K.Sequential([K.Input((4,)), K.layers.Dense(3, name="d")])  # bias initialised to zeros
    proto = keras_to_onnx(keras_model)
    assert jaxsens.architecture(jaxsens.Model.from_onnx(proto))[1].n_params == keras_model.get_layer("d").count_params() == 15
    recorded = [p for p in proto.metadata_props if p.key == LAYER_PARAMS_KEY]
    assert len(recorded) == 1
    recorded[0].value = json.dumps({})  # no recorded count: the graph's own (W only, no bias in the graph)
    assert jaxsens.architecture(jaxsens.Model.from_onnx(proto))[1].n_params == 12
    recorded[0].value = json.dumps({"d": -1})
    with pytest.raises(ModelFileError, match="layer_params"):
        jaxsens.architecture(jaxsens.Model.from_onnx(proto))


# ------------------------------------------------------------------------------------------------ other layer kinds
def _lstm(K):
    return K.Sequential([K.Input((6, 3)), K.layers.LSTM(8), K.layers.Dense(2, activation="softmax")])


def _conv1d(K):
    return K.Sequential(
        [
            K.Input((10, 3)),
            K.layers.Conv1D(4, 3, activation="relu"),
            K.layers.MaxPooling1D(2),
            K.layers.Flatten(),
            K.layers.Dense(2),
        ]
    )


def _embedding(K):
    return K.Sequential(
        [K.Input((5,), dtype="int32"), K.layers.Embedding(10, 3), K.layers.Flatten(), K.layers.Dense(2)]
    )


def _two_inputs(K):
    a, b = K.Input((4,), name="a"), K.Input((4,), name="b")
    h = K.layers.Concatenate(name="cat")([K.layers.Add(name="sum")([a, b]), a])
    return K.Model([a, b], K.layers.Dense(3, activation="tanh", name="out")(h))


ARCHS = {"lstm": _lstm, "conv1d": _conv1d, "embedding": _embedding, "two_inputs": _two_inputs}
# float32 chain along an output (fan-ins, activations, steps of the recurrence), as in tests/test_keras.py
CHAIN = {
    "lstm": 6 * (3 + 8 + 8) + (8 + 2),
    "conv1d": 3 * 3 + 2 + 12 + 1,
    "embedding": 15 + 1,
    "two_inputs": 8 + 2,
}


@functools.cache
def _converted(arch: str):
    keras_model = ARCHS[arch](K)
    _seed_weights(keras_model, seed=sorted(ARCHS).index(arch), scale=0.5)
    rng = np.random.default_rng(1)
    xs = []
    for t in keras_model.inputs:
        shape = (7, *tuple(t.shape)[1:])
        xs.append(
            rng.integers(0, 10, shape).astype(np.int32)
            if "int" in str(t.dtype)
            else rng.normal(size=shape).astype(np.float32)
        )
    return keras_model, jaxsens.Model.from_keras(keras_model), xs


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_architecture_and_activations_of_other_layer_kinds(arch):
    keras_model, model, xs = _converted(arch)
    rows = jaxsens.architecture(model)
    layers = [layer for layer in keras_model.layers if type(layer).__name__ != "InputLayer"]
    inputs = [r for r in rows if r.op_types == ("Input",)]
    assert [r.name for r in rows[: len(inputs)]] == list(model.input_names)  # the input(s) first
    assert [r.output_shape for r in inputs] == [tuple(t.shape)[1:] for t in keras_model.inputs]
    assert [r.name for r in rows[len(inputs) :]] == [layer.name for layer in layers]
    for r, layer in zip(rows[len(inputs) :], layers):
        assert r.output_shape == tuple(layer.output.shape)[1:], r
        assert r.n_params == layer.count_params(), r  # Dense, Conv1D, LSTM, Embedding: Keras' own count
    assert all(r.inputs for r in rows[len(inputs) :])
    arg = xs[0] if len(xs) == 1 else tuple(xs)
    got = jaxsens.activations(model, arg)
    one = jaxsens.activations(model, xs[0][3] if len(xs) == 1 else tuple(x[3] for x in xs))
    assert list(got) == [layer.name for layer in layers]
    for layer in layers:
        want = _sub_model(keras_model, layer, xs[0] if len(xs) == 1 else list(xs))
        assert_f32_close(got[layer.name], want, n_terms=2 * CHAIN[arch], err_msg=layer.name)
        assert_f32_close(one[layer.name], want[3], n_terms=2 * CHAIN[arch], err_msg=layer.name)


def test_lstm_row_names_its_recurrence_and_the_two_input_graph_its_edges():
    _, lstm, _ = _converted("lstm")
    assert "LSTM" in jaxsens.architecture(lstm)[1].op_types
    _, conv, _ = _converted("conv1d")
    assert "Conv" in jaxsens.architecture(conv)[1].op_types
    _, model, xs = _converted("two_inputs")
    edges = {r.name: r.inputs for r in jaxsens.architecture(model)}
    assert edges == {"a": (), "b": (), "sum": ("a", "b"), "cat": ("sum", "a"), "out": ("cat",)}
    by_name = jaxsens.activations(model, {"b": xs[1], "a": xs[0]})
    np.testing.assert_array_equal(by_name["sum"], jaxsens.activations(model, tuple(xs))["sum"])


# ------------------------------------------------------------------------------------------------ statistics
N_IN = 5


def _relu_net(dead: int = 2):
    """Dense(6, relu) -> Dense(4, relu) -> Dense(2): small integer weights; unit ``dead`` of the first layer has
    bias -100, beyond what |x| <= 3 and |w| <= 2 over 5 inputs can reach (30): it is 0 on every row."""
    model = K.Sequential(
        [
            K.Input((N_IN,)),
            K.layers.Dense(6, activation="relu", name="h1"),
            K.layers.Dense(4, activation="relu", name="h2"),
            K.layers.Dense(2, name="out"),
        ]
    )
    rng = np.random.default_rng(5)
    weights = [rng.integers(-2, 3, tuple(w.shape)).astype(np.float32) for w in model.weights]
    weights[1][dead] = -100.0
    weights[1][weights[1] == 0] = 1.0  # every bias non-zero: kept in the exported graph
    model.set_weights(weights)
    return model, weights


def _numpy_forward(weights, xs):
    """Float64 forward pass; exact here (integer weights and inputs)."""
    w1, b1, w2, b2, w3, b3 = (np.asarray(w, np.float64) for w in weights)
    h1 = np.maximum(xs @ w1 + b1, 0)
    h2 = np.maximum(h1 @ w2 + b2, 0)
    return {"h1": h1, "h2": h2, "out": h2 @ w3 + b3}


@pytest.fixture(scope="module")
def relu_net():
    keras_model, weights = _relu_net()
    model = jaxsens.Model.from_keras(keras_model)
    xs = np.random.default_rng(6).integers(-3, 4, (203, N_IN)).astype(np.float32)
    return model, weights, xs


def _assert_stats_match(st, acts, n_chunk: int):
    for name, a in acts.items():
        n = a.shape[0]
        assert st.shapes[name] == a.shape[1:]
        np.testing.assert_array_equal(st.min[name], a.min(axis=0), err_msg=name)  # exact values
        np.testing.assert_array_equal(st.max[name], a.max(axis=0), err_msg=name)
        np.testing.assert_array_equal(st.zero_fraction[name], np.mean(a == 0, axis=0), err_msg=name)
        # float32 chunk sums of deviations (at most n_chunk rows), merged in float64
        spread = np.max(np.abs(a - a[0]), axis=0) + np.abs(a.mean(axis=0))
        assert_f32_close(
            st.mean[name], a.mean(axis=0), n_terms=min(n_chunk, n) + 2, magnitude=spread, err_msg=name
        )
        assert_f32_close(
            st.std[name],
            a.std(axis=0, ddof=1),
            n_terms=2 * (min(n_chunk, n) + 2),
            magnitude=spread,
            err_msg=name,
        )


@pytest.mark.parametrize("batch_size", [1, 7, 64, None])
def test_activation_stats_equal_numpy_over_the_full_activations(relu_net, batch_size):
    model, weights, xs = relu_net
    acts = _numpy_forward(weights, xs.astype(np.float64))
    for name, a in jaxsens.activations(model, xs).items():  # activations() is exact here too
        np.testing.assert_array_equal(a, acts[name], err_msg=name)
    st = jaxsens.activation_stats(model, xs, batch_size=batch_size)
    assert isinstance(st, jaxsens.ActivationStats)
    assert st.layers == ("h1", "h2", "out") and st.n_samples == 203 and st.n_skipped == 0
    _assert_stats_match(st, acts, batch_size or 256)


def test_dead_relu_unit_is_found_and_the_table_is_tidy(relu_net):
    model, weights, xs = relu_net
    st = jaxsens.activation_stats(model, xs, batch_size=50)
    acts = _numpy_forward(weights, xs.astype(np.float64))
    dead = st.dead_units()
    assert 2 in dead["h1"]
    for name, a in acts.items():
        np.testing.assert_array_equal(dead[name], np.flatnonzero(np.all(a == 0, axis=0)), err_msg=name)
    assert list(st.dead_units("h1")) == ["h1"]
    frame = st.to_frame()
    assert list(frame.columns) == ["layer", "unit", "mean", "std", "min", "max", "zero_fraction"]
    assert len(frame) == 6 + 4 + 2
    row = frame[(frame.layer == "h1") & (frame.unit == 2)].iloc[0]
    assert row.zero_fraction == 1.0 and row["max"] == 0.0 and row["std"] == 0.0
    only = jaxsens.activation_stats(model, xs, layers=["h1"], batch_size=50)
    assert only.layers == ("h1",)
    np.testing.assert_array_equal(only.zero_fraction["h1"], st.zero_fraction["h1"])


def test_nan_rows_raise_or_are_skipped_and_counted(relu_net):
    model, weights, xs = relu_net
    bad = xs.copy()
    bad[[4, 100, 202], 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        jaxsens.activation_stats(model, bad, batch_size=16)
    st = jaxsens.activation_stats(model, bad, batch_size=16, nan_policy="skip")
    assert st.n_samples == 200 and st.n_skipped == 3
    keep = np.delete(xs, [4, 100, 202], axis=0).astype(np.float64)
    _assert_stats_match(st, _numpy_forward(weights, keep), 16)


def test_activation_stats_compiles_once_for_ragged_data(relu_net):
    model, _, xs = relu_net
    jaxsens.activation_stats(model, xs[:50], batch_size=16)  # a tail chunk of 2 rows
    before = _inside._stats_kernel._cache_size()
    jaxsens.activation_stats(model, xs[:61], batch_size=16)  # another tail (13 rows): the same kernel
    jaxsens.activation_stats(
        model.with_params(jax.tree.map(lambda v: v * 2, model.params)), xs, batch_size=16
    )
    assert _inside._stats_kernel._cache_size() == before


def test_a_batch_beyond_one_chunk_is_computed_in_chunks(relu_net):
    """More rows than the largest chunk (65,536): several padded chunks, the same values."""
    model, weights, _ = relu_net
    xs = np.random.default_rng(8).integers(-3, 4, (70_001, N_IN)).astype(np.float32)
    got = jaxsens.activations(model, xs, layers=["h2", "out"])
    want = _numpy_forward(weights, xs.astype(np.float64))
    for name in ("h2", "out"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# ------------------------------------------------------------------------------------------------ errors
def test_unknown_layer_is_refused_listing_the_layers(seed003):
    _, model, xs = seed003
    with pytest.raises(ArgumentError, match=r"unknown layer 'my_dens'.*'my_dense'"):
        jaxsens.activations(model, xs, layers=["my_dens"])
    with pytest.raises(ArgumentError, match=r"index 9 is out of range.*6 layers"):
        jaxsens.activations(model, xs, layers=[9])
    with pytest.raises(ArgumentError, match="selects nothing"):
        jaxsens.activations(model, xs, layers=[])
    with pytest.raises(ArgumentTypeError, match="names or indices"):
        jaxsens.activations(model, xs, layers=[1.5])
    with pytest.raises(ArgumentError, match=r"unknown layer 'nope'.*'my_dense'"):
        jaxsens.activation_stats(model, xs, layers="nope")


def test_dead_units_of_an_unknown_layer_is_refused(relu_net):
    model, _, xs = relu_net
    st = jaxsens.activation_stats(model, xs[:20])
    with pytest.raises(ArgumentError, match=r"unknown layer 'h3'.*'h1', 'h2', 'out'"):
        st.dead_units("h3")


def test_wrapped_function_has_no_layers_to_show():
    model = jaxsens.Model.from_function(
        lambda p, x: jax.numpy.tanh(p @ x), np.eye(3, dtype=np.float32), input_shape=(3,)
    )
    for call in (
        lambda: jaxsens.activations(model, np.zeros(3)),
        lambda: jaxsens.activation_stats(model, np.zeros((4, 3))),
        lambda: jaxsens.architecture(model),
    ):
        with pytest.raises(ArgumentError, match="plain function.*no layers to show"):
            call()
    with pytest.raises(ArgumentTypeError, match="needs a jaxsens.Model"):
        jaxsens.architecture("model.onnx")


def test_wrong_input_shape_says_expected_and_got(seed003):
    _, model, _ = seed003
    with pytest.raises(
        DataError,
        match=r"shape \(3, 49, 50\); the model expects one sample \[50, 50\] or a batch "
        r"\[n_samples, 50, 50\]",
    ):
        jaxsens.activations(model, np.zeros((3, 49, 50), np.float32))
    with pytest.raises(DataError, match=r"shape \(50,\)"):
        jaxsens.activations(model, np.zeros(50, np.float32))
    with pytest.raises(DataError, match="dtype"):
        jaxsens.activations(model, np.full((50, 50), "a"))
