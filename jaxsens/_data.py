"""Data sources -> fixed-size padded chunks with masks and global row indices.

:func:`open_source` turns whatever the user passes (an array, a file path, an iterable of batches) into a
:class:`Source`: a re-startable stream of row blocks plus what is known up front (row count, column names).
:func:`iter_chunks` re-batches any source into :class:`Chunk` s of exactly ``batch_size`` rows: the last
ragged chunk is padded (so one compiled kernel serves every chunk) and carries a ``mask``; rows holding NaN or
Inf raise an error naming the row, or are masked out and counted with ``nan_policy="skip"``.

Nothing here grows with the number of rows: files are read block by block (``.npy`` / ``.npz`` with plain
reads after parsing the header, CSV with pandas ``chunksize``, Parquet with ``iter_batches``). ``.npy`` files
are read with ``readinto`` rather than ``np.load(mmap_mode="r")``: pages of a memory map that were touched
stay in the process's resident set, so RSS would grow with N, while read pages only live in the kernel's page
cache.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

__all__ = ["Chunk", "Source", "iter_chunks", "open_source"]

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Source:
    """A data set as a stream of row blocks.

    Attributes:
        blocks: ``blocks(block_rows)`` -> iterator of arrays ``[m, *input_shape]`` (any real dtype, any ``m``;
            ``block_rows`` is a hint). Calling it again restarts the stream, except for one-shot iterables.
        n_rows: number of rows when known up front (arrays, ``.npy``, ``.npz``, Parquet), else ``None``.
        feature_names: column names from a CSV / Parquet header or a DataFrame, when the columns map
            one-to-one onto the features of a 1-D input; else ``None``.
        description: what was opened, for messages.
    """

    blocks: Callable[[int], Iterator[np.ndarray]]
    n_rows: int | None
    feature_names: tuple[str, ...] | None
    description: str


@dataclasses.dataclass(frozen=True)
class Chunk:
    """``batch_size`` rows ready for a kernel.

    Attributes:
        xs: ``[batch_size, *input_shape]`` float32; padding and skipped rows hold finite filler values.
        mask: ``[batch_size]`` bool, True for real rows.
        row_index: ``[batch_size]`` uint32 global row numbers (``start + arange(batch_size)``, wrapping at
            2**32), for per-row keys ``fold_in(key, row_index)``.
        start: global index of the first row.
        n_valid: number of True entries of ``mask``.
        n_skipped: rows of this chunk dropped by ``nan_policy="skip"``.
    """

    xs: np.ndarray
    mask: np.ndarray
    row_index: np.ndarray
    start: int
    n_valid: int
    n_skipped: int


# ------------------------------------------------------------------------------------------ opening
def open_source(
    data,
    *,
    input_shape: Sequence[int],
    feature_names: Sequence[str] | None = None,
) -> Source:
    """Open ``data`` as a :class:`Source` of rows of ``input_shape``.

    Args:
        data: a numpy / JAX array (or nested list) ``[n_samples, *input_shape]``; a pandas DataFrame; a path
            to a ``.npy`` file (read block by block), a ``.npz`` archive (its first array, or
            ``"file.npz:name"`` for a named one), a ``.csv`` file (header optional) or a ``.parquet`` file
            (read by record batches); or any iterable of batches ``[m, *input_shape]`` (a tuple batch ``(x, y,
            ...)`` contributes its first element, as from a PyTorch ``DataLoader`` or ``tf.data``).
        input_shape: the model's per-sample input shape.
        feature_names: the model's feature names; a CSV / Parquet / DataFrame whose header contains all of
            them (and possibly other columns, such as a target) is read in that column order.

    Returns:
        The :class:`Source`. Shapes are checked here when known, otherwise block by block in
        :func:`iter_chunks`.

    Raises:
        ValueError: on a shape or column mismatch (expected vs got).
        FileNotFoundError: for a missing path.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if isinstance(data, str | os.PathLike):
        return _open_path(os.fspath(data), input_shape, feature_names)
    if _is_dataframe(data):
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        frame = data.set_axis([str(c) for c in data.columns], axis=1)
        return _table_source(
            lambda rows, usecols: _frame_blocks(frame, rows, usecols),
            list(frame.columns),
            input_shape,
            feature_names,
            "DataFrame",
            n_rows=len(frame),
            numeric=[is_numeric_dtype(d) or is_bool_dtype(d) for d in frame.dtypes],
        )
    if hasattr(data, "__array__") or isinstance(data, list | tuple):
        arr = data if isinstance(data, np.ndarray) else _try_array(data)
        nested = isinstance(data, list | tuple) and arr is not None and arr.shape[2:] == input_shape
        if arr is not None and not nested:
            check_rows_shape(arr.shape, input_shape, "data")
            return Source(
                lambda rows: _array_blocks(arr, rows), int(arr.shape[0]), None, f"array {arr.shape}"
            )
    if isinstance(data, Iterable) and not isinstance(data, bytes | dict):
        return Source(_iterable_blocks(data, input_shape), None, None, type(data).__name__)
    raise TypeError(
        "data must be an array, a .npy/.npz/.csv/.parquet path or an iterable of batches, "
        f"got {type(data).__name__}"
    )


