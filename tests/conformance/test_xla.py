"""Under ``tf.function(jit_compile=True)`` a fused loss runs its TensorFlow-ops path
(the formula and its derived slope in one ``tf.custom_gradient`` forward): it must give
what the kernel path gives."""

import warnings

import pytest
import tensorflow as tf

from .helpers import assert_close, fused_loss, sample_weight_for, value_and_gradient
from .table import TOLERANCES, cases, inputs

SHAPE = (4, 33)


def _xla_value_and_gradient(loss, y_true, y_pred, sample_weight):
    @tf.function(jit_compile=True)
    def step(y_true, y_pred, sample_weight):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            value = loss(y_true, y_pred, sample_weight=sample_weight)
        return value, tape.gradient(value, y_pred)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one-per-process "runs as TF ops under XLA" warning
        value, grad = step(tf.constant(y_true), tf.constant(y_pred), tf.constant(sample_weight))
    return value.numpy(), grad.numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("row, variant", cases())
def test_xla_path_equals_kernel_path(row, variant, dtype):
    if dtype == "float64" and variant != row.variants[0]:
        pytest.skip("float64 for the first variant only (XLA compiles are slow)")
    (y_true, y_pred), _ = inputs(row, variant, SHAPE, dtype)
    weights = sample_weight_for(SHAPE).astype(dtype)
    loss = fused_loss(row, variant, SHAPE, dtype)
    kernel = value_and_gradient(loss, y_true, y_pred, weights)
    xla = _xla_value_and_gradient(loss, y_true, y_pred, weights)
    # Both compute the same formula; float32 kernels may use their own approximations
    tolerance = row.tolerance_for(dtype) if dtype == "float32" else TOLERANCES["float64"]
    assert_close("loss", xla[0], kernel[0], tolerance)
    assert_close("gradient", xla[1], kernel[1], tolerance)
