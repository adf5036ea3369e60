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
