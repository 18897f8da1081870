"""``jaxsens activations`` and its drawings (issue 12, item 3): seed 003's model, one pattern, layer by layer.

Oracles: Keras 3 sub-models ``keras.Model(inputs, layer.output)`` for every layer's output, Keras'
``count_params()`` for the parameter counts, the pattern file itself for the input panel, and the decoded PNGs
(matplotlib's ``imread``) for "a picture was drawn". The drawing functions are also tested alone, on hand-made
arrays and ``LayerInfo``-like rows.
"""

from __future__ import annotations

import collections
import functools
import os
import re
import sys

import keras
import matplotlib.image
import numpy as np
import pytest
from _nobody import as_nobody, unwritable_folder

import jaxsens
from converters.errors import ArgumentError, ArgumentTypeError
from jaxsens._inside_view import draw_activations, draw_architecture, fold_rule, folded
from jaxsens.cli import main

PAGE_LINE = re.compile(r"^(activations_\d+\.png): (.*)$", re.MULTILINE)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def seed003(tmp_path_factory):
    """Seed 003's network (Input(50, 50) -> Dense 75 -> Dense 50 "my_dense" -> Dense 25 -> Dense 10 -> Flatten ->
    Dense 5 softmax), seeded, saved as .keras, with a 3-pattern .npy file and the Keras oracle of every layer.

    The biases are random, as after training: Keras initialises them to zero, and the converter then drops the
    zero bias (no parameters to count), which would hide a wrong count."""
    folder = tmp_path_factory.mktemp("seed003")
    keras.utils.set_random_seed(3)
    dense = functools.partial(keras.layers.Dense, bias_initializer="random_normal")
    x = keras.Input((50, 50))
    h = dense(75, activation="relu")(x)
    h = dense(50, activation="relu", name="my_dense")(h)
    h = dense(25, activation="relu")(h)
    h = dense(10, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    km = keras.Model(x, dense(5, activation="softmax")(h), name="simple_model")
    path = str(folder / "seed003.keras")
    km.save(path)
    patterns = np.random.default_rng(3).random((3, 50, 50))
    np.save(folder / "patterns.npy", patterns)
    data = np.random.default_rng(4).random((40, 50, 50)).astype(np.float32)
    np.save(folder / "data.npy", data)
    names = [layer.name for layer in km.layers]  # the input layer first
    return {"model": path, "keras": km, "names": names, "patterns": folder / "patterns.npy",
            "x": patterns, "data": folder / "data.npy", "xs": data}


def _keras_layer(km, name, xs):
    layer = km.get_layer(name)
    if isinstance(layer, keras.layers.InputLayer):
        return np.asarray(xs)
    return np.asarray(keras.Model(km.inputs, layer.output)([np.asarray(xs, np.float32)]))


def _run(capsys, *argv):
    code = main(["activations", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _pages(out: str) -> dict[str, list[str]]:
    return {m.group(1): m.group(2).split(", ") for m in PAGE_LINE.finditer(out)}


def _assert_drawn(path):
    """A real picture: a decodable PNG, not one flat colour, with a good share of non-white pixels."""
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200, img.shape
    gray = img[..., :3].mean(axis=2)
    assert gray.var() > 1e-3, f"{path} is blank (variance {gray.var():.2g})"
    assert (gray < 0.9).mean() > 0.02, f"{path} is almost all white"


def _close(got, want, what):
    """Within 1e-5 relative to the layer's magnitude (the issue's bound for every layer vs Keras)."""
    want = np.asarray(want, np.float64)
    scale = max(float(np.abs(want).max()), np.finfo(np.float32).tiny)
    err = float(np.abs(np.asarray(got, np.float64) - want).max())
    assert err <= 1e-5 * scale, f"{what}: max |jaxsens - keras| = {err:.3g} > 1e-5 x {scale:.3g}"


# ---------------------------------------------------------------------------------------- the command
def test_seed003_pattern_layer_by_layer(seed003, tmp_path, capsys):
    km, names = seed003["keras"], seed003["names"]
    out = tmp_path / "inside"
    code, text, err = _run(capsys, seed003["model"], seed003["patterns"], "--out", out, "--row", 1, "--per-page", 3)
    assert code == 0, err
    # pages: 7 arrays (the pattern and six layers) at 3 per page; every one exactly once, in graph order
    pages = _pages(text)
    assert list(pages) == ["activations_1.png", "activations_2.png", "activations_3.png"]
    assert [n for page in pages.values() for n in page] == names
    for page in pages:
        _assert_drawn(out / page)
    _assert_drawn(out / "architecture.png")
    assert "row 1 of" in text
    # every array equals Keras' sub-model prediction for the pattern; the input panel is the file's row 1
    x = seed003["x"][1]
    with np.load(out / "activations.npz") as npz:
        assert list(npz.keys()) == names
        np.testing.assert_array_equal(npz[names[0]], x.astype(np.float32))
        for name in names[1:]:
            want = _keras_layer(km, name, x[None])[0]
            assert npz[name].shape == want.shape, name
            _close(npz[name], want, name)
    # architecture.csv: one row per Keras layer, Keras' parameter counts and output shapes
    import pandas as pd

    table = pd.read_csv(out / "architecture.csv", keep_default_na=False)
    assert list(table["name"]) == names
    for _, row in table.iterrows():
        layer = km.get_layer(row["name"])
        assert row["n_params"] == layer.count_params(), row["name"]
        assert row["output_shape"] == "x".join(map(str, layer.output.shape[1:])), row["name"]
    assert table["n_params"].sum() == km.count_params() == 11665
    assert f"{km.count_params():,} parameters" in text
    for name in names:  # the printed value table: shape, min, max, mean per array
        assert re.search(rf"^{re.escape(name)}\s+\(", text, re.MULTILINE), name
    # a second run with one page: the earlier run's pages 2 and 3 are removed, page 1 holds everything
    code, text, err = _run(capsys, seed003["model"], seed003["patterns"], "--out", out)
    assert code == 0, err
    assert _pages(text) == {"activations_1.png": names}
    assert sorted(p for p in os.listdir(out) if p.startswith("activations_")) == ["activations_1.png"]
    assert "removed" in text and "activations_3.png" in text


def test_layers_option_and_report(seed003, tmp_path, capsys):
    km, names = seed003["keras"], seed003["names"]
    report = tmp_path / "r.html"
    code, text, err = _run(capsys, seed003["model"], seed003["patterns"], "--out", tmp_path / "o",
                           "--layers", "my_dense," + names[-1], "--report", report)
    assert code == 0, err
    assert _pages(text) == {"activations_1.png": [names[0], "my_dense", names[-1]]}
    with np.load(tmp_path / "o" / "activations.npz") as npz:
        assert list(npz.keys()) == [names[0], "my_dense", names[-1]]
        _close(npz["my_dense"], _keras_layer(km, "my_dense", seed003["x"][:1])[0], "my_dense")
    doc = report.read_text()
    assert doc.count("<img ") == 2  # the architecture and the one page
    assert "my_dense" in doc and "<table" in doc and "11,665" in doc
    assert "http://" not in doc and "https://" not in doc


def test_stats_over_a_data_set_reports_the_dead_units(seed003, tmp_path, capsys):
    km, names = seed003["keras"], seed003["names"]
    code, text, err = _run(capsys, seed003["model"], seed003["patterns"], "--out", tmp_path, "--stats",
                           seed003["data"])
    assert code == 0, err
    assert (tmp_path / "activation_stats.csv").stat().st_size > 0
    assert f"{len(seed003['xs'])} rows" in text
    for name in names[1:]:
        acts = _keras_layer(km, name, seed003["xs"])
        scale = float(np.abs(acts).max())
        strict = int((np.abs(acts).max(axis=0) == 0).sum())  # exactly 0 on every row in Keras too
        loose = int((np.abs(acts).max(axis=0) <= 1e-5 * scale).sum())  # 0 up to float32 rounding
        m = re.search(rf"^\s+{re.escape(name)}: (\d+) of (\d+)", text, re.MULTILINE)
        assert m, f"no dead-unit line for {name}"
        assert int(m.group(2)) == acts[0].size
        assert strict <= int(m.group(1)) <= loose, (name, m.group(1), strict, loose)


@pytest.fixture(scope="module")
def flat_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flat")
    keras.utils.set_random_seed(5)
    x = keras.Input((6,))
    h = keras.layers.Dense(4, activation="tanh", name="hidden", bias_initializer="random_normal")(x)
    km = keras.Model(x, keras.layers.Dense(3, activation="softmax", name="probs", bias_initializer="random_normal")(h))
    path = str(folder / "flat.keras")
    km.save(path)
    return path, km


def test_one_d_model_takes_comma_separated_numbers(flat_model, tmp_path, capsys):
    path, km = flat_model
    values = [0.5, -1.0, 2.0, 0.0, 3.25, -0.75]
    code, text, err = _run(capsys, path, ",".join(map(str, values)), "--out", tmp_path)
    assert code == 0, err
    assert "6 numbers from the command line" in text
    x = np.asarray([values], np.float32)
    with np.load(tmp_path / "activations.npz") as npz:
        np.testing.assert_array_equal(npz[km.layers[0].name], x[0])
        for name in ("hidden", "probs"):
            _close(npz[name], _keras_layer(km, name, x)[0], name)
    _assert_drawn(tmp_path / "activations_1.png")
    # the wrong number of values: expected vs got, nothing written
    code, _, err = _run(capsys, path, "1,2,3", "--out", tmp_path / "bad")
    assert code == 2 and "expected 6, got 3" in err
    assert not (tmp_path / "bad").exists()
    code, _, err = _run(capsys, path, "1,x,3,4,5,6", "--out", tmp_path / "bad")
    assert code == 2 and "'x' is not a number" in err
    code, _, err = _run(capsys, path, ",".join(map(str, values)), "--row", 1, "--out", tmp_path / "bad")
    assert code == 2 and "drop --row" in err
    code, _, err = _run(capsys, path, "nan,1,2,3,4,5", "--out", tmp_path / "bad")
    assert code == 2 and "NaN or Inf" in err


def test_pattern_errors_exit_2(seed003, tmp_path, capsys):
    code, _, err = _run(capsys, seed003["model"], seed003["patterns"], "--out", tmp_path / "o", "--row", 3)
    assert code == 2 and err.count("\n") == 1
    assert "--row 3 is out of range" in err and "has 3 rows" in err
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 50, 49)))
    code, _, err = _run(capsys, seed003["model"], wrong, "--out", tmp_path / "o")
    assert code == 2 and "[2, 50, 49]" in err and "[n_samples, 50, 50]" in err
    code, _, err = _run(capsys, seed003["model"], "0.1,0.2", "--out", tmp_path / "o")  # a 2-D input model
    assert code == 2 and "1-D input" in err and "(50, 50)" in err
    assert not (tmp_path / "o").exists()


