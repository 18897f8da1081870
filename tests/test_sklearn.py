"""scikit-learn pipelines exported with skl2onnx, and the ``ai.onnx.ml`` ops they emit.

Two tables:

* ``ML_CASES``: one ``ai.onnx.ml`` node per row, built with ``onnx.helper`` and compared with onnxruntime (or with
  the specification's closed form where onnxruntime has no kernel for that input type or refuses an optional
  attribute the specification allows), both folded (numpy inputs) and traced under ``jax.jit``; chosen rows also
  check jvp == vjp == finite differences.
* ``PIPELINES``: ``Pipeline(scaler, model)`` and linear estimators fit on small seeded data, exported with
  ``skl2onnx.to_onnx`` and loaded with ``jaxsens.load_model``: predictions equal scikit-learn's, and the per-sample
  Jacobians (``jax.jacrev`` of ``model.apply``, and ``jacobian_importance``'s mean) equal float64 central
  differences of scikit-learn's own ``predict`` / ``predict_proba``; for linear models, the closed form (the
  coefficients times the scaler's per-feature factor).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _tol import assert_f32_close, f32_tol
from onnx import TensorProto, helper, numpy_helper

import jaxsens
from converters.errors import ConversionError, UnsupportedOpError
from converters.onnx_to_jax import OnnxFunction, get_op, supported_ops

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

ML = "ai.onnx.ml"


# ---------------------------------------------------------------- one-node table
@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    op: str
    inputs: tuple  # numpy arrays in ONNX input order
    attrs: dict
    const: frozenset  # input positions stored as initializers
    n_outputs: int
    compare: tuple  # output positions compared (string labels are not computed)
    want: tuple | None  # closed-form outputs; None: onnxruntime
    n_terms: int  # longest float32 accumulation / error amplification (tolerance, see tests/_tol.py)
    grad: bool  # also check jvp == vjp == finite differences
    id: str


ML_CASES: list[Case] = []


def case(op, *inputs, id, const=(), outputs=1, compare=None, want=None, n_terms=8, grad=False, **attrs):
    ML_CASES.append(
        Case(op, inputs, attrs, frozenset(const), outputs, tuple(range(outputs)) if compare is None else compare,
             want, n_terms, grad, f"{op}-{id}")
    )  # fmt: skip


def rnd(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


# rows: mixed signs, all negative (its MAX is negative), an all-zero row, a negative entry of largest magnitude
X = np.asarray([[1, -2, 3], [-1, -2, -3], [0, 0, 0], [-4, 2, 0.5]], np.float32)
X_NAN = np.asarray([[np.nan, 1, 2], [3, np.nan, np.nan], [0, 5, -2]], np.float32)
W3 = [0.1, 0.2, -0.3, -0.5, 0.4, 0.1, 0.3, -0.2, 0.25]

case("Scaler", X, id="per-feature", offset=[1.0, -2.0, 0.5], scale=[2.0, 0.5, -3.0], grad=True)
case("Scaler", rnd(2, 2, 3), id="one-value-rank3", offset=[0.25], scale=[4.0])
case("Scaler", X[0], id="1d", offset=[1.0, -2.0, 0.5], scale=[2.0, 0.5, -3.0])
case("Scaler", X.astype(np.int64), id="int64", offset=[1.0, -2.0, 0.5], scale=[2.0, 0.5, -3.0])
case("Scaler", X.astype(np.float64), id="float64", offset=[1.0, -2.0, 0.5], scale=[2.0, 0.5, -3.0])
for norm in ("MAX", "L1", "L2"):
    # MAX divides by the signed maximum (spec and onnxruntime): row 1 by -1, row 3 by 2 (not by |-4|)
    case("Normalizer", X, id=norm, norm=norm)
    case("Normalizer", rnd(5, 4, seed=1), id=f"{norm}-grad", norm=norm, grad=True)
case("Normalizer", X, id="default-MAX")
case("Normalizer", X[3], id="1d", norm="L2")
case("Normalizer", X.astype(np.int64), id="int64", norm="L1")
case("Imputer", X_NAN, id="nan", imputed_value_floats=[9.0, 8.0, 7.0], replaced_value_float=float("nan"),
     grad=True)  # fmt: skip
case("Imputer", X, id="default-zero-one-value", imputed_value_floats=[9.0])
case(
    "Imputer", X.reshape(2, 2, 3), id="rank3-one-value", imputed_value_floats=[9.0], replaced_value_float=-2.0
)
case("Imputer", X[1], id="1d", imputed_value_floats=[9.0, 8.0, 7.0], replaced_value_float=-2.0)
case("Imputer", X.astype(np.int64), id="int64", imputed_value_int64s=[9, 8, 7], replaced_value_int64=-2)
case("Binarizer", X, id="threshold", threshold=0.5)
case("Binarizer", X, id="default")
case("Binarizer", X.astype(np.int64), id="int64", threshold=0.5,  # no ORT kernel
     want=((X.astype(np.int64) > 0.5).astype(np.int64),))  # fmt: skip
case("Binarizer", np.asarray([np.nan, 1.0], np.float32), id="nan", threshold=0.5,  # onnxruntime refuses NaN
     want=(np.asarray([0.0, 1.0], np.float32),))  # fmt: skip

XS = rnd(6, 3, seed=2, scale=0.3)
for post in ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"):
    # PROBIT's closed-form erfinv cancels (-v + sqrt(v^2 - v2), v ~ 4.3): scores kept away from 0.5, and a
    # larger error amplification allowed
    b = [0.2, 0.8] if post == "PROBIT" else [0.1, -0.05]
    case("LinearRegressor", XS * (0.1 if post == "PROBIT" else 1), id=f"2-targets-{post}", coefficients=W3[:6],
         intercepts=b, targets=2, post_transform=post, grad=True, n_terms=64 if post == "PROBIT" else 8)  # fmt: skip
    b3 = [0.2, 0.8, 0.1] if post == "PROBIT" else [0.1, 0.0, -0.2]
    case("LinearClassifier", XS * (0.1 if post == "PROBIT" else 1), id=f"3-classes-{post}", outputs=2,
         coefficients=W3, intercepts=b3, classlabels_ints=[5, 6, 7], post_transform=post, grad=True,
         n_terms=64 if post == "PROBIT" else 8)  # fmt: skip
case("LinearRegressor", X, id="one-target", coefficients=W3[:3], intercepts=[0.5], grad=True)
case("LinearRegressor", X, id="no-intercepts", coefficients=W3[:3])
case("LinearRegressor", XS * 0.1, id="one-target-PROBIT", coefficients=W3[:3], intercepts=[0.3],
     post_transform="PROBIT", n_terms=64)  # fmt: skip
case("LinearRegressor", X[0], id="1d", coefficients=W3[:6], intercepts=[0.1, 0.2], targets=2)
case("LinearRegressor", X.astype(np.int64), id="int64", coefficients=W3[:3], intercepts=[0.5],  # no ORT kernel
     want=(X.astype(np.int64).astype(np.float32) @ np.float32(W3[:3]).reshape(3, 1) + np.float32(0.5),))  # fmt: skip
# SOFTMAX_ZERO: a score of exactly 0 stays 0 and is left out of the sum
case("LinearClassifier", X, id="SOFTMAX_ZERO-zero-score", outputs=2, coefficients=[1, 0, 0, 0, 0, 0, 0, 1, 0.0],
     intercepts=[0.0, 0.0, 0.0], classlabels_ints=[1, 2, 3], post_transform="SOFTMAX_ZERO")  # fmt: skip
case("LinearClassifier", XS, id="binary-LOGISTIC", outputs=2, coefficients=W3[:3], intercepts=[0.1],
     classlabels_ints=[0, 1], post_transform="LOGISTIC", grad=True)  # fmt: skip
case("LinearClassifier", XS, id="binary-strings", outputs=2, compare=(1,), coefficients=W3[:3], intercepts=[0.1],
     classlabels_strings=["no", "yes"], post_transform="LOGISTIC")  # fmt: skip
case("LinearClassifier", XS, id="strings", outputs=2, compare=(1,), coefficients=W3, intercepts=[0.1, 0.0, -0.2],
     classlabels_strings=["a", "b", "c"], post_transform="SOFTMAX")  # fmt: skip
case("LinearClassifier", XS, id="more-labels-than-rows", outputs=2, coefficients=W3[:6], intercepts=[0.1, 0.0],
     classlabels_ints=[0, 1, 2])  # fmt: skip
case("LinearClassifier", XS, id="multi_class", outputs=2, coefficients=W3, intercepts=[0.1, 0.0, -0.2],
     classlabels_ints=[0, 1, 2], multi_class=1, post_transform="LOGISTIC")  # fmt: skip
case("LinearClassifier", X.astype(np.int64), id="int64", outputs=2, coefficients=W3, intercepts=[0.1, 0.0, -0.2],
     classlabels_ints=[0, 1, 2])  # fmt: skip
case("LinearClassifier", X[0], id="1d", outputs=2, coefficients=W3, intercepts=[0.1, 0.0, -0.2],
     classlabels_ints=[0, 1, 2])  # fmt: skip
IDX = np.asarray([2, 0], np.int64)
case("ArrayFeatureExtractor", X, IDX, id="static-indices", const=(1,), grad=True)
case("ArrayFeatureExtractor", X, IDX, id="data-indices")
case("ArrayFeatureExtractor", X, IDX.reshape(2, 1), id="2d-indices", const=(1,))
case("ArrayFeatureExtractor", np.asarray([10, 20, 30, 40], np.int64), np.asarray([[3], [0], [1]], np.int64),
     id="1d-data", const=(0,))  # a classifier's labels: classes[argmax]  # fmt: skip
case("ArrayFeatureExtractor", rnd(2, 2, 3), np.asarray([1, 1], np.int64), id="rank3", const=(1,))
case("ArrayFeatureExtractor", X, np.asarray(1, np.int64), id="scalar-index", const=(1,))
A2, B1, C3 = rnd(2, 2, seed=3), rnd(2, 1, seed=4), rnd(2, 3, seed=5)
case("FeatureVectorizer", A2, B1, C3, id="concat", inputdimensions=[2, 1, 3], grad=True)
case("FeatureVectorizer", A2, B1, C3, id="cut-pad", inputdimensions=[1, 2, 2])
case("FeatureVectorizer", rnd(2, 3, 2, seed=6), B1, id="flatten", inputdimensions=[6, 1])
case("FeatureVectorizer", A2[0], B1[0], id="1d", inputdimensions=[2, 1])
case("FeatureVectorizer", A2.astype(np.int64), B1.astype(np.int64), id="int64", inputdimensions=[2, 1])


def _build(c: Case, output_like=None) -> onnx.ModelProto:
    names = [f"in{i}" for i in range(len(c.inputs))]
    outputs = [f"out{j}" for j in range(c.n_outputs)]
    node = helper.make_node(c.op, names, outputs, name=f"{c.op}_node", domain=ML, **c.attrs)
    inits = [numpy_helper.from_array(c.inputs[i], names[i]) for i in sorted(c.const)]
    graph_inputs = [
        helper.make_tensor_value_info(names[i], helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for i, v in enumerate(c.inputs)
        if i not in c.const
    ]
    if output_like is None:
        outs = [helper.make_empty_tensor_value_info(o) for o in outputs]
    else:
        outs = [
            helper.make_tensor_value_info(
                o, helper.np_dtype_to_tensor_dtype(np.asarray(w).dtype), np.shape(w)
            )
            for o, w in zip(outputs, output_like)
        ]
    graph = helper.make_graph([node], "one_node", graph_inputs, outs, inits)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)], ir_version=9
    )


def _feeds(c: Case) -> dict[str, np.ndarray]:
    return {f"in{i}": v for i, v in enumerate(c.inputs) if i not in c.const}


@functools.cache
def _prepared(c: Case):
    """(OnnxFunction, expected outputs)."""
    draft = _build(c)
    if c.want is None:
        sess = ort.InferenceSession(draft.SerializeToString(), providers=["CPUExecutionProvider"])
        want = tuple(sess.run(None, _feeds(c)))
    else:
        want = c.want
    model = _build(c, want)
    onnx.checker.check_model(model, full_check=True)
    return OnnxFunction(model, output=f"out{c.compare[-1]}"), want


def _assert_output(got, want, c: Case, what: str):
    want = np.asarray(want)
    assert np.shape(got) == want.shape, f"{what}: shape {np.shape(got)}, expected {want.shape}"
    if want.dtype.kind == "f":
        assert np.asarray(got).dtype == want.dtype, (
            f"{what}: dtype {np.asarray(got).dtype}, expected {want.dtype}"
        )
        magnitude = max(1.0, float(np.nanmax(np.abs(np.where(np.isinf(want), 0, want)), initial=0)))
        assert_f32_close(got, want, n_terms=c.n_terms, magnitude=magnitude, err_msg=what)
    else:
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=what)


@pytest.mark.parametrize("c", ML_CASES, ids=lambda c: c.id)
def test_ml_op_matches_onnxruntime(c: Case):
    fn, want = _prepared(c)
    outs = [f"out{j}" for j in c.compare]
    # 1. numpy inputs: the node is folded at conversion time
    got = fn.run(dict(fn.params), _feeds(c), outs)
    for o, j in zip(outs, c.compare):
        assert isinstance(got[o], np.ndarray), f"{o} was not folded: {type(got[o])}"
        _assert_output(got[o], want[j], c, f"folded {o}")
    # 2. traced under jit, as Model.apply runs it
    params = {k: jnp.asarray(v) for k, v in fn.params.items()}
    feeds = {k: jnp.asarray(v) for k, v in _feeds(c).items()}
    got = jax.jit(lambda p, xs: fn.run(p, xs, outs))(params, feeds)
    for o, j in zip(outs, c.compare):
        _assert_output(got[o], want[j], c, f"jit {o}")


@pytest.mark.parametrize("c", [c for c in ML_CASES if c.grad], ids=lambda c: c.id)
def test_ml_op_derivatives(c: Case):
    """d <w, f(x)> / dx along a random direction: jvp == vjp, and == float32 central differences."""
    fn, _ = _prepared(c)
    outs = [f"out{j}" for j in c.compare]
    base = {k: jnp.asarray(v) for k, v in _feeds(c).items()}
    x0 = {k: v for k, v in base.items() if v.dtype == jnp.float32}
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda xs: fn.run(fn.params, {**base, **xs}, outs), x0)
    weights = {
        o: jnp.asarray(rng.normal(size=s.shape), jnp.float32)
        for o, s in shapes.items()
        if s.dtype == jnp.float32
    }
    direction = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in x0.items()}

    def scalar(xs):
        ys = fn.run(fn.params, {**base, **xs}, outs)
        return sum(jnp.sum(jnp.where(jnp.isnan(ys[o]), 0, w * ys[o])) for o, w in weights.items())

    @jax.jit
    def derivatives(x0, direction, eps=1e-3):
        _, forward = jax.jvp(scalar, (x0,), (direction,))
        grads = jax.grad(scalar)(x0)
        terms = [jnp.where(jnp.isnan(x0[k]), 0, grads[k] * direction[k]) for k in x0]
        plus = scalar({k: x0[k] + eps * direction[k] for k in x0})
        minus = scalar({k: x0[k] - eps * direction[k] for k in x0})
        return (
            forward,
            sum(jnp.sum(t) for t in terms),
            (plus - minus) / (2 * eps),
            sum(jnp.sum(jnp.abs(t)) for t in terms),
        )

    forward, reverse, fd, scale = (float(v) for v in derivatives(x0, direction))
    assert scale > 1e-3, "the derivative is zero: nothing was tested"
    np.testing.assert_allclose(forward, reverse, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(forward, fd, rtol=0, atol=2e-3 * scale)  # float32 differences


def test_every_ml_op_has_a_row_and_takes_every_schema_attribute():
    ops = supported_ops(ML)
    assert {"Scaler", "Normalizer", "Imputer", "LinearRegressor", "LinearClassifier", "ArrayFeatureExtractor",
            "FeatureVectorizer", "Binarizer"} <= set(ops)  # fmt: skip
    assert not set(ops) - {c.op for c in ML_CASES}, "ai.onnx.ml ops without a one-node row"
    for op in ops:
        schema = onnx.defs.get_schema(op, domain=ML)
        assert set(schema.attributes) <= get_op(op, ML).attributes, op
        assert inspect.getdoc(get_op(op, ML).fn), op


# ---------------------------------------------------------------- refusals
def _one_node(op, attrs, x):
    if op == "LinearClassifier":
        outs = [helper.make_tensor_value_info("y", TensorProto.INT64, None),
                helper.make_tensor_value_info("z", TensorProto.FLOAT, None)]  # fmt: skip
    else:
        outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    node = helper.make_node(op, ["x"], [o.name for o in outs], name="my_node", domain=ML, **attrs)
    inputs = [
        helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), [None, *x.shape[1:]])
    ]
    graph = helper.make_graph([node], "g", inputs, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])


@pytest.mark.parametrize(
    ("op", "attrs", "x", "error", "words"),
    [
        ("Scaler", {"offset": [0.0, 1.0], "scale": [1.0, 2.0]}, rnd(2, 3, 2), UnsupportedOpError,
         ["'my_node'", "rank 3", "2 values"]),
        ("Scaler", {"offset": [0.0], "scale": [1.0, 2.0]}, rnd(2, 2), ConversionError, ["1 offset(s) and 2 scale(s)"]),
        ("Normalizer", {"norm": "L3"}, rnd(2, 3), UnsupportedOpError, ["'my_node'", "norm='L3'", "MAX, L1, L2"]),
        ("Normalizer", {"norm": "L2"}, rnd(2, 3, 2), UnsupportedOpError, ["'my_node'", "rank 3"]),
        ("LinearRegressor", {"coefficients": [1.0, 2.0], "post_transform": "LOGISTIC"}, rnd(2, 2), UnsupportedOpError,
         ["'my_node'", "post_transform='LOGISTIC'", "single target"]),
        ("LinearRegressor", {"coefficients": [1.0, 2.0], "post_transform": "SIGMOID"}, rnd(2, 2), UnsupportedOpError,
         ["'my_node'", "post_transform='SIGMOID'"]),
        ("LinearRegressor", {"coefficients": [1.0, 2.0, 3.0], "targets": 2}, rnd(2, 2), ConversionError,
         ["'my_node'", "3 coefficients", "2 row(s) x 2 features"]),
        ("LinearClassifier", {"coefficients": [1.0, 2.0], "intercepts": [0.0], "classlabels_ints": [0, 1]},
         rnd(2, 2), UnsupportedOpError, ["'my_node'", "post_transform='NONE'", "one coefficient row"]),
        ("LinearClassifier", {"coefficients": [1.0, 2.0], "intercepts": [0.0], "classlabels_ints": [0, 1],
                              "post_transform": "PROBIT"}, rnd(2, 2), UnsupportedOpError, ["post_transform='PROBIT'"]),
        ("LinearClassifier", {"coefficients": [1.0, 2.0, 3.0, 4.0], "intercepts": [0.0, 0.0]}, rnd(2, 2),
         ConversionError, ["'my_node'", "classlabels_ints / classlabels_strings"]),
        ("LinearClassifier", {"coefficients": [1.0, 2.0, 3.0, 4.0], "classlabels_ints": [0, 1]}, rnd(2, 2),
         ConversionError, ["'my_node'", "no intercepts"]),
        ("Imputer", {"imputed_value_floats": [1.0], "replaced_value_float": 0.0}, np.zeros((2, 2), np.int64),
         UnsupportedOpError, ["'my_node'", "imputed_value_floats", "int64"]),
        ("Imputer", {"imputed_value_floats": [1.0, 2.0]}, rnd(2, 3), ConversionError, ["2 imputed values for 3"]),
        ("Imputer", {"imputed_value_floats": [1.0, 2.0]}, rnd(2, 3, 2), UnsupportedOpError,
         ["'my_node'", "rank 3", "2 values"]),
        ("FeatureVectorizer", {"inputdimensions": [1, 2]}, rnd(2, 1), ConversionError, ["inputdimensions=[1, 2]"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:Explicitly requested dtype int64")  # an int64 input, fed as JAX's int32
def test_unsupported_attribute_values_are_refused_by_name(op, attrs, x, error, words):
    with pytest.raises(error) as info:
        jaxsens.load_model(_one_node(op, attrs, x))
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_string_tensor_into_scaler_is_refused():
    strings = numpy_helper.from_array(np.asarray([["a", "b"]], dtype=object), "s")
    node = helper.make_node(
        "Scaler", ["s"], ["y"], name="scale_strings", domain=ML, offset=[0.0], scale=[1.0]
    )
    add = helper.make_node("Add", ["x", "y"], ["z"])
    graph = helper.make_graph(
        [node, add], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [strings],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])
    with pytest.raises(UnsupportedOpError, match="'scale_strings'.*object"):
        jaxsens.load_model(proto)


def test_static_array_feature_extractor_index_out_of_range():
    idx = numpy_helper.from_array(np.asarray([3], np.int64), "idx")
    node = helper.make_node("ArrayFeatureExtractor", ["x", "idx"], ["y"], name="afe", domain=ML)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [idx])  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])
    with pytest.raises(ConversionError, match="'afe'.*index 3 is out of range"):
        jaxsens.load_model(proto)


# ---------------------------------------------------------------- scikit-learn pipelines
N_FIT, N_EVAL, N_FEATURES = 80, 12, 4
FEATURE_SCALE = np.asarray([1.0, 10.0, 0.1, 100.0])
FEATURE_SHIFT = np.asarray([0.0, 50.0, -1.0, 0.0])


@functools.cache
def _data(missing: bool = False):
    """Fit and evaluation rows (float32-exact float64), features of very different scales; targets: a smooth
    regression target and 3 classes. ``missing``: 10% NaN entries (the first evaluation rows keep one each)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(N_FIT + N_EVAL, N_FEATURES))
    x = (z * FEATURE_SCALE + FEATURE_SHIFT).astype(np.float32).astype(np.float64)
    y = np.tanh(z[:, 0] - 0.5 * z[:, 1]) + 0.3 * z[:, 2] * z[:, 3]
    classes = np.digitize(z[:, 0] + z[:, 1] - z[:, 3], [-0.7, 0.7])
    if missing:
        x[rng.random(x.shape) < 0.1] = np.nan
        x[N_FIT + np.arange(N_FEATURES), np.arange(N_FEATURES)] = np.nan
    return x[:N_FIT], y[:N_FIT], classes[:N_FIT], x[N_FIT:]


