"""Each loss's scalar math, written once.

Every function here takes one element (a label, a prediction, the column index and
the loss's parameters) and returns ``(value, slope)``: the element's loss and its
derivative with respect to the prediction. They are plain Python so that
``cpu.py`` compiles them with ``numba.njit`` and ``cuda.py`` with
``numba.cuda.jit(device=True)``; nothing else may live in this module.

``params`` is a tuple whose layout belongs to each loss (see the launchers).

``pair_distance`` is the one exception to the one-element rule: the contrastive loss
fused from two embeddings needs a pair's distance computed without underflow or
overflow, and both targets compile that same function too.
"""

import math

import numpy as np


def huber(label, prediction, column, params):
    """Huber loss of one element, and its derivative.

    Formula, with ``e = prediction - label`` and ``delta = params[0] > 0``::

        loss(e)  = 0.5 * e**2                      if |e| <= delta
                 = delta * |e| - 0.5 * delta**2    otherwise
        dloss/de = e                               if |e| <= delta
                 = delta * e / |e|                 otherwise

    ``delta * e / |e|`` is ``+-delta`` for finite ``e`` (the division is exact) and
    NaN for ``e = +-inf`` or NaN, which is what Keras's autodiff of its ``where``
    formulation returns there (``0 * inf`` in the untaken branch), so a fused model
    meets a non-finite error exactly as a native one does.
    """
    delta = params[0]
    error = prediction - label
    abs_error = abs(error)
    half = _like(error, 0.5)  # a bare 0.5 would make float32 math float64
    # d/de 0.5 e^2 = e ; d/de (delta |e| - delta^2 / 2) = delta sign(e)
    if abs_error <= delta:
        return half * error * error, error
    return delta * abs_error - half * delta * delta, delta * error / abs_error


def contrastive(label, distance, column, params):
    """Contrastive loss of one pair given its distance, and its derivative.

    Formula (TF Addons' convention: ``label = 1`` for a similar pair), with
    ``d = distance`` and ``margin = params[0] >= 0``::

        loss(d)  = label * d**2 + (1 - label) * max(margin - d, 0)**2
        dloss/dd = 2 * label * d - 2 * (1 - label) * max(margin - d, 0)

    The squared hinge is continuously differentiable at ``d = margin``, so there is
    no kink to choose a slope for. A NaN distance gives NaN, as TensorFlow's
    ``maximum`` does: the hinge is clamped by a comparison that NaN fails. Writing
    ``(label * d) * d`` keeps a dissimilar pair's loss 0 even where ``d**2``
    overflows, as long as the compiler does not reorder the product.
    """
    margin = params[0]
    hinge = margin - distance
    if hinge < 0:
        hinge = hinge - hinge  # 0, in the arguments' type
    # d/dd label d^2 = 2 label d ; d/dd (1 - label) (margin - d)^2 = -2 (1 - label) (margin - d)
    one, two = _like(distance, 1.0), _like(distance, 2.0)  # bare literals would make float32 math float64
    dissimilar = one - label
    return (
        (label * distance) * distance + dissimilar * hinge * hinge,
        two * label * distance - two * dissimilar * hinge,
    )


# A pair's Euclidean distance is computed in float64 from its difference vector
# ``a - b``. Sums of squares inside [SAFE_MIN_SQUARED, SAFE_MAX_SQUARED] are far
# from float64's underflow and overflow, so ``sqrt`` of them is accurate and ``1/d``
# finite; outside it (only float64 inputs with differences below ~1e-146 or above
# ~1e146 get there, or identical embeddings) the distance is recomputed from the
# differences scaled by their largest magnitude.
SAFE_MIN_SQUARED = 2.0**-968
SAFE_MAX_SQUARED = 2.0**968
# The smallest normal float64: 1 / it is finite, 1 / anything smaller is not.
SMALLEST_NORMAL = 2.0**-1022


