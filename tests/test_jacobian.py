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
from _tol import assert_f32_close, f32_tol

from jaxsens import JacobianImportance
from jaxsens._jacobian import _jacobian_kernel, jacobian_importance
from jaxsens._model import Model
from jaxsens._results import load_result
from jaxsens._stats import CorrelatedInputsWarning

STATS = ("mean_abs", "mean", "std", "rms", "stderr")
BS = 128  # one batch size for most tests: the default model's kernel compiles once for the whole file
TANH_CHAIN = 6 + 16 + 3  # float32 roundings in one row's J of tanh_model(): fan-ins d and h, bias, tanh, 1 - g^2


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


def _stat(r, name):
    return r[name] if isinstance(r, dict) else getattr(r, name)


def assert_stats_f32_close(got, want, *, n_terms: int, n_rows: int, probabilistic: bool = False):
    """Every statistic within the float32 bound of tests/_tol.py, for ``n_terms`` roundings per accumulation.

    The terms summed are per-row Jacobian elements of the size of ``max(mean_abs, rms)`` (the signed ``mean`` can be
    smaller through cancellation, its terms are not). ``std`` and ``stderr`` come from sums of squared deviations
    about a shift (the first row), up to ~10x the variance: a factor 5 on the relative error of the root.
    """
    scale = max(np.abs(_stat(want, "mean_abs")).max(), np.abs(_stat(want, "rms")).max())
    size = {"mean_abs": scale, "mean": scale, "rms": scale, "std": 5 * scale, "stderr": 5 * scale / np.sqrt(n_rows)}
    for name in STATS:
        assert_f32_close(_stat(got, name), _stat(want, name), n_terms=n_terms, magnitude=size[name],
                         probabilistic=probabilistic, err_msg=name)


def assert_results_close(a: JacobianImportance, b: JacobianImportance, *, n_terms: int):
    """Two float32 runs over the same rows: ``n_terms`` counts the roundings of both."""
    assert a.n_samples == b.n_samples
    assert_stats_f32_close(a, b, n_terms=n_terms, n_rows=b.n_samples)


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
    assert_stats_f32_close(r, ref, n_terms=BS + TANH_CHAIN, n_rows=len(xs))  # float32 sums of one chunk
    assert r.importance is r.mean_abs
    assert r.output_names == ("y0", "y1", "y2") and r.feature_names == tuple(f"x{i}" for i in range(6))
    x64 = xs.astype(np.float64)
    # float32 chunk sums of the inputs (exact in float32) about a shift; terms of the size of |x|, (x - shift)^2
    assert_f32_close(r.input_mean, x64.mean(0), n_terms=BS, magnitude=np.abs(x64).mean(0))
    assert_f32_close(r.input_std, x64.std(0, ddof=1), n_terms=BS + 2, magnitude=5 * x64.std(0, ddof=1))


def test_float32_compute_meets_a_float64_reference_on_200k_rows():
    m = tanh_model(3, d=8, h=32, k=2)
    xs = data(200_000, d=8, seed=5, loc=1.0, scale=2.0)
    r = jacobian_importance(m, xs, batch_size=4096)
    ref = reference_stats(tanh_jacobians(m.params, xs))
    assert r.n_samples == 200_000
    # chunk errors do not accumulate: each float32 sum covers one chunk of 4096 rows (probabilistic bound: the
    # worst case, linear in n, says little here), chunks merge in float64
    chain = 8 + 32 + 3
    for name in ("mean_abs", "mean", "rms"):
        assert_f32_close(getattr(r, name), ref[name], n_terms=4096 + chain, probabilistic=True,
                         magnitude=np.abs(ref["rms"]).max(), err_msg=name)


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
    chain = 5 + 7 + 3 + 3 * 3  # fan-ins 5 and 7, bias, tanh, softmax (exp, sum of 3, divide) and its derivative
    assert_stats_f32_close(r, ref, n_terms=BS + chain, n_rows=len(xs))
    # probabilities sum to one: the 3 rows of J cancel, up to the rounding of each
    assert_f32_close(r.mean.sum(0), np.zeros(5), n_terms=BS + chain + 3, magnitude=3 * np.abs(ref["rms"]).max())


