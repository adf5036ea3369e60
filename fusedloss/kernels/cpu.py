"""CPU kernels: one parallel pass writes each row's loss and the gradient.

Each loss's scalar math (``math.py``) is compiled inline into one generic row kernel,
so every loss shares the same loop, chunking and reduction order. The launchers
below have the same signatures as the CUDA ones in ``cuda.py``.
"""

import os

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload, register_jitable

from . import math as scalar_math
from .layout import check_output, pair_layout, per_class_parameter, row_layout

# numba picks its threading layer at the first parallel launch, preferring TBB. OpenMP
# launches a parallel loop in ~3 us on these machines, the workqueue layer in 100-160 us
# (GUIDE.md), and a loss is called once per step, so ask for OpenMP first - unless the
# user chose a layer (NUMBA_THREADING_LAYER), which always wins.
if "NUMBA_THREADING_LAYER" not in os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

# "reassoc" lets LLVM vectorise the row sums; "contract" allows FMAs. Neither assumes
# away NaN or Inf ("nnan"/"ninf"), so non-finite inputs propagate as in TensorFlow.
FASTMATH = {"reassoc", "contract"}

# Long rows are split into chunks of this many columns so that a few very long rows
# still spread over every core. The chunking depends only on the shape, never on the
# thread count, so results are bit-identical from run to run and machine to machine.
COLUMNS_PER_TASK = 16384

# Every loss's math calls it to keep float32 math in float32.
register_jitable(scalar_math._like)


