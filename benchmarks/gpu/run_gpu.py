"""Verify and time the fused CUDA kernels on a GPU, in one run.

Made for a GPU machine with numba-cuda and no TensorFlow; PyTorch, JAX, CuPy and
compute-sanitizer are used where present and skipped with a note where not.

    python benchmarks/gpu/run_gpu.py                    # everything; report to $OUT or --out
    python benchmarks/gpu/run_gpu.py --simulate --out D # CI: CUDA simulator, tiny sizes
    python benchmarks/gpu/run_gpu.py --sanitize-case    # what compute-sanitizer runs

In order:

1. correctness: every loss of ``fusedloss.kernels.cuda`` (those not written yet are
   skipped, named) against its float64 reference (``kernels.reference``), at shapes
   that reach every launch shape, odd ones included, float32 and float64, with and
   without the gradient, into outputs poisoned with NaN, inputs checked untouched;
2. compute-sanitizer memcheck and racecheck on a small case (this script again,
   with ``--sanitize-case``);
3. the device-to-device copy bandwidth (bytes read + written), the ceiling;
4. forward + backward (per-sample loss and its gradient w.r.t. y_pred) at 1e6 to
   1e9 elements for the fused kernel, PyTorch eager, ``torch.compile``, JAX ``jit``
   and CuPy (no autodiff there: the analytic gradient, unfused), sizes that do not
   fit skipped; each with its time, TB/s of the fewest bytes the work must move, and
   the fraction of the copy bandwidth;
5. the fused kernel at 1e8 elements for several row lengths (each launch shape),
   and with other block and group sizes: the data to tune the launch constants.

Writes ``gpu_report.md`` and ``gpu_report.json`` (plus the sanitizer logs) and prints
the Markdown last. Exit status: 1 when a correctness or sanitizer check failed, 2
when numba-cuda finds no GPU (without --simulate), else 0.

Times are wall-clock over back-to-back calls, synchronised at the ends of each batch:
what a training step sees, launch overhead included (the median of 5 batches).
"""

import argparse
import datetime
import gc
import inspect
import json
import math
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import types
from typing import Callable, NamedTuple

ROOT = pathlib.Path(__file__).resolve().parents[2]
REPORT_NAME = "gpu_report"


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for the report (default: $OUT, else ./gpu-results)")
    parser.add_argument("--simulate", action="store_true", help="CUDA simulator, tiny sizes, fused kernel only")
    parser.add_argument("--sanitize-case", action="store_true", help="run the small case compute-sanitizer checks")
    parser.add_argument("--time-budget", type=float, default=540.0, help="seconds; later timings are skipped past it")
    parser.add_argument("--sizes", default="1e6,1e7,1e8,1e9", help="element counts to time")
    parser.add_argument("--no-sanitizer", action="store_true", help="skip compute-sanitizer")
    return parser.parse_args(argv)


if __name__ == "__main__" and "--simulate" in sys.argv:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported
# JAX would otherwise take 75 % of the GPU's memory when imported.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402


def import_kernels():
    """``fusedloss.kernels`` without running ``fusedloss/__init__``, which imports
    TensorFlow (absent on the GPU machine, and not needed here)."""
    if "fusedloss" not in sys.modules:
        package = types.ModuleType("fusedloss")
        package.__path__ = [str(ROOT / "fusedloss")]
        sys.modules["fusedloss"] = package
    from fusedloss.kernels import cuda as cuda_kernels
    from fusedloss.kernels import reference

    return cuda_kernels, reference


cuda_kernels, reference = import_kernels()


# ---------------------------------------------------------------------------------
# The losses: their inputs, and the same math for the other frameworks


def _relu(xp, x):
    return xp.where(x > 0, x, 0.0)


def _sigmoid(xp, x):
    return 1.0 / (1.0 + xp.exp(-x))


class Loss(NamedTuple):
    """How to feed and re-implement one loss of ``kernels.cuda``.

    ``values``/``slopes``: the per-element loss and its derivative w.r.t. y_pred,
    in array-API style (``xp`` is numpy, cupy, torch or jax.numpy), written from the
    formulas with the launcher's parameter names. They are checked against the
    float64 reference before anything is timed.
    """

    name: str
    inputs: Callable  # (rng, shape) -> (y_true, y_pred) as float64 host arrays
    values: Callable = None
    slopes: Callable = None


