"""A new process's first-call time, JAX's persistent compilation cache cold, warm and off (issue 14, item 3).

Each measurement is one fresh Python process that imports jaxsens, loads the model from its ``.onnx`` file and
computes ``jaxsens.jacobian_importance(model, "x.npy")`` once, every option at its default. Its time is taken
from just before the parent starts the process to the moment the child holds the result (wall clock, one
machine), and split into import, model load and first call (the child's own clocks). Conditions, per workload:

* ``cold``: ``JAXSENS_CACHE_DIR`` a fresh empty folder: everything is compiled, and written;
* ``warm``: ``JAXSENS_CACHE_DIR`` a folder a previous process filled with the same model and chunk shape:
  every executable is loaded (the child counts JAX's ``/jax/compilation_cache/cache_hits`` and compile
  requests);
* ``off``: ``JAXSENS_CACHE_DIR=off``: no persistent cache at all (what every process paid before).

Workloads: the seed-000 MLP (82 -> 500 -> 500 -> 500 -> 2 softmax) and the seed-001 LSTM stack (``[10, 3]`` ->
LSTM 10 -> 5 -> 1, 10 outputs), built by ``jaxsens._bench`` (seeded weights, written to ONNX: the children
need no TensorFlow). Conditions and workloads are interleaved (round robin) and medians of ``--repeats``
processes are reported; ``warm / cold`` is the issue's target ratio (<= 0.3). Output: a table and
``bench/results/compile_cache_<tag>.json`` with every raw time::

    python bench/compile_cache.py               # 5 processes per workload and condition, n = 1,024 rows
    python bench/compile_cache.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

T_START = time.time()  # the child's own start (after the interpreter's), before any heavy import

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CONDITIONS = ("cold", "warm", "off")
WORKLOADS = ("mlp", "lstm")


def child(model_path: str, data_path: str) -> None:
    """In the fresh process: import, load, first call; print one JSON line."""
    import jax

    events: dict[str, int] = {}
    jax.monitoring.register_event_listener(
        lambda name, **kw: events.__setitem__(name, events.get(name, 0) + 1)
    )
    import jaxsens
    from jaxsens import _cache

    t_import = time.time()
    model = jaxsens.load_model(model_path)
    t_load = time.time()
    r = jaxsens.jacobian_importance(model, data_path)
    t_result = time.time()
    cache = {k.rsplit("/", 1)[-1]: v for k, v in events.items() if "compilation_cache" in k}
    print(
        json.dumps(
            {
                "import_s": t_import - T_START,
                "load_s": t_load - t_import,
                "first_call_s": t_result - t_load,
                "t_result": t_result,
                "cache": cache,
                "cache_state": _cache.state(),
                "checksum": float(r.mean_abs.sum()),
            }
        )
    )


def spawn(model_path: str, data_path: str, cache_dir: str) -> dict:
    env = {**os.environ, "JAXSENS_CACHE_DIR": cache_dir, "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", model_path, data_path],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["total_s"] = out["t_result"] - t0
    return out


def prepare(tmp: str, n: int) -> dict[str, tuple[str, str]]:
    import numpy as np
    import onnx
    from _common import npy_dataset

    from jaxsens import _bench
    from jaxsens._dense import dense_onnx

    os.makedirs(tmp, exist_ok=True)
    mlp = os.path.join(tmp, "seed000_mlp.onnx")
    onnx.save(dense_onnx(_bench._seed000_layers(), graph_name="seed000"), mlp)
    lstm = os.path.join(tmp, "seed001_lstm.onnx")
    onnx.save(_bench.seed001_onnx(_bench.seed001_params()), lstm)
    x_mlp = npy_dataset(os.path.join(tmp, f"cc_mlp_x_{n}.npy"), n, (_bench.MLP_SIZES[0],), seed=0)
    x_lstm = npy_dataset(
        os.path.join(tmp, f"cc_lstm_x_{n}.npy"), n, _bench.LSTM_SHAPE, seed=1, dist="uniform"
    )
    assert np.load(x_mlp).shape[0] == n
    return {"mlp": (mlp, x_mlp), "lstm": (lstm, x_lstm)}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    from _common import TMP_DIR, format_table, machine_info, median, result_tag, write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per workload and condition")
    ap.add_argument("--n", type=int, default=1024, help="rows of the first call")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    files = prepare(TMP_DIR, args.n)

    root = tempfile.mkdtemp(prefix="jaxsens-cc-")
    warm_dirs = {}
    for w in workloads:  # fill each warm folder once (untimed)
        warm_dirs[w] = os.path.join(root, f"warm_{w}")
        spawn(*files[w], warm_dirs[w])
    runs: dict[tuple[str, str], list[dict]] = {(w, c): [] for w in workloads for c in CONDITIONS}
    for r in range(args.repeats):
        for w in workloads:
            for c in CONDITIONS:
                folder = {"cold": os.path.join(root, f"cold_{w}_{r}"), "warm": warm_dirs[w], "off": "off"}[c]
                out = spawn(*files[w], folder)
                runs[(w, c)].append(out)
                print(
                    f"  repeat {r + 1}/{args.repeats} {w:<5s} {c:<5s} total {out['total_s']:6.2f} s "
                    f"(import {out['import_s']:.2f}, load {out['load_s']:.2f}, first call "
                    f"{out['first_call_s']:.2f}) cache {out['cache']}",
                    flush=True,
                )

    rows = []
    for w in workloads:
        cold = {k: median([o[k] for o in runs[(w, "cold")]]) for k in ("total_s", "first_call_s")}
        for c in CONDITIONS:
            outs = runs[(w, c)]
            m = {k: median([o[k] for o in outs]) for k in ("total_s", "import_s", "load_s", "first_call_s")}
            hits = median([o["cache"].get("cache_hits", 0) for o in outs])
            asked = median([o["cache"].get("compile_requests_use_cache", 0) for o in outs])
            rows.append(
                {
                    "workload": w,
                    "condition": c,
                    **m,
                    "hits": f"{hits:.0f}/{asked:.0f}",
                    "total_vs_cold": m["total_s"] / cold["total_s"],
                    "first_call_vs_cold": m["first_call_s"] / cold["first_call_s"],
                }
            )
        sums = {round(o["checksum"], 12) for c in CONDITIONS for o in runs[(w, c)]}
        if len(sums) != 1:
            print(f"NOTE {w}: results differ between conditions: {sums}")
    columns = (
        ("workload", "workload", "{}"),
        ("condition", "cache", "{}"),
        ("total_s", "start->result s", "{:.2f}"),
        ("import_s", "import s", "{:.2f}"),
        ("load_s", "load s", "{:.2f}"),
        ("first_call_s", "first call s", "{:.2f}"),
        ("hits", "hits/requests", "{}"),
        ("total_vs_cold", "total vs cold", "{:.2f}x"),
        ("first_call_vs_cold", "first call vs cold", "{:.2f}x"),
    )
    print()
    print(format_table(rows, columns))
    path = write_json(
        f"compile_cache_{result_tag()}.json",
        {
            "machine": machine_info(),
            "settings": vars(args),
            "rows": rows,
            "runs": {f"{w}/{c}": v for (w, c), v in runs.items()},
        },
    )
    print(f"\nwrote {path}")
    print(format_table(rows, columns, markdown=True))


if __name__ == "__main__":
    main()
