"""Checkpoint and resume of streamed runs: the fold state saved every N chunks, a killed run continued exactly.

Design note
-----------
:func:`jaxsens._engine.run` folds per-chunk statistics into a float64 state in chunk order. A checkpoint is that
state after the first ``k`` chunks, saved to disk; a resumed run restores it, reads past the ``k`` chunks without
computing on them, and folds chunk ``k``, ``k + 1``, ... exactly as the uninterrupted run would: the same chunk
boundaries (``k * batch_size``, a checkpoint fixes ``batch_size``), the same global ``row_index`` (so per-row random
keys draw the same numbers), the same float64 merge sequence. The result is therefore **bit-identical** to an
uninterrupted run, not merely close.

* **Hook.** :func:`checkpointing` puts a :class:`Checkpointer` in a context variable; :func:`engine_slot` (called
  once by :func:`jaxsens._engine.run`) returns ``None`` when none is active, else a :class:`Slot`: the run's
  restored state and the chunk stream with the done chunks skipped (:meth:`Slot.skip`), told of every retired chunk
  (:meth:`Slot.retired`) and of the end (:meth:`Slot.finish`).
* **Pipelining.** The engine keeps ``depth`` chunks in flight on the device and a prefetch thread a few chunks
  ahead; a save happens when chunk ``k - 1`` is *retired* (its statistics merged), so the state covers exactly
  chunks ``0 .. k - 1``, whatever is in flight. The per-chunk counts (rows, skipped rows) travel from the prefetch
  thread to the retirement in a FIFO, in chunk order.
* **Several engine calls per job** (a first pass for feature means or standard deviations, one pass per
  permutation repeat, stepwise steps): each call is one *slot*, numbered in call order. A finished slot keeps its
  final state: a resumed job replays it without reading any data, so later calls see the same inputs and the job
  continues where it stopped. Each slot has its own fingerprint; a job whose calls diverge is refused.
* **Files.** ``FOLDER/p{process}-job.json`` (the job's fingerprint and the interval) and
  ``FOLDER/p{process}-call{i:04d}.npz`` (one per slot: the state's arrays, its structure and counters as JSON;
  never pickled). ``process`` is ``jax.process_index()``: with several processes each saves its own share. Every
  write goes through :func:`jaxsens._io.atomic_write` (temporary file, ``fsync``, ``os.replace``): a kill
  mid-write leaves the previous checkpoint. After a successful job the files are removed.
* **Fingerprints.** A resume is refused, naming what differs, when:

  - the job differs (command line: the model files' bytes (BLAKE2b of every byte), the data files (rule below),
    the method, every option that changes numbers, the seed, the batch size, the jaxsens / jax / jaxlib / numpy
    versions);
  - a slot differs: the kernel and its static options, the model's weights and the method's arrays (BLAKE2b of
    every leaf: a different key or baseline is refused), the sources (description, rows, row shape, dtype), the
    batch size, ``nan_policy``, the devices, the process index and count, the versions;
  - the data read back differ: one chunk in every ``every`` (the interval of the job's first run) goes into a
    chained CRC-32 as it is folded; the resumed run recomputes it over the chunks it reads past and compares.

  **Data files** are identified by absolute path, size, and BLAKE2b of their first and last MiB (cheap on
  terabyte files; the modification time is not used, so a copied file resumes). **In-memory arrays** handed to the
  engine are hashed whole (CRC-32, about 1 s per GB).
* **Skipping.** The done chunks are read and re-batched (file reads, the NaN check) but never sent to the device
  nor computed on; chunk boundaries therefore stay those of the reader. On a ``.npy`` file this costs a read of
  the done rows (a few hundred MB/s); CSV / Parquet are parsed again.

Cost: a save every ``every`` chunks (a small ``.npz`` write and an ``fsync``) and a CRC-32 of one chunk in
``every`` (in the prefetch thread).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import glob
import hashlib
import io
import json
import os
import re
import threading
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError, DataError

__all__ = [
    "DEFAULT_EVERY",
    "Checkpointer",
    "Slot",
    "add_cli_flags",
    "checkpointing",
    "cli_checkpointing",
    "engine_slot",
]

DEFAULT_EVERY = 50
"""Chunks between two saves when ``every`` is not given."""

FOLDER_NAME = ".checkpoint"  # the command line's checkpoint folder inside --out
_VERSION = 1  # file layout
_EDGE_BYTES = 1 << 20  # data files: BLAKE2b of the first and the last MiB
_ACTIVE: contextvars.ContextVar[Checkpointer | None] = contextvars.ContextVar(
    "jaxsens_checkpoint", default=None
)

# Command-line flags that change no number (presentation, where to write, how to reach the other processes).
_CLI_IGNORED = frozenset(
    {
        "fn",
        "command",
        "out",
        "checkpoint_folder",
        "quiet",
        "top",
        "no_plot",
        "report",
        "debug",
        "checkpoint_every",
        "resume",
        "fail_on_drift",
        "coordinator",
        "process_id",
    }
)
_CLI_MODEL_ARGS = ("model", "weights")
_PART_NAMES = {
    "kernel": "the method's kernel or its static options",
    "state": "the model's weights or the method's arrays (key, baseline, means, ...)",
    "sources": "the data sources (description, rows, row shape, dtype)",
    "arrays": "the in-memory data (content hash)",
    "batch_size": "the batch size",
    "nan_policy": "nan_policy",
    "devices": "the devices",
    "processes": "the process index or count",
    "software": "the jaxsens / jax / jaxlib / numpy versions",
}


# ------------------------------------------------------------------------------------------------ public API
@contextlib.contextmanager
def checkpointing(
    folder: str | os.PathLike,
    *,
    every: int | None = None,
    resume: bool = False,
    fingerprint: Mapping[str, Any] | None = None,
) -> Iterator[Checkpointer]:
    """Save the fold state of every streamed run inside the ``with`` block, and resume a killed job from it.

    Every call of a streaming method (or of :func:`jaxsens.compare`) inside the block saves its merged float64
    statistics to ``folder`` every ``every`` chunks. Run the same code again with ``resume=True`` after a crash
    or a kill: the chunks already folded are read past without being computed on, and the results are
    bit-identical to an uninterrupted run. A job that differs from the saved one (model weights, method or its
    options, key, data, batch size, software versions, or your own ``fingerprint``) is refused, naming what
    differs. When the block ends without an error the checkpoint files are removed.

    Fix ``batch_size`` or leave it to the engine: a resumed run uses the batch size the checkpoint was made with
    (a different one is refused).

    Args:
        folder: where the checkpoint files go (created if missing; one job per folder).
        every: chunks between two saves (default :data:`DEFAULT_EVERY`; on resume, the saved interval).
        resume: ``True`` to continue the job saved in ``folder`` (an error when there is none); ``False`` to start
            a new one (an error at the first streamed run when ``folder`` holds an unfinished one: resume it, or
            remove the folder).
        fingerprint: what else identifies the job (JSON-able values, e.g. a data version); checked on resume.

    Returns:
        A context manager yielding the :class:`Checkpointer`.

    Raises:
        ArgumentError: a bad argument, ``resume=True`` without a checkpoint, a new job over an unfinished one, or
            a job that differs from the saved one (the message names what differs).
        DataError: the data read back differ from those of the saved job.

    Example:
        >>> import numpy as np, tempfile, jaxsens
        >>> from jaxsens import examples
        >>> model = jaxsens.load_model(examples.default_model_path())
        >>> xs = np.load(examples.default_data_path())
        >>> folder = tempfile.mkdtemp()
        >>> with jaxsens.checkpointing(folder, every=2):
        ...     r = jaxsens.jacobian_importance(model, xs, batch_size=128)
        >>> r.n_samples
        1000
    """
    if _ACTIVE.get() is not None:
        raise ArgumentError(
            "checkpointing() is already active in this thread; one job, one checkpoint folder"
        )
    ckpt = Checkpointer(folder, every=every, resume=resume, fingerprint=fingerprint)
    token = _ACTIVE.set(ckpt)
    try:
        yield ckpt
    finally:
        _ACTIVE.reset(token)
    ckpt.clear()  # only after success: an error or a kill keeps the files


def engine_slot(kernel, state, sources, *, data, batch_size: int, nan_policy: str, devices) -> Slot | None:
    """The active checkpointer's slot for one :func:`jaxsens._engine.run` call, or ``None`` when none is active.

    Args:
        kernel: the run's kernel (a function or a ``functools.partial`` of one).
        state: the pytree passed to the kernel first (model weights, the method's arrays, the key).
        sources: the run's :class:`jaxsens._data.Source` (a tuple for several inputs and / or targets).
        data: the data (and targets) as given to the run: numpy arrays in it are hashed whole.
        batch_size: rows per chunk (after rounding to the devices).
        nan_policy: the run's ``nan_policy``.
        devices: the devices the batch is sharded over.
    """
    ckpt = _ACTIVE.get()
    if ckpt is None:
        return None
    return ckpt.slot(
        kernel, state, sources, data=data, batch_size=batch_size, nan_policy=nan_policy, devices=devices
    )


# ------------------------------------------------------------------------------------------- the checkpointer
class Checkpointer:
    """One job's checkpoint folder: numbers the engine calls (slots) and loads or saves their states.

    Made by :func:`checkpointing`; not meant to be built directly. The process index is read at the first engine
    call (after ``jax.distributed.initialize``, which must come before any JAX computation).
    """

    def __init__(self, folder, *, every: int | None, resume: bool, fingerprint: Mapping[str, Any] | None):
        if not isinstance(folder, str | os.PathLike):
            raise ArgumentTypeError(f"checkpointing(): folder must be a path, got {type(folder).__name__}")
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1
        ):
            raise ArgumentError(f"checkpointing(): every must be a positive number of chunks, got {every!r}")
        if not isinstance(resume, bool | np.bool_):
            raise ArgumentTypeError(f"checkpointing(): resume must be True or False, got {resume!r}")
        self.folder = os.path.abspath(os.fspath(folder))
        self.resume = bool(resume)
        self.job = _jsonable(dict(fingerprint or {}), "fingerprint")
        self.n_calls = 0
        self.log = None  # log(text): where the command line reports a resume
        self.writer = _Writer()
        self.process: int | None = None
        self.resumed_from: dict[int, int] = {}  # slot -> chunks skipped (for messages and tests)
        saved = self._any_job_file()
        if self.resume:
            if saved is None:
                raise ArgumentError(
                    f"resume: no checkpoint in {self.folder!r} (the job finished, or never saved one); run without "
                    "resume to start it"
                )
            check_parts("job", saved["job"], self.job, self.folder)
            self.every = int(every) if every is not None else int(saved["every"])
            self.check_every = int(saved["every"])  # the chunks whose content is checked: fixed for the job
        else:  # an unfinished job in the folder is refused at the first engine call, by this process's files (the
            # other processes of a distributed job may have written theirs already)
            self.every = int(every) if every is not None else DEFAULT_EVERY
            self.check_every = self.every
            try:
                os.makedirs(self.folder, exist_ok=True)
            except OSError as e:
                raise ArgumentError(
                    f"checkpoint folder {self.folder!r} cannot be created: {e.strerror}"
                ) from None

    # -- files
    def _any_job_file(self) -> dict | None:
        for path in sorted(glob.glob(os.path.join(glob.escape(self.folder), "p*-job.json"))):
            return _read_json(path)
        return None

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, f"p{self.process}-{name}")

    def _start(self) -> None:
        """At the first engine call: the process index, then this process's job file (written or checked)."""
        import jax

        self.process = int(jax.process_index())
        path = self._path("job.json")
        if os.path.exists(path) and not self.resume:
            raise ArgumentError(
                f"{self.folder!r} holds the checkpoint of an unfinished job; resume it (--resume, or resume=True), "
                "or remove the folder to start again"
            )
        if os.path.exists(path):
            check_parts("job", _read_json(path)["job"], self.job, self.folder)
        else:  # a new job; or, on resume, a process killed before its first engine call: nothing of it saved
            from jaxsens._io import atomic_write

            every = self.check_every
            text = json.dumps({"version": _VERSION, "every": every, "job": self.job}, indent=1)
            atomic_write(path, text)
        for tmp in glob.glob(os.path.join(glob.escape(self.folder), f".p{self.process}-*.tmp")):
            with contextlib.suppress(OSError):  # left by a kill during a write: the previous file is whole
                os.unlink(tmp)

    def slot(self, kernel, state, sources, *, data, batch_size: int, nan_policy: str, devices) -> Slot:
        """The next slot: its fingerprint checked against the saved one (on resume), its saved state loaded."""
        if self.process is None:
            self._start()
        index = self.n_calls
        self.n_calls += 1
        fingerprint = slot_fingerprint(
            kernel, state, sources, data=data, batch_size=batch_size, nan_policy=nan_policy, devices=devices
        )
        path = self._path(f"call{index:04d}.npz")
        saved = _load_slot(path) if self.resume and os.path.exists(path) else None
        if saved is not None:
            check_parts(f"engine call {index}", saved["meta"]["fingerprint"], fingerprint, self.folder)
            meta = saved["meta"]
            self.resumed_from[index] = meta["chunks"]
            if self.log is not None:
                how = "finished, replayed" if meta["finished"] else "resumed after"
                self.log(f"engine call {index} {how} {meta['chunks']} chunks ({meta['rows']:,} rows)")
        return Slot(self, index, path, fingerprint, saved)

    def clear(self) -> None:
        """Remove this process's checkpoint files (and the folder when it is left empty)."""
        with contextlib.suppress(Exception):  # the job succeeded: a failed intermediate save no longer matters
            self.writer.flush()
        if self.process is not None:
            for path in glob.glob(os.path.join(glob.escape(self.folder), f"p{self.process}-*")):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(self.folder)


# ------------------------------------------------------------------------------------------------- one slot
@dataclasses.dataclass
class _Counts:
    chunks: int = 0  # chunks retired (computed or not)
    n_valid: int = 0
    n_skipped: int = 0
    n_computed: int = 0  # chunks sent to the kernel (with at least one valid row)
    rows: int = 0  # rows retired (valid + skipped)
    check: int = 0  # CRC-32 chained over chunks check_every - 1, 2 * check_every - 1, ... retired so far


class Slot:
    """One engine call's checkpoint: its restored state, the chunk stream past the done chunks, the saves."""

    def __init__(self, owner: Checkpointer, index: int, path: str, fingerprint: dict, saved: dict | None):
        self.owner, self.index, self.path, self.fingerprint = owner, index, path, fingerprint
        self.done = _Counts()
        self.acc = None
        self.finished = False
        if saved is not None:
            meta = saved["meta"]
            self.done = _Counts(**{f.name: int(meta[f.name]) for f in dataclasses.fields(_Counts)})
            self.acc = saved["acc"]
            self.finished = bool(meta["finished"])
        self._resume_at = self.done.chunks  # chunks the stream skips
        self._fifo: collections.deque = collections.deque()  # per chunk read: (n_valid, n_skipped, chain)

    @property
    def restored(self) -> tuple[Any, int, int, int, int]:
        """``(acc, n_valid, n_skipped, n_chunks, rows_done)`` to start the engine's loop from."""
        d = self.done
        return self.acc, d.n_valid, d.n_skipped, d.n_computed, d.rows

    def skip(self, chunks: Iterator) -> Iterator:
        """``chunks`` past the done ones (read, never computed on), recording what the retirements need.

        Runs in the engine's prefetch thread. Raises :class:`DataError` when the chained CRC-32 of the compared
        chunks among the skipped ones differs from the saved one, or the data end before the resume point.
        """
        if self.finished:  # replayed from the saved state: nothing is read
            return iter(())
        return self._skip(chunks)

    def _skip(self, chunks: Iterator) -> Iterator:
        every, at = self.owner.check_every, self._resume_at
        i, chain = -1, 0
        for i, chunk in enumerate(chunks):
            if (i + 1) % every == 0:
                chain = _crc(chunk, chain)
            if i < at:
                if i == at - 1 and chain != self.done.check:
                    last = chunk.start + len(chunk.mask) - 1
                    raise DataError(
                        f"resume: the data differ from the checkpointed job's in rows 0..{last} already folded (one "
                        f"chunk in every {every} is compared; engine call {self.index}): the data changed since the "
                        f"checkpoint in {self.owner.folder!r}; remove it to start again"
                    )
                continue
            self._fifo.append((chunk.n_valid, chunk.n_skipped, chain))
            yield chunk
        if i < at - 1:
            raise DataError(
                f"resume: the data hold {i + 1} chunks of rows, the checkpoint in {self.owner.folder!r} has folded "
                f"{at} (engine call {self.index}): the data changed since; remove the checkpoint to start again"
            )

    def retired(self, acc, rows_done: int) -> None:
        """The engine merged the oldest in-flight chunk into ``acc``: count it, and save every ``every`` chunks."""
        n_valid, n_skipped, chain = self._fifo.popleft()
        d = self.done
        d.chunks += 1
        d.n_valid += n_valid
        d.n_skipped += n_skipped
        d.n_computed += n_valid > 0
        d.rows = rows_done
        d.check = chain
        if d.chunks % self.owner.every == 0:
            self._save(acc, finished=False)

    def finish(self, acc, n_valid: int, n_skipped: int, n_chunks: int, rows_done: int) -> None:
        """The run ended: save its final state (a resumed job replays it without reading the data)."""
        if self.finished:
            return
        d = self.done
        if (d.n_valid, d.n_skipped, d.n_computed, d.rows) != (n_valid, n_skipped, n_chunks, rows_done):
            raise RuntimeError(  # a bookkeeping bug, never a user error: do not save a wrong state
                f"checkpoint counts {d} differ from the engine's ({n_valid}, {n_skipped}, {n_chunks}, {rows_done})"
            )
        self._save(acc, finished=True)
        self.finished = True

    def _save(self, acc, *, finished: bool) -> None:
        """Save ``acc`` and the counts so far: in the background (a slow ``fsync`` must not stall the device), and
        synchronously when ``finished``. ``acc`` is not copied: merges build new arrays, never change old ones."""
        meta = {"version": _VERSION, "fingerprint": self.fingerprint, "finished": finished,
                **dataclasses.asdict(self.done)}  # fmt: skip
        writer = self.owner.writer
        if finished:
            writer.flush()
            _write_state(self.path, meta, acc)
        else:
            writer.submit(self.path, meta, acc)


def _write_state(path: str, meta: dict, acc) -> None:
    from jaxsens._io import atomic_write

    spec, leaves = _encode(acc, [])
    arrays = {f"leaf{i}": leaf for i, leaf in enumerate(leaves)}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps({**meta, "structure": spec})), **arrays)
    try:
        atomic_write(path, buf.getvalue())
    except OSError as e:
        raise ArgumentError(f"checkpoint: could not write {path!r}: {e.strerror or e}") from None


