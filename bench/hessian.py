"""Hessian statistics: jaxsens vs NeuralSens (Python) and TensorFlow nested tapes, on one scikit-learn MLP.

    python bench/hessian.py [--rows 200000] [--neuralsens-rows 2000] [--repeats 3] [--quick] [--tag cpu]
                            [--only mlp|lstm|all] [--lstm-rows 2048] [--lstm-tf-batch 256]

The model: a scikit-learn ``MLPRegressor`` (8 inputs -> 32 -> 32 logistic -> 1) trained on a small synthetic task
with interactions and curvature (``y = x0 x1 + sin x2 + x3^2 / 2 + x4 x5 / 2``), exported with skl2onnx; every
competitor uses its float32 weights. Each competitor computes the per-sample Hessian ``d2 y / dx_i dx_j`` ``[8, 8]``
of every row and its mean absolute value over the rows:

* ``jaxsens``: ``jaxsens.hessian_importance(model, rows)`` on the skl2onnx file loaded with ``jaxsens.load_model``
  (forward-over-reverse, streamed; also returns mean, std, RMS), with its default chunk size and with
  ``batch_size=4096``;
* ``neuralsens``: ``neuralsens.partial_derivatives.hessian_mlp(wts, bias, actfunc, X, y)`` (its public Hessian
  function, default numpy backend) in chunks of ``--neuralsens-chunk`` rows (its memory per row is ``units ** 3``
  per layer), mean ``|H|`` from ``raw_sens``; it builds each layer's first and second activation derivatives in a
  Python loop over the rows, so it gets fewer rows and the table compares rows/s;
* ``TF nested tapes``: a Keras 3 model with the same weights, ``batch_jacobian`` of ``batch_jacobian`` inside a
  ``tf.function`` (with and without ``jit_compile``), in batches of ``--tf-batch`` rows, mean ``|H|`` in numpy.
  With ``jit_compile=True`` (TF 2.21, CPU) a call on a batch it has already seen takes ~1 ms but a call on new rows
  of the same shape takes ~0.4-1 s (XLA's constant folding of the ``pfor`` -vectorised tapes runs again: the
  "Constant folding an instruction is taking > 1s" alarm; feeding the rows through a ``tf.Variable`` does not avoid
  it), so the XLA variant gets ``--tf-xla-rows`` fresh rows on every run, warm-up included.

Definitions. NeuralSens reports ``mean``, ``std`` and ``mean_squared`` of ``H``: its ``std`` is numpy's population
std (ddof = 0; jaxsens' ``std`` is ddof = 1) and its ``mean_squared`` is ``sqrt(mean(H^2))``, jaxsens' ``rms``; it has
no mean ``|H|``, which is computed here from its per-row ``raw_sens``. NeuralSens does not symmetrise ``H``; jaxsens
reports ``(H + H^T) / 2`` (equal in exact arithmetic). NeuralSens computes in float64 from the float32 weights and
inputs, jaxsens and TensorFlow in float32.

Second part (``--only lstm`` runs it alone): seed 001's whole network, ``Input(10, 3) -> LSTM(10, relu) -> LSTM(5,
relu) -> LSTM(1, sigmoid) -> Flatten`` (every LSTM ``return_sequences=True``: 10 outputs), built by bench/jacobian.py's
``build_lstm_keras(seed=1)``, saved as ``.keras`` and loaded with ``jaxsens.load_model``. The Hessian is over the
flattened ``T * F = 30`` input elements for all 10 outputs, ``[10, 30, 30]`` per row: ``jaxsens.hessian_importance``
against TensorFlow's nested tapes (``batch_jacobian`` of ``batch_jacobian`` in a ``tf.function``, batches of
``--lstm-tf-batch`` rows, the last one padded so that the graph is traced once), mean ``|H|``; the table reports the
speed ratio (medians of interleaved repeats) and the largest relative difference ``max |diff| / max |H|`` of the two
mean ``|H|`` over all timed rows, beside the float32 bound it is checked against first.

Before any timing, every competitor's mean ``|H|`` (and NeuralSens' mean, std, RMS against jaxsens') on the same
``--check-rows`` rows must agree within a float32 bound (``2 * n_terms * eps32 * max |H|``, ``n_terms`` the rows
averaged plus the network's accumulation length, on both sides); otherwise the script stops. Timings are medians of
interleaved repeats (bench/_common.py); writes ``bench/results/hessian.json`` (``hessian_<tag>.json`` with ``--tag``) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import TMP_DIR, format_table, interleaved, machine_info, median, result_tag, warm_up, write_json

import jaxsens

N_FEATURES = 8
HIDDEN = (32, 32)
EPS32 = float(np.finfo(np.float32).eps)


# ---------------------------------------------------------------------------------------------------- model
def train_mlp(seed: int = 0):
    """The scikit-learn MLP, its skl2onnx export loaded by jaxsens, and its float32 weights ``[(W, b), ...]``."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4000, N_FEATURES)).astype(np.float32)
    y = x[:, 0] * x[:, 1] + np.sin(x[:, 2]) + 0.5 * x[:, 3] ** 2 + 0.5 * x[:, 4] * x[:, 5]
    net = MLPRegressor(hidden_layer_sizes=HIDDEN, activation="logistic", max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(x, y)
    onx = convert_sklearn(net, initial_types=[("x", FloatTensorType([None, N_FEATURES]))])
    os.makedirs(TMP_DIR, exist_ok=True)
    path = os.path.join(TMP_DIR, "hessian_mlp.onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    model = jaxsens.load_model(path)
    weights = [(w.astype(np.float32), b.astype(np.float32)) for w, b in zip(net.coefs_, net.intercepts_)]
    np.testing.assert_allclose(np.asarray(model(x[:256])).ravel(), net.predict(x[:256]), rtol=1e-4, atol=1e-4)
    return model, weights, float(net.score(x, y))


def keras_twin(weights):
    import keras

    layers = [keras.Input((N_FEATURES,))]
    layers += [keras.layers.Dense(w.shape[1], activation="sigmoid") for w, _ in weights[:-1]]
    layers += [keras.layers.Dense(weights[-1][0].shape[1])]
    net = keras.Sequential(layers)
    net.set_weights([a for wb in weights for a in wb])
    return net


# ---------------------------------------------------------------------------------------------------- competitors
def stats64(h: np.ndarray) -> dict[str, np.ndarray]:
    """jaxsens' statistics from per-sample Hessians ``[N, d, d]`` (float64)."""
    return {"mean_abs": np.abs(h).mean(0), "mean": h.mean(0), "std": h.std(0, ddof=1),
            "rms": np.sqrt((h * h).mean(0))}


def jaxsens_job(model, xs, batch_size=None):
    def run():
        r = jaxsens.hessian_importance(model, xs, batch_size=batch_size)
        return {"mean_abs": r.mean_abs[0], "mean": r.mean[0], "std": r.std[0], "rms": r.rms[0]}

    return run


def neuralsens_hessians(weights, xs, chunk: int):
    """Per-row Hessians ``[N, d, d]`` (float64) and, per ``hessian_mlp`` call, ``(rows, NeuralSens' own mean, std,
    mean_squared)``."""
    import pandas as pd
    from neuralsens.partial_derivatives import hessian_mlp

    wts = [w for w, _ in weights]
    bias = [b for _, b in weights]
    actfunc = ["identity"] + ["logistic"] * (len(weights) - 1) + ["identity"]
    columns = [f"x{i}" for i in range(xs.shape[1])]
    y = pd.DataFrame({"y": np.zeros(1)})
    d = xs.shape[1]
    hs, own = [], []
    for s in range(0, len(xs), chunk):
        part = xs[s: s + chunk]
        res = hessian_mlp(wts, bias, actfunc, pd.DataFrame(part, columns=columns), y)
        # raw_sens[out]: [N, d * d] with column (j, i) holding H[n, i, j] (its .T.reshape): transpose back
        hs.append(res.raw_sens[0].to_numpy(np.float64).reshape(len(part), d, d).swapaxes(1, 2))
        own.append((len(part), {k: res.sens[0][k].to_numpy(np.float64) for k in ("mean", "std", "mean_squared")}))
    return np.concatenate(hs), own


def neuralsens_job(weights, xs, chunk):
    def run():
        h, _ = neuralsens_hessians(weights, xs, chunk)
        return {"mean_abs": np.abs(h).mean(0)}

    return run


def tf_hessians(net, xs, batch: int, jit_compile: bool):
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def hess(x):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = net(x, training=False)
            g = inner.batch_jacobian(y, x)  # [B, 1, d]
        return outer.batch_jacobian(g, x)[:, 0]  # [B, d, d]

    def run(rows=xs):
        total = np.zeros((rows.shape[1], rows.shape[1]))
        for s in range(0, len(rows), batch):
            total += np.abs(hess(tf.constant(rows[s: s + batch])).numpy().astype(np.float64)).sum(0)
        return {"mean_abs": total / len(rows)}

    return hess, run


# ---------------------------------------------------------------------------------------------------- checks
def check_equal(name, got, want, *, n_terms, magnitude):
    tol = 2.0 * n_terms * EPS32 * magnitude
    err = float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())
    if not err <= tol:
        raise SystemExit(f"{name}: differs from jaxsens by {err:.3g} > float32 bound {tol:.3g}; not timing")
    return err, tol


def verify(model, weights, net, xs, chunk, tf_batch):
    """Every competitor against jaxsens on the same rows, before any timing: ``{check: (max error, bound)}``."""
    n = len(xs)
    ref = jaxsens_job(model, xs)()
    h_ns, own = neuralsens_hessians(weights, xs, chunk=n)  # one call: NeuralSens' own statistics are over all rows
    (_, ns), = own
    magnitude = float(np.abs(h_ns).max())
    chain = 2 * (N_FEATURES + sum(HIDDEN) + 1)  # dot products forward, back and forward again
    n_terms = 2 * (n + chain)
    out = {}
    ns64 = stats64(h_ns)
    out["neuralsens mean|H| (from raw_sens)"] = check_equal("neuralsens mean_abs", ns64["mean_abs"], ref["mean_abs"],
                                                          n_terms=n_terms, magnitude=magnitude)
    out["neuralsens mean"] = check_equal("neuralsens mean", ns["mean"], ref["mean"], n_terms=n_terms,
                                         magnitude=magnitude)
    out["neuralsens std (ddof=0, rescaled to ddof=1)"] = check_equal(
        "neuralsens std", ns["std"] * np.sqrt(n / (n - 1)), ref["std"], n_terms=n_terms, magnitude=magnitude)
    out["neuralsens mean_squared = rms"] = check_equal("neuralsens mean_squared", ns["mean_squared"], ref["rms"],
                                                      n_terms=n_terms, magnitude=magnitude)
    for jit in (False, True):
        _, run = tf_hessians(net, xs, tf_batch, jit)
        out[f"TF nested tapes{' (XLA)' if jit else ''} mean|H|"] = check_equal(
            f"TF jit_compile={jit}", run()["mean_abs"], ref["mean_abs"], n_terms=n_terms, magnitude=magnitude)
    asym = float(np.abs(h_ns - h_ns.swapaxes(1, 2)).max())
    return out, asym, magnitude


# ---------------------------------------------------------------------------------------------------- seed-001 LSTM
LSTM_T, LSTM_F, LSTM_OUT = 10, 3, 10


def lstm_model():
    """Seed 001's LSTM stack (bench/jacobian.py's builder), saved as ``.keras`` and loaded by jaxsens."""
    from jacobian import build_lstm_keras

    net = build_lstm_keras(seed=1)
    os.makedirs(TMP_DIR, exist_ok=True)
    path = os.path.join(TMP_DIR, "hessian_seed001_lstm.keras")
    net.save(path)
    return net, jaxsens.load_model(path)


def tf_lstm_hessians(net, batch: int):
    """``run(rows) -> {"mean_abs": [10, 30, 30]}``: TF nested tapes in fixed batches (the last padded)."""
    import tensorflow as tf

    e = LSTM_T * LSTM_F

    @tf.function(reduce_retracing=True)
    def hess(x):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = net(x, training=False)  # [B, 10]
            g = inner.batch_jacobian(y, x)  # [B, 10, T, F]
        return tf.reshape(outer.batch_jacobian(g, x), (-1, LSTM_OUT, e, e))  # [B, 10, 30, 30]

    def run(rows):
        total = np.zeros((LSTM_OUT, e, e))
        for s in range(0, len(rows), batch):
            part = rows[s: s + batch]
            m = len(part)
            if m < batch:
                part = np.concatenate([part, np.zeros((batch - m, *part.shape[1:]), part.dtype)])
            h = hess(tf.constant(part)).numpy()[:m].astype(np.float64)
            total += np.abs(0.5 * (h + h.swapaxes(-1, -2))).sum(0)
        return {"mean_abs": total / len(rows)}

    return run


def lstm_section(args) -> dict:
    """jaxsens vs TF nested tapes on seed 001's LSTM: checked first, then timed interleaved."""
    net, model = lstm_model()
    xs = np.random.default_rng(2).normal(size=(args.lstm_rows, LSTM_T, LSTM_F)).astype(np.float32)
    tf_run = tf_lstm_hessians(net, args.lstm_tf_batch)
    units = (10, 5, 1)
    chain = sum(n_in + 4 * u for n_in, u in zip((LSTM_F, *units[:-1]), units))  # fan-in of the stacked cells

    def bound(n_rows, magnitude):
        return 2.0 * 2 * (n_rows + 3 * LSTM_T * chain) * EPS32 * magnitude * LSTM_T * LSTM_F

    check = xs[: args.check_rows]
    ref = jaxsens.hessian_importance(model, check).mean_abs
    got = tf_run(check)["mean_abs"]
    magnitude = float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    if not err <= bound(len(check), magnitude):
        raise SystemExit(f"LSTM: TF nested tapes differ from jaxsens by {err:.3g} > {bound(len(check), magnitude):.3g}")
    print(f"seed-001 LSTM (10 outputs, H [10, 30, 30]): checked on {len(check)} rows, max |diff| {err:.2e} <= "
          f"{bound(len(check), magnitude):.2e} (max mean|H| {magnitude:.3g})")
    jobs = {"jaxsens hessian_importance (LSTM)": lambda: {"mean_abs": jaxsens.hessian_importance(model, xs).mean_abs},
            "TF nested batch_jacobian (LSTM)": lambda: tf_run(xs)}
    warm_up(jobs)  # compile / trace once, outside the timings
    results = {}
    times = interleaved(jobs, repeats=args.repeats, on_result=lambda k, r, s, out: results.__setitem__(k, out))
    mine = results["jaxsens hessian_importance (LSTM)"]["mean_abs"]
    scale = float(np.abs(mine).max())
    base = median(times["jaxsens hessian_importance (LSTM)"])
    table = []
    for k, ts in times.items():
        t = median(ts)
        diff = float(np.abs(results[k]["mean_abs"] - mine).max())
        if not diff <= bound(len(xs), scale):
            raise SystemExit(f"{k}: differs from jaxsens by {diff:.3g} > float32 bound {bound(len(xs), scale):.3g}")
        table.append({"method": k, "rows": len(xs), "seconds": t, "rows_per_s": len(xs) / t,
                      "jaxsens_speedup": t / base, "max_rel_diff": diff / scale,
                      "rel_bound": bound(len(xs), scale) / scale, "raw": ts})
    cols = [("method", "method", "{}"), ("rows", "rows", "{:,d}"), ("seconds", "median s", "{:.3f}"),
            ("rows_per_s", "rows/s", "{:,.0f}"), ("jaxsens_speedup", "jaxsens speed-up", "{:.1f}x"),
            ("max_rel_diff", "max rel. diff vs jaxsens", "{:.1e}"), ("rel_bound", "float32 bound", "{:.1e}")]
    print(format_table(table, cols))
    print()
    print(format_table(table, cols, markdown=True))
    return {"rows": len(xs), "tf_batch": args.lstm_tf_batch, "check_rows": len(check),
            "check": {"max_abs_diff": err, "float32_bound": bound(len(check), magnitude)}, "table": table}


# ---------------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000, help="rows for jaxsens and TensorFlow")
    ap.add_argument("--neuralsens-rows", type=int, default=2_000, help="rows for NeuralSens (a Python row loop)")
    ap.add_argument("--neuralsens-chunk", type=int, default=500, help="rows per hessian_mlp call")
    ap.add_argument("--tf-batch", type=int, default=500,
                    help="rows per TensorFlow tf.function call (XLA compiles once per batch shape: ~30 s at 2000 rows)")
    ap.add_argument("--tf-xla-rows", type=int, default=2_000, help="fresh rows per TensorFlow XLA run")
    ap.add_argument("--check-rows", type=int, default=500, help="rows every competitor is checked on first")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="rows=20000, neuralsens-rows=500, 1 repeat")
    ap.add_argument("--tag", default=None, help="results file tag (default: cpu, or the accelerator kind)")
    ap.add_argument("--only", choices=("mlp", "lstm", "all"), default="all", help="which part to run")
    ap.add_argument("--lstm-rows", type=int, default=2048, help="rows for the seed-001 LSTM part")
    ap.add_argument("--lstm-tf-batch", type=int, default=256, help="rows per TF call in the LSTM part")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.neuralsens_rows, args.repeats, args.lstm_rows = 20_000, 500, 1, 512
    lstm = lstm_section(args) if args.only in ("lstm", "all") else None
    if args.only == "lstm":
        name = "hessian_lstm.json" if args.tag is None else f"hessian_lstm_{args.tag}.json"
        print(f"wrote {write_json(name, {'tag': args.tag or result_tag(), 'machine': machine_info(), 'lstm': lstm})}")
        return
    model, weights, r2 = train_mlp()
    net = keras_twin(weights)
    xs = np.random.default_rng(1).normal(size=(args.rows, N_FEATURES)).astype(np.float32)
    xs_ns = xs[: args.neuralsens_rows]
    checks, asym, magnitude = verify(model, weights, net, xs[: args.check_rows], args.neuralsens_chunk, args.tf_batch)
    print(f"MLP {N_FEATURES} -> {' -> '.join(map(str, HIDDEN))} -> 1 (logistic), train R^2 {r2:.3f}; "
          f"checked on {args.check_rows} rows (max |H| {magnitude:.3g}; neuralsens max |H - H^T| {asym:.2g}):")
    for k, (err, tol) in checks.items():
        print(f"  {k:<45s} max |diff| {err:.2e} <= {tol:.2e}")

    jobs = {"jaxsens hessian_importance": jaxsens_job(model, xs),
            "jaxsens (batch_size=4096)": jaxsens_job(model, xs, batch_size=4096)}
    rows_of = {k: args.rows for k in jobs}
    _, jobs["TF nested batch_jacobian"] = tf_hessians(net, xs, args.tf_batch, False)
    rows_of["TF nested batch_jacobian"] = args.rows
    # XLA: every call on rows it has not seen costs about as much as a compile (see the module docstring), and rows
    # it has seen are fast, so each run (warm-up included) gets fresh rows: xla_rows[i] for the i-th run
    xla_rows = [np.random.default_rng(100 + i).normal(size=(args.tf_xla_rows, N_FEATURES)).astype(np.float32)
                for i in range(args.repeats + 1)]
    _, run_xla = tf_hessians(net, xs, args.tf_batch, True)
    xla_calls = []

    def xla_job():
        rows = xla_rows[len(xla_calls)]
        xla_calls.append(rows)
        return run_xla(rows)

    jobs["TF nested batch_jacobian (XLA)"] = xla_job
    rows_of["TF nested batch_jacobian (XLA)"] = args.tf_xla_rows
    jobs["neuralsens hessian_mlp"] = neuralsens_job(weights, xs_ns, args.neuralsens_chunk)
    rows_of["neuralsens hessian_mlp"] = len(xs_ns)
    warm_up(jobs)  # compile / trace once, outside the timings
    results = {}
    times = interleaved(jobs, repeats=args.repeats, on_result=lambda k, r, s, out: results.__setitem__(k, out))
    # the timed runs over all their rows, against jaxsens over the same rows (neuralsens: its subset)
    ref_ns = jaxsens.hessian_importance(model, xs_ns).mean_abs[0]
    chain = 2 * (N_FEATURES + sum(HIDDEN) + 1)
    for k, out in results.items():
        ref = (ref_ns if k.startswith("neuralsens")
               else jaxsens.hessian_importance(model, xla_calls[-1]).mean_abs[0] if k.endswith("(XLA)")
               else results["jaxsens hessian_importance"]["mean_abs"])
        check_equal(k + " (timed rows)", out["mean_abs"], ref, n_terms=2 * (rows_of[k] + chain), magnitude=magnitude)
    base = rows_of["jaxsens hessian_importance"] / median(times["jaxsens hessian_importance"])
    table = []
    for k, ts in times.items():
        t = median(ts)
        table.append({"method": k, "rows": rows_of[k], "seconds": t, "rows_per_s": rows_of[k] / t,
                      "jaxsens_speedup": base / (rows_of[k] / t), "raw": ts})
    cols = [("method", "method", "{}"), ("rows", "rows", "{:,d}"), ("seconds", "median s", "{:.3f}"),
            ("rows_per_s", "rows/s", "{:,.0f}"), ("jaxsens_speedup", "jaxsens speed-up (rows/s)", "{:.1f}x")]
    print(format_table(table, cols))
    print()
    print(format_table(table, cols, markdown=True))
    mean_abs = results["jaxsens hessian_importance"]["mean_abs"]
    path = write_json("hessian.json" if args.tag is None else f"hessian_{args.tag}.json", {
        "tag": args.tag or result_tag(),
        "machine": machine_info(), "model": {"inputs": N_FEATURES, "hidden": HIDDEN, "activation": "logistic",
                                             "train_r2": r2},
        "rows": args.rows, "neuralsens_rows": len(xs_ns), "repeats": args.repeats, "check_rows": args.check_rows,
        "checks": {k: {"max_abs_diff": e, "float32_bound": t} for k, (e, t) in checks.items()},
        "neuralsens_max_asymmetry": asym, "jaxsens_mean_abs": mean_abs, "table": table, "lstm": lstm,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
