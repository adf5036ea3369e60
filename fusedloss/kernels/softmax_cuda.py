"""Softmax cross-entropies on the GPU: the contract and launcher signatures of
``softmax_cpu.py`` (same arguments, per-row losses, gradients already multiplied by
``grad_scale``; inputs only read).

Math (one row of logits ``x`` over ``K`` classes, target distribution ``t``)::

    M = max_j x_j,   S = sum_j exp(x_j - M),   lse = M + log S
    p_j  = exp(x_j - M) / S                        softmax
    loss = sum_j t_j (log S - (x_j - M))           cross-entropy (TensorFlow's form)
    d loss / d x_j = p_j - t_j

with Keras's label smoothing ``t = y (1 - s) + s / K``, sparse labels (``t`` one-hot;
an ignored label costs 0 with a zero gradient) and the focal loss of
``softmax_cpu.categorical_focal_cross_entropy``.

Launch shape: ``cuda.launch_shape``, as for the elementwise losses, so one place picks
it for every kernel. A *group* of ``threads_per_row`` threads (a whole block for rows
of more than a block's threads) owns a row, or a chunk of one:

1. each thread walks its strided columns keeping ``(m, s)``, a running max and the sum
   of ``exp(x_j - m)`` (online softmax, Milakov & Gimelshein 2018: one read, no
   separate max pass); the group merges its threads' pairs in a shared-memory tree
   (no warp shuffles, which the CUDA simulator lacks);
2. the same threads walk the columns again and write the gradient, the row's loss
   summed in float64 alongside (the focal loss needs one more pass first: its
   gradient uses ``sum_k g_k p_k`` of the whole row).

Long rows too few to fill the GPU are split into chunks (``launch_shape`` decides,
from the shape only): ``_partials`` writes each chunk's ``(M_c, S_c)``; the loss
kernel then merges its row's partials in chunk order, every thread the same way, so
results are identical on every run and every GPU; the chunks' loss sums are added
in order by ``cuda._add_chunks``.

Float32 logits are computed in float32 (constants typed by ``_like``, ``exp`` the
call-free float32 one of ``math.py``, as in ``cuda.py``); only the loss sums and the
shared-memory buffers are float64, and the focal loss is float32 too (the CPU kernel
computes its per-element terms in float64; here they cost float64 arithmetic, which
many GPUs run at 1/32 or 1/64 of the float32 rate, so the float32 results agree with
the CPU's to float32 rounding of ``1 - p``, not to the last bit).

Sparse labels out of ``[0, K)`` (other than the ignore label): the host launcher
raises ``ValueError`` (``softmax_cpu.check_labels``) when the labels are on the host;
labels already on the device are not read back, and such a row gets a NaN loss and a
NaN gradient instead, without any access out of bounds.
"""

import math

import numba
import numpy as np
from numba import cuda
from numba.cuda.extending import register_jitable

from . import cuda as row_cuda
from . import math as scalar_math
from .softmax_cpu import check_labels, clip_bounds, focal_parameters, softmax_layout
from .softmax_reference import NO_IGNORE

MAX_THREADS_PER_BLOCK = row_cuda.MAX_THREADS_PER_BLOCK

# Device functions already registered by cuda.py (once is enough: a second
# registration would be a second, ambiguous overload).
_like = scalar_math._like
_exp = scalar_math._exp
_class_weight = scalar_math._class_weight


# ---------------------------------------------------------------------------------
# Device functions shared by the kernels


@register_jitable(inline="always")
def _merge(m, s, other_m, other_s):
    """``(M, S)`` of two parts of a row given as ``(m, s)`` pairs, ``S = sum exp(x - M)``::

        M = max(m, m'),   S = s exp(m - M) + s' exp(m' - M)

    An empty part is ``(-inf, 0)`` (a thread without columns) and leaves the other
    as it is; every other part has ``s >= 1`` (its maximum's own term), or NaN.
    Equal maxima add without an ``exp``: that keeps ``-inf`` logits (masks) from
    turning into ``exp(-inf - -inf) = NaN``; a part seen so far only as ``-inf`` is
    then wiped by ``exp(-inf - M) = 0`` once a finite logit arrives. NaN anywhere
    gives a NaN sum (comparisons with NaN fail, so it reaches an ``exp``).
    """
    zero = _like(s, 0.0)  # an int literal would compare in float64
    if other_s == zero:
        return m, s
    if s == zero:
        return other_m, other_s
    if other_m > m:
        return other_m, s * _exp(m - other_m) + other_s
    if other_m == m:
        return m, s + other_s
    return m, s + other_s * _exp(other_m - m)


