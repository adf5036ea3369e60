"""The GPU bridge's logic, without a GPU.

What needs real device memory is replaced by host memory (``gpu_fakes``); the
pointers then prove that the kernel read and wrote TensorFlow's own buffers.
"""

import importlib
import math
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf
from tests.gpu_fakes import route_through_host

import fusedloss
from fusedloss import gpu_bridge
from fusedloss.kernels import cuda as cuda_kernels
from fusedloss.kernels import reference

# The module: the package's ``backend`` attribute is the function of that name.
backend_module = importlib.import_module("fusedloss.backends")


# ---------------------------------------------------------------------------------
# DLPack description of TensorFlow's buffers


@pytest.mark.parametrize("shape", [(7,), (41, 401), (2, 3, 5), (0, 3), ()])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_describe_points_at_the_tensors_own_memory(shape, dtype):
    tensor = tf.random.normal(shape, dtype=dtype)
    buffer = gpu_bridge.describe(tensor)
    assert buffer.device_type == gpu_bridge.DLPACK_CPU and buffer.device_id == 0
    assert buffer.interface["shape"] == shape
    assert buffer.interface["typestr"] == ("<f4" if dtype == tf.float32 else "<f8")
    assert buffer.interface["strides"] is None and buffer.interface["version"] == 3
    if math.prod(shape):
        # NumPy, an independent DLPack consumer, finds the same address.
        assert buffer.pointer == np.from_dlpack(tensor).ctypes.data


def test_describe_refuses_other_dtypes():
    with pytest.raises(TypeError, match="float32, float64, int32 or int64 tensors, got uint8"):
        gpu_bridge.describe(tf.constant([1, 2, 3], tf.uint8))


@pytest.mark.parametrize("dtype, typestr", [(tf.int32, "<i4"), (tf.int64, "<i8")])
def test_describe_takes_integer_labels(dtype, typestr):
    labels = tf.constant([[1, 2, 3]], dtype)
    buffer = gpu_bridge.describe(labels)
    assert buffer.interface["typestr"] == typestr and buffer.interface["shape"] == (1, 3)
    assert buffer.pointer == np.from_dlpack(labels).ctypes.data


def test_device_arrays_refuse_host_memory():
    with pytest.raises(ValueError, match="expected CUDA device memory, got DLPack device type 1"):
        gpu_bridge._device_arrays([gpu_bridge.describe(tf.constant([1.0]))])


# ---------------------------------------------------------------------------------
# Choosing the path at trace time


class Placement(NamedTuple):
    requested: str
    device: str
    tf_sees_gpu: bool
    cuda_usable: bool
    expected: object  # True, False or an exception type


GPU = "/job:localhost/replica:0/task:0/device:GPU:0"
CPU = "/job:localhost/replica:0/task:0/device:CPU:0"
PLACEMENTS = [
    Placement("auto", GPU, True, True, True),
    Placement("auto", "/GPU:1", True, True, True),
    Placement("auto", CPU, True, True, False),  # host tensors run the CPU kernels
    Placement("auto", GPU, True, False, False),  # numba-cuda unusable: CPU kernels, silently
    Placement("auto", "", True, True, True),  # unplaced in a graph: TF puts it on the GPU
    Placement("auto", "", False, True, False),
    Placement("cpu", GPU, True, True, False),  # forced: TensorFlow copies to the host
    Placement("cuda", GPU, True, True, True),
    Placement("cuda", CPU, True, True, False),  # forced on host tensors: numpy_function + CUDA launcher
    Placement("cuda", GPU, True, False, RuntimeError),
]


class FakeTensor(NamedTuple):
    device: str


@pytest.mark.parametrize("case", PLACEMENTS, ids=lambda c: f"{c.requested}-{c.device or 'unplaced'}-{c.tf_sees_gpu}-{c.cuda_usable}")
def test_wanted_follows_the_tensors_device_and_the_override(monkeypatch, case):
    monkeypatch.setenv("FUSEDLOSS_BACKEND", case.requested)
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0")
    reason = None if case.cuda_usable else "numba-cuda found no usable GPU: no driver"
    monkeypatch.setattr(backend_module, "_cuda_unusable_reason", lambda: reason)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind: ["GPU:0"] if case.tf_sees_gpu else [])
    if isinstance(case.expected, type):
        with pytest.raises(case.expected, match="FUSEDLOSS_BACKEND=cuda but numba-cuda found no usable GPU"):
            gpu_bridge.wanted(FakeTensor(case.device))
    else:
        assert gpu_bridge.wanted(FakeTensor(case.device)) is case.expected


@pytest.mark.parametrize(
    "device, expected",
    [(GPU, True), ("/GPU:0", True), ("gpu:1", True), ("/device:GPU:3", True), (CPU, False), ("", False), (None, False), ("/job:gpuworker/device:CPU:0", False)],
)
def test_on_gpu_reads_tensorflow_device_names(device, expected):
    assert backend_module.on_gpu(device) is expected


