"""The ``jaxsens`` command: parse, call the library, write results. No maths here.

    jaxsens demo                              # the bundled default example, end to end
    jaxsens convert MODEL [--weights W] -o model.onnx
    jaxsens importance MODEL DATA [--method NAME] [--out DIR] [--targets FILE|COLUMN] [method flags]
                                              # `jaxsens importance --help`: the methods and their flags
    jaxsens compare A B [C ...] DATA --out DIR [--method NAME] [--names a,b] [--fail-on-drift T]
                                              # importance per model version (x_structure.json finds
                                              # x_weights.h5); exit status 3 when drift > T
    jaxsens activations MODEL PATTERN --out DIR [--layers a,b] [--row N] [--stats DATA] [--report r.html]
                                              # each layer's output for one pattern as images, architecture.png
    jaxsens info                              # devices, supported ONNX ops, the compilation cache folder
    jaxsens bench [--quick] [--json F] [--compare A.json [B.json]]
                                              # the standard suite on this machine's devices (samples/s,
                                              # TFLOP/s, % of GEMM, float32 / tf32 / bf16) and ratios
    jaxsens --version

Exit status: 0 success; 2 a user error: a bad model, data file, argument or option (any ``JaxsensError``,
including a missing optional package, or a command-line usage error), reported as one line
``jaxsens: error: ...`` on stderr (``--debug`` adds the traceback); 130 interrupted (Ctrl-C), one line; 1 an
internal error: any other exception is a bug in jaxsens and is printed with its traceback and a request to report
it. Outputs are checked (``--out`` a writable folder, locked against a second concurrent run) before anything is
loaded or computed, and written atomically with the user's umask.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

__all__ = ["main"]


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file: .onnx, .keras, .h5, SavedModel folder or legacy *_structure.json")
    p.add_argument("--weights", help="weights .h5 for a legacy Keras JSON structure file")
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="allow Keras Lambda layers / custom objects (they run arbitrary code; only for files you trust)",
    )
    p.add_argument("--output", help="which ONNX output to explain (name or index); default the first float output")
    p.add_argument(
        "--input-shape",
        type=_shape_arg,
        help="shape of one sample, e.g. 10,3, for a model whose file leaves non-batch input axes unknown",
    )


def _shape_arg(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; give positive integers like 10,3")
    return dims


def _load(args):
    import jaxsens

    output = args.output
    if output is not None and output.isdigit():
        output = int(output)
    return jaxsens.load_model(
        args.model, weights=args.weights, safe=not args.unsafe, output=output,
        input_shape=getattr(args, "input_shape", None),
    )


def _cmd_convert(args) -> int:
    from converters.onnx_to_jax.graph import load_onnx_proto
    from jaxsens._io import atomic_write, check_output_file

    check_output_file(args.out, option="-o/--out")  # before the (possibly long) conversion
    if args.model.lower().endswith(".onnx"):
        proto, _ = load_onnx_proto(args.model)
    else:
        from converters.keras import keras_file_to_onnx

        proto = keras_file_to_onnx(args.model, weights=args.weights, safe=not args.unsafe)
    atomic_write(args.out, proto.SerializeToString())
    model = _load(argparse.Namespace(**{**vars(args), "model": args.out, "weights": None}))
    print(f"wrote {args.out}: inputs {model.input_shape} -> outputs {model.output_shape}, {len(model.layer_names)} layers")
    return 0


def _cmd_info(args) -> int:
    import jax

    from converters.onnx_to_jax import supported_ops
    from jaxsens import _cache

    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices: {jax.devices()}")
    print(f"supported ONNX ops ({len(supported_ops(None))}): {', '.join(supported_ops(None))}")
    print(_cache.describe())
    return 0


def _cmd_bench(args) -> int:
    from jaxsens import _bench
    from jaxsens._io import check_output_file

    if args.compare and len(args.compare) > 2:
        raise _UsageError(f"--compare takes one report (to compare this run with) or two (A B), got {len(args.compare)}")
    if args.compare and len(args.compare) == 2:  # no run: B / A of two saved reports
        a, b = (_bench.load_report(path) for path in args.compare)
        print(_bench.format_comparison(a, b, *args.compare))
        return 0
    base = _bench.load_report(args.compare[0]) if args.compare else None  # refused before the run, not after
    if args.json:
        check_output_file(args.json, option="--json")
    report = _bench.run_bench(
        workloads=_names(args.workloads), precisions=_names(args.precision), n=args.n, repeats=args.repeats,
        quick=args.quick, each_device=args.each_device, batch_size=args.batch_size,
    )
    if args.json:
        _bench.write_report(report, args.json)
        print(f"wrote {args.json}")
    if base is not None:
        print(_bench.format_comparison(base, report, args.compare[0], "this run"))
    return 0


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


_NO_CACHE_HELP = ("compile without JAX's persistent compilation cache (default: on, in $JAXSENS_CACHE_DIR or "
                  "~/.cache/jaxsens/jax; JAXSENS_CACHE_DIR=off turns it off for good)")


class _UsageError(Exception):
    """A command-line usage error found by argparse (reported like a JaxsensError: one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error raises instead of printing the usage and exiting, so ``main`` reports it."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxsens")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from jaxsens import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxsens", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--version", action="version", version=f"jaxsens {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--no-cache", action="store_true", help=_NO_CACHE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a model to ONNX once, so later runs need no TensorFlow")
    _add_model_args(p)
    p.add_argument("-o", "--out", required=True, help="output .onnx path")
    p.set_defaults(fn=_cmd_convert)

    p = sub.add_parser("info", help="devices and supported ONNX ops")
    p.set_defaults(fn=_cmd_info)

    p = sub.add_parser("bench", help="the standard suite on this machine's devices: samples/s, TFLOP/s, % of the "
                       "GEMM rate, precision modes (float32 / tensorfloat32 / bfloat16), JSON, --compare")
    p.add_argument("--quick", action="store_true", help="small sizes and one repeat (a smoke test)")
    p.add_argument("--n", type=int, default=None, help="rows of the MLP Jacobian, the other workloads in proportion "
                   "(default 200,000 on CPU, 4,000,000 on an accelerator, 4,096 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per job, median reported (default 3; 1 "
                   "with --quick)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per chunk (default: the engine's choice)")
    p.add_argument("--workloads", default="mlp_jacobian,lstm_jacobian,perturbation,sobol",
                   help="comma-separated (default %(default)s)")
    p.add_argument("--precision", default="float32,tensorfloat32,bfloat16",
                   help="matmul precision modes, comma-separated (default %(default)s; float32 always runs)")
    p.add_argument("--each-device", action="store_true", help="also run each local device alone")
    p.add_argument("--json", metavar="FILE", help="write the report (machine, settings, GEMM rates, rows) as JSON")
    p.add_argument("--compare", nargs="+", metavar="REPORT", help="one report: run, then print this run / that "
                   "report per row; two reports A B: print B / A without running")
    p.set_defaults(fn=_cmd_bench)

    from jaxsens import _cli_compare, _cli_importance, _cli_inside, distributed

    _cli_importance.add_parsers(sub, _add_model_args, _load)
    _cli_compare.add_parsers(sub)
    _cli_inside.add_parsers(sub, _add_model_args, _load)
    for name in ("importance", "compare", "activations"):  # the data commands: --distributed
        distributed.add_arguments(sub.choices[name])
    for p in sub.choices.values():  # `jaxsens importance ... --debug` works too
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
        p.add_argument("--no-cache", action="store_true", default=argparse.SUPPRESS, help=_NO_CACHE_HELP)
    return parser


