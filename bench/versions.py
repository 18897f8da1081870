"""Load time and throughput of the bundled model across two checkouts of jaxsens, interleaved.

    git worktree add /tmp/old 2afb9c2
    python bench/versions.py /tmp/old . --repeats 5 --rows 40000

Each repeat runs one fresh process per checkout (old, new, old, new, ...) that loads the bundled model, times a warm
``jacobian_importance``, ``model(xs)``, ``perturbation_importance`` and ``permutation_importance`` on the same
seeded rows, and prints one JSON line; the table reports
medians and the new/old ratio, and the JSON goes to ``bench/results/versions.json``. A check that the hot path did
not get slower after a change, not a comparison with other tools (bench/jacobian.py does that).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    t0 = time.perf_counter()
    import jaxsens
    t_import = time.perf_counter() - t0
    rows = int(sys.argv[1])
    X = np.random.default_rng(0).normal(size=(rows, 82)).astype(np.float32)
    t0 = time.perf_counter(); m = jaxsens.load_model(jaxsens.examples.default_model_path())
    t_load = time.perf_counter() - t0
    jaxsens.jacobian_importance(m, X[:2000], batch_size=1024); m(X[:2000])  # compile
    def best(f):
        ts = []
        for _ in range(3):
            t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
        return min(ts)
    jac = best(lambda: jaxsens.jacobian_importance(m, X, batch_size=1024))
    pred = best(lambda: m(X))
    # the perturbation family on fewer rows (83 and 82 model evaluations per row); API of either version
    import inspect, jax
    Xp = X[: max(rows // 20, 256)]
    y = np.asarray(m(Xp)).argmax(axis=1)
    noise = "noise_scale" if "noise_scale" in inspect.signature(jaxsens.perturbation_importance).parameters else "scale"
    pert_call = lambda: jaxsens.perturbation_importance(m, Xp, key=jax.random.key(0), n_draws=1, batch_size=1024,
                                                        **{noise: 0.2})
    perm_call = lambda: jaxsens.permutation_importance(m, Xp, y, key=jax.random.key(0), n_repeats=1,
                                                       metric="accuracy", batch_size=1024)
    pert_call(); perm_call()  # compile
    pert, perm = best(pert_call), best(perm_call)
    print(json.dumps({"import_s": t_import, "load_s": t_load, "jacobian_rows_per_s": rows / jac,
                      "predict_rows_per_s": rows / pred, "perturbation_rows_per_s": len(Xp) / pert,
                      "permutation_rows_per_s": len(Xp) / perm, "file": jaxsens.__file__}))
    """
)

METRICS = ("import_s", "load_s", "jacobian_rows_per_s", "predict_rows_per_s", "perturbation_rows_per_s",
           "permutation_rows_per_s")


def run(checkout: str, rows: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", WORKER, str(rows)], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.abspath(checkout))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert os.path.abspath(result["file"]).startswith(os.path.abspath(checkout)), result["file"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", type=int, default=40000)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "versions.json"))
    args = p.parse_args()
    runs = {"old": [], "new": []}
    for _ in range(args.repeats):
        for name in ("old", "new"):
            runs[name].append(run(getattr(args, name), args.rows))
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in METRICS} for name, rs in runs.items()}
    print(f"| metric (median of {args.repeats}, {args.rows} rows) | old | new | new / old |")
    print("| --- | --- | --- | --- |")
    for k in METRICS:
        old, new = medians["old"][k], medians["new"][k]
        print(f"| {k} | {old:.4g} | {new:.4g} | {new / old:.2f} |")
    with open(args.out, "w") as f:
        json.dump({"settings": vars(args), "medians": medians, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
