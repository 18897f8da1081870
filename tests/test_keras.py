"""Keras -> ONNX -> JAX end to end: every architecture of issue 2, every Keras file format, safety and errors.

Each model is tiny, gets seeded random weights (BatchNormalization with non-trivial moving statistics) and is
converted once per session. Oracles, all independent of the converter:

* Keras' own ``predict`` on the original model (``model(xs)`` within the float32 bound of tests/_tol.py for the
  architecture's chain of roundings, :data:`CHAIN`);
* TensorFlow ``GradientTape.batch_jacobian`` on the original model (``jax.jacrev`` through the converted
  function, the same bound for a chain traced forward and back);
* onnxruntime on the converted ONNX (the converter alone, whatever the JAX op registry supports);
* per-layer Keras sub-models ``keras.Model(inputs, layer.output)`` for ``Model.intermediates``;
* a numpy forward pass for a hand-written Keras 2.2.4 structure + weights pair of the seed-000 shape.

TensorFlow, Keras 3 and tf_keras are imported directly: the test command installs every extra, and a missing
one must fail loudly rather than skip.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import os
import pathlib
import shutil
import sys

import h5py
import jax
import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
import tf_keras
from _tol import assert_f32_close

import jaxsens
from converters.errors import MissingExtraError, ModelFileError, UnsafeModelError
from converters.keras import (
    LAYER_NAMES_KEY,
    SOURCE_KEY,
    check_keras_config,
    keras_file_to_onnx,
    keras_to_onnx,
)

FLAVORS = {"keras3": keras, "tf_keras": tf_keras}
N_SAMPLES = 4
ACTIVATIONS = (
    "relu",
    "sigmoid",
    "hard_sigmoid",
    "tanh",
    "softmax",
    "elu",
    "selu",
    "softplus",
    "gelu",
    "swish",
    "leaky_relu",
)


# ------------------------------------------------------------------------------------------------------------
# architectures: one builder per row, each taking the Keras module (Keras 3 or tf_keras)
# ------------------------------------------------------------------------------------------------------------
def _activations(K):
    x = K.Input((6,), name="x")
    branches = [K.layers.Dense(4, activation=a, name=f"dense_{a}")(x) for a in ACTIVATIONS]
    h = K.layers.Concatenate(name="concat")(branches)
    return K.Model(x, K.layers.Dense(3, name="out")(h))


def _mlp(K):
    return K.Sequential(
        [
            K.Input((6,)),
            K.layers.Dense(8, activation="relu"),
            K.layers.BatchNormalization(),
            K.layers.Dropout(0.3),
            K.layers.Dense(5, activation="tanh"),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def _layernorm(K):
    return K.Sequential([K.Input((6,)), K.layers.Dense(8), K.layers.LayerNormalization(), K.layers.Dense(2)])


def _merge(K):
    a = K.Input((4,), name="a")
    b = K.Input((4,), name="b")
    s = K.layers.Add()([a, b])
    p = K.layers.Multiply()([a, b])
    h = K.layers.Concatenate()([s, p, a])
    return K.Model([a, b], K.layers.Dense(2, activation="sigmoid")(h))


def _conv1d(K):
    return K.Sequential(
        [
            K.Input((24,)),
            K.layers.Reshape((8, 3)),
            K.layers.Conv1D(4, 3, activation="relu"),
            K.layers.MaxPooling1D(2),
            K.layers.Conv1D(3, 2, padding="same"),
            K.layers.AveragePooling1D(1),
            K.layers.Flatten(),
            K.layers.Dense(2),
        ]
    )


def _conv2d(K):
    return K.Sequential(
        [
            K.Input((6, 6, 2)),
            K.layers.Conv2D(4, 3, padding="same", activation="relu"),
            K.layers.MaxPooling2D(2),
            K.layers.Conv2D(3, 2),
            K.layers.AveragePooling2D(2, padding="same"),
            K.layers.GlobalAveragePooling2D(),
            K.layers.Dense(2),
        ]
    )


def _embedding(K):
    return K.Sequential(
        [K.Input((5,), dtype="int32"), K.layers.Embedding(10, 3), K.layers.Flatten(), K.layers.Dense(2)]
    )


def _simple_rnn(K):
    return K.Sequential([K.Input((5, 3)), K.layers.SimpleRNN(4), K.layers.Dense(2)])


def _lstm(K):
    return K.Sequential(
        [K.Input((5, 3)), K.layers.LSTM(4, return_sequences=True), K.layers.LSTM(3), K.layers.Dense(2)]
    )


def _gru(K):
    return K.Sequential([K.Input((5, 3)), K.layers.GRU(4), K.layers.Dense(2)])


def _bilstm(K):
    return K.Sequential([K.Input((5, 3)), K.layers.Bidirectional(K.layers.LSTM(3)), K.layers.Dense(2)])


ARCHS = {
    "activations": _activations,
    "mlp": _mlp,
    "layernorm": _layernorm,
    "merge": _merge,
    "conv1d": _conv1d,
    "conv2d": _conv2d,
    "embedding": _embedding,
    "simple_rnn": _simple_rnn,
    "lstm": _lstm,
    "gru": _gru,
    "bilstm": _bilstm,
}
ARCH_CASES = [pytest.param(f, a, id=f"{f}-{a}") for f in FLAVORS for a in ARCHS]

# float32 roundings along one output of each architecture: fan-ins of the sums, normalisations, activations and,
# for recurrent layers, every step (5 here); the tolerances of tests/_tol.py scale with them
CHAIN = {
    "activations": 6 + 4 + 10 * 4 + 1,  # Dense(4) + activation per branch, Dense(3) over the 40 concatenated
    "mlp": (6 + 2) + 4 + (8 + 2) + (5 + 5),  # Dense + relu, BatchNorm, Dense + tanh, Dense + softmax
    "layernorm": (6 + 1) + (8 + 8 + 4) + (8 + 1),  # LayerNorm: mean, variance, normalise, scale and shift
    "merge": 2 + (12 + 2),
    "conv1d": (9 + 2) + (8 + 1) + (9 + 1),  # kernel 3 x 3 channels, kernel 2 x 4, Dense over 3 x 3
    "conv2d": (18 + 2) + (16 + 1) + 5 + 5 + (3 + 1),  # 3x3x2, 2x2x4, average pools, Dense
    "embedding": 15 + 1,
    "simple_rnn": 5 * (3 + 4 + 2) + (4 + 1),
    "lstm": 5 * (3 + 4 + 8) + 5 * (4 + 3 + 8) + (3 + 1),  # gates: fan-ins, sigmoid / tanh, cell update
    "gru": 5 * (3 + 4 + 9) + (4 + 1),
    "bilstm": 5 * (3 + 3 + 8) + (6 + 1),
}


def assert_matches(got, want, n_chain: int, *, jacobian: bool = False, err_msg: str = ""):
    """Two float32 implementations of one network (each ``n_chain`` roundings along an output; a Jacobian
    retraces the chain backwards) agree to the float32 bound, at the scale of the compared values."""
    n_terms = 2 * n_chain * (2 if jacobian else 1)
    assert_f32_close(got, want, n_terms=n_terms, err_msg=err_msg)


def _seed_weights(model, seed: int) -> None:
    """Random weights; BatchNormalization gets non-trivial moving statistics and scales."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        name, shape = w.name, tuple(w.shape)
        if "variance" in name or "gamma" in name:
            values.append(rng.uniform(0.5, 2.0, shape))
        else:
            values.append(rng.normal(0.0, 0.5, shape))
    model.set_weights([v.astype(np.float32) for v in values])


