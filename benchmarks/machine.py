"""The machine a run measured: memory bandwidth (the floor's denominator), the CPU and
library versions. Measured in the same run as the losses, because these machines are
shared and their bandwidth moves by tens of percent from hour to hour."""

import os
import platform
import time

import numpy as np


def _parallel_streams():
    from numba import njit, prange

    @njit(parallel=True)
    def copy(source, destination):
        for index in prange(source.size):
            destination[index] = source[index]

    @njit(parallel=True)
    def triad(first, second, destination):
        for index in prange(first.size):
            destination[index] = first[index] + np.float32(0.5) * second[index]

    return copy, triad


def measure_bandwidth(nbytes=256 * 2**20, repeats=10, parallel=True):
    """Best-of-``repeats`` memory bandwidth in bytes/s, over the fastest of three
    streams: NumPy's copy (one thread), a parallel numba copy and a parallel numba
    triad ``a = b + 0.5 c`` (every core), each counted as the bytes it reads and
    writes. The floor must be one no kernel can beat: the triad reads two arrays per
    one written, as a fused loss's forward+backward does, and on these machines it
    moved 30-70 % more bytes per second than a copy (2026-12-03), which a kernel with that mix would
    otherwise appear to beat.

    Returns ``(bandwidth, how)`` where ``how`` names the winning stream. ``parallel=False``
    skips numba's streams and their compilation.
    """
    source = np.ones(nbytes // 4, np.float32)
    second = np.ones_like(source)
    destination = np.zeros_like(source)  # touched: no page faults in the timing
    streams = {"numpy copy": (lambda: np.copyto(destination, source), 2)}
    if parallel:
        parallel_copy, triad = _parallel_streams()
        streams["numba parallel copy"] = (lambda: parallel_copy(source, destination), 2)
        streams["numba parallel triad"] = (lambda: triad(source, second, destination), 3)
    best = {}
    for name, (stream, arrays_moved) in streams.items():
        stream()
        fastest = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            stream()
            fastest = min(fastest, time.perf_counter() - start)
        best[name] = arrays_moved * source.nbytes / fastest
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
