"""Softmax cross-entropies fused with their gradient: drop-ins for Keras's
``CategoricalCrossentropy``, ``SparseCategoricalCrossentropy`` and
``CategoricalFocalCrossentropy``.

Two sections: the TensorFlow ops (functional forms, input checks, the TF-ops path for
XLA and small inputs), then the Keras classes, which call only the ops.

``from_logits=True`` is the fast path: one fused kernel writes the loss and the
gradient ``softmax - target`` (``kernels/softmax_cpu.py``). ``from_logits=False``
follows Keras: when ``y_pred`` is the output of a softmax whose logits Keras can see
(a ``Dense(..., activation="softmax")`` layer), Keras itself computes the loss from
those logits, and so does the fused path here; otherwise the probabilities go through
Keras's own formula (normalise, clip, log), not fused.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from . import ops
from .kernels.softmax_reference import EPSILON, NO_IGNORE
from .losses import FusedLoss

# ---------------------------------------------------------------------------------
# Ops: checks


def check_axis(axis):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"axis must be an int, got {axis!r}")
    return int(axis)


def check_ignore_class(ignore_class):
    if ignore_class is None:
        return None
    if isinstance(ignore_class, (bool, str, bytes)) or not _is_integer(ignore_class):
        raise ValueError(f"ignore_class must be None or an integer, got {ignore_class!r}")
    return int(ignore_class)


def _is_integer(value):
    try:
        return float(value).is_integer()
    except (TypeError, ValueError):
        return False


def check_gamma(gamma):
    return ops.check_parameter("gamma", gamma, minimum=0.0, inclusive=True)


def check_alpha(alpha):
    """A number, or one weight per class (a tuple); finite and >= 0."""
    try:
        values = None if isinstance(alpha, (tf.Tensor, str, bytes)) else np.asarray(alpha, np.float64)
    except (TypeError, ValueError):
        values = None
    if values is None or values.ndim > 1 or values.size == 0:
        raise ValueError(f"alpha must be a number or a non-empty 1-D sequence of numbers, got {alpha!r}")
    if values.ndim == 0:
        return ops.check_parameter("alpha", float(values), minimum=0.0, inclusive=True)
    return tuple(ops.check_parameter(f"alpha[{i}]", float(v), minimum=0.0, inclusive=True) for i, v in enumerate(values))


def _keras_logits(y_pred):
    """The logits behind ``y_pred`` where Keras's TF backend would find them (its
    ``_get_logits``: a softmax activation's ``_keras_logits``, or a graph ``Softmax``
    op's input), else None."""
    logits = getattr(y_pred, "_keras_logits", None)
    if logits is not None:
        return logits
    op = getattr(y_pred, "op", None)
    if op is not None and not isinstance(y_pred, (tf.__internal__.EagerTensor, tf.Variable)) and op.type == "Softmax":
        return op.inputs[0]
    return None


def _as_logits(y_pred):
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        y_pred = tf.cast(y_pred, keras.backend.floatx())
    if y_pred.shape.rank == 0:
        raise ValueError("y_pred must have rank >= 1 (classes on the last axis), got a scalar")
    return y_pred


def _class_axis_last(tensor, axis):
    rank = tensor.shape.rank
    if axis < -rank or axis >= rank:
        raise ValueError(f"axis {axis} is out of range for y_pred of rank {rank}")
    axis %= rank
    if axis == rank - 1:
        return tensor
    return tf.experimental.numpy.moveaxis(tensor, axis, -1)


def _prepare_dense(y_true, logits, axis):
    y_true = tf.cast(tf.convert_to_tensor(y_true), logits.dtype)
    if not y_true.shape.is_compatible_with(logits.shape):
        raise ValueError(f"y_true and y_pred must have the same shape, got y_true {y_true.shape} and y_pred {logits.shape}")
    return _class_axis_last(y_true, axis), _class_axis_last(logits, axis)


