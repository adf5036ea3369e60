"""The TF bridge (ops.py): values and gradients against Keras's own Huber."""

import gc
from typing import NamedTuple

import keras
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
TOLERANCES = {tf.float32: (1e-5, 1e-6), tf.float64: (1e-12, 1e-14)}
CASES = [Case(shape, dtype, *TOLERANCES[dtype]) for shape in SHAPES for dtype in (tf.float32, tf.float64)]


def random_pair(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    y_true = rng.normal(size=shape)
    y_pred = y_true + 2.0 * rng.normal(size=shape)
    # The kinks: error exactly 0, exactly +-delta (delta = 1.5 below), and |error| >> delta.
    flat = y_pred.reshape(-1)
    flat[:5] = y_true.reshape(-1)[:5] + np.array([0.0, 1.5, -1.5, 1e4, -1e4])
    return tf.constant(y_true, dtype), tf.constant(y_pred, dtype)


def value_and_gradient(loss_fn, y_true, y_pred, scale=1.0):
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = scale * loss_fn(y_true, y_pred)
    return loss, tape.gradient(loss, y_pred)


def test_graph_mode_keeps_static_shapes():
    @tf.function(input_signature=[tf.TensorSpec([None, 5]), tf.TensorSpec([None, 5])])
    def loss_and_grad(y_true, y_pred):
        loss, grad = value_and_gradient(fusedloss.huber, y_true, y_pred)
        assert loss.shape.as_list() == [None] and grad.shape.as_list() == [None, 5]
        return loss, grad

    y_true, y_pred = random_pair((3, 5), tf.float32)
    loss, grad = loss_and_grad(y_true, y_pred)
    np.testing.assert_allclose(loss, keras.losses.huber(y_true, y_pred), rtol=1e-6)


def test_an_earlier_gradient_is_never_overwritten():
    @tf.function
    def gradient(y_true, y_pred):
        return value_and_gradient(fusedloss.huber, y_true, y_pred)[1]

    y_true, first_pred = random_pair((50, 64), tf.float32, seed=1)
    first = gradient(y_true, first_pred)
    first_copy = first.numpy().copy()
    for seed in range(2, 8):
        _, other_pred = random_pair((50, 64), tf.float32, seed=seed)
        gradient(y_true, other_pred)
        gc.collect()
    np.testing.assert_array_equal(first.numpy(), first_copy)


def test_inputs_are_never_written():
    y_true, y_pred = random_pair((30, 20), tf.float32)
    before = y_true.numpy().copy(), y_pred.numpy().copy()
    tf.function(lambda t, p: value_and_gradient(fusedloss.huber, t, p))(y_true, y_pred)
    np.testing.assert_array_equal(y_true.numpy(), before[0])
    np.testing.assert_array_equal(y_pred.numpy(), before[1])


# ---------------------------------------------------------------------------------
# Bad and unusual input


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"y_true \(4, 3\) and y_pred \(4, 5\)"):
        fusedloss.huber(tf.zeros((4, 3)), tf.zeros((4, 5)))


def test_shape_mismatch_found_at_run_time_names_both_shapes():
    @tf.function(input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None, None])])
    def loss(y_true, y_pred):
        return fusedloss.huber(y_true, y_pred)

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"y_true \(4, 3\) and y_pred \(4, 5\)"):
        loss(tf.zeros((4, 3)), tf.zeros((4, 5)))


def test_scalar_input_is_refused():
    with pytest.raises(ValueError, match="rank >= 1"):
        fusedloss.huber(1.0, 2.0)


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan"), float("inf"), "one", None])
def test_bad_delta_is_a_value_error(delta):
    with pytest.raises(ValueError, match="delta must (be|satisfy)"):
        fusedloss.huber(tf.zeros((2, 2)), tf.zeros((2, 2)), delta=delta)


@pytest.mark.parametrize(
    "labels",
    [np.array([[0, 1, 3]], np.int32), np.array([[True, False, True]]), np.array([[0.1, 1.0, 3.0]], np.float64)],
    ids=["int32", "bool", "float64"],
)
def test_integer_and_boolean_labels_are_cast_like_keras(labels):
    y_pred = tf.constant([[0.5, 2.0, -1.0]])
    np.testing.assert_allclose(fusedloss.huber(labels, y_pred), keras.losses.huber(labels, y_pred), rtol=1e-6)


