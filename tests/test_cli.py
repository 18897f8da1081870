"""The ``jaxsens`` command end to end (in-process ``main``, plus the installed console script once)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

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
    proc = subprocess.run([exe, "info"], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "MatMul" in proc.stdout


def test_unknown_method_is_rejected_in_one_line(tmp_path, capsys):
    argv = ["importance", examples.default_model_path(), examples.default_data_path(), "--method", "bogus",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxsens: error: argument --method: invalid choice: 'bogus'") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


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


# ------------------------------------------------------------------------------------- errors, outputs, signals
def _one_error_line(err: str) -> str:
    """The whole stderr of a failed run: exactly one line, `jaxsens: error: ...` (no usage, no traceback)."""
    assert err.count("\n") == 1 and err.startswith("jaxsens: error: "), err
    return err


def test_user_errors_are_one_line_and_exit_2(small_regression, tmp_path, capsys):
    model, x = str(small_regression / "reg.onnx"), str(small_regression / "x.npy")
    cases = [
        (["importance"], "the following arguments are required: model, data"),  # argparse, in a subcommand
        (["frobnicate"], "invalid choice: 'frobnicate'"),  # argparse, top level
        (["importance", model, x, "--batch-size", "many"], "argument --batch-size: invalid int value: 'many'"),
        (["importance", model, x, "--method", "permutation", "--out", str(tmp_path / "o")], "needs targets"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        assert expected in _one_error_line(capsys.readouterr().err), argv


def test_missing_extra_is_a_user_error(small_regression, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if jaxsens[data] were not installed
    code = main(["importance", str(small_regression / "reg.onnx"), str(small_regression / "data.csv"),
                 "--target-column", "target", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    assert "pip install 'jaxsens[data]'" in _one_error_line(capsys.readouterr().err)


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, capsys):
    a_file = tmp_path / "f"
    a_file.write_text("")
    for argv in (["--debug", "demo", "--out", str(a_file)], ["demo", "--out", str(a_file), "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):") and "ArgumentError" in err
        assert err.splitlines()[-1].startswith("jaxsens: error: --out")


def test_any_other_exception_is_reported_as_an_internal_error(small_regression, tmp_path, monkeypatch, capsys):
    """A method that fails with a non-jaxsens exception is a bug: traceback, a request to report, exit 1."""
    from jaxsens import _cli_importance

    def broken(model, xs, **options):
        return 1 / 0

    monkeypatch.setattr(jaxsens, "broken_importance", broken, raising=False)
    monkeypatch.setitem(_cli_importance.METHODS, "broken", _cli_importance.Method("broken_importance", "x"))
    code = main(["importance", str(small_regression / "reg.onnx"), str(small_regression / "x.npy"),
                 "--method", "broken", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and "1 / 0" in err
    assert "jaxsens: internal error: ZeroDivisionError: division by zero" in err and "please report" in err
    assert not (tmp_path / "o").exists()  # the folder it created is removed again: nothing was written


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"jaxsens {jaxsens.__version__}\n"


def test_out_is_checked_before_the_model_or_data_are_read(small_regression, tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    missing_model, missing_data = str(tmp_path / "no-model.onnx"), str(tmp_path / "no-data.npy")
    # a model and data that do not exist: had either been opened, the error would name it
    assert main(["importance", missing_model, missing_data, "--out", str(a_file), "--quiet"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert f"--out {str(a_file)!r} is a file, not a folder" in err
    # a valid model and data: the same error, and nothing written
    assert main(["importance", str(small_regression / "reg.onnx"), str(small_regression / "x.npy"),
                 "--out", str(a_file), "--quiet"]) == 2
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)
    assert a_file.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    # an output file name that is taken by a folder
    out = tmp_path / "out"
    (out / "importance.csv").mkdir(parents=True)
    assert main(["importance", missing_model, missing_data, "--out", str(out), "--quiet"]) == 2
    assert "holds a folder named 'importance.csv'" in _one_error_line(capsys.readouterr().err)
    # an --out below a file cannot be created
    assert main(["demo", "--out", str(a_file / "sub"), "--quiet"]) == 2
    assert "cannot be created" in _one_error_line(capsys.readouterr().err)
    # convert: -o is a folder, or in a folder that does not exist
    assert main(["convert", missing_model, "-o", str(out)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)
    assert main(["convert", missing_model, "-o", str(tmp_path / "nowhere" / "m.onnx")]) == 2
    assert "does not exist; create it first" in _one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(sys.platform != "linux", reason="uses seteuid on Linux")
def test_unwritable_out_is_refused_before_any_work(tmp_path, capsys):
    """An --out folder the user cannot write to. Tests run as root here, whom permissions do not stop, so the run
    happens with the effective uid of ``nobody`` (a real EACCES from the kernel, no mock), restored afterwards; the
    folder lives under /tmp with mode 0755 because pytest's tmp_path is a 0700 folder ``nobody`` cannot enter."""
    folder = tempfile.mkdtemp(prefix="jaxsens-ro-")
    try:
        os.chmod(folder, 0o755)
        locked = os.path.join(folder, "ro")
        os.mkdir(locked, 0o555)
        args = ["importance", str(tmp_path / "no.onnx"), str(tmp_path / "no.npy"), "--out", locked]
        if os.geteuid() == 0:
            os.seteuid(65534)
            try:
                code = main(args)
            finally:
                os.seteuid(0)
        else:
            code = main(args)
        assert code == 2
        assert "is not writable" in _one_error_line(capsys.readouterr().err)
        assert os.listdir(locked) == []
    finally:
        os.chmod(os.path.join(folder, "ro"), 0o755)
        shutil.rmtree(folder)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_are_atomic_and_follow_the_umask(umask, mode, tmp_path, capsys):
    old = os.umask(umask)
    try:
        assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
        assert main(["convert", examples.default_model_path(), "-o", str(tmp_path / "m.onnx")]) == 0
        replace = ["demo", "--out", str(tmp_path / "demo"), "--quiet", "--method", "connection-weights"]
        assert main(replace) == 0  # replaces the three files
    finally:
        os.umask(old)
    # exactly the outputs: no temporary files, no lock file left behind
    names = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert names == ["importance.csv", "importance.json", "importance.png"]
    for path in [*(tmp_path / "demo").iterdir(), tmp_path / "m.onnx"]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, (path.name, oct(path.stat().st_mode))
    assert jaxsens.load_result(tmp_path / "demo" / "importance.json").method == "connection_weights"
    capsys.readouterr()


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    from jaxsens._io import atomic_write

    target = tmp_path / "t.bin"
    atomic_write(target, b"one")
    atomic_write(target, "two\r\n")  # text: UTF-8, newlines as given
    assert target.read_bytes() == b"two\r\n"
    with pytest.raises(TypeError):  # a failing write leaves the old file and no temporary file
        atomic_write(target, 3)
    assert target.read_bytes() == b"two\r\n" and [p.name for p in tmp_path.iterdir()] == ["t.bin"]


