"""permutation_importance, improved_stepwise and lek_profile on the method protocol: streamed sources, permutation
blocks, metric "auto", progress, the bounded Lek sample and the paged curve plots. Oracles: float64 numpy
re-computations of the same permutations / settings, the array path for file sources, closed forms."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tol import assert_f32_close

import jaxsens
from jaxsens import examples, improved_stepwise, lek_profile, permutation_importance
from jaxsens.errors import DataError

KEY = jax.random.key(3)


def _linear(w):
    w = jnp.asarray(w, jnp.float32)
    return jaxsens.Model.from_function(lambda p, x: (x @ p)[None], w, input_shape=(len(w),))


def _softmax_model(outputs_sum_to_one=True):
    w = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    return jaxsens.Model.from_function(lambda p, x: jax.nn.softmax(x @ p), w, input_shape=(4,),
                                       outputs_sum_to_one=outputs_sum_to_one)


# ---------------------------------------------------------------------------------------------- permutation
def test_permutation_of_npy_files_and_a_csv_column_equals_the_array(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 3)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.0]) + 0.1 * rng.normal(size=150)).astype(np.float32)
    model = _linear([1.0, -2.0, 0.5])
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    a = permutation_importance(model, X, y, key=KEY, n_repeats=3)
    b = permutation_importance(model, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), key=KEY, n_repeats=3)
    np.testing.assert_array_equal(a.importances, b.importances)
    np.testing.assert_array_equal(a.stderr, b.stderr)
    assert a.baseline == b.baseline and a.n_samples == b.n_samples == 150 and a.metric == "mse"
    # a target column of the data file, by name (dropped from the features); %.9g round-trips float32
    np.savetxt(tmp_path / "d.csv", np.column_stack([X, y]), fmt="%.9g", delimiter=",", header="a,b,c,y",
               comments="")
    c = permutation_importance(model, str(tmp_path / "d.csv"), "y", key=KEY, n_repeats=3)
    assert c.feature_names == ("a", "b", "c")
    np.testing.assert_array_equal(c.importances, a.importances)


def test_permutation_blocks_equal_a_float64_reference_and_ignore_batch_size():
    """2,000 rows in blocks of 300 (7 blocks, the last of 200): each column permuted within its block; the mean
    change of the squared error over all rows equals float64 numpy on the same permutations."""
    from jaxsens._permutation import _block_permutations

    rng = np.random.default_rng(1)
    n, w = 2000, np.array([1.5, -1.0, 0.0, 0.5])
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X.astype(np.float64) @ w + 0.2 * rng.normal(size=n)).astype(np.float32)
    model = _linear(w)
    r = permutation_importance(model, X, y, key=KEY, n_repeats=2, block_rows=300)
    assert r.n_blocks == 7 and r.n_samples == n and r.block_rows == 300
    assert np.all(np.isfinite(r.importances)) and np.all(np.isfinite(r.stderr))
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    base = (y64 - X64 @ w) ** 2
    want = np.zeros((4, 2))
    for b, start in enumerate(range(0, n, 300)):
        rows = slice(start, min(start + 300, n))
        for rep in range(2):
            perm = np.asarray(_block_permutations(KEY, b, rep, jnp.arange(4), jnp.zeros(rows.stop - start, jnp.int8)))
            for j in range(4):
                moved = X64[rows].copy()
                moved[:, j] = X64[rows][perm[j], j]
                want[j, rep] += np.sum((y64[rows] - moved @ w) ** 2 - base[rows])
    want /= n
    size = 2 * np.mean(base) + np.abs(want)  # the per-row terms: two squared errors
    n_terms = 2 * (300 + 4 + 1)  # rows summed in a chunk (at most a block), the dot product, inputs rounded
    assert_f32_close(r.importances, want, n_terms=n_terms, magnitude=size)
    assert r.importance[2] == 0 and r.stderr[2] == 0  # the ignored input: exact zeros in every block
    # chunks of 64 rows: other float32 partial sums only
    s = permutation_importance(model, X, y, key=KEY, n_repeats=2, block_rows=300, batch_size=64)
    assert_f32_close(s.importances, r.importances, n_terms=n_terms, magnitude=size)
    # other blocks draw other permutations; a block of all rows is the classic permutation
    whole = permutation_importance(model, X, y, key=KEY, n_repeats=2)
    assert whole.n_blocks == 1 and not np.array_equal(whole.importances, r.importances)
    np.testing.assert_array_equal(
        whole.importances, permutation_importance(model, X, y, key=KEY, n_repeats=2, block_rows=n).importances
    )


def test_permutation_skips_nan_rows_as_if_they_were_not_there():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = (X @ np.array([1.0, 2.0, 0.0])).astype(np.float32)
    bad = X.copy()
    bad[[5, 70]] = np.nan
    keep = np.ones(120, bool)
    keep[[5, 70]] = False
    model = _linear([1.0, 2.0, 0.0])
    with pytest.raises(DataError, match="row 5 holds NaN"):
        permutation_importance(model, bad, y, key=KEY)
    r = permutation_importance(model, bad, y, key=KEY, nan_policy="skip")
    clean = permutation_importance(model, X[keep], y[keep], key=KEY)
    assert r.n_samples == 118 and r.n_skipped == 2
    np.testing.assert_array_equal(r.importances, clean.importances)


def test_metric_auto_by_target_type_softmax_and_labels():
    model = _softmax_model()
    X = np.random.default_rng(3).normal(size=(300, 4)).astype(np.float32)
    labels = np.asarray(model(X)).argmax(1)
    labels[::7] = (labels[::7] + 1) % 3  # some errors: a finite log loss
    r = permutation_importance(model, X, labels, key=KEY, n_repeats=2)
    assert r.metric == "log_loss" and r.importance_label == "log_loss increase when permuted"
    explicit = permutation_importance(model, X, labels, key=KEY, n_repeats=2, metric="log_loss")
    np.testing.assert_array_equal(r.importances, explicit.importances)
    p = np.asarray(model(X), np.float64)
    np.testing.assert_allclose(r.baseline, np.mean(-np.log(p[np.arange(300), labels])), rtol=1e-5)
    # outputs not declared to sum to one: class labels are scored by accuracy (a score: its decrease)
    acc = permutation_importance(_softmax_model(False), X, labels, key=KEY, n_repeats=2)
    assert acc.metric == "accuracy" and acc.greater_is_better
    assert_f32_close(acc.baseline, np.mean(p.argmax(1) == labels), n_terms=300, magnitude=1.0)  # a float32 mean
    s = improved_stepwise(model, X, labels)
    assert s.variant == 1 and s.metric == "log_loss"
    with pytest.raises(DataError, match=r"class label\(s\) outside 0..2"):
        improved_stepwise(model, X, np.full(300, 3))


def test_readme_example_permutation_with_a_label_column_on_the_bundled_classifier(tmp_path):
    """``--method permutation --target-column y`` failed with the default mse on the bundled softmax classifier:
    metric "auto" reads integer labels as classes (log_loss) and finds the inputs the labels depend on."""
    model = jaxsens.load_model(examples.default_model_path())
    X = np.load(examples.default_data_path())
    logit = 2.0 * X[:, 3] - 1.5 * X[:, 17] + X[:, 41] * X[:, 42] + 0.8 * np.sin(2 * X[:, 60])
    names = [f"f{i}" for i in range(X.shape[1])]
    np.savetxt(tmp_path / "d.csv", np.column_stack([X, logit > 0]), fmt="%.9g", delimiter=",",
               header=",".join([*names, "y"]), comments="")
    r = permutation_importance(model, str(tmp_path / "d.csv"), "y", n_repeats=2)
    assert r.metric == "log_loss" and r.n_samples == 1000 and r.feature_names == tuple(names)
    assert {n for n, _, _ in r.ranking()[:2]} == {"f3", "f17"}


# -------------------------------------------------------------------------------------------- improved stepwise
def test_improved_stepwise_streams_files_like_arrays(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(130, 3)).astype(np.float32)
    y = (X @ np.array([1.0, -1.0, 0.0]) + 0.1).astype(np.float32)
    model = _linear([1.0, -1.0, 0.0])
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    for targets in (None, "y"):
        a = improved_stepwise(model, X, None if targets is None else y)
        b = improved_stepwise(model, str(tmp_path / "x.npy"), None if targets is None else str(tmp_path / "y.npy"))
        np.testing.assert_array_equal(a.importance, b.importance)
        np.testing.assert_array_equal(a.stderr, b.stderr)
        assert a.importance[2] == 0 and a.stderr[2] == 0
    # closed form, variant 2: fixing x_j at its mean moves f by w_j (x_j - mean_j): mean square w_j^2 var_j
    r = improved_stepwise(model, X)
    np.testing.assert_allclose(r.importance, np.array([1.0, 1.0, 0.0]) * X.astype(np.float64).var(0), rtol=1e-5)


# ------------------------------------------------------------------------------------------------- progress
def test_progress_counts_every_pass_to_its_total():
    X = np.random.default_rng(5).normal(size=(90, 3)).astype(np.float32)
    y = X.sum(1)
    model = _linear([1.0, 1.0, 1.0])
    calls = {
        "permutation": (lambda p: permutation_importance(model, X, y, n_repeats=3, batch_size=16, progress=p),
                        90 * 3),
        "stepwise": (lambda p: improved_stepwise(model, X, y, batch_size=16, progress=p), 2 * 90),
        "lek": (lambda p: lek_profile(model, X, steps=4, quantiles=(0.5,), batch_size=5, progress=p), 90 + 3 * 4),
    }
    for name, (call, total) in calls.items():
        seen: list = []

        def record(done, tot, seen=seen):
            seen.append((done, tot))

        call(record)
        assert len(seen) >= 3, name
        assert all(t == total for _, t in seen), (name, seen)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == total, (name, seen)


# ---------------------------------------------------------------------------------------------- Lek's profile
def test_lek_sample_is_bounded_uniform_and_independent_of_chunking(monkeypatch):
    from jaxsens import _profile

    X = np.random.default_rng(6).uniform(size=(3000, 3)).astype(np.float32)
    model = _linear([1.0, 2.0, 0.0])
    q = (0.0, 0.25, 0.5, 0.75, 1.0)
    r = lek_profile(model, X, steps=3, quantiles=q, max_rows=400)
    assert r.n_sample_rows == 400 and r.n_samples == 3000
    np.testing.assert_array_equal(r.settings[0], X.min(0))  # levels 0 and 1: exact extremes over all rows
    np.testing.assert_array_equal(r.settings[-1], X.max(0))
    np.testing.assert_array_equal(r.grid[:, [0, -1]], np.stack([X.min(0), X.max(0)], 1).astype(np.float64))
    # quartiles of a 400-row uniform sample of U(0, 1): standard error sqrt(q (1 - q) / 400) <= 0.025
    assert np.all(np.abs(r.settings[1:4] - np.array([0.25, 0.5, 0.75])[:, None]) < 5 * 0.025)
    monkeypatch.setattr(_profile, "_SCAN_ROWS", 77)  # other chunks: the same sample (priorities per row)
    np.testing.assert_array_equal(lek_profile(model, X, steps=3, quantiles=q, max_rows=400).settings, r.settings)
    # at most max_rows rows: all of them, exact quantiles
    whole = lek_profile(model, X, steps=3, quantiles=q, max_rows=3000)
    np.testing.assert_allclose(whole.settings, np.quantile(X.astype(np.float64), q, axis=0), rtol=1e-12)


def test_lek_plot_curves_pages_every_feature(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.linspace(-1, 1, 26)  # four pages, the last one partial (as 82 features page in 11)
    X = np.random.default_rng(7).normal(size=(200, 26)).astype(np.float32)
    r = lek_profile(_linear(w), X, steps=4, quantiles=(0.25, 0.5, 0.75))
    figs = r.plot_curves(top=None, path=tmp_path / "lek.png")
    try:
        assert len(figs) == 4  # 26 panels, 8 per page
        panels = [[ax for ax in f.axes if ax.get_visible()] for f in figs]
        assert [len(p) for p in panels] == [8] * 3 + [2]
        ranked = [n for n, _, _ in r.ranking(0)]
        first = panels[0][0]
        assert first.get_title() == f"#1 {ranked[0]}" and first.get_xlabel() == f"{ranked[0]} (swept)"
        assert first.get_ylabel() == r.output_names[0]
        assert [t.get_text() for t in first.get_legend().get_texts()] == ["q=0.25", "q=0.5", "q=0.75"]
        assert panels[-1][1].get_title() == f"#26 {ranked[25]}"
        assert "ranked 25-26 of 26" in figs[-1]._suptitle.get_text()
        assert sorted(os.listdir(tmp_path)) == sorted(f"lek-{i}.png" for i in range(1, 5))
    finally:
        for f in figs:
            plt.close(f)
    figs = r.plot_curves(path=tmp_path / "lek.pdf")  # default: the top 8, one page; a PDF holds all pages
    try:
        assert len(figs) == 1 and len([ax for ax in figs[0].axes if ax.get_visible()]) == 8
        assert (tmp_path / "lek.pdf").read_bytes()[:5] == b"%PDF-"
    finally:
        for f in figs:
            plt.close(f)
    fig = r.plot()  # the base's ranked bars
    try:
        assert "top 20 of 26" in fig._suptitle.get_text()
    finally:
        plt.close(fig)
