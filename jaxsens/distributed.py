"""Several processes (one per machine, or per accelerator host) on JAX's own multi-process runtime.

:func:`initialize` starts ``jax.distributed`` (SLURM, Open MPI and Cloud TPU detected from the environment, or
explicit arguments). From then on every streamed pass of every method is shared: each process reads only its
share of the rows and folds its own statistics, and the fold states are merged across processes in float64 at
the end of the pass, so that every process holds the merged statistics (the next pass of a multi-pass method,
e.g. the feature means, starts from them) and every process returns the same result. Run the same script or
command in every process; the command line writes its outputs from process 0 only.

How rows are shared (:func:`shard`, called by the engine at the start of each pass):

* one file or array: contiguous row ranges of near-equal size, ``[k * n // P, (k + 1) * n // P)`` for process
  ``k`` of ``P``. A ``.npy`` file is read from its range (a seek), Parquet only from the row groups that hold
  it, an in-memory array is sliced; a CSV (or ``.npz``) must be read from its start up to the end of the
  range, but rows before the range are dropped before any other work.
* several files (a list or a glob, at least ``P`` of them): whole files, in order, split where the running
  total of bytes is closest to ``k / P`` of all bytes, so each process reads about the same volume.
* targets (and the other inputs of a model with several) are shared by the same rows.

Rows keep their global numbers (``Chunk.row_index``), so the per-row random keys ``fold_in(key, row)`` of the
random methods draw what a single process draws. Chunk boundaries differ (each share is chunked on its own),
so results equal a single-process run to float32 rounding (``~1e-7`` relative), not bitwise. A data set whose
row count is not known before reading (an iterable of batches, a ``.csv.gz``) cannot be split and is refused.

How states are merged (:func:`merge`, called by the engine at the end of each pass): every process puts its
float64 host statistics (and its row and chunk counts) in the distributed key-value store, reads every
process's, and folds them in process order ``0, 1, ..., P - 1`` with :func:`jaxsens._stats.merge`, so all
processes compute bit-identical merged states. Nothing goes through device collectives: float64 stays float64
without ``jax_enable_x64``. A process that fails leaves a note that the others report instead of waiting.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import functools
import io
import json
import math
import os
import time
from typing import Any

import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError, DataError, JaxsensError

__all__ = [
    "DistributedError",
    "add_arguments",
    "check_method",
    "initialize",
    "is_active",
    "merge",
    "process_count",
    "process_index",
    "shard",
]

_PREFIX = "jaxsens"
_POLL_SECONDS = 0.5


class DistributedError(JaxsensError, RuntimeError):
    """The processes of a distributed run could not connect, or one of them failed or fell out of step."""


@dataclasses.dataclass
class _State:
    runs: int = 0  # engine passes merged so far (every process counts the same)
    error: str | None = None  # the last error of this process, left for the others when it exits


_state = _State()


def _global():
    from jax._src.distributed import global_state

    return global_state


def is_active() -> bool:
    """Whether this process is one of several of an initialised ``jax.distributed`` run."""
    g = _global()
    return g.client is not None and (g.num_processes or 1) > 1


def process_index() -> int:
    """This process's number, ``0 .. process_count() - 1`` (0 outside a distributed run)."""
    return int(_global().process_id or 0) if is_active() else 0


