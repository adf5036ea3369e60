"""``elementwise_loss``: a loss written once, as a formula of one element.

From the formula (a Python function of ``y_true``, ``y_pred`` and numeric parameters,
written with ``fusedloss.math``) this module derives, when the loss is defined:

1. the expression of its value, traced once with symbolic inputs (``math.Graph``), and
   its exact derivative in ``y_pred`` (``math.derivative``);
2. the element function's source (``kernels.generate``), registered for the CPU and
   CUDA row kernels (``kernels.registry``; compiled and cached on first use);
3. the TensorFlow path (``tf_loss``): the value and the derivative as TensorFlow ops
   in the forward of a ``tf.custom_gradient`` whose backward only rescales, used
   under XLA and below the fused-size threshold (``ops.dispatch``);
4. the Keras class (a ``base.FusedLoss``), registered with Keras, whose ``call`` is
   the functional form ``per_sample``.

Example::

    import fusedloss as fl

    @fl.elementwise_loss
    def ProfitCost(y_true, y_pred, cost=1.0, profit=99.0):
        return fl.math.where(y_pred > y_true, cost * (y_pred - y_true), profit * (y_true - y_pred))

    model.compile(optimizer="adam", loss=ProfitCost(cost=1.0, profit=99.0))
"""

import functools
import inspect
import math as pymath
import numbers
import re

import keras
import numpy as np
import tensorflow as tf

from . import math as fm
from . import ops
from .base import FusedLoss
from .kernels import generate, registry

RESERVED = ("reduction", "name", "dtype", "expected_upstream")
REDUCTIONS = ("mean", "sum")


class DefinitionError(ValueError):
    """A loss definition that cannot be used; the message says what to do instead."""


