"""Every fused loss everywhere Keras goes: XLA, no tape, tf.distribute, dtypes, mixed
precision, saving, determinism, threads. One table, one row per loss."""

import os
import subprocess
import sys
import textwrap
import threading
from typing import Callable, NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedloss
from tests.test_losses_contrastive import TFOpContrastive, TFOpEmbeddingContrastive
from tests.test_losses_weighted_sigmoid_cross_entropy import TFWeightedCrossEntropy


class LossCase(NamedTuple):
    name: str
    fused: Callable  # () -> a fusedloss Keras loss
    native: Callable  # () -> the Keras/TF-op loss with the same values
    batch: Callable  # (rng, n) -> (y_true, y_pred) float32 arrays
    output_shape: tuple  # the model's output shape, batch excluded


def regression_batch(rng, n):
    y_true = rng.normal(size=(n, 3)).astype(np.float32)
    return y_true, (y_true + 2 * rng.normal(size=(n, 3))).astype(np.float32)


def distance_batch(rng, n):
    labels = rng.integers(0, 2, size=(n, 1)).astype(np.float32)
    return labels, rng.uniform(0.0, 2.0, size=(n, 1)).astype(np.float32)


def multi_label_batch(rng, n):
    labels = (rng.random(size=(n, 5)) < 0.3).astype(np.float32)
    return labels, (3 * rng.normal(size=(n, 5))).astype(np.float32)


def pair_batch(rng, n):
    labels = rng.integers(0, 2, size=n).astype(np.float32)
    return labels, rng.normal(size=(n, 2, 4)).astype(np.float32)


LOSSES = [
    LossCase("huber", lambda: fusedloss.Huber(delta=0.9), lambda: keras.losses.Huber(delta=0.9), regression_batch, (3,)),
    LossCase(
        "contrastive",
        lambda: fusedloss.ContrastiveLoss(margin=1.5),
        lambda: TFOpContrastive(margin=1.5),
        distance_batch,
        (1,),
    ),
    LossCase(
        "embedding_contrastive",
        lambda: fusedloss.EmbeddingContrastiveLoss(margin=1.5),
        lambda: TFOpEmbeddingContrastive(margin=1.5),
        pair_batch,
        (2, 4),
    ),
    LossCase(
        "weighted_sigmoid_cross_entropy",
        lambda: fusedloss.WeightedSigmoidCrossEntropy(pos_weight=[0.5, 1.0, 2.0, 4.0, 8.0], label_smoothing=0.1),
        lambda: TFWeightedCrossEntropy(pos_weight=[0.5, 1.0, 2.0, 4.0, 8.0], label_smoothing=0.1),
        multi_label_batch,
        (5,),
    ),
]
IDS = [case.name for case in LOSSES]


