"""The method protocol: a :class:`Method` spec per method, one calling convention, one table.

A method is one module that declares ``SPEC = Method(...)``: its name, family, whether it needs targets and
whether it is random, its options (:class:`Option`: type, default, help) and how it computes:

* a **streaming** method gives ``prepare`` / ``kernel`` / ``finalize``. ``prepare(call) -> Plan`` checks the
  model and options (and may stream a first pass, e.g. feature means); ``kernel(state, batch, mask,
  row_index)`` is a module-level ``jax.jit`` function of one padded chunk (``batch`` is ``xs``, or ``(xs, ys)``
  when the method reads targets; ``row_index`` the global row numbers, for per-row keys ``fold_in(key,
  row_index)``) returning mergeable :mod:`jaxsens._stats` summaries; :func:`jaxsens._engine.run` streams the
  data through it and merges; ``finalize(stats, info, plan, call) -> Result``.
* any other method (weights only, retraining, block-wise permutation) gives ``run(call) -> Result``.

``spec.as_function()`` makes the public function with the one calling convention::

    method(model, data=None, targets=None, *, key=None, outputs=None, batch_size=None, progress=None,
           nan_policy="raise", **options)

checking the shared arguments once (:class:`Call`), validating every option against its declared type and
choices, mapping deprecated option names (with a ``DeprecationWarning``), and appending the option table to
the docstring. The table of all methods (:func:`jaxsens.methods`) is built in :mod:`jaxsens._methods`; the
CLI, the README table test and the shared invariant tests read it and know no method by name.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from converters.errors import ArgumentError, ArgumentTypeError

__all__ = ["DEFAULT_SEED", "FAMILIES", "Call", "Method", "Option", "Plan", "make_call", "resolve_key", "stream"]

DEFAULT_SEED = 0
"""Random methods called with ``key=None`` use ``jax.random.key(DEFAULT_SEED)``: results are reproducible by
default; pass another key (or int seed) to draw again."""

FAMILIES = ("gradient", "perturbation", "profile", "weights", "retraining", "global")


@dataclasses.dataclass(frozen=True)
class Option:
    """One method option.

    Attributes:
        name: keyword name (the CLI flag is ``--name`` with dashes).
        type: ``int``, ``float``, ``str``, ``bool``, ``"floats"`` (a sequence of floats; CLI: comma-separated),
            ``"names"`` (a sequence of names or indices; CLI: comma-separated) or ``"any"`` (API only).
        default: the default value (``None`` allowed).
        help: one line for the docstring and ``--help``.
        choices: allowed values, when a closed set.
        minimum: smallest allowed value for numbers (inclusive).
        cli: whether the CLI exposes it.
        objects: a ``str`` option that also takes an object from Python (a :class:`jaxsens.Metric` or a callable
            for ``metric``); other ``str`` options take strings only.
        cli_type: for an ``"any"`` option, the type the CLI gives it (``str``: a name or a file path, e.g.
            ``baseline``); ``None``: API only.
    """

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    cli: bool = True
    objects: bool = False
    cli_type: Any = None

    def check(self, value, method: str):
        """``value`` validated (and normalised: tuples for sequences, float for float options)."""
        if value is None:
            if self.default is None:
                return None
            raise ArgumentError(f"{method}(): {self.name}=None is not allowed; default {self.default!r}")
        t = self.type
        if t is bool:
            if not isinstance(value, bool | np.bool_):
                raise ArgumentTypeError(f"{method}(): {self.name} must be True or False, got {value!r}")
            value = bool(value)
        elif t is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ArgumentTypeError(f"{method}(): {self.name} must be an integer, got {value!r}")
            value = int(value)
        elif t is float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
                raise ArgumentTypeError(f"{method}(): {self.name} must be a finite number, got {value!r}")
            value = float(value)
        elif t is str:
            if not isinstance(value, str) and not (self.objects and (callable(value) or hasattr(value, "fn"))):
                also = " (or a Metric / callable)" if self.objects else ""
                raise ArgumentTypeError(f"{method}(): {self.name} must be a string{also}, got {value!r:.80}")
        elif t == "floats":
            items = [value] if isinstance(value, numbers.Real) else value
            try:
                value = tuple(float(v) for v in items)
            except (TypeError, ValueError):
                raise ArgumentTypeError(f"{method}(): {self.name} must be a sequence of numbers, got {value!r}") from None
            if not value or not all(np.isfinite(value)):
                raise ArgumentError(f"{method}(): {self.name} must be a non-empty sequence of finite numbers")
        elif t == "names":
            value = (value,) if isinstance(value, str | numbers.Integral) else tuple(value)
        if self.choices is not None and isinstance(value, str) and value not in self.choices:
            allowed = ("None or " if self.default is None else "") + f"one of {list(self.choices)}"
            raise ArgumentError(f"{method}(): {self.name} must be {allowed}, got {value!r}")
        if self.minimum is not None:
            vals = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, numbers.Real) and v < self.minimum for v in vals):
                raise ArgumentError(f"{method}(): {self.name} must be >= {self.minimum}, got {value!r}")
        return value


@dataclasses.dataclass(frozen=True)
class Call:
    """The shared arguments of one method call, checked once at the boundary.

    Attributes:
        method: the spec.
        model: the :class:`jaxsens.Model`.
        data: the data as given (any source; see :func:`jaxsens._data.open_source`), or ``None``.
        targets: the targets as given, or ``None``.
        key: a typed JAX PRNG key (``None`` for deterministic methods).
        outputs: output indices (into the flattened output) to explain, or ``None`` for all.
        batch_size: rows per chunk, or ``None`` for the engine's choice.
        progress: ``None``, ``True`` or ``callable(done, total)``.
        nan_policy: ``"raise"`` or ``"skip"``.
        options: every option of the spec, validated, defaults filled in.
        devices: devices to shard over (``None``: all local devices).
        seed: the int seed of ``key`` when it was given as an int (or left to the default), else ``None``.
    """

    method: Method
    model: Any
    data: Any
    targets: Any
    key: Any
    outputs: tuple[int, ...] | None
    batch_size: int | None
    progress: Any
    nan_policy: str
    options: dict
    devices: Any = None
    seed: int | None = None

    def record(self) -> dict:
        """The options as stored on the result: JSON-friendly values (a callable metric by its name)."""
        out = {}
        for k, v in self.options.items():
            if isinstance(v, bool | int | float | str) or v is None or isinstance(v, tuple) and all(isinstance(x, bool | int | float | str) for x in v):
                out[k] = v
            else:
                out[k] = getattr(v, "name", None) or getattr(v, "__name__", None) or type(v).__name__
        if self.key is not None:  # a random call: the int seed given (or the default), else the key's raw data
            if self.seed is not None:
                out["seed"] = self.seed
            else:
                out["key_data"] = tuple(int(v) for v in np.asarray(jax.random.key_data(self.key)).reshape(-1))
        if self.outputs is not None:
            out["outputs"] = tuple(self.outputs)
        return out


@dataclasses.dataclass(frozen=True)
class Plan:
    """What ``prepare`` hands the engine and ``finalize``.

    Attributes:
        state: the pytree passed to the kernel first (the model, arrays it needs, the key).
        static: static keyword arguments bound to the kernel (hashable: part of the compile key).
        bytes_per_sample: memory one row needs in the kernel (for the default ``batch_size``).
        context: anything ``finalize`` needs (host values).
        data: the data to stream (default: the call's data).
        targets: the targets to stream with it, or ``None``.
        rows_ok: whether the spec's ``rows`` hook describes this call's headline (see :class:`Method`);
            ``prepare`` sets it False when the options make the headline something else (e.g. the Jacobian with
            ``scale="std"``), and :func:`jaxsens.compare` then runs the versions independently.
    """

    state: Any
    static: dict = dataclasses.field(default_factory=dict)
    bytes_per_sample: int | None = None
    context: Any = None
    data: Any = None
    targets: Any = None
    rows_ok: bool = True


@dataclasses.dataclass(frozen=True)
class Method:
    """A method's row in the table (see the module docstring).

    Attributes:
        name: table key and CLI ``--method`` value (``"jacobian"``, ``"input-perturbation"``).
        function_name: the public function's name (``"jacobian_importance"``).
        family: one of :data:`FAMILIES`.
        summary: one line for the README table and ``--help``.
        doc: the function's docstring (formula, reference, example); the option table is appended.
        result: the :class:`jaxsens._results.Result` subclass returned.
        needs_data / needs_targets / uses_targets: the data the method reads (``uses_targets``: optional).
        random: whether ``key`` matters.
        random_if: for a method random only under some options: ``random_if(options, model) -> bool`` (the
            checked options) says whether this call is; then ``key`` is resolved (``None``: :data:`DEFAULT_SEED`) and
            recorded as for a random method, otherwise the call is deterministic and a given ``key`` is ignored
            with a warning. ``random`` stays False for such a method.
        options: the method's :class:`Option` s.
        memory: what the method holds in memory (for the docstring; "streams" methods hold O(batch_size)).
        exact_zero: an input the model ignores gets exactly 0 (the shared invariant tests check it).
        per_output: whether ``importance`` has an outputs axis first.
        aliases: deprecated option names -> current names.
        prepare, kernel, finalize: a streaming method's steps; or ``run`` for any other method.
        multi_input: whether models with several inputs are supported.
        integer_inputs: whether integer (token id) inputs are meaningful for this method.
        estimate: optional ``estimate(call) -> dict | str | float``: the cost of a run before it starts (a
            dict with ``"seconds"`` and optionally ``"text"``, a sentence, or seconds); the CLI prints it before
            long runs.
        rows: optional, streaming methods only: ``rows(state, batch, mask, row_index, **static) ->
            (kernel_stats, per_row_values)`` where ``kernel_stats`` is exactly what ``kernel`` returns for the
            chunk and ``per_row_values`` is ``[batch, *headline]`` (``headline`` = the result's ``importance``
            shape), from one computation. Not jitted itself: :func:`jaxsens.compare` calls it inside its own
            kernel, ``vmap`` ped over the stacked states of several versions, for paired per-row differences.
        rows_headline: how the headline follows from the per-row values: ``"mean"`` (``importance`` is their
            mean over rows) or ``"sqrt_mean"`` (``importance`` is the square root of their mean, e.g. an RMS
            change; compare then uses the delta method).
    """

    name: str
    function_name: str
    family: str
    summary: str
    doc: str = dataclasses.field(repr=False)
    result: type = None
    needs_data: bool = True
    needs_targets: bool = False
    uses_targets: bool = False
    random: bool = False
    random_if: Callable | None = dataclasses.field(default=None, repr=False)
    options: tuple[Option, ...] = ()
    memory: str = "streams the data: memory independent of the number of rows"
    exact_zero: bool = True
    per_output: bool = True
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    prepare: Callable | None = dataclasses.field(default=None, repr=False)
    kernel: Callable | None = dataclasses.field(default=None, repr=False)
    finalize: Callable | None = dataclasses.field(default=None, repr=False)
    run: Callable | None = dataclasses.field(default=None, repr=False)
    multi_input: bool = False
    integer_inputs: bool = False
    estimate: Callable | None = dataclasses.field(default=None, repr=False)
    rows: Callable | None = dataclasses.field(default=None, repr=False)
    rows_headline: str = "mean"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ArgumentError(f"Method {self.name!r}: family {self.family!r} is not one of {FAMILIES}")
        if (self.run is None) == (self.kernel is None):
            raise ArgumentError(f"Method {self.name!r}: give either run= or prepare/kernel/finalize")
        if self.rows is not None and self.kernel is None:
            raise ArgumentError(f"Method {self.name!r}: rows= is for streaming methods (with a kernel)")
        if self.rows_headline not in ("mean", "sqrt_mean"):
            raise ArgumentError(f"Method {self.name!r}: rows_headline must be 'mean' or 'sqrt_mean'")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ArgumentError(f"Method {self.name!r}: an option name is repeated: {names}")
        clash = set(names) & set(_SHARED)
        if clash:
            raise ArgumentError(f"Method {self.name!r}: options {sorted(clash)} shadow shared arguments")

    @property
    def function(self) -> Callable:
        """The public function (made once)."""
        return _functions[self.name]

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def as_function(self) -> Callable:
        """The public function with the one calling convention (see the module docstring)."""
        if self.name in _functions:
            return _functions[self.name]
        spec = self

        def method(model, data=None, targets=None, *, key=None, outputs=None, batch_size=None, progress=None,
                   nan_policy="raise", devices=None, **options):
            return call_method(spec, model, data, targets, key=key, outputs=outputs, batch_size=batch_size,
                               progress=progress, nan_policy=nan_policy, devices=devices, options=options)

        method.__name__ = method.__qualname__ = self.function_name
        method.__module__ = "jaxsens"
        method.__doc__ = _docstring(self)
        params = [
            inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
            inspect.Parameter("targets", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
        ] + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d) for n, d in _SHARED.items()]
        params += [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default) for o in self.options]
        method.__signature__ = inspect.Signature(params)
        method.spec = self
        _functions[self.name] = method
        return method


_SHARED = {
    "key": None,
    "outputs": None,
    "batch_size": None,
    "progress": None,
    "nan_policy": "raise",
    "devices": None,
}
_functions: dict[str, Callable] = {}


def call_method(spec: Method, model, data, targets, *, key, outputs, batch_size, progress, nan_policy, devices,
                options: dict):
    """Check the shared arguments and the options (:func:`make_call`), then run the method."""
    call = make_call(spec, model, data, targets, key=key, outputs=outputs, batch_size=batch_size,
                     progress=progress, nan_policy=nan_policy, devices=devices, options=options)
    if spec.run is not None:
        return spec.run(call)
    return stream(call)


def make_call(spec: Method, model, data, targets, *, key=None, outputs=None, batch_size=None, progress=None,
              nan_policy="raise", devices=None, options: dict | None = None) -> Call:
    """The checked :class:`Call` of one method call: every refusal of a bad shared argument or option happens
    here, before any work (the CLI builds the same call to print a cost estimate first)."""
    from jaxsens._model import Model

    fn = spec.function_name
    if not isinstance(model, Model):
        raise ArgumentTypeError(f"{fn}() needs a jaxsens.Model, got {type(model).__name__}; see load_model()")
    if spec.needs_data and data is None:
        raise ArgumentError(f"{fn}() needs data: an array, a .npy / .npz / .csv / .parquet path, or batches")
    if spec.needs_targets and targets is None:
        raise ArgumentError(
            f"{fn}() needs targets: an array, a file, or the name of a target column of the data"
        )
    if targets is not None and not (spec.needs_targets or spec.uses_targets):
        raise ArgumentError(f"{fn}() does not use targets; leave targets=None")
    if nan_policy not in ("raise", "skip"):
        raise ArgumentError(f"nan_policy must be 'raise' or 'skip', got {nan_policy!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1
    ):
        raise ArgumentError(f"batch_size must be a positive integer, got {batch_size!r} (rows per chunk)")
    if progress is not None and progress is not True and progress is not False and not callable(progress):
        raise ArgumentTypeError(
            f"progress must be None, True or a callable(rows_done, rows_total), got {progress!r}"
        )
    given = dict(options or {})
    for old, new in spec.aliases.items():
        if old in given:
            if new in given:
                raise ArgumentError(f"{fn}(): {old}= is the deprecated name of {new}=; pass only {new}=")
            warnings.warn(f"{fn}(): {old}= is deprecated; use {new}= (see CHANGELOG.md)", DeprecationWarning,
                          stacklevel=3)
            given[new] = given.pop(old)
    known = {o.name: o for o in spec.options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ArgumentError(
            f"{fn}() got unknown option(s) {unknown}; its options are {sorted(known)} plus key, outputs, "
            "batch_size, progress, nan_policy, devices"
        )
    checked = {name: o.check(given.get(name, o.default), fn) for name, o in known.items()}
    random = spec.random or (spec.random_if is not None and bool(spec.random_if(checked, model)))
    resolved_key = resolve_key(key, fn) if random else _no_key(key, fn)
    resolved_outputs = resolve_outputs(outputs, model) if outputs is not None else None
    seed = None
    if random and (key is None or (isinstance(key, numbers.Integral) and not isinstance(key, bool))):
        seed = DEFAULT_SEED if key is None else int(key)
    return Call(spec, model, data, targets, resolved_key, resolved_outputs,
                None if batch_size is None else int(batch_size), progress or None, nan_policy, checked, devices,
                seed)


def stream(call: Call):
    """A streaming method's ``prepare -> engine.run(kernel) -> finalize``."""
    return run_plan(call, call.method.prepare(call))


def run_plan(call: Call, plan: Plan):
    """``engine.run(kernel) -> finalize`` of a streaming method's already prepared ``plan``."""
    from jaxsens import _engine

    spec = call.method
    kernel = functools.partial(spec.kernel, **plan.static) if plan.static else spec.kernel
    stats, info = _engine.run(
        kernel,
        plan.state,
        call.data if plan.data is None else plan.data,
        targets=plan.targets,
        batch_size=call.batch_size,
        bytes_per_sample=None if call.batch_size is not None else plan.bytes_per_sample,
        nan_policy=call.nan_policy,
        progress=call.progress,
        devices=call.devices,
    )
    return spec.finalize(stats, info, plan, call)


def resolve_key(key, method: str) -> jax.Array:
    """A typed PRNG key from ``None`` (:data:`DEFAULT_SEED`), an int seed, a typed key or a raw ``PRNGKey``."""
    if key is None:
        return jax.random.key(DEFAULT_SEED)
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        if not 0 <= int(key) < 2**63:
            raise ArgumentError(f"{method}(): an int key is a seed in [0, 2**63), got {key}")
        return jax.random.key(int(key))
    if isinstance(key, str | bytes | bool | float):
        raise ArgumentTypeError(
            f"{method}(): key must be an int seed or a JAX PRNG key (jax.random.key(0)), got {key!r:.60}"
        )
    try:
        arr = key if isinstance(key, jax.Array) else jnp.asarray(key)
    except TypeError:
        raise ArgumentTypeError(
            f"{method}(): key must be an int seed or a JAX PRNG key (jax.random.key(0)), got {type(key).__name__}"
        ) from None
    if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
        typed = arr
    else:
        try:
            typed = jax.random.wrap_key_data(arr)
        except (TypeError, ValueError) as e:
            raise ArgumentError(
                f"{method}(): key must be an int seed or a JAX PRNG key (jax.random.key(0) or "
                f"jax.random.PRNGKey(0)), got an array of shape {arr.shape} and dtype {arr.dtype}"
            ) from e
    if typed.shape != ():
        raise ArgumentError(f"{method}(): key must be a single PRNG key, got an array of {typed.shape} keys")
    return typed


def _no_key(key, method: str):
    if key is not None:
        warnings.warn(f"{method}() is deterministic; key= is ignored", stacklevel=4)


def resolve_outputs(outputs, model) -> tuple[int, ...]:
    """Indices into the flattened output for ``outputs=`` (indices or names, validated)."""
    names = tuple(model.output_names or ())
    n = int(model.n_outputs)
    items = [outputs] if isinstance(outputs, str | numbers.Integral) else list(outputs)
    if not items:
        raise ArgumentError("outputs= is empty; pass None for all outputs, or indices / names of outputs")
    idx = []
    for o in items:
        if isinstance(o, str):
            if o not in names:
                raise ArgumentError(f"outputs= names an unknown output {o!r}; the model's outputs are {list(names)}")
            idx.append(names.index(o))
        elif isinstance(o, numbers.Integral) and not isinstance(o, bool):
            if not -n <= int(o) < n:
                raise ArgumentError(f"outputs= index {int(o)} is out of range for a model with {n} outputs")
            idx.append(int(o) % n)
        else:
            raise ArgumentTypeError(f"outputs= takes output indices or names, got {o!r}")
    if len(set(idx)) != len(idx):
        raise ArgumentError(f"outputs= repeats an output: {items}")
    return tuple(idx)


def output_names(model, outputs: tuple[int, ...] | None) -> tuple[str, ...]:
    """The names of the explained outputs."""
    names = tuple(model.output_names or ()) or tuple(f"y{i}" for i in range(model.n_outputs))
    return names if outputs is None else tuple(names[i] for i in outputs)


def _docstring(spec: Method) -> str:
    lines = [inspect.cleandoc(spec.doc or spec.summary), ""]
    lines.append("Calling convention (shared by every method, see :func:`jaxsens.methods`)::")
    lines.append("")
    lines.append(f"    {spec.function_name}(model, data=None, targets=None, *, key=None, outputs=None, "
                 "batch_size=None, progress=None, nan_policy='raise', devices=None, **options)")
    lines.append("")
    lines.append(f"Family: {spec.family}. Targets: {'required' if spec.needs_targets else 'optional' if spec.uses_targets else 'not used'}. "
                 f"Random: {_random_text(spec)}. "
                 f"Memory: {spec.memory}.")
    if spec.options:
        lines.append("")
        lines.append("Options:")
        for o in spec.options:
            t = o.type if isinstance(o.type, str) else o.type.__name__
            choices = f" One of {list(o.choices)}." if o.choices else ""
            lines.append(f"    {o.name} ({t}, default {o.default!r}): {o.help}{choices}")
    if spec.aliases:
        lines.append("")
        lines.append("Deprecated option names: " + ", ".join(f"{a} -> {b}" for a, b in spec.aliases.items()))
    return "\n".join(lines)


def _random_text(spec: Method) -> str:
    if spec.random:
        return f"yes (key=None uses seed {DEFAULT_SEED})"
    if spec.random_if is not None:
        return f"with some options, see them (key=None uses seed {DEFAULT_SEED})"
    return "no"


def table_rows(methods: Mapping[str, Method]) -> list[tuple[str, str, str, str, str, str]]:
    """``(name, function, family, targets, random, summary)`` rows for the README table."""
    return [
        (m.name, m.function_name, m.family,
         "required" if m.needs_targets else ("optional" if m.uses_targets else "no"),
         "yes" if m.random else "with some options" if m.random_if is not None else "no", m.summary)
        for m in methods.values()
    ]


def by_family(methods: Mapping[str, Method]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in methods.values():
        out.setdefault(m.family, []).append(m.name)
    return out
