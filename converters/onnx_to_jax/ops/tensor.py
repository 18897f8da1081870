"""Tensor ONNX ops: shapes, reshaping, indexing, slicing, padding, reductions, sorting, resizing.

Shape-like inputs (``Reshape``'s target, ``Slice``'s starts / ends / axes / steps, ``Squeeze`` / ``Unsqueeze`` /
``ReduceX`` axes, ``Expand`` shape, ``Tile`` repeats, ``Pad`` pads, ``Split`` sizes, ``TopK``'s k, ``Resize``
scales / sizes) are registered as ``static_inputs``: they must be known at conversion time, and the converter keeps
initializers feeding them as numpy constants. ``Shape`` and ``Size`` always return numpy ``int64`` values (shapes are
static under ``jit``), and every op computes with numpy when all its inputs are numpy, so shape computations such as
``Shape -> Gather -> Concat -> Reshape`` fold at trace time with ONNX's exact dtypes and leave only the data path in
the compiled program.

Attribute -> input moves between opsets are handled by accepting both forms: ``Squeeze`` / ``Unsqueeze`` axes
(attribute before opset 13), ``ReduceSum`` axes (before 13) and the other reductions' axes (before 18), ``Split``'s
``split`` (before 13) and ``num_outputs`` (from 18), ``Slice`` starts / ends / axes (before 10), ``Pad`` pads and
value (before 11), ``TopK``'s k (before 10) and ``Resize``'s scales (opset 10 takes ``(X, scales)``).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import numpy_helper

from converters.onnx_to_jax.registry import check_alloc, register_op
from converters.onnx_to_jax.static import is_static, xp_of

_INDEX_DTYPE = np.dtype(np.int64)


def _index_dtype(xp):
    """ONNX's ``int64`` for index outputs: exact under numpy, ``int32`` in JAX without x64."""
    return _INDEX_DTYPE if xp is np else np.dtype(jax.dtypes.canonicalize_dtype(np.int64))


def _norm_axis(ctx, axis: int, ndim: int, what: str = "axis") -> int:
    axis = int(axis)
    if ndim == 0:
        raise ctx.error(f"{what}={axis} names an axis of a scalar (a tensor of rank 0 has none)")
    if not -ndim <= axis < ndim:
        raise ctx.error(f"{what}={axis} is out of range for a tensor of rank {ndim} (valid: {-ndim} to {ndim - 1})")
    return axis % ndim


def _check_shape(ctx, dims, what: str) -> None:
    """``dims`` must be non-negative (a static target shape or sizes)."""
    if any(d < 0 for d in dims):
        raise ctx.error(f"{what} {list(dims)} has a negative entry")


def _axes_arg(ctx, axes_input, axes_attr, what: str = "axes") -> list[int] | None:
    """Axes given as an input (newer opsets) or an attribute (older); ``None`` when neither is given."""
    if axes_input is not None:
        return ctx.static_ints(axes_input, what)
    if axes_attr is not None:
        return [int(a) for a in axes_attr]
    return None


# ---------------------------------------------------------------- shapes
@register_op("Shape")
def shape(ctx, data, *, start=0, end=None):
    """The shape of ``data`` as a static ``int64`` vector, optionally sliced ``[start:end]`` (opset 15)."""
    return np.asarray(np.shape(data)[start:end], dtype=np.int64)


@register_op("Size")
def size(ctx, data):
    """The number of elements of ``data`` as a static ``int64`` scalar."""
    return np.asarray(math.prod(np.shape(data)), dtype=np.int64)


@register_op("Flatten")
def flatten(ctx, x, *, axis=1):
    """Reshape to 2-D ``[prod(shape[:axis]), prod(shape[axis:])]``."""
    if not -x.ndim <= axis <= x.ndim:
        raise ctx.error(f"axis={axis} is out of range for a tensor of rank {x.ndim} (valid: {-x.ndim} to {x.ndim})")
    axis = axis + x.ndim if axis < 0 else axis
    return xp_of(x).reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


@register_op("Reshape", static_inputs=(1,))
def reshape(ctx, data, shape, *, allowzero=0):
    """Reshape to ``shape``: a ``0`` copies the input's dimension (unless ``allowzero=1``), one ``-1`` is inferred."""
    target = ctx.static_ints(shape, "shape")
    if not allowzero:
        target = [data.shape[i] if d == 0 else d for i, d in enumerate(target)]
    try:
        return xp_of(data).reshape(data, target)
    except (TypeError, ValueError) as e:
        raise ctx.error(f"cannot reshape a tensor of shape {tuple(data.shape)} to {target}: {e}") from None


