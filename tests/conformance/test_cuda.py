"""Every row's CUDA kernel: in numba's simulator on tiny inputs (one or two blocks of
32 threads), and compiled to PTX, where a float32 kernel must keep float32 arithmetic
except for the row sums the CUDA row kernel keeps in float64."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .helpers import assert_close, reference_loss, value_and_gradient
from .table import ROWS, cases, inputs, kwargs_for

pytestmark = pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") != "1", reason="needs the CUDA simulator (set in tests/conftest.py)"
)
SHAPE = (3, 7)  # three rows of seven: one block reduces several rows, grid-stride


def kernel_name(row, variant, shape=SHAPE):
    """The registered kernel of ``row`` with ``variant``'s static parameters, and the
    launcher's numeric parameters in order."""
    definition = row.loss.definition
    checked = definition.check(kwargs_for(variant, shape))
    _, _, name = definition.traced(definition.static_key(checked))
    params = [np.asarray(checked[n]) if isinstance(checked[n], tuple) else checked[n] for n in definition.numeric]
    return name, params


@pytest.fixture(scope="module")
def simulated_cuda():
    from fusedloss.kernels import cuda

    saved = cuda.THREADS_PER_BLOCK, cuda.MAX_BLOCKS
    cuda.THREADS_PER_BLOCK, cuda.MAX_BLOCKS = 32, 2
    yield cuda
    cuda.THREADS_PER_BLOCK, cuda.MAX_BLOCKS = saved


def simulated_launch(cuda, row, variant, y_true, y_pred):
    """``(per-sample loss, gradient of their sum)`` from the row's CUDA launcher."""
    from fusedloss.kernels import softmax_cuda

    kwargs = kwargs_for(variant, y_pred.shape)
    smoothing = kwargs.get("label_smoothing", 0.0)
    if row.kernel == "softmax dense":
        return softmax_cuda.softmax_cross_entropy(y_true, y_pred, smoothing)
    if row.kernel == "softmax sparse":
        return softmax_cuda.sparse_softmax_cross_entropy(y_true.astype(np.int64), y_pred, kwargs.get("ignore_class"))
    if row.kernel == "softmax focal":
        alpha = np.full(y_pred.shape[-1], kwargs.get("alpha", 0.25))
        return softmax_cuda.categorical_focal_cross_entropy(y_true, y_pred, alpha, kwargs.get("gamma", 2.0), smoothing)
    name, params = kernel_name(row, variant)
    return getattr(cuda, name)(y_true, y_pred, *params)


@pytest.mark.parametrize("row, variant", cases())
def test_simulated_kernel_matches_the_reference(simulated_cuda, row, variant):
    if row.kernel.startswith("softmax") and not variant.kwargs.get("from_logits"):
        pytest.skip("probabilities take Keras's formula in TF ops: no kernel")
    dtype = "float64" if variant != row.variants[0] else "float32"
    (y_true, y_pred), (true64, pred64) = inputs(row, variant, SHAPE, dtype)
    loss, grad = simulated_launch(simulated_cuda, row, variant, y_true, y_pred)
    # The launcher's gradient is that of the sum of the per-sample losses
    want_loss, want_grad = value_and_gradient(reference_loss(row, variant, SHAPE, "none"), true64, pred64)
    assert loss.dtype == np.dtype(dtype) and grad.shape == SHAPE
    assert_close("per-sample loss", loss, want_loss, row.tolerance_for(dtype))
    assert_close("gradient", grad, want_grad, row.tolerance_for(dtype))


def _environment_without_simulator():
    import fusedloss

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(fusedloss.__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


PTX_SCRIPT = textwrap.dedent(
    """
    from fusedloss.kernels import cuda
    from tests.conformance.table import ROWS
    from tests.conformance.test_cuda import kernel_name
    # Every kernel of the package in one child process (one import, one NVVM): the
    # table's rows, the hand-written ones (the embedding pairs) and add_chunks.
    names = {kernel_name(row, variant)[0] for row in ROWS if row.kernel == "elementwise" for variant in row.variants}
    names |= set(cuda.PTX_KERNELS)  # (the softmax kernels: tests/kernels/test_softmax_cuda.py)
    for (name, dtype, with_grad), ptx in sorted(cuda.compile_all_ptx(names=names).items(), key=str):
        lines = [line.strip() for line in ptx.splitlines()]
        f64 = sum(1 for line in lines if line.split(".")[0] in ("mul", "fma", "div", "sqrt", "ex2", "lg2", "rcp")
                  and ".f64" in line)
        print("PTX", name.replace(" ", ""), dtype, with_grad, f64, ptx.count(".entry"), ".target sm_80" in ptx,
              "bar.sync" in ptx)
    """
)


def test_every_row_compiles_to_ptx_and_float32_stays_float32():
    """Real code generation, in a child process (this one runs the simulator)."""
    env = _environment_without_simulator()
    probe = "from numba.cuda.cudadrv.nvvm import NVVM; NVVM()"
    if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0:
        pytest.skip("no NVVM here: install numba-cuda[cu12] or [cu13] (the test extra does)")
    result = subprocess.run([sys.executable, "-c", PTX_SCRIPT], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    compiled, shapes = {}, {}
    for line in result.stdout.splitlines():
        if line.startswith("PTX "):
            _, name, dtype, with_grad, f64, entries, sm_80, synchronises = line.split()
            compiled[(name, dtype, with_grad)] = int(f64)
            shapes[(name, dtype, with_grad)] = (int(entries), sm_80 == "True", synchronises == "True")
    for row in (row for row in ROWS if row.kernel == "elementwise"):
        for variant in row.variants:
            name = kernel_name(row, variant)[0].replace(" ", "")
            for with_grad in ("True", "False"):
                assert (name, "float64", with_grad) in compiled, name
                for dtype in ("float32", "float64"):
                    # one kernel for the target GPU; its rows reduced in shared memory
                    assert shapes[(name, dtype, with_grad)] == (1, True, True), (name, dtype, with_grad)
                if "ptx_float32" in row.skips:
                    continue
                # float64 multiplies, FMAs, divisions...: only the row sum's one scaling by 1 / n
                assert compiled[(name, "float32", with_grad)] <= 1, (name, with_grad, compiled[(name, "float32", with_grad)])
    for dtype in ("float32", "float64"):
        for with_grad in ("True", "False"):
            assert shapes[("embedding_contrastive", dtype, with_grad)] == (1, True, True)
        # adding split rows' chunks needs no synchronisation
        assert shapes[("add_chunks", dtype, "None")] == (1, True, False)
    assert compiled[("embedding_contrastive", "float64", "True")] > 10
