"""What every launcher does before a kernel runs, whatever the target.

A loss reduces the last axis: an input of shape ``(..., n)`` is seen as ``rows`` of
``n`` columns, the loss has shape ``(...)`` and the gradient the input's shape.
"""

import math

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def row_layout(y_true, y_pred):
    """Check a label/prediction pair and return ``(loss_shape, n_rows, n_columns)``.

    Raises ``ValueError`` naming both shapes when they differ, and ``TypeError``
    naming the dtype when the prediction is not float32 or float64 (the bridge casts
    half precision to float32 before it gets here).
    """
    # tuple(): the simulator's device arrays refuse negative indices into their shape.
    shape = tuple(y_pred.shape)
    if tuple(y_true.shape) != shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got y_true {tuple(y_true.shape)} "
            f"and y_pred {tuple(y_pred.shape)}"
        )
    if len(shape) == 0:
        raise ValueError("y_pred must have rank >= 1 (the loss averages the last axis), got a scalar")
    if np.dtype(y_pred.dtype) not in SUPPORTED_DTYPES:
        raise TypeError(f"y_pred must be float32 or float64, got {np.dtype(y_pred.dtype)}")
    if y_true.dtype != y_pred.dtype:
        raise TypeError(f"y_true must have y_pred's dtype {y_pred.dtype}, got {y_true.dtype}")
    loss_shape = shape[:-1]
    n_columns = int(shape[-1])
    return loss_shape, math.prod(int(n) for n in loss_shape), n_columns


def check_output(name, out, shape, dtype):
    """Raise ``ValueError`` unless a caller-supplied output buffer fits exactly."""
    # NumPy arrays say it in flags; numba device arrays through a method.
    contiguous = out.flags.c_contiguous if isinstance(out, np.ndarray) else out.is_c_contiguous()
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or not contiguous:
        raise ValueError(
            f"{name} must be C-contiguous with shape {tuple(shape)} and dtype {dtype}, "
            f"got {tuple(out.shape)} {out.dtype}"
        )


def pair_layout(y_true, pairs):
    """Check labels and stacked embedding pairs; return ``(n_pairs, dim)``.

    ``pairs`` must have shape ``(batch, 2, dim)`` and ``y_true`` shape ``(batch,)`` or
    ``(batch, 1)``, both float32 or both float64. Raises ``ValueError`` naming both
    shapes otherwise (``TypeError`` for dtypes, as ``row_layout`` does).
    """
    if len(pairs.shape) != 3 or pairs.shape[1] != 2:
        raise ValueError(
            f"pairs must have shape (batch, 2, dim): the two embeddings of each pair stacked "
            f"on axis 1, got {tuple(pairs.shape)}"
        )
    n_pairs = int(pairs.shape[0])
    if tuple(y_true.shape) not in ((n_pairs,), (n_pairs, 1)):
        raise ValueError(
            f"y_true must have shape ({n_pairs},) or ({n_pairs}, 1), one label per pair, got "
            f"y_true {tuple(y_true.shape)} and pairs {tuple(pairs.shape)}"
        )
    if np.dtype(pairs.dtype) not in SUPPORTED_DTYPES:
        raise TypeError(f"pairs must be float32 or float64, got {np.dtype(pairs.dtype)}")
    if y_true.dtype != pairs.dtype:
        raise TypeError(f"y_true must have the pairs' dtype {pairs.dtype}, got {y_true.dtype}")
    return n_pairs, int(pairs.shape[2])


def per_class_parameter(name, value, y_pred):
    """A loss parameter given as a scalar or as one value per class (the last axis),
    returned in ``y_pred``'s dtype: a NumPy scalar, or a C-contiguous 1-D array.

    Raises ``ValueError`` naming both lengths when an array does not fit the rows.
    Values are the caller's to check; a scalar ``y_pred`` is left to ``row_layout``.
    """
    dtype = np.dtype(y_pred.dtype)
    values = np.asarray(value, dtype)
    if values.ndim == 0:
        return dtype.type(values)
    n_classes = y_pred.shape[-1] if len(y_pred.shape) else None
    if values.ndim != 1 or (n_classes is not None and values.shape[0] != n_classes):
        raise ValueError(
            f"{name} must be a scalar or have one value per class: y_pred has {n_classes} classes "
            f"(its last axis), got {name} of shape {values.shape}"
        )
    return np.ascontiguousarray(values)


def grad_scale(expected_upstream, n_losses, dtype):
    """What a launcher multiplies the gradient by when the bridge expects the upstream
    gradient ``expected_upstream`` for ``n_losses`` per-sample losses: 1 for "ones", or
    for "mean" ``1 / n_losses`` rounded to ``dtype`` as TensorFlow's and Keras's mean
    gradients compute it (one division in that dtype), so that ``ops.rescale`` finds
    the upstream equal to it."""
    dtype = np.dtype(dtype)
    if expected_upstream == "ones" or n_losses == 0:
        return dtype.type(1)
    return dtype.type(1) / dtype.type(n_losses)


def kernel_parameters(spec, values, y_pred):
    """A registered loss's parameter values as its kernel takes them: a tuple of
    numbers in ``y_pred``'s dtype, per-class ones (``spec.per_class``) as a number or a
    1-D array (see ``per_class_parameter``)."""
    dtype = np.dtype(y_pred.dtype)
    return tuple(
        per_class_parameter(name, value, y_pred) if index in spec.per_class else dtype.type(value)
        for index, (name, value) in enumerate(zip(spec.parameters, values))
    )
