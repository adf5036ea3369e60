"""CPU kernels of the two contrastive losses against the float64 NumPy references."""

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


DISTANCE_CASES = (
    Case((7,), np.float32, 1e-6, 1e-7),
    Case((5, 1), np.float32, 1e-6, 1e-7),  # (batch, 1): the row kernel's one-column loop
    Case((100003, 1), np.float64, 1e-13, 1e-15),
    Case((41, 401), np.float32, 1e-5, 1e-7),
    Case((3, 4, 5), np.float64, 1e-13, 1e-15),
    Case((41, 401), np.float64, 1e-12, 1e-15),
    Case((2, 40000), np.float32, 1e-5, 1e-7),  # rows longer than COLUMNS_PER_TASK
)

# (batch, 2, dim), odd dims included
PAIR_CASES = (
    Case((1, 2, 1), np.float32, 1e-6, 1e-6),
    Case((7, 2, 3), np.float32, 1e-6, 1e-6),
    Case((41, 2, 401), np.float32, 1e-6, 1e-6),
    Case((7, 2, 3), np.float64, 1e-13, 1e-13),
    Case((41, 2, 401), np.float64, 1e-13, 1e-13),
)


def distance_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(shape) < 0.5).astype(dtype)
    distances = rng.uniform(0.0, 2.5, shape).astype(dtype)
    return labels, distances


def pair_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(shape[0]) < 0.5).astype(dtype)
    # Scaled so that distances fall on both sides of a margin of 1.5.
    pairs = (rng.normal(size=shape) / np.sqrt(shape[2])).astype(dtype)
    return labels, pairs


@pytest.mark.parametrize("case", DISTANCE_CASES, ids=str)
def test_contrastive_matches_reference(case):
    labels, distances = distance_inputs(case.shape, case.dtype)
    loss, grad = cpu.contrastive(labels, distances, margin=1.5)
    expected_loss, expected_grad = reference.contrastive(labels, distances, margin=1.5)
    assert loss.dtype == case.dtype and loss.shape == case.shape[:-1]
    np.testing.assert_allclose(loss, expected_loss, rtol=case.rtol, atol=case.atol)
    np.testing.assert_allclose(grad, expected_grad, rtol=case.rtol, atol=case.atol)


def test_contrastive_applies_the_formula_to_negative_distances():
    # Documented contract: nothing clamps a negative distance.
    labels = np.array([[1.0, 0.0, 1.0, 0.0]])
    distances = np.array([[-0.5, -0.5, -2.0, 3.0]])
    loss, grad = cpu.contrastive(labels, distances, margin=1.0)
    # similar: d^2, 2d ; dissimilar: (1 - d)^2, -2 (1 - d)
    np.testing.assert_allclose(loss, [(0.25 + 2.25 + 4.0 + 0.0) / 4])
    np.testing.assert_allclose(grad, [[-1.0 / 4, -3.0 / 4, -4.0 / 4, 0.0]])


def test_contrastive_margin_zero_ignores_dissimilar_pairs():
    labels = np.array([[0.0, 0.0, 1.0]], np.float32)
    distances = np.array([[0.0, 2.0, 2.0]], np.float32)
    loss, grad = cpu.contrastive(labels, distances, margin=0.0)
    np.testing.assert_allclose(loss, [4.0 / 3], rtol=1e-7)
    np.testing.assert_allclose(grad, [[0.0, 0.0, 4.0 / 3]], rtol=1e-7)


def test_contrastive_nan_distance_gives_nan_where_it_is():
    labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    distances = np.array([[np.nan, 0.5], [0.5, 0.5]], np.float32)
    loss, grad = cpu.contrastive(labels, distances)
    assert np.isnan(loss[0]) and np.isfinite(loss[1])
    np.testing.assert_array_equal(np.isnan(grad), [[True, False], [False, False]])


