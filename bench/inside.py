"""The inside view (seed 003): every layer's output for one pattern, and per-unit statistics over a data set.

    python bench/inside.py [--repeats 3] [--rows 100000] [--quick] [--tag TAG] [--no-pictures]

Seed 003's model, built with Keras 3 (TensorFlow backend): ``Input(50, 50) -> Dense(75) -> Dense(50, name="my_dense")
-> Dense(25) -> Dense(10) -> Flatten -> Dense(5, softmax)``, relu on the hidden layers, seeded and trained for a few
epochs on a synthetic 5-class task (class ``c`` lights a band of ten rows of the 50 x 50 pattern with a sine of
``c + 1`` periods along the columns, over uniform noise), saved as ``.keras`` under ``bench/results/tmp`` and loaded
with ``jaxsens.load_model`` (conversion time reported). Every competitor computes the output of every layer (the six
Keras layers after the input).

1. One pattern, timed in interleaved single calls (``10 * --repeats`` each, median):

   * ``keras sub-models, built + predict (seed)``: the seed's ``PLOT_PATTERN_PROCCESS`` loop: for every layer a new
     ``keras.Model(model.input, layer.output)`` and ``.predict(x[None], verbose=0)``;
   * ``keras sub-models, prebuilt, predict``: the same sub-models built once, one ``.predict`` each;
   * ``keras multi-output model(x)``: one ``keras.Model`` with every layer as an output, called directly
     (``model(x[None], training=False)``, the Keras way for small inputs);
   * ``jaxsens.activations(model, x)`` after a warm-up call (the first call's compile time is reported apart).

2. A data set of ``--rows`` rows of the task (``.npy``, float32, written once blockwise): per-unit mean, std
   (ddof = 1), min, max and fraction of exact zeros of every layer:

   * ``keras predict + numpy (float64)``: the multi-output model's ``predict`` over chunks of the memory-mapped
     file, folded with numpy in float64 (shifted sums, min, max, zero counts);
   * ``jaxsens.activation_stats(model, rows.npy)``: streamed from the file (one compiled kernel, float64 merge).

   Each runs once untimed (compile, page cache, check), then ``--repeats`` interleaved timed passes (median).

Checks before timing (float32 tolerance): every layer of every one-pattern competitor within ``1e-5`` of the layer's
largest magnitude (the issue's bound) of the multi-output Keras model; for the statistics, if every activation agrees
within ``delta`` (that bound), the mean, min and max agree within ``delta`` and the std within
``delta * sqrt(n / (n - 1))``; the zero fractions may differ only by rows whose pre-activation is within rounding
of 0 (the differing row count is reported; more than 0.1 % of rows fails the check). The figures come from a
shared 2-core machine (other jobs may run at the same time: the load average is recorded).

Also (unless ``--no-pictures``) runs the command line that draws the README's pictures::

    jaxsens activations bench/results/tmp/seed003.keras bench/results/tmp/seed003_pattern.npy \\
        --out bench/results/seed003 --report bench/results/seed003/report.html

and records the sizes of what it wrote (``activations.npz`` is removed when over 1 MB).
Writes ``bench/results/inside.json`` (``inside_<tag>.json`` with ``--tag``) and prints the tables.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shlex
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import RESULTS_DIR, TMP_DIR, format_table, interleaved, machine_info, median, timed, write_json

N_CLASSES = 5
SIDE = 50
RTOL = 1e-5  # the issue's bound for a layer, relative to the layer's largest magnitude
ZERO_ROWS_MAX = 1e-3  # zero fractions may differ by at most this fraction of the rows (rounding at 0)
PICTURES = os.path.join(RESULTS_DIR, "seed003")
MODEL_PATH = os.path.join(TMP_DIR, "seed003.keras")
PATTERN_PATH = os.path.join(TMP_DIR, "seed003_pattern.npy")


# ------------------------------------------------------------------------------------------------ the task
def task_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` patterns ``[n, 50, 50]`` (float32) and their classes: class ``c`` lights rows ``10c .. 10c + 9`` with
    ``0.5 + 0.5 sin(2 pi (c + 1) j / 50)`` along the columns ``j``, over uniform noise on ``[0, 0.6)``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    x = 0.6 * rng.random((n, SIDE, SIDE), dtype=np.float32)
    cols = np.arange(SIDE, dtype=np.float32) / SIDE
    for c in range(N_CLASSES):
        rows = y == c
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (c + 1) * cols)
        x[rows, 10 * c : 10 * c + 10, :] += wave.astype(np.float32)
    return x, y


def rows_file(n_rows: int, *, block: int = 8192) -> str:
    """The data set ``[n_rows, 50, 50]`` as a float32 ``.npy`` (written once, block by block, reused)."""
    path = os.path.join(TMP_DIR, f"seed003_rows_{n_rows}.npy")
    shape = (n_rows, SIDE, SIDE)
    if os.path.exists(path):
        a = np.load(path, mmap_mode="r")
        if a.shape == shape and a.dtype == np.float32:
            return path
    os.makedirs(TMP_DIR, exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.writelines(
            task_rows(min(block, n_rows - start), seed=1000 + i)[0].tobytes()
            for i, start in enumerate(range(0, n_rows, block))
        )
    os.replace(tmp, path)
    return path


def build_model(*, seed: int, epochs: int):
    """Seed 003's network (Keras 3), trained on the task; saved to ``MODEL_PATH``; returns the Keras model."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(SIDE, SIDE))
    h = keras.layers.Dense(75, activation="relu")(inputs)
    h = keras.layers.Dense(50, activation="relu", name="my_dense")(h)
    h = keras.layers.Dense(25, activation="relu")(h)
    h = keras.layers.Dense(10, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(N_CLASSES, activation="softmax")(h), name="simple_model")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = task_rows(6000, seed=seed)
    hist = model.fit(
        x[:5000], y[:5000], epochs=epochs, batch_size=64, verbose=0, validation_data=(x[5000:], y[5000:])
    )
    os.makedirs(TMP_DIR, exist_ok=True)
    model.save(MODEL_PATH)
    return model, {k: [float(v) for v in vs] for k, vs in hist.history.items()}


