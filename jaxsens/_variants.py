"""Shared machinery of the perturbation family: variant builders streamed through one compiled kernel.

For each row ``x`` a *variant function* builds every modified copy of it at once, ``[n_variants,
*input_shape]`` (every feature x draw x level, selected with a one-hot mask on the last axis; ``vmap`` over
rows, never a Python loop over features); one compiled kernel evaluates the chunk's rows and all their copies
and folds per-row statistics of the output changes (:func:`change_kernel`) or of the change in a per-sample
loss (:func:`loss_kernel`) with :mod:`jaxsens._stats`. Methods that also need per-row values (targets,
permuted values) pack them next to ``x`` in one ``[n_samples, width]`` array (:func:`pack`), so they stream
through the same engine.

An input the model ignores gets an effect of exactly 0 (see :func:`predictions`). Random draws use per-row keys
``fold_in(key, global_row_index)``: the batch size (and the device count) never changes which noise a row sees.
Method modules import from here (and from :mod:`jaxsens._checks`, :mod:`jaxsens._method`), never from each
other.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, DataError
from jaxsens import _engine, _stats
from jaxsens._data import as_chunk_dtype, check_float32_input, chunk_dtype, iter_chunks, open_source
from jaxsens._metrics import Metric, check_targets
from jaxsens._model import apply_rows
from jaxsens._results import frame

__all__ = [
    "Spec",
    "Task",
    "change_kernel",
    "check_rows",
    "feature_moments_kernel",
    "feature_std",
    "host_scores",
    "key_parts",
    "loss_kernel",
    "losses",
    "onehot_last",
    "pack",
    "passes_progress",
    "predict_all",
    "predictions",
    "read_rows_bounded",
    "refuse_one_shot",
    "reporter",
    "row_bytes",
    "rows_frame",
    "run_loss",
    "select_features",
    "std_of_moments",
    "stderr_of",
    "stream_feature_std",
    "target_layout",
    "targets_loss_kernel",
]


# -------------------------------------------------------------------------------------------------- machinery
@dataclasses.dataclass(frozen=True)
class Spec:
    """Static part of a task (hashable; a new value compiles a new kernel).

    Attributes:
        variants: ``variants(x, parts, key, arrays, options) -> [n_variants, *input_shape]`` for one row.
        options: static options passed to ``variants``.
        layout: ``(("x", input_shape), ("y", shape), ...)`` of a packed row, or ``None`` when rows are model
            inputs.
        metric: per-sample metric for :func:`loss_kernel`.
        key_impl: PRNG implementation name of ``arrays["key"]`` (raw key data crosses ``jit``).
        n_draws: variants are ``[n_draws, n_per_draw]``; output statistics are averaged over draws per row.
        outputs: indices into the flattened output that :func:`change_kernel` reports (``None``: all).
    """

    variants: Callable
    options: tuple = ()
    layout: tuple | None = None
    metric: Metric | None = None
    key_impl: str | None = None
    n_draws: int = 1
    outputs: tuple[int, ...] | None = None


@functools.partial(jax.tree_util.register_dataclass, data_fields=["model", "arrays"], meta_fields=["spec"])
@dataclasses.dataclass(frozen=True)
class Task:
    """What crosses ``jit``: the model, the arrays the variants need, and the static spec.

    It has the ``input_shape`` / ``feature_names`` that :func:`jaxsens._engine.run` reads: the model's for
    plain rows, the packed width for packed rows.
    """

    model: Any
    arrays: dict
    spec: Spec

    @property
    def n_inputs(self) -> int:
        if self.spec.layout is None:
            return getattr(self.model, "n_inputs", 1)
        return len(_groups(self.spec.layout))

    @property
    def input_shape(self) -> tuple:
        if self.spec.layout is None:
            return tuple(self.model.input_shape)
        widths = [
            (sum(math.prod(s) for _, s, g in self.spec.layout if g == group),)
            for group in _groups(self.spec.layout)
        ]
        return widths[0] if len(widths) == 1 else tuple(widths)

    @property
    def input_dtypes(self) -> tuple[np.dtype, ...]:
        if self.spec.layout is None:
            return tuple(getattr(self.model, "input_dtypes", (np.dtype(np.float32),)))
        return tuple(np.dtype(_GROUP_DTYPES[g]) for g in _groups(self.spec.layout))

    @property
    def input_names(self) -> tuple[str, ...]:
        if self.spec.layout is None:
            return tuple(getattr(self.model, "input_names", ("x",)))
        return tuple(("packed rows", "packed integer rows")[g] for g in _groups(self.spec.layout))

    @property
    def feature_names(self):
        return self.model.feature_names if self.spec.layout is None else None


_GROUP_DTYPES = (np.float32, np.int32)  # packed group 0: float32 values; group 1: integer inputs, exact


def _groups(layout) -> tuple[int, ...]:
    return tuple(sorted({g for _, _, g in layout}))


def _unpack(row, layout) -> dict[str, Any]:
    """One packed row (a tuple ``(floats, ints)`` when integer parts were packed) -> ``{name: array}``."""
    if layout is None:
        return {"x": row}
    rows = row if isinstance(row, tuple) else (row,)
    position = {g: i for i, g in enumerate(_groups(layout))}
    parts, at = {}, {}
    for name, shape, group in layout:
        size, start = math.prod(shape), at.get(group, 0)
        parts[name] = rows[position[group]][start : start + size].reshape(shape)
        at[group] = start + size
    return parts


def pack(parts: Sequence[tuple[str, np.ndarray]], *, exact: Sequence[str] = ()) -> tuple[Any, tuple]:
    """Pack per-row arrays ``[(name, [n_samples, ...]), ...]`` (``"x"`` first) into one float32 array.

    The parts named in ``exact`` (integer model inputs: token ids, and their permuted values) go as int32 into a
    second array, so they reach the model unchanged (float32 would round ids above 2**24); ``packed`` is then
    the tuple ``(floats, ints)``, which the engine streams row-aligned. Layout entries: ``(name, shape,
    group)``.
    """
    n = parts[0][1].shape[0]
    layout = tuple((name, tuple(int(d) for d in a.shape[1:]), int(name in exact)) for name, a in parts)
    floats = [np.asarray(a, np.float32).reshape(n, -1) for name, a in parts if name not in exact]
    packed = np.concatenate(floats, axis=1)
    if not exact:
        return packed, layout
    ints = [
        as_chunk_dtype(np.asarray(a).reshape(n, -1), np.int32, "X" if name == "x" else f"X ({name})")
        for name, a in parts
        if name in exact
    ]
    return (packed, np.concatenate(ints, axis=1)), layout


def row_inputs(task: Task, row, row_index):
    """One row -> ``([1 + n_variants, *input_shape] inputs, other packed parts)``; slot 0 is the row."""
    parts = _unpack(row, task.spec.layout)
    x = parts.pop("x")
    key = None
    if "key" in task.arrays:
        key = jax.random.fold_in(
            jax.random.wrap_key_data(task.arrays["key"], impl=task.spec.key_impl), row_index
        )
    variants = task.spec.variants(x, parts, key, task.arrays, task.spec.options)
    return jnp.concatenate([x[None], variants.astype(x.dtype)]), parts


def predictions(task: Task, xs, row_index):
    """A chunk -> ``([batch, 1 + n_variants, *output_shape] predictions, parts)``.

    The copies are built for all rows and variants at once (``vmap``); the model then runs once per variant
    slot over the whole chunk (``lax.map``: one compiled body, ``batch`` samples per step). Every slot is
    computed by the same code at the same positions, so a copy equal to its row after the model's first
    operations gives bit-for-bit the row's output: an input the model ignores gets an effect of exactly 0.
    (With one flat ``vmap`` over rows x variants, XLA computes different positions of the batch differently,
    e.g. FMA-contracted or not, and an ignored input gets ~1e-8 instead of 0.) It also bounds memory by one
    slot's activations.
    """
    inputs, parts = jax.vmap(row_inputs, in_axes=(None, 0, 0))(task, xs, row_index)
    apply = functools.partial(apply_rows, task.model, task.model.params)
    preds = jax.lax.map(apply, jnp.moveaxis(inputs, 1, 0))  # [1 + n_variants, batch, *output_shape]
    return jnp.moveaxis(preds, 0, 1), parts


def losses(metric: Metric, y, preds):
    """One row: ``(loss of the row, [n_variants] loss change of each copy)`` from its targets ``y`` and its
    predictions ``[1 + n_variants, *output_shape]`` (slot 0 the row itself)."""
    values = jax.vmap(metric.fn, in_axes=(None, 0))(y, preds)
    # identical predictions have identical losses; XLA may reduce the loss of different variants in different
    # orders (a ~1e-10 difference), so an input the model ignores keeps its exact 0 here
    same = jnp.all((preds[1:] == preds[0]).reshape(preds.shape[0] - 1, -1), axis=1)
    return values[0], jnp.where(same, 0.0, values[1:] - values[0])


_losses = losses  # older name


@jax.jit
def loss_kernel(task: Task, xs, mask, row_index):
    """Per chunk: moments of the per-sample loss (``base``) and of its change per variant (``diff``)."""
    preds, parts = predictions(task, xs, row_index)
    base, diff = jax.vmap(functools.partial(_losses, task.spec.metric))(parts["y"], preds)
    return {"base": _stats.moments_of(base, mask), "diff": _stats.moments_of(diff, mask)}


def _changes(n_draws: int, outputs, preds):
    d = (preds[1:] - preds[0]).reshape(n_draws, -1, math.prod(preds.shape[1:]))
    if outputs is not None:
        d = d[..., np.asarray(outputs)]
    sq = jnp.mean(d * d, axis=0)
    return sq, jnp.mean(sq, axis=-1), jnp.mean(d, axis=0)


@jax.jit
def change_kernel(task: Task, xs, mask, row_index):
    """Per chunk: moments of the squared output change per (variant, output), its mean over outputs, and the
    signed change; each averaged over the draws of a row first."""
    preds, _ = predictions(task, xs, row_index)
    sq, sq_all, d = jax.vmap(functools.partial(_changes, task.spec.n_draws, task.spec.outputs))(preds)
    return {
        "sq": _stats.moments_of(sq, mask),
        "sq_all": _stats.moments_of(sq_all, mask),
        "d": _stats.moments_of(d, mask),
    }


@jax.jit
def predict_kernel(task: Task, xs, row_index):
    return predictions(task, xs, row_index)[0]


def row_bytes(task: Task, row_shape=None) -> int:
    """Upper bound on the memory one row needs in the kernels (for the engine's default batch size).

    One sample's model intermediates (the variant slots run one after the other) plus the row's copies and
    their outputs. The row's shape and dtype are the task's (``row_shape`` is accepted for older callers).
    """
    del row_shape
    _, shapes, dtypes = _engine.model_inputs(task)
    rows = tuple(jax.ShapeDtypeStruct(s, chunk_dtype(d)) for s, d in zip(shapes, dtypes))
    row = rows if len(rows) > 1 else rows[0]
    index = jax.ShapeDtypeStruct((), jnp.uint32)
    n_eval = jax.eval_shape(lambda r, i: row_inputs(task, r, i)[0], row, index).shape[0]
    model_dtype = chunk_dtype(_engine.model_inputs(task.model)[2][0])
    example = jax.ShapeDtypeStruct(tuple(task.model.input_shape), model_dtype)
    # the model is traced alone (the copy slots run one after the other); the copies are counted explicitly
    model_bytes = _engine.model_bytes_per_sample(
        task.model, "apply", lambda x: task.model.apply(task.model.params, x), example
    )
    per_copy = 4 * (math.prod(task.model.input_shape) + 3 * math.prod(task.model.output_shape))
    return model_bytes + 3 * n_eval * per_copy


def run_loss(task: Task, packed, *, batch_size: int | None, progress=None):
    """Stream packed rows (an array, or the tuple from :func:`pack` with integer parts) through
    :func:`loss_kernel`; returns ``(base Moments, diff Moments, RunInfo)``."""
    stats, info = _engine.run(
        loss_kernel,
        task,
        packed,
        batch_size=batch_size,
        bytes_per_sample=row_bytes(task),
        progress=progress,
    )
    return stats["base"], stats["diff"], info


def predict_all(task: Task, packed, *, batch_size: int | None, progress: Callable | None = None) -> np.ndarray:
    """Predictions of every row and its variants, ``[n_samples, 1 + n_variants, *output_shape]``.

    Used only for whole-data-set metrics (``Metric(per_sample=False)``), which cannot be folded per chunk.
    ``progress(rows_done, rows_total)`` is called after each chunk when given.
    """
    arrays = packed if isinstance(packed, tuple) else (packed,)
    n = arrays[0].shape[0]
    if batch_size is None:
        batch_size = _engine.choose_batch_size(row_bytes(task), n_rows=n)
    sources = tuple(open_source(a, input_shape=a.shape[1:]) for a in arrays)
    shapes = tuple(a.shape[1:] for a in arrays)
    dtypes = tuple(a.dtype for a in arrays)
    if not isinstance(packed, tuple):
        sources, shapes, dtypes = sources[0], shapes[0], dtypes[0]
    out = []
    for chunk in iter_chunks(sources, batch_size=batch_size, input_shape=shapes, dtype=dtypes):
        preds = predict_kernel(task, jax.tree.map(jnp.asarray, chunk.xs), jnp.asarray(chunk.row_index))
        out.append(np.asarray(preds)[: chunk.n_valid])
        if progress is not None:
            progress(chunk.start + chunk.n_valid, n)
    return np.concatenate(out)


def host_scores(metric: Metric, y: np.ndarray, preds: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``metric.fn(y, preds[:, v])`` for every variant ``v`` (a host loop over metric calls only).

    ``rows`` (indices, e.g. a bootstrap resample) scores ``y[rows]`` against ``preds[rows, v]`` without copying
    every variant's predictions at once.
    """
    if rows is not None:
        y = np.asarray(y)[rows]
    n = preds.shape[0] if rows is None else len(rows)
    scores = []
    for v in range(preds.shape[1]):
        p = preds[:, v] if rows is None else preds[rows, v]
        if np.ndim(y) == 1 and math.prod(p.shape[1:]) == 1:
            p = p.reshape(n)
        scores.append(float(metric.fn(y, p)))
    return np.asarray(scores, np.float64)


def onehot_last(features: Sequence[int], n_features: int, ndim: int) -> np.ndarray:
    """``[len(features), 1, ..., 1, n_features]`` bool: row ``k`` selects ``features[k]`` on the last axis."""
    eye = np.eye(n_features, dtype=bool)[np.asarray(features, int)]
    return eye.reshape(len(features), *([1] * (ndim - 1)), n_features)


# ------------------------------------------------------------------------------------------------- validation
def select_features(features, names: Sequence[str], what: str = "features") -> tuple[int, ...]:
    """Feature indices from ``None`` (all), names or integer indices (validated, duplicates refused)."""
    n = len(names)
    if features is None:
        return tuple(range(n))
    if isinstance(features, str | int | np.integer):
        features = [features]
    out = []
    for f in features:
        if isinstance(f, str):
            if f not in names:
                raise ArgumentError(f"{what} names {f!r}, which is not a feature; features: {list(names)}")
            out.append(list(names).index(f))
        elif isinstance(f, int | np.integer) and not isinstance(f, bool) and -n <= int(f) < n:
            out.append(int(f) % n)
        else:
            raise ArgumentError(f"{what} holds {f!r}; use feature names or indices in [0, {n})")
    if len(set(out)) != len(out) or not out:
        raise ArgumentError(f"{what}={list(features)!r} is empty or repeats a feature")
    return tuple(out)


def check_rows(model, X, what: str = "X") -> np.ndarray:
    """``X`` as a float array ``[n_samples, *input_shape]`` with at least one row, all finite."""
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise DataError(f"{what} has dtype {X.dtype}; expected real numbers")
    if X.shape[1:] != tuple(model.input_shape):
        model.check_batch(X, what)
    if X.shape[0] == 0:
        raise DataError(f"{what} has no rows")
    if not np.isfinite(X).all():
        bad = int(np.flatnonzero(~np.isfinite(X.reshape(X.shape[0], -1)).all(axis=1))[0])
        raise DataError(f"{what} row {bad} holds NaN or Inf; clean the data first")
    check_float32_input(X, what)  # finite float64 values beyond float32 would become Inf in the kernels
    return X


def feature_std(X: np.ndarray, names: Sequence[str] | None = None, method: str = "") -> np.ndarray:
    """``[n_features]`` standard deviation (ddof = 1) of each feature, pooled over every axis but the last.

    Noise scaled by it is undefined for a single row (refused) and zero for a constant feature (warned: such a
    feature gets exactly zero importance by construction, not because the model ignores it).
    """
    flat = X.reshape(-1, X.shape[-1]).astype(np.float64)
    if flat.shape[0] < 2:
        raise DataError(
            f"{method}() scales its noise by each feature's standard deviation, which needs at least 2 rows; "
            f"got {flat.shape[0]}"
        )
    std = flat.std(axis=0, ddof=1)
    _warn_constant(std, names, method)
    return std


def _warn_constant(std: np.ndarray, names: Sequence[str] | None, method: str) -> None:
    constant = np.flatnonzero(std == 0)
    if constant.size:
        labels = [names[i] if names else f"x{i}" for i in constant[:10]]
        warnings.warn(
            f"{method}(): feature(s) {labels}{' ...' if constant.size > 10 else ''} are constant in the data, so "
            "noise scaled by their standard deviation is zero and their importance is 0 by construction",
            stacklevel=4,
        )


def stderr_of(m: _stats.Moments) -> np.ndarray:
    """Standard error of a streamed mean, ``std / sqrt(count)`` (ddof = 1); 0 for a constant value."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _stats.std(m) / np.sqrt(m.count)


def rows_frame(names, columns: dict[str, Any], score):
    """A DataFrame with one row per feature, the given columns and ``rank`` (1 = largest ``score``)."""
    score = np.asarray(score, np.float64)
    order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")
    rank = np.empty(len(score), np.int64)
    rank[order] = np.arange(1, len(score) + 1)
    return frame({"feature": list(names), **{k: np.asarray(v) for k, v in columns.items()}, "rank": rank})




# ------------------------------------------------------------------------------------- keys, passes, first pass
def key_parts(key) -> tuple[jax.Array, str]:
    """``(raw key data, impl name)`` of a typed key (``Call.key``): raw data crosses ``jit`` in a :class:`Task`,
    the impl name is static (:attr:`Spec.key_impl`)."""
    return jax.random.key_data(key), str(jax.random.key_impl(key))


def refuse_one_shot(value, what: str, method: str, passes: str) -> None:
    """Refuse a one-shot iterator (a generator) for a method that reads ``what`` more than once."""
    if isinstance(value, Iterator):
        raise ArgumentError(
            f"{method}() reads {what} {passes}, but {what} is a one-shot iterator "
            f"({type(value).__name__}): pass an array, a .npy / .npz / .csv / .parquet file, or a re-iterable "
            "sequence of batches (a list, a DataLoader)"
        )


def passes_progress(progress, n_passes: int, method: str):
    """Progress over several streamed passes as one count: ``(reporters, close)``.

    ``reporters(offset)`` is the ``progress(rows_done, rows_total)`` callable to give pass ``k``'s
    :func:`jaxsens._engine.run` (``offset``: rows read by the earlier passes); the caller sees rows done over
    all passes against ``n_passes x n_rows`` (``None`` when the row count is not known up front). ``True``
    draws one tqdm bar described as ``"<method> (<n_passes> passes)"``; ``close()`` closes it.
    """
    if progress is None or progress is False:
        return (lambda offset: None), (lambda: None)
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=None, unit="rows", unit_scale=True, dynamic_ncols=True,
                   desc=f"{method} ({n_passes} passes)")

        def sink(done, total):
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        close = bar.close
    else:
        sink, close = progress, (lambda: None)

    def reporter(offset: int):
        def report(done, total):
            sink(offset + done, None if total is None else n_passes * total)

        return report

    return reporter, close


@functools.partial(jax.jit, static_argnames=("with_targets",))
def feature_moments_kernel(model, batch, mask, row_index, *, with_targets: bool = False):
    """First-pass kernel: moments of each feature (the last input axis), pooled over the leading input axes.

    ``batch`` is ``xs`` or, ``with_targets``, ``(xs, ys)`` (targets ride along so that rows skipped for a NaN
    target are skipped here too). ``model`` only describes the input for the engine.
    """
    del model, row_index
    xs = batch[0] if with_targets else batch
    rows = xs.reshape(-1, xs.shape[-1])
    return _stats.moments_of(rows, jnp.repeat(mask, rows.shape[0] // xs.shape[0]))


def std_of_moments(m: _stats.Moments, names: Sequence[str] | None, method: str) -> np.ndarray:
    """``[n_features]`` standard deviation (ddof = 1) from streamed moments; as :func:`feature_std`: fewer than 2
    (pooled) rows refused, constant features warned."""
    n = float(m.count)
    if n < 2:
        raise DataError(
            f"{method}() scales its noise by each feature's standard deviation, which needs at least 2 rows; "
            f"got {int(n)}"
        )
    std = _stats.std(m)
    _warn_constant(std, names, method)
    return std


def stream_feature_std(model, data, targets=None, *, method: str, names=None, batch_size=None,
                       nan_policy="raise", progress=None, devices=None):
    """Stream one pass over ``data`` (and ``targets``, for the same rows) for the feature standard deviations.

    Returns ``(std [n_features], RunInfo)``; memory independent of the number of rows.
    """
    stats, info = _engine.run(
        functools.partial(feature_moments_kernel, with_targets=targets is not None),
        model,
        data,
        targets=targets,
        batch_size=batch_size,
        bytes_per_sample=16 * math.prod(model.input_shape),
        nan_policy=nan_policy,
        progress=progress,
        devices=devices,
    )
    return std_of_moments(stats, names or info.feature_names, method), info


def read_rows_bounded(x_source, y_source, *, input_shape, nan_policy: str, max_rows: int, method: str,
                      reason: str, progress=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Read streamed data and targets whole, ``(X float32, y, n_skipped)``, refusing more than ``max_rows`` rows.

    For the few computations that need every row at once (a whole-data-set metric such as ``r2``): the bound
    is checked before reading when the row count is known up front, else while reading. Rows with NaN / Inf
    raise or are dropped, per ``nan_policy``.
    """
    def refuse(n):
        raise DataError(
            f"{method}() holds every row in memory for {reason}; the data has {n} rows, more than the "
            f"limit of {max_rows}. Use a per-sample metric (mse, mae, accuracy, log_loss, or "
            "Metric(..., per_sample=True)), which streams, or pass a sample of the rows"
        )

    known = x_source.n_rows if x_source.n_rows is not None else y_source.n_rows
    if known is not None and known > max_rows:
        refuse(known)
    y_dtype = np.int32 if np.dtype(y_source.dtype or np.float32).kind in "iub" else np.float32
    shapes = (tuple(input_shape), tuple(y_source.row_shape or ()))
    xs, ys, kept, skipped = [], [], 0, 0
    for chunk in iter_chunks((x_source, y_source), batch_size=8192, input_shape=shapes, nan_policy=nan_policy,
                             dtype=(np.float32, y_dtype)):
        if chunk.start + chunk.n_valid + chunk.n_skipped > max_rows:
            refuse(f"more than {max_rows}")
        xs.append(chunk.xs[0][chunk.mask])
        ys.append(chunk.xs[1][chunk.mask])
        kept += chunk.n_valid
        skipped += chunk.n_skipped
        if progress is not None:
            progress(chunk.start + chunk.n_valid + chunk.n_skipped, known)
    if not kept:
        raise DataError(f"data ({x_source.description}) has no usable rows")
    return np.concatenate(xs), np.concatenate(ys), skipped


def reporter(progress, total):
    """``(report(done), close())`` for a progress counted over several engine runs (``report`` is ``None``
    without progress); see :func:`jaxsens._engine.progress_reporter`."""
    if progress is None:
        return None, lambda: None
    report = _engine.progress_reporter(progress, total)
    return report, lambda: report(None)


@functools.partial(jax.jit, static_argnames=("layout", "n_labels"))
def targets_loss_kernel(task: Task, batch, mask, row_index, *, layout, n_labels):
    """:func:`jaxsens._variants.loss_kernel` for targets streamed by the engine, ``batch = (xs, ys)``.

    The rows and their targets are packed per chunk (``layout``: ``(("x", input_shape, 0), ("y", y_shape,
    0))``), so the plain task (``task.spec.layout is None``: the engine reads the model's input shape) runs the
    shared loss kernel. ``n_labels`` > 0: the targets are class labels of that many classes, and rows whose
    label is not a whole number in ``[0, n_labels)`` are counted (``"bad_labels"``) so they can be refused
    instead of being read as another class.
    """
    xs, ys = batch
    n = xs.shape[0]
    packed = jnp.concatenate([xs.reshape(n, -1), ys.reshape(n, -1).astype(xs.dtype)], axis=1)
    packed_task = Task(task.model, task.arrays, dataclasses.replace(task.spec, layout=layout))
    out = dict(loss_kernel(packed_task, packed, mask, row_index))
    if n_labels:
        y = ys.reshape(n).astype(jnp.float32)
        bad = (y < 0) | (y >= n_labels) | (y != jnp.floor(y))
        out["bad_labels"] = _stats.total_of(bad.astype(jnp.float32), mask)
    return out


def target_layout(model, y_src, metric, fn: str) -> tuple[tuple, int]:
    """``(layout, n_labels)`` for :func:`targets_loss_kernel`; refuses targets whose per-row shape does not fit."""
    y_shape = tuple(y_src.row_shape or ())
    check_targets(metric, np.zeros((1, *y_shape), np.float32), 1, model.output_shape, what="targets")
    n_out = math.prod(model.output_shape)
    labels = metric.targets == "labels_or_values" and math.prod(y_shape) == 1 and n_out >= 2
    layout = (("x", tuple(model.input_shape), 0), ("y", y_shape, 0))
    return layout, (n_out if labels else 0)
