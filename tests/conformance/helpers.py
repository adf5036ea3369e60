"""What the generic conformance tests share: building a row's losses, calling them with
a gradient tape, and comparing with a tolerance."""

import numpy as np
import tensorflow as tf

from .table import kwargs_for

REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


def fused_loss(row, variant, shape, dtype="float32", reduction="sum_over_batch_size"):
    return row.loss(reduction=reduction, dtype=dtype, **kwargs_for(variant, shape))


def reference_loss(row, variant, shape, reduction="sum_over_batch_size", dtype="float64"):
    return row.reference(reduction=reduction, dtype=dtype, **kwargs_for(variant, shape))


def value_and_gradient(loss, y_true, y_pred, sample_weight=None, scale=None, summed=False):
    """``loss(y_true, y_pred, sample_weight)`` (times ``scale``) and its gradient in
    ``y_pred`` (of the sum of the values, for an unreduced loss), as NumPy arrays."""
    y_true, y_pred = tf.constant(y_true), tf.constant(y_pred)
    if sample_weight is not None:
        sample_weight = tf.constant(sample_weight)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        value = loss(y_true, y_pred, sample_weight=sample_weight)
        if scale is not None:
            value = value * scale
        objective = tf.reduce_sum(value) if summed or value.shape.rank else value
    return value.numpy(), tape.gradient(objective, y_pred).numpy()


def assert_close(what, actual, expected, tolerance, equal_nan=False):
    """``|actual - expected| <= rtol |expected| + atol max|expected|`` everywhere; with
    ``equal_nan`` NaN must meet NaN and infinities equal infinities of the same sign."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    if expected.size == 0:
        return
    if equal_nan:
        special = ~np.isfinite(expected) | ~np.isfinite(actual)
        np.testing.assert_array_equal(actual[special], expected[special], err_msg=f"{what}: NaN/Inf pattern")
        actual, expected = actual[~special], expected[~special]
        if expected.size == 0:
            return
    scale = float(np.max(np.abs(expected)))
    error = np.abs(actual - expected)
    allowed = tolerance.rtol * np.abs(expected) + tolerance.atol * scale
    bad = ~(error <= allowed)
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(error, nan=np.inf), -1.0)), error.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values off (rtol={tolerance.rtol:g}, "
            f"atol={tolerance.atol:g} x {scale:.3g}); worst at {tuple(int(i) for i in worst)}: "
            f"{actual[worst]!r} vs {expected[worst]!r}"
        )


def sample_weight_for(shape, seed=3):
    """Per-sample weights (``y_pred.shape[:-1]``), some zero."""
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.0, 2.0, shape[:-1])
    weights.reshape(-1)[::3] = 0.0
    return weights
