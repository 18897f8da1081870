"""Neural-network ONNX ops: matrix products, normalisation, softmax, convolution, pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from converters.onnx_to_jax.registry import register_op


@register_op("MatMul")
def matmul(ctx, a, b):
    return jnp.matmul(a, b)


@register_op("Gemm")
def gemm(ctx, a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.T if transA else a
    b = b.T if transB else b
    y = alpha * jnp.matmul(a, b) if alpha != 1.0 else jnp.matmul(a, b)
    if c is not None:
        y = y + (beta * c if beta != 1.0 else c)
    return y


def _softmax_legacy(x, axis, fn):
    # opset < 13: coerce to 2-D at `axis`, softmax over the flattened trailing block.
    axis = axis % x.ndim
    shape = x.shape
    flat = x.reshape(shape[:axis] + (-1,))
    return fn(flat, axis=-1).reshape(shape)


@register_op("Softmax")
def softmax(ctx, x, *, axis=None):
    if ctx.opset < 13:
        return _softmax_legacy(x, 1 if axis is None else axis, jax.nn.softmax)
    return jax.nn.softmax(x, axis=-1 if axis is None else axis)


@register_op("LogSoftmax")
def log_softmax(ctx, x, *, axis=None):
    if ctx.opset < 13:
        return _softmax_legacy(x, 1 if axis is None else axis, jax.nn.log_softmax)
    return jax.nn.log_softmax(x, axis=-1 if axis is None else axis)
