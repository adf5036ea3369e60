"""Hinge losses, drop-ins for ``keras.losses.Hinge`` and ``keras.losses.SquaredHinge``.

Labels are expected in {-1, 1}; Keras converts {0, 1} labels to {-1, 1} when *every*
label of the batch is 0 or 1. An elementwise loss sees one label at a time, so here a
label 0 always means -1: the same as Keras for {0, 1} and for {-1, 1} labels, and
different only for a batch mixing 0 with other values (e.g. {-1, 0, 1}, where Keras
leaves 0 as 0).
"""

import keras

from .. import math as fm
from ..define import elementwise_loss


def _signed(y_true):
    # {0, 1} -> {-1, 1}; every other label as it is
    return fm.where(y_true == 0.0, -1.0, y_true)


@elementwise_loss(keras_equivalent=keras.losses.Hinge, package="fusedloss")
def Hinge(y_true, y_pred):
    """Hinge loss; a drop-in for ``keras.losses.Hinge``.

    Formula (``y = y_true`` in {-1, 1}, 0 read as -1)::

        loss = mean(max(1 - y * y_pred, 0), axis=-1)

    Args:
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.Hinge())

    Returns:
        The reduced loss; at the hinge (``y * y_pred == 1``) the slope is ``-y``, as
        TensorFlow's ``maximum`` gives a tie to its first argument.
    """
    # d/dp = -y where 1 - y p >= 0, else 0
    return fm.maximum(1.0 - _signed(y_true) * y_pred, 0.0)


@elementwise_loss(keras_equivalent=keras.losses.SquaredHinge, package="fusedloss")
def SquaredHinge(y_true, y_pred):
    """Squared hinge loss; a drop-in for ``keras.losses.SquaredHinge``.

    Formula (``y = y_true`` in {-1, 1}, 0 read as -1)::

        loss = mean(max(1 - y * y_pred, 0)**2, axis=-1)

    Args:
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.SquaredHinge())

    Returns:
        The reduced loss.
    """
    # d/dp = -2 y max(1 - y p, 0)
    return fm.square(fm.maximum(1.0 - _signed(y_true) * y_pred, 0.0))
