"""JAX's persistent compilation cache, on by default: compile a kernel once per machine, not per process.

JAX keeps compiled executables in memory only, so every new process compiles its kernels again (2-10 s on
small models). With ``jax_compilation_cache_dir`` set, JAX also writes each executable to that folder, keyed
by a hash of the program, the devices, the compile options and the jax / jaxlib versions, and a later process
with the same model structure, chunk shape and options loads it instead of compiling. The key never contains
the weights (they are arguments), so two versions of one architecture share their kernels.

**When and what.** ``import jaxsens`` calls :func:`enable_default` once, so that the model conversion's small
executables are cached as well as the method kernels. It sets, process-wide:

* ``jax_compilation_cache_dir`` to ``$JAXSENS_CACHE_DIR`` or, when unset, the platform's user cache folder
  plus ``jaxsens/jax`` (Linux: ``$XDG_CACHE_HOME/jaxsens/jax``, default ``~/.cache/jaxsens/jax``; macOS:
  ``~/Library/Caches/jaxsens/jax``; Windows: ``%LOCALAPPDATA%\\jaxsens\\Cache\\jax``);
* ``jax_persistent_cache_min_compile_time_secs`` to 0 (JAX's default, 1 s, would leave out the kernels of
  small models, which compile in 0.05-1 s: exactly the first calls the cache is for), unless the process
  changed it.

**The way out.** ``JAXSENS_CACHE_DIR=off`` (or ``0``, ``false``, ``no``, ``none``) before the import: jaxsens
then changes no JAX setting. A process that configured JAX's cache itself (``jax.config.update(
"jax_compilation_cache_dir", ...)`` or ``JAX_COMPILATION_CACHE_DIR`` before the import, or
``jax_enable_compilation_cache=False``) keeps its own setting: jaxsens touches nothing. :func:`disable` turns
the persistent cache off for the rest of the process (the CLI's ``--no-cache``). Because the setting is JAX's
and process-wide, the user's own JAX code in the same process is cached in the same folder after ``import
jaxsens``; ``jaxsens info`` prints the folder and what set it.

Next to the executables, in ``jaxsens-analyses/``, jaxsens keeps what it traces a converted model for before
compiling (memory per sample, loops, structurally cut inputs), one JSON record of a few kB per architecture, so
that a warm process traces the kernel only (:func:`persistent_analysis`); only in a folder jaxsens set itself.

A folder that cannot be created or written is reported with a :class:`CompilationCacheWarning` and the process
runs without a persistent cache (never an error). The folder may be deleted at any time; it only grows with
new model structures, chunk shapes or versions (each entry is an executable of a few kB to a few MB). On CPUs,
XLA refuses an entry compiled for other CPU features and compiles again, so a home folder shared by several
machine types stays correct (each type fills its own entries).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ENV",
    "CompilationCacheWarning",
    "architecture_text",
    "default_dir",
    "describe",
    "disable",
    "enable",
    "enable_default",
    "per_architecture",
    "persistent_analysis",
    "state",
]

ENV = "JAXSENS_CACHE_DIR"
OFF_VALUES = frozenset({"off", "0", "false", "no", "none"})
MIN_COMPILE_SECONDS = 0.0
"""Compile time above which an executable is written. 0: all of them (measured on the seed-000 MLP Jacobian, a
warm first call was the same with 0 and 0.1 s: small executables cost ~10 ms each to compile or load)."""

_JAX_DEFAULT_MIN_COMPILE_SECONDS = 1.0
logger = logging.getLogger("jaxsens")


class CompilationCacheWarning(UserWarning):
    """The persistent compilation cache's folder cannot be written; jaxsens runs without the cache."""


_state: dict[str, Any] = {"enabled": False, "dir": None, "source": "not configured yet"}
_set_dir: str | None = None  # the folder enable() set last: the only one persistent_analysis writes in

ANALYSES = "jaxsens-analyses"
"""Sub-folder of a cache folder jaxsens set, for :func:`persistent_analysis`'s records."""


def default_dir(env: Mapping[str, str] | None = None) -> str:
    """The platform's user cache folder for jaxsens's compiled kernels (``JAXSENS_CACHE_DIR`` aside).

    Example:
        >>> default_dir({"XDG_CACHE_HOME": "/scratch/me/.cache"}).replace("\\\\", "/")  # on Linux
        '/scratch/me/.cache/jaxsens/jax'
    """
    env = os.environ if env is None else env
    if sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
        return os.path.join(base, "jaxsens", "jax")
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
        return os.path.join(base, "jaxsens", "Cache", "jax")
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxsens", "jax")


