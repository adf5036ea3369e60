"""Test-session settings that must be in place before numba or TensorFlow load.

The CUDA kernels are exercised in numba's CUDA simulator: it must be switched on
before ``numba.cuda`` is first imported. The CPU kernels are unaffected, and the
backend's ``auto`` choice ignores the simulator, so everything else runs on the CPU.

Tests use small tensors, which a fused loss would run as TensorFlow ops (below
``min_fused_size()``): every test runs the fused kernels at every size, except those
of ``test_dispatch.py``, which test that choice itself.
"""

import os

import pytest

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def fused_at_every_size(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_MIN_FUSED_SIZE", "0")
