"""Pictures of the inside of a network: each layer's output for one pattern, and the layer graph.

:func:`draw_activations` draws, for **one** input pattern, every array it is given (the pattern itself first, then
each layer's output, as :func:`jaxsens.activations` returns them for one sample) as one panel of a page grid;
:func:`draw_architecture` draws the layer graph (:func:`jaxsens.architecture`) top to bottom, one box per layer.
Both use matplotlib only (the ``plot`` extra), through :func:`jaxsens._results.pyplot`, and write every PNG
atomically (:func:`jaxsens._io.atomic_write`). The ``jaxsens activations`` command (:mod:`jaxsens._cli_inside`)
calls them.

How an array becomes a panel (the rule is also written in each panel's title):

* a scalar ``()``: the number, printed;
* 1-D ``[n]``: a bar strip (one bar per unit) when ``n < 40``, else a ``1 x n`` heatmap strip;
* 2-D ``[a, b]``: a heatmap, rows = axis 0, columns = axis 1;
* 3-D and higher ``[..., a, b]``: folded to 2-D, every leading axis flattened into the rows in C (row-major)
  order: ``[prod(leading) * a, b]``; row ``r`` is ``(leading index r // a, row r % a)``. Thin white lines
  separate the blocks of ``a`` rows when there are at most 64 of them.

Heatmaps use ``viridis`` when the values have one sign and ``RdBu_r`` centred on zero (the colour scale
symmetric about 0) when they mix signs; every heatmap has a colour bar. NaN / Inf entries are left blank and
counted in the title.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError

__all__ = ["BAR_STRIP_MAX", "draw_activations", "draw_architecture", "fold_rule", "folded", "page_name"]

BAR_STRIP_MAX = 40  # 1-D outputs with fewer units are drawn as bars, longer ones as a 1 x n heatmap strip
_MAX_BLOCK_LINES = 64  # separators between folded blocks only while they stay legible
_DPI = 120


# --------------------------------------------------------------------------------------------- folding
def folded(a: np.ndarray) -> np.ndarray:
    """The 2-D array a panel shows for ``a`` (see the module docstring): ``[n]`` -> ``[1, n]``, ``[a, b]`` as is,
    ``[..., a, b]`` -> ``[prod(leading) * a, b]`` (C order); a scalar -> ``[1, 1]``.

    Example:
        >>> folded(np.zeros((2, 3, 4, 5))).shape
        (24, 5)
    """
    a = np.asarray(a)
    if a.ndim == 0:
        return a.reshape(1, 1)
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.reshape(-1, a.shape[-1])


def fold_rule(shape: Sequence[int]) -> str:
    """The folding of ``shape`` in words, for a panel title; ``""`` when nothing is folded.

    Example:
        >>> fold_rule((2, 3, 4, 5))
        'folded: leading (2, 3) x 4 rows -> [24, 5]'
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 3:
        return ""
    lead = shape[:-2]
    rows = math.prod(lead) * shape[-2]
    return f"folded: leading {lead} x {shape[-2]} rows -> [{rows}, {shape[-1]}]"


def page_name(k: int) -> str:
    """File name of page ``k`` (1-based): ``activations_1.png``, ``activations_2.png``, ..."""
    return f"activations_{k}.png"


