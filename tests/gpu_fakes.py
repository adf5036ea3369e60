"""Host memory standing in for GPU memory, so the GPU bridge runs on CPU tensors.

``gpu_bridge.on_gpu`` calls every device a GPU and ``gpu_bridge._device_arrays``
views TensorFlow's host buffers as CUDA-simulator device arrays. Everything else is
the real code: TensorFlow allocates the outputs, DLPack describes the buffers, and
the simulated kernel writes straight into TensorFlow's tensors.
"""

import ctypes
import math

import numpy as np
import tensorflow as tf
from numba import cuda

from fusedloss import gpu_bridge
from fusedloss.kernels import cuda as cuda_kernels


def route_through_host(monkeypatch, loss_name="huber"):
    """Apply the fakes; return the log of allocations, synchronisations and launches
    of ``loss_name``, in order."""
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "cuda")  # the simulator counts when named
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(gpu_bridge, "on_gpu", lambda device: True)
    monkeypatch.setattr(gpu_bridge, "last_launch", None)
    events = []
    capsules = []  # what the real path keeps alive through numba's array owner

    def host_views(buffers):
        from numba.cuda.cudadrv.devicearray import FakeCUDAArray  # the simulator's

        views = []
        for buffer in buffers:
            dtype = np.dtype(buffer.interface["typestr"])
            shape = buffer.interface["shape"]
            memory = (ctypes.c_char * (math.prod(shape) * dtype.itemsize)).from_address(buffer.pointer)
            views.append(FakeCUDAArray(np.frombuffer(memory, dtype).reshape(shape)))
            capsules.append(buffer.capsule)
        return views

    monkeypatch.setattr(gpu_bridge, "_device_arrays", host_views)
    real_empty, real_launcher = tf.raw_ops.Empty, getattr(cuda_kernels, loss_name)

    def empty(**kwargs):
        events.append("allocate")
        return real_empty(**kwargs)

    def launcher(*args, **kwargs):
        events.append("launch")
        return real_launcher(*args, **kwargs)

    monkeypatch.setattr(tf.raw_ops, "Empty", empty)
    monkeypatch.setattr(cuda_kernels, loss_name, launcher)
    monkeypatch.setattr(cuda, "synchronize", lambda: events.append("synchronize"))
    return events
