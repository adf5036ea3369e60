"""End-to-end workloads: ``model.fit`` step time with a fused loss against the Keras loss
(or the TensorFlow formula where Keras has none), on the same model and data.

Adding a workload is one line in ``FIT_WORKLOADS``: a key, a problem (the model, its
data and the loss's parameters, from one of the factories below) and two loss factories,
the fused one and the reference. Each factory is called with the problem's loss
parameters as keyword arguments (``pos_weight=...``, ``margin=...``; none for most), so a
Keras loss class or a ``fusedloss`` class is a factory as it is::

    FitWorkload("classifier", classifier(512, 32768), fusedloss.SparseCategoricalCrossentropy,
                functools.partial(keras.losses.SparseCategoricalCrossentropy, from_logits=True)),

How it is timed (``measure``): both models start from the same weights; every round fits
one epoch of each, in alternating order (fused first in even rounds, the reference first
in odd ones), of ``steps`` steps on one batch repeated by ``tf.data``. A callback times
each step from ``on_train_batch_begin`` to ``on_train_batch_end`` and syncs on the loss
scalar (``float(logs["loss"])``); an epoch's step time is the median of its steps. The
speed-up of a round is the reference's step time over the fused one's; the result is the
median over rounds with the interquartile range and the extremes of the per-round ratios.
One warm-up epoch of each model (tracing, numba compilation) comes first, untimed.

The optimizer is plain SGD: its update is the cheapest, so the step time is mostly the
model's forward and backward and the loss. With ``smoke=True`` every problem is shrunk to
a few elements: the code path runs, nothing is measured.
"""

import functools
import math
import statistics
import time
from typing import Callable, NamedTuple

import numpy as np


class Built(NamedTuple):
    """A problem made ready: ``model()`` returns a fresh, built Keras model; ``x`` and
    ``y`` are one batch (NumPy); ``loss_params`` go to both loss factories; ``elements``:
    of ``y_pred`` per step."""

    model: Callable
    x: object
    y: object
    loss_params: dict
    elements: int


class Problem(NamedTuple):
    description: str  # what it is at full size, for the report
    elements: int  # elements of y_pred per step at full size: what decides the fused path
    build: Callable[[bool], Built]  # smoke -> Built


class FitWorkload(NamedTuple):
    key: str  # short name, for --workloads and the report
    problem: Problem
    fused: Callable  # (**loss_params) -> the fused Keras loss
    reference: Callable  # (**loss_params) -> the Keras loss or the TF formula as a Keras loss


# ---------------------------------------------------------------------------------
# Problems: a model, one batch of data and the loss's parameters

FEATURES = 64


def _rng():
    return np.random.default_rng(20261201)


def dense_regression(batch, output_shape, features=FEATURES):
    """``Dense(features -> prod(output_shape))`` + ``Reshape(output_shape)``, regression
    targets near the predictions' scale (both branches of Huber)."""
    size = math.prod(output_shape)

    def build(smoke):
        import keras

        b, shape = (2, (4, 6)) if smoke else (batch, tuple(output_shape))
        rng = _rng()
        x = rng.standard_normal((b, features)).astype(np.float32)
        y = (1.5 * rng.standard_normal((b, *shape))).astype(np.float32)

        def model():
            return keras.Sequential(
                [keras.Input((features,)), keras.layers.Dense(math.prod(shape)), keras.layers.Reshape(shape)]
            )

        return Built(model, x, y, {}, b * math.prod(shape))

    shape_text = " x ".join(map(str, output_shape))
    return Problem(f"Dense({features} -> {size}) + Reshape, {batch} x {shape_text}", batch * size, build)


