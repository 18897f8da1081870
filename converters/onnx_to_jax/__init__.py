"""ONNX -> JAX: a registry of op implementations and a graph interpreter (see :mod:`.graph`, :mod:`.registry`)."""

from converters.onnx_to_jax.graph import OnnxFunction, load_onnx_proto
from converters.onnx_to_jax.registry import OpContext, get_op, register_op, supported_ops

__all__ = ["OnnxFunction", "OpContext", "get_op", "load_onnx_proto", "register_op", "supported_ops"]
