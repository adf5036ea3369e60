"""The CUDA kernels' launch shapes: how rows are spread over threads and blocks, and
each shape run in the simulator against the float64 reference.

The simulator costs ~2.3 ms per simulated thread, so blocks have 32 threads here and
the split threshold is lowered to reach every shape with a few blocks.
"""

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import cuda

from fusedloss.kernels import cuda as cuda_kernels
from fusedloss.kernels import reference
from fusedloss.kernels.cuda import LaunchShape, launch_shape


class Expected(NamedTuple):
    n_rows: int
    n_columns: int
    shape: LaunchShape


# The defaults: 256 threads per block, rows split below 1024 busy blocks.
DEFAULT_SHAPES = [
    Expected(1_000_000, 1, LaunchShape(1, 1, 1, 3907)),  # one thread per row
    Expected(1000, 8, LaunchShape(8, 8, 1, 32)),  # 32 rows per block
    Expected(1000, 5, LaunchShape(8, 5, 1, 32)),  # odd: groups of 8 for 5 columns
    Expected(5000, 1000, LaunchShape(256, 1000, 1, 5000)),  # block per row, no split
    Expected(10, 1_000_000, LaunchShape(256, 9709, 103, 1030)),  # few long rows: split
    Expected(1, 100_000_000, LaunchShape(256, 97657, 1024, 1024)),  # one row: split
    Expected(10, 3000, LaunchShape(256, 3000, 1, 10)),  # too short to split
    Expected(10_000_000, 8, LaunchShape(8, 8, 1, 8192)),  # grid-stride beyond MAX_BLOCKS
]


@pytest.mark.parametrize("case", DEFAULT_SHAPES, ids=lambda c: f"{c.n_rows}x{c.n_columns}")
def test_launch_shape_with_default_constants(case):
    assert launch_shape(case.n_rows, case.n_columns) == case.shape


@pytest.mark.parametrize(
    "n_rows, n_columns, expected",
    [
        (100_000, 1000, LaunchShape(32, 1000, 1, 8192)),  # 8 rows per block, grid-stride
        (4, 1_000_000, LaunchShape(32, 489, 2045, 1023)),  # split to fill 1024 blocks of 8 groups
        (100_000, 5, LaunchShape(8, 5, 1, 3125)),  # short rows: unchanged
    ],
)
def test_launch_shape_with_fewer_threads_per_row(monkeypatch, n_rows, n_columns, expected):
    monkeypatch.setattr(cuda_kernels, "MAX_THREADS_PER_ROW", 32)
    assert launch_shape(n_rows, n_columns) == expected


@settings(max_examples=300, deadline=None)
@given(
    n_rows=st.integers(1, 10**7),
    n_columns=st.integers(1, 10**8),
    log2_threads=st.integers(0, 10),
    log2_widest=st.integers(0, 10),
    min_blocks=st.integers(1, 4096),
)
def test_launch_shape_covers_every_column_once(n_rows, n_columns, log2_threads, log2_widest, min_blocks):
    threads, widest = 2**log2_threads, min(2**log2_threads, 2**log2_widest)
    original = cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MIN_BLOCKS, cuda_kernels.MAX_THREADS_PER_ROW
    cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MIN_BLOCKS, cuda_kernels.MAX_THREADS_PER_ROW = threads, min_blocks, widest
    try:
        shape = launch_shape(n_rows, n_columns)
    finally:
        cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MIN_BLOCKS, cuda_kernels.MAX_THREADS_PER_ROW = original
    per_row = shape.threads_per_row
    assert per_row & (per_row - 1) == 0 and min(n_columns, widest) <= per_row <= widest
    # The chunks tile the row: none empty, none missing.
    assert (shape.chunks_per_row - 1) * shape.columns_per_chunk < n_columns <= shape.chunks_per_row * shape.columns_per_chunk
    if shape.chunks_per_row > 1:
        assert per_row == widest and n_rows < min_blocks * (threads // widest)
        assert shape.columns_per_chunk >= widest * cuda_kernels.MIN_COLUMNS_PER_THREAD
    assert 1 <= shape.blocks <= cuda_kernels.MAX_BLOCKS


def test_threads_per_block_must_be_a_power_of_two(monkeypatch):
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 48)
    with pytest.raises(ValueError, match="THREADS_PER_BLOCK must be a power of two"):
        launch_shape(4, 4)


# ---------------------------------------------------------------------------------
# Each launch shape in the simulator


class Case(NamedTuple):
    name: str
    shape: tuple
    threads_per_row: int
    chunks_per_row: int
    max_blocks: int = 64
    max_threads_per_row: int = 1024


