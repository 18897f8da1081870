"""The row-independence check that lets converted graphs run whole batches (``Model.batched``).

Each function below is traced with a batch of 13 rows; the check must accept exactly those whose output row i
depends on input row i alone. Every verdict is also confirmed numerically: the batched result equals running
each row alone iff the function keeps rows independent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import jaxsens
from _onnx_graphs import single_input_model
from converters.onnx_to_jax.rows import rows_independent

W = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)

INDEPENDENT = {
    "dense": lambda x: jnp.tanh(x @ W + 1.0),
    "cumsum_features": lambda x: jnp.cumsum(x, 1),
    "iota_features": lambda x: x + jnp.arange(x.shape[1])[None, :],
    "softmax_features": lambda x: jax.nn.softmax(x, axis=1),
    "scan_over_features": lambda x: jax.lax.scan(lambda c, v: (0.5 * c + v, c), jnp.zeros(x.shape[0]), x.T)[1].T,
    "fixed_loop": lambda x: jax.lax.fori_loop(0, 3, lambda i, v: 2 * v + jnp.sin(v), x),
    "reshape_features": lambda x: x.reshape(x.shape[0], 2, 2).sum(-1),
    "take_features": lambda x: jnp.take(x, jnp.array([2, 0]), axis=1),
    "sort_features": lambda x: jnp.sort(x, 1),
    "rowwise_dot": lambda x: jnp.einsum("bi,bi->b", x, x),
    "stack_features": lambda x: jnp.stack([x, 2 * x], axis=1).sum(1),
    "zero_state_recurrence": lambda x: jax.lax.scan(
        lambda h, v: (jnp.tanh(h @ W[:3, :3] + v), h), jnp.zeros((x.shape[0], 3)), jnp.swapaxes(
            x[:, :3][:, None, :].repeat(2, 1), 0, 1))[0],
}
MIXING = {
    "center_over_batch": (lambda x: x - x.mean(0), "reduces over the batch axis"),
    "cumsum_batch": (lambda x: jnp.cumsum(x, 0), "accumulates along the batch axis"),
    "iota_batch": (lambda x: x + jnp.arange(x.shape[0])[:, None], "varies along it"),
    "softmax_batch": (lambda x: jax.nn.softmax(x, axis=0), "reduces over the batch axis"),
    "scan_over_rows": (lambda x: jax.lax.scan(lambda c, v: (0.5 * c + v, c), jnp.zeros(4), x)[1], "scans over"),
    "loop_steered_by_batch": (
        lambda x: jax.lax.while_loop(lambda v: v.sum() < 1e3, lambda v: 2 * v + 1, x),
        "reduces over the batch axis",
    ),
    "flatten_batch": (lambda x: x.reshape(-1, 1)[: x.shape[0]], "merging or splitting the batch axis"),
    "flip_batch": (lambda x: x[::-1], "reverses the batch axis"),
    "sort_batch": (lambda x: jnp.sort(x, 0), "sorts along or across the batch axis"),
    "gram": (lambda x: jnp.pad(x @ x.T, ((0, 0), (0, 4)))[:, :4], "contracts or crosses the batch axis"),
    "shifted_rows": (lambda x: jnp.roll(x, 1, axis=0), "batch axis"),
    "loop_from_row_index": (
        lambda x: jax.lax.fori_loop(
            0, 2, lambda i, c: c + x, jnp.broadcast_to(jnp.arange(13.0)[:, None], (13, 4))[: x.shape[0]]
        ),
        "varies along the batch axis",
    ),
}


def _verdict(fn):
    closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct((13, 4), jnp.float32))
    return rows_independent(closed, [0])


def _rows_mix_numerically(fn) -> bool:
    """The batched result differs from running each row as a batch of one."""
    x = np.random.default_rng(1).normal(size=(13, 4)).astype(np.float32)
    whole = np.asarray(fn(jnp.asarray(x)))
    one_by_one = np.concatenate([np.asarray(fn(jnp.asarray(x[i : i + 1]))) for i in range(13)])
    return whole.shape != one_by_one.shape or not np.allclose(whole, one_by_one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", INDEPENDENT)
def test_independent_rows_are_accepted(name):
    ok, reason = _verdict(INDEPENDENT[name])
    assert ok, reason
    assert not _rows_mix_numerically(INDEPENDENT[name])


@pytest.mark.parametrize("name", MIXING)
def test_mixing_rows_are_refused_with_the_reason(name):
    fn, why = MIXING[name]
    ok, reason = _verdict(fn)
    assert not ok
    assert why in reason
    assert _rows_mix_numerically(fn)


def _graph(nodes, inits=()):
    return single_input_model(nodes, inits, n_in=4, n_out=4)


def test_a_graph_that_normalises_over_the_batch_runs_per_sample():
    """``x - ReduceMean(x, axis 0)``: per sample that is 0 (each row is its own batch of one); batching the whole
    data set through the graph would subtract the data-set mean. The model must keep the per-sample meaning."""
    proto = _graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1), helper.make_node("Sub", ["x", "m"], ["y"])]
    )
    onnx.checker.check_model(proto)
    model = jaxsens.Model.from_onnx(proto)
    assert not model.batched
    xs = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    np.testing.assert_array_equal(model(xs), np.zeros_like(xs))


def test_a_row_wise_graph_runs_batched_and_matches_per_sample():
    w = numpy_helper.from_array(np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32), "w")
    proto = _graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])], [w])
    model = jaxsens.Model.from_onnx(proto)
    assert model.batched
    xs = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    per_sample = jax.vmap(model.apply, in_axes=(None, 0))(model.params, xs)
    np.testing.assert_allclose(model(xs), per_sample, rtol=1e-6, atol=1e-6)