def check_rows_shape(shape, input_shape: Shape, what: str) -> None:
    """Raise ``ValueError`` (expected vs got) unless ``shape == (n, *input_shape)``."""
    shape = tuple(int(d) for d in shape)
    if shape[1:] == input_shape:
        return
    expected = f"[n_samples, {', '.join(map(str, input_shape))}]"
    hint = ""
    if shape == input_shape:
        hint = "; this looks like a single sample: add a batch axis (x[None])"
    elif len(shape) >= 1 and math.prod(shape[1:]) == math.prod(input_shape):
        hint = f"; reshape it with .reshape(-1, {', '.join(map(str, input_shape))})"
    raise ValueError(f"{what} has shape {list(shape)}; the model expects {expected}{hint}")


def _try_array(data) -> np.ndarray | None:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        return None
    if arr.dtype == object:
        return None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"data has dtype {arr.dtype}; expected real numbers")
    return arr


def _array_blocks(arr, rows: int) -> Iterator[np.ndarray]:
    for start in range(0, arr.shape[0], rows):
        yield arr[start : start + rows]


def _iterable_blocks(data, input_shape: Shape) -> Callable[[int], Iterator[np.ndarray]]:
    def blocks(rows: int) -> Iterator[np.ndarray]:
        for i, batch in enumerate(data):
            if isinstance(batch, tuple):
                if not batch:
                    raise ValueError(f"batch {i} of data is an empty tuple")
                batch = batch[0]
            arr = _try_array(batch)
            if arr is None:
                raise TypeError(f"batch {i} of data is a {type(batch).__name__}; expected an array [m, ...]")
            check_rows_shape(arr.shape, input_shape, f"batch {i} of data")
            yield arr

    return blocks


# -------------------------------------------------------------------------------------------- files
def _open_path(path: str, input_shape: Shape, feature_names) -> Source:
    npz_key = None
    if not os.path.exists(path) and ".npz:" in path:
        path, npz_key = path.rsplit(":", 1)
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    lower = path.lower()
    if lower.endswith(".npy"):
        return _npy_source(path, input_shape)
    if lower.endswith(".npz"):
        return _npz_source(path, npz_key, input_shape)
    if lower.endswith((".csv", ".csv.gz", ".txt", ".tsv")):
        return _csv_source(path, input_shape, feature_names)
    if lower.endswith((".parquet", ".pq")):
        return _parquet_source(path, input_shape, feature_names)
    raise ValueError(f"data path {path!r} has an unknown extension; use .npy, .npz, .csv or .parquet")


def _read_npy_header(fp, what: str):
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:  # (3, 0): utf-8 header; numpy has no public reader for it
        shape, fortran, dtype = np.lib.format._read_array_header(fp, version)
    if dtype.hasobject:
        raise ValueError(f"{what} holds Python objects (dtype {dtype}); save a numeric array")
    return tuple(shape), fortran, dtype


def _stream_rows(fp, shape, dtype, rows: int) -> Iterator[np.ndarray]:
    """Read ``rows`` rows at a time from a file positioned at the start of C-ordered array data."""
    for start in range(0, shape[0], rows):
        m = min(rows, shape[0] - start)
        buf = np.empty((m, *shape[1:]), dtype)
        view = memoryview(buf.reshape(-1).view(np.uint8))
        got = 0
        while got < view.nbytes:
            n = fp.readinto(view[got:])
            if not n:
                raise ValueError(
                    f"file is truncated: expected {shape[0]} rows, the data ends near row {start}"
                )
            got += n
        yield buf


