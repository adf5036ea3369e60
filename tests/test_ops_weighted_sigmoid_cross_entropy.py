"""The TF bridge for the weighted sigmoid cross-entropy: values and gradients against
``tf.nn.weighted_cross_entropy_with_logits`` + mean, the float64 reference and numeric
gradients; non-finite and extreme logits; the XLA composite; bad parameters."""

import gc
from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf

import fusedloss


class Case(NamedTuple):
    shape: tuple
    dtype: tf.DType
    rtol: float
    atol: float


SHAPES = [(41,), (41, 401), (3, 7, 33)]  # rank 1, 2 and 3, odd sizes
# float32 atol: TensorFlow's own formula cancels (|x| + tiny - |x|) to about an ulp of |x|.
TOLERANCES = {tf.float32: (1e-5, 2e-6), tf.float64: (1e-12, 1e-14)}
CASES = [Case(shape, dtype, *TOLERANCES[dtype]) for shape in SHAPES for dtype in (tf.float32, tf.float64)]


def tf_weighted_cross_entropy(y_true, logits, pos_weight=1.0, label_smoothing=0.0):
    """The same loss from TensorFlow's op: smoothed labels, then the mean of the last axis."""
    logits = tf.convert_to_tensor(logits)
    z = tf.cast(y_true, logits.dtype) * (1.0 - label_smoothing) + 0.5 * label_smoothing
    values = tf.nn.weighted_cross_entropy_with_logits(z, logits, tf.constant(pos_weight, logits.dtype))
    return tf.reduce_mean(values, axis=-1)


def random_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.uniform(size=shape) < 0.5, np.round(rng.uniform(size=shape)), rng.uniform(size=shape))
    logits = 4.0 * rng.normal(size=shape)
    # Large logits both ways, where exp(-|x|) underflows.
    logits.reshape(-1)[1:5] = [1e4, -1e4, 120.0, -120.0]
    return tf.constant(labels, dtype), tf.constant(logits, dtype)


def value_and_gradient(loss_fn, y_true, y_pred, scale=1.0):
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = scale * loss_fn(y_true, y_pred)
    return loss, tape.gradient(loss, y_pred)


def per_class(shape):
    return tuple(np.linspace(0.25, 3.0, shape[-1]))


def test_gradient_at_logit_zero_is_the_analytic_derivative():
    # The loss is smooth at x = 0, where d/dx = (1 - z) - l sigmoid(0) = (1 - z) - l / 2.
    # TensorFlow's autodiff of its max/abs formulation returns something else there
    # (it takes d|x|/dx = 0 and one side of max(-x, 0)), so the check is against the
    # analytic value, plus finite differences around 0.
    z = np.array([[0.0, 0.3, 1.0]])
    q = 2.0
    _, grad = value_and_gradient(
        lambda t, p: fusedloss.weighted_sigmoid_cross_entropy(t, p, q), tf.constant(z), tf.zeros((1, 3), tf.float64)
    )
    weight = 1.0 + (q - 1.0) * z
    np.testing.assert_allclose(grad * 3, (1.0 - z) - weight / 2, rtol=1e-15, atol=1e-15)
    theoretical, numerical = tf.test.compute_gradient(
        lambda p: fusedloss.weighted_sigmoid_cross_entropy(tf.constant(z), p, q), [tf.zeros((1, 3), tf.float64)], delta=1e-5
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-10)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_huge_logits_match_tensorflow(dtype):
    y_pred = tf.constant([[1e4, -1e4, 1e4, -1e4, 50.0, -50.0]], dtype)
    y_true = tf.constant([[0.0, 0.0, 1.0, 1.0, 0.7, 0.2]], dtype)
    fused = value_and_gradient(lambda t, p: fusedloss.weighted_sigmoid_cross_entropy(t, p, 1.5), y_true, y_pred)
    native = value_and_gradient(lambda t, p: tf_weighted_cross_entropy(t, p, 1.5), y_true, y_pred)
    for got, want in zip(fused, native):
        assert np.isfinite(got.numpy()).all()
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_non_finite_logits_match_tensorflow(bad, dtype):
    y_true = tf.constant([[0.0, 1.0, 0.5, 0.2], [1.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3]], dtype)
    y_pred = tf.tensor_scatter_nd_update(tf.fill((3, 4), tf.constant(0.5, dtype)), [[0, 1], [1, 1], [2, 2]], tf.constant([bad] * 3, dtype))
    fused = value_and_gradient(lambda t, p: fusedloss.weighted_sigmoid_cross_entropy(t, p, 2.0), y_true, y_pred)
    native = value_and_gradient(lambda t, p: tf_weighted_cross_entropy(t, p, 2.0), y_true, y_pred)
    np.testing.assert_allclose(fused[0], native[0], rtol=1e-6)  # NaN and inf where TF has them
    np.testing.assert_allclose(fused[1], native[1], rtol=1e-6)


