"""Weekly-version comparison (seed 000): ``jaxsens.compare``'s one paired pass vs separate runs per version.

    python bench/compare.py [--rows 100000] [--versions 2] [--repeats 3] [--quick] [--tag TAG]

Seed 000's network (82 -> 500 -> 500 -> 500 -> 2 softmax, relu), saved the seed's way as legacy Keras pairs
(``week<k>_structure.json`` + ``week<k>_weights.h5``, tf_keras) for ``--versions`` weekly versions (week 1
trained on a synthetic task, every later week retrained from new initial weights on fresh rows of the same
task), loaded with ``jaxsens.load_model`` (converted once through tf2onnx). Competitors, timed interleaved
(median of ``--repeats``), each computing mean |dy/dx| of every version over the same ``--rows`` rows (a
``.npy`` file, streamed):

* ``compare``: ``jaxsens.compare(versions, rows.npy)``: every chunk goes through every version inside one
  compiled kernel (the versions' params stacked and vmapped), with the paired per-row differences folded in;
* ``separate runs``: one ``jaxsens.jacobian_importance`` per version (what a user did before ``compare``);
  the difference's standard error is then sqrt(se_v^2 + se_0^2);
* ``TF batch_jacobian``: per version, ``tf.GradientTape.batch_jacobian`` over batches of 4,096 rows of the Keras
  model, mean |J| accumulated in float64 (TensorFlow's own route, the named peer); with ``--quick`` or
  ``--no-tf`` left out.

Checked before timing: every competitor gives the same mean |J| per version (float32 tolerance: relative 1e-4 on
the largest entry; TF's kernels round differently) and ``compare``'s delta equals the difference of the separate
runs. Also reported: the paired delta's standard error vs the independent-runs one (median ratio over entries:
how much narrower the paired interval is on the same rows), the compare kernel's compile count across repeats,
and seed 000's first-layer weight sums' rank correlation with the behaviour-based importance per version.
Writes ``bench/results/compare.json`` (``compare_<tag>.json`` with ``--tag``) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import TMP_DIR, format_table, interleaved, machine_info, median, npy_dataset, write_json

import jaxsens

SIZES = (82, 500, 500, 500, 2)
N_INFORMATIVE = 10


def _task(n_rows: int, seed: int):
    """Standard-normal rows; the class depends on the first N_INFORMATIVE features only."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, SIZES[0]), dtype=np.float32)
    w = np.linspace(1.0, 0.2, N_INFORMATIVE)
    score = X[:, :N_INFORMATIVE] @ w + 0.5 * np.tanh(X[:, 0] * X[:, 1]) + 0.3 * rng.standard_normal(n_rows)
    return X, (score > 0).astype(np.int64)


