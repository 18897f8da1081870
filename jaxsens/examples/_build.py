"""Rebuild the bundled default example (``python -m jaxsens.examples._build``): data, training, ONNX export.

Deterministic: a fixed seed, full-batch Adam on the CPU. The network is written to ONNX with ``onnx.helper`` as
MatMul / Add / Relu / Softmax nodes named like tf2onnx names Keras layers (``dense_1/MatMul``), so its intermediates
carry layer names.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import optax

from jaxsens._dense import dense_onnx
from jaxsens.examples import N_FEATURES, TRUE_EFFECTS, default_data_path, default_model_path

HIDDEN = (64, 64, 64)
N_ROWS_TRAIN = 20_000
N_ROWS_BUNDLED = 1_000


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    # two correlated pairs, as real tabular data has (r ~ 0.95): 5 ~ 3 and 70 ~ 71
    x[:, 5] = 0.95 * x[:, 3] + np.sqrt(1 - 0.95**2) * x[:, 5]
    x[:, 71] = 0.95 * x[:, 70] + np.sqrt(1 - 0.95**2) * x[:, 71]
    logit = 2.0 * x[:, 3] - 1.5 * x[:, 17] + 1.0 * x[:, 41] * x[:, 42] + 0.8 * np.sin(2 * x[:, 60])
    y = (logit + 0.3 * rng.normal(size=n) > 0).astype(np.int32)
    return x, y


def init(key):
    sizes = (N_FEATURES, *HIDDEN, 2)
    params = []
    for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        params.append({"W": jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a), "b": jnp.zeros(b)})
    return params


def logits(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["W"] + layer["b"])
    return x @ params[-1]["W"] + params[-1]["b"]


def train(x, y, *, steps=1500, seed=0):
    params = init(jax.random.key(seed))
    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean() + 1e-5 * sum(
                jnp.sum(layer["W"] ** 2) for layer in p
            )

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    for _ in range(steps):
        params, state, value = step(params, state)
    return params, float(value)


def to_onnx(params, feature_names) -> onnx.ModelProto:
    return dense_onnx(
        params,
        graph_name="jaxsens_default",
        metadata={
            "jaxsens.feature_names": json.dumps(list(feature_names)),
            "jaxsens.output_names": json.dumps(["class_0", "class_1"]),
            "jaxsens.true_effects": json.dumps({str(k): v for k, v in TRUE_EFFECTS.items()}),
        },
    )


def main():
    x, y = make_data(N_ROWS_TRAIN, seed=2019)
    params, loss = train(x, y)
    acc = float(np.mean(np.argmax(np.asarray(logits(params, x)), 1) == y))
    feature_names = [f"f{i:02d}" for i in range(N_FEATURES)]
    onnx.save(to_onnx(params, feature_names), default_model_path())
    bundled, _ = make_data(N_ROWS_BUNDLED, seed=7)
    np.save(default_data_path(), bundled)
    print(f"trained: loss {loss:.4f}, train accuracy {acc:.3f}; wrote {default_model_path()} and {default_data_path()}")


if __name__ == "__main__":
    main()
