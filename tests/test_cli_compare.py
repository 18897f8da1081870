"""``jaxsens compare`` end to end on seed 000's weekly workflow, the comparison views, and legacy pair resolution.

Seed 000 retrains a network every week and saves it as ``name_structure.json`` + ``name_weights.h5``. The
fixture writes that with ``tf_keras`` (82 inputs, 3 x Dense(16) relu, softmax 2): week 1, week 2 (week 1 with input
``x3``'s first-layer weights zeroed and input ``x40``'s scaled by 4: a known, large change) and an identical copy
of week 1, plus 300 rows of data.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil

import numpy as np
import pytest
from _tol import assert_f32_close

import jaxsens
from jaxsens import _compare_view as view
from jaxsens.cli import main

tf_keras = pytest.importorskip("tf_keras")

N_FEATURES, N_ROWS, ZEROED, SCALED = 82, 300, 3, 40


# ------------------------------------------------------------------------------------------- fixtures
def _network(seed: int):
    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.Sequential([
        tf_keras.layers.InputLayer(input_shape=(N_FEATURES,)),
        tf_keras.layers.Dense(16, activation="relu"),
        tf_keras.layers.Dense(16, activation="relu"),
        tf_keras.layers.Dense(16, activation="relu"),
        tf_keras.layers.Dense(2, activation="softmax"),
    ])
    return model


def _save_pair(model, folder: pathlib.Path, stem: str, ext: str = ".h5") -> str:
    structure = folder / f"{stem}_structure.json"
    structure.write_text(model.to_json())
    model.save_weights(str(folder / f"{stem}_weights.h5"))
    if ext != ".h5":
        os.replace(folder / f"{stem}_weights.h5", folder / f"{stem}_weights{ext}")
    return str(structure)


@pytest.fixture(scope="module")
def weekly(tmp_path_factory):
    """``{"w1", "w2", "same", "data", "folder"}``: the two weeks, a copy of week 1, the data (all paths)."""
    folder = tmp_path_factory.mktemp("weekly")
    week1 = _network(0)
    paths = {"w1": _save_pair(week1, folder, "w1"), "folder": folder}
    kernel, bias = week1.layers[0].get_weights()
    kernel = kernel.copy()
    kernel[ZEROED] = 0.0
    kernel[SCALED] *= 4.0
    week1.layers[0].set_weights([kernel, bias])
    paths["w2"] = _save_pair(week1, folder, "w2")
    for suffix in ("_structure.json", "_weights.h5"):
        shutil.copy(folder / f"w1{suffix}", folder / f"same{suffix}")
    paths["same"] = str(folder / "same_structure.json")
    rng = np.random.default_rng(0)
    np.save(folder / "data.npy", rng.normal(size=(N_ROWS, N_FEATURES)).astype(np.float32))
    paths["data"] = str(folder / "data.npy")
    return paths


# ------------------------------------------------------------------------------- the weekly workflow
def test_two_weeks_end_to_end(weekly, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["compare", weekly["w1"], weekly["w2"], weekly["data"], "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["compare.csv", "compare.json", "compare.png"]
    saved = jaxsens.load_comparison(out / "compare.json")
    assert 0.0 < saved.drift <= 1.0  # x3 dropped to zero and x40 jumped: the ranking moved
    lib = jaxsens.compare([weekly["w1"], weekly["w2"]], weekly["data"])  # the command is the library, written
    # the same computation; XLA's CPU kernels may split a reduction differently from run to run (seen: 1 ulp)
    assert_f32_close(saved.importance, lib.importance, n_terms=N_ROWS + N_FEATURES)
    assert saved.versions == ("w1", "w2") and abs(saved.drift - lib.drift) <= 1e-6
    # the zeroed input: exactly 0 in week 2, as the library's own run on week 2 says
    week2 = jaxsens.jacobian_importance(jaxsens.load_model(weekly["w2"]), weekly["data"])
    assert week2.feature_importance()[0][..., ZEROED].max() == 0.0
    import pandas as pd

    frame = pd.read_csv(out / "compare.csv")
    assert {"version", "feature", "delta", "p_value", "changed"} <= set(frame.columns)
    assert set(frame["feature"]) == {f"x{i}" for i in range(N_FEATURES)}
    changed = set(frame.loc[frame["changed"].astype(bool), "feature"])
    assert {f"x{ZEROED}", f"x{SCALED}"} <= changed
    import matplotlib.image

    png = matplotlib.image.imread(out / "compare.png")
    assert png.shape[0] > 1000 and png[..., :3].std() > 0.05  # tall (82 rows) and not blank
    text = captured.out
    assert "drift = 1 - min(ndcg)" in text and "largest changes" in text and "near-zero features" in text
    assert f"x{SCALED}" in text.split("largest changes")[1] and "note:" in text
    assert "w1" in text and "w2" in text  # default names: the file stems without _structure.json


@pytest.mark.parametrize("threshold, status", [("0.0", 3), ("1.0", 0)])
def test_fail_on_drift_exit_status(weekly, tmp_path, capsys, threshold, status):
    argv = ["compare", weekly["w1"], weekly["w2"], weekly["data"], "--out", str(tmp_path), "--quiet",
            "--no-plot", "--fail-on-drift", threshold]
    assert main(argv) == status
    err = capsys.readouterr().err
    if status == 3:
        lines = [line for line in err.splitlines() if "drift" in line]
        assert len(lines) == 1 and "--fail-on-drift 0" in lines[0] and "w2" in lines[0]
    else:
        assert "drift" not in err
    assert (tmp_path / "compare.json").exists()  # the outputs are written either way


def test_identical_versions_have_no_drift(weekly, tmp_path, capsys):
    argv = ["compare", weekly["w1"], weekly["same"], weekly["data"], "--out", str(tmp_path), "--quiet",
            "--no-plot", "--fail-on-drift", "0.0", "--names", "last,this", "--near-zero", "0.5"]
    assert main(argv) == 0, capsys.readouterr().err
    saved = jaxsens.load_comparison(tmp_path / "compare.json")
    assert saved.drift == pytest.approx(0.0, abs=1e-12)
    assert saved.near_zero_fraction == 0.5 and saved.versions == ("last", "this")
    out = capsys.readouterr().out
    assert "last" in out and "this" in out


def test_replicates_are_one_version(weekly, tmp_path, capsys):
    replicates = f"{weekly['w1']},{weekly['same']}"  # one version, retrained twice (here: the same weights)
    argv = ["compare", replicates, weekly["w2"], weekly["data"], "--out", str(tmp_path), "--quiet", "--no-plot"]
    assert main(argv) == 0, capsys.readouterr().err
    saved = jaxsens.load_comparison(tmp_path / "compare.json")
    assert saved.n_replicates == (2, 1) and saved.noise == "replicates"  # the same weights twice: no prior
    assert saved.prior is None and any("same model?" in n for n in saved.notes)
    assert "noise: replicates" in capsys.readouterr().out


def test_no_moderate_gives_the_plain_replicate_t_test(weekly, tmp_path, capsys):
    replicates = f"{weekly['w1']},{weekly['same']},{weekly['w2']}"
    for flag, noise in (([], "replicates, moderated"), (["--no-moderate"], "replicates")):
        out = tmp_path / (flag[0][2:] if flag else "default")
        argv = ["compare", replicates, weekly["w2"], weekly["data"], "--out", str(out), "--quiet", "--no-plot"]
        assert main(argv + flag) == 0, capsys.readouterr().err
        saved = jaxsens.load_comparison(out / "compare.json")
        assert saved.noise == noise and (saved.prior is None) == bool(flag)


def test_missing_weights_sibling_names_the_file(weekly, tmp_path, capsys):
    lonely = pathlib.Path(weekly["folder"]) / "w9_structure.json"
    shutil.copy(weekly["w1"], lonely)
    out = tmp_path / "out"
    assert main(["compare", weekly["w1"], str(lonely), weekly["data"], "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxsens: error:") and err.count("\n") == 1
    assert "w9_weights.h5" in err and "weights=" in err
    assert not out.exists()  # the folder created for the run is removed again


def test_out_not_writable_is_refused_before_loading(weekly, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    missing_model = str(tmp_path / "nowhere_structure.json")  # would fail to load: --out is checked first
    assert main(["compare", weekly["w1"], missing_model, weekly["data"], "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "a_file" in err and "nowhere" not in err


@pytest.mark.parametrize("argv_tail, message", [
    (["--names", "a,b,c"], "3 names for 2 versions"),
    (["--fail-on-drift", "1.5"], "from 0 to 1"),
])
def test_bad_arguments_are_one_line_errors(weekly, tmp_path, capsys, argv_tail, message):
    argv = ["compare", weekly["w1"], weekly["w2"], weekly["data"], "--out", str(tmp_path / "o"), *argv_tail]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_one_model_is_not_a_comparison(weekly, tmp_path, capsys):
    assert main(["compare", weekly["w1"], weekly["data"], "--out", str(tmp_path)]) == 2
    assert "two or more model versions" in capsys.readouterr().err


def test_report_holds_the_tables_and_the_plot(weekly, tmp_path, capsys):
    if importlib.util.find_spec("jaxsens._report") is None:
        pytest.skip("jaxsens/_report.py has not landed yet")
    report = tmp_path / "weekly.html"
    argv = ["compare", weekly["w1"], weekly["w2"], weekly["data"], "--out", str(tmp_path / "o"), "--quiet",
            "--report", str(report)]
    assert main(argv) == 0, capsys.readouterr().err
    page = report.read_text()
    assert "Largest changes" in page and "ndcg" in page and page.count("data:image/png;base64,") == 1
    assert f"<td>x{SCALED}</td>" in page


def test_report_may_go_into_the_out_folder(weekly, tmp_path, capsys):
    """--out is created when missing, so a report inside it is accepted (it was refused as 'does not exist')."""
    if importlib.util.find_spec("jaxsens._report") is None:
        pytest.skip("jaxsens/_report.py has not landed yet")
    out = tmp_path / "new"
    argv = ["compare", weekly["w1"], weekly["w2"], weekly["data"], "--out", str(out), "--quiet", "--no-plot",
            "--report", str(out / "report.html")]
    assert main(argv) == 0, capsys.readouterr().err
    assert "Largest changes" in (out / "report.html").read_text()


def test_weeks_saved_in_one_session_compare(weekly, tmp_path, capsys):
    """Keras numbers layers per session: a retrain saved after other models names its output dense_7, not
    dense_3. The versions still compare (outputs by position, the reference's names), with a note."""
    folder = tmp_path / "session"
    folder.mkdir()
    _network(5)  # an earlier model in this session: the next one's layers are numbered on from it
    later = _network(6)
    path = _save_pair(later, folder, "w9")
    a, b = jaxsens.load_model(weekly["w1"]), jaxsens.load_model(path)
    assert a.output_names != b.output_names  # the situation this test is about
    out = tmp_path / "o"
    argv = ["compare", weekly["w1"], path, weekly["data"], "--out", str(out), "--quiet", "--no-plot"]
    assert main(argv) == 0, capsys.readouterr().err
    saved = jaxsens.load_comparison(out / "compare.json")
    assert saved.output_names == a.output_names
    assert any("matched by position" in n for n in saved.notes)
    lone = jaxsens.jacobian_importance(b, weekly["data"])
    np.testing.assert_allclose(saved.importance[1], lone.importance, rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------------------- the views
def test_plot_is_legible_with_82_features(weekly):
    comp = jaxsens.compare([jaxsens.load_model(weekly["w1"]), jaxsens.load_model(weekly["w2"])], weekly["data"],
                           names=["w1", "w2"])
    fig = view.plot_comparison(comp)
    try:
        axes = fig.axes
        assert len(axes) == 2  # 82 rows over two panels of at most ROWS_PER_PANEL
        labels = [t for ax in axes for t in ax.get_yticklabels()]
        assert len(labels) == N_FEATURES
        assert {t.get_text().rstrip(" *") for t in labels} == {f"x{i}" for i in range(N_FEATURES)}
        assert all(t.get_fontsize() >= 8 for t in labels)
        height_per_row = fig.get_figheight() / 41
        assert height_per_row >= 0.25  # inches: readable names, rows apart
        marked = {t.get_text() for t in labels if t.get_text().endswith(" *")}
        assert {f"x{ZEROED} *", f"x{SCALED} *"} <= marked
        assert all(t.get_color() == "#D62728" and t.get_fontweight() == "bold"
                   for t in labels if t.get_text().endswith(" *"))
        assert marked == {f"{comp.feature_names[i]} *" for i in np.flatnonzero(view.changed_features(comp)[0])}
    finally:
        view.pyplot().close(fig)
    top = view.plot_comparison(comp, top=10)
    assert len(top.axes) == 1 and len(top.axes[0].get_yticklabels()) == 10
    view.pyplot().close(top)
    with pytest.raises(jaxsens.ArgumentError, match="top=0"):
        view.plot_comparison(comp, top=0)


def test_print_summary_reports_every_part(weekly):
    import io

    comp = jaxsens.compare([weekly["w1"], weekly["w2"]], weekly["data"], names=["last", "this"])
    buf = io.StringIO()
    view.print_summary(comp, buf, top=5)
    text = buf.getvalue()
    assert f"drift = 1 - min(ndcg) = {comp.drift:.4g}" in text
    assert f"{comp.ndcg[0]:.4g}" in text and f"{comp.spearman[0]:.4g}" in text
    assert f"noise: {comp.noise}" in text
    assert all(f"note: {n}" in text for n in comp.notes)
    changes = text.split("largest changes")[1].split("near-zero")[0]
    assert len([line for line in changes.splitlines()[2:] if line.strip()]) == 5
    first = comp.changes(1)[0]
    assert first["feature"] in changes.splitlines()[2]
    n_feat = int(view.changed_features(comp)[0].sum())  # the 2-class softmax's two outputs: one feature each
    assert f"{int(comp.changed.sum())} changed entries in all, {n_feat} of {N_FEATURES} features" in text


def test_printed_intervals_with_replicates_use_the_t_quantile(weekly):
    from scipy import stats as sps

    comp = jaxsens.compare([[weekly["w1"], weekly["same"], weekly["w2"]], weekly["w2"]], weekly["data"])
    assert comp.noise == "replicates, moderated"  # Student t on d0 + 2 degrees of freedom (a normal if d0 = inf)
    d0 = comp.prior["d0"]
    crit = sps.norm.isf(0.025) if d0 == float("inf") else sps.t.isf(0.025, 2 + d0)
    for row, cells in zip(comp.changes(5), view.change_rows(comp, 5)):
        lo, hi = (float(t) for t in cells[6].strip("[]").split(","))
        assert (hi - lo) / 2 == pytest.approx(crit * row["delta_stderr"], rel=1e-3)


# ------------------------------------------------------------------------------ legacy pair resolution
def test_structure_json_finds_its_weights_beside_it(weekly, tmp_path):
    xs = np.load(weekly["data"])[:20]
    folder = pathlib.Path(weekly["folder"])
    found = jaxsens.load_model(weekly["w2"])
    given = jaxsens.load_model(weekly["w2"], weights=str(folder / "w2_weights.h5"))
    keras = tf_keras.models.model_from_json(pathlib.Path(weekly["w2"]).read_text())
    keras.load_weights(str(folder / "w2_weights.h5"))
    np.testing.assert_allclose(found(xs), keras.predict(xs, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(found(xs), given(xs))
    # .hdf5 works too
    _save_pair(_network(1), tmp_path, "old", ext=".hdf5")
    assert jaxsens.load_model(str(tmp_path / "old_structure.json")).input_shape == (N_FEATURES,)
    # --weights still wins over the sibling: week 1's weights into week 2's structure
    other = jaxsens.load_model(weekly["w2"], weights=str(folder / "w1_weights.h5"))
    np.testing.assert_array_equal(other(xs), jaxsens.load_model(weekly["w1"])(xs))


def test_only_the_exact_sibling_is_taken(weekly, tmp_path):
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    shutil.copy(weekly["w1"], sub / "w1_structure.json")  # its weights are one folder up: not looked for
    with pytest.raises(jaxsens.errors.ModelFileNotFoundError, match=r"w1_weights\.h5.*weights="):
        jaxsens.load_model(str(sub / "w1_structure.json"))
    shutil.copy(weekly["w1"], tmp_path / "model.json")  # no _structure suffix: no guess
    with pytest.raises(jaxsens.ArgumentError, match="weights="):
        jaxsens.load_model(str(tmp_path / "model.json"))
    folder = pathlib.Path(weekly["folder"])
    for ext in (".h5", ".hdf5"):
        shutil.copy(folder / "w1_weights.h5", tmp_path / f"both_weights{ext}")
    shutil.copy(weekly["w1"], tmp_path / "both_structure.json")
    with pytest.raises(jaxsens.ArgumentError, match=r"both_weights\.h5.*both_weights\.hdf5"):
        jaxsens.load_model(str(tmp_path / "both_structure.json"))
