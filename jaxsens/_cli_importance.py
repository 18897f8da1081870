"""``jaxsens importance`` and ``jaxsens demo``: parse, dispatch to a library method, write results.

Methods are one table (:data:`METHODS`): a new method is a new row. Each row names the public function and what it
takes: streamed data, in-memory data with targets, or the weights alone.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["METHODS", "add_parsers", "run_importance"]


@dataclasses.dataclass(frozen=True)
class Method:
    function: str  # name in the jaxsens namespace
    takes: str  # "stream": (model, data); "xy": (model, X, y); "x(y)": (model, X, y=None); "x": (model, X); "weights"
    needs_targets: bool = False
    options: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {}
    summary: str = ""


def _key(args):
    import jax

    return {"key": jax.random.key(args.seed)}


METHODS: dict[str, Method] = {
    "jacobian": Method(
        "jacobian_importance", "stream",
        options=lambda a: {"batch_size": a.batch_size, "outputs": a.outputs, "scale": a.scale},
        summary="mean |dF/dx| over the data (Jacobian statistics)",
    ),
    "perturbation": Method(
        "perturbation_importance", "stream",
        options=lambda a: {"batch_size": a.batch_size, "scale": a.noise_scale, "n_draws": a.n_draws, **_key(a)},
        summary="RMS output change when one input gets N(0, scale) noise (seed 001)",
    ),
    "input-perturbation": Method(
        "input_perturbation", "xy", needs_targets=True, options=lambda a: {"metric": a.metric, **_key(a)},
        summary="error increase per input and noise level (Scardi & Harding)",
    ),
    "permutation": Method(
        "permutation_importance", "xy", needs_targets=True,
        options=lambda a: {"metric": a.metric, "n_repeats": a.n_repeats, **_key(a)},
        summary="error increase when one input column is permuted",
    ),
    "improved-stepwise": Method(
        "improved_stepwise", "x(y)", options=lambda a: {"variant": 1 if a.targets_given else 2},
        summary="each input fixed at its mean (Gevrey et al. 2003; variant 1 with targets, else 2)",
    ),
    "profile": Method("lek_profile", "x", summary="Lek's profile: each input swept over its range"),
    "connection-weights": Method("connection_weights", "weights", summary="Olden & Jackson's connection weights"),
    "garson": Method("garson", "weights", summary="Garson's algorithm (one hidden layer)"),
    "weight-sums": Method("weight_sums", "weights", summary="sum of |W| into the first hidden layer (seed 000)"),
    "pad": Method(
        "partial_derivatives", "stream", options=lambda a: {"batch_size": a.batch_size},
        summary="Dimopoulos's PaD: share of summed squared derivatives",
    ),
    "stepwise-forward": Method(
        "stepwise", "xy", needs_targets=True, options=lambda a: {"direction": "forward", **_key(a)},
        summary="forward stepwise addition with retraining",
    ),
    "stepwise-backward": Method(
        "stepwise", "xy", needs_targets=True, options=lambda a: {"direction": "backward", **_key(a)},
        summary="backward stepwise elimination with retraining",
    ),
}


def add_parsers(sub, add_model_args, load_model) -> None:
    p = sub.add_parser(
        "importance",
        help="input importance of MODEL over DATA; writes importance.json / .csv / .png",
        description="Methods:\n" + "\n".join(f"  {k:<20s} {m.summary}" for k, m in METHODS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument("data", help="data: .npy (streamed), .npz, .csv, .parquet")
    _add_method_args(p)
    p.set_defaults(fn=lambda args: _cmd_importance(args, load_model))

    p = sub.add_parser("demo", help="the bundled default example end to end (model + data -> importance table)")
    _add_method_args(p, out_default="jaxsens-demo")
    p.set_defaults(fn=_cmd_demo)


def _add_method_args(p, out_default="."):
    p.add_argument("--method", default="jacobian", choices=sorted(METHODS))
    p.add_argument("--out", default=out_default, help="output folder (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--outputs", default=None, help="comma-separated output indices or names (jacobian)")
    p.add_argument("--scale", choices=["std"], default=None, help="multiply J_ij by std(x_j) (jacobian)")
    p.add_argument(
        "--targets", default=None,
        help="targets for the methods that need them: .npy, .npz (first array, or FILE.npz:NAME), .csv or "
        ".parquet (one column, or FILE.csv:COLUMN)",
    )
    p.add_argument("--target-column", default=None, help="name of the target column in a CSV / Parquet DATA")
    p.add_argument(
        "--no-header", action="store_true",
        help="the CSV DATA (and a CSV --targets) has no header line: every line is data. Default: the first "
        "line is a header when it is not all numbers, or when it is exactly 0,1,...,n-1",
    )
    p.add_argument("--metric", default="mse", help="mse | mae | accuracy | log_loss (permutation, ...)")
    p.add_argument("--n-repeats", type=int, default=5)
    p.add_argument("--n-draws", type=int, default=1)
    p.add_argument("--noise-scale", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=20, help="rows of the printed table")
    p.add_argument("--no-plot", action="store_true", help="skip importance.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


OUTPUT_FILES = ("importance.json", "importance.csv", "importance.png")


def _cmd_importance(args, load_model) -> int:
    from jaxsens._io import output_folder

    with output_folder(args.out, option="--out", files=OUTPUT_FILES):  # checked and locked before any work
        return run_importance(args, load_model(args))


def _cmd_demo(args) -> int:
    import jaxsens
    from jaxsens import examples
    from jaxsens._io import output_folder

    with output_folder(args.out, option="--out", files=OUTPUT_FILES):
        model = jaxsens.load_model(examples.default_model_path())
        args.data = examples.default_data_path()
        print(f"jaxsens demo: bundled model {os.path.basename(examples.default_model_path())} "
              f"(inputs {model.input_shape} -> outputs {model.output_shape}, layers {', '.join(model.layer_names)})")
        print(f"true effects (by construction): {', '.join(model.feature_names[i] for i in examples.TRUE_EFFECTS)}")
        return run_importance(args, model)


def _parse_outputs(text):
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return [int(t) if t.lstrip("-").isdigit() else t for t in items]


def _data_arg(args):
    """DATA as the methods take it: the path, or :func:`jaxsens.open_data` with ``--no-header`` /
    ``--target-column`` (that column is excluded from the features, and the rest is still streamed)."""
    from converters.errors import ArgumentError
    from jaxsens import _data

    path, no_header, target = args.data, getattr(args, "no_header", False), args.target_column
    if not (no_header or target):
        return path
    lower = str(path).lower()
    if no_header and not lower.endswith(_data._CSV_EXTENSIONS):
        raise ArgumentError(f"--no-header applies to CSV data; {path} is not a CSV file")
    if target and not lower.endswith(_data._CSV_EXTENSIONS + _data._PARQUET_EXTENSIONS):
        raise ArgumentError(
            f"--target-column names a column of a CSV / Parquet DATA; {path} is not one: pass --targets FILE"
        )
    if target and no_header:
        raise ArgumentError(
            "--target-column names a header column, and --no-header says the data has none: put the targets "
            "in their own file (--targets FILE)"
        )
    return _data.open_data(path, header=False if no_header else None, exclude=(target,) if target else ())


def _load_xy(args, model):
    """In-memory X (and y) for the methods that need the whole data set; also DATA as the methods take it."""
    from converters.errors import ArgumentError
    from jaxsens import _data

    data = _data_arg(args)
    header = False if getattr(args, "no_header", False) else None
    y, targets = None, None
    if args.targets and args.target_column:
        raise ArgumentError("--targets FILE and --target-column NAME both give the targets; pass one of them")
    if args.target_column:
        y = _data.read_targets(_data.open_data(args.data, header=header), column=args.target_column)
        targets = f"column {args.target_column!r} of {args.data}"
    elif args.targets:
        targets = args.targets
        y = _data.read_targets(args.targets, header=header)  # header: CSV targets only
        y = np.squeeze(y, axis=-1) if y.ndim == 2 and y.shape[1] == 1 else y
    x = _data.read_rows(data, input_shape=model.input_shape, feature_names=model.feature_names)
    if y is not None:
        _data.check_target_rows(y, len(x), targets, str(args.data))
    return x, y, data


def _header_names(path: str, drop: str | None, header: bool | None = None) -> list[str] | None:
    """Column names of a CSV / Parquet file (read from its header only), without the target column.

    ``None`` when the file is not a table, has no header (see :func:`jaxsens.open_data` for the rule), or its
    header is pandas' default ``0..n-1``.
    """
    from jaxsens import _data

    names = _data.header_names(path, header=header)
    return None if names is None else [n for n in names if n != drop]


def _name_features_from_header(model, args):
    """Give a model with generic feature names (x0, x1, ...) the data's column names, when they line up."""
    header = False if getattr(args, "no_header", False) else None
    names = _header_names(args.data, args.target_column, header) if isinstance(args.data, str) else None
    generic = tuple(f"x{i}" for i in range(model.n_features)) in (model.feature_names, None)
    if names and generic and len(model.input_shape) == 1 and len(names) == model.n_features:
        return dataclasses.replace(model, feature_names=tuple(names))
    return model


