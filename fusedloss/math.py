"""What a loss formula may use: ``fusedloss.math`` (``fl.math`` in the docs).

A formula given to ``fusedloss.elementwise_loss`` is a Python function of one label
and one prediction. It is called once, when the loss is defined, with symbolic
stand-ins (``Node``) for its inputs and numeric parameters; every operation on them
records an expression instead of computing a number. From that expression fusedloss
derives the exact derivative (``derivative`` below) and generates the CPU and CUDA
kernels, the TensorFlow path and the reference. So a formula may use:

- Python arithmetic (``+ - * / **``, unary ``-``), numbers, and comparisons
  (``< <= > >= == !=``), whose results combine with ``&``, ``|`` and ``~``;
- the functions of this module: ``where, abs, sign, exp, log, log1p, expm1, sqrt,
  square, maximum, minimum, clip, tanh, sigmoid, softplus, log_sigmoid, log_cosh``
  (the last four computed in forms that neither overflow nor cancel).

Not allowed, each with an error that says what to use instead: a Python ``if``,
``and``, ``or`` or ``not`` on a traced value (use ``where``, ``&``, ``|``, ``~``),
NumPy, TensorFlow or ``math`` functions of one (use this module's).

Derivative convention, the one TensorFlow's autodiff gives the same formula, so a
fused loss trains exactly as its Keras twin:

- ``where(c, a, b)``: the derivative of the branch taken; the other branch's derivative
  is multiplied by 0, so a non-finite slope there gives NaN, as in TensorFlow;
- ``abs`` and ``sign``: ``d|x| = sign(x) dx`` (0 at 0), ``d sign(x) = 0``;
- ``maximum(a, b)`` / ``minimum(a, b)``: a tie sends the whole derivative to ``a``;
- ``clip(x, lo, hi)``: ``dx`` inside ``[lo, hi]`` (bounds included), 0 outside;
- comparisons are constants (derivative 0).
"""

import math as _pymath
import numbers

__all__ = [
    "Node",
    "abs",
    "clip",
    "exp",
    "expm1",
    "log",
    "log1p",
    "log_cosh",
    "log_sigmoid",
    "maximum",
    "minimum",
    "sigmoid",
    "sign",
    "softplus",
    "sqrt",
    "square",
    "tanh",
    "where",
]

_builtin_abs = abs

# Functions of one argument (name -> float64 value, for folding constants).
UNARY = {
    "neg": lambda x: -x,
    "abs": _builtin_abs,
    "sign": lambda x: float((x > 0) - (x < 0)) if x == x else x,
    "exp": _pymath.exp,
    "log": _pymath.log,
    "log1p": _pymath.log1p,
    "expm1": _pymath.expm1,
    "sqrt": _pymath.sqrt,
    "tanh": _pymath.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + _pymath.exp(-x)) if x >= 0 else _pymath.exp(x) / (1.0 + _pymath.exp(x)),
    "softplus": lambda x: max(x, 0.0) + _pymath.log1p(_pymath.exp(-_builtin_abs(x))),
    "log_sigmoid": lambda x: -(max(-x, 0.0) + _pymath.log1p(_pymath.exp(-_builtin_abs(x)))),
    "log_cosh": lambda x: _builtin_abs(x) + _pymath.log1p(_pymath.exp(-2 * _builtin_abs(x))) - _pymath.log(2.0),
    "not": lambda x: not x,
}
# Operators of two arguments.
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "maximum": max,
    "minimum": min,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "and": lambda a, b: a and b,
    "or": lambda a, b: a or b,
}
COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne", "and", "or", "not"}
# where(c, a, b) and clip(x, lo, hi) take three.
TERNARY = {"where", "clip"}


class FormulaError(TypeError):
    """A formula does something that cannot be traced; the message says what to use."""


