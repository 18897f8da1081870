"""PyTorch exports, every way ``torch.onnx.export`` is called: loaded and explained like the torch model itself.

Grid: five architectures (MLP, 2-layer LSTM, bidirectional GRU, TransformerEncoderLayer, Conv2d + BatchNorm2d +
MaxPool + Linear) x the two exporters (the default one, ``dynamo=True`` in torch 2.13, and TorchScript,
``dynamo=False``) x the batch axis (dynamic: ``dynamic_shapes`` / ``dynamic_axes``; fixed by an example batch of 1,
2 or 5, what the plain call writes). A fixed batch above 1 is baked into the graph (``Reshape(h, [2, 144])``, an
LSTM state ``[layers, 2, hidden]``); :mod:`converters.onnx_to_jax.batch_axis` makes it symbolic. Each combination
must predict like torch at batch sizes 1, 2 and 37 and give torch's per-sample Jacobians (``torch.func.jacrev``).

Tolerances: the issue's bounds, ``1e-5`` (predictions) and ``1e-4`` (Jacobians) relative to the largest magnitude
(at least 1). Both stay well above float32 rounding for these small networks (about 40 and 400 eps32: the longest
accumulation here is a fan-in of 144, summed pairwise or blocked by both frameworks), and far below the error of a
wrong batch rewrite, which mixes the rows of a batch (errors of the order of the outputs).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")  # the default (dynamo) exporter writes its graphs with onnxscript

import jax

import jaxsens
from jaxsens.errors import ConversionError

nn = torch.nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


class LSTM(nn.Module):
    def __init__(self, n_in=4, hidden=16):
        super().__init__()
        self.rnn = nn.LSTM(n_in, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class GRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 8, batch_first=True, bidirectional=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.enc(x).mean(1))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3)
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(144, 3)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.view(x.size(0), -1))  # the classic flatten: Reshape(x, [batch, 144]) at a fixed batch


# per-sample input shapes (sequences of 3 steps: the recurrent graphs unroll them, compile time grows with them)
MODELS = {
    "mlp": (MLP, (6,)),
    "lstm": (LSTM, (3, 4)),
    "gru": (GRU, (3, 4)),
    "transformer": (Transformer, (3, 8)),
    "cnn": (CNN, (1, 8, 8)),
}
EXPORTERS = ("default", "torchscript")
BATCHES = ("dynamic", 1, 2, 5)
PRED_TOL, JAC_TOL = 1e-5, 1e-4


def _torch_model(cls, **kwargs):
    torch.manual_seed(0)
    model = cls(**kwargs)
    for m in model.modules():  # running statistics away from 0 / 1, so BatchNorm does something
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _export(model, shape, path, exporter: str, batch) -> None:
    """``torch.onnx.export`` as users call it: the default exporter with no ``dynamo`` argument, TorchScript with
    ``dynamo=False``; a dynamic batch through ``dynamic_shapes`` / ``dynamic_axes``, else the example's batch."""
    x = torch.randn(3 if batch == "dynamic" else batch, *shape)
    kwargs = {}
    if batch == "dynamic":
        if exporter == "default":
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        else:
            kwargs["dynamic_axes"] = {"x": {0: "batch"}}
    if exporter == "torchscript":
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, torchvision not installed)
        torch.onnx.export(model, (x,), path, input_names=["x"], **kwargs)


@pytest.fixture(scope="module", params=[(m, e) for m in MODELS for e in EXPORTERS], ids=lambda p: f"{p[0]}-{p[1]}")
def exported(request, tmp_path_factory):
    """One torch model exported the four ways (dynamic batch, fixed 1, 2, 5) by one exporter, with 37 samples, its
    predictions and the per-sample Jacobians of the first 3."""
    name, exporter = request.param
    cls, shape = MODELS[name]
    model = _torch_model(cls)
    folder = tmp_path_factory.mktemp(f"{name}-{exporter}")
    paths = {}
    for batch in BATCHES:
        paths[batch] = os.path.join(folder, f"{name}_{batch}.onnx")
        _export(model, shape, paths[batch], exporter, batch)
    xs = np.random.default_rng(7).standard_normal((37, *shape)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.as_tensor(xs)).numpy()
    return {"name": name, "shape": shape, "paths": paths, "xs": xs, "want": want,
            "jacobians": _torch_jacobians(model, xs[:3])}


def _assert_close(got, want, rel: float, what: str) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    tol = rel * max(1.0, float(np.max(np.abs(want))))
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g}"
    return err


def _torch_jacobians(model, xs):
    """Per-sample Jacobians ``[n, *output_shape, *input_shape]`` with ``torch.func.jacrev``, one sample at a time
    (``torch.func.vmap`` has no batching rule for ``torch.nn.GRU``)."""
    f = lambda x: model(x.unsqueeze(0)).squeeze(0)
    return np.stack([torch.func.jacrev(f)(x).detach().numpy() for x in torch.as_tensor(xs)])