# ------------------------------------------------------------------------------------------------ one pattern
def seed_way(keras_model, pattern):
    """The seed's loop: a new sub-model per layer, ``predict`` each (every layer after the input)."""
    import keras

    out = {}
    for layer in keras_model.layers[1:]:
        sub = keras.Model(inputs=keras_model.input, outputs=layer.output)
        out[layer.name] = sub.predict(pattern[None], verbose=0)[0]
    return out


def prebuilt_way(subs, pattern):
    return {name: sub.predict(pattern[None], verbose=0)[0] for name, sub in subs.items()}


def multi_way(multi, names, pattern):
    outs = multi(pattern[None], training=False)
    return {n: np.asarray(o)[0] for n, o in zip(names, outs)}


def check_layers(name, ref, got):
    """Every layer within ``RTOL`` of the reference layer's largest magnitude."""
    worst, ok = 0.0, list(got) == list(ref)
    for k, want in ref.items():
        g = np.asarray(got.get(k), np.float64)
        w = np.asarray(want, np.float64)
        if g.shape != w.shape:
            ok = False
            continue
        rel = float(np.max(np.abs(g - w))) / max(float(np.max(np.abs(w))), np.finfo(np.float32).tiny)
        worst = max(worst, rel)
    return {
        "name": name,
        "same_layers": list(got) == list(ref),
        "max_rel_err": worst,
        "ok": bool(ok and worst <= RTOL),
    }


