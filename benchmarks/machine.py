"""The machine a run measured: memory bandwidth (the floor's denominator), the CPU and
library versions. Measured in the same run as the losses, because these machines are
shared and their bandwidth moves by tens of percent from hour to hour."""

import os
import platform
import time

import numpy as np


def _parallel_copy():
    from numba import njit, prange

    @njit(parallel=True)
    def copy(source, destination):
        for index in prange(source.size):
            destination[index] = source[index]

    return copy


def measure_bandwidth(nbytes=256 * 2**20, repeats=10, parallel=True):
    """Best-of-``repeats`` memory bandwidth in bytes/s: ``2 * nbytes`` (read and write)
    over the fastest copy of ``nbytes``, by NumPy (one thread) or by a parallel numba
    loop (every core), whichever is faster: the floor must be one no kernel can beat.

    Returns ``(bandwidth, how)`` where ``how`` names the winning copy. ``parallel=False``
    skips numba's copy and its compilation.
    """
    source = np.ones(nbytes // 4, np.float32)
    destination = np.zeros_like(source)  # touched: no page faults in the timing
    copies = {"numpy copy": lambda: np.copyto(destination, source)}
    if parallel:
        parallel_copy = _parallel_copy()
        copies["numba parallel copy"] = lambda: parallel_copy(source, destination)
    best = {}
    for name, copy in copies.items():
        copy()
        fastest = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            copy()
            fastest = min(fastest, time.perf_counter() - start)
        best[name] = 2 * source.nbytes / fastest
    how = max(best, key=best.get)
    return best[how], how


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device():
    return f"cpu: {cpu_name()}, {os.cpu_count()} cores"


def malloc():
    """glibc's large-block policy of this process: "default" (every block of 32 MB or
    more is a fresh mmap) or the thresholds set in the environment."""
    settings = [f"{k}={os.environ[k]}" for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES") if k in os.environ]
    return ", ".join(settings) or "default"


def versions():
    import keras
    import numba
    import tensorflow as tf

    import fusedloss

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "fusedloss": fusedloss.__version__,
    }
