"""Recurrent (LSTM / GRU / RNN) and control-flow (Loop / Scan / If) ops against independent oracles.

Oracles: onnxruntime (every attribute of the recurrent ops; it runs layout 0 only, so layout-1 cases are checked
against its layout-0 twin), ``onnx.reference.ReferenceEvaluator`` (default activations, Loop, If), PyTorch (exported
``nn.LSTM`` / ``nn.GRU``, ``torch.func.jacrev`` in float64) and closed forms.
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from _tol import assert_f32_close
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from converters.errors import ConversionError
from converters.onnx_to_jax.graph import OnnxFunction
from jaxsens import Model

ort = pytest.importorskip("onnxruntime")

T, N, I, H = 5, 3, 4, 6  # time steps, batch, input size, hidden size
# float32 roundings along one output of a recurrent layer (tests/_tol.py): per step the gates sum I + H products,
# add two biases and go through up to ~8 activations, products and the state update
RNN_CHAIN = T * (I + H + 2 + 8)
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=14):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _vi(name, dtype=FLOAT, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def _run(proto, feeds, outputs):
    """Our converter on batched feeds, under jit (feeds are traced)."""
    fn = OnnxFunction(proto)
    params = {k: jnp.asarray(v) for k, v in fn.params.items()}
    out = jax.jit(lambda p, f: fn.run(p, f, outputs))(params, feeds)
    return [np.asarray(out[o]) for o in outputs]


# ------------------------------------------------------------------------------------------- LSTM / GRU / RNN
def _recurrent_case(op, *, direction, layout, attrs, bias, seq, dynamic_seq, h0, c0, peep, seed):
    """Layout-``layout`` model + feeds, and the layout-0 twin for onnxruntime; returns (ours, twin, outputs)."""
    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    rng = np.random.default_rng(seed)

    def arr(*shape, scale=0.5):
        return (scale * rng.normal(size=shape)).astype(np.float32)

    x0 = arr(T, N, I, scale=1.0)
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    weights = {"W": arr(D, G * H, I), "R": arr(D, G * H, H)}
    if bias:
        weights["B"] = arr(D, 2 * G * H)
    states = {}
    if h0:
        states["h0"] = arr(D, N, H, scale=1.0)
    if c0:
        states["c0"] = arr(D, N, H, scale=1.0)
    if peep:
        weights["P"] = arr(D, 3 * H)
    lens = None if seq is None else np.asarray(seq, np.int32)

    def build(lay):
        swap = (lambda a: a.swapaxes(0, 1)) if lay == 1 else (lambda a: a)
        feeds = {"X": swap(x0)}
        inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
        inits += [numpy_helper.from_array(np.ascontiguousarray(swap(v)), k) for k, v in states.items()]
        graph_inputs = [_vi("X", FLOAT, feeds["X"].shape)]
        if lens is not None:
            if dynamic_seq:
                feeds["S"] = lens
                graph_inputs.append(_vi("S", TensorProto.INT32, lens.shape))
            else:
                inits.append(numpy_helper.from_array(lens, "S"))
        names = ["X", "W", "R", "B" if bias else "", "S" if lens is not None else "", "h0" if h0 else ""]
        if op == "LSTM":
            names += ["c0" if c0 else "", "P" if peep else ""]
        while names[-1] == "":
            names.pop()
        node = helper.make_node(op, names, outputs, direction=direction, hidden_size=H, layout=lay, **attrs)
        proto = _model([node], graph_inputs, [_vi(o) for o in outputs], inits)
        return proto, feeds

    return build(layout), build(0), outputs


def _to_layout(outs, layout):
    if layout == 0:
        return outs
    return [outs[0].transpose(2, 0, 1, 3)] + [o.swapaxes(0, 1) for o in outs[1:]]


# op, direction, layout, attrs, bias, seq, dynamic seq, initial_h, initial_c, peepholes
RECURRENT_CASES = [
    ("LSTM", "forward", 0, {}, True, None, False, False, False, False),
    ("LSTM", "reverse", 0, {}, True, None, False, True, True, True),
    ("LSTM", "bidirectional", 1, {}, True, None, False, True, True, False),
    ("LSTM", "bidirectional", 0, {"clip": 0.7, "input_forget": 1}, True, [5, 2, 0], False, True, True, True),
    (
        "LSTM",
        "reverse",
        0,
        {
            "activations": ["HardSigmoid", "Elu", "ScaledTanh"],
            "activation_alpha": [0.3, 0.9, 1.2],
            "activation_beta": [0.4, 0.8],
        },
        False,
        [3, 5, 1],
        True,
        False,
        False,
        True,
    ),
    # Keras 2's hard_sigmoid as tf2onnx writes it: HardSigmoid with the default alpha 0.2, beta 0.5.
    (
        "LSTM",
        "forward",
        1,
        {"activations": ["HardSigmoid", "Tanh", "Tanh"]},
        True,
        None,
        False,
        False,
        False,
        False,
    ),
    (
        "LSTM",
        "bidirectional",
        1,
        {"activations": ["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Softsign", "Relu"]},
        True,
        [4, 5, 2],
        True,
        True,
        False,
        False,
    ),
    ("GRU", "forward", 0, {}, True, None, False, False, False, False),
    ("GRU", "bidirectional", 0, {"linear_before_reset": 1}, True, [5, 2, 4], False, True, False, False),
    (
        "GRU",
        "reverse",
        1,
        {"activations": ["LeakyRelu", "Softsign"], "activation_alpha": [0.1], "clip": 1.5},
        True,
        None,
        False,
        False,
        False,
        False,
    ),
    (
        "GRU",
        "bidirectional",
        1,
        {"linear_before_reset": 1, "activations": ["Sigmoid", "Softplus", "HardSigmoid", "Tanh"]},
        False,
        None,
        False,
        False,
        False,
        False,
    ),
    ("RNN", "forward", 0, {}, True, None, False, False, False, False),
    (
        "RNN",
        "bidirectional",
        0,
        {
            "activations": ["Affine", "ThresholdedRelu"],
            "activation_alpha": [0.5, 0.2],
            "activation_beta": [0.1],
        },
        True,
        [1, 2, 3],
        False,
        True,
        False,
        False,
    ),
    (
        "RNN",
        "reverse",
        1,
        {"activations": ["Relu"], "clip": 0.9},
        False,
        [2, 5, 3],
        True,
        False,
        False,
        False,
    ),
]


def _case_id(case):
    op, direction, layout, attrs, bias, seq, dyn, h0, c0, peep = case
    parts = [op, direction, f"layout{layout}"] + [
        f"{k}={v}" for k, v in attrs.items() if k != "activation_beta"
    ]
    parts += [n for n, f in [("B", bias), ("h0", h0), ("c0", c0), ("P", peep)] if f]
    if seq is not None:
        parts.append("dynamic_lens" if dyn else "lens")
    return "-".join(str(p) for p in parts).replace(" ", "")


@pytest.mark.parametrize("path", ["unrolled", "scan"])
@pytest.mark.parametrize("case", RECURRENT_CASES, ids=_case_id)
def test_recurrent_matches_onnxruntime(case, path, monkeypatch):
    """Every case on both code paths: short sequences are unrolled statically, long ones run in lax.scan."""
    from converters.onnx_to_jax.ops import rnn

    monkeypatch.setattr(rnn, "UNROLL_MAX_STEPS", T if path == "unrolled" else 0)
    op, direction, layout, attrs, bias, seq, dyn, h0, c0, peep = case
    (proto, feeds), (twin, twin_feeds), outputs = _recurrent_case(
        op,
        direction=direction,
        layout=layout,
        attrs=attrs,
        bias=bias,
        seq=seq,
        dynamic_seq=dyn,
        h0=h0,
        c0=c0,
        peep=peep,
        seed=len(_case_id(case)),
    )
    expected = _to_layout(ort.InferenceSession(twin.SerializeToString()).run(outputs, twin_feeds), layout)
    got = _run(proto, feeds, outputs)
    for name, g, e in zip(outputs, got, expected):
        assert g.shape == e.shape, name
        assert_f32_close(g, e, n_terms=2 * RNN_CHAIN, err_msg=name)
    plain = not (set(attrs) - {"linear_before_reset"}) or attrs.get("activations") == [
        "HardSigmoid",
        "Tanh",
        "Tanh",
    ]
    if plain and seq is None and "activations" not in attrs:
        # The reference evaluator ignores activations, clip and sequence_lens; it runs layout 1 itself.
        reference = ReferenceEvaluator(proto).run(outputs, feeds)
        for name, g, e in zip(outputs, got, reference):
            assert_f32_close(g, e, n_terms=2 * RNN_CHAIN, err_msg=f"{name} vs ReferenceEvaluator")
    if layout == 1 and not (h0 or c0 or seq is not None):
        # Per sample (the batch axis added by vmap) under jit, as jaxsens runs models.
        model = Model.from_onnx(proto)
        assert_f32_close(model(feeds["X"]), expected[0], n_terms=2 * RNN_CHAIN)


def test_hard_sigmoid_is_keras2():
    """HardSigmoid without alpha / beta is Keras 2's hard_sigmoid, clip(0.2 x + 0.5, 0, 1), not Keras 3's x/6+0.5."""
    from converters.onnx_to_jax.ops.rnn import ACTIVATIONS

    fn, _, _, alpha, beta = ACTIVATIONS["hardsigmoid"]
    x = jnp.linspace(-4.0, 4.0, 33, dtype=jnp.float32)
    expected = np.clip(np.float32(0.2) * np.asarray(x) + np.float32(0.5), 0, 1)
    np.testing.assert_array_equal(fn(x, alpha, beta), expected)


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"activations": ["Sigmoid", "Tanh"]}, "expected 3 per direction"),
        ({"activations": ["Sigmoid", "Swish", "Tanh"]}, "'Swish' is not an ONNX recurrent activation"),
        ({"direction": "sideways"}, "direction='sideways'"),
        ({"hidden_size": 7}, "hidden_size=7 does not match"),
    ],
)
def test_recurrent_errors_name_the_problem(attrs, message):
    rng = np.random.default_rng(0)
    kwargs = {"direction": "forward", "hidden_size": H, **attrs}
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], **kwargs)
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 4 * H, I)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(1, 4 * H, H)).astype(np.float32), "R"),
    ]
    proto = _model([node], [_vi("X", FLOAT, (T, N, I))], [_vi("Y")], inits)
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace("[", r"\[")):
        _run(proto, {"X": np.zeros((T, N, I), np.float32)}, ["Y"])


# ------------------------------------------------------------------------------------------------- PyTorch
def _torch_export(module, x):
    torch = pytest.importorskip("torch")

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = module

        def forward(self, x):
            return self.rnn(x)[0]

    head = Head().eval()
    buf = io.BytesIO()
    torch.onnx.export(
        head,
        torch.from_numpy(x),
        buf,
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        opset_version=17,
    )
    return head, onnx.load_from_string(buf.getvalue())


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torch_rnn_two_layers_bidirectional(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    x = np.random.default_rng(1).normal(size=(6, 7, 3)).astype(np.float32)
    head, proto = _torch_export(module, x[:2])
    assert kind in {n.op_type for n in proto.graph.node}
    model = Model.from_onnx(proto)
    with torch.no_grad():
        expected = head(torch.from_numpy(x)).numpy()
    chain = 7 * (3 + 4 + 10) + 7 * (8 + 4 + 10)  # 7 steps of layer 1 (fan-ins 3 + 4), layer 2 (8 + 4)
    assert_f32_close(model(x), expected, n_terms=2 * chain)


def test_torch_lstm_jacobian_matches_torch_float64():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    x = np.random.default_rng(2).normal(size=(3, 6, 3)).astype(np.float32)
    head, proto = _torch_export(module, x[:2])
    model = Model.from_onnx(proto)
    jac = jax.jit(jax.vmap(jax.jacrev(model.apply, argnums=1), in_axes=(None, 0)))(
        model.params, jnp.asarray(x)
    )
    head64 = head.double()
    expected = np.stack(
        [
            torch.autograd.functional.jacobian(
                lambda s: head64(s[None])[0], torch.from_numpy(s).double()
            ).numpy()
            for s in x
        ]
    )
    assert jac.shape == expected.shape == (3, 6, 8, 6, 3)
    chain = 6 * (3 + 4 + 10) + 6 * (8 + 4 + 10)  # 6 steps of both layers; jacrev retraces them backwards
    assert_f32_close(np.asarray(jac), expected, n_terms=2 * chain)


# ---------------------------------------------------------------------------------------------------- Loop
def _scalar(name, value, dtype):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def test_loop_cumulative_sum_fixed_trip_count():
    """M = T, no condition: acc += X[i]; the scan output is the running sum (closed form: cumsum)."""
    body = helper.make_graph(
        [
            helper.make_node("Gather", ["X", "i"], ["x_i"], axis=0),
            helper.make_node("Add", ["acc", "x_i"], ["acc_out"]),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
            helper.make_node("Identity", ["acc_out"], ["running"]),
        ],
        "body",
        [_vi("i", TensorProto.INT64, []), _vi("cond", TensorProto.BOOL, []), _vi("acc", FLOAT, [I])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("acc_out", FLOAT, [I]), _vi("running", FLOAT, [I])],
    )
    node = helper.make_node("Loop", ["M", "", "acc0"], ["total", "sums"], body=body)
    inits = [_scalar("M", T, np.int64), numpy_helper.from_array(np.zeros(I, np.float32), "acc0")]
    proto = _model([node], [_vi("X", FLOAT, [T, I])], [_vi("total"), _vi("sums")], inits, opset=16)
    x = np.random.default_rng(0).normal(size=(T, I)).astype(np.float32)
    total, sums = _run(proto, {"X": x}, ["total", "sums"])
    ort_total, ort_sums = ort.InferenceSession(proto.SerializeToString()).run(["total", "sums"], {"X": x})
    size = np.cumsum(np.abs(x), axis=0)  # running sums of T terms
    assert_f32_close(sums, np.cumsum(x, axis=0), n_terms=T, magnitude=size)
    assert_f32_close(sums, ort_sums, n_terms=2 * T, magnitude=size)
    assert_f32_close(total, ort_total, n_terms=2 * T, magnitude=size[-1])


INT64_MAX = int(np.iinfo(np.int64).max)


def _counter_loop_rnn(m_value=INT64_MAX):
    """A tf2onnx-style loop: a counter, `cond = t + 1 < T`, weights threaded through as loop-carried values
    (returned as they came, directly or through an Identity)."""
    body = helper.make_graph(
        [
            helper.make_node("Gather", ["X", "t"], ["x_t"], axis=1),
            helper.make_node("MatMul", ["x_t", "Wb"], ["xw"]),
            helper.make_node("MatMul", ["h", "Ub"], ["hu"]),
            helper.make_node("Add", ["xw", "hu"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["h_out"]),
            helper.make_node("Add", ["t", "one"], ["t_out"]),
            helper.make_node("Less", ["t_out", "T"], ["cond_out"]),
            helper.make_node("Identity", ["h_out"], ["h_seq"]),
            helper.make_node("Identity", ["Ub"], ["Ub_out"]),
        ],
        "body",
        [
            _vi("iter", TensorProto.INT64, []),
            _vi("cond", TensorProto.BOOL, []),
            _vi("t", TensorProto.INT64, []),
            _vi("h", FLOAT, [1, H]),
            _vi("Wb", FLOAT, [I, H]),
            _vi("Ub", FLOAT, [H, H]),
        ],
        [
            _vi("cond_out", TensorProto.BOOL, []),
            _vi("t_out", TensorProto.INT64, []),
            _vi("h_out", FLOAT, [1, H]),
            _vi("Wb", FLOAT, [I, H]),
            _vi("Ub_out", FLOAT, [H, H]),
            _vi("h_seq", FLOAT, [1, H]),
        ],
        [_scalar("one", 1, np.int64), _scalar("T", T, np.int64)],
    )
    node = helper.make_node(
        "Loop", ["M", "cond0", "t0", "h0", "W", "U"], ["t_fin", "h_fin", "W_fin", "U_fin", "hs"], body=body
    )
    rng = np.random.default_rng(3)
    inits = [
        _scalar("M", m_value, np.int64),
        _scalar("cond0", True, np.bool_),
        _scalar("t0", 0, np.int64),
        numpy_helper.from_array(np.zeros((1, H), np.float32), "h0"),
        numpy_helper.from_array((0.5 * rng.normal(size=(I, H))).astype(np.float32), "W"),
        numpy_helper.from_array((0.5 * rng.normal(size=(H, H))).astype(np.float32), "U"),
    ]
    outputs = [_vi("h_fin"), _vi("hs"), _vi("t_fin", TensorProto.INT64)]
    return _model([node], [_vi("X", FLOAT, [1, T, I])], outputs, inits, opset=16)


@pytest.mark.parametrize("m_value", [INT64_MAX, 3])
def test_loop_counter_condition_gives_static_trip_count(m_value):
    proto = _counter_loop_rnn(m_value)
    x = np.random.default_rng(4).normal(size=(1, T, I)).astype(np.float32)
    got = _run(proto, {"X": x}, ["hs", "h_fin", "t_fin"])
    # (ReferenceEvaluator concatenates Loop scan outputs with np.vstack instead of stacking them; onnxruntime
    # follows the spec.)
    expected = ort.InferenceSession(proto.SerializeToString()).run(["hs", "h_fin", "t_fin"], {"X": x})
    assert got[0].shape == expected[0].shape == (min(T, m_value), 1, H)
    assert int(got[2]) == min(T, m_value)
    for g, e in zip(got[:2], expected[:2]):  # h_t = tanh(x_t W + h U): I + H products, tanh, per step
        assert_f32_close(g, e, n_terms=2 * T * (I + H + 2))
    assert int(expected[2]) == min(T, m_value)


def test_loop_rnn_per_sample_jacobian_forward_equals_reverse():
    proto = _counter_loop_rnn()
    model = Model.from_onnx(proto)
    xs = np.random.default_rng(5).normal(size=(2, T, I)).astype(np.float32)
    expected = [ReferenceEvaluator(proto).run(["h_fin"], {"X": x[None]})[0][0] for x in xs]
    chain = T * (I + H + 2)
    assert_f32_close(model(xs), np.stack(expected), n_terms=2 * chain)
    rev = jax.jit(jax.jacrev(model.apply, argnums=1))(model.params, jnp.asarray(xs[0]))
    fwd = jax.jit(jax.jacfwd(model.apply, argnums=1))(model.params, jnp.asarray(xs[0]))
    assert rev.shape == (H, T, I)
    assert_f32_close(rev, fwd, n_terms=2 * 2 * chain)  # each retraces the chain in its own order


def _doubling_loop(with_trip_count: bool, with_scan_output: bool = False):
    """`while sum(h) < 10 (and i < M): h = 2 h`: the condition depends on the data."""
    nodes = [
        helper.make_node("Mul", ["h", "two"], ["h_out"]),
        helper.make_node("ReduceSum", ["h_out"], ["s"], keepdims=0),
        helper.make_node("Less", ["s", "ten"], ["cond_out"]),
    ]
    outputs = [_vi("cond_out", TensorProto.BOOL, []), _vi("h_out", FLOAT, [1, I])]
    if with_scan_output:
        nodes.append(helper.make_node("Identity", ["h_out"], ["h_seq"]))
        outputs.append(_vi("h_seq", FLOAT, [1, I]))
    body = helper.make_graph(
        nodes,
        "body",
        [_vi("i", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []), _vi("h", FLOAT, [1, I])],
        outputs,
        [_scalar("two", 2.0, np.float32), _scalar("ten", 10.0, np.float32)],
    )
    outer = [
        helper.make_node("ReduceSum", ["X"], ["s0"], keepdims=0),
        helper.make_node("Less", ["s0", "ten_outer"], ["cond0"]),
        helper.make_node(
            "Loop",
            ["M" if with_trip_count else "", "cond0", "X"],
            ["h_fin"] + (["hs"] if with_scan_output else []),
            body=body,
        ),
    ]
    inits = [_scalar("ten_outer", 10.0, np.float32)] + (
        [_scalar("M", 3, np.int64)] if with_trip_count else []
    )
    return _model(outer, [_vi("X", FLOAT, ["N", I])], [_vi("h_fin")], inits, opset=16)


def _doubling_closed_form(x, max_iter):
    k = 0
    while x.sum() < 10 and k < max_iter:
        x, k = 2 * x, k + 1
    return x, 2.0**k


@pytest.mark.parametrize("with_trip_count", [True, False], ids=["masked_scan", "while_loop"])
def test_loop_data_dependent_condition(with_trip_count):
    model = Model.from_onnx(_doubling_loop(with_trip_count))
    xs = np.array([[0.5, 0.5, 0.25, 0.25], [4.0, 4.0, 4.0, 4.0], [1.0, 1.0, 0.5, 0.25]], np.float32)
    max_iter = 3 if with_trip_count else 1000
    expected = np.stack([_doubling_closed_form(x, max_iter)[0] for x in xs])
    np.testing.assert_array_equal(model(xs), expected)  # doubling is exact
    reference = ReferenceEvaluator(_doubling_loop(with_trip_count))
    for x, e in zip(xs, expected):
        np.testing.assert_array_equal(reference.run(None, {"X": x[None]})[0][0], e)
    if with_trip_count:  # the masked scan is reverse-differentiable: d h / d x = 2^k I
        jac = jax.jit(jax.vmap(jax.jacrev(model.apply, argnums=1), in_axes=(None, 0)))(
            model.params, jnp.asarray(xs)
        )
        scales = [_doubling_closed_form(x, max_iter)[1] for x in xs]
        np.testing.assert_array_equal(jac, np.stack([s * np.eye(I) for s in scales]))  # powers of two: exact


def test_loop_data_dependent_condition_with_scan_outputs_is_refused():
    proto = _doubling_loop(True, with_scan_output=True)
    with pytest.raises(ConversionError, match="scan output"):
        _run(proto, {"X": np.ones((1, I), np.float32)}, ["h_fin", "hs"])


def _constant_condition_loop(m_value, cond0):
    """`acc += X` with cond_out = cond_in: the condition never changes."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc", "X"], ["acc_out"]),
            helper.make_node("Identity", ["acc_out"], ["seq"]),
            helper.make_node("Identity", ["c"], ["c_out"]),
        ],
        "body",
        [_vi("i", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []), _vi("acc", FLOAT, [I])],
        [_vi("c_out", TensorProto.BOOL, []), _vi("acc_out", FLOAT, [I]), _vi("seq", FLOAT, [I])],
    )
    node = helper.make_node(
        "Loop", ["M" if m_value is not None else "", "cond0", "X"], ["acc_fin", "seq_all"], body=body
    )
    inits = [_scalar("cond0", cond0, np.bool_)] + (
        [_scalar("M", m_value, np.int64)] if m_value is not None else []
    )
    return _model([node], [_vi("X", FLOAT, [I])], [_vi("acc_fin"), _vi("seq_all")], inits, opset=16)


