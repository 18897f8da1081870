"""Data sources -> padded, masked chunks: every kind of source yields exactly the rows it was made from."""

from __future__ import annotations

import ast
import itertools
import os
import stat
import sys
import tempfile
import tracemalloc

import jax
import numpy as np
import pytest
from _onnx_graphs import single_input_model
from onnx import helper, numpy_helper

import jaxsens
from jaxsens import ArgumentError, DataError, open_data, read_targets
from jaxsens._data import FLOAT32_MAX, iter_chunks, open_source
from jaxsens.errors import DataFileNotFoundError

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
        return p("h.csv"), N, NAMES  # n_rows from a count of the lines, minus the header
    if kind == "csv_plain":
        _write_csv(p("n.csv"), arr, None)
        return p("n.csv"), N, None
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
    with pytest.raises(DataError, match=r"bad.npy' has shape \[1003, 3\]"):
        open_source(str(tmp_path / "bad.npy"), input_shape=(D,))
    with pytest.raises(DataFileNotFoundError, match="does not exist"):
        open_source(str(tmp_path / "missing.npy"), input_shape=(D,))
    np.savez(tmp_path / "z.npz", x=rows)
    with pytest.raises(DataError, match=r"no array 'nope'; it holds \['x'\]"):
        open_source(str(tmp_path / "z.npz") + ":nope", input_shape=(D,))
    (tmp_path / "x.h5").write_bytes(b"")
    with pytest.raises(DataError, match="unknown extension"):
        open_source(str(tmp_path / "x.h5"), input_shape=(D,))
    _write_csv(tmp_path / "five.csv", np.hstack([rows, rows[:, :1]]), [*NAMES, "extra"])
    with pytest.raises(
        DataError, match=r"has 5 columns \(alpha, beta, gamma, delta, extra\); the model expects 4"
    ):
        open_source(str(tmp_path / "five.csv"), input_shape=(D,))
    with open(tmp_path / "text.csv", "w") as f:
        f.write("a,b,c,d\n1,2,3,4\n1,2,3,x\n")
    with pytest.raises(DataError, match=r"text.csv' row 1, column 'd': 'x' is not a number"):
        list(
            iter_chunks(
                open_source(str(tmp_path / "text.csv"), input_shape=(D,)), batch_size=4, input_shape=(D,)
            )
        )
    with pytest.raises(ArgumentError, match="batch_size must be a positive integer"):
        list(iter_chunks(open_source(rows, input_shape=(D,)), batch_size=0, input_shape=(D,)))
    with pytest.raises(jaxsens.errors.ArgumentTypeError, match="got dict"):
        open_source({"x": rows}, input_shape=(D,))


