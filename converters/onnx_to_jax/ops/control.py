"""Control-flow ONNX ops: ``Loop``, ``Scan`` and ``If``, whose bodies are ONNX sub-graphs.

Bodies run through ``ctx.run_subgraph(graph, inputs)``; names of the enclosing graphs (weights, the model's input)
are visible inside them, so a body may close over tracers. Everything lowers to ``jax.lax.scan`` /
``jax.lax.cond`` and therefore works under ``jit``, ``vmap`` and reverse-mode differentiation:

* ``Scan`` (opset 9+; opset 8's batched form too) is one ``lax.scan``.
* ``Loop`` needs a trip count known at conversion time to stack scan outputs. It is found from ``M`` and the
  condition: when the condition is computed from loop counters only (``iteration < n`` and the like, as tf2onnx
  writes Keras 3 GRU / SimpleRNN loops), that part of the body is run once in numpy, which gives the exact number of
  iterations; the loop is then one ``lax.scan``. Loop-carried values the body passes through unchanged (weights
  that tf2onnx threads through the loop) are not carried but closed over. A data-dependent condition is supported
  only without scan outputs: a ``lax.scan`` over ``M`` steps that freezes the state once the condition turns false
  (differentiable), or ``lax.while_loop`` when ``M`` is absent (not reverse-differentiable).
* ``If`` with a condition known at conversion time runs only the chosen branch; otherwise ``lax.cond`` (both
  branches must give the same shapes and dtypes; under ``vmap`` both run and the result is selected).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import helper

from converters.onnx_to_jax.registry import register_op
from converters.onnx_to_jax.static import is_static

__all__ = ["MAX_SIMULATED_ITERATIONS"]

# A Loop whose condition is simulated in numpy to find its trip count gives up (and is treated as data-dependent)
# after this many iterations.
MAX_SIMULATED_ITERATIONS = 100_000
_MAX_TRIP_COUNT = 2**31 - 1


def _as_carry(ctx, value, like, what: str):
    """``value`` with the shape and dtype of the carried ``like`` (lax.scan needs a fixed carry type)."""
    value = jnp.asarray(value)
    if value.shape != like.shape:
        raise ctx.error(
            f"{what} changes shape from {like.shape} to {value.shape} between iterations; only fixed-shape "
            "loop-carried values are supported"
        )
    return value.astype(like.dtype)


# ------------------------------------------------------------------------------------------------------------ Scan
@register_op("Scan")
def scan(
    ctx,
    *inputs,
    body: onnx.GraphProto,
    num_scan_inputs: int,
    scan_input_axes=None,
    scan_input_directions=None,
    scan_output_axes=None,
    scan_output_directions=None,
    directions=None,
):
    """ONNX ``Scan``: the body maps ``(state..., scan_input_slices...)`` to ``(state..., scan_output_slices...)``.

    Inputs are the initial states followed by ``num_scan_inputs`` sequences, each scanned along
    ``scan_input_axes[j]`` (default 0), backwards where ``scan_input_directions[j] == 1``. Returns the final states
    followed by the stacked scan outputs, stacked along ``scan_output_axes[k]`` (default 0), in reverse order where
    ``scan_output_directions[k] == 1``. Opset 8 (a leading ``sequence_lens`` input, a batch axis 0 and a
    ``directions`` attribute) is run as the opset-9 form vmapped over the batch.
    """
    if ctx.opset < 9:
        return _scan_v8(ctx, inputs, body, num_scan_inputs, directions)
    n_state = len(inputs) - num_scan_inputs
    states, seqs = list(inputs[:n_state]), list(inputs[n_state:])
    n_out = len(body.output) - n_state
    in_axes = list(scan_input_axes) if scan_input_axes is not None else [0] * num_scan_inputs
    in_dirs = list(scan_input_directions) if scan_input_directions is not None else [0] * num_scan_inputs
    out_axes = list(scan_output_axes) if scan_output_axes is not None else [0] * n_out
    out_dirs = list(scan_output_directions) if scan_output_directions is not None else [0] * n_out
    for name, vals, n in [
        ("scan_input_axes", in_axes, num_scan_inputs),
        ("scan_input_directions", in_dirs, num_scan_inputs),
        ("scan_output_axes", out_axes, n_out),
        ("scan_output_directions", out_dirs, n_out),
    ]:
        if len(vals) != n:
            raise ctx.error(f"{name}={vals} needs {n} entries")
    return _run_scan(ctx, body, states, seqs, in_axes, in_dirs, out_axes, out_dirs)


def _run_scan(ctx, body, states, seqs, in_axes, in_dirs, out_axes, out_dirs):
    n_state = len(states)
    xs = []
    for j, (x, axis, rev) in enumerate(zip(seqs, in_axes, in_dirs)):
        x = jnp.asarray(x)
        x = jnp.moveaxis(x, int(axis) % x.ndim, 0)
        xs.append(x[::-1] if rev else x)
    lengths = {x.shape[0] for x in xs}
    if len(lengths) > 1:
        raise ctx.error(f"scan inputs have different lengths along their scan axes: {sorted(lengths)}")
    init = tuple(jnp.asarray(s) for s in states)

    def step(carry, x_t):
        outs = ctx.run_subgraph(body, [*carry, *x_t])
        new = tuple(
            _as_carry(ctx, o, c, f"Scan state {k}") for k, (o, c) in enumerate(zip(outs[:n_state], carry))
        )
        return new, tuple(jnp.asarray(o) for o in outs[n_state:])

    length = lengths.pop() if lengths else None
    if length is None:
        raise ctx.error("Scan needs at least one scan input (num_scan_inputs >= 1)")
    final, ys = jax.lax.scan(step, init, tuple(xs), length=length)
    outs = []
    for y, axis, rev in zip(ys, out_axes, out_dirs):
        y = y[::-1] if rev else y
        outs.append(jnp.moveaxis(y, 0, int(axis) % y.ndim))
    return (*final, *outs)


def _scan_v8(ctx, inputs, body, num_scan_inputs, directions):
    sequence_lens, rest = inputs[0], list(inputs[1:])
    n_state = len(rest) - num_scan_inputs
    states, seqs = rest[:n_state], rest[n_state:]
    seq_len = jnp.asarray(seqs[0]).shape[1]
    if sequence_lens is not None and (
        not is_static(sequence_lens) or np.any(np.asarray(sequence_lens) != seq_len)
    ):
        raise ctx.error(
            f"opset-8 Scan with sequence_lens shorter than the sequence axis ({seq_len}) is not supported; "
            "re-export with opset >= 9"
        )
    dirs = list(directions) if directions is not None else [0] * num_scan_inputs
    n_out = len(body.output) - n_state

    def one(states_b, seqs_b):
        return _run_scan(
            ctx, body, list(states_b), list(seqs_b), [0] * num_scan_inputs, dirs, [0] * n_out, [0] * n_out
        )

    return jax.vmap(one)(tuple(jnp.asarray(s) for s in states), tuple(jnp.asarray(s) for s in seqs))


# ------------------------------------------------------------------------------------------------------------ Loop
def _graph_refs(graph: onnx.GraphProto) -> set[str]:
    """Every name a (sub-)graph's nodes read, including names read by nested sub-graphs."""
    names = set()
    for node in graph.node:
        names.update(i for i in node.input if i)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= _graph_refs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    names |= _graph_refs(g)
    return names


