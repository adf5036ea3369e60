"""Softmax cross-entropy on the CPU: per row, a blocked softmax, then loss and gradient.

Math (one row of logits ``x`` over ``K`` classes, target distribution ``t``)::

    lse  = log sum_j exp(x_j)                      (computed as M + log S below)
    p_j  = exp(x_j - lse)                          softmax
    loss = sum_j t_j (lse - x_j)                   cross-entropy
    d loss / d x_j = p_j - t_j                     (TensorFlow's op; exact when sum t = 1)

Label smoothing (Keras): ``t = y (1 - s) + s / K``. Sparse labels: ``t`` is one-hot at
the label, ``loss = lse - x_label``; a row whose label is the ignored one costs 0 and
gets a zero gradient.

Two passes over each row, in blocks of ``BLOCK`` columns (in L1):

1. Per block, its max ``m_b`` (a max over the logits' bits as ordered integers: an
   integer max reduction vectorises, a float one does not here) and ``S_b = sum
   exp(x_j - m_b)``; the row's ``M = max_b m_b`` and ``S = sum_b S_b exp(m_b - M)`` are
   kept running, so nothing overflows (``S >= 1``) and the row is read once. With a
   gradient to write, pass 1 also stores ``e_j = exp(x_j - m_b)`` into the gradient's
   own memory, which stays in the core's cache (a row of 131072 float32 logits and its
   gradient are 1 MB, L2 here).
2. The loss, and the gradient in place: ``grad_j = e_j * exp(m_b - M) * grad_scale / S
   - t_j * grad_scale``: one exp per block instead of one per element (the exp is
   most of the arithmetic), the gradient leaves the cache once.

The float32 exp is ``kernels.math.exp_float32``: call-free, range-reduced (``x = k ln2
+ r``, Cody-Waite), degree-4 minimax polynomial for ``exp(r)``, ``2^k`` added to the
exponent bits; at most 9.2e-8 relative error (1.1 ulp) over every float32 input whose
exp is a normal float32, measured against float64 (all 2^32 inputs,
``scripts/measure_approximation_error.py``); below that range it flushes to 0. A
gradient element goes through two such exps and two roundings of products: within a
few ulp of float64 (``tests/kernels/test_softmax_cpu.py`` checks 131072 classes).

Rows of ``K >= COLUMNS_PER_TASK`` classes are split into chunks of
``COLUMNS_PER_TASK`` when there are fewer than ``SPLIT_BELOW_ROWS`` rows (too few to
keep every thread busy): chunk partials ``(M_c, S_c)`` are combined in chunk order,
``M = max M_c``, ``S = sum_c S_c exp(M_c - M)``; the second pass then reads the logits
again and writes ``exp(x_j - M) grad_scale / S - t_j grad_scale`` (a chunk is out of
the cache by then: storing ``e_j`` would only add a read and a write). The split and
the blocks depend on the shape only, so results are bit-identical run to run, whatever
the thread count.

Inputs are only read; outputs go into caller-given (pooled) buffers.
"""

import math

import numpy as np
from numba import njit, prange

from . import caching
from . import math as scalar_math
from .layout import SUPPORTED_DTYPES, check_output
from .softmax_reference import EPSILON, NO_IGNORE

# As cpu.py (which imports this module's launchers by name, so nothing here imports
# it): "reassoc" vectorises the row sums, no "nnan"/"ninf", NaN and Inf propagate.
FASTMATH = {"reassoc", "contract"}

COLUMNS_PER_TASK = 16384
SPLIT_BELOW_ROWS = 64
# Pass 1 takes a block's max, then its exp sum, while the block is in L1 (8 KB of
# float32 logits and 8 KB of stored exps). Measured (1 core, 256 x 131072): 512 cost
# 4 % more than 2048 (per-block horizontal reductions), 4096 the same.
BLOCK = 2048