def test_nan_rows_raise_with_their_index_or_are_skipped_and_counted(rows):
    dirty = rows.copy()
    dirty[357, 2] = np.nan
    dirty[358, 0] = np.inf
    dirty[1001, 1] = -np.inf
    with pytest.raises(
        DataError,
        match=r"data row 357 holds NaN or Inf \(rows 357, 358; first in column 2 of .*nan_policy='skip'",
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
    with pytest.raises(ArgumentError, match="nan_policy must be 'raise' or 'skip'"):
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


# ------------------------------------------------------------------------------ the error family
def test_every_raise_in_the_data_module_uses_the_error_family():
    """Static check: a bad input reaches the user as a JaxsensError subclass, never a bare built-in."""
    import jaxsens._data as mod

    family = {"DataError", "DataFileNotFoundError", "ArgumentError", "ArgumentTypeError", "MissingExtraError"}
    with open(mod.__file__) as f:
        tree = ast.parse(f.read())
    raised = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            raised.append(exc.id if isinstance(exc, ast.Name) else ast.unparse(exc))
    assert raised and set(raised) <= family, sorted(set(raised) - family)


# ------------------------------------------------------------------------------------- a model
N_IN, N_HID = 4, 6


def _onnx_mlp():
    """A 4 -> 6 (tanh) -> 1 MLP as an ONNX graph (every method, the CLI and ``intermediates`` accept it)."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(size=(N_IN, N_HID)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=N_HID).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(size=(N_HID, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=1).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="dense"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="dense_bias"),
        helper.make_node("Tanh", ["h1"], ["h"], name="act"),
        helper.make_node("MatMul", ["h", "w2"], ["o0"], name="out"),
        helper.make_node("Add", ["o0", "b2"], ["y"], name="out_bias"),
    ]
    return single_input_model(nodes, inits, n_in=N_IN, n_out=1)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """``(model, path of the .onnx file)``."""
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    path.write_bytes(_onnx_mlp().SerializeToString())
    return jaxsens.load_model(str(path)), str(path)


# --------------------------------------------------------------------------------------- headers
@pytest.mark.parametrize(
    "first_line, is_header",
    [
        ("a,b,c,d", True),  # names
        ("0,1,2,3", True),  # pandas' labels for unnamed columns
        (" 0, 1, 2, 3", True),
        ("x0,1,2,3", True),  # one field that is not a number
        ("1,2,3,4", False),  # numbers, not 0..n-1
        ("0,1,2,4", False),
        ("1,0,2,3", False),
        ("0.0,1.0,2.0,3.0", False),  # numbers that are not the literal labels
        ("0.5,,NA,nan", False),  # missing values are numbers
        ("-1e3,inf,2,3", False),
    ],
)
def test_the_csv_header_rule(first_line, is_header, tmp_path):
    body = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    path = tmp_path / "h.csv"
    with open(path, "w") as f:
        f.write(first_line + "\n")
        np.savetxt(f, body, fmt="%.17g", delimiter=",")
    got = jaxsens._data.read_rows(str(path), input_shape=(4,))
    assert got.shape == (3 if is_header else 4, 4)
    np.testing.assert_array_equal(got[-3:], body)  # the data rows, whatever the first line was
    if is_header and not all(jaxsens._data._is_number(f) for f in first_line.split(",")):
        with pytest.raises(DataError, match=r"row 0, column \d+: '.*' is not a number"):
            jaxsens._data.read_rows(open_data(path, header=False), input_shape=(4,))
        return
    forced = jaxsens._data.read_rows(open_data(path, header=not is_header), input_shape=(4,))
    assert forced.shape == (4 if is_header else 3, 4)  # header= overrides the rule both ways


def test_pandas_to_csv_round_trip_has_n_rows_and_the_arrays_importances(rows, mlp, tmp_path):
    import pandas as pd

    model, _ = mlp
    path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(path, index=False)  # header line "0,1,2,3"
    assert path.read_text().splitlines()[0] == "0,1,2,3"
    src = open_source(str(path), input_shape=(D,))
    assert src.feature_names is None  # pandas' default labels name no features
    got = np.concatenate([c.xs[c.mask] for c in iter_chunks(src, batch_size=B, input_shape=(D,))])
    np.testing.assert_array_equal(got, rows)  # float32 -> shortest repr -> float32 is exact
    from_csv = jaxsens.jacobian_importance(model, str(path), batch_size=128)
    from_array = jaxsens.jacobian_importance(model, rows, batch_size=128)
    assert from_csv.n_samples == N and from_csv.feature_names == from_array.feature_names
    np.testing.assert_array_equal(from_csv.mean_abs, from_array.mean_abs)  # same rows, same chunks
    headless = jaxsens.jacobian_importance(model, open_data(path, header=False), batch_size=128)
    assert headless.n_samples == N + 1  # the user said the first line is data


def test_the_header_rule_holds_for_gzip_tsv_and_a_byte_order_mark(tmp_path):
    import pandas as pd

    x = np.arange(12.0).reshape(3, 4) + 0.5
    pd.DataFrame(x).to_csv(tmp_path / "g.csv.gz", index=False)  # gzip, header 0,1,2,3
    pd.DataFrame(x).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    with open(tmp_path / "bom.csv", "w", encoding="utf-8-sig") as f:  # no header; a BOM before "0.5"
        np.savetxt(f, x, fmt="%.17g", delimiter=",")
    for name in ("g.csv.gz", "t.tsv", "bom.csv"):
        np.testing.assert_array_equal(jaxsens._data.read_rows(str(tmp_path / name), input_shape=(4,)), x)


def test_pandas_default_labels_name_no_features_but_real_names_do(rows):
    import pandas as pd

    assert open_source(pd.DataFrame(rows), input_shape=(D,)).feature_names is None
    assert open_source(pd.DataFrame(rows, columns=NAMES), input_shape=(D,)).feature_names == NAMES


def test_open_data_options_are_checked_when_given(rows, tmp_path):
    np.save(tmp_path / "x.npy", rows)
    with pytest.raises(ArgumentError, match="header=False applies to CSV files only"):
        open_data(tmp_path / "x.npy", header=False)
    with pytest.raises(ArgumentError, match="exclude= names table columns"):
        open_data(tmp_path / "x.npy", exclude=["y"])
    with pytest.raises(jaxsens.errors.ArgumentTypeError, match="header must be None"):
        open_data(tmp_path / "x.npy", header="no")
    with pytest.raises(jaxsens.errors.ArgumentTypeError, match="takes the path"):
        open_data(rows)
    with pytest.raises(DataFileNotFoundError, match="nope.csv' does not exist"):
        open_data(tmp_path / "nope.csv")
    _write_csv(tmp_path / "t.csv", np.hstack([rows, rows[:, :1]]), [*NAMES, "target"])
    spec = open_data(tmp_path / "t.csv", exclude=["target"])
    np.testing.assert_array_equal(np.asarray(spec, np.float32), rows)
    with pytest.raises(ArgumentError, match=r"exclude= names \['tgt'\], which are not columns"):
        np.asarray(open_data(tmp_path / "t.csv", exclude=["tgt"]))


def _method_calls(y):
    key = jax.random.key(0)
    return {
        "jacobian_importance": (lambda m, d: jaxsens.jacobian_importance(m, d, batch_size=64), "mean_abs"),
        "partial_derivatives": (lambda m, d: jaxsens.partial_derivatives(m, d, batch_size=64), "importance"),
        "perturbation_importance": (
            lambda m, d: jaxsens.perturbation_importance(m, d, key=key, batch_size=64),
            "importance",
        ),
        "permutation_importance": (
            lambda m, d: jaxsens.permutation_importance(m, d, y, key=key, n_repeats=2),
            "importances_mean",
        ),
        "input_perturbation": (lambda m, d: jaxsens.input_perturbation(m, d, y, key=key), "importance"),
        "improved_stepwise": (lambda m, d: jaxsens.improved_stepwise(m, d, y), "importance"),
        "lek_profile": (lambda m, d: jaxsens.lek_profile(m, d, steps=5), "importance"),
        "stepwise": (
            lambda m, d: jaxsens.stepwise(m, d, y, key=key, epochs=3, max_steps=1, direction="backward"),
            "importance",
        ),
    }


METHOD_NAMES = list(_method_calls(None))


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_accepts_open_data(method, mlp, tmp_path):
    """``open_data(path, header=...)`` works wherever data is accepted, with the array's result."""
    model, _ = mlp
    x = np.random.default_rng(1).normal(size=(120, N_IN)).astype(np.float32)
    x[0] = np.arange(N_IN)  # the first line reads 0,1,2,3: only header=False keeps it as data
    np.savetxt(tmp_path / "d.csv", x, fmt="%.9g", delimiter=",")
    call, field = _method_calls(model(x)[:, 0])[method]
    from_file = call(model, open_data(tmp_path / "d.csv", header=False))
    from_array = call(model, x.astype(np.float64))  # open_data gives float64, as parsed
    a, b = np.asarray(getattr(from_file, field)), np.asarray(getattr(from_array, field))
    np.testing.assert_allclose(
        a, b, rtol=1e-6, atol=1e-7 * float(np.nanmax(np.abs(b)))
    )  # same rows and chunks


# ---------------------------------------------------------------------------------------- dtypes
def _bad_container(container: str, kind: str, tmp):
    """``rows`` of a non-real ``kind`` in ``container``; returns the data to open."""
    import pandas as pd

    n = 6
    base = np.arange(n * D, dtype=np.float64).reshape(n, D)
    values = {
        "complex": base + 1j,
        "datetime": np.datetime64("2024-01-01") + base.astype("timedelta64[D]"),
        "timedelta": base.astype("timedelta64[s]"),
        "numeric strings": base.astype(str),  # "1.5"-like strings: refused, not parsed
        "object": base.astype(object),
    }[kind]
    path = os.path.join(tmp, "bad")
    if container == "array":
        return values
    if container == "list of batches":
        return [values[:3], values[3:]]
    if container == "DataFrame":
        return pd.DataFrame({f"c{j}": values[:, j] for j in range(D)})
    if container == "npy":
        np.save(path + ".npy", values, allow_pickle=True)
        return path + ".npy"
    if container == "npz":
        np.savez(path + ".npz", x=values, allow_pickle=True)
        return path + ".npz"
    if container == "parquet":
        frame = pd.DataFrame({f"c{j}": values[:, j] for j in range(D)})
        frame.to_parquet(path + ".parquet")
        return path + ".parquet"
    raise AssertionError(container)


BAD_KINDS = ["complex", "datetime", "timedelta", "numeric strings", "object"]
CASES = [(c, k) for c in ("array", "list of batches", "DataFrame", "npy", "npz") for k in BAD_KINDS] + [
    ("parquet", k)
    for k in ("datetime", "timedelta", "numeric strings")  # Parquet has no complex / object
]
MESSAGES = {
    "complex": "imaginary part would be lost",
    "datetime": "dates or durations",
    "timedelta": "dates or durations",
    "numeric strings": "strings|Python objects or text",
    "object": "Python objects",
}


@pytest.mark.parametrize("container, kind", CASES)
def test_non_real_data_is_refused_in_every_container(container, kind, tmp_path):
    data = _bad_container(container, kind, str(tmp_path))
    with pytest.raises(DataError, match=MESSAGES[kind]):
        src = open_source(data, input_shape=(D,))
        list(iter_chunks(src, batch_size=4, input_shape=(D,)))
    if isinstance(data, str) or kind == "object":
        return
    model = jaxsens.Model.from_function(lambda p, x: x.sum(keepdims=True), {}, input_shape=(D,))
    with pytest.raises(DataError, match=MESSAGES[kind]):
        model(
            np.asarray(data)
            if container == "array"
            else data[0]
            if isinstance(data, list)
            else data.to_numpy()
        )


@pytest.mark.parametrize(
    "line, match",
    [
        ("1,2,3,(1+2j)", r"row 1, column 'd': '\(1\+2j\)' is not a number"),
        ("1,2,3,2024-01-01", r"row 1, column 'd': '2024-01-01' is not a number"),
        ("1,2,3,12:30", r"row 1, column 'd': '12:30' is not a number"),
    ],
)
def test_non_numeric_csv_columns_are_refused_naming_row_and_value(line, match, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("a,b,c,d\n1,2,3,4\n" + line + "\n")
    with pytest.raises(DataError, match=match):
        list(iter_chunks(open_source(str(path), input_shape=(D,)), batch_size=4, input_shape=(D,)))


def test_bool_and_integer_data_are_read_as_numbers(tmp_path):
    import pandas as pd

    ints = np.arange(5 * D).reshape(5, D)
    flags = ints % 3 == 0
    pd.DataFrame({f"c{j}": flags[:, j] for j in range(D)}).to_parquet(tmp_path / "b.parquet")
    np.save(tmp_path / "u.npy", ints.astype(np.uint16))
    cases = [
        (ints.astype(np.int8), ints),
        (ints.astype(np.uint64), ints),
        (flags, flags),
        (pd.DataFrame({f"c{j}": pd.array(ints[:, j], dtype="Int64") for j in range(D)}), ints),
        (pd.DataFrame({f"c{j}": flags[:, j] for j in range(D)}), flags),
        (str(tmp_path / "b.parquet"), flags),
        (str(tmp_path / "u.npy"), ints),
    ]
    for data, expected in cases:
        (chunk,) = iter_chunks(open_source(data, input_shape=(D,)), batch_size=8, input_shape=(D,))
        np.testing.assert_array_equal(chunk.xs[:5], expected.astype(np.float32))


# --------------------------------------------------------------------------------- float32 range
def _big(container: str, tmp: str):
    """Float64 rows with 1e39 at row 7, column 2 (finite in float64, inf in float32)."""
    import pandas as pd

    x = np.random.default_rng(2).normal(size=(20, D))
    x[7, 2] = 1e39
    path = os.path.join(tmp, "big")
    if container == "array":
        return x
    if container == "list of batches":
        return [x[:5], x[5:]]
    if container == "npy":
        np.save(path + ".npy", x)
        return path + ".npy"
    if container == "csv":
        pd.DataFrame(x, columns=NAMES).to_csv(path + ".csv", index=False)
        return path + ".csv"
    if container == "DataFrame":
        return pd.DataFrame(x, columns=NAMES)
    if container == "parquet":
        pd.DataFrame(x, columns=NAMES).to_parquet(path + ".parquet")
        return path + ".parquet"
    raise AssertionError(container)


@pytest.mark.parametrize("container", ["array", "list of batches", "npy", "csv", "DataFrame", "parquet"])
@pytest.mark.parametrize("nan_policy", ["raise", "skip"])
def test_values_beyond_float32_are_named_not_called_nan(container, nan_policy, tmp_path):
    data = _big(container, str(tmp_path))
    with pytest.raises(DataError, match=r"row 7, column 2.*value 1e\+39 is outside the float32 range") as e:
        list(
            iter_chunks(
                open_source(data, input_shape=(D,)), batch_size=4, input_shape=(D,), nan_policy=nan_policy
            )
        )
    assert "NaN" not in str(e.value)


def test_float32_range_edges_and_model_calls(mlp):
    model, _ = mlp
    x = np.random.default_rng(4).normal(size=(9, N_IN))
    x[3, 1] = FLOAT32_MAX  # the largest float32 is fine
    x[4, 0] = -FLOAT32_MAX
    x[5, 2] = 1e-45  # subnormal / underflow is not an overflow
    (chunk,) = iter_chunks(open_source(x, input_shape=(N_IN,)), batch_size=16, input_shape=(N_IN,))
    assert np.isfinite(chunk.xs).all()
    x[6, 3] = -3.5e38
    with pytest.raises(DataError, match=r"xs row 6, column 3: value -3.5e\+38 is outside the float32 range"):
        model(x)
    with pytest.raises(DataError, match=r"xs row 6, column 3: value -3.5e\+38 is outside the float32 range"):
        model.intermediates(x)
    with pytest.raises(DataError, match="imaginary part would be lost"):
        model(x.astype(np.complex128))
    ok = np.random.default_rng(5).normal(size=(9, N_IN))
    np.testing.assert_array_equal(model(ok), model(ok.astype(np.float32)))  # in range: no change
    inter = model.intermediates(ok)
    assert all(np.isfinite(v).all() for v in inter.values())


# --------------------------------------------------------------------------- empty / bad files
def _empty(kind: str, tmp):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = os.path.join(tmp, "e")
    if kind in ("0-byte npy", "0-byte npz", "0-byte csv", "0-byte parquet", "0-byte csv.gz"):
        path = p + "." + kind.split()[1]
        open(path, "wb").close()
        return path, r"is empty \(0 bytes\)"
    if kind == "blank csv":
        with open(p + ".csv", "w") as f:
            f.write("\n\n  \n")
        return p + ".csv", "is empty"
    if kind == "npz without arrays":
        np.savez(p + ".npz")
        return p + ".npz", "is empty: the archive holds no arrays"
    if kind == "csv header only":
        with open(p + ".csv", "w") as f:
            f.write("a,b,c,d\n")
        return p + ".csv", "has a header line .* but no data rows"
    if kind == "pandas csv of 0 rows":
        pd.DataFrame(np.zeros((0, D))).to_csv(p + ".csv", index=False)
        return p + ".csv", "has a header line .* but no data rows"
    if kind == "parquet of 0 rows":
        pq.write_table(pa.table({n: np.zeros(0) for n in NAMES}), p + ".parquet")
        return p + ".parquet", "has no rows"
    if kind == "npy of 0 rows":
        np.save(p + ".npy", np.zeros((0, D)))
        return p + ".npy", "has no rows"
    if kind == "npz of 0 rows":
        np.savez(p + ".npz", x=np.zeros((0, D)))
        return p + ".npz", "has no rows"
    raise AssertionError(kind)


EMPTY = [
    "0-byte npy", "0-byte npz", "0-byte csv", "0-byte parquet", "0-byte csv.gz", "blank csv", "npz without arrays",
    "csv header only", "pandas csv of 0 rows", "parquet of 0 rows", "npy of 0 rows", "npz of 0 rows",
]  # fmt: skip


@pytest.mark.parametrize("kind", EMPTY)
def test_empty_files_say_so_and_name_the_file(kind, tmp_path):
    path, match = _empty(kind, str(tmp_path))
    with pytest.raises(DataError, match=match) as e:
        open_source(path, input_shape=(D,))
    assert os.path.basename(path) in str(e.value)
    with pytest.raises(DataError, match=match):  # the targets reader shares the checks
        read_targets(path, column=None if "header" not in kind else "a")


def test_zero_row_arrays_and_frames_are_refused(rows):
    import pandas as pd

    for data in (rows[:0], pd.DataFrame(rows[:0], columns=NAMES)):
        with pytest.raises(DataError, match="has no rows"):
            open_source(data, input_shape=(D,))
    model = jaxsens.Model.from_function(lambda p, x: x.sum(keepdims=True), {}, input_shape=(D,))
    with pytest.raises(DataError, match="has no usable rows|has no rows"):
        jaxsens.jacobian_importance(model, iter([rows[:0]]))  # an iterable: known empty only at the end


def test_folders_pipes_and_corrupt_files_are_named(rows, tmp_path):
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match=r"folder.csv' is a folder, not a file"):
        open_source(str(tmp_path / "folder.csv"), input_shape=(D,))
    with pytest.raises(DataError, match="is a folder"):
        open_data(tmp_path / "folder.csv")
    os.mkfifo(tmp_path / "pipe.csv")  # opening a FIFO for reading would block: refused before opening
    with pytest.raises(DataError, match=r"pipe.csv' is not a regular file"):
        open_source(str(tmp_path / "pipe.csv"), input_shape=(D,))
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    with pytest.raises(DataError, match=r"junk.npy' is not a valid .npy array"):
        open_source(str(tmp_path / "junk.npy"), input_shape=(D,))
    np.save(tmp_path / "cut.npy", rows)
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.npy' is truncated: its header promises 1003 rows"):
        list(
            iter_chunks(
                open_source(str(tmp_path / "cut.npy"), input_shape=(D,)), batch_size=B, input_shape=(D,)
            )
        )
    (tmp_path / "junk.npz").write_bytes(b"PK not really a zip")
    with pytest.raises(DataError, match=r"junk.npz' is not a valid .npz archive"):
        open_source(str(tmp_path / "junk.npz"), input_shape=(D,))
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match=r"junk.parquet' is not a valid Parquet file"):
        open_source(str(tmp_path / "junk.parquet"), input_shape=(D,))
    (tmp_path / "bin.csv").write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataError, match=r"bin.csv' is not a readable text CSV file"):
        open_source(str(tmp_path / "bin.csv"), input_shape=(D,))
    (tmp_path / "ragged.csv").write_text("a,b,c,d\n1,2,3,4\n1,2,3,4,5,6\n")
    with pytest.raises(DataError, match=r"ragged.csv' cannot be parsed near data row"):
        list(
            iter_chunks(
                open_source(str(tmp_path / "ragged.csv"), input_shape=(D,)), batch_size=4, input_shape=(D,)
            )
        )


