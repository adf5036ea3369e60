"""fusedloss's OpenMP default (``fusedloss/threads.py``): applied at import only where
the user set nothing, and what libgomp then really uses (it prints its settings with
``OMP_DISPLAY_ENV=VERBOSE`` when numba first starts its threads)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fusedloss import threads

ROOT = Path(__file__).resolve().parent.parent


def test_the_default_is_set_where_the_user_set_nothing():
    environ = {"PATH": "/bin"}
    assert threads.apply_defaults(environ) == {"OMP_WAIT_POLICY": threads.DEFAULT_WAIT_POLICY}
    assert environ == {"PATH": "/bin", "OMP_WAIT_POLICY": threads.DEFAULT_WAIT_POLICY}


@pytest.mark.parametrize(
    "users", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "passive"}, {"GOMP_SPINCOUNT": "1000"}, {"OMP_WAIT_POLICY": ""}]
)
def test_the_users_setting_wins(users):
    environ = dict(users)
    assert threads.apply_defaults(environ) == {}
    assert environ == users


CHILD = r"""
import numpy as np
import fusedloss
import numba
from numba import njit, prange

@njit(parallel=True)
def total(a):
    s = 0.0
    for i in prange(a.size):
        s += a[i]
    return s

assert total(np.ones(10_000)) == 10_000.0
print("layer", numba.threading_layer(), "threads", numba.get_num_threads(), "applied", fusedloss.threads.applied)
"""


def _libgomp_settings(**users):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_NUM_THREADS")}
    env.update(users, OMP_DISPLAY_ENV="VERBOSE", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    layer, numba_threads = re.search(r"^layer (\w+) threads (\d+) applied", run.stdout, re.MULTILINE).groups()
    if layer != "omp":
        pytest.skip(f"numba runs its {layer} layer here, not OpenMP")
    shown = dict(re.findall(r"^\s*(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'", run.stderr, re.MULTILINE))
    return shown, int(numba_threads), run.stdout


def test_libgomp_runs_the_default_where_nothing_was_set():
    shown, _, stdout = _libgomp_settings()
    assert shown == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}, shown
    assert "applied {'OMP_WAIT_POLICY': 'PASSIVE'}" in stdout


def test_libgomp_runs_the_users_policy_and_numba_the_users_thread_count():
    shown, numba_threads, stdout = _libgomp_settings(OMP_WAIT_POLICY="ACTIVE", NUMBA_NUM_THREADS="1")
    assert shown == {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "30000000000"}, shown
    assert numba_threads == 1
    assert "applied {}" in stdout


def test_libgomp_runs_the_users_spin_count():
    shown, _, stdout = _libgomp_settings(GOMP_SPINCOUNT="12345")
    assert shown["GOMP_SPINCOUNT"] == "12345", shown
    assert "applied {}" in stdout
