"""Permutation importance (Breiman 2001) as scikit-learn computes it, every feature x repeat in one kernel.

The permuted column values of every (feature, repeat) are gathered on the host and packed next to each row, so
one compiled kernel evaluates a row and all its ``n_features * n_repeats`` permuted copies and folds the
per-row change of the loss. Memory: the packed array holds ``n_samples * n_features *
n_repeats`` values (times the time steps of a sequence input).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError
from jaxsens._engine import integer_inputs
from jaxsens._metrics import Metric, check_targets, get_metric
from jaxsens._results import (
    ranked,
    ranking_figure,
    register_result,
    save_result,
)
from jaxsens._variants import (
    Spec,
    Task,
    check_model,
    check_rows,
    host_scores,
    onehot_last,
    pack,
    predict_all,
    rows_frame,
    run_loss,
)

__all__ = ["PermutationImportance", "permutation_importance", "sklearn_permutations"]


def _permuted_variants(x, parts, key, arrays, options):
    values = parts["values"]  # [F, R, *lead]
    n_features, n_repeats = values.shape[:2]
    hit = onehot_last(range(n_features), n_features, x.ndim)[:, None]  # [F, 1, 1.., F]
    return jnp.where(hit, values[..., None], x).reshape(-1, *x.shape)


@register_result("permutation_importance")
@dataclasses.dataclass(frozen=True, eq=False)
class PermutationImportance:
    """Decrease of a score (increase of a loss) when one feature's values are shuffled across rows.

    The fields ``importances_mean``, ``importances_std`` and ``importances`` are those of
    ``sklearn.inspection.permutation_importance`` and have the same meaning and signs.

    Attributes:
        importances_mean: ``[n_features]`` mean over repeats.
        importances_std: ``[n_features]`` standard deviation over repeats (ddof = 0, as scikit-learn).
        importances: ``[n_features, n_repeats]`` ``score(original) - score(permuted)``, with ``score = -loss``
            for losses (scikit-learn's ``neg_mean_squared_error`` convention) and ``score = accuracy``.
        baseline_score: the score of the unpermuted data (``-loss`` for a loss, e.g. ``-mse``).
        metric: metric name.
        n_samples: rows used.
        feature_names: ``n_features`` names.
    """

    importances_mean: np.ndarray
    importances_std: np.ndarray
    importances: np.ndarray
    baseline_score: float
    metric: str
    n_samples: int
    feature_names: tuple[str, ...]

    @property
    def importance(self) -> np.ndarray:
        """``importances_mean``."""
        return self.importances_mean

    def ranking(self) -> tuple[tuple[str, float, float], ...]:
        """``((feature, importances_mean, importances_std / sqrt(n_repeats)), ...)``, largest first."""
        n_rep = max(self.importances.shape[1], 1)
        return ranked(self.feature_names, self.importances_mean, self.importances_std / np.sqrt(n_rep))

    def to_frame(self):
        """One row per feature: ``importances_mean``, ``importances_std``, ``rank``."""
        cols = {"importances_mean": self.importances_mean, "importances_std": self.importances_std}
        return rows_frame(self.feature_names, cols, self.importances_mean)

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON (lossless); read it back with :func:`jaxsens.load_result`."""
        save_result(self, path)

    def plot(self, *, top: int = 20, path: str | os.PathLike | None = None):
        """Ranked bars of ``importances_mean`` with standard-error bars; returns the matplotlib ``Figure``."""
        return ranking_figure(
            self.ranking(), top=top, xlabel=f"permutation importance ({self.metric})", path=path
        )


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


def _key_permutations(key, n_samples: int, n_features: int, n_repeats: int) -> np.ndarray:
    """``[n_features, n_repeats, n_samples]``: permutation ``(j, r)`` from ``fold_in(fold_in(key, j), r)``."""

    def one(j, r):
        return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, j), r), n_samples)

    js, rs = jnp.meshgrid(jnp.arange(n_features), jnp.arange(n_repeats), indexing="ij")
    return np.asarray(jax.vmap(jax.vmap(one))(js, rs))


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


