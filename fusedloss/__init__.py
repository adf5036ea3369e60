"""fusedloss: loss and gradient in one pass, as drop-in Keras losses.

Public API: the Keras loss classes, their functional forms (per-sample losses,
differentiable) and ``backend()``.
"""

from .backends import backend
from .losses import Huber
from .ops import huber

__version__ = "0.1.0"

__all__ = ["Huber", "backend", "huber"]
