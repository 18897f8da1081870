"""Small helpers shared by the benchmarks: timing, machine info, the fp32 GEMM ceiling, tables and JSON.

Timing follows one rule everywhere: competitors are run **interleaved** (round-robin: repeat 1 of every competitor,
then repeat 2 of every competitor, ...) so that slow drifts of a shared machine (other jobs, thermal state, page
cache) hit all of them alike, and the reported number is the **median** of the repeats; every raw time is kept in
the JSON.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "RESULTS_DIR",
    "TMP_DIR",
    "cpu_count",
    "format_table",
    "gemm_ceiling",
    "gemm_job",
    "interleaved",
    "machine_info",
    "median",
    "npy_dataset",
    "result_tag",
    "timed",
    "write_json",
]

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
TMP_DIR = os.path.join(RESULTS_DIR, "tmp")  # git-ignored: generated data and model files

_VERSIONED = (
    "jax",
    "jaxlib",
    "numpy",
    "onnx",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "tf_keras",
    "tf2onnx",
    "torch",
    "neuralsens",
    "jaxsens",
)


# ---------------------------------------------------------------------------------------------------- machine
def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: host, CPU, cores, memory, JAX backend and devices, package versions."""
    import jax

    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    devices = jax.devices()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_model(),
        "cores": cpu_count(),
        "memory_gib": None if _memory_gib() is None else round(_memory_gib(), 1),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def result_tag() -> str:
    """File-name tag for results: ``"cpu"`` on the CPU backend, else the accelerator kind (``"nvidia-h100-..."``)."""
    import jax

    if jax.default_backend() == "cpu":
        return "cpu"
    kind = jax.devices()[0].device_kind.lower()
    return "".join(c if c.isalnum() else "-" for c in kind).strip("-") or jax.default_backend()


# ---------------------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn()`` once; return ``(seconds, result)``. ``fn`` must block until its work is done."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def warm_up(jobs: dict[str, Callable[[], Any]], *, log: Callable[[str], None] | None = print) -> None:
    """Run every job once, untimed (compile / trace outside the timings), logging how long each took."""
    for name, fn in jobs.items():
        seconds, _ = timed(fn)
        if log is not None:
            log(f"  warm-up     {name:<34s} {seconds:9.3f} s")


def interleaved(
    jobs: dict[str, Callable[[], Any]],
    *,
    repeats: dict[str, int] | int,
    on_result: Callable[[str, int, float, Any], None] | None = None,
    log: Callable[[str], None] | None = print,
    settle_seconds: float = 0.0,
) -> dict[str, list[float]]:
    """Time every job ``repeats`` times, round-robin (repeat r of every job before repeat r + 1 of any).

    Args:
        jobs: ``{name: fn}``; ``fn()`` runs the whole timed unit and blocks until it is done.
        repeats: one count for all, or ``{name: count}`` (slow peers may get fewer; they drop out of later rounds).
        on_result: called as ``on_result(name, repeat, seconds, result)`` after each run (checks, logging).
        log: where a one-line progress message goes (``None``: silent).
        settle_seconds: untimed pause before each run. Thread pools of the previous job may still spin: after an
            OpenBLAS ``[4096, 4096]`` matmul, a 0.45 s JAX job on 2 cores measured 0.05 s slower; 0.5 s removes it.

    Returns:
        ``{name: [seconds of repeat 0, repeat 1, ...]}``.
    """
    counts = {k: (repeats if isinstance(repeats, int) else repeats[k]) for k in jobs}
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for r in range(max(counts.values(), default=0)):
        for name, fn in jobs.items():
            if r >= counts[name]:
                continue
            if settle_seconds:
                time.sleep(settle_seconds)
            seconds, result = timed(fn)
            times[name].append(seconds)
            if log is not None:
                log(f"  repeat {r + 1}/{counts[name]}  {name:<28s} {seconds:9.3f} s")
            if on_result is not None:
                on_result(name, r, seconds, result)
    return times


