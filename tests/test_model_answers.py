"""What a ``Model`` answers for the methods, read off the converted graph once (issue 11, item 1), and Keras output
names (item 7).

* ``Model.outputs_sum_to_one``: a softmax head (Keras, PyTorch export, ``dense_model``) is True, a linear head
  False; the oracle is the maths: every row of the Jacobian of such a model sums to zero.
* ``Model.dense_layers()``: the Keras kernels and biases, and the layers recompute the model.
* ``Model.with_unroll(steps)``: the explicit, static option that steers recurrences (a static loop or
  ``lax.scan``): the same values and gradients both ways, one compiled kernel per value.
* The registry holds the table only (no import of the op modules), and one rule says what is static.
* Keras output names are the output layers' names (``probs0``, ``dense_2[0]``), not tf2onnx's ``Identity:00``.
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tol import assert_f32_close

import jaxsens
from converters.errors import ArgumentError, ArgumentTypeError
from jaxsens import Model
from jaxsens._model import apply_rows

ROOT = pathlib.Path(__file__).resolve().parents[1]
keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")
FLAVORS = {"keras3": keras, "tf_keras": tf_keras}


def _rows(n, shape, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _jacobian_row_sums(model: Model, xs):
    """``sum_k dy_k / dx`` per sample: zero for outputs that sum to one."""
    jac = jax.vmap(jax.jacrev(lambda x: jnp.ravel(model.apply(model.params, x))))(jnp.asarray(xs))
    return np.asarray(jac.sum(axis=1)), np.asarray(jnp.abs(jac).sum(axis=1))


# ---------------------------------------------------------------------------------------------- Keras models
@pytest.fixture(scope="module", params=sorted(FLAVORS))
def two_heads(request):
    """A functional model with two outputs: ``probs`` (softmax over 3) and ``score_1`` (linear, 1 unit)."""
    K = FLAVORS[request.param]
    K.utils.set_random_seed(0)
    inp = K.Input((4,))
    h = K.layers.Dense(5, activation="tanh", name="hidden")(inp)
    probs = K.layers.Dense(3, activation="softmax", name="probs")(h)
    score = K.layers.Dense(1, name="score_1")(h)
    return K.Model(inp, [probs, score])


@pytest.fixture(scope="module", params=sorted(FLAVORS))
def sequential(request):
    K = FLAVORS[request.param]
    K.utils.set_random_seed(1)
    return K.Sequential(
        [K.Input((4,)), K.layers.Dense(6, activation="relu"), K.layers.Dense(2, activation="softmax", name="dense_2")]
    )


def test_keras_functional_output_names_are_the_output_layers(two_heads):
    x = _rows(8, (4,))
    want_probs, want_score = two_heads.predict(x, verbose=0)
    probs = Model.from_keras(two_heads)  # the first output by default
    assert probs.output_names == ("probs0", "probs1", "probs2")
    assert probs.apply.output == "probs"
    score = Model.from_keras(two_heads, output="score_1")  # chosen by its Keras layer name
    assert score.output_names == ("score_1",)
    assert_f32_close(probs(x), want_probs, n_terms=2 * 5 + 3)
    assert_f32_close(score(x), want_score, n_terms=2 * 5, magnitude=np.abs(want_score).max() + 1.0)
    by_index = Model.from_keras(two_heads, output=1)
    assert by_index.output_names == ("score_1",)


def test_keras_sequential_output_names_from_the_last_layer(sequential, tmp_path):
    m = Model.from_keras(sequential)
    # a layer name ending in a digit gets bracketed unit indices: dense_2[0], never dense_20
    assert m.output_names == ("dense_2[0]", "dense_2[1]")
    assert not any(name.startswith("Identity") for name in m.output_names)
    x = _rows(5, (4,), seed=2)
    assert_f32_close(m(x), sequential.predict(x, verbose=0), n_terms=2 * 6 + 2)
    if type(sequential).__module__.startswith("keras"):  # a Keras 3 file goes the same way
        path = tmp_path / "seq.keras"
        sequential.save(path)
        assert jaxsens.load_model(path).output_names == ("dense_2[0]", "dense_2[1]")


def test_keras_default_layer_names_are_kept(two_heads):
    K = keras if type(two_heads).__module__.startswith("keras") else tf_keras
    seq = K.Sequential([K.Input((3,)), K.layers.Dense(4)])
    name = seq.layers[-1].name  # Keras numbers default names per session: dense, dense_7, ...
    names = Model.from_keras(seq).output_names
    assert len(names) == 4 and all(n.startswith(name) for n in names)
    assert names[0] == (f"{name}[0]" if name[-1].isdigit() else f"{name}0")


# ---------------------------------------------------------------------------------------------- sums to one
def test_outputs_sum_to_one_softmax_head_true_linear_head_false(two_heads):
    probs = Model.from_keras(two_heads)
    score = Model.from_keras(two_heads, output="score_1")
    assert probs.outputs_sum_to_one is True
    assert score.outputs_sum_to_one is False
    x = _rows(6, (4,), seed=3)
    sums, mags = _jacobian_row_sums(probs, x)
    assert_f32_close(sums, np.zeros_like(sums), n_terms=3 * 8, magnitude=mags)
    # kept through with_params (same architecture) and with_unroll
    assert probs.with_params(probs.params).outputs_sum_to_one and probs.with_unroll(0).outputs_sum_to_one


def test_linear_multi_unit_head_is_false():
    K = keras
    K.utils.set_random_seed(4)
    seq = K.Sequential([K.Input((3,)), K.layers.Dense(4, activation="relu"), K.layers.Dense(3)])
    assert Model.from_keras(seq).outputs_sum_to_one is False


def test_outputs_sum_to_one_torch_export_softmax(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3), torch.nn.Softmax(dim=-1)
    ).eval()
    logits_net = torch.nn.Sequential(*list(net)[:-1]).eval()
    out = {}
    for name, module in (("softmax", net), ("logits", logits_net)):
        path = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.randn(2, 5),), path, input_names=["x"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        out[name] = jaxsens.load_model(path)
    assert out["softmax"].outputs_sum_to_one is True
    assert out["logits"].outputs_sum_to_one is False
    x = _rows(4, (5,), seed=5)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert_f32_close(out["softmax"](x), want, n_terms=2 * 7 + 3)
    sums, mags = _jacobian_row_sums(out["softmax"], x)
    assert_f32_close(sums, np.zeros_like(sums), n_terms=3 * 8, magnitude=mags)


def test_softmax_over_a_sequence_is_not_sum_to_one():
    """A softmax over the last axis of a [steps, classes] output sums to one per step, not over the outputs."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["p"], axis=-1)],
        "seq_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3, 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    assert Model.from_onnx(proto).outputs_sum_to_one is False


