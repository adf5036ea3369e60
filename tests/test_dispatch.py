"""How ``ops`` runs a loss: fused kernel or TensorFlow ops by size, and the backward's
rescale.

Below ``min_fused_size()`` elements a loss runs as TensorFlow ops (the ``composite``),
from it on as the fused kernel; both must give the same values and gradients (for
every loss that ``ops.dispatch`` serves), whether
the size is known when tracing or only when running (a ``tf.cond``). Which path ran is
observed by counting kernel launches.
"""

import functools
from typing import NamedTuple

import keras
import numpy as np
import pytest
import tensorflow as tf

import fusedloss
from fusedloss import ops
from fusedloss.backends import DEFAULT_MIN_FUSED_SIZE, DEFAULT_MIN_FUSED_SIZE_LOSS_ONLY
from fusedloss.kernels import reference


@pytest.fixture(autouse=True)
def default_threshold(monkeypatch):
    monkeypatch.delenv("FUSEDLOSS_MIN_FUSED_SIZE", raising=False)
    fusedloss.set_min_fused_size(None)
    yield
    fusedloss.set_min_fused_size(None)


def _counted(monkeypatch, name):
    """Count the calls of ``ops.<name>`` from now on (functions traced after this)."""
    counter = {"n": 0}
    real = getattr(ops, name)

    def counting(*args):
        counter["n"] += 1
        return real(*args)

    monkeypatch.setattr(ops, name, counting)
    return lambda: counter["n"]


@pytest.fixture
def launches(monkeypatch):
    """The number of fused kernel launches so far."""
    return _counted(monkeypatch, "_run_kernel")


# ---------------------------------------------------------------------------------
# The setting


def test_default_threshold():
    assert fusedloss.min_fused_size() == DEFAULT_MIN_FUSED_SIZE > 0
    # Forward only, the bridge has less to save: it pays off later.
    assert fusedloss.min_fused_size(with_grad=False) == DEFAULT_MIN_FUSED_SIZE_LOSS_ONLY > DEFAULT_MIN_FUSED_SIZE