class _Writer:
    """One background thread writing the latest submitted state (older ones not yet written are dropped); an error
    there is raised in the caller's thread at the next :meth:`submit` or :meth:`flush`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: tuple | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, path: str, meta: dict, acc) -> None:
        with self._lock:
            self._raise()
            self._pending = (path, meta, acc)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jaxsens-checkpoint", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Wait for the writes submitted so far."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._lock:
            self._raise()

    def _run(self) -> None:
        while True:
            with self._lock:
                item, self._pending = self._pending, None
                if item is None or self._error is not None:
                    self._thread = None
                    return
            try:
                _write_state(*item)
            except BaseException as e:  # noqa: BLE001 - re-raised in the engine's thread
                with self._lock:
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


# -------------------------------------------------------------------------------------------- fingerprints
def slot_fingerprint(
    kernel, state, sources, *, data, batch_size: int, nan_policy: str, devices
) -> dict[str, Any]:
    """What identifies one engine call (see the module docstring): ``{part: text or hash}``."""
    import jax

    srcs = sources if isinstance(sources, tuple) else (sources,)
    leaves, treedef = jax.tree.flatten(state)
    h = hashlib.blake2b(_stable(str(treedef)).encode(), digest_size=16)
    for leaf in leaves:
        arr = _host(leaf)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
    devices = list(devices) if devices is not None else jax.local_devices()
    return {
        "kernel": _stable(_kernel_name(kernel)),
        "state": h.hexdigest(),
        "sources": "; ".join(
            f"{s.description} [{s.n_rows} rows, row shape {s.row_shape}, {s.dtype}]" for s in srcs
        ),
        "arrays": _arrays_hash(data),
        "batch_size": int(batch_size),
        "nan_policy": str(nan_policy),
        "devices": f"{len(devices)} x {devices[0].platform}" if devices else "none",
        "processes": f"{jax.process_index()} of {jax.process_count()}",
        "software": software(),
    }


def check_parts(what: str, saved: Mapping, now: Mapping, folder: str) -> None:
    """Refuse to resume when ``saved`` and ``now`` differ, naming every part that differs."""
    keys = list(dict.fromkeys([*saved, *now]))
    diff = [k for k in keys if saved.get(k) != now.get(k)]
    if not diff:
        return
    lines = [
        f"{_PART_NAMES.get(k, k)}: checkpoint {_short(saved.get(k))}, now {_short(now.get(k))}" for k in diff
    ]
    raise ArgumentError(
        f"cannot resume: the {what} differs from the checkpointed one in {folder!r} in "
        + "; ".join(lines)
        + ". Run it as before, or remove the checkpoint folder to start again"
    )


def software() -> str:
    """jaxsens, jax, jaxlib and numpy versions (a different XLA may round differently)."""
    import jax
    import jaxlib

    import jaxsens

    return f"jaxsens {jaxsens.__version__}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, numpy {np.__version__}"


def file_fingerprint(path: str, *, whole: bool = False) -> str:
    """A file (BLAKE2b of its size and first / last MiB, or of every byte with ``whole``) or a folder (of every
    file in it, by relative path); ``"missing"`` when nothing is there."""
    if os.path.isdir(path):
        h = hashlib.blake2b(digest_size=16)
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                h.update(
                    os.path.relpath(full, path).encode()
                    + b"\0"
                    + file_fingerprint(full, whole=whole).encode()
                )
        return "folder " + h.hexdigest()
    try:
        size = os.path.getsize(path)
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            if whole or size <= 2 * _EDGE_BYTES:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            else:
                h.update(f.read(_EDGE_BYTES))
                f.seek(size - _EDGE_BYTES)
                h.update(f.read(_EDGE_BYTES))
    except OSError:
        return "missing"
    return f"{size} bytes, {h.hexdigest()}"


def _kernel_name(kernel) -> str:
    import functools

    if isinstance(kernel, functools.partial):
        kw = ", ".join(f"{k}={_stable(repr(v))}" for k, v in sorted(kernel.keywords.items()))
        args = ", ".join(_stable(repr(a)) for a in kernel.args)
        return f"{_kernel_name(kernel.func)}({args}{'; ' if args and kw else ''}{kw})"
    fn = getattr(kernel, "__wrapped__", kernel)
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _stable(text: str) -> str:
    """``text`` without memory addresses (reprs of functions and objects differ between processes)."""
    return _ADDRESS.sub("", text)


def _host(leaf) -> np.ndarray:
    import jax

    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def _arrays_hash(data) -> str:
    """CRC-32 of the numpy arrays in ``data`` (an array, or tuples / dicts of them; files and sources: none)."""
    if isinstance(data, np.ndarray):
        if data.dtype.hasobject:
            return "objects"
        return (
            f"{zlib.crc32(memoryview(np.ascontiguousarray(data)).cast('B')):08x} {data.dtype.str}{data.shape}"
        )
    if isinstance(data, Mapping):
        data = tuple(data.values())
    if isinstance(data, tuple | list):
        return ",".join(_arrays_hash(d) for d in data)
    return "-"


def _crc(chunk, crc: int = 0) -> int:
    """CRC-32 of a chunk's rows, mask and first row number, continuing ``crc``."""
    crc = zlib.crc32(np.int64(chunk.start).tobytes(), crc)
    for arr in _arrays_of(chunk.xs):
        crc = zlib.crc32(memoryview(np.ascontiguousarray(arr)).cast("B"), crc)
    return zlib.crc32(memoryview(np.ascontiguousarray(chunk.mask)).cast("B"), crc)


