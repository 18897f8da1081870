r"""``hessian_importance``: statistics of the per-sample Hessian, streamed over a data set.

For a model :math:`f: \mathbb{R}^{d} \to \mathbb{R}^{m}` and samples :math:`x^{(1..N)}`, the per-sample Hessian
:math:`H_{kij}(x) = \partial^2 f_k(x) / \partial x_i \partial x_j` is aggregated into the mean absolute value, the
mean, the standard deviation and the root mean square (NeuralSens' second-order measures: J. Pizarroso, J.
Portela, A. Muñoz, "NeuralSens: Sensitivity Analysis of Neural Networks", Journal of Statistical Software 102(7),
2022), with the standard error of the mean absolute value. Off the diagonal, :math:`\overline{|H_{kij}|}` measures
the interaction of inputs ``i`` and ``j`` (a first derivative misses it: for :math:`y = x_0 x_1` each input matters
only through the other); on the diagonal, the curvature along input ``i``.

Per sample the Hessian is forward-over-reverse, ``jax.jacfwd(jax.jacrev(f))`` (one reverse pass per output, pushed
forward along every input element), ``vmap`` ped over the chunk and symmetrised, :math:`(H + H^T) / 2` (equal in
exact arithmetic; it removes the rounding asymmetry of the two orders).
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError
from jaxsens import _engine, _stats
from jaxsens._checks import check_model
from jaxsens._method import Call, Method, Plan, output_names
from jaxsens._model import Model
from jaxsens._results import (
    Result,
    bar_plot,
    element_labels,
    finish_figure,
    heatmap_plot,
    output_index,
    pyplot,
    ranked,
    result_class,
)

__all__ = ["SPEC", "HessianImportance", "hessian_importance"]


def _per_sample_hessian(model: Model, outputs: tuple[int, ...] | None, input_shape: tuple[int, ...]):
    """``x -> H(x)`` ``[n_selected_outputs, n, n]`` for one sample, ``n = prod(input_shape)`` (row-major
    flattened input elements), forward-over-reverse and symmetrised."""

    def f(v):
        y = jnp.ravel(model.apply(model.params, v.reshape(input_shape)))
        return y if outputs is None else y[np.asarray(outputs)]

    def hess(x):
        h = jax.jacfwd(jax.jacrev(f))(jnp.ravel(x))  # [k, n, n]
        return 0.5 * (h + jnp.swapaxes(h, -1, -2))

    return hess


@functools.partial(jax.jit, static_argnames=("outputs", "input_shape"))
def _kernel(model: Model, xs, mask, row_index, *, outputs, input_shape):
    """Per chunk: moments of ``H`` and ``|H|`` ``[k, n, n]``, of the row sums ``sum_j |H_ij|`` ``[k, n]`` and,
    for inputs with more than one axis, of the by-feature aggregates ``[k, F, F]`` (of ``|H|`` and of ``H``) and
    the row sums of the first ``[k, F]``."""
    del row_index  # deterministic method: no per-row randomness
    h = jax.vmap(_per_sample_hessian(model.with_unroll(0), outputs, input_shape))(xs)  # [B, k, n, n]
    abs_h = jnp.abs(h)
    stats = {
        "h": _stats.moments_of(h, mask),
        "abs": _stats.moments_of(abs_h, mask),
        "row": _stats.moments_of(jnp.sum(abs_h, axis=-1), mask),
    }
    if len(input_shape) > 1:
        n_features = input_shape[-1]
        lead = math.prod(input_shape[:-1])
        blocks = abs_h.reshape(*abs_h.shape[:2], lead, n_features, lead, n_features)
        agg = jnp.sum(blocks, axis=(2, 4))  # [B, k, F, F]: sum over every pair of positions (t, s)
        stats["agg"] = _stats.moments_of(agg, mask)
        stats["agg_row"] = _stats.moments_of(jnp.sum(agg, axis=-1), mask)
        signed = jnp.sum(h.reshape(blocks.shape), axis=(2, 4))  # the same sums of H itself
        stats["agg_h"] = _stats.moments_of(signed, mask)
    return stats


@result_class
class HessianImportance(Result):
    r"""Statistics of the per-sample Hessian :math:`H_{kij}(x) = \partial^2 f_k / \partial x_i \partial x_j`.

    The Hessian statistics are over the ``n = prod(input_shape)`` input elements (row-major, ``n = n_features``
    for 1-D inputs): ``mean_abs``, ``mean_abs_stderr``, ``mean``, ``std``, ``rms``, each ``[n_outputs, n, n]``,
    float64, symmetric.

    ``importance`` (``[n_outputs, *input_shape]``, what :meth:`ranking`, :meth:`to_frame` and the shared views
    read) scores each input element ``i`` by the mean over samples of its absolute Hessian row,
    :math:`\overline{\sum_j |H_{kij}|}`: its curvature (``j = i``) plus all its interactions, the diagonal
    included so that an input acting only through its own curvature (:math:`x^2`) is not scored 0. It equals
    ``mean_abs.sum(-1)`` and ``stderr`` is its exact standard error ``std(sum_j |H_ij|) / sqrt(n_samples)``
    (ddof = 1), from the per-sample row sums accumulated in the same pass.

    Attributes (besides those of :class:`jaxsens.Result`):
        mean_abs: :math:`\overline{|H|}` ``[n_outputs, n, n]``.
        mean_abs_stderr: its standard error ``std(|H|) / sqrt(n_samples)``.
        mean: :math:`\overline{H}`, the signed mean.
        std: standard deviation of :math:`H` over samples (ddof = 1).
        rms: :math:`\sqrt{\overline{H^2}}`.
        time_aggregate: for inputs with more than one axis (``[T, F]``), the by-feature aggregate: ``mean_abs``
            and ``stderr`` ``[n_outputs, F, F]`` of :math:`A_{fg} = \sum_{t,s} |H_{(t,f),(s,g)}|` (the absolute
            Hessian summed over every pair of time steps), and ``row`` / ``row_stderr`` ``[n_outputs, F]`` of its
            row sums :math:`\sum_g A_{fg}` (the per-feature score: :meth:`feature_importance`); ``mean``, ``std``
            and ``rms`` ``[n_outputs, F, F]`` of the signed sums :math:`S_{fg} = \sum_{t,s} H_{(t,f),(s,g)}` (the
            Hessian of the output along a shift of features ``f`` and ``g`` at every time step; interactions of
            opposite signs at different steps cancel in it, not in ``A``). ``None`` for 1-D inputs.
    """

    mean_abs: np.ndarray
    mean_abs_stderr: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    rms: np.ndarray
    time_aggregate: dict[str, np.ndarray] | None = None

    importance_label: ClassVar[str] = "mean sum_j |d2y/dx_i dx_j|"
    stderr_rule: ClassVar[str] = "std(sum_j |H_ij|) / sqrt(n_samples)"

    def feature_importance(self):
        """``(importance, stderr)`` per feature, ``[n_outputs, n_features]``: the absolute Hessian row sums (see
        the class docstring); for sequence inputs the row sums of the by-feature aggregate, which equal the
        base rule (the sum of ``importance`` over time steps) with an exact stderr."""
        if len(self.input_shape) > 1 and self.time_aggregate is not None:
            return self.time_aggregate["row"], self.time_aggregate["row_stderr"]
        return super().feature_importance()

    def interactions(self, output: int | str | None = None, top: int | None = 20, *, by: str = "feature"
                     ) -> tuple[tuple[str, str, float, float], ...]:
        """Off-diagonal pairs ``i < j`` by decreasing mean ``|H_ij|``: ``((name_i, name_j, value, stderr), ...)``.

        Args:
            output: index or name of one output; default the mean over outputs (stderr: the mean of the
                per-output stderrs, an upper bound).
            top: pairs to return (``None``: all ``n * (n - 1) / 2``).
            by: ``"feature"`` (default; for sequence inputs the by-feature aggregate ``A_fg`` of
                ``time_aggregate``) or ``"element"`` (input elements, labelled ``name[t]``).

        Example:
            >>> import jax.numpy as jnp, numpy as np, jaxsens
            >>> m = jaxsens.Model.from_function(lambda p, x: (p * x[0] * x[1] + x[2] ** 2)[None], 3.0,
            ...                                 input_shape=(3,))
            >>> r = jaxsens.hessian_importance(m, np.ones((4, 3), np.float32))
            >>> r.interactions(top=1)
            (('x0', 'x1', 3.0, 0.0),)
        """
        matrix, err, labels = self._matrix(by)
        matrix, err = self._pick(matrix, err, output)
        i, j = np.triu_indices(matrix.shape[-1], k=1)
        rows = ranked([f"{a}\x00{b}" for a, b in zip(np.asarray(labels)[i], np.asarray(labels)[j])],
                      matrix[i, j], err[i, j])
        out = tuple((*label.split("\x00"), v, e) for label, v, e in rows)
        return out if top is None else out[: int(top)]

    def _matrix(self, by: str):
        if by == "element" or len(self.input_shape) <= 1:
            if by not in ("feature", "element"):
                raise ArgumentError(f"by must be 'feature' or 'element', got {by!r}")
            return self.mean_abs, self.mean_abs_stderr, element_labels(self.feature_names, self.input_shape)
        if by != "feature":
            raise ArgumentError(f"by must be 'feature' or 'element', got {by!r}")
        if self.time_aggregate is None:
            raise ArgumentError("this result has no by-feature aggregate (it was built without one)")
        return self.time_aggregate["mean_abs"], self.time_aggregate["stderr"], self.feature_names

    def plot(self, *, top: int = 20, output: int | str | None = None, path=None):
        """Ranked bars of the ``top`` features (95% intervals) and the interaction heatmap of mean ``|H|``.

        The heatmap is ``mean_abs`` over features (the by-feature aggregate ``A_fg`` for sequence inputs) for the
        ``top`` features, in ranking order; the diagonal is the curvature, the rest the interactions.
        """
        plt = pyplot()
        rows = self.ranking(output)
        k = min(int(top), len(rows))
        matrix, _, _ = self._matrix("feature")
        matrix, _ = self._pick(matrix, matrix, output)
        keep = [self.feature_names.index(n) for n, _, _ in rows[:k]]
        names = [self.feature_names[j] for j in keep]
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 1.8 + 0.3 * k), width_ratios=[2, 3])
        bar_plot(ax0, rows, top=k, xlabel=self.importance_label)
        what = "sum over time-step pairs of mean |d2y/dx dx|" if len(self.input_shape) > 1 else "mean |d2y/dx_i dx_j|"
        heatmap_plot(ax1, matrix[np.ix_(keep, keep)], feature_names=names, label=what, ylabel="feature")
        ax1.set_yticks(np.arange(k), names)
        ax1.set_title("interactions (off-diagonal) and curvature (diagonal)")
        if self.output_names:
            which = (f" for output {self.output_names[output_index(output, self.output_names)]}" if output is not None
                     else f" for output {self.output_names[0]}" if self.n_outputs == 1
                     else f" (mean over {self.n_outputs} outputs)")
        else:
            which = ""
        fig.suptitle(f"{self.method}{which}: top {k} of {len(rows)} features")
        return finish_figure(fig, path)


def _prepare(call: Call) -> Plan:
    model = call.model
    (shape,) = check_model(model, "hessian_importance", family="gradient")
    example = jax.ShapeDtypeStruct(shape, jnp.float32)
    k = model.n_outputs if call.outputs is None else len(call.outputs)
    n = math.prod(shape)
    per_sample = None
    if call.batch_size is None:
        per_sample = _engine.model_bytes_per_sample(
            model, ("hessian", call.outputs), _per_sample_hessian(model, call.outputs, shape), example
        ) + 8 * 4 * k * n * n  # H, |H|, the symmetrised copy and the moments' deviations
    return Plan(state=model, static={"outputs": call.outputs, "input_shape": shape}, bytes_per_sample=per_sample,
                context=shape)


def _moments(m: _stats.Moments) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, stderr)`` in float64 from merged moments."""
    return np.asarray(m.mean, np.float64), _stats.std(m) / math.sqrt(float(m.count))


