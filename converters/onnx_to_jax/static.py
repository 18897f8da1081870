"""Values known at conversion time: the one rule every op and the interpreter use.

An op input is *static* when its value is known while the graph is traced: a numpy value (an integer initializer,
a ``Constant``, a folded shape computation). JAX arrays and tracers (data, weights) are not.

``None`` (an omitted optional input) counts as static: it holds nothing that depends on the data, so an op whose
other inputs are all numpy values may still be folded at conversion time. Code that needs the value itself (a trip
count, a condition) checks ``value is not None`` first, or calls :func:`static_value`, which refuses ``None``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from converters.errors import ConversionError

__all__ = ["is_static", "static_ints", "static_value", "xp_of"]


def is_static(value) -> bool:
    """True for a numpy value (known at conversion time) or an omitted input (``None``); False for JAX arrays."""
    return value is None or isinstance(value, np.ndarray | np.generic)


def xp_of(*values):
    """``numpy`` when every value is static (constant folding keeps ONNX's exact dtypes), else ``jax.numpy``."""
    return np if all(is_static(v) for v in values) else jnp


def static_value(value, what: str, ctx=None) -> np.ndarray:
    """``value`` as a numpy array, or a clear error if it is missing or depends on the data (known at run time).

    ``ctx`` is the op's :class:`~converters.onnx_to_jax.registry.OpContext` (its ``error`` names the node).
    """
    if value is None:
        raise (ctx.error if ctx else ConversionError)(f"{what} is required")
    if isinstance(value, np.ndarray | np.generic | int | float | list | tuple):
        return np.asarray(value)
    try:
        return np.asarray(value)  # concrete jax array (evaluated under ensure_compile_time_eval)
    except Exception:  # noqa: BLE001 - a tracer: depends on the input data
        msg = f"{what} must be known at conversion time, but it depends on the model's input"
        raise (ctx.error(msg) if ctx else ConversionError(msg)) from None


def static_ints(value, what: str, ctx=None) -> list[int]:
    """:func:`static_value` as a flat list of Python ints."""
    return [int(v) for v in static_value(value, what, ctx).reshape(-1)]
