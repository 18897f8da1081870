"""Streamed targets (open_targets / open_xy), CSV row counts, user-given feature names (issue 11, items 2, 5, 6).

Every kind of targets is read back block by block and compared with the values written; class labels stay
integers; bad values and misaligned row counts are refused naming the source, the row and the column.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from jaxsens import ArgumentError, DataError, _data
from jaxsens._data import (
    chunk_dtype,
    csv_row_count,
    iter_chunks,
    open_data,
    open_source,
    open_targets,
    open_xy,
    parse_feature_names,
)
from jaxsens.errors import DataFileNotFoundError

N, D = 203, 3
NAMES = ("a", "b", "c")


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(N, D)).astype(np.float32)
    labels = rng.integers(0, 4, N).astype(np.int64)
    values = rng.normal(size=N) * 100.0
    return x, labels, values


def _all(source, rows=17) -> np.ndarray:
    return np.concatenate(list(source.blocks(rows)), axis=0)


def _frame(x, labels, values) -> pd.DataFrame:
    frame = pd.DataFrame(x.astype(np.float64), columns=list(NAMES))
    frame["label"] = labels
    frame["value"] = values
    return frame


# ------------------------------------------------------------------------------ every kind of targets
KINDS = [
    "array_int", "array_float_n1", "jax", "list", "series", "frame_two", "npy_int", "npy_float_2d", "npz_first",
    "npz_named", "csv_header", "csv_no_header", "csv_member", "tsv", "parquet_one", "parquet_member", "dataspec",
    "batches_tuple", "generator",
]  # fmt: skip


def _targets(kind: str, labels, values, tmp):
    """``(targets, expected values, expected row_shape, integer?)``."""
    p = lambda name: os.path.join(tmp, name)
    two = np.stack([values, values * 2], axis=1)
    if kind == "array_int":
        return labels, labels, (), True
    if kind == "array_float_n1":
        return values[:, None], values, (), False
    if kind == "jax":
        import jax.numpy as jnp

        return jnp.asarray(labels.astype(np.int32)), labels, (), True
    if kind == "list":
        return labels.tolist(), labels, (), True
    if kind == "series":
        return pd.Series(values, name="v"), values, (), False
    if kind == "frame_two":
        return pd.DataFrame(two, columns=["v1", "v2"]), two, (2,), False
    if kind == "npy_int":
        np.save(p("y.npy"), labels)
        return p("y.npy"), labels, (), True
    if kind == "npy_float_2d":
        np.save(p("y2.npy"), two)
        return p("y2.npy"), two, (2,), False
    if kind == "npz_first":
        np.savez(p("y.npz"), y=labels, other=np.zeros(3))
        return p("y.npz"), labels, (), True
    if kind == "npz_named":
        np.savez(p("yn.npz"), other=np.zeros(3), y=values)
        return p("yn.npz") + ":y", values, (), False
    if kind == "csv_header":
        pd.DataFrame({"label": labels}).to_csv(p("y.csv"), index=False)
        return p("y.csv"), labels, (), True
    if kind == "csv_no_header":
        np.savetxt(p("yh.csv"), values, fmt="%.17g")
        return open_data(p("yh.csv"), header=False), values, (), False
    if kind == "csv_member":
        pd.DataFrame({"id": np.arange(N), "value": values}).to_csv(p("ym.csv"), index=False)
        return p("ym.csv") + ":value", values, (), False
    if kind == "tsv":
        pd.DataFrame({"label": labels}).to_csv(p("y.tsv"), index=False, sep="\t")
        return p("y.tsv"), labels, (), True
    if kind == "parquet_one":
        pd.DataFrame({"label": labels}).to_parquet(p("y.parquet"))
        return p("y.parquet"), labels, (), True
    if kind == "parquet_member":
        pd.DataFrame({"id": np.arange(N), "value": values}).to_parquet(p("ym.parquet"))
        return p("ym.parquet") + ":value", values, (), False
    if kind == "dataspec":
        pd.DataFrame({"id": np.arange(N), "label": labels}).to_csv(p("yd.csv"), index=False)
        return open_data(p("yd.csv"), exclude=["id"]), labels, (), True
    if kind == "batches_tuple":
        batches = [(np.zeros((len(b), D)), b) for b in np.array_split(labels, 7)]
        return batches, labels, (), True
    if kind == "generator":
        return (b for b in np.array_split(values, 5)), values, (), False
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_targets_streams_its_values(kind, xy, tmp_path):
    _, labels, values = xy
    targets, expected, row_shape, integer = _targets(kind, labels, values, str(tmp_path))
    y = open_targets(targets, n_outputs=2)
    assert y.row_shape == row_shape
    assert (y.dtype.kind in "iu") == integer, y.dtype
    assert y.n_rows in (N, None)
    got = _all(y)
    assert got.shape == (N, *row_shape)
    assert got.dtype == y.dtype
    np.testing.assert_array_equal(got, expected)


def test_targets_stream_with_the_data_through_iter_chunks(xy, tmp_path):
    """x and y chunked together: each chunk's rows are the same rows of both; labels arrive as int32."""
    x, labels, _ = xy
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    xs, ys = open_xy(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), input_shape=(D,))
    chunks = list(
        iter_chunks(
            (xs, ys),
            batch_size=64,
            input_shape=((D,), ys.row_shape),
            dtype=(np.float32, chunk_dtype(ys.dtype)),
        )
    )
    assert [c.xs[1].dtype for c in chunks] == [np.dtype(np.int32)] * len(chunks)
    got_x = np.concatenate([c.xs[0][c.mask] for c in chunks])
    got_y = np.concatenate([c.xs[1][c.mask] for c in chunks])
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, labels)