def _finalize(stats, info, plan: Plan, call: Call) -> HessianImportance:
    shape, model = plan.context, call.model
    names = info.feature_names or model.feature_names or tuple(f"x{j}" for j in range(shape[-1]))
    outs = output_names(model, call.outputs)
    mean_abs, mean_abs_stderr = _moments(stats["abs"])
    row, row_stderr = _moments(stats["row"])
    h = stats["h"]
    mean = np.asarray(h.mean, np.float64)
    aggregate = None
    if "agg" in stats:
        agg, agg_stderr = _moments(stats["agg"])
        agg_row, agg_row_stderr = _moments(stats["agg_row"])
        aggregate = {"mean_abs": agg, "stderr": agg_stderr, "row": agg_row, "row_stderr": agg_row_stderr}
        signed = stats["agg_h"]
        aggregate.update(mean=np.asarray(signed.mean, np.float64), std=_stats.std(signed), rms=_stats.rms(signed))
    return HessianImportance(
        importance=row.reshape(len(outs), *shape),
        stderr=row_stderr.reshape(len(outs), *shape),
        mean_abs=mean_abs,
        mean_abs_stderr=mean_abs_stderr,
        mean=mean,
        std=_stats.std(h),
        rms=_stats.rms(h),
        time_aggregate=aggregate,
        n_samples=info.n_samples,
        n_skipped=info.n_skipped,
        feature_names=names,
        output_names=outs,
        input_shape=shape,
        method="hessian",
        options=call.record(),
    )


