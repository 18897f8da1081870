r"""``compare``: did feature importance change between versions of a model (a weekly retrain), and which features
does every version ignore?

For versions :math:`v = 0..V-1` (the reference first), each one model or several retrained replicates, one method
of the method table is run on the same data, and the headline importance of every version is compared with the
reference's.

**Paired route** (streaming methods with a ``rows`` hook, :class:`jaxsens._method.Method`): the data is streamed
**once**; each chunk goes through every version inside one compiled kernel. Versions of one architecture have
their parameters stacked and ``vmap`` ped (one trace, one compile however many versions), random methods use the
same key for every version (row :math:`n` sees the same noise in every version, so it cancels in the
difference), and the per-row difference :math:`d_n = r_{v,n} - r_{0,n}` of the per-row values :math:`r` whose
mean is the headline is folded in the same pass:

.. math:: \Delta_v = \bar d, \qquad \mathrm{se}(\Delta_v) = \mathrm{sd}(d) / \sqrt{N}

(for an RMS headline, :math:`\sqrt{\bar r}`, the delta method on the same paired moments). Every version's own
result is ``spec.finalize`` of its own statistics: exactly what calling the method alone gives.

**Fallback** (every other method, or options that make the headline something else): each version is run on its
own with the same key; :math:`\mathrm{se}(\Delta_v) = \sqrt{\mathrm{se}_v^2 + \mathrm{se}_0^2}` (independent runs).

**Replicates.** Both of the above measure data-sampling noise only (which rows were drawn), not retraining
noise: two trainings of one network on the same data can differ far more, which is why a z-score built from two
runs' standard errors marks noise features as changed. With several models per version, the between-replicate
variance :math:`s_g^2` of each entry :math:`g`, pooled over the versions with at least two replicates
(:math:`d = \sum_v (R_v - 1)` degrees of freedom), is the noise floor: :math:`\mathrm{se}(\Delta_v) = s_g
\sqrt{1/R_v + 1/R_0}`. With 3 + 1 models :math:`d = 2`, and Student's t on 2 degrees of freedom with Holm over
82 features needs :math:`|t| > 40`: nothing is ever marked. So by default (``moderate=True``) the variances borrow
strength across entries (Smyth 2004, "Linear models and empirical Bayes methods for assessing differential
expression in microarray experiments", Stat. Appl. Genet. Mol. Biol. 3(1); limma's ``eBayes``): a scaled
inverse-chi-square prior :math:`(d_0, s_0^2)` is fitted to all the :math:`s_g^2` by the method of moments on
:math:`\log s_g^2` (:func:`moderation_prior`), each variance becomes
:math:`\tilde s_g^2 = (d_0 s_0^2 + d s_g^2) / (d_0 + d)` and the t-tests have :math:`d_0 + d` degrees of freedom
(a normal when :math:`d_0 = \infty`). One change to Smyth's recipe: :math:`d_0` is the lower end of a one-sided
95% interval, not the point estimate. With :math:`d \le 3` and tens of entries the point estimate is often far too
large, and Holm's correction reads the extreme t tails that :math:`d_0` sets: simulated from the very model
(82 entries, :math:`d_0 = 3`, 3 replicates against 1 or 2 against 1), the point estimate rejects a true "no
change" in about 10% or 30% of the families at ``alpha = 0.05``; the lower bound in 2% or 1%. The prior is fitted to the variances themselves, not to
:math:`s_g^2 / \bar m_g^2`: on seed 000's weekly network (3 replicates) :math:`\log s_g^2` rises with the log mean
importance with slope 0.70, not 2 (correlation 0.34), and dividing by :math:`\bar m_g^2` widens the spread of the
logs (variance 2.5 -> 3.2, :math:`d_0` 3.1 -> 2.1). ``moderate=False`` gives the plain pooled two-sample t-test
on :math:`d` degrees of freedom per entry.

``changed`` is Holm's step-down correction (Holm 1979, "A simple sequentially rejective multiple test
procedure", Scand. J. Statist. 6) at ``alpha`` over every entry of ``p_value``. Rankings are compared per feature
with Spearman's and Kendall's correlations and nDCG (the version's ranking scored with the reference's
importances; SageMaker Clarify flags nDCG < 0.9), ``drift = 1 - min(ndcg)``.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import math
import numbers
import os
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError, DataError
from jaxsens import _engine, _stats
from jaxsens._method import Method, make_call, run_plan
from jaxsens._results import Z95, _decode, _encode, element_labels, frame, read_json_file

__all__ = ["Comparison", "compare", "load_comparison"]

_FORMAT = "jaxsens.comparison"
_VERSION = 1
_WEIGHT_SUMS_AGREE = 0.5  # rank correlation below which weight sums and behaviour "disagree"
_ROUNDING = 8 * float(np.finfo(np.float32).eps)  # relative spread below which replicates are the same model
D0_CONFIDENCE = 0.95  # the prior's d0 is the lower end of a one-sided interval at this level (moderation_prior)


# ------------------------------------------------------------------------------------------------- the result
@dataclasses.dataclass(frozen=True, kw_only=True, repr=False, eq=False)
class Comparison:
    """Importance of several versions of a model, compared with the first (the reference).

    ``headline`` below is the method's ``Result.importance`` shape (``[n_outputs, *input_shape]``, or
    ``[*input_shape]`` for methods that aggregate the outputs).

    Attributes:
        versions: version names, reference first.
        method: the method's name in :func:`jaxsens.methods`.
        feature_names: ``[n_features]``.
        output_names: the explained outputs; ``()`` when the method aggregates them.
        input_shape: the results' per-sample input shape.
        importance: ``[V, *headline]`` each version's importance (the mean over its replicates).
        stderr: ``[V, *headline]`` its standard error (replicates: the pooled between-replicate std, moderated
            unless ``moderate=False``, / sqrt(R_v)).
        delta: ``[V - 1, *headline]`` version ``v`` minus the reference.
        delta_stderr: ``[V - 1, *headline]`` standard error of ``delta`` (see ``noise``).
        p_value: ``[V - 1, *headline]`` two-sided p-value of "no change"; NaN where there is no noise estimate.
        changed: ``[V - 1, *headline]`` bool: significant after Holm's correction at ``alpha`` over all entries.
        alpha: the family-wise error rate of ``changed``.
        feature_importance: ``[V, n_features]`` per feature (mean over outputs, summed over leading input axes).
        feature_stderr: ``[V, n_features]`` its standard error.
        spearman, kendall: ``[V - 1]`` rank correlation of ``feature_importance[v]`` with ``[0]``.
        ndcg: ``[V - 1]`` nDCG of version ``v``'s feature ranking, scored with the reference's importances
            (negative importances count as 0).
        drift: ``1 - min(ndcg)`` (0.0 for a single version).
        near_zero: features whose 95% upper bound ``feature_importance + c feature_stderr`` is below
            ``near_zero_fraction * max(feature_importance[v])`` in every version (``c`` = 1.96, or Student's t
            quantile with the replicate tests' degrees of freedom: :func:`critical95`).
        near_zero_fraction: that fraction.
        weight_sums: ``[V, n_features]`` first-layer ``sum |W|`` per input (dense stacks), else ``None``.
        weight_sums_spearman: ``[V]`` rank correlation of ``weight_sums[v]`` with ``feature_importance[v]``.
        noise: what ``delta_stderr`` measures: ``"replicates, moderated"`` (the default with replicates),
            ``"replicates"`` (``moderate=False``, or no entry varies), ``"rows, paired"``, ``"rows, independent
            runs"`` or ``"none"`` (an exact method without replicates).
        prior: ``{"d0", "s0_sq", "scale", "d0_estimate"}`` the empirical-Bayes prior of the moderated replicate
            variances (:func:`moderation_prior`: ``d0`` the lower end of its one-sided 95% interval, which the
            tests use, may be ``inf``; ``d0_estimate`` Smyth's point estimate; ``scale`` is ``"absolute"``: fitted
            to the variances themselves), else ``None``.
        n_replicates: models per version.
        noise_floor: ``[V, *headline]`` between-replicate std as measured (the pooled one for versions with one
            model; not moderated); ``None`` without replicates.
        n_samples: rows the statistics are over (0 for weight-only methods).
        notes: sentences a reader needs (what the noise covers, disagreements).
        options: the method options as recorded.
        results: per version, the tuple of the method's results (one per replicate); ``None`` once loaded from
            a file.
    """

    versions: tuple[str, ...]
    method: str
    feature_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_shape: tuple
    importance: np.ndarray
    stderr: np.ndarray
    delta: np.ndarray
    delta_stderr: np.ndarray
    p_value: np.ndarray
    changed: np.ndarray
    alpha: float
    feature_importance: np.ndarray
    feature_stderr: np.ndarray
    spearman: np.ndarray
    kendall: np.ndarray
    ndcg: np.ndarray
    drift: float
    near_zero: tuple[str, ...]
    near_zero_fraction: float
    weight_sums: np.ndarray | None
    weight_sums_spearman: np.ndarray | None
    noise: str
    prior: dict | None = None
    n_replicates: tuple[int, ...]
    noise_floor: np.ndarray | None
    n_samples: int
    notes: tuple[str, ...]
    options: dict
    results: tuple | None = None

    # ------------------------------------------------------------------------------------------- views
    def _labels(self) -> tuple[str, ...]:
        return element_labels(self.feature_names, self.input_shape)

    def _outputs(self) -> tuple:
        return tuple(self.output_names) or (None,)

    def changes(self, top: int | None = None) -> list[dict]:
        """Every (version, output, element) against the reference, largest ``|delta|`` first (NaN last).

        Each row: ``version``, ``output`` (``None`` when the method aggregates outputs), ``feature`` (the element
        label, ``name[t]`` for sequence inputs), ``reference``, ``importance``, ``delta``, ``delta_stderr``,
        ``p_value``, ``changed``.
        """
        if top is not None and (isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1):
            raise ArgumentError(f"changes(): top must be a positive integer or None, got {top!r}")
        labels, outs = self._labels(), self._outputs()
        k, n_el = len(outs), len(labels)
        ref = self.importance[0].reshape(k, n_el)
        rows = []
        for v in range(1, len(self.versions)):
            imp = self.importance[v].reshape(k, n_el)
            parts = [
                a[v - 1].reshape(k, n_el) for a in (self.delta, self.delta_stderr, self.p_value, self.changed)
            ]
            for o in range(k):
                for e in range(n_el):
                    rows.append(
                        {
                            "version": self.versions[v],
                            "output": outs[o],
                            "feature": labels[e],
                            "reference": float(ref[o, e]),
                            "importance": float(imp[o, e]),
                            "delta": float(parts[0][o, e]),
                            "delta_stderr": float(parts[1][o, e]),
                            "p_value": float(parts[2][o, e]),
                            "changed": bool(parts[3][o, e]),
                        }
                    )
        rows.sort(key=lambda r: -abs(r["delta"]) if math.isfinite(r["delta"]) else math.inf)
        return rows if top is None else rows[: int(top)]

    def to_frame(self):
        """Tidy pandas DataFrame, one row per (version, output, element): ``version``, ``output`` (when per
        output), ``feature``, ``importance``, ``stderr``, ``delta``, ``delta_stderr``, ``p_value`` (NaN for the
        reference), ``changed`` (False for the reference). Needs pandas (the ``data`` extra)."""
        labels, outs = self._labels(), self._outputs()
        k, n_el, V = len(outs), len(labels), len(self.versions)
        per = k * n_el

        def vs(a, fill):  # [V - 1, ...] -> [V, ...] with the reference row filled
            first = np.full((1, per), fill, dtype=np.asarray(a).dtype if a.size else type(fill))
            return np.concatenate([first, np.asarray(a).reshape(V - 1, per)]).reshape(-1)

        cols: dict[str, Any] = {"version": np.repeat(np.asarray(self.versions, dtype=object), per)}
        if self.output_names:
            cols["output"] = np.tile(np.repeat(np.asarray(self.output_names, dtype=object), n_el), V)
        cols["feature"] = np.tile(np.asarray(labels, dtype=object), V * k)
        cols["importance"] = self.importance.reshape(-1)
        cols["stderr"] = self.stderr.reshape(-1)
        cols["delta"] = vs(self.delta, 0.0)
        cols["delta_stderr"] = vs(self.delta_stderr, 0.0)
        cols["p_value"] = vs(self.p_value, np.nan)
        cols["changed"] = vs(self.changed, False).astype(bool)
        return frame(cols)

    def summary(self) -> str:
        """A few lines of text: drift, nDCG and rank correlations per version, the largest changes, the
        near-zero features and the notes."""
        lines = [
            (
                f"compare ({self.method}): {len(self.versions)} versions {list(self.versions)} (reference "
                f"{self.versions[0]!r}), {self.n_samples} samples, noise: {self.noise}, "
                f"replicates {list(self.n_replicates)}"
            ),
            f"drift (1 - min nDCG): {self.drift:.4f}",
        ]
        for v in range(1, len(self.versions)):
            n_changed = int(np.sum(self.changed[v - 1]))
            lines.append(
                f"  {self.versions[v]}: nDCG {self.ndcg[v - 1]:.4f}, Spearman {self.spearman[v - 1]:.4f}, "
                f"Kendall {self.kendall[v - 1]:.4f}, {n_changed} changed (Holm, alpha={self.alpha:g})"
            )
        top = [r for r in self.changes(10)]
        crit = critical95(self.noise, self.n_replicates, self.prior)
        if top:
            lines.append("largest changes:")
            for r in top:
                out = "" if r["output"] is None else f"[{r['output']}]"
                mark = " *changed*" if r["changed"] else ""
                lines.append(
                    f"  {r['version']} {r['feature']}{out}: {r['reference']:.4g} -> {r['importance']:.4g} "
                    f"(delta {r['delta']:+.4g} +- {crit * r['delta_stderr']:.2g}, p={r['p_value']:.3g}){mark}"
                )
        near = ", ".join(self.near_zero) if self.near_zero else "none"
        lines.append(f"near zero in every version (< {self.near_zero_fraction:g} x max): {near}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<Comparison {self.method}: versions {list(self.versions)}, drift {self.drift:.4g}, "
            f"{int(np.sum(self.changed))} changed, noise {self.noise!r}>"
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        head = (
            f"<p><b>Comparison</b> &mdash; {esc(self.method)}, versions {esc(', '.join(self.versions))} "
            f"(reference {esc(self.versions[0])}); drift {self.drift:.4f}; noise: {esc(self.noise)}</p>"
        )
        body = "".join(
            "<tr>"
            + "".join(
                f"<td>{esc(str(c))}</td>"
                for c in (
                    r["version"],
                    r["feature"] if r["output"] is None else f"{r['feature']} [{r['output']}]",
                    f"{r['reference']:.4g}",
                    f"{r['importance']:.4g}",
                    f"{r['delta']:+.4g}",
                    f"{r['delta_stderr']:.2g}",
                    f"{r['p_value']:.3g}",
                    "yes" if r["changed"] else "",
                )
            )
            + "</tr>"
            for r in self.changes(15)
        )
        table = (
            "<table><thead><tr><th>version</th><th>feature</th><th>reference</th><th>importance</th>"
            "<th>delta</th><th>stderr</th><th>p</th><th>changed</th></tr></thead><tbody>"
            f"{body}</tbody></table>"
        )
        near = esc(", ".join(self.near_zero) or "none")
        notes = "".join(f"<li>{esc(n)}</li>" for n in self.notes)
        return f"{head}{table}<p>near zero in every version: {near}</p>" + (
            f"<ul>{notes}</ul>" if notes else ""
        )

    def plot(self, *, path=None, top=None):
        """Per feature and version, 95% intervals, changed features marked (see
        :func:`jaxsens._compare_view.plot_comparison`; needs matplotlib, the ``plot`` extra)."""
        from jaxsens._compare_view import plot_comparison

        return plot_comparison(self, path=path, top=top)

    def save(self, path: str | os.PathLike) -> None:
        """Write the comparison as JSON (atomic; ``results`` are not stored); read it back with
        :func:`jaxsens.load_comparison`."""
        from jaxsens._io import atomic_write

        fields = {
            f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "results"
        }
        fields["results"] = None
        doc = {"format": _FORMAT, "version": _VERSION, "fields": fields}
        atomic_write(path, json.dumps(doc, allow_nan=False, separators=(",", ":")))


def load_comparison(path: str | os.PathLike) -> Comparison:
    """Read a :class:`Comparison` written by ``comparison.save(path)`` (``results`` is ``None``).

    Raises:
        DataFileNotFoundError: no such file. DataError: not a comparison file, or a damaged one.
    """
    where = os.fspath(path)
    doc = read_json_file(path, "comparison file")
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("fields"), dict):
        raise DataError(f"{where!r} is not a jaxsens comparison file (written by Comparison.save)")
    if not isinstance(doc.get("version"), int) or doc["version"] > _VERSION:
        raise DataError(
            f"{where!r} was written by a newer jaxsens (comparison format {doc.get('version')!r})"
        )
    known = {f.name for f in dataclasses.fields(Comparison)}
    try:
        fields = {k: _decode(v) for k, v in doc["fields"].items() if k in known}
        fields["options"] = fields.get("options") if isinstance(fields.get("options"), dict) else {}
        fields["results"] = None
        return Comparison(**fields)
    except (DataError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where!r} is a damaged comparison file: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------------------------- the function
def compare(
    models,
    data=None,
    targets=None,
    *,
    method="jacobian",
    names=None,
    alpha=0.05,
    near_zero=0.05,
    moderate=True,
    key=None,
    outputs=None,
    batch_size=None,
    progress=None,
    nan_policy="raise",
    devices=None,
    **method_options,
) -> Comparison:
    r"""Compare the importance of several versions of a model with the first (see the module docstring).

    Args:
        models: the versions, reference first. Each is a :class:`jaxsens.Model`, a path (anything
            :func:`jaxsens.load_model` reads), or a list / tuple of those: retrained replicates of one version.
            Every model must have the same inputs, feature names and outputs.
        data, targets: as for the method (one data set for every version).
        method: a name from :func:`jaxsens.methods` (default ``"jacobian"``).
        names: one name per version; default the file stems (``x_structure.json`` -> ``"x"``), else ``"v0"``,
            ``"v1"``, ...
        alpha: family-wise error rate of ``changed`` (Holm), in (0, 1).
        near_zero: the fraction of each version's largest feature importance below which a feature's 95% upper
            bound counts as "ignored", in (0, 1).
        moderate: with replicates, moderate each entry's between-replicate variance across all entries (Smyth's
            empirical Bayes, :func:`moderation_prior`; ``noise = "replicates, moderated"``); ``False``: each entry
            is tested on its own spread only (the plain pooled t-test, ``noise = "replicates"``). No effect
            without replicates.
        key: for random methods, one key for every version (``None``: the methods' default seed).
        outputs, batch_size, progress, nan_policy, devices, \**method_options: as for the method.

    Returns:
        A :class:`Comparison`.

    Raises:
        ArgumentError / ArgumentTypeError: a bad argument (the message names it), versions that do not match,
            an unknown method (the valid ones are listed).

    Example:
        >>> import jax.numpy as jnp, numpy as np, jaxsens
        >>> f = lambda w, x: w @ x
        >>> a = jaxsens.Model.from_function(f, jnp.array([[1.0, 0.5, 0.0]]), input_shape=(3,))
        >>> b = a.with_params(jnp.array([[1.0, 1.5, 0.0]]))
        >>> xs = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
        >>> c = jaxsens.compare([a, b], xs, names=["last", "this"])
        >>> c.changed[0].tolist(), c.near_zero
        ([[False, True, False]], ('x2',))
    """
    spec = _method_spec(method)
    alpha = _fraction(alpha, "alpha")
    near = _fraction(near_zero, "near_zero")
    if not isinstance(moderate, bool | np.bool_):
        raise ArgumentTypeError(f"compare(): moderate must be True or False, got {moderate!r:.60}")
    moderate = bool(moderate)
    versions, entries = _load_versions(models)
    names = _version_names(names, entries, len(versions))
    versions, rebased = _share_architecture(versions, names)
    renamed = _check_match(versions, names)
    if key is not None and not spec.random:
        warnings.warn(f"compare(): method {spec.name!r} is deterministic; key= is ignored", stacklevel=2)
        key = None
    flat = [m for reps in versions for m in reps]
    groups_of_version, at = [], 0
    for reps in versions:
        groups_of_version.append(tuple(range(at, at + len(reps))))
        at += len(reps)
    calls = [
        make_call(
            spec,
            m,
            data,
            targets,
            key=key,
            outputs=outputs,
            batch_size=batch_size,
            progress=progress,
            nan_policy=nan_policy,
            devices=devices,
            options=method_options,
        )
        for m in flat
    ]
    plans = None
    if spec.kernel is not None:
        plans = [spec.prepare(c) for c in calls]
    paired = (
        plans is not None
        and spec.rows is not None
        and all(p.rows_ok and p.data is None and p.targets is None for p in plans)
    )
    if not paired and len(flat) > 1:
        from jaxsens._variants import refuse_one_shot

        refuse_one_shot(
            data,
            "data",
            "compare",
            f"once per model ({len(flat)} models: {spec.name} runs each one separately)",
        )
        refuse_one_shot(targets, "targets", "compare", f"once per model ({len(flat)} models)")
    rows = None
    if paired:
        results, rows = _run_paired(spec, calls, plans, groups_of_version)
    elif plans is not None:
        results = [run_plan(c, p) for c, p in zip(calls, plans)]
    else:
        results = [spec.run(c) for c in calls]
    for i, r in enumerate(results):
        if not hasattr(r, "importance") or not hasattr(r, "feature_importance"):
            raise ArgumentError(
                f"compare(): {spec.function_name}() returned {type(r).__name__} (several inputs?); compare() "
                "handles models with one input"
            )
    comp = _assemble(spec, calls[0], flat, results, rows, groups_of_version, names, alpha, near, moderate)
    if rebased:
        comp = dataclasses.replace(comp, notes=(*comp.notes, (
            f"{', '.join(rebased)}: the same graph as the reference {names[0]!r} under other tensor / layer names "
            "(Keras numbers its layers per session): run with the reference's graph and names (outputs matched by "
            "position), in one compiled kernel with the reference"
        )))
    if renamed:
        comp = dataclasses.replace(
            comp,
            notes=comp.notes
            + (
                (
                    f"the output names differ only by the graph's output tensor name ({', '.join(renamed)}: "
                    "Keras numbers its layers per session); outputs are matched by position and named as in "
                    f"{names[0]!r}"
                ),
            ),
        )
    return comp


# ------------------------------------------------------------------------------------------------- validation
def _method_spec(method) -> Method:
    from jaxsens._methods import methods

    table = methods()
    if not isinstance(method, str):
        raise ArgumentTypeError(
            f"compare(): method must be a method name, got {method!r:.60}; one of {list(table)}"
        )
    if method not in table:
        raise ArgumentError(f"compare(): unknown method={method!r}; use one of {list(table)}")
    return table[method]


def _fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"compare(): {name} must be a number in (0, 1), got {value!r:.60}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ArgumentError(f"compare(): {name} must be in (0, 1) (exclusive), got {value!r}")
    return value


def _load_versions(models) -> tuple[list[list], list[list]]:
    from jaxsens._model import Model, load_model

    if isinstance(models, str | os.PathLike | Model) or not isinstance(models, Sequence):
        raise ArgumentTypeError(
            f"compare(): models must be a list of versions (reference first), each a Model, a path or a list of "
            f"retrained replicates; got {type(models).__name__}"
        )
    if len(models) == 0:
        raise ArgumentError("compare(): models is empty; pass at least one version (reference first)")
    versions, entries = [], []
    for i, entry in enumerate(models):
        reps = list(entry) if isinstance(entry, list | tuple) else [entry]
        if not reps:
            raise ArgumentError(
                f"compare(): models[{i}] is an empty list of replicates; give at least one model"
            )
        loaded = []
        for j, m in enumerate(reps):
            where = f"models[{i}]" + (f"[{j}]" if isinstance(entry, list | tuple) else "")
            if isinstance(m, Model):
                loaded.append(m)
            elif isinstance(m, str | os.PathLike):
                loaded.append(load_model(m))
            else:
                raise ArgumentTypeError(
                    f"compare(): {where} is a {type(m).__name__}; each version is a jaxsens.Model, a model path, "
                    "or a list of those (replicates)"
                )
        versions.append(loaded)
        entries.append(entry)
    return versions, entries


def _stem(entry) -> str | None:
    from jaxsens._model import Model

    path = entry.source if isinstance(entry, Model) else entry
    if not isinstance(path, str | os.PathLike) or (isinstance(entry, Model) and not os.path.exists(path)):
        return None
    base = os.path.basename(os.path.normpath(os.fspath(path)))
    stem = os.path.splitext(base)[0]
    if stem.endswith("_structure") and len(stem) > len("_structure"):
        stem = stem[: -len("_structure")]
    return stem or None


def _version_names(names, entries, n: int) -> tuple[str, ...]:
    if names is None:
        stems = [None if isinstance(e, list | tuple) else _stem(e) for e in entries]
        if any(s is None for s in stems) or len(set(stems)) != n:
            return tuple(f"v{i}" for i in range(n))
        return tuple(stems)
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ArgumentTypeError(
            f"compare(): names must be a list of {n} strings, one per version; got {names!r:.80}"
        )
    names = tuple(names)
    if len(names) != n:
        raise ArgumentError(
            f"compare(): names has {len(names)} entries for {n} versions; give one name per version"
        )
    for i, s in enumerate(names):
        if not isinstance(s, str) or not s.strip():
            raise ArgumentError(f"compare(): names[{i}] = {s!r} is not a non-empty string")
    dup = sorted({s for s in names if names.count(s) > 1})
    if dup:
        raise ArgumentError(f"compare(): names repeat {dup}; every version needs its own name")
    return names


def _share_architecture(versions, names) -> tuple[list[list], list[str]]:
    """Models whose converted graph equals the reference's up to names (a retrain saved with Keras' per-session
    layer numbering: ``dense_3`` one week, ``dense_7`` the next) become the reference's graph with their own
    weights (:func:`converters.onnx_to_jax.canonical.param_mapping`): one compiled kernel, stackable params, and the
    reference's layer / output names. Anything else is left as it is (compared as a separate architecture)."""
    from converters.onnx_to_jax.canonical import param_mapping
    from converters.onnx_to_jax.graph import OnnxFunction

    ref = versions[0][0]
    if not isinstance(ref.apply, OnnxFunction):
        return versions, []
    out, rebased = [], []
    for v, reps in enumerate(versions):
        moved = []
        for j, m in enumerate(reps):
            same_outputs = m.output_names == ref.output_names or (
                tuple(ref.output_names or ()) == _default_output_names(ref)
                and tuple(m.output_names or ()) == _default_output_names(m)
            )  # named outputs (class names) that differ are refused by _check_match, never renamed here
            if (
                isinstance(m.apply, OnnxFunction)
                and m.apply != ref.apply
                and m.input_shape == ref.input_shape
                and m.feature_names == ref.feature_names
                and same_outputs
            ):
                mapping = param_mapping(ref.apply, m.apply)
                if mapping is not None:
                    params = dict(ref.params)
                    params.update({t: m.params[s] for t, s in mapping.items()})
                    m = dataclasses.replace(ref.with_params(params), source=m.source)
                    rebased.append(names[v] + (f" (replicate {j})" if len(reps) > 1 else ""))
            moved.append(m)
        out.append(moved)
    return out, rebased


