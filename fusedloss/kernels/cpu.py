"""CPU kernels: one parallel pass writes each row's loss and the gradient.

Each loss's scalar math (``math.py``) is compiled inline into one generic row kernel,
so every loss shares the same loop, chunking and reduction order. The launchers
below have the same signatures as the CUDA ones in ``cuda.py``.
"""

import functools
import importlib.util
import inspect
import os
import sys
import warnings

import numba
import numpy as np
from numba import njit, prange, types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import overload, register_jitable

from . import caching, primitives, registry
from . import math as scalar_math
from .layout import check_output, kernel_parameters, pair_layout, row_layout

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
# thread count, so results are bit-identical from run to run, and from machine to
# machine where the CPUs have the same vector width (the vectorised sums depend on it).
COLUMNS_PER_TASK = 16384

# Rows of at most this many columns are narrow: a per-row loop over so few columns
# neither vectorises nor amortises its overhead (Huber at 1e7 elements: 24 ms for rows
# of 10 columns, 88 ms for rows of 2, 8 ms for rows of 1000). Each task then takes a
# block of whole rows, ROWS_PER_BLOCK(n_columns) of them (about COLUMNS_PER_TASK
# elements), runs one flat loop over the block's elements (contiguous, vectorised),
# keeping the values in a small scratch array, and sums each row's values from it in
# column order. The blocks depend only on the shape, so results are bit-identical
# from run to run (see COLUMNS_PER_TASK).
NARROW_COLUMNS = 64

# Below this many elements a kernel runs on the calling thread (``rows_serial``, the
# same code compiled without threads): starting the thread pool costs ~3-25 us on a
# quiet machine and far more on a busy one, where a parallel region waits for its
# slowest thread (numba's OpenMP launch took 42 us to 2 ms at 1e3 elements on the
# shared 2-core CPU), more than the work itself (~13 us for 32768 Huber elements on
# one core). Depends only on the shape, so results stay deterministic.
PARALLEL_FROM = 32768

# Every loss's math calls it to keep float32 math in float32.
register_jitable(scalar_math._like)


def _span(array, start, stop):
    """Elements ``start:stop`` of a C-contiguous array, flattened; None for None (so
    that a loss-only kernel, ``grad_out=None``, compiles the same code)."""
    return None if array is None else array.reshape(array.size)[start:stop]


@overload(_span, inline="always")
def _span_overload(array, start, stop):
    if isinstance(array, types.NoneType):
        return lambda array, start, stop: None
    return lambda array, start, stop: array.reshape(array.size)[start:stop]


@njit(fastmath=FASTMATH, error_model="numpy")
def _row_means(values, n_columns, inv_n, out):
    """``out[r] = inv_n * sum(values[r * n_columns : (r + 1) * n_columns])``, each sum
    in a fixed order that depends only on ``n_columns``.

    Rows of 2 to 4 columns are summed by explicit expressions: a loop over so few
    columns is mostly loop overhead and one chain of dependent additions per row
    (twice to three times slower here)."""
    rows = values.reshape((out.shape[0], n_columns))
    if n_columns == 2:
        for row in range(rows.shape[0]):
            out[row] = (rows[row, 0] + rows[row, 1]) * inv_n
    elif n_columns == 3:
        for row in range(rows.shape[0]):
            out[row] = ((rows[row, 0] + rows[row, 1]) + rows[row, 2]) * inv_n
    elif n_columns == 4:
        for row in range(rows.shape[0]):
            out[row] = ((rows[row, 0] + rows[row, 1]) + (rows[row, 2] + rows[row, 3])) * inv_n
    else:
        zero = inv_n - inv_n
        for row in range(rows.shape[0]):
            total = zero
            for column in range(n_columns):
                total += rows[row, column]
            out[row] = total * inv_n