def _regression_inputs(rng, shape):
    return rng.normal(size=shape), 3.0 * rng.normal(size=shape)


def _binary_label_inputs(rng, shape):
    return rng.integers(0, 2, size=shape).astype(np.float64), 3.0 * rng.normal(size=shape)


def _distance_inputs(rng, shape):
    return rng.integers(0, 2, size=shape).astype(np.float64), rng.uniform(0.0, 2.0, size=shape)


def _huber_values(xp, y_true, y_pred, delta):
    error = y_pred - y_true
    return xp.where(xp.abs(error) <= delta, 0.5 * error * error, delta * xp.abs(error) - 0.5 * delta * delta)


def _huber_slopes(xp, y_true, y_pred, delta):
    error = y_pred - y_true
    return xp.where(xp.abs(error) <= delta, error, delta * xp.sign(error))


def _wsce_values(xp, y_true, y_pred, pos_weight):
    # TensorFlow's weighted_cross_entropy_with_logits: (1 - z) x + (1 + (q - 1) z) softplus(-x)
    weight = 1.0 + (pos_weight - 1.0) * y_true
    return (1.0 - y_true) * y_pred + weight * xp.logaddexp(xp.zeros_like(y_pred), -y_pred)


def _wsce_slopes(xp, y_true, y_pred, pos_weight):
    weight = 1.0 + (pos_weight - 1.0) * y_true
    return (1.0 - y_true) - weight * _sigmoid(xp, -y_pred)


def _contrastive_values(xp, y_true, y_pred, margin):
    # y d^2 + (1 - y) max(margin - d, 0)^2, with y_pred the distance d
    return y_true * y_pred * y_pred + (1.0 - y_true) * _relu(xp, margin - y_pred) ** 2


def _contrastive_slopes(xp, y_true, y_pred, margin):
    return 2.0 * y_true * y_pred - 2.0 * (1.0 - y_true) * _relu(xp, margin - y_pred)


LOSSES = [
    Loss("huber", _regression_inputs, _huber_values, _huber_slopes),
    Loss("weighted_sigmoid_cross_entropy", _binary_label_inputs, _wsce_values, _wsce_slopes),
    Loss("contrastive", _distance_inputs, _contrastive_values, _contrastive_slopes),
    # (batch, 2, dim) pairs do not fit this script's row-shaped inputs and outputs yet.
    Loss("embedding_contrastive", None),
]


def default_parameters(launcher):
    """The launcher's loss parameters (after y_true, y_pred; before the keyword-only
    ones) with their defaults."""
    parameters = list(inspect.signature(launcher).parameters.values())[2:]
    return {p.name: p.default for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD}


def present_losses(notes):
    """``[(Loss, launcher, reference, params)]`` for the losses written so far."""
    found = []
    for loss in LOSSES:
        launcher = getattr(cuda_kernels, loss.name, None)
        want = getattr(reference, loss.name, None)
        if loss.inputs is None:
            notes.append(f"{loss.name}: skipped, pair-shaped inputs are not wired into this script yet")
        elif launcher is None:
            notes.append(f"{loss.name}: skipped, not in fusedloss.kernels.cuda yet")
        elif want is None:
            notes.append(f"{loss.name}: skipped, no float64 reference in fusedloss.kernels.reference")
        else:
            found.append((loss, launcher, want, default_parameters(launcher)))
    return found


# ---------------------------------------------------------------------------------
# 1. Correctness


REAL_SHAPES = [
    (1,), (7,), (1, 1), (37, 1), (1000, 8), (333, 5), (41, 401), (3, 5, 33), (5000, 3),
    (64, 1000), (2000, 1000), (2, 100_003), (1, 3_000_001), (4, 0), (0, 7),
]  # fmt: skip
# The simulator runs 32-thread blocks; these reach the same launch shapes.
SIMULATED_SHAPES = [(7,), (37, 1), (9, 5), (3, 41), (2, 601), (4, 0)]
TOLERANCE = {"float32": 2e-5, "float64": 1e-12}


def describe_launch(shape):
    n_rows, n_columns = math.prod(shape[:-1]), shape[-1]
    if n_rows == 0 or n_columns == 0:
        return "no launch"
    launch = cuda_kernels.launch_shape(n_rows, n_columns)
    text = f"{launch.threads_per_row} thr/row, {launch.blocks} blocks"
    return text + (f", {launch.chunks_per_row} chunks/row" if launch.chunks_per_row > 1 else "")


