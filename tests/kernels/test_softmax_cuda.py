"""CUDA softmax cross-entropy kernels in numba's simulator (logic) against the float64
references and the CPU kernels, and compiled to PTX (code generation).

Every simulated thread is a Python thread: one or two blocks of 32 threads, rows of
5 (several rows per block), 37 and 70 classes (longer than a block), and 70 split
into two chunks, which is enough for every branch of the launch shapes.
"""

import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import numpy as np
import pytest

from fusedloss.kernels import softmax_cpu, softmax_reference

pytestmark = [
    pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1", reason="needs the CUDA simulator (tests/conftest.py)"),
    # The simulator runs the float32 exp in NumPy scalars, which warn on the inf - inf
    # it computes for exp(-inf) of masked logits (the GPU's selects give 0 silently).
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

LOSSES = ("dense", "sparse", "focal")


class Case(NamedTuple):
    shape: tuple
    split: bool  # rows split into chunks (the launch shape's third kind)


CASES = [Case((3, 5), False), Case((3, 37), False), Case((2, 2, 70), False), Case((2, 70), True)]
TOLERANCE = {np.float32: 2e-6, np.float64: 1e-12}
GRAD_SCALE = 0.5  # an expected upstream != 1


@pytest.fixture
def simulated(monkeypatch):
    from fusedloss.kernels import cuda, softmax_cuda

    monkeypatch.setattr(cuda, "THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(cuda, "MAX_BLOCKS", 2)
    return softmax_cuda


@pytest.fixture
def split_rows(monkeypatch):
    """Rows of 70 split in two chunks of 35 for 32 threads (one column per thread is
    enough to split): the real threshold needs rows of thousands."""
    from fusedloss.kernels import cuda

    monkeypatch.setattr(cuda, "MIN_COLUMNS_PER_THREAD", 1)


def inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.normal(size=shape)).astype(dtype)
    targets = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(dtype)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    return logits, targets, labels


def run(module, loss, logits, targets, labels, **options):
    """``(loss, grad)`` of ``module``'s launcher for ``loss`` with the options of the
    cases here: smoothing 0.1, ignore label -1, focal alpha per class."""
    if loss == "dense":
        return module.softmax_cross_entropy(targets, logits, 0.1, **options)
    if loss == "sparse":
        return module.sparse_softmax_cross_entropy(labels, logits, -1, **options)
    alpha = np.linspace(0.1, 1.0, tuple(logits.shape)[-1])  # (the simulator's shapes refuse -1)
    return module.categorical_focal_cross_entropy(targets, logits, alpha, 2.0, 0.1, **options)


def reference(loss, logits, targets, labels):
    if loss == "dense":
        return softmax_reference.softmax_cross_entropy(targets, logits, 0.1)
    if loss == "sparse":
        return softmax_reference.sparse_softmax_cross_entropy(labels, logits, -1)
    alpha = np.linspace(0.1, 1.0, tuple(logits.shape)[-1])  # (the simulator's shapes refuse -1)
    return softmax_reference.categorical_focal_cross_entropy(targets, logits, alpha, 2.0, 0.1)


def close(actual, expected, dtype, what):
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.shape}{'-split' if c.split else ''}")
@pytest.mark.parametrize("loss", LOSSES)
def test_matches_the_reference_and_the_cpu_kernel(simulated, request, loss, case, dtype):
    from fusedloss.kernels import cuda

    if case.split:
        request.getfixturevalue("split_rows")
    n_rows, n_classes = int(np.prod(case.shape[:-1])), case.shape[-1]
    assert (cuda.launch_shape(n_rows, n_classes).chunks_per_row > 1) == case.split
    logits, targets, labels = inputs(case.shape, dtype)
    labels.flat[1] = -1  # one ignored row
    got_loss, got_grad = run(simulated, loss, logits, targets, labels, grad_scale=GRAD_SCALE)
    want_loss, want_grad = reference(loss, logits, targets, labels)
    assert got_loss.shape == case.shape[:-1] and got_grad.shape == case.shape
    assert got_loss.dtype == got_grad.dtype == dtype
    close(got_loss, want_loss, dtype, "loss against the float64 reference")
    close(got_grad, GRAD_SCALE * want_grad, dtype, "gradient against the float64 reference")
    if loss == "sparse":
        assert got_loss.flat[1] == 0 and not got_grad.reshape(-1, n_classes)[1].any()


