"""The streaming engine: one jitted kernel over fixed-size chunks, statistics folded in float64 on the host.

Design note
-----------
Every sensitivity method is ``kernel(model, xs, mask, row_index) -> per-chunk stats pytree`` (a module-level
``jax.jit`` function, written for one chunk with ``jax.vmap`` over one-sample maths) plus a ``finalize`` on
the merged statistics. :func:`run` is the only loop::

    source --[prefetch thread: read block, cast, NaN check, pad + mask, device_put]--> queue(depth 2)
           --[main thread: dispatch kernel (async), start device->host copy of its stats]--> in-flight deque
           --[once ``depth`` newer chunks are dispatched: to_host + float64 Chan merge]--> merged stats

* **One compile.** Chunks always have ``batch_size`` rows (the last one padded with its last real row and
  masked), the model crosses ``jit`` as a pytree (weights are leaves, the architecture is static), so a data
  set compiles the kernel once, and a second model with the same architecture reuses it.
* **Overlap.** Host work (file reads, casts, finiteness checks, host->device copies) runs in a background
  thread while the device computes; the main thread never waits on chunk k before dispatching k+1 (JAX
  dispatch is asynchronous): it only reads back the small statistics of chunk k after chunk k+``depth`` is
  queued. Nothing of size ``batch_size`` comes back to the host.
* **Accuracy.** Kernels summarise a chunk in float32 with two-pass shifted moments (exact for constants); the
  host merges chunk summaries in float64 with Chan et al.'s pairwise update. Per-chunk float32 error is ~1e-7
  relative and does not accumulate across chunks, so results agree across batch sizes and device counts to
  ~1e-7 and a 1,000,000-row mean matches a float64 reference to well under 1e-5.
* **Devices.** With several local devices the batch axis is sharded over a 1-D ``Mesh`` (``NamedSharding``
  with ``P("batch")``); the weights are replicated; XLA inserts the cross-device reductions. ``batch_size`` is
  rounded up to a multiple of the device count.
* **Memory.** Only ``depth + prefetch`` chunks and the statistics are alive at a time: nothing grows with N.
* **Batch size.** :func:`choose_batch_size` divides a per-device memory budget (128 MiB on CPU, where larger
  chunks stop paying off once GEMMs are big enough; 1 GiB on accelerators, which need wide batches to fill)
  by an upper bound on the bytes one sample needs (the sum of all intermediate values of the traced per-sample
  computation, :func:`estimate_bytes_per_sample`), rounded down to a power of two in ``[64, 65536]``, and
  never larger than the data set.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError, DataError
from jaxsens import _cache, _checkpoint, _stats, distributed
from jaxsens._data import Chunk, Source, chunk_dtype, iter_chunks, open_source, open_sources

__all__ = [
    "RunInfo",
    "choose_batch_size",
    "estimate_bytes_per_sample",
    "integer_inputs",
    "model_bytes_per_sample",
    "model_inputs",
    "progress_reporter",
    "run",
]

Kernel = Callable[[Any, jax.Array, jax.Array, jax.Array], Any]
Progress = Callable[[int, "int | None"], None]

_BUDGET_BYTES = {"cpu": 128 << 20}
_DEFAULT_BUDGET = 1 << 30
_MIN_BATCH, _MAX_BATCH = 64, 65536


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a :func:`run` saw.

    Attributes:
        n_samples: rows that entered the statistics.
        n_skipped: rows dropped by ``nan_policy="skip"``.
        n_chunks: chunks processed.
        batch_size: rows per chunk (over all devices).
        n_devices: devices the batch axis was sharded over.
        feature_names: column names from the data's header, if any (for several inputs, a tuple with one
            such entry per input).
    """

    n_samples: int
    n_skipped: int
    n_chunks: int
    batch_size: int
    n_devices: int
    feature_names: tuple[str, ...] | None


