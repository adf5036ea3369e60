"""The only bridge between TensorFlow and the kernels.

Each public function here returns the per-sample loss (the mean over the last axis,
as Keras losses do) and is differentiable with respect to ``y_pred``. Its forward
calls one fused kernel through ``tf.numpy_function`` that writes the loss *and* the
gradient; its backward only rescales that saved gradient by the upstream gradient,
and skips even that when the upstream is exactly 1.

Inside an XLA-compiled function, where ``tf.numpy_function`` cannot run, the same
math is computed with TensorFlow ops instead (XLA fuses them itself).
"""

import functools
import math

import numpy as np
import tensorflow as tf

from . import backends
from .backends import kernels as backend_kernels
from .buffers import pool


# ---------------------------------------------------------------------------------
# Input checks shared by every loss


def check_parameter(name, value, minimum=0.0, inclusive=False):
    """Return ``value`` as a float, or raise ``ValueError`` naming it and the range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(number) or number < minimum or (number == minimum and not inclusive):
        bound = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be finite and {bound} {minimum}, got {value!r}")
    return number


def _match_rank(y_true, y_pred):
    """Keras's rule: a trailing axis of size 1 on one side only is squeezed, or added to
    a rank-1 ``y_true``, so ``(batch,)`` labels meet ``(batch, 1)`` predictions."""
    true_rank, pred_rank = y_true.shape.rank, y_pred.shape.rank
    if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        return tf.squeeze(y_true, axis=-1), y_pred
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            return tf.expand_dims(y_true, axis=-1), y_pred
        return y_true, tf.squeeze(y_pred, axis=-1)
    return y_true, y_pred


def prepare(y_true, y_pred):
    """Convert to tensors the way Keras losses do and check shapes.

    ``y_pred`` keeps its floating dtype (integers become ``floatx``); ``y_true`` is cast
    to it (integer and boolean labels included). Raises ``ValueError`` for a scalar
    ``y_pred`` or for shapes that differ, naming both.
    """
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        y_pred = tf.cast(y_pred, tf.keras.backend.floatx())
    y_true = tf.cast(tf.convert_to_tensor(y_true), y_pred.dtype)
    if y_pred.shape.rank == 0:
        raise ValueError("y_pred must have rank >= 1 (the loss averages the last axis), got a scalar")
    y_true, y_pred = _match_rank(y_true, y_pred)
    if not y_true.shape.is_compatible_with(y_pred.shape):
        raise ValueError(
            f"y_true and y_pred must have the same shape, got y_true {y_true.shape} "
            f"and y_pred {y_pred.shape}"
        )
    return y_true, y_pred


# ---------------------------------------------------------------------------------
# The bridge


def _in_xla_context():
    """True while tracing inside ``tf.function(jit_compile=True)``.

    TensorFlow has no public way to ask; the private helper has been stable for years.
    If it moves, answer False: the fused path then fails loudly under XLA rather than
    silently computing something else.
    """
    try:
        from tensorflow.python.framework import ops as framework_ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - depends on TF internals
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(framework_ops.get_default_graph()))


def _compute_dtype(dtype):
    # numba has no half types: float16 and bfloat16 are computed in float32.
    return tf.float64 if dtype == tf.float64 else tf.float32


def _gradient_may_be_recorded():
    """True when a gradient tape is recording here (eagerly or while tracing).

    Private TF API, guarded: if it moves, assume a tape, which only costs the work of
    computing a gradient nobody asks for.
    """
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - depends on TF internals
        return True
    return bool(record.could_possibly_record())


def _run_kernel(loss_name, params, with_grad, y_true, y_pred):
    """Host side of ``tf.numpy_function``: run one fused kernel into pooled buffers.

    ``y_true``/``y_pred`` may be views of TensorFlow's memory: they are only read.
    Returns ``[loss, grad]``, or ``[loss]`` from the loss-only kernel.
    """
    launcher = getattr(backend_kernels(), loss_name)
    dtype = y_pred.dtype
    loss_out = pool.take(y_pred.shape[:-1], dtype)
    grad_out = pool.take(y_pred.shape, dtype) if with_grad else None
    loss, grad = launcher(y_true, y_pred, *params, with_grad=with_grad, loss_out=loss_out, grad_out=grad_out)
    return [loss, grad] if with_grad else [loss]


def _call_kernel(loss_name, params, with_grad, y_true, y_pred):
    """``tf.numpy_function`` around ``_run_kernel``, with static output shapes."""
    outputs = tf.numpy_function(
        functools.partial(_run_kernel, loss_name, params, with_grad),
        [y_true, y_pred],
        [y_pred.dtype] * (2 if with_grad else 1),
        stateful=False,
        name=f"fused_{loss_name}",
    )
    if not with_grad:  # numpy_function returns a lone output as a tensor, not a list
        outputs = [outputs] if isinstance(outputs, tf.Tensor) else list(outputs)
    outputs[0].set_shape(y_pred.shape[:-1])
    if with_grad:
        outputs[1].set_shape(y_pred.shape)
    return outputs


def rescale(upstream, saved_grad):
    """``upstream[..., None, ...] * saved_grad``, or ``saved_grad`` itself when every
    upstream value is exactly 1 (``tape.gradient`` of an unreduced loss)."""
    upstream = tf.cast(upstream, saved_grad.dtype)
    return tf.cond(
        tf.reduce_all(tf.equal(upstream, 1)),
        lambda: tf.identity(saved_grad),
        lambda: _scaled(upstream, saved_grad),
    )


def _scaled(upstream, saved_grad):
    if backends.backend() == "cpu":
        return _scale_rows_on_host(upstream, saved_grad)
    expanded = tf.reshape(
        upstream,
        tf.concat([tf.shape(upstream), tf.ones([saved_grad.shape.rank - upstream.shape.rank], tf.int32)], 0),
    )
    return expanded * saved_grad


def _scale_rows_into_pool(upstream, saved_grad):
    from .kernels import cpu

    return cpu.scale_rows(upstream, saved_grad, pool.take(saved_grad.shape, saved_grad.dtype))


def _scale_rows_on_host(upstream, saved_grad):
    """``upstream[..., None] * saved_grad`` by a CPU kernel writing a pooled buffer.

    Why not TensorFlow's multiply: its output is fresh memory every step, and above
    glibc's 32 MiB mmap threshold every page of it faults on first write: at 1e7
    float32 the multiply took longer than the fused forward pass itself.
    """
    scaled = tf.numpy_function(_scale_rows_into_pool, [upstream, saved_grad], saved_grad.dtype, stateful=False)
    scaled.set_shape(saved_grad.shape)
    return scaled


def fused_loss(loss_name, y_true, y_pred, params):
    """Per-sample loss of ``kernels.<backend>.<loss_name>``, differentiable in ``y_pred``.

    ``params`` are passed positionally to the launcher after ``y_true, y_pred``.

    Under a recording gradient tape the forward runs the fused kernel and saves the
    gradient. Without one (evaluate, predict-time metrics) it runs the loss-only kernel
    and saves nothing; should that graph be differentiated after all (a ``tf.function``
    traced without a tape, later called under one), the backward runs the fused kernel
    once to get the gradient, so the answer is right either way.
    """
    with_grad = _gradient_may_be_recorded()

    @tf.custom_gradient
    def loss_and_saved_grad(y_true, y_pred):
        compute_dtype = _compute_dtype(y_pred.dtype)
        kernel = (loss_name, params)
        computed = (tf.cast(y_true, compute_dtype), tf.cast(y_pred, compute_dtype))
        outputs = _call_kernel(*kernel, with_grad, *computed)

        def backward(upstream):
            grad = outputs[1] if with_grad else _call_kernel(*kernel, True, *computed)[1]
            return None, tf.cast(rescale(upstream, grad), y_pred.dtype)

        return tf.cast(outputs[0], y_pred.dtype), backward

    return loss_and_saved_grad(y_true, y_pred)


# ---------------------------------------------------------------------------------
# Huber


def _huber_composite(y_true, y_pred, delta):
    """Huber with TensorFlow ops, for XLA: the same formula as ``kernels.math.huber``."""
    error = y_pred - y_true
    abs_error = tf.abs(error)
    delta = tf.cast(delta, y_pred.dtype)
    values = tf.where(abs_error <= delta, 0.5 * tf.square(error), delta * abs_error - 0.5 * delta * delta)
    return tf.reduce_mean(values, axis=-1)


def huber(y_true, y_pred, delta=1.0):
    """Per-sample Huber loss, computed with its gradient in one fused pass.

    Formula (per element, ``e = y_pred - y_true``), then the mean over the last axis::

        loss = 0.5 * e**2                     if |e| <= delta
               delta * |e| - 0.5 * delta**2   otherwise

    Args:
        y_true: labels, any numeric dtype (cast to ``y_pred``'s), shape of ``y_pred``.
        y_pred: predictions, float tensor of rank >= 1.
        delta: where the loss turns from quadratic to linear; finite and > 0.

    Example:
        >>> fusedloss.huber([[0.0, 1.0]], [[0.5, 3.0]], delta=1.0)  # [(0.125 + 1.5) / 2]

    Returns:
        The loss per sample: a tensor of shape ``y_pred.shape[:-1]``, the same values
        and gradients as ``keras.losses.huber``.
    """
    delta = check_parameter("delta", delta)
    y_true, y_pred = prepare(y_true, y_pred)
    if _in_xla_context():
        return _huber_composite(y_true, y_pred, delta)
    return fused_loss("huber", y_true, y_pred, (delta,))


# ---------------------------------------------------------------------------------
# Weighted sigmoid cross-entropy


def check_pos_weight(pos_weight):
    """``pos_weight`` as a float, or as a tuple of floats (one per class); raise
    ``ValueError`` for anything else, a negative or non-finite weight included."""
    try:
        weights = np.asarray(pos_weight, np.float64)
    except (TypeError, ValueError, NotImplementedError):  # NotImplementedError: a symbolic tensor
        raise ValueError(f"pos_weight must be a number or a 1-D sequence of numbers, got {pos_weight!r}") from None
    if weights.ndim == 0:
        return check_parameter("pos_weight", pos_weight, minimum=0.0, inclusive=True)
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"pos_weight must be a number or a non-empty 1-D sequence of numbers, got shape {weights.shape}")
    return tuple(check_parameter(f"pos_weight[{i}]", float(weight), minimum=0.0, inclusive=True) for i, weight in enumerate(weights))


def check_label_smoothing(label_smoothing):
    """``label_smoothing`` as a float in [0, 1], or ``ValueError`` naming it."""
    number = check_parameter("label_smoothing", label_smoothing, minimum=0.0, inclusive=True)
    if number > 1.0:
        raise ValueError(f"label_smoothing must be finite and in [0, 1], got {label_smoothing!r}")
    return number


def _check_class_count(pos_weight, y_pred):
    n_classes = y_pred.shape[-1]
    if isinstance(pos_weight, tuple) and n_classes is not None and n_classes != len(pos_weight):
        raise ValueError(
            f"pos_weight must have one weight per class: y_pred has {n_classes} classes (its last axis), "
            f"got {len(pos_weight)} weights"
        )


def _weighted_sigmoid_cross_entropy_composite(y_true, y_pred, pos_weight, label_smoothing):
    """The weighted sigmoid cross-entropy with TensorFlow ops, for XLA: the formula of
    ``kernels.math.weighted_sigmoid_cross_entropy``, whose autodiff is the analytic
    derivative (``softplus' = sigmoid``, smooth at 0)."""
    dtype = y_pred.dtype
    smoothing = tf.cast(label_smoothing, dtype)
    z = y_true * (1.0 - smoothing) + 0.5 * smoothing
    positive = tf.constant(pos_weight, dtype) * z
    negative = 1.0 - z
    values = positive * tf.nn.softplus(-y_pred) + negative * tf.nn.softplus(y_pred)
    # TensorFlow's own formula at -inf: (1 - z)(-inf) + l inf, NaN for labels in [0, 1].
    at_minus_inf = negative * y_pred - (positive + negative) * y_pred
    values = tf.where(tf.equal(y_pred, -math.inf), at_minus_inf, values)
    return tf.reduce_mean(values, axis=-1)


def weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight=1.0, label_smoothing=0.0):
    """Per-sample weighted sigmoid cross-entropy with logits, computed with its gradient
    in one fused pass.

    Formula (per element, ``x = y_pred``, ``q = pos_weight``, ``s = label_smoothing``,
    ``z = y_true (1 - s) + s / 2``, ``l = 1 + (q - 1) z``), then the mean over the last
    axis::

        loss = (1 - z) x + l (log(1 + exp(-|x|)) + max(-x, 0))
        d loss / dx = (1 - z) - l sigmoid(-x)

    the value of ``tf.nn.weighted_cross_entropy_with_logits(z, x, q)``, computed in a
    form where nothing overflows and large terms do not cancel.

    Args:
        y_true: labels in [0, 1], any numeric dtype (cast to ``y_pred``'s), shape of
            ``y_pred``.
        y_pred: logits, float tensor of rank >= 1.
        pos_weight: weight of the positive term: a number >= 0, or a sequence of them
            with one weight per class (the last axis).
        label_smoothing: in [0, 1]; labels are pulled towards 0.5 as in
            ``keras.losses.BinaryCrossentropy``.

    Example:
        >>> fusedloss.weighted_sigmoid_cross_entropy([[1.0, 0.0]], [[2.0, -1.0]], pos_weight=3.0)

    Returns:
        The loss per sample: a tensor of shape ``y_pred.shape[:-1]``, differentiable
        with respect to ``y_pred`` with the analytic derivative above.
    """
    pos_weight = check_pos_weight(pos_weight)
    label_smoothing = check_label_smoothing(label_smoothing)
    y_true, y_pred = prepare(y_true, y_pred)
    _check_class_count(pos_weight, y_pred)
    if _in_xla_context():
        return _weighted_sigmoid_cross_entropy_composite(y_true, y_pred, pos_weight, label_smoothing)
    kernel_weight = np.asarray(pos_weight, np.float64) if isinstance(pos_weight, tuple) else pos_weight
    return fused_loss("weighted_sigmoid_cross_entropy", y_true, y_pred, (kernel_weight, label_smoothing))
