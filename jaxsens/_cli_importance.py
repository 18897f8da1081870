"""``jaxsens importance`` and ``jaxsens demo``: parse, call a method from the table, write results.

Everything method-specific comes from the method table (:func:`jaxsens.methods`): ``--method`` takes its names,
and each :class:`jaxsens.Option` with ``cli=True`` becomes one flag (``--name-with-dashes``), typed, with its
choices, its default and the methods that use it in ``--help``. Flags default to "not given", so a method's own
default applies; a flag given for a method that does not have the option is refused, naming the method's
options. Every method gets the same progress callback (rows/s and ETA; the total when known) and, when its spec
offers ``estimate(call)``, a cost estimate is printed before it starts. A new row in the table needs no edit here.

Outputs, each written atomically: ``importance.json`` (``result.save``), ``importance.csv`` (``result.to_frame()``,
the tidy long table) and ``importance.png`` (``result.plot(top=--top)``); the printed table is
``result.ranking()``. ``--report PATH`` also writes one self-contained HTML report (:mod:`jaxsens._report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import numbers
import os
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxsens import _checkpoint

__all__ = [
    "DEPRECATED_METHOD_ALIASES",
    "OUTPUT_FILES",
    "Flag",
    "add_parsers",
    "method_names",
    "option_flags",
    "readme_table",
    "run_importance",
]

OUTPUT_FILES = ("importance.json", "importance.csv", "importance.png")

# Deprecated ``--method`` names (one release; listed in CHANGELOG.md): name -> (table name, preset options).
DEPRECATED_METHOD_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "stepwise-forward": ("stepwise", {"direction": "forward"}),
    "stepwise-backward": ("stepwise", {"direction": "backward"}),
}

# Shared flags of `importance` / `demo` (and the model's own arguments): no option may take these names.
_SHARED_DESTS = frozenset({
    "method", "out", "batch_size", "outputs", "seed", "nan_policy", "targets", "target_column", "feature_names",
    "quiet", "top", "no_plot", "no_header", "debug", "model", "data", "weights", "unsafe", "output",
    "input_shape", "help", "report", "problem", "bounds", "checkpoint_every", "resume", "no_cache", "distributed",
    "coordinator", "num_processes", "process_id", "distributed_timeout",
})
# Options that also take a callable from Python (declared ``str``): their command-line choices, by option name.
_CLI_CHOICES = {"metric": "jaxsens._metrics.METRIC_CHOICES"}


# ----------------------------------------------------------------------------------------- the flags
@dataclasses.dataclass(frozen=True)
class Flag:
    """One generated flag: an option name shared by the ``methods`` that declare it (one meaning per name)."""

    name: str
    type: Any
    choices: tuple | None
    help: str
    defaults: Mapping[str, Any]  # method name -> its default

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "opt_" + self.name

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.defaults)


def option_flags(methods: Mapping) -> dict[str, Flag]:
    """``{option name: Flag}`` for every option with ``cli=True`` in the table, in first-seen order.

    Raises:
        ArgumentError: two methods give one option name different types or choices (the table promises one
            meaning per name), or an option takes the name of a shared flag.
    """
    from converters.errors import ArgumentError

    flags: dict[str, Flag] = {}
    for spec in methods.values():
        for o in spec.options:
            kind = o.cli_type if o.type == "any" else o.type  # the flag's type
            if not o.cli or kind is None:
                continue
            if o.name in _SHARED_DESTS:
                raise ArgumentError(
                    f"method {spec.name!r}: option {o.name!r} takes the name of a shared command-line flag "
                    f"(--{o.name.replace('_', '-')}); rename it"
                )
            choices = _choices(o)
            seen = flags.get(o.name)
            if seen is None:
                flags[o.name] = Flag(o.name, kind, choices, o.help, {spec.name: o.default})
                continue
            if seen.type != kind or seen.choices != choices:
                raise ArgumentError(
                    f"option {o.name!r} means two things: {seen.methods[0]!r} declares type {_type_name(seen.type)} "
                    f"with choices {seen.choices}, {spec.name!r} type {_type_name(kind)} with choices {choices}; "
                    "one name, one meaning (rename one of them)"
                )
            flags[o.name] = dataclasses.replace(seen, defaults={**seen.defaults, spec.name: o.default})
    return flags


def _choices(o) -> tuple | None:
    if o.name in _CLI_CHOICES and o.type is str:
        import importlib

        module, attr = _CLI_CHOICES[o.name].rsplit(".", 1)
        return tuple(getattr(importlib.import_module(module), attr))
    if o.choices is None:
        return None
    return tuple(c for c in o.choices if c is not None)


def _type_name(t) -> str:
    return t if isinstance(t, str) else t.__name__


def _list_arg(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats_arg(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in _list_arg(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.1,0.2") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} holds no numbers; give e.g. 0.1,0.2")
    return values


def _names_arg(text: str) -> tuple:
    items = _list_arg(text)
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} holds no names; give e.g. f03,f17 (or indices 3,17)")
    return tuple(int(t) if t.lstrip("-").isdigit() else t for t in items)


def _help_text(f: Flag) -> str:
    defaults = {repr(d) if not isinstance(d, tuple) else ",".join(map(str, d)) for d in f.defaults.values()}
    if len(defaults) == 1:
        default = f"default {next(iter(defaults))}"
    else:
        default = "default " + "; ".join(f"{m}: {d!r}" for m, d in f.defaults.items())
    text = f"{f.help} ({default}; methods: {', '.join(f.methods)})"
    return text.replace("%", "%%")  # argparse %-formats help strings


def _add_option_flag(group, f: Flag) -> None:
    kwargs: dict[str, Any] = {"dest": f.dest, "default": argparse.SUPPRESS, "help": _help_text(f)}
    if f.type is bool:
        values = set(f.defaults.values())
        if values == {False}:
            group.add_argument(f.flag, action="store_const", const=True, **kwargs)
        elif values == {True}:
            group.add_argument("--no-" + f.flag[2:], action="store_const", const=False, **kwargs)
        else:
            group.add_argument(f.flag, action=argparse.BooleanOptionalAction, **kwargs)
        return
    if f.type is int:
        kwargs.update(type=int, metavar="N")
    elif f.type is float:
        kwargs.update(type=float, metavar="X")
    elif f.type == "floats":
        kwargs.update(type=_floats_arg, metavar="X,Y,...")
    elif f.type == "names":
        kwargs.update(type=_names_arg, metavar="A,B,...")
    else:
        kwargs.update(type=str, metavar="VALUE")
    if f.choices:
        kwargs.pop("metavar", None)
        kwargs["choices"] = list(f.choices)
    group.add_argument(f.flag, **kwargs)


# ------------------------------------------------------------------------------------- the table
def _table() -> Mapping:
    import jaxsens

    return jaxsens.methods()


def method_names() -> list[str]:
    """Every ``--method`` value: the table's names and the deprecated aliases whose target exists."""
    table = _table()
    names = list(table)
    names += [a for a, (target, _) in DEPRECATED_METHOD_ALIASES.items() if target in table]
    return names


