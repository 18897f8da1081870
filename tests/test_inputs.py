"""Integer inputs (token ids) and models with several inputs, across every method that reads model inputs.

Oracles, all independent of jaxsens' engine:

* integer inputs: the gradient methods and the continuous-noise methods must refuse them (a zero Jacobian would be
  a silent wrong answer); ``permutation_importance`` must equal the same permutations pushed through Keras'
  ``predict`` (real ``Embedding -> GlobalAveragePooling1D -> Dense`` models) and through numpy on a hand-built
  ONNX ``Mod -> Gather`` graph whose ids exceed 2**24, where one float32 rounding would change the answer;
* several inputs: TensorFlow's ``GradientTape.batch_jacobian`` on a two-input Keras functional model, and a float64
  closed form for a two-input JAX network; chunk sizes, device counts and data sources must not change results.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from _tol import assert_f32_close
from onnx import TensorProto, helper, numpy_helper
from test_jacobian import CompileCounter, assert_stats_f32_close, reference_stats

import jaxsens
from jaxsens import ArgumentError, ArgumentTypeError, DataError
from jaxsens._model import Model
from jaxsens._results import load_result

N_IDS, SEQ, VOCAB = 64, 5, 50
TOKEN_CHAIN = 2 * SEQ + 2 * 4  # mean over the sequence, then a Dense fan-in of 4 (+ bias), both sides


# ----------------------------------------------------------------------------------------- fixtures
def _embedding_model(flavor, dtype):
    """``Embedding -> GlobalAveragePooling1D -> Dense(2)``, input declared ``dtype`` (None: Keras' float32)."""
    flavor.utils.set_random_seed(3)
    kw = {"dtype": dtype} if dtype else {}
    inp = flavor.Input((SEQ,), name="tokens", **kw)
    h = flavor.layers.Embedding(VOCAB, 4)(inp)
    h = flavor.layers.GlobalAveragePooling1D()(h)
    return flavor.Model(inp, flavor.layers.Dense(2)(h))


@pytest.fixture(scope="module")
def token_models():
    """``{name: (keras model, jaxsens Model)}``: int32-declared ids (tf_keras, Keras 3), and Keras 3's default float
    input that the graph casts to integers (the common case: no integer dtype anywhere in the signature)."""
    out = {}
    for name, flavor, dtype in [
        ("tf_keras_int32", tf_keras, "int32"),
        ("keras3_int32", keras, "int32"),
        ("keras3_float_ids", keras, None),
    ]:
        km = _embedding_model(flavor, dtype)
        out[name] = (km, jaxsens.Model.from_keras(km))
    return out


TABLE = (np.arange(14, dtype=np.float32).reshape(7, 2) ** 1.5).astype(np.float32)


def _gather_onnx():
    """``ids [N, 3] int64 -> Mod 7 -> Gather(table [7, 2]) -> ReduceMean over the 3 ids -> [N, 2]``."""
    graph = helper.make_graph(
        [
            helper.make_node("Mod", ["ids", "seven"], ["m"]),
            helper.make_node("Gather", ["table", "m"], ["e"], axis=0),
            helper.make_node("ReduceMean", ["e", "axes"], ["y"], keepdims=0),
        ],
        "gather",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [
            numpy_helper.from_array(TABLE, "table"),
            numpy_helper.from_array(np.array(7, np.int64), "seven"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def gather_reference(ids) -> np.ndarray:
    return TABLE.astype(np.float64)[np.asarray(ids, np.int64) % 7].mean(axis=1)


@pytest.fixture(scope="module")
def gather_model():
    return jaxsens.Model.from_onnx(_gather_onnx())


def token_ids(n=N_IDS, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (n, SEQ)).astype(np.int32)


# ------------------------------------------------------------------------------------ integer inputs
GRADIENT_METHODS = {
    "jacobian_importance": lambda m, x: jaxsens.jacobian_importance(m, x),
    "partial_derivatives": lambda m, x: jaxsens.partial_derivatives(m, x),
}
CONTINUOUS_METHODS = {
    "perturbation_importance": lambda m, x, y: jaxsens.perturbation_importance(m, x, key=jax.random.key(0)),
    "input_perturbation": lambda m, x, y: jaxsens.input_perturbation(m, x, y, key=jax.random.key(0)),
    "improved_stepwise": lambda m, x, y: jaxsens.improved_stepwise(m, x, y, variant=1),
    "improved_stepwise_2": lambda m, x, y: jaxsens.improved_stepwise(m, x, variant=2),
    "lek_profile": lambda m, x, y: jaxsens.lek_profile(m, x, steps=3),
}


@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
@pytest.mark.parametrize("which", ["tf_keras_int32", "keras3_int32", "keras3_float_ids", "onnx_gather"])
def test_gradient_methods_refuse_token_ids_naming_the_input_and_the_alternative(
    token_models, gather_model, which, method
):
    model = gather_model if which == "onnx_gather" else token_models[which][1]
    xs = np.zeros((4, 3), np.int64) if which == "onnx_gather" else token_ids(4)
    name = model.input_names[0]
    with pytest.raises(ArgumentError) as info:
        GRADIENT_METHODS[method](model, xs)
    text = str(info.value)
    assert f"{method}()" in text and repr(name) in text
    assert "permutation_importance()" in text and "embedding output: jacobian_importance(model, data, wrt=" in text
    # the float-declared input is found by the graph (its derivative is structurally zero), the others by dtype
    assert ("without a derivative" in text) == (which == "keras3_float_ids")


@pytest.mark.parametrize("method", sorted(CONTINUOUS_METHODS))
@pytest.mark.parametrize("which", ["tf_keras_int32", "onnx_gather"])
def test_continuous_perturbations_refuse_integer_inputs(token_models, gather_model, which, method):
    model = gather_model if which == "onnx_gather" else token_models[which][1]
    xs = np.arange(12, dtype=np.int64).reshape(4, 3) if which == "onnx_gather" else token_ids(4)
    y = np.zeros((4, 2), np.float32)
    name = method.removesuffix("_2")  # improved_stepwise, variant 2
    with pytest.raises(ArgumentError, match=rf"{name}\(\).*'{model.input_names[0]}' of dtype int"):
        CONTINUOUS_METHODS[method](model, xs, y)
    with pytest.raises(ArgumentError, match=r"Use permutation_importance\(\), whose discrete perturbation"):
        CONTINUOUS_METHODS[method](model, xs, y)


@pytest.mark.parametrize("which", ["tf_keras_int32", "keras3_int32"])
def test_permutation_importance_of_token_ids_equals_keras_predict(token_models, which):
    km, model = token_models[which]
    ids = token_ids()
    y = km.predict(ids, verbose=0).astype(np.float64) + np.random.default_rng(1).normal(0, 0.05, (N_IDS, 2))
    perms = jaxsens.sklearn_permutations(N_IDS, SEQ, 3, random_state=0)
    got = jaxsens.permutation_importance(model, ids, y, permutations=perms)

    def mse(x):
        return float(np.mean((km.predict(x, verbose=0).astype(np.float64) - y) ** 2))

    base = mse(ids)
    want = np.empty((SEQ, 3))
    for j in range(SEQ):
        for r in range(3):
            moved = ids.copy()
            moved[:, j] = ids[perms[j, r], j]
            want[j, r] = mse(moved) - base
    assert np.abs(want).max() > 1e-4  # the model does read the ids
    assert_f32_close(got.importances, want, n_terms=N_IDS + TOKEN_CHAIN, magnitude=base + np.abs(want).max())
    assert_f32_close(got.baseline, base, n_terms=N_IDS + TOKEN_CHAIN, magnitude=base)


def test_ids_beyond_float32_reach_the_model_exactly(gather_model):
    """2**24 + 1 is not a float32: a float32 round trip would read id 2**24 (another table row after Mod 7)."""
    assert gather_model.input_dtypes == (np.dtype(np.int64),)
    ids = np.array(
        [
            [2**24 + 1, 3, 5],
            [2**24, 1, 2],
            [2**30 + 3, 10, 11],
            [2**31 - 1, 0, 6],
            [-(2**31), 4, 9],
            [7, 8, 2**24 + 3],
        ],
        np.int64,
    )
    exact = gather_reference(ids)
    rounded = gather_reference(ids.astype(np.float32).astype(np.int64))
    assert np.abs(exact - rounded).max() > 1  # the test can fail: float32 would change the predictions
    assert_f32_close(gather_model(ids), exact, n_terms=3, magnitude=TABLE.max())

    y = exact + np.linspace(-1, 1, len(ids))[:, None]
    perms = np.array([[1, 2, 3, 4, 5, 0], [5, 4, 3, 2, 1, 0]])

    def mse(x):
        return np.mean((gather_reference(x) - y) ** 2)

    got = jaxsens.permutation_importance(gather_model, ids, y, permutations=perms)
    want = np.empty((3, 2))
    for j in range(3):
        for r, p in enumerate(perms):
            moved = ids.copy()
            moved[:, j] = ids[p, j]
            want[j, r] = mse(moved) - mse(ids)
    assert_f32_close(got.importances, want, n_terms=len(ids) + 6, magnitude=mse(ids) + np.abs(want).max())


def test_integer_inputs_refuse_values_that_are_not_ids(gather_model):
    with pytest.raises(DataError, match=r"row 1, column 2: value 2\.5 cannot be fed exactly.*integer input"):
        gather_model(np.array([[1, 2, 3], [4, 5, 2.5]]))
    with pytest.raises(DataError, match=r"whole numbers in \[-2147483648, 2147483647\]"):
        gather_model(np.array([[1, 2, 2**40]], np.int64))
    y = np.zeros((2, 2))
    with pytest.raises(DataError, match="cannot be fed exactly"):
        jaxsens.permutation_importance(
            gather_model, np.array([[1, 2, 3], [4, 5, 2.5]]), y, permutations=[[1, 0]]
        )


def test_a_float_input_used_only_through_round_is_refused_but_an_unused_one_is_not():
    rounded = Model.from_function(lambda p, x: p @ jnp.round(x), jnp.eye(3), input_shape=(3,))
    with pytest.raises(ArgumentError, match="input 'x' reaches the output only through operations without"):
        jaxsens.jacobian_importance(rounded, np.ones((4, 3)))
    params = two_params(0)
    ignores_b = Model(
        apply=lambda p, x: p["V"] @ jnp.tanh(p["Wa"] @ x[0] + p["c"]),
        params=params,
        input_shape=((4,), (3, 2)),
        output_shape=(2,),
        input_names=("a", "b"),
    )
    r = jaxsens.jacobian_importance(ignores_b, two_data(50))
    np.testing.assert_array_equal(r["b"].mean_abs, 0.0)  # a true zero: the model ignores b
    assert r["a"].mean_abs.min() > 0


# ------------------------------------------------------------------------------------ several inputs
def two_params(seed, h=8):
    rng = np.random.default_rng(seed)
    return {
        "Wa": (rng.normal(size=(h, 4)) / 2).astype(np.float32),
        "Wb": (rng.normal(size=(h, 6)) / 2).astype(np.float32),
        "c": (0.1 * rng.normal(size=h)).astype(np.float32),
        "V": rng.normal(size=(2, h)).astype(np.float32),
    }


def two_net(p, x):
    a, b = x
    return p["V"] @ jnp.tanh(p["Wa"] @ a + p["Wb"] @ b.reshape(-1) + p["c"])


def two_model(seed=0) -> Model:
    """A pure-JAX model with inputs ``a`` ``[4]`` and ``b`` ``[3, 2]``."""
    return Model(
        apply=two_net,
        params=two_params(seed),
        input_shape=((4,), (3, 2)),
        output_shape=(2,),
        input_names=("a", "b"),
    )


def two_jacobians(p, xa, xb):
    """Closed form in float64: ``J_a = V diag(1 - h^2) Wa`` ``[n, 2, 4]``, ``J_b`` likewise ``[n, 2, 3, 2]``."""
    Wa, Wb, c, V = (np.asarray(p[k], np.float64) for k in ("Wa", "Wb", "c", "V"))
    g = 1 - np.tanh(xa.astype(np.float64) @ Wa.T + xb.reshape(len(xb), -1).astype(np.float64) @ Wb.T + c) ** 2
    return np.einsum("kh,nh,hd->nkd", V, g, Wa), np.einsum("kh,nh,hd->nkd", V, g, Wb).reshape(-1, 2, 3, 2)


def two_data(n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.normal(0.5, 1.5, size=(n, 3, 2)).astype(np.float32)


TWO_CHAIN = 10 + 8 + 3  # fan-ins 10 and 8, bias, tanh, 1 - g^2


@pytest.fixture(scope="module")
def keras_two_inputs():
    """Keras 3 functional model ``Input(4), Input((3, 2)) -> Flatten / Concatenate -> Dense(8, tanh) -> Dense(2)``
    and TensorFlow's ``batch_jacobian`` of it on 300 rows, per input."""
    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name="num"), keras.Input((3, 2), name="seq")
    h = keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])
    h = keras.layers.Dense(8, activation="tanh")(h)
    km = keras.Model([a, b], keras.layers.Dense(2)(h))
    xa, xb = two_data(300, seed=4)
    ta, tb = tf.constant(xa), tf.constant(xb)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([ta, tb])
        y = km([ta, tb])
    jac = {"num": tape.batch_jacobian(y, ta).numpy(), "seq": tape.batch_jacobian(y, tb).numpy()}
    return jaxsens.Model.from_keras(km), (xa, xb), jac


def _sources(kind, xa, xb, tmp_path):
    if kind == "tuple":
        return (xa, xb)
    if kind == "dict":
        return {"seq": xb, "num": xa}  # any key order: matched by name
    if kind == "npy":
        np.save(tmp_path / "a.npy", xa)
        np.save(tmp_path / "b.npy", xb)
        return (str(tmp_path / "a.npy"), str(tmp_path / "b.npy"))
    return (_batches(xa, 37), _batches(xb, 41))  # iterables with different block sizes


def _batches(x, size):
    return [x[i : i + size] for i in range(0, len(x), size)]


@pytest.mark.parametrize("mode", ["reverse", "forward"])
@pytest.mark.parametrize("kind", ["tuple", "dict", "npy", "batches"])
def test_two_input_keras_model_equals_tensorflow_batch_jacobian(keras_two_inputs, kind, mode, tmp_path):
    model, (xa, xb), jac = keras_two_inputs
    got = jaxsens.jacobian_importance(model, _sources(kind, xa, xb, tmp_path), batch_size=64, mode=mode)
    assert list(got) == ["num", "seq"]  # the model's input order
    assert got["num"].mean_abs.shape == (2, 4) and got["seq"].mean_abs.shape == (2, 3, 2)
    assert got["seq"].feature_names == ("seq[0]", "seq[1]") and got["num"].mode == mode
    for name, r in got.items():
        want = reference_stats(jac[name])
        assert r.n_samples == 300
        assert_stats_f32_close(r, want, n_terms=64 + 2 * TWO_CHAIN, n_rows=300)
        for stat in ("mean_abs", "mean", "std", "rms"):
            assert np.abs(getattr(r, stat) - want[stat]).max() < 1e-4, (name, stat)


def test_two_input_softmax_head_takes_the_one_pass_fewer_path_and_equals_tensorflow():
    keras.utils.set_random_seed(1)
    a, b = keras.Input((4,), name="num"), keras.Input((3, 2), name="seq")
    h = keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])
    km = keras.Model(
        [a, b], keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8, activation="tanh")(h))
    )
    model = jaxsens.Model.from_keras(km)
    assert model.outputs_sum_to_one  # the K - 1 pull-backs path, on a tuple of inputs
    xa, xb = two_data(100, seed=5)
    ta, tb = tf.constant(xa), tf.constant(xb)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([ta, tb])
        y = km([ta, tb])
    jac = {"num": tape.batch_jacobian(y, ta).numpy(), "seq": tape.batch_jacobian(y, tb).numpy()}
    got = jaxsens.jacobian_importance(model, (xa, xb), mode="reverse", batch_size=64)
    for name, r in got.items():
        want = reference_stats(jac[name])
        assert_stats_f32_close(r, want, n_terms=64 + 2 * (TWO_CHAIN + 3), n_rows=100)
        assert np.abs(r.mean - want["mean"]).max() < 1e-4