# Compiled here from math.py's Python (not through cpu.py's registrations, see above).
_like = njit(inline="always")(scalar_math._like)  # a bare literal would make float32 math float64
# The call-free float32 exp of math.py (<= 1.1 ulp, measured over all float32), so the
# row loops vectorise; "contract" only, as its error analysis needs (cpu.py).
_exp_float32 = njit(inline="always", fastmath={"contract"}, error_model="numpy")(scalar_math.exp_float32)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _exp(x):
    if isinstance(x, np.float32):
        return _exp_float32(x)
    return math.exp(x)


# Not inline="always": numba then types both branches of the isinstance (an int32
# key became int64); as a call, each dtype gets its own typing, and LLVM inlines it.
@njit(fastmath=FASTMATH, error_model="numpy")
def _key(v):
    """An integer ordered as the float ``v``: the sign-magnitude bits with the
    magnitude flipped for negatives (-0 just below +0; a NaN above +inf or below -inf
    by its sign bit, and then ``S`` is NaN anyway)."""
    # numba widens int32 arithmetic to int64: the float32 key is cast back, so the max
    # runs on 16 lanes and _from_key sees an int32.
    if isinstance(v, np.float32):
        bits32 = np.float32(v).view(np.int32)
        return np.int32(bits32 ^ ((bits32 >> np.int32(31)) & np.int32(0x7FFFFFFF)))
    bits64 = np.float64(v).view(np.int64)
    return bits64 ^ ((bits64 >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))


# Not inline="always": numba then types both branches of the isinstance (an int32
# key became int64); as a call, each dtype gets its own typing, and LLVM inlines it.
@njit(fastmath=FASTMATH, error_model="numpy")
def _from_key(k):
    # _key is an involution: the flip leaves the sign bit, which selects it, alone.
    if isinstance(k, np.int32):
        return np.int32(k ^ ((k >> np.int32(31)) & np.int32(0x7FFFFFFF))).view(np.float32)
    return np.int64(k ^ ((k >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))).view(np.float64)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _block_max(v):
    best = _key(v[0])
    for j in range(1, v.size):
        k = _key(v[j])
        best = k if k > best else best
    return _from_key(best)


