"""Elementwise ONNX ops: arithmetic, comparisons, activations."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from converters.onnx_to_jax.registry import register_op


@register_op("Add")
def add(ctx, a, b):
    return jnp.add(a, b)


@register_op("Sub")
def sub(ctx, a, b):
    return jnp.subtract(a, b)


@register_op("Mul")
def mul(ctx, a, b):
    return jnp.multiply(a, b)


@register_op("Relu")
def relu(ctx, x):
    return jax.nn.relu(x)


@register_op("Sigmoid")
def sigmoid(ctx, x):
    return jax.nn.sigmoid(x)


@register_op("Tanh")
def tanh(ctx, x):
    return jnp.tanh(x)