def permutation_importance(
    model,
    X,
    y,
    *,
    metric: str | Metric | Callable = "mse",
    n_repeats: int | None = None,
    key=None,
    permutations=None,
    batch_size: int | None = None,
    progress=None,
) -> PermutationImportance:
    r"""Permutation importance: the score lost when feature :math:`j`'s column is shuffled across rows.

    .. math:: I_{jr} = s(y, f(X)) - s(y, f(X^{(j, r)}))

    where :math:`X^{(j,r)}` is :math:`X` with column :math:`j` re-ordered by permutation :math:`r`, and
    :math:`s = -\mathrm{loss}` for losses (``mse``, ``mae``, ``log_loss``: scikit-learn's ``neg_*`` scorers)
    or :math:`s = \mathrm{accuracy}`. For a sequence input ``[T, F]`` a feature's whole sequence moves with
    its row. Integer inputs (token ids) are allowed: a permutation only moves values that occur in the data,
    and the ids reach the model exactly (as int32, never rounded through float32). Every (feature, repeat) pair is evaluated in one kernel, streaming rows; for per-sample metrics
    the kernel accumulates the per-row change of the loss, which equals the change of the mean.

    Given the same permutations the result equals ``sklearn.inspection.permutation_importance`` on the same
    model (up to float32 rounding): pass ``permutations=sklearn_permutations(n, n_features, n_repeats,
    random_state)``. With ``key`` instead, permutation :math:`(j, r)` is
    ``jax.random.permutation(fold_in(fold_in(key, j), r), n)``.

    Reference: L. Breiman, "Random forests", Machine Learning 45 (2001) 5-32.

    Args:
        model: a single-input :class:`jaxsens.Model`.
        X: ``[n_samples, *input_shape]``.
        y: targets (see :mod:`jaxsens._metrics`): ``[n_samples, *output_shape]`` or class labels
            ``[n_samples]``.
        metric: ``"mse"`` (default), ``"mae"``, ``"accuracy"``, ``"log_loss"``, a :class:`Metric`, or a
            callable loss ``fn(y_true, y_pred) -> float`` on the whole data set (``Metric(...,
            greater_is_better=True)`` for a score such as ``r2_score``).
        n_repeats: permutations per feature (default 5, or the number given in ``permutations``).
        key: a JAX PRNG key (needed unless ``permutations`` is given).
        permutations: explicit row orders, ``[n_repeats, n_samples]`` (shared by every feature, as
            scikit-learn does) or ``[n_features, n_repeats, n_samples]``.
        batch_size: rows per chunk.
        progress: ``True`` for a progress bar.

    Returns:
        :class:`PermutationImportance` with scikit-learn's fields.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, jaxsens
        >>> m = jaxsens.Model.from_function(lambda p, x: x[:1], {}, input_shape=(2,))
        >>> X = np.random.default_rng(0).normal(size=(500, 2))
        >>> r = permutation_importance(m, X, X[:, :1], key=jax.random.key(0))
        >>> [round(float(v)) for v in r.importances_mean]  # E(x - x')^2 = 2 var(x) for x0; x1 is unused
        [2, 0]
    """
    check_model(model, "permutation_importance", discrete=True)  # permuted ids are ids: integer inputs welcome
    X = check_rows(model, X)
    metric = get_metric(metric)
    n, n_features = X.shape[0], X.shape[-1]
    y_rows = check_targets(metric, y, n, model.output_shape)
    if n_repeats is not None and (
        isinstance(n_repeats, bool) or not isinstance(n_repeats, int) or n_repeats < 1
    ):
        raise ArgumentError(f"n_repeats must be a positive integer, got {n_repeats!r}")
    if permutations is not None:
        perms = _check_permutations(permutations, n, n_features, n_repeats)
    else:
        if key is None:
            raise ArgumentError("permutation_importance() needs key=jax.random.key(seed) or permutations=")
        perms = _key_permutations(key, n, n_features, n_repeats or 5)
    n_rep = perms.shape[1]
    cols = np.moveaxis(X, -1, 0)  # [F, n, *lead]
    values = cols[np.arange(n_features)[:, None, None], perms]  # [F, R, n, *lead]
    values = np.moveaxis(values, 2, 0)  # [n, F, R, *lead]
    exact = ("x", "values") if integer_inputs(model) else ()  # token ids reach the model unchanged (int32)
    packed, layout = pack([("x", X), ("y", y_rows), ("values", values)], exact=exact)
    del values
    task = Task(model, {}, Spec(_permuted_variants, layout=layout, metric=metric))
    if metric.per_sample:
        base, diff, info = run_loss(task, packed, batch_size=batch_size, progress=progress)
        base_loss, changes, n_used = (
            float(base.mean),
            np.asarray(diff.mean).reshape(n_features, n_rep),
            info.n_samples,
        )
    else:
        scores = host_scores(metric, np.asarray(y), predict_all(task, packed, batch_size=batch_size))
        base_loss, changes, n_used = scores[0], (scores[1:] - scores[0]).reshape(n_features, n_rep), n
    importances = metric.sign * changes
    return PermutationImportance(
        importances_mean=importances.mean(axis=1),
        importances_std=importances.std(axis=1),
        importances=importances,
        baseline_score=-metric.sign * base_loss,
        metric=metric.name,
        n_samples=int(n_used),
        feature_names=tuple(model.feature_names or [f"x{i}" for i in range(n_features)]),
    )
