"""Integrated gradients: jaxsens vs Captum on the seed-000 MLP, all outputs, the same rule, steps and baseline.

    python bench/attributions.py [--rows 10000] [--steps 32] [--rules riemann_trapezoid,gausslegendre]
                                 [--repeats 1] [--check-rows 1000] [--quick] [--tag TAG]

The model is the seed-000 MLP (82 -> 500 -> 500 -> 500 -> 2 softmax, relu) built in PyTorch (``torch.manual_seed(0)``),
exported with ``torch.onnx.export`` (the default exporter, dynamic batch axis, as tests/test_torch_export.py does) and
loaded with ``jaxsens.load_model``; ``--rows`` standard-normal rows (seed 0). Integrated gradients from the zero
baseline for both outputs, ``--steps`` points of each rule in ``--rules`` (default ``riemann_trapezoid`` only: the
defaults are sized to finish in under 5 minutes on 2 shared cores; add ``gausslegendre`` for the second rule):

* ``jaxsens.attributions``: per-sample attributions ``[n, 2, 82]`` (what Captum returns), default chunk size;
* ``jaxsens.integrated_gradients``: the streamed statistics (mean |a|, mean a, stderr, completeness error);
* ``Captum IntegratedGradients``: ``IntegratedGradients(net).attribute(x, baselines=0, target=k, n_steps=...,
  method=..., internal_batch_size=...)`` on the torch module itself, once per output (Captum takes one target per
  call), all rows in one call. ``internal_batch_size`` is counted in interpolated rows and Captum refuses less than
  the number of rows, so it is a number of steps per forward/backward pass times the rows; two values are timed:
  ``8 * rows`` and ``steps * rows`` (every step in one pass, what Captum does without ``internal_batch_size``;
  about 4 GB of activations at 10,000 rows and 32 steps). One step per pass (``rows``) was 2x slower than eight in a 1,000-row trial.
  The table keeps both and the speed-up is against Captum's best.

Before any timing, for each rule: ``jaxsens.attributions`` must equal the first Captum configuration per row on all
rows, within 1e-4 of the largest |attribution|, and ``integrated_gradients``' mean |a| and mean a must equal Captum's
per-row attributions averaged; the other Captum configuration is checked the same way on the first
``--check-rows`` rows (it is the same code; a full extra run would double the bench's time). Rows of a relu network
whose path crosses a kink within float32 rounding are the one allowed exception (see ``kink_rows``). The checks also
warm up (XLA compiles). Timings are medians of interleaved repeats (``_common.interleaved``); torch and
XLA both use every core this process may run on. Writes ``bench/results/attributions.json`` (``attributions_<tag>``
with ``--tag``) and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import jaxsens  # noqa: E402
from _common import cpu_count, format_table, interleaved, machine_info, median, write_json  # noqa: E402

RULES = ("riemann_trapezoid", "gausslegendre")
TOL = 1e-4  # relative to the largest |attribution|
N_FEATURES, HIDDEN, N_OUTPUTS = 82, 500, 2


def build_torch_mlp():
    import torch

    torch.manual_seed(0)
    layers, width = [], N_FEATURES
    for _ in range(3):
        layers += [torch.nn.Linear(width, HIDDEN), torch.nn.ReLU()]
        width = HIDDEN
    layers += [torch.nn.Linear(width, N_OUTPUTS), torch.nn.Softmax(dim=-1)]
    return torch.nn.Sequential(*layers).eval()


def export(net, path):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter
        torch.onnx.export(net, (torch.randn(3, N_FEATURES),), path, input_names=["x"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))


def captum_ig(net, tx, rule, n_steps, internal_batch_size):
    """Captum's per-row attributions ``[n, 2, 82]``: one ``attribute`` call per output."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(net)
    return np.stack([
        ig.attribute(tx, baselines=0, target=k, n_steps=n_steps, method=rule,
                     internal_batch_size=internal_batch_size).detach().numpy()
        for k in range(N_OUTPUTS)
    ], axis=1)


