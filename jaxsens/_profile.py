"""Methods that hold inputs at reference values: improved stepwise selection 1 and 2, Lek's profile.

Both evaluate the model on modified copies of the data built for every feature at once (a one-hot mask on the
last input axis), in one ``vmap``; nothing is retrained. Both read the data in two passes: improved stepwise
streams the feature means, then the effect of fixing each feature at its mean; Lek's profile streams each
element's minimum and maximum and a bounded uniform sample of rows (for quantiles / k-means), then sweeps.
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
from jaxsens._data import iter_chunks, open_xy
from jaxsens._method import Call, Method, Option, output_names
from jaxsens._metrics import METRIC_CHOICES, resolve_metric
from jaxsens._model import apply_rows
from jaxsens._results import Result, finish_figure, frame, output_index, pyplot, result_class
from jaxsens._variants import (
    Spec,
    Task,
    change_kernel,
    onehot_last,
    reporter,
    row_bytes,
    stderr_of,
    target_layout,
    targets_loss_kernel,
)

__all__ = [
    "IMPROVED_STEPWISE_SPEC",
    "LEK_SPEC",
    "ImprovedStepwise",
    "LekProfile",
    "improved_stepwise",
    "lek_profile",
]


def _refuse_outputs(call: Call, fn: str) -> None:
    if call.outputs is not None:
        raise ArgumentError(
            f"{fn}() measures the effect on all outputs together (one error / output-change measure); "
            "outputs= does not apply: leave it None"
        )


# --------------------------------------------------------------------------------------------------- stepwise
def _fixed_variants(x, parts, key, arrays, options):
    n_features = x.shape[-1]
    hit = onehot_last(range(n_features), n_features, x.ndim)  # [F, 1.., F]
    return jnp.where(hit, arrays["means"], x)


@jax.jit
def _moments_kernel(model, batch, mask, row_index):
    """First pass: per-element moments of the inputs (the targets, when streamed along, are ignored)."""
    del model, row_index
    xs = batch[0] if isinstance(batch, tuple) else batch
    return _stats.moments_of(xs.astype(jnp.float32), mask)


@result_class
class ImprovedStepwise(Result):
    """Effect of fixing each input at its mean, without retraining (Gevrey, Dimopoulos & Lek 2003).

    ``importance`` is ``[n_features]`` (outputs aggregated, ``output_names == ()``): variant 1 the increase of
    the error ``metric(y, f(X_j)) - metric(y, f(X))`` (a score's decrease), variant 2 the mean squared change of
    the output, ``mean over rows and outputs of (f(X_j) - f(X))^2``. For a sequence input ``[T, F]`` feature
    ``j`` is fixed at every step, so ``importance`` is per feature and ``input_shape`` is ``(F,)``. ``stderr``
    is the streamed standard error over rows of the per-row value, ``std / sqrt(n_samples)`` (ddof = 1).

    Attributes (besides those of :class:`jaxsens.Result`):
        variant: 1 (error against the targets) or 2 (change of the network's output).
        baseline: variant 1: ``metric(y, f(X))``; variant 2: NaN.
        metric: variant 1: the metric's name; variant 2: ``"output_mse"``.
        input_mean: ``[*model_input_shape]`` the values the inputs were fixed at.
        output_change: variant 2: ``[n_model_outputs, n_features]`` mean squared change of each output
            (outputs first); variant 1: ``None``.

    Deprecated: ``baseline_error`` (use ``baseline``), ``per_output`` (``output_change.T``).
    """

    variant: int
    baseline: float
    metric: str
    input_mean: np.ndarray
    output_change: np.ndarray | None = None
    greater_is_better: bool = False

    stderr_rule: ClassVar[str] = "std over rows (ddof=1) / sqrt(n_samples), streamed"
    _aliases: ClassVar[dict[str, str]] = {"baseline_error": "baseline"}

    @property
    def importance_label(self) -> str:
        if self.variant == 2:
            return "mean squared output change, input at its mean"
        return f"{self.metric} {'decrease' if self.greater_is_better else 'increase'}, input at its mean"

    @property
    def relative(self) -> np.ndarray:
        """``[n_features]`` importance as a percentage of its sum (Gevrey et al.'s relative contributions)."""
        total = np.sum(self.importance)
        return np.full_like(self.importance, np.nan) if total == 0 else 100.0 * self.importance / total

    @property
    def per_output(self) -> np.ndarray | None:
        """Deprecated: ``output_change.T`` (``[n_features, n_outputs]``, features first)."""
        import warnings

        warnings.warn("ImprovedStepwise.per_output is deprecated; use .output_change ([n_outputs, n_features], "
                      "outputs first), see CHANGELOG.md", DeprecationWarning, stacklevel=2)
        return None if self.output_change is None else self.output_change.T

    def _extra_columns(self):
        return {"relative": self.relative}


def _stepwise_run(call: Call) -> ImprovedStepwise:
    model, opts, fn = call.model, call.options, "improved_stepwise"
    check_model(model, fn, family="perturbation")
    _refuse_outputs(call, fn)
    variant = opts["variant"]
    has_targets = call.targets is not None
    if variant is None:
        variant = 1 if has_targets else 2
    if variant not in (1, 2):
        raise ArgumentError(
            f"{fn}(): variant must be 1 (error against targets) or 2 (change of the output), got {variant!r}"
        )
    if variant == 1 and not has_targets:
        raise ArgumentError(f"{fn}(variant=1) needs targets; pass targets=, or variant=2 to compare outputs only")
    if variant == 2 and has_targets:
        raise ArgumentError(f"{fn}(variant=2) compares outputs and takes no targets; use variant=1 with targets")
    shape = tuple(int(d) for d in model.input_shape)
    n_features = shape[-1]
    x_src, y_src = open_xy(call.data, call.targets, input_shape=shape, feature_names=model.feature_names,
                           nan_policy=call.nan_policy)
    metric = None
    if variant == 1:
        metric = resolve_metric(opts["metric"], targets_dtype=y_src.dtype, model=model)
        if not metric.per_sample:
            raise ArgumentError(
                f"{fn}() streams the data, so its metric must be a per-sample one (mse, mae, accuracy, log_loss, "
                f"or Metric(..., per_sample=True)); {metric.name!r} is computed on the whole data set"
            )
        layout, n_labels = target_layout(model, y_src, metric, fn)
    n_rows = x_src.n_rows
    report, close = reporter(call.progress, None if n_rows is None else 2 * n_rows)
    common = {"batch_size": call.batch_size, "nan_policy": call.nan_policy, "devices": call.devices}
    try:
        first = None if report is None else (lambda d, _t: report(d))
        moments, info1 = _engine.run(_moments_kernel, model, x_src, targets=y_src, progress=first, **common)
        means = np.asarray(moments.mean, np.float64).reshape(shape)
        arrays = {"means": jnp.asarray(means, jnp.float32)}
        offset = info1.n_samples + info1.n_skipped
        second = None if report is None else (lambda d, _t: report(offset + d))
        if variant == 2:
            task = Task(model, arrays, Spec(_fixed_variants))
            stats, info = _engine.run(change_kernel, task, x_src, progress=second,
                                      bytes_per_sample=None if call.batch_size else row_bytes(task), **common)
        else:
            task = Task(model, arrays, Spec(_fixed_variants, metric=metric))
            kernel = functools.partial(targets_loss_kernel, layout=layout, n_labels=n_labels)
            stats, info = _engine.run(kernel, task, x_src, targets=y_src, progress=second,
                                      bytes_per_sample=None if call.batch_size else row_bytes(task), **common)
    finally:
        close()
    if info.n_samples != info1.n_samples:
        raise DataError(
            f"{fn}() reads the data twice (means, then effects), but the second pass saw {info.n_samples} rows and "
            f"the first {info1.n_samples}: the data changed between passes, or is a one-shot iterable (pass an "
            "array, a file, or a re-iterable source)"
        )
    if variant == 1 and n_labels and float(stats["bad_labels"].value) > 0:
        raise DataError(
            f"targets hold {int(stats['bad_labels'].value)} class label(s) outside 0..{n_labels - 1} (or not "
            f"whole numbers); the model has {n_labels} outputs"
        )
    names = info.feature_names or model.feature_names or tuple(f"x{i}" for i in range(n_features))
    common = {
        "n_samples": int(info.n_samples), "n_skipped": int(info.n_skipped), "feature_names": tuple(names),
        "output_names": (), "input_shape": (n_features,), "method": "improved-stepwise",
        "options": call.record(), "variant": int(variant), "input_mean": means,
    }
    if variant == 2:
        return ImprovedStepwise(
            importance=np.asarray(stats["sq_all"].mean, np.float64),
            stderr=stderr_of(stats["sq_all"]),
            baseline=float("nan"),
            metric="output_mse",
            output_change=np.asarray(stats["sq"].mean, np.float64).T,
            **common,
        )
    return ImprovedStepwise(
        importance=metric.sign * np.asarray(stats["diff"].mean, np.float64),
        stderr=stderr_of(stats["diff"]),
        baseline=float(stats["base"].mean),
        metric=metric.name,
        greater_is_better=bool(metric.greater_is_better),
        **common,
    )


IMPROVED_STEPWISE_SPEC = Method(
    name="improved-stepwise",
    function_name="improved_stepwise",
    family="perturbation",
    summary="each input fixed at its mean, not retrained: error increase (variant 1, with targets) or output "
            "change (variant 2)",
    doc=r"""Improved stepwise selection 1 and 2: each input in turn fixed at its mean, the network not retrained.

    With :math:`X_j` the data with input :math:`j` replaced by its mean over the rows (for a sequence input
    ``[T, F]``: feature :math:`j` at every time step replaced by its mean at that step):

    * variant 1 (targets given): the increase of the error against the targets,
      :math:`I_j = L(y, f(X_j)) - L(y, f(X))` (``metric``, default ``"auto"``: ``mse`` for values as in the
      paper, ``log_loss`` / ``accuracy`` for class labels; a score's decrease);
    * variant 2 (no targets): the change of the network's output, the mean squared difference between the
      outputs of the intact and the modified network, :math:`I_j = \frac{1}{N K}\sum_{n, k} (f_k(X_j)_n -
      f_k(X)_n)^2`; ``output_change`` keeps it per output.

    ``variant=None`` (default) picks 1 when ``targets`` are given and 2 otherwise; an explicit variant that
    does not fit the targets given is refused. The largest :math:`I_j` marks the most important input.

    **Streaming, two passes.** The first pass folds the per-element means (a small jitted moments kernel),
    the second evaluates every row together with its ``n_features`` modified copies in one kernel and folds
    per-row statistics; ``importance`` is their mean, ``stderr`` their standard error (``std / sqrt(n)``,
    ddof = 1). Progress counts the rows of both passes. The data must be re-readable (an array, a file, a
    re-iterable source). Metrics computed on the whole data set (``Metric(per_sample=False)``, plain
    callables) cannot be streamed and are refused.

    Reference: M. Gevrey, I. Dimopoulos, S. Lek, "Review and comparison of methods to study the contribution
    of variables in artificial neural network models", Ecological Modelling 160 (2003) 249-264; compared in
    Olden, Joy & Death, Ecological Modelling 178 (2004) 389-397.

    Returns:
        :class:`ImprovedStepwise` with ``importance`` / ``stderr`` ``[n_features]``.

    Example:
        >>> import numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] + 0 * x[1:], {}, input_shape=(2,))
        >>> X = np.array([[0.0, 5.0], [2.0, 1.0]])
        >>> improved_stepwise(m, X).importance.tolist()  # variant 2: x0 moves by 1 in both rows
        [1.0, 0.0]
""",
    result=ImprovedStepwise,
    uses_targets=True,
    per_output=False,
    options=(
        Option("variant", int, None, "1: error increase against the targets; 2: mean squared output change; "
               "default: 1 with targets, else 2", minimum=1),
        Option("metric", str, "auto", "variant 1's error measure; auto: log_loss / accuracy for class labels, "
               "mse for values", choices=METRIC_CHOICES, objects=True),
    ),
    run=_stepwise_run,
)


# -------------------------------------------------------------------------------------------------------- Lek
@jax.jit
def _profile_kernel(model, settings, grid, index):
    """Predictions at flat indices ``index`` of the (feature, setting, step) cube."""
    n_features, n_settings, steps = grid.shape[0], settings.shape[0], grid.shape[1]

    def point(i):
        j, rest = i // (n_settings * steps), i % (n_settings * steps)
        s, k = rest // steps, rest % steps
        return jnp.where(jnp.arange(n_features) == j, grid[j, k], settings[s])

    xs = jax.vmap(point)(index)
    return apply_rows(model, model.params, xs).reshape(xs.shape[0], -1)


@jax.jit
def _priorities(key, row_index):
    """``[batch]`` uint32 reservoir priorities, one per global row: ``bits(fold_in(key, row))``."""
    return jax.vmap(lambda i: jax.random.bits(jax.random.fold_in(key, i), (), jnp.uint32))(row_index)


_RESERVOIR_TAG = 0x1E4  # the reservoir's key is fold_in(key, _RESERVOIR_TAG), independent of k-means seeding
_SCAN_ROWS = 8192  # rows per chunk of the first (host) pass; the sample does not depend on it


def _scan(call: Call, src, shape, max_rows: int, report):
    """First pass: per-element min / max and a uniform sample of at most ``max_rows`` rows.

    The sample keeps the rows of the ``max_rows`` smallest priorities ``bits(fold_in(key, row_index))`` (ties by
    row number): a uniform sample without replacement that does not depend on how the data are chunked; all
    rows when there are at most ``max_rows``. Returns ``(lo, hi, sample (row order), n_rows, n_skipped, names)``.
    """
    key = jax.random.fold_in(call.key, _RESERVOIR_TAG)
    lo = hi = None
    keep_x = np.zeros((0, *shape), np.float32)
    keep_p = np.zeros(0, np.uint32)
    keep_r = np.zeros(0, np.int64)
    n = skipped = 0
    for chunk in iter_chunks(src, batch_size=_SCAN_ROWS, input_shape=shape, nan_policy=call.nan_policy,
                             dtype=np.float32):
        skipped += chunk.n_skipped
        xs = chunk.xs[chunk.mask]
        if report is not None:
            report(chunk.start + chunk.n_valid + chunk.n_skipped)
        if not len(xs):
            continue
        n += len(xs)
        lo = xs.min(axis=0) if lo is None else np.minimum(lo, xs.min(axis=0))
        hi = xs.max(axis=0) if hi is None else np.maximum(hi, xs.max(axis=0))
        prio = np.asarray(_priorities(key, jnp.asarray(chunk.row_index)))[chunk.mask]
        rows = (chunk.start + np.arange(len(chunk.mask), dtype=np.int64))[chunk.mask]
        if len(keep_p) == max_rows:  # only rows that beat the current largest kept priority can enter
            worst = (keep_p.max(), keep_r[keep_p == keep_p.max()].max())
            better = (prio < worst[0]) | ((prio == worst[0]) & (rows < worst[1]))
            xs, prio, rows = xs[better], prio[better], rows[better]
        keep_x = np.concatenate([keep_x, xs])
        keep_p = np.concatenate([keep_p, prio])
        keep_r = np.concatenate([keep_r, rows])
        if len(keep_p) > max_rows:
            order = np.lexsort((keep_r, keep_p))[:max_rows]
            keep_x, keep_p, keep_r = keep_x[order], keep_p[order], keep_r[order]
    if n == 0:
        why = f" ({skipped} rows skipped for NaN / Inf)" if skipped else ""
        raise DataError(f"data ({src.description}) has no usable rows{why}")
    order = np.argsort(keep_r, kind="stable")
    return lo, hi, keep_x[order].astype(np.float64), n, skipped, src.feature_names


@result_class
class LekProfile(Result):
    """Lek's profiles: the response to each input swept over its range with the others at fixed settings.

    ``importance`` is ``[n_outputs, n_features]`` (outputs first): the range (max - min over the sweep) of the
    *median profile* (at each step, the median over the settings of the model's output). For a sequence input
    ``[T, F]`` a feature is swept at every step, so ``input_shape`` is ``(F,)``. ``stderr`` is a bootstrap
    over the settings: the standard deviation (ddof = 1) of the same range over 64 resamples (with
    replacement) of the settings, i.e. how much the range depends on which reference values the other inputs
    are held at; 0 with a single setting. It is not the sampling error of the data.

    Attributes (besides those of :class:`jaxsens.Result`):
        curves: ``[n_features, n_settings, steps, n_outputs]`` model outputs along each sweep.
        grid: ``[n_features, steps]`` the swept values of each input (its minimum to its maximum over all rows).
        settings: ``[n_settings, *model_input_shape]`` the values the other inputs were held at.
        setting_names: ``n_settings`` labels (``"q=0.2"`` or ``"cluster 1"``).
        cluster_sizes: ``[n_clusters]`` rows of the sample in each k-means cluster, or ``None`` for quantiles.
        n_sample_rows: rows of the uniform sample the settings were computed from (``min(n_samples,
            max_rows)``: all rows when the data has at most ``max_rows``).

    Deprecated: ``importance_per_output`` (``importance.T``, features first).
    """

    curves: np.ndarray
    grid: np.ndarray
    settings: np.ndarray
    setting_names: tuple[str, ...]
    cluster_sizes: np.ndarray | None = None
    n_sample_rows: int = 0

    importance_label: ClassVar[str] = "range of the median profile"
    stderr_rule: ClassVar[str] = "bootstrap over the settings (64 resamples), std ddof=1"

    @property
    def importance_per_output(self) -> np.ndarray:
        """Deprecated: ``importance.T`` (``[n_features, n_outputs]``)."""
        import warnings

        warnings.warn("LekProfile.importance_per_output is deprecated; use .importance ([n_outputs, n_features], "
                      "outputs first), see CHANGELOG.md", DeprecationWarning, stacklevel=2)
        return self.importance.T

    def curves_frame(self):
        """Tidy curves: one row per (feature, setting, step, output) with ``x`` (swept) and ``prediction``."""
        f, s, k, o = self.curves.shape
        idx = np.indices((f, s, k, o)).reshape(4, -1)
        return frame(
            {
                "feature": np.asarray(self.feature_names, dtype=object)[idx[0]],
                "setting": np.asarray(self.setting_names, dtype=object)[idx[1]],
                "x": self.grid[idx[0], idx[2]],
                "output": np.asarray(self.output_names, dtype=object)[idx[3]],
                "prediction": self.curves.reshape(-1),
            }
        )

    def plot_curves(self, output: int | str = 0, *, top: int | None = 8, per_page: int = 8,
                    path: str | os.PathLike | None = None) -> list:
        """The profiles of ``output`` for the ``top`` features (ranked by ``importance``), paged into figures.

        Each page is one figure of at most ``per_page`` panels (4 columns); a panel shows the output along one
        feature's range, one line per setting, titled with the feature and its rank; axes are labelled (the
        feature's value, the output) and each page's first panel has a legend naming the settings (what the
        other inputs are held at). The page title names the output and which ranks of how many it shows.

        Args:
            output: one output (index or name).
            top: features to show, the most important first; ``None`` for all.
            per_page: panels per figure (1..16).
            path: also save: a ``.pdf`` path gets one multi-page PDF; any other path one file per page,
                ``name-1.png``, ``name-2.png``, ... (the page number before the extension).

        Returns:
            A list of matplotlib ``Figure`` s, one per page (close them when done).
        """
        if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= 16:
            raise ArgumentError(f"plot_curves(): per_page must be an integer in [1, 16], got {per_page!r}")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise ArgumentError(f"plot_curves(): top must be a positive integer or None (all), got {top!r}")
        plt = pyplot()
        o = output_index(output, self.output_names)
        order = [self.feature_names.index(n) for n, _, _ in self.ranking(o)]
        n_all = len(order)
        order = order[: n_all if top is None else min(top, n_all)]
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(self.setting_names)))
        figures = []
        pages = [order[i : i + per_page] for i in range(0, len(order), per_page)]
        for p, page in enumerate(pages):
            ncols = min(4, len(page))
            nrows = math.ceil(len(page) / ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows + 0.6), squeeze=False)
            for i, ax in enumerate(axes.flat):
                if i >= len(page):
                    ax.set_visible(False)
                    continue
                j = page[i]
                for s, name in enumerate(self.setting_names):
                    ax.plot(self.grid[j], self.curves[j, s, :, o], color=colors[s], label=name)
                rank = p * per_page + i + 1
                ax.set_title(f"#{rank} {self.feature_names[j]}", fontsize="medium")
                ax.set_xlabel(f"{self.feature_names[j]} (swept)", fontsize="small")
                ax.set_ylabel(self.output_names[o], fontsize="small")
                ax.grid(alpha=0.3)
            axes.flat[0].legend(title="others held at", fontsize="x-small", title_fontsize="x-small")
            first, last = p * per_page + 1, p * per_page + len(page)
            fig.suptitle(
                f"Lek's profile of {self.output_names[o]}: features ranked {first}-{last} of {len(order)} shown "
                f"(of {n_all}), page {p + 1} of {len(pages)}"
            )
            figures.append(finish_figure(fig, None))
        if path is not None:
            _save_pages(figures, path)
        return figures


