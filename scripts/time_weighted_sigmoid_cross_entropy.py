"""Forward + backward of the weighted sigmoid cross-entropy at 1e7 elements: the fused
bridge against TensorFlow's own op, plain (``tf.function``) and XLA-compiled.

Every variant computes ``mean(loss)`` and its gradient w.r.t. the logits from a
``GradientTape``, inside one ``tf.function``. Variants run interleaved (A B C A B C
...) so that load from other processes hits all of them alike; the median of the
repeats is reported, with the memory floor (inputs read once, gradient written once,
at the bandwidth of a plain copy measured in the same run).

    PYTHONPATH=. python scripts/time_weighted_sigmoid_cross_entropy.py [--rows 10000 --columns 1000 --repeats 15]
"""

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

import fusedloss
from fusedloss.kernels import cpu


def fwd_bwd(loss_fn, reduce=True):
    """Loss and gradient w.r.t. the logits. ``reduce``: of the batch mean (the upstream
    gradient of the per-sample losses is then 1/N, as in Keras training); else of the
    per-sample losses themselves (upstream exactly 1: the bridge skips its rescale)."""

    def step(y_true, logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = loss_fn(y_true, logits)
            if reduce:
                loss = tf.reduce_mean(loss)
        return loss, tape.gradient(loss, logits)

    return step


def tf_weighted_cross_entropy(pos_weight):
    def loss(y_true, logits):
        return tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(y_true, logits, pos_weight), axis=-1)

    return loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--columns", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--pos-weight", type=float, default=2.0)
    args = parser.parse_args()
    shape = (args.rows, args.columns)
    rng = np.random.default_rng(0)
    y_true_np = (rng.uniform(size=shape) < 0.3).astype(np.float32)
    logits_np = (3.0 * rng.normal(size=shape)).astype(np.float32)
    y_true, logits = tf.constant(y_true_np), tf.constant(logits_np)
    q = args.pos_weight

    loss_out, grad_out = np.empty(shape[0], np.float32), np.empty(shape, np.float32)
    copy_source, copy_target = np.ones(shape, np.float32), np.empty(shape, np.float32)

    def kernel_only():
        cpu.weighted_sigmoid_cross_entropy(y_true_np, logits_np, q, loss_out=loss_out, grad_out=grad_out)

    fused = lambda t, p: fusedloss.weighted_sigmoid_cross_entropy(t, p, q)  # noqa: E731
    variants = {
        "fused bridge (tf.function)": tf.function(fwd_bwd(fused)),
        "TF op, tf.function": tf.function(fwd_bwd(tf_weighted_cross_entropy(q))),
        "TF op, XLA": tf.function(fwd_bwd(tf_weighted_cross_entropy(q)), jit_compile=True),
        "fused bridge, upstream 1": tf.function(fwd_bwd(fused, reduce=False)),
        "TF op, XLA, upstream 1": tf.function(fwd_bwd(tf_weighted_cross_entropy(q), reduce=False), jit_compile=True),
    }
    calls = {name: (lambda f=f: np.mean(f(y_true, logits)[0].numpy())) for name, f in variants.items()}
    calls["CPU kernel alone (numpy in/out)"] = kernel_only
    calls["memory copy of one array"] = lambda: np.copyto(copy_target, copy_source)

    results = {name: call() for name, call in calls.items()}  # warm up: compile, trace
    fused_loss, xla_loss = results["fused bridge (tf.function)"], results["TF op, XLA"]
    print(f"mean loss: fused {fused_loss:.7f}  XLA {xla_loss:.7f}")
    times = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(values) for name, values in times.items()}
    copy_bytes = 2 * copy_source.nbytes
    bandwidth = copy_bytes / medians["memory copy of one array"]
    floor = 3 * copy_source.nbytes / bandwidth  # labels and logits read, gradient written
    xla = medians["TF op, XLA"]
    print(f"shape {shape} ({np.prod(shape):.0e} elements), {args.repeats} repeats, median ms (min ms)")
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; memory floor of fwd+bwd {floor * 1e3:.2f} ms")
    for name, value in medians.items():
        if name == "memory copy of one array":
            continue
        print(
            f"  {name:34s} {value * 1e3:8.2f} ({min(times[name]) * 1e3:7.2f})"
            f"   XLA / this = {xla / value:5.2f}   this / floor = {value / floor:5.2f}"
        )


if __name__ == "__main__":
    main()
