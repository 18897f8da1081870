"""Cost of ``--checkpoint-every`` and time saved by ``--resume`` (issue 14 item 2), on the seed-000 architecture.

    python bench/checkpoint.py [--rows 2000000] [--every 50] [--repeats 3] [--kill-at 0.4]

The model has the seed-000 MLP's shape (82 -> 500 x3 -> 2 softmax; seeded N(0, 1/fan_in) weights written as ONNX,
so no TensorFlow is needed: the cost depends on the shapes only), the data are ``--rows`` rows of a ``.npy``.

1. Overhead: ``jaxsens importance MODEL DATA --quiet --no-plot`` with and without ``--checkpoint-every N``,
   interleaved, ``--repeats`` each; rows/s is rows over the in-run time the command prints (``... samples in T s``:
   model loading and process start excluded, identical for both).
2. Resume: one run with ``--checkpoint-every N`` SIGKILLed once the checkpoint says ``--kill-at`` of the chunks are
   folded, then ``--resume``: the resumed run's wall time (process start included) against an uninterrupted run's,
   and the results compared bit for bit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def build_model(path: str) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes = [82, 500, 500, 500, 2]
    nodes, inits, x = [], [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        bias = (0.1 * rng.normal(size=b)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
        ]
        last = i == len(sizes) - 2
        nodes.append(
            helper.make_node(
                "Softmax" if last else "Relu",
                [f"a{i}"],
                ["y" if last else f"h{i}"],
                **({"axis": -1} if last else {}),
            )
        )
        x = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "seed000_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 82])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jaxsens.cli", "importance", *args, "--quiet", "--no-plot"]


def timed_run(argv: list[str]) -> tuple[float, float, float]:
    """(in-run seconds printed by the command, wall seconds of the process, CPU seconds of the process)."""
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    inner = float(re.search(r"samples in ([0-9.]+) s", proc.stdout).group(1))
    return inner, wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3, help="overhead repeats (0: only the resume part)")
    ap.add_argument("--kill-at", type=float, default=0.4)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="jaxsens-ckpt-bench-")
    model, data = os.path.join(tmp, "mlp.onnx"), os.path.join(tmp, "x.npy")
    build_model(model)
    np.save(data, np.random.default_rng(1).normal(size=(args.rows, 82)).astype(np.float32))

    times: dict[str, list[tuple[float, float]]] = {"none": [], "checkpoint": []}
    for r in range(args.repeats):  # interleaved
        for kind, seconds in times.items():
            out = os.path.join(tmp, f"{kind}-{r}")
            extra = ["--checkpoint-every", str(args.every)] if kind == "checkpoint" else []
            inner, _, cpu = timed_run(cli(model, data, "--out", out, *extra))
            seconds.append((inner, cpu))
            print(f"repeat {r} {kind:>10s}: {args.rows / inner:,.0f} rows/s ({inner:.2f} s in the run; "
                  f"{cpu:.2f} CPU s for the process)", flush=True)
    for i, what in enumerate(("in-run wall time", "process CPU time") if args.repeats else ()):
        med = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
        print(f"median {what}: none {med['none']:.2f} s, --checkpoint-every {args.every} {med['checkpoint']:.2f} s "
              f"(overhead {100 * (med['checkpoint'] / med['none'] - 1):+.1f}%)")

    # resume after a kill at --kill-at of the chunks
    _, full_wall, _ = timed_run(cli(model, data, "--out", os.path.join(tmp, "full")))
    out = os.path.join(tmp, "killed")
    argv = cli(model, data, "--out", out, "--checkpoint-every", str(args.every))
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = os.path.join(out, ".checkpoint", "p0-call0000.npz")
    batch = None
    while proc.poll() is None:
        try:
            with np.load(ckpt, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError):
            time.sleep(0.02)
            continue
        batch = int(meta["fingerprint"]["batch_size"])
        if meta["rows"] >= args.kill_at * args.rows:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    killed_wall = time.perf_counter() - start
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    done = meta["rows"]
    start = time.perf_counter()
    subprocess.run([*argv, "--resume"], capture_output=True, text=True, check=True)
    resumed_wall = time.perf_counter() - start
    same = (
        pathlib.Path(out, "importance.json").read_bytes()
        == pathlib.Path(tmp, "full", "importance.json").read_bytes()
    )
    print(
        f"killed at {done:,} of {args.rows:,} rows ({100 * done / args.rows:.0f}%, batch {batch}) after "
        f"{killed_wall:.1f} s; resumed run {resumed_wall:.1f} s vs an uninterrupted run {full_wall:.1f} s "
        f"(saved {full_wall - resumed_wall:.1f} s); importance.json identical: {same}"
    )


if __name__ == "__main__":
    main()
