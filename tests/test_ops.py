"""One-node tests of the feed-forward ONNX ops, plus PyTorch and scikit-learn exports end to end.

Every row of ``CASES`` is one ONNX node built with ``onnx.helper`` (checked with ``onnx.checker``) and run two ways,
each compared with ``onnx.reference.ReferenceEvaluator`` (or onnxruntime where the reference deviates from the spec):

* with every input a numpy value, so the graph interpreter folds the node at trace time: the result must be a numpy
  array of ONNX's exact dtype (``int64`` shapes and indices), as shape computations need (skipped for ops computed
  with JAX only, where folding is the same code as the traced path);
* under ``jax.jit(jax.vmap(...))`` over two different samples (the way ``Model.apply`` is batched).

Chosen rows also check forward mode == reverse mode == float64 central differences, and jit == no jit. A new op is a
new row; a test checks that every registered feed-forward op has one, and that each op function accepts every
attribute its ONNX schema defines in opsets 7 to 22.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import jaxsens
from converters.errors import ConversionError, UnsupportedOpError
from converters.onnx_to_jax import OnnxFunction, get_op, register_op, supported_ops

RTOL, ATOL = 1e-5, 1e-6


# ---------------------------------------------------------------- the table
@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    op: str
    inputs: tuple  # numpy arrays in ONNX input order; None for an omitted optional input
    attrs: dict
    opset: int
    const: frozenset  # input positions stored as initializers (the op's static inputs are added)
    n_outputs: int
    oracle: str  # "reference" or "onnxruntime" (where the reference deviates from the spec)
    full_check: bool  # False where onnx.checker disagrees (MaxPool ceil_mode shapes, deprecated GroupNorm-18)
    id: str

    @property
    def dynamic(self) -> list[int]:
        return [i for i, v in enumerate(self.inputs) if v is not None and i not in self.const]


CASES: list[Case] = []


def case(op, *inputs, opset=18, const=(), outputs=1, oracle="reference", full_check=True, id=None, **attrs):
    spec = get_op(op)
    static = set(spec.static_inputs) if spec is not None else set()
    name = f"{op}-{id}" if id else op
    n = sum(c.id == name or c.id.startswith(name + "#") for c in CASES)
    CASES.append(
        Case(
            op,
            inputs,
            attrs,
            opset,
            frozenset(static | set(const)),
            outputs,
            oracle,
            full_check,
            f"{name}#{n}" if n else name,
        )
    )


def rnd(*shape, seed=0, low=None, high=None, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) if low is None else rng.uniform(low, high, size=shape)
    return x.astype(dtype)


def i64(*values):
    return np.asarray(values, np.int64)


def f32(*values):
    return np.asarray(values, np.float32)


def scalar(value, dtype=np.int64):
    return np.asarray(value, dtype)


X = rnd(2, 3, 4)
POS = np.abs(rnd(2, 3, 4, seed=1)) + 0.1
UNIT = rnd(2, 3, 4, seed=2, low=-0.9, high=0.9)
BOOL_A = rnd(2, 3, 4, seed=3) > 0
BOOL_B = rnd(3, 4, seed=4) > 0
IMG = rnd(2, 3, 7, 6, seed=5)
INTS = np.asarray([[-7, 7, -7, 7, 5, 0], [3, -3, 9, -9, 1, 2]], np.int64)
DIVS = np.asarray([2, 2, -2, -2, 3, 4], np.int64)

# elementwise: unary math
for op, x in [
    ("Abs", X), ("Neg", X), ("Sqrt", POS), ("Exp", X), ("Log", POS), ("Floor", X * 3), ("Ceil", X * 3),
    ("Sign", np.round(X)), ("Sin", X), ("Cos", X), ("Tan", UNIT), ("Asin", UNIT), ("Acos", UNIT), ("Atan", X),
    ("Sinh", X), ("Cosh", X), ("Asinh", X), ("Acosh", POS + 1), ("Atanh", UNIT), ("Tanh", X), ("Erf", X),
    ("Reciprocal", np.sign(X) * (np.abs(X) + 0.5)), ("Relu", X), ("Sigmoid", X * 4), ("HardSwish", X * 4),
    ("Softplus", X * 3), ("Softsign", X), ("Not", BOOL_A),
]:  # fmt: skip
    case(op, x)
case("Round", f32(-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.3, -0.7, 2.51))
case("Mish", X * 3, opset=18)
case("IsNaN", f32(1.0, np.nan, -np.inf, 0.0))
case("IsInf", f32(1.0, np.nan, -np.inf, np.inf), opset=10)
case("IsInf", f32(1.0, np.nan, -np.inf, np.inf), detect_negative=0, id="positive")
case("Relu", INTS, id="int")
case("Abs", INTS, id="int")
case("Neg", INTS, id="int-static", const=(0,))

# elementwise: binary, with broadcasting
for op in ["Add", "Sub", "Mul"]:
    case(op, X, rnd(3, 1, seed=7))
case("Add", INTS, DIVS, id="int")
case("Div", X, np.abs(rnd(4, seed=8)) + 0.5)
case("Div", INTS, DIVS, id="int-truncates")
case("Div", INTS, DIVS, id="int-static", const=(0, 1))
case("Mod", INTS, DIVS)
case("Mod", X * 5, f32(1.5, -2.0, 2.5, 3.0), fmod=1, id="fmod")
case("Pow", POS, rnd(3, 4, seed=9))
case("Pow", X, f32(2.0), const=(1,), id="static-square")
case("Pow", POS, f32(-0.5), const=(1,), id="static-rsqrt")
case("Pow", X, i64(3), const=(1,), opset=15, id="int-exponent")
for op, a, b in [
    ("Equal", INTS, DIVS), ("Less", X, rnd(4, seed=10)), ("Greater", X, rnd(3, 1, seed=11)),
    ("LessOrEqual", INTS, DIVS), ("GreaterOrEqual", INTS, DIVS), ("And", BOOL_A, BOOL_B), ("Or", BOOL_A, BOOL_B),
    ("Xor", BOOL_A, BOOL_B),
]:  # fmt: skip
    case(op, a, b)
case("Equal", X, X[:, :, :1], id="float")
case("Less", INTS, DIVS, id="static", const=(0, 1))
for op in ["Max", "Min", "Sum", "Mean"]:
    case(op, X, rnd(3, 1, seed=12), rnd(4, seed=13))
    case(op, X, id="single")
case("Max", INTS, DIVS, id="int-static", const=(0, 1))
case("Where", BOOL_A, X, rnd(4, seed=14))
case("Where", BOOL_B, INTS[:1, :4] * np.ones((3, 1), np.int64), DIVS[:4], id="int")

# elementwise: casts and identity
case("Cast", X * 3, to=TensorProto.INT32, opset=13)
case("Cast", X * 3, to=TensorProto.INT64, opset=19, saturate=1, id="int64")
case("Cast", INTS, to=TensorProto.FLOAT, id="int-to-float")
case("Cast", X, to=TensorProto.BOOL, id="to-bool")
case("Cast", BOOL_A, to=TensorProto.FLOAT, id="from-bool")
case("Cast", X, to=TensorProto.DOUBLE, opset=21, id="to-double")
case("Cast", INTS, to=TensorProto.INT32, const=(0,), id="static")
case("CastLike", X * 3, INTS[:1, :1], opset=15)
case("CastLike", INTS, X[:1, :1, 0], opset=19, id="to-float")
case("Identity", X)
case("Identity", INTS, const=(0,), id="static")

# elementwise: Clip (attributes before opset 11, inputs after), Dropout (inference)
case("Clip", X, opset=6, min=-0.5, max=0.7, id="attrs")
case("Clip", X, opset=6, min=-0.5, id="attr-min")
case("Clip", X, f32(-0.5), f32(0.7), opset=11, const=(1, 2))
case("Clip", X, f32(-0.5), None, opset=13, const=(1,), id="min-only")
case("Clip", X, None, f32(0.2), opset=13, const=(2,), id="max-only")
case("Clip", X, opset=13, id="none")
case("Clip", X, f32(-0.5), f32(0.7), opset=13, id="dynamic-bounds")
case("Clip", INTS, i64(-3), i64(4), opset=13, const=(1, 2), id="int")
case("Dropout", X, ratio=0.3, opset=7, id="opset7")
case("Dropout", X, ratio=0.3, opset=10, outputs=2, id="opset10")
case("Dropout", X, scalar(0.3, np.float32), scalar(False, bool), opset=13, const=(1, 2), outputs=2)
case("Dropout", X, opset=13, id="one-output")

# elementwise: activations
case("HardSigmoid", X * 4)
case("HardSigmoid", X * 4, alpha=1 / 6, beta=0.5, id="keras3")
case("LeakyRelu", X)
case("LeakyRelu", X, alpha=0.2, opset=16, id="alpha")
case("PRelu", X, rnd(3, 1, seed=15), const=(1,))
case("PRelu", X, f32(0.25), const=(1,), id="scalar")
case("PRelu", X, rnd(4, seed=16), opset=9, id="dynamic-slope")
case("ThresholdedRelu", X, alpha=0.5, opset=10)
case("Elu", X, alpha=0.7)
case("Selu", X)
case("Selu", X, alpha=1.5, gamma=2.0, id="custom")
case("Celu", X, alpha=2.0, opset=12)
case("Gelu", X * 3, opset=20)
case("Gelu", X * 3, approximate="tanh", opset=20, id="tanh")
case("Swish", X * 3, opset=24)
case("Swish", X * 3, alpha=0.5, opset=24, id="alpha")

# tensor: shapes
case("Shape", X, opset=13)
case("Shape", X, start=1, opset=15, id="start")
case("Shape", X, start=-2, end=-1, opset=19, id="negative")
case("Size", X)
case("Flatten", IMG)
case("Flatten", IMG, axis=0, id="axis0")
case("Flatten", IMG, axis=-2, opset=13, id="negative")
case("Reshape", IMG, i64(0, -1, 6))
case("Reshape", IMG, i64(6, 0, 0, -1), id="zeros-copy")
case("Reshape", IMG, i64(2, 3, 42), allowzero=1, id="allowzero")
case("Reshape", INTS, i64(-1), const=(0,), id="static")
case("Squeeze", X[:, :1], axes=[1], opset=11, id="attr")
case("Squeeze", X[:, :1, :, None], i64(1, -1), opset=13)
case("Squeeze", X[:1, :, :1], opset=13, id="all")
case("Unsqueeze", X, axes=[0, -1], opset=11, id="attr")
case("Unsqueeze", X, i64(-1, 1), opset=13)
case("Unsqueeze", i64(4), i64(0), opset=13, const=(0,), id="static-scalar")
case("Transpose", X)
case("Transpose", X, perm=[1, 0, 2], id="perm")
case("Expand", rnd(3, 1, seed=17), i64(2, 1, 4))
case("Expand", X, i64(3, 1), id="smaller-shape")
case("Tile", X, i64(2, 1, 3))
case("ConstantOfShape", i64(2, 3), opset=9)
case("ConstantOfShape", i64(4), value=numpy_helper.from_array(i64(7)), id="int")
case("ConstantOfShape", np.zeros(0, np.int64), value=numpy_helper.from_array(f32(2.5)), opset=21, id="scalar")
case("Constant", value=numpy_helper.from_array(rnd(2, 3)), opset=9)
case("Constant", value_float=1.5, opset=13, id="float")
case("Constant", value_floats=[1.5, -2.0], opset=13, id="floats")
case("Constant", value_int=3, opset=13, id="int")
case("Constant", value_ints=[3, -1], opset=13, id="ints")
case("Range", scalar(2), scalar(11), scalar(3), const=(0, 1, 2), opset=11)
case("Range", *(scalar(v, np.float32) for v in (1.0, -1.2, -0.5)), const=(0, 1, 2), id="float")

# tensor: joining, splitting, indexing
case("Concat", X, rnd(2, 3, 1, seed=18), rnd(2, 3, 2, seed=19), axis=-1)
case("Concat", i64(1, 2), i64(3), np.zeros(0, np.int64), axis=0, const=(0, 1, 2), id="static")
case("Split", IMG, axis=2, split=[3, 4], opset=11, outputs=2, id="attr")
case("Split", IMG, i64(1, 2), axis=1, opset=13, outputs=2)
case("Split", IMG, axis=-1, num_outputs=4, opset=18, outputs=4, id="num-outputs-uneven")
case("Split", IMG, axis=1, num_outputs=3, opset=18, outputs=3, id="num-outputs")
case("Split", IMG, axis=-2, opset=11, outputs=7, id="equal-attr")
case("Split", IMG, axis=3, opset=13, outputs=3, id="equal")
case("Slice", X, starts=[1, -3], ends=[100, -1], axes=[2, 1], opset=9, id="attrs")
case("Slice", X, i64(0, 1), i64(1, 3), opset=13, id="default-axes")
case("Slice", X, i64(-1, 3), i64(-100, 0), i64(2, -2), i64(-1, -2), opset=13)
case("Slice", X, i64(2**62), i64(-(2**62)), i64(2), i64(-1), opset=13, id="reverse-clamped")
case("Slice", X, i64(1), i64(2**62), i64(2), i64(2), opset=10, id="step")
case("Slice", i64(2, 3, 4, 5), i64(1), i64(-1), i64(0), const=(0,), id="static")
case("Gather", rnd(5, 3, seed=20), np.asarray([[0, 4], [2, -1]], np.int64))
case("Gather", rnd(5, 3, seed=20), np.asarray([[0, 4], [2, -1]], np.int64), const=(1,), id="static-indices")
case("Gather", X, i64(2), axis=1, const=(1,), id="scalar-axis1")
case("Gather", i64(2, 3, 4), i64(-1), const=(0, 1), id="static-shape")
case("GatherElements", X, np.asarray([[[0, 1, 2, 1], [2, 1, 0, -1]]] * 2, np.int64), axis=1)
case("GatherElements", X, np.asarray([[[3, 0], [1, 1], [-4, 2]]] * 2, np.int64), axis=-1, oracle="onnxruntime",
     id="last")  # fmt: skip
case("GatherND", X, np.asarray([[0, 1], [1, 2], [1, 0]], np.int64))
case("GatherND", X, np.asarray([[0, 1], [1, -2], [-1, -1]], np.int64), oracle="onnxruntime", id="negative")
case("GatherND", X, np.asarray([[[1], [0]], [[2], [2]]], np.int64), batch_dims=1, opset=12, id="batch")
case("GatherND", X, np.asarray([[0, 2, 3], [1, 0, 0]], np.int64), opset=11, id="full")
case("OneHot", np.asarray([[0, 2], [-1, 1]], np.int64), scalar(3), f32(-1.0, 2.0), const=(2,))
case("OneHot", np.asarray([0, 3, 1], np.int64), i64(4), f32(0.0, 1.0), axis=0, opset=9, oracle="onnxruntime",
     id="axis0")  # fmt: skip

# tensor: padding, depth <-> space
case("Pad", X, pads=[0, 1, 2, 0, 0, 1], value=1.5, opset=2, id="attrs")
case("Pad", X, i64(0, 1, 2, 0, 0, 1), f32(1.5), opset=11, const=(2,))
case("Pad", X, i64(0, 1, 2, 0, 2, 1), mode="reflect", opset=13, id="reflect")
case("Pad", X, i64(0, 1, 2, 0, 2, 1), mode="edge", opset=13, id="edge")
case("Pad", X, i64(1, 3, 0, 2), None, i64(1, -1), opset=18, id="axes")
case("Pad", X, i64(0, 1, 2, 0, 2, 1), mode="wrap", opset=19, id="wrap")
case("Pad", X, i64(0, -1, 2, 0, 1, -2), opset=13, oracle="onnxruntime", id="negative")
case("Pad", IMG, i64(0, 0, 1, 1, 0, 0, 1, 1), f32(-2.0), opset=11, id="dynamic-value")
case("DepthToSpace", rnd(2, 8, 2, 3, seed=21), blocksize=2)
case("DepthToSpace", rnd(2, 8, 2, 3, seed=21), blocksize=2, mode="CRD", id="crd")
case("SpaceToDepth", rnd(2, 2, 4, 6, seed=22), blocksize=2)

# tensor: reductions (axes: attribute before opset 13 / 18, input after)
REDUCE_INPUT = {
    "ReduceL1": X,
    "ReduceL2": X,
    "ReduceLogSum": POS,
    "ReduceLogSumExp": X * 3,
    "ReduceProd": X + 1,
}
for op in ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
           "ReduceLogSumExp", "ReduceSumSquare"]:  # fmt: skip
    x = REDUCE_INPUT.get(op, X)
    case(op, x, i64(1, -1), opset=18)
    case(op, x, i64(0), keepdims=0, opset=18, id="keepdims0")
    case(op, x, opset=18, id="all-axes")
    case(op, x, axes=[2], keepdims=0, opset=11, id="attr")
case("ReduceSum", X, i64(-1), opset=13, id="input-opset13")
case("ReduceSum", X, np.zeros(0, np.int64), noop_with_empty_axes=1, opset=13, id="noop")
case("ReduceMean", X, axes=[0, 2], opset=13, id="attr-opset13")
case("ReduceMax", X, noop_with_empty_axes=1, opset=18, id="noop")
case("ReduceSum", INTS, i64(1), const=(0,), opset=13, id="int-static")
case("ReduceMax", INTS, i64(0), opset=18, id="int")
TIES = np.asarray([[1, 5, 5, 0], [7, 2, 7, 7], [3, 3, 3, 3]], np.int64)
for op in ["ArgMax", "ArgMin"]:
    case(op, X, axis=1)
    case(op, X, axis=-1, keepdims=0, id="keepdims0")
    case(op, TIES, axis=1, select_last_index=1, opset=12, id="last-ties")
    case(op, TIES, axis=1, id="first-ties")
    case(op, TIES, axis=0, keepdims=0, const=(0,), id="static")
case("TopK", X, k=2, axis=1, opset=9, outputs=2, id="attr")
case("TopK", X, i64(3), opset=11, outputs=2)
case("TopK", X, i64(2), axis=1, largest=0, opset=11, outputs=2, id="smallest")
case("TopK", INTS, i64(4), const=(0,), opset=11, outputs=2, id="static")
case("CumSum", X, scalar(1), opset=11)
case("CumSum", X, scalar(-1), exclusive=1, opset=14, id="exclusive")
case("CumSum", X, scalar(2), reverse=1, id="reverse")
case("CumSum", X, scalar(0), exclusive=1, reverse=1, id="exclusive-reverse")
case("CumSum", INTS, scalar(1), const=(0,), id="int-static")
case("Trilu", X, opset=14)
case("Trilu", X, scalar(1), upper=0, id="lower")
case("Trilu", X, scalar(-1), id="upper-k")

# tensor: Resize
SMALL = rnd(1, 2, 3, 4, seed=23)
case("Resize", SMALL, None, f32(1, 1, 2, 2), mode="nearest", coordinate_transformation_mode="asymmetric",
     nearest_mode="floor", opset=13)  # fmt: skip
case("Resize", SMALL, f32(1, 1, 2, 2), mode="nearest", opset=10, oracle="onnxruntime", id="opset10")
case("Resize", SMALL, f32(1, 1, 2, 2.5), mode="linear", opset=10, oracle="onnxruntime", id="opset10-linear")
case("Resize", SMALL, None, f32(1, 1, 2, 1.5), mode="linear", opset=13, id="linear-half-pixel")
case("Resize", SMALL, None, f32(1, 1, 0.6, 0.5), mode="linear", opset=13, id="linear-down")
case("Resize", SMALL, None, None, i64(1, 2, 5, 7), mode="linear", coordinate_transformation_mode="align_corners",
     opset=13, id="align-corners-sizes")  # fmt: skip
case("Resize", SMALL, None, f32(1, 1, 2, 2), mode="linear", coordinate_transformation_mode="pytorch_half_pixel",
     opset=13, id="pytorch-half-pixel")  # fmt: skip
case("Resize", SMALL, None, f32(1, 1, 1.7, 2.3), mode="nearest", opset=13, id="nearest-default")
case("Resize", SMALL, None, f32(1, 1, 1.7, 2.3), mode="nearest", nearest_mode="round_prefer_ceil",
     coordinate_transformation_mode="half_pixel", opset=13, id="nearest-ceil")  # fmt: skip
case("Resize", SMALL, None, f32(1, 1, 2, 2), mode="cubic", opset=13, id="cubic")
case("Resize", SMALL, None, f32(1, 1, 1.5, 2), mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5, opset=13,
     id="cubic-exclude")  # fmt: skip
case("Resize", SMALL, f32(0, 0, 0.2, 0.1, 1, 1, 0.9, 0.8), None, i64(1, 2, 4, 3), mode="linear",
     coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.0, opset=13, id="crop")  # fmt: skip
case("Resize", SMALL, None, None, i64(6, 8), axes=[2, 3], mode="linear", opset=18, id="axes-sizes")
case("Resize", SMALL, None, None, i64(6, 6), axes=[2, 3], mode="nearest", keep_aspect_ratio_policy="not_larger",
     opset=18, id="not-larger")  # fmt: skip
case("Resize", SMALL, None, f32(2.0, 1.5), axes=[2, 3], mode="linear",
     coordinate_transformation_mode="half_pixel_symmetric", opset=19, id="half-pixel-symmetric")  # fmt: skip

# nn: products
case("MatMul", rnd(3, 4, seed=24), rnd(4, 5, seed=25))
case("MatMul", X, rnd(4, 2, seed=26), id="batched")
case("MatMul", rnd(4, seed=27), rnd(2, 4, 3, seed=28), opset=13, id="vector")
case("Gemm", rnd(3, 4, seed=29), rnd(4, 5, seed=30), rnd(5, seed=31), opset=13)
case("Gemm", rnd(4, 3, seed=29), rnd(5, 4, seed=30), rnd(3, 1, seed=31), transA=1, transB=1, alpha=0.5, beta=2.0,
     opset=11, id="trans")  # fmt: skip
case("Gemm", rnd(3, 4, seed=29), rnd(4, 5, seed=30), opset=13, id="no-c")
case("Einsum", rnd(3, 4, seed=32), rnd(4, 5, seed=33), equation="ij,jk->ik", opset=12)
case("Einsum", X, rnd(2, 4, 5, seed=34), equation="bij, bjk -> bik", id="batched")
case("Einsum", rnd(3, 4, seed=32), rnd(4, 5, seed=33), equation="ij,jk", id="implicit")
case("Einsum", X, equation="bij->bj", id="reduce")

# nn: softmax family (opset < 13 coerces to 2-D at axis)
for op in ["Softmax", "LogSoftmax", "Hardmax"]:  # the reference applies opset 13's rule to opset 11
    case(op, X, axis=1, opset=11, oracle="onnxruntime", id="opset11")
    case(op, X, opset=11, oracle="onnxruntime", id="opset11-default")
    case(op, X, axis=1, opset=13)
    case(op, X, opset=13, id="default")

# nn: normalisation
C3 = [rnd(3, seed=35), rnd(3, seed=36), rnd(3, seed=37), np.abs(rnd(3, seed=38)) + 0.5]
case("BatchNormalization", IMG, *C3, epsilon=1e-3, opset=15)
case("BatchNormalization", IMG, *C3, opset=9, oracle="onnxruntime", id="opset9")  # the reference trains
case("BatchNormalization", X, *C3, opset=15, training_mode=0, id="1d")
case("BatchNormalization", IMG, *C3, opset=7, spatial=1, oracle="onnxruntime", id="opset7")
case("InstanceNormalization", IMG, rnd(3, seed=39), rnd(3, seed=40), epsilon=1e-3)
case("LayerNormalization", X, rnd(4, seed=41), rnd(4, seed=42), opset=17)
case("LayerNormalization", X, rnd(3, 4, seed=41), rnd(3, 4, seed=42), axis=1, epsilon=1e-3, outputs=3, opset=17,
     id="axis1-outputs")  # fmt: skip
case("LayerNormalization", X, rnd(4, seed=41), opset=17, id="no-bias")
case("GroupNormalization", rnd(2, 4, 3, 2, seed=43), rnd(4, seed=44), rnd(4, seed=45), num_groups=2, opset=21)
case("GroupNormalization", rnd(2, 4, 3, 2, seed=43), rnd(2, seed=44), rnd(2, seed=45), num_groups=2, epsilon=1e-3,
     opset=18, full_check=False, id="per-group")  # fmt: skip
case("LpNormalization", X)
case("LpNormalization", X, axis=1, p=1, oracle="onnxruntime", id="p1")  # the reference forgets |x|

# nn: convolution
W2 = rnd(4, 3, 3, 2, seed=46)
case("Conv", IMG, W2, rnd(4, seed=47), opset=11)
case("Conv", IMG, W2, pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2], id="pads-strides-dilations")
case("Conv", IMG, W2, auto_pad="SAME_UPPER", strides=[2, 2], id="same-upper")
case("Conv", IMG, W2, auto_pad="SAME_LOWER", strides=[2, 2], id="same-lower")
case("Conv", IMG, W2, auto_pad="VALID", id="valid")
case(
    "Conv", rnd(2, 4, 9, seed=48), rnd(6, 2, 3, seed=49), rnd(6, seed=50), group=2, pads=[1, 1], id="1d-group"
)
case("Conv", rnd(1, 2, 4, 5, 3, seed=51), rnd(3, 2, 2, 3, 2, seed=52), strides=[1, 2, 1], id="3d")
case("Conv", IMG, rnd(3, 1, 3, 3, seed=53), group=3, kernel_shape=[3, 3], pads=[1, 1, 1, 1], id="depthwise")
case("ConvTranspose", IMG, rnd(3, 2, 3, 3, seed=54), rnd(2, seed=55))
case("ConvTranspose", IMG, rnd(3, 2, 3, 2, seed=54), strides=[2, 3], pads=[1, 0, 1, 1], id="strides-pads")
case("ConvTranspose", IMG, rnd(3, 2, 3, 3, seed=54), strides=[2, 2], output_padding=[1, 0], dilations=[1, 2],
     id="output-padding")  # fmt: skip
case("ConvTranspose", IMG, rnd(3, 2, 3, 3, seed=54), strides=[2, 2], output_shape=[15, 12], oracle="onnxruntime",
     id="output-shape")  # fmt: skip
case("ConvTranspose", IMG, rnd(3, 2, 3, 3, seed=54), strides=[2, 2], auto_pad="SAME_UPPER", id="same-upper")
case("ConvTranspose", rnd(2, 4, 6, seed=56), rnd(4, 3, 3, seed=57), rnd(6, seed=58), group=2, strides=[2],
     oracle="onnxruntime", id="1d-group")  # fmt: skip

# nn: pooling
case("MaxPool", IMG, kernel_shape=[3, 2])
case("MaxPool", IMG, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 0], id="pads-strides")
case("MaxPool", IMG, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, id="ceil")
case("MaxPool", IMG, kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], ceil_mode=1, full_check=False,
     id="ceil-pads")  # fmt: skip
case("MaxPool", IMG, kernel_shape=[2, 2], dilations=[2, 1], opset=12, id="dilations")
case("MaxPool", IMG, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER", id="same-upper")
case("MaxPool", IMG, kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_LOWER", oracle="onnxruntime",
     id="same-lower")  # fmt: skip
case("MaxPool", rnd(2, 3, 9, seed=59), kernel_shape=[3], strides=[2], opset=8, id="1d")
case("MaxPool", rnd(1, 2, 4, 5, 3, seed=60), kernel_shape=[2, 2, 2], id="3d")
case("AveragePool", IMG, kernel_shape=[3, 2])
case("AveragePool", IMG, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 0], id="pads-exclude")
case("AveragePool", IMG, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 0], count_include_pad=1,
     id="pads-include")  # fmt: skip
case("AveragePool", IMG, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, id="ceil")
case("AveragePool", IMG, kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1, count_include_pad=1,
     full_check=False, id="ceil-include")  # fmt: skip
case("AveragePool", IMG, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER", id="same-upper")
case("AveragePool", IMG, kernel_shape=[2, 2], dilations=[2, 2], opset=19, id="dilations")
case("AveragePool", rnd(2, 3, 9, seed=61), kernel_shape=[4], strides=[3], opset=7, id="1d")
case("GlobalAveragePool", IMG)
case("GlobalAveragePool", rnd(2, 3, 5, seed=62), id="1d")
case("GlobalMaxPool", IMG)


# ---------------------------------------------------------------- running a row
def _tensor_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _build(c: Case, output_like=None) -> onnx.ModelProto:
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(c.inputs)]
    while names and not names[-1]:
        names.pop()
    outputs = [f"out{j}" for j in range(c.n_outputs)]
    node = helper.make_node(c.op, names, outputs, name=f"{c.op}_node", **c.attrs)
    inits = [
        numpy_helper.from_array(c.inputs[i], names[i]) for i in sorted(c.const) if i < len(names) and names[i]
    ]
    graph_inputs = [
        helper.make_tensor_value_info(names[i], _tensor_type(c.inputs[i].dtype), c.inputs[i].shape)
        for i in c.dynamic
    ]
    if output_like is None:
        outs = [helper.make_empty_tensor_value_info(o) for o in outputs]
    else:
        outs = [
            helper.make_tensor_value_info(o, _tensor_type(w.dtype), w.shape)
            for o, w in zip(outputs, output_like)
        ]
    graph = helper.make_graph([node], "one_node", graph_inputs, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", c.opset)], ir_version=10)


def _feeds(c: Case, flip: bool = False) -> dict[str, np.ndarray]:
    """The data inputs; ``flip`` reverses the values of the float and bool ones (a second, different sample from
    the same value domain; integer inputs are often indices and stay as they are)."""
    out = {}
    for i in c.dynamic:
        v = np.asarray(c.inputs[i])
        out[f"in{i}"] = v.reshape(-1)[::-1].reshape(v.shape) if flip and v.dtype.kind in "fb" else v
    return out


def _oracle(c: Case, model: onnx.ModelProto, feeds) -> list[np.ndarray]:
    if c.oracle == "onnxruntime":
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


@functools.cache
def _prepared(c: Case):
    """(model, OnnxFunction, oracle outputs for the feeds and for the flipped feeds)."""
    draft = _build(c)
    want = _oracle(c, draft, _feeds(c))
    model = _build(c, want)
    if c.full_check:
        onnx.checker.check_model(model, full_check=True)
    want_flipped = _oracle(c, model, _feeds(c, flip=True)) if c.dynamic else want
    return model, OnnxFunction(model, output=0), want, want_flipped


def _outputs(c: Case) -> list[str]:
    return [f"out{j}" for j in range(c.n_outputs)]


def assert_matches(got, want, *, exact_dtype: bool, what: str):
    want = np.asarray(want)
    dtypes = (
        {want.dtype} if exact_dtype else {want.dtype, np.dtype(jax.dtypes.canonicalize_dtype(want.dtype))}
    )
    assert np.asarray(got).dtype in dtypes, f"{what}: dtype {np.asarray(got).dtype}, expected {dtypes}"
    assert np.shape(got) == want.shape, f"{what}: shape {np.shape(got)}, expected {want.shape}"
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(np.asarray(got, want.dtype), want, rtol=RTOL, atol=ATOL, err_msg=what)
    else:
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=what)


# Ops computed with jax only (no numpy path): folding them is the eager JAX path, slow to test and no different.
JAX_ONLY = {
    "Erf", "Sigmoid", "Elu", "Selu", "Celu", "Softplus", "Mish", "Gelu", "Swish", "Softmax", "LogSoftmax", "Conv",
    "ConvTranspose", "MaxPool", "AveragePool",
}  # fmt: skip


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_op_matches_reference(c: Case):
    _, fn, want, want_flipped = _prepared(c)
    outs = _outputs(c)

    # 1. everything static: folded at trace time into numpy values with ONNX's exact dtypes
    if c.op not in JAX_ONLY or not c.dynamic:
        got = fn.run(dict(fn.params), _feeds(c), outs)
        for o, w in zip(outs, want):
            assert isinstance(got[o], np.ndarray), f"static {o} was not folded: {type(got[o])}"
            assert_matches(got[o], w, exact_dtype=True, what=f"static {o}")

    # 2. jit(vmap) over two samples, as Model.apply is batched
    if c.dynamic:
        params = {k: jnp.asarray(v) for k, v in fn.params.items()}
        stacked = {k: np.stack([v, f]) for (k, v), f in zip(_feeds(c).items(), _feeds(c, flip=True).values())}
        run = jax.jit(jax.vmap(lambda p, xs: fn.run(p, xs, outs), in_axes=(None, 0)))
        got = run(params, stacked)
        for o, w, wf in zip(outs, want, want_flipped):
            assert_matches(got[o][0], w, exact_dtype=False, what=f"jit(vmap) {o}[0]")
            assert_matches(got[o][1], wf, exact_dtype=False, what=f"jit(vmap) {o}[1]")


# ---------------------------------------------------------------- derivatives
GRAD_ROWS = [
    "Conv-pads-strides-dilations", "Conv-1d-group", "ConvTranspose-output-padding", "MaxPool-ceil-pads",
    "AveragePool-ceil-include", "BatchNormalization", "InstanceNormalization", "Resize-linear-half-pixel",
    "Resize-cubic", "Gather", "Pad-reflect", "Slice", "Gelu", "Gelu-tanh", "Softmax-opset11", "TopK",
    "CumSum-exclusive-reverse", "ReduceLogSumExp", "ReduceL2", "Pow-static-square", "Selu", "Mish", "HardSigmoid",
    "PRelu", "Einsum-batched", "Gemm-trans", "Div", "Clip-dynamic-bounds", "Expand", "Tile", "Split", "GatherND-batch",
    # stash_type=1: statistics in float32 even for float64 data, so finite differences need a larger step
    "LayerNormalization-axis1-outputs", "GroupNormalization",
]  # fmt: skip
FLOAT32_INSIDE = {"LayerNormalization", "GroupNormalization"}
BY_ID = {c.id: c for c in CASES}


@pytest.mark.parametrize("row", GRAD_ROWS)
def test_forward_reverse_and_finite_differences_agree(row):
    """d <w, f(x)> / dx along a random direction: jvp == vjp == central differences, in float64."""
    c = BY_ID[row]
    _, fn, _, _ = _prepared(c)
    outs = _outputs(c)
    float_inputs = [k for k, v in _feeds(c).items() if v.dtype.kind == "f"]
    eps, rtol, agree = (1e-3, 1e-3, 1e-6) if c.op in FLOAT32_INSIDE else (1e-6, 1e-6, 1e-12)
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v, jnp.float64) for k, v in fn.params.items()}
        base = {k: jnp.asarray(v, jnp.float64 if k in float_inputs else None) for k, v in _feeds(c).items()}
        x0 = {k: base[k] for k in float_inputs}
        rng = np.random.default_rng(0)
        shapes = jax.eval_shape(lambda xs: fn.run(params, {**base, **xs}, outs), x0)
        weights = {
            o: rng.normal(size=shapes[o].shape) for o in outs if jnp.issubdtype(shapes[o].dtype, jnp.floating)
        }
        direction = {k: rng.normal(size=v.shape) for k, v in x0.items()}

        def scalar(xs):
            ys = fn.run(params, {**base, **xs}, outs)
            return sum(jnp.sum(w * ys[o]) for o, w in weights.items())

        @jax.jit
        def derivatives(x0, direction):
            _, forward = jax.jvp(scalar, (x0,), (direction,))
            grads = jax.grad(scalar)(x0)
            terms = [grads[k] * direction[k] for k in x0]
            reverse = sum(jnp.sum(t) for t in terms)
            scale = sum(jnp.sum(jnp.abs(t)) for t in terms)
            plus = scalar({k: x0[k] + eps * direction[k] for k in x0})
            minus = scalar({k: x0[k] - eps * direction[k] for k in x0})
            return forward, reverse, (plus - minus) / (2 * eps), scale

        forward, reverse, fd, scale = (float(v) for v in derivatives(x0, direction))
        assert scale > 1e-3, "the derivative is zero: nothing was tested"
        np.testing.assert_allclose(forward, reverse, rtol=0, atol=agree * scale)
        np.testing.assert_allclose(forward, fd, rtol=0, atol=rtol * scale)


def test_jit_equals_no_jit():
    for row in [
        "Conv-1d-group",
        "Resize-cubic",
        "LayerNormalization-axis1-outputs",
        "Gather",
        "AveragePool-ceil",
    ]:
        c = BY_ID[row]
        _, fn, _, _ = _prepared(c)
        params = {k: jnp.asarray(v) for k, v in fn.params.items()}
        inputs = {k: jnp.asarray(v) for k, v in _feeds(c).items()}
        eager = fn.run(params, inputs, _outputs(c))
        jitted = jax.jit(lambda p, xs, fn=fn, c=c: fn.run(p, xs, _outputs(c)))(params, inputs)
        for o in _outputs(c):
            np.testing.assert_allclose(
                np.asarray(jitted[o]), np.asarray(eager[o]), rtol=1e-6, atol=1e-7, err_msg=row
            )


# ---------------------------------------------------------------- the registry
def _feed_forward_ops() -> list[str]:
    return [op for op in supported_ops() if not get_op(op).fn.__module__.endswith((".rnn", ".control"))]


def test_every_feed_forward_op_has_a_row():
    missing = sorted(set(_feed_forward_ops()) - {c.op for c in CASES})
    assert not missing, f"ops without a one-node test row: {missing}"


def test_every_schema_attribute_is_accepted():
    """Each op function takes every attribute that the op's ONNX schema defines in opsets 7 to 22."""
    problems = []
    for op in _feed_forward_ops():
        accepted = get_op(op).attributes
        for opset in range(7, 23):
            try:
                schema = onnx.defs.get_schema(op, opset)
            except onnx.defs.SchemaError:
                continue
            missing = set(schema.attributes) - accepted if accepted is not None else set()
            if missing:
                problems.append(f"{op} (opset {opset}): {sorted(missing)}")
    assert not problems, problems