def _row_kernel(elementwise):
    """Compile ``elementwise(label, prediction, column, params) -> (value, slope)`` into
    ``kernel(y_true, y_pred, params, inv_n, grad_factor, loss_out, grad_out)`` over 2-D
    arrays.

    ``loss_out[r] = inv_n * sum_c value[r, c]`` and ``grad_out[r, c] = grad_factor *
    slope[r, c]`` (``inv_n`` times the launcher's ``grad_scale``). ``grad_out=None``
    compiles a loss-only kernel that never touches gradient memory.
    """
    element = njit(inline="always", fastmath=FASTMATH)(elementwise)

    @njit(parallel=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(y_true, y_pred, params, inv_n, grad_factor, loss_out, grad_out):
        n_rows, n_columns = y_pred.shape
        zero = inv_n - inv_n  # 0 in the arrays' dtype, so sums stay in that dtype
        n_chunks = (n_columns + COLUMNS_PER_TASK - 1) // COLUMNS_PER_TASK
        if n_columns == 1:
            # (batch, 1), the usual shape of a Keras target: one loop over every element,
            # which LLVM vectorises (it cannot vectorise the row loop below). The mean
            # of one value is the value: inv_n is 1.
            for row in prange(n_rows):
                value, slope = element(y_true[row, 0], y_pred[row, 0], 0, params)
                loss_out[row] = value
                if grad_out is not None:
                    grad_out[row, 0] = slope * grad_factor
        elif n_chunks <= 1:
            for row in prange(n_rows):
                total = zero
                for column in range(n_columns):
                    value, slope = element(y_true[row, column], y_pred[row, column], column, params)
                    total += value
                    if grad_out is not None:
                        grad_out[row, column] = slope * grad_factor
                loss_out[row] = total * inv_n
        else:
            partial = np.empty(n_rows * n_chunks, dtype=loss_out.dtype)
            for task in prange(n_rows * n_chunks):
                row = task // n_chunks
                first = (task % n_chunks) * COLUMNS_PER_TASK
                last = min(first + COLUMNS_PER_TASK, n_columns)
                total = zero
                for column in range(first, last):
                    value, slope = element(y_true[row, column], y_pred[row, column], column, params)
                    total += value
                    if grad_out is not None:
                        grad_out[row, column] = slope * grad_factor
                partial[task] = total
            for row in prange(n_rows):
                total = zero
                for chunk in range(n_chunks):
                    total += partial[row * n_chunks + chunk]
                loss_out[row] = total * inv_n

    return kernel


def _outputs(loss_out, loss_shape, with_grad, grad_out, grad_shape, dtype):
    """The arrays the kernel writes: the given ones, checked, or new ones; no gradient
    (None) unless ``with_grad``."""
    if loss_out is None:
        loss_out = np.empty(loss_shape, dtype)
    check_output("loss_out", loss_out, loss_shape, dtype)
    if not with_grad:
        return loss_out, None
    if grad_out is None:
        grad_out = np.empty(grad_shape, dtype)
    check_output("grad_out", grad_out, grad_shape, dtype)
    return loss_out, grad_out


def run_rows(kernel, y_true, y_pred, params, with_grad, loss_out, grad_out, grad_scale=1.0):
    """Validate, allocate what the caller did not supply, and run a row kernel.

    Returns ``(loss, grad)`` shaped like the inputs' leading axes and like the inputs;
    ``grad`` is None when ``with_grad`` is False. Inputs are only read; non-contiguous
    inputs are copied to contiguous ones first. The gradient is multiplied by
    ``grad_scale`` as it is written (see ``huber``).
    """
    loss_shape, n_rows, n_columns = row_layout(y_true, y_pred)
    dtype = y_pred.dtype
    loss_out, grad_out = _outputs(loss_out, loss_shape, with_grad, grad_out, y_pred.shape, dtype)
    if n_columns == 0:
        # The mean of nothing is NaN, as in Keras; there is no gradient to write.
        loss_out[...] = np.nan
        return loss_out, grad_out
    rows = (n_rows, n_columns)
    inv_n = dtype.type(1.0 / n_columns)
    kernel(
        np.ascontiguousarray(y_true).reshape(rows),
        np.ascontiguousarray(y_pred).reshape(rows),
        params,
        inv_n,
        inv_n * dtype.type(grad_scale),
        loss_out.reshape(n_rows),
        None if grad_out is None else grad_out.reshape(rows),
    )
    return loss_out, grad_out


_huber_rows = _row_kernel(scalar_math.huber)


def huber(y_true, y_pred, delta=1.0, *, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0):
    """Per-row Huber loss (mean over the last axis) and its gradient w.r.t. ``y_pred``.

    ``y_true`` and ``y_pred``: float32 or float64 arrays of one shape, rank >= 1.
    ``loss_out``/``grad_out``: optional C-contiguous buffers to write into.
    ``grad_scale``: the gradient is written already multiplied by it (the bridge passes
    the upstream gradient it expects, so that its backward pass has nothing to do).
    Returns ``(loss, grad)``; ``grad`` is None when ``with_grad`` is False.
    """
    params = (y_pred.dtype.type(delta),)
    return run_rows(_huber_rows, y_true, y_pred, params, with_grad, loss_out, grad_out, grad_scale)


_contrastive_rows = _row_kernel(scalar_math.contrastive)


def contrastive(y_true, y_pred, margin=1.0, *, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0):
    """Per-row contrastive loss of distances (mean over the last axis) and its gradient
    w.r.t. the distances ``y_pred``; ``y_true = 1`` marks a similar pair. Same contract
    as ``huber``."""
    params = (y_pred.dtype.type(margin),)
    return run_rows(_contrastive_rows, y_true, y_pred, params, with_grad, loss_out, grad_out, grad_scale)


# ---------------------------------------------------------------------------------
# Contrastive loss fused from the two embeddings of each pair: a reduction over the
# embedding axis, then the gradient of both embeddings, so it has its own kernel.

# Per-pair scalar work and the gradient loop are compiled without "reassoc": it
# would let LLVM reorder (label * d) * d into label * (d * d), NaN where d**2
# overflows, and hoist slope * inv_scale * inv_norm out of the gradient loop, a
# product that can overflow where slope times the bounded unit direction cannot.
# Only the sum of squares needs "reassoc" (to vectorise).
ORDERED_FASTMATH = {"contract"}
_pair_distance = njit(inline="always", fastmath=ORDERED_FASTMATH)(scalar_math.pair_distance)
_contrastive_element = njit(inline="always", fastmath=ORDERED_FASTMATH)(scalar_math.contrastive)


@njit(fastmath=ORDERED_FASTMATH, error_model="numpy")
def _pair_loss(label, squared_distance, pairs, pair, params):
    distance, inv_scale, inv_norm = _pair_distance(squared_distance, pairs, pair)
    value, slope = _contrastive_element(label, distance, 0, params)
    return value, slope, inv_scale, inv_norm


@njit(fastmath=ORDERED_FASTMATH, error_model="numpy")
def _write_pair_gradient(pairs, pair, slope, inv_scale, inv_norm, grad_out):
    # dL/da = dL/dd * (a - b) / d ; dL/db = -dL/da
    for k in range(pairs.shape[2]):
        unit = ((float(pairs[pair, 0, k]) - float(pairs[pair, 1, k])) * inv_scale) * inv_norm
        slope_a = slope * unit
        grad_out[pair, 0, k] = slope_a
        grad_out[pair, 1, k] = -slope_a


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy")
def _embedding_contrastive_pairs(labels, pairs, params, grad_scale, loss_out, grad_out):
    # Everything is computed in float64: a float32 difference squared can neither
    # underflow nor overflow there, so float32 pairs never need the rescaled path
    # except at distance 0.
    for pair in prange(pairs.shape[0]):
        squared_distance = 0.0
        for k in range(pairs.shape[2]):
            difference = float(pairs[pair, 0, k]) - float(pairs[pair, 1, k])
            squared_distance += difference * difference
        value, slope, inv_scale, inv_norm = _pair_loss(float(labels[pair]), squared_distance, pairs, pair, params)
        loss_out[pair] = value
        if grad_out is not None:
            _write_pair_gradient(pairs, pair, slope * grad_scale, inv_scale, inv_norm, grad_out)


def run_pairs(kernel, y_true, pairs, params, with_grad, loss_out, grad_out, grad_scale=1.0):
    """``run_rows`` for kernels over ``(batch, 2, dim)`` pairs: loss shape ``(batch,)``."""
    n_pairs, _ = pair_layout(y_true, pairs)
    loss_out, grad_out = _outputs(loss_out, (n_pairs,), with_grad, grad_out, pairs.shape, pairs.dtype)
    labels = np.ascontiguousarray(y_true).reshape(n_pairs)
    kernel(labels, np.ascontiguousarray(pairs), params, float(grad_scale), loss_out, grad_out)
    return loss_out, grad_out


def embedding_contrastive(y_true, pairs, margin=1.0, *, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0):
    """Per-pair contrastive loss of ``d = ||pairs[:, 0] - pairs[:, 1]||`` and its
    gradient w.r.t. ``pairs``, in one pass.

    ``y_true``: ``(batch,)`` or ``(batch, 1)``, 1 for a similar pair; ``pairs``:
    ``(batch, 2, dim)``, the same float dtype. At ``d = 0`` the gradient is 0 (see
    ``math.pair_distance``). Returns ``(loss, grad)`` of shapes ``(batch,)`` and
    ``pairs.shape``; ``grad`` is None when ``with_grad`` is False; ``grad_scale`` as in
    ``huber``.
    """
    params = (float(margin),)
    return run_pairs(_embedding_contrastive_pairs, y_true, pairs, params, with_grad, loss_out, grad_out, grad_scale)


# ---------------------------------------------------------------------------------
# The backward pass of every fused loss: the saved gradient times the upstream one.


@njit(parallel=True, error_model="numpy")
def _scale_rows(factors, grad, out):
    n_rows, n_columns = grad.shape
    if n_columns == 1:
        for row in prange(n_rows):  # one loop over all elements, so that it vectorises
            out[row, 0] = factors[row] * grad[row, 0]
    else:
        for row in prange(n_rows):
            factor = factors[row]
            for column in range(n_columns):
                out[row, column] = factor * grad[row, column]


def scale_rows(factors, grad, out=None):
    """``factors[..., None, ...] * grad`` into ``out``: ``factors`` has the shape of
    ``grad``'s leading axes (a loss's shape), one factor per loss element.

    The bridge's backward pass. Written here rather than as a TensorFlow multiply
    because TensorFlow allocates a fresh output for every step, and on these machines
    the first write to fresh memory costs several times the multiply itself; ``out``
    can be a reused buffer.
    """
    if grad.shape[: factors.ndim] != factors.shape or factors.dtype != grad.dtype:
        raise ValueError(
            f"factors must have grad's leading shape and dtype, got factors {factors.shape} {factors.dtype} "
            f"and grad {grad.shape} {grad.dtype}"
        )
    if out is None:
        out = np.empty(grad.shape, grad.dtype)
    check_output("out", out, grad.shape, grad.dtype)
    n_rows = factors.size
    if n_rows and grad.size:
        rows = (n_rows, grad.size // n_rows)
        _scale_rows(np.ascontiguousarray(factors).reshape(n_rows), np.ascontiguousarray(grad).reshape(rows), out.reshape(rows))
    return out


# ---------------------------------------------------------------------------------
# Weighted sigmoid cross-entropy

# The element functions call these helpers by name; numba needs to know how to compile
# them. The float32 approximations get "contract" only: their error analysis rests on
# the rounding of each operation (Fast2Sum, the split ln 2), which "reassoc" would
# let LLVM rearrange.
for _helper in (scalar_math._exp, scalar_math._log1p_unit):
    register_jitable(_helper)
for _approximation in (
    scalar_math.exp_float32,
    scalar_math.log1p_float32,
    scalar_math.log1p_unit_float32,
    scalar_math._log_float32,
):
    register_jitable(fastmath={"contract"})(_approximation)


@overload(scalar_math._class_weight, inline="always")
def _class_weight(weights, column):
    if isinstance(weights, types.Array):
        return lambda weights, column: weights[column]
    return lambda weights, column: weights


# One kernel; numba compiles it once for a scalar pos_weight and once for an array.
_weighted_sigmoid_cross_entropy_rows = _row_kernel(scalar_math.weighted_sigmoid_cross_entropy)


def weighted_sigmoid_cross_entropy(
    y_true, y_pred, pos_weight=1.0, label_smoothing=0.0, *, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0
):
    """Per-row weighted sigmoid cross-entropy with logits (mean over the last axis) and
    its gradient w.r.t. the logits ``y_pred``.

    ``pos_weight``: a scalar, or one weight per class (the last axis). The float32
    kernel uses the vectorisable ``exp``/``log1p`` of ``math.py`` (relative error
    below 1e-7 each); the float64 one libm's. Otherwise the contract of ``huber``.
    """
    pos_weight = per_class_parameter("pos_weight", pos_weight, y_pred)
    params = (pos_weight, y_pred.dtype.type(label_smoothing))
    return run_rows(
        _weighted_sigmoid_cross_entropy_rows, y_true, y_pred, params, with_grad, loss_out, grad_out, grad_scale
    )

# Softmax cross-entropies (issue 11): their own module, found here by name.
from .softmax_cpu import categorical_focal_cross_entropy, softmax_cross_entropy, sparse_softmax_cross_entropy  # noqa: E402,F401
