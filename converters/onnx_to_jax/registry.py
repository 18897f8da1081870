"""The ONNX op registry: ``op_type`` -> a function written with ``jax.numpy``.

An op implementation is a plain function::

    @register_op("Gemm")
    def gemm(ctx, a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
        ...

* ``ctx`` is an :class:`OpContext` (node name, opset, helpers for static values and sub-graphs);
* positional arguments are the node's inputs in ONNX order (``None`` for an omitted optional input). Each is either a
  ``numpy.ndarray`` (a value known at conversion time: an integer initializer, a ``Constant``, a folded shape
  computation) or a JAX array / tracer (data and weights);
* keyword arguments are the node's attributes under their ONNX names, already decoded (ints, floats, strings, lists,
  tensors as numpy arrays, sub-graphs as ``onnx.GraphProto``). An attribute the function does not accept is reported
  as unsupported rather than silently ignored;
* the function returns one array or a tuple of arrays (one per node output).

The table is filled by importing the op modules (:mod:`converters.onnx_to_jax.ops`), which import this module and
nothing the other way: importing :mod:`converters.onnx_to_jax` (the package, hence any of its modules) loads them.

``static_inputs`` lists the input positions that must be known at conversion time (shapes, axes, pads, repeats). The
converter keeps initializers that feed those positions as numpy constants instead of turning them into parameters.

Memory budget: no single tensor a model declares (an initializer, a ``Constant``, a sparse tensor) or an op creates
from static sizes (``ConstantOfShape``, ``Expand``, ``Tile``, ``Range``) may exceed :func:`max_tensor_bytes` bytes:
``MAX_TENSOR_BYTES`` (16 GiB) unless the environment variable ``JAXSENS_MAX_TENSOR_BYTES`` sets another budget.
Ops call :func:`check_alloc` before allocating, so a corrupt shape is refused by name instead of exhausting memory.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from converters.errors import ArgumentError, ConversionError, UnsupportedOpError
from converters.onnx_to_jax.static import is_static, static_ints, static_value

__all__ = [
    "MAX_TENSOR_BYTES",
    "OpContext",
    "OpSpec",
    "check_alloc",
    "get_op",
    "is_static",
    "max_tensor_bytes",
    "register_op",
    "registered_ops",
    "static_ints",
    "static_value",
    "supported_ops",
]

MAX_TENSOR_BYTES = 16 * 2**30  # default byte budget of one tensor; JAXSENS_MAX_TENSOR_BYTES overrides it


@dataclasses.dataclass(frozen=True)
class OpSpec:
    op_type: str
    fn: Callable[..., Any]
    static_inputs: tuple[int, ...]
    attributes: frozenset[str] | None  # None: the function takes **kwargs
    domain: str


_REGISTRY: dict[tuple[str, str], OpSpec] = {}


def register_op(op_type: str, *, static_inputs: Sequence[int] = (), domain: str = ""):
    """Register ``fn`` as the implementation of ONNX ``op_type``. Registering an op twice raises ``ValueError``."""

    def deco(fn):
        key = (domain, op_type)
        if key in _REGISTRY:
            raise ValueError(
                f"ONNX op {op_type!r} (domain {domain!r}) is already registered by "
                f"{_REGISTRY[key].fn.__module__}.{_REGISTRY[key].fn.__qualname__}"
            )
        sig = inspect.signature(fn)
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            attrs = None
        else:
            attrs = frozenset(n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY)
        _REGISTRY[key] = OpSpec(op_type, _checked(fn, op_type, domain), tuple(static_inputs), attrs, domain)
        return fn

    return deco


def get_op(op_type: str, domain: str = "") -> OpSpec | None:
    """The registered implementation of ``op_type`` in ``domain`` (``None`` when there is none)."""
    if domain in ("ai.onnx",):
        domain = ""
    return _REGISTRY.get((domain, op_type))


def registered_ops() -> dict[tuple[str, str], OpSpec]:
    """A copy of the table: ``(domain, op_type) -> OpSpec``."""
    return dict(_REGISTRY)


def supported_ops(domain: str | None = "") -> list[str]:
    """Sorted op types implemented for ``domain`` (``None``: every domain, as ``domain:op`` for non-default ones)."""
    if domain is None:
        return sorted(op if d == "" else f"{d}:{op}" for d, op in _REGISTRY)
    return sorted(op for d, op in _REGISTRY if d == domain)


@dataclasses.dataclass
class OpContext:
    """What an op implementation may need besides its inputs and attributes.

    ``unroll`` is the converted function's tracing option for recurrences (``RNN`` / ``GRU`` / ``LSTM``): run
    sequences of at most ``unroll`` steps as a static Python loop, longer ones in ``jax.lax.scan`` (0: always
    ``lax.scan``); ``None`` leaves the op's default. It comes from the call (:meth:`OnnxFunction.with_unroll`),
    never from global state.

    ``reverse_only`` (:meth:`OnnxFunction.with_reverse_only`) promises that the traced function is differentiated
    once, in reverse mode only (``jax.vjp`` / ``jax.grad``): no forward mode, no derivative of a derivative. An op
    may then use a hand-written pull-back (``jax.custom_vjp``) that is faster than JAX's own transpose of its
    forward computation; such a function cannot be pushed forward (``jax.jvp`` refuses it, loudly).
    """

    node_name: str
    op_type: str
    opset: int
    run_subgraph: Callable[..., Any]  # run_subgraph(graph_proto, inputs: list) -> list of outputs
    outer_env: dict[str, Any]
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    unroll: int | None = None
    reverse_only: bool = False

    def error(self, message: str) -> ConversionError:
        return ConversionError(f"{self.op_type} node {self.node_name!r}: {message}")

    def static(self, value, what: str) -> np.ndarray:
        return static_value(value, what, self)

    def static_ints(self, value, what: str) -> list[int]:
        return static_ints(value, what, self)


def max_tensor_bytes() -> int:
    """The byte budget of one tensor: ``JAXSENS_MAX_TENSOR_BYTES`` if set (a positive integer), else 16 GiB."""
    raw = os.environ.get("JAXSENS_MAX_TENSOR_BYTES")
    if raw is None or not raw.strip():
        return MAX_TENSOR_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ArgumentError(
            f"JAXSENS_MAX_TENSOR_BYTES={raw!r} is not a positive number of bytes; unset it for the default "
            f"{MAX_TENSOR_BYTES} (16 GiB) or set e.g. JAXSENS_MAX_TENSOR_BYTES={4 * 2**30}"
        )
    return value


def check_alloc(ctx: OpContext | None, shape, dtype) -> None:
    """Refuse a tensor of ``shape`` and ``dtype`` (before it is allocated) if a dim is negative or it needs more
    than :func:`max_tensor_bytes` bytes; the error names the node."""
    dims = [int(d) for d in shape]
    where = f"{ctx.op_type} node {ctx.node_name!r}" if ctx is not None else "a tensor"
    if any(d < 0 for d in dims):
        raise ConversionError(f"{where} would create a tensor of shape {dims}, with a negative dimension")
    nbytes = math.prod(dims) * np.dtype(dtype).itemsize
    budget = max_tensor_bytes()
    if nbytes > budget:
        raise ConversionError(
            f"{where} would create a tensor of shape {dims} ({np.dtype(dtype).name}, {nbytes:,} bytes), more than "
            f"the budget of {budget:,} bytes per tensor (corrupt shape? raise JAXSENS_MAX_TENSOR_BYTES if it is real)"
        )


# ---------------------------------------------------------------- checks at the op boundary
# Every registered op runs behind `_checked`: before the implementation sees a node, its inputs and attributes are
# checked against the ONNX schema of the model's opset (the same rules onnxruntime applies when it loads a model)
# and against the implementation's signature. A corrupt or hand-edited node is then refused by name, with the input
# or attribute and the bad value, instead of failing somewhere inside numpy / jax.numpy.


@functools.cache
def onnx_schema(op_type: str, domain: str, opset: int):
    """The ONNX ``OpSchema`` of ``op_type`` in force at ``opset`` (``None``: no such op / version / domain)."""
    if domain or opset < 1:
        return None  # non-default domains carry their own opset versions; only ai.onnx ops are checked
    import onnx

    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except Exception:  # noqa: BLE001 - SchemaError: the op does not exist at this opset
        return None


_NARROW = {"float64": "float32", "int64": "int32", "uint64": "uint32", "complex128": "complex64"}


def _canonical(dtype) -> np.dtype:
    """``dtype`` as JAX represents it without x64 (64-bit types as their 32-bit forms), whatever JAX's config."""
    dt = np.dtype(dtype)
    return np.dtype(_NARROW.get(dt.name, dt.name)) if dt.name in _NARROW else dt


