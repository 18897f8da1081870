"""Perturbation importance (seed 001's measure) and Scardi & Harding's input-perturbation schedule.

Both methods, and the permutation / improved-stepwise methods built on the same machinery, follow one pattern:
for each row ``x`` a *variant function* builds every modified copy of it at once,
``[n_variants, *input_shape]`` (every feature x draw x level, selected with a one-hot mask on the last axis;
``vmap`` over rows, never a Python loop over features); one compiled kernel evaluates the chunk's rows and all
their copies and folds per-row statistics of the output changes (or of the change in a per-sample loss) with
:mod:`jaxsens._stats`. Data streams through :func:`jaxsens._engine.run` in fixed-size padded chunks. Methods
that also need per-row targets (or permuted values) pack them next to ``x`` in one ``[n_samples, width]``
array, so they stream through the same engine.

An input the model ignores gets an effect of exactly 0 (see :func:`predictions`). Random draws use per-row
keys ``fold_in(key, global_row_index)``: the batch size (and the device count) never changes which noise a
row sees.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError
from jaxsens import _engine
from jaxsens._metrics import Metric, check_targets, get_metric
from jaxsens._results import (
    finish_figure,
    output_index,
    pyplot,
    ranked,
    ranking_figure,
    register_result,
    save_result,
)
from jaxsens._variants import (  # noqa: F401 (moved; ported next)
    Spec,
    Task,
    as_key,
    change_kernel,
    check_model,
    check_rows,
    feature_std,
    host_scores,
    onehot_last,
    pack,
    predict_all,
    predictions,
    row_bytes,
    rows_frame,
    run_loss,
    select_features,
    stderr_of,
)

__all__ = ["InputPerturbation", "PerturbationImportance", "input_perturbation", "perturbation_importance"]


# ----------------------------------------------------------------------------------------------- perturbation
def _noise_variants(x, parts, key, arrays, options):
    n_draws, features, noise = options
    shape = (n_draws, *x.shape)
    if noise == "normal":
        eps = jax.random.normal(key, shape, x.dtype)
    else:
        eps = jax.random.uniform(key, shape, x.dtype, minval=-1.0, maxval=1.0)
    hit = onehot_last(features, x.shape[-1], x.ndim)  # [n_sel, 1.., F]
    moved = x + arrays["scale"] * eps  # [n_draws, *input_shape]
    return jnp.where(hit[None], moved[:, None], x).reshape(-1, *x.shape)


@register_result("perturbation_importance")
@dataclasses.dataclass(frozen=True, eq=False)
class PerturbationImportance:
    """Effect of random perturbations of each input on the model's output (seed 001's measure).

    Attributes:
        effect: ``[n_features]`` RMS output change,
            ``sqrt(mean over rows, draws and outputs of (f(x') - f(x))^2)``.
        stderr: ``[n_features]`` standard error of ``effect`` (delta method on the per-row mean square).
        effect_per_output: ``[n_features, n_outputs]`` the same RMS for each output.
        mean_change: ``[n_features, n_outputs]`` mean signed change ``f(x') - f(x)`` (direction; near 0 for
            symmetric noise on a smooth model).
        n_samples: rows used.
        n_draws: noise draws per row and feature.
        scale: ``[n_features]`` noise scale of each selected feature.
        noise: ``"normal"`` or ``"uniform"``.
        feature_names: the perturbed features.
        output_names: ``n_outputs`` names.
        feature_index: ``[n_features]`` their indices on the model's last input axis.
    """

    effect: np.ndarray
    stderr: np.ndarray
    effect_per_output: np.ndarray
    mean_change: np.ndarray
    n_samples: int
    n_draws: int
    scale: np.ndarray
    noise: str
    feature_names: tuple[str, ...]
    output_names: tuple[str, ...]
    feature_index: np.ndarray

    @property
    def importance(self) -> np.ndarray:
        """``effect``."""
        return self.effect

    def ranking(self, output: int | str | None = None) -> tuple[tuple[str, float, float], ...]:
        """``((feature, effect, stderr), ...)``, largest first; ``output=`` ranks by one output's RMS."""
        if output is None:
            return ranked(self.feature_names, self.effect, self.stderr)
        return ranked(self.feature_names, self.effect_per_output[:, output_index(output, self.output_names)])

    def to_frame(self):
        """One row per feature: ``feature``, ``effect``, ``stderr``, ``effect[<output>]`` each, ``rank``."""
        cols = {"effect": self.effect, "stderr": self.stderr}
        if len(self.output_names) > 1:
            cols.update(
                {f"effect[{o}]": self.effect_per_output[:, k] for k, o in enumerate(self.output_names)}
            )
        return rows_frame(self.feature_names, cols, self.effect)

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON (lossless); read it back with :func:`jaxsens.load_result`."""
        save_result(self, path)

    def plot(self, *, top: int = 20, path: str | os.PathLike | None = None):
        """Ranked bars of ``effect`` with ``stderr`` error bars; returns the matplotlib ``Figure``."""
        return ranking_figure(
            self.ranking(), top=top, xlabel=f"RMS output change ({self.noise} noise)", path=path
        )


def perturbation_importance(
    model,
    data,
    *,
    scale: float | Sequence[float] = 0.2,
    n_draws: int = 1,
    noise: str = "normal",
    features: Sequence[int | str] | None = None,
    key,
    batch_size: int | None = None,
    nan_policy: str = "raise",
    progress=None,
) -> PerturbationImportance:
    r"""RMS change of the model's output when one input at a time is perturbed by random noise.

    For every row :math:`x`, selected feature :math:`j` and draw :math:`d`, :math:`x'` equals :math:`x` with
    feature :math:`j` moved by :math:`s_j \varepsilon` (:math:`\varepsilon \sim N(0, 1)` for
    ``noise="normal"``, :math:`U(-1, 1)` for ``"uniform"``); for a sequence input ``[T, F]`` feature :math:`j`
    is the last axis and is perturbed at every time step, with independent noise per step (as in seed 001).
    The effect is

    .. math:: e_j = \sqrt{\tfrac{1}{N D K} \textstyle\sum_{x, d, k} (f_k(x') - f_k(x))^2}

    over ``N`` rows, ``D`` draws and ``K`` outputs; ``effect_per_output`` omits the mean over ``k``. Every
    feature x draw of a row is evaluated in one batch with the unmodified row, so an input the model ignores
    gets exactly 0. Noise comes from per-row keys ``fold_in(key, global_row_index)``: batch size and device
    count do not change the result.

    Args:
        model: a single-input :class:`jaxsens.Model`.
        data: ``[n_samples, *input_shape]`` array or anything the engine reads (``.npy``, ``.csv``, batches,
            ...).
        scale: noise scale in input units (seed 001: 0.2), one value or one per model feature.
        n_draws: noise draws per row and feature.
        noise: ``"normal"`` or ``"uniform"``.
        features: names or indices of the features to perturb (default all).
        key: a JAX PRNG key, e.g. ``jax.random.key(0)``.
        batch_size: rows per chunk (default from memory).
        nan_policy: ``"raise"`` or ``"skip"`` rows holding NaN / Inf.
        progress: ``True`` for a progress bar, or ``progress(rows_done, rows_total)``.

    Returns:
        :class:`PerturbationImportance` with ``effect`` ``[n_selected]`` and ``effect_per_output``
        ``[n_selected, n_outputs]``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: jnp.stack([2 * x[0]]), {}, input_shape=(2,))
        >>> r = perturbation_importance(m, np.zeros((1000, 2)), scale=0.1, key=jax.random.key(0))
        >>> np.round(r.effect, 1).tolist()
        [0.2, 0.0]
    """
    check_model(model, "perturbation_importance")
    if noise not in ("normal", "uniform"):
        raise ArgumentError(f"noise must be 'normal' or 'uniform', got {noise!r}")
    if isinstance(n_draws, bool) or not isinstance(n_draws, int | np.integer) or n_draws < 1:
        raise ArgumentError(f"n_draws must be a positive integer, got {n_draws!r}")
    n_features = int(model.input_shape[-1])
    names = tuple(model.feature_names or [f"x{i}" for i in range(n_features)])
    sel = select_features(features, names)
    scale_arr = np.broadcast_to(np.asarray(scale, np.float64), (n_features,)) if np.ndim(scale) == 0 else None
    if scale_arr is None:
        scale_arr = np.asarray(scale, np.float64)
        if scale_arr.shape != (n_features,):
            raise ArgumentError(
                f"scale has shape {list(scale_arr.shape)}; give one number or one per feature ({n_features})"
            )
    if not np.all(np.isfinite(scale_arr)) or np.any(scale_arr < 0):
        raise ArgumentError(f"scale must be finite and >= 0, got {scale!r}")
    key_data, impl = as_key(key, "perturbation_importance")
    spec = Spec(_noise_variants, options=(int(n_draws), sel, noise), key_impl=impl, n_draws=int(n_draws))
    task = Task(model, {"key": key_data, "scale": jnp.asarray(scale_arr, jnp.float32)}, spec)
    stats, info = _engine.run(
        change_kernel,
        task,
        data,
        batch_size=batch_size,
        bytes_per_sample=row_bytes(task, model.input_shape),
        nan_policy=nan_policy,
        progress=progress,
    )
    sq_all, sq, d = stats["sq_all"], stats["sq"], stats["d"]
    ms = np.asarray(sq_all.mean)
    effect = np.sqrt(np.maximum(ms, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        stderr = np.where(effect > 0, stderr_of(sq_all) / (2 * effect), 0.0)
    return PerturbationImportance(
        effect=effect,
        stderr=stderr,
        effect_per_output=np.sqrt(np.maximum(np.asarray(sq.mean), 0)),
        mean_change=np.asarray(d.mean),
        n_samples=int(info.n_samples),
        n_draws=int(n_draws),
        scale=scale_arr[list(sel)].copy(),
        noise=noise,
        feature_names=tuple(names[i] for i in sel),
        output_names=tuple(model.output_names or [f"y{k}" for k in range(model.n_outputs)]),
        feature_index=np.asarray(sel, np.int64),
    )


# --------------------------------------------------------------------------------------------------- schedule
def _level_variants(x, parts, key, arrays, options):
    eps = jax.random.normal(key, x.shape, x.dtype)
    n_features = x.shape[-1]
    hit = onehot_last(range(n_features), n_features, x.ndim)  # [F, 1.., F]
    step = arrays["std"] * eps  # [*input_shape]
    moved = x + arrays["levels"].reshape(-1, *([1] * x.ndim)) * step  # [L, *input_shape]
    return jnp.where(hit[None], moved[:, None], x).reshape(-1, *x.shape)


@register_result("input_perturbation")
@dataclasses.dataclass(frozen=True, eq=False)
class InputPerturbation:
    """Error increase when each input gets white noise of growing amplitude (Scardi & Harding 1999).

    Attributes:
        error_increase: ``[n_features, n_levels]`` mean change of the metric (an increase of error; for a
            score such as accuracy, its decrease) when the feature gets noise of ``level * std``.
        stderr: ``[n_features, n_levels]`` standard error of ``error_increase``.
        levels: ``[n_levels]`` noise amplitudes relative to each feature's standard deviation.
        baseline_error: the metric on the unperturbed data.
        input_std: ``[n_features]`` the standard deviations used (ddof = 1, pooled over time steps).
        metric: metric name.
        n_samples: rows used.
        feature_names: ``n_features`` names.
    """

    error_increase: np.ndarray
    stderr: np.ndarray
    levels: np.ndarray
    baseline_error: float
    input_std: np.ndarray
    metric: str
    n_samples: int
    feature_names: tuple[str, ...]

    @property
    def importance(self) -> np.ndarray:
        """``[n_features]`` mean error increase over the levels (the ranking score)."""
        return self.error_increase.mean(axis=1)

    def ranking(self) -> tuple[tuple[str, float, float], ...]:
        """``((feature, mean increase over levels, stderr), ...)``, largest first.

        The stderr is the mean of the per-level standard errors (an upper bound: the levels share their
        noise).
        """
        return ranked(self.feature_names, self.importance, self.stderr.mean(axis=1))

    def to_frame(self):
        """One row per feature: ``importance`` (mean over levels), ``increase@<level>`` each, ``rank``."""
        cols = {"importance": self.importance}
        cols.update({f"increase@{lv:g}": self.error_increase[:, k] for k, lv in enumerate(self.levels)})
        return rows_frame(self.feature_names, cols, self.importance)

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON (lossless); read it back with :func:`jaxsens.load_result`."""
        save_result(self, path)

    def plot(self, *, path: str | os.PathLike | None = None):
        """Error increase against noise level, one line per input; returns the matplotlib ``Figure``."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for j in np.argsort(-self.importance, kind="stable"):
            ax.errorbar(
                self.levels,
                self.error_increase[j],
                yerr=self.stderr[j],
                marker="o",
                capsize=2,
                label=self.feature_names[j],
            )
        ax.set_xlabel("noise level (x feature std)")
        ax.set_ylabel(f"{self.metric} increase")
        ax.grid(alpha=0.3)
        if len(self.feature_names) <= 20:
            ax.legend(fontsize="small")
        return finish_figure(fig, path)


def input_perturbation(
    model,
    X,
    y,
    *,
    levels: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    metric: str | Metric | Callable = "mse",
    key,
    batch_size: int | None = None,
    progress=None,
) -> InputPerturbation:
    r"""Scardi & Harding's input perturbation: error increase per input and noise level, all in one kernel.

    Each input :math:`j` in turn gets white noise :math:`\ell \, \sigma_j \, \varepsilon`,
    :math:`\varepsilon \sim N(0, 1)`, for every level :math:`\ell` (default 10 % ... 50 % of the feature's
    standard deviation :math:`\sigma_j`), with the other inputs unchanged, and the increase of the error
    :math:`\Delta_{j\ell} = \mathrm{metric}(y, f(X'_{j\ell})) - \mathrm{metric}(y, f(X))` is recorded (for
    scores like accuracy, the decrease). One noise draw per row is shared by all levels (so the curves are
    smooth in :math:`\ell`) and comes from ``fold_in(key, row_index)``. Sequence inputs: feature = last axis,
    perturbed at every time step; :math:`\sigma_j` is pooled over time. Inputs are ranked by the mean increase
    over levels.

    References: M. Scardi, L. W. Harding, "Developing an empirical model of phytoplankton primary production:
    a neural network case study", Ecological Modelling 120 (1999) 213-223; Olden, Joy & Death, Ecological
    Modelling 178 (2004) 389-397.

    Args:
        model: a single-input :class:`jaxsens.Model`.
        X: ``[n_samples, *input_shape]``.
        y: targets (see :mod:`jaxsens._metrics`): ``[n_samples, *output_shape]`` or class labels
            ``[n_samples]``.
        levels: noise amplitudes relative to each feature's standard deviation.
        metric: ``"mse"``, ``"mae"``, ``"accuracy"``, ``"log_loss"``, a :class:`Metric` or a callable loss
            ``fn(y_true, y_pred) -> float`` on the whole data set.
        key: a JAX PRNG key.
        batch_size: rows per chunk.
        progress: ``True`` for a progress bar.

    Returns:
        :class:`InputPerturbation` with ``error_increase`` ``[n_features, n_levels]``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] * 3.0, {}, input_shape=(2,))
        >>> X = np.random.default_rng(0).normal(size=(2000, 2)); y = 3 * X[:, :1]
        >>> r = input_perturbation(m, X, y, levels=(0.5,), key=jax.random.key(0))
        >>> np.round(r.error_increase[:, 0], 1).tolist()  # 9 * 0.25 * var(x0) for x0, nothing for x1
        [2.2, 0.0]
    """
    check_model(model, "input_perturbation")
    X = check_rows(model, X)
    metric = get_metric(metric)
    y_rows = check_targets(metric, y, X.shape[0], model.output_shape)
    lv = np.asarray(levels, np.float64).reshape(-1)
    if lv.size == 0 or not np.all(np.isfinite(lv)) or np.any(lv < 0):
        raise ArgumentError(f"levels must be non-negative numbers, got {levels!r}")
    key_data, impl = as_key(key, "input_perturbation")
    std = feature_std(X, model.feature_names, "input_perturbation")
    n_features = X.shape[-1]
    packed, layout = pack([("x", X), ("y", y_rows)])
    arrays = {"key": key_data, "std": jnp.asarray(std, jnp.float32), "levels": jnp.asarray(lv, jnp.float32)}
    task = Task(model, arrays, Spec(_level_variants, layout=layout, metric=metric, key_impl=impl))
    if metric.per_sample:
        base, diff, info = run_loss(task, packed, batch_size=batch_size, progress=progress)
        inc = metric.sign * np.asarray(diff.mean).reshape(lv.size, n_features).T
        err = stderr_of(diff).reshape(lv.size, n_features).T
        baseline, n = float(base.mean), int(info.n_samples)
    else:
        scores = host_scores(metric, np.asarray(y), predict_all(task, packed, batch_size=batch_size))
        inc = metric.sign * (scores[1:] - scores[0]).reshape(lv.size, n_features).T
        err = np.full_like(inc, np.nan)
        baseline, n = float(scores[0]), X.shape[0]
    names = tuple(model.feature_names or [f"x{i}" for i in range(n_features)])
    return InputPerturbation(
        error_increase=inc,
        stderr=err,
        levels=lv,
        baseline_error=baseline,
        input_std=std,
        metric=metric.name,
        n_samples=n,
        feature_names=names,
    )