def _snake_case(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class Definition:
    """Everything fusedloss knows of one elementwise loss (see the module docstring)."""

    def __init__(self, formula, name, function_name, static, per_class, constraints, reduce, keras_equivalent, kernel):
        self.formula = formula
        self.class_name = formula.__name__
        self.default_name = name or f"fused_{_snake_case(self.class_name)}"
        self.function_name = function_name or _snake_case(self.class_name)
        self.reduce = reduce
        self.keras = keras_equivalent
        self.kernel = kernel
        self.constraints = tuple(constraints)
        signature = inspect.signature(formula)
        arguments = list(signature.parameters.values())
        if len(arguments) < 2 or any(a.kind not in (a.POSITIONAL_ONLY, a.POSITIONAL_OR_KEYWORD) for a in arguments[:2]):
            raise DefinitionError(
                f"{self.class_name}: a loss formula takes (y_true, y_pred, ...parameters), got {signature}"
            )
        self.parameters = {}
        for argument in arguments[2:]:
            if argument.kind in (argument.VAR_POSITIONAL, argument.VAR_KEYWORD):
                raise DefinitionError(f"{self.class_name}: *args and **kwargs are not loss parameters; name each one")
            if argument.default is inspect.Parameter.empty:
                raise DefinitionError(
                    f"{self.class_name}: parameter {argument.name!r} has no default; give every parameter "
                    f"after y_true and y_pred a default (e.g. {argument.name}=1.0)"
                )
            if argument.name in RESERVED:
                raise DefinitionError(f"{self.class_name}: {argument.name!r} is reserved for Keras; rename the parameter")
            self.parameters[argument.name] = argument.default
        for label, names in (("static", static), ("per_class", per_class)):
            unknown = set(names) - set(self.parameters)
            if unknown:
                raise DefinitionError(f"{self.class_name}: {label} names {sorted(unknown)} are not parameters")
        self.static = tuple(name for name in self.parameters if name in static)
        self.numeric = tuple(name for name in self.parameters if name not in static)
        self.per_class = frozenset(self.numeric.index(name) for name in per_class)
        if reduce not in REDUCTIONS:
            raise DefinitionError(f"{self.class_name}: reduce must be one of {REDUCTIONS}, got {reduce!r}")
        for constraint in self.constraints:
            try:
                names = compile(constraint, "<constraint>", "eval").co_names
            except SyntaxError as error:
                raise DefinitionError(f"{self.class_name}: constraint {constraint!r} is not an expression: {error}") from None
            unknown = set(names) - set(self.parameters)
            if unknown:
                raise DefinitionError(f"{self.class_name}: constraint {constraint!r} names unknown {sorted(unknown)}")
        self.check({})  # the defaults themselves must be valid
        self.traced(self.static_key(self.check({})))  # a bad formula fails now

    # -- parameters ------------------------------------------------------------
    def check(self, given):
        """All parameters (defaults filled in), validated: numbers finite, per-class
        ones a number or a non-empty 1-D sequence of them, static ones of their
        default's type, every constraint met. ``ValueError`` naming the parameter."""
        values = {**self.parameters, **given}
        unknown = set(given) - set(self.parameters)
        if unknown:
            raise TypeError(f"{self.class_name} has no parameter {sorted(unknown)[0]!r}; it has {tuple(self.parameters)}")
        checked = {}
        for name, value in values.items():
            if name in self.static and isinstance(self.parameters[name], float):
                # A number folded into the kernel as a constant (one kernel per value):
                # validated as the runtime numbers are, an int accepted as Keras does.
                checked[name] = _number(name, value)
            elif name in self.static:
                default = self.parameters[name]
                if type(value) is not type(default) and not (
                    isinstance(default, numbers.Integral) and isinstance(value, numbers.Integral) and not isinstance(value, bool)
                ):
                    raise ValueError(f"{name} must be a {type(default).__name__}, got {value!r}")
                checked[name] = value
            elif self.numeric.index(name) in self.per_class and np.ndim(value) > 0:
                weights = np.asarray(value, dtype=object)
                if weights.ndim != 1 or weights.size == 0:
                    raise ValueError(f"{name} must be a number or a non-empty 1-D sequence of numbers, got shape {weights.shape}")
                checked[name] = tuple(_number(f"{name}[{i}]", weight) for i, weight in enumerate(weights))
            else:
                checked[name] = _number(name, value)
        for constraint in self.constraints:
            names = compile(constraint, "<constraint>", "eval").co_names
            for scope, labels in _elementwise(checked, names):
                if not eval(constraint, {"__builtins__": {}}, scope):  # noqa: S307 - the definition's own text
                    shown = ", ".join(f"{labels[name]}={scope[name]!r}" for name in names)
                    named = " and ".join(labels[name] for name in names)
                    raise ValueError(f"{self.class_name}: {named} must satisfy {constraint}, got {shown}")
        return checked

    def static_key(self, checked):
        return tuple(checked[name] for name in self.static)

    # -- the traced formula ----------------------------------------------------
    @functools.lru_cache(maxsize=None)  # noqa: B019 - definitions live as long as the process
    def traced(self, static_key):
        """``(value, slope, kernel_name)`` for one value of the static parameters; the
        kernel is registered (compiled on first use)."""
        graph = fm.Graph(self.numeric)
        arguments = {name: graph.parameter(i) for i, name in enumerate(self.numeric)}
        arguments.update(zip(self.static, static_key))
        try:
            value = self.formula(graph.y_true, graph.y_pred, **arguments)
        except fm.FormulaError as error:
            raise DefinitionError(f"{self.class_name}: {error}") from None
        except NameError as error:
            raise DefinitionError(
                f"{self.class_name}: unknown name in the formula ({error}); a formula may use its arguments, numbers "
                f"and fusedloss.math's functions ({', '.join(fm.__all__[1:])})"
            ) from None
        except Exception as error:  # a library function met a traced value
            raise DefinitionError(
                f"{self.class_name}: the formula failed when traced ({type(error).__name__}: {error}); write it with "
                f"Python operators and fusedloss.math's functions only (no NumPy, TensorFlow or math module calls)"
            ) from None
        if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, fm.Node):
            value = graph.constant(value)
        if not isinstance(value, fm.Node):
            raise DefinitionError(f"{self.class_name}: the formula must return one traced value, got {type(value).__name__}")
        if value.boolean:
            raise DefinitionError(f"{self.class_name}: the formula returned a comparison; use fm.where(condition, a, b)")
        if not value.depends_on_prediction:
            raise DefinitionError(f"{self.class_name}: the loss does not depend on y_pred, so it has nothing to train")
        slope = fm.derivative(value)
        kernel_name = self.function_name + "".join(f"[{n}={v!r}]" for n, v in zip(self.static, static_key))
        if self.kernel is not None and not self.static:
            module, _, attribute = self.kernel.partition(":")
            source = f"from {module} import {attribute} as element\n"
        else:
            source = generate.element_source(value, slope, per_class=self.per_class)
        spec = registry.KernelSpec(
            kernel_name, source, self.reduce, self.numeric, tuple(self.parameters[n] for n in self.numeric), self.per_class
        )
        registry.register(spec)
        return value, slope, kernel_name

    # -- the TensorFlow side ---------------------------------------------------
    def per_sample(self, y_true, y_pred, given, expected_upstream="mean"):
        """The per-sample loss of ``y_pred`` (shape ``y_pred.shape[:-1]``), fused with its
        gradient (see ``ops.dispatch``)."""
        checked = self.check(given)
        value, slope, kernel_name = self.traced(self.static_key(checked))
        y_true, y_pred = ops.prepare(y_true, y_pred)
        numeric = [checked[name] for name in self.numeric]
        for index in self.per_class:
            if isinstance(numeric[index], tuple) and y_pred.shape[-1] is not None and y_pred.shape[-1] != len(numeric[index]):
                raise ValueError(
                    f"{self.numeric[index]} must have one value per class: y_pred has {y_pred.shape[-1]} classes "
                    f"(its last axis), got {len(numeric[index])} values"
                )
        composite = functools.partial(tf_loss, value, slope, numeric, self.reduce)
        kernel_params = tuple(np.asarray(v, np.float64) if isinstance(v, tuple) else v for v in numeric)
        return ops.dispatch(kernel_name, y_true, y_pred, kernel_params, composite, expected_upstream=expected_upstream)

    def reference(self, y_true, y_pred, **given):
        """Float64 ``(loss, d mean(loss) / d y_pred)`` as NumPy arrays: the formula run
        as TensorFlow ops and differentiated by TensorFlow's autodiff, an answer
        independent of fusedloss's derivative and kernels (for tests)."""
        checked = self.check(given)
        value, _, _ = self.traced(self.static_key(checked))
        y_true = tf.constant(np.asarray(y_true, np.float64))
        y_pred = tf.constant(np.asarray(y_pred, np.float64))
        numeric = [checked[name] for name in self.numeric]
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            (values,) = evaluate([value], y_true, y_pred, numeric)
            values = tf.broadcast_to(values, tf.shape(y_pred))
            loss = tf.reduce_mean(values, axis=-1) if self.reduce == "mean" else tf.reduce_sum(values, axis=-1)
            total = tf.reduce_sum(loss)
        return loss.numpy(), tape.gradient(total, y_pred).numpy()


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    number = float(value)
    if not pymath.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _elementwise(checked, names):
    """``(scope, labels)`` to evaluate a constraint in: one, or one per class for
    per-class values (labelled ``name[i]``)."""
    lengths = {len(checked[name]) for name in names if isinstance(checked[name], tuple)}
    if not lengths:
        yield {name: checked[name] for name in names}, {name: name for name in names}
        return
    for i in range(max(lengths)):
        per_class = {name: isinstance(checked[name], tuple) for name in names}
        yield (
            {name: checked[name][i] if per_class[name] else checked[name] for name in names},
            {name: f"{name}[{i}]" if per_class[name] else name for name in names},
        )


