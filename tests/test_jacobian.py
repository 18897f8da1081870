"""jacobian_importance against closed forms in numpy float64, across modes, batch sizes, devices, sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsens._jacobian import _jacobian_kernel, jacobian_importance
from jaxsens._model import Model
from jaxsens._results import JacobianImportance, load_result
from jaxsens._stats import CorrelatedInputsWarning

STATS = ("mean_abs", "mean", "std", "rms", "stderr")
BS = 128  # one batch size for most tests: the default model's kernel compiles once for the whole file


# ----------------------------------------------------------------------------------------- fixtures
def tanh_net(p, x):
    return p["W2"] @ jnp.tanh(p["W1"] @ x + p["b1"])


def tanh_params(seed, d=6, h=16, k=3):
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.normal(size=(h, d)).astype(np.float32) / np.sqrt(d),
        "b1": (0.1 * rng.normal(size=h)).astype(np.float32),
        "W2": rng.normal(size=(k, h)).astype(np.float32),
    }


def tanh_model(seed=0, **kw) -> Model:
    return Model.from_function(
        tanh_net, tanh_params(seed, **kw), input_shape=(tanh_params(seed, **kw)["W1"].shape[1],)
    )


def tanh_jacobians(p, xs) -> np.ndarray:
    """Closed form in float64: ``J = W2 diag(1 - tanh(W1 x + b1)^2) W1``, ``[n, k, d]``."""
    W1, b1, W2 = (np.asarray(p[k], np.float64) for k in ("W1", "b1", "W2"))
    g = 1.0 - np.tanh(np.asarray(xs, np.float64) @ W1.T + b1) ** 2
    return np.einsum("kh,nh,hd->nkd", W2, g, W1)


def reference_stats(J: np.ndarray) -> dict[str, np.ndarray]:
    n = len(J)
    return {
        "mean_abs": np.abs(J).mean(0),
        "mean": J.mean(0),
        "std": J.std(0, ddof=1),
        "rms": np.sqrt((J**2).mean(0)),
        "stderr": np.abs(J).std(0, ddof=1) / np.sqrt(n),
    }


def data(n, d=6, seed=1, loc=0.3, scale=1.5):
    return (loc + scale * np.random.default_rng(seed).normal(size=(n, d))).astype(np.float32)


def assert_results_close(a: JacobianImportance, b: JacobianImportance, rtol):
    for name in STATS:
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max(), err_msg=name)


class CompileCounter:
    """Counts XLA backend compilations (a public jax.monitoring event) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __enter__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._on)
        return self

    def _on(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._on)


# ------------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_linear_model_mean_jacobian_is_the_weight_matrix_exactly(mode):
    W = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    m = Model.from_function(lambda p, x: p @ x, W, input_shape=(5,))
    r = jacobian_importance(m, data(777, d=5), batch_size=64, mode=mode)
    assert r.mode == mode and r.n_samples == 777
    np.testing.assert_array_equal(r.mean, W)
    np.testing.assert_array_equal(r.mean_abs, np.abs(W))
    np.testing.assert_array_equal(r.rms, np.abs(W))
    np.testing.assert_array_equal(r.std, 0.0)
    np.testing.assert_array_equal(r.stderr, 0.0)


def test_tanh_network_matches_closed_form_float64():
    m = tanh_model(0)
    xs = data(5000)
    r = jacobian_importance(m, xs, batch_size=BS)
    ref = reference_stats(tanh_jacobians(m.params, xs))
    for name in STATS:
        np.testing.assert_allclose(getattr(r, name), ref[name], rtol=2e-5, err_msg=name)
    assert r.importance is r.mean_abs
    assert r.output_names == ("y0", "y1", "y2") and r.feature_names == tuple(f"x{i}" for i in range(6))
    np.testing.assert_allclose(r.input_mean, xs.astype(np.float64).mean(0), rtol=1e-5)
    np.testing.assert_allclose(r.input_std, xs.astype(np.float64).std(0, ddof=1), rtol=1e-5)


