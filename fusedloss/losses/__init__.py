"""The built-in fused losses, grouped by family; each elementwise one is a formula
given to ``fusedloss.elementwise_loss`` (``define.py``), written once."""

from ..base import FusedLoss
from .contrastive import ContrastiveLoss, EmbeddingContrastiveLoss
from .hinge import Hinge, SquaredHinge
from .probabilistic import BinaryCrossentropy, BinaryFocalCrossentropy, KLDivergence, Poisson
from .regression import (
    Huber,
    LogCosh,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MeanSquaredLogarithmicError,
    PseudoHuber,
)
from .sigmoid import WeightedSigmoidCrossEntropy

__all__ = [
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "ContrastiveLoss",
    "EmbeddingContrastiveLoss",
    "FusedLoss",
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
]
