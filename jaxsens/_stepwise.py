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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from converters.errors import ArgumentError, DataError
from jaxsens._dense import DenseStack, activation_fn, dense_layers
from jaxsens._results import _finish_figure, _pyplot, frame, register_result, save_result

__all__ = ["StepwiseResult", "stepwise"]


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


def fit(init, mask, X, y, key, learning_rate, *, activations, loss, epochs, batch_size):
    """Train one dense stack with Adam on ``X * mask``; returns the trained params.

    Args:
        init: initial params ``[{"W", "b"}, ...]``.
        mask: ``[n_features]`` 0/1 input mask.
        X, y: ``[n_samples, n_features]``, ``[n_samples, n_outputs]``.
        key: shuffling key (minibatch order of epoch ``e`` is ``permutation(fold_in(key, e))``).
        learning_rate: Adam step size (a traced scalar: changing it does not recompile).
        activations, loss, epochs, batch_size: static settings.
    """
    opt = optax.adam(learning_rate)
    Xm = X * mask
    n = X.shape[0]
    n_batches = max(n // batch_size, 1)
    loss_fn = functools.partial(_loss, activations=activations, loss=loss)

    def step(carry, batch):
        p, s = carry
        xs, ys = batch
        grads = jax.grad(loss_fn)(p, xs, ys)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), None

    def epoch(carry, e):
        if batch_size >= n:
            return step(carry, (Xm, y))
        idx = jax.random.permutation(jax.random.fold_in(key, e), n)[: n_batches * batch_size]
        idx = idx.reshape(n_batches, batch_size)
        return jax.lax.scan(step, carry, (Xm[idx], y[idx]))

    (params, _), _ = jax.lax.scan(epoch, (init, opt.init(init)), jnp.arange(epochs))
    return params


@functools.partial(jax.jit, static_argnames=("activations", "loss", "epochs", "batch_size"))
def _step_errors(
    masks, init, X, y, X_eval, y_eval, key, learning_rate, *, activations, loss, epochs, batch_size
):
    """Train one network per row of ``masks`` ``[n_candidates, n_features]`` (vmapped); their eval errors."""

    def one(mask):
        p = fit(
            init,
            mask,
            X,
            y,
            key,
            learning_rate,
            activations=activations,
            loss=loss,
            epochs=epochs,
            batch_size=batch_size,
        )
        return _loss(p, X_eval * mask, y_eval, activations=activations, loss=loss)

    return jax.vmap(one)(masks)


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
    they differ only in their inputs and the result is deterministic given ``key``. The candidates are
    padded to ``n_features + 1`` networks per step so every step reuses one compiled program.

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
    if direction not in ("forward", "backward"):
        raise ArgumentError(f"direction={direction!r}; use 'forward' or 'backward'")
    if not isinstance(epochs, int | np.integer) or epochs < 1:
        raise ArgumentError(f"epochs={epochs!r}; give a positive integer")
    if not learning_rate > 0:
        raise ArgumentError(f"learning_rate={learning_rate!r}; give a positive step size")
    layers = dense_layers(model, method="stepwise")
    activations = tuple((l.activation, tuple(l.attrs)) for l in layers)
    sizes = (int(layers[0].W.shape[0]),) + tuple(int(l.W.shape[1]) for l in layers)
    n_features, n_outputs = sizes[0], sizes[-1]
    loss = _resolve_loss(loss, layers[-1].activation)
    X, y = _check_xy(X, y, n_features, n_outputs, "X", "y")
    X_eval, y_eval = (
        (X, y)
        if validation_data is None
        else _check_xy(*validation_data, n_features, n_outputs, "validation_data[0]", "validation_data[1]")
    )
    n = X.shape[0]
    batch_size = n if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ArgumentError(f"batch_size={batch_size}; give a positive size or None for full batch")
    n_steps = n_features if max_steps is None else int(max_steps)
    if not 1 <= n_steps <= n_features:
        raise ArgumentError(f"max_steps={max_steps}; give 1..{n_features} (n_features)")
    settings = {
        "activations": activations,
        "loss": loss,
        "epochs": int(epochs),
        "batch_size": min(batch_size, n),
    }
    lr = jnp.float32(learning_rate)

    init = init_params(jax.random.fold_in(key, 0), sizes)  # shared by every candidate of every step
    shuffle_key = jax.random.fold_in(key, 1)
    active = np.zeros(n_features, bool) if direction == "forward" else np.ones(n_features, bool)
    order, errors = [], []
    cand = np.full((n_steps, n_features), np.nan)
    importance = np.full(n_features, np.nan)
    baseline = None
    for step in range(n_steps):
        free = np.flatnonzero(~active) if direction == "forward" else np.flatnonzero(active)
        masks = np.tile(active.astype(np.float32), (n_features + 1, 1))
        for row, j in enumerate(free):
            masks[row, j] = 1.0 if direction == "forward" else 0.0
        # the last row is the current input set itself: the baseline error at step 0, padding afterwards
        errs = np.asarray(
            _step_errors(jnp.asarray(masks), init, X, y, X_eval, y_eval, shuffle_key, lr, **settings),
            np.float64,
        )
        if step == 0:
            baseline = float(errs[n_features])
        cand[step, free] = errs[: len(free)]
        best = int(free[np.argmin(errs[: len(free)])])
        prev = baseline if step == 0 else errors[-1]
        err = float(np.min(errs[: len(free)]))
        importance[best] = prev - err if direction == "forward" else err - prev
        active[best] = direction == "forward"
        order.append(best)
        errors.append(err)
    names = tuple(model.feature_names or ())
    names = names if len(names) == n_features else tuple(f"x{i}" for i in range(n_features))
    return StepwiseResult(
        direction=direction,
        order=tuple(names[i] for i in order),
        order_index=np.asarray(order, int),
        errors=np.asarray(errors),
        baseline_error=float(baseline),
        importance=importance,
        candidate_errors=cand,
        feature_names=names,
        metric=loss,
    )


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