@register_op("Squeeze", static_inputs=(1,))
def squeeze(ctx, data, axes_input=None, *, axes=None):
    """Remove size-1 axes: the listed ones (attribute before opset 13, input after) or all of them."""
    ax = _axes_arg(ctx, axes_input, axes)
    if ax is None:
        ax = [i for i, d in enumerate(data.shape) if d == 1]
    ax = tuple(sorted(_norm_axis(ctx, a, data.ndim, "axes") for a in ax))
    bad = [a for a in ax if data.shape[a] != 1]
    if bad:
        raise ctx.error(
            f"cannot squeeze axes {bad} of a tensor of shape {tuple(data.shape)}: their size is not 1"
        )
    return xp_of(data).squeeze(data, axis=ax)


@register_op("Unsqueeze", static_inputs=(1,))
def unsqueeze(ctx, data, axes_input=None, *, axes=None):
    """Insert size-1 axes at ``axes`` of the output (attribute before opset 13, input after)."""
    ax = _axes_arg(ctx, axes_input, axes)
    if ax is None:
        raise ctx.error("Unsqueeze needs axes")
    out_ndim = data.ndim + len(ax)
    ax = tuple(sorted(_norm_axis(ctx, a, out_ndim, "axes") for a in ax))
    if len(set(ax)) != len(ax):
        raise ctx.error(f"axes {list(ax)} repeat an axis")
    return xp_of(data).expand_dims(data, ax)


@register_op("Transpose")
def transpose(ctx, data, *, perm=None):
    """Permute axes by ``perm`` (default: reverse them)."""
    if perm is not None and sorted(int(p) for p in perm) != list(range(data.ndim)):
        raise ctx.error(f"perm={list(perm)} is not a permutation of the {data.ndim} axes of a tensor of shape "
                        f"{tuple(data.shape)}")
    return xp_of(data).transpose(data, None if perm is None else tuple(int(p) for p in perm))


@register_op("Expand", static_inputs=(1,))
def expand(ctx, x, shape):
    """Broadcast ``x`` against ``shape`` (bidirectional: the output has the broadcast of both shapes)."""
    dims = tuple(ctx.static_ints(shape, "shape"))
    _check_shape(ctx, dims, "shape")
    try:
        target = np.broadcast_shapes(tuple(x.shape), dims)
    except ValueError:
        raise ctx.error(f"cannot expand a tensor of shape {tuple(x.shape)} to {list(dims)}: they do not broadcast")
    check_alloc(ctx, target, x.dtype)
    return xp_of(x).broadcast_to(x, target)


@register_op("Tile", static_inputs=(1,))
def tile(ctx, x, repeats):
    """Repeat ``x`` ``repeats[i]`` times along each axis ``i``."""
    reps = tuple(ctx.static_ints(repeats, "repeats"))
    if len(reps) != x.ndim:
        raise ctx.error(f"repeats {list(reps)} must hold one entry per axis of the input ({x.ndim})")
    _check_shape(ctx, reps, "repeats")
    check_alloc(ctx, [d * r for d, r in zip(x.shape, reps)] if len(reps) == x.ndim else reps, x.dtype)
    return xp_of(x).tile(x, reps)


@register_op("ConstantOfShape", static_inputs=(0,))
def constant_of_shape(ctx, shape, *, value=None):
    """A static tensor of ``shape`` filled with ``value`` (a 1-element tensor; default float32 zero)."""
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if value.size != 1:
        raise ctx.error(f"value must hold exactly one element, got a tensor of shape {list(value.shape)}")
    dims = tuple(ctx.static_ints(shape, "shape"))
    check_alloc(ctx, dims, value.dtype)
    return np.full(dims, value.reshape(-1)[0], dtype=value.dtype)


def _sparse_to_dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    dims = tuple(sparse.dims)
    dense = np.zeros(math.prod(dims), dtype=values.dtype)
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
    dense[flat] = values
    return dense.reshape(dims)


@register_op("Constant")
def constant(
    ctx,
    *,
    value=None,
    value_float=None,
    value_floats=None,
    value_int=None,
    value_ints=None,
    sparse_value=None,
    value_string=None,
    value_strings=None,
):
    """A static tensor from whichever ``value*`` attribute is set."""
    if value is not None:
        return np.asarray(value)
    if value_float is not None:
        return np.asarray(value_float, np.float32)
    if value_floats is not None:
        return np.asarray(value_floats, np.float32)
    if value_int is not None:
        return np.asarray(value_int, np.int64)
    if value_ints is not None:
        return np.asarray(value_ints, np.int64)
    if sparse_value is not None:
        return _sparse_to_dense(sparse_value)
    if value_string is not None or value_strings is not None:
        raise ctx.error("string constants are not supported (only numeric tensors can run in JAX)")
    raise ctx.error("Constant has none of the attributes value, value_float(s), value_int(s), sparse_value")