def test_from_function_declares_and_is_checked():
    W = np.random.default_rng(6).standard_normal((3, 4)).astype(np.float32)
    softmax = lambda p, x: jax.nn.softmax(x @ p)  # noqa: E731
    assert Model.from_function(softmax, W, input_shape=(3,)).outputs_sum_to_one is False  # never inferred
    assert Model.from_function(softmax, W, input_shape=(3,), outputs_sum_to_one=True).outputs_sum_to_one
    with pytest.raises(ArgumentError, match="outputs sum to"):
        Model.from_function(lambda p, x: jnp.tanh(x @ p), W, input_shape=(3,), outputs_sum_to_one=True)
    with pytest.raises(ArgumentError, match="one output axis"):
        Model.from_function(lambda p, x: jnp.ones((1,)), W, input_shape=(3,), outputs_sum_to_one=True)
    with pytest.raises(ArgumentTypeError, match="outputs_sum_to_one"):
        Model.from_function(softmax, W, input_shape=(3,), outputs_sum_to_one="yes")
    dense = jaxsens.dense_model([{"W": W, "b": np.zeros(4)}], ["softmax"])
    assert dense.outputs_sum_to_one is True
    assert jaxsens.dense_model([{"W": W, "b": np.zeros(4)}], ["tanh"]).outputs_sum_to_one is False


def test_default_model_softmax_head():
    m = jaxsens.load_model(jaxsens.examples.default_model_path())
    assert m.outputs_sum_to_one is True


# ---------------------------------------------------------------------------------------------- dense layers
def test_dense_layers_through_the_model_method(sequential):
    m = Model.from_keras(sequential)
    layers = m.dense_layers()
    kernels = sequential.get_weights()  # [W0, b0, W1, b1]
    assert [layer.activation for layer in layers] == ["relu", "softmax"]
    for layer, W, b in zip(layers, kernels[0::2], kernels[1::2]):
        np.testing.assert_array_equal(np.asarray(layer.W), W)  # the same float32 numbers, read not computed
        np.testing.assert_array_equal(np.asarray(layer.b), b)
    from jaxsens._dense import apply_layers

    x = _rows(5, (4,), seed=7)
    assert_f32_close(np.asarray(apply_layers(layers, jnp.asarray(x))), m(x), n_terms=2 * 6 + 2)
    same = jaxsens.dense_layers(m)  # the public function is the method behind the argument check
    assert all(np.array_equal(a.W, b.W) and a.activation == b.activation for a, b in zip(same, layers))
    doubled = m.with_params({k: 2 * v for k, v in m.params.items()}).dense_layers()
    np.testing.assert_array_equal(np.asarray(doubled[0].W), 2 * kernels[0])


def test_not_dense_error_is_one_class():
    import converters.onnx_to_jax.dense as cdense
    import jaxsens._dense as jdense

    assert jdense.NotDenseError is cdense.NotDenseError and issubclass(cdense.NotDenseError, ArgumentError)
    assert jdense.DenseLayer is cdense.DenseLayer
    plain = Model.from_function(lambda p, x: x * p, 2.0, input_shape=(3,))
    with pytest.raises(jdense.NotDenseError, match="garson.*plain function"):
        plain.dense_layers(method="garson")
    # every activation the graph walk can name is one the dense stack can evaluate
    names = {name for name, _ in cdense._ONNX_ACTIVATIONS.values()}
    assert names <= set(jdense.ACTIVATIONS)