def run_importance(args, model) -> int:
    import jaxsens
    from converters.errors import ArgumentError

    model = _name_features_from_header(model, args)
    method = METHODS[args.method]
    fn = getattr(jaxsens, method.function, None)
    if fn is None:
        raise ArgumentError(f"--method {args.method!r} ({method.function}) is not available in this version of jaxsens")
    args.outputs = _parse_outputs(args.outputs)
    args.targets_given = bool(args.targets or args.target_column)
    options = {k: v for k, v in method.options(args).items() if v is not None}
    start = time.perf_counter()
    if method.takes == "stream":
        data = _data_arg(args)  # a --target-column is excluded from the streamed features
        bar = None if args.quiet else _progress_bar()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = fn(model, data, progress=bar, **options)
            finally:  # also on an error or Ctrl-C, so the message that follows starts on its own line
                if bar is not None:
                    bar.close()
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    elif method.takes == "weights":
        result = fn(model, **options)
    else:
        x, y, _ = _load_xy(args, model)
        if method.needs_targets and y is None:
            raise ArgumentError(f"--method {args.method} needs targets: --targets FILE or --target-column NAME")
        if method.takes == "xy" or (method.takes == "x(y)" and y is not None):
            result = fn(model, x, y, **options)
        else:
            result = fn(model, x, **options)
    seconds = time.perf_counter() - start
    rows = result.ranking()
    print(_table(rows, args.top, args.method))
    n = getattr(result, "n_samples", None)
    print(f"{args.method}: {n if n is not None else '-'} samples in {seconds:.2f} s")
    _write_outputs(result, rows, args)
    return 0


