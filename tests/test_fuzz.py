"""Fuzzing the model loader (issue 9, item 2): mutated seed models end in a result equal to onnxruntime's, or in a
JaxsensError; then one small graph per class of bug the fuzzer found, each refused by name (and, as an independent
oracle, refused by onnxruntime too).

The harness is ``bench/fuzz.py`` (``python bench/fuzz.py --n 5000`` for the full run, ``--replay SEED:INDEX`` to
rerun one variant with its traceback).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import jaxsens
from converters.errors import ConversionError, ModelFileError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import fuzz

N_VARIANTS = 180  # 5 seed models x 18 slots of the mutation schedule x 2: every (model, mutation) pair twice
SEED = 1  # the full run of bench/fuzz.py uses seed 0: the suite looks at other variants


@pytest.fixture(scope="module")
def records():
    return fuzz.run_many(range(N_VARIANTS), seed=SEED, workers=2, timeout=60.0)


def test_every_variant_matches_onnxruntime_or_raises_a_jaxsens_error(records):
    bugs = [r for r in records if fuzz.is_bug(r)]
    assert not bugs, "\n".join(
        f"python bench/fuzz.py --replay {r['seed']}:{r['index']}  # {r['model']}/{r['kind']}: {r['outcome']} "
        f"{r.get('our_frame') or r.get('frame', '')} {r.get('message', '')[:200]} [{r['detail'][:120]}]"
        for r in bugs
    )


def test_the_variants_cover_every_seed_model_and_mutation_kind(records):
    summary = fuzz.summarize(records)
    assert set(summary["by_model"]) == set(fuzz.MODELS)
    assert set(summary["by_kind"]) == set(fuzz.KINDS)
    # the comparison with onnxruntime is exercised, and the errors are spread over the error family
    assert summary["ok_vs_onnxruntime"].get("ok", 0) >= N_VARIANTS // 10
    # the hand-written pull-backs (LSTM, Conv) are differentiated on mutated graphs and checked (15 of these 180)
    assert summary["jacobian_vs_plain"].get("ok", 0) >= 8, summary["jacobian_vs_plain"]
    assert {
        "jaxsens_error:ConversionError",
        "jaxsens_error:ModelFileError",
        "jaxsens_error:UnsupportedOpError",
    } <= set(summary["outcomes"])


def test_a_variant_is_a_pure_function_of_seed_and_index():
    a, b = fuzz.make_variant(3, 41), fuzz.make_variant(3, 41)
    assert a["data"] == b["data"] and a["detail"] == b["detail"]
    assert fuzz.make_variant(3, 42)["data"] != a["data"]
    assert fuzz.make_variant(4, 41)["data"] != a["data"]


def test_replay_runs_one_variant_in_process(capsys):
    rec = fuzz.replay(SEED, 0)
    assert rec["outcome"] == "ok" or rec["outcome"].startswith("jaxsens_error:")
    assert f"variant {SEED}:0" in capsys.readouterr().out


def test_compare_uses_a_float32_tolerance_and_exact_non_finite_values():
    ref = np.array([[1.0, 0.0, np.nan, np.inf]], np.float32)
    assert fuzz.compare(ref, ref) is None
    assert fuzz.compare(ref * (1 + 4 * fuzz.EPS32), ref) is None  # a few ulps
    assert fuzz.compare(ref * 1.001, ref) is not None
    assert fuzz.compare(np.array([[1.0, 0.0, 0.0, np.inf]]), ref) is not None  # NaN lost
    assert fuzz.compare(np.array([[1.0, 0.0, np.nan, -np.inf]]), ref) is not None  # sign of the infinity
    assert fuzz.compare(ref[:, :2], ref) is not None


# ---------------------------------------------------------------------------------------------- one bug per class


def _model(nodes, inits=(), *, x_shape=("N", 4), x_type=TensorProto.FLOAT, y_shape=None, opset=17):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", x_type, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


def _ort_refuses(proto: onnx.ModelProto, x_shape=(2, 4)) -> bool:
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        sess.run(None, {"x": np.ones(x_shape, np.float32)})
    except Exception:  # noqa: BLE001 - any refusal
        return True
    return False


def _with(proto, edit):
    edit(proto)
    return proto


CASES = {
    # attribute of the wrong type: an axis given as a string (the fuzzer's "ValueError: duplicate value in 'axis'")
    "attribute-type": (
        _model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis="Foo")]),
        r"Softmax node 'sm': attribute 'axis' is str 'Foo'; ONNX Softmax \(opset 17\) defines it as an int",
    ),
    "axis-out-of-range": (
        _model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=2**31 - 1)]),
        r"Softmax node 'sm': axis=2147483647 is out of range for a tensor of rank 2",
    ),
    "concat-axis-beyond-c-int": (
        _model([helper.make_node("Concat", ["x", "x"], ["y"], name="cat", axis=2**62)]),
        r"Concat node 'cat': axis=4611686018427387904 is out of range",
    ),
    "missing-input": (
        _model([helper.make_node("MatMul", ["x"], ["y"], name="mm")]),
        r"MatMul node 'mm' needs input 1 \(B\) of ONNX MatMul \(opset 17\), but it is missing",
    ),
    "empty-input": (
        _model([helper.make_node("Relu", [""], ["y"], name="r")]),
        r"Relu node 'r' needs input 0 \(X\) of ONNX Relu \(opset 17\), but it is empty",
    ),
    "extra-input": (
        _model([helper.make_node("MatMul", ["x", "W", "W"], ["y"], name="mm")], {"W": W}),
        r"MatMul node 'mm' has 3 inputs; ONNX MatMul \(opset 17\) takes at most 2",
    ),
    "mixed-types": (
        _model(
            [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], {"W": W}, x_type=TensorProto.INT32
        ),
        (
            r"MatMul node 'mm': inputs bound to the same type T of ONNX MatMul have different element types "
            r"\(input 0 \('x'\): int32, input 1 \('W'\): float32\)"
        ),
    ),
    "type-not-allowed": (
        _model(
            [helper.make_node("Conv", ["x", "K"], ["y"], name="conv")],
            {"K": np.ones((1, 1, 1, 1), np.float32)},
            x_shape=("N", 1, 2, 2),
            x_type=TensorProto.UINT16,
        ),
        r"Conv node 'conv': input 0 \('x'\) has element type uint16; ONNX Conv \(opset 17\) takes .*float",
    ),
    "flag-not-0-or-1": (
        _model([helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=2**40)], {"W": W.T.copy()}),
        r"Gemm node 'fc': attribute 'transB' is 1099511627776; it is a flag, 0 or 1",
    ),
    "gemm-bias-enlarging-the-result": (  # issue 9: a [3, 1] bias silently returned row 0 of the broadcast
        _model(
            [helper.make_node("Gemm", ["x", "W", "C"], ["y"], name="fc")],
            {"W": W, "C": np.ones((3, 1), np.float32)},
        ),
        r"Gemm node 'fc': C of shape \(3, 1\) does not broadcast to the result's shape \(1, 3\)",
    ),
    "gemm-inner-sizes": (
        _model([helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)], {"W": W}),
        r"Gemm node 'fc': cannot multiply A' \(1, 4\) by B' \(3, 4\) \(transA=0, transB=1\)",
    ),
    "matmul-shapes": (
        _model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], {"W": W.T.copy()}),
        r"MatMul node 'mm': cannot multiply A \(1, 4\) by B \(3, 4\)",
    ),
    "broadcast": (
        _model([helper.make_node("Add", ["x", "b"], ["y"], name="add")], {"b": np.ones(3, np.float32)}),
        r"Add node 'add': input shapes \[\(1, 4\), \(3,\)\] do not broadcast together",
    ),
    "transpose-perm": (
        _model([helper.make_node("Transpose", ["x"], ["y"], name="t", perm=[1, 0, 2])]),
        r"Transpose node 't': perm=\[1, 0, 2\] is not a permutation of the 2 axes",
    ),
    "flatten-axis": (
        _model([helper.make_node("Flatten", ["x"], ["y"], name="f", axis=3)]),
        r"Flatten node 'f': axis=3 is out of range for a tensor of rank 2",
    ),
    "static-gather-index": (
        _model(
            [
                helper.make_node("Shape", ["x"], ["s"], name="shape"),
                helper.make_node("Gather", ["s", "i"], ["n"], name="gather"),
                helper.make_node("Reshape", ["x", "n"], ["y"], name="reshape"),
            ],
            {"i": np.array([7], np.int64)},
        ),
        r"Gather node 'gather': indices 7 is out of range for an axis of size 2",
    ),
    "constant-of-shape-value": (
        _model(
            [
                helper.make_node(
                    "ConstantOfShape",
                    ["s"],
                    ["z"],
                    name="zeros",
                    value=numpy_helper.from_array(np.zeros(3, np.float32)),
                ),
                helper.make_node("Add", ["x", "z"], ["y"], name="add"),
            ],
            {"s": np.array([4], np.int64)},
        ),
        r"ConstantOfShape node 'zeros': value must hold exactly one element, got a tensor of shape \[3\]",
    ),
    "range-delta-zero": (
        _model(
            [
                helper.make_node("Range", ["a", "b", "d"], ["r"], name="range"),
                helper.make_node("Reshape", ["x", "r"], ["y"], name="reshape"),
            ],
            {"a": np.array(0, np.int64), "b": np.array(4, np.int64), "d": np.array(0, np.int64)},
        ),
        r"Range node 'range': Range\(0, 4, 0\) has no finite length",
    ),
    "conv-channels": (
        _model(
            [helper.make_node("Conv", ["x", "K"], ["y"], name="conv")],
            {"K": np.ones((2, 3, 1, 1), np.float32)},
            x_shape=("N", 1, 2, 2),
        ),
        r"Conv node 'conv': X has 1 channels; W of shape \(2, 3, 1, 1\) .* with group=1 does not fit",
    ),
    "conv-strides-zero": (
        _model(
            [helper.make_node("Conv", ["x", "K"], ["y"], name="conv", strides=[0, 1])],
            {"K": np.ones((1, 1, 1, 1), np.float32)},
            x_shape=("N", 1, 2, 2),
        ),
        r"Conv node 'conv': strides=\[0, 1\] must be >= 1",
    ),
    "pool-kernel-empty": (
        _with(
            _model([helper.make_node("MaxPool", ["x"], ["y"], name="pool")], x_shape=("N", 1, 4, 4)),
            lambda p: p.graph.node[0].attribute.append(
                helper.make_attribute("kernel_shape", [], attr_type=onnx.AttributeProto.INTS)
            ),
        ),
        r"MaxPool node 'pool': kernel_shape=\[\] must hold one value per spatial axis \(2\)",
    ),
    "lstm-input-size": (
        _model(
            [
                helper.make_node("LSTM", ["x", "W", "R"], ["", "h"], name="lstm", hidden_size=2, layout=1),
                helper.make_node("Flatten", ["h"], ["y"], name="flat"),
            ],
            {"W": np.ones((1, 8, 3), np.float32), "R": np.ones((1, 8, 2), np.float32)},
            x_shape=("N", 5, 4),
        ),
        r"LSTM node 'lstm': W \(1, 8, 3\) expects 3 input features, but X \(5, 1, 4\) has 4",
    ),
    "opset-zero": (
        _with(
            _model([helper.make_node("Relu", ["x"], ["y"])]),
            lambda p: setattr(p.opset_import[0], "version", 0),
        ),
        r"the model's ONNX opset version 0 is not valid here",
    ),
    "opset-missing": (
        _with(_model([helper.make_node("Relu", ["x"], ["y"])]), lambda p: p.ClearField("opset_import")),
        r"the model does not say which ONNX opset its ops follow",
    ),
    "opset-twice": (
        _with(
            _model([helper.make_node("Relu", ["x"], ["y"])]),
            lambda p: p.opset_import.add(domain="", version=9),
        ),
        r"the model imports the default ONNX domain 2 times \(versions \[17, 9\]\)",
        False,  # onnxruntime picks one of the two versions without a word
    ),
    "slice-of-a-scalar": (
        _model(
            [
                helper.make_node("Size", ["x"], ["n"], name="size"),
                helper.make_node("Slice", ["n", "a", "b"], ["s"], name="slice"),
                helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape"),
            ],
            {"a": np.array([0], np.int64), "b": np.array([1], np.int64)},
        ),
        r"Slice node 'slice': cannot slice a scalar \(data of rank 0\)",
    ),
    "empty-variadic-input": (
        _model([helper.make_node("Concat", ["x", "", "x"], ["y"], name="cat", axis=1)]),
        r"Concat node 'cat': input 1 of the list inputs is empty",
    ),
    "attribute-of-another-opset": (  # Slice's axes were an attribute before opset 10, an input since
        _model(
            [helper.make_node("Slice", ["x", "a", "b"], ["y"], name="slice", axes=[1])],
            {"a": np.array([0], np.int64), "b": np.array([2], np.int64)},
        ),
        r"Slice node 'slice' has the attribute 'axes', which ONNX Slice does not define at opset 17",
    ),
    "float-attribute-as-a-list": (
        _with(
            _model([helper.make_node("LeakyRelu", ["x"], ["y"], name="lrelu")]),
            lambda p: p.graph.node[0].attribute.append(
                helper.make_attribute("alpha", [], attr_type=onnx.AttributeProto.FLOATS)
            ),
        ),
        (
            r"LeakyRelu node 'lrelu': attribute 'alpha' is an empty list; ONNX LeakyRelu \(opset 17\) defines it as a "
            r"float"
        ),
    ),
    "input-beyond-the-byte-budget": (  # an AveragePool sized its window counts from it: 1.8 TiB
        _model(
            [helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[2, 2])],
            x_shape=("N", 1, 8, 10**12),
        ),
        r"ONNX input 'x' declares a per-sample shape \(1, 8, 1000000000000\): more than the budget",
        None,  # not given to onnxruntime (its input would not fit in memory either)
    ),
    "op-newer-than-the-opset": (  # Mish appears at opset 18
        _model([helper.make_node("Mish", ["x"], ["y"], name="mish")]),
        r"Mish node 'mish': ONNX Mish does not exist at the model's opset 17 \(it appears at opset 18\)",
    ),
    "input-without-values": (  # a GRU over 0 time steps made onnxruntime abort
        _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], x_shape=("N", 0, 3)),
        r"ONNX input 'x' declares a per-sample shape \(0, 3\) with an empty or negative axis",
        None,
    ),
    "loop-condition-not-boolean": (
        _model(
            [
                helper.make_node(
                    "Loop",
                    ["trips", "go", "x"],
                    ["y"],
                    name="loop",
                    body=helper.make_graph(
                        [
                            helper.make_node("Neg", ["v_in"], ["v_out"], name="neg"),
                            helper.make_node("Identity", ["one"], ["cond_out"], name="cond"),
                        ],
                        "body",
                        [
                            helper.make_tensor_value_info("i", TensorProto.INT64, []),
                            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None),
                        ],
                        [
                            helper.make_tensor_value_info("cond_out", TensorProto.INT64, []),
                            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None),
                        ],
                    ),
                )
            ],
            {"trips": np.array(3, np.int64), "go": np.array(True), "one": np.array(1, np.int64)},
        ),
        r"Loop node 'loop': the body's condition output must be a boolean, got element type int64",
    ),
    "input-declared-twice": (
        _with(
            _model([helper.make_node("Relu", ["x"], ["y"])]), lambda p: p.graph.input.append(p.graph.input[0])
        ),
        r"graph input 'x' is declared 2 times",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_class_of_bug_the_fuzzer_found_is_refused_by_name(case):
    proto, match, *ort_too = CASES[case]
    with pytest.raises(ConversionError, match=match):
        jaxsens.Model.from_onnx(proto)
    ort_refuses = (ort_too or [True])[0]  # what onnxruntime does with it (None: not asked)
    if ort_refuses is not None:
        dims = [d.dim_value or 2 for d in proto.graph.input[0].type.tensor_type.shape.dim]
        assert _ort_refuses(proto, tuple(dims)) == ort_refuses, f"onnxruntime and the {case} model"


def test_a_string_field_that_is_not_utf8_is_a_corrupt_file(tmp_path):
    proto = _model([helper.make_node("Relu", ["x"], ["y"], name="relu_AAAA")])
    data = proto.SerializeToString().replace(b"relu_AAAA", b"relu_\xff\xfeAA")
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match=r"model.graph.node\[0\].name .* is not valid UTF-8"):
        jaxsens.load_model(str(path))


def test_an_integer_clip_with_float_bounds_from_torch_opset_11_still_converts():
    """torch.onnx emits Clip(int64, float min, float max) at opset 11 (valid only from opset 12, for integers with
    integer bounds): the one type mix the check lets through, as the bounds' meaning is unambiguous."""
    proto = _model(
        [
            helper.make_node("Cast", ["x"], ["xi"], name="cast", to=TensorProto.INT64),
            helper.make_node("Clip", ["xi", "lo", "hi"], ["c"], name="clip"),
            helper.make_node("Cast", ["c"], ["y"], name="back", to=TensorProto.FLOAT),
        ],
        {"lo": np.array(0.0, np.float32), "hi": np.array(9.0, np.float32)},
        opset=11,
    )
    model = jaxsens.Model.from_onnx(proto)
    xs = np.array([[-3.0, 2.0, 7.9, 12.0]], np.float32)
    np.testing.assert_array_equal(model(xs), [[0.0, 2.0, 7.0, 9.0]])