# With 32 threads per block and MIN_BLOCKS = 4.
CASES = [
    Case("thread-per-row", (37, 1), 1, 1),
    Case("group-per-row-odd", (9, 5), 8, 1),
    Case("group-per-row-rank3", (2, 3, 4), 4, 1),
    Case("block-per-row", (3, 41), 32, 1),
    Case("split-rows", (2, 601), 32, 2),
    Case("grid-stride", (9, 5), 8, 1, 1),
    # At most 8 threads per row: 4 groups per block, each summing a chunk of a row.
    Case("narrow-groups-split", (3, 200), 8, 3, max_threads_per_row=8),
]
DTYPES = [(np.float32, 2e-6, 1e-6), (np.float64, 1e-12, 1e-14)]


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(cuda_kernels, "MIN_BLOCKS", 4)


def random_pair(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(dtype), (3 * rng.normal(size=shape)).astype(dtype)


def poisoned(shape, dtype):
    """A device buffer full of NaN: an element the kernel misses stays NaN."""
    return cuda.to_device(np.full(shape, np.nan, dtype))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype, rtol, atol", DTYPES, ids=["float32", "float64"])
def test_each_launch_shape_matches_reference_on_device_buffers(small_blocks, monkeypatch, case, dtype, rtol, atol):
    monkeypatch.setattr(cuda_kernels, "MAX_BLOCKS", case.max_blocks)
    monkeypatch.setattr(cuda_kernels, "MAX_THREADS_PER_ROW", case.max_threads_per_row)
    n_rows = int(np.prod(case.shape[:-1]))
    picked = launch_shape(n_rows, case.shape[-1])
    assert (picked.threads_per_row, picked.chunks_per_row) == (case.threads_per_row, case.chunks_per_row)

    y_true, y_pred = random_pair(case.shape, dtype)
    device_true, device_pred = cuda.to_device(y_true), cuda.to_device(y_pred)
    loss_out, grad_out = poisoned(case.shape[:-1], dtype), poisoned(case.shape, dtype)
    loss, grad = cuda_kernels.huber(device_true, device_pred, 1.5, loss_out=loss_out, grad_out=grad_out)

    assert loss is loss_out and grad is grad_out
    want_loss, want_grad = reference.huber(y_true, y_pred, 1.5)
    np.testing.assert_allclose(loss.copy_to_host(), want_loss, rtol=rtol, atol=atol)
    np.testing.assert_allclose(grad.copy_to_host(), want_grad, rtol=rtol, atol=atol / case.shape[-1])
    np.testing.assert_array_equal(device_pred.copy_to_host(), y_pred)
    np.testing.assert_array_equal(device_true.copy_to_host(), y_true)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[4]], ids=lambda c: c.name)
def test_loss_only_kernel_on_host_arrays(small_blocks, case):
    y_true, y_pred = random_pair(case.shape, np.float32, seed=1)
    loss, grad = cuda_kernels.huber(y_true, y_pred, 1.0, with_grad=False)
    assert grad is None and isinstance(loss, np.ndarray)
    np.testing.assert_allclose(loss, reference.huber(y_true, y_pred, 1.0)[0], rtol=2e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the simulator's Python math
def test_non_finite_values_stay_in_their_row_and_column(small_blocks):
    # Split rows: the NaN must reach its row's loss through the chunk sums.
    y_true, y_pred = random_pair((2, 601), np.float32, seed=2)
    y_pred[0, 500] = np.nan
    y_pred[1, 3] = np.inf
    loss, grad = cuda_kernels.huber(y_true, y_pred, 1.0)
    want_loss, want_grad = reference.huber(y_true, y_pred, 1.0)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(want_loss))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(want_grad))
    assert np.isnan(grad[0, 500]) and np.isnan(grad[1, 3]) and np.isfinite(grad[0, 499])


def test_zero_columns_writes_nan_into_the_given_device_buffer(small_blocks):
    loss_out = cuda.to_device(np.zeros(4, np.float32))
    empty = cuda.to_device(np.zeros((4, 0), np.float32))
    loss, grad = cuda_kernels.huber(empty, empty, 1.0, loss_out=loss_out, grad_out=cuda.to_device(np.zeros((4, 0), np.float32)))
    assert loss is loss_out
    assert np.isnan(loss.copy_to_host()).all() and grad.shape == (4, 0)


def test_device_output_of_the_wrong_shape_is_refused(small_blocks):
    y = cuda.to_device(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"loss_out must be C-contiguous with shape \(3,\)"):
        cuda_kernels.huber(y, y, 1.0, loss_out=cuda.to_device(np.zeros(4, np.float32)))