def compare(actual, expected, dtype_name):
    """``(passed, relative error)``: every element within tolerance (NaN where the
    reference has NaN, nowhere else) and the norm-wise relative error."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return False, float("inf")
    if not np.array_equal(np.isnan(actual), np.isnan(expected)):
        return False, float("nan")
    finite = ~np.isnan(expected)
    if not finite.any():
        return True, 0.0
    difference = np.linalg.norm(actual[finite] - expected[finite])
    error = float(difference / max(np.linalg.norm(expected[finite]), np.finfo(np.float64).tiny))
    rtol = TOLERANCE[dtype_name]
    scale = float(np.max(np.abs(expected[finite])))
    close = np.allclose(actual[finite], expected[finite], rtol=rtol, atol=rtol * scale)
    return bool(close), error


def check_kernel(loss, launcher, want, params, shape, dtype, with_grad, rng):
    y_true, y_pred = (array.astype(dtype) for array in loss.inputs(rng, shape))
    device_true, device_pred = cuda.to_device(y_true), cuda.to_device(y_pred)
    loss_out = cuda.to_device(np.full(shape[:-1], np.nan, dtype))
    grad_out = cuda.to_device(np.full(shape, np.nan, dtype)) if with_grad else None
    launcher(device_true, device_pred, **params, with_grad=with_grad, loss_out=loss_out, grad_out=grad_out)
    cuda.synchronize()
    expected_loss, expected_grad = want(y_true, y_pred, **params)
    passed, error = compare(loss_out.copy_to_host(), expected_loss, np.dtype(dtype).name)
    if with_grad:
        grad_passed, grad_error = compare(grad_out.copy_to_host(), expected_grad, np.dtype(dtype).name)
        passed, error = passed and grad_passed, max(error, grad_error)
    untouched = np.array_equal(device_true.copy_to_host(), y_true, equal_nan=True) and np.array_equal(
        device_pred.copy_to_host(), y_pred, equal_nan=True
    )
    return {
        "loss": loss.name,
        "shape": list(shape),
        "dtype": np.dtype(dtype).name,
        "grad": with_grad,
        "launch": describe_launch(shape),
        "relative_error": error,
        "inputs_untouched": untouched,
        "passed": passed and untouched,
    }


def check_correctness(losses, shapes, simulate):
    rows = []
    rng = np.random.default_rng(20261123)
    for loss, launcher, want, params in losses:
        for shape in shapes:
            for dtype in (np.float32, np.float64):
                for with_grad in (True, False):
                    if simulate and not with_grad and dtype is np.float64:
                        continue  # the simulator is slow; the loss-only kernel is covered in float32
                    try:
                        rows.append(check_kernel(loss, launcher, want, params, shape, dtype, with_grad, rng))
                    except Exception as error:  # a crash is a failed check, not the end of the run
                        rows.append({"loss": loss.name, "shape": list(shape), "dtype": np.dtype(dtype).name,
                                     "grad": with_grad, "launch": describe_launch(shape), "relative_error": None,
                                     "inputs_untouched": None, "passed": False,
                                     "error": f"{type(error).__name__}: {error}"})  # fmt: skip
    return rows


def check_formulas(losses, providers):
    """The other frameworks' versions of each loss against the reference (float32
    inputs on their device; NumPy on the host in CI)."""
    rows = []
    rng = np.random.default_rng(7)
    shape = (64, 1000)
    for loss, _, want, params in losses:
        y_true, y_pred = (array.astype(np.float32) for array in loss.inputs(rng, shape))
        expected_loss, expected_grad = want(y_true, y_pred, **params)
        for provider in providers:
            row = {"loss": loss.name, "implementation": provider.name}
            if loss.values is None:
                row.update(passed=None, note=f"no array-API version of {loss.name} written here")
            else:
                try:
                    got_loss, got_grad = provider.compute(loss, params, y_true, y_pred)
                    loss_ok, loss_error = compare(got_loss, expected_loss, "float32")
                    grad_ok, grad_error = compare(got_grad, expected_grad, "float32")
                    row.update(passed=loss_ok and grad_ok, relative_error=max(loss_error, grad_error))
                except TypeError as error:
                    row.update(passed=None, note=f"parameters differ from the launcher's {list(params)}: {error}")
                except Exception as error:
                    row.update(passed=False, note=f"{type(error).__name__}: {error}")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------
# 2. compute-sanitizer


SANITIZE_SHAPES = [(37, 1), (33, 5), (3, 300), (2, 5000), (4, 0)]


def sanitize_case():
    """Each launch shape once, results checked: what compute-sanitizer watches."""
    failures = 0
    rng = np.random.default_rng(3)
    for loss, launcher, want, params in present_losses([]):
        for shape in SANITIZE_SHAPES:
            for with_grad in (True, False):
                row = check_kernel(loss, launcher, want, params, shape, np.float32, with_grad, rng)
                failures += not row["passed"]
                print(f"{loss.name} {shape} grad={with_grad} {describe_launch(shape)}: {'pass' if row['passed'] else 'FAIL'}")
    return 1 if failures else 0


def find_sanitizer():
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for pattern in ("/usr/local/cuda*/bin/compute-sanitizer", "/usr/local/cuda*/compute-sanitizer/compute-sanitizer",
                    "/opt/nvidia/*/compute-sanitizer"):  # fmt: skip
        candidates = sorted(pathlib.Path("/").glob(pattern.lstrip("/")))
        if candidates:
            return str(candidates[-1])
    return None


def run_sanitizers(out_folder, deadline):
    sanitizer = find_sanitizer()
    if sanitizer is None:
        return [{"tool": tool, "passed": None, "summary": "compute-sanitizer not found"} for tool in ("memcheck", "racecheck")]
    rows = []
    for tool in ("memcheck", "racecheck"):
        timeout = min(240.0, deadline - time.monotonic())
        if timeout < 30:
            rows.append({"tool": tool, "passed": None, "summary": "skipped: time budget spent"})
            continue
        command = [sanitizer, "--tool", tool, "--error-exitcode", "86", sys.executable, str(pathlib.Path(__file__).resolve()), "--sanitize-case"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
            log = result.stdout + result.stderr
            summaries = re.findall(r"(?:ERROR|RACECHECK) SUMMARY:.*", log)
            errors = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) error", log)]
            errors += [int(n) for n in re.findall(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) error", log)]
            passed = result.returncode == 0 and bool(summaries) and not any(errors)
            summary = "; ".join(summaries) or f"no summary line, exit {result.returncode}"
            if result.returncode not in (0, 86):
                summary += f" (exit {result.returncode})"
        except subprocess.TimeoutExpired as expired:
            output = expired.stdout or ""
            log = output.decode(errors="replace") if isinstance(output, bytes) else output
            passed, summary = False, f"timed out after {timeout:.0f} s"
        (out_folder / f"sanitizer_{tool}.txt").write_text(log[-200_000:])
        rows.append({"tool": tool, "passed": passed, "summary": summary})
    return rows


# ---------------------------------------------------------------------------------
# 3-5. Timings


def measure(run, synchronize, simulate, batches=5, batch_seconds=0.1):
    """Median seconds per call of ``run`` (after a warm-up call)."""
    run()
    synchronize()
    if simulate:
        start = time.perf_counter()
        run()
        synchronize()
        return time.perf_counter() - start
    start = time.perf_counter()
    run()
    synchronize()
    once = max(time.perf_counter() - start, 1e-6)
    repeats = max(1, min(1000, int(batch_seconds / once)))
    samples = []
    for _ in range(batches):
        synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        synchronize()
        samples.append((time.perf_counter() - start) / repeats)
    return statistics.median(samples)


@cuda.jit
def _fill_uniform(out, seed, low, high):
    # An integer hash of the index: reproducible, no host round trip, no overflow
    # of int64 below 8e9 elements.
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        x = (i * 1103515245 + seed) & 0x7FFFFFFF
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0x7FFFFFFF
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0x7FFFFFFF
        x = (x >> 16) ^ x
        out[i] = low + (high - low) * (x / 2147483648.0)


def device_uniform(shape, dtype, seed, low, high, simulate):
    array = cuda.device_array(math.prod(shape), dtype)
    blocks, threads = (1, 32) if simulate else (1024, 256)
    _fill_uniform[blocks, threads](array, seed, low, high)
    return array.reshape(*shape)


def free_device_memory():
    gc.collect()
    if "torch" in sys.modules:
        sys.modules["torch"].cuda.empty_cache()
    if "cupy" in sys.modules:
        sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
    context = cuda.current_context()
    if hasattr(context, "deallocations"):
        context.deallocations.clear()
    free, _ = context.get_memory_info()
    return free


def copy_bandwidth(simulate):
    """Device-to-device copy: (bytes read + written) per second, and the size used."""
    nbytes = 1 << 12 if simulate else min(1 << 31, free_device_memory() // 4)
    source = device_uniform((nbytes // 4,), np.float32, 1, 0.0, 1.0, simulate)
    target = cuda.device_array_like(source)
    seconds = measure(lambda: target.copy_to_device(source), cuda.synchronize, simulate)
    del source, target
    return {"bytes": nbytes, "seconds": seconds, "tb_per_s": 2 * nbytes / seconds / 1e12}


class Provider(NamedTuple):
    """One implementation to time: ``prepare(loss, params, shape, dtype)`` returns
    ``(run, synchronize)`` on data already on the device; ``compute`` runs it once on
    host inputs and returns host ``(loss, grad)`` (for the formula check);
    ``bytes_per_element`` is a guess of its peak memory, to skip sizes that don't fit."""

    name: str
    prepare: Callable
    compute: Callable
    bytes_per_element: int  # times the dtype's itemsize


