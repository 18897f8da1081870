"""ONNX graph -> a pure JAX function.

:class:`OnnxFunction` reads an ONNX model once: it decodes initializers, splits them into *parameters* (floating
weights: arguments of the function, never constants baked into a trace) and *static constants* (integer tensors,
anything feeding a shape-like input), checks every op against the registry, and records which tensors depend on the
data (the model's "layers"). Calling it interprets the node list with the registered ``jnp`` implementations. Nodes
whose inputs are all static (``Shape`` -> ``Gather`` -> ``Concat`` -> ``Reshape`` chains) are evaluated with numpy-
valued results at trace time, so the compiled program contains only the data path.

Two ``OnnxFunction`` objects of the same architecture (same nodes, attributes, static constants and weight shapes)
compare and hash equal, so two weekly versions of one model share every compiled kernel.

Untrusted files: :func:`load_onnx_proto` reads external data only from inside the model's folder (every tensor ONNX
allows to be external: initializers, tensor attributes such as a ``Constant``'s ``value``, sparse tensors, in every
sub-graph), and checks each tensor's declared dims against its data and the byte budget before anything is decoded.
The graph's structure is checked before it is interpreted: nodes in topological order, no cycle, one producer per
tensor, every input produced by a node, an initializer or a graph input. Each problem is a
:class:`~converters.errors.ConversionError` subclass naming the tensor or node.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converters.errors import (
    ArgumentError,
    ArgumentTypeError,
    ConversionError,
    ModelFileError,
    ModelFileNotFoundError,
    UnsafeModelError,
    UnsupportedOpError,
)
from converters.onnx_to_jax import ops as _ops  # noqa: F401 - fills the op registry
from converters.onnx_to_jax.registry import OpContext, default_opset, get_op, max_tensor_bytes, supported_ops
from converters.onnx_to_jax.static import is_static

__all__ = [
    "LAYER_NAMES_KEY",
    "OnnxFunction",
    "check_model_path",
    "check_tensors",
    "check_unroll",
    "load_onnx_proto",
]

# metadata_props key under which our Keras converter stores the Keras layer names (JSON list).
LAYER_NAMES_KEY = "jaxsens.layer_names"
LAYER_OUTPUTS_KEY = "jaxsens.layer_outputs"  # JSON {layer name: tensor name}
FEATURE_NAMES_KEY = "jaxsens.feature_names"
OUTPUT_NAMES_KEY = "jaxsens.output_names"

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def check_model_path(path: str, what: str = "model file", *, folder_ok: bool = False) -> os.stat_result:
    """``os.stat(path)`` with errors that name the file: missing, permission denied, a folder, not a regular file,
    empty. Raises :class:`ModelFileNotFoundError` / :class:`ModelFileError`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFileNotFoundError(f"{what} {path!r} does not exist") from None
    except PermissionError:
        raise ModelFileError(_permission_denied(path, what)) from None
    except (OSError, ValueError) as e:  # ENOTDIR, ELOOP, ENAMETOOLONG, a NUL byte in the name
        raise ModelFileError(f"{what} {path!r} cannot be read: {e}") from None
    if stat.S_ISDIR(st.st_mode):
        if folder_ok:
            return st
        raise ModelFileError(
            f"{path!r} is a folder, not a model file; pass the model file inside it (e.g. model.onnx, "
            f"model.keras) or, for TensorFlow, a SavedModel folder holding saved_model.pb"
        )
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{what} {path!r} is not a regular file (a pipe or a device?); pass a model file")
    if st.st_size == 0:
        raise ModelFileError(f"{what} {path!r} is empty")
    try:  # readable by this user? (os.access answers for the real uid and is always True for root)
        with open(path, "rb"):
            pass
    except PermissionError:
        raise ModelFileError(_permission_denied(path, what)) from None
    except OSError as e:
        raise ModelFileError(f"{what} {path!r} cannot be read: {e}") from None
    return st


def _permission_denied(path: str, what: str) -> str:
    return (
        f"{what} {path!r}: permission denied (this user may not read the file or enter one of its folders); "
        f"check its permissions"
    )


def load_onnx_proto(source, *, base_dir: str | os.PathLike | None = None) -> tuple[onnx.ModelProto, str | None]:
    """Read an ONNX model from a path, bytes or a ``ModelProto``, checking every tensor before it is decoded.

    External data (initializers, ``Constant`` values and other tensor attributes, sparse tensors, in the main graph
    and in every sub-graph) is read only from inside the model's folder: the file's own folder, or ``base_dir`` for
    bytes / a ``ModelProto`` (without one, such a model is refused). Every tensor's declared dims are checked
    against its data and the byte budget (:func:`~converters.onnx_to_jax.registry.max_tensor_bytes`) first.

    Returns ``(model_proto, base_dir)``; a given ``ModelProto`` is copied, not changed, when external data is read.

    Raises:
        ModelFileNotFoundError: the path does not exist.
        ModelFileError: unreadable, empty, truncated or corrupt file, a folder, bad or missing external data, a
            tensor whose dims disagree with its data or exceed the budget (the message names the tensor).
        UnsafeModelError: external data outside the model's folder, at an absolute path, or without a folder.
    """
    if isinstance(source, onnx.ModelProto):
        proto = source
    elif isinstance(source, bytes | bytearray):
        proto = _parse(bytes(source), "the given bytes are not a valid ONNX model")
    elif isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if base_dir is not None:
            raise ArgumentError(
                f"base_dir={os.fspath(base_dir)!r} is only for a model given as bytes or a ModelProto; the "
                f"external data of {path!r} is always read from that file's own folder"
            )
        check_model_path(path, "ONNX file")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except PermissionError:
            raise ModelFileError(_permission_denied(path, "ONNX file")) from None
        except OSError as e:
            raise ModelFileError(f"ONNX file {path!r} cannot be read: {e}") from None
        proto = _parse(data, f"ONNX file {path!r} is truncated or corrupt")
        base_dir = os.path.dirname(os.path.abspath(path))
    else:
        raise ArgumentTypeError(
            f"an ONNX model is a path, bytes or an onnx.ModelProto, got {type(source).__name__}"
        )
    if base_dir is not None:
        base_dir = os.fspath(base_dir)
        if not os.path.isdir(base_dir):
            raise ArgumentError(f"base_dir={base_dir!r} is not a folder (the folder holding the external data)")
    if not proto.graph.node and not proto.graph.output:
        raise ModelFileError("the ONNX model has an empty graph (truncated or corrupt file?)")
    if proto is source and any(_is_external(t) for t, _ in _model_tensors(proto)):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)  # resolving external data writes into the tensors: never into the caller's proto
    check_tensors(proto, base_dir)
    return proto, base_dir


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as e:
        raise ModelFileError(f"{what}: {type(e).__name__}: {e}") from e
    bad = _non_utf8_field(proto)
    if bad:  # protobuf hands such string fields back as bytes: names would not match, JSON would not decode
        raise ModelFileError(f"{what}: {bad} is not valid UTF-8 text")
    return proto