@functools.cache
def _type_str_dtype(type_str: str):
    """``tensor(float)`` -> the canonical numpy dtype (:func:`_canonical`); ``None`` for non-tensor or exotic
    types."""
    if not (type_str.startswith("tensor(") and type_str.endswith(")")):
        return None
    import onnx

    names = {name.lower(): code for name, code in onnx.TensorProto.DataType.items()}
    code = names.get(type_str[7:-1])
    if code is None or code == onnx.TensorProto.STRING:
        return None
    try:
        return _canonical(onnx.helper.tensor_dtype_to_np_dtype(code))
    except Exception:  # noqa: BLE001 - a type numpy cannot represent
        return None


@functools.cache
def _latest_schema(op_type: str):
    import onnx

    try:
        return onnx.defs.get_schema(op_type)
    except Exception:  # noqa: BLE001
        return None


@functools.cache
def _first_version(op_type: str) -> int | None:
    """The first ai.onnx opset that defines ``op_type``."""
    import onnx

    schemas = onnx.defs.get_all_schemas_with_history()
    versions = [s.since_version for s in schemas if s.name == op_type and not s.domain]
    return min(versions) if versions else None


def _type_strs(schema, type_str: str) -> list[str]:
    allowed = next((c.allowed_type_strs for c in schema.type_constraints if c.type_param_str == type_str), None)
    return list(allowed) if allowed is not None else [type_str]


