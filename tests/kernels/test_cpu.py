"""CPU kernels against the float64 NumPy reference."""

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fusedloss.kernels import cpu, reference


class Case(NamedTuple):
    shape: tuple
    dtype: type
    rtol: float
    atol: float


SHAPES = [(7,), (41, 401), (3, 5, 33), (2, 40000), (1, 1), (5000, 3)]  # odd, long and short rows
TOLERANCES = {np.float32: (2e-6, 1e-6), np.float64: (1e-12, 1e-14)}
CASES = [Case(shape, dtype, *TOLERANCES[dtype]) for shape in SHAPES for dtype in (np.float32, np.float64)]


def random_pair(shape, dtype, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape).astype(dtype), (scale * rng.normal(size=shape)).astype(dtype))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.shape}-{np.dtype(c.dtype).name}")
@pytest.mark.parametrize("delta", [0.5, 1.0, 2.5])
def test_huber_matches_reference(case, delta):
    y_true, y_pred = random_pair(case.shape, case.dtype)
    loss, grad = cpu.huber(y_true, y_pred, delta)
    want_loss, want_grad = reference.huber(y_true, y_pred, delta)
    assert loss.shape == case.shape[:-1] and loss.dtype == case.dtype
    assert grad.shape == case.shape and grad.dtype == case.dtype
    np.testing.assert_allclose(loss, want_loss, rtol=case.rtol, atol=case.atol)
    np.testing.assert_allclose(grad, want_grad, rtol=case.rtol, atol=case.atol / case.shape[-1])


def test_huber_kinks_are_exact():
    delta = 1.5
    errors = np.array([0.0, delta, -delta, 1e6, -1e6, 0.25], np.float64)
    loss, grad = cpu.huber(np.zeros_like(errors), errors, delta)
    n = errors.size
    want_values = [0.0, 0.5 * delta**2, 0.5 * delta**2, delta * 1e6 - 0.5 * delta**2, delta * 1e6 - 0.5 * delta**2, 0.03125]
    np.testing.assert_allclose(loss, np.mean(want_values), rtol=1e-15)
    np.testing.assert_allclose(grad * n, [0.0, delta, -delta, delta, -delta, 0.25], rtol=1e-15)


def test_long_rows_are_split_across_tasks_and_summed_exactly_once():
    # More than one chunk per row, and a ragged last chunk.
    n = 2 * cpu.COLUMNS_PER_TASK + 17
    y_true, y_pred = random_pair((3, n), np.float64)
    loss, grad = cpu.huber(y_true, y_pred, 1.0)
    want_loss, want_grad = reference.huber(y_true, y_pred, 1.0)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12)


def test_loss_only_kernel_writes_no_gradient_and_the_same_loss():
    y_true, y_pred = random_pair((41, 401), np.float32)
    loss, grad = cpu.huber(y_true, y_pred, 1.0, with_grad=False)
    assert grad is None
    np.testing.assert_allclose(loss, cpu.huber(y_true, y_pred, 1.0)[0], rtol=1e-6)


def test_writes_into_given_buffers_and_leaves_inputs_alone():
    y_true, y_pred = random_pair((9, 13), np.float32)
    before = y_pred.copy(), y_true.copy()
    loss_out, grad_out = np.empty(9, np.float32), np.empty((9, 13), np.float32)
    loss, grad = cpu.huber(y_true, y_pred, 1.0, loss_out=loss_out, grad_out=grad_out)
    assert loss is loss_out and grad is grad_out
    np.testing.assert_array_equal(y_pred, before[0])
    np.testing.assert_array_equal(y_true, before[1])


def test_non_contiguous_and_read_only_inputs():
    y_true, y_pred = random_pair((40, 30), np.float64)
    strided_true, strided_pred = y_true[::2, ::3], y_pred[::2, ::3]
    strided_pred.flags.writeable = False
    loss, grad = cpu.huber(strided_true, strided_pred, 1.0)
    want_loss, want_grad = reference.huber(strided_true, strided_pred, 1.0)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12)


