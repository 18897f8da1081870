"""The inside view: every layer's output for given inputs, per-unit statistics over a data set, the layer graph.

Seed 003's question ("what does one input pattern look like as it passes through the layers?") in three calls:

* :func:`activations` -- every layer's output for one sample or a batch, named after the layers (the Keras layer
  names where the file keeps them, ``model.layer_names``), in graph order, the output layer included;
* :func:`activation_stats` -- per-unit mean, standard deviation, minimum, maximum and fraction of exact zeros of
  every layer over a data set of any size, streamed through :func:`jaxsens._engine.run` (memory independent of the
  number of rows); :meth:`ActivationStats.dead_units` lists the units that are 0 on every row (dead ReLUs);
* :func:`architecture` -- the layer graph as a table (name, op types, per-sample output shape, parameter count,
  the layers feeding it), read off the converted ONNX graph (:mod:`converters.onnx_to_jax.layers`).

All three need a converted model (ONNX / Keras): a model wrapping a plain JAX function has no layers to show.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError, DataError, MissingExtraError
from jaxsens import _engine, _stats

__all__ = [
    "ActivationStats",
    "LayerInfo",
    "activation_stats",
    "activations",
    "architecture",
    "architecture_frame",
]


# ------------------------------------------------------------------------------------------------ results
@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One row of :func:`architecture`.

    Attributes:
        name: layer name (a graph input's name for the input rows).
        op_types: ONNX op types computing it, in order of first appearance (``("Input",)`` for an input).
        output_shape: per-sample shape of its output (no batch axis).
        n_params: number of weights it holds (Keras' ``layer.count_params()`` for Keras files).
        inputs: names of the inputs / layers whose values it reads.
    """

    name: str
    op_types: tuple[str, ...]
    output_shape: tuple
    n_params: int
    inputs: tuple[str, ...]


