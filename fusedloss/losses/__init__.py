"""The built-in fused losses, grouped by family; each elementwise one is a formula
given to ``fusedloss.elementwise_loss`` (``define.py``), written once."""

from ..base import FusedLoss
from .contrastive import ContrastiveLoss, EmbeddingContrastiveLoss
from .regression import Huber
from .sigmoid import WeightedSigmoidCrossEntropy

__all__ = ["ContrastiveLoss", "EmbeddingContrastiveLoss", "FusedLoss", "Huber", "WeightedSigmoidCrossEntropy"]
