"""Reusable, 64-byte-aligned output buffers for the TF bridge.

Why: ``tf.numpy_function`` takes a returned array without copying only when it is
64-byte aligned, and on these machines the first write to freshly allocated memory
costs ~15x a write to memory already touched (page faults). So the bridge writes its
outputs into buffers it keeps and hands them to TensorFlow.

Safety: a buffer is handed out again only when nothing else refers to it. TensorFlow
holds a reference to every array it wraps without copying (and to every view of it)
until its last tensor on that memory is gone, and every NumPy view refers to the
buffer's owner, so the owner's reference count tells exactly whether anything - a
gradient saved for backward, a tensor the user kept, a view of either - is alive.
"""

import math
import sys
import threading

import numpy as np

ALIGNMENT = 64


def _aligned_view(owner, shape, dtype):
    offset = -owner.ctypes.data % ALIGNMENT
    nbytes = math.prod(shape) * dtype.itemsize
    return owner[offset : offset + nbytes].view(dtype).reshape(shape)


class BufferPool:
    """Hands out aligned arrays, reusing those no one refers to any more.

    At most ``per_size`` idle buffers are kept for each byte size; a request that finds
    all of them in use gets a fresh buffer that is not kept. Thread-safe.
    """

    def __init__(self, per_size=4):
        self.per_size = per_size
        self._owners = {}  # nbytes -> list of uint8 owner arrays
        self._lock = threading.Lock()

    def take(self, shape, dtype):
        dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
        shape = tuple(int(n) for n in shape)
        nbytes = math.prod(shape) * dtype.itemsize  # math.prod: np.prod costs ~10 us a call
        if nbytes == 0:
            return np.empty(shape, dtype)
        with self._lock:
            owners = self._owners.setdefault(nbytes, [])
            for owner in owners:
                # References: the list, `owner` and getrefcount's argument. One more
                # means a view (and whatever holds it) is still alive.
                if sys.getrefcount(owner) <= 3:
                    return _aligned_view(owner, shape, dtype)
            owner = np.empty(nbytes + ALIGNMENT, np.uint8)
            if len(owners) < self.per_size:
                owners.append(owner)
            return _aligned_view(owner, shape, dtype)

    def clear(self):
        with self._lock:
            self._owners.clear()


pool = BufferPool()
