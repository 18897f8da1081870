"""Data sources -> padded, masked chunks: every kind of source yields exactly the rows it was made from."""

from __future__ import annotations

import itertools
import os
import tracemalloc

import numpy as np
import pytest

from jaxsens._data import iter_chunks, open_source

N, D, B = 1003, 4, 100
NAMES = ("alpha", "beta", "gamma", "delta")


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)


def _write_csv(path, arr, header):
    with open(path, "w") as f:
        if header:
            f.write(",".join(header) + "\n")
        np.savetxt(f, arr, fmt="%.9g", delimiter=",")


def _make(kind: str, arr: np.ndarray, tmp):
    """A data source of ``kind`` holding ``arr``; returns (data, expected n_rows, expected feature_names)."""
    import jax.numpy as jnp

    p = lambda name: os.path.join(tmp, name)
    if kind == "numpy":
        return arr, N, None
    if kind == "numpy_float64":
        return arr.astype(np.float64), N, None
    if kind == "jax":
        return jnp.asarray(arr), N, None
    if kind == "list":
        return arr.tolist(), N, None
    if kind == "npy":
        np.save(p("x.npy"), arr)
        return p("x.npy"), N, None
    if kind == "npy_fortran":
        np.save(p("f.npy"), np.asfortranarray(arr))
        return p("f.npy"), N, None
    if kind == "npz_first":
        np.savez(p("a.npz"), x=arr, y=np.zeros(3))
        return p("a.npz"), N, None
    if kind == "npz_named":
        np.savez_compressed(p("b.npz"), y=np.zeros((2, 9)), features=arr)
        return p("b.npz") + ":features", N, None
    if kind == "csv_header":
        _write_csv(p("h.csv"), arr, NAMES)
        return p("h.csv"), None, NAMES
    if kind == "csv_plain":
        _write_csv(p("n.csv"), arr, None)
        return p("n.csv"), None, None
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.table({n: arr[:, i] for i, n in enumerate(NAMES)}), p("t.parquet"), row_group_size=250
        )
        return p("t.parquet"), N, NAMES
    if kind == "dataframe":
        import pandas as pd

        return pd.DataFrame(arr, columns=list(NAMES)), N, NAMES
    if kind == "batches":
        cuts = [0, 1, 57, 300, 301, 900, N]
        return [arr[a:b] for a, b in itertools.pairwise(cuts)], None, None
    if kind == "generator_xy":
        return ((arr[i : i + 64], np.zeros(len(arr[i : i + 64]))) for i in range(0, N, 64)), None, None
    raise AssertionError(kind)


KINDS = [
    "numpy",
    "numpy_float64",
    "jax",
    "list",
    "npy",
    "npy_fortran",
    "npz_first",
    "npz_named",
    "csv_header",
    "csv_plain",
    "parquet",
    "dataframe",
    "batches",
    "generator_xy",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_source_yields_the_rows_in_padded_chunks(kind, rows, tmp_path):
    data, n_rows, names = _make(kind, rows, str(tmp_path))
    src = open_source(data, input_shape=(D,))
    assert src.n_rows == n_rows
    assert src.feature_names == names
    chunks = list(iter_chunks(src, batch_size=B, input_shape=(D,)))
    assert len(chunks) == -(-N // B)
    for c in chunks:  # fixed shapes: one compiled kernel serves them all
        assert c.xs.shape == (B, D) and c.xs.dtype == np.float32 and c.mask.shape == (B,)
        np.testing.assert_array_equal(c.row_index, np.arange(c.start, c.start + B, dtype=np.uint32))
        assert np.isfinite(c.xs).all()
    last = chunks[-1]
    assert last.n_valid == N % B and last.mask.sum() == N % B and not last.mask[N % B :].any()
    got = np.concatenate([c.xs[c.mask] for c in chunks])
    np.testing.assert_array_equal(got, rows)  # bit-exact, whatever the container


def test_sequence_rows_from_a_flat_table_are_row_major(tmp_path):
    arr = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    path = str(tmp_path / "seq.csv")
    _write_csv(path, arr, [f"c{i}" for i in range(10)])
    src = open_source(path, input_shape=(5, 2))
    assert src.feature_names is None  # 10 columns do not name 2 features
    (chunk,) = iter_chunks(src, batch_size=8, input_shape=(5, 2))
    np.testing.assert_array_equal(chunk.xs[:6], arr.reshape(6, 5, 2))


def test_table_columns_are_selected_by_the_models_feature_names(rows, tmp_path):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(NAMES))
    frame.insert(2, "target", np.arange(N) % 2)
    frame = frame[["delta", "target", "beta", "alpha", "gamma"]]
    path = str(tmp_path / "with_target.csv")
    frame.to_csv(path, index=False, float_format="%.9g")
    for data in (path, frame):
        src = open_source(data, input_shape=(D,), feature_names=NAMES)
        assert src.feature_names == NAMES
        got = np.concatenate([c.xs[c.mask] for c in iter_chunks(src, batch_size=256, input_shape=(D,))])
        np.testing.assert_array_equal(got, rows)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda t, a: a[:, :3], r"shape \[1003, 3\]; the model expects \[n_samples, 4\]"),
        (lambda t, a: a[0], r"single sample: add a batch axis"),
        (lambda t, a: a.reshape(N, 2, 2), r"reshape it with .reshape\(-1, 4\)"),
        (lambda t, a: [a[:10], a[:10, :3]], r"batch 1 of data has shape \[10, 3\]"),
    ],
)
def test_shape_errors_say_expected_and_got(make, match, rows, tmp_path):
    with pytest.raises(ValueError, match=match):
        src = open_source(make(str(tmp_path), rows), input_shape=(D,))
        list(iter_chunks(src, batch_size=B, input_shape=(D,)))


