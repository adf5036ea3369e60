"""Which kernels run: ``FUSEDLOSS_BACKEND=auto|cpu|cuda`` (default ``auto``).

``auto`` picks CUDA when numba-cuda finds a usable GPU and otherwise the CPU, without
a word. ``cuda`` where no GPU is usable raises ``RuntimeError`` saying why. The CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``) counts as a GPU only when asked for by name:
it exists to test kernels, not to train.
"""

import functools
import os

CHOICES = ("auto", "cpu", "cuda")


def requested():
    """The backend named by ``FUSEDLOSS_BACKEND``, validated."""
    name = os.environ.get("FUSEDLOSS_BACKEND", "auto").strip().lower() or "auto"
    if name not in CHOICES:
        raise ValueError(f"FUSEDLOSS_BACKEND must be one of {', '.join(CHOICES)}, got {name!r}")
    return name


@functools.lru_cache(maxsize=None)
def _cuda_unusable_reason():
    """None when numba-cuda can launch kernels here, else a sentence saying why not."""
    try:
        from numba import cuda
    except ImportError as error:  # numba-cuda missing
        return f"numba-cuda is not installed ({error}); pip install 'fusedloss[cuda13]'"
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return None
    if cuda.is_available():
        return None
    try:
        count = len(cuda.gpus)
    except Exception as error:  # the driver's own words, e.g. "CUDA driver library cannot be found"
        return "numba-cuda found no usable GPU: " + " ".join(str(error).split()).rstrip(": ")
    return f"numba-cuda found {count} GPU(s) but cannot use them"


def backend():
    """``"cuda"`` or ``"cpu"``: the kernels fused losses run on in this process."""
    name = requested()
    if name == "cpu":
        return "cpu"
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    reason = _cuda_unusable_reason()
    if name == "cuda":
        if reason is not None:
            raise RuntimeError(f"FUSEDLOSS_BACKEND=cuda but {reason}")
        return "cuda"
    return "cuda" if reason is None and not simulated else "cpu"


def kernels():
    """The launcher module (``kernels.cpu`` or ``kernels.cuda``) for ``backend()``."""
    if backend() == "cuda":
        from .kernels import cuda

        return cuda
    from .kernels import cpu

    return cpu