def test_backend_without_a_device_keeps_its_meaning(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "auto")
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0")
    monkeypatch.setattr(backend_module, "_cuda_unusable_reason", lambda: None)
    assert backend_module.backend() == "cuda" and backend_module.backend(CPU) == "cpu"
    assert backend_module.kernels(CPU).__name__ == "fusedloss.kernels.cpu"


def test_cpu_tensors_keep_the_numpy_function_path(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "auto")
    graph = tf.function(fusedloss.huber).get_concrete_function(tf.zeros((4, 3)), tf.zeros((4, 3))).graph
    kinds = {op.type for op in graph.get_operations()}
    assert "PyFuncStateless" in kinds and "EagerPyFunc" not in kinds


# ---------------------------------------------------------------------------------
# The GPU path end to end, on host memory standing in for device memory


@pytest.fixture
def host_as_gpu(monkeypatch):
    return route_through_host(monkeypatch)


class Case(NamedTuple):
    shape: tuple
    dtype: object
    rtol: float
    atol: float


CASES = [
    Case((5, 7), tf.float32, 2e-6, 1e-6),
    Case((2, 3, 33), tf.float64, 1e-12, 1e-14),  # rank 3, block per row
    Case((9,), tf.float32, 2e-6, 1e-6),  # one row
    Case((6, 1), tf.float16, 1e-3, 1e-3),  # computed in float32, returned in float16
]


def random_pair(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(size=shape), dtype), tf.constant(3 * rng.normal(size=shape), dtype)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.shape}-{c.dtype.name}")
@pytest.mark.parametrize("scale", [1.0, 2.0], ids=["upstream-1", "upstream-2"])
@pytest.mark.parametrize("objective", ["sum", "mean"])
def test_eager_values_gradients_and_no_copies(host_as_gpu, case, scale, objective):
    y_true, y_pred = random_pair(case.shape, case.dtype)
    reduce = tf.reduce_sum if objective == "sum" else tf.reduce_mean
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = fusedloss.huber(y_true, y_pred, delta=1.5, expected_upstream="ones" if objective == "sum" else "mean")
        reduced = reduce(loss) * scale if scale != 1.0 else reduce(loss)
    grad = tape.gradient(reduced, y_pred)

    want_loss, want_grad = reference.huber(y_true.numpy(), y_pred.numpy(), 1.5)
    grad_factor = scale / (1 if objective == "sum" else max(want_loss.size, 1))
    assert loss.dtype == case.dtype and grad.dtype == case.dtype
    np.testing.assert_allclose(loss.numpy(), want_loss, rtol=case.rtol, atol=case.atol)
    np.testing.assert_allclose(
        grad.numpy(), grad_factor * want_grad, rtol=case.rtol, atol=grad_factor * case.atol / case.shape[-1]
    )
    native = keras.losses.huber(y_true, y_pred, delta=1.5)
    np.testing.assert_allclose(loss.numpy(), native.numpy(), rtol=max(case.rtol, 1e-6), atol=case.atol)

    assert host_as_gpu == ["allocate", "allocate", "synchronize", "launch", "synchronize"]
    launch = gpu_bridge.last_launch
    assert launch.loss_name == "huber"
    if case.dtype != tf.float16 and scale == 1.0:
        # The kernel read the caller's tensor and wrote the tensors the caller got: the
        # gradient for the expected upstream, with no backward pass of its own.
        assert launch.pointers["y_pred"] == gpu_bridge.describe(y_pred).pointer
        assert launch.pointers["loss"] == gpu_bridge.describe(loss).pointer
        assert launch.pointers["grad"] == gpu_bridge.describe(grad).pointer


