"""The shared invariant table: every row of :func:`jaxsens.methods` passes the same checks.

A new row in the table is tested here without an edit. The models are built in the test: a dense MLP (4 inputs
-> 6 tanh -> 2 linear outputs, ``jaxsens.dense_model``) with continuous targets drawn from its own outputs, and a
softmax classifier of the same shape (3 classes) with labels drawn from its own probabilities. Input ``c`` (index
2) has zero weights into the hidden layer: the models ignore it.

Invariants: (a) the ignored input gets exactly 0 where ``spec.exact_zero``; (b) ``batch_size`` 7 == 64 within
float32 rounding; (c) 4 forced host devices == 1 (one subprocess for all methods); (d) ``save`` /
``load_result`` bit for bit; (e) ``to_frame`` columns, ``stderr`` present, finite, same shape; (f) NaN policy;
(g) progress reported; (h) a CLI run on a ``.npy`` and on a CSV writes the three files; (i) the table's entries
and the one calling convention. Retraining methods run with small values of their cost options (by family).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from _tol import assert_f32_close

import jaxsens
from jaxsens._method import FAMILIES

METHODS = jaxsens.methods()
NAMES = list(METHODS)
DATA_NAMES = [n for n in NAMES if METHODS[n].needs_data]
ZERO_NAMES = [n for n in NAMES if METHODS[n].exact_zero]  # the maths guarantees 0 for an ignored input
N_ROWS = 40
IGNORED = 2  # input "c": zero weights into the hidden layer
FEATURES = ("a", "b", "c", "d")
# Cost options of the retraining family, made small (only where spec.family == "retraining").
SMALL = {"epochs": 3, "n_repeats": 2, "n_draws": 2}  # retraining: every step (4 features, 11 tiny networks)


# ---------------------------------------------------------------------------------------------- problems
@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    layers: tuple  # ((W, b), ...) float32
    activations: tuple[str, ...]
    x: np.ndarray  # [N_ROWS, 4] float32
    y: np.ndarray  # float32 [N_ROWS, 2] (values) or int64 [N_ROWS] (labels)

    @property
    def model(self):
        return jaxsens.dense_model(
            [{"W": w, "b": b} for w, b in self.layers], self.activations, feature_names=FEATURES
        )


def _problem(name: str) -> Problem:
    """A seeded MLP ignoring input c, with targets drawn from its own outputs (regenerated identically in the
    4-device subprocess)."""
    rng = np.random.default_rng(11 if name == "values" else 12)
    n_out = 2 if name == "values" else 3
    w1 = rng.normal(size=(4, 6)).astype(np.float32)
    w1[IGNORED] = 0.0
    layers = (
        (w1, rng.normal(scale=0.1, size=6).astype(np.float32)),
        (rng.normal(scale=0.7, size=(6, n_out)).astype(np.float32), rng.normal(scale=0.1, size=n_out).astype(np.float32)),
    )
    activations = ("tanh", "identity" if name == "values" else "softmax")
    x = rng.normal(size=(N_ROWS, 4)).astype(np.float32)
    out = np.asarray(jaxsens.dense_model([{"W": w, "b": b} for w, b in layers], activations)(x), np.float64)
    if name == "values":
        y = (out + 0.1 * rng.normal(size=out.shape)).astype(np.float32)
    else:
        cum = np.cumsum(out / out.sum(1, keepdims=True), axis=1)
        y = np.minimum((rng.random((N_ROWS, 1)) > cum).sum(1), n_out - 1).astype(np.int64)
    return Problem(name, layers, activations, x, y)


PROBLEMS = {name: _problem(name) for name in ("values", "labels")}


def small_options(spec) -> dict:
    """Defaults from the spec, except small cost options for the retraining family."""
    if spec.family != "retraining":
        return {}
    return {o.name: SMALL[o.name] for o in spec.options if o.name in SMALL and o.type is int}


def run(spec, problem: Problem, x=None, **kw):
    """``spec.function`` on ``problem`` with the one calling convention."""
    uses_targets = spec.needs_targets or spec.uses_targets
    data = (problem.x if x is None else x) if spec.needs_data else None
    return spec.function(problem.model, data, problem.y if uses_targets else None,
                         **small_options(spec), **kw)


_CACHE: dict = {}


def reference(name: str, problem: str = "values"):
    """``(result, progress calls)`` at batch_size 8, computed once per method and problem."""
    if (name, problem) not in _CACHE:
        spec = METHODS[name]
        calls = []
        kw = {"batch_size": 8} if spec.needs_data else {}
        result = run(spec, PROBLEMS[problem], progress=lambda done, total=None, *a, **k: calls.append((done, total)),
                     **kw)
        _CACHE[name, problem] = (result, calls)
    return _CACHE[name, problem]


def _close(a, b, name, what, n_rows=N_ROWS):
    """importance and stderr equal within float32 rounding: sums of ``n_rows`` per-row terms whose size is
    about ``|mean| + spread`` (the spread from stderr * sqrt(n)), compared on both sides."""
    scale = float(np.nanmax(np.abs(a.importance))) + float(np.nanmax(a.stderr)) * np.sqrt(max(a.n_samples, 1))
    for field in ("importance", "stderr"):
        assert_f32_close(getattr(b, field), getattr(a, field), n_terms=2 * n_rows, magnitude=scale,
                         err_msg=f"{name}: {field} ({what})")


# --------------------------------------------------------------------------------------- (i) the table
def test_the_table_is_not_empty_and_in_family_order():
    assert NAMES, "jaxsens.methods() is empty"
    order = [FAMILIES.index(METHODS[n].family) for n in NAMES]
    assert order == sorted(order), [(n, METHODS[n].family) for n in NAMES]


@pytest.mark.parametrize("name", NAMES)
def test_entry_has_the_fields_and_the_one_calling_convention(name):
    spec = METHODS[name]
    assert spec.name == name and spec.family in FAMILIES and spec.summary
    for attr in ("needs_targets", "random", "needs_data", "uses_targets", "exact_zero", "per_output"):
        assert isinstance(getattr(spec, attr), bool), (name, attr)
    assert getattr(jaxsens, spec.function_name) is spec.function and spec.function.__name__ == spec.function_name
    assert issubclass(spec.result, jaxsens.Result) and getattr(jaxsens, spec.result.__name__) is spec.result
    assert spec.function.__doc__ and spec.function_name in jaxsens.__all__
    params = list(inspect.signature(spec.function).parameters.values())
    head = [(p.name, p.kind, p.default) for p in params[:9]]
    P = inspect.Parameter
    assert head == [
        ("model", P.POSITIONAL_OR_KEYWORD, P.empty), ("data", P.POSITIONAL_OR_KEYWORD, None),
        ("targets", P.POSITIONAL_OR_KEYWORD, None), ("key", P.KEYWORD_ONLY, None),
        ("outputs", P.KEYWORD_ONLY, None), ("batch_size", P.KEYWORD_ONLY, None),
        ("progress", P.KEYWORD_ONLY, None), ("nan_policy", P.KEYWORD_ONLY, "raise"),
        ("devices", P.KEYWORD_ONLY, None),
    ], name
    rest = [(p.name, p.kind, p.default) for p in params[9:]]
    assert rest == [(o.name, P.KEYWORD_ONLY, o.default) for o in spec.options], name
    if spec.needs_targets:
        with pytest.raises(jaxsens.ArgumentError, match="targets"):
            spec.function(PROBLEMS["values"].model, PROBLEMS["values"].x)


def test_options_sharing_a_name_share_type_and_choices():
    seen: dict[str, tuple] = {}
    for spec in METHODS.values():
        for o in spec.options:
            first = seen.setdefault(o.name, (spec.name, o.type, o.choices))
            assert (o.type, o.choices) == first[1:], (
                f"option {o.name!r}: {first[0]} declares {first[1:]}, {spec.name} {(o.type, o.choices)}"
            )
    from jaxsens._cli_importance import option_flags

    flags = option_flags(METHODS)  # raises on a clash or a name taken by a shared flag
    # every CLI option gets its flag: "any" options only where they name the CLI's type (a path for baseline)
    assert set(flags) == {o.name for s in METHODS.values() for o in s.options
                          if o.cli and (o.type != "any" or o.cli_type is not None)}
    assert flags["baseline"].type is str


# ------------------------------------------------------------------------------------ (a) exact zero
@pytest.mark.parametrize("problem", ["values", "labels"])
@pytest.mark.parametrize("name", ZERO_NAMES)
def test_an_ignored_input_gets_exactly_zero(name, problem):
    result, _ = reference(name, problem)
    imp = result.importance
    assert np.all(imp[..., IGNORED] == 0.0), (name, imp)
    assert np.all(np.abs(imp[..., [0, 1, 3]]).max() > 0), (name, imp)  # the others are not all zero


# ------------------------------------------------------------------------------ (b) batch-size invariance
@pytest.mark.parametrize("problem", ["values", "labels"])
@pytest.mark.parametrize("name", DATA_NAMES)
def test_batch_size_does_not_change_the_result(name, problem):
    spec = METHODS[name]
    a = run(spec, PROBLEMS[problem], batch_size=7)
    b = run(spec, PROBLEMS[problem], batch_size=64)
    assert a.n_samples == b.n_samples
    _close(a, b, name, f"batch_size 7 vs 64, {problem}")


# ------------------------------------------------------------------------------ (c) 4 devices equal 1
def device_worker(out_path: str) -> None:
    """Run in a subprocess with 4 forced host devices: every data method at batch_size 8, results to .npz."""
    import jax

    assert jax.device_count() == 4, jax.devices()
    arrays = {}
    for name in DATA_NAMES:
        spec = METHODS[name]
        try:
            r = run(spec, PROBLEMS["values"], batch_size=8)
            arrays[f"{name}/importance"] = r.importance
            arrays[f"{name}/stderr"] = r.stderr
        except Exception as e:  # noqa: BLE001 - reported by the parent, per method
            arrays[f"{name}/error"] = np.asarray(f"{type(e).__name__}: {e}")
    np.savez(out_path, **arrays)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices") / "results.npz"
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    code = (f"import sys; sys.path.insert(0, {str(root / 'tests')!r}); from test_methods import device_worker; "
            f"device_worker({str(out)!r})")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as f:
        return dict(f)


@pytest.mark.parametrize("name", DATA_NAMES)
def test_four_devices_equal_one(name, four_devices):
    assert f"{name}/error" not in four_devices, str(four_devices.get(f"{name}/error"))
    one, _ = reference(name)
    four = dataclasses.replace(one, importance=four_devices[f"{name}/importance"],
                               stderr=four_devices[f"{name}/stderr"])
    _close(one, four, name, "4 devices vs 1")


# ----------------------------------------------------------------------------- (d) save / load, (e) frame
def _same(a, b, where: str):
    """Bit for bit: arrays of the same dtype, shape and bytes; containers element by element."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, tuple | list):
        assert isinstance(b, tuple | list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_round_trip_bit_for_bit(name, tmp_path):
    result, _ = reference(name)
    path = tmp_path / "r.json"
    result.save(path)
    json.loads(path.read_text())  # strict JSON
    back = jaxsens.load_result(path)
    assert type(back) is type(result) is METHODS[name].result
    for f in dataclasses.fields(result):
        _same(getattr(result, f.name), getattr(back, f.name), f"{name}.{f.name}")


@pytest.mark.parametrize("name", NAMES)
def test_result_shapes_and_tidy_frame(name):
    spec = METHODS[name]
    result, _ = reference(name)
    assert result.method == name and type(result) is spec.result
    assert bool(result.output_names) == spec.per_output, (name, result.output_names)
    expected_shape = ((len(result.output_names),) if spec.per_output else ()) + (len(FEATURES),)
    assert result.importance.shape == result.stderr.shape == expected_shape
    assert result.feature_names == FEATURES
    assert np.all(np.isfinite(result.importance)), (name, result.importance)
    assert np.all(np.isfinite(result.stderr)) and np.all(result.stderr >= 0), (name, result.stderr)
    frame = result.to_frame()
    head = ["feature", *(["output"] if spec.per_output else []), "importance", "stderr", "ci_low", "ci_high", "rank"]
    assert list(frame.columns)[: len(head)] == head, (name, list(frame.columns))
    assert len(frame) == result.importance.size
    np.testing.assert_array_equal(frame["importance"].to_numpy(), result.importance.reshape(-1))
    np.testing.assert_array_equal(frame["stderr"].to_numpy(), result.stderr.reshape(-1))
    assert frame["stderr"].notna().all() and np.isfinite(frame["stderr"].to_numpy(float)).all()
    assert [n for n, _, _ in result.ranking()][:1] != ["c"] or not spec.exact_zero


# -------------------------------------------------------------------------------- (f) NaN, (g) progress
@pytest.mark.parametrize("name", DATA_NAMES)
def test_nan_rows_raise_naming_the_row_or_are_skipped_and_counted(name):
    spec, problem = METHODS[name], PROBLEMS["values"]
    x = problem.x.copy()
    x[5, 1] = np.nan
    with pytest.raises(jaxsens.DataError, match=r"\brow 5\b"):
        run(spec, problem, x=x, batch_size=8)
    skipped = run(spec, problem, x=x, batch_size=8, nan_policy="skip")
    assert skipped.n_skipped == 1 and skipped.n_samples == N_ROWS - 1, (name, skipped.n_skipped, skipped.n_samples)
    assert np.all(np.isfinite(skipped.importance)), name


@pytest.mark.parametrize("name", DATA_NAMES)
def test_progress_is_reported(name):
    spec = METHODS[name]
    _, calls = reference(name)
    assert calls, f"{name} never called progress"
    done = [d for d, _ in calls]
    assert done == sorted(done), (name, calls)
    if spec.kernel is not None:  # streaming: rows
        assert done[-1] == N_ROWS and all(t in (None, N_ROWS) for _, t in calls), (name, calls)


# ------------------------------------------------------------------------------------------ (h) the CLI
def _onnx_file(path: pathlib.Path, problem: Problem) -> str:
    """The problem's MLP as an ONNX file (MatMul, Add, Tanh, MatMul, Add[, Softmax])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, cur = [], [], "x"
    for i, ((w, b), act) in enumerate(zip(problem.layers, problem.activations)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"])]
        cur = f"z{i}"
        if act != "identity":
            op = {"tanh": "Tanh", "softmax": "Softmax"}[act]
            nodes.append(helper.make_node(op, [cur], [f"h{i}"], **({"axis": -1} if op == "Softmax" else {})))
            cur = f"h{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    n_out = problem.layers[-1][0].shape[1]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-methods")
    values, labels = PROBLEMS["values"], PROBLEMS["labels"]
    files = {"values_model": _onnx_file(folder / "values.onnx", values),
             "labels_model": _onnx_file(folder / "labels.onnx", labels)}
    np.save(folder / "x.npy", values.x)
    np.save(folder / "y.npy", values.y)
    lines = [",".join([*FEATURES, "label"])] + [",".join([*(repr(float(v)) for v in row), str(int(t))])
                                               for row, t in zip(labels.x, labels.y)]
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    files.update(npy=str(folder / "x.npy"), y=str(folder / "y.npy"), csv=str(folder / "data.csv"))
    return files


def _small_flags(spec) -> list[str]:
    return [a for k, v in small_options(spec).items() for a in ("--" + k.replace("_", "-"), str(v))]


@pytest.mark.parametrize("source", ["npy", "csv"])
@pytest.mark.parametrize("name", NAMES)
def test_cli_run_writes_the_three_files(name, source, cli_files, tmp_path, capsys):
    from jaxsens.cli import main

    spec = METHODS[name]
    uses_targets = spec.needs_targets or spec.uses_targets
    if source == "npy":  # continuous targets [n, 2] from a file, feature names on the command line
        argv = [cli_files["values_model"], cli_files["npy"], "--feature-names", ",".join(FEATURES)]
        argv += ["--targets", cli_files["y"]] if uses_targets else []
    else:  # class labels in a column of the CSV (left out of the features by the other methods)
        argv = [cli_files["labels_model"], cli_files["csv"], "--target-column", "label"]
    out = tmp_path / "out"
    code = main(["importance", *argv, "--method", name, "--out", str(out), "--quiet", "--top", "3",
                 *_small_flags(spec)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["importance.csv", "importance.json", "importance.png"]
    saved = jaxsens.load_result(out / "importance.json")
    assert saved.method == name and saved.feature_names == FEATURES
    header = (out / "importance.csv").read_text().splitlines()[0].split(",")
    assert header[:1] == ["feature"] and {"importance", "stderr", "ci_low", "ci_high", "rank"} <= set(header)
    assert "rank" in captured.out and "top 3 of 4" in captured.out


# ------------------------------------------------------------------------------------------ plots, html
@pytest.mark.parametrize("name", NAMES)
def test_plot_has_title_labels_and_labelled_intervals(name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result, _ = reference(name)
    fig = result.plot(top=3)
    try:
        title = fig._suptitle.get_text()
        assert name in title and "top 3 of 4 features" in title, title
        ax = fig.axes[0]
        assert ax.get_xlabel() == getattr(result, "plot_xlabel", result.importance_label)
        assert ax.get_ylabel() == "feature"
        assert len(ax.patches) == 3 * getattr(result, "plot_bars_per_feature", 1)  # the top 3 (groups of) bars
        legend = ax.get_legend()
        if np.nan_to_num(result.stderr).any():  # intervals are drawn, and labelled as 95% intervals
            assert legend is not None and "95% interval" in legend.get_texts()[0].get_text()
        else:
            assert legend is None
    finally:
        plt.close(fig)
    html = result._repr_html_()
    assert html.startswith("<p><b>") and "95% interval" in html and result.ranking()[0][0] in html


@pytest.mark.parametrize("name", NAMES)
def test_string_options_refuse_objects_unless_declared(name):
    """A str option takes a string; only options declaring ``objects`` (a Metric / callable metric) take more."""
    spec = METHODS[name]
    for o in spec.options:
        if o.type is str and not o.objects:
            with pytest.raises(jaxsens.ArgumentTypeError, match=f"{o.name} must be a string"):
                o.check(len, spec.function_name)
        elif o.type is str:
            assert o.check(len, spec.function_name) is len