def _data(model, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = []
    for t in model.inputs:
        shape = (N_SAMPLES, *tuple(t.shape)[1:])
        if "int" in str(t.dtype):
            xs.append(rng.integers(0, 10, shape).astype(np.int32))
        else:
            xs.append(rng.normal(size=shape).astype(np.float32))
    return xs


def _arg(xs: list[np.ndarray]):
    """How jaxsens and Keras take the batch: one array, or a tuple / list for several inputs."""
    return xs[0] if len(xs) == 1 else tuple(xs)


def _keras_predict(keras_model, xs):
    return np.asarray(keras_model.predict(xs[0] if len(xs) == 1 else list(xs), verbose=0))


@functools.cache
def _keras_model(flavor: str, arch: str):
    K = FLAVORS[flavor]
    model = ARCHS[arch](K)
    _seed_weights(model, seed=sorted(ARCHS).index(arch))
    return model


@functools.cache
def _converted(flavor: str, arch: str):
    """(keras model, ONNX proto, jaxsens model, data, keras predict): converted once per session."""
    keras_model = _keras_model(flavor, arch)
    proto = keras_to_onnx(keras_model)
    xs = _data(keras_model, seed=7)
    return keras_model, proto, xs, _keras_predict(keras_model, xs)


@functools.cache
def _jaxsens_model(flavor: str, arch: str) -> jaxsens.Model:
    return jaxsens.Model.from_onnx(_converted(flavor, arch)[1])


def _tf_batch_jacobians(keras_model, xs) -> list[np.ndarray]:
    """d output / d input_k for every input k, per sample: ``[n_samples, *output_shape, *input_shape]``."""
    tensors = [tf.constant(x) for x in xs]
    with tf.GradientTape(persistent=True) as tape:
        for t in tensors:
            tape.watch(t)
        y = keras_model(tensors[0] if len(tensors) == 1 else tensors, training=False)
    return [np.asarray(tape.batch_jacobian(y, t)) for t in tensors]


def _jax_batch_jacobians(model: jaxsens.Model, xs) -> list[np.ndarray]:
    """``jax.jacrev`` of the per-sample function, vmapped over the batch: one array per input."""
    jac = jax.jit(jax.vmap(jax.jacrev(model.apply, argnums=1), in_axes=(None, 0)))
    if len(xs) == 1:
        return [np.asarray(jac(model.params, xs[0]))]
    return [np.asarray(j) for j in jac(model.params, tuple(xs))]


# ------------------------------------------------------------------------------------------------------------
# in-memory models: every architecture, Keras 3 and tf_keras
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("flavor", "arch"), ARCH_CASES)
def test_every_weight_is_a_parameter(flavor, arch):
    """Weights are arguments of the function (never constants baked into a trace), so weekly retrained versions
    share compiled code and ``with_params`` changes the predictions: no floating array is left among the
    constants, and doubling the parameters changes the output."""
    model = _jaxsens_model(flavor, arch)
    baked = {k: v.shape for k, v in model.apply.consts.items() if v.dtype.kind == "f" and v.size > 1}
    assert not baked, f"weights kept as constants: {baked}"
    xs = _converted(flavor, arch)[2]
    doubled = model.with_params(jax.tree.map(lambda p: 2 * p, model.params))
    assert not np.allclose(model(_arg(xs)), doubled(_arg(xs)))


