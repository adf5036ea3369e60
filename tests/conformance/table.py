"""The conformance table: one row per fused loss, in the manner of PyTorch's OpInfo.

A row declares everything the generic tests (``test_*.py`` beside this module) need to
test a loss: the fusedloss class, its constructor variants, an independent float64
reference (Keras's own loss built with ``dtype="float64"``, or TensorFlow ops wrapped
in a plain ``keras.losses.Loss`` so that Keras applies the reduction), a maker of
valid inputs, float32 tolerances and the known skips with their reasons. A new loss
gets every generic test by adding its row here.

Inputs come from ``make_inputs(rng, shape, variant, ties)`` as float64 NumPy arrays
``(y_true, y_pred)``; tests cast them to the dtype under test and give the reference
the cast values. With ``ties=True`` a few elements sit exactly on the loss's kinks,
clip bounds or saturation points (where the gradient convention shows); with
``ties=False`` every element is at least ~0.05 from any kink, for finite differences.
"""

from typing import Callable, NamedTuple

import keras
import numpy as np
import tensorflow as tf

import fusedloss
import fusedloss as fl

EPSILON = keras.config.epsilon()


class Tolerance(NamedTuple):
    """``|actual - reference| <= rtol * |reference| + atol * max|reference|``."""

    rtol: float
    atol: float


TOLERANCES = {
    "float32": Tolerance(rtol=2e-5, atol=2e-6),
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
}


class Variant(NamedTuple):
    """Constructor keyword arguments, and an option of the row's input maker (e.g. the
    label encoding) under which they are tested."""

    kwargs: dict
    inputs: str = ""

    @property
    def id(self):
        parts = [f"{k}={getattr(v, 'label', v)}" for k, v in self.kwargs.items()] + ([self.inputs] if self.inputs else [])
        return ",".join(parts) or "defaults"


class Row(NamedTuple):
    name: str
    loss: type  # the fusedloss class
    variants: tuple  # of Variant; the first is the one the expensive tests use
    # (reduction, dtype="float64", **kwargs) -> a Keras loss computing the reduced loss
    # independently of fusedloss
    reference: Callable
    make_inputs: Callable  # (rng, shape, variant, ties) -> (y_true, y_pred), float64
    keras: type = None  # the Keras class this is a drop-in for (config, fit parity)
    tolerance: dict = {}  # per dtype, where looser than TOLERANCES (with the reason beside it)
    skips: dict = {}  # generic test name -> why it does not apply
    fit_activation: str = "linear"  # the model.fit test's output activation (valid y_pred)
    # Constructor arguments that must raise ValueError, with the parameter it must name
    bad_kwargs: tuple = ()
    # get_config keys beyond Keras's: "dtype" always (Keras drops it), and any Keras lacks
    extra_config_keys: frozenset = frozenset({"dtype"})
    # Which kernels run the loss: "elementwise" (the generated row kernel of the row's
    # definition) or one of the softmax kernels, "softmax dense|sparse|focal"
    kernel: str = "elementwise"
    # The constructor's number parameters (each must refuse NaN, Inf, a string, None);
    # None: a defined loss's numeric parameters, else every constructor argument
    numeric_parameters: tuple = None

    def tolerance_for(self, dtype):
        return self.tolerance.get(dtype, TOLERANCES[dtype])


def keras_reference(keras_class):
    def reference(reduction="sum_over_batch_size", dtype="float64", **kwargs):
        return keras_class(reduction=reduction, dtype=dtype, **kwargs)

    return reference


class FormulaReference(keras.losses.Loss):
    """A float64 reference from TensorFlow ops: ``element(y_true, y_pred, **kwargs)``
    per element, the mean (or sum) over the last axis, and Keras's own reduction."""

    def __init__(self, element, reduce="mean", reduction="sum_over_batch_size", dtype="float64", **kwargs):
        super().__init__(reduction=reduction, dtype=dtype, name="reference")
        self.element, self.reduce, self.kwargs = element, reduce, kwargs

    def call(self, y_true, y_pred):
        values = self.element(y_true, y_pred, **self.kwargs)
        return tf.reduce_mean(values, axis=-1) if self.reduce == "mean" else tf.reduce_sum(values, axis=-1)