def test_non_finite_labels_match_tensorflow():
    y_true = tf.constant([[np.nan, 0.0], [0.5, 1.0]])
    y_pred = tf.constant([[0.0, 0.3], [2.0, -1.0]])
    fused = value_and_gradient(lambda t, p: fusedloss.weighted_sigmoid_cross_entropy(t, p, 2.0), y_true, y_pred)
    native = value_and_gradient(lambda t, p: tf_weighted_cross_entropy(t, p, 2.0), y_true, y_pred)
    np.testing.assert_allclose(fused[0], native[0], rtol=1e-6)
    np.testing.assert_allclose(fused[1], native[1], rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_composite_treats_non_finite_logits_as_tensorflow_does(bad):
    y_true = tf.constant([[0.0, 1.0, 0.5]], tf.float64)
    y_pred = tf.constant([[bad, bad, bad]], tf.float64)
    # Under XLA the loss runs its TensorFlow path.
    composite = tf.function(lambda t, p: fusedloss.weighted_sigmoid_cross_entropy(t, p, 2.0), jit_compile=True)(y_true, y_pred)
    np.testing.assert_array_equal(composite, tf_weighted_cross_entropy(y_true, y_pred, 2.0))


def test_graph_mode_keeps_static_shapes():
    @tf.function(input_signature=[tf.TensorSpec([None, 5]), tf.TensorSpec([None, 5])])
    def loss_and_grad(y_true, y_pred):
        loss, grad = value_and_gradient(lambda t, p: fusedloss.weighted_sigmoid_cross_entropy(t, p, [1.0] * 5), y_true, y_pred)
        assert loss.shape.as_list() == [None] and grad.shape.as_list() == [None, 5]
        return loss, grad

    y_true, y_pred = random_inputs((3, 5), tf.float32)
    loss, _ = loss_and_grad(y_true, y_pred)
    np.testing.assert_allclose(loss, tf_weighted_cross_entropy(y_true, y_pred), rtol=1e-6, atol=2e-6)


def test_without_a_tape_only_the_loss_is_computed():
    y_true, y_pred = random_inputs((8, 5), tf.float32)
    graph = tf.function(lambda t, p: fusedloss.weighted_sigmoid_cross_entropy(t, p, 2.0)).get_concrete_function(y_true, y_pred).graph
    assert [len(op.outputs) for op in graph.get_operations() if op.type == "PyFuncStateless"] == [1]


def test_an_earlier_gradient_is_never_overwritten():
    # The mean makes the upstream 1/N: the backward writes a pooled buffer, which must
    # not be handed out again while the first gradient is alive.
    @tf.function
    def gradient(y_true, y_pred):
        return value_and_gradient(lambda t, p: tf.reduce_mean(fusedloss.weighted_sigmoid_cross_entropy(t, p, 2.0)), y_true, y_pred)[1]

    y_true, first_pred = random_inputs((50, 64), tf.float32, seed=1)
    first = gradient(y_true, first_pred)
    first_copy = first.numpy().copy()
    for seed in range(2, 8):
        gradient(y_true, random_inputs((50, 64), tf.float32, seed=seed)[1])
        gc.collect()
    np.testing.assert_array_equal(first.numpy(), first_copy)


@pytest.mark.parametrize(
    "labels",
    [np.array([[0, 1, 1]], np.int32), np.array([[True, False, True]]), np.array([[0.0, 0.7, 1.0]], np.float64)],
    ids=["int32", "bool", "float64"],
)
def test_integer_and_boolean_labels_are_cast(labels):
    y_pred = tf.constant([[0.5, 2.0, -1.0]])
    np.testing.assert_allclose(
        fusedloss.weighted_sigmoid_cross_entropy(labels, y_pred, 2.0), tf_weighted_cross_entropy(labels, y_pred, 2.0), rtol=1e-6
    )


def test_rank_matching_follows_keras():
    y_true, y_pred = tf.constant([1.0, 0.0, 1.0]), tf.constant([[1.5], [0.0], [-3.0]])
    np.testing.assert_allclose(
        fusedloss.weighted_sigmoid_cross_entropy(y_true, y_pred), tf_weighted_cross_entropy(y_true[:, None], y_pred), rtol=1e-6
    )


# ---------------------------------------------------------------------------------
# Bad parameters


@pytest.mark.parametrize(
    "pos_weight, match",
    [
        (-1.0, r"pos_weight must satisfy pos_weight >= 0, got pos_weight=-1.0"),
        (float("nan"), r"pos_weight must be finite, got nan"),
        (float("inf"), r"pos_weight must be finite, got inf"),
        ("heavy", r"pos_weight must be a real number, got 'heavy'"),
        (None, r"pos_weight must be a real number, got None"),
        ([1.0, -0.5, 2.0], r"pos_weight\[1\] must satisfy pos_weight >= 0, got pos_weight\[1\]=-0.5"),
        ([1.0, float("inf"), 2.0], r"pos_weight\[1\] must be finite, got inf"),
        ([[1.0, 2.0, 3.0]], r"a non-empty 1-D sequence of numbers, got shape \(1, 3\)"),
        ([], r"a non-empty 1-D sequence of numbers, got shape \(0,\)"),
        ([1.0, 2.0], r"y_pred has 3 classes \(its last axis\), got 2 values"),
    ],
)
def test_bad_pos_weight_is_a_value_error(pos_weight, match):
    with pytest.raises(ValueError, match=match):
        fusedloss.weighted_sigmoid_cross_entropy(tf.zeros((2, 3)), tf.zeros((2, 3)), pos_weight=pos_weight)


def test_pos_weight_length_found_at_run_time_names_both_lengths():
    @tf.function(input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None, None])])
    def loss(y_true, y_pred):
        return fusedloss.weighted_sigmoid_cross_entropy(y_true, y_pred, [1.0, 2.0, 3.0])

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"y_pred has 5 classes \(its last axis\), got pos_weight of shape \(3,\)"):
        loss(tf.zeros((4, 5)), tf.zeros((4, 5)))


@pytest.mark.parametrize(
    "label_smoothing, match",
    [
        (-0.1, r"label_smoothing must satisfy 0 <= label_smoothing <= 1, got label_smoothing=-0.1"),
        (1.5, r"label_smoothing must satisfy 0 <= label_smoothing <= 1, got label_smoothing=1.5"),
        (float("nan"), r"label_smoothing must be finite, got nan"),
        (float("inf"), r"label_smoothing must be finite, got inf"),
        ("some", r"label_smoothing must be a real number, got 'some'"),
    ],
)
def test_bad_label_smoothing_is_a_value_error(label_smoothing, match):
    with pytest.raises(ValueError, match=match):
        fusedloss.weighted_sigmoid_cross_entropy(tf.zeros((2, 3)), tf.zeros((2, 3)), label_smoothing=label_smoothing)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"y_true \(4, 3\) and y_pred \(4, 5\)"):
        fusedloss.weighted_sigmoid_cross_entropy(tf.zeros((4, 3)), tf.zeros((4, 5)))
