"""fusedloss: loss and gradient in one pass, as drop-in Keras losses.

Public API: the Keras loss classes, their functional forms (per-sample losses,
differentiable), ``elementwise_loss`` and ``math`` to define your own,
``backend()`` and the size below which losses run as TensorFlow ops
(``min_fused_size()``, ``set_min_fused_size(n)``).
"""

from . import math
from .backends import backend, min_fused_size, set_min_fused_size
from .define import elementwise_loss
from .losses import ContrastiveLoss, EmbeddingContrastiveLoss, Huber, WeightedSigmoidCrossEntropy
from .ops import embedding_contrastive

huber = Huber.per_sample
contrastive = ContrastiveLoss.per_sample
weighted_sigmoid_cross_entropy = WeightedSigmoidCrossEntropy.per_sample

__version__ = "0.1.0"

__all__ = [
    "ContrastiveLoss",
    "EmbeddingContrastiveLoss",
    "Huber",
    "WeightedSigmoidCrossEntropy",
    "backend",
    "contrastive",
    "elementwise_loss",
    "embedding_contrastive",
    "huber",
    "math",
    "min_fused_size",
    "set_min_fused_size",
    "weighted_sigmoid_cross_entropy",
]