def formula_reference(element, reduce="mean"):
    def reference(reduction="sum_over_batch_size", dtype="float64", **kwargs):
        return FormulaReference(element, reduce, reduction, dtype, **kwargs)

    return reference


# ---------------------------------------------------------------------------------
# The example user-defined loss (the issue's), defined here as a user would


@fl.elementwise_loss
def ProfitCost(y_true, y_pred, cost=1.0, profit=99.0):
    """Over-prediction costs ``cost`` per unit, under-prediction loses ``profit``."""
    return fl.math.where(y_pred > y_true, cost * (y_pred - y_true), profit * (y_true - y_pred))


def _profit_cost(y_true, y_pred, cost=1.0, profit=99.0):
    return tf.where(y_pred > y_true, cost * (y_pred - y_true), profit * (y_true - y_pred))


def _pseudo_huber(y_true, y_pred, delta=1.0):
    return delta**2 * (tf.sqrt(1.0 + tf.square((y_pred - y_true) / delta)) - 1.0)


def _contrastive(y_true, d, margin=1.0):
    return y_true * tf.square(d) + (1.0 - y_true) * tf.square(tf.maximum(margin - d, 0.0))


def _weighted_sigmoid_cross_entropy(y_true, logits, pos_weight=1.0, label_smoothing=0.0):
    z = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    pos_weight = tf.constant(pos_weight, logits.dtype)
    return tf.nn.weighted_cross_entropy_with_logits(labels=z, logits=logits, pos_weight=pos_weight)


# ---------------------------------------------------------------------------------
# Input makers: valid domains, kinks placed exactly where ties=True


def _away_from_zero(rng, shape, scale=1.0):
    """Values with |v| in [0.05, ...): kink-free for finite differences."""
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0) * (0.05 + scale * np.abs(rng.standard_normal(shape)))


def _place(array, values):
    """Put ``values`` on a diagonal of ``array`` (one per row where there are enough rows)."""
    flat = array.reshape(-1)  # a view: the makers' arrays are contiguous
    columns = array.shape[-1] if array.ndim else 1
    for i, value in enumerate(values[: flat.size]):
        flat[(i * (columns + 1)) % flat.size] = value
    return array


def errors(rng, shape, variant, ties):
    """y_true anywhere, y_pred = y_true + an error of scale ~1.5."""
    y_true = np.round(rng.standard_normal(shape), 3)  # exactly representable sums below
    y_pred = y_true + 1.5 * _away_from_zero(rng, shape)
    if ties:
        delta = variant.kwargs.get("delta", 1.0)
        _place(y_true, [0.5, 0.25, -0.75])
        _place(y_pred, [0.5, 0.25 + delta, -0.75 - delta])  # no error; the two kinks at +-delta
    return y_true, y_pred


def percentages(rng, shape, variant, ties):
    y_true = _away_from_zero(rng, shape, scale=3.0)
    y_pred = y_true + _away_from_zero(rng, shape)
    if ties:
        _place(y_true, [0.0, 2.0, EPSILON / 2])  # y_true 0 and below epsilon: divided by epsilon
        _place(y_pred, [0.5, 2.0, 1.0])
    return y_true, y_pred


def positives(rng, shape, variant, ties):
    y_true = rng.exponential(size=shape)
    y_pred = 0.05 + rng.exponential(size=shape)
    if ties:
        eps32 = float(np.float32(EPSILON))
        _place(y_true, [1.0, 0.0, 2.0])
        _place(y_pred, [0.0, eps32, 2.0])  # below epsilon (slope 0), on it, no error
    return y_true, y_pred


def distributions(rng, shape, variant, ties):
    y_true = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) if len(shape) > 1 else rng.dirichlet(np.ones(shape[-1]))
    y_pred = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) if len(shape) > 1 else rng.dirichlet(np.ones(shape[-1]))
    y_pred = 0.6 * y_pred + 0.4 / shape[-1]  # >= 0.4 / classes: away from the clip at epsilon
    if ties:
        _place(y_pred, [0.0, 1.0, EPSILON])  # clipped, on the upper bound, on the lower bound
        _place(y_true, [0.3, 0.0, 0.1])
    return y_true, y_pred


def probabilities(rng, shape, variant, ties):
    y_true = (rng.random(shape) < 0.5).astype(np.float64)
    y_pred = rng.uniform(0.05, 0.95, shape)
    if ties:
        _place(y_pred, [0.0, 1.0, EPSILON, 1.0 - EPSILON])  # clipped both ways, on both bounds
        _place(y_true, [1.0, 0.0, 1.0, 0.0])
    return y_true, y_pred