@register_op("Range", static_inputs=(0, 1, 2))  # the bounds fix the output's length: kept as constants
def range_(ctx, start, limit, delta):
    """``start + delta * arange(max(ceil((limit - start) / delta), 0))``; the bounds must be known statically."""
    start = ctx.static(start, "start")
    limit = ctx.static(limit, "limit")
    delta = ctx.static(delta, "delta")
    if start.size != 1 or limit.size != 1 or delta.size != 1:
        raise ctx.error(
            f"start, limit and delta must be scalars, got shapes {start.shape}, {limit.shape} and {delta.shape}"
        )
    start, limit, delta = start.reshape(()), limit.reshape(()), delta.reshape(())
    span = (limit.astype(np.float64) - start) / delta if delta != 0 else np.nan
    if not np.isfinite(span):
        raise ctx.error(f"Range({start}, {limit}, {delta}) has no finite length (delta 0, or a bound not finite)")
    n = max(int(np.ceil(span)), 0)
    check_alloc(ctx, (n,), start.dtype)
    check_alloc(ctx, [n], start.dtype)
    return (start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype)


# ---------------------------------------------------------------- joining and splitting
@register_op("Concat")
def concat(ctx, *inputs, axis):
    """Join tensors along ``axis``."""
    ndim = inputs[0].ndim
    a = _norm_axis(ctx, axis, ndim)
    shapes = [tuple(v.shape) for v in inputs]
    if any(len(sh) != ndim or sh[:a] + sh[a + 1 :] != shapes[0][:a] + shapes[0][a + 1 :] for sh in shapes):
        raise ctx.error(f"cannot join tensors of shapes {shapes} along axis {axis}: the other axes must match")
    return xp_of(*inputs).concatenate(inputs, axis=a)


