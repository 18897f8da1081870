"""Fuzz the model loader: mutate small seed ONNX models, load and call every variant in worker processes.

Issue 9, item 2. Every variant must end in one of two ways: it loads and runs (and then matches onnxruntime,
wherever onnxruntime accepts the same file), or it raises a :class:`jaxsens.JaxsensError` subclass. Any other
exception type is a bug (``raw:<Type>``), and so are a dead worker (``crash``: segfault, abort, OOM kill), a
variant that runs past the time bound (``hang``) and a result that differs from onnxruntime's (``mismatch``).

Seed models (built with ``onnx.helper`` from fixed seeds, in the patterns the exporters emit; no binary is
committed): ``mlp`` (Gemm + Relu + MatMul + Add + Softmax), ``lstm`` (tf2onnx / torch style: Transpose, an ``LSTM``
op whose initial state comes from a ``Shape -> Gather -> Concat -> ConstantOfShape`` chain, Squeeze, dense head),
``conv`` (Conv + BatchNormalization + Relu + MaxPool + Conv(SAME) + AveragePool + Flatten + Gemm + Softmax),
``tfmlp`` (tf2onnx style: Cast, a Shape/Slice/Concat/Reshape flatten, LeakyRelu, Clip, Sigmoid, and the
``jaxsens.*`` metadata JSON that the Keras converter writes) and ``control`` (GRU, a ``Loop`` whose body reads the
enclosing scope, an ``If`` on a condition that folds at conversion time).

Mutations (:data:`KINDS`): bit flips of the serialized file outside and inside the weight bytes (``raw_data``),
truncation, attribute values (ints, floats, strings, lists; random, extreme, negative, wrong type, removed,
unknown), dims (initializers, graph input / output shapes), dtypes (initializer ``data_type``, input ``elem_type``,
``Cast.to``), op types (another registered op, an unknown one, another domain), dropped and rewired node inputs and
outputs, node order, opset / IR version, duplicated names, and the metadata JSON. Attribute, op-type and input
mutations reach the nodes of sub-graphs too.

Variant ``index`` of seed ``seed`` is a pure function of ``(seed, index)`` (:func:`make_variant`): the seed model is
``MODELS[index % 5]``, the mutation kind cycles through a fixed schedule of :data:`KINDS`, and every random choice
comes from ``numpy.random.default_rng([seed, index])``.

Each variant is written to a file, loaded with ``jaxsens.load_model(path)`` and, on success, called once on a small
seeded batch, in a worker process with an address-space cap (``RLIMIT_AS``, default 4 GiB: a worker's baseline is
~1.6 GiB of virtual memory after importing JAX and onnxruntime, and 1.5 GiB is too little to start) and a time
bound (default 20 s per variant); a hung worker is killed and replaced, a dead one is replaced. The workers set
``JAXSENS_MAX_TENSOR_BYTES`` to 256 MiB, below the cap, so that a huge declared shape meets jaxsens' byte budget
before it meets the cap. When jaxsens succeeds, the same file runs in onnxruntime (graph optimisations off) on the
same inputs, and the outputs must agree within a float32-derived tolerance (:func:`compare`). Two departures are
not mismatches: jaxsens warned that it gives a graph that mixes the rows of a batch its per-sample meaning (then
onnxruntime runs one row at a time), or onnxruntime departs from the ONNX specification and the ONNX reference
evaluator (``onnx.reference``) agrees with jaxsens (onnxruntime's LSTM kernel turns NaN weights into finite outputs).
An accepted variant whose graph holds an op with a hand-written pull-back (``LSTM``, ``Conv``: used when jaxsens
differentiates once in reverse mode) also gets its Jacobian on the same rows, through jaxsens's kernel and through
``vmap(jacrev)`` of the plain lowering; a raw exception or a difference there is a bug too (``_derivative_check``).

Usage::

    python bench/fuzz.py --n 300 --workers 2                       # a quick look (~1 min on 2 cores)
    python bench/fuzz.py --n 5000 --seed 0 --workers 2 --out bench/results/fuzz.json
    python bench/fuzz.py --replay 0:123                            # one variant, in-process, with the traceback
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "KINDS",
    "MODELS",
    "Variant",
    "compare",
    "make_variant",
    "run_many",
    "run_variant",
    "seed_model",
    "summarize",
]

OPSET = 17
IR_VERSION = 8
BATCH = 3  # rows of the seeded batch each accepted variant is called on

MODELS = ("mlp", "lstm", "conv", "tfmlp", "control")

# ---------------------------------------------------------------------------------------------- seed models


def _t(name: str, arr) -> TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def _w(rng, *shape, scale: float | None = None) -> np.ndarray:
    fan_in = shape[-1] if len(shape) > 1 else 1
    return (rng.normal(size=shape) * (scale or 1.0 / math.sqrt(fan_in))).astype(np.float32)


def _model(nodes, inits, inputs, outputs, metadata=None, name="g") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    m.producer_name = "jaxsens-fuzz"
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(101)
    n_in, n_hidden, n_out = 6, 8, 4
    inits = [
        _t("W1", _w(rng, n_hidden, n_in)),
        _t("b1", _w(rng, n_hidden, scale=0.1)),
        _t("W2", _w(rng, n_hidden, n_out)),  # [n_hidden, n_out] for MatMul
        _t("b2", _w(rng, n_out, scale=0.1)),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"], name="dense/Gemm", alpha=1.0, beta=1.0, transB=1),
        helper.make_node("Relu", ["h1"], ["a1"], name="dense/Relu"),
        helper.make_node("MatMul", ["a1", "W2"], ["h2"], name="out/MatMul"),
        helper.make_node("Add", ["h2", "b2"], ["logits"], name="out/Add"),
        helper.make_node("Softmax", ["logits"], ["y"], name="out/Softmax", axis=-1),
    ]
    meta = {
        "jaxsens.feature_names": json.dumps([f"f{i}" for i in range(n_in)]),
        "jaxsens.output_names": json.dumps([f"class{i}" for i in range(n_out)]),
    }
    return _model(nodes, inits, [_vi("x", ["N", n_in])], [_vi("y", ["N", n_out])], meta, "mlp")


def _lstm() -> onnx.ModelProto:
    rng = np.random.default_rng(202)
    steps, n_in, hidden, n_out = 5, 3, 4, 3
    inits = [
        _t("W", _w(rng, 1, 4 * hidden, n_in)),
        _t("R", _w(rng, 1, 4 * hidden, hidden)),
        _t("B", _w(rng, 1, 8 * hidden, scale=0.1)),
        _t("zero_idx", np.array(0, np.int64)),
        _t("axes0", np.array([0], np.int64)),
        _t("one", np.array([1], np.int64)),
        _t("hidden", np.array([hidden], np.int64)),
        _t("Wd", _w(rng, hidden, n_out)),
        _t("bd", _w(rng, n_out, scale=0.1)),
    ]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], name="lstm/transpose", perm=[1, 0, 2]),
        helper.make_node("Shape", ["x"], ["x_shape"], name="lstm/Shape"),
        helper.make_node("Gather", ["x_shape", "zero_idx"], ["n"], name="lstm/Gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="lstm/Unsqueeze"),
        helper.make_node("Concat", ["one", "n1", "hidden"], ["h_shape"], name="lstm/Concat", axis=0),
        helper.make_node("ConstantOfShape", ["h_shape"], ["h0"], name="lstm/zeros", value=zero),
        helper.make_node(
            "LSTM",
            ["xt", "W", "R", "B", "", "h0", "h0"],
            ["Y", "Y_h", "Y_c"],
            name="lstm/LSTM",
            hidden_size=hidden,
            direction="forward",
            activations=["Sigmoid", "Tanh", "Tanh"],
        ),
        helper.make_node("Squeeze", ["Y_h", "axes0"], ["h"], name="lstm/Squeeze"),
        helper.make_node("MatMul", ["h", "Wd"], ["hd"], name="dense/MatMul"),
        helper.make_node("Add", ["hd", "bd"], ["logits"], name="dense/Add"),
        helper.make_node("Softmax", ["logits"], ["y"], name="dense/Softmax", axis=1),
    ]
    meta = {"jaxsens.layer_names": json.dumps(["lstm", "dense"])}
    return _model(nodes, inits, [_vi("x", ["N", steps, n_in])], [_vi("y", ["N", n_out])], meta, "lstm")


def _conv() -> onnx.ModelProto:
    rng = np.random.default_rng(303)
    inits = [
        _t("Wc", _w(rng, 4, 1, 3, 3, scale=0.4)),
        _t("bc", _w(rng, 4, scale=0.1)),
        _t("bn_scale", (1 + 0.1 * rng.normal(size=4)).astype(np.float32)),
        _t("bn_bias", _w(rng, 4, scale=0.1)),
        _t("bn_mean", _w(rng, 4, scale=0.1)),
        _t("bn_var", (1 + 0.2 * rng.random(4)).astype(np.float32)),
        _t("Wc2", _w(rng, 6, 4, 3, 3, scale=0.2)),
        _t("bc2", _w(rng, 6, scale=0.1)),
        _t("Wf", _w(rng, 3, 24)),
        _t("bf", _w(rng, 3, scale=0.1)),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "Wc", "bc"],
            ["c1"],
            name="conv1",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
            dilations=[1, 1],
            group=1,
        ),
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
            ["bn"],
            name="bn1",
            epsilon=1e-5,
            momentum=0.9,
        ),
        helper.make_node("Relu", ["bn"], ["r1"], name="relu1"),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0]
        ),
        helper.make_node(
            "Conv", ["p1", "Wc2", "bc2"], ["c2"], name="conv2", kernel_shape=[3, 3], auto_pad="SAME_UPPER"
        ),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node(
            "AveragePool",
            ["r2"],
            ["p2"],
            name="pool2",
            kernel_shape=[2, 2],
            strides=[2, 2],
            count_include_pad=0,
        ),
        helper.make_node("Flatten", ["p2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "Wf", "bf"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    return _model(nodes, inits, [_vi("x", ["N", 1, 8, 8])], [_vi("y", ["N", 3])], None, "conv")


def _tfmlp() -> onnx.ModelProto:
    rng = np.random.default_rng(404)
    inits = [
        _t("starts", np.array([0], np.int64)),
        _t("ends", np.array([1], np.int64)),
        _t("minus_one", np.array([-1], np.int64)),
        _t("W1", _w(rng, 6, 5)),
        _t("b1", _w(rng, 5, scale=0.1)),
        _t("lo", np.array(-1.5, np.float32)),
        _t("hi", np.array(1.5, np.float32)),
        _t("W2", _w(rng, 5, 2)),
        _t("b2", _w(rng, 2, scale=0.1)),
    ]
    nodes = [
        helper.make_node("Cast", ["x"], ["xc"], name="sequential/Cast", to=TensorProto.FLOAT),
        helper.make_node("Shape", ["xc"], ["s"], name="sequential/flatten/Shape"),
        helper.make_node("Slice", ["s", "starts", "ends"], ["n1"], name="sequential/flatten/strided_slice"),
        helper.make_node(
            "Concat", ["n1", "minus_one"], ["shp"], name="sequential/flatten/Reshape/shape", axis=0
        ),
        helper.make_node("Reshape", ["xc", "shp"], ["flat"], name="sequential/flatten/Reshape"),
        helper.make_node("MatMul", ["flat", "W1"], ["m1"], name="sequential/dense/MatMul"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="sequential/dense/BiasAdd"),
        helper.make_node("LeakyRelu", ["a1"], ["h"], name="sequential/dense/LeakyRelu", alpha=0.2),
        helper.make_node("Clip", ["h", "lo", "hi"], ["hc"], name="sequential/dense/clip"),
        helper.make_node("MatMul", ["hc", "W2"], ["m2"], name="sequential/dense_1/MatMul"),
        helper.make_node("Add", ["m2", "b2"], ["a2"], name="sequential/dense_1/BiasAdd"),
        helper.make_node("Sigmoid", ["a2"], ["y"], name="sequential/dense_1/Sigmoid"),
    ]
    meta = {
        "jaxsens.layer_names": json.dumps(["flatten", "dense", "dense_1"]),
        "jaxsens.layer_outputs": json.dumps({"flatten": "flat", "dense": "hc", "dense_1": "y"}),
        "jaxsens.feature_names": json.dumps(["a", "b", "c"]),
        "jaxsens.output_names": json.dumps(["p0", "p1"]),
    }
    return _model(nodes, inits, [_vi("x", ["unk__0", 2, 3])], [_vi("y", ["unk__0", 2])], meta, "tf2onnx")


def _control() -> onnx.ModelProto:
    """A GRU, then a ``Loop`` (3 steps of a tanh cell reading weights from the enclosing scope) and an ``If`` whose
    condition folds at conversion time (the feature count, not the batch)."""
    rng = np.random.default_rng(505)
    steps, n_in, hidden, n_out = 4, 3, 3, 2
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["v_in", "Wl"], ["vm"], name="loop/MatMul"),
            helper.make_node("Add", ["vm", "bl"], ["va"], name="loop/Add"),
            helper.make_node("Tanh", ["va"], ["v_out"], name="loop/Tanh"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop/cond"),
        ],
        "loop_body",
        [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v_in", None)],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out", None)],
    )
    then_branch = helper.make_graph(
        [helper.make_node("Relu", ["v"], ["then_out"], name="if/Relu")], "then", [], [_vi("then_out", None)]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["v"], ["else_out"], name="if/Neg")], "else", [], [_vi("else_out", None)]
    )
    inits = [
        _t("Wg", _w(rng, 1, 3 * hidden, n_in)),
        _t("Rg", _w(rng, 1, 3 * hidden, hidden)),
        _t("Bg", _w(rng, 1, 6 * hidden, scale=0.1)),
        _t("axes0", np.array([0], np.int64)),
        _t("trips", np.array(3, np.int64)),
        _t("true", np.array(True)),
        _t("Wl", _w(rng, hidden, hidden)),
        _t("bl", _w(rng, hidden, scale=0.1)),
        _t("two", np.array([2], np.int64)),
        _t("feature_axis", np.array([2], np.int64)),
        _t("Wo", _w(rng, hidden, n_out)),
        _t("bo", _w(rng, n_out, scale=0.1)),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], name="gru/transpose", perm=[1, 0, 2]),
        helper.make_node(
            "GRU",
            ["xt", "Wg", "Rg", "Bg"],
            ["", "Y_h"],
            name="gru/GRU",
            hidden_size=hidden,
            linear_before_reset=1,
        ),
        helper.make_node("Squeeze", ["Y_h", "axes0"], ["h"], name="gru/Squeeze"),
        helper.make_node("Loop", ["trips", "true", "h"], ["v"], name="loop", body=body),
        helper.make_node("Shape", ["x"], ["x_shape"], name="if/Shape"),
        helper.make_node("Gather", ["x_shape", "feature_axis"], ["n_features"], name="if/Gather", axis=0),
        helper.make_node("Greater", ["n_features", "two"], ["wide"], name="if/Greater"),
        helper.make_node("Squeeze", ["wide"], ["wide0"], name="if/Squeeze"),
        helper.make_node("If", ["wide0"], ["u"], name="if", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("MatMul", ["u", "Wo"], ["o"], name="dense/MatMul"),
        helper.make_node("Add", ["o", "bo"], ["logits"], name="dense/Add"),
        helper.make_node("Softmax", ["logits"], ["y"], name="dense/Softmax", axis=-1),
    ]
    return _model(nodes, inits, [_vi("x", ["N", steps, n_in])], [_vi("y", ["N", n_out])], None, "control")


_BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": _mlp,
    "lstm": _lstm,
    "conv": _conv,
    "tfmlp": _tfmlp,
    "control": _control,
}
_SEED_CACHE: dict[str, bytes] = {}


def seed_model(name: str) -> bytes:
    """The serialized seed model ``name`` (deterministic bytes; cached per process)."""
    if name not in _SEED_CACHE:
        _SEED_CACHE[name] = _BUILDERS[name]().SerializeToString(deterministic=True)
    return _SEED_CACHE[name]


# ---------------------------------------------------------------------------------------------- mutations

_ALL_DTYPES = sorted(v for v in TensorProto.DataType.values() if v != 0)
_REGISTERED_OPS: list[str] | None = None


def _registered_ops() -> list[str]:
    global _REGISTERED_OPS
    if _REGISTERED_OPS is None:
        from converters.onnx_to_jax.registry import supported_ops

        _REGISTERED_OPS = supported_ops("")
    return _REGISTERED_OPS


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _weight_regions(data: bytes, proto: onnx.ModelProto) -> list[tuple[int, int]]:
    """Byte ranges of the serialized file that hold initializer ``raw_data``."""
    regions = []
    for t in proto.graph.initializer:
        raw = t.raw_data
        if len(raw) >= 8:
            start = data.find(raw)
            if start >= 0:
                regions.append((start, start + len(raw)))
    return regions


def _flip(data: bytes, positions: Iterable[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, bit in positions:
        b[pos] ^= 1 << bit
    return bytes(b)


def _mut_bitflip_outside(data, proto, rng):
    regions = _weight_regions(data, proto)
    inside = np.zeros(len(data), bool)
    for lo, hi in regions:
        inside[lo:hi] = True
    candidates = np.flatnonzero(~inside)
    k = int(_pick(rng, [1, 1, 1, 2, 3, 8]))
    pos = [(int(_pick(rng, candidates)), int(rng.integers(8))) for _ in range(k)]
    return _flip(data, pos), f"flip {k} bit(s) at {[p for p, _ in pos]} (outside weight data)"


def _mut_bitflip_weights(data, proto, rng):
    regions = _weight_regions(data, proto)
    lo, hi = _pick(rng, regions)
    k = int(_pick(rng, [1, 1, 2, 4, 16]))
    pos = [(int(rng.integers(lo, hi)), int(rng.integers(8))) for _ in range(k)]
    return _flip(data, pos), f"flip {k} bit(s) at {[p for p, _ in pos]} (inside weight data)"


def _mut_truncate(data, proto, rng):
    r = rng.random()
    if r < 0.8:
        cut = int(rng.integers(0, len(data)))
        return data[:cut], f"truncate to {cut} of {len(data)} bytes"
    if r < 0.9:
        junk = bytes(rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8))
        return data + junk, f"append {len(junk)} random bytes"
    cut = int(rng.integers(0, len(data)))
    n = int(rng.integers(1, 32))
    return data[:cut] + data[cut + n :], f"delete {n} bytes at {cut}"


_INT_VALUES = [-1, 0, 1, 2, 3, -2, 5, 64, 2**31 - 1, -(2**31), 2**40, 2**62, -(2**63), 10**12]
_FLOAT_VALUES = [0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf"), -float("inf"), 3.4e38, -0.5, 2.0]
_STRING_VALUES = [
    b"",
    b"\xff\xfe\x80",
    b"NOTSET",
    b"VALID",
    b"SAME_UPPER",
    b"SAME_LOWER",
    b"forward",
    b"reverse",
    b"bidirectional",
    b"Relu",
    b"Tanh",
    b"Sigmoid",
    b"HardSigmoid",
    b"Foo",
    b"DCR",
    b"linear",
    b"\x00",
]
_ATTR_NAMES = [
    "axis",
    "axes",
    "perm",
    "alpha",
    "beta",
    "to",
    "value",
    "kernel_shape",
    "pads",
    "strides",
    "hidden_size",
    "direction",
    "activations",
    "keepdims",
    "epsilon",
    "group",
    "bogus_attr",
]


def _mut_int(rng, v):
    cands = _INT_VALUES + [v + 1, v - 1, -v, v * 2]
    return int(np.clip(_pick(rng, cands), -(2**63), 2**63 - 1))  # an int64 field


def _mut_list(rng, values: list, elem: Callable):
    r = rng.random()
    values = list(values)
    if r < 0.15:
        return []
    if r < 0.3 and values:
        return values[:-1]
    if r < 0.45:
        return values + [elem(values[-1] if values else 0)]
    if r < 0.6:
        return [elem(values[0] if values else 0)] * int(rng.integers(1, 8))
    if values:
        i = int(rng.integers(len(values)))
        values[i] = elem(values[i])
    return values


def _random_attribute(rng, name: str) -> onnx.AttributeProto:
    kind = int(rng.integers(7))
    if kind == 0:
        return helper.make_attribute(name, int(_pick(rng, _INT_VALUES)))
    if kind == 1:
        return helper.make_attribute(name, float(_pick(rng, _FLOAT_VALUES)))
    if kind == 2:
        return helper.make_attribute(name, _pick(rng, _STRING_VALUES))
    if kind == 3:
        return helper.make_attribute(
            name,
            [int(_pick(rng, _INT_VALUES)) for _ in range(int(rng.integers(0, 5)))],
            attr_type=onnx.AttributeProto.INTS,
        )
    if kind == 4:
        return helper.make_attribute(
            name, [float(_pick(rng, _FLOAT_VALUES)) for _ in range(int(rng.integers(1, 4)))]
        )
    if kind == 5:
        return helper.make_attribute(
            name, [_pick(rng, _STRING_VALUES) for _ in range(int(rng.integers(1, 4)))]
        )
    return helper.make_attribute(name, _random_tensor(rng, "t"))


def _random_tensor(rng, name: str) -> TensorProto:
    dtype = _pick(rng, [np.float32, np.int64, np.float64, np.int32, np.bool_, np.float16, np.uint8])
    shape = tuple(int(rng.integers(0, 4)) for _ in range(int(rng.integers(0, 3))))
    arr = (rng.normal(size=shape) * 3).astype(dtype)
    return numpy_helper.from_array(arr, name)


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes of ``graph`` and of its sub-graphs (``Loop`` bodies, ``If`` branches), recursively."""
    out = []
    for n in graph.node:
        out.append(n)
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                out.extend(_all_nodes(g))
    return out


