"""``jaxsens activations``: one input pattern through the network, drawn layer by layer, with the architecture.

    jaxsens activations MODEL PATTERN --out DIR [--layers a,b] [--row N] [--per-page 12]
                        [--stats DATA [--batch-size B]] [--report report.html]

PATTERN is a data file (``.npy``, ``.npz``, ``.csv``, ``.parquet``; row ``--row N``, default 0, of rows shaped like
the model's input) or, for a model with a 1-D input, the numbers themselves, comma-separated (``0.1,0.5,2``).
Written to DIR, each atomically:

* ``activations_1.png``, ``activations_2.png``, ...: the pattern first, then each layer's output for it, one panel
  per array, titled with the layer name and its shape (2-D as heatmaps, 1-D as strips, higher ranks folded:
  every leading axis flattened into the rows, ``[..., a, b] -> [prod(leading) * a, b]``; see
  :mod:`jaxsens._inside_view`); pages of an earlier run beyond this run's last page are removed;
* ``architecture.png`` and ``architecture.csv``: the layer graph (:func:`jaxsens.architecture`): name, op types,
  per-sample output shape, parameter count, inputs;
* ``activations.npz``: every drawn array by name (the pattern under the model's input name), as computed;
* with ``--stats DATA``: ``activation_stats.csv`` (:func:`jaxsens.activation_stats` streamed over DATA: per unit
  mean, std, min, max and the fraction of exact zeros); the dead units (0 on every row) are printed.

Printed: the architecture table, each array's shape / min / max / mean, and which panels are on which page.
``--report PATH.html`` also writes one self-contained HTML report (the tables and every picture inline).
The output folder, ``--report``, PATTERN and DATA are checked before the model is loaded.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re

import numpy as np

__all__ = ["OUTPUT_FILES", "add_parsers", "run_activations"]

OUTPUT_FILES = ("architecture.png", "architecture.csv", "activations.npz", "activation_stats.csv")
_PAGE = re.compile(r"activations_(\d+)\.png")


def add_parsers(sub, add_model_args, load_model) -> None:
    """Register ``activations`` on the ``jaxsens`` sub-command parser (called from :func:`jaxsens.cli._parser`)."""
    p = sub.add_parser(
        "activations",
        help="draw each layer's output for one input pattern, and the architecture",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    add_model_args(p)
    p.add_argument("pattern", metavar="PATTERN",
                   help="data file (.npy/.npz/.csv/.parquet; row --row) or, for a 1-D input, comma-separated numbers")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--layers", type=_layers_arg, default=None, metavar="A,B,...",
                   help="only these layers (names or indices into the model's layers); default all")
    p.add_argument("--row", type=int, default=None, metavar="N", help="row of a PATTERN data file (default 0)")
    p.add_argument("--per-page", type=int, default=12, metavar="K", help="panels per page (default %(default)s)")
    p.add_argument("--stats", default=None, metavar="DATA",
                   help="also stream per-unit statistics over a data set: activation_stats.csv, dead units")
    p.add_argument("--batch-size", type=int, default=None, help="rows per chunk for --stats")
    p.add_argument("--report", default=None, metavar="PATH.html",
                   help="also write one self-contained HTML report (tables and pictures inline)")
    p.set_defaults(fn=lambda args: _cmd_activations(args, load_model))


def _layers_arg(text: str) -> tuple:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} names no layers; give e.g. dense,my_dense (or indices 0,2)")
    return tuple(int(t) if t.lstrip("-").isdigit() else t for t in items)


# ------------------------------------------------------------------------------------------- the command
def _cmd_activations(args, load_model) -> int:
    from jaxsens._io import output_folder

    with output_folder(args.out, option="--out", files=OUTPUT_FILES):  # checked and locked before any work
        _check_report(args)  # after --out exists: the report may go into it
        _check_before(args)
        return run_activations(args, load_model(args))


def _check_report(args) -> None:
    from converters.errors import ArgumentError
    from jaxsens._io import check_output_file

    if args.report:
        check_output_file(args.report, option="--report")
        if os.path.dirname(os.path.abspath(args.report)) == os.path.abspath(args.out) and \
                _PAGE.fullmatch(os.path.basename(args.report)):
            raise ArgumentError(f"--report {args.report!r} takes the name of an activations page; choose another")


def _check_before(args) -> None:
    """Everything else that can be refused without the model: options, PATTERN / DATA files, extras."""
    from converters.errors import ArgumentError, MissingExtraError
    from jaxsens import _data
    from jaxsens._results import pyplot

    if args.per_page < 1:
        raise ArgumentError(f"--per-page must be at least 1, got {args.per_page}")
    if args.row is not None and args.row < 0:
        raise ArgumentError(f"--row must be a row number >= 0, got {args.row}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ArgumentError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.batch_size is not None and args.stats is None:
        raise ArgumentError("--batch-size applies to --stats DATA; drop it or add --stats")
    if _pattern_numbers(args.pattern) is not None:
        if args.row is not None:
            raise ArgumentError(f"--row picks a row of a PATTERN data file; PATTERN {_short(args.pattern)!r} gives "
                                "the numbers themselves: drop --row")
    else:
        _data.open_data(args.pattern)  # exists, is a file, known extension
    if args.stats is not None:
        _data.open_data(args.stats)
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise MissingExtraError("activation_stats.csv needs pandas: pip install 'jaxsens[data]'") from None
    pyplot()  # the pictures are the point of the command: a missing matplotlib is refused now


def run_activations(args, model) -> int:
    """Compute, print and write everything for ``model`` (the ``--out`` folder exists and is locked)."""
    from converters.errors import ArgumentError
    from jaxsens import _inside
    from jaxsens._inside_view import draw_activations, draw_architecture

    if model.n_inputs != 1:
        raise ArgumentError(
            f"jaxsens activations takes a model with one input; this one has {model.n_inputs} "
            f"({', '.join(model.input_names)}): call jaxsens.activations(model, xs) from Python"
        )
    pattern, where = _read_pattern(args, model)
    acts = _inside.activations(model, pattern, layers=list(args.layers) if args.layers else None)
    layers = list(_inside.architecture(model))
    input_name = model.input_names[0]
    key = input_name if input_name not in acts else f"input:{input_name}"
    drawn = {key: np.asarray(pattern), **{k: np.asarray(v) for k, v in acts.items()}}

    print(f"pattern: {where}")
    print(architecture_text(layers))
    print()
    print(values_text(drawn))
    out = args.out
    written = []
    try:
        pages = draw_activations(drawn, folder=out, per_page=args.per_page)
        names = list(drawn)
        for k, page in enumerate(pages):
            on_page = names[k * args.per_page : (k + 1) * args.per_page]
            print(f"{os.path.basename(page)}: {', '.join(on_page)}")
        written += [os.path.basename(p) for p in pages]
        _remove_stale_pages(out, len(pages))
        draw_architecture(layers, path=os.path.join(out, "architecture.png"))
        written.append("architecture.png")
        _write(os.path.join(out, "architecture.csv"), architecture_csv(layers))
        written.append("architecture.csv")
        buf = io.BytesIO()
        np.savez(buf, **drawn)
        _write(os.path.join(out, "activations.npz"), buf.getvalue())
        written.append("activations.npz")
        stats = None
        if args.stats is not None:
            stats = _stats(args, model)
            _write(os.path.join(out, "activation_stats.csv"), stats.to_frame().to_csv(index=False))
            written.append("activation_stats.csv")
    except OSError as e:  # disk full, folder removed meanwhile, a folder where a page goes
        done = f" (written: {', '.join(written)})" if written else ""
        raise ArgumentError(f"--out {out!r}: could not write the results: {e.strerror or e}{done}") from None
    print(f"wrote {', '.join(os.path.join(out, w) for w in written)}")
    if args.report:
        _write_report(args, where, layers, drawn, pages, stats)
    return 0


# ----------------------------------------------------------------------------------------- the pattern
def _pattern_numbers(text: str) -> list[str] | None:
    """The fields of a comma-separated PATTERN, or ``None`` when PATTERN names a file (it exists, or it ends in a
    data-file extension, or it holds no comma and is not a number)."""
    from jaxsens import _data

    lower = text.lower()
    if os.path.exists(text) or lower.endswith((".npy", ".npz", *_data._CSV_EXTENSIONS, *_data._PARQUET_EXTENSIONS)):
        return None
    if ".npz:" in lower:
        return None
    fields = [f.strip() for f in text.split(",")]
    if "," not in text:
        try:
            float(fields[0])
        except ValueError:
            return None
    return fields


def _read_pattern(args, model) -> tuple[np.ndarray, str]:
    """One sample ``[*input_shape]`` and where it came from (for the printout)."""
    from converters.errors import DataError

    shape = tuple(int(d) for d in model.input_shape)
    fields = _pattern_numbers(args.pattern)
    if fields is not None:
        bad = []
        values = []
        for f in fields:
            try:
                values.append(float(f))
            except ValueError:
                bad.append(f)
        if bad:
            raise DataError(
                f"PATTERN {_short(args.pattern)!r} is neither a data file (no such file) nor comma-separated "
                f"numbers ({', '.join(map(repr, bad[:3]))} {'is' if len(bad) == 1 else 'are'} not a number)"
            )
        if len(shape) != 1:
            raise DataError(
                f"PATTERN as comma-separated numbers is for models with a 1-D input; this model's input is "
                f"{shape}: give a .npy / .npz / .csv / .parquet file of rows shaped {list(shape)}"
            )
        if len(values) != shape[0]:
            raise DataError(
                f"PATTERN gives {len(values)} numbers; the model's input {shape} takes {shape[0]} (expected "
                f"{shape[0]}, got {len(values)})"
            )
        x = np.asarray(values, np.float64)
        where = f"{len(values)} numbers from the command line"
    else:
        row = 0 if args.row is None else args.row
        x, desc = _row_of(args.pattern, row, shape)
        where = f"row {row} of {desc}"
    flat = np.asarray(x, np.float64).reshape(-1)
    if not np.isfinite(flat).all():
        k = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise DataError(f"PATTERN ({where}) holds NaN or Inf (first at flat position {k}); give finite numbers")
    from jaxsens._data import as_chunk_dtype

    return as_chunk_dtype(x[None], model.input_dtypes[0], what="PATTERN")[0], where


def _row_of(path: str, row: int, shape: tuple) -> tuple[np.ndarray, str]:
    """Row ``row`` of the data file ``path`` (rows of ``shape``), streamed up to that row."""
    from converters.errors import DataError
    from jaxsens import _data

    try:
        source = _data.open_source(path, input_shape=shape)
        if source.n_rows is not None and row >= source.n_rows:
            raise DataError(_out_of_range(row, source.n_rows, path))
        seen = 0
        for block in source.blocks(4096):
            if row < seen + block.shape[0]:
                return np.array(block[row - seen]), source.description
            seen += block.shape[0]
    except DataError as e:
        if str(e).startswith("--row"):
            raise
        raise type(e)(f"PATTERN {path}: {e}") from None
    raise DataError(_out_of_range(row, seen, path))


def _out_of_range(row: int, n_rows: int, path: str) -> str:
    return (f"--row {row} is out of range: PATTERN {path} has {n_rows} row{'s' if n_rows != 1 else ''} "
            f"(rows 0..{n_rows - 1})")


# ------------------------------------------------------------------------------------------- the tables
def architecture_text(layers) -> str:
    """The architecture as a printed table, with the total parameter count."""
    total = sum(int(r.n_params) for r in layers)
    w = max(12, *(len(r.name) for r in layers))
    lines = [f"architecture: {len(layers)} layers, {total:,} parameters",
             f"{'#':>3}  {'layer':<{w}}  {'op types':<28} {'output shape':<16} {'params':>10}  inputs"]
    for i, r in enumerate(layers):
        ops = ", ".join(r.op_types) or "-"
        lines.append(f"{i:>3}  {r.name:<{w}}  {_short(ops, 28):<28} {_shape(r.output_shape):<16} "
                     f"{int(r.n_params):>10,}  {', '.join(r.inputs) or '-'}")
    return "\n".join(lines)


def values_text(drawn) -> str:
    """Each array's shape, min, max and mean (NaN / Inf counted)."""
    w = max(12, *(len(k) for k in drawn))
    lines = [f"{'array':<{w}}  {'shape':<16} {'min':>12} {'max':>12} {'mean':>12}"]
    for name, a in drawn.items():
        a = np.asarray(a, np.float64)
        fin = a[np.isfinite(a)]
        stats = (fin.min(), fin.max(), fin.mean()) if fin.size else (math.nan,) * 3
        bad = a.size - fin.size
        note = f"  ({bad} NaN/Inf left out)" if bad else ""
        lines.append(f"{name:<{w}}  {_shape(a.shape):<16} {stats[0]:12.5g} {stats[1]:12.5g} {stats[2]:12.5g}{note}")
    return "\n".join(lines)


