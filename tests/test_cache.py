"""JAX's persistent compilation cache (jaxsens/_cache.py): on at import, in the right folder, with a way out.

The oracle for "does not recompile" is JAX's own bookkeeping (``jax.monitoring`` events of its compilation
cache) in fresh processes, and the results of the two processes must be bit-identical (same executable).
"""

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

from jaxsens import _cache, examples
from jaxsens.cli import main

_SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_enable_compilation_cache",
    "jax_persistent_cache_min_compile_time_secs",
)


@pytest.fixture
def pristine():
    """JAX's cache settings as in a process that never set them; restored (and jaxsens's state) afterwards."""
    saved = {k: getattr(jax.config, k) for k in _SETTINGS}
    saved_state, saved_set = _cache.state(), _cache._set_dir
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    yield
    for k, v in saved.items():
        jax.config.update(k, v)
    _cache._state.clear()
    _cache._state.update(saved_state)
    _cache._set_dir = saved_set
    _cache._reset_jax_cache()


def _entries(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith("-cache")) if os.path.isdir(folder) else []


def test_default_folder_is_the_user_cache_folder():
    if sys.platform.startswith("linux"):  # CI's platform; macOS / Windows use their own conventions
        assert _cache.default_dir({"XDG_CACHE_HOME": "/scratch/c"}) == "/scratch/c/jaxsens/jax"
        assert _cache.default_dir({}) == os.path.join(os.path.expanduser("~"), ".cache", "jaxsens", "jax")


def test_env_folder_is_used_and_small_kernels_are_kept(pristine, tmp_path):
    folder = tmp_path / "c" / "d"
    _cache.enable_default({_cache.ENV: str(folder)})
    assert jax.config.jax_compilation_cache_dir == str(folder) and folder.is_dir()
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert _cache.state() == {"enabled": True, "dir": str(folder), "source": _cache.ENV}
    jax.jit(lambda x: jnp.sin(x) * 3.0 + 0.25)(jnp.arange(7.0)).block_until_ready()  # compiles in a few ms
    assert len(_entries(folder)) >= 1  # written although far below JAX's 1 s default threshold


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", "no", "none"])
def test_off_leaves_jax_alone(pristine, value):
    _cache.enable_default({_cache.ENV: value})
    assert jax.config.jax_compilation_cache_dir is None
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0
    assert _cache.state()["enabled"] is False and value in _cache.describe()


def test_a_process_that_configured_jax_keeps_its_setting(pristine, tmp_path):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    _cache.enable_default({_cache.ENV: str(tmp_path / "other")})
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    assert not (tmp_path / "other").exists() and "JAX's own setting" in _cache.describe()

    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_enable_compilation_cache", False)
    _cache.enable_default({_cache.ENV: str(tmp_path / "other")})
    assert jax.config.jax_compilation_cache_dir is None and not (tmp_path / "other").exists()
    assert _cache.state()["enabled"] is False


