"""The GPU path of the TensorFlow bridge: CUDA kernels on TensorFlow's own buffers.

``ops.fused_loss`` calls ``forward`` instead of its ``tf.numpy_function`` when
``wanted`` says the tensors are on a GPU that the CUDA kernels can use.

How: a ``tf.py_function`` placed on the tensors' GPU receives its inputs as eager
tensors in device memory. Its body asks TensorFlow for the two outputs, uninitialised,
on that device (the ``Empty`` op), views all four buffers as numba device arrays
through DLPack, launches the CUDA kernel on them and returns TensorFlow's two tensors.
Nothing goes through the host, and TensorFlow owns every buffer from start to end:
numba only borrows the pointers during the launch.

Why this route:

- ``tf.numpy_function`` always runs on the host: on a GPU, TensorFlow would copy
  every input to the host and every output back.
- DLPack is TensorFlow's only public way to a tensor's device pointer. TensorFlow
  hands out unversioned capsules and refuses any ``stream`` argument, which DLPack
  consumers (cuda.core, under numba's own launch path) may pass; so the capsule's
  ``DLTensor`` is read here with ctypes (its layout has not changed since DLPack 0.2)
  and turned into a ``__cuda_array_interface__``, which numba takes without copying.
  That uses only public TensorFlow and numba functions, and runs on CPU tensors too,
  which is how it is tested without a GPU.
- Outputs allocated by TensorFlow come out of TensorFlow's own memory pool, which by
  default holds nearly all of the GPU's memory: numba allocates nothing on this path
  (except a few kilobytes when rows are split, see ``kernels.cuda``), so TensorFlow's
  memory settings need no change, and no buffer ever passes from one framework's
  allocator to the other's.
- TensorFlow and numba both work in the device's primary CUDA context, so
  TensorFlow's pointers are valid in numba's kernels (``fusedloss.selfcheck`` checks
  it on a real GPU).

Stream ordering: TensorFlow does not expose its CUDA streams, and the kernel runs on
numba's stream. So the device is synchronised (``cuda.synchronize``: every stream
of the context) after the outputs are allocated and before the launch - the work
TensorFlow queued that writes the inputs, or still reads the memory the outputs were
given, is then finished - and again after the launch, so that TensorFlow, on its own
streams, reads finished outputs. Two synchronisations per forward pass are the price
of not knowing TensorFlow's stream; they stall TensorFlow's queue for the kernel's
duration.
"""

import contextlib
import ctypes
import functools
import math
import re
from typing import NamedTuple

import numpy as np
import tensorflow as tf

# Names, not the module: the package's ``backend`` attribute is the function.
from .backends import backend, on_gpu
from .kernels.layout import grad_scale
from .backends import kernels as backend_kernels

# DLPack constants (dlpack.h): device types and type codes.
DLPACK_CPU, DLPACK_CUDA = 1, 2
_DLPACK_INT, _DLPACK_FLOAT = 0, 2
# (type code, bits) -> __cuda_array_interface__ typestr: float32/float64 tensors, and
# the int32/int64 class labels of the sparse softmax cross-entropy.
_TYPESTRS = {(_DLPACK_FLOAT, 32): "<f4", (_DLPACK_FLOAT, 64): "<f8", (_DLPACK_INT, 32): "<i4", (_DLPACK_INT, 64): "<i8"}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    # The first member of the DLManagedTensor a "dltensor" capsule points to.
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


class Buffer(NamedTuple):
    """A tensor's memory as its DLPack capsule describes it."""

    interface: dict  # a __cuda_array_interface__ (version 3) for that memory
    device_type: int  # DLPACK_CPU or DLPACK_CUDA
    device_id: int
    capsule: object  # keeps TensorFlow's tensor alive while the pointer is in use

    @property
    def pointer(self):
        return self.interface["data"][0]


def describe(tensor):
    """The ``Buffer`` of an eager float32/float64 (or int32/int64) tensor, without
    copying anything.

    Raises ``TypeError`` for other dtypes and ``ValueError`` for a layout that is not
    dense row-major (TensorFlow never makes one).
    """
    capsule = tf.experimental.dlpack.to_dlpack(tensor)
    dl_tensor = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    dtype = dl_tensor.dtype
    typestr = _TYPESTRS.get((dtype.code, dtype.bits)) if dtype.lanes == 1 else None
    if typestr is None:
        raise TypeError(f"the GPU bridge takes float32, float64, int32 or int64 tensors, got {tensor.dtype.name}")
    shape = tuple(dl_tensor.shape[axis] for axis in range(dl_tensor.ndim))
    if dl_tensor.strides:
        strides = tuple(dl_tensor.strides[axis] for axis in range(dl_tensor.ndim))
        if strides != _row_major_strides(shape) and math.prod(shape) > 1:
            raise ValueError(f"expected a dense row-major tensor, got strides {strides} for shape {shape}")
    interface = {
        "shape": shape,
        "typestr": typestr,
        "data": ((dl_tensor.data or 0) + dl_tensor.byte_offset, False),
        "strides": None,
        "version": 3,
    }
    return Buffer(interface, dl_tensor.device.device_type, dl_tensor.device.device_id, capsule)