def logits(rng, shape, variant, ties):
    y_true = (rng.random(shape) < 0.5).astype(np.float64)
    y_pred = 3.0 * _away_from_zero(rng, shape)
    if ties:
        _place(y_pred, [0.0, 40.0, -40.0, 40.0])  # the where's switch; saturated both ways
        _place(y_true, [1.0, 1.0, 1.0, 0.0])
    return y_true, y_pred


def hinge_labels(rng, shape, variant, ties):
    signs = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    y_pred = signs * (1.0 + _away_from_zero(rng, shape))  # away from the hinge at y p = 1
    y_pred *= np.where(rng.random(shape) < 0.3, -1.0, 1.0)
    if ties:
        _place(signs, [1.0, -1.0])
        _place(y_pred, [1.0, -1.0])  # exactly on the hinge
    y_true = (signs > 0).astype(np.float64) if variant.inputs == "labels 0/1" else signs
    return y_true, y_pred


def distances(rng, shape, variant, ties):
    margin = variant.kwargs.get("margin", 1.0)
    y_true = (rng.random(shape) < 0.5).astype(np.float64)
    d = margin + _away_from_zero(rng, shape, scale=0.5)
    d = np.abs(d)
    if ties:
        _place(d, [margin, 0.0])
        _place(y_true, [0.0, 1.0])
    return y_true, d


def multilabel_logits(rng, shape, variant, ties):
    y_true = (rng.random(shape) < 0.3).astype(np.float64)
    # No logit exactly 0: TF's max/abs form has a different slope there (see the row)
    return y_true, 3.0 * _away_from_zero(rng, shape)


def class_scores(rng, shape, variant, ties):
    """Targets over the last axis (soft, one-hot, or integer labels of ``shape[:-1]``,
    some ``ignore_class``) and logits, or probabilities without ``from_logits`` (at
    least 0.4 / classes: away from Keras's clip at epsilon). A softmax has no kink:
    ``ties`` changes nothing."""
    classes, leading = shape[-1], tuple(shape[:-1])
    if variant.inputs == "labels":
        y_true = rng.integers(0, classes, size=leading).astype(np.float64)  # Keras casts labels to the loss's dtype
        if "ignore_class" in variant.kwargs:
            y_true.reshape(-1)[::3] = variant.kwargs["ignore_class"]
    elif variant.inputs == "one-hot":
        y_true = np.eye(classes)[rng.integers(0, classes, size=leading)]
    else:
        y_true = rng.dirichlet(np.ones(classes), size=leading)
    if variant.kwargs.get("from_logits"):
        y_pred = 3.0 * rng.standard_normal(shape)
    else:
        y_pred = 0.6 * rng.dirichlet(np.ones(classes), size=leading) + 0.4 / classes
    return y_true, y_pred


def _per_class(columns):
    return [0.5 + 0.25 * i for i in range(columns)]


_per_class.label = "per-class"


# ---------------------------------------------------------------------------------
# The table

_BAD_SMOOTHING = (({"label_smoothing": 1.5}, "label_smoothing"), ({"label_smoothing": -0.1}, "label_smoothing"))