@dataclasses.dataclass(frozen=True, eq=False)  # dicts of arrays: no element-wise ==
class ActivationStats:
    """Per-unit statistics of every selected layer's output over a data set (:func:`activation_stats`).

    A *unit* is one element of a layer's per-sample output, numbered in C order over ``shapes[layer]``
    (``np.unravel_index(unit, shapes[layer])`` gives its position).

    Attributes:
        layers: layer names, in graph order.
        shapes: per-sample output shape of each layer.
        mean: ``{layer: [*layer_shape]}`` mean over rows.
        std: ``{layer: [*layer_shape]}`` standard deviation over rows (ddof = 1; NaN for a single row).
        min, max: ``{layer: [*layer_shape]}`` smallest and largest value over rows.
        zero_fraction: ``{layer: [*layer_shape]}`` fraction of rows where the unit is exactly 0.
        n_samples: rows that entered the statistics.
        n_skipped: rows dropped by ``nan_policy="skip"``.
    """

    layers: tuple[str, ...]
    shapes: dict[str, tuple]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    min: dict[str, np.ndarray]
    max: dict[str, np.ndarray]
    zero_fraction: dict[str, np.ndarray]
    n_samples: int
    n_skipped: int

    def dead_units(self, layer: str | None = None) -> dict[str, np.ndarray]:
        """Units that are exactly 0 on every row (e.g. ReLUs whose input never turns positive).

        Args:
            layer: one layer name; default every layer.

        Returns:
            ``{layer: unit indices}`` (int64, C order over the layer's shape; empty where none is dead).
        """
        names = self.layers if layer is None else (_pick(self.layers, [layer], "layer")[0],)
        return {n: np.flatnonzero(self.zero_fraction[n].reshape(-1) == 1.0) for n in names}

    def to_frame(self):
        """Tidy pandas DataFrame, one row per (layer, unit): ``layer``, ``unit`` (C-order index), ``mean``,
        ``std``, ``min``, ``max``, ``zero_fraction``. Needs pandas (the ``data`` extra)."""
        pd = _pandas("ActivationStats.to_frame()")
        cols: dict[str, list] = {
            k: [] for k in ("layer", "unit", "mean", "std", "min", "max", "zero_fraction")
        }
        for name in self.layers:
            n = math.prod(self.shapes[name])
            cols["layer"].append(np.full(n, name, dtype=object))
            cols["unit"].append(np.arange(n))
            for key in ("mean", "std", "min", "max", "zero_fraction"):
                cols[key].append(np.asarray(getattr(self, key)[name], np.float64).reshape(-1))
        return pd.DataFrame({k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()})

    def summary(self) -> str:
        """One line per layer: shape, mean range, dead units."""
        dead = self.dead_units()
        lines = [
            f"activation statistics over {self.n_samples} row(s)"
            + (f" ({self.n_skipped} skipped)" if self.n_skipped else "")
        ]
        for n in self.layers:
            if not self.mean[n].size:
                lines.append(f"  {n} {self.shapes[n]}: no units")
                continue
            lines.append(
                f"  {n} {self.shapes[n]}: mean {np.min(self.mean[n]):.4g} .. {np.max(self.mean[n]):.4g}, "
                f"min {np.min(self.min[n]):.4g}, max {np.max(self.max[n]):.4g}, {dead[n].size} dead unit(s)"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:  # the default would print every array
        return (
            f"ActivationStats(layers={list(self.layers)}, n_samples={self.n_samples}, "
            f"n_skipped={self.n_skipped})"
        )


# ------------------------------------------------------------------------------------------------ public API
def activations(model, xs, *, layers: Sequence[str | int] | str | int | None = None) -> dict[str, np.ndarray]:
    """Every layer's output for one sample or a batch.

    Args:
        model: a converted :class:`jaxsens.Model` (ONNX / Keras).
        xs: one sample ``[*input_shape]`` or a batch ``[n_samples, *input_shape]`` (for several inputs: a tuple /
            dict of such arrays, one per input).
        layers: layer names or indices into ``model.layer_names`` (default every layer); one name is fine.

    Returns:
        ``{layer_name: array}`` in graph order, the output layer included: ``[*layer_shape]`` for one sample,
        ``[n_samples, *layer_shape]`` for a batch (float32). A batch is computed in fixed-size chunks (a
        128 MiB budget on CPU for the chunk's intermediate values), so only the returned arrays grow with it.

    Raises:
        ArgumentError: a wrapped-function model (no layers), or an unknown layer (the message lists the layers).
        DataError: ``xs`` is neither one sample nor a batch of the model's input shape (expected vs got).

    Example:
        >>> import numpy as np, jaxsens
        >>> m = jaxsens.load_model(jaxsens.examples.default_model_path())
        >>> acts = jaxsens.activations(m, np.zeros(82, np.float32))
        >>> {k: v.shape for k, v in acts.items()}
        {'dense_0': (64,), 'dense_1': (64,), 'dense_2': (64,), 'output': (2,)}
    """
    names = _selected(model, layers, "activations")
    parts, single = _as_batch(model, xs)
    n = parts[0].shape[0]
    shapes = _layer_shapes(model, names)
    if n == 0:
        return {k: np.zeros((0, *shapes[k]), np.float32) for k in names}
    bytes_per_row = _engine.model_bytes_per_sample(
        model, ("inside.activations", names), _per_sample(model, names), *_specs(model)
    )
    size = _engine.choose_batch_size(bytes_per_row, n_rows=n, devices=jax.local_devices()[:1])
    out: dict[str, list] = {k: [] for k in names}
    for start in range(0, n, size):
        chunk = [p[start : start + size] for p in parts]
        m = chunk[0].shape[0]
        if m < size:  # pad the tail with its last row: one compiled shape for every chunk
            chunk = [np.concatenate([c, np.repeat(c[-1:], size - m, axis=0)]) for c in chunk]
        got = model.intermediates(chunk[0] if len(chunk) == 1 else tuple(chunk), names)
        for k in names:
            out[k].append(got[k][:m])
    result = {k: np.concatenate(v) for k, v in out.items()}
    return {k: v[0] for k, v in result.items()} if single else result


def activation_stats(
    model,
    data,
    *,
    layers: Sequence[str | int] | str | int | None = None,
    batch_size: int | None = None,
    nan_policy: str = "raise",
    progress=None,
    devices=None,
) -> ActivationStats:
    """Per-unit mean, standard deviation, minimum, maximum and fraction of exact zeros of every layer's output.

    One pass over ``data`` through :func:`jaxsens._engine.run`: each fixed-size chunk goes through one compiled
    kernel that computes every selected layer and summarises it per unit (two-pass shifted moments,
    :func:`jaxsens._stats.moments_of`; minimum and maximum; a count of exact zeros), merged in float64 on the host.
    Memory is independent of the number of rows, and the results of any ``batch_size`` agree.

    Args:
        model: a converted :class:`jaxsens.Model` (ONNX / Keras).
        data: anything the methods take (array, ``.npy`` / ``.npz`` / ``.csv`` / ``.parquet`` path, iterable of
            batches; a tuple / dict of those for several inputs).
        layers: layer names or indices (default every layer).
        batch_size: rows per chunk (default from a memory budget).
        nan_policy: ``"raise"`` or ``"skip"`` rows of ``data`` holding NaN / Inf.
        progress: ``True`` for a progress bar, or ``callable(rows_done, rows_total)``.
        devices: devices to shard the batch over (default all local devices).

    Returns:
        :class:`ActivationStats`; ``std`` uses ddof = 1, ``zero_fraction`` counts values ``== 0`` exactly.

    Example:
        >>> import numpy as np, jaxsens
        >>> m = jaxsens.load_model(jaxsens.examples.default_model_path())
        >>> st = jaxsens.activation_stats(m, np.load(jaxsens.examples.default_data_path())[:100])
        >>> st.n_samples, st.mean["output"].shape
        (100, (2,))
    """
    names = _selected(model, layers, "activation_stats")
    if nan_policy not in ("raise", "skip"):
        raise ArgumentError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1
    ):
        raise ArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    if data is None:
        raise ArgumentError(
            "activation_stats() needs data: an array, a .npy / .npz / .csv / .parquet path, or batches"
        )
    shapes = _layer_shapes(model, names)
    bytes_per_row = _engine.model_bytes_per_sample(
        model, ("inside.activation_stats", names), _per_sample(model, names), *_specs(model)
    )
    stats, info = _engine.run(
        functools.partial(_stats_kernel, names=names),
        model,
        data,
        batch_size=batch_size,
        bytes_per_sample=bytes_per_row,
        nan_policy=nan_policy,
        progress=progress,
        devices=devices,
    )
    mean, std, lo, hi, zeros = {}, {}, {}, {}, {}
    for k in names:
        moments, extrema, zero_count = stats[k]
        shape = shapes[k]
        mean[k] = np.asarray(moments.mean, np.float64).reshape(shape)
        std[k] = _stats.std(moments).reshape(shape)
        lo[k] = np.asarray(extrema.min, np.float64).reshape(shape)
        hi[k] = np.asarray(extrema.max, np.float64).reshape(shape)
        zeros[k] = (np.asarray(zero_count.value, np.float64) / info.n_samples).reshape(shape)
    return ActivationStats(
        layers=names,
        shapes=dict(shapes),
        mean=mean,
        std=std,
        min=lo,
        max=hi,
        zero_fraction=zeros,
        n_samples=info.n_samples,
        n_skipped=info.n_skipped,
    )