def process_count() -> int:
    """Number of processes of the run (1 outside a distributed run)."""
    return int(_global().num_processes) if is_active() else 1


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: float = 300.0,
) -> tuple[int, int]:
    """Join a multi-process run: ``jax.distributed.initialize`` with jaxsens's checks and errors.

    Call it first, in every process, before anything computes with JAX. With no arguments the cluster is
    detected from the environment (SLURM, Open MPI, Cloud TPU); otherwise give all three. On CPU the
    cross-process collectives are set to ``gloo`` first. Calling it again with the same (or no) arguments
    returns the running setup.

    Args:
        coordinator: ``"HOST:PORT"`` of process 0, where it starts the coordination service (every process
            gives the same address).
        num_processes: number of processes in the run.
        process_id: this process's number, ``0 .. num_processes - 1``.
        timeout_s: seconds to wait for every process to connect.

    Returns:
        ``(process_id, num_processes)``.

    Raises:
        ArgumentError: a malformed address or numbers, an environment that names no cluster when no arguments
            are given, a second call with other arguments, or a call after JAX has already computed.
        DistributedError: the processes did not all connect within ``timeout_s``.

    Example (two processes on one machine, each running the same script)::

        import sys, jaxsens
        jaxsens.distributed.initialize("127.0.0.1:12345", 2, int(sys.argv[1]))
        result = jaxsens.jacobian_importance(model, "data.npy")  # each process reads half the rows
    """
    import jax

    _check_address(coordinator)
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer)):
            raise ArgumentTypeError(f"initialize(): {name} must be an integer, got {value!r}")
    if num_processes is not None and num_processes < 1:
        raise ArgumentError(f"initialize(): num_processes must be >= 1, got {num_processes}")
    if process_id is not None and not 0 <= process_id < (num_processes or math.inf):
        raise ArgumentError(
            f"initialize(): process_id must be in 0 .. num_processes - 1 = {(num_processes or 0) - 1}, "
            f"got {process_id}"
        )
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
        raise ArgumentError(
            f"initialize(): timeout_s must be a positive number of seconds, got {timeout_s!r}"
        )
    g = _global()
    if g.client is not None:  # idempotent
        running = (g.coordinator_address, int(g.num_processes), int(g.process_id))
        asked = (coordinator, num_processes, process_id)
        if any(a is not None and a != r for a, r in zip(asked, running)):
            raise ArgumentError(
                f"jaxsens.distributed is already initialised as process {running[2]} of {running[1]} "
                f"(coordinator {running[0]}); it cannot be initialised again as {asked}"
            )
        return running[2], running[1]
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise ArgumentError(
            "jaxsens.distributed.initialize() must come before any JAX computation in the process (JAX's "
            "backends are already running); call it first, right after the imports"
        )
    if coordinator is not None and process_id is not None:
        _reach(coordinator, process_id, timeout_s)  # JAX ends the process on a failed connection: check first
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    try:
        jax.distributed.initialize(
            coordinator, num_processes, process_id, initialization_timeout=max(1, math.ceil(timeout_s))
        )
    except (ValueError, TypeError) as e:  # no cluster environment, or one JAX rejects
        _reset()
        raise ArgumentError(
            f"jaxsens.distributed.initialize(): no SLURM / Open MPI / Cloud TPU environment gave what was not "
            f"passed ({e}); give coordinator HOST:PORT, num_processes and process_id (--coordinator, "
            "--num-processes, --process-id)"
        ) from None
    except Exception as e:  # noqa: BLE001 - JAX's runtime errors (connection, timeout) have no public type
        _reset()
        where = coordinator or "the detected coordinator"
        raise DistributedError(
            f"could not join the distributed run at {where} within {timeout_s:g} s "
            f"({_first_line(e)}); check that process 0 runs with the same address and that every process was "
            "started (num_processes)"
        ) from None
    atexit.register(_leave_note)
    return process_index(), process_count()


def _check_address(coordinator) -> None:
    if coordinator is None:
        return
    if not isinstance(coordinator, str):
        raise ArgumentTypeError(f"coordinator must be a 'HOST:PORT' string, got {coordinator!r}")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ArgumentError(
            f"coordinator {coordinator!r} is not HOST:PORT with a port in 1..65535 (e.g. 10.0.0.1:12345, "
            "the address of process 0)"
        )