def pair_distance(squared_distance, pairs, pair):
    """The distance of ``pairs[pair]`` and how to get the unit direction from it.

    ``squared_distance`` is ``sum_k (pairs[pair, 0, k] - pairs[pair, 1, k])**2``
    summed in float64. Returns ``(d, inv_scale, inv_norm)`` such that the unit vector
    ``(a - b) / d`` is ``((a - b) * inv_scale) * inv_norm`` componentwise, with every
    factor finite whenever the inputs are. At ``d = 0`` both factors are 0, so the
    direction (and with it the gradient) is 0 there: the choice of subgradient for
    the cone ``(margin - ||a - b||)**2`` that has no derivative at ``a = b``.

    A NaN sum gives NaN for all three.
    """
    if squared_distance >= SAFE_MIN_SQUARED and squared_distance <= SAFE_MAX_SQUARED:
        distance = math.sqrt(squared_distance)
        return distance, 1.0, 1.0 / distance
    if not squared_distance >= 0:  # NaN
        return squared_distance, squared_distance, squared_distance
    largest = 0.0
    for k in range(pairs.shape[2]):
        difference = abs(float(pairs[pair, 0, k]) - float(pairs[pair, 1, k]))
        if difference > largest:
            largest = difference
    # Scaling by at least SMALLEST_NORMAL keeps 1 / scale finite; a subnormal
    # difference scaled by it is still exact and nonzero.
    scale = max(largest, SMALLEST_NORMAL)
    inv_scale = 1.0 / scale
    scaled_sum = 0.0
    for k in range(pairs.shape[2]):
        scaled = (float(pairs[pair, 0, k]) - float(pairs[pair, 1, k])) * inv_scale
        scaled_sum += scaled * scaled
    norm = math.sqrt(scaled_sum)
    if norm == 0.0:
        return 0.0, 0.0, 0.0
    return scale * norm, inv_scale, 1.0 / norm


# ---------------------------------------------------------------------------------
# Float32 exp and log1p that vectorise.
#
# numba's math.exp and math.log1p are calls into libm (llvmlite ships no vector math
# library), and a call in a loop stops LLVM from vectorising it: a float32 loss built
# on them runs several times slower than the same loss under XLA. These two are plain
# arithmetic, integer bit moves and selects, so a loop over them compiles to AVX2.
# Coefficients: minimax fits (``scripts/fit_float32_approximations.py``) rounded to
# float32; errors measured by ``scripts/measure_approximation_error.py``.

_LOG2_E = np.float32(1.4426950408889634)
# ln 2 split in two: _LN2_HI has its low 9 significand bits zero, so k * _LN2_HI is
# exact for |k| <= 512 and the reduced argument loses nothing to rounding.
_LN2_HI = np.float32(0.693145751953125)
_LN2_LO = np.float32(1.4286068203094173e-06)
_EXP_P = tuple(np.float32(c) for c in (0.5, 0.16666577, 0.041666374, 0.0083632351, 0.0013941218))
# Beyond these, exp(x) overflows float32 or falls below its smallest normal number.
_EXP_OVERFLOW = np.float32(88.72283172607422)
_EXP_UNDERFLOW = np.float32(-87.33654022216797)
_LOG1P_Q = tuple(
    np.float32(c)
    for c in (-0.49999998, 0.33333313, -0.25000756, 0.20002714, -0.16628737, 0.14172939, -0.13074086, 0.12922111, -0.08065145)
)
_SQRT_HALF_BITS = np.int32(0x3F3504F3)  # float32 bits of sqrt(1/2)
_SIGNIFICAND_MASK = np.int32(0x007FFFFF)
_EXPONENT_SHIFT = np.int32(23)
_F32_ZERO = np.float32(0.0)
_F32_ONE = np.float32(1.0)
_F32_MINUS_ONE = np.float32(-1.0)
_F32_INF = np.float32(np.inf)
_F32_NAN = np.float32(np.nan)
_K_LIMIT = np.float32(128.0)
_ROUNDING_SHIFTER = np.float32(12582912.0)


