"""Fixed-batch exports -> a symbolic batch axis, proved by provenance and confirmed on numbers.

``torch.onnx.export(model, (x,), path)`` without ``dynamic_axes`` / ``dynamic_shapes`` writes a graph for exactly
the example's batch size ``N``: the input is declared ``[N, ...]`` and the batch size is baked into constants, e.g.
``Reshape(h, [N, 144])`` for ``h.view(h.size(0), -1)``, an LSTM's zero state ``[num_layers, N, hidden]``, or
``Expand(zeros[1, N, 16], [1, Shape(x)[1], 16])``. Such a graph runs at batch ``N`` only.
:func:`make_batch_symbolic` rewrites it to run at any batch size:

1. **Provenance.** The graph is evaluated once at batch ``N`` (shapes of the data path, values of everything
   static). Starting from the inputs' axis 0, one rule per op follows which axis of which tensor carries the batch
   (:data:`Layout`: the axis, and for an axis that merges the batch with others, e.g. ``[seq, N * heads, d]`` in
   multi-head attention, the factors around it). Static shape arithmetic (``Shape`` -> ``Gather`` -> ``Concat``)
   is evaluated a second time at another batch size to see which values follow the batch.
2. **Rewrite**, only where provenance says a value must follow the batch: a ``Reshape`` of a batch-carrying
   tensor gets its target with ``-1`` on the batch axis (its other entries are batch-free, so they are resolved
   to constants); an ``Expand`` / ``Slice`` constant equal to the batch on the batch axis becomes ``1`` / "to the
   end"; a batch-free operand of size ``N`` along the batch axis (a zero state, a constant expanded to the batch)
   must be constant along it, and is cut to one row (a weight or ``Constant``: stored so; else a ``Slice``) for
   broadcasting ops, then expanded to ``Shape(x)[axis]`` for ops that need the exact size (RNN states,
   ``Concat``). A constant that equals ``N`` by
   coincidence (a hidden size of 2 with a batch of 2) is never touched: only the batch axis of a batch-carrying
   tensor, as the rules trace it, is.
3. **Confirmation.** On ``N + 1`` random rows, the rewritten graph at batch ``N + 1`` must reproduce the original
   graph run at its own batch ``N`` on the first ``N`` rows; at batch 1 it must reproduce the first row (a row
   alone gives what it gives among ``N``: the original's rows do not depend on each other) and its own last row.
   A wrong rewrite mixes rows (errors of the order of the outputs) or fails on shapes; the tolerance, ``1e-4`` of
   the largest output, leaves room for float32 rounding only.

Anything not proved (an op without a rule on the batch path, a batch-free operand varying along the batch axis, a
reshape splitting the batch, a failed confirmation) leaves the rewrite undone. The original graph is then kept
when running it one sample at a time (a batch of 1, what jaxsens did before) reproduces it at batch ``N``, or when
it reduces or normalises over the batch axis (the row check, :mod:`converters.onnx_to_jax.rows`, then warns or
refuses naming the node); otherwise it is refused with a :class:`~converters.errors.ConversionError` that says the
graph fixes the batch at ``N``, why it could not be freed, and shows the ``torch.onnx.export`` call to re-export
with. A fixed batch of 1 is left alone: one sample at a time is that graph's own meaning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.errors import ConversionError
from converters.onnx_to_jax.registry import max_tensor_bytes

__all__ = ["Layout", "make_batch_symbolic", "reexport_hint"]

Layout = tuple[int, int, int]
"""``(axis, outer, inner)``: the tensor's ``axis`` has size ``outer * batch * inner``, the batch index being the
middle factor (``outer == inner == 1``: the axis is the batch)."""

_INT64_MAX = np.iinfo(np.int64).max
_RTOL = 1e-4  # confirmation: relative to the largest |output|; a wrong rewrite mixes rows (errors of order one)
_UNKNOWN = object()  # a static value that could not be evaluated at the other batch size

_POINTWISE = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Cos",
    "Cosh", "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity", "IsInf",
    "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign",
    "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Swish", "Tan", "Tanh", "ThresholdedRelu",
})
_BROADCAST = frozenset({
    "Add", "And", "BitShift", "Div", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Max", "Mean",
    "Min", "Mod", "Mul", "Or", "Pow", "PRelu", "Sub", "Sum", "Where", "Xor",
})
_RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})
# ops that keep axis 0 (the batch) of their first input and compute per sample along the others
_BATCH_FIRST = frozenset({
    "AveragePool", "BatchNormalization", "Conv", "ConvTranspose", "DepthToSpace", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "GroupNormalization", "InstanceNormalization", "LpPool", "LRN", "MaxPool",
    "SpaceToDepth",
})
_REDUCE = frozenset({
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "ReduceSumSquare",
})
_SHAPE_READERS = frozenset({"Shape", "Size"})


class _Unproven(Exception):
    """The rewrite cannot be proved; the message says where."""


def reexport_hint(input_names: Sequence[str]) -> str:
    """The ``torch.onnx.export`` calls that write a symbolic batch axis for ``input_names``."""
    axes = ", ".join(f"{n!r}: {{0: 'batch'}}" for n in input_names)
    dims = ", ".join("{0: torch.export.Dim('batch')}" for _ in input_names)
    names = ", ".join(repr(n) for n in input_names)
    return (
        f"torch.onnx.export(model, args, path, dynamo=False, input_names=[{names}], dynamic_axes={{{axes}}}), or "
        f"with the default exporter torch.onnx.export(model, args, path, dynamic_shapes=({dims},)) (one entry per "
        f"forward argument); other exporters: declare the first input axis symbolic (e.g. tf2onnx with a "
        f"[None, ...] input signature)"
    )


def make_batch_symbolic(
    proto: onnx.ModelProto, *, output: str | int | None = None, input_shape: Sequence[int] | None = None
) -> onnx.ModelProto:
    """``proto`` with its fixed batch axis made symbolic, when that is proved (see the module docstring).

    Returns ``proto`` itself when no input fixes a batch above 1 (a fixed batch of 1 is run one sample at a time,
    the graph's own meaning), or when the rewrite is not proved but the original graph, run one sample at a time,
    reproduces itself at its own batch. Otherwise a new ``ModelProto`` whose inputs (and batch-carrying outputs)
    declare the batch axis as ``"batch"``.

    Args:
        proto: the model (external data already resolved).
        output: the output to be explained (as for :class:`~converters.onnx_to_jax.graph.OnnxFunction`).
        input_shape: the per-sample input shape, for a single input whose other axes the file leaves unknown.

    Raises:
        ConversionError: the graph fixes the batch at ``N > 1``, the rewrite is not proved and running it one
            sample at a time fails or differs from the graph at batch ``N`` (the message names the reason and the
            ``torch.onnx.export`` call to re-export with).
    """
    from converters.onnx_to_jax.graph import OnnxFunction

    graph = proto.graph
    stored = {t.name for t in graph.initializer} | {sp.values.name for sp in graph.sparse_initializer}
    inputs = [vi for vi in graph.input if vi.name not in stored]
    n, shapes = _fixed_batch(inputs, input_shape)
    if n is None:
        return proto
    fn = OnnxFunction(proto, output=output)
    dtypes = list(fn.input_dtypes)
    if any((n + 1) * math.prod(s) * d.itemsize > max_tensor_bytes() for s, d in zip(shapes, dtypes)):
        return proto  # a corrupt or huge declared input: Model.from_onnx refuses it before anything is drawn
    params = {k: np.asarray(v) for k, v in fn.params.items()}
    xs = _draw(shapes, dtypes, n + 1)
    try:
        ref = _runner(fn, params)([x[:n] for x in xs])
        if ref.ndim == 0 or ref.shape[0] != n:
            return proto  # no batch on the output's axis 0: the ordinary conversion reports it
    except Exception:  # noqa: BLE001 - the graph fails at its own batch size: the ordinary conversion reports it
        return proto
    try:
        rewritten = _rewrite(proto, fn, n, shapes, dtypes)
        _confirm(rewritten, output, xs, ref)
        return rewritten
    except _Unproven as e:
        reason = str(e)
    except Exception as e:  # noqa: BLE001 - a graph the rules do not cover: not proved, handled as such below
        reason = f"{type(e).__name__}: {e}"
    # not proved: keep the original if it means the same one sample at a time (a batch of 1: jaxsens's per-sample
    # evaluation), refuse it if it fails there
    import jax

    try:
        rows = [x[:n] for x in xs]
        per_sample = np.asarray(jax.vmap(fn, in_axes=(None, 0))(params, tuple(rows) if len(rows) > 1 else rows[0]))
    except Exception as e:
        raise ConversionError(_refusal(fn, inputs, n, reason, f"it fails ({e})")) from e
    if _close(per_sample, ref):
        return proto
    if _per_sample_policy_speaks(fn, params, shapes):
        return proto  # an op reducing / normalising over the batch: the row check warns or refuses, naming it
    raise ConversionError(
        _refusal(fn, inputs, n, reason, "it gives other numbers than at its own batch size")
    )


def _refusal(fn, inputs, n: int, reason: str, per_sample: str) -> str:
    declared = ", ".join(f"{vi.name!r} is declared {_dims(vi)}" for vi in inputs)
    return (
        f"the graph fixes the batch at {n} (input {declared}: an export without dynamic axes) and jaxsens cannot "
        f"make that axis symbolic: {reason}; run one sample at a time, {per_sample}. Export the model again with a "
        f"symbolic batch axis: {reexport_hint(fn.input_names)}"
    )


def _dims(vi: onnx.ValueInfoProto) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                           for d in vi.type.tensor_type.shape.dim) + "]"


def _fixed_batch(inputs, input_shape) -> tuple[int | None, list[tuple[int, ...]]]:
    """``(N, per-sample shapes)`` when every input declares axis 0 as the same fixed ``N > 1`` and every other
    axis is known (from the file, or ``input_shape`` for one input); ``(None, [])`` otherwise."""
    if not inputs:
        return None, []
    firsts, shapes = set(), []
    for vi in inputs:
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if t is None or not t.HasField("shape") or not t.shape.dim:
            return None, []
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        firsts.add(dims[0])
        shapes.append(tuple(dims[1:]))
    if len(firsts) != 1 or None in firsts or min(firsts) < 2:
        return None, []
    if input_shape is not None and len(inputs) == 1:
        try:
            given = tuple(int(d) for d in input_shape)
        except (TypeError, ValueError):
            return None, []  # Model.from_onnx reports the bad argument
        if len(given) != len(shapes[0]) or any(d is not None and d != g for d, g in zip(shapes[0], given)):
            return None, []
        shapes = [given]
    if any(d is None or d < 1 for s in shapes for d in s):
        return None, []
    return firsts.pop(), shapes


def _draw(shapes, dtypes, rows: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for shape, dt in zip(shapes, dtypes):
        size = (rows, *shape)
        if dt.kind == "f":
            out.append(rng.standard_normal(size).astype(dt))
        elif dt.kind == "b":
            out.append(rng.integers(0, 2, size).astype(bool))
        else:  # token ids and the like: 0 and 1 are valid indices of any table
            out.append(rng.integers(0, 2, size).astype(dt))
    return out


def _runner(fn, params):
    """``xs -> fn.apply_batch(params, *xs)`` as numpy, compiled once per batch size (XLA's optimisations off: the
    check runs a few rows once, and compiles in about half the time)."""
    import jax

    run, compiled = jax.jit(fn.apply_batch), {}

    def call(xs):
        key = tuple((x.shape, x.dtype) for x in xs)
        if key not in compiled:
            lowered = run.lower(params, *xs)
            try:
                compiled[key] = lowered.compile({"xla_backend_optimization_level": 0})
            except Exception:  # noqa: BLE001 - an XLA without that option
                compiled[key] = lowered.compile()
        return np.asarray(compiled[key](params, *xs))

    return call


def _close(got, ref) -> bool:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return False
    finite = np.abs(ref[np.isfinite(ref)])
    scale = finite.max() if finite.size else 0.0
    both_nan = np.isnan(got) & np.isnan(ref)
    same_inf = np.isinf(ref) & (got == ref)
    err = np.where(both_nan | same_inf, 0.0, np.abs(got - ref))
    return bool(np.all(err <= _RTOL * scale))


def _confirm(rewritten, output, xs, ref) -> None:
    """The rewritten graph reproduces ``ref`` (the original at its batch ``N``, rows ``0..N-1`` of ``xs``) row for
    row at batch 1 and at batch ``N + 1`` (whose last row must equal that row alone), or :class:`_Unproven`."""
    from converters.onnx_to_jax.graph import OnnxFunction

    n = len(ref)
    try:
        fn = OnnxFunction(rewritten, output=output)
        run = _runner(fn, {k: np.asarray(v) for k, v in fn.params.items()})
        first, last = (run([x[k : k + 1] for x in xs]) for k in (0, n))
        rows = run(xs)
    except Exception as e:
        raise _Unproven(f"the rewritten graph fails: {type(e).__name__}: {e}") from e
    for batch, got, want in ((1, first, ref[:1]), (n + 1, rows[:n], ref), (n + 1, rows[n:], last)):
        if not _close(got, want):
            raise _Unproven(f"the rewritten graph at batch {batch} does not reproduce the original at batch {n}")


def _per_sample_policy_speaks(fn, params, shapes) -> bool:
    """Whether the row check (:mod:`converters.onnx_to_jax.rows`) names a node that reduces or normalises over the
    batch axis: its warning or refusal then explains the per-sample meaning better than a generic refusal."""
    import jax

    from converters.onnx_to_jax.rows import batch_findings, judge_findings

    leaves = jax.tree.leaves(params)
    try:
        batch = [jax.ShapeDtypeStruct((1, *s), d) for s, d in zip(shapes, fn.input_dtypes)]
        jaxpr = jax.make_jaxpr(fn.apply_batch)(params, *batch)
    except Exception:  # noqa: BLE001
        return False
    findings = batch_findings(jaxpr, [None] * len(leaves) + [0] * len(batch), values=leaves)
    op_types = {node.name: node.op_type for node in fn.nodes}
    refusals, warns = judge_findings(findings, op_types)
    return bool(refusals or warns)


# ---------------------------------------------------------------- provenance and rewrite
def _rewrite(proto, fn, n: int, shapes, dtypes) -> onnx.ModelProto:
    """The rewritten model, or :class:`_Unproven`."""
    info = _evaluate(fn, n, shapes, dtypes)
    plan = _Plan(proto, fn, n, info)
    for node in fn.nodes:
        plan.visit(node)
    out = plan.layouts.get(fn.output)
    if out != (0, 1, 1):
        raise _Unproven(f"output {fn.output!r} does not carry the batch on its axis 0 (traced: {out})")
    return plan.build()


def _evaluate(fn, n: int, shapes, dtypes) -> dict[str, Any]:
    """Every tensor of the graph at batch ``n``: a numpy value when static (weights included), else a
    ``ShapeDtypeStruct``."""
    import jax

    from converters.onnx_to_jax.graph import _run_nodes

    seen: dict[str, Any] = {}

    def run(*xs):
        env: dict[str, Any] = dict(fn.consts)
        env.update({k: np.asarray(v) for k, v in fn.params.items()})  # static: weights fold, shapes stay values
        env.update(zip(fn.input_names, xs))
        env = _run_nodes(fn.nodes, env, fn.opset)
        for name, v in env.items():
            seen[name] = v if isinstance(v, np.ndarray | np.generic) else jax.ShapeDtypeStruct(v.shape, v.dtype)
        return env[fn.output]

    try:
        jax.eval_shape(run, *[jax.ShapeDtypeStruct((n, *s), d) for s, d in zip(shapes, dtypes)])
    except Exception as e:
        raise _Unproven(f"the graph cannot be evaluated at its own batch size {n}: {e}") from e
    return seen


def _is_value(v) -> bool:
    return isinstance(v, np.ndarray | np.generic)


class _Plan:
    """Walks the nodes once: batch layouts, values at another batch size, and the edits that free the batch."""

    def __init__(self, proto, fn, n: int, info: dict[str, Any]):
        self.proto, self.fn, self.n, self.info = proto, fn, n, info
        self.n2 = 2 * n + 1  # the other batch size at which static shape arithmetic is evaluated
        self.layouts: dict[str, Layout] = {name: (0, 1, 1) for name in fn.input_names}
        self.primed: dict[str, Any] = {}  # static values that differ at batch n2 (or _UNKNOWN)
        self.before: dict[tuple, list[onnx.NodeProto]] = {}  # node key -> nodes to insert before it
        self.renamed: dict[tuple, dict[int, str]] = {}  # node key -> {input slot: new tensor}
        self.inits: list[onnx.TensorProto] = []
        self.followed: dict[tuple, str] = {}  # (tensor, axis, ref) -> the copy that follows the batch
        self.names = {o for nd in proto.graph.node for o in nd.output} | {t.name for t in proto.graph.initializer}
        self.names |= {vi.name for vi in proto.graph.input}
        self.stored = {t.name for t in proto.graph.initializer}
        self.stored |= {o for nd in proto.graph.node if nd.op_type == "Constant" for o in nd.output}

    # ------------------------------------------------------------ tensor facts
    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in np.shape(self.info[name]))

    def value(self, name: str, what: str):
        v = self.info.get(name)
        if not _is_value(v):
            raise _Unproven(f"{what} ({name!r}) is not known at conversion time")
        return np.asarray(v)

    def follows(self, name: str) -> bool:
        return name in self.primed

    def primed_value(self, name: str, what: str):
        v = self.primed.get(name)
        if v is _UNKNOWN:
            raise _Unproven(f"{what} ({name!r}) cannot be evaluated at another batch size")
        return v

    def fresh(self, base: str) -> str:
        name, k = f"{base}__batch", 0
        while name in self.names:
            k += 1
            name = f"{base}__batch{k}"
        self.names.add(name)
        return name

    def constant(self, base: str, value) -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.int64), name))
        return name

    # ------------------------------------------------------------ the walk
    def visit(self, node) -> None:
        ins = [i for i in node.inputs if i]
        free = _free_names(node)
        if any(i in self.layouts or self.follows(i) for i in free):
            raise _Unproven(f"{node.op_type} node {node.name!r} reads the batch inside a sub-graph")
        if not any(i in self.layouts for i in ins) and not (
            node.op_type == "Expand" and any(self.follows(i) for i in ins)
        ):
            self._static(node)
            return
        if node.op_type in _SHAPE_READERS:
            self._shape_reader(node)
            return
        rule = _RULES.get(node.op_type)
        if node.op_type in _POINTWISE:
            rule = _pointwise
        elif node.op_type in _BROADCAST:
            rule = _broadcast
        elif node.op_type in _RESHAPES:
            rule = _reshape_like
        elif node.op_type in _BATCH_FIRST:
            rule = _batch_first
        elif node.op_type in _REDUCE:
            rule = _reduce
        if rule is None or node.domain:
            raise _Unproven(f"no rule follows the batch through {node.op_type} node {node.name!r}")
        outs = rule(self, node)
        for name, layout in zip(node.outputs, outs):
            if not name or layout is None:
                continue
            a, o, i = layout
            shape = self.shape(name)
            if not 0 <= a < len(shape) or shape[a] != o * self.n * i:
                raise _Unproven(f"{node.op_type} node {node.name!r}: output {name!r} of shape {shape} has no batch "
                                f"axis where the rule puts it ({layout})")
            self.layouts[name] = layout
        for name in node.outputs:
            if name and name not in self.layouts and not _is_value(self.info.get(name)):
                raise _Unproven(f"{node.op_type} node {node.name!r}: output {name!r} depends on the data but no "
                                f"axis of it carries the batch")

    def _static(self, node) -> None:
        """A node off the batch path: re-evaluate it at batch ``n2`` when an input's value follows the batch."""
        if not any(self.follows(i) for i in node.inputs if i):
            return
        if any(self.primed.get(i) is _UNKNOWN for i in node.inputs if i):
            self._unknown(node)
            return
        from converters.onnx_to_jax.graph import _run_nodes

        env = {i: self.primed.get(i, self.info.get(i)) for i in node.inputs if i}
        if not all(_is_value(v) for v in env.values()):
            self._unknown(node)
            return
        try:
            out = _run_nodes([node], dict(env), self.fn.opset)
        except Exception:  # noqa: BLE001 - e.g. Expand(zeros[1, N, 16], [1, n2, 16]): fixed where consumed
            self._unknown(node)
            return
        for name in node.outputs:
            if not name:
                continue
            old, new = self.info.get(name), out.get(name)
            if not _is_value(old) or not _is_value(new):
                self.primed[name] = _UNKNOWN
                continue
            old, new = np.asarray(old), np.asarray(new)
            if old.shape == new.shape:
                if not np.array_equal(old, new, equal_nan=old.dtype.kind == "f"):
                    self.primed[name] = new
                continue
            changed = [k for k, (a, b) in enumerate(zip(old.shape, new.shape)) if a != b]
            if old.ndim == new.ndim and changed == [changed[0]] and old.shape[changed[0]] == self.n \
                    and new.shape[changed[0]] == self.n2:
                self.layouts[name] = (changed[0], 1, 1)  # e.g. ConstantOfShape([1, Shape(x)[1], 16])
            else:
                self.primed[name] = _UNKNOWN

    def _unknown(self, node) -> None:
        for name in node.outputs:
            if name:
                self.primed[name] = _UNKNOWN

    def _shape_reader(self, node) -> None:
        from converters.onnx_to_jax.graph import _run_nodes

        x = node.inputs[0]
        a, o, i = self.layouts[x]
        shape = list(self.shape(x))
        shape[a] = o * self.n2 * i
        env = {x: np.broadcast_to(np.zeros((), np.float32), shape)}
        try:
            out = _run_nodes([node], env, self.fn.opset)
        except Exception:  # noqa: BLE001
            self._unknown(node)
            return
        y = node.outputs[0]
        if not np.array_equal(out[y], self.value(y, f"{node.op_type} node {node.name!r}")):
            self.primed[y] = np.asarray(out[y])  # e.g. Shape(x, start=1) leaves the batch out: nothing follows

    # ------------------------------------------------------------ edits
    def key(self, node) -> tuple:
        return tuple(node.outputs)

    def set_input(self, node, slot: int, name: str) -> None:
        self.renamed.setdefault(self.key(node), {})[slot] = name

    def insert(self, node, new: onnx.NodeProto) -> None:
        self.before.setdefault(self.key(node), []).append(new)

    def follow(self, node, slot: int, axis: int, ref: tuple[str, int] | None = None) -> None:
        """Make batch-free input ``slot`` of ``node`` (of size ``N`` along ``axis``) follow the batch: it must be
        constant along ``axis``; it is sliced to size 1 there, and with ``ref = (tensor, its batch axis)``
        expanded back to that tensor's batch size (for ops that do not broadcast)."""
        name = node.inputs[slot]
        done = self.followed.get((name, axis, ref))
        if done is not None:  # the same state read again (an LSTM's h and c, a second layer): one copy
            self.set_input(node, slot, done)
            return
        if self.follows(name):
            raise _Unproven(f"{node.op_type} node {node.name!r}: input {name!r} depends on the batch size in a way "
                            f"no rule follows")
        value = self.value(name, f"{node.op_type} node {node.name!r}: input {slot}")
        if not np.array_equal(value, np.take(value, [0], axis=axis).repeat(value.shape[axis], axis=axis),
                              equal_nan=value.dtype.kind == "f"):
            raise _Unproven(
                f"{node.op_type} node {node.name!r}: input {name!r} of shape {list(value.shape)} spans the batch "
                f"axis ({axis}, batch size {self.n}) and differs from row to row, so it is not a state or constant "
                f"repeated for every sample"
            )
        sliced = self.fresh(f"{name}_row")
        if name in self.stored:  # a weight or a Constant: stored as its one row (the same at every export batch)
            self.inits.append(numpy_helper.from_array(np.take(value, [0], axis=axis), sliced))
        else:
            starts = self.constant(f"{name}_start", [0])
            ends = self.constant(f"{name}_end", [1])
            axes = self.constant(f"{name}_axis", [axis])
            self.insert(node, helper.make_node("Slice", [name, starts, ends, axes], [sliced], name=self.fresh(sliced)))
        if ref is not None:
            tensor, ref_axis = ref
            if self.layouts.get(tensor, (None, 0, 0))[1:] != (1, 1):
                raise _Unproven(f"{node.op_type} node {node.name!r}: no clean batch axis to size input {name!r} by")
            dims = list(value.shape)
            shape_of, batch = self.fresh(f"{tensor}_shape"), self.fresh(f"{tensor}_batch")
            target, expanded = self.fresh(f"{name}_shape"), self.fresh(f"{name}_rows")
            index = self.constant(f"{tensor}_axis", [ref_axis])
            parts = []
            if axis:
                parts.append(self.constant(f"{name}_lead", dims[:axis]))
            parts.append(batch)
            if axis + 1 < len(dims):
                parts.append(self.constant(f"{name}_tail", dims[axis + 1 :]))
            self.insert(node, helper.make_node("Shape", [tensor], [shape_of], name=self.fresh(shape_of)))
            self.insert(node, helper.make_node("Gather", [shape_of, index], [batch], axis=0, name=self.fresh(batch)))
            self.insert(node, helper.make_node("Concat", parts, [target], axis=0, name=self.fresh(target)))
            self.insert(node, helper.make_node("Expand", [sliced, target], [expanded], name=self.fresh(expanded)))
            sliced = expanded
        self.followed[(name, axis, ref)] = sliced
        self.set_input(node, slot, sliced)

    def build(self) -> onnx.ModelProto:
        out = onnx.ModelProto()
        out.CopyFrom(self.proto)
        g = out.graph
        nodes = []
        for nd in g.node:
            key = tuple(nd.output)
            nodes.extend(self.before.get(key, ()))
            for slot, name in self.renamed.get(key, {}).items():
                nd.input[slot] = name
            if key in self.renamed:
                del nd.metadata_props[:]  # e.g. the torch call it was exported from, with the old batch size
            nodes.append(nd)
        del g.node[:]
        g.node.extend(nodes)
        g.initializer.extend(self.inits)
        for vi in g.input:
            if vi.name in self.fn.input_names:
                _symbolic(vi, 0)
        for vi in g.output:
            layout = self.layouts.get(vi.name)
            if layout is not None and layout[1:] == (1, 1):
                _symbolic(vi, layout[0])
        del g.value_info[:]  # intermediate shapes declared for batch N
        return out


def _symbolic(vi: onnx.ValueInfoProto, axis: int) -> None:
    dims = vi.type.tensor_type.shape.dim
    if axis < len(dims):
        dims[axis].Clear()
        dims[axis].dim_param = "batch"


def _free_names(node) -> set[str]:
    from converters.onnx_to_jax.graph import _subgraph_free_names

    names: set[str] = set()
    for value in node.attrs.values():
        if isinstance(value, onnx.GraphProto):
            names |= _subgraph_free_names(value)
        elif isinstance(value, list) and value and isinstance(value[0], onnx.GraphProto):
            for g in value:
                names |= _subgraph_free_names(g)
    return names


# ---------------------------------------------------------------- rules: node -> the layouts of its outputs
def _layout(plan: _Plan, node, slot: int) -> Layout | None:
    name = node.inputs[slot] if slot < len(node.inputs) else ""
    return plan.layouts.get(name) if name else None


def _only(plan: _Plan, node, slots: Sequence[int]) -> None:
    """Inputs other than ``slots`` must not carry the batch, nor depend on the batch size."""
    for k, name in enumerate(node.inputs):
        if name and k not in slots and (name in plan.layouts or plan.follows(name)):
            raise _Unproven(f"{node.op_type} node {node.name!r}: input {k} ({name!r}) depends on the batch, which "
                            f"no rule follows")


def _axis(value: int, rank: int) -> int:
    return value + rank if value < 0 else value


def _pointwise(plan: _Plan, node):
    slots = (0, 1) if node.op_type == "CastLike" else (0,)
    _only(plan, node, slots)
    layout = _layout(plan, node, 0)
    if layout is None:
        raise _Unproven(f"{node.op_type} node {node.name!r}: only its type input carries the batch")
    return [layout] * len(node.outputs)


def _broadcast(plan: _Plan, node):
    """Numpy broadcasting: batch-carrying inputs agree on the output axis; a batch-free input of the batch size
    along it is made to broadcast (sliced to one row)."""
    names = [i for i in node.inputs]
    rank = max(len(plan.shape(i)) for i in names if i)
    out: Layout | None = None
    for name in names:
        if name in plan.layouts:
            a, o, i = plan.layouts[name]
            here = (a + rank - len(plan.shape(name)), o, i)
            if out is not None and here != out:
                raise _Unproven(f"{node.op_type} node {node.name!r} combines the batch on different axes")
            out = here
        elif name and plan.follows(name):
            raise _Unproven(f"{node.op_type} node {node.name!r}: input {name!r} depends on the batch size")
    a, o, i = out
    for slot, name in enumerate(names):
        if not name or name in plan.layouts:
            continue
        shape = plan.shape(name)
        k = a - (rank - len(shape))
        if k >= 0 and shape[k] != 1:
            plan.follow(node, slot, k)  # constant along the (whole) batch axis: one row broadcasts
    return [out] * len(node.outputs)


def _flat(layout: Layout, shape: Sequence[int], new: Sequence[int], n: int) -> Layout | None:
    """Where a reshape of ``shape`` (batch at ``layout``) to ``new`` puts the batch: the row-major layout keeps the
    batch index as a middle factor of one axis, or ``None`` when the batch would straddle axes."""
    a, _, i = layout  # the elements after one batch index fix where it lands; those before follow
    if 0 in shape or 0 in new:
        return None
    q = i * math.prod(shape[a + 1 :])  # elements after one batch index
    suffix = [math.prod(new[k:]) for k in range(len(new) + 1)]
    for k in range(len(new)):
        if suffix[k + 1] <= q < suffix[k]:
            if q % suffix[k + 1] or suffix[k] % (n * q):
                return None
            return k, suffix[k] // (n * q), q // suffix[k + 1]
    return None


def _reshape_like(plan: _Plan, node):
    _only(plan, node, (0, 1) if node.op_type == "Reshape" else (0,))
    x, y = node.inputs[0], node.outputs[0]
    layout = plan.layouts.get(x)
    if layout is None:
        raise _Unproven(f"{node.op_type} node {node.name!r}: its shape input depends on the batch size")
    new = plan.shape(y)
    out = _flat(layout, plan.shape(x), new, plan.n)
    if out is None:
        raise _Unproven(f"{node.op_type} node {node.name!r} reshapes {list(plan.shape(x))} to {list(new)}, splitting "
                        f"the batch over several axes")
    if node.op_type == "Reshape":
        target = list(new)
        target[out[0]] = -1  # the other entries do not depend on the batch: resolved, as at batch N
        plan.set_input(node, 1, plan.constant(node.inputs[1] or f"{y}_shape", target))
    return [out]


def _transpose(plan: _Plan, node):
    _only(plan, node, (0,))
    a, o, i = plan.layouts[node.inputs[0]]
    rank = len(plan.shape(node.inputs[0]))
    perm = list(node.attrs.get("perm", range(rank - 1, -1, -1)))
    return [(perm.index(a), o, i)]


def _softmax(plan: _Plan, node):
    _only(plan, node, (0,))
    a, o, i = plan.layouts[node.inputs[0]]
    rank = len(plan.shape(node.inputs[0]))
    default = -1 if plan.fn.opset >= 13 or node.op_type == "LpNormalization" else 1
    axis = _axis(int(node.attrs.get("axis", default)), rank)
    coerced = plan.fn.opset < 13 and node.op_type != "LpNormalization"
    if a == axis or (coerced and a > axis):
        raise _Unproven(f"{node.op_type} node {node.name!r} normalises over the batch axis")
    return [(a, o, i)]


def _layer_norm(plan: _Plan, node):
    _only(plan, node, (0,))
    a, o, i = plan.layouts[node.inputs[0]]
    rank = len(plan.shape(node.inputs[0]))
    if a >= _axis(int(node.attrs.get("axis", -1)), rank):
        raise _Unproven(f"{node.op_type} node {node.name!r} normalises over the batch axis")
    return [(a, o, i)] * len(node.outputs)


def _batch_first(plan: _Plan, node):
    _only(plan, node, (0,))
    layout = plan.layouts[node.inputs[0]]
    if layout[0] != 0:
        raise _Unproven(f"{node.op_type} node {node.name!r} computes across its axis 0, but the batch is on axis "
                        f"{layout[0]}")
    outs: list[Layout | None] = [layout] * len(node.outputs)
    if node.op_type == "MaxPool" and len(outs) > 1:
        outs[1] = None  # flat indices count the rows before a sample
        if node.outputs[1]:
            plan.primed[node.outputs[1]] = _UNKNOWN
            raise _Unproven(f"MaxPool node {node.name!r}: its indices count the samples before each row")
    return outs


def _reduce(plan: _Plan, node):
    x = node.inputs[0]
    a, o, i = plan.layouts[x]
    rank = len(plan.shape(x))
    _only(plan, node, (0,))
    if "axes" in node.attrs:
        axes = list(node.attrs["axes"])
    elif len(node.inputs) > 1 and node.inputs[1]:
        axes = [int(v) for v in np.ravel(plan.value(node.inputs[1], f"{node.op_type} node {node.name!r}: axes"))]
    else:
        axes = []
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return [(a, o, i)]
        axes = list(range(rank))
    axes = [_axis(int(k), rank) for k in axes]
    if a in axes:
        raise _Unproven(f"{node.op_type} node {node.name!r} reduces over the batch axis")
    keep = node.attrs.get("keepdims", 1)
    return [(a if keep else a - sum(k < a for k in axes), o, i)]


def _arg_reduce(plan: _Plan, node):
    _only(plan, node, (0,))
    a, o, i = plan.layouts[node.inputs[0]]
    rank = len(plan.shape(node.inputs[0]))
    axis = _axis(int(node.attrs.get("axis", 0)), rank)
    if axis == a:
        raise _Unproven(f"{node.op_type} node {node.name!r} reduces over the batch axis")
    keep = node.attrs.get("keepdims", 1)
    return [(a if keep or a < axis else a - 1, o, i)]


def _along_axis(default: int, slot: str | int = "axis"):
    """Ops computing along one axis (``attribute`` or static input ``slot``): any other axis may carry the batch."""

    def rule(plan: _Plan, node):
        _only(plan, node, (0,))
        a, o, i = plan.layouts[node.inputs[0]]
        rank = len(plan.shape(node.inputs[0]))
        if isinstance(slot, int):
            axis = int(np.ravel(plan.value(node.inputs[slot], f"{node.op_type} node {node.name!r}: axis"))[0])
        else:
            axis = int(node.attrs.get(slot, default))
        if _axis(axis, rank) == a:
            raise _Unproven(f"{node.op_type} node {node.name!r} computes along the batch axis")
        return [(a, o, i)] * len(node.outputs)

    return rule


def _trilu(plan: _Plan, node):
    _only(plan, node, (0,))
    a, o, i = plan.layouts[node.inputs[0]]
    if a >= len(plan.shape(node.inputs[0])) - 2:
        raise _Unproven(f"Trilu node {node.name!r}: the batch is on one of its matrix axes")
    return [(a, o, i)]


def _gather(plan: _Plan, node):
    _only(plan, node, (0, 1))
    data, indices = node.inputs[0], node.inputs[1]
    rank, irank = len(plan.shape(data)), len(plan.shape(indices))
    axis = _axis(int(node.attrs.get("axis", 0)), rank)
    if data in plan.layouts and indices in plan.layouts:
        raise _Unproven(f"Gather node {node.name!r}: both the table and the indices carry the batch")
    if data in plan.layouts:
        a, o, i = plan.layouts[data]
        if a == axis:
            raise _Unproven(f"Gather node {node.name!r} gathers along the batch axis")
        if plan.follows(indices):
            raise _Unproven(f"Gather node {node.name!r}: its indices depend on the batch size")
        return [(a if a < axis else a + irank - 1, o, i)]
    a, o, i = plan.layouts[indices]  # a lookup: every sample reads the table with its own indices
    return [(axis + a, o, i)]


def _slice(plan: _Plan, node):
    _only(plan, node, (0, 1, 2, 3, 4))
    x = node.inputs[0]
    a, o, i = plan.layouts[x]
    shape = plan.shape(x)
    where = f"Slice node {node.name!r}"
    if plan.fn.opset < 10:
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes = list(node.attrs.get("axes", range(len(starts))))
        steps, ends_name = [1] * len(starts), None
    else:
        get = lambda k, what: [int(v) for v in np.ravel(plan.value(node.inputs[k], f"{where}: {what}"))]
        starts, ends = get(1, "starts"), get(2, "ends")
        axes = get(3, "axes") if len(node.inputs) > 3 and node.inputs[3] else list(range(len(starts)))
        steps = get(4, "steps") if len(node.inputs) > 4 and node.inputs[4] else [1] * len(starts)
        ends_name = node.inputs[2]
        for k, what in ((1, "starts"), (3, "axes"), (4, "steps")):
            if len(node.inputs) > k and node.inputs[k] and plan.follows(node.inputs[k]):
                raise _Unproven(f"{where}: its {what} depend on the batch size")
    for k, axis in enumerate(axes):
        if _axis(axis, len(shape)) != a:
            continue
        size = shape[a]
        if starts[k] != 0 or steps[k] != 1 or ends[k] < size:
            raise _Unproven(f"{where} takes part of the batch axis")
        if ends[k] >= 2**31 - 1:  # to the end (torch writes INT64_MAX)
            continue
        if ends_name is None:
            raise _Unproven(f"{where} ends the batch axis at the batch size")
        if plan.follows(ends_name):
            if not _follows_exactly(plan, ends_name, k, size):
                raise _Unproven(f"{where}: its ends depend on the batch size in a way no rule follows")
            continue
        new = list(ends)  # x[:N]: to the end, whatever the batch size
        new[k] = _INT64_MAX
        plan.set_input(node, 2, plan.constant(ends_name, new))
    return [(a, o, i)]


def _follows_exactly(plan: _Plan, name: str, k: int, size: int) -> bool:
    primed = plan.primed_value(name, "the slice ends")
    return int(np.ravel(primed)[k]) * plan.n == size * plan.n2


def _concat(plan: _Plan, node):
    names = list(node.inputs)
    rank = len(plan.shape(names[0]))
    axis = _axis(int(node.attrs["axis"]), rank)
    carried = {plan.layouts[n] for n in names if n in plan.layouts}
    if len(carried) != 1:
        raise _Unproven(f"Concat node {node.name!r} joins tensors carrying the batch on different axes")
    (layout,) = carried
    a = layout[0]
    if a == axis:
        raise _Unproven(f"Concat node {node.name!r} concatenates along the batch axis")
    ref = next(n for n in names if n in plan.layouts)
    for slot, name in enumerate(names):
        if name and name not in plan.layouts:
            if layout[1:] != (1, 1):
                raise _Unproven(f"Concat node {node.name!r}: the batch shares its axis with other factors")
            plan.follow(node, slot, a, ref=(ref, a))
    return [layout]


def _split(plan: _Plan, node):
    _only(plan, node, (0,))
    a, o, i = plan.layouts[node.inputs[0]]
    rank = len(plan.shape(node.inputs[0]))
    if _axis(int(node.attrs.get("axis", 0)), rank) == a:
        raise _Unproven(f"Split node {node.name!r} splits the batch axis")
    return [(a, o, i)] * len(node.outputs)


def _pad(plan: _Plan, node):
    _only(plan, node, (0,))
    x = node.inputs[0]
    a, o, i = plan.layouts[x]
    rank = len(plan.shape(x))
    where = f"Pad node {node.name!r}"
    if "pads" in node.attrs:
        pads = list(node.attrs["pads"])
    else:
        pads = [int(v) for v in np.ravel(plan.value(node.inputs[1], f"{where}: pads"))]
    axes = list(range(rank))
    if len(node.inputs) > 3 and node.inputs[3]:
        axes = [_axis(int(v), rank) for v in np.ravel(plan.value(node.inputs[3], f"{where}: axes"))]
    if a in axes and (pads[axes.index(a)] or pads[axes.index(a) + len(axes)]):
        raise _Unproven(f"{where} pads the batch axis")
    return [(a, o, i)]


def _expand(plan: _Plan, node):
    data, target = node.inputs[0], node.inputs[1]
    where = f"Expand node {node.name!r}"
    shape, dims = plan.shape(data), [int(v) for v in np.ravel(plan.value(target, f"{where}: shape"))]
    rank = max(len(shape), len(dims))
    primed = plan.primed_value(target, f"{where}: shape") if plan.follows(target) else None
    moving = [] if primed is None else [k for k, (u, v) in enumerate(zip(dims, np.ravel(primed))) if u != v]
    lead = rank - len(dims)
    if data in plan.layouts:
        a, o, i = plan.layouts[data]
        out = a + rank - len(shape)
        k = out - lead
        if any(m != k for m in moving):
            raise _Unproven(f"{where}: its shape depends on the batch size off the batch axis")
        if k >= 0 and not moving and dims[k] != 1:  # the batch size baked into the target: 1 keeps the data's
            new = list(dims)
            new[k] = 1
            plan.set_input(node, 1, plan.constant(target, new))
        return [(out, o, i)]
    # batch-free data expanded to Shape(x)[...]: the moving entry is the batch
    if len(moving) != 1 or int(np.ravel(primed)[moving[0]]) != plan.n2 or dims[moving[0]] != plan.n:
        raise _Unproven(f"{where}: its shape depends on the batch size in a way no rule follows")
    out = moving[0] + lead
    k = out - (rank - len(shape))
    if k >= 0 and shape[k] != 1:
        plan.follow(node, 0, k)  # e.g. torch's Expand(zeros[1, N, 16], [1, Shape(x)[1], 16]) for an RNN state
    return [(out, 1, 1)]


def _tile(plan: _Plan, node):
    _only(plan, node, (0,))
    a, o, i = plan.layouts[node.inputs[0]]
    reps = [int(v) for v in np.ravel(plan.value(node.inputs[1], f"Tile node {node.name!r}: repeats"))]
    if reps[a] != 1:
        raise _Unproven(f"Tile node {node.name!r} repeats the batch axis")
    return [(a, o, i)]


def _matmul(plan: _Plan, node):
    _only(plan, node, (0, 1))
    an, bn = node.inputs[0], node.inputs[1]
    ra, rb = len(plan.shape(an)), len(plan.shape(bn))
    where = f"MatMul node {node.name!r}"
    if ra < 2 or rb < 2:
        if rb == 1 and an in plan.layouts and bn not in plan.layouts and plan.layouts[an][0] < ra - 1:
            return [plan.layouts[an]]
        raise _Unproven(f"{where}: a vector operand with the batch")
    rank = max(ra, rb)
    outs = set()
    for name, r, contracted, own, own_out in ((an, ra, ra - 1, ra - 2, rank - 2), (bn, rb, rb - 2, rb - 1, rank - 1)):
        if name in plan.layouts:
            a, o, i = plan.layouts[name]
            if a == contracted:
                raise _Unproven(f"{where} contracts the batch axis")
            outs.add((own_out if a == own else a + rank - r, o, i))
    if len(outs) != 1:
        raise _Unproven(f"{where} combines the batch of both operands on different axes")
    (out,) = outs
    if out[0] >= rank - 2 and all(n in plan.layouts for n in (an, bn)):
        raise _Unproven(f"{where} multiplies the rows of one sample by the columns of another")
    if out[0] < rank - 2:  # a broadcast axis: a batch-free operand of the batch size there must be constant
        for slot, (name, r) in enumerate(((an, ra), (bn, rb))):
            k = out[0] - (rank - r)
            if name not in plan.layouts and k >= 0 and plan.shape(name)[k] != 1:
                plan.follow(node, slot, k)
    return [out]


def _gemm(plan: _Plan, node):
    _only(plan, node, (0, 1, 2))
    a_name = node.inputs[0]
    where = f"Gemm node {node.name!r}"
    if a_name not in plan.layouts or any(n in plan.layouts for n in node.inputs[1:] if n):
        raise _Unproven(f"{where}: the batch is not on the rows of A alone")
    a, o, i = plan.layouts[a_name]
    if a != (1 if node.attrs.get("transA", 0) else 0):
        raise _Unproven(f"{where} contracts the batch axis")
    if len(node.inputs) > 2 and node.inputs[2]:
        c = plan.shape(node.inputs[2])
        if len(c) == 2 and c[0] != 1:
            plan.follow(node, 2, 0)  # a bias with a row per sample: constant rows broadcast
    return [(0, o, i)]


def _rnn(plan: _Plan, node):
    """ONNX RNN / GRU / LSTM: ``X`` ``[seq, batch, in]`` (``layout=1``: ``[batch, seq, in]``); states
    ``[dirs, batch, hidden]`` (``[batch, dirs, hidden]``); ``Y`` ``[seq, dirs, batch, hidden]``
    (``[batch, seq, dirs, hidden]``)."""
    where = f"{node.op_type} node {node.name!r}"
    batch_first = bool(node.attrs.get("layout", 0))
    xb, sb = (0, 0) if batch_first else (1, 1)
    x = node.inputs[0]
    if plan.layouts.get(x) != (xb, 1, 1):
        raise _Unproven(f"{where}: its input X does not carry the batch on axis {xb}")
    states = (5, 6) if node.op_type == "LSTM" else (5,)
    _only(plan, node, (0, 4, *states))
    for slot in (4, *states):
        if slot >= len(node.inputs) or not node.inputs[slot]:
            continue
        name, axis = node.inputs[slot], 0 if slot == 4 else sb
        if name in plan.layouts:
            if plan.layouts[name] != (axis, 1, 1):
                raise _Unproven(f"{where}: input {slot} ({name!r}) carries the batch on another axis")
        elif plan.shape(name)[axis] != 1:
            plan.follow(node, slot, axis, ref=(x, xb))
    y = (0, 1, 1) if batch_first else (2, 1, 1)
    return [y] + [(sb, 1, 1)] * (len(node.outputs) - 1)


def _one_hot(plan: _Plan, node):
    _only(plan, node, (0,))
    a, o, i = plan.layouts[node.inputs[0]]
    rank = len(plan.shape(node.inputs[0])) + 1
    axis = _axis(int(node.attrs.get("axis", -1)), rank)
    return [(a if a < axis else a + 1, o, i)]


def _resize(plan: _Plan, node):
    _only(plan, node, (0, 1, 2))
    layout = plan.layouts[node.inputs[0]]
    where = f"Resize node {node.name!r}"
    if layout[0] != 0 or "axes" in node.attrs:
        raise _Unproven(f"{where}: the batch is not on axis 0")
    if len(node.inputs) > 3 and node.inputs[3]:
        raise _Unproven(f"{where}: its sizes fix the batch size")
    if len(node.inputs) > 2 and node.inputs[2]:
        scales = np.ravel(plan.value(node.inputs[2], f"{where}: scales"))
        if scales.size and scales[0] != 1:
            raise _Unproven(f"{where} resizes the batch axis")
    return [layout]


_RULES = {
    "Transpose": _transpose,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Hardmax": _softmax,
    "LpNormalization": _softmax,
    "LayerNormalization": _layer_norm,
    "ArgMax": _arg_reduce,
    "ArgMin": _arg_reduce,
    "CumSum": _along_axis(0, 1),
    "TopK": _along_axis(-1),
    "Trilu": _trilu,
    "Gather": _gather,
    "Slice": _slice,
    "Concat": _concat,
    "Split": _split,
    "Pad": _pad,
    "Expand": _expand,
    "Tile": _tile,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "RNN": _rnn,
    "GRU": _rnn,
    "LSTM": _rnn,
    "OneHot": _one_hot,
    "Resize": _resize,
}