def _writable(path: str) -> str | None:
    """``None`` when ``path`` is (made) a folder this process can write a file in; else why it is not."""
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(
            prefix=".probe-", dir=path
        )  # os.access lies for root and read-only mounts
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


def enable(path: str | os.PathLike, *, source: str = "jaxsens.enable") -> bool:
    """Use ``path`` as JAX's persistent compilation cache for the rest of this process.

    Creates the folder; when it cannot be written, warns (:class:`CompilationCacheWarning`), leaves JAX's
    settings as they were and returns ``False``. Otherwise sets ``jax_compilation_cache_dir`` (and
    ``jax_persistent_cache_min_compile_time_secs`` to 0 unless the process changed it) and returns ``True``.
    """
    import jax

    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    reason = _writable(path)
    if reason is not None:
        _state.update(enabled=False, dir=None, source=f"off: {path} is not writable ({reason})")
        warnings.warn(
            f"jaxsens: the compilation cache folder {path} cannot be written ({reason}); compiling without a "
            f"persistent cache. Set {ENV} to a writable folder, or {ENV}=off to turn the cache off quietly.",
            CompilationCacheWarning,
            stacklevel=2,
        )
        return False
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    if jax.config.jax_persistent_cache_min_compile_time_secs == _JAX_DEFAULT_MIN_COMPILE_SECONDS:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    _reset_jax_cache()  # a cache object JAX opened on another folder would otherwise stay in use
    global _set_dir
    _set_dir = path
    _state.update(enabled=True, dir=path, source=source)
    logger.info("jaxsens: persistent compilation cache in %s (%s)", path, source)
    return True


def disable(source: str = "jaxsens.disable") -> None:
    """No persistent compilation cache for the rest of this process (``jax_enable_compilation_cache=False``);
    executables compiled in this process stay in its memory as usual."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    _reset_jax_cache()
    _state.update(enabled=False, dir=None, source=f"off: {source}")


def enable_default(env: Mapping[str, str] | None = None) -> None:
    """What ``import jaxsens`` does (see the module docstring): the cache folder from ``JAXSENS_CACHE_DIR`` or
    :func:`default_dir`, unless the variable says ``off`` or the process configured JAX's cache itself."""
    import jax

    env = os.environ if env is None else env
    value = env.get(ENV, "").strip()
    if value.lower() in OFF_VALUES:
        _state.update(enabled=False, dir=None, source=f"off: {ENV}={value}")
        return
    if not jax.config.jax_enable_compilation_cache:
        _state.update(
            enabled=False, dir=None, source="off: jax_enable_compilation_cache=False (JAX's setting)"
        )
        return
    own = jax.config.jax_compilation_cache_dir
    if own:
        _state.update(
            enabled=True, dir=own, source="JAX's own setting (jax_compilation_cache_dir), left as it is"
        )
        return
    if value:
        enable(value, source=f"{ENV}")
    else:
        enable(default_dir(env), source=f"default; {ENV}=off turns it off")


def state() -> dict[str, Any]:
    """``{"enabled": bool, "dir": folder or None, "source": what decided it}`` for this process."""
    return dict(_state)


def per_architecture(cache: dict, model, compute, *extra, limit: int = 256, persist: str | None = None,
                     decode=None):
    """``compute()`` cached in ``cache`` by the model's architecture (its pytree structure and the shapes and dtypes
    of its leaves, not their values) and ``extra``: for analyses of the traced graph, which every model of one
    architecture shares. Unhashable static metadata computes without caching; at most ``limit`` entries.

    ``persist``: a name for the analysis to be kept on disk across processes as well (a JSON value, read back by
    ``decode``; :func:`persistent_analysis`), for models whose architecture has a stable text
    (:func:`architecture_text`)."""
    import jax
    import numpy as np

    leaves, treedef = jax.tree.flatten(model)
    key = (treedef, tuple((np.shape(v), str(getattr(v, "dtype", type(v)))) for v in leaves), *extra)
    if persist is not None:
        inner = compute

        def compute():
            return persistent_analysis(persist, architecture_text(model, extra), inner, decode=decode)

    try:
        return cache[key]
    except TypeError:  # unhashable static metadata
        return compute()
    except KeyError:
        pass
    value = compute()
    if len(cache) < limit:
        cache[key] = value
    return value