def _description(table: Mapping) -> str:
    from jaxsens._method import by_family

    lines = ["Methods (--method NAME), by family:"]
    for family, names in by_family(table).items():
        lines.append(f"  {family}:")
        for n in names:
            spec = table[n]
            needs = " [needs targets]" if spec.needs_targets else (" [targets optional]" if spec.uses_targets else "")
            lines.append(f"    {n:<20s} {spec.summary}{needs}")
    aliases = [a for a, (t, _) in DEPRECATED_METHOD_ALIASES.items() if t in table]
    if aliases:
        lines.append("  deprecated: " + ", ".join(
            f"{a} (= --method {DEPRECATED_METHOD_ALIASES[a][0]} "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in DEPRECATED_METHOD_ALIASES[a][1].items()) + ")"
            for a in aliases))
    lines.append("")
    lines.append("Each method's options are flags below; a flag applies only to the methods named in its help.")
    return "\n".join(lines)


def readme_table(methods: Mapping | None = None) -> str:
    """The README's method table (markdown), one row per :func:`jaxsens.methods` entry."""
    from jaxsens._method import table_rows

    rows = table_rows(_table() if methods is None else methods)
    head = "| name | function | family | targets | random | summary |\n| --- | --- | --- | --- | --- | --- |"
    body = ["| " + " | ".join(c.replace("|", "\\|") for c in (f"`{n}`", f"`{fn}`", *rest)) + " |"
            for n, fn, *rest in rows]
    return "\n".join([head, *body])


