"""Stepwise selection with retraining on the method protocol (issue 11).

The selection itself (right inputs found, vmapped == separate trainings, classifier) is tested in test_classic.py;
here: the one calling convention (any data source, int seeds, ``batch_size`` = rows per chunk, deprecated names),
the bootstrap stderr against its closed form and against a recomputation from independently retrained networks,
``max_steps`` (NaN tail ranked last), ``max_rows``, validation rows, and the machinery that makes long runs usable:
every network trained is reported, the estimate is built from a timed probe, grouping the candidates does not
change the result.
"""

from __future__ import annotations

import itertools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tol import assert_f32_close

import jaxsens
from jaxsens._dense import dense_layers, dense_model
from jaxsens._stats import N_BOOT, poisson_weights
from jaxsens._stepwise import (
    SPEC,
    StepwiseCostWarning,
    StepwiseResult,
    candidates_per_step,
    estimate_stepwise_cost,
    fit,
    init_params,
    run_stepwise,
    stepwise,
)


def _data(n=96, n_features=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    y = 1.5 * X[:, 0] - np.tanh(2 * X[:, 1]) + 0.05 * rng.normal(size=n)
    return X, y.astype(np.float32)


def _mlp(n_features=5, hidden=6, feature_names=None):
    return dense_model(
        [(np.zeros((n_features, hidden)), np.zeros(hidden)), (np.zeros((hidden, 1)), np.zeros(1))],
        ["tanh", "identity"],
        feature_names=feature_names,
    )


KW = {"epochs": 40, "learning_rate": 0.05, "key": 0, "warn_seconds": 0}


def _same_result(a: StepwiseResult, b: StepwiseResult):
    assert a.order == b.order
    for field in ("importance", "stderr", "errors", "candidate_errors"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.baseline == b.baseline


# ------------------------------------------------------------------------------------- calling convention
def test_the_table_row():
    spec = jaxsens.methods()["stepwise"]
    assert spec is SPEC and spec.function is stepwise is jaxsens.stepwise
    assert (spec.family, spec.needs_targets, spec.random, spec.per_output, spec.exact_zero) == (
        "retraining", True, True, False, False,
    )  # fmt: skip
    assert spec.estimate is not None and spec.aliases == {"loss": "metric"}
    names = {o.name for o in spec.options}
    assert {"direction", "epochs", "max_steps", "minibatch_size", "metric", "max_rows", "validation"} <= names
    assert spec.option("validation").cli is False and spec.option("direction").choices == ("forward", "backward")
    assert "minibatch_size" in stepwise.__doc__ and "batch_size" in stepwise.__doc__


def test_npy_files_and_a_csv_target_column_equal_arrays(tmp_path):
    X, y = _data()
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    ref = stepwise(_mlp(), X, y, max_steps=2, **KW)
    _same_result(stepwise(_mlp(), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), max_steps=2, **KW), ref)
    names = ["a", "b", "c", "d", "e"]
    rows = np.column_stack([X, y]).astype(np.float64)  # %.9g round-trips float32 exactly
    np.savetxt(tmp_path / "d.csv", rows, fmt="%.9g", delimiter=",", header=",".join([*names, "y"]), comments="")
    from_csv = stepwise(_mlp(), tmp_path / "d.csv", "y", max_steps=2, **KW)
    assert from_csv.feature_names == tuple(names) and from_csv.order == tuple(names[i] for i in ref.order_index)
    np.testing.assert_array_equal(from_csv.importance, ref.importance)
    np.testing.assert_array_equal(from_csv.stderr, ref.stderr)


def test_keys_int_seed_default_and_typed_key_agree():
    X, y = _data(n=48)
    kw = {k: v for k, v in KW.items() if k != "key"}
    a = stepwise(_mlp(), X, y, max_steps=1, key=3, **kw)
    _same_result(stepwise(_mlp(), X, y, max_steps=1, key=jax.random.key(3), **kw), a)
    _same_result(stepwise(_mlp(), X, y, max_steps=1, **kw), stepwise(_mlp(), X, y, max_steps=1, key=0, **kw))
    assert a.options["seed"] == 3


def test_batch_size_reads_chunks_only_and_warns_about_its_old_meaning():
    X, y = _data(n=48)
    ref = stepwise(_mlp(), X, y, max_steps=2, **KW)
    with pytest.warns(FutureWarning, match=r"batch_size=7 is the rows per chunk.*now minibatch_size="):
        chunked = stepwise(_mlp(), X, y, max_steps=2, batch_size=7, **KW)
    _same_result(chunked, ref)  # chunks of 7 rows read into the same array: the same networks
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # minibatch_size given: the caller knows the new names
        full = stepwise(_mlp(), X, y, max_steps=2, batch_size=7, minibatch_size=48, **KW)
    _same_result(full, ref)  # a minibatch of all the rows is the full batch
    mini = stepwise(_mlp(), X, y, max_steps=2, minibatch_size=16, **KW)
    assert not np.array_equal(mini.errors, ref.errors)  # minibatches of 16: other Adam steps


def test_deprecated_names_warn_and_work():
    X, y = _data(n=48)
    ref = stepwise(_mlp(), X, y, max_steps=1, metric="mse", **KW)
    with pytest.warns(DeprecationWarning, match=r"loss= is deprecated; use metric="):
        old = stepwise(_mlp(), X, y, max_steps=1, loss="mse", **KW)
    _same_result(old, ref)
    with pytest.warns(DeprecationWarning, match=r"baseline_error is deprecated; use \.baseline"):
        assert old.baseline_error == ref.baseline
    with pytest.raises(jaxsens.ArgumentError, match=r"loss= is the deprecated name of metric=; pass only metric="):
        stepwise(_mlp(), X, y, loss="mse", metric="mse", **KW)


def test_nan_rows_are_refused_or_skipped_and_counted():
    X, y = _data(n=48)
    X[5, 2] = np.nan
    with pytest.raises(jaxsens.DataError, match=r"row 5 holds NaN"):
        stepwise(_mlp(), X, y, max_steps=1, **KW)
    r = stepwise(_mlp(), X, y, max_steps=1, nan_policy="skip", **KW)
    assert (r.n_samples, r.n_skipped, r.n_eval) == (47, 1, 47)
    keep = np.arange(48) != 5
    clean = stepwise(_mlp(), X[keep], y[keep], max_steps=1, **KW)
    assert r.order == clean.order
    np.testing.assert_array_equal(r.errors, clean.errors)  # the same rows train the same networks
    # the bootstrap weights follow the original row numbers (row 6 keeps its weights), so stderr may differ
    assert np.isfinite(r.stderr[r.order_index]).all()


# --------------------------------------------------------------------------------------- max_steps, stderr
def test_max_steps_leaves_a_nan_tail_ranked_last_and_stderr_finite_where_reached():
    X, y = _data()
    r = stepwise(_mlp(), X, y, max_steps=2, **KW)
    reached = np.zeros(5, bool)
    reached[r.order_index] = True
    assert reached.sum() == 2
    assert np.isnan(r.importance[~reached]).all() and np.isnan(r.stderr[~reached]).all()
    assert np.isfinite(r.importance[reached]).all()
    assert np.isfinite(r.stderr[reached]).all() and (r.stderr[reached] > 0).all()
    ranked = [name for name, _, _ in r.ranking()]
    assert set(ranked[:2]) == set(r.order) and set(ranked[2:]) == {f"x{j}" for j in np.flatnonzero(~reached)}
    frame = r.to_frame()
    assert frame["selection_step"].isna().sum() == 3
    assert list(frame.sort_values("rank")["feature"])[:2] == ranked[:2]


def _per_row_losses(params, X, y):
    """float64 numpy: tanh hidden layer, identity output, squared error averaged over the one output."""
    p = [{k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in params]
    h = np.tanh(X @ p[0]["W"] + p[0]["b"])
    return ((h @ p[1]["W"] + p[1]["b"])[:, 0] - y) ** 2


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_stderr_is_the_paired_bootstrap_of_per_row_loss_differences(direction):
    """Oracle: the networks before and after each step retrained here one by one (``fit``, same initial weights
    and minibatch order), their per-row losses in float64, and the bootstrap replicates recomputed with the
    documented weights; and the closed form std(d) / sqrt(n) of a mean, which the bootstrap estimates."""
    X, y = _data(n=128)
    epochs, lr, key = 60, 0.05, jax.random.key(5)
    r = stepwise(_mlp(hidden=8), X, y, direction=direction, max_steps=3, epochs=epochs, learning_rate=lr, key=key,
                 warn_seconds=0)  # fmt: skip
    sizes = (5, 8, 1)
    init = init_params(jax.random.fold_in(key, 0), sizes)
    acts = (("tanh", ()), ("identity", ()))
    active = np.zeros(5, bool) if direction == "forward" else np.ones(5, bool)
    losses = []
    for step in range(4):  # the baseline, then the network after each step
        if step:
            active[r.order_index[step - 1]] = direction == "forward"
        mask = jnp.asarray(active.astype(np.float32))
        p = fit(init, mask, jnp.asarray(X), jnp.asarray(y[:, None]), jax.random.fold_in(key, 1), jnp.float32(lr),
                epochs, activations=acts, loss="mse", batch_size=128)  # fmt: skip
        losses.append(_per_row_losses(p, X * np.asarray(mask), y))
    # retrained alone vs in vmapped groups: float32 rounding of 60 Adam epochs through fan-ins 5 + 8 + 1, then
    # squared; compare the mean losses with the reported errors
    n_terms = 2 * (epochs * (5 + 8 + 1) + 128)
    assert_f32_close([l.mean() for l in losses], [r.baseline, *r.errors], n_terms=n_terms,
                     magnitude=max(l.max() for l in losses))  # fmt: skip
    weights = np.asarray(poisson_weights(jax.random.fold_in(key, 2), jnp.arange(128, dtype=jnp.uint32)), np.float64)
    for step, j in enumerate(r.order_index):
        d = losses[step] - losses[step + 1] if direction == "forward" else losses[step + 1] - losses[step]
        replicates = (d @ weights) / weights.sum(0)
        assert replicates.shape == (N_BOOT,)
        # each per-row loss carries the training rounding (2 n_terms eps relative); a replicate moves by at most
        # its weighted mean of |l_before| + |l_after| times that, and the std of the replicates by twice it
        size = (np.abs(losses[step]) + np.abs(losses[step + 1])) @ weights / weights.sum(0)
        tol = 2 * 2 * n_terms * np.finfo(np.float32).eps * size.max()
        np.testing.assert_allclose(r.stderr[j], np.std(replicates, ddof=1), atol=tol, rtol=0)
        assert_f32_close(r.importance[j], d.mean(), n_terms=n_terms, magnitude=np.abs(d).max())
        # the bootstrap standard error of a mean, with 64 replicates: relative spread 1 / sqrt(2 * 63) = 0.09
        closed = np.std(d, ddof=1) / math.sqrt(128)
        assert 0.6 < r.stderr[j] / closed < 1.4, (r.stderr[j], closed)


def test_validation_rows_measure_the_errors():
    X, y = _data(n=96)
    Xv, yv = _data(n=40, seed=7)
    same = stepwise(_mlp(), X, y, max_steps=2, validation=(X, y), **KW)
    _same_result(same, stepwise(_mlp(), X, y, max_steps=2, **KW))
    r = stepwise(_mlp(), X, y, max_steps=2, validation=(Xv, yv), **KW)
    assert (r.n_samples, r.n_eval) == (96, 40)
    assert np.isfinite(r.stderr[r.order_index]).all()
    with pytest.raises(jaxsens.ArgumentTypeError, match=r"validation must be a pair \(X_val, y_val\)"):
        stepwise(_mlp(), X, y, validation=Xv, **KW)
    with pytest.raises(jaxsens.DataError, match=r"validation=\(X_val, y_val\): data and targets are not row-aligned"):
        stepwise(_mlp(), X, y, validation=(Xv, yv[:30]), **KW)


# ---------------------------------------------------------------------------------------------- max_rows
def test_max_rows_refuses_more_rows_naming_the_count_and_the_fix():
    X, y = _data(n=50)
    with pytest.raises(
        jaxsens.DataError,
        match=r"holds its training rows in memory.*at most max_rows=20; .*has 50 rows .*Pass max_rows=50.*"
        r"nothing is subsampled silently",
    ):
        stepwise(_mlp(), X, y, max_rows=20, **KW)
    batches = (X[i : i + 10] for i in range(0, 50, 10))  # a one-shot stream: the count is found while reading
    with pytest.raises(jaxsens.DataError, match=r"has more than 20 usable rows\. Pass max_rows=N"):
        stepwise(_mlp(), batches, y, max_rows=20, **KW)
    with pytest.raises(jaxsens.DataError, match=r"holds its validation rows.*has 50 rows"):
        stepwise(_mlp(), X[:20], y[:20], max_rows=20, validation=(X, y), **KW)
    assert stepwise(_mlp(), X, y, max_rows=50, max_steps=1, **KW).n_samples == 50


# ------------------------------------------------------------------------------------------------ refusals
def test_bad_arguments_name_the_value_and_the_fix():
    X, y = _data(n=32)
    m = _mlp()
    with pytest.raises(jaxsens.ArgumentError, match=r"direction must be one of \['forward', 'backward'\]"):
        stepwise(m, X, y, direction="sideways", **KW)
    with pytest.raises(jaxsens.ArgumentError, match=r"candidate_group must be >= 1, got 0"):
        stepwise(m, X, y, candidate_group=0, **KW)
    with pytest.raises(jaxsens.ArgumentError, match=r"epochs must be >= 1, got 0"):
        stepwise(m, X, y, **{**KW, "epochs": 0})
    with pytest.raises(jaxsens.ArgumentError, match=r"max_seconds=-1.0; give a positive number"):
        stepwise(m, X, y, max_seconds=-1, **KW)
    with pytest.raises(jaxsens.ArgumentError, match=r"learning_rate=0.0; give a positive number"):
        stepwise(m, X, y, **{**KW, "learning_rate": 0})
    with pytest.raises(jaxsens.ArgumentError, match=r"max_steps=9; give 1..5"):
        stepwise(m, X, y, max_steps=9, **KW)
    with pytest.raises(jaxsens.ArgumentError, match=r"metric='log_loss' needs a softmax or sigmoid output"):
        stepwise(m, X, y, metric="log_loss", **KW)
    with pytest.raises(jaxsens.ArgumentError, match=r"metric='accuracy' cannot be trained on"):
        stepwise(m, X, y, metric="accuracy", **KW)
    with pytest.raises(jaxsens.ArgumentError, match=r"outputs= does not apply"):
        stepwise(m, X, y, outputs=[0], **KW)
    with pytest.raises(jaxsens.ArgumentError, match=r"stepwise\(\) needs targets"):
        stepwise(m, X, **KW)
    with pytest.raises(jaxsens.DataError, match=r"data has shape \[32, 4\]; the model expects \[n_samples, 5\]"):
        stepwise(m, X[:, :4], y, **KW)
    with pytest.raises(jaxsens.DataError, match=r"not row-aligned.*31 rows"):
        stepwise(m, X, y[:31], **KW)
    with pytest.raises(jaxsens.DataError, match=r"at least 2 training rows"):
        stepwise(m, X[:1], y[:1], **KW)
    with pytest.raises(ValueError, match=r"n_features=4 but the model's first layer takes 5 inputs"):
        estimate_stepwise_cost(dense_layers(m), 32, 4)


def test_diverged_training_is_refused_not_ranked():
    X, y = _data(n=32)
    with pytest.raises(
        ValueError, match=r"training diverged \(error NaN or inf\).*lower learning_rate=1e\+30"
    ):
        stepwise(_mlp(), X, y * 1e30, **{**KW, "epochs": 5, "learning_rate": 1e30})


# ------------------------------------------------------------------------------ progress, groups, estimate
@pytest.mark.parametrize(("max_steps", "group"), [(3, 2), (5, 6), (1, 4)])
def test_progress_counts_every_network_once_and_is_monotone(max_steps, group):
    X, y = _data()
    calls = []
    r = stepwise(
        _mlp(), X, y, direction="backward", max_steps=max_steps, candidate_group=group,
        progress=lambda done, total: calls.append((done, total)), **KW,
    )  # fmt: skip
    total = 1 + sum(5 - s for s in range(max_steps))  # the baseline network + the candidates of each step
    assert total == sum(candidates_per_step(5, max_steps))
    assert {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert all(b > a for a, b in itertools.pairwise(done)) and done[-1] == total
    # one report per vmapped group: ceil(candidates / group) per step
    assert len(calls) == sum(math.ceil(c / group) for c in candidates_per_step(5, max_steps))
    assert len(r.errors) == max_steps


def test_progress_bar_and_bad_progress():
    X, y = _data(n=32)
    r = stepwise(_mlp(), X, y, max_steps=1, progress=True, **{**KW, "epochs": 2})
    assert len(r.errors) == 1
    with pytest.raises(TypeError, match=r"progress must be None, True or a callable.*got 'yes'"):
        stepwise(_mlp(), X, y, progress="yes", **KW)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_candidate_groups_give_the_same_selection(direction):
    X, y = _data()
    runs = {g: stepwise(_mlp(), X, y, direction=direction, candidate_group=g, **KW) for g in (1, 2, 4, 6)}
    ref = runs[6]  # n_features + 1: every step in one vmapped batch
    for g, r in runs.items():
        assert r.order == ref.order, g
        # vmapped batches of different sizes round differently: 40 epochs of a 5 -> 6 -> 1 network (fan-ins
        # 5 + 6 + 1, forward and backward), then a mean over 96 rows
        n_terms = 2 * (40 * (5 + 6 + 1) + 96)
        finite = np.isfinite(ref.candidate_errors)
        np.testing.assert_array_equal(np.isfinite(r.candidate_errors), finite)
        assert_f32_close(
            r.candidate_errors[finite], ref.candidate_errors[finite], n_terms=n_terms,
            magnitude=np.abs(ref.candidate_errors[finite]).max(),
        )  # fmt: skip
        assert_f32_close(r.baseline, ref.baseline, n_terms=n_terms, magnitude=abs(ref.baseline))


def test_run_stepwise_max_steps_bounds_the_steps_and_the_networks():
    X, y = _data()
    layers = dense_layers(_mlp())
    Xc, yc = jnp.asarray(X), jnp.asarray(y[:, None])
    for steps in (1, 2, 4):
        out = run_stepwise(
            layers, Xc, yc, Xc, yc, direction="forward", epochs=10, learning_rate=0.05, minibatch_size=32,
            loss="mse", max_steps=steps, key=jax.random.key(0), warn_seconds=None,
        )  # fmt: skip
        assert out["order_index"].shape == (steps,) and out["errors"].shape == (steps,)
        assert out["candidate_errors"].shape == (steps, 5)
        assert np.isfinite(out["importance"]).sum() == steps
        assert np.isfinite(out["stderr"]).sum() == steps and out["replicates"].shape == (5, N_BOOT)
        assert out["n_networks"] == 1 + sum(5 - s for s in range(steps))
        # step s tried exactly the inputs still out
        assert [int(np.isfinite(row).sum()) for row in out["candidate_errors"]] == [5 - s for s in range(steps)]


def test_estimate_is_positive_and_built_from_its_probe():
    layers = dense_layers(_mlp())
    est = {e: estimate_stepwise_cost(layers, 64, 5, epochs=e, direction="backward") for e in (1, 400)}
    for e, d in est.items():
        assert math.isfinite(d["seconds"]) and d["seconds"] > 0
        assert math.isfinite(d["compile_s"]) and d["compile_s"] >= 0
        assert d["n_networks"] == 1 + 5 + 4 + 3 + 2 + 1 and d["epochs"] == e
        assert d["per_epoch_s"] >= 0 and d["fixed_s"] >= 0
        assert d["seconds"] == pytest.approx(sum(d["per_step"]), rel=1e-12)
        calls = [math.ceil(c / d["group"]) for c in candidates_per_step(5, 5)]
        assert d["per_step"] == pytest.approx([c * d["group_s"] for c in calls], rel=1e-12)
    # the extrapolation is linear in the epochs: fixed cost + per-epoch cost x epochs (timed for a few epochs)
    d = est[400]
    if d["probe_epochs"] < 400:
        assert d["group_s"] == pytest.approx(d["fixed_s"] + 400 * d["per_epoch_s"], rel=1e-12)
    fewer = estimate_stepwise_cost(layers, 64, 5, epochs=3, max_steps=2, direction="forward")
    assert fewer["n_networks"] == 1 + 5 + 4 and len(fewer["per_step"]) == 2


def test_the_estimate_hook_reads_no_data_and_counts_the_networks(tmp_path):
    from jaxsens._cli_importance import _preview_call

    X, y = _data(n=64)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    call = _preview_call(SPEC, _mlp(), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), {},
                         {"epochs": 3, "max_steps": 2})  # fmt: skip
    est = SPEC.estimate(call)
    assert est["n_networks"] == 1 + 5 + 4 and est["n_rows"] == 64 and est["epochs"] == 3 and est["seconds"] > 0
    assert "10 networks x 3 epochs on 64 rows in 2 steps" in est["text"]
    stream = _preview_call(SPEC, _mlp(), (X[i : i + 16] for i in range(0, 64, 16)), y, {}, {"epochs": 3})
    text = SPEC.estimate(stream)
    assert isinstance(text, str) and "16 networks x 3 epochs" in text and "known only once the data is read" in text
    with pytest.raises(jaxsens.DataError, match=r"max_rows=10"):
        SPEC.estimate(_preview_call(SPEC, _mlp(), X, y, {}, {"max_rows": 10}))


def test_estimate_warns_and_refuses_long_runs():
    X, y = _data(n=32)
    with pytest.warns(StepwiseCostWarning, match=r"stepwise will train 16 networks x 5 epochs on 32 rows"):
        r = stepwise(_mlp(), X, y, epochs=5, warn_seconds=1e-9)
    assert r.estimate["n_networks"] == 16 and r.estimate["seconds"] > 0
    with pytest.raises(ValueError, match=r"over max_seconds=1e-09; use .*or raise max_seconds"):
        stepwise(_mlp(), X, y, epochs=5, max_seconds=1e-9)
    assert stepwise(_mlp(), X, y, max_steps=1, **KW).estimate is None  # warn_seconds=0: no probe


# ------------------------------------------------------------------------------------------------- results
def test_result_saves_loads_and_plots(tmp_path):
    X, y = _data(n=48)
    r = stepwise(_mlp(feature_names=list("abcde")), X, y, max_steps=3, **{**KW, "warn_seconds": 1e6})
    r.save(tmp_path / "r.json")
    back = jaxsens.load_result(tmp_path / "r.json")
    assert type(back) is StepwiseResult and back.order == r.order and back.feature_names == tuple("abcde")
    _same_result(back, r)
    assert back.estimate["n_networks"] == r.estimate["n_networks"]
    fig = r.plot_steps(path=tmp_path / "steps.png")
    assert "stepwise forward: 3 of 5 steps" in fig.axes[0].get_title()
    assert fig.axes[0].get_ylabel() == "mse on 48 evaluation rows"
    fig = r.plot(path=tmp_path / "bars.png")
    assert "top 5 of 5 features" in fig._suptitle.get_text()
    assert (tmp_path / "steps.png").stat().st_size > 0 and (tmp_path / "bars.png").stat().st_size > 0