def _mut_attr(data, proto, rng):
    nodes = _all_nodes(proto.graph)
    with_attrs = [n for n in nodes if n.attribute]
    r = rng.random()
    if r < 0.1 or not with_attrs:  # add an attribute
        node = _pick(rng, nodes)
        name = _pick(rng, _ATTR_NAMES)
        for a in list(node.attribute):
            if a.name == name:
                node.attribute.remove(a)
        node.attribute.append(_random_attribute(rng, name))
        return (
            proto,
            f"node {node.name!r} ({node.op_type}): add attribute {name}={_attr_repr(node.attribute[-1])}",
        )
    node = _pick(rng, with_attrs)
    attr = _pick(rng, list(node.attribute))
    where = f"node {node.name!r} ({node.op_type}) attribute {attr.name!r}"
    if r < 0.18:
        node.attribute.remove(attr)
        return proto, f"{where}: removed"
    if r < 0.25:
        new = _random_attribute(rng, attr.name)
        node.attribute.remove(attr)
        node.attribute.append(new)
        return proto, f"{where}: replaced by {_attr_repr(new)} (type {new.type})"
    A = onnx.AttributeProto
    if attr.type == A.INT:
        attr.i = _mut_int(rng, attr.i)
    elif attr.type == A.FLOAT:
        attr.f = float(_pick(rng, _FLOAT_VALUES + [attr.f * -1, attr.f * 1e6]))
    elif attr.type == A.STRING:
        attr.s = _pick(rng, _STRING_VALUES)
    elif attr.type == A.INTS:
        new = _mut_list(rng, list(attr.ints), lambda v: _mut_int(rng, v))
        del attr.ints[:]
        attr.ints.extend(new)
    elif attr.type == A.FLOATS:
        new = _mut_list(rng, list(attr.floats), lambda v: float(_pick(rng, _FLOAT_VALUES)))
        del attr.floats[:]
        attr.floats.extend(new)
    elif attr.type == A.STRINGS:
        new = _mut_list(rng, list(attr.strings), lambda v: _pick(rng, _STRING_VALUES))
        del attr.strings[:]
        attr.strings.extend(new)
    elif attr.type == A.TENSOR:
        _mutate_tensor(rng, attr.t)
    return proto, f"{where}: now {_attr_repr(attr)}"


