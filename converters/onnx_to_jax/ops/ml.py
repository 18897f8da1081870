"""Ops of the ``ai.onnx.ml`` domain (what skl2onnx emits for scikit-learn pipelines).

Semantics follow the ONNX-ML operator specification (all these ops are at version 1 of the domain). Where the
specification is silent, onnxruntime (the runtime these files are deployed on) decides, and where onnxruntime and the
ONNX reference evaluator disagree, or onnxruntime refuses the node, the node is refused with an
:class:`~converters.errors.UnsupportedOpError` naming the node and the attribute value, instead of guessing:

* ``Scaler``: ``Y = (X - offset) * scale`` in float32; ``offset`` and ``scale`` have one element (every feature) or
  one per feature of an ``[N, F]`` / ``[F]`` tensor. A per-feature vector on a tensor of rank 3 or more is refused
  (onnxruntime cycles it over the flattened elements by ``X.shape[1]``, which is no per-feature scaling).
* ``Normalizer``: per row of ``[N, C]`` (or the whole ``[C]``), ``MAX``: ``X / max(X)`` (the signed maximum, as the
  specification and onnxruntime compute it: scikit-learn's ``norm="max"`` divides by ``max(|X|)``, so its skl2onnx
  export differs from scikit-learn on rows whose largest magnitude is negative); ``L1``: ``X / sum(|X|)``; ``L2``:
  ``X / sqrt(sum(X^2))``; a row whose divisor is 0 is passed through.
* ``Imputer``: elements equal to ``replaced_value_float`` (default 0; ``NaN`` matches ``NaN``) / ``replaced_value_int64``
  become ``imputed_value_floats`` / ``imputed_value_int64s`` (one value, or one per feature of ``[N, F]`` / ``[F]``;
  per-feature values on a tensor of rank 3 or more are refused, as for ``Scaler``: the specification applies them
  along the last axis, onnxruntime does not).
* ``LinearRegressor``: ``Y = X @ W.T + intercepts`` with ``W = coefficients.reshape(targets, F)``, then
  ``post_transform`` over the targets. With one target, onnxruntime ignores ``LOGISTIC`` / ``SOFTMAX`` /
  ``SOFTMAX_ZERO`` (the reference evaluator refuses them): refused.
* ``LinearClassifier``: scores ``X @ W.T + intercepts`` (``W = coefficients.reshape(len(intercepts), F)``, one row
  per class: onnxruntime and ONNX shape inference take the number of classes from ``intercepts``, so it is required),
  then ``post_transform``; outputs ``(label, scores)``. The label (argmax of the raw scores mapped through
  ``classlabels_ints``) is not differentiable; with ``classlabels_strings`` it is not computed (``None``): jaxsens
  explains the float scores, and a graph that reads the string labels is refused downstream. One coefficient row
  with two labels is the binary form ``[sigmoid(-s), sigmoid(s)]`` for ``post_transform="LOGISTIC"``; its other
  post-transforms are refused (onnxruntime returns ``[1 - s, s]`` without the transform for ``NONE`` / ``SOFTMAX``
  / ``SOFTMAX_ZERO`` and misaligned rows for ``PROBIT``; the reference evaluator returns ``[-s, s]``).
  ``multi_class`` does not change the scores (onnxruntime and the reference evaluator ignore it).
* ``ArrayFeatureExtractor``: ``X[..., indices]`` with the indices flattened; a 1-D ``X`` gives ``[1, n_indices]``.
* ``FeatureVectorizer``: every input flattened to ``[N, -1]`` (1-D: ``[1, C]``), cut or zero-padded to its
  ``inputdimensions`` entry, concatenated along axis 1, as float32.
* ``Binarizer``: ``X > threshold`` as ``X``'s type.

Post-transforms (``LinearRegressor`` / ``LinearClassifier``): ``NONE``; ``LOGISTIC`` elementwise ``1 / (1 + e^-s)``;
``SOFTMAX`` over the scores of a row; ``SOFTMAX_ZERO``: like ``SOFTMAX`` but scores with ``|s| <= 1e-7`` give
``s * e^-max`` and are left out of the sum (an all-zero row gives ``NaN``, as in onnxruntime); ``PROBIT``:
onnxruntime's ``sqrt(2) * erfinv(2 s - 1)`` with its closed-form ``erfinv`` approximation (Winitzki, ``a = 0.147``;
the reference evaluator uses the same), ``NaN`` outside ``[0, 1]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import UnsupportedOpError
from converters.onnx_to_jax.registry import register_op
from converters.onnx_to_jax.static import xp_of

ML = "ai.onnx.ml"
POST_TRANSFORMS = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")
NORMS = ("MAX", "L1", "L2")


# ---------------------------------------------------------------- helpers
def _unsupported(ctx, message: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"{ctx.op_type} node {ctx.node_name!r}: {message}")


def _numeric(ctx, x, what: str = "input 0 (X)"):
    """Refuse a non-numeric (string) tensor, which jaxsens cannot represent."""
    kind = np.dtype(x.dtype).kind
    if kind not in "fiub":
        raise _unsupported(
            ctx, f"{what} holds {np.dtype(x.dtype).name} values; jaxsens computes numeric tensors only"
        )
    return x


def _as_float32(ctx, x):
    """``x`` (numeric) as float32, the output type of most ``ai.onnx.ml`` ops."""
    _numeric(ctx, x)
    return x.astype(np.float32) if x.dtype != np.float32 else x


def _floats(ctx, name: str, value) -> np.ndarray:
    if value is None:
        return np.zeros(0, np.float32)
    try:
        return np.asarray(value, np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise ctx.error(f"attribute {name!r} must be a list of floats, got {value!r}") from None


def _choice(ctx, name: str, value, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _unsupported(ctx, f"{name}={value!r} is not supported; ONNX-ML defines {', '.join(allowed)}")
    return value


def _features(ctx, x, what: str) -> int:
    if x.ndim not in (1, 2):
        raise _unsupported(
            ctx, f"input of shape {tuple(x.shape)} has rank {x.ndim}; {what} takes [N, F] or [F]"
        )
    return int(x.shape[-1])


def _erfinv_ort(x):
    """onnxruntime's ``ErfInv`` (ml_common.h): Winitzki's approximation with ``a = 0.147``."""
    sgn = jnp.where(x < 0, -1.0, 1.0).astype(x.dtype)
    w = (1 - x) * (1 + x)
    log = jnp.log(w)
    v = 2 / (np.pi * 0.147) + 0.5 * log
    v2 = 1 / 0.147 * log
    v3 = -v + jnp.sqrt(v * v - v2)
    return sgn * jnp.sqrt(v3)


def _softmax_zero(s):
    """onnxruntime's ``ComputeSoftmaxZero`` over the last axis."""
    m = jnp.max(s, axis=-1, keepdims=True)
    small = jnp.abs(s) <= 1e-7
    e = jnp.exp(jnp.where(small, m, s) - m)  # exp(s - m) where it is used, exp(0) elsewhere (no overflow)
    total = jnp.sum(jnp.where(small, 0.0, e), axis=-1, keepdims=True)
    return jnp.where(small, s * jnp.exp(-m), e) / total


