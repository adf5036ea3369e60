"""Measure the float32 approximations of ``fusedloss.kernels.math`` (exp, log1p) and
``fusedloss.kernels.primitives`` (log, expm1, and the functions built on them: tanh,
sigmoid, softplus, log_sigmoid, log_cosh) against float64 libm, over every float32
(all 2^32 bit patterns), as compiled in the CPU kernels (``cpu.py``'s registration and
fastmath flags).

Reported: the largest relative error ``|approx - exact| / |exact|`` over the domain
where the exact result is a normal float32, the input where it occurs, that error in
float32 ulps of the exact result, and the number of inputs outside that domain whose
result is not the one documented (0, +-inf or NaN): it must be 0.

    PYTHONPATH=. python scripts/measure_approximation_error.py            # every float32, ~1-3 min
    PYTHONPATH=. python scripts/measure_approximation_error.py --sample 100000000
"""

import argparse
import math
import time

import numpy as np
from numba import njit, prange

from fusedloss.kernels import cpu, primitives
from fusedloss.kernels import math as scalar_math

exp_float32 = scalar_math.exp_float32
log1p_float32 = scalar_math.log1p_float32
log1p_unit_float32 = scalar_math.log1p_unit_float32
SMALLEST_NORMAL = 2.0**-126
LARGEST = float(np.finfo(np.float32).max)
BLOCKS = 512


@njit(parallel=True, fastmath=cpu.FASTMATH, error_model="numpy")
def worst_exp(inputs):
    """Per block: (largest relative error, its input, count of wrong out-of-domain results)."""
    worst = np.zeros(BLOCKS)
    where = np.zeros(BLOCKS, np.float32)
    wrong = np.zeros(BLOCKS, np.int64)
    per_block = (inputs.size + BLOCKS - 1) // BLOCKS
    for block in prange(BLOCKS):
        for i in range(block * per_block, min((block + 1) * per_block, inputs.size)):
            x = inputs[i]
            got = exp_float32(x)
            exact = math.exp(np.float64(x))
            if SMALLEST_NORMAL <= exact <= LARGEST:
                error = abs(got - exact) / exact
                if error > worst[block]:
                    worst[block] = error
                    where[block] = x
            elif x != x:
                wrong[block] += not (got != got)
            elif exact > LARGEST:
                wrong[block] += got != math.inf
            else:  # below the smallest normal: flushed to zero
                wrong[block] += got != 0.0
    return worst, where, wrong


@njit(parallel=True, fastmath=cpu.FASTMATH, error_model="numpy")
def worst_log1p(inputs):
    """Per block: (largest relative error, its input, count of wrong out-of-domain results)."""
    worst = np.zeros(BLOCKS)
    where = np.zeros(BLOCKS, np.float32)
    wrong = np.zeros(BLOCKS, np.int64)
    per_block = (inputs.size + BLOCKS - 1) // BLOCKS
    for block in prange(BLOCKS):
        for i in range(block * per_block, min((block + 1) * per_block, inputs.size)):
            u = inputs[i]
            got = log1p_float32(u)
            if u != u or u < -1.0:
                wrong[block] += not (got != got)
            elif u == -1.0:
                wrong[block] += got != -math.inf
            elif u == math.inf:
                wrong[block] += got != math.inf
            else:
                exact = math.log1p(np.float64(u))
                if exact == 0.0:
                    wrong[block] += got != 0.0
                elif abs(exact) >= SMALLEST_NORMAL:
                    error = abs(got - exact) / abs(exact)
                    if error > worst[block]:
                        worst[block] = error
                        where[block] = u
    return worst, where, wrong


@njit(parallel=True, fastmath=cpu.FASTMATH, error_model="numpy")
def worst_log1p_unit(inputs):
    """``log1p_unit_float32`` as the loss calls it, on inputs in [0, 1] (others skipped)."""
    worst = np.zeros(BLOCKS)
    where = np.zeros(BLOCKS, np.float32)
    wrong = np.zeros(BLOCKS, np.int64)
    one = np.float32(1.0)
    per_block = (inputs.size + BLOCKS - 1) // BLOCKS
    for block in prange(BLOCKS):
        for i in range(block * per_block, min((block + 1) * per_block, inputs.size)):
            u = inputs[i]
            if not (0.0 <= u <= 1.0):
                continue
            y = one + u
            got = log1p_unit_float32(u, y, one / y)
            exact = math.log1p(np.float64(u))
            if exact == 0.0:
                wrong[block] += got != 0.0
            elif exact >= SMALLEST_NORMAL:
                error = abs(got - exact) / exact
                if error > worst[block]:
                    worst[block] = error
                    where[block] = u
    return worst, where, wrong