def _slice_nodes(body: onnx.GraphProto, wanted: set[str]) -> tuple[list[int], set[str]]:
    """Indices of the body nodes needed to compute ``wanted``, and every name they read."""
    producer = {o: k for k, node in enumerate(body.node) for o in node.output if o}
    keep, reads, todo = set(), set(), list(wanted)
    while todo:
        name = todo.pop()
        if name in reads:
            continue
        reads.add(name)
        k = producer.get(name)
        if k is None or k in keep:
            continue
        keep.add(k)
        node = body.node[k]
        sub = onnx.GraphProto()
        sub.node.extend([node])
        todo.extend(_graph_refs(sub))
    return sorted(keep), reads


def _simulate_trip_count(ctx, body, trip_limit, carried, invariant) -> int | None:
    """Number of iterations of a Loop whose condition depends only on loop counters (None if it depends on data).

    The part of the body that computes the condition (and the carried counters it reads) is run in numpy.
    """
    n = len(carried)
    carried_in = [vi.name for vi in body.input[2:]]
    carried_out = [vi.name for vi in body.output[1 : 1 + n]]
    wanted = {body.output[0].name}
    counters: set[int] = set()
    while True:
        keep, reads = _slice_nodes(body, wanted)
        more = {j for j, name in enumerate(carried_in) if name in reads and j not in invariant} - counters
        if not more:
            break
        counters |= more
        wanted |= {carried_out[j] for j in more}
    counters_sorted = sorted(counters)
    if not all(carried[j] is not None and is_static(carried[j]) for j in counters_sorted):
        return None
    pruned = helper.make_graph(
        [body.node[k] for k in keep],
        body.name + "_condition",
        list(body.input),
        [body.output[0]] + [body.output[1 + j] for j in counters_sorted],
        list(body.initializer),
    )
    values = [carried[j] if (j in counters or j in invariant) else None for j in range(n)]
    if not counters and body.input[0].name not in reads:
        # The condition is the same at every iteration (e.g. cond_out = Identity(cond_in)): evaluate it once.
        (first,) = ctx.run_subgraph(pruned, [np.array(0, np.int64), np.array(True), *values])
        if first is None or not is_static(first):
            return None
        if not bool(np.asarray(_one(ctx, first, "the body's condition output")).reshape(-1)[0]):
            return 1
        if trip_limit is None:
            raise ctx.error(
                "the Loop has no trip count M and its condition is always true: it would never end"
            )
        return trip_limit
    limit = MAX_SIMULATED_ITERATIONS if trip_limit is None else min(trip_limit, MAX_SIMULATED_ITERATIONS + 1)
    it = 0
    while it < limit:
        outs = ctx.run_subgraph(pruned, [np.array(it, np.int64), np.array(True), *values])
        if not all(o is not None and is_static(o) for o in outs):
            return None
        for j, o in zip(counters_sorted, outs[1:]):
            values[j] = o
        it += 1
        if not bool(np.asarray(_one(ctx, outs[0], "the body's condition output")).reshape(-1)[0]):
            return it
    if trip_limit is not None and it >= trip_limit:
        return it
    return None


