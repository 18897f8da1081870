"""Data sources -> fixed-size padded chunks with masks and global row indices.

:func:`open_source` turns whatever the user passes (an array, a file path, a :class:`DataSpec` from
:func:`open_data`, an iterable of batches) into a :class:`Source`: a re-startable stream of row blocks plus what
is known up front (row count, column names). :func:`iter_chunks` re-batches any source into :class:`Chunk` s of
exactly ``batch_size`` rows: the last ragged chunk is padded (so one compiled kernel serves every chunk) and
carries a ``mask``; rows holding NaN or Inf raise an error naming the row, or are masked out and counted with
``nan_policy="skip"``. :func:`open_targets` streams targets the same way (every kind of source, a column of the
data by name; class labels keep an integer ``Source.dtype``) and :func:`open_xy` opens data and targets
together, row-aligned, dropping a target column from the features; ``iter_chunks((x, y), ...)`` then chunks
both. :func:`read_targets` reads a target file whole, for the methods that hold everything in memory.

What is refused, always with a :class:`~jaxsens.DataError` naming the source, the row / column and the problem
(a wrong number printed silently is the worst outcome):

* values that are not real numbers: complex (the imaginary part would be lost), datetime / timedelta, strings
  (also strings holding numbers, such as ``"1.5"`` in a string array), Python objects. Bool and integers are
  read as numbers.
* values that are finite in their own dtype but outside the float32 range (``|x| > 3.4028235e38``) in which
  models compute: they would become ``inf``.
* empty sources (a 0-byte file, an ``.npz`` without arrays, a CSV with a header only, zero rows), folders,
  unreadable files (permission denied) and files that are not what their extension says.

Nothing here grows with the number of rows: files are read block by block (``.npy`` / ``.npz`` with plain
reads after parsing the header, CSV with pandas ``chunksize``, Parquet with ``iter_batches``). ``.npy`` files
are read with ``readinto`` rather than ``np.load(mmap_mode="r")``: pages of a memory map that were touched
stay in the process's resident set, so RSS would grow with N, while read pages only live in the kernel's page
cache.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import os
import stat
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from converters.errors import (
    ArgumentError,
    ArgumentTypeError,
    DataError,
    DataFileNotFoundError,
    MissingExtraError,
)

__all__ = [
    "FLOAT32_MAX",
    "Chunk",
    "DataSpec",
    "Source",
    "as_chunk_dtype",
    "check_aligned",
    "check_float32_input",
    "chunk_dtype",
    "csv_row_count",
    "glob_files",
    "header_names",
    "iter_chunks",
    "open_data",
    "open_source",
    "open_sources",
    "open_targets",
    "open_xy",
    "parse_feature_names",
    "read_rows",
    "read_targets",
    "rows_of",
]

Shape = tuple[int, ...]

FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4028235e38

_CSV_EXTENSIONS = (".csv", ".csv.gz", ".txt", ".tsv")
_PARQUET_EXTENSIONS = (".parquet", ".pq")
_EXTENSIONS = "use .npy, .npz, .csv (.csv.gz, .tsv, .txt) or .parquet"
# pandas' default missing-value markers: a first line of numbers with some of these is still a data line
_NA_MARKERS = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
     "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Source:
    """A data set as a stream of row blocks.

    Attributes:
        blocks: ``blocks(block_rows)`` -> iterator of arrays ``[m, *input_shape]`` (real dtype, any ``m``;
            ``block_rows`` is a hint). Calling it again restarts the stream, except for one-shot iterables.
            Blocks from :func:`open_source` have been checked: real-number dtype, shape, float32 range.
        n_rows: number of rows when known up front (arrays, DataFrames, ``.npy``, ``.npz``, Parquet from its
            metadata, CSV from a count of its non-blank lines), else ``None`` (iterables, ``.csv.gz``, a CSV
            whose quoted fields may span lines). A stream that ends at another count raises DataError.
        feature_names: column names from a CSV / Parquet header or a DataFrame, when the columns map
            one-to-one onto the features of a 1-D input and are not just pandas' default labels ``0..n-1``;
            else the names given to :func:`open_source` (``feature_names=``), else ``None``. For targets:
            the column names read.
        description: what was opened, for messages.
        dtype: the dtype of the values as stored (``int64`` class labels, ``float64`` table columns, a
            ``.npy`` file's dtype), known before reading; ``None`` when unknown (iterables of data). For
            targets from :func:`open_targets` it is always set: integer / bool means class labels, a float
            dtype continuous values; ``chunk_dtype(source.dtype)`` is the chunk dtype to ask
            :func:`iter_chunks` for (int32 / bool / float32).
        row_shape: the per-row shape of the blocks (``input_shape`` for data; for targets ``()`` for one
            value per row, ``(k,)`` for ``k`` columns); ``None`` when not known up front.
        first_row: the global row number of the first row (``> 0`` for one process's share of a data set,
            :mod:`jaxsens.distributed`); chunks number their rows from it.
        rows_between: ``rows_between(lo, hi, block_rows)`` -> blocks of rows ``[lo, hi)`` only, read without
            the rows before ``lo`` (a ``.npy`` seek, Parquet row groups, an array slice); ``None`` when the
            format must be read from its start.
        files: ``((n_rows, n_bytes), ...)`` of each file, for data read from several files (a list or a glob).
    """

    blocks: Callable[[int], Iterator[np.ndarray]]
    n_rows: int | None
    feature_names: tuple[str, ...] | None
    description: str
    dtype: np.dtype | None = None
    row_shape: tuple[int, ...] | None = None
    first_row: int = 0
    rows_between: Callable[[int, int, int], Iterator[np.ndarray]] | None = None
    files: tuple[tuple[int, int | None], ...] = ()


@dataclasses.dataclass(frozen=True)
class Chunk:
    """``batch_size`` rows ready for a kernel.

    Attributes:
        xs: ``[batch_size, *input_shape]`` float32 (int32 / bool for integer / bool inputs); a tuple of such
            arrays, one per input, for several inputs. Padding and skipped rows hold finite filler values.
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


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A data file plus how to read it; made by :func:`open_data`, accepted wherever data is accepted.

    The streaming methods open it block by block; the methods that need the whole data set in memory read it
    through ``np.asarray(spec)`` (every column of a table, or the whole array of a ``.npy`` / ``.npz``).

    Attributes:
        path: the file (``"file.npz:name"`` for a named array of an archive).
        header: for CSV files: ``None`` (detect, see :func:`open_data`), ``True`` or ``False``.
        exclude: table columns to ignore (a target, an id).
    """

    path: str
    header: bool | None = None
    exclude: tuple[str, ...] = ()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = read_rows(self)
        return arr if dtype is None else arr.astype(dtype, copy=False)


# ------------------------------------------------------------------------------------------ dtypes
def _dtype_problem(dtype) -> str | None:
    """Why values of ``dtype`` cannot be model inputs (``None`` when they can: bool, ints, floats)."""
    dtype = np.dtype(dtype) if not hasattr(dtype, "kind") else dtype
    kind = dtype.kind
    if kind in "biuf":
        return None
    if kind == "c":
        return (
            "complex numbers, whose imaginary part would be lost; pass the real and imaginary parts as "
            "separate features (np.concatenate([x.real, x.imag], axis=-1))"
        )
    if kind in "Mm":
        return (
            "dates or durations; convert them to numbers first (e.g. seconds: "
            "x.astype('datetime64[s]').astype(np.int64))"
        )
    if kind in "US":
        return "strings (even strings of digits are not read as numbers); parse them first (x.astype(np.float64))"
    if kind == "O":
        return "Python objects or text; convert them to a numeric array (ints, floats or bools) first"
    return "no real numbers (a structured / raw-bytes dtype); pass a plain numeric array"


def _check_dtype(dtype, what: str) -> None:
    problem = _dtype_problem(dtype)
    if problem is not None:
        raise DataError(f"{what} has dtype {dtype}: {problem}")


def _column_label(col: int, names: Sequence[str] | None) -> str:
    return f"column {col} ({names[col]!r})" if names is not None and col < len(names) else f"column {col}"


def _check_float32_range(block: np.ndarray, what: str, first_row: int, names=None) -> None:
    """Refuse finite values beyond the float32 range; only float dtypes wider than float32 can hold them."""
    if block.dtype.kind != "f" or block.dtype.itemsize <= 4 or block.size == 0:
        return
    flat = block.reshape(block.shape[0], -1)
    with np.errstate(invalid="ignore"):
        over = np.abs(flat) > FLOAT32_MAX
    if not over.any():
        return
    over &= np.isfinite(flat)  # +-inf are missing values (nan_policy), not out-of-range ones
    if not over.any():
        return
    row, col = (int(i) for i in np.argwhere(over)[0])
    n_bad = int(over.sum())
    more = f" ({n_bad} such values in this block)" if n_bad > 1 else ""
    raise DataError(
        f"{what} row {first_row + row}, {_column_label(col, names)}: value {float(flat[row, col]):.8g} is "
        f"outside the float32 range (|x| <= {FLOAT32_MAX:.8g}) in which models compute; it would become "
        f"inf{more}. Rescale the feature (other units, or standardise it)"
    )


def check_float32_input(xs, what: str = "xs") -> None:
    """Refuse model inputs that float32 cannot hold: non-real dtypes and finite values beyond its range.

    Cheap for the common case: the range is only scanned when the dtype is wider than float32.
    """
    dtype = getattr(xs, "dtype", None)
    if dtype is None:
        xs = np.asarray(xs)
        dtype = xs.dtype
    _check_dtype(np.dtype(dtype), what)
    if np.dtype(dtype).kind == "f" and np.dtype(dtype).itemsize > 4:
        arr = np.asarray(xs)
        _check_float32_range(arr if arr.ndim else arr.reshape(1, 1), what, 0)


# ------------------------------------------------------------------------------------------ opening
def open_data(
    path: str | os.PathLike, *, header: bool | None = None, exclude: Sequence[str] = ()
) -> DataSpec:
    """A data file with reading options, to pass wherever data is accepted (every method, ``np.asarray``).

    Args:
        path: a ``.npy``, ``.npz`` (``"file.npz:name"`` for a named array), ``.csv`` (``.csv.gz``, ``.tsv``,
            ``.txt``) or ``.parquet`` file; or a glob pattern of such files (one data set in several files).
        header: for CSV files, whether the first line names the columns. ``None`` (the default) decides by
            this rule: the first line is a header when it is **not all numbers** (a field that is empty or a
            missing-value marker such as ``NA`` / ``nan`` counts as a number), **or when it is exactly**
            ``0,1,...,n-1`` (the labels ``pd.DataFrame(X).to_csv(path, index=False)`` writes). Pass
            ``header=False`` for a file without header whose first row happens to read ``0,1,...,n-1``, and
            ``header=True`` for a header of numbers. Headers ``0..n-1`` name no features.
        exclude: columns of a CSV / Parquet table to ignore (a target, an id), by header name.

    Returns:
        A :class:`DataSpec` (the file is checked now: it exists, is a readable file, has a known extension).

    Raises:
        DataFileNotFoundError: the path does not exist.
        DataError: a folder, an unreadable file, an unknown extension.
        ArgumentError: ``header`` / ``exclude`` given for a format that has no such thing.

    Example:
        >>> import numpy as np, pandas as pd, tempfile, os, jaxsens
        >>> path = os.path.join(tempfile.mkdtemp(), "d.csv")
        >>> pd.DataFrame(np.ones((5, 3))).to_csv(path, index=False)  # header line "0,1,2"
        >>> np.asarray(jaxsens.open_data(path)).shape  # the header is not a data row
        (5, 3)
        >>> np.asarray(jaxsens.open_data(path, header=False)).shape  # ... unless you say so
        (6, 3)
    """
    if not isinstance(path, str | os.PathLike):
        raise ArgumentTypeError(
            f"open_data() takes the path of a data file, got {type(path).__name__}; pass arrays and DataFrames "
            "to the methods directly"
        )
    if header is not None and not isinstance(header, bool):
        raise ArgumentTypeError(f"header must be None (detect), True or False, got {header!r}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    exclude = tuple(str(c) for c in exclude)
    path = os.fspath(path)
    real, _ = _split_member(path, (".npz",))
    for file in glob_files(real) if _is_glob(real) else (real,):
        _check_file(file, "data file")
    lower = real.lower()
    if not lower.endswith((".npy", ".npz", *_CSV_EXTENSIONS, *_PARQUET_EXTENSIONS)):
        raise DataError(f"data file {real!r} has an unknown extension; {_EXTENSIONS}")
    if header is not None and not lower.endswith(_CSV_EXTENSIONS):
        raise ArgumentError(f"header={header} applies to CSV files only; {real!r} is not a CSV file")
    if exclude and not lower.endswith(_CSV_EXTENSIONS + _PARQUET_EXTENSIONS):
        raise ArgumentError(f"exclude= names table columns; {real!r} is not a CSV or Parquet file")
    return DataSpec(path, header, exclude)


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
            ``"file.npz:name"`` for a named one), a ``.csv`` file (header detected, see :func:`open_data`) or
            a ``.parquet`` file (read by record batches); a :class:`DataSpec` from :func:`open_data` (a path
            with reading options such as ``header=``); or any iterable of batches ``[m, *input_shape]`` (a
            tuple batch ``(x, y, ...)`` contributes its first element, as from a PyTorch ``DataLoader`` or
            ``tf.data``). Several files of one layout, read in turn as one data set: a list of paths, or a glob
            pattern (``"parts/*.parquet"``, matches sorted by name).
        input_shape: the model's per-sample input shape.
        feature_names: the names of the features (the last axis of ``input_shape``). A CSV / Parquet /
            DataFrame whose header contains all of them (and possibly other columns, such as a target) is
            read in that column order. Data without names of its own (arrays, ``.npy``, ``.npz``, iterables,
            a headerless CSV) take them as ``Source.feature_names``: there must be exactly
            ``input_shape[-1]`` of them (:func:`parse_feature_names` reads them from a command-line string
            or a text file). A header's own names win over them.

    Returns:
        The :class:`Source`. Shapes, dtypes and row counts are checked here when known, otherwise block by
        block as the source is read.

    Raises:
        DataError: a shape or column mismatch (expected vs got), values that are not real numbers or beyond
            the float32 range, an empty, unreadable or corrupt source, a folder, ``feature_names`` of the
            wrong length.
        DataFileNotFoundError: a missing path.
        ArgumentTypeError: ``data`` of a kind that holds no rows (a dict, a number); ``feature_names`` that
            is not a sequence of strings.
        MissingExtraError: CSV / Parquet without pandas / pyarrow.

    Example:
        >>> import numpy as np
        >>> src = open_source(np.zeros((10, 3)), input_shape=(3,), feature_names=["a", "b", "c"])
        >>> src.n_rows, src.feature_names, src.row_shape
        (10, ('a', 'b', 'c'), (3,))
    """
    return _open_checked(data, tuple(int(d) for d in input_shape), feature_names)


def _open_checked(data, input_shape: Shape, feature_names, exclude: tuple[str, ...] = ()) -> Source:
    names = _feature_names_arg(feature_names)
    source = _open(data, input_shape, names, exclude=exclude)
    if source.n_rows == 0:
        raise DataError(f"{source.description} has no rows; the methods need at least one sample")
    if source.feature_names is None and names is not None:
        last = input_shape[-1] if input_shape else None
        if last != len(names):
            shown = ", ".join(map(repr, names[:8])) + (", ..." if len(names) > 8 else "")
            axis = f"its last input axis has {last}" if last is not None else "the input is a scalar per row"
            raise DataError(
                f"feature_names has {len(names)} names ({shown}) but {source.description} has input shape "
                f"{list(input_shape)}: {axis}; give one name per feature of the last axis"
            )
        source = dataclasses.replace(source, feature_names=names)
    return _checked(dataclasses.replace(source, row_shape=input_shape), input_shape)


def _feature_names_arg(feature_names) -> tuple[str, ...] | None:
    if feature_names is None:
        return None
    if isinstance(feature_names, str | bytes) or not isinstance(feature_names, Iterable):
        raise ArgumentTypeError(
            f"feature_names must be a sequence of strings, got {type(feature_names).__name__} "
            f"{feature_names!r:.60}; for 'a,b,c' or a file of names use parse_feature_names()"
        )
    return tuple(str(n) for n in feature_names)


def _open(data, input_shape: Shape | None, feature_names, exclude: tuple[str, ...] = ()) -> Source:
    """``open_source`` without the final checks; ``input_shape=None`` takes whatever rows the data holds.
    ``exclude`` drops table columns (DataFrames; paths take it from a :class:`DataSpec`)."""
    if isinstance(data, DataSpec):
        return _open_path(
            data.path, input_shape, feature_names, header=data.header, exclude=tuple(data.exclude) + exclude
        )
    if isinstance(data, str | os.PathLike):
        return _open_path(os.fspath(data), input_shape, feature_names, exclude=exclude)
    if isinstance(data, list | tuple) and data and all(isinstance(p, str | os.PathLike) for p in data):
        return _files_source([os.fspath(p) for p in data], input_shape, feature_names, exclude=exclude)
    if _is_dataframe(data):
        frame = data.set_axis([str(c) for c in data.columns], axis=1)
        return _table_source(
            lambda rows, usecols: _frame_blocks(frame, rows, usecols),
            list(frame.columns),
            input_shape,
            feature_names,
            "DataFrame",
            n_rows=len(frame),
            dtypes=list(frame.dtypes),
            exclude=exclude,
        )
    if isinstance(data, np.ndarray):
        _check_dtype(data.dtype, "data")
    if hasattr(data, "__array__") or isinstance(data, list | tuple):
        arr = data if isinstance(data, np.ndarray) else _try_array(data, "data")
        nested = (
            isinstance(data, list | tuple)
            and arr is not None
            and arr.ndim >= 2
            and arr.shape[2:] == input_shape
        )
        if arr is not None and not nested:
            if arr.ndim == 0:
                raise DataError(f"data is a single number ({arr.item()!r}); pass rows [n_samples, ...]")
            if input_shape is not None:
                check_rows_shape(arr.shape, input_shape, "data")
            return Source(
                lambda rows: _array_blocks(arr, rows),
                int(arr.shape[0]),
                None,
                f"array {arr.shape}",
                arr.dtype,
                rows_between=lambda lo, hi, rows: _array_blocks(arr[lo:hi], rows),
            )
    if isinstance(data, Iterable) and not isinstance(data, bytes | dict | str):
        return Source(_iterable_blocks(data, input_shape), None, None, type(data).__name__)
    raise ArgumentTypeError(
        "data must be an array, a DataFrame, a .npy/.npz/.csv/.parquet path (or jaxsens.open_data(path, ...)) "
        f"or an iterable of batches, got {type(data).__name__}"
    )


def _checked(source: Source, input_shape: Shape | None) -> Source:
    """The source with every block checked: real dtype, shape, float32 range (global row numbers); also the
    blocks of ``rows_between``."""

    def checked(blocks: Iterator[np.ndarray], first: int, n_rows: int | None) -> Iterator[np.ndarray]:
        seen = 0
        for block in blocks:
            block = np.asarray(block)
            _check_dtype(block.dtype, f"data ({source.description})")
            if input_shape is not None:
                check_rows_shape(block.shape, input_shape, f"data ({source.description})")
            _check_float32_range(block, f"data ({source.description})", first + seen, source.feature_names)
            seen += block.shape[0]
            yield block
        _check_row_count(source, seen, n_rows)

    between = source.rows_between
    return dataclasses.replace(
        source,
        blocks=lambda rows: checked(source.blocks(rows), 0, source.n_rows),
        rows_between=None if between is None else lambda lo, hi, rows: checked(between(lo, hi, rows), lo, hi - lo),
    )


def _check_row_count(source: Source, seen: int, n_rows: int | None = -1) -> None:
    """A stream that ended at another row count than its ``n_rows`` (a CSV line count, a file changed while
    being read) would misalign data and targets: refuse it."""
    n_rows = source.n_rows if n_rows == -1 else n_rows
    if n_rows is not None and seen != n_rows:
        raise DataError(
            f"{source.description} yielded {seen} rows but {n_rows} were counted when it was opened "
            "(did the file change while it was read?); nothing was computed from it"
        )


def read_rows(data, *, input_shape: Sequence[int] | None = None, feature_names=None) -> np.ndarray:
    """Every row of ``data`` (anything :func:`open_source` accepts) in memory, checked like a stream.

    Args:
        data: the data.
        input_shape: the per-sample shape to check; ``None`` takes the shape the data has (a table gives
            ``[n_rows, n_columns]``).
        feature_names: as for :func:`open_source`.

    Returns:
        ``[n_samples, *input_shape]`` (the file's dtype for ``.npy`` / ``.npz``, float64 for tables).
    """
    shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    return _read_source(_open(data, shape, feature_names), shape)


def _read_source(source: Source, shape: Shape | None) -> np.ndarray:
    if source.n_rows == 0:
        raise DataError(f"{source.description} has no rows")
    blocks = list(_checked(source, shape).blocks(65536))
    if not blocks or sum(b.shape[0] for b in blocks) == 0:
        raise DataError(f"{source.description} has no rows")
    return np.concatenate(blocks, axis=0)


def check_rows_shape(shape, input_shape: Shape, what: str) -> None:
    """Raise :class:`DataError` (expected vs got) unless ``shape == (n, *input_shape)``."""
    shape = tuple(int(d) for d in shape)
    if shape[1:] == input_shape:
        return
    expected = f"[n_samples, {', '.join(map(str, input_shape))}]"
    hint = ""
    if shape == input_shape:
        hint = "; this looks like a single sample: add a batch axis (x[None])"
    elif len(shape) >= 1 and math.prod(shape[1:]) == math.prod(input_shape):
        hint = f"; reshape it with .reshape(-1, {', '.join(map(str, input_shape))})"
    raise DataError(f"{what} has shape {list(shape)}; the model expects {expected}{hint}")


def _try_array(data, what: str) -> np.ndarray | None:
    """``data`` as an array; ``None`` for ragged / object containers (read as an iterable of batches)."""
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        return None
    if arr.dtype == object:
        return None
    _check_dtype(arr.dtype, what)
    return arr


def _array_blocks(arr, rows: int) -> Iterator[np.ndarray]:
    for start in range(0, arr.shape[0], rows):
        yield arr[start : start + rows]


def _batch_array(batch, what: str) -> np.ndarray:
    """One batch of an iterable (data or targets) as a numeric array ``[m, ...]``, or a DataError naming it."""
    if isinstance(batch, np.ndarray):
        _check_dtype(batch.dtype, what)
    arr = _try_array(batch, what)
    if arr is None or arr.ndim == 0:
        raise DataError(f"{what} is a {type(batch).__name__}; expected a numeric array [m, ...]")
    return arr


def _iterable_blocks(data, input_shape: Shape | None) -> Callable[[int], Iterator[np.ndarray]]:
    def blocks(rows: int) -> Iterator[np.ndarray]:
        del rows
        for i, batch in enumerate(data):
            if isinstance(batch, tuple):
                if not batch:
                    raise DataError(f"batch {i} of data is an empty tuple")
                batch = batch[0]
            arr = _batch_array(batch, f"batch {i} of data")
            if input_shape is not None:
                check_rows_shape(arr.shape, input_shape, f"batch {i} of data")
            yield arr

    return blocks


# -------------------------------------------------------------------------------------------- files
def _split_member(path: str, extensions: tuple[str, ...]) -> tuple[str, str | None]:
    """``"file.npz:name"`` -> ``("file.npz", "name")`` when ``path`` itself does not exist."""
    if os.path.exists(path):
        return path, None
    for ext in extensions:
        marker = ext + ":"
        i = path.lower().rfind(marker)
        if i >= 0:
            return path[: i + len(ext)], path[i + len(marker) :]
    return path, None


def _check_file(path: str, what: str) -> None:
    """Refuse a path that is missing, a folder, not a regular file, or unreadable, naming it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataFileNotFoundError(f"{what} {path!r} does not exist") from None
    except PermissionError:
        raise DataError(
            f"{what} {path!r}: permission denied (a folder on the path cannot be searched); check its permissions"
        ) from None
    except OSError as e:
        raise DataError(f"{what} {path!r} cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{what} {path!r} is a folder, not a file; pass a .npy, .npz, .csv or .parquet file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(
            f"{what} {path!r} is not a regular file (a pipe, socket or device); save the data to a file"
        )
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise DataError(
            f"{what} {path!r}: permission denied; make it readable (chmod u+r) or copy it somewhere readable"
        ) from None
    except OSError as e:
        raise DataError(f"{what} {path!r} cannot be read: {e.strerror or e}") from None


def _empty_file(path: str) -> bool:
    return os.path.getsize(path) == 0


def _open_path(
    path: str,
    input_shape: Shape | None,
    feature_names,
    *,
    header: bool | None = None,
    exclude: tuple[str, ...] = (),
    role: str = "data file",
) -> Source:
    if _is_glob(path):
        return _files_source(glob_files(path, role), input_shape, feature_names, header=header, exclude=exclude,
                             role=role, what=path)  # fmt: skip
    path, npz_key = _split_member(path, (".npz",))
    _check_file(path, role)
    lower = path.lower()
    if lower.endswith(".npy"):
        return _npy_source(path, input_shape, role)
    if lower.endswith(".npz"):
        return _npz_source(path, npz_key, input_shape, role)
    if lower.endswith(_CSV_EXTENSIONS):
        return _csv_source(path, input_shape, feature_names, header=header, exclude=exclude, role=role)
    if lower.endswith(_PARQUET_EXTENSIONS):
        return _parquet_source(path, input_shape, feature_names, exclude=exclude, role=role)
    raise DataError(f"{role} {path!r} has an unknown extension; {_EXTENSIONS}")


def _is_glob(path: str) -> bool:
    """A pattern such as ``"parts/*.npy"``, not an existing file whose name holds ``*``, ``?`` or ``[``."""
    return any(c in path for c in "*?[") and not os.path.exists(path)


def glob_files(pattern: str, role: str = "data file") -> list[str]:
    """The files matching ``pattern``, sorted by name (every process of a distributed run sees one order)."""
    import glob

    paths = sorted(p for p in glob.glob(pattern, recursive=True) if not os.path.isdir(p))
    if not paths:
        raise DataFileNotFoundError(f"{role} pattern {pattern!r} matches no file")
    return paths


def _files_source(
    paths: list[str], input_shape: Shape | None, feature_names, *, header: bool | None = None,
    exclude: tuple[str, ...] = (), role: str = "data file", what: str | None = None,
) -> Source:  # fmt: skip
    """One data set read from several files in turn (a list of paths, or the sorted matches of a glob): each
    file as :func:`open_source` opens it, all with the same columns and per-row shape; rows are numbered
    across the files, in the order given."""
    parts = [_open_path(p, input_shape, feature_names, header=header, exclude=exclude, role=role) for p in paths]
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:]):
        if part.row_shape != first.row_shape or part.feature_names != first.feature_names:
            got = part.feature_names or list(part.row_shape or ())
            raise DataError(
                f"{role} {path!r} does not match {paths[0]!r}: columns / row shape {got} vs "
                f"{first.feature_names or list(first.row_shape or ())}; the files of one data set need the same "
                "layout"
            )
    counts = [part.n_rows for part in parts]
    n_rows = None if None in counts else sum(counts)
    dtypes = {part.dtype for part in parts}

    def blocks(rows: int) -> Iterator[np.ndarray]:
        for part in parts:
            yield from part.blocks(rows)

    def between(lo: int, hi: int, rows: int) -> Iterator[np.ndarray]:
        start = 0
        for part, n in zip(parts, counts):
            a, b = max(lo - start, 0), min(hi - start, n)
            if a < b and (a, b) == (0, n):
                yield from part.blocks(rows)
            elif a < b and part.rows_between is not None:
                yield from part.rows_between(a, b, rows)
            elif a < b:
                yield from rows_of(part.blocks(rows), a, b)
            start += n

    described = what or f"{len(paths)} files ({paths[0]}, ..., {paths[-1]})"
    return Source(
        blocks, n_rows, first.feature_names, described, dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float64),
        first.row_shape, rows_between=None if n_rows is None else between,
        files=tuple((n, os.path.getsize(_split_member(p, (".npz",))[0])) for n, p in zip(counts, paths)),
    )  # fmt: skip


def rows_of(blocks: Iterator[np.ndarray], lo: int, hi: int) -> Iterator[np.ndarray]:
    """Rows ``[lo, hi)`` of a stream of blocks, reading (and dropping) the rows before ``lo`` and nothing after
    ``hi``."""
    pos = 0
    for block in blocks:
        take = block[max(lo - pos, 0) : max(hi - pos, 0)]
        pos += block.shape[0]
        if take.shape[0]:
            yield take
        if pos >= hi:
            return


def _read_npy_header(fp, what: str):
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``fp``; DataError when it is not one."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:  # (3, 0): utf-8 header; numpy has no public reader for it
            shape, fortran, dtype = np.lib.format._read_array_header(fp, version)
    except (ValueError, EOFError, SyntaxError, TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{what} is not a valid .npy array (truncated or corrupt header: {e})") from None
    if dtype.hasobject:
        raise DataError(
            f"{what} holds Python objects (dtype {dtype}); save a numeric array (jaxsens never unpickles data)"
        )
    _check_dtype(dtype, what)
    return tuple(shape), fortran, dtype


def _stream_rows(fp, shape, dtype, rows: int, what: str) -> Iterator[np.ndarray]:
    """Read ``rows`` rows at a time from a file positioned at the start of C-ordered array data."""
    for start in range(0, shape[0], rows):
        m = min(rows, shape[0] - start)
        buf = np.empty((m, *shape[1:]), dtype)
        view = memoryview(buf.reshape(-1).view(np.uint8))
        got = 0
        while got < view.nbytes:
            n = fp.readinto(view[got:])
            if not n:
                raise DataError(
                    f"{what} is truncated: its header promises {shape[0]} rows, the data ends near row "
                    f"{start + got // max(view.nbytes // m, 1)}"
                )
            got += n
        yield buf


def _npy_source(path: str, input_shape: Shape | None, role: str = "data file") -> Source:
    what = f"{role} {path!r}"
    if _empty_file(path):
        raise DataError(f"{what} is empty (0 bytes)")
    with open(path, "rb") as fp:
        shape, fortran, dtype = _read_npy_header(fp, what)
    if not shape:
        raise DataError(f"{what} holds a single number (shape ()); save rows [n_samples, ...]")
    if input_shape is not None:
        check_rows_shape(shape, input_shape, what)

    def blocks(rows: int, lo: int = 0, hi: int = int(shape[0])) -> Iterator[np.ndarray]:
        if fortran:
            yield from _array_blocks(np.load(path, mmap_mode="r", allow_pickle=False)[lo:hi], rows)
            return
        with open(path, "rb") as fp:
            _read_npy_header(fp, what)
            fp.seek(lo * dtype.itemsize * math.prod(shape[1:]), os.SEEK_CUR)  # rows [lo, hi) only
            yield from _stream_rows(fp, (hi - lo, *shape[1:]), dtype, rows, what)

    return Source(
        blocks, int(shape[0]), None, path, dtype, tuple(shape[1:]),
        rows_between=lambda lo, hi, rows: blocks(rows, lo, hi),
    )  # fmt: skip


def _npz_source(path: str, key: str | None, input_shape: Shape | None, role: str = "data file") -> Source:
    if _empty_file(path):
        raise DataError(f"{role} {path!r} is empty (0 bytes)")
    member, shape, fortran, dtype = _npz_member(path, key, role)
    what = f"array {member[:-4]!r} of {path!r}"
    if not shape:
        raise DataError(f"{what} holds a single number (shape ()); save rows [n_samples, ...]")
    if input_shape is not None:
        check_rows_shape(shape, input_shape, what)

    def blocks(rows: int) -> Iterator[np.ndarray]:
        try:
            if fortran:
                with np.load(path, allow_pickle=False) as z:
                    yield from _array_blocks(z[member[:-4]], rows)
                return
            with zipfile.ZipFile(path) as zf, zf.open(member) as fp:
                _read_npy_header(fp, what)
                yield from _stream_rows(fp, shape, dtype, rows, what)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise DataError(f"{what} cannot be read: the archive is corrupt ({e})") from None

    return Source(blocks, int(shape[0]), None, what, dtype, tuple(shape[1:]))


def _npz_member(path: str, key: str | None, role: str = "data file"):
    """``(member, shape, fortran, dtype)`` of the first (or the named) array of an ``.npz``."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith(".npy")]
            names = [n[: -len(".npy")] for n in members]
            if not members:
                raise DataError(f"{role} {path!r} is empty: the archive holds no arrays")
            if key is None:
                member = members[0]
            elif key in names:
                member = members[names.index(key)]
            else:
                raise DataError(f"{role} {path!r} has no array {key!r}; it holds {names}")
            with zf.open(member) as fp:
                shape, fortran, dtype = _read_npy_header(fp, f"array {key or names[0]!r} of {path!r}")
    except (zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{role} {path!r} is not a valid .npz archive (truncated or corrupt: {e})") from None
    return member, shape, fortran, dtype


def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return field.strip() in _NA_MARKERS


def _is_default_labels(names: Sequence[str]) -> bool:
    """``0, 1, ..., n-1``: the labels pandas writes for unnamed columns; they name no features."""
    return len(names) > 0 and all(str(n).strip() == str(i) for i, n in enumerate(names))


def _text_open(path: str):
    import gzip

    # utf-8-sig: a byte-order mark is not part of the first field (it would make "1.5" look like a name)
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


def _csv_first_rows(path: str, delimiter: str, role: str) -> tuple[list[str] | None, list[str] | None]:
    """The first two non-blank rows of a CSV file (``None`` where the file has fewer)."""
    import gzip

    try:
        with _text_open(path) as f:
            rows = (r for r in csv.reader(f, delimiter=delimiter) if any(field.strip() for field in r))
            first = next(rows, None)
            second = next(rows, None)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, csv.Error) as e:
        raise DataError(f"{role} {path!r} is not a readable text CSV file ({e})") from None
    return first, second


def _csv_layout(path: str, header: bool | None, role: str = "data file") -> tuple[bool, list[str]]:
    """``(has_header, columns)`` of a CSV file by the rule of :func:`open_data`; refuses empty files."""
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    if _empty_file(path):
        raise DataError(f"{role} {path!r} is empty (0 bytes)")
    first, second = _csv_first_rows(path, delimiter, role)
    if first is None:
        raise DataError(f"{role} {path!r} is empty (no lines with values)")
    if header is None:
        header = not all(_is_number(f) for f in first) or _is_default_labels(first)
    if header and second is None:
        raise DataError(f"{role} {path!r} has a header line ({', '.join(first[:8])}) but no data rows")
    if not header:
        return False, [str(i) for i in range(len(first))]
    pd = _require_pandas("reading CSV files")
    try:
        columns = list(pd.read_csv(path, nrows=0, sep=delimiter).columns.astype(str))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{role} {path!r} is not a readable CSV file ({e})") from None
    return True, columns


def _require_pandas(what: str):
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError(f"{what} needs pandas: pip install 'jaxsens[data]'") from e
    return pd


def _require_pyarrow(what: str):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError(f"{what} needs pyarrow: pip install 'jaxsens[data]'") from e
    return pa, pq


def _csv_source(
    path: str, input_shape: Shape | None, feature_names, *, header=None, exclude=(), role: str = "data file"
) -> Source:
    pd = _require_pandas("reading CSV files")
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    has_header, columns = _csv_layout(path, header, role)
    if exclude and not has_header:
        raise ArgumentError(f"exclude={list(exclude)} names columns, but {path!r} is read without a header")
    n_rows = csv_row_count(path, header=has_header)

    def reader(rows: int, usecols: list[str] | None) -> Iterator[np.ndarray]:
        # every column is parsed (no usecols: with it pandas silently ignores surplus fields of a malformed
        # row) and index_col=False (else a first data row longer than the header becomes an index, shifting
        # the values); pandas' ParserWarning about dropped fields is an error here
        start = 0
        try:
            with pd.read_csv(
                path,
                sep=delimiter,
                header=0 if has_header else None,
                index_col=False,
                chunksize=rows,
                engine="c",
            ) as it:
                while True:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", pd.errors.ParserWarning)
                        frame = next(it, None)
                    for w in caught:
                        if issubclass(w.category, pd.errors.ParserWarning):
                            raise DataError(
                                f"{role} {path!r} has rows with more fields than its first line, near data "
                                f"row {start}; pandas would drop the surplus fields ({w.message})"
                            )
                        warnings.warn(w.message, w.category, stacklevel=2)
                    if frame is None:
                        return
                    if usecols is not None:
                        frame = frame[usecols]
                    _check_csv_frame(frame, path, start, has_header, role)
                    start += len(frame)
                    yield frame.to_numpy(np.float64, na_value=np.nan)
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise DataError(f"{role} {path!r} cannot be parsed near data row {start}: {e}") from None

    return _table_source(
        reader,
        columns,
        input_shape,
        feature_names,
        path,
        n_rows=n_rows,
        has_header=has_header,
        exclude=exclude,
    )


_COUNT_BLOCK = 1 << 24  # bytes read at a time when counting lines


def csv_row_count(path: str | os.PathLike, *, header: bool) -> int | None:
    """The number of data rows the CSV reader will yield, from one cheap pass over the bytes; ``None`` if unknown.

    Counts the lines that hold anything but spaces and tabs (pandas skips blank and whitespace-only lines,
    ``\n``, ``\r\n`` and ``\r`` all end a line; a last line without a newline counts), minus the header line.
    Lines are found with numpy on 16 MiB blocks; a block with blank lines, bare ``\r`` or quotes falls back to
    splitting its lines. ``None`` for ``.csv.gz`` (counting would mean decompressing the file twice) and for
    files where a quoted field may span lines (a line with an odd number of ``"``). The readers check that
    the rows they yield match the count.

    Args:
        path: a ``.csv`` / ``.tsv`` / ``.txt`` file.
        header: whether the first non-blank line is a header (see :func:`open_data`).
    """
    path = os.fspath(path)
    if path.lower().endswith(".gz"):
        return None
    st = os.stat(path)
    return _csv_row_count(path, st.st_size, st.st_mtime_ns, bool(header))


@functools.lru_cache(maxsize=32)
def _csv_row_count(path: str, size: int, mtime_ns: int, header: bool) -> int | None:
    del size, mtime_ns  # cache key only: a changed file is counted again
    blank = b" " if path.lower().endswith(".tsv") else b" \t"  # pandas strips these (never the delimiter)
    count, carry = 0, b""
    with open(path, "rb") as f:
        while True:
            block = f.read(_COUNT_BLOCK)
            text = carry + block
            if not block:  # the last line, without a line end
                n = _count_lines(text + b"\n", blank) if text else 0
                break
            cut = max(text.rfind(b"\n"), text.rfind(b"\r")) + 1
            text, carry = text[:cut], text[cut:]
            n = _count_lines(text, blank) if text else 0
            if n is None:
                return None
            count += n
    if n is None:
        return None
    count += n
    return max(count - (1 if header else 0), 0)


def _count_lines(text: bytes, blank: bytes) -> int | None:
    """Non-blank lines of ``text`` (which ends with a line end); ``None`` when a quoted field may span lines."""
    a = np.frombuffer(text, np.uint8)
    ends = np.flatnonzero(a == 10)
    simple = text.find(b'"') < 0 and (
        text.find(b"\r") < 0 or np.array_equal(np.flatnonzero(a == 13) + 1, ends)
    )
    if simple and len(ends) and ends[-1] == len(a) - 1:
        starts = np.concatenate([[0], ends[:-1] + 1])
        first = a[starts]  # first byte of every line: a line end or a blank there means a possibly blank line
        if not np.isin(first, np.frombuffer(blank + b"\r\n", np.uint8)).any():
            return len(ends)
    n = 0
    for line in text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")[:-1]:
        if line.count(b'"') % 2:
            return None
        if line.strip(blank):
            n += 1
    return n


def _check_csv_frame(frame, path: str, start: int, has_header: bool, role: str) -> None:
    """Refuse CSV columns that are not numbers, naming the first bad row and value."""
    import pandas as pd

    for c, d in frame.dtypes.items():
        if d.kind in "biuf":
            continue
        col = frame[c]
        parsed = pd.to_numeric(col, errors="coerce")
        bad = (parsed.isna() & col.notna()).to_numpy()
        i = int(np.argmax(bad)) if bad.any() else 0
        name = f"column {c!r}" if has_header else f"column {c}"
        raise DataError(
            f"{role} {path!r} row {start + i}, {name}: {col.iloc[i]!r} is not a number "
            f"(the column reads as {d}); jaxsens reads real numbers only: drop the column or encode it as numbers"
        )


def _parquet_source(
    path: str, input_shape: Shape | None, feature_names, *, exclude=(), role: str = "data file"
) -> Source:
    pa, pq = _require_pyarrow("reading Parquet files")
    pf = _parquet_file(path, role)
    columns = list(pf.schema_arrow.names)
    if pf.metadata.num_rows == 0:
        raise DataError(f"{role} {path!r} has no rows (columns: {', '.join(columns[:12])})")

    def reader(rows: int, usecols: list[str] | None, groups: list[int] | None = None) -> Iterator[np.ndarray]:
        try:
            for batch in _parquet_batches(pq, path, rows, usecols, groups):
                cols = [
                    np.asarray(c.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), np.float64)
                    for c in batch.columns
                ]
                yield np.stack(cols, axis=1) if cols else np.zeros((batch.num_rows, 0))
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{role} {path!r} cannot be read: {e}") from None

    def between(lo: int, hi: int, rows: int, usecols: list[str] | None) -> Iterator[np.ndarray]:
        """Rows ``[lo, hi)``: only the row groups holding them are read."""
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        starts = np.cumsum([0, *sizes])
        groups = [g for g in range(len(sizes)) if starts[g + 1] > lo and starts[g] < hi]
        if groups:
            first = int(starts[groups[0]])
            yield from rows_of(reader(rows, usecols, groups), lo - first, hi - first)

    return _table_source(
        reader,
        columns,
        input_shape,
        feature_names,
        path,
        n_rows=int(pf.metadata.num_rows),
        dtypes=list(pf.schema_arrow.types),
        exclude=exclude,
        read_between=between,
    )


def _parquet_batches(pq, path: str, rows: int, columns, row_groups=None):
    """Record batches of ``rows`` rows. pyarrow decodes one row group of the chosen columns at a time, so memory
    is bounded by the file's row-group size (pyarrow writes at most 1 Mi rows per group), not by N;
    ``pre_buffer=False`` with a 1 MiB read buffer streams the column chunks instead of holding them whole
    (about 25% less peak memory, measured in bench/memory_data.py)."""
    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    return pf.iter_batches(batch_size=rows, columns=columns, row_groups=row_groups)


def _parquet_file(path: str, role: str = "data file"):
    pa, pq = _require_pyarrow("reading Parquet files")
    if _empty_file(path):
        raise DataError(f"{role} {path!r} is empty (0 bytes)")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{role} {path!r} is not a valid Parquet file (truncated or corrupt: {e})") from None


def _arrow_problem(t) -> str | None:
    import pyarrow as pa

    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        return None
    if pa.types.is_temporal(t):
        return _dtype_problem(np.dtype("M8[ns]"))
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        return _dtype_problem(np.dtype("U1"))
    return f"no real numbers (type {t}); convert it to a float, int or bool column"


def _is_dataframe(data) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns") and hasattr(data, "iloc")


def _frame_blocks(frame, rows: int, usecols: list[str] | None) -> Iterator[np.ndarray]:
    sub = frame if usecols is None else frame[usecols]
    for start in range(0, len(sub), rows):
        yield sub.iloc[start : start + rows].to_numpy(np.float64, na_value=np.nan)


def _table_source(
    read: Callable[[int, list[str] | None], Iterator[np.ndarray]],
    columns: list[str],
    input_shape: Shape | None,
    feature_names,
    what: str,
    *,
    n_rows: int | None,
    has_header: bool = True,
    dtypes: list | None = None,
    exclude: tuple[str, ...] = (),
    read_between: Callable | None = None,
) -> Source:
    """A table (CSV, Parquet, DataFrame) read as ``read(rows, usecols) -> [m, n_columns]`` float blocks (and
    ``read_between(lo, hi, rows, usecols)`` for rows ``[lo, hi)`` only, when the format can seek).

    If the header holds every one of the model's feature names (1-D inputs), those columns are read in the
    model's order and the others (a target, an id) are ignored; otherwise every column but the excluded ones
    is used, in order (row-major over ``input_shape``: a ``[T, F]`` input reads columns ``x[0, 0], x[0, 1],
    ..., x[T-1, F-1]``). ``input_shape=None`` reads every column.
    """
    missing = [c for c in exclude if c not in columns]
    if missing:
        raise ArgumentError(
            f"exclude= names {missing}, which are not columns of {what}; columns: {columns[:20]}"
        )
    kept = [c for c in columns if c not in exclude]
    use = kept if has_header else None  # None: every column of a headerless file
    by_name = False
    if input_shape is None:
        input_shape = (len(kept),)
    n_in = math.prod(input_shape)
    if has_header and feature_names is not None and len(input_shape) == 1:
        wanted = [str(n) for n in feature_names]
        if len(wanted) == n_in and set(wanted) <= set(kept):
            use, by_name = wanted, True
    if not by_name and len(kept) != n_in:
        shown = ", ".join(kept[:12]) + (", ..." if len(kept) > 12 else "")
        raise DataError(
            f"{what} has {len(kept)} columns ({shown}); the model expects {n_in} values per row "
            f"(input shape {list(input_shape)}). Drop the other columns, or name the columns after the "
            f"model's features ({', '.join(list(feature_names or [])[:12])}) so that they are selected by name"
        )
    if dtypes is not None:
        chosen = set(use if use is not None else columns)
        for c, d in zip(columns, dtypes):
            problem = _arrow_problem(d) if not hasattr(d, "kind") else _dtype_problem(d)
            if c in chosen and problem is not None:
                raise DataError(f"{what}: column {c!r} has dtype {d}: {problem}")
    names = None
    if has_header and len(input_shape) == 1 and (by_name or not _is_default_labels(use or columns)):
        names = tuple(use or columns)

    def blocks(rows: int) -> Iterator[np.ndarray]:
        for b in read(rows, use):
            yield b.reshape(-1, *input_shape)

    def between(lo: int, hi: int, rows: int) -> Iterator[np.ndarray]:
        for b in read_between(lo, hi, rows, use):
            yield b.reshape(-1, *input_shape)

    return Source(blocks, n_rows, names, what, np.dtype(np.float64), tuple(input_shape),
                  rows_between=None if read_between is None else between)


def header_names(path: str | os.PathLike | DataSpec, *, header: bool | None = None) -> tuple[str, ...] | None:
    """Column names of a CSV / Parquet file (from its header only), or ``None``.

    ``None`` when the file is not a table, has no header (by the rule of :func:`open_data`), or its header is
    pandas' default ``0..n-1``.
    """
    if isinstance(path, DataSpec):
        path, header = path.path, path.header if header is None else header
    path = os.fspath(path)
    lower = path.lower()
    if lower.endswith(_PARQUET_EXTENSIONS):
        _check_file(path, "data file")
        names = tuple(_parquet_file(path).schema_arrow.names)
    elif lower.endswith(_CSV_EXTENSIONS):
        _check_file(path, "data file")
        has_header, columns = _csv_layout(path, header)
        names = tuple(columns) if has_header else None
    else:
        return None
    return None if names is None or _is_default_labels(names) else names


# ------------------------------------------------------------------------------------------ targets
def read_targets(
    path: str | os.PathLike | DataSpec,
    *,
    column: str | Sequence[str] | None = None,
    header: bool | None = None,
) -> np.ndarray:
    """Targets from a file, in memory: ``[n_samples]`` (or ``[n_samples, ...]``).

    ``.npy`` / ``.npz`` arrays keep their dtype (class labels stay integers); table columns are read as float64.
    The checks are those of the data: real numbers only, no empty file; targets must also be finite.

    Args:
        path: a ``.npy`` file; an ``.npz`` archive (its first array, or ``"file.npz:name"``); a ``.csv``
            (header detected as in :func:`open_data`) or ``.parquet`` table with one column, or
            ``"file.csv:column"`` / ``"file.parquet:column"``; or a :class:`DataSpec`.
        column: the table column(s) (or the ``.npz`` array) to read; a table with several columns needs it.
        header: for CSV files, as in :func:`open_data`.

    Returns:
        The targets: a table column gives ``[n_samples]``, several columns ``[n_samples, n_columns]``.

    Raises:
        DataError: values that are not real numbers, NaN / Inf, beyond the float32 range, an empty or corrupt
            file, a missing column or array.
        DataFileNotFoundError: a missing path.
    """
    exclude: tuple[str, ...] = ()
    if isinstance(path, DataSpec):
        header = path.header if header is None else header
        path, exclude = path.path, path.exclude
    if not isinstance(path, str | os.PathLike):
        raise ArgumentTypeError(f"read_targets() takes the path of a targets file, got {type(path).__name__}")
    path = os.fspath(path)
    real, member = _split_member(path, (".npz", *_CSV_EXTENSIONS, *_PARQUET_EXTENSIONS))
    if member is not None:
        if column is not None:
            raise ArgumentError(
                f"targets {path!r} name the column {member!r} and column={column!r} names another"
            )
        column = member
    _check_file(real, "targets file")
    lower = real.lower()
    if lower.endswith(".npy"):
        if column is not None:
            raise ArgumentError(f"column={column!r} names a table column, but {real!r} is a .npy array")
        y = _read_whole_npy(real)
        what = f"targets file {real!r}"
    elif lower.endswith(".npz"):
        if _empty_file(real):
            raise DataError(f"targets file {real!r} is empty (0 bytes)")
        if column is not None and not isinstance(column, str):
            raise ArgumentError(f"an .npz holds named arrays: column= takes one name, got {column!r}")
        member_name, *_ = _npz_member(real, column, "targets file")
        what = f"array {member_name[:-4]!r} of {real!r}"
        try:
            with np.load(real, allow_pickle=False) as z:
                y = z[member_name[:-4]]
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
            raise DataError(f"{what} cannot be read: the archive is corrupt ({e})") from None
    elif lower.endswith(_CSV_EXTENSIONS + _PARQUET_EXTENSIONS):
        y, what = _read_target_table(real, column, header, exclude)
    else:
        raise DataError(f"targets file {real!r} has an unknown extension; {_EXTENSIONS}")
    return _check_targets(y, what)


def _read_whole_npy(path: str) -> np.ndarray:
    what = f"targets file {path!r}"
    if _empty_file(path):
        raise DataError(f"{what} is empty (0 bytes)")
    with open(path, "rb") as fp:
        _read_npy_header(fp, what)  # dtype checks before numpy reads the data
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise DataError(f"{what} is truncated or corrupt ({e})") from None


def _read_target_table(path: str, column, header, exclude) -> tuple[np.ndarray, str]:
    if path.lower().endswith(_CSV_EXTENSIONS):
        has_header, columns = _csv_layout(path, header, "targets file")
    else:
        pf = _parquet_file(path, "targets file")
        if pf.metadata.num_rows == 0:
            raise DataError(f"targets file {path!r} has no rows")
        has_header, columns = True, list(pf.schema_arrow.names)
    wanted = [column] if isinstance(column, str) else (list(column) if column is not None else None)
    if wanted is None:
        kept = [c for c in columns if c not in exclude]
        if len(kept) != 1:
            shown = ", ".join(kept[:12]) + (", ..." if len(kept) > 12 else "")
            raise DataError(
                f"targets file {path!r} has {len(kept)} columns ({shown}); name the target column "
                f"(column='name', or '{os.path.basename(path)}:name' on the command line)"
            )
        wanted = kept
    elif not has_header:
        raise DataError(f"targets file {path!r} has no header line, so it has no column {column!r}")
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"targets file {path!r} has no column {missing[0]!r}; columns: {columns[:20]}")
    source = _open_path(
        path, (len(wanted),), wanted if has_header else None, header=has_header, role="targets file"
    )
    y = _read_source(source, (len(wanted),))
    what = f"targets file {path!r}" + (f" column {wanted[0]!r}" if has_header and len(wanted) == 1 else "")
    return (y[:, 0] if y.shape[1] == 1 else y), what


