"""Neural-network ONNX ops: matrix products, softmax, normalisation, convolution, pooling.

Layouts are ONNX's: images are ``[N, C, D1, ..., Dn]`` and convolution kernels ``[M, C / group, k1, ..., kn]``
(``ConvTranspose``: ``[C, M / group, k1, ..., kn]``), which is also the default layout of
``jax.lax.conv_general_dilated``, so 1-D, 2-D and 3-D convolutions share one implementation. Padding follows
``auto_pad``: ``NOTSET`` uses ``pads = [begin_1, ..., begin_n, end_1, ..., end_n]``, ``VALID`` none, ``SAME_UPPER`` /
``SAME_LOWER`` pad so that ``out = ceil(in / stride)`` with the odd extra element at the end / the beginning.

Normalisations are the inference forms: ``BatchNormalization`` uses the running statistics (its optional extra
outputs pass them through) and refuses ``training_mode=1``; ``LayerNormalization`` also returns ``Mean`` and
``InvStdDev`` (computed in float32 when ``stash_type=1``).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from converters.onnx_to_jax.ops.tensor import _norm_axis
from converters.onnx_to_jax.registry import check_alloc, register_op
from converters.onnx_to_jax.static import xp_of


# ---------------------------------------------------------------- products
@register_op("MatMul")
def matmul(ctx, a, b):
    """``numpy.matmul`` semantics: batched over leading axes, 1-D operands promoted and squeezed."""
    if a.ndim == 0 or b.ndim == 0:
        raise ctx.error(f"MatMul takes tensors of rank >= 1, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ctx.error(
            f"cannot multiply A {tuple(a.shape)} by B {tuple(b.shape)}: A's last axis ({k_a}) and B's "
            f"{'only' if b.ndim == 1 else 'second-to-last'} axis ({k_b}) differ"
        )
    _broadcast(ctx, a.shape[:-2], b.shape[:-2], "the batch axes of A and B")
    return xp_of(a, b).matmul(a, b)


def _broadcast(ctx, shape_a, shape_b, what: str) -> tuple[int, ...]:
    try:
        return np.broadcast_shapes(tuple(shape_a), tuple(shape_b))
    except ValueError:
        raise ctx.error(f"{what} do not broadcast: {tuple(shape_a)} and {tuple(shape_b)}") from None


@register_op("Gemm")
def gemm(ctx, a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    """``alpha * A' @ B' + beta * C`` for 2-D ``A``, ``B`` (``'`` = optional transpose); ``C`` broadcasts to
    ``[M, N]`` in one direction only (a ``C`` that would enlarge the result, e.g. ``[3, 1]`` for ``M = 1``, is
    refused, as onnxruntime does: broadcasting it would repeat the result along the batch)."""
    xp = xp_of(a, b, c)
    if a.ndim != 2 or b.ndim != 2:
        raise ctx.error(f"Gemm takes 2-D A and B, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    a = a.T if transA else a
    b = b.T if transB else b
    if a.shape[1] != b.shape[0]:
        raise ctx.error(
            f"cannot multiply A' {tuple(a.shape)} by B' {tuple(b.shape)} (transA={transA}, transB={transB}): "
            f"inner sizes {a.shape[1]} and {b.shape[0]} differ"
        )
    mn = (a.shape[0], b.shape[1])
    if c is not None and (c.ndim > 2 or _broadcast(ctx, c.shape, mn, "C and A' @ B'") != mn):
        raise ctx.error(
            f"C of shape {tuple(c.shape)} does not broadcast to the result's shape {mn} (ONNX Gemm broadcasts C "
            f"to [M, N] in one direction only)"
        )
    y = xp.matmul(a, b)
    y = alpha * y if alpha != 1.0 else y
    if c is not None:
        y = y + (beta * c if beta != 1.0 else c)
    return y


@register_op("Einsum")
def einsum(ctx, *inputs, equation):
    """Einstein summation with numpy's ``equation`` syntax (implicit output: sorted once-appearing labels)."""
    xp = xp_of(*inputs)
    if any(np.dtype(v.dtype).kind == "V" for v in inputs):  # bfloat16 / float8: numpy's einsum has no kernel
        xp = jnp
    return xp.einsum(equation.replace(" ", ""), *inputs)


# ---------------------------------------------------------------- softmax family
def _softmax_legacy(x, axis, fn):
    # opset < 13: coerce to 2-D at `axis`, softmax over the flattened trailing block.
    shape = x.shape
    flat = x.reshape(shape[:axis] + (-1,))
    return fn(flat, axis=-1).reshape(shape)


@register_op("Softmax")
def softmax(ctx, x, *, axis=None):
    """``exp(x) / sum(exp(x))`` along ``axis`` (default -1); before opset 13 over the flattened ``x.shape[axis:]``
    (default axis 1)."""
    if ctx.opset < 13:
        return _softmax_legacy(x, _norm_axis(ctx, 1 if axis is None else axis, x.ndim), jax.nn.softmax)
    return jax.nn.softmax(x, axis=_norm_axis(ctx, -1 if axis is None else axis, x.ndim))


@register_op("LogSoftmax")
def log_softmax(ctx, x, *, axis=None):
    """``log(softmax(x))`` computed stably, with ``Softmax``'s axis conventions."""
    if ctx.opset < 13:
        return _softmax_legacy(x, _norm_axis(ctx, 1 if axis is None else axis, x.ndim), jax.nn.log_softmax)
    return jax.nn.log_softmax(x, axis=_norm_axis(ctx, -1 if axis is None else axis, x.ndim))


def _hardmax(x, axis):
    xp = xp_of(x)
    classes = np.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return (xp.expand_dims(xp.argmax(x, axis=axis), axis) == classes).astype(x.dtype)


@register_op("Hardmax")
def hardmax(ctx, x, *, axis=None):
    """1 at the first maximum along ``axis`` and 0 elsewhere, with ``Softmax``'s axis conventions."""
    if ctx.opset < 13:
        axis = _norm_axis(ctx, 1 if axis is None else axis, x.ndim)
        return _softmax_legacy(x, axis, lambda v, axis: _hardmax(v, axis % v.ndim))
    return _hardmax(x, _norm_axis(ctx, -1 if axis is None else axis, x.ndim))


# ---------------------------------------------------------------- normalisation
def _channel_shape(x):
    """Shape that broadcasts a per-channel vector against ``[N, C, ...]``."""
    return (-1,) + (1,) * (x.ndim - 2)


@register_op("BatchNormalization")
def batch_normalization(
    ctx, x, scale, b, mean, var, *, epsilon=1e-5, momentum=0.9, spatial=1, is_test=1, training_mode=0
):
    """Inference batch norm ``(x - mean) / sqrt(var + epsilon) * scale + b`` per channel of ``[N, C, ...]``.

    Returns ``(Y, mean, var)``: the optional running-statistics outputs pass the inputs through. ``spatial=0``
    (opsets 7-8) takes statistics of shape ``[C, D1, ...]``. ``training_mode=1`` (batch statistics) is refused.
    """
    if training_mode:
        raise ctx.error(
            "BatchNormalization with training_mode=1 uses batch statistics; export the model in evaluation mode"
        )
    xp = xp_of(x, scale, b, mean, var)
    params = [scale, b, mean, var]
    if x.ndim < 2:
        raise ctx.error(f"X must be [N, C, ...], got shape {tuple(x.shape)}")
    want = (x.shape[1],) if spatial else tuple(x.shape[1:])
    if spatial and any(p.shape != want for p in params) or not spatial and any(
        p.shape not in (want, (x.shape[1],)) for p in params
    ):
        raise ctx.error(
            f"scale, B, mean and var must have shape {list(want)} for X of shape {tuple(x.shape)}, got "
            f"{[list(p.shape) for p in params]}"
        )
    if spatial and mean.ndim == 1:
        params = [p.reshape(_channel_shape(x)) for p in params]
    scale_, b_, mean_, var_ = params
    y = (x - mean_) * (scale_ / xp.sqrt(var_ + np.asarray(epsilon, var_.dtype))) + b_
    return y.astype(x.dtype), mean, var


@register_op("InstanceNormalization")
def instance_normalization(ctx, x, scale, b, *, epsilon=1e-5):
    """Normalise each ``[N, C]`` slice over its spatial axes, then ``* scale + b`` per channel."""
    _check_channel_params(ctx, x, {"scale": scale, "B": b})
    xp = xp_of(x, scale, b)
    axes = tuple(range(2, x.ndim))
    mean = xp.mean(x, axis=axes, keepdims=True)
    var = xp.mean(xp.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) / xp.sqrt(var + np.asarray(epsilon, x.dtype))
    return y * scale.reshape(_channel_shape(x)) + b.reshape(_channel_shape(x))


def _check_channel_params(ctx, x, params: dict) -> None:
    if x.ndim < 3:
        raise ctx.error(f"the input must be [N, C, D1, ...], got shape {tuple(x.shape)}")
    bad = {k: list(v.shape) for k, v in params.items() if tuple(v.shape) != (x.shape[1],)}
    if bad:
        raise ctx.error(f"{', '.join(bad)} must have shape [{x.shape[1]}] (one per channel), got {bad}")


def _stash_dtype(x, stash_type):
    return np.dtype(np.float32) if stash_type == 1 else np.dtype(x.dtype)


@register_op("LayerNormalization")
def layer_normalization(ctx, x, scale, b=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    """Normalise over the axes ``axis, ..., rank - 1``, then ``* scale + b``.

    Returns ``(Y, Mean, InvStdDev)``; the statistics keep the normalised axes as size 1 and have the stash type
    (float32 for ``stash_type=1``).
    """
    xp = xp_of(x, scale, b)
    axis = _norm_axis(ctx, axis, x.ndim)
    axes = tuple(range(axis, x.ndim))
    for name, v in (("Scale", scale), ("B", b)):
        if v is not None:
            _broadcast(ctx, v.shape, x.shape[axis:], f"{name} and the normalised axes")
    xs = x.astype(_stash_dtype(x, stash_type))
    mean = xp.mean(xs, axis=axes, keepdims=True)
    centred = xs - mean
    var = xp.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = 1 / xp.sqrt(var + np.asarray(epsilon, xs.dtype))
    y = (centred * inv_std).astype(x.dtype) * scale
    if b is not None:
        y = y + b
    return y, mean, inv_std


@register_op("GroupNormalization")
def group_normalization(ctx, x, scale, bias, *, num_groups, epsilon=1e-5, stash_type=1):
    """Normalise ``[N, C, ...]`` over each of ``num_groups`` channel groups, then ``* scale + bias``.

    ``scale`` and ``bias`` are per channel (``[C]``, opset 21) or per group (``[num_groups]``, opset 18).
    """
    xp = xp_of(x, scale, bias)
    if x.ndim < 3:
        raise ctx.error(f"the input must be [N, C, D1, ...], got shape {tuple(x.shape)}")
    n, c = x.shape[:2]
    if num_groups < 1 or c % num_groups:
        raise ctx.error(f"num_groups={num_groups} does not divide the {c} channels")
    if scale.shape != bias.shape or scale.shape not in ((c,), (num_groups,)):
        raise ctx.error(
            f"scale and bias must have shape [{c}] (per channel) or [{num_groups}] (per group), got "
            f"{list(scale.shape)} and {list(bias.shape)}"
        )
    xs = x.astype(_stash_dtype(x, stash_type)).reshape(n, num_groups, -1)
    mean = xp.mean(xs, axis=-1, keepdims=True)
    var = xp.mean(xp.square(xs - mean), axis=-1, keepdims=True)
    y = ((xs - mean) / xp.sqrt(var + np.asarray(epsilon, xs.dtype))).reshape(x.shape).astype(x.dtype)
    if scale.shape[0] != c:  # opset 18: one scale / bias per group
        scale, bias = (xp.repeat(v, c // num_groups) for v in (scale, bias))
    return y * scale.reshape(_channel_shape(x)) + bias.reshape(_channel_shape(x))


@register_op("LpNormalization")
def lp_normalization(ctx, x, *, axis=-1, p=2):
    """``x / ||x||_p`` along ``axis`` (``p`` is 1 or 2); a zero vector stays zero (as in the ONNX reference)."""
    xp = xp_of(x)
    axis = _norm_axis(ctx, axis, x.ndim)
    if p == 1:
        norm = xp.sum(xp.abs(x), axis=axis, keepdims=True)
    elif p == 2:
        norm = xp.sqrt(xp.sum(x * x, axis=axis, keepdims=True))
    else:
        raise ctx.error(f"LpNormalization p={p} is not 1 or 2")
    return x / xp.where(norm == 0, xp.ones_like(norm), norm)  # a zero norm means x == 0 there: 0 / 1


# ---------------------------------------------------------------- convolution
def _padding(ctx, auto_pad, pads, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """``(begin, end)`` padding per spatial axis from ONNX's ``auto_pad`` / ``pads``."""
    n = len(in_sizes)
    if auto_pad in ("NOTSET", "", None):
        pads = [0] * (2 * n) if pads is None else list(pads)
        if len(pads) != 2 * n:
            raise ctx.error(f"pads {pads} must hold 2 values per spatial axis ({n} axes)")
        if any(p < 0 for p in pads):
            raise ctx.error(f"pads {pads} must not be negative")
        return [(pads[i], pads[i + n]) for i in range(n)]
    if auto_pad == "VALID":
        return [(0, 0)] * n
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            out.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        return out
    raise ctx.error(f"auto_pad {auto_pad!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")


def _spatial(values, n, default, ctx=None, name="", minimum=None):
    """``values`` (one per spatial axis) as ints, or ``default`` on every axis when absent; with ``ctx``, the
    count and the ``minimum`` are checked."""
    if values is None or (ctx is None and not values):
        return (default,) * n
    out = tuple(int(v) for v in values)
    if ctx is not None and len(out) != n:
        raise ctx.error(f"{name}={list(out)} must hold one value per spatial axis ({n})")
    if ctx is not None and minimum is not None and any(v < minimum for v in out):
        raise ctx.error(f"{name}={list(out)} must be >= {minimum}")
    return out


def _check_conv(ctx, x, w, b, group, kernel_shape, *, transposed: bool) -> int:
    """Ranks, channel counts, ``group``, ``kernel_shape`` and bias of a (transposed) convolution; returns the
    number of spatial axes."""
    if x.ndim < 3 or w.ndim != x.ndim:
        raise ctx.error(
            f"X must be [N, C, D1, ...] and W of the same rank, got shapes {tuple(x.shape)} and {tuple(w.shape)}"
        )
    if group < 1:
        raise ctx.error(f"group={group} must be positive")
    c_in = w.shape[0] if transposed else w.shape[1] * group
    if x.shape[1] != c_in or (transposed and x.shape[1] % group) or (not transposed and w.shape[0] % group):
        layout = "[C, M / group, k...]" if transposed else "[M, C / group, k...]"
        raise ctx.error(
            f"X has {x.shape[1]} channels; W of shape {tuple(w.shape)} ({layout}) with group={group} does not fit"
        )
    if kernel_shape is not None and tuple(int(k) for k in kernel_shape) != tuple(w.shape[2:]):
        raise ctx.error(f"kernel_shape={list(kernel_shape)} differs from W's spatial shape {list(w.shape[2:])}")
    m = w.shape[1] * group if transposed else w.shape[0]
    if b is not None and tuple(b.shape) != (m,):
        raise ctx.error(f"B must have shape [{m}] (one per output channel), got {list(b.shape)}")
    return x.ndim - 2


def _check_output_size(ctx, in_sizes, padding, kernel, strides, dilations) -> None:
    for size, (lo, hi), k, s, d in zip(in_sizes, padding, kernel, strides, dilations):
        if size + lo + hi < (k - 1) * d + 1:
            raise ctx.error(
                f"the window ({k} with dilation {d}) is larger than the padded input ({size} + {lo} + {hi}) on a "
                f"spatial axis: the output would be empty"
            )


@register_op("Conv")
def conv(
    ctx,
    x,
    w,
    b=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    """N-d convolution (cross-correlation) of ``x [N, C, D...]`` with ``w [M, C / group, k...]`` plus ``b [M]``."""
    n = _check_conv(ctx, x, w, b, group, kernel_shape, transposed=False)
    kernel = tuple(w.shape[2:])
    strides = _spatial(strides, n, 1, ctx, "strides", 1)
    dilations = _spatial(dilations, n, 1, ctx, "dilations", 1)
    padding = _padding(ctx, auto_pad, pads, x.shape[2:], kernel, strides, dilations)
    _check_output_size(ctx, x.shape[2:], padding, kernel, strides, dilations)
    lowering = conv_lowering(x.shape[1], group, kernel, strides, padding)
    if lowering == "shifted" and ctx.reverse_only:  # one reverse-mode derivative: the hand-written pull-back
        y = _depthwise_reverse(x, w, strides, tuple(map(tuple, padding)), dilations)
    elif lowering == "lax" and group == 1 and max(strides) > 1 and ctx.reverse_only and _fast_backend():
        y = _strided_reverse(x, w, strides, tuple(map(tuple, padding)), dilations)
    else:
        y = _CONV_LOWERINGS[lowering](x, w, strides, padding, dilations, group)
    return y if b is None else y + b.reshape(_channel_shape(y))


# Convolutions on XLA's CPU backend: `conv_general_dilated(feature_group_count=g)` runs 3-8x slower than the same
# arithmetic written otherwise, and its input gradient (the pull-back every Jacobian row goes through) 5-30x
# slower, worst for strided depthwise convolutions (measured on 2 cores, jax 0.10.2: a 3x3 stride-2 depthwise
# convolution of [256, 96, 32, 32] takes 2.2 s forward and 18 s for the input gradient, against 0.6 s and 2.3 s as
# shifted multiply-adds; jax-ml/jax#13800 reports the slow backward pass of grouped convolutions on GPUs too).
# On the CPU the Conv op therefore lowers
#   depthwise (one input channel per group) -> "shifted": sum over the kernel offsets of a strided slice of the
#       padded input times that offset's per-channel weight, element-wise ops that XLA fuses into one loop; its
#       gradients are pads and multiplies (k1 * ... * kn terms: meant for the small kernels of CNNs);
#   other grouped convolutions with at most _MAX_SPLIT_GROUPS groups -> "split": one dense convolution per group,
#       concatenated along the channels (1.5-4x faster forward and backward than one grouped convolution);
#   dense 1x1 convolutions without stride or padding -> "pointwise": a matrix product over the channels
#       (MobileNetV2's Jacobian: 25% less time than XLA's convolution, see bench/cnn.py);
#   everything else, and every convolution on another backend (GPUs: cuDNN) -> "lax", one conv_general_dilated.
# Every lowering computes the same sums (float32 rounding aside); tests/test_conv_fast.py checks values and
# gradients against the "lax" lowering and onnxruntime.
_FAST_CONV_BACKENDS = ("cpu",)
_MAX_SPLIT_GROUPS = 32


def _fast_backend() -> bool:
    return jax.default_backend() in _FAST_CONV_BACKENDS


def conv_lowering(c_in: int, group: int, kernel, strides, padding, backend: str | None = None) -> str:
    """How :func:`conv` computes a convolution of ``c_in`` input channels in ``group`` groups with a ``kernel``
    (spatial sizes), ``strides`` and ``padding`` (``(begin, end)`` per axis) on ``backend`` (default: JAX's
    default backend, read at trace time): ``"lax"`` (one ``jax.lax.conv_general_dilated``), ``"shifted"``
    (depthwise: shifted multiply-adds), ``"split"`` (one dense convolution per group) or ``"pointwise"`` (1x1:
    a matrix product). See the comment above for the measurements behind the choice."""
    backend = jax.default_backend() if backend is None else backend
    if backend not in _FAST_CONV_BACKENDS:
        return "lax"
    if group == 1:
        plain = all(k == 1 for k in kernel) and all(s == 1 for s in strides)
        return "pointwise" if plain and all(p == (0, 0) for p in padding) else "lax"
    if c_in == group:
        return "shifted"
    return "split" if group <= _MAX_SPLIT_GROUPS else "lax"


def _conv_lax(x, w, strides, padding, dilations, group):
    return jax.lax.conv_general_dilated(
        x, w, window_strides=strides, padding=padding, rhs_dilation=dilations, feature_group_count=group
    )


def _conv_split(x, w, strides, padding, dilations, group):
    """A grouped convolution as ``group`` dense convolutions, concatenated along the channels."""
    c_in, m = x.shape[1] // group, w.shape[0] // group
    parts = [
        _conv_lax(x[:, g * c_in:(g + 1) * c_in], w[g * m:(g + 1) * m], strides, padding, dilations, 1)
        for g in range(group)
    ]
    return jnp.concatenate(parts, axis=1)


def _conv_shifted(x, w, strides, padding, dilations, group):
    """A depthwise convolution (``group == C``, ``w [C * mult, 1, k...]``) as shifted multiply-adds.

    ``y[:, o] = sum over offsets i of x_padded[:, o // mult, i * dilation + stride * (0 .. out - 1)] * w[o, 0, i]``
    (output channel ``o`` reads input channel ``o // mult``, ONNX's group order). 16-bit floats accumulate in
    float32, as XLA's convolutions do.
    """
    del group  # == x.shape[1]
    n_sp = x.ndim - 2
    mult = w.shape[0] // x.shape[1]
    if mult > 1:
        x = jnp.repeat(x, mult, axis=1)
    acc = jnp.promote_types(x.dtype, jnp.float32)
    zero = jnp.zeros((), x.dtype)
    xp = jax.lax.pad(x, zero, [(0, 0, 0), (0, 0, 0), *((lo, hi, 0) for lo, hi in padding)])
    kernel = w.shape[2:]
    out = [
        (size - (k - 1) * d - 1) // s + 1 for size, k, s, d in zip(xp.shape[2:], kernel, strides, dilations)
    ]
    w = w.reshape(w.shape[0], -1).astype(acc)  # [C * mult, k1 * ... * kn]
    y = None
    for j, part in _shifted_slices(xp, kernel, strides, dilations, out):
        term = part.astype(acc) * w[:, j].reshape((-1,) + (1,) * n_sp)
        y = term if y is None else y + term
    return y.astype(x.dtype)


def _shifted_slices(xp, kernel, strides, dilations, out):
    """``(offset index, slice of xp)`` for every kernel offset: the window of that offset at every output
    position, ``xp[:, :, offset * dilation + stride * (0 .. out - 1)]``."""
    for j, offset in enumerate(np.ndindex(*kernel)):
        starts = [i * d for i, d in zip(offset, dilations)]
        yield j, jax.lax.slice(
            xp,
            (0, 0, *starts),
            (*xp.shape[:2], *(b + s * (o - 1) + 1 for b, s, o in zip(starts, strides, out))),
            (1, 1, *strides),
        )


# Under OpContext.reverse_only (one reverse-mode derivative, e.g. a Jacobian's rows) a depthwise convolution
# pulls back through the rule below instead of JAX's transpose of the shifted form. That transpose turns each of
# the k1 * ... * kn strided slices into a pad to the full padded-input size and adds them up (k pads, k full-size
# temporaries per cotangent); the rule computes dx as one more depthwise correlation, of the stride-dilated,
# padded cotangent with the flipped kernel: slices and multiply-adds that XLA fuses into one loop. dw is one
# reduction per kernel offset (the Jacobian never asks for it: XLA drops it there).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _depthwise_reverse(x, w, strides, padding, dilations):
    return _conv_shifted(x, w, strides, padding, dilations, x.shape[1])


def _depthwise_reverse_fwd(x, w, strides, padding, dilations):
    return _conv_shifted(x, w, strides, padding, dilations, x.shape[1]), (x, w)


def _depthwise_reverse_bwd(strides, padding, dilations, residuals, dy):
    x, w = residuals
    n_sp, (n, c), kernel = x.ndim - 2, x.shape[:2], w.shape[2:]
    mult = w.shape[0] // c
    acc = jnp.promote_types(dy.dtype, jnp.float32)
    out = dy.shape[2:]
    w_acc = w.reshape(w.shape[0], -1).astype(acc)  # [C * mult, k1 * ... * kn]
    zero = jnp.zeros((), dy.dtype)
    # dx[i] = sum over offsets k of dy_dilated[i + lo - k * d] * w[k]: a stride-1 correlation of dy dilated by the
    # stride (stride - 1 zeros between its elements), padded by (k - 1) * d - lo before (negative: cropped), with
    # the kernel flipped; the padding after makes the result exactly as long as x.
    pads = []
    for size, k, s, d, (lo, _), o in zip(x.shape[2:], kernel, strides, dilations, padding, out):
        before = (k - 1) * d - lo
        pads.append((before, size + (k - 1) * d - before - (o - 1) * s - 1, s - 1))
    dyp = jax.lax.pad(dy, zero, [(0, 0, 0), (0, 0, 0), *pads])
    flipped = w_acc[:, ::-1]
    dx = None
    for j, part in _shifted_slices(dyp, kernel, (1,) * n_sp, dilations, x.shape[2:]):
        term = part.astype(acc) * flipped[:, j].reshape((-1,) + (1,) * n_sp)
        dx = term if dx is None else dx + term
    if mult > 1:  # output channel o reads input channel o // mult
        dx = dx.reshape(n, c, mult, *x.shape[2:]).sum(axis=2)
    # dw[o, k] = sum over rows and output positions of dy[o] * x_padded[o // mult, position * s + k * d]
    xp = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0), *((lo, hi, 0) for lo, hi in padding)])
    dy_acc = dy.astype(acc).reshape(n, c, mult, *out)
    axes = (0, *range(3, 3 + n_sp))
    dw = jnp.stack(
        [jnp.sum(part.astype(acc)[:, :, None] * dy_acc, axis=axes) for _, part in
         _shifted_slices(xp, kernel, strides, dilations, out)],
        axis=-1,
    )  # [C, mult, k1 * ... * kn]
    return dx.astype(x.dtype), dw.reshape(w.shape).astype(w.dtype)


_depthwise_reverse.defvjp(_depthwise_reverse_fwd, _depthwise_reverse_bwd)


# Under OpContext.reverse_only a dense (group 1) strided convolution on the CPU keeps its forward lowering but pulls
# dx back through the rule below. JAX's transpose is a convolution of the cotangent with lhs_dilation = stride,
# which XLA:CPU computes over every dilated position, zeros included (stride^2 times the needed products in 2-D).
# The rule: one product over the output channels, cols[n, o..., k..., c] = sum_m dy[n, m, o...] w[m, c, k...],
# then per stride phase the shifted slices of cols that land there, interleaved (see the body); channels last, the
# layout XLA:CPU gives the surrounding convolutions. Measured on the ResNet-like CNN of bench/cnn.py (two 3x3 and
# two 1x1 stride-2 convolutions, 64 rows, 2 cores, jax 0.10.2): the Jacobian 0.45 s -> 0.34 s. The same rule with
# pads of stride - 1 interior zeros per kernel offset (col2im) was slower than XLA's own in the model, and for
# stride 1 XLA's transpose is a plain convolution (no rule there). dw is JAX's (a Jacobian never asks for it).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _strided_reverse(x, w, strides, padding, dilations):
    return _conv_lax(x, w, strides, padding, dilations, 1)


def _strided_reverse_fwd(x, w, strides, padding, dilations):
    return _conv_lax(x, w, strides, padding, dilations, 1), (x, w)


def _strided_reverse_bwd(strides, padding, dilations, residuals, dy):
    x, w = residuals
    n_sp, kernel, out = x.ndim - 2, w.shape[2:], dy.shape[2:]
    acc = jnp.promote_types(dy.dtype, jnp.float32)
    # channels last throughout: XLA:CPU runs the surrounding convolutions channels-last, and a channels-first
    # product here cost more in transposes than it saved (measured on the ResNet-like CNN of bench/cnn.py)
    dy_last = jnp.moveaxis(dy, 1, -1).astype(acc)  # [N, o..., M]
    w_last = jnp.moveaxis(w, 1, -1).astype(acc)  # [M, k..., C]
    cols = jax.lax.dot_general(dy_last, w_last, (((n_sp + 1,), (0,)), ((), ())))  # [N, o..., k..., C]
    # Input position i, output position o and kernel offset k meet where i + pad_begin = o * stride + k * dilation.
    # Phase r of an axis (i + pad_begin = j * stride + r, j in [0, J)) receives the offsets with k * dilation = r
    # (mod stride), each from output j - q, q = (k * dilation - r) // stride: a shifted copy, no interior zeros.
    # The phases are then interleaved (one reshape) and cropped to the input's extent.
    sizes = x.shape[2:]
    n_phase = [-(-(size + lo) // s) for size, (lo, _), s in zip(sizes, padding, strides)]  # J per axis
    zero = jnp.zeros((), acc)
    phases = []
    for r in np.ndindex(*strides):
        taps = [
            [(k, (k * d - ri) // s) for k in range(kk) if (k * d - ri) % s == 0]
            for ri, kk, s, d in zip(r, kernel, strides, dilations)
        ]
        acc_r = None
        for combo in itertools.product(*taps):
            offset = tuple(k for k, _ in combo)
            part = cols[(slice(None),) + (slice(None),) * n_sp + offset]  # [N, o..., C]
            pads = [(q, jn - o - q, 0) for (_, q), o, jn in zip(combo, out, n_phase)]
            term = jax.lax.pad(part, zero, [(0, 0, 0), *pads, (0, 0, 0)])
            acc_r = term if acc_r is None else acc_r + term
        if acc_r is None:  # no offset lands in this phase (e.g. a 1x1 kernel with stride 2)
            acc_r = jnp.zeros((cols.shape[0], *n_phase, cols.shape[-1]), acc)
        phases.append(acc_r)
    g = jnp.stack(phases, axis=1).reshape(cols.shape[0], *strides, *n_phase, cols.shape[-1])
    perm = [0] + [a for i in range(n_sp) for a in (1 + n_sp + i, 1 + i)] + [1 + 2 * n_sp]
    g = g.transpose(perm).reshape(cols.shape[0], *(j * s for j, s in zip(n_phase, strides)), cols.shape[-1])
    dx = jax.lax.slice(
        g, (0, *(lo for lo, _ in padding), 0), (g.shape[0], *(lo + n for (lo, _), n in zip(padding, sizes)), g.shape[-1])
    )
    dx = jnp.moveaxis(dx, -1, 1)
    _, pull_w = jax.vjp(lambda v: _conv_lax(x, v, strides, padding, dilations, 1), w)
    return dx.astype(x.dtype), pull_w(dy)[0]


_strided_reverse.defvjp(_strided_reverse_fwd, _strided_reverse_bwd)


def _conv_pointwise(x, w, strides, padding, dilations, group):
    """A dense 1x1 convolution without stride or padding: ``y[n, m, ...] = sum_c w[m, c] x[n, c, ...]``."""
    del strides, padding, dilations, group  # all 1 / zero
    return jnp.einsum("nc...,mc->nm...", x, w.reshape(w.shape[:2]))


_CONV_LOWERINGS = {"lax": _conv_lax, "shifted": _conv_shifted, "split": _conv_split, "pointwise": _conv_pointwise}


@register_op("ConvTranspose")
def conv_transpose(
    ctx,
    x,
    w,
    b=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    output_padding=None,
    output_shape=None,
    pads=None,
    strides=None,
):
    """Transposed convolution of ``x [N, C, D...]`` with ``w [C, M / group, k...]`` plus ``b [M]``.

    Output size ``stride * (in - 1) + output_padding + (k - 1) * dilation + 1 - pad_begin - pad_end``; with
    ``output_shape`` (or ``SAME_*`` auto padding) the pads are derived from the requested size.
    """
    n = _check_conv(ctx, x, w, b, group, kernel_shape, transposed=True)
    kernel = tuple(w.shape[2:])
    strides = _spatial(strides, n, 1, ctx, "strides", 1)
    dilations = _spatial(dilations, n, 1, ctx, "dilations", 1)
    out_pad = _spatial(output_padding, n, 0, ctx, "output_padding", 0)
    if output_shape is not None and len(output_shape) < n:
        raise ctx.error(f"output_shape={list(output_shape)} must give the {n} spatial sizes")
    in_sizes = x.shape[2:]
    if pads is None and (output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER")):
        target = (
            list(output_shape)[-n:]
            if output_shape is not None
            else [i * s for i, s in zip(in_sizes, strides)]
        )
        padding = []
        for i in range(n):
            total = (
                strides[i] * (in_sizes[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - target[i]
            )
            small, big = total // 2, total - total // 2
            padding.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    else:
        padding = _padding(
            ctx, "NOTSET" if auto_pad == "VALID" else auto_pad, pads, in_sizes, kernel, strides, dilations
        )
    c, m_per_group = w.shape[:2]
    # [C, M/g, k...] -> [M, C/g, k...], spatially flipped: a transposed convolution is a convolution of the
    # stride-dilated input with the flipped, transposed kernel.
    xp = xp_of(w)
    wg = w.reshape((group, c // group, m_per_group, *kernel)).swapaxes(1, 2)
    wt = xp.flip(wg.reshape((group * m_per_group, c // group, *kernel)), axis=tuple(range(2, n + 2)))
    conv_padding = [
        (d * (k - 1) - lo, d * (k - 1) - hi + op)
        for (lo, hi), k, d, op in zip(padding, kernel, dilations, out_pad)
    ]
    y = jax.lax.conv_general_dilated(
        x,
        wt,
        window_strides=(1,) * n,
        padding=conv_padding,
        lhs_dilation=strides,
        rhs_dilation=dilations,
        feature_group_count=group,
    )
    return y if b is None else y + b.reshape(_channel_shape(y))


# ---------------------------------------------------------------- pooling
def _pool_geometry(ctx, x, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode):
    """Kernel, strides, dilations, explicit ``(begin, end)`` pads and the extra end padding that ``ceil_mode``
    needs (the last window must start inside the input or its begin padding, as in PyTorch and ONNX Runtime)."""
    if kernel_shape is None:
        raise ctx.error("kernel_shape is required")
    if x.ndim < 3:
        raise ctx.error(f"X must be [N, C, D1, ...], got shape {tuple(x.shape)}")
    n = x.ndim - 2
    kernel = _spatial(kernel_shape, n, 1, ctx, "kernel_shape", 1)
    strides = _spatial(strides, n, 1, ctx, "strides", 1)
    dilations = _spatial(dilations, n, 1, ctx, "dilations", 1)
    padding = _padding(ctx, auto_pad, pads, x.shape[2:], kernel, strides, dilations)
    _check_output_size(ctx, x.shape[2:], padding, kernel, strides, dilations)
    extra = []
    for size, k, s, d, (lo, hi) in zip(x.shape[2:], kernel, strides, dilations, padding):
        span = (k - 1) * d + 1
        out = (size + lo + hi - span) // s + 1
        if ceil_mode:
            out = -(-(size + lo + hi - span) // s) + 1
            if (out - 1) * s >= size + lo:
                out -= 1
        extra.append(max(0, (out - 1) * s + span - (size + lo + hi)))
    return kernel, strides, dilations, padding, extra


def _reduce_window(x, init, op, kernel, strides, dilations, padding):
    n = x.ndim - 2
    return jax.lax.reduce_window(
        x,
        init,
        op,
        window_dimensions=(1, 1, *kernel),
        window_strides=(1, 1, *strides),
        padding=((0, 0), (0, 0), *padding),
        window_dilation=(1,) * 2 + tuple(dilations[:n]),
    )


@register_op("MaxPool")
def max_pool(
    ctx,
    x,
    *,
    auto_pad="NOTSET",
    ceil_mode=0,
    dilations=None,
    kernel_shape=None,
    pads=None,
    storage_order=0,
    strides=None,
):
    """Maximum over sliding windows of ``[N, C, D...]``; padding never wins. The ``Indices`` output is not
    computed (``storage_order`` only concerns it)."""
    if len(ctx.output_names) > 1 and ctx.output_names[1]:
        raise ctx.error("MaxPool's Indices output is not supported")
    kernel, strides, dilations, padding, extra = _pool_geometry(
        ctx, x, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode
    )
    padding = [(lo, hi + e) for (lo, hi), e in zip(padding, extra)]
    # The initial value must be a concrete numpy scalar: JAX then recognises the max monoid, which differentiates.
    init = np.array(-np.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min, x.dtype)
    return _reduce_window(x, init, jax.lax.max, kernel, strides, dilations, padding)


def _window_counts(ctx, size, k, s, d, lo, hi, extra, include_pad):
    """How many positions of each 1-D window count in the average (static numpy)."""
    out = (size + lo + hi + extra - ((k - 1) * d + 1)) // s + 1
    check_alloc(ctx, (out, k), np.int64)
    pos = np.arange(out)[:, None] * s + np.arange(k)[None, :] * d  # positions in padded coordinates
    valid = pos < size + lo + hi if include_pad else (pos >= lo) & (pos < lo + size)
    return valid.sum(axis=1)


@register_op("AveragePool")
def average_pool(
    ctx,
    x,
    *,
    auto_pad="NOTSET",
    ceil_mode=0,
    count_include_pad=0,
    dilations=None,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    """Mean over sliding windows of ``[N, C, D...]``; the divisor counts padded positions only with
    ``count_include_pad=1`` (never the extra ``ceil_mode`` positions)."""
    kernel, strides, dilations, padding, extra = _pool_geometry(
        ctx, x, kernel_shape, strides, pads, dilations, auto_pad, ceil_mode
    )
    full = [(lo, hi + e) for (lo, hi), e in zip(padding, extra)]
    total = _reduce_window(x, np.array(0, x.dtype), jax.lax.add, kernel, strides, dilations, full)
    counts = np.ones((), np.float64)
    for i, (size, k, s, d, (lo, hi), e) in enumerate(
        zip(x.shape[2:], kernel, strides, dilations, padding, extra)
    ):
        c = _window_counts(ctx, size, k, s, d, lo, hi, e, count_include_pad)
        counts = counts[..., None] * c.reshape((1,) * i + (-1,))
    return total / counts.astype(x.dtype)


@register_op("GlobalAveragePool")
def global_average_pool(ctx, x):
    """Mean over all spatial axes of ``[N, C, D...]``, kept as size 1."""
    if x.ndim < 3:
        raise ctx.error(f"X must be [N, C, D1, ...], got shape {tuple(x.shape)}")
    return xp_of(x).mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@register_op("GlobalMaxPool")
def global_max_pool(ctx, x):
    """Maximum over all spatial axes of ``[N, C, D...]``, kept as size 1."""
    if x.ndim < 3:
        raise ctx.error(f"X must be [N, C, D1, ...], got shape {tuple(x.shape)}")
    return xp_of(x).max(x, axis=tuple(range(2, x.ndim)), keepdims=True)