ROWS = (
    Row("mean_squared_error", fusedloss.MeanSquaredError, (Variant({}),),
        keras_reference(keras.losses.MeanSquaredError), errors, keras=keras.losses.MeanSquaredError),
    Row("mean_absolute_error", fusedloss.MeanAbsoluteError, (Variant({}),),
        keras_reference(keras.losses.MeanAbsoluteError), errors, keras=keras.losses.MeanAbsoluteError),
    Row("mean_absolute_percentage_error", fusedloss.MeanAbsolutePercentageError, (Variant({}),),
        keras_reference(keras.losses.MeanAbsolutePercentageError), percentages,
        keras=keras.losses.MeanAbsolutePercentageError),
    Row("mean_squared_logarithmic_error", fusedloss.MeanSquaredLogarithmicError, (Variant({}),),
        keras_reference(keras.losses.MeanSquaredLogarithmicError), positives,
        keras=keras.losses.MeanSquaredLogarithmicError, fit_activation="softplus"),
    Row("log_cosh", fusedloss.LogCosh, (Variant({}),), keras_reference(keras.losses.LogCosh), errors,
        keras=keras.losses.LogCosh,
        skips={"nan_inf y_pred=-inf": "Keras's e + softplus(-2e) - log 2 is NaN at e = -inf; fusedloss's "
               "log_cosh gives +inf, its limit (as Keras does at e = +inf)"},
        # Keras's float64 log_cosh subtracts log(2) rounded to float32 (ops.log(2.0) is
        # float32): 1.9e-9 per element off the exact value fusedloss computes.
        tolerance={"float64": Tolerance(rtol=1e-10, atol=1e-8)}),
    Row("hinge", fusedloss.Hinge, (Variant({}), Variant({}, inputs="labels 0/1")),
        keras_reference(keras.losses.Hinge), hinge_labels, keras=keras.losses.Hinge, fit_activation="tanh"),
    Row("squared_hinge", fusedloss.SquaredHinge, (Variant({}), Variant({}, inputs="labels 0/1")),
        keras_reference(keras.losses.SquaredHinge), hinge_labels, keras=keras.losses.SquaredHinge,
        fit_activation="tanh"),
    Row("poisson", fusedloss.Poisson, (Variant({}),), keras_reference(keras.losses.Poisson), positives,
        keras=keras.losses.Poisson, fit_activation="softplus"),
    Row("kl_divergence", fusedloss.KLDivergence, (Variant({}),), keras_reference(keras.losses.KLDivergence),
        distributions, keras=keras.losses.KLDivergence, fit_activation="softmax"),
    Row("binary_crossentropy", fusedloss.BinaryCrossentropy,
        (Variant({"from_logits": True}), Variant({}), Variant({"label_smoothing": 0.1}),
         Variant({"from_logits": True, "label_smoothing": 0.2})),
        keras_reference(keras.losses.BinaryCrossentropy),
        lambda rng, shape, variant, ties: (logits if variant.kwargs.get("from_logits") else probabilities)(
            rng, shape, variant, ties),
        keras=keras.losses.BinaryCrossentropy,
        bad_kwargs=(*_BAD_SMOOTHING, ({"axis": 0}, "axis"))),
    Row("binary_focal_crossentropy", fusedloss.BinaryFocalCrossentropy,
        (Variant({"from_logits": True}), Variant({}),
         Variant({"apply_class_balancing": True, "alpha": 0.4, "gamma": 3.0, "label_smoothing": 0.1}),
         Variant({"from_logits": True, "apply_class_balancing": True, "gamma": 1.5})),
        keras_reference(keras.losses.BinaryFocalCrossentropy),
        lambda rng, shape, variant, ties: (logits if variant.kwargs.get("from_logits") else probabilities)(
            rng, shape, variant, ties),
        keras=keras.losses.BinaryFocalCrossentropy,
        bad_kwargs=(*_BAD_SMOOTHING, ({"alpha": 1.5}, "alpha"), ({"gamma": -1.0}, "gamma"), ({"axis": 1}, "axis"))),
    Row("pseudo_huber", fusedloss.PseudoHuber, (Variant({}), Variant({"delta": 2.5})),
        formula_reference(_pseudo_huber), errors,
        bad_kwargs=(({"delta": 0.0}, "delta"), ({"delta": -1.0}, "delta"))),
    Row("huber", fusedloss.Huber, (Variant({}), Variant({"delta": 2.0})), keras_reference(keras.losses.Huber), errors,
        keras=keras.losses.Huber,
        bad_kwargs=(({"delta": 0.0}, "delta"),),
        # keras.losses.Huber().get_config() has no "delta" (Keras 3.15): fusedloss keeps it
        extra_config_keys=frozenset({"dtype", "delta"})),
    Row("contrastive", fusedloss.ContrastiveLoss, (Variant({}), Variant({"margin": 2.0})),
        formula_reference(_contrastive), distances,
        bad_kwargs=(({"margin": -1.0}, "margin"),)),
    Row("weighted_sigmoid_cross_entropy", fusedloss.WeightedSigmoidCrossEntropy,
        (Variant({"pos_weight": 3.0}), Variant({"pos_weight": 0.5, "label_smoothing": 0.1}),
         Variant({"pos_weight": _per_class})),
        formula_reference(_weighted_sigmoid_cross_entropy), multilabel_logits,
        # The float32 kernel's exp/log1p are vectorisable approximations (error bounds in the README).
        tolerance={"float32": Tolerance(rtol=1e-4, atol=1e-5)},
        bad_kwargs=(({"pos_weight": -1.0}, "pos_weight"), *_BAD_SMOOTHING)),
    Row("categorical_crossentropy", fusedloss.CategoricalCrossentropy,
        (Variant({"from_logits": True}), Variant({"from_logits": True, "label_smoothing": 0.1}, inputs="one-hot"),
         Variant({})),
        keras_reference(keras.losses.CategoricalCrossentropy), class_scores,
        keras=keras.losses.CategoricalCrossentropy, kernel="softmax dense", numeric_parameters=("label_smoothing",),
        bad_kwargs=(*_BAD_SMOOTHING, ({"axis": 1.5}, "axis"))),
    Row("sparse_categorical_crossentropy", fusedloss.SparseCategoricalCrossentropy,
        (Variant({"from_logits": True}, inputs="labels"),
         Variant({"from_logits": True, "ignore_class": -1}, inputs="labels"), Variant({}, inputs="labels")),
        keras_reference(keras.losses.SparseCategoricalCrossentropy), class_scores,
        keras=keras.losses.SparseCategoricalCrossentropy, kernel="softmax sparse", numeric_parameters=(),
        skips={"nan_inf y_true=nan": "integer labels: a NaN label is an out-of-range label (tests/test_softmax.py)",
               "odd_shapes (3, 5, 1)": "Keras squeezes y_pred's trailing 1 to labels' rank and then refuses it: "
               "no reference (fusedloss takes it as one class)"},
        bad_kwargs=(({"ignore_class": 1.5}, "ignore_class"), ({"ignore_class": "one"}, "ignore_class"))),
    Row("categorical_focal_crossentropy", fusedloss.CategoricalFocalCrossentropy,
        (Variant({"from_logits": True}, inputs="one-hot"),
         Variant({"from_logits": True, "alpha": 0.4, "gamma": 1.5, "label_smoothing": 0.1}), Variant({})),
        keras_reference(keras.losses.CategoricalFocalCrossentropy), class_scores,
        keras=keras.losses.CategoricalFocalCrossentropy, kernel="softmax focal",
        numeric_parameters=("alpha", "gamma", "label_smoothing"),
        skips={"odd_shapes (3, 5, 1)": "one class: the loss is alpha * eps**2 * -log(1 - eps) (~1e-22), which "
               "float32's rounding of 1 - eps moves by 70 % (Keras in float32 gives fusedloss's 4.2e-22)"},
        bad_kwargs=(*_BAD_SMOOTHING, ({"alpha": -0.5}, "alpha"), ({"gamma": -1.0}, "gamma"))),
    Row("profit_cost", ProfitCost, (Variant({}), Variant({"cost": 2.0, "profit": 5.0})),
        formula_reference(_profit_cost), errors),
)

