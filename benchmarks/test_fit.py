"""The model.fit workloads of ``benchmarks/fit.py``: each interleaves epochs of the fused
loss and its reference on the same model, data and starting weights.

The measurement is taken by ``fit.measure`` (per-round ratios need the two sides
interleaved, which one pytest-benchmark callable cannot do); pytest-benchmark times the
whole measurement once, and the result goes into ``extra_info`` (``kind: "fit"``), so
it lands in the same JSON as the loss cases. The check: both sides took the same steps
from the same weights, so their last losses agree (a wrong gradient would part them).
"""

import math

from . import fit


def test_fit(benchmark, fit_workload, run_mode, environment):
    results = {}

    def run():
        results.update(fit.measure(fit_workload, run_mode.fit))

    benchmark.group = f"fit {fit_workload.key}"
    benchmark.pedantic(run, rounds=1, iterations=1)
    fused, reference = results["fused_last_loss"], results["reference_last_loss"]
    assert math.isfinite(fused) and math.isfinite(reference), results
    assert math.isclose(fused, reference, rel_tol=1e-3, abs_tol=1e-6), (
        f"{fit_workload.key}: last loss {fused!r} (fused) vs {reference!r} (reference) after the same steps"
    )
    benchmark.extra_info.update(
        kind="fit", device=environment["device"], versions=environment["versions"], malloc=environment["malloc"], **results
    )