@pytest.mark.parametrize(("flavor", "arch"), ARCH_CASES)
def test_converted_onnx_matches_keras_on_onnxruntime(flavor, arch):
    """The converter alone: its ONNX, run by onnxruntime with a batch of 4, equals Keras predict."""
    _, proto, xs, want = _converted(flavor, arch)
    session = ort.InferenceSession(proto.SerializeToString())
    feeds = {i.name: x for i, x in zip(session.get_inputs(), xs)}
    got = session.run([proto.graph.output[0].name], feeds)[0]
    assert_matches(got, want, CHAIN[arch])


@pytest.mark.parametrize(("flavor", "arch"), ARCH_CASES)
def test_model_predict_matches_keras(flavor, arch):
    """Batch prediction equals Keras; single-input graphs run whole batches (``Model.batched``: the row check
    accepts every architecture here), and that equals the per-sample function under ``vmap``."""
    _, _, xs, want = _converted(flavor, arch)
    model = _jaxsens_model(flavor, arch)
    got = model(_arg(xs))
    assert got.shape == want.shape
    assert_matches(got, want, CHAIN[arch])
    assert model.batched == (model.n_inputs == 1)
    per_sample = jax.vmap(model.apply, in_axes=(None, 0))(model.params, _arg(xs))
    assert_matches(got, per_sample, CHAIN[arch])


@pytest.mark.parametrize(
    ("flavor", "arch"), [p for p in ARCH_CASES if not p.id.endswith("-embedding")]
)  # integer token inputs have no gradient
def test_jacobian_matches_tensorflow(flavor, arch):
    keras_model, _, xs, _ = _converted(flavor, arch)
    model = _jaxsens_model(flavor, arch)
    for got, want in zip(_jax_batch_jacobians(model, xs), _tf_batch_jacobians(keras_model, xs), strict=True):
        assert got.shape == want.shape
        assert_matches(got, want, CHAIN[arch], jacobian=True)


@pytest.mark.parametrize(
    ("flavor", "arch"), [p for p in ARCH_CASES if not p.id.endswith(("-embedding", "-merge"))]
)
@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_jacobian_importance_matches_tensorflow(flavor, arch, mode):
    """jacobian_importance runs these graphs whole-batch (``model.batched``: vjp / jvp of the batched graph, one
    direction per output or input element); its mean |J| and mean J equal TensorFlow's per-sample
    ``batch_jacobian`` averaged over the rows."""
    keras_model, _, xs, _ = _converted(flavor, arch)
    model = _jaxsens_model(flavor, arch)
    assert model.batched
    (tf_jac,) = _tf_batch_jacobians(keras_model, xs)
    tf_jac = tf_jac.reshape(tf_jac.shape[0], model.n_outputs, *model.input_shape)
    result = jaxsens.jacobian_importance(model, xs[0], mode=mode)
    # per-row Jacobians as above, then float32 means over the 4 rows: terms of the size of |J|
    n_terms = 2 * 2 * CHAIN[arch] + N_SAMPLES
    size = np.abs(tf_jac).max()
    assert_f32_close(result.mean_abs, np.abs(tf_jac).mean(0), n_terms=n_terms, magnitude=size)
    assert_f32_close(result.mean, tf_jac.mean(0), n_terms=n_terms, magnitude=size)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_several_inputs_as_tuple_or_dict(flavor):
    _, _, xs, want = _converted(flavor, "merge")
    model = _jaxsens_model(flavor, "merge")
    assert model.input_names == ("a", "b")
    assert model.input_shape == ((4,), (4,))
    assert_matches(model({"b": xs[1], "a": xs[0]}), want, CHAIN["merge"])
    assert_matches(model((xs[0], xs[1])), want, CHAIN["merge"])