# ------------------------------------------------------------------------------ target column by name
@pytest.mark.parametrize("fmt", ["csv", "parquet", "frame", "dataspec"])
def test_target_column_by_name_is_read_and_dropped_from_the_features(fmt, xy, tmp_path):
    x, labels, values = xy
    frame = _frame(x, labels, values)
    if fmt == "csv":
        frame.to_csv(tmp_path / "d.csv", index=False, float_format="%.17g")
        data = str(tmp_path / "d.csv")
    elif fmt == "parquet":
        frame.to_parquet(tmp_path / "d.parquet")
        data = str(tmp_path / "d.parquet")
    elif fmt == "frame":
        data = frame
    else:
        frame.to_csv(tmp_path / "d.csv", index=False, float_format="%.17g")
        data = open_data(tmp_path / "d.csv", exclude=["value"])  # the CLI's --target-column form, plus an id
    if fmt == "dataspec":
        xs, ys = open_xy(data, "label", input_shape=(D,))
    else:
        xs, ys = open_xy(data, "label", input_shape=(D + 1,))  # "value" stays a feature here
    assert ys.dtype == np.int64 and ys.row_shape == () and ys.n_rows == N and xs.n_rows == N
    assert "label" not in (xs.feature_names or ())
    expected_x = x.astype(np.float64) if fmt == "dataspec" else np.column_stack([x, values])
    np.testing.assert_array_equal(_all(xs), expected_x)
    np.testing.assert_array_equal(_all(ys), labels)
    # several columns by name: (k,) per row, float when any column is
    y2 = open_targets(["label", "value"], data=data)
    assert y2.row_shape == (2,) and y2.dtype == np.float64
    np.testing.assert_array_equal(_all(y2), np.column_stack([labels, values]))


def test_target_column_by_name_needs_a_table_with_that_column(xy, tmp_path):
    x, labels, values = xy
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=r"targets='label' is not a file.*no named columns"):
        open_xy(str(tmp_path / "x.npy"), "label", input_shape=(D,))
    with pytest.raises(DataError, match="no data was given"):
        open_targets("label")
    _frame(x, labels, values).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"no column 'lable'.*a, b, c, label, value"):
        open_xy(str(tmp_path / "d.csv"), "lable", input_shape=(D + 1,))
    with pytest.raises(DataError, match="without a header line"):
        open_targets("label", data=str(tmp_path / "d.csv"), header=False)


# ------------------------------------------------------------------------------ integer labels, bad values
def test_integer_labels_stay_integers_and_continuous_values_stay_floats(tmp_path):
    pd.DataFrame({"y": [0, 2, 1, 2]}).to_csv(tmp_path / "i.csv", index=False)
    pd.DataFrame({"y": [0.0, 2.0, 1.0, 2.0]}).to_csv(tmp_path / "f.csv", index=False)  # written "0.0", ...
    pd.DataFrame({"y": [True, False, True, True]}).to_parquet(tmp_path / "b.parquet")
    assert open_targets(str(tmp_path / "i.csv")).dtype == np.int64
    assert open_targets(str(tmp_path / "f.csv")).dtype == np.float64
    assert open_targets(str(tmp_path / "b.parquet")).dtype == np.bool_
    assert chunk_dtype(open_targets(str(tmp_path / "i.csv")).dtype) == np.int32


def test_a_csv_column_read_as_labels_that_turns_continuous_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(_data, "_PEEK_ROWS", 5)  # the dtype is learnt from the first rows of a CSV column
    y = np.arange(40, dtype=np.float64)
    y[23] = 2.5
    with open(tmp_path / "y.csv", "w") as f:
        f.write("y\n" + "\n".join(f"{v:g}" for v in y) + "\n")
    source = open_targets(str(tmp_path / "y.csv"))
    assert source.dtype == np.int64
    with pytest.raises(DataError, match=r"y\.csv.*row 23, column 'y' holds 2\.5.*whole numbers"):
        _all(source, rows=8)