def test_float32_compute_meets_a_float64_reference_on_200k_rows():
    m = tanh_model(3, d=8, h=32, k=2)
    xs = data(200_000, d=8, seed=5, loc=1.0, scale=2.0)
    r = jacobian_importance(m, xs)
    ref = reference_stats(tanh_jacobians(m.params, xs))
    rel = np.abs(r.mean_abs / ref["mean_abs"] - 1).max()
    assert rel < 1e-6, rel  # the bar for 1e6 rows is 1e-5; chunk errors do not accumulate
    np.testing.assert_allclose(r.mean, ref["mean"], rtol=1e-5, atol=1e-6 * np.abs(ref["mean"]).max())


def _softmax_onnx(W1, b1, W2, b2):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d, k = W1.shape[0], W2.shape[1]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["z0"]),
        helper.make_node("Add", ["z0", "b2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["p"], axis=-1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((W1, "W1"), (b1, "b1"), (W2, "W2"), (b2, "b2"))]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, d])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, k])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(proto)
    return proto


def test_onnx_softmax_network_matches_closed_form():
    rng = np.random.default_rng(4)
    W1, b1 = rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=7).astype(np.float32)
    W2, b2 = rng.normal(size=(7, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    m = Model.from_onnx(_softmax_onnx(W1, b1, W2, b2))
    xs = data(3000, d=5)
    r = jacobian_importance(m, xs, batch_size=BS)
    x = xs.astype(np.float64)
    g = 1.0 - np.tanh(x @ W1 + b1) ** 2  # [n, h]
    z = np.tanh(x @ W1 + b1) @ W2 + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dp_dz = np.einsum("nk,kl->nkl", p, np.eye(3)) - np.einsum("nk,nl->nkl", p, p)
    J = np.einsum("nkl,hl,nh,dh->nkd", dp_dz, W2.astype(np.float64), g, W1.astype(np.float64))
    ref = reference_stats(J)
    for name in STATS:
        np.testing.assert_allclose(getattr(r, name), ref[name], rtol=5e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(r.mean.sum(0), 0.0, atol=1e-6)  # probabilities sum to one


# --------------------------------------------------------------------------------------- invariants
def test_forward_and_reverse_mode_agree_and_auto_picks_the_cheaper_one():
    xs = data(600)
    narrow = tanh_model(0)  # 3 outputs < 6 inputs
    wide = tanh_model(1, d=3, k=7)  # 7 outputs > 3 inputs
    for m, auto in ((narrow, "reverse"), (wide, "forward")):
        x = xs[:, : m.input_shape[0]]
        rev = jacobian_importance(m, x, mode="reverse", batch_size=BS)
        fwd = jacobian_importance(m, x, mode="forward", batch_size=BS)
        assert_results_close(rev, fwd, rtol=1e-6)
        assert jacobian_importance(m, x, batch_size=BS).mode == auto


def test_batch_size_and_ragged_chunks_do_not_change_results():
    m = tanh_model(2)
    xs = data(1001)
    results = [jacobian_importance(m, xs, batch_size=b) for b in (BS, 7, 1001, 4096)]
    for r in results[1:]:
        assert r.n_samples == 1001
        assert_results_close(r, results[0], rtol=1e-6)


def test_one_compile_for_a_ragged_data_set_and_none_for_new_weights():
    m = tanh_model(5)
    with CompileCounter() as c:
        jacobian_importance(m, data(1000), batch_size=37)  # 27 full chunks + 1 padded chunk of 1 row
    assert c.count == 1
    other = m.with_params(tanh_params(6))  # weekly retrain: same architecture, other weights
    with CompileCounter() as c:
        r = jacobian_importance(other, data(500, seed=9), batch_size=37)
    assert c.count == 0
    np.testing.assert_allclose(
        r.mean, reference_stats(tanh_jacobians(other.params, data(500, seed=9)))["mean"], rtol=2e-5, atol=1e-7
    )


def test_outputs_by_index_or_name_select_rows_and_cost_proportionally_less():
    p = tanh_params(7, d=40, h=64, k=10)
    m = Model.from_function(tanh_net, p, input_shape=(40,), output_names=[f"class_{i}" for i in range(10)])
    xs = data(300, d=40)
    full = jacobian_importance(m, xs, batch_size=BS)
    one = jacobian_importance(m, xs, batch_size=BS, outputs="class_3")
    two = jacobian_importance(m, xs, batch_size=BS, outputs=[7, -1])
    assert one.output_names == ("class_3",) and one.mean_abs.shape == (1, 40)
    assert two.output_names == ("class_7", "class_9")
    for name in STATS:
        np.testing.assert_allclose(getattr(one, name), getattr(full, name)[[3]], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(getattr(two, name), getattr(full, name)[[7, 9]], rtol=1e-6, atol=1e-9)

    def flops(outputs):  # XLA's cost model of the lowered kernel (no compile)
        args = (m, jnp.zeros((BS, 40)), jnp.ones(BS, bool), jnp.zeros(BS, jnp.uint32))
        lowered = _jacobian_kernel.lower(
            *args, mode="reverse", outputs=outputs, correlate=True, precision="float32"
        )
        cost = lowered.cost_analysis()
        return (cost[0] if isinstance(cost, list | tuple) else cost)["flops"]

    assert flops((3,)) < 0.35 * flops(None)


def test_scale_std_equals_the_jacobian_of_the_model_on_standardised_inputs():
    m = tanh_model(8)
    rng = np.random.default_rng(3)
    units = np.array([0.01, 1.0, 100.0, 5.0, 0.5, 20.0], np.float32)
    xs = (rng.normal(size=(2000, 6)) * units).astype(np.float32)
    scaled = jacobian_importance(m, xs, scale="std", batch_size=BS)
    raw = jacobian_importance(m, xs, batch_size=BS)
    s = xs.astype(np.float64).std(0, ddof=1)
    np.testing.assert_allclose(scaled.input_std, s, rtol=1e-5)
    for name in STATS:
        np.testing.assert_allclose(getattr(scaled, name), getattr(raw, name) * s, rtol=1e-6, err_msg=name)
    # independent oracle: g(z) = f(z * s) on z = x / s has dg/dz = J(x) * s
    s32 = s.astype(np.float32)
    g = Model.from_function(lambda p, z: tanh_net(p, z * s32), m.params, input_shape=(6,))
    oracle = jacobian_importance(g, xs / s32, batch_size=BS)
    assert_results_close(scaled, oracle, rtol=1e-4)
    assert scaled.scale == "std"


def test_correlated_inputs_warn_in_the_same_pass_and_are_stored():
    m = tanh_model(0)
    xs = data(3000)
    xs[:, 4] = -2.0 * xs[:, 1] + 0.05 * xs[:, 4]
    with pytest.warns(CorrelatedInputsWarning, match=r"x1 ~ x4 \(r=-1\.000\)"):
        r = jacobian_importance(m, xs, batch_size=BS)
    ((a, b, rho),) = r.correlated_pairs
    assert (a, b) == ("x1", "x4") and rho == pytest.approx(
        np.corrcoef(xs.T.astype(np.float64))[1, 4], abs=1e-6
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorrelatedInputsWarning)
        assert jacobian_importance(m, data(3000), batch_size=BS).correlated_pairs == ()


def test_sequence_inputs_and_by_feature_match_closed_form(tmp_path):
    T, F, H, k = 4, 3, 5, 2
    rng = np.random.default_rng(11)
    p = {
        "U": rng.normal(size=(F, H)).astype(np.float32),
        "w": np.array([0.5, -1.0, 2.0, 0.25], np.float32),
        "V": rng.normal(size=(k, H)).astype(np.float32),
    }

    def seq_net(p, x):  # x [T, F]
        return p["V"] @ jnp.tanh(jnp.einsum("t,tf,fh->h", p["w"], x, p["U"]))

    m = Model.from_function(seq_net, p, input_shape=(T, F), feature_names=["temp", "wind", "rain"])
    xs = rng.normal(size=(900, T, F)).astype(np.float32)
    r = jacobian_importance(m, xs, batch_size=BS)
    U, w, V = (p[n].astype(np.float64) for n in ("U", "w", "V"))
    g = 1.0 - np.tanh(np.einsum("t,ntf,fh->nh", w, xs.astype(np.float64), U)) ** 2
    J = np.einsum("kh,nh,fh,t->nktf", V, g, U, w)  # [n, k, T, F]
    ref = reference_stats(J)
    assert r.mean_abs.shape == (k, T, F)
    for name in STATS:
        np.testing.assert_allclose(getattr(r, name), ref[name], rtol=2e-5, atol=1e-8, err_msg=name)
    per_feature = r.by_feature()
    agg_abs, agg = np.abs(J).sum(2), J.sum(2)  # [n, k, F]
    assert per_feature.input_shape == (F,) and per_feature.feature_names == ("temp", "wind", "rain")
    np.testing.assert_allclose(per_feature.mean_abs, agg_abs.mean(0), rtol=2e-5)
    np.testing.assert_allclose(per_feature.stderr, agg_abs.std(0, ddof=1) / np.sqrt(900), rtol=2e-5)
    np.testing.assert_allclose(per_feature.mean, agg.mean(0), rtol=2e-5, atol=1e-8)
    np.testing.assert_allclose(per_feature.std, agg.std(0, ddof=1), rtol=2e-5)
    np.testing.assert_allclose(per_feature.rms, np.sqrt((agg**2).mean(0)), rtol=2e-5)
    assert per_feature.by_feature() is per_feature
    r.save(tmp_path / "seq.json")
    back = load_result(tmp_path / "seq.json").by_feature()
    for name in STATS:
        np.testing.assert_array_equal(getattr(back, name), getattr(per_feature, name))
    labels = [name for name, _, _ in r.ranking(output=0)]
    assert len(labels) == T * F and set(labels) == {
        f"{f}[{t}]" for t in range(T) for f in ("temp", "wind", "rain")
    }


def test_multi_device_sharding_gives_the_single_device_result(tmp_path):
    xs = data(2003)
    np.save(tmp_path / "x.npy", xs)
    script = textwrap.dedent(
        f"""
        import json, sys, jax, numpy as np
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_jacobian import tanh_model
        from jaxsens import _jacobian
        assert len(jax.local_devices()) == 4, jax.local_devices()
        seen = []
        kernel = _jacobian._jacobian_kernel
        def spy(model, xs, mask, row_index, **kw):
            seen.append(len(xs.sharding.device_set))
            return kernel(model, xs, mask, row_index, **kw)
        _jacobian._jacobian_kernel = spy
        m = tanh_model(0)
        r4 = _jacobian.jacobian_importance(m, {str(tmp_path / "x.npy")!r}, batch_size={BS})
        r1 = _jacobian.jacobian_importance(m, {str(tmp_path / "x.npy")!r}, batch_size={BS},
                                           devices=jax.local_devices()[:1])
        assert set(seen) == {{4, 1}}, seen
        r4.save({str(tmp_path / "r4.json")!r}); r1.save({str(tmp_path / "r1.json")!r})
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r4, r1 = load_result(tmp_path / "r4.json"), load_result(tmp_path / "r1.json")
    here = jacobian_importance(tanh_model(0), xs, batch_size=BS)
    assert r4.n_samples == r1.n_samples == 2003
    assert_results_close(r4, r1, rtol=1e-6)
    assert_results_close(r4, here, rtol=1e-6)


# ------------------------------------------------------------------------------------- data, errors
def test_data_from_csv_names_the_features_and_equals_the_array(tmp_path):
    m = tanh_model(0)
    xs = data(500)
    path = tmp_path / "rows.csv"
    with open(path, "w") as f:
        f.write("a,b,c,d,e,f\n")
        np.savetxt(f, xs, fmt="%.9g", delimiter=",")
    from_csv = jacobian_importance(m, str(path), batch_size=BS)
    from_array = jacobian_importance(m, xs, batch_size=BS)
    assert from_csv.feature_names == ("a", "b", "c", "d", "e", "f")
    for name in STATS:
        np.testing.assert_array_equal(getattr(from_csv, name), getattr(from_array, name))
    batches = (xs[i : i + 33] for i in range(0, 500, 33))
    assert_results_close(jacobian_importance(m, batches, batch_size=BS), from_array, rtol=1e-6)


def test_nan_rows_raise_or_are_skipped_and_counted():
    m = tanh_model(0)
    xs = data(400)
    dirty = xs.copy()
    dirty[123, 0] = np.nan
    dirty[399, 5] = np.inf
    with pytest.raises(ValueError, match="data row 123 holds NaN or Inf"):
        jacobian_importance(m, dirty, batch_size=BS)
    r = jacobian_importance(m, dirty, batch_size=BS, nan_policy="skip")
    clean = jacobian_importance(m, np.delete(xs, [123, 399], axis=0), batch_size=BS)
    assert r.n_skipped == 2 and r.n_samples == 398
    assert_results_close(r, clean, rtol=1e-6)
    with pytest.raises(ValueError, match=r"no usable rows \(3 rows skipped"):
        jacobian_importance(m, np.full((3, 6), np.nan, np.float32), nan_policy="skip")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"data": np.zeros((10, 5))},
            ValueError,
            r"data has shape \[10, 5\]; the model expects \[n_samples, 6\]",
        ),
        (
            {"mode": "backward"},
            ValueError,
            r"mode must be one of \('auto', 'reverse', 'forward'\), got 'backward'",
        ),
        ({"scale": "minmax"}, ValueError, r"scale must be None or 'std', got 'minmax'"),
        ({"outputs": "y9"}, ValueError, r"unknown output 'y9'; the model's outputs are \['y0', 'y1', 'y2'\]"),
        ({"outputs": 3}, ValueError, r"index 3 is out of range for a model with 3 outputs"),
        ({"outputs": [0, 0]}, ValueError, r"repeats an output"),
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive integer, got 0"),
        ({"precision": "fp8"}, ValueError, r"precision must be one of"),
        ({"progress": "yes"}, TypeError, r"progress must be None, True or a callable"),
    ],
)
def test_bad_arguments_are_rejected_with_the_fix(kwargs, error, match):
    kwargs = {"data": data(10), **kwargs}
    with pytest.raises(error, match=match):
        jacobian_importance(tanh_model(0), kwargs.pop("data"), **kwargs)


def test_progress_callback_counts_rows_to_the_total():
    calls = []
    jacobian_importance(
        tanh_model(0), data(300), batch_size=BS, progress=lambda done, total: calls.append((done, total))
    )
    assert [c[0] for c in calls] == [128, 256, 300] and {c[1] for c in calls} == {300}


# ------------------------------------------------------------------------------------------ results
def test_save_and_load_are_lossless_and_atomic(tmp_path):
    m = tanh_model(0)
    xs = data(300)
    xs[:, 2] = 0.99 * xs[:, 0] + 0.01 * xs[:, 2]
    with pytest.warns(CorrelatedInputsWarning):
        r = jacobian_importance(m, xs, batch_size=BS, outputs=[2, 0], scale="std")
    path = tmp_path / "importance.json"
    r.save(path)
    assert os.listdir(tmp_path) == ["importance.json"]  # no temporary file left behind
    back = load_result(path)
    assert type(back) is JacobianImportance
    for f in ("mean_abs", "mean", "std", "rms", "stderr", "input_mean", "input_std"):
        a, b = getattr(r, f), getattr(back, f)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), f
    for f in (
        "n_samples",
        "feature_names",
        "output_names",
        "input_shape",
        "mode",
        "scale",
        "n_skipped",
        "correlated_pairs",
        "time_aggregate",
    ):
        assert getattr(back, f) == getattr(r, f), f
    json.loads(path.read_text())  # strict JSON
    odd = JacobianImportance(
        *(np.array([[np.nan, np.inf, -np.inf, 0.1]]),) * 5,
        n_samples=1,
        feature_names=("a", "b", "c", "d"),
        output_names=("y",),
        input_shape=(4,),
    )
    odd.save(path)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    np.testing.assert_array_equal(load_result(path).mean, odd.mean)
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="is not a jaxsens result file"):
        load_result(tmp_path / "other.json")


def test_ranking_and_tidy_frame():
    W = np.array([[1.0, -4.0, 2.0], [0.0, 1.0, -8.0]], np.float32)
    m = Model.from_function(
        lambda p, x: p @ x, W, input_shape=(3,), feature_names=["a", "b", "c"], output_names=["u", "v"]
    )
    r = jacobian_importance(m, data(50, d=3), batch_size=16)
    assert [n for n, _, _ in r.ranking()] == ["c", "b", "a"]  # mean over outputs: 5, 2.5, 0.5
    assert [n for n, _, _ in r.ranking(output="u")] == ["b", "c", "a"]
    assert r.ranking(output=1)[0] == ("c", 8.0, 0.0)
    df = r.to_frame()
    assert list(df.columns) == ["output", "feature", "mean_abs", "mean", "std", "rms", "stderr", "rank"]
    assert len(df) == 6
    row = df[(df.output == "v") & (df.feature == "c")].iloc[0]
    assert row["mean"] == -8.0 and row["rank"] == 1


def test_plots_return_figures_and_save(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = jacobian_importance(tanh_model(0), data(200), batch_size=BS)
    fig = flat.plot(path=tmp_path / "flat.png")
    assert isinstance(fig, matplotlib.figure.Figure) and (tmp_path / "flat.png").stat().st_size > 0
    bars = fig.axes[0].patches
    widths = [b.get_width() for b in bars]
    assert len(bars) == 6 and widths == sorted(widths)  # largest on top
    seq = Model.from_function(
        lambda p, x: jnp.tanh(x @ p).sum(0), np.ones((3, 2), np.float32), input_shape=(5, 3)
    )
    fig2 = jacobian_importance(seq, np.random.default_rng(0).normal(size=(64, 5, 3)), batch_size=64).plot(
        output=1, path=tmp_path / "seq.png"
    )
    assert fig2.axes[0].images[0].get_array().shape == (5, 3)  # time x feature heatmap
    assert (tmp_path / "seq.png").stat().st_size > 0
    plt.close("all")


def test_softmax_head_takes_one_backward_pass_fewer_and_agrees():
    """A softmax output's Jacobian rows sum to zero: K - 1 reverse passes, same statistics as full jacrev."""
    import jaxsens
    from jaxsens import _jacobian, examples

    model = jaxsens.load_model(examples.default_model_path())  # ... -> Dense(2) -> Softmax
    assert _jacobian._softmax_head(model)
    xs = np.load(examples.default_data_path())[:512]
    got = jaxsens.jacobian_importance(model, xs, batch_size=128)
    full = np.asarray(jax.vmap(jax.jacrev(model.apply, argnums=1), (None, 0))(model.params, xs), np.float64)
    np.testing.assert_allclose(got.mean_abs, np.abs(full).mean(0), rtol=2e-5, atol=1e-9)
    np.testing.assert_allclose(got.mean, full.mean(0), rtol=2e-4, atol=1e-8)
    np.testing.assert_allclose(got.std, full.std(0, ddof=1), rtol=2e-4, atol=1e-8)
    x = jax.ShapeDtypeStruct((128, 82), jnp.float32)

    def flops(sums_to_one):
        kernel = _jacobian._per_sample_jacobian(model, "reverse", None, sums_to_one)
        return jax.jit(jax.vmap(kernel)).lower(x).compile().cost_analysis()["flops"]

    assert flops(True) < 0.8 * flops(False)
