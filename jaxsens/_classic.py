"""Weight-based importance of a multilayer perceptron: connection weights, Garson's algorithm, weight sums.

These methods read the trained weights only (no data). They are defined for dense stacks (see
:func:`jaxsens._dense.dense_layers`); on any other model they raise an error naming the first node that is not
a dense layer. Olden, Joy & Death (2004) found the connection-weight approach the most accurate of the classic
methods (similarity 0.92 to the true ranking, against 0.28-0.74 for the others); ``bench/olden_study.py``
repeats that study.

All three follow the one calling convention (``method(model, data=None, targets=None, *, ...)``): ``data`` is
accepted and ignored (so every method can be called the same way), ``targets`` are refused. The value is exact
given the weights, so ``stderr`` is exactly 0 and ``n_samples`` is 0.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from converters.errors import ArgumentError
from jaxsens._checks import check_model
from jaxsens._dense import DenseLayer, NotDenseError
from jaxsens._method import Call, Method, output_names
from jaxsens._results import Result, result_class

__all__ = [
    "CONNECTION_WEIGHTS_SPEC",
    "GARSON_SPEC",
    "WEIGHT_SUMS_SPEC",
    "NotDenseError",
    "WeightImportance",
    "connection_weights",
    "garson",
    "weight_sums",
]

_LABELS = {
    "connection-weights": "|connection weight| (Olden: sum of weight products; importance keeps the sign)",
    "garson": "Garson's relative importance (share per output)",
    "weight-sums": "sum of |W| into the first hidden layer",
}


@result_class
class WeightImportance(Result):
    """Importance of each input computed from a network's weights (no data).

    ``importance`` is ``[n_outputs, n_features]`` for ``connection_weights`` and ``garson``, ``[n_features]``
    for ``weight_sums`` (which does not look past the first layer: ``output_names == ()``).
    Connection weights are **signed**, as Olden & Jackson publish them (the sign is the direction of the effect
    through the weights); Garson's values are in ``[0, 1]`` and sum to 1 per output; weight sums are
    non-negative. Rankings (:meth:`ranking`, :meth:`plot`, the ``rank`` column of :meth:`to_frame`) order inputs
    by the magnitude ``|importance|``, so a strongly negative connection weight ranks high. ``stderr`` is exactly
    0: the value is a function of the weights alone, with no sampling.
    """

    stderr_rule: ClassVar[str] = "exactly 0 (computed from the weights alone: no sampling)"

    @property
    def importance_label(self) -> str:
        return _LABELS.get(self.method, "importance")

    def feature_importance(self) -> tuple[np.ndarray, np.ndarray]:
        """``(|importance|, stderr)``: inputs rank by magnitude (the sign of a connection weight is a direction)."""
        return np.abs(self.importance), self.stderr

    def ranking(self, output: int | str | None = None, *, by: str = "feature") -> tuple[tuple[str, float, float], ...]:
        """Inputs by decreasing ``|importance|``: ``((name, |importance|, 0.0), ...)`` (ties keep input order).

        Args:
            output: one output (index or name); default the mean magnitude over outputs. Not allowed for
                ``weight_sums``, which has no per-output values.
            by: ``"feature"`` or ``"element"`` (the same for the 1-D inputs of a dense stack).
        """
        return super().ranking(output, by="feature" if by == "element" else by)

    def to_frame(self):
        """The base's tidy table (signed ``importance``), with ``rank`` by ``|importance|`` within each output."""
        f = super().to_frame()
        k = max(self.n_outputs, 1)
        mag = np.abs(self.importance).reshape(k, -1)
        order = np.argsort(-mag, axis=1, kind="stable")
        rank = np.empty(mag.shape, np.int64)
        np.put_along_axis(rank, order, np.arange(1, mag.shape[1] + 1)[None, :].repeat(k, 0), axis=1)
        f["rank"] = rank.reshape(-1)
        return f

    def scores(self, output: int | str | None = None) -> np.ndarray:
        """Deprecated: ``[n_features]`` magnitudes; use ``ranking(output)`` (or ``np.abs(importance)``)."""
        warnings.warn("WeightImportance.scores() is deprecated; use ranking(output) or np.abs(importance) "
                      "(see CHANGELOG.md)", DeprecationWarning, stacklevel=2)
        imp, _ = self._pick(*self.feature_importance(), output)
        return imp

    def to_dict(self) -> dict[str, Any]:
        """Deprecated: a JSON-ready dict; use ``save(path)`` / ``to_frame()``."""
        warnings.warn("WeightImportance.to_dict() is deprecated; use save(path) or to_frame() (see CHANGELOG.md)",
                      DeprecationWarning, stacklevel=2)
        return {
            "method": self.method,
            "importance": self.importance.tolist(),
            "feature_names": list(self.feature_names),
            "output_names": list(self.output_names) or None,
            "ranking": [name for name, _, _ in self.ranking()],
        }


