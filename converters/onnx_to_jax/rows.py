"""Do a batched function's rows stay independent? A conservative check on its jaxpr.

A converted graph can run a whole batch at once (``apply_batch``), which is much faster than ``vmap`` of the
per-sample function for some ops (recurrent cells vectorise over the batch), but only if row ``i`` of the output
depends on row ``i`` of the input alone. Graphs exported for inference usually do; some do not: a ``ReduceSum``
over every axis that steers a ``Loop``, a ``Reshape(-1, 1)``, a normalisation over the batch, an ``iota`` along
the batch axis. :func:`rows_independent` follows the batch axis through every equation of the jaxpr (into
``pjit``, ``custom_jvp``, ``scan``, ``while`` and ``cond`` bodies) and answers ``False`` with a reason at the
first equation that could mix rows, or that it has no rule for. ``False`` is always safe: callers then use
``vmap`` of the per-sample function.

No library does this check (``jax.vmap`` goes the other way: it adds a batch axis to per-sample code), so it is
written here; it is a small forward pass over the jaxpr with one rule per primitive family.

State per value: the batch axis (``int``), or ``None`` when the value does not depend on the rows. An unbatched
value combined element-wise with a batched one must be constant along the batch axis (a broadcast bias, a zero
state); :class:`_Val` knows which axes a value is constant along (from ``broadcast_in_dim``, ``iota`` and concrete
constants).

**Graphs whose meaning depends on the batch.** A graph that fails the check runs one sample at a time (``vmap`` of
the per-sample function: each sample is its own batch of one). For most such graphs that is exactly their meaning
(the check is conservative), but an op that reduces or normalises *over the batch axis* means something else for a
batch of one than for a batch of many, and a silent per-sample answer would be a wrong number.
:func:`batch_findings` therefore lists every equation that mixes rows, with the ONNX node that traced it (the
converter labels each node's equations with ``jax.named_scope(node.name)``), and :func:`judge_findings` applies
this policy when a model is converted:

======================================================  =========  ===============================================
finding                                                 verdict    why
======================================================  =========  ===============================================
an operand broadcasts the batch axis (a Gemm bias of    refused    one sample gives several rows (onnxruntime
shape ``[3, 1]``: the batch of one becomes 3 rows)                 refuses it unless the batch has exactly 3 rows)
Softmax / LogSoftmax / Hardmax / LpNormalization /      refused    over a batch of one the result is a constant
MeanVarianceNormalization / Layer-, Instance-, Group-,             (Softmax gives 1.0 for every sample): no
BatchNormalization over the batch axis                             per-sample meaning
ReduceX / ArgMax / ArgMin / CumSum / a MatMul           warning    well defined per sample (a reduction over one
contracting the batch, sort / TopK / reverse / scan                row is that row): converted, and the warning
along the batch axis                                               states that every result is per sample
anything else the check cannot prove row-wise           silent     no evidence of mixing (no rule for a primitive,
(no rule, batched indices, iota along the batch)                   a gather by row index): runs per sample
======================================================  =========  ===============================================
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from jax.extend import core as jax_core

__all__ = ["Finding", "batch_findings", "judge_findings", "rows_independent"]

_ELEMENTWISE = {
    "abs", "acos", "acosh", "add", "and", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil", "clamp",
    "convert_element_type", "copy", "copy_p", "cos", "cosh", "digamma", "div", "eq", "erf", "erf_inv", "erfc",
    "exp", "exp2", "expm1", "floor", "ge", "gt", "imag", "integer_pow", "is_finite", "le", "lgamma", "log",
    "log1p", "logistic", "lt", "max", "min", "mul", "ne", "neg", "nextafter", "not", "or", "pow", "real",
    "reduce_precision", "rem", "round", "rsqrt", "select_n", "shift_left", "shift_right_arithmetic",
    "shift_right_logical", "sign", "sin", "sinh", "sqrt", "square", "stop_gradient", "sub", "tan", "tanh", "xor",
    "optimization_barrier",
}
_REDUCE = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "reduce_xor",
           "argmax", "argmin"}
_CUMULATIVE = {"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"}
_CALLS = {"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call", "custom_vjp_call",
          "custom_vjp_call_jaxpr", "custom_lin"}


class _Mixed(Exception):
    """Rows may mix (or no rule covers the equation); the message says where.

    ``kind``: ``"mix"`` (the equation provably combines rows), or ``"unknown"`` (no rule, or nothing proves it).
    """

    def __init__(self, message: str, kind: str = "unknown"):
        super().__init__(message)
        self.kind = kind
        self.node: str | None = None


@dataclasses.dataclass(frozen=True)
class Finding:
    """An equation that mixes (or may mix) rows of the batch.

    Attributes:
        node: the ONNX node whose equations it is (the innermost ``jax.named_scope``), or ``None``.
        kind: ``"broadcast"`` (the batch axis is broadcast to more rows), ``"reduce"`` (a reduction, a
            contraction or an accumulation over the batch axis), ``"mix"`` (sorting, reversing, scanning along
            it) or ``"unknown"`` (no rule: the check cannot prove the rows independent, nor that they mix).
        reason: what the equation does, e.g. ``"reduce_max ((4,)) reduces over the batch axis"``.
    """

    node: str | None
    kind: str
    reason: str


# Loop carries start from their initial values (often an unbatched zero state) and become batched after one step.
# While a loop's carry axes settle, passes run leniently (an unbatched value may meet the batch element-wise);
# the final pass, with settled axes, checks strictly. Nested loops inherit the outer loop's leniency. Per thread:
# two models may be converted at once.
_state = threading.local()


def _lenient() -> int:
    return getattr(_state, "lenient", 0)


def _scope() -> str | None:
    """The innermost ONNX node (``jax.named_scope``) of the equations being checked."""
    return next((s for s in reversed(getattr(_state, "scopes", ())) if s), None)


def _found(kind: str, reason: str) -> None:
    """Record a finding (when :func:`batch_findings` collects them) or stop the check (``rows_independent``)."""
    findings = getattr(_state, "findings", None)
    if findings is None:
        raise _Mixed(reason, kind)
    finding = Finding(_scope(), kind, reason)
    if finding not in findings:
        findings.append(finding)
# unbatched equations on concrete values up to this many elements (inputs + outputs) are evaluated
_EVAL_LIMIT = 1 << 16


def _varies(v: _Val, axis: int) -> bool:
    """``v`` is unbatched and not known to be constant along ``axis`` (ignored while carries settle)."""
    return not _lenient() and v.axis is None and bool(v.shape) and not v.constant_along(axis)


@dataclasses.dataclass(frozen=True)
class _Val:
    """``axis``: the batch axis, or ``None``. For unbatched values, ``const`` (axes it is constant along) or a
    concrete ``value`` to check lazily."""

    axis: int | None
    shape: tuple[int, ...]
    const: frozenset = frozenset()
    value: Any = None

    def constant_along(self, axis: int) -> bool:
        if self.axis is not None:
            return False
        if axis in self.const or len(self.shape) <= axis or self.shape[axis] == 1:
            return True
        if self.value is not None:
            v = np.asarray(self.value)
            return bool(np.all(v == np.take(v, [0], axis=axis)))
        return False


def rows_independent(closed_jaxpr, batch_axes: Sequence[int | None], values: Sequence[Any] = ()) -> tuple[bool, str]:
    """Whether output row ``i`` of ``closed_jaxpr`` depends only on input row ``i``.

    Args:
        closed_jaxpr: from ``jax.make_jaxpr(f)(*args)``.
        batch_axes: per flat input, its batch axis (``None`` for parameters).
        values: concrete values of the flat inputs where known (parameters), used to prove a parameter constant
            along the batch axis when it meets batched values element-wise.

    Returns:
        ``(ok, reason)``: ``reason`` names the first equation that could mix rows when ``ok`` is ``False``.
    """
    findings = _check(closed_jaxpr, batch_axes, values, collect=False)
    if findings:
        f = findings[0]
        return False, f"{f.reason} (node {f.node!r})" if f.node else f.reason
    return True, ""


def batch_findings(closed_jaxpr, batch_axes: Sequence[int | None], values: Sequence[Any] = ()) -> list[Finding]:
    """Every equation of ``closed_jaxpr`` that mixes rows, with the node that traced it; ``[]``: rows independent.

    Reductions, accumulations and broadcasts of the batch axis are recorded and the check goes on past them (the
    reduced value is treated as not depending on the rows), so a graph with several such nodes lists them all;
    any other mixing equation (or one without a rule) is recorded last and ends the check. Arguments as for
    :func:`rows_independent`.
    """
    return _check(closed_jaxpr, batch_axes, values, collect=True)


def _check(closed_jaxpr, batch_axes, values, *, collect: bool) -> list[Finding]:
    jaxpr = closed_jaxpr.jaxpr
    values = list(values) + [None] * (len(jaxpr.invars) - len(values))
    ins = [
        _Val(a, tuple(v.aval.shape), value=None if a is not None else val)
        for v, a, val in zip(jaxpr.invars, batch_axes, values)
    ]
    consts = [_Val(None, tuple(np.shape(c)), value=c) for c in closed_jaxpr.consts]
    findings: list[Finding] = []
    saved = getattr(_state, "findings", None), getattr(_state, "scopes", [])
    _state.findings, _state.scopes = (findings if collect else None), []
    try:
        outs = _run(jaxpr, consts + ins)
        for i, out in enumerate(outs):
            if out.axis not in (0, None) or (out.axis is None and out.shape and not out.constant_along(0)):
                raise _Mixed(f"output {i} has its rows on axis {out.axis} (expected 0)")
    except _Mixed as e:
        findings.append(Finding(e.node, e.kind, str(e)))
    finally:
        _state.findings, _state.scopes = saved
    return findings


# ONNX ops that normalise over an axis: over the batch axis, a batch of one gives a constant (Softmax: 1.0).
NORMALISING_OPS = frozenset({
    "Softmax", "LogSoftmax", "Hardmax", "LpNormalization", "MeanVarianceNormalization", "LayerNormalization",
    "InstanceNormalization", "GroupNormalization", "BatchNormalization",
})


def judge_findings(findings: Sequence[Finding], op_types: dict[str, str]) -> tuple[list[str], list[str]]:
    """Apply the module's policy: ``(refusals, warnings)``, one message per node, from ``findings``.

    Args:
        findings: from :func:`batch_findings`.
        op_types: ONNX node name -> op type, for every node of the graph and its sub-graphs.
    """
    refusals: list[str] = []
    warns: list[str] = []
    seen: set[str] = set()
    for f in findings:
        if f.node is None or f.kind == "unknown" or f.node in seen:
            continue
        seen.add(f.node)
        op = op_types.get(f.node, "?")
        what = f"{op} node {f.node!r}"
        if f.kind == "broadcast":
            refusals.append(
                f"{what} broadcasts the batch axis ({f.reason}): an operand has several rows where the batch has "
                f"one (e.g. a bias of shape [3, 1] instead of [3] or [1, 3]), so one sample gives several rows of "
                f"output and a batch of samples mixes them (onnxruntime refuses the model unless the batch has "
                f"exactly that many rows). Fix the operand's shape and export the model again"
            )
        elif op in NORMALISING_OPS:
            refusals.append(
                f"{what} normalises over axis 0, the batch axis ({f.reason}): its result for a sample depends on "
                f"the other samples of the batch, and for one sample alone it is a constant (Softmax gives 1.0, "
                f"LogSoftmax 0.0), "
                f"so no per-sample result means anything. Export the model with the {op} over the feature / "
                f"class axis (e.g. axis=-1)"
            )
        else:
            warns.append(
                f"{what} mixes the rows of a batch ({f.reason}): run on a batch, its result for one sample would "
                f"depend on the other samples. jaxsens evaluates this model one sample at a time (each sample as "
                f"a batch of one, where the node sees that sample's row only: a reduction over axis 0 returns the "
                f"row itself), so every result it reports is per sample; export the model without reducing over "
                f"the batch axis if that is not what it means"
            )
    return refusals, warns


def _run(jaxpr, inputs: list[_Val]) -> list[_Val]:
    env: dict = {}
    for var, val in zip(list(jaxpr.constvars) + list(jaxpr.invars), inputs):
        env[var] = val
    scopes = _state.scopes
    for eqn in jaxpr.eqns:
        ins = [_read(env, v) for v in eqn.invars]
        scopes.append(_eqn_scope(eqn))
        try:
            outs = _rule(eqn, ins)
        except _Mixed as e:
            if e.node is None:
                e.node = _scope()
            raise
        finally:
            scopes.pop()
        for var, val in zip(eqn.outvars, outs):
            env[var] = val
    return [_read(env, v) for v in jaxpr.outvars]


def _eqn_scope(eqn) -> str | None:
    """The innermost ``jax.named_scope`` of an equation (the ONNX node that traced it), or ``None``."""
    stack = getattr(getattr(getattr(eqn, "source_info", None), "name_stack", None), "stack", ())
    names = [s.name for s in stack if type(s).__name__ == "Scope"]
    return names[-1] if names else None


def _read(env, v) -> _Val:
    if isinstance(v, jax_core.Literal):
        shape = tuple(np.shape(v.val))
        return _Val(None, shape, frozenset(range(len(shape))), v.val)
    return env[v]


def _shape(eqn, k: int = 0) -> tuple[int, ...]:
    return tuple(eqn.outvars[k].aval.shape)


def _where(eqn) -> str:
    return f"{eqn.primitive.name} ({_shape(eqn) if eqn.outvars else ''})"


def _rule(eqn, ins: list[_Val]) -> list[_Val]:
    name = eqn.primitive.name
    p = eqn.params
    batched = [v for v in ins if v.axis is not None]
    if not batched:
        return _unbatched(eqn, ins)
    if name in _ELEMENTWISE:
        axes = {v.axis for v in batched}
        if len(axes) != 1:
            raise _Mixed(f"{_where(eqn)} combines rows on different axes {sorted(axes)}")
        (a,) = axes
        out = _shape(eqn)
        if any(len(v.shape) == len(out) and v.shape[a] != out[a] for v in batched):
            # lax broadcasts size-1 axes implicitly: a batch of one meets an operand with several rows
            _found("broadcast", f"{_where(eqn)} broadcasts the batch axis")
        elif any(_varies(v, a) for v in ins):
            raise _Mixed(f"{_where(eqn)} combines the batch with a value that varies along it")
        return [_Val(a, _shape(eqn, k)) for k in range(len(eqn.outvars))]
    if name in _CALLS:
        sub = _sub_jaxpr(eqn)
        if sub is None:
            raise _Mixed(f"{_where(eqn)}: no sub-jaxpr found")
        return _call(sub, ins)
    if name in ("scan",):
        return _scan(eqn, ins)
    if name == "while":
        return _while(eqn, ins)
    if name == "cond":
        return _cond(eqn, ins)
    if name == "stack":
        axes = {v.axis for v in batched}
        if len(axes) != 1 or any(_varies(v, next(iter(axes))) for v in ins):
            raise _Mixed(f"{_where(eqn)} stacks the batch with values on other axes or varying along it")
        (b,) = axes
        return [_Val(b if b < p["axis"] else b + 1, _shape(eqn))]
    if name == "gather" and ins[0].axis is None:
        # batched indices into an unbatched table (an embedding lookup): each row reads with its own indices
        dn, indices = p["dimension_numbers"], ins[1]
        if indices.axis == len(indices.shape) - 1 or getattr(dn, "operand_batching_dims", ()):
            raise _Mixed(f"{_where(eqn)} gathers with the batch axis as the index vector")
        out_batch = [d for d in range(len(_shape(eqn))) if d not in dn.offset_dims]
        return [_Val(out_batch[indices.axis], _shape(eqn))]
    (x, *rest) = ins
    a = x.axis
    if any(v.axis is not None for v in rest) and name not in ("dot_general", "concatenate", "dynamic_update_slice",
                                                               "sort", "conv_general_dilated"):
        raise _Mixed(f"{_where(eqn)} takes batched values as indices or extra operands")
    if name == "broadcast_in_dim":
        out = p["broadcast_dimensions"][a]
        if x.shape[a] != _shape(eqn)[out]:
            _found("broadcast", f"{_where(eqn)} broadcasts the batch axis")
        return [_Val(out, _shape(eqn))]
    if name == "reshape":
        return [_Val(_reshaped_axis(x.shape, a, _shape(eqn), eqn), _shape(eqn))]
    if name == "transpose":
        return [_Val(list(p["permutation"]).index(a), _shape(eqn))]
    if name == "squeeze":
        dims = [d % len(x.shape) for d in p["dimensions"]]
        if a in dims:
            raise _Mixed(f"{_where(eqn)} squeezes the batch axis")
        return [_Val(a - sum(d < a for d in dims), _shape(eqn))]
    if name in _REDUCE or name == "reduce":
        axes = p.get("axes", p.get("dimensions", ()))
        if a in axes:
            _found("reduce", f"{_where(eqn)} reduces over the batch axis")
            return [_Val(None, _shape(eqn, k)) for k in range(len(eqn.outvars))]
        return [_Val(a - sum(d < a for d in axes), _shape(eqn, k)) for k in range(len(eqn.outvars))]
    if name in _CUMULATIVE:
        if p["axis"] == a:
            _found("reduce", f"{_where(eqn)} accumulates along the batch axis")
        return [_Val(a, _shape(eqn))]
    if name == "rev":
        if a in p["dimensions"]:
            raise _Mixed(f"{_where(eqn)} reverses the batch axis", "mix")
        return [_Val(a, _shape(eqn))]
    if name == "slice":
        strides = p["strides"] or (1,) * len(x.shape)
        if p["start_indices"][a] != 0 or p["limit_indices"][a] != x.shape[a] or strides[a] != 1:
            raise _Mixed(f"{_where(eqn)} slices the batch axis")
        return [_Val(a, _shape(eqn))]
    if name == "dynamic_slice":
        if p["slice_sizes"][a] != x.shape[a]:
            raise _Mixed(f"{_where(eqn)} slices the batch axis")
        return [_Val(a, _shape(eqn))]
    if name == "dynamic_update_slice":
        operand, update = ins[0], ins[1]
        if any(v.axis is not None for v in ins[2:]):
            raise _Mixed(f"{_where(eqn)} takes batched indices")
        for v in (operand, update):
            if v.axis not in (None, a if operand.axis is None else operand.axis):
                raise _Mixed(f"{_where(eqn)} combines rows on different axes")
        b = operand.axis if operand.axis is not None else update.axis
        if update.shape[b] != operand.shape[b] or any(_varies(v, b) for v in (operand, update)):
            raise _Mixed(f"{_where(eqn)} updates part of the batch axis")
        return [_Val(b, _shape(eqn))]
    if name == "pad":
        if tuple(p["padding_config"][a]) != (0, 0, 0):
            raise _Mixed(f"{_where(eqn)} pads the batch axis")
        return [_Val(a, _shape(eqn))]
    if name == "concatenate":
        axes = {v.axis for v in batched}
        if len(axes) != 1 or p["dimension"] in axes:
            raise _Mixed(f"{_where(eqn)} concatenates along or across the batch axis")
        (b,) = axes
        if any(_varies(v, b) for v in ins):
            raise _Mixed(f"{_where(eqn)} joins the batch with a value that varies along it")
        return [_Val(b, _shape(eqn))]
    if name == "unstack":
        if p["axis"] == a:
            raise _Mixed(f"{_where(eqn)} unstacks the batch axis")
        return [_Val(a if a < p["axis"] else a - 1, _shape(eqn, k)) for k in range(len(eqn.outvars))]
    if name == "tile":
        if p["reps"][a] != 1:
            raise _Mixed(f"{_where(eqn)} tiles the batch axis")
        return [_Val(a, _shape(eqn))]
    if name == "split":
        if p["axis"] == a:
            raise _Mixed(f"{_where(eqn)} splits the batch axis")
        return [_Val(a, _shape(eqn, k)) for k in range(len(eqn.outvars))]
    if name == "sort":
        if {v.axis for v in ins} != {a} or p["dimension"] == a:
            raise _Mixed(f"{_where(eqn)} sorts along or across the batch axis", "mix")
        return [_Val(a, _shape(eqn, k)) for k in range(len(eqn.outvars))]
    if name == "top_k":
        if a == len(x.shape) - 1:
            raise _Mixed(f"{_where(eqn)} takes top-k along the batch axis", "mix")
        return [_Val(a, _shape(eqn, k)) for k in range(len(eqn.outvars))]
    if name == "dot_general":
        return [_dot_general(eqn, ins)]
    if name == "conv_general_dilated":
        lhs, rhs = ins[0], ins[1]
        dn = p["dimension_numbers"]
        if rhs.axis is not None or lhs.axis != dn.lhs_spec[0] or p["batch_group_count"] != 1:
            raise _Mixed(f"{_where(eqn)} convolves across the batch axis")
        return [_Val(dn.out_spec[0], _shape(eqn))]
    if name.startswith("reduce_window"):
        dims, strides = p["window_dimensions"], p["window_strides"]
        pads = p.get("padding", ((0, 0),) * len(dims))
        if dims[a] != 1 or strides[a] != 1 or tuple(pads[a]) != (0, 0):
            raise _Mixed(f"{_where(eqn)} pools along the batch axis")
        return [_Val(a, _shape(eqn))]
    if name == "gather":
        dn = p["dimension_numbers"]
        if a in dn.start_index_map or a in dn.collapsed_slice_dims or getattr(dn, "operand_batching_dims", ()):
            raise _Mixed(f"{_where(eqn)} gathers along the batch axis")
        if p["slice_sizes"][a] != x.shape[a]:
            raise _Mixed(f"{_where(eqn)} gathers part of the batch axis")
        kept = [d for d in range(len(x.shape)) if d not in dn.collapsed_slice_dims]
        return [_Val(dn.offset_dims[kept.index(a)], _shape(eqn))]
    raise _Mixed(f"no rule for {_where(eqn)} on a batched value")


def _broadcast(x, shape, broadcast_dimensions, **_):
    expanded = [1] * len(shape)
    for i, d in enumerate(broadcast_dimensions):
        expanded[d] = x.shape[i]
    return np.broadcast_to(x.reshape(expanded), shape)


def _slice(x, start_indices, limit_indices, strides, **_):
    strides = strides or (1,) * x.ndim
    return x[tuple(slice(a, b, c) for a, b, c in zip(start_indices, limit_indices, strides))]


_NUMPY = {
    "squeeze": lambda x, dimensions, **_: np.squeeze(x, axis=tuple(dimensions)),
    "broadcast_in_dim": _broadcast,
    "slice": _slice,
    "transpose": lambda x, permutation, **_: np.transpose(x, permutation),
    "reshape": lambda x, new_sizes, **_: x.reshape(new_sizes),
    "convert_element_type": lambda x, new_dtype, **_: x.astype(new_dtype),
    "concatenate": lambda *xs, dimension, **_: np.concatenate(xs, axis=dimension),
    "neg": lambda x, **_: -x,
    "add": lambda x, y, **_: x + y,
    "sub": lambda x, y, **_: x - y,
    "mul": lambda x, y, **_: x * y,
    "max": lambda x, y, **_: np.maximum(x, y),
    "min": lambda x, y, **_: np.minimum(x, y),
}


def _unbatched(eqn, ins: list[_Val]) -> list[_Val]:
    """Outputs of an equation whose inputs do not depend on the rows, with the axes they are constant along."""
    name, p = eqn.primitive.name, eqn.params
    shapes = [_shape(eqn, k) for k in range(len(eqn.outvars))]
    if (
        name in _NUMPY
        and all(v.value is not None for v in ins)
        and sum(math.prod(v.shape) for v in ins) + math.prod(shapes[0]) <= _EVAL_LIMIT
    ):
        # small constant arithmetic (zero states, folded shapes) in numpy, so that "constant along the batch
        # axis" is checked on the actual values (jax's eager ops would compile each primitive: ~1 s at load)
        out = _NUMPY[name](*[np.asarray(v.value) for v in ins], **p)
        return [_Val(None, shapes[0], value=np.asarray(out).reshape(shapes[0]))]
    if name == "dot_general":
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        lhs, rhs = ins
        l_free = [d for d in range(len(lhs.shape)) if d not in lc and d not in lb]
        r_free = [d for d in range(len(rhs.shape)) if d not in rc and d not in rb]
        const = {len(lb) + i for i, d in enumerate(l_free) if lhs.constant_along(d)}
        const |= {len(lb) + len(l_free) + i for i, d in enumerate(r_free) if rhs.constant_along(d)}
        return [_Val(None, shapes[0], frozenset(const))]
    if name == "iota":
        return [_Val(None, shapes[0], frozenset(set(range(len(shapes[0]))) - {p["dimension"]}))]
    if name == "broadcast_in_dim":
        x, bd = ins[0], p["broadcast_dimensions"]
        const = set(range(len(shapes[0]))) - set(bd)
        const |= {bd[i] for i in range(len(x.shape)) if x.constant_along(i)}
        return [_Val(None, shapes[0], frozenset(const))]
    if name in _ELEMENTWISE:
        const = set(range(len(shapes[0])))
        for v in ins:
            if v.shape:
                const &= {i for i in const if v.constant_along(i)}
        return [_Val(None, s, frozenset(const)) for s in shapes]
    if name == "concatenate":
        axes = set(range(len(shapes[0]))) - {p["dimension"]}
        return [_Val(None, shapes[0], frozenset(a for a in axes if all(v.constant_along(a) for v in ins)))]
    if name == "transpose" and ins[0].const:
        perm = list(p["permutation"])
        return [_Val(None, shapes[0], frozenset(perm.index(i) for i in ins[0].const))]
    return [_Val(None, s) for s in shapes]


def _reshaped_axis(shape, a, new, eqn) -> int:
    pre, post = math.prod(shape[:a]), math.prod(shape[a + 1 :])
    for b in range(len(new)):
        if new[b] == shape[a] and math.prod(new[:b]) == pre and math.prod(new[b + 1 :]) == post:
            return b
    raise _Mixed(f"{_where(eqn)} reshapes {shape} to {new}, merging or splitting the batch axis")


def _dot_general(eqn, ins: list[_Val]) -> _Val:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = ins
    l_free = [d for d in range(len(lhs.shape)) if d not in lc and d not in lb]
    r_free = [d for d in range(len(rhs.shape)) if d not in rc and d not in rb]
    out = _shape(eqn)
    if lhs.axis is not None and lhs.axis in lb:
        k = list(lb).index(lhs.axis)
        if rhs.axis == rb[k] or (rhs.axis is None and not _varies(rhs, rb[k])):
            return _Val(k, out)
    elif rhs.axis is not None and rhs.axis in rb:
        k = list(rb).index(rhs.axis)
        if lhs.axis is None and not _varies(lhs, lb[k]):
            return _Val(k, out)
    elif lhs.axis is not None and rhs.axis is None and lhs.axis in l_free:
        return _Val(len(lb) + l_free.index(lhs.axis), out)
    elif rhs.axis is not None and lhs.axis is None and rhs.axis in r_free:
        return _Val(len(lb) + len(l_free) + r_free.index(rhs.axis), out)
    kind = "reduce" if lhs.axis in lc or rhs.axis in rc else "unknown"
    raise _Mixed(f"{_where(eqn)} contracts or crosses the batch axis", kind)


def _sub_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is not None:
            return sub
    return None


def _call(sub, ins: list[_Val]) -> list[_Val]:
    jaxpr = getattr(sub, "jaxpr", sub)
    consts = [_Val(None, tuple(np.shape(c)), value=c) for c in getattr(sub, "consts", ())]
    return _run(jaxpr, consts + list(ins))


def _join(old: _Val, new: _Val, where: str) -> _Val:
    if old.axis == new.axis:
        if old.axis is None:
            return _Val(None, old.shape, old.const & new.const)
        return old
    if old.axis is None or new.axis is None:
        axis = old.axis if old.axis is not None else new.axis
        if _varies(old if old.axis is None else new, axis):  # e.g. a loop started from an iota along the batch
            raise _Mixed(f"{where}: a value that varies along the batch axis meets the batch")
        return _Val(axis, old.shape)
    raise _Mixed(f"{where}: a loop carry moves its batch axis ({old.axis} -> {new.axis})")


def _fixed_point(body, consts: list[_Val], carry: list[_Val], extra: list[_Val], where: str):
    """Settle the carries' batch axes (lenient passes), then run the body once more with them, strictly."""
    for _ in range(len(carry) + 2):
        _state.lenient = _lenient() + 1
        try:
            outs = _call(body, consts + carry + extra)
        finally:
            _state.lenient -= 1
        new_carry = [_join(c, o, where) for c, o in zip(carry, outs[: len(carry)])]
        if [(c.axis, c.const) for c in new_carry] == [(c.axis, c.const) for c in carry]:
            return carry, _call(body, consts + carry + extra)
        carry = new_carry
    raise _Mixed(f"{where}: loop carries do not settle")


