"""The softmax cross-entropy family: fusedloss's Keras drop-ins against Keras's own
classes and ``tf.nn.(sparse_)softmax_cross_entropy_with_logits``.

Unlike the elementwise losses of ``specs.LOSSES`` (one row of ``K`` classes is a
reduction, and the shapes that matter are a batch times a vocabulary), each case here
is a named shape: ``(batch, classes)`` or ``(batch, seq, vocab)``.

Providers, each reduced as Keras does by default (the mean over every loss entry,
``sum_over_batch_size``), so fwd+bwd's upstream is ``1 / entries``:

- ``fusedloss``: ``fusedloss.<Class>(from_logits=True)`` in a ``tf.function``.
- ``kernel``: the CPU launcher alone, NumPy in and out, into reused buffers (the
  bridge's lower bound).
- ``keras-eager``, ``keras-function``, ``keras-xla``: ``keras.losses.<Class>``
  eagerly, in ``tf.function`` and in ``tf.function(jit_compile=True)``.
- ``tf.nn-eager``, ``tf.nn-function``, ``tf.nn-xla``: the mean of
  ``tf.nn.(sparse_)softmax_cross_entropy_with_logits``, the same three ways.

Floor: the bytes that must move (logits and targets read once, per-entry loss written
once, and for fwd+bwd the gradient written once) over the bandwidth measured in the
run: 8 bytes per logit for the sparse fwd+bwd.

Peak memory (``peak_memory``): each provider runs its fwd+bwd in a child process of
its own, and the child's resident high-water mark (``ru_maxrss``) after the calls,
less the one before the first call (TensorFlow imported, inputs made), is what those
calls needed at most: a number a parent cannot get from inside one process, where
every provider's memory and TensorFlow's pools mix.
"""

import json
import math
import subprocess
import sys
from typing import NamedTuple

import numpy as np


class SoftmaxLoss(NamedTuple):
    name: str  # fusedloss's functional op and the family's loss key
    class_name: str  # in fusedloss and in keras.losses
    sparse: bool  # integer labels (else one-hot targets)
    tf_nn: str  # the tf.nn function


SOFTMAX_LOSSES = (
    SoftmaxLoss(
        "sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", True, "sparse_softmax_cross_entropy_with_logits"
    ),
    SoftmaxLoss("categorical_crossentropy", "CategoricalCrossentropy", False, "softmax_cross_entropy_with_logits"),
)
SOFTMAX_LOSSES_BY_NAME = {loss.name: loss for loss in SOFTMAX_LOSSES}

SOFTMAX_PROVIDERS = (
    "fusedloss", "kernel", "keras-eager", "keras-function", "keras-xla", "tf.nn-eager", "tf.nn-function", "tf.nn-xla",
)
# Peak memory is measured for these (the ones that matter for a training step).
MEMORY_PROVIDERS = ("fusedloss", "keras-function", "keras-xla", "tf.nn-function")
MODES = ("fwd", "fwd+bwd")

# The shapes of issue 11: a classifier's batch over 100 and 1000 classes, two large
# vocabularies, and a language model's (batch, seq, vocab).
SHAPES = {
    "8192x100": (8192, 100),
    "8192x1000": (8192, 1000),
    "1024x32768": (1024, 32768),
    "256x131072": (256, 131072),
    "32x128x2000": (32, 128, 2000),
}


class SoftmaxRun(NamedTuple):
    """What a run mode does of this family: which shapes and losses are timed, for
    which shapes peak memory is measured, and with what timing budget."""

    shapes: tuple
    losses: tuple
    memory_shapes: tuple
    seconds_per_case: float
    min_rounds: int
    max_rounds: int
    memory_calls: int


SOFTMAX_RUNS = {
    # CI: every provider's correctness at a tiny shape; no memory children (their
    # machinery has a test of its own in tests/test_benchmarks.py).
    "smoke": SoftmaxRun(("tiny",), ("sparse_categorical_crossentropy",), (), 0.0, 1, 1, 1),
    # The main job: the two shapes that show the small and the large end, sparse only,
    # and the memory of the large one (~1-2 minutes on 2 cores; the children run at once).
    "quick": SoftmaxRun(("8192x1000", "1024x32768"), ("sparse_categorical_crossentropy",), ("1024x32768",), 0.1, 5, 30, 2),
    "full": SoftmaxRun(tuple(SHAPES), tuple(SOFTMAX_LOSSES_BY_NAME), ("1024x32768", "256x131072"), 0.5, 5, 200, 3),
}
SMOKE_SHAPE = (16, 37)