def _post_transform(s, post_transform: str):
    """``post_transform`` of a ``[N, K]`` score matrix (``K >= 2``, or any ``K`` for ``NONE`` / ``PROBIT``)."""
    if post_transform == "LOGISTIC":
        return jax.nn.sigmoid(s)
    if post_transform == "SOFTMAX":
        return jax.nn.softmax(s, axis=-1)
    if post_transform == "SOFTMAX_ZERO":
        return _softmax_zero(s)
    if post_transform == "PROBIT":
        return np.float32(1.41421356) * _erfinv_ort(2 * s - 1)
    return s


def _linear_scores(ctx, x, coefficients, intercepts, n_rows: int | None, what: str):
    """``[N, F] @ W.T + b`` with ``W = coefficients.reshape(n_rows, F)`` (``n_rows`` from the intercepts or the
    coefficient count when ``None``); a 1-D ``x`` is one row."""
    x = _as_float32(ctx, x)
    n_features = _features(ctx, x, what)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    coef = _floats(ctx, "coefficients", coefficients)
    b = _floats(ctx, "intercepts", intercepts)
    if n_rows is None:
        n_rows = len(b) if len(b) else (len(coef) // n_features if n_features else 0)
    if n_rows < 1 or len(coef) != n_rows * n_features:
        raise ctx.error(
            f"has {len(coef)} coefficients, which is not {max(n_rows, 1)} row(s) x {n_features} features of its "
            f"input (corrupt model, or fed the wrong number of features?)"
        )
    if len(b) not in (0, n_rows):
        raise ctx.error(
            f"has {len(b)} intercepts for {n_rows} row(s) of coefficients; ONNX-ML needs 0 or {n_rows}"
        )
    w = coef.reshape(n_rows, n_features)
    xp = xp_of(x)
    s = xp.matmul(x, w.T)
    return s + b if len(b) else s


# ---------------------------------------------------------------- preprocessing
@register_op("Scaler", domain=ML)
def scaler(ctx, x, *, offset=None, scale=None):
    """``(X - offset) * scale`` as float32; ``offset`` / ``scale`` of length 1 or ``F`` (per feature of
    ``[N, F]`` or ``[F]``)."""
    x = _as_float32(ctx, x)
    off, sc = _floats(ctx, "offset", offset), _floats(ctx, "scale", scale)
    if not len(sc) or len(sc) != len(off):
        raise ctx.error(
            f"has {len(off)} offset(s) and {len(sc)} scale(s); ONNX-ML Scaler needs both, of the same length "
            f"(1, or one per feature)"
        )
    if len(sc) > 1:
        if x.ndim > 2:
            raise _unsupported(
                ctx,
                f"per-feature offset / scale ({len(sc)} values) on an input of rank {x.ndim} "
                f"(shape {tuple(x.shape)}) is not defined by ONNX-ML (only [N, F] or [F]); refusing to guess",
            )
        if x.ndim == 0 or x.shape[-1] != len(sc):
            raise ctx.error(
                f"has {len(sc)} offset / scale values for an input with {x.shape[-1] if x.ndim else 1} features"
            )
    return (x - off) * sc


@register_op("Normalizer", domain=ML)
def normalizer(ctx, x, *, norm="MAX"):
    """Each row of ``[N, C]`` (or the whole ``[C]``) divided by its ``MAX`` (signed maximum), ``L1`` or ``L2``
    norm, as float32; a row whose divisor is 0 is passed through."""
    norm = _choice(ctx, "norm", norm, NORMS)
    x = _as_float32(ctx, x)
    _features(ctx, x, "Normalizer")
    xp = xp_of(x)
    if norm == "MAX":
        d = xp.max(x, axis=-1, keepdims=True)
    elif norm == "L1":
        d = xp.sum(xp.abs(x), axis=-1, keepdims=True)
    else:
        d = xp.sum(x * x, axis=-1, keepdims=True)  # squared norm: its square root is taken where it is not 0
    zero = d == 0
    safe = xp.where(zero, np.float32(1), d)
    return xp.where(zero, x, x / (xp.sqrt(safe) if norm == "L2" else safe)).astype(np.float32)


@register_op("Imputer", domain=ML)
def imputer(
    ctx,
    x,
    *,
    imputed_value_floats=None,
    imputed_value_int64s=None,
    replaced_value_float=0.0,
    replaced_value_int64=0,
):
    """Replace the elements equal to the replaced value (``NaN`` matches ``NaN``) by the imputed value of their
    feature (last axis); floats for float inputs, int64s for integer inputs."""
    _numeric(ctx, x)
    floats, ints = list(imputed_value_floats or []), list(imputed_value_int64s or [])
    if bool(floats) == bool(ints):
        raise ctx.error(
            "needs exactly one of imputed_value_floats / imputed_value_int64s, got "
            + ("both" if floats else "neither")
        )
    is_float = np.dtype(x.dtype).kind == "f"
    if is_float != bool(floats):
        given = "imputed_value_floats" if floats else "imputed_value_int64s"
        raise _unsupported(
            ctx, f"{given} on an input of type {np.dtype(x.dtype).name}; ONNX-ML uses the floats for float inputs "
                 f"and the int64s for integer inputs"
        )  # fmt: skip
    values = np.asarray(floats if is_float else ints, np.dtype(x.dtype))
    n = int(x.shape[-1]) if x.ndim else 1
    if len(values) not in (1, n):
        raise ctx.error(f"has {len(values)} imputed values for {n} features; ONNX-ML needs 1 or {n}")
    if len(values) > 1 and x.ndim > 2:
        raise _unsupported(
            ctx,
            f"per-feature imputed values ({len(values)} values) on an input of rank {x.ndim} (shape "
            f"{tuple(x.shape)}): the specification applies them along the last axis, onnxruntime cycles them by "
            f"X.shape[1]; refusing to guess",
        )
    xp = xp_of(x)
    replaced = float(replaced_value_float) if is_float else int(replaced_value_int64)
    if is_float and np.isnan(replaced):
        hit = xp.isnan(x)
    else:
        hit = x == np.asarray(replaced, np.dtype(x.dtype))
    return xp.where(hit, values, x).astype(x.dtype)


@register_op("Binarizer", domain=ML)
def binarizer(ctx, x, *, threshold=0.0):
    """1 where ``X > threshold``, else 0 (``NaN`` gives 0), in ``X``'s type."""
    _numeric(ctx, x)
    return (x > threshold).astype(x.dtype)


@register_op("FeatureVectorizer", domain=ML)
def feature_vectorizer(ctx, *xs, inputdimensions=None):
    """Inputs flattened to ``[N, -1]`` (1-D: ``[1, C]``), each cut or zero-padded to its ``inputdimensions``
    entry, concatenated along axis 1 as float32."""
    dims = [int(d) for d in (inputdimensions or [])]
    if len(dims) != len(xs) or any(d < 0 for d in dims):
        raise ctx.error(
            f"has inputdimensions={dims} for {len(xs)} inputs; ONNX-ML needs one non-negative size per input"
        )
    xp = xp_of(*xs)
    parts, batch = [], None
    for i, (x, d) in enumerate(zip(xs, dims)):
        if x is None:
            raise ctx.error(f"input {i} is empty")
        x = _as_float32(ctx, x)
        x = x.reshape(1, -1) if x.ndim <= 1 else x.reshape(x.shape[0], -1)
        if batch is not None and x.shape[0] != batch:
            raise ctx.error(
                f"input {i} has {x.shape[0]} rows, input 0 has {batch}; all inputs need the same rows"
            )
        batch = x.shape[0]
        if x.shape[1] >= d:
            parts.append(x[:, :d])
        else:
            parts.append(xp.concatenate([x, xp.zeros((batch, d - x.shape[1]), np.float32)], axis=1))
    return xp.concatenate(parts, axis=1)


@register_op("ArrayFeatureExtractor", domain=ML)
def array_feature_extractor(ctx, x, indices):
    """``X[..., indices.ravel()]``; a 1-D ``X`` gives ``[1, n_indices]``. Static indices must lie in
    ``[0, X.shape[-1])``; indices computed from the data (a classifier's argmax) are taken as they are."""
    n = int(x.shape[-1]) if x.ndim else 1
    xp = xp_of(x, indices)
    idx = indices.reshape(-1)
    if isinstance(idx, np.ndarray):
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise ctx.error(f"index {int(bad[0])} is out of range for the last axis of size {n}")
        out = xp.take(x, idx, axis=-1)
    else:
        out = jnp.take(x, idx, axis=-1, mode="fill")
    return out.reshape(1, -1) if x.ndim <= 1 else out


# ---------------------------------------------------------------- linear models
@register_op("LinearRegressor", domain=ML)
def linear_regressor(ctx, x, *, coefficients=None, intercepts=None, targets=1, post_transform="NONE"):
    """``X @ W.T + intercepts`` of shape ``[N, targets]`` (float32), ``W = coefficients.reshape(targets, F)``,
    then ``post_transform`` over the targets."""
    post_transform = _choice(ctx, "post_transform", post_transform, POST_TRANSFORMS)
    targets = int(targets)
    if targets < 1:
        raise ctx.error(f"targets={targets}; ONNX-ML needs at least 1")
    if targets == 1 and post_transform in ("LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"):
        raise _unsupported(
            ctx, f"post_transform={post_transform!r} with a single target: onnxruntime ignores it and the ONNX "
                 f"reference refuses it, so the model's output is ambiguous"
        )  # fmt: skip
    s = _linear_scores(ctx, x, coefficients, intercepts, targets, "LinearRegressor")
    return _post_transform(s, post_transform)


@register_op("LinearClassifier", domain=ML)
def linear_classifier(
    ctx,
    x,
    *,
    coefficients=None,
    intercepts=None,
    classlabels_ints=None,
    classlabels_strings=None,
    multi_class=0,
    post_transform="NONE",
):
    """``(label, scores)``: scores ``X @ W.T + intercepts`` (``W`` one coefficient row per class) after
    ``post_transform``, ``[N, n_classes]`` float32; the label is the class of the largest raw score."""
    post_transform = _choice(ctx, "post_transform", post_transform, POST_TRANSFORMS)
    ints, strings = list(classlabels_ints or []), list(classlabels_strings or [])
    if bool(ints) == bool(strings):
        raise ctx.error(
            "needs exactly one of classlabels_ints / classlabels_strings, got "
            + ("both" if ints else "neither")
        )
    n_labels = len(ints or strings)
    if not intercepts:
        raise ctx.error(
            "has no intercepts; onnxruntime and ONNX shape inference take the number of classes from them "
            "(give zeros for a model without intercepts)"
        )
    s = _linear_scores(ctx, x, coefficients, intercepts, None, "LinearClassifier")
    n_rows = s.shape[1]
    xp = xp_of(s)
    if n_rows == 1:
        if n_labels != 2:
            raise ctx.error(
                f"has one row of coefficients and {n_labels} class labels; the binary form needs 2"
            )
        if post_transform != "LOGISTIC":
            raise _unsupported(
                ctx, f"post_transform={post_transform!r} with one coefficient row (binary form): onnxruntime and "
                     f"the ONNX reference disagree on its scores; only 'LOGISTIC' is defined"
            )  # fmt: skip
        scores = xp.concatenate([-s, s], axis=1)
        winner = (s[:, 0] > 0).astype(np.int32)
    else:
        if n_labels < n_rows:
            raise ctx.error(f"has {n_rows} rows of coefficients but only {n_labels} class labels")
        scores = s
        winner = xp.argmax(s, axis=1)
    scores = _post_transform(scores, post_transform).astype(np.float32)
    label = xp.take(np.asarray(ints, np.int64), winner) if ints else None
    return label, scores
