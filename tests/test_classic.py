"""Classic MLP methods: connection weights, Garson, weight sums and stepwise selection.

Oracles: values worked out by hand from the published formulas, numpy on the original framework's weights
(torch ``state_dict``, scikit-learn ``coefs_``, Keras ``get_weights()``, ONNX initializers read with
``onnx.numpy_helper``), onnxruntime / the original framework for the recovered layer stack, and known ground
truth for stepwise.
"""

from __future__ import annotations

import io
import json
import os
import warnings

import jax
import numpy as np
import onnx
import pytest
from _onnx_graphs import single_input_model
from _tol import assert_f32_close
from onnx import helper, numpy_helper

import jaxsens
from jaxsens._classic import WeightImportance, connection_weights, garson, weight_sums
from jaxsens._dense import NotDenseError, apply_layers, dense_layers, dense_model
from jaxsens._results import load_result
from jaxsens._stepwise import StepwiseResult, _step_errors, init_params, stepwise

# --------------------------------------------------------------------------------------------- hand-made nets
# 2 inputs -> 2 hidden (tanh) -> 1 output (linear). Input-hidden weights w[i, j], hidden-output weights v[j].
W1 = np.array([[1.0, -2.0], [3.0, 0.5]])
B1 = np.array([0.1, -0.2])
V = np.array([[2.0], [-1.0]])
C = np.array([0.3])


def _forward_terms(layers, xs):
    """Size of the terms a float32 forward pass sums, per output: the stack run with |W|, |b|, |x|, each activation
    bounded by |act(z)| <= 1 + |z| (every activation here: tanh, relu, sigmoid, softmax, elu, swish, ...)."""
    a = np.abs(np.asarray(xs, np.float64))
    for layer in layers:
        a = (1 + a) @ np.abs(np.asarray(layer.W, np.float64)) + np.abs(np.asarray(layer.b, np.float64))
    return a


def _forward_chain(layers) -> int:
    """Roundings along one output of the stack: each layer's fan-in, its bias and its activation."""
    return sum(np.shape(layer.W)[0] + 2 for layer in layers)


@pytest.fixture(scope="module")
def hand_model():
    return dense_model([{"W": W1, "b": B1}, {"W": V, "b": C}], ["tanh", "identity"], feature_names=["a", "b"])


def _hand_onnx() -> onnx.ModelProto:
    """The same network in ONNX: Gemm (torch layout, transB=1, alpha=0.5 on doubled weights), MatMul + Add."""
    inits = [
        numpy_helper.from_array((2 * W1.T).astype(np.float32), "w1_t"),  # [n_out, n_in], scaled back by alpha
        numpy_helper.from_array(B1.astype(np.float32), "b1"),
        numpy_helper.from_array(V.astype(np.float32), "v"),
        numpy_helper.from_array(C.astype(np.float32), "c"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1_t", "b1"], ["h"], name="hidden", transB=1, alpha=0.5),
        helper.make_node("Tanh", ["h"], ["t"], name="act"),
        helper.make_node("Identity", ["t"], ["t2"], name="dropout_removed"),
        helper.make_node("MatMul", ["t2", "v"], ["z"], name="out_matmul"),
        helper.make_node("Add", ["z", "c"], ["y"], name="out_bias"),
    ]
    return single_input_model(nodes, inits, n_in=2, n_out=1, batch="n", name="hand")


def test_connection_weights_by_hand(hand_model):
    # CW[i] = sum_j w[i, j] v[j]:  a: 1*2 + (-2)*(-1) = 4;  b: 3*2 + 0.5*(-1) = 5.5
    r = connection_weights(hand_model)
    np.testing.assert_allclose(r.importance, [[4.0, 5.5]])
    assert [name for name, _, _ in r.ranking()] == ["b", "a"]


def test_garson_by_hand(hand_model):
    # P[i, j] = |w[i, j]| |v[j]|:  unit 0: [1*2, 3*2] = [2, 6];  unit 1: [2*1, 0.5*1] = [2, 0.5]
    # Q = P / column sums:  unit 0: [2/8, 6/8] = [0.25, 0.75];  unit 1: [2/2.5, 0.5/2.5] = [0.8, 0.2]
    # S = row sums = [1.05, 0.95];  RI = S / 2 = [0.525, 0.475]
    r = garson(hand_model)
    np.testing.assert_allclose(r.importance, [[0.525, 0.475]])
    assert [name for name, _, _ in r.ranking()] == ["a", "b"]


def test_weight_sums_by_hand(hand_model):
    # sum_j |w[i, j]|:  a: 1 + 2 = 3;  b: 3 + 0.5 = 3.5
    r = weight_sums(hand_model)
    np.testing.assert_allclose(r.importance, [3.0, 3.5])
    assert r.output_names == () and r.importance.shape == (2,)  # no per-output values


def test_hand_onnx_graph_reads_the_same_layers(hand_model):
    import onnxruntime as ort

    proto = _hand_onnx()
    m = jaxsens.Model.from_onnx(proto, feature_names=["a", "b"])
    layers = dense_layers(m)
    assert [layer.activation for layer in layers] == ["tanh", "identity"]
    # transB and alpha undone: W1 rounded to float32 once (doubling and alpha = 0.5 are exact)
    assert_f32_close(layers[0].W, W1, n_terms=1, magnitude=np.abs(W1))
    assert_f32_close(layers[0].b, B1, n_terms=1, magnitude=np.abs(B1))
    xs = np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32)
    expected = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": xs})[0]
    assert_f32_close(np.asarray(apply_layers(layers, xs)), expected, n_terms=2 * _forward_chain(layers),
                     magnitude=_forward_terms(layers, xs))
    for method in (connection_weights, garson, weight_sums):  # float32-rounded weights (2 per product, 2 terms)
        assert_f32_close(method(m).importance, method(hand_model).importance, n_terms=4)