def value_and_gradient(loss, y_true, y_pred):
    y_pred = tf.convert_to_tensor(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        value = loss(y_true, y_pred)
    return value, tape.gradient(value, y_pred)


def model_for(case, seed=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    outputs = keras.layers.Dense(int(np.prod(case.output_shape)))(hidden)
    outputs = keras.layers.Reshape(case.output_shape)(outputs)
    return keras.Model(inputs, outputs)


def training_data(case, n=48):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y_true, _ = case.batch(rng, n)
    return x, y_true, rng.uniform(0.5, 1.5, size=n).astype(np.float32)


def fit(case, loss, **compile_args):
    x, y, sample_weight = training_data(case)
    model = model_for(case)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss, **compile_args)
    history = model.fit(x, y, sample_weight=sample_weight, batch_size=16, epochs=3, shuffle=False, verbose=0)
    return history.history["loss"], model.get_weights()


# ---------------------------------------------------------------------------------
# XLA


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_xla_function_matches_the_fused_path(case):
    y_true, y_pred = case.batch(np.random.default_rng(0), 33)
    xla = tf.function(lambda t, p: value_and_gradient(case.fused(), t, p), jit_compile=True)
    for got, want in zip(xla(y_true, y_pred), value_and_gradient(case.fused(), y_true, y_pred)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_compile_with_jit_compile_trains_like_native(case):
    fused = fit(case, case.fused(), jit_compile=True)
    native = fit(case, case.native(), jit_compile=True)
    np.testing.assert_allclose(fused[0], native[0], rtol=1e-5)
    for got, want in zip(fused[1], native[1]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------
# Evaluate (no tape) and fit agree with native


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_evaluate_without_a_tape_matches_native(case):
    x, y, sample_weight = training_data(case)
    model = model_for(case)
    model.compile(loss=case.fused())
    fused = model.evaluate(x, y, sample_weight=sample_weight, verbose=0)
    model.compile(loss=case.native())
    native = model.evaluate(x, y, sample_weight=sample_weight, verbose=0)
    np.testing.assert_allclose(fused, native, rtol=1e-6)


# ---------------------------------------------------------------------------------
# Dtypes and mixed precision


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_in_and_out(case, dtype):
    y_true, y_pred = case.batch(np.random.default_rng(1), 9)
    half_true, half_pred = tf.cast(y_true, dtype), tf.cast(y_pred, dtype)
    loss, grad = value_and_gradient(case.fused().call, half_true, half_pred)
    assert loss.dtype == grad.dtype == dtype
    # computed in float32 from the half-precision inputs, then rounded once
    want_loss, want_grad = value_and_gradient(case.native().call, tf.cast(half_true, tf.float32), tf.cast(half_pred, tf.float32))
    np.testing.assert_allclose(tf.cast(loss, tf.float32), tf.cast(tf.cast(want_loss, dtype), tf.float32), rtol=1e-6)
    # The per-sample losses' own gradient (upstream 1, not the 1 / batch the kernel
    # wrote it for) is rescaled in float32 first: a float32 rounding more, which can
    # move the half-precision result by one unit in the last place.
    half_ulp = {tf.float16: 2.0**-10, tf.bfloat16: 2.0**-7}[dtype]
    np.testing.assert_allclose(
        tf.cast(grad, tf.float32), tf.cast(tf.cast(want_grad, dtype), tf.float32), rtol=half_ulp, atol=1e-7
    )


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_float64_stays_float64(case):
    y_true, y_pred = case.batch(np.random.default_rng(1), 9)
    loss, grad = value_and_gradient(case.fused().call, y_true.astype(np.float64), y_pred.astype(np.float64))
    assert loss.dtype == grad.dtype == tf.float64


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_like_native(case, policy):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        fused = fit(case, case.fused())
        native = fit(case, case.native())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    np.testing.assert_allclose(fused[0], native[0], rtol=1e-3)
    assert np.all(np.isfinite(fused[0])) and fused[0][-1] < fused[0][0]


# ---------------------------------------------------------------------------------
# Saving


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_keras_save_load_and_keep_training(case, tmp_path):
    x, y, sample_weight = training_data(case)
    model = model_for(case)
    model.compile(optimizer="adam", loss=case.fused())
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.loss) is type(model.loss) and loaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6)
    before = loaded.evaluate(x, y, verbose=0)
    loaded.fit(x, y, sample_weight=sample_weight, epochs=3, verbose=0)
    assert loaded.evaluate(x, y, verbose=0) < before


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_exported_inference_has_no_loss_in_it(case, tmp_path):
    x, y, _ = training_data(case)
    model = model_for(case)
    model.compile(optimizer="adam", loss=case.fused())
    model.fit(x, y, epochs=1, verbose=0)
    model.export(tmp_path / "exported", verbose=False)
    restored = tf.saved_model.load(str(tmp_path / "exported"))
    np.testing.assert_allclose(restored.serve(x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-7)
    # The serialized graph, nested functions included, holds no Python callback op.
    saved_graph = (tmp_path / "exported" / "saved_model.pb").read_bytes()
    assert b"PyFunc" not in saved_graph and b"fused_" not in saved_graph


# ---------------------------------------------------------------------------------
# Determinism and threads


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_repeated_calls_are_bit_identical(case):
    y_true, y_pred = case.batch(np.random.default_rng(3), 1000)
    first = [t.numpy() for t in value_and_gradient(case.fused(), y_true, y_pred)]
    for _ in range(3):
        again = value_and_gradient(case.fused(), y_true, y_pred)
        for got, want in zip(again, first):
            np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_eight_python_threads_at_once_match_serial(case):
    batches = [case.batch(np.random.default_rng(seed), 300) for seed in range(8)]
    step = tf.function(lambda t, p: value_and_gradient(case.fused(), t, p))
    serial = [[t.numpy() for t in step(*batch)] for batch in batches]
    results, start = [None] * 8, threading.Barrier(8)

    def worker(index):
        start.wait()
        for _ in range(5):
            results[index] = [t.numpy() for t in step(*batches[index])]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


# ---------------------------------------------------------------------------------
# Child processes: settings that must precede TensorFlow's or numba's start-up


def run_child(script, **env):
    """Run ``script`` in a fresh interpreter that imports this checkout's package and tests."""
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package_parent = os.path.dirname(os.path.dirname(fusedloss.__file__))
    child_env = {**os.environ, **env}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [repository, package_parent, child_env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=child_env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_mirrored_strategy_on_two_logical_cpus_trains_like_native():
    script = """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, fusedloss
        from tests.test_integration import LOSSES, training_data, model_for

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        for case in LOSSES:
            runs = []
            for loss_factory in (case.fused, case.native):
                x, y, w = training_data(case)
                with strategy.scope():
                    model = model_for(case)
                    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss_factory())
                history = model.fit(x, y, sample_weight=w, batch_size=16, epochs=3, shuffle=False, verbose=0)
                runs.append((history.history["loss"], model.get_weights()))
            np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
            for got, want in zip(runs[0][1], runs[1][1]):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
            print(case.name, "mirrored ok", runs[0][0])
    """
    result = run_child(script)
    assert result.stdout.count("mirrored ok") == len(LOSSES)


def test_unwritable_numba_cache_directory_still_works(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    script = """
        import numpy as np
        from fusedloss.kernels import cpu, reference
        y_true, y_pred = np.zeros((3, 4)), np.linspace(-3, 3, 12).reshape(3, 4)
        np.testing.assert_allclose(cpu.huber(y_true, y_pred)[0], reference.huber(y_true, y_pred)[0])
        print("computed")
    """
    assert "computed" in run_child(script, NUMBA_CACHE_DIR=str(cache)).stdout


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_an_earlier_gradient_is_never_overwritten(case):
    # The bridge reuses its output buffers: never one that a live tensor still uses.
    step = tf.function(lambda t, p: value_and_gradient(case.fused(), t, p))
    first = step(*case.batch(np.random.default_rng(4), 64))
    first_copy = [t.numpy().copy() for t in first]
    for seed in range(5, 8):
        step(*case.batch(np.random.default_rng(seed), 64))
    for kept, copy in zip(first, first_copy):
        np.testing.assert_array_equal(kept.numpy(), copy)
