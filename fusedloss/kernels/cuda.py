"""CUDA kernels: the same contract and launcher signatures as ``cpu.py``.

A row is summed by a *group* of ``threads_per_row`` threads (a power of two): the
group strides over the row's columns, writes the gradient as it goes, and sums the
row's loss in shared memory (a tree reduction, not warp shuffles, so the CUDA
simulator runs it too). A block holds ``THREADS_PER_BLOCK / threads_per_row`` groups,
and blocks stride over the rows. The launcher picks the group size from the row
length, so one kernel covers three launch shapes:

- short rows (``n_columns`` below the block size): groups as small as the rows, so
  that every thread has an element and a block reads many consecutive rows (one
  thread per row for ``n_columns == 1``) instead of leaving all but a few idle;
- long rows: one group per block (block-per-row);
- long rows, but too few of them to fill the GPU: each row is split into chunks that
  separate blocks sum; a second, small kernel adds the chunks of each row in order.

The split depends only on the shape and on the constants below, never on the
device, so a result is the same on every GPU.

Each loss's scalar math comes from ``math.py``, compiled as a device function.

Launchers accept NumPy arrays (copied to the device and the results back, which is
what the tests and the simulator use) or device arrays (numba device arrays, or
anything with ``__cuda_array_interface__``: CuPy, PyTorch), which stay on the device.
"""


import contextlib
import functools
import types
from typing import NamedTuple

import numba
import numpy as np
from numba import cuda
from numba.cuda.cudadrv.devicearray import is_cuda_ndarray
from numba.cuda import libdevice
from numba.cuda.extending import overload, register_jitable
from numba.cuda.extending import types as numba_types

from . import math as scalar_math
from . import primitives, registry
from .layout import check_output, kernel_parameters, pair_layout, row_layout

# Threads per block: a power of two, at most MAX_THREADS_PER_BLOCK (the size of the
# shared reduction buffer). Tests under the simulator lower it; each simulated thread
# is a Python thread.
THREADS_PER_BLOCK = 256
MAX_THREADS_PER_BLOCK = 1024
# Enough blocks to fill any current GPU several times over; rows beyond it are
# picked up by the grid-stride loop.
MAX_BLOCKS = 8192
# Rows are split into chunks when fewer than this many blocks would be busy: a few
# blocks per multiprocessor on the largest GPUs (132 on an H100).
MIN_BLOCKS = 1024
# A chunk gives each thread of its group at least this many elements, so that the
# reduction at its end stays small next to the reading.
MIN_COLUMNS_PER_THREAD = 8
# The most threads that share one row (a power of two). By default a whole block;
# lower, long rows are summed by several groups per block. Not tuned on hardware
# yet: benchmarks/gpu/run_gpu.py times the choices.
MAX_THREADS_PER_ROW = MAX_THREADS_PER_BLOCK

# Every loss's math calls it to keep float32 math in float32.
register_jitable(scalar_math._like)


class LaunchShape(NamedTuple):
    """How a ``(n_rows, n_columns)`` problem is spread over the GPU."""

    threads_per_row: int  # a power of two, at most THREADS_PER_BLOCK and MAX_THREADS_PER_ROW
    columns_per_chunk: int  # n_columns unless long rows are split
    chunks_per_row: int
    blocks: int


