"""Model formats -> ONNX -> JAX.

* :mod:`converters.onnx_to_jax` turns an ONNX graph, once, into a pure JAX function through a registry of op
  implementations (one function per ONNX op type).
* :mod:`converters.keras` turns Keras models (legacy JSON + weights pairs, ``.h5``, ``.keras``, SavedModel folders,
  in-memory models) into ONNX with tf2onnx. It needs the ``keras`` extra.

The package depends on numpy, onnx and jax only; TensorFlow is imported inside the functions that need it.
"""

from converters.errors import (
    ConversionError,
    JaxsensError,
    ModelFileError,
    UnsafeModelError,
    UnsupportedOpError,
)

__all__ = ["ConversionError", "JaxsensError", "ModelFileError", "UnsafeModelError", "UnsupportedOpError"]