def kink_rows(net, xs, rows, rule, n_steps):
    """Which of ``rows`` have, at some interpolation point, a relu pre-activation within float32 rounding of zero.

    There the network is not differentiable and float32 rounding alone (the order of a matrix product's sums, which
    changes with the batch shape) decides which side of the kink a gradient comes from: Captum disagrees with itself
    there (an ``internal_batch_size`` of 1 against one batch of all steps). Pre-activations are recomputed in
    float64 from the float32 points; the rounding bound is Higham's ``fan_in * 2**-24 * (|W| |h| + |b|)``.
    """
    import torch
    from captum.attr._utils.approximation_methods import approximation_parameters

    alphas = torch.tensor(approximation_parameters(rule)[1](n_steps), dtype=torch.float32)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in linears]
    found = []
    for r in rows:
        h = (alphas[:, None] * torch.from_numpy(xs[r])[None]).numpy().astype(np.float64)  # the float32 points
        hit = False
        for w, b in weights[:-1]:  # the layers followed by a relu
            z = h @ w.T + b
            bound = w.shape[1] * 2.0**-24 * (np.abs(h) @ np.abs(w).T + np.abs(b))
            hit |= bool(np.any(np.abs(z) <= bound))
            h = np.maximum(z, 0.0)
        if hit:
            found.append(int(r))
    return found


