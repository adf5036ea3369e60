"""Check, in one command, that the fused losses run on this machine's GPU, right and
without host copies:

    python -m fusedloss.selfcheck

For each fused loss, on random tensors placed on the first GPU, eagerly and inside
``tf.function``, it compares the loss and its gradient with the same loss written
in TensorFlow ops, checks that the CUDA kernel really ran through the GPU bridge, and
(eagerly, where the pointers can be seen) that the kernel read the caller's tensor
and wrote the very tensors the caller got back: no copy on the way in or out.

Exit status: 0 when every check passed; 1 when one failed; 2 when nothing could be
checked (TensorFlow sees no GPU, or the CUDA kernels cannot use it), with the reason.
"""

import inspect
import os
import sys
from typing import NamedTuple

PASSED, FAILED, NOT_CHECKED = 0, 1, 2


# Rows longer than a block and an odd row length; small enough to take no time.
SHAPE = (64, 333)
# (label shape, prediction shape) of losses whose inputs are not two equal shapes.
INPUT_SHAPES = {"embedding_contrastive": ((SHAPE[0],), (SHAPE[0], 2, SHAPE[1]))}


class Check(NamedTuple):
    loss: str
    mode: str  # "eager" or "tf.function"
    what: str
    passed: bool
    detail: str = ""


def _fused_losses():
    """``{name: (fused function, TensorFlow-ops function, default parameters)}`` for
    every elementwise fused loss (each has a definition, hence both forms)."""
    import fusedloss
    from fusedloss import ops
    from fusedloss.define import tf_loss

    found = {}
    for name in fusedloss.__all__:
        definition = getattr(getattr(fusedloss, name), "definition", None)
        if definition is None:
            continue
        checked = definition.check({})
        value, slope, kernel_name = definition.traced(definition.static_key(checked))
        numeric = [checked[parameter] for parameter in definition.numeric]

        def composite(y_true, y_pred, *params, value=value, slope=slope, reduce=definition.reduce):
            return tf_loss(value, slope, list(params), reduce, y_true, y_pred)

        def fused(y_true, y_pred, *params, definition=definition, checked=checked):
            return definition.per_sample(y_true, y_pred, {**checked, **dict(zip(definition.numeric, params))})

        found[kernel_name] = (fused, composite, tuple(numeric))
    # The one loss with a kernel of its own (pairs, not elements).
    found["embedding_contrastive"] = (fusedloss.embedding_contrastive, ops._embedding_contrastive_composite, (1.0,))
    return found


def _gpu_devices():
    import tensorflow as tf

    return [device.name for device in tf.config.list_logical_devices("GPU")]


def why_not_checkable():
    """None when a GPU can be checked here, else the reason, in a sentence."""
    from fusedloss.backends import _cuda_unusable_reason, backend, requested

    devices = _gpu_devices()
    if not devices:
        return (
            "TensorFlow sees no GPU (a CPU-only TensorFlow build, no CUDA driver, or "
            "CUDA_VISIBLE_DEVICES hides the GPUs)"
        )
    try:
        chosen = backend(devices[0])
    except RuntimeError as error:
        return str(error)
    if chosen == "cuda":
        return None
    if requested() == "cpu":
        return "FUSEDLOSS_BACKEND=cpu sends every fused loss to the CPU kernels"
    reason = _cuda_unusable_reason() or "the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1)"
    return f"the CUDA kernels cannot run on {devices[0]}: {reason}"


def _random_inputs(name, seed):
    import numpy as np
    import tensorflow as tf

    label_shape, prediction_shape = INPUT_SHAPES.get(name, (SHAPE, SHAPE))
    rng = np.random.default_rng(seed)
    # Labels in {0, 1} and predictions in (0.1, 2): inside every loss's domain.
    labels = rng.integers(0, 2, size=label_shape).astype(np.float32)
    predictions = rng.uniform(0.1, 2.0, size=prediction_shape).astype(np.float32)
    return tf.constant(labels), tf.constant(predictions)


def _close(actual, expected):
    import numpy as np

    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return False, f"shape {actual.shape} != {expected.shape}"
    error = float(np.max(np.abs(actual - expected), initial=0.0))
    ok = np.allclose(actual, expected, rtol=1e-5, atol=1e-6) and not np.isnan(actual).any()
    return bool(ok), f"max |difference| {error:.2e}"


