"""Each loss's scalar math, written once.

Every function here takes one element (a label, a prediction, the column index and
the loss's parameters) and returns ``(value, slope)``: the element's loss and its
derivative with respect to the prediction. They are plain Python so that
``cpu.py`` compiles them with ``numba.njit`` and ``cuda.py`` with
``numba.cuda.jit(device=True)``; nothing else may live in this module.

``params`` is a tuple whose layout belongs to each loss (see the launchers).
"""


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