def _scalers():
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, Normalizer, RobustScaler, StandardScaler

    return {
        "StandardScaler": StandardScaler, "MinMaxScaler": MinMaxScaler, "RobustScaler": RobustScaler,
        "MaxAbsScaler": MaxAbsScaler, "Normalizer": Normalizer, "PCA": lambda: PCA(n_components=3),
        "SimpleImputer": SimpleImputer,
    }  # fmt: skip


def _pipeline(scaler: str | None, model: str):
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline

    estimators = {
        "MLPRegressor": lambda: MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
        "MLPClassifier": lambda: MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
        "LinearRegression": LinearRegression,
        "Ridge": lambda: Ridge(alpha=3.0),
        "LogisticRegression": lambda: LogisticRegression(max_iter=500),
    }
    est = estimators[model]()
    if scaler is None:
        return est, est
    return make_pipeline(_scalers()[scaler](), est), est


PIPELINES = [(s, m) for s in _scalers() for m in ("MLPRegressor", "MLPClassifier")] + [
    (None, "LinearRegression"), (None, "Ridge"), (None, "LogisticRegression"),
]  # fmt: skip


def _fit_export(scaler, model, *, classes: int = 3, zipmap: bool = True, tmp_path):
    """(fitted pipeline, its ONNX export, the export's path under ``tmp_path``, evaluation rows)."""
    pipe, proto, x_eval = _fitted(scaler, model, classes, zipmap)
    path = tmp_path / f"{scaler}_{model}.onnx"
    path.write_bytes(proto.SerializeToString())
    return pipe, proto, str(path), x_eval


