"""What the head of a converted graph guarantees about its output, read off the graph once.

:func:`sums_to_one` answers whether the explained output sums to one over its last axis for every input (a
softmax head). Methods use it through ``Model.outputs_sum_to_one``:
the rows of such a model's Jacobian sum to zero, so reverse mode needs one backward pass fewer.
"""

from __future__ import annotations

__all__ = ["sums_to_one"]


def sums_to_one(fn) -> bool:
    """True when ``fn``'s output (through ``Identity`` nodes) is a ``Softmax`` over the last of two axes
    ``[batch, classes]``.

    ``fn`` is an :class:`~converters.onnx_to_jax.graph.OnnxFunction`. The caller checks the per-sample output
    shape (one axis of at least two entries): a softmax over the last axis of a ``[batch, steps, classes]`` output
    sums to one per step, not over the sample's outputs.

    Example:
        >>> import numpy as np
        >>> from converters.onnx_to_jax.graph import OnnxFunction
        >>> from jaxsens._dense import dense_onnx
        >>> layer = [{"W": np.ones((3, 2)), "b": np.zeros(2)}]
        >>> [sums_to_one(OnnxFunction(dense_onnx(layer, output=head))) for head in ("Softmax", "Identity")]
        [True, False]
    """
    producer = {o: node for node in fn.nodes for o in node.outputs if o}
    node = _through_identity(producer, fn.output)
    if node is None:
        return False
    if node.op_type == "Softmax":
        # opset < 13: softmax over the flattened axes from `axis` (default 1) on; of a [batch, k] input that is
        # the last axis. Opset >= 13: over `axis` (default -1).
        return node.attrs.get("axis", -1 if fn.opset >= 13 else 1) in (-1, 1)
    return False


def _through_identity(producer, name):
    node = producer.get(name)
    seen = set()
    while node is not None and node.op_type == "Identity" and node.inputs and node.inputs[0] not in seen:
        seen.add(node.inputs[0])
        node = producer.get(node.inputs[0])
    return node
