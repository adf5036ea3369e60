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
    # d/de 0.5 e^2 = e ; d/de (delta |e| - delta^2 / 2) = delta sign(e)
    if abs_error <= delta:
        return 0.5 * error * error, error
    return delta * abs_error - 0.5 * delta * delta, delta * error / abs_error


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
    dissimilar = 1 - label
    return (
        (label * distance) * distance + dissimilar * hinge * hinge,
        2 * label * distance - 2 * dissimilar * hinge,
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
