"""Stepwise selection with retraining: vmapped candidate groups vs training the candidates one at a time.

    python bench/stepwise.py [--repeats 3] [--seed-epochs 5] [--skip seed] [--tag TAG]

A step of stepwise selection trains one network per candidate input set. jaxsens trains the candidates of a step
together with ``jax.vmap``, in groups of ``candidate_group`` networks (one compiled program, the last group of a
step padded). Competitors, all training the same networks (same initial weights, same full-batch Adam steps) and
checked to select the same inputs with the same errors (float32 tolerance):

* ``vmap all``: one vmapped call per step (``candidate_group = n_features + 1``, the layout before issue 11);
* ``groups of g``: ``candidate_group = g``; ``auto`` is the default (``jaxsens._stepwise.auto_group``: one
  network at a time on CPU for networks of >= 5e7 FLOP per epoch, else the largest group under 512 MiB);
* ``loop``: a Python loop in this file training one candidate at a time with the same ``jax.jit``-compiled
  ``jaxsens._stepwise.fit`` + loss (no vmap), the same selection rule.

Shapes: a small MLP 82 -> 64 -> 64 -> 2 (softmax), 2,000 rows, 20 epochs, ``max_steps=2`` (backward), timed in
interleaved repeats (median); and the seed-000 MLP 82 -> 500 -> 500 -> 500 -> 2 on 2,000 rows with
``max_steps=1`` and ``--seed-epochs`` epochs, one run per competitor (the bounded-time run), next to
``estimate_stepwise_cost``'s prediction for that run and for the full default run (``epochs=200``, every step).
Writes ``bench/results/stepwise.json`` (``stepwise_<tag>.json`` with ``--tag``) and prints a table.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
from _common import format_table, interleaved, machine_info, median, write_json

from jaxsens._dense import DenseLayer
from jaxsens._stepwise import (
    _loss,
    estimate_stepwise_cost,
    fit,
    init_params,
    network_bytes,
    run_stepwise,
)


def make_layers(sizes):
    """Architecture only (zero weights): relu hidden layers, softmax output, like the seed-000 Keras model."""
    acts = ["relu"] * (len(sizes) - 2) + ["softmax"]
    return [
        DenseLayer(np.zeros((a, b), np.float32), np.zeros(b, np.float32), act, ())
        for (a, b), act in zip(itertools.pairwise(sizes), acts)
    ]


def make_data(n_rows, n_features, seed=0):
    """Standardised inputs; two classes from a few of them (so that the candidates differ)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features), dtype=np.float32)
    score = 1.5 * X[:, 0] - np.tanh(2 * X[:, 1]) + 0.5 * X[:, 2] * X[:, 3] + 0.3 * rng.standard_normal(n_rows)
    y = np.eye(2, dtype=np.float32)[(score > 0).astype(int)]
    return jnp.asarray(X), jnp.asarray(y)


def flops_per_network_epoch(sizes, n_rows):
    return 6.0 * n_rows * sum(a * b for a, b in itertools.pairwise(sizes))


def run_groups(layers, X, y, *, epochs, max_steps, group, lr):
    out = run_stepwise(
        layers,
        X,
        y,
        X,
        y,
        direction="backward",
        epochs=epochs,
        learning_rate=lr,
        minibatch_size=X.shape[0],
        loss="cross_entropy",
        max_steps=max_steps,
        key=jax.random.key(0),
        candidate_group=group,
        warn_seconds=None,
    )
    return out["order_index"], out["candidate_errors"]


@functools.partial(jax.jit, static_argnames=("activations", "batch_size"))
def _one(mask, init, X, y, key, lr, epochs, *, activations, batch_size):
    p = fit(
        init,
        mask,
        X,
        y,
        key,
        lr,
        epochs,
        activations=activations,
        loss="cross_entropy",
        batch_size=batch_size,
    )
    return _loss(p, X * mask, y, activations=activations, loss="cross_entropy")


