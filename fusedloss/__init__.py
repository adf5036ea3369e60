"""fusedloss: loss and gradient in one pass, as drop-in Keras losses.

Public API: the Keras loss classes, their functional forms (per-sample losses,
differentiable), ``elementwise_loss`` and ``math`` to define your own,
``backend()`` and the size below which losses run as TensorFlow ops
(``min_fused_size()``, ``set_min_fused_size(n)``).
"""

from . import math
from .backends import backend, min_fused_size, set_min_fused_size
from .define import elementwise_loss
from .losses import (
    BinaryCrossentropy,
    BinaryFocalCrossentropy,
    ContrastiveLoss,
    EmbeddingContrastiveLoss,
    Hinge,
    Huber,
    KLDivergence,
    LogCosh,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MeanSquaredLogarithmicError,
    Poisson,
    PseudoHuber,
    SquaredHinge,
    WeightedSigmoidCrossEntropy,
)
from .ops import embedding_contrastive

huber = Huber.per_sample
contrastive = ContrastiveLoss.per_sample
weighted_sigmoid_cross_entropy = WeightedSigmoidCrossEntropy.per_sample
mean_squared_error = MeanSquaredError.per_sample
mean_absolute_error = MeanAbsoluteError.per_sample
mean_absolute_percentage_error = MeanAbsolutePercentageError.per_sample
mean_squared_logarithmic_error = MeanSquaredLogarithmicError.per_sample
log_cosh = LogCosh.per_sample
pseudo_huber = PseudoHuber.per_sample
hinge = Hinge.per_sample
squared_hinge = SquaredHinge.per_sample
poisson = Poisson.per_sample
kl_divergence = KLDivergence.per_sample
binary_crossentropy = BinaryCrossentropy.per_sample
binary_focal_crossentropy = BinaryFocalCrossentropy.per_sample
from .softmax import (
    CategoricalCrossentropy,
    CategoricalFocalCrossentropy,
    SparseCategoricalCrossentropy,
    categorical_crossentropy,
    categorical_focal_crossentropy,
    sparse_categorical_crossentropy,
)

__version__ = "0.1.0"

__all__ = [
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "ContrastiveLoss",
    "EmbeddingContrastiveLoss",
    "Hinge",
    "Huber",
    "KLDivergence",
    "LogCosh",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredError",
    "MeanSquaredLogarithmicError",
    "Poisson",
    "PseudoHuber",
    "SquaredHinge",
    "WeightedSigmoidCrossEntropy",
    "backend",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "contrastive",
    "elementwise_loss",
    "embedding_contrastive",
    "hinge",
    "huber",
    "kl_divergence",
    "log_cosh",
    "math",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_error",
    "mean_squared_logarithmic_error",
    "min_fused_size",
    "poisson",
    "pseudo_huber",
    "set_min_fused_size",
    "squared_hinge",
    "weighted_sigmoid_cross_entropy",
    # softmax cross-entropies (issue 11)
    "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy",
    "SparseCategoricalCrossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "sparse_categorical_crossentropy",
]
