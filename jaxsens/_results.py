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
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from converters.errors import ArgumentError, DataError, DataFileNotFoundError, MissingExtraError
from jaxsens._io import atomic_write

__all__ = [
    "Result",
    "Results",
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
    "result_class",
    "save_result",
]

_FORMAT = "jaxsens.result"
_VERSION = 2  # 2: one Result base (0.2); files of format 1 (0.1) are refused with a reason
_KINDS: dict[str, type] = {}


def register_result(kind: str):
    """Class decorator: register a result dataclass under ``kind`` for :func:`load_result`."""

    def deco(cls):
        if kind in _KINDS and _KINDS[kind] is not cls:
            raise ArgumentError(f"result kind {kind!r} is already registered to {_KINDS[kind].__name__}")
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
    _write(path, kind, _fields(result))


def _fields(result) -> dict:
    return {f.name: _encode(getattr(result, f.name)) for f in dataclasses.fields(result)}


def _write(path, kind: str, fields: dict) -> None:
    doc = {"format": _FORMAT, "version": _VERSION, "kind": kind, "fields": fields}
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    atomic_write(path, text)  # temporary file in the same folder + os.replace, mode 0o666 minus the umask


def read_json_file(path: str | os.PathLike, what: str):
    """The JSON document at ``path``; every way of failing is a jaxsens error naming ``what`` ("result file")."""
    where = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataFileNotFoundError(f"{what} {where!r} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{where!r} is a folder, not a {what}") from None
    except PermissionError:
        raise DataError(f"{what} {where!r}: permission denied") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{where!r} is not a jaxsens {what} (not valid JSON: {e})") from None


def load_result(path: str | os.PathLike):
    """Read a result written by ``result.save(path)``; returns an object of the same class, bit for bit.

    Example:
        >>> import tempfile, os, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: p * x, np.float32(2.0), input_shape=(2,))
        >>> r = jaxsens.jacobian_importance(m, np.ones((3, 2), np.float32))
        >>> p = os.path.join(tempfile.mkdtemp(), "r.json"); r.save(p)
        >>> load_result(p).importance.tolist()
        [[2.0, 0.0], [0.0, 2.0]]
    """
    doc = read_json_file(path, "result file")
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise DataError(f"{os.fspath(path)!r} is not a jaxsens result file")
    if not isinstance(doc.get("version", 0), int) or doc.get("version", 0) > _VERSION:
        raise DataError(
            f"{os.fspath(path)!r} was written by a newer jaxsens (format version {doc['version']})"
        )
    kind = doc.get("kind")
    if doc.get("version") == 1:
        raise DataError(
            f"{os.fspath(path)!r} was written by jaxsens 0.1 (result format 1, kind {kind!r}); the result fields "
            "changed shape in 0.2 (see CHANGELOG.md): recompute the result with this version"
        )
    if kind == "Results" and isinstance(doc.get("fields"), dict):
        return Results({name: _build(part.get("__kind__"), part, path) for name, part in doc["fields"].items()})
    if kind not in _KINDS:
        raise DataError(
            f"{os.fspath(path)!r} holds an unknown result kind {kind!r}; known: {sorted(_KINDS)}"
        )
    return _build(kind, doc.get("fields"), path)


