"""Graphs equal up to names (a weekly retrain saved with Keras' per-session layer numbering) are one architecture:
converters.onnx_to_jax.canonical, and compare() running such versions in one compiled kernel."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from _tol import assert_f32_close

import jaxsens
from converters.onnx_to_jax.canonical import canonical_form, param_mapping
from jaxsens import _compare


def _mlp(seed: int, hidden: int = 16, activation: str = "relu"):
    """A fresh Keras model: built in one session, its layers get new numbers every time (dense_4, dense_5, ...)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(hidden, activation=activation, bias_initializer="random_normal"),
            keras.layers.Dense(3, activation="softmax", bias_initializer="random_normal"),
        ]
    )
    return model, jaxsens.load_model(model)


@pytest.fixture(scope="module")
def weeks():
    return [_mlp(seed) for seed in (1, 2)]


def test_same_architecture_under_other_names_has_one_canonical_form(weeks):
    (_, a), (_, b) = weeks
    assert a.layer_names != b.layer_names and a.apply != b.apply  # Keras numbered the second model's layers anew
    fa, fb = canonical_form(a.apply), canonical_form(b.apply)
    assert fa is not None and fa[0] == fb[0]
    mapping = param_mapping(a.apply, b.apply)
    assert sorted(mapping) == sorted(a.params) and sorted(mapping.values()) == sorted(b.params)
    for t, s in mapping.items():
        assert a.params[t].shape == b.params[s].shape


def test_rebased_weights_reproduce_the_other_model(weeks):
    """b's weights under a's graph give b's predictions (Keras predict is the oracle)."""
    (_, a), (kb, b) = weeks
    mapping = param_mapping(a.apply, b.apply)
    moved = a.with_params({**a.params, **{t: b.params[s] for t, s in mapping.items()}})
    xs = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    want = kb.predict(xs, verbose=0)
    assert_f32_close(moved(xs), want, n_terms=16)
    assert not np.allclose(a(xs), want)  # and the check can fail: a's own weights give other numbers


@pytest.mark.parametrize("other", [{"hidden": 17}, {"activation": "tanh"}])
def test_another_architecture_has_another_form(weeks, other):
    (_, a), _ = weeks
    _, c = _mlp(3, **other)
    assert canonical_form(c.apply)[0] != canonical_form(a.apply)[0]
    assert param_mapping(a.apply, c.apply) is None


def test_compare_runs_renamed_versions_in_one_compiled_kernel(weeks):
    (_, a), (_, b) = weeks
    xs = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)
    before = _compare._compare_kernel._cache_size()
    comp = jaxsens.compare([a, b], xs, names=["w1", "w2"])
    assert _compare._compare_kernel._cache_size() - before <= 1  # one kernel for both versions (0: cached)
    assert comp.noise == "rows, paired" and comp.output_names == a.output_names
    assert any("same graph as the reference" in n for n in comp.notes)
    alone = [jaxsens.jacobian_importance(m, xs).importance for m in (a, b)]
    # means over 300 rows of per-row |J| (each a 16-term chain product), computed in other chunk shapes
    assert_f32_close(comp.importance, np.stack(alone), n_terms=300 + 16)
    assert_f32_close(comp.delta[0], alone[1] - alone[0], n_terms=300 + 16, magnitude=np.max(alone))


def test_renamed_feature_names_are_not_rebased_silently(weeks):
    """Versions whose feature names differ are refused, even when their graphs match up to names."""
    (_, a), (kb, _) = weeks
    b = jaxsens.load_model(kb, feature_names=[f"g{i}" for i in range(6)])
    xs = np.zeros((10, 6), np.float32)
    with pytest.raises(jaxsens.ArgumentError, match="feature names"):
        jaxsens.compare([a, b], xs)