def _check_targets(y: np.ndarray, what: str) -> np.ndarray:
    _check_dtype(y.dtype, what)
    if y.ndim == 0:
        raise DataError(f"{what} holds a single number (shape ()); save one target per row")
    if y.shape[0] == 0:
        raise DataError(f"{what} has no rows")
    if y.dtype.kind == "f":
        flat = y.reshape(y.shape[0], -1)
        finite = np.isfinite(flat)
        if not finite.all():
            row, col = (int(i) for i in np.argwhere(~finite)[0])
            raise DataError(
                f"{what} row {row}{'' if flat.shape[1] == 1 else f', column {col}'} holds {flat[row, col]}; "
                "targets must be finite: drop that row from the data and the targets"
            )
        _check_float32_range(flat, what, 0)
    return y


def check_target_rows(y: np.ndarray, n_rows: int, targets: str, data: str) -> None:
    """Refuse targets whose row count differs from the data's, with both counts (and the CSV header rule)."""
    if len(y) == n_rows:
        return
    hint = ""
    if abs(len(y) - n_rows) == 1 and any(str(s).lower().endswith(_CSV_EXTENSIONS) for s in (targets, data)):
        hint = (
            "; one row apart: a CSV whose first line is 0,1,...,n-1 (or holds text) is read as a header. "
            "Pass header=False (--no-header) if that line is data"
        )
    raise DataError(f"the targets ({targets}) have {len(y)} rows but the data ({data}) has {n_rows}{hint}")