@pytest.mark.parametrize("case", PAIR_CASES, ids=str)
def test_embedding_contrastive_matches_reference(case):
    labels, pairs = pair_inputs(case.shape, case.dtype)
    loss, grad = cpu.embedding_contrastive(labels, pairs, margin=1.5)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs, margin=1.5)
    assert loss.dtype == case.dtype and loss.shape == case.shape[:1]
    assert grad.dtype == case.dtype and grad.shape == case.shape
    np.testing.assert_allclose(loss, expected_loss, rtol=case.rtol, atol=case.atol)
    np.testing.assert_allclose(grad, expected_grad, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_embedding_contrastive_accepts_column_labels_and_writes_given_buffers(dtype):
    labels, pairs = pair_inputs((5, 2, 9), dtype)
    loss_out, grad_out = np.empty(5, dtype), np.empty((5, 2, 9), dtype)
    loss, grad = cpu.embedding_contrastive(labels[:, None], pairs, loss_out=loss_out, grad_out=grad_out)
    assert loss is loss_out and grad is grad_out
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-7)
    loss_only, no_grad = cpu.embedding_contrastive(labels, pairs, with_grad=False)
    assert no_grad is None
    np.testing.assert_array_equal(loss_only, loss)


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_identical_embeddings_have_zero_gradient(dtype):
    pairs = np.tile(np.arange(6, dtype=dtype).reshape(2, 1, 3), (1, 2, 1))  # a == b
    labels = np.array([1.0, 0.0], dtype)
    loss, grad = cpu.embedding_contrastive(labels, pairs, margin=2.0)
    np.testing.assert_array_equal(loss, [0.0, 4.0])  # similar: 0 ; dissimilar: margin^2
    np.testing.assert_array_equal(grad, np.zeros_like(pairs))


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("size", (1e-30, 1e-44, 1e-3, 1e15))
def test_tiny_and_large_distances_keep_their_gradient(dtype, size):
    # b - a = size * (3, 0, -4) / 5 * ..., so d = size: tiny values must not underflow
    # to a zero (or NaN) gradient; their direction is still well defined.
    direction = np.array([0.6, 0.0, -0.8])
    pairs = np.zeros((2, 2, 3), dtype)
    pairs[:, 1, :] = (size * direction).astype(dtype)
    labels = np.array([1.0, 0.0], dtype)
    loss, grad = cpu.embedding_contrastive(labels, pairs, margin=1.0)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs, margin=1.0)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    # d^2 of a tiny distance underflows the output dtype, as it should.
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6, atol=np.finfo(dtype).tiny)
    # float32's subnormal 1e-44 keeps only a few bits: compare to the reference of
    # the rounded inputs, which is what the kernel sees.
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-6 * np.abs(expected_grad).max())
    if size < 1:
        # dissimilar pair at d < margin: the gradient pushes b away from a with norm
        # 2 (margin - d), however small d is
        np.testing.assert_allclose(np.linalg.norm(grad[1, 1].astype(np.float64)), 2.0 * (1.0 - size), rtol=1e-5)


def test_float64_differences_beyond_the_square_range():
    # Squares of these underflow to 0 or overflow float64; the rescaled path handles them.
    pairs = np.zeros((4, 2, 2))
    pairs[0, 1] = [3e-200, 4e-200]
    pairs[1, 1] = [3e-320, 4e-320]  # subnormal
    pairs[2, 1] = [3e200, 4e200]
    pairs[3, 1] = [3e-200, 4e-200]
    labels = np.array([0.0, 0.0, 0.0, 1.0])
    loss, grad = cpu.embedding_contrastive(labels, pairs, margin=1.0)
    np.testing.assert_allclose(loss[:2], [1.0, 1.0])
    assert loss[2] == 0.0 and loss[3] == 0.0
    # dissimilar, nearly identical: dL/db = -2 (margin - d) (b - a) / d ~ -2 (0.6, 0.8)
    np.testing.assert_allclose(grad[0, 1], [-1.2, -1.6], rtol=1e-15)
    np.testing.assert_allclose(grad[1, 1], [-1.2, -1.6], rtol=1e-3)  # 3e-320 is not exact
    np.testing.assert_array_equal(grad[2], 0.0)  # beyond the margin
    np.testing.assert_allclose(grad[3, 1], [6e-200, 8e-200], rtol=1e-15)  # 2 (b - a)


def test_embedding_contrastive_empty_inputs():
    loss, grad = cpu.embedding_contrastive(np.ones(0, np.float32), np.zeros((0, 2, 4), np.float32))
    assert loss.shape == (0,) and grad.shape == (0, 2, 4)
    # An empty embedding axis is distance 0: margin^2 for a dissimilar pair.
    loss, grad = cpu.embedding_contrastive(np.array([0.0, 1.0]), np.zeros((2, 2, 0)), margin=3.0)
    np.testing.assert_array_equal(loss, [9.0, 0.0])


def test_embedding_contrastive_nan_input_gives_nan_for_its_pair_only():
    labels, pairs = pair_inputs((3, 2, 4), np.float32)
    pairs[1, 0, 2] = np.nan
    loss, grad = cpu.embedding_contrastive(labels, pairs)
    np.testing.assert_array_equal(np.isnan(loss), [False, True, False])
    assert np.all(np.isnan(grad[1])) and np.all(np.isfinite(grad[[0, 2]]))