def launch_shape(n_rows, n_columns):
    """The launch shape the launchers use for ``n_rows`` rows of ``n_columns`` (> 0)."""
    threads = THREADS_PER_BLOCK
    if threads < 1 or threads > MAX_THREADS_PER_BLOCK or threads & (threads - 1):
        raise ValueError(f"THREADS_PER_BLOCK must be a power of two <= {MAX_THREADS_PER_BLOCK}, got {threads}")
    widest = min(threads, MAX_THREADS_PER_ROW)
    if widest < 1 or widest & (widest - 1):
        raise ValueError(f"MAX_THREADS_PER_ROW must be a power of two, got {MAX_THREADS_PER_ROW}")
    threads_per_row = min(widest, 1 << (n_columns - 1).bit_length())
    rows_per_block = threads // threads_per_row
    chunks = 1
    if threads_per_row == widest and n_rows < MIN_BLOCKS * rows_per_block:
        # Long rows, too few of them: split each so that MIN_BLOCKS blocks have work.
        chunks = min(-(-MIN_BLOCKS * rows_per_block // n_rows), n_columns // (widest * MIN_COLUMNS_PER_THREAD))
        chunks = max(chunks, 1)
    columns_per_chunk = -(-n_columns // chunks)
    chunks = -(-n_columns // columns_per_chunk)  # no empty chunk at the end
    blocks = min(-(-n_rows * chunks // rows_per_block), MAX_BLOCKS)
    return LaunchShape(threads_per_row, columns_per_chunk, chunks, blocks)


def _sum_groups(partial, thread, lane, width, value):
    """Shared-memory tree reduction: every thread of a block brings ``value``; afterwards
    ``partial[thread - lane]`` holds the sum of its group of ``width`` threads (a power
    of two; ``lane`` is the thread's place in its group). Every thread of the block must
    call it: it synchronises the block."""
    partial[thread] = value
    cuda.syncthreads()
    step = width // 2
    while step > 0:
        if lane < step:
            partial[thread] += partial[thread + step]
        cuda.syncthreads()
        step //= 2


# A device function for both kernels below. register_jitable, not cuda.jit(device=True):
# see _kernels.
_sum_groups = register_jitable(inline="always")(_sum_groups)


def _row_kernel(element, with_grad):
    """Compile ``element`` into ``kernel(y_true, y_pred, params, inv_n, grad_factor, sums,
    grad_out, threads_per_row, columns_per_chunk)`` over 2-D arrays.

    ``sums[row * chunks + chunk]`` receives ``inv_n`` times the sum of the chunk's
    values (the row's loss when rows are not split), ``grad_out`` ``grad_factor`` times
    each slope; ``with_grad=False`` never touches ``grad_out``.
    """

    @cuda.jit
    def kernel(y_true, y_pred, params, inv_n, grad_factor, sums, grad_out, threads_per_row, columns_per_chunk):
        # Sums are kept in float64 whatever the input dtype: one add per element is
        # free next to the memory traffic, and the result no longer depends on how
        # the columns were split among threads beyond float64 rounding.
        partial = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
        thread = cuda.threadIdx.x
        lane = thread % threads_per_row
        groups_per_block = cuda.blockDim.x // threads_per_row
        n_rows, n_columns = y_pred.shape
        chunks = (n_columns + columns_per_chunk - 1) // columns_per_chunk
        n_segments = n_rows * chunks
        # Every thread of a block runs the same iterations of this loop (its bounds
        # depend on the block only), so the barriers inside are reached by all.
        for first in range(cuda.blockIdx.x * groups_per_block, n_segments, cuda.gridDim.x * groups_per_block):
            segment = first + thread // threads_per_row
            total = 0.0
            if segment < n_segments:
                row = segment // chunks
                start = (segment % chunks) * columns_per_chunk
                stop = min(start + columns_per_chunk, n_columns)
                for column in range(start + lane, stop, threads_per_row):
                    value, slope = element(y_true[row, column], y_pred[row, column], column, params)
                    total += value
                    if with_grad:
                        grad_out[row, column] = slope * grad_factor
            _sum_groups(partial, thread, lane, threads_per_row, total)
            if lane == 0 and segment < n_segments:
                sums[segment] = partial[thread] * inv_n
            # Nobody may overwrite partial[] for the next rows before it was read.
            cuda.syncthreads()

    return kernel


@cuda.jit
def _add_chunks(chunk_sums, loss_out):
    """``loss_out[row] = sum of chunk_sums[row, :]``, in order, one thread per row."""
    n_rows, chunks = chunk_sums.shape
    for row in range(cuda.grid(1), n_rows, cuda.gridsize(1)):
        total = 0.0
        for chunk in range(chunks):
            total += chunk_sums[row, chunk]
        loss_out[row] = total


def _on_device(array):
    return is_cuda_ndarray(array) or hasattr(array, "__cuda_array_interface__")


def _as_device(array):
    if is_cuda_ndarray(array):
        return array
    if _on_device(array):
        return cuda.as_cuda_array(array)
    return cuda.to_device(np.ascontiguousarray(array))


def _output_buffer(name, given, shape, dtype, on_host):
    """The device array a kernel writes an output into: ``given`` itself when it is on
    the device, else a new one (copied into a given host array by the launcher)."""
    if given is None:
        return cuda.device_array(shape, dtype)
    if on_host:
        check_output(name, given, shape, dtype)
        return cuda.device_array(shape, dtype)
    given = _as_device(given)
    check_output(name, given, shape, dtype)
    return given


def _results(on_host, *outputs):
    """The launcher's return value from ``(device array, given host array or None)``
    pairs: the device arrays for device inputs, else host copies (into the given arrays
    where there are some). A missing output (no gradient) stays None."""
    if not on_host:
        return tuple(device for device, _ in outputs)
    return tuple(
        None if device is None else device.copy_to_host(given) if given is not None else device.copy_to_host()
        for device, given in outputs
    )


def run_rows(kernels, y_true, y_pred, params, with_grad, loss_out, grad_out, grad_scale=1.0, reduce="mean"):
    """Validate, move host inputs to the device, launch, and return ``(loss, grad)``.

    Host inputs give host outputs; device inputs give device outputs, written into
    ``loss_out``/``grad_out`` when given (the TF bridge passes TensorFlow's own
    buffers). ``kernels`` is the ``(with_grad, loss_only)`` pair of a loss; the
    gradient is written multiplied by ``grad_scale``.
    """
    loss_shape, n_rows, n_columns = row_layout(y_true, y_pred)
    dtype = np.dtype(y_pred.dtype)
    on_host = not _on_device(y_pred)

    loss_device = _output_buffer("loss_out", loss_out, loss_shape, dtype, on_host)
    grad_device = _output_buffer("grad_out", grad_out, tuple(y_pred.shape), dtype, on_host) if with_grad else None
    if n_columns == 0:
        # The mean of nothing is NaN, as in Keras, the sum 0; there is no gradient to write.
        loss_device.copy_to_device(np.full(loss_shape, np.nan if reduce == "mean" else 0, dtype))
    elif n_rows > 0:
        rows = (n_rows, n_columns)
        shape = launch_shape(n_rows, n_columns)
        loss_rows = loss_device.reshape(n_rows)
        sums = loss_rows if shape.chunks_per_row == 1 else cuda.device_array(n_rows * shape.chunks_per_row, dtype)
        kernel = kernels[0] if with_grad else kernels[1]
        inv_n = dtype.type(1.0 / n_columns) if reduce == "mean" else dtype.type(1.0)
        kernel[shape.blocks, THREADS_PER_BLOCK](
            _as_device(y_true).reshape(rows),
            _as_device(y_pred).reshape(rows),
            params,
            inv_n,
            inv_n * dtype.type(grad_scale),
            sums,
            grad_device.reshape(rows) if with_grad else sums,
            shape.threads_per_row,
            shape.columns_per_chunk,
        )
        if shape.chunks_per_row > 1:
            _add_chunks[-(-n_rows // THREADS_PER_BLOCK), THREADS_PER_BLOCK](
                sums.reshape(n_rows, shape.chunks_per_row), loss_rows
            )
    return _results(on_host, (loss_device, loss_out), (grad_device, grad_out))


def _kernels(elementwise):
    # register_jitable, not cuda.jit(device=True): a device dispatcher asks the driver
    # for the current GPU when it compiles, which would stop compile_ptx on a machine
    # without one. The simulator simply calls the Python function.
    element = register_jitable(inline="always")(elementwise)
    return _row_kernel(element, with_grad=True), _row_kernel(element, with_grad=False)


def _registered_kernels(name):
    """The ``(with_grad, loss_only)`` kernels of the registered loss ``name``, from the
    element function of its generated module (``cpu.element_module``)."""
    return _kernels_of(registry.SPECS[name])


@functools.lru_cache(maxsize=None)
def _kernels_of(spec):
    from . import cpu

    return _kernels(cpu._element_module(spec).element)


@functools.lru_cache(maxsize=None)
def launcher(name):
    """The GPU launcher of the registered loss ``name``; the contract of ``cpu.launcher``."""

    def launch(y_true, y_pred, *params, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0, **named):
        spec = registry.SPECS[name]
        values = registry.bind(spec, params, named)
        kernel_params = tuple(
            cuda.to_device(value) if isinstance(value, np.ndarray) else value
            for value in kernel_parameters(spec, values, y_pred)
        )
        return run_rows(
            _registered_kernels(name), y_true, y_pred, kernel_params, with_grad, loss_out, grad_out, grad_scale, spec.reduce
        )

    launch.__name__ = launch.__qualname__ = name
    return launch


# The softmax cross-entropies' launchers, in their own module (which imports this
# one, so it is imported on first use).
SOFTMAX_LOSSES = ("softmax_cross_entropy", "sparse_softmax_cross_entropy", "categorical_focal_cross_entropy")


def __getattr__(name):
    # cuda.<name> for every registered loss, as the bridge looks launchers up by name.
    if name in registry.SPECS:
        return launcher(name)
    if name in SOFTMAX_LOSSES:
        from . import softmax_cuda

        return getattr(softmax_cuda, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _example_arguments(dtype, params, with_grad):
    rows = np.zeros((2, 3), dtype)
    loss = np.zeros(2, dtype)
    return (rows, rows, params, dtype.type(1.0), dtype.type(1.0), loss, rows if with_grad else loss, 1, 1)


def _row_example_arguments(make_params):
    return lambda dtype, with_grad: _example_arguments(dtype, make_params(dtype), with_grad)


# name -> (kernels, (dtype, with_grad) -> example arguments): what compile_all_ptx
# compiles besides the registered elementwise losses. Each hand-written kernel
# registers itself below its launcher.
PTX_KERNELS = {}


def _registered_ptx_kernels():
    """PTX_KERNELS rows for every registered elementwise loss (per-class parameters
    compiled both as a number and as an array)."""
    rows = {}
    for name, spec in registry.SPECS.items():
        variants = {name: ()} if not spec.per_class else {name: (), f"{name}[per-class]": spec.per_class}
        for variant, arrays in variants.items():
            def make(dtype, spec=spec, arrays=arrays):
                return tuple(np.ones(3, dtype) if i in arrays else dtype.type(d) for i, d in enumerate(spec.defaults))

            rows[variant] = (_registered_kernels(name), _row_example_arguments(make))
    return rows


def compile_all_ptx(cc=(8, 0), names=None):
    """Compile every kernel (or those of the losses in ``names``) for float32 and
    float64 to PTX, without needing a GPU.

    Returns ``{(name, dtype_name, with_grad): ptx}`` (a kernel without a loss-only
    twin, such as ``softmax_partials``, under ``with_grad=True`` only), with ``("add_chunks", dtype_name,
    None)`` for the kernel that adds the chunks of split rows. Needs NVVM (the CUDA toolkit or
    ``numba-cuda[cu12|cu13]``), not a device; raises what numba raises otherwise.
    """
    from . import softmax_cuda  # noqa: F401 (adds its kernels to PTX_KERNELS)

    compiled = {}
    with _device_functions_compiled_for(cc):
        for name, (kernels, make_arguments) in {**_registered_ptx_kernels(), **PTX_KERNELS}.items():
            if names is not None and name not in names:
                continue
            for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
                for with_grad, kernel in zip((True, False), kernels):
                    args = make_arguments(dtype, with_grad)
                    signature = tuple(numba.typeof(arg) for arg in args)
                    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
                    compiled[(name, dtype.name, with_grad)] = ptx
        for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
            signature = (numba.typeof(np.zeros((2, 3), dtype)), numba.typeof(np.zeros(2, dtype)))
            compiled[("add_chunks", dtype.name, None)] = cuda.compile_ptx(_add_chunks.py_func, signature, cc=cc)[0]
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
    def kernel(labels, pairs, params, grad_scale, loss_out, grad_out):
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
            _sum_groups(partial, thread, thread, threads, total)
            if thread == 0:
                distance, inv_scale, inv_norm = pair_distance(partial[0], pairs, pair)
                value, slope = element(float(labels[pair]), distance, 0, params)
                loss_out[pair] = value
                factors[0] = slope * grad_scale
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


def run_pairs(kernels, y_true, pairs, params, with_grad, loss_out, grad_out, grad_scale=1.0):
    """``run_rows`` for kernels over ``(batch, 2, dim)`` pairs: loss shape ``(batch,)``."""
    n_pairs, dim = pair_layout(y_true, pairs)
    dtype = np.dtype(pairs.dtype)
    on_host = not _on_device(pairs)
    threads = _threads_for(dim)
    if threads < 1 or threads > MAX_THREADS_PER_BLOCK or threads & (threads - 1):
        raise ValueError(f"THREADS_PER_BLOCK must be a power of two <= {MAX_THREADS_PER_BLOCK}, got {threads}")

    loss_device = _output_buffer("loss_out", loss_out, (n_pairs,), dtype, on_host)
    grad_device = _output_buffer("grad_out", grad_out, tuple(pairs.shape), dtype, on_host) if with_grad else None
    if n_pairs > 0:
        kernel = kernels[0] if with_grad else kernels[1]
        kernel[min(n_pairs, MAX_BLOCKS), threads](
            _as_device(y_true).reshape(n_pairs),
            _as_device(pairs),
            params,
            float(grad_scale),
            loss_device,
            grad_device if with_grad else loss_device,
        )
    return _results(on_host, (loss_device, loss_out), (grad_device, grad_out))


_embedding_contrastive_kernels = _pair_kernels(scalar_math.contrastive)


def _pair_example_arguments(dtype, with_grad):
    pairs = np.zeros((2, 2, 3), dtype)
    loss = np.zeros(2, dtype)
    return (loss, pairs, (1.0,), 1.0, loss, pairs if with_grad else loss)


PTX_KERNELS["embedding_contrastive"] = (_embedding_contrastive_kernels, _pair_example_arguments)


def embedding_contrastive(y_true, pairs, margin=1.0, *, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0):
    """Per-pair contrastive loss of two embeddings, and its gradient w.r.t. both, on
    the GPU; see ``cpu.embedding_contrastive`` for the contract."""
    params = (float(margin),)
    return run_pairs(_embedding_contrastive_kernels, y_true, pairs, params, with_grad, loss_out, grad_out, grad_scale)


# ---------------------------------------------------------------------------------
# What element functions call, compiled for the GPU.

# The float32 approximations are kept on the GPU too, rather than libdevice's
# expf/log1pf: the kernels are memory-bound there, so their few extra FMAs cost
# nothing; they are more accurate than libdevice's documented 2 ulp; and the simulator
# then runs exactly the math the GPU runs, and CPU and GPU agree to rounding.
for _helper in (
    *primitives.PRIMITIVES.values(),
    *primitives.HELPERS,
    scalar_math._exp,
    scalar_math._log1p_unit,
    scalar_math.exp_float32,
    scalar_math.log1p_float32,
    scalar_math.log1p_unit_float32,
    scalar_math._log_float32,
):
    register_jitable(_helper)


@overload(primitives._floor, inline="always")
def _floor(x):
    if x == numba_types.float32:
        return lambda x: libdevice.floorf(x)
    return lambda x: libdevice.floor(x)


@overload(scalar_math._class_weight, inline="always")
def _class_weight(weights, column):
    if isinstance(weights, numba_types.Array):
        return lambda weights, column: weights[column]
    return lambda weights, column: weights


__all__ = [
    "embedding_contrastive",
    "launcher",
    "compile_all_ptx",
    "launch_shape",
    "LaunchShape",
    "THREADS_PER_BLOCK",
]
