"""The TF bridge of the two contrastive losses: values and gradients against TF-op
formulations and the float64 NumPy references, the upstream != 1 path, XLA, bad input."""

from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf

import fusedloss
from fusedloss.kernels import reference


def tf_contrastive_terms(y_true, distance, margin):
    """TF Addons' formula, written with plain TF ops."""
    y_true = tf.cast(y_true, distance.dtype)
    return y_true * tf.square(distance) + (1.0 - y_true) * tf.square(tf.maximum(margin - distance, 0.0))


def tf_contrastive(y_true, distance, margin=1.0):
    return tf.reduce_mean(tf_contrastive_terms(y_true, distance, margin), axis=-1)


def tf_embedding_contrastive(y_true, pairs, margin=1.0):
    """A Euclidean-distance layer followed by the contrastive loss."""
    distance = tf.sqrt(tf.reduce_sum(tf.square(pairs[:, 0, :] - pairs[:, 1, :]), axis=-1))
    return tf_contrastive_terms(tf.reshape(y_true, [-1]), distance, margin)


def loss_and_grads(loss_fn, y_true, y_pred, upstream_scale=None):
    """The loss and d(sum(loss * upstream)) / d y_pred; upstream 1 when not given."""
    y_pred = tf.convert_to_tensor(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = loss_fn(y_true, y_pred)
        total = loss if upstream_scale is None else tf.reduce_sum(loss * upstream_scale)
    return loss.numpy(), tape.gradient(total, y_pred).numpy()


class Case(NamedTuple):
    shape: tuple
    dtype: tf.DType
    rtol: float
    atol: float


DISTANCE_CASES = (
    Case((9,), tf.float32, 1e-6, 1e-6),
    Case((9, 1), tf.float32, 1e-6, 1e-6),
    Case((41, 401), tf.float32, 1e-5, 1e-6),
    Case((3, 5, 7), tf.float32, 1e-6, 1e-6),
    Case((41, 401), tf.float64, 1e-12, 1e-14),
    Case((3, 5, 7), tf.float64, 1e-12, 1e-14),
)

PAIR_CASES = (
    Case((1, 2, 1), tf.float32, 1e-5, 1e-6),
    Case((9, 2, 7), tf.float32, 1e-5, 1e-6),
    Case((41, 2, 401), tf.float32, 1e-5, 1e-6),
    Case((9, 2, 7), tf.float64, 1e-12, 1e-14),
    Case((41, 2, 401), tf.float64, 1e-12, 1e-14),
)

# None: upstream exactly 1 (the saved gradient is returned as is); 2.0 and a vector
# of weights: the rescale path.
UPSTREAMS = (None, 2.0, "weights")


def distance_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(shape) < 0.5).astype(dtype.as_numpy_dtype)
    # Kept 0.01 away from the margin (1.5): nothing to do with the kernel, but the
    # TF reference's maximum() picks a different subgradient of its inner max there.
    distances = rng.uniform(0.0, 3.0, shape)
    distances = np.where(np.abs(distances - 1.5) < 0.01, 1.6, distances).astype(dtype.as_numpy_dtype)
    return labels, distances


def pair_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(shape[0]) < 0.5).astype(dtype.as_numpy_dtype)
    pairs = (rng.normal(size=shape) / np.sqrt(shape[2])).astype(dtype.as_numpy_dtype)
    return labels, pairs


def upstream_for(upstream, loss_shape, seed=1):
    if upstream == "weights":
        return tf.constant(np.random.default_rng(seed).uniform(0.1, 3.0, loss_shape))
    return upstream


