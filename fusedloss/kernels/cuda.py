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
from numba.cuda.extending import register_jitable

from . import math as scalar_math
from .layout import check_output, pair_layout, row_layout

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


def _row_example_arguments(make_params):
    return lambda dtype, with_grad: _example_arguments(dtype, make_params(dtype), with_grad)


# name -> (kernels, (dtype, with_grad) -> example arguments): what compile_all_ptx
# compiles. Each loss registers its kernels below its launcher.
PTX_KERNELS = {"huber": (_huber_kernels, _row_example_arguments(lambda dtype: (dtype.type(1.0),)))}


def compile_all_ptx(cc=(8, 0), names=None):
    """Compile every kernel (or those of the losses in ``names``) for float32 and
    float64 to PTX, without needing a GPU.

    Returns ``{(name, dtype_name, with_grad): ptx}``. Needs NVVM (the CUDA toolkit or
    ``numba-cuda[cu12|cu13]``), not a device; raises what numba raises otherwise.
    """
    compiled = {}
    with _device_functions_compiled_for(cc):
        for name, (kernels, make_arguments) in PTX_KERNELS.items():
            if names is not None and name not in names:
                continue
            for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
                for with_grad, kernel in zip((True, False), kernels):
                    args = make_arguments(dtype, with_grad)
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
# Contrastive loss of distances: the row kernel.

_contrastive_kernels = _kernels(scalar_math.contrastive)
PTX_KERNELS["contrastive"] = (_contrastive_kernels, _row_example_arguments(lambda dtype: (dtype.type(1.0),)))


def contrastive(y_true, y_pred, margin=1.0, *, with_grad=True, loss_out=None, grad_out=None):
    """Per-row contrastive loss of distances on the GPU; see ``cpu.contrastive``."""
    params = (np.dtype(y_pred.dtype).type(margin),)
    return run_rows(_contrastive_kernels, y_true, y_pred, params, with_grad, loss_out, grad_out)


# ---------------------------------------------------------------------------------
# Contrastive loss fused from the two embeddings of each pair.
#
# One block owns a pair at a time (grid-stride over pairs). Its threads stride over
# the embedding axis summing squared differences into shared memory; after the
# reduction thread 0 turns the sum into the distance, the loss and the factors of the
# gradient (math.pair_distance, math.contrastive) and shares them; then every thread
# writes its slice of both gradients. Everything is computed in float64, like the
# row sums above; for float32 pairs that also rules out underflow (see cpu.py).


def _pair_kernel(pair_distance, element, with_grad):
    @cuda.jit
    def kernel(labels, pairs, params, loss_out, grad_out):
        partial = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
        # slope, inv_scale, inv_norm of the block's current pair, from thread 0
        factors = cuda.shared.array(3, numba.float64)
        thread = cuda.threadIdx.x
        threads = cuda.blockDim.x
        n_pairs, _, dim = pairs.shape
        for pair in range(cuda.blockIdx.x, n_pairs, cuda.gridDim.x):
            total = 0.0
            for k in range(thread, dim, threads):
                difference = float(pairs[pair, 0, k]) - float(pairs[pair, 1, k])
                total += difference * difference
            partial[thread] = total
            cuda.syncthreads()
            step = threads // 2
            while step > 0:
                if thread < step:
                    partial[thread] += partial[thread + step]
                cuda.syncthreads()
                step //= 2
            if thread == 0:
                distance, inv_scale, inv_norm = pair_distance(partial[0], pairs, pair)
                value, slope = element(float(labels[pair]), distance, 0, params)
                loss_out[pair] = value
                factors[0] = slope
                factors[1] = inv_scale
                factors[2] = inv_norm
            # Every thread needs the factors; and no thread may start the next pair's
            # sum in partial[] before thread 0 has read this one's. The next write to
            # factors comes after the next pair's reduction, which every thread joins
            # only once done reading them.
            cuda.syncthreads()
            if with_grad:
                slope = factors[0]
                inv_scale = factors[1]
                inv_norm = factors[2]
                for k in range(thread, dim, threads):
                    # dL/da = dL/dd * (a - b) / d ; dL/db = -dL/da
                    unit = ((float(pairs[pair, 0, k]) - float(pairs[pair, 1, k])) * inv_scale) * inv_norm
                    slope_a = slope * unit
                    grad_out[pair, 0, k] = slope_a
                    grad_out[pair, 1, k] = -slope_a

    return kernel


def _pair_kernels(elementwise):
    pair_distance = register_jitable(inline="always")(scalar_math.pair_distance)
    element = register_jitable(inline="always")(elementwise)
    return _pair_kernel(pair_distance, element, with_grad=True), _pair_kernel(pair_distance, element, with_grad=False)


def _threads_for(dim):
    """THREADS_PER_BLOCK, halved while half the threads would still cover ``dim``
    (a 128-wide embedding needs 128 threads, not 256), but at least a warp."""
    threads = THREADS_PER_BLOCK
    while threads > 32 and threads // 2 >= dim:
        threads //= 2
    return threads


def run_pairs(kernels, y_true, pairs, params, with_grad, loss_out, grad_out):
    """``run_rows`` for kernels over ``(batch, 2, dim)`` pairs: loss shape ``(batch,)``."""
    n_pairs, dim = pair_layout(y_true, pairs)
    dtype = np.dtype(pairs.dtype)
    on_host = not _on_device(pairs)
    threads = _threads_for(dim)
    if threads < 1 or threads > MAX_THREADS_PER_BLOCK or threads & (threads - 1):
        raise ValueError(f"THREADS_PER_BLOCK must be a power of two <= {MAX_THREADS_PER_BLOCK}, got {threads}")

    def output(name, given, shape):
        if given is None:
            return cuda.device_array(shape, dtype)
        check_output(name, given, shape, dtype)
        return _as_device(given) if on_host else cuda.as_cuda_array(given)

    loss_device = output("loss_out", loss_out, (n_pairs,))
    grad_device = output("grad_out", grad_out, tuple(pairs.shape)) if with_grad else None
    if n_pairs > 0:
        kernel = kernels[0] if with_grad else kernels[1]
        kernel[min(n_pairs, MAX_BLOCKS), threads](
            _as_device(y_true).reshape(n_pairs),
            _as_device(pairs),
            params,
            loss_device,
            grad_device if with_grad else loss_device,
        )
    if not on_host:
        return loss_device, grad_device
    loss = loss_device.copy_to_host(loss_out) if loss_out is not None else loss_device.copy_to_host()
    grad = None
    if with_grad:
        grad = grad_device.copy_to_host(grad_out) if grad_out is not None else grad_device.copy_to_host()
    return loss, grad


_embedding_contrastive_kernels = _pair_kernels(scalar_math.contrastive)


def _pair_example_arguments(dtype, with_grad):
    pairs = np.zeros((2, 2, 3), dtype)
    loss = np.zeros(2, dtype)
    return (loss, pairs, (1.0,), loss, pairs if with_grad else loss)


PTX_KERNELS["embedding_contrastive"] = (_embedding_contrastive_kernels, _pair_example_arguments)


def embedding_contrastive(y_true, pairs, margin=1.0, *, with_grad=True, loss_out=None, grad_out=None):
    """Per-pair contrastive loss of two embeddings, and its gradient w.r.t. both, on
    the GPU; see ``cpu.embedding_contrastive`` for the contract."""
    params = (float(margin),)
    return run_pairs(_embedding_contrastive_kernels, y_true, pairs, params, with_grad, loss_out, grad_out)


__all__ = ["huber", "contrastive", "embedding_contrastive", "compile_all_ptx", "THREADS_PER_BLOCK"]
