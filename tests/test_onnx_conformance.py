"""ONNX conformance: the backend node test cases of the installed ``onnx`` package, run through the interpreter.

The cases are generated in the test from ``onnx.backend.test.case.node`` (the code that writes ONNX's own
``backend/test/data/node`` folders): one small model per case with its inputs and expected outputs. Every case whose
ops (sub-graphs included) are all in the registry runs through :class:`OnnxFunction` in its raw form: no batch axis
imposed, every graph input fed as given (several inputs, integer and bool inputs), every graph output compared, two
ways (``MODES``: traced under ``jax.jit`` as a model's data, and folded with numpy at conversion time). Each run
either matches the expected outputs (floats within ``2 * n_terms * eps * max|expected|`` of the dtype, integers,
bools, float8 values and NaN / infinity positions exactly), or is refused by a :class:`JaxsensError` whose message
matches the documented limitation ``EXPECTED_REFUSALS`` names for it (``LIMITATIONS``: the README's "Known
limitations"). A mismatch, a wrapped internal error ("X node failed on inputs ...: TypeError: ..."), a raw
exception or a crash fails the test; so does a listed refusal that no longer happens (a limitation lifted).

Graph inputs and outputs of the types jaxsens does not feed or explain (bfloat16, float8, float4, 4-bit and 2-bit
integers) are refused at the model boundary with a message naming the type (checked for each such case); the ops
inside are conformance-tested all the same, with the boundary adapted: such an input is fed as float32 and cast to
its type by a ``Cast`` node, such an output cast to float32 (both exact: every value is representable).

Counts with onnx 1.23.2 (jax 0.10.2, x64 off):

* 1,884 cases; 566 need an op outside the registry (not collected as tests; each is refused by an
  UnsupportedOpError naming the op, checked in one test), most often Attention (93), NegativeLogLikelihoodLoss
  (52), SoftmaxCrossEntropyLoss (34), BitShift (28), RMSNormalization (19), GridSample (18), QuantizeLinear (16);
* 1,318 runnable (167 of them through the boundary adapter), 2 x 1,318 tests:
  * data mode: 1,293 pass, 25 refused: training-mode Dropout / BatchNormalization 8, a shape-like input computed
    from the data 5 (Loop counter 1, If branch 4), sequence / optional / string values 4, Resize antialias 4,
    MaxPool's Indices output 2, Resize align_corners with a fractional scaled length 2;
  * static mode: 1,297 pass, 21 refused (the same, less the 4 If-branch cases).

The file takes about 2 minutes of one core (mostly XLA compiling one small program per case in the data mode).
"""

from __future__ import annotations

import functools
import re
import warnings

import jax
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.errors import ConversionError, JaxsensError, UnsupportedOpError
from converters.onnx_to_jax.graph import OnnxFunction, _as_input
from converters.onnx_to_jax.registry import get_op

# ---------------------------------------------------------------- the cases


@functools.cache
def _all_cases() -> tuple:
    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():  # the generators compute expected values with overflowing numpy casts
        warnings.simplefilter("ignore")
        return tuple(sorted(node_cases.collect_testcases(None), key=lambda c: c.name))


def _ops(graph: onnx.GraphProto):
    """``(domain, op_type)`` of every node of ``graph`` and of its sub-graphs."""
    for n in graph.node:
        yield (n.domain if n.domain != "ai.onnx" else ""), n.op_type
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _ops(g)


def _missing_ops(case) -> list[str]:
    return sorted({f"{d}:{op}" if d else op for d, op in _ops(case.model.graph) if get_op(op, d) is None})


CASES = _all_cases()
RUNNABLE = [c for c in CASES if not _missing_ops(c)]
UNSUPPORTED = [c for c in CASES if _missing_ops(c)]
MIN_RUNNABLE = 1300  # 1,318 with onnx 1.23.2: a change that drops many cases fails the summary

