"""What is particular to the softmax cross-entropies, beyond their rows in the
conformance table (tests/conformance/table.py: values, gradients, reductions,
config, files, fit, XLA, CUDA for every loss).

Here: the shapes only softmax losses have (a class axis other than the last, labels
of shape (batch, 1) and (batch, seq) with ignore_class, one class, per-class focal
alpha), PyTorch's cross_entropy as a second reference, training on a real data set,
logits found behind a softmax layer, labels out of range, NaN rows and huge logits.
Every case runs the fused kernel (tests/conftest.py sets the fused size threshold to
0); ``test_xla_path_equals_kernel_path`` runs the TF-ops path too.
"""

from typing import Callable, NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedloss


def dense_inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    logits = 3.0 * rng.normal(size=shape)
    targets = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    return targets, logits


def onehot_inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    return np.eye(shape[-1])[labels], 3.0 * rng.normal(size=shape)


def sparse_inputs(shape, seed=0, trailing_one=False, ignore=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    if ignore is not None:
        labels.reshape(-1)[::3] = ignore
    if trailing_one:
        labels = labels[..., None]
    return labels, 3.0 * rng.normal(size=shape)


class Case(NamedTuple):
    name: str
    loss: type
    keras_loss: type
    kwargs: dict
    inputs: Callable  # seed -> (y_true, logits), NumPy float64


CCE, SCCE, FOCAL = fusedloss.CategoricalCrossentropy, fusedloss.SparseCategoricalCrossentropy, fusedloss.CategoricalFocalCrossentropy
K_CCE, K_SCCE, K_FOCAL = keras.losses.CategoricalCrossentropy, keras.losses.SparseCategoricalCrossentropy, keras.losses.CategoricalFocalCrossentropy

CASES = [
    Case("cce-smoothing-3x5x33", CCE, K_CCE, {"from_logits": True, "label_smoothing": 0.1}, lambda s: onehot_inputs((3, 5, 33), s)),
    Case("cce-axis-1", CCE, K_CCE, {"from_logits": True, "axis": 1}, lambda s: tuple(np.swapaxes(a, 1, 2) for a in dense_inputs((4, 6, 9), s))),
    Case("scce-trailing-one", SCCE, K_SCCE, {"from_logits": True}, lambda s: sparse_inputs((17, 10), s, trailing_one=True)),
    Case("scce-seq-ignore", SCCE, K_SCCE, {"from_logits": True, "ignore_class": -1}, lambda s: sparse_inputs((3, 7, 29), s, ignore=-1)),
    Case("scce-one-class", SCCE, K_SCCE, {"from_logits": True}, lambda s: sparse_inputs((9, 1), s)),
    Case("focal-smoothing-alpha", FOCAL, K_FOCAL, {"from_logits": True, "label_smoothing": 0.1, "alpha": [0.25, 0.5, 1.0, 0.75, 0.375], "gamma": 1.5}, lambda s: dense_inputs((13, 5), s)),
    # (alpha exact in float32: Keras rounds a list alpha to float32 even in float64.)
    # Probabilities with ignore_class: Keras's own formula (normalise, clip, log), not fused.
    Case("scce-probabilities-ignore", SCCE, K_SCCE, {"ignore_class": 2}, lambda s: (sparse_inputs((8, 6), s, ignore=2)[0], np.random.default_rng(s).dirichlet(np.ones(6), 8))),
]
REDUCTIONS = ["sum_over_batch_size", "sum", None]


def tensors(case, seed=0, dtype=tf.float64):
    y_true, logits = case.inputs(seed)
    return tf.constant(y_true, dtype), tf.constant(logits, dtype)


def value_and_gradient(loss_fn, y_true, y_pred, scale=1.0, **kwargs):
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = scale * loss_fn(y_true, y_pred, **kwargs)
    return loss.numpy(), tape.gradient(loss, y_pred).numpy()


def by_name(cases):
    return pytest.mark.parametrize("case", cases, ids=[c.name for c in cases])


@by_name(CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("scale", [1.0, 2.0], ids=["upstream-1", "upstream-2"])
def test_values_and_gradients_match_keras_in_float64(case, reduction, scale):
    y_true, y_pred = tensors(case)
    ours = case.loss(reduction=reduction, dtype="float64", **case.kwargs)
    theirs = case.keras_loss(reduction=reduction, dtype="float64", **case.kwargs)
    loss, grad = value_and_gradient(ours, y_true, y_pred, scale)
    want_loss, want_grad = value_and_gradient(theirs, y_true, y_pred, scale)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-14)


@by_name(CASES)
def test_sample_weight_matches_keras(case):
    y_true, y_pred = tensors(case)
    loss_shape = case.keras_loss(reduction=None, dtype="float64", **case.kwargs)(y_true, y_pred).shape
    weights = tf.constant(np.linspace(0.0, 2.0, np.prod(loss_shape)).reshape(loss_shape), tf.float64)
    for reduction in ("sum_over_batch_size", "mean_with_sample_weight"):
        ours = case.loss(reduction=reduction, dtype="float64", **case.kwargs)
        theirs = case.keras_loss(reduction=reduction, dtype="float64", **case.kwargs)
        got = value_and_gradient(ours, y_true, y_pred, sample_weight=weights)
        want = value_and_gradient(theirs, y_true, y_pred, sample_weight=weights)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-14)