@njit(fastmath={"contract"}, error_model="numpy")
def _sigmoid64(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@njit(fastmath={"contract"}, error_model="numpy")
def _softplus64(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(fastmath={"contract"}, error_model="numpy")
def _log_sigmoid64(x):
    return -_softplus64(-x)


@njit(fastmath={"contract"}, error_model="numpy")
def _log_cosh64(x):
    # Accurate everywhere: its series near 0, log(cosh) in between, the stable form beyond.
    a = abs(x)
    if a < 1e-3:
        return a * a * (0.5 - a * a / 12.0)
    if a < 20.0:
        return math.log(math.cosh(a))
    return a + math.log1p(math.exp(-2.0 * a)) - math.log(2.0)


@njit(fastmath={"contract"}, error_model="numpy")
def _log64(x):
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


@njit(fastmath={"contract"}, error_model="numpy")
def _expm1_64(x):
    return math.expm1(x)


@njit(fastmath={"contract"}, error_model="numpy")
def _tanh64(x):
    return math.tanh(x)


@njit(parallel=True, fastmath=cpu.FASTMATH, error_model="numpy")
def worst_of(approximation, exact_function, inputs):
    """Per block, for ``approximation`` (float32) against ``exact_function`` (float64):
    (largest relative error where the exact result is a normal float32, its input,
    largest absolute error, count of special results that differ: NaN, +-inf, and
    results that are 0 or beyond float32's range)."""
    worst = np.zeros(BLOCKS)
    where = np.zeros(BLOCKS, np.float32)
    worst_absolute = np.zeros(BLOCKS)
    wrong = np.zeros(BLOCKS, np.int64)
    per_block = (inputs.size + BLOCKS - 1) // BLOCKS
    for block in prange(BLOCKS):
        for i in range(block * per_block, min((block + 1) * per_block, inputs.size)):
            x = inputs[i]
            got = np.float64(approximation(x))
            exact = exact_function(np.float64(x))
            if exact != exact:
                wrong[block] += not (got != got)
            elif abs(exact) > LARGEST:
                wrong[block] += got != exact and not (abs(got) > LARGEST and (got > 0) == (exact > 0))
            elif abs(exact) >= SMALLEST_NORMAL:
                error = abs(got - exact) / abs(exact)
                if not error <= worst[block]:  # NaN counts as the worst
                    worst[block] = error
                    where[block] = x
                if abs(got - exact) > worst_absolute[block]:
                    worst_absolute[block] = abs(got - exact)
            else:
                # An exact result of 0 or below the normal range: within the smallest normal.
                wrong[block] += not abs(got - exact) <= SMALLEST_NORMAL
    return worst, where, worst_absolute, wrong


def _compiled(function):
    # As the kernels compile them (cpu.py): "contract" only.
    return njit(fastmath={"contract"}, error_model="numpy")(function)


PRIMITIVES = (
    ("log_float32", _compiled(primitives.log_float32), _log64),
    ("expm1_float32", _compiled(primitives.expm1_float32), _expm1_64),
    ("tanh (float32)", _compiled(primitives._tanh), _tanh64),
    ("sigmoid (float32)", _compiled(primitives._sigmoid), _sigmoid64),
    ("softplus (float32)", _compiled(primitives._softplus), _softplus64),
    ("log_sigmoid (float32)", _compiled(primitives._log_sigmoid), _log_sigmoid64),
    ("log_cosh (float32)", _compiled(primitives._log_cosh), _log_cosh64),
)


def measure_primitive(name, approximation, exact_function, chunks):
    started = time.perf_counter()
    worst, where, worst_absolute, wrong, count = 0.0, None, 0.0, 0, 0
    for bits in chunks:
        block_worst, block_where, block_absolute, block_wrong = worst_of(approximation, exact_function, bits.view(np.float32))
        count += bits.size
        wrong += int(block_wrong.sum())
        worst_absolute = max(worst_absolute, float(block_absolute.max()))
        best = int(np.argmax(block_worst))
        if block_worst[best] > worst:
            worst, where = float(block_worst[best]), block_where[best]
    exact = exact_function(np.float64(where)) if where is not None else 0.0
    print(
        f"{name}: max relative error {worst:.3e} ({ulps(worst, exact):.2f} ulp) at x = {where!r}, max absolute "
        f"error {worst_absolute:.3e}; {wrong} wrong special results; {count} inputs, {time.perf_counter() - started:.0f} s"
    )
    return worst, wrong


def ulps(error, exact):
    """A relative error in float32 ulps of the exact result."""
    exact = abs(float(exact))
    return error * exact / float(np.spacing(np.float32(exact)))


def measure(name, worst_fn, exact_fn, chunks):
    started = time.perf_counter()
    worst, where, wrong, count = 0.0, None, 0, 0
    for bits in chunks:
        block_worst, block_where, block_wrong = worst_fn(bits.view(np.float32))
        count += bits.size
        wrong += int(block_wrong.sum())
        best = int(np.argmax(block_worst))
        if block_worst[best] > worst:
            worst, where = float(block_worst[best]), block_where[best]
    exact = exact_fn(np.float64(where))
    print(
        f"{name}: max relative error {worst:.3e} ({ulps(worst, exact):.2f} ulp) at x = {where!r}; "
        f"{wrong} wrong results outside the normal range; {count} inputs, {time.perf_counter() - started:.0f} s"
    )
    return worst, wrong


def every_float32(chunk=1 << 26):
    for first in range(0, 1 << 32, chunk):
        yield np.arange(first, first + chunk, dtype=np.uint64).astype(np.uint32)


def sample(n, seed=0, chunk=1 << 26):
    rng = np.random.default_rng(seed)
    for first in range(0, n, chunk):
        yield rng.integers(0, 1 << 32, size=min(chunk, n - first), dtype=np.uint32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=int, default=0, help="random bit patterns instead of all 2^32")
    parser.add_argument("--only", default="", help="only the primitives whose name contains this")
    parser.add_argument("--primitives-only", action="store_true", help="skip exp and log1p")
    args = parser.parse_args()
    chunks = (lambda: sample(args.sample)) if args.sample else every_float32
    if not args.primitives_only:
        measure("exp_float32", worst_exp, math.exp, chunks())
        measure("log1p_float32", worst_log1p, math.log1p, chunks())
        measure("log1p_unit_float32 on [0, 1]", worst_log1p_unit, math.log1p, chunks())
    for name, approximation, exact_function in PRIMITIVES:
        if args.only and args.only not in name:
            continue
        measure_primitive(name, approximation, exact_function, chunks())


if __name__ == "__main__":
    main()
