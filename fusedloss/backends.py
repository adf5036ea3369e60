"""Which kernels run: ``FUSEDLOSS_BACKEND=auto|cpu|cuda`` (default ``auto``).

``auto`` follows the tensors: those on a GPU run the CUDA kernels when numba-cuda can
use that GPU, everything else the CPU kernels, without a word. ``cpu`` runs the CPU
kernels wherever the tensors are (TensorFlow copies GPU tensors to the host and
back). ``cuda`` runs the CUDA kernels wherever the tensors are (host tensors are
copied to the GPU and back) and raises ``RuntimeError`` saying why where no GPU is
usable. The CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) counts as a GPU only when
asked for by name: it exists to test kernels, not to train.
"""

import functools
import os
import re

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


def on_gpu(device):
    """Whether a TensorFlow device name (``"/GPU:0"``, ``"/job:localhost/replica:0/
    task:0/device:GPU:0"``, ``"gpu:1"``) names a GPU; ``""`` and ``None`` do not."""
    return bool(device) and re.search(r"(?:^|/|device:)GPU(?::|$)", device, re.IGNORECASE) is not None


def backend(device=None):
    """``"cuda"`` or ``"cpu"``: the kernels a fused loss runs for tensors on ``device``.

    ``device`` is a TensorFlow device name; ``None`` asks about tensors on a GPU, so
    ``backend()`` says whether the CUDA kernels would be used here at all.
    """
    name = requested()
    if name == "cpu":
        return "cpu"
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    reason = _cuda_unusable_reason()
    if name == "cuda":
        if reason is not None:
            raise RuntimeError(f"FUSEDLOSS_BACKEND=cuda but {reason}")
        return "cuda"
    if device is not None and not on_gpu(device):
        return "cpu"
    return "cuda" if reason is None and not simulated else "cpu"


def kernels(device=None):
    """The launcher module (``kernels.cpu`` or ``kernels.cuda``) for ``backend(device)``."""
    if backend(device) == "cuda":
        from .kernels import cuda

        return cuda
    from .kernels import cpu

    return cpu
