"""The hand-written CPU kernels are cached across processes, keyed on every kernel module.

The generated element kernels' cache is tested in ``tests/test_define.py``.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np

import fusedloss
from fusedloss.kernels import caching, cpu, softmax_cpu

# A small input takes the serial copy of the backward kernel: the cheapest to compile.
CHILD = textwrap.dedent(
    """
    import numpy as np
    from fusedloss.kernels import cpu

    out = cpu.scale_rows(np.full(3, 2.0), np.ones((3, 4)))
    assert (out == 2.0).all()
    kernel = cpu._scale_rows_serial
    print(sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values()))
    """
)


def _run(cache_folder, package_parent):
    environment = {**os.environ, "FUSEDLOSS_CACHE_DIR": str(cache_folder), "NUMBA_ENABLE_CUDASIM": "1"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_parent), environment.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, env=environment, timeout=300, cwd=package_parent
    )  # cwd: "-c" puts it first on sys.path
    assert run.returncode == 0, run.stderr[-3000:]
    hits, misses = map(int, run.stdout.split()[-2:])
    return hits, misses


def test_hand_written_kernels_are_cached_and_a_change_to_any_kernel_module_recompiles_them(tmp_path):
    installed = os.path.dirname(os.path.dirname(fusedloss.__file__))
    assert _run(tmp_path / "cache", installed) == (0, 1)  # compiled
    assert _run(tmp_path / "cache", installed)[0] == 1  # loaded from the cache

    # The same package with one change in a module the kernel does not live in, but
    # could inline from: the cached kernel must not be used.
    changed = tmp_path / "changed"
    shutil.copytree(os.path.dirname(fusedloss.__file__), changed / "fusedloss", ignore=shutil.ignore_patterns("__pycache__"))
    with open(changed / "fusedloss" / "kernels" / "math.py", "a", encoding="utf-8") as file:
        file.write("\n# a change\n")
    assert _run(tmp_path / "cache", changed) == (0, 1)


def test_the_kernel_locator_answers_for_this_package_only():
    assert caching.ENABLED  # the installed numba has the hook, so nothing is compiled twice
    for kernel in (softmax_cpu._sparse_rows, softmax_cpu._dense_rows, softmax_cpu._focal_rows, cpu._scale_rows,
                   cpu._scale_rows_serial, cpu._embedding_contrastive_pairs, cpu._embedding_contrastive_pairs_serial):
        locator = caching.KernelCacheLocator.from_function(kernel.py_func, kernel.py_func.__code__.co_filename)
        assert locator is not None, kernel
        assert locator.get_source_stamp() == caching.kernel_sources_digest()
        assert locator.get_cache_path().startswith(caching.cache_folder())

    def elsewhere():
        return 0

    assert caching.KernelCacheLocator.from_function(elsewhere, __file__) is None


def test_a_serial_copy_is_cached_apart_from_its_parallel_kernel():
    serial, parallel = cpu._scale_rows_serial, cpu._scale_rows
    assert serial.py_func.__code__ is parallel.py_func.__code__
    assert serial.py_func.__qualname__ != parallel.py_func.__qualname__  # numba's cache file name
    grad, out = np.arange(12.0).reshape(3, 4), np.empty((3, 4))
    serial(np.array([1.0, 2.0, 3.0]), grad, out)
    np.testing.assert_array_equal(out, grad * [[1.0], [2.0], [3.0]])


def test_the_digest_covers_every_kernel_module():
    sources = caching.kernel_sources()
    names = [name for name in os.listdir(caching.KERNELS_FOLDER) if name.endswith(".py")]
    assert len(sources) == len(names) >= 10
    assert caching.digest(*sources) != caching.digest(*sources[:-1], sources[-1] + " ")