def test_unknown_op_names_op_node_and_supported_list():
    node = helper.make_node("FancyOp", ["x"], ["y"], name="my_fancy_node")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    with pytest.raises(UnsupportedOpError) as err:
        OnnxFunction(model)
    message = str(err.value)
    assert "FancyOp" in message and "my_fancy_node" in message
    assert "Conv" in message and "LayerNormalization" in message and "Gather" in message


def test_registering_a_duplicate_op_raises():
    with pytest.raises(ValueError, match="already registered"):

        @register_op("Conv")
        def conv_again(ctx, x, w, b=None):
            return x


def test_static_shape_input_that_depends_on_data_is_a_clear_error():
    """A Reshape whose target shape is computed from the data (not from shapes) cannot be compiled."""
    nodes = [
        helper.make_node("Cast", ["s"], ["si"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "si"], ["y"], name="bad_reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    fn = OnnxFunction(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
    with pytest.raises(ConversionError, match="bad_reshape.*shape must be known at conversion time"):
        jax.jit(lambda x, s: fn.apply_batch({}, x, s))(
            np.zeros((1, 6), np.float32), np.asarray([2, 3], np.float32)
        )


def test_training_mode_dropout_is_refused():
    c = Case(
        "Dropout",
        (X, scalar(0.3, np.float32), scalar(True, bool)),
        {},
        13,
        frozenset({1, 2}),
        1,
        "",
        True,
        "",
    )
    fn = OnnxFunction(_build(c, [X]), output=0)
    with pytest.raises(ConversionError, match="training_mode"):
        fn.run({}, {"in0": jnp.asarray(X)}, ["out0"])


def test_unsupported_forms_are_clear_errors():
    """MaxPool's Indices output and Resize with antialiasing are refused with the reason, not computed wrongly."""
    for c, message in [
        (Case("MaxPool", (IMG,), {"kernel_shape": [2, 2]}, 12, frozenset(), 2, "", True, ""), "Indices"),
        (
            Case(
                "Resize",
                (IMG, None, f32(1, 1, 0.5, 0.5)),
                {"antialias": 1},
                18,
                frozenset({2}),
                1,
                "",
                True,
                "",
            ),
            "antialias",
        ),
    ]:
        fn = OnnxFunction(_build(c, [IMG] * c.n_outputs), output=0)
        with pytest.raises(ConversionError, match=message):
            fn.run({}, {"in0": jnp.asarray(IMG)}, ["out0"])


def test_sparse_constant_is_densified():
    values = numpy_helper.from_array(f32(1.5, -2.0), "values")
    for indices, dims in [(i64(1, 5), [2, 3]), (np.asarray([[0, 1], [1, 2]], np.int64), [2, 3])]:
        sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(indices, "indices"), dims)
        node = helper.make_node("Constant", [], ["y"], sparse_value=sparse)
        graph = helper.make_graph(
            [node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)]
        )
        fn = OnnxFunction(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9))
        got = fn.run({}, {}, ["y"])["y"]
        np.testing.assert_array_equal(got, [[0, 1.5, 0], [0, 0, -2.0]])