class Node:
    """One value of a traced formula: an input (``"y_true"``, ``"y_pred"``), a parameter
    (``"param"``, with its index), a constant (``"const"``) or an operation on others.

    Nodes are made by ``Graph.node``, which returns the existing node for an operation
    already recorded (so repeated subexpressions are computed once).
    """

    __slots__ = ("graph", "op", "args", "value", "index", "depends_on_prediction", "boolean")
    __array_priority__ = 1000  # so that ndarray (op) Node defers to Node

    def __init__(self, graph, op, args=(), value=None, index=None):
        self.graph = graph
        self.op = op
        self.args = args
        self.value = value
        self.index = index
        self.depends_on_prediction = op == "y_pred" or any(arg.depends_on_prediction for arg in args)
        self.boolean = op in COMPARISONS

    # -- arithmetic ------------------------------------------------------------
    def __add__(self, other):
        return _binary("add", self, other)

    def __radd__(self, other):
        return _binary("add", other, self)

    def __sub__(self, other):
        return _binary("sub", self, other)

    def __rsub__(self, other):
        return _binary("sub", other, self)

    def __mul__(self, other):
        return _binary("mul", self, other)

    def __rmul__(self, other):
        return _binary("mul", other, self)

    def __truediv__(self, other):
        return _binary("div", self, other)

    def __rtruediv__(self, other):
        return _binary("div", other, self)

    def __pow__(self, other):
        return _binary("pow", self, other)

    def __rpow__(self, other):
        return _binary("pow", other, self)

    def __neg__(self):
        return _unary("neg", self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _unary("abs", self)

    # -- comparisons and logic -------------------------------------------------
    def __lt__(self, other):
        return _binary("lt", self, other)

    def __le__(self, other):
        return _binary("le", self, other)

    def __gt__(self, other):
        return _binary("gt", self, other)

    def __ge__(self, other):
        return _binary("ge", self, other)

    def __eq__(self, other):  # noqa: D105 - records a comparison, like NumPy arrays do
        return _binary("eq", self, other)

    def __ne__(self, other):
        return _binary("ne", self, other)

    __hash__ = object.__hash__

    def __and__(self, other):
        return _logical("and", self, other)

    __rand__ = __and__

    def __or__(self, other):
        return _logical("or", self, other)

    __ror__ = __or__

    def __invert__(self):
        if not self.boolean:
            raise FormulaError("~ applies to comparisons only (e.g. ~(y_pred > y_true))")
        return _unary("not", self)

    # -- what a formula may not do with a traced value ---------------------------
    def __bool__(self):
        raise FormulaError(
            "a Python `if`, `and`, `or`, `not` or chained comparison on a traced value: the formula "
            "is traced once, not run per element. Use fusedloss.math.where(condition, a, b), "
            "and &, |, ~ to combine conditions"
        )

    def __float__(self):
        raise FormulaError(
            "a traced value was turned into a Python number (float(), or a `math` module function "
            "such as math.exp): use fusedloss.math's functions (fl.math.exp, fl.math.log, ...)"
        )

    __int__ = __index__ = __complex__ = __float__

    def __array__(self, *args, **kwargs):
        raise FormulaError(
            "a NumPy function or array of a traced value: use fusedloss.math's functions "
            "(fl.math.exp, fl.math.where, fl.math.maximum, ...) instead of np.*"
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = getattr(ufunc, "__name__", str(ufunc))
        raise FormulaError(
            f"the NumPy function np.{name} of a traced value: use fusedloss.math's functions "
            f"(e.g. fl.math.{_NUMPY_NAMES.get(name, name)}) instead"
        )

    def __array_function__(self, func, types, args, kwargs):
        raise FormulaError(
            f"the NumPy function np.{func.__name__} of a traced value: use fusedloss.math's functions instead"
        )

    def __tf_tensor__(self, dtype=None, name=None):
        raise FormulaError(
            "a TensorFlow function of a traced value: a formula is written with fusedloss.math's "
            "functions (fl.math.exp, fl.math.where, ...), from which fusedloss builds the TensorFlow "
            "path itself"
        )

    def __iter__(self):
        raise FormulaError("a traced value is one number, not a sequence")

    def __repr__(self):
        if self.op == "const":
            return repr(self.value)
        if self.op in ("y_true", "y_pred"):
            return self.op
        if self.op == "param":
            return self.graph.parameter_names[self.index]
        return f"{self.op}({', '.join(map(repr, self.args))})"


_NUMPY_NAMES = {"absolute": "abs", "power": "x ** y", "multiply": "x * y", "add": "x + y", "subtract": "x - y",
                "true_divide": "x / y", "divide": "x / y", "negative": "-x", "fmax": "maximum", "fmin": "minimum"}


class Graph:
    """The nodes one trace of a formula made, each operation recorded once."""

    def __init__(self, parameter_names=()):
        self.parameter_names = tuple(parameter_names)
        self._nodes = {}
        self.y_true = self.node("y_true")
        self.y_pred = self.node("y_pred")

    def node(self, op, args=(), value=None, index=None):
        key = (op, tuple(id(arg) for arg in args), value if op != "const" else (type(value), value), index)
        existing = self._nodes.get(key)
        if existing is None:
            existing = self._nodes[key] = Node(self, op, tuple(args), value, index)
        return existing

    def parameter(self, index):
        return self.node("param", index=index)

    def constant(self, value):
        if isinstance(value, bool):
            return self.node("const", value=bool(value))
        return self.node("const", value=float(value))


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, Node)


def _as_node(graph, value):
    if isinstance(value, Node):
        if value.graph is not graph:
            raise FormulaError("a value from another formula's trace")
        return value
    if _is_number(value) or _is_numpy_scalar(value):
        return graph.constant(value)
    raise FormulaError(
        f"a formula may combine its arguments with numbers and fusedloss.math's functions, got "
        f"{type(value).__module__}.{type(value).__name__} {value!r}"
    )


def _is_numpy_scalar(value):
    return type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "dtype")