def _non_utf8_field(message, path: str = "model") -> str | None:
    """The path of the first string field of ``message`` (recursively) that holds bytes that are not UTF-8."""
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:  # protobuf < 5
            repeated = field.label == FieldDescriptor.LABEL_REPEATED
        items = list(value) if repeated else [value]
        for k, item in enumerate(items):
            here = f"{path}.{field.name}" + (f"[{k}]" if repeated else "")
            if field.type == FieldDescriptor.TYPE_STRING and not isinstance(item, str):
                return f"{here} ({bytes(item)[:40]!r})"
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                bad = _non_utf8_field(item, here)
                if bad:
                    return bad
    return None


# ---------------------------------------------------------------- tensors: dims, data, external data
# Sub-byte element types: bits per element (packed in raw_data).
_BITS = {
    getattr(onnx.TensorProto, name): bits
    for name, bits in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2),
                       ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6))
    if hasattr(onnx.TensorProto, name)
}
_COMPLEX = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}


def _model_tensors(proto: onnx.ModelProto):
    """``(tensor, label)`` for every ``TensorProto`` the converter may decode, in every (sub-)graph."""
    for kind, obj, label in _graph_items(proto.graph, ""):
        if kind == "tensor":
            yield obj, label
        else:
            yield obj.values, f"{label} (values)"
            yield obj.indices, f"{label} (indices)"


def _graph_items(graph: onnx.GraphProto, where: str):
    """``("tensor" | "sparse", proto, label)`` for the tensors of ``graph`` and of its sub-graphs, recursively:
    initializers, sparse initializers, and every tensor / sparse tensor attribute of every node."""
    for t in graph.initializer:
        yield "tensor", t, f"initializer {t.name!r}{where}"
    for sp in graph.sparse_initializer:
        yield "sparse", sp, f"sparse initializer {sp.values.name!r}{where}"
    for i, n in enumerate(graph.node):
        node = f"{n.op_type} node {n.name or f'{n.op_type}_{i}'!r}"
        for a in n.attribute:
            label = f"attribute {a.name!r} of {node}{where}"
            # every field that may hold a tensor, whatever the declared attribute type says
            if a.HasField("t"):
                yield "tensor", a.t, label
            for k, t in enumerate(a.tensors):
                yield "tensor", t, f"{label} (tensor {k})"
            if a.HasField("sparse_tensor"):
                yield "sparse", a.sparse_tensor, label
            for k, sp in enumerate(a.sparse_tensors):
                yield "sparse", sp, f"{label} (sparse tensor {k})"
            inner = f" (in a sub-graph of {node}{where})"
            if a.HasField("g"):
                yield from _graph_items(a.g, inner)
            for g in a.graphs:
                yield from _graph_items(g, inner)


def _is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL


def check_tensors(proto: onnx.ModelProto, base_dir: str | None = None) -> None:
    """Check every tensor of ``proto`` (see :func:`load_onnx_proto`) and read its external data, in place.

    Nothing is decoded: the checks read dims, data types and data lengths, so a tensor declaring ``[10**12]``
    elements is refused before anything is allocated.
    """
    budget = max_tensor_bytes()
    root = None if base_dir is None else os.path.realpath(base_dir)
    for kind, obj, label in _graph_items(proto.graph, ""):
        if kind == "tensor":
            _check_tensor(obj, label, root, budget)
        else:
            _check_sparse(obj, label, root, budget)


def _tensor_size(t: onnx.TensorProto, label: str, budget: int) -> tuple[int, int | None]:
    """``(n_elements, n_bytes of raw data or None for strings)``, refusing unknown types, negative dims and
    tensors above the byte budget."""
    try:
        if t.data_type == onnx.TensorProto.UNDEFINED:
            raise KeyError(t.data_type)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    except (KeyError, ValueError, TypeError):
        raise ModelFileError(f"{label} has an unknown data type {t.data_type} (corrupt file?)") from None
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        raise ModelFileError(f"{label} declares negative dims {dims} (corrupt file?)")
    n = math.prod(dims)
    if t.data_type == onnx.TensorProto.STRING:
        return n, None
    # decoded size (sub-byte types unpack to one byte per element) against the budget
    decoded = n * dtype.itemsize
    if decoded > budget:
        raise ModelFileError(
            f"{label} declares dims {dims}: {decoded:,} bytes of {dtype.name}, more than the budget of {budget:,} "
            f"bytes per tensor (corrupt file? raise JAXSENS_MAX_TENSOR_BYTES if the tensor is real)"
        )
    bits = _BITS.get(t.data_type)
    return n, (n * bits + 7) // 8 if bits else decoded


def _check_tensor(t: onnx.TensorProto, label: str, root: str | None, budget: int) -> None:
    n, nbytes = _tensor_size(t, label, budget)
    dims = list(t.dims)
    if t.HasField("segment"):
        raise ModelFileError(f"{label} is a segment of a larger tensor, which jaxsens does not read")
    if _is_external(t):
        if nbytes is None:
            raise ModelFileError(f"{label} is a string tensor stored as external data, which ONNX does not allow")
        _read_external(t, label, root, nbytes)
    if t.HasField("raw_data") or t.data_type in _BITS:
        if nbytes is not None and t.HasField("raw_data") and len(t.raw_data) != nbytes:
            raise ModelFileError(
                f"{label} holds {len(t.raw_data):,} bytes of data, but its dims {dims} declare {nbytes:,} bytes "
                f"(truncated or corrupt file?)"
            )
        return
    field = helper.tensor_dtype_to_field(t.data_type)
    count = len(getattr(t, field))
    expected = 2 * n if t.data_type in _COMPLEX else n
    if count != expected:
        raise ModelFileError(
            f"{label} holds {count:,} values, but its dims {dims} declare {expected:,} (truncated or corrupt file?)"
        )


