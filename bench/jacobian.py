"""Benchmark of ``jaxsens.jacobian_importance`` against hand-written JAX, TensorFlow, PyTorch and NeuralSens.

Issue 3, item 7. Everything runs in one process, in one go, with the competitors interleaved (round-robin repeats,
medians reported, raw times kept)::

    python bench/jacobian.py                 # full run: N = 1,000,000 rows (about 15 min on 2 cores)
    python bench/jacobian.py --n 20000       # smoke test
    python bench/jacobian.py --quick         # smaller everything

Suites:

* **mlp** -- the seed-000 network, 82 -> Dense(500, relu) x 3 -> Dense(2, softmax), built with Keras (seeded), saved
  to a ``.keras`` file and loaded through ``jaxsens.load_model`` (the Keras -> ONNX -> JAX converter). ``N`` rows of
  float32 standard-normal data sit in a ``.npy`` on disk (``bench/results/tmp/``, generated once). Competitors, all
  computing the full per-sample Jacobian ``[n, 2, 82]`` and its mean ``|J|``:

  - ``jaxsens``: ``jaxsens.jacobian_importance(model, "x.npy")`` with every option at its default.
  - (a) hand-written JAX: ``jax.jit`` of ``sum |vmap(jacrev(f))(xs)|`` over chunks of the array held in memory, same
    weights; chunk sums stay on the device until the end (no host sync per chunk).
  - (b) TensorFlow: ``GradientTape.batch_jacobian`` on the Keras model inside ``tf.function``, with and without
    ``jit_compile=True`` (XLA).
  - (c) PyTorch: ``torch.func.vmap(torch.func.jacrev(f))`` on an ``nn.Sequential`` with the copied weights
    (``torch.set_num_threads`` = the cores).
  - (d) NeuralSens: ``neuralsens.partial_derivatives.jacobian_mlp(wts, bias, actfunc, X, y)`` in chunks of 100 rows,
    with its default numpy backend (``--neuralsens-torch`` adds its ``use_torch=True`` path). It cannot
    differentiate a softmax output, so it runs on the logits (same network, identity last layer; checked against jaxsens on the logits model) -- the
    softmax adds a negligible 2-unit elementwise op, so its samples/s are comparable.
  - (e) the fp32 GEMM ceiling: best of numpy and JAX on a 4096 x 4096 matmul.

* **lstm** -- the seed-001 network, Input(10, 3) -> LSTM(10, relu) -> LSTM(5, relu) -> LSTM(1, sigmoid) ->
  Flatten (every LSTM ``return_sequences=True``): 10 outputs, Jacobian ``[n, 10, 10, 3]``. Competitors jaxsens,
  (a) (the LSTM written in ``jnp`` with ``lax.scan`` over time), (b) and (c) (torch ``nn.LSTM`` has no ReLU activation, so
  the cell is written with torch ops, Keras gate order i, f, c, o).

* **scaling** -- jaxsens alone on synthetic MLPs ``n_features -> 64 -> 64 -> n_outputs`` (ReLU, linear output),
  data from ``.npy`` files: time against N, against ``n_features`` and against ``n_outputs``.

FLOP count (one analytic count for every competitor): a dense layer ``n_in -> n_out`` costs ``2 n_in n_out`` per
sample forward, and reverse mode computes the Jacobian with one vector-Jacobian product per output, each costing
the same again, so ``flops_per_sample = (1 + n_outputs) * 2 * sum(n_in * n_out)``: 3.252 MFLOP for the seed-000
MLP. For an LSTM layer with ``h`` units and ``n_in`` inputs the matmuls cost ``2 * 4h (n_in + h)`` per time step;
elementwise gate maths and the softmax are not counted (for the tiny seed-001 LSTM they are not negligible, so its
GFLOP/s understate the work and its "% of GEMM" is not meaningful; compare samples/s there).

Correctness first: before any timing, every competitor's mean ``|J|`` on the first rows is checked against jaxsens
(jaxsens itself against (a)) with ``rtol = 1e-4``; a competitor that disagrees is reported as wrong and not timed.
Slow peers whose single run would exceed ``--max-run-seconds`` are timed on a prefix of the data (the table says
which N each row used); NeuralSens is capped at a 10k-row subset and gets one repeat.

Output: a table on stdout and ``bench/results/jacobian_<tag>.json`` (tag ``cpu`` on the CPU backend, else the
accelerator kind) with machine info, settings, medians, all raw timings and the verification errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
from _common import (
    TMP_DIR,
    cpu_count,
    format_table,
    gemm_ceiling,
    gemm_job,
    interleaved,
    machine_info,
    median,
    npy_dataset,
    result_tag,
    timed,
    write_json,
)

import jaxsens
from jaxsens import _bench

MLP_SIZES = (82, 500, 500, 500, 2)
LSTM_SHAPE = (10, 3)  # time steps, features
LSTM_UNITS = (10, 5, 1)
LSTM_ACTIVATIONS = ("relu", "relu", "sigmoid")
RTOL = 1e-4
WARM_ROWS = (
    131072  # >= the engine's largest batch, so a warm-up on this many rows compiles the full-run kernel
)
NEURALSENS_CHUNK = 100  # rows per jacobian_mlp call: it builds [rows, 500, 500] float64 temporaries

A_KEY = "jax_vmap_jacrev"
GEMM_KEY = "gemm_ceiling"
LAYER_GEMM_KEY = "gemm_layer_shapes"
LAYER_GEMM_ROWS = 4096  # rows of the layer-shape GEMM [rows, 500] x [500, 500] (issue 14 item 4)
SETTLE_SECONDS = (
    0.5  # idle pause before every timed run (spinning BLAS / XLA / TF threads of the previous job)
)

# ---------------------------------------------------------------------------------------------------- bookkeeping
_COMPILES = [0]


def _count_compiles(name: str, _seconds: float, **_kw) -> None:
    if name.endswith("backend_compile_duration"):
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)


def log(msg: str = "") -> None:
    print(msg, flush=True)


dense_flops, lstm_flops = _bench.dense_flops, _bench.lstm_flops  # one FLOP count for both benches


def jacobian_flops(forward: int, n_outputs: int) -> int:
    """Reverse-mode Jacobian: one forward pass plus one VJP (same cost) per output."""
    return (1 + n_outputs) * forward


@dataclasses.dataclass
class Competitor:
    """One implementation of "mean |J| over the first n rows".

    Attributes:
        key: short name (JSON key).
        label: table label.
        run: ``run(n) -> mean_abs`` ``[n_outputs, *input_shape]`` float64 over the first ``n`` rows; blocks until
            done.
        warm: ``warm(n)`` compiles whatever ``run(n)`` needs (default: nothing).
        ref: which reference it is checked against: ``"softmax"`` (the model) or ``"logits"``.
        group: ``"jaxsens"``, ``"a"``, ``"bc"`` (the peers of the target) or ``"other"``.
        max_n: cap on rows (NeuralSens: its 10k subset).
        n_verify: rows for the correctness check (default: the suite's).
        repeats: repeats (default: the suite's).
        subset_ok: may be timed on a prefix when one run would exceed ``--max-run-seconds``.
        note: a remark kept in the JSON rows.
        meta: ``meta()`` -> facts about the latest run for the JSON (jaxsens: mode, chosen batch size).
    """

    key: str
    label: str
    run: Callable[[int], np.ndarray]
    warm: Callable[[int], Any] | None = None
    ref: str = "softmax"
    group: str = "other"
    max_n: int | None = None
    n_verify: int | None = None
    repeats: int | None = None
    subset_ok: bool = True
    note: str = ""
    meta: Callable[[], dict[str, Any]] | None = None


def max_rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return math.inf
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-30)))


# ---------------------------------------------------------------------------------------------------- loops
def jax_loop(f: Callable, x: np.ndarray, batch: int) -> tuple[Callable, Callable]:
    """(a): ``sum |vmap(jacrev(f))(xs)|`` jitted, over chunks of the in-memory array ``x``.

    Chunk sums stay on the device (dispatch is asynchronous, nothing waits per chunk) and are added in float64 at
    the end; the ragged last chunk compiles a second shape (``warm`` compiles both).
    """

    @jax.jit
    def chunk_sum(xs):
        return jnp.sum(jnp.abs(jax.vmap(jax.jacrev(f))(xs)), axis=0)

    def run(n: int) -> np.ndarray:
        parts = [chunk_sum(x[s : min(s + batch, n)]) for s in range(0, n, batch)]
        return np.sum([np.asarray(p, np.float64) for p in parts], axis=0) / n

    return run, _warm_chunks(run, batch)


def tf_loop(keras_model, x: np.ndarray, batch: int, *, jit_compile: bool) -> tuple[Callable, Callable]:
    """(b): ``GradientTape.batch_jacobian`` on the Keras model inside ``tf.function`` over in-memory chunks."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # the ragged tail and the verification rows retrace on purpose

    @tf.function(jit_compile=jit_compile)
    def chunk_sum(xs):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            ys = keras_model(xs, training=False)
        jac = tape.batch_jacobian(ys, xs)
        return tf.reduce_sum(tf.abs(jac), axis=0)

    def run(n: int) -> np.ndarray:
        parts = [chunk_sum(tf.constant(x[s : min(s + batch, n)])) for s in range(0, n, batch)]
        return np.sum([p.numpy().astype(np.float64) for p in parts], axis=0) / n

    return run, _warm_chunks(run, batch)


def torch_loop(f: Callable, x: np.ndarray, batch: int) -> tuple[Callable, Callable]:
    """(c): ``torch.func.vmap(torch.func.jacrev(f))`` over in-memory chunks (eager; nothing to compile)."""
    import torch

    jac = torch.func.vmap(torch.func.jacrev(f))

    def run(n: int) -> np.ndarray:
        total = None
        with torch.no_grad():
            for s in range(0, n, batch):
                part = jac(torch.from_numpy(x[s : min(s + batch, n)])).abs().sum(0).double()
                total = part if total is None else total + part
        return total.numpy() / n

    return run, _warm_chunks(run, batch)


def _warm_chunks(run: Callable[[int], Any], batch: int) -> Callable[[int], Any]:
    def warm(n: int):
        run(batch + n % batch if n > batch else n)  # the full-chunk shape and the ragged tail of run(n)

    return warm


# ---------------------------------------------------------------------------------------------------- jaxsens
def jaxsens_competitor(
    key: str, label: str, model, data_for: Callable[[int], Any], *, ref: str, note: str = ""
):
    """jaxsens with every option at its default; ``data_for(n)`` gives the data argument for the first n rows."""
    api = getattr(jaxsens, "jacobian_importance", None)
    if api is None:
        return None, "jaxsens.jacobian_importance does not exist yet (jaxsens/_jacobian.py)"
    last: list = []  # (result, n) of the latest run, for the JSON's diagnostics (computed after timing)

    def run(n: int) -> np.ndarray:
        res = api(model, data_for(n))
        last[:] = [(res, n)]
        if getattr(res, "n_samples", n) != n:
            raise AssertionError(f"{label}: n_samples = {res.n_samples}, expected {n}")
        return np.asarray(res.mean_abs, np.float64)

    def warm(n: int):
        run(min(n, WARM_ROWS))

    def meta() -> dict[str, Any]:
        if not last:
            return {}
        res, n = last[0]
        return {**_result_meta(res), "batch_size": _engine_batch_size(model, res, n)}

    comp = Competitor(key, label, run, warm, ref=ref, group="jaxsens", subset_ok=False, note=note, meta=meta)
    return comp, None


def _engine_batch_size(model, res, n: int) -> int | None:
    """The chunk size the engine chose by default (private helpers; ``None`` if they changed)."""
    try:
        from jaxsens import _engine, _jacobian

        per_sample = _jacobian._bytes_per_sample(model, res.mode, None)
        return int(_engine.choose_batch_size(per_sample, n_rows=n))
    except Exception:  # noqa: BLE001 - diagnostics only
        return None


def _result_meta(res) -> dict[str, Any]:
    """Scalar facts a result may carry (batch size, mode, chunks, devices) -- for the JSON, when present."""
    out = {}
    for name in ("n_samples", "batch_size", "mode", "n_chunks", "n_devices"):
        v = getattr(res, name, None)
        if isinstance(v, int | float | str):
            out[name] = v
    info = getattr(res, "info", None) or getattr(res, "run_info", None)
    if info is not None:
        for name in ("batch_size", "n_chunks", "n_devices"):
            v = getattr(info, name, None)
            if isinstance(v, int | float | str):
                out[name] = v
    return out


def load_jaxsens_model(path: str, fallback: Callable[[], Any]) -> tuple[Any, str]:
    """``jaxsens.load_model(path)`` through the converter; if it fails, ``fallback()`` (a from_function model)."""
    how = f"jaxsens.load_model({os.path.basename(path)!r}) (Keras -> ONNX -> JAX)"
    try:
        return jaxsens.load_model(path), how
    except Exception as e:  # noqa: BLE001 - the bench must still time the engine while the converter is in progress
        log(f"  ! converter failed on {os.path.basename(path)}: {type(e).__name__}: {e}")
        log("    falling back to Model.from_function with the same weights (the table says so)")
        return (
            fallback(),
            f"FALLBACK Model.from_function (converter failed: {type(e).__name__}: {str(e)[:200]})",
        )


def check_against_keras(model, keras_model, xs: np.ndarray, what: str) -> float:
    """Max abs difference between the converted model and Keras ``predict`` on ``xs`` (a sanity check)."""
    got = np.asarray(model(xs), np.float64).reshape(len(xs), -1)
    want = np.asarray(keras_model.predict(xs, verbose=0), np.float64).reshape(len(xs), -1)
    err = float(np.max(np.abs(got - want)))
    log(f"  converted {what} vs Keras predict: max |diff| = {err:.2e}")
    return err


# ---------------------------------------------------------------------------------------------------- suite runner
def run_suite(
    title: str,
    comps: list[Competitor],
    *,
    n: int,
    n_verify: int,
    repeats: int,
    max_run_seconds: float,
    flops_per_sample: float,
    gemm_library: str,
    startup_gflops: float,
    reference_order: dict[str, list[str]],
    layer_limit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Verify, size, warm and time ``comps`` (interleaved); return rows, raw times and checks.

    ``layer_limit`` (the MLP, issue 14 item 4): ``{"job": fn, "flops": flops of one fn() call,
    "needed_flops_per_sample": ...}``: a GEMM at the layers' own shapes, run as one more job of every round; its
    fastest round's GFLOP/s over the FLOPs a sample needs is the physical limit in samples/s, and each row gets
    ``pct_limit``, its samples/s as a percentage of that.

    (e), the fp32 GEMM ceiling, runs as one more job of every round (a ``[4096, 4096]`` matmul with
    ``gemm_library``); the ceiling is the fastest of those rounds and ``startup_gflops`` (the machine is shared,
    so a slow round says more about other jobs than about the hardware).
    """
    log(f"\n=== {title}: verification (first rows, rtol {RTOL:g}) ===")
    by_key = {c.key: c for c in comps}
    ref_cache: dict[tuple[str, int], np.ndarray] = {}
    broken: set[str] = set()
    verification: dict[str, dict[str, Any]] = {}

    def result_of(key: str, m: int) -> np.ndarray:
        if (key, m) not in ref_cache:
            ref_cache[(key, m)] = by_key[key].run(m)
        return ref_cache[(key, m)]

    # every competitor runs once on its verification rows (this also compiles), then is checked
    for c in comps:
        m = min(c.n_verify or n_verify, n, c.max_n or n)
        try:
            c0 = _COMPILES[0]
            cold, _ = timed(lambda c=c, m=m: result_of(c.key, m))
            verification[c.key] = {"n": m, "cold_seconds": cold, "compiles": _COMPILES[0] - c0}
        except Exception as e:  # noqa: BLE001 - a failing peer is reported, not fatal
            broken.add(c.key)
            verification[c.key] = {"n": m, "ok": False, "error": f"{type(e).__name__}: {e}"}
            log(f"  {c.label:<34s} FAILED: {type(e).__name__}: {str(e)[:300]}")
            log("".join(traceback.format_exc(limit=-3)).rstrip())
    for c in comps:
        v = verification[c.key]
        if c.key in broken:
            continue
        candidates = [k for k in reference_order[c.ref] if k in by_key and k not in broken and k != c.key]
        if not candidates:
            v.update(ok=None, reference=None)
            log(f"  {c.label:<34s} (no reference available)")
            continue
        ref_key, m = candidates[0], v["n"]
        err = max_rel_err(result_of(c.key, m), result_of(ref_key, m))
        v.update(ok=bool(err <= RTOL), reference=ref_key, max_rel_err=err)
        status = "ok" if err <= RTOL else "WRONG"
        log(f"  {c.label:<34s} vs {ref_key:<22s} n={m:<7d} max rel err {err:.2e}  {status}")

    # size: probe the warm throughput, cap slow peers to max_run_seconds, then compile the timed shapes
    log(f"\n=== {title}: sizing and warm-up ===")
    jobs: dict[str, Callable[[], Any]] = {}
    plan: dict[str, dict[str, Any]] = {}
    for c in comps:
        v = verification[c.key]
        if c.key in broken or v.get("ok") is False:
            continue
        m = v["n"]
        probe, _ = timed(lambda c=c, m=m: c.run(m))
        rate = m / probe
        n_used = min(n, c.max_n or n)
        if c.subset_ok and n_used / rate > max_run_seconds:
            step = 1000 if rate * max_run_seconds >= 10000 else NEURALSENS_CHUNK
            n_used = max(m, int(rate * max_run_seconds) // step * step)
        c_repeats = c.repeats or repeats
        t_warm, _ = timed(lambda c=c, n_used=n_used: c.warm(n_used) if c.warm else None)
        plan[c.key] = {"n": n_used, "repeats": c_repeats, "probe_rate": rate, "warm_seconds": t_warm}
        log(f"  {c.label:<34s} probe {rate:12,.0f} samples/s -> N {n_used:>9,d} x {c_repeats} repeats")
        jobs[c.key] = lambda c=c, n_used=n_used: _counted(c.run, n_used)

    gemm_fn, gemm_flops = gemm_job(gemm_library)
    jobs[GEMM_KEY] = lambda: (gemm_fn(), 0)
    plan[GEMM_KEY] = {"repeats": repeats, "library": gemm_library, "flops": gemm_flops}
    if layer_limit is not None:
        jobs[LAYER_GEMM_KEY] = lambda: (layer_limit["job"](), 0)
        plan[LAYER_GEMM_KEY] = {"repeats": repeats}

    log(f"\n=== {title}: timing (interleaved) ===")
    results: dict[str, np.ndarray] = {}
    compiles: dict[str, list[int]] = {k: [] for k in jobs}

    def on_result(key, _r, _s, out):
        results[key], k = out
        compiles[key].append(k)

    times = interleaved(
        jobs,
        repeats={k: p["repeats"] for k, p in plan.items()},
        on_result=on_result,
        log=log,
        settle_seconds=SETTLE_SECONDS,
    )
    gemm_seconds = times.pop(GEMM_KEY)
    # a ceiling is a best case: the fastest GEMM seen (at start-up or in any round), so "% GEMM" never flatters
    round_gflops = [gemm_flops / t / 1e9 for t in gemm_seconds]
    ceiling_gflops = max(startup_gflops, *round_gflops)
    gemm_plan = plan.pop(GEMM_KEY)
    compiles.pop(GEMM_KEY)
    results.pop(GEMM_KEY)
    limit = None
    if layer_limit is not None:
        layer_seconds = times.pop(LAYER_GEMM_KEY)
        for d in (plan, compiles, results):
            d.pop(LAYER_GEMM_KEY)
        layer_round_gflops = [layer_limit["flops"] / t / 1e9 for t in layer_seconds]
        layer_gflops = max(layer_round_gflops)  # a best case, like the 4096^2 ceiling
        limit = {
            **{k: v for k, v in layer_limit.items() if k != "job"},
            "seconds": layer_seconds,
            "round_gflops": layer_round_gflops,
            "gflops": layer_gflops,
            "median_round_gflops": median(layer_round_gflops),
            "samples_per_second": layer_gflops * 1e9 / layer_limit["needed_flops_per_sample"],
        }

    # agreement of the timed (full-N) runs with jaxsens's timed run
    jax_key = next((c.key for c in comps if c.group == "jaxsens" and c.key in results), None)
    for key, p in plan.items():
        if (
            jax_key
            and key != jax_key
            and plan[jax_key]["n"] == p["n"]
            and by_key[key].ref == by_key[jax_key].ref
        ):
            p["timed_max_rel_err_vs_jaxsens"] = max_rel_err(results[key], results[jax_key])

    rows = []
    rate_of = {k: plan[k]["n"] / median(times[k]) for k in times}
    a_rate = next((rate_of[c.key] for c in comps if c.group == "a" and c.key in rate_of), math.nan)
    bc_rates = [rate_of[c.key] for c in comps if c.group == "bc" and c.key in rate_of]
    best_bc = max(bc_rates) if bc_rates else math.nan
    for c in comps:
        v = verification[c.key]
        row: dict[str, Any] = {"key": c.key, "label": c.label, "note": c.note}
        if c.key in broken:
            row["status"] = f"failed: {v['error'].split(':')[0]} (see JSON)"
        elif v.get("ok") is False:
            row["status"] = f"WRONG (rel err {v['max_rel_err']:.1e})"
        else:
            p = plan[c.key]
            sps = rate_of[c.key]
            row.update(
                status="ok" if v.get("ok") else "unchecked",
                n=p["n"],
                repeats=p["repeats"],
                median_seconds=median(times[c.key]),
                samples_per_second=sps,
                gflops=sps * flops_per_sample / 1e9,
                vs_a=sps / a_rate,
                vs_best_bc=sps / best_bc,
                pct_gemm=100 * sps * flops_per_sample / 1e9 / ceiling_gflops,
            )
            if limit is not None:
                row["pct_limit"] = 100 * sps / limit["samples_per_second"]
        row["verify_max_rel_err"] = v.get("max_rel_err")
        rows.append(row)
    if limit is not None:
        rows.append(
            {
                "key": LAYER_GEMM_KEY,
                "label": f"(e') fp32 GEMM {limit['shape']} (jax)",
                "repeats": repeats,
                "gflops": limit["gflops"],
                "samples_per_second": limit["samples_per_second"],
                "pct_gemm": 100 * limit["gflops"] / ceiling_gflops,
                "pct_limit": 100.0,
                "status": "limit",
            }
        )
    rows.append(
        {
            "key": GEMM_KEY,
            "label": f"(e) fp32 GEMM 4096^2 ({gemm_library})",
            "repeats": repeats,
            "gflops": ceiling_gflops,
            "pct_gemm": 100.0,
            "status": "ceiling",
        }
    )
    meta = {c.key: c.meta() for c in comps if c.meta is not None}
    gemm_plan.update(seconds=gemm_seconds, round_gflops=round_gflops, startup_gflops=startup_gflops)
    return {
        "rows": rows,
        "gemm_ceiling": {**gemm_plan, "gflops": ceiling_gflops, "median_round_gflops": median(round_gflops)},
        "physical_limit": limit,
        "raw_seconds": times,
        "compiles_during_timed_runs": compiles,
        "plan": plan,
        "verification": verification,
        "result_meta": meta,
        "flops_per_sample": flops_per_sample,
    }


def _counted(run: Callable[[int], np.ndarray], n: int) -> tuple[np.ndarray, int]:
    c0 = _COMPILES[0]
    out = run(n)
    return out, _COMPILES[0] - c0


TABLE_COLUMNS = (
    ("label", "competitor", "{}"),
    ("n", "N", "{:,d}"),
    ("repeats", "reps", "{:d}"),
    ("median_seconds", "median s", "{:.3f}"),
    ("samples_per_second", "samples/s", "{:,.0f}"),
    ("gflops", "GFLOP/s", "{:.1f}"),
    ("vs_a", "vs (a)", "{:.2f}x"),
    ("vs_best_bc", "vs best(b,c)", "{:.2f}x"),
    ("pct_gemm", "% GEMM", "{:.0f}%"),
    ("pct_limit", "% limit", "{:.0f}%"),
    ("verify_max_rel_err", "max rel err", "{:.1e}"),
    ("status", "status", "{}"),
)


# ---------------------------------------------------------------------------------------------------- models
def build_mlp_keras(seed: int, *, logits: bool = False, weights=None):
    """The seed-000 MLP in Keras 3, seeded; biases drawn N(0, 0.1^2) so the ReLU kinks are not all at zero."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((MLP_SIZES[0],), name="x")
    h = inputs
    for i, units in enumerate(MLP_SIZES[1:-1]):
        h = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(h)
    out = keras.layers.Dense(MLP_SIZES[-1], activation=None if logits else "softmax", name="out")(h)
    model = keras.Model(inputs, out, name="seed000_mlp_logits" if logits else "seed000_mlp")
    if weights is None:
        rng = np.random.default_rng(seed)
        weights = [
            w if w.ndim == 2 else rng.normal(0, 0.1, w.shape).astype(np.float32) for w in model.get_weights()
        ]
    model.set_weights(weights)
    return model


def dense_params(keras_model) -> list[tuple[np.ndarray, np.ndarray]]:
    w = keras_model.get_weights()
    return [(np.asarray(w[i]), np.asarray(w[i + 1])) for i in range(0, len(w), 2)]


def mlp_apply(params, x, *, final: str = "softmax"):
    """One sample through ReLU dense layers and a softmax (or identity) output, ``params = [(W, b), ...]``."""
    h = x
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    z = h @ w + b
    return jax.nn.softmax(z) if final == "softmax" else z


def torch_mlp(params, *, final: str = "softmax"):
    import torch

    layers = []
    for i, (w, b) in enumerate(params):
        lin = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(params) - 1:
            layers.append(torch.nn.ReLU())
    if final == "softmax":
        layers.append(torch.nn.Softmax(dim=-1))
    net = torch.nn.Sequential(*layers).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def build_lstm_keras(seed: int):
    """The seed-001 LSTM stack in Keras 3, seeded (biases perturbed N(0, 0.1^2) around Keras's init)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(LSTM_SHAPE, name="x")
    h = inputs
    for i, (units, act) in enumerate(zip(LSTM_UNITS, LSTM_ACTIVATIONS)):
        h = keras.layers.LSTM(units, activation=act, return_sequences=True, name=f"lstm_{i}")(h)
    out = keras.layers.Flatten(name="flatten")(h)
    model = keras.Model(inputs, out, name="seed001_lstm")
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            w if w.ndim == 2 else w + rng.normal(0, 0.1, w.shape).astype(np.float32)
            for w in model.get_weights()
        ]
    )
    return model


def lstm_params(keras_model) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``[(kernel [n_in, 4h], recurrent_kernel [h, 4h], bias [4h]), ...]`` (Keras gate order i, f, c, o)."""
    w = keras_model.get_weights()
    return [tuple(np.asarray(a) for a in w[i : i + 3]) for i in range(0, len(w), 3)]


def lstm_apply(params, x):
    """One sample ``[T, F]`` through the Keras LSTM stack (recurrent activation sigmoid), flattened ``[T]``: the
    library's reference (``jaxsens._bench.lstm_apply``, the one `jaxsens bench` checks against).

    The time loop is a ``lax.scan``. (Unrolled as a Python loop, the reverse pass of the 1-unit layer makes XLA:CPU
    fuse the whole recurrence into elementwise loops that recompute shared values exponentially often in T: one VJP
    of 2048 samples took 0.2 s at T = 6, 3.7 s at T = 8 and over 40 s at T = 10.)
    """
    return _bench.lstm_apply(params, x)


def torch_lstm_fn(params):
    """The same LSTM stack written with torch ops (``nn.LSTM`` only has tanh), for ``torch.func`` transforms."""
    import torch

    acts = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
    tparams = [tuple(torch.from_numpy(a) for a in p) for p in params]

    def f(x):
        seq = x
        for (kernel, rec, bias), act_name in zip(tparams, LSTM_ACTIVATIONS):
            act = acts[act_name]
            units = rec.shape[0]
            xw = seq @ kernel + bias
            h = torch.zeros(units, dtype=x.dtype)
            c = torch.zeros(units, dtype=x.dtype)
            outs = []
            for t in range(seq.shape[0]):
                z = xw[t] + h @ rec
                i, fg, g, o = torch.split(z, units)
                c = torch.sigmoid(fg) * c + torch.sigmoid(i) * act(g)
                h = torch.sigmoid(o) * act(c)
                outs.append(h)
            seq = torch.stack(outs)
        return seq.reshape(-1)

    return f


# ---------------------------------------------------------------------------------------------------- neuralsens
class _NeuralSensOutputs:
    """What ``jacobian_mlp`` reads from ``y`` for several outputs: ``.columns``, ``.name`` and ``.unique()``.

    (With a 2-column DataFrame it fails on ``y.unique()`` -- a DataFrame has none -- so this stand-in is passed.)
    """

    def __init__(self, names):
        import pandas as pd

        self.columns = pd.Index(names)
        self.name = "y"

    def unique(self):
        return list(self.columns)


def neuralsens_competitor(params, x: np.ndarray, *, use_torch: bool, max_n: int) -> Competitor:
    """(d) ``neuralsens.partial_derivatives.jacobian_mlp`` on the logits, 100 rows per call, mean |J| from raw_sens."""
    import pandas as pd
    from neuralsens.partial_derivatives import jacobian_mlp

    wts = [w for w, _ in params]
    bias = [b for _, b in params]
    actfunc = ["identity"] + ["relu"] * (len(params) - 1) + ["identity"]  # input layer first, then each layer
    if use_torch:
        import warnings

        import torch

        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

        wts = [torch.from_numpy(w) for w in wts]
        bias = [torch.from_numpy(b) for b in bias]
    y = _NeuralSensOutputs([f"y{i}" for i in range(params[-1][0].shape[1])])
    columns = [f"x{i}" for i in range(x.shape[1])]

    def run(n: int) -> np.ndarray:
        total = 0.0
        for s in range(0, n, NEURALSENS_CHUNK):
            frame = pd.DataFrame(x[s : min(s + NEURALSENS_CHUNK, n)], columns=columns)
            res = jacobian_mlp(wts, bias, actfunc, frame, y, use_torch=use_torch)
            total = total + np.stack([np.abs(np.asarray(d, np.float64)).sum(0) for d in res.raw_sens])
        return total / n

    label = "(d) neuralsens jacobian_mlp, logits" + (" (use_torch)" if use_torch else "")
    return Competitor(
        "neuralsens_torch" if use_torch else "neuralsens_numpy",
        label,
        run,
        ref="logits",
        max_n=max_n,
        n_verify=200,
        repeats=1,
        note="logits; subset",
    )


# ---------------------------------------------------------------------------------------------------- suites
def peer_competitors(args, x, jax_fn, keras_model, torch_fn, torch_label: str) -> list[Competitor]:
    """The peers every suite runs: (a) ``jit(vmap(jacrev(jax_fn)))``, (b) TF ``batch_jacobian`` with and without
    XLA, (c) ``torch.func`` on ``torch_fn()`` (a per-batch callable), unless ``--no-tf`` / ``--no-torch``."""
    run_a, warm_a = jax_loop(jax_fn, x, args.batch)
    comps = [Competitor(A_KEY, "(a) JAX jit(vmap(jacrev)) in-memory", run_a, warm_a, group="a", subset_ok=False)]
    if not args.no_tf:
        for jit in (True, False):
            run_b, warm_b = tf_loop(keras_model, x, args.batch, jit_compile=jit)
            label = f"(b) TF batch_jacobian{' jit_compile' if jit else ''}"
            comps.append(Competitor("tf_xla" if jit else "tf", label, run_b, warm_b, group="bc"))
    if not args.no_torch:
        import torch

        torch.set_num_threads(cpu_count())
        net = torch_fn()
        run_c, warm_c = torch_loop(lambda v: net(v), x, args.batch)
        comps.append(Competitor("torch", torch_label, run_c, warm_c, group="bc"))
    return comps


def layer_gemm_limit(width: int, rows: int, needed_flops_per_sample: float) -> dict[str, Any]:
    """The ``layer_limit`` of :func:`run_suite`: a jitted JAX ``[rows, width] x [width, width]`` float32 matmul
    (the hidden layers' shape), repeated over 8 operands so that one job lasts long enough to time."""
    rng = np.random.default_rng(3)
    w = jax.device_put(rng.standard_normal((width, width), dtype=np.float32))
    xs = [jax.device_put(rng.standard_normal((rows, width), dtype=np.float32)) for _ in range(8)]
    mm = jax.jit(jnp.matmul)

    def job():
        return jax.block_until_ready([mm(x, w) for x in xs])

    job()
    return {
        "job": job,
        "flops": 2.0 * rows * width * width * len(xs),
        "shape": f"[{rows} x {width}] x [{width} x {width}]",
        "needed_flops_per_sample": float(needed_flops_per_sample),
    }


def mlp_suite(args, ceiling: dict[str, Any]) -> dict[str, Any]:
    log(f"\n##### seed-000 MLP {' -> '.join(map(str, MLP_SIZES))} (softmax), N = {args.n:,d} #####")
    os.makedirs(TMP_DIR, exist_ok=True)
    keras_model = build_mlp_keras(0)
    logits_model = build_mlp_keras(0, logits=True, weights=keras_model.get_weights())
    path = os.path.join(TMP_DIR, "seed000_mlp.keras")
    logits_path = os.path.join(TMP_DIR, "seed000_mlp_logits.keras")
    keras_model.save(path)
    logits_model.save(logits_path)
    params = dense_params(keras_model)
    jparams = [(jnp.asarray(w), jnp.asarray(b)) for w, b in params]

    def data_path(n: int) -> str:
        return npy_dataset(os.path.join(TMP_DIR, f"mlp_x_{n}.npy"), n, (MLP_SIZES[0],), seed=0)

    t_data, full_path = timed(lambda: data_path(args.n))
    log(f"  data {full_path} ({t_data:.1f} s)")
    x = np.load(full_path)  # the in-memory copy for (a), (b), (c), (d)

    def from_function(final):
        return lambda: jaxsens.Model.from_function(
            lambda p, v: mlp_apply(p, v, final=final), jparams, input_shape=(MLP_SIZES[0],)
        )

    t_conv, (model, how) = timed(lambda: load_jaxsens_model(path, from_function("softmax")))
    logits_jmodel, how_logits = load_jaxsens_model(logits_path, from_function("logits"))
    log(f"  jaxsens model: {how} ({t_conv:.1f} s)")
    conv_err = check_against_keras(model, keras_model, x[:256], "MLP")

    comps: list[Competitor] = []
    js, why = jaxsens_competitor("jaxsens", "jaxsens (.npy on disk)", model, data_path, ref="softmax")
    if js is not None:
        comps.append(js)
        if args.diagnostics:
            jm, _ = jaxsens_competitor(
                "jaxsens_in_memory",
                "  jaxsens (in-memory array)",
                model,
                lambda n: x[:n],
                ref="softmax",
                note="diagnostic",
            )
            comps.append(jm)
    else:
        log(f"  ! {why}: the jaxsens rows are missing and peers are checked against (a)")
    comps += peer_competitors(
        args, x, lambda v: mlp_apply(jparams, v), keras_model, lambda: torch_mlp(params), "(c) torch.func vmap(jacrev)"
    )

    # references for the logits (NeuralSens cannot differentiate a softmax)
    if logits_jmodel is not None and js is not None:
        jl, _ = jaxsens_competitor(
            "jaxsens_logits",
            "  jaxsens on logits (ref for d)",
            logits_jmodel,
            lambda n: x[:n],
            ref="logits",
            note="reference only",
        )
    else:
        jl = None
    run_al, warm_al = jax_loop(lambda v: mlp_apply(jparams, v, final="logits"), x, args.batch)
    al = Competitor(
        "jax_logits", "  (a) on logits (ref for d)", run_al, warm_al, ref="logits", note="reference only"
    )
    if not args.no_neuralsens:
        ns_max = min(args.neuralsens_n, args.n)
        comps.append(neuralsens_competitor(params, x, use_torch=False, max_n=ns_max))
        if args.neuralsens_torch:
            comps.append(neuralsens_competitor(params, x, use_torch=True, max_n=ns_max))
    # logits references are verified but only timed on the small verification rows
    ref_only = [c for c in (jl, al) if c is not None]
    for c in ref_only:
        c.max_n = c.n_verify = 200
        c.repeats = 1

    fwd = dense_flops(MLP_SIZES)
    # issue 14 item 4: the physical limit, a GEMM at the hidden layers' own shape measured in every round, over
    # the FLOPs a sample needs: one forward pass plus K - 1 pull-backs (K outputs summing to one), each pull-back
    # costing what the forward pass does (the input gradient needs every layer's transposed product)
    needed = (1 + MLP_SIZES[-1] - 1) * fwd
    out = run_suite(
        "MLP",
        comps + ref_only,
        n=args.n,
        n_verify=args.n_verify,
        repeats=args.repeats,
        max_run_seconds=args.max_run_seconds,
        flops_per_sample=jacobian_flops(fwd, MLP_SIZES[-1]),
        gemm_library="numpy" if ceiling["numpy_gflops"] >= ceiling["jax_gflops"] else "jax",
        startup_gflops=ceiling["gflops"],
        reference_order={"softmax": ["jaxsens", A_KEY], "logits": ["jaxsens_logits", "jax_logits"]},
        layer_limit=layer_gemm_limit(MLP_SIZES[1], LAYER_GEMM_ROWS, needed),
    )
    out["rows"] = [r for r in out["rows"] if r["key"] not in {c.key for c in ref_only}]
    out.update(
        model=f"Keras {' -> '.join(map(str, MLP_SIZES))}, ReLU hidden, softmax output",
        model_loaded_by=how,
        logits_model_loaded_by=how_logits,
        converter_vs_keras_max_abs_diff=conv_err,
        n=args.n,
        data=os.path.relpath(full_path),
        flop_formula="(1 + n_outputs) * 2 * sum(n_in * n_out) per sample",
        forward_flops_per_sample=fwd,
        needed_flops_per_sample=needed,
    )
    return out


def lstm_suite(args, ceiling: dict[str, Any]) -> dict[str, Any]:
    n = args.n_lstm
    log(
        f"\n##### seed-001 LSTM {LSTM_SHAPE} -> {LSTM_UNITS} ({'/'.join(LSTM_ACTIVATIONS)}), N = {n:,d} #####"
    )
    os.makedirs(TMP_DIR, exist_ok=True)
    keras_model = build_lstm_keras(1)
    path = os.path.join(TMP_DIR, "seed001_lstm.keras")
    keras_model.save(path)
    params = lstm_params(keras_model)
    jparams = [tuple(jnp.asarray(a) for a in p) for p in params]

    def data_path(m: int) -> str:
        return npy_dataset(os.path.join(TMP_DIR, f"lstm_x_{m}.npy"), m, LSTM_SHAPE, seed=1, dist="uniform")

    full_path = data_path(n)
    x = np.load(full_path)
    t_conv, (model, how) = timed(
        lambda: load_jaxsens_model(
            path, lambda: jaxsens.Model.from_function(lstm_apply, jparams, input_shape=LSTM_SHAPE)
        )
    )
    log(f"  jaxsens model: {how} ({t_conv:.1f} s)")
    conv_err = check_against_keras(model, keras_model, x[:256], "LSTM")

    comps: list[Competitor] = []
    js, why = jaxsens_competitor("jaxsens", "jaxsens (.npy on disk)", model, data_path, ref="softmax")
    if js is not None:
        comps.append(js)
    else:
        log(f"  ! {why}: the jaxsens row is missing and peers are checked against (a)")
    comps += peer_competitors(
        args,
        x,
        lambda v: lstm_apply(jparams, v),
        keras_model,
        lambda: torch_lstm_fn(params),
        "(c) torch.func vmap(jacrev), hand cell",
    )

    fwd = lstm_flops(LSTM_SHAPE[1], LSTM_UNITS, LSTM_SHAPE[0])
    n_out = LSTM_SHAPE[0] * LSTM_UNITS[-1]
    out = run_suite(
        "LSTM",
        comps,
        n=n,
        n_verify=args.n_verify,
        repeats=args.repeats,
        max_run_seconds=args.max_run_seconds,
        flops_per_sample=jacobian_flops(fwd, n_out),
        gemm_library="numpy" if ceiling["numpy_gflops"] >= ceiling["jax_gflops"] else "jax",
        startup_gflops=ceiling["gflops"],
        reference_order={"softmax": ["jaxsens", A_KEY]},
    )
    out.update(
        model=f"Keras Input{LSTM_SHAPE} -> LSTM{LSTM_UNITS} ({'/'.join(LSTM_ACTIVATIONS)}), return_sequences, Flatten",
        model_loaded_by=how,
        converter_vs_keras_max_abs_diff=conv_err,
        n=n,
        data=os.path.relpath(full_path),
        flop_formula="(1 + n_outputs) * sum over layers of 2 * T * 4h * (n_in + h) per sample (matmuls only)",
        forward_flops_per_sample=fwd,
    )
    return out


def scaling_suite(args) -> dict[str, Any]:
    """jaxsens time against N, n_features and n_outputs on ``n_features -> 64 -> 64 -> n_outputs`` MLPs."""
    api = getattr(jaxsens, "jacobian_importance", None)
    if api is None:
        log("\n##### scaling: skipped (jaxsens.jacobian_importance does not exist yet) #####")
        return {"skipped": "jaxsens.jacobian_importance does not exist yet"}
    log("\n##### scaling of jaxsens (synthetic MLPs n_features -> 64 -> 64 -> n_outputs, ReLU) #####")
    hidden = (64, 64)

    def model_for(n_features: int, n_outputs: int):
        sizes = (n_features, *hidden, n_outputs)
        rng = np.random.default_rng(n_features * 1000 + n_outputs)
        params = [
            (
                jnp.asarray(rng.standard_normal((a, b), dtype=np.float32) / np.sqrt(a)),
                jnp.asarray(rng.normal(0, 0.1, b).astype(np.float32)),
            )
            for a, b in itertools.pairwise(sizes)
        ]
        model = jaxsens.Model.from_function(
            lambda p, v: mlp_apply(p, v, final="logits"), params, input_shape=(n_features,)
        )
        return model, sizes

    points = []
    for kind, values in (
        ("n", args.scale_n),
        ("n_features", args.scale_features),
        ("n_outputs", args.scale_outputs),
    ):
        for value in values:
            n = value if kind == "n" else args.scale_base_n
            f = value if kind == "n_features" else 82
            o = value if kind == "n_outputs" else 2
            model, sizes = model_for(f, o)
            path = npy_dataset(os.path.join(TMP_DIR, f"scale_x_{n}x{f}.npy"), n, (f,), seed=2)
            api(model, path)  # warm-up (compile)
            secs = [timed(lambda m=model, p=path: api(m, p))[0] for _ in range(args.repeats)]
            fwd = dense_flops(sizes)
            # auto mode: reverse (one VJP per output) or forward (one JVP per input)
            flops = (1 + min(o, f)) * fwd
            med = median(secs)
            points.append(
                {
                    "sweep": kind,
                    "n": n,
                    "n_features": f,
                    "n_outputs": o,
                    "median_seconds": med,
                    "samples_per_second": n / med,
                    "gflops": n * flops / med / 1e9,
                    "us_per_sample": 1e6 * med / n,
                    "seconds": secs,
                }
            )
            log(
                f"  {kind:<10s} N={n:>9,d} features={f:>4d} outputs={o:>3d}  {med:8.3f} s  "
                f"{n / med:12,.0f} samples/s  {1e6 * med / n:7.2f} us/sample"
            )
    return {
        "hidden": hidden,
        "flop_formula": "(1 + min(n_outputs, n_features)) * 2 * sum(n_in * n_out)",
        "points": points,
    }


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--n", type=int, default=None, help="rows for the MLP suite (default 1,000,000; --quick 20,000)"
    )
    p.add_argument(
        "--n-lstm", type=int, default=None, help="rows for the LSTM suite (default min(N, 200,000))"
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per competitor (default 3; --quick 2)"
    )
    p.add_argument("--quick", action="store_true", help="small N, fewer repeats, short scaling sweeps")
    p.add_argument("--batch", type=int, default=2048, help="rows per chunk for (a), (b), (c) (default 2048)")
    p.add_argument(
        "--n-verify", type=int, default=None, help="rows for the correctness check (default 10,000)"
    )
    p.add_argument("--neuralsens-n", type=int, default=10000, help="cap on NeuralSens rows (default 10,000)")
    p.add_argument(
        "--max-run-seconds",
        type=float,
        default=None,
        help="a peer whose one run would exceed this is timed on a prefix (default 60; --quick 10)",
    )
    p.add_argument("--skip", default="", help="comma-separated suites to skip: mlp, lstm, scaling")
    p.add_argument("--no-tf", action="store_true", help="leave out TensorFlow (b)")
    p.add_argument("--no-torch", action="store_true", help="leave out PyTorch (c)")
    p.add_argument("--no-neuralsens", action="store_true", help="leave out NeuralSens (d)")
    p.add_argument(
        "--neuralsens-torch",
        action="store_true",
        help="also time NeuralSens with use_torch=True (its torch backend)",
    )
    p.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="leave out the diagnostic row jaxsens on an in-memory array",
    )
    p.add_argument("--tag", default=None, help="results file tag (default: cpu, or the accelerator kind)")
    p.add_argument(
        "--markdown", action="store_true", help="print the final tables as Markdown (for the README)"
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.n = args.n or (20000 if quick else 1_000_000)
    args.n_lstm = args.n_lstm or min(args.n, 200_000)
    args.repeats = args.repeats or (2 if quick else 3)
    args.n_verify = min(args.n_verify or (2000 if quick else 10000), args.n)
    args.max_run_seconds = args.max_run_seconds or (10.0 if quick else 60.0)
    if quick:
        args.neuralsens_n = min(args.neuralsens_n, 1000)
    args.scale_n = (1000, 10000) if quick else (10_000, 100_000, 1_000_000)
    args.scale_features = (10, 82) if quick else (10, 82, 500)
    args.scale_outputs = (1, 2) if quick else (1, 2, 10)
    args.scale_base_n = 10000 if quick else 100_000
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - {"mlp", "lstm", "scaling"}
    if unknown:
        p.error(f"--skip got {sorted(unknown)}; choose from mlp, lstm, scaling")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    machine = machine_info()
    log(
        f"machine: {machine['cpu']}, {machine['cores']} cores, jax {machine['versions'].get('jax')} "
        f"on {machine['jax_backend']} {machine['jax_devices']}"
    )
    log("\n##### fp32 GEMM ceiling #####")
    ceiling = gemm_ceiling()
    log(
        f"  numpy {ceiling['numpy_gflops']:.1f} GFLOP/s, JAX {ceiling['jax_gflops']:.1f} GFLOP/s "
        f"(4096^2 fp32; ceiling = {ceiling['gflops']:.1f})"
    )

    suites: dict[str, Any] = {}
    if "mlp" not in args.skip:
        suites["mlp"] = mlp_suite(args, ceiling)
    if "lstm" not in args.skip:
        suites["lstm"] = lstm_suite(args, ceiling)
    if "scaling" not in args.skip:
        suites["scaling"] = scaling_suite(args)

    total = time.perf_counter() - t0
    settings = {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()}
    settings.update(
        rtol=RTOL, settle_seconds=SETTLE_SECONDS, warm_rows=WARM_ROWS, neuralsens_chunk=NEURALSENS_CHUNK
    )
    payload = {
        "benchmark": "jacobian",
        "machine": machine,
        "settings": settings,
        "gemm_ceiling": ceiling,
        **suites,
        "total_seconds": total,
    }
    path = write_json(f"jacobian_{args.tag or result_tag()}.json", payload)

    for name in ("mlp", "lstm"):
        if name in suites:
            s = suites[name]
            log(
                f"\n{name.upper()}: {s['model']}; N = {s['n']:,d}; {s['flops_per_sample'] / 1e6:.3f} MFLOP/sample; "
                f"GEMM ceiling {s['gemm_ceiling']['gflops']:.1f} GFLOP/s (best of start-up and every round; "
                f"round median {s['gemm_ceiling']['median_round_gflops']:.1f})"
            )
            log(f"model: {s['model_loaded_by']}")
            log(format_table(s["rows"], TABLE_COLUMNS, markdown=args.markdown))
            _targets(s)
    log(f"\nwrote {os.path.relpath(path)}  (total {total / 60:.1f} min)")
    return 0


def _targets(suite: dict[str, Any]) -> None:
    row = next((r for r in suite["rows"] if r["key"] == "jaxsens" and "samples_per_second" in r), None)
    if row is None:
        log("targets: no jaxsens row")
        return
    checks = [
        ("vs (a) >= 0.9x", row["vs_a"], 0.9),
        ("vs best of (b),(c) >= 1.0x", row["vs_best_bc"], 1.0),
        (">= 80% of GEMM", row["pct_gemm"], 80.0),
    ]
    if "pct_limit" in row:  # issue 14 item 4 (MLP)
        checks.append((">= 85% of the layer-shape limit", row["pct_limit"], 85.0))
    tf = next((r for r in suite["rows"] if r["key"] == "tf" and "samples_per_second" in r), None)
    if "pct_limit" not in row and tf is not None:  # issue 14 item 4 (LSTM)
        checks += [
            ("vs (a) >= 1.2x", row["vs_a"], 1.2),
            ("vs TF batch_jacobian >= 1.2x", row["samples_per_second"] / tf["samples_per_second"], 1.2),
        ]
    verdict = lambda v, t: "n/a" if math.isnan(v) else ("PASS" if v >= t else "MISS")
    log("targets: " + ", ".join(f"{name}: {verdict(v, t)}" for name, v, t in checks))


if __name__ == "__main__":
    sys.exit(main())
