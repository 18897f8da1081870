r"""``gradient_x_input``: the input times the gradient, streamed over a data set.

For a model :math:`f: \mathbb{R}^{d} \to \mathbb{R}^{m}`, sample :math:`x` and input element :math:`j`, the
attribution of output :math:`i` to input :math:`j` is

.. math::  a_{ij}(x) = x_j \, \partial f_i(x) / \partial x_j

(Shrikumar, Greenside, Shcherbina & Kundaje 2016, "Not just a black box: learning important features through
propagating activation differences", arXiv:1605.01713; Ancona, Ceolini, Öztireli & Gross 2018, "Towards better
understanding of gradient-based attribution methods for deep neural networks", ICLR). For a linear model it is
exactly the contribution :math:`w_{ij} x_j` of input :math:`j` to output :math:`i`. The importance is the mean
absolute attribution over the data, :math:`\overline{|a_{ij}|}`, with its standard error; the signed mean is kept
as ``mean``. The attribution is measured from the origin (``x = 0``): centre or standardise the inputs when 0 is not
a meaningful reference.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxsens import _engine, _stats
from jaxsens._checks import check_model
from jaxsens._method import Call, Method, Plan, output_names
from jaxsens._results import Result, result_class

__all__ = ["SPEC", "GradientXInput", "gradient_x_input"]


@result_class
class GradientXInput(Result):
    r"""Statistics of :math:`a_{ij}(x) = x_j \, \partial f_i / \partial x_j` over a data set.

    ``importance`` is :math:`\overline{|a|}` ``[n_outputs, *input_shape]`` and ``stderr`` its standard error
    ``std(|a|) / sqrt(n_samples)`` (ddof = 1).

    Attributes (besides those of :class:`jaxsens.Result`):
        mean: :math:`\overline{a}`, the signed mean attribution.
    """

    mean: np.ndarray

    importance_label: ClassVar[str] = "mean |x * dy/dx|"
    stderr_rule: ClassVar[str] = "std(|x * dy/dx|) / sqrt(n_samples)"

    def _extra_columns(self):
        return {"mean": self.mean}


def _per_sample(model, outputs):
    """``x -> [n_selected_outputs, *input_shape]`` attributions of one sample."""

    def f(x):
        y = model.apply(model.params, x).reshape(-1)
        return y if outputs is None else y[jnp.asarray(outputs)]

    return lambda x: jax.jacrev(f)(x) * x[None]


def _rows(model, xs, mask, row_index, *, outputs):
    """The kernel's summaries and the per-row ``|a|`` ``[batch, k, *input_shape]`` (the ``rows`` hook of
    :class:`jaxsens._method.Method`: :func:`jaxsens.compare` pairs versions row by row)."""
    del row_index  # deterministic
    a = jax.vmap(_per_sample(model.with_unroll(0), outputs))(xs)  # [batch, k, *input_shape]
    abs_a = jnp.abs(a)
    return {"abs": _stats.moments_of(abs_a, mask), "signed": _stats.moments_of(a, mask)}, abs_a


@functools.partial(jax.jit, static_argnames=("outputs",))
def _kernel(model, xs, mask, row_index, *, outputs):
    """Per chunk: moments of the attribution and of its absolute value."""
    return _rows(model, xs, mask, row_index, outputs=outputs)[0]


def _prepare(call: Call) -> Plan:
    model = call.model
    (shape,) = check_model(model, "gradient_x_input", family="gradient")
    example = jax.ShapeDtypeStruct(shape, jnp.float32)
    per_sample = _engine.model_bytes_per_sample(
        model, ("gradient_x_input", call.outputs), _per_sample(model, call.outputs), example
    )
    k = model.n_outputs if call.outputs is None else len(call.outputs)
    return Plan(state=model, static={"outputs": call.outputs},
                bytes_per_sample=per_sample + 4 * 4 * k * math.prod(shape), context=shape)


def _finalize(stats, info, plan: Plan, call: Call) -> GradientXInput:
    shape, model = plan.context, call.model
    names = info.feature_names or model.feature_names or tuple(f"x{j}" for j in range(shape[-1]))
    return GradientXInput(
        importance=stats["abs"].mean,
        stderr=_stats.std(stats["abs"]) / math.sqrt(info.n_samples),
        mean=np.asarray(stats["signed"].mean, np.float64),
        n_samples=info.n_samples,
        n_skipped=info.n_skipped,
        feature_names=names,
        output_names=output_names(model, call.outputs),
        input_shape=shape,
        method="gradient-x-input",
        options=call.record(),
    )


SPEC = Method(
    name="gradient-x-input",
    function_name="gradient_x_input",
    family="gradient",
    summary="mean |x * dy/dx| over the data: each input's contribution measured from the origin (Shrikumar 2016)",
    doc=r"""Mean absolute input x gradient, :math:`\overline{|x_j \partial f_i / \partial x_j|}`, over ``data``.

    See the module docstring for the definition and references. One streaming pass; the per-sample gradients are
    ``jax.vmap(jax.jacrev(f))`` in one compiled kernel, merged in float64.

    Returns:
        A :class:`GradientXInput`: ``importance`` ``[n_outputs, *input_shape]``, ``stderr``, ``mean``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda w, x: w @ x, jnp.array([[2.0, -1.0]]), input_shape=(2,))
        >>> r = jaxsens.gradient_x_input(m, np.array([[1.0, 3.0], [-1.0, 1.0]], np.float32))
        >>> r.importance.tolist(), r.mean.tolist()
        ([[2.0, 2.0]], [[0.0, -2.0]])
    """,
    result=GradientXInput,
    prepare=_prepare,
    kernel=_kernel,
    finalize=_finalize,
    rows=_rows,
)

gradient_x_input = SPEC.as_function()
