"""Probabilistic losses, drop-ins for Keras's ``Poisson``, ``KLDivergence``,
``BinaryCrossentropy`` and ``BinaryFocalCrossentropy``.

Each is written with the ops Keras's TensorFlow backend uses, so the gradient
conventions match: ``clip`` passes the slope inside its bounds (included) and 0
outside, and the cross-entropy of logits is ``tf.nn.sigmoid_cross_entropy_with_logits``'s
own ``where`` form (slope ``sigmoid(x) - z`` everywhere, ``0.5 - z`` at 0).

``keras.config.epsilon()`` is read once, when this module is imported.

Not matched: Keras's cross-entropies with ``from_logits=False`` read the logits behind
``y_pred`` when ``y_pred`` is the output of a sigmoid (Keras's own ``sigmoid``, eagerly
or in a graph, or a ``tf.nn.sigmoid`` op in a graph) and then compute the loss from
logits; an elementwise loss sees only the probabilities, so these clip them to
``[eps, 1 - eps]`` as Keras does for any other probabilities. The values agree (to
rounding) while the sigmoid is not saturated; beyond ``1 - eps`` the slope here is 0
where Keras's is ``sigmoid(x) - z``. Pass logits and ``from_logits=True`` for the
stable form. ``axis`` must be -1 (the last axis is the one reduced).
"""

import keras

from .. import math as fm
from ..define import elementwise_loss

EPSILON = keras.config.epsilon()


@elementwise_loss(keras_equivalent=keras.losses.Poisson, package="fusedloss")
def Poisson(y_true, y_pred):
    """Poisson loss; a drop-in for ``keras.losses.Poisson``.

    Formula (``eps = keras.config.epsilon()``)::

        loss = mean(y_pred - y_true * log(y_pred + eps), axis=-1)

    Args:
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.Poisson())

    Returns:
        The reduced loss; ``y_pred`` is a rate, expected > 0.
    """
    # d/dp = 1 - t / (p + eps)
    return y_pred - y_true * fm.log(y_pred + EPSILON)


@elementwise_loss(reduce="sum", keras_equivalent=keras.losses.KLDivergence, package="fusedloss")
def KLDivergence(y_true, y_pred):
    """Kullback-Leibler divergence; a drop-in for ``keras.losses.KLDivergence``.

    Formula (both clipped to ``[eps, 1]``, the **sum** over the last axis)::

        loss = sum(y_true * log(y_true / y_pred), axis=-1)

    Args:
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.KLDivergence())

    Returns:
        The reduced loss; ``y_true`` and ``y_pred`` are distributions over the last axis.
    """
    # d/dp = -t / p for eps <= p <= 1, else 0
    t = fm.clip(y_true, EPSILON, 1.0)
    p = fm.clip(y_pred, EPSILON, 1.0)
    return t * fm.log(t / p)


def _smoothed(y_true, label_smoothing):
    # Keras: labels squeezed towards 0.5 (exactly y_true when label_smoothing is 0)
    return y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing


def _crossentropy_of_logits(z, x):
    # tf.nn.sigmoid_cross_entropy_with_logits: max(x, 0) - x z + log1p(exp(-|x|)), with
    # its two `where`s rather than max and abs, so the slope at x = 0 is 0.5 - z
    positive = x >= 0.0
    return fm.where(positive, x, 0.0) - x * z + fm.log1p(fm.exp(fm.where(positive, -x, x)))


def _crossentropy_of_probabilities(z, p):
    # Keras: p clipped to [eps, 1 - eps] (slope 0 outside), then -(z log p + (1 - z) log(1 - p))
    p = fm.clip(p, EPSILON, 1.0 - EPSILON)
    return -(z * fm.log(p) + (1.0 - z) * fm.log(1.0 - p))


