"""CUDA kernels: the same contract and launcher signatures as ``cpu.py``.

One block owns a row at a time (grid-stride over rows): its threads stride over the
row's columns, write the gradient as they go, and sum the row's loss in shared
memory (a tree reduction, not warp shuffles, so the CUDA simulator runs it too).
Each loss's scalar math comes from ``math.py``, compiled as a device function.

Launchers accept NumPy arrays (copied to the device and the results back, which is
what the tests and the simulator use) or device arrays (anything with
``__cuda_array_interface__``: numba, CuPy, PyTorch), which stay on the device.
"""


import contextlib
import types

import numba
import numpy as np
from numba import cuda
from numba.cuda.extending import overload, register_jitable
from numba.cuda.extending import types as numba_types

from . import math as scalar_math
from .layout import check_output, per_class_parameter, row_layout

# Threads per block: a power of two, at most MAX_THREADS_PER_BLOCK (the size of the
# shared reduction buffer). Tests under the simulator lower it; each simulated thread
# is a Python thread.
THREADS_PER_BLOCK = 256
MAX_THREADS_PER_BLOCK = 1024
# Enough blocks to fill any current GPU several times over; rows beyond it are
# picked up by the grid-stride loop.
MAX_BLOCKS = 8192


def _row_kernel(element, with_grad):
    """Compile ``element`` into ``kernel(y_true, y_pred, params, inv_n, loss_out,
    grad_out)`` over 2-D arrays; ``with_grad=False`` never touches ``grad_out``."""

    @cuda.jit
    def kernel(y_true, y_pred, params, inv_n, loss_out, grad_out):
        # Row sums are kept in float64 whatever the input dtype: one add per element
        # is free next to the memory traffic, and the result no longer depends on how
        # the columns were split among threads beyond float64 rounding.
        partial = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
        thread = cuda.threadIdx.x
        threads = cuda.blockDim.x
        n_rows, n_columns = y_pred.shape
        for row in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
            total = 0.0
            for column in range(thread, n_columns, threads):
                value, slope = element(y_true[row, column], y_pred[row, column], column, params)
                total += value
                if with_grad:
                    grad_out[row, column] = slope * inv_n
            partial[thread] = total
            cuda.syncthreads()
            step = threads // 2
            while step > 0:
                if thread < step:
                    partial[thread] += partial[thread + step]
                cuda.syncthreads()
                step //= 2
            if thread == 0:
                loss_out[row] = partial[0] * inv_n
            # Nobody may overwrite partial[] for the next row before thread 0 read it.
            cuda.syncthreads()

    return kernel


def _on_device(array):
    return hasattr(array, "__cuda_array_interface__")


def _as_device(array):
    if _on_device(array):
        return cuda.as_cuda_array(array)
    return cuda.to_device(np.ascontiguousarray(array))


def run_rows(kernels, y_true, y_pred, params, with_grad, loss_out, grad_out):
    """Validate, move host inputs to the device, launch, and return ``(loss, grad)``.

    Host inputs give host outputs; device inputs give device outputs. ``kernels`` is
    the ``(with_grad, loss_only)`` pair of a loss.
    """
    loss_shape, n_rows, n_columns = row_layout(y_true, y_pred)
    dtype = np.dtype(y_pred.dtype)
    on_host = not _on_device(y_pred)
    threads = THREADS_PER_BLOCK
    if threads < 1 or threads > MAX_THREADS_PER_BLOCK or threads & (threads - 1):
        raise ValueError(f"THREADS_PER_BLOCK must be a power of two <= {MAX_THREADS_PER_BLOCK}, got {threads}")

    def output(name, given, shape):
        if given is None:
            return cuda.device_array(shape, dtype)
        check_output(name, given, shape, dtype)
        return _as_device(given) if on_host else cuda.as_cuda_array(given)

    loss_device = output("loss_out", loss_out, loss_shape)
    grad_device = output("grad_out", grad_out, tuple(y_pred.shape)) if with_grad else None
    if n_columns == 0:
        loss_device = cuda.to_device(np.full(loss_shape, np.nan, dtype))
    elif n_rows > 0:
        rows = (n_rows, n_columns)
        blocks = min(n_rows, MAX_BLOCKS)
        kernel = kernels[0] if with_grad else kernels[1]
        kernel[blocks, threads](
            _as_device(y_true).reshape(rows),
            _as_device(y_pred).reshape(rows),
            params,
            dtype.type(1.0 / n_columns),
            loss_device.reshape(n_rows),
            (grad_device if with_grad else loss_device).reshape(rows if with_grad else n_rows),
        )
    if not on_host:
        return loss_device, grad_device
    loss = loss_device.copy_to_host(loss_out) if loss_out is not None else loss_device.copy_to_host()
    grad = None
    if with_grad:
        grad = grad_device.copy_to_host(grad_out) if grad_out is not None else grad_device.copy_to_host()
    return loss, grad