def test_rank_matching_follows_keras():
    y_true, y_pred = tf.constant([1.0, 2.0, 3.0]), tf.constant([[1.5], [0.0], [3.0]])
    np.testing.assert_allclose(fusedloss.huber(y_true, y_pred), keras.losses.huber(y_true, y_pred), rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_predictions_match_keras(bad):
    # Huber's particular case: Keras's gradient is NaN at an infinite error, compared whole
    # (the conformance suite compares gradients where the loss is finite)
    y_true = tf.zeros((3, 4))
    y_pred = tf.tensor_scatter_nd_update(tf.fill((3, 4), 0.5), [[1, 2]], [bad])
    fused = value_and_gradient(fusedloss.huber, y_true, y_pred)
    native = value_and_gradient(keras.losses.huber, y_true, y_pred)
    np.testing.assert_allclose(fused[0], native[0], rtol=1e-6)
    np.testing.assert_allclose(fused[1], native[1], rtol=1e-6)


def test_non_finite_labels_match_keras():
    y_true = tf.constant([[np.nan, 0.0], [np.inf, 1.0]])
    y_pred = tf.constant([[0.0, 0.3], [2.0, 1.0]])
    fused = value_and_gradient(fusedloss.huber, y_true, y_pred)
    native = value_and_gradient(keras.losses.huber, y_true, y_pred)
    np.testing.assert_allclose(fused[0], native[0], rtol=1e-6)
    np.testing.assert_allclose(fused[1], native[1], rtol=1e-6)


def test_batch_of_one():
    y_true, y_pred = random_pair((1, 9), tf.float32)
    np.testing.assert_allclose(fusedloss.huber(y_true, y_pred), keras.losses.huber(y_true, y_pred), rtol=1e-6)


# ---------------------------------------------------------------------------------
# No tape, no gradient


def fused_kernel_outputs(concrete_function):
    """Output counts of the fused kernel calls in a traced graph (2: loss and gradient);
    the backward's host-side rescale is a numpy_function too, but no kernel call."""
    return [
        len(op.outputs)
        for op in concrete_function.graph.get_operations()
        if op.type == "PyFuncStateless" and "fused_rescale" not in op.name
    ]


def test_without_a_tape_only_the_loss_is_computed():
    y_true, y_pred = random_pair((8, 5), tf.float32)
    loss_only = tf.function(fusedloss.huber).get_concrete_function(y_true, y_pred)
    assert fused_kernel_outputs(loss_only) == [1]
    with_tape = tf.function(lambda t, p: value_and_gradient(fusedloss.huber, t, p)).get_concrete_function(y_true, y_pred)
    assert fused_kernel_outputs(with_tape) == [2]
    np.testing.assert_allclose(loss_only(y_true, y_pred), keras.losses.huber(y_true, y_pred), rtol=1e-6)
    np.testing.assert_allclose(fusedloss.huber(y_true, y_pred), keras.losses.huber(y_true, y_pred), rtol=1e-6)


def test_a_function_traced_without_a_tape_still_differentiates_correctly():
    y_true, y_pred = random_pair((8, 5), tf.float64)
    traced_without_tape = tf.function(lambda t, p: 3.0 * fusedloss.huber(t, p, 0.5))
    traced_without_tape(y_true, y_pred)
    fused = value_and_gradient(traced_without_tape, y_true, y_pred)
    native = value_and_gradient(lambda t, p: 3.0 * keras.losses.huber(t, p, 0.5), y_true, y_pred)
    np.testing.assert_allclose(fused[0], native[0], rtol=1e-12)
    np.testing.assert_allclose(fused[1], native[1], rtol=1e-12)


def test_xla_fallback_warns_once(recwarn):
    from fusedloss.ops import _warn_once_about_xla

    _warn_once_about_xla.cache_clear()
    y_true, y_pred = random_pair((4, 6), tf.float32)
    xla = tf.function(lambda t, p: fusedloss.huber(t, p), jit_compile=True)
    xla(y_true, y_pred)
    tf.function(lambda t, p: 2.0 * fusedloss.huber(t, p), jit_compile=True)(y_true, y_pred)
    messages = [str(w.message) for w in recwarn if "XLA-compiled" in str(w.message)]
    assert len(messages) == 1 and "jit_compile=False" in messages[0]
