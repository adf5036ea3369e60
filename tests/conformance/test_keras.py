"""The Keras side of every row: configuration, bad parameters, ``.keras`` files and a
short ``model.fit`` that must end with the weights the reference loss gives."""

import inspect

import keras
import numpy as np
import pytest

from .helpers import fused_loss, reference_loss
from .table import ROWS, cases, inputs, kwargs_for, skip_if_listed

KERAS_ROWS = [row for row in ROWS if row.keras is not None]
SHAPE = (4, 3)


@pytest.mark.parametrize("row, variant", cases([row for row in ROWS if row.keras is not None]))
def test_get_config_has_keras_keys_and_values(row, variant):
    fused = row.loss(**variant.kwargs)
    native = row.keras(**variant.kwargs)
    config, native_config = fused.get_config(), native.get_config()
    assert set(config) == set(native_config) | row.extra_config_keys
    for key, value in native_config.items():
        if key != "name":
            assert config[key] == value and type(config[key]) is type(value), key
    assert config["name"].startswith("fused_") and config["dtype"] is None


@pytest.mark.parametrize("row, variant", cases())
def test_from_config_round_trip(row, variant):
    loss = row.loss(reduction="sum", name="custom name", dtype="float64", **kwargs_for(variant, SHAPE))
    config = loss.get_config()
    again = type(loss).from_config(config)
    assert again.get_config() == config
    assert keras.losses.deserialize(keras.losses.serialize(loss)).get_config() == config


def _numeric_parameters(row):
    """The constructor's parameters that are numbers (not static choices)."""
    if row.numeric_parameters is not None:
        return list(row.numeric_parameters)
    definition = getattr(row.loss, "definition", None)
    if definition is not None:
        return list(definition.numeric)
    keras_arguments = ("reduction", "name", "dtype")
    return [p for p in inspect.signature(row.loss).parameters if p not in keras_arguments]


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_bad_parameters_raise_value_error_naming_them(row):
    checked = 0
    for name in _numeric_parameters(row):
        for bad in (float("nan"), float("inf"), "1.0", None):
            with pytest.raises(ValueError, match=name):
                row.loss(**{name: bad})
            checked += 1
    for kwargs, name in row.bad_kwargs:
        with pytest.raises(ValueError, match=name):
            row.loss(**kwargs)
        checked += 1
    if not checked:
        pytest.skip(f"{row.name} has no parameters")


def _model(row, columns, seed=7):
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(columns, activation=row.fit_activation)])
    model.layers[0].set_weights([rng.normal(0, 0.4, (5, columns)).astype("float32"), np.zeros(columns, "float32")])
    return model


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_keras_file_round_trip(row, tmp_path):
    variant = row.variants[-1]
    model = _model(row, SHAPE[-1])
    loss = row.loss(**kwargs_for(variant, SHAPE))
    model.compile(optimizer="sgd", loss=loss)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_fit_gives_the_weights_of_the_reference_loss(row):
    """Three SGD steps with sample weights: the same weights as training with the Keras
    loss (or the row's TensorFlow formula), in float32."""
    skip_if_listed(row, "fit")
    variant = row.variants[0]
    columns, batch = SHAPE[-1], 16
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3 * batch, 5)).astype("float32")
    (y, _), _ = inputs(row, variant, (3 * batch, columns), "float32", ties=False, seed=12)
    weights = rng.uniform(0.5, 1.5, 3 * batch).astype("float32")
    trained = []
    for loss in (row.loss(**kwargs_for(variant, SHAPE)), reference_loss(row, variant, SHAPE, dtype="float32")):
        model = _model(row, columns)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss, jit_compile=False)
        model.fit(x, y, sample_weight=weights, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        trained.append(model.get_weights())
    for got, want in zip(*trained):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    assert not np.allclose(trained[0][0], _model(row, columns).get_weights()[0])  # it did train
