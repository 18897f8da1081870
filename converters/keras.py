"""Keras models and files -> ONNX, with tf2onnx, refusing models that would run arbitrary code.

One route serves every Keras flavour: the model is traced as a ``tf.function`` whose input signature has a
``None`` batch axis and is converted in-process by ``tf2onnx.convert.from_function`` (``from_keras`` fails on
Keras 3 ``Sequential`` models). Files are read with the Keras that wrote them, so old files keep their
meaning:

=========================  ================================================================================
source                     read with
=========================  ================================================================================
in-memory model            itself (Keras 3 or ``tf_keras``)
``x.json`` + weights .h5   ``tf_keras`` (Keras 2 ``model.to_json()`` + ``save_weights()``); Keras 3 when the
                           JSON was written by Keras 3; ``x_structure.json`` finds ``x_weights.h5`` (or
                           ``.hdf5``) beside it
``.h5`` / ``.hdf5``        by the file's ``keras_version``: ``2.x`` -> ``tf_keras``, ``3.x`` -> Keras 3;
                           without one, Keras 3 and then ``tf_keras`` (old RNN files fail in Keras 3)
``.keras``                 Keras 3, with its own ``safe_mode``
SavedModel folder          ``tf.saved_model.load``; its ``serving_default`` signature is converted
=========================  ================================================================================

Keras 3 redefined ``hard_sigmoid`` (``x / 6 + 0.5`` instead of Keras 2's ``0.2 x + 0.5``): reading a Keras 2
file with ``tf_keras`` keeps the old meaning, and the exported ``HardSigmoid`` node carries it.

Safety: with ``safe=True`` (the default) the model's JSON configuration is inspected *before* anything is
deserialized; ``Lambda`` layers (marshalled Python byte code) and classes that are neither built into Keras
nor registered in this process raise :class:`~converters.errors.UnsafeModelError`. SavedModel graphs are
checked for ops that run Python or touch files.

Resources: archive members are read with size caps, checked on the sizes the archive declares before anything
is inflated (and reads stop at the cap whatever the header says). A ``.keras`` file's ``config.json`` /
``metadata.json`` and a structure ``.json`` file may hold at most :data:`MAX_KERAS_JSON_BYTES` (64 MiB); any
other member (the weights) at most the byte budget of
:func:`~converters.onnx_to_jax.registry.max_tensor_bytes` (16 GiB, ``JAXSENS_MAX_TENSOR_BYTES``); and a member
above :data:`ZIP_RATIO_MIN_BYTES` (16 MiB) may not inflate more than :data:`MAX_ZIP_RATIO` (100) times its
compressed size (Keras stores members uncompressed; a higher ratio is a zip bomb). Each refusal is a
:class:`~converters.errors.ModelFileError` naming the file and the member.

Layer names: each node is renamed ``"<keras layer>/<tf name>"`` after the first Keras layer whose output needs
it, and the ONNX ``metadata_props`` hold ``jaxsens.layer_names`` (the Keras layer names, in order),
``jaxsens.layer_outputs`` (layer name -> the ONNX tensor holding its output) and ``jaxsens.source``.

Everything here needs the ``keras`` extra (TensorFlow CPU, tf2onnx; ``tf_keras`` for Keras 2 files).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
import zipfile
from collections.abc import Iterator
from typing import Any

import onnx

from converters.errors import (
    ArgumentError,
    ArgumentTypeError,
    ConversionError,
    MissingExtraError,
    ModelFileError,
    ModelFileNotFoundError,
    UnsafeModelError,
    require,
)

__all__ = ["check_keras_config", "keras_file_to_onnx", "keras_to_onnx"]

LAYER_NAMES_KEY = "jaxsens.layer_names"  # same key as converters.onnx_to_jax.graph.LAYER_NAMES_KEY
# same key as converters.onnx_to_jax.layers.LAYER_PARAMS_KEY: Keras' own count_params() per layer (tf2onnx drops an
# all-zero bias, so counting the graph's initializers would undercount an untrained Dense layer)
LAYER_PARAMS_KEY = "jaxsens.layer_params"
LAYER_OUTPUTS_KEY = "jaxsens.layer_outputs"
SOURCE_KEY = "jaxsens.source"

MAX_OPSET = 18  # the newest opset tf2onnx 1.17 writes
MAX_KERAS_JSON_BYTES = 64 * 2**20  # a .keras config.json / metadata.json, a structure .json file
MAX_ZIP_RATIO = 100  # inflated / compressed size of one .keras member (above ZIP_RATIO_MIN_BYTES)
ZIP_RATIO_MIN_BYTES = 16 * 2**20
MIN_OPSET = 9

# TensorFlow ops that run Python or read / write files: never converted from a SavedModel with safe=True.
_UNSAFE_TF_OPS = frozenset(
    {
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "Save",
        "SaveV2",
        "SaveSlices",
        "MergeV2Checkpoints",
        "ImmutableConst",
        "DebugIdentityV2",
        "DebugIdentityV3",
        "PrintV2",
    }
)


# ------------------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------------------
def keras_to_onnx(keras_model, *, safe: bool = True, opset: int = 17) -> onnx.ModelProto:
    """Convert an in-memory Keras 3 or ``tf_keras`` (Keras 2) model into ONNX.

    The model is traced once with ``training=False`` (Dropout off, BatchNormalization on its moving
    statistics) and a dynamic batch axis. Every Keras layer's output stays reachable in the graph (see the
    module docstring), so :meth:`jaxsens.Model.intermediates` can name it.

    Args:
        keras_model: a ``Sequential`` or functional ``Model`` with known inputs (several inputs are fine: the
            ONNX inputs get the Keras input names, in the model's order).
        safe: refuse ``Lambda`` layers and layer classes that are not part of Keras; ``safe=False`` opts in.
        opset: ONNX opset to write, ``9 <= opset <= 18``.

    Returns:
        The ONNX model; its first graph outputs are the Keras model's outputs.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
        >>> proto = keras_to_onnx(m)
        >>> [p.value for p in proto.metadata_props if p.key == "jaxsens.layer_names"]
        ['["out"]']
    """
    _check_opset(opset)
    flavor = _flavor(keras_model)
    if flavor is None:
        raise ArgumentTypeError(
            f"keras_to_onnx() takes a Keras 3 or tf_keras model, got {type(keras_model).__module__}."
            f"{type(keras_model).__name__}"
        )
    if safe:
        _check_model_objects(keras_model)
    package = "keras" if flavor == "keras3" else "tf_keras"
    source = (
        f"{package} {_version(package)} {type(keras_model).__name__} {getattr(keras_model, 'name', '')!r}"
    )
    return _convert_keras_model(keras_model, flavor=flavor, opset=opset, source=source)


def keras_file_to_onnx(
    path: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    safe: bool = True,
    opset: int = 17,
) -> onnx.ModelProto:
    """Read a Keras file (or SavedModel folder) and convert it into ONNX.

    Args:
        path: a ``.keras`` file, a full-model ``.h5`` / ``.hdf5`` file, a structure ``.json`` written by
            ``model.to_json()``, or a TensorFlow SavedModel folder.
        weights: the weights ``.h5`` written by ``save_weights()`` for a ``.json`` structure file; default for
            ``<x>_structure.json``: ``<x>_weights.h5`` (or ``.hdf5``) in the same folder, when it exists.
        safe: inspect the stored configuration first and refuse ``Lambda`` layers and unknown custom classes
            (they run arbitrary Python code when loaded); ``safe=False`` opts in for files you trust.
        opset: ONNX opset to write, ``9 <= opset <= 18``.

    Returns:
        The ONNX model, with ``jaxsens.layer_names`` / ``jaxsens.source`` in its ``metadata_props``.

    Raises:
        ModelFileError: missing, truncated, corrupt or unrecognised file (the message names it).
        UnsafeModelError: a ``Lambda`` layer or custom class with ``safe=True`` (the message names the layer).
        MissingExtraError: TensorFlow / tf2onnx / tf_keras are not installed.

    Example:
        >>> proto = keras_file_to_onnx("x_structure.json", weights="x_weights.h5")  # doctest: +SKIP
    """
    from converters.onnx_to_jax.graph import check_model_path

    _check_opset(opset)
    path = os.fspath(path)
    check_model_path(path, "Keras model file", folder_ok=True)  # missing, permission denied, empty, not a file
    _tf()  # a clear MissingExtraError before reading the file
    if weights is not None:
        weights = os.fspath(weights)
        if not path.lower().endswith(".json"):
            raise ArgumentError(
                f"weights={weights!r} is only used with a structure .json file (the legacy to_json + "
                f"save_weights pair), but the model is {path!r}"
            )
    if os.path.isdir(path):
        return _saved_model_to_onnx(path, safe=safe, opset=opset)
    lower = path.lower()
    if lower.endswith(".json"):
        if weights is None:
            weights = _legacy_weights_path(path)
        model, flavor = _load_json_pair(path, weights, safe=safe)
        source = f"{path} + {weights}"
    elif lower.endswith((".h5", ".hdf5")):
        model, flavor = _load_h5(path, safe=safe)
        source = path
    elif lower.endswith(".keras"):
        model, flavor = _load_dot_keras(path, safe=safe)
        source = path
    else:
        raise ModelFileError(
            f"{path!r} is not a Keras format jaxsens reads: expected a .keras, .h5 / .hdf5 file, a structure "
            f".json (with weights=...), or a SavedModel folder holding saved_model.pb"
        )
    return _convert_keras_model(model, flavor=flavor, opset=opset, source=source)


def _legacy_weights_path(path: str) -> str:
    """The weights file of the legacy pair ``<x>_structure.json``: ``<x>_weights.h5`` (or ``.hdf5``) beside it.

    Only that exact sibling name in the same folder is taken (seed 000's naming); anything else raises, naming
    the file looked for and how to pass ``weights=``.
    """
    folder, name = os.path.split(path)
    stem = name[: -len(".json")]
    if not stem.lower().endswith("_structure"):
        raise ArgumentError(
            f"{path!r} holds only the model structure; pass its weights file: "
            f"load_model({path!r}, weights='..._weights.h5') (only a file named <x>_structure.json finds its "
            f"<x>_weights.h5 by itself)"
        )
    wanted = [os.path.join(folder, stem[: -len("_structure")] + "_weights" + ext) for ext in (".h5", ".hdf5")]
    found = [w for w in wanted if os.path.isfile(w)]
    if len(found) == 1:
        return found[0]
    if found:
        raise ArgumentError(
            f"{path!r}: both {found[0]!r} and {found[1]!r} are beside it; say which holds its weights: "
            f"load_model({path!r}, weights={found[0]!r}) (--weights on the command line)"
        )
    raise ModelFileNotFoundError(
        f"{path!r} holds only the model structure and its weights file {wanted[0]!r} (or .hdf5) does not exist; "
        f"pass the weights: load_model({path!r}, weights='....h5') (--weights on the command line)"
    )


def check_keras_config(config: Any, *, where: str = "the model") -> None:
    """Raise :class:`UnsafeModelError` if a Keras JSON configuration would run code when deserialized.

    Refused: ``Lambda`` layers (their function is marshalled Python byte code), objects from modules outside
    ``keras`` and class names that are neither built into Keras / ``tf_keras`` nor registered in this process
    (``keras.saving.register_keras_serializable``). The check reads the JSON only; nothing is deserialized.

    Args:
        config: the parsed JSON (``model.to_json()``, an ``.h5`` file's ``model_config``, a ``.keras`` file's
            ``config.json``).
        where: how to name the model in the message (a file name).
    """
    try:
        problems = list(_unsafe_objects(config))
    except RecursionError:
        raise ModelFileError(f"the configuration of {where} is nested too deeply to inspect (corrupt file?)") from None
    if not problems:
        return
    listed = "; ".join(f"layer {layer!r} ({what})" for layer, what in problems[:5])
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    raise UnsafeModelError(
        f"{where} contains objects that run arbitrary Python code when loaded: {listed}{more}. "
        f"Load it with safe=False only if you trust its source (e.g. jaxsens.load_model(..., safe=False))."
    )


# ------------------------------------------------------------------------------------------------------------
# safety checks
# ------------------------------------------------------------------------------------------------------------
_LAYER_KEYS = ("layers", "layer", "forward_layer", "backward_layer", "cell", "cells")


def _unsafe_objects(config, layer: str = "<model>", *, is_layer: bool = True) -> Iterator[tuple[str, str]]:
    """``(layer name, problem)`` for every object in a Keras JSON config that would run code when loaded."""
    if isinstance(config, list):
        for item in config:
            yield from _unsafe_objects(item, layer, is_layer=is_layer)
        return
    if not isinstance(config, dict):
        return
    if "class_name" in config:
        inner = config.get("config")
        if is_layer and isinstance(inner, dict) and isinstance(inner.get("name"), str):
            layer = inner["name"]
        reason = _object_problem(config)
        if reason:
            yield layer, reason
    for key, value in config.items():
        # compile_config (optimizer, losses, metrics) is never deserialized: models load with compile=False.
        if isinstance(value, dict | list) and key not in ("compile_config", "training_config"):
            yield from _unsafe_objects(
                value, layer, is_layer=key in _LAYER_KEYS or (key == "config" and is_layer)
            )


def _object_problem(obj: dict) -> str | None:
    cls = obj.get("class_name")
    module = obj.get("module")
    registered = obj.get("registered_name")
    if not isinstance(cls, str):
        return f"class_name {cls!r} is not a string"
    if cls in ("Lambda", "__lambda__"):
        return f"a {cls} layer, whose function is stored Python byte code"
    custom = _registered_objects()
    if cls in custom or (isinstance(registered, str) and registered in custom):
        return None  # registered by the user in this process
    if module is not None and not (module == "keras" or str(module).startswith("keras.")):
        return f"class {cls!r} from module {module!r}, which is not part of Keras"
    if cls.startswith("__") or cls == "function":
        return None  # Keras 3 serialization helpers (__tuple__, __keras_tensor__, keras functions by name)
    if cls not in _builtin_names():
        return f"class {cls!r}, which is neither a built-in Keras class nor registered"
    if registered is not None and registered != cls:
        return f"class {cls!r} registered as {registered!r}, which is not registered in this process"
    return None


_BUILTIN_NAMES: frozenset[str] | None = None


def _builtin_names() -> frozenset[str]:
    """Class names built into Keras 3 and ``tf_keras`` (layers, initializers, ..., models)."""
    global _BUILTIN_NAMES
    if _BUILTIN_NAMES is None:
        names = {"Functional", "Sequential", "Model", "InputLayer", "TFOpLambda", "SlicingOpLambda", "Policy"}
        parts = (
            "layers",
            "initializers",
            "regularizers",
            "constraints",
            "models",
            "optimizers",
            "losses",
            "metrics",
            "dtype_policies",
            "mixed_precision",
            "optimizers.schedules",
        )
        for root in ("keras", "tf_keras"):
            if root == "tf_keras" and "tf_keras" not in sys.modules and not _importable("tf_keras"):
                continue
            for part in parts:
                try:
                    mod = __import__(f"{root}.{part}", fromlist=["_"])
                except ImportError:
                    continue
                names.update(
                    n for n in dir(mod) if not n.startswith("_") and isinstance(getattr(mod, n), type)
                )
        names.discard("Lambda")
        _BUILTIN_NAMES = frozenset(names)
    return _BUILTIN_NAMES


def _registered_objects() -> dict[str, Any]:
    """Objects registered in this process (``register_keras_serializable``, ``custom_object_scope``)."""
    objects: dict[str, Any] = {}
    for root, attr in (("keras", "saving"), ("tf_keras", "utils")):
        mod = sys.modules.get(root)
        if mod is not None:
            with contextlib.suppress(Exception):
                objects.update(getattr(mod, attr).get_custom_objects())
    return objects


def _check_model_objects(model) -> None:
    """In-memory :func:`check_keras_config`: every (nested) layer must be a Keras class other than Lambda."""
    seen: set[int] = set()
    registered = {id(obj) for obj in _registered_objects().values()}

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        cls = type(layer)
        module = cls.__module__
        builtin = module.split(".")[0] in ("keras", "tf_keras")
        if cls.__name__ == "Lambda" or not (builtin or id(cls) in registered):
            what = (
                "a Lambda layer" if cls.__name__ == "Lambda" else f"custom class {module}.{cls.__qualname__}"
            )
            raise UnsafeModelError(
                f"layer {getattr(layer, 'name', '?')!r} is {what}, which runs arbitrary Python code; convert "
                f"it with safe=False if you trust it (e.g. jaxsens.Model.from_keras(model, safe=False))"
            )
        for child in getattr(layer, "layers", None) or ():
            visit(child)
        for attr in ("layer", "forward_layer", "backward_layer", "cell"):
            child = getattr(layer, attr, None)
            if child is not None and hasattr(child, "name") and not isinstance(child, str | int | float):
                visit(child)

    visit(model)


def _check_saved_model_ops(graph_def, path: str) -> None:
    ops = {n.op for n in graph_def.node}
    for fn in graph_def.library.function:
        ops.update(n.op for n in fn.node_def)
    bad = sorted(ops & _UNSAFE_TF_OPS)
    if bad:
        raise UnsafeModelError(
            f"SavedModel {path!r} runs TensorFlow ops that execute Python or touch files: {bad}; load it "
            f"with safe=False only if you trust its source"
        )


# ------------------------------------------------------------------------------------------------------------
# file loaders
# ------------------------------------------------------------------------------------------------------------
def _load_json_pair(path: str, weights: str, *, safe: bool):
    from converters.onnx_to_jax.graph import check_model_path

    check_model_path(weights, f"weights file (for structure file {path!r})")
    size = os.path.getsize(path)
    if size > MAX_KERAS_JSON_BYTES:
        raise ModelFileError(
            f"structure file {path!r} holds {size:,} bytes, more than the {MAX_KERAS_JSON_BYTES:,} bytes "
            f"(MAX_KERAS_JSON_BYTES) a Keras model structure needs; refusing to read it"
        )
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        config = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        raise ModelFileError(f"structure file {path!r} is not valid JSON (truncated or corrupt?): {e}") from e
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(f"structure file {path!r} is JSON but not a Keras model.to_json() structure")
    if safe:
        check_keras_config(config, where=f"structure file {path!r}")
    _check_h5(weights, what="weights file")
    version = str(config.get("keras_version", ""))
    flavor = "keras3" if version.startswith("3") or (not version and "module" in config) else "tf_keras"
    K = _keras_module(flavor)
    try:
        with _safe_mode_scope(flavor, safe), _quiet():
            model = K.models.model_from_json(text)
    except UnsafeModelError:
        raise
    except Exception as e:
        raise ModelFileError(f"could not rebuild the model from {path!r}: {type(e).__name__}: {e}") from e
    try:
        with _quiet():
            model.load_weights(weights)
    except Exception as e:
        raise ModelFileError(
            f"could not load weights {weights!r} into the structure from {path!r} (do they belong together? "
            f"is the file truncated?): {type(e).__name__}: {e}"
        ) from e
    return model, flavor


def _check_h5(path: str, *, what: str) -> dict:
    """Open an HDF5 file (clear error if it is not one) and return its root attributes."""
    h5py = require("h5py", "keras", "Reading Keras .h5 files")
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"{what} {path!r} is empty")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
            # Touch every dataset's header: a cut-off file fails here, with its name, not deep inside Keras.
            f.visititems(lambda name, obj: obj.shape if isinstance(obj, h5py.Dataset) else None)
    except OSError as e:
        raise ModelFileError(
            f"{what} {path!r} is not a readable HDF5 file (truncated or corrupt?): {e}"
        ) from e
    try:
        return {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in attrs.items()}
    except UnicodeDecodeError as e:
        raise ModelFileError(f"{what} {path!r} has an attribute that is not UTF-8 text (corrupt file?): {e}") from e


def _load_h5(path: str, *, safe: bool):
    attrs = _check_h5(path, what="Keras .h5 file")
    raw = attrs.get("model_config")
    if raw is None:
        raise ModelFileError(
            f"{path!r} holds only weights (no model_config); pass the structure file and this as weights: "
            f"load_model('x_structure.json', weights={path!r})"
        )
    try:
        config = json.loads(raw)
    except (TypeError, ValueError, RecursionError) as e:
        raise ModelFileError(f"{path!r} has a corrupt model_config attribute: {e}") from e
    if safe:
        check_keras_config(config, where=f"Keras file {path!r}")
    version = str(attrs.get("keras_version", ""))
    if version.startswith("3"):
        order = ["keras3"]
    elif version:
        order = ["tf_keras"]  # Keras 1.x / 2.x files keep their semantics (hard_sigmoid, RNN weights layout)
    else:
        order = ["keras3", "tf_keras"]
    errors = []
    for flavor in order:
        K = _keras_module(flavor)
        try:
            with _safe_mode_scope(flavor, safe), _quiet():
                return K.models.load_model(path, compile=False, safe_mode=safe), flavor
        except Exception as e:
            errors.append(f"{'Keras 3' if flavor == 'keras3' else 'tf_keras'}: {type(e).__name__}: {e}")
    raise ModelFileError(f"could not load Keras file {path!r} (truncated or corrupt?): {'; '.join(errors)}")


def _check_zip_members(z: zipfile.ZipFile, path: str) -> None:
    """Refuse members whose declared size exceeds its cap, or that inflate like a zip bomb (module docstring)."""
    from converters.onnx_to_jax.registry import max_tensor_bytes

    budget = max_tensor_bytes()
    for info in z.infolist():
        is_json = info.filename in ("config.json", "metadata.json")
        cap, what = (MAX_KERAS_JSON_BYTES, "MAX_KERAS_JSON_BYTES") if is_json else (budget, "JAXSENS_MAX_TENSOR_BYTES")
        if info.file_size > cap:
            raise ModelFileError(
                f"Keras file {path!r}: member {info.filename!r} inflates to {info.file_size:,} bytes, more than the "
                f"cap of {cap:,} bytes ({what}); refusing to read it (a zip bomb, or a corrupt file)"
            )
        if info.file_size > ZIP_RATIO_MIN_BYTES and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise ModelFileError(
                f"Keras file {path!r}: member {info.filename!r} inflates {ratio:.0f} "
                f"times ({info.compress_size:,} -> {info.file_size:,} bytes), more than the {MAX_ZIP_RATIO}x a model "
                f"file may (Keras stores members uncompressed); refusing it as a zip bomb"
            )


def _read_member(z: zipfile.ZipFile, name: str, cap: int, path: str) -> bytes:
    """A member's bytes, reading at most ``cap`` (whatever the archive's header declares)."""
    with z.open(name) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ModelFileError(f"Keras file {path!r}: member {name!r} is larger than the cap of {cap:,} bytes")
    return data


def _load_dot_keras(path: str, *, safe: bool):
    try:
        with zipfile.ZipFile(path) as z:
            _check_zip_members(z, path)
            bad = z.testzip()
            if bad is not None:
                raise ModelFileError(f"Keras file {path!r} is corrupt: member {bad!r} fails its CRC check")
            config = json.loads(_read_member(z, "config.json", MAX_KERAS_JSON_BYTES, path))
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, RecursionError, OSError, EOFError,
            NotImplementedError) as e:  # JSONDecodeError / UnicodeDecodeError are ValueErrors
        raise ModelFileError(
            f"{path!r} is not a readable .keras archive (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from e
    if safe:
        check_keras_config(config, where=f"Keras file {path!r}")
    K = _keras_module("keras3")
    try:
        with _quiet():
            model = K.saving.load_model(path, compile=False, safe_mode=safe)
    except Exception as e:
        raise ModelFileError(f"could not load Keras file {path!r}: {type(e).__name__}: {e}") from e
    return model, "keras3"


def _saved_model_to_onnx(path: str, *, safe: bool, opset: int) -> onnx.ModelProto:
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise ModelFileError(
            f"{path!r} is a folder, not a model file, and not a TensorFlow SavedModel (no saved_model.pb); pass "
            f"the model file inside it (e.g. model.keras) or the folder written by model.export(...) / "
            f"tf.saved_model.save(...)"
        )
    tf, tf2onnx = _tf()
    try:
        with _quiet():
            loaded = tf.saved_model.load(path)
    except Exception as e:
        raise ModelFileError(
            f"could not read SavedModel {path!r} (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from e
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if not signatures:
        raise ModelFileError(
            f"SavedModel {path!r} has no signatures to convert (save it with a serving signature)"
        )
    key = "serving_default" if "serving_default" in signatures else min(signatures)
    if len(signatures) > 1 and key != "serving_default":
        raise ModelFileError(
            f"SavedModel {path!r} has several signatures {sorted(signatures)} and none is 'serving_default'"
        )
    sig = signatures[key]
    if safe:
        _check_saved_model_ops(sig.graph.as_graph_def(), path)
    args, kwargs = sig.structured_input_signature
    if args:
        raise ConversionError(
            f"SavedModel {path!r}: signature {key!r} takes positional inputs; expected keywords"
        )
    names = sorted(kwargs)
    specs = [tf.TensorSpec(kwargs[n].shape, kwargs[n].dtype, name=n) for n in names]
    outputs = sig.structured_outputs
    out_keys = sorted(outputs) if isinstance(outputs, dict) else None

    def call(*xs):
        out = sig(**dict(zip(names, xs)))
        return [out[k] for k in out_keys] if out_keys is not None else tf.nest.flatten(out)

    fn = tf.function(call, input_signature=specs)
    proto = _from_function(tf2onnx, fn, specs, opset, what=f"SavedModel {path!r}")
    if out_keys is not None and len(out_keys) == len(proto.graph.output):
        _name_outputs(proto.graph, [str(k) for k in out_keys])  # the signature's output names (Keras layers)
    _set_metadata(proto, {SOURCE_KEY: f"{path} (SavedModel, signature {key!r})"})
    return proto


# ------------------------------------------------------------------------------------------------------------
# conversion
# ------------------------------------------------------------------------------------------------------------
def _convert_keras_model(model, *, flavor: str, opset: int, source: str) -> onnx.ModelProto:
    tf, tf2onnx = _tf()
    K = _keras_module(flavor)
    inputs = _model_inputs(model)
    outputs = list(model.outputs) if getattr(model, "outputs", None) else []
    n_out = len(outputs)
    if not n_out:
        raise ConversionError(
            f"Keras model {model.name!r} has no symbolic outputs; build it with keras.Input (a Sequential "
            f"starting with keras.Input, or a functional model)"
        )
    input_names = _input_names(inputs)
    specs = [
        tf.TensorSpec((None, *tuple(t.shape)[1:]), _dtype_name(t.dtype), name=n)
        for t, n in zip(inputs, input_names)
    ]
    # A wider functional model that also returns every layer's output: after conversion these extra graph
    # outputs identify each layer's tensor exactly (names cannot: TensorFlow uniquifies name scopes, so
    # layer "dense" may become scope "dense_1").
    on_path = _layer_outputs(model)
    layers = [layer.name for layer in _flat_layers(model) if id(layer) in on_path]
    layer_outputs = [on_path[id(layer)] for layer in _flat_layers(model) if id(layer) in on_path]
    with _quiet():
        wide = K.Model(inputs, outputs + layer_outputs)

    def call(*xs):
        result = wide(list(xs) if len(xs) > 1 else xs[0], training=False)
        return list(result) if isinstance(result, list | tuple) else [result]

    fn = tf.function(call, input_signature=specs)
    proto = _from_function(tf2onnx, fn, specs, opset, what=f"Keras model {model.name!r}")
    graph_outputs = [o.name for o in proto.graph.output]
    if len(graph_outputs) != n_out + len(layers):
        raise ConversionError(
            f"tf2onnx returned {len(graph_outputs)} outputs for Keras model {model.name!r}; expected "
            f"{n_out + len(layers)}"
        )
    layer_tensors = dict(zip(layers, graph_outputs[n_out:]))
    keep = graph_outputs[:n_out]
    kept = [o for o in proto.graph.output if o.name in keep]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    layer_tensors = _attach_layers(proto.graph, layer_tensors)
    _name_outputs(proto.graph, [_output_layer_name(model, t, i) for i, t in enumerate(outputs)])
    _set_metadata(
        proto,
        {
            LAYER_NAMES_KEY: json.dumps(layers),
            LAYER_OUTPUTS_KEY: json.dumps(layer_tensors),
            LAYER_PARAMS_KEY: json.dumps(_param_counts(model, on_path)),
            SOURCE_KEY: source,
        },
    )
    return proto


def _param_counts(model, on_path) -> dict[str, int]:
    """Keras' ``count_params()`` of every layer on the output path (layers that cannot count are left out)."""
    counts = {}
    for layer in _flat_layers(model):
        if id(layer) in on_path:
            try:
                counts[layer.name] = int(layer.count_params())
            except (ValueError, AttributeError):  # an unbuilt layer: the graph's own count is used instead
                continue
    return counts


def _from_function(tf2onnx, fn, specs, opset: int, *, what: str) -> onnx.ModelProto:
    try:
        with _quiet():
            proto, _ = tf2onnx.convert.from_function(
                fn, input_signature=specs, opset=opset, custom_op_handlers={"Erfc": (_erfc_handler, [])}
            )
    except Exception as e:
        raise ConversionError(f"tf2onnx could not convert {what}: {type(e).__name__}: {e}") from e
    # tf2onnx leaves TensorFlow ops it cannot map in the graph (and only logs them): refuse such a graph here.
    unknown = sorted(
        {
            f"{n.domain + ':' if n.domain else ''}{n.op_type}"
            for g in _graphs(proto.graph)
            for n in g.node
            if not onnx.defs.has(n.op_type, n.domain)
        }
    )
    if unknown:
        raise ConversionError(f"tf2onnx could not convert the TensorFlow op(s) {unknown} of {what} to ONNX")
    return proto


def _erfc_handler(ctx, node, name, args):
    """TensorFlow ``Erfc`` (in the exact ``gelu``) as ONNX ``1 - Erf(x)``; tf2onnx has no mapping for it."""
    import numpy as np
    from tf2onnx import utils

    dtype = ctx.get_dtype(node.input[0])
    node.type = "Erf"
    node.domain = ""
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, utils.map_onnx_to_numpy_type(dtype)))
    sub = ctx.insert_new_node_on_output(
        "Sub", node.output[0], name=utils.make_name(f"{name}_erfc"), inputs=[one.output[0], node.output[0]]
    )
    ctx.set_dtype(sub.output[0], dtype)
    ctx.copy_shape(node.output[0], sub.output[0])


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from _graphs(sub)