# --------------------------------------------------------------------------------------- invariants
def test_forward_and_reverse_mode_agree_and_auto_picks_the_cheaper_one():
    xs = data(600)
    narrow = tanh_model(0)  # 3 outputs < 6 inputs
    wide = tanh_model(1, d=3, k=7)  # 7 outputs > 3 inputs
    for m, auto in ((narrow, "reverse"), (wide, "forward")):
        x = xs[:, : m.input_shape[0]]
        rev = jacobian_importance(m, x, mode="reverse", batch_size=BS)
        fwd = jacobian_importance(m, x, mode="forward", batch_size=BS)
        assert_results_close(rev, fwd, n_terms=2 * (BS + TANH_CHAIN))
        assert jacobian_importance(m, x, batch_size=BS).mode == auto


def test_batch_size_and_ragged_chunks_do_not_change_results():
    m = tanh_model(2)
    xs = data(1001)
    results = [jacobian_importance(m, xs, batch_size=b) for b in (BS, 7, 1001, 4096)]
    for b, r in zip((7, 1001, 4096), results[1:]):
        assert r.n_samples == 1001
        assert_results_close(r, results[0], n_terms=min(b, 1001) + BS + 2 * TANH_CHAIN)


def test_one_compile_for_a_ragged_data_set_and_none_for_new_weights():
    m = tanh_model(5)
    with CompileCounter() as c:
        jacobian_importance(m, data(1000), batch_size=37)  # 27 full chunks + 1 padded chunk of 1 row
    assert c.count == 1
    other = m.with_params(tanh_params(6))  # weekly retrain: same architecture, other weights
    with CompileCounter() as c:
        r = jacobian_importance(other, data(500, seed=9), batch_size=37)
    assert c.count == 0
    ref = reference_stats(tanh_jacobians(other.params, data(500, seed=9)))
    assert_f32_close(r.mean, ref["mean"], n_terms=37 + TANH_CHAIN, magnitude=np.abs(ref["rms"]).max())


def test_outputs_by_index_or_name_select_rows_and_cost_proportionally_less():
    p = tanh_params(7, d=40, h=64, k=10)
    m = Model.from_function(tanh_net, p, input_shape=(40,), output_names=[f"class_{i}" for i in range(10)])
    xs = data(300, d=40)
    full = jacobian_importance(m, xs, batch_size=BS)
    one = jacobian_importance(m, xs, batch_size=BS, outputs="class_3")
    two = jacobian_importance(m, xs, batch_size=BS, outputs=[7, -1])
    assert one.output_names == ("class_3",) and one.mean_abs.shape == (1, 40)
    assert two.output_names == ("class_7", "class_9")
    n_terms = 2 * (BS + 40 + 64 + 3)  # the same rows; fewer cotangents may vectorise the backward pass otherwise
    assert_stats_f32_close(one, {n: getattr(full, n)[[3]] for n in STATS}, n_terms=n_terms, n_rows=len(xs))
    assert_stats_f32_close(two, {n: getattr(full, n)[[7, 9]] for n in STATS}, n_terms=n_terms, n_rows=len(xs))

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
    # the streamed std: float32 chunk sums of squared deviations about a shift (up to ~10x the variance)
    assert_f32_close(scaled.input_std, s, n_terms=BS + 2, magnitude=5 * s)
    for name in STATS:  # the same statistics times that std: its relative error, plus one product
        assert_f32_close(getattr(scaled, name), getattr(raw, name) * s, n_terms=BS + 3,
                         magnitude=5 * np.abs(getattr(raw, name) * s), err_msg=name)
    # independent oracle: g(z) = f(z * s) on z = x / s has dg/dz = J(x) * s
    s32 = s.astype(np.float32)
    g = Model.from_function(lambda p, z: tanh_net(p, z * s32), m.params, input_shape=(6,))
    oracle = jacobian_importance(g, xs / s32, batch_size=BS)
    # z * s differs from x by 2 roundings; tanh'' <= 0.77 turns that into a relative change of J of at most
    # 0.77 * 2 eps * max sum_j |W1_hj x_j|: that many more "terms"; and s differs from the float32 s32 as above
    drift = int(np.ceil(1.6 * (np.abs(xs) @ np.abs(m.params["W1"]).T).max()))
    assert_results_close(scaled, oracle, n_terms=2 * (BS + TANH_CHAIN + 5) + drift)
    assert scaled.scale == "std"


