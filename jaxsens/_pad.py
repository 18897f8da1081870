r"""Dimopoulos's PaD: partial derivatives, as each input's share of the summed squared derivatives.

Dimopoulos, Bourret & Lek (1995), "Use of some sensitivity criteria for choosing networks with good
generalization ability", Neural Processing Letters 2(6); Dimopoulos, Chronopoulos, Chronopoulou-Sereli & Lek (1999),
Ecological Modelling 120; as compared in Gevrey, Dimopoulos & Lek (2003) and Olden, Joy & Death (2004).

For output :math:`k`, input :math:`i` and samples :math:`n = 1..N` with :math:`d_{kni} = \partial y_k /
\partial x_i` at sample :math:`n`:

.. math::  SSD_{ki} = \sum_n d_{kni}^2, \qquad \mathrm{PaD}_{ki} = SSD_{ki} / \sum_j SSD_{kj}

(the papers report :math:`100\,\mathrm{PaD}` in percent). For sequence inputs ``[T, F]`` a feature's SSD sums over
its time steps. Built on :func:`jaxsens.jacobian_importance`: :math:`SSD = N \cdot \mathrm{RMS}^2`, accumulated in the
same single streaming pass, so it scales to any number of rows.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxsens._checks import check_model
from jaxsens._jacobian import JacobianImportance, jacobian_importance
from jaxsens._model import Model
from jaxsens._results import (
    frame,
    output_index,
    ranked,
    ranking_figure,
    register_result,
    save_result,
)

__all__ = ["PartialDerivatives", "partial_derivatives"]


@register_result("partial_derivatives")
@dataclasses.dataclass(frozen=True, eq=False)
class PartialDerivatives:
    """PaD result.

    Attributes:
        importance: ``[n_outputs, n_features]`` share of the summed squared derivatives (each row sums to 1).
        ssd: ``[n_outputs, n_features]`` summed squared derivatives :math:`SSD_{ki}`.
        mean: ``[n_outputs, n_features]`` mean derivative (its sign is the direction; ``[T, F]`` inputs: summed
            over time).
        n_samples, feature_names, output_names: as for the Jacobian.
    """

    importance: np.ndarray
    ssd: np.ndarray
    mean: np.ndarray
    n_samples: int
    feature_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def ranking(self, output: int | str | None = None) -> tuple[tuple[str, float, float], ...]:
        """Inputs by decreasing share: ``((name, share, nan), ...)``; default the mean share over outputs."""
        scores = self.importance.mean(axis=0) if output is None else self.importance[output_index(output, self.output_names)]
        return ranked(self.feature_names, scores)

    def to_frame(self):
        """Tidy pandas frame: ``output``, ``feature``, ``share``, ``ssd``, ``mean``."""
        k, f = self.importance.shape
        return frame({
            "output": np.repeat(np.asarray(self.output_names, dtype=object), f),
            "feature": np.tile(np.asarray(self.feature_names, dtype=object), k),
            "share": self.importance.reshape(-1),
            "ssd": self.ssd.reshape(-1),
            "mean": self.mean.reshape(-1),
        })

    def save(self, path: str | os.PathLike) -> None:
        """JSON (lossless, atomic); read back with :func:`jaxsens.load_result`."""
        save_result(self, path)

    def plot(self, *, output: int | str | None = None, top: int = 20, path: str | os.PathLike | None = None):
        """Ranked bars of the PaD shares."""
        return ranking_figure(
            self.ranking(output), top=top, xlabel="PaD: share of summed squared derivatives", path=path
        )


def pad_from_jacobian(
    jac: JacobianImportance | dict[str, JacobianImportance],
) -> PartialDerivatives | dict[str, PartialDerivatives]:
    """PaD from a Jacobian result (no second pass over the data).

    For a dict of per-input results (a model with several inputs) the shares are of the total over **all**
    inputs' features, so the importance rows of all the returned results together sum to 1 for each output.
    """
    if isinstance(jac, dict):
        parts = {name: _ssd(j) for name, j in jac.items()}
        total = sum(ssd.sum(axis=1, keepdims=True) for ssd, _ in parts.values())
        return {name: _pad(jac[name], ssd, mean, total) for name, (ssd, mean) in parts.items()}
    ssd, mean = _ssd(jac)
    return _pad(jac, ssd, mean, ssd.sum(axis=1, keepdims=True))


def _ssd(jac: JacobianImportance) -> tuple[np.ndarray, np.ndarray]:
    """``(SSD [n_outputs, n_features], mean derivative [n_outputs, n_features])`` of one input."""
    k = jac.n_outputs
    n_features = jac.input_shape[-1]
    sq = (jac.rms.astype(np.float64) ** 2 * jac.n_samples).reshape(k, -1, n_features)
    return sq.sum(axis=1), jac.by_feature().mean.reshape(k, n_features)


def _pad(jac: JacobianImportance, ssd: np.ndarray, mean: np.ndarray, total: np.ndarray) -> PartialDerivatives:
    share = np.divide(ssd, total, out=np.zeros_like(ssd), where=total > 0)
    return PartialDerivatives(share, ssd, mean, jac.n_samples, tuple(jac.feature_names), tuple(jac.output_names))


def partial_derivatives(model: Model, data, *, batch_size: int | None = None, outputs=None, progress=None,
                        nan_policy: str = "raise") -> PartialDerivatives | dict[str, PartialDerivatives]:
    """Dimopoulos's PaD over ``data``: each input's share of :math:`\\sum_n (\\partial y_k / \\partial x_i)^2`.

    Args:
        model: a :class:`jaxsens.Model` with floating-point inputs; integer inputs (token ids) are refused
            (:class:`~jaxsens.ArgumentError`: use :func:`jaxsens.permutation_importance`).
        data: anything :func:`jaxsens.jacobian_importance` reads (array, ``.npy`` streamed from disk, CSV, ...);
            for a model with several inputs a tuple (input order) or dict (by input name) of those, row-aligned.
        batch_size, outputs, progress, nan_policy: as for :func:`jaxsens.jacobian_importance`.

    Returns:
        :class:`PartialDerivatives` with ``importance`` ``[n_outputs, n_features]`` (rows sum to 1). For several
        inputs, a dict ``{input_name: PartialDerivatives}`` in input order, input ``i``'s ``importance``
        ``[n_outputs, n_features_i]`` (features on its last axis, summed over its other axes): shares of the
        total over all inputs, so the rows sum to 1 across the dict.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> m = Model.from_function(lambda p, x: jnp.atleast_1d(p @ x), jnp.array([1.0, -2.0]), input_shape=(2,))
        >>> np.round(partial_derivatives(m, np.zeros((4, 2))).importance, 3)
        array([[0.2, 0.8]])
    """
    check_model(model, "partial_derivatives", family="gradient", multi_input=True)
    jac = jacobian_importance(model, data, batch_size=batch_size, outputs=outputs, progress=progress,
                              nan_policy=nan_policy)
    return pad_from_jacobian(jac)
