"""The implementations timed side by side, each as a no-argument call on prepared inputs.

- ``fusedloss``: the functional op inside a ``tf.function``, as Keras calls a loss; below
  ``fusedloss.min_fused_size()`` elements it runs as TensorFlow ops by design.
- ``bridge``: the same, traced with ``min_fused_size = 0``, so the fused kernel runs
  through the TensorFlow bridge at every size (to find the crossover).
- ``kernel``: the bare CPU launcher, NumPy in, NumPy out, into reused output buffers:
  the bridge's lower bound. Under reduction ``mean`` it writes the gradient of the mean
  (``grad_scale = 1 / n``), as the bridge's forward does.
- ``empty-bridge``: a ``tf.function`` holding one ``tf.numpy_function`` with the bridge's
  inputs and outputs that does nothing (it returns the kernel's outputs, computed once
  beforehand): the cost of TensorFlow's round trip to Python, which no bridge avoids.
  ``bridge`` minus ``empty-bridge`` is fusedloss's own cost per call.
- ``fusedloss-xla``: the functional op inside ``tf.function(jit_compile=True)``, where
  fusedloss runs its TensorFlow-ops path (the formula and its derived slope in one
  ``tf.custom_gradient`` forward, which XLA fuses): compare with ``tf-xla``.
- ``tf-eager``, ``tf-function``, ``tf-xla``: the native TensorFlow equivalent, eagerly,
  in ``tf.function`` and in ``tf.function(jit_compile=True)``.

Modes: ``fwd`` returns the per-sample loss; ``fwd+bwd`` returns it and the gradient
w.r.t. ``y_pred`` from ``tf.GradientTape`` of the per-sample loss (reduction ``none``:
upstream 1) or of its mean (reduction ``mean``: Keras's default, upstream 1 / batch).
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

PROVIDERS = ("fusedloss", "bridge", "kernel", "empty-bridge", "fusedloss-xla", "tf-eager", "tf-function", "tf-xla")
NATIVE_PROVIDERS = ("tf-eager", "tf-function", "tf-xla")
MODES = ("fwd", "fwd+bwd")


class Prepared(NamedTuple):
    """``call()`` runs once; ``results()`` turns its return value into NumPy
    ``(loss, grad)`` (``grad`` None in ``fwd`` mode). ``path``: ``"fused"`` when the
    fused kernel runs, ``"tf-ops"`` when TensorFlow ops do, ``"native"`` for the
    native providers."""

    call: object
    results: object
    path: str


def _tf_objective(loss_fn, mode, reduction):
    def forward(y_true, y_pred):
        return loss_fn(y_true, y_pred)

    def forward_backward(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = loss_fn(y_true, y_pred)
            objective = tf.reduce_mean(loss) if reduction == "mean" else loss
        return loss, tape.gradient(objective, y_pred)

    return forward if mode == "fwd" else forward_backward


def _tf_results(mode):
    if mode == "fwd":
        return lambda loss: (loss.numpy(), None)
    return lambda outputs: (outputs[0].numpy(), outputs[1].numpy())


def _prepare_tf(provider, spec, mode, reduction, y_true, y_pred, params):
    import fusedloss

    if provider in ("fusedloss", "bridge", "fusedloss-xla"):
        op = getattr(fusedloss, spec.name)

        def loss_fn(t, p):
            return op(t, p, *params)

    else:
        tf_params = [tf.constant(p) if isinstance(p, np.ndarray) else p for p in params]

        def loss_fn(t, p):
            return spec.native(t, p, *tf_params)

    body = _tf_objective(loss_fn, mode, reduction)
    if provider == "tf-eager":
        function = body
    else:
        function = tf.function(body, jit_compile=provider in ("tf-xla", "fusedloss-xla"))
    y_true, y_pred = tf.constant(y_true), tf.constant(y_pred)
    path = "native" if provider != "fusedloss-xla" else "tf-ops"
    if provider in ("fusedloss", "bridge"):
        # Traced now (for "bridge" with the threshold at 0); later calls reuse the trace.
        previous = fusedloss.set_min_fused_size(0) if provider == "bridge" else None
        try:
            graph = function.get_concrete_function(y_true, y_pred).graph
        finally:
            if provider == "bridge":
                fusedloss.set_min_fused_size(previous)
        path = "fused" if _runs_a_kernel(graph) else "tf-ops"
    return Prepared(lambda: function(y_true, y_pred), _tf_results(mode), path)


def _runs_a_kernel(graph):
    """Whether a traced graph calls Python (``numpy_function``/``py_function``): the
    only way fusedloss reaches its kernels; TensorFlow ops never do."""
    return any(op.type in ("PyFunc", "PyFuncStateless", "EagerPyFunc") for op in graph.get_operations())


def _prepare_kernel(spec, mode, reduction, y_true, y_pred, params):
    from fusedloss.kernels import cpu
    from fusedloss.kernels.layout import grad_scale

    from .specs import kernel_params

    launcher = getattr(cpu, spec.kernel_name)
    params = kernel_params(spec, params)
    options = {"with_grad": mode == "fwd+bwd"}
    loss_out, grad_out = launcher(y_true, y_pred, *params, **options)
    expected_upstream = "mean" if reduction == "mean" else "ones"
    options["grad_scale"] = grad_scale(expected_upstream, loss_out.size, y_pred.dtype)

    def call():
        return launcher(y_true, y_pred, *params, loss_out=loss_out, grad_out=grad_out, **options)

    return Prepared(call, lambda outputs: (np.array(outputs[0]), None if outputs[1] is None else np.array(outputs[1])), "fused")


def _prepare_empty_bridge(spec, mode, reduction, y_true, y_pred, params):
    from fusedloss.buffers import pool

    kernel = _prepare_kernel(spec, mode, reduction, y_true, y_pred, params)
    outputs = []
    for array in kernel.call():
        if array is not None:  # 64-byte aligned, as the bridge's: TensorFlow takes it without a copy
            outputs.append(pool.take(array.shape, array.dtype))
            outputs[-1][...] = array
    dtype = tf.as_dtype(y_pred.dtype)

    @tf.function
    def function(t, p):
        results = tf.numpy_function(lambda *inputs: outputs, [t, p], [dtype] * len(outputs), stateful=False)
        return results[0] if mode == "fwd" else tuple(results)

    y_true, y_pred = tf.constant(y_true), tf.constant(y_pred)
    return Prepared(lambda: function(y_true, y_pred), _tf_results(mode), "empty")


def prepare(provider, spec, mode, reduction, y_true, y_pred, params):
    """A ``Prepared`` call of ``spec`` by ``provider`` on these NumPy inputs."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    if provider == "kernel":
        return _prepare_kernel(spec, mode, reduction, y_true, y_pred, params)
    if provider == "empty-bridge":
        return _prepare_empty_bridge(spec, mode, reduction, y_true, y_pred, params)
    return _prepare_tf(provider, spec, mode, reduction, y_true, y_pred, params)


def assert_close(what, actual, expected, tolerance):
    """Raise ``AssertionError`` saying where and by how much ``actual`` is off.

    NaN anywhere counts as off: the inputs the suite generates never produce one.
    """
    actual = np.asarray(actual, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape}, expected {expected.shape}")
    if expected.size == 0:
        return
    scale = float(np.max(np.abs(expected)))
    # In place: at 1e7 elements each float64 temporary is 80 MB.
    error = np.subtract(actual, expected)
    np.abs(error, out=error)
    allowed = np.abs(expected)
    allowed *= tolerance.rtol
    allowed += tolerance.atol * scale
    bad = ~(error <= allowed)
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(error, nan=np.inf), -1.0)), error.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values off the float64 reference "
            f"(rtol={tolerance.rtol:g}, atol={tolerance.atol:g} x max|ref|={scale:.3g}); worst at "
            f"{tuple(int(i) for i in worst)}: {actual[worst]!r} vs {expected[worst]!r}"
        )
