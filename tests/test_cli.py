"""The ``jaxsens`` command end to end (in-process ``main``, plus the installed console script once)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest

import jaxsens
from jaxsens import examples
from jaxsens.cli import main


def test_demo_writes_ranked_outputs_and_finds_the_true_effects(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "rank" in out and "f03" in out
    saved = jaxsens.load_result(tmp_path / "importance.json")
    top = [name for name, _, _ in saved.ranking()[:4]]
    assert set(top) == {"f03", "f17", "f41", "f42"}  # the inputs the label was built from
    rows = (tmp_path / "importance.csv").read_text().splitlines()
    assert rows[0] == "rank,feature,importance,stderr" and len(rows) == 83
    assert (tmp_path / "importance.png").stat().st_size > 1000


def test_importance_on_npy_matches_the_library(tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.load(examples.default_data_path())[:300])
    code = main(["importance", examples.default_model_path(), str(data), "--out", str(tmp_path), "--quiet",
                 "--batch-size", "64", "--outputs", "class_1", "--no-plot"])
    assert code == 0
    saved = json.loads((tmp_path / "importance.json").read_text())
    lib = jaxsens.jacobian_importance(jaxsens.load_model(examples.default_model_path()), data, outputs=["class_1"])
    got = jaxsens.load_result(tmp_path / "importance.json")
    np.testing.assert_allclose(got.mean_abs, lib.mean_abs, rtol=1e-6)
    assert saved and got.output_names == ("class_1",)


def test_convert_onnx_roundtrip_and_bad_input_errors(tmp_path, capsys):
    out = tmp_path / "copy.onnx"
    assert main(["convert", examples.default_model_path(), "-o", str(out)]) == 0
    assert onnx.load(out).graph.node
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 5), np.float32))
    assert main(["importance", examples.default_model_path(), str(bad), "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "82" in err and "5" in err  # expected vs got


def test_console_script_is_installed():
    exe = shutil.which("jaxsens")
    assert exe, "pip install -e . should put the `jaxsens` command on PATH"
    proc = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MatMul" in proc.stdout


@pytest.mark.parametrize("method", ["bogus"])
def test_unknown_method_is_rejected(method, tmp_path):
    with pytest.raises(SystemExit):
        main(["importance", examples.default_model_path(), examples.default_data_path(), "--method", method])


def test_bench_command_checks_agreement_and_reports(capsys):
    assert main(["bench", "--n", "2048", "--repeats", "1", "--batch-size", "512"]) == 0
    out = capsys.readouterr().out
    assert "jaxsens.jacobian_importance" in out and "hand-written" in out and "GFLOP/s" in out


@pytest.fixture(scope="module")
def small_regression(tmp_path_factory):
    """A scikit-learn MLP (4 inputs, one hidden layer) exported with skl2onnx, and a CSV with a target column."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor

    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = 2 * x[:, 0] - x[:, 1] + 0.05 * rng.normal(size=300)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=400, random_state=0).fit(x, y)
    model_path = folder / "reg.onnx"
    model_path.write_bytes(to_onnx(reg, x[:1], target_opset=17).SerializeToString())
    csv_path = folder / "data.csv"
    lines = ["a,b,c,d,target"] + [",".join(f"{v:.6f}" for v in (*row, t)) for row, t in zip(x, y)]
    csv_path.write_text("\n".join(lines) + "\n")
    np.save(folder / "y.npy", y.astype(np.float32))
    np.save(folder / "x.npy", x)
    return folder


@pytest.mark.parametrize(
    "method, extra",
    [
        ("jacobian", ["--target-column", "target"]),
        ("perturbation", ["--target-column", "target"]),
        ("pad", ["--target-column", "target"]),
        ("permutation", ["--target-column", "target", "--n-repeats", "2"]),
        ("input-perturbation", ["--target-column", "target"]),
        ("improved-stepwise", ["--target-column", "target"]),
        ("profile", ["--target-column", "target"]),
        ("connection-weights", ["--target-column", "target"]),  # data only names the features
        ("garson", ["--target-column", "target"]),  # data only names the features
        ("weight-sums", ["--target-column", "target"]),  # data only names the features
        ("stepwise-backward", ["--target-column", "target"]),
    ],
)
def test_every_method_runs_from_the_command_line(method, extra, small_regression, tmp_path, capsys):
    out = tmp_path / method
    code = main(["importance", str(small_regression / "reg.onnx"), str(small_regression / "data.csv"),
                 "--method", method, "--out", str(out), "--quiet", "--no-plot", *extra])
    assert code == 0, capsys.readouterr().err
    rows = (out / "importance.csv").read_text().splitlines()
    assert rows[0].startswith("rank,feature") and len(rows) == 5
    ranked = [r.split(",")[1] for r in rows[1:]]
    assert set(ranked) == {"a", "b", "c", "d"}
    if method not in ("weight-sums", "garson"):  # weight-only methods need not find the truth
        assert ranked[0] == "a", (method, ranked)
    assert jaxsens.load_result(out / "importance.json") is not None


def test_targets_file_and_missing_targets_error(small_regression, tmp_path, capsys):
    model = str(small_regression / "reg.onnx")
    x = str(small_regression / "x.npy")
    assert main(["importance", model, x, "--method", "permutation", "--targets", str(small_regression / "y.npy"),
                 "--out", str(tmp_path), "--quiet", "--no-plot"]) == 0
    assert main(["importance", model, x, "--method", "permutation", "--out", str(tmp_path), "--quiet"]) == 2
    assert "needs targets" in capsys.readouterr().err