@by_name([c for c in CASES if c.kwargs.get("from_logits")])
def test_float32_matches_keras_float64_to_float32_rounding(case):
    y_true, y_pred = tensors(case, dtype=tf.float32)
    loss, grad = value_and_gradient(case.loss(**case.kwargs), y_true, y_pred, 2.0)
    want_loss, want_grad = value_and_gradient(case.keras_loss(dtype="float64", **case.kwargs), *tensors(case), 2.0)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(loss, want_loss, rtol=2e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)


@by_name([c for c in CASES if c.kwargs.get("from_logits") and c.kwargs.get("axis", -1) == -1])
def test_xla_path_equals_kernel_path(case):
    y_true, y_pred = tensors(case)
    loss = case.loss(dtype="float64", **case.kwargs)

    def step(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            value = 2.0 * loss(y_true, y_pred)
        return value, tape.gradient(value, y_pred)

    kernel = tf.function(step)(y_true, y_pred)
    # Compiles only if the TF-ops path is taken (tf.numpy_function has no XLA kernel).
    xla = tf.function(step, jit_compile=True)(y_true, y_pred)
    np.testing.assert_allclose(xla[0], kernel[0], rtol=1e-12)
    np.testing.assert_allclose(xla[1], kernel[1], rtol=1e-10, atol=1e-15)


def _digits():
    """scikit-learn's handwritten digits (1797 images of 8x8, 10 classes; shipped with
    the package, no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def _fit_digits(loss, one_hot=False, seed=0):
    x, y = _digits()
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.3), loss=loss)
    targets = np.eye(10, dtype=np.float32)[y] if one_hot else y
    history = model.fit(x, targets, batch_size=64, epochs=3, verbose=0, shuffle=False)
    return np.array(history.history["loss"]), model.get_weights()


@pytest.mark.parametrize(
    "ours, theirs, one_hot",
    [
        (SCCE(from_logits=True), K_SCCE(from_logits=True), False),
        (CCE(from_logits=True, label_smoothing=0.1), K_CCE(from_logits=True, label_smoothing=0.1), True),
        (FOCAL(from_logits=True, gamma=1.5), K_FOCAL(from_logits=True, gamma=1.5), True),
    ],
    ids=["sparse", "categorical-smoothing", "focal"],
)
def test_model_fit_on_digits_matches_keras(ours, theirs, one_hot):
    got, our_weights = _fit_digits(ours, one_hot)
    want, their_weights = _fit_digits(theirs, one_hot)
    assert got[-1] < 0.7 * got[0]  # it learns
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for a, b in zip(our_weights, their_weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------------
# PyTorch's cross_entropy in float64: an independent implementation, with its own
# label_smoothing and ignore_index (mean over the rows not ignored, as Keras's mask).

TORCH_REDUCTIONS = {"sum_over_batch_size": "mean", "sum": "sum", None: "none"}


def _torch_value_and_gradient(y_true, logits, reduction, scale, **kwargs):
    import torch

    logits = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    target = torch.tensor(y_true)
    # torch puts the classes on axis 1: (batch, seq, classes) -> (batch, classes, seq)
    moved = logits.movedim(-1, 1) if logits.ndim > 2 else logits
    target = target.movedim(-1, 1) if target.is_floating_point() and target.ndim > 2 else target
    loss = scale * torch.nn.functional.cross_entropy(moved, target, reduction=TORCH_REDUCTIONS[reduction], **kwargs)
    loss.sum().backward()
    return loss.detach().numpy(), logits.grad.numpy()


TORCH_CASES = [
    # (fusedloss class, its kwargs, inputs (labels, logits), torch's kwargs)
    pytest.param(SCCE, {}, lambda: sparse_inputs((41, 401)), {}, id="sparse"),
    pytest.param(SCCE, {"ignore_class": 3}, lambda: sparse_inputs((3, 7, 29), ignore=3), {"ignore_index": 3},
                 id="sparse-seq-ignore"),
    pytest.param(CCE, {"label_smoothing": 0.1}, lambda: sparse_inputs((41, 401)), {"label_smoothing": 0.1},
                 id="one-hot-smoothing"),
    pytest.param(CCE, {}, lambda: dense_inputs((3, 5, 33)), {}, id="soft-targets-seq"),
    pytest.param(CCE, {"label_smoothing": 0.2}, lambda: dense_inputs((17, 10)), {"label_smoothing": 0.2},
                 id="soft-targets-smoothing"),
]


@pytest.mark.parametrize("loss_class, kwargs, make, torch_kwargs", TORCH_CASES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_values_and_gradients_match_torch_cross_entropy_in_float64(loss_class, kwargs, make, torch_kwargs, reduction):
    labels, logits = make()
    torch_loss, torch_grad = _torch_value_and_gradient(labels, logits, reduction, 2.0, **torch_kwargs)
    # one-hot where the categorical form gets class indices (torch takes those directly)
    y_true = np.eye(logits.shape[-1])[labels] if loss_class is CCE and labels.dtype.kind == "i" else labels
    loss = loss_class(from_logits=True, reduction=reduction, dtype="float64", **kwargs)
    got_loss, got_grad = value_and_gradient(loss, tf.constant(y_true), tf.constant(logits), 2.0)
    np.testing.assert_allclose(got_loss, torch_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_grad, torch_grad, rtol=1e-10, atol=1e-14)


def test_from_logits_false_after_a_softmax_layer_uses_its_logits_as_keras_does():
    inputs = keras.Input((6,))
    probabilities = keras.layers.Dense(4, activation="softmax", dtype="float64")(inputs)
    model = keras.Model(inputs, probabilities)
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 6)) * 10)
    labels = tf.constant([0, 1, 2, 3, 0])
    for ours, theirs in [(SCCE(dtype="float64"), K_SCCE(dtype="float64")), (CCE(dtype="float64"), K_CCE(dtype="float64"))]:
        y_true = labels if isinstance(ours, SCCE) else tf.one_hot(labels, 4, dtype=tf.float64)

        @tf.function
        def losses(y_true, x, ours=ours, theirs=theirs):
            y_pred = model(x)
            return ours(y_true, y_pred), theirs(y_true, y_pred)

        got, want = losses(y_true, x)
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("n_classes", [5, 40000])
def test_out_of_range_label_is_an_error_naming_it_and_the_class_count(n_classes):
    logits = tf.zeros((3, n_classes))
    # ValueError eagerly (numpy_function re-raises it), InvalidArgumentError in a graph
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=rf"\[0, {n_classes}\).*got label {n_classes}"):
        fusedloss.sparse_categorical_crossentropy(tf.constant([0, n_classes, 1]), logits, from_logits=True)


def test_out_of_range_label_on_the_tf_ops_path_is_an_error_too(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_MIN_FUSED_SIZE", "1000000")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)labels must be in \[0, n_classes\).*5.*got label.*7"):
        fusedloss.sparse_categorical_crossentropy(tf.constant([0, 7, 1]), tf.zeros((3, 5)), from_logits=True)


def test_nan_in_a_row_gives_nan_in_that_row_only():
    logits = np.random.default_rng(0).normal(size=(4, 30))
    logits[2, 7] = np.nan
    y_true, y_pred = tf.constant([1, 2, 3, 4]), tf.constant(logits)
    loss, grad = value_and_gradient(lambda t, p: fusedloss.sparse_categorical_crossentropy(t, p, from_logits=True), y_true, y_pred)
    assert np.isnan(loss[2]) and np.all(np.isnan(grad[2]))
    assert np.all(np.isfinite(np.delete(loss, 2))) and np.all(np.isfinite(np.delete(grad, 2, axis=0)))


def test_huge_logits_match_keras_exactly_enough():
    logits = tf.constant([[-1e4, 1e4, 0.0, 1e4 - 1.0], [1e4, -1e4, -1e4, 1e4]], tf.float32)
    labels = tf.constant([0, 1])
    loss, grad = value_and_gradient(SCCE(from_logits=True, reduction=None), labels, logits)
    want_loss, want_grad = value_and_gradient(K_SCCE(from_logits=True, reduction=None), labels, logits)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)


def test_labels_of_a_wrong_shape_are_an_error_naming_it():
    with pytest.raises(ValueError, match="labels must have shape"):
        fusedloss.sparse_categorical_crossentropy(tf.zeros((3, 2), tf.int64), tf.zeros((3, 5)), from_logits=True)