def multi_label(batch, classes, features=FEATURES):
    """``Dense(features -> classes)`` logits, sparse multi-hot targets (5 % positive) and
    one ``pos_weight`` per class (0.5..10)."""

    def build(smoke):
        import keras

        b, c = (2, 12) if smoke else (batch, classes)
        rng = _rng()
        x = rng.standard_normal((b, features)).astype(np.float32)
        y = (rng.random((b, c)) < 0.05).astype(np.float32)
        pos_weight = rng.uniform(0.5, 10.0, c).astype(np.float32)

        def model():
            return keras.Sequential([keras.Input((features,)), keras.layers.Dense(c)])

        return Built(model, x, y, {"pos_weight": pos_weight}, b * c)

    return Problem(f"Dense({features} -> {classes}) logits, {batch} x {classes}, per-class pos_weight", batch * classes, build)


def siamese(pairs, dim, features=FEATURES, margin=1.0):
    """One encoder ``Dense(features -> dim)`` applied to both inputs, the two embeddings
    stacked to ``(pairs, 2, dim)``; labels 1 = similar, half of each."""

    def build(smoke):
        import keras

        b, d = (2, 5) if smoke else (pairs, dim)
        rng = _rng()
        x = tuple(rng.standard_normal((b, features)).astype(np.float32) for _ in range(2))
        y = (rng.random(b) < 0.5).astype(np.float32)

        def model():
            encoder = keras.layers.Dense(d)
            first, second = keras.Input((features,)), keras.Input((features,))
            stacked = keras.layers.Lambda(lambda e: keras.ops.stack(e, axis=1))([encoder(first), encoder(second)])
            return keras.Model([first, second], stacked)

        return Built(model, x, y, {"margin": margin}, b * 2 * d)

    return Problem(
        f"shared Dense({features} -> {dim}) encoder, {pairs} pairs x 2 x {dim}, margin {margin}", pairs * 2 * dim, build
    )


def classifier(batch, classes, features=FEATURES):
    """``Dense(features -> classes)`` logits and integer class labels (for a sparse
    softmax cross-entropy)."""

    def build(smoke):
        import keras

        b, c = (2, 7) if smoke else (batch, classes)
        rng = _rng()
        x = rng.standard_normal((b, features)).astype(np.float32)
        y = rng.integers(0, c, b).astype(np.int32)

        def model():
            return keras.Sequential([keras.Input((features,)), keras.layers.Dense(c)])

        return Built(model, x, y, {}, b * c)

    return Problem(f"Dense({features} -> {classes}) logits, {batch} integer labels", batch * classes, build)


# ---------------------------------------------------------------------------------
# References where Keras has no loss: the TF formula, reduced by Keras like any loss


def _keras_loss(name, per_sample):
    """A ``keras.losses.Loss`` whose ``call`` is ``per_sample(y_true, y_pred)``: Keras's
    own reduction (``sum_over_batch_size``) and sample weights apply."""
    import keras

    class FormulaLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return per_sample(y_true, y_pred)

    return FormulaLoss(name=name)


def tf_weighted_sigmoid_cross_entropy(pos_weight):
    """``tf.nn.weighted_cross_entropy_with_logits``, then the mean over classes."""
    import tensorflow as tf

    weights = tf.constant(pos_weight)

    def per_sample(y_true, y_pred):
        per_element = tf.nn.weighted_cross_entropy_with_logits(labels=y_true, logits=y_pred, pos_weight=weights)
        return tf.reduce_mean(per_element, axis=-1)

    return _keras_loss("tf_weighted_sigmoid_cross_entropy", per_sample)


def tf_embedding_contrastive(margin):
    """``d = ||a - b||`` by ``tf.norm``, then ``y d^2 + (1 - y) max(margin - d, 0)^2``."""
    import tensorflow as tf

    def per_sample(y_true, y_pred):
        distance = tf.norm(y_pred[:, 0] - y_pred[:, 1], axis=-1)
        hinge = tf.maximum(margin - distance, 0.0)
        y = tf.reshape(tf.cast(y_true, distance.dtype), tf.shape(distance))
        return y * tf.square(distance) + (1.0 - y) * tf.square(hinge)

    return _keras_loss("tf_embedding_contrastive", per_sample)


