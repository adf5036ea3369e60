"""Values and gradients of every row against its float64 reference: both dtypes, odd
shapes, an empty batch, upstream gradients other than 1 and every Keras reduction with
``sample_weight``."""

import numpy as np
import pytest

from .helpers import REDUCTIONS, assert_close, fused_loss, reference_loss, sample_weight_for, value_and_gradient
from .table import ROWS, cases, inputs, skip_if_listed

SHAPE = (5, 37)
ODD_SHAPES = ((41, 401), (7,), (3, 5, 1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("row, variant", cases())
def test_values_and_gradients_match_the_reference(row, variant, dtype):
    """With elements exactly on kinks, clip bounds and saturation points, where the
    gradient convention shows (TensorFlow's autodiff of the reference's formula). The
    reference runs in the same dtype: a bound like ``1 - epsilon`` is a different
    number in float32, so ties there are compared like for like."""
    skip_if_listed(row, "values")
    (y_true, y_pred), _ = inputs(row, variant, SHAPE, dtype)
    value, grad = value_and_gradient(fused_loss(row, variant, SHAPE, dtype), y_true, y_pred)
    want_value, want_grad = value_and_gradient(reference_loss(row, variant, SHAPE, dtype=dtype), y_true, y_pred)
    assert value.dtype == np.dtype(dtype) and grad.dtype == np.dtype(dtype)
    tolerance = row.tolerance_for(dtype)
    assert_close("loss", value, want_value, tolerance)
    assert_close("gradient", grad, want_grad, tolerance)


@pytest.mark.parametrize("row, variant", cases())
def test_float32_is_close_to_the_float64_reference(row, variant):
    """float32 inputs, away from the kinks: the float32 kernel against the reference
    computed in float64 on the same (rounded) inputs."""
    (y_true, y_pred), (true64, pred64) = inputs(row, variant, SHAPE, "float32", ties=False)
    value, grad = value_and_gradient(fused_loss(row, variant, SHAPE, "float32", "none"), y_true, y_pred)
    want_value, want_grad = value_and_gradient(reference_loss(row, variant, SHAPE, "none"), true64, pred64)
    assert_close("per-sample loss", value, want_value, row.tolerance_for("float32"))
    assert_close("gradient", grad, want_grad, row.tolerance_for("float32"))


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
@pytest.mark.parametrize("row, variant", cases(all_variants=False))
def test_odd_shapes(row, variant, shape):
    """Rows longer than the kernels' chunks of columns aside: a prime-sized matrix, one
    sample of rank 1 and a trailing axis of 1."""
    skip_if_listed(row, "odd_shapes")
    skip_if_listed(row, f"odd_shapes {shape}")
    (y_true, y_pred), (true64, pred64) = inputs(row, variant, shape, "float32")
    value, grad = value_and_gradient(fused_loss(row, variant, shape, reduction="none"), y_true, y_pred)
    want_value, want_grad = value_and_gradient(reference_loss(row, variant, shape, reduction="none"), true64, pred64)
    assert value.shape == shape[:-1] and grad.shape == shape
    assert_close("per-sample loss", value, want_value, row.tolerance_for("float32"))
    assert_close("gradient", grad, want_grad, row.tolerance_for("float32"))


@pytest.mark.parametrize("row, variant", cases(all_variants=False))
def test_empty_batch(row, variant):
    shape = (0, 4)
    (y_true, y_pred), (true64, pred64) = inputs(row, variant, shape, "float64")
    for reduction in ("sum_over_batch_size", "none"):
        value, grad = value_and_gradient(fused_loss(row, variant, shape, "float64", reduction), y_true, y_pred)
        want_value, _ = value_and_gradient(reference_loss(row, variant, shape, reduction), true64, pred64)
        assert grad.shape == shape
        np.testing.assert_array_equal(value, want_value, err_msg=reduction)


@pytest.mark.parametrize("row, variant", cases(all_variants=False))
def test_upstream_other_than_one(row, variant):
    """``2 * loss(..., sample_weight)``: the saved gradient is rescaled, not returned."""
    dtype = "float64"
    (y_true, y_pred), (true64, pred64) = inputs(row, variant, SHAPE, dtype)
    weights = sample_weight_for(SHAPE)
    value, grad = value_and_gradient(fused_loss(row, variant, SHAPE, dtype), y_true, y_pred, weights, scale=2.0)
    want_value, want_grad = value_and_gradient(reference_loss(row, variant, SHAPE), true64, pred64, weights, scale=2.0)
    assert_close("loss", value, want_value, row.tolerance_for(dtype))
    assert_close("gradient", grad, want_grad, row.tolerance_for(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS, ids=str)
@pytest.mark.parametrize("row, variant", cases(all_variants=False))
def test_every_reduction_with_sample_weight(row, variant, reduction):
    dtype = "float64"
    (y_true, y_pred), (true64, pred64) = inputs(row, variant, SHAPE, dtype)
    weights = sample_weight_for(SHAPE)
    loss = fused_loss(row, variant, SHAPE, dtype, reduction)
    value, grad = value_and_gradient(loss, y_true, y_pred, weights, summed=True)
    want_value, want_grad = value_and_gradient(
        reference_loss(row, variant, SHAPE, reduction), true64, pred64, weights, summed=True
    )
    assert_close("loss", value, want_value, row.tolerance_for(dtype))
    assert_close("gradient", grad, want_grad, row.tolerance_for(dtype))


# NaN and infinities, one per sample (row of the input)
SPECIAL = (("y_pred", np.nan), ("y_pred", np.inf), ("y_pred", -np.inf), ("y_true", np.nan))


@pytest.mark.parametrize("row, variant", cases(all_variants=False))
def test_nan_and_inf_give_what_the_reference_gives(row, variant):
    """Per-sample values, NaN for NaN and the same infinities; gradients in the samples
    whose loss stays finite (where it is NaN, TensorFlow's reverse mode can select a 0
    where fusedloss's forward mode carries the NaN: a sample with a NaN loss has no
    meaningful gradient either way). A row may list one special value it does not
    match, as ``skips["nan_inf y_pred=-inf"]``, with the reason."""
    shape = (len(SPECIAL) + 1, 6)
    (y_true, y_pred), _ = inputs(row, variant, shape, "float64", ties=False)
    arrays = {"y_true": y_true, "y_pred": y_pred}
    compared = [i for i, (which, value) in enumerate(SPECIAL) if f"nan_inf {which}={value}" not in row.skips]
    for i in compared:
        which, value = SPECIAL[i]
        arrays[which][i, 2] = value
    compared.append(len(SPECIAL))  # the sample without a special value
    got = value_and_gradient(fused_loss(row, variant, shape, "float64", "none"), y_true, y_pred)
    want = value_and_gradient(reference_loss(row, variant, shape, "none"), y_true, y_pred)
    assert_close("per-sample loss", got[0][compared], want[0][compared], row.tolerance_for("float64"), equal_nan=True)
    finite = [i for i in compared if np.isfinite(want[0][i])]
    assert_close("gradient", got[1][finite], want[1][finite], row.tolerance_for("float64"), equal_nan=True)


def test_every_row_has_a_reference_and_inputs_in_its_domain():
    """The table itself: references finite on the generated inputs (else the tests above
    compare NaN with NaN)."""
    for row in ROWS:
        for variant in row.variants:
            _, (true64, pred64) = inputs(row, variant, SHAPE, "float64")
            value, grad = value_and_gradient(reference_loss(row, variant, SHAPE, "none"), true64, pred64)
            assert np.isfinite(value).all() and np.isfinite(grad).all(), (row.name, variant.id)
