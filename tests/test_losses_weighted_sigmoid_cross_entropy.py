"""The Keras class WeightedSigmoidCrossEntropy: the same semantics as a Keras loss built
on ``tf.nn.weighted_cross_entropy_with_logits``, exact config, saving, fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedloss


class TFWeightedCrossEntropy(keras.losses.Loss):
    """The reference: the same loss from TensorFlow's op, Keras doing the rest."""

    def __init__(self, pos_weight=1.0, label_smoothing=0.0, reduction="sum_over_batch_size", name="tf_wce"):
        super().__init__(name=name, reduction=reduction)
        self.pos_weight, self.label_smoothing = pos_weight, label_smoothing

    def call(self, y_true, y_pred):
        z = tf.cast(y_true, y_pred.dtype) * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        values = tf.nn.weighted_cross_entropy_with_logits(z, y_pred, tf.constant(self.pos_weight, y_pred.dtype))
        return tf.reduce_mean(values, axis=-1)


def random_batch(shape=(12, 7), seed=0):
    rng = np.random.default_rng(seed)
    y_true = (rng.uniform(size=shape) < 0.4).astype(np.float32)
    logits = (3.0 * rng.normal(size=shape)).astype(np.float32)
    sample_weight = rng.uniform(0.0, 2.0, size=shape[0]).astype(np.float32)
    return y_true, logits, sample_weight


def test_rank_3_with_mask_like_weights():
    y_true, logits, _ = random_batch((4, 5, 6))
    weight = np.array([[1, 1, 0, 0, 1]] * 4, np.float32)
    fused = fusedloss.WeightedSigmoidCrossEntropy(2.0)(y_true, logits, sample_weight=weight)
    np.testing.assert_allclose(fused, TFWeightedCrossEntropy(2.0)(y_true, logits, sample_weight=weight), rtol=1e-6)


def test_config_is_exact_and_round_trips():
    default = fusedloss.WeightedSigmoidCrossEntropy()
    assert default.get_config() == {
        "name": "fused_weighted_sigmoid_cross_entropy",
        "reduction": "sum_over_batch_size",
        "dtype": None,
        "pos_weight": 1.0,
        "label_smoothing": 0.0,
    }
    loss = fusedloss.WeightedSigmoidCrossEntropy(
        pos_weight=np.array([1, 2.5, 4]), label_smoothing=0.2, reduction="sum", name="mine", dtype="float64"
    )
    config = loss.get_config()
    assert config == {"name": "mine", "reduction": "sum", "dtype": "float64", "pos_weight": [1.0, 2.5, 4.0], "label_smoothing": 0.2}
    assert type(config["pos_weight"]) is list and all(type(w) is float for w in config["pos_weight"])
    assert fusedloss.WeightedSigmoidCrossEntropy.from_config(config).get_config() == config
    assert fusedloss.WeightedSigmoidCrossEntropy(pos_weight=3).get_config()["pos_weight"] == 3.0


def test_is_registered_under_the_package_name():
    cls = fusedloss.WeightedSigmoidCrossEntropy
    assert keras.saving.get_registered_name(cls) == "fusedloss>WeightedSigmoidCrossEntropy"
    restored = keras.losses.deserialize(keras.losses.serialize(cls(pos_weight=[2.0, 3.0], label_smoothing=0.1)))
    assert isinstance(restored, cls) and restored.pos_weight == (2.0, 3.0) and restored.label_smoothing == 0.1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pos_weight": -2.0}, r"pos_weight must satisfy pos_weight >= 0, got pos_weight=-2.0"),
        ({"pos_weight": float("nan")}, r"pos_weight must be finite, got nan"),
        ({"pos_weight": [1.0, float("inf")]}, r"pos_weight\[1\] must be finite, got inf"),
        ({"pos_weight": [[1.0]]}, r"non-empty 1-D sequence of numbers, got shape \(1, 1\)"),
        ({"label_smoothing": 1.01}, r"label_smoothing must satisfy 0 <= label_smoothing <= 1, got label_smoothing=1.01"),
        ({"label_smoothing": -1e-3}, r"label_smoothing must satisfy 0 <= label_smoothing <= 1, got label_smoothing=-0.001"),
    ],
)
def test_bad_parameters_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fusedloss.WeightedSigmoidCrossEntropy(**kwargs)


def test_pos_weight_length_is_checked_at_the_call_naming_both_lengths():
    loss = fusedloss.WeightedSigmoidCrossEntropy(pos_weight=[1.0, 2.0])
    y_true, logits, _ = random_batch((4, 3))
    with pytest.raises(ValueError, match=r"y_pred has 3 classes \(its last axis\), got 2 values"):
        loss(y_true, logits)


def small_model(seed, outputs=3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(6,))  # unknown batch dimension
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(outputs)(hidden))  # logits


def train(loss, epochs=4):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = (np.sin(x[:, :3]) + 0.3 * rng.normal(size=(96, 3)) > 0).astype(np.float32)
    sample_weight = rng.uniform(0.2, 2.0, size=96).astype(np.float32)
    model = small_model(seed=11)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    history = model.fit(x, y, sample_weight=sample_weight, batch_size=20, epochs=epochs, shuffle=False, verbose=0)
    return history.history["loss"], model.get_weights()


def test_saved_model_loads_with_its_fused_loss_and_keeps_training(tmp_path):
    model = small_model(seed=3)
    model.compile(optimizer="adam", loss=fusedloss.WeightedSigmoidCrossEntropy([1.0, 2.0, 3.0], 0.1, name="saved_wce"))
    x, y = np.ones((8, 6), np.float32), np.eye(8, 3, dtype=np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, fusedloss.WeightedSigmoidCrossEntropy)
    assert loaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6)
    loaded.fit(x, y, epochs=1, verbose=0)
