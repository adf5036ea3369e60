"""What numba's threading layer costs per call: the Huber kernel alone and through the
TF bridge (forward+backward of the mean, inside ``tf.function``), timed in one child
process per layer, because numba picks its layer once per process.

fusedloss asks for OpenMP first (``fusedloss/kernels/cpu.py``); ``NUMBA_THREADING_LAYER``
overrides it. A layer that is not installed (TBB is optional) is reported as such.

``python -m benchmarks.threading_layers [--sizes 1e4,1e5,1e6] [--repeats 200]`` prints
the table; the main job (``python -m benchmarks``) runs it after the suite and writes
``<mode>-threading.md`` beside the other results.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

LAYERS = ("omp", "tbb", "workqueue")
ROW_LENGTH = 1000

CHILD = r"""
import json, sys, timeit
import numpy as np
import numba
import tensorflow as tf
import fusedloss
from fusedloss.kernels import cpu

sizes, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
fusedloss.set_min_fused_size(0)
# Inputs below cpu.PARALLEL_FROM run without threads: one parallel call starts the layer.
cpu.huber(*np.zeros((2, 1, cpu.PARALLEL_FROM), np.float32))


@tf.function
def bridge(y_true, y_pred):
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = tf.reduce_mean(fusedloss.huber(y_true, y_pred))
    return loss, tape.gradient(loss, y_pred)


def median_seconds(call):
    call()
    call()
    return float(np.median(timeit.repeat(call, number=1, repeat=repeats)))


rows = []
for size in sizes:
    shape = (max(1, size // ROW_LENGTH), min(size, ROW_LENGTH))
    rng = np.random.default_rng(0)
    y_true = rng.standard_normal(shape).astype(np.float32)
    y_pred = (y_true + 1.5 * rng.standard_normal(shape)).astype(np.float32)
    loss_out, grad_out = cpu.huber(y_true, y_pred)
    kernel = median_seconds(lambda: cpu.huber(y_true, y_pred, loss_out=loss_out, grad_out=grad_out))
    tensors = (tf.constant(y_true), tf.constant(y_pred))
    through_bridge = median_seconds(lambda: bridge(*tensors))
    rows.append({"size": size, "kernel_s": kernel, "bridge_s": through_bridge})
print(json.dumps({"layer": numba.threading_layer(), "threads": numba.get_num_threads(), "rows": rows}))
""".replace("ROW_LENGTH", str(ROW_LENGTH))


def measure(layer, sizes, repeats):
    """``{"layer", "threads", "rows": [{"size", "kernel_s", "bridge_s"}]}`` measured in a
    child process asking numba for ``layer``, or ``{"layer": layer, "error": text}``."""
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    repository = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repository, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(list(sizes)), str(repeats)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        reason = next((line for line in reversed(lines) if "Error" in line), lines[-1])
        return {"layer": layer, "error": reason}
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(measurements):
    """The table: per size, each layer's kernel and bridge time, and OpenMP's gain."""
    lines = [
        "| layer | threads | size | kernel alone | through the bridge |",
        "|---|---:|---:|---:|---:|",
    ]
    for measured in measurements:
        if "error" in measured:
            lines.append(f"| {measured['layer']} | | | not available: {measured['error'][:80]} | |")
            continue
        for row in measured["rows"]:
            lines.append(
                f"| {measured['layer']} | {measured['threads']} | {row['size']:.0e} | "
                f"{row['kernel_s'] * 1e6:.1f} µs | {row['bridge_s'] * 1e6:.1f} µs |"
            )
    return "\n".join(lines) + "\n"


def run(sizes, repeats, layers=LAYERS):
    return [measure(layer, sizes, repeats) for layer in layers]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threading_layers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1e4,1e5,1e6", help="comma-separated element counts")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per case (the median is reported)")
    arguments = parser.parse_args(argv)
    sizes = [int(float(size)) for size in arguments.sizes.split(",")]
    print(markdown(run(sizes, arguments.repeats)), end="")


if __name__ == "__main__":
    main()