def _allowed_dtypes(schema, type_str: str) -> frozenset | None:
    dtypes = {_type_str_dtype(t) for t in _type_strs(schema, type_str)}
    dtypes.discard(None)
    return frozenset(dtypes) or None


def _allowed_at(op_type: str, schema, i: int) -> tuple[frozenset | None, Any]:
    """Element types accepted at input ``i``: those of the model's opset, and those a later opset of the op added
    (exporters emit e.g. ``Clip`` of integers at opset 11, which only opset 12 allows; the implementation computes
    it the same way). Returns ``(dtypes or None, the formal parameter at the model's opset)``."""
    params = list(schema.inputs)
    p = params[min(i, len(params) - 1)]
    allowed = _allowed_dtypes(schema, p.type_str)
    latest = _latest_schema(op_type)
    if allowed is not None and latest is not None and latest.inputs:
        q = list(latest.inputs)[min(i, len(latest.inputs) - 1)]
        allowed = allowed | (_allowed_dtypes(latest, q.type_str) or frozenset())
    return allowed, p


_ATTR_KINDS = {  # OpSchema.AttrType value -> (description, check of the decoded value)
    1: ("a float", lambda v: isinstance(v, float)),
    2: ("an int", lambda v: isinstance(v, int | np.integer) and not isinstance(v, bool)),
    3: ("a string", lambda v: isinstance(v, str)),
    4: ("a tensor", lambda v: isinstance(v, np.ndarray)),
    6: ("a list of floats", lambda v: isinstance(v, list) and all(isinstance(x, float) for x in v)),
    7: ("a list of ints", lambda v: isinstance(v, list) and all(isinstance(x, int | np.integer) for x in v)),
    8: ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    9: ("a list of tensors", lambda v: isinstance(v, list) and all(isinstance(x, np.ndarray) for x in v)),
    5: ("a graph", lambda v: _is_graph(v)),
    10: ("a list of graphs", lambda v: isinstance(v, list) and all(_is_graph(x) for x in v)),
}


def _is_graph(value) -> bool:
    import onnx

    return isinstance(value, onnx.GraphProto)


# int attributes that are flags: any other value than 0 / 1 is corrupt (and onnxruntime reads them as 32-bit ints,
# so 2**40 would be 0 there, 1 under Python's truthiness)
_FLAGS = frozenset({
    "transA", "transB", "keepdims", "select_last_index", "exclusive", "reverse", "ceil_mode", "count_include_pad",
    "upper", "allowzero", "noop_with_empty_axes", "input_forget", "linear_before_reset", "layout", "detect_negative",
    "detect_positive", "fmod", "largest", "sorted", "antialias", "exclude_outside", "training_mode", "saturate",
    "storage_order", "is_test",
})


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"a tensor of shape {list(value.shape)}"
    if isinstance(value, list) and not value:
        return "an empty list"
    if isinstance(value, list):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a list of {'/'.join(kinds) or 'nothing'} {_short(value)}"
    return f"{type(value).__name__} {_short(value)}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _signature(fn):
    params = list(inspect.signature(fn).parameters.values())[1:]  # after ctx
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional if p.default is p.empty]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    return [p.name for p in positional], len(required), variadic