# The loops below index 1-D views from 0: numba then knows the index is >= 0 and
# leaves out its negative-index wraparound, which kept ``x[row, j]`` over
# ``range(first, last)`` from vectorising (5x slower, measured).


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _exp_sum(v, m):
    s = _like(m, 0.0)
    for j in range(v.size):
        s += _exp(v[j] - m)
    return s


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _exp_store_sum(v, m, e):
    s = _like(m, 0.0)
    for j in range(v.size):
        term = _exp(v[j] - m)
        e[j] = term
        s += term
    return s


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _softmax_sums(v):
    """``(M, S)`` of a row or chunk ``v``: ``M = max v``, ``S = sum exp(v_j - M)``."""
    m = v[0]  # <= the first block's max: raised there, while s is still 0
    s = _like(m, 0.0)
    for start in range(0, v.size, BLOCK):
        block = v[start : start + BLOCK]
        top = _block_max(block)
        if top > m:
            s = s * _exp(m - top)
            m = top
        s += _exp_sum(block, m)
    return m, s


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _softmax_sums_stored(v, e, maxima):
    """``_softmax_sums(v)``, also storing ``e_j = exp(v_j - m_b)`` and each block's
    max ``m_b`` in ``maxima``."""
    m = v[0]
    s = _like(m, 0.0)
    for b in range(maxima.size):
        start = b * BLOCK
        block = v[start : start + BLOCK]
        top = _block_max(block)
        maxima[b] = top
        block_sum = _exp_store_sum(block, top, e[start : start + BLOCK])
        if top > m:
            s = s * _exp(m - top)
            m = top
        s += block_sum * _exp(top - m)
    return m, s


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _combine(maxima, sums, row, n_chunks):
    """The row's ``(M, S)`` from its chunks' partials, in chunk order."""
    base = row * n_chunks
    m = maxima[base]
    for c in range(1, n_chunks):
        if maxima[base + c] > m:
            m = maxima[base + c]
    s = _like(m, 0.0)
    for c in range(n_chunks):
        s += sums[base + c] * _exp(maxima[base + c] - m)
    return m, s


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _chunk_partials(x, n_chunks):
    """Pass 1 of split rows: ``(M_c, S_c)`` of every chunk, task ``row * n_chunks + c``."""
    n_rows, n_columns = x.shape
    n_tasks = n_rows * n_chunks
    maxima = np.empty(n_tasks, x.dtype)
    sums = np.empty(n_tasks, x.dtype)
    for task in prange(n_tasks):
        first = (task % n_chunks) * COLUMNS_PER_TASK
        maxima[task], sums[task] = _softmax_sums(x[task // n_chunks, first : first + COLUMNS_PER_TASK])
    return maxima, sums


# ---------------------------------------------------------------------------------
# Dense (soft) targets: categorical cross-entropy from logits


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _dense_loss(y, x, m, log_s, keep, bias):
    """``sum_j t_j (log S - (x_j - M))``, ``t_j = y_j keep + bias`` (TensorFlow's
    form: ``x_j - M`` is exact near the max, so |x| = 1e4 loses nothing)."""
    total = _like(m, 0.0)
    for j in range(x.size):
        total += (y[j] * keep + bias) * (log_s - (x[j] - m))
    return total


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _dense_loss_and_scale(y, x, g, block_factor, m, log_s, keep, bias, grad_scale):
    """The loss part of a block, and its gradient from the stored exps ``g``:
    ``g_j <- g_j * block_factor - t_j * grad_scale``."""
    total = _like(m, 0.0)
    for j in range(x.size):
        t = y[j] * keep + bias
        total += t * (log_s - (x[j] - m))
        g[j] = g[j] * block_factor - t * grad_scale
    return total


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _dense_loss_and_gradient(y, x, g, m, factor, log_s, keep, bias, grad_scale):
    """Split rows' pass 2: the loss part of a chunk and ``g_j = exp(x_j - M) factor -
    t_j grad_scale``."""
    total = _like(m, 0.0)
    for j in range(x.size):
        t = y[j] * keep + bias
        total += t * (log_s - (x[j] - m))
        g[j] = _exp(x[j] - m) * factor - t * grad_scale
    return total


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=caching.ENABLED)
def _dense_rows(y, x, keep, bias, grad_scale, loss_out, grad_out, n_chunks):
    n_rows, n_columns = x.shape
    if n_chunks == 1:
        n_blocks = -(-n_columns // BLOCK)
        block_maxima = np.empty((n_rows if grad_out is not None else 0, n_blocks), x.dtype)
        for row in prange(n_rows):
            if grad_out is None:
                m, s = _softmax_sums(x[row])
                loss_out[row] = _dense_loss(y[row], x[row], m, _like(m, math.log(s)), keep, bias)
                continue
            maxima = block_maxima[row]
            m, s = _softmax_sums_stored(x[row], grad_out[row], maxima)
            log_s = _like(m, math.log(s))
            factor = grad_scale / s
            total = _like(m, 0.0)
            for b in range(n_blocks):
                start = b * BLOCK
                stop = start + BLOCK
                total += _dense_loss_and_scale(
                    y[row, start:stop], x[row, start:stop], grad_out[row, start:stop],
                    _exp(maxima[b] - m) * factor, m, log_s, keep, bias, grad_scale,
                )
            loss_out[row] = total
        return
    maxima, sums = _chunk_partials(x, n_chunks)
    n_tasks = n_rows * n_chunks
    partial = np.empty(n_tasks, x.dtype)
    for task in prange(n_tasks):
        row = task // n_chunks
        first = (task % n_chunks) * COLUMNS_PER_TASK
        stop = first + COLUMNS_PER_TASK
        m, s = _combine(maxima, sums, row, n_chunks)
        log_s = _like(m, math.log(s))
        if grad_out is None:
            partial[task] = _dense_loss(y[row, first:stop], x[row, first:stop], m, log_s, keep, bias)
        else:
            partial[task] = _dense_loss_and_gradient(
                y[row, first:stop], x[row, first:stop], grad_out[row, first:stop], m, grad_scale / s, log_s, keep,
                bias, grad_scale,
            )
    for row in prange(n_rows):
        total = partial[row * n_chunks]
        for c in range(1, n_chunks):
            total += partial[row * n_chunks + c]
        loss_out[row] = total


# ---------------------------------------------------------------------------------
# Sparse integer labels


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _scale(g, factor):
    for j in range(g.size):
        g[j] *= factor


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _softmax_times(x, g, m, factor):
    for j in range(x.size):
        g[j] = _exp(x[j] - m) * factor


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _zero(g):
    for j in range(g.size):
        g[j] = 0


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=caching.ENABLED)
def _sparse_rows(labels, x, ignore_label, grad_scale, loss_out, grad_out, n_chunks):
    """``loss = log S - (x_label - M)``; ``grad_j = p_j grad_scale``, less
    ``grad_scale`` at the label (the one-hot target)."""
    n_rows, n_columns = x.shape
    if n_chunks == 1:
        n_blocks = -(-n_columns // BLOCK)
        block_maxima = np.empty((n_rows if grad_out is not None else 0, n_blocks), x.dtype)
        for row in prange(n_rows):
            label = labels[row]
            if label == ignore_label:
                loss_out[row] = _like(x[row, 0], 0.0)
                if grad_out is not None:
                    _zero(grad_out[row])
                continue
            if grad_out is None:
                m, s = _softmax_sums(x[row])
                loss_out[row] = _like(m, math.log(s)) - (x[row, label] - m)
                continue
            maxima = block_maxima[row]
            m, s = _softmax_sums_stored(x[row], grad_out[row], maxima)
            loss_out[row] = _like(m, math.log(s)) - (x[row, label] - m)
            factor = grad_scale / s
            for b in range(n_blocks):
                start = b * BLOCK
                _scale(grad_out[row, start : start + BLOCK], _exp(maxima[b] - m) * factor)
            grad_out[row, label] -= grad_scale
        return
    maxima, sums = _chunk_partials(x, n_chunks)
    for task in prange(n_rows * n_chunks):
        row = task // n_chunks
        first = (task % n_chunks) * COLUMNS_PER_TASK
        last = min(first + COLUMNS_PER_TASK, n_columns)
        label = labels[row]
        ignored = label == ignore_label
        m, s = _combine(maxima, sums, row, n_chunks)
        if first == 0:
            loss_out[row] = _like(m, 0.0) if ignored else _like(m, math.log(s)) - (x[row, label] - m)
        if grad_out is not None:
            if ignored:
                _zero(grad_out[row, first:last])
            else:
                _softmax_times(x[row, first:last], grad_out[row, first:last], m, grad_scale / s)
                if label >= first and label < last:
                    grad_out[row, label] -= grad_scale


# ---------------------------------------------------------------------------------
# Categorical focal cross-entropy from logits (Keras's formula)


@njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _focal_terms(p, t, alpha, gamma, low, high):
    """For ``c = clip(p, eps, 1 - eps)`` (float64): the loss term
    ``L = -alpha (1 - c)^gamma t log c`` and ``g = dL/dc`` where the clip passes the
    gradient (``eps <= p <= 1 - eps``, as TensorFlow's clip), else 0::

        dL/dc = alpha t (gamma (1 - c)^(gamma - 1) log c - (1 - c)^gamma / c)
    """
    c = min(max(p, low), high)
    one_minus = 1.0 - c
    w = one_minus**gamma
    log_c = math.log(c)
    value = -alpha * w * t * log_c
    slope = 0.0
    if p >= low and p <= high:
        slope = alpha * t * (gamma * (w / one_minus) * log_c - w / c)
    return value, slope


@njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _focal_sums(y, x, row, first, last, m, s, alpha, gamma, keep, bias, low, high):
    """``(sum_j L_j, sum_j g_j p_j)`` over columns ``[first, last)``, in float64."""
    inv_s = 1.0 / float(s)
    total = 0.0
    dot = 0.0
    for j in range(first, last):
        p = math.exp(float(x[row, j]) - float(m)) * inv_s
        value, slope = _focal_terms(p, float(y[row, j]) * keep + bias, alpha[j], gamma, low, high)
        total += value
        dot += slope * p
    return total, dot


@njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _focal_gradient(y, x, row, first, last, m, s, alpha, gamma, keep, bias, low, high, dot, grad_factor, grad_out):
    """``grad_j = p_j (g_j - sum_k g_k p_k) * grad_factor``: the softmax Jacobian
    ``dp_k/dx_j = p_k ([j = k] - p_j)`` applied to ``g``."""
    inv_s = 1.0 / float(s)
    for j in range(first, last):
        p = math.exp(float(x[row, j]) - float(m)) * inv_s
        _, slope = _focal_terms(p, float(y[row, j]) * keep + bias, alpha[j], gamma, low, high)
        grad_out[row, j] = p * (slope - dot) * grad_factor


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=caching.ENABLED)
def _focal_rows(y, x, alpha, gamma, keep, bias, low, high, grad_factor, loss_out, grad_out, n_chunks):
    n_rows, n_columns = x.shape
    n_tasks = n_rows * n_chunks
    width = COLUMNS_PER_TASK if n_chunks > 1 else n_columns
    maxima = np.empty(n_tasks, x.dtype)
    sums = np.empty(n_tasks, x.dtype)
    for task in prange(n_tasks):
        row = task // n_chunks
        first = (task % n_chunks) * width
        maxima[task], sums[task] = _softmax_sums(x[row, first : first + width])
    totals = np.empty(n_tasks)
    dots = np.empty(n_tasks)
    for task in prange(n_tasks):
        row = task // n_chunks
        first = (task % n_chunks) * width
        last = min(first + width, n_columns)
        m, s = _combine(maxima, sums, row, n_chunks)
        totals[task], dots[task] = _focal_sums(y, x, row, first, last, m, s, alpha, gamma, keep, bias, low, high)
    for row in prange(n_rows):
        total = totals[row * n_chunks]
        for c in range(1, n_chunks):
            total += totals[row * n_chunks + c]
        loss_out[row] = total
    if grad_out is not None:
        for task in prange(n_tasks):
            row = task // n_chunks
            first = (task % n_chunks) * width
            last = min(first + width, n_columns)
            m, s = _combine(maxima, sums, row, n_chunks)
            dot = dots[row * n_chunks]
            for c in range(1, n_chunks):
                dot += dots[row * n_chunks + c]
            _focal_gradient(
                y, x, row, first, last, m, s, alpha, gamma, keep, bias, low, high, dot, grad_factor, grad_out
            )


# ---------------------------------------------------------------------------------
# Shared checks (the CUDA launchers use them too)


def chunks_for(n_rows, n_columns):
    """How many chunks each row is split into: a function of the shape only."""
    if n_columns < COLUMNS_PER_TASK or n_rows >= SPLIT_BELOW_ROWS:
        return 1
    return -(-n_columns // COLUMNS_PER_TASK)


def softmax_layout(y_true, y_pred, sparse):
    """Check targets and logits; return ``(loss_shape, n_rows, n_classes)``.

    Dense: ``y_true`` has ``y_pred``'s shape and dtype. Sparse: ``y_true`` is int32 or
    int64 of shape ``y_pred.shape[:-1]``. ``ValueError`` naming the shapes otherwise,
    ``TypeError`` naming the dtype.
    """
    shape = tuple(y_pred.shape)
    if len(shape) == 0:
        raise ValueError("y_pred must have rank >= 1 (classes on the last axis), got a scalar")
    if np.dtype(y_pred.dtype) not in SUPPORTED_DTYPES:
        raise TypeError(f"y_pred must be float32 or float64, got {np.dtype(y_pred.dtype)}")
    if shape[-1] == 0:
        raise ValueError(f"y_pred must have at least one class (its last axis), got shape {shape}")
    if sparse:
        if tuple(y_true.shape) != shape[:-1]:
            raise ValueError(
                f"labels must have shape {shape[:-1]} (y_pred's without the class axis), got {tuple(y_true.shape)}"
            )
        if np.dtype(y_true.dtype) not in (np.dtype(np.int32), np.dtype(np.int64)):
            raise TypeError(f"labels must be int32 or int64, got {np.dtype(y_true.dtype)}")
    else:
        if tuple(y_true.shape) != shape:
            raise ValueError(
                f"y_true and y_pred must have the same shape, got y_true {tuple(y_true.shape)} and y_pred {shape}"
            )
        if y_true.dtype != y_pred.dtype:
            raise TypeError(f"y_true must have y_pred's dtype {y_pred.dtype}, got {y_true.dtype}")
    loss_shape = shape[:-1]
    return loss_shape, int(np.prod(loss_shape, dtype=np.int64)), int(shape[-1])


def check_labels(labels, n_classes, ignore_label):
    """Raise ``ValueError`` naming the first label outside ``[0, n_classes)`` (other
    than ``ignore_label``) and the class count."""
    bad = (labels < 0) | (labels >= n_classes)
    if ignore_label is not None:
        bad &= labels != ignore_label
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), labels.shape)
        raise ValueError(
            f"labels must be in [0, {n_classes}) (y_pred has {n_classes} classes, its last axis): "
            f"got label {int(labels[index])} at index {tuple(int(i) for i in index)}"
        )