def test_correlated_inputs_warn_in_the_same_pass_and_are_stored():
    m = tanh_model(0)
    xs = data(3000)
    xs[:, 4] = -2.0 * xs[:, 1] + 0.05 * xs[:, 4]
    with pytest.warns(CorrelatedInputsWarning, match=r"x1 ~ x4 \(r=-1\.000\)"):
        r = jacobian_importance(m, xs, batch_size=BS)
    ((a, b, rho),) = r.correlated_pairs
    # from float32 co-moment sums (3 of them, about a shift) of one chunk each
    assert (a, b) == ("x1", "x4") and rho == pytest.approx(
        np.corrcoef(xs.T.astype(np.float64))[1, 4], abs=f32_tol(5, 3 * (BS + 2))
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
    chain = T * F + H + 3  # the pre-activation sums T * F products, the output H; bias-free tanh, 1 - g^2
    assert_stats_f32_close(r, ref, n_terms=BS + chain, n_rows=len(xs))
    per_feature = r.by_feature()
    agg_abs, agg = np.abs(J).sum(2), J.sum(2)  # [n, k, F]
    assert per_feature.input_shape == (F,) and per_feature.feature_names == ("temp", "wind", "rain")
    want = {"mean_abs": agg_abs.mean(0), "stderr": agg_abs.std(0, ddof=1) / np.sqrt(900), "mean": agg.mean(0),
            "std": agg.std(0, ddof=1), "rms": np.sqrt((agg**2).mean(0))}
    assert_stats_f32_close(per_feature, want, n_terms=BS + chain + T, n_rows=len(xs))  # + the sum over T
    assert per_feature.by_feature() is per_feature
    r.save(tmp_path / "seq.json")
    back = load_result(tmp_path / "seq.json").by_feature()
    for name in STATS:
        np.testing.assert_array_equal(getattr(back, name), getattr(per_feature, name))
    labels = [name for name, _, _ in r.ranking(output=0, by="element")]
    assert len(labels) == T * F and set(labels) == {
        f"{f}[{t}]" for t in range(T) for f in ("temp", "wind", "rain")
    }
    # by feature (the default): the exact time aggregate, ranked
    by_f = {name: (v, e) for name, v, e in r.ranking(output=0)}
    for j, name in enumerate(("temp", "wind", "rain")):
        assert by_f[name] == (per_feature.importance[0, j], per_feature.stderr[0, j])


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
        kernel = _jacobian.SPEC.kernel
        def spy(model, xs, mask, row_index, **kw):
            seen.append(len(xs.sharding.device_set))
            return kernel(model, xs, mask, row_index, **kw)
        object.__setattr__(_jacobian.SPEC, "kernel", spy)  # the spec is frozen; a test may look inside
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
    assert_results_close(r4, r1, n_terms=2 * (BS + TANH_CHAIN))
    assert_results_close(r4, here, n_terms=2 * (BS + TANH_CHAIN))


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
    assert_results_close(jacobian_importance(m, batches, batch_size=BS), from_array, n_terms=2 * (BS + TANH_CHAIN))


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
    assert_results_close(r, clean, n_terms=2 * (BS + TANH_CHAIN))  # other chunk boundaries: other rounding
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
            r"mode must be one of \['auto', 'reverse', 'forward'\], got 'backward'",
        ),
        ({"scale": "minmax"}, ValueError, r"scale must be None or one of \['std'\], got 'minmax'"),
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
        **dict.fromkeys(("importance", "stderr", "mean", "std", "rms"), np.array([[np.nan, np.inf, -np.inf, 0.1]])),
        method="jacobian",
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
    assert list(df.columns) == [
        "feature", "output", "importance", "stderr", "ci_low", "ci_high", "rank", "mean", "std", "rms"
    ]
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
    assert model.outputs_sum_to_one
    xs = np.load(examples.default_data_path())[:512]
    got = jaxsens.jacobian_importance(model, xs, batch_size=128)
    full = np.asarray(jax.vmap(jax.jacrev(model.apply, argnums=1), (None, 0))(model.params, xs), np.float64)
    # both float32: the last row is minus the sum of the others (1 more term); chunk sums of 128 rows; the network
    # sums fan-ins 82 + 64 + 64 + 64 forward and backward
    n_terms = 128 + 2 * (82 + 64 + 64 + 64) + 1
    ref = reference_stats(full)
    for name in ("mean_abs", "mean", "std"):
        assert_f32_close(getattr(got, name), ref[name], n_terms=n_terms,
                         magnitude=(5 if name == "std" else 1) * np.abs(ref["rms"]).max(), err_msg=name)
    x = jax.ShapeDtypeStruct((128, 82), jnp.float32)

    def flops(sums_to_one):
        kernel = _jacobian._per_sample_jacobian(model, "reverse", None, sums_to_one)
        return jax.jit(jax.vmap(kernel)).lower(x).compile().cost_analysis()["flops"]

    assert flops(True) < 0.8 * flops(False)