def shape_of(label):
    return SMOKE_SHAPE if label == "tiny" else SHAPES[label]


class SoftmaxCase(NamedTuple):
    loss: SoftmaxLoss
    label: str
    shape: tuple
    mode: str
    provider: str

    @property
    def id(self):
        return f"{self.loss.name}[{self.label}]-{self.mode}-{self.provider}"


def cases(run, losses=None, providers=None):
    """The timed cases of a run, in run order (shape, then loss, mode, provider)."""
    losses = [name for name in run.losses if losses is None or name in losses]
    providers = [p for p in SOFTMAX_PROVIDERS if providers is None or p in providers]
    return [
        SoftmaxCase(SOFTMAX_LOSSES_BY_NAME[name], label, shape_of(label), mode, provider)
        for label in run.shapes
        for name in losses
        for mode in MODES
        for provider in providers
    ]


# ---------------------------------------------------------------------------------
# Inputs, reference, floor


def make_inputs(loss, shape, seed=20261202):
    """``(targets, logits)``: float32 logits of scale 3 (a peaked but not saturated
    softmax); int64 labels, or their one-hot float32 targets."""
    rng = np.random.default_rng(seed)
    logits = (3.0 * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    if loss.sparse:
        return labels.astype(np.int64), logits
    targets = np.zeros(shape, np.float32)
    np.put_along_axis(targets, labels[..., None], 1.0, axis=-1)
    return targets, logits


def reference(loss, targets, logits):
    """Float64 ``(per-entry loss, gradient of their mean)``."""
    from fusedloss.kernels import softmax_reference

    function = softmax_reference.sparse_softmax_cross_entropy if loss.sparse else softmax_reference.softmax_cross_entropy
    values, grad = function(targets, logits)
    return values, grad / max(values.size, 1)


def bytes_moved(mode, targets, logits):
    """Each input read once, the per-entry loss written once, and in fwd+bwd the
    gradient once (as float32, what every provider returns)."""
    entries = logits.size // logits.shape[-1]
    moved = targets.nbytes + logits.nbytes + entries * logits.itemsize
    return moved + (logits.nbytes if mode == "fwd+bwd" else 0)


# ---------------------------------------------------------------------------------
# Providers


class Prepared(NamedTuple):
    call: object  # no arguments; its result goes to results()
    results: object  # -> NumPy (mean loss, gradient or None)
    path: str  # "fused" (the kernel runs), "tf-ops" or "native"


def _objective(loss_fn, mode):
    import tensorflow as tf

    def forward(targets, logits):
        return loss_fn(targets, logits)

    def forward_backward(targets, logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss_fn(targets, logits)
        return value, tape.gradient(value, logits)

    return forward if mode == "fwd" else forward_backward


def _loss_fn(loss, provider):
    import keras
    import tensorflow as tf

    import fusedloss

    if provider == "fusedloss":
        return getattr(fusedloss, loss.class_name)(from_logits=True)
    if provider.startswith("keras-"):
        return getattr(keras.losses, loss.class_name)(from_logits=True)
    function = getattr(tf.nn, loss.tf_nn)

    def tf_nn(targets, logits):
        return tf.reduce_mean(function(labels=targets, logits=logits))

    return tf_nn


def _runs_a_kernel(graph):
    return any(op.type in ("PyFunc", "PyFuncStateless", "EagerPyFunc") for op in graph.get_operations())


def prepare(case, targets, logits):
    """A ``Prepared`` call of ``case`` on these NumPy inputs."""
    if case.provider == "kernel":
        return _prepare_kernel(case, targets, logits)
    import tensorflow as tf

    body = _objective(_loss_fn(case.loss, case.provider), case.mode)
    if case.provider.endswith("-eager"):
        function = body
    else:
        function = tf.function(body, jit_compile=case.provider.endswith("-xla"))
    targets, logits = tf.constant(targets), tf.constant(logits)
    path = "native"
    if case.provider == "fusedloss":
        path = "fused" if _runs_a_kernel(function.get_concrete_function(targets, logits).graph) else "tf-ops"

    def results(outputs):
        if case.mode == "fwd":
            return float(outputs), None
        return float(outputs[0]), outputs[1].numpy()

    return Prepared(lambda: function(targets, logits), results, path)


def _prepare_kernel(case, targets, logits):
    from fusedloss.kernels import cpu

    launcher = getattr(cpu, "sparse_softmax_cross_entropy" if case.loss.sparse else "softmax_cross_entropy")
    with_grad = case.mode == "fwd+bwd"
    loss_out, grad_out = launcher(targets, logits, with_grad=with_grad)
    scale = 1.0 / loss_out.size

    def call():
        return launcher(targets, logits, with_grad=with_grad, loss_out=loss_out, grad_out=grad_out, grad_scale=scale)

    def results(outputs):
        return float(np.mean(outputs[0], dtype=np.float64)), None if outputs[1] is None else np.array(outputs[1])

    return Prepared(call, results, "fused")


# ---------------------------------------------------------------------------------
# Peak memory: one child process per provider


def start_peak_memory(loss_name, label, provider, calls=2, python=sys.executable):
    """Start the child that measures ``provider``'s peak memory; ``finish_peak_memory``
    collects it. Children may run at the same time: each measures its own resident
    set, which others do not change (only their times, which are not measured)."""
    from pathlib import Path

    command = [python, "-m", "benchmarks.softmax", "--peak-memory", loss_name, label, provider, str(calls)]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1]
    )


