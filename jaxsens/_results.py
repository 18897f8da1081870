"""Result dataclasses and the helpers they share: labels, rankings, tidy tables, JSON files, plots.

A method's result is a small frozen dataclass of numpy arrays and names, registered with
:func:`register_result` under a ``kind`` string so that :func:`load_result` can rebuild it from JSON. Methods
share behaviour through the functions here (``element_labels``, ``ranked``, ``frame``, ``save_result``,
``bar_plot``, ``heatmap_plot``), not through a base class: a new method writes its dataclass and a few
one-line methods that call these helpers.

JSON files are lossless: arrays keep their dtype and shape, floats are written with Python's shortest
round-trip ``repr`` (``NaN`` / ``Infinity`` as strings, so the file stays strict JSON), and files are written
atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from converters.errors import ArgumentError, DataError, DataFileNotFoundError, MissingExtraError
from jaxsens._io import atomic_write

__all__ = [
    "JacobianImportance",
    "bar_plot",
    "element_labels",
    "finish_figure",
    "frame",
    "heatmap_plot",
    "load_result",
    "output_index",
    "pyplot",
    "ranked",
    "register_result",
    "save_result",
]

_FORMAT = "jaxsens.result"
_VERSION = 1
_KINDS: dict[str, type] = {}


def register_result(kind: str):
    """Class decorator: register a result dataclass under ``kind`` for :func:`load_result`."""

    def deco(cls):
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise ValueError(f"result kind {kind!r} is already registered to {_KINDS[kind].__name__}")
        _KINDS[kind] = cls
        cls.kind = kind
        return cls

    return deco


# --------------------------------------------------------------------------------------------- JSON
def _encode(v: Any) -> Any:
    if isinstance(v, np.ndarray | np.generic) and not isinstance(v, np.bool_ | np.integer | np.floating):
        v = np.asarray(v)
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf":
            raise TypeError(f"cannot save an array of dtype {v.dtype}")
        flat = v.reshape(-1).tolist()
        if v.dtype.kind == "f":
            flat = [x if math.isfinite(x) else repr(x) for x in flat]
        return {"__ndarray__": {"dtype": v.dtype.str, "shape": list(v.shape), "data": flat}}
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        v = float(v)
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(v, dict):
        return {"__dict__": [[_encode(k), _encode(x)] for k, x in v.items()]}
    if isinstance(v, tuple | list):
        return [_encode(x) for x in v]
    if v is None or isinstance(v, bool | int | str):
        return v
    raise TypeError(f"cannot save a value of type {type(v).__name__}")


def _decode(v: Any) -> Any:
    if isinstance(v, dict):
        if "__ndarray__" in v:
            spec = v["__ndarray__"]
            dtype = np.dtype(spec["dtype"])
            data = [float(x) if isinstance(x, str) else x for x in spec["data"]]
            return np.asarray(data, dtype=dtype).reshape(spec["shape"])
        if "__float__" in v:
            return float(v["__float__"])
        if "__dict__" in v:
            return {_decode(k): _decode(x) for k, x in v["__dict__"]}
        raise DataError(f"unknown JSON object {sorted(v)} in a result file")
    if isinstance(v, list):
        return tuple(_decode(x) for x in v)
    return v


def save_result(result, path: str | os.PathLike) -> None:
    """Write a registered result dataclass to ``path`` as JSON, losslessly and atomically."""
    kind = getattr(type(result), "kind", None)
    if kind not in _KINDS:
        raise TypeError(f"{type(result).__name__} is not a registered result class")
    fields = {f.name: _encode(getattr(result, f.name)) for f in dataclasses.fields(result)}
    doc = {"format": _FORMAT, "version": _VERSION, "kind": kind, "fields": fields}
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    atomic_write(path, text)  # temporary file in the same folder + os.replace, mode 0o666 minus the umask


def load_result(path: str | os.PathLike):
    """Read a result written by ``result.save(path)``; returns an object of the same class, bit for bit.

    Example:
        >>> import tempfile, os, numpy as np
        >>> r = JacobianImportance(*(np.ones((1, 2)),) * 5, n_samples=3, feature_names=("a", "b"),
        ...                        output_names=("y",), input_shape=(2,))
        >>> p = os.path.join(tempfile.mkdtemp(), "r.json"); r.save(p)
        >>> load_result(p).mean_abs.tolist()
        [[1.0, 1.0]]
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise DataFileNotFoundError(f"result file {os.fspath(path)!r} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{os.fspath(path)!r} is a folder, not a result file") from None
    except PermissionError:
        raise DataError(f"result file {os.fspath(path)!r}: permission denied") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{os.fspath(path)!r} is not a jaxsens result file (not valid JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise DataError(f"{os.fspath(path)!r} is not a jaxsens result file")
    if not isinstance(doc.get("version", 0), int) or doc.get("version", 0) > _VERSION:
        raise DataError(
            f"{os.fspath(path)!r} was written by a newer jaxsens (format version {doc['version']})"
        )
    kind = doc.get("kind")
    if kind not in _KINDS:
        raise DataError(
            f"{os.fspath(path)!r} holds an unknown result kind {kind!r}; known: {sorted(_KINDS)}"
        )
    cls = _KINDS[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        fields = {k: _decode(v) for k, v in doc["fields"].items() if k in known}
        return cls(**fields)
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{os.fspath(path)!r} is a damaged {kind} result file: {type(e).__name__}: {e}") from None


# ------------------------------------------------------------------------------------------- tables
def element_labels(feature_names: Sequence[str], input_shape: Sequence[int]) -> tuple[str, ...]:
    """One label per input element, row-major: ``name`` for 1-D inputs, else ``name[t]`` / ``name[i,j]``."""
    input_shape = tuple(input_shape)
    if len(input_shape) <= 1:
        return tuple(feature_names)
    lead = itertools.product(*(range(d) for d in input_shape[:-1]))
    return tuple(f"{name}[{','.join(map(str, idx))}]" for idx in lead for name in feature_names)


def ranked(labels: Sequence[str], scores, stderr=None) -> tuple[tuple[str, float, float], ...]:
    """``(label, score, stderr)`` sorted by decreasing score (ties keep input order; NaN last)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    errs = np.full_like(scores, np.nan) if stderr is None else np.asarray(stderr, np.float64).reshape(-1)
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    return tuple((str(labels[i]), float(scores[i]), float(errs[i])) for i in order)


def frame(columns: dict[str, Any]):
    """A pandas DataFrame from equal-length columns (pandas is imported here: the ``data`` extra)."""
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("to_frame() needs pandas: pip install 'jaxsens[data]'") from e
    return pd.DataFrame(columns)


def output_index(output, output_names: Sequence[str]) -> int:
    """Index of ``output`` (an index, negative allowed, or a name) among ``output_names``."""
    if isinstance(output, str):
        if output not in output_names:
            raise ArgumentError(f"unknown output {output!r}; outputs: {list(output_names)}")
        return list(output_names).index(output)
    i = int(output)
    if not -len(output_names) <= i < len(output_names):
        raise ArgumentError(f"output index {i} is out of range for {len(output_names)} outputs")
    return i % len(output_names)


# -------------------------------------------------------------------------------------------- plots
def pyplot():
    """``matplotlib.pyplot`` (the ``plot`` extra), on the Agg backend when there is no display."""
    try:
        import matplotlib

        if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover
        raise MissingExtraError("plot() needs matplotlib: pip install 'jaxsens[plot]'") from e
    return plt


def bar_plot(ax, rows: Sequence[tuple[str, float, float]], *, top: int = 20, xlabel: str = "importance"):
    """Horizontal bars for ``ranked(...)`` rows (largest on top) with ``stderr`` error bars."""
    rows = list(rows)[:top]
    labels = [r[0] for r in rows][::-1]
    vals = np.array([r[1] for r in rows])[::-1]
    errs = np.array([r[2] for r in rows])[::-1]
    ax.barh(
        np.arange(len(rows)),
        vals,
        xerr=None if np.isnan(errs).all() else np.nan_to_num(errs),
        color="#4C72B0",
        ecolor="#333333",
        capsize=2,
    )
    ax.set_yticks(np.arange(len(rows)), labels)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return ax


def heatmap_plot(ax, matrix, *, feature_names: Sequence[str], label: str = "importance"):
    """A ``[T, F]`` heatmap: time steps down, features across."""
    matrix = np.asarray(matrix)
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(np.arange(len(feature_names)), feature_names, rotation=90 if len(feature_names) > 8 else 0)
    ax.set_ylabel("time step")
    ax.set_xlabel("feature")
    ax.figure.colorbar(im, ax=ax, label=label)
    return ax


def ranking_figure(rows: Sequence[tuple[str, float, float]], *, top: int, xlabel: str, path=None):
    """Ranked horizontal bars of ``ranking()`` rows (error bars from their third field); saved to ``path`` if given."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.3 * min(top, len(rows))))
    bar_plot(ax, rows, top=top, xlabel=xlabel)
    return finish_figure(fig, path)


def finish_figure(fig, path):
    """Tight layout, save to ``path`` when given, return the figure."""
    fig.tight_layout()
    if path is not None:
        import io

        buf = io.BytesIO()
        fmt = os.path.splitext(os.fspath(path))[1][1:].lower() or None  # as savefig(path) infers it
        fig.savefig(buf, format=fmt, dpi=120)
        atomic_write(path, buf.getvalue())
    return fig


_output_index, _pyplot, _finish_figure = output_index, pyplot, finish_figure  # older names, kept for callers


# ----------------------------------------------------------------------------------------- Jacobian
@register_result("jacobian_importance")
@dataclasses.dataclass(frozen=True, eq=False)
class JacobianImportance:
    r"""Statistics of the per-sample Jacobian :math:`J_{ij}(x) = \partial f_i / \partial x_j` over a data set.

    All arrays are numpy float64 of shape ``[n_outputs, *input_shape]``; statistics are over the ``n_samples``
    rows (ddof = 1 for ``std`` and ``stderr``). With ``scale="std"`` every statistic is of ``J_ij * s_j``,
    where ``s_j`` is the standard deviation of feature ``j`` over the same rows (``input_std``).

    Attributes:
        mean_abs: :math:`\overline{|J|}`, the importance (NeuralSens' ``mean |sens|``; the "mean absolute
            sensitivity").
        mean: :math:`\overline{J}`, the direction of the effect.
        std: standard deviation of :math:`J` over samples (NeuralSens' ``std``).
        rms: :math:`\sqrt{\overline{J^2}}` (NeuralSens' ``meanSensSQ``).
        stderr: standard error of ``mean_abs``, ``std(|J|) / sqrt(n_samples)``.
        n_samples: rows used.
        feature_names: names of the last input axis (``n_features``).
        output_names: names of the explained outputs (``n_outputs``).
        input_shape: per-sample input shape.
        mode: ``"reverse"`` or ``"forward"``, how the Jacobian was computed.
        scale: ``None`` or ``"std"``.
        n_skipped: rows dropped for NaN / Inf (``nan_policy="skip"``).
        input_mean: ``[n_features]`` mean of each feature (pooled over time steps for sequence inputs).
        input_std: ``[n_features]`` its standard deviation (ddof = 1).
        correlated_pairs: ``(name_a, name_b, r)`` for feature pairs with ``|r| > 0.9``, strongest first;
            ``None`` if not checked (more than 1024 features).
        time_aggregate: for inputs with more than one axis, statistics of the per-sample sums over every axis
            but the last (``sum_t |J_tf|`` for ``mean_abs`` / ``stderr``; ``sum_t J_tf`` for ``mean`` /
            ``std`` / ``rms``), each ``[n_outputs, n_features]``; see :meth:`by_feature`.
    """

    mean_abs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    rms: np.ndarray
    stderr: np.ndarray
    n_samples: int
    feature_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    mode: str = "reverse"
    scale: str | None = None
    n_skipped: int = 0
    input_mean: np.ndarray | None = None
    input_std: np.ndarray | None = None
    correlated_pairs: tuple[tuple[str, str, float], ...] | None = ()
    time_aggregate: dict[str, np.ndarray] | None = None

    @property
    def importance(self) -> np.ndarray:
        """``mean_abs``: ``[n_outputs, *input_shape]``."""
        return self.mean_abs

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def by_feature(self) -> JacobianImportance:
        """Aggregate a sequence input ``[T, F]`` (or any ``[..., F]``) over time into ``[n_outputs, F]``.

        ``mean_abs`` is the mean over samples of ``sum_t |J_tf|`` (the total absolute effect of feature ``f``
        through all its time steps; equal to ``mean_abs.sum(axis=1)``), ``stderr`` its standard error;
        ``mean``, ``std`` and ``rms`` describe ``sum_t J_tf`` (the effect of shifting feature ``f`` at every
        time step). These were accumulated in the same pass, so ``std`` and ``stderr`` are exact. 1-D inputs
        return ``self``.
        """
        if len(self.input_shape) <= 1:
            return self
        agg = self.time_aggregate
        if agg is None:
            raise ArgumentError("this result has no time aggregate (it was built without one)")
        return dataclasses.replace(
            self,
            mean_abs=agg["mean_abs"],
            mean=agg["mean"],
            std=agg["std"],
            rms=agg["rms"],
            stderr=agg["stderr"],
            input_shape=(self.input_shape[-1],),
            time_aggregate=None,
        )

    def ranking(self, output: int | str | None = None) -> tuple[tuple[str, float, float], ...]:
        """Input elements by decreasing importance: ``((label, mean_abs, stderr), ...)``.

        Args:
            output: index or name of one output; default the mean over outputs (its stderr is then the mean of
                the per-output stderrs, an upper bound).

        Example:
            >>> import numpy as np
            >>> r = JacobianImportance(np.array([[1.0, 3.0]]), *(np.zeros((1, 2)),) * 4, n_samples=9,
            ...                        feature_names=("a", "b"), output_names=("y",), input_shape=(2,))
            >>> [name for name, _, _ in r.ranking()]
            ['b', 'a']
        """
        scores, errs = self._select(output)
        return ranked(element_labels(self.feature_names, self.input_shape), scores, errs)

    def _select(self, output):
        if output is None:
            return self.mean_abs.mean(axis=0), self.stderr.mean(axis=0)
        i = output_index(output, self.output_names)
        return self.mean_abs[i], self.stderr[i]

    def to_frame(self):
        """Tidy pandas DataFrame: one row per (output, input element).

        Columns: ``output``, ``feature``, ``position`` (the index along the leading input axes, e.g. the time
        step; only for inputs with more than one axis), ``mean_abs``, ``mean``, ``std``, ``rms``, ``stderr``,
        ``rank`` (1 = most important within the output).
        """
        k = self.n_outputs
        n_el = math.prod(self.input_shape)
        cols: dict[str, Any] = {
            "output": np.repeat(np.asarray(self.output_names, dtype=object), n_el),
            "feature": np.tile(
                np.asarray(self.feature_names, dtype=object), k * n_el // max(self.n_features, 1)
            ),
        }
        if len(self.input_shape) > 1:
            lead = [idx[0] if len(idx) == 1 else idx for idx in np.ndindex(*self.input_shape[:-1])]
            pos = np.empty(len(lead), dtype=object)
            pos[:] = lead
            cols["position"] = np.tile(np.repeat(pos, self.n_features), k)
        for name in ("mean_abs", "mean", "std", "rms", "stderr"):
            cols[name] = getattr(self, name).reshape(k * n_el)
        order = np.argsort(-self.mean_abs.reshape(k, n_el), axis=1, kind="stable")
        rank = np.empty((k, n_el), np.int64)
        np.put_along_axis(rank, order, np.arange(1, n_el + 1)[None, :].repeat(k, 0), axis=1)
        cols["rank"] = rank.reshape(-1)
        return frame(cols)

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON (lossless; atomic). Read it back with :func:`jaxsens.load_result`."""
        save_result(self, path)

    def plot(self, *, output: int | str | None = None, top: int = 20, path: str | os.PathLike | None = None):
        """Ranked bars of ``mean_abs`` with ``stderr`` error bars; a time x feature heatmap for sequences.

        Args:
            output: index or name of one output; default the mean over outputs.
            top: bars to show.
            path: save the figure there too (format from the extension).

        Returns:
            The matplotlib ``Figure``.
        """
        plt = pyplot()
        what = (
            "mean |J|"
            if output is None and self.n_outputs == 1
            else (
                f"mean |J| (mean over {self.n_outputs} outputs)"
                if output is None
                else f"mean |J| for {output}"
            )
        )
        if self.scale == "std":
            what += " x std(x)"
        if len(self.input_shape) <= 1:
            fig, ax = plt.subplots(figsize=(7, 1.0 + 0.3 * min(top, math.prod(self.input_shape))))
            bar_plot(ax, self.ranking(output), top=top, xlabel=what)
            return finish_figure(fig, path)
        scores, _ = self._select(output)
        grid = scores.reshape(-1, self.n_features)
        fig, (ax0, ax1) = plt.subplots(
            1,
            2,
            figsize=(12, 1.5 + 0.25 * max(grid.shape[0], min(top, self.n_features))),
            width_ratios=[3, 2],
        )
        heatmap_plot(ax0, grid, feature_names=self.feature_names, label=what)
        bar_plot(ax1, self.by_feature().ranking(output), top=top, xlabel=f"sum over time of {what}")
        return finish_figure(fig, path)