def _arrays_of(xs) -> Iterator[np.ndarray]:
    if isinstance(xs, tuple | list):
        for x in xs:
            yield from _arrays_of(x)
    else:
        yield np.asarray(xs)


def _short(value, limit: int = 160) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value, what: str):
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as e:
        raise ArgumentTypeError(f"checkpointing(): {what} must hold JSON-able values ({e})") from None


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple | set | frozenset):
        return list(v)
    raise TypeError(f"{type(v).__name__} is not JSON-able")


# ------------------------------------------------------------------------------------ the state on disk
def _encode(tree, leaves: list) -> tuple[Any, list]:
    """A JSON description of a fold state (dicts, tuples, lists, None and :mod:`jaxsens._stats` summaries of numpy
    arrays) and its arrays in order; never pickled."""
    if tree is None:
        return {"t": "none"}, leaves
    if isinstance(tree, dict):
        if not all(isinstance(k, str) for k in tree):
            raise ArgumentError(f"checkpointing: a statistics dict with non-string keys {list(tree)[:5]}")
        return {"t": "dict", "k": list(tree), "v": [_encode(v, leaves)[0] for v in tree.values()]}, leaves
    if isinstance(tree, tuple | list):
        return {"t": type(tree).__name__, "v": [_encode(v, leaves)[0] for v in tree]}, leaves
    if type(tree) in _stats_types():
        fields = {f.name: _encode(getattr(tree, f.name), leaves)[0] for f in dataclasses.fields(tree)}
        return {"t": "stat", "c": type(tree).__name__, "f": fields}, leaves
    if isinstance(tree, np.ndarray | np.generic | float | int):
        leaves.append(np.asarray(tree))
        return {"t": "leaf", "i": len(leaves) - 1, "s": not isinstance(tree, np.ndarray)}, leaves
    raise ArgumentError(f"checkpointing cannot save statistics of type {type(tree).__name__}")