# ---------------------------------------------------------------- documented limitations
# reason -> (error class, pattern its message must match, the README's wording)
LIMITATIONS = {
    "training": (
        ConversionError,
        r"training_mode.*(random|batch statistics).*evaluation mode",
        "Training-mode Dropout (random) and BatchNormalization (batch statistics): export in evaluation mode.",
    ),
    "antialias": (ConversionError, r"Resize with antialias=1 is not supported", "Resize with antialias=1."),
    "maxpool_indices": (
        ConversionError,
        r"MaxPool's Indices output is not supported",
        "MaxPool's Indices output.",
    ),
    "dynamic_shape": (
        ConversionError,
        r"must be known at conversion time, but it depends on the model's input",
        (
            "Shape-like inputs (Slice starts, Reshape / Expand / ConstantOfShape shapes, axes, pads, ...) computed "
            "from the data, a Loop's iteration counter included."
        ),
    ),
    "resize_ambiguous": (
        ConversionError,
        r"Resize node .*coordinate_transformation_mode='(align_corners|tf_crop_and_resize)' with scales .* is ambiguous",
        (
            "Resize with align_corners / tf_crop_and_resize and scales giving a fractional output length (the ONNX "
            "reference and onnxruntime disagree): give sizes instead."
        ),
    ),
    "non_tensor": (
        ConversionError,
        r"(a sequence|an optional|a map|a tensor of string)\b.*jaxsens (feeds|explains) tensors",
        (
            "Sequence, optional, map and string values as graph inputs or outputs (jaxsens feeds and explains "
            "numeric tensors)."
        ),
    ),
}

# Each case runs two ways. "data": under jax.jit, the graph inputs traced as a model's data is, except those the
# graph uses as shapes, axes, bounds or trip counts, which stay constants (as jaxsens keeps such initializers);
# the path of every model. "static": every input a numpy array, so every node is folded at conversion time (numpy
# ops, exact ONNX dtypes); the path of shape computations on constants.
MODES = ("data", "static")

# case name (full match) -> (reason in LIMITATIONS with data inputs, with static inputs); None: the case passes
EXPECTED_REFUSALS = {
    r"test_training_dropout.*": ("training", "training"),
    r"test_batchnorm_.*_training_mode": ("training", "training"),
    r"test_resize_.*_antialias": ("antialias", "antialias"),
    r"test_maxpool_with_argmax_.*": ("maxpool_indices", "maxpool_indices"),
    r"test_resize_downsample_scales_(linear|cubic)_align_corners": ("resize_ambiguous", "resize_ambiguous"),
    r"test_identity_sequence|test_identity_opt": ("non_tensor", "non_tensor"),
    r"test_equal_string.*": ("non_tensor", "non_tensor"),
    r"test_loop11": ("dynamic_shape", "dynamic_shape"),  # the body slices with the iteration counter
    # the output size is read from a graph input inside an If branch: data in the first mode, known in the second
    r"test_affine_grid_(2d|3d)(_align_corners)?_expanded": ("dynamic_shape", None),
}


# Cases whose expected values are written with fewer digits than float32 carries: absolute tolerance instead.
ROUNDED_EXPECTED = {
    # inputs and outputs typed with 4 decimals: |error| <= 0.5e-4 (the output) + 4 * 0.5e-4 / 9 (a mean of 4 of 9
    # window positions, each input off by up to 0.5e-4)
    "test_averagepool_2d_ceil_last_window_starts_on_pad": 0.5e-4 + 4 * 0.5e-4 / 9,
}


def _expected_refusal(name: str, mode: str) -> str | None:
    reasons = next(
        (r for pattern, r in EXPECTED_REFUSALS.items() if re.fullmatch(pattern, name)), (None, None)
    )
    return reasons[MODES.index(mode)]


# ---------------------------------------------------------------- running a case
# Element types the interpreter computes with but jaxsens neither feeds nor explains at the model boundary.
BOUNDARY_TYPES = frozenset(
    getattr(TensorProto, t)
    for t in (
        "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "FLOAT4E2M1",
        "INT4", "UINT4", "INT2", "UINT2",
    )
    if hasattr(TensorProto, t)
)  # fmt: skip


def _elem_type(vi: onnx.ValueInfoProto) -> int | None:
    return vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else None


def _value(v):
    return numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v


