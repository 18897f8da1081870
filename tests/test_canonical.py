"""Graphs equal up to names (a weekly retrain saved with Keras' per-session layer numbering) are one architecture:
converters.onnx_to_jax.canonical, and compare() running such versions in one compiled kernel.

The second version is the bundled ONNX model with every tensor, initializer and node renamed and new weights: the
renaming is what Keras + tf2onnx do to a retrain saved from another session, without depending on this process's
Keras state (models built earlier in a process change TensorFlow's name scopes, and with them the graph)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _tol import assert_f32_close

import jaxsens
from converters.onnx_to_jax.canonical import canonical_form, param_mapping
from jaxsens import _compare


def _renamed(proto: onnx.ModelProto, prefix: str, seed: int) -> onnx.ModelProto:
    """``proto`` with every value and node renamed (``prefix`` + old name) and its float weights redrawn."""
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    g = p.graph
    new = lambda n: prefix + n if n else n
    for vi in [*g.input, *g.output, *g.value_info]:
        vi.name = new(vi.name)
    rng = np.random.default_rng(seed)
    for t in g.initializer:
        t.name = new(t.name)
        arr = onnx.numpy_helper.to_array(t)
        if arr.dtype == np.float32:
            t.CopyFrom(onnx.numpy_helper.from_array((arr * rng.uniform(0.5, 1.5, arr.shape)).astype(np.float32), t.name))
    for node in g.node:
        node.name = new(node.name)
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
    del p.metadata_props[:]
    return p


@pytest.fixture(scope="module")
def weeks():
    proto = onnx.load(jaxsens.examples.default_model_path())
    a = jaxsens.Model.from_onnx(proto)
    other = _renamed(proto, "week2/", seed=1)
    return a, jaxsens.Model.from_onnx(other, feature_names=a.feature_names, output_names=a.output_names), other


def test_same_architecture_under_other_names_has_one_canonical_form(weeks):
    a, b, _ = weeks
    assert a.apply != b.apply  # other names: another fingerprint
    fa, fb = canonical_form(a.apply), canonical_form(b.apply)
    assert fa is not None and fa[0] == fb[0]
    mapping = param_mapping(a.apply, b.apply)
    assert sorted(mapping) == sorted(a.params) and sorted(mapping.values()) == sorted(b.params)
    assert all(s == "week2/" + t for t, s in mapping.items())  # each weight matched to its renamed twin


def test_rebased_weights_reproduce_the_other_model(weeks):
    """b's weights under a's graph give b's predictions (onnxruntime on b's file is the oracle)."""
    import onnxruntime as ort

    a, b, other = weeks
    mapping = param_mapping(a.apply, b.apply)
    moved = a.with_params({**a.params, **{t: b.params[s] for t, s in mapping.items()}})
    xs = np.random.default_rng(0).normal(size=(50, a.n_features)).astype(np.float32)
    sess = ort.InferenceSession(other.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run([b.apply.output], {sess.get_inputs()[0].name: xs})[0]
    assert_f32_close(moved(xs), want, n_terms=a.n_features + 64 * 3)
    assert not np.allclose(a(xs), want, atol=1e-4)  # and the check can fail: a's own weights give other numbers


def test_another_architecture_has_another_form(weeks):
    a, _, other = weeks
    changed = onnx.ModelProto()
    changed.CopyFrom(other)
    relu = next(n for n in changed.graph.node if n.op_type == "Relu")
    relu.op_type = "Tanh"
    c = jaxsens.Model.from_onnx(changed)
    assert canonical_form(c.apply)[0] != canonical_form(a.apply)[0]
    assert param_mapping(a.apply, c.apply) is None


def test_compare_runs_renamed_versions_in_one_compiled_kernel(weeks):
    a, b, _ = weeks
    xs = np.random.default_rng(1).normal(size=(300, a.n_features)).astype(np.float32)
    before = _compare._compare_kernel._cache_size()
    comp = jaxsens.compare([a, b], xs, names=["w1", "w2"])
    assert _compare._compare_kernel._cache_size() - before <= 1  # one kernel for both versions (0: cached)
    assert comp.noise == "rows, paired" and comp.output_names == a.output_names
    assert any("same graph as the reference" in n for n in comp.notes)
    alone = [jaxsens.jacobian_importance(m, xs).importance for m in (a, b)]
    # means over 300 rows of per-row |J| computed in other chunk shapes
    assert_f32_close(comp.importance, np.stack(alone), n_terms=300 + 64 * 3)
    assert_f32_close(comp.delta[0], alone[1] - alone[0], n_terms=300 + 64 * 3, magnitude=np.max(alone))


def test_renamed_feature_names_are_not_rebased_silently(weeks):
    """Versions whose feature names differ are refused, even when their graphs match up to names."""
    a, _, other = weeks
    b = jaxsens.Model.from_onnx(other, feature_names=[f"g{i}" for i in range(a.n_features)], output_names=a.output_names)
    with pytest.raises(jaxsens.ArgumentError, match="feature names"):
        jaxsens.compare([a, b], np.zeros((10, a.n_features), np.float32))