def test_a_second_run_on_a_locked_out_folder_fails_fast(small_regression, tmp_path, capsys):
    out = tmp_path / "out"
    holder_code = ("import sys\nfrom jaxsens._io import output_folder\n"
                   "with output_folder(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", holder_code, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = ["importance", str(small_regression / "reg.onnx"), str(small_regression / "x.npy"),
                "--out", str(out), "--quiet", "--no-plot"]
        assert main(argv) == 2
        err = _one_error_line(capsys.readouterr().err)
        assert f"--out {str(out)!r} is in use by another jaxsens run (process {holder.pid})" in err
        assert not (out / "importance.json").exists()
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert not (out / ".jaxsens.lock").exists()  # released and removed at exit
    assert main(argv) == 0  # the folder is free again
    assert not (out / ".jaxsens.lock").exists()


def test_ctrl_c_exits_130_in_one_line(tmp_path):
    data = tmp_path / "big.npy"
    np.save(data, np.random.default_rng(0).normal(size=(100_000, examples.N_FEATURES)).astype(np.float32))
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxsens.cli", "importance", examples.default_model_path(), str(data),
         "--method", "perturbation", "--n-draws", "4", "--out", str(out), "--no-plot"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / ".jaxsens.lock").exists():  # the run has started: --out checked and locked
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(1.0)  # into the model load / computation
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.splitlines()[-1] == "jaxsens: interrupted"
    assert not out.exists()  # nothing written: the folder this run created is removed, the lock released
