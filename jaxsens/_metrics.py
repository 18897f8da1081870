"""Scoring rules for the error-based methods: ``mse``, ``mae``, ``accuracy``, ``log_loss`` and user callables.

Each built-in metric is the mean over rows of a **per-sample** value, written for one sample
(``y_true`` of one row, ``y_pred`` of one row) and averaged with a mask, so a data set streamed in chunks
gives the same value as one batch, and the functions run inside ``jax.jit`` / ``jax.vmap``.

Targets, per row, are either

* the model's output shape (or the same number of elements): regression targets for ``mse`` / ``mae``, or
  element-wise binary labels in {0, 1} for ``accuracy`` / ``log_loss`` (a sigmoid output, several sigmoid
  outputs or one per time step as in seed 001: the value is averaged over the elements), or
* one integer class label, for an output of ``k >= 2`` class probabilities (a softmax): ``accuracy`` compares
  ``argmax``, ``log_loss`` is ``-log p[label]``. Pass one-hot targets as labels (``y.argmax(1)``).

``accuracy`` and ``log_loss`` expect probabilities, not logits: a binary output is read as ``P(class 1)`` and
thresholded at 0.5. ``log_loss`` clips probabilities to ``[eps, 1 - eps]`` with ``eps`` the float32 machine
epsilon, and reads a binary output ``p`` as the pair ``[1 - p, p]``, as ``sklearn.metrics.log_loss`` does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError, DataError

__all__ = [
    "METRIC_CHOICES",
    "Metric",
    "accuracy",
    "check_target_shape",
    "check_targets",
    "get_metric",
    "log_loss",
    "mae",
    "mse",
    "resolve_metric",
]


# ------------------------------------------------------------------------------------------------- per sample
def _squared_error(y_true, y_pred):
    return jnp.mean((jnp.reshape(y_true, jnp.shape(y_pred)) - y_pred) ** 2)


def _absolute_error(y_true, y_pred):
    return jnp.mean(jnp.abs(jnp.reshape(y_true, jnp.shape(y_pred)) - y_pred))


def _is_label(y_true, y_pred) -> bool:
    return jnp.size(y_true) == 1 and jnp.size(y_pred) >= 2


def _correct(y_true, y_pred):
    p = jnp.reshape(y_pred, -1)
    if _is_label(y_true, y_pred):
        return (jnp.argmax(p) == jnp.reshape(y_true, ()).astype(jnp.int32)).astype(jnp.float32)
    y = jnp.reshape(y_true, -1)
    return jnp.mean(((p > 0.5) == (y > 0.5)).astype(jnp.float32))


def _cross_entropy(y_true, y_pred):
    p = jnp.reshape(y_pred, -1)
    eps = jnp.finfo(p.dtype).eps
    if _is_label(y_true, y_pred):
        label = jnp.reshape(y_true, ()).astype(jnp.int32)
        return -jnp.log(jnp.clip(p[label], eps, 1 - eps))
    y = jnp.reshape(y_true, -1).astype(p.dtype)
    q0, q1 = jnp.clip(1 - p, eps, 1 - eps), jnp.clip(p, eps, 1 - eps)
    return jnp.mean(-(1 - y) * jnp.log(q0) - y * jnp.log(q1))


def _masked_mean(per_sample, y_true, y_pred, mask):
    values = jax.vmap(per_sample)(jnp.asarray(y_true), jnp.asarray(y_pred))
    if mask is None:
        return jnp.mean(values)
    mask = jnp.asarray(mask, bool)
    return jnp.sum(jnp.where(mask, values, 0)) / jnp.maximum(jnp.sum(mask), 1)


# ------------------------------------------------------------------------------------------------------ batch
def mse(y_true, y_pred, mask=None):
    """Mean squared error over rows and output elements (sklearn's ``mean_squared_error``, uniform average).

    Args:
        y_true: ``[n_samples, *output_shape]`` (or the same number of elements per row).
        y_pred: ``[n_samples, *output_shape]``.
        mask: optional ``[n_samples]`` bool; False rows are ignored.

    Example:
        >>> float(mse(jnp.array([[0.0], [2.0]]), jnp.array([[1.0], [2.0]])))
        0.5
    """
    return _masked_mean(_squared_error, y_true, y_pred, mask)


def mae(y_true, y_pred, mask=None):
    """Mean absolute error over rows and output elements; arguments as :func:`mse`.

    Example:
        >>> float(mae(jnp.array([[0.0], [2.0]]), jnp.array([[1.0], [2.0]])))
        0.5
    """
    return _masked_mean(_absolute_error, y_true, y_pred, mask)


def accuracy(y_true, y_pred, mask=None):
    """Share of correct predictions: ``argmax`` against integer labels, or thresholded probabilities (0.5).

    Args:
        y_true: ``[n_samples]`` integer labels for class-probability outputs ``[n_samples, k]``, or binary
            labels with the output's shape (averaged over elements: one minus the Hamming loss).
        y_pred: ``[n_samples, *output_shape]`` probabilities.
        mask: optional ``[n_samples]`` bool.

    Example:
        >>> float(accuracy(jnp.array([0, 1]), jnp.array([[0.9, 0.1], [0.8, 0.2]])))
        0.5
    """
    return _masked_mean(_correct, y_true, y_pred, mask)


def log_loss(y_true, y_pred, mask=None):
    """Cross-entropy of probabilities: ``-log p[label]``, or binary cross-entropy averaged over elements.

    Arguments as :func:`accuracy`; probabilities are clipped to ``[eps, 1 - eps]`` (float32 ``eps``).

    Example:
        >>> round(float(log_loss(jnp.array([1.0]), jnp.array([[0.5]]))), 6)
        0.693147
    """
    return _masked_mean(_cross_entropy, y_true, y_pred, mask)


# ----------------------------------------------------------------------------------------------------- Metric
@dataclasses.dataclass(frozen=True)
class Metric:
    """A scoring rule as the error-based methods use it.

    Attributes:
        name: for reports.
        fn: with ``per_sample=True``, ``fn(y_true, y_pred)`` of **one** row returning a scalar (a JAX
            function; the metric is its mean over rows, computed in streamed chunks inside the kernel). With
            ``per_sample=False``, ``fn(y_true, y_pred)`` of the whole data set (numpy arrays
            ``[n_samples, ...]``), returning a float, e.g. ``sklearn.metrics.r2_score``; it runs on the host,
            once per evaluated variant.
        greater_is_better: False for losses (importance = increase), True for scores (importance = decrease).
        per_sample: see ``fn``.
        targets: ``"values"`` (targets have the output's number of elements) or ``"labels_or_values"`` (also
            accepts one class label per row for a class-probability output). Used to validate ``y``.
    """

    name: str
    fn: Callable[[Any, Any], Any]
    greater_is_better: bool = False
    per_sample: bool = False
    targets: str = "values"

    @property
    def sign(self) -> float:
        """``+1`` for losses, ``-1`` for scores: importance = ``sign * (metric(new) - metric(original))``."""
        return -1.0 if self.greater_is_better else 1.0


_BUILTIN = {
    "mse": Metric("mse", _squared_error, greater_is_better=False, per_sample=True),
    "mae": Metric("mae", _absolute_error, greater_is_better=False, per_sample=True),
    "accuracy": Metric(
        "accuracy", _correct, greater_is_better=True, per_sample=True, targets="labels_or_values"
    ),
    "log_loss": Metric(
        "log_loss", _cross_entropy, greater_is_better=False, per_sample=True, targets="labels_or_values"
    ),
}


def get_metric(metric: str | Metric | Callable, *, what: str = "metric") -> Metric:
    """A :class:`Metric` from a name (``"mse"``, ``"mae"``, ``"accuracy"``, ``"log_loss"``), a Metric or a
    callable.

    A plain callable ``fn(y_true, y_pred) -> float`` is taken as a **loss** on the whole data set (lower is
    better; importance = its increase); wrap it as ``Metric(name, fn, greater_is_better=True)`` for a score
    such as ``r2_score``, or with ``per_sample=True`` for a per-row JAX function that can be streamed.
    """
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        key = metric.lower().replace("-", "_")
        key = {
            "neg_mean_squared_error": "mse",
            "neg_mean_absolute_error": "mae",
            "neg_log_loss": "log_loss",
        }.get(key, key)
        if key not in _BUILTIN:
            raise ArgumentError(
                f"{what}={metric!r} is not a known metric; use one of {sorted(_BUILTIN)}, a Metric or "
                "a callable fn(y_true, y_pred) -> float"
            )
        return _BUILTIN[key]
    if callable(metric):
        return Metric(getattr(metric, "__name__", type(metric).__name__), metric)
    raise ArgumentTypeError(f"{what} must be a metric name, a Metric or a callable, got {type(metric).__name__}")


def check_targets(
    metric: Metric, y: np.ndarray, n_samples: int, output_shape, *, what: str = "y"
) -> np.ndarray:
    """Validate targets against the model's output (before tracing); returns ``y`` as ``[n_samples, k]``
    float32.

    ``k`` is the number of output elements, or 1 for class labels.
    """
    y = np.asarray(y)
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise DataError(f"{what} has dtype {y.dtype}; expected numbers (class labels as integers)")
    if y.ndim == 0 or y.shape[0] != n_samples:
        raise DataError(f"{what} has shape {list(y.shape)}; expected {n_samples} rows, one per row of X")
    finite = np.isfinite(y.reshape(y.shape[0], -1)).all(axis=1) if y.ndim > 1 else np.isfinite(y)
    if not finite.all():
        raise DataError(
            f"{what} row {int(np.flatnonzero(~finite)[0])} holds NaN or Inf; clean the targets first"
        )
    n_out = math.prod(output_shape)
    per_row = math.prod(y.shape[1:])
    label_ok = metric.targets == "labels_or_values" and per_row == 1 and n_out >= 2
    if per_row != n_out and not label_ok:
        hint = " or one class label per row" if metric.targets == "labels_or_values" and n_out >= 2 else ""
        raise DataError(
            f"{what} has shape {list(y.shape)}; metric {metric.name!r} needs [{n_samples}, "
            f"{', '.join(map(str, output_shape)) or '1'}] (the model's output shape){hint}"
        )
    if label_ok:
        labels = y.reshape(-1)
        if not np.all(np.equal(np.mod(labels, 1), 0)) or labels.min() < 0 or labels.max() >= n_out:
            raise DataError(
                f"{what} holds class labels outside 0..{n_out - 1} (or non-integers); the model has "
                f"{n_out} outputs"
            )
    return y.reshape(n_samples, -1).astype(np.float32)


METRIC_CHOICES = ("auto", "mse", "mae", "accuracy", "log_loss")
"""Metric names the CLI offers; ``"auto"`` picks by target type (:func:`resolve_metric`)."""


def resolve_metric(metric, *, targets_dtype, model) -> Metric:
    """``metric="auto"`` by target type, else :func:`get_metric`.

    ``"auto"``: integer / bool targets are class labels: ``log_loss`` when the model's outputs are
    probabilities that sum to one (a softmax head, ``model.outputs_sum_to_one``), else ``accuracy``;
    floating-point targets are values: ``mse``.
    """
    if isinstance(metric, str) and metric == "auto":
        if np.dtype(targets_dtype).kind in "iub":
            return _BUILTIN["log_loss" if getattr(model, "outputs_sum_to_one", False) else "accuracy"]
        return _BUILTIN["mse"]
    return get_metric(metric)


def check_target_shape(metric: Metric, row_shape, output_shape, *, what: str = "targets") -> bool:
    """Check streamed targets' per-row shape against the model's output before tracing; True for class labels.

    Targets hold, per row, the model's number of output elements (values, or element-wise binary labels), or,
    for ``accuracy`` / ``log_loss`` and an output of ``k >= 2`` class probabilities, one class label (then the
    labels' range is checked as they stream: see the methods).

    Raises:
        DataError: naming the targets, their per-row shape, the metric and the shape it needs.
    """
    n_out = math.prod(output_shape)
    per_row = math.prod(row_shape or ())
    labels = metric.targets == "labels_or_values" and per_row == 1 and n_out >= 2
    if per_row != n_out and not labels:
        hint = " or one class label per row" if metric.targets == "labels_or_values" and n_out >= 2 else ""
        raise DataError(
            f"{what} hold {list(row_shape or ())} values per row; metric {metric.name!r} needs "
            f"[{', '.join(map(str, output_shape)) or '1'}] per row (the model's output shape){hint}"
        )
    return labels