def _layers64(call: Call) -> list[DenseLayer]:
    fn = call.method.function_name
    check_model(call.model, fn, family="weights", integer_inputs=True)  # one input with a feature axis
    layers = call.model.dense_layers(method=fn)
    if callable(call.progress):
        call.progress(0, 0)  # no rows to read: the weights are the whole input
    return [
        DenseLayer(np.asarray(l.W, np.float64), np.asarray(l.b, np.float64), l.activation, l.attrs)
        for l in layers
    ]


def _feature_names(model, n: int) -> tuple[str, ...]:
    names = tuple(model.feature_names or ())
    return names if len(names) == n else tuple(f"x{i}" for i in range(n))


def _per_output(call: Call, values: np.ndarray) -> WeightImportance:
    """A result from ``values`` ``[n_features, n_outputs]``, restricted to ``call.outputs``."""
    model = call.model
    n_features, n_outputs = values.shape
    if n_outputs != model.n_outputs:  # cannot happen for a stack read off the model; refuse rather than mislabel
        raise NotDenseError(
            f"{call.method.function_name}(): the dense layers end in {n_outputs} units but the model has "
            f"{model.n_outputs} outputs"
        )
    imp = values.T if call.outputs is None else values.T[np.asarray(call.outputs)]
    return WeightImportance(
        importance=imp,
        stderr=np.zeros_like(imp),
        n_samples=0,
        feature_names=_feature_names(model, n_features),
        output_names=output_names(model, call.outputs),
        input_shape=(n_features,),
        method=call.method.name,
        options=call.record(),
    )


def _connection_weights(call: Call) -> WeightImportance:
    layers = _layers64(call)
    product = layers[0].W
    for layer in layers[1:]:
        product = product @ layer.W
    return _per_output(call, product)


def _garson(call: Call) -> WeightImportance:
    layers = _layers64(call)
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
    return _per_output(call, RI)


def _weight_sums(call: Call) -> WeightImportance:
    if call.outputs is not None:
        raise ArgumentError(
            f"weight_sums() reads only the weights into the first hidden layer, so it has no per-output values; "
            f"got outputs={list(call.outputs)}: leave outputs=None, or use connection_weights() for per-output values"
        )
    W = _layers64(call)[0].W
    imp = np.abs(W).sum(axis=1)
    return WeightImportance(
        importance=imp,
        stderr=np.zeros_like(imp),
        n_samples=0,
        feature_names=_feature_names(call.model, imp.shape[0]),
        output_names=(),
        input_shape=(imp.shape[0],),
        method=call.method.name,
        options=call.record(),
    )


_MEMORY = "reads the weights only (no data): memory of the weight matrices"
_CONVENTION = """
    ``data`` is accepted and ignored (the weights are the whole input), so the method can be called as
    ``{fn}(model)`` or ``{fn}(model, data)`` like every other method; ``targets`` are refused. ``key``,
    ``batch_size``, ``nan_policy`` and ``devices`` have no effect; a callable ``progress`` is called once with
    ``(0, 0)`` (no rows). ``stderr`` is exactly 0 and ``n_samples`` is 0: the value is exact given the weights.

    Raises:
        NotDenseError: the model is not a dense stack (the message names the first node that is not part of one:
            an ``LSTM``, a ``Conv``, a residual fork...) or its layers cannot be seen (a plain JAX function: build
            it with :func:`jaxsens.dense_model`).
        ArgumentError: targets given; a model with several inputs{extra}."""