def architecture(model) -> list[LayerInfo]:
    """The model's layer graph as a table, in graph order, the input(s) first.

    Each row names the layer, the ONNX op types computing it, its per-sample output shape, its parameter count
    and the inputs / layers feeding it (:func:`converters.onnx_to_jax.layers.graph_layers` gives the rules:
    shape plumbing is left out, parameter counts equal Keras' ``layer.count_params()`` for Dense, Conv, LSTM /
    GRU and Embedding layers).

    Raises:
        ArgumentError: a wrapped-function model (no layer graph to show).

    Example:
        >>> import jaxsens
        >>> m = jaxsens.load_model(jaxsens.examples.default_model_path())
        >>> [(r.name, r.output_shape, r.n_params) for r in jaxsens.architecture(m)][:2]
        [('input', (82,), 0), ('dense_0', (64,), 5312)]
    """
    from converters.onnx_to_jax.layers import graph_layers

    fn = _graph(model, "architecture")
    layers = graph_layers(fn)
    shapes = _layer_shapes(model, tuple(g.name for g in layers))
    _, in_shapes, _ = _engine.model_inputs(model)
    rows = [LayerInfo(n, ("Input",), tuple(s), 0, ()) for n, s in zip(model.input_names, in_shapes)]
    rows += [LayerInfo(g.name, g.op_types, shapes[g.name], g.n_params, g.inputs) for g in layers]
    return rows