# ---------------------------------------------------------------------------------
# Traced expressions as TensorFlow ops

_TF_UNARY = {
    "neg": tf.negative,
    "abs": tf.abs,
    "sign": tf.sign,
    "exp": tf.exp,
    "log": tf.math.log,
    "log1p": tf.math.log1p,
    "expm1": tf.math.expm1,
    "sqrt": tf.sqrt,
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "softplus": tf.nn.softplus,
    "log_sigmoid": tf.math.log_sigmoid,
    "log_cosh": lambda x: _tf_log_cosh(x),
    "not": tf.logical_not,
}
_TF_BINARY = {
    "add": tf.add,
    "sub": tf.subtract,
    "mul": tf.multiply,
    "div": tf.divide,
    "pow": tf.pow,
    "maximum": tf.maximum,
    "minimum": tf.minimum,
    "lt": tf.less,
    "le": tf.less_equal,
    "gt": tf.greater,
    "ge": tf.greater_equal,
    "eq": tf.equal,
    "ne": tf.not_equal,
    "and": tf.logical_and,
    "or": tf.logical_or,
}


def _tf_log_cosh(x):
    """``primitives._log_cosh`` with TensorFlow ops: ``log1p(m**2 / (2 + 2 m))``, ``m =
    expm1(|x|)``, for ``|x| <= 1`` (no cancellation), Keras's ``|x| + softplus(-2|x|) -
    log 2`` beyond."""
    a = tf.abs(x)
    m = tf.math.expm1(tf.minimum(a, 1.0))
    near = tf.math.log1p(m * m / (2.0 + 2.0 * m))
    return tf.where(a <= 1.0, near, a + tf.nn.softplus(-2.0 * a) - pymath.log(2.0))


