"""Test-session settings that must be in place before numba or TensorFlow load.

The CUDA kernels are exercised in numba's CUDA simulator: it must be switched on
before ``numba.cuda`` is first imported. The CPU kernels are unaffected, and the
backend's ``auto`` choice ignores the simulator, so everything else runs on the CPU.
"""

import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