def _graph_of(*values):
    for value in values:
        if isinstance(value, Node):
            return value.graph
    return None


def _fold(op, values):
    """A constant operation, computed now (float64 Python arithmetic)."""
    table = UNARY if len(values) == 1 else BINARY
    try:
        return table[op](*values)
    except (ValueError, ZeroDivisionError, OverflowError):
        return float("nan") if op not in ("div",) else _pymath.copysign(float("inf"), values[0]) if values[0] else float("nan")


def _unary(op, x):
    graph = _graph_of(x)
    if graph is None:
        return _fold(op, [float(x)] if op != "not" else [x])
    x = _as_node(graph, x)
    if x.op == "const":
        return graph.constant(_fold(op, [x.value]))
    return graph.node(op, (x,))


def _binary(op, a, b):
    graph = _graph_of(a, b)
    if graph is None:
        return _fold(op, [a, b])
    a, b = _as_node(graph, a), _as_node(graph, b)
    if a.op == "const" and b.op == "const":
        return graph.constant(_fold(op, [a.value, b.value]))
    if op in ("and", "or") and not (a.boolean and b.boolean):
        raise FormulaError(f"& and | combine comparisons only, got {a!r} and {b!r}")
    return _simplified(graph, op, a, b)


def _logical(op, a, b):
    graph = _graph_of(a, b)
    if not (isinstance(a, Node) and isinstance(b, Node)):
        raise FormulaError("& and | combine comparisons of traced values (e.g. (y_pred > 0) & (y_true > 0))")
    return _binary(op, a, b)


def _constant_value(node):
    return node.value if node.op == "const" else None


def _simplified(graph, op, a, b):
    """``a op b``, with the identities that keep derivatives short (x + 0, x * 1, x * 0
    for a constant 0 only where the result is known finite... see below)."""
    ca, cb = _constant_value(a), _constant_value(b)
    if op == "add":
        if ca == 0:
            return b
        if cb == 0:
            return a
    elif op == "sub":
        if cb == 0:
            return a
        if ca == 0:
            return graph.node("neg", (b,))
    elif op == "mul":
        # x * 1 is x; x * 0 is NOT 0 (inf * 0 is NaN): only constants fold to 0.
        if ca == 1:
            return b
        if cb == 1:
            return a
        if ca == -1:
            return graph.node("neg", (b,))
        if cb == -1:
            return graph.node("neg", (a,))
    elif op == "div":
        if cb == 1:
            return a
    elif op == "pow":
        if cb == 1:
            return a
    return graph.node(op, (a, b))


# ---------------------------------------------------------------------------------
# The functions a formula may call


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b`` (elementwise; both are computed)."""
    graph = _graph_of(condition, a, b)
    if graph is None:
        return a if condition else b
    if not isinstance(condition, Node):
        return a if condition else b
    if condition.op == "const":
        return a if condition.value else b
    if not condition.boolean:
        raise FormulaError(f"where's condition must be a comparison (e.g. y_pred > y_true), got {condition!r}")
    a, b = _as_node(graph, a), _as_node(graph, b)
    if a is b:
        return a
    return graph.node("where", (condition, a, b))


def clip(x, low, high):
    """``x`` clipped to ``[low, high]``: ``minimum(maximum(x, low), high)``, NaN stays
    NaN; its derivative is ``dx`` inside the bounds (included) and 0 outside."""
    graph = _graph_of(x, low, high)
    if graph is None:
        return min(max(x, low), high)
    return graph.node("clip", (_as_node(graph, x), _as_node(graph, low), _as_node(graph, high)))


def _function(op, doc):
    def function(x):
        return _unary(op, x)

    function.__name__ = op
    function.__qualname__ = op
    function.__doc__ = doc
    return function


abs = _function("abs", "``|x|``; derivative ``sign(x)`` (0 at 0).")  # noqa: A001 - the formula's name for it
sign = _function("sign", "-1, 0 or 1 (NaN for NaN); derivative 0.")
exp = _function("exp", "``e**x``.")
log = _function("log", "natural logarithm.")
log1p = _function("log1p", "``log(1 + x)``, accurate for small ``x``.")
expm1 = _function("expm1", "``exp(x) - 1``, accurate for small ``x``.")
sqrt = _function("sqrt", "square root.")
tanh = _function("tanh", "hyperbolic tangent.")
sigmoid = _function("sigmoid", "``1 / (1 + exp(-x))``, without overflow.")
softplus = _function("softplus", "``log(1 + exp(x))``, as ``max(x, 0) + log1p(exp(-|x|))``: no overflow.")
log_sigmoid = _function("log_sigmoid", "``log(sigmoid(x)) = -softplus(-x)``, without overflow.")
log_cosh = _function(
    "log_cosh", "``log(cosh(x))``, as ``|x| + log1p(exp(-2|x|)) - log(2)``: no overflow (Keras's form)."
)


def square(x):
    """``x * x``."""
    return x * x


def maximum(a, b):
    """The larger of ``a`` and ``b`` (NaN if either is NaN); a tie's derivative goes to ``a``."""
    return _binary("maximum", a, b)


