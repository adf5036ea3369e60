"""CPU weighted sigmoid cross-entropy kernel against the float64 NumPy reference, and
the row-scaling kernel the bridge's backward uses."""

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
# float32: the approximations are within 1.2e-7 per element; the rest is float32
# rounding of the sums and of the smoothed labels.
TOLERANCES = {np.float32: (2e-6, 1e-6), np.float64: (1e-12, 1e-14)}
CASES = [Case(shape, dtype, *TOLERANCES[dtype]) for shape in SHAPES for dtype in (np.float32, np.float64)]
POS_WEIGHTS = [1.0, 0.0, 3.5, "per-class"]


def random_inputs(shape, dtype, seed=0, scale=4.0):
    """Soft labels in [0, 1] (hard 0/1 on a third of them) and logits of all sizes."""
    rng = np.random.default_rng(seed)
    labels = rng.uniform(size=shape)
    hard = rng.uniform(size=shape) < 0.33
    labels[hard] = np.round(labels[hard])
    logits = scale * rng.normal(size=shape)
    return labels.astype(dtype), logits.astype(dtype)


def pos_weight_for(kind, shape, seed=0):
    if kind == "per-class":
        return np.random.default_rng(seed).uniform(0.0, 4.0, size=shape[-1])
    return kind


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.shape}-{np.dtype(c.dtype).name}")
@pytest.mark.parametrize("pos_weight", POS_WEIGHTS, ids=str)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_matches_reference(case, pos_weight, label_smoothing):
    y_true, y_pred = random_inputs(case.shape, case.dtype)
    pos_weight = pos_weight_for(pos_weight, case.shape)
    if case.dtype == np.float32 and not np.isscalar(pos_weight):
        pos_weight = pos_weight.astype(np.float32)  # the reference then sees the same weights
    loss, grad = cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight, label_smoothing)
    want_loss, want_grad = reference.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight, label_smoothing)
    assert loss.shape == case.shape[:-1] and loss.dtype == case.dtype
    assert grad.shape == case.shape and grad.dtype == case.dtype
    np.testing.assert_allclose(loss, want_loss, rtol=case.rtol, atol=case.atol)
    np.testing.assert_allclose(grad, want_grad, rtol=case.rtol, atol=case.atol / case.shape[-1])


def test_formula_at_hand_picked_points():
    # loss = (1 - z) x + l (log1p(exp(-|x|)) + max(-x, 0)), l = 1 + (q - 1) z, q = 3
    x = np.array([0.0, 2.0, -2.0, 30.0], np.float64)
    z = np.array([1.0, 0.0, 1.0, 0.5], np.float64)
    loss, grad = cpu.weighted_sigmoid_cross_entropy(z, x, 3.0)
    values = [3 * np.log(2.0), 2.0 + np.log1p(np.exp(-2.0)), 3 * (np.log1p(np.exp(-2.0)) + 2.0), 15.0 + 2.0 * np.log1p(np.exp(-30.0))]
    slopes = [-1.5, 1 / (1 + np.exp(-2.0)), -3 / (1 + np.exp(-2.0)), 0.5 - 2.0 / (1 + np.exp(30.0))]
    np.testing.assert_allclose(loss, np.mean(values), rtol=1e-15)
    np.testing.assert_allclose(grad * 4, slopes, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_neither_overflow_nor_lose_the_small_loss(dtype):
    # |x| = 1e4: the loss is (1 - z) max(x, 0) + q z max(-x, 0) plus exp(-1e4) = 0.
    x = np.array([1e4, -1e4, 1e4, -1e4, 30.0], dtype)
    z = np.array([0.0, 0.0, 1.0, 1.0, 1.0], dtype)
    loss, grad = cpu.weighted_sigmoid_cross_entropy(z[:, None], x[:, None], 2.0)
    np.testing.assert_allclose(loss, [1e4, 0.0, 0.0, 2e4, 2 * np.log1p(np.exp(-30.0))], rtol=1e-6)
    np.testing.assert_allclose(grad[:, 0], [1.0, 0.0, 0.0, -2.0, -2 / (1 + np.exp(30.0))], rtol=1e-6)
    # A confidently right negative keeps its tiny loss (TensorFlow's own form gives 0).
    assert loss[4] > 0


def test_label_smoothing_pulls_labels_to_one_half():
    y_true, y_pred = random_inputs((6, 9), np.float64)
    smoothed = y_true * 0.7 + 0.15
    np.testing.assert_allclose(
        cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, 2.0, 0.3)[0],
        cpu.weighted_sigmoid_cross_entropy(smoothed, y_pred, 2.0)[0],
        rtol=1e-14,
    )