def run_loop(layers, X, y, *, epochs, max_steps, lr):
    """The same backward selection, one candidate network at a time (jitted fit, no vmap)."""
    sizes = (layers[0].W.shape[0],) + tuple(l.W.shape[1] for l in layers)
    activations = tuple((l.activation, ()) for l in layers)
    key = jax.random.key(0)
    init = init_params(jax.random.fold_in(key, 0), sizes)
    shuffle = jax.random.fold_in(key, 1)
    n_features = sizes[0]
    active = np.ones(n_features, bool)
    order, cand = [], np.full((max_steps, n_features), np.nan)
    for step in range(max_steps):
        free = np.flatnonzero(active)
        errs = []
        for j in free:
            mask = active.astype(np.float32)
            mask[j] = 0.0
            e = _one(
                jnp.asarray(mask),
                init,
                X,
                y,
                shuffle,
                jnp.float32(lr),
                epochs,
                activations=activations,
                batch_size=X.shape[0],
            )
            errs.append(float(e))
        if step == 0:  # the baseline network, as run_stepwise trains it
            float(
                _one(
                    jnp.asarray(active.astype(np.float32)),
                    init,
                    X,
                    y,
                    shuffle,
                    jnp.float32(lr),
                    epochs,
                    activations=activations,
                    batch_size=X.shape[0],
                )
            )
        cand[step, free] = errs
        best = int(free[int(np.argmin(errs))])
        active[best] = False
        order.append(best)
    return np.asarray(order), cand


def check_same(name, ref, got):
    """Same selected inputs, and candidate errors within 1e-2 relative: separate float32 trainings round
    differently and Adam's ``g / sqrt(v)`` amplifies it over the epochs (2e-3 seen after 20 epochs)."""
    (o_ref, c_ref), (o, c) = ref, got
    finite = np.isfinite(c_ref)
    rel = float(np.max(np.abs(c[finite] - c_ref[finite]) / np.maximum(np.abs(c_ref[finite]), 1e-6)))
    ok = bool(np.array_equal(o_ref, o)) and np.array_equal(np.isfinite(c), finite) and rel < 1e-2
    return {"name": name, "same_order": bool(np.array_equal(o_ref, o)), "max_rel_err": rel, "ok": bool(ok)}


def bench_small(args):
    sizes = (82, 64, 64, 2)
    n_rows, epochs, max_steps, lr = 2000, 20, 2, 1e-2
    layers = make_layers(sizes)
    X, y = make_data(n_rows, sizes[0])
    n_networks = sum(sizes[0] - s + (s == 0) for s in range(max_steps))
    groups = {"vmap all (83)": 83, "groups of 16": 16, "groups of 8": 8, "auto": None}
    jobs = {
        name: functools.partial(run_groups, layers, X, y, epochs=epochs, max_steps=max_steps, group=g, lr=lr)
        for name, g in groups.items()
    }
    jobs["loop (1 at a time)"] = functools.partial(
        run_loop, layers, X, y, epochs=epochs, max_steps=max_steps, lr=lr
    )
    print(f"small MLP {sizes}, {n_rows} rows, {epochs} epochs, max_steps={max_steps}: warm-up + check")
    ref = jobs["vmap all (83)"]()
    checks = {name: check_same(name, ref, fn()) for name, fn in jobs.items()}  # warm-up (compiles) and check
    for c in checks.values():
        print(f"  {c['name']:<22s} same order {c['same_order']}  max rel err {c['max_rel_err']:.1e}")
    times = interleaved(jobs, repeats=args.repeats, settle_seconds=0.5)
    est = estimate_stepwise_cost(
        layers, n_rows, sizes[0], epochs=epochs, max_steps=max_steps, direction="backward"
    )
    flop = flops_per_network_epoch(sizes, n_rows) * epochs * n_networks
    rows = []
    for name in jobs:
        med = median(times[name])
        rows.append(
            {
                "competitor": name,
                "group": groups.get(name, 1) or est["group"],
                "networks": n_networks,
                "median_s": med,
                "networks_per_s": n_networks / med,
                "gflops": flop / med / 1e9,
                "vs_loop": median(times["loop (1 at a time)"]) / med,
                "ok": "ok" if checks[name]["ok"] else "WRONG",
                "times": times[name],
            }
        )
    return {
        "sizes": sizes,
        "n_rows": n_rows,
        "epochs": epochs,
        "max_steps": max_steps,
        "direction": "backward",
        "learning_rate": lr,
        "n_networks": n_networks,
        "train_flops": flop,
        "rows": rows,
        "checks": list(checks.values()),
        "estimate": est,
        "auto_group": est["group"],
    }