def _outputs(loss_out, loss_shape, with_grad, grad_out, grad_shape, dtype):
    if loss_out is None:
        loss_out = np.empty(loss_shape, dtype)
    check_output("loss_out", loss_out, loss_shape, dtype)
    if not with_grad:
        return loss_out, None
    if grad_out is None:
        grad_out = np.empty(grad_shape, dtype)
    check_output("grad_out", grad_out, grad_shape, dtype)
    return loss_out, grad_out


# ---------------------------------------------------------------------------------
# Launchers


def softmax_cross_entropy(
    y_true, y_pred, label_smoothing=0.0, *, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0
):
    """Per-row softmax cross-entropy of logits ``y_pred`` against dense targets ``y_true``
    (``tf.nn.softmax_cross_entropy_with_logits`` with Keras's label smoothing), and its
    gradient ``(softmax - t) * grad_scale``.

    Returns ``(loss, grad)`` of shapes ``y_pred.shape[:-1]`` and ``y_pred.shape``;
    ``grad`` is None when ``with_grad`` is False.
    """
    loss_shape, n_rows, n_classes = softmax_layout(y_true, y_pred, sparse=False)
    dtype = np.dtype(y_pred.dtype)
    loss_out, grad_out = _outputs(loss_out, loss_shape, with_grad, grad_out, y_pred.shape, dtype)
    if n_rows:
        rows = (n_rows, n_classes)
        keep = dtype.type(1.0 - label_smoothing)
        bias = dtype.type(label_smoothing / n_classes)
        _dense_rows(
            np.ascontiguousarray(y_true).reshape(rows),
            np.ascontiguousarray(y_pred).reshape(rows),
            keep,
            bias,
            dtype.type(grad_scale),
            loss_out.reshape(n_rows),
            None if grad_out is None else grad_out.reshape(rows),
            chunks_for(n_rows, n_classes),
        )
    return loss_out, grad_out