def evaluate(roots, y_true, y_pred, numeric):
    """The tensors of ``roots`` (traced nodes) for these inputs and numeric parameter
    values (per-class ones as tuples, broadcast over the last axis)."""
    dtype = y_pred.dtype
    computed = {}
    for node in fm._postorder(roots):
        op = node.op
        if op == "y_true":
            result = y_true
        elif op == "y_pred":
            result = y_pred
        elif op == "param":
            result = tf.constant(np.asarray(numeric[node.index], dtype.as_numpy_dtype))
        elif op == "const":
            result = tf.constant(node.value) if isinstance(node.value, bool) else tf.constant(node.value, dtype)
        else:
            args = [computed[id(arg)] for arg in node.args]
            if op in _TF_UNARY:
                result = _TF_UNARY[op](args[0])
            elif op in _TF_BINARY:
                result = _TF_BINARY[op](*args)
            elif op == "where":
                result = tf.where(*args)
            elif op == "clip":
                result = tf.minimum(tf.maximum(args[0], args[1]), args[2])
            else:  # pragma: no cover - every op of fusedloss.math is above
                raise AssertionError(op)
        computed[id(node)] = result
    return [computed[id(root)] for root in roots]


def tf_loss(value, slope, numeric, reduce, y_true, y_pred):
    """The loss with TensorFlow ops, its gradient computed in the forward from the
    derived slope: under XLA the two fuse into one pass, and the backward is one
    multiply (no autodiff of the formula)."""
    compute_dtype = tf.float64 if y_pred.dtype == tf.float64 else tf.float32
    original_dtype = y_pred.dtype

    @tf.custom_gradient
    def loss_and_gradient(y_true, y_pred):
        y_true_c, y_pred_c = tf.cast(y_true, compute_dtype), tf.cast(y_pred, compute_dtype)
        values, slopes = evaluate([value, slope], y_true_c, y_pred_c, numeric)
        shape = tf.shape(y_pred_c)
        values = tf.broadcast_to(values, shape)
        if reduce == "mean":
            loss = tf.reduce_mean(values, axis=-1)
            slopes = slopes / tf.cast(shape[-1], compute_dtype)  # d mean / d value = 1 / n
        else:
            loss = tf.reduce_sum(values, axis=-1)

        def backward(upstream):
            grad = tf.expand_dims(tf.cast(upstream, compute_dtype), -1) * slopes
            return None, tf.cast(tf.broadcast_to(grad, shape), original_dtype)

        return tf.cast(loss, original_dtype), backward

    return loss_and_gradient(y_true, y_pred)


# ---------------------------------------------------------------------------------
# The decorator and the Keras class