def _reach(coordinator: str, process_id: int, timeout_s: float) -> None:
    """Process 0: the coordinator's port is free to listen on; the others: it accepts connections within
    ``timeout_s`` (process 0 may start later). JAX's own client aborts the whole process when it cannot connect,
    so a wrong address is caught here, as an error."""
    import socket

    host, _, port = coordinator.rpartition(":")
    host, port = host.strip("[]"), int(port)
    if process_id == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind(("", port))
            except OSError as e:
                raise DistributedError(
                    f"process 0 cannot start the coordinator on port {port} ({e.strerror or e}); choose a free "
                    "port for --coordinator"
                ) from None
        return
    deadline, why = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(
                (host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))
            ):
                return
        except OSError as e:
            why = e.strerror or type(e).__name__
            time.sleep(0.2)
    raise DistributedError(
        f"could not join the distributed run at {coordinator} within {timeout_s:g} s (last attempt: {why}); check "
        "that process 0 runs with the same --coordinator address and that this machine can reach it"
    )


def _reset() -> None:
    with contextlib.suppress(Exception):
        import jax

        jax.distributed.shutdown()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


# --------------------------------------------------------------------------------------------- sharing
def shard(source, targets, n_rows: int | None):
    """This process's share of a pass's data: ``(source, targets, n_rows)`` (unchanged in a single process).

    ``source`` is a :class:`jaxsens._data.Source` or a tuple of them (a model with several inputs), ``targets``
    a source or ``None``; all are cut to the same global rows ``[lo, hi)`` (see the module docstring).

    Raises:
        DataError: a source whose row count is unknown before reading.
    """
    if not is_active():
        return source, targets, n_rows
    sources = [
        *(source if isinstance(source, tuple) else (source,)),
        *([targets] if targets is not None else []),
    ]
    counts = {s.n_rows for s in sources} - {None}
    unknown = [s.description for s in sources if s.n_rows is None]
    if unknown or len(counts) != 1:
        why = (
            f"{unknown[0]} has no row count known before reading"
            if unknown
            else f"row counts differ: {counts}"
        )
        raise DataError(
            f"a distributed run splits the rows between {process_count()} processes by number, but {why}; "
            "use .npy, .npz, Parquet or plain CSV files (or a list / glob of them), or arrays"
        )
    lo, hi = _share(sources[0], counts.pop(), process_index(), process_count())
    cut = [_rows(s, lo, hi) for s in sources]
    if targets is not None:
        targets = cut.pop()
    return (tuple(cut) if isinstance(source, tuple) else cut[0]), targets, hi - lo


def _share(source, n_rows: int, k: int, p: int) -> tuple[int, int]:
    """Global rows ``[lo, hi)`` of process ``k`` of ``p``: whole files balanced by bytes, else equal ranges."""
    files = source.files
    if len(files) >= p and all(b is not None for _, b in files):
        rows = np.cumsum([0] + [n for n, _ in files])
        size = np.cumsum([0] + [b for _, b in files], dtype=np.float64)
        cuts = [0, *(int(np.argmin(np.abs(size - size[-1] * j / p))) for j in range(1, p)), len(files)]
        cuts = np.maximum.accumulate(cuts)
        return int(rows[cuts[k]]), int(rows[cuts[k + 1]])
    return k * n_rows // p, (k + 1) * n_rows // p


def _rows(source, lo: int, hi: int):
    """``source`` cut to its rows ``[lo, hi)``, still numbered globally."""
    from jaxsens._data import rows_of

    between = source.rows_between
    if between is not None:
        blocks = functools.partial(between, lo, hi)
    else:
        blocks = lambda rows: rows_of(source.blocks(rows), lo, hi)  # read and drop the rows before lo
    inner = None if between is None else lambda a, b, rows: between(lo + a, lo + b, rows)
    return dataclasses.replace(
        source, blocks=blocks, n_rows=hi - lo, first_row=source.first_row + lo, rows_between=inner, files=()
    )