@pytest.mark.parametrize("upstream", UPSTREAMS, ids=str)
@pytest.mark.parametrize("case", PAIR_CASES, ids=str)
def test_embedding_contrastive_matches_tf_ops(case, upstream):
    labels, pairs = pair_inputs(case.shape, case.dtype)
    scale = upstream_for(upstream, case.shape[:1])
    if isinstance(scale, tf.Tensor):
        scale = tf.cast(scale, case.dtype)
    loss, grad = loss_and_grads(lambda y, p: fusedloss.embedding_contrastive(y, p, 1.5), labels, pairs, scale)
    expected_loss, expected_grad = loss_and_grads(lambda y, p: tf_embedding_contrastive(y, p, 1.5), labels, pairs, scale)
    assert loss.dtype == case.dtype.as_numpy_dtype and loss.shape == case.shape[:1]
    np.testing.assert_allclose(loss, expected_loss, rtol=case.rtol, atol=case.atol)
    np.testing.assert_allclose(grad, expected_grad, rtol=case.rtol, atol=case.atol)


def test_both_match_the_float64_reference():
    labels, distances = distance_inputs((41, 401), tf.float64)
    loss, grad = loss_and_grads(lambda y, d: fusedloss.contrastive(y, d, 0.75), labels, distances)
    expected_loss, expected_grad = reference.contrastive(labels, distances, 0.75)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-13, atol=1e-16)
    labels, pairs = pair_inputs((41, 2, 401), tf.float64)
    loss, grad = loss_and_grads(lambda y, p: fusedloss.embedding_contrastive(y, p, 0.75), labels, pairs)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs, 0.75)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-13, atol=1e-16)


def test_embedding_contrastive_gradient_is_the_numerical_one():
    labels, pairs = pair_inputs((5, 2, 3), tf.float64)  # no pair near distance 0
    theoretical, numerical = tf.test.compute_gradient(
        lambda p: fusedloss.embedding_contrastive(labels, p, margin=1.5), [tf.constant(pairs)]
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


@pytest.mark.parametrize("dtype", (tf.float32, tf.float64))
def test_identical_embeddings_give_zero_gradient_not_nan(dtype):
    rng = np.random.default_rng(3)
    pairs = np.repeat(rng.normal(size=(4, 1, 5)), 2, axis=1).astype(dtype.as_numpy_dtype)
    labels = np.array([1.0, 0.0, 1.0, 0.0])
    loss, grad = loss_and_grads(lambda y, p: fusedloss.embedding_contrastive(y, p, 2.0), labels, pairs, 2.0)
    np.testing.assert_array_equal(loss, [0.0, 4.0, 0.0, 4.0])
    np.testing.assert_array_equal(grad, 0.0)
    # ... where a distance layer's autodiff gives NaN for the dissimilar pairs
    _, tf_grad = loss_and_grads(lambda y, p: tf_embedding_contrastive(y, p, 2.0), labels, pairs)
    assert np.isnan(tf_grad[[1, 3]]).all()


def test_tiny_float32_distances_keep_their_gradient():
    pairs = np.zeros((2, 2, 3), np.float32)
    pairs[:, 1] = [3e-30, 0.0, 4e-30]  # squared differences underflow float32
    labels = np.array([0.0, 1.0], np.float32)
    loss, grad = loss_and_grads(lambda y, p: fusedloss.embedding_contrastive(y, p), labels, pairs)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs)
    np.testing.assert_allclose(loss, expected_loss, atol=1e-38)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)
    np.testing.assert_allclose(grad[0, 1], [-1.2, 0.0, -1.6], rtol=1e-6)


def test_contrastive_negative_distances_follow_the_formula():
    loss, grad = loss_and_grads(
        lambda y, d: fusedloss.contrastive(y, d, margin=1.0), [[1.0, 0.0]], np.array([[-0.5, -0.5]], np.float32)
    )
    np.testing.assert_allclose(loss, [(0.25 + 2.25) / 2])
    np.testing.assert_allclose(grad, [[-0.5, -1.5]])