def elementwise_loss(
    formula=None,
    *,
    name=None,
    function_name=None,
    static=(),
    per_class=(),
    constraints=(),
    reduce="mean",
    keras_equivalent=None,
    kernel=None,
    package="Custom",
):
    """Turn a formula of one element into a fused Keras loss class.

    Formula: ``formula(y_true, y_pred, **parameters)`` returns one element's loss,
    written with Python operators and ``fusedloss.math``; the per-sample loss is the
    mean (``reduce="mean"``) or sum (``"sum"``) of it over the last axis. Its derivative
    in ``y_pred`` is derived exactly (``fusedloss.math`` says the convention at kinks).

    Args:
        formula: the function; every parameter after ``y_true, y_pred`` needs a default.
        name: the default ``name`` of the loss's instances (``fused_<snake_case>``).
        function_name: the kernel's name, and the functional form's in ``fusedloss``
            (``<snake_case>`` of the class name).
        static: parameters that are Python values when the formula is traced (bools,
            choices): the formula may branch on them with ``if``; one kernel per value.
            A static float is a number folded in as a constant (``x ** gamma`` with
            ``gamma = 2.0`` compiles to a product, not ``exp(gamma log x)``), checked
            as numbers are. The others are numbers, runtime arguments of a single
            kernel.
        per_class: numeric parameters that may also be one value per class (the last
            axis), e.g. ``pos_weight``.
        constraints: expressions over the parameters (``"delta > 0"``), checked at
            construction: ``ValueError`` naming the parameter otherwise.
        reduce: ``"mean"`` or ``"sum"`` over the last axis.
        keras_equivalent: the Keras loss class this one replaces, if any (documentation
            and the conformance suite).
        kernel: ``"module:function"``, a hand-written element function with
            ``kernels.math``'s contract to compile instead of the generated one, where
            it is measured faster or more accurate; the formula still gives the
            TensorFlow path and the reference.
        package: the Keras serialization package the class is registered under.

    Example:
        >>> @fl.elementwise_loss(constraints=("delta > 0",))
        ... def PseudoHuber(y_true, y_pred, delta=1.0):
        ...     return delta**2 * (fl.math.sqrt(1 + ((y_pred - y_true) / delta) ** 2) - 1)

    Returns:
        A ``keras.losses.Loss`` subclass named like the formula, whose constructor takes
        the parameters (defaults from the formula) and ``reduction``, ``name``,
        ``dtype``; ``Class.per_sample(y_true, y_pred, **parameters)`` is its functional,
        differentiable form; ``Class.definition`` the ``Definition``.
    """
    if formula is None:
        return functools.partial(
            elementwise_loss,
            name=name,
            function_name=function_name,
            static=static,
            per_class=per_class,
            constraints=constraints,
            reduce=reduce,
            keras_equivalent=keras_equivalent,
            kernel=kernel,
            package=package,
        )
    definition = Definition(formula, name, function_name, static, per_class, constraints, reduce, keras_equivalent, kernel)
    return _keras_class(definition, package)


def _keras_class(definition, package):
    parameters = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        for name, default in definition.parameters.items()
    ]
    keras_arguments = [
        inspect.Parameter("reduction", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="sum_over_batch_size"),
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=definition.default_name),
        inspect.Parameter("dtype", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ]
    init_signature = inspect.Signature(parameters + keras_arguments)
    functional_signature = inspect.Signature(
        [
            inspect.Parameter("y_true", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("y_pred", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *parameters,
            inspect.Parameter("expected_upstream", inspect.Parameter.KEYWORD_ONLY, default="mean"),
        ]
    )

    def __init__(self, *args, **kwargs):
        bound = init_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        FusedLoss.__init__(self, reduction=arguments.pop("reduction"), name=arguments.pop("name"), dtype=arguments.pop("dtype"))
        self._parameters = definition.check(arguments)
        definition.traced(definition.static_key(self._parameters))  # fail here, not at the first step
        for key, value in self._parameters.items():
            setattr(self, key, value)

    def call(self, y_true, y_pred):
        return definition.per_sample(y_true, y_pred, self._parameters, expected_upstream=self._expected_upstream())

    def parameters(self):
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self._parameters.items()}

    def per_sample(*args, **kwargs):
        bound = functional_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        y_true, y_pred = arguments.pop("y_true"), arguments.pop("y_pred")
        expected_upstream = arguments.pop("expected_upstream")
        return definition.per_sample(y_true, y_pred, arguments, expected_upstream=expected_upstream)

    __init__.__signature__ = init_signature
    per_sample.__signature__ = functional_signature
    per_sample.__name__ = per_sample.__qualname__ = definition.function_name
    per_sample.__doc__ = (
        f"Per-sample {definition.class_name} loss (shape ``y_pred.shape[:-1]``), differentiable in ``y_pred``; "
        f"the functional form of ``{definition.class_name}``.\n\n{inspect.getdoc(definition.formula) or ''}"
    )
    namespace = {
        "__init__": __init__,
        "call": call,
        "parameters": parameters,
        "per_sample": staticmethod(per_sample),
        "definition": definition,
        "__doc__": definition.formula.__doc__,
        "__module__": definition.formula.__module__,
        "__qualname__": definition.formula.__qualname__,
    }
    cls = type(definition.class_name, (FusedLoss,), namespace)
    return keras.saving.register_keras_serializable(package=package, name=definition.class_name)(cls)