@pytest.mark.parametrize("flavor", FLAVORS)
def test_intermediates_are_keras_layer_outputs(flavor):
    """Every layer of an MLP (Dense, BatchNormalization, Dropout, ...) is named and equals its sub-model."""
    K = FLAVORS[flavor]
    keras_model, proto, xs, _ = _converted(flavor, "mlp")
    model = _jaxsens_model(flavor, "mlp")
    keras_names = [layer.name for layer in keras_model.layers]
    assert list(model.layer_names) == keras_names
    assert json.loads({p.key: p.value for p in proto.metadata_props}[LAYER_NAMES_KEY]) == keras_names
    got = model.intermediates(xs[0])
    assert sorted(got) == sorted(keras_names)
    for layer in keras_model.layers:
        want = K.Model(keras_model.inputs, layer.output).predict(xs[0], verbose=0)
        assert_matches(got[layer.name], want, CHAIN["mlp"], err_msg=layer.name)  # at most the whole chain


@pytest.mark.parametrize("flavor", FLAVORS)
def test_intermediates_of_each_activation_branch(flavor):
    K = FLAVORS[flavor]
    keras_model, _, xs, _ = _converted(flavor, "activations")
    model = _jaxsens_model(flavor, "activations")
    names = [f"dense_{a}" for a in ACTIVATIONS]
    got = model.intermediates(xs[0], names)
    for name in names:
        want = K.Model(keras_model.inputs, keras_model.get_layer(name).output).predict(xs[0], verbose=0)
        assert_matches(got[name], want, 6 + 4, err_msg=name)  # fan-in 6, bias, activation (up to 3 ops)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_nested_model_and_shared_layer_are_named(flavor):
    """A Sequential used as a layer and a layer called twice still get their Keras names and values."""
    K = FLAVORS[flavor]
    inner = K.Sequential([K.Input((4,)), K.layers.Dense(3, activation="tanh")], name="inner")
    x = K.Input((4,), name="x")
    shared = K.layers.Dense(4, activation="relu", name="shared")
    keras_model = K.Model(x, K.layers.Dense(2, name="out")(inner(shared(shared(x)))))
    _seed_weights(keras_model, seed=3)
    model = jaxsens.Model.from_keras(keras_model)
    assert model.layer_names == ("shared", "inner", "out")
    xs = np.random.default_rng(4).normal(size=(N_SAMPLES, 4)).astype(np.float32)
    chain = 3 * (4 + 2) + (3 + 1)  # shared twice and inner: fan-in 4, bias, activation; out: fan-in 3, bias
    assert_matches(model(xs), keras_model.predict(xs, verbose=0), chain)
    want = K.Model(x, inner(shared(shared(x)))).predict(xs, verbose=0)
    assert_matches(model.intermediates(xs, ["inner"])["inner"], want, chain)


def test_metadata_source_and_dynamic_batch():
    _, proto, _, _ = _converted("keras3", "mlp")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[SOURCE_KEY].startswith("keras 3.")
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert not dim0.HasField("dim_value")  # the batch axis is dynamic


def test_keras2_gru_and_lstm_are_native_onnx_ops():
    ops = {n.op_type for n in _converted("tf_keras", "gru")[1].graph.node}
    ops |= {n.op_type for n in _converted("tf_keras", "lstm")[1].graph.node}
    assert {"GRU", "LSTM"} <= ops


def test_opset_is_validated():
    with pytest.raises(ValueError, match="opset=19"):
        keras_to_onnx(_keras_model("keras3", "layernorm"), opset=19)


def test_shape_mismatch_says_expected_and_got():
    model = _jaxsens_model("keras3", "mlp")
    with pytest.raises(ValueError, match=r"\(2, 7\).*expects.*6"):
        model(np.zeros((2, 7), np.float32))