def test_per_class_weights_follow_the_last_axis():
    y_true, y_pred = random_inputs((4, 3, 5), np.float64)
    weights = np.array([0.5, 1.0, 2.0, 0.0, 7.0])
    loss, grad = cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, weights)
    for column, weight in enumerate(weights):
        single_loss, single_grad = cpu.weighted_sigmoid_cross_entropy(
            y_true[..., column : column + 1], y_pred[..., column : column + 1], weight
        )
        np.testing.assert_allclose(grad[..., column] * 5, single_grad[..., 0], rtol=1e-14)
    np.testing.assert_allclose(loss, reference.weighted_sigmoid_cross_entropy(y_true, y_pred, weights)[0], rtol=1e-13)


def test_long_rows_are_split_across_tasks_and_summed_exactly_once():
    n = 2 * cpu.COLUMNS_PER_TASK + 17
    y_true, y_pred = random_inputs((3, n), np.float64)
    weights = np.linspace(0.5, 2.0, n)
    loss, grad = cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, weights)
    want_loss, want_grad = reference.weighted_sigmoid_cross_entropy(y_true, y_pred, weights)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    # atol: the reference's (1 - z) - l sigmoid(-x) cancels where the slope is near 0.
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15 / n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_logits_follow_tensorflows_formula(dtype):
    # TF: (1 - z) x + l (log1p(exp(-|x|)) + max(-x, 0)); at -inf that is -inf + inf.
    x = np.array([np.nan, np.inf, np.inf, -np.inf, -np.inf], dtype)
    z = np.array([0.5, 0.0, 1.0, 0.0, 1.0], dtype)
    loss, grad = cpu.weighted_sigmoid_cross_entropy(z[:, None], x[:, None], 2.0)
    want_loss, want_grad = reference.weighted_sigmoid_cross_entropy(z[:, None], x[:, None], 2.0)
    np.testing.assert_array_equal(loss, want_loss)  # [nan, inf, nan, nan, nan]
    np.testing.assert_array_equal(grad, want_grad)  # [nan, 1 - z, 1 - z, -q z, -q z]
    assert np.isnan(loss[[0, 2, 3, 4]]).all() and loss[1] == np.inf


def test_loss_only_kernel_writes_no_gradient_and_the_same_loss():
    y_true, y_pred = random_inputs((41, 401), np.float32)
    loss, grad = cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, 1.5, 0.1, with_grad=False)
    assert grad is None
    np.testing.assert_array_equal(loss, cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, 1.5, 0.1)[0])


def test_writes_into_given_buffers_and_leaves_inputs_alone():
    y_true, y_pred = random_inputs((9, 13), np.float32)
    weights = np.arange(13, dtype=np.float32)
    before = y_true.copy(), y_pred.copy(), weights.copy()
    loss_out, grad_out = np.empty(9, np.float32), np.empty((9, 13), np.float32)
    loss, grad = cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, weights, loss_out=loss_out, grad_out=grad_out)
    assert loss is loss_out and grad is grad_out
    for array, copy in zip((y_true, y_pred, weights), before):
        np.testing.assert_array_equal(array, copy)