def fused_provider(simulate):
    def prepare(loss, launcher, params, shape, dtype):
        y_true = device_uniform(shape, dtype, 11, 0.0, 1.0, simulate)
        y_pred = device_uniform(shape, dtype, 12, 0.1, 2.0, simulate)
        loss_out, grad_out = cuda.device_array(shape[:-1], dtype), cuda.device_array(shape, dtype)

        def run():
            launcher(y_true, y_pred, **params, loss_out=loss_out, grad_out=grad_out)

        return run, cuda.synchronize

    return prepare


def torch_providers():
    import torch

    compiled = {}

    def per_sample(loss, params, use_compile):
        function = lambda t, p: loss.values(torch, t, p, **params).mean(-1)  # noqa: E731
        if not use_compile:
            return function
        # One dynamic-shape compilation per loss serves every size: a static one per
        # size would cost minutes of the run, and past Dynamo's cache limit later
        # calls would silently run eagerly.
        key = (loss.name, tuple(params.items()))
        if key not in compiled:
            compiled[key] = torch.compile(function, dynamic=True)
        return compiled[key]

    def make(use_compile):
        def prepare(loss, launcher, params, shape, dtype):
            torch_dtype = getattr(torch, np.dtype(dtype).name)
            y_true = torch.rand(shape, device="cuda", dtype=torch_dtype)
            y_pred = (0.1 + 1.9 * torch.rand(shape, device="cuda", dtype=torch_dtype)).requires_grad_()
            function = per_sample(loss, params, use_compile)
            ones = torch.ones(shape[:-1], device="cuda", dtype=torch_dtype)

            def run():
                value = function(y_true, y_pred)
                torch.autograd.grad(value, y_pred, grad_outputs=ones)

            return run, torch.cuda.synchronize

        def compute(loss, params, y_true, y_pred):
            t = torch.tensor(y_true, device="cuda")
            p = torch.tensor(y_pred, device="cuda", requires_grad=True)
            value = per_sample(loss, params, use_compile)(t, p)
            (grad,) = torch.autograd.grad(value, p, grad_outputs=torch.ones_like(value))
            return value.detach().cpu().numpy(), grad.cpu().numpy()

        return prepare, compute

    return [
        Provider("PyTorch eager", *make(False), 10),
        Provider("torch.compile (dynamic shapes)", *make(True), 6),
    ]


