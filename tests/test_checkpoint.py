"""Checkpoint and resume (issue 14 item 2).

A real ``jaxsens importance`` process is SIGKILLed once its first checkpoint is on disk and continued with
``--resume``: every field of the saved result equals an uninterrupted run's, bit for bit (the oracle is the same
command run without a checkpoint). Also: a method with several engine calls (permutation, random), a random
streaming method through the Python API, jobs that differ refused naming what differs, ``--resume`` without a
checkpoint, and a save interrupted between write and rename leaving the previous checkpoint whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import jaxsens
from jaxsens import checkpointing, examples
from jaxsens._checkpoint import FOLDER_NAME
from jaxsens.cli import main

MODEL = examples.default_model_path()
N_ROWS = 30_000


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """30,000 rows of the bundled model's 82 inputs, binary labels, and 1,200 rows for the slower permutation."""
    folder = tmp_path_factory.mktemp("checkpoint")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_ROWS, examples.N_FEATURES)).astype(np.float32)
    y = (x[:, 3] + 0.5 * x[:, 17] > 0).astype(np.int64)
    np.save(folder / "x.npy", x)
    np.save(folder / "x_small.npy", x[:1200])
    np.save(folder / "y_small.npy", y[:1200])
    return folder


def _argv(files, out, *extra, data="x.npy"):
    return ["importance", MODEL, str(files / data), "--out", str(out), "--no-plot", "--quiet", *extra]


def _kill_after(argv, out, name: str) -> dict:
    """Run ``jaxsens`` in a new process, SIGKILL it as soon as ``OUT/.checkpoint/NAME`` exists; the saved counts."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxsens.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    target = out / FOLDER_NAME / name
    try:
        deadline = time.monotonic() + 300
        while not target.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    assert not (out / "importance.json").exists()
    with np.load(target, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def _assert_same_results(a, b) -> None:
    """Every field of two saved results (importance.json) equal, bit for bit; the CSV tables byte for byte."""
    ra, rb = jaxsens.load_result(a / "importance.json"), jaxsens.load_result(b / "importance.json")
    assert type(ra) is type(rb)
    for f in dataclasses.fields(ra):
        np.testing.assert_array_equal(
            np.asarray(getattr(ra, f.name), dtype=object),
            np.asarray(getattr(rb, f.name), dtype=object),
            err_msg=f.name,
        )
    assert (a / "importance.csv").read_bytes() == (b / "importance.csv").read_bytes()


# ---------------------------------------------------------------------------------- killed, then resumed
@pytest.mark.slow  # a new process: import, model load, compile (several seconds on 2 busy cores)
def test_sigkilled_run_resumes_bit_identical(files, tmp_path, capsys):
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(_argv(files, ref, "--batch-size", "128")) == 0
    argv = _argv(files, out, "--batch-size", "128", "--checkpoint-every", "10")
    saved = _kill_after(argv, out, "p0-call0000.npz")
    n_chunks = -(-N_ROWS // 128)
    assert 10 <= saved["chunks"] < n_chunks and saved["chunks"] % 10 == 0 and not saved["finished"]
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"engine call 0 resumed after {saved['chunks']} chunks ({saved['rows']:,} rows)" in err
    _assert_same_results(ref, out)
    assert not (out / FOLDER_NAME).exists()  # removed after success
    assert main([*argv, "--resume"]) == 2  # nothing left to resume
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.slow  # a new process: import, model load, compile (several seconds on 2 busy cores)
def test_sigkilled_run_with_several_engine_calls_resumes(files, tmp_path, capsys):
    """Permutation (random) runs the engine once per repeat: the finished call is replayed from its saved state,
    the interrupted one resumed, the rest computed."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    common = (
        "--method",
        "permutation",
        "--targets",
        str(files / "y_small.npy"),
        "--n-repeats",
        "3",
        "--seed",
        "7",
        "--batch-size",
        "32",
    )
    assert main(_argv(files, ref, *common, data="x_small.npy")) == 0
    argv = _argv(files, out, *common, "--checkpoint-every", "4", data="x_small.npy")
    saved = _kill_after(argv, out, "p0-call0001.npz")
    assert saved["chunks"] >= 4
    capsys.readouterr()
    assert main([*argv[:-2], "--resume"]) == 0  # without --checkpoint-every: the saved interval
    err = capsys.readouterr().err
    assert "engine call 0 finished, replayed" in err and "engine call 1 resumed after" in err
    _assert_same_results(ref, out)
    assert not (out / FOLDER_NAME).exists()


# ---------------------------------------------------------------------------------- the Python API
class _Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


def _stop_at(rows: int):
    def progress(done, _total):
        if done >= rows:
            raise _Killed

    return progress


