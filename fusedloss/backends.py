"""Which kernels run: ``FUSEDLOSS_BACKEND=auto|cpu|cuda`` (default ``auto``).

``auto`` follows the tensors: those on a GPU run the CUDA kernels when numba-cuda can
use that GPU, everything else the CPU kernels, without a word. ``cpu`` runs the CPU
kernels wherever the tensors are (TensorFlow copies GPU tensors to the host and
back). ``cuda`` runs the CUDA kernels wherever the tensors are (host tensors are
copied to the GPU and back) and raises ``RuntimeError`` saying why where no GPU is
usable. The CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) counts as a GPU only when
asked for by name: it exists to test kernels, not to train.

When they run: ``FUSEDLOSS_MIN_FUSED_SIZE`` (or ``set_min_fused_size``), the size below
which a loss runs as TensorFlow ops instead, see ``min_fused_size``.
"""

import functools
import math
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


@functools.lru_cache(maxsize=256)
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


# ---------------------------------------------------------------------------------
# When the fused kernel is worth its call

# Below this many elements of y_pred, TensorFlow's own ops beat the bridge: its fixed
# cost per call (numpy_function hand-offs, the Python launcher) exceeds what one fused
# pass saves. `python -m benchmarks` reports the crossover of "bridge" and
# "tf-function" per loss and mode. Measured 2026-12-02 on the shared 2-core CPU
# (interleaved, 7 rounds; kernels below cpu.PARALLEL_FROM elements run without
# threads), native/bridge time: Huber fwd+bwd 0.82 at 1e4, 0.98 at 3e4, 1.75 at 1e5;
# embedding contrastive fwd+bwd 0.84 at 1e4, 1.17 at 3e4, 2.6 at 1e5; forward only,
# Huber 1.08 at 3e4 but embedding contrastive 0.74 at 1e5 (~3e5 in the quick run).
# So a call whose gradient is taken (training) is fused from 3e4 elements and a
# loss-only call (evaluate, metrics) from 3e5.
DEFAULT_MIN_FUSED_SIZE = 30_000
DEFAULT_MIN_FUSED_SIZE_LOSS_ONLY = 300_000

_min_fused_size_override = None


def _parse_size(name, value):
    """A count of elements: a whole number >= 0, given as a number or text ("1e6" too)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer() or number < 0:
        raise ValueError(f"{name} must be a whole number of elements >= 0, got {value!r}")
    return int(number)


def min_fused_size(with_grad=True):
    """The smallest ``y_pred`` (in elements) that runs the fused kernel; smaller ones
    run the same math as TensorFlow ops. ``with_grad``: for a call whose gradient is
    taken (a tape records), else for a loss-only call.

    ``set_min_fused_size(n)`` decides both if it was called, else
    ``FUSEDLOSS_MIN_FUSED_SIZE``, else ``DEFAULT_MIN_FUSED_SIZE`` (with a gradient) or
    ``DEFAULT_MIN_FUSED_SIZE_LOSS_ONLY``; 0 means always fused. Read when a loss is
    traced, so a ``tf.function`` already traced keeps the value it was traced with.
    """
    if _min_fused_size_override is not None:
        return _min_fused_size_override
    value = os.environ.get("FUSEDLOSS_MIN_FUSED_SIZE", "").strip()
    if not value:
        return DEFAULT_MIN_FUSED_SIZE if with_grad else DEFAULT_MIN_FUSED_SIZE_LOSS_ONLY
    return _parse_size("FUSEDLOSS_MIN_FUSED_SIZE", value)


def set_min_fused_size(size):
    """Override ``min_fused_size()`` for this process; ``None`` goes back to the
    environment variable or the default. Returns the previous override (or None)."""
    global _min_fused_size_override
    previous = _min_fused_size_override
    _min_fused_size_override = None if size is None else _parse_size("min_fused_size", size)
    return previous