def jax_provider():
    import jax
    import jax.numpy as jnp

    def function(loss, params):
        def per_sample_and_grad(y_true, y_pred):
            value, pullback = jax.vjp(lambda p: loss.values(jnp, y_true, p, **params).mean(-1), y_pred)
            return value, pullback(jnp.ones_like(value))[0]

        return jax.jit(per_sample_and_grad)

    def prepare(loss, launcher, params, shape, dtype):
        key_true, key_pred = jax.random.split(jax.random.PRNGKey(0))
        y_true = jax.random.uniform(key_true, shape, dtype)
        y_pred = jax.random.uniform(key_pred, shape, dtype, 0.1, 2.0)
        compiled = function(loss, params)
        outputs = []

        def run():
            outputs[:] = [compiled(y_true, y_pred)]

        return run, lambda: jax.block_until_ready(outputs)

    def compute(loss, params, y_true, y_pred):
        value, grad = function(loss, params)(jnp.asarray(y_true), jnp.asarray(y_pred))
        return np.asarray(value), np.asarray(grad)

    return Provider("JAX jit", prepare, compute, 8)


def cupy_provider():
    import cupy

    def prepare(loss, launcher, params, shape, dtype):
        y_true = cupy.random.random(shape, dtype)
        y_pred = 0.1 + 1.9 * cupy.random.random(shape, dtype)

        def run():
            loss.values(cupy, y_true, y_pred, **params).mean(-1)
            loss.slopes(cupy, y_true, y_pred, **params) / shape[-1]

        return run, cupy.cuda.Device().synchronize

    def compute(loss, params, y_true, y_pred):
        t, p = cupy.asarray(y_true), cupy.asarray(y_pred)
        value = loss.values(cupy, t, p, **params).mean(-1)
        return cupy.asnumpy(value), cupy.asnumpy(loss.slopes(cupy, t, p, **params) / y_pred.shape[-1])

    return Provider("CuPy (analytic gradient)", prepare, compute, 10)