SPEC = Method(
    name="hessian",
    function_name="hessian_importance",
    family="gradient",
    summary="mean |d2y/dx_i dx_j| over the data, with mean, std and RMS of the per-sample Hessian: interactions "
            "and curvature (NeuralSens' second order)",
    doc=r"""Mean absolute, mean, std and RMS of the per-sample Hessian over a data set, in one streaming pass.

    For every sample, :math:`H_k(x) = \partial^2 f_k(x) / \partial x \partial x^T` over the ``n =
    prod(input_shape)`` input elements (row-major flattened: ``[T, F]`` sequence inputs give ``T * F``
    elements) is computed forward-over-reverse, ``jax.jacfwd(jax.jacrev(f))``, ``vmap`` ped over each chunk in
    one compiled kernel per architecture and chunk shape, and symmetrised; per-chunk moments are merged in
    float64 (Chan et al.), so ``batch_size`` and the number of devices do not change the results beyond float32
    rounding. Memory is independent of ``n_samples`` and grows as ``n_outputs * n ** 2`` per row of a chunk
    (the default ``batch_size`` accounts for it).

    The Hessian statistics are ``result.mean_abs`` (with ``mean_abs_stderr``), ``mean``, ``std``, ``rms``, each
    ``[n_outputs, n, n]``; ``result.interactions()`` ranks the off-diagonal pairs by mean ``|H_ij|`` and
    ``result.plot()`` draws the ranking and the interaction heatmap. ``importance`` ``[n_outputs,
    *input_shape]`` scores each element by its mean absolute Hessian row sum :math:`\overline{\sum_j |H_{ij}|}`
    (curvature plus interactions; see :class:`HessianImportance`). For sequence inputs ``[T, F]`` the by-feature
    aggregate :math:`A_{fg} = \sum_{t,s} |H_{(t,f),(s,g)}|` (``time_aggregate``) is accumulated in the same pass:
    the features are ranked by its row sums, which equal ``importance`` summed over time steps.

    Returns:
        A :class:`HessianImportance`.

    Raises:
        ArgumentError: a model with several inputs, or integer inputs.
        DataError: data whose shape does not match ``model.input_shape``, NaN / Inf rows (``nan_policy="raise"``).

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: (x[0] ** 2 + p * x[1] * x[2])[None], 1.0, input_shape=(3,))
        >>> r = jaxsens.hessian_importance(m, np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32))
        >>> r.mean[0].tolist()
        [[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
        >>> r.importance.tolist()
        [[2.0, 1.0, 1.0]]
    """,
    result=HessianImportance,
    prepare=_prepare,
    kernel=_kernel,
    finalize=_finalize,
    memory="streams the data: memory independent of the number of rows, n_outputs * n_elements**2 per chunk row",
)

hessian_importance = SPEC.as_function()
