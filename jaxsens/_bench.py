"""``jaxsens bench``: the standard suite on this machine's devices at three matmul precisions; table and JSON.

Workloads (models built here from seeded random weights, written to ONNX and converted like any user model;
the data are float32 rows held on the host, streamed to the devices by the engine):

* ``mlp_jacobian``: the seed-000 network 82 -> 500 -> 500 -> 500 -> 2 softmax, ``jacobian_importance`` (the
  full per-sample Jacobian ``[2, 82]`` and its statistics). A softmax's outputs sum to one, so the engine
  computes the forward pass and ``K - 1`` pull-backs: ``K * F`` FLOPs per row with ``F = 2 * sum(n_in *
  n_out)`` = 1.082 MFLOP the forward pass, i.e. 2.164 MFLOP.
* ``lstm_jacobian``: the seed-001 network, input ``[10, 3]`` -> LSTM(10, relu) -> LSTM(5, relu) -> LSTM(1,
  sigmoid), every layer returning sequences, flattened to 10 outputs (recurrent activation sigmoid, Keras's
  gates), ``jacobian_importance`` ``[10, 10, 3]``: ``(1 + K) * F`` with ``F = sum_layers 2 T 4 h (n_in + h)``
  = 16,880 matmul FLOPs (elementwise gate maths not counted), i.e. 185,680 per row.
* ``perturbation``: ``perturbation_importance`` on the seed-000 MLP, one normal draw per row and feature: the
  model runs on ``1 + 82`` variants of each row, ``83 * F`` = 89.8 MFLOP per row.
* ``sobol``: ``sobol_indices`` on the seed-000 MLP, inputs U(0, 1): ``n * (D + 2)`` model evaluations, so
  ``84 * F`` = 90.9 MFLOP per base row (``samples`` are the ``n`` base rows; 10 bootstrap replicates).

For the Jacobians, a hand-written ``jit(vmap(jacrev(f)))`` over the same rows in chunks (the LSTM written in
``jnp`` with ``lax.scan``) is timed in float32 too; it must agree with jaxsens before anything is timed.

Precision modes: ``float32``, ``tensorfloat32`` and ``bfloat16``, JAX's ``default_matmul_precision`` names
(``Precision.HIGHEST``, ``HIGH``, ``DEFAULT``); the Jacobians pass them as the ``precision=`` option (the
engine sets the same context), the methods without that option run inside
``jax.default_matmul_precision(mode)`` (``precision_via`` in the JSON says which). What a mode computes is the
platform's choice: on CPU all three are float32; JAX documents ``DEFAULT`` as TF32 on recent NVIDIA GPUs
(bfloat16 on TPUs). Each mode's row gives its largest error against the float32 run (same rows and keys):
``max|r - r_f32| / max|r_f32|`` over the result. The true bfloat16 inputs with float32 accumulation
(``DotAlgorithmPreset.BF16_BF16_F32``) is measured on the GEMM (``gemm`` in the JSON, ``unsupported`` where
the platform refuses it), so the table shows whether a mode reached bfloat16 speed.

The device's matmul rate is measured in the same run, per mode: a ``[b x 500] x [500 x 500]`` GEMM (the
MLP's layer shape, ``b`` a multiple of 4096 grown until one call takes >= 0.05 s), timed three times in every
round between the workloads, so it sees the same machine. ``% GEMM`` is achieved FLOP/s over that rate;
for the tiny LSTM it is not meaningful (compare samples/s there).

Runs are interleaved (round robin over every job, each compiled and checked first) and the median is reported;
every raw time is in the JSON. ``--compare A.json [B.json]`` prints the ratios between two machines.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["compare", "format_comparison", "load_report", "run_bench"]

SCHEMA = "jaxsens-bench/1"
WORKLOADS = ("mlp_jacobian", "lstm_jacobian", "perturbation", "sobol")
PRECISIONS = ("float32", "tensorfloat32", "bfloat16")
MLP_SIZES = (82, 500, 500, 500, 2)
LSTM_SHAPE = (10, 3)  # time steps, features
LSTM_UNITS = (10, 5, 1)
LSTM_ACTIVATIONS = ("relu", "relu", "sigmoid")
GEMM_SHAPE = (4096, 500, 500)
ROW_KEYS = (
    "workload",
    "competitor",
    "precision",
    "devices",
    "n_devices",
    "n",
    "unit",
    "seconds",
    "times",
    "samples_per_s",
    "flops_per_sample",
    "tflops",
    "gemm_tflops",
    "pct_of_gemm",
    "max_err_vs_float32",
    "precision_via",
    "note",
)


# ---------------------------------------------------------------------------------------------------- models
def _seed000_layers(seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"W": rng.normal(size=(a, b)) * np.sqrt(2 / a), "b": rng.normal(0, 0.1, size=b)}
        for a, b in itertools.pairwise(MLP_SIZES)
    ]


def _seed000_model(seed: int = 0):
    from jaxsens._dense import dense_onnx
    from jaxsens._model import Model

    return Model.from_onnx(dense_onnx(_seed000_layers(seed), graph_name="seed000"))


def seed001_params(seed: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The seed-001 LSTM stack's weights in Keras's layout: ``[(kernel [n_in, 4h], recurrent [h, 4h], bias
    [4h]), ...]``, gates i, f, c, o; Glorot-uniform kernels, orthogonal recurrent kernels, forget bias 1,
    every bias moved by N(0, 0.1^2) (Keras's initialisers, seeded here rather than by Keras)."""
    rng = np.random.default_rng(seed)
    params, n_in = [], LSTM_SHAPE[1]
    for h in LSTM_UNITS:
        limit = np.sqrt(6 / (n_in + 4 * h))
        kernel = rng.uniform(-limit, limit, size=(n_in, 4 * h))
        q, r = np.linalg.qr(rng.normal(size=(4 * h, h)))
        rec = (q * np.sign(np.diag(r))).T  # [h, 4h], orthonormal rows
        bias = np.concatenate([np.zeros(h), np.ones(h), np.zeros(2 * h)]) + rng.normal(0, 0.1, size=4 * h)
        params.append(tuple(a.astype(np.float32) for a in (kernel, rec, bias)))
        n_in = h
    return params