def _attr_repr(attr: onnx.AttributeProto) -> str:
    try:
        v = helper.get_attribute_value(attr)
    except Exception as e:  # noqa: BLE001
        return f"<{type(e).__name__}>"
    if isinstance(v, TensorProto):
        return f"tensor(dtype={v.data_type}, dims={list(v.dims)})"
    s = repr(v)
    return s if len(s) < 120 else s[:117] + "..."


def _mutate_tensor(rng, t: TensorProto) -> str:
    r = rng.random()
    if r < 0.4:
        new = _mut_dims(rng, list(t.dims))
        del t.dims[:]
        t.dims.extend(new)
        return f"dims -> {new}"
    if r < 0.8:
        t.data_type = int(_pick(rng, _ALL_DTYPES + [0, 99, -1]))
        return f"data_type -> {t.data_type}"
    new = _random_tensor(rng, t.name)
    t.CopyFrom(new)
    return f"replaced by dtype {new.data_type} dims {list(new.dims)}"


def _mut_dims(rng, dims: list[int]) -> list[int]:
    r = rng.random()
    dims = list(dims)
    if r < 0.15 or not dims:
        return dims + [int(_pick(rng, [1, 2, 0]))]
    if r < 0.25:
        return dims[:-1]
    if r < 0.35:
        return dims[::-1]
    i = int(rng.integers(len(dims)))
    dims[i] = int(_pick(rng, [0, -1, -3, 1, dims[i] + 1, dims[i] * 2, 10**12, 2**31, 2**62, 7]))
    return dims