def _checked(fn, op_type: str, domain: str):
    """``fn`` behind :func:`check_node_call` (the registry stores this; the decorator returns ``fn`` itself)."""
    names, n_required, variadic = _signature(fn)

    @functools.wraps(fn)
    def call(ctx, *args, **attrs):
        check_node_call(ctx, op_type, domain, args, attrs, names, n_required, variadic)
        return fn(ctx, *args, **attrs)

    return call


def check_node_call(ctx, op_type, domain, args, attrs, names=(), n_required=0, variadic=True) -> None:
    """Refuse a node whose inputs or attributes break the ONNX schema of its op at the model's opset, or that the
    implementation cannot take.

    Checked: the number of inputs and which ones may be empty; every attribute's type (an ``axis`` given as a
    string, ``kernel_shape`` as floats) and the required attributes; every input's element type against the op's
    type constraints, and inputs sharing a type variable (``T`` of ``MatMul``'s ``A`` and ``B``) having one type.
    Element types are compared as JAX represents them (64-bit types as their 32-bit forms, JAX's x64 being off),
    so a float64 constant next to float32 data is not refused. Ops outside the default domain, and opsets with
    no schema for the op, are checked against the implementation's signature only.
    """
    where = f"{op_type} node {ctx.node_name!r}"
    schema = onnx_schema(op_type, domain, int(ctx.opset))
    first = _first_version(op_type) if schema is None and not domain else None
    if first is not None and int(ctx.opset) < first:
        raise ConversionError(
            f"{where}: ONNX {op_type} does not exist at the model's opset {ctx.opset} (it appears at opset "
            f"{first}); the model declares the wrong opset (corrupt or hand-edited file?)"
        )
    n = len(args)
    labels = [f"input {i}" + (f" ({ctx.input_names[i]!r})" if i < len(ctx.input_names) else "") for i in range(n)]
    if schema is not None:
        from onnx.defs import OpSchema

        single = OpSchema.FormalParameterOption.Single
        variadic_option = OpSchema.FormalParameterOption.Variadic
        params = list(schema.inputs)
        formal = [p.name for p in params]
        last_variadic = bool(params) and params[-1].option == variadic_option
        if n > schema.max_input:
            raise ConversionError(
                f"{where} has {n} inputs; ONNX {op_type} (opset {ctx.opset}) takes at most {schema.max_input} "
                f"({', '.join(formal)})"
            )
        for i, p in enumerate(params):
            if p.option == single and (i >= n or args[i] is None):
                got = "it is missing" if i >= n else "it is empty"
                raise ConversionError(
                    f"{where} needs input {i} ({p.name}) of ONNX {op_type} (opset {ctx.opset}), but {got}"
                )
        if last_variadic and n < schema.min_input:
            raise ConversionError(f"{where} has {n} inputs; ONNX {op_type} needs at least {schema.min_input}")
        if last_variadic and op_type not in ("Loop", "Scan", "If"):
            empty = [i for i in range(len(params) - 1, n) if args[i] is None]
            if empty:
                raise ConversionError(
                    f"{where}: input {empty[0]} of the list {params[-1].name} is empty; ONNX {op_type} takes "
                    f"no omitted inputs there"
                )
    if not variadic and n > len(names):
        extra = [labels[i] for i in range(len(names), n) if args[i] is not None]
        if extra:
            raise (UnsupportedOpError if schema is not None else ConversionError)(
                f"{where} has {n} inputs; jaxsens implements {op_type} with at most {len(names)} "
                f"({', '.join(names)}); {', '.join(extra)} is not supported"
            )
    for i in range(min(n_required, len(names))):
        if i >= n or args[i] is None:
            raise (UnsupportedOpError if schema is not None else ConversionError)(
                f"{where} needs input {i} ({names[i]}), but it is {'missing' if i >= n else 'empty'}"
            )
    if schema is None:
        return
    for name, value in attrs.items():
        spec = schema.attributes.get(name)
        if spec is None:  # an attribute of another opset's form of the op (e.g. Slice's axes before opset 10)
            raise ConversionError(
                f"{where} has the attribute {name!r}, which ONNX {op_type} does not define at opset "
                f"{ctx.opset} (its attributes there: {sorted(schema.attributes) or 'none'})"
            )
        kind = _ATTR_KINDS.get(int(spec.type))
        if kind is not None and not kind[1](value):
            if isinstance(value, list) and not value and kind[0].startswith("a list"):
                continue  # an empty list is a valid value of every list type
            raise ConversionError(
                f"{where}: attribute {name!r} is {_describe(value)}; ONNX {op_type} (opset {ctx.opset}) defines "
                f"it as {kind[0]}"
            )
        if name in _FLAGS and value not in (0, 1) and kind is not None and kind[0] == "an int":
            raise ConversionError(f"{where}: attribute {name!r} is {value}; it is a flag, 0 or 1")
    for name, spec in schema.attributes.items():
        if spec.required and name not in attrs:
            raise ConversionError(f"{where} lacks the attribute {name!r}, which ONNX {op_type} requires")
    _check_input_types(ctx, op_type, schema, args, labels, where)