def seed001_onnx(params):
    """The seed-001 stack as ONNX ``LSTM`` nodes (as tf2onnx writes a Keras LSTM: time-major, gates i, o, f,
    c, activations ``[Sigmoid, act, act]``), input ``[batch, 10, 3]``, output ``[batch, 10]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def iofc(a):  # Keras's i, f, c, o blocks along the last axis -> ONNX's i, o, f, c
        i, f, c, o = np.split(a, 4, axis=-1)
        return np.concatenate([i, o, f, c], axis=-1)

    act_names = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    nodes = [helper.make_node("Transpose", ["input"], ["x_tnf"], perm=[1, 0, 2], name="to_time_major")]
    inits, prev = [], "x_tnf"
    for k, ((kernel, rec, bias), act) in enumerate(zip(params, LSTM_ACTIVATIONS)):
        h = rec.shape[0]
        inits += [
            numpy_helper.from_array(iofc(kernel).T[None].astype(np.float32), f"lstm_{k}/W"),
            numpy_helper.from_array(iofc(rec).T[None].astype(np.float32), f"lstm_{k}/R"),
            numpy_helper.from_array(
                np.concatenate([iofc(bias), np.zeros(4 * h)])[None].astype(np.float32), f"lstm_{k}/B"
            ),
        ]
        a = act_names[act]
        nodes.append(
            helper.make_node(
                "LSTM",
                [prev, f"lstm_{k}/W", f"lstm_{k}/R", f"lstm_{k}/B"],
                [f"lstm_{k}/Y"],
                name=f"lstm_{k}",
                hidden_size=h,
                activations=["Sigmoid", a, a],
            )
        )
        nodes.append(
            helper.make_node("Squeeze", [f"lstm_{k}/Y", "axis1"], [f"lstm_{k}/seq"], name=f"lstm_{k}/sq")
        )
        prev = f"lstm_{k}/seq"
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    nodes.append(helper.make_node("Transpose", [prev], ["y_ntf"], perm=[1, 0, 2], name="to_batch_major"))
    nodes.append(helper.make_node("Flatten", ["y_ntf"], ["output"], axis=1, name="flatten"))
    graph = helper.make_graph(
        nodes,
        "seed001",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *LSTM_SHAPE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", LSTM_SHAPE[0]])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9, producer_name="jaxsens"
    )
    onnx.checker.check_model(model)
    return model


def lstm_apply(params, x):
    """The hand-written reference: one sample ``[T, F]`` through the stack in ``jnp`` (``lax.scan``)."""
    acts = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}
    seq = x
    for (kernel, rec, bias), act_name in zip(params, LSTM_ACTIVATIONS):
        act = acts[act_name]

        def step(carry, xw_t, rec=rec, act=act):
            h, c = carry
            i, f, g, o = jnp.split(xw_t + h @ rec, 4)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * act(g)
            h = jax.nn.sigmoid(o) * act(c)
            return (h, c), h

        zeros = jnp.zeros(rec.shape[0], x.dtype)
        _, seq = jax.lax.scan(step, (zeros, zeros), seq @ kernel + bias)
    return seq.reshape(-1)


def dense_flops(sizes: Sequence[int]) -> int:
    """Forward FLOPs of one sample through dense layers ``sizes[0] -> sizes[1] -> ...``."""
    return 2 * sum(a * b for a, b in itertools.pairwise(sizes))


def lstm_flops(n_features: int, units: Sequence[int], steps: int) -> int:
    """Forward matmul FLOPs of one sample through stacked LSTMs (input and recurrent kernels, all steps)."""
    total, n_in = 0, n_features
    for h in units:
        total += 2 * steps * 4 * h * (n_in + h)
        n_in = h
    return total


# ----------------------------------------------------------------------------------------------- workloads
@dataclasses.dataclass
class _Job:
    """One timed unit: ``run()`` returns the result array (float64, blocks until done)."""

    workload: str
    competitor: str
    precision: str
    devices: str
    n_devices: int
    n: int
    unit: str
    flops_per_sample: float
    run: Callable[[], np.ndarray]
    precision_via: str
    note: str = ""
    times: list[float] = dataclasses.field(default_factory=list)
    result: np.ndarray | None = None


def _hand_written(f, params, xs: np.ndarray, chunk: int) -> Callable[[], np.ndarray]:
    """``sum |vmap(jacrev(f))(xs)|`` jitted over chunks of the host array (chunk sums added on the device)."""

    @jax.jit
    def chunk_sum(p, x):
        return jnp.abs(jax.vmap(jax.jacrev(lambda v: f(p, v)))(x)).sum(axis=0)

    n = xs.shape[0]

    def run():
        with jax.default_matmul_precision("float32"):
            total = None
            for i in range(0, n, chunk):
                part = chunk_sum(params, xs[i : i + chunk])
                total = part if total is None else total + part
            return np.asarray(total, np.float64) / n

    return run


def _sizes(quick: bool, n: int | None, backend: str) -> dict[str, int]:
    """Rows per workload: ``n`` for the MLP Jacobian, the others scaled to similar FLOPs."""
    if n is None:
        n = 4096 if quick else (200_000 if backend == "cpu" else 4_000_000)
    return {
        "mlp_jacobian": n,
        "lstm_jacobian": max(256, n // 4),
        "perturbation": max(64, n // 40),
        "sobol": max(64, n // 50),
    }


def _jobs(workloads, precisions, sizes, device_sets, batch_size) -> list[_Job]:
    import jaxsens
    from jaxsens._model import Model

    rng = np.random.default_rng(1)
    f_mlp = dense_flops(MLP_SIZES)
    jobs: list[_Job] = []
    mlp = _seed000_model() if {"mlp_jacobian", "perturbation", "sobol"} & set(workloads) else None
    if "lstm_jacobian" in workloads:
        lstm_params = seed001_params()
        lstm = Model.from_onnx(seed001_onnx(lstm_params))
    data = {
        "mlp_jacobian": rng.normal(size=(sizes["mlp_jacobian"], MLP_SIZES[0])).astype(np.float32),
        "lstm_jacobian": rng.random((sizes["lstm_jacobian"], *LSTM_SHAPE), np.float32),
        "perturbation": rng.normal(size=(sizes["perturbation"], MLP_SIZES[0])).astype(np.float32),
    }
    problem = {
        "num_vars": MLP_SIZES[0],
        "names": [f"x{i}" for i in range(MLP_SIZES[0])],
        "bounds": [[0.0, 1.0]] * MLP_SIZES[0],
    }
    spec = {
        "mlp_jacobian": ("rows", MLP_SIZES[-1] * f_mlp, "option"),
        "lstm_jacobian": (
            "rows",
            (1 + LSTM_SHAPE[0]) * lstm_flops(LSTM_SHAPE[1], LSTM_UNITS, LSTM_SHAPE[0]),
            "option",
        ),
        "perturbation": ("rows", (1 + MLP_SIZES[0]) * f_mlp, "jax.default_matmul_precision"),
        "sobol": (
            "base rows (D + 2 = 84 evaluations each)",
            (MLP_SIZES[0] + 2) * f_mlp,
            "jax.default_matmul_precision",
        ),
    }

    def call(workload, precision, devices):
        common = {"batch_size": batch_size, "devices": devices}
        if workload == "mlp_jacobian":
            return lambda: (
                jaxsens.jacobian_importance(mlp, data[workload], precision=precision, **common).mean_abs
            )
        if workload == "lstm_jacobian":
            return lambda: (
                jaxsens.jacobian_importance(lstm, data[workload], precision=precision, **common).mean_abs
            )
        if workload == "perturbation":
            return lambda: jaxsens.perturbation_importance(mlp, data[workload], key=0, **common).importance

        def sobol():
            res = jaxsens.sobol_indices(mlp, problem, n=sizes["sobol"], key=0, n_bootstrap=10, **common)
            return np.concatenate([res.first_order.ravel(), res.total_order.ravel()])

        return sobol

    for workload in workloads:
        unit, flops, via = spec[workload]
        for label, devices in device_sets:
            for precision in precisions:
                fn = call(workload, precision, devices)

                def run(fn=fn, precision=precision):
                    with jax.default_matmul_precision(precision):  # the methods without a precision option
                        return np.asarray(fn(), np.float64)

                jobs.append(
                    _Job(
                        workload,
                        "jaxsens",
                        precision,
                        label,
                        len(devices),
                        sizes[workload],
                        unit,
                        flops,
                        run,
                        via,
                    )
                )
        if workload in ("mlp_jacobian", "lstm_jacobian") and "float32" in precisions:
            chunk = batch_size or 1024
            if workload == "mlp_jacobian":
                hand = _hand_written(mlp.apply, mlp.params, data[workload], chunk)
            else:
                hand = _hand_written(
                    lstm_apply, [tuple(map(jnp.asarray, p)) for p in lstm_params], data[workload], chunk
                )
            jobs.append(
                _Job(
                    workload,
                    "hand-written jit(vmap(jacrev))",
                    "float32",
                    "default",
                    1,
                    sizes[workload],
                    unit,
                    flops,
                    hand,
                    "jax.default_matmul_precision",
                    note=f"chunks of {chunk} rows on the default device",
                )
            )
    return jobs


# ---------------------------------------------------------------------------------------------------- GEMM
def _gemm_job(precision: str, *, seconds: float = 0.2) -> tuple[Callable[[], Any], float] | None:
    """A blocking ``[b x 500] x [500 x 500]`` matmul at ``precision`` (a ``default_matmul_precision`` or
    ``DotAlgorithmPreset`` name; ``b`` a multiple of 4096 grown until a call takes ``seconds / 4``),
    compiled, and its FLOPs; ``None`` when the platform refuses the precision."""
    rows, k, m = GEMM_SHAPE
    w = jnp.asarray(np.random.default_rng(2).normal(size=(k, m)).astype(np.float32))
    mm = jax.jit(lambda a, w: jnp.matmul(a, w, precision=precision))
    try:
        while True:
            a = jnp.asarray(np.random.default_rng(3).normal(size=(rows, k)).astype(np.float32))
            fn = lambda a=a: mm(a, w).block_until_ready()
            fn()
            t = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                t.append(time.perf_counter() - t0)
            best = statistics.median(t)
            if best >= seconds / 4 or rows >= 1 << 20:
                return fn, 2.0 * rows * k * m
            rows = min(rows * max(2, min(16, int(seconds / max(best, 1e-6)))), 1 << 20)
    except Exception:  # noqa: BLE001 - e.g. a DotAlgorithmPreset the backend does not implement
        return None


# ---------------------------------------------------------------------------------------------------- run
def _machine() -> dict[str, Any]:
    from jaxsens.cli import _version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    devices = jax.devices()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "jax": jax.__version__,
        "jaxsens": _version(),
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run_bench(
    *,
    workloads: Sequence[str] = WORKLOADS,
    precisions: Sequence[str] = PRECISIONS,
    n: int | None = None,
    repeats: int | None = None,
    quick: bool = False,
    each_device: bool = False,
    batch_size: int | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the suite; print the table (``log``) and return the report (see the module docstring).

    Args:
        workloads: names from ``WORKLOADS``.
        precisions: names from ``PRECISIONS`` (``float32`` is always run: the others' errors are against it).
        n: rows of the MLP Jacobian (the other workloads get proportional sizes); default 200,000 on CPU,
            4,000,000 on an accelerator, 4,096 with ``quick``.
        repeats: timed runs per job (median reported); default 3, 1 with ``quick``.
        quick: small sizes, for a smoke test.
        each_device: besides all local devices together, run each device alone.
        batch_size: rows per chunk (default: the engine's choice).

    Returns:
        ``{"schema", "machine", "settings", "gemm", "rows"}``; each row has the keys of ``ROW_KEYS``.
    """
    from converters.errors import ArgumentError

    say = log or (lambda _msg: None)
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad or not workloads:
        raise ArgumentError(f"--workloads: unknown {bad or 'empty list'}; choose from {', '.join(WORKLOADS)}")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ArgumentError(
            f"--precision: unknown {bad or 'empty list'}; choose from {', '.join(PRECISIONS)}"
        )
    for name, value in (("--n", n), ("--repeats", repeats), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise ArgumentError(f"{name} must be a positive integer, got {value}")
    precisions = ["float32", *[p for p in precisions if p != "float32"]]
    repeats = repeats or (1 if quick else 3)
    sizes = _sizes(quick, n, jax.default_backend())
    local = jax.local_devices()
    device_sets = [("all", local)]
    if each_device and len(local) > 1:
        device_sets += [(f"{d.platform}:{d.id}", [d]) for d in local]
    jobs = _jobs(workloads, precisions, sizes, device_sets, batch_size)

    say(
        f"jaxsens bench: backend {jax.default_backend()}, {len(local)} device(s) "
        f"{[d.device_kind for d in local]}"
    )
    gemm_jobs = {p: _gemm_job(p) for p in [*precisions, "BF16_BF16_F32"]}  # timed in the rounds below
    gemm_times: dict[str, list[float]] = {p: [] for p, j in gemm_jobs.items() if j is not None}

    for job in jobs:  # compile, and the results the errors and the agreement check need
        job.result = job.run()
    reference = {
        (j.workload, j.devices): j.result
        for j in jobs
        if j.competitor == "jaxsens" and j.precision == "float32"
    }
    for job in jobs:
        if job.competitor != "jaxsens":
            ref = reference[(job.workload, "all")]
            if not np.allclose(job.result, ref, rtol=1e-3, atol=1e-6 * float(np.max(np.abs(ref)))):
                raise AssertionError(
                    f"{job.workload}: {job.competitor} disagrees with jaxsens; refusing to time wrong answers"
                )
    for r in range(repeats):  # interleaved: repeat r of every job (and GEMM) before repeat r + 1 of any
        for job in jobs:
            t0 = time.perf_counter()
            job.run()
            job.times.append(time.perf_counter() - t0)
        for p, times in gemm_times.items():
            for _ in range(3):
                t0 = time.perf_counter()
                gemm_jobs[p][0]()
                times.append(time.perf_counter() - t0)
        say(f"  round {r + 1}/{repeats} done")
    gemm = {}
    for p, job in gemm_jobs.items():
        rate = None if job is None else job[1] / statistics.median(gemm_times[p]) / 1e12
        gemm[p] = {
            "shape": list(GEMM_SHAPE)
            if job is None
            else [int(job[1] / (2 * GEMM_SHAPE[1] * GEMM_SHAPE[2])), *GEMM_SHAPE[1:]],
            "tflops": rate,
            "times": gemm_times.get(p, []),
            "status": "ok" if rate is not None else "unsupported on this platform",
        }
    say(
        "GEMM [b x 500] x [500 x 500]: "
        + ", ".join(
            f"{p} {g['tflops'] * 1e3:,.1f} GFLOP/s" if g["tflops"] else f"{p} unsupported"
            for p, g in gemm.items()
        )
    )

    rows = []
    for job in jobs:
        seconds = statistics.median(job.times)
        sps = job.n / seconds
        flops = sps * job.flops_per_sample
        ref = reference[(job.workload, job.devices if job.competitor == "jaxsens" else "all")]
        scale = float(np.max(np.abs(ref))) or 1.0
        g = gemm[job.precision]["tflops"]
        rows.append(
            {
                "workload": job.workload,
                "competitor": job.competitor,
                "precision": job.precision,
                "devices": job.devices,
                "n_devices": job.n_devices,
                "n": job.n,
                "unit": job.unit,
                "seconds": seconds,
                "times": job.times,
                "samples_per_s": sps,
                "flops_per_sample": job.flops_per_sample,
                "tflops": flops / 1e12,
                "gemm_tflops": g,
                "pct_of_gemm": None if not g else 100 * flops / (g * 1e12),
                "max_err_vs_float32": float(np.max(np.abs(job.result - ref)) / scale),
                "precision_via": job.precision_via,
                "note": job.note,
            }
        )
    report = {
        "schema": SCHEMA,
        "machine": _machine(),
        "settings": {
            "workloads": list(workloads),
            "precisions": precisions,
            "sizes": sizes,
            "repeats": repeats,
            "quick": quick,
            "each_device": each_device,
            "batch_size": batch_size,
        },
        "gemm": gemm,
        "rows": rows,
    }
    say(format_rows(rows))
    return report


# ---------------------------------------------------------------------------------------------------- output
def _cell(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def format_rows(rows: Sequence[dict]) -> str:
    cols = (
        ("workload", "{}"),
        ("competitor", "{}"),
        ("precision", "{}"),
        ("devices", "{}"),
        ("n", "{:,}"),
        ("samples_per_s", "{:,.0f}"),
        ("tflops", "{:.4f}"),
        ("pct_of_gemm", "{:.0f}%"),
        ("max_err_vs_float32", "{:.1e}"),
    )
    heads = (
        "workload",
        "competitor",
        "precision",
        "devices",
        "n",
        "samples/s",
        "TFLOP/s",
        "% GEMM",
        "err vs f32",
    )
    body = [[_cell(r.get(k), f) for k, f in cols] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(
        c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([line(heads), line(["-" * w for w in widths]), *map(line, body)])


def write_report(report: dict, path: str) -> None:
    """Write the report as JSON (atomically)."""
    from jaxsens._io import atomic_write

    atomic_write(path, (json.dumps(report, indent=1) + "\n").encode())


def load_report(path: str) -> dict:
    """Read a ``jaxsens bench --json`` file, refusing anything else with a clear error."""
    from converters.errors import DataError, DataFileNotFoundError

    if not os.path.exists(path):
        raise DataFileNotFoundError(f"--compare: {path} does not exist")
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"--compare: {path} is not a JSON file ({e})") from e
    if (
        not isinstance(report, dict)
        or report.get("schema") != SCHEMA
        or not isinstance(report.get("rows"), list)
    ):
        raise DataError(f"--compare: {path} is not a 'jaxsens bench --json' report (schema {SCHEMA!r})")
    return report


def _key(row: dict) -> tuple:
    return (row["workload"], row["competitor"], row["precision"], row["devices"])


def compare(a: dict, b: dict) -> list[dict]:
    """Rows present in both reports, with ``ratio = samples/s in b / samples/s in a`` (b faster: > 1)."""
    rows_a = {_key(r): r for r in a["rows"]}
    out = []
    for r in b["rows"]:
        other = rows_a.get(_key(r))
        if other is None or not other.get("samples_per_s") or not r.get("samples_per_s"):
            continue
        out.append(
            {
                "workload": r["workload"],
                "competitor": r["competitor"],
                "precision": r["precision"],
                "devices": r["devices"],
                "a_samples_per_s": other["samples_per_s"],
                "b_samples_per_s": r["samples_per_s"],
                "ratio": r["samples_per_s"] / other["samples_per_s"],
            }
        )
    return out


def format_comparison(a: dict, b: dict, name_a: str, name_b: str) -> str:
    """The comparison table, headed by the two machines."""
    rows = compare(a, b)

    def who(rep, name):
        m = rep.get("machine", {})
        return (
            f"{name}: {m.get('backend')} {', '.join(sorted(set(m.get('devices', []))))} ({m.get('hostname')})"
        )

    lines = [f"A = {who(a, name_a)}", f"B = {who(b, name_b)}"]
    if not rows:
        return "\n".join([*lines, "no workload, precision and device set in common"])
    heads = ("workload", "competitor", "precision", "devices", "A samples/s", "B samples/s", "B / A")
    body = [
        [
            r["workload"],
            r["competitor"],
            r["precision"],
            r["devices"],
            f"{r['a_samples_per_s']:,.0f}",
            f"{r['b_samples_per_s']:,.0f}",
            f"{r['ratio']:.2f}x",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(x[i]) for x in body)) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(
        c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([*lines, line(heads), line(["-" * w for w in widths]), *map(line, body)])
