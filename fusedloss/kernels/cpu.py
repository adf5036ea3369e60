"""CPU kernels: one parallel pass writes each row's loss and the gradient.

Each loss's scalar math (``math.py``) is compiled inline into one generic row kernel,
so every loss shares the same loop, chunking and reduction order. The launchers
below have the same signatures as the CUDA ones in ``cuda.py``.
"""

import os

import numba
import numpy as np
from numba import njit, prange

from . import math as scalar_math
from .layout import check_output, row_layout

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


def _row_kernel(elementwise):
    """Compile ``elementwise(label, prediction, column, params) -> (value, slope)`` into
    ``kernel(y_true, y_pred, params, inv_n, loss_out, grad_out)`` over 2-D arrays.

    ``loss_out[r] = inv_n * sum_c value[r, c]`` and ``grad_out[r, c] = inv_n *
    slope[r, c]``. ``grad_out=None`` compiles a loss-only kernel that never touches
    gradient memory.
    """
    element = njit(inline="always", fastmath=FASTMATH)(elementwise)

    @njit(parallel=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(y_true, y_pred, params, inv_n, loss_out, grad_out):
        n_rows, n_columns = y_pred.shape
        zero = inv_n - inv_n  # 0 in the arrays' dtype, so sums stay in that dtype
        n_chunks = (n_columns + COLUMNS_PER_TASK - 1) // COLUMNS_PER_TASK
        if n_chunks <= 1:
            for row in prange(n_rows):
                total = zero
                for column in range(n_columns):
                    value, slope = element(y_true[row, column], y_pred[row, column], column, params)
                    total += value
                    if grad_out is not None:
                        grad_out[row, column] = slope * inv_n
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
                        grad_out[row, column] = slope * inv_n
                partial[task] = total
            for row in prange(n_rows):
                total = zero
                for chunk in range(n_chunks):
                    total += partial[row * n_chunks + chunk]
                loss_out[row] = total * inv_n

    return kernel


def run_rows(kernel, y_true, y_pred, params, with_grad, loss_out, grad_out):
    """Validate, allocate what the caller did not supply, and run a row kernel.

    Returns ``(loss, grad)`` shaped like the inputs' leading axes and like the inputs;
    ``grad`` is None when ``with_grad`` is False. Inputs are only read; non-contiguous
    inputs are copied to contiguous ones first.
    """
    loss_shape, n_rows, n_columns = row_layout(y_true, y_pred)
    dtype = y_pred.dtype
    if loss_out is None:
        loss_out = np.empty(loss_shape, dtype)
    check_output("loss_out", loss_out, loss_shape, dtype)
    if with_grad:
        if grad_out is None:
            grad_out = np.empty(y_pred.shape, dtype)
        check_output("grad_out", grad_out, y_pred.shape, dtype)
    else:
        grad_out = None
    if n_columns == 0:
        # The mean of nothing is NaN, as in Keras; there is no gradient to write.
        loss_out[...] = np.nan
        return loss_out, grad_out
    rows = (n_rows, n_columns)
    kernel(
        np.ascontiguousarray(y_true).reshape(rows),
        np.ascontiguousarray(y_pred).reshape(rows),
        params,
        dtype.type(1.0 / n_columns),
        loss_out.reshape(n_rows),
        None if grad_out is None else grad_out.reshape(rows),
    )
    return loss_out, grad_out


_huber_rows = _row_kernel(scalar_math.huber)


def huber(y_true, y_pred, delta=1.0, *, with_grad=True, loss_out=None, grad_out=None):
    """Per-row Huber loss (mean over the last axis) and its gradient w.r.t. ``y_pred``.

    ``y_true`` and ``y_pred``: float32 or float64 arrays of one shape, rank >= 1.
    ``loss_out``/``grad_out``: optional C-contiguous buffers to write into.
    Returns ``(loss, grad)``; ``grad`` is None when ``with_grad`` is False.
    """
    params = (y_pred.dtype.type(delta),)
    return run_rows(_huber_rows, y_true, y_pred, params, with_grad, loss_out, grad_out)
