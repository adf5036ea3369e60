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