# ---------------------------------------------------------------------------------- streamed targets
_PEEK_ROWS = 10000  # rows of a CSV target column read up front to learn its dtype (class labels or values)


def open_targets(
    targets,
    *,
    data=None,
    n_outputs: int | None = None,
    header: bool | None = None,
    nan_policy: str = "raise",
) -> Source:
    """Open ``targets`` as a streamed :class:`Source`, row-aligned with the data; nothing is read whole.

    Args:
        targets: one of

            * a numpy / JAX array ``[n_samples, ...]``, a nested list of numbers, a pandas Series or
              DataFrame (its columns);
            * a path: ``.npy`` (read block by block), ``.npz`` (its first array, or ``"file.npz:name"``),
              ``.csv`` / ``.tsv`` / ``.txt`` (header detected as in :func:`open_data`) or ``.parquet`` with one
              column, or ``"file.csv:column"`` / ``"file.parquet:column"``; a :class:`DataSpec` (its
              ``header`` and ``exclude`` apply);
            * **a column of the data, by name**: a ``str`` that does not end in a data-file extension
              (``"y"``), or a list of such names (``["y1", "y2"]``), read from ``data`` (a CSV / Parquet
              path, a :class:`DataSpec` or a DataFrame), streamed, only that column. :func:`open_xy` also
              drops it from the features;
            * an iterable of batches ``[m, ...]``; a tuple batch ``(x, y, ...)`` contributes its **second**
              element (the same PyTorch ``DataLoader`` or ``tf.data`` pipeline then serves as data and as
              targets; it must be re-iterable). The first batch is read now, to learn the dtype and shape.
        data: the data, for targets given as a column name.
        n_outputs: when given, each row must hold one value (``()``: a class label or the value of a single
            output) or ``n_outputs`` values.
        header: for CSV files (the targets file, or the data when ``targets`` names a column): as in
            :func:`open_data`; ignored for other formats. A :class:`DataSpec` 's own ``header`` wins.
        nan_policy: ``"raise"`` (default): a NaN / Inf target raises :class:`~jaxsens.DataError` naming the
            source, the row and the column. ``"skip"``: such values pass through, and :func:`iter_chunks`
            masks their rows out (with ``nan_policy="skip"``) like rows of data holding NaN.

    Returns:
        A :class:`Source` whose blocks are ``[m, *row_shape]``: ``row_shape`` is ``()`` for one value per row
        (one column, a 1-D array, or ``[n, 1]``: a trailing axis of 1 is dropped) and ``(k,)`` for ``k``
        columns. ``dtype`` is set before reading: integer (``int64`` from tables) or bool for class labels,
        which stay integers; a float dtype for continuous values. ``n_rows`` is known for arrays, ``.npy``,
        ``.npz``, Parquet and (line count) CSV. ``feature_names`` holds the column names read, if any.
        Blocks are checked as they stream: real numbers only (no strings, dates, complex), finite (see
        ``nan_policy``), inside the float32 range, the same per-row shape; a CSV column that read as whole
        numbers in its first rows must stay whole numbers.

    Raises:
        DataError: values that are not finite real numbers (naming the file, row and column), a missing
            column (listing the columns), an empty or corrupt file, a column name with data that has no
            columns, a per-row shape that does not fit ``n_outputs``.
        DataFileNotFoundError: a missing file.
        ArgumentError / ArgumentTypeError: a bad option, ``targets`` of a kind that holds no rows.

    Example:
        >>> import numpy as np, pandas as pd
        >>> frame = pd.DataFrame({"a": [0.5, 1.5, 2.5], "b": [1.0, 2.0, 3.0], "label": [0, 1, 1]})
        >>> y = open_targets("label", data=frame)
        >>> y.dtype, y.row_shape, y.n_rows, [b.tolist() for b in y.blocks(2)]
        (dtype('int64'), (), 3, [[0, 1], [1]])
    """
    if nan_policy not in ("raise", "skip"):
        raise ArgumentError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
    if header is not None and not isinstance(header, bool):
        raise ArgumentTypeError(f"header must be None (detect), True or False, got {header!r}")
    if n_outputs is not None and (
        isinstance(n_outputs, bool) or not isinstance(n_outputs, int | np.integer) or n_outputs < 1
    ):
        raise ArgumentError(f"n_outputs must be a positive integer or None, got {n_outputs!r}")
    if targets is None:
        raise ArgumentTypeError(
            "open_targets() got targets=None; pass an array, a file, a column name of the data or batches"
        )
    if isinstance(targets, Source):
        if targets.dtype is None or targets.row_shape is None:
            raise ArgumentError(
                f"targets is a Source ({targets.description}) without dtype / row_shape; pass what it was "
                "opened from instead"
            )
        source = targets
    else:
        source = _open_targets(targets, data, header)
    if source.n_rows == 0:
        raise DataError(f"{source.description} has no rows")
    if n_outputs is not None and source.row_shape != () and math.prod(source.row_shape) != n_outputs:
        raise DataError(
            f"{source.description} hold {list(source.row_shape)} values per row; the model has {n_outputs} "
            f"outputs: pass one value per row (a class label, or the value of one output) or {n_outputs}"
        )
    return _checked_targets(source, nan_policy)


