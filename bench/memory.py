"""Peak memory of every streaming method, for every data format: it must not grow with the number of rows N.

Issue 11, item 6: for each method of :func:`jaxsens.methods` that reads data and does not retrain
(``spec.needs_data`` and ``spec.family != "retraining"``; methods that hold a bounded sample, e.g. permutation's
blocks, are measured too: their ``spec.memory`` says what they hold), for each format and for two row counts
(1 M and 4 M rows of the seed-000 shape, 82 float32 features), a **fresh subprocess** runs the method once and
reads its own peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). The peak for 4 M rows over
the peak for 1 M rows must be at most 1.10 per (method, format)::

    nice -n 10 python bench/memory.py              # 1,000,000 and 4,000,000 rows (about 10 GB of files)
    python bench/memory.py --quick                 # 100,000 and 400,000 rows, for development
    python bench/memory.py --quick --methods jacobian,permutation --formats npy,parquet-column

Formats (``--formats``):

* ``npy``: ``x.npy`` [N, 82] float32, streamed; targets (when the method reads them) in ``y.npy`` [N] int64;
* ``csv``: ``x.csv`` with a header ``f0..f81``; targets in ``y.csv`` (one column ``y``);
* ``parquet``: ``x.parquet`` (row groups of 1 Mi rows, the pyarrow / pandas default); targets in ``y.parquet``;
* ``parquet-column``: one ``xy.parquet`` holding the features and ``y``, targets given by column name (``"y"``);
  only for methods that read targets.

Targets are given when ``spec.needs_targets`` or ``spec.uses_targets``: class labels ``y = [x0 + x1 > 0]``,
matching the model, a small softmax classifier 82 -> 32 -> 32 -> 2 (``jaxsens.dense_model``, seeded weights,
feature names ``f0..f81``), so that compute stays cheap: memory is about data handling. The shared options
that only multiply the work (:data:`REDUCED`: ``n_repeats``, ``n_draws`` set to 1, ``levels`` cut to its first
value) are reduced wherever a spec declares them; every other option keeps its default (``--default-options`` keeps all defaults).

The rows of the CSV files are the first 65,536 rows of ``x.npy`` repeated (formatting 4 M distinct rows of text
takes many minutes and changes nothing in what is measured); ``.npy`` and Parquet hold the same N distinct rows.
Files are generated once into ``bench/results/tmp/`` (git-ignored) and reused. Each child also records the
current RSS at every progress report (``rss_trace``: rows done, MiB), which tells a reader-side or
accumulating growth (RSS climbing with the rows done) from a one-off allocation at open / prepare time.

Runs go cheapest first: the smallest N of every method on the first format, then the other formats, then the
larger N, each batch sorted by an estimate from the method's smallest-N run; a run estimated to end past
``--budget-minutes`` (default 40 for the full run) is skipped and listed as such. Output: a table, the 4M/1M ratio per (method, format) with PASS / FAIL,
and ``bench/results/memory_<tag>.json`` (rewritten after every run, so a crash keeps what was measured).
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
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's jaxsens

from _common import TMP_DIR, format_table, npy_dataset, write_json

N_FEATURES = 82
TARGET = 1.10  # peak RSS at the largest N / peak RSS at the smallest N, per (method, format)
FORMATS = ("npy", "csv", "parquet", "parquet-column")
CSV_BLOCK = 65_536  # rows of x.npy repeated in the CSV files
PARQUET_GROUP = 1 << 20  # rows per Parquet row group: pyarrow's (and pandas') default
TRACE_POINTS = 40  # RSS samples per run, at most


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------------------------------ files
def _paths(n: int) -> dict[str, str]:
    p = lambda name: os.path.join(TMP_DIR, name)
    return {
        "x.npy": p(f"mem_x_{n}.npy"),
        "y.npy": p(f"mem_y_{n}.npy"),
        "x.csv": p(f"mem_x_{n}.csv"),
        "y.csv": p(f"mem_y_{n}.csv"),
        "x.parquet": p(f"mem_x_{n}.parquet"),
        "y.parquet": p(f"mem_y_{n}.parquet"),
        "xy.parquet": p(f"mem_xy_{n}.parquet"),
    }


def _sources(fmt: str, n: int, with_targets: bool) -> tuple[str, str | None]:
    """``(data, targets)`` as given to the method for this format."""
    paths = _paths(n)
    if fmt == "parquet-column":
        return paths["xy.parquet"], "y"
    ext = {"npy": "npy", "csv": "csv", "parquet": "parquet"}[fmt]
    return paths[f"x.{ext}"], (paths[f"y.{ext}"] if with_targets else None)


def _labels(xs):
    import numpy as np

    return (xs[:, 0] + xs[:, 1] > 0).astype(np.int64)


def write_files(n: int, formats: list[str]) -> dict[str, int]:
    """Create (once) the files the formats need for ``n`` rows; return their sizes in bytes."""
    import numpy as np

    paths = _paths(n)
    names = [f"f{i}" for i in range(N_FEATURES)]
    npy_dataset(paths["x.npy"], n, (N_FEATURES,), seed=0)  # reused when it exists (block by block)
    x = np.load(paths["x.npy"], mmap_mode="r")
    step = 1 << 18

    def done(path):  # files are written to .part and renamed: an existing file is complete
        return os.path.exists(path)

    if not done(paths["y.npy"]):
        y = np.lib.format.open_memmap(paths["y.npy"] + ".part.npy", mode="w+", dtype=np.int64, shape=(n,))
        for s in range(0, n, step):
            y[s : s + step] = _labels(np.asarray(x[s : s + step]))
        y.flush()
        del y
        os.replace(paths["y.npy"] + ".part.npy", paths["y.npy"])
    if "csv" in formats and not (done(paths["x.csv"]) and done(paths["y.csv"])):
        block = np.asarray(x[:CSV_BLOCK])
        body = "\n".join(",".join(f"{v:.7g}" for v in row) for row in block.tolist()).encode() + b"\n"
        ybody = "\n".join(str(v) for v in _labels(block).tolist()).encode() + b"\n"
        for path, head, text in ((paths["x.csv"], ",".join(names), body), (paths["y.csv"], "y", ybody)):
            with open(path + ".part", "wb") as f:
                f.write(head.encode() + b"\n")
                full, rest = divmod(n, len(block))
                f.writelines(text for _ in range(full))
                if rest:
                    f.write(b"".join(text.splitlines(keepends=True)[:rest]))
            os.replace(path + ".part", path)
    if {"parquet", "parquet-column"} & set(formats):
        import pyarrow as pa
        import pyarrow.parquet as pq

        y = np.load(paths["y.npy"], mmap_mode="r")
        jobs = []
        if "parquet" in formats:
            jobs += [(paths["x.parquet"], True, False), (paths["y.parquet"], False, True)]
        if "parquet-column" in formats:
            jobs += [(paths["xy.parquet"], True, True)]
        for path, with_x, with_y in jobs:
            if done(path):
                continue
            fields = [(c, pa.float32()) for c in names] if with_x else []
            schema = pa.schema(fields + ([("y", pa.int64())] if with_y else []))
            with pq.ParquetWriter(path + ".part", schema) as w:
                for s in range(0, n, PARQUET_GROUP):
                    cols = {}
                    if with_x:
                        block = np.asarray(x[s : s + PARQUET_GROUP])
                        cols.update({c: block[:, i] for i, c in enumerate(names)})
                    if with_y:
                        cols["y"] = np.asarray(y[s : s + PARQUET_GROUP])
                    w.write_table(pa.table(cols, schema=schema), row_group_size=PARQUET_GROUP)
            os.replace(path + ".part", path)
    return {k: os.path.getsize(v) for k, v in paths.items() if os.path.exists(v)}


# ------------------------------------------------------------------------------------------------------ specs
def _type_name(t) -> str:
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))


def list_methods() -> list[dict]:
    """The table rows this benchmark reads (JSON-friendly)."""
    import jaxsens

    rows = []
    for name, spec in jaxsens.methods().items():
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "needs_data": bool(spec.needs_data),
                "needs_targets": bool(spec.needs_targets),
                "uses_targets": bool(spec.uses_targets),
                "random": bool(spec.random),
                "memory": spec.memory,
                "options": [
                    {
                        "name": o.name,
                        "type": _type_name(o.type),
                        "default": o.default
                        if isinstance(o.default, bool | int | float | str | None)
                        else repr(o.default),
                        "minimum": o.minimum,
                        "value": list(o.default) if isinstance(o.default, tuple) else None,
                    }
                    for o in spec.options
                ],
            }
        )
    return rows


def streams(row: dict) -> bool:
    return row["needs_data"] and row["family"] != "retraining"


def reads_targets(row: dict) -> bool:
    return row["needs_targets"] or row["uses_targets"]


REDUCED = {"n_repeats": 1, "n_draws": 1, "levels": 1, "features": 2}
"""Shared option names (one meaning across methods, see the method protocol) that multiply the work without
changing what a method reads per row: counts set to this value, sequences cut to this many values (the first;
``features``: the first feature names), wherever a spec declares them."""


def cheap_options(row: dict) -> dict:
    """The options of :data:`REDUCED` this spec declares, within their declared minimum."""
    out = {}
    for o in row["options"]:
        if o["name"] not in REDUCED:
            continue
        if o["type"] == "int":
            value = max(REDUCED[o["name"]], int(o["minimum"] or 0))
            if o["default"] != value:
                out[o["name"]] = value
        elif o["type"] == "floats" and isinstance(o["value"], list) and len(o["value"]) > REDUCED[o["name"]]:
            out[o["name"]] = o["value"][: REDUCED[o["name"]]]
        elif o["type"] == "names" and o["default"] is None:  # all features by default
            out[o["name"]] = [f"f{i}" for i in range(REDUCED[o["name"]])]
    return out


# ------------------------------------------------------------------------------------------------------ child
def make_model(hidden: int):
    import numpy as np

    import jaxsens

    rng = np.random.default_rng(0)
    sizes = (N_FEATURES, hidden, hidden, 2)
    layers = [
        {
            "W": rng.standard_normal((a, b), dtype=np.float32) / np.sqrt(a),
            "b": rng.normal(0, 0.1, b).astype(np.float32),
        }
        for a, b in itertools.pairwise(sizes)
    ]
    return jaxsens.dense_model(
        layers,
        ["relu", "relu", "softmax"],
        feature_names=[f"f{i}" for i in range(N_FEATURES)],
        output_names=["p0", "p1"],
    )


def child(method: str, fmt: str, n: int, hidden: int, options: dict) -> dict:
    """Run ``method`` once over the ``fmt`` files of ``n`` rows in this (fresh) process; report its memory."""
    import numpy as np

    import jaxsens

    spec = jaxsens.methods()[method]
    model = make_model(hidden)
    data, targets = _sources(fmt, n, spec.needs_targets or spec.uses_targets)
    trace: list[tuple[int, float]] = []
    first: list = []

    def progress(done, total):
        if done is None:
            return
        rss = _current_rss_bytes()
        if rss is None:
            return
        if not first:
            first.append((int(done), rss))
        step = max(1, (total or n) // TRACE_POINTS)
        if not trace or done - trace[-1][0] >= step:
            trace.append((int(done), rss / 2**20))

    before = _peak_rss_bytes()
    rss_before = _current_rss_bytes()
    t0 = time.perf_counter()
    res = spec.function(model, data, targets, progress=progress, **options)
    seconds = time.perf_counter() - t0
    rss_end = _current_rss_bytes()
    importance = np.asarray(res.importance, np.float64)
    return {
        "method": method,
        "format": fmt,
        "n": n,
        "data": data,
        "targets": targets,
        "options": options,
        "n_samples": int(getattr(res, "n_samples", -1)),
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_rss_before_call_bytes": before,
        "rss_before_call_bytes": rss_before,
        "rss_at_first_progress_bytes": first[0][1] if first else None,
        "rows_at_first_progress": first[0][0] if first else None,
        "rss_after_call_bytes": rss_end,
        "rss_trace_mib": trace,
        "seconds": seconds,
        "importance_sum": float(np.nansum(np.abs(importance))),
        "finite": bool(np.all(np.isfinite(importance))),
    }


# ------------------------------------------------------------------------------------------------------ parent
def _run_json(cmd: list[str]) -> tuple[dict | list | None, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return None, (proc.stdout + proc.stderr)[-3000:], wall
    return json.loads(proc.stdout.strip().splitlines()[-1]), "", wall


def _mib(b):
    return None if b is None else b / 2**20


def _summary(runs: list[dict], sizes: list[int]) -> list[dict]:
    small, large = min(sizes), max(sizes)
    out = []
    keys = list(dict.fromkeys((r["method"], r["format"]) for r in runs))
    for method, fmt in keys:
        by_n = {r["n"]: r for r in runs if (r["method"], r["format"]) == (method, fmt)}
        a, b = by_n.get(small), by_n.get(large)
        row = {"method": method, "format": fmt}
        for tag, r in (("small", a), ("large", b)):
            row[tag] = _mib(r["peak_rss_bytes"]) if r is not None and "peak_rss_bytes" in r else None
            row[tag + "_status"] = None if r is None else r.get("status", "ok")
        if row["small"] and row["large"]:
            row["ratio"] = row["large"] / row["small"]
            row["verdict"] = "PASS" if row["ratio"] <= TARGET else "FAIL"
        else:
            row["ratio"] = None
            row["verdict"] = next(
                (s for s in (row["large_status"], row["small_status"]) if s and s != "ok"), "-"
            )
        out.append(row)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help="comma-separated row counts (default 1000000,4000000)")
    p.add_argument("--quick", action="store_true", help="100,000 and 400,000 rows")
    p.add_argument(
        "--methods", default=None, help="comma-separated method names (default: every streaming method)"
    )
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of {','.join(FORMATS)}")
    p.add_argument(
        "--hidden", type=int, default=32, help="hidden width of the 82 -> h -> h -> 2 model (default 32)"
    )
    p.add_argument("--default-options", action="store_true", help="keep every option at its default")
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="skip large-N runs estimated to end past this (default 40 for the full run, none --quick)",
    )
    p.add_argument(
        "--resume", default=None, help="a results JSON whose measured runs (same settings) are reused"
    )
    p.add_argument(
        "--tag",
        default=None,
        help="results file tag: memory_<tag>.json (default cpu; --quick writes bench/results/tmp/)",
    )
    p.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    p.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--write", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--list", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--machine", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    if args.list:
        print(json.dumps(list_methods()))
        return 0
    if args.machine:
        from _common import machine_info

        print(json.dumps(machine_info()))
        return 0
    if args.write is not None:
        print(json.dumps(write_files(args.write, formats)))
        return 0
    if args.child:
        method, fmt, n = args.child
        print(json.dumps(child(method, fmt, int(n), args.hidden, json.loads(args.options))))
        return 0

    # The parent stays small (no JAX, no pandas): Linux carries the parent's RSS high-water mark into a child's
    # ru_maxrss across fork + exec, so every import and the file writing happen in subprocesses.
    start = time.perf_counter()
    bad = sorted(set(formats) - set(FORMATS))
    if bad:
        p.error(f"--formats: unknown {bad}; choose from {list(FORMATS)}")
    sizes = sorted(
        int(s) for s in (args.sizes or ("100000,400000" if args.quick else "1000000,4000000")).split(",")
    )
    if len(sizes) < 2 or sizes[0] < 1:
        p.error(f"--sizes needs at least two positive row counts, got {args.sizes!r}")
    budget = args.budget_minutes if args.budget_minutes is not None else (None if args.quick else 40.0)
    me = [sys.executable, os.path.abspath(__file__), "--hidden", str(args.hidden)]
    table, err, _ = _run_json([*me, "--list"])
    if table is None:
        raise SystemExit(f"could not read jaxsens.methods():\n{err}")
    rows = [r for r in table if streams(r)]
    skipped_methods = {
        r["name"]: f"not streaming (family {r['family']}, needs_data={r['needs_data']})"
        for r in table
        if not streams(r)
    }
    if args.methods:
        wanted = [m for m in args.methods.split(",") if m]
        unknown = sorted(set(wanted) - {r["name"] for r in table})
        if unknown:
            p.error(f"--methods: unknown {unknown}; the table has {[r['name'] for r in table]}")
        rows = [r for r in rows if r["name"] in wanted]
    print(
        f"methods: {', '.join(r['name'] for r in rows)}  (not measured: {skipped_methods or 'none'})",
        flush=True,
    )

    runs: list[dict] = []
    if args.resume:  # measured runs of a previous invocation with the same settings and options
        try:
            with open(args.resume) as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            p.error(f"--resume {args.resume!r}: {e}")
        same = old.get("settings", {}).get("hidden") == args.hidden
        by_name = {r["name"]: r for r in rows}
        runs += [
            r
            for r in old.get("runs", [])
            if same
            and r.get("status") == "ok"
            and r["method"] in by_name
            and r["format"] in formats
            and r["n"] in sizes
            and r.get("options") == ({} if args.default_options else cheap_options(by_name[r["method"]]))
        ]
        print(f"reusing {len(runs)} runs of {args.resume}", flush=True)

    def reused(row, fmt, n):
        return any((r["method"], r["format"], r["n"]) == (row["name"], fmt, n) for r in runs)

    file_bytes: dict[int, dict] = {}
    settings = {
        "sizes": sizes,
        "formats": formats,
        "hidden": args.hidden,
        "model": f"dense_model 82-{args.hidden}-{args.hidden}-2 relu/relu/softmax",
        "n_features": N_FEATURES,
        "csv_block_rows": CSV_BLOCK,
        "parquet_row_group": PARQUET_GROUP,
        "budget_minutes": budget,
        "command": " ".join(["python", "bench/memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "nice": os.nice(0),
    }

    def save(final=False):
        payload = {
            "benchmark": "memory",
            "complete": final,
            "settings": settings,
            "methods": {
                r["name"]: {k: r[k] for k in ("family", "needs_targets", "uses_targets", "memory")}
                | {"options_used": cheap_options(r) if not args.default_options else {}}
                for r in rows
            },
            "not_measured": skipped_methods,
            "file_bytes": file_bytes,
            "runs": runs,
            "summary": _summary(runs, sizes),
            "target_ratio": TARGET,
        }
        if final:
            payload["machine"] = _run_json([*me, "--machine"])[0]  # imports JAX: in a child
        if args.quick and args.tag is None:  # development runs stay out of the committed results
            return write_json("memory_quick.json", payload, directory=TMP_DIR)
        return write_json(f"memory_{args.tag or 'cpu'}.json", payload)

    pairs = [(row, fmt) for row in rows for fmt in formats if fmt != "parquet-column" or reads_targets(row)]

    def measure(row, fmt, n):
        rec = {"method": row["name"], "format": fmt, "n": n}
        options = {} if args.default_options else cheap_options(row)
        cmd = [*me, "--child", row["name"], fmt, str(n), "--options", json.dumps(options)]
        res, err, wall = _run_json(cmd)
        if res is None:
            last = err.strip().splitlines()[-1] if err.strip() else "no output"
            rec.update(status="error", error=err, wall_seconds=wall)
            runs.append(rec)
            print(f"  {row['name']:20s} {fmt:15s} N {n:>10,d}: FAILED: {last}", flush=True)
        else:
            res.update(wall_seconds=wall, rows_per_second=n / res["seconds"], status="ok")
            if res["n_samples"] not in (n, -1):
                res["status"] = f"saw n_samples = {res['n_samples']}"
            runs.append(res)
            print(
                f"  {row['name']:20s} {fmt:15s} N {n:>10,d}: peak {_mib(res['peak_rss_bytes']):7,.0f} MiB "
                f"(before the call {_mib(res['peak_rss_before_call_bytes']):,.0f}), {res['seconds']:7.1f} s",
                flush=True,
            )
        save()

    for n in sizes:  # every file first: their writing time is not in the budget's estimates
        t0 = time.perf_counter()
        sizes_n, err, _ = _run_json([*me, "--formats", ",".join(formats), "--write", str(n)])
        if sizes_n is None:
            raise SystemExit(f"writing the files for N = {n:,d} failed:\n{err}")
        file_bytes[n] = sizes_n
        print(f"N {n:,d}: files ready in {time.perf_counter() - t0:.0f} s", flush=True)

    # Cheapest first, while the budget allows: the smallest N of each method on the first format (its rate);
    # then the other formats at the smallest N, then each larger N, each batch sorted by its estimate (the
    # same method's smallest-N run scaled by rows, plus its fixed cost: start, imports, compiling).
    def estimate(row, fmt, n):
        done = [r for r in runs if r["method"] == row["name"] and r["n"] == sizes[0] and r["status"] == "ok"]
        same = [r for r in done if r["format"] == fmt] or done
        if not same:
            return None
        r = same[0]
        return (r["wall_seconds"] - r["seconds"]) + r["seconds"] * n / sizes[0]

    def batch(todo):
        planned = sorted(((estimate(row, fmt, n), row, fmt, n) for row, fmt, n in todo),
                         key=lambda t: (t[0] is not None, t[0] or 0))  # fmt: skip
        for seconds, row, fmt, n in planned:
            elapsed = time.perf_counter() - start
            if budget is not None and seconds is not None and elapsed + seconds > budget * 60:
                runs.append({"method": row["name"], "format": fmt, "n": n, "status": "skipped (budget)",
                             "estimate_seconds": seconds})  # fmt: skip
                print(f"  {row['name']:20s} {fmt:15s} N {n:>10,d}: skipped: estimated {seconds:.0f} s, "
                      f"{elapsed / 60:.0f} of {budget:.0f} min spent", flush=True)  # fmt: skip
                continue
            measure(row, fmt, n)

    first = formats[0]
    batch([(row, fmt, sizes[0]) for row, fmt in pairs if fmt == first and not reused(row, fmt, sizes[0])])
    for n in sizes[1:]:  # every method on the first format at every N
        batch([(row, first, n) for row, fmt in pairs if fmt == first and not reused(row, fmt, n)])
    # then the other formats, pair by pair (all N together), cheapest pair first
    rest = [(row, fmt) for row, fmt in pairs if fmt != first]
    rest.sort(key=lambda p: estimate(*p, sum(sizes)) or 0)
    for row, fmt in rest:
        for n in sizes:
            if not reused(row, fmt, n):
                batch([(row, fmt, n)])

    table_rows = [
        {
            "method": r["method"],
            "format": r["format"],
            "n": r["n"],
            "before": _mib(r.get("peak_rss_before_call_bytes")),
            "peak": _mib(r.get("peak_rss_bytes")),
            "growth": None
            if "peak_rss_bytes" not in r
            else _mib(r["peak_rss_bytes"] - r["peak_rss_before_call_bytes"]),
            "seconds": r.get("seconds"),
            "rps": r.get("rows_per_second"),
            "status": r.get("status", "ok"),
        }
        for r in sorted(runs, key=lambda r: (r["method"], FORMATS.index(r["format"]), r["n"]))
    ]
    print()
    print(
        format_table(
            table_rows,
            [
                ("method", "method", "{}"),
                ("format", "format", "{}"),
                ("n", "N rows", "{:,d}"),
                ("before", "RSS before call MiB", "{:,.0f}"),
                ("peak", "peak RSS MiB", "{:,.0f}"),
                ("growth", "peak - before MiB", "{:,.0f}"),
                ("seconds", "seconds", "{:.1f}"),
                ("rps", "rows/s", "{:,.0f}"),
                ("status", "status", "{}"),
            ],
        )
    )
    summary = _summary(runs, sizes)
    print()
    print(
        format_table(
            summary,
            [
                ("method", "method", "{}"),
                ("format", "format", "{}"),
                ("small", f"peak MiB N={sizes[0]:,d}", "{:,.0f}"),
                ("large", f"peak MiB N={sizes[-1]:,d}", "{:,.0f}"),
                ("ratio", "ratio", "{:.3f}"),
                ("verdict", f"<= {TARGET:.2f}", "{}"),
            ],
        )
    )
    bounded = {r["name"]: r["memory"] for r in rows if not r["memory"].startswith("streams")}
    for name, text in bounded.items():
        print(f"\n{name} holds: {text}")
    out = save(final=True)
    print(f"\nwrote {os.path.relpath(out)} ({(time.perf_counter() - start) / 60:.1f} min)")
    return 0 if all(s["verdict"] == "PASS" for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