def _rows_template(y_true, y_pred, params, inv_n, grad_factor, loss_out, grad_out):
    """The row kernel every elementwise loss compiles (``element_module``), over 2-D arrays.

    Never called itself: ``element_module`` writes its source into a module with the
    loss's ``_element(label, prediction, column, params) -> (value, slope)`` beside it
    (inlined), which numba compiles and caches. ``loss_out[r] = inv_n * sum_c
    value[r, c]`` and ``grad_out[r, c] = grad_factor * slope[r, c]`` (``inv_n`` times
    the launcher's ``grad_scale``). ``grad_out=None`` compiles a loss-only kernel that
    never touches gradient memory.
    """
    n_rows, n_columns = y_pred.shape
    zero = inv_n - inv_n  # 0 in the arrays' dtype, so sums stay in that dtype
    n_chunks = (n_columns + COLUMNS_PER_TASK - 1) // COLUMNS_PER_TASK
    if n_columns == 1:
        # (batch, 1), the usual shape of a Keras target: one loop over every element,
        # which LLVM vectorises (it cannot vectorise the row loop below). The mean
        # of one value is the value: inv_n is 1.
        for row in prange(n_rows):
            value, slope = _element(y_true[row, 0], y_pred[row, 0], 0, params)  # noqa: F821 - see above
            loss_out[row] = value * inv_n
            if grad_out is not None:
                grad_out[row, 0] = slope * grad_factor
    elif n_columns <= NARROW_COLUMNS:
        # Narrow rows: blocks of whole rows, one flat loop over each block's elements
        # (see NARROW_COLUMNS).
        rows_per_block = max(1, COLUMNS_PER_TASK // n_columns)
        n_blocks = (n_rows + rows_per_block - 1) // rows_per_block
        for block in prange(n_blocks):
            first_row = block * rows_per_block
            last_row = min(first_row + rows_per_block, n_rows)
            start = first_row * n_columns
            stop = last_row * n_columns
            # Flat spans indexed from 0: LLVM then knows no index is negative (numba's
            # wraparound of negative indices would keep it from vectorising the loop).
            block_true = _span(y_true, start, stop)
            block_pred = _span(y_pred, start, stop)
            block_grad = _span(grad_out, start, stop)
            values = np.empty(stop - start, dtype=loss_out.dtype)
            for index in range(stop - start):
                value, slope = _element(block_true[index], block_pred[index], index % n_columns, params)  # noqa: F821
                values[index] = value
                if grad_out is not None:  # pruned when compiling, as an argument (block_grad is not)
                    block_grad[index] = slope * grad_factor
            _row_means(values, n_columns, inv_n, loss_out[first_row:last_row])
    elif n_chunks <= 1:
        for row in prange(n_rows):
            total = zero
            for column in range(n_columns):
                value, slope = _element(y_true[row, column], y_pred[row, column], column, params)  # noqa: F821
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
                value, slope = _element(y_true[row, column], y_pred[row, column], column, params)  # noqa: F821
                total += value
                if grad_out is not None:
                    grad_out[row, column] = slope * grad_factor
            partial[task] = total
        for row in prange(n_rows):
            total = zero
            for chunk in range(n_chunks):
                total += partial[row * n_chunks + chunk]
            loss_out[row] = total * inv_n


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


def run_rows(kernel, y_true, y_pred, params, with_grad, loss_out, grad_out, grad_scale=1.0, reduce="mean"):
    """Validate, allocate what the caller did not supply, and run a row kernel.

    Returns ``(loss, grad)`` shaped like the inputs' leading axes and like the inputs;
    ``grad`` is None when ``with_grad`` is False. Inputs are only read; non-contiguous
    inputs are copied to contiguous ones first. The gradient is multiplied by
    ``grad_scale`` as it is written. ``reduce``: a row's loss is the "mean" or the
    "sum" of its values.
    """
    loss_shape, n_rows, n_columns = row_layout(y_true, y_pred)
    dtype = y_pred.dtype
    loss_out, grad_out = _outputs(loss_out, loss_shape, with_grad, grad_out, y_pred.shape, dtype)
    if n_columns == 0:
        # The mean of nothing is NaN, as in Keras, the sum 0; there is no gradient to write.
        loss_out[...] = np.nan if reduce == "mean" else 0
        return loss_out, grad_out
    rows = (n_rows, n_columns)
    inv_n = dtype.type(1.0 / n_columns) if reduce == "mean" else dtype.type(1.0)
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


# ---------------------------------------------------------------------------------
# Row kernels of the registered elementwise losses, compiled from generated modules
# so that numba can cache them across processes.


_MODULE_TEMPLATE = """\
# Generated by fusedloss for the loss {name!r}: its element function and the CPU row
# kernel (fusedloss.kernels.cpu._rows_template). Do not edit: the file name is a hash
# of everything it is made from, so a change anywhere gives a new file.
import numpy as np
from numba import njit, prange

from fusedloss.kernels.cpu import COLUMNS_PER_TASK, FASTMATH, NARROW_COLUMNS, _row_means, _span
from fusedloss.kernels.math import _class_weight, _like
from fusedloss.kernels.primitives import {primitives}

{element}
_element = njit(inline="always", fastmath=FASTMATH)(element)


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)
{rows}

# The same kernel without threads, for inputs below PARALLEL_FROM elements.
@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
{rows_serial}"""


def element_module(name):
    """The generated module of the registered loss ``name``: ``element`` (plain Python,
    what the CUDA kernels compile) and ``rows``, its CPU row kernel. Written once into
    ``caching.cache_folder()`` under a hash of its text, of the kernel modules' sources, and of
    numba's and Python's versions: numba's cache (``cache=True``) does not notice a
    change in a function the kernel calls, or in fastmath flags; a new file name does."""
    return _element_module(registry.SPECS[name])


@functools.lru_cache(maxsize=None)
def _element_module(spec):
    name = spec.name
    template = inspect.getsource(_rows_template)
    text = _MODULE_TEMPLATE.format(
        name=name,
        primitives=", ".join(primitives.PRIMITIVE_NAMES),
        element=spec.element_source,
        rows=template.replace("def _rows_template(", "def rows(", 1),
        rows_serial=template.replace("def _rows_template(", "def rows_serial(", 1),
    )
    key = caching.digest(text, caching.kernel_sources_digest())
    safe = "".join(c if c.isalnum() else "_" for c in name)
    module_name = f"_fusedloss_{safe}_{key}"
    path = os.path.join(caching.cache_folder(), module_name + ".py")
    if not os.path.exists(path):
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)  # atomic: a concurrent process sees all or nothing
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    loader_spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def launcher(name):
    """``launcher(y_true, y_pred, *params, with_grad=True, loss_out=None, grad_out=None,
    grad_scale=1.0)`` of the registered loss ``name``: per-row loss (mean or sum over
    the last axis) and gradient w.r.t. ``y_pred``, into the given buffers if any.
    Parameters by position or name (``registry.KernelSpec.parameters``); per-class
    ones as a number or one value per class."""

    def launch(y_true, y_pred, *params, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0, **named):
        spec = registry.SPECS[name]
        values = registry.bind(spec, params, named)
        kernel_params = kernel_parameters(spec, values, y_pred)
        module = _element_module(spec)
        rows = module.rows if y_pred.size >= PARALLEL_FROM else module.rows_serial
        return run_rows(rows, y_true, y_pred, kernel_params, with_grad, loss_out, grad_out, grad_scale, spec.reduce)

    launch.__name__ = launch.__qualname__ = name
    launch.__doc__ = f"CPU launcher of the fused loss {name!r}; see ``cpu.launcher``."
    return launch