def _attach_layers(graph: onnx.GraphProto, layer_tensors: dict[str, str]) -> dict[str, str]:
    """Tie every Keras layer to one node on the data path and name each node after its layer.

    ``layer_tensors`` maps each layer to the (already removed) extra graph output holding its value. The
    helper ``Identity`` nodes tf2onnx wrote for those outputs are dropped, so each layer maps to the tensor
    the model itself computes. A node belongs to the first layer (in Keras order) whose output depends on it
    and is renamed ``"<layer>/<tf name>"``: every node of a layer is an ancestor of the layer's output, so in
    the topologically sorted list the node producing that output comes last among its layer's nodes, which is
    how :class:`~converters.onnx_to_jax.graph.OnnxFunction` finds layer outputs. A layer whose value an
    earlier layer already computed (Dropout at inference) gets an ``Identity`` node that the later layers then
    read.

    Returns:
        ``{layer name: ONNX tensor holding its output}``.
    """
    nodes = list(graph.node)
    graph_outputs = {o.name for o in graph.output}
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    consumers: dict[str, list[int]] = {}
    deps = [list(node.input) + sorted(_subgraph_refs(node)) for node in nodes]
    for i, names in enumerate(deps):
        for t in names:
            consumers.setdefault(t, []).append(i)

    # 1. follow the extra outputs' Identity chains back to the tensors the model computes.
    dropped: set[int] = set()
    resolved: dict[str, str] = {}
    for layer, tensor in layer_tensors.items():
        while (
            tensor in producer
            and nodes[producer[tensor]].op_type == "Identity"
            and tensor not in graph_outputs
            and not [c for c in consumers.get(tensor, ()) if c not in dropped]
        ):
            dropped.add(producer[tensor])
            tensor = nodes[producer[tensor]].input[0]
        resolved[layer] = tensor

    # 2. owners: the first layer whose output needs the node.
    owner: dict[int, str] = {}
    order = {layer: k for k, layer in enumerate(resolved)}
    aliases: list[tuple[str, str, onnx.NodeProto]] = []  # (layer, tensor, Identity node)
    for layer, tensor in resolved.items():
        first = producer.get(tensor)
        if first is None or first in owner:
            ident = onnx.helper.make_node("Identity", [tensor], [f"{layer}/output"], name=f"{layer}/Identity")
            aliases.append((layer, tensor, ident))
            resolved[layer] = ident.output[0]
            continue
        stack = [first]
        while stack:
            i = stack.pop()
            if i in owner or i in dropped:
                continue
            owner[i] = layer
            stack.extend(producer[t] for t in deps[i] if t in producer and producer[t] not in owner)
    # Nodes after the last layer output (the Identity feeding a model output) belong to the layer they read.
    for i, node_deps in enumerate(deps):
        if i not in owner and i not in dropped:
            parent = next(
                (owner[producer[t]] for t in node_deps if t in producer and producer[t] in owner), None
            )
            if parent is not None:
                owner[i] = parent

    # 3. later layers read an alias layer's Identity instead of the shared tensor (same values).
    for layer, tensor, ident in aliases:
        for c in consumers.get(tensor, ()):
            if c in dropped or order.get(owner.get(c), len(order)) <= order[layer]:
                continue
            node = nodes[c]
            for k, name in enumerate(node.input):
                if name == tensor:
                    node.input[k] = ident.output[0]

    for i, layer in owner.items():
        nodes[i].name = f"{layer}/{nodes[i].name or nodes[i].op_type + '_' + str(i)}"
    after: dict[int, list[onnx.NodeProto]] = {}
    for _, tensor, ident in aliases:
        after.setdefault(producer.get(tensor, -1), []).append(ident)
    ordered = list(after.get(-1, ()))
    for i, node in enumerate(nodes):
        if i not in dropped:
            ordered.append(node)
            ordered.extend(after.get(i, ()))
    del graph.node[:]
    graph.node.extend(ordered)
    return resolved


