"""The LSTM's hand-written pull-back (``reverse_only`` traces, ``converters/onnx_to_jax/ops/rnn.py``
``_lstm_scan_reverse_only``) against ``jax.vjp`` of the plain lowering, onnxruntime and TensorFlow.

Every differentiable input of the ONNX node (``X``, ``W``, ``R``, ``B``, ``initial_h``, ``initial_c``, ``P``) is a
graph input here, so the pull-back's cotangent for each is compared, for every attribute the custom path takes:
directions, ``sequence_lens``, initial states, peepholes, ``clip``, ``input_forget``, ``layout`` and activations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tol import assert_f32_close
from onnx import TensorProto, helper

from converters.errors import ConversionError
from converters.onnx_to_jax.graph import OnnxFunction

ort = pytest.importorskip("onnxruntime")

T, N, I, H = 6, 5, 4, 3  # time steps, batch (> 1: the [H, N] layout the custom path runs in), input, hidden
FLOAT = TensorProto.FLOAT
OUTPUTS = ("Y", "Y_h", "Y_c")
# float32 roundings along one cotangent: per step the gate cotangents sum 4H products into dh, the gates I + H
# products, up to ~12 elementwise products and activations; over T steps, added up over both sides compared
CHAIN = 2 * T * (4 * H + I + H + 12)

# direction, layout, attrs, bias, sequence_lens, initial_h, initial_c, peepholes
CASES = {
    "forward": ("forward", 0, {}, True, None, False, False, False),
    "reverse-states-peep": ("reverse", 0, {}, True, None, True, True, True),
    "bidir-layout1": ("bidirectional", 1, {}, True, None, True, True, False),
    "bidir-clip-forget-seq": (
        "bidirectional", 0, {"clip": 0.7, "input_forget": 1}, True, [6, 2, 0, 4, 1], True, True, True,
    ),
    "relu-seq-layout1": (  # Keras's LSTM(activation="relu"), as tf2onnx writes it
        "forward", 1, {"activations": ["Sigmoid", "Relu", "Relu"]}, True, [3, 6, 1, 6, 5], True, False, False,
    ),
    "bidir-tanh-hardsigmoid-nobias": (
        "bidirectional", 0,
        {"activations": ["HardSigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Tanh"], "activation_alpha": [0.3],
         "activation_beta": [0.4]},
        False, None, False, True, True,
    ),
}


def _case(direction, layout, attrs, bias, seq, h0, c0, peep, *, seed=0):
    """The one-node model with every differentiable input a graph input, its float feeds and ``sequence_lens``."""
    D = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(seed)

    def arr(*shape, scale=0.5):
        return (scale * rng.normal(size=shape)).astype(np.float32)

    state_shape = (N, D, H) if layout == 1 else (D, N, H)
    feeds = {"X": arr(*((N, T, I) if layout == 1 else (T, N, I)), scale=1.0), "W": arr(D, 4 * H, I),
             "R": arr(D, 4 * H, H)}
    if bias:
        feeds["B"] = arr(D, 8 * H)
    if h0:
        feeds["h0"] = arr(*state_shape, scale=1.0)
    if c0:
        feeds["c0"] = arr(*state_shape, scale=1.0)
    if peep:
        feeds["P"] = arr(D, 3 * H)
    inputs = [helper.make_tensor_value_info(k, FLOAT, v.shape) for k, v in feeds.items()]
    lens = None
    if seq is not None:
        lens = np.asarray(seq, np.int32)
        inputs.append(helper.make_tensor_value_info("S", TensorProto.INT32, lens.shape))
    names = ["X", "W", "R", "B" if bias else "", "S" if seq is not None else "", "h0" if h0 else "",
             "c0" if c0 else "", "P" if peep else ""]
    while names[-1] == "":
        names.pop()
    node = helper.make_node("LSTM", names, list(OUTPUTS), direction=direction, hidden_size=H, layout=layout, **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info(o, FLOAT, None) for o in OUTPUTS])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=9)
    return proto, feeds, lens


def _apply(fn, lens):
    """``feeds -> (Y, Y_h, Y_c)`` through ``fn``, ``sequence_lens`` fixed."""
    extra = {} if lens is None else {"S": jnp.asarray(lens)}
    return lambda feeds: tuple(fn.run({}, {**feeds, **extra}, list(OUTPUTS))[o] for o in OUTPUTS)


def _primitive_names(jaxpr) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for p in eqn.params.values():
            for sub in p if isinstance(p, list | tuple) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    names |= _primitive_names(inner)
    return names


@pytest.mark.parametrize("case", list(CASES))
def test_lstm_pullback_matches_vjp_of_plain_lowering(case):
    """Under ``reverse_only`` the LSTM's values and its cotangents for X, W, R, B, initial_h, initial_c and P (all
    three outputs receiving random cotangents) equal ``jax.vjp`` of the plain lowering; the values equal
    onnxruntime's (layout 0: onnxruntime's CPU kernel runs layout 0 only)."""
    proto, feeds, lens = _case(*CASES[case], seed=len(case))
    fn = OnnxFunction(proto)
    rev = fn.with_reverse_only()
    feeds_j = {k: jnp.asarray(v) for k, v in feeds.items()}
    shapes = jax.eval_shape(_apply(fn, lens), feeds_j)
    rng = np.random.default_rng(1)
    cts = tuple(jnp.asarray(rng.normal(size=s.shape).astype(np.float32)) for s in shapes)

    @jax.jit
    def pullbacks(feeds, cts):
        out = []
        for f in (rev, fn):
            values, pull = jax.vjp(_apply(f, lens), feeds)
            out.append((values, pull(cts)[0]))
        return out

    (values, grads), (values0, grads0) = pullbacks(feeds_j, cts)
    # the traced programs differ: the reverse-only one holds the custom rule, the plain one does not
    assert "custom_vjp_call" in _primitive_names(jax.make_jaxpr(_apply(rev, lens))(feeds_j).jaxpr)
    assert not any("custom_vjp" in n for n in _primitive_names(jax.make_jaxpr(_apply(fn, lens))(feeds_j).jaxpr))
    for name, v, v0 in zip(OUTPUTS, values, values0):
        assert_f32_close(v, v0, n_terms=CHAIN, magnitude=1.0, err_msg=name)
    assert set(grads) == set(feeds)
    # magnitude: the size of what each cotangent sums (|dgates| ~ |ct| * |weights| ~ 1 per step), times the number
    # of summed (step, sample) terms for the weights
    for name in feeds:
        scale = max(1.0, float(np.abs(np.asarray(grads0[name])).max()))
        assert_f32_close(grads[name], grads0[name], n_terms=CHAIN * N, magnitude=scale, err_msg=f"d/d{name}")
        assert np.any(np.asarray(grads[name]) != 0), name  # every input does receive a cotangent
    if CASES[case][1] == 0:
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        ort_feeds = dict(feeds) if lens is None else {**feeds, "S": lens}
        for name, got, want in zip(OUTPUTS, values, sess.run(list(OUTPUTS), ort_feeds)):
            assert_f32_close(got, want, n_terms=CHAIN, magnitude=1.0, err_msg=f"{name} vs onnxruntime")


def test_lstm_pullback_under_vmap_of_cotangents():
    """``vmap`` of the pull-back over several cotangents (how a Jacobian is built) equals one pull-back per
    cotangent of the plain lowering."""
    proto, feeds, lens = _case(*CASES["bidir-clip-forget-seq"], seed=3)
    fn = OnnxFunction(proto)
    feeds_j = {k: jnp.asarray(v) for k, v in feeds.items()}
    rng = np.random.default_rng(4)
    shapes = jax.eval_shape(_apply(fn, lens), feeds_j)
    cts = tuple(jnp.asarray(rng.normal(size=(3, *s.shape)).astype(np.float32)) for s in shapes)

    def pulls(f):
        return jax.jit(lambda feeds, cts: jax.vmap(jax.vjp(_apply(f, lens), feeds)[1])(cts)[0])(feeds_j, cts)

    got, want = pulls(fn.with_reverse_only()), pulls(fn)
    for name in feeds:
        scale = max(1.0, float(np.abs(np.asarray(want[name])).max()))
        assert_f32_close(got[name], want[name], n_terms=CHAIN * N, magnitude=scale, err_msg=f"d/d{name}")


def test_per_sample_call_and_forward_mode_keep_the_plain_lowering():
    """A batch of one (a per-sample call under ``vmap``) keeps the plain lowering; forward mode of a reverse-only
    trace is refused by JAX (custom_vjp functions have no JVP), while the plain trace's ``jax.jvp`` works."""
    proto, feeds, lens = _case(*CASES["reverse-states-peep"], seed=5)
    fn = OnnxFunction(proto)
    rev = fn.with_reverse_only()
    feeds_j = {k: jnp.asarray(v) for k, v in feeds.items()}
    one = {k: (v[:, :1] if k in ("X", "h0", "c0") else v) for k, v in feeds_j.items()}  # layout 0: N on axis 1
    assert "custom_vjp_call" not in _primitive_names(jax.make_jaxpr(_apply(rev, lens))(one).jaxpr)
    tangents = {k: jnp.ones_like(v) for k, v in feeds_j.items()}
    plain = jax.jvp(_apply(fn, lens), (feeds_j,), (tangents,))[1]
    assert all(np.all(np.isfinite(np.asarray(t))) for t in plain)
    with pytest.raises((ConversionError, TypeError), match="custom_vjp"):
        jax.jvp(_apply(rev, lens), (feeds_j,), (tangents,))
