"""FUSEDLOSS_BACKEND and fusedloss.backend()."""

import pytest

import fusedloss
from fusedloss import backends as backend_module


def test_auto_is_cpu_without_a_gpu_and_ignores_the_simulator(monkeypatch):
    monkeypatch.delenv("FUSEDLOSS_BACKEND", raising=False)
    assert fusedloss.backend() == "cpu"
    from fusedloss.kernels import cpu

    assert backend_module.kernels() is cpu


def test_cpu_by_name(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_BACKEND", " CPU ")
    assert fusedloss.backend() == "cpu"


def test_unknown_name_is_a_value_error(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "tpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda, got 'tpu'"):
        fusedloss.backend()


def test_cuda_without_a_gpu_says_why(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "cuda")
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM")
    monkeypatch.setattr(backend_module, "_cuda_unusable_reason", lambda: "numba-cuda found no usable GPU: no driver")
    with pytest.raises(RuntimeError, match="FUSEDLOSS_BACKEND=cuda but numba-cuda found no usable GPU: no driver"):
        fusedloss.backend()


def test_cuda_by_name_runs_the_simulator_when_it_is_on(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "cuda")
    assert fusedloss.backend() == "cuda"
    from fusedloss.kernels import cuda

    assert backend_module.kernels() is cuda