def test_two_outputs_garson_rows_sum_to_one():
    # 3 inputs -> 2 hidden -> 2 outputs; output 1 only listens to hidden unit 1 (v[0, 1] = 0).
    w = np.array([[1.0, 0.0], [1.0, 2.0], [2.0, 2.0]])
    v = np.array([[1.0, 0.0], [-3.0, 5.0]])
    m = dense_model([(w, np.zeros(2)), (v, np.zeros(2))], ["relu", "identity"])
    g = garson(m).importance
    # output 0: Q unit 0 = [1, 1, 2] / 4, unit 1 = [0, 2, 2] / 4 -> S = [0.25, 0.75, 1.0] -> RI = S / 2
    np.testing.assert_allclose(g[0], [0.125, 0.375, 0.5])
    # output 1: unit 0 has P = 0 and contributes nothing; unit 1: [0, 2, 2] / 4 -> RI = [0, 0.5, 0.5]
    np.testing.assert_allclose(g[1], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(connection_weights(m).importance, (w @ v).T)


def test_invariances_under_hidden_permutation_and_weight_scaling(hand_model):
    perm = [1, 0]
    swapped = dense_model([(W1[:, perm], B1[perm]), (V[perm], C)], ["tanh", "identity"])
    for method in (connection_weights, garson, weight_sums):  # two hidden units: a + b == b + a, exactly
        np.testing.assert_array_equal(method(swapped).importance, method(hand_model).importance)
    doubled = hand_model.with_params(jax.tree_util.tree_map(lambda a: 2 * a, hand_model.params))
    np.testing.assert_allclose(
        connection_weights(doubled).importance, 4 * connection_weights(hand_model).importance
    )
    np.testing.assert_allclose(weight_sums(doubled).importance, 2 * weight_sums(hand_model).importance)
    np.testing.assert_array_equal(garson(doubled).importance, garson(hand_model).importance)  # 2x is exact


# ---------------------------------------------------------------------------------------- independent oracles
def _garson_loops(w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Goh (1995) appendix, step by step with loops: returns RI [n_outputs, n_inputs]."""
    n_in, n_hid = w.shape
    out = np.zeros((v.shape[1], n_in))
    for k in range(v.shape[1]):
        S = np.zeros(n_in)
        for j in range(n_hid):
            P = [abs(w[i, j]) * abs(v[j, k]) for i in range(n_in)]
            total = sum(P)
            for i in range(n_in):
                S[i] += P[i] / total if total > 0 else 0.0
        out[k] = S / S.sum()
    return out


def _torch_onnx(net, example) -> bytes:
    import torch

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, example, f, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    return f.getvalue()


def test_torch_mlp_matches_state_dict():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)
    ).eval()
    m = jaxsens.Model.from_onnx(_torch_onnx(net, torch.zeros(1, 5)))
    sd = {k: v.double().numpy() for k, v in net.state_dict().items()}
    layers = dense_layers(m)
    assert [layer.activation for layer in layers] == ["tanh", "relu", "identity"]
    xs = torch.randn(16, 5)
    assert_f32_close(np.asarray(apply_layers(layers, xs.numpy())), net(xs).detach().numpy(),
                     n_terms=2 * _forward_chain(layers), magnitude=_forward_terms(layers, xs.numpy()))
    product = sd["0.weight"].T @ sd["2.weight"].T @ sd["4.weight"].T  # nn.Linear stores [n_out, n_in]
    np.testing.assert_allclose(connection_weights(m).importance, product.T, rtol=1e-5)
    np.testing.assert_allclose(weight_sums(m).importance, np.abs(sd["0.weight"]).sum(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"exactly one hidden layer, got 2; use connection_weights\(\)"):
        garson(m)

    one_hidden = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Sigmoid(), torch.nn.Linear(6, 3)).eval()
    m1 = jaxsens.Model.from_onnx(_torch_onnx(one_hidden, torch.zeros(1, 5)))
    w, v = (p.detach().double().numpy().T for p in (one_hidden[0].weight, one_hidden[2].weight))
    np.testing.assert_allclose(garson(m1).importance, _garson_loops(w, v), rtol=1e-5)
    np.testing.assert_allclose(garson(m1).importance.sum(axis=1), 1.0)


def test_sklearn_mlp_regressor_and_classifiers_match_coefs():
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 4)).astype(np.float32)
    y = X[:, 0] - 2 * X[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = MLPRegressor(hidden_layer_sizes=(6,), activation="logistic", max_iter=60, random_state=0).fit(
            X, y
        )
        binary = MLPClassifier(hidden_layer_sizes=(5,), max_iter=60, random_state=0).fit(
            X, (y > 0).astype(int)
        )
        multi = MLPClassifier(hidden_layer_sizes=(5,), activation="tanh", max_iter=60, random_state=0).fit(
            X, np.digitize(y, [-1, 1])
        )

    m = jaxsens.Model.from_onnx(to_onnx(reg, X[:1]))
    w, v = (np.asarray(c, np.float64) for c in reg.coefs_)
    assert [layer.activation for layer in dense_layers(m)] == ["sigmoid", "identity"]
    np.testing.assert_allclose(connection_weights(m).importance, (w @ v).T, rtol=1e-5)
    np.testing.assert_allclose(garson(m).importance, _garson_loops(w, v), rtol=1e-5)
    np.testing.assert_allclose(weight_sums(m).importance, np.abs(w).sum(axis=1), rtol=1e-6)

    # binary: probabilities = [1 - sigmoid(z), sigmoid(z)] is read as a two-unit sigmoid layer with weights
    # [-v, v]
    mb = jaxsens.Model.from_onnx(to_onnx(binary, X[:1], options={"zipmap": False}))
    layers = dense_layers(mb)
    assert [layer.activation for layer in layers] == ["relu", "sigmoid"]
    assert_f32_close(np.asarray(apply_layers(layers, X)), binary.predict_proba(X),
                     n_terms=2 * _forward_chain(layers), magnitude=_forward_terms(layers, X))
    cw = binary.coefs_[0].astype(np.float64) @ binary.coefs_[1].astype(np.float64)  # [4, 1]
    np.testing.assert_allclose(connection_weights(mb).importance, np.stack([-cw[:, 0], cw[:, 0]]), rtol=1e-5)

    mm = jaxsens.Model.from_onnx(to_onnx(multi, X[:1], options={"zipmap": False}))
    layers = dense_layers(mm)
    assert [layer.activation for layer in layers] == ["tanh", "softmax"]
    assert_f32_close(np.asarray(apply_layers(layers, X)), multi.predict_proba(X),
                     n_terms=2 * (_forward_chain(layers) + 3), magnitude=_forward_terms(layers, X))  # + softmax sum
    w, v = (np.asarray(c, np.float64) for c in multi.coefs_)
    np.testing.assert_allclose(garson(mm).importance, _garson_loops(w, v), rtol=1e-5)


def test_bundled_example_matches_onnx_initializers():
    from jaxsens.examples import default_model_path

    m = jaxsens.load_model(default_model_path())
    inits = {
        t.name: numpy_helper.to_array(t).astype(np.float64)
        for t in onnx.load(default_model_path()).graph.initializer
    }
    kernels = [inits[f"dense_{i}/kernel"] for i in range(3)] + [inits["output/kernel"]]
    product = kernels[0] @ kernels[1] @ kernels[2] @ kernels[3]
    r = connection_weights(m)
    assert r.importance.shape == (2, 82)
    np.testing.assert_allclose(r.importance, product.T, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(weight_sums(m).importance, np.abs(kernels[0]).sum(axis=1), rtol=1e-6)


@pytest.mark.slow
def test_keras_dense_stack():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    pytest.importorskip("tf2onnx")
    keras.utils.set_random_seed(0)
    init = {"bias_initializer": "random_normal"}
    inp = keras.Input((4,))
    h = keras.layers.Dense(5, activation="tanh", **init)(inp)
    out = keras.layers.Dense(3, activation="softmax", **init)(keras.layers.Dropout(0.2)(h))
    shallow = keras.Model(inp, out)
    h = keras.layers.Dense(4, activation="leaky_relu", **init)(inp)
    h = keras.layers.Dense(4, activation="elu", **init)(h)
    h = keras.layers.Dense(4, activation="swish", **init)(h)
    h = keras.layers.Dense(4, activation="hard_sigmoid", **init)(h)  # Keras 3: relu6(z + 3) / 6
    deep = keras.Model(inp, keras.layers.Dense(2, activation="sigmoid", **init)(h))
    xs = np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32)

    m = jaxsens.Model.from_keras(shallow)
    kernels = [np.asarray(w, np.float64) for w in shallow.get_weights()[::2]]
    np.testing.assert_allclose(connection_weights(m).importance, (kernels[0] @ kernels[1]).T, rtol=1e-5)
    np.testing.assert_allclose(garson(m).importance, _garson_loops(*kernels), rtol=1e-5)
    np.testing.assert_allclose(weight_sums(m).importance, np.abs(kernels[0]).sum(axis=1), rtol=1e-6)

    md = jaxsens.Model.from_keras(deep)
    layers = dense_layers(md)
    assert [layer.activation for layer in layers] == ["leaky_relu", "elu", "swish", "clip", "sigmoid"]
    assert_f32_close(np.asarray(apply_layers(layers, xs)), deep.predict(xs, verbose=0),
                     n_terms=2 * _forward_chain(layers), magnitude=_forward_terms(layers, xs))


# ----------------------------------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def lstm_model():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(3, 4, batch_first=True)
            self.fc = torch.nn.Linear(4, 1)

        def forward(self, x):
            h, _ = self.lstm(x)
            return self.fc(h[:, -1])

    return jaxsens.Model.from_onnx(_torch_onnx(Net().eval(), torch.zeros(1, 5, 3)))


@pytest.mark.parametrize("method", [connection_weights, garson, weight_sums])
def test_methods_refuse_an_lstm_naming_the_op(method, lstm_model):
    with pytest.raises(
        NotDenseError, match=rf"{method.__name__}\(\) needs a dense network.*'/lstm/LSTM' \(LSTM\)"
    ):
        method(lstm_model)


def test_stepwise_refuses_an_lstm(lstm_model):
    X = np.zeros((4, 5, 3), np.float32)
    with pytest.raises(NotDenseError, match=r"stepwise\(\).*\(LSTM\) is a recurrent layer"):
        stepwise(lstm_model, X, np.zeros(4), key=jax.random.key(0))


def test_other_non_dense_models_name_the_offending_node():
    torch = pytest.importorskip("torch")
    conv = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(12, 1)).eval()
    with pytest.raises(NotDenseError, match=r"node '/0/Conv' \(Conv\) is a convolutional layer"):
        connection_weights(jaxsens.Model.from_onnx(_torch_onnx(conv, torch.zeros(1, 2, 6))))

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 3)

        def forward(self, x):
            return torch.relu(self.fc(x)) + x

    with pytest.raises(NotDenseError, match=r"tensor 'x' forks into several nodes"):
        connection_weights(jaxsens.Model.from_onnx(_torch_onnx(Residual().eval(), torch.zeros(1, 3))))

    unflatten = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Unflatten(1, (2, 3)), torch.nn.Linear(3, 1), torch.nn.Flatten()
    ).eval()
    with pytest.raises(NotDenseError, match=r"\(Reshape\) reshapes the data between dense layers"):
        weight_sums(jaxsens.Model.from_onnx(_torch_onnx(unflatten, torch.zeros(1, 4))))

    plain = jaxsens.Model.from_function(lambda p, x: x @ p, np.ones((3, 1), np.float32), input_shape=(3,))
    with pytest.raises(NotDenseError, match=r"garson\(\) cannot see the layers.*dense_model"):
        garson(plain)


def test_garson_needs_a_hidden_layer_and_dense_model_validates():
    linear = dense_model([(np.ones((3, 1)), np.zeros(1))], ["identity"])
    with pytest.raises(ValueError, match=r"exactly one hidden layer, got 0"):
        garson(linear)
    with pytest.raises(ValueError, match=r"layers\[1\] takes 4 inputs but layers\[0\] has 2 units"):
        dense_model([(np.ones((3, 2)), np.zeros(2)), (np.ones((4, 1)), np.zeros(1))], ["relu", "identity"])
    with pytest.raises(ValueError, match=r"activations has 1 names for 2 layers"):
        dense_model([(np.ones((3, 2)), np.zeros(2)), (np.ones((2, 1)), np.zeros(1))], ["relu"])
    with pytest.raises(ValueError, match=r"unknown activation 'rleu'"):
        dense_model([(np.ones((3, 2)), np.zeros(2))], ["rleu"])


# ---------------------------------------------------------------------------------------------------- results
def test_weight_result_serialises(hand_model, tmp_path):
    r = connection_weights(hand_model)
    with pytest.warns(DeprecationWarning, match=r"to_dict\(\) is deprecated"):
        d = json.loads(json.dumps(r.to_dict()))
    assert d["method"] == "connection-weights" and d["ranking"] == ["b", "a"]
    r.save(tmp_path / "cw.json")
    back = load_result(tmp_path / "cw.json")
    assert isinstance(back, WeightImportance) and back.feature_names == ("a", "b")
    np.testing.assert_array_equal(back.importance, r.importance)
    np.testing.assert_array_equal(back.stderr, np.zeros((1, 2)))
    ws = weight_sums(hand_model)
    assert [name for name, _, _ in ws.ranking()] == ["b", "a"]
    with pytest.raises(ValueError, match="aggregates the outputs"):
        ws.ranking(output=0)
    with pytest.raises(ValueError, match=r"weight_sums\(\) reads only the weights into the first hidden layer"):
        weight_sums(hand_model, outputs=[0])


# ------------------------------------------------------------------------------------- the method protocol
def _signed_net():
    """3 inputs -> 2 hidden -> 2 outputs with a strongly negative connection weight for x2 on output 0."""
    w = np.array([[1.0, 0.0], [0.5, 0.5], [-4.0, 1.0]])
    v = np.array([[1.0, 2.0], [0.5, -1.0]])
    return dense_model([(w, np.zeros(2)), (v, np.zeros(2))], ["tanh", "identity"],
                       feature_names=["p", "q", "r"], output_names=["u", "z"]), w, v


@pytest.mark.parametrize("method", [connection_weights, garson, weight_sums])
def test_weight_methods_take_the_one_calling_convention(method, hand_model):
    """(model) and (model, data) give the same exact result; stderr is exactly 0; targets are refused."""
    alone = method(hand_model)
    data = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    for given in (method(hand_model, data), method(hand_model, data=data), method(hand_model, "any.csv")):
        np.testing.assert_array_equal(given.importance, alone.importance)
    np.testing.assert_array_equal(alone.stderr, np.zeros_like(alone.importance))
    assert alone.n_samples == 0 and alone.input_shape == (2,) and alone.feature_names == ("a", "b")
    assert alone.method == method.spec.name and jaxsens.methods()[alone.method].function is method
    assert method.spec.family == "weights" and not method.spec.needs_data and not method.spec.random
    with pytest.raises(ValueError, match=rf"{method.__name__}\(\) does not use targets"):
        method(hand_model, data, np.zeros(7))
    seen = []
    method(hand_model, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 0)]  # called once: no rows to read


def test_connection_weights_are_signed_and_rank_by_magnitude(tmp_path):
    m, w, v = _signed_net()
    r = connection_weights(m)
    cw = (w @ v).T  # [2 outputs, 3 inputs]: u = [1, 0.75, -3.5], z = [2, 0.5, -9]
    np.testing.assert_allclose(r.importance, cw)
    assert r.output_names == ("u", "z") and r.importance[0, 2] < 0  # the sign is kept, as published
    assert r.ranking(output="u") == (("r", 3.5, 0.0), ("p", 1.0, 0.0), ("q", 0.75, 0.0))
    assert [n for n, _, _ in r.ranking()] == ["r", "p", "q"]  # mean |CW| over outputs: 6.25, 1.5, 0.625
    frame = r.to_frame()
    assert list(frame.columns) == ["feature", "output", "importance", "stderr", "ci_low", "ci_high", "rank"]
    assert frame.loc[(frame.output == "u") & (frame.feature == "r"), "rank"].item() == 1  # |-3.5| is largest
    np.testing.assert_array_equal(frame.importance, cw.reshape(-1))  # signed values in the table
    with pytest.warns(DeprecationWarning, match=r"scores\(\) is deprecated"):
        np.testing.assert_allclose(r.scores("z"), np.abs(cw[1]))
    one = connection_weights(m, outputs=["z"])  # a row of the product, named
    assert one.output_names == ("z",)
    np.testing.assert_array_equal(one.importance, r.importance[1:])
    np.testing.assert_array_equal(garson(m, outputs=[1]).importance, garson(m).importance[1:])
    r.save(tmp_path / "cw.json")
    back = load_result(tmp_path / "cw.json")
    assert back.ranking() == r.ranking() and back.method == "connection-weights"


def test_weight_methods_plot_titled_with_intervals_absent(hand_model, tmp_path):
    pytest.importorskip("matplotlib")
    fig = connection_weights(hand_model).plot(path=tmp_path / "cw.png")
    assert "connection-weights" in fig._suptitle.get_text() and "top 2 of 2" in fig._suptitle.get_text()
    assert (tmp_path / "cw.png").stat().st_size > 0
    assert fig.axes[0].get_legend() is None  # stderr is exactly 0: no interval to draw
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_weight_methods_refuse_several_inputs():
    import jax.numpy as jnp

    two = jaxsens.Model(apply=lambda p, x: jnp.concatenate([x[0], x[1]]) @ p, params=np.ones((5, 1), np.float32),
                        input_shape=((2,), (3,)), output_shape=(1,), input_names=("a", "b"))
    with pytest.raises(ValueError, match=r"connection_weights\(\) handles a model with one input"):
        connection_weights(two)


# --------------------------------------------------------------------------------------------------- stepwise
def _synthetic(n=256, n_features=5, seed=0):
    """y depends on inputs 0 and 1 only (0 more strongly); inputs 2.. are noise, input 4 correlates with 0."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    X[:, 4] = 0.3 * X[:, 0] + 0.95 * X[:, 4]
    y = 1.5 * X[:, 0] - np.tanh(2 * X[:, 1]) + 0.05 * rng.normal(size=n)
    return X, y.astype(np.float32)


def _mlp(n_features, hidden=8, outputs=1, last="identity"):
    return dense_model(
        [
            (np.zeros((n_features, hidden)), np.zeros(hidden)),
            (np.zeros((hidden, outputs)), np.zeros(outputs)),
        ],
        ["tanh", last],
    )


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_stepwise_finds_the_two_relevant_inputs(direction):
    X, y = _synthetic()
    kw = {"direction": direction, "epochs": 200, "learning_rate": 0.05, "key": jax.random.key(0)}
    r = stepwise(_mlp(5), X, y, **kw)
    assert isinstance(r, StepwiseResult)
    assert sorted(r.order) == [f"x{i}" for i in range(5)]
    if direction == "forward":
        assert r.order[:2] == ("x0", "x1")  # x0 explains more variance, so it enters first
        assert r.errors[1] < 0.05 * r.baseline  # with both in, little error is left
    else:
        assert r.order[-2:] == ("x1", "x0")  # the last to leave
        assert r.errors[-1] > 10 * r.baseline  # nothing left: the error of a constant
    assert [name for name, _, _ in r.ranking()][:2] == ["x0", "x1"]
    # the two relevant inputs change the error by far more than its bootstrap uncertainty
    assert (r.importance[:2] > 5 * r.stderr[:2]).all() and np.isfinite(r.stderr).all()
    again = stepwise(_mlp(5), X, y, **kw)  # deterministic given the key
    np.testing.assert_array_equal(again.errors, r.errors)
    np.testing.assert_array_equal(again.candidate_errors, r.candidate_errors)
    np.testing.assert_array_equal(again.stderr, r.stderr)


def test_stepwise_vmapped_candidates_equal_separate_trainings():
    X, y = _synthetic(n=64)
    masks = np.array([[1, 0, 0, 1, 0], [0, 1, 1, 0, 1], [1, 1, 1, 1, 1]], np.float32)
    init = init_params(jax.random.key(3), (5, 4, 1))
    settings = {
        "activations": (("tanh", ()), ("identity", ())),
        "loss": "mse",
        "epochs": 30,
        "batch_size": 16,
    }
    args = (init, X, y[:, None], X, y[:, None], jax.random.key(4), np.float32(0.02))
    together, rows = (np.asarray(a) for a in _step_errors(masks, *args, **settings))
    alone = np.concatenate([np.asarray(_step_errors(masks[i : i + 1], *args, **settings)[0]) for i in range(3)])
    # vmapped and separate float32 trainings round differently: 30 epochs x 4 steps of a 5 -> 4 -> 1 network
    # (forward and backward fan-ins 5 + 4 + 1), then the error sums 64 rows; terms of the size of the errors
    n_terms = 2 * (30 * 4 * (5 + 4 + 1) + 64)
    assert_f32_close(together, alone, n_terms=n_terms, magnitude=np.abs(alone).max())
    # the per-row losses (for the bootstrap stderr) average to the errors: a sum of 64 rows, on both sides
    assert rows.shape == (3, 64)
    assert_f32_close(rows.mean(axis=1), together, n_terms=2 * 64, magnitude=np.abs(rows).max())


def test_stepwise_classifier_with_labels_and_max_steps(tmp_path):
    X, _y = _synthetic(n=192, seed=1)
    labels = np.digitize(1.5 * X[:, 0] - np.tanh(2 * X[:, 1]), [-0.7, 0.7])  # 3 classes from x0, x1
    m = _mlp(5, outputs=3, last="softmax")
    r = stepwise(m, X, labels, epochs=150, learning_rate=0.05, max_steps=2, key=1)
    assert r.metric == "log_loss" and len(r.errors) == 2
    assert set(r.order) == {"x0", "x1"}
    assert np.isnan(r.importance[2:]).all() and (r.importance[:2] > 0).all()
    assert np.isnan(r.stderr[2:]).all() and (r.stderr[:2] > 0).all()
    assert [name for name, _, _ in r.ranking()][2:] == ["x2", "x3", "x4"]  # not reached: NaN, ranked last
    # one-hot targets train the same networks as the labels
    onehot = stepwise(m, X, np.eye(3, dtype=np.float32)[labels], epochs=150, learning_rate=0.05, max_steps=2, key=1)
    np.testing.assert_array_equal(onehot.errors, r.errors)
    r.save(tmp_path / "sw.json")
    json.loads((tmp_path / "sw.json").read_text())
    back = load_result(tmp_path / "sw.json")
    assert back.order == r.order and back.metric == "log_loss"
    np.testing.assert_array_equal(back.candidate_errors, r.candidate_errors)
    with pytest.raises(jaxsens.DataError, match=r"class labels 0\.\.3; the model has 3 outputs"):
        stepwise(m, X, np.where(np.arange(192) == 4, 3, labels), epochs=2, max_steps=1)


def test_stepwise_validates_its_arguments():
    X, y = _synthetic(n=32)
    m = _mlp(5)
    with pytest.raises(ValueError, match=r"direction must be one of \['forward', 'backward'\], got 'sideways'"):
        stepwise(m, X, y, direction="sideways")
    with pytest.raises(ValueError, match=r"data has shape \[32, 4\]; the model expects \[n_samples, 5\]"):
        stepwise(m, X[:, :4], y)
    with pytest.raises(ValueError, match=r"the targets .* have 31 rows but the data .* has 32"):
        stepwise(m, X, y[:31])
    with pytest.raises(ValueError, match=r"metric='log_loss' needs a softmax or sigmoid output layer"):
        stepwise(m, X, y, metric="log_loss")
    with pytest.raises(ValueError, match=r"max_steps=9; give 1..5"):
        stepwise(m, X, y, max_steps=9)
    with pytest.raises(TypeError, match=r"key must be an int seed or a JAX PRNG key"):
        stepwise(m, X, y, key="seed")
