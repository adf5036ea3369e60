"""The Keras base class of every fused loss: configuration, registration, reduction."""

import keras


class FusedLoss(keras.losses.Loss):
    """Shared plumbing: parameters are validated at construction, and ``get_config``
    returns them with ``name``, ``reduction`` and ``dtype`` so ``from_config`` rebuilds
    an equal loss.

    Keras's ``Loss.__call__`` does the rest exactly as for its own losses: it converts
    both inputs to the loss's dtype, applies ``sample_weight`` and masks, and reduces.
    """

    def __init__(self, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._dtype_argument = dtype

    def parameters(self):
        """The loss's own parameters, as keyword arguments of its constructor."""
        return {}

    def _expected_upstream(self):
        # What Keras's reduction will send back to each per-sample loss (sample
        # weights and masks aside): the kernel writes its gradient for that.
        return "mean" if self.reduction in ("sum_over_batch_size", "mean", "mean_with_sample_weight") else "ones"

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "dtype": self._dtype_argument, **self.parameters()}