def test_inside_tf_function_with_keras_loss_class(host_as_gpu):
    y_true, y_pred = random_pair((4, 6), tf.float32, seed=3)
    loss_object = fusedloss.Huber(delta=0.7)

    @tf.function
    def step(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = loss_object(y_true, y_pred)
        return loss, tape.gradient(loss, y_pred)

    loss, grad = step(y_true, y_pred)
    native = keras.losses.Huber(delta=0.7)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        want = native(y_true, y_pred)
    np.testing.assert_allclose(loss.numpy(), want.numpy(), rtol=2e-6)
    np.testing.assert_allclose(grad.numpy(), tape.gradient(want, y_pred).numpy(), rtol=2e-6, atol=1e-8)
    graph = step.get_concrete_function(y_true, y_pred).graph
    assert "EagerPyFunc" in {op.type for op in graph.get_operations()}
    assert gpu_bridge.last_launch is not None


def test_inputs_are_left_alone(host_as_gpu):
    y_true, y_pred = random_pair((3, 5), tf.float32, seed=4)
    before = y_true.numpy().copy(), y_pred.numpy().copy()
    fusedloss.huber(y_true, y_pred)
    np.testing.assert_array_equal(y_true.numpy(), before[0])
    np.testing.assert_array_equal(y_pred.numpy(), before[1])


def test_each_call_gets_fresh_outputs(host_as_gpu):
    y_true, y_pred = random_pair((3, 5), tf.float32, seed=5)
    first = fusedloss.huber(y_true, y_pred)
    kept = first.numpy().copy()
    second = fusedloss.huber(y_true, y_pred * 2.0)
    assert gpu_bridge.describe(first).pointer != gpu_bridge.describe(second).pointer
    np.testing.assert_array_equal(first.numpy(), kept)


def test_zero_columns_give_nan_without_a_launch(host_as_gpu):
    loss = fusedloss.huber(tf.zeros((3, 0)), tf.zeros((3, 0)))
    assert loss.shape == (3,) and np.isnan(loss.numpy()).all()
    assert "launch" not in host_as_gpu


def test_no_tensors_are_kept_for_a_gradient_nobody_asks_for(host_as_gpu):
    script_ops = pytest.importorskip("tensorflow.python.ops.script_ops")
    before = len(script_ops.tape_cache)
    y_true, y_pred = random_pair((3, 5), tf.float32, seed=6)
    for _ in range(3):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = fusedloss.huber(y_true, y_pred)
        tape.gradient(loss, y_pred)
    assert len(script_ops.tape_cache) == before


@pytest.mark.parametrize("expected_upstream, grad_scale", [("ones", 1.0), ("mean", 1 / 4)])
def test_an_op_placed_on_the_host_after_all_runs_the_cpu_kernels(monkeypatch, expected_upstream, grad_scale):
    monkeypatch.setenv("FUSEDLOSS_BACKEND", "auto")
    y_true, y_pred = random_pair((4, 9), tf.float64, seed=7)
    loss, grad = gpu_bridge._run_on_device("huber", (1.0,), 1, expected_upstream, y_true, y_pred)
    want_loss, want_grad = reference.huber(y_true.numpy(), y_pred.numpy(), 1.0)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, grad_scale * want_grad, rtol=1e-12)


# ---------------------------------------------------------------------------------
# The softmax cross-entropies take the same path (integer labels included)


class SoftmaxCase(NamedTuple):
    kernel: str
    function: object  # fusedloss's functional form
    keras_function: object
    kwargs: dict
    sparse: bool


SOFTMAX_CASES = [
    SoftmaxCase("softmax_cross_entropy", fusedloss.categorical_crossentropy, keras.losses.categorical_crossentropy,
                {"from_logits": True, "label_smoothing": 0.1}, False),
    SoftmaxCase("sparse_softmax_cross_entropy", fusedloss.sparse_categorical_crossentropy,
                keras.losses.sparse_categorical_crossentropy, {"from_logits": True, "ignore_class": -1}, True),
    SoftmaxCase("categorical_focal_cross_entropy", fusedloss.categorical_focal_crossentropy,
                keras.losses.categorical_focal_crossentropy, {"from_logits": True, "alpha": 0.5, "gamma": 1.5}, False),
]


@pytest.mark.parametrize("case", SOFTMAX_CASES, ids=lambda c: c.kernel)
def test_softmax_cross_entropies_run_their_cuda_kernels(monkeypatch, case):
    events = route_through_host(monkeypatch, case.kernel)
    assert gpu_bridge.has_kernel(case.kernel)
    rng = np.random.default_rng(9)
    logits = tf.constant(3 * rng.normal(size=(3, 7)), tf.float32)
    if case.sparse:
        y_true = tf.constant([2, -1, 6], tf.int64)  # the middle one ignored
    else:
        y_true = tf.constant(rng.dirichlet(np.ones(7), size=3), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        loss = case.function(y_true, logits, **case.kwargs, expected_upstream="ones")
        want = case.keras_function(y_true, logits, **case.kwargs)
        if case.sparse:  # Keras masks the ignored entry; its gradient there is 0 too
            want = tf.where(tf.not_equal(y_true, -1), want, 0.0)
    grad, want_grad = tape.gradient(loss, logits), tape.gradient(want, logits)
    np.testing.assert_allclose(loss.numpy(), want.numpy(), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(grad.numpy(), want_grad.numpy(), rtol=2e-5, atol=1e-6)
    assert events == ["allocate", "allocate", "synchronize", "launch", "synchronize"]
    launch = gpu_bridge.last_launch
    assert launch.loss_name == case.kernel
    assert launch.pointers["loss"] == gpu_bridge.describe(loss).pointer
    assert launch.pointers["grad"] == gpu_bridge.describe(grad).pointer