def test_repeated_calls_are_bit_identical():
    y_true, y_pred = random_inputs((3, 3 * cpu.COLUMNS_PER_TASK + 5), np.float32)
    first = cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, 2.0)
    for _ in range(2):
        again = cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, 2.0)
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])


@pytest.mark.parametrize(
    "pos_weight, match",
    [
        (np.ones(4), r"y_pred has 5 classes \(its last axis\), got pos_weight of shape \(4,\)"),
        (np.ones((5, 1)), r"got pos_weight of shape \(5, 1\)"),
    ],
)
def test_pos_weight_that_does_not_fit_the_rows_is_named(pos_weight, match):
    y_true, y_pred = random_inputs((2, 5), np.float32)
    with pytest.raises(ValueError, match=match):
        cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"y_true \(2, 3\) and y_pred \(3, 2\)"):
        cpu.weighted_sigmoid_cross_entropy(np.zeros((2, 3)), np.zeros((3, 2)))


logits = st.floats(-80, 80, allow_nan=False, width=64)
labels = st.floats(0, 1, width=64)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
    pos_weight=st.floats(0, 100),
    label_smoothing=st.floats(0, 1),
    per_class=st.booleans(),
)
def test_property_matches_reference(data, shape, pos_weight, label_smoothing, per_class):
    y_true = data.draw(hnp.arrays(np.float64, shape, elements=labels))
    y_pred = data.draw(hnp.arrays(np.float64, shape, elements=logits))
    if per_class:
        pos_weight = data.draw(hnp.arrays(np.float64, shape[-1], elements=st.floats(0, 100)))
    loss, grad = cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight, label_smoothing)
    want_loss, want_grad = reference.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight, label_smoothing)
    # TensorFlow's form (the reference) cancels: |x| + l*log1p - |x|; allow for it.
    scale = 1.0 + np.abs(y_pred).mean(axis=-1) * (1.0 + np.max(pos_weight))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-14 * np.max(scale))
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-14 * (1.0 + np.max(pos_weight)))


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=40),
    pos_weight=st.floats(0, 10),
)
def test_property_float32_matches_reference(data, shape, pos_weight):
    y_true = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
    y_pred = data.draw(hnp.arrays(np.float32, shape, elements=st.floats(-90, 90, width=32)))
    loss, grad = cpu.weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight)
    want_loss, want_grad = reference.weighted_sigmoid_cross_entropy(y_true, y_pred, np.float32(pos_weight))
    scale = (1.0 + pos_weight) * (1.0 + np.abs(y_pred.astype(np.float64)).max())
    np.testing.assert_allclose(loss, want_loss, rtol=2e-6, atol=2e-7 * scale)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-6, atol=2e-7 * (1.0 + pos_weight) / shape[-1])


# ---------------------------------------------------------------------------------
# Row scaling (the bridge's backward on the CPU)


@pytest.mark.parametrize("shape", [(7,), (41, 401), (3, 5, 33), (2, 2 * cpu.COLUMNS_PER_TASK + 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_rows(shape, dtype):
    rng = np.random.default_rng(4)
    rows = rng.normal(size=shape).astype(dtype)
    scales = rng.normal(size=shape[:-1]).astype(dtype)
    before = rows.copy()
    out = np.empty_like(rows)
    assert cpu.scale_rows(scales, rows, out) is out
    np.testing.assert_array_equal(out, np.asarray(scales)[..., None] * rows)
    np.testing.assert_array_equal(rows, before)


def test_scale_rows_names_bad_shapes():
    with pytest.raises(ValueError, match=r"factors must have grad.s leading shape and dtype, got factors \(4,\) float64 and grad \(3, 2\)"):
        cpu.scale_rows(np.ones(4), np.ones((3, 2)), np.empty((3, 2)))
    with pytest.raises(ValueError, match=r"out must be C-contiguous with shape \(3, 2\)"):
        cpu.scale_rows(np.ones(3), np.ones((3, 2)), np.empty((2, 3)))