def _subgraph_refs(node: onnx.NodeProto) -> set[str]:
    refs: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for inner in g.node:
                refs.update(inner.input)
                refs.update(_subgraph_refs(inner))
    return refs


def _output_layer_name(model, tensor, index: int) -> str:
    """The name of the Keras layer computing the model output ``tensor`` (the ``index``-th output)."""
    history = getattr(tensor, "_keras_history", None)
    op = getattr(history, "operation", None) or getattr(history, "layer", None)
    if op is None and history is not None:
        op = history[0]
    name = getattr(op, "name", None)
    if not name:
        names = getattr(model, "output_names", None) or []
        name = names[index] if index < len(names) else f"output_{index}"
    return str(name)


def _name_outputs(graph: onnx.GraphProto, names: list[str]) -> None:
    """Give the graph's outputs readable names (the Keras output layers, e.g. ``dense_2``) instead of tf2onnx's
    ``Identity:0``: each output becomes an ``Identity`` of the tensor it was, so every node keeps its tensors
    (the layer map of :func:`_attach_layers` stays valid). A name already used in the graph, or given twice, gets
    a suffix ``/output``, ``/output_1``, ..."""
    taken = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    for g in _graphs(graph):
        for n in g.node:
            taken.update(n.input)
            taken.update(n.output)
    for vi, name in zip(graph.output, names):
        if not name or name == vi.name:
            continue
        new, k = name, 0
        while new in taken:
            new = f"{name}/output" + (f"_{k}" if k else "")
            k += 1
        taken.add(new)
        graph.node.append(onnx.helper.make_node("Identity", [vi.name], [new], name=f"{name}/output_name"))
        vi.name = new