def _npy_source(path: str, input_shape: Shape) -> Source:
    with open(path, "rb") as fp:
        shape, fortran, dtype = _read_npy_header(fp, path)
    check_rows_shape(shape, input_shape, f"data file {path!r}")

    def blocks(rows: int) -> Iterator[np.ndarray]:
        if fortran or len(shape) == 0:
            yield from _array_blocks(np.load(path, mmap_mode="r"), rows)
            return
        with open(path, "rb") as fp:
            _read_npy_header(fp, path)
            yield from _stream_rows(fp, shape, dtype, rows)

    return Source(blocks, int(shape[0]), None, path)


def _npz_source(path: str, key: str | None, input_shape: Shape) -> Source:
    with zipfile.ZipFile(path) as zf:
        members = [n for n in zf.namelist() if n.endswith(".npy")]
        names = [n[: -len(".npy")] for n in members]
        if not members:
            raise ValueError(f"{path!r} holds no arrays")
        if key is None:
            member = members[0]
        elif key in names:
            member = members[names.index(key)]
        else:
            raise KeyError(f"{path!r} has no array {key!r}; it holds {names}")
        with zf.open(member) as fp:
            shape, fortran, dtype = _read_npy_header(fp, f"{path}:{member}")
    what = f"array {member[:-4]!r} of {path!r}"
    check_rows_shape(shape, input_shape, what)

    def blocks(rows: int) -> Iterator[np.ndarray]:
        if fortran:
            with np.load(path) as z:
                yield from _array_blocks(z[member[:-4]], rows)
            return
        with zipfile.ZipFile(path) as zf, zf.open(member) as fp:
            _read_npy_header(fp, what)
            yield from _stream_rows(fp, shape, dtype, rows)

    return Source(blocks, int(shape[0]), None, what)


def _csv_has_header(path: str, delimiter: str) -> bool:
    import gzip

    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        first = next(csv.reader(f, delimiter=delimiter), [])
    for field in first:
        try:
            float(field)
        except ValueError:
            return True
    return False


def _csv_source(path: str, input_shape: Shape, feature_names) -> Source:
    try:
        import pandas as pd
        from pandas.api.types import is_bool_dtype, is_numeric_dtype
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading CSV files needs pandas: pip install 'jaxsens[data]'") from e
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    header = _csv_has_header(path, delimiter)
    if header:
        columns = list(pd.read_csv(path, nrows=0, sep=delimiter).columns.astype(str))
    else:
        ncol = len(pd.read_csv(path, nrows=1, header=None, sep=delimiter).columns)
        columns = [str(i) for i in range(ncol)]

    def reader(rows: int, usecols: list[str] | None) -> Iterator[np.ndarray]:
        with pd.read_csv(
            path, sep=delimiter, header=0 if header else None, usecols=usecols, chunksize=rows, engine="c"
        ) as it:
            for frame in it:
                if usecols is not None:
                    frame = frame[usecols]
                bad = [
                    str(c) for c, d in frame.dtypes.items() if not (is_numeric_dtype(d) or is_bool_dtype(d))
                ]
                if bad:
                    raise ValueError(
                        f"{path}: column(s) {bad} are not numeric; drop them or encode them as numbers"
                    )
                yield frame.to_numpy(np.float64)

    return _table_source(reader, columns, input_shape, feature_names, path, n_rows=None, has_header=header)


def _parquet_source(path: str, input_shape: Shape, feature_names) -> Source:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover
        raise ImportError("reading Parquet files needs pyarrow: pip install 'jaxsens[data]'") from e
    pf = pq.ParquetFile(path)
    columns = list(pf.schema_arrow.names)

    def reader(rows: int, usecols: list[str] | None) -> Iterator[np.ndarray]:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=usecols):
            cols = [np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.float64) for c in batch.columns]
            yield np.stack(cols, axis=1) if cols else np.zeros((batch.num_rows, 0))

    numeric = [
        pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)
        for t in pf.schema_arrow.types
    ]
    return _table_source(
        reader, columns, input_shape, feature_names, path, n_rows=int(pf.metadata.num_rows), numeric=numeric
    )


def _is_dataframe(data) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns") and hasattr(data, "iloc")


def _frame_blocks(frame, rows: int, usecols: list[str] | None) -> Iterator[np.ndarray]:
    sub = frame if usecols is None else frame[usecols]
    for start in range(0, len(sub), rows):
        yield sub.iloc[start : start + rows].to_numpy(np.float64)


