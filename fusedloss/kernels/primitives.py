"""The scalar functions generated kernels call: one per ``fusedloss.math`` function.

Each takes float32 or float64 scalars and is compiled for both targets (``cpu.py``
and ``cuda.py`` register them). Float64 uses libm (``math.*``). Float32 uses call-free
approximations, so a float32 loop over them vectorises on the CPU (llvmlite has no
vector math library; one libm call in a loop stops LLVM from vectorising it): the
``exp``/``log1p`` of ``math.py`` and the ``log``/``expm1`` below, whose errors
``scripts/measure_approximation_error.py`` measures against float64 libm.

Measured (2026-12-01, 2e7 random float32 bit patterns, ``--primitives-only --sample
20000000``; max relative error where the exact result is a normal float32, and no
special result - NaN, +-inf, 0 - wrong): log 8.2e-8 (0.71 ulp), expm1 1.2e-7 (1.40
ulp), tanh 1.7e-7 (2.05 ulp), sigmoid 1.9e-7 (1.63 ulp), softplus 1.3e-7 (1.52 ulp),
log_sigmoid 1.2e-7 (1.05 ulp), log_cosh 3.2e-7 (2.97 ulp; Keras's own float32 form
loses all relative accuracy below |x| ~ 1e-4). log_cosh rewritten 2026-12-06 (2e8
bit patterns, half the arithmetic): 4.4e-7 (3.76 ulp).
"""

import math

import numpy as np

from .math import _LN2_HI, _LN2_LO, _LOG2_E, _like, _log_float32, exp_float32, log1p_float32, log1p_unit_float32

_F32_ZERO = np.float32(0.0)
_F32_ONE = np.float32(1.0)
_F32_TWO = np.float32(2.0)
_F32_INF = np.float32(np.inf)
_F32_NAN = np.float32(np.nan)
_F32_SMALLEST_NORMAL = np.float32(2.0**-126)
_F32_TWO_23 = np.float32(2.0**23)
_F32_23_LN2 = np.float32(23.0 * math.log(2.0))
_LN2 = math.log(2.0)  # a constant, not a call the GPU would make in float64
_ROUNDING_SHIFTER = np.float32(12582912.0)
# Below this |x|, expm1 is its Taylor polynomial (degree 8: truncation < 2.1e-10 relative).
_F32_EXPM1_SERIES = np.float32(0.34657359)
# k in [-60, 129]: the two halves of 2^k stay normal; beyond 129 (x > 89.4) the result
# overflows to inf anyway, and below x = -41 expm1 is -1 to float32's precision.
_EXPM1_K_LOW = np.float32(-60.0)
_EXPM1_K_HIGH = np.float32(129.0)
_EXPM1_K_SCALED = np.float32(25.0)
_EXPM1_MINUS_ONE_BELOW = np.float32(-41.0)
_F32_MINUS_ONE = np.float32(-1.0)
_EXPM1_C = tuple(np.float32(1.0 / math.factorial(k)) for k in range(2, 9))


def log_float32(y):
    """``log(y)`` for a float32 ``y`` without calls: ``math._log_float32`` for normal
    numbers (subnormals scaled by 2^23 first), ``-inf`` at 0, ``inf`` at ``inf``, NaN
    below 0 and for NaN. Error: see ``scripts/measure_approximation_error.py``."""
    tiny = y < _F32_SMALLEST_NORMAL
    scaled = y * _F32_TWO_23 if tiny else y
    result = _log_float32(scaled, _F32_ZERO)
    if tiny:
        result = result - _F32_23_LN2
    if y == _F32_ZERO:
        result = -_F32_INF
    if y == _F32_INF:
        result = _F32_INF
    if not y >= _F32_ZERO:  # y < 0, or NaN
        result = _F32_NAN
    return result