@elementwise_loss(
    static=("from_logits", "axis"),
    constraints=("0 <= label_smoothing <= 1", "axis == -1"),
    keras_equivalent=keras.losses.BinaryCrossentropy,
    package="fusedloss",
)
def BinaryCrossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary cross-entropy; a drop-in for ``keras.losses.BinaryCrossentropy``.

    Formula (``z = y_true (1 - s) + s / 2``, ``s = label_smoothing``; ``p = y_pred``
    clipped to ``[eps, 1 - eps]``, or ``x = y_pred`` the logits)::

        loss = mean(-(z log p + (1 - z) log(1 - p)), axis=-1)            from_logits=False
        loss = mean(max(x, 0) - x z + log(1 + exp(-|x|)), axis=-1)       from_logits=True

    Args:
        from_logits: whether ``y_pred`` holds logits (recommended) or probabilities.
        label_smoothing: in [0, 1]; pulls the labels towards 0.5.
        axis: -1 only (the last axis is averaged).
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.BinaryCrossentropy(from_logits=True))

    Returns:
        The reduced loss. See the module's note on probabilities from a sigmoid.
    """
    # d/dx = sigmoid(x) - z (logits); d/dp = (p - z) / (p (1 - p)) inside the clip, else 0
    z = _smoothed(y_true, label_smoothing)
    if from_logits:
        return _crossentropy_of_logits(z, y_pred)
    return _crossentropy_of_probabilities(z, y_pred)


# gamma static: (1 - p_t) ** gamma and its derivative's ** (gamma - 1) were two float32
# pows (exp and log each) per element; with Keras's default gamma = 2 they are products.
@elementwise_loss(
    static=("apply_class_balancing", "from_logits", "axis", "gamma"),
    constraints=("0 <= alpha <= 1", "gamma >= 0", "0 <= label_smoothing <= 1", "axis == -1"),
    keras_equivalent=keras.losses.BinaryFocalCrossentropy,
    package="fusedloss",
)
def BinaryFocalCrossentropy(
    y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1
):
    """Binary focal cross-entropy (Lin et al., 2018); a drop-in for
    ``keras.losses.BinaryFocalCrossentropy``.

    Formula (``z`` the smoothed label as in ``BinaryCrossentropy``, ``p = y_pred`` or
    ``sigmoid(y_pred)`` for logits, ``bce`` the binary cross-entropy of ``z`` and
    ``y_pred``)::

        p_t = z p + (1 - z) (1 - p)
        loss = mean(w (1 - p_t)**gamma bce, axis=-1)
        w = z alpha + (1 - z) (1 - alpha) with apply_class_balancing, else 1

    Args:
        apply_class_balancing: whether to weigh class 1 by ``alpha`` and 0 by ``1 - alpha``.
        alpha: the weight of class 1, in [0, 1] (Keras does not check it).
        gamma: the focusing exponent, >= 0 (Keras does not check it); 0 gives the BCE.
        from_logits: whether ``y_pred`` holds logits or probabilities.
        label_smoothing: in [0, 1]; pulls the labels towards 0.5.
        axis: -1 only (the last axis is averaged).
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> loss = fusedloss.BinaryFocalCrossentropy(apply_class_balancing=True, gamma=3.0, from_logits=True)

    Returns:
        The reduced loss. As in Keras, ``p_t`` uses the unclipped ``p``.
    """
    # d/dp of w (1 - p_t)**gamma bce: the product rule over the traced expression, with
    # d(1 - p_t)/dp = -(2z - 1) (times sigmoid'(x) for logits)
    z = _smoothed(y_true, label_smoothing)
    if from_logits:
        # Keras: p = sigmoid(x), and the BCE of the logits behind it (its stable form)
        bce, p = _crossentropy_of_logits(z, y_pred), fm.sigmoid(y_pred)
    else:
        bce, p = _crossentropy_of_probabilities(z, y_pred), y_pred
    p_t = z * p + (1.0 - z) * (1.0 - p)
    loss = (1.0 - p_t) ** gamma * bce
    if apply_class_balancing:
        loss = (z * alpha + (1.0 - z) * (1.0 - alpha)) * loss
    return loss
