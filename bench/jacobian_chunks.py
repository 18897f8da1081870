"""Chunk size, mode and path of the Jacobian kernels alone (issue 14 item 4): the seed-001 LSTM and seed-000 MLP.

A sibling of ``bench/jacobian.py`` for the questions behind jaxsens's defaults, without the engine (no file
reading, no host statistics): each job sums mean ``|J|`` over ``B``-row chunks of an in-memory array, jobs run
interleaved (round-robin repeats), medians reported::

    python bench/jacobian_chunks.py lstm 8192 7 rev_scan:256,rev_scan:512,a:2048,a:256
    python bench/jacobian_chunks.py mlp 16384 9 kern:1024,kern:4096,gemm:4096,gemm:1024

Jobs ``KIND:B``:

* LSTM: ``rev_scan`` / ``fwd_scan``, jaxsens's whole-batch Jacobian (``_batch_jacobian`` of the converted model
  with recurrences in ``lax.scan``) in reverse / forward mode; ``ps_rev`` / ``ps_fwd``, the per-sample path
  (``vmap`` of ``_per_sample_jacobian``); ``a``, ``bench/jacobian.py``'s (a), ``jit(vmap(jacrev))`` of the
  hand-written LSTM; ``api``, ``jacobian_importance`` on the array (``B = 0``: default chunk).
* MLP: ``kern``, the whole Jacobian kernel (J, its moments, the input moments and co-moments) on
  device-resident chunks; ``gemm``, ``jit([B x 500] x [500 x 500])`` (GFLOP/s); ``api`` as above.

The models are the ``.keras`` files ``bench/jacobian.py`` saves in ``bench/results/tmp/`` (built here if absent).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
from _common import TMP_DIR

import jaxsens
from jaxsens import _engine
from jaxsens import _jacobian as J


def _model(name: str, build):
    """The converted model of ``TMP_DIR/name`` (saved from ``build()`` first if absent) and the Keras model."""
    import keras

    os.makedirs(TMP_DIR, exist_ok=True)
    path = os.path.join(TMP_DIR, name)
    if not os.path.exists(path):
        build().save(path)
    return jaxsens.load_model(path), keras.models.load_model(path)


def bench(jobs, n: int, reps: int, flops=None) -> None:
    for key, fn in jobs.items():
        t0 = time.perf_counter()
        fn()
        print(f"{key} warm {time.perf_counter() - t0:.1f} s", flush=True)
    times = {key: [] for key in jobs}
    for _ in range(reps):
        for key, fn in jobs.items():
            time.sleep(0.1)
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    for key in jobs:
        med = float(np.median(times[key]))
        extra = f"  {flops[key] / med / 1e9:7.1f} GFLOP/s" if flops and key in flops else ""
        print(f"{key:22s} {med:8.4f} s {n / med:11,.0f} samples/s{extra}  {[round(t, 3) for t in times[key]]}")


def lstm(n: int, specs, reps: int) -> None:
    import jacobian as B

    model, keras_model = _model("seed001_lstm.keras", lambda: B.build_lstm_keras(1))
    params = [tuple(jnp.asarray(a) for a in p) for p in B.lstm_params(keras_model)]
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(n, *B.LSTM_SHAPE)).astype(np.float32))
    m0 = model.with_unroll(0)

    def batched(mode):
        return jax.jit(lambda xs: jnp.sum(jnp.abs(J._batch_jacobian(m0, mode, None, False)(xs)), 0))

    def per_sample(mode):
        return jax.jit(lambda xs: jnp.sum(jnp.abs(jax.vmap(J._per_sample_jacobian(m0, mode, None))(xs)), 0))

    fns = {
        "rev_scan": batched("reverse"), "fwd_scan": batched("forward"),
        "ps_rev": per_sample("reverse"), "ps_fwd": per_sample("forward"),
        "a": jax.jit(lambda xs: jnp.sum(jnp.abs(jax.vmap(jax.jacrev(lambda v: B.lstm_apply(params, v)))(xs)), 0)),
    }
    jobs = {}
    for spec in specs:
        kind, b = spec.split(":")
        b = int(b)
        if kind == "api":
            xn = np.asarray(x)
            jobs[spec] = lambda b=b, xn=xn: jaxsens.jacobian_importance(model, xn, batch_size=b or None)
        else:
            f = fns[kind]
            jobs[spec] = lambda f=f, b=b: jax.block_until_ready([f(x[s : s + b]) for s in range(0, n, b)])
    bench(jobs, n, reps)


def mlp(n: int, specs, reps: int) -> None:
    import jacobian as B

    model, _ = _model("seed000_mlp.keras", lambda: B.build_mlp_keras(0))
    per_sample = J._bytes_per_sample(model, "reverse", None)
    print(f"default chunk {_engine.choose_batch_size(per_sample, n_rows=n)} rows", flush=True)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(n, B.MLP_SIZES[0])).astype(np.float32))
    needed = 2 * B.dense_flops(B.MLP_SIZES)  # forward + K - 1 = 1 pull-back

    def kern(xs, mask):
        return J._jacobian_kernel(model, xs, mask, jnp.zeros(xs.shape[0], jnp.uint32), mode="reverse",
                                  outputs=None, correlate=True, precision="float32", sums_to_one=True)

    width = B.MLP_SIZES[1]
    w = jnp.asarray(np.random.default_rng(1).normal(size=(width, width)).astype(np.float32))
    mm = jax.jit(lambda a: a @ w)
    jobs, flops = {}, {}
    for spec in specs:
        kind, b = spec.split(":")
        b = int(b)
        if kind == "kern":
            chunks, mask = [x[s : s + b] for s in range(0, n, b)], jnp.ones(b, bool)
            jobs[spec] = lambda c=chunks, m=mask: jax.block_until_ready([kern(v, m) for v in c])
            flops[spec] = needed * n
        elif kind == "gemm":
            a = jnp.asarray(np.random.default_rng(2).normal(size=(b, width)).astype(np.float32))
            jobs[spec] = lambda a=a, r=n // b: jax.block_until_ready([mm(a) for _ in range(r)])
            flops[spec] = 2 * width * width * b * (n // b)
        elif kind == "api":
            xn = np.asarray(x)
            jobs[spec] = lambda b=b, xn=xn: jaxsens.jacobian_importance(model, xn, batch_size=b or None)
            flops[spec] = needed * n
    bench(jobs, n, reps, flops)


if __name__ == "__main__":
    suite, n, reps, specs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
    print(f"{suite}: jax {jax.__version__}, {len(os.sched_getaffinity(0))} cpus", flush=True)
    (lstm if suite == "lstm" else mlp)(n, specs, reps)