@functools.cache
def _fitted(scaler, model, classes: int, zipmap: bool):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    x, y, c, x_eval = _data(missing=scaler == "SimpleImputer")
    pipe, est = _pipeline(scaler, model)
    target = (c > 0 if classes == 2 else c) if "Classifier" in model or "Logistic" in model else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: small networks, few iterations, on purpose
        pipe.fit(x, target)
    options = {id(est): {"zipmap": False}} if not zipmap and hasattr(est, "predict_proba") else None
    proto = to_onnx(pipe, initial_types=[("X", FloatTensorType([None, N_FEATURES]))], options=options,
                    target_opset={"": 17, ML: 1})  # fmt: skip
    return pipe, proto, x_eval


def _predict(pipe, xs: np.ndarray) -> np.ndarray:
    f = pipe.predict_proba if hasattr(pipe, "predict_proba") else pipe.predict
    return np.asarray(f(xs), np.float64).reshape(len(xs), -1)


def _finite_differences(pipe, xs: np.ndarray, columns=None) -> np.ndarray:
    """float64 central differences of scikit-learn's own prediction: ``[n_rows, n_outputs, n_features]``
    (``columns``: the model was fit on a DataFrame with these columns)."""
    import pandas as pd

    n, d = xs.shape
    h = 1e-6 * (1 + np.abs(np.nan_to_num(xs)))  # relative step
    steps = np.eye(d)[None] * h[:, None, :]  # [n, d (which), d]

    def predict(rows):
        return _predict(pipe, rows if columns is None else pd.DataFrame(rows, columns=columns)).reshape(
            n, d, -1
        )

    plus = predict((xs[:, None, :] + steps).reshape(-1, d))
    minus = predict((xs[:, None, :] - steps).reshape(-1, d))
    return np.swapaxes((plus - minus) / (2 * h[:, :, None]), 1, 2)