def _row_major_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _device_arrays(buffers):
    """numba device arrays on the buffers' GPU memory (no copy); call in the GPU's context."""
    from numba import cuda

    for buffer in buffers:
        if buffer.device_type != DLPACK_CUDA:
            raise ValueError(f"expected CUDA device memory, got DLPack device type {buffer.device_type}")
    return [cuda.from_cuda_array_interface(buffer.interface, owner=buffer.capsule, sync=False) for buffer in buffers]


class Launch(NamedTuple):
    """What the last GPU launch ran on; ``fusedloss.selfcheck`` compares pointers."""

    loss_name: str
    device_id: int
    pointers: dict  # "y_true", "y_pred", "loss", "grad" -> device address


last_launch = None


def wanted(y_pred):
    """Whether ``ops.fused_loss`` should take the GPU path for ``y_pred`` (trace time).

    An unplaced tensor (``device == ""`` in a ``tf.function``) goes where TensorFlow's
    placer puts ops: on the first GPU when TensorFlow sees one.
    """
    device = y_pred.device or ("/GPU:0" if tf.config.list_logical_devices("GPU") else "")
    return on_gpu(device) and backend(device) == "cuda"


def has_kernel(loss_name):
    """Whether ``kernels.cuda`` has a launcher for ``loss_name`` (every elementwise
    loss, the embedding pairs and the softmax cross-entropies); a loss without one
    takes the host path on a GPU (TensorFlow copies its inputs and outputs)."""
    from .kernels import cuda

    return hasattr(cuda, loss_name)


def forward(loss_name, params, y_true, y_pred, reduced_axes=1, expected_upstream="ones"):
    """``(loss, grad)`` of ``kernels.cuda.<loss_name>`` as a TensorFlow op on the GPU.

    ``y_true``/``y_pred``: float32 or float64 tensors (``y_true`` int64 labels for the
    sparse softmax cross-entropy); the loss has shape
    ``y_pred.shape[:-reduced_axes]``; the gradient is written for ``expected_upstream``
    (``ops.rescale``). The outputs' static shapes are left to the caller, as for
    ``tf.numpy_function``.
    """
    placement = tf.device(y_pred.device) if y_pred.device else contextlib.nullcontext()
    with placement, _tapes_paused():
        return tf.py_function(
            functools.partial(_run_on_device, loss_name, params, reduced_axes, expected_upstream),
            [y_true, y_pred],
            [y_pred.dtype, y_pred.dtype],
            name="fused_" + re.sub(r"[^A-Za-z0-9_.-]", "_", loss_name) + "_gpu",  # static variants have brackets
        )


def _tapes_paused():
    """Eager ``tf.py_function`` under an active gradient tape keeps its inputs and
    outputs in a module-level cache, for a gradient that ``tf.custom_gradient`` never
    asks for: a leak of four tensors per call. It does not when no tape records.

    TensorFlow has no public way to pause every tape; if the private one moves, the
    leak comes back rather than an error.
    """
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - depends on TF internals
        return contextlib.nullcontext()
    return record.stop_recording()


def _run_on_device(loss_name, params, reduced_axes, expected_upstream, y_true, y_pred):
    """Body of the ``tf.py_function``: eager tensors in, ``[loss, grad]`` out."""
    global last_launch
    n_losses = int(np.prod(y_pred.shape[: len(y_pred.shape) - reduced_axes], dtype=np.int64))
    scale = grad_scale(expected_upstream, n_losses, y_pred.dtype.as_numpy_dtype)
    if not on_gpu(y_pred.device):
        # TensorFlow placed the op on the host after all (e.g. soft placement).
        launcher = getattr(backend_kernels(y_pred.device), loss_name)
        return list(launcher(y_true.numpy(), y_pred.numpy(), *params, grad_scale=scale))
    with tf.device(y_pred.device):
        loss = tf.raw_ops.Empty(shape=tf.shape(y_pred)[:-reduced_axes], dtype=y_pred.dtype)
        grad = tf.raw_ops.Empty(shape=tf.shape(y_pred), dtype=y_pred.dtype)
        if y_pred.shape.num_elements() == 0:
            # No kernel to run: the mean of no columns is NaN, as in Keras.
            return [tf.fill(tf.shape(loss), tf.constant(np.nan, y_pred.dtype)), grad]

    from numba import cuda

    from .kernels import cuda as cuda_kernels

    buffers = [describe(tensor) for tensor in (y_true, y_pred, loss, grad)]
    device_id = buffers[1].device_id
    with cuda.gpus[device_id]:
        device_true, device_pred, loss_out, grad_out = _device_arrays(buffers)
        cuda.synchronize()
        launcher = getattr(cuda_kernels, loss_name)
        launcher(device_true, device_pred, *params, loss_out=loss_out, grad_out=grad_out, grad_scale=scale)
        cuda.synchronize()
    names = ("y_true", "y_pred", "loss", "grad")
    last_launch = Launch(loss_name, device_id, {name: buffer.pointer for name, buffer in zip(names, buffers)})
    return [loss, grad]