@functools.lru_cache(maxsize=None)
def _profit_cost_class():
    """A user's own loss, written once as a formula (the README's example): defined on
    first use, after the benchmark's environment is set, and once (Keras registers it)."""
    import fusedloss as fl

    @fl.elementwise_loss(package="fusedloss_benchmarks")
    def ProfitCost(y_true, y_pred, cost=1.0, profit=99.0):
        """Over-prediction costs ``cost`` per unit, under-prediction loses ``profit``."""
        return fl.math.where(y_pred > y_true, cost * (y_pred - y_true), profit * (y_true - y_pred))

    return ProfitCost


def fused_profit_cost(**params):
    return _profit_cost_class()(**params)


fused_profit_cost.__name__ = "fl.elementwise_loss ProfitCost"


def tf_profit_cost(**params):
    """The same formula in TensorFlow ops, differentiated by autodiff."""
    import tensorflow as tf

    cost, profit = params.get("cost", 1.0), params.get("profit", 99.0)

    def per_sample(y_true, y_pred):
        error = y_pred - y_true
        return tf.reduce_mean(tf.where(error > 0, cost * error, -profit * error), axis=-1)

    return _keras_loss("tf_profit_cost", per_sample)


def _fusedloss(class_name, **fixed):
    """A factory for ``fusedloss.<class_name>``, looked up when called (the package is
    imported after the benchmark's environment is set)."""

    def factory(**params):
        import fusedloss

        return getattr(fusedloss, class_name)(**fixed, **params)

    factory.__name__ = f"fusedloss.{class_name}"
    return factory


def _keras(class_name, **fixed):
    def factory(**params):
        import keras

        return getattr(keras.losses, class_name)(**fixed, **params)

    factory.__name__ = f"keras.losses.{class_name}"
    return factory


# ---------------------------------------------------------------------------------
# The workloads: one line each

FIT_WORKLOADS = (
    FitWorkload("dense-regression", dense_regression(8, (512, 512)), _fusedloss("Huber"), _keras("Huber")),
    FitWorkload(
        "multi-label", multi_label(1024, 10000), _fusedloss("WeightedSigmoidCrossEntropy"), tf_weighted_sigmoid_cross_entropy
    ),
    FitWorkload("siamese", siamese(4096, 256), _fusedloss("EmbeddingContrastiveLoss"), tf_embedding_contrastive),
    FitWorkload("small-head", dense_regression(256, (10,)), _fusedloss("Huber"), _keras("Huber")),
    FitWorkload(
        "classifier",
        classifier(512, 32768),
        _fusedloss("SparseCategoricalCrossentropy", from_logits=True),
        _keras("SparseCategoricalCrossentropy", from_logits=True),
    ),
    FitWorkload("user-defined", dense_regression(8, (512, 512)), fused_profit_cost, tf_profit_cost),
)

FIT_WORKLOADS_BY_KEY = {workload.key: workload for workload in FIT_WORKLOADS}


def factory_name(factory):
    """How a loss factory is shown in the report."""
    if isinstance(factory, functools.partial):
        return factory_name(factory.func)
    if isinstance(factory, type):
        return f"{factory.__module__.split('.')[0]}.{factory.__qualname__}"
    return getattr(factory, "__name__", repr(factory))


# ---------------------------------------------------------------------------------
# Timing


class StepTimer:
    """Keras callback: each training step's seconds, synced on the loss scalar."""

    def __new__(cls):
        import keras

        class _StepTimer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds = []
                self.losses = []
                self._start = None

            def on_train_batch_begin(self, batch, logs=None):
                self._start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                loss = float(logs["loss"])  # the sync: a scalar, not the big outputs
                self.seconds.append(time.perf_counter() - self._start)
                self.losses.append(loss)

        return _StepTimer()


