r"""Perturbation importance (seed 001's measure) and Scardi & Harding's input-perturbation schedule.

Both follow the perturbation family's pattern (:mod:`jaxsens._variants`): for each row ``x`` a *variant
function* builds every modified copy of it at once, ``[n_variants, *input_shape]`` (every feature x draw x
level, selected with a one-hot mask on the last axis; ``vmap`` over rows, never a Python loop over features);
one compiled kernel evaluates the chunk's rows and all their copies and folds per-row statistics of the output
changes (``perturbation_importance``) or of the change of a per-sample loss against streamed targets
(``input_perturbation``). An input the model ignores gets exactly 0. Noise comes from per-row keys
``fold_in(key, global_row_index)``: the batch size and the device count never change which noise a row sees.
"""

from __future__ import annotations

import functools
import math
import os
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, DataError
from jaxsens import _engine, _stats
from jaxsens._checks import check_model
from jaxsens._data import open_xy
from jaxsens._method import Call, Method, Option, Plan, output_names
from jaxsens._metrics import METRIC_CHOICES, check_target_shape, resolve_metric
from jaxsens._results import Z95, Result, finish_figure, pyplot, result_class
from jaxsens._variants import (
    Spec,
    Task,
    _changes,  # change_kernel's per-row statistics, shared by the rows hook
    change_kernel,
    feature_std,
    host_scores,
    key_parts,
    losses,
    onehot_last,
    passes_progress,
    predict_all,
    predictions,
    read_rows_bounded,
    refuse_one_shot,
    row_bytes,
    select_features,
    stderr_of,
    stream_feature_std,
)

__all__ = [
    "INPUT_PERTURBATION_SPEC",
    "PERTURBATION_SPEC",
    "InputPerturbation",
    "PerturbationImportance",
    "input_perturbation",
    "perturbation_importance",
]


def _deprecated(cls_name: str, old: str, new: str) -> None:
    import warnings

    warnings.warn(f"{cls_name}.{old} is deprecated; use {new} (see CHANGELOG.md)", DeprecationWarning, stacklevel=3)


def _default_names(model, n_features: int, header=None) -> tuple[str, ...]:
    return tuple(header or model.feature_names or [f"x{i}" for i in range(n_features)])


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


@result_class
class PerturbationImportance(Result):
    r"""Effect of random perturbations of each input on the model's output (seed 001's measure).

    ``importance`` is ``[n_outputs, n_features]``: for output :math:`k` and feature :math:`j`, the RMS output
    change :math:`\sqrt{\overline{(f_k(x') - f_k(x))^2}}` over rows and draws; ``stderr`` its standard error
    (delta method on the per-row mean square). A feature is the last input axis: for a sequence input
    ``[T, F]`` it is perturbed at every time step at once, so the result is per feature and its
    ``input_shape`` is ``(n_features,)`` (the selected features).

    Attributes (besides those of :class:`jaxsens.Result`):
        effect: ``[n_features]`` seed 001's single number per feature: the RMS change over rows, draws **and
            outputs** (``sqrt`` of the mean over outputs of ``importance ** 2``).
        effect_stderr: ``[n_features]`` its standard error (delta method).
        mean: ``[n_outputs, n_features]`` mean signed change ``f(x') - f(x)`` (direction; near 0 for symmetric
            noise on a smooth model).
        noise_scale: ``[n_features]`` noise scale of each selected feature (input units).
        n_draws: noise draws per row and feature.
        noise: ``"normal"`` or ``"uniform"``.
        feature_index: ``[n_features]`` the selected features' indices on the model's last input axis.
    """

    effect: np.ndarray
    effect_stderr: np.ndarray
    mean: np.ndarray
    noise_scale: np.ndarray
    n_draws: int = 1
    noise: str = "normal"
    feature_index: np.ndarray | None = None

    stderr_rule: ClassVar[str] = "delta method: std of the per-row squared change / (2 sqrt(n_samples) RMS)"
    _aliases: ClassVar[dict[str, str]] = {"scale": "noise_scale"}

    @property
    def importance_label(self) -> str:  # per instance: names the noise
        return f"RMS output change ({self.noise} noise)"

    @property
    def effect_per_output(self) -> np.ndarray:
        """Deprecated: ``importance.T`` (the old features-first ``[n_features, n_outputs]``)."""
        _deprecated(type(self).__name__, "effect_per_output", ".importance (outputs first: .importance.T)")
        return self.importance.T

    @property
    def mean_change(self) -> np.ndarray:
        """Deprecated: ``mean.T`` (the old features-first ``[n_features, n_outputs]``)."""
        _deprecated(type(self).__name__, "mean_change", ".mean (outputs first: .mean.T)")
        return self.mean.T

    def _extra_columns(self):
        return {"mean": self.mean}


