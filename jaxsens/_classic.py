"""Weight-based importance of a multilayer perceptron: connection weights, Garson's algorithm, weight sums.

These methods read the trained weights only (no data). They are defined for dense stacks (see
:func:`jaxsens._dense.dense_layers`); on any other model they raise an error naming the first node that is not
a dense layer. Olden, Joy & Death (2004) found the connection-weight approach the most accurate of the classic
methods (similarity 0.92 to the true ranking, against 0.28-0.74 for the others); ``bench/olden_study.py``
repeats that study.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from converters.errors import ArgumentError
from jaxsens._dense import DenseLayer, NotDenseError, dense_layers
from jaxsens._results import (
    _finish_figure,
    _output_index,
    _pyplot,
    bar_plot,
    frame,
    ranked,
    register_result,
    save_result,
)

__all__ = ["NotDenseError", "WeightImportance", "connection_weights", "garson", "weight_sums"]


@register_result("weight_importance")
@dataclasses.dataclass(frozen=True, eq=False)
class WeightImportance:
    """Importance of each input computed from a network's weights.

    Attributes:
        method: ``"connection_weights"``, ``"garson"`` or ``"weight_sums"``.
        importance: ``[n_outputs, n_features]`` (``[n_features]`` for ``weight_sums``, which does not look
            past the first layer). Connection weights are signed (the sign is the direction of the effect);
            Garson's values are in ``[0, 1]`` and sum to 1 per output; weight sums are positive.
        feature_names: ``n_features`` names.
        output_names: ``n_outputs`` names (``None`` for ``weight_sums``).
    """

    method: str
    importance: np.ndarray
    feature_names: tuple[str, ...]
    output_names: tuple[str, ...] | None = None

    def scores(self, output: int | str | None = None) -> np.ndarray:
        """``[n_features]`` magnitudes for ranking: ``|importance|`` of one output, or the mean over all."""
        imp = np.abs(np.asarray(self.importance, np.float64))
        if imp.ndim == 1:
            if output is not None:
                raise ArgumentError(f"{self.method} has no per-output values; call it without output=")
            return imp
        if output is None:
            return imp.mean(axis=0)
        return imp[_output_index(output, self.output_names)]

    def ranking(self, output: int | str | None = None) -> tuple[tuple[str, float, float], ...]:
        """Inputs by decreasing magnitude: ``((name, |importance|, nan), ...)`` (ties keep the input order).

        Args:
            output: rank for one output (index or name); by default the mean magnitude over outputs.
        """
        return ranked(self.feature_names, self.scores(output))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists of floats)."""
        return {
            "method": self.method,
            "importance": np.asarray(self.importance, float).tolist(),
            "feature_names": list(self.feature_names),
            "output_names": None if self.output_names is None else list(self.output_names),
            "ranking": [name for name, _, _ in self.ranking()],
        }

    def to_frame(self):
        """Tidy pandas DataFrame: one row per (output, feature), ``importance`` and ``rank`` (1 = largest)."""
        imp = np.atleast_2d(np.asarray(self.importance, np.float64))
        outputs = self.output_names or (self.method,)
        k, n = imp.shape
        order = np.argsort(-np.abs(imp), axis=1, kind="stable")
        rank = np.empty((k, n), np.int64)
        np.put_along_axis(rank, order, np.arange(1, n + 1)[None, :].repeat(k, 0), axis=1)
        return frame(
            {
                "output": np.repeat(np.asarray(outputs, dtype=object), n),
                "feature": np.tile(np.asarray(self.feature_names, dtype=object), k),
                "importance": imp.reshape(-1),
                "rank": rank.reshape(-1),
            }
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON (lossless). Read it back with ``jaxsens.load_result``."""
        save_result(self, path)

    def plot(self, *, output: int | str | None = None, top: int = 20, path: str | os.PathLike | None = None):
        """Ranked bars of ``|importance|`` (mean over outputs unless ``output`` is given); returns the Figure."""
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 1.0 + 0.3 * min(top, len(self.feature_names))))
        label = f"|{self.method}|" + ("" if output is None else f" for {output}")
        bar_plot(ax, self.ranking(output), top=top, xlabel=label)
        return _finish_figure(fig, path)


def _layers64(model, method: str) -> list[DenseLayer]:
    layers = dense_layers(model, method=method)
    return [
        DenseLayer(np.asarray(l.W, np.float64), np.asarray(l.b, np.float64), l.activation, l.attrs)
        for l in layers
    ]


def _feature_names(model, n: int) -> tuple[str, ...]:
    names = tuple(model.feature_names or ())
    return names if len(names) == n else tuple(f"x{i}" for i in range(n))


def _output_names(model, n: int) -> tuple[str, ...]:
    names = tuple(model.output_names or ())
    return names if len(names) == n else tuple(f"y{k}" for k in range(n))


def connection_weights(model) -> WeightImportance:
    """Olden & Jackson's connection-weight importance: the product of the weight matrices, signed, per output.

    For one hidden layer, ``CW[k, i] = sum_j W1[i, j] * W2[j, k]`` (input ``i``, hidden unit ``j``, output
    ``k``); for deeper networks the product ``W1 @ W2 @ ... @ WL`` (as NeuralNetTools' ``olden()``). Biases
    and activations are ignored. A positive value means the input raises the output through the net's weights.

    References:
        Olden, J.D., Jackson, D.A. (2002). Illuminating the "black box": a randomization approach for
        understanding variable contributions in artificial neural networks. Ecological Modelling 154:135-150.
        Olden, J.D., Joy, M.K., Death, R.G. (2004). Ecological Modelling 178:389-397.

    Args:
        model: a dense :class:`~jaxsens.Model` (Keras Dense, PyTorch ``nn.Linear`` stack, scikit-learn MLP, or
            :func:`jaxsens.dense_model`).

    Returns:
        :class:`WeightImportance` with ``importance`` ``[n_outputs, n_features]``.

    Example:
        >>> from jaxsens._dense import dense_model
        >>> m = dense_model([{"W": [[1., -2.], [3., 0.]], "b": [0., 0.]},
        ...                 {"W": [[0.5], [1.0]], "b": [0.]}], ["tanh", "identity"])
        >>> connection_weights(m).importance.tolist()   # x0: 1*0.5 + -2*1, x1: 3*0.5 + 0*1
        [[-1.5, 1.5]]
    """
    layers = _layers64(model, "connection_weights")
    product = layers[0].W
    for layer in layers[1:]:
        product = product @ layer.W
    n_features, n_outputs = product.shape
    return WeightImportance(
        "connection_weights", product.T, _feature_names(model, n_features), _output_names(model, n_outputs)
    )


def garson(model) -> WeightImportance:
    """Garson's algorithm (Garson 1991, as written by Goh 1995 and Olden & Jackson 2002), one hidden layer.

    With input-hidden weights ``w[i, j]`` and hidden-output weights ``v[j, k]``, for each output ``k``::

        P[i, j] = |w[i, j]| * |v[j, k]|          # absolute contribution of input i through hidden unit j
        Q[i, j] = P[i, j] / sum_i P[i, j]        # normalised per hidden unit (0 where all P[:, j] are 0)
        S[i]    = sum_j Q[i, j]
        RI[k, i] = S[i] / sum_i S[i]             # relative importance, sums to 1 per output

    Variant: absolute weights, no signs, biases ignored, normalisation per hidden unit (Goh's appendix). Note
    that ``|v[j, k]|`` cancels in ``Q`` unless it is 0: the hidden-output weights only decide which units
    count. This is the published algorithm; Olden et al. (2004) found it much less accurate than
    :func:`connection_weights`.

    Args:
        model: a dense model with exactly one hidden layer.

    Returns:
        :class:`WeightImportance` with ``importance`` ``[n_outputs, n_features]``, each row summing to 1.

    Raises:
        ValueError: the network has no hidden layer or more than one.

    Example:
        >>> from jaxsens._dense import dense_model
        >>> m = dense_model([{"W": [[1., 2.], [3., 2.]], "b": [0., 0.]},
        ...                 {"W": [[1.], [-1.]], "b": [0.]}], ["tanh", "identity"])
        >>> garson(m).importance.round(4).tolist()   # Q = [[1/4, 2/4], [3/4, 2/4]] -> S = [0.75, 1.25] / 2
        [[0.375, 0.625]]
    """
    layers = _layers64(model, "garson")
    if len(layers) != 2:
        raise ArgumentError(
            f"garson() needs exactly one hidden layer, got {len(layers) - 1}; "
            "use connection_weights() for networks with no or several hidden layers"
        )
    w, v = np.abs(layers[0].W), np.abs(layers[1].W)  # [n_in, n_hid], [n_hid, n_out]
    P = w[:, :, None] * v[None, :, :]  # [n_in, n_hid, n_out]
    totals = P.sum(axis=0, keepdims=True)
    Q = np.divide(P, totals, out=np.zeros_like(P), where=totals > 0)
    S = Q.sum(axis=1)  # [n_in, n_out]
    col = S.sum(axis=0, keepdims=True)
    RI = np.divide(S, col, out=np.zeros_like(S), where=col > 0)
    n_features, n_outputs = RI.shape
    return WeightImportance(
        "garson", RI.T, _feature_names(model, n_features), _output_names(model, n_outputs)
    )


def weight_sums(model) -> WeightImportance:
    """Sum of the absolute weights from each input into the first hidden layer (seed 000's measure).

    ``importance[i] = sum_j |W1[i, j]|``. It ignores every later layer, so it says how strongly an input is
    wired into the network, not how much it changes the output; use it to compare weekly retrains of one
    model, and :func:`connection_weights` or ``jacobian_importance`` to rank inputs.

    Args:
        model: a dense model.

    Returns:
        :class:`WeightImportance` with ``importance`` ``[n_features]`` and ``output_names=None``.

    Example:
        >>> from jaxsens._dense import dense_model
        >>> m = dense_model([{"W": [[1., -2.], [0.5, 0.]], "b": [0., 0.]}], ["relu"])
        >>> weight_sums(m).importance.tolist()
        [3.0, 0.5]
    """
    W = _layers64(model, "weight_sums")[0].W
    imp = np.abs(W).sum(axis=1)
    return WeightImportance("weight_sums", imp, _feature_names(model, imp.shape[0]), None)