def _check_sparse(sp: onnx.SparseTensorProto, label: str, root: str | None, budget: int) -> None:
    dims = list(sp.dims)
    if any(d < 0 for d in dims):
        raise ModelFileError(f"{label} declares negative dims {dims} (corrupt file?)")
    _check_tensor(sp.values, f"{label} (values)", root, budget)
    _check_tensor(sp.indices, f"{label} (indices)", root, budget)
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(sp.values.data_type)).itemsize
    size = math.prod(dims)
    if size * itemsize > budget:
        raise ModelFileError(
            f"{label} declares dense dims {dims}: {size * itemsize:,} bytes, more than the budget of {budget:,} "
            f"bytes per tensor (corrupt file? raise JAXSENS_MAX_TENSOR_BYTES if the tensor is real)"
        )
    nnz = math.prod(sp.values.dims) if len(sp.values.dims) == 1 else -1
    idims = list(sp.indices.dims)
    if nnz < 0 or idims not in ([nnz], [nnz, len(dims)]):
        raise ModelFileError(
            f"{label} has values of shape {list(sp.values.dims)} and indices of shape {idims}; ONNX requires "
            f"values [NNZ] and indices [NNZ] (linearised) or [NNZ, {len(dims)}]"
        )
    indices = to_array(sp.indices, f"{label} (indices)")
    bounds = np.asarray([size]) if indices.ndim == 1 else np.asarray(dims)
    if indices.size and (indices.dtype.kind not in "iu" or (indices < 0).any() or (indices >= bounds).any()):
        raise ModelFileError(f"{label} has indices outside its dims {dims} (corrupt file?)")


def _read_external(t: onnx.TensorProto, label: str, root: str | None, nbytes: int) -> None:
    """Read ``t``'s external data from inside ``root`` into ``raw_data`` (checked: location, offset, length)."""
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    if not location:
        raise ModelFileError(f"{label} is stored as external data without a location (corrupt file?)")
    if root is None:
        raise UnsafeModelError(
            f"{label} is stored in an external file {location!r}, but the model was given as bytes / a "
            f"ModelProto, so there is no folder to read it from; load the model from its file path, or pass "
            f"base_dir=<the folder holding {location!r}>"
        )
    if os.path.isabs(location) or location.startswith(("/", "\\")) or os.path.splitdrive(location)[0]:
        raise UnsafeModelError(
            f"{label} points to external data at the absolute path {location!r}; external data must be inside "
            f"the model's folder {root!r} (a relative location); refusing to read it"
        )
    try:
        target = os.path.realpath(os.path.join(root, location))
        inside = os.path.commonpath([root, target]) == root
    except ValueError:  # a NUL byte, or another drive
        inside, target = False, location
    if not inside:
        raise UnsafeModelError(
            f"{label} points to external data {location!r}, which resolves to {target!r}, outside the model's "
            f"folder {root!r}; refusing to read it"
        )
    try:
        st = os.stat(target)
    except FileNotFoundError:
        raise ModelFileError(
            f"{label}: its external data file {location!r} is missing (looked for {target!r})"
        ) from None
    except OSError as e:
        raise ModelFileError(f"{label}: its external data file {location!r} cannot be read: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{label}: its external data {location!r} is not a regular file")
    size = st.st_size
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else nbytes
    except ValueError:
        raise ModelFileError(
            f"{label}: external data offset {info.get('offset')!r} / length {info.get('length')!r} is not an "
            f"integer (corrupt file?)"
        ) from None
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelFileError(
            f"{label}: external data {location!r} at offset {offset} with length {length} lies outside that "
            f"file's {size:,} bytes (truncated or corrupt file?)"
        )
    if length != nbytes:
        raise ModelFileError(
            f"{label}: external data {location!r} holds {length:,} bytes, but the tensor's dims {list(t.dims)} "
            f"declare {nbytes:,} bytes (corrupt file?)"
        )
    try:
        with open(target, "rb") as f:
            f.seek(offset)
            data = f.read(length)
    except PermissionError:
        raise ModelFileError(_permission_denied(target, f"{label}: external data file")) from None
    except OSError as e:
        raise ModelFileError(f"{label}: its external data file {location!r} cannot be read: {e}") from None
    if len(data) != length:
        raise ModelFileError(f"{label}: external data {location!r} is shorter than declared (truncated?)")
    t.raw_data = data
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT


def to_array(t: onnx.TensorProto, label: str) -> np.ndarray:
    """``numpy_helper.to_array`` that never reads external data and names the tensor when decoding fails."""
    if _is_external(t):
        raise UnsafeModelError(
            f"{label} is stored as external data that was not resolved against the model's folder; load the "
            f"model with Model.from_onnx / load_onnx_proto (they read it from the model's folder only)"
        )
    try:
        return numpy_helper.to_array(t)
    except Exception as e:
        raise ModelFileError(f"{label} cannot be decoded (corrupt file?): {type(e).__name__}: {e}") from e


def _sparse_to_array(sp: onnx.SparseTensorProto, label: str) -> np.ndarray:
    """Dense value of a sparse tensor already checked by :func:`check_tensors`."""
    values = to_array(sp.values, f"{label} (values)")
    indices = to_array(sp.indices, f"{label} (indices)")
    dims = tuple(sp.dims)
    dense = np.zeros(math.prod(dims), dtype=values.dtype)
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
    dense[flat] = values
    return dense.reshape(dims)


def _iter_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _iter_graphs(g)


# ---------------------------------------------------------------- graph structure
def _node_label(n: onnx.NodeProto, i: int) -> str:
    return f"{n.op_type} node {n.name or f'{n.op_type}_{i}'!r}"


