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

``static_inputs`` lists the input positions that must be known at conversion time (shapes, axes, pads, repeats). The
converter keeps initializers that feed those positions as numpy constants instead of turning them into parameters.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from converters.errors import ConversionError

__all__ = ["OpSpec", "OpContext", "register_op", "get_op", "supported_ops", "static_value", "static_ints"]


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
        _REGISTRY[key] = OpSpec(op_type, fn, tuple(static_inputs), attrs, domain)
        return fn

    return deco


def _ensure_loaded():
    # Importing the op modules fills the registry.
    from converters.onnx_to_jax import ops  # noqa: F401


def get_op(op_type: str, domain: str = "") -> OpSpec | None:
    _ensure_loaded()
    if domain in ("ai.onnx",):
        domain = ""
    return _REGISTRY.get((domain, op_type))


def supported_ops(domain: str | None = "") -> list[str]:
    """Sorted op types implemented for ``domain`` (``None``: every domain, as ``domain:op`` for non-default ones)."""
    _ensure_loaded()
    if domain is None:
        return sorted(op if d == "" else f"{d}:{op}" for d, op in _REGISTRY)
    return sorted(op for d, op in _REGISTRY if d == domain)


@dataclasses.dataclass
class OpContext:
    """What an op implementation may need besides its inputs and attributes."""

    node_name: str
    op_type: str
    opset: int
    run_subgraph: Callable[..., Any]  # run_subgraph(graph_proto, inputs: list, outer_env) -> list of outputs
    outer_env: dict[str, Any]
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    def error(self, message: str) -> ConversionError:
        return ConversionError(f"{self.op_type} node {self.node_name!r}: {message}")

    def static(self, value, what: str) -> np.ndarray:
        return static_value(value, what, self)

    def static_ints(self, value, what: str) -> list[int]:
        return static_ints(value, what, self)


def static_value(value, what: str, ctx: OpContext | None = None) -> np.ndarray:
    """``value`` as a numpy array, or a clear error if it depends on the data (is only known at run time)."""
    if value is None:
        raise (ctx.error if ctx else ConversionError)(f"{what} is required")
    if isinstance(value, np.ndarray | np.generic | int | float | list | tuple):
        return np.asarray(value)
    try:
        return np.asarray(value)  # concrete jax array (evaluated under ensure_compile_time_eval)
    except Exception:  # a tracer: depends on the input data
        msg = f"{what} must be known at conversion time, but it depends on the model's input"
        raise (ctx.error(msg) if ctx else ConversionError(msg)) from None


def static_ints(value, what: str, ctx: OpContext | None = None) -> list[int]:
    return [int(v) for v in static_value(value, what, ctx).reshape(-1)]
