"""Boundary checks shared by every method: the model a method can explain, and its inputs.

One function, :func:`check_model`, reads what the method's spec declares (``multi_input``, ``integer_inputs``,
and the family: gradient methods need a derivative) and refuses, with a reason and the fix, a model the method
would answer wrongly: integer inputs (token ids) for gradient and continuous-perturbation methods, inputs that
reach the output only through operations without a derivative, several inputs where the method handles one.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, JaxsensError
from jaxsens import _engine
from jaxsens._cache import per_architecture

__all__ = ["check_model"]

_WHAT = {  # what each family does to an input's values, for the refusal of integer inputs
    "gradient": "differentiates the model with respect to its inputs",
    "perturbation": "moves each input's values continuously (noise, means, grids)",
    "profile": "sweeps each input over a grid of values between its minimum and maximum",
}


def check_model(model, method: str, *, family: str, multi_input: bool = False,
                integer_inputs: bool = False, wrt: str | None = None) -> tuple[tuple[int, ...], ...]:
    """Refuse a model ``method`` cannot explain truthfully; returns the per-sample shape of each input.

    Args:
        model: a :class:`jaxsens.Model` (checked by the caller).
        method: the public function's name, for messages.
        family: the method's family; ``"gradient"`` also refuses inputs whose derivative is structurally 0
            although the output depends on them (a Cast to an integer type, Round, ArgMax on the way).
        multi_input: whether the method handles several model inputs.
        integer_inputs: whether the method's perturbation is defined for integer inputs (token ids): only
            discrete ones (values permuted across rows) are; noise, means, grids and derivatives of ids are not.
        wrt: a gradient method differentiating with respect to this layer's output, not the inputs: integer
            inputs are then fine and the inputs' own derivative is not checked.
    """
    names, shapes, _ = _engine.model_inputs(model)
    if len(shapes) > 1 and not multi_input:
        raise ArgumentError(
            f"{method}() handles a model with one input; this one has {len(shapes)} inputs {list(names)} of "
            f"shapes {[list(s) for s in shapes]}. Use jacobian_importance() or partial_derivatives(), which "
            "take a tuple / dict of data, one per input"
        )
    for name, shape in zip(names, shapes):
        if not shape or not all(isinstance(d, int | np.integer) for d in shape):
            raise ArgumentError(
                f"{method}() needs inputs with at least one axis (features); input {name!r} has per-sample "
                f"shape {shape}"
            )
    ints = _engine.integer_inputs(model)
    if ints and not integer_inputs and wrt is None:
        name, dtype = ints[0]
        more = f" (also {[n for n, _ in ints[1:]]})" if len(ints) > 1 else ""
        raise ArgumentError(
            f"{method}() {_WHAT.get(family, 'perturbs inputs continuously')}, which has no meaning for input "
            f"{name!r} of dtype {dtype}{more} (e.g. token ids feeding an Embedding / Gather: 17.3 is not an id, "
            "and the derivative through an id is 0 everywhere). Use permutation_importance(), whose discrete "
            "perturbation (ids permuted across rows) is defined for integer inputs"
            + (f"; or differentiate with respect to the embedding output: {_wrt_hint(model)}"
               if family == "gradient" else "")
            + ". If the values are really continuous, export the model with a float input"
        )
    shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    if family == "gradient" and wrt is None:
        cut = _cut_inputs(model, shapes)
        if cut:
            raise ArgumentError(
                f"{method}() differentiates the model with respect to its inputs, but input {cut[0]!r} reaches "
                "the output only through operations without a derivative (a Cast to an integer type, e.g. token "
                "ids in a float input feeding an Embedding / Gather, or Round / Floor / ArgMax): its derivative is "
                "0 everywhere although the output depends on it. Use permutation_importance(), the perturbation "
                "method that defines a discrete perturbation for ids (permuted across rows), or differentiate with "
                f"respect to the embedding output: {_wrt_hint(model)}"
            )
    return shapes


def _wrt_hint(model) -> str:
    """``jacobian_importance(model, data, wrt="<first float layer>")`` and the candidate layers (floating-point
    layer outputs, the model's output layer left out), for the refusal of token ids."""
    try:
        structs = model.layer_structs(caller="jacobian_importance()")
    except JaxsensError:  # a wrapped function has no layers: the hint stays generic
        structs = {}
    floats = [n for n, s in structs.items() if jnp.issubdtype(s.dtype, jnp.floating)][:-1]
    if not floats:
        return "jacobian_importance(model, data, wrt=LAYER) with LAYER a floating-point layer of a converted model"
    shown = floats[:8] + (["..."] if len(floats) > 8 else [])
    return f"jacobian_importance(model, data, wrt={floats[0]!r}) (floating-point layers: {', '.join(shown)})"


_CUT_CACHE: dict = {}


def _cut_inputs(model, shapes) -> tuple[str, ...]:
    """Inputs the output depends on but whose derivative is structurally zero (traced once per architecture).

    Two abstract traces, no evaluation: the output's dependence on each input in the jaxpr of ``apply``, and the
    dependence of the JVP's output tangent on each input tangent. An input in the first but not in the second
    reaches the output only through operations whose derivative JAX knows to be zero (``convert_element_type``
    to an integer, ``round``, ``floor``, ``argmax``, ``stop_gradient``): its Jacobian is 0 for every ``x``.
    Both analyses over-approximate through control flow (``scan``, ``while``, ``cond`` count as depending on all
    their operands), so a differentiable input is never reported.
    """
    return per_architecture(_CUT_CACHE, model, lambda: _trace_cut_inputs(model, shapes), persist="cut-inputs",
                            decode=_names)


def _names(value) -> tuple[str, ...] | None:
    """A kept record's list of names, or ``None`` for a malformed one."""
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return tuple(value) if ok else None


def _trace_cut_inputs(model, shapes) -> tuple[str, ...]:
    examples = tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes)
    multi = len(shapes) > 1

    unrolled = model.with_unroll(0)  # recurrences as lax.scan: a short trace

    def f(x):
        return unrolled.apply(unrolled.params, x)

    def tangent(x, t):
        return jax.jvp(f, (x,), (t,))[1]

    x = examples if multi else examples[0]
    primal = jax.make_jaxpr(f)(x).jaxpr
    linear = jax.make_jaxpr(tangent)(x, x).jaxpr
    n = len(shapes)
    cut = []
    for i, name in enumerate(model.input_names):
        hot = [j == i for j in range(n)]
        if any(_reaches(primal, hot)) and not any(_reaches(linear, [False] * n + hot)):
            cut.append(name)
    return tuple(cut)


def _reaches(jaxpr, tainted_in: Sequence[bool]) -> list[bool]:
    """For each output of ``jaxpr``: does it depend on an input flagged in ``tainted_in``? (forward taint)"""
    tainted = {v for v, t in zip(jaxpr.invars, tainted_in) if t}

    def hit(v):
        return not hasattr(v, "val") and v in tainted  # literals carry ``val`` and depend on nothing

    for eqn in jaxpr.eqns:
        ins = [hit(v) for v in eqn.invars]
        if not any(ins):
            continue
        sub = next((eqn.params[k] for k in ("jaxpr", "call_jaxpr") if k in eqn.params), None)
        sub = getattr(sub, "jaxpr", sub)
        if eqn.primitive.name in ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint") and (
            sub is not None and len(sub.invars) == len(ins) and len(sub.outvars) == len(eqn.outvars)
        ):
            outs = _reaches(sub, ins)
        else:  # control flow, custom rules: every output depends on every operand
            outs = [True] * len(eqn.outvars)
        tainted.update(v for v, o in zip(eqn.outvars, outs) if o)
    return [hit(v) for v in jaxpr.outvars]