def test_agrees_with_the_cpu_kernel(simulated, split_rows):
    """The focal loss in float32, rows split here and whole on the CPU: the CPU kernel
    computes its terms in float64, this one in float32. One case only: compiling a
    CPU kernel costs 10-30 s on the shared CI machine; the other losses agree with
    the CPU kernel through the reference, to which both are held as tightly."""
    loss, shape = "focal", (2, 70)
    logits, targets, labels = inputs(shape, np.float32, seed=7)
    labels[1] = -1
    got_loss, got_grad = run(simulated, loss, logits, targets, labels, grad_scale=GRAD_SCALE)
    cpu_loss, cpu_grad = run(softmax_cpu, loss, logits, targets, labels, grad_scale=GRAD_SCALE)
    close(got_loss, cpu_loss, np.float32, "loss")
    close(got_grad, cpu_grad, np.float32, "gradient")


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_only_kernel_given_buffers_and_inputs_untouched(simulated, loss):
    logits, targets, labels = inputs((3, 37), np.float32, seed=1)
    saved = logits.copy(), targets.copy(), labels.copy()
    want_loss, want_grad = run(simulated, loss, logits, targets, labels)
    loss_only, no_grad = run(simulated, loss, logits, targets, labels, with_grad=False)
    assert no_grad is None
    np.testing.assert_array_equal(loss_only, want_loss)
    loss_out, grad_out = np.full(3, np.nan, np.float32), np.full((3, 37), np.nan, np.float32)
    got_loss, got_grad = run(simulated, loss, logits, targets, labels, loss_out=loss_out, grad_out=grad_out)
    assert got_loss is loss_out and got_grad is grad_out
    np.testing.assert_array_equal(grad_out, want_grad)
    for before, after in zip(saved, (logits, targets, labels)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("split", [False, True], ids=["whole-rows", "split-rows"])
@pytest.mark.parametrize("loss", LOSSES)
def test_device_arrays_stay_on_the_device(simulated, request, loss, split):
    from numba import cuda

    if split:
        request.getfixturevalue("split_rows")
    logits, targets, labels = inputs((2, 70), np.float64, seed=2)
    want_loss, want_grad = run(simulated, loss, logits, targets, labels)
    device = [cuda.to_device(array) for array in (logits, targets, labels)]
    loss_out, grad_out = cuda.device_array(2), cuda.device_array((2, 70))
    got_loss, got_grad = run(simulated, loss, *device, loss_out=loss_out, grad_out=grad_out)
    assert got_loss is loss_out and got_grad is grad_out
    np.testing.assert_array_equal(got_loss.copy_to_host(), want_loss)
    np.testing.assert_array_equal(got_grad.copy_to_host(), want_grad)


@pytest.mark.parametrize("split", [False, True], ids=["whole-rows", "split-rows"])
@pytest.mark.parametrize("loss", LOSSES)
def test_a_nan_logit_spoils_its_row_only(simulated, request, loss, split):
    if split:
        request.getfixturevalue("split_rows")
    logits, targets, labels = inputs((3, 70), np.float32, seed=3)
    logits[1, 50] = np.nan
    got_loss, got_grad = run(simulated, loss, logits, targets, labels)
    want_loss, want_grad = reference(loss, logits, targets, labels)
    assert np.isnan(got_loss[1]) and np.isnan(got_grad[1]).all()
    close(got_loss[[0, 2]], want_loss[[0, 2]], np.float32, "rows without NaN")
    close(got_grad[[0, 2]], want_grad[[0, 2]], np.float32, "rows without NaN")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("loss", LOSSES)
def test_huge_logits_stay_finite(simulated, loss, dtype):
    logits, targets, labels = inputs((3, 37), dtype, seed=4)
    logits = np.sign(logits) * dtype(1e4) + logits  # |x| ~ 1e4: exp(x) overflows, exp(x - M) does not
    got_loss, got_grad = run(simulated, loss, logits, targets, labels)
    want_loss, want_grad = reference(loss, logits, targets, labels)
    assert np.isfinite(got_loss).all() and np.isfinite(got_grad).all()
    # 1e4 carries float32's rounding of x into the loss: absolute error ~ 1e4 eps
    np.testing.assert_allclose(got_loss, want_loss, rtol=TOLERANCE[dtype], atol=1e4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(got_grad, want_grad, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_masked_logits_of_minus_infinity_weigh_nothing(simulated):
    logits, _, labels = inputs((3, 37), np.float32, seed=5)
    logits[:, ::3] = -np.inf
    labels = np.array([1, 2, 4])  # labels on logits that are not masked
    got_loss, got_grad = simulated.sparse_softmax_cross_entropy(labels, logits)
    want_loss, want_grad = softmax_reference.sparse_softmax_cross_entropy(labels, logits)
    close(got_loss, want_loss, np.float32, "loss")
    close(got_grad, want_grad, np.float32, "gradient")
    assert (got_grad[:, ::3] == 0).all()


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_labels_out_of_range(simulated, label_dtype):
    from numba import cuda

    logits, _, _ = inputs((3, 5), np.float32, seed=6)
    labels = np.array([0, 5, 2], label_dtype)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\).*got label 5 at index \(1,\)"):
        simulated.sparse_softmax_cross_entropy(labels, logits)
    # Labels on the device are not read back: that row is NaN, the others are right.
    for bad in (5, -3):
        labels[1] = bad
        loss, grad = simulated.sparse_softmax_cross_entropy(cuda.to_device(labels), cuda.to_device(logits))
        loss, grad = loss.copy_to_host(), grad.copy_to_host()
        assert np.isnan(loss[1]) and np.isnan(grad[1]).all()
        want_loss, want_grad = softmax_reference.sparse_softmax_cross_entropy(labels[[0, 2]], logits[[0, 2]])
        close(loss[[0, 2]], want_loss, np.float32, "valid rows")
        close(grad[[0, 2]], want_grad, np.float32, "valid rows")


def test_bad_inputs_are_refused_before_any_launch(simulated):
    with pytest.raises(ValueError, match="same shape"):
        simulated.softmax_cross_entropy(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="labels must be int32 or int64"):
        simulated.sparse_softmax_cross_entropy(np.zeros(2), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="one value per class"):
        simulated.categorical_focal_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3)), alpha=[1.0, 2.0])
    loss, grad = simulated.softmax_cross_entropy(np.zeros((0, 3)), np.zeros((0, 3)))
    assert loss.shape == (0,) and grad.shape == (0, 3)