# ------------------------------------------------------------------- recurrences: default chunk (issue 14)
RNN_T, RNN_F, RNN_H = 6, 3, 5


def rnn_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "U": (rng.normal(size=(RNN_H, RNN_F)) / np.sqrt(RNN_F)).astype(np.float32),
        "W": (rng.normal(size=(RNN_H, RNN_H)) / np.sqrt(RNN_H)).astype(np.float32),
        "v": rng.normal(size=RNN_H).astype(np.float32),
    }


def rnn_net(p, x):
    """``h_t = tanh(W h_{t-1} + U x_t)`` in ``lax.scan``; outputs ``v . h_t`` for every step, ``[T]``."""

    def step(h, x_t):
        h = jnp.tanh(p["W"] @ h + p["U"] @ x_t)
        return h, p["v"] @ h

    return jax.lax.scan(step, jnp.zeros(RNN_H, x.dtype), x)[1]


def rnn_jacobians(p, xs) -> np.ndarray:
    """Closed form in float64, ``[n, T, T, F]``: ``dh_t = diag(1 - h_t^2) (W dh_{t-1} + U dx_t)`` forward in time."""
    U, W, v = (np.asarray(p[k], np.float64) for k in ("U", "W", "v"))
    xs = np.asarray(xs, np.float64)
    n = len(xs)
    out = np.zeros((n, RNN_T, RNN_T, RNN_F))
    h = np.zeros((n, RNN_H))
    dh = np.zeros((n, RNN_H, RNN_T, RNN_F))  # d h_t / d x
    for t in range(RNN_T):
        h = np.tanh(h @ W.T + xs[:, t] @ U.T)
        dz = np.einsum("ij,njsf->nisf", W, dh)
        dz[:, :, t, :] += U
        dh = (1.0 - h**2)[:, :, None, None] * dz
        out[:, t] = np.einsum("i,nisf->nsf", v, dh)
    return out


def test_recurrent_models_default_to_small_chunks_on_cpu_with_the_same_results():
    from jaxsens import _engine
    from jaxsens._jacobian import _LOOP_ROWS_CPU, _bytes_per_sample, _has_loops

    m = Model.from_function(rnn_net, rnn_params(), input_shape=(RNN_T, RNN_F))
    assert _has_loops(m, jax.ShapeDtypeStruct((RNN_T, RNN_F), jnp.float32))
    assert not _has_loops(tanh_model(0), jax.ShapeDtypeStruct((6,), jnp.float32))
    if jax.local_devices()[0].platform == "cpu":
        per_sample = _bytes_per_sample(m, "reverse", None)
        assert _engine.choose_batch_size(per_sample, n_rows=10**6) == _LOOP_ROWS_CPU * jax.local_device_count()
        assert _engine.choose_batch_size(_bytes_per_sample(tanh_model(0), "reverse", None), n_rows=10**6) > 256
    xs = (0.5 * np.random.default_rng(3).normal(size=(700, RNN_T, RNN_F))).astype(np.float32)
    ref = reference_stats(rnn_jacobians(rnn_params(), xs))
    default = jacobian_importance(m, xs)  # 700 rows: 2 full chunks of 256 + 1 padded
    wide = jacobian_importance(m, xs, batch_size=512)  # the chunk the memory bound alone gave before
    chain = RNN_T * (RNN_H + RNN_F + 3)  # roundings along one element's path through the recurrence
    assert_results_close(default, wide, n_terms=2 * (512 + chain))
    for name in ("mean_abs", "mean", "rms"):
        assert_f32_close(_stat(default, name), ref[name], n_terms=512 + chain,
                         magnitude=np.abs(ref["rms"]).max())
