"""Load + convert time and first-call compile time for each fixture model (issue 2, item 9).

    python bench/convert.py [--repeats 3]

For every fixture (Keras files of each kind, PyTorch and scikit-learn ONNX exports) it measures, in one process:
  * to_onnx_s:   Keras file -> ONNX (tf2onnx; 0 for files that are ONNX already),
  * from_onnx_s: ONNX -> jaxsens.Model (parse, prune, split params / constants),
  * compile_s:   first call of the jitted batch prediction (trace + XLA compile), batch 256,
  * predict_ms:  a warm call on the same batch,
  * jac_compile_s: first call of a jitted vmap(jacrev) on the same batch,
and checks the prediction against the original framework (max abs difference is reported).
Writes bench/results/convert.json and prints a table. Fixtures are built seeded in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxsens  # noqa: E402
from _common import format_table, machine_info, write_json  # noqa: E402


def keras_fixtures(tmp):
    import keras
    import tf_keras

    keras.utils.set_random_seed(0)
    out = []

    def mlp3():
        inp = keras.Input((82,))
        x = inp
        for _ in range(3):
            x = keras.layers.Dense(500, activation="relu")(x)
        return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))

    m = mlp3()
    m.save(os.path.join(tmp, "mlp.keras"))
    out.append(("seed000 MLP .keras (Keras 3)", os.path.join(tmp, "mlp.keras"), None, m.predict, (82,)))
    m.save(os.path.join(tmp, "mlp.h5"))
    out.append(("seed000 MLP .h5 (Keras 3)", os.path.join(tmp, "mlp.h5"), None, m.predict, (82,)))
    m.export(os.path.join(tmp, "mlp_savedmodel"), verbose=False)
    out.append(("seed000 MLP SavedModel", os.path.join(tmp, "mlp_savedmodel"), None, m.predict, (82,)))

    tf_keras.utils.set_random_seed(0)
    legacy = tf_keras.Sequential(
        [tf_keras.layers.Dense(500, activation="relu", input_shape=(82,))]
        + [tf_keras.layers.Dense(500, activation="relu") for _ in range(2)]
        + [tf_keras.layers.Dense(2, activation="softmax")]
    )
    with open(os.path.join(tmp, "legacy_structure.json"), "w") as f:
        f.write(legacy.to_json())
    legacy.save_weights(os.path.join(tmp, "legacy_weights.h5"))
    out.append(
        ("seed000 MLP legacy json+h5 (tf_keras)", os.path.join(tmp, "legacy_structure.json"),
         os.path.join(tmp, "legacy_weights.h5"), legacy.predict, (82,))
    )

    inp = keras.Input((10, 3))
    x = keras.layers.LSTM(10, activation="relu", return_sequences=True)(inp)
    x = keras.layers.LSTM(5, activation="relu", return_sequences=True)(x)
    x = keras.layers.LSTM(1, activation="sigmoid", return_sequences=True)(x)
    lstm = keras.Model(inp, keras.layers.Flatten()(x))
    lstm.save(os.path.join(tmp, "lstm.keras"))
    out.append(("seed001 LSTM .keras (Keras 3)", os.path.join(tmp, "lstm.keras"), None, lstm.predict, (10, 3)))

    inp = keras.Input((10, 3))
    gru = keras.Model(inp, keras.layers.Dense(1)(keras.layers.GRU(8)(inp)))
    gru.save(os.path.join(tmp, "gru.keras"))
    out.append(("GRU .keras (Keras 3, Loop)", os.path.join(tmp, "gru.keras"), None, gru.predict, (10, 3)))

    lg = tf_keras.Sequential([tf_keras.layers.LSTM(8, recurrent_activation="hard_sigmoid", input_shape=(10, 3)),
                              tf_keras.layers.Dense(1)])
    with open(os.path.join(tmp, "lstm2_structure.json"), "w") as f:
        f.write(lg.to_json())
    lg.save_weights(os.path.join(tmp, "lstm2_weights.h5"))
    out.append(("LSTM hard_sigmoid legacy json+h5", os.path.join(tmp, "lstm2_structure.json"),
                os.path.join(tmp, "lstm2_weights.h5"), lg.predict, (10, 3)))
    return out


def onnx_fixtures(tmp):
    import torch
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor

    torch.manual_seed(0)
    out = []
    net = torch.nn.Sequential(torch.nn.Linear(82, 500), torch.nn.ReLU(), torch.nn.Linear(500, 500), torch.nn.ReLU(),
                              torch.nn.Linear(500, 2), torch.nn.Softmax(dim=-1)).eval()
    path = os.path.join(tmp, "torch_mlp.onnx")
    torch.onnx.export(net, torch.zeros(1, 82), path, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    out.append(("torch MLP .onnx", path, None, lambda x: net(torch.from_numpy(x)).detach().numpy(), (82,)))

    class LSTMNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(3, 16, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(16, 1)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    lnet = LSTMNet().eval()
    path = os.path.join(tmp, "torch_lstm.onnx")
    torch.onnx.export(lnet, torch.zeros(1, 10, 3), path, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    out.append(("torch LSTM .onnx", path, None, lambda x: lnet(torch.from_numpy(x)).detach().numpy(), (10, 3)))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 20)).astype(np.float32)
    reg = MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=50, random_state=0).fit(x, x[:, 0] - x[:, 1])
    path = os.path.join(tmp, "sklearn_mlp.onnx")
    with open(path, "wb") as f:
        f.write(to_onnx(reg, x[:1], target_opset=17).SerializeToString())
    out.append(("sklearn MLPRegressor .onnx", path, None, lambda v: reg.predict(v).reshape(-1, 1), (20,)))
    return out


@jax.jit
def _jac(model, xs):
    return jax.vmap(jax.jacrev(model.apply, argnums=1), (None, 0))(model.params, xs)


def measure(name, path, weights, reference, in_shape, repeats):
    from converters.keras import keras_file_to_onnx

    rows = []
    for _ in range(repeats):
        jax.clear_caches()
        t0 = time.perf_counter()
        if path.endswith(".onnx"):
            proto = path
        else:
            proto = keras_file_to_onnx(path, weights=weights)
        t1 = time.perf_counter()
        model = jaxsens.Model.from_onnx(proto)
        t2 = time.perf_counter()
        xs = np.random.default_rng(1).uniform(size=(256, *in_shape)).astype(np.float32)
        y = model(xs)
        t3 = time.perf_counter()
        model(xs)
        t4 = time.perf_counter()
        np.asarray(_jac(model, xs))
        t5 = time.perf_counter()
        rows.append((t1 - t0 if not path.endswith(".onnx") else 0.0, t2 - t1, t3 - t2, (t4 - t3) * 1e3, t5 - t4))
    want = np.asarray(reference(xs)).reshape(y.shape)
    med = [statistics.median(c) for c in zip(*rows)]
    return {
        "model": name,
        "to_onnx_s": med[0],
        "from_onnx_s": med[1],
        "compile_s": med[2],
        "predict_ms": med[3],
        "jac_compile_s": med[4],
        "max_abs_diff": float(np.max(np.abs(y - want))),
        "n_params": int(sum(np.size(p) for p in jax.tree.leaves(model.params))),
        "raw": rows,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fixtures = keras_fixtures(tmp) + onnx_fixtures(tmp)
        results = [measure(*f, repeats=args.repeats) for f in fixtures]
    cols = [("model", "model", "{}"), ("to_onnx_s", "Keras->ONNX s", "{:.2f}"), ("from_onnx_s", "ONNX->JAX s", "{:.3f}"),
            ("compile_s", "1st predict s", "{:.2f}"), ("predict_ms", "warm predict ms", "{:.2f}"),
            ("jac_compile_s", "1st jacobian s", "{:.2f}"), ("max_abs_diff", "max |diff|", "{:.1e}"),
            ("n_params", "params", "{:,}")]
    print(format_table(results, cols))
    print(format_table(results, cols, markdown=True))
    path = write_json("convert.json", {"machine": machine_info(), "repeats": args.repeats, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
