"""The only bridge between TensorFlow and the kernels.

Each public function here returns the per-sample loss (the mean over the last axis,
as Keras losses do) and is differentiable with respect to ``y_pred``. Its forward
calls one fused kernel through ``tf.numpy_function`` that writes the loss *and* the
gradient, already multiplied by the upstream gradient it expects (``1 / n`` per
sample for the mean Keras takes by default, or 1); its backward returns that saved
gradient when the upstream is the expected one and otherwise rescales it.

Inside an XLA-compiled function, where ``tf.numpy_function`` cannot run, and for
inputs below ``backends.min_fused_size()`` elements, where the bridge's fixed cost
exceeds what fusing saves, the same math is computed with TensorFlow ops instead
(``dispatch``).

Tensors on a GPU take ``gpu_bridge.forward`` instead of ``tf.numpy_function``: the
CUDA kernel then runs on TensorFlow's device buffers without host copies.
"""

import functools
import math
import re
import warnings

import numpy as np
import tensorflow as tf

from . import gpu_bridge
from .backends import kernels as backend_kernels
from .backends import min_fused_size
from .buffers import pool
from .kernels.layout import grad_scale


# ---------------------------------------------------------------------------------
# Input checks shared by every loss

# The upstream gradient a fused forward expects for its per-sample losses, and writes
# its gradient already multiplied by: "mean" (1 / n each: a mean over the n losses, the
# default reduction of Keras losses) or "ones" (their sum, or the losses themselves).
EXPECTED_UPSTREAMS = ("mean", "ones")


def check_expected_upstream(expected_upstream):
    if expected_upstream not in EXPECTED_UPSTREAMS:
        raise ValueError(f"expected_upstream must be one of {EXPECTED_UPSTREAMS}, got {expected_upstream!r}")
    return expected_upstream


def check_parameter(name, value, minimum=0.0, inclusive=False):
    """Return ``value`` as a float, or raise ``ValueError`` naming it and the range."""
    try:
        if isinstance(value, (str, bytes)):  # float("1.0") would take it
            raise TypeError
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


def _run_kernel(loss_name, params, reduced_axes, with_grad, expected_upstream, y_true, y_pred):
    """Host side of ``tf.numpy_function``: run one fused kernel into pooled buffers.

    ``y_true``/``y_pred`` may be views of TensorFlow's memory: they are only read.
    Returns ``[loss, grad]``, or ``[loss]`` from the loss-only kernel. Host arrays run
    the CPU kernels unless ``FUSEDLOSS_BACKEND=cuda``.
    """
    launcher = getattr(backend_kernels("CPU"), loss_name)
    dtype = y_pred.dtype
    loss_out = pool.take(y_pred.shape[: y_pred.ndim - reduced_axes], dtype)
    grad_out = pool.take(y_pred.shape, dtype) if with_grad else None
    scale = grad_scale(expected_upstream, loss_out.size, dtype)
    loss, grad = launcher(
        y_true, y_pred, *params, with_grad=with_grad, loss_out=loss_out, grad_out=grad_out, grad_scale=scale
    )
    return [loss, grad] if with_grad else [loss]


def _call_kernel(loss_name, params, reduced_axes, with_grad, expected_upstream, y_true, y_pred):
    """The kernel as a TF op, with static output shapes: on the tensors' GPU through
    ``gpu_bridge`` (which always computes the gradient), else ``tf.numpy_function``
    around ``_run_kernel`` on the host."""
    if gpu_bridge.wanted(y_pred) and gpu_bridge.has_kernel(loss_name):
        outputs = list(gpu_bridge.forward(loss_name, params, y_true, y_pred, reduced_axes, expected_upstream))
    else:
        outputs = tf.numpy_function(
            functools.partial(_run_kernel, loss_name, params, reduced_axes, with_grad, expected_upstream),
            [y_true, y_pred],
            [y_pred.dtype] * (2 if with_grad else 1),
            stateful=False,
            # a TF op name: a static variant's brackets and "=" are not allowed in one
            name="fused_" + re.sub(r"[^A-Za-z0-9_.-]", "_", loss_name),
        )
        if not with_grad:  # numpy_function returns a lone output as a tensor, not a list
            outputs = [outputs] if isinstance(outputs, tf.Tensor) else list(outputs)
    outputs[0].set_shape(y_pred.shape[:-reduced_axes])
    if len(outputs) > 1:
        outputs[1].set_shape(y_pred.shape)
    return outputs


