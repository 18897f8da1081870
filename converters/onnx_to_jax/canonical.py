"""Two converted graphs that differ only in their names: the same function, so the same compiled code.

A model retrained and saved again is the same architecture with new weights, but its ONNX graph may name every
tensor differently: Keras numbers its layers per process (``dense_3`` one week, ``dense_7`` the next, when the
training script built other models first), tf2onnx names tensors after them, and initializers carry those names.
:class:`~converters.onnx_to_jax.graph.OnnxFunction` fingerprints the graph *with* its names, so such versions
would compile separately and could not be stacked. :func:`canonical_form` renames every value by its role and
first use (inputs ``i0, i1, ...`` in input order; weights ``p0, p1, ...``, constants ``c0, ...`` and node outputs
``t0, ...`` in node order), hashes the renamed nodes with their attributes, the constants' bytes and the
weights' shapes and dtypes, and returns the weights in canonical order; :func:`param_mapping` matches one version's
weights to another's names when the two canonical forms are equal.

Only exact structural equality counts: any difference in op order, wiring, attributes, constants or weight shapes
gives a different form (and the caller keeps the versions apart: slower, never wrong). Graphs holding subgraphs
(``Loop`` / ``If`` / ``Scan`` bodies, whose inner names would need the same renaming) get no canonical form.
"""

from __future__ import annotations

import hashlib
import numbers

import numpy as np

__all__ = ["canonical_form", "param_mapping"]


class _NoForm(Exception):
    """An attribute value this module does not canonicalise (a subgraph): the graph gets no canonical form."""


def _encode(value, h) -> None:
    """Feed an attribute value into the hash ``h`` unambiguously (arrays by dtype, shape and bytes)."""
    if isinstance(value, np.ndarray):
        h.update(f"a{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, list | tuple):
        h.update(f"l{len(value)}(".encode())
        for v in value:
            _encode(v, h)
        h.update(b")")
    elif isinstance(value, bytes):
        h.update(b"b%d:" % len(value) + value)
    elif isinstance(value, str):
        h.update(f"s{len(value)}:{value}".encode())
    elif isinstance(value, bool | numbers.Number | np.generic) or value is None:
        h.update(f"n{type(value).__name__}:{value!r}".encode())
    else:
        raise _NoForm(type(value).__name__)


def canonical_form(fn) -> tuple[str, tuple[str, ...]] | None:
    """``(digest, weight names in canonical order)`` of an ``OnnxFunction``, or ``None`` (no canonical form).

    Two functions with equal digests compute the same function of (inputs, weights) once their weights are
    matched in canonical order (:func:`param_mapping`).
    """
    names: dict[str, str] = {}
    counters = {"p": 0, "c": 0, "t": 0}
    weights: list[str] = []
    h = hashlib.sha256()
    h.update(repr((getattr(fn, "opset", None), getattr(fn, "unroll", None))).encode())
    for i, name in enumerate(fn.input_names):
        names[name] = f"i{i}"
        h.update(f"input {i} {fn.input_dtypes[i]!s} {fn.input_shapes[i]!r};".encode())

    def canon(name: str) -> str:
        if not name:
            return ""
        if name not in names:
            if name in fn.params:
                kind = "p"
                weights.append(name)
                arr = fn.params[name]
                h.update(f"weight {counters['p']} {arr.dtype.str} {arr.shape};".encode())
            elif name in fn.consts:
                kind = "c"
                _encode(np.asarray(fn.consts[name]), h)
            else:  # produced by an earlier node (node outputs are named when produced) or unknown: no form
                raise _NoForm(f"value {name!r} used before it is produced")
            names[name] = f"{kind}{counters[kind]}"
            counters[kind] += 1
        return names[name]

    try:
        for node in fn.nodes:
            ins = [canon(n) for n in node.inputs]
            outs = []
            for o in node.outputs:
                if o:
                    names[o] = f"t{counters['t']}"
                    counters["t"] += 1
                outs.append(names.get(o, ""))
            h.update(f"node {node.domain}:{node.op_type} {ins} -> {outs} ".encode())
            for key in sorted(node.attrs):
                h.update(f"@{key}=".encode())
                _encode(node.attrs[key], h)
            h.update(b";")
        h.update(f"output {canon(fn.output) if fn.output not in names else names[fn.output]}".encode())
    except _NoForm:
        return None
    return h.hexdigest(), tuple(weights)


def param_mapping(target, source) -> dict[str, str] | None:
    """``{target weight name: source weight name}`` when both ``OnnxFunction`` s have one canonical form.

    Returns ``None`` when the graphs differ in anything but their names (or either has no canonical form). Weights
    that no node reads (pruned branches) are not in the mapping: they do not enter the function.
    """
    a, b = canonical_form(target), canonical_form(source)
    if a is None or b is None or a[0] != b[0]:
        return None
    return dict(zip(a[1], b[1]))