def bench_pattern(args, keras_model, model, pattern):
    import keras

    import jaxsens

    layers = keras_model.layers[1:]
    names = [layer.name for layer in layers]
    multi = keras.Model(keras_model.input, [layer.output for layer in layers])
    subs = {layer.name: keras.Model(keras_model.input, layer.output) for layer in layers}

    t_first_jax, first = timed(lambda: jaxsens.activations(model, pattern))
    t_first_multi, ref = timed(lambda: multi_way(multi, names, pattern))
    t_first_pre, _ = timed(lambda: prebuilt_way(subs, pattern))
    print(
        f"first calls: jaxsens.activations {t_first_jax:.3f} s (compile), keras multi-output {t_first_multi:.3f} s, "
        f"keras prebuilt sub-models {t_first_pre:.3f} s"
    )
    jobs = {
        "keras sub-models, built + predict (seed)": functools.partial(seed_way, keras_model, pattern),
        "keras sub-models, prebuilt, predict": functools.partial(prebuilt_way, subs, pattern),
        "keras multi-output model(x)": functools.partial(multi_way, multi, names, pattern),
        "jaxsens.activations(model, x)": functools.partial(jaxsens.activations, model, pattern),
    }
    checks = {name: check_layers(name, ref, fn()) for name, fn in jobs.items()}  # warm-up and check
    checks["jaxsens first call"] = check_layers("jaxsens first call", ref, first)
    for c in checks.values():
        print(
            f"  {c['name']:<42s} same layers {c['same_layers']}  max rel err {c['max_rel_err']:.1e}  "
            f"{'ok' if c['ok'] else 'WRONG'}"
        )
    times = interleaved(jobs, repeats=10 * args.repeats, log=None)
    base = median(times["keras sub-models, built + predict (seed)"])
    rows = []
    for name in jobs:
        med = median(times[name])
        rows.append(
            {
                "competitor": name,
                "median_ms": 1e3 * med,
                "calls_per_s": 1 / med,
                "vs_seed": base / med,
                "ok": "ok" if checks[name]["ok"] else "WRONG",
                "times": times[name],
            }
        )
    return {
        "layers": names,
        "shapes": {k: list(np.shape(v)) for k, v in ref.items()},
        "rows": rows,
        "checks": list(checks.values()),
        "first_call_s": {
            "jaxsens.activations": t_first_jax,
            "keras multi-output model(x)": t_first_multi,
            "keras sub-models, prebuilt, predict": t_first_pre,
        },
    }


# ------------------------------------------------------------------------------------------------ a data set
def keras_stats(multi, names, path, *, chunk: int):
    """Per-unit mean / std (ddof 1) / min / max / zero fraction of every layer: ``predict`` over chunks of the
    memory-mapped file, folded in float64 (sums shifted by the first chunk's mean: no cancellation)."""
    xs = np.load(path, mmap_mode="r")
    n = xs.shape[0]
    acc = None
    for start in range(0, n, chunk):
        outs = multi.predict(np.asarray(xs[start : start + chunk]), batch_size=chunk, verbose=0)
        if acc is None:
            acc = {
                k: {
                    "shift": np.asarray(o, np.float64).mean(axis=0),
                    "s1": 0.0,
                    "s2": 0.0,
                    "min": np.full(o.shape[1:], np.inf),
                    "max": np.full(o.shape[1:], -np.inf),
                    "zeros": 0,
                }
                for k, o in zip(names, outs)
            }
        for k, o in zip(names, outs):
            a = acc[k]
            d = np.asarray(o, np.float64) - a["shift"]
            a["s1"] = a["s1"] + d.sum(axis=0)
            a["s2"] = a["s2"] + np.einsum("i...,i...->...", d, d)
            a["min"] = np.minimum(a["min"], o.min(axis=0))
            a["max"] = np.maximum(a["max"], o.max(axis=0))
            a["zeros"] = a["zeros"] + np.count_nonzero(o == 0, axis=0)
    out = {}
    for k, a in acc.items():
        m1 = a["s1"] / n
        var = (a["s2"] - n * m1 * m1) / (n - 1)
        out[k] = {
            "mean": a["shift"] + m1,
            "std": np.sqrt(np.maximum(var, 0.0)),
            "min": a["min"],
            "max": a["max"],
            "zero_fraction": a["zeros"] / n,
        }
    return out


def jaxsens_stats(model, path):
    import jaxsens

    st = jaxsens.activation_stats(model, path)
    return {
        k: {s: getattr(st, s)[k] for s in ("mean", "std", "min", "max", "zero_fraction")} for k in st.layers
    }


