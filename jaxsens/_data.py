"""Data sources -> fixed-size padded chunks with masks and global row indices.

:func:`open_source` turns whatever the user passes (an array, a file path, a :class:`DataSpec` from
:func:`open_data`, an iterable of batches) into a :class:`Source`: a re-startable stream of row blocks plus what
is known up front (row count, column names). :func:`iter_chunks` re-batches any source into :class:`Chunk` s of
exactly ``batch_size`` rows: the last ragged chunk is padded (so one compiled kernel serves every chunk) and
carries a ``mask``; rows holding NaN or Inf raise an error naming the row, or are masked out and counted with
``nan_policy="skip"``. :func:`read_targets` reads a target file for the methods that need one.

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
    "check_float32_input",
    "chunk_dtype",
    "header_names",
    "iter_chunks",
    "open_data",
    "open_source",
    "open_sources",
    "read_rows",
    "read_targets",
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
        n_rows: number of rows when known up front (arrays, ``.npy``, ``.npz``, Parquet), else ``None``.
        feature_names: column names from a CSV / Parquet header or a DataFrame, when the columns map
            one-to-one onto the features of a 1-D input and are not just pandas' default labels ``0..n-1``;
            else ``None``.
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
            ``.txt``) or ``.parquet`` file.
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
    _check_file(real, "data file")
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
            ``tf.data``).
        input_shape: the model's per-sample input shape.
        feature_names: the model's feature names; a CSV / Parquet / DataFrame whose header contains all of
            them (and possibly other columns, such as a target) is read in that column order.

    Returns:
        The :class:`Source`. Shapes, dtypes and row counts are checked here when known, otherwise block by
        block as the source is read.

    Raises:
        DataError: a shape or column mismatch (expected vs got), values that are not real numbers or beyond
            the float32 range, an empty, unreadable or corrupt source, a folder.
        DataFileNotFoundError: a missing path.
        ArgumentTypeError: ``data`` of a kind that holds no rows (a dict, a number).
        MissingExtraError: CSV / Parquet without pandas / pyarrow.
    """
    input_shape = tuple(int(d) for d in input_shape)
    source = _open(data, input_shape, feature_names)
    if source.n_rows == 0:
        raise DataError(f"{source.description} has no rows; the methods need at least one sample")
    return _checked(source, input_shape)


def _open(data, input_shape: Shape | None, feature_names) -> Source:
    """``open_source`` without the final checks; ``input_shape=None`` takes whatever rows the data holds."""
    if isinstance(data, DataSpec):
        return _open_path(data.path, input_shape, feature_names, header=data.header, exclude=data.exclude)
    if isinstance(data, str | os.PathLike):
        return _open_path(os.fspath(data), input_shape, feature_names)
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
                lambda rows: _array_blocks(arr, rows), int(arr.shape[0]), None, f"array {arr.shape}"
            )
    if isinstance(data, Iterable) and not isinstance(data, bytes | dict | str):
        return Source(_iterable_blocks(data, input_shape), None, None, type(data).__name__)
    raise ArgumentTypeError(
        "data must be an array, a DataFrame, a .npy/.npz/.csv/.parquet path (or jaxsens.open_data(path, ...)) "
        f"or an iterable of batches, got {type(data).__name__}"
    )


def _checked(source: Source, input_shape: Shape | None) -> Source:
    """The source with every block checked: real dtype, shape, float32 range (global row numbers)."""

    def blocks(rows: int) -> Iterator[np.ndarray]:
        seen = 0
        for block in source.blocks(rows):
            block = np.asarray(block)
            _check_dtype(block.dtype, f"data ({source.description})")
            if input_shape is not None:
                check_rows_shape(block.shape, input_shape, f"data ({source.description})")
            _check_float32_range(block, f"data ({source.description})", seen, source.feature_names)
            seen += block.shape[0]
            yield block

    return dataclasses.replace(source, blocks=blocks)


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


def _iterable_blocks(data, input_shape: Shape | None) -> Callable[[int], Iterator[np.ndarray]]:
    def blocks(rows: int) -> Iterator[np.ndarray]:
        del rows
        for i, batch in enumerate(data):
            if isinstance(batch, tuple):
                if not batch:
                    raise DataError(f"batch {i} of data is an empty tuple")
                batch = batch[0]
            if isinstance(batch, np.ndarray):
                _check_dtype(batch.dtype, f"batch {i} of data")
            arr = _try_array(batch, f"batch {i} of data")
            if arr is None or arr.ndim == 0:
                raise DataError(
                    f"batch {i} of data is a {type(batch).__name__}; expected a numeric array [m, ...]"
                )
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

    def blocks(rows: int) -> Iterator[np.ndarray]:
        if fortran:
            yield from _array_blocks(np.load(path, mmap_mode="r", allow_pickle=False), rows)
            return
        with open(path, "rb") as fp:
            _read_npy_header(fp, what)
            yield from _stream_rows(fp, shape, dtype, rows, what)

    return Source(blocks, int(shape[0]), None, path)


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

    return Source(blocks, int(shape[0]), None, what)


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
        reader, columns, input_shape, feature_names, path, n_rows=None, has_header=has_header, exclude=exclude
    )


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

    def reader(rows: int, usecols: list[str] | None) -> Iterator[np.ndarray]:
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=usecols):
                cols = [
                    np.asarray(c.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), np.float64)
                    for c in batch.columns
                ]
                yield np.stack(cols, axis=1) if cols else np.zeros((batch.num_rows, 0))
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{role} {path!r} cannot be read: {e}") from None

    return _table_source(
        reader,
        columns,
        input_shape,
        feature_names,
        path,
        n_rows=int(pf.metadata.num_rows),
        dtypes=list(pf.schema_arrow.types),
        exclude=exclude,
    )


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
) -> Source:
    """A table (CSV, Parquet, DataFrame) read as ``read(rows, usecols) -> [m, n_columns]`` float blocks.

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

    return Source(blocks, n_rows, names, what)


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
        "input needs one row per sample, in the same order"
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
    start = 0
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
