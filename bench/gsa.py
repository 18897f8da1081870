"""Sobol indices end to end: jaxsens vs SALib (sample + Keras ``predict`` + analyze) on the seed-000 MLP, and
the analysis step alone vs jaxgsa given the same outputs. Issue 13, item 5.

    python bench/gsa.py [--n 16384] [--repeats 3] [--salib-repeats 1] [--bootstrap 100] [--dist norm]
                        [--keras-batch 65536] [--jaxgsa-python PATH] [--quick] [--tag TAG]

The model: the seed-000 MLP (82 -> 500 -> 500 -> 500 -> 2 softmax, relu), built in Keras by
``bench/jacobian.py``'s ``build_mlp_keras(0)``, saved as ``.keras`` and loaded with ``jaxsens.load_model``
(the Keras -> ONNX -> JAX converter), so both sides run the same float32 weights (checked against ``predict``
first). The problem: 82 independent inputs ``x0 .. x81``, each standard normal (``--dist norm``: SALib's
``dists: norm`` with ``bounds [0, 1]`` = [mean, sd], what the model sees on standardized data) or U(-1, 1)
(``--dist unif``). First- and total-order indices of both outputs, ``n = --n`` rows per base matrix (N = 2^14:
the model runs ``N * (D + 2) = 1,376,256`` times), 95% intervals from ``--bootstrap`` resamples on every side:

* ``jaxsens``: ``jaxsens.sobol_indices(model, problem, n=N, key=0, n_bootstrap=B)``: one streamed pass that
  draws ``A``, ``B`` and the ``A_B^i`` inside the kernel (plain Monte Carlo from per-row keys), runs the model
  on the ``(D + 2) * batch`` rows of a chunk in one call and folds the estimator sums and their
  Poisson-bootstrap replicates. Sampling, model evaluation and analysis are one compiled kernel and cannot be
  timed apart; what can be timed is the same call on a trivial model (``x -> [sum x, sum x^2]``, same chunk
  size): the sampling and the analysis without the network (row "sampling + analysis only").
* ``SALib``: the usual pipeline, phases timed separately: ``SALib.sample.sobol.sample(problem, N,
  calc_second_order=False, seed=1)`` (scrambled Sobol' sequence; ``N * (D + 2)`` rows ``[1376256, 82]``
  float64, 900 MB), Keras ``model.predict(X, batch_size=--keras-batch)``, then
  ``SALib.analyze.sobol.analyze(problem, Y[:, k], calc_second_order=False, num_resamples=B, seed=2)`` once per
  output (SALib analyses one output per call).

The two estimate the same indices from different samples (quasi-random vs pseudo-random), so they must
agree within their intervals: for every output, input and order, ``|jaxsens - SALib|`` is compared with the
half-width of the difference's 95% interval, ``sqrt(conf_jaxsens^2 + conf_SALib^2)``; about 5% may fall
outside by chance. The run stops with an error when more than 20% do, or any difference exceeds 4
half-widths (8 standard errors).
The two softmax outputs sum to 1, so both have the same indices (checked: equal to float32 rounding).

Analysis step given the same outputs (part (c)): the ``Y`` of SALib's ``predict`` (SALib's row layout: per
base row ``A, A_B^1 .. A_B^D, B``), float64, both outputs:

* ``SALib analyze``: the analysis phase above (two calls, one per output);
* ``jaxgsa 1.3.1``: ``jaxgsa.sobol.analyze(design, Y, n_bootstrap=B, ci_method="gaussian", key=0)`` on both
  outputs in one call (vectorised over outputs), ``design`` a ``SobolSamples`` with the identity expansion map
  over SALib's rows (its Saltelli layout is SALib's). jaxgsa needs Python >= 3.12 and jax >= 0.11.2, and
  jaxsens pins jax < 0.11 on Python 3.11, so it cannot share this process: it runs in its own virtual
  environment (``--jaxgsa-python``, default ``bench/results/tmp/jaxgsa-venv/bin/python``; make it with
  ``python3.12 -m venv bench/results/tmp/jaxgsa-venv`` and ``bench/results/tmp/jaxgsa-venv/bin/pip install
  jaxgsa==1.3.1``) as ``python bench/gsa.py --jaxgsa-worker Y.npy``, which times the first call (XLA compile
  included) and warm calls inside that process (x64 off, jaxgsa's default: it computes in float32). Its values
  must equal SALib's on the same ``Y`` (same estimators: Saltelli 2010 first order, Jansen total order) to
  float32 rounding. Without that interpreter the jaxgsa rows are left out and the JSON says why.
* jaxsens cannot analyse outputs computed elsewhere (its sampling, model and analysis are one pass); its
  comparable figure is the trivial-model run above (which also draws the samples the two others are given).

Timings are medians of interleaved rounds (``_common.interleaved``: jaxsens, SALib pipeline, trivial-model
jaxsens, jaxgsa worker), after untimed warm-ups (jaxsens: the first chunk of the real call, which compiles the
kernel; Keras: a small ``predict``). SALib's pipeline takes minutes on 2 cores (``sample`` fills the matrix
in a Python loop), so it gets ``--salib-repeats`` rounds. Writes ``bench/results/gsa_<tag>.json`` (tag:
``cpu`` or the accelerator kind) and prints the tables.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import TMP_DIR, format_table, interleaved, machine_info, median, result_tag, write_json

N_FEATURES, HIDDEN, N_OUTPUTS = 82, 500, 2
FLOPS_PER_EVAL = 2 * (N_FEATURES * HIDDEN + 2 * HIDDEN * HIDDEN + HIDDEN * N_OUTPUTS)  # dense layers, forward
JAXGSA_PYTHON = os.path.join(TMP_DIR, "jaxgsa-venv", "bin", "python")
JAXGSA_VERSION = "1.3.1"
ORDERS = ("S1", "ST")


def make_problem(dist: str) -> dict:
    """SALib's problem dict: 82 independent standard normals (``norm``) or U(-1, 1) (``unif``)."""
    bounds = [[0.0, 1.0]] if dist == "norm" else [[-1.0, 1.0]]
    return {
        "num_vars": N_FEATURES,
        "names": [f"x{i}" for i in range(N_FEATURES)],
        "bounds": bounds * N_FEATURES,
        "dists": [dist] * N_FEATURES,
    }


