"""The elementwise losses the kernels know, by kernel name: what ``cpu.py`` and
``cuda.py`` compile a row kernel and a launcher from.

``fusedloss.define`` registers one ``KernelSpec`` per loss (and per value of its
static parameters); the launchers are then ``cpu.<name>`` and ``cuda.<name>``, built
on first use. Framework-free.
"""

from typing import NamedTuple


class KernelSpec(NamedTuple):
    name: str
    # Python source defining ``element(label, prediction, column, params) -> (value, slope)``
    # (printed by ``generate.element_source``), or an import of a hand-written one.
    element_source: str
    # How a row's values become its loss: "mean" or "sum".
    reduce: str
    # The launcher's parameters after (y_true, y_pred), in order, with their defaults.
    parameters: tuple
    defaults: tuple
    # Indices of parameters that may be one value per class (the last axis).
    per_class: frozenset = frozenset()


SPECS = {}


def register(spec):
    """Add ``spec`` (replacing a spec of the same name only if it is identical)."""
    existing = SPECS.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"a different elementwise loss is already registered as {spec.name!r}")
    SPECS[spec.name] = spec
    return spec


def bind(spec, params, named):
    """The launcher's parameter values in order, from positional and keyword arguments."""
    if len(params) > len(spec.parameters):
        raise TypeError(f"{spec.name} takes {len(spec.parameters)} parameters {spec.parameters}, got {len(params)}")
    values = dict(zip(spec.parameters, spec.defaults))
    values.update(zip(spec.parameters, params))
    unknown = set(named) - set(spec.parameters)
    if unknown:
        raise TypeError(f"{spec.name} has no parameter {sorted(unknown)[0]!r}; its parameters: {spec.parameters}")
    values.update(named)
    return [values[name] for name in spec.parameters]
