"""fusedloss: loss and gradient in one pass, as drop-in Keras losses.

Public API: the Keras loss classes, their functional forms (per-sample losses,
differentiable), ``backend()`` and the size below which losses run as TensorFlow ops
(``min_fused_size()``, ``set_min_fused_size(n)``).
"""

from .backends import backend, min_fused_size, set_min_fused_size
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
    "min_fused_size",
    "set_min_fused_size",
]
