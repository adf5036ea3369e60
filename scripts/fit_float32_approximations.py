"""Fit the polynomial coefficients of ``fusedloss.kernels.math``'s float32 exp and
log1p (Remez exchange in float64, which has ~8 digits to spare for float32 targets).

    exp:   exp(r)    = 1 + r + r^2 P(r),  |r| <= ln2 / 2,            P of degree 4
    log1p: log1p(f)  = f + f^2 Q(f),      sqrt(1/2) - 1 <= f < sqrt(2) - 1, Q of degree 8

``P`` and ``Q`` minimise the largest absolute error on a range 0.1 % wider than the
reduced argument's, since float32 range reduction can land just outside it. The
errors printed are of ``P``/``Q`` themselves; in ``exp``/``log1p`` they are scaled by
``r^2 <= 0.12`` and ``|f| <= 0.42``. Coefficients are printed to 8 significant digits,
as used in ``math.py`` (rounded to float32 there).

    python scripts/fit_float32_approximations.py
"""

import numpy as np


def remez(target, low, high, degree, iterations=40, grid=200_001):
    """Coefficients (lowest first) of the degree-``degree`` polynomial closest to
    ``target`` on [low, high] in the maximum norm, and that maximum error."""
    n_nodes = degree + 2
    nodes = 0.5 * (low + high) - 0.5 * (high - low) * np.cos(np.pi * np.arange(n_nodes) / (n_nodes - 1))
    xs = np.linspace(low, high, grid)
    signs = (-1.0) ** np.arange(n_nodes)
    for _ in range(iterations):
        system = np.column_stack([np.vander(nodes, degree + 1, increasing=True), signs])
        solution = np.linalg.solve(system, target(nodes))
        coefficients = solution[:-1]
        error = np.polynomial.polynomial.polyval(xs, coefficients) - target(xs)
        # One extremum per run of equal sign; keep n_nodes of them, dropping the
        # smaller end while there are too many.
        runs = np.split(np.arange(grid), np.flatnonzero(np.diff(np.sign(error)) != 0) + 1)
        extrema = [run[np.argmax(np.abs(error[run]))] for run in runs]
        while len(extrema) > n_nodes:
            extrema = extrema[1:] if abs(error[extrema[0]]) < abs(error[extrema[-1]]) else extrema[:-1]
        if len(extrema) < n_nodes:
            break
        nodes = xs[extrema]
    return coefficients, float(np.max(np.abs(error)))


def exp_tail(r):
    """(exp(r) - 1 - r) / r^2, with its series near 0 where the quotient cancels."""
    r = np.asarray(r, np.float64)
    safe = np.where(r == 0.0, 1.0, r)
    series = 0.5 + r / 6 + r**2 / 24 + r**3 / 120
    return np.where(np.abs(r) < 1e-3, series, (np.expm1(safe) - safe) / safe**2)


def log1p_tail(f):
    """(log1p(f) - f) / f^2, with its series near 0 where the quotient cancels."""
    f = np.asarray(f, np.float64)
    safe = np.where(f == 0.0, 1.0, f)
    series = -0.5 + f / 3 - f**2 / 4 + f**3 / 5
    return np.where(np.abs(f) < 1e-3, series, (np.log1p(safe) - safe) / safe**2)


def main():
    widen = 1.001
    half_ln2 = 0.5 * np.log(2.0)
    p, p_error = remez(exp_tail, -half_ln2 * widen, half_ln2 * widen, 4)
    q, q_error = remez(log1p_tail, (np.sqrt(0.5) - 1) * widen, (np.sqrt(2.0) - 1) * widen, 8)
    print(f"exp P (error {p_error:.2e}):", ", ".join(f"{c:.8g}" for c in p))
    print(f"log1p Q (error {q_error:.2e}):", ", ".join(f"{c:.8g}" for c in q))


if __name__ == "__main__":
    main()