def check_loss(name, fused, composite, params, device, seed=0):
    """The checks of one loss on ``device``: a list of ``Check``."""
    import tensorflow as tf

    from fusedloss import gpu_bridge

    checks = []
    with tf.device(device):
        y_true, y_pred = _random_inputs(name, seed)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(y_pred)
            want = composite(y_true, y_pred, *params)
            gpu_bridge.last_launch = None
            loss = fused(y_true, y_pred, *params)
            # The gradient of the mean, as Keras's default reduction takes it: the one the
            # kernel writes directly, so the caller's gradient is the kernel's own buffer.
            mean, want_mean = tf.reduce_mean(loss), tf.reduce_mean(want)
        launch = gpu_bridge.last_launch
        grad, want_grad = tape.gradient(mean, y_pred), tape.gradient(want_mean, y_pred)

        checks.append(Check(name, "eager", "loss", *_close(loss, want)))
        checks.append(Check(name, "eager", "gradient", *_close(grad, want_grad)))
        ran = launch is not None and launch.loss_name == name
        checks.append(Check(name, "eager", "GPU kernel ran", ran, "" if ran else "the loss did not reach the GPU bridge"))
        if ran:
            buffers = {"y_pred": y_pred, "loss": loss, "grad": grad}
            described = {key: gpu_bridge.describe(tensor) for key, tensor in buffers.items()}
            on_device = all(buffer.device_type == gpu_bridge.DLPACK_CUDA for buffer in described.values())
            copied = [key for key, buffer in described.items() if buffer.pointer != launch.pointers[key]]
            checks.append(
                Check(
                    name,
                    "eager",
                    "no host copies",
                    on_device and not copied,
                    ("" if on_device else "a buffer is not in CUDA device memory; ")
                    + (f"copied: {', '.join(copied)}" if copied else "kernel used the caller's buffers"),
                )
            )

        @tf.function
        def step(y_true, y_pred):
            with tf.GradientTape() as tape:
                tape.watch(y_pred)
                loss = fused(y_true, y_pred, *params)
                mean = tf.reduce_mean(loss)
            return loss, tape.gradient(mean, y_pred)

        gpu_bridge.last_launch = None
        loss, grad = step(y_true, y_pred)
        checks.append(Check(name, "tf.function", "loss", *_close(loss, want)))
        checks.append(Check(name, "tf.function", "gradient", *_close(grad, want_grad)))
        ran = gpu_bridge.last_launch is not None
        checks.append(Check(name, "tf.function", "GPU kernel ran", ran, "" if ran else "the loss did not reach the GPU bridge"))
    return checks


def _environment(device):
    import tensorflow as tf

    lines = [f"TensorFlow {tf.__version__}; checking on {device}"]
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        growth = tf.config.experimental.get_memory_growth(gpu)
        lines.append(f"  {gpu.name}: {details.get('device_name', '?')}, memory growth {'on' if growth else 'off'}")
    lines.append(f"  FUSEDLOSS_BACKEND={os.environ.get('FUSEDLOSS_BACKEND', 'auto')}")
    return lines


def main():
    print("fusedloss self-check: fused losses on the GPU vs TensorFlow ops")
    reason = why_not_checkable()
    if reason is not None:
        print(f"SKIPPED: nothing checked: {reason}.")
        return NOT_CHECKED
    device = _gpu_devices()[0]
    for line in _environment(device):
        print(line)
    from fusedloss.backends import set_min_fused_size

    checks = []
    previous = set_min_fused_size(0)  # the kernels are checked, whatever the size
    try:
        for name, (fused, composite, params) in sorted(_fused_losses().items()):
            try:
                checks.extend(check_loss(name, fused, composite, params, device))
            except Exception as error:  # report every loss, not just the first failure
                checks.append(Check(name, "-", "ran", False, f"{type(error).__name__}: {error}"))
    finally:
        set_min_fused_size(previous)
    width = max(len(check.loss) for check in checks)
    for check in checks:
        status = "PASS" if check.passed else "FAIL"
        print(f"{status}  {check.loss:<{width}}  {check.mode:<11}  {check.what:<15}  {check.detail}")
    failed = sum(not check.passed for check in checks)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return FAILED if failed else PASSED


if __name__ == "__main__":
    sys.exit(main())