def _quantiles(values):
    """``(q1, median, q3)`` of ``values`` (inclusive method; a single value is all three)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def fused_path(elements):
    """``"fused"`` when a training step's loss on ``elements`` runs the fused kernel (at or
    above ``fusedloss.min_fused_size()``), ``"tf-ops"`` when it runs TensorFlow ops by design."""
    import fusedloss

    return "fused" if elements >= fusedloss.min_fused_size(with_grad=True) else "tf-ops"


class FitBudget(NamedTuple):
    """How much of ``measure`` a run mode does: ``rounds`` interleaved pairs of epochs,
    each epoch ``seconds_per_epoch`` long (from the warm-up's step time), within
    ``min_steps``..``max_steps`` steps; ``smoke`` shrinks every problem."""

    rounds: int
    seconds_per_epoch: float
    min_steps: int
    max_steps: int
    smoke: bool = False


def _steps(budget, seconds_per_step):
    wanted = budget.seconds_per_epoch / max(seconds_per_step, 1e-9)
    return int(min(max(wanted, budget.min_steps), budget.max_steps))


def _warmed_up(workload, built):
    """``{"fused": side, "reference": side}``: each side a compiled model (the same
    starting weights) with its data, after a two-step warm-up epoch (tracing, numba's
    compilation) whose last step time is ``side["warm_step_s"]``."""
    import keras
    import tensorflow as tf

    sides = {}
    weights = None
    for side, factory in (("fused", workload.fused), ("reference", workload.reference)):
        keras.utils.set_random_seed(0)
        model = built.model()
        if weights is None:
            weights = model.get_weights()
        else:
            model.set_weights(weights)
        optimizer = keras.optimizers.SGD(learning_rate=1e-3)
        model.compile(optimizer=optimizer, loss=factory(**built.loss_params), jit_compile=False)
        data = tf.data.Dataset.from_tensors((built.x, built.y)).repeat()
        timer = StepTimer()
        model.fit(data, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False, callbacks=[timer])
        sides[side] = {"model": model, "data": data, "epochs": [], "warm_step_s": timer.seconds[-1]}
    return sides


def measure(workload, budget):
    """Time ``workload`` under ``budget`` (see the module's docstring). Returns a dict:
    what ran and, per side, the median step time; the per-round speed-ups and their
    median, quartiles and extremes; the last loss of each side (both sides take the same
    steps from the same weights, so these agree up to the losses' rounding)."""
    import fusedloss

    built = workload.problem.build(budget.smoke)
    # A smoke run's tiny problems would run TensorFlow ops: fuse at every size, so the
    # kernels run inside model.fit (read when the train step is traced, in the warm-up).
    previous = fusedloss.set_min_fused_size(0) if budget.smoke else None
    try:
        path = fused_path(built.elements)
        sides = _warmed_up(workload, built)
    finally:
        if budget.smoke:
            fusedloss.set_min_fused_size(previous)
    steps = _steps(budget, max(side["warm_step_s"] for side in sides.values()))
    ratios = []
    for round_index in range(budget.rounds):
        order = ("fused", "reference") if round_index % 2 == 0 else ("reference", "fused")
        step_times = {}
        for side in order:
            timer = StepTimer()
            sides[side]["model"].fit(
                sides[side]["data"], epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[timer]
            )
            step_times[side] = statistics.median(timer.seconds)
            sides[side]["epochs"].append(step_times[side])
            sides[side]["last_loss"] = timer.losses[-1]
        ratios.append(step_times["reference"] / step_times["fused"])
    q1, median, q3 = _quantiles(ratios)
    return {
        "workload": workload.key,
        "description": workload.problem.description,
        "elements": built.elements,
        "fused_loss": factory_name(workload.fused),
        "reference_loss": factory_name(workload.reference),
        "path": path,
        "smoke": budget.smoke,
        "rounds": budget.rounds,
        "steps": steps,
        "fused_step_s": statistics.median(sides["fused"]["epochs"]),
        "reference_step_s": statistics.median(sides["reference"]["epochs"]),
        "fused_epochs_s": sides["fused"]["epochs"],
        "reference_epochs_s": sides["reference"]["epochs"],
        "ratios": ratios,
        "speedup": median,
        "speedup_q1": q1,
        "speedup_q3": q3,
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "fused_last_loss": sides["fused"]["last_loss"],
        "reference_last_loss": sides["reference"]["last_loss"],
    }