def _check_structure(graph: onnx.GraphProto, outer: frozenset[str] | set[str] = frozenset(), where: str = "",
                     *, missing: bool = True) -> None:
    """Refuse a graph whose nodes read a tensor before it is produced (out of order, or a cycle), a tensor
    produced twice, or (``missing``) a tensor that no node, initializer or graph input produces. Sub-graphs
    see the names of the enclosing scopes defined before their node."""
    defined = set(outer) | {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    defined |= {sp.values.name for sp in graph.sparse_initializer}
    _check_unique_names(graph, where)
    producer: dict[str, int] = {}
    for i, n in enumerate(graph.node):
        for o in n.output:
            if o and o in producer:
                raise ConversionError(
                    f"tensor {o!r} is produced by two nodes, {_node_label(graph.node[producer[o]], producer[o])} "
                    f"and {_node_label(n, i)}{where}; ONNX tensors have one producer (corrupt graph?)"
                )
            if o:
                producer[o] = i
    for i, n in enumerate(graph.node):
        for name in n.input:
            if not name or name in defined:
                continue
            j = producer.get(name)
            if j is None:
                if missing:
                    raise ConversionError(
                        f"{_node_label(n, i)}{where} reads tensor {name!r}, which no node, initializer or graph "
                        f"input produces (corrupt or incomplete graph?)"
                    )
                continue
            if _depends_on(graph, j, i, producer):
                raise ConversionError(
                    f"the graph has a cycle: {_node_label(n, i)}{where} reads tensor {name!r}, produced by "
                    f"{_node_label(graph.node[j], j)}, which itself depends on {_node_label(n, i)}"
                )
            raise ConversionError(
                f"{_node_label(n, i)}{where} reads tensor {name!r} before {_node_label(graph.node[j], j)} "
                f"produces it: the nodes are not in topological order, which ONNX requires (re-export the model, "
                f"or sort its nodes)"
            )
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _check_structure(sub, defined, f" (in a sub-graph of {_node_label(n, i)}{where})", missing=missing)
        defined.update(o for o in n.output if o)
    unmade = [vi.name for vi in graph.output if vi.name not in defined] if where and missing else []
    if unmade:  # a sub-graph's output (the main graph's are checked against the chosen output)
        raise ConversionError(
            f"output {unmade[0]!r}{where} is produced by no node, initializer or input (corrupt graph?)"
        )


def _check_unique_names(graph: onnx.GraphProto, where: str) -> None:
    """Graph inputs, and initializers, are each declared once; no node output redefines one of them."""
    import collections

    inputs = [vi.name for vi in graph.input]
    stored = [t.name for t in graph.initializer] + [sp.values.name for sp in graph.sparse_initializer]
    for kind, names in (("graph input", inputs), ("initializer", stored)):
        twice = [n for n, k in collections.Counter(names).items() if k > 1]
        if twice:
            raise ConversionError(f"{kind} {twice[0]!r}{where} is declared {names.count(twice[0])} times (corrupt graph?)")
    declared = set(inputs) | set(stored)
    for i, n in enumerate(graph.node):
        clash = next((o for o in n.output if o in declared), None)
        if clash:
            raise ConversionError(
                f"{_node_label(n, i)}{where} writes tensor {clash!r}, which is already a graph input or initializer "
                f"(corrupt graph?)"
            )


def _depends_on(graph: onnx.GraphProto, start: int, target: int, producer: dict[str, int]) -> bool:
    """Whether node ``start`` (transitively) reads an output of node ``target``."""
    stack, seen = [start], set()
    while stack:
        k = stack.pop()
        if k == target:
            return True
        if k in seen:
            continue
        seen.add(k)
        stack.extend(producer[name] for name in graph.node[k].input if name in producer)
    return False


def _subgraph_free_names(graph: onnx.GraphProto) -> set[str]:
    """Names a sub-graph reads from enclosing scopes."""
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    used = set()
    for n in graph.node:
        used.update(i for i in n.input if i)
        for attr in n.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                used.update(_subgraph_free_names(sub))
        defined.update(n.output)
    return used - defined


def _pruned(graph: onnx.GraphProto, output: str) -> onnx.GraphProto:
    """A copy of ``graph`` with only the nodes (and initializers) that ``output`` depends on."""
    needed = {output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    needed.update(_subgraph_free_names(sub))
    out = onnx.GraphProto()
    out.name = graph.name
    out.node.extend(reversed(keep))
    out.initializer.extend(t for t in graph.initializer if t.name in needed)
    out.sparse_initializer.extend(sp for sp in graph.sparse_initializer if sp.values.name in needed)
    stored = {t.name for t in graph.initializer} | {sp.values.name for sp in graph.sparse_initializer}
    out.input.extend(vi for vi in graph.input if vi.name in needed or vi.name not in stored)
    out.output.extend(vi for vi in graph.output if vi.name == output)
    out.value_info.extend(graph.value_info)
    return out


def _decode_attr(attr: onnx.AttributeProto, node: str):
    label = f"attribute {attr.name!r} of {node}"
    try:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return [v.decode("utf-8") for v in value]
    except Exception as e:
        raise ConversionError(f"{label} cannot be read (corrupt file?): {type(e).__name__}: {e}") from e
    if isinstance(value, onnx.TensorProto):
        return to_array(value, label)
    if isinstance(value, list) and value and isinstance(value[0], onnx.TensorProto):
        return [to_array(v, f"{label} (tensor {k})") for k, v in enumerate(value)]
    return value


def _elem_dtype(vi: onnx.ValueInfoProto) -> np.dtype | None:
    """The element type of a tensor value, or ``None`` (not a tensor, or an unknown type)."""
    if not vi.type.HasField("tensor_type"):
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    except (KeyError, ValueError, TypeError):
        return None


def _value_shape(vi: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)


class _Node:
    __slots__ = ("attrs", "domain", "inputs", "name", "op_type", "outputs", "spec")

    def __init__(self, node: onnx.NodeProto, index: int):
        self.name = node.name or f"{node.op_type}_{index}"
        self.op_type = node.op_type
        self.domain = node.domain if node.domain not in ("ai.onnx",) else ""
        self.inputs = tuple(node.input)
        self.outputs = tuple(node.output)
        self.attrs = {a.name: _decode_attr(a, f"{self.op_type} node {self.name!r}") for a in node.attribute}
        self.spec = get_op(self.op_type, self.domain)


class OnnxFunction:
    """A pure function ``f(params, *inputs) -> outputs`` interpreted from an ONNX graph.

    Args:
        proto: the ONNX model.
        output: the graph output the per-sample function returns (name or index); default the first floating one.

    Attributes:
        input_names, input_shapes, input_dtypes: graph inputs (initializers excluded), shapes with the batch axis.
        output_names: every graph output; ``output`` is the chosen one.
        params: ``dict[name, np.ndarray]`` of the floating initializers (the weights).
        layer_names: readable names of the data-dependent layers, in graph order.
    """

    def __init__(self, proto: onnx.ModelProto, *, output: str | int | None = None):
        self.opset = default_opset(proto)
        self.metadata = {p.key: p.value for p in proto.metadata_props}
        check_tensors(proto)  # dims vs data vs budget; external data must already be resolved (load_onnx_proto)
        graph = proto.graph
        self.graph_name = graph.name
        self.output_names = tuple(vi.name for vi in graph.output)
        self.output_dtypes = tuple(_elem_dtype(vi) or np.dtype(object) for vi in graph.output)
        self.output = self._choose_output(output, graph)
        _check_structure(graph, missing=False)  # order and cycles on the whole graph: pruning relies on the order
        # Keep only the nodes the chosen output depends on: e.g. a scikit-learn classifier's label / ZipMap branch
        # (ai.onnx.ml ops) is dropped when its probabilities are explained.
        graph = _pruned(graph, self.output)
        _check_structure(graph)
        self._check_supported(graph)
        self.nodes = [_Node(n, i) for i, n in enumerate(graph.node)]
        self._check_attributes()
        produced = {o for n in graph.node for o in n.output} | {vi.name for vi in graph.input}
        produced |= {t.name for t in graph.initializer} | {sp.values.name for sp in graph.sparse_initializer}
        if self.output not in produced:
            raise ConversionError(
                f"output {self.output!r} is produced by no node, initializer or graph input (corrupt graph?)"
            )

        initializers = {t.name: to_array(t, f"initializer {t.name!r}") for t in graph.initializer}
        init_types = {t.name: t.data_type for t in graph.initializer}
        for sp in graph.sparse_initializer:  # stored sparse, used dense
            initializers[sp.values.name] = _sparse_to_array(sp, f"sparse initializer {sp.values.name!r}")
            init_types[sp.values.name] = sp.values.data_type
        static_slots = self._static_slots(graph)
        self.params: dict[str, np.ndarray] = {}
        self.consts: dict[str, np.ndarray] = {}
        for name, arr in initializers.items():
            if init_types[name] in _FLOAT_TYPES and name not in static_slots:
                self.params[name] = arr
            else:
                self.consts[name] = arr

        graph_inputs = [vi for vi in graph.input if vi.name not in initializers]
        self.input_names = tuple(vi.name for vi in graph_inputs)
        self.input_shapes = tuple(_value_shape(vi) for vi in graph_inputs)
        dtypes = [_elem_dtype(vi) for vi in graph_inputs]
        for vi, dt in zip(graph_inputs, dtypes):
            if not _numeric(dt):
                raise ConversionError(
                    f"graph input {vi.name!r} is {_type_text(vi)}; jaxsens feeds tensors of float16 / float32 / "
                    f"float64, integers and bools ({_NOT_FED} inputs are not supported)"
                )
        self.input_dtypes = tuple(dtypes)
        self._layers = self._find_layers()
        self.layer_names = tuple(self._layers)
        self.fingerprint = self._fingerprint(graph)
        self.unroll: int | None = None  # tracing option of recurrent ops, see with_unroll()
        self.reverse_only = False  # tracing option: hand-written pull-backs allowed, see with_reverse_only()

    # ---------------------------------------------------------------- construction helpers
    def _check_supported(self, graph: onnx.GraphProto) -> None:
        found = _first_unsupported(graph)
        if found:
            where, node = found
            raise UnsupportedOpError(
                f"ONNX op {where!r} (node {node!r}) is not supported by jaxsens. "
                f"Supported ops: {', '.join(supported_ops(None))}"
            )

    def _check_attributes(self) -> None:
        _check_node_attributes(self.nodes)

    @staticmethod
    def _static_slots(graph: onnx.GraphProto) -> set[str]:
        """Tensors that must stay known at conversion time, and everything they are computed from.

        Seeds: the ``static_inputs`` of every op (shapes, axes, pads), a ``Loop``'s trip count and condition, and the
        condition its body computes (a loop over time steps is unrolled into ``lax.scan`` only when its trip count
        is known). Propagation runs backwards through every (sub-)graph to a fixed point, so e.g. a float sequence
        length that a body compares its counter with stays a constant instead of becoming a parameter.
        """
        graphs = list(_iter_graphs(graph))
        names: set[str] = set()
        for g in graphs:
            for n in g.node:
                spec = get_op(n.op_type, n.domain if n.domain not in ("ai.onnx",) else "")
                slots = spec.static_inputs
                if n.op_type == "Loop":
                    slots = (0, 1)
                    body = next((a.g for a in n.attribute if a.name == "body" and a.HasField("g")), None)
                    if body is None or not body.output:
                        raise ConversionError(
                            f"Loop node {n.name!r} has no body graph with outputs (corrupt graph?)"
                        )
                    names.add(body.output[0].name)
                for i in slots:
                    if i < len(n.input) and n.input[i]:
                        names.add(n.input[i])
        while True:
            before = len(names)
            for g in graphs:
                for n in reversed(g.node):
                    # Shape / Size read only the (static) shape of their input, never its values
                    if n.op_type not in _SHAPE_READERS and any(o in names for o in n.output):
                        names.update(i for i in n.input if i)
            if len(names) == before:
                return names

    def _choose_output(self, output, graph: onnx.GraphProto) -> str:
        if isinstance(output, int) and not isinstance(output, bool):
            if not -len(self.output_names) <= output < len(self.output_names):
                raise ArgumentError(
                    f"output={output} is out of range: the graph has {len(self.output_names)} output(s) "
                    f"{self.output_names}"
                )
            return self._numeric_output(self.output_names[output], graph)
        if isinstance(output, str):
            if output not in self.output_names:
                raise ConversionError(f"output {output!r} is not an output of the graph; outputs: {self.output_names}")
            return self._numeric_output(output, graph)
        if output is not None:
            raise ArgumentTypeError(f"output= takes an output name or index, got {type(output).__name__}")
        for name, dt in zip(self.output_names, self.output_dtypes):
            if _numeric(dt) and dt.kind == "f":
                return name
        # scikit-learn classifiers exported with ZipMap: explain the probability tensor that feeds it.
        for node in graph.node:
            if node.op_type == "ZipMap" and any(o in self.output_names for o in node.output):
                return node.input[0]
        _refuse_output(
            graph, self.output_names, "the graph has no floating-point output",
            "name an integer or bool output with output=, or add a Cast to float32 at the end of the model",
        )  # fmt: skip

    def _numeric_output(self, name: str, graph: onnx.GraphProto) -> str:
        """An output chosen by name or index: a ``ZipMap``'s sequence of maps is explained as the probability
        tensor feeding it (the same numbers); any other non-numeric output (strings, sequences) is refused."""
        zipmap = next((n for n in graph.node if n.op_type == "ZipMap" and name in n.output), None)
        if zipmap is not None:
            return zipmap.input[0]
        if not _numeric(self.output_dtypes[self.output_names.index(name)]):
            others = f", or name another of {self.output_names}" if len(self.output_names) > 1 else ""
            _refuse_output(
                graph, [name], f"output {name!r} is not a numeric tensor",
                f"leave output= unset to explain the first floating-point output (a scikit-learn classifier's "
                f"probabilities){others}, or add a Cast to float32 at the end of the model",
            )  # fmt: skip
        return name

    def _find_layers(self) -> dict[str, str]:
        """Readable layer name -> the tensor holding that layer's output (its last data-dependent node)."""
        dynamic = set(self.input_names) | set(self.params)
        data_dependent: list[_Node] = []
        for node in self.nodes:
            if any(i in dynamic for i in node.inputs if i):
                dynamic.update(node.outputs)
                data_dependent.append(node)
        exact = metadata_json(self.metadata, LAYER_OUTPUTS_KEY, dict, {})
        if not all(isinstance(v, str) for v in exact.values()):
            raise ModelFileError(f"the model's metadata {LAYER_OUTPUTS_KEY!r} must map layer names to tensor names")
        if exact:  # our Keras converter recorded which tensor holds each layer's output
            produced = {o for node in data_dependent for o in node.outputs} | set(self.input_names)
            return {name: tensor for name, tensor in exact.items() if tensor in produced}
        known = [str(k) for k in metadata_json(self.metadata, LAYER_NAMES_KEY, list, [])]
        layers: dict[str, str] = {}
        for node in data_dependent:
            if not node.outputs:
                continue
            parts = [p for p in node.name.split("/") if p]
            key = None
            if known:
                key = next((p for p in parts if p in known), None)
                if key is None:
                    key = next((k for k in known if node.name.startswith(k + "_") or node.outputs[0] == k), None)
            if key is None:
                key = parts[-2] if len(parts) >= 2 else node.name
            layers.pop(key, None)  # keep graph order of the *last* node of each layer
            layers[key] = node.outputs[0]
        return layers

    def _fingerprint(self, graph: onnx.GraphProto) -> str:
        g = onnx.GraphProto()
        g.CopyFrom(graph)
        for t in g.initializer:
            if t.name in self.params:
                dims, dt, name = list(t.dims), t.data_type, t.name
                t.Clear()
                t.name, t.data_type = name, dt
                t.dims.extend(dims)
        h = hashlib.sha256(g.SerializeToString(deterministic=True))
        h.update(repr((self.opset, self.output)).encode())
        return h.hexdigest()

    def __eq__(self, other):
        return (
            isinstance(other, OnnxFunction) and other.fingerprint == self.fingerprint and other.unroll == self.unroll
            and other.reverse_only == self.reverse_only
        )

    def __hash__(self):
        return hash((self.fingerprint, self.unroll, self.reverse_only))

    def __repr__(self):
        unroll = "" if self.unroll is None else f", unroll={self.unroll}"
        rev = ", reverse_only" if self.reverse_only else ""
        return f"OnnxFunction({self.graph_name!r}, {len(self.nodes)} nodes, opset {self.opset}{unroll}{rev})"

    def with_unroll(self, steps: int | None) -> OnnxFunction:
        """The same function with recurrences (``RNN`` / ``GRU`` / ``LSTM``) traced another way.

        Sequences of at most ``steps`` steps over a real batch run as a static Python loop, longer ones in
        ``jax.lax.scan``; ``0`` always uses ``lax.scan`` (what gradients want: reverse mode through an unrolled
        cell measured 3-5x slower); ``None`` restores the default
        (:data:`converters.onnx_to_jax.ops.rnn.UNROLL_MAX_STEPS`). The option is static: it is part of the
        function's equality and hash, so each value compiles its own kernel and the same value reuses it. The
        returned copy shares the nodes and weights (nothing is converted again).
        """
        steps = check_unroll(steps)
        if steps == self.unroll:
            return self
        other = copy.copy(self)
        other.unroll = steps
        return other

    def with_reverse_only(self, flag: bool = True) -> OnnxFunction:
        """The same function traced for first-order reverse mode only: ops may use hand-written pull-backs
        (``jax.custom_vjp``, faster than JAX's transpose of their forward computation on some backends; see
        :class:`~converters.onnx_to_jax.registry.OpContext`). The values are the same; forward mode (``jax.jvp``,
        ``jax.jacfwd``) and second derivatives of such a function are refused by JAX. Static, like
        :meth:`with_unroll`: part of the function's equality and hash. The copy shares nodes and weights.
        """
        flag = bool(flag)
        if flag == self.reverse_only:
            return self
        other = copy.copy(self)
        other.reverse_only = flag
        return other

    # ---------------------------------------------------------------- evaluation
    def layer_tensor(self, name: str) -> str:
        if name in self._layers:
            return self._layers[name]
        return name  # a raw tensor name

    def run(self, params: Mapping[str, Any], inputs: Mapping[str, Any], want: Sequence[str], *,
            offsets: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate the graph on batched ``inputs`` and return the tensors named in ``want``; ``offsets``
        (tensor name -> array) are added to those tensors as they are computed (see :meth:`apply_offset`)."""
        env: dict[str, Any] = dict(self.consts)
        env.update(params)
        env.update(inputs)
        env = _run_nodes(self.nodes, env, self.opset, unroll=self.unroll, offsets=offsets,
                         reverse_only=self.reverse_only)
        missing = [w for w in want if w not in env]
        if missing:
            raise ArgumentError(f"no tensor named {missing} in the graph; layers: {list(self.layer_names)}")
        return {w: env[w] for w in want}

    def apply_batch(self, params, *xs):
        """Batched call: ``xs`` carry the batch axis; returns the chosen output."""
        inputs = {name: _as_input(x, dt) for name, x, dt in zip(self.input_names, xs, self.input_dtypes)}
        return self.run(params, inputs, [self.output])[self.output]

    def __call__(self, params, x):
        """Per-sample call: ``x`` is one sample (an array, or a tuple / dict for several inputs)."""
        xs = _per_sample_inputs(self, x)
        return _unbatch_output(self, self.apply_batch(params, *xs))

    def intermediates(self, params, x, names: Sequence[str] | None = None) -> dict[str, Any]:
        """Per-sample layer outputs ``{name: array}`` (every layer when ``names`` is None)."""
        names = list(self.layer_names) if names is None else list(names)
        xs = _per_sample_inputs(self, x)
        inputs = {n: _as_input(v, dt) for n, v, dt in zip(self.input_names, xs, self.input_dtypes)}
        tensors = [self.layer_tensor(n) for n in names]
        out = self.run(params, inputs, tensors)
        return {n: _unbatch(out[t]) for n, t in zip(names, tensors)}

    def apply_offset(self, params, x, offsets: Mapping[str, Any]):
        """Per-sample call with each offset ADDED to its tensor right after the node producing it runs (or to the
        graph input itself): ``f(x; h + d)``. The derivative with respect to ``d`` at ``d = 0`` is the derivative
        of the output with respect to the layer's units ``h`` (hidden-unit sensitivity).

        Args:
            params: the weights (as for :meth:`__call__`).
            x: one sample (an array, or a tuple / dict for several inputs).
            offsets: ``{name: d}``, ``name`` a layer name (:attr:`layer_names`) or a tensor name, ``d`` of the
                tensor's per-sample shape (the graph computes the tensor with a batch axis of 1: ``d`` is reshaped
                to it); the offset must hold as many values as the tensor.

        Returns:
            The chosen output for the sample, as :meth:`__call__` returns it.
        """
        tensors = {self.layer_tensor(name): d for name, d in offsets.items()}
        xs = _per_sample_inputs(self, x)
        inputs = {n: _as_input(v, dt) for n, v, dt in zip(self.input_names, xs, self.input_dtypes)}
        out = self.run(params, inputs, [self.output], offsets=tensors)[self.output]
        return _unbatch_output(self, out)


def check_unroll(steps) -> int | None:
    """``steps`` as the ``unroll`` option of :meth:`OnnxFunction.with_unroll`: ``None`` or an int >= 0."""
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer):
        raise ArgumentTypeError(
            f"unroll takes a number of time steps (an int >= 0) or None, got {type(steps).__name__} {steps!r}; "
            f"e.g. with_unroll(0) to run every recurrence in jax.lax.scan"
        )
    if steps < 0:
        raise ArgumentError(
            f"unroll={steps} is negative; give the longest sequence to unroll (0: always jax.lax.scan, None: the "
            f"default)"
        )
    return int(steps)


def metadata_json(metadata: Mapping[str, str], key: str, kind: type, default):
    """The JSON value stored under ``key`` in the model's ``metadata_props`` (``default`` when absent), which must
    be a ``kind`` (``list`` / ``dict``); a corrupt value raises :class:`ModelFileError` naming the key."""
    if key not in metadata:
        return default
    try:
        value = json.loads(metadata[key])
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"the model's metadata {key!r} is not valid JSON (corrupt file?): {e}") from None
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ModelFileError(
            f"the model's metadata {key!r} holds a {type(value).__name__}, expected a JSON "
            f"{'list' if kind is list else 'object'} (corrupt file?)"
        )
    return value


def _type_text(vi: onnx.ValueInfoProto) -> str:
    kind = vi.type.WhichOneof("value")
    if kind == "tensor_type":
        code = vi.type.tensor_type.elem_type
        name = onnx.TensorProto.DataType.Name(code).lower() if code in onnx.TensorProto.DataType.values() else "?"
        return f"a tensor of {name} (ONNX element type {code})"
    kinds = {"sequence_type": "a sequence", "optional_type": "an optional", "map_type": "a map"}
    return kinds.get(kind, f"a {kind or 'value of undefined type'}")


# What jaxsens feeds and explains at the model boundary: float16 / 32 / 64, integer and bool tensors (numpy kinds
# "fiub"; ml_dtypes' float8 / bfloat16 / 4-bit types are kind "V", or "f" of one byte).
_NOT_FED = "bfloat16, float8, float4, 4-bit and 2-bit integer, string, sequence, optional and map"


def _numeric(dt: np.dtype | None) -> bool:
    return dt is not None and (dt.kind in "iub" or (dt.kind == "f" and dt.itemsize >= 2))


def _first_unsupported(graph: onnx.GraphProto) -> tuple[str, str | int] | None:
    """``(op, node name or index)`` of the first node, in ``graph`` or its sub-graphs, outside the registry."""
    for g in _iter_graphs(graph):
        for i, n in enumerate(g.node):
            domain = n.domain if n.domain not in ("ai.onnx",) else ""
            if get_op(n.op_type, domain) is None:
                return (f"{domain}:{n.op_type}" if domain else n.op_type), (n.name or i)
    return None


def _refuse_output(graph: onnx.GraphProto, names, problem: str, hint: str) -> None:
    """Refuse outputs ``names`` that jaxsens cannot explain, naming each one's type and the node producing it (an
    :class:`UnsupportedOpError` when an op computing it is not in the registry)."""
    infos = {vi.name: vi for vi in graph.output}
    described = []
    for name in names:
        found = _first_unsupported(_pruned(graph, name))
        if found:
            where, node = found
            raise UnsupportedOpError(
                f"{problem}: output {name!r} is computed with ONNX op {where!r} (node {node!r}), "
                f"which is not supported by jaxsens. Supported ops: {', '.join(supported_ops(None))}"
            )
        producer = next(((i, n) for i, n in enumerate(graph.node) if name in n.output), None)
        source = f"from {_node_label(*producer[::-1])}" if producer else "a graph input or initializer"
        described.append(f"{name!r}: {_type_text(infos[name])}, {source}")
    raise ConversionError(
        f"{problem} ({'; '.join(described)}); jaxsens explains tensors of float16 / float32 / float64, integers and "
        f"bools ({_NOT_FED} outputs are not supported): {hint}"
    )


def _check_node_attributes(nodes: Sequence[_Node]) -> None:
    for node in nodes:
        for value in node.attrs.values():
            if isinstance(value, onnx.GraphProto):
                _check_node_attributes([_Node(n, i) for i, n in enumerate(value.node)])
        if node.spec.attributes is None:
            continue
        unknown = set(node.attrs) - node.spec.attributes
        if unknown:
            raise UnsupportedOpError(
                f"{node.op_type} node {node.name!r} has attribute(s) {sorted(unknown)} that jaxsens does not "
                f"implement (supported: {sorted(node.spec.attributes)})"
            )


def _unbatch_output(fn: OnnxFunction, out):
    """The output of a batch of one sample without its batch axis (refused when the graph dropped that axis)."""
    if not np.ndim(out) or np.shape(out)[0] != 1:
        raise ConversionError(
            f"one sample gives output {fn.output!r} of shape {tuple(np.shape(out))}: the graph does not keep "
            f"the batch axis (a batch of one must give one row, e.g. a bias with several rows broadcasts it)"
        )
    return out[0]


def _unbatch(v):
    import jax.numpy as jnp

    v = jnp.asarray(v)
    return v[0] if v.ndim and v.shape[0] == 1 else v


def _per_sample_inputs(fn: OnnxFunction, x) -> list:
    if isinstance(x, Mapping):
        try:
            xs = [x[n] for n in fn.input_names]
        except KeyError as e:
            raise ArgumentError(f"missing model input {e}; the model's inputs are {fn.input_names}") from None
    elif isinstance(x, tuple | list):
        xs = list(x)
    else:
        xs = [x]
    if len(xs) != len(fn.input_names):
        raise ArgumentError(f"the model takes {len(fn.input_names)} input(s) {fn.input_names}, got {len(xs)}")
    return [v[None] for v in xs]


def _as_input(x, dtype):
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(x)
    if dtype.kind not in "fiub":
        return x
    dtype = jax.dtypes.canonicalize_dtype(dtype)  # int64 ids compute as int32 without x64: no warning per trace
    return x.astype(dtype) if x.dtype != dtype else x


def _run_nodes(nodes: Sequence[_Node], env: dict[str, Any], opset: int, *, unroll: int | None = None,
               offsets: Mapping[str, Any] | None = None, reverse_only: bool = False) -> dict[str, Any]:
    """Evaluate ``nodes`` in order over ``env`` (tensor name -> value); ``unroll`` and ``reverse_only`` are handed
    to every op (and to sub-graphs) through :class:`OpContext`. ``offsets`` (tensor name -> array) are added to their tensors: a
    graph input (or any tensor already in ``env``) before the first node, a node's output right after it runs,
    so every consumer sees ``h + d``; each offset is reshaped to its tensor's shape (a batch axis of 1)."""
    import jax

    offsets = dict(offsets or {})
    for name in [n for n in offsets if n in env]:
        env[name] = _add_offset(env[name], offsets.pop(name), name)
    for node in nodes:
        args = [env[i] if i else None for i in node.inputs]
        ctx = OpContext(
            node.name, node.op_type, opset, _subgraph_runner(env, opset, unroll, reverse_only), env, node.inputs,
            node.outputs, unroll, reverse_only,
        )
        try:
            # the node's name labels the equations it traces: rows.py names the node that mixes rows of a batch
            with jax.named_scope(node.name):
                if all(is_static(a) for a in args) and node.op_type not in _NEVER_FOLD:
                    with jax.ensure_compile_time_eval():
                        out = node.spec.fn(ctx, *args, **node.attrs)
                    out = tuple(np.asarray(o) for o in out) if isinstance(out, tuple | list) else np.asarray(out)
                else:
                    out = node.spec.fn(ctx, *args, **node.attrs)
        except ConversionError:
            raise
        except Exception as e:
            shapes = [getattr(a, "shape", None) for a in args]
            raise ConversionError(
                f"{node.op_type} node {node.name!r} failed on inputs {list(node.inputs)} with shapes {shapes}: "
                f"{type(e).__name__}: {e}"
            ) from e
        outs = out if isinstance(out, tuple | list) else (out,)
        for name, value in zip(node.outputs, outs):
            if name:
                env[name] = _add_offset(value, offsets.pop(name), name) if name in offsets else value
    if offsets:
        raise ArgumentError(
            f"offsets for {sorted(offsets)}: no such tensor in the graph (not a graph input, nor produced by a node); "
            f"pass a layer name or the name of a tensor the graph computes"
        )
    return env


def _add_offset(value, offset, name: str):
    """``value + offset``, the offset reshaped to the tensor's shape (a per-sample offset on a batch of one)."""
    import jax.numpy as jnp

    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise ArgumentError(
            f"tensor {name!r} holds {value.dtype} values (e.g. token ids): an offset (a derivative) has no meaning "
            f"there; choose a floating-point tensor downstream (e.g. the embedding output)"
        )
    offset = jnp.asarray(offset)
    if offset.size != value.size:
        raise ArgumentError(
            f"the offset for tensor {name!r} has shape {tuple(offset.shape)}, but the tensor has shape "
            f"{tuple(value.shape)} (with the batch axis of one sample); give one value per unit of the tensor"
        )
    return value + jnp.reshape(offset, value.shape).astype(value.dtype)


def _subgraph_runner(env, opset, unroll=None, reverse_only=False):
    return lambda graph, inputs: run_subgraph(graph, inputs, env, opset, unroll=unroll, reverse_only=reverse_only)


# Ops that must not be constant-folded even with static inputs (random generators).
# Ops whose result depends only on the shape of their input.
_SHAPE_READERS = frozenset({"Shape", "Size"})

# Sub-graph ops read the enclosing scope (possibly the traced input), so they are never folded either.
_NEVER_FOLD = frozenset({"If", "Loop", "Scan", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})


def run_subgraph(
    graph: onnx.GraphProto, inputs: Sequence[Any], outer_env: Mapping[str, Any], opset: int = 13, *,
    unroll: int | None = None, reverse_only: bool = False,
):
    """Run a sub-graph (``Loop`` / ``Scan`` / ``If`` body) with ``inputs`` bound to its formal inputs.

    Names of the enclosing scopes are visible (ONNX lexical scoping). Returns the list of the body's outputs.
    """
    env: dict[str, Any] = dict(outer_env)
    for t in graph.initializer:
        env[t.name] = to_array(t, f"initializer {t.name!r} of sub-graph {graph.name!r}")
    for sp in graph.sparse_initializer:
        env[sp.values.name] = _sparse_to_array(sp, f"sparse initializer {sp.values.name!r} of sub-graph {graph.name!r}")
    for vi, v in zip(graph.input, inputs):
        env[vi.name] = v
    nodes = [_Node(n, i) for i, n in enumerate(graph.node)]
    env = _run_nodes(nodes, env, opset, unroll=unroll, reverse_only=reverse_only)
    return [env[vi.name] for vi in graph.output]
