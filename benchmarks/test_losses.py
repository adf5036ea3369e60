"""Every loss of ``specs.LOSSES`` by every provider, forward and forward+backward.

Each case first checks the provider's loss and gradient against the float64 reference
(an ``AssertionError`` fails the case and the run), then times it. The result's
``extra_info`` is self-contained: what ran, where, and how it compares to the memory
floor (the bytes that must move, each input read once and each output written once,
over the bandwidth measured in this run).
"""

import functools
import time

import numpy as np

from . import providers
from .specs import LOSSES_BY_NAME, reference_for, tolerance

DTYPE = "float32"


@functools.lru_cache(maxsize=1)
def _inputs_and_reference(loss_name, shape):
    # One shape's inputs serve all its cases, which run one after the other; the cache
    # keeps only the current one (1e7 elements and their float64 reference are ~250 MB).
    spec = LOSSES_BY_NAME[loss_name]
    rng = np.random.default_rng(20261123)
    y_true, y_pred, params = spec.make_inputs(rng, shape, np.dtype(DTYPE))
    loss, grad = reference_for(spec)(y_true, y_pred, *params)
    return y_true, y_pred, params, np.asarray(loss, np.float64), np.asarray(grad, np.float64)


def _expected(case, loss, grad):
    if case.mode == "fwd":
        return loss, None
    if case.reduction == "mean":
        return loss, grad / max(loss.size, 1)
    return loss, grad


def _bytes_moved(case, y_true, y_pred, params, loss):
    itemsize = y_pred.dtype.itemsize
    read = y_true.nbytes + y_pred.nbytes + sum(p.nbytes for p in params if isinstance(p, np.ndarray))
    written = loss.size * itemsize + (y_pred.nbytes if case.mode == "fwd+bwd" else 0)
    return read + written


def _rounds(seconds_per_call, run_mode):
    wanted = run_mode.seconds_per_case / max(seconds_per_call, 1e-9)
    return int(min(max(wanted, run_mode.min_rounds), run_mode.max_rounds))


def test_loss(benchmark, case, run_mode, bandwidth, environment):
    spec = case.spec
    y_true, y_pred, params, reference_loss, reference_grad = _inputs_and_reference(spec.name, case.shape)
    prepared = providers.prepare(case.provider, spec, case.mode, case.reduction, y_true, y_pred, params)

    # Correct first, then timed. The first call traces, compiles or warms up; eager
    # TensorFlow has nothing to trace, and at 1e7 elements its calls are the slowest.
    if case.provider != "tf-eager":
        prepared.call()
    start = time.perf_counter()
    outputs = prepared.call()
    seconds_per_call = time.perf_counter() - start
    loss, grad = prepared.results(outputs)
    del outputs
    expected_loss, expected_grad = _expected(case, reference_loss, reference_grad)
    tol = tolerance(spec, DTYPE)
    providers.assert_close(f"{case.id}: loss", loss, expected_loss, tol)
    if expected_grad is not None:
        providers.assert_close(f"{case.id}: gradient", grad, expected_grad, tol)

    bytes_moved = _bytes_moved(case, y_true, y_pred, params, reference_loss)
    bytes_per_second, bandwidth_how = bandwidth
    floor_s = bytes_moved / bytes_per_second
    benchmark.group = f"{spec.name} {case.label} {case.mode}"
    benchmark.extra_info.update(
        op=spec.name,
        provider=case.provider,
        mode=case.mode,
        reduction=case.reduction,
        kind=case.kind,
        label=case.label,
        size=int(y_pred.size),
        shape=list(case.shape),
        dtype=DTYPE,
        path=prepared.path,
        device=environment["device"],
        versions=environment["versions"],
        malloc=environment["malloc"],
        bytes=int(bytes_moved),
        bandwidth_gbps=bytes_per_second / 1e9,
        bandwidth_how=bandwidth_how,
        floor_s=floor_s,
    )
    benchmark.pedantic(prepared.call, rounds=_rounds(seconds_per_call, run_mode), iterations=1)

    stats = benchmark.stats.stats
    benchmark.extra_info.update(
        median_s=stats.median,
        iqr_s=stats.iqr,
        spread=stats.iqr / stats.median if stats.median else 0.0,
        rounds=stats.rounds,
        gbps=bytes_moved / stats.median / 1e9,
        x_floor=stats.median / floor_s,
    )