def open_xy(
    data,
    targets=None,
    *,
    input_shape: Sequence[int],
    feature_names: Sequence[str] | None = None,
    header: bool | None = None,
    n_outputs: int | None = None,
    nan_policy: str = "raise",
) -> tuple[Source, Source | None]:
    """The data and its targets as two row-aligned streamed sources, for :func:`iter_chunks` ``((x, y), ...)``.

    A target given as a column name of the data (``targets="y"``, see :func:`open_targets`) is read from the
    data file / DataFrame and **dropped from the features** (like ``--target-column``); any other targets are
    opened with :func:`open_targets`. Row counts known up front must agree.

    Args:
        data: anything :func:`open_source` accepts (a single input), or an already opened :class:`Source`
            (returned as is; a target column name then cannot be dropped from it and is refused).
        targets: anything :func:`open_targets` accepts, or ``None`` (no targets).
        input_shape: the model's per-sample input shape.
        feature_names: as for :func:`open_source`.
        header: for CSV files (the data, and a CSV targets file): as in :func:`open_data`.
        n_outputs: as for :func:`open_targets`.
        nan_policy: as for :func:`open_targets` (for the targets; the data's NaN rows are handled by
            :func:`iter_chunks`).

    Returns:
        ``(x_source, y_source)``; ``y_source`` is ``None`` when ``targets`` is ``None``.

    Raises:
        DataError: what :func:`open_source` and :func:`open_targets` refuse; row counts that differ (naming
            both sources and their counts).

    Example:
        >>> import numpy as np, pandas as pd
        >>> frame = pd.DataFrame({"a": [0.5, 1.5, 2.5], "b": [1.0, 2.0, 3.0], "label": [0, 1, 1]})
        >>> x, y = open_xy(frame, "label", input_shape=(2,))
        >>> chunk = next(iter_chunks((x, y), batch_size=4, input_shape=((2,), ()),
        ...                          dtype=(np.float32, chunk_dtype(y.dtype))))
        >>> x.feature_names, chunk.xs[1].dtype, chunk.xs[1][:3].tolist(), chunk.n_valid
        (('a', 'b'), dtype('int32'), [0, 1, 1], 3)
    """
    shape = tuple(int(d) for d in input_shape)
    if isinstance(data, Source):  # already open (e.g. the first input of a model with several)
        if data.row_shape is not None and tuple(data.row_shape) != shape:
            raise DataError(
                f"data ({data.description}) has rows of shape {list(data.row_shape)}; expected {list(shape)}"
            )
        x = data
    elif targets is None:
        return _open_checked(_with_header(data, header), shape, feature_names), None
    if targets is None:
        return x, None
    # the targets first: a column name missing from the data is reported as such, not as a bad exclude=
    y = open_targets(targets, data=data, n_outputs=n_outputs, header=header, nan_policy=nan_policy)
    if not isinstance(data, Source):
        x = _open_checked(
            _with_header(data, header), shape, feature_names, exclude=_column_names(targets) or ()
        )
    check_aligned(x, y)
    return x, y