def _decode(spec, arrays: Mapping[str, np.ndarray]):
    t = spec["t"]
    if t == "none":
        return None
    if t == "dict":
        return {k: _decode(v, arrays) for k, v in zip(spec["k"], spec["v"])}
    if t in ("tuple", "list"):
        items = [_decode(v, arrays) for v in spec["v"]]
        return tuple(items) if t == "tuple" else items
    if t == "stat":
        cls = {c.__name__: c for c in _stats_types()}[spec["c"]]
        return cls(**{k: _decode(v, arrays) for k, v in spec["f"].items()})
    arr = arrays[f"leaf{spec['i']}"]
    return arr[()] if spec["s"] else arr


def _stats_types() -> tuple[type, ...]:
    from jaxsens import _stats

    return (_stats.Moments, _stats.CoMoments, _stats.Total, _stats.Extrema)


def _load_slot(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        if meta.get("version") != _VERSION:
            raise DataError(f"resume: the checkpoint file {path!r} has layout version {meta.get('version')}; this "
                            f"jaxsens reads {_VERSION}: remove its folder to start again")
        return {"meta": meta, "acc": _decode(meta["structure"], arrays)}
    except (OSError, ValueError, KeyError, TypeError, zlib.error) as e:
        raise DataError(
            f"resume: the checkpoint file {path!r} is unreadable ({e}); remove the folder to start again"
        ) from None


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("version") != _VERSION:
            raise DataError(f"resume: the checkpoint file {path!r} has layout version {data.get('version')}; this "
                            f"jaxsens reads {_VERSION}: remove its folder to start again")
        return data
    except (OSError, ValueError) as e:
        raise DataError(
            f"resume: the checkpoint file {path!r} is unreadable ({e}); remove its folder to start again"
        ) from None


# ---------------------------------------------------------------------------------------- command line
def add_cli_flags(p) -> None:
    """``--checkpoint-every N`` and ``--resume`` on a data command's parser."""
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help=f"save the fold state every N chunks under OUT/{FOLDER_NAME}/ (e.g. {DEFAULT_EVERY}); with --resume a "
        "killed run continues from it, bit-identical to an uninterrupted run",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the run saved in OUT/{FOLDER_NAME}/ (refused when the model, data or options differ)",
    )


