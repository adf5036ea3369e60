"""Softmax cross-entropy on the CPU: per row, an online softmax, then loss and gradient.

Math (one row of logits ``x`` over ``K`` classes, target distribution ``t``)::

    lse  = log sum_j exp(x_j)                      (computed as M + log S below)
    p_j  = exp(x_j - lse)                          softmax
    loss = sum_j t_j (lse - x_j)                   cross-entropy
    d loss / d x_j = p_j - t_j                     (TensorFlow's op; exact when sum t = 1)

Label smoothing (Keras): ``t = y (1 - s) + s / K``. Sparse labels: ``t`` is one-hot at
the label, ``loss = lse - x_label``; a row whose label is the ignored one costs 0 and
gets a zero gradient.

Two passes over each row:

1. ``M`` and ``S = sum_j exp(x_j - M)``, blocked: ``M`` starts as the row's first
   logit and is raised only when a block's sum shows a term above ``exp(RAISE_LOG)``,
   so no separate max pass is needed (a max reduction does not vectorise here; the
   sum of the call-free float32 ``exp`` does). ``M`` is always a logit of the row, so
   ``S >= 1``, and every term is at most ``exp(RAISE_LOG)``: nothing overflows.
2. The loss and the gradient, written once, already multiplied by ``grad_scale``.

Rows of ``K >= COLUMNS_PER_TASK`` classes are split into chunks of
``COLUMNS_PER_TASK`` when there are fewer than ``SPLIT_BELOW_ROWS`` rows (too few to
keep every thread busy): chunk partials ``(M_c, S_c)`` are combined in chunk order,
``M = max M_c``, ``S = sum_c S_c exp(M_c - M)``. The split depends on the shape only,
so results are bit-identical run to run, whatever the thread count. With more rows, a
row stays on one thread and its second read hits the core's cache.

Inputs are only read; outputs go into caller-given (pooled) buffers.
"""

import math

import numpy as np
from numba import njit, prange

from . import math as scalar_math
from .layout import SUPPORTED_DTYPES, check_output
from .softmax_reference import EPSILON, NO_IGNORE

# As cpu.py (which imports this module's launchers by name, so nothing here imports
# it): "reassoc" vectorises the row sums, no "nnan"/"ninf", NaN and Inf propagate.
FASTMATH = {"reassoc", "contract"}

COLUMNS_PER_TASK = 16384
SPLIT_BELOW_ROWS = 64
# Pass 1 sums exp over blocks this long (in L1), raising M when a block's sum exceeds
# exp(RAISE_LOG); a raised block is summed again against the new M.
BLOCK = 512
RAISE_LOG = 60.0


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


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _block_sum(x, row, first, last, m):
    s = _like(m, 0.0)
    for j in range(first, last):
        s += _exp(x[row, j] - m)
    return s


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _partial_softmax(x, row, first, last):
    """``(M, S)`` over columns ``[first, last)``: ``S = sum exp(x_j - M)``, ``M`` a
    logit of the range, every term at most ``exp(RAISE_LOG)``."""
    m = x[row, first]
    s = _like(m, 0.0)
    threshold = _like(m, math.exp(RAISE_LOG))
    for start in range(first, last, BLOCK):
        stop = min(start + BLOCK, last)
        block = _block_sum(x, row, start, stop, m)
        if block > threshold:  # a much larger logit: raise M to the block's max, redo the block
            top = m
            for j in range(start, stop):
                if x[row, j] > top:
                    top = x[row, j]
            s = s * _exp(m - top)
            m = top
            block = _block_sum(x, row, start, stop, m)
        s += block
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