def _mut_dims_kind(data, proto, rng):
    g = proto.graph
    r = rng.random()
    if r < 0.5:
        t = _pick(rng, list(g.initializer))
        old = list(t.dims)
        new = _mut_dims(rng, old)
        del t.dims[:]
        t.dims.extend(new)
        return proto, f"initializer {t.name!r} dims {old} -> {new}"
    vi = _pick(rng, list(g.input) if r < 0.85 else list(g.output))
    shape = vi.type.tensor_type.shape
    dims = list(shape.dim)
    rr = rng.random()
    if rr < 0.1:
        vi.type.tensor_type.ClearField("shape")
        return proto, f"value {vi.name!r}: shape removed"
    if rr < 0.25:
        shape.dim.add().dim_value = int(_pick(rng, [1, 2, 3]))
        return proto, f"value {vi.name!r}: extra dim"
    if rr < 0.35 and dims:
        shape.dim.pop()
        return proto, f"value {vi.name!r}: last dim dropped"
    if not dims:
        shape.dim.add().dim_value = int(_pick(rng, [0, 1, 5]))
        return proto, f"value {vi.name!r}: a dim added to an empty shape"
    d = _pick(rng, dims)
    rrr = rng.random()
    if rrr < 0.2:
        d.dim_param = _pick(rng, ["M", "", "batch", "unk__9"])
    else:
        d.dim_value = int(_pick(rng, [0, -1, -5, 1, 2, 7, 1000, 10**9, 10**12, 2**62]))
    return (
        proto,
        f"value {vi.name!r}: dims now {[x.dim_value if x.HasField('dim_value') else x.dim_param for x in shape.dim]}",
    )


def _mut_dtype(data, proto, rng):
    g = proto.graph
    r = rng.random()
    new = int(_pick(rng, _ALL_DTYPES + [0, 99, 1000]))
    if r < 0.45:
        t = _pick(rng, list(g.initializer))
        old = t.data_type
        t.data_type = new
        return proto, f"initializer {t.name!r} data_type {old} -> {new}"
    if r < 0.75:
        vi = _pick(rng, list(g.input) if rng.random() < 0.8 else list(g.output))
        old = vi.type.tensor_type.elem_type
        vi.type.tensor_type.elem_type = new
        return proto, f"value {vi.name!r} elem_type {old} -> {new}"
    casts = [n for n in g.node if n.op_type == "Cast"]
    if not casts:  # insert a Cast after the input
        inp = g.input[0].name
        node = helper.make_node("Cast", [inp], [inp + "_cast"], name="fuzz/Cast", to=new)
        for n in g.node:
            n.input[:] = [inp + "_cast" if i == inp else i for i in n.input]
        g.node.insert(0, node)
        return proto, f"insert Cast(to={new}) after input {inp!r}"
    node = _pick(rng, casts)
    for a in node.attribute:
        if a.name == "to":
            old = a.i
            a.i = new
            return proto, f"Cast node {node.name!r} to {old} -> {new}"
    return proto, "no change"


def _mut_op_type(data, proto, rng):
    node = _pick(rng, _all_nodes(proto.graph))
    old = node.op_type
    r = rng.random()
    if r < 0.75:
        node.op_type = _pick(rng, _registered_ops())
    elif r < 0.85:
        node.op_type = _pick(rng, ["Foo", "", "relu", "LSTM2", "Conv ", "\u00e9t\u00e9"])
    else:
        node.domain = _pick(rng, ["com.microsoft", "ai.onnx.ml", "ai.onnx", "x" * 3])
        return proto, f"node {node.name!r} ({old}) domain -> {node.domain!r}"
    return proto, f"node {node.name!r} op_type {old} -> {node.op_type!r}"


def _tensor_names(g: onnx.GraphProto) -> list[str]:
    names = [vi.name for vi in g.input] + [t.name for t in g.initializer]
    for n in g.node:
        names.extend(o for o in n.output if o)
    return names