def exp_float32(x):
    """``exp(x)`` for a float32 ``x``, in float32 arithmetic without calls.

    Method: ``x = k ln2 + r`` with integer ``k = round(x / ln2)`` and ``|r| <= ln2 / 2``
    (Cody-Waite: ln 2 in two parts, so ``r`` is exact); ``exp(r) = 1 + r + r^2 P(r)``
    with ``P`` of degree 4 (minimax, truncation error below 1e-8 relative); then
    ``2^k`` is added to the result's exponent bits.

    Error, measured against float64 ``exp`` over every float32 ``x`` whose ``exp`` is a
    normal float32 (-87.3365 <= x <= 88.7228): at most 9.2e-8 relative (1.1 ulp, at
    x = 5.19896) [``scripts/measure_approximation_error.py``, all 2^32 inputs]. Below that range the result is
    flushed to 0 (an absolute error under 1.2e-38, as a flush-to-zero CPU gives);
    above it, ``inf``. ``exp(-inf) = 0``, ``exp(inf) = inf``, ``exp(nan) = nan``.
    """
    # Round to the nearest integer by adding and removing 1.5 * 2^23: no rint on every
    # target (CUDA has none), and exact as long as nothing reassociates the two.
    k = (x * _LOG2_E + _ROUNDING_SHIFTER) - _ROUNDING_SHIFTER
    # Far-out x, infinities and NaN get k = 0 so the bit arithmetic below stays in
    # range (NaN stays NaN through r); the selects at the end answer the far-out ones.
    k = k if abs(k) <= _K_LIMIT else _F32_ZERO
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = _EXP_P[0] + r * (_EXP_P[1] + r * (_EXP_P[2] + r * (_EXP_P[3] + r * _EXP_P[4])))
    p = _F32_ONE + (r + r * r * p)
    # p is in [0.70, 1.42]; adding k to its biased exponent multiplies it by 2^k.
    scaled = np.int32(np.float32(p).view(np.int32) + (np.int32(k) << _EXPONENT_SHIFT)).view(np.float32)
    if x < _EXP_UNDERFLOW:
        scaled = _F32_ZERO
    if x > _EXP_OVERFLOW:
        scaled = _F32_INF
    return scaled


def _log_float32(y, correction):
    """``log(y) + correction`` for a positive normal float32 ``y`` and a ``correction``
    below one ulp of ``y``'s logarithm (the part of a sum that ``y`` lost to rounding).

    ``y = 2^k m`` with ``m`` in ``[sqrt(1/2), sqrt(2))``, read from its bits; then
    ``log(y) = k ln2 + log1p(f)`` with ``f = m - 1`` (exact) and ``log1p(f) =
    f + f^2 Q(f)``, ``Q`` of degree 8 (minimax, truncation error below 1e-8 relative).
    """
    shifted = np.int32(np.float32(y).view(np.int32) - _SQRT_HALF_BITS)
    k = np.float32(shifted >> _EXPONENT_SHIFT)
    m = np.int32((shifted & _SIGNIFICAND_MASK) + _SQRT_HALF_BITS).view(np.float32)
    f = m - _F32_ONE
    q = _LOG1P_Q[7] + f * _LOG1P_Q[8]
    q = _LOG1P_Q[3] + f * (_LOG1P_Q[4] + f * (_LOG1P_Q[5] + f * (_LOG1P_Q[6] + f * q)))
    q = _LOG1P_Q[0] + f * (_LOG1P_Q[1] + f * (_LOG1P_Q[2] + f * q))
    return k * _LN2_HI + (f + (f * f * q + (k * _LN2_LO + correction)))


def log1p_float32(u):
    """``log(1 + u)`` for a float32 ``u``, in float32 arithmetic without calls.

    Method: ``y = 1 + u`` rounded, and ``c``, the rounding error of that sum (exact,
    Fast2Sum); then ``log(1 + u) = log(y) + c / y`` to well below an ulp, with
    ``log(y)`` from ``_log_float32``. For tiny ``u``, ``y = 1`` and the answer is
    ``c = u`` exactly.

    Error, measured against float64 ``log1p`` over every float32 ``u > -1``: at most
    8.7e-8 relative (1.0 ulp, at u = 0.399764) [``scripts/measure_approximation_error.py``].
    ``log1p(-1) = -inf``, ``log1p(inf) = inf``; ``u < -1`` and NaN give NaN.
    """
    y = u + _F32_ONE
    # Fast2Sum needs the larger operand first.
    c = (u - (y - _F32_ONE)) if abs(u) < _F32_ONE else (_F32_ONE - (y - u))
    result = _log_float32(y, c / y)
    if u == _F32_INF:
        result = _F32_INF
    if u == _F32_MINUS_ONE:
        result = -_F32_INF
    if not u >= _F32_MINUS_ONE:  # u < -1, or NaN
        result = _F32_NAN
    return result