@pytest.mark.parametrize("fmt", ["csv", "csv_column_of_data", "parquet", "npy", "array", "frame"])
def test_nan_in_targets_is_refused_naming_the_row(fmt, tmp_path):
    y = np.arange(50, dtype=np.float64)
    y[37] = np.nan
    x = np.zeros((50, 2))
    frame = pd.DataFrame({"p": x[:, 0], "q": x[:, 1], "y": y})
    if fmt == "csv":
        pd.DataFrame({"y": y}).to_csv(tmp_path / "y.csv", index=False)  # an empty field
        source, where = open_targets(str(tmp_path / "y.csv")), "y.csv"
    elif fmt == "csv_column_of_data":
        frame.to_csv(tmp_path / "d.csv", index=False)
        source, where = open_xy(str(tmp_path / "d.csv"), "y", input_shape=(2,))[1], "d.csv"
    elif fmt == "parquet":
        frame.to_parquet(tmp_path / "d.parquet")
        source, where = open_targets("y", data=str(tmp_path / "d.parquet")), "d.parquet"
    elif fmt == "npy":
        np.save(tmp_path / "y.npy", y)
        source, where = open_targets(str(tmp_path / "y.npy")), "y.npy"
    elif fmt == "array":
        source, where = open_targets(y), "array"
    else:
        source, where = open_targets("y", data=frame), "DataFrame"
    column = "" if fmt in ("npy", "array") else ", column 'y'"
    with pytest.raises(DataError, match=rf"{where}.* row 37{column} holds nan; targets must be finite"):
        _all(source, rows=16)


def test_nan_targets_with_skip_mask_their_rows(tmp_path):
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10, dtype=np.float64)
    y[4] = np.inf
    xs, ys = open_xy(x, y, input_shape=(2,), nan_policy="skip")
    (chunk,) = iter_chunks((xs, ys), batch_size=16, input_shape=((2,), ()), nan_policy="skip")
    assert chunk.n_valid == 9 and chunk.n_skipped == 1 and not chunk.mask[4]


def test_text_in_a_target_column_is_refused_naming_row_and_column(tmp_path):
    with open(tmp_path / "y.csv", "w") as f:
        f.write("x,y\n" + "".join(f"{i},{'cat' if i == 6 else i}\n" for i in range(10)))
    with pytest.raises(DataError, match=r"y\.csv' row 6, column 'y': 'cat' is not a number"):
        open_targets("y", data=str(tmp_path / "y.csv"))


def test_targets_per_row_shape_must_fit_n_outputs():
    with pytest.raises(DataError, match=r"hold \[3\] values per row; the model has 2 outputs"):
        open_targets(np.zeros((5, 3)), n_outputs=2)
    assert open_targets(np.zeros((5, 2)), n_outputs=2).row_shape == (2,)


# ------------------------------------------------------------------------------ alignment
def test_misaligned_row_counts_are_refused_naming_both_sources(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((100, 2), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(99))
    with pytest.raises(
        DataError,
        match=r"not row-aligned: the targets \(.*y\.npy'?\) have 99 rows but the data \(.*x\.npy\) has 100",
    ):
        open_xy(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), input_shape=(2,))
    # an opened Source as the data (the first input of a multi-input model): checked against the targets too
    x0 = open_source(str(tmp_path / "x.npy"), input_shape=(2,))
    with pytest.raises(DataError, match="have 99 rows but the data"):
        open_xy(x0, str(tmp_path / "y.npy"), input_shape=(2,))
    with pytest.raises(DataError, match="no named columns"):
        open_xy(x0, "label", input_shape=(2,))
    assert open_xy(x0, np.zeros(100), input_shape=(2,))[0] is x0
    # counts known only while streaming: iter_chunks names both
    xs, ys = open_xy(str(tmp_path / "x.npy"), [np.zeros(60), np.zeros(30)], input_shape=(2,))
    with pytest.raises(
        DataError, match=r"not row-aligned: .*x\.npy has 100 rows but targets: list of batches has 90"
    ):
        list(iter_chunks((xs, ys), batch_size=32, input_shape=((2,), ())))