def test_nan_in_nan_out_like_tf():
    labels, distances = distance_inputs((3, 4), tf.float32)
    distances[1, 2] = np.nan
    loss, grad = loss_and_grads(lambda y, d: fusedloss.contrastive(y, d, 1.5), labels, distances)
    expected_loss, expected_grad = loss_and_grads(lambda y, d: tf_contrastive(y, d, 1.5), labels, distances)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(expected_loss))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(expected_grad))
    labels, pairs = pair_inputs((3, 2, 4), tf.float32)
    pairs[1, 0, 3] = np.nan
    loss, grad = loss_and_grads(lambda y, p: fusedloss.embedding_contrastive(y, p), labels, pairs)
    expected_loss, expected_grad = loss_and_grads(tf_embedding_contrastive, labels, pairs)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(expected_loss))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(expected_grad))


def test_label_shapes_and_dtypes_are_converted_like_keras():
    labels, distances = distance_inputs((6, 1), tf.float32)
    expected = fusedloss.contrastive(labels, distances).numpy()
    np.testing.assert_array_equal(fusedloss.contrastive(labels[:, 0].astype(np.int32), distances), expected)
    labels, pairs = pair_inputs((6, 2, 3), tf.float32)
    expected = fusedloss.embedding_contrastive(labels, pairs).numpy()
    np.testing.assert_array_equal(fusedloss.embedding_contrastive(labels[:, None], pairs), expected)
    np.testing.assert_array_equal(fusedloss.embedding_contrastive(labels.astype(bool), pairs), expected)


def test_half_precision_is_computed_in_float32():
    labels, pairs = pair_inputs((5, 2, 8), tf.float32)
    loss, grad = loss_and_grads(fusedloss.embedding_contrastive, labels, pairs.astype(np.float16))
    assert loss.dtype == np.float16 and grad.dtype == np.float16
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs.astype(np.float16))
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-3, atol=1e-3)


def test_inputs_are_never_written_in_graph_mode():
    # In a tf.function numpy_function hands TF's own memory to the kernel.
    labels, pairs = pair_inputs((7, 2, 9), tf.float32)
    pairs_tensor = tf.constant(pairs)

    @tf.function
    def step(y, p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            loss = tf.reduce_sum(fusedloss.embedding_contrastive(y, p) * 3.0)
        return loss, tape.gradient(loss, p)

    loss, grad = step(tf.constant(labels), pairs_tensor)
    np.testing.assert_array_equal(pairs_tensor.numpy(), pairs)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs)
    np.testing.assert_allclose(loss, 3.0 * expected_loss.sum(), rtol=1e-6)
    np.testing.assert_allclose(grad, 3.0 * expected_grad, rtol=1e-5, atol=1e-6)


def test_unknown_batch_dimension_in_a_traced_function():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, 2, 5], tf.float32)])
    def per_pair(y, p):
        loss = fusedloss.embedding_contrastive(y, p)
        assert loss.shape.as_list() == [None]
        return loss

    labels, pairs = pair_inputs((3, 2, 5), tf.float32)
    np.testing.assert_allclose(per_pair(labels, pairs), reference.embedding_contrastive(labels, pairs)[0], rtol=1e-6)


# ---------------------------------------------------------------------------------
# XLA: the TF-op composites


def xla(loss_fn):
    @tf.function(jit_compile=True)
    def run(y_true, y_pred, upstream):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = loss_fn(y_true, y_pred)
            total = tf.reduce_sum(loss * upstream)
        return loss, tape.gradient(total, y_pred)

    return run


@pytest.mark.parametrize("dtype", (tf.float32, tf.float64))
def test_embedding_contrastive_under_xla_matches_the_fused_kernel(dtype):
    labels, pairs = pair_inputs((6, 2, 7), dtype)
    pairs[1, 1] = pairs[1, 0]  # identical, dissimilar or similar
    pairs[2, 1] = pairs[2, 0]
    pairs[3] = 0.0
    pairs[3, 1, :2] = [3e-30, 4e-30]  # squares underflow float32
    labels[1:4] = [0.0, 1.0, 0.0]
    upstream = tf.constant(2.0, dtype)
    run = xla(lambda y, p: fusedloss.embedding_contrastive(y, p, 1.5))
    loss, grad = run(labels, tf.constant(pairs), upstream)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs, 1.5)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, 2.0 * expected_grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(grad[1:3], 0.0)


