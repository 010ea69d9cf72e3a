"""TensorFlow Lite Micro's footprint for advtrain's smallcnn and seed-cnn (docs/export.md).

Builds each network in Keras with the same layers and shapes (NHWC; Keras 'same' padding gives
the same output sizes as advtrain's explicit padding), converts it to a fully int8 TFLite model
(int8 weights per channel, int8 activations, int32 biases: the scheme advtrain's int8 export
uses) with a representative dataset, and reports the .tflite flatbuffer's size (what TFLM keeps
in flash besides its own code) and the tensor arena TFLM's interpreter allocates (RAM), read off
its print_allocations() report (run it and read the 'Arena allocation' lines). Weights are random: neither figure depends on their values.

Needs the PyPI packages tensorflow-cpu and tflite-micro (not a test dependency):
    python3 -m venv .venv-tflm && .venv-tflm/bin/pip install tensorflow-cpu tflite-micro
    .venv-tflm/bin/python tools/tflm_footprint.py
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
from tflite_micro.python.tflite_micro import runtime


def smallcnn():
    L = tf.keras.layers
    return tf.keras.Sequential([
        L.Input((28, 28, 1)),
        L.Conv2D(16, 4, 2, padding="same", activation="relu"),
        L.Conv2D(32, 4, 2, padding="same", activation="relu"),
        L.Flatten(), L.Dense(100, activation="relu"), L.Dense(10)])


def seed_cnn():
    L = tf.keras.layers
    return tf.keras.Sequential([
        L.Input((28, 28, 1)),
        L.Conv2D(6, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(16, 5, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(120, activation="relu"), L.Dense(84, activation="relu"), L.Dense(10)])


def to_int8(model):
    rng = np.random.default_rng(0)

    def data():
        for _ in range(100):
            yield [rng.random((1, 28, 28, 1), dtype=np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = data
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def print_arena(flatbuffer):
    """TFLM's own allocation report (C++ stdout): the arena's total, head (activations) and tail
    (persistent: tensor structs, per-channel quantization data, kernels' buffers)."""
    interp = runtime.Interpreter.from_bytes(flatbuffer, arena_size=1 << 20)
    interp.print_allocations()


def main():
    for name, build in (("smallcnn", smallcnn), ("seed-cnn", seed_cnn)):
        model = build()
        params = model.count_params()
        fb = to_int8(model)
        print(f"{name}: {params} parameters, .tflite {len(fb)} bytes; TFLM arena:", flush=True)
        print_arena(fb)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
