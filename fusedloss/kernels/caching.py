"""Where compiled CPU kernels are cached across processes, and what their cache key is.

numba's own cache (``cache=True``) keys a kernel on the text of the file that defines
it. A fusedloss kernel inlines device functions from the other kernel modules
(``math.py``, ``primitives.py``, ...), so a change there would leave a stale kernel in
numba's cache. Every kernel of this package is therefore keyed on the text of all of
them (``kernel_sources_digest``):

- the generated element modules (``cpu.element_module``) carry the digest in their
  file name;
- the hand-written kernels defined in this folder (``softmax_cpu.py``, the embedding
  contrastive and row-scaling kernels of ``cpu.py``) are found by ``KernelCacheLocator``,
  which numba asks before its own locators: their cache lives in ``cache_folder()`` and
  is valid only while the digest is unchanged.
"""

import functools
import hashlib
import os
import sys
import tempfile

import types

import numba
from numba import njit
from numba.core import caching

KERNELS_FOLDER = os.path.dirname(os.path.abspath(__file__))


def digest(*texts):
    """A short hash of everything a kernel depends on (its cache key)."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def kernel_sources():
    """The text of every module a kernel is compiled with."""
    names = sorted(name for name in os.listdir(KERNELS_FOLDER) if name.endswith(".py"))
    texts = []
    for name in names:
        with open(os.path.join(KERNELS_FOLDER, name), encoding="utf-8") as file:
            texts.append(file.read())
    return texts


@functools.lru_cache(maxsize=None)
def kernel_sources_digest():
    """``digest`` of every kernel module's text and of numba's and Python's versions."""
    return digest(*kernel_sources(), numba.__version__, sys.version)


def cache_folder():
    """Where generated kernel modules (and numba's cache of them) are written:
    ``FUSEDLOSS_CACHE_DIR``, else ``$XDG_CACHE_HOME/fusedloss`` (``~/.cache/fusedloss``);
    a fresh temporary folder when that is not writable (nothing is then cached)."""
    folder = os.environ.get("FUSEDLOSS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fusedloss"
    )
    folder = os.path.join(folder, "kernels")
    try:
        os.makedirs(folder, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, delete=True)
        probe.close()
        return folder
    except OSError:
        return _temporary_folder()


@functools.lru_cache(maxsize=None)
def _temporary_folder():
    return tempfile.mkdtemp(prefix="fusedloss-kernels-")


class KernelCacheLocator(caching._CacheLocator):
    """numba cache locator for the kernels defined in this folder: cached under
    ``cache_folder()/compiled/<digest>``, stamped with ``kernel_sources_digest()`` so that a
    change to any kernel module invalidates every such kernel. Functions defined
    elsewhere are left to numba's own locators."""

    def __init__(self, py_func):
        self._lineno = py_func.__code__.co_firstlineno
        # One folder per digest: two versions of the package sharing a cache folder
        # keep their own kernels instead of overwriting each other's.
        self._cache_path = os.path.join(cache_folder(), "compiled", kernel_sources_digest())

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return kernel_sources_digest()

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != KERNELS_FOLDER:
            return None
        locator = cls(py_func)
        try:
            locator.ensure_cache_path()
        except OSError:
            return None
        return locator


def _install_locator():
    # numba asks each class of this list in turn; the first that answers decides. The
    # list is numba's internal: where it is missing, the hand-written kernels are not
    # cached (a kernel keyed on its own file only could go stale), never cached wrongly.
    # A user's NUMBA_CACHE_LOCATOR_CLASSES replaces the list, and wins.
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)  # renamed in numba 0.62
    locators = getattr(impl, "_locator_classes", None)
    if not isinstance(locators, list):
        return False
    if KernelCacheLocator not in locators:
        locators.insert(0, KernelCacheLocator)
    return True


# ``cache=`` of every hand-written kernel in this folder.
ENABLED = _install_locator()


def serial_copy(kernel, **options):
    """``kernel``'s Python function compiled again without threads (for small inputs),
    cached apart from the parallel one: numba names a cache entry after the function's
    qualified name and keys it on its bytecode, which the two would share."""
    func = kernel.py_func
    copy = types.FunctionType(func.__code__, func.__globals__, func.__name__ + "_serial", func.__defaults__, func.__closure__)
    copy.__qualname__ = func.__qualname__ + "_serial"
    return njit(cache=ENABLED, **options)(copy)