def _scan(eqn, ins: list[_Val]) -> list[_Val]:
    p = eqn.params
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    consts, carry, xs = ins[:n_consts], ins[n_consts : n_consts + n_carry], ins[n_consts + n_carry :]
    slices = []
    for x in xs:
        if x.axis == 0:
            raise _Mixed(f"{_where(eqn)} scans over the batch axis", "mix")
        slices.append(_Val(None if x.axis is None else x.axis - 1, x.shape[1:],
                           frozenset(i - 1 for i in x.const if i > 0)))
    carry, outs = _fixed_point(p["jaxpr"], consts, carry, slices, _where(eqn))
    ys = [_Val(None if y.axis is None else y.axis + 1, _shape(eqn, n_carry + k))
          for k, y in enumerate(outs[n_carry:])]
    return carry + ys


def _while(eqn, ins: list[_Val]) -> list[_Val]:
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cond_consts, body_consts, carry = ins[:nc], ins[nc : nc + nb], ins[nc + nb :]
    carry, _ = _fixed_point(p["body_jaxpr"], body_consts, carry, [], _where(eqn))
    (pred,) = _call(p["cond_jaxpr"], cond_consts + carry)
    if pred.axis is not None:
        raise _Mixed(f"{_where(eqn)}: the loop condition depends on the rows")
    return carry


def _cond(eqn, ins: list[_Val]) -> list[_Val]:
    index, ops = ins[0], ins[1:]
    if index.axis is not None:
        raise _Mixed(f"{_where(eqn)}: the branch taken depends on the rows")
    results = [_call(branch, ops) for branch in eqn.params["branches"]]
    outs = results[0]
    for other in results[1:]:
        outs = [_join(a, b, _where(eqn)) for a, b in zip(outs, other)]
    return outs
