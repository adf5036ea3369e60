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


def _contrastive_terms(y_true, distance, margin):
    hinge = np.maximum(margin - distance, 0.0)
    values = y_true * distance * distance + (1.0 - y_true) * hinge**2
    slopes = 2.0 * y_true * distance - 2.0 * (1.0 - y_true) * hinge
    return values, slopes


def contrastive(y_true, y_pred, margin=1.0):
    """Contrastive loss of distances ``y_pred`` (``y_true = 1``: similar pair)."""
    distance = np.asarray(y_pred, np.float64)
    values, slopes = _contrastive_terms(np.asarray(y_true, np.float64), distance, margin)
    n = distance.shape[-1]
    return values.mean(axis=-1), slopes / n


def embedding_contrastive(y_true, pairs, margin=1.0):
    """Contrastive loss of ``d = ||pairs[:, 0] - pairs[:, 1]||``, with the gradient
    w.r.t. ``pairs``; at ``d = 0`` the gradient is taken to be 0."""
    pairs = np.asarray(pairs, np.float64)
    labels = np.asarray(y_true, np.float64).reshape(pairs.shape[0])
    difference = pairs[:, 0, :] - pairs[:, 1, :]
    # Scaled by the largest component, so tiny or huge differences neither underflow
    # nor overflow when squared.
    scale = np.abs(difference).max(axis=-1, initial=0.0)
    safe_scale = np.where(scale > 0, scale, 1.0)
    distance = scale * np.sqrt(((difference / safe_scale[:, None]) ** 2).sum(axis=-1))
    values, slopes = _contrastive_terms(labels, distance, margin)
    safe_distance = np.where(distance > 0, distance, 1.0)
    direction = np.where(distance[:, None] > 0, difference / safe_distance[:, None], 0.0)
    grad_a = slopes[:, None] * direction
    return values, np.stack([grad_a, -grad_a], axis=1)


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