def __getattr__(name):
    # cpu.<name> for every registered loss, as the bridge looks launchers up by name.
    if name in registry.SPECS:
        return launcher(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=caching.ENABLED)
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


# Below PARALLEL_FROM elements: the same kernel without threads.
_embedding_contrastive_pairs_serial = caching.serial_copy(_embedding_contrastive_pairs, fastmath=FASTMATH, error_model="numpy")


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
    kernel = _embedding_contrastive_pairs if pairs.size >= PARALLEL_FROM else _embedding_contrastive_pairs_serial
    return run_pairs(kernel, y_true, pairs, params, with_grad, loss_out, grad_out, grad_scale)


# ---------------------------------------------------------------------------------
# The backward pass of every fused loss: the saved gradient times the upstream one.


@njit(parallel=True, error_model="numpy", cache=caching.ENABLED)
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


_scale_rows_serial = caching.serial_copy(_scale_rows, error_model="numpy")  # below PARALLEL_FROM


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
        kernel = _scale_rows if grad.size >= PARALLEL_FROM else _scale_rows_serial
        kernel(np.ascontiguousarray(factors).reshape(n_rows), np.ascontiguousarray(grad).reshape(rows), out.reshape(rows))
    return out


@njit(parallel=True, error_model="numpy", cache=caching.ENABLED)
def _count_unequal(values, value, counts):
    n_values = values.size
    for task in prange(counts.size):
        start = task * COLUMNS_PER_TASK
        # A slice indexed from 0: LLVM then knows no index is negative and vectorises.
        span = values[start : min(start + COLUMNS_PER_TASK, n_values)]
        unequal = 0
        for index in range(span.size):
            unequal += span[index] != value
        counts[task] = unequal