def test_a_changed_threshold_is_kept(pristine, tmp_path):
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 3.0)
    _cache.enable_default({_cache.ENV: str(tmp_path)})
    assert jax.config.jax_compilation_cache_dir == str(tmp_path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 3.0


def test_unwritable_folder_warns_and_computes_without_cache(pristine, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.warns(_cache.CompilationCacheWarning, match=r"a_file.*cannot be written.*JAXSENS_CACHE_DIR"):
        _cache.enable_default({_cache.ENV: str(blocker / "cache")})
    assert jax.config.jax_compilation_cache_dir is None and _cache.state()["enabled"] is False
    assert "not writable" in _cache.describe()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning per compile from JAX either
        out = jax.jit(lambda x: x * 2.0 + 1.0)(jnp.arange(3.0))
    np.testing.assert_array_equal(np.asarray(out), [1.0, 3.0, 5.0])


def test_info_prints_the_folder_and_no_cache_turns_it_off(pristine, tmp_path, capsys):
    _cache.enable(tmp_path / "c")
    assert main(["info"]) == 0
    assert f"compilation cache: {tmp_path / 'c'}" in capsys.readouterr().out
    assert main(["--no-cache", "info"]) == 0
    assert "compilation cache: off: --no-cache" in capsys.readouterr().out
    assert jax.config.jax_enable_compilation_cache is False


@pytest.mark.slow
def test_no_cache_writes_nothing_and_the_default_does(pristine, tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.load(examples.default_data_path())[:50])
    folder = tmp_path / "c"
    args = [
        "importance",
        examples.default_model_path(),
        str(data),
        "--quiet",
        "--no-plot",
        "--batch-size",
        "24",
    ]
    _cache.enable(folder)
    jax.clear_caches()  # this process's in-memory executables would hide the persistent cache
    assert main([*args, "--out", str(tmp_path / "a"), "--no-cache"]) == 0
    assert _entries(folder) == []
    _cache.enable(folder)
    jax.clear_caches()
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # the same run, cache on: the control
    assert len(_entries(folder)) >= 1


_CHILD = textwrap.dedent(
    """
    import json, sys
    import jax
    events = {}
    count = lambda name, **kw: events.__setitem__(name, events.get(name, 0) + 1)
    jax.monitoring.register_event_listener(count)
    import numpy as np
    import jaxsens
    from jaxsens import _cache
    from jaxsens._dense import dense_onnx

    def counts():
        c = {k.rsplit("/", 1)[-1]: v for k, v in events.items() if "compilation_cache" in k}
        events.clear()
        return c

    rng = np.random.default_rng(0)
    sizes = (6, 16, 16, 3)
    layers = [{"W": rng.normal(size=(a, b)), "b": rng.normal(size=b)} for a, b in zip(sizes[:-1], sizes[1:])]
    xs = rng.normal(size=(100, sizes[0])).astype(np.float32)
    model = jaxsens.Model.from_onnx(dense_onnx(layers, graph_name="cache_test"))
    traced = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, d, **kw: traced.append(kw.get("fun_name")) if name.endswith("jaxpr_trace_duration") else None)
    r = jaxsens.jacobian_importance(model, xs)  # the default chunk: sized by the (kept) memory analysis
    first, first_traces = counts(), list(traced)
    jaxsens.jacobian_importance(model, xs, batch_size=int(sys.argv[1]))  # a new chunk shape: must compile
    new_shape = counts()
    print(json.dumps({"state": _cache.state(), "first": first, "new_shape": new_shape, "traces": first_traces,
                      "mean_abs": r.mean_abs.tolist(), "stderr": r.stderr.tolist()}))
    """
)


def _child(folder, control_batch: int) -> dict:
    env = {**os.environ, _cache.ENV: str(folder), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(control_batch)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_new_process_loads_instead_of_compiling(tmp_path):
    folder = tmp_path / "cache"
    cold = _child(folder, 40)
    warm = _child(folder, 48)
    assert cold["state"]["dir"] == warm["state"]["dir"] == str(folder)
    # cold: every executable was compiled and written (JAX counts a write as a "miss"), none was found
    assert cold["first"].get("cache_hits", 0) == 0 and cold["first"]["cache_misses"] >= 1
    # warm: every executable the same model and chunk shape need was found, none compiled or written again
    asked = warm["first"]["compile_requests_use_cache"]
    assert asked >= 1 and warm["first"].get("cache_hits", 0) == asked and "cache_misses" not in warm["first"]
    # the control: a chunk shape this folder has not seen is compiled and written, in the warm process too
    assert warm["new_shape"]["cache_misses"] >= 1
    # the loaded executable is the one the cold process compiled: identical results, bit for bit
    assert warm["mean_abs"] == cold["mean_abs"] and warm["stderr"] == cold["stderr"]
    # the traced analyses (memory per sample, loops, cut inputs) were kept too: the warm first call traces the
    # kernel only, where the cold one also traced the model for each analysis
    kinds = {n.split("-")[0] for n in os.listdir(folder / _cache.ANALYSES)}
    assert kinds == {"bytes", "cut", "has"}, kinds
    assert len(warm["traces"]) < len(cold["traces"]), (warm["traces"], cold["traces"])
    assert set(warm["traces"]) <= set(cold["traces"])


# ------------------------------------------------------------------------------- kept analyses (a new process)
def _two_stacks():
    """Two converted MLPs that differ only in the hidden activation: same graph name, node count, weight names
    and shapes (the pytree texts match), different functions."""
    from jaxsens import Model
    from jaxsens._dense import dense_onnx

    rng = np.random.default_rng(1)
    layers = [{"W": rng.normal(size=(4, 5)), "b": rng.normal(size=5)}, {"W": rng.normal(size=(5, 2)),
                                                                        "b": rng.normal(size=2)}]
    return [Model.from_onnx(dense_onnx(layers, hidden=h, graph_name="same")) for h in ("Relu", "Tanh")]


def test_architecture_text_tells_graphs_apart_and_refuses_wrapped_functions():
    from jaxsens import Model

    relu, tanh = _two_stacks()
    assert _cache.architecture_text(relu) == _cache.architecture_text(relu.with_params(relu.params))
    assert _cache.architecture_text(relu) != _cache.architecture_text(tanh)  # the graph's fingerprint differs
    assert _cache.architecture_text(relu) != _cache.architecture_text(relu.with_unroll(0))
    wrapped = Model.from_function(lambda p, x: jnp.tanh(p * x), jnp.ones(3), input_shape=(3,))
    assert _cache.architecture_text(wrapped) is None  # a function's name says nothing of its body
    assert _cache.architecture_text(relu, (lambda: 0,)) is None  # an extra whose text holds an address


def test_kept_analysis_is_read_back_checked_and_recomputed_when_damaged(pristine, tmp_path):
    folder = tmp_path / "c"
    _cache.enable_default({_cache.ENV: str(folder)})
    calls = []

    def compute():
        calls.append(1)
        return 1234

    def decode(v):
        return v if type(v) is int else None

    assert _cache.persistent_analysis("probe", "key-a", compute, decode=decode) == 1234
    (record,) = list((folder / _cache.ANALYSES).iterdir())
    assert _cache.persistent_analysis("probe", "key-a", compute, decode=decode) == 1234 and len(calls) == 1
    for damage in ("{not json", json.dumps({"key": "other", "value": 99}), json.dumps({"key": json.loads(
            record.read_text())["key"], "value": "x"})):
        record.write_text(damage)  # truncated, a different key (a hash collision), a malformed value
        assert _cache.persistent_analysis("probe", "key-a", compute, decode=decode) == 1234
    assert len(calls) == 4 and json.loads(record.read_text())["value"] == 1234  # rewritten whole
    assert _cache.persistent_analysis("probe", None, compute, decode=decode) == 1234 and len(calls) == 5


def test_kept_analyses_follow_the_cache_switch(pristine, tmp_path):
    """Nothing is kept with the cache off, nor in a folder the process gave JAX itself; the kept values equal
    fresh ones, per graph."""
    from jaxsens import _engine, _jacobian

    relu, tanh = _two_stacks()
    own = tmp_path / "own"
    jax.config.update("jax_compilation_cache_dir", str(own))
    _cache.enable_default({})
    _engine._BYTES_CACHE.clear()
    _jacobian._bytes_per_sample(relu, "reverse", None)
    assert _cache.state()["dir"] == str(own) and not (own / _cache.ANALYSES).exists()
    jax.config.update("jax_compilation_cache_dir", None)
    _cache.enable_default({_cache.ENV: "off"})
    fresh = {}
    for name, m in (("relu", relu), ("tanh", tanh)):
        _engine._BYTES_CACHE.clear()
        fresh[name] = _jacobian._bytes_per_sample(m, "reverse", None)
        _cache.persistent_analysis("probe", "k", lambda: 1, decode=lambda v: v)
    folder = tmp_path / "c"
    _cache.enable_default({_cache.ENV: str(folder)})
    assert not (own / _cache.ANALYSES).exists()
    for _ in range(2):  # written, then read back (each time with the in-process cache emptied)
        for name, m in (("relu", relu), ("tanh", tanh)):
            _engine._BYTES_CACHE.clear()
            assert _jacobian._bytes_per_sample(m, "reverse", None) == fresh[name]
    assert len([n for n in os.listdir(folder / _cache.ANALYSES) if n.startswith("bytes-per-sample")]) == 2