def _open_as(uid: int, path: str) -> tuple[int, str]:
    """Open ``path`` as data in a forked child running as ``uid``; returns (exit code, message)."""
    import time
    import warnings

    read, write = os.pipe()
    with warnings.catch_warnings():  # the child touches no JAX state: only os / open in jaxsens._data
        warnings.simplefilter("ignore", RuntimeWarning)
        pid = os.fork()
    if pid == 0:  # child: no JAX, only the file checks of jaxsens._data
        code = 1
        try:
            os.close(read)
            os.setgid(uid)
            os.setuid(uid)
            try:
                open_source(path, input_shape=(D,))
                msg, code = "opened", 0
            except DataError as e:
                msg, code = str(e), 3
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                msg, code = f"{type(e).__name__}: {e}", 4
            os.write(write, msg.encode()[:4000])
        finally:
            os._exit(code)
    os.close(write)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:  # never hang the suite on a stuck child
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child opening the file did not finish in 60 s")
        time.sleep(0.05)
    with os.fdopen(read, "rb") as f:
        msg = f.read().decode()
    return os.waitstatus_to_exitcode(done[1]), msg


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork and setuid")
def test_permission_denied_names_the_file(rows):
    """A chmod-000 file, opened by a user who really cannot read it.

    Tests run as root here, whom permissions do not stop, so the open happens in a forked child that drops to
    the ``nobody`` user (a real EACCES from the kernel, no mock). The folder is made under /tmp with mode 0755
    because pytest's tmp_path lives in a 0700 folder that ``nobody`` cannot enter.
    """
    folder = tempfile.mkdtemp(prefix="jaxsens-perm-")
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "secret.npy")
        np.save(path, rows)
        os.chmod(path, 0)
        if os.geteuid() == 0:
            code, msg = _open_as(65534, path)
        else:
            try:
                open_source(path, input_shape=(D,))
                code, msg = 0, "opened"
            except DataError as e:
                code, msg = 3, str(e)
        assert code == 3, msg
        assert "secret.npy" in msg and "permission denied" in msg
        os.chmod(folder, 0o700)  # a folder on the path that cannot be searched
        os.chmod(path, 0o644)
        if os.geteuid() == 0:
            code, msg = _open_as(65534, path)
            assert code == 3 and "permission denied" in msg and "secret.npy" in msg, msg
    finally:
        os.chmod(folder, 0o755)
        for name in os.listdir(folder):
            os.chmod(os.path.join(folder, name), stat.S_IRUSR | stat.S_IWUSR)
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


