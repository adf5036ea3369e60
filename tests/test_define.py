"""``elementwise_loss`` itself: bad definitions and parameters, the derivative's
convention at kinks, the generated kernels (float32 stays float32 and vectorises; the
cache survives the process). Values and gradients of every defined loss are the
conformance suite's (tests/conformance)."""

import math
import os
import re
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
import tensorflow as tf

import fusedloss as fl
from fusedloss import math as fm
from fusedloss.define import DefinitionError
from fusedloss.kernels import cpu, generate


@fl.elementwise_loss
def AsymmetricCost(y_true, y_pred, cost=1.0, profit=99.0):
    """Over-prediction costs ``cost`` per unit, under-prediction loses ``profit``."""
    return fm.where(y_pred > y_true, cost * (y_pred - y_true), profit * (y_true - y_pred))


# Every function of fusedloss.math, in a loss whose terms stay finite on the inputs below.
@fl.elementwise_loss
def EveryPrimitive(y_true, y_pred, a=0.5):
    e = y_pred - y_true
    return (
        fm.exp(-fm.abs(e)) + fm.log(1.0 + e * e) + fm.log1p(fm.square(e)) + fm.expm1(0.1 * e) + fm.sqrt(1.0 + e * e)
        + fm.tanh(e) + fm.sigmoid(e) + fm.softplus(e) + fm.log_sigmoid(e) + fm.log_cosh(e) + fm.sign(e) * a
        + fm.maximum(e, 0.0) + fm.minimum(e, 0.0) + fm.clip(e, -1.0, 1.0) + (1.0 + e * e) ** a + e**3
    )


# -- bad definitions fail when defined, saying what to use ---------------------------

BAD_FORMULAS = [
    ("numpy", lambda y_true, y_pred: np.exp(y_pred - y_true), "np.exp"),
    ("tensorflow", lambda y_true, y_pred: tf.exp(y_pred - y_true), "fusedloss.math"),
    ("math module", lambda y_true, y_pred: math.exp(y_pred - y_true), "fl.math.exp"),
    ("python if", lambda y_true, y_pred: y_pred if y_pred > y_true else y_true, "where"),
    ("python and", lambda y_true, y_pred: (y_pred > 0) and (y_true > 0), "&, |, ~"),
    ("unknown name", lambda y_true, y_pred: undefined_function(y_pred), "unknown name"),  # noqa: F821
    ("no prediction", lambda y_true, y_pred: y_true * 2.0, "does not depend on y_pred"),
    ("comparison", lambda y_true, y_pred: y_pred > y_true, "comparison"),
    ("tuple", lambda y_true, y_pred: (y_pred, y_true), "one traced value"),
]


@pytest.mark.parametrize("formula, message", [case[1:] for case in BAD_FORMULAS], ids=[case[0] for case in BAD_FORMULAS])
def test_bad_formula_fails_when_defined(formula, message):
    formula.__name__ = "Bad"
    with pytest.raises(DefinitionError, match=message.replace("|", r"\|").replace(".", r"\.")):
        fl.elementwise_loss(formula)


def test_parameter_without_a_default_fails_when_defined():
    def Bad(y_true, y_pred, cost):
        return cost * (y_pred - y_true)

    with pytest.raises(DefinitionError, match="'cost' has no default"):
        fl.elementwise_loss(Bad)


@pytest.mark.parametrize("options, message", [
    ({"static": ("missing",)}, "not parameters"),
    ({"constraints": ("delta >",)}, "not an expression"),
    ({"constraints": ("gamma > 0",)}, "unknown"),
    ({"reduce": "max"}, "reduce must be"),
])
def test_bad_options_fail_when_defined(options, message):
    def Bad(y_true, y_pred, delta=1.0):
        return delta * (y_pred - y_true)

    with pytest.raises(DefinitionError, match=message):
        fl.elementwise_loss(Bad, **options)


def test_reserved_parameter_name_fails():
    def Bad(y_true, y_pred, name=1.0):
        return y_pred * name

    with pytest.raises(DefinitionError, match="reserved"):
        fl.elementwise_loss(Bad)


def test_default_violating_a_constraint_fails_when_defined():
    def Bad(y_true, y_pred, delta=0.0):
        return delta * y_pred

    with pytest.raises(ValueError, match="delta must satisfy delta > 0"):
        fl.elementwise_loss(Bad, constraints=("delta > 0",))


@pytest.mark.parametrize("value, message", [
    ("2", "cost must be a real number"),
    (None, "cost must be a real number"),
    (True, "cost must be a real number"),
    (float("nan"), "cost must be finite"),
    (float("inf"), "cost must be finite"),
    ([1.0, 2.0], "cost must be a real number"),
])
def test_bad_parameter_fails_at_construction_naming_it(value, message):
    with pytest.raises(ValueError, match=message):
        AsymmetricCost(cost=value)