def test_api_random_method_resumes_bit_identical(tmp_path):
    """Perturbation draws its noise from per-row keys: the resumed rows draw the same numbers."""
    model = jaxsens.load_model(MODEL)
    xs = np.random.default_rng(1).normal(size=(2000, examples.N_FEATURES)).astype(np.float32)
    opts = {"key": 3, "batch_size": 64}
    ref = jaxsens.perturbation_importance(model, xs, **opts)
    folder = tmp_path / "ck"
    with pytest.raises(_Killed), checkpointing(folder, every=4):
        jaxsens.perturbation_importance(model, xs, progress=_stop_at(1000), **opts)
    with checkpointing(folder, resume=True) as ckpt:
        got = jaxsens.perturbation_importance(model, xs, **opts)
    assert ckpt.resumed_from[0] in (12, 16)  # 1,000 rows: 16 chunks retired, saved every 4
    for f in dataclasses.fields(ref):
        np.testing.assert_array_equal(
            np.asarray(getattr(ref, f.name), dtype=object),
            np.asarray(getattr(got, f.name), dtype=object),
            err_msg=f.name,
        )
    assert not folder.exists()


def test_api_two_passes_over_a_csv_with_a_target_column_resume_bit_identical(tmp_path):
    """Input perturbation reads a CSV and its target column twice (feature standard deviations, then the errors
    with per-row noise): killed in the second pass, the first is replayed from its saved state."""
    model = jaxsens.load_model(MODEL)
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(768, examples.N_FEATURES)).astype(np.float32)
    y = (xs[:, 3] > 0).astype(int)
    path = tmp_path / "data.csv"
    names = [f"f{i:02d}" for i in range(examples.N_FEATURES)]
    rows = [",".join(f"{v:.6g}" for v in row) + f",{t}" for row, t in zip(xs, y)]
    path.write_text(",".join([*names, "y"]) + "\n" + "\n".join(rows) + "\n")
    opts = {"key": 4, "batch_size": 64, "levels": (0.1, 0.5)}
    ref = jaxsens.input_perturbation(model, str(path), "y", **opts)
    folder = tmp_path / "ck"
    with pytest.raises(_Killed), checkpointing(folder, every=3):
        jaxsens.input_perturbation(model, str(path), "y", progress=_stop_at(768 + 400), **opts)
    with checkpointing(folder, resume=True) as ckpt:
        got = jaxsens.input_perturbation(model, str(path), "y", **opts)
    assert ckpt.resumed_from[0] == 12 and 3 <= ckpt.resumed_from[1] < 12  # pass 1: all its 12 chunks
    for f in dataclasses.fields(ref):
        np.testing.assert_array_equal(np.asarray(getattr(ref, f.name), dtype=object),
                                      np.asarray(getattr(got, f.name), dtype=object), err_msg=f.name)


def test_a_save_cut_between_write_and_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """The third write (the job file, then saves; a save still queued when a newer one comes is dropped) dies after
    its bytes are written, before the rename, as a kill would: the last whole checkpoint is loaded, and the
    temporary file a kill leaves behind is cleaned up."""
    model = jaxsens.load_model(MODEL)
    xs = np.random.default_rng(2).normal(size=(2000, examples.N_FEATURES)).astype(np.float32)
    ref = jaxsens.jacobian_importance(model, xs, batch_size=128)
    folder = tmp_path / "ck"
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        real_fsync(fd)
        if len(calls) == 3:
            raise _Killed

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(_Killed), checkpointing(folder, every=3):
        jaxsens.jacobian_importance(model, xs, batch_size=128)
    monkeypatch.setattr(os, "fsync", real_fsync)
    with np.load(folder / "p0-call0000.npz", allow_pickle=False) as z:
        saved = json.loads(str(z["meta"]))  # a whole file, from a save before the cut one
    assert saved["chunks"] % 3 == 0 and 3 <= saved["chunks"] < 16 and not saved["finished"]
    assert [p.name for p in folder.iterdir() if p.suffix == ".tmp"] == []
    (folder / ".p0-call0000.npz.123-abcd.tmp").write_bytes(b"PK\x03\x04 half a file")  # what a kill leaves
    with checkpointing(folder, resume=True) as ckpt:
        got = jaxsens.jacobian_importance(model, xs, batch_size=128)
    assert ckpt.resumed_from == {0: saved["chunks"]}
    np.testing.assert_array_equal(ref.importance, got.importance)
    np.testing.assert_array_equal(ref.stderr, got.stderr)
    assert not folder.exists()


