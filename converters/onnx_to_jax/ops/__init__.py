"""Op implementations; importing this package registers them all."""

from converters.onnx_to_jax.ops import control, elementwise, ml, nn, rnn, tensor  # noqa: F401
