"""cpu.scale_rows: the bridge's backward pass (upstream gradient times saved gradient)."""

import numpy as np
import pytest

from fusedloss.kernels import cpu

# (factors shape, grad shape): one factor per loss element, the grad's leading axes
SHAPES = (((5,), (5, 1)), ((41,), (41, 401)), ((3, 4), (3, 4, 7)), ((6,), (6, 2, 9)), ((), (11,)), ((0,), (0, 3)))


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("factors_shape, grad_shape", SHAPES)
def test_scale_rows_is_the_broadcast_product(factors_shape, grad_shape, dtype):
    rng = np.random.default_rng(0)
    factors = rng.normal(size=factors_shape).astype(dtype)
    grad = rng.normal(size=grad_shape).astype(dtype)
    grad_before = grad.copy()
    out = np.empty(grad_shape, dtype)
    assert cpu.scale_rows(factors, grad, out=out) is out
    expected = factors.reshape(factors_shape + (1,) * (len(grad_shape) - len(factors_shape))) * grad
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(grad, grad_before)  # the saved gradient is only read


def test_scale_rows_propagates_nan_and_inf_like_a_multiply():
    factors = np.array([np.nan, np.inf, 0.0], np.float32)
    grad = np.array([[1.0, 2.0], [0.0, -1.0], [np.inf, 1.0]], np.float32)
    with np.errstate(invalid="ignore"):
        expected = factors[:, None] * grad
    np.testing.assert_array_equal(cpu.scale_rows(factors, grad), expected)


def test_scale_rows_rejects_mismatches():
    with pytest.raises(ValueError, match=r"factors must have grad's leading shape and dtype, got factors \(4,\)"):
        cpu.scale_rows(np.ones(4, np.float32), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="got factors \\(3,\\) float64 and grad \\(3, 2\\) float32"):
        cpu.scale_rows(np.ones(3), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"out must be C-contiguous with shape \(3, 2\)"):
        cpu.scale_rows(np.ones(3), np.ones((3, 2)), out=np.empty((2, 3)))
