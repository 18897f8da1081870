"""Loading untrusted model files: external data stays inside the model's folder, declared sizes are checked before
anything is allocated, graphs whose meaning depends on the batch are refused (or converted with a warning), and
every bad file or argument ends in a jaxsens error that names it. Every case is a real file in ``tmp_path``."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
from _onnx_graphs import single_input_model
from onnx import TensorProto, helper, numpy_helper

import jaxsens
from converters.errors import (
    ArgumentError,
    ArgumentTypeError,
    ConversionError,
    ModelFileError,
    ModelFileNotFoundError,
    UnsafeModelError,
)
from converters.onnx_to_jax.graph import load_onnx_proto

SECRET = np.arange(4, dtype=np.float32) * 7 + 1  # what a hostile model would like to read into its weights
MINE = np.full(4, 0.5, np.float32)  # the data that belongs to the model


def _external(name: str, dims, location: str, *, offset=None, length=None, dtype=TensorProto.FLOAT):
    t = TensorProto()
    t.name, t.data_type = name, dtype
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            t.external_data.add(key=key, value=str(value))
    return t


def _add_model(nodes, inits=(), sparse=()):
    """``y = x + c`` for ``x [N, 4]``, ``c`` coming from ``nodes`` / initializers."""
    proto = single_input_model(nodes, inits, n_in=4, n_out=4)
    proto.graph.sparse_initializer.extend(sparse)
    return proto


# Every place ONNX lets a tensor live, each holding c [4] as external data at `location`.
def _initializer(location, **kw):
    return _add_model([helper.make_node("Add", ["x", "c"], ["y"])], [_external("c", [4], location, **kw)])


def _constant(location, **kw):
    return _add_model(
        [
            helper.make_node("Constant", [], ["c"], value=_external("c", [4], location, **kw)),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ]
    )


def _constant_in_subgraph(location, **kw):
    """The Constant sits in both branches of an ``If`` (a sub-graph)."""

    def branch(name):
        body = helper.make_node(
            "Constant", [], [f"{name}_c"], value=_external(f"{name}_c", [4], location, **kw)
        )
        return helper.make_graph(
            [body], name, [], [helper.make_tensor_value_info(f"{name}_c", TensorProto.FLOAT, [4])]
        )

    cond = numpy_helper.from_array(np.array(True), "cond")
    nodes = [
        helper.make_node("If", ["cond"], ["c"], then_branch=branch("then"), else_branch=branch("else")),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    return _add_model(nodes, [cond])


def _sparse_initializer(location, **kw):
    values = _external("c", [4], location, **kw)
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "c_indices")
    return _add_model(
        [helper.make_node("Add", ["x", "c"], ["y"])], sparse=[helper.make_sparse_tensor(values, indices, [4])]
    )


def _sparse_constant(location, **kw):
    values = _external("c", [4], location, **kw)
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "c_indices")
    return _add_model(
        [
            helper.make_node(
                "Constant", [], ["c"], sparse_value=helper.make_sparse_tensor(values, indices, [4])
            ),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ]
    )


PLACES = {
    "initializer": _initializer,
    "constant": _constant,
    "constant_in_subgraph": _constant_in_subgraph,
    "sparse_initializer": _sparse_initializer,
    "sparse_constant": _sparse_constant,
}


def _save(proto, folder) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "m.onnx")
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return path


def test_a_constant_is_never_read_from_the_current_directory(tmp_path, monkeypatch):
    """The reported attack: a Constant whose value is external data was read from the cwd, not the model folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "secret.bin").write_bytes(SECRET.tobytes())
    path = _save(_constant("secret.bin"), tmp_path / "model")
    monkeypatch.chdir(cwd)
    with pytest.raises(ModelFileError, match=r"'value' of Constant node .*'secret.bin' is missing"):
        jaxsens.load_model(path)
    # with its own data next to it, the model reads that file, never the cwd's
    (tmp_path / "model" / "secret.bin").write_bytes(MINE.tobytes())
    model = jaxsens.load_model(path)
    np.testing.assert_array_equal(model(np.zeros((2, 4), np.float32)), np.tile(MINE, (2, 1)))


