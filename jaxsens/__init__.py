"""jaxsens: sensitivity analysis for neural networks, as pure JAX functions.

A model (Keras, ONNX from PyTorch or scikit-learn, or a JAX function) is converted once into
``Model(apply, params)`` with ``apply(params, x)`` a pure function of one sample; every method is a plain function
``method(model, data, *, options) -> Result`` that streams fixed-size chunks through one compiled kernel.
"""

from jaxsens import examples
from jaxsens._classic import NotDenseError, WeightImportance, connection_weights, garson, weight_sums
from jaxsens._dense import dense_layers, dense_model
from jaxsens._jacobian import jacobian_importance
from jaxsens._model import Model, load_model
from jaxsens._pad import PartialDerivatives, partial_derivatives
from jaxsens._results import JacobianImportance, load_result
from jaxsens._stats import CorrelatedInputsWarning
from jaxsens._stepwise import StepwiseResult, stepwise

__all__ = [
    "CorrelatedInputsWarning",
    "JacobianImportance",
    "Model",
    "NotDenseError",
    "PartialDerivatives",
    "StepwiseResult",
    "WeightImportance",
    "connection_weights",
    "dense_layers",
    "dense_model",
    "examples",
    "garson",
    "jacobian_importance",
    "load_model",
    "load_result",
    "partial_derivatives",
    "stepwise",
    "weight_sums",
]
__version__ = "0.1.0"