def check(net, xs, rule, n_steps, got_rows, got_stats, want, label):
    """Refuse to time anything that does not give Captum's numbers.

    Per row, ``jaxsens.attributions`` must equal Captum within ``TOL`` of the largest |attribution|; a row outside
    is accepted only when :func:`kink_rows` shows a relu kink within float32 rounding on its path (both answers are
    then float32-correct), and such rows must be few (< 1 %). The streamed mean |a| and mean a must equal Captum's
    per-row attributions averaged, within ``TOL`` of the largest |attribution|, kink rows included.
    """
    scale = float(np.abs(want).max())
    per_row = np.abs(got_rows - want).reshape(len(want), -1).max(axis=1) / scale
    off = np.flatnonzero(~(per_row <= TOL))
    kinks = kink_rows(net, xs, off, rule, n_steps) if off.size else []
    unexplained = sorted(set(off.tolist()) - set(kinks))
    inside = per_row[np.setdiff1d(np.arange(len(want)), off)]
    err_rows = float(inside.max()) if inside.size else float("nan")
    err_abs = float(np.abs(got_stats.importance - np.abs(want.astype(np.float64)).mean(0)).max()) / scale
    err_mean = float(np.abs(got_stats.mean - want.astype(np.float64).mean(0)).max()) / scale
    print(f"  check {rule:<17s} vs {label}: rows {err_rows:.1e} ({len(kinks)} relu-kink rows outside, worst "
          f"{float(per_row.max()):.1e}), mean|a| {err_abs:.1e}, mean a {err_mean:.1e} (of max |a| = {scale:.3g}; "
          f"tolerance {TOL:g})")
    if unexplained:
        raise SystemExit(f"{rule}: jaxsens.attributions differs from {label} by up to {per_row[unexplained].max():.2e} "
                         f"of the largest |attribution| (> {TOL:g}) on {len(unexplained)} row(s) with no relu kink "
                         f"within float32 rounding on their path (first: row {unexplained[0]}); not timing")
    if len(kinks) > 0.01 * len(want):
        raise SystemExit(f"{rule}: {len(kinks)} of {len(want)} rows differ from {label} at relu kinks (> 1 %); "
                         "not timing")
    if not max(err_abs, err_mean) <= TOL:
        raise SystemExit(f"{rule}: integrated_gradients' statistics differ from {label} by "
                         f"{max(err_abs, err_mean):.2e} of the largest |attribution| (> {TOL:g}); not timing")
    return {"attributions_max_rel_error_outside_kinks": err_rows, "kink_rows": kinks,
            "kink_rows_max_rel_error": float(per_row.max()), "mean_abs": err_abs, "mean": err_mean,
            "max_abs_attribution": scale}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rules", default="riemann_trapezoid", help="comma-separated, of " + ", ".join(RULES))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--check-rows", type=int, default=1000, help="rows checked for the second Captum setting")
    ap.add_argument("--quick", action="store_true", help="1,000 rows, 1 repeat")
    ap.add_argument("--tag", default=None, help="results file suffix: attributions_<tag>.json (default: none)")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats = 1000, 1

    import torch

    torch.set_num_threads(cpu_count())
    net = build_torch_mlp()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mlp.onnx")
        export(net, path)
        model = jaxsens.load_model(path)
    xs = np.random.default_rng(0).standard_normal((args.rows, N_FEATURES), dtype=np.float32)
    tx = torch.from_numpy(xs)
    with torch.no_grad():
        np.testing.assert_allclose(model(xs[:256]), net(tx[:256]).numpy(), rtol=0, atol=1e-5)
    n, steps = args.rows, args.steps
    ibs_values = (8 * n, steps * n)
    rules = tuple(r.strip() for r in args.rules.split(",") if r.strip())
    if not rules or any(r not in RULES for r in rules):
        raise SystemExit(f"--rules must be a comma-separated list of {', '.join(RULES)}, got {args.rules!r}")
    print(f"seed-000 MLP (torch -> ONNX -> jaxsens), {n:,} rows, {steps} steps, zero baseline, {N_OUTPUTS} outputs, "
          f"{cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

    rows, checks = [], {}
    for rule in rules:
        jobs = {
            "jaxsens.attributions": lambda rule=rule: jaxsens.attributions(model, xs, n_steps=steps, rule=rule),
            "jaxsens.integrated_gradients": lambda rule=rule: jaxsens.integrated_gradients(
                model, xs, n_steps=steps, rule=rule),
        }
        for ibs in ibs_values:
            jobs[f"Captum IG (internal_batch_size={ibs:,})"] = (
                lambda rule=rule, ibs=ibs: captum_ig(net, tx, rule, steps, ibs))
        # checks first (they are also the warm-ups: XLA compiles, torch allocates)
        got_rows = jobs["jaxsens.attributions"]()
        got_stats = jobs["jaxsens.integrated_gradients"]()
        checks[rule] = {}
        for i, ibs in enumerate(ibs_values):
            name = f"Captum IG (internal_batch_size={ibs:,})"
            if i == 0:
                checks[rule][name] = check(net, xs, rule, steps, got_rows, got_stats, jobs[name](), name)
            else:  # the same code, another batching: the first --check-rows rows
                m = min(n, args.check_rows)
                sub = jaxsens.integrated_gradients(model, xs[:m], n_steps=steps, rule=rule)
                checks[rule][name + f" [first {m:,} rows]"] = check(
                    net, xs[:m], rule, steps, got_rows[:m], sub,
                    captum_ig(net, tx[:m], rule, steps, ibs * m // n), name + f" [first {m:,} rows]")
        print(f"  completeness error (jaxsens): {got_stats.completeness_error.tolist()}")
        times = interleaved(jobs, repeats=args.repeats)
        captum_best = min(median(ts) for k, ts in times.items() if k.startswith("Captum"))
        for name, ts in times.items():
            t = median(ts)
            rows.append({"rule": rule, "method": name, "seconds": t, "rows_per_s": n / t,
                         "speedup_vs_captum_best": captum_best / t, "raw": ts})
    cols = [("rule", "rule", "{}"), ("method", "method", "{}"), ("seconds", "median s", "{:.2f}"),
            ("rows_per_s", "rows/s", "{:,.0f}"), ("speedup_vs_captum_best", "vs Captum's best", "{:.2f}x")]
    print()
    print(format_table(rows, cols))
    print()
    print(format_table(rows, cols, markdown=True))
    name = f"attributions_{args.tag}.json" if args.tag else "attributions.json"
    out = write_json(name, {
        "machine": machine_info(), "rows": n, "n_steps": steps, "repeats": args.repeats, "baseline": "zeros",
        "rules": list(rules), "outputs": N_OUTPUTS, "captum_internal_batch_sizes": list(ibs_values), "tolerance": TOL,
        "checks": checks, "results": rows,
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
