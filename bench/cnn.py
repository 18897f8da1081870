"""Convolution Jacobians: jaxsens against TensorFlow on MobileNetV2 and a ResNet-like CNN (issue 14, item 4).

Everything runs in one process, competitors interleaved (round-robin repeats, medians reported, raw times kept)::

    python bench/cnn.py                    # N = 64 rows per model, 3 repeats
    python bench/cnn.py --n 1000           # the issue's N (minutes per repeat on 2 cores)
    python bench/cnn.py --baseline         # also jaxsens with every convolution as one lax.conv_general_dilated
    python bench/cnn.py --tf-xla           # also TensorFlow with jit_compile=True

Suites:

* **micro** -- the input gradient of one 3x3 depthwise convolution, ``[64, 144, 16, 16]`` (stride 1 and 2): JAX's
  ``lax.conv_general_dilated(feature_group_count=C)`` (the old lowering), the ``"shifted"`` lowering of
  ``converters/onnx_to_jax/ops/nn.py`` (shifted multiply-adds), and TensorFlow's ``tf.nn.depthwise_conv2d``
  (NHWC, its own CPU kernels) under ``tf.function``.
* **mobilenetv2** -- ``keras.applications.MobileNetV2(input_shape=(64, 64, 3), classes=10, weights=None,
  alpha=1.0)`` (seeded), saved to ``.keras`` and loaded by ``jaxsens.load_model`` (Keras -> ONNX -> JAX).
* **resnet** -- a ResNet-like CNN defined here: ``Input(32, 32, 3)`` -> Conv 3x3 (16) + BN + ReLU -> three
  residual blocks (two 3x3 convolutions with BN, ReLU; 16, 32, 64 channels, the 2nd and 3rd with stride 2 and a
  1x1 projection on the skip) -> global average pooling -> Dense(10, softmax); BatchNormalization is exported by
  tf2onnx as Keras traces it (moving statistics, not folded into the convolutions).

For both models, ``N`` rows of standard-normal images (in memory), the full per-sample Jacobian ``[N, 10, *input]``
and its mean ``|J|``:

- ``jaxsens``: ``jaxsens.jacobian_importance(model, xs)`` with every option at its default (``mode="auto"`` ->
  reverse: 10 outputs against 12,288 / 3,072 input elements; a softmax head pulls back 9 rows).
- ``jaxsens_lax`` (``--baseline``): the same with the old lowering (every Conv one ``lax.conv_general_dilated``),
  recompiled after the interleaved rounds and timed once (not interleaved: the lowering is fixed at trace time).
- ``tf_batch_jacobian``: ``GradientTape.batch_jacobian`` (vectorised with ``pfor``) on the Keras model inside
  ``tf.function``, over chunks of 64 rows; ``tf_batch_jacobian_xla`` (``--tf-xla``) the same with
  ``jit_compile=True``.

Correctness first: every competitor's mean ``|J|`` is compared with jaxsens's (max relative error) before timing.
Output: a table on stdout and ``bench/results/cnn_<tag>.json`` (tag ``cpu`` on the CPU backend).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
from _common import TMP_DIR, format_table, interleaved, machine_info, median, result_tag, timed, write_json

import jaxsens
from converters.onnx_to_jax.ops import nn as onnx_nn

TF_CHUNK = 64


def log(msg: str = "") -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------------- models
def mobilenet_v2(path: str):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), classes=10, weights=None, alpha=1.0)
    model.save(path)
    return model


def resnet_like(path: str):
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)

    def block(h, filters, stride):
        skip = h
        h = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
        h = layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization()(h)
        if stride != 1 or skip.shape[-1] != filters:
            skip = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=stride, use_bias=False)(skip))
        return layers.ReLU()(layers.Add()([h, skip]))

    inp = keras.Input((32, 32, 3))
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        h = block(h, filters, stride)
    out = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(2)  # non-trivial moving statistics
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
    model.save(path)
    return model


# ---------------------------------------------------------------------------------------------------- competitors
def tf_jacobian(keras_model, xs: np.ndarray, *, xla: bool):
    import tensorflow as tf

    @tf.function(jit_compile=xla, reduce_retracing=True)
    def chunk_sum(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = keras_model(x, training=False)
        return tf.reduce_sum(tf.abs(tape.batch_jacobian(y, x)), axis=0)

    def run() -> np.ndarray:
        total = None
        for i in range(0, len(xs), TF_CHUNK):
            part = chunk_sum(tf.constant(xs[i:i + TF_CHUNK])).numpy().astype(np.float64)
            total = part if total is None else total + part
        return total / len(xs)

    return run


def jaxsens_jacobian(model, xs: np.ndarray, *, lax_only: bool = False):
    def run() -> np.ndarray:
        saved = onnx_nn._FAST_CONV_BACKENDS
        if lax_only:
            onnx_nn._FAST_CONV_BACKENDS = ()
        try:
            res = jaxsens.jacobian_importance(model, xs)
        finally:
            onnx_nn._FAST_CONV_BACKENDS = saved
        run.mode = res.mode
        return np.asarray(res.importance, np.float64)

    return run


def engine_batch_size(model, n: int) -> int | None:
    """The chunk size the engine picks by default (private helpers; ``None`` if they changed)."""
    try:
        from jaxsens import _engine, _jacobian

        return int(_engine.choose_batch_size(_jacobian._bytes_per_sample(model, "reverse", None), n_rows=n))
    except Exception:  # noqa: BLE001 - diagnostics only
        return None


def suite_model(name: str, build, args) -> dict:
    path = os.path.join(TMP_DIR, f"cnn_{name}.keras")
    os.makedirs(TMP_DIR, exist_ok=True)
    keras_model = build(path)
    t0 = time.perf_counter()
    model = jaxsens.load_model(path)
    load_s = time.perf_counter() - t0
    shape = tuple(model.input_shape)
    xs = np.random.default_rng(3).normal(size=(args.n, *shape)).astype(np.float32)
    jobs = {"jaxsens": jaxsens_jacobian(model, xs), "tf_batch_jacobian": tf_jacobian(keras_model, xs, xla=False)}
    if args.tf_xla:
        jobs["tf_batch_jacobian_xla"] = tf_jacobian(keras_model, xs, xla=True)
    log(f"\n== {name}: input {shape}, N = {args.n}, load {load_s:.1f} s, batched graph: {model.batched}")
    first, errors = {}, {}
    for key, fn in jobs.items():  # warm-up (compilation) and the correctness check
        t0 = time.perf_counter()
        fn()
        out = fn()
        first[key] = time.perf_counter() - t0
        if key == "jaxsens":
            ref = out
        errors[key] = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
        log(f"  warm-up {key:<24s} {first[key]:8.1f} s (two runs)  max rel. diff of mean |J| vs jaxsens {errors[key]:.2e}")
    times = interleaved(jobs, repeats=args.repeats, log=log, settle_seconds=0.5)
    if args.baseline:  # the lowering is chosen at trace time: recompile without the fast forms, time once after
        jax.clear_caches()
        fn = jaxsens_jacobian(model, xs, lax_only=True)
        fn()
        seconds, out = timed(fn)
        jax.clear_caches()
        times["jaxsens_lax"] = [seconds]
        errors["jaxsens_lax"] = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
        log(f"  jaxsens_lax (not interleaved, one run) {seconds:8.1f} s")
    med = {k: median(v) for k, v in times.items()}
    tf_best = min(v for k, v in med.items() if k.startswith("tf_"))
    rows = [{"name": k, "s": v, "per1000": v / args.n * 1000, "rps": args.n / v, "ratio": tf_best / v,
             "diff": errors[k]} for k, v in med.items()]
    log(format_table(rows, [("name", "competitor", "{}"), ("s", "median s", "{:.2f}"),
                            ("per1000", "s / 1000 rows", "{:.1f}"), ("rps", "rows/s", "{:.2f}"),
                            ("ratio", "speed vs best TF", "{:.2f}x"), ("diff", "rel. diff", "{:.1e}")]))
    return {
        "input_shape": list(shape),
        "n": args.n,
        "mode": getattr(jobs["jaxsens"], "mode", None),
        "engine_batch_size": engine_batch_size(model, args.n),
        "load_seconds": load_s,
        "warmup_seconds": first,
        "max_rel_diff_vs_jaxsens": errors,
        "seconds": times,
        "median_seconds": med,
        "ratio_vs_best_tf": {k: tf_best / v for k, v in med.items()},
    }


# ---------------------------------------------------------------------------------------------------- micro
def suite_micro(args) -> dict:
    import tensorflow as tf

    out = {}
    rng = np.random.default_rng(4)
    n, c, size = 64, 144, 16
    x = rng.normal(size=(n, c, size, size)).astype(np.float32)
    w = rng.normal(size=(c, 1, 3, 3)).astype(np.float32)
    x_nhwc, w_tf = tf.constant(x.transpose(0, 2, 3, 1)), tf.constant(w[:, 0].transpose(1, 2, 0)[..., None])
    for stride in (1, 2):
        pad = [(1, 1), (1, 1)] if stride == 1 else [(0, 1), (0, 1)]  # Keras' "same" / MobileNet's stride-2 pad
        args_ = ((stride, stride), pad, (1, 1), c)

        def grad_of(f, args_=args_):
            g = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(f(x, w, *args_)))))
            return lambda: g(x).block_until_ready()

        tf_pad = [[0, 0], *(list(p) for p in pad), [0, 0]]

        @tf.function
        def tf_grad(xt, stride=stride, tf_pad=tf_pad):
            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = tf.nn.depthwise_conv2d(tf.pad(xt, tf_pad), w_tf, [1, stride, stride, 1], "VALID")
                loss = tf.reduce_sum(tf.sin(y))
            return tape.gradient(loss, xt)

        jobs = {
            "jax_lax_grouped": grad_of(onnx_nn._conv_lax),
            "jax_shifted": grad_of(onnx_nn._conv_shifted),
            "tf_depthwise_conv2d": lambda: tf_grad(x_nhwc).numpy(),
        }
        ref = np.asarray(jax.grad(lambda x, a=args_: jnp.sum(jnp.sin(onnx_nn._conv_lax(x, w, *a))))(x))
        got_tf = tf_grad(x_nhwc).numpy().transpose(0, 3, 1, 2)
        for fn in jobs.values():
            fn()
        err = float(np.max(np.abs(got_tf - ref)) / np.max(np.abs(ref)))
        log(f"\n== micro: input gradient of a 3x3 depthwise conv [{n}, {c}, {size}, {size}], stride {stride} "
            f"(TF vs JAX max rel. diff {err:.1e})")
        times = interleaved(jobs, repeats=args.repeats + 2, log=None, settle_seconds=0.2)
        med = {k: median(v) for k, v in times.items()}
        log(format_table([{"name": k, "s": v} for k, v in med.items()],
                         [("name", "competitor", "{}"), ("s", "median s", "{:.3f}")]))
        out[f"stride{stride}"] = {"shape": [n, c, size, size], "seconds": times, "median_seconds": med,
                                  "tf_vs_jax_max_rel_diff": err}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=64, help="rows per model (default 64)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--suites", default="micro,mobilenetv2,resnet")
    p.add_argument("--baseline", action="store_true", help="also time the old lowering (slow)")
    p.add_argument("--tf-xla", action="store_true", help="also time TensorFlow with jit_compile=True")
    p.add_argument("--tag", default=None, help="suffix of the JSON file name")
    args = p.parse_args(argv)
    suites = args.suites.split(",")
    result = {"machine": machine_info(), "settings": vars(args),
              "note": "2 shared cores; other helpers' jobs ran at the same time (load average in machine)"}
    if "micro" in suites:
        result["micro"] = suite_micro(args)
    if "mobilenetv2" in suites:
        result["mobilenetv2"] = suite_model("mobilenetv2", mobilenet_v2, args)
    if "resnet" in suites:
        result["resnet"] = suite_model("resnet", resnet_like, args)
    result["load_average_end"] = list(os.getloadavg())
    name = f"cnn_{result_tag()}" + (f"_{args.tag}" if args.tag else "")
    log(f"\nwrote {write_json(name + '.json', result)}")


if __name__ == "__main__":
    main()
