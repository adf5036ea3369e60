"""benchmarks/gpu/run_gpu.py end to end in the CUDA simulator, the kernel specs it
reads (benchmarks/gpu/kernel_specs.json, never stale), and its checks' ability to fail."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fusedloss  # noqa: F401 - the real package, before the script would stub it
from benchmarks.gpu import export_specs
from fusedloss.kernels import cuda as cuda_kernels
from fusedloss.kernels import registry

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run_gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("run_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_gpu"] = module
    spec.loader.exec_module(module)
    return module


run_gpu = load_script()
SPECS = json.loads(run_gpu.SPECS_PATH.read_text())["kernels"]
LOSSES = run_gpu.present_losses([])
ELEMENTWISE = [loss for loss in LOSSES if loss.layout is run_gpu.ROWS]


def without_simulator():
    return {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}


# ---------------------------------------------------------------------------------
# The exported specs


def test_committed_kernel_specs_equal_a_fresh_export():
    fresh = export_specs.text()
    assert run_gpu.SPECS_PATH.read_text() == fresh, (
        f"benchmarks/gpu/kernel_specs.json is stale: run `{export_specs.COMMAND}` and commit it"
    )


def test_every_registered_builtin_kernel_is_exported_with_its_spec():
    exported = {kernel["name"]: kernel for kernel in SPECS}
    assert {"huber", "contrastive", "weighted_sigmoid_cross_entropy"} <= set(exported)
    # Every kernel of the built-in definitions (static variants included), as registered.
    builtins = {kernel["name"] for kernel in export_specs.export()["kernels"]}
    assert builtins == set(exported)
    # ... and every definition has at least one (static variants are named function[static=value]...).
    assert {d.function_name for d in export_specs.definitions()} <= {name.split("[")[0] for name in builtins}
    for name, kernel in exported.items():
        spec = registry.SPECS[name]
        assert kernel["element_source"] == spec.element_source and kernel["reduce"] == spec.reduce
        assert tuple(kernel["parameters"]) == spec.parameters and tuple(kernel["defaults"]) == spec.defaults
        assert frozenset(kernel["per_class"]) == spec.per_class
        assert kernel["array_source"].startswith("def values_and_slopes(ops, y_true, y_pred, params):")
        assert kernel["domain"] in run_gpu.DOMAINS
    assert exported["contrastive"]["domain"] == "distances"
    assert exported["weighted_sigmoid_cross_entropy"]["domain"] == "labels"
    assert exported["huber"]["domain"] == "regression"


def test_static_parameters_give_one_kernel_per_value():
    @fusedloss.elementwise_loss(static=("squared",))
    def TestStaticError(y_true, y_pred, squared=False, scale=1.0):
        error = y_pred - y_true
        return scale * (error * error if squared else fusedloss.math.abs(error))

    assert export_specs.static_variants(TestStaticError.definition) == [(False,), (True,)]
    assert export_specs.domain_of("binary_crossentropy[from_logits=True]") == "labels"
    assert export_specs.domain_of("binary_crossentropy[from_logits=False]") == "probabilities"
    assert export_specs.domain_of("something_new") == "regression"


# ---------------------------------------------------------------------------------
# The losses built from them


def test_the_table_has_every_exported_kernel_and_the_pairs():
    assert [loss.name for loss in ELEMENTWISE] == [kernel["name"] for kernel in SPECS]
    assert "embedding_contrastive" in [loss.name for loss in LOSSES]
    assert all(callable(loss.launcher) for loss in LOSSES)


@pytest.mark.parametrize("loss", ELEMENTWISE, ids=lambda loss: loss.name)
def test_printed_slopes_are_the_derivative_of_the_printed_values(loss):
    # What the competitors differentiate (the values alone) against the printed
    # slopes (the reference's gradient): central differences in float64.
    rng = np.random.default_rng(1)
    y_true, y_pred = loss.inputs(rng, (16, 33), np.float64)
    ops = run_gpu.array_ops(np, np.float64)
    step = 1e-7
    per_sample = [loss.per_sample(ops, y_true, y_pred + s, loss.values) for s in (step, -step)]
    expected_loss, expected_grad = loss.expected(y_true, y_pred)
    np.testing.assert_allclose(loss.per_sample(ops, y_true, y_pred, loss.values), expected_loss, rtol=1e-12)
    # Each element moves only its own row's loss: the row sum of the gradient.
    numeric = (per_sample[0] - per_sample[1]) / (2 * step)
    np.testing.assert_allclose(expected_grad.sum(-1), numeric, rtol=1e-5, atol=1e-7)
    values_only = run_gpu.compile_printed(SPECS[ELEMENTWISE.index(loss)]["array_source"], values_only=True)
    plus = np.broadcast_to(values_only(ops, y_true, y_pred + step, loss.values), y_pred.shape)
    minus = np.broadcast_to(values_only(ops, y_true, y_pred - step, loss.values), y_pred.shape)
    scale = y_pred.shape[-1] if SPECS[ELEMENTWISE.index(loss)]["reduce"] == "mean" else 1
    np.testing.assert_allclose(expected_grad * scale, (plus - minus) / (2 * step), rtol=1e-5, atol=1e-7)


def test_values_only_drops_the_slopes_lines():
    huber = next(kernel for kernel in SPECS if kernel["name"] == "huber")["array_source"]
    values = run_gpu.compile_printed(huber, values_only=True)
    calls = []
    ops = run_gpu.array_ops(np, np.float64)
    spy = type(ops)(**{**vars(ops), "sign": lambda x: calls.append("sign") or np.sign(x)})
    y_true, y_pred = np.zeros(3), np.array([-2.0, 0.5, 3.0])
    np.testing.assert_allclose(values(spy, y_true, y_pred, [1.0]), [1.5, 0.125, 2.5])
    assert calls == []  # sign() is only in the slope
    run_gpu.compile_printed(huber)(spy, y_true, y_pred, [1.0])
    assert calls == ["sign"]


def test_pairs_analytic_gradient_is_the_reference_and_the_derivative():
    pairs_loss = next(loss for loss in LOSSES if loss.name == "embedding_contrastive")
    rng = np.random.default_rng(2)
    y_true, pairs = pairs_loss.inputs(rng, (6, 2, 5), np.float64)
    ops = run_gpu.array_ops(np, np.float64)
    loss, grad = pairs_loss.analytic(ops, y_true, pairs, pairs_loss.values)
    expected_loss, expected_grad = pairs_loss.expected(y_true, pairs)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(pairs_loss.per_sample(ops, y_true, pairs, pairs_loss.values), expected_loss, rtol=1e-12)
    step, numeric = 1e-7, np.zeros_like(pairs)
    for index in np.ndindex(pairs.shape):
        moved = [pairs.copy(), pairs.copy()]
        moved[0][index] += step
        moved[1][index] -= step
        losses = [pairs_loss.per_sample(ops, y_true, m, pairs_loss.values)[index[0]] for m in moved]
        numeric[index] = (losses[0] - losses[1]) / (2 * step)
    np.testing.assert_allclose(expected_grad, numeric, rtol=1e-5, atol=1e-7)


SOFTMAX = [loss for loss in LOSSES if loss.layout.timing_shapes[0]]


def test_the_softmax_cross_entropies_are_in_the_table():
    assert [loss.name for loss in SOFTMAX] == [row.name for row in run_gpu.SOFTMAX_KERNELS]
    assert [loss.labels for loss in SOFTMAX] == [False, True, False]


@pytest.mark.parametrize("loss", SOFTMAX, ids=lambda loss: loss.name)
def test_softmax_analytic_gradient_is_the_reference_and_the_derivative(loss):
    # What the competitors differentiate (per_sample) and what CuPy computes
    # (analytic) against softmax_reference, and the gradient against central
    # differences of the per-sample loss.
    rng = np.random.default_rng(3)
    y_true, logits = loss.inputs(rng, (4, 6), np.float64)
    ops = run_gpu.array_ops(np, np.float64)
    expected_loss, expected_grad = loss.expected(y_true, logits)
    value, grad = loss.analytic(ops, y_true, logits, loss.values)
    np.testing.assert_allclose(value, expected_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loss.per_sample(ops, y_true, logits, loss.values), expected_loss, rtol=1e-12)
    if loss.labels:
        assert (y_true == run_gpu.IGNORED).any() and (value[y_true == run_gpu.IGNORED] == 0).all()
    step, numeric = 1e-6, np.zeros_like(logits)
    for index in np.ndindex(logits.shape):
        moved = [logits.copy(), logits.copy()]
        moved[0][index] += step
        moved[1][index] -= step
        losses = [loss.per_sample(ops, y_true, m, loss.values)[index[0]] for m in moved]
        numeric[index] = (losses[0] - losses[1]) / (2 * step)
    np.testing.assert_allclose(expected_grad, numeric, rtol=1e-5, atol=1e-8)


def test_numpy_ops_are_stable_and_keep_float32():
    ops = run_gpu.array_ops(np, np.float32)
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0], np.float32)
    with np.errstate(over="raise"):
        assert np.all(np.isfinite(ops.softplus(x))) and np.all(np.isfinite(ops.log_cosh(x)))
        np.testing.assert_allclose(ops.sigmoid(x), [0.0, 0.26894142, 0.5, 0.73105858, 1.0], rtol=1e-6)
        np.testing.assert_allclose(ops.log_sigmoid(x), [-1000.0, -1.3132616, -0.6931472, -0.3132617, 0.0], rtol=1e-6)
    assert ops.where(x > 0, -1.0, 0.0).dtype == np.float32
    assert ops.broadcast_to(2.0, (2, 3)).dtype == np.float32


def test_an_unknown_domain_is_refused_by_name():
    kernel = dict(SPECS[0], domain="complex")
    with pytest.raises(ValueError, match="unknown input domain 'complex'"):
        run_gpu.elementwise_loss(kernel)


def test_a_missing_other_kernel_is_named_as_skipped(monkeypatch):
    row = run_gpu.OTHER_KERNELS[0]._replace(name="softmax_cross_entropy_not_here")
    monkeypatch.setattr(run_gpu, "OTHER_KERNELS", [*run_gpu.OTHER_KERNELS, row])
    notes = []
    names = [loss.name for loss in run_gpu.present_losses(notes)]
    assert "softmax_cross_entropy_not_here" not in names and "embedding_contrastive" in names
    assert notes == ["softmax_cross_entropy_not_here: skipped, not in fusedloss.kernels.cuda yet"]


# ---------------------------------------------------------------------------------
# The planned budget


def _gpu_providers():
    names = ["CuPy (printed slopes, unfused)", "PyTorch eager (autograd)", "torch.compile (dynamic shapes)", "JAX jit (jax.vjp)"]
    return [run_gpu.Provider(run_gpu.FUSED, None, None, 4)] + [
        run_gpu.Provider(name, None, True, 0, headline_only=name.startswith(("torch.compile", "CuPy"))) for name in names
    ]


def test_the_planned_gpu_run_fits_well_under_six_minutes():
    sizes = [10**6, 10**7, 10**8, 10**9]
    budget = run_gpu.parse_arguments([]).time_budget
    # Today's kernels: every elementwise variant and the pairs.
    for losses in (LOSSES,):
        steps = run_gpu.plan(losses, _gpu_providers(), sizes)
        # The steps that must run (startup, bandwidth, correctness with the sanitizers,
        # the competitors' formulas, the timings) fit before the deadline; what is past
        # it is the launch-shape sweep and the other kernels against the competitors.
        assert sum(seconds for _, seconds, _ in steps[:5]) < budget, steps
    # A run of the softmax cross-entropies alone (--kernels) fits with every step.
    steps = run_gpu.plan(SOFTMAX, _gpu_providers(), sizes)
    assert sum(seconds for _, seconds, _ in steps) < budget, steps
    budget = run_gpu.parse_arguments([]).time_budget
    assert budget <= 300  # cells stop here; the last one started ends within seconds
    assert run_gpu.SANITIZER_TIMEOUT < budget


def test_plan_option_prints_the_budget_without_a_gpu():
    result = subprocess.run([sys.executable, str(SCRIPT), "--plan"], cwd=ROOT, env=without_simulator(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "planned budget: ~" in result.stdout and "launch-shape sweep" in result.stdout


# ---------------------------------------------------------------------------------
# End to end in the simulator


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-report")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--simulate", "--out", str(out)],
        cwd=ROOT, env=without_simulator(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_report.json").read_text())
    return report, (out / "gpu_report.md").read_text(), result.stdout


def test_every_kernel_passes_every_shape(simulated_run):
    report, _, _ = simulated_run
    rows = report["correctness"]
    assert rows and all(row["passed"] and row["inputs_untouched"] for row in rows)
    for loss in LOSSES:
        checked = {(tuple(row["shape"]), row["dtype"], row["grad"]) for row in rows if row["loss"] == loss.name}
        for shape in loss.layout.simulated_shapes:
            assert (shape, "float32", True) in checked, (loss.name, shape)
            if loss.name in run_gpu.HEADLINE or shape in loss.layout.simulated_shapes[:2]:
                assert {(shape, "float32", False), (shape, "float64", True)} <= checked, (loss.name, shape)
    launches = " ".join(row["launch"] for row in rows)
    for shape_kind in ("1 thr/row", "8 thr/row", "32 thr/row", "2 chunks/row", "no launch", "32 thr/pair"):
        assert shape_kind in launches
    pairs = [row for row in rows if row["loss"] == "embedding_contrastive"]
    assert {tuple(row["shape"]) for row in pairs} == set(run_gpu.PAIRS.simulated_shapes)


def test_softmax_cross_entropies_were_checked_and_timed(simulated_run):
    report, _, _ = simulated_run
    for loss in SOFTMAX:
        rows = [row for row in report["correctness"] if row["loss"] == loss.name]
        assert {tuple(row["shape"]) for row in rows} == set(loss.layout.simulated_shapes)
        assert "32 thr/row, 4 blocks, 2 chunks/row" in {row["launch"] for row in rows}  # (2, 601): split rows
        timed = [row for row in report["timings"] if row["loss"] == loss.name]
        assert [tuple(row["shape"]) for row in timed] == loss.layout.timing_shapes[1]
        assert all(row["implementation"] == run_gpu.FUSED and row["seconds"] > 0 for row in timed)


def test_references_and_formulas_were_checked(simulated_run):
    report, markdown, _ = simulated_run
    references = {row["loss"] for row in report["references"]}
    assert {"huber", "contrastive", "weighted_sigmoid_cross_entropy"} <= references
    assert all(row["passed"] for row in report["references"])
    formulas = {row["loss"] for row in report["formulas"] if row["passed"]}
    # The competitors meet one kernel per definition (and the headline losses).
    assert formulas == {loss.name for loss in LOSSES if loss.name in run_gpu.HEADLINE or run_gpu._first_variant(loss.name)}
    assert "| huber | kernels.reference.huber (float64) |" in markdown


def test_report_table_timings_and_environment(simulated_run):
    report, markdown, stdout = simulated_run
    assert "| huber | (2, 601) | float32 | True | 32 thr/row, 4 blocks, 2 chunks/row |" in markdown
    correctness_lines = [line for line in markdown.splitlines() if line.startswith("| huber | (")]
    assert correctness_lines and all(line.endswith("| pass |") for line in correctness_lines)
    assert markdown in stdout  # printed last, for a reply that shows only the end
    assert stdout.index("planned budget") < stdout.index("1. copy bandwidth") < stdout.index("3. correctness")
    environment = report["environment"]
    assert environment["tensorflow_imported"] is False  # the GPU machine has none
    assert environment["mode"].startswith("CUDA simulator") and environment["date"]
    fused = [row for row in report["timings"] if row["implementation"] == run_gpu.FUSED]
    assert {row["loss"] for row in fused} == {loss.name for loss in LOSSES}
    assert all(row["seconds"] > 0 and row["tb_per_s"] > 0 for row in fused)
    assert [(tuple(row["shape"]), row["launch"]) for row in report["launch_shapes"] if row["loss"] == "huber"] == [
        ((64, 1), "32 thr/block, 1 thr/row, 2 blocks"),
        ((8, 8), "32 thr/block, 8 thr/row, 2 blocks"),
        ((1, 64), "32 thr/block, 32 thr/row, 1 blocks"),
        ((1, 64), "32 thr/block, 8 thr/row, 1 blocks"),  # capped at 8 threads per row
    ]
    assert all(row["seconds"] > 0 for row in report["launch_shapes"])
    assert report["copy_bandwidth"]["tb_per_s"] > 0
    assert [row["tool"] for row in report["sanitizer"]] == ["memcheck", "racecheck"]
    assert [step for step, _, _ in report["plan"]] == list(report["spent"])
    assert "## Time: planned and spent" in markdown


# ---------------------------------------------------------------------------------
# The checks can fail


def test_compare_fails_unwritten_and_wrong_outputs():
    expected = np.array([1.0, 2.0, np.nan])
    assert run_gpu.compare(expected.copy(), expected, "float32")[0]
    assert not run_gpu.compare(np.array([1.0, np.nan, np.nan]), expected, "float32")[0]  # left poisoned
    assert not run_gpu.compare(np.array([1.0, 2.001, np.nan]), expected, "float32")[0]
    assert not run_gpu.compare(np.array([1.0, 2.0, 3.0]), expected, "float32")[0]  # NaN lost
    assert not run_gpu.compare(np.array([1.0, 2.0]), expected[:2].reshape(2, 1), "float64")[0]


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(cuda_kernels, "THREADS_PER_BLOCK", 32)


def test_a_wrong_kernel_is_reported_as_failed(small_blocks):
    huber = next(loss for loss in LOSSES if loss.name == "huber")

    def off_by_a_little(y_true, y_pred, delta=1.0, **kwargs):
        loss, grad = cuda_kernels.launcher("huber")(y_true, y_pred, delta, **kwargs)
        loss.copy_to_device(loss.copy_to_host() * 1.001)
        return loss, grad

    def crashing(y_true, y_pred, delta=1.0, **kwargs):
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    shapes = run_gpu.ROWS._replace(simulated_shapes=[(3, 5)])
    rows = run_gpu.check_correctness([huber._replace(launcher=off_by_a_little, layout=shapes)], True)
    assert rows and not any(row["passed"] for row in rows)
    rows = run_gpu.check_correctness([huber._replace(launcher=crashing, layout=shapes)], True)
    assert rows[0]["error"] == "RuntimeError: CUDA_ERROR_ILLEGAL_ADDRESS" and rows[0]["passed"] is False


def test_a_disagreeing_reference_or_formula_fails():
    huber = next(loss for loss in LOSSES if loss.name == "huber")

    def twice(y_true, y_pred, **params):
        loss, grad = run_gpu.reference.huber(y_true, y_pred, **params)
        return 2 * loss, grad

    rows = run_gpu.check_references([huber._replace(references={"twice": twice})], True)
    assert rows and rows[0]["passed"] is False
    wrong = huber._replace(analytic=lambda ops, t, p, values: (np.zeros(p.shape[:-1]), np.zeros(p.shape)))
    rows = run_gpu.check_formulas([wrong], [run_gpu.numpy_provider()], True)
    assert rows and rows[0]["passed"] is False


def test_without_a_gpu_the_real_run_refuses_plainly():
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, env=without_simulator(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "No CUDA GPU that numba-cuda can use here: nothing checked" in result.stdout