@jax.jit
def _jacobians(model, xs):
    return jax.vmap(jax.jacrev(model.apply, argnums=1), in_axes=(None, 0))(model.params, xs)


@pytest.mark.parametrize("batch", BATCHES)
def test_export_predicts_and_differentiates_like_torch(exported, batch):
    model = jaxsens.load_model(exported["paths"][batch])
    assert model.input_shape == exported["shape"]
    xs, want = exported["xs"], exported["want"]
    for n in (1, 2, 37):
        _assert_close(model(xs[:n]), want[:n], PRED_TOL, f"prediction at batch {n}")
    if batch not in ("dynamic", 1) and exported["name"] != "transformer":
        # the fixed batch was made symbolic: the graph runs whole batches again (the row check cannot prove the
        # attention's rows independent, dynamic or not, so the transformer runs per sample either way)
        assert model.batched
    _assert_close(_jacobians(model, xs[:3]), exported["jacobians"], JAC_TOL, "Jacobian")


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_a_hidden_size_equal_to_the_batch_is_not_taken_for_the_batch(tmp_path, exporter):
    """Batch 2, sequence length 2, 2 features, hidden size 2: every constant of the exported graph that could be
    the batch is 2 (``Reshape(y, [2, 2, 2])``, a state ``[1, 2, 2]``); only the batch axis may be rewritten."""
    torch_model = _torch_model(LSTM, n_in=2, hidden=2)
    path = str(tmp_path / "lstm.onnx")
    _export(torch_model, (2, 2), path, exporter, 2)
    model = jaxsens.load_model(path)
    assert model.batched  # rewritten: a symbolic batch
    xs = np.random.default_rng(3).standard_normal((37, 2, 2)).astype(np.float32)
    with torch.no_grad():
        want = torch_model(torch.as_tensor(xs)).numpy()
    for n in (1, 3, 37):
        _assert_close(model(xs[:n]), want[:n], PRED_TOL, f"prediction at batch {n}")
    _assert_close(_jacobians(model, xs[:3]), _torch_jacobians(torch_model, xs[:3]), JAC_TOL, "Jacobian")


class _ClassToken(nn.Module):
    """A ViT-style class token: ``cat([cls.expand(batch, -1, -1), h])`` (a weight expanded to the batch)."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.proj = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.cat([self.cls.expand(x.size(0), -1, -1), self.proj(x)], dim=1)
        return self.head(torch.tanh(h).sum(1))


class _TokenLSTM(nn.Module):
    """Token ids -> Embedding -> LSTM from an explicit zero state ``torch.zeros(1, batch, hidden)``."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.rnn = nn.LSTM(6, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, ids):
        h0 = torch.zeros(1, ids.size(0), 5)
        y, _ = self.rnn(self.emb(ids), (h0, torch.zeros_like(h0)))
        return self.head(y[:, -1])


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("cls", [_ClassToken, _TokenLSTM], ids=["class-token", "token-lstm"])
def test_batch_sized_weights_states_and_token_ids_follow_the_batch(tmp_path, exporter, cls):
    torch_model = _torch_model(cls)
    integer = cls is _TokenLSTM
    shape = (4,) if integer else (3, 4)
    path = str(tmp_path / "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        example = torch.randint(0, 10, (2, *shape)) if integer else torch.randn(2, *shape)
        torch.onnx.export(torch_model, (example,), path, input_names=["x"],
                          **({"dynamo": False} if exporter == "torchscript" else {}))
    model = jaxsens.load_model(path)
    assert model.batched  # rewritten: a symbolic batch
    rng = np.random.default_rng(6)
    xs = rng.integers(0, 10, (37, *shape)) if integer else rng.standard_normal((37, *shape)).astype(np.float32)
    with torch.no_grad():
        want = torch_model(torch.as_tensor(xs)).numpy()
    for n in (1, 2, 37):
        _assert_close(model(xs[:n]), want[:n], PRED_TOL, f"prediction at batch {n}")


class _PerRowOffset(nn.Module):
    """Adds a learned offset per *row of the batch*: a graph whose meaning depends on the batch size."""

    def __init__(self, batch):
        super().__init__()
        self.offset = nn.Parameter(torch.arange(batch * 4, dtype=torch.float32).reshape(batch, 4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x + self.offset)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_a_batch_that_cannot_be_freed_is_refused_with_the_export_to_redo(tmp_path, exporter):
    path = str(tmp_path / "offset.onnx")
    _export(_PerRowOffset(3).eval(), (4,), path, exporter, 3)
    with pytest.raises(ConversionError, match=r"fixes the batch at 3") as info:
        jaxsens.load_model(path)
    message = str(info.value)
    assert "differs from row to row" in message  # why: the offset is not one value repeated for every sample
    assert "dynamic_axes={'x': {0: 'batch'}}" in message
    assert "dynamic_shapes=({0: torch.export.Dim('batch')},)" in message


@pytest.mark.parametrize("name", ["lstm", "cnn"])
def test_the_default_exporter_with_legacy_dynamic_axes(tmp_path, name):
    """Calls written for the TorchScript exporter keep ``dynamic_axes=`` when torch's default becomes dynamo."""
    cls, shape = MODELS[name]
    torch_model = _torch_model(cls)
    path = str(tmp_path / f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch_model, (torch.randn(2, *shape),), path, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    model = jaxsens.load_model(path)
    xs = np.random.default_rng(5).standard_normal((37, *shape)).astype(np.float32)
    with torch.no_grad():
        want = torch_model(torch.as_tensor(xs)).numpy()
    for n in (1, 2, 37):
        _assert_close(model(xs[:n]), want[:n], PRED_TOL, f"prediction at batch {n}")


# ---------------------------------------------------------------- fixed-batch ONNX graphs, beyond torch's patterns
def _fixed_batch_graph(nodes, inits=(), *, batch=3, n_in=4):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_in])], list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_a_reshape_merging_and_splitting_the_batch_is_rewritten():
    from onnx import helper, numpy_helper

    proto = _fixed_batch_graph([
        helper.make_node("Reshape", ["x", "flat"], ["f"]),  # [3, 4] -> [12]: the batch merged with the features
        helper.make_node("Tanh", ["f"], ["t"]),
        helper.make_node("Reshape", ["t", "rows"], ["y"]),  # [12] -> [3, 4]
    ], [numpy_helper.from_array(np.array([12]), "flat"), numpy_helper.from_array(np.array([3, 4]), "rows")])
    model = jaxsens.Model.from_onnx(proto)
    xs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    _assert_close(model(xs), np.tanh(xs), PRED_TOL, "prediction")


