"""Op implementations; importing this package registers them all."""

from converters.onnx_to_jax.ops import control, elementwise, nn, rnn, tensor  # noqa: F401
