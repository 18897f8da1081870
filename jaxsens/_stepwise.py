r"""``stepwise``: forward stepwise addition / backward stepwise elimination of inputs, retraining the network.

Olden, Joy & Death (2004) list forward stepwise addition and backward stepwise elimination among the classic
ways to rank the inputs of a neural network: networks are retrained on growing (or shrinking) input sets and
the inputs are ranked by the error change at the step where they enter (or leave). Here the model's own dense
architecture (layer sizes and activations from ``model.dense_layers()``) is retrained with optax; an input that
is "out" is multiplied by 0 (the architecture stays fixed), so the candidates of one step differ only in their
input mask and are trained together with ``jax.vmap``: one step costs about one training run on an accelerator,
and every step reuses the same compiled program.

Retraining needs the rows together, so this method does not stream: the training (and validation) rows are read
through the data layer, chunk by chunk, into memory, at most ``max_rows`` of them.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from converters.errors import ArgumentError, ArgumentTypeError, DataError
from jaxsens._checks import check_model
from jaxsens._data import chunk_dtype, iter_chunks, open_xy
from jaxsens._dense import DenseStack, activation_fn
from jaxsens._method import Call, Method, Option
from jaxsens._metrics import METRIC_CHOICES
from jaxsens._results import Result, finish_figure, pyplot, result_class
from jaxsens._stats import N_BOOT, bootstrap_stderr, poisson_weights

__all__ = [
    "SPEC",
    "StepwiseCostWarning",
    "StepwiseResult",
    "estimate_stepwise_cost",
    "run_stepwise",
    "stepwise",
]

MAX_ROWS = 1_000_000
"""Default bound on the rows held in memory for retraining (training and, separately, validation rows)."""

_READ_ROWS = 8192  # rows per chunk read from the data when batch_size is None (does not change the result)


@result_class
class StepwiseResult(Result):
    r"""Outcome of :func:`stepwise`: the inputs in the order they entered (forward) or left (backward).

    ``importance`` ``[n_features]`` (outputs aggregated: ``output_names == ()``) is the error change at each
    input's step: :math:`E_{s-1} - E_s` when the input entered at step :math:`s` (forward), :math:`E_s -
    E_{s-1}` when it left (backward), :math:`E` the ``metric`` of the retrained network on the evaluation rows;
    NaN for inputs that no step reached (``max_steps``), which :meth:`ranking` puts last. ``stderr`` (same
    shape, NaN where ``importance`` is) is a paired Poisson bootstrap over the evaluation rows of the per-row
    loss difference between the two networks (see :attr:`stderr_rule`): it measures how much the error change
    depends on the evaluation rows, with the two trained networks held fixed, not the spread over retrainings
    (initial weights, minibatch order: that is ``key``'s).

    Attributes (besides those of :class:`jaxsens.Result`; ``n_samples`` counts the training rows):
        direction: ``"forward"`` or ``"backward"``.
        order: feature names in the order they entered (forward) or left (backward) the input set.
        order_index: ``[n_steps]`` the same as feature indices.
        errors: ``[n_steps]`` error of the network retrained after each step (``metric``).
        baseline: error before the first step: no inputs (forward) or all inputs (backward).
        candidate_errors: ``[n_steps, n_features]`` error of every candidate tried at each step (NaN: not a
            candidate at that step).
        metric: ``"mse"`` or ``"log_loss"`` (the training loss, also the reported error).
        estimate: the cost estimate made before training (:func:`estimate_stepwise_cost`'s dict), or ``None``.
        n_eval: rows the errors were measured on (the validation rows, or the training rows).

    Deprecated field names: ``baseline_error`` -> ``baseline``.
    """

    direction: str
    order: tuple[str, ...]
    order_index: np.ndarray
    errors: np.ndarray
    baseline: float
    candidate_errors: np.ndarray
    metric: str
    estimate: dict | None = None
    n_eval: int = 0

    stderr_rule: ClassVar[str] = (
        f"paired Poisson bootstrap ({N_BOOT} replicates) over the evaluation rows of the per-row loss difference "
        "between the networks before and after the input's step (networks held fixed); NaN where no step reached"
    )
    _aliases: ClassVar[dict[str, str]] = {"baseline_error": "baseline"}

    def __post_init__(self):
        super().__post_init__()
        set_ = object.__setattr__
        set_(self, "order", tuple(str(n) for n in self.order))
        set_(self, "order_index", np.asarray(self.order_index, np.int64).reshape(-1))
        set_(self, "errors", np.asarray(self.errors, np.float64).reshape(-1))
        set_(self, "candidate_errors", np.asarray(self.candidate_errors, np.float64))
        set_(self, "baseline", float(self.baseline))
        set_(self, "n_eval", int(self.n_eval))
        if self.direction not in ("forward", "backward"):
            raise ArgumentError(
                f"StepwiseResult: direction must be 'forward' or 'backward', got {self.direction!r}"
            )

    @property
    def importance_label(self) -> str:
        if self.direction == "backward":
            return f"{self.metric} increase when the input left (retrained)"
        return f"{self.metric} decrease when the input entered (retrained)"

    def _extra_columns(self) -> dict[str, np.ndarray]:
        """``selection_step`` (1-based step at which the input entered / left; NaN: not reached) and
        ``error_after`` (the error after that step)."""
        step = np.full(self.n_features, np.nan)
        after = np.full(self.n_features, np.nan)
        for s, j in enumerate(np.asarray(self.order_index, np.int64)):
            step[j], after[j] = s + 1, self.errors[s]
        return {"selection_step": step, "error_after": after}

    def plot_steps(self, *, path: str | os.PathLike | None = None):
        """The error after each step (a curve), each step labelled with the input that entered / left.

        Returns the matplotlib ``Figure`` (also saved to ``path`` when given).
        """
        plt = pyplot()
        n = len(self.errors)
        fig, ax = plt.subplots(figsize=(min(4 + 0.3 * n, 24), 4))
        steps = np.arange(0, n + 1)
        ax.plot(
            steps,
            np.concatenate([[self.baseline], self.errors]),
            marker="o",
            label=f"{self.metric} after the step",
        )
        sign = "+" if self.direction == "forward" else "-"
        start = "no inputs" if self.direction == "forward" else "all inputs"
        ax.set_xticks(
            steps,
            [start] + [f"{sign}{name}" for name in self.order],
            rotation=45 if n > 4 else 0,
            ha="right" if n > 4 else "center",
            fontsize="small" if n > 30 else None,
        )
        ax.set_xlabel(
            "step (input that entered)" if self.direction == "forward" else "step (input that left)"
        )
        ax.set_ylabel(f"{self.metric} on {self.n_eval} evaluation rows")
        ax.set_title(f"stepwise {self.direction}: {n} of {self.n_features} steps, networks retrained")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        return finish_figure(fig, path)


# -------------------------------------------------------------------------------------------- training kernel
def init_params(key, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
    """Glorot-uniform weights, zero biases, for layer sizes ``(n_in, h_1, ..., n_out)`` (Keras' defaults)."""
    params = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        limit = np.sqrt(6.0 / (n_in + n_out))
        W = jax.random.uniform(jax.random.fold_in(key, i), (n_in, n_out), jnp.float32, -limit, limit)
        params.append({"W": W, "b": jnp.zeros((n_out,), jnp.float32)})
    return params


def _loss(params, xs, ys, *, activations, loss):
    """Mean loss of a batch ``xs`` ``[n, n_in]`` against ``ys`` ``[n, n_out]``."""
    hidden = DenseStack(activations[:-1])(params[:-1], xs)
    z = hidden @ params[-1]["W"] + params[-1]["b"]
    last = activations[-1]
    if loss == "mse":
        return jnp.mean((activation_fn(last)(z) - ys) ** 2)
    if last[0] in ("softmax", "log_softmax"):
        return jnp.mean(optax.softmax_cross_entropy(z, ys))
    return jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(z, ys), axis=-1))


def _row_losses(params, xs, ys, *, activations, loss):
    """Per-row loss ``[n]`` whose mean over rows is :func:`_loss` (the mean over outputs for ``mse``; the
    softmax cross-entropy, or the sum over outputs of the sigmoid cross-entropy, for ``cross_entropy``)."""
    hidden = DenseStack(activations[:-1])(params[:-1], xs)
    z = hidden @ params[-1]["W"] + params[-1]["b"]
    last = activations[-1]
    if loss == "mse":
        return jnp.mean((activation_fn(last)(z) - ys) ** 2, axis=-1)
    if last[0] in ("softmax", "log_softmax"):
        return optax.softmax_cross_entropy(z, ys)
    return jnp.sum(optax.sigmoid_binary_cross_entropy(z, ys), axis=-1)


def fit(init, mask, X, y, key, learning_rate, epochs, *, activations, loss, batch_size):
    """Train one dense stack with Adam on ``X * mask``; returns the trained params.

    Args:
        init: initial params ``[{"W", "b"}, ...]``.
        mask: ``[n_features]`` 0/1 input mask.
        X, y: ``[n_samples, n_features]``, ``[n_samples, n_outputs]``.
        key: shuffling key (minibatch order of epoch ``e`` is ``permutation(fold_in(key, e))``).
        learning_rate: Adam step size (a traced scalar: changing it does not recompile).
        epochs: passes over ``X`` (a traced integer: changing it does not recompile, so a cost probe of a few
            epochs compiles the program the full run uses).
        activations, loss, batch_size: static settings.
    """
    opt = optax.adam(learning_rate)
    n = X.shape[0]
    n_batches = max(n // batch_size, 1)
    loss_fn = functools.partial(_loss, activations=activations, loss=loss)

    def step(carry, batch):
        p, s = carry
        xs, ys = batch
        grads = jax.grad(loss_fn)(p, xs * mask, ys)  # X is shared by the vmapped candidates, the mask is not
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), None

    def epoch(e, carry):
        if batch_size >= n:
            return step(carry, (X, y))[0]
        idx = jax.random.permutation(jax.random.fold_in(key, e), n)[: n_batches * batch_size]
        idx = idx.reshape(n_batches, batch_size)
        return jax.lax.scan(step, carry, (X[idx], y[idx]))[0]

    params, _ = jax.lax.fori_loop(0, epochs, epoch, (init, opt.init(init)))
    return params


@functools.partial(jax.jit, static_argnames=("activations", "loss", "batch_size"))
def _step_errors(
    masks, init, X, y, X_eval, y_eval, key, learning_rate, *, activations, loss, epochs, batch_size
):
    """Train one network per row of ``masks`` ``[n_candidates, n_features]`` (vmapped); their eval errors
    ``[n_candidates]`` and per-row eval losses ``[n_candidates, n_eval]`` (for the bootstrap stderr).

    ``epochs`` is traced: one compiled program per (group size, data shape, architecture), whatever the epochs.
    ``batch_size`` here is :func:`fit`'s training minibatch (the public option ``minibatch_size``).
    """

    def one(mask):
        p = fit(
            init,
            mask,
            X,
            y,
            key,
            learning_rate,
            epochs,
            activations=activations,
            loss=loss,
            batch_size=batch_size,
        )
        xs = X_eval * mask
        return (
            _loss(p, xs, y_eval, activations=activations, loss=loss),
            _row_losses(p, xs, y_eval, activations=activations, loss=loss),
        )

    return jax.vmap(one)(masks)


# -------------------------------------------------------------------------------------------- plan and cost
# Candidates of a step are trained in vmapped groups of equal size (one compiled program; the last group of a
# step is padded with copies of the current input set). On 2 CPU cores with 2,000 rows vmapping brought no
# throughput gain once one network's matmuls fill the cores (seed-000 shape: 48 ms per network-epoch in a group
# of 83, 45 ms alone; bench/stepwise.py, bench/results/stepwise.json), while a batch of 83 such networks holds
# ~5 GB and pads every later step to 83 networks; vmapping pays where one network is too small for the device
# (few rows, an accelerator). So the automatic group (auto_group) trains large networks one at a time on a
# CPU, and elsewhere keeps a group's training memory under this budget.
_GROUP_BYTES = 512 << 20
# FLOPs per network-epoch above which a CPU trains candidates one at a time: 82 -> 64 -> 64 -> 2 on 2,000 rows
# is 1.1e8 (a loop as fast as groups of 8), on 200 rows 1.1e7 (groups of 16 1.5x faster than a loop)
_CPU_SOLO_FLOPS = 5e7


def candidates_per_step(n_features: int, n_steps: int) -> list[int]:
    """Networks trained at each step: the inputs still free, plus the baseline network at step 0."""
    return [n_features - s + (s == 0) for s in range(n_steps)]


def network_bytes(sizes: Sequence[int], batch_rows: int) -> int:
    """Rough float32 training memory of one network: activations and their gradients for a minibatch of
    ``batch_rows`` rows (pre- and post-activation), plus params, gradients and two Adam moments."""
    n_params = sum(a * b + b for a, b in itertools.pairwise(sizes))
    return 4 * (4 * batch_rows * (sizes[0] + sum(sizes[1:])) + 4 * n_params)


def auto_group(sizes: Sequence[int], batch_rows: int, n_rows: int | None = None) -> int:
    """Candidates per vmapped group.

    On a CPU, one candidate at a time once a network-epoch is at least ``_CPU_SOLO_FLOPS`` (vmapping larger
    networks measured no faster, and slower under load: bench/results/stepwise.json); otherwise as many as fit
    in ``_GROUP_BYTES``, the first step split evenly.
    """
    rows = batch_rows if n_rows is None else n_rows
    if (
        jax.default_backend() == "cpu"
        and 6 * rows * sum(a * b for a, b in itertools.pairwise(sizes)) >= _CPU_SOLO_FLOPS
    ):
        return 1
    first = sizes[0] + 1
    cap = max(1, min(first, _GROUP_BYTES // max(network_bytes(sizes, batch_rows), 1)))
    n_groups = -(-first // cap)
    return -(-first // n_groups)


def _group_calls(counts: Sequence[int], group: int) -> list[int]:
    return [-(-c // group) for c in counts]


def _probe(call, epochs: int, *, min_delta_s: float = 0.1) -> dict[str, float]:
    """Time ``call(e)`` (one group trained for ``e`` epochs, blocking); split fixed and per-epoch cost.

    The first call compiles (its excess over a warm one-epoch call is ``compile_s``); then warm calls of 1 and
    ``E`` epochs, ``E`` growing x4 until the difference is at least ``min_delta_s`` or ``E`` reaches ``epochs``.
    """
    t = time.perf_counter()
    call(1)
    first = time.perf_counter() - t
    t = time.perf_counter()
    call(1)
    t1 = time.perf_counter() - t
    if epochs == 1:
        return {
            "compile_s": max(first - t1, 0.0),
            "fixed_s": t1,
            "per_epoch_s": 0.0,
            "group_s": t1,
            "probe_epochs": 1,
        }
    e = 2
    while True:
        e = min(e, epochs)
        t = time.perf_counter()
        call(e)
        te = time.perf_counter() - t
        if te - t1 >= min_delta_s or e == epochs:
            break
        e *= 4
    per_epoch = max(te - t1, 0.0) / (e - 1)
    fixed = max(t1 - per_epoch, 0.0)
    group_s = te if e == epochs else fixed + per_epoch * epochs
    return {
        "compile_s": max(first - t1, 0.0),
        "fixed_s": fixed,
        "per_epoch_s": per_epoch,
        "group_s": group_s,
        "probe_epochs": e,
    }


def _estimate(call, *, sizes, n_rows, epochs, counts, group) -> dict[str, Any]:
    probe = _probe(call, epochs)
    calls = _group_calls(counts, group)
    per_step = [c * probe["group_s"] for c in calls]
    flops = 6.0 * n_rows * sum(a * b for a, b in itertools.pairwise(sizes)) * epochs * group * sum(calls)
    seconds = float(sum(per_step))
    return {
        "seconds": seconds,
        "per_step": per_step,
        "compile_s": probe["compile_s"],
        "n_networks": int(sum(counts)),
        "n_steps": len(counts),
        "group": int(group),
        "n_group_calls": int(sum(calls)),
        "group_s": probe["group_s"],
        "fixed_s": probe["fixed_s"],
        "per_epoch_s": probe["per_epoch_s"],
        "probe_epochs": probe["probe_epochs"],
        "epochs": int(epochs),
        "n_rows": int(n_rows),
        "train_flops": flops,
        "gflops_per_s": flops / seconds / 1e9 if seconds > 0 else float("nan"),
    }


def _fits(estimate: dict[str, Any], limit_s: float) -> str:
    """``max_steps=k`` and ``epochs=e`` that would fit in ``limit_s`` seconds, as advice."""
    steps, total = 0, 0.0
    for s in estimate["per_step"]:
        if total + s > limit_s:
            break
        steps, total = steps + 1, total + s
    per_call = limit_s / estimate["n_group_calls"] - estimate["fixed_s"]
    ep = int(per_call / estimate["per_epoch_s"]) if estimate["per_epoch_s"] > 0 and per_call > 0 else 0
    advice = []
    if steps >= 1:
        advice.append(f"max_steps={steps} (--max-steps {steps})")
    if ep >= 1:
        advice.append(f"epochs={ep} (--epochs {ep})")
    return " or ".join(advice) if advice else "fewer rows, a smaller batch count or an accelerator"


def _describe(estimate: dict[str, Any]) -> str:
    return (
        f"{estimate['n_networks']} networks x {estimate['epochs']} epochs on {estimate['n_rows']} rows in "
        f"{estimate['n_steps']} steps, about {estimate['seconds']:.0f} s "
        f"({estimate['seconds'] / max(estimate['n_steps'], 1):.0f} s per step on average, measured "
        f"{estimate['gflops_per_s']:.0f} GFLOP/s)"
    )


class StepwiseCostWarning(UserWarning):
    """A stepwise run is estimated to take longer than ``warn_seconds``."""


def estimate_stepwise_cost(
    layers,
    n_rows: int,
    n_features: int,
    *,
    epochs: int = 200,
    minibatch_size: int | None = None,
    max_steps: int | None = None,
    direction: str = "forward",
    loss: str = "auto",
    candidate_group: int | None = None,
    n_eval_rows: int | None = None,
) -> dict[str, Any]:
    """Seconds a :func:`stepwise` run would take here, from one timed short training of one candidate group.

    Compiles the program the run uses (``compile_s``, reported separately: the compiled program is cached, so
    a run with the same shapes does not compile again), times one group of candidates for 1 and a few epochs
    on random data of the same shape, and extrapolates to every group of every step:
    ``seconds = sum over steps of ceil(candidates / group) * (fixed_s + per_epoch_s * epochs)``.

    Args:
        layers: the model's :func:`jaxsens._dense.dense_layers`.
        n_rows: training rows; ``n_eval_rows`` validation rows (default ``n_rows``).
        n_features: inputs (must match ``layers``).
        epochs, minibatch_size, max_steps, direction, candidate_group: as for :func:`stepwise`; ``loss``:
            ``"auto"``, ``"mse"`` or ``"cross_entropy"`` (the public ``metric`` ``"log_loss"``).

    Returns:
        ``{"seconds", "per_step" [n_steps], "compile_s", "n_networks", "group", "n_group_calls", "group_s",
        "fixed_s", "per_epoch_s", "train_flops", "gflops_per_s", ...}``.
    """
    sizes = _sizes(layers)
    if n_features != sizes[0]:
        raise ArgumentError(f"n_features={n_features} but the model's first layer takes {sizes[0]} inputs")
    _check_direction(direction)
    epochs = _check_epochs(epochs)
    n_rows = int(n_rows)
    if n_rows < 1:
        raise ArgumentError(f"n_rows={n_rows}; give a positive number of rows")
    batch_size = _check_minibatch(minibatch_size, n_rows)
    n_steps = _check_max_steps(max_steps, n_features)
    group = _check_group(candidate_group, sizes, batch_size, n_rows)
    activations = tuple((l.activation, tuple(l.attrs)) for l in layers)
    loss = _resolve_loss(loss, layers[-1].activation)
    rng = np.random.default_rng(0)
    n_eval = n_rows if n_eval_rows is None else int(n_eval_rows)
    X = jnp.asarray(rng.standard_normal((n_rows, n_features), dtype=np.float32))
    X_eval = (
        X if n_eval == n_rows else jnp.asarray(rng.standard_normal((n_eval, n_features), dtype=np.float32))
    )
    y, y_eval = (
        jnp.asarray(np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], n)])
        for n in (n_rows, n_eval)
    )
    settings = {"activations": activations, "loss": loss, "batch_size": batch_size}
    init = init_params(jax.random.key(0), sizes)
    masks = jnp.ones((group, n_features), jnp.float32)
    args = (masks, init, X, y, X_eval, y_eval, jax.random.key(1), jnp.float32(1e-3))

    def call(e):
        return jax.block_until_ready(_step_errors(*args, epochs=e, **settings))

    counts = candidates_per_step(n_features, n_steps)
    return _estimate(call, sizes=sizes, n_rows=n_rows, epochs=epochs, counts=counts, group=group)


# -------------------------------------------------------------------------------------------- bootstrap
_BOOT_BLOCK = 4096  # rows per block of Poisson weights: memory ``block x n_boot`` floats, whatever n_eval


@functools.partial(jax.jit, static_argnames=("n_boot",))
def _replicate_sums(change, row_index, valid, key, *, n_boot):
    """``(sum_i w_ib change_i, sum_i w_ib)`` ``[n_boot]`` each, over blocks ``[n_blocks, block]`` of rows.

    Elementwise products and sums (no matmul: no reduced-precision matmul on accelerators).
    """

    def body(carry, blk):
        c, r, ok = blk
        w = poisson_weights(key, r, n_boot) * ok[:, None]
        return (carry[0] + jnp.sum(c[:, None] * w, axis=0), carry[1] + jnp.sum(w, axis=0)), None

    zeros = jnp.zeros((n_boot,), jnp.float32)
    (total, weight), _ = jax.lax.scan(body, (zeros, zeros), (change, row_index, valid))
    return total, weight


def _bootstrap(n_eval: int, row_index, key, n_boot: int):
    """``replicates(change [n_eval]) -> [n_boot]`` weighted means (NaN where a replicate has no weight)."""
    block = min(_BOOT_BLOCK, n_eval)
    n_pad = -(-n_eval // block) * block
    rows = np.arange(n_eval, dtype=np.uint32) if row_index is None else np.asarray(row_index, np.uint32)
    if rows.shape != (n_eval,):
        raise ArgumentError(
            f"eval_row_index has shape {rows.shape}; expected [{n_eval}] (one per evaluation row)"
        )
    pad = n_pad - n_eval
    rows = jnp.asarray(np.pad(rows, (0, pad)).reshape(-1, block))
    valid = jnp.asarray(np.pad(np.ones(n_eval, bool), (0, pad)).reshape(-1, block))

    def replicates(change):
        c = jnp.pad(jnp.asarray(change, jnp.float32), (0, pad)).reshape(-1, block)
        total, weight = _replicate_sums(c, rows, valid, key, n_boot=n_boot)
        total, weight = np.asarray(total, np.float64), np.asarray(weight, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(weight > 0, total / weight, np.nan)

    return replicates


def _replicate_stderr(replicates: np.ndarray) -> np.ndarray:
    """Per input: std (ddof = 1) of its finite replicates; NaN for inputs no step reached."""
    out = np.full(replicates.shape[0], np.nan)
    for j, rep in enumerate(replicates):
        rep = rep[np.isfinite(rep)]
        if len(rep) >= 2:
            out[j] = bootstrap_stderr(rep)
    return out


# -------------------------------------------------------------------------------------------- the step loop
def run_stepwise(
    layers,
    X,
    y,
    X_eval,
    y_eval,
    *,
    direction: str,
    epochs: int,
    learning_rate: float,
    minibatch_size: int,
    loss: str,
    max_steps: int,
    key: jax.Array,
    progress=None,
    candidate_group: int | None = None,
    warn_seconds: float | None = 60.0,
    max_seconds: float | None = None,
    eval_row_index=None,
    n_boot: int = N_BOOT,
) -> dict[str, Any]:
    """The stepwise selection itself, on checked arrays: everything :func:`stepwise` does but parsing.

    Args:
        layers: the model's :func:`jaxsens._dense.dense_layers` (architecture only).
        X, y: ``[n_samples, n_features]`` float32, ``[n_samples, n_outputs]`` float32 (one-hot for classes),
            as :func:`_check_xy` returns them; ``X_eval``, ``y_eval`` the same for the errors.
        direction: ``"forward"`` / ``"backward"``; ``loss``: resolved, ``"mse"`` / ``"cross_entropy"``.
        epochs, learning_rate: training settings; ``minibatch_size``: rows per minibatch, ``<= n_samples``.
        max_steps: steps to run, ``1..n_features``.
        key: typed PRNG key (initial weights: ``fold_in(key, 0)``, minibatch order: ``fold_in(key, 1)``).
        progress: ``None``, ``True`` (a tqdm bar showing networks and "step s/S") or ``progress(done, total)``
            called after every trained group, counting networks; ``total = 1 + sum over steps of candidates``
            (the 1 is the baseline network of step 0).
        candidate_group: candidates per vmapped group (``None``: :func:`auto_group`).
        warn_seconds: warn (:class:`StepwiseCostWarning`) before a run estimated longer than this; ``None``:
            no estimate unless ``max_seconds`` asks for one.
        max_seconds: refuse (``ArgumentError``, naming ``max_steps`` / ``epochs`` that would fit) a run
            estimated longer than this.
        eval_row_index: ``[n_eval]`` global row numbers of the evaluation rows (default ``0..n_eval-1``): the
            bootstrap weight of row ``i`` in replicate ``b`` comes from ``fold_in(fold_in(key, 2), row_index)``.
        n_boot: bootstrap replicates.

    The stderr of ``importance[j]`` is a paired Poisson bootstrap over the evaluation rows: with ``l_before``
    and ``l_after`` the per-row losses of the networks before and after ``j``'s step (trained once; the
    bootstrap holds them fixed) and ``w_ib ~ Poisson(1)``, replicate ``b`` is ``sum_i w_ib d_i / sum_i w_ib``
    for ``d = l_before - l_after`` (forward) or ``l_after - l_before`` (backward), and the stderr is the
    standard deviation (ddof = 1) of the replicates (those with ``sum_i w_ib > 0``).

    Returns:
        ``{"order_index" [n_steps] int, "errors" [n_steps], "baseline_error" float, "importance" [n_features]
        (NaN where no step reached), "candidate_errors" [n_steps, n_features] (NaN: not a candidate),
        "estimate" (dict as :func:`estimate_stepwise_cost` or None), "group" int, "n_networks" int,
        "stderr" [n_features] (NaN where no step reached), "replicates" [n_features, n_boot]}``.
    """
    sizes = _sizes(layers)
    n_features = sizes[0]
    n_steps = int(max_steps)
    group = _check_group(candidate_group, sizes, minibatch_size, X.shape[0])
    activations = tuple((l.activation, tuple(l.attrs)) for l in layers)
    settings = {"activations": activations, "loss": loss, "batch_size": int(minibatch_size)}
    lr = jnp.float32(learning_rate)
    init = init_params(jax.random.fold_in(key, 0), sizes)  # shared by every candidate of every step
    shuffle_key = jax.random.fold_in(key, 1)
    counts = candidates_per_step(n_features, n_steps)

    def train(masks, e=epochs):
        """``(errors [n] float64 on the host, per-row losses [n, n_eval] on the device)``."""
        errs, rows = _step_errors(
            jnp.asarray(masks), init, X, y, X_eval, y_eval, shuffle_key, lr, epochs=e, **settings
        )
        return np.asarray(errs, np.float64), rows

    boot_replicates = _bootstrap(X_eval.shape[0], eval_row_index, jax.random.fold_in(key, 2), n_boot)

    _check_progress(progress)
    estimate = None
    if warn_seconds is not None or max_seconds is not None:
        probe_masks = np.ones((group, n_features), np.float32)
        estimate = _estimate(
            lambda e: jax.block_until_ready(train(probe_masks, e)),
            sizes=sizes,
            n_rows=X.shape[0],
            epochs=epochs,
            counts=counts,
            group=group,
        )
        if max_seconds is not None and estimate["seconds"] > max_seconds:
            raise ArgumentError(
                f"stepwise would train {_describe(estimate)}, over max_seconds={max_seconds:g}; "
                f"use {_fits(estimate, max_seconds)}, or raise max_seconds"
            )
        if warn_seconds is not None and estimate["seconds"] > warn_seconds:
            warnings.warn(
                f"stepwise will train {_describe(estimate)}; to bound the time use {_fits(estimate, warn_seconds)}",
                StepwiseCostWarning,
                stacklevel=3,
            )

    report = _reporter(progress, sum(counts), n_steps)
    active = np.zeros(n_features, bool) if direction == "forward" else np.ones(n_features, bool)
    order, errors = [], []
    cand = np.full((n_steps, n_features), np.nan)
    importance = np.full(n_features, np.nan)
    replicates = np.full((n_features, n_boot), np.nan)
    baseline, done = None, 0
    prev_rows = None  # per-row eval losses of the current input set's network (device)
    try:
        for step in range(n_steps):
            free = np.flatnonzero(~active) if direction == "forward" else np.flatnonzero(active)
            masks = np.tile(active.astype(np.float32), (len(free) + (step == 0), 1))
            masks[np.arange(len(free)), free] = 1.0 if direction == "forward" else 0.0
            # step 0 also trains the current input set itself (the last row): the baseline error
            n_real = len(masks)
            masks = np.concatenate([masks, np.tile(active.astype(np.float32), ((-n_real) % group, 1))])
            errs = []
            best_err, best_rows = np.inf, None  # the first minimum over the candidates, as np.argmin below
            for start in range(0, len(masks), group):
                group_errs, group_rows = train(masks[start : start + group])
                errs.append(group_errs)
                n_cand = min(group, len(free) - start)  # real candidates in this group (not the baseline)
                if n_cand > 0:
                    j = int(np.argmin(group_errs[:n_cand]))
                    if best_rows is None or group_errs[j] < best_err:
                        best_err, best_rows = group_errs[j], group_rows[j]
                if step == 0 and start <= len(free) < start + group:
                    prev_rows = group_rows[len(free) - start]  # the baseline network
                done += min(group, n_real - start)
                report(done, step)
            errs = np.concatenate(errs)[:n_real]
            if not np.all(np.isfinite(errs)):
                bad = [int(j) for j in free[~np.isfinite(errs[: len(free)])]][:5]
                raise ArgumentError(
                    f"stepwise step {step + 1}: training diverged (error NaN or inf) for "
                    f"{int(np.sum(~np.isfinite(errs)))} of {n_real} networks (input indices {bad}); lower "
                    f"learning_rate={float(learning_rate):g} or standardise X"
                )
            if step == 0:
                baseline = float(errs[-1])
            cand[step, free] = errs[: len(free)]
            best = int(free[np.argmin(errs[: len(free)])])
            prev = baseline if step == 0 else errors[-1]
            err = float(np.min(errs[: len(free)]))
            importance[best] = prev - err if direction == "forward" else err - prev
            change = prev_rows - best_rows if direction == "forward" else best_rows - prev_rows
            replicates[best] = boot_replicates(change)
            prev_rows = best_rows
            active[best] = direction == "forward"
            order.append(best)
            errors.append(err)
    finally:
        report(None, None)
    return {
        "order_index": np.asarray(order, int),
        "errors": np.asarray(errors),
        "baseline_error": float(baseline),
        "importance": importance,
        "candidate_errors": cand,
        "estimate": estimate,
        "group": int(group),
        "n_networks": int(sum(counts)),
        "stderr": _replicate_stderr(replicates),
        "replicates": replicates,
    }


def _check_progress(progress) -> None:
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise ArgumentTypeError(
            f"progress must be None, True or a callable(networks_done, networks_total), got {progress!r}"
        )


def _reporter(progress, total: int, n_steps: int):
    """``report(networks_done, step)`` after each group; ``report(None, None)`` closes a tqdm bar."""
    if progress is None or progress is False:
        return lambda done, step: None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit=" networks", desc="stepwise", dynamic_ncols=True)

        def report_bar(done, step):
            if done is None:
                bar.close()
                return
            bar.set_postfix_str(f"step {step + 1}/{n_steps}", refresh=False)
            bar.update(done - bar.n)

        return report_bar
    _check_progress(progress)

    def report(done, step):
        if done is not None:
            progress(done, total)

    return report


def _sizes(layers) -> tuple[int, ...]:
    return (int(layers[0].W.shape[0]),) + tuple(int(l.W.shape[1]) for l in layers)


def _check_direction(direction) -> None:
    if direction not in ("forward", "backward"):
        raise ArgumentError(f"direction={direction!r}; use 'forward' or 'backward'")


def _check_epochs(epochs) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 1:
        raise ArgumentError(f"epochs={epochs!r}; give a positive integer")
    return int(epochs)


def _check_minibatch(minibatch_size, n_rows: int) -> int:
    if minibatch_size is None:
        return n_rows
    if (
        isinstance(minibatch_size, bool)
        or not isinstance(minibatch_size, int | np.integer)
        or minibatch_size < 1
    ):
        raise ArgumentError(f"minibatch_size={minibatch_size!r}; give a positive size or None for full batch")
    return min(int(minibatch_size), n_rows)


def _check_max_steps(max_steps, n_features: int) -> int:
    n_steps = n_features if max_steps is None else max_steps
    if (
        isinstance(n_steps, bool)
        or not isinstance(n_steps, int | np.integer)
        or not 1 <= n_steps <= n_features
    ):
        raise ArgumentError(f"max_steps={max_steps}; give 1..{n_features} (n_features)")
    return int(n_steps)


def _check_group(candidate_group, sizes, batch_rows: int, n_rows: int | None = None) -> int:
    if candidate_group is None:
        return auto_group(sizes, batch_rows, n_rows)
    if (
        isinstance(candidate_group, bool)
        or not isinstance(candidate_group, int | np.integer)
        or candidate_group < 1
    ):
        raise ArgumentError(
            f"candidate_group={candidate_group!r}; give a positive number of candidates per vmapped group, "
            "or None to choose by memory"
        )
    return int(min(candidate_group, sizes[0] + 1))


def _resolve_loss(loss: str, last: str) -> str:
    classifier = last in ("softmax", "log_softmax", "sigmoid")
    if loss == "auto":
        return "cross_entropy" if classifier else "mse"
    if loss == "mse":
        return loss
    if loss == "cross_entropy":
        if not classifier:
            raise ArgumentError(
                f"loss='cross_entropy' needs a softmax or sigmoid output layer, the model's is {last!r}; "
                "use loss='mse'"
            )
        return loss
    raise ArgumentError(f"loss={loss!r}; use 'auto', 'mse' or 'cross_entropy'")


# -------------------------------------------------------------------------------------------- rows in memory
def _architecture(model, fn: str = "stepwise"):
    """The model's dense layers (one check for every method, then the stack) and their sizes."""
    check_model(model, fn, family="retraining")
    layers = model.dense_layers(method=fn)
    return layers, _sizes(layers)


def _metric_loss(metric, last: str) -> tuple[str, str]:
    """``(metric name reported, training loss of the machinery)`` for the ``metric`` option and the output
    layer's activation ``last``: ``"auto"`` is ``log_loss`` for softmax / sigmoid outputs, ``mse`` otherwise."""
    classifier = last in ("softmax", "log_softmax", "sigmoid")
    if not isinstance(metric, str):
        raise ArgumentTypeError(
            f"stepwise() trains every network with its metric as the loss, so metric must be a name ('auto', "
            f"'mse' or 'log_loss'), got {metric!r:.80}"
        )
    if metric == "auto":
        metric = "log_loss" if classifier else "mse"
    if metric == "mse":
        return "mse", "mse"
    if metric == "log_loss":
        if not classifier:
            raise ArgumentError(
                f"stepwise(): metric='log_loss' needs a softmax or sigmoid output layer, the model's is {last!r}; "
                "use metric='mse'"
            )
        return "log_loss", "cross_entropy"
    raise ArgumentError(
        f"stepwise() trains every network with its metric as the loss; metric={metric!r} cannot be trained on "
        "(accuracy has no gradient; mae is not offered): use 'mse', 'log_loss' or 'auto'"
    )


def _too_many(role: str, description: str, n_rows, max_rows: int, width: int) -> str:
    known = isinstance(n_rows, int)
    size = f" (about {n_rows * width * 4 / 1e9:.2g} GB as float32)" if known else ""
    count = f"has {n_rows:,} rows{size}" if known else f"has more than {max_rows:,} usable rows"
    return (
        f"stepwise() holds its {role} rows in memory to retrain networks on them, at most max_rows={max_rows:,}; "
        f"{description} {count}. Pass max_rows={n_rows if known else 'N'} to hold them all, or pass a subsample "
        "of the rows (nothing is subsampled silently)"
    )


def _targets_matrix(y: np.ndarray, n_outputs: int, what: str) -> np.ndarray:
    """``[n, n_outputs]`` float32 training targets: values as given, class labels one-hot."""
    if y.ndim == 1 and n_outputs == 1:
        return y.astype(np.float32)[:, None]
    if y.ndim == 1:
        if not np.all(y == np.round(y)):
            raise DataError(
                f"{what} hold one value per row but the model has {n_outputs} outputs; give integer class labels "
                f"0..{n_outputs - 1} or {n_outputs} values per row"
            )
        labels = y.astype(np.int64)
        if labels.min() < 0 or labels.max() >= n_outputs:
            raise DataError(
                f"{what} hold class labels {labels.min()}..{labels.max()}; the model has {n_outputs} outputs, so "
                f"labels must be 0..{n_outputs - 1}"
            )
        return np.eye(n_outputs, dtype=np.float32)[labels]
    if y.shape[1:] != (n_outputs,):
        raise DataError(f"{what} have rows of shape {list(y.shape[1:])}; expected one value or {n_outputs}")
    return y.astype(np.float32)


def _hold(
    data,
    targets,
    *,
    role: str,
    n_features: int,
    n_outputs: int,
    feature_names,
    nan_policy: str,
    batch_size: int | None,
    max_rows: int,
):
    """Read ``data`` and ``targets`` (any source) chunk by chunk into memory, at most ``max_rows`` usable rows.

    Returns ``(X [n, n_features] float32, y [n, n_outputs] float32, row_index [n] uint32, n_skipped,
    header feature names or None)``.
    """
    x_src, y_src = open_xy(
        data,
        targets,
        input_shape=(n_features,),
        feature_names=feature_names,
        n_outputs=n_outputs,
        nan_policy=nan_policy,
    )
    width = n_features + n_outputs
    if x_src.n_rows is not None and x_src.n_rows > max_rows:
        raise DataError(_too_many(role, x_src.description, int(x_src.n_rows), max_rows, width))
    xs, ys, index = [], [], []
    held = skipped = 0
    chunks = iter_chunks(
        (x_src, y_src), batch_size=batch_size or _READ_ROWS, input_shape=((n_features,), tuple(y_src.row_shape or ())),
        nan_policy=nan_policy, dtype=(np.float32, chunk_dtype(y_src.dtype)),
    )  # fmt: skip
    for chunk in chunks:
        held += chunk.n_valid
        skipped += chunk.n_skipped
        if held > max_rows:
            raise DataError(_too_many(role, x_src.description, None, max_rows, width))
        keep = chunk.mask
        xs.append(chunk.xs[0][keep])
        ys.append(chunk.xs[1][keep])
        index.append(chunk.row_index[keep])
    if held < 2:
        raise DataError(
            f"stepwise() needs at least 2 {role} rows without NaN / Inf to train and measure errors; "
            f"{x_src.description} gave {held} ({skipped} skipped)"
        )
    y = _targets_matrix(np.concatenate(ys), n_outputs, f"the {role} targets ({y_src.description})")
    return np.concatenate(xs), y, np.concatenate(index), skipped, x_src.feature_names


def _validation_pair(validation):
    if not isinstance(validation, tuple | list) or len(validation) != 2:
        raise ArgumentTypeError(
            f"stepwise(): validation must be a pair (X_val, y_val) of data sources (arrays, files, batches), "
            f"got {type(validation).__name__}"
        )
    return validation


def _positive(name: str, value, none_ok: bool) -> None:
    if value is None and none_ok:
        return
    if not value > 0:
        raise ArgumentError(f"stepwise(): {name}={value!r}; give a positive number")


def _warn_batch_size(call: Call) -> None:
    """``batch_size`` used to be the training minibatch: say so when it is given without ``minibatch_size``."""
    if call.batch_size is not None and call.options["minibatch_size"] is None:
        warnings.warn(
            f"stepwise(): batch_size={call.batch_size} is the rows per chunk read from the data, which does not "
            "change the result; it no longer sets the training minibatch, which is now minibatch_size= (None: "
            "full batch). Pass minibatch_size= explicitly to silence this warning (see CHANGELOG.md)",
            FutureWarning,
            stacklevel=5,  # _warn_batch_size < _run < call_method < stepwise < the caller
        )


def _run(call: Call) -> StepwiseResult:
    model, opts = call.model, call.options
    layers, sizes = _architecture(model)
    n_features, n_outputs = sizes[0], sizes[-1]
    if call.outputs is not None:
        raise ArgumentError(
            "stepwise() retrains whole networks and measures one error over all outputs; outputs= does not "
            "apply: leave it None"
        )
    metric, loss = _metric_loss(opts["metric"], layers[-1].activation)
    n_steps = _check_max_steps(opts["max_steps"], n_features)
    _positive("learning_rate", opts["learning_rate"], False)
    _positive("max_seconds", opts["max_seconds"], True)
    _warn_batch_size(call)
    read = {
        "n_features": n_features,
        "n_outputs": n_outputs,
        "feature_names": model.feature_names,
        "nan_policy": call.nan_policy,
        "batch_size": call.batch_size,
        "max_rows": opts["max_rows"],
    }
    X, y, rows, n_skipped, header = _hold(call.data, call.targets, role="training", **read)
    X, y = jnp.asarray(X), jnp.asarray(y)
    if opts["validation"] is None:
        X_eval, y_eval, eval_rows = X, y, rows
    else:
        try:
            X_val, y_val, eval_rows, _, _ = _hold(
                *_validation_pair(opts["validation"]), role="validation", **read
            )
        except DataError as e:
            raise DataError(f"validation=(X_val, y_val): {e}") from e
        X_eval, y_eval = jnp.asarray(X_val), jnp.asarray(y_val)
    names = tuple(header or model.feature_names or ())
    names = names if len(names) == n_features else tuple(f"x{i}" for i in range(n_features))
    out = run_stepwise(
        layers, X, y, X_eval, y_eval,
        direction=opts["direction"], epochs=opts["epochs"], learning_rate=opts["learning_rate"],
        minibatch_size=_check_minibatch(opts["minibatch_size"], X.shape[0]), loss=loss, max_steps=n_steps,
        key=call.key, progress=call.progress, candidate_group=opts["candidate_group"],
        warn_seconds=opts["warn_seconds"] or None, max_seconds=opts["max_seconds"], eval_row_index=eval_rows,
    )  # fmt: skip
    return StepwiseResult(
        importance=out["importance"],
        stderr=out["stderr"],
        n_samples=int(X.shape[0]),
        n_skipped=int(n_skipped),
        feature_names=names,
        output_names=(),
        input_shape=(n_features,),
        method="stepwise",
        options=call.record(),
        direction=opts["direction"],
        order=tuple(names[i] for i in out["order_index"]),
        order_index=out["order_index"],
        errors=out["errors"],
        baseline=out["baseline_error"],
        candidate_errors=out["candidate_errors"],
        metric=metric,
        estimate=out["estimate"],
        n_eval=int(X_eval.shape[0]),
    )


def _known_rows(data, targets, *, role: str, n_features: int, n_outputs: int, feature_names, max_rows: int):
    """Rows of a source known before reading (``None`` for one-shot iterables and unknown counts)."""
    if hasattr(data, "__next__") or hasattr(targets, "__next__"):  # reading would consume them
        return None
    x_src, _ = open_xy(
        data, targets, input_shape=(n_features,), feature_names=feature_names, n_outputs=n_outputs
    )
    if x_src.n_rows is not None and x_src.n_rows > max_rows:
        raise DataError(
            _too_many(role, x_src.description, int(x_src.n_rows), max_rows, n_features + n_outputs)
        )
    return x_src.n_rows


def _estimate_cost(call: Call) -> dict[str, Any] | str:
    """The spec's ``estimate`` hook: :func:`estimate_stepwise_cost` for this call, before any data is read."""
    model, opts = call.model, call.options
    layers, sizes = _architecture(model)
    n_features, n_outputs = sizes[0], sizes[-1]
    _, loss = _metric_loss(opts["metric"], layers[-1].activation)
    n_steps = _check_max_steps(opts["max_steps"], n_features)
    common = {
        "n_features": n_features,
        "n_outputs": n_outputs,
        "feature_names": model.feature_names,
        "max_rows": opts["max_rows"],
    }
    n_rows = _known_rows(call.data, call.targets, role="training", **common)
    n_eval = n_rows
    if opts["validation"] is not None:
        n_eval = _known_rows(*_validation_pair(opts["validation"]), role="validation", **common)
    n_networks = sum(candidates_per_step(n_features, n_steps))
    if n_rows is None or n_eval is None:
        return (
            f"{n_networks} networks x {opts['epochs']} epochs in {n_steps} steps; the row count is known only "
            "once the data is read, so the time is estimated then (see warn_seconds / max_seconds)"
        )
    est = estimate_stepwise_cost(
        layers, n_rows, n_features, epochs=opts["epochs"], minibatch_size=_check_minibatch(opts["minibatch_size"], n_rows),
        max_steps=n_steps, direction=opts["direction"], loss=loss, candidate_group=opts["candidate_group"],
        n_eval_rows=n_eval,
    )  # fmt: skip
    text = (
        f"{est['n_networks']} networks x {est['epochs']} epochs on {n_rows:,} rows in {est['n_steps']} steps, "
        f"measured {est['gflops_per_s']:.2g} GFLOP/s; bound it with max_steps / epochs (--max-steps, --epochs)"
    )
    return {**est, "text": text}


SPEC = Method(
    name="stepwise",
    function_name="stepwise",
    family="retraining",
    summary="inputs added (forward) or removed (backward) one at a time, retraining the network at each step: "
    "the error change at each input's step",
    doc=r"""Forward stepwise addition or backward stepwise elimination of inputs, retraining the architecture.

    Forward (``direction="forward"``): start with no inputs; at step :math:`s` retrain one network per input not
    yet in, with that input added, and keep the input giving the lowest error :math:`E_s`. Backward: start with
    all inputs; at each step retrain one network per remaining input, with that input removed, and drop the
    input whose removal gives the lowest error. ``importance[j]`` (``[n_features]``, outputs aggregated) is the
    error change at input :math:`j`'s step, :math:`E_{s-1} - E_s` (forward: the decrease when it entered) or
    :math:`E_s - E_{s-1}` (backward: the increase when it left), with :math:`E_0` the baseline (no inputs /
    all inputs); inputs that no step reached (``max_steps``) get NaN, ranked last (``result.order`` keeps the
    order of the steps). Olden, Joy & Death, "An accurate comparison of methods for quantifying variable
    importance in artificial neural networks using simulated data", Ecological Modelling 178 (2004) 389-397;
    Gevrey, Dimopoulos & Lek, Ecological Modelling 160 (2003) 249-264.

    Every network is the model's dense architecture (layer sizes and activations, ``model.dense_layers()``;
    its weights are not used) trained from scratch with Adam (``learning_rate``, ``epochs`` passes over the
    training rows, minibatches of ``minibatch_size`` rows, full batch by default); an excluded input is
    multiplied by 0. All candidates of every step share the same initial weights and minibatch order, drawn
    from ``key`` (``None``: ``jax.random.key(0)``; an int is a seed), so they differ only in their inputs and
    the result is deterministic given ``key``. The candidates of a step are trained together with ``jax.vmap``
    in groups of ``candidate_group`` (the last group padded), so every step reuses one compiled program.

    The error is ``metric``, also the training loss: ``"mse"`` (mean over rows and outputs of the squared error
    of the output activation) or ``"log_loss"`` (softmax cross-entropy for a softmax output; for sigmoid
    outputs the binary cross-entropy summed over the outputs), measured on ``validation`` rows when given,
    else on the training rows. ``"auto"`` (default) is ``log_loss`` for softmax / sigmoid output layers and
    ``mse`` otherwise; ``accuracy`` and ``mae`` are refused (no gradient / not offered).

    ``stderr`` (same shape, NaN where ``importance`` is NaN): a paired Poisson bootstrap (64 replicates) over
    the evaluation rows. With :math:`d_i = \ell^{before}_i - \ell^{after}_i` the per-row loss difference
    between the networks before and after input :math:`j`'s step (sign as ``importance``) and weights
    :math:`w_{ib} \sim \mathrm{Poisson}(1)` from ``fold_in(fold_in(key, 2), row_index)``, replicate
    :math:`b` is :math:`\sum_i w_{ib} d_i / \sum_i w_{ib}` and the stderr is the standard deviation of the
    replicates. The two trained networks are held fixed: this is the uncertainty due to the evaluation rows,
    not the spread over retrainings (rerun with other keys for that).

    **Data in memory.** Retraining needs the rows together: ``data`` and ``targets`` (any source: arrays,
    ``.npy`` / ``.npz`` / ``.csv`` / ``.parquet`` paths, a target column by name, iterables of batches) are read
    through the data layer in chunks of ``batch_size`` rows (rows with NaN / Inf raise or, with
    ``nan_policy="skip"``, are dropped and counted in ``n_skipped``) into memory: at most ``max_rows`` usable
    rows (default 1,000,000), ``n_rows x (n_features + n_outputs) x 4`` bytes (0.34 GB at 1M rows x 82
    features + 2 outputs; about twice that while reading), the same again for ``validation`` rows. More rows
    are refused with a message naming the count (a row count known up front is refused before reading);
    nothing is subsampled silently.

    **Changed in this release: ``batch_size``** is, as for every method, the rows per chunk read from the data:
    it does not change the result. It used to be the training minibatch size, which is now the option
    ``minibatch_size`` (``None``: full batch); giving ``batch_size`` without ``minibatch_size`` warns
    (``FutureWarning``) for one release. The option ``loss`` is now ``metric`` (``loss=`` still works, with a
    ``DeprecationWarning``; ``"cross_entropy"`` is now ``"log_loss"``), and the result's ``baseline_error`` is
    ``baseline``.

    **Cost.** Step :math:`s` trains ``n_features - s`` networks (plus one baseline network at step 0), each for
    ``epochs`` passes; a network-epoch is about ``6 * n_rows * sum(n_in * n_out)`` FLOPs. For the seed-000
    shape (82 -> 500 -> 500 -> 500 -> 2, 2,000 rows) a full backward run with ``epochs=200`` is about 4.4 PFLOP:
    hours on a CPU. ``max_steps`` and ``epochs`` bound the time. Before training, one group of candidates is
    timed for a few epochs and the run extrapolated (:func:`estimate_stepwise_cost`, also the spec's
    ``estimate`` hook, which the CLI prints before training): a :class:`StepwiseCostWarning` names the estimate
    and the ``max_steps`` / ``epochs`` that would fit when it exceeds ``warn_seconds`` (0: no estimate), and
    ``max_seconds`` refuses such a run. Progress (``progress=True`` or ``progress(networks_done,
    networks_total)``) counts the networks trained, ``networks_total = 1 + sum over steps of the candidates``.
    Training that diverges (NaN / Inf errors) is refused, naming ``learning_rate``.

    Args (besides the shared ones, see below):
        model: a dense :class:`~jaxsens.Model` (only its architecture is used).
        data: ``[n_samples, n_features]`` training inputs, any source (scale them as the model expects).
        targets: ``[n_samples]`` or ``[n_samples, n_outputs]``; integer class labels ``[n_samples]`` for a
            classifier with several outputs; or a target column of the data by name.

    Returns:
        :class:`StepwiseResult`: ``importance`` / ``stderr`` ``[n_features]``, ``order``, ``errors`` after each
        step, ``baseline``, ``candidate_errors``, ``estimate``; ``plot_steps()`` draws the error curve.

    Example:
        >>> import numpy as np
        >>> from jaxsens import dense_model
        >>> m = dense_model(
        ...     [{"W": np.zeros((3, 4)), "b": np.zeros(4)}, {"W": np.zeros((4, 1)), "b": np.zeros(1)}],
        ...     ["tanh", "identity"],
        ... )
        >>> X = np.random.default_rng(0).normal(size=(128, 3)).astype("float32")
        >>> r = stepwise(m, X, 2 * X[:, 1] + 0.1 * X[:, 0], epochs=150)
        >>> r.order[0], r.ranking()[0][0]
        ('x1', 'x1')
""",
    result=StepwiseResult,
    needs_targets=True,
    random=True,
    exact_zero=False,
    per_output=False,
    memory="holds the training (and validation) rows in memory, at most max_rows (default 1,000,000): "
    "n_rows x (n_features + n_outputs) x 4 bytes",
    aliases={"loss": "metric"},
    options=(
        Option(
            "direction",
            str,
            "forward",
            "forward: add inputs one at a time; backward: remove them",
            choices=("forward", "backward"),
        ),
        Option("epochs", int, 200, "training passes over the rows, per network", minimum=1),
        Option(
            "max_steps",
            int,
            None,
            "stop after this many steps (default: every input); unreached inputs get NaN",
            minimum=1,
        ),
        Option("learning_rate", float, 1e-2, "Adam step size"),
        Option(
            "minibatch_size",
            int,
            None,
            "training minibatch rows (default: full batch; was batch_size before this release)",
            minimum=1,
        ),
        Option(
            "metric",
            str,
            "auto",
            "training loss and reported error: mse, or log_loss for softmax / sigmoid "
            "outputs; auto: log_loss for those, else mse",
            choices=METRIC_CHOICES,
        ),
        Option(
            "candidate_group",
            int,
            None,
            "candidates trained together per vmapped call (default: by "
            "memory; one at a time for large networks on a CPU); does not change the result",
            minimum=1,
        ),
        Option(
            "warn_seconds",
            float,
            60.0,
            "estimate the time first and warn when over this many seconds (0: no estimate)",
            minimum=0,
        ),
        Option("max_seconds", float, None, "refuse a run estimated to take longer than this many seconds"),
        Option(
            "max_rows",
            int,
            MAX_ROWS,
            "most rows held in memory for retraining (training, and validation); more are refused",
            minimum=2,
        ),
        Option(
            "validation",
            "any",
            None,
            "(X_val, y_val) sources on which errors are measured (default: the training rows)",
            cli=False,
        ),
    ),
    run=_run,
    estimate=_estimate_cost,
)

stepwise = SPEC.as_function()