# ------------------------------------------------------------------------------------------- activations
def draw_activations(acts: Mapping[str, np.ndarray], *, folder, per_page: int = 12) -> list[str]:
    """Draw each array of ``acts`` (one pattern's layer outputs) as a panel; ``per_page`` panels per page.

    Args:
        acts: ``{name: array}`` in drawing order, each the output of one layer for **one** sample (no batch
            axis), e.g. ``{"input": pattern, **jaxsens.activations(model, pattern)}``: the pattern first.
            Arrays of any rank; real numbers or booleans. Drawn by the rule of the module docstring.
        folder: an existing folder; the pages are written there as ``activations_1.png``,
            ``activations_2.png``, ... (each atomically; pages of an earlier, longer run are not touched).
        per_page: panels per page (at least 1); the grid has ``ceil(sqrt(per_page))`` columns.

    Returns:
        The paths of the pages written, in order; panel ``i`` (0-based) is on page ``i // per_page + 1``. Each
        panel's title is ``"<i+1>. <name> <shape>"`` plus the folding rule for rank >= 3.

    Raises:
        ArgumentTypeError: ``acts`` not a mapping of names to arrays of real numbers; ``per_page`` not an int.
        ArgumentError: ``acts`` empty, ``per_page < 1``, ``folder`` not an existing folder.
        MissingExtraError: matplotlib missing (the ``plot`` extra).

    Example:
        >>> import numpy as np, tempfile
        >>> pages = draw_activations({"x": np.ones((4, 3)), "h": np.arange(5.0)}, folder=tempfile.mkdtemp())
        >>> [os.path.basename(p) for p in pages]
        ['activations_1.png']
    """
    from jaxsens._results import pyplot

    arrays = _check_acts(acts)
    if isinstance(per_page, bool) or not isinstance(per_page, int | np.integer):
        raise ArgumentTypeError(f"per_page must be an int (panels per page), got {type(per_page).__name__}")
    if per_page < 1:
        raise ArgumentError(f"per_page must be at least 1, got {per_page}")
    folder = _check_folder(folder)
    plt = pyplot()
    names = list(arrays)
    n_pages = math.ceil(len(names) / per_page)
    grid_cols = math.ceil(math.sqrt(per_page))
    paths = []
    for page in range(n_pages):
        chunk = names[page * per_page : (page + 1) * per_page]
        ncols = min(grid_cols, len(chunk))
        nrows = math.ceil(len(chunk) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.7 * nrows + 0.5), squeeze=False)
        try:
            for k, ax in enumerate(axes.flat):
                if k >= len(chunk):
                    ax.set_axis_off()
                    continue
                i = page * per_page + k
                _panel(fig, ax, f"{i + 1}. {chunk[k]}", arrays[chunk[k]])
            first, last = page * per_page + 1, page * per_page + len(chunk)
            fig.suptitle(f"activations for one pattern: page {page + 1} of {n_pages} (panels {first}-{last} of "
                         f"{len(names)})", fontsize="large")
            path = os.path.join(folder, page_name(page + 1))
            _save(fig, path, top=1 - 0.45 / (3.7 * nrows + 0.5))
        finally:
            plt.close(fig)
        paths.append(path)
    return paths


def _check_acts(acts) -> dict[str, np.ndarray]:
    if not isinstance(acts, Mapping):
        raise ArgumentTypeError(
            f"acts must be a mapping {{layer name: array}} (as jaxsens.activations returns), got {type(acts).__name__}"
        )
    if not acts:
        raise ArgumentError("acts is empty: nothing to draw; pass {name: array} for at least one layer")
    out = {}
    for name, value in acts.items():
        try:
            a = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise ArgumentTypeError(f"acts[{name!r}] is not an array: {e}") from None
        if a.dtype == bool:
            a = a.astype(np.float64)
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise ArgumentTypeError(
                f"acts[{name!r}] has dtype {a.dtype}; a panel shows real numbers (int, float or bool arrays)"
            )
        out[str(name)] = a.astype(np.float64)
    return out


def _check_folder(folder) -> str:
    if not isinstance(folder, str | os.PathLike):
        raise ArgumentTypeError(f"folder must be a path, got {type(folder).__name__}")
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ArgumentError(f"folder {folder!r} is not an existing folder; create it first")
    return folder


