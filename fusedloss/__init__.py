"""fusedloss: loss and gradient in one pass, as drop-in Keras losses.

Public API: the Keras loss classes, their functional forms (per-sample losses,
differentiable), ``backend()`` and the size below which losses run as TensorFlow ops
(``min_fused_size()``, ``set_min_fused_size(n)``).
"""

from .backends import backend, min_fused_size, set_min_fused_size
from .losses import ContrastiveLoss, EmbeddingContrastiveLoss, Huber, WeightedSigmoidCrossEntropy
from .ops import contrastive, embedding_contrastive, huber, weighted_sigmoid_cross_entropy
from .softmax import CategoricalCrossentropy, CategoricalFocalCrossentropy, SparseCategoricalCrossentropy, categorical_crossentropy, categorical_focal_crossentropy, sparse_categorical_crossentropy  # noqa: E501

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
    "min_fused_size",
    "set_min_fused_size",
    "weighted_sigmoid_cross_entropy",
    # softmax cross-entropies (issue 11)
    "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy",
    "SparseCategoricalCrossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "sparse_categorical_crossentropy",
]
