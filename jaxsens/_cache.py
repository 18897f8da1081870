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

A folder that cannot be created or written is reported with a :class:`CompilationCacheWarning` and the process
runs without a persistent cache (never an error). The folder may be deleted at any time; it only grows with
new model structures, chunk shapes or versions (each entry is an executable of a few kB to a few MB). On CPUs,
XLA refuses an entry compiled for other CPU features and compiles again, so a home folder shared by several
machine types stays correct (each type fills its own entries).
"""

from __future__ import annotations

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
    "default_dir",
    "describe",
    "disable",
    "enable",
    "enable_default",
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