def expm1_float32(x):
    """``exp(x) - 1`` for a float32 ``x`` without calls.

    Method: ``x = k ln2 + r`` as in ``exp_float32`` (``|r| <= ln(2) / 2``, exact) and
    ``expm1(x) = 2^k expm1(r) + (2^k - 1)``, both terms exact but for the one rounding
    of their sum, ``expm1(r)`` a Taylor polynomial (degree 8, truncation below 2.1e-10
    relative: no cancellation). Near 0 (``|x| < ln(2) / 2``) ``k = 0``, so the result is
    the polynomial at ``x`` itself. ``2^k`` is applied as two halves, so that ``k`` up to
    129 stays in range; from ``k = 25`` on the ``- 1`` is below rounding and the result
    is ``2^k (expm1(r) + 1)``, finite up to float32's largest; below ``x = -41``, -1.
    One polynomial and no call in the code: small enough for LLVM to inline into the
    row loop (a call left there keeps the loop scalar).
    """
    k = (x * _LOG2_E + _ROUNDING_SHIFTER) - _ROUNDING_SHIFTER
    k = k if k < _EXPM1_K_HIGH else _EXPM1_K_HIGH  # NaN too: r carries it
    k = k if k > _EXPM1_K_LOW else _EXPM1_K_LOW
    k = k if abs(x) >= _F32_EXPM1_SERIES else _F32_ZERO
    r = (x - k * _LN2_HI) - k * _LN2_LO
    whole = np.int32(k)
    half = whole >> np.int32(1)
    scale_low = np.int32((half + np.int32(127)) << np.int32(23)).view(np.float32)  # 2^(k // 2)
    scale_high = np.int32((whole - half + np.int32(127)) << np.int32(23)).view(np.float32)  # 2^(k - k // 2)
    series = _expm1_series(r)
    exact_sum = scale_low * (scale_high * series) + (scale_low * scale_high - _F32_ONE)
    scaled = scale_low * (scale_high * (series + _F32_ONE))
    result = exact_sum if k < _EXPM1_K_SCALED else scaled
    return _F32_MINUS_ONE if x < _EXPM1_MINUS_ONE_BELOW else result


def _expm1_series(x):
    series = _EXPM1_C[5] + x * _EXPM1_C[6]
    series = _EXPM1_C[2] + x * (_EXPM1_C[3] + x * (_EXPM1_C[4] + x * series))
    return x + x * x * (_EXPM1_C[0] + x * (_EXPM1_C[1] + x * series))


def _exp(x):
    if isinstance(x, np.float32):
        return exp_float32(x)
    return math.exp(x)


def _log(x):
    if isinstance(x, np.float32):
        return log_float32(x)
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def _log1p(x):
    if isinstance(x, np.float32):
        return log1p_float32(x)
    return math.log1p(x) if x > -1 else (-math.inf if x == -1 else math.nan)


def _expm1(x):
    if isinstance(x, np.float32):
        return expm1_float32(x)
    return math.expm1(x)


def _sqrt(x):
    # An instruction on both targets (LLVM's sqrt intrinsic); NaN below 0 and for NaN.
    return math.sqrt(x) if x >= _like(x, 0.0) else _like(x, math.nan)


def _tanh(x):
    """``tanh(x) = sign(x) (1 - e) / (1 + e)`` with ``e = exp(-2|x|)``, written with
    ``expm1`` so small ``x`` keep their relative accuracy."""
    if isinstance(x, np.float32):
        m = expm1_float32(np.float32(-2.0) * abs(x))
        t = -m / (_F32_TWO + m)
        return t if x >= _F32_ZERO else -t
    return math.tanh(x)


def _exp_of_minus_abs(x):
    return _exp(-abs(x))


def _sigmoid(x):
    """``1 / (1 + exp(-x))`` from ``e = exp(-|x|)``: nothing overflows."""
    e = _exp_of_minus_abs(x)
    inverse = _like(x, 1.0) / (_like(x, 1.0) + e)
    return inverse if x >= _like(x, 0.0) else e * inverse


def _log1p_of_exp_of_minus_abs(x):
    """``log(1 + exp(-|x|))``, a number in [0, log 2]."""
    e = _exp_of_minus_abs(x)
    if isinstance(x, np.float32):
        y = _F32_ONE + e
        return log1p_unit_float32(e, y, _F32_ONE / y)
    return math.log1p(e)


def _softplus(x):
    """``log(1 + exp(x)) = max(x, 0) + log(1 + exp(-|x|))``; NaN stays NaN."""
    relu = x if x > _like(x, 0.0) else _like(x, 0.0)  # NaN: the log term below is NaN
    return relu + _log1p_of_exp_of_minus_abs(x)


def _log_sigmoid(x):
    return -_softplus(-x)


