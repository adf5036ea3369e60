"""Verify and time the fused CUDA kernels on a GPU, in one run.

Made for a GPU machine with numba-cuda and no TensorFlow; PyTorch, JAX, CuPy and
compute-sanitizer are used where present and skipped with a note where not.

    timeout 420 python benchmarks/gpu/run_gpu.py        # everything; report to $OUT or --out
    python benchmarks/gpu/run_gpu.py --simulate --out D # CI: CUDA simulator, tiny sizes
    python benchmarks/gpu/run_gpu.py --plan             # print the planned time budget only
    python benchmarks/gpu/run_gpu.py --sanitize-case    # what compute-sanitizer runs

The kernels: every elementwise kernel in ``kernel_specs.json`` (exported from the loss
definitions on a machine with TensorFlow: ``python -m benchmarks.gpu.export_specs``),
registered here in ``fusedloss.kernels.registry`` so that ``cuda.launcher(name)``
builds them, plus the kernels with launchers of their own (``OTHER_KERNELS``: the
embedding pairs; ``SOFTMAX_KERNELS``: the softmax cross-entropies, checked against
``softmax_reference`` and PyTorch's ``cross_entropy``). Each loss's reference and competitors come from one printed
expression, ``values_and_slopes(ops, y_true, y_pred, params)``: evaluated in float64
NumPy it is the reference; PyTorch, ``torch.compile`` and JAX compute the values from
it and the gradient by their own autodiff; CuPy (no autodiff) evaluates the printed
slopes.

In order (``plan`` prints the budget of each step before the run):

1. the device-to-device copy bandwidth (bytes read + written), the ceiling;
2. compute-sanitizer memcheck and racecheck on a small case of every kernel (this
   script again, ``--sanitize-case``), in the background while step 3 runs;
3. correctness: every kernel against the float64 printed expression (and
   ``kernels.reference.<name>`` where one exists) at shapes that reach every launch
   shape, odd ones included, float32 with and without the gradient and float64 with
   it, into outputs poisoned with NaN, inputs checked untouched; then each
   competitor's loss and gradient against the same reference;
4. forward + backward (per-sample loss and its gradient w.r.t. y_pred): every kernel
   at 1e8 elements against the copy bandwidth; the ``HEADLINE`` losses at 1e6 to 1e9
   elements against PyTorch eager, ``torch.compile``, JAX ``jit`` and CuPy; the
   others against the competitors that compile nothing slow (not ``torch.compile``),
   at 1e8; each with its time, TB/s of the fewest bytes the work must move and the
   fraction of the copy bandwidth; then the softmax cross-entropies at 8192 x 1000,
   1024 x 32768 and 256 x 131072 against PyTorch, JAX and CuPy (this step runs past
   the planned budget with every kernel: time them alone with
   ``--kernels softmax_cross_entropy,sparse_softmax_cross_entropy,categorical_focal_cross_entropy``);
5. the fused kernel at 1e8 elements for several row lengths (each launch shape) and
   other block and group sizes: the data to tune the launch constants.

Past ``--time-budget`` seconds every later cell is skipped with a note, so that the run
ends well inside 6 minutes on an H200. Writes ``gpu_report.md`` and ``gpu_report.json``
(plus the sanitizer logs) and prints the Markdown last. Exit status: 1 when a
correctness, reference or sanitizer check failed, 2 when numba-cuda finds no GPU
(without --simulate), else 0.

Times are wall-clock over back-to-back calls, synchronised at the ends of each batch:
what a training step sees, launch overhead included (the median of 5 batches).
"""

import argparse
import ast
import datetime
import gc
import functools
import json
import math
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import types
import warnings
from typing import Callable, NamedTuple

ROOT = pathlib.Path(__file__).resolve().parents[2]
REPORT_NAME = "gpu_report"
SPECS_PATH = pathlib.Path(__file__).resolve().with_name("kernel_specs.json")
EXPORT_COMMAND = "python -m benchmarks.gpu.export_specs"


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for the report (default: $OUT, else ./gpu-results)")
    parser.add_argument("--simulate", action="store_true", help="CUDA simulator, tiny sizes, fused kernel only")
    parser.add_argument("--sanitize-case", action="store_true", help="run the small case compute-sanitizer checks")
    parser.add_argument("--plan", action="store_true", help="print the planned time budget and exit")
    parser.add_argument("--time-budget", type=float, default=300.0, help="seconds; later cells are skipped past it")
    parser.add_argument("--sizes", default="1e6,1e7,1e8,1e9", help="element counts to time the HEADLINE losses at")
    parser.add_argument("--kernels", default="", help="comma-separated kernel names (default: all)")
    parser.add_argument("--no-sanitizer", action="store_true", help="skip compute-sanitizer")
    return parser.parse_args(argv)


if __name__ == "__main__" and "--simulate" in sys.argv:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported
# JAX would otherwise take 75 % of the GPU's memory when imported.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402


def import_kernels():
    """``fusedloss.kernels`` without running ``fusedloss/__init__``, which imports
    TensorFlow (absent on the GPU machine, and not needed here)."""
    if "fusedloss" not in sys.modules:
        package = types.ModuleType("fusedloss")
        package.__path__ = [str(ROOT / "fusedloss")]
        sys.modules["fusedloss"] = package
    from fusedloss.kernels import cuda as cuda_kernels
    from fusedloss.kernels import reference, registry, softmax_reference

    return cuda_kernels, reference, registry, softmax_reference


cuda_kernels, reference, registry, softmax_reference = import_kernels()


# ---------------------------------------------------------------------------------
# Array namespaces for the printed expressions (generate.array_source's ``ops``)


def _softplus(xp, x):
    return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))


