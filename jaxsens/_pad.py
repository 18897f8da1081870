r"""Dimopoulos's PaD: partial derivatives, as each input's share of the summed squared derivatives.

Dimopoulos, Bourret & Lek (1995), "Use of some sensitivity criteria for choosing networks with good
generalization ability", Neural Processing Letters 2(6); Dimopoulos, Chronopoulos, Chronopoulou-Sereli & Lek (1999),
Ecological Modelling 120; as compared in Gevrey, Dimopoulos & Lek (2003) and Olden, Joy & Death (2004).

For output :math:`k`, input element :math:`i` and samples :math:`n = 1..N` with :math:`d_{kni} = \partial y_k /
\partial x_i` at sample :math:`n`:

.. math::  SSD_{ki} = \sum_n d_{kni}^2, \qquad \mathrm{PaD}_{ki} = SSD_{ki} / \sum_j SSD_{kj}

(the papers report :math:`100\,\mathrm{PaD}` in percent). Built on the Jacobian's per-sample derivatives
(:func:`jaxsens._jacobian.chunk_jacobians`): :math:`SSD = N \cdot \mathrm{RMS}^2` from the streamed moments of
:math:`J`, in one pass, so it scales to any number of rows. The standard error comes from a streamed Poisson
bootstrap in the same pass.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxsens import _jacobian, _stats
from jaxsens._checks import check_model
from jaxsens._method import Call, Method, Plan, output_names
from jaxsens._results import Result, Results, result_class

__all__ = ["SPEC", "PartialDerivatives", "partial_derivatives"]


@result_class
class PartialDerivatives(Result):
    r"""PaD result: each input element's share of the summed squared derivatives, per output.

    ``importance`` is ``[n_outputs, *input_shape]``: :math:`SSD_{ki} / \sum_j SSD_{kj}` (float64; each output's
    shares sum to 1 over all input elements, and over all inputs for a model with several). For a sequence input
    ``[T, F]`` a feature's share is the **sum of its per-step shares** (exact: the shares are additive), which is
    what :meth:`ranking` and :meth:`plot` rank by default; :meth:`feature_importance` gives it with its exact
    bootstrap standard error. ``stderr`` is the Poisson-bootstrap standard error of the shares (see
    :data:`stderr_rule`).

    Attributes (besides those of :class:`jaxsens.Result`):
        ssd: ``[n_outputs, *input_shape]`` summed squared derivatives :math:`SSD_{ki}` (float64).
        mean: ``[n_outputs, *input_shape]`` mean derivative (its sign is the direction of the effect).
        feature_stderr: for inputs with more than one axis, ``[n_outputs, n_features]`` bootstrap standard
            error of the per-feature shares (summed over the leading axes); ``None`` for 1-D inputs.
    """

    ssd: np.ndarray
    mean: np.ndarray
    feature_stderr: np.ndarray | None = None

    importance_label: ClassVar[str] = "PaD: share of summed squared derivatives"
    stderr_rule: ClassVar[str] = (
        f"std of the shares over {_stats.N_BOOT} Poisson-bootstrap replicates of the rows "
        "(weights keyed by row index)"
    )

    def feature_importance(self) -> tuple[np.ndarray, np.ndarray]:
        """``(share, stderr)`` per feature ``[n_outputs, n_features]``: shares summed over the leading input axes
        (exact), with the bootstrap standard error of that sum (not the base's upper bound)."""
        if len(self.input_shape) > 1 and self.feature_stderr is not None:
            axes = tuple(range(1, len(self.input_shape)))
            return self.importance.sum(axis=axes), self.feature_stderr
        return super().feature_importance()

    def _extra_columns(self):
        return {"ssd": self.ssd, "mean": self.mean}


def _input_sums(jac, mask, weights) -> dict:
    """One input's summaries: moments of ``J`` ``[B, k, *input_shape]`` and the replicates' weighted ``sum J^2``."""
    m = mask.reshape(mask.shape + (1,) * (jac.ndim - 1))
    sq = jnp.where(m, jac * jac, 0)  # NaN-safe: padded / skipped rows are 0 before the weighted sum
    boot = jnp.einsum("br,b...->r...", weights, sq, precision=jax.lax.Precision.HIGHEST)  # [n_boot, k, *shape]
    return {"jac": _stats.moments_of(jac, mask), "boot": _stats.Total(boot)}


@functools.partial(jax.jit, static_argnames=("mode", "outputs", "precision", "sums_to_one"))
def _pad_kernel(model, xs, mask, row_index, *, mode, outputs, precision, sums_to_one=False):
    """Per-chunk PaD summaries: the Jacobian's moments and, per bootstrap replicate ``r``, ``sum_n w_nr J_n^2``.

    ``w_nr ~ Poisson(1)`` from ``fold_in(key(BOOT_SEED), row_index[n])``: the replicates do not depend on the
    batch size or the device count. For several inputs, a tuple of per-input summaries.
    """
    jac = _jacobian.chunk_jacobians(model, xs, mode=mode, outputs=outputs, precision=precision,
                                    sums_to_one=sums_to_one)
    weights = _stats.poisson_weights(jax.random.key(_stats.BOOT_SEED), row_index)  # [B, n_boot]
    weights = jnp.where(mask[:, None], weights, 0.0)
    if isinstance(xs, tuple):
        return tuple(_input_sums(j, mask, weights) for j in jac)
    return _input_sums(jac, mask, weights)


def _prepare(call: Call) -> Plan:
    check_model(call.model, "partial_derivatives", family="gradient", multi_input=True)
    plan = _jacobian.SPEC.prepare(call)  # mode resolution, softmax head, memory per sample (public spec step)
    static = {k: plan.static[k] for k in ("mode", "outputs", "precision", "sums_to_one")}
    shapes = plan.context["shapes"]
    per_sample = None
    if plan.bytes_per_sample is not None:
        n_k = call.model.n_outputs if call.outputs is None else len(call.outputs)
        n_el = n_k * sum(math.prod(s) for s in shapes)
        per_sample = plan.bytes_per_sample + 4 * (_stats.N_BOOT + 2 * n_el)  # weights, J^2
    return Plan(state=call.model, static=static, bytes_per_sample=per_sample, context={"shapes": shapes})


def _finalize(stats, info, plan: Plan, call: Call):
    model, shapes = call.model, plan.context["shapes"]
    parts = (stats,) if len(shapes) == 1 else tuple(stats)
    ssd, mean, boot = [], [], []
    for part in parts:
        jac = part["jac"]
        n = float(jac.count)
        mu = np.asarray(jac.mean, np.float64)
        mean.append(mu)
        ssd.append(np.asarray(jac.m2, np.float64) + n * mu * mu)  # SSD = N * RMS^2 = m2 + N * mean^2
        boot.append(np.asarray(part["boot"].value, np.float64))  # [n_boot, k, *shape]
    k = ssd[0].shape[0]
    total = sum(s.reshape(k, -1).sum(axis=1) for s in ssd)  # [k]: over every element of every input
    boot_total = sum(b.reshape(b.shape[0], k, -1).sum(axis=2) for b in boot)  # [n_boot, k]
    outs = output_names(model, call.outputs)
    common = {"output_names": outs, "n_samples": info.n_samples, "n_skipped": info.n_skipped, "method": "pad",
              "options": call.record()}
    results = {}
    names_in = model.input_names if len(shapes) > 1 else (None,)
    headers = info.feature_names if len(shapes) > 1 else (info.feature_names,)
    for name, shape, s, mu, b, header in zip(names_in, shapes, ssd, mean, boot, headers):
        lead = (1,) * len(shape)
        share = _share(s, total.reshape(k, *lead))
        reps = _share(b, boot_total.reshape(*boot_total.shape, *lead))  # [n_boot, k, *shape]
        # a replicate that drew no row with a non-zero derivative has no shares: it is left out (NaN), not 0
        empty = (boot_total == 0) & (total[None] > 0)
        reps = np.where(empty.reshape(*empty.shape, *lead), np.nan, reps)
        feature_stderr = None
        if len(shape) > 1:
            feature_stderr = _stats.bootstrap_stderr(reps.sum(axis=tuple(range(2, reps.ndim - 1))))
        if name is None:
            features = header or model.feature_names or tuple(f"x{i}" for i in range(shape[-1]))
        else:
            features = header or tuple(f"{name}[{j}]" for j in range(shape[-1]))
        results[name] = PartialDerivatives(
            importance=share, stderr=_stats.bootstrap_stderr(reps), ssd=s, mean=mu, feature_stderr=feature_stderr,
            feature_names=tuple(features), input_shape=shape, **common,
        )
    return results[None] if len(shapes) == 1 else Results(results)


def _share(values: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``values / total`` (broadcast), 0 where the total is 0 (a model with no derivative at all)."""
    total = np.broadcast_to(total, values.shape)
    return np.divide(values, total, out=np.zeros_like(values), where=total > 0)


SPEC = Method(
    name="pad",
    function_name="partial_derivatives",
    family="gradient",
    summary="Dimopoulos's PaD: each input's share of the summed squared derivatives, per output",
    doc=r"""Dimopoulos's PaD over ``data``: each input element's share of :math:`\sum_n (\partial y_k / \partial x_i)^2`.

    :math:`SSD_{ki} = \sum_n d_{kni}^2` with :math:`d_{kni} = \partial y_k / \partial x_i` at sample :math:`n`,
    and :math:`\mathrm{PaD}_{ki} = SSD_{ki} / \sum_j SSD_{kj}` (Dimopoulos, Bourret & Lek 1995; the papers
    report percentages). The per-sample Jacobians are computed as in :func:`jacobian_importance` (same kernel
    step, same ``mode`` / ``precision``) and folded in one streaming pass: ``SSD = N * RMS^2`` from the merged
    float64 moments of :math:`J`, so ``batch_size`` and the device count do not change the result beyond
    float32 rounding.

    **Shape.** ``importance`` is ``[n_outputs, *input_shape]``: one share per input element (per time step and
    feature for a sequence input ``[T, F]``). The shares are additive, so a feature's share over all its time
    steps is the sum over ``T``: :meth:`PartialDerivatives.ranking` and ``plot`` rank features by it (with its
    exact bootstrap stderr, :meth:`PartialDerivatives.feature_importance`); ``ranking(by="element")`` ranks the
    elements.

    **Standard error.** A streamed Poisson bootstrap (Hanley & MacGibbon 2006): row ``n`` enters replicate
    ``r`` with weight :math:`w_{nr} \sim \mathrm{Poisson}(1)` drawn from ``fold_in(key(BOOT_SEED), n)`` (row
    ``n`` the global row index, so batch size and sharding do not matter); each of the ``N_BOOT`` replicates
    accumulates :math:`\sum_n w_{nr} d_{kni}^2` in the same pass, its shares are formed as above, and
    ``stderr`` is their standard deviation (ddof = 1). It shrinks like :math:`1/\sqrt{N}`.

    **Several inputs.** ``data`` is a tuple (input order) or dict (by input name), row-aligned; the result is a
    :class:`jaxsens.Results` ``{input_name: PartialDerivatives}`` whose shares are of the total over **all**
    inputs, so for each output they sum to 1 across the dict.

    Args (besides the shared ones, see below):
        model: a :class:`jaxsens.Model` with floating-point inputs; integer inputs (token ids) are refused
            (:class:`~jaxsens.ArgumentError`: use :func:`jaxsens.permutation_importance`).
        data: anything :func:`jaxsens.jacobian_importance` reads (array, ``.npy`` streamed from disk, CSV,
            Parquet, batches); for several inputs a tuple or dict of those.
        outputs: explain only these outputs (indices or names); shares are per output.

    Returns:
        :class:`PartialDerivatives` (several inputs: :class:`jaxsens.Results` of them).

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from jaxsens import Model
        >>> m = Model.from_function(lambda p, x: jnp.atleast_1d(p @ x), jnp.array([1.0, -2.0]), input_shape=(2,))
        >>> r = partial_derivatives(m, np.zeros((4, 2)))
        >>> r.importance.tolist()   # derivatives 1 and -2: shares 1/5 and 4/5
        [[0.2, 0.8]]
        >>> bool(r.stderr.max() < 1e-12)   # a linear model: the same shares in every bootstrap replicate
        True
""",
    result=PartialDerivatives,
    options=(_jacobian.SPEC.option("mode"), _jacobian.SPEC.option("precision")),
    prepare=_prepare,
    kernel=_pad_kernel,
    finalize=_finalize,
    multi_input=True,
)

partial_derivatives = SPEC.as_function()