def _log_cosh(x):
    """``log(cosh(x))``.

    Float32, from ``m = expm1(-2|x|)`` and ``t = tanh|x| = -m / (2 + m)`` (the
    operations of ``_tanh``, which LLVM may share with a derivative's): for ``|x| <=
    1/2`` as ``-log1p(-t**2) / 2`` (``cosh**2 = 1 / (1 - tanh**2)``: no cancellation,
    small ``x`` keep their relative accuracy, where Keras's form loses it), beyond as
    ``|x| - log(2) + log1p(1 + m)`` (``1 + m = exp(-2|x|)``, exact there: Keras's form,
    finite for every finite ``x``). One expm1, one division and one log1p of either
    argument, where the float64 form (below) takes two exponentials and two logarithms
    and left a LogCosh kernel compute-bound (README, 2026-12-06). 1/2 is where the two
    forms' errors cross (4.4e-7 relative, 3.8 ulp; the float64 form in float32: 2.9e-7).

    Float64: for ``|x| <= 1`` ``log1p(m**2 / (2 (1 + m)))`` with ``m = expm1(|x|)``,
    beyond ``|x| + log(1 + exp(-2|x|)) - log(2)``.
    """
    a = abs(x)
    if isinstance(x, np.float32):
        m = expm1_float32(np.float32(-2.0) * a)
        t = -m / (_F32_TWO + m)
        near = a <= np.float32(0.5)  # False for NaN: the far form carries it
        log_term = log1p_float32(-(t * t) if near else _F32_ONE + m)
        return np.float32(-0.5) * log_term if near else a - np.float32(_LN2) + log_term
    # Written with _like: numba types this part for float32 too, where it is never reached.
    m = _expm1(a)
    near = _log1p(m * m / (_like(x, 2.0) + _like(x, 2.0) * m))
    far = a + _log1p_of_exp_of_minus_abs(_like(x, 2.0) * a) - _like(x, _LN2)
    return near if a <= _like(x, 1.0) else far


def _sign(x):
    zero = _like(x, 0.0)
    if x > zero:
        return _like(x, 1.0)
    if x < zero:
        return _like(x, -1.0)
    return x * zero  # 0 for 0, NaN for NaN


def _maximum(a, b):
    # NaN in either gives NaN, as TensorFlow's maximum does.
    return a if (a >= b or a != a) else b


def _minimum(a, b):
    return a if (a <= b or a != a) else b


def _clip(x, low, high):
    return _maximum(_minimum(x, high), low)


def _floor(x):
    """``floor(x)`` as a float of ``x``'s type: exact at any fastmath flags. The GPU
    compiles libdevice's ``floor`` in its place (NumPy's ufunc has no CUDA lowering)."""
    return np.floor(x)


def _pow(a, b):
    """``a ** b``. Float32: ``exp(b log|a|)`` with the sign and special cases of C's
    ``pow`` (a negative finite base needs an integer exponent; ``1 ** b`` and ``a ** 0``
    are 1, NaN included; ``(-1) ** inf`` is 1), so that it vectorises; float64: libm's
    ``pow``. The CPU compiles it inline into the row loop, under the loop's fastmath
    flags, so nothing here relies on the rounding of a particular order of operations:
    integers are tested with ``floor`` (exact at any flags)."""
    if isinstance(a, np.float32):
        magnitude = abs(a)
        result = exp_float32(b * log_float32(magnitude))
        # Written with & and | (no short-circuit branches), so a loop over it vectorises.
        whole = _floor(b) == b
        half = b * np.float32(0.5)
        odd = whole & (_floor(half) != half)
        zero_base = _F32_ZERO if b > _F32_ZERO else _F32_INF
        result = zero_base if magnitude == _F32_ZERO else result
        signed = -result if odd else result
        # A negative finite base with a fractional exponent has no real power; -inf has
        # the magnitude's (inf above 0, 0 below).
        negative_base = signed if whole else (result if a == -_F32_INF else _F32_NAN)
        result = negative_base if a < _F32_ZERO else result
        one = (a == _F32_ONE) | (b == _F32_ZERO) | ((magnitude == _F32_ONE) & (abs(b) == _F32_INF))
        return _F32_ONE if one else result
    return a**b


# The names generated code calls, one per fusedloss.math function (and the operators
# that need a helper); cpu.py and cuda.py compile each of these.
PRIMITIVES = {
    "exp": _exp,
    "log": _log,
    "log1p": _log1p,
    "expm1": _expm1,
    "sqrt": _sqrt,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "log_sigmoid": _log_sigmoid,
    "log_cosh": _log_cosh,
    "sign": _sign,
    "maximum": _maximum,
    "minimum": _minimum,
    "clip": _clip,
    "pow": _pow,
}
PRIMITIVE_NAMES = tuple(function.__name__ for function in PRIMITIVES.values())
# Helpers the primitives call, compiled the same way.
HELPERS = (log_float32, expm1_float32, _expm1_series, _exp_of_minus_abs, _log1p_of_exp_of_minus_abs)