def check_aligned(x: Source, y: Source) -> None:
    """Refuse data and targets whose row counts, both known up front, differ (naming both, with the CSV header
    hint when they are one row apart). Counts known only while streaming are checked by :func:`iter_chunks`."""
    if x.n_rows is None or y.n_rows is None or x.n_rows == y.n_rows:
        return
    hint = ""
    if abs(x.n_rows - y.n_rows) == 1 and any(_CSV_MARK in s.description.lower() for s in (x, y)):
        hint = (
            "; one row apart: a CSV whose first line is 0,1,...,n-1 (or holds text) is read as a header. "
            "Pass header=False (--no-header) if that line is data"
        )
    raise DataError(
        f"data and targets are not row-aligned: the targets ({y.description}) have {y.n_rows} rows but the "
        f"data ({x.description}) has {x.n_rows}{hint}"
    )


_CSV_MARK = ".csv"


def parse_feature_names(text_or_path: str | os.PathLike) -> tuple[str, ...]:
    """Feature names from a command-line value: ``"a,b,c"``, or a text file with one name per line.

    A file may also separate names by commas; blank lines and surrounding spaces are ignored. Names must be
    unique and non-empty.

    Example:
        >>> parse_feature_names("age, income,height")
        ('age', 'income', 'height')

    Raises:
        DataFileNotFoundError: a value that looks like a file path (a path separator or an extension such as
            ``.txt``, and no comma) but does not exist.
        ArgumentError: an empty name, a duplicate name, no names.
    """
    if not isinstance(text_or_path, str | os.PathLike):
        raise ArgumentTypeError(
            f"feature names must be 'a,b,c' or a file path, got {type(text_or_path).__name__}"
        )
    text = os.fspath(text_or_path)
    source = "feature names"
    if os.path.isfile(text):
        _check_file(text, "feature-names file")
        try:
            with open(text, encoding="utf-8-sig") as f:
                content = f.read()
        except UnicodeDecodeError as e:
            raise DataError(f"feature-names file {text!r} is not UTF-8 text ({e})") from None
        source = f"feature-names file {text!r}"
        names = [n.strip() for line in content.splitlines() if line.strip() for n in line.split(",")]
    else:
        looks_like_path = "," not in text and (
            os.sep in text or "/" in text or text.lower().endswith((".txt", ".csv", ".names", ".lst", ".tsv"))
        )
        if looks_like_path or isinstance(text_or_path, os.PathLike):
            _check_file(text, "feature-names file")  # raises DataFileNotFoundError / DataError
        names = [n.strip() for n in text.split(",")]
    if not names or names == [""]:
        raise ArgumentError(f"{source} holds no names; give 'a,b,c' or a file with one name per line")
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise ArgumentError(
            f"{source}: name {empty[0]} is empty ({text if len(text) < 80 else text[:77] + '...'!r}); "
            "remove the extra comma or blank field"
        )
    seen: set[str] = set()
    dup = next((n for n in names if n in seen or seen.add(n)), None)
    if dup is not None:
        raise ArgumentError(f"{source}: the name {dup!r} appears twice; feature names must be unique")
    return tuple(names)


