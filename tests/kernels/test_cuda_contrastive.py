"""CUDA kernels of the two contrastive losses, in numba's simulator (switched on by
conftest.py), against the float64 references; and their PTX, compiled for real."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fusedloss.kernels import reference

cuda_kernels = pytest.importorskip("fusedloss.kernels.cuda")


@pytest.fixture(autouse=True)
def small_grid(monkeypatch):
    # Each simulated thread costs milliseconds: one warp per block, and two blocks so
    # that the grid-stride loop over pairs (and rows) runs more than once.
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(cuda_kernels, "MAX_BLOCKS", 2)


@pytest.mark.parametrize("dtype, tolerance", ((np.float32, 1e-6), (np.float64, 1e-13)))
def test_embedding_contrastive_matches_reference(dtype, tolerance):
    rng = np.random.default_rng(1)
    # dim 37: more than one warp-stride per thread, not a multiple of 32.
    pairs = (rng.normal(size=(5, 2, 37)) / 6).astype(dtype)
    pairs[2, 1] = pairs[2, 0]  # identical, dissimilar
    pairs[3, 1] = pairs[3, 0]  # identical, similar
    labels = np.array([0.0, 1.0, 0.0, 1.0, 0.5], dtype)
    loss, grad = cuda_kernels.embedding_contrastive(labels, pairs, margin=1.5)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs, margin=1.5)
    assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == pairs.shape
    np.testing.assert_allclose(loss, expected_loss, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grad, expected_grad, rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(grad[2:4], 0.0)
    loss_only, no_grad = cuda_kernels.embedding_contrastive(labels[:, None], pairs, margin=1.5, with_grad=False)
    assert no_grad is None
    np.testing.assert_array_equal(loss_only, loss)


def test_embedding_contrastive_tiny_and_rescaled_distances():
    pairs = np.zeros((3, 2, 3))
    pairs[0, 1] = [3e-30, 0.0, 4e-30]
    pairs[1, 1] = [3e-320, 0.0, 4e-320]  # squares underflow float64: rescaled path
    pairs[2, 1] = [3e200, 0.0, 4e200]  # squares overflow float64: rescaled path
    labels = np.zeros(3)
    loss, grad = cuda_kernels.embedding_contrastive(labels, pairs, margin=1.0)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs, margin=1.0)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-15)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-3)
    np.testing.assert_allclose(grad[0, 1], [-1.2, 0.0, -1.6], rtol=1e-15)


def test_embedding_contrastive_writes_given_buffers():
    rng = np.random.default_rng(2)
    pairs = rng.normal(size=(3, 2, 5)).astype(np.float32)
    labels = np.array([1.0, 0.0, 1.0], np.float32)
    loss_out, grad_out = np.empty(3, np.float32), np.empty(pairs.shape, np.float32)
    loss, grad = cuda_kernels.embedding_contrastive(labels, pairs, loss_out=loss_out, grad_out=grad_out)
    assert loss is loss_out and grad is grad_out
    np.testing.assert_allclose(loss, reference.embedding_contrastive(labels, pairs)[0], rtol=1e-6)


def test_embedding_contrastive_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"y_true must have shape \(3,\) or \(3, 1\)"):
        cuda_kernels.embedding_contrastive(np.zeros((3, 2), np.float32), np.zeros((3, 2, 4), np.float32))


@pytest.mark.parametrize("shape", ((3, 37), (2, 1, 5)))
def test_contrastive_matches_reference(shape):
    rng = np.random.default_rng(3)
    labels = (rng.random(shape) < 0.5).astype(np.float32)
    distances = rng.uniform(-0.2, 2.5, shape).astype(np.float32)
    loss, grad = cuda_kernels.contrastive(labels, distances, margin=1.25)
    expected_loss, expected_grad = reference.contrastive(labels, distances, margin=1.25)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-7)


@settings(max_examples=6, deadline=None)
@given(
    dtype=st.sampled_from((np.float32, np.float64)),
    n_pairs=st.integers(1, 3),
    dim=st.integers(1, 40),
    data=st.data(),
)
def test_embedding_contrastive_property(dtype, n_pairs, dim, data):
    pairs = data.draw(hnp.arrays(dtype, (n_pairs, 2, dim), elements=st.floats(-10, 10, width=32)))
    labels = data.draw(hnp.arrays(dtype, (n_pairs,), elements=st.sampled_from((0.0, 1.0))))
    margin = data.draw(st.floats(0, 20))
    loss, grad = cuda_kernels.embedding_contrastive(labels, pairs, margin=margin)
    expected_loss, expected_grad = reference.embedding_contrastive(labels, pairs, margin=margin)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[:, 1], -grad[:, 0])
    tolerance = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, expected_loss, rtol=tolerance, atol=tolerance)
    scale = max(1.0, np.abs(expected_grad).max())
    np.testing.assert_allclose(grad, expected_grad, rtol=tolerance, atol=tolerance * scale)


def test_threads_shrink_to_the_embedding_but_not_below_a_warp(monkeypatch):
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 256)
    assert cuda_kernels._threads_for(128) == 128
    assert cuda_kernels._threads_for(129) == 256
    assert cuda_kernels._threads_for(3) == 32
    assert cuda_kernels._threads_for(4096) == 256
