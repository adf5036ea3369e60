"""fusedloss: loss and gradient in one pass, as drop-in Keras losses.

Public API: the Keras loss classes, their functional forms (per-sample losses,
differentiable) and ``backend()``.
"""

from .backends import backend
from .losses import ContrastiveLoss, EmbeddingContrastiveLoss, Huber, WeightedSigmoidCrossEntropy
from .ops import contrastive, embedding_contrastive, huber, weighted_sigmoid_cross_entropy

__version__ = "0.1.0"

__all__ = [
    "ContrastiveLoss",
    "EmbeddingContrastiveLoss",
    "Huber",
    "WeightedSigmoidCrossEntropy",
    "backend",
    "contrastive",
    "embedding_contrastive",
    "huber",
    "weighted_sigmoid_cross_entropy",
]
