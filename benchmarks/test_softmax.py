"""The softmax cross-entropy family (``benchmarks/softmax.py``): every provider, forward
and forward+backward, at the run mode's shapes; then peak memory, one child process
per provider.

Each timed case first checks the mean loss and the gradient of the mean against the
float64 reference (an ``AssertionError`` fails the case and the run), then times it;
``extra_info`` (``kind: "softmax"``) says what ran and how it compares to the floor.
"""

import functools
import time

import numpy as np

from . import providers, softmax
from .specs import Tolerance

# float32 sums over a row, TensorFlow's and the kernel's. Beyond 32768 classes XLA's
# row sums drift further: at 256 x 131072 its gradient (Keras's and tf.nn's alike) was
# 2.4e-5 relative off float64 in one value of 33.5 million (measured; the kernel's
# stays within 2e-5).
TOLERANCE = Tolerance(rtol=2e-5, atol=2e-6)
LONG_ROW_TOLERANCE = Tolerance(rtol=1e-4, atol=2e-6)
LONG_ROW = 32768


def tolerance_for(shape):
    return TOLERANCE if shape[-1] <= LONG_ROW else LONG_ROW_TOLERANCE


@functools.lru_cache(maxsize=1)
def _inputs_and_reference(loss_name, label):
    # One shape's inputs serve all its cases, which run one after the other.
    loss = softmax.SOFTMAX_LOSSES_BY_NAME[loss_name]
    targets, logits = softmax.make_inputs(loss, softmax.shape_of(label))
    values, grad = softmax.reference(loss, targets, logits)
    return targets, logits, float(np.mean(values)), grad


def _rounds(seconds_per_call, run):
    wanted = run.seconds_per_case / max(seconds_per_call, 1e-9)
    return int(min(max(wanted, run.min_rounds), run.max_rounds))


def test_softmax(benchmark, softmax_case, run_mode, bandwidth, environment):
    case = softmax_case
    run = softmax.SOFTMAX_RUNS[run_mode.name]
    targets, logits, reference_loss, reference_grad = _inputs_and_reference(case.loss.name, case.label)
    prepared = softmax.prepare(case, targets, logits)
    if not case.provider.endswith("-eager"):
        prepared.call()  # traces, compiles or warms up
    start = time.perf_counter()
    outputs = prepared.call()
    seconds_per_call = time.perf_counter() - start
    loss, grad = prepared.results(outputs)
    del outputs
    tolerance = tolerance_for(case.shape)
    providers.assert_close(f"{case.id}: mean loss", np.array([loss]), np.array([reference_loss]), tolerance)
    if grad is not None:
        providers.assert_close(f"{case.id}: gradient", grad, reference_grad, tolerance)

    bytes_moved = softmax.bytes_moved(case.mode, targets, logits)
    bytes_per_second, bandwidth_how = bandwidth
    floor_s = bytes_moved / bytes_per_second
    benchmark.group = f"softmax {case.loss.name} {case.label} {case.mode}"
    benchmark.extra_info.update(
        kind="softmax", op=case.loss.name, provider=case.provider, mode=case.mode, label=case.label,
        shape=list(case.shape), size=int(logits.size), dtype="float32", path=prepared.path,
        device=environment["device"], versions=environment["versions"], malloc=environment["malloc"],
        bytes=int(bytes_moved), bandwidth_gbps=bytes_per_second / 1e9, bandwidth_how=bandwidth_how, floor_s=floor_s,
    )
    benchmark.pedantic(prepared.call, rounds=_rounds(seconds_per_call, run), iterations=1)
    stats = benchmark.stats.stats
    benchmark.extra_info.update(
        median_s=stats.median, iqr_s=stats.iqr, spread=stats.iqr / stats.median if stats.median else 0.0,
        rounds=stats.rounds, gbps=bytes_moved / stats.median / 1e9, x_floor=stats.median / floor_s,
    )


# The memory children, started together by the first memory case (each takes tens of
# seconds, mostly imports and compiles: one after the other they would cost minutes).
_CHILDREN = {}
CHILDREN_AT_ONCE = 4


def test_softmax_peak_memory(benchmark, softmax_memory, softmax_memory_all, run_mode, environment):
    loss_name, label, provider = softmax_memory
    run = softmax.SOFTMAX_RUNS[run_mode.name]
    if softmax_memory not in _CHILDREN:  # the next few, this one first (each needs ~1.5 GB)
        first = softmax_memory_all.index(softmax_memory)
        for key in softmax_memory_all[first : first + CHILDREN_AT_ONCE]:
            _CHILDREN[key] = softmax.start_peak_memory(*key, run.memory_calls)
    measured = {}
    benchmark.group = f"softmax memory {loss_name} {label}"
    benchmark.pedantic(
        lambda: measured.update(softmax.finish_peak_memory(_CHILDREN[softmax_memory])), rounds=1, iterations=1
    )
    assert "error" not in measured, f"{provider} {label}: {measured['error']}"
    benchmark.extra_info.update(
        kind="softmax-memory", op=loss_name, label=label, provider=provider, shape=list(softmax.shape_of(label)),
        device=environment["device"], **measured,
    )
