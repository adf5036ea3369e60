"""The suite's options, the cases it generates and the measurements shared by a run."""

from typing import NamedTuple

from . import use_cpu_only

use_cpu_only()

import pytest  # noqa: E402

from . import machine  # noqa: E402
from .providers import MODES, PROVIDERS  # noqa: E402
from .fit import FIT_WORKLOADS_BY_KEY  # noqa: E402
from .specs import (  # noqa: E402
    LOSSES, LOSSES_BY_NAME, NARROW_LOSSES, NARROW_PROVIDERS, RUN_MODES, WORKLOADS, missing_parts, narrow_label,
)


def pytest_addoption(parser):
    group = parser.getgroup("fusedloss benchmarks")
    group.addoption("--run-mode", choices=sorted(RUN_MODES), default="quick", help="sizes and timing budget")
    group.addoption("--losses", default="", help="comma-separated loss names (default: all)")
    group.addoption("--providers", default="", help=f"comma-separated, of {', '.join(PROVIDERS)} (default: all)")
    group.addoption(
        "--workloads", default="",
        help=f"model.fit workloads, comma-separated, of {', '.join(FIT_WORKLOADS_BY_KEY)} (default: all; 'none': none)",
    )


class Case(NamedTuple):
    spec: object
    label: str  # the size ("1e+06") or the workload's name
    shape: tuple
    mode: str
    provider: str
    reduction: str  # "mean": the gradient of the per-sample losses' mean, as Keras reduces by default
    kind: str  # "sweep" (a size of the sweep), "narrow" (its largest size in narrow rows) or "workload"

    @property
    def id(self):
        return f"{self.spec.name}[{self.label}]-{self.mode}-{self.provider}"


def _selected(config, option, known):
    names = [name.strip() for name in config.getoption(option).split(",") if name.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise pytest.UsageError(f"--{option.lstrip('-')}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    return names or list(known)


def _bridge_is_fusedloss(shape, mode):
    """At and above the threshold, ``fusedloss`` already runs the bridge: timing
    ``bridge`` too would measure the same thing twice."""
    import math

    import fusedloss

    return math.prod(shape) >= fusedloss.min_fused_size(with_grad=mode == "fwd+bwd")


def cases(config):
    run_mode = RUN_MODES[config.getoption("run_mode")]
    losses = _selected(config, "--losses", LOSSES_BY_NAME)
    providers = _selected(config, "--providers", PROVIDERS)
    shapes = []  # (spec, label, shape, kind), in run order
    for spec in LOSSES:
        if spec.name in losses:
            shapes += [(spec, f"{size:.0e}", spec.shape_for(size), "sweep") for size in run_mode.sizes]
    largest = max(run_mode.sizes)
    for n_columns in run_mode.narrow_columns:
        shapes += [
            (LOSSES_BY_NAME[name], narrow_label(largest, n_columns), (largest // n_columns, n_columns), "narrow")
            for name in NARROW_LOSSES
            if name in losses
        ]
    if run_mode.workloads:
        shapes += [(LOSSES_BY_NAME[w.loss], w.name, w.shape, "workload") for w in WORKLOADS if w.loss in losses]
    generated = []
    for spec, label, shape, kind in shapes:
        missing = missing_parts(spec)
        for mode in MODES:
            for provider in providers:
                if kind == "narrow" and provider not in NARROW_PROVIDERS:
                    continue
                if provider == "bridge" and _bridge_is_fusedloss(shape, mode) and "fusedloss" in providers:
                    continue
                case = Case(spec, label, shape, mode, provider, "mean", kind)
                marks = [pytest.mark.skip(reason=f"fusedloss lacks {', '.join(missing)}")] if missing else []
                generated.append(pytest.param(case, id=case.id, marks=marks))
    return generated


def fit_workloads(config):
    """The model.fit workloads this run times: none where the run mode has no fit budget."""
    if RUN_MODES[config.getoption("run_mode")].fit is None or config.getoption("workloads").strip() == "none":
        return []
    return [FIT_WORKLOADS_BY_KEY[key] for key in _selected(config, "--workloads", FIT_WORKLOADS_BY_KEY)]


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", cases(metafunc.config))
    if "fit_workload" in metafunc.fixturenames:
        selected = fit_workloads(metafunc.config)
        metafunc.parametrize("fit_workload", selected, ids=[w.key for w in selected])


@pytest.fixture(scope="session")
def run_mode(pytestconfig):
    return RUN_MODES[pytestconfig.getoption("run_mode")]


@pytest.fixture(scope="session")
def bandwidth(run_mode):
    """``(bytes per second, how measured)``, once per run."""
    if run_mode.name == "smoke":
        return machine.measure_bandwidth(nbytes=16 * 2**20, repeats=2, parallel=False)
    return machine.measure_bandwidth()


@pytest.fixture(scope="session")
def environment():
    return {"device": machine.device(), "versions": machine.versions(), "malloc": machine.malloc()}