@pytest.mark.parametrize("place", PLACES)
def test_external_data_inside_the_folder_loads_everywhere_onnx_allows_it(tmp_path, place):
    folder = tmp_path / "model"
    path = _save(PLACES[place]("data/c.bin"), folder)
    (folder / "data").mkdir()
    (folder / "data" / "c.bin").write_bytes(MINE.tobytes())
    xs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(jaxsens.load_model(path)(xs), xs + MINE)


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("how", ["parent", "absolute", "symlink"])
def test_external_data_leaving_the_folder_is_refused_everywhere(tmp_path, place, how):
    (tmp_path / "secret.bin").write_bytes(SECRET.tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"parent": "../secret.bin", "absolute": str(tmp_path / "secret.bin"), "symlink": "link.bin"}[
        how
    ]
    if how == "symlink":
        os.symlink(tmp_path / "secret.bin", folder / "link.bin")
    path = _save(PLACES[place](location), folder)
    with pytest.raises(
        UnsafeModelError, match="absolute path" if how == "absolute" else "outside the model's folder"
    ):
        jaxsens.load_model(path)


def test_a_model_given_as_bytes_or_proto_needs_a_folder_for_its_external_data(tmp_path):
    (tmp_path / "c.bin").write_bytes(MINE.tobytes())
    proto = _constant("c.bin")
    for source in (proto, proto.SerializeToString()):
        with pytest.raises(UnsafeModelError, match="no folder to read it from.*base_dir="):
            jaxsens.Model.from_onnx(source)
    model = jaxsens.Model.from_onnx(proto, base_dir=tmp_path)
    np.testing.assert_array_equal(model(np.zeros((1, 4), np.float32)), MINE[None])
    assert (
        proto.graph.node[0].attribute[0].t.data_location == TensorProto.EXTERNAL
    )  # the caller's proto unchanged
    sub = tmp_path / "sub"
    sub.mkdir()
    with pytest.raises(UnsafeModelError, match="outside"):
        jaxsens.Model.from_onnx(_constant("../c.bin"), base_dir=sub)
    with pytest.raises(ArgumentError, match="base_dir="):
        jaxsens.Model.from_onnx(_save(proto, tmp_path), base_dir=tmp_path)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"offset": -4}, "lies outside that file's 16 bytes"),
        ({"offset": 8}, "lies outside that file's 16 bytes"),  # 8 + 16 > 16
        ({"length": 64}, "lies outside that file's 16 bytes"),
        ({"length": 8}, "holds 8 bytes, but the tensor's dims \\[4\\] declare 16"),
        ({"offset": "x"}, "is not an integer"),
    ],
)
def test_external_offset_and_length_are_checked(tmp_path, kw, match):
    path = _save(_initializer("c.bin", **kw), tmp_path)
    (tmp_path / "c.bin").write_bytes(MINE.tobytes())
    with pytest.raises(ModelFileError, match="initializer 'c'.*" + match):
        jaxsens.load_model(path)


# ---------------------------------------------------------------- declared sizes
def _declared(dims, *, raw: bytes | None = None, dtype=TensorProto.FLOAT):
    t = TensorProto()
    t.name, t.data_type = "c", dtype
    t.dims.extend(dims)
    if raw is not None:
        t.raw_data = raw
    return t


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (
            _declared([10**12]),
            r"dims \[1000000000000\]: 4,000,000,000,000 bytes of float32, more than the budget",
        ),
        (_declared([-3, 2]), r"negative dims \[-3, 2\]"),
        (_declared([4], raw=b"\0" * 12), r"holds 12 bytes of data, but its dims \[4\] declare 16 bytes"),
        (_declared([4]), r"holds 0 values, but its dims \[4\] declare 4"),
        (_declared([4], raw=b"\0" * 16, dtype=0), "unknown data type 0"),
    ],
)
@pytest.mark.parametrize("place", ["initializer", "constant"])
def test_declared_dims_are_checked_before_anything_is_allocated(tmp_path, tensor, match, place):
    if place == "initializer":
        proto = _add_model([helper.make_node("Add", ["x", "c"], ["y"])], [tensor])
        label = "initializer 'c'"
    else:
        proto = _add_model(
            [
                helper.make_node("Constant", [], ["c"], value=tensor, name="k"),
                helper.make_node("Add", ["x", "c"], ["y"]),
            ]
        )
        label = "attribute 'value' of Constant node 'k'"
    with pytest.raises(ModelFileError, match=f"{label} .*{match}"):
        jaxsens.load_model(_save(proto, tmp_path))


def test_sparse_tensors_declaring_huge_dims_or_bad_indices_are_refused(tmp_path):
    values = numpy_helper.from_array(np.ones(2, np.float32), "c")
    for dims, indices, match in (
        ([10**12], [0, 1], "dense dims"),
        ([4], [0, 9], "indices outside its dims"),
        ([4], [-1, 0], "indices outside its dims"),
    ):
        sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array(indices, np.int64)), dims)
        proto = _add_model([helper.make_node("Add", ["x", "c"], ["y"])], sparse=[sparse])
        with pytest.raises(ModelFileError, match=f"sparse initializer 'c'.*{match}"):
            jaxsens.load_model(_save(proto, tmp_path))