@register_op("Split", static_inputs=(1,))
def split(ctx, x, split_input=None, *, axis=0, split=None, num_outputs=None):
    """Split along ``axis`` into parts of sizes ``split`` (attribute before opset 13, input after), into
    ``num_outputs`` parts (opset 18; the last one smaller when uneven), or equally among the node's outputs."""
    axis = _norm_axis(ctx, axis, x.ndim)
    dim = x.shape[axis]
    sizes = ctx.static_ints(split_input, "split") if split_input is not None else split
    if sizes is None:
        n = num_outputs or len(ctx.output_names)
        chunk = -(-dim // n) if num_outputs else dim // n
        if not num_outputs and chunk * n != dim:
            raise ctx.error(f"cannot split an axis of size {dim} into {n} equal parts")
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    sizes = [int(s) for s in sizes]
    _check_shape(ctx, sizes, "split sizes")
    if sum(sizes) != dim:
        raise ctx.error(f"split sizes {sizes} do not add up to the axis size {dim}")
    bounds = np.cumsum([0, *sizes])
    index = [slice(None)] * x.ndim
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        index[axis] = slice(int(lo), int(hi))
        parts.append(x[tuple(index)])
    return tuple(parts)


# ---------------------------------------------------------------- indexing
@register_op("Slice", static_inputs=(1, 2, 3, 4))
def slice_(
    ctx,
    data,
    starts_input=None,
    ends_input=None,
    axes_input=None,
    steps=None,
    *,
    starts=None,
    ends=None,
    axes=None,
):
    """``data[starts:ends:steps]`` along ``axes`` with ONNX's clamping (attributes before opset 10, inputs after)."""
    if data.ndim == 0:
        raise ctx.error("cannot slice a scalar (data of rank 0)")
    starts = ctx.static_ints(starts_input, "starts") if starts_input is not None else list(starts or [])
    ends = ctx.static_ints(ends_input, "ends") if ends_input is not None else list(ends or [])
    ax = _axes_arg(ctx, axes_input, axes)
    ax = list(range(len(starts))) if ax is None else ax
    steps = ctx.static_ints(steps, "steps") if steps is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(ax) == len(steps):
        raise ctx.error(f"starts {starts}, ends {ends}, axes {ax} and steps {steps} differ in length")
    index = [slice(None)] * data.ndim
    for start, end, a, step in zip(starts, ends, ax, steps):
        a = _norm_axis(ctx, a, data.ndim, "axes")
        dim = data.shape[a]
        if step == 0:
            raise ctx.error("Slice steps must not be 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[a] = slice(start, None if end < 0 else end, step)
    return data[tuple(index)]


def _wrap_indices(xp, indices, dim):
    """Negative indices count from the end (done with numpy when the indices are static)."""
    if is_static(indices):
        return np.where(indices < 0, indices + dim, indices)
    return xp.where(indices < 0, indices + dim, indices)


@register_op("Gather")
def gather(ctx, data, indices, *, axis=0):
    """``take(data, indices, axis)`` (``Embedding`` lookups, picking shape entries); negative indices wrap."""
    xp = xp_of(data, indices)
    axis = _norm_axis(ctx, axis, data.ndim)
    _check_static_indices(ctx, indices, data.shape[axis])
    return xp.take(data, _wrap_indices(xp, indices, data.shape[axis]), axis=axis)


def _check_static_indices(ctx, indices, dim: int) -> None:
    """Static indices must lie in ``[-dim, dim - 1]`` (traced ones are clamped by JAX, as gathers are)."""
    if is_static(indices) and indices.size:
        lo, hi = int(np.min(indices)), int(np.max(indices))
        if lo < -dim or hi >= dim:
            raise ctx.error(f"indices {lo if lo < -dim else hi} is out of range for an axis of size {dim}")


@register_op("GatherElements")
def gather_elements(ctx, data, indices, *, axis=0):
    """``take_along_axis``: ``out[i][j] = data[indices[i][j]][j]`` for ``axis=0``."""
    xp = xp_of(data, indices)
    axis = _norm_axis(ctx, axis, data.ndim)
    if indices.ndim != data.ndim:
        raise ctx.error(f"indices {tuple(indices.shape)} and data {tuple(data.shape)} must have the same rank")
    _check_static_indices(ctx, indices, data.shape[axis])
    index = tuple(slice(None) if a == axis else slice(0, s) for a, s in enumerate(indices.shape))
    return xp.take_along_axis(data[index], _wrap_indices(xp, indices, data.shape[axis]), axis=axis)


@register_op("GatherND")
def gather_nd(ctx, data, indices, *, batch_dims=0):
    """Gather slices of ``data`` addressed by the last axis of ``indices`` (after ``batch_dims`` shared axes)."""
    xp = xp_of(data, indices)
    b = batch_dims
    if indices.ndim < 1 or not 0 <= b < min(data.ndim, indices.ndim) or data.shape[:b] != indices.shape[:b]:
        raise ctx.error(
            f"batch_dims={b} does not fit data {tuple(data.shape)} and indices {tuple(indices.shape)} (the first "
            f"batch_dims axes must be shared)"
        )
    k = indices.shape[-1]
    if not 1 <= k <= data.ndim - b:
        raise ctx.error(f"indices' last axis ({k}) must lie in [1, {data.ndim - b}] for data {tuple(data.shape)}")
    batch_shape = data.shape[:b]
    n_batch = math.prod(batch_shape)
    flat_data = data.reshape((n_batch, *data.shape[b:]))
    flat_idx = indices.reshape((n_batch, *indices.shape[b:]))
    flat_idx = xp.stack([_wrap_indices(xp, flat_idx[..., i], data.shape[b + i]) for i in range(k)], axis=-1)
    batch = np.arange(n_batch).reshape((n_batch,) + (1,) * (flat_idx.ndim - 2))
    out = flat_data[(batch, *(flat_idx[..., i] for i in range(k)))]
    return out.reshape(tuple(batch_shape) + tuple(out.shape[1:]))


@register_op("OneHot", static_inputs=(1,))
def one_hot(ctx, indices, depth, values, *, axis=-1):
    """One-hot along a new ``axis``: ``values[1]`` where the index matches, ``values[0]`` elsewhere."""
    xp = xp_of(indices, values)
    depth = ctx.static(depth, "depth").reshape(-1)
    if depth.size != 1 or not np.isfinite(depth[0]) or int(depth[0]) < 1:
        raise ctx.error(f"depth must be one positive number, got {depth.tolist()}")
    depth = int(depth[0])
    if np.size(values) != 2:
        raise ctx.error(f"values must hold 2 elements (off, on), got shape {tuple(np.shape(values))}")
    values = values.reshape(-1)
    axis = _norm_axis(ctx, axis, indices.ndim + 1)
    check_alloc(ctx, (*indices.shape, depth), values.dtype)
    idx = indices.astype(np.int64 if xp is np else jnp.int32)
    idx = xp.where(idx < 0, idx + depth, idx)
    classes = np.arange(depth).reshape((depth,) + (1,) * (indices.ndim - axis))
    hot = xp.expand_dims(idx, axis) == classes
    return xp.where(hot, values[1], values[0])


# ---------------------------------------------------------------- padding
@register_op("Pad", static_inputs=(1, 3))
def pad(ctx, data, pads_input=None, constant_value=None, axes=None, *, mode="constant", pads=None, value=0.0):
    """Pad (negative pads crop): ``pads = [begin_0, ..., begin_k, end_0, ..., end_k]`` for ``axes`` (default all).

    ``mode`` is ``constant``, ``reflect``, ``edge`` or ``wrap``; pads and value are attributes before opset 11.
    """
    amounts = ctx.static_ints(pads_input, "pads") if pads_input is not None else list(pads or [])
    ax = ctx.static_ints(axes, "axes") if axes is not None else list(range(data.ndim))
    if len(amounts) != 2 * len(ax):
        raise ctx.error(f"pads {amounts} must hold 2 values per padded axis ({len(ax)} axes)")
    width = [[0, 0] for _ in range(data.ndim)]
    for i, a in enumerate(ax):
        a = _norm_axis(ctx, a, data.ndim, "axes")
        width[a] = [amounts[i], amounts[i + len(ax)]]
    check_alloc(ctx, [max(d + lo + hi, 0) for (lo, hi), d in zip(width, data.shape)], data.dtype)
    crop = tuple(slice(max(-lo, 0), d - max(-hi, 0)) for (lo, hi), d in zip(width, data.shape))
    data = data[crop]
    width = [(max(lo, 0), max(hi, 0)) for lo, hi in width]
    xp = xp_of(data, constant_value)
    if mode == "constant":
        fill = value if constant_value is None else constant_value
        fill = fill.reshape(()) if hasattr(fill, "reshape") else fill
        return xp.pad(data, width, mode="constant", constant_values=xp.asarray(fill, dtype=data.dtype))
    if mode in ("reflect", "edge", "wrap"):
        return xp.pad(data, width, mode=mode)
    raise ctx.error(f"Pad mode {mode!r} is not one of 'constant', 'reflect', 'edge', 'wrap'")


@register_op("DepthToSpace")
def depth_to_space(ctx, x, *, blocksize, mode="DCR"):
    """Move channel blocks into ``blocksize x blocksize`` spatial blocks (``mode`` ``DCR`` or ``CRD``)."""
    _check_blocks(ctx, x, blocksize, channels=True)
    n, c, h, w = x.shape
    b = blocksize
    xp = xp_of(x)
    if mode == "DCR":
        y = xp.transpose(x.reshape(n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2))
    elif mode == "CRD":
        y = xp.transpose(x.reshape(n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3))
    else:
        raise ctx.error(f"DepthToSpace mode {mode!r} is not 'DCR' or 'CRD'")
    return y.reshape(n, c // (b * b), h * b, w * b)


@register_op("SpaceToDepth")
def space_to_depth(ctx, x, *, blocksize, mode="DCR"):
    """Move ``blocksize x blocksize`` spatial blocks into channels (inverse of ``DepthToSpace`` in the same
    ``mode``: ``DCR``, the only one before opset 26, puts the block offset before the channel, ``CRD`` after)."""
    _check_blocks(ctx, x, blocksize, channels=False)
    n, c, h, w = x.shape
    b = blocksize
    if mode not in ("DCR", "CRD"):
        raise ctx.error(f"SpaceToDepth mode {mode!r} is not 'DCR' or 'CRD'")
    order = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    y = xp_of(x).transpose(x.reshape(n, c, h // b, b, w // b, b), order)
    return y.reshape(n, c * b * b, h // b, w // b)


def _check_blocks(ctx, x, b, *, channels: bool) -> None:
    if x.ndim != 4:
        raise ctx.error(f"the input must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if b < 1:
        raise ctx.error(f"blocksize={b} must be positive")
    if channels and x.shape[1] % (b * b):
        raise ctx.error(f"the {x.shape[1]} channels do not divide into blocks of {b} x {b}")
    if not channels and (x.shape[2] % b or x.shape[3] % b):
        raise ctx.error(f"the spatial size {tuple(x.shape[2:])} is not a multiple of blocksize={b}")


# ---------------------------------------------------------------- reductions
def _reduce(ctx, data, axes_input, axes, keepdims, noop_with_empty_axes, fn):
    ax = _axes_arg(ctx, axes_input, axes)
    if not ax:
        if noop_with_empty_axes:
            return data
        ax = range(data.ndim)
    ax = tuple(sorted({_norm_axis(ctx, a, data.ndim, "axes") for a in ax}))
    return fn(xp_of(data), data, ax, bool(keepdims))


def _logsumexp(xp, x, axis, keepdims):
    if xp is jnp:
        return jax.nn.logsumexp(x, axis=axis, keepdims=keepdims)
    m = np.max(x, axis=axis, keepdims=True, **_empty_initial(x, axis, "max"))  # an empty set: log(0) = -inf
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _empty_initial(x, axes, which: str) -> dict:
    """``{"initial": v}`` when ``axes`` span no element: the maximum of an empty set is -inf (the type's minimum
    for integers, False for bools), its minimum +inf (the maximum, True), as ONNX defines them; else ``{}``."""
    if all(x.shape[a] for a in axes):
        return {}
    dt = np.dtype(x.dtype)
    if dt == np.bool_:
        return {"initial": which == "min"}
    if jnp.issubdtype(dt, jnp.integer):
        info = np.iinfo(dt)
        return {"initial": info.min if which == "max" else info.max}
    return {"initial": -np.inf if which == "max" else np.inf}


_REDUCTIONS = {
    "ReduceSum": ("sum", lambda xp, x, a, k: xp.sum(x, axis=a, keepdims=k, dtype=x.dtype)),
    "ReduceMean": ("mean", lambda xp, x, a, k: xp.mean(x, axis=a, keepdims=k).astype(x.dtype)),
    "ReduceMax": ("maximum", lambda xp, x, a, k: xp.max(x, axis=a, keepdims=k, **_empty_initial(x, a, "max"))),
    "ReduceMin": ("minimum", lambda xp, x, a, k: xp.min(x, axis=a, keepdims=k, **_empty_initial(x, a, "min"))),
    "ReduceProd": ("product", lambda xp, x, a, k: xp.prod(x, axis=a, keepdims=k, dtype=x.dtype)),
    "ReduceL1": ("sum of |x|", lambda xp, x, a, k: xp.sum(xp.abs(x), axis=a, keepdims=k, dtype=x.dtype)),
    "ReduceL2": (
        "sqrt of the sum of squares",
        lambda xp, x, a, k: xp.sqrt(xp.sum(x * x, axis=a, keepdims=k)),
    ),
    "ReduceLogSum": ("log of the sum", lambda xp, x, a, k: xp.log(xp.sum(x, axis=a, keepdims=k))),
    "ReduceLogSumExp": ("log of the sum of exp (stable)", _logsumexp),
    "ReduceSumSquare": (
        "sum of squares",
        lambda xp, x, a, k: xp.sum(x * x, axis=a, keepdims=k, dtype=x.dtype),
    ),
}


def _register_reduction(op_type: str, what: str, fn):
    def op(ctx, data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
        return _reduce(ctx, data, axes_input, axes, keepdims, noop_with_empty_axes, fn)

    op.__name__ = op.__qualname__ = op_type.lower()
    op.__doc__ = (
        f"ONNX ``{op_type}``: the {what} over ``axes`` (attribute in older opsets, input in newer ones; all axes "
        f"when empty, or the identity with ``noop_with_empty_axes=1``), keeping them as size 1 if ``keepdims``."
    )
    register_op(op_type, static_inputs=(1,))(op)


for _op, (_what, _fn) in _REDUCTIONS.items():
    _register_reduction(_op, _what, _fn)


def _arg_extremum(ctx, data, axis, keepdims, select_last_index, name):
    xp = xp_of(data)
    axis = _norm_axis(ctx, axis, data.ndim)
    fn = getattr(xp, name)
    if select_last_index:
        idx = (data.shape[axis] - 1) - fn(xp.flip(data, axis), axis=axis)
    else:
        idx = fn(data, axis=axis)
    idx = idx.astype(_index_dtype(xp))
    return xp.expand_dims(idx, axis) if keepdims else idx


@register_op("ArgMax")
def argmax(ctx, data, *, axis=0, keepdims=1, select_last_index=0):
    """Index of the largest element along ``axis`` (first occurrence, or last with ``select_last_index``)."""
    return _arg_extremum(ctx, data, axis, keepdims, select_last_index, "argmax")


@register_op("ArgMin")
def argmin(ctx, data, *, axis=0, keepdims=1, select_last_index=0):
    """Index of the smallest element along ``axis`` (first occurrence, or last with ``select_last_index``)."""
    return _arg_extremum(ctx, data, axis, keepdims, select_last_index, "argmin")


@register_op("TopK", static_inputs=(1,))
def top_k(ctx, x, k_input=None, *, axis=-1, largest=1, sorted=1, k=None):
    """The ``k`` largest (or smallest) elements along ``axis`` and their indices, sorted; ties keep index order."""
    k = int(ctx.static(k_input, "K").reshape(-1)[0]) if k_input is not None else k
    if k is None:
        raise ctx.error("TopK needs k")
    axis = _norm_axis(ctx, axis, x.ndim)
    if not 0 <= k <= x.shape[axis]:
        raise ctx.error(f"k={k} is out of range for an axis of size {x.shape[axis]}")
    xp = xp_of(x)
    moved = xp.moveaxis(x, axis, -1)
    # an order-reversing key: -x for floats, ~x (= -x - 1, or MAX - x unsigned) for integers, which cannot overflow
    flip = (lambda v: ~v) if jnp.issubdtype(x.dtype, jnp.integer) else (lambda v: -v)
    if xp is np:
        order = np.argsort(flip(moved) if largest else moved, axis=-1, kind="stable")[..., :k]
        values = np.take_along_axis(moved, order, axis=-1)
    else:
        values, order = jax.lax.top_k(moved if largest else flip(moved), k)
        values = values if largest else flip(values)
    order = order.astype(_index_dtype(xp))
    return xp.moveaxis(values, -1, axis), xp.moveaxis(order, -1, axis)


@register_op("CumSum", static_inputs=(1,))
def cumsum(ctx, x, axis, *, exclusive=0, reverse=0):
    """Cumulative sum along ``axis``; ``exclusive`` leaves out the current element, ``reverse`` runs backwards."""
    xp = xp_of(x)
    a = _norm_axis(ctx, int(ctx.static(axis, "axis").reshape(-1)[0]), x.ndim)
    y = xp.flip(x, a) if reverse else x
    y = xp.cumsum(y, axis=a, dtype=x.dtype)
    if exclusive:
        head = [slice(None)] * x.ndim
        head[a] = slice(0, -1)
        zeros = xp.zeros(x.shape[:a] + (1,) + x.shape[a + 1 :], x.dtype)
        y = xp.concatenate([zeros, y[tuple(head)]], axis=a)
    return xp.flip(y, a) if reverse else y


@register_op("Trilu", static_inputs=(1,))
def trilu(ctx, x, k=None, *, upper=1):
    """Upper (``upper=1``) or lower triangle of the last two axes, from diagonal ``k``; the rest set to zero."""
    xp = xp_of(x)
    if x.ndim < 2:
        raise ctx.error(f"the input must have at least 2 axes, got shape {tuple(x.shape)}")
    k = 0 if k is None else int(ctx.static(k, "k").reshape(-1)[0])
    return xp.triu(x, k) if upper else xp.tril(x, k)


# ---------------------------------------------------------------- resizing
def _resize_coords(ctx, mode, out_len, in_len, scale, roi_lo, roi_hi):
    """Source coordinates (float64) of the ``out_len`` output positions along one axis."""
    o = np.arange(out_len, dtype=np.float64)
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(o)
    if mode == "align_corners":
        return o * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(o)
    if mode == "asymmetric":
        return o / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        offset = in_len / 2 * (1 - adjustment)
        return offset + (o + 0.5) / scale - 0.5
    if mode == "tf_crop_and_resize":
        if out_len > 1:
            return roi_lo * (in_len - 1) + o * (roi_hi - roi_lo) * (in_len - 1) / (out_len - 1)
        return np.full_like(o, 0.5 * (roi_lo + roi_hi) * (in_len - 1))
    raise ctx.error(f"Resize coordinate_transformation_mode {mode!r} is not supported")


def _nearest_index(ctx, x, nearest_mode):
    if nearest_mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if nearest_mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if nearest_mode == "floor":
        return np.floor(x)
    if nearest_mode == "ceil":
        return np.ceil(x)
    raise ctx.error(f"Resize nearest_mode {nearest_mode!r} is not supported")


def _cubic_weights(t, a):
    """Keys cubic convolution weights of the taps at offsets -1, 0, 1, 2 for fractional positions ``t``."""
    d = np.stack([1 + t, t, 1 - t, 2 - t], axis=-1)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, far)


def _resize_axis(
    ctx,
    xp,
    x,
    axis,
    out_len,
    scale,
    roi_lo,
    roi_hi,
    *,
    mode,
    ctm,
    nearest_mode,
    a,
    exclude_outside,
    extrapolation_value,
):
    in_len = x.shape[axis]
    coords = _resize_coords(ctx, ctm, out_len, in_len, scale, roi_lo, roi_hi)
    if mode == "nearest":
        idx = np.clip(_nearest_index(ctx, coords, nearest_mode), 0, in_len - 1).astype(np.int64)
        taps, weights = idx[:, None], np.ones((out_len, 1))
    elif mode == "linear":
        lo = np.floor(coords)
        t = coords - lo
        taps, weights = np.stack([lo, lo + 1], -1), np.stack([1 - t, t], -1)
    elif mode == "cubic":
        lo = np.floor(coords)
        taps = lo[:, None] + np.arange(-1, 3)
        weights = _cubic_weights(coords - lo, a)
        if exclude_outside:
            weights = np.where((taps < 0) | (taps > in_len - 1), 0.0, weights)
            weights = weights / weights.sum(-1, keepdims=True)
    else:
        raise ctx.error(f"Resize mode {mode!r} is not one of 'nearest', 'linear', 'cubic'")
    taps = np.clip(taps, 0, in_len - 1).astype(np.int64)
    shape = [1] * x.ndim
    shape[axis] = out_len
    out = 0
    for j in range(taps.shape[1]):
        w = weights[:, j].astype(x.dtype).reshape(shape)
        out = out + xp.take(x, taps[:, j], axis=axis) * w
    if ctm == "tf_crop_and_resize":
        outside = ((coords < 0) | (coords > in_len - 1)).reshape(shape)
        out = xp.where(outside, xp.asarray(extrapolation_value, x.dtype), out)
    return out.astype(x.dtype)


# Coordinate modes that divide by (output length - 1): with scales, the ONNX reference takes the fractional length
# ``scale * input length`` and onnxruntime the integer one, so a fractional length is refused.
_CORNER_MODES = frozenset({"align_corners", "tf_crop_and_resize"})


@register_op("Resize", static_inputs=(1, 2, 3))
def resize(
    ctx,
    x,
    roi=None,
    scales=None,
    sizes=None,
    *,
    mode="nearest",
    coordinate_transformation_mode="half_pixel",
    cubic_coeff_a=-0.75,
    exclude_outside=0,
    extrapolation_value=0.0,
    nearest_mode="round_prefer_floor",
    antialias=0,
    axes=None,
    keep_aspect_ratio_policy="stretch",
):
    """Resize by ``scales`` or to ``sizes`` with ``nearest`` / ``linear`` / ``cubic`` interpolation, separably per
    axis (source positions and weights are computed with numpy at conversion time; the data path is gathers and
    weighted sums, so it is differentiable). Opset 10's ``Resize(X, scales)`` means ``asymmetric`` coordinates and
    ``floor`` rounding. ``antialias=1`` is not supported."""
    if ctx.opset < 11:
        scales, roi = roi, None
        coordinate_transformation_mode, nearest_mode = "asymmetric", "floor"
    if antialias:
        raise ctx.error("Resize with antialias=1 is not supported")
    ax = [_norm_axis(ctx, a, x.ndim, "axes") for a in axes] if axes is not None else list(range(x.ndim))
    scales = (
        ctx.static(scales, "scales").astype(np.float64) if scales is not None and np.size(scales) else None
    )
    sizes = ctx.static_ints(sizes, "sizes") if sizes is not None and np.size(sizes) else None
    in_shape = [x.shape[a] for a in ax]
    if sizes is not None:
        ratios = np.asarray(sizes, np.float64) / np.asarray(in_shape)
        if keep_aspect_ratio_policy in ("not_larger", "not_smaller"):
            r = ratios.min() if keep_aspect_ratio_policy == "not_larger" else ratios.max()
            ratios = np.full_like(ratios, r)
            sizes = [int(np.floor(r * n + 0.5)) for n in in_shape]
        elif keep_aspect_ratio_policy != "stretch":
            raise ctx.error(f"Resize keep_aspect_ratio_policy {keep_aspect_ratio_policy!r} is not supported")
        scales = ratios
    elif scales is not None:
        if len(scales) != len(ax):
            raise ctx.error(f"Resize scales {list(scales)} do not match the {len(ax)} resized axes")
    else:
        raise ctx.error("Resize needs scales or sizes")
    if roi is not None and np.size(roi):
        roi = ctx.static(roi, "roi").astype(np.float64).reshape(-1)
    else:
        roi = np.concatenate([np.zeros(len(ax)), np.ones(len(ax))])
    if len(roi) == 2 * x.ndim and len(ax) != x.ndim:
        roi = np.concatenate([roi[ax], roi[[x.ndim + a for a in ax]]])
    xp = xp_of(x)
    for i, a in enumerate(ax):
        roi_lo, roi_hi = roi[i], roi[i + len(ax)]
        if sizes is not None:
            out_len = sizes[i]
        else:
            crop = (roi_hi - roi_lo) if coordinate_transformation_mode == "tf_crop_and_resize" else 1.0
            out_len = int(np.floor(x.shape[a] * crop * scales[i]))
            width = x.shape[a] * scales[i]
            if out_len != int(np.floor(width)):
                raise ctx.error(
                    f"coordinate_transformation_mode='tf_crop_and_resize' with scales {[float(v) for v in scales]} "
                    f"and a region of interest {[float(roi_lo), float(roi_hi)]} on axis {a} is ambiguous: the ONNX "
                    f"spec gives it {out_len} outputs (length * (roi_end - roi_start) * scale), onnxruntime and the "
                    f"ONNX reference {int(np.floor(width))} (length * scale); give the output size as sizes=[...]"
                )
            if coordinate_transformation_mode in _CORNER_MODES and abs(width - out_len) > 1e-6 * max(out_len, 1):
                raise ctx.error(
                    f"coordinate_transformation_mode={coordinate_transformation_mode!r} with scales "
                    f"{[float(v) for v in scales]} is ambiguous: axis {a} of length {x.shape[a]} scales to "
                    f"{width:.6g} outputs: the ONNX reference aligns the corners to that fractional length, "
                    f"onnxruntime to the {out_len} outputs it makes (the results differ); give the output size as "
                    f"sizes=[...] instead of scales"
                )
        if (
            out_len == x.shape[a]
            and scales[i] == 1
            and coordinate_transformation_mode != "tf_crop_and_resize"
        ):
            continue
        x = _resize_axis(
            ctx,
            xp,
            x,
            a,
            out_len,
            scales[i],
            roi_lo,
            roi_hi,
            mode=mode,
            ctm=coordinate_transformation_mode,
            nearest_mode=nearest_mode,
            a=cubic_coeff_a,
            exclude_outside=exclude_outside,
            extrapolation_value=extrapolation_value,
        )
    return x