def test_file_errors(rows, tmp_path):
    np.save(tmp_path / "bad.npy", rows[:, :3])
    with pytest.raises(ValueError, match=r"bad.npy' has shape \[1003, 3\]"):
        open_source(str(tmp_path / "bad.npy"), input_shape=(D,))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(str(tmp_path / "missing.npy"), input_shape=(D,))
    np.savez(tmp_path / "z.npz", x=rows)
    with pytest.raises(KeyError, match=r"no array 'nope'; it holds \['x'\]"):
        open_source(str(tmp_path / "z.npz") + ":nope", input_shape=(D,))
    (tmp_path / "x.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown extension"):
        open_source(str(tmp_path / "x.h5"), input_shape=(D,))
    _write_csv(tmp_path / "five.csv", np.hstack([rows, rows[:, :1]]), [*NAMES, "extra"])
    with pytest.raises(
        ValueError, match=r"has 5 columns \(alpha, beta, gamma, delta, extra\); the model expects 4"
    ):
        open_source(str(tmp_path / "five.csv"), input_shape=(D,))
    with open(tmp_path / "text.csv", "w") as f:
        f.write("a,b,c,d\n1,2,3,x\n")
    with pytest.raises(ValueError, match=r"column\(s\) \['d'\] are not numeric"):
        list(
            iter_chunks(
                open_source(str(tmp_path / "text.csv"), input_shape=(D,)), batch_size=4, input_shape=(D,)
            )
        )


def test_nan_rows_raise_with_their_index_or_are_skipped_and_counted(rows):
    dirty = rows.copy()
    dirty[357, 2] = np.nan
    dirty[358, 0] = np.inf
    dirty[1001, 1] = -np.inf
    with pytest.raises(
        ValueError, match=r"data row 357 holds NaN or Inf \(rows 357, 358\).*nan_policy='skip'"
    ):
        list(iter_chunks(open_source(dirty, input_shape=(D,)), batch_size=B, input_shape=(D,)))
    chunks = list(
        iter_chunks(open_source(dirty, input_shape=(D,)), batch_size=B, input_shape=(D,), nan_policy="skip")
    )
    assert sum(c.n_skipped for c in chunks) == 3
    assert sum(c.n_valid for c in chunks) == N - 3
    assert all(np.isfinite(c.xs).all() for c in chunks)
    keep = np.ones(N, bool)
    keep[[357, 358, 1001]] = False
    np.testing.assert_array_equal(np.concatenate([c.xs[c.mask] for c in chunks]), rows[keep])
    np.testing.assert_array_equal(np.concatenate([c.row_index[c.mask] for c in chunks]), np.flatnonzero(keep))
    with pytest.raises(ValueError, match="nan_policy must be 'raise' or 'skip'"):
        list(
            iter_chunks(
                open_source(rows, input_shape=(D,)), batch_size=B, input_shape=(D,), nan_policy="drop"
            )
        )


def test_npy_is_streamed_not_loaded(tmp_path):
    n, d = 200_000, 50  # 40 MB on disk
    path = str(tmp_path / "big.npy")
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))[:] = 1.0
    src = open_source(path, input_shape=(d,))
    tracemalloc.start()
    try:
        total = sum(c.n_valid for c in iter_chunks(src, batch_size=1000, input_shape=(d,)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == n
    assert peak < 2_000_000, f"peak {peak} bytes while streaming a 40 MB file"
