"""Shared pytest fixtures (kept small: anything specific to one file lives in that file)."""

from __future__ import annotations

import os

import pytest

# Quiet TensorFlow's C++ start-up logging in the test files that import it (must be set before the first import).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> os.PathLike:
    """One temporary folder for the whole session: model files written once and read by several tests."""
    return tmp_path_factory.mktemp("session")
