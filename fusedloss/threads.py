"""The OpenMP setting fusedloss applies at import, only where the user set none.

numba's OpenMP layer (libgomp) keeps its worker threads spinning after each parallel
region, ~300 000 rounds by default, while TensorFlow's threads want the same cores for
the rest of the training step. ``python -m benchmarks.fit_threads`` (run by the main
job) times ``model.fit`` under each policy; the README's "Threads" paragraph has the
figures that chose ``DEFAULT_WAIT_POLICY``.

The user's own choice always wins: when ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is
set in the environment, nothing is changed. ``NUMBA_NUM_THREADS`` is never set:
numba's default (one thread per core) measured best. libgomp reads its environment once,
when numba first starts its threads (the first parallel kernel call), so the default
applies when fusedloss is imported before any numba parallel code has run, and, being an
environment variable, it is inherited by child processes and read by any other libgomp
user (another library's OpenMP code) loaded later in this process.
"""

import os

# Measured in model.fit: see the module docstring. None would leave libgomp's default.
DEFAULT_WAIT_POLICY = "PASSIVE"

# Any of these set by the user means the user chose: fusedloss sets nothing.
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

# What this import set, {variable: value}; empty when the user's settings stood.
applied = {}


def apply_defaults(environ=None):
    """Set ``OMP_WAIT_POLICY=DEFAULT_WAIT_POLICY`` in ``environ`` (``os.environ``) unless
    the user set any of ``USER_SETTINGS``. Returns what was set, ``{}`` when nothing."""
    environ = os.environ if environ is None else environ
    if DEFAULT_WAIT_POLICY is None or any(name in environ for name in USER_SETTINGS):
        return {}
    environ["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
    return {"OMP_WAIT_POLICY": DEFAULT_WAIT_POLICY}


applied.update(apply_defaults())
