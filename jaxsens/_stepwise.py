"""Stepwise input selection with retraining (forward addition / backward elimination), candidates vmapped.

Olden, Joy & Death (2004) list forward stepwise addition and backward stepwise elimination among the classic
ways to rank the inputs of a neural network: networks are retrained on growing (or shrinking) input sets and
the inputs are ranked by the order in which they enter (or leave) and by the change of the error. Here the
model's own dense architecture (layer sizes and activations from :func:`jaxsens._dense.dense_layers`) is
retrained with optax; an input that is "out" is multiplied by 0 (the architecture stays fixed), so the
candidates of one step differ only in their input mask and are trained together with ``jax.vmap``: one step
costs about one training run on an accelerator, and every step reuses the same compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from converters.errors import ArgumentError, ArgumentTypeError, DataError
from jaxsens._dense import DenseStack, activation_fn, dense_layers
from jaxsens._results import _finish_figure, _pyplot, frame, register_result, save_result

__all__ = [
    "StepwiseCostWarning",
    "StepwiseResult",
    "estimate_stepwise_cost",
    "run_stepwise",
    "stepwise",
]


@register_result("stepwise")
@dataclasses.dataclass(frozen=True, eq=False)
class StepwiseResult:
    """Outcome of :func:`stepwise`.

    Attributes:
        direction: ``"forward"`` or ``"backward"``.
        order: feature names in the order they entered (forward) or left (backward) the input set.
        order_index: ``[n_steps]`` the same as feature indices.
        errors: ``[n_steps]`` error of the network retrained after each step (``metric``).
        baseline_error: error before the first step: no inputs (forward) or all inputs (backward).
        importance: ``[n_features]`` error change attributed to each input at its step: the decrease when it
            entered (forward) or the increase when it left (backward); NaN for inputs no step reached
            (``max_steps``).
        candidate_errors: ``[n_steps, n_features]`` error of every candidate tried at each step (NaN: not a
            candidate at that step).
        feature_names: ``n_features`` names.
        metric: ``"mse"`` or ``"cross_entropy"``.
    """

    direction: str
    order: tuple[str, ...]
    order_index: np.ndarray
    errors: np.ndarray
    baseline_error: float
    importance: np.ndarray
    candidate_errors: np.ndarray
    feature_names: tuple[str, ...]
    metric: str

    def ranking(self) -> tuple[tuple[str, float, float], ...]:
        """Inputs, most important first: entry order (forward) or reverse removal order (backward).

        Returns ``((name, importance, nan), ...)`` like every jaxsens result; the order comes from the steps,
        not from sorting ``importance``. Inputs that no step reached (``max_steps``) come by their errors at
        the last step.
        """
        return tuple(
            (self.feature_names[i], float(self.importance[i]), float("nan")) for i in self._ranked_index()
        )

    def _ranked_index(self) -> list[int]:
        picked = [int(i) for i in self.order_index]
        rest = [j for j in range(len(self.feature_names)) if j not in picked]
        last = self.candidate_errors[-1] if len(self.candidate_errors) else np.zeros(len(self.feature_names))
        if self.direction == "forward":
            rest.sort(key=lambda j: last[j])  # lower error when added: more important
            idx = picked + rest
        else:
            rest.sort(key=lambda j: -last[j])  # higher error when removed: more important
            idx = rest + picked[::-1]
        return idx

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN written as ``None``)."""

        def clean(a):
            return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, float).reshape(-1)]

        return {
            "method": f"stepwise_{self.direction}",
            "direction": self.direction,
            "order": list(self.order),
            "errors": clean(self.errors),
            "baseline_error": float(self.baseline_error),
            "importance": clean(self.importance),
            "candidate_errors": [clean(row) for row in self.candidate_errors],
            "feature_names": list(self.feature_names),
            "metric": self.metric,
            "ranking": [name for name, _, _ in self.ranking()],
        }

    def to_frame(self):
        """pandas DataFrame, one row per step: ``step``, ``feature``, ``error`` after it, ``importance``."""
        idx = [int(i) for i in self.order_index]
        return frame(
            {
                "step": np.arange(1, len(idx) + 1),
                "feature": np.asarray([self.feature_names[i] for i in idx], dtype=object),
                "error": np.asarray(self.errors, np.float64),
                "importance": np.asarray([self.importance[i] for i in idx], np.float64),
            }
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON (lossless). Read it back with ``jaxsens.load_result``."""
        save_result(self, path)

    def plot(self, *, path: str | os.PathLike | None = None):
        """The error after each step, annotated with the input that entered / left; returns the Figure."""
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 3.5))
        steps = np.arange(0, len(self.errors) + 1)
        ax.plot(steps, np.concatenate([[self.baseline_error], self.errors]), marker="o")
        sign = "+" if self.direction == "forward" else "-"
        ax.set_xticks(steps, ["start"] + [f"{sign}{name}" for name in self.order], rotation=45, ha="right")
        ax.set_ylabel(self.metric)
        ax.set_title(f"stepwise {self.direction}")
        ax.grid(alpha=0.3)
        return _finish_figure(fig, path)


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
    """Train one network per row of ``masks`` ``[n_candidates, n_features]`` (vmapped); their eval errors.

    ``epochs`` is traced: one compiled program per (group size, data shape, architecture), whatever the epochs.
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
        return _loss(p, X_eval * mask, y_eval, activations=activations, loss=loss)

    return jax.vmap(one)(masks)


# -------------------------------------------------------------------------------------------- plan and cost
# Candidates of a step are trained in vmapped groups of equal size (one compiled program; the last group of a
# step is padded with copies of the current input set). bench/stepwise.py measured vmapped groups against a
# Python loop of single trainings on 2 CPU cores: see bench/README.md. The automatic group size keeps the
# group's training memory (activations, gradients, Adam state) under this budget and splits the first step
# into equal groups.
_GROUP_BYTES = 1 << 30


def candidates_per_step(n_features: int, n_steps: int) -> list[int]:
    """Networks trained at each step: the inputs still free, plus the baseline network at step 0."""
    return [n_features - s + (s == 0) for s in range(n_steps)]


def network_bytes(sizes: Sequence[int], batch_rows: int) -> int:
    """Rough float32 training memory of one network: activations and their gradients for a minibatch of
    ``batch_rows`` rows (pre- and post-activation), plus params, gradients and two Adam moments."""
    n_params = sum(a * b + b for a, b in itertools.pairwise(sizes))
    return 4 * (4 * batch_rows * (sizes[0] + sum(sizes[1:])) + 4 * n_params)


def auto_group(sizes: Sequence[int], batch_rows: int) -> int:
    """Candidates per vmapped group: as many as fit in ``_GROUP_BYTES``, the first step split evenly."""
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
    batch_size: int | None = None,
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
        epochs, batch_size, max_steps, direction, loss, candidate_group: as for :func:`stepwise`.

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
    batch_size = _check_batch_size(batch_size, n_rows)
    n_steps = _check_max_steps(max_steps, n_features)
    group = _check_group(candidate_group, sizes, batch_size)
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
    batch_size: int,
    loss: str,
    max_steps: int,
    key: jax.Array,
    progress=None,
    candidate_group: int | None = None,
    warn_seconds: float | None = 60.0,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """The stepwise selection itself, on checked arrays: everything :func:`stepwise` does but parsing.

    Args:
        layers: the model's :func:`jaxsens._dense.dense_layers` (architecture only).
        X, y: ``[n_samples, n_features]`` float32, ``[n_samples, n_outputs]`` float32 (one-hot for classes),
            as :func:`_check_xy` returns them; ``X_eval``, ``y_eval`` the same for the errors.
        direction: ``"forward"`` / ``"backward"``; ``loss``: resolved, ``"mse"`` / ``"cross_entropy"``.
        epochs, learning_rate: training settings; ``batch_size``: rows per minibatch, ``<= n_samples``.
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

    Returns:
        ``{"order_index" [n_steps] int, "errors" [n_steps], "baseline_error" float, "importance" [n_features]
        (NaN where no step reached), "candidate_errors" [n_steps, n_features] (NaN: not a candidate),
        "estimate" (dict as :func:`estimate_stepwise_cost` or None), "group" int, "n_networks" int}``.
    """
    sizes = _sizes(layers)
    n_features = sizes[0]
    n_steps = int(max_steps)
    group = _check_group(candidate_group, sizes, batch_size)
    activations = tuple((l.activation, tuple(l.attrs)) for l in layers)
    settings = {"activations": activations, "loss": loss, "batch_size": int(batch_size)}
    lr = jnp.float32(learning_rate)
    init = init_params(jax.random.fold_in(key, 0), sizes)  # shared by every candidate of every step
    shuffle_key = jax.random.fold_in(key, 1)
    counts = candidates_per_step(n_features, n_steps)

    def train(masks, e=epochs):
        return np.asarray(
            _step_errors(
                jnp.asarray(masks), init, X, y, X_eval, y_eval, shuffle_key, lr, epochs=e, **settings
            ),
            np.float64,
        )

    _check_progress(progress)
    estimate = None
    if warn_seconds is not None or max_seconds is not None:
        probe_masks = np.ones((group, n_features), np.float32)
        estimate = _estimate(
            lambda e: train(probe_masks, e),
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
    baseline, done = None, 0
    try:
        for step in range(n_steps):
            free = np.flatnonzero(~active) if direction == "forward" else np.flatnonzero(active)
            masks = np.tile(active.astype(np.float32), (len(free) + (step == 0), 1))
            masks[np.arange(len(free)), free] = 1.0 if direction == "forward" else 0.0
            # step 0 also trains the current input set itself (the last row): the baseline error
            n_real = len(masks)
            masks = np.concatenate([masks, np.tile(active.astype(np.float32), ((-n_real) % group, 1))])
            errs = []
            for start in range(0, len(masks), group):
                errs.append(train(masks[start : start + group]))
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


# -------------------------------------------------------------------------------------------- public function
def stepwise(
    model,
    X,
    y,
    *,
    direction: str = "forward",
    epochs: int = 200,
    learning_rate: float = 1e-2,
    batch_size: int | None = None,
    loss: str = "auto",
    validation_data: tuple[Any, Any] | None = None,
    max_steps: int | None = None,
    key: jax.Array,
    progress=None,
    candidate_group: int | None = None,
    warn_seconds: float | None = 60.0,
    max_seconds: float | None = None,
) -> StepwiseResult:
    """Forward stepwise addition or backward stepwise elimination of inputs, retraining the architecture.

    Forward: start with no inputs; at each step retrain one network per input not yet in, with that input
    added, and keep the input giving the lowest error. Backward: start with all inputs; at each step retrain
    one network per remaining input, with that input removed, and drop the input whose removal gives the
    lowest error. Inputs are ranked by order of entry (forward) or reverse order of removal (backward);
    ``importance`` is the error change at each input's step (Olden, Joy & Death 2004, Gevrey, Dimopoulos & Lek
    2003).

    Every network is the model's dense architecture (layer sizes and activations, see
    :func:`jaxsens._dense.dense_layers`) trained from scratch with Adam; an excluded input is multiplied by 0.
    All candidates of every step share the same initial weights and minibatch order (drawn from ``key``), so
    they differ only in their inputs and the result is deterministic given ``key``. The candidates of a step
    are trained together with ``jax.vmap`` in groups of ``candidate_group`` (the last group padded), so every
    step reuses one compiled program.

    Cost: step ``s`` trains ``n_features - s`` networks (plus one baseline network at step 0), each for
    ``epochs`` passes over ``X``; a network-epoch is about ``6 * n_samples * sum(n_in * n_out)`` FLOPs. For
    the seed-000 shape (82 -> 500 -> 500 -> 500 -> 2, 2,000 rows) that is 6.5 GFLOP, so a full backward run
    with ``epochs=200`` is about 4.4 PFLOP: hours on a CPU. ``max_steps`` and ``epochs`` bound the time; before
    training, one group is timed for a few epochs and the run is extrapolated (see
    :func:`estimate_stepwise_cost`): a :class:`StepwiseCostWarning` names the estimate and the ``max_steps`` /
    ``epochs`` that would fit when it exceeds ``warn_seconds``, and ``max_seconds`` refuses such a run.

    Args:
        model: a dense :class:`~jaxsens.Model` (its weights are not used, only its architecture).
        X: ``[n_samples, n_features]`` training inputs (scale them as the model expects, e.g. standardised).
        y: ``[n_samples]`` or ``[n_samples, n_outputs]`` targets; integer class labels ``[n_samples]`` for a
            classifier with several outputs.
        direction: ``"forward"`` or ``"backward"``.
        epochs: passes over ``X`` per network.
        learning_rate: Adam step size.
        batch_size: minibatch size; ``None`` trains on the full batch.
        loss: ``"mse"``, ``"cross_entropy"`` (softmax or sigmoid output layers) or ``"auto"`` (cross-entropy
            for softmax / sigmoid outputs, MSE otherwise). The reported error is this loss.
        validation_data: ``(X_val, y_val)`` on which errors are measured (default: the training data).
        max_steps: stop after this many steps (default: until every input has entered / left).
        key: ``jax.random.key`` for the initial weights and the minibatch order.
        progress: ``True`` for a progress bar (networks trained, "step s/S"), or a callable
            ``progress(networks_done, networks_total)`` called after every trained group of candidates;
            ``networks_total = 1 + sum over steps of (n_features - s)`` is known before the first step.
        candidate_group: candidates trained together per vmapped call; ``None`` picks the largest group whose
            training memory stays under 1 GiB, splitting the first step evenly. Results do not depend on it
            (up to float32 rounding).
        warn_seconds: warn when the estimated training time exceeds this (``None``: no estimate, no warning).
        max_seconds: refuse a run estimated to take longer than this (``None``: no limit).

    Returns:
        :class:`StepwiseResult` with ``order``, ``errors`` after each step and ``ranking()``.

    Example:
        >>> import jax, numpy as np
        >>> from jaxsens._dense import dense_model
        >>> m = dense_model(
        ...     [{"W": np.zeros((3, 4)), "b": np.zeros(4)}, {"W": np.zeros((4, 1)), "b": np.zeros(1)}],
        ...     ["tanh", "identity"],
        ... )
        >>> X = np.random.default_rng(0).normal(size=(128, 3)).astype("float32")
        >>> r = stepwise(m, X, 2 * X[:, 1] + 0.1 * X[:, 0], epochs=150, key=jax.random.key(0))
        >>> r.order[0]
        'x1'
    """
    key = _typed_key(key)
    _check_direction(direction)
    epochs = _check_epochs(epochs)
    if not learning_rate > 0:
        raise ArgumentError(f"learning_rate={learning_rate!r}; give a positive step size")
    _check_progress(progress)
    for name, value in (("warn_seconds", warn_seconds), ("max_seconds", max_seconds)):
        if value is not None and not (isinstance(value, int | float) and value > 0):
            raise ArgumentError(f"{name}={value!r}; give a positive number of seconds or None")
    layers = dense_layers(model, method="stepwise")
    sizes = _sizes(layers)
    n_features, n_outputs = sizes[0], sizes[-1]
    loss = _resolve_loss(loss, layers[-1].activation)
    X, y = _check_xy(X, y, n_features, n_outputs, "X", "y")
    X_eval, y_eval = (
        (X, y)
        if validation_data is None
        else _check_xy(*validation_data, n_features, n_outputs, "validation_data[0]", "validation_data[1]")
    )
    batch_size = _check_batch_size(batch_size, X.shape[0])
    n_steps = _check_max_steps(max_steps, n_features)
    out = run_stepwise(
        layers,
        X,
        y,
        X_eval,
        y_eval,
        direction=direction,
        epochs=epochs,
        learning_rate=float(learning_rate),
        batch_size=batch_size,
        loss=loss,
        max_steps=n_steps,
        key=key,
        progress=progress,
        candidate_group=candidate_group,
        warn_seconds=warn_seconds,
        max_seconds=max_seconds,
    )
    names = tuple(model.feature_names or ())
    names = names if len(names) == n_features else tuple(f"x{i}" for i in range(n_features))
    return StepwiseResult(
        direction=direction,
        order=tuple(names[i] for i in out["order_index"]),
        order_index=out["order_index"],
        errors=out["errors"],
        baseline_error=out["baseline_error"],
        importance=out["importance"],
        candidate_errors=out["candidate_errors"],
        feature_names=names,
        metric=loss,
    )


def _sizes(layers) -> tuple[int, ...]:
    return (int(layers[0].W.shape[0]),) + tuple(int(l.W.shape[1]) for l in layers)


def _check_direction(direction) -> None:
    if direction not in ("forward", "backward"):
        raise ArgumentError(f"direction={direction!r}; use 'forward' or 'backward'")


def _check_epochs(epochs) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 1:
        raise ArgumentError(f"epochs={epochs!r}; give a positive integer")
    return int(epochs)


def _check_batch_size(batch_size, n_rows: int) -> int:
    if batch_size is None:
        return n_rows
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ArgumentError(f"batch_size={batch_size!r}; give a positive size or None for full batch")
    return min(int(batch_size), n_rows)


def _check_max_steps(max_steps, n_features: int) -> int:
    n_steps = n_features if max_steps is None else max_steps
    if (
        isinstance(n_steps, bool)
        or not isinstance(n_steps, int | np.integer)
        or not 1 <= n_steps <= n_features
    ):
        raise ArgumentError(f"max_steps={max_steps}; give 1..{n_features} (n_features)")
    return int(n_steps)


def _check_group(candidate_group, sizes, batch_rows: int) -> int:
    if candidate_group is None:
        return auto_group(sizes, batch_rows)
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


def _typed_key(key) -> jax.Array:
    if key is None:
        raise ArgumentError("stepwise() needs key=jax.random.key(seed) (explicit randomness; no global seed)")
    key = key if isinstance(key, jax.Array) else jnp.asarray(key)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        try:
            key = jax.random.wrap_key_data(key)
        except (TypeError, ValueError) as e:
            raise ArgumentError(f"key must be a JAX PRNG key (jax.random.key(0)), got {key!r}") from e
    if key.shape != ():
        raise ArgumentError(f"key must be a single PRNG key, got an array of {key.shape} keys")
    return key


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


def _check_xy(X, y, n_features: int, n_outputs: int, x_name: str, y_name: str):
    X = np.asarray(X, np.float32)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise DataError(f"{x_name} has shape {X.shape}; the model expects [n_samples, {n_features}]")
    if y.shape[0] != X.shape[0]:
        raise DataError(f"{y_name} has {y.shape[0]} rows but {x_name} has {X.shape[0]}")
    if y.ndim == 1 and n_outputs == 1:
        y = y[:, None]
    elif y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y)):
            raise DataError(
                f"{y_name} is 1-D but the model has {n_outputs} outputs; give integer class labels "
                f"0..{n_outputs - 1} or an [n_samples, {n_outputs}] array"
            )
        labels = y.astype(int)
        if labels.min() < 0 or labels.max() >= n_outputs:
            raise DataError(
                f"{y_name} has labels {labels.min()}..{labels.max()}; expected 0..{n_outputs - 1}"
            )
        y = np.eye(n_outputs, dtype=np.float32)[labels]
    if y.shape[1:] != (n_outputs,):
        raise DataError(f"{y_name} has shape {y.shape}; expected [n_samples] or [n_samples, {n_outputs}]")
    return jnp.asarray(X), jnp.asarray(y, jnp.float32)
