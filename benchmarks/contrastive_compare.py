"""fwd+bwd of the two contrastive losses: fused bridge vs native TF (tf.function) vs XLA.

One run, everything interleaved (A B C A B C ...) so that the machine's noise hits every
variant alike; medians over repeats. The floor is the bytes that must move (inputs read
once, loss and gradient written once) over the bandwidth of a NumPy copy measured in
the same run.

    cd <repo> && PYTHONPATH=. python benchmarks/contrastive_compare.py [--repeats 15]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fusedloss  # noqa: E402
from fusedloss.kernels import cpu  # noqa: E402

MARGIN = 1.0


def tf_contrastive(y_true, distance):
    hinge = tf.maximum(MARGIN - distance, 0.0)
    return tf.reduce_mean(y_true * tf.square(distance) + (1.0 - y_true) * tf.square(hinge), axis=-1)


def tf_embedding_contrastive(y_true, pairs):
    # A distance layer, then the loss: what a Siamese model without fusedloss does.
    distance = tf.sqrt(tf.reduce_sum(tf.square(pairs[:, 0] - pairs[:, 1]), axis=-1))
    hinge = tf.maximum(MARGIN - distance, 0.0)
    return y_true * tf.square(distance) + (1.0 - y_true) * tf.square(hinge)


def training_step(loss_fn, jit_compile):
    @tf.function(jit_compile=jit_compile)
    def step(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = tf.reduce_mean(loss_fn(y_true, y_pred))
        return loss, tape.gradient(loss, y_pred)

    return step


def median_seconds(functions, repeats):
    """``{name: median seconds}``, calling the functions in turn, ``repeats`` rounds."""
    times = {name: [] for name in functions}
    for function in functions.values():  # warm-up: compile and trace
        function()
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def copy_bandwidth(repeats):
    source = np.ones(50_000_000, np.float32)  # 200 MB
    target = np.empty_like(source)
    target[:] = 0  # touch every page first
    seconds = median_seconds({"copy": lambda: np.copyto(target, source)}, repeats)["copy"]
    return 2 * source.nbytes / seconds


def materialise(result):
    # tf.function returns once the values exist; .numpy() of a scalar is cheap and
    # makes sure nothing is still pending.
    loss, grad = result
    loss.numpy()
    return grad


def compare(label, fused_fn, tf_fn, kernel_fn, y_true, y_pred, bytes_moved, bandwidth, repeats):
    y_true, y_pred = tf.constant(y_true), tf.constant(y_pred)
    steps = {
        "fused": training_step(fused_fn, False),
        "tf.function": training_step(tf_fn, False),
        "XLA": training_step(tf_fn, True),
    }
    functions = {name: (lambda step=step: materialise(step(y_true, y_pred))) for name, step in steps.items()}
    functions["kernel only"] = kernel_fn
    seconds = median_seconds(functions, repeats)
    floor = bytes_moved / bandwidth
    print(f"\n{label}: {bytes_moved / 1e6:.0f} MB must move, floor {floor * 1e3:.2f} ms")
    for name, value in seconds.items():
        print(
            f"  {name:12s} {value * 1e3:8.2f} ms  {bytes_moved / value / 1e9:6.1f} GB/s  "
            f"{value / floor:5.1f}x floor  XLA/this {seconds['XLA'] / value:5.2f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    bandwidth = copy_bandwidth(args.repeats)
    print(f"backend {fusedloss.backend()}, {os.cpu_count()} CPUs, NumPy copy bandwidth {bandwidth / 1e9:.1f} GB/s")

    for n_pairs in (10_000, 100_000):
        dim = 128
        pairs = (rng.normal(size=(n_pairs, 2, dim)) / np.sqrt(dim)).astype(np.float32)
        labels = (rng.random(n_pairs) < 0.5).astype(np.float32)
        loss_out, grad_out = np.empty(n_pairs, np.float32), np.empty_like(pairs)
        compare(
            f"embedding_contrastive {n_pairs} pairs x {dim}",
            fusedloss.embedding_contrastive,
            tf_embedding_contrastive,
            lambda: cpu.embedding_contrastive(labels, pairs, MARGIN, loss_out=loss_out, grad_out=grad_out),
            labels,
            pairs,
            2 * pairs.nbytes + 2 * labels.nbytes,
            bandwidth,
            args.repeats,
        )

    for n_elements in (1_000_000, 10_000_000):
        for shape in ((n_elements, 1), (n_elements // 1000, 1000)):
            distances = rng.uniform(0, 2, shape).astype(np.float32)
            labels = (rng.random(shape) < 0.5).astype(np.float32)
            loss_out, grad_out = np.empty(shape[0], np.float32), np.empty_like(distances)
            compare(
                f"contrastive {shape}",
                fusedloss.contrastive,
                tf_contrastive,
                lambda: cpu.contrastive(labels, distances, MARGIN, loss_out=loss_out, grad_out=grad_out),
                labels,
                distances,
                3 * distances.nbytes + loss_out.nbytes,
                bandwidth,
                args.repeats,
            )


if __name__ == "__main__":
    main()