def test_the_cuda_module_finds_the_launchers_by_name(simulated):
    from fusedloss.kernels import cuda

    for name in ("softmax_cross_entropy", "sparse_softmax_cross_entropy", "categorical_focal_cross_entropy"):
        assert getattr(cuda, name) is getattr(simulated, name)


# ---------------------------------------------------------------------------------
# PTX, compiled for real in a child process (this one runs the simulator)

PTX_SCRIPT = textwrap.dedent(
    """
    import pathlib, sys, types
    import numba
    import numpy as np
    from numba import cuda as numba_cuda
    # fusedloss.kernels without fusedloss/__init__ (TensorFlow: seconds of import)
    package = types.ModuleType("fusedloss")
    package.__path__ = [str(pathlib.Path(sys.argv[1]))]
    sys.modules["fusedloss"] = package
    from fusedloss.kernels import cuda, softmax_cuda

    names = [name for name in cuda.PTX_KERNELS if "softmax" in name or "focal" in name]
    with cuda._device_functions_compiled_for((8, 0)):
        for name in names:
            kernels, make_arguments = cuda.PTX_KERNELS[name]
            for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
                # With the gradient only: a loss-only kernel is its twin without the
                # gradient's stores (the simulator runs both). About 3 s a compile.
                for with_grad, kernel in zip((True,), kernels):
                    signature = tuple(numba.typeof(a) for a in make_arguments(dtype, with_grad))
                    ptx, _ = numba_cuda.compile_ptx(kernel.py_func, signature, cc=(8, 0))
                    lines = [line.strip() for line in ptx.splitlines()]
                    # float64 work other than the loss sums' adds (a sub where LLVM folds
                    # the focal term's minus sign into one), the moves and conversions in
                    # and out of the float64 shared buffers, and declarations (".reg")
                    f64 = sum(1 for line in lines if ".f64" in line
                              and line.split(".")[0] not in ("", "add", "sub", "cvt", "mov", "ld", "st", "selp", "//"))
                    print("PTX", name.replace(" ", "_"), dtype.name, with_grad, ".entry" in ptx, f64)
    """
)


def test_every_softmax_kernel_compiles_to_ptx_and_float32_stays_float32():
    import fusedloss

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(fusedloss.__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    probe = "from numba.cuda.cudadrv.nvvm import NVVM; NVVM()"
    if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode != 0:
        pytest.skip("no NVVM here: install numba-cuda[cu12] or [cu13] (the test extra does)")
    package = os.path.dirname(fusedloss.__file__)
    result = subprocess.run([sys.executable, "-c", PTX_SCRIPT, package], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = {}
    for line in result.stdout.splitlines():
        if line.startswith("PTX "):
            _, name, dtype, with_grad, entry, f64 = line.split()
            assert entry == "True", (name, dtype, with_grad)
            compiled[(name, dtype, with_grad)] = int(f64)
    expected_names = {
        "softmax_partials",
        "softmax_cross_entropy",
        "sparse_softmax_cross_entropy",
        "categorical_focal_cross_entropy",
        "categorical_focal_cross_entropy[split_gradient]",
    }
    assert {name for name, _, _ in compiled} == expected_names
    for (name, dtype, with_grad), f64 in compiled.items():
        if dtype == "float32":
            # float64 multiplies, FMAs, comparisons...: none (the loss sums are float64 adds)
            assert f64 == 0, (name, with_grad, f64)
        else:
            assert f64 > 0, (name, with_grad)  # float64 math really is float64
    assert len(compiled) == 2 * len(expected_names)
