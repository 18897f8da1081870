"""The method table: one row per method. The public functions, the CLI, the README table test and the shared
invariant tests all read it; adding a method is one module (its ``SPEC``, maths and result class) plus one row here.
"""

from __future__ import annotations

import types

from converters.errors import ArgumentError
from jaxsens import (
    _classic,
    _dgsm,
    _gradient_x_input,
    _hessian,
    _integrated,
    _jacobian,
    _morris,
    _pad,
    _permutation,
    _perturbation,
    _profile,
    _sobol,
    _stepwise,
)
from jaxsens._method import Method


def _table(*specs: Method) -> types.MappingProxyType:
    table = {}
    for spec in specs:
        if spec.name in table:
            raise ArgumentError(f"method name {spec.name!r} is in the table twice")
        spec.as_function()
        table[spec.name] = spec
    return types.MappingProxyType(table)


METHODS = _table(
    _jacobian.SPEC,
    _pad.SPEC,
    _gradient_x_input.SPEC,
    _integrated.SPEC,
    _hessian.SPEC,
    _perturbation.PERTURBATION_SPEC,
    _perturbation.INPUT_PERTURBATION_SPEC,
    _permutation.SPEC,
    _profile.IMPROVED_STEPWISE_SPEC,
    _profile.LEK_SPEC,
    _classic.CONNECTION_WEIGHTS_SPEC,
    _classic.GARSON_SPEC,
    _classic.WEIGHT_SUMS_SPEC,
    _stepwise.SPEC,
    _sobol.SPEC,
    _dgsm.SPEC,
    _morris.SPEC,
)


def methods() -> types.MappingProxyType:
    """The method table: ``{name: Method}`` in a stable order (gradient, perturbation, profile, weights,
    retraining). Each :class:`jaxsens.Method` has ``function`` (the public function), ``function_name``,
    ``family``, ``needs_targets``, ``random``, ``options`` (name, type, default, help) and ``summary``.

    Example:
        >>> import jaxsens
        >>> spec = jaxsens.methods()["jacobian"]
        >>> spec.function is jaxsens.jacobian_importance, spec.family, spec.needs_targets
        (True, 'gradient', False)
    """
    return METHODS


__all__ = [  # noqa: PLE0604 - built from the table: every method's function and result class
    "methods",
    *(s.function_name for s in METHODS.values()),
    *sorted({s.result.__name__ for s in METHODS.values()}),
]
globals().update({s.function_name: s.function for s in METHODS.values()})
globals().update({s.result.__name__: s.result for s in METHODS.values()})