def _default_output_names(model) -> tuple[str, ...] | None:
    """The names ``Model.from_onnx`` makes from the graph's output tensor name (``dense_3[0]``, ...), or None."""
    from jaxsens._model import _names

    out = getattr(model.apply, "output", None)
    if not isinstance(out, str) or not out:
        return None
    return _names(None, len(model.output_names or ()), out, "output_names")


def _check_match(versions, names) -> list[str]:
    """Refuse versions that do not match the reference; returns the versions (``name: tensor``) whose output
    names differ only because they are the defaults made from another output tensor name (Keras numbers its
    layers per session: ``dense_3`` one week, ``dense_7`` the next), matched by position."""
    ref = versions[0][0]
    if ref.n_inputs != 1:
        raise ArgumentError(
            f"compare(): version {names[0]!r} has {ref.n_inputs} inputs {list(ref.input_names)}; compare() handles "
            "models with one input"
        )
    checks = (
        ("input shape", lambda m: tuple(m.input_shape)),
        ("feature names", lambda m: tuple(m.feature_names or ())),
        ("output shape", lambda m: tuple(m.output_shape)),
        ("output names", lambda m: tuple(m.output_names or ())),
        ("number of inputs", lambda m: m.n_inputs),
    )
    ref_default = tuple(ref.output_names or ()) == _default_output_names(ref)
    renamed = []
    for v, reps in enumerate(versions):
        for j, m in enumerate(reps):
            for what, get in checks:
                if get(m) != get(ref):
                    rep = f" (replicate {j})" if len(reps) > 1 else ""
                    a, b = get(m), get(ref)
                    if what == "output names" and ref_default and a == _default_output_names(m):
                        renamed.append(f"{names[v]}{rep}: {m.apply.output}")
                        continue
                    if what == "feature names":
                        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y][:3]
                        a = f"{len(a)} names" + (f", e.g. [{diff[0]}] {a[diff[0]]!r}" if diff else "")
                        b = f"{len(b)} names" + (f", e.g. [{diff[0]}] {b[diff[0]]!r}" if diff else "")
                    raise ArgumentError(
                        f"compare(): version {names[v]!r}{rep} has {what} {a}, the reference {names[0]!r} has {b}; "
                        "every version must have the same inputs, feature names and outputs"
                    )
    if renamed:
        renamed.insert(0, f"{names[0]}: {ref.apply.output}")
    return renamed