def numpy_formulas():
    """NumPy versions of the formulas: checked against the reference in CI."""

    def compute(loss, params, y_true, y_pred):
        t, p = y_true.astype(np.float64), y_pred.astype(np.float64)
        with np.errstate(over="ignore"):
            return loss.values(np, t, p, **params).mean(-1), loss.slopes(np, t, p, **params) / p.shape[-1]

    return Provider("NumPy formulas", None, compute, 0)


def other_providers(notes):
    """The competitors that import here; a note for each that does not."""
    providers = []
    # JAX last: its memory pool keeps what it took until the process ends.
    for name, make in (("CuPy", cupy_provider), ("PyTorch", torch_providers), ("JAX", jax_provider)):
        try:
            made = make()
        except Exception as error:  # ImportError, or a build without CUDA
            notes.append(f"{name}: skipped ({type(error).__name__}: {error})")
            continue
        providers.extend(made if isinstance(made, list) else [made])
    if "torch" in sys.modules and not sys.modules["torch"].cuda.is_available():
        notes.append("PyTorch: skipped (no CUDA device for torch)")
        providers = [p for p in providers if "torch" not in p.name.lower()]
    return providers


def minimal_bytes(shape, itemsize):
    """Each input read once, the gradient and the per-sample loss written once."""
    return (3 * math.prod(shape) + math.prod(shape[:-1])) * itemsize


def time_cell(loss, launcher, params, provider, shape, dtype, bandwidth, simulate, deadline):
    row = {"loss": loss.name, "implementation": provider.name, "shape": list(shape), "elements": math.prod(shape)}
    itemsize = np.dtype(dtype).itemsize
    if time.monotonic() > deadline:
        return {**row, "note": "skipped: time budget spent"}
    needed = provider.bytes_per_element * math.prod(shape) * itemsize
    free = free_device_memory()
    if needed > free:
        return {**row, "note": f"skipped: needs ~{needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"}
    try:
        run, synchronize = provider.prepare(loss, launcher, params, shape, dtype)
        seconds = measure(run, synchronize, simulate)
    except Exception as error:  # out of memory in a framework, a compile failure...
        return {**row, "note": f"failed: {type(error).__name__}: {str(error)[:200]}"}
    finally:
        run = synchronize = None
        free_device_memory()
    tb_per_s = minimal_bytes(shape, itemsize) / seconds / 1e12
    return {**row, "seconds": seconds, "tb_per_s": tb_per_s, "fraction_of_copy": tb_per_s / bandwidth["tb_per_s"]}