# ------------------------------------------------------------------------------------------------------------
# files: every format
# ------------------------------------------------------------------------------------------------------------
def _save(keras_model, flavor: str, fmt: str, stem: pathlib.Path) -> tuple[str, str | None]:
    """Write ``keras_model`` in ``fmt``; returns (path, weights path or None)."""
    if fmt == "keras":
        path = f"{stem}.keras"
        keras_model.save(path)
    elif fmt == "h5":
        path = f"{stem}.h5"
        keras_model.save(path)
    elif fmt == "savedmodel":
        path = f"{stem}_savedmodel"
        if flavor == "keras3":
            keras_model.export(path, verbose=False)
        else:
            tf.saved_model.save(keras_model, path)
    elif fmt == "json":
        path = f"{stem}_structure.json"
        with open(path, "w") as f:
            f.write(keras_model.to_json())
        weights = f"{stem}_weights.h5"
        keras_model.save_weights(weights)
        return path, weights
    else:
        raise ValueError(fmt)
    return path, None


FORMAT_CASES = [
    ("keras3", "mlp", "keras"),
    ("keras3", "gru", "keras"),
    ("keras3", "mlp", "h5"),
    ("keras3", "lstm", "h5"),
    ("keras3", "merge", "savedmodel"),
    ("keras3", "lstm", "savedmodel"),
    ("tf_keras", "mlp", "h5"),
    ("tf_keras", "gru", "h5"),
    ("tf_keras", "merge", "savedmodel"),
    ("tf_keras", "mlp", "json"),
    ("tf_keras", "bilstm", "json"),
]


@pytest.fixture(scope="session")
def saved_files(session_tmp):
    """Lazily written model files: ``saved_files(flavor, arch, fmt) -> (path, weights)``."""

    @functools.cache
    def write(flavor, arch, fmt):
        return _save(
            _keras_model(flavor, arch), flavor, fmt, pathlib.Path(session_tmp) / f"{flavor}_{arch}_{fmt}"
        )

    return write


@pytest.mark.parametrize(("flavor", "arch", "fmt"), FORMAT_CASES, ids=["-".join(c) for c in FORMAT_CASES])
def test_load_model_from_file_matches_keras(saved_files, flavor, arch, fmt):
    path, weights = saved_files(flavor, arch, fmt)
    _, _, xs, want = _converted(flavor, arch)
    model = jaxsens.load_model(path, weights=weights)
    assert_matches(model(_arg(xs)), want, CHAIN[arch])
    assert model.source == path


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_reloaded_model_converts_to_the_same_graph(saved_files, fmt):
    """A reloaded Keras 3 Sequential keeps a second, unused call of each layer: it must not be converted too."""
    path, _ = saved_files("keras3", "gru", fmt)

    def op_counts(proto):
        return collections.Counter(n.op_type for n in proto.graph.node if n.op_type != "Identity")

    assert op_counts(keras_file_to_onnx(path)) == op_counts(_converted("keras3", "gru")[1])


def test_h5_without_keras_version_still_loads(saved_files, session_tmp):
    """Files that do not say which Keras wrote them: Keras 3 first, then tf_keras (old RNN files)."""
    path, _ = saved_files("tf_keras", "gru", "h5")
    anonymous = pathlib.Path(session_tmp) / "anonymous_gru.h5"
    shutil.copy(path, anonymous)
    with h5py.File(anonymous, "a") as f:
        del f.attrs["keras_version"]
    _, _, xs, want = _converted("tf_keras", "gru")
    assert_matches(jaxsens.load_model(str(anonymous))(xs[0]), want, CHAIN["gru"])


def test_savedmodel_inputs_keep_their_names(saved_files):
    path, _ = saved_files("keras3", "merge", "savedmodel")
    proto = keras_file_to_onnx(path)
    assert [i.name for i in proto.graph.input] == ["a", "b"]
    assert "SavedModel" in {p.key: p.value for p in proto.metadata_props}[SOURCE_KEY]