def _mut_inputs(data, proto, rng):
    g = proto.graph
    node = _pick(rng, _all_nodes(g))
    where = f"node {node.name!r} ({node.op_type})"
    r = rng.random()
    inputs = list(node.input)
    if r < 0.25 and inputs:
        i = int(rng.integers(len(inputs)))
        del node.input[i]
        return proto, f"{where}: input {i} ({inputs[i]!r}) dropped"
    if r < 0.35 and inputs:
        i = int(rng.integers(len(inputs)))
        node.input[i] = ""
        return proto, f"{where}: input {i} ({inputs[i]!r}) set to '' (omitted)"
    if r < 0.7 and inputs:
        i = int(rng.integers(len(inputs)))
        new = _pick(rng, _tensor_names(g) + ["no_such_tensor"])
        node.input[i] = new
        return proto, f"{where}: input {i} {inputs[i]!r} -> {new!r}"
    outputs = list(node.output)
    if r < 0.8 or not outputs:
        new = _pick(rng, _tensor_names(g))
        node.input.append(new)
        return proto, f"{where}: extra input {new!r}"
    i = int(rng.integers(len(outputs)))
    rr = rng.random()
    if rr < 0.4:
        node.output[i] = "renamed_" + outputs[i]
        return proto, f"{where}: output {outputs[i]!r} renamed"
    if rr < 0.6:
        del node.output[i]
        return proto, f"{where}: output {i} ({outputs[i]!r}) dropped"
    if rr < 0.8:
        new = _pick(rng, _tensor_names(g))
        node.output[i] = new
        return proto, f"{where}: output {outputs[i]!r} -> {new!r} (rewired)"
    vi = _pick(rng, list(g.input) + list(g.output))
    old = vi.name
    vi.name = _pick(rng, _tensor_names(g) + ["nowhere"])
    return proto, f"graph value {old!r} renamed to {vi.name!r}"


def _mut_order(data, proto, rng):
    nodes = list(proto.graph.node)
    r = rng.random()
    if r < 0.4:
        order = rng.permutation(len(nodes))
        what = f"shuffled to {order.tolist()}"
    elif r < 0.6:
        order = np.arange(len(nodes))[::-1]
        what = "reversed"
    else:
        order = np.arange(len(nodes))
        i, j = rng.choice(len(nodes), size=2, replace=False)
        order[[i, j]] = order[[j, i]]
        what = f"nodes {int(i)} and {int(j)} swapped"
    copies = [copy.deepcopy(nodes[int(k)]) for k in order]
    del proto.graph.node[:]
    proto.graph.node.extend(copies)
    return proto, f"node order {what}"


def _mut_opset(data, proto, rng):
    r = rng.random()
    if r < 0.7:
        v = int(_pick(rng, [1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 20, 21, 22, 23, 25, 0, -1, 10**6]))
        if not proto.opset_import:
            proto.opset_import.add(domain="", version=v)
        proto.opset_import[0].version = v
        return proto, f"opset -> {v}"
    if r < 0.8:
        del proto.opset_import[:]
        return proto, "opset_import removed"
    if r < 0.9:
        proto.opset_import.add(domain="", version=int(_pick(rng, [9, 13, 30])))
        return proto, "second default-domain opset_import"
    v = int(_pick(rng, [0, 1, 3, 4, 7, 10, 11, 99, -1]))
    proto.ir_version = v
    return proto, f"ir_version -> {v}"


def _mut_dup(data, proto, rng):
    g = proto.graph
    r = rng.random()
    if r < 0.3:
        a, b = rng.choice(len(g.node), size=2, replace=False)
        g.node[int(b)].output[0] = g.node[int(a)].output[0]
        return proto, f"node {int(b)} output renamed to node {int(a)}'s output {g.node[int(a)].output[0]!r}"
    if r < 0.5:
        t = _pick(rng, list(g.initializer))
        dup = copy.deepcopy(t)
        _mutate_tensor(rng, dup)
        dup.name = t.name
        g.initializer.append(dup)
        return proto, f"initializer {t.name!r} duplicated (dims {list(dup.dims)}, dtype {dup.data_type})"
    if r < 0.65:
        t = _pick(rng, list(g.initializer))
        t.name = g.input[0].name
        return proto, f"initializer renamed to the graph input's name {g.input[0].name!r}"
    if r < 0.8:
        g.input.append(copy.deepcopy(g.input[0]))
        return proto, "graph input duplicated"
    if r < 0.9:
        a, b = rng.choice(len(g.node), size=2, replace=False)
        g.node[int(b)].name = g.node[int(a)].name
        return proto, "two nodes share a name"
    g.output.append(copy.deepcopy(g.output[0]))
    return proto, "graph output duplicated"


def _mut_metadata(data, proto, rng):
    props = list(proto.metadata_props)
    keys = ["jaxsens.layer_names", "jaxsens.layer_outputs", "jaxsens.feature_names", "jaxsens.output_names"]
    values = [
        "",
        "{",
        "null",
        "42",
        '"a string"',
        "[1, 2, 3]",
        '["only one"]',
        '{"a": 1}',
        '{"dense": ["x"]}',
        "[[1], {}]",
        "[" + ",".join(f'"n{i}"' for i in range(50)) + "]",
        '{"flatten": 3, "dense": null}',
        "NaN",
        "\u00e9\u00e8",
    ]
    key = _pick(rng, keys)
    value = _pick(rng, values)
    for p in props:
        if p.key == key:
            p.value = value
            break
    else:
        proto.metadata_props.add(key=key, value=value)
    return proto, f"metadata {key} = {value[:40]!r}"


KINDS: dict[str, Callable] = {
    "bitflip_outside": _mut_bitflip_outside,
    "bitflip_weights": _mut_bitflip_weights,
    "truncate": _mut_truncate,
    "attr": _mut_attr,
    "dims": _mut_dims_kind,
    "dtype": _mut_dtype,
    "op_type": _mut_op_type,
    "inputs": _mut_inputs,
    "order": _mut_order,
    "opset": _mut_opset,
    "dup_names": _mut_dup,
    "metadata": _mut_metadata,
}
_BYTE_KINDS = ("bitflip_outside", "bitflip_weights", "truncate")
# structural kinds run more often than the byte-level ones (they reach deeper into the converter)
_SCHEDULE = (
    "attr",
    "bitflip_outside",
    "dims",
    "op_type",
    "dtype",
    "inputs",
    "bitflip_weights",
    "attr",
    "order",
    "opset",
    "truncate",
    "dup_names",
    "dims",
    "metadata",
    "attr",
    "inputs",
    "dtype",
    "op_type",
)


class Variant(dict):
    """``{"seed", "index", "model", "kind", "detail", "data"}`` (``data``: the serialized file)."""