def matrix_shape(elements, columns):
    return (max(1, int(elements) // columns), columns)


def run_timings(losses, providers, formula_rows, sizes, bandwidth, simulate, deadline):
    rows = []
    usable = {(row["loss"], row["implementation"]) for row in formula_rows if row.get("passed")}
    # Provider by provider, so that each framework's memory is given back before the next.
    for provider in providers:
        for loss, launcher, _, params in losses:
            if provider.name != "fused (numba-cuda)" and (loss.name, provider.name) not in usable:
                continue  # its formula was not checked, or failed: not timed
            for elements in sizes:
                shape = matrix_shape(elements, 8 if simulate else 1000)
                rows.append(time_cell(loss, launcher, params, provider, shape, np.float32, bandwidth, simulate, deadline))
    return rows


# (columns per row, threads per block, most threads per row): the launcher's own
# choice (block size 256, no cap) for each kind of row, then other group and block
# sizes for the lengths where the best one is not obvious without measuring.
LAUNCH_SWEEP = [(1, 256, 1024), (8, 256, 1024), (100, 256, 1024), (1000, 256, 1024), (10**5, 256, 1024), (10**8, 256, 1024),
                (100, 256, 32), (1000, 256, 32), (1000, 256, 128), (1000, 512, 1024), (1000, 1024, 1024),
                (10**5, 256, 32), (10**5, 512, 1024), (10**5, 1024, 1024)]  # fmt: skip
SIMULATED_LAUNCH_SWEEP = [(1, 32, 1024), (8, 32, 1024), (64, 32, 1024), (64, 32, 8)]


def run_launch_shapes(losses, fused, bandwidth, simulate, deadline):
    """The fused kernel on one size under several launch shapes (its constants set
    for each, then restored)."""
    elements = 64 if simulate else 10**8
    rows = []
    defaults = cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MAX_THREADS_PER_ROW
    try:
        for loss, launcher, _, params in losses:
            for n_columns, threads, widest in SIMULATED_LAUNCH_SWEEP if simulate else LAUNCH_SWEEP:
                cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MAX_THREADS_PER_ROW = threads, widest
                shape = matrix_shape(elements, n_columns)
                row = time_cell(loss, launcher, params, fused, shape, np.float32, bandwidth, simulate, deadline)
                rows.append({**row, "launch": f"{threads} thr/block, " + describe_launch(shape)})
    finally:
        cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MAX_THREADS_PER_ROW = defaults
    return rows


# ---------------------------------------------------------------------------------
# Report


def environment(simulate):
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "CUDA simulator: timings are meaningless" if simulate else "GPU",
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import numba_cuda

        info["numba_cuda"] = numba_cuda.__version__
    except (ImportError, AttributeError):
        pass
    if simulate:
        info["device"] = "none: CUDA simulator"
    else:
        device = cuda.get_current_device()
        info["device"] = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
        info["compute_capability"] = ".".join(map(str, device.compute_capability))
        info["multiprocessors"] = device.MULTIPROCESSOR_COUNT
        free, total = cuda.current_context().get_memory_info()
        info["memory_gib"] = round(total / 2**30, 1)
        info["driver_cuda_version"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
    for module in ("torch", "jax", "cupy"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "?")
    info["tensorflow_imported"] = "tensorflow" in sys.modules
    return info


def _time(seconds):
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.1f} µs"


def _verdict(passed):
    return "pass" if passed else ("—" if passed is None else "FAIL")


def markdown(report):
    lines = ["# fusedloss CUDA kernels: GPU report", ""]
    env = report["environment"]
    lines += [f"- {key}: {value}" for key, value in env.items()] + [""]
    lines += ["## Correctness: CUDA kernels vs the float64 reference", ""]
    lines += ["| loss | shape | dtype | grad | launch | rel. error | result |", "|---|---|---|---|---|---|---|"]
    for row in report["correctness"]:
        error = "—" if row["relative_error"] is None else f"{row['relative_error']:.1e}"
        result = _verdict(row["passed"]) + (f" ({row['error']})" if row.get("error") else "")
        if row.get("inputs_untouched") is False:
            result += " (an input was modified)"
        lines.append(f"| {row['loss']} | {tuple(row['shape'])} | {row['dtype']} | {row['grad']} | {row['launch']} | {error} | {result} |")
    lines += ["", "## Other implementations vs the float64 reference (checked before timing)", ""]
    lines += ["| loss | implementation | rel. error | result |", "|---|---|---|---|"]
    for row in report["formulas"]:
        error = f"{row['relative_error']:.1e}" if "relative_error" in row else "—"
        lines.append(f"| {row['loss']} | {row['implementation']} | {error} | {_verdict(row['passed'])} {row.get('note', '')} |")
    lines += ["", "## compute-sanitizer", "", "| tool | result | summary |", "|---|---|---|"]
    for row in report["sanitizer"]:
        lines.append(f"| {row['tool']} | {_verdict(row['passed'])} | {row['summary']} |")
    bandwidth = report["copy_bandwidth"]
    lines += ["", "## Copy bandwidth", "",
              f"Device-to-device copy of {bandwidth['bytes'] / 2**30:.2f} GiB: {_time(bandwidth['seconds'])}, "
              f"**{bandwidth['tb_per_s']:.3f} TB/s** (bytes read + written).", ""]  # fmt: skip
    for title, key in (("Forward + backward, float32 (per-sample loss and gradient w.r.t. y_pred)", "timings"),
                       ("Fused kernel by launch shape, float32", "launch_shapes")):  # fmt: skip
        lines += [f"## {title}", "", "Minimal bytes: y_true and y_pred read once, gradient and loss written once.", ""]
        lines += ["| loss | implementation | shape | launch | time | TB/s | of copy | note |", "|---|---|---|---|---|---|---|---|"]
        for row in report[key]:
            timed = "seconds" in row
            cells = [_time(row["seconds"]), f"{row['tb_per_s']:.3f}", f"{row['fraction_of_copy']:.0%}"] if timed else ["—"] * 3
            lines.append(f"| {row['loss']} | {row['implementation']} | {tuple(row['shape'])} | {row.get('launch', '')} | "
                         + " | ".join(cells) + f" | {row.get('note', '')} |")  # fmt: skip
        lines.append("")
    lines += ["## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv):
    args = parse_arguments(argv)
    if args.sanitize_case:
        return sanitize_case()
    start = time.monotonic()
    deadline = start + args.time_budget
    simulate = args.simulate
    if not simulate and not cuda.is_available():
        print("No CUDA GPU that numba-cuda can use here: nothing checked. (--simulate runs the CUDA simulator.)")
        return 2
    out_folder = pathlib.Path(args.out or os.environ.get("OUT") or "gpu-results")
    out_folder.mkdir(parents=True, exist_ok=True)
    notes = []
    if simulate:
        # Each simulated thread is a Python thread: small blocks, few of them.
        cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MIN_BLOCKS, cuda_kernels.MAX_BLOCKS = 32, 4, 4
        notes.append("CUDA simulator: 32 threads per block, tiny sizes; the timings say nothing about a GPU")
    losses = present_losses(notes)

    print("1. correctness", flush=True)
    correctness = check_correctness(losses, SIMULATED_SHAPES if simulate else REAL_SHAPES, simulate)
    fused = Provider("fused (numba-cuda)", fused_provider(simulate), None, 4)
    if simulate:
        notes.append("--simulate: PyTorch, JAX and CuPy are not run; the NumPy formulas are checked instead")
        others = []
        formulas = check_formulas(losses, [numpy_formulas()])
    else:
        others = other_providers(notes)
        formulas = check_formulas(losses, others)

    print("2. compute-sanitizer", flush=True)
    if simulate or args.no_sanitizer:
        sanitizer = [{"tool": tool, "passed": None, "summary": "not run (--simulate or --no-sanitizer)"} for tool in ("memcheck", "racecheck")]
    else:
        sanitizer = run_sanitizers(out_folder, deadline)

    print("3. copy bandwidth", flush=True)
    bandwidth = copy_bandwidth(simulate)
    print(f"   {bandwidth['tb_per_s']:.3f} TB/s", flush=True)
    print("4. timings", flush=True)
    sizes = [64] if simulate else [int(float(size)) for size in args.sizes.split(",")]
    timings = run_timings(losses, [fused] + others, formulas, sizes, bandwidth, simulate, deadline)
    print("5. launch shapes", flush=True)
    launch_shapes = run_launch_shapes(losses, fused, bandwidth, simulate, deadline)
    notes.append(f"total run time {time.monotonic() - start:.0f} s (budget {args.time_budget:.0f} s)")

    report = {
        "environment": environment(simulate),
        "correctness": correctness,
        "formulas": formulas,
        "sanitizer": sanitizer,
        "copy_bandwidth": bandwidth,
        "timings": timings,
        "launch_shapes": launch_shapes,
        "notes": notes,
    }
    text = markdown(report)
    (out_folder / f"{REPORT_NAME}.md").write_text(text)
    (out_folder / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=1, default=str))
    print(text)
    failed = any(not row["passed"] for row in correctness) or any(row["passed"] is False for row in sanitizer)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