def test_nan_and_inf_follow_keras():
    # Keras's autodiff gives NaN for an infinite error (0 * inf in the untaken branch).
    y_pred = np.array([[np.nan, 1.0], [np.inf, 1.0], [-np.inf, 0.5], [0.5, 0.25]], np.float32)
    loss, grad = cpu.huber(np.zeros_like(y_pred), y_pred, 1.0)
    assert np.isnan(loss[0]) and loss[1] == np.inf and loss[2] == np.inf and np.isfinite(loss[3])
    assert np.isnan(grad[:3, 0]).all()
    np.testing.assert_allclose(grad[:, 1], [0.5, 0.5, 0.25, 0.125])


def test_empty_inputs():
    loss, grad = cpu.huber(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert loss.shape == (0,) and grad.shape == (0, 4)
    loss, grad = cpu.huber(np.zeros((3, 0), np.float32), np.zeros((3, 0), np.float32))
    assert np.isnan(loss).all() and grad.shape == (3, 0)  # the mean of nothing, as in Keras


@pytest.mark.parametrize(
    "y_true, y_pred, error, match",
    [
        (np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), ValueError, r"y_true \(2, 3\) and y_pred \(3, 2\)"),
        (np.zeros((), np.float32), np.zeros((), np.float32), ValueError, "rank >= 1"),
        (np.zeros(3, np.int32), np.zeros(3, np.int32), TypeError, "float32 or float64, got int32"),
        (np.zeros(3, np.float64), np.zeros(3, np.float32), TypeError, "y_pred's dtype float32"),
    ],
)
def test_bad_inputs_are_named(y_true, y_pred, error, match):
    with pytest.raises(error, match=match):
        cpu.huber(y_true, y_pred)


def test_bad_output_buffer_is_named():
    y_true, y_pred = random_pair((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"grad_out must be C-contiguous with shape \(4, 5\)"):
        cpu.huber(y_true, y_pred, grad_out=np.empty((5, 4), np.float32))


def test_repeated_calls_are_bit_identical():
    y_true, y_pred = random_pair((3, 3 * cpu.COLUMNS_PER_TASK + 5), np.float32)
    first = cpu.huber(y_true, y_pred, 1.0)
    for _ in range(3):
        again = cpu.huber(y_true, y_pred, 1.0)
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])


finite_floats = st.floats(-1e3, 1e3, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
    delta=st.floats(1e-3, 1e3),
)
def test_huber_property_matches_reference(data, shape, delta):
    y_true = data.draw(hnp.arrays(np.float64, shape, elements=finite_floats))
    y_pred = data.draw(hnp.arrays(np.float64, shape, elements=finite_floats))
    loss, grad = cpu.huber(y_true, y_pred, delta)
    want_loss, want_grad = reference.huber(y_true, y_pred, delta)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-12)


def test_openmp_threading_layer_is_preferred():
    import numba

    cpu.huber(*random_pair((4, 4), np.float32))
    assert numba.config.THREADING_LAYER_PRIORITY[0] == "omp"
    assert numba.threading_layer() == "omp"  # the OpenMP layer ships in numba wheels


class ScaleCase(NamedTuple):
    loss: str  # a launcher of cpu.py
    shape: tuple  # y_pred's; embedding_contrastive: (batch, 2, dim) pairs
    dtype: type
    params: tuple
    grad_scale: float


GRAD_SCALE_CASES = [
    ScaleCase("huber", (41, 401), np.float32, (1.0,), 1 / 41),
    ScaleCase("huber", (5000, 1), np.float64, (2.0,), 0.25),  # the one-column loop
    ScaleCase("contrastive", (3, 5, 33), np.float32, (1.0,), 1 / 15),
    ScaleCase("weighted_sigmoid_cross_entropy", (2, 40000), np.float32, (2.5, 0.1), 0.5),  # split rows
    ScaleCase("weighted_sigmoid_cross_entropy", (7,), np.float64, (np.arange(7.0), 0.0), 3.0),
    ScaleCase("embedding_contrastive", (9, 2, 13), np.float64, (1.0,), 1 / 9),
]


