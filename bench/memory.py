"""Peak memory of ``jaxsens.jacobian_importance`` streaming a ``.npy`` from disk: it must not grow with N.

Issue 3, item 6: the peak resident set size (RSS) for 1 M and 4 M rows of the seed-000 shape (82 float32 features)
must agree within 10%. Each N runs in a **fresh subprocess** (so one run's allocations, page-ins and compiled code
cannot hide in another's), which reads its own peak with ``resource.getrusage(RUSAGE_SELF).ru_maxrss``::

    python bench/memory.py                    # 1,000,000 and 4,000,000 rows (about 1.3 GB on disk for 4 M)
    python bench/memory.py --quick            # 100,000 and 400,000 rows, a narrower network

The model is the seed-000 architecture, 82 -> 500 -> 500 -> 500 -> 2 (ReLU, softmax), written as a
``jaxsens.Model.from_function`` with seeded weights, so the child imports only JAX and jaxsens (no TensorFlow,
whose import alone is several hundred MB); ``--model PATH`` measures any model file instead (``jaxsens.load_model``).
Data files are generated once into ``bench/results/tmp/`` (git-ignored).

Output: a table and ``bench/results/memory_<tag>.json`` with, per N, the peak RSS, the RSS peak before the call
(imports + model), the time and the data file size, plus the ratio of the largest to the smallest peak.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import TMP_DIR, format_table, machine_info, npy_dataset, result_tag, write_json

N_FEATURES = 82
TARGET = 1.10  # largest peak / smallest peak


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def child(path: str, hidden: int, model_path: str | None) -> dict:
    """Run one ``jacobian_importance`` over ``path`` in this (fresh) process and report its peak RSS."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxsens

    if model_path:
        model = jaxsens.load_model(model_path)
    else:
        sizes = (N_FEATURES, hidden, hidden, hidden, 2)
        rng = np.random.default_rng(0)
        params = [
            (
                rng.standard_normal((a, b), dtype=np.float32) / np.sqrt(a),
                rng.normal(0, 0.1, b).astype(np.float32),
            )
            for a, b in itertools.pairwise(sizes)
        ]

        def apply(p, x):
            for w, b in p[:-1]:
                x = jax.nn.relu(x @ w + b)
            return jax.nn.softmax(x @ p[-1][0] + p[-1][1])

        model = jaxsens.Model.from_function(
            apply, jax.tree.map(jnp.asarray, params), input_shape=(N_FEATURES,)
        )
    before = _peak_rss_bytes()
    t0 = time.perf_counter()
    res = jaxsens.jacobian_importance(model, path)
    seconds = time.perf_counter() - t0
    return {
        "path": path,
        "n_samples": int(res.n_samples),
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_rss_before_call_bytes": before,
        "seconds": seconds,
        "mean_abs_sum": float(np.sum(res.mean_abs)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help="comma-separated row counts (default 1000000,4000000)")
    p.add_argument("--hidden", type=int, default=None, help="hidden width of the synthetic MLP (default 500)")
    p.add_argument(
        "--model", default=None, help="a model file for jaxsens.load_model instead of the synthetic MLP"
    )
    p.add_argument("--quick", action="store_true", help="100k and 400k rows, hidden width 64")
    p.add_argument("--tag", default=None, help="results file tag (default: cpu, or the accelerator kind)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    hidden = args.hidden or (64 if args.quick else 500)
    if args.child:
        print(json.dumps(child(args.child, hidden, args.model)))
        return 0

    sizes = [
        int(s) for s in (args.sizes or ("100000,400000" if args.quick else "1000000,4000000")).split(",")
    ]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        p.error(f"--sizes needs at least two positive row counts, got {args.sizes!r}")
    runs = []
    for n in sizes:
        t0 = time.perf_counter()
        path = npy_dataset(os.path.join(TMP_DIR, f"mem_x_{n}.npy"), n, (N_FEATURES,), seed=0)
        print(
            f"data {os.path.relpath(path)} ({os.path.getsize(path) / 2**20:,.0f} MiB, {time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        cmd = [sys.executable, os.path.abspath(__file__), "--child", path, "--hidden", str(hidden)]
        if args.model:
            cmd += ["--model", args.model]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr, file=sys.stderr)
            raise SystemExit(f"child for N = {n:,d} failed with exit code {proc.returncode}")
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        if run["n_samples"] != n:
            raise SystemExit(f"child for N = {n:,d} saw n_samples = {run['n_samples']}")
        run.update(n=n, file_bytes=os.path.getsize(path), samples_per_second=n / run["seconds"])
        runs.append(run)
        print(
            f"N {n:>11,d}: peak RSS {run['peak_rss_bytes'] / 2**20:8,.0f} MiB "
            f"(before the call {run['peak_rss_before_call_bytes'] / 2**20:,.0f} MiB), {run['seconds']:.1f} s",
            flush=True,
        )

    peaks = [r["peak_rss_bytes"] for r in runs]
    ratio = max(peaks) / min(peaks)
    rows = [
        {
            "n": r["n"],
            "file": r["file_bytes"] / 2**20,
            "before": r["peak_rss_before_call_bytes"] / 2**20,
            "peak": r["peak_rss_bytes"] / 2**20,
            "growth": (r["peak_rss_bytes"] - r["peak_rss_before_call_bytes"]) / 2**20,
            "seconds": r["seconds"],
            "sps": r["samples_per_second"],
        }
        for r in runs
    ]
    print()
    print(
        format_table(
            rows,
            [
                ("n", "N rows", "{:,d}"),
                ("file", "file MiB", "{:,.0f}"),
                ("before", "RSS before call MiB", "{:,.0f}"),
                ("peak", "peak RSS MiB", "{:,.0f}"),
                ("growth", "peak - before MiB", "{:,.0f}"),
                ("seconds", "seconds", "{:.1f}"),
                ("sps", "samples/s", "{:,.0f}"),
            ],
        )
    )
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(f"\npeak RSS ratio largest/smallest = {ratio:.3f} (target <= {TARGET:.2f}): {verdict}")
    payload = {
        "benchmark": "memory",
        "machine": machine_info(),
        "settings": {
            "sizes": sizes,
            "hidden": hidden,
            "model": args.model or f"from_function 82-{hidden}x3-2",
            "n_features": N_FEATURES,
        },
        "runs": runs,
        "peak_ratio": ratio,
        "target_ratio": TARGET,
        "pass": ratio <= TARGET,
    }
    out = write_json(f"memory_{args.tag or result_tag()}.json", payload)
    print(f"wrote {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
