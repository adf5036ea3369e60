"""Below the dispatch thresholds ``fusedloss`` runs TensorFlow ops; is it as fast as native
``tf.function``? The suite times each provider in its own block of rounds, so sub-ms rows
move with the machine's load; here the two alternate call by call (many rounds, medians).

``PYTHONPATH=. python scripts/compare_small_sizes.py [--rounds 400]``"""

import argparse
import time

import numpy as np

from benchmarks import use_cpu_only

use_cpu_only()

from benchmarks import providers  # noqa: E402
from benchmarks.specs import LOSSES_BY_NAME  # noqa: E402

# The rows the full run of 2026-11-23 flagged (fusedloss on TF ops, > 10 % slower).
CASES = [
    ("huber", 10_000, "fwd+bwd"), ("huber", 30_000, "fwd"), ("weighted_sigmoid_cross_entropy", 1_000, "fwd"),
    ("contrastive", 10_000, "fwd"), ("embedding_contrastive", 1_000, "fwd"), ("embedding_contrastive", 3_000, "fwd"),
    ("embedding_contrastive", 10_000, "fwd"), ("embedding_contrastive", 100_000, "fwd"),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=400)
    rounds = parser.parse_args().rounds
    print("| loss | size | mode | fusedloss path | fusedloss | tf.function | tf.function / fusedloss |")
    print("|---|---:|---|---|---:|---:|---:|")
    for name, size, mode in CASES:
        spec = LOSSES_BY_NAME[name]
        y_true, y_pred, params = spec.make_inputs(np.random.default_rng(0), spec.shape_for(size), np.dtype("float32"))
        calls = {p: providers.prepare(p, spec, mode, "mean", y_true, y_pred, params) for p in ("fusedloss", "tf-function")}
        times = {p: [] for p in calls}
        for prepared in calls.values():
            prepared.call(), prepared.call()
        for _ in range(rounds):
            for provider, prepared in calls.items():
                start = time.perf_counter()
                prepared.call()
                times[provider].append(time.perf_counter() - start)
        fused, native = (np.median(times[p]) for p in ("fusedloss", "tf-function"))
        print(f"| {name} | {size:.0e} | {mode} | {calls['fusedloss'].path} | {fused * 1e6:.0f} us | {native * 1e6:.0f} us | {native / fused:.2f}x |")


if __name__ == "__main__":
    main()