@register_jitable(inline="always")
def _columns_softmax(x, row, start, stop, lane, width):
    """This thread's ``(m, s)`` over columns ``lane, lane + width, ...`` of
    ``[start, stop)``; ``(-inf, 0)`` when it has none (merging it changes nothing)."""
    one = _like(x[0, 0], 1.0)
    first = start + lane
    if first >= stop:
        return _like(x[0, 0], -math.inf), _like(x[0, 0], 0.0)
    m = x[row, first]
    s = one
    for column in range(first + width, stop, width):
        m, s = _merge(m, s, x[row, column], one)
    return m, s


@register_jitable(inline="always")
def _merge_groups(maxima, sums, thread, lane, width, m, s):
    """Shared-memory tree of ``_merge`` over each group of ``width`` threads (a power
    of two); returns the group's ``(M, S)`` to every thread of it. Every thread of the
    block must call it: it synchronises the block. The buffers are float64 (one type
    for every kernel); the values pass through them exactly."""
    maxima[thread] = m
    sums[thread] = s
    cuda.syncthreads()
    step = width // 2
    while step > 0:
        if lane < step:
            m, s = _merge(m, s, _like(m, maxima[thread + step]), _like(m, sums[thread + step]))
            maxima[thread] = m
            sums[thread] = s
        cuda.syncthreads()
        step //= 2
    m = _like(m, maxima[thread - lane])
    s = _like(m, sums[thread - lane])
    # Nobody may reuse the buffers before the whole group has read its result.
    cuda.syncthreads()
    return m, s


@register_jitable(inline="always")
def _sum_groups(buffer, thread, lane, width, value):
    """``cuda._sum_groups`` (a tree sum over each group; the result at ``buffer[thread -
    lane]``; every thread must call it). Not that one itself: the simulator swaps in its
    own ``cuda`` module only in the globals of the kernels' module, so a device function
    calling ``cuda.syncthreads`` must live in this one."""
    buffer[thread] = value
    cuda.syncthreads()
    step = width // 2
    while step > 0:
        if lane < step:
            buffer[thread] += buffer[thread + step]
        cuda.syncthreads()
        step //= 2


@register_jitable(inline="always")
def _row_softmax(x, row, start, stop, lane, width, chunks, partial_maxima, partial_sums, maxima, sums, thread):
    """The row's ``(M, S)``: reduced by the group from columns ``[start, stop)`` when
    rows are not split (``chunks == 1``), else merged from the row's chunk partials in
    chunk order, by every thread alike. ``chunks`` is the same for the whole grid, so
    the branch keeps every thread of a block on the same barriers."""
    if chunks == 1:
        m, s = _columns_softmax(x, row, start, stop, lane, width)
        return _merge_groups(maxima, sums, thread, lane, width, m, s)
    base = row * chunks
    m = partial_maxima[base]
    s = partial_sums[base]
    for chunk in range(1, chunks):
        m, s = _merge(m, s, partial_maxima[base + chunk], partial_sums[base + chunk])
    return m, s


@register_jitable(inline="always")
def _grid(x, threads_per_row, columns_per_chunk):
    """This thread's place in a launch over the segments (row chunks) of ``x``:
    ``(thread, lane, first, step, chunks, n_segments)``, its block's groups starting at
    segments ``first, first + step, ...``. The bounds depend on the block only, so its
    threads reach the same barriers."""
    thread = cuda.threadIdx.x
    groups_per_block = cuda.blockDim.x // threads_per_row
    n_rows, n_columns = x.shape
    chunks = (n_columns + columns_per_chunk - 1) // columns_per_chunk
    first = cuda.blockIdx.x * groups_per_block
    return thread, thread % threads_per_row, first, cuda.gridDim.x * groups_per_block, chunks, n_rows * chunks


