"""fusedloss: loss and gradient in one pass, as drop-in Keras losses.

Public API: the Keras loss classes, their functional forms (per-sample losses,
differentiable) and ``backend()``.
"""

from .backends import backend
from .losses import Huber, WeightedSigmoidCrossEntropy
from .ops import huber, weighted_sigmoid_cross_entropy

__version__ = "0.1.0"

__all__ = ["Huber", "WeightedSigmoidCrossEntropy", "backend", "huber", "weighted_sigmoid_cross_entropy"]
