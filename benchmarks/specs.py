"""What is benchmarked: one row per fused loss, the sizes and the workloads.

Adding a loss to the suite is adding a ``LossSpec`` row to ``LOSSES``. Everything a
row names inside ``fusedloss`` is looked up by name when the suite runs (the functional
op ``fusedloss.<name>``, the class ``fusedloss.<class_name>``, the CPU launcher
``fusedloss.kernels.cpu.<name>``, the float64 reference
``fusedloss.kernels.reference.<name>``), so a row for a loss that is not merged yet is
skipped, saying what is missing, and runs as soon as it is.

Each of those four is called as ``f(y_true, y_pred, *params)``: parameters are passed
positionally, in the order of the loss's signature.
"""

import math
from typing import Callable, NamedTuple

import numpy as np
import keras
import tensorflow as tf

from .fit import FitBudget


class Tolerance(NamedTuple):
    """``|actual - reference| <= rtol * |reference| + atol * max|reference|``."""

    rtol: float
    atol: float


# Per computation dtype. float32 sums of ~1000 terms, TensorFlow's and the kernels',
# differ from float64 by a few 1e-7 relative; the margin allows for long rows.
TOLERANCES = {
    "float32": Tolerance(rtol=2e-5, atol=2e-6),
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
}


class LossSpec(NamedTuple):
    name: str
    class_name: str
    # (y_true, y_pred, *params) -> per-sample loss, TensorFlow ops only: what a user
    # would write without fusedloss.
    native: Callable
    # Element count -> y_pred's shape; y_true's shape follows from make_inputs.
    shape_for: Callable[[int], tuple]
    # (rng, shape, dtype) -> (y_true, y_pred, params): NumPy arrays and parameters.
    make_inputs: Callable
    # Looser than TOLERANCES where the loss's math justifies it (e.g. approximated exp).
    tolerance: dict = {}
    # The registered kernel's name where it is not ``name`` (a variant of static
    # parameters, e.g. "binary_crossentropy[from_logits=True][axis=-1]").
    kernel: str = ""

    @property
    def kernel_name(self):
        return self.kernel or self.name


# ---------------------------------------------------------------------------------
# Native TensorFlow equivalents


def native_huber(y_true, y_pred, delta):
    return tf.keras.losses.huber(y_true, y_pred, delta=delta)


def native_weighted_sigmoid_cross_entropy(y_true, y_pred, pos_weight):
    per_element = tf.nn.weighted_cross_entropy_with_logits(labels=y_true, logits=y_pred, pos_weight=pos_weight)
    return tf.reduce_mean(per_element, axis=-1)


def _contrastive_of_distance(label, distance, margin):
    hinge = tf.maximum(margin - distance, 0.0)
    return label * tf.square(distance) + (1.0 - label) * tf.square(hinge)


def native_contrastive(y_true, y_pred, margin):
    return tf.reduce_mean(_contrastive_of_distance(y_true, y_pred, margin), axis=-1)


def native_embedding_contrastive(y_true, y_pred, margin):
    distance = tf.norm(y_pred[:, 0] - y_pred[:, 1], axis=-1)
    return _contrastive_of_distance(y_true, distance, margin)


# ---------------------------------------------------------------------------------
# Shapes and inputs

ROW_LENGTH = 1000  # the last (averaged) axis of the size sweep: a typical feature count
EMBEDDING_DIM = 250  # two embeddings of 250 = 500 elements per pair


