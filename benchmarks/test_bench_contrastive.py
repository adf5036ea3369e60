"""pytest-benchmark: fwd+bwd of the two contrastive losses, fused vs TF ops (graph, XLA).

    PYTHONPATH=. python -m pytest benchmarks/test_bench_contrastive.py --benchmark-group-by=param:size
"""

import numpy as np
import pytest
import tensorflow as tf

import fusedloss

from benchmarks.contrastive_compare import tf_contrastive, tf_embedding_contrastive, training_step

VARIANTS = {
    "fused": lambda fused, tf_ops: training_step(fused, False),
    "tf.function": lambda fused, tf_ops: training_step(tf_ops, False),
    "xla": lambda fused, tf_ops: training_step(tf_ops, True),
}


def run(benchmark, step, y_true, y_pred):
    y_true, y_pred = tf.constant(y_true), tf.constant(y_pred)
    step(y_true, y_pred)  # trace and compile outside the timing
    benchmark(lambda: step(y_true, y_pred)[0].numpy())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", (10_000, 100_000))
def test_embedding_contrastive(benchmark, variant, size):
    rng = np.random.default_rng(0)
    pairs = (rng.normal(size=(size, 2, 128)) / np.sqrt(128)).astype(np.float32)
    labels = (rng.random(size) < 0.5).astype(np.float32)
    run(benchmark, VARIANTS[variant](fusedloss.embedding_contrastive, tf_embedding_contrastive), labels, pairs)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", (1_000_000, 10_000_000))
def test_contrastive(benchmark, variant, size):
    rng = np.random.default_rng(0)
    distances = rng.uniform(0, 2, (size, 1)).astype(np.float32)
    labels = (rng.random((size, 1)) < 0.5).astype(np.float32)
    run(benchmark, VARIANTS[variant](fusedloss.contrastive, tf_contrastive), labels, distances)