def minimum(a, b):
    """The smaller of ``a`` and ``b`` (NaN if either is NaN); a tie's derivative goes to ``a``."""
    return _binary("minimum", a, b)


# ---------------------------------------------------------------------------------
# The derivative


def derivative(node, memo=None):
    """``d node / d y_pred`` as a node of the same graph (forward mode, memoised), with
    the convention of the module docstring. A node that does not depend on ``y_pred``
    has derivative 0."""
    memo = {} if memo is None else memo
    graph = node.graph
    zero = graph.constant(0.0)
    order = _postorder([node])
    for current in order:
        if id(current) in memo:
            continue
        memo[id(current)] = _derivative_of(graph, current, memo, zero)
    return memo[id(node)]


def _postorder(roots):
    seen, order, stack = set(), [], [(root, False) for root in roots]
    while stack:
        current, expanded = stack.pop()
        if expanded:
            order.append(current)
            continue
        if id(current) in seen:
            continue
        seen.add(id(current))
        stack.append((current, True))
        stack.extend((arg, False) for arg in current.args)
    return order


def _masked(graph, slope):
    """``0 * slope``: what the branch not taken contributes (NaN where its slope is not
    finite, as TensorFlow's autodiff gives)."""
    return graph.constant(0.0) if slope.op == "const" and _pymath.isfinite(slope.value) else _binary("mul", 0.0, slope)


def _derivative_of(graph, node, memo, zero):
    if not node.depends_on_prediction or node.boolean:
        return zero
    op, args = node.op, node.args
    if op == "y_pred":
        return graph.constant(1.0)
    d = [memo[id(arg)] for arg in args]
    if op == "neg":
        return -d[0]
    if op == "add":
        return d[0] + d[1]
    if op == "sub":
        return d[0] - d[1]
    if op == "mul":
        a, b = args
        if a is b:  # x * x: 2 x dx, what x dx + dx x is, exactly
            return (2.0 * a) * d[0]
        return _sum(graph, [d[0] * b if args[0].depends_on_prediction else None,
                            a * d[1] if args[1].depends_on_prediction else None])
    if op == "div":
        a, b = args
        # d(a / b) = da / b - (a / b) / b db, TensorFlow's order of operations
        return _sum(graph, [d[0] / b if a.depends_on_prediction else None,
                            -((a / b) / b) * d[1] if b.depends_on_prediction else None])
    if op == "pow":
        a, b = args
        # d(a ** b) = b a**(b - 1) da + a**b log(a) db, the log taken as 0 where a <= 0 (TensorFlow's)
        terms = [b * a ** (b - 1.0) * d[0] if a.depends_on_prediction else None]
        if b.depends_on_prediction:
            safe_log = where(a > 0.0, log(where(a > 0.0, a, 1.0)), 0.0)
            terms.append(node * safe_log * d[1])
        return _sum(graph, terms)
    x = args[0] if args else None
    dx = d[0] if d else None
    if op == "abs":
        return sign(x) * dx
    if op == "sign":
        return zero
    if op == "exp":
        return node * dx
    if op == "log":
        return dx / x
    if op == "log1p":
        return dx / (1.0 + x)
    if op == "expm1":
        return exp(x) * dx
    if op == "sqrt":
        return dx * (0.5 / node)  # TensorFlow's sqrt gradient: 0.5 / sqrt(x)
    if op == "tanh":
        return (1.0 - node * node) * dx
    if op == "sigmoid":
        return node * (1.0 - node) * dx
    if op == "softplus":
        return sigmoid(x) * dx
    if op == "log_sigmoid":
        return sigmoid(-x) * dx
    if op == "log_cosh":
        return tanh(x) * dx
    if op == "where":
        condition, a, b = args
        da, db = d[1], d[2]
        return where(condition, da + _masked(graph, db), _masked(graph, da) + db)
    if op in ("maximum", "minimum"):
        a, b = args
        first = (a >= b) if op == "maximum" else (a <= b)
        da, db = d
        return where(first, da + _masked(graph, db), _masked(graph, da) + db)
    if op == "clip":
        x, low, high = args
        outside = (x < low) | (x > high)
        return where(outside, _masked(graph, d[0]), d[0])
    raise AssertionError(f"no derivative rule for {op}")  # pragma: no cover - every op has one


def _sum(graph, terms):
    terms = [term for term in terms if term is not None]
    if not terms:
        return graph.constant(0.0)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total