def test_keras2_lstm_hard_sigmoid_legacy_pair(session_tmp):
    """A Keras 2 LSTM with hard_sigmoid (0.2 x + 0.5), saved as to_json + save_weights, keeps its meaning."""
    K = tf_keras
    old = K.Sequential(
        [K.Input((7, 3)), K.layers.LSTM(5, recurrent_activation="hard_sigmoid"), K.layers.Dense(2, "softmax")]
    )
    _seed_weights(old, seed=11)
    stem = pathlib.Path(session_tmp) / "x"
    (stem.parent / "x_structure.json").write_text(old.to_json())
    old.save_weights(str(stem.parent / "x_weights.h5"))
    xs = [np.random.default_rng(3).normal(size=(N_SAMPLES, 7, 3)).astype(np.float32)]
    want = _keras_predict(old, xs)

    model = jaxsens.load_model(
        str(stem.parent / "x_structure.json"), weights=str(stem.parent / "x_weights.h5")
    )
    got = model(xs[0])
    chain = 7 * (3 + 5 + 8) + (5 + 1 + 3)  # 7 steps of LSTM(5), Dense(2) + softmax
    assert_matches(got, want, chain)
    (jac,) = _jax_batch_jacobians(model, xs)
    assert_matches(jac, _tf_batch_jacobians(old, xs)[0], chain, jacobian=True)

    # The test can tell the semantics apart: Keras 3's hard_sigmoid (x / 6 + 0.5) predicts differently.
    new = keras.Sequential(
        [
            keras.Input((7, 3)),
            keras.layers.LSTM(5, recurrent_activation="hard_sigmoid"),
            keras.layers.Dense(2, "softmax"),
        ]
    )
    new.set_weights(old.get_weights())
    assert np.abs(_keras_predict(new, xs) - got).max() > 1e-4


def _keras224_pair(folder: pathlib.Path, rng) -> tuple[str, str, list[tuple[np.ndarray, np.ndarray]]]:
    """The seed-000 production shape (82 -> 3 x Dense(500, relu) -> Dense(2, softmax)) written as Keras 2.2.4
    did: a ``Sequential`` structure JSON and a ``save_weights`` HDF5 file (``/dense_k/dense_k/kernel:0``)."""
    sizes = (82, 500, 500, 500, 2)
    layers, params = [], []
    for k, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
        cfg = {
            "name": f"dense_{k}",
            "trainable": True,
            "units": n_out,
            "activation": "softmax" if n_out == 2 else "relu",
            "use_bias": True,
            "kernel_initializer": {
                "class_name": "VarianceScaling",
                "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None},
            },
            "bias_initializer": {"class_name": "Zeros", "config": {}},
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "activity_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
        }
        if k == 1:
            cfg = {"batch_input_shape": [None, n_in], "dtype": "float32", **cfg}
        layers.append({"class_name": "Dense", "config": cfg})
        params.append(
            (
                rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)).astype(np.float32),
                rng.normal(0, 0.1, n_out).astype(np.float32),
            )
        )
    structure = {
        "class_name": "Sequential",
        "config": {"name": "sequential_1", "layers": layers},
        "keras_version": "2.2.4",
        "backend": "tensorflow",
    }
    json_path, h5_path = folder / "seed000_structure.json", folder / "seed000_weights.h5"
    json_path.write_text(json.dumps(structure))
    with h5py.File(h5_path, "w") as f:
        f.attrs["layer_names"] = [f"dense_{k}".encode() for k in range(1, 5)]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for k, (w, b) in enumerate(params, start=1):
            g = f.create_group(f"dense_{k}")
            g.attrs["weight_names"] = [f"dense_{k}/kernel:0".encode(), f"dense_{k}/bias:0".encode()]
            g.create_dataset(f"dense_{k}/kernel:0", data=w)
            g.create_dataset(f"dense_{k}/bias:0", data=b)
    return str(json_path), str(h5_path), params


def test_seed000_keras224_pair_matches_numpy_forward_pass(session_tmp):
    rng = np.random.default_rng(0)
    structure, weights, params = _keras224_pair(pathlib.Path(session_tmp), rng)
    xs = rng.normal(size=(16, 82)).astype(np.float32)
    h = xs.astype(np.float64)
    terms = np.abs(h)  # the same pass with |x|, |W|, |b|: the size of the terms each float32 sum adds up
    for k, (w, b) in enumerate(params):
        h = h @ w + b
        terms = terms @ np.abs(w) + np.abs(b)
        h = np.maximum(h, 0.0) if k < len(params) - 1 else np.exp(h - h.max(1, keepdims=True))
    want = h / h.sum(1, keepdims=True)
    # float32 dot products of 82 + 3 x 500 terms: the probabilistic bound (the worst case, linear in 1,582, says
    # little); softmax changes by at most half its logits' error
    n_chain, size = 82 + 3 * 500 + 3 * 2 + 5, 0.5 * terms.max()

    model = jaxsens.load_model(structure, weights=weights)
    assert model.input_shape == (82,) and model.output_shape == (2,)
    assert model.layer_names == ("dense_1", "dense_2", "dense_3", "dense_4")
    assert_f32_close(model(xs), want, n_terms=n_chain, magnitude=size, probabilistic=True)
    keras2 = tf_keras.models.model_from_json(pathlib.Path(structure).read_text())
    keras2.load_weights(weights)
    assert_f32_close(model(xs), keras2.predict(xs, verbose=0), n_terms=2 * n_chain, magnitude=size,
                     probabilistic=True)