def make_variant(seed: int, index: int) -> Variant:
    """Variant ``index`` of fuzz seed ``seed``: a pure function of the two (same bytes on every run)."""
    model = MODELS[index % len(MODELS)]
    kind = _SCHEDULE[(index // len(MODELS)) % len(_SCHEDULE)]
    rng = np.random.default_rng([seed, index])
    data = seed_model(model)
    proto = onnx.load_model_from_string(data)
    n = 1 if kind in _BYTE_KINDS or rng.random() < 0.8 else 2  # sometimes two mutations of the kind
    details = []
    for _ in range(n):
        out, detail = KINDS[kind](data, proto, rng)
        details.append(detail)
        if isinstance(out, bytes):
            data = out
            break
        proto = out
    else:
        data = proto.SerializeToString()
    return Variant(seed=seed, index=index, model=model, kind=kind, detail="; ".join(details), data=data)


# ---------------------------------------------------------------------------------------------- one variant

# float32 tolerance: the seed models sum at most 64 terms per output through <= 6 layers; a float32 dot product of
# n terms is off by at most ~n * eps times the sum of |terms|, which these small weights keep within a few times the
# output's magnitude. 1024 eps (1.2e-4) relative to the magnitude of the output covers 64 terms * 6 layers with a
# factor 2-3 to spare; anything larger is a real difference in semantics.
EPS32 = float(np.finfo(np.float32).eps)
RTOL = 1024 * EPS32


def compare(got: np.ndarray, ref: np.ndarray) -> str | None:
    """``None`` when ``got`` equals onnxruntime's ``ref`` within the float32 tolerance, else a reason.

    Finite values: ``|got - ref| <= RTOL * (|ref| + max|ref|)`` (relative to the output's magnitude); non-finite
    values must match exactly (NaN where NaN, infinities of the same sign).
    """
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        if got.size == ref.size:
            got = got.reshape(ref.shape)
        else:
            return f"shape {got.shape} vs onnxruntime {ref.shape}"
    fin = np.isfinite(ref)
    if not np.array_equal(np.isnan(got), np.isnan(ref)) or not np.array_equal(
        got[~fin & ~np.isnan(ref)], ref[~fin & ~np.isnan(ref)]
    ):
        return f"non-finite values differ: {got.ravel()[:6]} vs {ref.ravel()[:6]}"
    if not np.all(np.isfinite(got[fin])):
        return f"non-finite values where onnxruntime is finite: {got.ravel()[:6]} vs {ref.ravel()[:6]}"
    if not fin.any():
        return None
    scale = float(np.max(np.abs(ref[fin])))
    err = np.abs(got[fin] - ref[fin])
    bound = RTOL * (np.abs(ref[fin]) + scale)
    if np.all(err <= bound):
        return None
    i = int(np.argmax(err - bound))
    return (
        f"max |diff| {float(err[i]):.3g} > tolerance {float(bound[i]):.3g} (value {float(ref[fin][i]):.6g})"
    )


def _last_frames(tb) -> tuple[str, str]:
    """``file:line`` of the deepest frame, and of the deepest frame inside this repository."""
    frames = traceback.extract_tb(tb)
    if not frames:
        return "", ""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    last = f"{os.path.relpath(frames[-1].filename, root) if frames[-1].filename.startswith(root) else frames[-1].filename}:{frames[-1].lineno}"
    ours = next(
        (
            f"{os.path.relpath(f.filename, root)}:{f.lineno}"
            for f in reversed(frames)
            if f.filename.startswith(root) and "/bench/" not in f.filename
        ),
        "",
    )
    return last, ours


TENSOR_BUDGET = 256 << 20  # JAXSENS_MAX_TENSOR_BYTES in the workers
MAX_INPUT_ELEMENTS = 1 << 22  # a variant whose declared per-sample input is larger is loaded but not called


def _batch_for(model, rng) -> Any:
    """A seeded batch of ``BATCH`` rows per input: normal floats, or small non-negative integers (as float32) for
    an integer / boolean input, so that casting them to the input's type is exact in jaxsens and onnxruntime."""
    shapes = [model.input_shape] if model.n_inputs == 1 else list(model.input_shape)
    dtypes = getattr(model.apply, "input_dtypes", (np.dtype(np.float32),) * len(shapes))
    xs = []
    for shape, dt in zip(shapes, dtypes):
        if dt.kind == "b":
            xs.append(rng.integers(0, 2, size=(BATCH, *shape)).astype(np.float32))
        elif dt.kind in "iu":
            xs.append(rng.integers(0, 5, size=(BATCH, *shape)).astype(np.float32))
        else:
            xs.append(rng.normal(size=(BATCH, *shape)).astype(np.float32))
    return xs[0] if model.n_inputs == 1 else tuple(xs)


def _ort_run(path: str, model, xs, *, per_row: bool = False, reference: bool = False) -> tuple[str, Any]:
    """onnxruntime on the same file and inputs: ``("ok", output)`` or ``("refused", message)``; ``per_row``: one
    row at a time (the per-sample meaning jaxsens gives a graph that mixes the rows of a batch); ``reference``: the
    ONNX reference evaluator (``onnx.reference``, the specification's executable semantics) instead."""
    try:
        sess = _reference_session(path) if reference else _ort_session(path)
    except Exception as e:  # noqa: BLE001
        return "refused", f"{type(e).__name__}: {str(e)[:300]}"
    out_name = model.apply.output
    if out_name not in [o.name for o in sess.get_outputs()]:
        return "refused", f"output {out_name!r} is not a graph output for onnxruntime"
    xs_list = [xs] if model.n_inputs == 1 else list(xs)
    feeds_info = sess.get_inputs()
    if len(feeds_info) != len(xs_list):
        return "refused", f"onnxruntime sees {len(feeds_info)} inputs, jaxsens {len(xs_list)}"
    type_map = {
        "tensor(float)": np.float32,
        "tensor(double)": np.float64,
        "tensor(float16)": np.float16,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(int16)": np.int16,
        "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8,
        "tensor(uint16)": np.uint16,
        "tensor(uint32)": np.uint32,
        "tensor(uint64)": np.uint64,
        "tensor(bool)": np.bool_,
    }
    fixed_batch = any(isinstance(i.shape[0], int) for i in feeds_info if i.shape)
    try:
        feeds = []
        for info, x in zip(feeds_info, xs_list):
            if info.type not in type_map:
                return "refused", f"input type {info.type}"
            feeds.append((info.name, np.asarray(x, np.float32).astype(type_map[info.type])))
        if fixed_batch or per_row:  # jaxsens runs such graphs one row at a time (batch 1)
            rows = [sess.run([out_name], {n: v[r : r + 1] for n, v in feeds})[0] for r in range(BATCH)]
            return "ok", np.concatenate(rows)
        return "ok", sess.run([out_name], dict(feeds))[0]
    except Exception as e:  # noqa: BLE001
        return "refused", f"{type(e).__name__}: {str(e)[:300]}"


def run_variant(
    path: str,
    *,
    seed: int = 0,
    index: int = 0,
    report: Callable | None = None,
    raise_raw: bool = False,
    ort: bool = True,
) -> dict:
    """Load ``path`` with jaxsens, call it once, compare with onnxruntime; returns the outcome record.

    ``report(phase, partial)`` is called before the onnxruntime phase (so a crash there is not blamed on jaxsens).
    """
    import warnings

    import jaxsens

    rec: dict[str, Any] = {}
    rng = np.random.default_rng([seed, index, 1])
    t0 = time.perf_counter()
    model = None
    phase = "load"
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = jaxsens.load_model(path)
            phase = "call"
            shapes = [model.input_shape] if model.n_inputs == 1 else list(model.input_shape)
            if sum(math.prod(s) for s in shapes) > MAX_INPUT_ELEMENTS:
                rec.update(
                    outcome="ok", ort="not run", ort_message=f"not called: input shape {model.input_shape}"
                )
                return rec
            xs = _batch_for(model, rng)
            ys = np.asarray(model(xs))
        rec["outcome"] = "ok"
    except jaxsens.JaxsensError as e:
        rec["outcome"] = f"jaxsens_error:{type(e).__name__}"
        rec["message"] = str(e)[:500]
    except Exception as e:
        if raise_raw:
            raise
        last, ours = _last_frames(e.__traceback__)
        rec.update(
            outcome=f"raw:{type(e).__name__}", message=str(e)[:500], frame=last, our_frame=ours, phase=phase
        )
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    texts = sorted({str(w.message)[:300] for w in caught if issubclass(w.category, UserWarning)})
    if texts:
        rec["warnings"] = texts
    if rec["outcome"] != "ok" or not ort:
        return rec
    if report is not None:
        report("ort", rec)
    status, value = _ort_run(path, model, xs)
    rec["ort"] = status
    if status == "refused":
        rec["ort_message"] = value
        return rec
    reason = compare(ys, value)
    if reason is not None and any("one sample at a time" in t for t in texts):
        # jaxsens warned that it gives this graph its per-sample meaning: compare with onnxruntime row by row
        status, value = _ort_run(path, model, xs, per_row=True)
        rec["ort"] = "ok_per_row" if status == "ok" else status
        reason = compare(ys, value) if status == "ok" else None
    if reason is not None:
        # onnxruntime departs from the ONNX specification in places (its LSTM kernel, for one, turns NaN weights
        # into finite outputs): the ONNX reference evaluator decides
        status, value = _ort_run(path, model, xs, reference=True, per_row=rec["ort"] == "ok_per_row")
        if status == "ok" and compare(ys, value) is None:
            rec["ort"] = "differs_reference_agrees"
            rec["ort_message"] = reason
            reason = None
    if reason is not None:
        rec["outcome"] = "mismatch"
        rec["message"] = reason
        return rec
    _derivative_check(model, xs, rec, raise_raw=raise_raw)
    return rec


#: ops with a hand-written pull-back where a function is differentiated once in reverse mode (``reverse_only``)
REVERSE_RULE_OPS = frozenset({"LSTM", "Conv"})


def _derivative_check(model, xs, rec: dict, *, raise_raw: bool = False) -> None:
    """The Jacobian of an accepted variant whose graph holds an op in :data:`REVERSE_RULE_OPS`: jaxsens's kernel
    (``chunk_jacobians`` in reverse mode: the whole-batch graph and the hand-written pull-backs) against
    ``vmap(jacrev)`` of the plain per-sample lowering. Sets ``rec["jacobian"]``; a raw exception or a difference
    (within :func:`compare`'s tolerance, scaled by the chain of products a pull-back sums) makes the outcome a bug.
    Where the plain Jacobian holds non-finite values (mutated weights), only the absence of raw exceptions is
    checked: two orders of differentiation need not produce the same NaN pattern."""
    import jax

    import jaxsens
    from jaxsens._jacobian import chunk_jacobians

    ops = {n.op_type for n in getattr(model.apply, "nodes", ())}
    if not ops & REVERSE_RULE_OPS or model.n_inputs != 1:
        return
    if getattr(model.apply, "input_dtypes", (np.dtype(np.float32),))[0].kind != "f":
        return
    try:
        got = np.asarray(jax.jit(lambda m, x: chunk_jacobians(m, x, mode="reverse", outputs=None))(model, xs))
        plain = model.with_unroll(0)
        want = np.asarray(jax.jit(jax.vmap(jax.jacrev(lambda x: plain.apply(plain.params, x))))(xs))
    except jaxsens.JaxsensError as e:
        rec["jacobian"] = f"jaxsens_error:{type(e).__name__}"
        return
    except Exception as e:
        if raise_raw:
            raise
        last, ours = _last_frames(e.__traceback__)
        rec.update(outcome=f"raw:{type(e).__name__}", message=str(e)[:500], frame=last, our_frame=ours,
                   phase="jacobian")
        return
    want = want.reshape(got.shape)
    if not np.all(np.isfinite(want)):
        rec["jacobian"] = "not compared (non-finite)"
        return
    reason = compare(got, want)
    rec["jacobian"] = "ok" if reason is None else "mismatch"
    if reason is not None:
        rec["outcome"] = "mismatch"
        rec["message"] = f"Jacobian vs plain jacrev: {reason}"


def _ort_session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


class _Info:
    def __init__(self, name, shape, type_):
        self.name, self.shape, self.type = name, shape, type_


class _reference_session:
    """``onnx.reference.ReferenceEvaluator`` with the few methods of an onnxruntime session that ``_ort_run``
    uses."""

    def __init__(self, path: str):
        from onnx.reference import ReferenceEvaluator

        self.proto = onnx.load(path)
        self.ev = ReferenceEvaluator(self.proto)

    def get_outputs(self):
        return [_Info(vi.name, None, None) for vi in self.proto.graph.output]

    def get_inputs(self):
        stored = {t.name for t in self.proto.graph.initializer}
        out = []
        for vi in self.proto.graph.input:
            if vi.name in stored:
                continue
            t = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            np_type = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
            out.append(_Info(vi.name, dims, _ORT_TYPE_NAMES.get(np_type.name, str(np_type))))
        return out

    def run(self, names, feeds):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.ev.run(names, feeds)


_ORT_TYPE_NAMES = {
    "float32": "tensor(float)",
    "float64": "tensor(double)",
    "float16": "tensor(float16)",
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
    "int16": "tensor(int16)",
    "int8": "tensor(int8)",
    "uint8": "tensor(uint8)",
    "uint16": "tensor(uint16)",
    "uint32": "tensor(uint32)",
    "uint64": "tensor(uint64)",
    "bool": "tensor(bool)",
}


# ---------------------------------------------------------------------------------------------- worker pool


def _limit_memory(mem_bytes: int) -> None:
    if mem_bytes > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))