def array_ops(xp, dtype):
    """``ops`` for NumPy or CuPy (``xp``), computing in ``dtype``: stable softplus,
    sigmoid, log-sigmoid and log-cosh (the forms of ``fusedloss.math``), and Python
    numbers of a ``where`` cast to ``dtype`` so that float32 stays float32."""
    dtype = np.dtype(dtype)

    def number(x):
        return dtype.type(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x

    def sigmoid(x):
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    return types.SimpleNamespace(
        where=lambda c, a, b: xp.where(c, number(a), number(b)),
        abs=xp.abs, sign=xp.sign, exp=xp.exp, log=xp.log, log1p=xp.log1p, expm1=xp.expm1, sqrt=xp.sqrt,
        tanh=xp.tanh, sigmoid=sigmoid, softplus=lambda x: _softplus(xp, x),
        log_sigmoid=lambda x: -_softplus(xp, -x),
        log_cosh=lambda x: xp.abs(x) + _softplus(xp, -2.0 * xp.abs(x)) - math.log(2.0),
        maximum=xp.maximum, minimum=xp.minimum, clip=xp.clip, logical_not=xp.logical_not,
        stack=lambda arrays, axis: xp.stack(arrays, axis=axis),
        broadcast_to=lambda x, shape: xp.broadcast_to(xp.asarray(number(x)), shape),  # CuPy wants an array
        log_softmax=lambda x: _log_softmax(xp, x),
        take_label=lambda x, labels: xp.take_along_axis(x, labels[..., None], axis=-1)[..., 0],
        one_hot=lambda labels, n, like: (xp.arange(n) == labels[..., None]).astype(like.dtype),
    )  # fmt: skip


def _log_softmax(xp, x):
    shifted = x - x.max(-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(-1, keepdims=True))


def torch_ops(torch, like):
    """``ops`` for PyTorch; Python numbers become tensors of ``like``'s dtype and device
    (torch's binary functions take tensors only)."""
    functional = torch.nn.functional

    def t(x):
        return x if isinstance(x, torch.Tensor) else torch.tensor(x, dtype=like.dtype, device=like.device)

    def unary(function):
        return lambda x: function(t(x))

    return types.SimpleNamespace(
        where=lambda c, a, b: torch.where(c, t(a), t(b)),
        abs=unary(torch.abs), sign=unary(torch.sign), exp=unary(torch.exp), log=unary(torch.log),
        log1p=unary(torch.log1p), expm1=unary(torch.expm1), sqrt=unary(torch.sqrt), tanh=unary(torch.tanh),
        sigmoid=unary(torch.sigmoid), softplus=unary(functional.softplus), log_sigmoid=unary(functional.logsigmoid),
        log_cosh=lambda x: torch.abs(t(x)) + functional.softplus(-2.0 * torch.abs(t(x))) - math.log(2.0),
        maximum=lambda a, b: torch.maximum(t(a), t(b)), minimum=lambda a, b: torch.minimum(t(a), t(b)),
        clip=lambda x, low, high: torch.minimum(torch.maximum(t(x), t(low)), t(high)),
        logical_not=torch.logical_not,
        stack=lambda arrays, axis: torch.stack(arrays, dim=axis),
        broadcast_to=lambda x, shape: torch.broadcast_to(t(x), shape),
        log_softmax=lambda x: functional.log_softmax(x, dim=-1),
        take_label=lambda x, labels: torch.gather(x, -1, labels[..., None])[..., 0],
        # PyTorch's own fused softmax cross-entropy, the competitor that counts
        cross_entropy=functional.cross_entropy,
    )  # fmt: skip


def jax_ops(jax):
    jnp = jax.numpy
    return types.SimpleNamespace(
        where=jnp.where, abs=jnp.abs, sign=jnp.sign, exp=jnp.exp, log=jnp.log, log1p=jnp.log1p, expm1=jnp.expm1,
        sqrt=jnp.sqrt, tanh=jnp.tanh, sigmoid=jax.nn.sigmoid, softplus=jax.nn.softplus,
        log_sigmoid=jax.nn.log_sigmoid,
        log_cosh=lambda x: jnp.abs(x) + jax.nn.softplus(-2.0 * jnp.abs(x)) - math.log(2.0),
        maximum=jnp.maximum, minimum=jnp.minimum, clip=jnp.clip, logical_not=jnp.logical_not,
        stack=lambda arrays, axis: jnp.stack(arrays, axis=axis),
        broadcast_to=jnp.broadcast_to,
        log_softmax=jax.nn.log_softmax,
        take_label=lambda x, labels: jnp.take_along_axis(x, labels[..., None], axis=-1)[..., 0],
    )  # fmt: skip


def compile_printed(source, values_only=False):
    """The function ``generate.array_source`` printed; with ``values_only`` the same
    function returning the values alone, every line the slopes need removed (PyTorch
    eager would otherwise compute both, then differentiate the values again)."""
    tree = ast.parse(source)
    (function,) = tree.body
    if values_only:
        *assignments, returned = function.body
        needed = {returned.value.elts[0].id} if isinstance(returned.value.elts[0], ast.Name) else set()
        kept = []
        for statement in reversed(assignments):
            (target,) = statement.targets
            if target.id in needed:
                kept.append(statement)
                needed |= {node.id for node in ast.walk(statement.value) if isinstance(node, ast.Name)}
        function.body = kept[::-1] + [ast.Return(returned.value.elts[0])]
        function.name = "values"
        ast.fix_missing_locations(tree)
    namespace = {}
    exec(compile(tree, "<values_and_slopes>", "exec"), namespace)  # noqa: S102 - our own exported file
    return namespace[function.name]


# ---------------------------------------------------------------------------------
# The kernels: their inputs, references and the same math for the other frameworks


class Layout(NamedTuple):
    """How a kind of kernel's inputs and outputs are shaped (by the shape of y_pred)."""

    shapes: list  # checked on a GPU
    simulated_shapes: list  # checked under the simulator (32-thread blocks)
    sanitize_shapes: list  # run under compute-sanitizer
    true_shape: Callable  # y_pred shape -> y_true shape
    loss_shape: Callable  # y_pred shape -> the per-sample loss's shape
    timing_shape: Callable  # (elements, simulate) -> y_pred shape
    minimal_bytes: Callable  # (shape, itemsize) -> bytes each input read once, each output written once
    describe: Callable  # shape -> the launch, in words
    sweep: bool  # the launch-shape sweep applies
    # Timed at these shapes (GPU, simulator) against every quick competitor, instead
    # of at ALL_KERNELS_ELEMENTS: the softmax cross-entropies, whose cost depends on
    # the row length.
    timing_shapes: tuple = ((), ())


def describe_rows(shape):
    n_rows, n_columns = math.prod(shape[:-1]), shape[-1]
    if n_rows == 0 or n_columns == 0:
        return "no launch"
    launch = cuda_kernels.launch_shape(n_rows, n_columns)
    text = f"{launch.threads_per_row} thr/row, {launch.blocks} blocks"
    return text + (f", {launch.chunks_per_row} chunks/row" if launch.chunks_per_row > 1 else "")


def describe_pairs(shape):
    if shape[0] == 0:
        return "no launch"
    return f"{cuda_kernels._threads_for(shape[2])} thr/pair, {min(shape[0], cuda_kernels.MAX_BLOCKS)} blocks"


def matrix_shape(elements, columns):
    return (max(1, int(elements) // columns), columns)


ROWS = Layout(
    shapes=[(1,), (7,), (37, 1), (1000, 8), (333, 5), (41, 401), (3, 5, 33), (5000, 3), (64, 1000),
            (2000, 1000), (2, 100_003), (1, 3_000_001), (4, 0), (0, 7)],
    # The simulator runs 32-thread blocks; these reach the same launch shapes.
    simulated_shapes=[(7,), (37, 1), (9, 5), (3, 41), (2, 601), (4, 0)],
    sanitize_shapes=[(37, 1), (33, 5), (3, 300), (2, 5000), (4, 0)],
    true_shape=lambda shape: shape,
    loss_shape=lambda shape: shape[:-1],
    timing_shape=lambda elements, simulate: matrix_shape(elements, 8 if simulate else 1000),
    minimal_bytes=lambda shape, itemsize: (3 * math.prod(shape) + math.prod(shape[:-1])) * itemsize,
    describe=describe_rows,
    sweep=True,
)  # fmt: skip
PAIRS = Layout(
    shapes=[(1, 2, 1), (7, 2, 3), (33, 2, 128), (5, 2, 1000), (100, 2, 257), (3, 2, 5000), (2, 2, 0), (0, 2, 4)],
    simulated_shapes=[(3, 2, 5), (2, 2, 70), (1, 2, 1), (2, 2, 0), (0, 2, 4)],
    sanitize_shapes=[(5, 2, 3), (3, 2, 300), (0, 2, 4)],
    true_shape=lambda shape: shape[:1],
    loss_shape=lambda shape: shape[:1],
    timing_shape=lambda elements, simulate: (2, 2, 16) if simulate else (max(1, int(elements) // 256), 2, 128),
    # labels and both embeddings read, both gradients and the losses written
    minimal_bytes=lambda shape, itemsize: (2 * math.prod(shape) + 2 * shape[0]) * itemsize,
    describe=describe_pairs,
    sweep=False,
)  # fmt: skip


class Domain(NamedTuple):
    """What a loss's inputs look like (``kernel_specs.json``'s ``domain``): a host
    generator for the checks, uniform ranges for the timed (device-made) inputs."""

    inputs: Callable  # (rng, shape) -> float64 (y_true, y_pred)
    true_range: tuple
    pred_range: tuple


def _labels(rng, shape):
    return rng.integers(0, 2, size=shape).astype(np.float64)


DOMAINS = {
    "regression": Domain(lambda rng, s: (rng.normal(size=s), 3.0 * rng.normal(size=s)), (-1.0, 1.0), (-3.0, 3.0)),
    "labels": Domain(lambda rng, s: (_labels(rng, s), 3.0 * rng.normal(size=s)), (0.0, 1.0), (-4.0, 4.0)),
    "probabilities": Domain(lambda rng, s: (rng.uniform(size=s), rng.uniform(0.02, 0.98, size=s)), (0.0, 1.0), (0.02, 0.98)),
    "positive": Domain(lambda rng, s: (rng.uniform(0.1, 5.0, size=s), rng.uniform(0.1, 5.0, size=s)), (0.1, 5.0), (0.1, 5.0)),
    "distances": Domain(lambda rng, s: (_labels(rng, s), rng.uniform(0.0, 2.0, size=s)), (0.0, 1.0), (0.0, 2.0)),
}  # fmt: skip


class Loss(NamedTuple):
    """One kernel to check and time.

    ``expected(y_true, y_pred)``: float64 ``(loss, grad)``, what the kernel must give.
    ``per_sample(ops, y_true, y_pred, params)``: the per-sample loss in any framework
    (differentiated there by its autodiff); ``analytic(ops, ...)``: ``(loss, grad)``
    without autodiff (CuPy). ``params``: the launcher's keyword arguments, ``values``
    the same numbers in order, as the expressions take them.
    """

    name: str
    layout: Layout
    launcher: Callable
    params: dict
    inputs: Callable  # (rng, shape, dtype) -> host (y_true, y_pred) of dtype
    true_range: tuple
    pred_range: tuple
    expected: Callable
    per_sample: Callable
    analytic: Callable
    references: dict  # name -> float64 (y_true, y_pred, **params) -> (loss, grad), checked against expected
    labels: bool = False  # y_true holds int64 class labels in [0, classes) (timed inputs made so)

    @property
    def values(self):
        return list(self.params.values())


def _typed(inputs):
    return lambda rng, shape, dtype: tuple(array.astype(dtype) for array in inputs(rng, shape))


def _reduce(reduce, values, slopes, ops, shape):
    """Per-sample loss and gradient from a row's values and slopes (``reduce``)."""
    values, slopes = ops.broadcast_to(values, shape), ops.broadcast_to(slopes, shape)
    if reduce == "mean":
        return values.mean(-1), slopes / shape[-1]
    return values.sum(-1), slopes


def elementwise_loss(kernel):
    """The ``Loss`` of one ``kernel_specs.json`` entry (its spec registered first)."""
    name, reduce = kernel["name"], kernel["reduce"]
    if kernel["domain"] not in DOMAINS:
        raise ValueError(f"{name}: unknown input domain {kernel['domain']!r} (known: {sorted(DOMAINS)})")
    domain = DOMAINS[kernel["domain"]]
    values_and_slopes = compile_printed(kernel["array_source"])
    values_only = compile_printed(kernel["array_source"], values_only=True)
    params = dict(zip(kernel["parameters"], kernel["defaults"]))

    def expected(y_true, y_pred):
        t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the mean of an empty row is NaN, as in the kernels
            values, slopes = values_and_slopes(array_ops(np, np.float64), t, p, list(params.values()))
            return _reduce(reduce, values, slopes, array_ops(np, np.float64), p.shape)

    def per_sample(ops, y_true, y_pred, values):
        computed = ops.broadcast_to(values_only(ops, y_true, y_pred, values), y_pred.shape)
        return computed.mean(-1) if reduce == "mean" else computed.sum(-1)

    def analytic(ops, y_true, y_pred, values):
        return _reduce(reduce, *values_and_slopes(ops, y_true, y_pred, values), ops, y_pred.shape)

    want = getattr(reference, name, None)
    return Loss(
        name, ROWS, cuda_kernels.launcher(name), params, _typed(domain.inputs), domain.true_range, domain.pred_range,
        expected, per_sample, analytic, {f"kernels.reference.{name}": want} if want else {},
    )  # fmt: skip


# Kernels with launchers of their own (not elementwise, so not in kernel_specs.json):
# one row each. A row names the launcher in ``fusedloss.kernels.cuda`` and gives its
# layout, parameters, inputs, float64 reference and the same loss for the other
# frameworks; the rest of the script treats it like any elementwise kernel. A
# launcher not on this checkout is skipped with a note.


def _pair_inputs(rng, shape):
    n_pairs, _, dim = shape
    return _labels(rng, (n_pairs,)), rng.normal(size=shape) * (0.8 / math.sqrt(max(dim, 1)))


def _pair_distance(ops, pairs):
    difference = pairs[:, 0] - pairs[:, 1]
    return difference, ops.sqrt((difference * difference).sum(-1))


def _pair_per_sample(ops, y_true, pairs, values):
    (margin,) = values
    _, distance = _pair_distance(ops, pairs)
    return y_true * distance * distance + (1.0 - y_true) * ops.maximum(margin - distance, 0.0) ** 2


def _pair_analytic(ops, y_true, pairs, values):
    # dL/dd = 2 y d - 2 (1 - y) max(m - d, 0); dL/da = dL/dd (a - b) / d = -dL/db (0 at d = 0)
    (margin,) = values
    difference, distance = _pair_distance(ops, pairs)
    hinge = ops.maximum(margin - distance, 0.0)
    loss = y_true * distance * distance + (1.0 - y_true) * hinge * hinge
    slope = 2.0 * y_true * distance - 2.0 * (1.0 - y_true) * hinge
    safe = ops.where(distance > 0, distance, 1.0)
    grad_a = ops.where(distance[:, None] > 0, (slope / safe)[:, None] * difference, 0.0)
    return loss, ops.stack([grad_a, -grad_a], 1)


class OtherKernel(NamedTuple):
    name: str  # the launcher's name in fusedloss.kernels.cuda
    layout: Layout
    params: dict
    inputs: Callable  # (rng, shape) -> float64 host (y_true, y_pred)
    true_range: tuple
    pred_range: tuple
    reference: Callable  # (y_true, y_pred, **params) -> float64 (loss, grad)
    per_sample: Callable
    analytic: Callable


OTHER_KERNELS = [
    OtherKernel("embedding_contrastive", PAIRS, {"margin": 1.0}, _pair_inputs, (0.0, 1.0), (-0.1, 0.1),
                lambda y_true, pairs, **params: reference.embedding_contrastive(y_true, pairs, **params),
                _pair_per_sample, _pair_analytic),
]  # fmt: skip


def other_loss(row):
    params = row.params
    return Loss(
        row.name, row.layout, getattr(cuda_kernels, row.name), params, _typed(row.inputs), row.true_range,
        row.pred_range, lambda y_true, y_pred: row.reference(y_true, y_pred, **params), row.per_sample,
        row.analytic, {},
    )  # fmt: skip


# The softmax cross-entropies (``softmax_cuda.py``): (batch, classes) logits, dense
# targets or int64 labels, a loss per row. Checked against ``softmax_reference``
# (float64), against ``torch.nn.functional.cross_entropy`` (label_smoothing,
# ignore_index) and JAX / CuPy / NumPy writings of the same formula, and timed at
# the row lengths of a classifier, a large vocabulary and a very large one.


def _softmax_layout(true_shape, label_bytes):
    def minimal_bytes(shape, itemsize):
        # logits and targets (labels) read once, the gradient and the loss written once
        rows = math.prod(shape[:-1])
        return 2 * math.prod(shape) * itemsize + rows * itemsize + math.prod(true_shape(shape)) * (label_bytes or itemsize)

    return Layout(
        # whole rows (one, a few, many per block), a row per block, split rows
        shapes=[(7, 1), (1000, 8), (41, 401), (3, 5, 33), (64, 1000), (2, 100_003), (1, 300_001), (0, 7)],
        # with 32-thread blocks: 8 threads per row, a block per row, 2 chunks per row
        simulated_shapes=[(3, 5), (3, 37), (2, 601), (0, 7)],
        sanitize_shapes=[(33, 5), (3, 300), (2, 5000), (0, 7)],
        true_shape=true_shape,
        loss_shape=lambda shape: shape[:-1],
        timing_shape=lambda elements, simulate: matrix_shape(elements, 8 if simulate else 1000),
        minimal_bytes=minimal_bytes,
        describe=describe_rows,
        sweep=False,
        timing_shapes=([(8192, 1000), (1024, 32768), (256, 131072)], [(8, 8), (2, 64)]),
    )


LOGITS = _softmax_layout(lambda shape: shape, 0)
LABELLED_LOGITS = _softmax_layout(lambda shape: shape[:-1], 8)
IGNORED = -1  # the sparse rows' ignore label: every seventh row has it


def _soft_targets(rng, shape, dtype):
    logits = (3.0 * rng.normal(size=shape)).astype(dtype)
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(dtype), logits


def _labels_and_logits(rng, shape, dtype):
    labels = rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int64)
    labels.reshape(-1)[::7] = IGNORED
    return labels, (3.0 * rng.normal(size=shape)).astype(dtype)


def _smoothed(y_true, n_classes, label_smoothing):
    return y_true * (1.0 - label_smoothing) + label_smoothing / n_classes


def _dense_per_sample(ops, y_true, logits, values):
    (label_smoothing,) = values
    if hasattr(ops, "cross_entropy"):  # PyTorch's: classes on axis 1, so rows of 2-D
        rows = logits.reshape(-1, logits.shape[-1])
        value = ops.cross_entropy(rows, y_true.reshape(rows.shape), reduction="none", label_smoothing=label_smoothing)
        return value.reshape(logits.shape[:-1])
    return -(_smoothed(y_true, logits.shape[-1], label_smoothing) * ops.log_softmax(logits)).sum(-1)


def _dense_analytic(ops, y_true, logits, values):
    # d loss / d x = softmax(x) - t
    (label_smoothing,) = values
    t = _smoothed(y_true, logits.shape[-1], label_smoothing)
    log_p = ops.log_softmax(logits)
    return -(t * log_p).sum(-1), ops.exp(log_p) - t


def _sparse_per_sample(ops, labels, logits, values):
    (ignore_class,) = values
    if hasattr(ops, "cross_entropy"):
        rows = logits.reshape(-1, logits.shape[-1])
        value = ops.cross_entropy(rows, labels.reshape(-1), reduction="none", ignore_index=ignore_class)
        return value.reshape(logits.shape[:-1])
    valid = labels != ignore_class
    return ops.where(valid, -ops.take_label(ops.log_softmax(logits), labels * valid), 0.0)


def _sparse_analytic(ops, labels, logits, values):
    # d loss / d x = softmax(x) - onehot(label); 0 for an ignored row
    (ignore_class,) = values
    valid = labels != ignore_class
    safe = labels * valid  # an ignored row's label read as 0, its results then dropped
    log_p = ops.log_softmax(logits)
    loss = ops.where(valid, -ops.take_label(log_p, safe), 0.0)
    grad = ops.where(valid[..., None], ops.exp(log_p) - ops.one_hot(safe, logits.shape[-1], logits), 0.0)
    return loss, grad


def _focal_parts(ops, y_true, logits, values):
    alpha, gamma, label_smoothing = values
    t = _smoothed(y_true, logits.shape[-1], label_smoothing)
    p = ops.exp(ops.log_softmax(logits))
    c = ops.clip(p, softmax_reference.EPSILON, 1.0 - softmax_reference.EPSILON)
    return alpha, gamma, t, p, c


def _focal_per_sample(ops, y_true, logits, values):
    alpha, gamma, t, _, c = _focal_parts(ops, y_true, logits, values)
    return -(alpha * (1.0 - c) ** gamma * t * ops.log(c)).sum(-1)


def _focal_analytic(ops, y_true, logits, values):
    # g = dL/dc where the clip passes, 0 elsewhere; d loss / d x_j = p_j (g_j - sum_k g_k p_k)
    alpha, gamma, t, p, c = _focal_parts(ops, y_true, logits, values)
    w = (1.0 - c) ** gamma
    passes = (p >= softmax_reference.EPSILON) & (p <= 1.0 - softmax_reference.EPSILON)
    g = ops.where(passes, alpha * t * (gamma * (1.0 - c) ** (gamma - 1.0) * ops.log(c) - w / c), 0.0)
    return -(alpha * w * t * ops.log(c)).sum(-1), p * (g - (g * p).sum(-1, keepdims=True))


class SoftmaxKernel(NamedTuple):
    name: str  # the launcher's name in fusedloss.kernels.cuda
    layout: Layout
    params: dict
    inputs: Callable  # (rng, shape, dtype) -> host (y_true, logits); labels int64
    reference: Callable  # softmax_reference's function: (y_true, logits, *values) -> float64 (loss, grad)
    per_sample: Callable
    analytic: Callable


SOFTMAX_KERNELS = [
    SoftmaxKernel("softmax_cross_entropy", LOGITS, {"label_smoothing": 0.1}, _soft_targets,
                  softmax_reference.softmax_cross_entropy, _dense_per_sample, _dense_analytic),
    SoftmaxKernel("sparse_softmax_cross_entropy", LABELLED_LOGITS, {"ignore_class": IGNORED}, _labels_and_logits,
                  softmax_reference.sparse_softmax_cross_entropy, _sparse_per_sample, _sparse_analytic),
    SoftmaxKernel("categorical_focal_cross_entropy", LOGITS, {"alpha": 0.25, "gamma": 2.0, "label_smoothing": 0.1},
                  _soft_targets, softmax_reference.categorical_focal_cross_entropy, _focal_per_sample,
                  _focal_analytic),
]  # fmt: skip


def softmax_loss(row):
    values = list(row.params.values())

    def expected(y_true, y_pred):
        with np.errstate(all="ignore"):
            return row.reference(y_true, y_pred, *values)

    return Loss(
        row.name, row.layout, getattr(cuda_kernels, row.name), row.params, row.inputs, (0.0, 1.0), (-4.0, 4.0),
        expected, row.per_sample, row.analytic, {}, labels=row.layout is LABELLED_LOGITS,
    )  # fmt: skip


def load_specs(path=SPECS_PATH):
    """The kernels of ``kernel_specs.json``, each registered in ``kernels.registry``
    (unless a loss definition already registered that name in this process)."""
    data = json.loads(pathlib.Path(path).read_text())
    for kernel in data["kernels"]:
        if kernel["name"] not in registry.SPECS:
            registry.register(
                registry.KernelSpec(
                    kernel["name"], kernel["element_source"], kernel["reduce"], tuple(kernel["parameters"]),
                    tuple(kernel["defaults"]), frozenset(kernel["per_class"]),
                )
            )  # fmt: skip
    return data["kernels"]


def present_losses(notes, kernels=None, only=()):
    """Every ``Loss`` to check: the exported elementwise kernels, then the
    ``OTHER_KERNELS`` on this checkout (a note for each that is not)."""
    kernels = load_specs() if kernels is None else kernels
    found = [elementwise_loss(kernel) for kernel in kernels]
    for row in OTHER_KERNELS:
        if hasattr(cuda_kernels, row.name):
            found.append(other_loss(row))
        else:
            notes.append(f"{row.name}: skipped, not in fusedloss.kernels.cuda yet")
    for row in SOFTMAX_KERNELS:
        if hasattr(cuda_kernels, row.name):
            found.append(softmax_loss(row))
        else:
            notes.append(f"{row.name}: skipped, not in fusedloss.kernels.cuda yet")
    if only:
        unknown = set(only) - {loss.name for loss in found}
        if unknown:
            raise SystemExit(f"--kernels: no kernel {sorted(unknown)}; known: {[loss.name for loss in found]}")
        found = [loss for loss in found if loss.name in only]
    return found


# ---------------------------------------------------------------------------------
# Correctness


TOLERANCE = {"float32": 2e-5, "float64": 1e-12}
# (dtype, with_grad) checked per shape: the loss-only kernel in float32 covers its
# branch; float64 with the gradient covers the dtype (one compile fewer per kernel).
CHECKED_VARIANTS = [(np.float32, True), (np.float32, False), (np.float64, True)]


def checked_variants(loss, shape, simulate):
    """The variants checked for ``loss`` at ``shape``. Every compile costs a second or
    two on a GPU host, every simulated launch a second in CI, and the loss-only kernel
    shares every line but the element function with the full one; so the headline
    losses get every variant at every shape; the others on a GPU the float32 and
    float64 kernels with the gradient (their loss-only kernels are checked in CI, under
    the simulator), and under the simulator every variant at the first two shapes."""
    if loss.name in HEADLINE:
        return CHECKED_VARIANTS
    if simulate:
        return CHECKED_VARIANTS if shape in loss.layout.simulated_shapes[:2] else CHECKED_VARIANTS[:1]
    return [(np.float32, True), (np.float64, True)]


def compare(actual, expected, dtype_name):
    """``(passed, relative error)``: every element within tolerance (NaN where the
    reference has NaN, nowhere else) and the norm-wise relative error."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return False, float("inf")
    if not np.array_equal(np.isnan(actual), np.isnan(expected)):
        return False, float("nan")
    finite = ~np.isnan(expected)
    if not finite.any():
        return True, 0.0
    difference = np.linalg.norm(actual[finite] - expected[finite])
    error = float(difference / max(np.linalg.norm(expected[finite]), np.finfo(np.float64).tiny))
    rtol = TOLERANCE[dtype_name]
    scale = float(np.max(np.abs(expected[finite])))
    close = np.allclose(actual[finite], expected[finite], rtol=rtol, atol=rtol * scale)
    return bool(close), error


def check_kernel(loss, shape, dtype, with_grad, rng):
    y_true, y_pred = loss.inputs(rng, shape, dtype)
    device_true, device_pred = cuda.to_device(y_true), cuda.to_device(y_pred)
    loss_out = cuda.to_device(np.full(loss.layout.loss_shape(shape), np.nan, dtype))
    grad_out = cuda.to_device(np.full(shape, np.nan, dtype)) if with_grad else None
    loss.launcher(device_true, device_pred, **loss.params, with_grad=with_grad, loss_out=loss_out, grad_out=grad_out)
    cuda.synchronize()
    expected_loss, expected_grad = loss.expected(y_true, y_pred)
    passed, error = compare(loss_out.copy_to_host(), expected_loss, np.dtype(dtype).name)
    if with_grad:
        grad_passed, grad_error = compare(grad_out.copy_to_host(), expected_grad, np.dtype(dtype).name)
        passed, error = passed and grad_passed, max(error, grad_error)
    untouched = np.array_equal(device_true.copy_to_host(), y_true, equal_nan=True) and np.array_equal(
        device_pred.copy_to_host(), y_pred, equal_nan=True
    )
    return {
        "loss": loss.name,
        "shape": list(shape),
        "dtype": np.dtype(dtype).name,
        "grad": with_grad,
        "launch": loss.layout.describe(shape),
        "relative_error": error,
        "inputs_untouched": untouched,
        "passed": passed and untouched,
    }


def check_correctness(losses, simulate, deadline=math.inf):
    rows = []
    rng = np.random.default_rng(20261123)
    for loss in losses:
        for shape in loss.layout.simulated_shapes if simulate else loss.layout.shapes:
            for dtype, with_grad in checked_variants(loss, shape, simulate):
                row = {"loss": loss.name, "shape": list(shape), "dtype": np.dtype(dtype).name, "grad": with_grad,
                       "launch": loss.layout.describe(shape), "relative_error": None, "inputs_untouched": None}  # fmt: skip
                if time.monotonic() > deadline:
                    rows.append({**row, "passed": None, "error": "skipped: time budget spent"})
                    continue
                try:
                    rows.append(check_kernel(loss, shape, dtype, with_grad, rng))
                except Exception as error:  # a crash is a failed check, not the end of the run
                    rows.append({**row, "passed": False, "error": f"{type(error).__name__}: {error}"})
    return rows


def check_references(losses, simulate):
    """The printed expression against the hand-written float64 references, where a
    loss has one: two independent writings of the same formula must agree."""
    rows = []
    rng = np.random.default_rng(5)
    for loss in losses:
        for name, want in loss.references.items():
            shape = loss.layout.timing_shape(528 if simulate else 64_000, simulate)
            y_true, y_pred = loss.inputs(rng, shape, np.float64)
            expected_loss, expected_grad = loss.expected(y_true, y_pred)
            got_loss, got_grad = want(y_true, y_pred, **loss.params)
            loss_ok, loss_error = compare(got_loss, expected_loss, "float64")
            grad_ok, grad_error = compare(got_grad, expected_grad, "float64")
            rows.append({"loss": loss.name, "implementation": f"{name} (float64)", "passed": loss_ok and grad_ok,
                         "relative_error": max(loss_error, grad_error)})  # fmt: skip
    return rows


def check_formulas(losses, providers, simulate, deadline=math.inf):
    """The other frameworks' loss and gradient of each kernel against the float64
    reference (float32 inputs on their device; NumPy on the host in CI)."""
    rows = []
    rng = np.random.default_rng(7)
    for loss in losses:
        shape = loss.layout.timing_shape(528 if simulate else 64_000, simulate)
        y_true, y_pred = loss.inputs(rng, shape, np.float32)
        expected_loss, expected_grad = loss.expected(y_true, y_pred)
        for provider in providers:
            if not provider.applies(loss):
                continue
            row = {"loss": loss.name, "implementation": provider.name}
            if time.monotonic() > deadline:
                rows.append({**row, "passed": None, "note": "skipped: time budget spent"})
                continue
            try:
                got_loss, got_grad = provider.compute(loss, y_true, y_pred)
                loss_ok, loss_error = compare(got_loss, expected_loss, "float32")
                grad_ok, grad_error = compare(got_grad, expected_grad, "float32")
                row.update(passed=loss_ok and grad_ok, relative_error=max(loss_error, grad_error))
            except Exception as error:
                row.update(passed=False, note=f"{type(error).__name__}: {str(error)[:200]}")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------
# compute-sanitizer


def sanitize_case(only=()):
    """Each kernel on each of its layout's small shapes once, results checked: what
    compute-sanitizer watches."""
    failures = 0
    rng = np.random.default_rng(3)
    for loss in present_losses([], only=only):
        for shape in loss.layout.sanitize_shapes:
            for with_grad in (True, False):
                row = check_kernel(loss, shape, np.float32, with_grad, rng)
                failures += not row["passed"]
                print(f"{loss.name} {shape} grad={with_grad} {row['launch']}: {'pass' if row['passed'] else 'FAIL'}", flush=True)
    return 1 if failures else 0


def find_sanitizer():
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for pattern in ("/usr/local/cuda*/bin/compute-sanitizer", "/usr/local/cuda*/compute-sanitizer/compute-sanitizer",
                    "/opt/nvidia/*/compute-sanitizer"):  # fmt: skip
        candidates = sorted(pathlib.Path("/").glob(pattern.lstrip("/")))
        if candidates:
            return str(candidates[-1])
    return None


SANITIZER_TOOLS = ("memcheck", "racecheck")
SANITIZER_TIMEOUT = 200.0


def start_sanitizers(out_folder, only=()):
    """Both tools at once, in the background (each a process of its own compiling its
    kernels): ``{tool: (process, log path) or a row saying why not}``."""
    sanitizer = find_sanitizer()
    started = {}
    for tool in SANITIZER_TOOLS:
        if sanitizer is None:
            started[tool] = {"tool": tool, "passed": None, "summary": "compute-sanitizer not found"}
            continue
        command = [sanitizer, "--tool", tool, "--error-exitcode", "86", sys.executable,
                   str(pathlib.Path(__file__).resolve()), "--sanitize-case"]  # fmt: skip
        if only:
            command += ["--kernels", ",".join(only)]
        log_path = out_folder / f"sanitizer_{tool}.txt"
        log = open(log_path, "w")  # noqa: SIM115 - closed in finish_sanitizers
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        started[tool] = (process, log, log_path, time.monotonic())
    return started


def finish_sanitizers(started, deadline):
    """Wait for each (until its timeout or the deadline) and read its verdict."""
    rows = []
    for tool, entry in started.items():
        if isinstance(entry, dict):
            rows.append(entry)
            continue
        process, log, log_path, began = entry
        timeout = max(1.0, min(began + SANITIZER_TIMEOUT, deadline) - time.monotonic())
        try:
            process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            timed_out = True
        log.close()
        text = log_path.read_text(errors="replace")
        if len(text) > 200_000:
            log_path.write_text(text[-200_000:])
        if timed_out:
            rows.append({"tool": tool, "passed": False, "summary": f"timed out after {time.monotonic() - began:.0f} s"})
            continue
        summaries = re.findall(r"(?:ERROR|RACECHECK) SUMMARY:.*", text)
        errors = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) error", text)]
        errors += [int(n) for n in re.findall(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) error", text)]
        passed = process.returncode == 0 and bool(summaries) and not any(errors)
        summary = "; ".join(summaries) or f"no summary line, exit {process.returncode}"
        if process.returncode not in (0, 86):
            summary += f" (exit {process.returncode})"
        rows.append({"tool": tool, "passed": passed, "summary": summary})
    return rows


# ---------------------------------------------------------------------------------
# Timings


def measure(run, synchronize, simulate, batches=5, batch_seconds=0.1):
    """Median seconds per call of ``run`` (after a warm-up call)."""
    run()
    synchronize()
    if simulate:
        start = time.perf_counter()
        run()
        synchronize()
        return time.perf_counter() - start
    start = time.perf_counter()
    run()
    synchronize()
    once = max(time.perf_counter() - start, 1e-6)
    repeats = max(1, min(1000, int(batch_seconds / once)))
    samples = []
    for _ in range(batches):
        synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        synchronize()
        samples.append((time.perf_counter() - start) / repeats)
    return statistics.median(samples)


@cuda.jit
def _fill_uniform(out, seed, low, high):
    # An integer hash of the index: reproducible, no host round trip, no overflow
    # of int64 below 8e9 elements.
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        x = (i * 1103515245 + seed) & 0x7FFFFFFF
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0x7FFFFFFF
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0x7FFFFFFF
        x = (x >> 16) ^ x
        out[i] = low + (high - low) * (x / 2147483648.0)


def device_uniform(shape, dtype, seed, low, high, simulate):
    array = cuda.device_array(math.prod(shape), dtype)
    blocks, threads = (1, 32) if simulate else (1024, 256)
    _fill_uniform[blocks, threads](array, seed, low, high)
    return array.reshape(*shape)


def free_device_memory():
    gc.collect()
    if "torch" in sys.modules:
        sys.modules["torch"].cuda.empty_cache()
    if "cupy" in sys.modules:
        sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
    context = cuda.current_context()
    if hasattr(context, "deallocations"):
        context.deallocations.clear()
    free, _ = context.get_memory_info()
    return free


def copy_bandwidth(simulate):
    """Device-to-device copy: (bytes read + written) per second, and the size used."""
    nbytes = 1 << 12 if simulate else min(1 << 31, free_device_memory() // 4)
    source = device_uniform((nbytes // 4,), np.float32, 1, 0.0, 1.0, simulate)
    target = cuda.device_array_like(source)
    seconds = measure(lambda: target.copy_to_device(source), cuda.synchronize, simulate)
    del source, target
    return {"bytes": nbytes, "seconds": seconds, "tb_per_s": 2 * nbytes / seconds / 1e12}


FUSED = "fused (numba-cuda)"
# Timed at every size against every competitor (torch.compile included); the others
# at 1e8 against the competitors that compile quickly. Sized so that the run fits its
# budget (see plan). The softmax cross-entropies have timing shapes of their own.
HEADLINE = ("huber", "weighted_sigmoid_cross_entropy", "embedding_contrastive")
# The losses of the launch-shape sweep: one cheap and one with transcendentals.
SWEPT = ("huber", "weighted_sigmoid_cross_entropy")
ALL_KERNELS_ELEMENTS = 10**8


class Provider(NamedTuple):
    """One implementation to time: ``prepare(loss, shape, dtype)`` returns ``(run,
    synchronize)`` on data already on the device; ``compute(loss, y_true, y_pred)``
    runs it once on host inputs and returns host ``(loss, grad)`` (the formula check);
    ``bytes_per_element`` is a guess of its peak memory, to skip sizes that don't fit;
    ``headline_only``: for the headline losses only (too slow to set up for every
    kernel, or of little interest: CuPy's unfused printed slopes)."""

    name: str
    prepare: Callable
    compute: Callable
    bytes_per_element: int  # times the dtype's itemsize
    headline_only: bool = False

    def applies(self, loss):
        # Competitors see the headline losses and one kernel per definition: a loss's
        # other static variants (binary_crossentropy[from_logits=True]...) differ in
        # their formula only, which the correctness step checks for every kernel.
        if loss.name in HEADLINE:
            return True
        if loss.layout.timing_shapes[0]:
            # The softmax cross-entropies meet PyTorch's, JAX's and CuPy's: not
            # torch.compile, whose compile per loss the budget has no room for.
            return not self.name.startswith("torch.compile")
        return not self.headline_only and _first_variant(loss.name)


@functools.lru_cache(maxsize=None)
def _first_variants():
    first = {}
    for kernel in json.loads(SPECS_PATH.read_text())["kernels"]:
        first.setdefault(kernel["name"].split("[")[0], kernel["name"])
    return frozenset(first.values())


def _first_variant(name):
    return "[" not in name or name in _first_variants()


def fused_provider(simulate):
    def prepare(loss, shape, dtype):
        if loss.labels:
            labels = np.random.default_rng(11).integers(0, shape[-1], loss.layout.true_shape(shape))
            y_true = cuda.to_device(labels)
        else:
            y_true = device_uniform(loss.layout.true_shape(shape), dtype, 11, *loss.true_range, simulate)
        y_pred = device_uniform(shape, dtype, 12, *loss.pred_range, simulate)
        loss_out, grad_out = cuda.device_array(loss.layout.loss_shape(shape), dtype), cuda.device_array(shape, dtype)

        def run():
            loss.launcher(y_true, y_pred, **loss.params, loss_out=loss_out, grad_out=grad_out)

        return run, cuda.synchronize

    return Provider(FUSED, prepare, None, 4)


def _uniform(random, shape, low, high):
    return low + (high - low) * random(shape)


def torch_providers():
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device for torch")
    compiled = {}

    def per_sample(loss, use_compile):
        def function(y_true, y_pred):
            return loss.per_sample(torch_ops(torch, y_pred), y_true, y_pred, loss.values)

        if not use_compile:
            return function
        # One dynamic-shape compilation per loss serves every size: a static one per
        # size would cost minutes of the run, and past Dynamo's cache limit later
        # calls would silently run eagerly.
        if loss.name not in compiled:
            compiled[loss.name] = torch.compile(function, dynamic=True)
        return compiled[loss.name]

    def make(use_compile):
        def prepare(loss, shape, dtype):
            torch_dtype = getattr(torch, np.dtype(dtype).name)

            def random(s):
                return torch.rand(s, device="cuda", dtype=torch_dtype)

            if loss.labels:
                y_true = torch.randint(0, shape[-1], loss.layout.true_shape(shape), device="cuda")
            else:
                y_true = _uniform(random, loss.layout.true_shape(shape), *loss.true_range)
            y_pred = _uniform(random, shape, *loss.pred_range).requires_grad_()
            function = per_sample(loss, use_compile)
            ones = torch.ones(loss.layout.loss_shape(shape), device="cuda", dtype=torch_dtype)

            def run():
                value = function(y_true, y_pred)
                torch.autograd.grad(value, y_pred, grad_outputs=ones)

            return run, torch.cuda.synchronize

        def compute(loss, y_true, y_pred):
            t = torch.tensor(y_true, device="cuda")
            p = torch.tensor(y_pred, device="cuda", requires_grad=True)
            value = per_sample(loss, use_compile)(t, p)
            (grad,) = torch.autograd.grad(value, p, grad_outputs=torch.ones_like(value))
            return value.detach().cpu().numpy(), grad.cpu().numpy()

        return prepare, compute

    return [
        Provider("PyTorch eager (autograd)", *make(False), 10),
        Provider("torch.compile (dynamic shapes)", *make(True), 6, headline_only=True),
    ]


def jax_provider():
    import jax

    if jax.default_backend() != "gpu":
        raise RuntimeError(f"JAX runs on {jax.default_backend()}, not a GPU")
    ops = jax_ops(jax)

    def function(loss):
        def per_sample_and_grad(y_true, y_pred):
            value, pullback = jax.vjp(lambda p: loss.per_sample(ops, y_true, p, loss.values), y_pred)
            return value, pullback(jax.numpy.ones_like(value))[0]

        return jax.jit(per_sample_and_grad)

    def prepare(loss, shape, dtype):
        key_true, key_pred = jax.random.split(jax.random.PRNGKey(0))
        if loss.labels:
            y_true = jax.random.randint(key_true, loss.layout.true_shape(shape), 0, shape[-1])
        else:
            y_true = jax.random.uniform(key_true, loss.layout.true_shape(shape), dtype, *loss.true_range)
        y_pred = jax.random.uniform(key_pred, shape, dtype, *loss.pred_range)
        compiled = function(loss)
        outputs = []

        def run():
            outputs[:] = [compiled(y_true, y_pred)]

        return run, lambda: jax.block_until_ready(outputs)

    def compute(loss, y_true, y_pred):
        value, grad = function(loss)(jax.numpy.asarray(y_true), jax.numpy.asarray(y_pred))
        return np.asarray(value), np.asarray(grad)

    return Provider("JAX jit (jax.vjp)", prepare, compute, 8)


def cupy_provider():
    import cupy

    def prepare(loss, shape, dtype):
        if loss.labels:
            y_true = cupy.random.randint(0, shape[-1], loss.layout.true_shape(shape))
        else:
            y_true = _uniform(lambda s: cupy.random.random(s, dtype), loss.layout.true_shape(shape), *loss.true_range)
        y_pred = _uniform(lambda s: cupy.random.random(s, dtype), shape, *loss.pred_range)
        ops = array_ops(cupy, dtype)

        def run():
            loss.analytic(ops, y_true, y_pred, loss.values)

        return run, cupy.cuda.Device().synchronize

    def compute(loss, y_true, y_pred):
        value, grad = loss.analytic(array_ops(cupy, y_pred.dtype), cupy.asarray(y_true), cupy.asarray(y_pred), loss.values)
        return cupy.asnumpy(value), cupy.asnumpy(grad)

    return Provider("CuPy (printed slopes, unfused)", prepare, compute, 10, headline_only=True)


def numpy_provider():
    """The CuPy provider's code on NumPy in float32: what CI can check of it."""

    def compute(loss, y_true, y_pred):
        with np.errstate(over="ignore"):
            return loss.analytic(array_ops(np, y_pred.dtype), y_true, y_pred, loss.values)

    return Provider("NumPy float32 (printed slopes)", None, compute, 0)


def other_providers(notes):
    """The competitors that import here; a note for each that does not."""
    providers = []
    # JAX last: its memory pool keeps what it took until the process ends.
    for name, make in (("CuPy", cupy_provider), ("PyTorch", torch_providers), ("JAX", jax_provider)):
        try:
            made = make()
        except Exception as error:  # ImportError, or a build without CUDA
            notes.append(f"{name}: skipped ({type(error).__name__}: {error})")
            continue
        providers.extend(made if isinstance(made, list) else [made])
    return providers


def time_cell(loss, provider, shape, dtype, bandwidth, simulate, deadline):
    row = {"loss": loss.name, "implementation": provider.name, "shape": list(shape), "elements": math.prod(shape)}
    itemsize = np.dtype(dtype).itemsize
    if time.monotonic() > deadline:
        return {**row, "note": "skipped: time budget spent"}
    needed = provider.bytes_per_element * math.prod(shape) * itemsize
    free = free_device_memory()
    if needed > free:
        return {**row, "note": f"skipped: needs ~{needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"}
    try:
        run, synchronize = provider.prepare(loss, shape, dtype)
        seconds = measure(run, synchronize, simulate)
    except Exception as error:  # out of memory in a framework, a compile failure...
        return {**row, "note": f"failed: {type(error).__name__}: {str(error)[:200]}"}
    finally:
        run = synchronize = None
        free_device_memory()
    tb_per_s = loss.layout.minimal_bytes(shape, itemsize) / seconds / 1e12
    return {**row, "seconds": seconds, "tb_per_s": tb_per_s, "fraction_of_copy": tb_per_s / bandwidth["tb_per_s"]}


def timing_cells(losses, providers, sizes, simulate):
    """``[(loss, provider, shape)]`` in the order they run: every kernel fused at 1e8;
    the headline losses against every competitor at every size (provider by provider,
    so that each framework's memory is given back before the next); then the other
    kernels against the quick competitors at 1e8 (run after the sweep, see main)."""
    fused = next(provider for provider in providers if provider.name == FUSED)
    others = [provider for provider in providers if provider.name != FUSED]
    elements = 64 if simulate else ALL_KERNELS_ELEMENTS
    every = [(loss, fused, loss.layout.timing_shape(elements, simulate)) for loss in losses if not loss.layout.timing_shapes[0]]
    headline = [(loss, provider, loss.layout.timing_shape(size, simulate))
                for provider in providers for loss in losses if loss.name in HEADLINE
                for size in sizes if not (provider is fused and size == elements)]  # fmt: skip
    rest = [(loss, provider, loss.layout.timing_shape(elements, simulate))
            for provider in others for loss in losses
            if loss.name not in HEADLINE and not loss.layout.timing_shapes[0] and provider.applies(loss)]  # fmt: skip
    return every + headline, rest


def softmax_cells(losses, providers, simulate):
    """``[(loss, provider, shape)]`` of the softmax cross-entropies: each at its
    layout's timing shapes, fused first, then each competitor (provider by provider)."""
    return [(loss, provider, shape) for provider in providers for loss in losses
            if loss.layout.timing_shapes[0] and (provider.name == FUSED or provider.applies(loss))
            for shape in loss.layout.timing_shapes[1 if simulate else 0]]  # fmt: skip


def run_timings(cells, formula_rows, bandwidth, simulate, deadline):
    usable = {(row["loss"], row["implementation"]) for row in formula_rows if row.get("passed")}
    rows = []
    for loss, provider, shape in cells:
        if provider.name != FUSED and (loss.name, provider.name) not in usable:
            continue  # its formula was not checked, or failed: not timed
        row = time_cell(loss, provider, shape, np.float32, bandwidth, simulate, deadline)
        rows.append({**row, "launch": loss.layout.describe(shape) if provider.name == FUSED else ""})
    return rows


# (columns per row, threads per block, most threads per row): the launcher's own
# choice (block size 256, no cap) for each kind of row, then other group and block
# sizes for the lengths where the best one is not obvious without measuring.
LAUNCH_SWEEP = [(1, 256, 1024), (8, 256, 1024), (100, 256, 1024), (1000, 256, 1024), (10**5, 256, 1024), (10**8, 256, 1024),
                (100, 256, 32), (1000, 256, 32), (1000, 256, 128), (1000, 512, 1024), (1000, 1024, 1024),
                (10**5, 256, 32), (10**5, 512, 1024), (10**5, 1024, 1024)]  # fmt: skip
SIMULATED_LAUNCH_SWEEP = [(1, 32, 1024), (8, 32, 1024), (64, 32, 1024), (64, 32, 8)]


def swept(losses):
    return [loss for loss in losses if loss.layout.sweep and loss.name in SWEPT]


def run_launch_shapes(losses, fused, bandwidth, simulate, deadline):
    """The fused kernel on one size under several launch shapes (its constants set
    for each, then restored)."""
    elements = 64 if simulate else 10**8
    rows = []
    defaults = cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MAX_THREADS_PER_ROW
    try:
        for loss in swept(losses):
            for n_columns, threads, widest in SIMULATED_LAUNCH_SWEEP if simulate else LAUNCH_SWEEP:
                cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MAX_THREADS_PER_ROW = threads, widest
                shape = matrix_shape(elements, n_columns)
                row = time_cell(loss, fused, shape, np.float32, bandwidth, simulate, deadline)
                rows.append({**row, "launch": f"{threads} thr/block, " + describe_rows(shape)})
    finally:
        cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MAX_THREADS_PER_ROW = defaults
    return rows


# ---------------------------------------------------------------------------------
# The planned budget: estimates for an H200 host (guesses until a run measures them;
# the report's phase times say how far off they were).

ESTIMATE = {
    "startup": 25.0,  # imports (PyTorch, JAX, CuPy), CUDA context, the specs
    "copy": 3.0,
    "compile": 1.5,  # one numba-cuda kernel (a loss, a dtype, with/without gradient)
    "check": 0.05,  # one correctness launch with host inputs, reference and copies
    "formula": 0.2,  # one competitor's loss and gradient on 6.4e4 elements
    "jit": 1.0,  # a JAX jit (per loss and shape)
    "torch_compile_first": 30.0,  # Inductor's start and first dynamic-shape compile
    "torch_compile": 8.0,  # each further loss
    "cell": 0.8,  # one timed cell: inputs made, warm-up, 5 batches of 0.1 s
    "sanitizer_start": 15.0,  # each tool's process: imports, context
}


def plan(losses, providers, sizes, sanitize=True):
    """``[(step, seconds, what)]``: the budget of a run on a GPU, from the sizes of its
    cases (under the simulator: of the GPU run it stands in for)."""
    e = ESTIMATE
    n_kernels = len(losses)
    n_checks = sum(len(checked_variants(loss, shape, False)) for loss in losses for shape in loss.layout.shapes)
    n_compiles = sum(len(checked_variants(loss, loss.layout.shapes[0], False)) for loss in losses)
    correctness = n_compiles * e["compile"] + n_checks * e["check"]
    sanitizer = e["sanitizer_start"] + 1.5 * n_kernels * 2 * e["compile"]  # slower under the tool
    headline = [loss for loss in losses if loss.name in HEADLINE]
    names = [provider.name for provider in providers]
    jax = any(name.startswith("JAX") for name in names)
    torch_compile = any(name.startswith("torch.compile") for name in names)
    n_formula = sum(provider.applies(loss) for loss in losses for provider in providers if provider.compute)
    formulas = n_formula * e["formula"] + jax * n_kernels * e["jit"]
    if torch_compile and headline:
        formulas += e["torch_compile_first"] + (len(headline) - 1) * e["torch_compile"]
    first, rest = timing_cells(losses, providers, sizes, False)
    softmax = softmax_cells(losses, providers, False)

    def cost(cells):  # a JAX cell compiles its jit first
        return sum(e["cell"] + e["jit"] * provider.name.startswith("JAX") for _, provider, _ in cells)

    sweep = len(swept(losses)) * len(LAUNCH_SWEEP) * e["cell"]
    return [
        ("startup", e["startup"], "imports, CUDA context, kernel_specs.json"),
        ("1. copy bandwidth", e["copy"], "device-to-device copy of up to 2 GiB"),
        ("2+3. correctness (sanitizers alongside)", max(correctness, sanitizer if sanitize else 0.0),
         f"{n_kernels} kernels, {n_checks} launches; sanitizers ~{sanitizer:.0f} s in parallel"),
        ("3. competitors' formulas", formulas, f"{n_formula} checks"),
        ("4. timings", cost(first), f"{len(first)} cells"),
        ("4. softmax cross-entropies vs competitors", cost(softmax), f"{len(softmax)} cells"),
        ("5. launch-shape sweep", sweep, f"{len(swept(losses))} losses x {len(LAUNCH_SWEEP)} launch shapes"),
        ("4. other kernels vs competitors", cost(rest), f"{len(rest)} cells (last: cut first)"),
    ]  # fmt: skip


def print_plan(steps, budget):
    total = sum(seconds for _, seconds, _ in steps)
    print(f"planned budget: ~{total:.0f} s (cells past {budget:.0f} s are skipped)", flush=True)
    elapsed = 0.0
    for step, seconds, what in steps:
        elapsed += seconds
        cut = "  <- past the budget: cut" if elapsed > budget else ""
        print(f"  {step:<42} {seconds:6.0f} s  {what}{cut}", flush=True)
    return total
# ---------------------------------------------------------------------------------
# Report


def environment(simulate):
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "CUDA simulator: timings are meaningless" if simulate else "GPU",
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import numba_cuda

        info["numba_cuda"] = numba_cuda.__version__
    except (ImportError, AttributeError):
        pass
    if simulate:
        info["device"] = "none: CUDA simulator"
    else:
        device = cuda.get_current_device()
        info["device"] = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
        info["compute_capability"] = ".".join(map(str, device.compute_capability))
        info["multiprocessors"] = device.MULTIPROCESSOR_COUNT
        free, total = cuda.current_context().get_memory_info()
        info["memory_gib"] = round(total / 2**30, 1)
        info["driver_cuda_version"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
    for module in ("torch", "jax", "cupy"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "?")
    info["tensorflow_imported"] = "tensorflow" in sys.modules
    return info


def _time(seconds):
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.1f} µs"


def _verdict(passed):
    return "pass" if passed else ("—" if passed is None else "FAIL")


def markdown(report):
    lines = ["# fusedloss CUDA kernels: GPU report", ""]
    env = report["environment"]
    lines += [f"- {key}: {value}" for key, value in env.items()] + [""]
    lines += ["## Correctness: CUDA kernels vs the float64 reference", ""]
    lines += ["| loss | shape | dtype | grad | launch | rel. error | result |", "|---|---|---|---|---|---|---|"]
    for row in report["correctness"]:
        error = "—" if row["relative_error"] is None else f"{row['relative_error']:.1e}"
        result = _verdict(row["passed"]) + (f" ({row['error']})" if row.get("error") else "")
        if row.get("inputs_untouched") is False:
            result += " (an input was modified)"
        lines.append(f"| {row['loss']} | {tuple(row['shape'])} | {row['dtype']} | {row['grad']} | {row['launch']} | {error} | {result} |")
    lines += ["", "## References and other implementations vs the float64 printed expression (checked before timing)", ""]
    lines += ["| loss | implementation | rel. error | result |", "|---|---|---|---|"]
    for row in report["references"] + report["formulas"]:
        error = f"{row['relative_error']:.1e}" if "relative_error" in row else "—"
        lines.append(f"| {row['loss']} | {row['implementation']} | {error} | {_verdict(row['passed'])} {row.get('note', '')} |")
    lines += ["", "## compute-sanitizer", "", "| tool | result | summary |", "|---|---|---|"]
    for row in report["sanitizer"]:
        lines.append(f"| {row['tool']} | {_verdict(row['passed'])} | {row['summary']} |")
    bandwidth = report["copy_bandwidth"]
    lines += ["", "## Copy bandwidth", "",
              f"Device-to-device copy of {bandwidth['bytes'] / 2**30:.2f} GiB: {_time(bandwidth['seconds'])}, "
              f"**{bandwidth['tb_per_s']:.3f} TB/s** (bytes read + written).", ""]  # fmt: skip
    for title, key in (("Forward + backward, float32 (per-sample loss and gradient w.r.t. y_pred)", "timings"),
                       ("Fused kernel by launch shape, float32", "launch_shapes")):  # fmt: skip
        lines += [f"## {title}", "", "Minimal bytes: each input read once, the gradient and the loss written once.", ""]
        lines += ["| loss | implementation | shape | launch | time | TB/s | of copy | note |", "|---|---|---|---|---|---|---|---|"]
        for row in report[key]:
            timed = "seconds" in row
            cells = [_time(row["seconds"]), f"{row['tb_per_s']:.3f}", f"{row['fraction_of_copy']:.0%}"] if timed else ["—"] * 3
            lines.append(f"| {row['loss']} | {row['implementation']} | {tuple(row['shape'])} | {row.get('launch', '')} | "
                         + " | ".join(cells) + f" | {row.get('note', '')} |")  # fmt: skip
        lines.append("")
    lines += ["## Time: planned and spent", "", "| step | planned | spent |", "|---|---|---|"]
    for step, planned, _ in report["plan"]:
        lines.append(f"| {step} | {planned:.0f} s | {report['spent'].get(step, '—')} |")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv):
    args = parse_arguments(argv)
    only = tuple(name for name in args.kernels.split(",") if name)
    if args.sanitize_case:
        return sanitize_case(only)
    start = time.monotonic()
    deadline = start + args.time_budget
    simulate = args.simulate
    sizes = [64] if simulate else [int(float(size)) for size in args.sizes.split(",")]
    notes = []
    if args.plan:
        losses = present_losses(notes, only=only)
        names = ["CuPy (printed slopes, unfused)", "PyTorch eager (autograd)", "torch.compile (dynamic shapes)", "JAX jit (jax.vjp)"]
        providers = [Provider(FUSED, None, None, 4)] + [
            Provider(name, None, True, 0, headline_only=name.startswith(("torch.compile", "CuPy"))) for name in names
        ]
        print_plan(plan(losses, providers, sizes), args.time_budget)
        return 0
    if not simulate and not cuda.is_available():
        print("No CUDA GPU that numba-cuda can use here: nothing checked. (--simulate runs the CUDA simulator.)")
        return 2
    out_folder = pathlib.Path(args.out or os.environ.get("OUT") or "gpu-results")
    out_folder.mkdir(parents=True, exist_ok=True)
    if simulate:
        # Each simulated thread is a Python thread: small blocks, few of them.
        cuda_kernels.THREADS_PER_BLOCK, cuda_kernels.MIN_BLOCKS, cuda_kernels.MAX_BLOCKS = 32, 4, 4
        notes.append("CUDA simulator: 32 threads per block, tiny sizes; the timings say nothing about a GPU")
    losses = present_losses(notes, only=only)
    notes.append(f"kernels: {', '.join(loss.name for loss in losses)} (elementwise ones from {SPECS_PATH.name})")
    notes.append("parameters: each kernel's defaults")
    fused = fused_provider(simulate)
    if simulate:
        notes.append("--simulate: PyTorch, JAX and CuPy are not run; the CuPy code is checked on NumPy instead")
        others, checked = [], [numpy_provider()]
    else:
        others = other_providers(notes)
        checked = others
    gpu_sizes = [int(float(size)) for size in args.sizes.split(",")]
    steps = plan(losses, [fused] + others, gpu_sizes, sanitize=not args.no_sanitizer)
    print_plan(steps, args.time_budget)
    spent = {}

    def finished(step, began):
        spent[step] = f"{time.monotonic() - began:.0f} s"
        return time.monotonic()

    began = finished("startup", start)
    print("1. copy bandwidth", flush=True)
    bandwidth = copy_bandwidth(simulate)
    print(f"   {bandwidth['tb_per_s']:.3f} TB/s", flush=True)
    began = finished("1. copy bandwidth", began)

    print("2. compute-sanitizer (background) and 3. correctness", flush=True)
    if simulate or args.no_sanitizer:
        started = {tool: {"tool": tool, "passed": None, "summary": "not run (--simulate or --no-sanitizer)"} for tool in SANITIZER_TOOLS}
    else:
        started = start_sanitizers(out_folder, only)
    correctness = check_correctness(losses, simulate, deadline)
    references = check_references(losses, simulate)
    print("   waiting for compute-sanitizer", flush=True)
    sanitizer = finish_sanitizers(started, deadline + 30)
    began = finished("2+3. correctness (sanitizers alongside)", began)
    formulas = check_formulas(losses, checked, simulate, deadline)
    began = finished("3. competitors' formulas", began)

    print("4. timings", flush=True)
    first, rest = timing_cells(losses, [fused] + others, sizes, simulate)
    timings = run_timings(first, formulas, bandwidth, simulate, deadline)
    began = finished("4. timings", began)
    timings += run_timings(softmax_cells(losses, [fused] + others, simulate), formulas, bandwidth, simulate, deadline)
    began = finished("4. softmax cross-entropies vs competitors", began)
    print("5. launch shapes", flush=True)
    launch_shapes = run_launch_shapes(losses, fused, bandwidth, simulate, deadline)
    began = finished("5. launch-shape sweep", began)
    timings += run_timings(rest, formulas, bandwidth, simulate, deadline)
    finished("4. other kernels vs competitors", began)
    notes.append(f"total run time {time.monotonic() - start:.0f} s (budget {args.time_budget:.0f} s)")

    report = {
        "environment": environment(simulate),
        "correctness": correctness,
        "references": references,
        "formulas": formulas,
        "sanitizer": sanitizer,
        "copy_bandwidth": bandwidth,
        "timings": timings,
        "launch_shapes": launch_shapes,
        "plan": steps,
        "spent": spent,
        "notes": notes,
    }
    text = markdown(report)
    (out_folder / f"{REPORT_NAME}.md").write_text(text)
    (out_folder / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=1, default=str))
    print(text)
    failed = (
        any(row["passed"] is False for row in correctness + references)
        or any(row["passed"] is False for row in sanitizer)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
