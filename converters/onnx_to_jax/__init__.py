"""ONNX -> JAX: a registry of op implementations and a graph interpreter (see :mod:`.graph`, :mod:`.registry`).

Importing this package imports the op modules (:mod:`.ops`), which fill the registry; :mod:`.registry` itself
imports no op module.
"""

from converters.onnx_to_jax import ops as _ops  # noqa: F401 - fills the op registry
from converters.onnx_to_jax.graph import OnnxFunction, load_onnx_proto
from converters.onnx_to_jax.registry import OpContext, get_op, register_op, supported_ops

__all__ = ["OnnxFunction", "OpContext", "get_op", "load_onnx_proto", "register_op", "supported_ops"]
