"""``jaxsens compare``: did feature importance change between model versions (seed 000's weekly retrain)?

    jaxsens compare A B [C ...] DATA --out DIR [--method M] [--names a,b,...] [--fail-on-drift T] [method flags]

The last positional is the data; every other one is a model version, reference first. A version is a model file
(anything ``jaxsens.load_model`` reads; a legacy ``x_structure.json`` finds ``x_weights.h5`` beside it) or a
comma-joined list of files: retrained replicates of one version, whose spread becomes the noise floor. The method
flags are ``jaxsens importance``'s, generated from the method table. Outputs (``--out`` checked and locked before
anything is loaded; each file written atomically): ``compare.json`` (``Comparison.save``), ``compare.csv``
(``Comparison.to_frame()``) and ``compare.png`` (:func:`jaxsens._compare_view.plot_comparison`); the summary is
printed. ``--report r.html`` writes one self-contained HTML page with the same tables and the plot.

Exit status: 3 when ``--fail-on-drift T`` is given and ``drift > T`` (or the drift is undefined), one line on
stderr saying so, so a weekly pipeline can stop; otherwise 0; 2 for a user error (``jaxsens.cli.main``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from typing import Any

__all__ = ["DRIFT_EXIT", "add_parsers", "run_compare"]

DRIFT_EXIT = 3  # the exit status when --fail-on-drift is exceeded


def _drift_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a drift threshold; give a number from 0 to 1 (drift = 1 - min nDCG, e.g. 0.1)"
        )
    return value


def _version_names_arg(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(","))
    if not names or any(not n for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: give one non-empty name per version, e.g. 2019-01-07,2019-01-14")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a name; every version needs its own name")
    return names


def add_parsers(sub) -> None:
    """Register ``compare`` on the ``jaxsens`` sub-command parsers."""
    from jaxsens import _cli_importance as imp
    from jaxsens.cli import _shape_arg

    table = imp._table()
    p = sub.add_parser(
        "compare",
        help="did feature importance change between model versions? writes compare.json / .csv / .png",
        description=__doc__.split("\n\n", 2)[1] + "\n\n" + imp._description(table),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="two or more model versions (reference first; A,B,... = replicates of one version), then "
                   "the data (.npy, .npz, .csv, .parquet)")
    p.add_argument("--names", type=_version_names_arg, default=None,
                   help="comma-separated version names (default: the file names without _structure.json etc.)")
    p.add_argument("--fail-on-drift", type=_drift_arg, default=None, metavar="T",
                   help=f"exit with status {DRIFT_EXIT} when drift = 1 - min(nDCG) exceeds T (0..1), e.g. 0.1")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="family-wise error rate of the changed test (Holm; default %(default)s)")
    p.add_argument("--near-zero", type=float, default=0.05, metavar="X",
                   help="near-zero features: 95%% upper bound below X times the largest importance, in every "
                   "version (default %(default)s)")
    p.add_argument("--no-moderate", dest="moderate", action="store_false",
                   help="with replicates, test each entry on its own between-replicate spread (plain pooled t) "
                   "instead of the default empirical-Bayes moderated spread (Smyth 2004)")
    p.add_argument("--report", default=None, metavar="PATH.html",
                   help="also write one self-contained HTML report (tables and the plot)")
    p.add_argument("--unsafe", action="store_true",
                   help="allow Keras Lambda layers / custom objects (they run arbitrary code; only for files you trust)")
    p.add_argument("--output", help="which ONNX output to explain (name or index); default the first float output")
    p.add_argument("--input-shape", type=_shape_arg,
                   help="shape of one sample, e.g. 10,3, for models whose files leave non-batch input axes unknown")
    imp._add_method_args(p, table)
    for action in p._actions:  # the shared flags that mean something else here
        if action.dest == "out":  # required: a comparison is not written into the working folder by default
            action.required, action.default, action.help = True, None, "output folder (created if missing)"
        elif action.dest == "top":
            action.help = "rows of the printed changes table (default 20); compare.png shows every feature"
        elif action.dest == "no_plot":
            action.help = "skip compare.png"
    p.set_defaults(fn=_cmd_compare)


def _split(args) -> tuple[list, str]:
    """(versions, data): each version a path or a list of replicate paths."""
    from converters.errors import ArgumentError

    if len(args.paths) < 3:
        raise ArgumentError(
            f"jaxsens compare needs two or more model versions and then the data, got {len(args.paths)} path(s): "
            f"{' '.join(args.paths)}; e.g. jaxsens compare w1_structure.json w2_structure.json data.npy --out DIR"
        )
    versions = []
    for text in args.paths[:-1]:
        files = [t.strip() for t in text.split(",") if t.strip()]
        if not files:
            raise ArgumentError(f"model version {text!r} names no file")
        versions.append(files[0] if len(files) == 1 else files)
    if args.names is not None and len(args.names) != len(versions):
        raise ArgumentError(
            f"--names gives {len(args.names)} names for {len(versions)} versions ({', '.join(args.paths[:-1])}); "
            "give one name per version"
        )
    return versions, args.paths[-1]


def _stem(path: str) -> str:
    name = os.path.basename(os.path.normpath(path))
    for suffix in ("_structure.json", ".json", ".onnx", ".keras", ".hdf5", ".h5"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def default_names(versions: list) -> tuple[str, ...]:
    """Version names from the files: ``x_structure.json`` -> ``x``; replicates -> their common prefix or the first
    stem; when two versions share a name (``2019-01-07/model_structure.json`` and ``2019-01-14/...``), the folder
    is put in front; still equal -> ``v0``, ``v1``, ...."""
    def one(version, folder: bool) -> str:
        first = version if isinstance(version, str) else version[0]
        stems = [_stem(v) for v in ([version] if isinstance(version, str) else version)]
        name = os.path.commonprefix(stems).rstrip("_-. ") or stems[0]
        if folder:
            parent = os.path.basename(os.path.dirname(os.path.abspath(first)))
            name = f"{parent}/{name}" if parent else name
        return name

    names = tuple(one(v, False) for v in versions)
    if len(set(names)) < len(names):
        names = tuple(one(v, True) for v in versions)
    if len(set(names)) < len(names):
        names = tuple(f"v{i}" for i in range(len(versions)))
    return names


def _check_report(args) -> Any:
    """The report class when ``--report`` is given (checked before any work), else None."""
    if args.report is None:
        return None
    from converters.errors import ArgumentError
    from jaxsens._io import check_output_file

    if not str(args.report).lower().endswith((".html", ".htm")):
        raise ArgumentError(f"--report {args.report!r}: give an .html path, e.g. --report compare.html")
    check_output_file(args.report, option="--report")
    try:
        from jaxsens._report import Report
    except ModuleNotFoundError as e:
        if e.name != "jaxsens._report":
            raise
        raise ArgumentError("--report needs jaxsens._report, which this installation lacks; drop --report") from None
    return Report


def _check_writers(args) -> bool:
    """pandas for compare.csv (refused before any work); whether matplotlib is there for compare.png."""
    from converters.errors import MissingExtraError

    try:
        import pandas  # noqa: F401
    except ImportError:
        raise MissingExtraError("compare.csv (the tidy table) needs pandas: pip install 'jaxsens[data]'") from None
    if args.no_plot:
        return False
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("(no compare.png: matplotlib is missing; pip install 'jaxsens[plot]')", file=sys.stderr)
        return False
    return True


def _cmd_compare(args) -> int:
    from jaxsens._checkpoint import cli_checkpointing
    from jaxsens._compare_view import OUTPUT_FILES
    from jaxsens._io import output_folder

    versions, data = _split(args)
    with output_folder(args.out, option="--out", files=OUTPUT_FILES), cli_checkpointing(  # locked before any work
        args, model_paths=tuple(p for v in versions for p in ([v] if isinstance(v, str) else v)), data_paths=(data,)
    ):
        report = _check_report(args)  # after --out exists: the report may go into it
        return run_compare(args, versions, data, report_class=report)


def _spec_and_preset(args):
    from converters.errors import ArgumentError
    from jaxsens import _cli_importance as imp

    table = imp._table()
    name = args.method
    if name in imp.DEPRECATED_METHOD_ALIASES and imp.DEPRECATED_METHOD_ALIASES[name][0] in table:
        target, preset = imp.DEPRECATED_METHOD_ALIASES[name]
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in preset.items())
        print(f"warning: --method {name} is deprecated; use --method {target} {flags}", file=sys.stderr)
        clash = sorted(set(preset) & set(imp._given_options(args)))
        if clash:
            raise ArgumentError(f"--method {name} sets {', '.join(clash)}; use --method {target} with your flags")
        return table[target], dict(preset)
    if name not in table:
        raise ArgumentError(f"--method {name!r} is not one of {imp.method_names()}")
    return table[name], {}


def run_compare(args, versions: list, data: str, *, report_class=None) -> int:
    """Load every version, run ``jaxsens.compare``, print the summary, write the outputs; returns the exit status."""
    import jaxsens
    from converters.errors import ArgumentError
    from jaxsens import _cli_importance as imp
    from jaxsens import _compare_view as view

    plot = _check_writers(args)
    spec, preset = _spec_and_preset(args)
    args.data = data
    options = {**imp._method_options(args, spec), **preset}
    data_arg, targets = imp._data_and_targets(args, spec)
    shared: dict[str, Any] = {"outputs": imp._parse_outputs(args.outputs), "batch_size": args.batch_size}
    if args.nan_policy is not None:
        shared["nan_policy"] = args.nan_policy
    if args.seed is not None:
        if not spec.random:
            raise ArgumentError(f"--seed applies to the random methods; --method {spec.name} is deterministic: "
                                "drop --seed")
        shared["key"] = args.seed
    if not 0.0 < args.alpha < 1.0:
        raise ArgumentError(f"--alpha {args.alpha!r} must lie strictly between 0 and 1, e.g. 0.05")
    if not 0.0 <= args.near_zero < 1.0:
        raise ArgumentError(f"--near-zero {args.near_zero!r} must lie in [0, 1), e.g. 0.05")
    names = args.names if args.names is not None else default_names(versions)

    output = int(args.output) if args.output is not None and args.output.isdigit() else args.output

    def load(path):
        model = jaxsens.load_model(path, safe=not args.unsafe, output=output, input_shape=args.input_shape)
        return imp._name_features(model, args, uses_header=spec.needs_data)

    models = [load(v) if isinstance(v, str) else [load(r) for r in v] for v in versions]
    progress = None if args.quiet else imp._Progress(unit="" if spec.family == "retraining" else " rows")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            comp = jaxsens.compare(models, data_arg, targets, method=spec.name, names=names, alpha=args.alpha,
                                   near_zero=args.near_zero, moderate=args.moderate, progress=progress,
                                   **shared, **options)
        finally:  # also on an error or Ctrl-C, so the message that follows starts on its own line
            if progress is not None:
                progress.close()
    for message in dict.fromkeys(str(w.message) for w in caught):  # each once, in order
        print(f"warning: {message}", file=sys.stderr)
    seconds = time.perf_counter() - start
    view.print_summary(comp, sys.stdout, top=args.top)
    print(f"{spec.name}: {len(versions)} versions x {comp.n_samples} samples in {seconds:.2f} s")
    try:
        written = view.write_outputs(comp, args.out, plot=plot)
    except OSError as e:  # disk full, folder removed meanwhile, ...: the summary above was printed
        raise ArgumentError(f"--out {args.out!r}: could not write the results: {e.strerror or e}") from None
    if report_class is not None:
        _write_report(report_class, comp, args, plot=plot)
        written.append(args.report)
    print(f"wrote {', '.join(written)}")
    return _drift_status(comp, args.fail_on_drift)


def _drift_status(comp, threshold: float | None) -> int:
    if threshold is None:
        return 0
    drift = float(comp.drift)
    if math.isnan(drift):
        print(f"jaxsens: drift is undefined (NaN: no ranking to score) and --fail-on-drift {threshold:g} was given; "
              f"failing (exit status {DRIFT_EXIT})", file=sys.stderr)
        return DRIFT_EXIT
    if drift > threshold:
        worst = comp.versions[1 + int(_argmin(comp.ndcg))] if len(comp.versions) > 1 else comp.versions[0]
        print(f"jaxsens: drift {drift:.4g} > --fail-on-drift {threshold:g} (lowest nDCG: {worst} vs "
              f"{comp.versions[0]}); exit status {DRIFT_EXIT}", file=sys.stderr)
        return DRIFT_EXIT
    return 0


def _argmin(values) -> int:
    import numpy as np

    return int(np.nanargmin(np.asarray(values, dtype=float))) if np.isfinite(values).any() else 0


def _write_report(report_class, comp, args, *, plot: bool) -> None:
    """The HTML report: the summary table, the changes table, the near-zero features, the notes and the plot."""
    import io

    from converters.errors import ArgumentError
    from jaxsens import _compare_view as view

    meta = {"models": " ".join(args.paths[:-1]), "data": args.paths[-1], "method": comp.method}
    rep = report_class(f"jaxsens compare: {', '.join(comp.versions)}", meta=meta)
    rep.paragraph(f"method {comp.method}; reference {comp.versions[0]}; {comp.n_samples} samples; "
                  f"{len(comp.feature_names)} features; noise: {comp.noise}")
    rep.heading("Drift and rank agreement")
    rep.paragraph(f"drift = 1 - min(nDCG) = {view._num(comp.drift)}")
    rep.table(view.SUMMARY_HEADER, view.summary_rows(comp), caption="per version against the reference")
    rep.heading("Largest changes")
    rep.table(view.CHANGES_HEADER, view.change_rows(comp, args.top),
              caption=f"* = changed at alpha {comp.alpha:g} (Holm-corrected); 95% interval of the difference")
    rep.heading("Near-zero features")
    rep.paragraph(", ".join(comp.near_zero) or "none")
    if comp.notes:
        rep.heading("Notes")
        for note in comp.notes:
            rep.paragraph(note)
    text = io.StringIO()
    view.print_summary(comp, text, top=args.top)
    rep.heading("Summary (as printed)")
    rep.preformatted(text.getvalue())
    if plot:
        rep.heading("Importance per version")
        rep.figure(view.plot_comparison(comp), caption="95% intervals; changed features in bold red with *")
    try:
        rep.write(args.report)
    except OSError as e:
        raise ArgumentError(f"--report {args.report!r}: could not write the report: {e.strerror or e}") from None
