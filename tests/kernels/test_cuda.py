"""CUDA kernels in numba's simulator (logic) and compiled to PTX (code generation).

The simulator runs every thread as a Python thread (~2 ms each), so the grids here are
one or two blocks of 32 threads; that is still enough for rows longer and shorter than
a block, several rows per block (grid-stride) and the shared-memory reduction.
"""

import os
from typing import NamedTuple

import numpy as np
import pytest

from fusedloss.kernels import reference

pytestmark = pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") != "1", reason="needs the CUDA simulator (set in tests/conftest.py)"
)


@pytest.fixture
def cuda_kernels(monkeypatch):
    from fusedloss.kernels import cuda

    monkeypatch.setattr(cuda, "THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(cuda, "MAX_BLOCKS", 2)
    return cuda


class Case(NamedTuple):
    shape: tuple
    dtype: type
    rtol: float


CASES = [
    Case((7,), np.float32, 2e-6),  # one row shorter than a block
    Case((3, 45), np.float64, 1e-12),  # odd rows longer than a block, more rows than blocks
    Case((2, 2, 5), np.float32, 2e-6),  # rank 3
    Case((5, 1), np.float64, 1e-12),  # one column
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.shape}-{np.dtype(c.dtype).name}")
def test_huber_in_simulator_matches_reference(cuda_kernels, case):
    rng = np.random.default_rng(1)
    y_true = rng.normal(size=case.shape).astype(case.dtype)
    y_pred = (3 * rng.normal(size=case.shape)).astype(case.dtype)
    y_pred.flat[0] = y_true.flat[0] + 1.5  # exactly on the kink
    loss, grad = cuda_kernels.huber(y_true, y_pred, 1.5)
    want_loss, want_grad = reference.huber(y_true, y_pred, 1.5)
    assert loss.shape == case.shape[:-1] and grad.shape == case.shape
    np.testing.assert_allclose(loss, want_loss, rtol=case.rtol)
    np.testing.assert_allclose(grad, want_grad, rtol=case.rtol, atol=1e-7)


def test_loss_only_kernel_and_given_buffers(cuda_kernels):
    rng = np.random.default_rng(2)
    y_true, y_pred = rng.normal(size=(2, 40)), rng.normal(size=(2, 40))
    loss, grad = cuda_kernels.huber(y_true, y_pred, 1.0, with_grad=False)
    assert grad is None
    np.testing.assert_allclose(loss, reference.huber(y_true, y_pred, 1.0)[0], rtol=1e-12)
    loss_out, grad_out = np.empty(2), np.empty((2, 40))
    loss, grad = cuda_kernels.huber(y_true, y_pred, 1.0, loss_out=loss_out, grad_out=grad_out)
    assert loss is loss_out and grad is grad_out
    np.testing.assert_allclose(grad_out, reference.huber(y_true, y_pred, 1.0)[1], rtol=1e-12)


def test_empty_inputs_and_bad_shapes(cuda_kernels):
    loss, grad = cuda_kernels.huber(np.zeros((0, 3)), np.zeros((0, 3)))
    assert loss.shape == (0,) and grad.shape == (0, 3)
    loss, _ = cuda_kernels.huber(np.zeros((2, 0)), np.zeros((2, 0)))
    assert np.isnan(loss).all()
    with pytest.raises(ValueError, match=r"y_true \(2, 3\) and y_pred \(2, 4\)"):
        cuda_kernels.huber(np.zeros((2, 3)), np.zeros((2, 4)))


def test_threads_per_block_must_be_a_power_of_two(cuda_kernels, monkeypatch):
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 48)
    with pytest.raises(ValueError, match="power of two"):
        cuda_kernels.huber(np.zeros((1, 3)), np.zeros((1, 3)))


GRAD_SCALE_CASES = [
    # (launcher, y_pred's shape, dtype, parameters, grad_scale)
    ("huber", (5, 70), np.float32, (1.0,), 1 / 5),  # rows longer than a block
    ("huber", (9, 1), np.float64, (2.0,), 0.25),  # a thread per row
    ("contrastive", (3, 2, 7), np.float32, (1.0,), 1 / 6),
    ("weighted_sigmoid_cross_entropy", (4, 9), np.float32, (np.arange(9.0), 0.1), 3.0),
    ("embedding_contrastive", (5, 2, 13), np.float64, (1.0,), 1 / 5),
]


@pytest.mark.parametrize("loss, shape, dtype, params, grad_scale", GRAD_SCALE_CASES, ids=lambda v: str(v))
def test_grad_scale_multiplies_the_gradient_and_leaves_the_loss(cuda_kernels, loss, shape, dtype, params, grad_scale):
    rng = np.random.default_rng(8)
    if loss == "embedding_contrastive":
        y_true = (rng.random(shape[0]) < 0.5).astype(dtype)
    else:
        y_true = rng.normal(size=shape).astype(dtype)
    y_pred = rng.normal(size=shape).astype(dtype)
    launcher = getattr(cuda_kernels, loss)
    loss_value, grad = launcher(y_true, y_pred, *params)
    scaled_loss, scaled_grad = launcher(y_true, y_pred, *params, grad_scale=grad_scale)
    np.testing.assert_array_equal(scaled_loss, loss_value)
    rtol = 4 * np.finfo(dtype).eps  # two roundings of the product against one
    np.testing.assert_allclose(scaled_grad, grad_scale * grad.astype(np.float64), rtol=rtol, atol=0)