def _panel(fig, ax, label: str, a: np.ndarray) -> None:
    shape = tuple(a.shape)
    shape_text = "()" if not shape else "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    finite = np.isfinite(a)
    bad = int(a.size - finite.sum())
    title = f"{_short(label, 42)}  {shape_text}"
    if bad:
        title += f"\n{bad} NaN/Inf (blank)"
    if a.ndim == 0:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{a.item():.6g}", ha="center", va="center", fontsize=22, transform=ax.transAxes)
        ax.set_title(title + "\nscalar", fontsize="medium")
        return
    if a.ndim == 1 and a.shape[0] < BAR_STRIP_MAX:
        n = a.shape[0]
        vals = np.where(finite, a, 0.0)
        ax.bar(np.arange(n), vals, color=np.where(vals >= 0, "#4C72B0", "#C44E52"), width=0.8)
        ax.axhline(0.0, color="#333333", linewidth=0.6)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_xticks(np.arange(n) if n <= 12 else np.arange(0, n, 5))
        ax.set_xlabel("unit")
        ax.set_ylabel("value")
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(title + "\nbars: one per unit", fontsize="medium")
        return
    m = np.ma.masked_invalid(folded(a))
    lo = float(m.min()) if m.count() else 0.0
    hi = float(m.max()) if m.count() else 0.0
    if lo < 0 < hi:
        v = max(-lo, hi)
        cmap, vmin, vmax = "RdBu_r", -v, v
    else:
        cmap, vmin, vmax = "viridis", lo, hi
    if vmin == vmax:  # a constant array: a visible colour, the value on the colour bar
        vmin, vmax = vmin - 0.5, vmax + 0.5
    im = ax.imshow(m, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if a.ndim == 1:
        ax.set_yticks([])
        ax.set_xlabel("unit")
        ax.set_title(title + "\nstrip: 1 x n heatmap", fontsize="medium")
        return
    rows = m.shape[0]
    if a.ndim >= 3:
        block = a.shape[-2]
        n_blocks = rows // block
        if 1 < n_blocks <= _MAX_BLOCK_LINES:
            for r in range(1, n_blocks):
                ax.axhline(r * block - 0.5, color="white", linewidth=0.8)
        ax.set_ylabel(f"rows: leading x axis {a.ndim - 2}")
        ax.set_xlabel(f"axis {a.ndim - 1}")
        ax.set_title(title + "\n" + fold_rule(shape), fontsize="medium")
        return
    ax.set_ylabel("axis 0")
    ax.set_xlabel("axis 1")
    ax.set_title(title + "\nheatmap", fontsize="medium")


# ------------------------------------------------------------------------------------------ architecture
def draw_architecture(layers: Sequence, *, path) -> str:
    """Draw the layer graph top to bottom: one box per layer, arrows along the ``inputs`` edges.

    Each box shows the layer's name, its op types, its per-sample output shape and its parameter count; the
    title gives the number of layers and the total parameter count. A layer sits one level below the deepest of
    its inputs (longest path from the inputs), so the layers a layer feeds that do not depend on each other
    (branches) sit side by side on one level, in graph order.

    Args:
        layers: the rows of :func:`jaxsens.architecture` (``LayerInfo``: ``name``, ``op_types``,
            ``output_shape``, ``n_params``, ``inputs``), in graph order, inputs first. An ``inputs`` entry that
            names no row (a graph tensor that is not a layer) draws no arrow.
        path: the ``.png`` file to write (atomically); its folder must exist.

    Returns:
        ``path``.

    Raises:
        ArgumentTypeError: a row without those fields.
        ArgumentError: no rows, two rows of one name, a bad ``path``.
        MissingExtraError: matplotlib missing (the ``plot`` extra).
    """
    from jaxsens._results import pyplot

    rows = _check_layers(layers)
    path = _check_png_path(path)
    plt = pyplot()
    level = _levels(rows)
    n_levels = max(level.values()) + 1
    by_level: list[list[int]] = [[] for _ in range(n_levels)]
    for i, r in enumerate(rows):
        by_level[level[r["name"]]].append(i)
    width = max(len(lv) for lv in by_level)
    box_w, box_h, gap_x, gap_y = 3.4, 0.95, 0.5, 0.55
    fig_w = max(6.0, width * (box_w + gap_x) + 0.6)
    fig_h = n_levels * (box_h + gap_y) + 1.0
    scale = min(1.0, 160.0 / fig_h, 160.0 / fig_w)  # keep the PNG within a sane pixel size for huge graphs
    fig, ax = plt.subplots(figsize=(fig_w * scale, fig_h * scale))
    try:
        font = max(4.0, 8.5 * scale)
        centre: dict[str, tuple[float, float]] = {}
        span = width * (box_w + gap_x)
        for lv, members in enumerate(by_level):
            y = -(lv * (box_h + gap_y))
            row_w = len(members) * (box_w + gap_x)
            x0 = (span - row_w) / 2 + (box_w + gap_x) / 2
            for k, i in enumerate(members):
                centre[rows[i]["name"]] = (x0 + k * (box_w + gap_x), y)
        for r in rows:
            cx, cy = centre[r["name"]]
            is_input = not r["inputs"] and r["n_params"] == 0
            ax.add_patch(plt.Rectangle((cx - box_w / 2, cy - box_h / 2), box_w, box_h, linewidth=1.0,
                                       edgecolor="#333333", facecolor="#E8EEF7" if is_input else "#F7F3E8"))
            ops = ", ".join(r["op_types"]) or ("input" if is_input else "-")
            ax.text(cx, cy + 0.22, _short(r["name"], 38), ha="center", va="center", fontsize=font + 1,
                    fontweight="bold")
            ax.text(cx, cy - 0.02, _short(ops, 46), ha="center", va="center", fontsize=font, color="#444444")
            ax.text(cx, cy - 0.26, f"out {_shape_text(r['output_shape'])} | {r['n_params']:,} params",
                    ha="center", va="center", fontsize=font)
        for r in rows:
            for src in r["inputs"]:
                if src not in centre:
                    continue
                (sx, sy), (tx, ty) = centre[src], centre[r["name"]]
                ax.annotate("", xy=(tx, ty + box_h / 2), xytext=(sx, sy - box_h / 2),
                            arrowprops={"arrowstyle": "-|>", "color": "#555555", "linewidth": 1.0,
                                        "shrinkA": 0, "shrinkB": 1})
        total = sum(r["n_params"] for r in rows)
        ax.set_title(f"architecture: {len(rows)} layers, {total:,} parameters in total", fontsize=font + 3)
        ax.set_xlim(0, span)
        ax.set_ylim(-(n_levels - 1) * (box_h + gap_y) - box_h / 2 - 0.2, box_h / 2 + 0.2)
        ax.set_axis_off()
        _save(fig, path)
    finally:
        plt.close(fig)
    return path


def _check_layers(layers) -> list[dict]:
    if isinstance(layers, str | bytes | Mapping) or not isinstance(layers, Sequence):
        raise ArgumentTypeError(
            f"layers must be a list of LayerInfo rows (jaxsens.architecture(model)), got {type(layers).__name__}"
        )
    if not layers:
        raise ArgumentError("layers is empty: nothing to draw; pass jaxsens.architecture(model)")
    rows, seen = [], set()
    for k, info in enumerate(layers):
        try:
            row = {
                "name": str(info.name),
                "op_types": tuple(str(t) for t in info.op_types),
                "output_shape": info.output_shape,
                "n_params": int(info.n_params),
                "inputs": tuple(str(s) for s in info.inputs),
            }
        except (AttributeError, TypeError, ValueError) as e:
            raise ArgumentTypeError(
                f"layers[{k}] is not a LayerInfo row (name, op_types, output_shape, n_params, inputs): {e}"
            ) from None
        if row["name"] in seen:
            raise ArgumentError(f"layers names {row['name']!r} twice; every layer needs its own name")
        seen.add(row["name"])
        rows.append(row)
    return rows


def _levels(rows: list[dict]) -> dict[str, int]:
    """Longest-path depth from the inputs; rows are in graph order, so an input defined later (a cycle or an
    out-of-order row) counts as external."""
    level: dict[str, int] = {}
    for r in rows:
        parents = [level[s] for s in r["inputs"] if s in level]
        level[r["name"]] = max(parents) + 1 if parents else 0
    return level


def _check_png_path(path) -> str:
    if not isinstance(path, str | os.PathLike):
        raise ArgumentTypeError(f"path must be a file path, got {type(path).__name__}")
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ArgumentError(f"path {path!r} must end in .png (the picture is a PNG)")
    if os.path.isdir(path):
        raise ArgumentError(f"path {path!r} is a folder; pass a file path such as {os.path.join(path, 'architecture.png')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ArgumentError(f"path {path!r}: the folder {folder!r} does not exist; create it first")
    return path


# --------------------------------------------------------------------------------------------- helpers
def _save(fig, path: str, *, top: float = 1.0) -> None:
    """Tight layout (below a suptitle when ``top < 1``), PNG bytes written atomically."""
    import io

    from jaxsens._io import atomic_write

    fig.tight_layout(rect=(0, 0, 1, top))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    atomic_write(path, buf.getvalue())


def _shape_text(shape) -> str:
    try:
        dims = tuple(shape)
    except TypeError:
        return str(shape)
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _short(label: str, n: int) -> str:
    return label if len(label) <= n else label[: n // 2 - 1] + "..." + label[-(n // 2 - 2):]