# ------------------------------------------------------------------------------------------------------------
# safety: Lambda layers and unknown classes are refused before anything is deserialized
# ------------------------------------------------------------------------------------------------------------
def _lambda_model(K):
    x = K.Input((4,))
    h = K.layers.Lambda(lambda t: t * 2.0 + 1.0, name="times_two")(x)
    model = K.Model(x, K.layers.Dense(2, name="out")(h))
    _seed_weights(model, seed=5)
    return model


LAMBDA_CASES = [("keras3", "keras"), ("keras3", "h5"), ("tf_keras", "h5"), ("tf_keras", "json")]


@pytest.mark.parametrize(("flavor", "fmt"), LAMBDA_CASES, ids=["-".join(c) for c in LAMBDA_CASES])
def test_lambda_layer_file_is_refused_unless_safe_false(session_tmp, flavor, fmt):
    keras_model = _lambda_model(FLAVORS[flavor])
    path, weights = _save(keras_model, flavor, fmt, pathlib.Path(session_tmp) / f"lambda_{flavor}_{fmt}")
    with pytest.raises(UnsafeModelError, match=r"times_two.*safe=False"):
        jaxsens.load_model(path, weights=weights)
    xs = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    model = jaxsens.load_model(path, weights=weights, safe=False)
    assert_matches(model(xs), keras_model.predict(xs, verbose=0), 2 + 4 + 1)  # x * 2 + 1, Dense(2)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_in_memory_lambda_is_refused_unless_safe_false(flavor):
    keras_model = _lambda_model(FLAVORS[flavor])
    with pytest.raises(UnsafeModelError, match=r"times_two.*safe=False"):
        jaxsens.Model.from_keras(keras_model)
    xs = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    model = jaxsens.Model.from_keras(keras_model, safe=False)
    assert_matches(model(xs), keras_model.predict(xs, verbose=0), 2 + 4 + 1)  # x * 2 + 1, Dense(2)


class _UnregisteredDense(keras.layers.Dense):
    """A custom layer class nobody registered: its module would be imported on load."""


def test_unknown_custom_class_in_keras_file_is_refused(session_tmp):
    x = keras.Input((3,))
    keras_model = keras.Model(x, _UnregisteredDense(2, name="mystery")(x))
    path = str(pathlib.Path(session_tmp) / "custom.keras")
    keras_model.save(path)
    with pytest.raises(UnsafeModelError, match=r"mystery.*_UnregisteredDense"):
        jaxsens.load_model(path)


def test_check_keras_config_accepts_builtin_configs():
    check_keras_config(json.loads(_keras_model("tf_keras", "bilstm").to_json()))
    check_keras_config(json.loads(_keras_model("keras3", "conv2d").to_json()))
    config = json.loads(_keras_model("keras3", "mlp").to_json())
    # A custom loss in compile_config is harmless: models are loaded with compile=False.
    config["compile_config"] = {"loss": {"module": "my_losses", "class_name": "function", "config": "focal"}}
    check_keras_config(config)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"class_name": "EvilLayer", "config": {"name": "evil"}}, r"evil.*EvilLayer"),
        ({"module": "os", "class_name": "Dense", "config": {"name": "d"}}, r"'d'.*module 'os'"),
        (
            {
                "module": "keras.layers",
                "class_name": "Dense",
                "registered_name": "pkg>Dense",
                "config": {"name": "d"},
            },
            "pkg>Dense",
        ),
        (
            {"class_name": "Lambda", "config": {"name": "lam", "function": ["AAAA", None, None]}},
            r"lam.*Lambda",
        ),
    ],
    ids=["unknown-class", "foreign-module", "unregistered-name", "legacy-lambda"],
)
def test_check_keras_config_refuses(entry, message):
    config = json.loads(_keras_model("tf_keras", "mlp").to_json())
    config["config"]["layers"].insert(2, entry)
    with pytest.raises(UnsafeModelError, match=message):
        check_keras_config(config, where="the test config")


def test_registered_custom_class_is_accepted():
    @keras.saving.register_keras_serializable(package="jaxsens_test")
    class Registered(keras.layers.Dense):
        pass

    try:
        check_keras_config(
            {
                "module": None,
                "class_name": "Registered",
                "registered_name": "jaxsens_test>Registered",
                "config": {},
            }
        )
    finally:
        keras.saving.get_custom_objects().pop("jaxsens_test>Registered", None)


