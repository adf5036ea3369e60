"""Contrastive losses (TF Addons' convention: ``y_true = 1`` for a similar pair)."""

from .. import math as fm
from .. import ops
from ..base import FusedLoss
from ..define import elementwise_loss

import keras


# d = distance >= 0, y = 1 for a similar pair
#   loss   = y d**2 + (1 - y) max(margin - d, 0)**2
#   d/dd   = 2 y d - 2 (1 - y) max(margin - d, 0)      (continuous at d = margin)
@elementwise_loss(
    name="fused_contrastive", function_name="contrastive", constraints=("margin >= 0",), package="fusedloss"
)
def ContrastiveLoss(y_true, y_pred, margin=1.0):
    """Contrastive loss of distances fused with its gradient, in TF Addons' convention
    (``tfa.losses.ContrastiveLoss``): ``y_true = 1`` marks a *similar* pair.

    ``y_pred`` is the distance ``d >= 0`` between a pair's two embeddings. The
    keras.io Siamese example labels dissimilar pairs 1 instead: train it with
    ``1 - y_true``. See ``EmbeddingContrastiveLoss`` to skip the distance layer.

    Formula (per element), then the mean over the last axis::

        loss = y_true * d**2 + (1 - y_true) * max(margin - d, 0)**2

    Distances are expected to be >= 0; a negative ``d`` is not rejected: the formula
    is applied as written, with its derivative. Labels between 0 and 1 weight the two
    terms as written, too.

    Args:
        margin: how far apart dissimilar pairs are pushed; finite and >= 0, else
            ``ValueError``. 0 is allowed (only similar pairs then cost anything).
        reduction: any Keras reduction.
        name: the loss's name.
        dtype: the dtype of the loss's computation; ``None`` means ``floatx()``.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.ContrastiveLoss(margin=1.0))
        >>> fusedloss.contrastive([[1.0], [0.0]], [[0.5], [0.25]], margin=1.0)  # [0.25, 0.5625]

    Returns:
        Called as ``loss(y_true, y_pred, sample_weight=None)``: the reduced loss.
        Distances of shape ``(batch, 1)`` give one loss per pair.
    """
    # (y d) d, not y d**2: a dissimilar pair's loss stays 0 where d**2 overflows.
    return y_true * y_pred * y_pred + (1.0 - y_true) * fm.square(fm.maximum(margin - y_pred, 0.0))


@keras.saving.register_keras_serializable(package="fusedloss")
class EmbeddingContrastiveLoss(FusedLoss):
    """Contrastive loss computed straight from the two embeddings of each pair: the
    distance, the loss and the gradient of both embeddings in one fused pass.

    ``y_pred`` has shape ``(batch, 2, dim)``, a pair's two embeddings stacked on axis
    1 (``keras.ops.stack([a, b], axis=1)``); ``y_true`` has shape ``(batch,)`` or
    ``(batch, 1)``, 1 for a similar pair (TF Addons' convention). Gives the values and
    gradients of a Euclidean-distance layer followed by ``ContrastiveLoss``, except at
    distance 0, where the gradient is 0 instead of NaN. Not an elementwise loss (the
    distance reduces the embedding axis first), so it has its own kernel.

    Formula, per pair, with ``d = ||y_pred[:, 0] - y_pred[:, 1]||``::

        loss = y_true * d**2 + (1 - y_true) * max(margin - d, 0)**2

    Args:
        margin: how far apart dissimilar pairs are pushed; finite and >= 0, else
            ``ValueError`` here.
        reduction: any Keras reduction.
        name: the loss's name.
        dtype: the dtype of the loss's computation; ``None`` means ``floatx()``.

    Example:
        >>> pairs = keras.ops.stack([encoder(left), encoder(right)], axis=1)
        >>> model = keras.Model([left, right], pairs)
        >>> model.compile(optimizer="adam", loss=fusedloss.EmbeddingContrastiveLoss())

    Returns:
        Called as ``loss(y_true, y_pred, sample_weight=None)``: the reduced loss over
        the per-pair losses (shape ``(batch,)``).
    """

    def __init__(self, margin=1.0, reduction="sum_over_batch_size", name="fused_embedding_contrastive", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.margin = ops.check_margin(margin)

    def call(self, y_true, y_pred):
        return ops.embedding_contrastive(y_true, y_pred, margin=self.margin, expected_upstream=self._expected_upstream())

    def parameters(self):
        return {"margin": self.margin}
