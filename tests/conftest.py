"""Shared pytest fixtures (kept small: anything specific to one file lives in that file)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Quiet TensorFlow's C++ start-up logging in the test files that import it (must be set before the first import).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX's persistent compilation cache (jaxsens/_cache.py) of this run, shared with the subprocesses the tests
# start: a fresh folder, never the user's ~/.cache, removed at exit.
if "JAXSENS_CACHE_DIR" not in os.environ:  # a given folder (or "off") is the caller's choice
    os.environ["JAXSENS_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxsens-test-cache-")
    atexit.register(shutil.rmtree, os.environ["JAXSENS_CACHE_DIR"], True)


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> os.PathLike:
    """One temporary folder for the whole session: model files written once and read by several tests."""
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_code():
    """Drop JAX's compiled executables after each test file. One process runs ~4,500 tests that compile thousands of
    kernels; a full run once crashed inside XLA's compiler (SIGSEGV) near its end while every file passed on its own,
    so nothing compiled is kept alive from one file to the next (files that share kernels compile them again)."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