def _prepare_labels(y_true, logits, ignore_class):
    """Integer labels of shape ``logits.shape[:-1]`` (a trailing axis of 1 squeezed, as
    Keras does); ignored ones (compared in ``y_true``'s own dtype, as Keras compares
    them) replaced by ``NO_IGNORE``, the kernels' ignore label. Also returns the mask
    of labels that count (None without ``ignore_class``)."""
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == logits.shape.rank and y_true.shape[-1] == 1:
        y_true = tf.squeeze(y_true, axis=-1)
    if y_true.shape.rank != logits.shape.rank - 1 or not y_true.shape.is_compatible_with(logits.shape[:-1]):
        raise ValueError(
            f"labels must have shape y_pred.shape[:-1] (or with a trailing 1), got y_true {y_true.shape} "
            f"and y_pred {logits.shape}"
        )
    labels = tf.cast(y_true, tf.int64)  # floats truncated, as Keras's backend casts them
    if ignore_class is None:
        return labels, None
    valid = tf.not_equal(y_true, tf.cast(ignore_class, y_true.dtype))
    return tf.where(valid, labels, tf.cast(NO_IGNORE, labels.dtype)), valid


def _set_mask(losses, mask):
    """Keras's ``ignore_class`` mask: ``Loss.__call__`` then leaves ignored entries out
    of the mean's count, as for Keras's own loss."""
    if mask is None:
        return losses
    from keras.src.backend import set_keras_mask  # not public in Keras 3.15

    set_keras_mask(losses, mask=mask)
    return losses


# ---------------------------------------------------------------------------------
# Ops: the TF-ops path, for XLA and small inputs. Loss and analytic gradient are both
# computed in the forward (XLA fuses them); the backward scales the saved gradient.


def _with_saved_gradient(loss_and_gradient, y_true, logits):
    """``loss_and_gradient(y_true, x) -> (loss, d loss / d x)`` as a differentiable op
    in ``x``: the backward is ``upstream[..., None] * gradient``."""
    dtype = logits.dtype
    compute_dtype = ops._compute_dtype(dtype)

    @tf.custom_gradient
    def run(logits):
        loss, gradient = loss_and_gradient(y_true, tf.cast(logits, compute_dtype))

        def backward(upstream):
            return tf.cast(tf.cast(upstream, compute_dtype)[..., None] * gradient, dtype)

        return tf.cast(loss, dtype), backward

    return run(logits)


def _dense_loss_and_gradient(y_true, logits, label_smoothing):
    """``t = y (1 - s) + s / K``; ``loss = sum t (lse - x)``, ``grad = softmax - t``."""
    t = tf.cast(y_true, logits.dtype)
    if label_smoothing:
        n_classes = tf.cast(tf.shape(logits)[-1], logits.dtype)
        t = t * (1.0 - label_smoothing) + label_smoothing / n_classes
    log_p = tf.nn.log_softmax(logits)
    return -tf.reduce_sum(t * log_p, axis=-1), tf.exp(log_p) - t


def _check_labels_op(labels, n_classes):
    """In-range labels (or the ignore label) as a boolean tensor; outside XLA also an
    assertion that names the first bad label and the class count."""
    in_range = tf.logical_and(labels >= 0, labels < tf.cast(n_classes, labels.dtype))
    counted = tf.logical_or(in_range, tf.equal(labels, tf.cast(NO_IGNORE, labels.dtype)))
    if not ops._in_xla_context():
        flat = tf.reshape(labels, [-1])
        first_bad = tf.argmin(tf.cast(tf.reshape(counted, [-1]), tf.int32))
        check = tf.debugging.Assert(
            tf.reduce_all(counted),
            ["labels must be in [0, n_classes) with n_classes =", n_classes, "(y_pred's last axis); got label",
             tf.gather(flat, first_bad), "at flat index", first_bad],
        )
        with tf.control_dependencies([check]):
            in_range = tf.identity(in_range)
    return in_range


def _sparse_loss_and_gradient(labels, logits):
    """``loss = lse - x_label``, ``grad = softmax - onehot(label)``; ignored rows 0,
    out-of-range ones NaN (XLA, where the assertion cannot run)."""
    n_classes = tf.shape(logits)[-1]
    in_range = _check_labels_op(labels, n_classes)
    ignored = tf.equal(labels, tf.cast(NO_IGNORE, labels.dtype))
    safe = tf.where(in_range, labels, tf.zeros_like(labels))
    log_p = tf.nn.log_softmax(logits)
    loss = -tf.gather(log_p, safe, batch_dims=labels.shape.rank)
    grad = tf.exp(log_p) - tf.one_hot(safe, n_classes, dtype=logits.dtype)
    nan = tf.constant(np.nan, logits.dtype)
    loss = tf.where(ignored, tf.zeros_like(loss), tf.where(in_range, loss, nan))
    grad = tf.where(ignored[..., None], tf.zeros_like(grad), tf.where(in_range[..., None], grad, nan))
    return loss, grad


