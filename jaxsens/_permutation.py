r"""``permutation_importance``: the error gained when one feature's values are shuffled across rows (Breiman 2001).

The data stream in consecutive **blocks** of ``block_rows`` rows (read chunk by chunk through the data layer);
within a block, every feature's column is permuted across the block's rows, once per repeat. For one (block,
repeat) the permuted values of every feature are gathered on the host and packed next to each row, so one
compiled kernel (:func:`jaxsens._variants.loss_kernel`) evaluates a row and its ``n_features`` permuted copies
and folds the per-row change of the loss; the per-row sums are merged across chunks and blocks (Chan et al.), so
``batch_size`` and the device count change speed, never results. A data set of at most ``block_rows`` rows is
one block: exactly the classic whole-data-set permutation (and scikit-learn's numbers given its permutations).
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, DataError
from jaxsens import _engine, _stats
from jaxsens._checks import check_model
from jaxsens._data import chunk_dtype, iter_chunks, open_xy
from jaxsens._method import Call, Method, Option
from jaxsens._metrics import METRIC_CHOICES, check_targets, resolve_metric
from jaxsens._results import Result, result_class
from jaxsens._variants import (
    Spec,
    Task,
    host_scores,
    loss_kernel,
    onehot_last,
    pack,
    predict_all,
    reporter,
    row_bytes,
    stderr_of,
)

__all__ = ["SPEC", "PermutationImportance", "permutation_importance", "sklearn_permutations"]

DEFAULT_BLOCK_ROWS = 100_000


def _permuted_variants(x, parts, key, arrays, options):
    values = parts["values"]  # [F, R, *lead]
    n_features = values.shape[0]
    hit = onehot_last(range(n_features), n_features, x.ndim)[:, None]  # [F, 1, 1.., F]
    return jnp.where(hit, values[..., None], x).reshape(-1, *x.shape)


@result_class
class PermutationImportance(Result):
    r"""Increase of an error (decrease of a score) when one feature's values are shuffled across rows.

    ``importance`` is ``[n_features]`` (outputs aggregated: the metric is one error measure over all outputs;
    ``output_names == ()``): the mean over repeats of ``sign * (metric(permuted) - metric(original))``, with
    ``sign = +1`` for losses and ``-1`` for scores, i.e. scikit-learn's ``importances_mean``. For a sequence
    input ``[T, F]`` a feature's whole sequence moves with its row, so ``importance`` is per feature and
    ``input_shape`` is ``(F,)``. ``stderr`` is the standard error over repeats, ``std(importances, ddof=1) /
    sqrt(n_repeats)``; with ``n_repeats=1`` it is the streamed standard error over rows of the per-row change of
    the loss, ``std / sqrt(n_samples)``.

    Attributes (besides those of :class:`jaxsens.Result`):
        importances: ``[n_features, n_repeats]`` per repeat (scikit-learn's ``importances``, same sign).
        importances_std: ``[n_features]`` standard deviation over repeats, ddof = 0 (scikit-learn's).
        baseline: the metric's value on the unpermuted data (e.g. the MSE, or the accuracy).
        metric: the metric's name.
        n_repeats: permutations per feature and block.
        block_rows: rows per permutation block.
        n_blocks: blocks the data was permuted in (1: the classic whole-data-set permutation).

    ``importances_mean`` (scikit-learn's name) is ``importance``. Deprecated: ``baseline_score`` (scikit-learn's
    score, ``-baseline`` for losses) -- use ``baseline``.
    """

    importances: np.ndarray
    importances_std: np.ndarray
    baseline: float
    metric: str
    n_repeats: int = 1
    block_rows: int = DEFAULT_BLOCK_ROWS
    n_blocks: int = 1
    greater_is_better: bool = False

    stderr_rule: ClassVar[str] = "std over repeats (ddof=1) / sqrt(n_repeats); rows when n_repeats=1"

    @property
    def importance_label(self) -> str:
        return f"{self.metric} {'decrease' if self.greater_is_better else 'increase'} when permuted"

    @property
    def importances_mean(self) -> np.ndarray:
        """scikit-learn's name of ``importance`` (mean over repeats)."""
        return self.importance

    @property
    def baseline_score(self) -> float:
        """Deprecated: scikit-learn's score of the unpermuted data (``-baseline`` for losses); use ``baseline``."""
        import warnings

        warnings.warn(
            "PermutationImportance.baseline_score is deprecated; use .baseline (the metric's own value, "
            "e.g. the MSE; baseline_score was -MSE for losses), see CHANGELOG.md",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.baseline if self.greater_is_better else -self.baseline


def sklearn_permutations(n_samples: int, n_features: int, n_repeats: int, random_state) -> np.ndarray:
    """The row orders that ``sklearn.inspection.permutation_importance(random_state=...)`` applies.

    scikit-learn draws one seed ``RandomState(random_state).randint(2**31)`` and, for **every** column,
    restarts a ``RandomState(seed)`` that shuffles an index array in place once per repeat; the column is
    re-indexed by it cumulatively (``col = col[idx]`` after each shuffle), so repeat ``r`` sees the
    composition of the first ``r`` shuffles. Pass the result as ``permutations=`` to reproduce scikit-learn's
    numbers (without ``max_samples``). Checked against scikit-learn 1.9.

    Args:
        n_samples, n_features, n_repeats: as in ``permutation_importance``.
        random_state: an int or a ``numpy.random.RandomState`` (as given to scikit-learn).

    Returns:
        ``[n_features, n_repeats, n_samples]`` int64: repeat ``r`` of feature ``j`` uses ``X[perm[j, r], j]``.
    """
    rs = (
        random_state
        if isinstance(random_state, np.random.RandomState)
        else np.random.RandomState(random_state)
    )
    seed = rs.randint(np.iinfo(np.int32).max + 1)
    shuffler = np.random.RandomState(seed)
    idx, total, out = np.arange(n_samples), np.arange(n_samples), []
    for _ in range(n_repeats):
        shuffler.shuffle(idx)
        total = total[idx]
        out.append(total)
    return np.broadcast_to(np.stack(out), (n_features, n_repeats, n_samples)).copy()


@jax.jit
def _block_permutations(key, block, repeat, features, rows):
    """``[n_features, n_rows]``: permutation ``(j)`` of ``rows`` rows from ``fold_in^3(key, block, j, repeat)``.

    ``rows`` is a ``[n_rows]`` array (its values are unused): its length is static.
    """
    block_key = jax.random.fold_in(key, block)

    def one(j):
        return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(block_key, j), repeat), rows.shape[0])

    return jax.vmap(one)(features)


def _check_permutations(perms, n_samples: int, n_features: int, n_repeats: int | None) -> np.ndarray:
    perms = np.asarray(perms)
    if perms.ndim == 2:
        perms = np.broadcast_to(perms, (n_features, *perms.shape))
    if perms.ndim != 3 or perms.shape[0] != n_features or perms.shape[2] != n_samples:
        raise ArgumentError(
            f"permutations has shape {list(np.shape(perms))}; expected [n_repeats, {n_samples}] (the same "
            f"for every feature) or [{n_features}, n_repeats, {n_samples}]"
        )
    if n_repeats is not None and perms.shape[1] != n_repeats:
        raise ArgumentError(
            f"permutations holds {perms.shape[1]} repeats but n_repeats={n_repeats}; drop n_repeats"
        )
    if not np.issubdtype(perms.dtype, np.integer) or not np.array_equal(
        np.sort(perms.reshape(-1, n_samples), axis=1),
        np.broadcast_to(np.arange(n_samples), (perms[..., 0].size, n_samples)),
    ):
        raise ArgumentError(
            "permutations must hold integer permutations of range(n_samples) along its last axis"
        )
    return perms


def _one_block(fn: str, block_rows: int):
    raise ArgumentError(
        f"{fn}(): permutations= gives row orders of the whole data set, which must then be one block; the data "
        f"has more than block_rows={block_rows} rows: pass block_rows= at least the number of rows"
    )


def _run(call: Call) -> PermutationImportance:
    model, opts, fn = call.model, call.options, "permutation_importance"
    check_model(model, fn, family="perturbation", integer_inputs=True)  # permuted ids are ids
    if call.outputs is not None:
        raise ArgumentError(
            f"{fn}() measures one error over all outputs (the metric against the targets); outputs= does not "
            "apply: leave it None"
        )
    shape = tuple(int(d) for d in model.input_shape)
    n_features = shape[-1]
    block_rows, permutations = opts["block_rows"], opts["permutations"]
    n_repeats = opts["n_repeats"]
    x_src, y_src = open_xy(call.data, call.targets, input_shape=shape, feature_names=model.feature_names,
                           nan_policy=call.nan_policy)
    metric = resolve_metric(opts["metric"], targets_dtype=y_src.dtype, model=model)
    if permutations is not None:
        permutations = np.asarray(permutations)
        if permutations.ndim in (2, 3):
            n_repeats = n_repeats or permutations.shape[-2]
    n_repeats = n_repeats or 5
    if n_repeats == 1 and not metric.per_sample:
        raise ArgumentError(
            f"{fn}(): a whole-data-set metric ({metric.name}) with n_repeats=1 has no standard error; pass "
            "n_repeats >= 2, or a per-sample metric (mse, mae, accuracy, log_loss, Metric(per_sample=True))"
        )
    n_rows = x_src.n_rows if x_src.n_rows is not None else y_src.n_rows
    if permutations is not None and n_rows is not None and n_rows > block_rows:
        _one_block(fn, block_rows)
    block = block_rows if n_rows is None else max(1, min(block_rows, n_rows))  # the same blocks, less padding
    x_dtype = chunk_dtype(_engine.model_inputs(model)[2][0])
    y_dtype = np.int32 if np.dtype(y_src.dtype or np.float32).kind in "iub" else np.float32
    y_shape = tuple(y_src.row_shape or ())
    exact = ("x", "values") if _engine.integer_inputs(model) else ()
    total = None if n_rows is None else n_rows * n_repeats
    report, close = reporter(call.progress, total)
    diffs: list = [None] * n_repeats
    base = None
    scores = np.zeros((n_repeats, n_features))
    n_used = n_skipped = n_blocks = done = 0
    try:
        chunks = iter_chunks((x_src, y_src), batch_size=block, input_shape=(shape, y_shape),
                             nan_policy=call.nan_policy, dtype=(x_dtype, y_dtype))
        for b, chunk in enumerate(chunks):
            xs, ys = (a[chunk.mask] for a in chunk.xs)
            n_skipped += chunk.n_skipped
            m = xs.shape[0]
            if m == 0:
                continue
            if permutations is not None and b > 0:
                _one_block(fn, block_rows)
            perms = None
            if permutations is not None:
                perms = _check_permutations(permutations, m, n_features, opts["n_repeats"])
            y_rows = check_targets(metric, ys, m, model.output_shape, what="targets")
            cols = np.moveaxis(xs, -1, 0)  # [F, m, *lead]
            for r in range(n_repeats):
                if perms is None:
                    order = np.asarray(_block_permutations(call.key, b, r, jnp.arange(n_features),
                                                           jnp.zeros(m, jnp.int8)))
                else:
                    order = perms[:, r]
                if xs.ndim == 2:  # [m, F] gathered in place: values[i, j] = xs[order[j, i], j]
                    values = xs[order.T, np.arange(n_features)][:, :, None]
                else:  # [m, F, 1, *lead]
                    values = np.moveaxis(cols[np.arange(n_features)[:, None], order], 1, 0)[:, :, None]
                packed, layout = pack([("x", xs), ("y", y_rows), ("values", values)], exact=exact)
                del values, order
                task = Task(model, {}, Spec(_permuted_variants, layout=layout, metric=metric))
                inner = None if report is None else (lambda d, _t, o=done: report(o + d))
                if metric.per_sample:
                    stats, _ = _engine.run(loss_kernel, task, packed, batch_size=call.batch_size,
                                           bytes_per_sample=None if call.batch_size else row_bytes(task),
                                           progress=inner, devices=call.devices)
                    diffs[r] = _stats.merge(diffs[r], stats["diff"])
                    if r == 0:
                        base = _stats.merge(base, stats["base"])
                else:
                    s = host_scores(metric, ys, predict_all(task, packed, batch_size=call.batch_size))
                    scores[r] = s[1:] - s[0]
                    base = float(s[0])
                    if report is not None:
                        report(done + m)
                del packed
                done += m
            n_used += m
            n_blocks += 1
    finally:
        close()
    if n_used == 0:
        why = f" ({n_skipped} rows skipped for NaN / Inf)" if n_skipped else ""
        raise DataError(f"data ({x_src.description}) has no usable rows{why}")
    if metric.per_sample:
        changes = np.stack([np.asarray(d.mean, np.float64).reshape(n_features) for d in diffs], axis=1)
        baseline = float(base.mean)
    else:
        changes, baseline = scores.T, base
    importances = metric.sign * changes  # [F, R]
    if n_repeats > 1:
        stderr = importances.std(axis=1, ddof=1) / math.sqrt(n_repeats)
    else:
        stderr = stderr_of(diffs[0]).reshape(n_features)
    names = x_src.feature_names or model.feature_names or tuple(f"x{i}" for i in range(n_features))
    return PermutationImportance(
        importance=importances.mean(axis=1),
        stderr=stderr,
        importances=importances,
        importances_std=importances.std(axis=1),
        baseline=baseline,
        metric=metric.name,
        greater_is_better=bool(metric.greater_is_better),
        n_repeats=int(n_repeats),
        block_rows=int(block_rows),
        n_blocks=int(n_blocks),
        n_samples=int(n_used),
        n_skipped=int(n_skipped),
        feature_names=tuple(names),
        output_names=(),
        input_shape=(n_features,),
        method="permutation",
        options=call.record(),
    )


SPEC = Method(
    name="permutation",
    function_name="permutation_importance",
    family="perturbation",
    summary="error increase when a feature is permuted across rows (equals scikit-learn's given the same "
            "permutations)",
    doc=r"""Permutation importance: the error gained when feature :math:`j`'s column is shuffled across rows.

    .. math:: I_{jr} = \mathrm{sign}\,\big(L(y, f(X^{(j, r)})) - L(y, f(X))\big)

    where :math:`X^{(j,r)}` is :math:`X` with column :math:`j` re-ordered by permutation :math:`r` and
    ``sign`` is ``+1`` for losses (``mse``, ``mae``, ``log_loss``) and ``-1`` for scores (``accuracy``), as
    scikit-learn's ``neg_*`` scorers give it. ``importance`` is the mean over the ``n_repeats`` repeats,
    ``[n_features]`` (outputs aggregated by the metric); ``stderr`` the standard error over repeats,
    ``std(I_j., ddof=1) / sqrt(n_repeats)`` (with ``n_repeats=1``: the standard error over rows of the per-row
    change of the loss). For a sequence input ``[T, F]`` a feature's whole sequence moves with its row.
    Integer inputs (token ids) are allowed: a permutation only moves values that occur in the data, and the
    ids reach the model exactly (int32, never rounded through float32).

    **Blocks, bounded memory.** The data are read in consecutive blocks of ``block_rows`` rows (default
    100,000; rows dropped by ``nan_policy="skip"`` leave their block smaller) and each column is permuted
    within its block: permutation ``(block b, feature j, repeat r)`` is ``jax.random.permutation(fold_in(
    fold_in(fold_in(key, b), j), r), rows_in_block)``. Per-sample metrics are averaged over all rows of all
    blocks (per-row loss changes folded in float64), so the result does not depend on ``batch_size`` or the
    device count. A data set of at most ``block_rows`` rows is one block: the classic whole-data-set
    permutation. Blocks are assigned by row position, so sorted data (by time, by class) gives each block
    only its part of a feature's distribution: shuffle such files, or raise ``block_rows``.

    **scikit-learn.** Given the same permutations the result equals ``sklearn.inspection.
    permutation_importance`` on the same model (up to float32 rounding): pass ``permutations=
    sklearn_permutations(n, n_features, n_repeats, random_state)`` (the data must then be one block).

    **Metric.** ``metric="auto"`` (default) reads the targets' type: integer / bool class labels give
    ``log_loss`` when the model's outputs sum to one (a softmax head, ``model.outputs_sum_to_one``), else
    ``accuracy``; floating-point targets give ``mse``. A :class:`jaxsens.Metric` with ``per_sample=False``
    (a whole-data-set score such as ``r2_score``) or a plain callable ``fn(y_true, y_pred) -> float`` (a loss)
    runs on the host per (feature, repeat) and needs the data in one block.

    Reference: L. Breiman, "Random forests", Machine Learning 45 (2001) 5-32.

    Args (besides the shared ones, see below):
        model: a single-input :class:`jaxsens.Model` (integer inputs allowed).
        data: ``[n_samples, *input_shape]``: an array, a ``.npy`` / ``.npz`` / ``.csv`` / ``.parquet`` path,
            or batches.
        targets: required: ``[n_samples, *output_shape]`` values or ``[n_samples]`` class labels, as an
            array, a file, or the name of a column of the data file (dropped from the features).

    Returns:
        :class:`PermutationImportance`: ``importance`` / ``stderr`` ``[n_features]``, ``importances``
        ``[n_features, n_repeats]``, ``importances_std``, ``baseline`` (the metric on the unpermuted data).

    Example:
        >>> import numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1], {}, input_shape=(2,))
        >>> X = np.random.default_rng(0).normal(size=(500, 2))
        >>> r = permutation_importance(m, X, X[:, :1], key=0)
        >>> [round(float(v)) for v in r.importance]  # E(x - x')^2 = 2 var(x) for x0; x1 is unused
        [2, 0]
""",
    result=PermutationImportance,
    needs_targets=True,
    random=True,
    per_output=False,
    options=(
        Option("metric", str, "auto", "error measure; auto: log_loss / accuracy for class labels, mse for "
               "values", choices=METRIC_CHOICES, objects=True),
        Option("n_repeats", int, None, "permutations per feature (default 5, or as many as permutations= "
               "holds)", minimum=1),
        Option("block_rows", int, DEFAULT_BLOCK_ROWS, "rows per permutation block (memory bound; a data set "
               "with fewer rows is permuted whole)", minimum=2),
        Option("permutations", "any", None, "explicit row orders [n_repeats, n_samples] or [n_features, "
               "n_repeats, n_samples] (e.g. sklearn_permutations(...)); the data must be one block", cli=False),
    ),
    memory="one block of block_rows rows (default 100,000) and its permuted copy of every feature: "
           "2 x block_rows x n_input_elements values, plus the targets; independent of the number of rows",
    run=_run,
    integer_inputs=True,
)

permutation_importance = SPEC.as_function()
