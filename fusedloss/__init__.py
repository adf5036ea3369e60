"""fusedloss: loss and gradient in one pass, as drop-in Keras losses.

Public API: the Keras loss classes, their functional forms (per-sample losses,
differentiable) and ``backend()``.
"""

from .backends import backend
from .losses import ContrastiveLoss, EmbeddingContrastiveLoss, Huber
from .ops import contrastive, embedding_contrastive, huber

__version__ = "0.1.0"

__all__ = [
    "ContrastiveLoss",
    "EmbeddingContrastiveLoss",
    "Huber",
    "backend",
    "contrastive",
    "embedding_contrastive",
    "huber",
]