def test_api_refuses_changed_data_at_the_resume_point(tmp_path):
    """A data file changed in a row already folded (the command line would also see it in its file hash; the
    Python API hashes no file) is caught when the resumed run reads past the folded rows."""
    model = jaxsens.load_model(MODEL)
    path = tmp_path / "x.npy"
    xs = np.random.default_rng(3).normal(size=(2000, examples.N_FEATURES)).astype(np.float32)
    np.save(path, xs)
    folder = tmp_path / "ck"
    with pytest.raises(_Killed), checkpointing(folder, every=2):
        jaxsens.jacobian_importance(model, str(path), batch_size=128, progress=_stop_at(1000))
    xs[200, 0] += 1.0  # in chunk 1 (rows 128..255): one of the chunks compared (every 2nd)
    np.save(path, xs)
    with (
        pytest.raises(
            jaxsens.DataError,
            match=r"the data differ from the checkpointed job's in rows 0\.\.\d+ "
            "already folded",
        ),
        checkpointing(folder, resume=True),
    ):
        jaxsens.jacobian_importance(model, str(path), batch_size=128)


def test_api_refuses_another_model_or_key(tmp_path):
    model = jaxsens.load_model(MODEL)
    xs = np.random.default_rng(4).normal(size=(2000, examples.N_FEATURES)).astype(np.float32)
    folder = tmp_path / "ck"
    with pytest.raises(_Killed), checkpointing(folder, every=2):
        jaxsens.perturbation_importance(model, xs, key=1, batch_size=64, progress=_stop_at(500))
    with (
        pytest.raises(
            jaxsens.ArgumentError,
            match=r"engine call 0 differs .* in the model's weights or the "
            r"method's arrays \(key",
        ),
        checkpointing(folder, resume=True),
    ):
        jaxsens.perturbation_importance(model, xs, key=2, batch_size=64)
    other = dataclasses.replace(model, params={k: v * 2 for k, v in model.params.items()})
    with pytest.raises(jaxsens.ArgumentError, match="model's weights"), checkpointing(folder, resume=True):
        jaxsens.perturbation_importance(other, xs, key=1, batch_size=64)
    with (
        pytest.raises(jaxsens.ArgumentError, match="the batch size: checkpoint 64, now 128"),
        checkpointing(folder, resume=True),
    ):
        jaxsens.perturbation_importance(model, xs, key=1, batch_size=128)
    with pytest.raises(jaxsens.ArgumentError, match="unfinished job; resume it"), checkpointing(folder):
        jaxsens.perturbation_importance(model, xs, key=1, batch_size=64)  # refused at its first engine call


# ---------------------------------------------------------------------------------- refusals on the command line
def test_cli_refuses_a_different_job_naming_what_differs(files, tmp_path, capsys):
    """A run that fails part-way (a NaN row at the end) keeps its checkpoint; resuming it with other options or
    other data is refused before the model is loaded, naming the flag or file."""
    x = np.load(files / "x_small.npy")
    x[-1, 5] = np.nan
    data = tmp_path / "x.npy"
    np.save(data, x)
    out = tmp_path / "out"
    argv = [
        "importance",
        MODEL,
        str(data),
        "--out",
        str(out),
        "--no-plot",
        "--quiet",
        "--checkpoint-every",
        "2",
        "--batch-size",
        "128",
    ]
    assert main(argv) == 2
    assert "holds NaN" in capsys.readouterr().err
    assert (out / FOLDER_NAME / "p0-call0000.npz").exists()
    cases = [
        ([*argv, "--resume", "--nan-policy", "skip"], '--nan-policy: checkpoint null, now "skip"'),
        ([*argv[:-1], "64", "--resume"], "--batch-size: checkpoint 128, now 64"),
        ([*argv, "--resume", "--method", "gradient-x-input"], '--method: checkpoint "jacobian"'),
        (argv, "holds the checkpoint of an unfinished job; resume it"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err, err
    x[0, 0] += 1.0
    np.save(data, x)
    assert main([*argv, "--resume"]) == 2
    assert (
        f"cannot resume: the job differs from the checkpointed one in {str(out / FOLDER_NAME)!r} in data "
        f'{data}: checkpoint "' in capsys.readouterr().err
    )


def test_cli_resume_without_checkpoint_and_methods_without_chunks(files, tmp_path, capsys):
    assert main(_argv(files, tmp_path / "a", "--resume")) == 2
    assert "resume: no checkpoint in" in capsys.readouterr().err
    assert main(_argv(files, tmp_path / "b", "--method", "garson", "--checkpoint-every", "5")) == 2
    assert "--method garson (weights) streams no data through the engine" in capsys.readouterr().err
    assert main(_argv(files, tmp_path / "c", "--checkpoint-every", "0")) == 2
    assert "--checkpoint-every must be a positive number of chunks, got 0" in capsys.readouterr().err
