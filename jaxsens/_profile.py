"""Methods that hold inputs at reference values: improved stepwise selection 1 and 2, Lek's profile.

Both evaluate the model on modified copies of the data built for every feature at once (a one-hot mask on the
last input axis), in one ``vmap``; nothing is retrained.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError
from jaxsens import _engine
from jaxsens._metrics import Metric, check_targets, get_metric
from jaxsens._model import apply_rows
from jaxsens._results import (
    finish_figure,
    frame,
    output_index,
    pyplot,
    ranked,
    ranking_figure,
    register_result,
    save_result,
)
from jaxsens._variants import (
    Spec,
    Task,
    as_key,
    change_kernel,
    check_model,
    check_rows,
    host_scores,
    onehot_last,
    pack,
    predict_all,
    row_bytes,
    rows_frame,
    run_loss,
    stderr_of,
)

__all__ = ["ImprovedStepwise", "LekProfile", "improved_stepwise", "lek_profile"]


# --------------------------------------------------------------------------------------------------- stepwise
def _fixed_variants(x, parts, key, arrays, options):
    n_features = x.shape[-1]
    hit = onehot_last(range(n_features), n_features, x.ndim)  # [F, 1.., F]
    return jnp.where(hit, arrays["means"], x)


@register_result("improved_stepwise")
@dataclasses.dataclass(frozen=True, eq=False)
class ImprovedStepwise:
    """Effect of fixing each input at its mean, without retraining (Gevrey, Dimopoulos & Lek 2003).

    Attributes:
        variant: 1 (increase of the error against the targets) or 2 (change of the network's output).
        importance: ``[n_features]`` variant 1: ``metric(y, f(X_j)) - metric(y, f(X))``; variant 2: mean
            squared change of the output ``mean over rows and outputs of (f(X_j) - f(X))^2``.
        stderr: ``[n_features]`` standard error of ``importance`` (NaN for whole-data-set metrics).
        baseline_error: variant 1: ``metric(y, f(X))``; variant 2: NaN.
        per_output: ``[n_features, n_outputs]`` variant 2 only: the mean squared change of each output.
        input_mean: ``[*input_shape]`` the values the inputs were fixed at.
        metric: variant 1: the metric's name; variant 2: ``"output_mse"``.
        n_samples: rows used.
        feature_names: ``n_features`` names.
        output_names: ``n_outputs`` names.
    """

    variant: int
    importance: np.ndarray
    stderr: np.ndarray
    baseline_error: float
    per_output: np.ndarray | None
    input_mean: np.ndarray
    metric: str
    n_samples: int
    feature_names: tuple[str, ...]
    output_names: tuple[str, ...]

    @property
    def relative(self) -> np.ndarray:
        """``[n_features]`` importance as a percentage of its sum (Gevrey et al.'s relative contributions)."""
        total = np.sum(self.importance)
        return np.full_like(self.importance, np.nan) if total == 0 else 100.0 * self.importance / total

    def ranking(self) -> tuple[tuple[str, float, float], ...]:
        """``((feature, importance, stderr), ...)``, largest first."""
        return ranked(self.feature_names, self.importance, self.stderr)

    def to_frame(self):
        """One row per feature: ``importance``, ``stderr``, ``relative`` (%), ``rank``."""
        cols = {"importance": self.importance, "stderr": self.stderr, "relative": self.relative}
        return rows_frame(self.feature_names, cols, self.importance)

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON (lossless); read it back with :func:`jaxsens.load_result`."""
        save_result(self, path)

    def plot(self, *, top: int = 20, path: str | os.PathLike | None = None):
        """Ranked bars with standard-error bars; returns the matplotlib ``Figure``."""
        what = f"{self.metric} increase" if self.variant == 1 else "mean squared output change"
        return ranking_figure(
            self.ranking(), top=top, xlabel=f"improved stepwise {self.variant}: {what}", path=path
        )


def improved_stepwise(
    model,
    X,
    y=None,
    *,
    variant: int = 1,
    metric: str | Metric | Callable = "mse",
    batch_size: int | None = None,
    progress=None,
) -> ImprovedStepwise:
    r"""Improved stepwise selection 1 and 2: each input in turn fixed at its mean, the network not retrained.

    With :math:`X_j` the data with input :math:`j` replaced by its mean over the rows (for a sequence input
    ``[T, F]``: feature :math:`j` at every time step replaced by its mean at that step,
    ``X.mean(axis=0)[..., j]``):

    * ``variant=1``: the increase of the error against the targets,
      :math:`I_j = \mathrm{MSE}(y, f(X_j)) - \mathrm{MSE}(y, f(X))` (or another ``metric``; for a score, its
      decrease);
    * ``variant=2``: the change of the network's output, measured as the mean squared difference between the
      outputs of the intact and the modified network,
      :math:`I_j = \frac{1}{N K}\sum_{n, k} (f_k(X_j)_n - f_k(X)_n)^2`; no targets needed.

    The largest :math:`I_j` marks the most important input. Every input's modified copy of a row is evaluated
    in one batch with the row itself.

    Reference: M. Gevrey, I. Dimopoulos, S. Lek, "Review and comparison of methods to study the contribution
    of variables in artificial neural network models", Ecological Modelling 160 (2003) 249-264; compared in
    Olden, Joy & Death, Ecological Modelling 178 (2004) 389-397.

    Args:
        model: a single-input :class:`jaxsens.Model`.
        X: ``[n_samples, *input_shape]``.
        y: targets, needed for ``variant=1`` (see :mod:`jaxsens._metrics`).
        variant: 1 or 2.
        metric: variant 1's error (default ``"mse"``, as in the paper).
        batch_size: rows per chunk.
        progress: ``True`` for a progress bar.

    Returns:
        :class:`ImprovedStepwise` with ``importance`` ``[n_features]``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] + 0 * x[1:], {}, input_shape=(2,))
        >>> X = np.array([[0.0, 5.0], [2.0, 1.0]])
        >>> improved_stepwise(m, X, variant=2).importance.tolist()  # x0 moves by 1 in both rows
        [1.0, 0.0]
    """
    check_model(model, "improved_stepwise")
    if variant not in (1, 2) or isinstance(variant, bool):
        raise ArgumentError(
            f"variant must be 1 (error against targets) or 2 (change of the output), got {variant!r}"
        )
    X = check_rows(model, X)
    n, n_features = X.shape[0], X.shape[-1]
    means = X.astype(np.float64).mean(axis=0)
    names = tuple(model.feature_names or [f"x{i}" for i in range(n_features)])
    outputs = tuple(model.output_names or [f"y{k}" for k in range(model.n_outputs)])
    arrays = {"means": jnp.asarray(means, jnp.float32)}
    common = dict(input_mean=means, feature_names=names, output_names=outputs, variant=variant)
    if variant == 2:
        if y is not None:
            raise ArgumentError(
                "improved_stepwise(variant=2) compares outputs and takes no y; use variant=1 with y"
            )
        task = Task(model, arrays, Spec(_fixed_variants))
        stats, info = _engine.run(
            change_kernel,
            task,
            X.astype(np.float32),
            batch_size=batch_size,
            bytes_per_sample=row_bytes(task, model.input_shape),
            progress=progress,
        )
        return ImprovedStepwise(
            importance=np.asarray(stats["sq_all"].mean),
            stderr=stderr_of(stats["sq_all"]),
            baseline_error=float("nan"),
            per_output=np.asarray(stats["sq"].mean),
            metric="output_mse",
            n_samples=int(info.n_samples),
            **common,
        )
    if y is None:
        raise ArgumentError(
            "improved_stepwise(variant=1) needs targets y; use variant=2 to compare outputs only"
        )
    metric = get_metric(metric)
    y_rows = check_targets(metric, y, n, model.output_shape)
    packed, layout = pack([("x", X), ("y", y_rows)])
    task = Task(model, arrays, Spec(_fixed_variants, layout=layout, metric=metric))
    if metric.per_sample:
        base, diff, info = run_loss(task, packed, batch_size=batch_size, progress=progress)
        importance, stderr = metric.sign * np.asarray(diff.mean), stderr_of(diff)
        baseline, n_used = float(base.mean), info.n_samples
    else:
        scores = host_scores(metric, np.asarray(y), predict_all(task, packed, batch_size=batch_size))
        importance, stderr = metric.sign * (scores[1:] - scores[0]), np.full(n_features, np.nan)
        baseline, n_used = float(scores[0]), n
    return ImprovedStepwise(
        importance=importance,
        stderr=stderr,
        baseline_error=baseline,
        per_output=None,
        metric=metric.name,
        n_samples=int(n_used),
        **common,
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


@register_result("lek_profile")
@dataclasses.dataclass(frozen=True, eq=False)
class LekProfile:
    """Lek's profiles: the response to each input swept over its range with the others at fixed settings.

    Attributes:
        curves: ``[n_features, n_settings, steps, n_outputs]`` model outputs.
        grid: ``[n_features, steps]`` the swept values of each input (its minimum to its maximum over the
            data).
        settings: ``[n_settings, *input_shape]`` the values the other inputs were held at.
        setting_names: ``n_settings`` labels (``"q=0.2"`` or ``"cluster 1"``).
        importance: ``[n_features]`` range-based importance: the range (max - min over the sweep) of the
            median profile (the median over settings at each step), averaged over outputs.
        importance_per_output: ``[n_features, n_outputs]`` the same range for each output.
        feature_names: ``n_features`` names.
        output_names: ``n_outputs`` names.
        cluster_sizes: ``[n_clusters]`` rows in each k-means cluster, or ``None`` for quantile settings.
    """

    curves: np.ndarray
    grid: np.ndarray
    settings: np.ndarray
    setting_names: tuple[str, ...]
    importance: np.ndarray
    importance_per_output: np.ndarray
    feature_names: tuple[str, ...]
    output_names: tuple[str, ...]
    cluster_sizes: np.ndarray | None = None

    def ranking(self, output: int | str | None = None) -> tuple[tuple[str, float, float], ...]:
        """``((feature, range, nan), ...)``, largest first; ``output=`` ranks by one output's range."""
        if output is None:
            return ranked(self.feature_names, self.importance)
        return ranked(
            self.feature_names, self.importance_per_output[:, output_index(output, self.output_names)]
        )

    def to_frame(self):
        """One row per feature: ``importance`` (range of the median profile), ``rank``."""
        return rows_frame(self.feature_names, {"importance": self.importance}, self.importance)

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

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON (lossless); read it back with :func:`jaxsens.load_result`."""
        save_result(self, path)

    def plot(self, *, output: int | str = 0, ncols: int = 4, path: str | os.PathLike | None = None):
        """One panel per input: the response of ``output`` along the input's range, one line per setting.

        Returns:
            The matplotlib ``Figure``.
        """
        plt = pyplot()
        o = output_index(output, self.output_names)
        n = len(self.feature_names)
        ncols = max(1, min(ncols, n))
        nrows = math.ceil(n / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False, sharey=True)
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(self.setting_names)))
        for j, ax in enumerate(axes.flat):
            if j >= n:
                ax.set_visible(False)
                continue
            for s, name in enumerate(self.setting_names):
                ax.plot(self.grid[j], self.curves[j, s, :, o], color=colors[s], label=name)
            ax.set_title(self.feature_names[j], fontsize="medium")
            ax.grid(alpha=0.3)
        axes.flat[0].set_ylabel(self.output_names[o])
        axes.flat[0].legend(fontsize="x-small")
        return finish_figure(fig, path)


def _kmeans_settings(flat: np.ndarray, n_clusters: int, key) -> tuple[np.ndarray, np.ndarray]:
    """k-means centres and sizes: scikit-learn's ``KMeans`` (seeded from ``key``), else a small Lloyd loop."""
    key_data, impl = as_key(key, "lek_profile(n_clusters=...)")
    key = jax.random.wrap_key_data(key_data, impl=impl)
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


