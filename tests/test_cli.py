"""The ``jaxsens`` command end to end (in-process ``main``, plus the installed console script once)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from _nobody import as_nobody, unwritable_folder

import jaxsens
from jaxsens import _cli_importance, examples
from jaxsens.cli import main


def test_demo_writes_ranked_outputs_and_finds_the_true_effects(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "rank" in out and "f03" in out
    saved = jaxsens.load_result(tmp_path / "importance.json")
    top = [name for name, _, _ in saved.ranking()[:4]]
    assert set(top) == {"f03", "f17", "f41", "f42"}  # the inputs the label was built from
    import pandas as pd

    frame = pd.read_csv(tmp_path / "importance.csv")  # the tidy long table: one row per (output, feature)
    assert list(frame.columns[:7]) == ["feature", "output", "importance", "stderr", "ci_low", "ci_high", "rank"]
    assert len(frame) == 82 * saved.n_outputs and set(frame["output"]) == set(saved.output_names)
    np.testing.assert_array_equal(frame["importance"].to_numpy(), saved.importance.reshape(-1))
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


def test_bench_command_checks_agreement_and_reports(capsys):  # the whole suite: tests/test_bench_cli.py
    argv = ["bench", "--quick", "--n", "1024", "--workloads", "mlp_jacobian", "--precision", "float32"]
    assert main([*argv, "--batch-size", "512"]) == 0
    out = capsys.readouterr().out
    assert "mlp_jacobian" in out and "hand-written" in out and "GFLOP/s" in out and "samples/s" in out


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


def _cli_small_flags(method: str) -> list[str]:
    """Small cost options (by family) for the retraining methods, as flags; none for the others."""
    spec = jaxsens.methods().get(method)
    if spec is None or spec.family != "retraining":
        return []
    small = {"epochs": 20, "max_steps": 1}
    return [a for o in spec.options if o.name in small for a in ("--" + o.name.replace("_", "-"), str(small[o.name]))]


@pytest.mark.parametrize("method", _cli_importance.method_names())
def test_every_method_runs_from_the_command_line(method, small_regression, tmp_path, capsys):
    """Every --method value (the table's names, and the deprecated aliases) on a CSV whose target column is the
    targets of the methods that use them and is left out of the features by the others."""
    out = tmp_path / method
    code = main(["importance", str(small_regression / "reg.onnx"), str(small_regression / "data.csv"),
                 "--method", method, "--out", str(out), "--quiet", "--no-plot", "--target-column", "target",
                 *_cli_small_flags(method)])
    assert code == 0, capsys.readouterr().err
    saved = jaxsens.load_result(out / "importance.json")
    ranked = [name for name, _, _ in saved.ranking()]
    assert sorted(ranked) == ["a", "b", "c", "d"]
    if method not in ("weight-sums", "garson"):  # weight-only methods need not find the truth
        assert ranked[0] == "a", (method, ranked)
    import pandas as pd

    frame = pd.read_csv(out / "importance.csv")
    assert set(frame["feature"]) == {"a", "b", "c", "d"}
    assert len(frame) == np.size(saved.importance) or method not in jaxsens.methods()  # TRANSITION: old results


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
        (["importance"], "the following arguments are required: model"),  # argparse, in a subcommand
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


def test_any_other_exception_is_reported_as_an_internal_error(small_regression, tmp_path, monkeypatch, request,
                                                              capsys):
    """A method that fails with a non-jaxsens exception is a bug: traceback, a request to report, exit 1."""

    def broken(call):
        return 1 / 0

    _with_rows(monkeypatch, request, _fake_spec("broken", run=broken))
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
    """An --out folder the user cannot write to, written to as ``nobody`` (tests/_nobody.py: a real EACCES)."""
    with unwritable_folder() as locked:
        args = ["importance", str(tmp_path / "no.onnx"), str(tmp_path / "no.npy"), "--out", locked]
        assert as_nobody(lambda: main(args)) == 2
        assert "is not writable" in _one_error_line(capsys.readouterr().err)
        assert os.listdir(locked) == []


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
    assert jaxsens.load_result(tmp_path / "demo" / "importance.json").method == "connection-weights"
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


# ------------------------------------------------------------------------- flags generated from the table
def _fake_spec(name, *, run, options=(), estimate=None, random=False, family="weights"):
    """A table row for the tests: ``run(call)``; the data are read as a Jacobian (a real result)."""
    from jaxsens._method import Method

    return Method(name=name, function_name=f"{name.replace('-', '_')}_importance", family=family,
                  summary=f"{name} for a test", doc=f"{name} for a test.", result=jaxsens.JacobianImportance,
                  options=tuple(options), run=run, estimate=estimate, random=random)


def _with_rows(monkeypatch, request, *specs):
    """``jaxsens.methods()`` with ``specs`` added, for this test only."""
    import types

    from jaxsens import _method, _methods

    for spec in specs:
        spec.as_function()
        request.addfinalizer(lambda n=spec.name: _method._functions.pop(n, None))
    monkeypatch.setattr(_methods, "METHODS", types.MappingProxyType({**_methods.METHODS,
                                                                     **{s.name: s for s in specs}}))


def test_help_lists_the_table_by_family_with_generated_flags(capsys):
    assert main(["importance", "--help"]) == 0
    out = capsys.readouterr().out
    table = jaxsens.methods()
    for family, names in __import__("jaxsens._method", fromlist=["by_family"]).by_family(table).items():
        assert f"  {family}:" in out
        for n in names:
            assert f"    {n}" in out and table[n].summary[:40] in out.replace("\n", " ") or n in out
    for flag in _cli_importance.option_flags(table).values():
        assert flag.flag in out, flag.flag
    assert "{auto,mse,mae,accuracy,log_loss}" in out or "metric" not in _cli_importance.option_flags(table)


def test_generated_flags_types_defaults_and_foreign_flags(small_regression, tmp_path, monkeypatch, request,
                                                          capsys):
    from jaxsens._method import Option

    seen = []

    def run(call):
        seen.append(dict(call.options))
        return jaxsens.jacobian_importance(call.model, call.data)

    opts = (Option("levels", "floats", (0.1, 0.2), "noise levels"), Option("features", "names", None, "which"),
            Option("shuffle", bool, False, "shuffle first"), Option("centre", bool, True, "centre first"),
            Option("n_things", int, 3, "how many", minimum=1), Option("style", str, "a", "style", choices=("a", "b")),
            Option("secret", "any", None, "API only", cli=False))
    _with_rows(monkeypatch, request, _fake_spec("fake-a", run=run, options=opts, family="gradient"))
    model, x = str(small_regression / "reg.onnx"), str(small_regression / "x.npy")
    base = ["importance", model, x, "--method", "fake-a", "--quiet", "--no-plot"]
    assert main([*base, "--out", str(tmp_path / "1")]) == 0  # nothing given: the method's defaults
    assert seen[-1] == {"levels": (0.1, 0.2), "features": None, "shuffle": False, "centre": True, "n_things": 3,
                        "style": "a", "secret": None}
    argv = [*base, "--out", str(tmp_path / "2"), "--levels", "0.5,1", "--features", "a,2", "--shuffle",
            "--no-centre", "--n-things", "7", "--style", "b"]
    assert main(argv) == 0
    assert seen[-1] == {"levels": (0.5, 1.0), "features": ("a", 2), "shuffle": True, "centre": False,
                        "n_things": 7, "style": "b", "secret": None}
    capsys.readouterr()
    for bad, expected in ((["--style", "c"], "invalid choice: 'c'"), (["--n-things", "0"], "n_things must be >= 1"),
                          (["--secret", "1"], "unrecognized arguments: --secret"),
                          (["--levels", "x"], "is not a comma-separated list of numbers")):
        assert main([*base, "--out", str(tmp_path / "3"), *bad]) == 2
        assert expected in _one_error_line(capsys.readouterr().err), bad
    # a flag of another method: refused, naming this method's options
    assert main(["importance", model, x, "--method", "jacobian", "--n-things", "2", "--out", str(tmp_path / "4"),
                 "--quiet"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert "--n-things does not apply to --method jacobian; its options are: " in err
    assert all(o.name.replace("_", "-") in err for o in jaxsens.methods()["jacobian"].options if o.cli)
    assert not (tmp_path / "4").exists()


def test_one_flag_per_option_name_and_clashes_refused():
    from converters.errors import ArgumentError
    from jaxsens._method import Option

    def run(call):
        return None

    a = _fake_spec("fa", run=run, options=(Option("depth", int, 2, "depth"),))
    b = _fake_spec("fb", run=run, options=(Option("depth", int, 5, "depth"),))
    flags = _cli_importance.option_flags({"fa": a, "fb": b})
    assert list(flags) == ["depth"] and flags["depth"].defaults == {"fa": 2, "fb": 5}
    assert "fa: 2; fb: 5" in _cli_importance._help_text(flags["depth"])
    c = _fake_spec("fc", run=run, options=(Option("depth", float, 2.0, "depth"),))
    with pytest.raises(ArgumentError, match="one name, one meaning"):
        _cli_importance.option_flags({"fa": a, "fc": c})
    d = _fake_spec("fd", run=run, options=(Option("top", int, 2, "clash"),))
    with pytest.raises(ArgumentError, match="shared command-line flag"):
        _cli_importance.option_flags({"fd": d})


def test_estimate_is_printed_before_the_run_and_progress_reported(small_regression, tmp_path, monkeypatch,
                                                                   request, capsys):
    order = []

    def estimate(call):
        order.append(("estimate", call.options["epochs"], call.batch_size))
        return {"seconds": 4000.0, "text": "3 steps x 10 networks"}

    def run(call):
        order.append(("run",))
        for done in (10, 20, 30) if call.progress else ():
            call.progress(done, 30)
        return jaxsens.jacobian_importance(call.model, call.data)

    from jaxsens._method import Option

    spec = _fake_spec("fake-r", run=run, estimate=estimate, family="retraining",
                      options=(Option("epochs", int, 200, "epochs"),))
    _with_rows(monkeypatch, request, spec)
    argv = ["importance", str(small_regression / "reg.onnx"), str(small_regression / "x.npy"), "--method",
            "fake-r", "--epochs", "5", "--batch-size", "16", "--out", str(tmp_path / "o"), "--no-plot"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert order == [("estimate", 5, 16), ("run",)]
    assert "fake-r: estimated cost about 67 min (3 steps x 10 networks)" in err
    assert re.search(r"100%.*\b30(\.0)?/30(\.0)?\b", err), err  # the progress bar ran to its total
    assert main([*argv[:-3], "--out", str(tmp_path / "q"), "--quiet"]) == 0  # --quiet: no estimate, no bar
    assert capsys.readouterr().err == "" and order[-1] == ("run",) and len(order) == 3


def test_progress_bar_shows_rate_and_total_for_a_streaming_method(small_regression, tmp_path, capsys):
    assert main(["importance", str(small_regression / "reg.onnx"), str(small_regression / "x.npy"),
                 "--out", str(tmp_path), "--no-plot", "--batch-size", "64"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"100%.*\b300/300\b.*rows/s", err), err


def test_feature_names_for_npy_data(small_regression, tmp_path, capsys):
    model, x = str(small_regression / "reg.onnx"), str(small_regression / "x.npy")
    base = ["importance", model, x, "--quiet", "--no-plot"]
    assert main([*base, "--out", str(tmp_path / "1"), "--feature-names", "p,q,r,s"]) == 0
    assert jaxsens.load_result(tmp_path / "1" / "importance.json").feature_names == ("p", "q", "r", "s")
    names = tmp_path / "names.txt"
    names.write_text("u\nv\n\nw\nz\n")
    assert main([*base, "--out", str(tmp_path / "2"), "--feature-names", f"@{names}"]) == 0
    assert jaxsens.load_result(tmp_path / "2" / "importance.json").feature_names == ("u", "v", "w", "z")
    capsys.readouterr()
    for bad, expected in (("p,q", "gives 2 names; the model's input (4,) has 4 features"),
                          ("p,p,q,r", "repeats ['p']"), (f"@{tmp_path / 'none.txt'}", "does not exist")):
        assert main([*base, "--out", str(tmp_path / "3"), "--feature-names", bad]) == 2
        assert expected in _one_error_line(capsys.readouterr().err), bad
    csv = str(small_regression / "data.csv")  # a header names the features: another list is refused
    assert main(["importance", model, csv, "--target-column", "target", "--feature-names", "p,q,r,s", "--quiet",
                 "--out", str(tmp_path / "4")]) == 2
    assert "differs from the header" in _one_error_line(capsys.readouterr().err)


def test_metric_is_a_choice_list_and_auto_follows_the_targets(small_regression, tmp_path, capsys):
    table = jaxsens.methods()
    name = next((n for n, s in table.items() if any(o.name == "metric" for o in s.options) and s.needs_data
                 and s.family != "retraining"), None)
    if name is None:
        pytest.skip("no method with a metric in the table yet")
    model, csv = str(small_regression / "reg.onnx"), str(small_regression / "data.csv")
    base = ["importance", model, csv, "--method", name, "--target-column", "target", "--quiet", "--no-plot"]
    assert main([*base, "--metric", "rmse", "--out", str(tmp_path / "1")]) == 2
    assert "argument --metric: invalid choice: 'rmse'" in _one_error_line(capsys.readouterr().err)
    assert main([*base, "--out", str(tmp_path / "2")]) == 0  # auto: float targets -> mse
    auto = jaxsens.load_result(tmp_path / "2" / "importance.json")
    assert main([*base, "--metric", "mse", "--out", str(tmp_path / "3")]) == 0
    mse = jaxsens.load_result(tmp_path / "3" / "importance.json")
    np.testing.assert_array_equal(auto.importance, mse.importance)


def test_seed_and_targets_refused_where_they_do_not_apply(small_regression, tmp_path, capsys):
    model, x = str(small_regression / "reg.onnx"), str(small_regression / "x.npy")
    deterministic = next(n for n, s in jaxsens.methods().items() if not s.random and s.needs_data
                         and not (s.needs_targets or s.uses_targets))
    assert main(["importance", model, x, "--method", deterministic, "--seed", "3", "--out", str(tmp_path / "1"),
                 "--quiet"]) == 2
    assert f"--method {deterministic} is deterministic: drop --seed" in _one_error_line(capsys.readouterr().err)
    assert main(["importance", model, x, "--method", deterministic, "--targets", str(small_regression / "y.npy"),
                 "--out", str(tmp_path / "2"), "--quiet"]) == 2
    assert f"--method {deterministic} does not use targets" in _one_error_line(capsys.readouterr().err)


def test_random_methods_take_a_seed_that_changes_the_draws(small_regression, tmp_path, capsys):
    name = next((n for n, s in jaxsens.methods().items() if s.random and s.needs_data
                 and s.family != "retraining"), None)
    if name is None:
        pytest.skip("no random method in the table yet")
    spec = jaxsens.methods()[name]
    base = ["importance", str(small_regression / "reg.onnx"), str(small_regression / "data.csv"), "--method", name,
            "--target-column", "target", "--quiet", "--no-plot"]
    results = []
    for i, seed in enumerate((None, "0", "5")):
        assert main([*base, "--out", str(tmp_path / str(i)), *(["--seed", seed] if seed else [])]) == 0, name
        results.append(jaxsens.load_result(tmp_path / str(i) / "importance.json"))
    np.testing.assert_array_equal(results[0].importance, results[1].importance)  # default seed 0
    assert not np.array_equal(results[0].importance, results[2].importance), spec.name