# ------------------------------------------------------------------------------------------------- the routes
@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["groups"],
    meta_fields=["input_shape", "feature_names", "n_inputs", "input_names", "input_dtypes"],
)
@dataclasses.dataclass(frozen=True)
class _Stacked:
    """What crosses ``jit``: each architecture group's plan states stacked on a leading model axis, plus the
    input description :func:`jaxsens._engine.run` reads (static)."""

    groups: tuple
    input_shape: tuple
    feature_names: tuple | None
    n_inputs: int
    input_names: tuple
    input_dtypes: tuple


@functools.partial(jax.jit, static_argnames=("rows", "statics", "order", "versions"))
def _compare_kernel(stacked: _Stacked, batch, mask, row_index, *, rows, statics, order, versions):
    """One chunk through every model: per group, ``rows`` ``vmap`` ped over the stacked states.

    Returns ``{"stats": (kernel stats of model 0, model 1, ...), "rows": Moments of the per-row values [M,
    *headline], "diff": Moments of each version's replicate-mean row value minus the reference's [V - 1,
    *headline]}`` (``"diff"`` only with several versions).
    """
    per_model, values = {}, {}
    for state, static, members in zip(stacked.groups, statics, order):
        fn = functools.partial(rows, **dict(static))
        stats, vals = jax.vmap(lambda s, fn=fn: fn(s, batch, mask, row_index))(state)
        for j, i in enumerate(members):
            per_model[i] = jax.tree.map(lambda leaf, j=j: leaf[j], stats)
            values[i] = vals[j]
    n = len(per_model)
    # one materialised copy of the per-row values feeds every statistic: XLA would otherwise recompute them
    # inside each consumer's fusion, possibly with other rounding (FMA contraction), and equal versions would
    # differ by ~1e-9 instead of exactly 0
    vals = jax.lax.optimization_barrier(jnp.stack([values[i] for i in range(n)], axis=1))  # [B, M, *headline]
    out = {"stats": tuple(per_model[i] for i in range(n)), "rows": _stats.moments_of(vals, mask)}
    if len(versions) > 1:
        means = jnp.stack(
            [jnp.mean(vals[:, np.asarray(idx)], axis=1) for idx in versions], axis=1
        )  # [B, V, ...]
        out["diff"] = _stats.moments_of(means[:, 1:] - means[:, :1], mask)
    return out