def _column_names(targets) -> tuple[str, ...] | None:
    """The column names when ``targets`` names columns of the data, else ``None`` (a file, an array, ...)."""
    if isinstance(targets, str):
        real, _ = _split_member(targets, (".npz", *_CSV_EXTENSIONS, *_PARQUET_EXTENSIONS))
        if real.lower().endswith((".npy", ".npz", *_CSV_EXTENSIONS, *_PARQUET_EXTENSIONS)):
            return None
        return (targets,)
    if isinstance(targets, list | tuple) and targets and all(isinstance(t, str) for t in targets):
        return tuple(targets)
    return None


def _with_header(data, header: bool | None):
    """``data`` with a CSV ``header`` choice applied (a :class:`DataSpec` 's own choice wins)."""
    if header is None:
        return data
    if isinstance(data, DataSpec):
        return data if data.header is not None else dataclasses.replace(data, header=header)
    if isinstance(data, str | os.PathLike):
        real, _ = _split_member(os.fspath(data), (".npz",))
        if real.lower().endswith(_CSV_EXTENSIONS):
            return DataSpec(os.fspath(data), header, ())
    return data


def _require_table(data, names: tuple[str, ...]) -> None:
    """Refuse a target column name when the data has no named columns."""
    if isinstance(data, DataSpec) or _is_dataframe(data):
        return
    if isinstance(data, str | os.PathLike):
        real, _ = _split_member(os.fspath(data), (".npz",))
        if real.lower().endswith(_CSV_EXTENSIONS + _PARQUET_EXTENSIONS):
            return
    what = "no data was given" if data is None else f"the data ({_kind(data)}) has no named columns"
    shown = names[0] if len(names) == 1 else list(names)
    raise DataError(
        f"targets={shown!r} is not a file with a known extension, so it names a column of the data, but "
        f"{what}. Pass the targets as an array or a file ({_EXTENSIONS.removeprefix('use ')}), or give a "
        "CSV / Parquet / DataFrame data that has that column"
    )


def _kind(data) -> str:
    if isinstance(data, str | os.PathLike):
        return repr(os.fspath(data))
    shape = getattr(data, "shape", None)
    return f"{type(data).__name__} {tuple(shape)}" if shape is not None else type(data).__name__


def _open_targets(targets, data, header: bool | None) -> Source:
    """The unchecked targets source, with ``dtype`` and ``row_shape`` set."""
    names = _column_names(targets)
    if names is not None:
        _require_table(data, names)
        if _is_dataframe(data):
            return _frame_columns(data, names, "targets: column", "DataFrame")
        spec = data if isinstance(data, DataSpec) else DataSpec(os.fspath(data), header, ())
        hdr = spec.header if spec.header is not None else header
        return _file_columns(spec.path, names, hdr, role="data file", fast=True)
    if isinstance(targets, DataSpec):
        return _target_file(
            targets.path, targets.header if targets.header is not None else header, targets.exclude
        )
    if isinstance(targets, str | os.PathLike):
        return _target_file(os.fspath(targets), header, ())
    if _is_dataframe(targets):
        return _frame_columns(targets, tuple(str(c) for c in targets.columns), "targets: DataFrame", None)
    if type(targets).__name__ == "Series" and hasattr(targets, "to_frame"):
        frame = targets.to_frame()
        return _frame_columns(frame, tuple(str(c) for c in frame.columns), "targets: Series", None)
    if isinstance(targets, np.ndarray):
        _check_dtype(targets.dtype, "targets")
    if hasattr(targets, "__array__") or isinstance(targets, list | tuple):
        arr = targets if isinstance(targets, np.ndarray) else _try_array(targets, "targets")
        if arr is not None:
            if arr.ndim == 0:
                raise DataError(f"targets is a single number ({arr.item()!r}); pass one target per row")
            return Source(
                lambda rows: _array_blocks(arr, rows),
                int(arr.shape[0]),
                None,
                f"targets: array {tuple(arr.shape)}",
                arr.dtype,
                _squeezed(arr.shape[1:]),
            )
    if isinstance(targets, Iterable) and not isinstance(targets, bytes | dict | str):
        return _target_batches(targets)
    raise ArgumentTypeError(
        "targets must be an array, a Series / DataFrame, a .npy/.npz/.csv/.parquet path, a column name of the "
        f"data or an iterable of batches, got {type(targets).__name__}"
    )


def _squeezed(shape) -> Shape:
    """Per-row shape with a trailing axis of 1 dropped: ``[n, 1]`` targets are one value per row."""
    shape = tuple(int(d) for d in shape)
    return shape[:-1] if shape[-1:] == (1,) else shape