def sparse_softmax_cross_entropy(
    labels, y_pred, ignore_class=None, *, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0
):
    """Per-row softmax cross-entropy of logits ``y_pred`` against integer ``labels``
    (``tf.nn.sparse_softmax_cross_entropy_with_logits``): ``lse - x_label``, gradient
    ``(softmax - onehot(label)) * grad_scale``. Rows labelled ``ignore_class`` cost 0
    with a zero gradient. Any other label outside ``[0, classes)`` is a ``ValueError``
    naming it and the class count.
    """
    loss_shape, n_rows, n_classes = softmax_layout(labels, y_pred, sparse=True)
    dtype = np.dtype(y_pred.dtype)
    labels = np.ascontiguousarray(labels)
    ignore_label = NO_IGNORE if ignore_class is None else int(ignore_class)
    check_labels(labels, n_classes, ignore_label)
    loss_out, grad_out = _outputs(loss_out, loss_shape, with_grad, grad_out, y_pred.shape, dtype)
    if n_rows:
        rows = (n_rows, n_classes)
        _sparse_rows(
            labels.reshape(n_rows).astype(np.int64, copy=False),
            np.ascontiguousarray(y_pred).reshape(rows),
            np.int64(ignore_label),
            dtype.type(grad_scale),
            loss_out.reshape(n_rows),
            None if grad_out is None else grad_out.reshape(rows),
            chunks_for(n_rows, n_classes),
        )
    return loss_out, grad_out