def cli_checkpointing(args, *, model_paths: tuple[str, ...] = (), data_paths: tuple[str, ...] = ()):
    """The :func:`checkpointing` context of a data command (``nullcontext`` without ``--checkpoint-every`` /
    ``--resume``), with the job fingerprint read from ``args`` (see the module docstring).

    Args:
        args: the parsed command line (``out``, ``method``, the method options, ``model`` / ``data`` paths, ...).
        model_paths: model files besides ``args.model`` / ``args.weights`` (``compare``'s versions; the demo's).
        data_paths: data files besides the file-valued flags (``compare``'s data; the demo's).
    """
    every, resume = getattr(args, "checkpoint_every", None), bool(getattr(args, "resume", False))
    if every is None and not resume:
        return contextlib.nullcontext()
    if every is not None and every < 1:
        raise ArgumentError(f"--checkpoint-every must be a positive number of chunks, got {every}")
    _check_method(getattr(args, "method", None))
    return _logged(
        checkpointing(
            # the other processes of a distributed run write their outputs to a scratch folder, not their state
            getattr(args, "checkpoint_folder", None) or os.path.join(args.out, FOLDER_NAME),
            every=every,
            resume=resume,
            fingerprint=cli_fingerprint(args, model_paths=model_paths, data_paths=data_paths),
        )
    )