def architecture_text(model, extra=()) -> str | None:
    """A text that determines every traced analysis of ``model`` (with ``extra``), the same in every process:
    for models converted from ONNX, the graph's fingerprint (its structure and constants, not the weights'
    values; :class:`~converters.onnx_to_jax.graph.OnnxFunction`), tracing options, metadata, the weights' names,
    shapes and dtypes and ``repr(extra)``. ``None`` for everything else (a wrapped Python function has no such
    text: its name says nothing of its body) and for an ``extra`` whose text holds a memory address."""
    import jax
    import numpy as np

    from converters.onnx_to_jax.graph import OnnxFunction
    from jaxsens._checkpoint import _ADDRESS
    from jaxsens._model import Model

    if type(model) is not Model or type(model.apply) is not OnnxFunction:
        return None
    fn = model.apply
    leaves, treedef = jax.tree.flatten(model.params)
    text = repr((
        fn.fingerprint, fn.unroll, fn.reverse_only, model.input_shape, model.output_shape, model.feature_names,
        model.output_names, model.layer_names, model.input_names, model.batched, model.outputs_sum_to_one,
        str(treedef), [(np.shape(v), str(getattr(v, "dtype", type(v)))) for v in leaves], extra,
    ))
    return None if _ADDRESS.search(text) else text


def persistent_analysis(kind: str, key: str | None, compute, *, decode):
    """``compute()``, a JSON value derived from a traced graph only, kept on disk across processes.

    JAX's cache keeps executables, but a new process still traces a model before each lookup: to size its
    chunks (:func:`jaxsens._engine.model_bytes_per_sample`), to find loops and structurally cut inputs
    (:func:`jaxsens._checks.per_architecture`). Those analyses are as fixed as the executables (one value per
    architecture, input shape and software version), so they are kept next to them, in ``ANALYSES`` under a cache
    folder jaxsens itself set (never in a folder the process gave JAX, nor with the cache off): one small JSON
    record per ``kind`` and ``key``, named by a hash of both and of the software versions, holding the full key
    (a record whose key differs, as after a hash collision, is not used). Measured on the seed-001 LSTM: a warm
    first call 0.62 s -> 0.4 s (the analyses traced the model three times).

    ``key``: a text that determines the value, or ``None`` (then nothing is read or written). ``decode``: the
    record's JSON value -> the value, or ``None`` for a malformed one (then it is computed and written again).
    A record that cannot be read or written is ignored: the value is computed as without the cache.
    """
    ours = _state["enabled"] and _state["dir"] is not None and _state["dir"] == _set_dir
    folder = os.path.join(_state["dir"], ANALYSES) if ours else None
    if folder is None or key is None:
        return compute()
    from jaxsens._checkpoint import software  # versions: a traced graph may change with jax or jaxsens

    full = f"{kind}\n{software()}\n{key}"
    path = os.path.join(folder, f"{kind}-{hashlib.blake2b(full.encode(), digest_size=20).hexdigest()}.json")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        value = decode(record["value"]) if isinstance(record, dict) and record.get("key") == full else None
        if value is not None:
            return value
    except (OSError, ValueError, TypeError, KeyError):
        pass
    value = compute()
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": full, "value": value}, f)
            os.replace(tmp, path)  # atomic: a reader sees the old record, the new one or none
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except (OSError, TypeError, ValueError) as e:
        logger.debug("jaxsens: analysis record %s not written: %s", path, e)
    return value


def describe() -> str:
    """One line for ``jaxsens info``: the folder, what set it, and its size."""
    s = state()
    if not s["enabled"]:
        return f"compilation cache: {s['source']}"
    n, size = 0, 0
    try:
        with os.scandir(s["dir"]) as entries:
            for e in entries:
                if e.is_file() and e.name.endswith("-cache"):
                    n, size = n + 1, size + e.stat().st_size
    except OSError:
        pass
    return f"compilation cache: {s['dir']} ({s['source']}): {n} executables, {size / 2**20:.1f} MiB"


def _reset_jax_cache() -> None:
    """Drop the cache object JAX may have opened (it keeps the first folder it saw for the process)."""
    try:
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - a JAX without it reads the setting afresh
        pass