@register_jitable(inline="always")
def _segment_bounds(segment, n_segments, chunks, columns_per_chunk, n_columns):
    """``(row, start, stop)`` of a group's segment (a row, or a chunk of one); an empty
    column range past the last segment, whose threads still join the barriers."""
    if segment >= n_segments:
        return 0, 0, 0
    row = segment // chunks
    start = (segment % chunks) * columns_per_chunk
    return row, start, min(start + columns_per_chunk, n_columns)


# ---------------------------------------------------------------------------------
# Chunk partials of split rows (every loss)


@cuda.jit
def _partials(x, partial_maxima, partial_sums, threads_per_row, columns_per_chunk):
    """``(M_c, S_c)`` of every chunk of every row: ``partial_*[row * chunks + chunk]``."""
    maxima = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
    sums = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
    thread, lane, first_segment, segment_step, chunks, n_segments = _grid(x, threads_per_row, columns_per_chunk)
    n_columns = x.shape[1]
    for first in range(first_segment, n_segments, segment_step):
        segment = first + thread // threads_per_row
        row, start, stop = _segment_bounds(segment, n_segments, chunks, columns_per_chunk, n_columns)
        m, s = _columns_softmax(x, row, start, stop, lane, threads_per_row)
        m, s = _merge_groups(maxima, sums, thread, lane, threads_per_row, m, s)
        if lane == 0 and segment < n_segments:
            partial_maxima[segment] = m
            partial_sums[segment] = s


# ---------------------------------------------------------------------------------
# Dense (soft) targets


def _dense_kernel(with_grad):
    @cuda.jit
    def kernel(
        y, x, keep, bias, grad_factor, partial_maxima, partial_sums, loss_sums, grad_out, threads_per_row, columns_per_chunk
    ):
        """``loss_sums[segment] = sum_j t_j (log S - (x_j - M))`` over the segment's
        columns, ``t_j = y_j keep + bias``; ``grad_j = (p_j - t_j) grad_factor``."""
        maxima = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
        sums = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
        thread, lane, first_segment, segment_step, chunks, n_segments = _grid(x, threads_per_row, columns_per_chunk)
        n_columns = x.shape[1]
        for first in range(first_segment, n_segments, segment_step):
            segment = first + thread // threads_per_row
            row, start, stop = _segment_bounds(segment, n_segments, chunks, columns_per_chunk, n_columns)
            m, s = _row_softmax(
                x, row, start, stop, lane, threads_per_row, chunks, partial_maxima, partial_sums, maxima, sums, thread
            )
            total = 0.0  # float64: a sum over 1e5 columns keeps its float32 terms whole
            if segment < n_segments:  # (past the end, S = 0 has no logarithm)
                log_s = _like(m, math.log(s))
                inv_s = _like(m, 1.0) / s
                for column in range(start + lane, stop, threads_per_row):
                    shifted = x[row, column] - m  # exact near the max: |x| = 1e4 loses nothing
                    t = y[row, column] * keep + bias
                    total += t * (log_s - shifted)
                    if with_grad:
                        grad_out[row, column] = (_exp(shifted) * inv_s - t) * grad_factor
            _sum_groups(maxima, thread, lane, threads_per_row, total)
            if lane == 0 and segment < n_segments:
                loss_sums[segment] = maxima[thread]
            cuda.syncthreads()

    return kernel


_dense_kernels = (_dense_kernel(True), _dense_kernel(False))


# ---------------------------------------------------------------------------------
# Sparse integer labels