@pytest.mark.parametrize("value, message", [
    (True, "gamma must be a real number"),
    ("2", "gamma must be a real number"),
    (float("nan"), "gamma must be finite"),
    (-1.0, "gamma must satisfy gamma >= 0"),
])
def test_bad_static_number_fails_at_construction_naming_it(value, message):
    with pytest.raises(ValueError, match=message):
        fl.BinaryFocalCrossentropy(gamma=value)


def test_static_number_is_folded_into_the_kernel_and_an_int_is_accepted():
    # BinaryFocalCrossentropy's gamma is static: (1 - p_t) ** gamma is traced with
    # gamma a constant, so gamma = 2 (as an int, as Keras takes it) is a product.
    loss = fl.BinaryFocalCrossentropy(gamma=2, from_logits=True, dtype="float64")
    assert loss.get_config()["gamma"] == 2
    definition = fl.BinaryFocalCrossentropy.definition
    value, slope, kernel_name = definition.traced(definition.static_key(definition.check({"gamma": 2, "from_logits": True})))
    assert "[gamma=2.0]" in kernel_name
    assert "_pow(" not in generate.element_source(value, slope)
    y_true = tf.constant([[0.0, 1.0, 1.0]], tf.float64)
    logits = tf.constant([[-1.5, 0.3, 2.0]], tf.float64)
    np.testing.assert_allclose(
        loss(y_true, logits), tf.keras.losses.BinaryFocalCrossentropy(gamma=2, from_logits=True, dtype="float64")(y_true, logits),
        rtol=1e-12,
    )


def test_unknown_parameter_is_a_type_error():
    with pytest.raises(TypeError):
        AsymmetricCost(costs=1.0)


# -- the user-facing class --------------------------------------------------------


def test_user_loss_class_behaves_like_a_keras_loss():
    loss = AsymmetricCost(2.0, profit=5.0, reduction="sum", name="profit")
    assert loss.get_config() == {"name": "profit", "reduction": "sum", "dtype": None, "cost": 2.0, "profit": 5.0}
    assert AsymmetricCost.from_config(loss.get_config()).get_config() == loss.get_config()
    y_true = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
    y_pred = np.array([[2.0, 1.0], [1.0, -3.0]], np.float32)
    # per element: over 2*1, under 5*1 ; over 2*1, under 5*3
    np.testing.assert_allclose(float(loss(y_true, y_pred)), (2 + 5) / 2 + (2 + 15) / 2, rtol=1e-6)
    per_sample = AsymmetricCost.per_sample(y_true, y_pred, cost=2.0, profit=5.0)
    np.testing.assert_allclose(per_sample.numpy(), [3.5, 8.5], rtol=1e-6)
    assert keras_registered("Custom>AsymmetricCost") is AsymmetricCost


def keras_registered(name):
    import keras

    return keras.saving.get_registered_object(name)


# -- the derivative's convention at kinks: TensorFlow's autodiff of the same formula ----


def kink_gradient(formula, y_true, y_pred):
    definition = fl.elementwise_loss(formula).definition
    value, slope, _ = definition.traced(())
    from fusedloss.define import evaluate

    y_true, y_pred = tf.constant(y_true, tf.float64), tf.constant(y_pred, tf.float64)
    return evaluate([slope], y_true, y_pred, [])[0].numpy(), definition.reference(y_true, y_pred)[1] * len(y_pred)


@pytest.mark.parametrize("name, formula, y_true, y_pred", [
    ("abs at 0", lambda t, p: fm.abs(p - t), [1.0, 0.0, 2.0], [1.0, 1.0, 0.0]),
    ("maximum tie", lambda t, p: fm.maximum(p, t), [1.0, 0.0], [1.0, 2.0]),
    ("minimum tie", lambda t, p: fm.minimum(p, t), [1.0, 3.0], [1.0, 2.0]),
    ("clip bounds", lambda t, p: fm.clip(p, 0.0, 1.0), [0.0] * 5, [0.0, 1.0, -0.5, 1.5, 0.5]),
    ("where", lambda t, p: fm.where(p > t, p * p, -p), [0.0, 0.0, 0.0], [0.0, 2.0, -2.0]),
    ("where with inf untaken", lambda t, p: fm.where(p < 1e300, p, fm.exp(p * 1e10)), [0.0, 0.0], [1.0, 3.0]),
    ("sqrt at 0", lambda t, p: fm.sqrt(p * p), [0.0, 0.0], [0.0, 2.0]),
    ("power of a parameter-free base", lambda t, p: (p - t) ** 3, [0.0, 1.0], [2.0, 1.0]),
])
def test_derivative_matches_tensorflow_autodiff_at_kinks(name, formula, y_true, y_pred):
    formula.__name__ = "Kink"
    derived, autodiff = kink_gradient(formula, y_true, y_pred)
    np.testing.assert_allclose(derived, autodiff, rtol=1e-15, atol=0)


# -- generated kernels ----------------------------------------------------------------