def test_two_input_partial_derivatives_share_the_total_over_all_inputs(keras_two_inputs):
    model, (xa, xb), jac = keras_two_inputs
    got = jaxsens.partial_derivatives(model, (xa, xb), batch_size=64)
    ssd = {
        "num": (jac["num"].astype(np.float64) ** 2).sum(axis=0),
        "seq": (jac["seq"].astype(np.float64) ** 2).sum(axis=(0, 2)),  # a feature's SSD sums over its steps
    }
    total = ssd["num"].sum(axis=1, keepdims=True) + ssd["seq"].sum(axis=1, keepdims=True)
    for name in ("num", "seq"):  # importance is per element; a feature's share sums its steps' shares
        share, _ = got[name].feature_importance()
        assert_f32_close(share, ssd[name] / total, n_terms=300 + 2 * TWO_CHAIN, magnitude=1.0)
    np.testing.assert_allclose(got["num"].importance.sum(1) + got["seq"].importance.sum((1, 2)), 1.0, rtol=1e-12)


def test_pure_jax_two_input_model_matches_closed_form_across_chunk_sizes_with_one_compile():
    m = two_model(0)
    xa, xb = two_data(1000)
    ja, jb = two_jacobians(m.params, xa, xb)
    with CompileCounter() as c:
        first = jaxsens.jacobian_importance(m, (xa, xb), batch_size=37)  # 27 full chunks + 1 padded
    assert c.count == 1
    for b in (37, 7, 1000, 4096):
        r = first if b == 37 else jaxsens.jacobian_importance(m, (xa, xb), batch_size=b)
        for name, j in (("a", ja), ("b", jb)):
            assert_stats_f32_close(r[name], reference_stats(j), n_terms=min(b, 1000) + TWO_CHAIN, n_rows=1000)