def test_the_byte_budget_comes_from_the_environment(tmp_path, monkeypatch):
    w = numpy_helper.from_array(np.ones((4, 100), np.float32), "W")  # 1,600 bytes
    path = _save(
        single_input_model([helper.make_node("MatMul", ["x", "W"], ["y"])], [w], n_in=4, n_out=100), tmp_path
    )
    assert jaxsens.load_model(path).output_shape == (100,)
    monkeypatch.setenv("JAXSENS_MAX_TENSOR_BYTES", "1000")
    with pytest.raises(
        ModelFileError, match=r"initializer 'W' declares dims \[4, 100\]: 1,600 bytes .*budget of 1,000"
    ):
        jaxsens.load_model(path)
    monkeypatch.setenv("JAXSENS_MAX_TENSOR_BYTES", "lots")
    with pytest.raises(ArgumentError, match="JAXSENS_MAX_TENSOR_BYTES='lots'"):
        jaxsens.load_model(path)


@pytest.mark.parametrize(
    ("nodes", "inits"),
    [
        (
            [helper.make_node("ConstantOfShape", ["s"], ["big"], name="fill")],
            [np.array([10**6, 10**6], np.int64)],
        ),
        (
            [helper.make_node("Expand", ["x", "s"], ["big"], name="fill")],
            [np.array([10**6, 10**6, 4], np.int64)],
        ),
        ([helper.make_node("Tile", ["x", "s"], ["big"], name="fill")], [np.array([10**6, 10**6], np.int64)]),
        (
            [helper.make_node("Range", ["a", "b", "c"], ["big"], name="fill")],
            [np.array(0, np.int64), np.array(10**13, np.int64), np.array(1, np.int64)],
        ),
    ],
    ids=["ConstantOfShape", "Expand", "Tile", "Range"],
)
def test_ops_creating_huge_static_tensors_are_refused_by_name(nodes, inits):
    names = ["s"] if len(inits) == 1 else ["a", "b", "c"]
    tensors = [numpy_helper.from_array(v, n) for n, v in zip(names, inits)]
    reduce = helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0)
    proto = _add_model([*nodes, reduce, helper.make_node("Add", ["x", "total"], ["y"])], tensors)
    with pytest.raises(
        ConversionError, match=r"node 'fill' would create a tensor of shape .*more than the budget"
    ):
        jaxsens.Model.from_onnx(proto)


