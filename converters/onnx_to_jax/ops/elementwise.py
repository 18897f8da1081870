"""Elementwise ONNX ops: arithmetic, math functions, comparisons and logic, activations, casts.

Every op here maps one or more broadcastable tensors to a tensor of the broadcast shape. When every input is a numpy
value (a constant known at conversion time) the op computes with numpy, so folded shape arithmetic keeps ONNX's exact
dtypes (``int64``, ``float64``); otherwise it computes with ``jax.numpy`` (under ``jit``/``vmap``, differentiable).

Semantics follow the ONNX operator specification for opsets 7 to 22 (and ``Swish`` of opset 24):
integer ``Div`` truncates toward zero, ``Round`` rounds half to even, ``Mod`` follows the sign of the divisor unless
``fmod=1``, ``Pow`` returns the base's dtype, ``Clip`` takes ``min``/``max`` as attributes before opset 11 and as
inputs from opset 11, and ``Dropout`` is the inference identity (its mask output is all ``True``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from converters.onnx_to_jax.registry import register_op
from converters.onnx_to_jax.static import is_static, xp_of

__all__ = ["broadcast", "is_static", "onnx_dtype", "xp_of"]  # is_static, xp_of: from .static (one rule)


def broadcast(ctx, *values) -> tuple[int, ...]:
    """The broadcast shape of ``values`` (ONNX multidirectional broadcasting), or an error naming the shapes."""
    shapes = [tuple(np.shape(v)) for v in values if v is not None]
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ctx.error(f"input shapes {shapes} do not broadcast together") from None


def onnx_dtype(ctx, to: int, *, canonical: bool) -> np.dtype:
    """The numpy dtype of ONNX ``TensorProto`` data type ``to``; ``canonical``: as JAX represents it (no x64)."""
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, ValueError):
        raise ctx.error(f"unknown ONNX data type {to!r}") from None
    if dtype.kind in "OSU":
        raise ctx.error(f"string tensors (ONNX data type {to}) are not supported; only numeric types are")
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype)) if canonical else dtype


# ---------------------------------------------------------------- trivial unary and binary ops
def _register_unary(op_type: str, name: str, doc: str):
    """Register ``op_type`` as ``xp.<name>(x)`` (numpy for static inputs, ``jax.numpy`` otherwise)."""

    def op(ctx, x):
        return getattr(xp_of(x), name)(x)

    op.__name__ = op.__qualname__ = op_type.lower()
    op.__doc__ = f"ONNX ``{op_type}``: {doc}."
    register_op(op_type)(op)


for _op, _name, _doc in [
    ("Abs", "abs", "``|x|``"),
    ("Neg", "negative", "``-x``"),
    ("Sqrt", "sqrt", "square root"),
    ("Exp", "exp", "exponential"),
    ("Log", "log", "natural logarithm"),
    ("Reciprocal", "reciprocal", "``1 / x``"),
    ("Floor", "floor", "round down"),
    ("Ceil", "ceil", "round up"),
    ("Round", "round", "round half to even"),
    ("Sign", "sign", "-1, 0 or 1"),
    ("Sin", "sin", "sine"),
    ("Cos", "cos", "cosine"),
    ("Tan", "tan", "tangent"),
    ("Asin", "arcsin", "inverse sine"),
    ("Acos", "arccos", "inverse cosine"),
    ("Atan", "arctan", "inverse tangent"),
    ("Sinh", "sinh", "hyperbolic sine"),
    ("Cosh", "cosh", "hyperbolic cosine"),
    ("Asinh", "arcsinh", "inverse hyperbolic sine"),
    ("Acosh", "arccosh", "inverse hyperbolic cosine"),
    ("Atanh", "arctanh", "inverse hyperbolic tangent"),
    ("Tanh", "tanh", "hyperbolic tangent"),
    ("Not", "logical_not", "logical negation"),
    ("IsNaN", "isnan", "``x`` is NaN"),
]:
    _register_unary(_op, _name, _doc)


def _register_binary(op_type: str, name: str, doc: str):
    """Register ``op_type`` as the broadcasting ``xp.<name>(a, b)``."""

    def op(ctx, a, b):
        broadcast(ctx, a, b)
        return getattr(xp_of(a, b), name)(a, b)

    op.__name__ = op.__qualname__ = op_type.lower()
    op.__doc__ = f"ONNX ``{op_type}``: {doc} (multidirectional broadcasting)."
    register_op(op_type)(op)


for _op, _name, _doc in [
    ("Add", "add", "``a + b``"),
    ("Sub", "subtract", "``a - b``"),
    ("Mul", "multiply", "``a * b``"),
    ("Equal", "equal", "``a == b``"),
    ("Less", "less", "``a < b``"),
    ("Greater", "greater", "``a > b``"),
    ("LessOrEqual", "less_equal", "``a <= b``"),
    ("GreaterOrEqual", "greater_equal", "``a >= b``"),
    ("And", "logical_and", "logical and"),
    ("Or", "logical_or", "logical or"),
    ("Xor", "logical_xor", "logical exclusive or"),
]:
    _register_binary(_op, _name, _doc)


# ---------------------------------------------------------------- arithmetic
@register_op("Div")
def div(ctx, a, b):
    """``a / b``; integer division truncates toward zero (as C, ONNX Runtime and the ONNX reference do)."""
    xp = xp_of(a, b)
    broadcast(ctx, a, b)
    if np.issubdtype(a.dtype, np.integer):
        q = xp.abs(a) // xp.abs(b)
        return xp.where((a < 0) != (b < 0), -q, q).astype(a.dtype)
    return xp.divide(a, b)


@register_op("Mod")
def mod(ctx, a, b, *, fmod=0):
    """Remainder: sign of the divisor (``fmod=0``, Python's ``%``) or of the dividend (``fmod=1``, C's ``fmod``).

    ``fmod=0`` of floats (defined from opset 28, as Python's ``%`` with its special values) is computed the same way
    at every opset; a zero result takes the divisor's sign there, as the spec says."""
    xp = xp_of(a, b)
    broadcast(ctx, a, b)
    if fmod:
        return xp.fmod(a, b)
    r = xp.mod(a, b)
    if jnp.issubdtype(r.dtype, jnp.floating):
        r = xp.where(r == 0, xp.copysign(xp.zeros_like(r), b).astype(r.dtype), r)
    return r


@register_op("Pow")
def pow_(ctx, x, y):
    """``x ** y`` with the dtype of ``x``; a static integral scalar exponent uses exact repeated multiplication."""
    broadcast(ctx, x, y)
    xp = xp_of(x, y)
    if xp is jnp and is_static(y) and y.size == 1 and np.isfinite(y).all() and float(y.reshape(())) % 1 == 0:
        shape = jnp.broadcast_shapes(x.shape, y.shape)
        return jnp.broadcast_to(jax.lax.integer_pow(x, int(y.reshape(()))), shape)
    out = xp.power(x, y)
    return out.astype(x.dtype) if out.dtype != x.dtype else out


def _variadic(xp_fn_name: str, values, ctx=None):
    if ctx is not None:
        broadcast(ctx, *values)
    xp = xp_of(*values)
    return functools.reduce(getattr(xp, xp_fn_name), values)


@register_op("Max")
def max_(ctx, *data):
    """Elementwise maximum of any number of broadcastable tensors."""
    return _variadic("maximum", data, ctx)


@register_op("Min")
def min_(ctx, *data):
    """Elementwise minimum of any number of broadcastable tensors."""
    return _variadic("minimum", data, ctx)


@register_op("Sum")
def sum_(ctx, *data):
    """Elementwise sum of any number of broadcastable tensors."""
    return _variadic("add", data, ctx)


@register_op("Mean")
def mean(ctx, *data):
    """Elementwise mean of any number of broadcastable tensors."""
    total = _variadic("add", data, ctx)
    return total / np.asarray(len(data), total.dtype)


@register_op("Erf")
def erf(ctx, x):
    """The Gauss error function."""
    return jax.scipy.special.erf(x)


@register_op("IsInf")
def isinf(ctx, x, *, detect_negative=1, detect_positive=1):
    """``x`` is an infinity of a detected sign."""
    xp = xp_of(x)
    return xp.isinf(x) & (((x > 0) & bool(detect_positive)) | ((x < 0) & bool(detect_negative)))


# ---------------------------------------------------------------- selection, casts, identity
@register_op("Where")
def where(ctx, condition, x, y):
    """``x`` where ``condition`` else ``y`` (broadcasting)."""
    broadcast(ctx, condition, x, y)
    return xp_of(condition, x, y).where(condition, x, y)


@register_op("Cast")
def cast(ctx, x, *, to, saturate=1, round_mode="up"):
    """Convert to ONNX data type ``to`` (float -> int truncates toward zero); see :func:`convert` for float8 /
    float8e8m0 (``saturate``, ``round_mode``) and 4-bit / 2-bit integers."""
    xp = xp_of(x)
    return convert(ctx, x, onnx_dtype(ctx, to, canonical=xp is jnp), saturate=saturate, round_mode=round_mode)


@register_op("CastLike")
def cast_like(ctx, x, target_type, *, saturate=1, round_mode="up"):
    """Convert ``x`` to the dtype of ``target_type`` (as :func:`cast`)."""
    dtype = target_type.dtype if is_static(x) else jax.dtypes.canonicalize_dtype(target_type.dtype)
    return convert(ctx, x, dtype, saturate=saturate, round_mode=round_mode)


_FLOAT8 = frozenset({"float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"})
_NARROW_INTS = frozenset({"int4", "uint4", "int2", "uint2"})


def convert(ctx, x, dtype, *, saturate=1, round_mode="up"):
    """``x.astype(dtype)`` with ONNX ``Cast``'s rules where a plain ``astype`` (numpy's or JAX's) breaks them, so
    that folded (numpy) and traced (JAX) casts agree:

    * to float8 (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ) with ``saturate=1`` (the default), a value beyond the type's
      largest finite one, infinities included, becomes that value (signed); with ``saturate=0`` it becomes NaN (or
      infinity for E5M2);
    * to float8e8m0 (a power of two ``2**(e - 127)``): the exponent of ``|x|`` rounded by ``round_mode`` (``up``,
      ``down``, ``nearest`` with ties up); ``saturate`` stops at the largest value instead of NaN (and maps
      infinities to it); the bit-level rules of ``onnx.numpy_helper.to_float8e8m0``;
    * a float to int4 / uint4 / int2 / uint2 truncates toward zero; out of range (undefined in the ONNX spec) or
      NaN it gives 0, as the ONNX reference (``ml_dtypes``) does, where JAX would clip. Integers wrap (two's
      complement), in numpy and JAX alike.
    """
    import ml_dtypes

    xp = xp_of(x)
    name = np.dtype(dtype).name
    is_float = jnp.issubdtype(x.dtype, jnp.floating)
    if name in _FLOAT8 and saturate:
        limit = float(ml_dtypes.finfo(dtype).max)
        x = x.astype(np.float32) if not is_float else x  # every in-range integer is exact in float32
        x = xp.clip(x, xp.asarray(-limit, x.dtype), xp.asarray(limit, x.dtype))
    elif name == "float8_e8m0fnu":
        if round_mode not in ("up", "down", "nearest"):
            raise ctx.error(f"round_mode={round_mode!r} is not one of 'up', 'down', 'nearest'")
        if not is_float and np.dtype(x.dtype).itemsize > 2:
            raise ctx.error(
                f"casting {np.dtype(x.dtype).name} to float8e8m0 is not supported (values above 2**24 are not "
                f"exact in float32); cast to float32 first"
            )
        return _to_e8m0(xp, x.astype(np.float32), bool(saturate), round_mode).astype(dtype)
    elif name in _NARROW_INTS and is_float:
        info = ml_dtypes.iinfo(dtype)
        t = xp.trunc(x)
        x = xp.where((t >= info.min) & (t <= info.max), t, xp.zeros_like(t))
    return x.astype(dtype)


def _to_e8m0(xp, x, saturate: bool, round_mode: str):
    """float32 ``x`` -> float8e8m0 (see :func:`convert`)."""
    import ml_dtypes

    if xp is np:
        bits = x.view(np.uint32)
    else:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    exponent = (bits >> 23) & 0xFF
    special = exponent == 0xFF  # NaN or infinity
    if round_mode == "nearest":
        g, r, s = (bits & 0x400000) != 0, (bits & 0x200000) != 0, (bits & 0x1FFFFF) != 0
        up = g & (r | s | (exponent > 0))
    elif round_mode == "up":
        up = (bits & 0x7FFFFF) != 0
    else:
        up = xp.zeros(bits.shape, bool)
    up = up & ~special
    if saturate:
        up = up & (exponent != 0xFE)
    exponent = exponent + up.astype(exponent.dtype)
    infinite = special & ((bits & 0x7FFFFF) == 0)
    out = xp.where(special, xp.where(infinite & saturate, 0xFE, 0xFF), exponent).astype(np.uint8)
    if xp is np:
        return out.view(ml_dtypes.float8_e8m0fnu)
    return jax.lax.bitcast_convert_type(out, jnp.float8_e8m0fnu)


@register_op("Identity")
def identity(ctx, x):
    """The input, unchanged."""
    return x


@register_op("Clip")
def clip(ctx, x, min_input=None, max_input=None, *, min=None, max=None):
    """Limit ``x`` to ``[min, max]``: attributes before opset 11, optional scalar inputs from opset 11."""
    lo = min_input if min_input is not None else min
    hi = max_input if max_input is not None else max
    for what, v in (("min", lo), ("max", hi)):
        if v is not None and np.size(v) != 1:
            raise ctx.error(f"{what} must be a scalar, got shape {tuple(np.shape(v))}")
    xp = xp_of(x, lo, hi)
    if lo is not None:
        x = xp.maximum(x, xp.asarray(lo, dtype=x.dtype))
    if hi is not None:
        x = xp.minimum(x, xp.asarray(hi, dtype=x.dtype))
    return x


@register_op("Dropout", static_inputs=(1, 2))
def dropout(ctx, data, ratio_input=None, training_mode=None, *, ratio=0.5, is_test=1, seed=None):
    """Inference-mode dropout: ``(data, mask)`` with an all-``True`` mask (all ones of ``data``'s dtype before
    opset 10). Training mode (random) is refused."""
    if training_mode is not None and bool(ctx.static(training_mode, "training_mode").reshape(())):
        raise ctx.error(
            "Dropout with training_mode=True is random and has no deterministic inference form; "
            "export the model in evaluation mode (model.eval() / training=False)"
        )
    xp = xp_of(data)
    return data, xp.ones(data.shape, dtype=bool if ctx.opset >= 10 else data.dtype)


# ---------------------------------------------------------------- activations
@register_op("Relu")
def relu(ctx, x):
    """``max(x, 0)``."""
    return xp_of(x).maximum(x, 0) if is_static(x) else jax.nn.relu(x)


@register_op("Sigmoid")
def sigmoid(ctx, x):
    """The logistic function ``1 / (1 + exp(-x))``."""
    return jax.nn.sigmoid(x)


@register_op("HardSigmoid")
def hard_sigmoid(ctx, x, *, alpha=0.2, beta=0.5):
    """``max(0, min(1, alpha * x + beta))``. Keras 2's ``hard_sigmoid`` is ``alpha=0.2, beta=0.5``."""
    xp = xp_of(x)
    return xp.clip(alpha * x + beta, 0, 1).astype(x.dtype)


@register_op("HardSwish")
def hard_swish(ctx, x):
    """``x * max(0, min(1, x / 6 + 0.5))``."""
    xp = xp_of(x)
    return x * xp.clip(x / 6 + 0.5, 0, 1).astype(x.dtype)


@register_op("LeakyRelu")
def leaky_relu(ctx, x, *, alpha=0.01):
    """``x`` for ``x >= 0``, ``alpha * x`` otherwise."""
    return xp_of(x).where(x >= 0, x, alpha * x)


@register_op("PRelu")
def prelu(ctx, x, slope):
    """``x`` for ``x >= 0``, ``slope * x`` otherwise (``slope`` broadcasts to ``x``)."""
    if broadcast(ctx, x, slope) != tuple(x.shape):
        raise ctx.error(f"slope of shape {tuple(slope.shape)} does not broadcast to X's shape {tuple(x.shape)}")
    return xp_of(x, slope).where(x >= 0, x, slope * x)


@register_op("ThresholdedRelu")
def thresholded_relu(ctx, x, *, alpha=1.0):
    """``x`` for ``x > alpha``, 0 otherwise."""
    xp = xp_of(x)
    return xp.where(x > alpha, x, xp.zeros_like(x))


@register_op("Elu")
def elu(ctx, x, *, alpha=1.0):
    """``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise."""
    return jax.nn.elu(x, alpha)


@register_op("Selu")
def selu(ctx, x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    """``gamma * x`` for ``x > 0``, ``gamma * alpha * (exp(x) - 1)`` otherwise."""
    return gamma * jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))