def run(
    kernel: Kernel,
    model,
    data,
    *,
    targets=None,
    batch_size: int | None = None,
    bytes_per_sample: int | None = None,
    nan_policy: str = "raise",
    progress: bool | Progress | None = None,
    devices: Sequence[jax.Device] | None = None,
    depth: int = 2,
) -> tuple[Any, RunInfo]:
    """Stream ``data`` through ``kernel`` and merge the per-chunk statistics.

    Args:
        kernel: ``kernel(model, xs, mask, row_index) -> pytree`` of :mod:`jaxsens._stats` summaries of one
            chunk (``xs`` ``[batch_size, *input_shape]`` float32, int32 for an integer input (token ids, exact),
            a tuple of such arrays for a model with several inputs; ``mask`` ``[batch_size]`` bool,
            ``row_index`` ``[batch_size]`` uint32). Define it once at module level with ``jax.jit``.
        model: a :class:`jaxsens.Model` (or any pytree the kernel takes first; it needs ``input_shape`` and
            ``feature_names`` attributes, and ``n_inputs`` / ``input_names`` / ``input_dtypes`` when it has
            several or integer inputs, see :func:`model_inputs`).
        data: anything :func:`jaxsens._data.open_source` accepts, or a ``Source``; for several inputs, a tuple
            or dict of those (:func:`jaxsens._data.open_sources`: row-aligned, read chunk by chunk together, so
            memory stays independent of the number of rows), or a tuple of ``Source`` s.
        targets: ``None``, or targets streamed row-aligned with ``data`` (anything
            :func:`jaxsens._data.open_xy` accepts: an array, a file, a column name of the data, a ``Source``);
            the kernel's second argument is then ``(xs, ys)`` with ``ys`` ``[batch_size, *target_shape]``
            (int32 for integer class labels, else float32), and a row with NaN / Inf in its targets is a bad
            row like any other.
        batch_size: rows per chunk; default from :func:`choose_batch_size` and ``bytes_per_sample``.
        bytes_per_sample: memory one sample needs inside the kernel (for the default ``batch_size``).
        nan_policy: ``"raise"`` or ``"skip"`` rows holding NaN / Inf.
        progress: ``True`` for a tqdm bar, or ``progress(rows_done, rows_total_or_None)`` called after each
            chunk.
        devices: devices to shard the batch over; default all local devices.
        depth: chunks in flight on the device before the oldest one's statistics are read back.

    Returns:
        ``(stats, info)``: the merged statistics as numpy float64 (same pytree as the kernel's output) and a
        :class:`RunInfo`.

    Raises:
        ValueError: when no row reached the statistics (empty data, or every row skipped).
    """
    names, shapes, dtypes = model_inputs(model)
    multi = len(shapes) > 1
    if targets is not None:
        from jaxsens._data import open_xy
    if multi:
        input_shape = shapes
        source = (
            data
            if isinstance(data, tuple) and all(isinstance(s, Source) for s in data)
            else open_sources(data, input_names=names, input_shapes=shapes)
        )
        n_rows = next((s.n_rows for s in source if s.n_rows is not None), None)
        n_in = sum(math.prod(s) for s in shapes)
    else:
        input_shape = shapes[0]
        if targets is not None and not isinstance(targets, Source):
            source, targets = open_xy(
                data, targets, input_shape=input_shape, feature_names=getattr(model, "feature_names", None)
            )
        else:
            source = (
                data
                if isinstance(data, Source)
                else open_source(
                    data, input_shape=input_shape, feature_names=getattr(model, "feature_names", None)
                )
            )
        n_rows, n_in = source.n_rows, math.prod(input_shape)
    if targets is not None and multi and not isinstance(targets, Source):
        _, targets = open_xy(source[0], targets, input_shape=shapes[0])
    if targets is not None and n_rows is None:
        n_rows = targets.n_rows
    source, targets, n_rows = distributed.shard(source, targets, n_rows)  # this process's rows (if several)
    devices = list(devices) if devices is not None else jax.local_devices()
    if not devices:
        raise ArgumentError("devices= is empty; pass at least one jax.Device or leave it as None")
    n_dev = len(devices)
    if batch_size is None:
        batch_size = choose_batch_size(bytes_per_sample or 4 * n_in, n_rows=n_rows, devices=devices)
    else:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        batch_size = int(batch_size)
    batch_size = -(-batch_size // n_dev) * n_dev

    if n_dev > 1:
        mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
        rows_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
        model_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    else:
        rows_sharding = model_sharding = devices[0]
    model = jax.device_put(model, model_sharding)

    def put(chunk: Chunk):
        return jax.device_put((chunk.xs, chunk.mask, chunk.row_index), rows_sharding)

    report = progress_reporter(progress, n_rows)
    chunk_dtypes = tuple(chunk_dtype(d) for d in dtypes)  # float32; int32 for token ids (exact)
    sources, shapes_all, dtype = source, input_shape, chunk_dtypes if multi else chunk_dtypes[0]
    if targets is not None:  # targets stream with the data, row-aligned: one more source in the same chunks
        y_dtype = np.int32 if np.dtype(getattr(targets, "dtype", np.float32)).kind in "iub" else np.float32
        y_shape = tuple(getattr(targets, "row_shape", ()) or ())
        sources = (*source, targets) if multi else (source, targets)
        shapes_all = (*input_shape, y_shape) if multi else (input_shape, y_shape)
        dtype = (*chunk_dtypes, y_dtype)
    chunks = iter_chunks(
        sources, batch_size=batch_size, input_shape=shapes_all, nan_policy=nan_policy, dtype=dtype
    )
    if targets is not None:  # (xs..., ys) -> ((xs...) or xs, ys)
        chunks = (
            dataclasses.replace(c, xs=((tuple(c.xs[:-1]) if multi else c.xs[0]), c.xs[-1])) for c in chunks
        )
    acc, pending = None, collections.deque()
    n_valid = n_skipped = n_chunks = done = 0
    ckpt = _checkpoint.engine_slot(kernel, model, sources, data=data, batch_size=batch_size, nan_policy=nan_policy,
                                   devices=devices)  # None unless inside jaxsens.checkpointing()
    if ckpt is not None:  # the fold state after the chunks already done (none on a new run); the stream skips them
        chunks, (acc, n_valid, n_skipped, n_chunks, done) = ckpt.skip(chunks), ckpt.restored
    feed = _prefetch(chunks, put)
    started = trimmed = time.monotonic()
    try:
        for chunk, dev in feed:
            out = None
            if chunk.n_valid:  # a chunk whose rows were all skipped has nothing to compute
                out = kernel(model, *dev)
                for leaf in jax.tree.leaves(out):
                    leaf.copy_to_host_async()
                n_chunks += 1
            pending.append((chunk.n_valid + chunk.n_skipped, out))
            n_valid += chunk.n_valid
            n_skipped += chunk.n_skipped
            while len(pending) > depth:
                acc, done = _retire(pending, acc, done, report)
                if ckpt is not None:
                    ckpt.retired(acc, done)  # saves every N chunks: acc covers exactly the chunks retired
            if time.monotonic() - trimmed > _TRIM_SECONDS:
                release_free_memory()
                trimmed = time.monotonic()
        while pending:
            acc, done = _retire(pending, acc, done, report)
            if ckpt is not None:
                ckpt.retired(acc, done)
    finally:
        feed.close()
        report(None)
        if time.monotonic() - started > _TRIM_SECONDS:  # a short run has little to give back: no 5 ms trim
            release_free_memory()
    if ckpt is not None:  # this process's own final state (before any merge across processes)
        ckpt.finish(acc, n_valid, n_skipped, n_chunks, done)
    acc, n_valid, n_skipped, n_chunks = distributed.merge(acc, n_valid, n_skipped, n_chunks)  # over processes
    if n_valid == 0:
        why = f" ({n_skipped} rows skipped for NaN / Inf)" if n_skipped else ""
        what = "; ".join(s.description for s in source) if multi else source.description
        raise DataError(f"data ({what}) has no usable rows{why}")
    header = tuple(s.feature_names for s in source) if multi else source.feature_names
    info = RunInfo(n_valid, n_skipped, n_chunks, batch_size, n_dev, header)
    return acc, info


def model_inputs(model) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], tuple[np.dtype, ...]]:
    """``(names, per-sample shapes, dtypes)`` of the inputs of ``model`` (a :class:`jaxsens.Model` or any object
    with ``input_shape``; ``n_inputs`` > 1 means ``input_shape`` is a tuple of shapes; ``input_dtypes`` default
    float32)."""
    n = int(getattr(model, "n_inputs", 1))
    shapes = tuple(tuple(s) for s in model.input_shape) if n > 1 else (tuple(model.input_shape),)
    names = tuple(getattr(model, "input_names", None) or ("x",) * n)
    dtypes = tuple(np.dtype(d) for d in (getattr(model, "input_dtypes", None) or (np.float32,) * n))
    return names, shapes, dtypes