def _set_metadata(proto: onnx.ModelProto, values: dict[str, str]) -> None:
    keep = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in values.items():
        proto.metadata_props.add(key=k, value=v)


def _model_inputs(model) -> list:
    try:
        inputs = model.inputs
    except Exception:
        inputs = None
    if not inputs:
        raise ConversionError(
            f"Keras model {getattr(model, 'name', '?')!r} has no known inputs; build it with keras.Input "
            f"(a Sequential starting with keras.Input, or a functional model); subclassed models: wrap them "
            f"as keras.Model(inputs, subclassed(inputs))"
        )
    return list(inputs)


def _input_names(inputs) -> list[str]:
    names = []
    for i, t in enumerate(inputs):
        history = getattr(t, "_keras_history", None)
        op = getattr(history, "operation", None) or getattr(history, "layer", None)
        name = getattr(op, "name", None) or getattr(t, "name", None) or f"input_{i}"
        names.append(str(name).split(":")[0])
    if len(set(names)) != len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    return names


def _layer_outputs(model) -> dict[int, Any]:
    """``{id(layer): its first output tensor}`` for the layer calls the model's outputs are computed from.

    Walks the Keras graph back from ``model.outputs`` (``_keras_history`` -> inbound node -> its inputs), so only
    the calls on the model's own path count: a reloaded ``Sequential`` may hold a second, unused call of each
    layer, and a nested model's ``output`` belongs to its own inner graph. A layer called several times is
    represented by its first call.
    """
    calls: dict[int, tuple[int, Any]] = {}  # id(layer) -> (node index, node)
    seen: set[int] = set()
    stack = list(model.outputs)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            continue
        layer, node_index = history[0], history[1]
        node = layer._inbound_nodes[node_index]
        if id(layer) not in calls or node_index < calls[id(layer)][0]:
            calls[id(layer)] = (node_index, node)
        inputs = getattr(node, "keras_inputs", None)
        stack.extend(_flatten(inputs if inputs is not None else node.input_tensors))
    return {key: _flatten(node.output_tensors)[0] for key, (_, node) in calls.items()}