ROWS_BY_NAME = {row.name: row for row in ROWS}


def cases(rows=ROWS, all_variants=True):
    """``pytest.param``s of ``(row, variant)``, ids like ``huber-delta=2.0``."""
    import pytest

    params = []
    for row in rows:
        for variant in row.variants if all_variants else row.variants[:1]:
            params.append(pytest.param(row, variant, id=f"{row.name}-{variant.id}"))
    return params


def kwargs_for(variant, shape):
    """The variant's constructor arguments for inputs of ``shape`` (a per-class weight
    is given as a function of the column count)."""
    return {k: (v(shape[-1]) if callable(v) else v) for k, v in variant.kwargs.items()}


def inputs(row, variant, shape, dtype, ties=True, seed=0):
    """``(y_true, y_pred)`` in ``dtype``, and the same values in float64 for the reference."""
    rng = np.random.default_rng(seed)
    y_true, y_pred = row.make_inputs(rng, tuple(shape), variant, ties)
    y_true, y_pred = np.asarray(y_true, dtype), np.asarray(y_pred, dtype)
    return (y_true, y_pred), (y_true.astype(np.float64), y_pred.astype(np.float64))


def skip_if_listed(row, test_name):
    import pytest

    if test_name in row.skips:
        pytest.skip(f"{row.name}: {row.skips[test_name]}")