def _target_file(path: str, header: bool | None, exclude: tuple[str, ...]) -> Source:
    real, member = _split_member(path, (".npz", *_CSV_EXTENSIONS, *_PARQUET_EXTENSIONS))
    _check_file(real, "targets file")
    lower = real.lower()
    if lower.endswith(".npy"):
        if member is not None:
            raise ArgumentError(f"{path!r} names a column {member!r}, but {real!r} is a .npy array")
        source = _npy_source(real, None, "targets file")
    elif lower.endswith(".npz"):
        source = _npz_source(real, member, None, "targets file")
    elif lower.endswith(_CSV_EXTENSIONS + _PARQUET_EXTENSIONS):
        if lower.endswith(_CSV_EXTENSIONS):
            has_header, columns = _csv_layout(real, header, "targets file")
        else:
            has_header, columns = True, list(_parquet_file(real, "targets file").schema_arrow.names)
        if member is not None:
            return _file_columns(real, (member,), header, role="targets file", fast=False)
        kept = [c for c in columns if c not in exclude]
        if len(kept) != 1:
            shown = ", ".join(kept[:12]) + (", ..." if len(kept) > 12 else "")
            raise DataError(
                f"targets file {real!r} has {len(kept)} columns ({shown}); name the target column "
                f"('{os.path.basename(real)}:name'), or save the targets as a .npy array"
            )
        return _file_columns(real, tuple(kept), header, role="targets file", fast=False, named=has_header)
    else:
        raise DataError(f"targets file {real!r} has an unknown extension; {_EXTENSIONS}")
    return dataclasses.replace(
        source, description=f"targets: {source.description}", row_shape=_squeezed(source.row_shape)
    )


def _declared(dtypes: Sequence[np.dtype]) -> np.dtype:
    """One dtype for several columns: int64 if all hold integers, bool if all bools, else float64."""
    kinds = {np.dtype(d).kind for d in dtypes}
    if kinds <= {"b"}:
        return np.dtype(bool)
    if kinds <= {"i", "u"}:
        return np.dtype(np.int64)
    return np.dtype(np.float64)


def _file_columns(
    path: str, names: tuple[str, ...], header: bool | None, *, role: str, fast: bool, named: bool = True
) -> Source:
    """Stream columns ``names`` of a CSV / Parquet file (float64 blocks ``[m, k]``, missing values NaN).

    ``fast``: a CSV is parsed with ``usecols`` (only these columns are converted). Use it only alongside a
    full read of the same file (:func:`open_xy`): a malformed row with surplus fields is caught by that read.
    ``named=False``: a headerless targets file's only column.
    """
    lower = path.lower()
    shown = names[0] if len(names) == 1 else list(names)
    if lower.endswith(_PARQUET_EXTENSIONS):
        pa, pq = _require_pyarrow("reading Parquet files")
        pf = _parquet_file(path, role)
        columns = list(pf.schema_arrow.names)
        _check_columns(path, names, columns, role)
        if pf.metadata.num_rows == 0:
            raise DataError(f"{role} {path!r} has no rows")
        types = {n: t for n, t in zip(columns, pf.schema_arrow.types)}
        for n in names:
            problem = _arrow_problem(types[n])
            if problem is not None:
                raise DataError(f"{role} {path!r}: column {n!r} has type {types[n]}: {problem}")
        dtype = _declared(
            [np.bool_ if pa.types.is_boolean(types[n]) else np.int64 if pa.types.is_integer(types[n])
             else np.float64 for n in names]
        )  # fmt: skip

        def read(rows: int) -> Iterator[np.ndarray]:
            try:
                for batch in _parquet_batches(pq, path, rows, list(names)):
                    cols = [
                        np.asarray(
                            c.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), np.float64
                        )
                        for c in batch.columns
                    ]
                    yield np.stack(cols, axis=1)
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(f"{role} {path!r} cannot be read: {e}") from None

        n_rows = int(pf.metadata.num_rows)
    elif lower.endswith(_CSV_EXTENSIONS):
        pd = _require_pandas("reading CSV files")
        delimiter = "\t" if lower.endswith(".tsv") else ","
        has_header, columns = _csv_layout(path, header, role)
        if named and not has_header:
            raise DataError(
                f"{role} {path!r} is read without a header line, so it has no column {shown!r}; "
                "give it a header, or pass the targets as their own file"
            )
        _check_columns(path, names, columns, role)
        use = list(names) if has_header else [int(n) for n in names]
        opts = {"sep": delimiter, "header": 0 if has_header else None, "index_col": False, "engine": "c"}
        if fast:
            opts["usecols"] = use
        try:
            peek = pd.read_csv(path, nrows=_PEEK_ROWS, **opts)[use]
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
            raise DataError(f"{role} {path!r} cannot be parsed: {e}") from None
        _check_csv_frame(peek, path, 0, has_header, role)
        dtype = _declared(list(peek.dtypes))
        n_rows = csv_row_count(path, header=has_header)

        def read(rows: int) -> Iterator[np.ndarray]:
            start = 0
            try:
                with pd.read_csv(path, chunksize=rows, **opts) as it:
                    for frame in it:
                        frame = frame[use]
                        _check_csv_frame(frame, path, start, has_header, role)
                        start += len(frame)
                        yield frame.to_numpy(np.float64, na_value=np.nan)
            except (pd.errors.ParserError, UnicodeDecodeError) as e:
                raise DataError(f"{role} {path!r} cannot be parsed near data row {start}: {e}") from None

    else:
        raise DataError(
            f"targets={shown!r} names a column, but the data file {path!r} is not a CSV or Parquet table"
        )
    row_shape = () if len(names) == 1 else (len(names),)
    what = f"column {shown!r}" if named else "column"
    prefix = "targets: " + (f"{what} of {path!r}" if role == "data file" else f"{path!r} {what}")
    return Source(
        lambda rows: (b.reshape(-1, *row_shape) for b in read(rows)),
        n_rows,
        names if named else None,
        prefix,
        dtype,
        row_shape,
    )


def _check_columns(path: str, names: Sequence[str], columns: Sequence[str], role: str) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
        raise DataError(f"{role} {path!r} has no column {missing[0]!r}; its columns are: {shown}")


def _frame_columns(frame, names: tuple[str, ...], what: str, of: str | None) -> Source:
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    missing = [n for n in names if n not in frame.columns]
    if missing:
        shown = ", ".join(list(frame.columns)[:20]) + (", ..." if len(frame.columns) > 20 else "")
        raise DataError(f"the data (a DataFrame) has no column {missing[0]!r}; its columns are: {shown}")
    sub = frame[list(names)]
    for c, d in sub.dtypes.items():
        kind = getattr(d, "kind", "O")
        if kind not in "biuf":
            bad = f"column {c!r} has dtype {d}: "
            problem = _dtype_problem(
                np.dtype(d) if kind != "O" and isinstance(d, np.dtype) else np.dtype(object)
            )
            raise DataError(f"{what} {bad}{problem}")
    dtype = _declared([np.dtype(np.int64) if d.kind in "iu" else np.dtype(bool) if d.kind == "b" else
                       np.dtype(np.float64) for d in sub.dtypes])  # fmt: skip
    row_shape = () if len(names) == 1 else (len(names),)
    shown = names[0] if len(names) == 1 else list(names)
    desc = f"{what} {shown!r}" + (f" of the {of}" if of else "")
    return Source(
        lambda rows: (b.reshape(-1, *row_shape) for b in _frame_blocks(sub, rows, None)),
        len(sub),
        names,
        desc,
        dtype,
        row_shape,
    )


def _target_batches(data) -> Source:
    """Targets from an iterable of batches; the first batch is read now (dtype, shape)."""
    it = iter(data)
    one_shot = it is data
    try:
        first = next(it)
    except StopIteration:
        raise DataError(f"targets ({type(data).__name__}) hold no batches") from None
    first = _target_batch(first, 0)
    dtype, row_shape = first.dtype, _squeezed(first.shape[1:])
    pending = [first] if one_shot else []

    def blocks(rows: int) -> Iterator[np.ndarray]:
        del rows
        if one_shot:
            while pending:
                yield pending.pop()
            for i, batch in enumerate(it, start=1):
                yield _target_batch(batch, i)
        else:
            for i, batch in enumerate(data):
                yield _target_batch(batch, i)

    return Source(blocks, None, None, f"targets: {type(data).__name__} of batches", dtype, row_shape)


def _target_batch(batch, i: int) -> np.ndarray:
    if isinstance(batch, tuple):
        if len(batch) < 2:
            raise DataError(
                f"batch {i} of targets is a tuple of {len(batch)}; tuple batches (x, y, ...) give their "
                "second element as the targets: pass arrays, or (x, y) tuples"
            )
        batch = batch[1]
    return _batch_array(batch, f"batch {i} of targets")


def _checked_targets(source: Source, nan_policy: str) -> Source:
    """Every block checked as it streams: dtype, per-row shape, finite (``nan_policy``), float32 range, and
    the declared dtype kept (whole numbers for class labels)."""
    dtype, row_shape, what = np.dtype(source.dtype), tuple(source.row_shape), source.description
    _check_dtype(dtype, what)
    names = source.feature_names

    def blocks(rows: int) -> Iterator[np.ndarray]:
        seen = 0
        for block in source.blocks(rows):
            block = np.asarray(block)
            _check_dtype(block.dtype, f"{what} (rows from {seen})")
            if block.ndim == 0:
                raise DataError(f"{what}: a block at row {seen} is a single number; blocks must be [m, ...]")
            if block.shape[1:] != row_shape:
                if block.shape[1:] == (*row_shape, 1):
                    block = block.reshape(block.shape[:-1])
                else:
                    raise DataError(
                        f"{what}: rows {seen}.. have per-row shape {list(block.shape[1:])}, earlier rows "
                        f"{list(row_shape)}; every row needs the same shape"
                    )
            m = block.shape[0]
            flat = block.reshape(m, -1)
            if block.dtype.kind == "f" and m:
                finite = np.isfinite(flat)
                if nan_policy == "raise" and not finite.all():
                    row, col = (int(i) for i in np.argwhere(~finite)[0])
                    raise DataError(
                        f"{what} row {seen + row}{_target_column(col, names, flat.shape[1])} holds "
                        f"{flat[row, col]}; targets must be finite: drop that row from the data and the targets "
                        "(or pass nan_policy='skip' to mask such rows out)"
                    )
                _check_float32_range(flat, what, seen, names)
                if block.dtype != dtype and dtype.kind in "iub":
                    lo, hi = (0, 1) if dtype.kind == "b" else (-(2.0**63), 2.0**63)
                    bad = finite & ((flat != np.round(flat)) | (flat < lo) | (flat >= hi))
                    if bad.any():
                        row, col = (int(i) for i in np.argwhere(bad)[0])
                        kind = "0 / 1 (bools)" if dtype.kind == "b" else "whole numbers (class labels)"
                        raise DataError(
                            f"{what} row {seen + row}{_target_column(col, names, flat.shape[1])} holds "
                            f"{flat[row, col]:.17g}, but its first rows read as {kind} (dtype {dtype}); "
                            "write every value of a continuous target with a decimal point (1.0), or save "
                            "the targets as a float .npy array"
                        )
                    if finite.all():
                        block = block.astype(dtype)
                elif block.dtype != dtype:
                    block = block.astype(dtype)
            elif block.dtype != dtype:
                block = block.astype(dtype)
            seen += m
            yield block
        _check_row_count(source, seen)

    return dataclasses.replace(source, blocks=blocks, rows_between=None)  # unchecked: read through blocks


