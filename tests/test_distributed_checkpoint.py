"""Checkpoint and resume of a multi-process run (issue 14 items 1 and 2 together).

Two real ``jaxsens importance --distributed`` processes on 127.0.0.1 are SIGKILLed once each has saved its share's
first checkpoint, then both are started again with ``--resume``. The oracle is the same two-process command run
without a checkpoint: the resumed run's outputs equal it bit for bit. Every process keeps its checkpoint in the
job's ``OUT/.checkpoint/`` (processes other than 0 write their outputs to a scratch folder, which once held their
checkpoints too, so a killed job could not resume their shares).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxsens import examples
from jaxsens._checkpoint import FOLDER_NAME
from tests.test_checkpoint import _assert_same_results
from tests.test_distributed import _env, _free_port

N_ROWS = 60_000


def _start(data, out, *extra) -> list[subprocess.Popen]:
    """Both processes of one two-process ``jaxsens importance`` run (started, not awaited)."""
    coordinator = f"127.0.0.1:{_free_port()}"
    argv = ["importance", examples.default_model_path(), str(data), "--out", str(out), "--no-plot", "--quiet",
            "--batch-size", "128", "--distributed", "--coordinator", coordinator, "--num-processes", "2",
            "--distributed-timeout", "120", *extra]
    return [
        subprocess.Popen([sys.executable, "-m", "jaxsens.cli", *argv, "--process-id", str(i)], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]


def _finish(procs) -> list[tuple[int, str]]:
    """(exit status, stderr) of each process, waited for."""
    out = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        out.append((p.returncode, err))
    return out


@pytest.mark.slow  # three two-process runs: imports, model loads and compiles (tens of seconds on 2 busy cores)
def test_killed_distributed_run_resumes_every_share_bit_identical(tmp_path):
    rng = np.random.default_rng(5)
    data = tmp_path / "x.npy"
    np.save(data, rng.normal(size=(N_ROWS, examples.N_FEATURES)).astype(np.float32))
    ref, out = tmp_path / "ref", tmp_path / "out"

    done = _finish(_start(data, ref))
    assert [code for code, _ in done] == [0, 0], done

    procs = _start(data, out, "--checkpoint-every", "10")
    targets = [out / FOLDER_NAME / f"p{i}-call0000.npz" for i in range(2)]
    try:
        deadline = time.monotonic() + 300
        while not all(t.exists() for t in targets):
            assert all(p.poll() is None for p in procs), _finish(procs)
            assert time.monotonic() < deadline, "no checkpoint of both shares after 300 s"
            time.sleep(0.002)
        for p in procs:
            p.send_signal(signal.SIGKILL)
    finally:
        for p in procs:
            p.kill()
        killed = _finish(procs)
    assert [code for code, _ in killed] == [-signal.SIGKILL] * 2, killed  # killed, not finished
    assert not (out / "importance.json").exists()
    saved = []
    for t in targets:
        with np.load(t, allow_pickle=False) as z:
            saved.append(json.loads(str(z["meta"])))
    # one share may have finished (it waits for the other at the merge), the other was stopped part-way
    assert not all(s["finished"] for s in saved), saved

    resumed = _finish(_start(data, out, "--checkpoint-every", "10", "--resume"))
    assert [code for code, _ in resumed] == [0, 0], resumed
    assert re.search(r"engine call 0 (resumed after|finished, replayed) \d+ chunks", resumed[0][1]), resumed[0][1]
    _assert_same_results(ref, out)
    assert not (out / FOLDER_NAME).exists()  # every process removed its files after success