def _run_paired(spec: Method, calls, plans, versions):
    """Stream the data once through :func:`_compare_kernel`; per model ``spec.finalize`` of its own stats."""
    groups: list[tuple[Any, list[int]]] = []
    for i, plan in enumerate(plans):
        leaves, treedef = jax.tree.flatten(plan.state)
        gkey = (
            treedef,
            tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in leaves),
            tuple(sorted(plan.static.items())),
        )
        for k, members in groups:
            if k == gkey:
                members.append(i)
                break
        else:
            groups.append((gkey, [i]))
    stacked_states = tuple(
        jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *[plans[i].state for i in members])
        for _, members in groups
    )
    first = plans[0].state
    names, shapes, dtypes = _engine.model_inputs(first)
    stacked = _Stacked(
        stacked_states, tuple(shapes[0]), getattr(first, "feature_names", None), 1, names, dtypes
    )
    kernel = functools.partial(
        _compare_kernel,
        rows=spec.rows,
        statics=tuple(k[2] for k, _ in groups),
        order=tuple(tuple(m) for _, m in groups),
        versions=tuple(versions),
    )
    call = calls[0]
    per_sample = None
    if call.batch_size is None and all(p.bytes_per_sample is not None for p in plans):
        # Every chunk row goes through every model, so a row costs the sum of the models' bytes. On accelerators
        # that is the bound (memory); on CPU the engine's 128 MiB budget is about GEMM efficiency, which depends on
        # the rows per model, not on how many models share the chunk: summing there halved the chunk for two
        # versions and made the paired pass 0.86x the speed of two separate runs (bench/compare.py, seed-000
        # network, 100k rows); one model's bytes give each model the chunk a separate run would use.
        devices = call.devices if call.devices is not None else jax.local_devices()
        on_cpu = all(d.platform == "cpu" for d in devices)
        per_sample = (max if on_cpu else sum)(p.bytes_per_sample for p in plans)
    stats, info = _engine.run(
        kernel,
        stacked,
        call.data,
        targets=None,
        batch_size=call.batch_size,
        bytes_per_sample=per_sample,
        nan_policy=call.nan_policy,
        progress=call.progress,
        devices=call.devices,
    )
    results = [spec.finalize(stats["stats"][i], info, plans[i], calls[i]) for i in range(len(plans))]
    return results, {
        "rows": stats["rows"],
        "diff": stats.get("diff"),
        "n": info.n_samples,
        "headline": spec.rows_headline,
    }


