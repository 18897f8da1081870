"""``jaxsens bench``: Jacobian throughput of this machine's accelerator (or CPU), side by side with hand-written JAX.

The workload is the seed-000 network (82 -> 500 -> 500 -> 500 -> 2 softmax, random seeded weights written to ONNX
and converted like any user model). Both competitors compute the full per-sample Jacobian ``[2, 82]`` and its mean
absolute value over ``n`` rows held on the host; runs are interleaved and the median is reported.

FLOPs per sample (one count for every competitor): the forward pass ``2 * sum(n_in * n_out)`` plus one vector-Jacobian
product per output, each ``2 * sum(n_in * n_out)`` (input gradients only), i.e. ``(1 + n_outputs) * 2 * sum(...)``.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["run_bench"]

SIZES = (82, 500, 500, 500, 2)


def _seed000_model(seed: int = 0):
    from jaxsens._dense import dense_onnx
    from jaxsens._model import Model

    rng = np.random.default_rng(seed)
    layers = [
        {"W": rng.normal(size=(a, b)) * np.sqrt(2 / a), "b": np.zeros(b)} for a, b in zip(SIZES[:-1], SIZES[1:])
    ]
    return Model.from_onnx(dense_onnx(layers, graph_name="seed000"))


def _flops_per_sample() -> float:
    macs = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))
    return (1 + SIZES[-1]) * 2.0 * macs


def run_bench(*, n: int = 200_000, repeats: int = 3, batch_size: int | None = None) -> list[dict]:
    """Time ``jacobian_importance`` against a hand-written ``jit(vmap(jacrev))`` loop; print and return rows."""
    from jaxsens._jacobian import jacobian_importance

    model = _seed000_model()
    chunk = batch_size or 1024
    n = max(chunk, n - n % chunk)  # whole chunks, so both competitors see the same rows
    xs = np.random.default_rng(1).normal(size=(n, SIZES[0])).astype(np.float32)

    @jax.jit
    def hand(params, x):
        jac = jax.vmap(jax.jacrev(lambda v: model.apply(params, v)))(x)
        return jnp.abs(jac).sum(axis=0)

    def hand_written():
        total = None
        for i in range(0, n, chunk):
            part = hand(model.params, xs[i : i + chunk])
            total = part if total is None else total + part
        return np.asarray(total) / n

    def ours():
        return jacobian_importance(model, xs, batch_size=batch_size).mean_abs

    jobs = {"jaxsens.jacobian_importance": ours, "hand-written jit(vmap(jacrev))": hand_written}
    results = {k: fn() for k, fn in jobs.items()}  # warm-up (compile) and agreement check
    a, b = results.values()
    if not np.allclose(a, b, rtol=1e-3, atol=1e-7):
        raise AssertionError("the two competitors disagree; refusing to time wrong answers")
    times = {k: [] for k in jobs}
    for _ in range(repeats):
        for k, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    rows = []
    flops = _flops_per_sample()
    base = statistics.median(times["hand-written jit(vmap(jacrev))"])
    for k, ts in times.items():
        t = statistics.median(ts)
        rows.append({"competitor": k, "seconds": t, "samples_per_s": n / t, "gflops": n * flops / t / 1e9,
                     "vs_hand_written": base / t})
    print(f"backend {jax.default_backend()}, devices {jax.devices()}; seed-000 MLP {SIZES}, n = {n:,}, "
          f"{flops / 1e6:.2f} MFLOP/sample, median of {repeats}")
    print(f"{'competitor':<34} {'seconds':>9} {'samples/s':>12} {'GFLOP/s':>9} {'vs hand-written':>16}")
    for r in rows:
        print(f"{r['competitor']:<34} {r['seconds']:9.3f} {r['samples_per_s']:12,.0f} {r['gflops']:9.1f} "
              f"{r['vs_hand_written']:15.2f}x")
    return rows
