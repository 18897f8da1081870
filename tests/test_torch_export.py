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

import jax  # noqa: E402

import jaxsens  # noqa: E402
from jaxsens.errors import ConversionError  # noqa: E402

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
    f = lambda x: model(x.unsqueeze(0)).squeeze(0)  # noqa: E731
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