def bench_seed(args):
    sizes = (82, 500, 500, 500, 2)
    n_rows, epochs, lr = 2000, args.seed_epochs, 1e-3
    layers = make_layers(sizes)
    X, y = make_data(n_rows, sizes[0])
    n_networks = sizes[0] + 1
    full = estimate_stepwise_cost(layers, n_rows, sizes[0], epochs=200, max_steps=None, direction="backward")
    print(
        f"seed-000 MLP, full default run (epochs=200, all steps): estimate {full['seconds']:.0f} s "
        f"({full['seconds'] / 3600:.1f} h), {full['n_networks']} networks"
    )
    est = estimate_stepwise_cost(layers, n_rows, sizes[0], epochs=epochs, max_steps=1, direction="backward")
    print(
        f"seed-000 MLP, max_steps=1, epochs={epochs}: estimate {est['seconds']:.1f} s (compile {est['compile_s']:.1f} s)"
    )
    flop = flops_per_network_epoch(sizes, n_rows) * epochs * n_networks
    rows, results = [], {}
    competitors = {"auto": None, "vmap all (83)": 83, "loop (1 at a time)": "loop"}
    for name, g in competitors.items():
        # compile outside the timing (epochs is traced: one epoch compiles the program every epoch count uses)
        if g == "loop":
            fn = functools.partial(run_loop, layers, X, y, epochs=epochs, max_steps=1, lr=lr)
            _one(
                jnp.ones(sizes[0]),
                init_params(jax.random.key(0), sizes),
                X,
                y,
                jax.random.key(1),
                jnp.float32(lr),
                1,
                activations=tuple((l.activation, ()) for l in layers),
                batch_size=n_rows,
            )
        else:
            fn = functools.partial(run_groups, layers, X, y, epochs=epochs, max_steps=1, group=g, lr=lr)
            estimate_stepwise_cost(layers, n_rows, sizes[0], epochs=1, max_steps=1, candidate_group=g)
        t = time.perf_counter()
        results[name] = fn()
        sec = time.perf_counter() - t
        print(f"  {name:<22s} {sec:8.2f} s")
        rows.append(
            {
                "competitor": name,
                "group": 1 if g == "loop" else (g or est["group"]),
                "networks": n_networks,
                "median_s": sec,
                "networks_per_s": n_networks / sec,
                "gflops": flop / sec / 1e9,
                "times": [sec],
            }
        )
    ref = results["auto"]
    for row in rows:
        row["ok"] = "ok" if check_same(row["competitor"], ref, results[row["competitor"]])["ok"] else "WRONG"
        row["vs_loop"] = rows[-1]["median_s"] / row["median_s"]
    return {
        "sizes": sizes,
        "n_rows": n_rows,
        "epochs": epochs,
        "max_steps": 1,
        "direction": "backward",
        "learning_rate": lr,
        "n_networks": n_networks,
        "train_flops": flop,
        "rows": rows,
        "estimate": est,
        "estimate_full_default_run": full,
        "network_bytes_full_batch": network_bytes(sizes, n_rows),
        "auto_group": est["group"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed-epochs", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma list: small,seed")
    ap.add_argument("--tag", default=None, help="results file stepwise_<tag>.json (default: stepwise.json)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    payload = {"machine": machine_info(), "settings": vars(args), "load_average_before": os.getloadavg()}
    cols = [
        ("competitor", "competitor", "{}"),
        ("group", "group", "{}"),
        ("networks", "networks", "{}"),
        ("median_s", "median s", "{:.3f}"),
        ("networks_per_s", "networks/s", "{:.1f}"),
        ("gflops", "GFLOP/s", "{:.1f}"),
        ("vs_loop", "vs loop", "{:.2f}x"),
        ("ok", "check", "{}"),
    ]
    for name, fn in (("small", bench_small), ("seed", bench_seed)):
        if name in skip:
            continue
        payload[name] = fn(args)
        p = payload[name]
        print(
            f"\n{name}: MLP {' -> '.join(map(str, p['sizes']))}, {p['n_rows']} rows, {p['epochs']} epochs, "
            f"max_steps={p['max_steps']}, {p['n_networks']} networks; estimate {p['estimate']['seconds']:.2f} s "
            f"(+ compile {p['estimate']['compile_s']:.2f} s), auto group {p['auto_group']}"
        )
        print(format_table(p["rows"], cols))
    payload["load_average_after"] = os.getloadavg()
    path = write_json(f"stepwise_{args.tag}.json" if args.tag else "stepwise.json", payload)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