# ------------------------------------------------------------------------------------------------- statistics
def holm(p_values, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down adjusted p-values and rejections over every non-NaN entry (NaN stays NaN, never
    rejected): sorted ``p_(1) <= ... <= p_(m)``, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; an entry
    is rejected when ``adj <= alpha``."""
    p = np.asarray(p_values, np.float64)
    flat = p.reshape(-1)
    adj = np.full_like(flat, np.nan)
    ok = np.flatnonzero(~np.isnan(flat))
    m = ok.size
    if m:
        order = ok[np.argsort(flat[ok], kind="stable")]
        adj[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * flat[order]))
    rejected = ~np.isnan(adj) & (adj <= alpha)
    return adj.reshape(p.shape), rejected.reshape(p.shape)


def critical95(noise: str, n_replicates, prior: dict | None = None) -> float:
    r"""The two-sided 95% critical value of ``delta / delta_stderr`` (and of ``importance / stderr``).

    ``noise == "replicates"``: Student's t with the pooled between-replicate degrees of freedom
    :math:`d = \sum_v (R_v - 1)` (4.30 for three replicates against one model). ``"replicates, moderated"``:
    Student's t with :math:`d_0 + d` degrees of freedom, ``prior = comparison.prior`` (the normal's quantile when
    :math:`d_0 = \infty`). Otherwise the normal's 1.959964.

    Raises:
        ArgumentError: ``"replicates, moderated"`` without its ``prior``.
    """
    from scipy import stats as sps

    df = sum(int(r) - 1 for r in n_replicates if int(r) >= 2)
    if noise == "replicates, moderated":
        if not isinstance(prior, dict) or "d0" not in prior:
            raise ArgumentError(
                f"critical95(): noise {noise!r} needs the comparison's prior (d0, s0_sq), got prior={prior!r}; "
                "pass prior=comparison.prior"
            )
        total = float(prior["d0"]) + df
        return Z95 if math.isinf(total) else float(sps.t.isf(0.025, total))
    return float(sps.t.isf(0.025, df)) if noise == "replicates" and df > 0 else Z95


def ndcg(scores, relevance) -> float:
    """nDCG of the ranking by ``scores`` (descending) with gains ``relevance`` (negative values count as 0):
    ``DCG = sum_i rel_i / log2(i + 2)`` over the ranking, over the ideal DCG; tied scores share their positions'
    discounts equally (as ``sklearn.metrics.ndcg_score``). NaN when every relevance is 0."""
    rel = np.maximum(np.nan_to_num(np.asarray(relevance, np.float64), nan=0.0), 0.0)
    ideal = _dcg(rel, rel)
    return float(_dcg(np.asarray(scores, np.float64), rel) / ideal) if ideal > 0 else math.nan


def _dcg(scores: np.ndarray, rel: np.ndarray) -> float:
    discount = 1.0 / np.log2(np.arange(len(rel)) + 2.0)
    _, inverse, counts = np.unique(
        -np.nan_to_num(scores, nan=-np.inf), return_inverse=True, return_counts=True
    )
    gains = np.zeros(len(counts))
    np.add.at(gains, inverse.reshape(-1), rel)
    cum = np.concatenate([[0.0], np.cumsum(discount)])
    ends = np.cumsum(counts)
    return float(np.sum(gains / counts * (cum[ends] - cum[ends - counts])))


def _rank_corr(a, b) -> tuple[float, float]:
    from scipy import stats as sps

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return math.nan, math.nan
    if np.array_equal(a, b):
        return 1.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant vector: NaN, which is the honest answer
        return float(sps.spearmanr(a, b).statistic), float(sps.kendalltau(a, b).statistic)


def _two_sided(delta, se, t_df=None) -> np.ndarray:
    """p of |delta / se| (normal, or Student t with ``t_df``); se == 0: 1 where delta == 0, else 0."""
    from scipy import stats as sps

    delta, se = np.asarray(delta, np.float64), np.asarray(se, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(delta) / se
    p = 2 * (sps.norm.sf(z) if t_df is None else sps.t.sf(z, t_df))
    p = np.where(se == 0, np.where(delta == 0, 1.0, 0.0), p)
    return np.where(np.isnan(delta) | np.isnan(se), np.nan, p)


def _pooled(values: np.ndarray, versions) -> tuple[np.ndarray, np.ndarray, int]:
    """``(per-version between-replicate std (NaN for one replicate), pooled std, df)`` of ``values [M, ...]``."""
    own, num, df = [], 0.0, 0
    for idx in versions:
        if len(idx) >= 2:
            var = np.var(values[list(idx)], axis=0, ddof=1)
            own.append(np.sqrt(var))
            num = num + (len(idx) - 1) * var
            df += len(idx) - 1
        else:
            own.append(np.full(values.shape[1:], np.nan))
    return np.stack(own), np.sqrt(num / df), df


def trigamma_inverse(y) -> np.ndarray:
    """The ``x > 0`` with ``trigamma(x) == y`` for ``y > 0``, elementwise: Newton's method on ``1 / trigamma``
    (nearly linear in ``x``) from ``x = 0.5 + 1 / y``, as in Smyth (2004), appendix (limma's
    ``trigammaInverse``); asymptotes ``1 / sqrt(y)`` for ``y > 1e7`` and ``1 / y`` for ``y < 1e-6``."""
    from scipy.special import polygamma

    y = np.asarray(y, np.float64)
    if np.any(~(y > 0)):
        raise ArgumentError(f"trigamma_inverse(): y must be positive and finite, got {y.reshape(-1)[:5]}")
    mid = (y >= 1e-6) & (y <= 1e7)
    x = np.where(y > 1e7, 1.0 / np.sqrt(y), 1.0 / y)
    xm = 0.5 + 1.0 / y[mid]
    for _ in range(50):
        tri = polygamma(1, xm)
        step = tri * (1.0 - tri / y[mid]) / polygamma(2, xm)
        xm = xm + step
        if not xm.size or np.max(-step / xm) < 1e-8:
            break
    x[mid] = xm
    return x


def moderation_prior(
    variances, df: float, *, d0: float | None = None, confidence: float | None = None
) -> tuple[float, float] | None:
    r"""Smyth's (2004) empirical-Bayes prior :math:`(d_0, s_0^2)` of per-entry variances :math:`s_g^2` on
    :math:`d` degrees of freedom (limma's ``fitFDist``), by the method of moments on :math:`\log s_g^2`:

    .. math:: e_g = \log s_g^2 - \psi(d/2) + \log(d/2), \qquad
              \psi'(d_0/2) = \mathrm{var}(e) - \psi'(d/2), \qquad
              s_0^2 = \exp(\bar e + \psi(d_0/2) - \log(d_0/2))

    (``var`` with ``n - 1``); :math:`d_0 = \infty` and :math:`s_0^2 = \exp(\bar e)` when the right side is
    :math:`\le 0` (the variances scatter no more than chi-square noise around one value). Entries with
    :math:`s_g^2 = 0` (exactly constant across replicates) or not finite are left out.

    Args:
        variances: the :math:`s_g^2`, any shape.
        df: their degrees of freedom :math:`d`.
        d0: given: only :math:`s_0^2` is fitted.
        confidence: ``None``: Smyth's point estimate of :math:`d_0`. A level such as 0.95: :math:`d_0` is the
            lower end of a one-sided interval instead, solved from :math:`\mathrm{var}(e) - \psi'(d/2) + z\,
            \mathrm{se}` with :math:`\mathrm{se}^2 = \kappa_4 / n + 2 \sigma^4 / (n - 1)` the sampling variance of
            :math:`\mathrm{var}(e)` under the model (the cumulants of :math:`e` are :math:`\sigma^2 = \psi_1(d/2)
            + \psi_1(d_0/2)` and :math:`\kappa_4 = \psi_3(d/2) + \psi_3(d_0/2)`, polygammas at the point
            estimate). With few entries and :math:`d \le 3` the point estimate is often far too large (``inf``
            in a quarter of the draws for 82 entries and :math:`d = 1`), and a too-large :math:`d_0` thins the
            t tails exactly where Holm's correction looks.

    Returns:
        ``(d0, s0_sq)``, or ``None`` when fewer than two entries are left.
    """
    from scipy.special import digamma, polygamma
    from scipy.stats import norm

    s2 = np.asarray(variances, np.float64).reshape(-1)
    s2 = s2[np.isfinite(s2) & (s2 > 0)]
    n = s2.size
    if n < 2:
        return None
    e = np.log(s2) - digamma(df / 2) + math.log(df / 2)

    def solve(rhs: float) -> float:
        return float(2 * trigamma_inverse(rhs)) if rhs > 0 else math.inf

    if d0 is None:
        rhs = float(np.var(e, ddof=1) - polygamma(1, df / 2))
        d0 = solve(rhs)
        if confidence is not None:
            prior_part = (0.0, 0.0) if math.isinf(d0) else (polygamma(1, d0 / 2), polygamma(3, d0 / 2))
            sigma2 = polygamma(1, df / 2) + prior_part[0]
            kappa4 = polygamma(3, df / 2) + prior_part[1]
            se = math.sqrt(kappa4 / n + 2 * sigma2**2 / (n - 1))
            d0 = solve(rhs + float(norm.isf(1 - confidence)) * se)
    if math.isinf(d0):
        return math.inf, float(np.exp(np.mean(e)))
    return d0, float(np.exp(np.mean(e) + digamma(d0 / 2) - math.log(d0 / 2)))


def moderated_variance(variances, df: float, prior: tuple[float, float]) -> np.ndarray:
    r""":math:`\tilde s_g^2 = (d_0 s_0^2 + d s_g^2) / (d_0 + d)` (:math:`s_0^2` when :math:`d_0 = \infty`)."""
    d0, s0_sq = prior
    s2 = np.asarray(variances, np.float64)
    if math.isinf(d0):
        return np.where(np.isnan(s2), np.nan, s0_sq)
    return (d0 * s0_sq + df * s2) / (d0 + df)


def _rows_delta(rows: dict, importance: np.ndarray, versions) -> tuple[np.ndarray, np.ndarray]:
    """Paired ``delta`` and its stderr from the streamed moments (one model per version)."""
    n = float(rows["n"])
    diff = rows["diff"]
    var_d = _stats.variance(diff)
    if rows["headline"] == "mean":
        return np.asarray(diff.mean, np.float64), np.sqrt(var_d / n)
    # sqrt_mean: delta = sqrt(m_v) - sqrt(m_0), delta method with cov from var(d) = var_v + var_0 - 2 cov
    var_m = _stats.variance(rows["rows"])
    mean_m = np.asarray(rows["rows"].mean, np.float64)
    i0 = versions[0][0]
    out_d, out_se = [], []
    for v in range(1, len(versions)):
        iv = versions[v][0]
        rv, r0 = np.sqrt(np.maximum(mean_m[iv], 0)), np.sqrt(np.maximum(mean_m[i0], 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(rv > 0, 0.5 / rv, 0.0)
            b = np.where(r0 > 0, 0.5 / r0, 0.0)
        # a^2 var_v + b^2 var_0 - 2ab cov, with 2 cov = var_v + var_0 - var_d, rearranged so that equal versions
        # (a == b, var_d == 0) give exactly 0
        var = ((a - b) * (a * var_m[iv] - b * var_m[i0]) + a * b * var_d[v - 1]) / n
        out_d.append(importance[v] - importance[0])
        out_se.append(np.sqrt(np.maximum(var, 0.0)))
    return np.stack(out_d), np.stack(out_se)


def _assemble(spec, call0, flat, results, rows, versions, names, alpha, near, moderate) -> Comparison:
    ref = results[0]
    for i, r in enumerate(results):
        if r.importance.shape != ref.importance.shape or r.feature_names != ref.feature_names:
            raise ArgumentError(
                f"compare(): model {i} gives importance {r.importance.shape} over {len(r.feature_names)} features, "
                f"model 0 gives {ref.importance.shape}; the versions are not comparable"
            )
    V, head = len(versions), ref.importance.shape
    R = np.asarray([len(idx) for idx in versions])
    imps = np.stack([r.importance for r in results])
    errs = np.stack([r.stderr for r in results])
    importance = np.stack([imps[list(idx)].mean(axis=0) for idx in versions])
    fi_m, fe_m = [], []
    for r in results:
        f, e = r.feature_importance()
        if r.output_names:
            f, e = np.mean(f, axis=0), np.mean(e, axis=0)
        fi_m.append(np.asarray(f, np.float64))
        fe_m.append(np.asarray(e, np.float64))
    fi_m, fe_m = np.stack(fi_m), np.stack(fe_m)
    feature_importance = np.stack([fi_m[list(idx)].mean(axis=0) for idx in versions])
    notes, noise_floor = [], None
    exact = all(r.n_samples == 0 and not np.any(r.stderr) for r in results)
    fn = spec.function_name
    if spec.family == "retraining" and V > 1:
        notes.append(
            f"{spec.name} retrains the architecture from new initial weights: the versions' own weights do not "
            "enter, so this compares their architectures on this data, not the trained models; use a gradient, "
            "perturbation or weights method to compare trained versions"
        )
    wrt = (getattr(call0, "options", None) or {}).get("wrt")
    if wrt is not None and len(flat) > 1:
        notes.append(
            f"wrt={wrt!r} compares the units of layer {wrt!r} by index, but the units of networks trained from "
            "different initial weights do not correspond (any permutation of a layer's units gives the same "
            "network): delta, changed and drift mean something only for versions fine-tuned from one another"
        )
    prior, t_df = None, None
    if R.max() >= 2:
        own, s, df = _pooled(imps, versions)
        noise_floor = np.where(np.isnan(own), s[None], own)
        _, s_f, _ = _pooled(fi_m, versions)
        var, var_f, t_df, noise = s**2, s_f**2, df, "replicates"
        if moderate:
            # a 2-class softmax has p1 = 1 - p0: the same entries twice, fitted once
            pair = (
                flat[0].outputs_sum_to_one
                and len(ref.output_names) == 2
                and len(head) >= 2
                and head[0] == 2
                and np.allclose(imps[:, 0], imps[:, 1], rtol=1e-6, atol=0.0, equal_nan=True)
            )
            # a spread at float32 rounding is no retraining noise (the same weights saved twice): not fitted
            rounding = (_ROUNDING * np.max(np.abs(imps), axis=0)) ** 2
            fitted = np.where(var > rounding, var, 0.0)
            fitted = fitted[:1] if pair else fitted
            fit = moderation_prior(fitted, df, confidence=D0_CONFIDENCE)
            point = moderation_prior(fitted, df)
            n_fit = int(np.sum(np.isfinite(fitted) & (fitted > 0)))
            if fit is None:
                notes.append(
                    f"fewer than two entries vary between the replicates by more than float32 rounding (are they the "
                    f"same model?), so the spread cannot be moderated across entries: each entry has the plain "
                    f"pooled t-test ({df} degrees of freedom)"
                )
            else:
                # the feature level (mean over outputs) keeps the entries' d0, so one t quantile serves both
                fit_f = moderation_prior(var_f, df, d0=fit[0]) or fit
                var, var_f = moderated_variance(var, df, fit), moderated_variance(var_f, df, fit_f)
                t_df = None if math.isinf(fit[0]) else fit[0] + df
                noise = "replicates, moderated"
                prior = {"d0": float(fit[0]), "s0_sq": float(fit[1]), "scale": "absolute",
                         "d0_estimate": float(point[0])}
                total = "a normal (d0 infinite: the entries' spreads differ no more than chance)" if t_df is None else (
                    f"Student t on d0 + {df} = {t_df:.3g} degrees of freedom"
                )
                notes.append(
                    f"delta_stderr and p_value use the between-replicate spread (retraining noise), pooled over the "
                    f"versions with 2 or more models ({df} degrees of freedom) and moderated across the {n_fit} "
                    f"entries that vary (empirical Bayes, Smyth 2004 / limma's eBayes): each entry's variance s^2 becomes "
                    f"(d0 s0^2 + {df} s^2) / (d0 + {df}) with the prior d0 = {fit[0]:.3g}, s0^2 = {fit[1]:.3g} "
                    f"fitted to all entries (d0 is the lower end of a one-sided {D0_CONFIDENCE:.0%} interval; the "
                    f"point estimate is {point[0]:.3g}: a d0 too large would make the tests too liberal), and the "
                    f"tests use {total}; moderate=False (--no-moderate) gives the plain per-entry t on {df} degrees "
                    "of freedom"
                )
        if noise == "replicates" and (not moderate or prior is None):
            notes.append(
                f"delta_stderr and p_value use the between-replicate spread (retraining noise), pooled over the "
                f"versions with 2 or more models ({df} degrees of freedom, Student t, each entry on its own)"
            )
        sd = np.sqrt(var)
        stderr = sd[None] / np.sqrt(R).reshape(-1, *([1] * len(head)))
        feature_stderr = np.sqrt(var_f)[None] / np.sqrt(R)[:, None]
        delta = importance[1:] - importance[:1]  # what the pooled t-test is about (replicate means)
        delta_se = (
            np.stack([sd * math.sqrt(1 / R[v] + 1 / R[0]) for v in range(1, V)])
            if V > 1
            else np.zeros((0, *head))
        )
        p = _two_sided(delta, delta_se, t_df=t_df)
    else:
        stderr, feature_stderr = errs, fe_m
        if exact:
            delta = importance[1:] - importance[:1]
            delta_se = np.zeros_like(delta)
            p = np.full(delta.shape, np.nan)
            noise = "none"
            if V > 1:
                notes.append(
                    f"{spec.name} is exact given the weights (stderr 0) and each version has one model, so there "
                    "is no noise estimate: p_value is NaN and nothing is marked changed. Several retrained models "
                    "per version (replicates) give one"
                )
        else:
            if rows is not None:
                delta, delta_se = _rows_delta(rows, importance, versions) if V > 1 else (errs[:0], errs[:0])
                noise = "rows, paired"
            else:
                delta = importance[1:] - importance[:1]
                delta_se = np.sqrt(errs[1:] ** 2 + errs[:1] ** 2)
                noise = "rows, independent runs"
                if V > 1:
                    notes.append(
                        f"{fn}() ran on each version separately, so delta_stderr = sqrt(se_v^2 + se_0^2) treats "
                        "the runs as independent"
                    )
            p = _two_sided(delta, delta_se)
            if V > 1:
                notes.append(
                    "delta_stderr and p_value measure data-sampling noise only (which rows were drawn), not "
                    "retraining noise: two trainings of one network can differ far more, so 'changed' may flag "
                    "differences that retraining alone produces. Pass several retrained models per version "
                    "(replicates) for a noise floor that includes retraining"
                )
    tested = np.asarray(p, np.float64)
    mirrored = (
        V > 1
        and flat[0].outputs_sum_to_one
        and len(ref.output_names) == 2
        and tested.ndim >= 2
        and tested.shape[1] == 2
        and np.allclose(tested[:, 0], tested[:, 1], rtol=1e-6, atol=0.0, equal_nan=True)
    )
    if mirrored:  # p1 = 1 - p0: one hypothesis per feature, not two (Holm's m would double)
        tested = tested[:, :1]
        notes.append(
            f"the two outputs {list(ref.output_names)} sum to one (p1 = 1 - p0), so their importances agree: each "
            "entry is tested once (Holm) and marked for both outputs"
        )
    _, changed = holm(tested, alpha)
    changed = np.broadcast_to(changed, np.shape(p)).copy()
    if noise.startswith("replicates") and V > 1:
        notes.append(_power_note(delta[:, :1] if mirrored else delta, delta_se[:, :1] if mirrored else delta_se,
                                 tested, changed, t_df, alpha))
    spearman, kendall, nd = (np.zeros(max(V - 1, 0)) for _ in range(3))
    for v in range(1, V):
        spearman[v - 1], kendall[v - 1] = _rank_corr(feature_importance[v], feature_importance[0])
        nd[v - 1] = ndcg(feature_importance[v], feature_importance[0])
    finite = nd[np.isfinite(nd)]
    drift = 0.0 if V == 1 else (float(1.0 - finite.min()) if finite.size else math.nan)
    if V > 1 and finite.size < nd.size:
        notes.append(
            "nDCG is undefined where every reference importance is <= 0; drift uses the other versions"
        )
    upper = feature_importance + critical95(noise, R, prior) * np.nan_to_num(feature_stderr)
    bound = near * np.max(feature_importance, axis=1, keepdims=True)
    ignored = np.all(upper < bound, axis=0)
    near_names = tuple(n for n, z in zip(ref.feature_names, ignored) if z)
    ws, ws_rho = _weight_sums(flat, versions, feature_importance, names, notes)
    return Comparison(
        versions=tuple(names),
        method=spec.name,
        feature_names=tuple(ref.feature_names),
        output_names=tuple(ref.output_names),
        input_shape=tuple(ref.input_shape),
        importance=importance,
        stderr=np.asarray(stderr, np.float64) * np.ones_like(importance),
        delta=np.asarray(delta, np.float64),
        delta_stderr=np.asarray(delta_se, np.float64),
        p_value=np.asarray(p, np.float64),
        changed=changed,
        alpha=alpha,
        feature_importance=feature_importance,
        feature_stderr=np.asarray(feature_stderr, np.float64) * np.ones_like(feature_importance),
        spearman=spearman,
        kendall=kendall,
        ndcg=nd,
        drift=drift,
        near_zero=near_names,
        near_zero_fraction=near,
        weight_sums=ws,
        weight_sums_spearman=ws_rho,
        noise=noise,
        prior=prior,
        n_replicates=tuple(int(r) for r in R),
        noise_floor=noise_floor,
        n_samples=int(ref.n_samples),
        notes=tuple(notes),
        options=call0.record(),
        results=tuple(tuple(results[i] for i in idx) for idx in versions),
    )


def _power_note(delta, delta_se, p, changed, t_df: float | None, alpha: float) -> str:
    """What the replicate t-tests can detect: Holm's first step rejects only ``|t| > t_{df}(1 - alpha / 2m)`` (the
    normal's quantile when ``t_df`` is None); with few replicates and many entries that is far above 1.96, so a
    large, real change may stay unflagged."""
    from scipy import stats as sps

    m = int(np.sum(~np.isnan(p)))
    if m == 0:
        return "no p-value could be computed (zero spread between replicates?)"
    need = float(sps.norm.isf(alpha / (2 * m)) if t_df is None else sps.t.isf(alpha / (2 * m), t_df))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(np.asarray(delta, np.float64)) / np.asarray(delta_se, np.float64)
    top = float(np.nanmax(np.where(np.isinf(t), np.nan, t))) if np.isfinite(t).any() else math.nan
    dist = "a normal" if t_df is None else f"{t_df:.3g} degrees of freedom"
    text = (
        f"with {dist} and {m} tested entries, Holm at alpha={alpha:g} marks a change only where "
        f"|delta| > {need:.3g} x delta_stderr; the largest ratio here is {top:.3g}"
    )
    if not np.any(changed) and math.isfinite(top) and top > 2 * Z95:
        text += (
            "; so nothing is marked changed although some deltas lie far outside the retraining noise: read the "
            "largest changes and the drift, or add replicates (each one adds a degree of freedom)"
        )
    return text


def _weight_sums(flat, versions, feature_importance, names, notes):
    """First-layer ``sum |W|`` per input feature (replicate mean) and its rank correlation with the importance,
    for dense stacks; ``(None, None)`` otherwise."""
    from jaxsens._dense import NotDenseError

    sums = []
    for m in flat:
        try:
            W = np.asarray(m.dense_layers(method="compare")[0].W, np.float64)
        except NotDenseError:
            return None, None
        if W.ndim != 2 or W.shape[0] != feature_importance.shape[1]:
            return None, None
        sums.append(np.abs(W).sum(axis=1))
    sums = np.stack(sums)
    ws = np.stack([sums[list(idx)].mean(axis=0) for idx in versions])
    rho = np.asarray([_rank_corr(ws[v], feature_importance[v])[0] for v in range(len(versions))])
    low = [names[v] for v in range(len(versions)) if rho[v] < _WEIGHT_SUMS_AGREE]  # NaN (undefined): no claim
    if low:
        notes.append(
            f"first-layer weight sums rank the features differently from the model's behaviour in {low} "
            f"(Spearman < {_WEIGHT_SUMS_AGREE}): weight sums ignore the later layers and the data"
        )
    return ws, rho