def architecture_frame(model):
    """:func:`architecture` as a pandas DataFrame (columns ``name``, ``op_types``, ``output_shape``, ``n_params``,
    ``inputs``; tuples joined into text). Needs pandas (the ``data`` extra)."""
    pd = _pandas("architecture_frame()")
    rows = architecture(model)
    return pd.DataFrame(
        {
            "name": [r.name for r in rows],
            "op_types": [", ".join(r.op_types) for r in rows],
            "output_shape": [r.output_shape for r in rows],
            "n_params": [r.n_params for r in rows],
            "inputs": [", ".join(r.inputs) for r in rows],
        }
    )


# ------------------------------------------------------------------------------------------------ kernel
@functools.partial(jax.jit, static_argnames=("names",))
def _stats_kernel(model, xs, mask, row_index, *, names):
    """Per-unit summaries of every layer in ``names`` over one chunk: ``{name: (Moments, Extrema, Total)}``."""
    del row_index
    acts = jax.vmap(lambda x: model.apply.intermediates(model.params, x, names))(xs)
    out = {}
    for k in names:
        v = jnp.asarray(acts[k])
        v = v.astype(jnp.float32) if not jnp.issubdtype(v.dtype, jnp.floating) else v
        out[k] = (_stats.moments_of(v, mask), _stats.extrema_of(v, mask), _stats.total_of(v == 0, mask))
    return out


# ------------------------------------------------------------------------------------------------ helpers
def _graph(model, fn: str):
    """The converted graph of ``model`` (an ``OnnxFunction``), or a refusal naming why there is none."""
    from converters.onnx_to_jax.graph import OnnxFunction
    from jaxsens._model import Model

    if not isinstance(model, Model):
        raise ArgumentTypeError(f"{fn}() needs a jaxsens.Model, got {type(model).__name__}; see load_model()")
    if not isinstance(model.apply, OnnxFunction):
        raise ArgumentError(
            f"{fn}() shows the layers of a converted model (ONNX / Keras file), but this model wraps a plain "
            f"function ({model.source or model.apply!r}): it has no layers to show. Export the network to ONNX "
            "(or save the Keras model) and load it with jaxsens.load_model()"
        )
    return model.apply


def _layer_map(model, fn: str) -> dict[str, str]:
    from converters.onnx_to_jax.layers import layer_tensors

    return layer_tensors(_graph(model, fn))


def _selected(model, layers, fn: str) -> tuple[str, ...]:
    valid = tuple(_layer_map(model, fn))
    if layers is None:
        return valid
    if isinstance(layers, str | numbers.Integral):
        layers = [layers]
    if not isinstance(layers, Sequence) or isinstance(layers, bytes):
        raise ArgumentTypeError(
            f"layers takes layer names or indices (a list), got {type(layers).__name__}; layers: {list(valid)}"
        )
    if not layers:
        raise ArgumentError(f"layers=[] selects nothing; pass None for every layer, or some of {list(valid)}")
    return _pick(valid, layers, "layers")


