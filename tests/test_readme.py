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
    block = re.search(r"<!-- quickstart -->\s*```python\n(.*?)```", text, re.DOTALL).group(1)
    assert len(block.strip().splitlines()) <= 12
    exec(compile(block, "README quick start", "exec"), {})


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README.read_text(), ".ci/run must run exactly the README's test command"


def _cells(line: str) -> tuple[str, ...]:
    """A markdown table row's cells, with ``\\|`` unescaped and the code ticks of name / function dropped."""
    cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
    return tuple(c[1:-1] if c.startswith("`") and c.endswith("`") else c for c in cells)


def test_method_table_matches_jaxsens_methods():
    """README's method table is exactly ``table_rows(jaxsens.methods())``: a new row needs its README line."""
    import jaxsens
    from jaxsens._cli_importance import readme_table
    from jaxsens._method import table_rows

    text = README.read_text()
    block = text[text.index("<!-- methods:begin -->"):text.index("<!-- methods:end -->")].strip().splitlines()[1:]
    assert _cells(block[0]) == ("name", "function", "family", "targets", "random", "summary")
    rows = [_cells(line) for line in block[2:]]
    assert rows == [tuple(r) for r in table_rows(jaxsens.methods())], (
        "README.md's method table is out of date; paste between the methods markers the output of:\n"
        "python -c 'from jaxsens._cli_importance import readme_table; print(readme_table())'\n\n" + readme_table()
    )


def test_command_line_examples_run(tmp_path, monkeypatch, capsys):
    """Every `jaxsens importance` line of the README's command-line block runs on the bundled model and data
    (model.onnx, rows.npy, a data.csv with a label column y, y.npy, names.txt); demo / convert / bench / info are
    run by tests/test_cli.py."""
    import shlex

    import numpy as np
    import pandas as pd

    import jaxsens
    from jaxsens import examples
    from jaxsens.cli import main

    model = jaxsens.load_model(examples.default_model_path())
    x = np.load(examples.default_data_path())[:200]
    y = np.asarray(model(x)).argmax(1)  # class labels: --metric auto -> log_loss for this softmax model
    (tmp_path / "model.onnx").write_bytes(pathlib.Path(examples.default_model_path()).read_bytes())
    np.save(tmp_path / "rows.npy", x)
    np.save(tmp_path / "y.npy", y)
    pd.DataFrame(x, columns=model.feature_names).assign(y=y).to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "names.txt").write_text("\n".join(f"input_{i}" for i in range(x.shape[1])) + "\n")
    monkeypatch.chdir(tmp_path)
    text = README.read_text()
    block = re.search(r"<!-- cli-examples -->\s*```bash\n(.*?)```", text, re.DOTALL).group(1)
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("jaxsens importance")]
    assert len(commands) >= 4
    methods = jaxsens.methods()
    for i, line in enumerate(commands):
        argv = shlex.split(line)[1:]
        method = argv[argv.index("--method") + 1] if "--method" in argv else "jacobian"
        if method not in methods:  # TRANSITION: a method not yet on the protocol
            continue
        argv = [a for a in argv] + ["--quiet", "--no-plot"] + ([] if "--out" in argv else ["--out", f"out{i}"])
        assert main(argv) == 0, (line, capsys.readouterr().err)
        out = capsys.readouterr().out
        assert "rank" in out and "wrote" in out, line


def _block(marker: str) -> str:
    return re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)


def test_weekly_compare_example_runs(tmp_path, monkeypatch, capsys):
    """The seed-000 section's Python block runs on the bundled model and prints what it promises."""
    monkeypatch.chdir(tmp_path)
    exec(compile(_block("compare-example"), "README compare example", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("drift ") and "changed, ignored:" in out and "largest changes" in out
    assert (tmp_path / "compare.png").stat().st_size > 0


def test_inside_view_example_runs(capsys):
    """The seed-003 section's Python block runs on the bundled model and gives what it says."""
    ns: dict = {}
    exec(compile(_block("inside-example"), "README inside example", "exec"), ns)
    model, acts, hidden = ns["model"], ns["acts"], ns["hidden"]
    assert list(acts) == list(model.layer_names)
    assert hidden.importance.shape == (model.n_outputs, *model.layer_shape(model.layer_names[1]))
    assert ns["stats"].n_samples == len(ns["xs"])
    assert str(hidden.importance.shape) in capsys.readouterr().out