@contextlib.contextmanager
def _logged(context) -> Iterator[Checkpointer]:
    import sys

    with context as ckpt:
        ckpt.log = lambda text: print(f"checkpoint: {text}", file=sys.stderr)
        yield ckpt


def cli_fingerprint(args, *, model_paths=(), data_paths=()) -> dict[str, Any]:
    """The job fingerprint of a command line: model files hashed whole, data files by the cheap rule, every other
    flag that changes numbers by value, the software versions."""
    out: dict[str, Any] = {}
    models = [getattr(args, a, None) for a in _CLI_MODEL_ARGS] + list(model_paths)
    for path in models:
        if isinstance(path, str):
            out[f"model {path}"] = file_fingerprint(path, whole=True)
    for path in data_paths:
        out[f"data {path}"] = file_fingerprint(path)
    for name, value in sorted(vars(args).items()):
        if name in _CLI_IGNORED or name in _CLI_MODEL_ARGS or callable(value):
            continue
        flag = "--" + name.removeprefix("opt_").replace("_", "-")
        out[flag] = _jsonable(value, flag)
        file = _existing_file(value)
        if file is not None:
            out[f"data {file}"] = file_fingerprint(file)
    out["software"] = software()
    return out


def _existing_file(value) -> str | None:
    """``value`` as a file path when it names one (``FILE.npz:NAME`` / ``FILE.csv:COLUMN`` / ``@FILE`` too)."""
    if not isinstance(value, str) or not value:
        return None
    for candidate in (value, value.removeprefix("@"), value.rsplit(":", 1)[0]):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def _check_method(name: str | None) -> None:
    """Methods that stream nothing through the engine have nothing to checkpoint: refuse, naming them."""
    if name is None:
        return
    import jaxsens
    from jaxsens._cli_importance import DEPRECATED_METHOD_ALIASES

    name = DEPRECATED_METHOD_ALIASES.get(name, (name, None))[0]
    spec = jaxsens.methods().get(name)
    if spec is not None and spec.family in _NOT_STREAMED:
        none = [n for n, s in jaxsens.methods().items() if s.family in _NOT_STREAMED]
        raise ArgumentError(
            f"--checkpoint-every / --resume: --method {name} ({spec.family}) streams no data through the engine, "
            f"so there is nothing to checkpoint (methods without checkpoints: {', '.join(none)})"
        )


_NOT_STREAMED = ("weights", "retraining")  # weights only; retraining loops (refit per step, no chunks)