def _adapted(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every graph input / output of a :data:`BOUNDARY_TYPES` type fed / returned as float32 through
    an exact ``Cast`` (the values of those types are all float32 numbers)."""
    inputs = [vi for vi in model.graph.input if _elem_type(vi) in BOUNDARY_TYPES]
    outputs = [vi for vi in model.graph.output if _elem_type(vi) in BOUNDARY_TYPES]
    if not inputs and not outputs:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    head, tail = [], []
    for vi in g.input:
        if _elem_type(vi) in BOUNDARY_TYPES:
            head.append(helper.make_node("Cast", [vi.name + ".f32"], [vi.name], to=_elem_type(vi)))
            vi.name += ".f32"
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    for vi in g.output:
        if _elem_type(vi) in BOUNDARY_TYPES:
            tail.append(helper.make_node("Cast", [vi.name], [vi.name + ".f32"], to=TensorProto.FLOAT))
            vi.name += ".f32"
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    return m


def _feed(value):
    value = _value(value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "V":  # an ml_dtypes type: fed as float32 (exact)
        return value.astype(np.float32)
    return value


def run_case(case, mode: str = "data") -> dict[str, np.ndarray]:
    """Every graph output of ``case`` evaluated by the interpreter on concrete inputs: JAX arrays run eagerly
    (``mode="data"``) or numpy arrays folded at conversion time (``mode="static"``)."""
    model = _adapted(case.model)
    inputs, _ = case.data_sets[0]
    stored = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in stored]
    feeds = dict(zip(names, [_feed(v) for v in inputs]))
    results: dict[str, np.ndarray] = {}
    for vi in model.graph.output:
        if vi.name in results:
            continue
        fn = OnnxFunction(model, output=vi.name)
        # every graph output the pruned graph computes comes out of one run
        want = [o.name for o in model.graph.output if o.name not in results and _produced(fn, o.name)]
        if mode == "data":
            static = OnnxFunction._static_slots(model.graph)
            consts = {n: np.asarray(feeds[n]) for n in fn.input_names if n in static}
            data = {
                n: _as_input(feeds[n], dt)
                for n, dt in zip(fn.input_names, fn.input_dtypes)
                if n not in static
            }
            run = functools.partial(_run_with, fn, consts, want)
            out = jax.jit(run)(fn.params, data)
        else:
            out = fn.run(fn.params, {n: np.asarray(feeds[n]) for n in fn.input_names}, want)
        results.update({k: np.asarray(v) for k, v in out.items()})
    return results


def _run_with(fn: OnnxFunction, consts: dict, want: list, params, data):
    return fn.run(params, {**data, **consts}, want)


def _produced(fn: OnnxFunction, name: str) -> bool:
    return name == fn.output or any(name in node.outputs for node in fn.nodes) or name in fn.input_names


# ---------------------------------------------------------------- comparing
EPS = {
    "float64": float(np.finfo(np.float32).eps),  # computed in float32 (JAX without x64)
    "float32": float(np.finfo(np.float32).eps),
    "float16": float(np.finfo(np.float16).eps),
    "bfloat16": 2.0**-7,
}
# The longest float accumulations in the node cases are a few dozen terms (Conv / MatMul fan-in, pooling windows,
# reductions, recurrences over a few steps); float16 / bfloat16 results are rounded to their type after each op,
# a few steps per side.
N_TERMS = {"float64": 32, "float32": 32, "float16": 4, "bfloat16": 4}


def assert_matches(actual: np.ndarray, desired, name: str, atol: float = 0.0) -> None:
    """``actual`` equals ``desired``: exactly for integers, bools, float8 / float4 values (casts round exactly)
    and NaN / infinity positions; within ``2 * n_terms * eps * max|desired|`` (or ``atol`` if larger) for
    float64 / 32 / 16, bfloat16."""
    desired = np.asarray(_value(desired))
    assert actual.shape == desired.shape, f"output {name!r}: shape {actual.shape}, expected {desired.shape}"
    kind, dtype = desired.dtype.kind, desired.dtype.name
    if kind == "b":
        assert actual.dtype == np.bool_, f"output {name!r}: dtype {actual.dtype}, expected bool"
        np.testing.assert_array_equal(actual, desired, err_msg=f"output {name!r}")
        return
    if kind in "iu":
        assert actual.dtype.kind in "iu", f"output {name!r}: dtype {actual.dtype}, expected {dtype}"
        wide = np.uint64 if kind == "u" else np.int64
        assert actual.astype(wide).tolist() == desired.astype(wide).tolist(), (
            f"output {name!r} ({dtype}): {int((actual.astype(wide) != desired.astype(wide)).sum())} of "
            f"{desired.size} values differ: {actual.reshape(-1)[:8]} vs {desired.reshape(-1)[:8]}"
        )
        return
    a, d = actual.astype(np.float64), desired.astype(np.float64)
    assert actual.dtype.kind in "fV", f"output {name!r}: dtype {actual.dtype}, expected {dtype}"
    np.testing.assert_array_equal(np.isnan(a), np.isnan(d), err_msg=f"output {name!r}: NaN positions differ")
    special = np.isinf(d) | np.isinf(a)
    np.testing.assert_array_equal(a[special], d[special], err_msg=f"output {name!r}: infinities differ")
    ok = np.isfinite(d) & np.isfinite(a)
    if dtype not in EPS:  # float8 / float4 / e8m0, compared after an exact cast to float32: casts are exact
        np.testing.assert_array_equal(a[ok], d[ok], err_msg=f"output {name!r} ({dtype})")
        return
    magnitude = np.abs(d[ok]).max() if ok.any() else 0.0
    tol = max(2 * N_TERMS[dtype] * EPS[dtype] * magnitude, atol)
    err = np.abs(a[ok] - d[ok])
    assert not (err > tol).any(), (
        f"output {name!r} ({dtype}): {int((err > tol).sum())} of {d.size} values differ by more than {tol:.3g} "
        f"(2 * {N_TERMS[dtype]} * eps * max|expected| {magnitude:.3g}); worst {err.max():.3g}"
    )


def _expected_outputs(case, model: onnx.ModelProto) -> dict:
    _, outputs = case.data_sets[0]
    return {vi.name: v for vi, v in zip(model.graph.output, outputs)}


def _check_refusal(error: JaxsensError, reason: str) -> None:
    cls, pattern, _ = LIMITATIONS[reason]
    message = str(error)
    assert isinstance(error, cls), f"{type(error).__name__}: {message}"
    assert not re.search(r"failed on inputs .*: [A-Za-z]+Error: ", message), (
        f"a wrapped internal error: {message}"
    )
    assert re.search(pattern, message), f"refused for another reason than {reason!r}: {message}"


# ---------------------------------------------------------------- the tests
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", RUNNABLE, ids=lambda c: c.name)
def test_node_case(case, mode):
    reason = _expected_refusal(case.name, mode)
    if reason is not None:
        with pytest.raises(JaxsensError) as info:
            run_case(case, mode)
        _check_refusal(info.value, reason)
        return
    got = run_case(case, mode)
    model = _adapted(case.model)
    for name, desired in _expected_outputs(case, model).items():
        assert name in got, f"output {name!r} was not computed"
        assert_matches(got[name], desired, name, atol=ROUNDED_EXPECTED.get(case.name, 0.0))


def test_boundary_types_are_refused_by_name():
    """Graph inputs / outputs of bfloat16, float8, float4, int4 / uint4, int2 / uint2 are refused by
    :class:`OnnxFunction` with a message naming the tensor and its type."""
    found = 0
    for case in RUNNABLE:
        g = case.model.graph
        exotic = [vi for vi in list(g.input) + list(g.output) if _elem_type(vi) in BOUNDARY_TYPES]
        if not exotic:
            continue
        found += 1
        with pytest.raises(ConversionError) as info:
            for vi in g.output:
                OnnxFunction(case.model, output=vi.name)
        type_name = TensorProto.DataType.Name(_elem_type(exotic[0])).lower()
        assert re.search(rf"{type_name}", str(info.value), re.IGNORECASE), f"{case.name}: {info.value}"
    assert found >= 100


def test_cases_outside_the_registry_are_refused_naming_the_op():
    """Every case with an op outside the registry is refused by :class:`UnsupportedOpError` naming one of its
    missing ops; enough cases run for the suite to mean something."""
    assert len(RUNNABLE) >= MIN_RUNNABLE, f"only {len(RUNNABLE)} of {len(CASES)} cases are runnable"
    assert len(RUNNABLE) + len(UNSUPPORTED) == len(CASES)
    for case in UNSUPPORTED:
        missing = _missing_ops(case)
        with pytest.raises(UnsupportedOpError) as info:
            for vi in _adapted(case.model).graph.output:
                OnnxFunction(_adapted(case.model), output=vi.name)
        message = str(info.value)
        assert any(re.search(rf"\b{re.escape(op.split(':')[-1])}\b", message) for op in missing), (
            f"{case.name}: {message[:300]}"
        )


def test_every_expected_refusal_names_a_runnable_case():
    """Each row of ``EXPECTED_REFUSALS`` matches a runnable case (a stale row is a limitation lifted)."""
    for pattern, reasons in EXPECTED_REFUSALS.items():
        assert all(r is None or r in LIMITATIONS for r in reasons), reasons
        assert any(re.fullmatch(pattern, c.name) for c in RUNNABLE), pattern


def test_a_string_tensor_inside_the_graph_is_refused_by_name():
    """A string constant reaching a numeric op (the backend's ``test_equal_string`` with its inputs stored in the
    graph) is refused naming the node and the input, not crashed on inside jax.numpy."""
    a = helper.make_tensor("a", TensorProto.STRING, [3], [b"x", b"y", b"z"])
    b = helper.make_tensor("b", TensorProto.STRING, [3], [b"x", b"q", b"z"])
    nodes = [
        helper.make_node("Equal", ["a", "b"], ["same"], name="eq"),
        helper.make_node("Cast", ["same"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["w", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [a, b],
    )  # fmt: skip
    fn = OnnxFunction(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
    with pytest.raises(UnsupportedOpError, match=r"Equal node 'eq': input 0 \('a'\) is a string tensor"):
        fn.apply_batch(fn.params, np.ones(3, np.float32))
