"""Regression losses, each defined once as a formula of one element."""

import keras

from .. import math as fm
from ..define import elementwise_loss


# e = y_pred - y_true
#   loss   = e**2 / 2                   |e| <= delta
#            delta |e| - delta**2 / 2   otherwise
#   d/de   = e  or  delta sign(e)       (NaN where e is not finite: the untaken branch)
@elementwise_loss(constraints=("delta > 0",), keras_equivalent=keras.losses.Huber, package="fusedloss")
def Huber(y_true, y_pred, delta=1.0):
    """Huber loss fused with its gradient; a drop-in for ``keras.losses.Huber``.

    Formula (per element, ``e = y_pred - y_true``), then the mean over the last axis::

        loss = 0.5 * e**2                     if |e| <= delta
               delta * |e| - 0.5 * delta**2   otherwise

    Args:
        delta: where the loss turns from quadratic to linear; finite and > 0, else
            ``ValueError`` at construction.
        reduction: any Keras reduction (``"sum_over_batch_size"``, ``"sum"``,
            ``"mean"``, ``"mean_with_sample_weight"``, ``"none"`` or ``None``).
        name: the loss's name.
        dtype: the dtype of the loss's computation; ``None`` means ``floatx()``.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.Huber(delta=2.0))
        >>> fusedloss.huber([[0.0, 1.0]], [[0.5, 3.0]], delta=1.0)  # [(0.125 + 1.5) / 2]

    Returns:
        Called as ``loss(y_true, y_pred, sample_weight=None)``: the reduced loss, the
        same values and gradients as ``keras.losses.Huber``.
    """
    error = y_pred - y_true
    abs_error = fm.abs(error)
    return fm.where(abs_error <= delta, 0.5 * fm.square(error), delta * abs_error - 0.5 * fm.square(delta))