def test_generated_float32_kernel_stays_float32_calls_no_libm_and_vectorises():
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=(9, 33)).astype(np.float32)
    y_pred = rng.normal(size=(9, 33)).astype(np.float32)
    loss, grad = cpu.every_primitive(y_true, y_pred, 0.5)
    want_loss, want_grad = EveryPrimitive.definition.reference(y_true, y_pred, a=0.5)
    np.testing.assert_allclose(loss, want_loss, rtol=2e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-5, atol=1e-7)
    module = cpu.element_module("every_primitive")
    cached = module.rows
    # This small input ran the kernel's serial twin (cpu.PARALLEL_FROM), of the same types.
    signature = [s for s in module.rows_serial.signatures if "float32" in str(s[1]) and "none" not in str(s[-1]).lower()][0]
    # numba cannot inspect code it loaded from its on-disk cache (another worker or an
    # earlier run may have written it), so the same function is compiled afresh here.
    rows = numba.njit(parallel=True, fastmath=cpu.FASTMATH, error_model="numpy")(cached.py_func)
    rows.compile(signature)
    assembly = rows.inspect_asm(signature)
    libm = {"exp", "expf", "log", "logf", "log1p", "log1pf", "expm1", "expm1f", "tanh", "tanhf", "pow", "powf"}
    called = {line.split()[-1].strip("@*") for line in assembly.splitlines() if "call" in line.split()[:1]}
    assert not libm & {name.split("@")[0] for name in called}, sorted(called)
    llvm = rows.inspect_llvm(signature)
    # Every primitive inlined: one call left in the row loop keeps it scalar (pow was one).
    helpers = sorted({name for name in re.findall(r"call [^@]*@([\w.$]+)", llvm) if "7kernels10primitives" in name or "7kernels4math" in name})
    assert not helpers, helpers
    assert "<8 x float>" in llvm or "<4 x float>" in llvm, "the float32 row loop was not vectorised"
    assert " double " not in _float_arithmetic(llvm), "float64 arithmetic in the float32 element math"


def _float_arithmetic(llvm):
    """The LLVM instructions that do float arithmetic (fadd, fmul, ...), one per line."""
    return "\n".join(line for line in llvm.splitlines() if any(f" = {op} " in line for op in ("fadd", "fsub", "fmul", "fdiv")))


def test_kernels_are_cached_across_processes(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np
        import fusedloss as fl
        from fusedloss.kernels import cpu

        @fl.elementwise_loss
        def CachedLoss(y_true, y_pred, scale=2.0):
            # ** and log_cosh: numba inlines them, whose pedantic check must stay quiet
            return scale * fl.math.softplus(y_pred - y_true) + fl.math.log_cosh(y_pred) * y_true**2.5

        x = np.ones((3, 4), np.float64)
        cpu.cached_loss(x, x, 2.0)
        rows = cpu.element_module("cached_loss").rows_serial  # a small input: the serial kernel
        print(rows.stats.cache_hits.get(rows.signatures[0], 0) if hasattr(rows.stats.cache_hits, "get") else sum(rows.stats.cache_hits.values()))
        """
    )
    environment = {**os.environ, "FUSEDLOSS_CACHE_DIR": str(tmp_path), "NUMBA_ENABLE_CUDASIM": "1"}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert "NumbaIRAssumptionWarning" not in runs[0].stderr, runs[0].stderr[-2000:]
    assert runs[0].stdout.split()[-1] == "0"  # compiled
    assert int(runs[1].stdout.split()[-1]) >= 1  # loaded from the cache


def test_cache_key_changes_with_the_formula(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEDLOSS_CACHE_DIR", str(tmp_path))

    @fl.elementwise_loss(function_name="key_one")
    def KeyOne(y_true, y_pred):
        return y_pred - y_true

    @fl.elementwise_loss(function_name="key_two")
    def KeyTwo(y_true, y_pred):
        return y_true - y_pred

    first, second = cpu.element_module("key_one"), cpu.element_module("key_two")
    assert first.__file__ != second.__file__
    assert os.path.dirname(first.__file__) == str(tmp_path / "kernels")


def test_float32_power_follows_c_pow_in_its_special_cases():
    from numba import njit

    from fusedloss.kernels import primitives

    # Under the row loop's flags, as the CPU kernels compile it.
    power = njit(fastmath=cpu.FASTMATH)(primitives._pow)
    cases = [(2.0, 3.0), (-2.0, 3.0), (-2.0, 2.0), (-2.0, 0.5), (0.0, 2.0), (0.0, -1.0), (0.0, 0.0), (0.3, 2.5),
             (5.0, -1.5), (-1.5, 1e8), (-3.0, -1.0), (-1.0, 8388609.0), (1.0, np.nan), (np.nan, 0.0), (-1.0, np.inf),
             (-np.inf, 0.5), (-np.inf, -0.5), (-np.inf, 3.0), (np.inf, -2.0), (0.5, np.inf), (-0.5, -np.inf), (np.nan, 2.0)]
    got = [power(np.float32(a), np.float32(b)) for a, b in cases]
    with np.errstate(all="ignore"):
        want = [np.float32(a) ** np.float32(b) for a, b in cases]
    np.testing.assert_allclose(got, want, rtol=3e-7, equal_nan=True)