def test_outputs_are_checked_before_the_model_is_loaded(tmp_path, capsys):
    """A missing model and pattern: the --out / --report errors come first, so they were checked first."""
    missing = tmp_path / "no.keras"
    (tmp_path / "file").write_text("x")
    code, _, err = _run(capsys, missing, tmp_path / "no.npy", "--out", tmp_path / "file")
    assert code == 2 and "is a file, not a folder" in err
    code, _, err = _run(capsys, missing, "1,2", "--out", tmp_path / "o", "--report", tmp_path / "nowhere" / "r.html")
    assert code == 2 and "--report" in err and "does not exist" in err


@pytest.mark.skipif(sys.platform != "linux", reason="uses seteuid on Linux")
def test_unwritable_out_is_refused_before_loading(tmp_path, capsys):
    """As in test_cli.py: the run takes the effective uid of ``nobody`` (tests/_nobody.py: a real EACCES)."""
    with unwritable_folder() as locked:
        args = ["activations", str(tmp_path / "no.keras"), "1,2,3", "--out", locked]
        assert as_nobody(lambda: main(args)) == 2
        assert "is not writable" in capsys.readouterr().err
        assert os.listdir(locked) == []


# --------------------------------------------------------------------------------------- the drawings
Row = collections.namedtuple("Row", "name op_types output_shape n_params inputs")  # a LayerInfo-like row