def scale_case_inputs(case):
    if case.loss == "embedding_contrastive":
        rng = np.random.default_rng(5)
        labels = (rng.random(case.shape[0]) < 0.5).astype(case.dtype)
        return labels, (rng.normal(size=case.shape) / 3).astype(case.dtype)
    return random_pair(case.shape, case.dtype)


@pytest.mark.parametrize("case", GRAD_SCALE_CASES, ids=lambda c: f"{c.loss}-{c.shape}-{np.dtype(c.dtype).name}")
def test_grad_scale_multiplies_the_gradient_and_leaves_the_loss(case):
    # The bridge bakes the expected upstream gradient (1 / batch under a mean) into the
    # kernel's gradient so that its backward pass has nothing left to do.
    launcher = getattr(cpu, case.loss)
    y_true, y_pred = scale_case_inputs(case)
    loss, grad = launcher(y_true, y_pred, *case.params)
    scaled_loss, scaled_grad = launcher(y_true, y_pred, *case.params, grad_scale=case.grad_scale)
    np.testing.assert_array_equal(scaled_loss, loss)
    rtol = 4 * np.finfo(case.dtype).eps  # two roundings of the product against one
    np.testing.assert_allclose(scaled_grad, case.grad_scale * grad.astype(np.float64), rtol=rtol, atol=0)


@pytest.mark.parametrize("case", GRAD_SCALE_CASES, ids=lambda c: f"{c.loss}-{c.shape}-{np.dtype(c.dtype).name}")
def test_every_launcher_takes_non_contiguous_and_read_only_inputs(case):
    launcher = getattr(cpu, case.loss)
    y_true, y_pred = scale_case_inputs(case)
    want_loss, want_grad = launcher(y_true, y_pred, *case.params)
    strided_true = np.repeat(y_true, 2, axis=-1)[..., ::2]  # every other element of a wider array
    fortran_pred = np.asfortranarray(y_pred)
    for array in (strided_true, fortran_pred):
        array.setflags(write=False)
    assert not strided_true.flags.c_contiguous
    assert fortran_pred.flags.c_contiguous == (y_pred.ndim < 2 or 1 in y_pred.shape)
    loss, grad = launcher(strided_true, fortran_pred, *case.params)
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(grad, want_grad)


# ---------------------------------------------------------------------------------
# Narrow rows (at most cpu.NARROW_COLUMNS columns): blocks of whole rows per task, one
# flat loop over each block's elements, the row sums from a scratch array.

NARROW_SHAPES = [
    (40000, 1),  # Keras's (batch, 1)
    (20001, 2),  # more than one block, a ragged last one
    (7, 3),  # below cpu.PARALLEL_FROM: the serial kernel
    (9001, 4),
    (2049, 5),
    (1, 10),
    (3500, 10),
    (513, 33),
    (700, cpu.NARROW_COLUMNS),  # the widest narrow row
    (600, cpu.NARROW_COLUMNS + 1),  # the narrowest wide one
    (3, 7, 16),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", NARROW_SHAPES, ids=str)
def test_narrow_rows_match_the_float64_reference(shape, dtype):
    rtol, atol = TOLERANCES[dtype]
    y_true, y_pred = random_pair(shape, dtype, seed=len(shape) + shape[-1])
    loss, grad = cpu.huber(y_true, y_pred, 1.0)
    want_loss, want_grad = reference.huber(y_true.astype(np.float64), y_pred.astype(np.float64), 1.0)
    np.testing.assert_allclose(loss, want_loss, rtol=rtol, atol=atol)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=atol / shape[-1])


