"""Keras classes (losses.py), what is particular to Huber: masks over rank 3, registration, saving and training on; the generic checks are the conformance suite's."""

import keras
import numpy as np

import fusedloss


def random_batch(shape=(12, 7), seed=0):
    rng = np.random.default_rng(seed)
    y_true = rng.normal(size=shape).astype(np.float32)
    y_pred = (y_true + 2 * rng.normal(size=shape)).astype(np.float32)
    sample_weight = rng.uniform(0.0, 2.0, size=shape[0]).astype(np.float32)
    return y_true, y_pred, sample_weight


def test_huber_class_rank_3_with_mask_like_weights():
    y_true, y_pred, _ = random_batch((4, 5, 6))
    weight = np.array([[1, 1, 0, 0, 1]] * 4, np.float32)
    fused = fusedloss.Huber()(y_true, y_pred, sample_weight=weight)
    np.testing.assert_allclose(fused, keras.losses.Huber()(y_true, y_pred, sample_weight=weight), rtol=1e-6)


def test_huber_is_registered_under_the_package_name():
    assert keras.saving.get_registered_name(fusedloss.Huber) == "fusedloss>Huber"
    restored = keras.losses.deserialize(keras.losses.serialize(fusedloss.Huber(delta=3.0)))
    assert isinstance(restored, fusedloss.Huber) and restored.delta == 3.0


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
