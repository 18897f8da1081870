"""Multi-process runs (jaxsens.distributed): two real processes on 127.0.0.1 with gloo collectives, started here.

The oracle is the single-process run of the same call: every process must end with the same merged statistics
(bitwise: they fold the same float64 states in the same order), equal to the single-process result up to float32
rounding (chunk boundaries differ between the runs; random methods draw per global row, so the draws are the
same). The process pair also runs the command line, where only process 0 may write.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

import jaxsens
from jaxsens import _data, distributed
from jaxsens.cli import main
from tests._tol import assert_f32_close

BATCH = 128
WORKER = textwrap.dedent('''
    """One process of the test run: argv = folder coordinator process_id (or folder alone: single process)."""
    import sys

    import jax.numpy as jnp
    import numpy as np

    import jaxsens


    def apply(params, x):
        return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


    def model():
        rng = np.random.default_rng(0)
        params = {"w1": rng.normal(size=(5, 16)).astype(np.float32), "b1": rng.normal(size=16).astype(np.float32),
                  "w2": rng.normal(size=(16, 2)).astype(np.float32) / 4}
        return jaxsens.Model(apply, params, input_shape=(5,), output_shape=(2,))


    def results(folder):
        m, x, y = model(), f"{folder}/x.npy", f"{folder}/y.npy"
        return {
            "jacobian": jaxsens.jacobian_importance(m, x, batch_size=BATCH),
            "perturbation": jaxsens.perturbation_importance(m, x, key=3, batch_size=BATCH),
            "permutation": jaxsens.permutation_importance(m, x, y, key=1, n_repeats=2, block_rows=700,
                                                          batch_size=BATCH),
            "files": jaxsens.jacobian_importance(m, [f"{folder}/part{i}.npy" for i in range(3)], batch_size=BATCH),
            "parquet": jaxsens.jacobian_importance(m, f"{folder}/x.parquet", batch_size=BATCH),
            "one_row": jaxsens.jacobian_importance(m, np.load(x)[1000:1001], batch_size=BATCH),  # one share empty
        }


    BATCH = 128
    if __name__ == "__main__":
        folder, coordinator, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
        jaxsens.distributed.initialize(coordinator, 2, pid, timeout_s=60)
        out = {}
        for name, r in results(folder).items():
            out[name + ":importance"], out[name + ":stderr"] = r.importance, r.stderr
            out[name + ":n_samples"] = r.n_samples
        np.savez(f"{folder}/process{pid}.npz", **out)
        from jaxsens import examples
        from jaxsens.cli import main

        sys.exit(main(["importance", examples.default_model_path(), examples.default_data_path(), "--quiet",
                       "--out", f"{folder}/cli{pid}", "--distributed", "--coordinator", coordinator,
                       "--num-processes", "2", "--process-id", str(pid)]))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {
        **os.environ,
        "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    import pandas as pd

    folder = tmp_path_factory.mktemp("distributed")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2001, 5)).astype(np.float32)
    np.save(folder / "x.npy", x)
    for i, (lo, hi) in enumerate([(0, 500), (500, 1500), (1500, 2001)]):
        np.save(folder / f"part{i}.npy", x[lo:hi])
    pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).to_parquet(folder / "x.parquet", row_group_size=300)
    (folder / "worker.py").write_text(WORKER)
    spec = importlib.util.spec_from_file_location("jaxsens_distributed_worker", folder / "worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    m = worker.model()
    y = np.asarray(jax.vmap(lambda v: m.apply(m.params, v))(x))
    np.save(folder / "y.npy", (y + 0.1 * rng.normal(size=y.shape)).astype(np.float32))
    return folder, worker


@pytest.fixture(scope="module")
def two_processes(data_folder):
    """Both processes of one run: (their saved results, their outputs)."""
    folder, _ = data_folder
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(folder / "worker.py"), str(folder), coordinator, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"process exited with {p.returncode}:\n{out}\n{err[-3000:]}"
    return [dict(np.load(folder / f"process{i}.npz")) for i in range(2)], outs


@pytest.fixture(scope="module")
def one_process(data_folder):
    folder, worker = data_folder
    return worker.results(str(folder))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["jacobian", "perturbation", "permutation", "files", "parquet", "one_row"])
def test_two_processes_equal_one(two_processes, one_process, name):
    (p0, p1), _ = two_processes
    for field in ("importance", "stderr", "n_samples"):  # the same merged states, folded in the same order
        np.testing.assert_array_equal(p0[f"{name}:{field}"], p1[f"{name}:{field}"])
    single = one_process[name]
    assert int(p0[f"{name}:n_samples"]) == single.n_samples == (1 if name == "one_row" else 2001)
    magnitude = abs(single.baseline) if name == "permutation" else None  # a difference of losses
    assert_f32_close(
        p0[f"{name}:importance"],
        single.importance,
        n_terms=BATCH,
        magnitude=magnitude,
        probabilistic=True,
        err_msg=name,
    )
    assert_f32_close(p0[f"{name}:stderr"], single.stderr, n_terms=BATCH, probabilistic=True, err_msg=name)


@pytest.mark.slow
def test_only_process_0_writes_and_prints(data_folder, two_processes):
    from jaxsens import examples

    folder, _ = data_folder
    _, ((out0, _), (out1, _)) = two_processes
    assert sorted(os.listdir(folder / "cli0")) == ["importance.csv", "importance.json", "importance.png"]
    assert not (folder / "cli1").exists()
    assert "jacobian: 1000 samples" in out0 and out1 == ""
    single = jaxsens.jacobian_importance(
        jaxsens.load_model(examples.default_model_path()), examples.default_data_path()
    )
    written = jaxsens.load_result(folder / "cli0" / "importance.json")
    assert written.n_samples == single.n_samples
    assert_f32_close(written.importance, single.importance, n_terms=1000, probabilistic=True)


def test_bad_coordinator_is_a_jaxsens_error_within_the_timeout(tmp_path):
    from jaxsens import examples

    cmd = [
        sys.executable,
        "-m",
        "jaxsens.cli",
        "importance",
        examples.default_model_path(),
        examples.default_data_path(),
        "--out",
        str(tmp_path / "out"),
        "--distributed",
        "--coordinator",
        f"127.0.0.1:{_free_port()}",
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--distributed-timeout",
        "2",
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "jaxsens: error: could not join the distributed run at 127.0.0.1:" in proc.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "out").exists()


def test_arguments_are_checked_before_anything_starts(capsys):
    jax.devices()  # JAX runs in this process: initialize() must refuse, never start a service here
    with pytest.raises(jaxsens.ArgumentError, match="not HOST:PORT"):
        distributed.initialize("localhost", 2, 0)
    with pytest.raises(jaxsens.ArgumentError, match="process_id must be in 0 .. num_processes - 1 = 1"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(jaxsens.ArgumentError, match="before any JAX computation"):
        distributed.initialize("127.0.0.1:1234", 2, 0)  # this test process has computed already
    from jaxsens import examples

    model, data = examples.default_model_path(), examples.default_data_path()
    assert main(["importance", model, data, "--coordinator", "127.0.0.1:1234"]) == 2
    assert "--coordinator only apply with --distributed" in capsys.readouterr().err
    assert main(["importance", model, "--method", "garson", "--distributed"]) == 2
    assert "--method garson reads the weights only" in capsys.readouterr().err


def test_shares_keep_global_rows(tmp_path):
    """Each process's share: the right rows, numbered globally, for every way a format is cut."""
    import pandas as pd

    x = np.random.default_rng(3).normal(size=(1003, 4))
    np.save(tmp_path / "x.npy", x)
    pd.DataFrame(x, columns=list("abcd")).to_parquet(tmp_path / "x.parquet", row_group_size=100)
    pd.DataFrame(x, columns=list("abcd")).to_csv(tmp_path / "x.csv", index=False)
    for i, (lo, hi) in enumerate([(0, 100), (100, 900), (900, 1003)]):
        np.save(tmp_path / f"p{i}.npy", x[lo:hi])
    for data in (x, tmp_path / "x.npy", tmp_path / "x.parquet", tmp_path / "x.csv", str(tmp_path / "p*.npy")):
        source = _data.open_source(data, input_shape=(4,))
        for lo, hi in ((0, 501), (501, 1003), (250, 251)):
            share = distributed._rows(source, lo, hi)
            chunks = list(_data.iter_chunks(share, batch_size=64, input_shape=(4,), dtype=np.float64))
            rows = np.concatenate([c.xs[c.mask] for c in chunks])
            np.testing.assert_array_equal(rows, x[lo:hi])
            index = np.concatenate([c.row_index[c.mask] for c in chunks])
            np.testing.assert_array_equal(index, np.arange(lo, hi))
    # whole files, balanced by bytes: 100 / 800 / 103 rows -> [p0, p1] [p2] for 2 processes (each file once)
    files = _data.open_source(str(tmp_path / "p*.npy"), input_shape=(4,))
    assert [distributed._share(files, 1003, k, 2) for k in range(2)] == [(0, 900), (900, 1003)]
    assert [distributed._share(files, 1003, k, 3) for k in range(3)] == [(0, 100), (100, 900), (900, 1003)]
    assert [distributed._share(files, 1003, k, 4) for k in range(4)] == [
        (0, 250),
        (250, 501),
        (501, 752),
        (752, 1003),
    ]  # fewer files: ranges