def _save_pages(figures, path) -> None:
    """A ``.pdf`` path: one multi-page PDF; else ``stem-1.ext``, ``stem-2.ext``, ... (each written atomically)."""
    import io

    from jaxsens._io import atomic_write

    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    if ext.lower() == ".pdf":
        from matplotlib.backends.backend_pdf import PdfPages

        buf = io.BytesIO()
        with PdfPages(buf) as pdf:
            for fig in figures:
                pdf.savefig(fig)
        atomic_write(path, buf.getvalue())
        return
    for p, fig in enumerate(figures, 1):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext[1:].lower() or None, dpi=120)
        atomic_write(f"{stem}-{p}{ext}", buf.getvalue())


def _kmeans_settings(flat: np.ndarray, n_clusters: int, key) -> tuple[np.ndarray, np.ndarray]:
    """k-means centres and sizes: scikit-learn's ``KMeans`` (seeded from ``key``), else a small Lloyd loop."""
    seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        return _lloyd(flat, n_clusters, key)
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(flat)
    return km.cluster_centers_, np.bincount(km.labels_, minlength=n_clusters)


def _lloyd(flat: np.ndarray, n_clusters: int, key, n_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding and Lloyd iterations in JAX (used when scikit-learn is not installed)."""
    xs = jnp.asarray(flat, jnp.float32)
    keys = jax.random.split(key, n_clusters)
    centres = [xs[jax.random.randint(keys[0], (), 0, xs.shape[0])]]
    for c in range(1, n_clusters):
        d2 = jnp.min(jnp.stack([jnp.sum((xs - m) ** 2, axis=1) for m in centres]), axis=0)
        centres.append(xs[jax.random.choice(keys[c], xs.shape[0], p=d2 / jnp.maximum(jnp.sum(d2), 1e-30))])
    centres = jnp.stack(centres)

    def step(c, _):
        label = jnp.argmin(jnp.sum((xs[:, None] - c[None]) ** 2, axis=-1), axis=1)
        onehot = jax.nn.one_hot(label, n_clusters, dtype=xs.dtype)
        count = onehot.sum(0)
        new = (onehot.T @ xs) / jnp.maximum(count, 1)[:, None]
        return jnp.where(count[:, None] > 0, new, c), None

    centres, _ = jax.lax.scan(step, centres, None, length=n_iter)
    label = np.asarray(jnp.argmin(jnp.sum((xs[:, None] - centres[None]) ** 2, axis=-1), axis=1))
    return np.asarray(centres, np.float64), np.bincount(label, minlength=n_clusters)


def _median_range(curves: np.ndarray) -> np.ndarray:
    """``[n_outputs, n_features]`` range over the sweep of the median over settings, from ``[F, S, steps, O]``."""
    median = np.median(curves, axis=1)  # [F, steps, O]
    return (median.max(axis=1) - median.min(axis=1)).T


def _lek_run(call: Call) -> LekProfile:
    model, opts, fn = call.model, call.options, "lek_profile"
    check_model(model, fn, family="profile")
    shape = tuple(int(d) for d in model.input_shape)
    n_features, steps, max_rows = shape[-1], int(opts["steps"]), int(opts["max_rows"])
    n_clusters = opts["n_clusters"]
    q = np.asarray(opts["quantiles"], np.float64).reshape(-1)
    if n_clusters is None and np.any((q < 0) | (q > 1)):
        raise ArgumentError(f"{fn}(): quantiles must be numbers in [0, 1], got {list(opts['quantiles'])}")
    src, _ = open_xy(call.data, None, input_shape=shape, feature_names=model.feature_names)
    n_settings = int(n_clusters) if n_clusters is not None else len(q)
    n_points = n_features * n_settings * steps
    report, close = reporter(call.progress, None if src.n_rows is None else src.n_rows + n_points)
    try:
        lo, hi, sample, n, skipped, header = _scan(call, src, shape, max_rows, report)
        flat_lo, flat_hi = lo.reshape(-1, n_features).min(0), hi.reshape(-1, n_features).max(0)
        grid = np.linspace(flat_lo.astype(np.float64), flat_hi.astype(np.float64), steps, axis=1)  # [F, steps]
        sizes = None
        if n_clusters is not None:
            if not 1 <= n_clusters <= len(sample):
                raise ArgumentError(
                    f"{fn}(): n_clusters must be an integer in [1, {len(sample)}] (rows of the sample), got "
                    f"{n_clusters!r}"
                )
            centres, sizes = _kmeans_settings(sample.reshape(len(sample), -1), int(n_clusters), call.key)
            settings = centres.reshape(int(n_clusters), *shape)
            names = tuple(f"cluster {c}" for c in range(int(n_clusters)))
        else:
            settings = np.quantile(sample, q, axis=0)
            settings[q == 0] = lo  # the exact extremes over all rows (the sample may miss them)
            settings[q == 1] = hi
            names = tuple(f"q={v:g}" for v in q)
        curves = _sweep(call, model, settings, grid, report, offset=n + skipped)
    finally:
        close()
    outs = call.outputs
    if outs is not None:
        curves = curves[..., np.asarray(outs)]
    importance = _median_range(curves)
    boot = jax.random.randint(jax.random.key(_stats.BOOT_SEED), (_stats.N_BOOT, n_settings), 0, n_settings)
    replicates = np.stack([_median_range(curves[:, np.asarray(b)]) for b in np.asarray(boot)])
    stderr = _stats.bootstrap_stderr(replicates) if n_settings > 1 else np.zeros_like(importance)
    names_f = header or model.feature_names or tuple(f"x{i}" for i in range(n_features))
    return LekProfile(
        importance=importance,
        stderr=stderr,
        curves=curves,
        grid=grid,
        settings=settings,
        setting_names=names,
        cluster_sizes=sizes,
        n_sample_rows=len(sample),
        n_samples=int(n),
        n_skipped=int(skipped),
        feature_names=tuple(names_f),
        output_names=output_names(model, outs),
        input_shape=(n_features,),
        method="profile",
        options=call.record(),
    )


def _sweep(call: Call, model, settings, grid, report, *, offset: int) -> np.ndarray:
    """``[F, S, steps, n_outputs]`` model outputs at every (feature, setting, step) point, in fixed-size chunks."""
    n_features, steps, n_settings = grid.shape[0], grid.shape[1], settings.shape[0]
    total = n_features * n_settings * steps
    batch_size = call.batch_size
    if batch_size is None:
        example = jax.ShapeDtypeStruct(tuple(model.input_shape), jnp.float32)
        per_point = _engine.model_bytes_per_sample(model, "apply", lambda x: model.apply(model.params, x), example)
        batch_size = _engine.choose_batch_size(per_point, n_rows=total, devices=jax.local_devices()[:1])
    settings_d = jnp.asarray(settings, jnp.float32)
    grid_d = jnp.asarray(grid, jnp.float32)
    index = np.arange(-(-total // batch_size) * batch_size, dtype=np.int32)
    index[total:] = 0  # padding: any valid point, dropped below
    out = []
    for i in range(0, len(index), batch_size):
        out.append(np.asarray(_profile_kernel(model, settings_d, grid_d, jnp.asarray(index[i : i + batch_size]))))
        if report is not None:
            report(offset + min(i + batch_size, total))
    return np.concatenate(out)[:total].astype(np.float64).reshape(n_features, n_settings, steps, -1)


LEK_SPEC = Method(
    name="profile",
    function_name="lek_profile",
    family="profile",
    summary="Lek's profile: each input swept over its range, the others at quantiles or k-means centres",
    doc=r"""Lek's profile method: sweep each input over its range, the other inputs held at reference settings.

    Input :math:`j` takes ``steps`` equally spaced values from its minimum to its maximum over all rows; every
    other input is held at a *setting*: its ``q``-quantile over the rows for each ``q`` in ``quantiles``
    (numpy's linear interpolation; Lek et al. used the minimum, quartiles and maximum), or, with
    ``n_clusters=k``, the centres of a k-means clustering of the rows (held values that occur together;
    scikit-learn's ``KMeans`` seeded from ``key``). Sequence inputs ``[T, F]``: the swept feature takes the
    value at every time step; settings are per element. All ``n_features x n_settings x steps`` points are
    evaluated by one compiled kernel in chunks of ``batch_size`` points.

    ``importance[k, j]`` (``[n_outputs, n_features]``) is :math:`\max_t m_{jk}(t) - \min_t m_{jk}(t)` of the
    *median profile* :math:`m_{jk}(t) = \mathrm{median}_s\, f_k(x^{(j, s, t)})`; ``stderr`` the bootstrap
    over the settings (64 resamples with replacement of the settings, standard deviation of the range): how
    much the range depends on where the other inputs are held, not the sampling error of the data.
    :meth:`LekProfile.plot_curves` draws the curves, paged.

    **Memory: a bounded sample.** Minimum and maximum are streamed over all rows (exact). Quantiles and
    k-means need rows together: they are computed on a uniform sample of at most ``max_rows`` rows (default
    100,000; a reservoir kept while streaming: the rows with the smallest priorities ``fold_in(key, row)``,
    so the sample does not depend on chunking). A data set with at most ``max_rows`` rows is used whole
    (exact quantiles); the quantile levels 0 and 1 always use the exact extremes. Progress counts the rows
    read, then the points evaluated.

    References: S. Lek, M. Delacoste, P. Baran, I. Dimopoulos, J. Lauga, S. Aulagnier, "Application of neural
    networks to modelling nonlinear relationships in ecology", Ecological Modelling 90 (1996) 39-52; M. W.
    Beck, "NeuralNetTools", J. Stat. Softw. 85(11) 2018 (``lekprofile``: quantile or k-means groups).

    Returns:
        :class:`LekProfile` with ``importance`` / ``stderr`` ``[n_outputs, n_features]`` and ``curves``
        ``[n_features, n_settings, steps, n_outputs]``.

    Example:
        >>> import numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] * 2 + x[1:] ** 2, {}, input_shape=(2,))
        >>> X = np.random.default_rng(0).uniform(-1, 1, size=(200, 2))
        >>> r = lek_profile(m, X, steps=5)
        >>> r.curves.shape, r.ranking()[0][0]
        ((2, 6, 5, 1), 'x0')
""",
    result=LekProfile,
    random=True,
    options=(
        Option("steps", int, 100, "points along each input's range", minimum=2),
        Option("quantiles", "floats", (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), "quantile levels in [0, 1] the other "
               "inputs are held at (ignored with n_clusters)"),
        Option("n_clusters", int, None, "hold the other inputs at k-means centres of the rows instead of "
               "quantiles", minimum=1),
        Option("max_rows", int, 100_000, "rows of the uniform sample for quantiles / k-means (memory bound)",
               minimum=1),
    ),
    memory="a uniform sample of at most max_rows rows (default 100,000) and the curves "
           "(n_features x n_settings x steps x n_outputs values)",
    run=_lek_run,
)

improved_stepwise = IMPROVED_STEPWISE_SPEC.as_function()
lek_profile = LEK_SPEC.as_function()