def test_rows_with_nan_in_any_input_raise_or_are_skipped_together():
    m = two_model(1)
    xa, xb = two_data(200)
    xb[17, 2, 1] = np.nan
    with pytest.raises(DataError, match=r"row 17 holds NaN or Inf .*column 5 of input 'b'"):
        jaxsens.jacobian_importance(m, (xa, xb))
    got = jaxsens.jacobian_importance(m, (xa, xb), nan_policy="skip", batch_size=64)
    keep = np.arange(200) != 17
    want = jaxsens.jacobian_importance(m, (xa[keep], xb[keep]), batch_size=64)
    for name in ("a", "b"):
        assert got[name].n_samples == 199 and got[name].n_skipped == 1
        assert_stats_f32_close(got[name], want[name], n_terms=2 * (64 + TWO_CHAIN), n_rows=199)


@pytest.mark.parametrize("kind", ["arrays", "batches"])
def test_inputs_with_different_row_counts_are_refused_naming_both(kind):
    m = two_model(0)
    xa, xb = two_data(100)
    data = (xa, xb[:97]) if kind == "arrays" else (_batches(xa, 30), _batches(xb[:97], 30))
    with pytest.raises(DataError, match=r"not row-aligned: input 'a'.* has 100 rows but input 'b'.* has 97"):
        jaxsens.jacobian_importance(m, data, batch_size=16)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (lambda xa, xb: xa, ArgumentTypeError, r"the model has 2 inputs \['a', 'b'\]: pass data as a tuple"),
        (lambda xa, xb: (xa, xb, xa), DataError, r"data has 3 parts; the model has 2 inputs"),
        (
            lambda xa, xb: {"a": xa},
            DataError,
            r"keys \['a'\]; the model's inputs are \['a', 'b'\] \(missing \['b'\]\)",
        ),
        (lambda xa, xb: (xa, xb[:, :2]), DataError, r"input 'b'.*the model expects \[n_samples, 3, 2\]"),
    ],
)
def test_malformed_multi_input_data_is_refused_with_the_fix(data, error, match):
    xa, xb = two_data(10)
    with pytest.raises(error, match=match):
        jaxsens.jacobian_importance(two_model(0), data(xa, xb))