def all_equal(values, value):
    """Whether every element of ``values`` equals ``value`` (NaN equals nothing), as
    ``tf.reduce_all(tf.equal(values, value))`` says, without its array of booleans.

    The bridge's backward asks it of the upstream gradient: at 1e7 upstream values
    TensorFlow's ``equal`` + ``reduce_all`` took ~3 ms here, this ~1 ms.
    """
    flat = np.ascontiguousarray(values).reshape(-1)
    counts = np.empty(-(-flat.size // COLUMNS_PER_TASK), np.int64)
    _count_unequal(flat, flat.dtype.type(value), counts)
    return not counts.any()


# ---------------------------------------------------------------------------------
# What element functions call, compiled for the CPU.

# LLVM does not inline these (the exp and log inside make them too big), and one call
# left in the row loop stops it from vectorising: a loss with two powers ran 30x slower
# than without. numba inlines them instead, under the loop's flags: their own bodies do
# not depend on the order of operations (the functions they call keep their own flags).
_INLINED_BY_NUMBA = (primitives._pow, primitives._log_cosh)

# numba's inliner leaves SSA names of these two that its own pedantic IR check then
# flags ("variable '_pow_v12...' is not in scope", asking users to report it) on every
# compile of a kernel using them. The compiled code is right (the conformance suite
# checks every loss using them against float64 references); the warning is silenced
# for these names only.
warnings.filterwarnings("ignore", message=r"variable '_(pow|log_cosh)_v", category=NumbaIRAssumptionWarning)

# The hand-written ones' helpers, and the primitives of generated ones. All get
# "contract" only: the float32 approximations' error analysis rests on the rounding of
# each operation (Fast2Sum, the split ln 2, rounding by a shifter), which "reassoc"
# would let LLVM rearrange. LLVM still inlines them into the row loop and vectorises it.
for _helper in (
    scalar_math._exp,
    scalar_math._log1p_unit,
    scalar_math.exp_float32,
    scalar_math.log1p_float32,
    scalar_math.log1p_unit_float32,
    scalar_math._log_float32,
    *(function for function in primitives.PRIMITIVES.values() if function not in _INLINED_BY_NUMBA),
    *primitives.HELPERS,
    primitives._floor,
):
    register_jitable(fastmath={"contract"})(_helper)


@overload(primitives._pow, inline="always", jit_options={"fastmath": FASTMATH})
def _inline_pow(a, b):
    return primitives._pow


@overload(primitives._log_cosh, inline="always", jit_options={"fastmath": FASTMATH})
def _inline_log_cosh(x):
    return primitives._log_cosh


@overload(scalar_math._class_weight, inline="always")
def _class_weight(weights, column):
    if isinstance(weights, types.Array):
        return lambda weights, column: weights[column]
    return lambda weights, column: weights


# Softmax cross-entropies: a kernel family of their own (one row at a time, an online
# softmax), in their own module, found here by name.
from .softmax_cpu import categorical_focal_cross_entropy, softmax_cross_entropy, sparse_softmax_cross_entropy  # noqa: E402,F401