# ---------------------------------------------------------------------------------------------------- jaxsens
class _Stop(Exception):
    pass


def warm_jaxsens(run) -> int:
    """Run ``run(progress=...)`` until its first chunk is done (the kernel is compiled by then); return that
    chunk's row count (the engine's batch size)."""
    seen = []

    def progress(done, total):
        if done:
            seen.append(int(done))
            raise _Stop

    try:
        run(progress=progress)
    except _Stop:
        pass
    if not seen:
        raise SystemExit("warm-up: jaxsens reported no chunk")
    return seen[0]


def trivial_model():
    """``x -> [sum x, sum x^2]``: two nearly free outputs, to time jaxsens' sampling and analysis alone."""
    import jax.numpy as jnp

    import jaxsens

    return jaxsens.Model.from_function(
        lambda p, x: jnp.stack([jnp.sum(x), jnp.sum(x * x)]), None, input_shape=(N_FEATURES,)
    )


def jaxsens_indices(res) -> dict:
    return {
        "S1": np.asarray(res.first_order),
        "ST": np.asarray(res.total_order),
        "S1_conf": np.asarray(res.first_order_conf),
        "ST_conf": np.asarray(res.total_order_conf),
    }


# ---------------------------------------------------------------------------------------------------- SALib
def salib_pipeline(keras_model, problem, n, n_boot, keras_batch) -> dict:
    """SALib sample -> Keras predict -> SALib analyze (one call per output), each phase timed."""
    from SALib.analyze import sobol as salib_analyze
    from SALib.sample import sobol as salib_sample

    problem = copy.deepcopy(problem)  # SALib writes into it ("sample_scaled")
    t0 = time.perf_counter()
    x = salib_sample.sample(problem, n, calc_second_order=False, seed=1)
    t1 = time.perf_counter()
    y = keras_model.predict(x, batch_size=keras_batch, verbose=0)
    t2 = time.perf_counter()
    y = np.asarray(y, np.float64)
    res = [
        salib_analyze.analyze(problem, y[:, k], calc_second_order=False, num_resamples=n_boot, seed=2)
        for k in range(y.shape[1])
    ]
    t3 = time.perf_counter()
    del x
    out = {key: np.stack([r[key] for r in res]) for key in ("S1", "ST", "S1_conf", "ST_conf")}
    return {"phases": {"sample": t1 - t0, "evaluate": t2 - t1, "analyze": t3 - t2}, "indices": out, "y": y}