def integer_inputs(model) -> tuple[tuple[str, np.dtype], ...]:
    """``((name, dtype), ...)`` of the model's inputs declared integer or bool (e.g. token ids feeding an
    Embedding / Gather): no derivative and no continuous perturbation has a meaning there."""
    names, _, dtypes = model_inputs(model)
    return tuple((n, d) for n, d in zip(names, dtypes) if d.kind in "iub")


def choose_batch_size(bytes_per_sample: int, *, n_rows: int | None = None, devices=None) -> int:
    """Default rows per chunk: a per-device memory budget over ``bytes_per_sample``, as a power of two.

    Args:
        bytes_per_sample: upper bound on the memory one sample needs in the kernel.
        n_rows: rows in the data set, when known (small data sets get a smaller chunk, less padding).
        devices: devices the batch is sharded over (default all local devices).

    Returns:
        A power of two in ``[64, 65536]`` times the device count, at most the next power of two above
        ``n_rows``.
    """
    devices = list(devices) if devices is not None else jax.local_devices()
    budget = _BUDGET_BYTES.get(devices[0].platform, _DEFAULT_BUDGET)
    per_device = max(_MIN_BATCH, min(_MAX_BATCH, budget // max(int(bytes_per_sample), 1)))
    per_device = 1 << math.floor(math.log2(per_device))
    batch = per_device * len(devices)
    if n_rows:
        batch = min(batch, max(len(devices), 1 << math.ceil(math.log2(max(n_rows, 1)))))
    return batch


def estimate_bytes_per_sample(fn: Callable, *args) -> int:
    """Upper bound on the memory of ``fn(*args)`` for one sample: the bytes of all its traced intermediates.

    Args:
        fn: a per-sample function (e.g. the per-sample Jacobian).
        args: example arguments (arrays or ``jax.ShapeDtypeStruct``).
    """
    closed = jax.make_jaxpr(fn)(*args)
    return max(_jaxpr_bytes(closed.jaxpr), 4)


_BYTES_CACHE: dict = {}


def model_bytes_per_sample(model, tag, fn: Callable, *args) -> int:
    """:func:`estimate_bytes_per_sample` of ``fn(*args)``, traced once per architecture and then cached.

    Tracing a converted graph costs tens of milliseconds (more for unrolled recurrences), which a call on a
    small data set must not pay every time. The cache key is the model's pytree structure (architecture, static
    metadata), its leaves' shapes and dtypes, ``tag`` (what ``fn`` computes, hashable) and the avals of
    ``args``; ``fn`` must depend on nothing else. For converted models the value is also kept on disk, so that
    a new process does not trace again (:func:`jaxsens._cache.persistent_analysis`).
    """
    arg_avals = tuple((np.shape(v), str(getattr(v, "dtype", type(v)))) for v in args)
    return _cache.per_architecture(_BYTES_CACHE, model, lambda: estimate_bytes_per_sample(fn, *args), tag, arg_avals,
                                   persist="bytes-per-sample", decode=_positive_int)


def _positive_int(value) -> int | None:
    """A kept record's positive integer, or ``None`` for a malformed one."""
    return value if type(value) is int and value > 0 else None


def _jaxpr_bytes(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = getattr(v, "aval", None)
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += math.prod(aval.shape) * aval.dtype.itemsize  # also PRNG key dtypes (no numpy dtype)
        for p in eqn.params.values():
            for sub in p if isinstance(p, list | tuple) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _jaxpr_bytes(inner)
    return total


# ------------------------------------------------------------------------------------------ helpers
_TRIM_SECONDS = 2.0  # at most one return of freed heap memory to the OS per this many seconds
_malloc_trim = None


def release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere).

    Chunks are allocated by the prefetch thread (file readers, casts) and freed by the main thread, in glibc's
    per-thread arenas; without a trim the freed pages of long runs stay resident (RSS grew by ~20% from 1M to 4M
    CSV rows in bench/memory.py although nothing was held). Called at most every :data:`_TRIM_SECONDS` seconds
    and at the end of runs longer than that (a few milliseconds each: < 0.5% of the time).
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes
            import ctypes.util

            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def _retire(pending: collections.deque, acc, done: int, report) -> tuple[Any, int]:
    """Read back the oldest in-flight chunk's statistics (blocks on it) and merge them in float64."""
    rows, stats = pending.popleft()
    if stats is not None:
        acc = _stats.merge(acc, _stats.to_host(stats))
    report(done + rows)
    return acc, done + rows


_DONE, _ERROR, _ITEM = object(), object(), object()


def _prefetch(chunks: Iterator[Chunk], put: Callable, *, size: int = 2) -> Iterator[tuple[Chunk, Any]]:
    """Run ``chunks`` (reading, casting, padding) and ``put`` (host->device) in a background thread."""
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def worker():
        try:
            for chunk in chunks:
                if not offer((_ITEM, (chunk, put(chunk)))):
                    return
            offer((_DONE, None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            offer((_ERROR, e))

    thread = threading.Thread(target=worker, name="jaxsens-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind is _DONE:
                return
            if kind is _ERROR:
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5.0)


def progress_reporter(progress, total: int | None) -> Callable[[int | None], None]:
    """``report(rows_done)`` after each chunk; ``report(None)`` closes (a tqdm bar).

    ``progress`` is ``None`` / ``False`` (nothing), ``True`` (a tqdm bar) or ``callable(done, total)``; methods that
    count over several passes or engine runs use it with their own total.
    """
    if progress is None or progress is False:
        return lambda done: None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="rows", unit_scale=True, dynamic_ncols=True)
        last = [0]

        def report(done):
            if done is None:
                bar.close()
                return
            bar.update(done - last[0])
            last[0] = done

        return report
    if not callable(progress):
        raise ArgumentTypeError(
            f"progress must be None, True or a callable(rows_done, rows_total), got {progress!r}"
        )

    def report(done):
        if done is not None:
            progress(done, total)

    return report