def _term_magnitude(pipe, xs: np.ndarray) -> np.ndarray:
    """``[n_rows, 1]``: a bound on ``sum |terms|`` of the float32 sums behind each prediction (the data and the
    weights taken in absolute value through every step: ``(|x| + |offset|) * |scale|``, ``|x| @ |W| + |b|``, ...);
    the logits bound the probabilities' error (the softmax / logistic derivative is below 1)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler, Normalizer

    steps = [s for _, s in pipe.steps] if hasattr(pipe, "steps") else [pipe]
    x = np.nan_to_num(xs)
    m = np.abs(x)
    for step in steps[:-1]:
        if isinstance(step, MinMaxScaler):
            m = m * step.scale_ + np.abs(step.min_)
        elif isinstance(step, PCA):
            m = (m + np.abs(step.mean_)) @ np.abs(step.components_.T)
        elif isinstance(step, Normalizer):
            m = np.abs(step.transform(x))
        elif hasattr(step, "scale_"):  # StandardScaler, RobustScaler, MaxAbsScaler: (x - offset) * scale
            m = (m + np.abs(getattr(step, "center_", getattr(step, "mean_", 0.0)))) / step.scale_
        else:  # SimpleImputer
            m = np.abs(step.transform(xs))
        x = step.transform(x)
    last = steps[-1]
    weights = (
        list(zip(last.coefs_, last.intercepts_))
        if hasattr(last, "coefs_")
        else [(np.atleast_2d(last.coef_).T, last.intercept_)]
    )
    for w, b in weights:
        m = m @ np.abs(w) + np.abs(b)
    return m.max(axis=1, keepdims=True)


def _per_row_jacobians(model, xs: np.ndarray) -> np.ndarray:
    jac = jax.jit(jax.vmap(jax.jacrev(lambda x: jnp.ravel(model.apply(model.params, x)))))
    return np.asarray(jac(jnp.asarray(xs, jnp.float32)), np.float64)


@pytest.mark.parametrize(("scaler", "model"), PIPELINES, ids=lambda v: str(v))
def test_pipeline_predictions_and_jacobians_match_sklearn(scaler, model, tmp_path):
    pipe, _, path, xs = _fit_export(scaler, model, tmp_path=tmp_path)
    m = jaxsens.load_model(path)
    want = _predict(pipe, xs)
    got = np.asarray(m(xs.astype(np.float32)), np.float64).reshape(want.shape)
    # float32 weights and arithmetic against scikit-learn's float64: 1e-5, or the float32 bound where the sums
    # behind a prediction are large (features of size ~100 reach the network unscaled after SimpleImputer);
    # probabilistic: a few short sums, rounding errors of either sign
    n_terms = 2 * (N_FEATURES + 8 + 3)  # fan-ins of the scaler, the hidden and the output layer, both sides
    tol = np.maximum(1e-5, f32_tol(_term_magnitude(pipe, xs), n_terms, probabilistic=True))
    np.testing.assert_array_less(np.abs(got - want), np.broadcast_to(tol, want.shape))

    fd = _finite_differences(pipe, xs)
    jac = _per_row_jacobians(m, xs)
    assert jac.shape == fd.shape
    np.testing.assert_allclose(jac, fd, rtol=0, atol=1e-4)
    assert np.abs(fd).max() > 1e-3, "the Jacobian is zero: nothing was tested"

    rows = ~np.isnan(xs).any(axis=1)  # jacobian_importance refuses NaN rows by default
    stats = jaxsens.jacobian_importance(m, xs[rows].astype(np.float32))
    np.testing.assert_allclose(stats.mean, fd[rows].mean(axis=0), rtol=0, atol=1e-4)
    np.testing.assert_allclose(stats.mean_abs, np.abs(fd[rows]).mean(axis=0), rtol=0, atol=1e-4)
    if scaler == "SimpleImputer":  # an imputed entry does not move the prediction
        assert rows.sum() < len(xs)
        nan_r, nan_c = np.where(np.isnan(xs))
        np.testing.assert_array_equal(jac[nan_r, :, nan_c], 0.0)


def _scale_factor(pipe, scaler: str) -> np.ndarray:
    """d(scaled x_j) / d x_j of an affine per-feature scaler."""
    step = pipe.steps[0][1]
    if scaler == "MinMaxScaler":
        return step.scale_
    return 1.0 / step.scale_  # StandardScaler, RobustScaler, MaxAbsScaler (scale_ = max_abs_)


def _softmax_jacobian(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """d p / d x for p = softmax(W x + b): ``J[k] = p_k (W_k - sum_j p_j W_j)``; ``[n, K, F]``."""
    return p[:, :, None] * (w[None] - (p @ w)[:, None, :])


@pytest.mark.parametrize("scaler", [None, "StandardScaler", "MinMaxScaler", "RobustScaler", "MaxAbsScaler"])
@pytest.mark.parametrize(
    "model", ["LinearRegression", "Ridge", "LogisticRegression", "LogisticRegression-binary"]
)
def test_linear_model_jacobian_is_the_scaled_coefficients(scaler, model, tmp_path):
    binary = model.endswith("-binary")
    pipe, _, path, xs = _fit_export(scaler, model.removesuffix("-binary"), classes=2 if binary else 3,
                                        zipmap=scaler is None, tmp_path=tmp_path)  # fmt: skip
    m = jaxsens.load_model(path)
    est = pipe.steps[-1][1] if scaler else pipe
    factor = _scale_factor(pipe, scaler) if scaler else np.ones(N_FEATURES)
    w = np.atleast_2d(est.coef_) * factor  # [n_outputs or 1, F] in the input units
    jac = _per_row_jacobians(m, xs)
    if model in ("LinearRegression", "Ridge"):
        want = np.broadcast_to(w, jac.shape)
        n_terms = 4  # the product of two float32-rounded factors
    else:
        p = _predict(pipe, xs)
        if binary:  # p1 = sigmoid(w x + b), p0 = 1 - p1
            d1 = (p[:, 1] * p[:, 0])[:, None] * w
            want = np.stack([-d1, d1], axis=1)
        else:
            want = _softmax_jacobian(p, w)
        n_terms = 4 * N_FEATURES  # through the float32 softmax / logistic of a float32 dot product
    assert_f32_close(jac, want, n_terms=n_terms, magnitude=np.abs(w).max())
    stats = jaxsens.jacobian_importance(m, xs.astype(np.float32))
    assert_f32_close(stats.mean, want.mean(axis=0), n_terms=n_terms + len(xs), magnitude=np.abs(w).max())


@pytest.mark.parametrize("zipmap", [True, False])
@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_regression_explains_probabilities_with_and_without_zipmap(zipmap, classes, tmp_path):
    pipe, proto, path, xs = _fit_export(None, "LogisticRegression", classes=classes, zipmap=zipmap,
                                        tmp_path=tmp_path)  # fmt: skip
    ops = [(n.domain, n.op_type) for n in proto.graph.node]
    assert (ML, "LinearClassifier") in ops and ((ML, "ZipMap") in ops) == zipmap
    m = jaxsens.load_model(path)
    assert m.output_shape == (classes,)
    np.testing.assert_allclose(
        np.asarray(m(xs.astype(np.float32))), pipe.predict_proba(xs), rtol=0, atol=1e-5
    )
    if zipmap:  # naming the ZipMap output explains the probabilities that feed it
        named = jaxsens.load_model(path, output="output_probability")
        np.testing.assert_array_equal(named(xs.astype(np.float32)), m(xs.astype(np.float32)))
    # the integer label output can be chosen too, and equals predict()
    label = "output_label" if zipmap else "label"
    labels = jaxsens.load_model(path, output=label)
    np.testing.assert_array_equal(np.asarray(labels(xs.astype(np.float32))).ravel(), pipe.predict(xs))


def test_string_class_labels(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, _, c, xs = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on the unscaled features
        clf = LogisticRegression(max_iter=500).fit(x, np.asarray(["low", "mid", "high"])[c])
    proto = to_onnx(clf, x[:1].astype(np.float32), target_opset={"": 17, ML: 1})
    m = jaxsens.load_model(proto)
    np.testing.assert_allclose(np.asarray(m(xs.astype(np.float32))), clf.predict_proba(xs), rtol=0, atol=1e-5)
    with pytest.raises(ConversionError, match="'output_label' is not a numeric tensor"):
        jaxsens.load_model(proto, output="output_label")


def test_export_ops_are_all_registered():
    """Every op of every pipeline export (label branches included) is registered, except ZipMap (a sequence of
    maps, which jaxsens replaces by the tensor feeding it)."""
    seen = set()
    for scaler, model in PIPELINES:
        _, proto, _ = _fitted(scaler, model, 3, True)
        seen |= {(n.domain, n.op_type) for n in proto.graph.node}
    missing = {(dom, op) for dom, op in seen if get_op(op, dom) is None}
    assert missing == {(ML, "ZipMap")}
    assert {(ML, op) for op in ("Scaler", "Normalizer", "Imputer", "LinearRegressor", "LinearClassifier",
                                "ArrayFeatureExtractor")} <= seen  # fmt: skip


# ---------------------------------------------------------------- feature names
def _frame():
    import pandas as pd

    x, y, _, xs = _data()
    cols = ["age", "income", "height", "weight"]
    return (
        pd.DataFrame(x.astype(np.float32), columns=cols),
        y,
        pd.DataFrame(xs.astype(np.float32), columns=cols),
    )


@pytest.mark.parametrize("kind", ["pipeline", "column-transformer"])
def test_dataframe_export_becomes_one_input_named_by_its_columns(kind, tmp_path):
    """skl2onnx exports a model fit on a DataFrame with one [N, 1] input per column (FeatureVectorizer for a
    Pipeline, Concat in a ColumnTransformer): jaxsens merges them into one input named by the columns."""
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df, y, df_eval = _frame()
    if kind == "pipeline":
        pre = StandardScaler()
    else:
        pre = ColumnTransformer(
            [("s", StandardScaler(), ["age", "income", "weight"]), ("p", "passthrough", ["height"])]
        )
    pipe = make_pipeline(pre, MLPRegressor(hidden_layer_sizes=(6,), max_iter=200, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(df, y)
    proto = to_onnx(pipe, df[:1], target_opset={"": 17, ML: 1})
    assert [vi.name for vi in proto.graph.input] == list(df.columns)  # what skl2onnx does
    concat = (ML, "FeatureVectorizer") if kind == "pipeline" else ("", "Concat")
    assert concat in {(n.domain, n.op_type) for n in proto.graph.node}
    path = tmp_path / "df.onnx"
    path.write_bytes(proto.SerializeToString())

    m = jaxsens.load_model(str(path))
    assert m.feature_names == tuple(pipe.feature_names_in_) and m.input_names == ("X",)
    want = pipe.predict(df_eval)
    np.testing.assert_allclose(np.asarray(m(df_eval.to_numpy())).ravel(), want, rtol=0, atol=1e-5)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    by_column = sess.run(None, {c: df_eval[[c]].to_numpy() for c in df_eval.columns})[0]
    np.testing.assert_allclose(
        np.asarray(m(df_eval.to_numpy())).ravel(), by_column.ravel(), rtol=0, atol=1e-6
    )

    stats = jaxsens.jacobian_importance(m, df_eval)
    assert stats.feature_names == tuple(df.columns)
    reordered = jaxsens.jacobian_importance(
        m, df_eval[["weight", "height", "age", "income"]]
    )  # selected by name
    np.testing.assert_allclose(reordered.mean, stats.mean, rtol=1e-6, atol=1e-9)
    fd = _finite_differences(pipe, df_eval.to_numpy().astype(np.float64), columns=df.columns)
    np.testing.assert_allclose(stats.mean, fd.mean(axis=0), rtol=0, atol=1e-4)


def test_feature_names_argument_with_array_export(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df, y, df_eval = _frame()
    pipe = make_pipeline(StandardScaler(), Ridge()).fit(df, y)
    proto = to_onnx(pipe, df.to_numpy()[:1], target_opset={"": 17, ML: 1})  # an array: one input "X"
    path = tmp_path / "arr.onnx"
    path.write_bytes(proto.SerializeToString())
    m = jaxsens.load_model(str(path), feature_names=list(pipe.feature_names_in_))
    assert m.feature_names == tuple(df.columns)
    stats = jaxsens.jacobian_importance(m, df_eval)
    assert_f32_close(stats.mean[0], pipe[-1].coef_ / pipe[0].scale_, n_terms=4 + len(df_eval))


def test_mixed_column_types_keep_their_inputs(tmp_path):
    """An integer column cannot be merged into a float matrix without a silent cast: the inputs stay separate."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df, y, _ = _frame()
    df = df.assign(count=np.arange(len(df), dtype=np.int64))
    proto = to_onnx(make_pipeline(StandardScaler(), Ridge()).fit(df, y), df[:1], target_opset={"": 17, ML: 1})
    assert [vi.name for vi in proto.graph.input] == list(df.columns)
    m = jaxsens.load_model(proto)
    assert m.input_names == (*df.columns,)
