"""jaxsens: sensitivity analysis for neural networks, as pure JAX functions.

A model (Keras, ONNX from PyTorch or scikit-learn, or a JAX function) is converted once into
``Model(apply, params)`` with ``apply(params, x)`` a pure function of one sample; every method is a plain function
``method(model, data, *, options) -> Result`` that streams fixed-size chunks through one compiled kernel.
"""

from jaxsens import distributed, errors, examples
from jaxsens._checkpoint import checkpointing
from jaxsens._classic import NotDenseError, WeightImportance, connection_weights, garson, weight_sums
from jaxsens._compare import Comparison, compare, load_comparison
from jaxsens._data import DataSpec, open_data, read_targets
from jaxsens._dense import dense_layers, dense_model
from jaxsens._inside import (
    ActivationStats,
    LayerInfo,
    activation_stats,
    activations,
    architecture,
    architecture_frame,
)
from jaxsens._integrated import attributions
from jaxsens._method import DEFAULT_SEED, Method, Option
from jaxsens._methods import *  # noqa: F403 - every method's function and result class, from the table
from jaxsens._methods import __all__ as _method_names
from jaxsens._methods import methods
from jaxsens._metrics import Metric, accuracy, log_loss, mae, mse
from jaxsens._model import Model, load_model
from jaxsens._pad import PartialDerivatives, partial_derivatives
from jaxsens._permutation import PermutationImportance, permutation_importance, sklearn_permutations
from jaxsens._perturbation import (
    InputPerturbation,
    PerturbationImportance,
    input_perturbation,
    perturbation_importance,
)
from jaxsens._profile import ImprovedStepwise, LekProfile, improved_stepwise, lek_profile
from jaxsens._results import Result, Results, load_result
from jaxsens._stats import CorrelatedInputsWarning
from jaxsens._stepwise import StepwiseResult, stepwise
from jaxsens.errors import (
    ArgumentError,
    ArgumentTypeError,
    ConversionError,
    DataError,
    JaxsensError,
    MissingExtraError,
    ModelFileError,
    UnsafeModelError,
    UnsupportedOpError,
)

__all__ = [*_method_names,
    "ActivationStats",
    "Comparison",
    "LayerInfo",
    "activation_stats",
    "activations",
    "architecture",
    "architecture_frame",
    "attributions",
    "checkpointing",
    "compare",
    "load_comparison",
    "DEFAULT_SEED",
    "Method",
    "Option",
    "Result",
    "Results",
    "ArgumentError",
    "ArgumentTypeError",
    "ConversionError",
    "DataError",
    "JaxsensError",
    "MissingExtraError",
    "ModelFileError",
    "UnsafeModelError",
    "UnsupportedOpError",
    "errors",
    "CorrelatedInputsWarning",
    "DataSpec",
    "ImprovedStepwise",
    "InputPerturbation",
    "LekProfile",
    "Metric",
    "Model",
    "NotDenseError",
    "PartialDerivatives",
    "PermutationImportance",
    "PerturbationImportance",
    "StepwiseResult",
    "WeightImportance",
    "accuracy",
    "connection_weights",
    "dense_layers",
    "dense_model",
    "examples",
    "garson",
    "improved_stepwise",
    "input_perturbation",
    "lek_profile",
    "load_model",
    "load_result",
    "log_loss",
    "mae",
    "mse",
    "open_data",
    "partial_derivatives",
    "permutation_importance",
    "perturbation_importance",
    "read_targets",
    "sklearn_permutations",
    "stepwise",
    "weight_sums",
]
__version__ = "0.1.0"

from jaxsens import _cache

_cache.enable_default()  # JAX's persistent compilation cache (JAXSENS_CACHE_DIR=off: JAX left alone)

