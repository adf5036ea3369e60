"""Python source of a loss's element function, printed from its traced expression.

``element_source`` turns the value and slope expressions of a loss (``fusedloss.math``
nodes, the slope derived from the value) into the source of one function

    def element(label, prediction, column, params): ... return value, slope

with the contract of ``math.py``'s hand-written element functions, so the same row
kernels compile it for the CPU (``cpu.py``) and the GPU (``cuda.py``). Each shared
subexpression is computed once; every constant is written in the prediction's type
(``_like``), so float32 math stays float32; functions call ``primitives.py``.

Framework-free: nothing here imports TensorFlow.
"""

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
          "eq": "==", "ne": "!=", "and": "&", "or": "|"}
_CALLS = {"abs": "abs", "sign": "_sign", "exp": "_exp", "log": "_log", "log1p": "_log1p", "expm1": "_expm1",
          "sqrt": "_sqrt", "tanh": "_tanh", "sigmoid": "_sigmoid", "softplus": "_softplus",
          "log_sigmoid": "_log_sigmoid", "log_cosh": "_log_cosh", "maximum": "_maximum", "minimum": "_minimum",
          "clip": "_clip"}


def _integer_power(base, exponent):
    """``base ** n`` for a small integer ``n`` as products (no ``pow`` call)."""
    if exponent == 0:
        return None
    factors = " * ".join([base] * abs(exponent))
    return f"({factors})" if exponent > 0 else f"(_like(prediction, 1.0) / ({factors}))"


def element_source(value, slope, per_class=(), function_name="element"):
    """The source of ``function_name(label, prediction, column, params)`` returning
    ``(value, slope)``; parameter ``i`` is ``params[i]``, or its entry for ``column``
    when ``i`` is in ``per_class``."""
    names = {}
    lines = []
    from ..math import _postorder  # the nodes in an order where arguments come first

    def name_of(node):
        return names[id(node)]

    used_parameters = set()
    for node in _postorder([value, slope]):
        op = node.op
        if op == "y_true":
            names[id(node)] = "label"
            continue
        if op == "y_pred":
            names[id(node)] = "prediction"
            continue
        if op == "param":
            names[id(node)] = f"p{node.index}"
            used_parameters.add(node.index)
            continue
        if op == "const":
            if isinstance(node.value, bool):
                names[id(node)] = repr(node.value)
            else:
                names[id(node)] = f"_like(prediction, {float(node.value)!r})"
            continue
        args = [name_of(arg) for arg in node.args]
        if op in _INFIX:
            expression = f"{args[0]} {_INFIX[op]} {args[1]}"
        elif op == "neg":
            expression = f"-{args[0]}"
        elif op == "not":
            expression = f"not {args[0]}"
        elif op == "where":
            expression = f"{args[1]} if {args[0]} else {args[2]}"
        elif op == "pow":
            exponent = node.args[1]
            if exponent.op == "const" and float(exponent.value).is_integer() and 0 < abs(exponent.value) <= 4:
                expression = _integer_power(args[0], int(exponent.value))
            elif exponent.op == "const" and exponent.value == 0.5:
                expression = f"_sqrt({args[0]})"
            else:
                expression = f"_pow({args[0]}, {args[1]})"
        else:
            expression = f"{_CALLS[op]}({', '.join(args)})"
        name = f"t{len(lines)}"
        names[id(node)] = name
        lines.append(f"    {name} = {expression}")
    header = [f"def {function_name}(label, prediction, column, params):"]
    for index in sorted(used_parameters):
        source = f"_class_weight(params[{index}], column)" if index in per_class else f"params[{index}]"
        header.append(f"    p{index} = {source}")
    value_name, slope_name = name_of(value), name_of(slope)
    # A constant slope or value still has the prediction's type.
    return "\n".join(header + lines + [f"    return {value_name}, {slope_name}", ""])


_ARRAY_INFIX = dict(_INFIX, **{"and": "&", "or": "|"})


def array_source(value, slope, function_name="values_and_slopes"):
    """The source of ``function_name(ops, y_true, y_pred, params)`` returning the arrays
    ``(values, slopes)`` of the same expressions, elementwise over whole arrays.

    ``ops`` is a namespace with the array functions ``where, abs, sign, exp, log,
    log1p, expm1, sqrt, tanh, sigmoid, softplus, log_sigmoid, log_cosh, maximum,
    minimum, clip, logical_not`` of one framework (NumPy, CuPy, PyTorch, JAX): what a
    GPU machine without TensorFlow runs to check and time the kernels. ``params[i]``
    is parameter ``i`` (a number, or an array broadcast over the last axis).
    """
    from ..math import _postorder

    names, lines = {}, []
    for node in _postorder([value, slope]):
        op = node.op
        if op in ("y_true", "y_pred"):
            names[id(node)] = op
            continue
        if op == "param":
            names[id(node)] = f"params[{node.index}]"
            continue
        if op == "const":
            names[id(node)] = repr(node.value if isinstance(node.value, bool) else float(node.value))
            continue
        args = [names[id(arg)] for arg in node.args]
        if op in _ARRAY_INFIX:
            expression = f"({args[0]}) {_ARRAY_INFIX[op]} ({args[1]})"
        elif op == "pow":
            expression = f"({args[0]}) ** ({args[1]})"
        elif op == "neg":
            expression = f"-({args[0]})"
        elif op == "not":
            expression = f"ops.logical_not({args[0]})"
        else:
            expression = f"ops.{op}({', '.join(args)})"
        names[id(node)] = f"t{len(lines)}"
        lines.append(f"    t{len(lines)} = {expression}")
    return "\n".join(
        [f"def {function_name}(ops, y_true, y_pred, params):"]
        + lines
        + [f"    return {names[id(value)]}, {names[id(slope)]}", ""]
    )
