"""The ONNX graph front end: loading, safety, pruning, parameters vs constants, compile sharing, errors."""

from __future__ import annotations

import os

import jax
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import jaxsens
from converters.errors import (
    ConversionError,
    ModelFileError,
    ModelFileNotFoundError,
    UnsafeModelError,
    UnsupportedOpError,
)
from converters.onnx_to_jax import register_op, supported_ops
from jaxsens import examples


def _mlp(seed=0, n_in=4, n_hidden=8, n_out=3, extra_nodes=(), extra_outputs=()):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(n_in, n_hidden)).astype(np.float32)
    b1 = rng.normal(size=n_hidden).astype(np.float32)
    w2 = rng.normal(size=(n_hidden, n_out)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="dense/MatMul"),
        helper.make_node("Add", ["h", "b1"], ["h2"], name="dense/BiasAdd"),
        helper.make_node("Tanh", ["h2"], ["h3"], name="dense/Tanh"),
        helper.make_node("Gemm", ["h3", "W2"], ["z"], name="out/Gemm"),
        helper.make_node("Softmax", ["z"], ["y"], name="out/Softmax", axis=1),
        *extra_nodes,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out]), *extra_outputs],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "W2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_mlp_matches_onnxruntime_and_names_layers():
    proto = _mlp()
    model = jaxsens.Model.from_onnx(proto)
    xs = np.random.default_rng(1).normal(size=(7, 4)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": xs})[0]
    np.testing.assert_allclose(model(xs), want, rtol=1e-5, atol=1e-6)
    assert model.input_shape == (4,) and model.output_shape == (3,)
    assert model.layer_names == ("dense", "out")
    inter = model.intermediates(xs)
    assert inter["dense"].shape == (7, 8)
    np.testing.assert_allclose(inter["out"], want, rtol=1e-5, atol=1e-6)


def test_weights_are_parameters_not_constants():
    model = jaxsens.Model.from_onnx(_mlp())
    assert set(model.params) == {"W1", "b1", "W2"}
    jaxpr = jax.make_jaxpr(model.apply)(model.params, np.zeros(4, np.float32))
    assert all(np.size(c) < 4 for c in jaxpr.consts), "weights were baked into the trace"
    other = model.with_params(jax.tree.map(lambda p: 2 * p, model.params))
    xs = np.ones((2, 4), np.float32)
    assert not np.allclose(model(xs), other(xs))


def test_two_versions_of_one_architecture_share_compiled_code():
    traces = []

    @jax.jit
    def f(model, xs):
        traces.append(1)
        return jax.vmap(model.apply, (None, 0))(model.params, xs)

    a = jaxsens.Model.from_onnx(_mlp(seed=0))
    b = jaxsens.Model.from_onnx(_mlp(seed=1))  # "next week's" weights, same structure
    xs = np.ones((3, 4), np.float32)
    ya, yb = f(a, xs), f(b, xs)
    assert len(traces) == 1
    assert not np.allclose(ya, yb)


def test_side_branch_with_unsupported_op_is_pruned():
    # a label branch (e.g. scikit-learn's ArgMax -> ZipMap) the explained output does not need
    extra = [
        helper.make_node("ZipMap", ["y"], ["labels"], name="zipmap", domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2]),
        helper.make_node("FancyLabel", ["y"], ["fancy"], name="fancy", domain="com.example"),
    ]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("labels", "fancy")]
    proto = _mlp(extra_nodes=extra, extra_outputs=outs)
    proto.opset_import.extend([helper.make_opsetid("ai.onnx.ml", 1), helper.make_opsetid("com.example", 1)])
    model = jaxsens.Model.from_onnx(proto, output="y")
    assert model.output_shape == (3,)
    xs = np.random.default_rng(3).normal(size=(4, 4)).astype(np.float32)
    # a ZipMap output is explained as the probabilities that feed it (the same numbers)
    np.testing.assert_array_equal(jaxsens.Model.from_onnx(proto, output="labels")(xs), model(xs))
    with pytest.raises(UnsupportedOpError, match=r"com.example:FancyLabel.*node 'fancy'.*Supported ops: .*MatMul"):
        jaxsens.Model.from_onnx(proto, output="fancy")


def test_unknown_op_on_the_path_names_op_node_and_supported_list():
    proto = _mlp()
    proto.graph.node[2].op_type = "FancyActivation"
    with pytest.raises(UnsupportedOpError) as e:
        jaxsens.Model.from_onnx(proto)
    msg = str(e.value)
    assert "FancyActivation" in msg and "dense/Tanh" in msg and "Gemm" in msg


def test_duplicate_registration_is_an_error():
    assert "MatMul" in supported_ops()
    with pytest.raises(ValueError, match="already registered"):
        register_op("MatMul")(lambda ctx, a, b: a @ b)


