"""``python -m fusedloss.selfcheck``: its verdicts, without a GPU.

On this machine it must say plainly that nothing was checked. Its checks themselves
run on CPU tensors through the fakes of ``gpu_fakes``, where they must pass, and
must fail when the values, the GPU path or the zero-copy property are broken.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from tests.gpu_fakes import route_through_host

from fusedloss import gpu_bridge, selfcheck

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_without_a_gpu_it_checks_nothing_and_says_so():
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("NUMBA_ENABLE_CUDASIM", None)
    result = subprocess.run(
        [sys.executable, "-m", "fusedloss.selfcheck"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == selfcheck.NOT_CHECKED == 2
    assert "SKIPPED: nothing checked: TensorFlow sees no GPU" in result.stdout


def test_forced_cpu_backend_is_a_reason_not_to_check(monkeypatch):
    monkeypatch.setattr(selfcheck, "_gpu_devices", lambda: ["/device:GPU:0"])
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "cpu")
    assert selfcheck.why_not_checkable() == "FUSEDLOSS_BACKEND=cpu sends every fused loss to the CPU kernels"


def test_the_simulator_is_a_reason_not_to_check(monkeypatch):
    monkeypatch.setattr(selfcheck, "_gpu_devices", lambda: ["/device:GPU:0"])
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "auto")
    assert "the CUDA simulator is on" in selfcheck.why_not_checkable()


@pytest.fixture
def cpu_as_gpu(monkeypatch):
    """The self-check on the CPU device, through the GPU bridge's fakes."""
    route_through_host(monkeypatch)
    monkeypatch.setattr(selfcheck, "SHAPE", (3, 5))  # one simulated block
    monkeypatch.setattr(selfcheck, "_gpu_devices", lambda: ["/device:CPU:0"])
    monkeypatch.setattr(selfcheck, "_environment", lambda device: [f"checking on {device}"])
    # The fakes' "device memory" is host memory.
    monkeypatch.setattr(gpu_bridge, "DLPACK_CUDA", gpu_bridge.DLPACK_CPU)


def verdicts(output):
    """``{(loss, mode, what): "PASS" | "FAIL"}`` from the printed table, whose columns
    are separated by two spaces or more."""
    table = {}
    for line in output.splitlines():
        fields = re.split(r"\s{2,}", line.strip())
        if fields[0] in ("PASS", "FAIL"):
            table[tuple(fields[1:4])] = fields[0]
    return table


@pytest.fixture(autouse=True)
def a_few_losses(monkeypatch):
    """The checks of three losses (one elementwise, one with a static variant, the pairs):
    each check of every loss costs seconds, and what is tested here is the checking."""
    every = selfcheck._fused_losses
    wanted = ("huber", "binary_crossentropy[from_logits=False][axis=-1]", "embedding_contrastive")
    monkeypatch.setattr(selfcheck, "_fused_losses", lambda: {k: v for k, v in every().items() if k in wanted})


def test_every_check_passes_when_the_bridge_works(cpu_as_gpu, capsys):
    assert selfcheck.main() == selfcheck.PASSED
    table = verdicts(capsys.readouterr().out)
    checks = [("eager", "loss"), ("eager", "gradient"), ("eager", "GPU kernel ran"), ("eager", "no host copies"),
              ("tf.function", "loss"), ("tf.function", "gradient"), ("tf.function", "GPU kernel ran")]  # fmt: skip
    losses = sorted(selfcheck._fused_losses())
    assert "huber" in losses and "embedding_contrastive" in losses
    assert table == {(loss, *check): "PASS" for loss in losses for check in checks}


def test_wrong_values_fail(cpu_as_gpu, monkeypatch, capsys):
    real = selfcheck._fused_losses

    def with_a_wrong_huber():
        found = real()
        fused, composite, params = found["huber"]
        found["huber"] = (fused, lambda *args: composite(*args) * 1.001, params)
        return found

    monkeypatch.setattr(selfcheck, "_fused_losses", with_a_wrong_huber)
    assert selfcheck.main() == selfcheck.FAILED
    table = verdicts(capsys.readouterr().out)
    assert table[("huber", "eager", "loss")] == table[("huber", "tf.function", "gradient")] == "FAIL"
    assert table[("huber", "eager", "no host copies")] == "PASS"


def test_a_loss_that_never_reaches_the_gpu_fails(cpu_as_gpu, monkeypatch, capsys):
    monkeypatch.setattr(gpu_bridge, "wanted", lambda y_pred: False)  # numpy_function path
    assert selfcheck.main() == selfcheck.FAILED
    output = capsys.readouterr().out
    table = verdicts(output)
    assert table[("huber", "eager", "loss")] == "PASS"
    assert table[("huber", "eager", "GPU kernel ran")] == table[("huber", "tf.function", "GPU kernel ran")] == "FAIL"
    assert "the loss did not reach the GPU bridge" in output


def test_a_copied_output_fails_the_zero_copy_check(cpu_as_gpu, monkeypatch, capsys):
    real_forward = gpu_bridge.forward

    def copying_forward(*args):
        loss, grad = real_forward(*args)
        return tf.identity(loss) + 0.0, grad  # a new buffer holding the same values

    monkeypatch.setattr(gpu_bridge, "forward", copying_forward)
    assert selfcheck.main() == selfcheck.FAILED
    output = capsys.readouterr().out
    assert verdicts(output)[("huber", "eager", "no host copies")] == "FAIL"
    assert "copied: loss" in output


def test_a_buffer_outside_device_memory_fails_the_zero_copy_check(cpu_as_gpu, monkeypatch, capsys):
    monkeypatch.setattr(gpu_bridge, "DLPACK_CUDA", 2)  # the CPU buffers are then not CUDA memory
    assert selfcheck.main() == selfcheck.FAILED
    output = capsys.readouterr().out
    assert "a buffer is not in CUDA device memory" in output


def test_an_exception_is_reported_per_loss(cpu_as_gpu, monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("CUDA_ERROR_OUT_OF_MEMORY")

    monkeypatch.setattr(gpu_bridge, "forward", broken)
    assert selfcheck.main() == selfcheck.FAILED
    assert "RuntimeError: CUDA_ERROR_OUT_OF_MEMORY" in capsys.readouterr().out