@pytest.mark.parametrize("m_value, cond0, n_iter", [(4, False, 0), (0, True, 0), (3, True, 3)])
def test_loop_constant_condition(m_value, cond0, n_iter):
    proto = _constant_condition_loop(m_value, cond0)
    x = np.arange(I, dtype=np.float32)
    acc, seq = _run(proto, {"X": x}, ["acc_fin", "seq_all"])
    np.testing.assert_array_equal(acc, (n_iter + 1) * x)
    np.testing.assert_array_equal(seq, [(k + 2) * x for k in range(n_iter)] if n_iter else np.zeros((0, I)))


@pytest.mark.parametrize(
    "m_value, message", [(None, "would never end"), (INT64_MAX, "would run 9223372036854775807")]
)
def test_loop_without_end_is_refused(m_value, message):
    with pytest.raises(ConversionError, match=message):
        _run(_constant_condition_loop(m_value, True), {"X": np.ones(I, np.float32)}, ["acc_fin", "seq_all"])


# ---------------------------------------------------------------------------------------------------- Scan
def test_scan_axes_and_directions_match_onnxruntime():
    """Running sums of X [I, T] along axis 1 read backwards; outputs stacked on axes 1 (reversed) and 0."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc", "x"], ["acc_out"]),
            helper.make_node("Mul", ["acc_out", "y"], ["prod"]),
            helper.make_node("Identity", ["acc_out"], ["acc_seq"]),
        ],
        "body",
        [_vi("acc", FLOAT, [I]), _vi("x", FLOAT, [I]), _vi("y", FLOAT, [I])],
        [_vi("acc_out", FLOAT, [I]), _vi("acc_seq", FLOAT, [I]), _vi("prod", FLOAT, [I])],
    )
    node = helper.make_node(
        "Scan",
        ["acc0", "X", "Y"],
        ["acc_fin", "sums", "prods"],
        body=body,
        num_scan_inputs=2,
        scan_input_axes=[1, 0],
        scan_input_directions=[1, 0],
        scan_output_axes=[-1, 0],
        scan_output_directions=[1, 0],
    )
    inits = [numpy_helper.from_array(np.full(I, 0.5, np.float32), "acc0")]
    outputs = ["acc_fin", "sums", "prods"]
    proto = _model(
        [node], [_vi("X", FLOAT, [I, T]), _vi("Y", FLOAT, [T, I])], [_vi(o) for o in outputs], inits
    )
    rng = np.random.default_rng(6)
    feeds = {"X": rng.normal(size=(I, T)).astype(np.float32), "Y": rng.normal(size=(T, I)).astype(np.float32)}
    got = _run(proto, feeds, outputs)
    expected = ort.InferenceSession(proto.SerializeToString()).run(outputs, feeds)
    # running sums of T terms (and the start 0.5), then one product with y
    size = (0.5 + np.abs(feeds["X"]).sum()) * max(1.0, np.abs(feeds["Y"]).max())
    for name, g, e in zip(outputs, got, expected):
        assert g.shape == e.shape, name
        assert_f32_close(g, e, n_terms=2 * (T + 1), magnitude=size, err_msg=name)


def test_scan_opset8_batched_form_matches_onnxruntime():
    """Opset 8: a leading (empty) sequence_lens input, batch axis 0, scan axis 1, a `directions` attribute."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc", "x"], ["acc_out"]),
            helper.make_node("Identity", ["acc_out"], ["seq"]),
        ],
        "body",
        [_vi("acc", FLOAT, [I]), _vi("x", FLOAT, [I])],
        [_vi("acc_out", FLOAT, [I]), _vi("seq", FLOAT, [I])],
    )
    node = helper.make_node(
        "Scan", ["", "acc0", "X"], ["acc_fin", "sums"], body=body, num_scan_inputs=1, directions=[1]
    )
    graph_inputs = [_vi("acc0", FLOAT, [N, I]), _vi("X", FLOAT, [N, T, I])]
    proto = _model([node], graph_inputs, [_vi("acc_fin"), _vi("sums")], opset=8)
    rng = np.random.default_rng(8)
    feeds = {
        "acc0": rng.normal(size=(N, I)).astype(np.float32),
        "X": rng.normal(size=(N, T, I)).astype(np.float32),
    }
    got = _run(proto, feeds, ["acc_fin", "sums"])
    expected = ort.InferenceSession(proto.SerializeToString()).run(["acc_fin", "sums"], feeds)
    size = np.abs(feeds["acc0"]).max() + np.abs(feeds["X"]).sum(1).max()  # running sums of T terms
    for g, e in zip(got, expected):
        assert_f32_close(g, e, n_terms=2 * T, magnitude=size)