def test_unsupported_attribute_is_reported():
    proto = _mlp()
    proto.graph.node[3].attribute.append(helper.make_attribute("exotic", 1))
    with pytest.raises(UnsupportedOpError, match="exotic"):
        jaxsens.Model.from_onnx(proto)


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    good = tmp_path / "m.onnx"
    onnx.save(_mlp(), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 3])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a model" * 10)
    for path in (truncated, garbage):
        with pytest.raises(ModelFileError, match=path.name):
            jaxsens.load_model(path)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        jaxsens.load_model(empty)
    with pytest.raises(ModelFileNotFoundError, match="missing.onnx"):
        jaxsens.load_model(tmp_path / "missing.onnx")


def _save_external(proto, folder, location):
    onnx.save(proto, folder / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=0)


def test_external_data_inside_folder_loads(tmp_path):
    proto = _mlp()
    _save_external(proto, tmp_path, "weights.bin")
    model = jaxsens.load_model(tmp_path / "m.onnx")
    xs = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(model(xs), jaxsens.Model.from_onnx(_mlp())(xs), rtol=1e-6)


def test_external_data_outside_folder_is_refused(tmp_path):
    inner = tmp_path / "model"
    inner.mkdir()
    _save_external(_mlp(), inner, "weights.bin")
    os.rename(inner / "weights.bin", tmp_path / "secret.bin")
    proto = onnx.load(inner / "m.onnx", load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    onnx.save(proto, inner / "m.onnx")
    with pytest.raises(UnsafeModelError, match="outside the model's folder"):
        jaxsens.load_model(inner / "m.onnx")


def test_wrong_input_shape_says_expected_vs_got():
    model = jaxsens.Model.from_onnx(_mlp())
    with pytest.raises(ValueError, match=r"shape \(5, 3\).*expects \[n_samples, 4\]"):
        model(np.zeros((5, 3), np.float32))


def test_multi_input_model_tuple_and_dict():
    nodes = [
        helper.make_node("Concat", ["a", "b"], ["ab"], axis=1, name="concat"),
        helper.make_node("MatMul", ["ab", "W"], ["y"], name="dense/MatMul"),
    ]
    w = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    model = jaxsens.Model.from_onnx(proto)
    a = np.ones((4, 2), np.float32)
    b = np.full((4, 3), 2.0, np.float32)
    want = np.concatenate([a, b], 1) @ w
    np.testing.assert_allclose(model((a, b)), want, rtol=1e-6)
    np.testing.assert_allclose(model({"a": a, "b": b}), want, rtol=1e-6)
    assert model.input_shape == ((2,), (3,))


def test_bundled_default_example_matches_onnxruntime():
    model = jaxsens.load_model(examples.default_model_path())
    xs = np.load(examples.default_data_path())[:64]
    sess = ort.InferenceSession(examples.default_model_path())
    want = sess.run(None, {"input": xs})[0]
    np.testing.assert_allclose(model(xs), want, rtol=1e-5, atol=1e-6)
    assert model.feature_names[:3] == ("f00", "f01", "f02")
    assert model.output_names == ("class_0", "class_1")
    assert model.layer_names == ("dense_0", "dense_1", "dense_2", "output")


def test_conversion_error_for_bad_graph_mentions_node():
    proto = _mlp()
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((5, 8), np.float32), "W1"))
    with pytest.raises(ConversionError, match="dense/MatMul"):
        jaxsens.Model.from_onnx(proto)


def test_graph_that_mixes_the_batch_axis_is_refused():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="flatten_all")]
    graph = helper.make_graph(
        nodes, "mix",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(np.array([-1, 1], np.int64), "shape")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    with pytest.raises(ValueError, match="does not keep samples on its first axis"):
        jaxsens.Model.from_onnx(proto)


def test_sklearn_classifier_with_zipmap_explains_its_probabilities():
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)
    clf = MLPClassifier((8,), max_iter=50, random_state=0).fit(x, y)
    model = jaxsens.Model.from_onnx(to_onnx(clf, x[:1], target_opset=17))  # ZipMap on: outputs are label + maps
    assert model.output_shape == (3,)
    np.testing.assert_allclose(model(x), clf.predict_proba(x), rtol=1e-5, atol=1e-6)


def test_batch_prediction_pads_ragged_chunks_instead_of_recompiling():
    from jaxsens._model import _predict

    model = jaxsens.Model.from_onnx(_mlp())
    xs = np.random.default_rng(2).normal(size=(1000, 4)).astype(np.float32)
    want = np.concatenate([model(xs[i : i + 1]) for i in range(5)])
    before = _predict._cache_size()
    outs = [model(xs[:n], batch_size=256) for n in (1000, 999, 700, 513)]  # ragged tails of one chunk size
    assert _predict._cache_size() - before == 1
    for n, out in zip((1000, 999, 700, 513), outs):
        assert out.shape == (n, 3)
        np.testing.assert_allclose(out, model(xs[:n], batch_size=8192), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outs[0][:5], want, rtol=1e-6, atol=1e-7)