# --------------------------------------------------------------------------------------------- merging
def merge(acc, n_valid: int, n_skipped: int, n_chunks: int):
    """Merge one pass's fold states across processes: ``(acc, n_valid, n_skipped, n_chunks)`` of the whole run.

    Every process calls it once per pass, in the same order; each gets the same merged float64 statistics
    (folded in process order) and the summed counts. Unchanged in a single process.

    Raises:
        DistributedError: another process failed (its error is quoted) or ran a different pass.
    """
    if not is_active():
        return acc, n_valid, n_skipped, n_chunks
    client, me, p = _global().client, process_index(), process_count()
    run = _state.runs
    _state.runs += 1
    mine = _encode(acc, (n_valid, n_skipped, n_chunks))
    client.key_value_set_bytes(f"{_PREFIX}/{run}/{me}", mine)
    states = [_decode(mine if k == me else _wait(client, run, k)) for k in range(p)]
    if run:  # every process has published this pass, so all have read the previous one: drop ours
        with contextlib.suppress(Exception):
            client.key_value_delete(f"{_PREFIX}/{run - 1}/{me}")
    from jaxsens import _stats

    shapes = {s for _, s, _ in states if s is not None}
    if len(shapes) > 1:
        raise DistributedError(
            f"the processes ran different passes at pass {run} (statistics of {len(shapes)} different shapes); "
            "every process must run the same script with the same arguments and data"
        )
    merged, totals = None, np.zeros(3, np.int64)
    for tree, _, counts in states:
        if tree is not None:
            merged = _stats.merge(merged, tree)
        totals += counts
    return merged, int(totals[0]), int(totals[1]), int(totals[2])


def _wait(client, run: int, k: int) -> bytes:
    key = f"{_PREFIX}/{run}/{k}"
    while True:
        with contextlib.suppress(Exception):  # DEADLINE_EXCEEDED: not there yet
            return client.blocking_key_value_get_bytes(key, int(_POLL_SECONDS * 1000))
        note = None
        with contextlib.suppress(Exception):  # NOT_FOUND: still running
            note = client.key_value_try_get(f"{_PREFIX}/exit/{k}")
        if note is not None:
            raise DistributedError(f"process {k} stopped before it finished pass {run}: {note}")


def _leave_note() -> None:
    """At exit: tell the others this process is gone (and why), so a process waiting for its statistics stops."""
    g = _global()
    if g.client is None:
        return
    with contextlib.suppress(Exception):
        note = f"it failed: {_state.error}" if _state.error else "it exited (see its own output)"
        g.client.key_value_set(f"{_PREFIX}/exit/{process_index()}", note)


def _encode(tree, counts) -> bytes:
    leaves, shape = _flatten(tree)
    buf = io.BytesIO()
    arrays = {f"leaf{i}": np.asarray(v, np.float64) for i, v in enumerate(leaves)}
    np.savez(buf, counts=np.asarray(counts, np.int64), shape=np.frombuffer(json.dumps(shape).encode(), np.uint8),
             **arrays)  # fmt: skip
    return buf.getvalue()


