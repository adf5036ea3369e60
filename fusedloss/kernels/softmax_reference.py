"""Float64 NumPy references for the softmax cross-entropies, written from the formulas.

Each returns ``(loss, grad)`` in float64: the loss per row (the sum over the class
axis, the last one) and its gradient with respect to the logits.
"""

import numpy as np

# Shared with the kernels and the TF ops (this module imports nothing but NumPy).
# Keras's backend.epsilon(): the clip of probabilities in the focal loss.
EPSILON = 1e-7
# The ignore label the TF ops give the kernels: no valid label equals it, nor what a
# NaN or infinite float label casts to (INT64_MIN).
NO_IGNORE = np.iinfo(np.int64).min + 1


def _log_softmax(logits):
    x = np.asarray(logits, np.float64)
    top = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = x - top
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def smooth(y_true, label_smoothing):
    y = np.asarray(y_true, np.float64)
    return y * (1.0 - label_smoothing) + label_smoothing / y.shape[-1]


def softmax_cross_entropy(y_true, logits, label_smoothing=0.0):
    """``loss = -sum_j t_j log softmax(x)_j``, ``grad = softmax(x) - t``,
    with ``t = y (1 - s) + s / K``."""
    t = smooth(y_true, label_smoothing)
    log_p = _log_softmax(logits)
    with np.errstate(invalid="ignore"):
        return -np.sum(t * log_p, axis=-1), np.exp(log_p) - t


def sparse_softmax_cross_entropy(labels, logits, ignore_class=None):
    """``loss = -log softmax(x)_label``, ``grad = softmax(x) - onehot(label)``;
    rows labelled ``ignore_class`` give 0 and a zero gradient."""
    labels = np.asarray(labels)
    log_p = _log_softmax(logits)
    valid = np.ones(labels.shape, bool) if ignore_class is None else labels != ignore_class
    safe = np.where(valid, labels, 0)
    loss = -np.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
    grad = np.exp(log_p)
    np.put_along_axis(grad, safe[..., None], np.take_along_axis(grad, safe[..., None], axis=-1) - 1.0, axis=-1)
    return np.where(valid, loss, 0.0), np.where(valid[..., None], grad, 0.0)


def categorical_focal_cross_entropy(y_true, logits, alpha=0.25, gamma=2.0, label_smoothing=0.0):
    """Keras's focal formula from logits: ``c = clip(softmax(x), eps, 1 - eps)``,
    ``loss = -sum alpha (1 - c)^gamma t log c``; the gradient through the clip (0 where
    it clips) and the softmax Jacobian."""
    t = smooth(y_true, label_smoothing)
    p = np.exp(_log_softmax(logits))
    alpha = np.asarray(alpha, np.float64)
    c = np.clip(p, EPSILON, 1.0 - EPSILON)
    w = (1.0 - c) ** gamma
    loss = -np.sum(alpha * w * t * np.log(c), axis=-1)
    passes = (p >= EPSILON) & (p <= 1.0 - EPSILON)
    g = np.where(passes, alpha * t * (gamma * (1.0 - c) ** (gamma - 1.0) * np.log(c) - w / c), 0.0)
    grad = p * (g - np.sum(g * p, axis=-1, keepdims=True))
    return loss, grad