def _target_column(col: int, names, width: int) -> str:
    if names is not None and col < len(names):
        return f", column {names[col]!r}"
    return "" if width == 1 else f", column {col}"


# ------------------------------------------------------------------------------------------- chunks
def chunk_dtype(dtype) -> np.dtype:
    """The dtype of a chunk fed to a model input declared ``dtype``: float32 for floating inputs, int32 for
    integer ones (token ids: exact, as JAX computes integers in 32 bits), bool for bool ones."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return np.dtype(np.int32)
    if dtype.kind == "b":
        return np.dtype(bool)
    return np.dtype(np.float32)


def as_chunk_dtype(xs, dtype, what: str = "xs") -> np.ndarray:
    """``xs`` as the chunk dtype of a model input declared ``dtype`` (see :func:`chunk_dtype`); integer / bool
    inputs refuse values the conversion would change (``1.5``, NaN, beyond int32) with a :class:`DataError`."""
    target = chunk_dtype(dtype)
    xs = np.asarray(xs)
    if target.kind == "f" or xs.dtype == target or xs.size == 0:
        return xs.astype(target, copy=False)
    flat = np.asarray(xs, np.float64).reshape(xs.shape[0] if xs.ndim else 1, -1)
    if not np.isfinite(flat).all():
        row = int(np.flatnonzero(~np.isfinite(flat).all(axis=1))[0])
        raise DataError(f"{what} row {row} holds NaN or Inf; the model's integer input needs whole numbers")
    return _exact_integers(flat, flat.shape[0], 0, target, what).reshape(xs.shape)


def open_sources(
    data, *, input_names: Sequence[str], input_shapes: Sequence[Sequence[int]]
) -> tuple[Source, ...]:
    """One :class:`Source` per input of a model with several inputs, checked to be row-aligned.

    Args:
        data: a tuple / list with one entry per input, in the model's input order, or a dict keyed by input
            name; each entry is anything :func:`open_source` accepts (array, DataFrame, file path,
            :class:`DataSpec`, iterable of batches).
        input_names: the model's input names.
        input_shapes: their per-sample shapes.

    Returns:
        The sources, in input order; each ``description`` names its input. Row counts known up front must
        agree (:func:`iter_chunks` checks the others as they stream).

    Raises:
        DataError: a missing / unknown input name, a wrong number of entries, row counts that differ (naming
            both inputs and their counts), and whatever :func:`open_source` refuses.
        ArgumentTypeError: ``data`` that is not a tuple, list or dict.
    """
    names = tuple(str(n) for n in input_names)
    n = len(names)
    if isinstance(data, Mapping):
        keys = [str(k) for k in data]
        missing = [k for k in names if k not in keys]
        unknown = [k for k in keys if k not in names]
        if missing or unknown:
            raise DataError(
                f"data is a dict with keys {keys}; the model's inputs are {list(names)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {unknown})" if unknown else "")
            )
        parts = [data[k] for k in names]
    elif isinstance(data, tuple | list):
        if len(data) != n:
            raise DataError(
                f"data has {len(data)} parts; the model has {n} inputs {list(names)}: pass a tuple of {n} arrays "
                "or sources in that order, or a dict keyed by input name"
            )
        parts = list(data)
    else:
        raise ArgumentTypeError(
            f"the model has {n} inputs {list(names)}: pass data as a tuple of {n} arrays or sources (one per "
            f"input, row-aligned) or a dict keyed by input name, got {type(data).__name__}"
        )
    sources = []
    for name, shape, part in zip(names, input_shapes, parts):
        try:
            source = open_source(part, input_shape=shape)
        except DataError as e:  # name the input: "data has shape [10, 2]" alone does not say which
            e.args = (f"input {name!r}: {e}",)
            raise
        sources.append(dataclasses.replace(source, description=f"input {name!r}: {source.description}"))
    known = [s for s in sources if s.n_rows is not None]
    for s in known[1:]:
        if s.n_rows != known[0].n_rows:
            raise_misaligned(known[0].description, known[0].n_rows, s.description, s.n_rows)
    return tuple(sources)


def raise_misaligned(what_a: str, n_a: int, what_b: str, n_b: int, *, at_least: bool = False) -> None:
    """Refuse per-input data whose row counts differ, naming both sources and their counts."""
    more = "at least " if at_least else ""
    raise DataError(
        f"the inputs' data are not row-aligned: {what_a} has {n_a} rows but {what_b} has {more}{n_b}; every "
        "input (and the targets) needs one row per sample, in the same order"
    )


def iter_chunks(
    source: Source | tuple[Source, ...],
    *,
    batch_size: int,
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    nan_policy: str = "raise",
    dtype=np.float32,
) -> Iterator[Chunk]:
    """Re-batch ``source`` into chunks of exactly ``batch_size`` rows (the last one padded and masked).

    Args:
        source: from :func:`open_source`; or, for a model with several inputs, a tuple of sources (from
            :func:`open_sources`), read together: chunk ``k`` holds rows ``k * batch_size ...`` of every input.
        batch_size: rows per chunk.
        input_shape: per-sample shape (a tuple of shapes, one per source, for a tuple of sources); each block
            is checked against it.
        nan_policy: ``"raise"`` (a row with NaN or Inf raises :class:`DataError` naming its global index) or
            ``"skip"`` (such rows are masked out and counted in ``Chunk.n_skipped``). Values beyond the float32
            range raise in both cases (they are not missing values: the data needs rescaling); that check is
            part of the blocks of a source from :func:`open_source`. With several sources a row is skipped
            when any input holds NaN or Inf in it.
        dtype: the chunk dtype (one per source for a tuple). An integer dtype (a model input of token ids, see
            :func:`chunk_dtype`) gives int32 chunks, bool gives bool: values exactly the data's (never rounded
            through float32); non-integral or out-of-range values raise :class:`DataError`.

    Targets ride along as one more source: ``x, y = open_xy(data, targets, input_shape=s)`` then
    ``iter_chunks((x, y), batch_size=b, input_shape=(s, y.row_shape), dtype=(np.float32,
    chunk_dtype(y.dtype)))`` gives ``chunk.xs == (xs, ys)``, ``ys`` int32 for class labels.

    Yields:
        :class:`Chunk` s in row order; a source with no rows yields nothing. For a tuple of sources
        ``Chunk.xs`` is a tuple of arrays, one per source. Sources whose row counts differ raise
        :class:`DataError` naming both and their counts.
    """
    if nan_policy not in ("raise", "skip"):
        raise ArgumentError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    multi = isinstance(source, tuple)
    sources = source if multi else (source,)
    shapes = (
        tuple(tuple(int(d) for d in s) for s in input_shape)
        if multi
        else (tuple(int(d) for d in input_shape),)
    )
    dtypes = tuple(dtype) if multi and isinstance(dtype, tuple | list) else (dtype,) * len(sources)
    dtypes = tuple(np.dtype(d) if np.dtype(d).kind == "f" else chunk_dtype(d) for d in dtypes)
    fills = [_fill(s, batch_size, shape, d) for s, shape, d in zip(sources, shapes, dtypes)]
    start = sources[0].first_row  # global row numbers (a process's share starts there)
    while True:
        parts = [next(f, None) for f in fills]
        if all(p is None for p in parts):
            return
        haves = [0 if p is None else p[1] for p in parts]
        if len(set(haves)) > 1:
            _misaligned(sources, fills, haves, start)
        outs = [p[0] for p in parts]
        chunk = _finish(outs, haves[0], start, nan_policy, sources, dtypes)
        yield chunk if multi else dataclasses.replace(chunk, xs=chunk.xs[0])
        start += haves[0]


def _fill(
    source: Source, batch_size: int, input_shape: Shape, dtype: np.dtype
) -> Iterator[tuple[np.ndarray, int]]:
    """``(buffer [batch_size, *input_shape], rows filled)`` per chunk; integer / bool chunks are filled in float64
    (exact for every int32 value; NaN / Inf rows are found before the values are converted)."""
    buf_dtype = np.float64 if dtype.kind in "iub" else dtype
    out, have = None, 0
    for block in source.blocks(batch_size):
        block = np.asarray(block)
        check_rows_shape(block.shape, input_shape, f"data ({source.description})")
        pos = 0
        while pos < block.shape[0]:
            if out is None:
                out = np.empty((batch_size, *input_shape), buf_dtype)
            take = min(batch_size - have, block.shape[0] - pos)
            out[have : have + take] = block[pos : pos + take]
            have += take
            pos += take
            if have == batch_size:
                yield out, have
                out, have = None, 0
    if have:
        yield out, have


def _misaligned(sources, fills, haves, start) -> None:
    """Row counts of the inputs differ: count every source to its end and raise naming two of them."""
    totals = [start + h for h in haves]
    for i, (f, h) in enumerate(zip(fills, haves)):
        if h:
            totals[i] += sum(have for _, have in f)
    j = next(j for j, t in enumerate(totals) if t != totals[0])
    raise_misaligned(sources[0].description, totals[0], sources[j].description, totals[j])


def _finish(outs: list[np.ndarray], have: int, start: int, nan_policy: str, sources, dtypes) -> Chunk:
    batch_size = outs[0].shape[0]
    mask = np.zeros(batch_size, bool)
    mask[:have] = True
    finite = np.ones(have, bool)
    for out in outs:
        finite &= np.isfinite(out[:have].reshape(have, -1)).all(axis=1)
    n_skipped = 0
    if not finite.all():
        bad = np.flatnonzero(~finite)
        if nan_policy == "raise":
            rows = ", ".join(str(start + int(b)) for b in bad[:5]) + (", ..." if len(bad) > 5 else "")
            k = next(k for k, out in enumerate(outs) if not np.isfinite(out[bad[0]]).all())
            col = int(np.flatnonzero(~np.isfinite(outs[k][bad[0]].reshape(-1)))[0])
            raise DataError(
                f"data row {start + int(bad[0])} holds NaN or Inf (rows {rows}; first in "
                f"{_column_label(col, sources[k].feature_names)} of {sources[k].description}); clean the data or "
                "pass nan_policy='skip' to drop such rows (they are counted in the result's n_skipped)"
            )
        for out in outs:
            out[bad] = 0
        mask[bad] = False
        n_skipped = len(bad)
    xs = []
    for out, source, dtype in zip(outs, sources, dtypes):
        if have < batch_size:  # pad with the last real row: finite and inside the model's usual domain
            out[have:] = out[have - 1]
        if out.dtype != dtype:
            what = f"data ({source.description})"
            out = _exact_integers(out, have, start, dtype, what, source.feature_names)
        xs.append(out)
    row_index = (np.arange(start, start + batch_size, dtype=np.int64) % (1 << 32)).astype(np.uint32)
    return Chunk(tuple(xs), mask, row_index, start, have - n_skipped, n_skipped)


def _exact_integers(
    out: np.ndarray, have: int, start: int, dtype: np.dtype, what: str, names=None
) -> np.ndarray:
    """A float64 buffer as ``dtype`` (int32 / bool), refusing values that the conversion would change."""
    lo, hi = (0, 1) if dtype.kind == "b" else (np.iinfo(np.int32).min, np.iinfo(np.int32).max)
    flat = out[:have].reshape(have, -1)
    bad = (flat != np.round(flat)) | (flat < lo) | (flat > hi)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        kind = (
            "0 or 1 (a bool input)"
            if dtype.kind == "b"
            else f"whole numbers in [{lo}, {hi}] (an integer input)"
        )
        raise DataError(
            f"{what} row {start + row}, {_column_label(col, names)}: value "
            f"{float(flat[row, col]):.17g} cannot be fed exactly to a model input that takes {kind}; integer inputs (e.g. "
            "token ids) need integer data"
        )
    return out.astype(dtype)