def test_an_op_without_a_rule_keeps_the_graph_per_sample_when_that_is_its_meaning():
    from onnx import helper, numpy_helper

    w = np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32)
    proto = _fixed_batch_graph([helper.make_node("Einsum", ["x", "w"], ["y"], equation="bi,ij->bj")],
                               [numpy_helper.from_array(w, "w")])
    model = jaxsens.Model.from_onnx(proto)
    assert not model.batched  # not rewritten: one sample at a time, proved equal to the graph at its batch of 3
    xs = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    _assert_close(model(xs), xs @ w, PRED_TOL, "prediction")


def test_a_fixed_batch_reduced_or_normalised_over_keeps_the_row_checks_verdict():
    from onnx import helper

    centre = _fixed_batch_graph([helper.make_node("ReduceMean", ["x"], ["m"], keepdims=1, name="centre"),
                                 helper.make_node("Sub", ["x", "m"], ["y"])])
    with pytest.warns(UserWarning, match=r"ReduceMean node 'centre' mixes the rows of a batch"):
        jaxsens.Model.from_onnx(centre)
    softmax = _fixed_batch_graph([helper.make_node("Softmax", ["x"], ["y"], axis=0, name="norm")])
    with pytest.raises(ConversionError, match=r"Softmax node 'norm' normalises over axis 0, the batch axis"):
        jaxsens.Model.from_onnx(softmax)


def test_the_numerical_confirmation_catches_a_wrong_provenance(monkeypatch):
    """Fault injection: a rule that takes the first axis of the batch's size for the batch (what a rewrite by value
    would do) passes the shape checks on this graph; the confirmation at other batch sizes refuses it."""
    from onnx import helper, numpy_helper

    from converters.onnx_to_jax import batch_axis

    proto = _fixed_batch_graph([
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),  # [4, 2]: the batch on axis 1
        helper.make_node("Reshape", ["t", "split"], ["r"]),  # [2, 2, 2]: the batch on axis 2
        helper.make_node("Tanh", ["r"], ["h"]),
        helper.make_node("Transpose", ["h"], ["u"], perm=[2, 0, 1]),
        helper.make_node("Reshape", ["u", "rows"], ["y"]),
    ], [numpy_helper.from_array(np.array([2, 2, 2]), "split"), numpy_helper.from_array(np.array([2, 4]), "rows")],
        batch=2)
    xs = np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)
    _assert_close(jaxsens.Model.from_onnx(proto)(xs), np.tanh(xs), PRED_TOL, "prediction")  # the real rules
    by_value = lambda layout, shape, new, n: (list(new).index(n), 1, 1) if n in new else None
    monkeypatch.setattr(batch_axis, "_flat", by_value)
    with pytest.raises(ConversionError, match=r"fixes the batch at 2.*does not reproduce the original at batch 2"):
        jaxsens.Model.from_onnx(proto)
