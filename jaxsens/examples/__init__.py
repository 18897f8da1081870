"""The bundled default example: a small seeded network of the seed-000 shape and its data.

``default.onnx`` is an MLP 82 -> 64 -> 64 -> 64 -> 2 (ReLU, softmax), the production model of seed 000 scaled down
(82 inputs, three dense hidden layers, two softmax classes). It was trained on ``default_data.npy`` (1,000 x 82,
float32), whose class depends on five features only (see :data:`TRUE_EFFECTS`), so an importance method can be checked
against a known answer. Both files are rebuilt, bit for bit, by ``python -m jaxsens.examples._build``.
"""

from __future__ import annotations

import os

__all__ = ["default_model_path", "default_data_path", "TRUE_EFFECTS", "N_FEATURES"]

N_FEATURES = 82
# logit(class 1) = 2.0 x[3] - 1.5 x[17] + 1.0 x[41] * x[42] + 0.8 sin(2 x[60]); every other input is noise.
TRUE_EFFECTS = {3: 2.0, 17: -1.5, 41: 1.0, 42: 1.0, 60: 0.8}

_HERE = os.path.dirname(os.path.abspath(__file__))


def default_model_path() -> str:
    """Path of the bundled ONNX model (``jaxsens.load_model`` reads it with the core install)."""
    return os.path.join(_HERE, "default.onnx")


def default_data_path() -> str:
    """Path of the bundled data set, ``[1000, 82]`` float32 ``.npy``."""
    return os.path.join(_HERE, "default_data.npy")