def test_draw_activations_pages_and_panels(tmp_path):
    rng = np.random.default_rng(0)
    acts = {"x": rng.random((8, 8)), "conv": rng.normal(size=(2, 3, 4, 5)), "strip": rng.normal(size=100),
            "bars": rng.random(7), "scalar": np.float32(2.5), "flags": rng.random(30) > 0.5,
            "gaps": np.array([[1.0, np.nan], [np.inf, 3.0]])}
    pages = draw_activations(acts, folder=tmp_path, per_page=4)
    assert [os.path.basename(p) for p in pages] == ["activations_1.png", "activations_2.png"]
    for p in pages:
        _assert_drawn(p)
    assert folded(acts["conv"]).shape == (24, 5)
    np.testing.assert_array_equal(folded(acts["conv"])[5 * 4 + 1], acts["conv"][1, 2, 1])  # row r = (r // 4, r % 4)
    assert fold_rule((2, 3, 4, 5)) == "folded: leading (2, 3) x 4 rows -> [24, 5]" and fold_rule((4, 5)) == ""
    with pytest.raises(ArgumentError, match="empty"):
        draw_activations({}, folder=tmp_path)
    with pytest.raises(ArgumentError, match="per_page"):
        draw_activations(acts, folder=tmp_path, per_page=0)
    with pytest.raises(ArgumentTypeError, match="complex"):
        draw_activations({"z": np.ones(3, complex)}, folder=tmp_path)
    with pytest.raises(ArgumentError, match="not an existing folder"):
        draw_activations(acts, folder=tmp_path / "missing")


def test_draw_architecture_branches_side_by_side(tmp_path):
    branches = [Row(f"dense_{a}", ("MatMul", "Add", a), (4,), 28, ("x",)) for a in ("Relu", "Tanh", "Elu")]
    rows = [Row("x", (), (6,), 0, ()), *branches,
            Row("concat", ("Concat",), (12,), 0, tuple(b.name for b in branches)),
            Row("out", ("MatMul", "Add"), (3,), 39, ("concat",))]
    path = draw_architecture(rows, path=tmp_path / "architecture.png")
    assert os.fspath(path) == os.fspath(tmp_path / "architecture.png")
    _assert_drawn(path)
    img = matplotlib.image.imread(path)
    assert img.shape[1] > img.shape[0]  # three branches side by side: wider than tall
    with pytest.raises(ArgumentError, match="twice"):
        draw_architecture([rows[0], rows[0]], path=tmp_path / "a.png")
    with pytest.raises(ArgumentTypeError, match="LayerInfo"):
        draw_architecture([{"name": "x"}], path=tmp_path / "a.png")
    with pytest.raises(ArgumentError, match=".png"):
        draw_architecture(rows, path=tmp_path / "a.svg")


def test_public_names_resolve():
    assert callable(jaxsens.activations) and callable(jaxsens.architecture) and callable(jaxsens.activation_stats)
