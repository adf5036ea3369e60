"""CUDA weighted sigmoid cross-entropy in numba's simulator (logic) and compiled to PTX
(code generation). Tiny grids: every simulated thread is a Python thread (~2 ms)."""

import os
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

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
    pos_weight: object
    rtol: float


CASES = [
    Case((7,), np.float32, 2.5, 2e-6),  # one row shorter than a block
    Case((3, 45), np.float64, "per-class", 1e-12),  # rows longer than a block, more rows than blocks
    Case((2, 2, 5), np.float32, "per-class", 2e-6),  # rank 3
    Case((5, 1), np.float64, 0.0, 1e-12),  # one column, pos_weight 0
]


def random_inputs(shape, dtype, seed=1):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.uniform(size=shape) < 0.5, np.round(rng.uniform(size=shape)), rng.uniform(size=shape))
    logits = 4.0 * rng.normal(size=shape)
    logits.flat[0] = 0.0  # where sigmoid(-x) switches form
    return labels.astype(dtype), logits.astype(dtype)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.shape}-{np.dtype(c.dtype).name}-{c.pos_weight}")
def test_in_simulator_matches_reference(cuda_kernels, case):
    y_true, y_pred = random_inputs(case.shape, case.dtype)
    pos_weight = case.pos_weight
    if pos_weight == "per-class":
        pos_weight = np.linspace(0.0, 3.0, case.shape[-1]).astype(case.dtype)
    loss, grad = cuda_kernels.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight, 0.1)
    want_loss, want_grad = reference.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight, 0.1)
    assert loss.shape == case.shape[:-1] and grad.shape == case.shape
    assert loss.dtype == grad.dtype == case.dtype
    np.testing.assert_allclose(loss, want_loss, rtol=case.rtol)
    np.testing.assert_allclose(grad, want_grad, rtol=case.rtol, atol=1e-7)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy scalars warn at inf - inf
def test_simulator_and_cpu_agree_on_extreme_and_non_finite_logits(cuda_kernels):
    from fusedloss.kernels import cpu

    x = np.array([[1e4, -1e4, 0.0, 88.0, -88.0, np.inf, -np.inf, np.nan]], np.float32)
    z = np.array([[0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 0.5]], np.float32)
    on_gpu = cuda_kernels.weighted_sigmoid_cross_entropy(z.T, x.T, 2.0)
    on_cpu = cpu.weighted_sigmoid_cross_entropy(z.T, x.T, 2.0)
    for got, want in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(got, want, rtol=2e-7)  # NaN where NaN, inf where inf


def test_loss_only_kernel_and_given_buffers(cuda_kernels):
    y_true, y_pred = random_inputs((2, 40), np.float64, seed=2)
    loss, grad = cuda_kernels.weighted_sigmoid_cross_entropy(y_true, y_pred, 1.5, with_grad=False)
    assert grad is None
    want_loss, want_grad = reference.weighted_sigmoid_cross_entropy(y_true, y_pred, 1.5)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    loss_out, grad_out = np.empty(2), np.empty((2, 40))
    loss, grad = cuda_kernels.weighted_sigmoid_cross_entropy(y_true, y_pred, 1.5, loss_out=loss_out, grad_out=grad_out)
    assert loss is loss_out and grad is grad_out
    np.testing.assert_allclose(grad_out, want_grad, rtol=1e-12, atol=1e-16)


def test_pos_weight_of_the_wrong_length_is_named(cuda_kernels):
    with pytest.raises(ValueError, match=r"y_pred has 3 classes \(its last axis\), got pos_weight of shape \(2,\)"):
        cuda_kernels.weighted_sigmoid_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3)), [1.0, 2.0])


@settings(max_examples=15, deadline=None)
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=40),
    pos_weight=st.floats(0, 20),
    label_smoothing=st.floats(0, 1),
)
def test_property_simulator_matches_reference(data, shape, pos_weight, label_smoothing):
    from fusedloss.kernels import cuda

    y_true = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    y_pred = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-60, 60)))
    threads, blocks = cuda.THREADS_PER_BLOCK, cuda.MAX_BLOCKS
    cuda.THREADS_PER_BLOCK, cuda.MAX_BLOCKS = 32, 2  # hypothesis and function fixtures do not mix
    try:
        loss, grad = cuda.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight, label_smoothing)
    finally:
        cuda.THREADS_PER_BLOCK, cuda.MAX_BLOCKS = threads, blocks
    want_loss, want_grad = reference.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight, label_smoothing)
    scale = (1.0 + pos_weight) * (1.0 + np.abs(y_pred).max())
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-14 * scale)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-14 * (1.0 + pos_weight))