def check_stats(name, ref, got, n):
    """Per layer: ``delta = RTOL * max |activation|``; mean / min / max within ``delta``, std within
    ``delta * sqrt(n / (n - 1))``; zero fractions by at most ``ZERO_ROWS_MAX`` of the rows."""
    worst, zero_rows, ok = 0.0, 0, list(got) == list(ref)
    for k, r in ref.items():
        g = got[k]
        delta = RTOL * max(
            float(np.max(np.abs(r["min"]))), float(np.max(np.abs(r["max"]))), np.finfo(np.float32).tiny
        )
        for s, bound in (
            ("mean", delta),
            ("min", delta),
            ("max", delta),
            ("std", delta * math.sqrt(n / (n - 1))),
        ):
            err = float(np.max(np.abs(np.asarray(g[s], np.float64) - r[s])))
            worst = max(worst, err / delta)
            ok &= err <= bound
        zero_rows = max(zero_rows, round(float(np.max(np.abs(g["zero_fraction"] - r["zero_fraction"]))) * n))
    ok &= zero_rows <= ZERO_ROWS_MAX * n
    return {"name": name, "max_err_over_delta": worst, "max_zero_rows_diff": zero_rows, "ok": bool(ok)}


def bench_stats(args, keras_model, model):
    import keras

    layers = keras_model.layers[1:]
    names = [layer.name for layer in layers]
    multi = keras.Model(keras_model.input, [layer.output for layer in layers])
    t_write, path = timed(lambda: rows_file(args.rows))
    size_mb = os.path.getsize(path) / 2**20
    print(
        f"\ndata set {path}: {args.rows:,} rows [50, 50] float32, {size_mb:,.0f} MiB (ready in {t_write:.1f} s)"
    )
    jobs = {
        "keras predict + numpy (float64)": functools.partial(
            keras_stats, multi, names, path, chunk=args.chunk
        ),
        "jaxsens.activation_stats(model, rows.npy)": functools.partial(jaxsens_stats, model, path),
    }
    first, results = {}, {}
    for name, fn in jobs.items():  # untimed-for-the-table first pass: compile, page cache, check
        first[name], results[name] = timed(fn)
        print(f"  first pass {name:<44s} {first[name]:8.2f} s")
    ref = results["keras predict + numpy (float64)"]
    checks = {name: check_stats(name, ref, got, args.rows) for name, got in results.items()}
    for c in checks.values():
        print(
            f"  {c['name']:<44s} max err / delta {c['max_err_over_delta']:.2f}  zero-fraction rows differing "
            f"{c['max_zero_rows_diff']}  {'ok' if c['ok'] else 'WRONG'}"
        )
    dead = {
        k: int(
            np.count_nonzero(results["jaxsens.activation_stats(model, rows.npy)"][k]["zero_fraction"] == 1)
        )
        for k in names
    }
    print(f"  dead units (0 on every row): {dead}")
    times = interleaved(jobs, repeats=args.repeats, settle_seconds=0.5)
    base = median(times["keras predict + numpy (float64)"])
    rows = []
    for name in jobs:
        med = median(times[name])
        rows.append(
            {
                "competitor": name,
                "median_s": med,
                "rows_per_s": args.rows / med,
                "vs_keras": base / med,
                "first_pass_s": first[name],
                "ok": "ok" if checks[name]["ok"] else "WRONG",
                "times": times[name],
            }
        )
    return {
        "n_rows": args.rows,
        "file_mib": size_mb,
        "keras_chunk": args.chunk,
        "rows": rows,
        "checks": list(checks.values()),
        "dead_units": dead,
    }


