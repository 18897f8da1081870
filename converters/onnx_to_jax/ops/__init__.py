"""Op implementations; importing this package registers them all.

Op modules import :mod:`converters.onnx_to_jax.registry` (the decorator and the table), the static-value rule
:mod:`converters.onnx_to_jax.static` and helpers of sibling op modules; never the interpreter (:mod:`..graph`).
The registry imports no op module, so there is no import cycle: this package fills the table, the registry holds it.
"""

from converters.onnx_to_jax.ops import control, elementwise, ml, nn, rnn, tensor  # noqa: F401