CONNECTION_WEIGHTS_SPEC = Method(
    name="connection-weights",
    function_name="connection_weights",
    family="weights",
    summary="Olden & Jackson's connection weights: product of the weight matrices, signed, per output",
    doc=r"""Olden & Jackson's connection-weight importance: the product of the weight matrices, signed, per output.

    For one hidden layer, ``CW[k, i] = sum_j W1[i, j] * W2[j, k]`` (input ``i``, hidden unit ``j``, output
    ``k``); for deeper networks the product ``W1 @ W2 @ ... @ WL`` (as NeuralNetTools' ``olden()``). Biases
    and activations are ignored. ``importance`` is the **signed** sum, as published: a positive value means the
    input raises the output through the net's weights; rankings use ``|CW|``. Computed in float64 from the
    float32 weights.

    References:
        Olden, J.D., Jackson, D.A. (2002). Illuminating the "black box": a randomization approach for
        understanding variable contributions in artificial neural networks. Ecological Modelling 154:135-150.
        Olden, J.D., Joy, M.K., Death, R.G. (2004). Ecological Modelling 178:389-397.

    Args:
        model: a dense :class:`~jaxsens.Model` (Keras Dense, PyTorch ``nn.Linear`` stack, scikit-learn MLP, or
            :func:`jaxsens.dense_model`).
        outputs: explain only these outputs (indices or names): rows of the product.

    Returns:
        :class:`WeightImportance` with ``importance`` ``[n_outputs, n_features]`` (signed), ``stderr`` zeros.
""" + _CONVENTION.format(fn="connection_weights", extra="") + """

    Example:
        >>> from jaxsens._dense import dense_model
        >>> m = dense_model([{"W": [[1., -2.], [3., 0.]], "b": [0., 0.]},
        ...                 {"W": [[0.5], [1.0]], "b": [0.]}], ["tanh", "identity"])
        >>> connection_weights(m).importance.tolist()   # x0: 1*0.5 + -2*1, x1: 3*0.5 + 0*1
        [[-1.5, 1.5]]
""",
    result=WeightImportance,
    needs_data=False,
    memory=_MEMORY,
    exact_zero=False,  # exact 0 for an input with no non-zero weight path, not for any input the model ignores
    run=_connection_weights,
)

GARSON_SPEC = Method(
    name="garson",
    function_name="garson",
    family="weights",
    summary="Garson's algorithm: each input's share of the absolute weight products (one hidden layer)",
    doc=r"""Garson's algorithm (Garson 1991, as written by Goh 1995 and Olden & Jackson 2002), one hidden layer.

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
        outputs: explain only these outputs (indices or names); each output's shares are computed alone.

    Returns:
        :class:`WeightImportance` with ``importance`` ``[n_outputs, n_features]``, each row summing to 1
        (the relative share), ``stderr`` zeros.
""" + _CONVENTION.format(fn="garson", extra="; a network with no hidden layer or more than one") + """

    Example:
        >>> from jaxsens._dense import dense_model
        >>> m = dense_model([{"W": [[1., 2.], [3., 2.]], "b": [0., 0.]},
        ...                 {"W": [[1.], [-1.]], "b": [0.]}], ["tanh", "identity"])
        >>> garson(m).importance.round(4).tolist()   # Q = [[1/4, 2/4], [3/4, 2/4]] -> S = [0.75, 1.25] / 2
        [[0.375, 0.625]]
""",
    result=WeightImportance,
    needs_data=False,
    memory=_MEMORY,
    exact_zero=False,
    run=_garson,
)

WEIGHT_SUMS_SPEC = Method(
    name="weight-sums",
    function_name="weight_sums",
    family="weights",
    summary="sum of |W| from each input into the first hidden layer (seed 000's measure)",
    doc=r"""Sum of the absolute weights from each input into the first hidden layer (seed 000's measure).

    ``importance[i] = sum_j |W1[i, j]|``. It ignores every later layer, so it says how strongly an input is
    wired into the network, not how much it changes the output; use it to compare weekly retrains of one
    model, and :func:`connection_weights` or :func:`jacobian_importance` to rank inputs.

    Args:
        model: a dense model.

    Returns:
        :class:`WeightImportance` with ``importance`` ``[n_features]`` and ``output_names == ()`` (no
        per-output values: ``outputs=`` is refused), ``stderr`` zeros.
""" + _CONVENTION.format(fn="weight_sums", extra="; outputs= given") + """

    Example:
        >>> from jaxsens._dense import dense_model
        >>> m = dense_model([{"W": [[1., -2.], [0.5, 0.]], "b": [0., 0.]}], ["relu"])
        >>> weight_sums(m).importance.tolist()
        [3.0, 0.5]
""",
    result=WeightImportance,
    needs_data=False,
    memory=_MEMORY,
    exact_zero=False,
    per_output=False,
    run=_weight_sums,
)

connection_weights = CONNECTION_WEIGHTS_SPEC.as_function()
garson = GARSON_SPEC.as_function()
weight_sums = WEIGHT_SUMS_SPEC.as_function()