def _zip(path, members: dict[str, int], *, level=9):
    """A .keras-like archive whose members are ``size`` bytes of zeros, deflated (written in 1 MiB pieces)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        for name, size in members.items():
            with z.open(name, "w", force_zip64=True) as f:
                for start in range(0, size, 2**20):
                    f.write(b" " * min(2**20, size - start))


def test_keras_archive_members_are_capped_before_they_are_read(tmp_path):
    from converters.keras import MAX_KERAS_JSON_BYTES, MAX_ZIP_RATIO

    bomb = tmp_path / "bomb.keras"
    _zip(bomb, {"metadata.json": 10, "config.json": MAX_KERAS_JSON_BYTES + 1, "model.weights.h5": 10})
    assert bomb.stat().st_size < MAX_KERAS_JSON_BYTES // 500  # a small file that would inflate to > 64 MiB
    with pytest.raises(
        ModelFileError, match=r"member 'config.json' inflates to 67,108,865 bytes, more than the cap"
    ):
        jaxsens.load_model(bomb)
    weights = tmp_path / "weights_bomb.keras"
    _zip(weights, {"config.json": 10, "model.weights.h5": 20 * 2**20})
    with pytest.raises(
        ModelFileError, match=rf"member 'model.weights.h5' inflates \d+ times.*{MAX_ZIP_RATIO}x"
    ):
        jaxsens.load_model(weights)


# ---------------------------------------------------------------- graphs whose meaning depends on the batch
def _ort(proto, xs):
    return ort.InferenceSession(proto.SerializeToString()).run(None, {"x": xs})[0]


def test_a_bias_broadcasting_along_the_batch_is_refused_naming_the_node():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    c = numpy_helper.from_array(
        rng.normal(size=(3, 1)).astype(np.float32), "C"
    )  # [3, 1]: along the batch axis
    for batch in (1, "N"):
        gemm = single_input_model(
            [helper.make_node("Gemm", ["x", "W", "C"], ["y"], name="dense")],
            [w, c],
            n_in=4,
            n_out=3,
            batch=batch,
        )
        with pytest.raises(ConversionError, match=r"Gemm node 'dense'.*broadcast"):
            jaxsens.Model.from_onnx(gemm)
        # the same bias after a MatMul: ONNX Add broadcasts both ways, so one row of x gives 3 rows of y
        add = single_input_model(
            [
                helper.make_node("MatMul", ["x", "W"], ["h"], name="dense"),
                helper.make_node("Add", ["h", "C"], ["y"], name="bias"),
            ],
            [w, c],
            n_in=4,
            n_out=3,
            batch=batch,
        )
        with pytest.raises(ConversionError, match=r"Add node 'bias' broadcasts the batch axis.*\[3, 1\]"):
            jaxsens.Model.from_onnx(add)
    for n in (1, 5):  # onnxruntime refuses the Gemm (jaxsens used to return row 0 of the broadcast, silently)
        with pytest.raises(Exception, match="(?i)invalid bias shape for broadcast"):
            _ort(gemm, np.zeros((n, 4), np.float32))
    assert _ort(add, np.zeros((1, 4), np.float32)).shape == (3, 3)  # one sample, three rows
    with pytest.raises(Exception, match="(?i)broadcast"):
        _ort(add, np.zeros((5, 4), np.float32))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_a_normalisation_over_the_batch_axis_is_refused_naming_the_node(op):
    proto = single_input_model([helper.make_node(op, ["x"], ["y"], axis=0, name="norm")], n_in=4, n_out=4)
    with pytest.raises(ConversionError, match=rf"{op} node 'norm' normalises over axis 0, the batch axis"):
        jaxsens.Model.from_onnx(proto)
    ok = single_input_model([helper.make_node(op, ["x"], ["y"], axis=1, name="norm")], n_in=4, n_out=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = jaxsens.Model.from_onnx(ok)
    xs = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    assert model.batched
    np.testing.assert_allclose(model(xs), _ort(ok, xs), rtol=1e-6, atol=1e-6)


def test_a_reduction_over_the_batch_axis_converts_with_a_per_sample_warning():
    """``x - ReduceMean(x over every axis)``: per sample it centres the row on its own mean; the warning says so,
    and the result equals onnxruntime run on one row at a time."""
    proto = single_input_model(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], keepdims=1, name="centre"),
            helper.make_node("Sub", ["x", "m"], ["y"]),
        ],
        n_in=4,
        n_out=4,
    )
    with pytest.warns(
        UserWarning, match=r"ReduceMean node 'centre' mixes the rows of a batch.*one sample at a time"
    ):
        model = jaxsens.Model.from_onnx(proto)
    assert not model.batched
    xs = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    per_row = np.concatenate([_ort(proto, xs[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(model(xs), per_row, rtol=1e-6, atol=1e-6)
    assert not np.allclose(_ort(proto, xs), per_row)  # on the whole batch the graph means something else


def test_a_fixed_batch_of_one_reducing_over_axis_0_is_its_own_meaning():
    proto = single_input_model(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["y"]),
        ],
        n_in=4,
        n_out=4,
        batch=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = jaxsens.Model.from_onnx(proto)
    xs = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        model(xs), np.concatenate([_ort(proto, xs[i : i + 1]) for i in range(3)]), rtol=1e-6, atol=1e-6
    )


# ---------------------------------------------------------------- bad files and arguments: clear errors
def test_a_folder_is_not_a_model(tmp_path):
    for folder in (tmp_path / "plain", tmp_path / "model.onnx", tmp_path / "model.keras"):
        folder.mkdir()
        with pytest.raises(
            ModelFileError, match="is a folder, not a model file; pass the model file inside it"
        ):
            jaxsens.load_model(folder)
    with pytest.raises(ModelFileError, match="is a folder"):
        load_onnx_proto(tmp_path / "model.onnx")


def test_missing_files_raise_model_file_not_found(tmp_path):
    for name in ("missing.onnx", "missing.keras", "missing"):
        with pytest.raises(ModelFileNotFoundError, match=f"'{tmp_path / name}' does not exist"):
            jaxsens.load_model(tmp_path / name)
    with pytest.raises(ArgumentTypeError, match="got dict"):
        jaxsens.load_model({"model": "x.onnx"})


@contextlib.contextmanager
def _unreadable(tmp_path, name: str, data: bytes):
    """A file this process may not read. As root, whom chmod 000 does not stop, the file lives in a world-readable
    folder and is opened with the effective uid of ``nobody`` (restored on exit)."""
    root = os.geteuid() == 0
    folder = tempfile.mkdtemp(prefix="jaxsens-perm-") if root else str(tmp_path)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0)
    if root:
        os.chmod(folder, 0o755)
        os.seteuid(65534)
    try:
        yield path
    finally:
        if root:
            os.seteuid(0)
            shutil.rmtree(folder)
        else:
            os.chmod(path, 0o600)


@pytest.mark.parametrize("name", ["m.onnx", "m.keras", "m.h5"])
def test_an_unreadable_file_says_permission_denied(tmp_path, name):
    data = _initializer("x").SerializeToString()
    with _unreadable(tmp_path, name, data) as path, pytest.raises(ModelFileError) as e:
        jaxsens.load_model(path)
    assert "permission denied" in str(e.value) and name in str(e.value)
    assert "corrupt" not in str(e.value)


def _nodes_model(nodes):
    return single_input_model(nodes, n_in=4, n_out=4)


def test_a_cycle_names_the_tensor_and_the_node():
    proto = _nodes_model(
        [
            helper.make_node("Add", ["x", "b"], ["a"], name="first"),
            helper.make_node("Relu", ["a"], ["b"], name="second"),
            helper.make_node("Identity", ["a"], ["y"], name="out"),
        ]
    )
    with pytest.raises(
        ConversionError, match=r"cycle: Add node 'first' reads tensor 'b', produced by Relu node 'second'"
    ):
        jaxsens.Model.from_onnx(proto)


def test_nodes_out_of_order_and_missing_tensors_name_the_tensor_and_the_node():
    proto = _nodes_model(
        [
            helper.make_node("Identity", ["a"], ["y"], name="late"),
            helper.make_node("Relu", ["x"], ["a"], name="early"),
        ]
    )
    with pytest.raises(
        ConversionError, match=r"Identity node 'late' reads tensor 'a' before Relu node 'early'.*topological"
    ):
        jaxsens.Model.from_onnx(proto)
    proto = _nodes_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")])
    with pytest.raises(
        ConversionError, match=r"Add node 'add' reads tensor 'ghost', which no node, initializer or graph"
    ):
        jaxsens.Model.from_onnx(proto)
    proto = _nodes_model(
        [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")]
    )
    with pytest.raises(ConversionError, match=r"tensor 'y' is produced by two nodes"):
        jaxsens.Model.from_onnx(proto)


def test_corrupt_metadata_names_the_key():
    proto = _nodes_model([helper.make_node("Relu", ["x"], ["y"])])
    helper.set_model_props(proto, {"jaxsens.feature_names": "[not json"})
    with pytest.raises(ModelFileError, match="metadata 'jaxsens.feature_names' is not valid JSON"):
        jaxsens.Model.from_onnx(proto)


def _sequence_model():
    """``x [N, T, 3] -> mean over T -> [N, 3]`` with T unknown in the file."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_input_shape_for_dynamic_non_batch_axes(tmp_path):
    proto = _sequence_model()
    path = _save(proto, tmp_path)
    with pytest.raises(ConversionError, match=r"shape \[\?, \?, 3\] .*input_shape=.*--input-shape 10,3"):
        jaxsens.load_model(path)
    model = jaxsens.load_model(path, input_shape=(10, 3))
    assert model.input_shape == (10, 3) and model.output_shape == (3,)
    xs = np.random.default_rng(4).normal(size=(5, 10, 3)).astype(np.float32)
    np.testing.assert_allclose(model(xs), _ort(proto, xs), rtol=1e-6, atol=1e-6)
    with pytest.raises(ArgumentError, match=r"input_shape=\(10, 4\) does not fit ONNX input 'x'"):
        jaxsens.load_model(path, input_shape=(10, 4))
    with pytest.raises(ArgumentError, match="positive integers"):
        jaxsens.load_model(path, input_shape=(10, -3))
    with pytest.raises(ArgumentTypeError, match="not a sequence of positive integers"):
        jaxsens.load_model(path, input_shape="ten")


def test_cli_input_shape(tmp_path, capsys):
    from jaxsens.cli import main

    path = _save(_sequence_model(), tmp_path)
    out = tmp_path / "converted.onnx"
    assert main(["convert", path, "-o", str(out), "--input-shape", "10,3"]) == 0
    assert "inputs (10, 3) -> outputs (3,)" in capsys.readouterr().out
    assert main(["convert", path, "-o", str(out)]) == 2
    assert "--input-shape" in capsys.readouterr().err
