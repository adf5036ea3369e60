"""The derived gradient against finite differences (``tf.test.compute_gradient``) in
float64, for every variant, on inputs away from kinks."""

import numpy as np
import pytest
import tensorflow as tf

from .helpers import fused_loss
from .table import cases, inputs, skip_if_listed

SHAPE = (3, 4)


@pytest.mark.parametrize("row, variant", cases())
def test_gradient_matches_finite_differences(row, variant):
    skip_if_listed(row, "compute_gradient")
    (y_true, y_pred), _ = inputs(row, variant, SHAPE, "float64", ties=False, seed=5)
    loss = fused_loss(row, variant, SHAPE, "float64", reduction="none")
    y_true = tf.constant(y_true)

    def per_sample(prediction):
        return loss(y_true, prediction)

    theoretical, numerical = tf.test.compute_gradient(per_sample, [tf.constant(y_pred)], delta=1e-6)
    assert theoretical[0].shape == (3, 12)
    assert np.abs(theoretical[0]).max() > 0
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-7)
