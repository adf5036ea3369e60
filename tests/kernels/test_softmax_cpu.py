"""CPU softmax cross-entropy kernels against the float64 NumPy references."""

import re
from typing import NamedTuple

import numba
import numpy as np
import pytest

from fusedloss.kernels import cpu, softmax_cpu, softmax_reference


class Case(NamedTuple):
    shape: tuple
    dtype: type


SHAPES = [
    (41, 401),  # odd
    (3, 5, 33),  # rank 3
    (7, 1),  # one class
    (3, 2 * softmax_cpu.COLUMNS_PER_TASK + 17),  # long rows, few: split into chunks, ragged last chunk
    (softmax_cpu.SPLIT_BELOW_ROWS, softmax_cpu.COLUMNS_PER_TASK + 5),  # long rows, many: whole rows
]
CASES = [Case(shape, dtype) for shape in SHAPES for dtype in (np.float32, np.float64)]
TOLERANCE = {np.float32: 2e-6, np.float64: 1e-12}


def logits_for(shape, dtype, seed=0, scale=3.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype(dtype)


def soft_targets(shape, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(dtype)


def labels_for(shape, seed=2, dtype=np.int64):
    return np.random.default_rng(seed).integers(0, shape[-1], size=shape[:-1]).astype(dtype)


def close(actual, expected, dtype, scale=1.0):
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale)


def ids(case):
    return f"{case.shape}-{np.dtype(case.dtype).name}"


@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_dense_matches_reference(case, label_smoothing):
    x, y = logits_for(case.shape, case.dtype), soft_targets(case.shape, case.dtype)
    loss, grad = cpu.softmax_cross_entropy(y, x, label_smoothing, grad_scale=2.0)
    want_loss, want_grad = softmax_reference.softmax_cross_entropy(y, x, label_smoothing)
    assert loss.shape == case.shape[:-1] and loss.dtype == grad.dtype == case.dtype and grad.shape == case.shape
    close(loss, want_loss, case.dtype, scale=10)
    close(grad, 2.0 * want_grad, case.dtype)


@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_sparse_matches_reference_with_ignored_rows(case, label_dtype):
    x, labels = logits_for(case.shape, case.dtype), labels_for(case.shape, dtype=label_dtype)
    labels.reshape(-1)[::4] = -1  # ignored
    loss, grad = cpu.sparse_softmax_cross_entropy(labels, x, -1, grad_scale=0.5)
    want_loss, want_grad = softmax_reference.sparse_softmax_cross_entropy(labels, x, -1)
    close(loss, want_loss, case.dtype, scale=10)
    close(grad, 0.5 * want_grad, case.dtype)
    assert np.all(loss.reshape(-1)[::4] == 0) and np.all(grad.reshape(-1, case.shape[-1])[::4] == 0)


@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("alpha", [0.25, "per-class"])
def test_focal_matches_reference(case, alpha):
    x, y = logits_for(case.shape, case.dtype), soft_targets(case.shape, case.dtype)
    if alpha == "per-class":
        alpha = np.linspace(0.1, 1.0, case.shape[-1])
    loss, grad = cpu.categorical_focal_cross_entropy(y, x, alpha, 2.0, 0.1, grad_scale=2.0)
    want_loss, want_grad = softmax_reference.categorical_focal_cross_entropy(y, x, alpha, 2.0, 0.1)
    close(loss, want_loss, case.dtype)
    close(grad, 2.0 * want_grad, case.dtype)


def test_loss_only_kernels_give_the_same_loss_and_write_no_gradient():
    x, labels = logits_for((9, 50), np.float32), labels_for((9, 50))
    loss, grad = cpu.sparse_softmax_cross_entropy(labels, x)
    alone, none = cpu.sparse_softmax_cross_entropy(labels, x, with_grad=False)
    assert none is None
    np.testing.assert_array_equal(alone, loss)


def test_outputs_go_into_given_buffers_and_inputs_are_only_read():
    x, y = logits_for((5, 30), np.float32), soft_targets((5, 30), np.float32)
    x_copy, y_copy = x.copy(), y.copy()
    loss_out, grad_out = np.empty(5, np.float32), np.empty((5, 30), np.float32)
    loss, grad = cpu.softmax_cross_entropy(y, x, 0.1, loss_out=loss_out, grad_out=grad_out)
    assert loss is loss_out and grad is grad_out
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(y, y_copy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_are_finite_and_exact(dtype):
    # |x| = 1e4: the row's max term far above the first logit (M is raised) and far below.
    x = np.array([[-1e4, 1e4, 0.0, 1e4 - 1.0], [1e4, -1e4, -1e4, 1e4], [-1e4, -1e4, -1e4 + 2.0, -1e4]], dtype)
    labels = np.array([0, 1, 2])
    loss, grad = cpu.sparse_softmax_cross_entropy(labels, x)
    want_loss, want_grad = softmax_reference.sparse_softmax_cross_entropy(labels, x)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    close(loss, want_loss, dtype, scale=1e4)
    close(grad, want_grad, dtype)
    y = np.eye(4, dtype=dtype)[labels]
    dense_loss, dense_grad = cpu.softmax_cross_entropy(y, x)
    close(dense_loss, want_loss, dtype, scale=1e4)
    close(dense_grad, want_grad, dtype)


def test_one_class_rows_cost_nothing():
    x = logits_for((6, 1), np.float64)
    loss, grad = cpu.sparse_softmax_cross_entropy(np.zeros(6, np.int64), x)
    np.testing.assert_array_equal(loss, 0.0)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("n_classes", [20, 2 * softmax_cpu.COLUMNS_PER_TASK + 3])
def test_nan_in_a_row_gives_nan_in_that_row_only(n_classes):
    x = logits_for((3, n_classes), np.float32)
    x[1, n_classes // 2] = np.nan
    loss, grad = cpu.sparse_softmax_cross_entropy(labels_for(x.shape), x)
    assert np.isnan(loss[1]) and np.all(np.isnan(grad[1]))
    assert np.all(np.isfinite(loss[[0, 2]])) and np.all(np.isfinite(grad[[0, 2]]))


@pytest.mark.parametrize("bad", [5, -1, 1 << 40])
def test_out_of_range_labels_are_an_error_naming_label_and_class_count(bad):
    labels = np.array([0, bad, 1], np.int64)
    with pytest.raises(ValueError, match=rf"\[0, 5\).*5 classes.*got label {bad} at index \(1,\)"):
        cpu.sparse_softmax_cross_entropy(labels, logits_for((3, 5), np.float32))


def test_shapes_and_dtypes_are_checked():
    x = logits_for((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        cpu.sparse_softmax_cross_entropy(np.zeros(4, np.int64), x)
    with pytest.raises(TypeError, match="int32 or int64"):
        cpu.sparse_softmax_cross_entropy(np.zeros(3, np.float32), x)
    with pytest.raises(ValueError, match="same shape"):
        cpu.softmax_cross_entropy(np.zeros((3, 4), np.float32), x)
    with pytest.raises(ValueError, match="at least one class"):
        cpu.softmax_cross_entropy(np.zeros((3, 0), np.float32), np.zeros((3, 0), np.float32))


def test_long_rows_split_bit_identical_run_to_run_and_thread_count_to_thread_count():
    shape = (4, 131072)
    assert softmax_cpu.chunks_for(*shape) == 8
    x, labels = logits_for(shape, np.float32, scale=5.0), labels_for(shape)
    first = [a.copy() for a in cpu.sparse_softmax_cross_entropy(labels, x)]
    again = cpu.sparse_softmax_cross_entropy(labels, x)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single = cpu.sparse_softmax_cross_entropy(labels, x)
    finally:
        numba.set_num_threads(threads)
    for a, b, c in zip(first, again, single):
        assert a.tobytes() == b.tobytes() == c.tobytes()


def test_long_row_split_keeps_float32_accuracy():
    # At 131072 classes, split into 8 chunks: within float32 rounding of float64.
    shape = (4, 131072)
    x, labels = logits_for(shape, np.float32, scale=5.0), labels_for(shape)
    loss, grad = cpu.sparse_softmax_cross_entropy(labels, x)
    want_loss, want_grad = softmax_reference.sparse_softmax_cross_entropy(labels, x)
    np.testing.assert_allclose(loss, want_loss, rtol=2e-7 * 8)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-9)


def _has_avx2():
    try:
        return " avx2" in open("/proc/cpuinfo").read()
    except OSError:
        return False


@pytest.mark.skipif(not _has_avx2(), reason="checks AVX2 code generation")
def test_float32_row_loops_vectorise():
    x, labels = logits_for((4, 64), np.float32), labels_for((4, 64))
    cpu.sparse_softmax_cross_entropy(labels, x)
    cpu.softmax_cross_entropy(soft_targets(x.shape, np.float32), x)
    for kernel in (softmax_cpu._sparse_rows, softmax_cpu._dense_rows):
        signature = [s for s in kernel.signatures if str(s[1].dtype) == "float32"][0]
        # numba cannot inspect a kernel it loaded from its cache on disk: compile a copy
        fresh = numba.njit(parallel=True, fastmath=softmax_cpu.FASTMATH, error_model="numpy")(kernel.py_func)
        fresh.compile(signature)
        assert re.search(r"<8 x float>", fresh.inspect_llvm(signature))
