"""benchmarks/gpu/run_gpu.py end to end in the CUDA simulator, and its checks'
ability to fail."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fusedloss  # noqa: F401 - the real package, before the script would stub it
from fusedloss.kernels import cuda as cuda_kernels

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run_gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("run_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_gpu"] = module
    spec.loader.exec_module(module)
    return module


run_gpu = load_script()


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-report")
    environment = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--simulate", "--out", str(out)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_report.json").read_text())
    return report, (out / "gpu_report.md").read_text(), result.stdout


def test_every_present_kernel_passes_every_shape(simulated_run):
    report, _, _ = simulated_run
    present = [loss.name for loss in run_gpu.LOSSES if loss.inputs is not None and hasattr(cuda_kernels, loss.name)]
    assert "huber" in present
    rows = report["correctness"]
    for name in present:
        checked = {(tuple(row["shape"]), row["dtype"], row["grad"]) for row in rows if row["loss"] == name}
        for shape in run_gpu.SIMULATED_SHAPES:
            assert {(shape, "float32", True), (shape, "float32", False), (shape, "float64", True)} <= checked
    assert rows and all(row["passed"] and row["inputs_untouched"] for row in rows)
    launches = " ".join(row["launch"] for row in rows)
    for shape_kind in ("1 thr/row", "8 thr/row", "32 thr/row", "2 chunks/row", "no launch"):
        assert shape_kind in launches


def test_kernels_not_written_yet_are_named_as_skipped(simulated_run):
    report, markdown, _ = simulated_run
    for loss in run_gpu.LOSSES:
        if not hasattr(cuda_kernels, loss.name):
            assert f"{loss.name}: skipped, not in fusedloss.kernels.cuda yet" in report["notes"]
            assert f"- {loss.name}: skipped" in markdown


def test_report_table_timings_and_environment(simulated_run):
    report, markdown, stdout = simulated_run
    assert "| huber | (2, 601) | float32 | True | 32 thr/row, 4 blocks, 2 chunks/row |" in markdown
    correctness_lines = [line for line in markdown.splitlines() if line.startswith("| huber | (")]
    assert correctness_lines and all(line.endswith("| pass |") for line in correctness_lines)
    assert markdown in stdout  # printed last, for a reply that shows only the end
    environment = report["environment"]
    assert environment["tensorflow_imported"] is False  # the GPU machine has none
    assert environment["mode"].startswith("CUDA simulator") and environment["date"]
    fused = [row for row in report["timings"] if row["implementation"] == "fused (numba-cuda)"]
    assert fused and all(row["seconds"] > 0 and row["tb_per_s"] > 0 for row in fused)
    assert [(tuple(row["shape"]), row["launch"]) for row in report["launch_shapes"] if row["loss"] == "huber"] == [
        ((64, 1), "32 thr/block, 1 thr/row, 2 blocks"),
        ((8, 8), "32 thr/block, 8 thr/row, 2 blocks"),
        ((1, 64), "32 thr/block, 32 thr/row, 1 blocks"),
        ((1, 64), "32 thr/block, 8 thr/row, 1 blocks"),  # capped at 8 threads per row
    ]
    assert all(row["seconds"] > 0 for row in report["launch_shapes"])
    assert all(row["passed"] for row in report["formulas"] if row["implementation"] == "NumPy formulas" and row["passed"] is not None)
    assert report["copy_bandwidth"]["tb_per_s"] > 0
    assert [row["tool"] for row in report["sanitizer"]] == ["memcheck", "racecheck"]


@pytest.mark.parametrize("loss", [loss for loss in run_gpu.LOSSES if loss.values is not None], ids=lambda loss: loss.name)
def test_other_frameworks_formulas_have_the_right_derivative(loss):
    # Written from the formulas for PyTorch/JAX/CuPy; here in NumPy: the slope must be
    # the derivative of the value (central differences, float64).
    rng = np.random.default_rng(1)
    y_true, y_pred = loss.inputs(rng, (16, 33))
    params = {"huber": {"delta": 1.3}, "weighted_sigmoid_cross_entropy": {"pos_weight": 2.5}, "contrastive": {"margin": 1.2}}[loss.name]
    step = 1e-6
    numeric = (loss.values(np, y_true, y_pred + step, **params) - loss.values(np, y_true, y_pred - step, **params)) / (2 * step)
    np.testing.assert_allclose(loss.slopes(np, y_true, y_pred, **params), numeric, rtol=1e-5, atol=1e-6)


def test_compare_fails_unwritten_and_wrong_outputs():
    expected = np.array([1.0, 2.0, np.nan])
    assert run_gpu.compare(expected.copy(), expected, "float32")[0]
    assert not run_gpu.compare(np.array([1.0, np.nan, np.nan]), expected, "float32")[0]  # left poisoned
    assert not run_gpu.compare(np.array([1.0, 2.001, np.nan]), expected, "float32")[0]
    assert not run_gpu.compare(np.array([1.0, 2.0, 3.0]), expected, "float32")[0]  # NaN lost
    assert not run_gpu.compare(np.array([1.0, 2.0]), expected[:2].reshape(2, 1), "float64")[0]


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 32)


def test_a_wrong_kernel_is_reported_as_failed(small_blocks):
    huber = next(loss for loss in run_gpu.LOSSES if loss.name == "huber")

    def off_by_a_little(y_true, y_pred, delta=1.0, **kwargs):
        loss, grad = cuda_kernels.huber(y_true, y_pred, delta, **kwargs)
        loss.copy_to_device(loss.copy_to_host() * 1.001)
        return loss, grad

    def crashing(y_true, y_pred, delta=1.0, **kwargs):
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    rows = run_gpu.check_correctness([(huber, off_by_a_little, run_gpu.reference.huber, {"delta": 1.0})], [(3, 5)], True)
    assert rows and not any(row["passed"] for row in rows)
    rows = run_gpu.check_correctness([(huber, crashing, run_gpu.reference.huber, {"delta": 1.0})], [(3, 5)], True)
    assert rows[0]["error"] == "RuntimeError: CUDA_ERROR_ILLEGAL_ADDRESS" and not rows[0]["passed"]


def test_without_a_gpu_the_real_run_refuses_plainly():
    environment = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "No CUDA GPU that numba-cuda can use here: nothing checked" in result.stdout