def test_half_precision_under_xla():
    labels, pairs = pair_inputs((4, 2, 3), tf.float32)
    pairs[0, 1] = pairs[0, 0]
    loss, grad = xla(fusedloss.embedding_contrastive)(labels, tf.constant(pairs, tf.float16), tf.constant(1.0, tf.float16))
    assert loss.dtype == tf.float16 and np.isfinite(grad.numpy()).all()
    np.testing.assert_allclose(loss, reference.embedding_contrastive(labels, pairs.astype(np.float16))[0], rtol=2e-3)


# ---------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("margin", (-1.0, float("nan"), float("inf"), "wide", None))
def test_bad_margin_is_a_value_error(margin):
    with pytest.raises(ValueError, match="margin must (be|satisfy)"):
        fusedloss.contrastive([[1.0]], [[0.5]], margin=margin)
    with pytest.raises(ValueError, match="margin must (be|satisfy)"):
        fusedloss.embedding_contrastive([1.0], [[[0.5], [0.0]]], margin=margin)


def test_margin_zero_is_allowed():
    np.testing.assert_allclose(fusedloss.contrastive([[0.0, 1.0]], [[0.3, 0.5]], margin=0.0), [0.125])


BAD_PAIR_SHAPES = (
    ((4,), (4, 6), r"y_pred must have shape \(batch, 2, dim\).*got \(4, 6\)"),
    ((4,), (4, 3, 6), r"y_pred must have shape \(batch, 2, dim\).*got \(4, 3, 6\)"),
    ((4,), (4, 2, 6, 1), r"y_pred must have shape \(batch, 2, dim\).*got \(4, 2, 6, 1\)"),
    ((4, 2), (4, 2, 6), r"y_true must have shape \(batch,\) or \(batch, 1\).*y_true \(4, 2\) and y_pred \(4, 2, 6\)"),
    ((5,), (4, 2, 6), r"y_true must have shape \(batch,\) or \(batch, 1\).*y_true \(5,\) and y_pred \(4, 2, 6\)"),
    ((), (4, 2, 6), r"y_true must have shape \(batch,\) or \(batch, 1\).*y_true \(\)"),
)


@pytest.mark.parametrize("true_shape, pairs_shape, message", BAD_PAIR_SHAPES)
def test_bad_pair_shapes_name_both(true_shape, pairs_shape, message):
    with pytest.raises(ValueError, match=message):
        fusedloss.embedding_contrastive(np.zeros(true_shape, np.float32), np.zeros(pairs_shape, np.float32))


def test_bad_distance_shapes_name_both():
    with pytest.raises(ValueError, match=r"same shape, got y_true \(3, 2\) and y_pred \(3, 4\)"):
        fusedloss.contrastive(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="rank >= 1"):
        fusedloss.contrastive(1.0, 0.5)


# ---------------------------------------------------------------------------------
# The CUDA kernels through the bridge (simulator)


def test_bridge_runs_the_cuda_kernels_when_asked(monkeypatch):
    cuda_kernels = pytest.importorskip("fusedloss.kernels.cuda")
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "cuda")
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(cuda_kernels, "MAX_BLOCKS", 2)
    calls = []
    real = cuda_kernels.embedding_contrastive
    monkeypatch.setattr(cuda_kernels, "embedding_contrastive", lambda *a, **k: calls.append(1) or real(*a, **k))
    labels, pairs = pair_inputs((3, 2, 5), tf.float32)
    loss, grad = loss_and_grads(fusedloss.embedding_contrastive, labels, pairs, 2.0)
    assert calls
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, 2.0 * expected_grad, rtol=1e-6, atol=1e-7)
