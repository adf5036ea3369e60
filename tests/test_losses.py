"""Keras classes (losses.py): same semantics as keras.losses.Huber, config, saving, fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedloss

REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None]


def random_batch(shape=(12, 7), seed=0):
    rng = np.random.default_rng(seed)
    y_true = rng.normal(size=shape).astype(np.float32)
    y_pred = (y_true + 2 * rng.normal(size=shape)).astype(np.float32)
    sample_weight = rng.uniform(0.0, 2.0, size=shape[0]).astype(np.float32)
    return y_true, y_pred, sample_weight


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_huber_class_matches_keras_for_every_reduction(reduction, weighted):
    y_true, y_pred, sample_weight = random_batch()
    weight = sample_weight if weighted else None
    fused, native = fusedloss.Huber(0.8, reduction=reduction), keras.losses.Huber(0.8, reduction=reduction)
    y_pred = tf.constant(y_pred)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(y_pred)
        fused_loss = fused(y_true, y_pred, sample_weight=weight)
        native_loss = native(y_true, y_pred, sample_weight=weight)
    np.testing.assert_allclose(fused_loss, native_loss, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(fused_loss, y_pred), tape.gradient(native_loss, y_pred), rtol=1e-5, atol=1e-8)


def test_huber_class_rank_3_with_mask_like_weights():
    y_true, y_pred, _ = random_batch((4, 5, 6))
    weight = np.array([[1, 1, 0, 0, 1]] * 4, np.float32)
    fused = fusedloss.Huber()(y_true, y_pred, sample_weight=weight)
    np.testing.assert_allclose(fused, keras.losses.Huber()(y_true, y_pred, sample_weight=weight), rtol=1e-6)


def test_huber_config_is_exact_and_round_trips():
    loss = fusedloss.Huber(delta=2.0, reduction="sum", name="my_huber")
    assert loss.get_config() == {"name": "my_huber", "reduction": "sum", "dtype": None, "delta": 2.0}
    again = fusedloss.Huber.from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    assert fusedloss.Huber().get_config() == {
        "name": "fused_huber",
        "reduction": "sum_over_batch_size",
        "dtype": None,
        "delta": 1.0,
    }
    assert fusedloss.Huber(dtype="float64").dtype == "float64"


def test_huber_is_registered_under_the_package_name():
    assert keras.saving.get_registered_name(fusedloss.Huber) == "fusedloss>Huber"
    restored = keras.losses.deserialize(keras.losses.serialize(fusedloss.Huber(delta=3.0)))
    assert isinstance(restored, fusedloss.Huber) and restored.delta == 3.0


@pytest.mark.parametrize("delta", [0.0, -2.0, float("nan"), float("inf")])
def test_bad_delta_fails_at_construction(delta):
    with pytest.raises(ValueError, match="delta must (satisfy delta > 0|be finite)"):
        fusedloss.Huber(delta=delta)


def small_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(6,))  # unknown batch dimension
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def train(loss, epochs=4):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = (3 * np.sin(x[:, :3]) + rng.normal(size=(96, 3))).astype(np.float32)
    sample_weight = rng.uniform(0.2, 2.0, size=96).astype(np.float32)
    model = small_model(seed=11)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
    history = model.fit(x, y, sample_weight=sample_weight, batch_size=20, epochs=epochs, shuffle=False, verbose=0)
    return history.history["loss"], model.get_weights()


def test_fit_matches_keras_huber():
    fused_losses, fused_weights = train(fusedloss.Huber(delta=0.9))
    native_losses, native_weights = train(keras.losses.Huber(delta=0.9))
    np.testing.assert_allclose(fused_losses, native_losses, rtol=1e-5)
    assert fused_losses[-1] < fused_losses[0]  # it did train
    for fused, native in zip(fused_weights, native_weights):
        np.testing.assert_allclose(fused, native, rtol=1e-4, atol=1e-6)


def test_saved_model_loads_with_its_fused_loss_and_keeps_training(tmp_path):
    model = small_model(seed=3)
    model.compile(optimizer="adam", loss=fusedloss.Huber(delta=2.5, name="saved_huber"))
    x, y = np.ones((8, 6), np.float32), np.zeros((8, 3), np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, fusedloss.Huber)
    assert loaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6)
    loaded.fit(x, y, epochs=1, verbose=0)