def test_savedmodel_running_python_is_refused(session_tmp):
    class PyModel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32, name="x")])
        def __call__(self, x):
            return tf.py_function(lambda t: t * 2.0, [x], tf.float32)

    path = str(pathlib.Path(session_tmp) / "pyfunc_savedmodel")
    module = PyModel()
    tf.saved_model.save(module, path, signatures=module.__call__)
    with pytest.raises(UnsafeModelError, match=r"pyfunc_savedmodel.*PyFunc"):
        jaxsens.load_model(path)


@pytest.mark.parametrize("missing", ["tf2onnx", "tf_keras"])
def test_missing_dependency_names_the_extra(saved_files, monkeypatch, missing):
    structure, weights = saved_files("tf_keras", "mlp", "json")
    monkeypatch.setitem(sys.modules, missing, None)  # what `import` sees when the package is not installed
    with pytest.raises(MissingExtraError, match=r"jaxsens\[keras\]"):
        keras_file_to_onnx(structure, weights=weights)


# ------------------------------------------------------------------------------------------------------------
# truncated, corrupt and unknown files: ModelFileError naming the file
# ------------------------------------------------------------------------------------------------------------
def _truncated_copy(src: str, dst: pathlib.Path, fraction: float = 0.5) -> str:
    data = pathlib.Path(src).read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return str(dst)


@pytest.mark.parametrize(
    ("flavor", "arch", "fmt"),
    [("keras3", "mlp", "keras"), ("keras3", "mlp", "h5"), ("tf_keras", "mlp", "h5")],
    ids=["keras3-keras", "keras3-h5", "tf_keras-h5"],
)
def test_truncated_file_is_a_model_file_error(saved_files, session_tmp, flavor, arch, fmt):
    path, _ = saved_files(flavor, arch, fmt)
    for fraction in (0.5, 0.9):
        cut = _truncated_copy(
            path, pathlib.Path(session_tmp) / f"cut{int(fraction * 10)}_{os.path.basename(path)}"
        )
        with pytest.raises(ModelFileError, match=os.path.basename(cut)):
            keras_file_to_onnx(cut)


def test_truncated_weights_of_a_legacy_pair(saved_files, session_tmp):
    structure, weights = saved_files("tf_keras", "mlp", "json")
    cut = _truncated_copy(weights, pathlib.Path(session_tmp) / "cut_weights.h5")
    with pytest.raises(ModelFileError, match="cut_weights.h5"):
        jaxsens.load_model(structure, weights=cut)


@pytest.mark.parametrize("name", ["garbage.h5", "garbage.keras", "garbage_structure.json", "empty.h5"])
def test_garbage_file_is_a_model_file_error(session_tmp, name):
    path = pathlib.Path(session_tmp) / name
    path.write_bytes(b"" if name.startswith("empty") else b"\x89HDF\r\n not really a model {" * 7)
    weights = None
    if name.endswith(".json"):
        weights = str(pathlib.Path(session_tmp) / "garbage.h5")
        pathlib.Path(weights).write_bytes(b"junk")
    with pytest.raises(ModelFileError, match=name):
        jaxsens.load_model(str(path), weights=weights)


def test_weights_only_h5_says_pass_the_structure(saved_files):
    _, weights = saved_files("tf_keras", "mlp", "json")
    with pytest.raises(ModelFileError, match="weights="):
        jaxsens.load_model(weights)


def test_broken_savedmodel_folders(saved_files, session_tmp):
    empty = pathlib.Path(session_tmp) / "not_a_savedmodel"
    empty.mkdir()
    with pytest.raises(ModelFileError, match="not_a_savedmodel.*saved_model.pb"):
        jaxsens.load_model(str(empty))
    good, _ = saved_files("tf_keras", "merge", "savedmodel")
    broken = pathlib.Path(session_tmp) / "broken_savedmodel"
    shutil.copytree(good, broken)
    (broken / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 3)
    with pytest.raises(ModelFileError, match="broken_savedmodel"):
        jaxsens.load_model(str(broken))


def test_unknown_extension_and_json_without_weights(session_tmp):
    other = pathlib.Path(session_tmp) / "model.txt"
    other.write_text("hello")
    with pytest.raises(ModelFileError, match=r"model\.txt.*\.keras"):
        jaxsens.load_model(str(other))
    structure = pathlib.Path(session_tmp) / "lonely_structure.json"
    structure.write_text(_keras_model("tf_keras", "mlp").to_json())
    with pytest.raises(ValueError, match="weights="):
        jaxsens.load_model(str(structure))


def test_converted_onnx_is_valid():
    for flavor in FLAVORS:
        onnx.checker.check_model(_converted(flavor, "mlp")[1], full_check=True)