def _worker(conn, mem_bytes: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # jaxsens' per-tensor byte budget below the address-space cap, so that a huge declared shape meets the budget
    # (a ConversionError naming the tensor) before it meets the cap
    os.environ.setdefault("JAXSENS_MAX_TENSOR_BYTES", str(TENSOR_BUDGET))
    _limit_memory(mem_bytes)
    import warnings

    warnings.simplefilter("ignore")
    import onnxruntime  # noqa: F401

    import jaxsens  # noqa: F401  (import once, before the first task)

    folder = tempfile.mkdtemp(prefix="jaxsens-fuzz-")
    path = os.path.join(folder, "variant.onnx")
    conn.send(("ready",))
    while True:
        msg = conn.recv()
        if msg is None:
            conn.close()
            os._exit(0)  # skip interpreter teardown (XLA's threads may abort it: "terminate called ...")
        seed, index, data = msg
        with open(path, "wb") as f:
            f.write(data)
        rec = run_variant(
            path, seed=seed, index=index, report=lambda phase, r: conn.send(("phase", phase, r))
        )
        conn.send(("done", rec))
        _clear_caches()


def _clear_caches() -> None:
    """Drop compiled kernels of the last variant (every variant is a new architecture: the caches only grow)."""
    import jax

    jax.clear_caches()


class _Slot:
    def __init__(self, ctx, mem_bytes):
        self.ctx, self.mem_bytes = ctx, mem_bytes
        self.start()

    def start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.mem_bytes), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.task = None
        self.deadline = math.inf
        self.partial = None
        self.phase = None
        self.n_done = 0

    def kill(self):
        with contextlib.suppress(OSError, ValueError):  # already gone
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


