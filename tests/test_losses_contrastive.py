"""Keras classes of the two contrastive losses: configuration, saving, and training
exactly like the same losses written with TF ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedloss


class TFOpContrastive(keras.losses.Loss):
    """The distance loss with plain TF ops (TF Addons' formula), for comparison."""

    def __init__(self, margin=1.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = margin

    def terms(self, y_true, distance):
        y_true = tf.cast(y_true, distance.dtype)
        return y_true * tf.square(distance) + (1.0 - y_true) * tf.square(tf.maximum(self.margin - distance, 0.0))

    def call(self, y_true, y_pred):
        return tf.reduce_mean(self.terms(tf.reshape(y_true, tf.shape(y_pred)), y_pred), axis=-1)


class TFOpEmbeddingContrastive(TFOpContrastive):
    """A Euclidean distance of the stacked pair, then the loss, with plain TF ops."""

    def call(self, y_true, y_pred):
        distance = tf.sqrt(tf.reduce_sum(tf.square(y_pred[:, 0] - y_pred[:, 1]), axis=-1))
        return self.terms(tf.reshape(y_true, [-1]), distance)


CONFIGS = (
    (
        fusedloss.ContrastiveLoss,
        {},
        {"name": "fused_contrastive", "reduction": "sum_over_batch_size", "dtype": None, "margin": 1.0},
    ),
    (
        fusedloss.ContrastiveLoss,
        {"margin": 0.0, "reduction": "sum", "name": "c", "dtype": "float64"},
        {"name": "c", "reduction": "sum", "dtype": "float64", "margin": 0.0},
    ),
    (
        fusedloss.EmbeddingContrastiveLoss,
        {},
        {"name": "fused_embedding_contrastive", "reduction": "sum_over_batch_size", "dtype": None, "margin": 1.0},
    ),
    (
        fusedloss.EmbeddingContrastiveLoss,
        {"margin": 2, "reduction": "none", "name": "e"},
        {"name": "e", "reduction": "none", "dtype": None, "margin": 2.0},
    ),
)


@pytest.mark.parametrize("cls, kwargs, config", CONFIGS)
def test_get_config_is_exact_and_round_trips(cls, kwargs, config):
    loss = cls(**kwargs)
    assert loss.get_config() == config
    assert type(loss.get_config()["margin"]) is float
    rebuilt = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(rebuilt) is cls and rebuilt.get_config() == config


REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reductions_and_sample_weight_like_tf_ops(reduction):
    rng = np.random.default_rng(0)
    weights = rng.uniform(0, 2, 7).astype(np.float32)
    labels = (rng.random(7) < 0.5).astype(np.float32)
    distances = rng.uniform(0, 2, (7, 1)).astype(np.float32)
    pairs = rng.normal(size=(7, 2, 5)).astype(np.float32)
    for fused, tf_ops, y_pred in (
        (fusedloss.ContrastiveLoss, TFOpContrastive, distances),
        (fusedloss.EmbeddingContrastiveLoss, TFOpEmbeddingContrastive, pairs),
    ):
        got = fused(margin=1.5, reduction=reduction)(labels, y_pred, sample_weight=weights)
        expected = tf_ops(margin=1.5, reduction=reduction)(labels, y_pred, sample_weight=weights)
        np.testing.assert_allclose(got, expected, rtol=1e-5)


# ---------------------------------------------------------------------------------
# Training: the fused loss and its TF-op formulation give the same run

N_SAMPLES, N_FEATURES, BATCH = 50, 6, 16  # the last batch is short: 50 = 3 * 16 + 2


def distance_model():
    inputs = keras.Input((N_FEATURES,))  # batch dimension unknown
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="softplus")(hidden))


def pair_model():
    left, right = keras.Input((N_FEATURES,)), keras.Input((N_FEATURES,))
    encoder = keras.Sequential([keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(3)])
    return keras.Model([left, right], keras.ops.stack([encoder(left), encoder(right)], axis=1))


def training_data(seed=0):
    rng = np.random.default_rng(seed)
    left = rng.normal(size=(N_SAMPLES, N_FEATURES)).astype(np.float32)
    right = rng.normal(size=(N_SAMPLES, N_FEATURES)).astype(np.float32)
    labels = (rng.random(N_SAMPLES) < 0.5).astype(np.float32)
    weights = rng.uniform(0.2, 2.0, N_SAMPLES).astype(np.float32)
    return left, right, labels, weights


def train(build, loss, inputs, labels, weights, jit_compile=False):
    keras.utils.set_random_seed(1)  # same initial weights for every run
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, jit_compile=jit_compile)
    history = model.fit(inputs, labels, sample_weight=weights, batch_size=BATCH, epochs=4, shuffle=False, verbose=0)
    return history.history["loss"], model.get_weights()


def assert_same_run(got, expected):
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)
    for weights, expected_weights in zip(got[1], expected[1]):
        np.testing.assert_allclose(weights, expected_weights, rtol=1e-5, atol=1e-6)
    # The run did train: the loss moved.
    assert abs(expected[0][-1] - expected[0][0]) > 1e-3


@pytest.mark.parametrize("jit_compile", (False, True), ids=("bridge", "xla"))
def test_fit_embedding_contrastive_like_tf_ops(jit_compile):
    left, right, labels, weights = training_data()
    loss = fusedloss.EmbeddingContrastiveLoss(margin=1.5)
    fused = train(pair_model, loss, [left, right], labels, weights, jit_compile)
    tf_ops = train(pair_model, TFOpEmbeddingContrastive(margin=1.5), [left, right], labels, weights)
    assert_same_run(fused, tf_ops)


@pytest.mark.parametrize(
    "build, loss",
    (
        (distance_model, fusedloss.ContrastiveLoss(margin=0.5, reduction="sum")),
        (pair_model, fusedloss.EmbeddingContrastiveLoss(margin=2.0, name="siamese")),
    ),
)
def test_keras_save_and_load(tmp_path, build, loss):
    left, right, labels, _ = training_data()
    inputs = left if build is distance_model else [left, right]
    model = build()
    model.compile(optimizer="sgd", loss=loss)
    model.fit(inputs, labels, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()
    assert loaded.evaluate(inputs, labels, verbose=0) == pytest.approx(model.evaluate(inputs, labels, verbose=0), rel=1e-6)