def test_op_functions_have_docstrings():
    undocumented = [op for op in _feed_forward_ops() if not inspect.getdoc(get_op(op).fn)]
    assert not undocumented, undocumented


# ---------------------------------------------------------------- exported models end to end
def _torch_mlp(seed: int):
    """Linear -> ReLU -> LayerNorm -> Dropout -> Linear -> Tanh -> GELU (erf + tanh) -> Linear -> softmax."""
    torch = pytest.importorskip("torch")

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = torch.nn.Linear(5, 16)
            self.ln = torch.nn.LayerNorm(16)
            self.drop = torch.nn.Dropout(0.3)
            self.l2 = torch.nn.Linear(16, 16)
            self.l3 = torch.nn.Linear(16, 3)

        def forward(self, x):
            h = self.ln(torch.relu(self.l1(x)))
            h = torch.tanh(self.l2(self.drop(h)))
            h = torch.nn.functional.gelu(h) + torch.nn.functional.gelu(h, approximate="tanh")
            return torch.softmax(self.l3(h), dim=-1)

    torch.manual_seed(seed)
    return torch, MLP().eval()


def _torch_export(exporter: str, opset: int, tmp_path):
    torch, net = _torch_mlp(0)
    xs = torch.randn(9, 5)
    path = str(tmp_path / "mlp.onnx")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
        torch.onnx.export(net, (xs,), path, dynamo=True, opset_version=opset, input_names=["x"],
                          dynamic_shapes={"x": {0: torch.export.Dim("n")}})  # fmt: skip
    else:
        torch.onnx.export(net, (xs,), path, dynamo=False, opset_version=opset, input_names=["x"],
                          dynamic_axes={"x": {0: "n"}})  # fmt: skip
    with torch.no_grad():
        want = net(xs).numpy()
    return path, xs.numpy(), want


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("exporter", "opset"), [("torchscript", 14), ("torchscript", 17), ("dynamo", 20)])
def test_torch_mlp_export_matches_torch(exporter, opset, tmp_path):
    path, xs, want = _torch_export(exporter, opset, tmp_path)
    model = jaxsens.Model.from_onnx(path)
    np.testing.assert_allclose(model(xs), want, rtol=1e-5, atol=1e-6)
    # the per-sample function differentiates: its Jacobian rows sum to zero (softmax output)
    jac = jax.jit(jax.jacrev(model.apply, argnums=1))(model.params, jnp.asarray(xs[0]))
    np.testing.assert_allclose(np.asarray(jac).sum(axis=0), 0.0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("opset", [11, 17])
def test_torch_cnn_export_matches_torch(opset, tmp_path):
    """Conv, BatchNorm (folded), PReLU, ceil-mode MaxPool, AvgPool without padding counts, bilinear and nearest
    Resize, InstanceNorm / GroupNorm, HardSwish / Mish / ..., ConvTranspose, global pooling, Gather (Embedding)."""
    torch = pytest.importorskip("torch")
    nn, fn = torch.nn, torch.nn.functional

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.prelu = nn.PReLU(4)
            self.up = nn.Upsample(scale_factor=2, mode="bilinear")
            self.gn = nn.GroupNorm(2, 4)
            self.inorm = nn.InstanceNorm2d(4, affine=True)
            self.deconv = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
            self.emb = nn.Embedding(10, 2)
            self.fc = nn.Linear(2, 3)

        def forward(self, x):
            h = fn.max_pool2d(self.prelu(self.bn(self.conv(x))), 2, ceil_mode=True)
            h = fn.avg_pool2d(h, 3, stride=2, padding=1, count_include_pad=False)
            h = fn.interpolate(self.up(h), scale_factor=2, mode="nearest")
            h = self.inorm(self.gn(h))
            h = (
                fn.hardswish(h)
                + fn.mish(h)
                + fn.elu(h)
                + fn.hardsigmoid(h)
                + fn.leaky_relu(h)
                + fn.softplus(h)
            )
            h = fn.adaptive_avg_pool2d(self.deconv(h), 1).flatten(1)
            tokens = torch.clamp(x[:, 0, 0, :2].abs().long(), 0, 9)
            return torch.log_softmax(self.fc(h + self.emb(tokens).mean(1)), -1)

    torch.manual_seed(0)
    net = CNN().eval()
    with torch.no_grad():
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2.0)
    xs = torch.randn(3, 3, 9, 8) * 3
    path = str(tmp_path / "cnn.onnx")
    torch.onnx.export(net, (xs,), path, dynamo=False, opset_version=opset, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})  # fmt: skip
    model = jaxsens.Model.from_onnx(path)
    with torch.no_grad():
        np.testing.assert_allclose(model(xs.numpy()), net(xs).numpy(), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize(
    ("kind", "activation", "n_classes"),
    [("classifier", "relu", 2), ("classifier", "tanh", 3), ("classifier", "logistic", 4), ("regressor", "relu", 0),
     ("regressor", "identity", 2)],
)  # fmt: skip
def test_sklearn_mlp_matches_sklearn(kind, activation, n_classes):
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(0)
    xs = rng.normal(size=(80, 4)).astype(np.float32)
    if kind == "classifier":
        est = MLPClassifier(hidden_layer_sizes=(6, 5), activation=activation, max_iter=30, random_state=0)
        y = np.digitize(
            xs[:, 0] + xs[:, 1], np.quantile(xs[:, 0] + xs[:, 1], np.linspace(0, 1, n_classes + 1)[1:-1])
        )
        with pytest.warns(Warning):
            est.fit(xs, y)
        proto = to_onnx(est, xs[:1], options={id(est): {"zipmap": False}}, target_opset=17)
        ops = {(n.domain, n.op_type) for n in proto.graph.node}
        assert ("ai.onnx.ml", "ArrayFeatureExtractor") in ops  # on the label path only: pruned away
        want = est.predict_proba(xs)
    else:
        est = MLPRegressor(hidden_layer_sizes=(6,), activation=activation, max_iter=30, random_state=0)
        y = xs[:, :n_classes] @ np.ones((n_classes, 1)) if n_classes else xs[:, 0]
        with pytest.warns(Warning):
            est.fit(xs, np.squeeze(y))
        proto = to_onnx(est, xs[:1], target_opset=17)
        want = est.predict(xs).reshape(len(xs), -1)
    model = jaxsens.Model.from_onnx(proto)
    got = model(xs)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-6)