# ---------------------------------------------------------------------------------
# Dense (soft) targets: categorical cross-entropy from logits


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _dense_pass(y, x, row, first, last, m, s, keep, bias, grad_factor, grad_out):
    """Loss part of columns ``[first, last)``; writes their gradient.

    ``t_j = y_j keep + bias``; ``loss_j = t_j (log S - (x_j - M))`` (TensorFlow's
    form: ``x_j - M`` is exact near the max, so |x| = 1e4 loses nothing);
    ``grad_j = (exp(x_j - M) / S - t_j) * grad_factor``.
    """
    log_s = _like(m, math.log(s))
    inv_s = _like(m, 1.0) / s
    total = _like(m, 0.0)
    for j in range(first, last):
        shifted = x[row, j] - m
        t = y[row, j] * keep + bias
        total += t * (log_s - shifted)
        if grad_out is not None:
            grad_out[row, j] = (_exp(shifted) * inv_s - t) * grad_factor
    return total


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy")
def _dense_rows(y, x, keep, bias, grad_factor, loss_out, grad_out, n_chunks):
    n_rows, n_columns = x.shape
    if n_chunks == 1:
        for row in prange(n_rows):
            m, s = _partial_softmax(x, row, 0, n_columns)
            loss_out[row] = _dense_pass(y, x, row, 0, n_columns, m, s, keep, bias, grad_factor, grad_out)
        return
    n_tasks = n_rows * n_chunks
    maxima = np.empty(n_tasks, x.dtype)
    sums = np.empty(n_tasks, x.dtype)
    for task in prange(n_tasks):
        row = task // n_chunks
        first = (task % n_chunks) * COLUMNS_PER_TASK
        maxima[task], sums[task] = _partial_softmax(x, row, first, min(first + COLUMNS_PER_TASK, n_columns))
    partial = np.empty(n_tasks, x.dtype)
    for task in prange(n_tasks):
        row = task // n_chunks
        first = (task % n_chunks) * COLUMNS_PER_TASK
        m, s = _combine(maxima, sums, row, n_chunks)
        last = min(first + COLUMNS_PER_TASK, n_columns)
        partial[task] = _dense_pass(y, x, row, first, last, m, s, keep, bias, grad_factor, grad_out)
    for row in prange(n_rows):
        total = partial[row * n_chunks]
        for c in range(1, n_chunks):
            total += partial[row * n_chunks + c]
        loss_out[row] = total


# ---------------------------------------------------------------------------------
# Sparse integer labels


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _sparse_pass(label, x, row, first, last, m, s, grad_factor, grad_out):
    """Writes ``(p_j - [j == label]) * grad_factor`` for columns ``[first, last)``."""
    inv_s = _like(m, 1.0) / s
    for j in range(first, last):
        grad_out[row, j] = _exp(x[row, j] - m) * inv_s * grad_factor
    if label >= first and label < last:
        grad_out[row, label] = (_exp(x[row, label] - m) * inv_s - _like(m, 1.0)) * grad_factor


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _zero(grad_out, row, first, last):
    for j in range(first, last):
        grad_out[row, j] = 0


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy")
def _sparse_rows(labels, x, ignore_label, grad_factor, loss_out, grad_out, n_chunks):
    n_rows, n_columns = x.shape
    if n_chunks == 1:
        for row in prange(n_rows):
            label = labels[row]
            if label == ignore_label:
                loss_out[row] = _like(x[row, 0], 0.0)
                if grad_out is not None:
                    _zero(grad_out, row, 0, n_columns)
                continue
            m, s = _partial_softmax(x, row, 0, n_columns)
            # loss = lse - x_label = log S - (x_label - M)
            loss_out[row] = _like(m, math.log(s)) - (x[row, label] - m)
            if grad_out is not None:
                _sparse_pass(label, x, row, 0, n_columns, m, s, grad_factor, grad_out)
        return
    n_tasks = n_rows * n_chunks
    maxima = np.empty(n_tasks, x.dtype)
    sums = np.empty(n_tasks, x.dtype)
    for task in prange(n_tasks):
        row = task // n_chunks
        first = (task % n_chunks) * COLUMNS_PER_TASK
        maxima[task], sums[task] = _partial_softmax(x, row, first, min(first + COLUMNS_PER_TASK, n_columns))
    for task in prange(n_tasks):
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
                _zero(grad_out, row, first, last)
            else:
                _sparse_pass(label, x, row, first, last, m, s, grad_factor, grad_out)


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


@njit(parallel=True, fastmath=FASTMATH, error_model="numpy")
def _focal_rows(y, x, alpha, gamma, keep, bias, low, high, grad_factor, loss_out, grad_out, n_chunks):
    n_rows, n_columns = x.shape
    n_tasks = n_rows * n_chunks
    width = COLUMNS_PER_TASK if n_chunks > 1 else n_columns
    maxima = np.empty(n_tasks, x.dtype)
    sums = np.empty(n_tasks, x.dtype)
    for task in prange(n_tasks):
        row = task // n_chunks
        first = (task % n_chunks) * width
        maxima[task], sums[task] = _partial_softmax(x, row, first, min(first + width, n_columns))
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
