"""Sigmoid cross-entropies, each defined once as a formula of one element."""

from .. import math as fm
from ..define import elementwise_loss


# z = y (1 - s) + s / 2,  l = 1 + (q - 1) z = q z + (1 - z),  x = logit
#   loss   = l softplus(-x) + (1 - z) x          (= TF's (1 - z) x + l (log1p(exp(-|x|)) + max(-x, 0)))
#   d/dx   = (1 - z) - l sigmoid(-x)             (smooth at x = 0)
# The kernels compile the hand-written element function of kernels/math.py (the same
# formula with vectorisable float32 exp/log1p and no cancellation, measured faster).
@elementwise_loss(
    per_class=("pos_weight",),
    constraints=("pos_weight >= 0", "0 <= label_smoothing <= 1"),
    kernel="fusedloss.kernels.math:weighted_sigmoid_cross_entropy",
    package="fusedloss",
)
def WeightedSigmoidCrossEntropy(y_true, y_pred, pos_weight=1.0, label_smoothing=0.0):
    """Weighted sigmoid cross-entropy with logits, fused with its gradient: the per-element
    value of ``tf.nn.weighted_cross_entropy_with_logits``, averaged over the last axis.

    Formula (per element, ``x = y_pred`` the logits, ``q = pos_weight``,
    ``z = y_true (1 - s) + s / 2`` with ``s = label_smoothing``, ``l = 1 + (q - 1) z``)::

        loss = (1 - z) x + l (log(1 + exp(-|x|)) + max(-x, 0))
        d loss / dx = (1 - z) - l sigmoid(-x)

    computed in a form where nothing overflows and large terms do not cancel.

    Args:
        pos_weight: weight of the positive term: a number >= 0, or a sequence with one
            weight per class (the last axis; its length is checked at the first call).
            Negative or non-finite weights are a ``ValueError`` at construction.
        label_smoothing: in [0, 1]; labels are pulled towards 0.5 as in
            ``keras.losses.BinaryCrossentropy``.
        reduction: any Keras reduction.
        name: the loss's name.
        dtype: the dtype of the loss's computation; ``None`` means ``floatx()``.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.WeightedSigmoidCrossEntropy(pos_weight=[1.0, 4.0]))
        >>> fusedloss.weighted_sigmoid_cross_entropy([[1.0, 0.0]], [[2.0, -1.0]], pos_weight=3.0)

    Returns:
        Called as ``loss(y_true, logits, sample_weight=None)``: the reduced loss, with the
        analytic gradient ``(1 - z) - l sigmoid(-x)`` per element (divided by the
        number of classes).
    """
    z = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    negative = 1.0 - z
    return (pos_weight * z + negative) * fm.softplus(-y_pred) + negative * y_pred