def _scale_saved_grad(upstream, saved_grad):
    """Host side of the backward pass: the product goes into a pooled buffer."""
    from .kernels import cpu

    return cpu.scale_rows(upstream, saved_grad, out=pool.take(saved_grad.shape, saved_grad.dtype))


# From this many upstream values (as many as the loss has), the backward asks the host
# whether they are all the expected one: TensorFlow's `equal` + `reduce_all` cost ~3 ms
# at 1e7 (narrow rows: a (1e7, 1) loss has 1e7 upstream values), the host ~1 ms plus a
# `numpy_function` round trip (~0.3 ms), which is why small upstreams stay in the graph.
HOST_CHECK_FROM = 1 << 18


def _rescale_on_host(expected, count, upstream, saved_grad):
    """Host side of ``rescale`` for large upstreams: ``saved_grad`` itself (no copy:
    TensorFlow wraps the same memory again) when every upstream value is ``expected``,
    else its product with ``upstream * count`` (``count`` None: with ``upstream``)."""
    from .kernels import cpu

    if cpu.all_equal(upstream, expected):
        return saved_grad
    factors = upstream.astype(saved_grad.dtype)
    if count is not None:
        factors *= saved_grad.dtype.type(count)
    return _scale_saved_grad(factors, saved_grad)


# Ops that move or repeat their first input's values without changing them.
_VALUE_PRESERVING_OPS = ("Identity", "Reshape", "Tile", "BroadcastTo", "ExpandDims", "Squeeze")
_UNIFORM_ARITHMETIC = {"RealDiv": np.divide, "Mul": np.multiply}


def _uniform_value(tensor, depth=8):
    """The value every element of ``tensor`` has, when the graph says so while tracing
    (constants, fills, and what repeats, casts, multiplies or divides them), else None.

    ``tape.gradient`` seeds an unreduced loss with a constant or ``Fill`` of 1, and the
    gradient of ``reduce_mean`` with static shapes is ``Tile(1) / n``: a backward that
    recognises its expected upstream here needs no check at run time, and TensorFlow
    then does not even compute the upstream (at 1e7 losses, two fresh 40 MB tensors).
    Arithmetic is NumPy's on scalars of the tensor's dtype, which rounds as
    TensorFlow's elementwise ops do.
    """
    op = getattr(tensor, "op", None)
    if op is None or depth == 0 or tensor.dtype not in (tf.float16, tf.float32, tf.float64):
        return None
    dtype = tensor.dtype.as_numpy_dtype
    if op.type in ("Const", "Fill"):
        value = tf.get_static_value(tensor if op.type == "Const" else op.inputs[1])
        if value is None or np.size(value) == 0:
            return None
        first = np.ravel(value)[0]
        return dtype(first) if np.all(value == first) else None
    if op.type == "OnesLike":
        return dtype(1)
    if op.type in _VALUE_PRESERVING_OPS:
        return _uniform_value(op.inputs[0], depth - 1)
    if op.type == "Cast":
        value = _uniform_value(op.inputs[0], depth - 1)
        return None if value is None else dtype(value)
    if op.type in _UNIFORM_ARITHMETIC:
        left, right = (_uniform_value(operand, depth - 1) for operand in op.inputs[:2])
        if left is None or right is None:
            return None
        with np.errstate(all="ignore"):
            return dtype(_UNIFORM_ARITHMETIC[op.type](dtype(left), dtype(right)))
    return None