def _focal_loss_and_gradient(y_true, logits, alpha, gamma, label_smoothing):
    """Keras's focal formula of ``p = softmax(x)`` and its gradient (see
    ``kernels.softmax_cpu.categorical_focal_cross_entropy``)."""
    dtype = logits.dtype
    t = tf.cast(y_true, dtype)
    if label_smoothing:
        n_classes = tf.cast(tf.shape(logits)[-1], dtype)
        t = t * (1.0 - label_smoothing) + label_smoothing / n_classes
    p = tf.nn.softmax(logits)
    low, high = tf.constant(EPSILON, dtype), tf.constant(1.0 - EPSILON, dtype)
    c = tf.clip_by_value(p, low, high)
    alpha = tf.constant(alpha, dtype)
    w = tf.pow(1.0 - c, gamma)
    log_c = tf.math.log(c)
    loss = -tf.reduce_sum(alpha * w * t * log_c, axis=-1)
    passes = tf.logical_and(p >= low, p <= high)
    # dL/dc = alpha t (gamma (1 - c)^(gamma - 1) log c - (1 - c)^gamma / c)
    g = tf.where(passes, alpha * t * (gamma * (w / (1.0 - c)) * log_c - w / c), tf.zeros_like(p))
    # through the softmax: dL/dx_j = p_j (g_j - sum_k g_k p_k)
    grad = p * (g - tf.reduce_sum(g * p, axis=-1, keepdims=True))
    return loss, grad


# ---------------------------------------------------------------------------------
# Ops: the functional forms


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1, *, expected_upstream="mean"):
    """Per-sample categorical cross-entropy, fused with its gradient (from logits).

    Formula, with ``t = y_true (1 - s) + s / K`` (``s = label_smoothing``, ``K``
    classes on ``axis``) and ``x`` the logits::

        loss = -sum_j t_j log softmax(x)_j
        d loss / d x_j = softmax(x)_j - t_j          (TensorFlow's op's gradient)

    Args:
        y_true: targets (one-hot or soft), the shape of ``y_pred``.
        y_pred: logits (``from_logits=True``) or probabilities.
        from_logits: as in Keras. With probabilities the loss is Keras's (normalise,
            clip, log), computed from the softmax's logits where Keras would.
        label_smoothing: in [0, 1].
        axis: the class axis.
        expected_upstream: ``"mean"`` or ``"ones"``, as for ``fusedloss.huber``.

    Example:
        >>> fusedloss.categorical_crossentropy([[0.0, 1.0]], [[1.0, 3.0]], from_logits=True)

    Returns:
        The loss per sample: ``y_pred``'s shape without ``axis``.
    """
    label_smoothing = ops.check_label_smoothing(label_smoothing)
    axis = check_axis(axis)
    y_pred = _as_logits(y_pred)
    if not from_logits:
        logits = _keras_logits(y_pred)
        if logits is None:
            return keras.losses.categorical_crossentropy(y_true, y_pred, False, label_smoothing, axis)
        y_pred = logits
    y_true, logits = _prepare_dense(y_true, y_pred, axis)
    composite = functools.partial(
        _with_saved_gradient, functools.partial(_dense_loss_and_gradient, label_smoothing=label_smoothing)
    )
    return ops.dispatch(
        "softmax_cross_entropy", y_true, logits, (label_smoothing,), composite, expected_upstream=expected_upstream
    )


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1, *, expected_upstream="mean"):
    """Per-sample cross-entropy of integer labels, fused with its gradient (from logits).

    Formula, with ``x`` the logits and ``l`` the label::

        loss = -log softmax(x)_l
        d loss / d x_j = softmax(x)_j - [j = l]

    Entries labelled ``ignore_class`` cost 0, get a zero gradient and carry Keras's
    mask, so a Keras reduction leaves them out of its count. A label outside
    ``[0, classes)`` is an ``InvalidArgumentError`` naming it and the class count.

    Args:
        y_true: labels, any numeric dtype (floats are truncated, as Keras does), shape
            ``y_pred.shape[:-1]`` or that with a trailing 1.
        y_pred: logits (``from_logits=True``) or probabilities, classes last.
        from_logits: as in Keras (see ``categorical_crossentropy``).
        ignore_class: None or the label to ignore.
        axis: must be -1 (the last axis), as in Keras's TensorFlow backend.
        expected_upstream: ``"mean"`` or ``"ones"``, as for ``fusedloss.huber``.

    Example:
        >>> fusedloss.sparse_categorical_crossentropy([1], [[1.0, 3.0]], from_logits=True)

    Returns:
        The loss per sample: shape ``y_pred.shape[:-1]``.
    """
    ignore_class = check_ignore_class(ignore_class)
    axis = check_axis(axis)
    y_pred = _as_logits(y_pred)
    if axis not in (-1, y_pred.shape.rank - 1):
        raise ValueError(f"Only axis=-1 is supported, as in Keras's TensorFlow backend; got axis={axis}")
    if not from_logits:
        # Keras masks ignored entries of y_pred before it looks for logits, and so
        # never finds them then.
        logits = _keras_logits(y_pred) if ignore_class is None else None
        if logits is None:
            return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, False, ignore_class, axis)
        y_pred = logits
    labels, valid = _prepare_labels(y_true, y_pred, ignore_class)
    composite = functools.partial(_with_saved_gradient, _sparse_loss_and_gradient)
    losses = ops.dispatch(
        "sparse_softmax_cross_entropy",
        labels,
        y_pred,
        (NO_IGNORE,),
        composite,
        expected_upstream=expected_upstream,
        integer_labels=True,
    )
    return _set_mask(losses, valid)