# ------------------------------------------------------------------------------------ scale="std"
def test_scale_std_refuses_one_row_and_constant_columns(mlp, tmp_path, capsys):
    from jaxsens.cli import main

    model, path = mlp
    x = np.random.default_rng(6).normal(size=(50, N_IN)).astype(np.float32)
    with pytest.raises(DataError, match="needs at least 2 rows; the data has 1 usable row"):
        jaxsens.jacobian_importance(model, x[:1], scale="std")
    const = x.copy()
    const[:, 2] = 0.25
    with pytest.raises(DataError, match=r"feature 'x2' \(column 2\) is constant over the 50 rows \(std 0\)"):
        jaxsens.jacobian_importance(model, const, scale="std")
    ok = jaxsens.jacobian_importance(model, x, scale="std")  # the usual case still works
    plain = jaxsens.jacobian_importance(model, x)
    np.testing.assert_allclose(ok.mean_abs, plain.mean_abs * x.std(axis=0, ddof=1), rtol=1e-5)
    np.save(tmp_path / "one.npy", x[:1])
    code = main(
        [
            "importance",
            path,
            str(tmp_path / "one.npy"),
            "--scale",
            "std",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--no-plot",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "needs at least 2 rows" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------- targets
def _targets(kind: str, y: np.ndarray, tmp: str):
    """A targets file of ``kind`` holding ``y``; returns (what to pass, column=)."""
    import pandas as pd

    p = os.path.join(tmp, "y")
    if kind == "npy":
        np.save(p + ".npy", y)
        return p + ".npy", None
    if kind == "npz first":
        np.savez(p + ".npz", y=y, other=np.zeros(3))
        return p + ".npz", None
    if kind == "npz:name":
        np.savez(p + "2.npz", other=np.zeros(3), target=y)
        return p + "2.npz:target", None
    if kind == "csv one column":
        pd.DataFrame({"target": y}).to_csv(p + ".csv", index=False)
        return p + ".csv", None
    if kind == "csv no header":
        np.savetxt(p + "n.csv", y, fmt="%.9g")
        return p + "n.csv", None
    if kind == "csv:column":
        pd.DataFrame({"id": np.arange(len(y)), "target": y}).to_csv(p + "c.csv", index=False)
        return p + "c.csv:target", None
    if kind == "csv column=":
        pd.DataFrame({"id": np.arange(len(y)), "target": y}).to_csv(p + "k.csv", index=False)
        return p + "k.csv", "target"
    if kind == "pandas Series csv":
        pd.Series(y).to_csv(p + "s.csv", index=False)  # header line "0"
        return p + "s.csv", None
    if kind == "parquet one column":
        pd.DataFrame({"target": y}).to_parquet(p + ".parquet")
        return p + ".parquet", None
    if kind == "parquet:column":
        pd.DataFrame({"target": y, "id": np.arange(len(y))}).to_parquet(p + "c.parquet")
        return p + "c.parquet:target", None
    raise AssertionError(kind)


TARGET_KINDS = [
    "npy", "npz first", "npz:name", "csv one column", "csv no header", "csv:column", "csv column=",
    "pandas Series csv", "parquet one column", "parquet:column",
]  # fmt: skip


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_read_targets_from_every_format(kind, tmp_path):
    y = np.random.default_rng(7).normal(size=40).astype(np.float32)
    path, column = _targets(kind, y, str(tmp_path))
    got = read_targets(path, column=column)
    assert got.shape == (40,)
    np.testing.assert_array_equal(got.astype(np.float32), y)


def test_read_targets_refuses_what_it_cannot_read_faithfully(tmp_path):
    import pandas as pd

    pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(DataError, match=r"two.csv' has 2 columns \(a, b\); name the target column"):
        read_targets(tmp_path / "two.csv")
    with pytest.raises(DataError, match=r"has no column 'c'; columns: \['a', 'b'\]"):
        read_targets(tmp_path / "two.csv", column="c")
    pd.DataFrame({"label": ["cat", "dog"]}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(DataError, match=r"row 0, column 'label': 'cat' is not a number"):
        read_targets(tmp_path / "s.csv")
    np.save(tmp_path / "c.npy", np.ones(3, np.complex64))
    with pytest.raises(DataError, match="imaginary part would be lost"):
        read_targets(tmp_path / "c.npy")
    np.save(tmp_path / "s.npy", np.array(["1.5", "2"]))
    with pytest.raises(DataError, match="strings"):
        read_targets(tmp_path / "s.npy")
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan, 2.0]))
    with pytest.raises(DataError, match=r"nan.npy' row 1 holds nan; targets must be finite"):
        read_targets(tmp_path / "nan.npy")
    np.save(tmp_path / "big.npy", np.array([1.0, 2.0, 1e40]))
    with pytest.raises(DataError, match=r"row 2, column 0: value 1e\+40 is outside the float32 range"):
        read_targets(tmp_path / "big.npy")
    with pytest.raises(DataFileNotFoundError, match="does not exist"):
        read_targets(tmp_path / "none.npy")
    labels = read_targets(_targets("npy", np.array([0, 1, 1, 0]), str(tmp_path))[0])
    assert labels.dtype.kind == "i"  # class labels stay integers