def test_training_calls_are_fused_from_a_smaller_size_than_loss_only_calls(launches):
    rows = (DEFAULT_MIN_FUSED_SIZE + DEFAULT_MIN_FUSED_SIZE_LOSS_ONLY) // 2 // 41
    y_true, y_pred = _inputs((rows, 41))  # between the two default thresholds
    assert DEFAULT_MIN_FUSED_SIZE <= y_pred.size < DEFAULT_MIN_FUSED_SIZE_LOSS_ONLY
    loss_only = fusedloss.huber(y_true, y_pred)
    assert launches() == 0
    y_pred = tf.constant(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = fusedloss.huber(y_true, y_pred)
        mean = tf.reduce_mean(loss)
    assert launches() == 1
    np.testing.assert_allclose(loss, loss_only, rtol=1e-6)
    want_grad = reference.huber(y_true, y_pred.numpy())[1] / rows
    np.testing.assert_allclose(tape.gradient(mean, y_pred), want_grad, rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("text, size", [("0", 0), (" 4096 ", 4096), ("1e6", 1_000_000)])
def test_threshold_from_environment(monkeypatch, text, size):
    monkeypatch.setenv("FUSEDLOSS_MIN_FUSED_SIZE", text)
    assert fusedloss.min_fused_size() == fusedloss.min_fused_size(with_grad=False) == size


@pytest.mark.parametrize("text", ["many", "-1", "2.5", "inf", "nan"])
def test_bad_environment_value_is_named(monkeypatch, text):
    monkeypatch.setenv("FUSEDLOSS_MIN_FUSED_SIZE", text)
    with pytest.raises(ValueError, match="FUSEDLOSS_MIN_FUSED_SIZE"):
        fusedloss.min_fused_size()


def test_setter_overrides_environment_until_cleared(monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_MIN_FUSED_SIZE", "100")
    assert fusedloss.set_min_fused_size(7) is None
    assert fusedloss.min_fused_size() == fusedloss.min_fused_size(with_grad=False) == 7
    assert fusedloss.set_min_fused_size(None) == 7
    assert fusedloss.min_fused_size() == 100


@pytest.mark.parametrize("value", [-1, 0.5, "lots", True, float("inf")])
def test_setter_rejects_non_counts(value):
    with pytest.raises(ValueError, match="min_fused_size"):
        fusedloss.set_min_fused_size(value)
    assert fusedloss.min_fused_size() == DEFAULT_MIN_FUSED_SIZE


# ---------------------------------------------------------------------------------
# Which path runs


def _inputs(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    y_true = rng.standard_normal(shape)
    y_pred = y_true + 1.5 * rng.standard_normal(shape)
    return y_true.astype(dtype), y_pred.astype(dtype)


def test_static_size_below_threshold_runs_tensorflow_ops(launches):
    y_true, y_pred = _inputs((41, 401))
    fusedloss.set_min_fused_size(41 * 401 + 1)
    loss = tf.function(fusedloss.huber)(y_true, y_pred)
    assert launches() == 0
    np.testing.assert_allclose(loss, reference.huber(y_true, y_pred)[0], rtol=2e-6)


def test_static_size_at_threshold_runs_the_kernel(launches):
    y_true, y_pred = _inputs((41, 401))
    fusedloss.set_min_fused_size(41 * 401)
    loss = tf.function(fusedloss.huber)(y_true, y_pred)
    assert launches() == 1
    np.testing.assert_allclose(loss, reference.huber(y_true, y_pred)[0], rtol=2e-6)


def test_eager_calls_dispatch_on_their_size(launches):
    fusedloss.set_min_fused_size(1000)
    fusedloss.huber(*_inputs((3, 333)))
    assert launches() == 0
    fusedloss.huber(*_inputs((3, 334)))
    assert launches() == 1


def test_threshold_is_read_when_tracing(launches):
    y_true, y_pred = _inputs((4, 50))
    fusedloss.set_min_fused_size(0)
    traced = tf.function(fusedloss.huber)
    traced(y_true, y_pred)
    fusedloss.set_min_fused_size(10**9)
    traced(y_true, y_pred)  # the same trace: still fused
    assert launches() == 2
    tf.function(fusedloss.huber)(y_true, y_pred)  # a new trace sees the new value
    assert launches() == 2


def _graph_ops(function, *specs):
    return [op.type for op in function.get_concrete_function(*specs).graph.get_operations()]


def _graph_op_types(function, *specs):
    return set(_graph_ops(function, *specs))


def test_unknown_batch_dispatches_at_run_time_in_one_trace(launches):
    fusedloss.set_min_fused_size(5 * 401)
    spec = tf.TensorSpec([None, 401], tf.float32)
    traced = tf.function(fusedloss.huber, input_signature=[spec, spec])
    for rows, launched in ((4, 0), (5, 1), (41, 2), (1, 2)):
        y_true, y_pred = _inputs((rows, 401), seed=rows)
        np.testing.assert_allclose(traced(y_true, y_pred), reference.huber(y_true, y_pred)[0], rtol=2e-6)
        assert launches() == launched
    assert traced.experimental_get_tracing_count() == 1


def test_known_dimensions_reaching_threshold_decide_statically():
    fusedloss.set_min_fused_size(401)
    spec = tf.TensorSpec([None, 401], tf.float32)
    op_types = _graph_op_types(tf.function(fusedloss.huber), spec, spec)
    assert "PyFuncStateless" in op_types
    assert not op_types & {"If", "StatelessIf"}


def test_xla_runs_tensorflow_ops_whatever_the_threshold(launches):
    fusedloss.set_min_fused_size(0)
    y_true, y_pred = _inputs((41, 401))
    loss = tf.function(fusedloss.huber, jit_compile=True)(y_true, y_pred)
    assert launches() == 0
    np.testing.assert_allclose(loss, reference.huber(y_true, y_pred)[0], rtol=2e-6)


# ---------------------------------------------------------------------------------
# Both paths: the same values and gradients


class Case(NamedTuple):
    loss: str  # fusedloss.<loss>(y_true, y_pred, param)
    shape: tuple  # y_pred's
    dtype: type
    upstream_scale: float  # the gradient of upstream_scale * sum(loss): upstream != 1 too
    rtol: float
    param: float = 1.0  # delta, margin or pos_weight


CASES = (
    Case("huber", (41, 401), np.float32, 1.0, 2e-6),
    Case("huber", (41, 401), np.float32, 2.0, 2e-6),
    Case("huber", (3, 5, 7), np.float64, 2.0, 1e-13),
    Case("huber", (1, 1), np.float32, 1.0, 2e-6),
    Case("contrastive", (41, 7), np.float32, 2.0, 2e-6),
    Case("contrastive", (33, 1), np.float64, 1.0, 1e-13),
    Case("embedding_contrastive", (41, 2, 13), np.float32, 2.0, 1e-5),
    Case("embedding_contrastive", (9, 2, 5), np.float64, 1.0, 1e-12),
    # float32 exp/log1p approximations in the kernel: relative error below 2e-7.
    Case("weighted_sigmoid_cross_entropy", (41, 37), np.float32, 2.0, 1e-5, 2.5),
    Case("weighted_sigmoid_cross_entropy", (5, 3, 7), np.float64, 1.0, 1e-12, 0.5),
)


def _case_inputs(case):
    """``(y_true, y_pred)`` for ``case.loss``, both sides of its kinks."""
    rng = np.random.default_rng(4)
    if case.loss == "huber":
        return _inputs(case.shape, case.dtype)
    if case.loss == "contrastive":
        labels = rng.random(case.shape) < 0.5
        return labels.astype(case.dtype), (1.2 * np.abs(rng.standard_normal(case.shape))).astype(case.dtype)
    if case.loss == "weighted_sigmoid_cross_entropy":
        labels = rng.random(case.shape) < 0.3
        return labels.astype(case.dtype), (3.0 * rng.standard_normal(case.shape)).astype(case.dtype)
    labels = rng.random(case.shape[0]) < 0.5  # one per pair, distances around 1
    pairs = rng.standard_normal(case.shape) / np.sqrt(case.shape[-1])
    return labels.astype(case.dtype), pairs.astype(case.dtype)


def _loss_and_gradient(loss_fn, y_true, y_pred, upstream_scale):
    with tf.GradientTape() as tape:
        tape.watch(y_pred)
        loss = loss_fn(y_true, y_pred)
        objective = loss if upstream_scale == 1.0 else upstream_scale * tf.reduce_sum(loss)
    return loss, tape.gradient(objective, y_pred)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("batch_known", [True, False], ids=["static-batch", "dynamic-batch"])
def test_both_paths_agree_with_each_other_and_the_reference(case, batch_known, launches):
    # Thresholds at the size and just above it: with an unknown batch (of more than one
    # row) both paths are then the two branches of the run-time tf.cond.
    y_true, y_pred = _case_inputs(case)
    size = int(np.prod(case.shape))
    specs = [
        tf.TensorSpec(array.shape if batch_known else (None, *array.shape[1:]), case.dtype) for array in (y_true, y_pred)
    ]
    loss_fn = getattr(fusedloss, case.loss)
    body = functools.partial(_loss_and_gradient, lambda t, p: loss_fn(t, p, case.param))
    results = {}
    for threshold, path in ((size, "fused"), (size + 1, "composite")):
        fusedloss.set_min_fused_size(threshold)
        traced = tf.function(lambda t, p: body(t, p, case.upstream_scale), input_signature=specs)
        if not batch_known and case.shape[0] > 1:
            assert _graph_op_types(traced) & {"If", "StatelessIf"}
        before = launches()
        results[path] = [value.numpy() for value in traced(y_true, y_pred)]
        assert launches() - before == (1 if path == "fused" else 0)
    expected_loss, expected_grad = getattr(reference, case.loss)(y_true, y_pred, case.param)
    expected_grad = case.upstream_scale * expected_grad
    for fused, composite, expected in zip(results["fused"], results["composite"], (expected_loss, expected_grad)):
        atol = case.rtol * np.abs(expected).max()
        np.testing.assert_allclose(fused, composite, rtol=case.rtol, atol=atol)
        np.testing.assert_allclose(fused, expected, rtol=case.rtol, atol=atol)


def test_keras_fit_with_unknown_batch_matches_native_on_both_paths(launches):
    # 10 samples in batches of 4: batches of 4 x 8 = 32 elements run fused, the last
    # one of 2 x 8 = 16 runs TensorFlow ops, all in one traced train step.
    fusedloss.set_min_fused_size(20)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = rng.standard_normal((10, 8)).astype(np.float32) * 3
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)

    def trained(loss):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
        history = model.fit(dataset, epochs=2, verbose=0, shuffle=False)
        return history.history["loss"], model.get_weights()

    fused_history, fused_weights = trained(fusedloss.Huber(delta=1.0))
    assert launches() == 4  # two full batches per epoch
    native_history, native_weights = trained(keras.losses.Huber(delta=1.0))
    np.testing.assert_allclose(fused_history, native_history, rtol=1e-5)
    for fused, native in zip(fused_weights, native_weights):
        np.testing.assert_allclose(fused, native, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------
# The backward's rescale


@pytest.fixture(params=["graph-check", "host-check"])
def upstream_check(request, monkeypatch):
    """Where the backward asks whether the upstream is the expected one: TensorFlow's
    ops (small upstreams), or the host (from ``ops.HOST_CHECK_FROM`` values; here all)."""
    if request.param == "host-check":
        monkeypatch.setattr(ops, "HOST_CHECK_FROM", 0)
    return request.param


@pytest.mark.parametrize(
    "upstream_shape, grad_shape", [((41,), (41, 401)), ((3, 5), (3, 5, 7)), ((6,), (6, 2, 9))], ids=str
)
def test_rescale_broadcasts_upstream_over_trailing_axes(upstream_shape, grad_shape, upstream_check):
    rng = np.random.default_rng(2)
    upstream = rng.standard_normal(upstream_shape).astype(np.float32)
    saved = rng.standard_normal(grad_shape).astype(np.float32)
    saved_copy = saved.copy()
    expanded = upstream.reshape(upstream_shape + (1,) * (len(grad_shape) - len(upstream_shape)))
    scaled = tf.function(ops.rescale)(tf.constant(upstream), tf.constant(saved))
    np.testing.assert_array_equal(scaled, expanded * saved)
    assert scaled.shape == grad_shape
    np.testing.assert_array_equal(saved, saved_copy)


def test_rescale_by_ones_returns_the_saved_gradient(upstream_check):
    saved = np.random.default_rng(3).standard_normal((4, 9)).astype(np.float32)
    scaled = tf.function(ops.rescale)(tf.ones([4]), tf.constant(saved))
    np.testing.assert_array_equal(scaled, saved)


def test_rescaled_gradients_do_not_share_memory_with_each_other(upstream_check):
    # Two backward passes alive at once: the second must not reuse the first's buffer.
    saved = tf.constant(np.ones((8, 16), np.float32))
    rescale = tf.function(ops.rescale)
    first = rescale(tf.fill([8], 2.0), saved)
    second = rescale(tf.fill([8], 3.0), saved)
    np.testing.assert_array_equal(first, np.full((8, 16), 2.0, np.float32))
    np.testing.assert_array_equal(second, np.full((8, 16), 3.0, np.float32))


def test_upstream_nan_propagates_like_tensorflow(upstream_check):
    saved = tf.constant(np.ones((2, 3), np.float32))
    scaled = tf.function(ops.rescale)(tf.constant([np.nan, 1.5], tf.float32), saved)
    np.testing.assert_array_equal(scaled, [[np.nan] * 3, [1.5] * 3])


@pytest.mark.parametrize("batch_known", [True, False], ids=["static-batch", "dynamic-batch"])
def test_unit_upstream_seen_in_the_graph_needs_no_rescale(batch_known):
    spec = tf.TensorSpec([4 if batch_known else None, 9], tf.float32)
    fusedloss.set_min_fused_size(0)

    def gradient(y_true, y_pred, reduce):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = fusedloss.huber(y_true, y_pred, expected_upstream="ones")
            objective = tf.reduce_mean(loss) if reduce else loss
        return tape.gradient(objective, y_pred)

    unreduced = _graph_ops(tf.function(functools.partial(gradient, reduce=False)), spec, spec)
    reduced = _graph_ops(tf.function(functools.partial(gradient, reduce=True)), spec, spec)
    # Unreduced: the forward's kernel call and nothing else; reduced (upstream 1/4):
    # the rescale too, a run-time choice between the saved gradient and its product.
    assert unreduced.count("PyFuncStateless") == 1
    assert not {"If", "StatelessIf"} & set(unreduced)
    assert {"If", "StatelessIf"} & set(reduced)
    y_true, y_pred = _inputs((4, 9))
    expected = reference.huber(y_true, y_pred)[1]
    np.testing.assert_allclose(tf.function(functools.partial(gradient, reduce=False))(y_true, y_pred), expected, rtol=2e-6)
    np.testing.assert_allclose(tf.function(functools.partial(gradient, reduce=True))(y_true, y_pred), expected / 4, rtol=2e-6)


@pytest.mark.parametrize("batch_known", [True, False], ids=["static-batch", "dynamic-batch"])
def test_mean_upstream_seen_in_the_graph_needs_no_check(batch_known, rescales):
    spec = tf.TensorSpec([6 if batch_known else None, 9], tf.float32)
    fusedloss.set_min_fused_size(0)

    def gradient(y_true, y_pred, objective):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = fusedloss.huber(y_true, y_pred)
            value = {"mean": tf.reduce_mean(loss), "sum": tf.reduce_sum(loss), "third": tf.reduce_mean(loss) / 3}
        return tape.gradient(value[objective], y_pred)

    mean = _graph_ops(tf.function(functools.partial(gradient, objective="mean")), spec, spec)
    # Static: reduce_mean's gradient is Tile(1) / 6, the expected upstream: nothing to
    # check (TensorFlow then prunes the upstream's ops). Dynamic: a check per call.
    assert ({"If", "StatelessIf", "Equal"} & set(mean) == set()) == batch_known
    assert mean.count("PyFuncStateless") == 1
    y_true, y_pred = _inputs((6, 9))
    expected = reference.huber(y_true, y_pred)[1] / 6
    for objective, factor in (("mean", 1), ("sum", 6), ("third", 1 / 3)):  # the last two: known, not expected
        got = tf.function(functools.partial(gradient, objective=objective))(y_true, y_pred)
        np.testing.assert_allclose(got, expected * factor, rtol=2e-6)
    assert rescales() == 2


@pytest.mark.parametrize("n_losses", [ops.HOST_CHECK_FROM - 1, ops.HOST_CHECK_FROM], ids=["below", "from"])
def test_large_upstreams_are_checked_on_the_host(n_losses, rescales):
    fusedloss.set_min_fused_size(0)
    spec = tf.TensorSpec([n_losses, 1], tf.float32)

    def gradient(y_true, y_pred, weighted):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = fusedloss.huber(y_true, y_pred)
            objective = tf.reduce_mean(loss * (1.0 + tf.cast(weighted, tf.float32)))
        return tape.gradient(objective, y_pred)

    graph = _graph_ops(tf.function(functools.partial(gradient, weighted=False)), spec, spec)
    host = n_losses >= ops.HOST_CHECK_FROM
    assert graph.count("PyFuncStateless") == (2 if host else 1)  # forward + host check, or forward
    assert ("Equal" in graph) != host
    y_true, y_pred = _inputs((n_losses, 1))
    expected = reference.huber(y_true, y_pred)[1] / n_losses
    for weighted in (False, True):  # upstream 1/n: the saved gradient; 2/n: its product
        got = tf.function(functools.partial(gradient, weighted=weighted))(y_true, y_pred)
        np.testing.assert_allclose(got, expected * (1 + weighted), rtol=2e-6)
    assert rescales() == 1


@pytest.fixture
def rescales(monkeypatch):
    """The number of backward passes that rescaled the saved gradient so far."""
    return _counted(monkeypatch, "_scale_saved_grad")


class UpstreamCase(NamedTuple):
    loss: str  # fusedloss.<loss>(y_true, y_pred, 1.0, expected_upstream=...)
    shape: tuple  # y_pred's
    dtype: type
    expected_upstream: str
    objective: str  # of the per-sample losses: "mean", "sum", "none" or "weighted" (a weighted mean)
    rescaled: bool  # whether the backward needs a pass of its own


UPSTREAM_CASES = (
    UpstreamCase("huber", (37, 11), np.float32, "mean", "mean", False),
    UpstreamCase("huber", (3, 5, 7), np.float64, "mean", "mean", False),  # 15 losses
    UpstreamCase("huber", (37, 11), np.float32, "mean", "sum", True),
    UpstreamCase("huber", (37, 11), np.float32, "mean", "none", True),
    UpstreamCase("huber", (37, 11), np.float32, "mean", "weighted", True),
    UpstreamCase("huber", (37, 11), np.float32, "ones", "sum", False),
    UpstreamCase("huber", (37, 11), np.float32, "ones", "mean", True),
    UpstreamCase("huber", (37, 11), np.float16, "mean", "mean", False),
    UpstreamCase("embedding_contrastive", (29, 2, 5), np.float32, "mean", "mean", False),
    UpstreamCase("embedding_contrastive", (29, 2, 5), np.float64, "mean", "weighted", True),
    UpstreamCase("weighted_sigmoid_cross_entropy", (13, 17), np.float32, "mean", "mean", False),
    UpstreamCase("contrastive", (31, 1), np.float64, "ones", "weighted", True),
)


def _objective(kind, loss):
    if kind == "mean":
        return tf.reduce_mean(loss)
    if kind == "sum":
        return tf.reduce_sum(loss)
    if kind == "weighted":
        weights = tf.cast(tf.range(tf.size(loss)) % 3, loss.dtype)
        return tf.reduce_mean(tf.reshape(weights, tf.shape(loss)) * loss)
    return loss


@pytest.mark.parametrize("case", UPSTREAM_CASES, ids=lambda c: f"{c.loss}-{c.shape}-{np.dtype(c.dtype).name}-{c.expected_upstream}-{c.objective}")
def test_expected_upstream_is_free_and_any_other_is_still_right(case, rescales, upstream_check):
    fusedloss.set_min_fused_size(0)
    y_true, y_pred = _case_inputs(case)
    loss_fn = getattr(fusedloss, case.loss)

    @tf.function
    def gradient(y_true, y_pred):
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            loss = loss_fn(y_true, y_pred, 1.0, expected_upstream=case.expected_upstream)
            objective = _objective(case.objective, loss)
        return tape.gradient(objective, y_pred)

    @tf.function
    def native_gradient(y_true, y_pred):  # the TensorFlow-ops path of the same math
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            objective = _objective(case.objective, loss_fn(y_true, y_pred, 1.0))
        return tape.gradient(objective, y_pred)

    got = gradient(tf.constant(y_true), tf.constant(y_pred))
    assert rescales() == int(case.rescaled)
    fusedloss.set_min_fused_size(10**9)
    want = native_gradient(tf.constant(y_true), tf.constant(y_pred))
    assert got.dtype == want.dtype == tf.as_dtype(case.dtype)
    rtol = {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-12}[case.dtype]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(tf.reduce_max(tf.abs(want))))


def test_expected_upstream_is_checked():
    with pytest.raises(ValueError, match="expected_upstream must be one of .*got 'sum'"):
        fusedloss.huber([[0.0]], [[1.0]], expected_upstream="sum")


def test_keras_mean_reduction_needs_no_backward_pass(rescales):
    fusedloss.set_min_fused_size(0)
    x, y = _inputs((64, 8))
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)])
    model.compile(optimizer="sgd", loss=fusedloss.Huber())
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert rescales() == 0
    model.compile(optimizer="sgd", loss=fusedloss.Huber(reduction="sum"))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert rescales() == 0
    model.compile(optimizer="sgd", loss=fusedloss.Huber())
    model.fit(x, y, sample_weight=np.arange(64) % 3, batch_size=16, epochs=1, verbose=0)
    assert rescales() > 0  # per-sample weights: the upstream is no longer 1 / batch