# ---------------------------------------------------------------------------------------------------- ceiling
def gemm_ceiling(*, size: int = 4096, repeats: int = 5) -> dict[str, Any]:
    """The machine's fp32 matrix-multiply rate: best of numpy (BLAS) and JAX (XLA) on ``[size, size]`` squares.

    Each library gets one warm-up call, then ``repeats`` timed calls; the median time gives GFLOP/s with the
    textbook count ``2 * size**3``.

    Returns:
        ``{"size", "flops", "numpy_gflops", "jax_gflops", "gflops" (the max), "numpy_seconds", "jax_seconds"}``.
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flops = 2.0 * size**3

    np.matmul(a, b)
    np_times = [timed(lambda: np.matmul(a, b))[0] for _ in range(repeats)]

    ja, jb = jax.device_put(a), jax.device_put(b)
    mm = jax.jit(jnp.matmul)
    mm(ja, jb).block_until_ready()
    jax_times = [timed(lambda: mm(ja, jb).block_until_ready())[0] for _ in range(repeats)]

    np_g = flops / median(np_times) / 1e9
    jax_g = flops / median(jax_times) / 1e9
    return {
        "size": size,
        "flops": flops,
        "numpy_gflops": np_g,
        "jax_gflops": jax_g,
        "gflops": max(np_g, jax_g),
        "numpy_seconds": np_times,
        "jax_seconds": jax_times,
    }


def gemm_job(library: str, *, size: int = 4096) -> tuple[Callable[[], Any], float]:
    """A blocking fp32 ``[size, size]`` matmul in ``"numpy"`` or ``"jax"`` (warmed up) and its FLOP count.

    For re-measuring the ceiling inside a suite's interleaved rounds, so that it sees the same machine load.
    """
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if library == "numpy":
        fn = lambda: np.matmul(a, b)
    elif library == "jax":
        import jax
        import jax.numpy as jnp

        ja, jb, mm = jax.device_put(a), jax.device_put(b), jax.jit(jnp.matmul)
        fn = lambda: mm(ja, jb).block_until_ready()
    else:
        raise ValueError(f"library must be 'numpy' or 'jax', got {library!r}")
    fn()
    return fn, 2.0 * size**3


# ---------------------------------------------------------------------------------------------------- data
def npy_dataset(
    path: str,
    n_rows: int,
    row_shape: Sequence[int],
    *,
    seed: int = 0,
    dist: str = "normal",
    block: int = 65536,
) -> str:
    """Create (once) a float32 ``.npy`` of random rows ``[n_rows, *row_shape]`` and return its path.

    ``dist`` is ``"normal"`` (standard normal) or ``"uniform"`` (on ``[0, 1)``, as the seed-001 data).

    Rows are drawn block by block with ``default_rng([seed, block_index])``, so the file never sits in memory
    whole and the first ``k`` rows are the same for every ``n_rows >= k``. An existing file with the right shape and
    dtype is reused.
    """
    if dist not in ("normal", "uniform"):
        raise ValueError(f"dist must be 'normal' or 'uniform', got {dist!r}")
    row_shape = tuple(int(d) for d in row_shape)
    shape = (int(n_rows), *row_shape)
    if os.path.exists(path):
        try:
            existing = np.load(path, mmap_mode="r")
            if existing.shape == shape and existing.dtype == np.float32:
                return path
        except (ValueError, OSError):
            pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        for i, start in enumerate(range(0, shape[0], block)):
            m = min(block, shape[0] - start)
            rng = np.random.default_rng([seed, i])
            size = (m, *row_shape)
            rows = (
                rng.standard_normal(size, dtype=np.float32)
                if dist == "normal"
                else rng.random(size, np.float32)
            )
            f.write(rows.tobytes())
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------------- output
def format_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]], *, markdown=False
) -> str:
    """Render ``rows`` as a fixed-width text table (or a Markdown table).

    Args:
        rows: one dict per row.
        columns: ``(key, header, format)`` triples, e.g. ``("sps", "samples/s", "{:,.0f}")``; a missing or ``None``
            value prints as ``-``, a string value prints as is.
        markdown: emit a GitHub Markdown table instead.
    """

    def cell(row, key, fmt):
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return v if isinstance(v, str) else fmt.format(v)

    header = [h for _, h, _ in columns]
    body = [[cell(r, k, f) for k, _, f in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    fmt_row = lambda cells: "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([fmt_row(header), fmt_row(["-" * w for w in widths]), *map(fmt_row, body)])


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(name: str, payload: dict[str, Any], *, directory: str = RESULTS_DIR) -> str:
    """Write ``payload`` (numpy values converted, NaN -> null) to ``directory/name`` and return the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        json.dump(_jsonable(payload), f, indent=1)
        f.write("\n")
    return path