def test_inputs_stream_together_and_memory_does_not_grow_with_rows():
    """Rows read ahead of the statistics stay bounded by a few chunks (prefetch + in-flight), whatever N is."""
    m = two_model(2)
    n, batch = 64 * 60, 64
    xa, xb = two_data(n)
    produced, at_first_report = [0], []

    def blocks(x, count):
        for i in range(0, n, 37):
            if count:
                produced[0] += len(x[i : i + 37])
            yield x[i : i + 37]

    def progress(done, total):
        if not at_first_report:
            at_first_report.append(produced[0])

    r = jaxsens.jacobian_importance(
        m, (blocks(xa, True), blocks(xb, False)), batch_size=batch, progress=progress
    )
    assert r["a"].n_samples == n and produced[0] == n
    assert at_first_report[0] <= 8 * batch + 37, at_first_report


def test_multi_device_sharding_gives_the_single_device_result(tmp_path):
    xa, xb = two_data(503)
    np.save(tmp_path / "a.npy", xa)
    np.save(tmp_path / "b.npy", xb)
    paths = (str(tmp_path / "a.npy"), str(tmp_path / "b.npy"))
    script = textwrap.dedent(
        f"""
        import jax
        from jaxsens import _jacobian
        assert len(jax.local_devices()) == 4, jax.local_devices()
        seen = []
        kernel = _jacobian.SPEC.kernel
        def spy(model, xs, mask, row_index, **kw):
            seen.append(tuple(len(x.sharding.device_set) for x in xs))
            return kernel(model, xs, mask, row_index, **kw)
        object.__setattr__(_jacobian.SPEC, "kernel", spy)  # the spec is frozen; a test may look inside
        r4 = _jacobian.jacobian_importance(two_model(3), {paths!r}, batch_size=64)
        r1 = _jacobian.jacobian_importance(two_model(3), {paths!r}, batch_size=64, devices=jax.local_devices()[:1])
        assert set(seen) == {{(4, 4), (1, 1)}}, seen
        for name in ("a", "b"):
            r4[name].save({str(tmp_path)!r} + f"/r4_{{name}}.json")
            r1[name].save({str(tmp_path)!r} + f"/r1_{{name}}.json")
        """
    )
    # this file's model, its source only: importing this file would import TensorFlow (~10 s) for nothing
    header = "import jax.numpy as jnp\nimport numpy as np\nfrom jaxsens._model import Model\n"
    script = header + "\n".join(inspect.getsource(f) for f in (two_params, two_net, two_model)) + script
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ja, jb = two_jacobians(two_model(3).params, xa, xb)
    for name, j in (("a", ja), ("b", jb)):
        r4, r1 = load_result(tmp_path / f"r4_{name}.json"), load_result(tmp_path / f"r1_{name}.json")
        assert r4.n_samples == r1.n_samples == 503
        assert_stats_f32_close(r4, r1, n_terms=2 * (64 + TWO_CHAIN), n_rows=503)
        assert_stats_f32_close(r4, reference_stats(j), n_terms=64 + TWO_CHAIN, n_rows=503)


def test_several_inputs_results_save_and_load_as_one_file(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(20, 3, 2)).astype(np.float32))
    r = jaxsens.jacobian_importance(two_model(0), data)
    r.save(tmp_path / "r.json")
    back = load_result(tmp_path / "r.json")
    assert type(back) is jaxsens.Results and list(back) == ["a", "b"]
    for name in back:
        assert type(back[name]) is type(r[name])
        np.testing.assert_array_equal(back[name].importance, r[name].importance)
        np.testing.assert_array_equal(back[name].stderr, r[name].stderr)