def _one(ctx, value, what: str):
    """``value`` if it holds one element (a condition, a trip count), else an error naming ``what``; a condition
    (``what`` naming one) must be boolean."""
    if np.size(value) != 1:
        raise ctx.error(f"{what} must hold one value, got a tensor of shape {tuple(np.shape(value))}")
    if "condition" in what and np.dtype(value.dtype) != np.bool_:
        raise ctx.error(f"{what} must be a boolean, got element type {np.dtype(value.dtype).name}")
    return value


def _pass_through(body: onnx.GraphProto, n: int) -> set[int]:
    """Loop-carried values the body returns unchanged (directly or through ``Identity`` nodes).

    tf2onnx threads a Keras RNN's weights through its loops this way; they are closed over instead of carried.
    """
    identity = {  # a malformed Identity (no input or output) is refused when the body runs
        node.output[0]: node.input[0]
        for node in body.node
        if node.op_type == "Identity" and node.input and node.output
    }
    same = set()
    for j in range(n):
        name, seen = body.output[1 + j].name, set()
        while name in identity and name not in seen:
            seen.add(name)
            name = identity[name]
        if name == body.input[2 + j].name:
            same.add(j)
    return same


@register_op("Loop")
def loop(ctx, M=None, cond=None, *v_initial, body: onnx.GraphProto):
    """ONNX ``Loop``: ``for i in range(M) while cond: cond, v... , scan_out... = body(i, cond, v...)``.

    Returns the final loop-carried values followed by the scan outputs stacked along a new axis 0.
    """
    n = len(v_initial)
    if len(body.input) != n + 2 or len(body.output) < n + 1:
        raise ctx.error(
            f"the body takes {len(body.input)} inputs and gives {len(body.output)} outputs; a Loop with {n} "
            f"loop-carried values needs {n + 2} inputs and at least {n + 1} outputs"
        )
    n_scan = len(body.output) - 1 - n
    invariant = _pass_through(body, n)

    trip_limit = None
    if M is not None:
        if not is_static(M):
            raise ctx.error(
                "the trip count M depends on the model's input; only trip counts known at conversion "
                "time are supported"
            )
        trip_limit = max(0, int(np.asarray(_one(ctx, M, "the trip count M")).reshape(-1)[0]))

    if cond is None:
        if trip_limit is None:
            raise ctx.error("the Loop has neither a trip count M nor a condition: it would never end")
        trip = trip_limit
    elif is_static(cond):
        if not bool(np.asarray(_one(ctx, cond, "the condition")).reshape(-1)[0]) or trip_limit == 0:
            trip = 0
        else:
            trip = _simulate_trip_count(ctx, body, trip_limit, v_initial, invariant)
    else:
        trip = None

    if trip is not None:
        if trip > _MAX_TRIP_COUNT:
            raise ctx.error(
                f"the Loop would run {trip} iterations (M={trip_limit} and a condition that does not stop it "
                "earlier); that is not a loop jaxsens can compile"
            )
        return _loop_scan(ctx, body, trip, v_initial, invariant, n_scan)
    if n_scan:
        raise ctx.error(
            f"the Loop's condition depends on the model's input, so the length of its {n_scan} scan output(s) is "
            "not known at conversion time; only Loops whose trip count is fixed (by M or by a condition on loop "
            "counters) can have scan outputs"
        )
    if trip_limit is not None and trip_limit <= MAX_SIMULATED_ITERATIONS:
        return _loop_masked(ctx, body, trip_limit, cond, v_initial, invariant)
    return _loop_while(ctx, body, trip_limit, cond, v_initial, invariant)


