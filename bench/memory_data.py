"""Peak memory of the data layer alone: stream every row of x AND targets through ``iter_chunks``.

Issue 11, item 6 (data layer): the readers must hold memory independent of N. For each format and each N, a
**fresh subprocess** opens ``open_xy(data, targets)`` and walks every chunk of ``iter_chunks((x, y),
batch_size=4096)``, then reports its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``):

* ``npy``: ``x.npy`` [N, 82] float32 + ``y.npy`` [N] int64 labels (both streamed with ``readinto``);
* ``csv``: one CSV with a header, 82 feature columns and an integer column ``y`` named as the target
  (pandas ``chunksize``; the target column is read by a second reader with ``usecols``; the row count is a
  line count);
* ``parquet``: the same table in Parquet (pyarrow defaults, row groups of up to 1 Mi rows), target ``y`` by
  name (``iter_batches``).

It also times the CSV line count (:func:`jaxsens._data.csv_row_count`) against one full pass of the reader.
No model runs (the child imports jaxsens, hence JAX, but computes nothing), so the figures are the readers' own.

    python bench/memory_data.py                 # 1,000,000 and 4,000,000 rows
    python bench/memory_data.py --sizes 100000,400000

The CSV rows are one block of 10,000 random rows repeated (writing 4 M distinct rows of text takes minutes and
changes nothing in what is measured). Files go to a temporary folder that is deleted at the end.
Output: a table and ``bench/results/memory_data.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import format_table, machine_info, write_json

N_FEATURES = 82
BATCH = 4096
TARGET = 1.10
FORMATS = ("npy", "csv", "parquet")


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def child(fmt: str, folder: str, n: int) -> dict:
    import numpy as np

    from jaxsens._data import chunk_dtype, csv_row_count, iter_chunks, open_xy

    if fmt == "npy":
        data, targets = os.path.join(folder, f"x_{n}.npy"), os.path.join(folder, f"y_{n}.npy")
    else:
        data, targets = os.path.join(folder, f"d_{n}.{fmt}"), "y"
    before = _peak_rss_bytes()
    t0 = time.perf_counter()
    x, y = open_xy(data, targets, input_shape=(N_FEATURES,))
    open_seconds = time.perf_counter() - t0
    rows, label_sum, x_sum = 0, 0, 0.0
    for chunk in iter_chunks(
        (x, y),
        batch_size=BATCH,
        input_shape=((N_FEATURES,), y.row_shape),
        dtype=(np.float32, chunk_dtype(y.dtype)),
    ):
        rows += chunk.n_valid
        label_sum += int(chunk.xs[1][chunk.mask].sum())
        x_sum += float(chunk.xs[0][chunk.mask, 0].sum())
    seconds = time.perf_counter() - t0
    out = {
        "format": fmt,
        "n": n,
        "rows": rows,
        "n_rows_up_front": x.n_rows,
        "target_dtype": str(y.dtype),
        "label_sum": label_sum,
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_rss_before_bytes": before,
        "open_seconds": open_seconds,
        "seconds": seconds,
    }
    if fmt == "csv":  # the line count alone (cache cleared), vs the whole streamed pass above
        from jaxsens import _data

        _data._csv_row_count.cache_clear()
        t1 = time.perf_counter()
        csv_row_count(data, header=True)
        out["count_seconds"] = time.perf_counter() - t1
    return out


def write_files(folder: str, n: int) -> dict:
    """The three formats for N rows; returns their sizes in bytes."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(N_FEATURES)]
    sizes = {}
    # .npy, written block by block through a memory map of the new file (bounded memory here too)
    x_path, y_path = os.path.join(folder, f"x_{n}.npy"), os.path.join(folder, f"y_{n}.npy")
    xm = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32, shape=(n, N_FEATURES))
    ym = np.lib.format.open_memmap(y_path, mode="w+", dtype=np.int64, shape=(n,))
    step = 250_000
    for s in range(0, n, step):
        m = min(step, n - s)
        xm[s : s + m] = rng.standard_normal((m, N_FEATURES), dtype=np.float32)
        ym[s : s + m] = rng.integers(0, 2, m)
    xm.flush(), ym.flush()
    del xm, ym
    sizes["npy"] = os.path.getsize(x_path) + os.path.getsize(y_path)
    # CSV: one block of rows repeated
    block = pd.DataFrame(rng.standard_normal((10_000, N_FEATURES), dtype=np.float32), columns=names)
    block["y"] = rng.integers(0, 2, len(block))
    head, body = block.to_csv(index=False, float_format="%.7g").split("\n", 1)
    body_b = body.encode()
    csv_path = os.path.join(folder, f"d_{n}.csv")
    with open(csv_path, "wb") as f:
        f.write(head.encode() + b"\n")
        full, rest = divmod(n, len(block))
        f.writelines(body_b for _ in range(full))
        if rest:
            f.write(b"".join(body_b.splitlines(keepends=True)[:rest]))
    sizes["csv"] = os.path.getsize(csv_path)
    # Parquet: written by slices of 250k rows into one file (default row group size)
    pq_path = os.path.join(folder, f"d_{n}.parquet")
    schema = pa.schema([(c, pa.float32()) for c in names] + [("y", pa.int64())])
    with pq.ParquetWriter(pq_path, schema) as w:
        for s in range(0, n, step):
            m = min(step, n - s)
            cols = {c: rng.standard_normal(m, dtype=np.float32) for c in names}
            cols["y"] = rng.integers(0, 2, m)
            w.write_table(pa.table(cols, schema=schema), row_group_size=1 << 20)
    sizes["parquet"] = os.path.getsize(pq_path)
    return sizes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000000,4000000", help="comma-separated row counts")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--tmp", default=None, help="folder for the data files (default: a new temporary folder)")
    p.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    p.add_argument("--write", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.write:
        print(json.dumps(write_files(args.write[0], int(args.write[1]))))
        return 0
    if args.child:
        fmt, folder, n = args.child
        print(json.dumps(child(fmt, folder, int(n))))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    formats = [f for f in args.formats.split(",") if f]
    folder = tempfile.mkdtemp(prefix="jaxsens_memory_data_", dir=args.tmp)
    runs = []
    try:
        for n in sizes:
            t0 = time.perf_counter()
            # in a subprocess too: Linux keeps a parent's peak RSS in a child's ru_maxrss across fork + exec,
            # so this process must stay small
            cmd = [sys.executable, os.path.abspath(__file__), "--write", folder, str(n)]
            file_sizes = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            print(f"N {n:,d}: files written in {time.perf_counter() - t0:.0f} s "
                  f"({', '.join(f'{k} {v / 2**20:,.0f} MiB' for k, v in file_sizes.items())})", flush=True)  # fmt: skip
            for fmt in formats:
                cmd = [sys.executable, os.path.abspath(__file__), "--child", fmt, folder, str(n)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    print(proc.stdout + proc.stderr, file=sys.stderr)
                    raise SystemExit(f"child {fmt} N={n} failed with exit code {proc.returncode}")
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                if run["rows"] != n or run["n_rows_up_front"] != n:
                    raise SystemExit(
                        f"child {fmt} N={n} saw {run['rows']} rows ({run['n_rows_up_front']} up front)"
                    )
                run["file_bytes"] = file_sizes[fmt]
                runs.append(run)
                print(
                    f"  {fmt:8s} peak RSS {run['peak_rss_bytes'] / 2**20:8,.0f} MiB, {run['seconds']:.1f} s",
                    flush=True,
                )
            for name in os.listdir(folder):  # free the disk before the next size
                os.remove(os.path.join(folder, name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    ratios = {}
    for fmt in formats:
        peaks = [r["peak_rss_bytes"] for r in runs if r["format"] == fmt]
        ratios[fmt] = max(peaks) / min(peaks)
    rows = [
        {
            "fmt": r["format"],
            "n": r["n"],
            "file": r["file_bytes"] / 2**20,
            "before": r["peak_rss_before_bytes"] / 2**20,
            "peak": r["peak_rss_bytes"] / 2**20,
            "seconds": r["seconds"],
            "rps": r["n"] / r["seconds"],
            "count": r.get("count_seconds", float("nan")),
        }
        for r in runs
    ]
    print()
    print(
        format_table(
            rows,
            [
                ("fmt", "format", "{}"),
                ("n", "N rows", "{:,d}"),
                ("file", "file MiB", "{:,.0f}"),
                ("before", "RSS after imports MiB", "{:,.0f}"),
                ("peak", "peak RSS MiB", "{:,.0f}"),
                ("seconds", "stream s", "{:.1f}"),
                ("rps", "rows/s", "{:,.0f}"),
                ("count", "CSV line count s", "{:.2f}"),
            ],
        )
    )
    for fmt, ratio in ratios.items():
        print(f"{fmt:8s} peak RSS ratio largest/smallest N = {ratio:.3f} (target <= {TARGET:.2f}): "
              f"{'PASS' if ratio <= TARGET else 'MISS'}")  # fmt: skip
    payload = {
        "benchmark": "memory_data",
        "machine": machine_info(),
        "settings": {"sizes": sizes, "formats": formats, "n_features": N_FEATURES, "batch_size": BATCH},
        "runs": runs,
        "peak_ratio": ratios,
        "target_ratio": TARGET,
        "pass": all(r <= TARGET for r in ratios.values()),
    }
    out = write_json("memory_data.json", payload)
    print(f"wrote {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