def rescale(upstream, saved_grad, expected_upstream="ones"):
    """The gradient for ``upstream`` from ``saved_grad``, the gradient the forward wrote
    for ``expected_upstream``: ``saved_grad`` itself when every upstream value is the
    expected one, else ``upstream[..., None, ...] / expected * saved_grad``.

    The graph often shows it while tracing (``_uniform_value``: ``tape.gradient`` of an
    unreduced loss for "ones", of its ``reduce_mean`` with static shapes for "mean"):
    then no op at all; otherwise the choice is made per call. For "mean", the expected
    value is ``1 / n`` with ``n = size(upstream)``, computed as TensorFlow's
    ``reduce_mean`` and Keras's mean reduction compute their gradients, so those match
    exactly.

    On the host the product is a kernel writing into a pooled buffer, not a TensorFlow
    multiply: TensorFlow's fresh output for every step cost more than the whole fused
    forward (page faults; 150 ms for 1e5 x 2 x 128 float32 against 37 ms for the
    kernel). On a GPU it is a TensorFlow multiply, which stays on the device. From
    ``HOST_CHECK_FROM`` upstream values (static shape, traced) the host also makes the
    choice, in the same call: one ``numpy_function`` instead of TensorFlow's check.
    """
    known = _uniform_value(upstream)
    if known is not None and expected_upstream == "ones" and known == 1:
        return saved_grad
    if upstream.shape.is_fully_defined() and upstream.dtype in (tf.float32, tf.float64):
        # Known when tracing: constants instead of the ops that compute them per call
        # (1 / n correctly rounded in NumPy as in TensorFlow for these dtypes).
        n_values = upstream.shape.num_elements()
        dtype = upstream.dtype.as_numpy_dtype
        count = n_values if expected_upstream == "mean" else None
        expected_value = dtype(1) if count is None else dtype(1) / dtype(max(count, 1))
        if known == expected_value:
            return saved_grad
        if n_values >= HOST_CHECK_FROM and not gpu_bridge.wanted(saved_grad) and not tf.executing_eagerly():
            host = functools.partial(_rescale_on_host, expected_value, count)
            product = tf.numpy_function(host, [upstream, saved_grad], saved_grad.dtype, stateful=False)
            product.set_shape(saved_grad.shape)
            return product
        expected = tf.constant(expected_value, upstream.dtype)
    elif expected_upstream == "mean":
        count = tf.size(upstream)
        expected = 1 / tf.cast(count, upstream.dtype)
    else:
        count = None
        expected = tf.ones((), upstream.dtype)

    def scaled():
        factors = tf.cast(upstream, saved_grad.dtype)
        if count is not None:
            factors *= tf.cast(count, saved_grad.dtype)  # upstream / expected
        if gpu_bridge.wanted(saved_grad):  # TensorFlow's GPU allocator reuses its memory
            trailing = tf.ones([saved_grad.shape.rank - upstream.shape.rank], tf.int32)
            return tf.reshape(factors, tf.concat([tf.shape(factors), trailing], 0)) * saved_grad
        product = tf.numpy_function(_scale_saved_grad, [factors, saved_grad], saved_grad.dtype, stateful=False)
        product.set_shape(saved_grad.shape)
        return product

    return tf.cond(tf.reduce_all(tf.equal(upstream, expected)), lambda: tf.identity(saved_grad), scaled)