def _split_carried(v_initial, invariant):
    dynamic = [j for j in range(len(v_initial)) if j not in invariant]
    init = tuple(jnp.asarray(v_initial[j]) for j in dynamic)

    def merge(carry):
        vals = list(v_initial)
        for j, v in zip(dynamic, carry):
            vals[j] = v
        return vals

    return dynamic, init, merge


def _loop_scan(ctx, body, trip: int, v_initial, invariant, n_scan):
    n = len(v_initial)
    dynamic, init, merge = _split_carried(v_initial, invariant)

    def step(carry, it):
        outs = ctx.run_subgraph(body, [it, np.array(True), *merge(carry)])
        new = tuple(_as_carry(ctx, outs[1 + j], c, f"loop-carried value {j}") for j, c in zip(dynamic, carry))
        return new, tuple(jnp.asarray(o) for o in outs[1 + n :])

    final, ys = jax.lax.scan(step, init, jnp.arange(trip), length=trip)
    return (*merge(final), *ys)


def _loop_masked(ctx, body, trip: int, cond, v_initial, invariant):
    dynamic, init, merge = _split_carried(v_initial, invariant)

    def step(state, it):
        active, carry = state
        outs = ctx.run_subgraph(body, [it, active, *merge(carry)])
        new = tuple(
            jnp.where(active, _as_carry(ctx, outs[1 + j], c, f"loop-carried value {j}"), c)
            for j, c in zip(dynamic, carry)
        )
        go_on = _one(ctx, outs[0], "the body's condition output")
        go_on = jnp.logical_and(active, jnp.asarray(go_on).reshape(()).astype(bool))
        return (go_on, new), None

    active0 = jnp.asarray(_one(ctx, cond, "the condition")).reshape(()).astype(bool)
    (_, final), _ = jax.lax.scan(step, (active0, init), jnp.arange(trip), length=trip)
    return tuple(merge(final))


def _loop_while(ctx, body, trip_limit, cond, v_initial, invariant):
    dynamic, init, merge = _split_carried(v_initial, invariant)

    def keep_going(state):
        it, active, _ = state
        return active if trip_limit is None else jnp.logical_and(active, it < trip_limit)

    def step(state):
        it, active, carry = state
        outs = ctx.run_subgraph(body, [it, active, *merge(carry)])
        new = tuple(_as_carry(ctx, outs[1 + j], c, f"loop-carried value {j}") for j, c in zip(dynamic, carry))
        go_on = _one(ctx, outs[0], "the body's condition output")
        return it + 1, jnp.asarray(go_on).reshape(()).astype(bool), new

    active0 = jnp.asarray(True if cond is None else _one(ctx, cond, "the condition")).reshape(()).astype(bool)
    _, _, final = jax.lax.while_loop(keep_going, step, (jnp.asarray(0), active0, init))
    return tuple(merge(final))


# -------------------------------------------------------------------------------------------------------------- If
@register_op("If")
def if_(ctx, cond, *, then_branch: onnx.GraphProto, else_branch: onnx.GraphProto):
    """ONNX ``If``: the outputs of ``then_branch`` where ``cond`` is true, else those of ``else_branch``.

    A condition known at conversion time runs only the chosen branch (whose outputs may then have any shapes); a
    data-dependent one lowers to ``lax.cond``, which needs both branches to give the same shapes and dtypes.
    """
    if cond is not None and is_static(cond):
        taken = bool(np.asarray(_one(ctx, cond, "the condition")).reshape(-1)[0])
        branch = then_branch if taken else else_branch
        return tuple(ctx.run_subgraph(branch, []))

    def run(branch):
        return lambda: tuple(jnp.asarray(o) for o in ctx.run_subgraph(branch, []))

    then_shapes = jax.eval_shape(run(then_branch))
    else_shapes = jax.eval_shape(run(else_branch))

    def describe(outs):
        return [(tuple(o.shape), str(o.dtype)) for o in outs]

    if describe(then_shapes) != describe(else_shapes):
        raise ctx.error(
            f"the condition depends on the model's input and the branches give different outputs: then "
            f"{describe(then_shapes)}, else {describe(else_shapes)}; lax.cond needs equal shapes and dtypes"
        )
    pred = jnp.asarray(_one(ctx, cond, "the condition")).reshape(()).astype(bool)
    return tuple(jax.lax.cond(pred, run(then_branch), run(else_branch)))
