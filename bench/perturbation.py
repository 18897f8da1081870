"""Perturbation methods: jaxsens vs the seed-001 predict loop and Captum, equal numbers of model evaluations.

    python bench/perturbation.py [--n 10000] [--repeats 3] [--quick]

Every competitor evaluates the model on ``n * (1 + n_features)`` rows (the unperturbed data once, then every
feature perturbed once), so samples/s is comparable:

* ``jaxsens perturbation``: ``jaxsens.perturbation_importance(model, xs, noise_scale=0.2, n_draws=1)`` (all features x rows
  in one vmapped kernel);
* ``jaxsens permutation``: ``jaxsens.permutation_importance(model, xs, y, n_repeats=1)``;
* ``seed-001 loop``: the seed's Python loop, one Keras ``model.predict`` per feature on a perturbed copy, as written
  (``predict``'s default batch of 32) and with one batch of 4096;
* ``Captum FeaturePermutation`` / ``FeatureAblation`` on a torch module with the same weights (default
  ``perturbations_per_eval=1`` and a tuned 8).

Two models: the seed-000 MLP (82 -> 500 x3 -> 2 softmax) and the seed-001 LSTM (10 steps x 3 features; Captum is run
on the MLP only: the seed's relu LSTM has no torch.nn equivalent). Keras runs on the same Keras model that jaxsens
converts. Writes ``bench/results/perturbation_<tag>.json`` and prints a table; medians of interleaved repeats.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxsens  # noqa: E402
from _common import format_table, interleaved, machine_info, median, result_tag, write_json  # noqa: E402


def build_mlp():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((82,))
    x = inp
    for _ in range(3):
        x = keras.layers.Dense(500, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))


def build_lstm():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 3))
    x = keras.layers.LSTM(10, activation="relu", return_sequences=True)(inp)
    x = keras.layers.LSTM(5, activation="relu", return_sequences=True)(x)
    x = keras.layers.LSTM(1, activation="sigmoid", return_sequences=True)(x)
    return keras.Model(inp, keras.layers.Flatten()(x))


def torch_twin(keras_model):
    import torch

    layers = []
    dense = [layer for layer in keras_model.layers if layer.__class__.__name__ == "Dense"]
    for i, layer in enumerate(dense):
        w, b = layer.get_weights()
        lin = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin, torch.nn.ReLU() if i < len(dense) - 1 else torch.nn.Softmax(dim=-1)]
    return torch.nn.Sequential(*layers).eval()


def seed_loop(keras_model, xs, rng, batch_size=None):
    """Seed 001's var_importance, verbatim apart from the returned list."""
    orig_out = keras_model.predict(xs, batch_size=batch_size, verbose=0)
    effects = []
    for i in range(xs.shape[-1]):
        new_x = xs.copy()
        perturbation = rng.normal(0.0, 0.2, size=new_x.shape[:-1])
        new_x[..., i] = new_x[..., i] + perturbation
        perturbed_out = keras_model.predict(new_x, batch_size=batch_size, verbose=0)
        effects.append(((orig_out - perturbed_out) ** 2).mean() ** 0.5)
    return np.array(effects)


def bench_model(name, keras_model, xs, y, repeats, with_captum):
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        keras_model.save(path)
        model = jaxsens.load_model(path)
    n, n_features = xs.shape[0], xs.shape[-1]
    evaluations = n * (1 + n_features)
    key = jax.random.key(0)
    jobs = {
        "jaxsens perturbation": lambda: jaxsens.perturbation_importance(model, xs, noise_scale=0.2, n_draws=1, key=key).effect,
        "jaxsens permutation": lambda: jaxsens.permutation_importance(model, xs, y, n_repeats=1, key=key).importances_mean,
        "seed-001 loop (predict, batch 32)": lambda: seed_loop(keras_model, xs, np.random.default_rng(0)),
        "seed-001 loop (predict, batch 4096)": lambda: seed_loop(keras_model, xs, np.random.default_rng(0), 4096),
    }
    reps = {k: repeats for k in jobs}
    reps["seed-001 loop (predict, batch 32)"] = max(1, repeats // 2)
    if with_captum:
        from captum.attr import FeatureAblation, FeaturePermutation

        torch.set_num_threads(os.cpu_count() or 1)
        net = torch_twin(keras_model)
        tx = torch.from_numpy(xs)
        np.testing.assert_allclose(net(tx[:256]).detach().numpy(), model(xs[:256]), rtol=1e-4, atol=1e-5)
        for cls in (FeaturePermutation, FeatureAblation):
            for ppe in (1, 8):
                def job(cls=cls, ppe=ppe):
                    with torch.no_grad():
                        return cls(net).attribute(tx, target=1, perturbations_per_eval=ppe).mean(0).numpy()
                jobs[f"Captum {cls.__name__} (ppe={ppe})"] = job
                reps[f"Captum {cls.__name__} (ppe={ppe})"] = repeats
    for fn in jobs.values():  # warm-up: compile / trace once, outside the timings
        fn()
    times = interleaved(jobs, repeats=reps)
    base = median(times["jaxsens perturbation"])
    rows = []
    for k, ts in times.items():
        t = median(ts)
        rows.append({
            "model": name, "method": k, "seconds": t, "evals_per_s": evaluations / t,
            "jaxsens_speedup": t / base, "raw": ts,
        })
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="n=2000, 1 repeat")
    ap.add_argument("--tag", default=None, help="results file tag (default: cpu, or the accelerator kind)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeats = 2000, 1
    rng = np.random.default_rng(0)
    rows = []
    mlp = build_mlp()
    xs = rng.normal(size=(args.n, 82)).astype(np.float32)
    y = mlp.predict(xs, batch_size=4096, verbose=0) + rng.normal(0, 0.05, size=(args.n, 2)).astype(np.float32)
    rows += bench_model("seed-000 MLP", mlp, xs, y, args.repeats, with_captum=True)
    lstm = build_lstm()
    xs = rng.random(size=(args.n, 10, 3)).astype(np.float32)
    y = (xs[:, :, 0] * xs[:, :, 1] < 0.25).astype(np.float32)
    rows += bench_model("seed-001 LSTM", lstm, xs, y, args.repeats, with_captum=False)
    cols = [("model", "model", "{}"), ("method", "method", "{}"), ("seconds", "median s", "{:.3f}"),
            ("evals_per_s", "model evals/s", "{:,.0f}"), ("jaxsens_speedup", "jaxsens perturbation speed-up", "{:.1f}x")]
    print(format_table(rows, cols))
    print()
    print(format_table(rows, cols, markdown=True))
    path = write_json(f"perturbation_{args.tag or result_tag()}.json",
                      {"machine": machine_info(), "n": args.n, "repeats": args.repeats, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