def finish_peak_memory(child, timeout=600):
    """``{"peak_mb": ..., "warm_mb": ..., ...}`` from a started child, or ``{"error": text}``."""
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode or not lines:
        return {"error": (stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]}
    return json.loads(lines[-1])


def peak_memory(loss_name, label, provider, calls=2, python=sys.executable, timeout=600):
    """``provider``'s fwd+bwd peak memory, measured in a fresh process (``python -m
    benchmarks.softmax``): see ``_child_peak_memory``."""
    return finish_peak_memory(start_peak_memory(loss_name, label, provider, calls, python), timeout)


def _status_mb(field):
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_high_water_mark():
    """Linux resets ``VmHWM`` to the current RSS on "5" to ``clear_refs``; False where
    that is not allowed (the peak then includes the warm-up call)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _child_peak_memory(loss_name, label, provider, calls):
    """Baseline: the resident set with the inputs made and nothing traced. One warm-up
    call traces and compiles; the high-water mark is then reset, so tracing and XLA's
    compiler do not count, but whatever stays resident (TensorFlow's pools, fusedloss's
    pooled outputs) does. The calls sync on the loss scalar only: converting the
    gradient to NumPy would copy it, for every provider alike."""
    import gc

    import keras  # noqa: F401 - every provider's libraries are loaded before the baseline
    import tensorflow as tf

    import fusedloss  # noqa: F401
    from fusedloss.kernels import cpu  # noqa: F401

    loss = SOFTMAX_LOSSES_BY_NAME[loss_name]
    # numba compiles the kernels on first use, LLVM's memory stays: compiled here, on a
    # tiny input of the same types, it is a library's cost (as TensorFlow's kernels in
    # its binary), in every provider's baseline.
    tiny = make_inputs(loss, SMOKE_SHAPE)
    for with_grad in (False, True):
        getattr(cpu, "sparse_softmax_cross_entropy" if loss.sparse else "softmax_cross_entropy")(*tiny, with_grad=with_grad)
    targets, logits = make_inputs(loss, shape_of(label))
    held = (tf.constant(targets), tf.constant(logits))  # the TF providers' copies, for all alike
    case = SoftmaxCase(loss, label, shape_of(label), "fwd+bwd", provider)
    gc.collect()
    baseline = _status_mb("VmRSS")
    prepared = prepare(case, targets, logits)

    def step():
        outputs = prepared.call()
        float(np.mean(outputs[0]) if provider == "kernel" else outputs[0])
        del outputs

    step()
    gc.collect()
    warm = _status_mb("VmRSS")
    reset = _reset_high_water_mark()
    for _ in range(calls):
        step()
    peak = _status_mb("VmHWM")
    del held
    return {
        "peak_mb": peak - baseline, "warm_mb": warm - baseline, "transient_mb": peak - warm, "baseline_mb": baseline,
        "calls": calls, "warm_up_excluded": reset,
    }


def floor_of(mode, targets, logits, bandwidth):
    return bytes_moved(mode, targets, logits) / bandwidth


def ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else math.nan


if __name__ == "__main__":
    from . import use_cpu_only

    use_cpu_only()
    if len(sys.argv) != 6 or sys.argv[1] != "--peak-memory":
        sys.exit("usage: python -m benchmarks.softmax --peak-memory LOSS SHAPE PROVIDER CALLS")
    print(json.dumps(_child_peak_memory(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