def _decode(data: bytes):
    """``(tree or None, structure text, counts)`` from :func:`_encode` 's bytes (no pickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        text = bytes(z["shape"]).decode()
        leaves = [z[f"leaf{i}"] for i in range(len(z.files) - 2)]
        counts = z["counts"]
    shape = json.loads(text)
    if shape is None:
        return None, None, counts
    it = iter(leaves)
    return _unflatten(shape, it), text, counts


def _stat_types() -> dict[str, type]:
    from jaxsens import _stats

    return {t.__name__: t for t in (_stats.Moments, _stats.CoMoments, _stats.Total, _stats.Extrema)}


def _flatten(tree) -> tuple[list, Any]:
    """Leaves and a JSON description of a pytree of :mod:`jaxsens._stats` summaries in dicts / tuples / lists."""
    leaves: list = []

    def walk(t):
        if t is None:
            return ["none"]
        if type(t).__name__ in _stat_types() and dataclasses.is_dataclass(t):
            names = [f.name for f in dataclasses.fields(t)]
            leaves.extend(getattr(t, n) for n in names)
            return ["stat", type(t).__name__, names]
        if isinstance(t, dict):
            return ["dict", [[k, walk(v)] for k, v in t.items()]]
        if isinstance(t, tuple | list):
            return ["tuple" if isinstance(t, tuple) else "list", [walk(v) for v in t]]
        if isinstance(t, np.ndarray | np.generic | float | int):
            leaves.append(t)
            return ["leaf"]
        raise DistributedError(f"cannot send statistics of type {type(t).__name__} between processes")

    return leaves, (None if tree is None else walk(tree))


def _unflatten(shape, leaves):
    kind = shape[0]
    if kind == "none":
        return None
    if kind == "stat":
        cls = _stat_types()[shape[1]]
        return cls(**{n: next(leaves) for n in shape[2]})
    if kind == "dict":
        return {k: _unflatten(v, leaves) for k, v in shape[1]}
    if kind in ("tuple", "list"):
        items = [_unflatten(v, leaves) for v in shape[1]]
        return tuple(items) if kind == "tuple" else items
    return next(leaves)


# ------------------------------------------------------------------------------------------ command line
_REFUSED = {
    "weights": "reads the weights only: there are no rows to share between processes",
    "retraining": "retrains networks on every row held in memory: each process would repeat the whole fit",
}


def check_method(spec) -> None:
    """Refuse a method that cannot share its work between processes (naming it and why)."""
    why = _REFUSED.get(getattr(spec, "family", None))
    if why is not None:
        raise ArgumentError(f"--method {spec.name} {why}; run it without --distributed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--distributed`` (with ``--coordinator``, ``--num-processes``, ``--process-id``,
    ``--distributed-timeout``) to a data command whose ``fn`` default is already set. The command then joins
    the run first; processes other than 0 compute their share and every merge like process 0, but print
    nothing and write their outputs to a temporary folder that is removed (exit status 0)."""
    g = parser.add_argument_group("more than one machine (jax.distributed)")
    g.add_argument("--distributed", action="store_true",
                   help="run as one process of several: each reads its share of the rows, statistics are "
                   "merged, process 0 writes the outputs. Without the next three flags the cluster is "
                   "detected (SLURM, Open MPI, Cloud TPU)")  # fmt: skip
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="address of process 0")
    g.add_argument("--num-processes", type=int, default=None, metavar="N", help="number of processes")
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0 .. N - 1")
    g.add_argument("--distributed-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for every process to connect (default %(default)s)")  # fmt: skip
    parser.set_defaults(fn=functools.partial(_run_command, parser.get_default("fn")))


def _run_command(fn, args) -> int:
    given = [f for f, v in (("--coordinator", args.coordinator), ("--num-processes", args.num_processes),
                            ("--process-id", args.process_id)) if v is not None]  # fmt: skip
    if not args.distributed:
        if given:
            raise ArgumentError(f"{', '.join(given)} only apply with --distributed")
        return fn(args)
    method = getattr(args, "method", None)
    if method is not None:
        from jaxsens._cli_importance import DEPRECATED_METHOD_ALIASES, _table

        table = _table()
        name = DEPRECATED_METHOD_ALIASES.get(method, (method,))[0]
        if name in table:
            check_method(table[name])
    initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=args.distributed_timeout)
    if process_index() == 0:
        return _noting_errors(fn, args)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="jaxsens-process-") as scratch:
        quiet = {"out": os.path.join(scratch, "out"), "quiet": True, "no_plot": True}
        if getattr(args, "report", None):
            quiet["report"] = os.path.join(scratch, "report.html")
        quiet = {k: v for k, v in quiet.items() if hasattr(args, k)}
        if getattr(args, "out", None):  # the checkpoint of this process's share stays in the job's real folder
            from jaxsens._checkpoint import FOLDER_NAME

            quiet["checkpoint_folder"] = os.path.join(args.out, FOLDER_NAME)
        args = argparse.Namespace(**{**vars(args), **quiet})
        with (
            open(os.devnull, "w") as null,
            contextlib.redirect_stdout(null),
            contextlib.redirect_stderr(null),
        ):
            _noting_errors(fn, args)  # an error still reaches stderr: the command line prints it after this
    return 0


def _noting_errors(fn, args) -> int:
    """``fn(args)``, keeping its error for the note the other processes read when this one exits."""
    try:
        return fn(args)
    except BaseException as e:
        _state.error = f"{type(e).__name__}: {_first_line(e)}"
        raise