def test_scan_rnn_cell_with_outer_weights():
    """h_t = tanh(x_t W + h_{t-1} U), W and U read from the enclosing graph (parameters, traced)."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("MatMul", ["h", "U"], ["hu"]),
            helper.make_node("Add", ["xw", "hu"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["h_out"]),
            helper.make_node("Identity", ["h_out"], ["h_seq"]),
        ],
        "body",
        [_vi("h", FLOAT, [1, H]), _vi("x", FLOAT, [1, I])],
        [_vi("h_out", FLOAT, [1, H]), _vi("h_seq", FLOAT, [1, H])],
    )
    node = helper.make_node(
        "Scan",
        ["h0", "X"],
        ["h_fin", "hs"],
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_output_axes=[1],
    )
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(np.zeros((1, H), np.float32), "h0"),
        numpy_helper.from_array((0.5 * rng.normal(size=(I, H))).astype(np.float32), "W"),
        numpy_helper.from_array((0.5 * rng.normal(size=(H, H))).astype(np.float32), "U"),
    ]
    proto = _model([node], [_vi("X", FLOAT, [1, T, I])], [_vi("hs"), _vi("h_fin")], inits)
    xs = rng.normal(size=(2, T, I)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString())
    got = _run(proto, {"X": xs[:1]}, ["hs", "h_fin"])
    expected = session.run(["hs", "h_fin"], {"X": xs[:1]})
    chain = T * (I + H + 2)  # h_t = tanh(x_t W + h U): I + H products, tanh, per step
    for g, e in zip(got, expected):
        assert_f32_close(g, e, n_terms=2 * chain)
    model = Model.from_onnx(proto)  # per sample: hs [T, H]
    assert_f32_close(
        model(xs), np.concatenate([session.run(["hs"], {"X": x[None]})[0] for x in xs]), n_terms=2 * chain
    )
    rev = jax.jit(jax.jacrev(model.apply, argnums=1))(model.params, jnp.asarray(xs[0]))
    fwd = jax.jit(jax.jacfwd(model.apply, argnums=1))(model.params, jnp.asarray(xs[0]))
    assert rev.shape == (T, H, T, I)
    assert_f32_close(rev, fwd, n_terms=2 * 2 * chain)
    assert np.all(np.asarray(rev)[0, :, 1:] == 0)  # causal: step 0 does not see later inputs


# ------------------------------------------------------------------------------------------------------ If
def _if_model(cond_node, then_shape_same=True):
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["X", "two"], ["t_out"])],
        "then",
        [],
        [_vi("t_out", FLOAT, None)],
        [_scalar("two", 2.0, np.float32)],
    )
    else_nodes = (
        [helper.make_node("Neg", ["X"], ["e_out"])]
        if then_shape_same
        else [helper.make_node("ReduceSum", ["X"], ["e_out"], keepdims=1)]
    )
    else_branch = helper.make_graph(else_nodes, "else", [], [_vi("e_out", FLOAT, None)])
    nodes = cond_node + [
        helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)
    ]
    inits = [_scalar("zero", 0.0, np.float32)]
    return _model(nodes, [_vi("X", FLOAT, ["N", I])], [_vi("y")], inits, opset=16)


@pytest.mark.parametrize("flag", [True, False])
def test_if_static_condition_picks_a_branch(flag):
    cond = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(flag), "c"))]
    proto = _if_model(cond, then_shape_same=False)  # shapes may differ: only one branch is run
    x = np.arange(2 * I, dtype=np.float32).reshape(2, I) - 1.0
    (got,) = _run(proto, {"X": x}, ["y"])
    (expected,) = ReferenceEvaluator(proto).run(None, {"X": x})
    assert got.shape == expected.shape == ((2, I) if flag else (1, 1))
    np.testing.assert_array_equal(got, expected)  # doubling, or a sum of small integers: exact


def test_if_data_dependent_condition():
    cond = [
        helper.make_node("ReduceSum", ["X"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
    ]
    proto = _if_model(cond)
    model = Model.from_onnx(proto)
    xs = np.array([[1.0, 2.0, -0.5, 0.0], [-1.0, -2.0, 0.5, 0.0]], np.float32)
    reference = ReferenceEvaluator(proto)
    expected = np.concatenate([reference.run(None, {"X": x[None]})[0] for x in xs])
    np.testing.assert_array_equal(model(xs), expected)  # doubling and negation: exact
    np.testing.assert_array_equal(model(xs), [2 * xs[0], -xs[1]])
    jac = jax.jit(jax.vmap(jax.jacrev(model.apply, argnums=1), in_axes=(None, 0)))(
        model.params, jnp.asarray(xs)
    )
    np.testing.assert_allclose(jac, [2 * np.eye(I), -np.eye(I)])


def test_if_data_dependent_condition_needs_equal_branch_shapes():
    cond = [
        helper.make_node("ReduceSum", ["X"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
    ]
    proto = _if_model(cond, then_shape_same=False)
    with pytest.raises(ConversionError, match="branches give different outputs"):
        _run(proto, {"X": np.ones((1, I), np.float32)}, ["y"])
