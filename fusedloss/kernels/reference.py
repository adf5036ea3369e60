"""Float64 NumPy references: the independent answer tests and benchmarks check against.

Written from the formulas, not from ``math.py``, and vectorised over whole arrays.
Each returns ``(loss, grad)`` in float64 with the same contract as the kernels: loss
is the mean over the last axis, grad is d loss / d y_pred.
"""

import numpy as np


def huber(y_true, y_pred, delta=1.0):
    error = np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64)
    n = error.shape[-1]
    quadratic = np.abs(error) <= delta
    with np.errstate(invalid="ignore"):
        values = np.where(quadratic, 0.5 * error**2, delta * np.abs(error) - 0.5 * delta**2)
        slopes = np.where(quadratic, error, delta * error / np.abs(error))
    return values.mean(axis=-1), slopes / n


def weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight=1.0, label_smoothing=0.0):
    """TensorFlow's formula for ``weighted_cross_entropy_with_logits``, in float64::

        z = y_true (1 - s) + s / 2,   l = 1 + (q - 1) z
        loss = (1 - z) x + l (log1p(exp(-|x|)) + max(-x, 0))
        grad = (1 - z) - l sigmoid(-x)

    ``pos_weight`` ``q`` is a scalar or one weight per class (broadcast on the last axis).
    """
    x = np.asarray(y_pred, np.float64)
    z = np.asarray(y_true, np.float64) * (1.0 - label_smoothing) + 0.5 * label_smoothing
    weight = 1.0 + (np.asarray(pos_weight, np.float64) - 1.0) * z
    with np.errstate(invalid="ignore", over="ignore"):
        values = (1.0 - z) * x + weight * (np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0.0))
        # sigmoid(-x) = 1 / (1 + exp(x)), written so that exp never overflows.
        e = np.exp(-np.abs(x))
        sigmoid_of_negated = np.where(x >= 0, e / (1.0 + e), 1.0 / (1.0 + e))
        slopes = (1.0 - z) - weight * sigmoid_of_negated
    return values.mean(axis=-1), slopes / x.shape[-1]
