"""Regression losses, each defined once as a formula of one element; drop-ins for
Keras's classes (Huber, MSE, MAE, MAPE, MSLE, LogCosh) and PseudoHuber.

Each definition is one element's loss as Keras's TensorFlow backend computes it, with
the same ops where an op's gradient convention matters (``maximum`` sends a tie to its
first argument, ``abs`` has slope 0 at 0), so values and gradients match Keras's in
float32 and float64. fusedloss averages over the last axis, as Keras does.

Keras reads ``keras.config.epsilon()`` at every call; these read it once, when this
module is imported (a later ``keras.config.set_epsilon`` is not seen).
"""

import keras
import numpy as np

from .. import math as fm
from ..define import elementwise_loss

EPSILON = keras.config.epsilon()
# MSLE's epsilon is a float32 tensor in Keras even under float64 (widened there): the
# float32 value of epsilon matches it in both dtypes.
EPSILON_FLOAT32 = float(np.float32(EPSILON))


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


@elementwise_loss(keras_equivalent=keras.losses.MeanSquaredError, package="fusedloss")
def MeanSquaredError(y_true, y_pred):
    """Mean squared error; a drop-in for ``keras.losses.MeanSquaredError``.

    Formula::

        loss = mean((y_true - y_pred)**2, axis=-1)

    Args:
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.MeanSquaredError())

    Returns:
        The reduced loss; ``per_sample`` gives one loss per sample.
    """
    # d/dp = -2 (t - p): Keras squares the difference t - p
    return fm.square(y_true - y_pred)


@elementwise_loss(keras_equivalent=keras.losses.MeanAbsoluteError, package="fusedloss")
def MeanAbsoluteError(y_true, y_pred):
    """Mean absolute error; a drop-in for ``keras.losses.MeanAbsoluteError``.

    Formula::

        loss = mean(|y_true - y_pred|, axis=-1)

    Args:
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.MeanAbsoluteError())

    Returns:
        The reduced loss; the slope is 0 where ``y_pred == y_true``, as TensorFlow's.
    """
    # d/dp = -sign(t - p), 0 at a tie
    return fm.abs(y_true - y_pred)


@elementwise_loss(keras_equivalent=keras.losses.MeanAbsolutePercentageError, package="fusedloss")
def MeanAbsolutePercentageError(y_true, y_pred):
    """Mean absolute percentage error; a drop-in for
    ``keras.losses.MeanAbsolutePercentageError``.

    Formula (``eps = keras.config.epsilon()``, read at import)::

        loss = 100 * mean(|y_true - y_pred| / max(|y_true|, eps), axis=-1)

    Args:
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.MeanAbsolutePercentageError())

    Returns:
        The reduced loss, in percent.
    """
    # d/dp = -100 sign(t - p) / max(|t|, eps); Keras takes |(t - p) / max(|t|, eps)|
    return 100.0 * fm.abs((y_true - y_pred) / fm.maximum(fm.abs(y_true), EPSILON))


@elementwise_loss(keras_equivalent=keras.losses.MeanSquaredLogarithmicError, package="fusedloss")
def MeanSquaredLogarithmicError(y_true, y_pred):
    """Mean squared logarithmic error; a drop-in for
    ``keras.losses.MeanSquaredLogarithmicError``.

    Formula (values below ``eps = keras.config.epsilon()`` are raised to it)::

        loss = mean((log(1 + max(y_pred, eps)) - log(1 + max(y_true, eps)))**2, axis=-1)

    Args:
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.MeanSquaredLogarithmicError())

    Returns:
        The reduced loss. ``log1p`` where Keras writes ``log(x + 1)``: the same value,
        closer to exact in float32 for small ``x``.
    """
    # d/dp = 2 (log1p(max(p, eps)) - log1p(max(t, eps))) / (1 + p) for p >= eps, else 0
    first_log = fm.log1p(fm.maximum(y_pred, EPSILON_FLOAT32))
    second_log = fm.log1p(fm.maximum(y_true, EPSILON_FLOAT32))
    return fm.square(first_log - second_log)


@elementwise_loss(keras_equivalent=keras.losses.LogCosh, package="fusedloss")
def LogCosh(y_true, y_pred):
    """Logarithm of the hyperbolic cosine of the error; a drop-in for
    ``keras.losses.LogCosh``.

    Formula (``e = y_pred - y_true``)::

        loss = mean(log(cosh(e)), axis=-1)

    Args:
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.LogCosh())

    Returns:
        The reduced loss, computed without overflow for large errors.
    """
    # d/dp = tanh(e); log_cosh is |e| + log1p(exp(-2|e|)) - log 2, Keras's
    # e + softplus(-2e) - log 2 rearranged
    return fm.log_cosh(y_pred - y_true)


@elementwise_loss(constraints=("delta > 0",), package="fusedloss")
def PseudoHuber(y_true, y_pred, delta=1.0):
    """Pseudo-Huber loss: smooth everywhere, quadratic for small errors and linear, of
    slope ``delta``, for large ones. Keras has no equivalent.

    Formula (``e = y_pred - y_true``)::

        loss = mean(delta**2 * (sqrt(1 + (e / delta)**2) - 1), axis=-1)

    Args:
        delta: the scale where the loss turns from quadratic to linear; > 0.
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.PseudoHuber(delta=2.0))

    Returns:
        The reduced loss.
    """
    # u = (e / delta)**2, r = sqrt(1 + u); r - 1 computed as u / (r + 1) for u <= 1 (the
    # same value without the cancellation), as r - 1 above (finite, and +inf at e = +-inf).
    # d/dp = e / sqrt(1 + (e / delta)**2)
    u = fm.square((y_pred - y_true) / delta)
    root = fm.sqrt(1.0 + u)
    return delta**2 * fm.where(u > 1.0, root - 1.0, u / (root + 1.0))
