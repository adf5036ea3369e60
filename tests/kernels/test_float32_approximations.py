"""The float32 exp/log1p approximations in ``kernels/math.py``: their documented error
bound on a large sample, their special values, and the same results from the plain
Python that the CUDA simulator runs.

The bound is measured over every float32 by ``scripts/measure_approximation_error.py``;
here a sample of a few million inputs (random bit patterns and dense sweeps of the
ranges the loss uses) is checked against it, compiled exactly as in the CPU kernels.
"""

import math

import numpy as np
import pytest
from numba import njit

from fusedloss.kernels import cpu
from fusedloss.kernels import math as scalar_math

# The bounds stated in the docstrings (measured over all float32, see the script).
EXP_BOUND = 9.2e-8
LOG1P_BOUND = 8.7e-8
SMALLEST_NORMAL = 2.0**-126
FLOAT32_MAX = float(np.finfo(np.float32).max)

exp_float32 = scalar_math.exp_float32
log1p_float32 = scalar_math.log1p_float32
log1p_unit_float32 = scalar_math.log1p_unit_float32


@njit(fastmath=cpu.FASTMATH, error_model="numpy")
def compiled_exp(x, out):
    for i in range(x.size):
        out[i] = exp_float32(x[i])


@njit(fastmath=cpu.FASTMATH, error_model="numpy")
def compiled_log1p(u, out):
    for i in range(u.size):
        out[i] = log1p_float32(u[i])


@njit(fastmath=cpu.FASTMATH, error_model="numpy")
def compiled_log1p_unit(u, out):
    one = np.float32(1.0)
    for i in range(u.size):
        y = one + u[i]
        out[i] = log1p_unit_float32(u[i], y, one / y)


def apply(compiled, inputs):
    out = np.empty_like(inputs)
    compiled(inputs, out)
    return out


def random_float32(n, seed):
    return np.random.default_rng(seed).integers(0, 1 << 32, size=n, dtype=np.uint32).view(np.float32)


def relative_errors(got, exact):
    return np.abs(got.astype(np.float64) - exact) / np.abs(exact)


@pytest.fixture(scope="module")
def exp_inputs():
    random = random_float32(1_000_000, seed=1)
    sweep = np.linspace(-87.3365, 88.7228, 1_000_001, dtype=np.float32)
    near_zero = np.float32(np.linspace(-1e-3, 1e-3, 100_001))
    return np.concatenate([random, sweep, near_zero])


@pytest.fixture(scope="module")
def log1p_inputs():
    random = random_float32(1_000_000, seed=2)
    unit = np.linspace(0.0, 1.0, 1_000_001, dtype=np.float32)  # what the loss asks for
    near_minus_one = np.float32(-1.0 + np.geomspace(6e-8, 0.5, 200_000))
    wide = np.geomspace(1e-30, 3e38, 300_000).astype(np.float32)
    return np.concatenate([random, unit, near_minus_one, wide, -wide[wide < 1e-3]])


def test_exp_is_within_its_bound_where_the_result_is_normal(exp_inputs):
    with np.errstate(over="ignore", invalid="ignore"):
        exact = np.exp(exp_inputs.astype(np.float64))
    normal = (exact >= SMALLEST_NORMAL) & (exact <= FLOAT32_MAX)
    assert normal.sum() > 1_500_000
    errors = relative_errors(apply(compiled_exp, exp_inputs)[normal], exact[normal])
    assert errors.max() <= EXP_BOUND, f"{errors.max():.3e} at x = {exp_inputs[normal][errors.argmax()]!r}"


def test_log1p_is_within_its_bound(log1p_inputs):
    inputs = log1p_inputs[log1p_inputs > -1.0]
    exact = np.log1p(inputs.astype(np.float64))
    measurable = np.abs(exact) >= SMALLEST_NORMAL
    errors = relative_errors(apply(compiled_log1p, inputs)[measurable], exact[measurable])
    assert errors.max() <= LOG1P_BOUND, f"{errors.max():.3e} at u = {inputs[measurable][errors.argmax()]!r}"


def test_log1p_on_the_unit_interval_as_the_loss_calls_it(log1p_inputs):
    inputs = log1p_inputs[(log1p_inputs >= 0.0) & (log1p_inputs <= 1.0)]
    exact = np.log1p(inputs.astype(np.float64))
    got = apply(compiled_log1p_unit, inputs)
    nonzero = exact > 0
    assert np.all(got[~nonzero] == 0.0)
    errors = relative_errors(got[nonzero], exact[nonzero])
    assert errors.max() <= LOG1P_BOUND, f"{errors.max():.3e} at u = {inputs[nonzero][errors.argmax()]!r}"


def test_tiny_log1p_arguments_come_back_exactly():
    tiny = np.float32([1e-45, -1e-45, 1e-30, -1e-30, 2.0**-25, -(2.0**-25), 1e-38])
    np.testing.assert_array_equal(apply(compiled_log1p, tiny), tiny)


def test_exp_special_values():
    x = np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, 88.72283, 88.72284, -87.33654, -87.3366, -104.0, 1e30, -1e30])
    got = apply(compiled_exp, x)
    assert np.isnan(got[0])
    assert got[1] == np.inf and got[2] == 0.0 and got[3] == 1.0 and got[4] == 1.0
    assert np.isfinite(got[5]) and got[6] == np.inf  # the last finite input, then overflow
    assert got[7] >= SMALLEST_NORMAL and got[8] == 0.0  # the last normal result, then flushed to 0
    np.testing.assert_array_equal(got[9:], [0.0, np.inf, 0.0])


def test_log1p_special_values():
    u = np.float32([np.nan, np.inf, -1.0, -1.5, -np.inf, 0.0, 3.4e38])
    got = apply(compiled_log1p, u)
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf
    assert np.isnan(got[3]) and np.isnan(got[4]) and got[5] == 0.0
    np.testing.assert_allclose(got[6], math.log1p(3.4e38), rtol=LOG1P_BOUND)


def test_log1p_unit_propagates_nan():
    nan = np.float32(np.nan)
    assert np.isnan(apply(compiled_log1p_unit, np.float32([nan, 0.5]))[0])


@pytest.mark.parametrize("name", ["exp", "log1p"])
def test_plain_python_gives_what_the_compiled_code_gives(name):
    """The CUDA simulator runs math.py as Python on NumPy scalars: the same values up
    to the last bit or two (the compiled code contracts into FMAs)."""
    rng = np.random.default_rng(3)
    if name == "exp":
        inputs, compiled, python = np.float32(rng.uniform(-87, 88, 3000)), compiled_exp, exp_float32
    else:
        inputs, compiled, python = np.float32(np.exp(rng.uniform(-20, 20, 3000)) - 0.99), compiled_log1p, log1p_float32
    with np.errstate(over="ignore", invalid="ignore"):
        by_python = np.array([python(value) for value in inputs])
    assert by_python.dtype == np.float32  # NumPy scalars keep float32 arithmetic
    np.testing.assert_allclose(by_python, apply(compiled, inputs), rtol=3e-7)
