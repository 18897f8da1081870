"""README.md stays true: the supported-op table matches the registry; the quick start runs."""

from __future__ import annotations

import pathlib
import re

from converters.onnx_to_jax.optable import BEGIN, END, markdown_table

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_supported_op_table_matches_registry():
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == markdown_table(), "run: python -m converters.onnx_to_jax.optable, paste into README.md"


def test_quick_start_runs():
    text = README.read_text()
    block = re.search(r"<!-- quickstart -->\s*```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 12
    exec(compile(block, "README quick start", "exec"), {})


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README.read_text(), ".ci/run must run exactly the README's test command"
