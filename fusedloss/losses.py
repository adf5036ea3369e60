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

    def _expected_upstream(self):
        # What Keras's reduction will send back to each per-sample loss (sample
        # weights and masks aside): the kernel writes its gradient for that.
        return "mean" if self.reduction in ("sum_over_batch_size", "mean", "mean_with_sample_weight") else "ones"

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
        return ops.huber(y_true, y_pred, delta=self.delta, expected_upstream=self._expected_upstream())

    def parameters(self):
        return {"delta": self.delta}


@keras.saving.register_keras_serializable(package="fusedloss")
class ContrastiveLoss(FusedLoss):
    """Contrastive loss of distances fused with its gradient, in TF Addons' convention
    (``tfa.losses.ContrastiveLoss``): ``y_true = 1`` marks a *similar* pair.

    ``y_pred`` is the distance ``d >= 0`` between a pair's two embeddings. The
    keras.io Siamese example labels dissimilar pairs 1 instead: train it with
    ``1 - y_true``. See ``EmbeddingContrastiveLoss`` to skip the distance layer.

    Formula (per element), then the mean over the last axis::

        loss = y_true * d**2 + (1 - y_true) * max(margin - d, 0)**2

    Args:
        margin: how far apart dissimilar pairs are pushed; finite and >= 0, else
            ``ValueError`` here. 0 is allowed (only similar pairs then cost anything).
        reduction: any Keras reduction (``"sum_over_batch_size"``, ``"sum"``,
            ``"mean"``, ``"mean_with_sample_weight"``, ``"none"`` or ``None``).
        name: the loss's name.
        dtype: the dtype of the loss's computation; ``None`` means ``floatx()``.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.ContrastiveLoss(margin=1.0))

    Returns:
        Called as ``loss(y_true, y_pred, sample_weight=None)``: the reduced loss.
        Distances of shape ``(batch, 1)`` give one loss per pair (what
        ``sample_weight`` of shape ``(batch,)`` weighs). Negative distances are
        not rejected; the formula is applied to them as written.
    """

    def __init__(self, margin=1.0, reduction="sum_over_batch_size", name="fused_contrastive", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.margin = ops.check_margin(margin)

    def call(self, y_true, y_pred):
        return ops.contrastive(y_true, y_pred, margin=self.margin, expected_upstream=self._expected_upstream())

    def parameters(self):
        return {"margin": self.margin}


@keras.saving.register_keras_serializable(package="fusedloss")
class EmbeddingContrastiveLoss(FusedLoss):
    """Contrastive loss computed straight from the two embeddings of each pair: the
    distance, the loss and the gradient of both embeddings in one fused pass.

    ``y_pred`` has shape ``(batch, 2, dim)``, a pair's two embeddings stacked on axis
    1 (``keras.ops.stack([a, b], axis=1)``); ``y_true`` has shape ``(batch,)`` or
    ``(batch, 1)``, 1 for a similar pair (TF Addons' convention). Gives the values and
    gradients of a Euclidean-distance layer followed by ``ContrastiveLoss``, except at
    distance 0, where the gradient is 0 instead of NaN.

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
        return ops.weighted_sigmoid_cross_entropy(
            y_true, y_pred, self.pos_weight, self.label_smoothing, expected_upstream=self._expected_upstream()
        )

    def parameters(self):
        pos_weight = list(self.pos_weight) if isinstance(self.pos_weight, tuple) else self.pos_weight
        return {"pos_weight": pos_weight, "label_smoothing": self.label_smoothing}
