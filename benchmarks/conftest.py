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
from . import softmax  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("fusedloss benchmarks")
    group.addoption("--run-mode", choices=sorted(RUN_MODES), default="quick", help="sizes and timing budget")
    group.addoption("--losses", default="", help="comma-separated loss names (default: all)")
    group.addoption(
        "--providers", default="",
        help=f"comma-separated, of {', '.join(dict.fromkeys(PROVIDERS + softmax.SOFTMAX_PROVIDERS))} (default: all)",
    )
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


def _selected(config, option, known, other_family=()):
    """The names ``option`` picks of ``known``: all when it names none. Names of the
    other family (the softmax one, or the elementwise one) are valid too, and pick
    nothing here: ``--losses huber`` runs no softmax case."""
    names = [name.strip() for name in config.getoption(option).split(",") if name.strip()]
    unknown = sorted(set(names) - set(known) - set(other_family))
    if unknown:
        everything = ", ".join(dict.fromkeys([*known, *other_family]))
        raise pytest.UsageError(f"--{option.lstrip('-')}: unknown {', '.join(unknown)}; known: {everything}")
    return [name for name in names if name in known] if names else list(known)


def _bridge_is_fusedloss(shape, mode):
    """At and above the threshold, ``fusedloss`` already runs the bridge: timing
    ``bridge`` too would measure the same thing twice."""
    import math

    import fusedloss

    return math.prod(shape) >= fusedloss.min_fused_size(with_grad=mode == "fwd+bwd")


def cases(config):
    run_mode = RUN_MODES[config.getoption("run_mode")]
    losses = _selected(config, "--losses", LOSSES_BY_NAME, softmax.SOFTMAX_LOSSES_BY_NAME)
    providers = _selected(config, "--providers", PROVIDERS, softmax.SOFTMAX_PROVIDERS)
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


def softmax_selection(config):
    """``(run, losses, providers)`` of the softmax family in this run."""
    run = softmax.SOFTMAX_RUNS[config.getoption("run_mode")]
    losses = _selected(config, "--losses", softmax.SOFTMAX_LOSSES_BY_NAME, LOSSES_BY_NAME)
    providers = _selected(config, "--providers", softmax.SOFTMAX_PROVIDERS, PROVIDERS)
    return run, losses, providers


def softmax_memory_cases(config):
    """``(loss, shape label, provider)`` of each peak-memory child: the run's memory
    shapes, for its first loss (the sparse one: what a classifier trains with)."""
    run, losses, providers = softmax_selection(config)
    losses = [name for name in run.losses if name in losses][:1]
    return [
        (loss, label, provider)
        for loss in losses
        for label in run.memory_shapes
        for provider in softmax.MEMORY_PROVIDERS
        if provider in providers
    ]


def pytest_generate_tests(metafunc):
    if "softmax_case" in metafunc.fixturenames:
        selected = softmax.cases(*softmax_selection(metafunc.config))
        metafunc.parametrize("softmax_case", selected, ids=[case.id for case in selected])
    if "softmax_memory" in metafunc.fixturenames:
        selected = softmax_memory_cases(metafunc.config)
        metafunc.parametrize("softmax_memory", selected, ids=[f"{l}[{s}]-{p}" for l, s, p in selected])
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


@pytest.fixture(scope="session")
def softmax_memory_all(pytestconfig):
    """Every memory case of this run, so the first one can start all their children."""
    return softmax_memory_cases(pytestconfig)