# ---------------------------------------------------------------------------------------------- unrolling
@pytest.fixture(scope="module")
def lstm():
    K = keras
    K.utils.set_random_seed(8)
    net = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4), K.layers.Dense(2)])
    return net, Model.from_keras(net)


def _prims(model, xs) -> set[str]:
    """The primitives of the traced batch function (``scan`` when a recurrence runs in ``lax.scan``)."""
    text = str(jax.make_jaxpr(lambda p, v: apply_rows(model, p, v))(model.params, xs))
    return set(re.findall(r"\b([a-z_]+)\[", text)) | set(re.findall(r"= ([a-z_]+) ", text))


def test_unroll_is_explicit_and_gives_the_same_values_and_gradients(lstm):
    net, m = lstm
    assert m.batched and m.unroll is None
    scan, unrolled = m.with_unroll(0), m.with_unroll(32)
    xs = jnp.asarray(_rows(6, (5, 3), seed=9))
    # the two code paths really differ: a lax.scan over time, or none (5 steps unrolled)
    assert "scan" in _prims(scan, xs) and "scan" not in _prims(unrolled, xs)
    assert "scan" not in _prims(m, xs)  # the default unrolls short sequences
    want = net.predict(np.asarray(xs), verbose=0)
    n_terms = 5 * (3 + 4 + 4) + 4  # steps x (input + recurrent + gate) products, then the dense layer
    for model in (scan, unrolled):
        assert_f32_close(np.asarray(apply_rows(model, model.params, xs)), want, n_terms=n_terms)

    def loss(params, v, model):
        return jnp.sum(apply_rows(model, params, v) ** 2)

    g_scan = jax.grad(loss, argnums=(0, 1))(scan.params, xs, scan)
    g_unrolled = jax.grad(loss, argnums=(0, 1))(unrolled.params, xs, unrolled)
    for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_unrolled)):
        assert_f32_close(a, b, n_terms=2 * n_terms, magnitude=np.abs(np.asarray(b)).max() + 1e-3)


def test_unroll_is_static_metadata_one_kernel_per_value(lstm):
    _, m = lstm
    traces = []

    @jax.jit
    def predict(model, v):
        traces.append(model.unroll)
        return apply_rows(model, model.params, v)

    xs = jnp.asarray(_rows(4, (5, 3), seed=10))
    predict(m.with_unroll(0), xs)
    predict(m.with_unroll(0), xs + 1.0)  # an equal option: the compiled kernel is reused
    assert traces == [0]
    predict(m, xs)  # another value: its own kernel
    assert traces == [0, None]
    # what jit keys on: the pytree structure, whose static metadata holds the converted function and its option
    structure = jax.tree.structure
    assert structure(m.with_unroll(0)) == structure(m.with_unroll(0)) != structure(m)
    assert hash(m.with_unroll(0).apply) == hash(m.with_unroll(0).apply)
    assert m.with_unroll(None) is m and m.with_unroll(0).with_unroll(None).apply == m.apply
    inside = jax.jit(lambda model, v: apply_rows(model.with_unroll(0), model.params, v))  # also inside jit
    np.testing.assert_allclose(np.asarray(inside(m, xs)), np.asarray(predict(m.with_unroll(0), xs)), rtol=0, atol=0)


@pytest.mark.parametrize(
    "steps, error, words",
    [(-1, ArgumentError, "negative"), (1.5, ArgumentTypeError, "float"), (True, ArgumentTypeError, "bool"),
     ("0", ArgumentTypeError, "str")],
)
def test_with_unroll_refuses_bad_values(lstm, steps, error, words):
    with pytest.raises(error, match=words):
        lstm[1].with_unroll(steps)


def test_with_unroll_on_a_function_model_is_the_model():
    m = Model.from_function(lambda p, x: x * p, 2.0, input_shape=(3,))
    assert m.with_unroll(0) is m and m.unroll is None


# ---------------------------------------------------------------------------------------------- registry, static
def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_registry_imports_no_op_module_and_ops_not_the_interpreter():
    pkg = ROOT / "converters" / "onnx_to_jax"
    assert not {m for m in _imports(pkg / "registry.py") if m.startswith("converters.onnx_to_jax.ops")
                or m.startswith("converters.onnx_to_jax.graph")}
    for module in (pkg / "ops").glob("*.py"):
        bad = {m for m in _imports(module) if m.startswith("converters.onnx_to_jax.graph")}
        assert not bad, f"{module.name} imports the interpreter: {bad}"
    code = "import converters.onnx_to_jax.registry as r; assert r.get_op('LSTM') is not None; print(len(r.supported_ops()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert int(out.stdout) > 100


def test_static_rule_exists_once():
    defs = []
    for path in (ROOT / "converters").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in ("is_static", "_is_static"):
                defs.append(path.relative_to(ROOT).as_posix())
    assert defs == ["converters/onnx_to_jax/static.py"]
    from converters.onnx_to_jax.static import is_static

    assert is_static(None) and is_static(np.zeros(2)) and is_static(np.float32(1.0))
    assert not is_static(jnp.zeros(2))