BAD_PAIRS = (
    ((4,), (4, 2), ValueError, r"pairs must have shape \(batch, 2, dim\).*got \(4, 2\)"),
    ((4,), (4, 3, 5), ValueError, r"pairs must have shape \(batch, 2, dim\).*got \(4, 3, 5\)"),
    ((4, 2), (4, 2, 5), ValueError, r"y_true must have shape \(4,\) or \(4, 1\).*y_true \(4, 2\) and pairs \(4, 2, 5\)"),
    ((3,), (4, 2, 5), ValueError, r"y_true must have shape \(4,\) or \(4, 1\).*y_true \(3,\)"),
)


@pytest.mark.parametrize("true_shape, pairs_shape, error, message", BAD_PAIRS)
def test_embedding_contrastive_rejects_bad_shapes(true_shape, pairs_shape, error, message):
    with pytest.raises(error, match=message):
        cpu.embedding_contrastive(np.zeros(true_shape, np.float32), np.zeros(pairs_shape, np.float32))


def test_embedding_contrastive_rejects_bad_dtypes_and_buffers():
    with pytest.raises(TypeError, match="pairs must be float32 or float64, got int64"):
        cpu.embedding_contrastive(np.zeros(2, np.int64), np.zeros((2, 2, 3), np.int64))
    with pytest.raises(TypeError, match="y_true must have the pairs' dtype float32, got float64"):
        cpu.embedding_contrastive(np.zeros(2), np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"loss_out must be C-contiguous with shape \(2,\)"):
        cpu.embedding_contrastive(np.zeros(2), np.zeros((2, 2, 3)), loss_out=np.zeros(3))
    with pytest.raises(ValueError, match=r"grad_out must be C-contiguous with shape \(2, 2, 3\)"):
        cpu.embedding_contrastive(np.zeros(2), np.zeros((2, 2, 3)), grad_out=np.zeros((2, 3, 2)))


def test_contrastive_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"same shape, got y_true \(3, 2\) and y_pred \(3, 1\)"):
        cpu.contrastive(np.zeros((3, 2)), np.zeros((3, 1)))


# ---------------------------------------------------------------------------------
# Properties over generated inputs

DTYPES = st.sampled_from((np.float32, np.float64))


@st.composite
def pair_problems(draw):
    dtype = draw(DTYPES)
    n_pairs = draw(st.integers(0, 6))
    dim = draw(st.integers(1, 9))
    elements = st.floats(-100, 100, width=32 if dtype == np.float32 else 64)
    pairs = draw(hnp.arrays(dtype, (n_pairs, 2, dim), elements=elements))
    # Some pairs identical, where the distance has no derivative.
    identical = draw(hnp.arrays(np.bool_, (n_pairs,)))
    pairs[identical, 1] = pairs[identical, 0]
    labels = draw(hnp.arrays(dtype, (n_pairs,), elements=st.sampled_from((0.0, 1.0, 0.25))))
    margin = draw(st.floats(0, 50))
    return labels, pairs, margin


@settings(max_examples=60, deadline=None)
@given(pair_problems())
def test_embedding_contrastive_property(problem):
    labels, pairs, margin = problem
    loss, grad = cpu.embedding_contrastive(labels, pairs, margin=margin)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs, margin=margin)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[:, 1], -grad[:, 0])
    tolerance = 2e-6 if pairs.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, expected_loss, rtol=tolerance, atol=tolerance)
    scale = max(1.0, np.abs(expected_grad).max(initial=0.0))
    np.testing.assert_allclose(grad, expected_grad, rtol=tolerance, atol=tolerance * scale)


@st.composite
def distance_problems(draw):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7))
    distances = draw(hnp.arrays(dtype, shape, elements=st.floats(-5, 50, width=32)))
    labels = draw(hnp.arrays(dtype, shape, elements=st.sampled_from((0.0, 1.0, 0.5))))
    return labels, distances, draw(st.floats(0, 10))


@settings(max_examples=60, deadline=None)
@given(distance_problems())
def test_contrastive_property(problem):
    labels, distances, margin = problem
    loss, grad = cpu.contrastive(labels, distances, margin=margin)
    expected_loss, expected_grad = reference.contrastive(labels, distances, margin=margin)
    # Computed in the inputs' precision (margin - d rounds in float32).
    tolerance = 1e-5 if distances.dtype == np.float32 else 1e-12
    scale = max(1.0, margin, np.abs(distances).max())
    np.testing.assert_allclose(loss, expected_loss, rtol=tolerance, atol=tolerance * scale**2)
    np.testing.assert_allclose(grad, expected_grad, rtol=tolerance, atol=tolerance * scale)