# ---------------------------------------------------------------------------------------------------- jaxgsa
def jaxgsa_worker(y_path: str, n_boot: int, repeats: int) -> None:
    """Runs under the jaxgsa venv: analyse ``Y`` (SALib layout ``[n (D + 2), k]``), print one JSON line."""
    import jax
    import jaxgsa
    import jaxgsa.sobol
    from jaxgsa import Problem

    y = np.load(y_path)
    d = N_FEATURES
    rows = y.shape[0]
    problem = Problem.from_dict(
        {f"x{i}": {"dist": "gaussian", "mean": 0.0, "variance": 1.0} for i in range(d)}
    )
    design = jaxgsa.sobol.SobolSamples(  # the rows themselves are never read by analyze: a zero-stride view
        samples=np.broadcast_to(np.zeros((1, d), np.float32), (rows, d)),
        n_expanded=rows,
        expanded_to_unique=np.arange(rows),
        base_n=rows // (d + 2),
        n_params=d,
        calc_second_order=False,
        problem=problem,
    )

    def call():
        r = jaxgsa.sobol.analyze(design, y, n_bootstrap=n_boot, ci_method="gaussian", key=0, verbose=False)
        jax.block_until_ready((r.S1, r.ST, r.S1_conf, r.ST_conf))
        return r

    times = []
    for _ in range(repeats + 1):  # the first call compiles
        t0 = time.perf_counter()
        r = call()
        times.append(time.perf_counter() - t0)
    half = lambda c: (
        (np.asarray(c[1], np.float64) - np.asarray(c[0], np.float64)) / 2
    )  # [lower, upper] -> half
    print(
        json.dumps(
            {
                "first_call": times[0],
                "warm": times[1:],
                "jaxgsa": jaxgsa.__version__,
                "jax": jax.__version__,
                "x64": bool(jax.config.jax_enable_x64),
                "dtype": str(np.asarray(r.S1).dtype),
                "S1": np.asarray(r.S1, np.float64).tolist(),
                "ST": np.asarray(r.ST, np.float64).tolist(),
                "S1_conf": half(r.S1_conf).tolist(),
                "ST_conf": half(r.ST_conf).tolist(),
            }
        )
    )


