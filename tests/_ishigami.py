"""Ishigami's function (a = 7, b = 0.1) on U(-pi, pi)^3 plus a fourth input it ignores: the closed-form test case
of the global methods (tests/test_dgsm.py, tests/test_morris.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import jaxsens

A, B = 7.0, 0.1
PI = np.pi


def ishigami_np(x):
    """f over rows ``x`` ``[n, >= 3]`` in float64 numpy (the oracle)."""
    return np.sin(x[:, 0]) + A * np.sin(x[:, 1]) ** 2 + B * x[:, 2] ** 4 * np.sin(x[:, 0])


def ishigami():
    """Ishigami in x1..x3 plus an input x4 the model ignores, as a jaxsens.Model."""

    def f(p, x):
        return jnp.stack([jnp.sin(x[0]) + A * jnp.sin(x[1]) ** 2 + B * x[2] ** 4 * jnp.sin(x[0])])

    return jaxsens.Model.from_function(f, None, input_shape=(4,))


def problem():
    """SALib's problem dict: four inputs, each U(-pi, pi)."""
    return {"num_vars": 4, "names": ["x1", "x2", "x3", "x4"], "bounds": [[-PI, PI]] * 4}