def _sparse_kernel(with_grad):
    @cuda.jit
    def kernel(
        labels, x, ignore_label, grad_factor, partial_maxima, partial_sums, loss_out, grad_out, threads_per_row, columns_per_chunk
    ):
        """``loss = log S - (x_label - M)``, ``grad_j = (p_j - [j = label]) grad_factor``;
        the ignore label gives 0 and a zero gradient, any other label out of
        ``[0, K)`` NaN for both (never an index)."""
        maxima = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
        sums = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
        thread, lane, first_segment, segment_step, chunks, n_segments = _grid(x, threads_per_row, columns_per_chunk)
        n_columns = x.shape[1]
        for first in range(first_segment, n_segments, segment_step):
            segment = first + thread // threads_per_row
            row, start, stop = _segment_bounds(segment, n_segments, chunks, columns_per_chunk, n_columns)
            label = labels[row] if segment < n_segments else ignore_label
            ignored = label == ignore_label
            valid = not ignored and label >= 0 and label < n_columns
            # A row without a loss to compute reads none of its logits; its threads
            # still join the group's reduction.
            read_stop = stop if valid else start
            m, s = _row_softmax(
                x, row, start, read_stop, lane, threads_per_row, chunks, partial_maxima, partial_sums, maxima, sums, thread
            )
            if segment < n_segments:
                if valid:
                    if lane == 0 and segment % chunks == 0:
                        loss_out[row] = _like(m, math.log(s)) - (x[row, label] - m)
                    if with_grad:
                        inv_s = _like(m, 1.0) / s
                        one = _like(m, 1.0)
                        zero = _like(m, 0.0)
                        for column in range(start + lane, stop, threads_per_row):
                            target = one if column == label else zero
                            grad_out[row, column] = (_exp(x[row, column] - m) * inv_s - target) * grad_factor
                else:
                    # 0 for the ignore label, NaN for a label out of range
                    filler = _like(m, 0.0) if ignored else _like(m, math.nan)
                    if lane == 0 and segment % chunks == 0:
                        loss_out[row] = filler
                    if with_grad:
                        for column in range(start + lane, stop, threads_per_row):
                            grad_out[row, column] = filler

    return kernel


_sparse_kernels = (_sparse_kernel(True), _sparse_kernel(False))


# ---------------------------------------------------------------------------------
# Categorical focal cross-entropy from logits


@register_jitable(inline="always")
def _focal_terms(p, t, alpha, gamma, low, high):
    """For ``c = clip(p, low, high)``: the loss term ``L = -alpha (1 - c)^gamma t log c``
    and ``g = dL/dc`` where the clip passes the gradient (``low <= p <= high``), else 0::

        dL/dc = alpha t (gamma (1 - c)^(gamma - 1) log c - (1 - c)^gamma / c)
    """
    c = min(max(p, low), high)
    one_minus = _like(p, 1.0) - c
    w = one_minus**gamma
    log_c = math.log(c)
    value = -alpha * w * t * log_c
    slope = _like(p, 0.0)
    if p >= low and p <= high:
        slope = alpha * t * (gamma * (w / one_minus) * log_c - w / c)
    return value, slope


def _focal_kernel(with_grad):
    @cuda.jit
    def kernel(
        y,
        x,
        alpha,
        gamma,
        keep,
        bias,
        low,
        high,
        grad_factor,
        partial_maxima,
        partial_sums,
        loss_sums,
        dots,
        grad_out,
        threads_per_row,
        columns_per_chunk,
    ):
        """``loss_sums[segment] = sum_j L_j`` and ``dots[segment] = sum_j g_j p_j``
        over the segment's columns; when rows are not split, the gradient
        ``grad_j = p_j (g_j - sum_k g_k p_k) grad_factor`` too (split rows:
        ``_focal_gradient``, once every chunk's dot is known)."""
        maxima = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
        sums = cuda.shared.array(MAX_THREADS_PER_BLOCK, numba.float64)
        thread, lane, first_segment, segment_step, chunks, n_segments = _grid(x, threads_per_row, columns_per_chunk)
        n_columns = x.shape[1]
        for first in range(first_segment, n_segments, segment_step):
            segment = first + thread // threads_per_row
            row, start, stop = _segment_bounds(segment, n_segments, chunks, columns_per_chunk, n_columns)
            m, s = _row_softmax(
                x, row, start, stop, lane, threads_per_row, chunks, partial_maxima, partial_sums, maxima, sums, thread
            )
            total = 0.0  # float64 sums, as in the dense kernel
            dot = 0.0
            if segment < n_segments:
                inv_s = _like(m, 1.0) / s
                for column in range(start + lane, stop, threads_per_row):
                    p = _exp(x[row, column] - m) * inv_s
                    t = y[row, column] * keep + bias
                    value, slope = _focal_terms(p, t, _class_weight(alpha, column), gamma, low, high)
                    total += value
                    dot += slope * p
            _sum_groups(maxima, thread, lane, threads_per_row, total)
            _sum_groups(sums, thread, lane, threads_per_row, dot)
            if lane == 0 and segment < n_segments:
                loss_sums[segment] = maxima[thread]
                if chunks > 1:  # (whole rows: dots is the loss, a placeholder)
                    dots[segment] = sums[thread]
            if with_grad and chunks == 1 and segment < n_segments:
                row_dot = _like(m, sums[thread - lane])
                for column in range(start + lane, stop, threads_per_row):
                    p = _exp(x[row, column] - m) * inv_s
                    t = y[row, column] * keep + bias
                    _, slope = _focal_terms(p, t, _class_weight(alpha, column), gamma, low, high)
                    grad_out[row, column] = p * (slope - row_dot) * grad_factor
            cuda.syncthreads()

    return kernel