def _one_line(e: BaseException) -> str:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the ``jaxsens`` command; returns the exit status (see the module docstring).

    ``argv=None`` means the process is the command (``sys.argv``): an interrupt then ends it at once, with status
    130. Called with a list, ``main`` returns every status, 130 included.
    """
    from converters.errors import JaxsensError

    program = argv is None  # the console script / python -m jaxsens.cli, not a call from Python code
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # known before parsing, so usage errors honour it too
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as e:  # --help, --version
            return e.code if isinstance(e.code, int) else 0
        debug = args.debug
        if args.no_cache:  # before anything compiles (import jaxsens turned the cache on: jaxsens/_cache.py)
            from jaxsens import _cache

            _cache.disable("--no-cache")
        start = time.perf_counter()
        code = args.fn(args)
        if os.environ.get("JAXSENS_TIMING"):
            print(f"[{time.perf_counter() - start:.2f} s]", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("jaxsens: interrupted", file=sys.stderr)
        if program:
            # XLA's threads may still be compiling or running the interrupted chunk, and tearing the interpreter
            # down under them can crash (SIGSEGV): end the process here. Outputs are complete or absent (atomic
            # writes) and the --out lock was released on the way out.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except (JaxsensError, _UsageError) as e:
        if debug:
            traceback.print_exc()
        print(f"jaxsens: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - anything else is a bug: say so, with the traceback
        traceback.print_exc()
        print(f"jaxsens: internal error: {type(e).__name__}: {_one_line(e)}\n"
              "This is a bug in jaxsens; please report it with the command line and the traceback above.",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