def _flatten(structure) -> list:
    if isinstance(structure, dict):
        return [v for k in sorted(structure) for v in _flatten(structure[k])]
    if isinstance(structure, list | tuple):
        return [v for item in structure for v in _flatten(item)]
    return [] if structure is None else [structure]


def _flat_layers(model) -> list:
    """The model's layers in Keras order, without input layers."""
    return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]


def _dtype_name(dtype) -> str:
    return getattr(dtype, "name", None) or str(dtype)


def _flavor(model) -> str | None:
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root == "tf_keras":
            return "tf_keras"
        if root == "keras":
            return "keras3"
    return None


def _check_opset(opset) -> None:
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ArgumentError(
            f"opset={opset!r} is not supported; tf2onnx writes opsets {MIN_OPSET}..{MAX_OPSET} (use 17)"
        )


# ------------------------------------------------------------------------------------------------------------
# environment: optional imports, logging
# ------------------------------------------------------------------------------------------------------------
def _tf():
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = require("tensorflow", "keras", "Converting Keras models")
    tf2onnx = require("tf2onnx", "keras", "Converting Keras models")
    return tf, tf2onnx


def _keras_module(flavor: str):
    _tf()
    if flavor == "keras3":
        return require("keras", "keras", "Loading Keras 3 models")
    try:
        return require(
            "tf_keras", "keras", "Loading Keras 2 files (to_json + save_weights pairs, Keras 2 .h5)"
        )
    except MissingExtraError as e:
        raise MissingExtraError(
            f"{e}; tf_keras itself installs with: pip install --no-deps tf-keras==2.21.0"
        ) from e


def _version(module: str) -> str:
    mod = sys.modules.get(module)
    return str(getattr(mod, "__version__", "?"))


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def _safe_mode_scope(flavor: str, safe: bool):
    """Keras' own safe mode (refuses Lambda byte code) for loaders that take no ``safe_mode`` argument."""
    module = (
        "keras.src.saving.serialization_lib"
        if flavor == "keras3"
        else "tf_keras.src.saving.serialization_lib"
    )
    try:
        scope = __import__(module, fromlist=["SafeModeScope"]).SafeModeScope(safe)
    except (ImportError, AttributeError):  # pragma: no cover - a Keras without the private scope
        scope = contextlib.nullcontext()
    with scope:
        yield


@contextlib.contextmanager
def _quiet():
    """Silence TensorFlow / tf2onnx / absl logging and Python warnings for the duration."""
    loggers = [logging.getLogger(n) for n in ("tensorflow", "tf2onnx", "absl", "keras", "h5py")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
