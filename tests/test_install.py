"""A fresh install: build the wheel, check it holds every file the packages read at run time, install it into a new
virtual environment and run ``jaxsens demo`` from there (not from this checkout's editable install).

The heavy dependencies (jax, onnx, ...) come from the system site-packages (``--system-site-packages``), so the test
needs no network: the wheel is built without build isolation and installed with ``--no-deps --no-index``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxsens", "converters")


def _source_files() -> list[str]:
    """The files a commit of this checkout would hold: tracked, plus new files git does not ignore."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know which files belong to the package")
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_holds_the_data_files_and_the_demo_runs_from_a_fresh_venv(tmp_path):
    files = _source_files()
    # build from a copy holding only the checkout's own files, so nothing left in the working tree (build/,
    # egg-info, caches) leaks into the wheel and the checkout is not written to
    src = tmp_path / "src"
    for f in files:
        if "/" not in f or f.split("/", 1)[0] in PACKAGES:
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp_path / "dist", src])
    (wheel,) = (tmp_path / "dist").glob("jaxsens-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())

    package_files = [f for f in files if f.split("/", 1)[0] in PACKAGES]
    data = [f for f in package_files if not f.endswith(".py")]
    assert "jaxsens/examples/default.onnx" in data and "jaxsens/examples/default_data.npy" in data
    assert sorted(set(data) - in_wheel) == [], "data files missing from the wheel: fix [tool.setuptools.package-data]"
    assert sorted({f for f in package_files if f.endswith(".py")} - in_wheel) == [], "modules missing from the wheel"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    python = venv / "bin" / "python"
    # pip comes from the system site; --ignore-installed: the editable jaxsens there is neither used nor touched
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--no-compile", wheel])

    run_dir = tmp_path / "elsewhere"  # outside the checkout: its folder is not on sys.path
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    show = ("import jaxsens, converters, jaxsens.examples as e\n"
            "print(jaxsens.__file__); print(converters.__file__); print(e.default_data_path())")
    where = _run([python, "-I", "-c", show], cwd=run_dir, env=env).stdout.split()
    site = str(venv.resolve())
    assert all(os.path.realpath(p).startswith(site) for p in where), (where, site)  # the wheel, not the editable
    assert os.path.isfile(where[2])

    # the wheel's own package runs the demo
    code = ("import sys, jaxsens; assert jaxsens.__file__.startswith(sys.prefix), jaxsens.__file__\n"
            "from jaxsens.cli import main; sys.exit(main(['demo', '--out', 'a', '--quiet', '--no-plot']))")
    out = _run([python, "-I", "-c", code], cwd=run_dir, env=env).stdout
    assert "f03" in out and (run_dir / "a" / "importance.json").is_file()
    # and so does the installed console script, as a user would type it
    script = venv / "bin" / "jaxsens"
    assert script.read_text().startswith(f"#!{python}")
    out = _run(["jaxsens", "demo", "--out", "b", "--quiet", "--no-plot"], cwd=run_dir, env=env).stdout
    assert "f03" in out and (run_dir / "b" / "importance.csv").is_file()
