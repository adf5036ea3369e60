"""Keras ``Loss`` classes on top of ``ops``: configuration and registration only.

Keras's ``Loss.__call__`` does the rest exactly as for its own losses: it converts
both inputs to the loss's dtype, applies ``sample_weight`` and masks, and reduces.
"""

import keras

from . import ops


class FusedLoss(keras.losses.Loss):
    """Shared plumbing: parameters are validated at construction, and ``get_config``
    returns them with ``name``, ``reduction`` and ``dtype`` so ``from_config`` rebuilds
    an equal loss."""

    def __init__(self, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._dtype_argument = dtype

    def parameters(self):
        """The loss's own parameters, as keyword arguments of its constructor."""
        return {}

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "dtype": self._dtype_argument, **self.parameters()}


@keras.saving.register_keras_serializable(package="fusedloss")
class Huber(FusedLoss):
    """Huber loss fused with its gradient; a drop-in for ``keras.losses.Huber``.

    Formula (per element, ``e = y_pred - y_true``), then the mean over the last axis::

        loss = 0.5 * e**2                     if |e| <= delta
               delta * |e| - 0.5 * delta**2   otherwise

    Args:
        delta: where the loss turns from quadratic to linear; finite and > 0, else
            ``ValueError`` here rather than at the first step.
        reduction: any Keras reduction (``"sum_over_batch_size"``, ``"sum"``,
            ``"mean"``, ``"mean_with_sample_weight"``, ``"none"`` or ``None``).
        name: the loss's name.
        dtype: the dtype of the loss's computation; ``None`` means ``floatx()``.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.Huber(delta=2.0))

    Returns:
        Called as ``loss(y_true, y_pred, sample_weight=None)``: the reduced loss, the
        same values and gradients as ``keras.losses.Huber``.
    """

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="fused_huber", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.delta = ops.check_parameter("delta", delta)

    def call(self, y_true, y_pred):
        return ops.huber(y_true, y_pred, delta=self.delta)

    def parameters(self):
        return {"delta": self.delta}


@keras.saving.register_keras_serializable(package="fusedloss")
class WeightedSigmoidCrossEntropy(FusedLoss):
    """Weighted sigmoid cross-entropy with logits, fused with its gradient: the per-element
    value of ``tf.nn.weighted_cross_entropy_with_logits``, averaged over the last axis.

    Formula (per element, ``x = y_pred`` the logits, ``q = pos_weight``,
    ``z = y_true (1 - s) + s / 2`` with ``s = label_smoothing``, ``l = 1 + (q - 1) z``)::

        loss = (1 - z) x + l (log(1 + exp(-|x|)) + max(-x, 0))

    Args:
        pos_weight: weight of the positive term: a number >= 0, or a sequence with one
            weight per class (the last axis; its length is checked at the first call).
            Negative or non-finite weights are a ``ValueError`` here.
        label_smoothing: in [0, 1]; labels are pulled towards 0.5 as in
            ``keras.losses.BinaryCrossentropy``; anything else is a ``ValueError`` here.
        reduction: any Keras reduction (``"sum_over_batch_size"``, ``"sum"``,
            ``"mean"``, ``"mean_with_sample_weight"``, ``"none"`` or ``None``).
        name: the loss's name.
        dtype: the dtype of the loss's computation; ``None`` means ``floatx()``.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.WeightedSigmoidCrossEntropy(pos_weight=[1.0, 4.0]))

    Returns:
        Called as ``loss(y_true, logits, sample_weight=None)``: the reduced loss, with the
        analytic gradient ``(1 - z) - l sigmoid(-x)`` per element (divided by the
        number of classes).
    """

    def __init__(
        self,
        pos_weight=1.0,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="fused_weighted_sigmoid_cross_entropy",
        dtype=None,
    ):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.pos_weight = ops.check_pos_weight(pos_weight)
        self.label_smoothing = ops.check_label_smoothing(label_smoothing)

    def call(self, y_true, y_pred):
        return ops.weighted_sigmoid_cross_entropy(y_true, y_pred, self.pos_weight, self.label_smoothing)

    def parameters(self):
        pos_weight = list(self.pos_weight) if isinstance(self.pos_weight, tuple) else self.pos_weight
        return {"pos_weight": pos_weight, "label_smoothing": self.label_smoothing}