def build_versions(n_versions: int, epochs: int) -> list[str]:
    """Weekly legacy pairs under bench/results/tmp/compare (reused when present): the structure files' paths."""
    import tf_keras as K

    folder = os.path.join(TMP_DIR, "compare")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for week in range(1, n_versions + 1):
        structure = os.path.join(folder, f"week{week}_structure.json")
        weights = os.path.join(folder, f"week{week}_weights.h5")
        paths.append(structure)
        if os.path.exists(structure) and os.path.exists(weights):
            continue
        K.utils.set_random_seed(week)
        model = K.Sequential(
            [K.layers.Dense(SIZES[1], activation="relu", input_shape=(SIZES[0],))]
            + [K.layers.Dense(s, activation="relu") for s in SIZES[2:-1]]
            + [K.layers.Dense(SIZES[-1], activation="softmax")]
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        X, y = _task(20_000, seed=100 + week)
        model.fit(X, y, epochs=epochs, batch_size=256, verbose=0)
        with open(structure + ".part", "w") as f:
            f.write(model.to_json())
        os.replace(structure + ".part", structure)
        model.save_weights(weights)
    return paths


def tf_mean_abs_jacobian(structure: str, data: str, batch: int = 4096) -> np.ndarray:
    """Mean |J| [2, 82] of the Keras model over the rows of ``data`` with tf.GradientTape.batch_jacobian."""
    import tensorflow as tf
    import tf_keras as K

    with open(structure) as f:
        model = K.models.model_from_json(f.read())
    model.load_weights(structure.replace("_structure.json", "_weights.h5"))

    @tf.function(jit_compile=False, reduce_retracing=True)
    def chunk(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x, training=False)
        return tf.reduce_sum(tf.abs(tape.batch_jacobian(y, x)), axis=0)

    rows = np.load(data, mmap_mode="r")
    total = np.zeros((SIZES[-1], SIZES[0]))
    for i in range(0, rows.shape[0], batch):
        total += chunk(tf.constant(np.asarray(rows[i : i + batch]))).numpy()
    return total / rows.shape[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--versions", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="training epochs per weekly version")
    ap.add_argument("--quick", action="store_true", help="10,000 rows, 2 repeats, no TensorFlow peer")
    ap.add_argument("--no-tf", action="store_true", help="leave out the TensorFlow batch_jacobian peer")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.repeats, args.no_tf = 10_000, 2, True

    structures = build_versions(args.versions, args.epochs)
    models = [jaxsens.load_model(s) for s in structures]
    data = npy_dataset(os.path.join(TMP_DIR, f"compare_rows_{args.rows}.npy"), args.rows, (SIZES[0],))
    names = [f"week{k}" for k in range(1, args.versions + 1)]

    from jaxsens import _compare

    jobs = {
        "compare": lambda: jaxsens.compare(models, data, names=names),
        "separate runs": lambda: [jaxsens.jacobian_importance(m, data) for m in models],
    }
    if not args.no_tf:
        jobs["TF batch_jacobian"] = lambda: [tf_mean_abs_jacobian(s, data) for s in structures]

    # checks (and warm-up: every competitor compiled / traced once before timing)
    comp = jobs["compare"]()
    separate = jobs["separate runs"]()
    ref = np.stack([r.importance for r in separate])
    tol = 1e-4 * np.abs(ref).max()
    np.testing.assert_allclose(comp.importance, ref, atol=tol)
    np.testing.assert_allclose(comp.delta, ref[1:] - ref[:1], atol=tol)
    if "TF batch_jacobian" in jobs:
        np.testing.assert_allclose(np.stack(jobs["TF batch_jacobian"]()), ref, atol=tol)
    unpaired = np.sqrt(np.stack([r.stderr for r in separate])[1:] ** 2 + separate[0].stderr ** 2)
    se_ratio = float(np.median(comp.delta_stderr / unpaired))
    compiles_before = _compare._compare_kernel._cache_size()

    times = interleaved(jobs, repeats=args.repeats, settle_seconds=0.5)
    compiles = _compare._compare_kernel._cache_size() - compiles_before
    rows = []
    base = median(times["separate runs"])
    for name, ts in times.items():
        t = median(ts)
        rows.append({"peer": name, "seconds": t, "rows_per_s": args.rows * args.versions / t,
                     "vs_separate": base / t})
    print(f"\nseed-000 network {SIZES}, {args.versions} versions, {args.rows:,} rows, median of {args.repeats}")
    print(format_table(rows, [("peer", "competitor", "{}"), ("seconds", "median s", "{:.2f}"),
                              ("rows_per_s", "version-rows/s", "{:,.0f}"),
                              ("vs_separate", "speed-up vs separate runs", "{:.2f}x")]))
    print(f"paired delta stderr / independent-runs stderr (median over entries): {se_ratio:.3f}")
    print(f"compare kernel compiles during the timed repeats: {compiles}")
    print(f"drift {comp.drift:.4f}; nDCG {np.round(comp.ndcg, 4).tolist()}; changed entries "
          f"{int(comp.changed.sum())} of {comp.changed.size}; near zero: {list(comp.near_zero)}")
    if comp.weight_sums_spearman is not None:
        print(f"first-layer weight sums vs behaviour, Spearman per version: "
              f"{np.round(comp.weight_sums_spearman, 3).tolist()}")
    payload = {
        "machine": machine_info(),
        "config": {"sizes": SIZES, "rows": args.rows, "versions": args.versions, "repeats": args.repeats,
                   "epochs": args.epochs},
        "times": times,
        "table": rows,
        "paired_over_independent_stderr_median": se_ratio,
        "compare_kernel_compiles_in_timed_repeats": compiles,
        "drift": comp.drift,
        "ndcg": comp.ndcg,
        "changed": int(comp.changed.sum()),
        "near_zero": list(comp.near_zero),
        "weight_sums_spearman": comp.weight_sums_spearman,
    }
    path = write_json(f"compare_{args.tag}.json" if args.tag else "compare.json", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