def _progress_bar():
    from tqdm import tqdm

    class Bar:
        def __init__(self):
            self.bar = tqdm(unit=" rows", unit_scale=True, dynamic_ncols=True, file=sys.stderr, smoothing=0.1)

        def __call__(self, done, total=None):
            if total is not None and self.bar.total != total:
                self.bar.total = total
            self.bar.update(done - self.bar.n)

        def close(self):
            self.bar.close()

    return Bar()


def _table(rows, top: int, method: str) -> str:
    lines = [f"{'rank':>4}  {'feature':<24} {'importance':>12} {'stderr':>10}"]
    for i, (name, score, err) in enumerate(rows[:top], 1):
        err_text = "-" if err is None or not np.isfinite(err) else f"{err:10.4g}"
        lines.append(f"{i:>4}  {name:<24} {score:12.5g} {err_text:>10}")
    if len(rows) > top:
        lines.append(f"  ... {len(rows) - top} more in importance.csv")
    return "\n".join(lines)


def _write_outputs(result, rows, args) -> None:
    """importance.json / .csv / .png in ``args.out``, each written atomically (see :mod:`jaxsens._io`)."""
    from converters.errors import ArgumentError
    from jaxsens._io import atomic_write

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["rank", "feature", "importance", "stderr"])
    for i, (name, score, err) in enumerate(rows, 1):
        w.writerow([i, name, repr(float(score)), "" if err is None else repr(float(err))])
    written = []
    try:
        os.makedirs(args.out, exist_ok=True)  # already there from the CLI; run_importance may be called directly
        result.save(os.path.join(args.out, "importance.json"))
        written.append("importance.json")
        atomic_write(os.path.join(args.out, "importance.csv"), buf.getvalue())
        written.append("importance.csv")
        if not args.no_plot:
            try:
                fig = result.plot(path=os.path.join(args.out, "importance.png"))
                written.append("importance.png")
                import matplotlib.pyplot as plt

                plt.close(fig)
            except ImportError as e:  # MissingExtraError: the plot is optional, the numbers are written
                print(f"(no importance.png: {e})", file=sys.stderr)
    except OSError as e:  # disk full, folder removed meanwhile, ...: the table above was printed
        done = f" (written: {', '.join(written)})" if written else ""
        raise ArgumentError(f"--out {args.out!r}: could not write the results: {e.strerror or e}{done}") from None
    print(f"wrote {', '.join(os.path.join(args.out, w) for w in written)}")