@register_op("Celu")
def celu(ctx, x, *, alpha=1.0):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``."""
    return jax.nn.celu(x, alpha)


@register_op("Softplus")
def softplus(ctx, x):
    """``log(1 + exp(x))``, computed stably."""
    return jax.nn.softplus(x)


@register_op("Softsign")
def softsign(ctx, x):
    """``x / (1 + |x|)``."""
    return x / (1 + xp_of(x).abs(x))


@register_op("Mish")
def mish(ctx, x):
    """``x * tanh(softplus(x))``."""
    return x * jnp.tanh(jax.nn.softplus(x))


@register_op("Gelu")
def gelu(ctx, x, *, approximate="none"):
    """``x * Phi(x)`` (``approximate="none"``, with ``erf``) or its ``tanh`` approximation (opset 20)."""
    if approximate not in ("none", "tanh"):
        raise ctx.error(f"Gelu approximate={approximate!r} is not one of 'none', 'tanh'")
    return jax.nn.gelu(x, approximate=approximate == "tanh")


@register_op("Swish")
def swish(ctx, x, *, alpha=1.0):
    """``x * sigmoid(alpha * x)`` (opset 24; earlier exporters emit ``Mul(x, Sigmoid(x))``)."""
    return x * jax.nn.sigmoid(alpha * x)