# ------------------------------------------------------------------------------------------------ pictures
def pictures():
    """Run the README's command; return the command and the sizes of what it wrote (npz removed when > 1 MB)."""
    exe = shutil.which("jaxsens")
    cmd = (
        [exe] if exe else [sys.executable, "-c", "import sys; from jaxsens.cli import main; sys.exit(main())"]
    )
    rel = lambda p: os.path.relpath(p, os.getcwd())
    args = [
        "activations",
        rel(MODEL_PATH),
        rel(PATTERN_PATH),
        "--out",
        rel(PICTURES),
        "--report",
        rel(os.path.join(PICTURES, "report.html")),
    ]
    shown = "jaxsens " + " ".join(shlex.quote(a) for a in args)
    print(f"\n$ {shown}")
    t, proc = timed(lambda: subprocess.run(cmd + args, capture_output=True, text=True, check=False))
    print(proc.stdout[-3000:] + proc.stderr[-2000:])
    if proc.returncode != 0:
        raise SystemExit(f"the command failed with status {proc.returncode}")
    sizes = {f: os.path.getsize(os.path.join(PICTURES, f)) for f in sorted(os.listdir(PICTURES))}
    removed = []
    if sizes.get("activations.npz", 0) > 2**20:
        os.unlink(os.path.join(PICTURES, "activations.npz"))
        removed.append("activations.npz")
    for f, s in sizes.items():
        flag = "  (over 300 KB)" if f.endswith(".png") and s > 300 * 1024 else ""
        print(f"  {f:<24s} {s / 1024:8.1f} KB{flag}{'  removed (over 1 MB)' if f in removed else ''}")
    return {"command": shown, "seconds": t, "sizes_bytes": sizes, "removed": removed}


# ------------------------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed passes over the data set (one pattern: 10x)"
    )
    ap.add_argument(
        "--rows", type=int, default=None, help="rows of the data set (default 100,000; --quick 20,000)"
    )
    ap.add_argument("--quick", action="store_true", help="20,000 rows unless --rows is given")
    ap.add_argument("--epochs", type=int, default=5, help="training epochs of the seed-003 model")
    ap.add_argument("--chunk", type=int, default=4096, help="rows per Keras predict chunk")
    ap.add_argument(
        "--no-pictures", action="store_true", help="do not run the command that draws the pictures"
    )
    ap.add_argument("--tag", default=None, help="results file inside_<tag>.json (default: inside.json)")
    args = ap.parse_args()
    if args.rows is None:
        args.rows = 20_000 if args.quick else 100_000
    payload = {
        "machine": machine_info(),
        "settings": vars(args),
        "load_average_before": os.getloadavg(),
        "note": "shared 2-core machine: other benchmarks may have run at the same time",
    }

    import keras

    import jaxsens

    keras_model, history = build_model(seed=3, epochs=args.epochs)
    print(
        f"seed-003 model trained {args.epochs} epochs: accuracy {history['accuracy'][-1]:.3f}, "
        f"validation {history['val_accuracy'][-1]:.3f}"
    )
    x, y = task_rows(1, seed=7)
    pattern = x[0]
    np.save(PATTERN_PATH, x)  # one row [1, 50, 50]: PATTERN for the command line
    t_load, model = timed(lambda: jaxsens.load_model(MODEL_PATH))
    print(
        f"jaxsens.load_model({os.path.basename(MODEL_PATH)}): {t_load:.2f} s; layers {list(model.layer_names)}"
    )
    payload.update(
        keras_backend=keras.backend.backend(), training=history, pattern_class=int(y[0]), load_model_s=t_load
    )

    payload["pattern"] = bench_pattern(args, keras_model, model, pattern)
    print("\none pattern, every layer's output:")
    print(
        format_table(
            payload["pattern"]["rows"],
            [
                ("competitor", "competitor", "{}"),
                ("median_ms", "median ms", "{:.2f}"),
                ("calls_per_s", "calls/s", "{:,.1f}"),
                ("vs_seed", "vs seed", "{:.1f}x"),
                ("ok", "check", "{}"),
            ],
        )
    )
    payload["stats"] = bench_stats(args, keras_model, model)
    print(f"\n{args.rows:,} rows, per-unit mean/std/min/max/zero fraction of every layer:")
    print(
        format_table(
            payload["stats"]["rows"],
            [
                ("competitor", "competitor", "{}"),
                ("median_s", "median s", "{:.2f}"),
                ("rows_per_s", "rows/s", "{:,.0f}"),
                ("vs_keras", "vs keras", "{:.2f}x"),
                ("first_pass_s", "first pass s", "{:.2f}"),
                ("ok", "check", "{}"),
            ],
        )
    )
    if not args.no_pictures:
        payload["pictures"] = pictures()
    payload["load_average_after"] = os.getloadavg()
    path = write_json(f"inside_{args.tag}.json" if args.tag else "inside.json", payload)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