def log1p_unit_float32(u, y, inverse):
    """``log1p_float32(u)`` for ``u`` in [0, 1] (or NaN, which gives NaN), given
    ``y = 1 + u`` rounded and ``inverse = 1 / y``, which a caller computing a
    sigmoid has anyway: no division and no special cases, so cheaper in a loop.

    The same operations as ``log1p_float32`` on that interval, except ``c * inverse``
    for ``c / y`` (a last-bit difference in a term below one ulp of the result).
    Measured the same way: at most 8.7e-8 relative over every float32 in [0, 1].
    """
    c = u - (y - _F32_ONE)
    return _log_float32(y, c * inverse)


# ---------------------------------------------------------------------------------
# Weighted sigmoid cross-entropy


def _like(x, value):
    """``value`` in ``x``'s float type. numba types a bare literal as float64, and one
    float64 operand would turn the whole float32 computation into float64."""
    if isinstance(x, np.float32):
        return np.float32(value)
    return value


def _exp(x):
    # The float64 kernel keeps libm: its exp/log1p are exact to the last bit or so, and
    # float64 users ask for accuracy before speed.
    if isinstance(x, np.float32):
        return exp_float32(x)
    return math.exp(x)


def _log1p_unit(u, y, inverse):
    """log(1 + u) for u in [0, 1] or NaN, given y = 1 + u and inverse = 1 / y."""
    if isinstance(u, np.float32):
        return log1p_unit_float32(u, y, inverse)
    return math.log1p(u)


def _class_weight(weights, column):
    """``weights`` itself when it is a number, else its entry for ``column``. The
    compiled targets choose by type (``cpu.py``, ``cuda.py``); this is the Python one."""
    return weights[column] if np.ndim(weights) else weights


def weighted_sigmoid_cross_entropy(label, logit, column, params):
    """``tf.nn.weighted_cross_entropy_with_logits`` of one element, and its derivative.

    Formula, with ``params = (pos_weight, s)``: ``q = pos_weight >= 0`` (or
    ``pos_weight[column]``, one weight per class), ``s`` the label smoothing,
    ``z = label (1 - s) + s / 2``, ``x = logit`` and ``l = 1 + (q - 1) z``::

        loss(x)  = (1 - z) x + l (log(1 + exp(-|x|)) + max(-x, 0))      (TensorFlow's)
                 = l log(1 + exp(-|x|)) + (1 - z) max(x, 0) + q z max(-x, 0)
        dloss/dx = (1 - z) - l sigmoid(-x)
                 = (1 - z) sigmoid(x) - q z sigmoid(-x)

    The second forms are the ones computed: ``exp`` only of ``-|x|`` (nothing
    overflows, |x| = 1e4 included), and no cancellation between large terms
    (TensorFlow's first form adds ``-|x|`` to ``|x| + tiny`` when a negative is
    confidently right). The derivative is smooth at ``x = 0``: ``(1 - z) - l / 2``.
    Non-finite logits give what TensorFlow's formula gives, for labels in [0, 1].
    """
    pos_weight = _class_weight(params[0], column)
    smoothing = params[1]
    one = _like(logit, 1.0)
    zero = _like(logit, 0.0)
    z = label * (one - smoothing) + _like(logit, 0.5) * smoothing
    negative = one - z  # 1 - z
    positive = pos_weight * z  # q z
    e = _exp(-abs(logit))  # exp(-|x|), in [0, 1]
    one_plus_e = one + e
    inverse = one / one_plus_e
    log_term = _log1p_unit(e, one_plus_e, inverse)  # log(1 + exp(-|x|))
    relu_of_negated = max(-logit, zero)  # max(-x, 0)
    # x + max(-x, 0) is max(x, 0) exactly for finite x, and NaN at x = -inf, where
    # TensorFlow's (1 - z)(-inf) + l inf is NaN too; +inf and NaN follow by themselves.
    relu = logit + relu_of_negated
    value = (positive + negative) * log_term + negative * relu + positive * relu_of_negated
    # sigmoid(x) and sigmoid(-x) from e = exp(-|x|), with the one division above.
    e_inverse = e * inverse
    sigmoid = inverse if logit >= zero else e_inverse
    sigmoid_of_negated = e_inverse if logit >= zero else inverse
    # d/dx [l log1p(exp(-|x|)) + (1 - z) max(x, 0) + q z max(-x, 0)]
    #   = (1 - z) sigmoid(x) - q z sigmoid(-x)
    slope = negative * sigmoid - positive * sigmoid_of_negated
    return value, slope