def _pick(valid: tuple[str, ...], wanted, what: str) -> tuple[str, ...]:
    out: list[str] = []
    for w in wanted:
        if isinstance(w, numbers.Integral) and not isinstance(w, bool):
            if not -len(valid) <= int(w) < len(valid):
                raise ArgumentError(
                    f"{what}: index {w} is out of range; the model has {len(valid)} layers {list(valid)}"
                )
            name = valid[int(w)]
        elif isinstance(w, str):
            if w not in valid:
                raise ArgumentError(f"{what}: unknown layer {w!r}; the model's layers are {list(valid)}")
            name = w
        else:
            raise ArgumentTypeError(f"{what} takes layer names or indices, got {type(w).__name__} {w!r}")
        if name not in out:
            out.append(name)
    order = {n: i for i, n in enumerate(valid)}
    return tuple(sorted(out, key=order.__getitem__))


def _specs(model) -> list[jax.ShapeDtypeStruct]:
    _, shapes, dtypes = _engine.model_inputs(model)
    from jaxsens._data import chunk_dtype

    return [jax.ShapeDtypeStruct(s, chunk_dtype(d)) for s, d in zip(shapes, dtypes)]


def _per_sample(model, names):
    """``f(*x) -> {layer: value}`` for one sample (for shapes and memory estimates)."""

    def f(*x):
        return model.apply.intermediates(model.params, x[0] if len(x) == 1 else tuple(x), names)

    return f


_SHAPES_CACHE: dict = {}


def _layer_shapes(model, names: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Per-sample layer shapes, traced once per architecture and layer set (tracing the graph is ~95% of a
    one-sample :func:`activations` call otherwise: measured 10 ms of 12 ms by bench/inside.py)."""
    key = (jax.tree.structure(model), tuple(np.shape(leaf) for leaf in jax.tree.leaves(model)), names)
    if key not in _SHAPES_CACHE:
        out = jax.eval_shape(_per_sample(model, names), *_specs(model))
        if len(_SHAPES_CACHE) >= 64:
            _SHAPES_CACHE.clear()
        _SHAPES_CACHE[key] = {k: tuple(int(d) for d in out[k].shape) for k in names}
    return _SHAPES_CACHE[key]


def _as_batch(model, xs) -> tuple[list[np.ndarray], bool]:
    """``xs`` as a list of arrays ``[n, *input_shape]`` (one per input) and whether it was one sample."""
    names, shapes, _ = _engine.model_inputs(model)
    if len(shapes) > 1:
        if isinstance(xs, Mapping):
            missing = [n for n in names if n not in xs]
            if missing:
                raise DataError(
                    f"xs has no entry for input(s) {missing}; the model's inputs are {list(names)}"
                )
            items = [xs[n] for n in names]
        elif isinstance(xs, tuple | list) and len(xs) == len(names):
            items = list(xs)
        else:
            raise DataError(
                f"xs must hold one array per input of the model ({len(names)}: {list(names)}), as a tuple or a "
                f"dict by name; got {type(xs).__name__}"
            )
    else:
        items = [xs]
    arrays, single = [], None
    for name, shape, x in zip(names, shapes, items):
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise DataError(f"xs ({name!r}) is not an array of shape {list(shape)}: {e}") from None
        if a.dtype.kind not in "biuf":
            raise DataError(f"xs ({name!r}) has dtype {a.dtype}; the model takes numbers")
        if a.shape == tuple(shape):
            one = True
        elif a.ndim == len(shape) + 1 and a.shape[1:] == tuple(shape):
            one = False
        else:
            dims = ", ".join(map(str, shape))
            label = f"xs ({name!r})" if len(names) > 1 else "xs"
            raise DataError(
                f"{label} has shape {a.shape}; the model expects one sample [{dims}] or a batch "
                f"[n_samples, {dims}] (per-sample input shape {tuple(shape)})"
            )
        if single is not None and one != single:
            raise DataError(
                "xs mixes one sample and a batch across the model's inputs; give all or neither a batch axis"
            )
        single = one
        arrays.append(a[None] if one else a)
    if len({a.shape[0] for a in arrays}) > 1:
        raise DataError(f"xs: the inputs have different numbers of rows {[a.shape[0] for a in arrays]}")
    return arrays, bool(single)


def _pandas(what: str) -> Any:
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError(f"{what} needs pandas: pip install 'jaxsens[data]'") from e
    return pd