def _table_source(
    read: Callable[[int, list[str] | None], Iterator[np.ndarray]],
    columns: list[str],
    input_shape: Shape,
    feature_names,
    what: str,
    *,
    n_rows: int | None,
    has_header: bool = True,
    numeric: list[bool] | None = None,
) -> Source:
    """A table (CSV, Parquet, DataFrame) read as ``read(rows, usecols) -> [m, n_columns]`` float blocks.

    If the header holds every one of the model's feature names (1-D inputs), those columns are read in the
    model's order and the others (a target, an id) are ignored; otherwise every column is used, in order
    (row-major over ``input_shape``: a ``[T, F]`` input reads columns ``x[0, 0], x[0, 1], ..., x[T-1, F-1]``).
    """
    n_in = math.prod(input_shape)
    use = columns if has_header else None
    by_name = False
    if has_header and feature_names is not None and len(input_shape) == 1:
        wanted = [str(n) for n in feature_names]
        if len(wanted) == n_in and set(wanted) <= set(columns):
            use, by_name = wanted, True
    if not by_name and len(columns) != n_in:
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        raise ValueError(
            f"{what} has {len(columns)} columns ({shown}); the model expects {n_in} values per row "
            f"(input shape {list(input_shape)}). Drop the other columns, or name the columns after the "
            f"model's features ({', '.join(list(feature_names or [])[:12])}) so that they are selected by name"
        )
    if numeric is not None:
        chosen = set(use if use is not None else columns)
        bad = [c for c, ok in zip(columns, numeric) if not ok and c in chosen]
        if bad:
            raise ValueError(f"{what}: column(s) {bad} are not numeric; drop them or encode them as numbers")
    names = tuple(use) if has_header and len(input_shape) == 1 else None

    def blocks(rows: int) -> Iterator[np.ndarray]:
        for b in read(rows, use):
            yield b.reshape(-1, *input_shape)

    return Source(blocks, n_rows, names, what)


# ------------------------------------------------------------------------------------------- chunks
def iter_chunks(
    source: Source,
    *,
    batch_size: int,
    input_shape: Sequence[int],
    nan_policy: str = "raise",
    dtype=np.float32,
) -> Iterator[Chunk]:
    """Re-batch ``source`` into chunks of exactly ``batch_size`` rows (the last one padded and masked).

    Args:
        source: from :func:`open_source`.
        batch_size: rows per chunk.
        input_shape: per-sample shape; each block is checked against it.
        nan_policy: ``"raise"`` (a row with NaN or Inf raises ``ValueError`` naming its global index) or
            ``"skip"`` (such rows are masked out and counted in ``Chunk.n_skipped``).
        dtype: the chunk dtype.

    Yields:
        :class:`Chunk` s in row order; a source with no rows yields nothing.
    """
    if nan_policy not in ("raise", "skip"):
        raise ValueError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
    input_shape = tuple(int(d) for d in input_shape)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    out, have, start = None, 0, 0
    for block in source.blocks(batch_size):
        block = np.asarray(block)
        check_rows_shape(block.shape, input_shape, f"data from {source.description}")
        pos = 0
        while pos < block.shape[0]:
            if out is None:
                out = np.empty((batch_size, *input_shape), dtype)
            take = min(batch_size - have, block.shape[0] - pos)
            out[have : have + take] = block[pos : pos + take]
            have += take
            pos += take
            if have == batch_size:
                yield _finish(out, have, start, nan_policy)
                start += have
                out, have = None, 0
    if have:
        yield _finish(out, have, start, nan_policy)


def _finish(out: np.ndarray, have: int, start: int, nan_policy: str) -> Chunk:
    batch_size = out.shape[0]
    mask = np.zeros(batch_size, bool)
    mask[:have] = True
    finite = np.isfinite(out[:have].reshape(have, -1)).all(axis=1)
    n_skipped = 0
    if not finite.all():
        bad = np.flatnonzero(~finite)
        if nan_policy == "raise":
            rows = ", ".join(str(start + int(b)) for b in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise ValueError(
                f"data row {start + int(bad[0])} holds NaN or Inf (rows {rows}); clean the data or pass "
                "nan_policy='skip' to drop such rows (they are counted in the result's n_skipped)"
            )
        out[bad] = 0
        mask[bad] = False
        n_skipped = len(bad)
    if have < batch_size:  # pad with the last real row: finite and inside the model's usual domain
        out[have:] = out[have - 1]
    row_index = (np.arange(start, start + batch_size, dtype=np.int64) % (1 << 32)).astype(np.uint32)
    return Chunk(out, mask, row_index, start, have - n_skipped, n_skipped)