def _build(kind, fields, path):
    if kind not in _KINDS:
        raise DataError(f"{os.fspath(path)!r} holds an unknown result kind {kind!r}; known: {sorted(_KINDS)}")
    if not isinstance(fields, dict):
        raise DataError(f"{os.fspath(path)!r} is a damaged {kind} result file: its fields are missing")
    cls = _KINDS[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        decoded = {k: _decode(v) for k, v in fields.items() if k in known}
        if "options" in decoded and isinstance(decoded["options"], tuple):
            decoded["options"] = {}
        return cls(**decoded)
    except (DataError, ArgumentError) as e:
        raise DataError(f"{os.fspath(path)!r} is a damaged {kind} result file: {e}") from None
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
    """Horizontal bars for ``ranked(...)`` rows (largest on top) with 95% interval error bars (1.96 x stderr).

    The error bars are labelled in a legend; labels longer than 32 characters are shortened in the middle.
    """
    rows = list(rows)[:top]
    labels = [_short(r[0]) for r in rows][::-1]
    vals = np.array([r[1] for r in rows], np.float64)[::-1]
    errs = np.array([r[2] for r in rows], np.float64)[::-1]
    has_err = bool(np.isfinite(errs).any() and np.nan_to_num(errs).any())
    ax.barh(np.arange(len(rows)), vals, color="#4C72B0")
    if has_err:
        ax.errorbar(vals, np.arange(len(rows)), xerr=Z95 * np.nan_to_num(errs), fmt="none", ecolor="#333333",
                    capsize=2, label="95% interval (1.96 x stderr)")
        ax.legend(loc="lower right", fontsize="small")
    ax.set_yticks(np.arange(len(rows)), labels, fontsize="small" if len(rows) > 30 else None)
    ax.set_ylim(-0.6, len(rows) - 0.4)  # no empty band above the first bar or below the last
    ax.set_xlabel(xlabel)
    ax.set_ylabel("feature")
    ax.grid(axis="x", alpha=0.3)
    return ax


def _short(label: str, n: int = 32) -> str:
    return label if len(label) <= n else label[: n // 2 - 1] + "..." + label[-(n // 2 - 2):]


def heatmap_plot(ax, matrix, *, feature_names: Sequence[str], label: str = "importance", ylabel: str = "time step"):
    """A ``[T, F]`` heatmap: leading positions (time steps) down, features across."""
    matrix = np.asarray(matrix)
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(np.arange(len(feature_names)), [_short(n, 20) for n in feature_names],
                  rotation=90 if len(feature_names) > 8 else 0)
    ax.set_ylabel(ylabel)
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


# -------------------------------------------------------------------------------------------- the base
result_class = dataclasses.dataclass(frozen=True, eq=False, kw_only=True, repr=False)
"""The decorator of every result class: frozen, keyword-only, the base's ``__repr__`` kept."""

Z95 = 1.959963984540054  # two-sided 95% normal quantile: intervals are importance +- Z95 * stderr


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Result:
    """What every method returns: one headline array, its standard error, and names; behaviour written once.

    Subclasses (one per method) are frozen keyword-only dataclasses that add method-specific fields and set the
    class attributes ``importance_label`` (the axis label: what ``importance`` measures) and ``stderr_rule``
    (how ``stderr`` was obtained). Subclasses are registered for :func:`load_result` by their class name.

    Attributes:
        importance: the headline, float64. ``[n_outputs, *input_shape]`` when the method explains each output
            separately (``output_names`` non-empty), or ``[*input_shape]`` when it aggregates the outputs
            (``output_names == ()``; e.g. an error measure over all outputs).
        stderr: standard error of ``importance``, same shape (streamed variance, or a bootstrap over rows or
            repeats where no closed form exists; 0 for the deterministic weight methods, whose value is exact).
        n_samples: rows the statistics are over (0 for methods that read only the weights).
        feature_names: ``[n_features]`` names of the last input axis.
        output_names: ``[n_outputs]`` names of the explained outputs, or ``()`` (see ``importance``).
        input_shape: the per-sample input shape, ``[..., n_features]``.
        method: the method's name in :func:`jaxsens.methods`.
        options: the options the method ran with (JSON-friendly values), for the record.
        n_skipped: rows dropped for NaN / Inf (``nan_policy="skip"``).

    Sequence inputs (``input_shape`` ``[T, F]`` or longer): :meth:`ranking` and :meth:`plot` rank features by
    default, scoring feature ``f`` by the **sum over its time steps** of ``importance`` (the total effect through
    all steps) with stderr the sum of the per-step stderrs (an upper bound: exact when the per-step errors are
    perfectly correlated, conservative otherwise; methods with an exact time aggregate override
    :meth:`feature_importance`). ``ranking(by="element")`` ranks every ``(step, feature)`` element.
    """

    importance: np.ndarray
    stderr: np.ndarray
    n_samples: int
    feature_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    method: str
    options: dict = dataclasses.field(default_factory=dict)
    n_skipped: int = 0

    importance_label: ClassVar[str] = "importance"
    stderr_rule: ClassVar[str] = "standard error"
    kind: ClassVar[str] = ""
    _aliases: ClassVar[dict[str, str]] = {}  # deprecated field name -> current name (CHANGELOG.md)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_result(cls.__name__)(cls)

    def __post_init__(self):
        set_ = object.__setattr__
        imp = np.asarray(self.importance, np.float64)
        err = np.asarray(self.stderr, np.float64)
        shape = tuple(int(d) for d in self.input_shape)
        set_(self, "importance", imp)
        set_(self, "stderr", err)
        set_(self, "input_shape", shape)
        set_(self, "feature_names", tuple(str(n) for n in self.feature_names))
        set_(self, "output_names", tuple(str(n) for n in self.output_names))
        set_(self, "n_samples", int(self.n_samples))
        set_(self, "options", dict(self.options or {}))
        expected = ((len(self.output_names),) if self.output_names else ()) + shape
        if imp.shape != expected or err.shape != expected:
            raise ArgumentError(
                f"{type(self).__name__}: importance {imp.shape} and stderr {err.shape} must both have shape "
                f"{expected} ([n_outputs, *input_shape] with {len(self.output_names)} output names, input_shape "
                f"{shape})"
            )
        if shape and len(self.feature_names) != shape[-1]:
            raise ArgumentError(
                f"{type(self).__name__}: {len(self.feature_names)} feature names for input_shape {shape}"
            )

    def __getattr__(self, name: str):
        aliases = type(self)._aliases
        if name in aliases:
            import warnings

            warnings.warn(
                f"{type(self).__name__}.{name} is deprecated; use .{aliases[name]} (see CHANGELOG.md)",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(self, aliases[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---------------------------------------------------------------------------------------- shapes
    @property
    def n_outputs(self) -> int:
        """Explained outputs (0 when the method aggregates them)."""
        return len(self.output_names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def ci_low(self) -> np.ndarray:
        """Lower end of the 95% normal interval, ``importance - 1.96 * stderr``."""
        return self.importance - Z95 * self.stderr

    @property
    def ci_high(self) -> np.ndarray:
        """Upper end of the 95% normal interval, ``importance + 1.96 * stderr``."""
        return self.importance + Z95 * self.stderr

    def feature_importance(self) -> tuple[np.ndarray, np.ndarray]:
        """``(importance, stderr)`` per feature, ``[n_outputs, n_features]`` (or ``[n_features]``).

        The leading input axes (time steps) are summed; stderr is the sum of the per-element stderrs (an upper
        bound). 1-D inputs return the arrays unchanged.
        """
        lead = len(self.input_shape) - 1
        if lead <= 0:
            return self.importance, self.stderr
        axes = tuple(range(self.importance.ndim - 1 - lead, self.importance.ndim - 1))
        return self.importance.sum(axis=axes), self.stderr.sum(axis=axes)

    def _pick(self, imp, err, output):
        if not self.output_names:
            if output is not None:
                raise ArgumentError(
                    f"{self.method}: this result aggregates the outputs (importance {self.importance.shape}); "
                    "output= does not apply"
                )
            return imp, err
        if output is None:  # mean over outputs; stderr: mean of stderrs (an upper bound)
            return imp.mean(axis=0), err.mean(axis=0)
        i = output_index(output, self.output_names)
        return imp[i], err[i]

    # ----------------------------------------------------------------------------------------- views
    def ranking(self, output: int | str | None = None, *, by: str = "feature") -> tuple[tuple[str, float, float], ...]:
        """Inputs by decreasing importance: ``((label, importance, stderr), ...)``; NaN last, ties keep order.

        Args:
            output: index or name of one output; default the mean over outputs (stderr: the mean of the
                per-output stderrs, an upper bound). Not allowed when the method aggregates outputs.
            by: ``"feature"`` (default; sequence inputs are summed over their time steps, see the class
                docstring) or ``"element"`` (every input element, labelled ``name[t]``).
        """
        if by == "feature":
            imp, err = self.feature_importance()
            labels = self.feature_names
        elif by == "element":
            imp, err = self.importance, self.stderr
            labels = element_labels(self.feature_names, self.input_shape)
        else:
            raise ArgumentError(f"by must be 'feature' or 'element', got {by!r}")
        imp, err = self._pick(imp, err, output)
        return ranked(labels, imp, err)

    def to_frame(self):
        """Tidy long pandas DataFrame, one row per (output, input element).

        Columns: ``feature``, ``output`` (when per output), ``step`` (for inputs with more than one axis: the
        index along the leading axes, an int for ``[T, F]``), ``importance``, ``stderr``, ``ci_low``,
        ``ci_high`` (95% normal interval), ``rank`` (1 = most important within its output), then any
        method-specific per-element columns (:meth:`_extra_columns`).
        """
        n_el = math.prod(self.input_shape)
        k = max(self.n_outputs, 1)
        cols: dict[str, Any] = {
            "feature": np.tile(np.asarray(self.feature_names, dtype=object), k * n_el // max(self.n_features, 1))
        }
        if self.output_names:
            cols["output"] = np.repeat(np.asarray(self.output_names, dtype=object), n_el)
        if len(self.input_shape) > 1:
            lead = [idx[0] if len(idx) == 1 else idx for idx in np.ndindex(*self.input_shape[:-1])]
            step = np.empty(len(lead), dtype=object)
            step[:] = lead
            cols["step"] = np.tile(np.repeat(step, self.n_features), k)
        imp = self.importance.reshape(k, n_el)
        cols["importance"] = imp.reshape(-1)
        cols["stderr"] = self.stderr.reshape(-1)
        cols["ci_low"] = self.ci_low.reshape(-1)
        cols["ci_high"] = self.ci_high.reshape(-1)
        order = np.argsort(-np.nan_to_num(imp, nan=-np.inf), axis=1, kind="stable")
        rank = np.empty((k, n_el), np.int64)
        np.put_along_axis(rank, order, np.arange(1, n_el + 1)[None, :].repeat(k, 0), axis=1)
        cols["rank"] = rank.reshape(-1)
        for name, values in self._extra_columns().items():
            cols[name] = np.asarray(values).reshape(-1)
        return frame(cols)

    def _extra_columns(self) -> dict[str, np.ndarray]:
        """Method-specific arrays shaped like ``importance``, added to :meth:`to_frame`."""
        return {}

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON (lossless, atomic); read it back with :func:`jaxsens.load_result`."""
        save_result(self, path)

    def summary(self) -> str:
        """One line: method, samples, shapes."""
        outs = f"{self.n_outputs} outputs" if self.output_names else "outputs aggregated"
        return (
            f"{self.method}: {self.n_samples} samples, input {list(self.input_shape)} ({self.n_features} "
            f"features), {outs}"
        )

    def __repr__(self) -> str:
        top = ", ".join(f"{n}={v:.4g}" for n, v, _ in self.ranking()[:5])
        return f"<{type(self).__name__} {self.summary()}; top: {top}>"

    def _repr_html_(self) -> str:
        import html

        rows = self.ranking()
        head = (
            f"<p><b>{html.escape(type(self).__name__)}</b> &mdash; {html.escape(self.summary())}<br>"
            f"importance: {html.escape(self.importance_label)}; &plusmn; is the 95% interval "
            f"(1.96 &times; {html.escape(self.stderr_rule)})</p>"
        )
        body = "".join(
            f"<tr><td>{i}</td><td>{html.escape(n)}</td><td>{v:.4g}</td><td>&plusmn; {Z95 * e:.2g}</td></tr>"
            for i, (n, v, e) in enumerate(rows[:10], 1)
        )
        more = f"<p>top 10 of {len(rows)}</p>" if len(rows) > 10 else ""
        return (
            f"{head}<table><thead><tr><th>rank</th><th>feature</th><th>importance</th><th>95%</th></tr></thead>"
            f"<tbody>{body}</tbody></table>{more}"
        )

    # ----------------------------------------------------------------------------------------- plots
    def plot(self, *, top: int = 20, output: int | str | None = None, path: str | os.PathLike | None = None):
        """Ranked horizontal bars of the ``top`` features with 95% intervals; a heatmap too for sequences.

        The title names the method, the output and "top k of n"; the x axis says what ``importance`` measures;
        the error bars are labelled as 95% intervals (``1.96 x stderr``). For inputs with more than one axis a
        second panel shows ``importance`` over (leading position, feature) for the ``top`` features.

        Args:
            top: bars to show (the title states how many of how many).
            output: one output (index or name); default the mean over outputs.
            path: also save the figure there (format from the extension; written atomically).

        Returns:
            The matplotlib ``Figure``.
        """
        plt = pyplot()
        rows = self.ranking(output)
        k = min(int(top), len(rows))
        which = ""
        if self.output_names:
            which = (
                f" for output {self.output_names[output_index(output, self.output_names)]}"
                if output is not None
                else (f" for output {self.output_names[0]}" if self.n_outputs == 1 else f" (mean over {self.n_outputs} outputs)")
            )
        title = f"{self.method}{which}: top {k} of {len(rows)} features"
        if len(self.input_shape) <= 1:
            fig, ax = plt.subplots(figsize=(8, 1.4 + 0.28 * k))
            bar_plot(ax, rows, top=k, xlabel=self.importance_label)
        else:
            imp, _ = self._pick(self.importance, self.stderr, output)
            grid = imp.reshape(-1, self.n_features)
            keep = [self.feature_names.index(n) for n, _, _ in rows[:k]]
            fig, (ax0, ax1) = plt.subplots(
                1, 2, figsize=(13, 1.6 + 0.28 * max(k, min(grid.shape[0], 40))), width_ratios=[3, 2]
            )
            # the leading axes are positions (time steps of a sequence, rows of an image): named by axis, not
            # guessed
            lead = "input axis 0" if len(self.input_shape) == 2 else f"input axes 0..{len(self.input_shape) - 2}"
            heatmap_plot(ax0, grid[:, keep], feature_names=[self.feature_names[j] for j in keep],
                         label=self.importance_label, ylabel=f"position along {lead} (e.g. time step)")
            bar_plot(ax1, rows, top=k, xlabel=f"sum over {lead} of {self.importance_label}")
        fig.suptitle(title)
        return finish_figure(fig, path)


class Results(Mapping):
    """Per-input results of a model with several inputs: ``{input_name: Result}`` in the model's input order.

    A read-only mapping with the shared views over all inputs: :meth:`ranking` merges the inputs' rankings
    (labels ``input:feature``), :meth:`to_frame` stacks their frames with an ``input`` column, :meth:`save`
    writes one JSON file that :func:`load_result` reads back, :meth:`plot` draws the merged ranking.
    """

    def __init__(self, parts: Mapping[str, Result]):
        self._parts = dict(parts)

    def __getitem__(self, name: str) -> Result:
        return self._parts[name]

    def __iter__(self):
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def __repr__(self) -> str:
        return f"Results({', '.join(f'{k}: {type(v).__name__}' for k, v in self._parts.items())})"

    def ranking(self, output: int | str | None = None, *, by: str = "feature"):
        rows = [(f"{name}:{label}", v, e) for name, r in self.items() for label, v, e in r.ranking(output, by=by)]
        labels, vals, errs = zip(*rows) if rows else ((), (), ())
        return ranked(labels, vals, errs)

    def to_frame(self):
        import pandas as pd

        frames = []
        for name, r in self.items():
            f = r.to_frame()
            f.insert(0, "input", name)
            frames.append(f)
        return pd.concat(frames, ignore_index=True)

    def save(self, path: str | os.PathLike) -> None:
        parts = {name: _fields(r) | {"__kind__": r.kind} for name, r in self.items()}
        _write(path, "Results", parts)

    def plot(self, *, top: int = 20, output=None, path=None):
        plt = pyplot()
        rows = self.ranking(output)
        k = min(int(top), len(rows))
        fig, ax = plt.subplots(figsize=(8, 1.4 + 0.28 * k))
        first = next(iter(self.values()))
        bar_plot(ax, rows, top=k, xlabel=first.importance_label)
        fig.suptitle(f"{first.method}: top {k} of {len(rows)} features over {len(self)} inputs")
        return finish_figure(fig, path)
