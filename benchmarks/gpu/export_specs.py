"""Write ``benchmarks/gpu/kernel_specs.json``: every built-in elementwise kernel, for a
GPU machine without TensorFlow.

    python -m benchmarks.gpu.export_specs            # rewrite the file (run after a loss changes)
    python -m benchmarks.gpu.export_specs --check    # exit 1 if the file is stale

The kernels are registered when ``fusedloss.define`` runs the loss definitions, which
needs TensorFlow; ``run_gpu.py`` runs where there is none. So the specs are made here,
on a machine with TensorFlow, and committed: for every kernel variant (one per value
of a loss's static parameters) the ``registry.KernelSpec`` fields, the printed
``values_and_slopes(ops, y_true, y_pred, params)`` (``generate.array_source``), which
``run_gpu.py`` evaluates in float64 NumPy as the reference and in PyTorch, JAX and
CuPy as the competitors, and a hint of the inputs the loss expects (``DOMAINS``).

A new built-in loss needs nothing here: it is found through ``fusedloss.__all__``.
Give it a row in ``DOMAINS`` when its inputs are not plain regression targets, and in
``STATIC_CHOICES`` when a static parameter is not a bool.
"""

import argparse
import json
import pathlib
import sys

PATH = pathlib.Path(__file__).resolve().with_name("kernel_specs.json")
COMMAND = "python -m benchmarks.gpu.export_specs"

# What the inputs of each loss must look like (by kernel name without its static
# suffix); anything not named is "regression". run_gpu.py draws inputs from these:
#   regression     y_true ~ N(0, 1), y_pred ~ N(0, 3^2)
#   labels         y_true in {0, 1}, y_pred real (logits or scores)
#   probabilities  y_true in [0, 1], y_pred in (0, 1)
#   positive       y_true > 0, y_pred > 0 (counts, rates, percentages)
#   distances      y_true in {0, 1}, y_pred >= 0
DOMAINS = {
    "weighted_sigmoid_cross_entropy": "labels",
    "hinge": "labels",
    "squared_hinge": "labels",
    "binary_crossentropy": "probabilities",
    "binary_crossentropy[from_logits=True]": "labels",
    "binary_focal_crossentropy": "probabilities",
    "binary_focal_crossentropy[from_logits=True]": "labels",
    "kl_divergence": "probabilities",
    "poisson": "positive",
    "mean_absolute_percentage_error": "positive",
    "mean_squared_logarithmic_error": "positive",
    "contrastive": "distances",
}
DOMAIN_NAMES = ("regression", "labels", "probabilities", "positive", "distances")

# The values of static parameters that are not bools (bools get both), by class name
# and parameter: one kernel each.
STATIC_CHOICES = {}


def domain_of(kernel_name):
    """The input domain of a kernel: its own row, else its loss's, else regression."""
    return DOMAINS.get(kernel_name) or DOMAINS.get(kernel_name.split("[")[0], "regression")


def definitions():
    """The built-in elementwise loss definitions (``fusedloss.define.Definition``), in
    the order of ``fusedloss.__all__``, each once."""
    import fusedloss

    found, seen = [], set()
    for name in fusedloss.__all__:
        definition = getattr(getattr(fusedloss, name), "definition", None)
        if definition is not None and id(definition) not in seen:
            seen.add(id(definition))
            found.append(definition)
    return found


def static_variants(definition):
    """Every combination of the static parameters' values to export (the default first)."""
    import itertools

    choices = []
    for name in definition.static:
        default = definition.parameters[name]
        if isinstance(default, bool):
            values = [default, not default]
        else:
            values = [default] + [v for v in STATIC_CHOICES.get(definition.class_name, {}).get(name, ()) if v != default]
        choices.append(values)
    return [tuple(combination) for combination in itertools.product(*choices)]


def export():
    """``{"generated_by": ..., "kernels": [...]}``, the kernels sorted by name."""
    from fusedloss.kernels import generate, registry

    kernels = []
    for definition in definitions():
        for static_key in static_variants(definition):
            value, slope, kernel_name = definition.traced(static_key)
            spec = registry.SPECS[kernel_name]
            domain = domain_of(kernel_name)
            if domain not in DOMAIN_NAMES:
                raise ValueError(f"{kernel_name}: domain {domain!r} is not one of {DOMAIN_NAMES}")
            kernels.append(
                {
                    "name": spec.name,
                    "loss": definition.class_name,
                    "static": dict(zip(definition.static, static_key)),
                    "element_source": spec.element_source,
                    "reduce": spec.reduce,
                    "parameters": list(spec.parameters),
                    "defaults": [float(d) for d in spec.defaults],
                    "per_class": sorted(spec.per_class),
                    "array_source": generate.array_source(value, slope),
                    "domain": domain,
                }
            )
    kernels.sort(key=lambda kernel: kernel["name"])
    return {
        "generated_by": COMMAND + " (do not edit: rerun it after a loss definition changes)",
        "kernels": kernels,
    }


def text():
    return json.dumps(export(), indent=1, sort_keys=False) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file differs from a fresh export")
    parser.add_argument("--out", default=str(PATH), help=f"where to write (default {PATH.name} beside this script)")
    args = parser.parse_args(argv)
    fresh = text()
    out = pathlib.Path(args.out)
    if args.check:
        if not out.exists() or out.read_text() != fresh:
            print(f"{out} is stale: run `{COMMAND}` and commit it")
            return 1
        print(f"{out} is up to date ({len(json.loads(fresh)['kernels'])} kernels)")
        return 0
    out.write_text(fresh)
    print(f"wrote {out}: {', '.join(kernel['name'] for kernel in json.loads(fresh)['kernels'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