def _perturbation_prepare(call: Call) -> Plan:
    model, opts = call.model, call.options
    fn = "perturbation_importance"
    (shape,) = check_model(model, fn, family="perturbation")
    n_features = shape[-1]
    names = _default_names(model, n_features)
    sel = select_features(opts["features"], names)
    scale = np.asarray(opts["noise_scale"], np.float64)
    if scale.size == 1:
        scale = np.broadcast_to(scale, (n_features,))
    elif scale.shape != (n_features,):
        raise ArgumentError(
            f"{fn}(): noise_scale has {scale.size} values; give one number or one per feature ({n_features})"
        )
    n_draws = opts["n_draws"]
    raw, impl = key_parts(call.key)
    spec = Spec(_noise_variants, options=(n_draws, sel, opts["noise"]), key_impl=impl, n_draws=n_draws,
                outputs=call.outputs)
    task = Task(model, {"key": raw, "scale": jnp.asarray(scale, jnp.float32)}, spec)
    per_sample = None if call.batch_size is not None else row_bytes(task)
    return Plan(state=task, bytes_per_sample=per_sample, context={"sel": sel, "scale": scale, "n_features": n_features})


def _rms(m: _stats.Moments) -> tuple[np.ndarray, np.ndarray]:
    """RMS from the moments of a per-row mean square, and its delta-method standard error."""
    rms = np.sqrt(np.maximum(np.asarray(m.mean, np.float64), 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(rms > 0, stderr_of(m) / (2 * rms), 0.0)
    return rms, err


def _perturbation_finalize(stats, info, plan: Plan, call: Call) -> PerturbationImportance:
    ctx, model = plan.context, call.model
    sel = ctx["sel"]
    names = _default_names(model, ctx["n_features"], info.feature_names)
    importance, stderr = _rms(stats["sq"])  # [n_sel, n_outputs]
    effect, effect_stderr = _rms(stats["sq_all"])
    return PerturbationImportance(
        importance=importance.T,
        stderr=stderr.T,
        n_samples=info.n_samples,
        n_skipped=info.n_skipped,
        feature_names=tuple(names[i] for i in sel),
        output_names=output_names(model, call.outputs),
        input_shape=(len(sel),),
        method="perturbation",
        options=call.record(),
        effect=effect,
        effect_stderr=effect_stderr,
        mean=np.asarray(stats["d"].mean, np.float64).T,
        noise_scale=ctx["scale"][list(sel)].copy(),
        n_draws=call.options["n_draws"],
        noise=call.options["noise"],
        feature_index=np.asarray(sel, np.int64),
    )


def _perturbation_rows(task: Task, xs, mask, row_index):
    """:func:`jaxsens._variants.change_kernel`'s summaries and the per-row squared change ``[batch, n_outputs,
    n_selected]`` (mean over draws), whose mean over rows is ``importance ** 2`` (the ``rows`` hook, with
    ``rows_headline="sqrt_mean"``: :func:`jaxsens.compare` pairs versions row by row, same noise per row)."""
    preds, _ = predictions(task, xs, row_index)
    sq, sq_all, d = jax.vmap(functools.partial(_changes, task.spec.n_draws, task.spec.outputs))(preds)
    stats = {
        "sq": _stats.moments_of(sq, mask),
        "sq_all": _stats.moments_of(sq_all, mask),
        "d": _stats.moments_of(d, mask),
    }
    return stats, jnp.swapaxes(sq, 1, 2)


PERTURBATION_SPEC = Method(
    name="perturbation",
    function_name="perturbation_importance",
    family="perturbation",
    summary="RMS output change when one input at a time gets random noise (seed 001)",
    doc=r"""RMS change of each output when one input at a time is perturbed by random noise.

    For every row :math:`x`, selected feature :math:`j` and draw :math:`d`, :math:`x'` equals :math:`x` with
    feature :math:`j` moved by :math:`s_j \varepsilon` (:math:`\varepsilon \sim N(0, 1)` for
    ``noise="normal"``, :math:`U(-1, 1)` for ``"uniform"``; :math:`s_j` is ``noise_scale``, in input units);
    for a sequence input ``[T, F]`` feature :math:`j` is the last axis and is perturbed at every time step,
    with independent noise per step (as in seed 001). The importance of feature :math:`j` for output
    :math:`k` is

    .. math:: I_{kj} = \sqrt{\tfrac{1}{N D} \textstyle\sum_{x, d} (f_k(x') - f_k(x))^2}

    over ``N`` rows and ``D`` draws, with a delta-method standard error; ``effect`` is seed 001's number, the
    same RMS over all outputs too. Every feature x draw of a row is evaluated in one batch with the unmodified
    row, so an input the model ignores gets exactly 0. Noise comes from per-row keys ``fold_in(key,
    global_row_index)``: batch size and device count do not change the result.

    Args (besides the shared ones, see below):
        model: a single-input :class:`jaxsens.Model` with a floating-point input (several inputs and integer
            inputs are refused).
        data: ``[n_samples, *input_shape]``: an array, a ``.npy`` (streamed) / ``.npz`` / ``.csv`` /
            ``.parquet`` path, or batches.
        outputs: report only these outputs (the model is still evaluated whole).

    Returns:
        :class:`PerturbationImportance`: ``importance`` and ``stderr`` ``[n_outputs, n_selected_features]``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: jnp.stack([2 * x[0]]), {}, input_shape=(2,))
        >>> r = jaxsens.perturbation_importance(m, np.zeros((1000, 2)), noise_scale=0.1)
        >>> np.round(r.importance, 1).tolist()
        [[0.2, 0.0]]
""",
    result=PerturbationImportance,
    random=True,
    options=(
        Option("noise_scale", "floats", 0.2, "noise scale in input units (seed 001: 0.2): one value, or one per "
               "model feature", minimum=0.0),
        Option("n_draws", int, 1, "noise draws per row and feature", minimum=1),
        Option("noise", str, "normal", "noise distribution: normal N(0, s^2) or uniform U(-s, s)",
               choices=("normal", "uniform")),
        Option("features", "names", None, "names or indices of the features to perturb (default all)"),
    ),
    aliases={"scale": "noise_scale"},
    prepare=_perturbation_prepare,
    kernel=change_kernel,
    finalize=_perturbation_finalize,
    rows=_perturbation_rows,
    rows_headline="sqrt_mean",
)


# --------------------------------------------------------------------------------------------------- schedule
_WHOLE_SET_BYTES = 1 << 30
"""Memory bound of the in-memory path of whole-data-set metrics (rows + predictions of every variant)."""


def _level_variants(x, parts, key, arrays, options):
    eps = jax.random.normal(key, x.shape, x.dtype)
    n_features = x.shape[-1]
    hit = onehot_last(range(n_features), n_features, x.ndim)  # [F, 1.., F]
    step = arrays["std"] * eps  # [*input_shape]
    moved = x + arrays["levels"].reshape(-1, *([1] * x.ndim)) * step  # [L, *input_shape]
    return jnp.where(hit[None], moved[:, None], x).reshape(-1, *x.shape)  # [L * F, *input_shape]


@functools.partial(jax.jit, static_argnames=("n_levels", "n_labels"))
def _error_kernel(task: Task, batch, mask, row_index, *, n_levels: int, n_labels: int):
    """Per chunk of ``(xs, ys)``: moments of the per-row loss, of its change per (level, feature), and of the
    change averaged over the levels (the headline, with an exact stderr); with class labels, the count of
    labels outside ``0..n_labels - 1`` or not whole (refused after the pass)."""
    xs, ys = batch
    preds, _ = predictions(task, xs, row_index)
    base, diff = jax.vmap(functools.partial(losses, task.spec.metric))(ys, preds)  # [B], [B, L * F]
    per_level = diff.reshape(diff.shape[0], n_levels, -1)
    out = {
        "base": _stats.moments_of(base, mask),
        "diff": _stats.moments_of(diff, mask),
        "avg": _stats.moments_of(jnp.mean(per_level, axis=1), mask),
    }
    if n_labels:
        y = ys.reshape(ys.shape[0], -1)[:, 0].astype(jnp.float32)
        bad = (y < 0) | (y >= n_labels) | (y != jnp.floor(y))
        out["bad_labels"] = _stats.total_of(bad.astype(jnp.float32), mask)
    return out


@result_class
class InputPerturbation(Result):
    r"""Error increase when each input gets white noise of growing amplitude (Scardi & Harding 1999).

    ``importance`` is ``[n_features]`` (the outputs are aggregated by the error measure): the **mean over the
    noise levels** of the increase of the metric (for a score such as accuracy, its decrease); ``stderr`` its
    exact standard error (streamed variance of the per-row mean over levels; the levels share each row's
    noise draw). A feature is the last input axis (perturbed at every time step of a sequence input), so
    ``input_shape`` is ``(n_features,)``. The whole curve is kept: ``curves[l, j]`` at ``levels[l]``.

    Attributes (besides those of :class:`jaxsens.Result`):
        curves: ``[n_levels, n_features]`` error increase at each noise level.
        curves_stderr: ``[n_levels, n_features]`` its standard error.
        levels: ``[n_levels]`` noise amplitudes relative to each feature's standard deviation.
        baseline: the metric on the unperturbed data (an error for ``mse``, a score for ``accuracy``).
        input_std: ``[n_features]`` the standard deviations used (ddof = 1, pooled over time steps).
        metric: metric name (the resolved one for ``metric="auto"``).
        greater_is_better: True for scores (importance is their decrease).
    """

    curves: np.ndarray
    curves_stderr: np.ndarray
    levels: np.ndarray
    baseline: float
    input_std: np.ndarray
    metric: str
    greater_is_better: bool = False

    stderr_rule: ClassVar[str] = "std of the per-row mean over levels / sqrt(n_samples)"
    _aliases: ClassVar[dict[str, str]] = {"baseline_error": "baseline"}

    @property
    def importance_label(self) -> str:  # per instance: names the metric
        change = "decrease" if self.greater_is_better else "increase"
        return f"{self.metric} {change}, mean over noise levels"

    @property
    def error_increase(self) -> np.ndarray:
        """Deprecated: ``curves.T`` (the old features-first ``[n_features, n_levels]``)."""
        _deprecated(type(self).__name__, "error_increase", ".curves (levels first: .curves.T)")
        return self.curves.T

    def _extra_columns(self):
        return {f"increase@{lv:g}": self.curves[k] for k, lv in enumerate(self.levels)}

    def plot_curves(self, *, top: int = 8, path: str | os.PathLike | None = None):
        """Error increase against noise level for the ``top`` features, with 95% bands; returns the ``Figure``.

        One line per feature (largest ``importance`` first, named in the legend), shaded 95% normal intervals
        (``1.96 x curves_stderr``); the title states "top k of n".
        """
        if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
            raise ArgumentError(f"plot_curves(): top must be a positive integer, got {top!r}")
        plt = pyplot()
        order = np.argsort(-np.nan_to_num(self.importance, nan=-np.inf), kind="stable")
        k = min(int(top), len(order))
        fig, ax = plt.subplots(figsize=(8.5, 5))
        cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
        for rank, j in enumerate(order[:k]):
            color = cmap(rank % cmap.N)
            y, e = self.curves[:, j], Z95 * np.nan_to_num(self.curves_stderr[:, j])
            ax.plot(self.levels, y, marker="o", color=color, label=f"{rank + 1}. {self.feature_names[j]}")
            ax.fill_between(self.levels, y - e, y + e, color=color, alpha=0.15, linewidth=0)
        ax.fill_between([], [], [], color="grey", alpha=0.3, label="95% interval (1.96 x stderr)")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel("noise level (x feature standard deviation)")
        change = "decrease" if self.greater_is_better else "increase"
        ax.set_ylabel(f"{self.metric} {change} (baseline {self.baseline:.4g})")
        ax.set_title(f"input perturbation: {self.metric} {change} vs noise level, top {k} of "
                     f"{self.n_features} features")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        return finish_figure(fig, path)


def _input_perturbation_run(call: Call) -> InputPerturbation:
    model, opts = call.model, call.options
    fn = "input_perturbation"
    (shape,) = check_model(model, fn, family="perturbation")
    if call.outputs is not None:
        raise ArgumentError(
            f"{fn}() measures the error over all outputs (importance is per input); outputs= does not apply: "
            "leave it None"
        )
    twice = "twice (the feature standard deviations, then the errors)"
    refuse_one_shot(call.data, "data", fn, twice)
    refuse_one_shot(call.targets, "targets", fn, twice)
    x_src, y_src = open_xy(call.data, call.targets, input_shape=shape, feature_names=model.feature_names,
                           nan_policy=call.nan_policy)
    metric = resolve_metric(opts["metric"], targets_dtype=y_src.dtype, model=model)
    labels = check_target_shape(metric, y_src.row_shape, model.output_shape)
    levels = np.asarray(opts["levels"], np.float64)
    n_features = shape[-1]
    raw, impl = key_parts(call.key)
    reporter, close = passes_progress(call.progress, 2, fn)

    def task_for(std):
        arrays = {"key": raw, "std": jnp.asarray(std, jnp.float32), "levels": jnp.asarray(levels, jnp.float32)}
        return Task(model, arrays, Spec(_level_variants, metric=metric, key_impl=impl))

    try:
        if metric.per_sample:
            std, first = stream_feature_std(
                model, x_src, y_src, method=fn, names=model.feature_names, batch_size=call.batch_size,
                nan_policy=call.nan_policy, progress=reporter(0), devices=call.devices,
            )
            task = task_for(std)
            stats, info = _engine.run(
                functools.partial(_error_kernel, n_levels=levels.size,
                                  n_labels=math.prod(model.output_shape) if labels else 0),
                task, x_src, targets=y_src, batch_size=call.batch_size,
                bytes_per_sample=None if call.batch_size is not None else row_bytes(task),
                nan_policy=call.nan_policy, progress=reporter(first.n_samples + first.n_skipped),
                devices=call.devices,
            )
            if info.n_samples != first.n_samples:
                raise DataError(
                    f"{fn}(): the data gave {first.n_samples} usable rows in the first pass and {info.n_samples} "
                    "in the second: it changed while being read"
                )
            if "bad_labels" in stats and float(stats["bad_labels"].value) > 0:
                raise DataError(
                    f"targets hold {int(stats['bad_labels'].value)} class label(s) outside "
                    f"0..{math.prod(model.output_shape) - 1} or not whole numbers; the model has "
                    f"{math.prod(model.output_shape)} outputs (metric {metric.name!r})"
                )
            curves = metric.sign * np.asarray(stats["diff"].mean, np.float64).reshape(levels.size, n_features)
            curves_stderr = stderr_of(stats["diff"]).reshape(levels.size, n_features)
            importance = metric.sign * np.asarray(stats["avg"].mean, np.float64)
            stderr = stderr_of(stats["avg"])
            baseline, n_samples, n_skipped = float(stats["base"].mean), info.n_samples, info.n_skipped
            header = info.feature_names
        else:
            importance, stderr, curves, curves_stderr, baseline, std, n_samples, n_skipped = _whole_set(
                call, task_for, x_src, y_src, shape, metric, levels, reporter
            )
            header = x_src.feature_names
    finally:
        close()
    record = call.record()
    record["metric"] = metric.name
    return InputPerturbation(
        importance=importance,
        stderr=stderr,
        n_samples=n_samples,
        n_skipped=n_skipped,
        feature_names=_default_names(model, n_features, header),
        output_names=(),
        input_shape=(n_features,),
        method="input-perturbation",
        options=record,
        curves=curves,
        curves_stderr=curves_stderr,
        levels=levels,
        baseline=baseline,
        input_std=np.asarray(std, np.float64),
        metric=metric.name,
        greater_is_better=bool(metric.greater_is_better),
    )


def _whole_set(call, task_for, x_src, y_src, shape, metric, levels, reporter):
    """A whole-data-set metric (``Metric(per_sample=False)``, e.g. ``r2``) cannot fold per chunk: every row and
    its predictions for every variant are held (bounded by :data:`_WHOLE_SET_BYTES`), scored on the host, and
    the stderr is a bootstrap over rows (:data:`jaxsens._stats.N_BOOT` resamples, seed ``BOOT_SEED``)."""
    fn = "input_perturbation"
    n_features = shape[-1]
    n_variants = levels.size * n_features
    per_row = 4 * ((1 + n_variants) * math.prod(call.model.output_shape) + math.prod(shape))
    X, y, skipped = read_rows_bounded(
        x_src, y_src, input_shape=shape, nan_policy=call.nan_policy, max_rows=max(1, _WHOLE_SET_BYTES // per_row),
        method=fn, reason=f"the whole-data-set metric {metric.name!r} ({per_row} bytes per row)",
        progress=reporter(0),
    )
    std = feature_std(X, _default_names(call.model, n_features, x_src.feature_names), fn)
    preds = predict_all(task_for(std), X, batch_size=call.batch_size, progress=reporter(len(X) + skipped))

    def increases(rows):
        scores = host_scores(metric, y, preds, rows)
        return metric.sign * (scores[1:] - scores[0]).reshape(levels.size, n_features), scores[0]

    curves, baseline = increases(None)
    rng = np.random.default_rng(_stats.BOOT_SEED)
    reps = np.stack([increases(rng.integers(0, len(X), len(X)))[0] for _ in range(_stats.N_BOOT)])
    return (curves.mean(axis=0), _stats.bootstrap_stderr(reps.mean(axis=1)), curves,
            _stats.bootstrap_stderr(reps), float(baseline), std, len(X), skipped)


INPUT_PERTURBATION_SPEC = Method(
    name="input-perturbation",
    function_name="input_perturbation",
    family="perturbation",
    summary="error increase per input and noise level (Scardi & Harding), mean over levels",
    doc=r"""Scardi & Harding's input perturbation: error increase per input and noise level, all in one kernel.

    Each input :math:`j` in turn gets white noise :math:`\ell \, \sigma_j \, \varepsilon`,
    :math:`\varepsilon \sim N(0, 1)`, for every level :math:`\ell` (default 10 % ... 50 % of the feature's
    standard deviation :math:`\sigma_j`, ddof = 1), the other inputs unchanged, and the increase of the error
    :math:`\Delta_{j\ell} = \mathrm{metric}(y, f(X'_{j\ell})) - \mathrm{metric}(y, f(X))` is recorded (for
    scores like accuracy, the decrease). One noise draw per row is shared by all levels (the curves are smooth
    in :math:`\ell`) and comes from ``fold_in(key, row_index)``. Sequence inputs: feature = last axis,
    perturbed at every time step; :math:`\sigma_j` is pooled over time.

    **Headline.** ``importance[j]`` is the mean of :math:`\Delta_{j\ell}` over the levels (the ranking score),
    with the exact standard error of that mean (the per-row average over levels is streamed); the full curve
    is ``curves[l, j]`` with ``curves_stderr``, drawn by :meth:`InputPerturbation.plot_curves`.

    **Streaming.** Two passes over the data and the targets, both streamed (memory independent of the number
    of rows): the feature standard deviations (a small moments kernel), then the errors. ``data`` and
    ``targets`` must therefore be re-readable (a one-shot generator is refused). Progress counts the rows of
    both passes (total ``2 x n_rows``). A whole-data-set metric (``Metric(name, fn, per_sample=False)``, e.g.
    ``sklearn.metrics.r2_score``) cannot be folded per chunk: then every row and its predictions for every
    (level, feature) are held in memory, refused above 1 GiB, and the stderr is a bootstrap over rows.

    ``metric="auto"`` picks by the targets' type: integer / bool class labels -> ``log_loss`` when the
    model's outputs sum to one (a softmax head), else ``accuracy``; floating-point values -> ``mse``.

    References: M. Scardi, L. W. Harding, "Developing an empirical model of phytoplankton primary production:
    a neural network case study", Ecological Modelling 120 (1999) 213-223; Olden, Joy & Death, Ecological
    Modelling 178 (2004) 389-397.

    Args (besides the shared ones, see below):
        model: a single-input :class:`jaxsens.Model` with a floating-point input.
        data: ``[n_samples, *input_shape]``: an array, a ``.npy`` / ``.npz`` / ``.csv`` / ``.parquet`` path,
            or re-iterable batches.
        targets: ``[n_samples, *output_shape]`` values, or ``[n_samples]`` class labels for a
            class-probability output: an array, a file, or the name of a target column of the data.

    Returns:
        :class:`InputPerturbation` with ``importance`` ``[n_features]`` and ``curves`` ``[n_levels,
        n_features]``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] * 3.0, {}, input_shape=(2,))
        >>> X = np.random.default_rng(0).normal(size=(2000, 2)); y = 3 * X[:, :1]
        >>> r = jaxsens.input_perturbation(m, X, y, levels=(0.5,))
        >>> r.metric, np.round(r.importance, 1).tolist()  # 9 * 0.25 * var(x0) for x0, nothing for x1
        ('mse', [2.2, 0.0])
""",
    result=InputPerturbation,
    needs_targets=True,
    random=True,
    options=(
        Option("levels", "floats", (0.1, 0.2, 0.3, 0.4, 0.5), "noise amplitudes relative to each feature's "
               "standard deviation", minimum=0.0),
        Option("metric", str, "auto", "error measure; auto: accuracy or log_loss for class labels, mse for "
               "values (Python: also a Metric or a callable loss fn(y_true, y_pred))", choices=METRIC_CHOICES, objects=True),
    ),
    memory="streams data and targets in two passes (memory independent of the number of rows); a whole-data-set "
    "metric (Metric(per_sample=False)) holds every row and its predictions, refused above 1 GiB",
    per_output=False,
    run=_input_perturbation_run,
)

perturbation_importance = PERTURBATION_SPEC.as_function()
input_perturbation = INPUT_PERTURBATION_SPEC.as_function()
