"""What writing a loss once costs: defining it, compiling or loading its kernel, and
the generated kernel's speed against a hand-written one.

- **define**: ``fl.elementwise_loss`` on a fresh formula (trace, derivative, source,
  Keras class), median over several formulas; numba compiles later, on first use.
- **first call, cold / cached**: the first kernel call of a fresh process, with an
  empty kernel cache and then with the cache the first process left (numba's
  ``cache=True`` on the generated module), one child process each.
- **generated vs hand-written Huber**: ``fusedloss.Huber``'s generated CPU kernel
  against the hand-written element of ``kernels/math.py`` compiled into the same row
  kernel, fwd+bwd (loss and gradient of the mean) at 1e7 float32, interleaved rounds:
  the median ratio and its spread (min-max of per-round ratios). Target <= 1.1x.

``python -m benchmarks.definitions [--rounds 15]`` prints the table; the main job runs it
after the suite and writes ``<mode>-definitions.md``.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import time
import numpy as np
import fusedloss as fl
from fusedloss.kernels import cpu

@fl.elementwise_loss
def FirstCall(y_true, y_pred, delta=1.0):
    error = y_pred - y_true
    return delta**2 * (fl.math.sqrt(1.0 + (error / delta) ** 2) - 1.0)

x = np.linspace(-3, 3, 4000, dtype=np.float32).reshape(4, 1000)
started = time.perf_counter()
cpu.first_call(x, x * 0.5, 1.0)
print(time.perf_counter() - started)
"""


def _first_call_seconds(cache_folder):
    environment = {**os.environ, "FUSEDLOSS_CACHE_DIR": cache_folder, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=environment, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"first-call child failed:\n{run.stderr[-2000:]}")
    return float(run.stdout.split()[-1])


def define_seconds(count=5):
    import fusedloss as fl

    times = []
    for index in range(count):
        def formula(y_true, y_pred, delta=1.0, scale=float(index + 1)):
            error = y_pred - y_true
            return scale * fl.math.where(fl.math.abs(error) <= delta, 0.5 * error * error, delta * fl.math.log_cosh(error))

        formula.__name__ = formula.__qualname__ = f"DefinitionCost{index}"
        started = time.perf_counter()
        fl.elementwise_loss(formula)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def generated_against_handwritten(rounds, shape=(10_000, 1000)):
    """Median and (min, max) of per-round time ratios generated / hand-written, and the
    median times, of fwd+bwd Huber kernels on ``shape`` float32."""
    import numpy as np

    import fusedloss  # noqa: F401 - registers the built-in definitions
    from fusedloss.buffers import pool
    from fusedloss.kernels import cpu, registry

    registry.register(
        registry.KernelSpec("huber_handwritten", "from fusedloss.kernels.math import huber as element\n", "mean", ("delta",), (1.0,))
    )
    rng = np.random.default_rng(0)
    y_true = rng.standard_normal(shape).astype(np.float32)
    y_pred = (y_true + 1.5 * rng.standard_normal(shape)).astype(np.float32)
    loss_out, grad_out = pool.take(shape[:1], np.float32), pool.take(shape, np.float32)
    kernels = {"generated": cpu.launcher("huber"), "hand-written": cpu.launcher("huber_handwritten")}
    results = {}
    for name, kernel in kernels.items():  # warm up (compile) and check they agree
        kernel(y_true, y_pred, 1.0, loss_out=loss_out, grad_out=grad_out, grad_scale=1.0 / shape[0])
        results[name] = (loss_out.copy(), grad_out.copy())
    np.testing.assert_allclose(results["generated"][0], results["hand-written"][0], rtol=1e-6)
    np.testing.assert_allclose(results["generated"][1], results["hand-written"][1], rtol=1e-6, atol=1e-12)
    times = {name: [] for name in kernels}
    for _ in range(rounds):
        for name, kernel in kernels.items():
            started = time.perf_counter()
            kernel(y_true, y_pred, 1.0, loss_out=loss_out, grad_out=grad_out, grad_scale=1.0 / shape[0])
            times[name].append(time.perf_counter() - started)
    ratios = [g / h for g, h in zip(times["generated"], times["hand-written"])]
    return statistics.median(ratios), (min(ratios), max(ratios)), {name: statistics.median(t) for name, t in times.items()}


def run(rounds=15, shape=(10_000, 1000), children=True):
    rows = {"define": define_seconds(), "shape": shape}
    if children:
        with tempfile.TemporaryDirectory() as folder:
            rows["cold"] = _first_call_seconds(folder)
            rows["cached"] = _first_call_seconds(folder)
    rows["huber"] = generated_against_handwritten(rounds, shape)
    return rows


def markdown(rows):
    ratio, (low, high), medians = rows["huber"]
    size = f"{rows['shape'][0]}x{rows['shape'][1]}"
    lines = [
        "| measure | value |",
        "|---|---:|",
        f"| define a loss (trace, derivative, source, Keras class) | {rows['define'] * 1e3:.1f} ms |",
    ]
    if "cold" in rows:
        lines += [
            f"| first kernel call, fresh process, empty cache (numba compiles) | {rows['cold']:.2f} s |",
            f"| first kernel call, fresh process, cached kernel | {rows['cached']:.2f} s |",
        ]
    lines += [
        f"| Huber {size} fwd+bwd, generated kernel | {medians['generated'] * 1e3:.2f} ms |",
        f"| Huber {size} fwd+bwd, hand-written element | {medians['hand-written'] * 1e3:.2f} ms |",
        f"| generated / hand-written (median, min-max of rounds) | {ratio:.3f}x ({low:.2f}-{high:.2f}) |",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    arguments = parser.parse_args(argv)
    print(markdown(run(arguments.rounds)))


if __name__ == "__main__":
    main()
