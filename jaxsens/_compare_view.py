"""Views of a :class:`jaxsens.Comparison`: the comparison plot, the three output files and the printed summary.

Everything here reads a comparison's fields (see ``jaxsens._compare``); nothing is computed that the comparison
does not already hold, except the per-feature view of ``changed`` (an entry of any output / leading input axis
changed -> the feature is marked).

The plot has one row per feature and one marker per version in that row (reference first), each with its 95%
interval (``importance +- c x stderr``: ``c`` = 1.959964, or Student's t quantile with the pooled replicate
degrees of freedom when the noise is the replicates, :func:`jaxsens._compare.critical95`). Features whose
importance changed significantly in some version (``comp.changed``, Holm-corrected) get a bold red label ending
in ``*`` and a filled marker for that version; near-zero features (``comp.near_zero``) get a grey italic label. With many features (seed 000 has 82) the rows
are split over side-by-side panels of at most :data:`ROWS_PER_PANEL`, each row about 0.3 inch tall, so every name
stays readable at the saved 120 dpi.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, TextIO

import numpy as np

from jaxsens._compare import critical95
from jaxsens._results import finish_figure, pyplot

__all__ = ["OUTPUT_FILES", "ROWS_PER_PANEL", "changed_features", "plot_comparison", "print_summary", "write_outputs"]

OUTPUT_FILES = ("compare.json", "compare.csv", "compare.png")
ROWS_PER_PANEL = 45  # feature rows per panel; more features -> more panels side by side
_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "h")


def changed_features(comp) -> np.ndarray:
    """``[V - 1, n_features]`` bool: version ``v`` (1..V-1) changed feature ``f`` in some entry of ``comp.changed``
    (any output, any leading input position)."""
    n_features = len(comp.feature_names)
    changed = np.asarray(comp.changed, dtype=bool)
    n_versions = len(comp.versions)
    if changed.ndim >= 2 and changed.shape[-1] == n_features:
        return changed.reshape(changed.shape[0], -1, n_features).any(axis=1)
    # a headline whose last axis is not the features: fall back to the change rows, matched by feature name
    out = np.zeros((max(n_versions - 1, 0), n_features), dtype=bool)
    index = {name: i for i, name in enumerate(comp.feature_names)}
    versions = {name: i for i, name in enumerate(comp.versions)}
    for row in comp.changes():
        if row.get("changed") and row.get("feature") in index and versions.get(row.get("version"), 0) > 0:
            out[versions[row["version"]] - 1, index[row["feature"]]] = True
    return out


def _order(comp, top: int | None) -> np.ndarray:
    """Feature indices, most important (largest over versions) first; the first ``top`` when given."""
    imp = np.asarray(comp.feature_importance, dtype=np.float64)
    key = np.nan_to_num(imp, nan=-np.inf).max(axis=0)
    order = np.argsort(-key, kind="stable")
    return order if top is None else order[: max(int(top), 1)]


def plot_comparison(comp, *, path: str | os.PathLike | None = None, top: int | None = None):
    """Per feature and version: importance with its 95% interval, changed features marked.

    Args:
        comp: a :class:`jaxsens.Comparison`.
        path: write the figure there (PNG, atomically) when given.
        top: show only the ``top`` features by their largest importance over the versions (default all).

    Returns:
        The matplotlib ``Figure`` (close it with ``matplotlib.pyplot.close(fig)`` when done).

    Raises:
        ArgumentError: ``top`` is not a positive integer.
        MissingExtraError: matplotlib is not installed (the ``plot`` extra).
    """
    from converters.errors import ArgumentError

    if top is not None and (isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1):
        raise ArgumentError(f"top={top!r} must be a positive integer (or None for every feature)")
    plt = pyplot()
    imp = np.asarray(comp.feature_importance, dtype=np.float64)
    err = np.asarray(comp.feature_stderr, dtype=np.float64)
    changed = changed_features(comp)
    order = _order(comp, top)
    names = list(comp.feature_names)
    versions = list(comp.versions)
    n_versions, n_rows = len(versions), len(order)
    near_zero = set(comp.near_zero)

    n_panels = max(1, math.ceil(n_rows / ROWS_PER_PANEL))
    per_panel = math.ceil(n_rows / n_panels)
    height = 1.6 + 0.3 * per_panel * max(1.0, 0.5 + 0.25 * n_versions)
    fig, axes = plt.subplots(1, n_panels, figsize=(6.5 * n_panels, height), squeeze=False)
    finite = np.isfinite(imp[:, order]) & np.isfinite(err[:, order])
    # Student t with replicates (moderated: d0 + d degrees of freedom): the intervals the tests use
    crit = critical95(comp.noise, comp.n_replicates, getattr(comp, "prior", None))
    hi = np.where(finite, imp[:, order] + crit * np.nan_to_num(err[:, order]), np.nan)
    lo = np.where(finite, imp[:, order] - crit * np.nan_to_num(err[:, order]), np.nan)
    xmax = np.nanmax(hi) if np.isfinite(hi).any() else 1.0
    xmin = min(0.0, np.nanmin(lo) if np.isfinite(lo).any() else 0.0)
    pad = 0.04 * ((xmax - xmin) or 1.0)
    offsets = (np.arange(n_versions) - (n_versions - 1) / 2) * (0.7 / max(n_versions, 1))
    for p, ax in enumerate(axes[0]):
        rows = order[p * per_panel:(p + 1) * per_panel]
        y = np.arange(len(rows))
        for v in range(n_versions):
            color, marker = _COLORS[v % len(_COLORS)], _MARKERS[v % len(_MARKERS)]
            vals, errs = imp[v, rows], err[v, rows]
            xerr = crit * np.where(np.isfinite(errs), errs, 0.0)
            ax.errorbar(vals, y + offsets[v], xerr=xerr, fmt="none", ecolor=color, elinewidth=1.0, capsize=1.5,
                        alpha=0.8)
            filled = changed[v - 1, rows] if v > 0 else np.zeros(len(rows), bool)
            ax.scatter(vals[~filled], (y + offsets[v])[~filled], marker=marker, s=18, facecolors="white",
                       edgecolors=color, linewidths=1.1, zorder=3,
                       label=(versions[v] + (" (reference)" if v == 0 else "")) if p == n_panels - 1 else None)
            if filled.any():
                ax.scatter(vals[filled], (y + offsets[v])[filled], marker=marker, s=26, color="#D62728",
                           edgecolors=color, linewidths=1.1, zorder=4)
        ax.set_yticks(y)
        labels = ax.set_yticklabels([_label(names[i], changed[:, i].any()) for i in rows],
                                    fontsize=8 if len(rows) > 30 else 9)
        for text, i in zip(labels, rows):
            if changed[:, i].any():
                text.set_color("#D62728")
                text.set_fontweight("bold")
            elif names[i] in near_zero:
                text.set_color("#777777")
                text.set_fontstyle("italic")
        ax.set_ylim(len(rows) - 0.5, -0.5)  # most important on top
        ax.set_xlim(xmin - pad, xmax + pad)
        ax.axvline(0.0, color="#BBBBBB", linewidth=0.8, zorder=0)
        for k in range(1, len(rows)):  # a faint line between features, so each row's markers read together
            ax.axhline(k - 0.5, color="#EEEEEE", linewidth=0.6, zorder=0)
        ax.set_xlabel("feature importance (95% interval)")
        ax.tick_params(axis="y", length=0)
    shown = f"top {n_rows} of {len(names)} features" if n_rows < len(names) else f"{len(names)} features"
    fig.suptitle(
        f"{comp.method}: {', '.join(versions)} ({shown}); drift = {_num(comp.drift)}\n"
        f"* bold red: changed vs {versions[0]} (Holm, alpha = {comp.alpha:g}; filled marker = the version that "
        f"changed); grey italic: near zero; noise: {comp.noise}",
        fontsize=9,
    )
    axes[0][-1].legend(loc="best", fontsize=8, framealpha=0.9)  # the last panel holds the smallest values
    return finish_figure(fig, path)  # tight layout (the suptitle included), saved atomically when path is given


def _label(name: str, changed: bool) -> str:
    label = name if len(name) <= 28 else name[:13] + "..." + name[-12:]
    return label + (" *" if changed else "")


def write_outputs(comp, folder: str | os.PathLike, *, plot: bool = True) -> list[str]:
    """Write ``compare.json`` (``comp.save``), ``compare.csv`` (``comp.to_frame()``) and ``compare.png``
    (:func:`plot_comparison`, all features) into ``folder``, each atomically; returns the paths written.

    ``plot=False`` skips the PNG (e.g. matplotlib is not installed). The folder must exist.
    """
    from jaxsens._io import atomic_write

    folder = os.fspath(folder)
    written = []
    path = os.path.join(folder, OUTPUT_FILES[0])
    comp.save(path)
    written.append(path)
    path = os.path.join(folder, OUTPUT_FILES[1])
    atomic_write(path, comp.to_frame().to_csv(index=False))
    written.append(path)
    if plot:
        path = os.path.join(folder, OUTPUT_FILES[2])
        fig = plot_comparison(comp, path=path)
        pyplot().close(fig)
        written.append(path)
    return written


def summary_rows(comp) -> list[list[Any]]:
    """One row per version: name, replicates, spearman, kendall, ndcg (the reference row: "reference")."""
    rows = []
    for v, name in enumerate(comp.versions):
        reps = comp.n_replicates[v] if v < len(comp.n_replicates) else 1
        if v == 0:
            rows.append([name, reps, "reference", "", ""])
        else:
            rows.append([name, reps, _num(comp.spearman[v - 1]), _num(comp.kendall[v - 1]), _num(comp.ndcg[v - 1])])
    return rows


SUMMARY_HEADER = ("version", "replicates", "spearman", "kendall", "ndcg")
CHANGES_HEADER = ("version", "output", "feature", "reference", "importance", "delta", "95% interval", "p", "changed")


def change_rows(comp, top: int | None = 10) -> list[list[str]]:
    """The largest changes (``comp.changes(top)``) as text cells under :data:`CHANGES_HEADER`."""
    out = []
    crit = critical95(comp.noise, comp.n_replicates, getattr(comp, "prior", None))
    for r in comp.changes(top):
        d, e = r["delta"], r["delta_stderr"]
        ci = f"[{d - crit * e:.4g}, {d + crit * e:.4g}]" if e is not None and np.isfinite(e) else "-"
        output = r.get("output")
        out.append([str(r["version"]), "-" if output is None else str(output), str(r["feature"]),
                    _num(r["reference"]), _num(r["importance"]), _num(d, signed=True), ci, _p(r["p_value"]),
                    "*" if r["changed"] else ""])
    return out


def print_summary(comp, file: TextIO | None = None, top: int = 10) -> None:
    """Print what a weekly check needs: drift, the rank agreement per version, the largest changes, the near-zero
    features, the first-layer weight sums beside the behaviour, the noise source and the comparison's notes."""
    file = sys.stdout if file is None else file
    versions = list(comp.versions)
    n_features = len(comp.feature_names)

    def say(text=""):
        print(text, file=file)

    say(f"compare ({comp.method}): {len(versions)} versions, reference {versions[0]}; {comp.n_samples} samples; "
        f"{n_features} features")
    say(f"drift = 1 - min(ndcg) = {_num(comp.drift)}")
    say(_text_table(SUMMARY_HEADER, summary_rows(comp)))
    noise = comp.noise
    if noise.startswith("replicates"):
        noise += " (the between-replicate spread is the noise floor)"
    elif noise == "none":
        noise += " (no noise estimate: p-values are NaN and nothing is marked changed)"
    say(f"noise: {noise}")
    rows = change_rows(comp, top)
    if rows:
        n_changed = int(np.asarray(comp.changed, bool).sum())
        n_feat = int(changed_features(comp).any(axis=0).sum()) if len(versions) > 1 else 0
        say(f"largest changes vs {versions[0]} (* = changed at alpha {comp.alpha:g}, Holm-corrected; "
            f"{n_changed} changed entries in all, {n_feat} of {n_features} features; 95% interval of the "
            "difference):")
        say(_text_table(CHANGES_HEADER, rows))
    near = list(comp.near_zero)
    rule = (f"95% upper bound below {comp.near_zero_fraction:g} x the largest importance in every version")
    if near:
        say(f"near-zero features ({len(near)} of {n_features}; {rule}): {', '.join(near)}")
    else:
        say(f"near-zero features: none ({rule})")
    if comp.weight_sums is not None and comp.weight_sums_spearman is not None:
        rho = ", ".join(f"{v} {_num(r)}" for v, r in zip(versions, comp.weight_sums_spearman))
        say(f"first-layer weight sums vs behaviour (spearman per version): {rho}")
    for note in comp.notes:
        say(f"note: {note}")


def _text_table(header, rows) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 or i == 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    return "\n".join("  " + line.rstrip() for line in lines)


def _num(x, *, signed: bool = False) -> str:
    if x is None:
        return "-"
    x = float(x)
    if not np.isfinite(x):
        return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def _p(p) -> str:
    if p is None or not np.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"