def categorical_focal_crossentropy(
    y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1, *, expected_upstream="mean"
):
    """Per-sample categorical focal cross-entropy (Keras's formula), fused with its
    gradient from logits.

    Formula, with ``t`` the smoothed targets and ``c = clip(softmax(x), eps, 1 - eps)``
    (``eps = 1e-7``)::

        loss = -sum_j alpha_j (1 - c_j)^gamma t_j log c_j
        d loss / d x_j = p_j (g_j - sum_k g_k p_k),   g = d loss / d c (0 where clipped)

    Args:
        y_true: targets, the shape of ``y_pred``.
        y_pred: logits (``from_logits=True``) or probabilities (Keras's formula, not fused).
        alpha: a number >= 0 or one weight per class.
        gamma: the focusing exponent, >= 0.
        from_logits, label_smoothing, axis: as in ``categorical_crossentropy``.
        expected_upstream: ``"mean"`` or ``"ones"``.

    Example:
        >>> fusedloss.categorical_focal_crossentropy([[0.0, 1.0]], [[1.0, 3.0]], from_logits=True)

    Returns:
        The loss per sample: ``y_pred``'s shape without ``axis``.
    """
    alpha = check_alpha(alpha)
    gamma = check_gamma(gamma)
    label_smoothing = ops.check_label_smoothing(label_smoothing)
    axis = check_axis(axis)
    y_pred = _as_logits(y_pred)
    if not from_logits:  # Keras's focal loss never looks for logits
        return keras.losses.categorical_focal_crossentropy(
            y_true, y_pred, list(alpha) if isinstance(alpha, tuple) else alpha, gamma, False, label_smoothing, axis
        )
    y_true, logits = _prepare_dense(y_true, y_pred, axis)
    n_classes = logits.shape[-1]
    if isinstance(alpha, tuple) and n_classes is not None and len(alpha) != n_classes:
        raise ValueError(f"alpha must have one weight per class: y_pred has {n_classes} classes, got {len(alpha)}")
    composite = functools.partial(
        _with_saved_gradient,
        functools.partial(_focal_loss_and_gradient, alpha=alpha, gamma=gamma, label_smoothing=label_smoothing),
    )
    params = (np.asarray(alpha, np.float64) if isinstance(alpha, tuple) else alpha, gamma, label_smoothing)
    return ops.dispatch(
        "categorical_focal_cross_entropy", y_true, logits, params, composite, expected_upstream=expected_upstream
    )


# ---------------------------------------------------------------------------------
# Keras classes: configuration only; the ops above do the work.