def rows_of(size):
    return (max(1, size // ROW_LENGTH), ROW_LENGTH)


def pairs_of(size):
    return (max(1, size // (2 * EMBEDDING_DIM)), 2, EMBEDDING_DIM)


def huber_inputs(rng, shape, dtype):
    y_true = rng.standard_normal(shape)
    # Errors of scale 1.5 around delta = 1: both branches well represented.
    y_pred = y_true + 1.5 * rng.standard_normal(shape)
    return y_true.astype(dtype), y_pred.astype(dtype), (1.0,)


def weighted_sigmoid_cross_entropy_inputs(rng, shape, dtype):
    # Sparse multi-label targets, logits of both signs, one weight per class.
    y_true = rng.random(shape) < 0.05
    y_pred = 3.0 * rng.standard_normal(shape)
    pos_weight = rng.uniform(0.5, 10.0, shape[-1]).astype(dtype)
    return y_true.astype(dtype), y_pred.astype(dtype), (pos_weight,)


def contrastive_inputs(rng, shape, dtype):
    y_true = rng.random(shape) < 0.5
    distance = np.abs(rng.standard_normal(shape)) * 1.2  # on both sides of margin 1
    return y_true.astype(dtype), distance.astype(dtype), (1.0,)


def embedding_contrastive_inputs(rng, shape, dtype):
    batch, _, dim = shape
    y_true = rng.random(batch) < 0.5
    # Unit-scale embeddings: distances around sqrt(2), on both sides of margin 1.5.
    pairs = rng.standard_normal(shape) / math.sqrt(dim)
    return y_true.astype(dtype), pairs.astype(dtype), (1.5,)


def _keras_native(function, **kwargs):
    def native(y_true, y_pred, *params):
        return function(y_true, y_pred, **kwargs)

    native.__name__ = function.__name__
    return native


def regression_inputs(rng, shape, dtype):
    y_true, y_pred, _ = huber_inputs(rng, shape, dtype)
    return y_true, y_pred, ()


def positive_inputs(rng, shape, dtype):
    return rng.exponential(size=shape).astype(dtype), (0.05 + rng.exponential(size=shape)).astype(dtype), ()


def distribution_inputs(rng, shape, dtype):
    y_true = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    y_pred = 0.6 * rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) + 0.4 / shape[-1]
    return y_true.astype(dtype), y_pred.astype(dtype), ()


def hinge_inputs(rng, shape, dtype):
    y_true = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return y_true.astype(dtype), (1.5 * rng.standard_normal(shape)).astype(dtype), ()


def logit_inputs(rng, shape, dtype, *params):
    y_true = rng.random(shape) < 0.5
    return y_true.astype(dtype), (3.0 * rng.standard_normal(shape)).astype(dtype), params


def pseudo_huber_native(y_true, y_pred, delta):
    return tf.reduce_mean(delta**2 * (tf.sqrt(1.0 + tf.square((y_pred - y_true) / delta)) - 1.0), axis=-1)


KERAS = keras.losses
LOSSES = (
    LossSpec("huber", "Huber", native_huber, rows_of, huber_inputs),
    LossSpec(
        "weighted_sigmoid_cross_entropy",
        "WeightedSigmoidCrossEntropy",
        native_weighted_sigmoid_cross_entropy,
        rows_of,
        weighted_sigmoid_cross_entropy_inputs,
        # The kernel's exp/log1p are vectorisable approximations.
        tolerance={"float32": Tolerance(rtol=1e-4, atol=1e-5)},
    ),
    LossSpec("contrastive", "ContrastiveLoss", native_contrastive, rows_of, contrastive_inputs),
    LossSpec(
        "embedding_contrastive",
        "EmbeddingContrastiveLoss",
        native_embedding_contrastive,
        pairs_of,
        embedding_contrastive_inputs,
    ),
    # The Keras drop-ins: native is Keras's own loss function.
    LossSpec("mean_squared_error", "MeanSquaredError", _keras_native(KERAS.mean_squared_error), rows_of, regression_inputs),
    LossSpec("mean_absolute_error", "MeanAbsoluteError", _keras_native(KERAS.mean_absolute_error), rows_of, regression_inputs),
    LossSpec(
        "mean_absolute_percentage_error", "MeanAbsolutePercentageError",
        _keras_native(KERAS.mean_absolute_percentage_error), rows_of, regression_inputs,
    ),
    LossSpec(
        "mean_squared_logarithmic_error", "MeanSquaredLogarithmicError",
        _keras_native(KERAS.mean_squared_logarithmic_error), rows_of, positive_inputs,
    ),
    LossSpec("log_cosh", "LogCosh", _keras_native(KERAS.log_cosh), rows_of, regression_inputs),
    LossSpec("pseudo_huber", "PseudoHuber", pseudo_huber_native, rows_of,
             lambda rng, shape, dtype: (*regression_inputs(rng, shape, dtype)[:2], (1.0,))),
    LossSpec("hinge", "Hinge", _keras_native(KERAS.hinge), rows_of, hinge_inputs),
    LossSpec("squared_hinge", "SquaredHinge", _keras_native(KERAS.squared_hinge), rows_of, hinge_inputs),
    LossSpec("poisson", "Poisson", _keras_native(KERAS.poisson), rows_of, positive_inputs),
    LossSpec("kl_divergence", "KLDivergence", _keras_native(KERAS.kl_divergence), rows_of, distribution_inputs),
    LossSpec(
        "binary_crossentropy", "BinaryCrossentropy", _keras_native(KERAS.binary_crossentropy, from_logits=True),
        rows_of, lambda rng, shape, dtype: logit_inputs(rng, shape, dtype, True, 0.0, -1),
        kernel="binary_crossentropy[from_logits=True][axis=-1]",
    ),
    LossSpec(
        "binary_focal_crossentropy", "BinaryFocalCrossentropy",
        _keras_native(KERAS.binary_focal_crossentropy, from_logits=True), rows_of,
        lambda rng, shape, dtype: logit_inputs(rng, shape, dtype, False, 0.25, 2.0, True, 0.0, -1),
        kernel="binary_focal_crossentropy[apply_class_balancing=False][gamma=2.0][from_logits=True][axis=-1]",
    ),
)

LOSSES_BY_NAME = {spec.name: spec for spec in LOSSES}


def tolerance(spec, dtype):
    return spec.tolerance.get(dtype, TOLERANCES[dtype])


def missing_parts(spec):
    """What ``fusedloss`` lacks to benchmark ``spec``, as dotted names; empty when none."""
    import fusedloss
    from fusedloss.kernels import cpu

    definition = getattr(getattr(fusedloss, spec.class_name, None), "definition", None)
    if definition is not None and spec.kernel:
        definition.traced(definition.static_key(definition.check(_named(definition, spec))))  # registers the kernel
    wanted = (
        (fusedloss, "fusedloss", spec.name),
        (fusedloss, "fusedloss", spec.class_name),
        (cpu, "fusedloss.kernels.cpu", spec.kernel_name),
    )
    missing = [f"{module_name}.{attribute}" for module, module_name, attribute in wanted if not hasattr(module, attribute)]
    if not missing and reference_for(spec) is None:
        missing.append(f"fusedloss.kernels.reference.{spec.name}")
    return missing


def _named(definition, spec):
    _, _, params = spec.make_inputs(np.random.default_rng(0), (1, 2), np.dtype("float64"))
    return dict(zip(definition.parameters, params))


def kernel_params(spec, params):
    """The CPU launcher's parameters: the numeric ones (static ones chose the kernel)."""
    import fusedloss

    definition = getattr(getattr(fusedloss, spec.class_name, None), "definition", None)
    if definition is None:
        return params
    return tuple(value for name, value in zip(definition.parameters, params) if name in definition.numeric)


def reference_for(spec):
    """``(y_true, y_pred, *params) -> (loss, gradient of its sum)`` in float64: the
    hand-written ``fusedloss.kernels.reference.<name>``, else the definition's own
    (the formula as TensorFlow ops, differentiated by TensorFlow's autodiff)."""
    import fusedloss
    from fusedloss.kernels import reference

    if hasattr(reference, spec.name):
        return getattr(reference, spec.name)
    definition = getattr(getattr(fusedloss, spec.class_name, None), "definition", None)
    if definition is None:
        return None

    def from_definition(y_true, y_pred, *params):
        return definition.reference(y_true, y_pred, **dict(zip(definition.parameters, params)))

    return from_definition


# ---------------------------------------------------------------------------------
# Sizes and workloads


class Workload(NamedTuple):
    """A realistic call: a named shape for one loss, reduced to a scalar as Keras does
    by default (``sum_over_batch_size``), so the backward gets upstream = 1 / batch."""

    name: str
    loss: str
    shape: tuple


# Narrow rows (most Keras heads have 1 to 64 outputs) are timed for these losses, by
# these providers, and compared per element with the sweep's rows of ROW_LENGTH.
NARROW_LOSSES = ("huber",)
NARROW_PROVIDERS = ("kernel", "bridge", "empty-bridge", "fusedloss")


def narrow_label(size, n_columns):
    return f"{size:.0e} rows of {n_columns}"


WORKLOADS = (
    Workload("dense regression 16x256x256", "huber", (16, 256, 256)),
    Workload("extreme multi-label 1024x10000", "weighted_sigmoid_cross_entropy", (1024, 10000)),
    Workload("metric learning 4096 pairs x 256", "embedding_contrastive", (4096, 2, 256)),
)


class RunMode(NamedTuple):
    """How much to run. ``seconds_per_case`` is the timing budget of one case (after
    its warm-up), within ``min_rounds``..``max_rounds``."""

    name: str
    sizes: tuple
    workloads: bool
    seconds_per_case: float
    min_rounds: int
    max_rounds: int
    # The model.fit workloads (benchmarks/fit.py): None skips them.
    fit: FitBudget = None
    # Narrow rows: at the largest size, the losses of NARROW_LOSSES also run with rows
    # of these many columns (kernel and bridge), beside the sweep's rows of ROW_LENGTH.
    narrow_columns: tuple = ()


RUN_MODES = {
    "smoke": RunMode(
        "smoke", (2_000,), workloads=False, seconds_per_case=0.0, min_rounds=1, max_rounds=1,
        fit=FitBudget(rounds=2, seconds_per_epoch=0.0, min_steps=1, max_steps=1, smoke=True),
    ),
    "quick": RunMode(
        "quick", (1_000, 100_000, 1_000_000, 10_000_000), workloads=False, seconds_per_case=0.15,
        min_rounds=7, max_rounds=100,
        fit=FitBudget(rounds=7, seconds_per_epoch=0.25, min_steps=2, max_steps=40),
        narrow_columns=(1, 2, 10, 64),
    ),
    "full": RunMode(
        "full",
        (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000),
        workloads=True,
        seconds_per_case=0.7,
        min_rounds=7,
        max_rounds=2000,
        fit=FitBudget(rounds=9, seconds_per_epoch=1.0, min_steps=3, max_steps=200),
        narrow_columns=(1, 2, 4, 10, 16, 32, 64),
    ),
}