def run_jaxgsa(python: str, y_path: str, n_boot: int, repeats: int) -> dict:
    cmd = [
        python,
        os.path.abspath(__file__),
        "--jaxgsa-worker",
        y_path,
        "--bootstrap",
        str(n_boot),
        "--worker-repeats",
        str(repeats),
    ]
    proc = subprocess.run(
        cmd, check=False, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"jaxgsa worker failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("S1", "ST", "S1_conf", "ST_conf"):
        out[key] = np.asarray(out[key])
    return out


def jaxgsa_status(python: str) -> tuple[bool, str]:
    if not os.path.exists(python):
        return False, (
            f"no jaxgsa interpreter at {python}: jaxgsa {JAXGSA_VERSION} requires Python >= 3.12 and "
            "jax >= 0.11.2 (jaxsens pins jax < 0.11), so it needs its own venv; see the docstring"
        )
    proc = subprocess.run(
        [python, "-c", "import jaxgsa; print(jaxgsa.__version__)"],
        check=False,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return False, f"{python} cannot import jaxgsa: {proc.stderr.strip()[-500:]}"
    return True, f"jaxgsa {proc.stdout.strip()} under {python}"


# ------------------------------------------------------------------------------------------------ agreement
def agreement(a: dict, b: dict) -> dict:
    """Per order: max |a - b|, the largest ratio to the difference's 95% half-width, the share outside it."""
    out = {}
    for order in ORDERS:
        diff = np.abs(a[order] - b[order])
        half = np.sqrt(a[order + "_conf"] ** 2 + b[order + "_conf"] ** 2)
        ratio = diff / half
        out[order] = {
            "max_abs_diff": float(diff.max()),
            "max_diff_over_half_width": float(ratio.max()),
            "share_outside_95": float(np.mean(ratio > 1.0)),
            "median_half_width_a": float(np.median(a[order + "_conf"])),
            "median_half_width_b": float(np.median(b[order + "_conf"])),
        }
    return out


def top_table(named: dict, top: int) -> str:
    """The ``top`` inputs by jaxsens' total order (output 0): S1 and ST with half-widths from every source."""
    first = next(iter(named.values()))
    order = np.argsort(-first["ST"][0])[:top]
    rows = []
    for j in order:
        row = {"input": f"x{j}"}
        for name, v in named.items():
            for o in ORDERS:
                row[f"{name}_{o}"] = f"{v[o][0, j]:.4f} +- {v[o + '_conf'][0, j]:.4f}"
        rows.append(row)
    cols = [("input", "input", "{}")] + [(f"{n}_{o}", f"{n} {o}", "{}") for n in named for o in ORDERS]
    return format_table(rows, cols)


# ---------------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2**14, help="rows per base matrix (SALib wants a power of 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds of jaxsens and jaxgsa")
    ap.add_argument(
        "--salib-repeats", type=int, default=1, help="timed rounds of the SALib pipeline (minutes each)"
    )
    ap.add_argument(
        "--bootstrap", type=int, default=100, help="bootstrap replicates / resamples on every side"
    )
    ap.add_argument("--dist", choices=("norm", "unif"), default="norm")
    ap.add_argument("--keras-batch", type=int, default=65536)
    ap.add_argument("--jaxgsa-python", default=JAXGSA_PYTHON)
    ap.add_argument("--worker-repeats", type=int, default=2, help="warm jaxgsa calls per worker process")
    ap.add_argument("--quick", action="store_true", help="--n 1024, 1 round each")
    ap.add_argument(
        "--tag", default=None, help="results file gsa_<tag>.json (default: cpu or the accelerator)"
    )
    ap.add_argument("--jaxgsa-worker", metavar="Y.npy", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.jaxgsa_worker:
        return jaxgsa_worker(args.jaxgsa_worker, args.bootstrap, args.worker_repeats)
    if args.quick:
        args.n, args.repeats, args.salib_repeats = 1024, 1, 1
    if args.n < 2 or args.n & (args.n - 1):
        raise SystemExit(f"--n must be a power of 2 (SALib's Sobol' sequence), got {args.n}")

    from jacobian import build_mlp_keras

    import jaxsens

    n, d, n_boot = args.n, N_FEATURES, args.bootstrap
    evals = n * (d + 2)
    os.makedirs(TMP_DIR, exist_ok=True)
    keras_model = build_mlp_keras(0)
    path = os.path.join(TMP_DIR, "seed000_mlp_gsa.keras")
    keras_model.save(path)
    model = jaxsens.load_model(path)
    xs = np.random.default_rng(0).standard_normal((256, d)).astype(np.float32)
    conv_err = float(np.abs(np.asarray(model(xs)) - keras_model.predict(xs, verbose=0)).max())
    if not conv_err <= 1e-5:
        raise SystemExit(f"converted model differs from Keras predict by {conv_err:.2e} (> 1e-5); not timing")
    problem = make_problem(args.dist)
    tiny = trivial_model()
    ok_jaxgsa, jaxgsa_note = jaxgsa_status(args.jaxgsa_python)
    print(
        f"seed-000 MLP (Keras -> jaxsens, max |diff| {conv_err:.1e}), {d} inputs {args.dist}, N = {n:,}: "
        f"{evals:,} model evaluations, {n_boot} bootstrap; {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; {jaxgsa_note}"
    )

    # untimed warm-ups: one chunk of a jaxsens call compiles its kernel; a small predict builds Keras' graph
    def run_js(progress=None):
        return jaxsens.sobol_indices(model, problem, n=n, key=0, n_bootstrap=n_boot, progress=progress)

    t0 = time.perf_counter()
    batch = warm_jaxsens(run_js)
    print(
        f"  warm-up: jaxsens chunk = {batch} base rows ({batch * (d + 2):,} model rows per call), "
        f"{time.perf_counter() - t0:.1f} s"
    )

    def run_tiny(progress=None):
        return jaxsens.sobol_indices(
            tiny, problem, n=n, key=0, n_bootstrap=n_boot, batch_size=batch, progress=progress
        )

    warm_jaxsens(run_tiny)
    keras_model.predict(np.zeros((1024, d)), batch_size=args.keras_batch, verbose=0)

    last: dict = {}
    salib_phases: list[dict] = []
    gsa_runs: list[dict] = []
    loads: list = []
    y_path = os.path.join(TMP_DIR, "gsa_salib_Y.npy")

    def on_result(name, r, seconds, result):
        if name == "SALib pipeline":
            np.save(y_path, result.pop("y"))  # the jaxgsa worker of this round analyses these outputs
            last[name] = result
            salib_phases.append(result["phases"])
            p = result["phases"]
            print(
                f"      phases: sample {p['sample']:.1f} s, predict {p['evaluate']:.1f} s, "
                f"analyze {p['analyze']:.1f} s"
            )
        elif name == "jaxgsa worker":
            gsa_runs.append(result)
            print(
                f"      inside the worker: first call {result['first_call']:.2f} s, warm "
                f"{', '.join(f'{t:.2f}' for t in result['warm'])} s"
            )
        else:
            last[name] = result
        loads.append([name, os.getloadavg()[0]])  # a shared machine: how busy it was after each run
        print(f"      load average {loads[-1][1]:.1f}")

    jobs = {
        "jaxsens": run_js,
        "SALib pipeline": lambda: salib_pipeline(keras_model, problem, n, n_boot, args.keras_batch),
        "jaxsens trivial model": run_tiny,
    }
    repeats = {
        "jaxsens": args.repeats,
        "SALib pipeline": args.salib_repeats,
        "jaxsens trivial model": args.repeats,
    }
    if ok_jaxgsa:
        jobs["jaxgsa worker"] = lambda: run_jaxgsa(args.jaxgsa_python, y_path, n_boot, args.worker_repeats)
        repeats["jaxgsa worker"] = args.repeats
    times = interleaved(jobs, repeats=repeats, on_result=on_result)

    # ---- agreement (the last round's results)
    js = jaxsens_indices(last["jaxsens"])
    sa = last["SALib pipeline"]["indices"]
    checks = {
        "jaxsens_vs_SALib": agreement(js, sa),
        "jaxsens_output0_vs_output1_max_abs_diff": float(
            max(np.abs(js[o][0] - js[o][1]).max() for o in ORDERS)
        ),
    }
    named = {"jaxsens": js, "SALib": sa}
    if gsa_runs:
        g = gsa_runs[-1]  # analysed the Y of the last SALib round
        checks["jaxgsa_vs_SALib_same_Y"] = {
            o: {
                "max_abs_diff": float(np.abs(g[o] - sa[o]).max()),
                "median_half_width_ratio": float(np.median(g[o + "_conf"] / sa[o + "_conf"])),
            }
            for o in ORDERS
        }
        checks["jaxsens_vs_jaxgsa"] = agreement(js, g)
        named["jaxgsa"] = g
    print()
    print(
        "top 8 inputs by total order (output 0; output 1 is 1 - output 0, so its indices are the same), "
        "estimate +- 95% half-width:"
    )
    print(top_table(named, 8))
    print()
    for k, v in checks.items():
        print(f"  {k}: {json.dumps(v)}")

    # ---- tables
    t_js, t_sa = median(times["jaxsens"]), median(times["SALib pipeline"])
    t_tiny = median(times["jaxsens trivial model"])
    ph = {p: median([r[p] for r in salib_phases]) for p in ("sample", "evaluate", "analyze")}
    end_to_end = [
        {
            "what": "jaxsens.sobol_indices (sampling + model + analysis: one streamed pass)",
            "seconds": t_js,
            "speedup": t_sa / t_js,
            "evals_per_s": evals / t_js,
            "gflops": evals * FLOPS_PER_EVAL / t_js / 1e9,
            "raw": times["jaxsens"],
        },
        {
            "what": "SALib sample + Keras predict + SALib analyze (2 outputs)",
            "seconds": t_sa,
            "speedup": 1.0,
            "evals_per_s": evals / t_sa,
            "raw": times["SALib pipeline"],
        },
        {
            "what": "  SALib.sample.sobol.sample",
            "seconds": ph["sample"],
            "raw": [r["sample"] for r in salib_phases],
        },
        {
            "what": f"  Keras predict (batch_size={args.keras_batch:,})",
            "seconds": ph["evaluate"],
            "evals_per_s": evals / ph["evaluate"],
            "gflops": evals * FLOPS_PER_EVAL / ph["evaluate"] / 1e9,
            "raw": [r["evaluate"] for r in salib_phases],
        },
        {
            "what": "  SALib.analyze.sobol.analyze x 2 outputs",
            "seconds": ph["analyze"],
            "raw": [r["analyze"] for r in salib_phases],
        },
    ]
    analysis = [
        {"what": "SALib analyze, one call per output (given Y)", "seconds": ph["analyze"]},
        {
            "what": "jaxsens sampling + analysis only (trivial model, same chunks; draws its own rows)",
            "seconds": t_tiny,
            "raw": times["jaxsens trivial model"],
        },
    ]
    if gsa_runs:
        warm = [t for r in gsa_runs for t in r["warm"]]
        first = [r["first_call"] for r in gsa_runs]
        analysis[1:1] = [
            {
                "what": f"jaxgsa {gsa_runs[0]['jaxgsa']} analyze, both outputs in one call, warm (given Y)",
                "seconds": median(warm),
                "raw": warm,
            },
            {
                "what": "  the same, first call in its process (XLA compile included)",
                "seconds": median(first),
                "raw": first,
            },
        ]
    for row in analysis:
        row["vs_salib"] = ph["analyze"] / row["seconds"]
    cols = [
        ("what", "end to end", "{}"),
        ("seconds", "median s", "{:.2f}"),
        ("speedup", "vs SALib", "{:.1f}x"),
        ("evals_per_s", "model evals/s", "{:,.0f}"),
        ("gflops", "GFLOP/s", "{:.1f}"),
    ]
    acols = [
        ("what", "analysis step", "{}"),
        ("seconds", "median s", "{:.2f}"),
        ("vs_salib", "vs SALib analyze", "{:.1f}x"),
    ]
    for md in (False, True):
        print()
        print(format_table(end_to_end, cols, markdown=md))
        print()
        print(format_table(analysis, acols, markdown=md))

    bad = checks["jaxsens_vs_SALib"]
    worst_share = max(bad[o]["share_outside_95"] for o in ORDERS)
    worst_ratio = max(bad[o]["max_diff_over_half_width"] for o in ORDERS)
    verdict = "agree" if worst_share <= 0.2 and worst_ratio <= 4.0 else "DISAGREE"
    name = f"gsa_{args.tag or result_tag()}.json"
    out = write_json(
        name,
        {
            "machine": machine_info(),
            "salib": importlib.metadata.version("SALib"),
            "load_average_after_each_run": loads,
            "n": n,
            "n_features": d,
            "n_outputs": N_OUTPUTS,
            "model_evaluations": evals,
            "flops_per_evaluation": FLOPS_PER_EVAL,
            "problem": problem,
            "bootstrap": n_boot,
            "keras_batch": args.keras_batch,
            "jaxsens_chunk_base_rows": batch,
            "conversion_max_abs_diff": conv_err,
            "repeats": repeats,
            "jaxgsa": jaxgsa_note,
            "jaxgsa_worker_runs": [
                {k: v for k, v in r.items() if k not in ("S1", "ST", "S1_conf", "ST_conf")} for r in gsa_runs
            ],
            "end_to_end": end_to_end,
            "analysis_step": analysis,
            "salib_phases": salib_phases,
            "times": times,
            "checks": checks,
            "verdict": verdict,
            "indices": {k: {o: v[o] for o in ("S1", "ST", "S1_conf", "ST_conf")} for k, v in named.items()},
        },
    )
    print(
        f"\njaxsens vs SALib: {verdict} (outside the 95% interval of the difference: {worst_share:.1%}, "
        f"largest |diff| / half-width: {worst_ratio:.2f})\nwrote {out}"
    )
    if verdict != "agree":
        raise SystemExit("jaxsens and SALib disagree beyond their intervals (see checks in the JSON)")


if __name__ == "__main__":
    main()