@keras.saving.register_keras_serializable(package="fusedloss")
class CategoricalCrossentropy(FusedLoss):
    """Categorical cross-entropy fused with its gradient; a drop-in for
    ``keras.losses.CategoricalCrossentropy`` (same arguments, defaults and config keys).

    Formula: ``loss = -sum_j t_j log softmax(x)_j``, ``t = y (1 - s) + s / K``.

    Args:
        from_logits: whether ``y_pred`` holds logits (the fused path) or probabilities.
        label_smoothing: in [0, 1].
        axis: the class axis.
        reduction, name, dtype: as for every Keras loss.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.CategoricalCrossentropy(from_logits=True))

    Returns:
        Called as ``loss(y_true, y_pred, sample_weight=None)``: the reduced loss.
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="fused_categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = ops.check_label_smoothing(label_smoothing)
        self.axis = check_axis(axis)

    def call(self, y_true, y_pred):
        return categorical_crossentropy(
            y_true, y_pred, self.from_logits, self.label_smoothing, self.axis, expected_upstream=self._expected_upstream()
        )

    def parameters(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing, "axis": self.axis}


@keras.saving.register_keras_serializable(package="fusedloss")
class SparseCategoricalCrossentropy(FusedLoss):
    """Cross-entropy of integer labels fused with its gradient; a drop-in for
    ``keras.losses.SparseCategoricalCrossentropy``.

    Formula: ``loss = -log softmax(x)_label``; ``ignore_class`` entries cost 0 and are
    left out of the reduction's count, as in Keras.

    Args:
        from_logits: whether ``y_pred`` holds logits (the fused path) or probabilities.
        ignore_class: None or the label to ignore (e.g. -1 or 255).
        reduction, axis (-1 only), name, dtype: as for Keras's class.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.SparseCategoricalCrossentropy(from_logits=True))

    Returns:
        Called as ``loss(y_true, y_pred, sample_weight=None)``: the reduced loss.
    """

    def __init__(
        self,
        from_logits=False,
        ignore_class=None,
        reduction="sum_over_batch_size",
        axis=-1,
        name="fused_sparse_categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.ignore_class = check_ignore_class(ignore_class)
        self.axis = check_axis(axis)

    def call(self, y_true, y_pred):
        return sparse_categorical_crossentropy(
            y_true, y_pred, self.from_logits, self.ignore_class, self.axis, expected_upstream=self._expected_upstream()
        )

    def parameters(self):
        # Keras's config has no axis either.
        return {"from_logits": self.from_logits, "ignore_class": self.ignore_class}


@keras.saving.register_keras_serializable(package="fusedloss")
class CategoricalFocalCrossentropy(FusedLoss):
    """Categorical focal cross-entropy fused with its gradient (from logits); a drop-in
    for ``keras.losses.CategoricalFocalCrossentropy``.

    Formula: ``loss = -sum_j alpha_j (1 - c_j)^gamma t_j log c_j`` with
    ``c = clip(softmax(x), eps, 1 - eps)``.

    Args:
        alpha: a number >= 0 or one weight per class.
        gamma: the focusing exponent, >= 0.
        from_logits, label_smoothing, axis, reduction, name, dtype: as for Keras's class.

    Example:
        >>> model.compile(optimizer="adam", loss=fusedloss.CategoricalFocalCrossentropy(from_logits=True))

    Returns:
        Called as ``loss(y_true, y_pred, sample_weight=None)``: the reduced loss.
    """

    def __init__(
        self,
        alpha=0.25,
        gamma=2.0,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="fused_categorical_focal_crossentropy",
        dtype=None,
    ):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.alpha = check_alpha(alpha)
        self.gamma = check_gamma(gamma)
        self.from_logits = bool(from_logits)
        self.label_smoothing = ops.check_label_smoothing(label_smoothing)
        self.axis = check_axis(axis)

    def call(self, y_true, y_pred):
        return categorical_focal_crossentropy(
            y_true,
            y_pred,
            self.alpha,
            self.gamma,
            self.from_logits,
            self.label_smoothing,
            self.axis,
            expected_upstream=self._expected_upstream(),
        )

    def parameters(self):
        return {
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "axis": self.axis,
            "alpha": list(self.alpha) if isinstance(self.alpha, tuple) else self.alpha,
            "gamma": self.gamma,
        }