_focal_kernels = (_focal_kernel(True), _focal_kernel(False))


@cuda.jit
def _focal_gradient(
    y, x, alpha, gamma, keep, bias, low, high, grad_factor, partial_maxima, partial_sums, dots, grad_out, threads_per_row, columns_per_chunk
):
    """The focal gradient of split rows: ``(M, S)`` and ``sum_k g_k p_k`` merged from
    the row's chunks in chunk order, then ``grad_j = p_j (g_j - dot) grad_factor``."""
    thread, lane, first_segment, segment_step, chunks, n_segments = _grid(x, threads_per_row, columns_per_chunk)
    n_columns = x.shape[1]
    for first in range(first_segment, n_segments, segment_step):
        segment = first + thread // threads_per_row
        if segment < n_segments:
            row, start, stop = _segment_bounds(segment, n_segments, chunks, columns_per_chunk, n_columns)
            base = row * chunks
            m = partial_maxima[base]
            s = partial_sums[base]
            row_dot = dots[base]
            for chunk in range(1, chunks):
                m, s = _merge(m, s, partial_maxima[base + chunk], partial_sums[base + chunk])
                row_dot += dots[base + chunk]
            inv_s = _like(m, 1.0) / s
            dot = _like(m, row_dot)
            for column in range(start + lane, stop, threads_per_row):
                p = _exp(x[row, column] - m) * inv_s
                t = y[row, column] * keep + bias
                _, slope = _focal_terms(p, t, _class_weight(alpha, column), gamma, low, high)
                grad_out[row, column] = p * (slope - dot) * grad_factor


# ---------------------------------------------------------------------------------
# Launchers


