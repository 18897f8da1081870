"""The ``jaxsens`` command: parse, call the library, write results. No maths here.

    jaxsens demo                              # the bundled default example, end to end
    jaxsens convert MODEL [--weights W] -o model.onnx
    jaxsens importance MODEL DATA [--method jacobian] [--out DIR] [--batch-size N] [--outputs 0,1]
    jaxsens info                              # devices and supported ONNX ops
    jaxsens bench [--n 200000]                # Jacobian throughput of this machine vs hand-written JAX
"""

from __future__ import annotations

import argparse
import os
import sys
import time

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


def _load(args):
    import jaxsens

    output = args.output
    if output is not None and output.isdigit():
        output = int(output)
    return jaxsens.load_model(args.model, weights=args.weights, safe=not args.unsafe, output=output)


def _cmd_convert(args) -> int:
    from converters.onnx_to_jax.graph import load_onnx_proto

    if args.model.lower().endswith(".onnx"):
        proto, _ = load_onnx_proto(args.model)
    else:
        from converters.keras import keras_file_to_onnx

        proto = keras_file_to_onnx(args.model, weights=args.weights, safe=not args.unsafe)
    _atomic_write_bytes(args.out, proto.SerializeToString())
    model = _load(argparse.Namespace(**{**vars(args), "model": args.out, "weights": None}))
    print(f"wrote {args.out}: inputs {model.input_shape} -> outputs {model.output_shape}, {len(model.layer_names)} layers")
    return 0


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _cmd_info(args) -> int:
    import jax

    from converters.onnx_to_jax import supported_ops

    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices: {jax.devices()}")
    print(f"supported ONNX ops ({len(supported_ops(None))}): {', '.join(supported_ops(None))}")
    return 0


def _cmd_bench(args) -> int:
    from jaxsens._bench import run_bench

    run_bench(n=args.n, repeats=args.repeats, batch_size=args.batch_size)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxsens", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a model to ONNX once, so later runs need no TensorFlow")
    _add_model_args(p)
    p.add_argument("-o", "--out", required=True, help="output .onnx path")
    p.set_defaults(fn=_cmd_convert)

    p = sub.add_parser("info", help="devices and supported ONNX ops")
    p.set_defaults(fn=_cmd_info)

    p = sub.add_parser("bench", help="Jacobian throughput on this machine's devices vs hand-written JAX")
    p.add_argument("--n", type=int, default=200_000, help="rows (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(fn=_cmd_bench)

    from jaxsens import _cli_importance

    _cli_importance.add_parsers(sub, _add_model_args, _load)

    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        code = args.fn(args)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as e:
        print(f"jaxsens {args.command}: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("JAXSENS_TIMING"):
        print(f"[{time.perf_counter() - start:.2f} s]", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