def focal_parameters(alpha, n_classes):
    """``alpha`` (a number or one per class) as a float64 array of ``n_classes``."""
    alpha = np.asarray(alpha, np.float64)
    if alpha.ndim == 0:
        return np.full(n_classes, float(alpha))
    if alpha.shape != (n_classes,):
        raise ValueError(
            f"alpha must be a number or have one value per class: y_pred has {n_classes} classes, "
            f"got alpha of shape {alpha.shape}"
        )
    return np.ascontiguousarray(alpha)


def clip_bounds(dtype):
    """Keras's clip ``[epsilon, 1 - epsilon]`` as rounded to ``dtype``, in float64."""
    dtype = np.dtype(dtype)
    return float(dtype.type(EPSILON)), float(dtype.type(1.0 - EPSILON))


def categorical_focal_cross_entropy(
    y_true,
    y_pred,
    alpha=0.25,
    gamma=2.0,
    label_smoothing=0.0,
    *,
    with_grad=True,
    loss_out=None,
    grad_out=None,
    grad_scale=1.0,
):
    """Per-row categorical focal cross-entropy of logits (Keras's
    ``categorical_focal_crossentropy(from_logits=True)``)::

        p = softmax(x),  c = clip(p, eps, 1 - eps),  t = y (1 - s) + s / K
        loss = -sum_j alpha_j (1 - c_j)^gamma t_j log c_j
        grad_j = p_j (g_j - sum_k g_k p_k),  g = d loss / d c (0 where clipped)

    Three reads of each row (the softmax Jacobian needs ``sum_k g_k p_k`` before any
    gradient is written); per-element math in float64.
    """
    loss_shape, n_rows, n_classes = softmax_layout(y_true, y_pred, sparse=False)
    dtype = np.dtype(y_pred.dtype)
    loss_out, grad_out = _outputs(loss_out, loss_shape, with_grad, grad_out, y_pred.shape, dtype)
    if n_rows:
        rows = (n_rows, n_classes)
        low, high = clip_bounds(dtype)
        _focal_rows(
            np.ascontiguousarray(y_true).reshape(rows),
            np.ascontiguousarray(y_pred).reshape(rows),
            focal_parameters(alpha, n_classes),
            float(gamma),
            1.0 - float(label_smoothing),
            float(label_smoothing) / n_classes,
            low,
            high,
            float(grad_scale),
            loss_out.reshape(n_rows),
            None if grad_out is None else grad_out.reshape(rows),
            chunks_for(n_rows, n_classes),
        )
    return loss_out, grad_out