def run_many(
    indices: Sequence[int],
    *,
    seed: int = 0,
    workers: int = 2,
    timeout: float = 20.0,
    mem_gb: float = 4.0,
    recycle: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Run the variants ``indices`` of ``seed`` in ``workers`` processes; one record per variant, in order.

    A worker that dies is a ``crash`` (its exit code / signal recorded); a variant that runs past ``timeout``
    seconds is a ``hang`` (the worker is killed). Either way the worker is replaced. Workers are also replaced
    every ``recycle`` variants (compiled code and allocator state of earlier variants go with them).
    """
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    mem_bytes = int(mem_gb * 2**30)
    todo = collections.deque(indices)
    results: dict[int, dict] = {}
    slots = [_Slot(ctx, mem_bytes) for _ in range(min(workers, max(1, len(todo))))]
    variants: dict[int, Variant] = {}

    def finish(slot, rec):
        v = variants.pop(slot.task)
        rec.update(seed=seed, index=slot.task, model=v["model"], kind=v["kind"], detail=v["detail"])
        results[slot.task] = rec
        slot.task = None
        slot.partial = None
        slot.n_done += 1
        if progress:
            progress(len(results), len(indices))

    def dispatch(slot):
        if slot.n_done >= recycle:
            slot.conn.send(None)
            slot.kill()
            slot.start()
            return
        while todo:
            i = todo.popleft()
            try:
                v = make_variant(seed, i)
            except Exception as e:  # noqa: BLE001 - a bug of the harness: reported, not fatal
                results[i] = {
                    "seed": seed,
                    "index": i,
                    "model": MODELS[i % len(MODELS)],
                    "kind": "?",
                    "detail": "",
                    "outcome": "harness_error",
                    "message": f"{type(e).__name__}: {e}",
                }
                continue
            variants[i] = v
            slot.task = i
            slot.phase = "load"
            slot.deadline = time.monotonic() + timeout
            slot.conn.send((seed, i, v["data"]))
            return

    try:
        while todo or any(s.task is not None for s in slots):
            waitables = []
            for s in slots:
                waitables += [s.conn, s.proc.sentinel]
            now = time.monotonic()
            next_deadline = min((s.deadline for s in slots if s.task is not None), default=now + 1)
            ready = wait(waitables, timeout=max(0.05, min(next_deadline - now, 1.0)))
            for s in slots:
                if s.conn in ready:
                    try:
                        msg = s.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is None:
                        pass
                    elif msg[0] == "ready":
                        s.ready = True
                        dispatch(s)
                        continue
                    elif msg[0] == "phase":
                        s.phase, s.partial = msg[1], msg[2]
                        s.deadline = time.monotonic() + timeout
                        continue
                    elif msg[0] == "done":
                        finish(s, msg[1])
                        dispatch(s)
                        continue
                if not s.proc.is_alive():
                    code = s.proc.exitcode
                    if s.task is not None:
                        finish(s, _dead_record(s, f"worker died (exit code {code})", "crash"))
                    elif not s.ready:
                        raise RuntimeError(f"a fuzz worker failed to start (exit code {code})")
                    s.kill()
                    s.start()
                elif s.task is not None and time.monotonic() > s.deadline:
                    s.kill()
                    finish(s, _dead_record(s, f"no result after {timeout:g} s (phase {s.phase})", "hang"))
                    s.start()
    finally:
        for s in slots:
            with contextlib.suppress(OSError, ValueError):  # a dead worker's pipe
                s.conn.send(None)
            s.proc.join(2)
            s.kill()
    return [results[i] for i in indices]


def _dead_record(slot, message: str, outcome: str) -> dict:
    if slot.phase == "ort" and slot.partial is not None:  # jaxsens finished; onnxruntime died or hung
        rec = dict(slot.partial)
        rec["ort"] = f"ort_{outcome}"
        rec["ort_message"] = message
        return rec
    return {"outcome": outcome, "message": message, "phase": slot.phase}


# ---------------------------------------------------------------------------------------------- report

GOOD = ("ok",)


def is_bug(rec: dict) -> bool:
    """A raw exception, a crash, a hang or a mismatch with onnxruntime."""
    o = rec["outcome"]
    return not (o == "ok" or o.startswith("jaxsens_error:"))


def summarize(records: Sequence[dict]) -> dict:
    """Counts per outcome overall, per seed model and per mutation kind; the cases to look at."""

    def counts(key=None):
        out: dict[str, dict[str, int]] = {}
        for r in records:
            k = r[key] if key else "all"
            out.setdefault(k, collections.Counter())[r["outcome"]] += 1
        return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}

    ok = [r for r in records if r["outcome"] in ("ok", "mismatch")]
    ort = collections.Counter(r.get("ort", "not run") for r in ok)
    refused_by_ort = [
        {k: r.get(k) for k in ("seed", "index", "model", "kind", "detail", "ort", "ort_message")}
        for r in ok
        if r.get("ort") != "ok"
    ]
    bugs = [
        {
            k: r.get(k)
            for k in (
                "seed",
                "index",
                "model",
                "kind",
                "detail",
                "outcome",
                "message",
                "frame",
                "our_frame",
                "phase",
            )
            if r.get(k) is not None
        }
        for r in records
        if is_bug(r)
    ]
    by_class = collections.Counter(r["outcome"] for r in records if r["outcome"].startswith("jaxsens_error:"))
    return {
        "n": len(records),
        "outcomes": counts()["all"] if records else {},
        "by_model": counts("model"),
        "by_kind": counts("kind"),
        "jaxsens_errors": dict(by_class),
        "ok_vs_onnxruntime": dict(ort),
        "jacobian_vs_plain": dict(collections.Counter(r["jacobian"] for r in records if "jacobian" in r)),
        "bugs": bugs,
        "ok_not_confirmed_by_onnxruntime": refused_by_ort,
    }


def _print_table(summary: dict) -> None:
    outcomes = sorted({o for v in summary["by_model"].values() for o in v})
    short = {o: o.replace("jaxsens_error:", "J:") for o in outcomes}
    for title, table in (("model", summary["by_model"]), ("kind", summary["by_kind"])):
        header = [title] + [short[o] for o in outcomes]
        rows = [[k] + [str(v.get(o, 0)) for o in outcomes] for k, v in table.items()]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        print()
    print("outcomes:", summary["outcomes"])
    print("ok vs onnxruntime:", summary["ok_vs_onnxruntime"])
    print("Jacobian (hand-written pull-backs) vs plain jacrev:", summary["jacobian_vs_plain"])
    for b in summary["bugs"][:40]:
        print(
            f"  {b['seed']}:{b['index']} {b['model']}/{b['kind']} {b['outcome']} {b.get('our_frame') or b.get('frame', '')}"
            f" {b.get('message', '')[:160]!r}  [{b['detail'][:100]}]"
        )
    if len(summary["bugs"]) > 40:
        print(f"  ... {len(summary['bugs']) - 40} more")


def replay(seed: int, index: int, *, keep: str | None = None) -> dict:
    """Rerun one variant in this process; raw exceptions propagate with their full traceback."""
    os.environ.setdefault("JAXSENS_MAX_TENSOR_BYTES", str(TENSOR_BUDGET))  # as in the workers
    v = make_variant(seed, index)
    print(f"variant {seed}:{index}: model {v['model']}, kind {v['kind']}: {v['detail']}")
    folder = keep or tempfile.mkdtemp(prefix="jaxsens-fuzz-replay-")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"variant_{seed}_{index}.onnx")
    with open(path, "wb") as f:
        f.write(v["data"])
    print(f"file: {path}")
    rec = run_variant(path, seed=seed, index=index, raise_raw=True)
    print(json.dumps(rec, indent=1, default=str))
    return rec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--n", type=int, default=300, help="number of variants (indices start..start+n-1)")
    p.add_argument("--start", type=int, default=0, help="first variant index")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--timeout", type=float, default=20.0, help="seconds per variant before it counts as a hang"
    )
    p.add_argument("--mem-gb", type=float, default=4.0, help="address-space cap per worker (RLIMIT_AS), GiB")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--replay", default=None, metavar="SEED:INDEX", help="rerun one variant in-process")
    p.add_argument("--keep", default=None, help="with --replay: folder to write the variant file to")
    args = p.parse_args(argv)
    if args.replay:
        seed, index = (int(v) for v in args.replay.split(":"))
        replay(seed, index, keep=args.keep)
        return 0
    t0 = time.time()
    last = [0.0]

    def progress(done, total):
        if time.time() - last[0] > 30 or done == total:
            last[0] = time.time()
            print(f"  {done}/{total} variants, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    indices = list(range(args.start, args.start + args.n))
    records = run_many(
        indices,
        seed=args.seed,
        workers=args.workers,
        timeout=args.timeout,
        mem_gb=args.mem_gb,
        progress=progress,
    )
    summary = summarize(records)
    _print_table(summary)
    if args.out:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _common import machine_info

        report = {
            "settings": {
                "n": args.n,
                "start": args.start,
                "seed": args.seed,
                "workers": args.workers,
                "timeout_s": args.timeout,
                "mem_gb": args.mem_gb,
                "models": list(MODELS),
                "kinds": list(KINDS),
                "rtol": RTOL,
            },
            "machine": machine_info(),
            "wall_seconds": round(time.time() - t0, 1),
            **summary,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"wrote {args.out}")
    return 1 if summary["bugs"] else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