# Inputs left out of the same-type check: exporter quirks whose meaning is unambiguous. torch.onnx at opset 11
# emits Clip(int64 x, float min, float max) for clamp() of an integer tensor; the bounds are cast to x's type.
_MIXED_TYPES_OK = {"Clip": frozenset({1, 2})}


def _check_input_types(ctx, op_type, schema, args, labels, where) -> None:
    params = list(schema.inputs)
    if not params:
        return
    groups: dict[str, list[tuple[str, np.dtype]]] = {}
    for i, a in enumerate(args):
        if a is None or not hasattr(a, "dtype"):
            continue
        if np.dtype(a.dtype).kind in "OSU":  # a string tensor (a Constant / initializer): no numeric meaning
            raise UnsupportedOpError(
                f"{where}: {labels[i]} is a string tensor; jaxsens computes with numeric tensors only (string "
                f"tensors are not supported)"
            )
        allowed, p = _allowed_at(op_type, schema, i)
        if allowed is None:
            continue
        dt = _canonical(a.dtype)
        if dt not in allowed:
            names = sorted({t[7:-1] for t in _type_strs(schema, p.type_str) if t.startswith("tensor(")})
            raise ConversionError(
                f"{where}: {labels[i]} has element type {np.dtype(a.dtype).name}; ONNX {op_type} (opset "
                f"{ctx.opset}) takes {', '.join(names)} there (input {p.name}, type {p.type_str})"
            )
        if p.is_homogeneous and i not in _MIXED_TYPES_OK.get(op_type, ()):
            groups.setdefault(p.type_str, []).append((labels[i], dt))
    for type_str, members in groups.items():
        if len({dt for _, dt in members}) > 1:
            found = ", ".join(f"{label}: {dt.name}" for label, dt in members)
            raise ConversionError(
                f"{where}: inputs bound to the same type {type_str} of ONNX {op_type} have different element "
                f"types ({found}); the model mixes types without a Cast (corrupt or hand-edited graph?)"
            )


def default_opset(proto) -> int:
    """The model's ``ai.onnx`` opset version, refused when missing while the graph uses ``ai.onnx`` ops (their
    semantics depend on it: ``Softmax``'s axis changed at 13), imported twice, below 1, or newer than the installed
    ``onnx`` package knows (the ops' semantics at that version are unknown). 13 for a graph of other domains only."""
    import onnx

    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        if any(n.domain in ("", "ai.onnx") for n in proto.graph.node):
            raise ConversionError(
                "the model does not say which ONNX opset its ops follow (no opset_import for the default domain; "
                "corrupt file?)"
            )
        return 13
    if len(set(versions)) > 1:  # the same version twice is harmless: skl2onnx writes e.g. [17, 17]
        raise ConversionError(f"the model imports the default ONNX domain {len(versions)} times (versions {versions})")
    latest = onnx.defs.onnx_opset_version()
    if not 1 <= versions[0] <= latest:
        raise ConversionError(
            f"the model's ONNX opset version {versions[0]} is not valid here: opsets run from 1 to {latest} (the "
            f"newest the installed onnx package knows; upgrade onnx for a newer one)"
        )
    return versions[0]
