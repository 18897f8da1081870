"""The CPU lowerings of ONNX ``Conv`` (converters/onnx_to_jax/ops/nn.py, issue 14 item 4).

On the CPU backend a depthwise convolution is computed as shifted multiply-adds (``"shifted"``), another grouped
convolution as one dense convolution per group (``"split"``) and a dense 1x1 convolution as a matrix product
(``"pointwise"``), because XLA's CPU grouped convolution and its gradient are slow; every other convolution, and
every convolution on another backend, stays one ``lax.conv_general_dilated`` (``"lax"``). Oracles:

* onnxruntime on the same one-node ONNX model (values), with the lowering checked on the traced program itself
  (which primitives it holds), so a row cannot pass through the standard path by accident;
* the standard ``"lax"`` lowering's derivatives (reverse mode for ``x`` and ``w``, forward mode), within the float32
  bound of tests/_tol.py on the magnitude of the summed terms;
* a small MobileNet-style Keras model (depthwise with a multiplier and stride 2, 1x1 convolutions)
  end to end: Keras ``predict`` and TensorFlow's ``batch_jacobian`` against ``jaxsens.jacobian_importance``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import pytest
from _tol import assert_f32_close
from onnx import TensorProto, helper, numpy_helper

import jaxsens
from converters.errors import ConversionError
from converters.onnx_to_jax import OnnxFunction
from converters.onnx_to_jax.ops import nn

# the ONNX path picks its lowering from JAX's default backend; elsewhere every convolution stays "lax"
cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the fast lowerings are the CPU's")

# id, x shape, w shape, Conv attributes, the lowering the CPU must use
CASES = [
    ("depthwise-3x3", (2, 6, 9, 8), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1]}, "shifted"),
    ("depthwise-stride2", (2, 6, 9, 8), (6, 1, 3, 3), {"group": 6, "strides": [2, 2]}, "shifted"),
    (
        "depthwise-multiplier-dilations",
        (2, 3, 10, 9),
        (6, 1, 3, 2),
        {"group": 3, "dilations": [2, 1], "strides": [1, 2], "pads": [2, 0, 1, 1]},
        "shifted",
    ),
    (
        "depthwise-same-lower",
        (2, 4, 7, 7),
        (4, 1, 3, 3),
        {"group": 4, "auto_pad": "SAME_LOWER", "strides": [2, 2]},
        "shifted",
    ),
    ("depthwise-1d", (2, 5, 11), (5, 1, 5), {"group": 5, "pads": [2, 1], "strides": [2]}, "shifted"),
    (
        "depthwise-3d",
        (1, 2, 5, 6, 4),
        (4, 1, 2, 3, 2),
        {"group": 2, "strides": [1, 2, 1], "pads": [1, 0, 0, 1, 1, 0]},
        "shifted",
    ),
    ("grouped", (2, 8, 7, 6), (6, 4, 3, 3), {"group": 2, "pads": [1, 1, 1, 1], "strides": [2, 1]}, "split"),
    ("grouped-1x1", (2, 8, 5, 5), (12, 2, 1, 1), {"group": 4}, "split"),
    ("pointwise", (2, 6, 5, 4), (7, 6, 1, 1), {}, "pointwise"),
    ("pointwise-1d", (2, 6, 5), (3, 6, 1), {}, "pointwise"),
    ("pointwise-strided", (2, 6, 5, 4), (7, 6, 1, 1), {"strides": [2, 2]}, "lax"),
    ("dense-3x3", (2, 3, 7, 6), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, "lax"),
    ("dense-3x3-stride2-same", (2, 3, 9, 8), (4, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, "lax"),
    ("dense-1d-stride3-dilated", (2, 3, 13), (4, 3, 3), {"strides": [3], "dilations": [2], "pads": [2, 1]}, "lax"),
    ("dense-strided-wide-pads", (2, 2, 5, 4), (3, 2, 1, 1), {"strides": [2, 3], "pads": [3, 2, 3, 4]}, "lax"),
    ("dense-3d-strided", (1, 2, 5, 6, 4), (3, 2, 2, 3, 2), {"strides": [2, 1, 2], "pads": [1, 0, 0, 0, 1, 1]}, "lax"),
    ("many-groups", (1, 66, 4, 4), (66, 2, 3, 3), {"group": 33, "pads": [1, 1, 1, 1]}, "lax"),
]
IDS = [c[0] for c in CASES]
# the rows with a hand-written pull-back under reverse_only: depthwise, and dense (group 1) strided convolutions
REVERSE_RULES = [c for c in CASES if c[4] == "shifted" or (c[3].get("group", 1) == 1 and max(c[3].get("strides", [1])) > 1)]


def _arrays(x_shape, w_shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=x_shape).astype(np.float32)
    w = rng.normal(size=w_shape).astype(np.float32)
    b = rng.normal(size=w_shape[0]).astype(np.float32)
    return x, w, b


def _conv_model(x_shape, w, b, attrs):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _ort(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _primitives(jaxpr) -> list:
    """Every equation of ``jaxpr`` and its sub-jaxprs (``pjit`` bodies)."""
    out = []
    for eqn in jaxpr.eqns:
        out.append(eqn)
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                out.extend(_primitives(inner))
    return out


def _check_lowering(eqns, lowering: str, group: int) -> None:
    convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
    dots = [e for e in eqns if e.primitive.name == "dot_general"]
    if lowering == "shifted":
        assert not convs and not dots, [e.primitive.name for e in convs + dots]
    elif lowering == "split":
        assert len(convs) == group and all(e.params["feature_group_count"] == 1 for e in convs)
    elif lowering == "pointwise":
        assert not convs and len(dots) == 1
    else:
        assert len(convs) == 1 and convs[0].params["feature_group_count"] == group


@cpu_only
@pytest.mark.parametrize(("x_shape", "w_shape", "attrs", "lowering"), [c[1:] for c in CASES], ids=IDS)
def test_conv_lowering_matches_onnxruntime(x_shape, w_shape, attrs, lowering):
    x, w, b = _arrays(x_shape, w_shape, seed=sum(x_shape) + sum(w_shape))
    model = _conv_model(x_shape, w, b, attrs)
    want = _ort(model, x)
    fn = OnnxFunction(model, output=0)
    params = {k: jnp.asarray(v) for k, v in fn.params.items()}
    run = jax.jit(lambda p, x: fn.run(p, {"x": x}, ["y"])["y"])
    _check_lowering(_primitives(jax.make_jaxpr(run)(params, x).jaxpr), lowering, attrs.get("group", 1))
    got = np.asarray(run(params, x))
    assert got.shape == want.shape
    # the float32 bound on the sum of |terms|: onnxruntime on |x|, |w|, |b|
    magnitude = _ort(_conv_model(x_shape, np.abs(w), np.abs(b), attrs), np.abs(x))
    fan_in = math.prod(w_shape[1:]) + 1
    assert_f32_close(got, want, n_terms=2 * fan_in, magnitude=magnitude)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attrs", "lowering"), [c[1:] for c in CASES if c[4] != "lax"],
    ids=[c[0] for c in CASES if c[4] != "lax"],
)
def test_conv_lowering_derivatives_match_lax(x_shape, w_shape, attrs, lowering):
    """Reverse mode (for ``x`` and ``w``) and forward mode of the fast lowering == the standard lowering's."""
    x, w, _ = _arrays(x_shape, w_shape, seed=3)
    n = len(x_shape) - 2
    strides = tuple(attrs.get("strides", (1,) * n))
    dilations = tuple(attrs.get("dilations", (1,) * n))
    group = attrs.get("group", 1)
    ctx = _Ctx()
    padding = nn._padding(ctx, attrs.get("auto_pad", "NOTSET"), attrs.get("pads"), x_shape[2:], w_shape[2:],
                          strides, dilations)
    assert nn.conv_lowering(x_shape[1], group, w_shape[2:], strides, padding, "cpu") == lowering
    fast = nn._CONV_LOWERINGS[lowering]

    def conv(f):
        return lambda x, w: f(x, w, strides, padding, dilations, group)

    @jax.jit
    def derivatives(x, w, ct, tx, tw):
        """Pull-backs of the fast and standard lowerings, the magnitudes of their summed terms, push-forwards."""
        pulls = [jax.vjp(conv(f), x, w)[1](ct) for f in (fast, nn._conv_lax)]
        # sums of |terms|: the same pull-back of |ct| through the convolution of |x| and |w|
        mags = jax.vjp(conv(nn._conv_lax), jnp.abs(x), jnp.abs(w))[1](jnp.abs(ct))
        tans = [jax.jvp(conv(f), (x, w), (tx, tw))[1] for f in (fast, nn._conv_lax)]
        mag_t = conv(nn._conv_lax)(jnp.abs(tx), jnp.abs(w)) + conv(nn._conv_lax)(jnp.abs(x), jnp.abs(tw))
        return pulls, mags, tans, mag_t

    rng = np.random.default_rng(4)
    y_shape = jax.eval_shape(conv(fast), x, w).shape
    ct = rng.normal(size=y_shape).astype(np.float32)
    tx, tw = rng.normal(size=x.shape).astype(np.float32), rng.normal(size=w.shape).astype(np.float32)
    ((dx, dw), (dx_lax, dw_lax)), (mag_x, mag_w), (tan, tan_lax), mag_t = derivatives(x, w, ct, tx, tw)
    n_terms = 2 * max(w_shape[0] // group * math.prod(w_shape[2:]), x_shape[0] * math.prod(y_shape[2:]))
    assert_f32_close(dx, dx_lax, n_terms=n_terms, magnitude=mag_x, err_msg="d/dx")
    assert_f32_close(dw, dw_lax, n_terms=n_terms, magnitude=mag_w, err_msg="d/dw")
    assert_f32_close(tan, tan_lax, n_terms=4 * math.prod(w_shape[1:]), magnitude=mag_t, err_msg="jvp")


@cpu_only
@pytest.mark.parametrize(("x_shape", "w_shape", "attrs"), [c[1:4] for c in REVERSE_RULES],
                         ids=[c[0] for c in REVERSE_RULES])
def test_reverse_pullback_matches_vjp_of_plain_lowering(x_shape, w_shape, attrs):
    """Under ``reverse_only`` the hand-written pull-back of a depthwise or a dense strided convolution (dx, dw, db
    through the ONNX node) == ``jax.vjp`` of the plain lowering, also under ``vmap`` over cotangents (a
    Jacobian's rows), and its forward value is the plain lowering's, bit for bit."""
    x, w, b = _arrays(x_shape, w_shape, seed=7)
    fn = OnnxFunction(_conv_model(x_shape, w, b, attrs), output=0)
    rev = fn.with_reverse_only()
    assert rev.reverse_only and not fn.reverse_only
    params = {k: jnp.asarray(v) for k, v in fn.params.items()}

    def run(f):
        return lambda x, w, b: f.run({**params, "w": w, "b": b}, {"x": x}, ["y"])["y"]

    @jax.jit
    def pullbacks(x, w, b, ct):
        values, pulls = zip(*[((out := jax.vjp(run(f), x, w, b))[0], out[1](ct)) for f in (rev, fn)])
        mags = jax.vjp(run(fn), jnp.abs(x), jnp.abs(w), jnp.abs(b))[1](jnp.abs(ct))
        return values, pulls, mags

    y_shape = jax.eval_shape(run(fn), x, w, b).shape
    ct = np.random.default_rng(8).normal(size=y_shape).astype(np.float32)
    (y_rev, y_plain), ((dx, dw, db), (dx0, dw0, db0)), (mag_x, mag_w, mag_b) = pullbacks(x, w, b, ct)
    np.testing.assert_array_equal(y_rev, y_plain)
    # the traced programs differ: the reverse-only one holds the custom rule, the plain one does not
    names = {e.primitive.name for e in _primitives(jax.make_jaxpr(run(rev))(x, w, b).jaxpr)}
    plain = {e.primitive.name for e in _primitives(jax.make_jaxpr(run(fn))(x, w, b).jaxpr)}
    assert any("custom_vjp" in n for n in names) and not any("custom" in n for n in plain), (names, plain)
    n_terms = 2 * max(w_shape[0] * math.prod(w_shape[2:]), x_shape[0] * math.prod(y_shape[2:]))
    assert_f32_close(dx, dx0, n_terms=n_terms, magnitude=mag_x, err_msg="d/dx")
    assert_f32_close(dw, dw0, n_terms=n_terms, magnitude=mag_w, err_msg="d/dw")
    assert_f32_close(db, db0, n_terms=n_terms, magnitude=mag_b, err_msg="d/db")
    cts = np.random.default_rng(11).normal(size=(3, *y_shape)).astype(np.float32)
    rows = [jax.jit(lambda x, c, f=f: jax.vmap(jax.vjp(lambda v: run(f)(v, w, b), x)[1])(c)[0])(x, cts)
            for f in (rev, fn)]
    mags = jax.jit(lambda x, c: jax.vmap(jax.vjp(lambda v: run(fn)(v, jnp.abs(w), b), x)[1])(c)[0])(
        jnp.abs(x), jnp.abs(cts))
    assert_f32_close(rows[0], rows[1], n_terms=n_terms, magnitude=mags, err_msg="vmap of d/dx")


def test_forward_mode_and_hessian_use_the_plain_depthwise_lowering():
    """Without ``reverse_only`` the depthwise node keeps the plain shifted form: ``jax.jvp`` and a Hessian
    (forward over reverse) work and equal the standard ``"lax"`` convolution's (a custom VJP would refuse both)."""
    x_shape, w_shape = (2, 4, 7, 6), (8, 1, 3, 3)
    attrs = {"group": 4, "strides": [2, 1], "pads": [1, 0, 1, 1]}
    x, w, b = _arrays(x_shape, w_shape, seed=9)
    fn = OnnxFunction(_conv_model(x_shape, w, b, attrs), output=0)
    params = {k: jnp.asarray(v) for k, v in fn.params.items()}
    padding = [(1, 1), (0, 1)]

    def plain(x):
        return jnp.sum(jnp.tanh(fn.run(params, {"x": x}, ["y"])["y"]))

    def lax(x):
        y = nn._conv_lax(x, jnp.asarray(w), (2, 1), padding, (1, 1), 4) + jnp.asarray(b).reshape(1, -1, 1, 1)
        return jnp.sum(jnp.tanh(y))

    t = np.random.default_rng(10).normal(size=x_shape).astype(np.float32)
    hvp = [jax.jit(lambda x, t, f=f: jax.jvp(jax.grad(f), (x,), (t,))[1])(x, t) for f in (plain, lax)]
    tan = [jax.jit(lambda x, t, f=f: jax.jvp(f, (x,), (t,))[1])(x, t) for f in (plain, lax)]
    n_terms = 4 * 9 * x_shape[0] * 4 * 6
    # the tangent sums sech^2(y) * (conv of t) <= the conv of |t| and |w|, summed
    mag = float(jnp.sum(nn._conv_lax(jnp.abs(t), jnp.abs(jnp.asarray(w)), (2, 1), padding, (1, 1), 4)))
    assert_f32_close(hvp[0], hvp[1], n_terms=n_terms, magnitude=np.abs(np.asarray(hvp[1])).max())
    assert_f32_close(tan[0], tan[1], n_terms=n_terms, magnitude=mag)
    with pytest.raises(ConversionError, match="custom_vjp"):  # the reverse-only trace is indeed reverse only
        rev = fn.with_reverse_only()
        jax.jvp(lambda x: rev.run(params, {"x": x}, ["y"])["y"], (x,), (t,))


class _Ctx:
    def error(self, message):  # nn._padding's error hook; the rows above are valid
        return AssertionError(message)


def test_other_backends_keep_one_convolution():
    """GPUs and TPUs have fast grouped kernels (cuDNN): every convolution stays one conv_general_dilated."""
    for backend in ("gpu", "cuda", "rocm", "tpu"):
        for group, c_in, kernel in [(8, 8, (3, 3)), (2, 8, (3, 3)), (1, 8, (1, 1))]:
            assert nn.conv_lowering(c_in, group, kernel, (1, 1), [(0, 0), (0, 0)], backend) == "lax"
    assert nn.conv_lowering(8, 8, (3, 3), (1, 1), [(1, 1), (1, 1)], "cpu") == "shifted"


def test_half_precision_depthwise_accumulates_in_float32():
    """float16 in and out, summed in float32: the float32 result rounded once to float16."""
    x, w, _ = _arrays((2, 4, 9, 9), (4, 1, 3, 3), seed=5)
    x16, w16 = x.astype(np.float16), w.astype(np.float16)
    args = ((1, 1), [(1, 1), (1, 1)], (1, 1), 4)
    got = nn._conv_shifted(x16, w16, *args)
    assert got.dtype == np.float16
    want = nn._conv_lax(x16.astype(np.float32), w16.astype(np.float32), *args)
    # within one float16 rounding of the float32 sum (plus that sum's own float32 rounding)
    tol = np.abs(np.asarray(want)) * 2.0**-11 + 9 * 2 * 2.0**-23 * np.max(np.abs(want))
    assert np.all(np.abs(np.asarray(got, np.float32) - np.asarray(want)) <= tol)


# ------------------------------------------------------------------------------------------------------------
# a MobileNet-style Keras model end to end
# ------------------------------------------------------------------------------------------------------------
@cpu_only
@pytest.mark.slow
def test_keras_mobilenet_block_matches_tensorflow():
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(11)
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU(6.0)(h)
    h = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(h)  # stride 2, 8 -> 16
    h = keras.layers.ReLU(6.0)(h)
    h = keras.layers.Conv2D(8, 1)(h)  # pointwise
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)  # (tf2onnx cannot convert groups=)
    h = keras.layers.DepthwiseConv2D(3, padding="valid")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(4, activation="softmax")(h)
    keras_model = keras.Model(inp, out)
    for layer in keras_model.layers:  # non-trivial moving statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(12)
            layer.moving_mean.assign(rng.normal(size=8).astype(np.float32) * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size=8).astype(np.float32))
    xs = np.random.default_rng(13).normal(size=(16, 12, 12, 3)).astype(np.float32)

    model = jaxsens.load_model(keras_model)
    assert model.batched  # the shifted / split / pointwise forms keep the rows provably independent
    chain = 2 * (27 + 8 + 9 + 16 + 72 + 9 + 8)  # fan-ins along the chain, forward and back
    want = np.asarray(keras_model(xs, training=False))
    assert_f32_close(np.asarray(model(xs)), want, n_terms=chain)

    x_tf = tf.constant(xs)
    with tf.GradientTape() as tape:
        tape.watch(x_tf)
        y = keras_model(x_tf, training=False)
    jac = np.asarray(tape.batch_jacobian(y, x_tf))  # [16, 4, 12, 12, 3]
    res = jaxsens.jacobian_importance(model, xs)
    assert res.mode == "reverse"
    scale = np.abs(jac).max()
    assert_f32_close(res.importance, np.abs(jac).mean(axis=0), n_terms=2 * chain, magnitude=scale)
    assert_f32_close(res.mean, jac.mean(axis=0), n_terms=2 * chain, magnitude=scale)