def lek_profile(
    model,
    X,
    *,
    steps: int = 100,
    quantiles: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    n_clusters: int | None = None,
    key=None,
    batch_size: int | None = None,
) -> LekProfile:
    r"""Lek's profile method: sweep each input over its range, the other inputs held at reference settings.

    Input :math:`j` takes ``steps`` equally spaced values from its minimum to its maximum over ``X``; every
    other input is held at a *setting*: its ``q``-quantile over the rows for each ``q`` in ``quantiles``
    (numpy's linear interpolation; Lek et al. used the minimum, quartiles and maximum), or, with
    ``n_clusters=k``, the centres of a k-means clustering of the rows (so that the held values are
    combinations that occur together; scikit-learn's ``KMeans`` seeded from ``key``). Sequence inputs
    ``[T, F]``: the swept feature takes the value at every time step; settings are per element. All
    ``n_features x n_settings x steps`` points are evaluated by one compiled kernel in fixed-size chunks.

    The range-based importance of input :math:`j` is :math:`\max_t m_j(t) - \min_t m_j(t)` of the *median
    profile* :math:`m_j(t) = \mathrm{median}_s\, f(x^{(j, s, t)})`, averaged over outputs.

    References: S. Lek, M. Delacoste, P. Baran, I. Dimopoulos, J. Lauga, S. Aulagnier, "Application of neural
    networks to modelling nonlinear relationships in ecology", Ecological Modelling 90 (1996) 39-52; M. W.
    Beck, "NeuralNetTools", J. Stat. Softw. 85(11) 2018 (``lekprofile``: quantile or k-means groups).

    Args:
        model: a single-input :class:`jaxsens.Model`.
        X: ``[n_samples, *input_shape]``, the data that sets ranges and settings.
        steps: points along each input's range.
        quantiles: quantile levels in ``[0, 1]`` for the settings (ignored with ``n_clusters``).
        n_clusters: use ``k`` k-means centres as settings instead of quantiles.
        key: a JAX PRNG key, needed with ``n_clusters``.
        batch_size: points per kernel call.

    Returns:
        :class:`LekProfile` with ``curves`` ``[n_features, n_settings, steps, n_outputs]``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1] * 2 + x[1:] ** 2, {}, input_shape=(2,))
        >>> X = np.random.default_rng(0).uniform(-1, 1, size=(200, 2))
        >>> r = lek_profile(m, X, steps=5)
        >>> r.curves.shape, r.ranking()[0][0]
        ((2, 6, 5, 1), 'x0')
    """
    check_model(model, "lek_profile")
    X = check_rows(model, X)
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 2:
        raise ArgumentError(f"steps must be an integer >= 2, got {steps!r}")
    n_features = X.shape[-1]
    flat = X.reshape(-1, n_features).astype(np.float64)
    grid = np.linspace(flat.min(axis=0), flat.max(axis=0), int(steps), axis=1)  # [F, steps]
    sizes = None
    if n_clusters is not None:
        if (
            isinstance(n_clusters, bool)
            or not isinstance(n_clusters, int | np.integer)
            or not 1 <= n_clusters <= len(X)
        ):
            raise ArgumentError(
                f"n_clusters must be an integer in [1, {len(X)}] (rows of X), got {n_clusters!r}"
            )
        centres, sizes = _kmeans_settings(X.reshape(len(X), -1).astype(np.float64), int(n_clusters), key)
        settings = centres.reshape(int(n_clusters), *X.shape[1:])
        names = tuple(f"cluster {c}" for c in range(int(n_clusters)))
    else:
        q = np.asarray(quantiles, np.float64).reshape(-1)
        if q.size == 0 or np.any((q < 0) | (q > 1)) or not np.all(np.isfinite(q)):
            raise ArgumentError(f"quantiles must be numbers in [0, 1], got {quantiles!r}")
        settings = np.quantile(X.astype(np.float64), q, axis=0)
        names = tuple(f"q={v:g}" for v in q)
    n_settings = settings.shape[0]
    total = n_features * n_settings * int(steps)
    if batch_size is None:
        example = jax.ShapeDtypeStruct(tuple(model.input_shape), jnp.float32)
        per_point = _engine.model_bytes_per_sample(model, "apply", lambda x: model.apply(model.params, x), example)
        batch_size = _engine.choose_batch_size(per_point, n_rows=total, devices=jax.local_devices()[:1])
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    settings_d = jnp.asarray(settings, jnp.float32)
    grid_d = jnp.asarray(grid, jnp.float32)
    index = np.arange(-(-total // batch_size) * batch_size, dtype=np.int32)
    index[total:] = 0  # padding: any valid point, dropped below
    out = [
        np.asarray(_profile_kernel(model, settings_d, grid_d, jnp.asarray(index[i : i + batch_size])))
        for i in range(0, len(index), batch_size)
    ]
    curves = np.concatenate(out)[:total].astype(np.float64).reshape(n_features, n_settings, int(steps), -1)
    median = np.median(curves, axis=1)  # [F, steps, O]
    per_output = median.max(axis=1) - median.min(axis=1)
    return LekProfile(
        curves=curves,
        grid=grid,
        settings=settings,
        setting_names=names,
        importance=per_output.mean(axis=1),
        importance_per_output=per_output,
        feature_names=tuple(model.feature_names or [f"x{i}" for i in range(n_features)]),
        output_names=tuple(model.output_names or [f"y{k}" for k in range(model.n_outputs)]),
        cluster_sizes=sizes,
    )