# ------------------------------------------------------------------------------------------ parsers
def add_parsers(sub, add_model_args, load_model) -> None:
    table = _table()
    p = sub.add_parser(
        "importance",
        help="input importance of MODEL over DATA; writes importance.json / .csv / .png",
        description=_description(table),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    global_methods = ", ".join(n for n, s in table.items() if s.family == "global") or "none"
    p.add_argument("data", nargs="?", default=None,
                   help=f"data: .npy (streamed), .npz, .csv, .parquet (for the global methods, {global_methods}: optional, "
                   "its columns are the inputs' empirical marginals, resampled independently)")
    _add_method_args(p, table)
    p.add_argument("--problem", default=None, metavar="PROBLEM.json",
                   help="global methods (" + global_methods + "): a JSON file holding SALib's problem dict "
                   "(num_vars, names, bounds, optional dists) instead of DATA")
    p.add_argument("--bounds", default=None, metavar="LO:HI,...",
                   help="global methods (" + global_methods + "): one uniform range lo:hi per input, e.g. "
                   "--bounds=0:1,-3.14:3.14 (use '=' when the first bound is negative); names from "
                   "--feature-names or the model")
    _add_report_arg(p)
    p.set_defaults(fn=lambda args: _cmd_importance(args, load_model))

    p = sub.add_parser(
        "demo", help="the bundled default example end to end (model + data -> importance table)",
        description=_description(table), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_method_args(p, table, out_default="jaxsens-demo")
    _add_report_arg(p)
    p.set_defaults(fn=_cmd_demo)


def _add_report_arg(p) -> None:
    p.add_argument("--report", default=None, metavar="PATH.html",
                   help="also write one self-contained HTML report (tables and plots inline, no network loads)")


def _add_method_args(p, table: Mapping, out_default: str = ".") -> None:
    p.add_argument("--method", default="jacobian", choices=method_names(), metavar="METHOD",
                   help="one of: " + ", ".join(method_names()) + " (default: %(default)s; see the list above)")
    p.add_argument("--out", default=out_default, help="output folder (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per chunk (default: chosen from memory)")
    p.add_argument("--outputs", default=None, help="comma-separated output indices or names to explain (default all)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for the random methods (default: the method's fixed seed, 0)")
    p.add_argument("--nan-policy", choices=["raise", "skip"], default=None,
                   help="rows with NaN / Inf: raise (default) or skip and count them")
    p.add_argument(
        "--targets", default=None,
        help="targets for the methods that use them: a file (.npy, .npz (first array, or FILE.npz:NAME), .csv or "
        ".parquet: one column, or FILE.csv:COLUMN) or the name of a column of a CSV / Parquet DATA",
    )
    p.add_argument("--target-column", default=None,
                   help="a column of a CSV / Parquet DATA that is not a feature: the targets of methods that use "
                   "them, left out of the features for the others")
    p.add_argument("--feature-names", default=None,
                   help="feature names for data without a header (.npy, .npz): comma-separated, or @FILE with one "
                   "name per line")
    p.add_argument(
        "--no-header", action="store_true",
        help="the CSV DATA (and a CSV --targets) has no header line: every line is data. Default: the first "
        "line is a header when it is not all numbers, or when it is exactly 0,1,...,n-1",
    )
    p.add_argument("--top", type=int, default=20, help="rows of the printed table and bars of the plot (default 20)")
    p.add_argument("--no-plot", action="store_true", help="skip importance.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no cost estimate")
    _checkpoint.add_cli_flags(p)  # --checkpoint-every N, --resume
    flags = option_flags(table)
    group = p.add_argument_group("method options (each applies to the methods named in its help)")
    for f in flags.values():
        _add_option_flag(group, f)


# ------------------------------------------------------------------------------------------ commands
def _cmd_importance(args, load_model) -> int:
    from jaxsens._io import output_folder

    # --out checked and locked before any work; with --checkpoint-every / --resume, the fold state saved in it
    with output_folder(args.out, option="--out", files=OUTPUT_FILES), _checkpoint.cli_checkpointing(args):
        _check_report(args)
        return run_importance(args, load_model(args))


def _cmd_demo(args) -> int:
    import jaxsens
    from jaxsens import examples
    from jaxsens._io import output_folder

    with output_folder(args.out, option="--out", files=OUTPUT_FILES), _checkpoint.cli_checkpointing(
        args, model_paths=(examples.default_model_path(),), data_paths=(examples.default_data_path(),)
    ):
        _check_report(args)
        model = jaxsens.load_model(examples.default_model_path())
        args.data = examples.default_data_path()
        print(f"jaxsens demo: bundled model {os.path.basename(examples.default_model_path())} "
              f"(inputs {model.input_shape} -> outputs {model.output_shape}, layers {', '.join(model.layer_names)})")
        print(f"true effects (by construction): {', '.join(model.feature_names[i] for i in examples.TRUE_EFFECTS)}")
        return run_importance(args, model)


def run_importance(args, model) -> int:
    """Run ``args.method`` on ``model`` and ``args.data``; print the ranking and write the three files."""
    from converters.errors import ArgumentError

    _check_writers(args)
    table = _table()
    name = args.method
    if name in DEPRECATED_METHOD_ALIASES and DEPRECATED_METHOD_ALIASES[name][0] in table:
        target, preset = DEPRECATED_METHOD_ALIASES[name]
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in preset.items())
        print(f"warning: --method {name} is deprecated; use --method {target} {flags}", file=sys.stderr)
        spec = table[target]
        clash = sorted(set(preset) & set(_given_options(args)))
        if clash:
            raise ArgumentError(f"--method {name} sets {', '.join(clash)}; use --method {target} with your flags")
    elif name in table:
        spec, preset = table[name], {}
    else:  # not reachable from the parser (choices), but run_importance may be called directly
        raise ArgumentError(f"--method {name!r} is not one of {method_names()}")

    _check_global_args(args, spec, table)
    model = _name_features(model, args, uses_header=spec.needs_data)
    options = {**_method_options(args, spec), **preset}
    data, targets = _data_and_targets(args, spec)
    problem = _problem_of(args, spec, model)
    if problem is not None:
        data = problem
    shared: dict[str, Any] = {"outputs": _parse_outputs(args.outputs), "batch_size": args.batch_size}
    if args.nan_policy is not None:
        shared["nan_policy"] = args.nan_policy
    if args.seed is not None:
        if not spec.random:
            random = [n for n, s in table.items() if s.random]
            raise ArgumentError(
                f"--seed applies to the random methods ({', '.join(random) or 'none in this version'}); "
                f"--method {spec.name} is deterministic: drop --seed"
            )
        shared["key"] = args.seed
    if not args.quiet:
        _print_estimate(spec, model, data, targets, shared, options)
    progress = None if args.quiet else _Progress(unit="" if spec.family == "retraining" else " rows")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = spec.function(model, data, targets, progress=progress, **shared, **options)
        finally:  # also on an error or Ctrl-C, so the message that follows starts on its own line
            if progress is not None:
                progress.close()
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    seconds = time.perf_counter() - start
    _report(result, args, seconds)
    return 0


def _check_global_args(args, spec, table: Mapping) -> None:
    """DATA is optional only for the global methods; ``--problem`` / ``--bounds`` apply only to them."""
    from converters.errors import ArgumentError

    is_global = spec.family == "global"
    glob = ", ".join(n for n, s in table.items() if s.family == "global") or "none in this version"
    problem, bounds = getattr(args, "problem", None), getattr(args, "bounds", None)
    given = [f for f, v in (("--problem", problem), ("--bounds", bounds)) if v is not None]
    if given and not is_global:
        raise ArgumentError(f"{' and '.join(given)} {'describes' if len(given) == 1 else 'describe'} the inputs of the global methods ({glob}); "
                            f"--method {spec.name} reads DATA: drop {' and '.join(given)}")
    if len(given) == 2:
        raise ArgumentError("--problem and --bounds both describe the inputs; pass one of them")
    if args.data is None and not is_global:
        raise ArgumentError(f"--method {spec.name} needs DATA: jaxsens importance MODEL DATA --method {spec.name} "
                            f"(only the global methods, {glob}, run without DATA)")
    if given and args.data is not None:
        raise ArgumentError(f"{given[0]} and DATA ({args.data}, read as the inputs' empirical marginals) both give "
                            f"the inputs of --method {spec.name}: drop DATA (or {given[0]})")


def _problem_of(args, spec, model):
    """SALib's problem dict from ``--problem FILE`` or ``--bounds LO:HI,...``; for a global method given DATA
    instead, DATA itself (its columns are the inputs' empirical marginals); ``None`` when none is given.

    Raises:
        ArgumentError: a file that is not JSON or not a valid problem for ``model`` (naming the file), or bounds
            that are not one ``lo:hi`` with ``lo < hi`` per input.
        DataFileNotFoundError: the problem file does not exist.
    """
    import json
    import math

    from converters.errors import ArgumentError, ArgumentTypeError, DataFileNotFoundError
    from jaxsens import _data
    from jaxsens._sobol import check_problem

    path, bounds = getattr(args, "problem", None), getattr(args, "bounds", None)
    shape = tuple(model.input_shape)
    if path is None and bounds is None:
        if spec.family != "global" or args.data is None:
            return None
        no_header, column = getattr(args, "no_header", False), getattr(args, "target_column", None)
        if no_header or column:  # the target column is not an input
            return _data.open_data(args.data, header=False if no_header else None, exclude=(column,) if column else ())
        return args.data
    if len(shape) != 1 or len(getattr(model, "input_names", ()) or ()) > 1:
        raise ArgumentError(f"{'--problem' if path else '--bounds'} describes a vector of features; this model "
                            f"takes per-sample shape {list(shape)}")
    n_features = shape[0]
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                problem = json.load(f)
        except FileNotFoundError:
            raise DataFileNotFoundError(f"--problem {path}: the file does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ArgumentError(f"--problem {path}: not a readable JSON file ({e}); it must hold SALib's problem "
                                "dict, e.g. {\"num_vars\": 2, \"bounds\": [[0, 1], [-1, 1]]}") from None
        try:
            check_problem(problem, n_features, spec.function_name)
        except (ArgumentError, ArgumentTypeError) as e:
            raise ArgumentError(f"--problem {path}: {e}") from None
        return problem
    ranges = []
    for i, item in enumerate(_list_arg(bounds)):
        parts = item.split(":")
        try:
            lo, hi = (float(v) for v in parts) if len(parts) == 2 else (math.nan, math.nan)
        except ValueError:
            lo = hi = math.nan
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ArgumentError(f"--bounds item {i} ({item!r}) must be lo:hi, two finite numbers with lo < hi, "
                                "e.g. 0:1 or -3.14:3.14")
        ranges.append([lo, hi])
    if len(ranges) != n_features:
        raise ArgumentError(f"--bounds gives {len(ranges)} ranges; the model has {n_features} input features: "
                            "give one lo:hi per input")
    names = model.feature_names or tuple(f"x{i}" for i in range(n_features))
    return {"num_vars": n_features, "names": list(names), "bounds": ranges, "dists": ["unif"] * n_features}


def _given_options(args) -> dict[str, Any]:
    """The method-option flags given on the command line: ``{option name: value}``."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}


def _method_options(args, spec) -> dict[str, Any]:
    """The given flags as ``spec``'s options; a flag the method does not have is refused, naming its options."""
    from converters.errors import ArgumentError

    given = _given_options(args)
    known = {o.name for o in spec.options if o.cli}
    foreign = [n for n in given if n not in known]
    if foreign:
        theirs = ", ".join("--" + n.replace("_", "-") for n in sorted(known)) or "none"
        flags = ", ".join("--" + n.replace("_", "-") for n in foreign)
        raise ArgumentError(
            f"{flags} does not apply to --method {spec.name}; its options are: {theirs} "
            "(see 'jaxsens importance --help')"
        )
    return given


def _data_and_targets(args, spec):
    """DATA and the targets as ``spec``'s function takes them (paths, a DataSpec, a column name)."""
    from converters.errors import ArgumentError
    from jaxsens import _data

    path, no_header, column = args.data, args.no_header, args.target_column
    uses_targets = spec.needs_targets or spec.uses_targets
    if args.targets and column:
        raise ArgumentError("--targets and --target-column both give the targets; pass one of them")
    lower = str(path).lower()
    if no_header and not lower.endswith(_data._CSV_EXTENSIONS):
        raise ArgumentError(f"--no-header applies to CSV data; {path} is not a CSV file")
    if column and not lower.endswith(_data._CSV_EXTENSIONS + _data._PARQUET_EXTENSIONS):
        raise ArgumentError(
            f"--target-column names a column of a CSV / Parquet DATA; {path} is not one: pass --targets FILE"
        )
    if column and no_header:
        raise ArgumentError(
            "--target-column names a header column, and --no-header says the data has none: put the targets "
            "in their own file (--targets FILE)"
        )
    given = args.targets or column
    if args.targets and not uses_targets:
        raise ArgumentError(
            f"--method {spec.name} does not use targets: drop --targets (--target-column NAME leaves a column "
            "of DATA out of the features)"
        )
    if spec.needs_targets and not given:
        raise ArgumentError(f"--method {spec.name} needs targets: --targets FILE or --target-column NAME")
    if not spec.needs_data:
        return None, (given if uses_targets else None)
    if uses_targets and given:
        data = _data.open_data(path, header=False) if no_header else path
        targets = given
        if args.targets and no_header and str(args.targets).lower().endswith(_data._CSV_EXTENSIONS):
            targets = _data.open_data(args.targets, header=False)
        return data, targets
    if no_header or column:  # the target column is excluded from the streamed features
        return _data.open_data(path, header=False if no_header else None, exclude=(column,) if column else ()), None
    return path, None


def _parse_outputs(text):
    if text is None:
        return None
    items = _list_arg(text)
    return [int(t) if t.lstrip("-").isdigit() else t for t in items]


def _feature_names_arg(text: str) -> tuple[str, ...]:
    from converters.errors import ArgumentError, DataFileNotFoundError

    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            raise DataFileNotFoundError(f"--feature-names {text}: file {text[1:]!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ArgumentError(f"--feature-names {text}: cannot read {text[1:]!r} ({e})") from None
    else:
        names = _list_arg(text)
    if not names:
        raise ArgumentError(f"--feature-names {text!r} holds no names; give a,b,c or @FILE with one name per line")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ArgumentError(f"--feature-names repeats {dup}; every feature needs its own name")
    return tuple(names)


def _name_features(model, args, *, uses_header: bool = True):
    """The model with the features named by ``--feature-names``, or else by DATA's header when the model's own
    names are generic (x0, x1, ...) and the header lines up."""
    from converters.errors import ArgumentError

    header = False if getattr(args, "no_header", False) else None
    names = _header_names(args.data, args.target_column, header) if isinstance(args.data, str) else None
    given = getattr(args, "feature_names", None)
    if given is not None:
        wanted = _feature_names_arg(given)
        if len(getattr(model, "input_names", ()) or ()) > 1:
            raise ArgumentError("--feature-names names the features of a single-input model; this model has "
                                f"{len(model.input_names)} inputs")
        if len(wanted) != model.input_shape[-1]:
            raise ArgumentError(
                f"--feature-names gives {len(wanted)} names; the model's input {tuple(model.input_shape)} has "
                f"{model.input_shape[-1]} features (the last axis)"
            )
        if names and uses_header and tuple(names) != wanted:
            raise ArgumentError(
                f"--feature-names {given!r} differs from the header of {args.data} ({', '.join(names[:5])}"
                f"{', ...' if len(names) > 5 else ''}); the header names the features: drop --feature-names"
            )
        return dataclasses.replace(model, feature_names=wanted)
    generic = tuple(f"x{i}" for i in range(model.n_features)) in (model.feature_names, None)
    if names and generic and len(model.input_shape) == 1 and len(names) == model.n_features:
        return dataclasses.replace(model, feature_names=tuple(names))
    return model


def _header_names(path: str, drop: str | None, header: bool | None = None) -> list[str] | None:
    """Column names of a CSV / Parquet file (read from its header only), without the target column; ``None``
    when the file is not a table, has no header, or its header is pandas' default ``0..n-1``."""
    from jaxsens import _data

    names = _data.header_names(path, header=header)
    return None if names is None else [n for n in names if n != drop]


# ------------------------------------------------------------------------------------ cost, progress
def _print_estimate(spec, model, data, targets, shared, options) -> None:
    """Print ``spec.estimate(call)`` (when the spec offers one) before the run starts."""
    estimate = getattr(spec, "estimate", None)
    if estimate is None:
        return
    value = estimate(_preview_call(spec, model, data, targets, shared, options))
    if value is None:
        return
    if isinstance(value, Mapping):
        seconds = value.get("seconds")
        text = value.get("text") or value.get("description")
        line = f"about {_duration(seconds)}" if isinstance(seconds, numbers.Real) else ""
        line = f"{line} ({text})" if line and text else (line or str(text or ""))
    elif isinstance(value, numbers.Real):
        line = f"about {_duration(value)}"
    else:
        line = str(value)
    if line:
        print(f"{spec.name}: estimated cost {line}", file=sys.stderr)


def _duration(seconds: float) -> str:
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _preview_call(spec, model, data, targets, shared, options):
    """The :class:`jaxsens._method.Call` the run will get (options checked, defaults filled), for ``estimate``."""
    import warnings

    from jaxsens._method import make_call

    with warnings.catch_warnings():  # deprecations are reported by the run itself
        warnings.simplefilter("ignore")
        return make_call(spec, model, data, targets, key=shared.get("key"), outputs=shared.get("outputs"),
                         batch_size=shared.get("batch_size"), nan_policy=shared.get("nan_policy", "raise"),
                         options=options)


class _Progress:
    """``progress(done, total=None)`` for every method: a tqdm bar on stderr with the rate and, once the total is
    known, the ETA. ``done`` that goes back starts a new bar segment (a method's next pass)."""

    def __init__(self, unit: str = " rows"):
        from tqdm import tqdm

        self.bar = tqdm(unit=unit, unit_scale=True, dynamic_ncols=True, file=sys.stderr, smoothing=0.1)

    def __call__(self, done, total=None, *_, **__):
        done = int(done)
        if total is not None and self.bar.total != total:
            self.bar.total = int(total)
            self.bar.refresh()
        if done < self.bar.n:
            self.bar.reset(total=self.bar.total)
        self.bar.update(done - self.bar.n)

    def close(self):
        self.bar.close()


# --------------------------------------------------------------------------------------------- outputs
def _check_writers(args) -> None:
    """The tidy table needs pandas: refuse before computing, not after."""
    from converters.errors import MissingExtraError

    try:
        import pandas  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "importance.csv (the tidy table) needs pandas: pip install 'jaxsens[data]'"
        ) from None


def _report(result, args, seconds: float) -> None:
    rows = result.ranking()
    print(_table_text(rows, args.top, result))
    n = getattr(result, "n_samples", None)
    skipped = getattr(result, "n_skipped", 0)
    extra = f" ({skipped} rows with NaN / Inf skipped)" if skipped else ""
    print(f"{args.method}: {n if n is not None else '-'} samples in {seconds:.2f} s{extra}")
    _write_outputs(result, args)


def _table_text(rows, top: int, result) -> str:
    first = next(iter(result.values())) if isinstance(result, Mapping) else result
    label = getattr(first, "importance_label", "importance")
    lines = [f"importance: {label}; 95% = 1.96 x stderr",
             f"{'rank':>4}  {'feature':<24} {'importance':>12} {'stderr':>10} {'95% interval':>25}"]
    for i, (name, score, err) in enumerate(rows[:top], 1):
        if err is None or not np.isfinite(err):
            err_text, ci = "-", "-"
        else:
            err_text, ci = f"{err:10.4g}", f"[{score - 1.96 * err:.4g}, {score + 1.96 * err:.4g}]"
        lines.append(f"{i:>4}  {name:<24} {score:12.5g} {err_text:>10} {ci:>25}")
    if len(rows) > top:
        lines.append(f"  ... top {top} of {len(rows)}; all in importance.csv")
    return "\n".join(lines)


def _write_outputs(result, args) -> None:
    """importance.json / .csv / .png in ``args.out``, each written atomically (see :mod:`jaxsens._io`)."""
    from converters.errors import ArgumentError
    from jaxsens._io import atomic_write

    written = []
    try:
        os.makedirs(args.out, exist_ok=True)  # already there from the CLI; run_importance may be called directly
        result.save(os.path.join(args.out, "importance.json"))
        written.append("importance.json")
        table = result.to_frame().to_csv(index=False)
        atomic_write(os.path.join(args.out, "importance.csv"), table)
        written.append("importance.csv")
        if not args.no_plot:
            try:
                fig = result.plot(top=args.top, path=os.path.join(args.out, "importance.png"))
                written.append("importance.png")
                import matplotlib.pyplot as plt

                plt.close(fig)
            except ImportError as e:  # MissingExtraError: the plot is optional, the numbers are written
                print(f"(no importance.png: {e})", file=sys.stderr)
    except OSError as e:  # disk full, folder removed meanwhile, ...: the table above was printed
        done = f" (written: {', '.join(written)})" if written else ""
        raise ArgumentError(f"--out {args.out!r}: could not write the results: {e.strerror or e}{done}") from None
    print(f"wrote {', '.join(os.path.join(args.out, w) for w in written)}")
    if getattr(args, "report", None):
        _write_report(result, args)


def _check_report(args) -> None:
    """``--report PATH``: refused before any work when it cannot be written."""
    if getattr(args, "report", None):
        from jaxsens._io import check_output_file

        check_output_file(args.report, option="--report")


def _write_report(result, args) -> None:
    """``--report PATH``: the self-contained HTML report of ``result`` (:mod:`jaxsens._report`), atomically."""
    from converters.errors import ArgumentError
    from jaxsens import examples
    from jaxsens._report import result_report

    meta = {"model": getattr(args, "model", None) or examples.default_model_path(),
            "data": args.data if isinstance(args.data, str) else "(in memory)", "method": args.method}
    try:
        result_report(result, top=max(int(args.top), 1), meta=meta).write(args.report)
    except OSError as e:
        raise ArgumentError(f"--report {args.report!r}: could not write the report: {e.strerror or e}") from None
    print(f"wrote {args.report}")