def architecture_csv(layers) -> str:
    """``architecture.csv``: name, op_types (``;``-joined), output_shape (``50x75``), n_params, inputs."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "op_types", "output_shape", "n_params", "inputs"])
    for r in layers:
        w.writerow([r.name, ";".join(r.op_types), "x".join(str(d) for d in _dims(r.output_shape)), int(r.n_params),
                    ";".join(r.inputs)])
    return buf.getvalue()


def _dims(shape) -> tuple:
    try:
        return tuple(shape)
    except TypeError:
        return (shape,)


def _shape(shape) -> str:
    dims = _dims(shape)
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# -------------------------------------------------------------------------------------------- outputs
def _write(path: str, data) -> None:
    from jaxsens._io import atomic_write

    atomic_write(path, data)


def _remove_stale_pages(folder: str, n_pages: int) -> None:
    """Pages ``activations_K.png`` with ``K > n_pages`` are an earlier run's: remove them so that every page in
    the folder belongs to this run."""
    for name in sorted(os.listdir(folder)):
        m = _PAGE.fullmatch(name)
        if m and int(m.group(1)) > n_pages and os.path.isfile(os.path.join(folder, name)):
            os.unlink(os.path.join(folder, name))
            print(f"removed {os.path.join(folder, name)} (a page of an earlier run)")


def _stats(args, model):
    from jaxsens import _inside
    from jaxsens._cli_importance import _Progress

    progress = _Progress()
    try:
        stats = _inside.activation_stats(model, args.stats, layers=list(args.layers) if args.layers else None,
                                         batch_size=args.batch_size, progress=progress)
    finally:
        progress.close()
    print(dead_units_text(stats, args.stats))
    return stats


def dead_units_text(stats, data: str) -> str:
    """Per layer: how many units are exactly 0 on every row of ``data``, and the first of them."""
    dead = stats.dead_units()
    skipped = f", {stats.n_skipped} skipped" if getattr(stats, "n_skipped", 0) else ""
    lines = [f"activation statistics over {data}: {stats.n_samples} rows{skipped}",
             "dead units (exactly 0 on every row; unit = flat C-order index into the layer's shape):"]
    for layer in stats.layers:
        units = int(np.prod(stats.shapes[layer], dtype=np.int64))
        idx = np.asarray(dead.get(layer, ()))
        n = int(idx.shape[0]) if idx.ndim else 0
        shown = ", ".join(_unit(u) for u in idx[:10]) + (", ..." if n > 10 else "")
        lines.append(f"  {layer}: {n} of {units}" + (f": {shown}" if n else ""))
    return "\n".join(lines)


def _unit(u) -> str:
    u = np.asarray(u)
    return str(int(u)) if u.ndim == 0 else "(" + ", ".join(str(int(v)) for v in u) + ")"


def _write_report(args, where, layers, drawn, pages, stats) -> None:
    from converters.errors import ArgumentError
    from jaxsens._report import Report

    rep = Report(f"Inside view: {os.path.basename(args.model)}",
                 meta={"model": args.model, "pattern": where, **({"data": args.stats} if args.stats else {})})
    total = sum(int(r.n_params) for r in layers)
    rep.heading("Architecture")
    rep.table(["#", "layer", "op types", "output shape", "params", "inputs"],
              [[i, r.name, ", ".join(r.op_types) or "-", _shape(r.output_shape), int(r.n_params),
                ", ".join(r.inputs) or "-"] for i, r in enumerate(layers)],
              caption=f"{len(layers)} layers, {total:,} parameters")
    rep.figure(os.path.join(args.out, "architecture.png"), caption="The layer graph")
    rep.heading("Each layer's output for the pattern")
    rep.paragraph(f"The pattern ({where}) first, then each layer's output. 2-D outputs are heatmaps, 1-D outputs "
                  "strips (bars under 40 units), higher ranks folded: every leading axis flattened into the rows, "
                  "[..., a, b] -> [prod(leading) * a, b].")
    rows = []
    for name, a in drawn.items():
        a = np.asarray(a, np.float64)
        fin = a[np.isfinite(a)]
        rows.append([name, _shape(a.shape), *((fin.min(), fin.max(), fin.mean()) if fin.size else (None,) * 3)])
    rep.table(["array", "shape", "min", "max", "mean"], rows, caption="Values for the pattern")
    for k, page in enumerate(pages, 1):
        rep.figure(page, caption=f"Page {k} of {len(pages)}")
    if stats is not None:
        rep.heading("Activation statistics over the data set")
        dead = stats.dead_units()
        srows = []
        for layer in stats.layers:
            units = int(np.prod(stats.shapes[layer], dtype=np.int64))
            idx = np.asarray(dead.get(layer, ()))
            srows.append([layer, _shape(stats.shapes[layer]), units, int(idx.shape[0]) if idx.ndim else 0,
                          float(np.mean(stats.mean[layer])), float(np.min(stats.min[layer])),
                          float(np.max(stats.max[layer])), float(np.mean(stats.zero_fraction[layer]))])
        rep.table(["layer", "shape", "units", "dead units", "mean of unit means", "min", "max", "mean zero fraction"],
                  srows, caption=f"{stats.n_samples} rows of {args.stats}; dead = exactly 0 on every row")
    try:
        rep.write(args.report)
    except OSError as e:
        raise ArgumentError(f"--report {args.report!r}: could not write the report: {e.strerror or e}") from None
    print(f"wrote {args.report}")