# ------------------------------------------------------------------------------ CSV row counts
CSV_LAYOUTS = {
    "plain": b"a,b\n1,2\n3,4\n5,6\n",
    "no_final_newline": b"a,b\n1,2\n3,4\n5,6",
    "crlf": b"a,b\r\n1,2\r\n3,4\r\n5,6\r\n",
    "crlf_no_final_newline": b"a,b\r\n1,2\r\n3,4\r\n5,6",
    "blank_lines_at_end": b"a,b\n1,2\n3,4\n5,6\n\n\n",
    "crlf_blank_lines": b"a,b\r\n1,2\r\n\r\n3,4\r\n5,6\r\n\r\n",
    "blank_and_space_lines_inside": b"a,b\n1,2\n\n  \n3,4\n\t\n5,6\n",
    "leading_blank_lines": b"\n\na,b\n1,2\n3,4\n5,6\n",
    "spaces_after_last_line": b"a,b\n1,2\n3,4\n5,6\n   ",
    "quoted_header": b'"a","b"\n1,2\n3,4\n5,6\n',
    "cr_only": b"a,b\r1,2\r3,4\r5,6\r",
    "no_header": b"1,2\n3,4\n5,6\n",
    "row_of_empty_fields": b"a,b\n1,2\n,\n5,6\n",
}


@pytest.mark.parametrize("layout", sorted(CSV_LAYOUTS))
@pytest.mark.parametrize("block", [1 << 24, 3])
def test_csv_row_count_equals_the_rows_the_reader_yields(layout, block, tmp_path, monkeypatch):
    monkeypatch.setattr(_data, "_COUNT_BLOCK", block)  # also counts across many tiny read blocks
    _data._csv_row_count.cache_clear()
    path = tmp_path / f"{layout}.csv"
    path.write_bytes(CSV_LAYOUTS[layout])
    expected = 3
    source = open_source(str(path), input_shape=(2,), feature_names=None)
    assert source.n_rows == expected
    if layout == "row_of_empty_fields":  # counted as a row (pandas reads it as NaN, NaN)
        assert sum(len(b) for b in source.blocks(2)) == 3
        return
    assert sum(len(b) for b in source.blocks(2)) == expected
    header = layout != "no_header"
    assert csv_row_count(path, header=header) == expected


def test_csv_row_count_is_unknown_when_a_quoted_field_may_span_lines(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'a,b\n"1\n",2\n3,4\n')
    assert csv_row_count(path, header=True) is None
    assert csv_row_count(str(path) + ".gz", header=True) is None  # gz: not counted (no file needed)


def test_csv_row_count_matches_pandas_on_a_larger_file(tmp_path):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(5000, 4)), columns=list("wxyz"))
    frame.to_csv(tmp_path / "big.csv", index=False, lineterminator="\r\n")
    src = open_source(str(tmp_path / "big.csv"), input_shape=(4,))
    assert src.n_rows == 5000 == sum(len(b) for b in src.blocks(777))


# ------------------------------------------------------------------------------ feature names
@pytest.mark.parametrize("kind", ["array", "npy", "npz", "headerless_csv"])
def test_user_feature_names_for_data_without_names(kind, tmp_path):
    x = np.arange(1, 13, dtype=np.float32).reshape(4, 3)  # a first line 0,1,2 would read as a header
    if kind == "array":
        data = x
    elif kind == "npy":
        np.save(tmp_path / "x.npy", x)
        data = str(tmp_path / "x.npy")
    elif kind == "npz":
        np.savez(tmp_path / "x.npz", x=x)
        data = str(tmp_path / "x.npz")
    else:
        np.savetxt(tmp_path / "x.csv", x, delimiter=",", fmt="%g")
        data = str(tmp_path / "x.csv")
    src = open_source(data, input_shape=(3,), feature_names=["age", "income", "height"])
    assert src.feature_names == ("age", "income", "height")
    np.testing.assert_array_equal(_all(src), x)
    with pytest.raises(
        DataError, match=r"feature_names has 2 names \('age', 'income'\).*last input axis has 3"
    ):
        open_source(data, input_shape=(3,), feature_names=["age", "income"])


def test_feature_names_name_the_last_axis_of_sequence_inputs():
    x = np.zeros((5, 4, 2), np.float32)
    assert open_source(x, input_shape=(4, 2), feature_names=["u", "v"]).feature_names == ("u", "v")
    with pytest.raises(DataError, match="last input axis has 2"):
        open_source(x, input_shape=(4, 2), feature_names=["u", "v", "w", "z"])


def test_parse_feature_names_from_text_and_files(tmp_path):
    assert parse_feature_names("age, income,height") == ("age", "income", "height")
    (tmp_path / "names.txt").write_text("age\n income \n\nheight\n")
    assert parse_feature_names(str(tmp_path / "names.txt")) == ("age", "income", "height")
    with pytest.raises(ArgumentError, match="'age' appears twice"):
        parse_feature_names("age,income,age")
    with pytest.raises(ArgumentError, match="name 1 is empty"):
        parse_feature_names("age,,income")
    with pytest.raises(DataFileNotFoundError, match="missing.txt"):
        parse_feature_names(str(tmp_path / "missing.txt"))