def _kernels(elementwise):
    # register_jitable, not cuda.jit(device=True): a device dispatcher asks the driver
    # for the current GPU when it compiles, which would stop compile_ptx on a machine
    # without one. The simulator simply calls the Python function.
    element = register_jitable(inline="always")(elementwise)
    return _row_kernel(element, with_grad=True), _row_kernel(element, with_grad=False)


_huber_kernels = _kernels(scalar_math.huber)


def huber(y_true, y_pred, delta=1.0, *, with_grad=True, loss_out=None, grad_out=None):
    """Per-row Huber loss and gradient on the GPU; see ``cpu.huber`` for the contract."""
    params = (np.dtype(y_pred.dtype).type(delta),)
    return run_rows(_huber_kernels, y_true, y_pred, params, with_grad, loss_out, grad_out)


def _example_arguments(dtype, params, with_grad):
    rows = np.zeros((2, 3), dtype)
    loss = np.zeros(2, dtype)
    return (rows, rows, params, dtype.type(1.0), loss, rows if with_grad else loss)


def compile_all_ptx(cc=(8, 0)):
    """Compile every kernel for float32 and float64 to PTX, without needing a GPU.

    Returns ``{(name, dtype_name, with_grad): ptx}``. Needs NVVM (the CUDA toolkit or
    ``numba-cuda[cu12|cu13]``), not a device; raises what numba raises otherwise.
    """
    loss_params = {
        "huber": (_huber_kernels, lambda dtype: (dtype.type(1.0),)),
        "weighted_sigmoid_cross_entropy": (
            _weighted_sigmoid_cross_entropy_kernels,
            lambda dtype: (dtype.type(2.0), dtype.type(0.1)),
        ),
        "weighted_sigmoid_cross_entropy[per-class]": (
            _weighted_sigmoid_cross_entropy_kernels,
            lambda dtype: (np.ones(3, dtype), dtype.type(0.1)),
        ),
    }
    compiled = {}
    with _device_functions_compiled_for(cc):
        for name, (kernels, make_params) in loss_params.items():
            for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
                for with_grad, kernel in zip((True, False), kernels):
                    args = _example_arguments(dtype, make_params(dtype), with_grad)
                    signature = tuple(numba.typeof(arg) for arg in args)
                    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
                    compiled[(name, dtype.name, with_grad)] = ptx
    return compiled


@contextlib.contextmanager
def _device_functions_compiled_for(cc):
    """numba-cuda 0.30 compiles device functions for the *current device's* compute
    capability even inside ``compile_ptx``, which fails without a GPU. Where none is
    present, answer that question with ``cc`` for the duration."""
    if cuda.is_available():
        yield
        return
    from numba.cuda import dispatcher

    real = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = real


# ---------------------------------------------------------------------------------
# Weighted sigmoid cross-entropy

# The element function calls these helpers by name. The float32 exp/log1p
# approximations are kept on the GPU too, rather than libdevice's expf/log1pf: the
# kernel is memory-bound there, so their few extra FMAs cost nothing; they are more
# accurate than libdevice's documented 2 ulp; and the simulator then runs exactly the
# math the GPU runs, and CPU and GPU agree to rounding.
for _helper in (
    scalar_math._like,
    scalar_math._exp,
    scalar_math._log1p_unit,
    scalar_math.exp_float32,
    scalar_math.log1p_float32,
    scalar_math.log1p_unit_float32,
    scalar_math._log_float32,
):
    register_jitable(_helper)


@overload(scalar_math._class_weight, inline="always")
def _class_weight(weights, column):
    if isinstance(weights, numba_types.Array):
        return lambda weights, column: weights[column]
    return lambda weights, column: weights


_weighted_sigmoid_cross_entropy_kernels = _kernels(scalar_math.weighted_sigmoid_cross_entropy)


def weighted_sigmoid_cross_entropy(
    y_true, y_pred, pos_weight=1.0, label_smoothing=0.0, *, with_grad=True, loss_out=None, grad_out=None
):
    """Per-row weighted sigmoid cross-entropy and gradient on the GPU; see
    ``cpu.weighted_sigmoid_cross_entropy`` for the contract."""
    dtype = np.dtype(y_pred.dtype)
    pos_weight = per_class_parameter("pos_weight", pos_weight, y_pred)
    if pos_weight.ndim:
        pos_weight = cuda.to_device(pos_weight)
    params = (pos_weight, dtype.type(label_smoothing))
    return run_rows(_weighted_sigmoid_cross_entropy_kernels, y_true, y_pred, params, with_grad, loss_out, grad_out)


__all__ = ["huber", "weighted_sigmoid_cross_entropy", "compile_all_ptx", "THREADS_PER_BLOCK"]