def fused_loss(loss_name, y_true, y_pred, params, reduced_axes=1, expected_upstream="mean", integer_labels=False):
    """Per-sample loss of ``kernels.<backend>.<loss_name>``, differentiable in ``y_pred``.

    ``params`` are passed positionally to the launcher after ``y_true, y_pred``;
    ``y_true`` is cast to the computation's dtype unless ``integer_labels`` (then it
    goes to the launcher as it is, e.g. int64 class labels). The
    loss has shape ``y_pred.shape[:-reduced_axes]``: the kernel reduces that many
    trailing axes (1 for a mean over the last axis; 2 for ``(batch, 2, dim)`` pairs).
    The saved gradient is written for ``expected_upstream`` (see ``rescale``).

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
        kernel = (loss_name, params, reduced_axes)
        computed = (y_true if integer_labels else tf.cast(y_true, compute_dtype), tf.cast(y_pred, compute_dtype))
        outputs = _call_kernel(*kernel, with_grad, expected_upstream, *computed)

        def backward(upstream):
            grad = outputs[1] if len(outputs) > 1 else _call_kernel(*kernel, True, expected_upstream, *computed)[1]
            return None, tf.cast(rescale(upstream, grad, expected_upstream), y_pred.dtype)

        return tf.cast(outputs[0], y_pred.dtype), backward

    return loss_and_saved_grad(y_true, y_pred)


@functools.lru_cache(maxsize=None)
def _warn_once_about_xla():
    warnings.warn(
        "fusedloss: inside an XLA-compiled function (jit_compile=True, Keras's default "
        "when a GPU is visible) the fused kernels cannot run; the same loss is computed "
        "with TensorFlow ops, its analytic gradient in the forward, which XLA fuses into "
        "one pass. Compile with jit_compile=False to use the fused kernels.",
        stacklevel=3,
    )


def dispatch(loss_name, y_true, y_pred, params, composite, reduced_axes=1, expected_upstream="mean", integer_labels=False):
    """``fused_loss(loss_name, ...)``, or ``composite(y_true, y_pred)``
    (the same math as TensorFlow ops, with the same values and gradients) where the
    kernel cannot run or would be slower: inside XLA, and below ``min_fused_size()``
    elements of ``y_pred`` (its loss-only threshold when no tape records).

    The size is read from the static shape when the known dimensions decide it (all
    known, or already >= the threshold); otherwise, as in a Keras train step traced with
    an unknown batch size, a ``tf.cond`` on the runtime size picks the branch per call.
    Labels and predictions of one rank whose shapes turn out to differ at run time
    also take the kernel's branch, whose launcher rejects them naming both, where
    TensorFlow's ops might broadcast them. ``integer_labels``: see ``fused_loss``.
    """
    check_expected_upstream(expected_upstream)
    fused_options = {"reduced_axes": reduced_axes, "expected_upstream": expected_upstream, "integer_labels": integer_labels}
    if _in_xla_context():
        _warn_once_about_xla()
        return composite(y_true, y_pred)
    threshold = min_fused_size(with_grad=_gradient_may_be_recorded())
    known_size = 0 if y_pred.shape.rank is None else math.prod(dim for dim in y_pred.shape if dim is not None)
    if known_size >= threshold:
        return fused_loss(loss_name, y_true, y_pred, params, **fused_options)
    if y_pred.shape.is_fully_defined():
        return composite(y_true, y_pred)
    use_kernel = tf.size(y_pred, out_type=tf.int64) >= threshold
    if y_true.shape.rank == y_pred.shape.rank:
        use_kernel = tf.logical_or(use_kernel, tf.reduce_any(tf.not_equal(tf.shape(y_true), tf.shape(y_pred))))
    return tf.cond(
        use_kernel,
        lambda: fused_loss(loss_name, y_true, y_pred, params, **fused_options),
        lambda: composite(y_true, y_pred),
    )


# ---------------------------------------------------------------------------------
# Parameter checks of the hand-written losses (the elementwise ones state theirs in
# their definitions)


def _contrastive_values(y_true, distance, margin):
    """Per-pair contrastive terms with TensorFlow ops: ``kernels.math.contrastive``."""
    hinge = tf.maximum(tf.convert_to_tensor(margin, distance.dtype) - distance, 0)  # not tf.cast: via float32
    return y_true * distance * distance + (1 - y_true) * tf.square(hinge)


def check_label_smoothing(label_smoothing):
    """``label_smoothing`` as a float in [0, 1], or ``ValueError`` naming it."""
    number = check_parameter("label_smoothing", label_smoothing, minimum=0.0, inclusive=True)
    if number > 1.0:
        raise ValueError(f"label_smoothing must be finite and in [0, 1], got {label_smoothing!r}")
    return number


def check_margin(margin):
    """``margin`` as a float: finite and >= 0 (0 is allowed: dissimilar pairs at any
    distance >= 0 then cost nothing), else ``ValueError``."""
    return check_parameter("margin", margin, minimum=0.0, inclusive=True)


# ---------------------------------------------------------------------------------
# Contrastive loss fused from the two embeddings of each pair


def prepare_pairs(y_true, pairs):
    """``prepare`` for ``(batch, 2, dim)`` pairs: ``y_true`` of shape ``(batch,)`` or
    ``(batch, 1)`` comes back as ``(batch,)``; any other shape is a ``ValueError``
    naming both."""
    pairs = tf.convert_to_tensor(pairs)
    if not pairs.dtype.is_floating:
        pairs = tf.cast(pairs, tf.keras.backend.floatx())
    y_true = tf.cast(tf.convert_to_tensor(y_true), pairs.dtype)
    if pairs.shape.rank != 3 or pairs.shape[1] not in (2, None):
        raise ValueError(
            f"y_pred must have shape (batch, 2, dim): the two embeddings of each pair stacked "
            f"on axis 1, got {pairs.shape}"
        )
    if y_true.shape.rank == 2 and y_true.shape[-1] == 1:
        y_true = tf.squeeze(y_true, axis=-1)
    if y_true.shape.rank != 1 or not y_true.shape.is_compatible_with(pairs.shape[:1]):
        raise ValueError(
            f"y_true must have shape (batch,) or (batch, 1), one label per pair of y_pred, got "
            f"y_true {y_true.shape} and y_pred {pairs.shape}"
        )
    return y_true, pairs


@tf.custom_gradient
def _pair_distance(pairs):
    """``||pairs[:, 0] - pairs[:, 1]||`` with TensorFlow ops and the kernels' gradient:
    computed from the differences scaled by their largest magnitude (no underflow or
    overflow in the squares), and a zero gradient at distance 0, where autodiff of
    ``sqrt`` would give NaN."""
    difference = pairs[:, 0, :] - pairs[:, 1, :]
    # At least the smallest normal number, so that dividing by it is finite.
    smallest_normal = tf.constant(2.0 ** (-1022 if pairs.dtype == tf.float64 else -126), pairs.dtype)
    scale = tf.maximum(tf.reduce_max(tf.abs(difference), axis=-1, keepdims=True), smallest_normal)
    scaled = difference / scale
    norm = tf.sqrt(tf.reduce_sum(tf.square(scaled), axis=-1, keepdims=True))
    distance = tf.squeeze(scale * norm, axis=-1)

    def backward(upstream):
        unit = tf.math.divide_no_nan(scaled, norm)
        grad_a = upstream[:, None] * unit
        return tf.stack([grad_a, -grad_a], axis=1)

    return distance, backward


def _embedding_contrastive_composite(y_true, pairs, margin):
    compute_dtype = _compute_dtype(pairs.dtype)
    distance = _pair_distance(tf.cast(pairs, compute_dtype))
    return tf.cast(_contrastive_values(tf.cast(y_true, compute_dtype), distance, margin), pairs.dtype)


def embedding_contrastive(y_true, pairs, margin=1.0, *, expected_upstream="mean"):
    """Per-pair contrastive loss straight from the two embeddings of each pair.

    ``pairs[:, 0]`` and ``pairs[:, 1]`` are the two embeddings of a pair; one fused
    pass computes their Euclidean distance ``d``, the loss of ``contrastive`` (TF
    Addons' convention, ``y_true = 1`` for a similar pair) and its gradient with
    respect to both embeddings, without a distance layer or any intermediate tensor.

    Formula, per pair, with ``d = ||pairs[:, 0] - pairs[:, 1]||``::

        loss     = y_true * d**2 + (1 - y_true) * max(margin - d, 0)**2
        dloss/da = dloss/dd * (a - b) / d,   dloss/db = -dloss/da

    ``d`` has no derivative at ``a = b``: for a dissimilar pair the loss there is a
    cone. The gradient at ``d = 0`` is taken to be 0 (a valid generalised gradient;
    for a similar pair it is also the true one), so identical embeddings never give
    NaN. The distance is computed in float64 whatever the input dtype (and rescaled
    where float64 itself would underflow or overflow), so tiny distances keep their
    gradient direction: finite inputs with a finite loss give a finite gradient.

    Args:
        y_true: 1 for a similar pair, 0 for a dissimilar one; shape ``(batch,)`` or
            ``(batch, 1)``, any numeric dtype (cast to ``pairs``'s).
        pairs: float tensor of shape ``(batch, 2, dim)``, the two embeddings stacked
            on axis 1, e.g. ``keras.ops.stack([embedding_a, embedding_b], axis=1)``.
        margin: finite and >= 0, else ``ValueError``.
        expected_upstream: ``"mean"`` (default) or ``"ones"``, as for ``huber``.

    Example:
        >>> pairs = [[[0.0, 0.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.5]]]
        >>> fusedloss.embedding_contrastive([1.0, 0.0], pairs, margin=1.0)  # [25.0, 0.25]

    Returns:
        The loss per pair, shape ``(batch,)``: the values and gradients of
        ``contrastive(y_true, d)`` with a distance layer in front, in one pass.
    """
    margin = check_margin(margin)
    y_true, pairs = prepare_pairs(y_true, pairs)
    composite = functools.partial(_embedding_contrastive_composite, margin=margin)
    return dispatch(
        "embedding_contrastive", y_true, pairs, (margin,), composite, reduced_axes=2, expected_upstream=expected_upstream
    )