def test_cli_targets_from_npz_csv_and_parquet(mlp, tmp_path, capsys):
    """``--targets`` reads every format (it raised AttributeError for .npz) with the library's result."""
    import pandas as pd

    from jaxsens.cli import main

    model, path = mlp
    x = np.random.default_rng(8).normal(size=(60, N_IN)).astype(np.float32)
    y = (model(x)[:, 0] + 0.1 * np.random.default_rng(9).normal(size=60)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    lib = jaxsens.permutation_importance(model, x, y, key=jax.random.key(0), n_repeats=2)
    for kind in (
        "npz first",
        "npz:name",
        "csv one column",
        "csv:column",
        "parquet one column",
        "parquet:column",
    ):
        targets, _ = _targets(kind, y, str(tmp_path))
        out = tmp_path / kind.replace(" ", "_").replace(":", "_")
        code = main(
            [
                "importance",
                path,
                str(tmp_path / "x.npy"),
                "--method",
                "permutation",
                "--n-repeats",
                "2",
                "--targets",
                targets,
                "--out",
                str(out),
                "--quiet",
                "--no-plot",
            ]
        )
        assert code == 0, (kind, capsys.readouterr().err)
        got = pd.read_csv(out / "importance.csv").sort_values("feature")
        np.testing.assert_allclose(got["importance"], lib.importances_mean, rtol=1e-6)
    np.save(tmp_path / "short.npy", y[:59])
    code = main(
        [
            "importance",
            path,
            str(tmp_path / "x.npy"),
            "--method",
            "permutation",
            "--targets",
            str(tmp_path / "short.npy"),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--no-plot",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "have 59 rows but the data" in err and "has 60" in err and "Traceback" not in err


def test_cli_no_header_and_numeric_headers(mlp, tmp_path, capsys):
    import pandas as pd

    from jaxsens.cli import main

    model, path = mlp
    x = np.random.default_rng(10).normal(size=(70, N_IN)).astype(np.float32)
    pd.DataFrame(x).to_csv(tmp_path / "d.csv", index=False)
    assert (
        main(
            [
                "importance",
                path,
                str(tmp_path / "d.csv"),
                "--out",
                str(tmp_path / "a"),
                "--quiet",
                "--no-plot",
            ]
        )
        == 0
    )
    assert "jacobian: 70 samples" in capsys.readouterr().out
    saved = jaxsens.load_result(tmp_path / "a" / "importance.json")
    assert saved.feature_names == model.feature_names  # "0".."3" name nothing
    assert (
        main(
            [
                "importance",
                path,
                str(tmp_path / "d.csv"),
                "--no-header",
                "--out",
                str(tmp_path / "b"),
                "--quiet",
                "--no-plot",
            ]
        )
        == 0
    )
    assert "jacobian: 71 samples" in capsys.readouterr().out  # the user said line 1 is data
    np.save(tmp_path / "x.npy", x)
    assert (
        main(
            [
                "importance",
                path,
                str(tmp_path / "x.npy"),
                "--no-header",
                "--out",
                str(tmp_path / "c"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "--no-header applies to CSV data" in capsys.readouterr().err