class _Launch:
    """What every launcher does around its kernel: checks, device buffers, the launch
    shape, the chunk partials of split rows, and the results."""

    def __init__(self, y_true, y_pred, sparse, with_grad, loss_out, grad_out):
        self.on_host = not row_cuda._on_device(y_pred)
        if not self.on_host:
            # numba's views first, so that the checks read numba dtypes (a torch
            # tensor's dtype is not NumPy's); host labels stay on the host to be checked.
            y_pred = row_cuda._as_device(y_pred)
            if row_cuda._on_device(y_true):
                y_true = row_cuda._as_device(y_true)
        self.loss_shape, self.n_rows, self.n_classes = softmax_layout(y_true, y_pred, sparse)
        self.dtype = np.dtype(y_pred.dtype)
        self.y_true, self.y_pred = y_true, y_pred
        self.loss_out, self.grad_out = loss_out, grad_out
        self.loss_device = row_cuda._output_buffer("loss_out", loss_out, self.loss_shape, self.dtype, self.on_host)
        self.grad_device = (
            row_cuda._output_buffer("grad_out", grad_out, tuple(y_pred.shape), self.dtype, self.on_host)
            if with_grad
            else None
        )
        self.shape = row_cuda.launch_shape(self.n_rows, self.n_classes) if self.n_rows else None

    def logits(self):
        return row_cuda._as_device(self.y_pred).reshape(self.n_rows, self.n_classes)

    def targets(self, sparse=False):
        """Dense targets as ``(n_rows, n_classes)``, labels as ``(n_rows,)``, on the device."""
        shape = (self.n_rows,) if sparse else (self.n_rows, self.n_classes)
        return row_cuda._as_device(self.y_true).reshape(shape)

    @property
    def chunks(self):
        return self.shape.chunks_per_row

    @property
    def grid(self):
        return self.shape.blocks, row_cuda.THREADS_PER_BLOCK

    @property
    def loss_rows(self):
        return self.loss_device.reshape(self.n_rows)

    def grad_rows(self):
        """The gradient's ``(n_rows, n_classes)`` view, or the loss (never written) when
        there is no gradient, as ``cuda.run_rows`` passes it."""
        return self.loss_rows if self.grad_device is None else self.grad_device.reshape(self.n_rows, self.n_classes)

    def partials(self, logits):
        """The chunk partials ``(M_c, S_c)`` of split rows; the loss itself (never read)
        when rows are whole, so that both cases compile to one kernel signature."""
        if self.chunks == 1:
            return self.loss_rows, self.loss_rows
        n_segments = self.n_rows * self.chunks
        maxima = cuda.device_array(n_segments, self.dtype)
        sums = cuda.device_array(n_segments, self.dtype)
        _partials[self.grid](logits, maxima, sums, self.shape.threads_per_row, self.shape.columns_per_chunk)
        return maxima, sums

    def chunk_sums(self):
        """Where a loss kernel writes its per-segment sums: the loss itself for whole rows."""
        if self.chunks == 1:
            return self.loss_rows
        return cuda.device_array(self.n_rows * self.chunks, self.dtype)

    def add_chunks(self, chunk_sums):
        if self.chunks > 1:
            threads = row_cuda.THREADS_PER_BLOCK
            row_cuda._add_chunks[-(-self.n_rows // threads), threads](
                chunk_sums.reshape(self.n_rows, self.chunks), self.loss_rows
            )

    def results(self):
        return row_cuda._results(self.on_host, (self.loss_device, self.loss_out), (self.grad_device, self.grad_out))


def softmax_cross_entropy(
    y_true, y_pred, label_smoothing=0.0, *, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0
):
    """Per-row softmax cross-entropy of logits ``y_pred`` against dense targets
    ``y_true`` with Keras's label smoothing, and its gradient ``(softmax - t) *
    grad_scale``, on the GPU; ``softmax_cpu.softmax_cross_entropy``'s contract.

    Host arrays give host results; device arrays (numba's, or anything with
    ``__cuda_array_interface__``) give device arrays, written into ``loss_out`` and
    ``grad_out`` when given.
    """
    launch = _Launch(y_true, y_pred, False, with_grad, loss_out, grad_out)
    if launch.n_rows:
        dtype = launch.dtype
        logits = launch.logits()
        partial_maxima, partial_sums = launch.partials(logits)
        chunk_sums = launch.chunk_sums()
        kernel = _dense_kernels[0] if with_grad else _dense_kernels[1]
        kernel[launch.grid](
            launch.targets(),
            logits,
            dtype.type(1.0 - label_smoothing),
            dtype.type(label_smoothing / launch.n_classes),
            dtype.type(grad_scale),
            partial_maxima,
            partial_sums,
            chunk_sums,
            launch.grad_rows(),
            launch.shape.threads_per_row,
            launch.shape.columns_per_chunk,
        )
        launch.add_chunks(chunk_sums)
    return launch.results()


def sparse_softmax_cross_entropy(
    labels, y_pred, ignore_class=None, *, with_grad=True, loss_out=None, grad_out=None, grad_scale=1.0
):
    """Per-row softmax cross-entropy of logits ``y_pred`` against int32/int64
    ``labels``, gradient ``(softmax - onehot(label)) * grad_scale``, on the GPU;
    ``softmax_cpu.sparse_softmax_cross_entropy``'s contract. Rows labelled
    ``ignore_class`` cost 0 with a zero gradient. Any other label outside ``[0,
    classes)``: ``ValueError`` when the labels are host arrays, a NaN row (loss and
    gradient) when they are already on the device.
    """
    launch = _Launch(labels, y_pred, True, with_grad, loss_out, grad_out)
    ignore_label = NO_IGNORE if ignore_class is None else int(ignore_class)
    if isinstance(labels, np.ndarray):
        check_labels(labels, launch.n_classes, ignore_label)
    if launch.n_rows:
        logits = launch.logits()
        partial_maxima, partial_sums = launch.partials(logits)
        kernel = _sparse_kernels[0] if with_grad else _sparse_kernels[1]
        kernel[launch.grid](
            launch.targets(sparse=True),
            logits,
            np.int64(ignore_label),
            launch.dtype.type(grad_scale),
            partial_maxima,
            partial_sums,
            launch.loss_rows,
            launch.grad_rows(),
            launch.shape.threads_per_row,
            launch.shape.columns_per_chunk,
        )
    return launch.results()


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
    """Per-row categorical focal cross-entropy of logits (Keras's formula) on the GPU;
    ``softmax_cpu.categorical_focal_cross_entropy``'s contract::

        p = softmax(x),  c = clip(p, eps, 1 - eps),  t = y (1 - s) + s / K
        loss = -sum_j alpha_j (1 - c_j)^gamma t_j log c_j
        grad_j = p_j (g_j - sum_k g_k p_k),  g = d loss / d c (0 where clipped)

    ``alpha``: a number, or one weight per class (copied to the device per call).
    """
    launch = _Launch(y_true, y_pred, False, with_grad, loss_out, grad_out)
    if launch.n_rows:
        dtype = launch.dtype
        if np.ndim(alpha) == 0:
            alpha_values = dtype.type(alpha)
        else:
            alpha_values = cuda.to_device(focal_parameters(alpha, launch.n_classes).astype(dtype))
        low, high = clip_bounds(dtype)
        logits = launch.logits()
        targets = launch.targets()
        constants = (
            alpha_values,
            dtype.type(gamma),
            dtype.type(1.0 - label_smoothing),
            dtype.type(label_smoothing / launch.n_classes),
            dtype.type(low),
            dtype.type(high),
            dtype.type(grad_scale),
        )
        partial_maxima, partial_sums = launch.partials(logits)
        chunk_sums = launch.chunk_sums()
        dots = launch.loss_rows if launch.chunks == 1 else cuda.device_array(launch.n_rows * launch.chunks, dtype)
        kernel = _focal_kernels[0] if with_grad else _focal_kernels[1]
        threads_per_row, columns_per_chunk = launch.shape.threads_per_row, launch.shape.columns_per_chunk
        kernel[launch.grid](
            targets,
            logits,
            *constants,
            partial_maxima,
            partial_sums,
            chunk_sums,
            dots,
            launch.grad_rows(),
            threads_per_row,
            columns_per_chunk,
        )
        if with_grad and launch.chunks > 1:
            _focal_gradient[launch.grid](
                targets,
                logits,
                *constants,
                partial_maxima,
                partial_sums,
                dots,
                launch.grad_rows(),
                threads_per_row,
                columns_per_chunk,
            )
        launch.add_chunks(chunk_sums)
    return launch.results()


# ---------------------------------------------------------------------------------
# What cuda.compile_all_ptx compiles: every kernel above, for float32 and float64.
# A kernel without a loss-only twin is listed alone (compiled as with_grad=True).


def _ptx_arguments(kind):
    def make(dtype, with_grad):
        rows = np.zeros((2, 3), dtype)
        per_row = np.zeros(2, dtype)
        grad = rows if with_grad else per_row
        number = dtype.type(1.0)
        if kind == "partials":
            return (rows, per_row, per_row, 1, 1)
        if kind == "dense":
            return (rows, rows, number, number, number, per_row, per_row, per_row, grad, 1, 1)
        if kind == "sparse":
            return (np.zeros(2, np.int64), rows, np.int64(0), number, per_row, per_row, per_row, grad, 1, 1)
        focal_constants = (np.zeros(3, dtype), number, number, number, number, number, number)
        if kind == "focal":
            return (rows, rows, *focal_constants, per_row, per_row, per_row, per_row, grad, 1, 1)
        return (rows, rows, *focal_constants, per_row, per_row, per_row, rows, 1, 1)  # focal gradient

    return make


row_cuda.PTX_KERNELS.update(
    {
        "softmax_partials": ((_partials,), _ptx_arguments("partials")),
        "softmax_cross_entropy": (_dense_kernels, _ptx_arguments("dense")),
        "sparse_softmax_cross_entropy": (_sparse_kernels, _ptx_arguments("sparse")),
        "categorical_focal_cross_entropy": (_focal_kernels, _ptx_arguments("focal")),
        "categorical_focal_cross_entropy[split gradient]": ((_focal_gradient,), _ptx_arguments("focal_gradient")),
    }
)

__all__ = ["softmax_cross_entropy", "sparse_softmax_cross_entropy", "categorical_focal_cross_entropy"]