@pytest.mark.parametrize("shape", NARROW_SHAPES, ids=str)
def test_narrow_rows_are_bit_identical_from_call_to_call(shape):
    y_true, y_pred = random_pair(shape, np.float32, seed=1)
    first_loss, first_grad = cpu.huber(y_true, y_pred, 1.0)
    for _ in range(3):
        loss, grad = cpu.huber(
            y_true, y_pred, 1.0, loss_out=np.empty_like(first_loss), grad_out=np.empty_like(first_grad)
        )
        assert loss.tobytes() == first_loss.tobytes()
        assert grad.tobytes() == first_grad.tobytes()
    loss_only, _ = cpu.huber(y_true, y_pred, 1.0, with_grad=False)
    if shape[-1] <= cpu.NARROW_COLUMNS:
        # Narrow rows are summed by _row_means, apart from the element loop: the
        # loss-only kernel gives the same bits.
        assert loss_only.tobytes() == first_loss.tobytes()
    else:
        # A wide row's sum is vectorised with the element loop, and LLVM may split it
        # differently without the gradient's stores (it did on an AVX2 machine, not on
        # AVX-512 ones): the same losses to float32 rounding of the sum.
        np.testing.assert_allclose(loss_only, first_loss, rtol=4 * shape[-1] * np.finfo(np.float32).eps, atol=0)


@pytest.mark.parametrize("n_columns", [2, 3, 4, 5, 10, 64])
def test_narrow_rows_agree_with_the_wide_path(n_columns):
    # The same rows, each padded with columns of zero error to a wide row: the wide
    # path's sums, rescaled to the narrow mean, agree within float32 rounding; the
    # gradients (no sum) are the same up to the different 1 / n.
    rows = cpu.PARALLEL_FROM // n_columns + 1  # the parallel kernel
    y_true, y_pred = random_pair((rows, n_columns), np.float32, seed=n_columns)
    wide = 4 * cpu.NARROW_COLUMNS
    wide_true = np.zeros((rows, wide), np.float32)
    wide_pred = np.zeros((rows, wide), np.float32)
    wide_true[:, :n_columns], wide_pred[:, :n_columns] = y_true, y_pred
    loss, grad = cpu.huber(y_true, y_pred, 1.0)
    wide_loss, wide_grad = cpu.huber(wide_true, wide_pred, 1.0, grad_scale=wide / n_columns)
    np.testing.assert_allclose(loss, wide_loss * (wide / n_columns), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(grad, wide_grad[:, :n_columns], rtol=2e-7, atol=0)


@pytest.mark.parametrize("n_columns", [1, 2, 5, 64])
def test_narrow_rows_use_each_columns_own_parameter(n_columns):
    # A per-class parameter is indexed by the column of each element in the flat loop.
    rng = np.random.default_rng(n_columns)
    shape = (cpu.PARALLEL_FROM // n_columns + 1, n_columns)
    labels = (rng.uniform(size=shape) < 0.3).astype(np.float64)
    logits = 3.0 * rng.normal(size=shape)
    pos_weight = rng.uniform(0.5, 5.0, n_columns)
    loss, grad = cpu.weighted_sigmoid_cross_entropy(labels, logits, pos_weight)
    want_loss, want_grad = reference.weighted_sigmoid_cross_entropy(labels, logits, pos_weight)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", [(cpu.PARALLEL_FROM // 10, 10), (cpu.PARALLEL_FROM // 10 + 1, 10), (4, 8191), (4, 8192)])
def test_serial_and_parallel_kernels_agree_around_the_threshold(shape):
    # Either side of cpu.PARALLEL_FROM: the same code, with or without threads.
    y_true, y_pred = random_pair(shape, np.float64)
    loss, grad = cpu.huber(y_true, y_pred, 1.0)
    want_loss, want_grad = reference.huber(y_true, y_pred, 1.0)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [0, 1, cpu.COLUMNS_PER_TASK + 3])
def test_all_equal_agrees_with_numpy_nan_equal_to_nothing(dtype, size):
    value = dtype(1) / dtype(7)
    values = np.full(size, value, dtype)
    assert cpu.all_equal(values, value)
    for odd in (np.nan, -value, np.nextafter(value, dtype(1))):
        if size:
            values[-1] = odd  # the last element is in the last, short task
            assert not cpu.all_equal(values, value)
            values[-1] = value
    zeros = np.array([0.0, -0.0] * (size // 2), dtype)
    assert cpu.all_equal(zeros, 0.0)  # as tf.equal: -0.0 == 0.0
    assert not cpu.all_equal(np.full(size, np.nan, dtype), np.nan) or size == 0
