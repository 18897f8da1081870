"""Recurrent ONNX ops: ``RNN``, ``GRU`` and ``LSTM`` (opsets 7-22), a static loop or ``jax.lax.scan`` over time.

Shapes follow the ONNX spec, with ``T`` time steps, ``N`` batch, ``I`` input size, ``H`` hidden size, ``D``
directions (2 for ``direction="bidirectional"``, else 1) and ``G`` gates (``RNN`` 1; ``GRU`` 3 in order z, r, h;
``LSTM`` 4 in order i, o, f, c):

* ``X`` ``[T, N, I]`` (``layout=0``) or ``[N, T, I]`` (``layout=1``);
* ``W`` ``[D, G*H, I]``, ``R`` ``[D, G*H, H]``, ``B`` ``[D, 2*G*H]`` (``Wb`` then ``Rb``), ``P`` ``[D, 3*H]`` (LSTM
  peepholes i, o, f);
* ``sequence_lens`` ``[N]``; ``initial_h`` / ``initial_c`` ``[D, N, H]`` (``layout=1``: ``[N, D, H]``);
* outputs ``Y`` ``[T, D, N, H]`` (``layout=1``: ``[N, T, D, H]``), ``Y_h`` / ``Y_c`` ``[D, N, H]`` (``layout=1``:
  ``[N, D, H]``).

The input projection ``X W^T + Wb`` of every step is one matrix product before the recurrence; each step holds only
the recurrent product and the gate maths. Inside, states are ``[H, N]``: the batch is the minor (contiguous) axis,
so XLA vectorises the gate maths over samples even for tiny hidden sizes (``[N, 10]`` gates ran ~5x slower per
element on CPU), and gate slices are contiguous rows; sequences of at most :data:`UNROLL_MAX_STEPS` steps are then
unrolled statically. A per-sample call (``N = 1`` under ``jax.vmap``, as in per-row Jacobians) keeps ``[N, H]``
and ``jax.lax.scan``; so do gradient kernels, which trace their model with the explicit option ``unroll=0``
(``Model.with_unroll(0)``, read here from ``ctx.unroll``). The reverse direction reads time backwards.

Choices where the spec is silent follow onnxruntime's CPU kernels, the runtime most exporters are checked against:

* ``clip`` bounds every gate pre-activation (peephole and biases included) to ``[-clip, clip]``; the LSTM cell
  state fed to ``h`` is not clipped;
* ``activation_alpha`` / ``activation_beta`` are consumed in order by the activations that take them (``Affine``,
  ``LeakyRelu``, ``ThresholdedRelu``, ``ScaledTanh``, ``HardSigmoid``, ``Elu``); once a list runs out, the ONNX
  defaults apply (``HardSigmoid`` 0.2 / 0.5 -- Keras 2's ``hard_sigmoid``, as tf2onnx emits it -- ``LeakyRelu``
  0.01, ``Elu`` 1, ``ThresholdedRelu`` 1, ``Affine`` 1 / 0, ``ScaledTanh`` 1 / 1);
* ``input_forget=1`` couples the LSTM gates as ``f = 1 - i``;
* with ``sequence_lens``, steps past a sequence's end leave its state unchanged and write zeros to ``Y``; ``Y_h`` /
  ``Y_c`` hold the state after the last valid step (zeros for a sequence of length 0). The reverse direction of
  a shorter sequence starts at its own last valid step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from converters.onnx_to_jax.registry import register_op

__all__ = ["ACTIVATIONS", "UNROLL_MAX_STEPS"]

_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}

#: sequences up to this many steps are unrolled statically; longer ones run in ``jax.lax.scan``
UNROLL_MAX_STEPS = 32


def _max_unrolled_steps(ctx) -> int:
    """The longest sequence to unroll: the call's ``unroll`` option (``ctx.unroll``, set by
    ``Model.with_unroll``), else :data:`UNROLL_MAX_STEPS`."""
    if getattr(ctx, "unroll", None) is not None:
        return int(ctx.unroll)
    return UNROLL_MAX_STEPS


def _hard_sigmoid(x, alpha, beta):
    return jnp.clip(alpha * x + beta, 0.0, 1.0)


def _elu(x, alpha, beta):
    return jnp.where(x >= 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0)))


# lower-case name -> (fn(x, alpha, beta), takes alpha, takes beta, default alpha, default beta)
ACTIVATIONS: dict[str, tuple[Callable, bool, bool, float, float]] = {
    "relu": (lambda x, a, b: jax.nn.relu(x), False, False, 0.0, 0.0),
    "tanh": (lambda x, a, b: jnp.tanh(x), False, False, 0.0, 0.0),
    "sigmoid": (lambda x, a, b: jax.nn.sigmoid(x), False, False, 0.0, 0.0),
    "affine": (lambda x, a, b: a * x + b, True, True, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: jnp.where(x >= 0, x, a * x), True, False, 0.01, 0.0),
    "thresholdedrelu": (lambda x, a, b: jnp.where(x > a, x, 0.0), True, False, 1.0, 0.0),
    "scaledtanh": (lambda x, a, b: a * jnp.tanh(b * x), True, True, 1.0, 1.0),
    "hardsigmoid": (_hard_sigmoid, True, True, 0.2, 0.5),
    "elu": (_elu, True, False, 1.0, 0.0),
    "softsign": (lambda x, a, b: x / (1.0 + jnp.abs(x)), False, False, 0.0, 0.0),
    "softplus": (lambda x, a, b: jax.nn.softplus(x), False, False, 0.0, 0.0),
}


def _activation_fns(ctx, activations, alphas, betas, *, defaults: Sequence[str], n_dirs: int) -> list[list]:
    """The activation functions per direction: ``[[f, g, ...] forward, [f, g, ...] reverse]``."""
    names = list(defaults) * n_dirs if activations is None else list(activations)
    if len(names) != len(defaults) * n_dirs:
        raise ctx.error(
            f"activations={names} has {len(names)} entries, expected {len(defaults)} per direction x {n_dirs} "
            f"direction(s) (e.g. {list(defaults) * n_dirs})"
        )
    alphas, betas = list(alphas or []), list(betas or [])
    fns = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATIONS:
            raise ctx.error(
                f"activation {name!r} is not an ONNX recurrent activation; use one of "
                "Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, "
                "Softplus"
            )
        fn, takes_alpha, takes_beta, alpha, beta = ACTIVATIONS[key]
        if takes_alpha and alphas:
            alpha = float(alphas.pop(0))
        if takes_beta and betas:
            beta = float(betas.pop(0))
        fns.append(lambda x, fn=fn, alpha=alpha, beta=beta: fn(x, alpha, beta))
    k = len(defaults)
    return [fns[d * k : (d + 1) * k] for d in range(n_dirs)]


def _sequence_mask(ctx, sequence_lens, n_steps: int, batch: int):
    """``(mask [T, N] or None, lens [N] or None)``; ``None`` when every sequence is known to be full length."""
    if sequence_lens is None:
        return None, None
    if isinstance(sequence_lens, np.ndarray | np.generic):
        lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
        if lens.shape[0] not in (1, batch):
            raise ctx.error(f"sequence_lens has {lens.shape[0]} entries for a batch of {batch}")
        if np.any(lens < 0) or np.any(lens > n_steps):
            raise ctx.error(f"sequence_lens={lens.tolist()} must lie in [0, {n_steps}] (the sequence length)")
        if np.all(lens == n_steps):
            return None, None
        lens = np.broadcast_to(lens, (batch,))
        return np.arange(n_steps)[:, None] < lens[None, :], lens
    lens = jnp.asarray(sequence_lens).reshape(-1)
    lens = jnp.broadcast_to(lens, (batch,))
    return jnp.arange(n_steps)[:, None] < lens[None, :], lens


def _recurrent(
    ctx,
    kind: str,
    X,
    W,
    R,
    B,
    sequence_lens,
    initial_h,
    initial_c,
    P,
    *,
    activations,
    activation_alpha,
    activation_beta,
    clip,
    direction: str,
    hidden_size,
    layout: int,
    input_forget: int = 0,
    linear_before_reset: int = 0,
):
    """The shared body of ``RNN`` / ``GRU`` / ``LSTM`` (``kind``); returns ``(Y, Y_h)`` or ``(Y, Y_h, Y_c)``."""
    n_gates, defaults = {
        "RNN": (1, ["Tanh"]),
        "GRU": (3, ["Sigmoid", "Tanh"]),
        "LSTM": (4, ["Sigmoid", "Tanh", "Tanh"]),
    }[kind]
    if direction not in _DIRECTIONS:
        raise ctx.error(f"direction={direction!r} is not one of {sorted(_DIRECTIONS)}")
    if layout not in (0, 1):
        raise ctx.error(f"layout={layout!r} must be 0 ([T, N, I]) or 1 ([N, T, I])")
    n_dirs = _DIRECTIONS[direction]
    X = jnp.asarray(X)
    dtype = X.dtype
    if X.ndim != 3:
        raise ctx.error(f"X must have 3 axes, got shape {X.shape}")
    if layout == 1:
        X = jnp.swapaxes(X, 0, 1)
    n_steps, batch, n_in = X.shape
    if n_steps == 0:
        raise ctx.error(f"X {tuple(X.shape)} has no time steps")
    if W.ndim != 3 or R.ndim != 3:
        raise ctx.error(f"W and R must have 3 axes [directions, gates * hidden, ...], got {W.shape} and {R.shape}")
    W = jnp.asarray(W, dtype)
    R = jnp.asarray(R, dtype)
    H = R.shape[-1]
    if hidden_size is not None and int(hidden_size) != H:
        raise ctx.error(f"hidden_size={hidden_size} does not match R's last axis {H} (R shape {R.shape})")
    if W.shape[0] != n_dirs or W.shape[1] != n_gates * H or R.shape != (n_dirs, n_gates * H, H):
        raise ctx.error(
            f"direction={direction!r} with hidden size {H} needs W [{n_dirs}, {n_gates * H}, input_size] and R "
            f"[{n_dirs}, {n_gates * H}, {H}], got W {W.shape} and R {R.shape}"
        )
    if W.shape[2] != n_in:
        raise ctx.error(f"W {W.shape} expects {W.shape[2]} input features, but X {tuple(X.shape)} has {n_in}")
    if B is not None and tuple(B.shape) != (n_dirs, 2 * n_gates * H):
        raise ctx.error(f"B must have shape [{n_dirs}, {2 * n_gates * H}], got {list(B.shape)}")
    if P is not None and kind == "LSTM" and tuple(P.shape) != (n_dirs, 3 * H):
        raise ctx.error(f"P must have shape [{n_dirs}, {3 * H}], got {list(P.shape)}")
    for name, v in (("initial_h", initial_h), ("initial_c", initial_c)):
        want = (batch, n_dirs, H) if layout == 1 else (n_dirs, batch, H)
        batch_axis = 0 if layout == 1 else 1
        if v is not None and (
            v.ndim != 3 or any(v.shape[i] != want[i] for i in range(3) if i != batch_axis)
            or v.shape[batch_axis] not in (1, batch)
        ):
            raise ctx.error(f"{name} must have shape {list(want)}, got {list(v.shape)}")
    Wb = Rb = jnp.zeros((n_dirs, n_gates * H), dtype)
    if B is not None:
        B = jnp.asarray(B, dtype).reshape(n_dirs, 2 * n_gates * H)
        Wb, Rb = B[:, : n_gates * H], B[:, n_gates * H :]

    # Layout. A real batch (N > 1, the whole chunk through the graph) keeps states as [H, N]: the batch is the
    # minor axis, so the gate maths is vectorised over samples even for tiny hidden sizes, and gates are row
    # slices. A per-sample call (N = 1, batched by jax.vmap from outside) keeps [N, H]: vmap puts its batch in
    # front, and that path (reverse-mode per sample) measured faster with the classic layout and a scan.
    minor = batch > 1
    if minor:
        mm = lambda M, v: M @ v
        part = lambda z, a, b: z[a:b]
        vec = lambda v: v[:, None]
        keep_of = lambda m: m[None, :]
    else:
        mm = lambda M, v: v @ M.T
        part = lambda z, a, b: z[:, a:b]
        vec = lambda v: v[None, :]
        keep_of = lambda m: m[:, None]

    def initial(v):  # -> [D, N, H]
        if v is None:
            return jnp.zeros((n_dirs, batch, H), dtype)
        v = jnp.asarray(v, dtype)
        if layout == 1:
            v = jnp.swapaxes(v, 0, 1)
        return jnp.broadcast_to(v, (n_dirs, batch, H))

    h0 = initial(initial_h)
    c0 = initial(initial_c) if kind == "LSTM" else None
    if minor:
        h0 = jnp.swapaxes(h0, 1, 2)
        c0 = None if c0 is None else jnp.swapaxes(c0, 1, 2)
    peep = None
    if kind == "LSTM" and P is not None:  # i, o, f: [D, H] each
        peep = jnp.split(jnp.asarray(P, dtype).reshape(n_dirs, 3 * H), 3, axis=-1)
    acts = _activation_fns(
        ctx, activations, activation_alpha, activation_beta, defaults=defaults, n_dirs=n_dirs
    )
    mask, lens = _sequence_mask(ctx, sequence_lens, n_steps, batch)

    # Input projections of all steps at once, [D, T, G*H, N] (minor) or [D, T, N, G*H]. Every bias that is simply
    # added before an activation goes in here; GRU with linear_before_reset keeps Rbh for the reset-gated term.
    proj_bias = Wb + Rb
    if kind == "GRU" and linear_before_reset:
        proj_bias = Wb + Rb.at[:, 2 * H :].set(0.0)
    # A function traced for one reverse-mode derivative (ctx.reverse_only) runs each LSTM direction of a real batch
    # as a custom VJP with a hand-written backward scan (_lstm_scan_reverse_only, which projects the inputs itself);
    # everything else keeps the lowering below, which JAX differentiates in any mode.
    custom_vjp = kind == "LSTM" and minor and ctx.reverse_only
    if custom_vjp:
        xw = None
    elif minor:
        xw = jnp.einsum("tni,dgi->dtgn", X, W) + proj_bias[:, None, :, None]
    else:
        xw = jnp.einsum("tni,dgi->dtng", X, W) + proj_bias[:, None, None, :]
    reverse = [direction == "reverse" or d == 1 for d in range(n_dirs)]
    bound = None if clip is None else float(clip)

    def clipped(v):
        return v if bound is None else jnp.clip(v, -bound, bound)

    def cell(d, state, xw_t):
        """One step of direction ``d`` (arrays in the layout chosen above)."""
        Rd = R[d]
        if kind == "RNN":
            (h,) = state
            (f,) = acts[d]
            return (f(clipped(xw_t + mm(Rd, h))),)
        if kind == "GRU":
            (h,) = state
            f, g = acts[d]
            zr = part(xw_t, 0, 2 * H) + mm(Rd[: 2 * H], h)
            z = f(clipped(part(zr, 0, H)))
            r = f(clipped(part(zr, H, 2 * H)))
            if linear_before_reset:
                pre = part(xw_t, 2 * H, 3 * H) + r * (mm(Rd[2 * H :], h) + vec(Rb[d, 2 * H :]))
            else:
                pre = part(xw_t, 2 * H, 3 * H) + mm(Rd[2 * H :], r * h)
            return ((1.0 - z) * g(clipped(pre)) + z * h,)
        h, c = state
        f, g, act_h = acts[d]
        gates = xw_t + mm(Rd, h)
        gi, go, gf, gc = (part(gates, k * H, (k + 1) * H) for k in range(4))
        if peep is not None:
            gi = gi + vec(peep[0][d]) * c
            gf = gf + vec(peep[2][d]) * c
        i = f(clipped(gi))
        forget = 1.0 - i if input_forget else f(clipped(gf))
        c_new = forget * c + i * g(clipped(gc))
        if peep is not None:
            go = go + vec(peep[1][d]) * c_new
        o = f(clipped(go))
        return (o * act_h(c_new), c_new)

    def step(d, state, xw_t, m_t):
        new = cell(d, state, xw_t)
        if m_t is None:
            return new, new[0]
        keep = keep_of(m_t)
        new = tuple(jnp.where(keep, n, s) for n, s in zip(new, state))
        return new, jnp.where(keep, new[0], jnp.zeros_like(new[0]))

    init = [(h0[d],) if c0 is None else (h0[d], c0[d]) for d in range(n_dirs)]
    final, ys = [], []
    for d in range(n_dirs):
        m_d = None if mask is None else jnp.asarray(mask[::-1] if reverse[d] else mask)
        if custom_vjp:
            peep_d = None if peep is None else tuple(p[d] for p in peep)
            y_d, h_d, c_d = _lstm_scan_reverse_only(
                tuple(acts[d]), bound, bool(input_forget), X[::-1] if reverse[d] else X, W[d], proj_bias[d], R[d],
                peep_d, h0[d], c0[d], m_d,
            )
            state = (h_d, c_d)
        elif minor and n_steps <= _max_unrolled_steps(ctx):
            # Short sequences over a real batch: a static Python loop. XLA:CPU then fuses each step's gate maths
            # with static slices; a while loop pays a dynamic slice and a buffer round trip per step (measured
            # 3-4x slower on the seed-001 LSTM over 4096 rows, 2-core CPU).
            xw_d = xw[d, ::-1] if reverse[d] else xw[d]  # [T, ...] in the order this direction reads
            state, out = init[d], []
            for t in range(n_steps):
                state, y = step(d, state, xw_d[t], None if m_d is None else m_d[t])
                out.append(y)
            y_d = jnp.stack(out)
        else:
            xw_d = xw[d, ::-1] if reverse[d] else xw[d]
            state, y_d = jax.lax.scan(lambda s, a, d=d: step(d, s, a[0], a[1]), init[d], (xw_d, m_d))
        final.append(state)
        ys.append(y_d[::-1] if reverse[d] else y_d)  # [T, H, N] (minor) or [T, N, H]

    Y = jnp.stack(ys, axis=1)  # [T, D, ...]
    Y_h = jnp.stack([s[0] for s in final])  # [D, ...]
    Y_c = jnp.stack([s[1] for s in final]) if kind == "LSTM" else None
    if minor:  # back to the ONNX layout: [T, D, N, H] and [D, N, H]
        Y = jnp.swapaxes(Y, 2, 3)
        Y_h = jnp.swapaxes(Y_h, 1, 2)
        Y_c = None if Y_c is None else jnp.swapaxes(Y_c, 1, 2)
    if lens is not None:
        started = (jnp.asarray(lens) > 0)[None, :, None]
        Y_h = jnp.where(started, Y_h, jnp.zeros_like(Y_h))
        Y_c = None if Y_c is None else jnp.where(started, Y_c, jnp.zeros_like(Y_c))
    if layout == 1:
        Y = jnp.transpose(Y, (2, 0, 1, 3))
        Y_h = jnp.swapaxes(Y_h, 0, 1)
        Y_c = None if Y_c is None else jnp.swapaxes(Y_c, 0, 1)
    return (Y, Y_h) if Y_c is None else (Y, Y_h, Y_c)


def _lstm_scan_reverse_only(acts, bound, input_forget: bool, X, W, b, R, peep, h0, c0, mask):
    """One LSTM direction over a real batch, states ``[H, N]``, as a ``jax.custom_vjp`` with a hand-written
    pull-back, for functions traced :meth:`~converters.onnx_to_jax.graph.OnnxFunction.with_reverse_only`.

    Args: ``X`` ``[T, N, I]`` in this direction's reading order, ``W`` ``[4H, I]``, ``b`` ``[4H]`` (``Wb + Rb``),
    ``R`` ``[4H, H]``, ``peep`` ``(Pi, Po, Pf)`` ``[H]`` each or ``None``, ``h0`` / ``c0`` ``[H, N]``, ``mask``
    ``[T, N]`` or ``None``; ``acts`` ``(f, g, h)`` elementwise; ``bound`` the clip or ``None``. Returns ``(Y [T, H,
    N], h_T, c_T)``, the values of :func:`_recurrent`'s loop.

    A step's derivative is linear in the incoming cotangents ``dh`` (of ``h_t``, plus ``Y_t``'s) and ``dc`` (of
    ``c_t``), with coefficients that depend on the forward pass only, so the forward scan stores them per step:
    ``dc' = dc + dh kc`` (``kc = o h'(c_t)``, plus ``Po`` times ``ko`` with peepholes), the gate cotangents ``dz =
    [dc' ki, dh ko, dc' kf, dc' kg]`` as one ``[4H, N]`` array (``ki = g(zc) f'(zi)``, ``ko = h(c_t) f'(zo)``, ``kf
    = c_{t-1} f'(zf)``, ``kg = i g'(zc)``; ``input_forget``: ``ki = (g(zc) - c_{t-1}) f'(zi)``, ``kf = 0``) and
    ``dc_{t-1} = dc' kp`` (``kp = f + ki Pi + kf Pf``). The activations' derivatives (clip included) come from
    ``jax.jvp`` of the activations themselves, so every ONNX activation is handled. The backward scan
    (:func:`_lstm_backward_scan`) is then, per step, one elementwise fusion and one product ``[W R]^T dz`` giving
    ``dx_t`` and ``dh_{t-1}`` together; it never re-evaluates an activation, which matters because a Jacobian runs
    it for one cotangent per output. What does not feed the recurrence is batched over all steps after the loop:
    ``dW``, ``dR`` and ``db`` are contractions of the stacked gate cotangents, the peepholes' gradients sums (XLA
    drops them, and the stacked cotangents, when nobody reads them, as in a Jacobian with respect to the inputs).
    Forward mode (``jax.jvp``) of this function is refused by JAX (``custom_vjp`` functions have no JVP rule).
    """
    f, g, act_h = acts
    H = R.shape[-1]
    # (the rules below read the weights and states from their arguments only: custom_vjp functions must not close
    # over the values being differentiated)

    def act(fn, z, clip=True):  # a gate's activation of its clipped pre-activation; the cell state is not clipped
        return fn(z if bound is None or not clip else jnp.clip(z, -bound, bound))

    def act_d(fn, z, clip=True):  # (value, derivative) of act(fn, z), elementwise
        return jax.jvp(lambda v: act(fn, v, clip), (z,), (jnp.ones_like(z),))

    def cell(R, peep, h, c, xw_t, coefficients: bool):
        z = xw_t + R @ h  # [4H, N]: i, o, f, c
        zi, zo, zf, zc = (z[k * H : (k + 1) * H] for k in range(4))
        if peep is not None:
            zi = zi + peep[0][:, None] * c
            zf = zf + peep[2][:, None] * c
        if not coefficients:
            i = act(f, zi)
            forget = 1.0 - i if input_forget else act(f, zf)
            c_new = forget * c + i * act(g, zc)
            if peep is not None:
                zo = zo + peep[1][:, None] * c_new
            return act(f, zo) * act(act_h, c_new, clip=False), c_new, None
        i, di = act_d(f, zi)
        gc, dg = act_d(g, zc)
        if input_forget:
            forget = 1.0 - i
            ki, kf = (gc - c) * di, jnp.zeros_like(c)
        else:
            forget, dfz = act_d(f, zf)
            ki, kf = gc * di, c * dfz
        c_new = forget * c + i * gc
        if peep is not None:
            zo = zo + peep[1][:, None] * c_new
        o, do = act_d(f, zo)
        a, da = act_d(act_h, c_new, clip=False)
        ko = a * do
        kc, kp = o * da, forget
        if peep is not None:
            kc = kc + ko * peep[1][:, None]
            kp = kp + ki * peep[0][:, None] + kf * peep[2][:, None]
        return o * a, c_new, (jnp.concatenate([ki, ko, kf, i * dg]), kc, kp)

    def scan(X, W, b, R, peep, h0, c0, mask, coefficients: bool):
        xw = jnp.einsum("tni,gi->tgn", X, W) + b[None, :, None]  # every step's input projection, one product

        def step(carry, inputs):
            h, c = carry
            xw_t, m_t = inputs
            h_new, c_new, k = cell(R, peep, h, c, xw_t, coefficients)
            c_out = c_new if coefficients and peep is not None else None  # for the peepholes' gradients
            if m_t is None:
                return (h_new, c_new), (h_new, k, None, c_out)
            keep = m_t[None, :]
            h_s, c_s = jnp.where(keep, h_new, h), jnp.where(keep, c_new, c)
            y = jnp.where(keep, h_new, jnp.zeros_like(h_new))
            return (h_s, c_s), (y, k, h_s if coefficients else None, None if c_out is None else c_s)

        (h_T, c_T), (ys, ks, hs, cs) = jax.lax.scan(step, (h0, c0), (xw, mask))
        return (ys, h_T, c_T), (ks, ys if hs is None else hs, cs)

    @jax.custom_vjp
    def run(X, W, b, R, peep, h0, c0, mask):
        return scan(X, W, b, R, peep, h0, c0, mask, False)[0]

    def run_fwd(X, W, b, R, peep, h0, c0, mask):
        out, (ks, hs, cs) = scan(X, W, b, R, peep, h0, c0, mask, True)
        return out, (ks, hs, cs, X, W, R, peep, h0, c0, mask)

    def run_bwd(res, cts):
        (k_gates, k_c, k_prev), hs, cs, X, W, R, peep, h0, c0, mask = res
        WR = jnp.concatenate([W, R], axis=1)  # [4H, I + H]
        dxs, dzs, dh0, dc0 = _lstm_backward_scan(1)(WR, k_gates, k_c, k_prev, mask, *cts)
        dX = jnp.swapaxes(dxs, 1, 2)  # [T, N, I]
        dW = jnp.einsum("tgn,tni->gi", dzs, X)
        dR = jnp.einsum("tgn,thn->gh", dzs, jnp.concatenate([h0[None], hs[:-1]]))
        dpeep = None
        if peep is not None:
            c_prev = jnp.concatenate([c0[None], cs[:-1]])
            dzi, dzo, dzf = dzs[:, :H], dzs[:, H : 2 * H], dzs[:, 2 * H : 3 * H]
            dpeep = (
                jnp.einsum("thn,thn->h", dzi, c_prev),
                jnp.einsum("thn,thn->h", dzo, cs),
                jnp.einsum("thn,thn->h", dzf, c_prev),
            )
        return dX, dW, jnp.sum(dzs, axis=(0, 2)), dR, dpeep, dh0, dc0, None

    run.defvjp(run_fwd, run_bwd)
    return run(X, W, b, R, peep, h0, c0, mask)


def _lstm_backward_scan(n_ct: int):
    """The backward scan of :func:`_lstm_scan_reverse_only` for ``n_ct`` cotangents folded into the batch axis.

    ``(WR [4H, I + H], k_gates [T, 4H, N], k_c, k_prev [T, H, N], mask [T, N] or None, dys [T, H, n_ct * N], dh_T,
    dc_T [H, n_ct * N]) -> (dxs [T, I, n_ct * N], dzs [T, 4H, n_ct * N], dh0, dc0 [H, n_ct * N])``. Under
    ``jax.vmap`` over cotangents (a Jacobian's pull-backs) a ``custom_vmap`` rule folds the mapped axis into the
    batch axis instead of leaving it in front: each step stays one elementwise fusion over ``[H, n_ct, N]`` and one
    ``[I + H, 4H] x [4H, n_ct * N]`` product in the layout the GEMM wants (vmap's own batching puts the cotangents
    in front, and XLA then transposed ``dz`` around every step's product).
    """

    def loop(WR, k_gates, k_c, k_prev, mask, dys, dh_T, dc_T):
        n, n_in = k_c.shape[-1], WR.shape[1] - k_c.shape[1]

        is_o = (np.arange(4) == 1)[:, None, None, None]  # the output gate's cotangent is dh's, the others dc's

        def spread(v):  # [rows, n_ct * N] -> [rows, n_ct, N]
            return v.reshape(v.shape[0], n_ct, n)

        def back(carry, inputs):
            dh, dc = carry  # cotangents of the state after this step, [H, n_ct, N]
            dy, kz, kc, kp, m_t = inputs
            dh_in = dh + spread(dy)
            if m_t is not None:  # a finished sequence passes its state through; the cell gets nothing
                keep = m_t[None, None, :]
                zero = jnp.zeros_like(dh)
                dh_in, dh_pass = jnp.where(keep, dh_in, zero), jnp.where(keep, zero, dh)
                dc, dc_pass = jnp.where(keep, dc, zero), jnp.where(keep, zero, dc)
            dcn = dc + dh_in * kc[:, None, :]
            # [dc' ki, dh ko, dc' kf, dc' kg] as [4, H, n_ct, N]: a select on the gate index, not a concatenate
            # (XLA:CPU vectorised the select ~2x better than a fused concatenate)
            dz = jnp.where(is_o, dh_in[None], dcn[None]) * kz.reshape(4, -1, 1, n)
            dz = dz.reshape(kz.shape[0], -1)  # [4H, n_ct * N]
            dxh = WR.T @ dz  # [I + H, n_ct * N]: dx_t and dh_{t-1}, one product
            dh_prev, dc_prev = spread(dxh[n_in:]), dcn * kp[:, None, :]
            if m_t is not None:
                dh_prev, dc_prev = dh_prev + dh_pass, dc_prev + dc_pass
            return (dh_prev, dc_prev), (dxh[:n_in], dz)

        (dh0, dc0), (dxs, dzs) = jax.lax.scan(
            back, (spread(dh_T), spread(dc_T)), (dys, k_gates, k_c, k_prev, mask), reverse=True
        )
        return dxs, dzs, dh0.reshape(dh_T.shape), dc0.reshape(dc_T.shape)

    @jax.custom_batching.custom_vmap
    def run(WR, k_gates, k_c, k_prev, mask, dys, dh_T, dc_T):
        return loop(WR, k_gates, k_c, k_prev, mask, dys, dh_T, dc_T)

    @run.def_vmap
    def run_vmap(axis_size, in_batched, WR, k_gates, k_c, k_prev, mask, dys, dh_T, dc_T):
        if any(jax.tree_util.tree_leaves(in_batched[:5])):  # batched weights or forward pass: vmap's own rule
            axes = [jax.tree_util.tree_map(lambda b: 0 if b else None, b) for b in in_batched]
            out = jax.vmap(loop, in_axes=axes)(WR, k_gates, k_c, k_prev, mask, dys, dh_T, dc_T)
            return out, (True,) * 4
        n = k_c.shape[-1]

        def fold(v, batched):  # [B, *lead, n_ct * N] -> [*lead, B * n_ct * N]
            if not batched:
                v = jnp.broadcast_to(v, (axis_size, *v.shape))
            lead = v.shape[1:-1]
            v = jnp.moveaxis(v.reshape(axis_size, *lead, n_ct, n), 0, -3)
            return v.reshape(*lead, axis_size * n_ct * n)

        def unfold(v):  # the inverse
            lead = v.shape[:-1]
            v = jnp.moveaxis(v.reshape(*lead, axis_size, n_ct, n), -3, 0)
            return v.reshape(axis_size, *lead, n_ct * n)

        cts = [fold(v, b) for v, b in zip((dys, dh_T, dc_T), in_batched[5:])]
        out = _lstm_backward_scan(axis_size * n_ct)(WR, k_gates, k_c, k_prev, mask, *cts)
        return tuple(unfold(v) for v in out), (True,) * 4

    return run


@register_op("RNN")
def rnn(
    ctx,
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    layout=0,
    output_sequence=0,
):
    """Elman RNN: ``H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)``; returns ``(Y, Y_h)`` (shapes in the module doc).

    ``output_sequence`` (opset 1 only) is accepted and ignored: ``Y`` is always computed.
    """
    return _recurrent(
        ctx,
        "RNN",
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        None,
        None,
        activations=activations,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        layout=layout,
    )


@register_op("GRU")
def gru(
    ctx,
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    layout=0,
    linear_before_reset=0,
    output_sequence=0,
):
    """GRU, gates z, r, h; returns ``(Y, Y_h)``.

    ``z = f(X Wz^T + H Rz^T + Wbz + Rbz)``, ``r = f(X Wr^T + H Rr^T + Wbr + Rbr)``,
    ``h = g(X Wh^T + (r * H) Rh^T + Rbh + Wbh)`` (``linear_before_reset=1``: ``g(X Wh^T + r * (H Rh^T + Rbh) +
    Wbh)``, PyTorch's and Keras's ``reset_after``), ``H' = (1 - z) * h + z * H``.
    """
    return _recurrent(
        ctx,
        "GRU",
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        None,
        None,
        activations=activations,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        layout=layout,
        linear_before_reset=linear_before_reset,
    )


@register_op("LSTM")
def lstm(
    ctx,
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    initial_c=None,
    P=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    input_forget=0,
    layout=0,
    output_sequence=0,
):
    """LSTM, gates i, o, f, c, optional peepholes ``P`` (i, o, f); returns ``(Y, Y_h, Y_c)``.

    ``i = f(X Wi^T + H Ri^T + Pi * C + Wbi + Rbi)``, ``f = f(... Pf * C ...)`` (``1 - i`` if ``input_forget``),
    ``c = g(X Wc^T + H Rc^T + Wbc + Rbc)``, ``C' = f * C + i * c``, ``o = f(... Po * C' ...)``, ``H' = o * h(C')``.
    """
    return _recurrent(
        ctx,
        "LSTM",
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        initial_c,
        P,
        activations=activations,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        layout=layout,
        input_forget=input_forget,
    )
