"""``python -m benchmarks [--quick | --smoke] [--output DIR] [--losses a,b] [--providers a,b]``

Runs the suite in ``benchmarks/`` with a progress bar, prints the results table and
writes to ``DIR`` (default ``results/``): ``<mode>.json`` (pytest-benchmark's JSON, every
round's time included), ``<mode>.md`` (the table, crossovers and targets) and
``<mode>.png`` (time and speed-up against size, one panel per loss).

Modes: the default runs every size from 1e3 to 1e7 elements (two per decade), the
three loss workloads and the model.fit workloads of ``benchmarks/fit.py`` (9 rounds;
~37 minutes on 2 cores, measured 2026-12-03); ``--quick`` the sizes 1e3, 1e5, 1e6 and 1e7 with a smaller
timing budget, no loss workloads and 7 rounds of the model.fit ones (~8 minutes);
``--smoke`` one tiny size, one round per case and the model.fit workloads shrunk to a
few elements: every provider's correctness is checked, nothing meaningful is timed
(for CI). ``--workloads a,b`` picks model.fit workloads (``none``: none).

``--reuse-malloc`` reruns the suite with glibc told to keep freed memory for reuse
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``): by default every allocation of
32 MB or more is a fresh mmap whose page faults are paid on every call, which slows
TensorFlow's large temporaries (native providers at 1e7 elements) far more than the
fused kernels, whose outputs are pooled. Results go to ``<mode>-reuse-malloc.*``.
``--huge-pages`` reruns it with glibc asking for transparent huge pages for its large
blocks (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, where the kernel's THP mode is
``madvise``): TensorFlow's tensors then get them as NumPy's arrays already do, which
speeds every provider that reads or writes them. Results go to ``<mode>-huge-pages.*``.

The softmax cross-entropy family (``benchmarks/softmax.py``: fusedloss's Keras classes
against Keras's and ``tf.nn``'s, at issue 11's shapes, with peak memory per provider in
child processes) runs in every mode: ``--quick`` two shapes, sparse labels, and the
memory of one; ``--smoke`` one tiny shape, no memory; the default every shape, both
losses. ``--losses``/``--providers`` take the family's names too.

After the suite (``--smoke`` included, at one tiny size), ``benchmarks.threading_layers``
times the Huber kernel and the bridge under each numba threading layer, in one child
process per layer, into ``<mode>-threading.md``; then ``benchmarks.fit_threads`` times
model.fit under each OpenMP wait policy and thread count, one child process per setting,
into ``<mode>-fit-threads.md`` (and ``.json``); ``--workloads none`` skips it too.

``--docs`` regenerates every result the README links, into ``docs/results/`` (tracked by
git): the full run, then ``--quick --reuse-malloc`` and ``--quick --huge-pages``, each in
its own process (54 minutes on 2 cores, 2026-12-03). It takes no other option.

The exit status is pytest's: non-zero when any provider disagreed with the reference.
"""

import argparse
import os
import sys
from pathlib import Path

from . import use_cpu_only

use_cpu_only()

import pytest  # noqa: E402

SUITE = Path(__file__).resolve().parent


class ProgressPlugin:
    """A rich progress bar in place of pytest's own output; failures and skip reasons
    are kept for the summary."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[current]}"),
            console=console,
            transient=False,
        )
        self.task = None
        self.failures = []
        self.skip_reasons = {}
        self.passed = 0

    def pytest_collection_finish(self, session):
        self.progress.start()
        self.task = self.progress.add_task("benchmarks", total=len(session.items), current="")

    def pytest_runtest_logstart(self, nodeid, location):
        self.progress.update(self.task, current=nodeid.split("[", 1)[-1].rstrip("]"))

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failures.append((report.nodeid, report.when, report.longreprtext))
        elif report.skipped and report.when == "setup":
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = reason.removeprefix("Skipped: ")
            self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1
        elif report.passed and report.when == "call":
            self.passed += 1
        if report.when == "teardown":
            self.progress.advance(self.task)

    def pytest_internalerror(self, excrepr):
        self.failures.append(("pytest", "internal", str(excrepr)))

    def pytest_collectreport(self, report):
        if report.failed:
            self.failures.append((report.nodeid, "collect", report.longreprtext))

    def pytest_sessionfinish(self, session):
        self.progress.stop()


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_const", dest="mode", const="quick", help="~8 minutes on 2 cores")
    modes.add_argument("--smoke", action="store_const", dest="mode", const="smoke", help="correctness only, for CI")
    parser.add_argument("--output", type=Path, default=Path("results"), help="results folder (default: results/)")
    parser.add_argument("--losses", default="", help="comma-separated loss names (default: all)")
    parser.add_argument("--providers", default="", help="comma-separated providers (default: all)")
    parser.add_argument(
        "--workloads", default="", help="comma-separated model.fit workloads (default: all; 'none' skips them)"
    )
    parser.add_argument(
        "--reuse-malloc", action="store_true", help="glibc reuses large freed blocks (fairer to native TF at 1e7)"
    )
    parser.add_argument(
        "--huge-pages", action="store_true", help="glibc asks for transparent huge pages for large blocks"
    )
    parser.add_argument(
        "--docs", action="store_true",
        help=f"regenerate the README's results in {DOCS_RESULTS}/: the full run, then quick with --reuse-malloc and with --huge-pages",
    )
    parser.set_defaults(mode="full")
    arguments = parser.parse_args(argv)
    if arguments.docs and [a for a in argv if a != "--docs"]:
        parser.error("--docs takes no other option: it runs the README's fixed set of runs")
    return arguments


# Where the README's results live (tracked by git; the default output, results/, is not).
DOCS_RESULTS = Path("docs") / "results"
# What the README links: (arguments of one run), each written to DOCS_RESULTS. The malloc
# reruns are about the loss suite: they leave out the model.fit workloads.
DOCS_RUNS = ((), ("--quick", "--reuse-malloc", "--workloads", "none"), ("--quick", "--huge-pages", "--workloads", "none"))


def run_name(arguments):
    """The results' file stem of a run: its mode and its malloc options, e.g. ``quick-huge-pages``."""
    return arguments.mode + "".join(f"-{option.replace('_', '-')}" for option in MALLOC_SETTINGS if getattr(arguments, option))


def docs_commands(python=sys.executable):
    """The command lines ``--docs`` runs, one process each, in order."""
    return [[python, "-m", "benchmarks", *run, "--output", str(DOCS_RESULTS)] for run in DOCS_RUNS]


def regenerate_docs():
    """Run ``docs_commands()`` one after the other; the first non-zero status stops it."""
    import subprocess

    for command in docs_commands():
        print("+", " ".join(command[1:]), flush=True)
        status = subprocess.call(command, cwd=SUITE.parent)
        if status:
            return status
    return 0


# glibc reads these once, at process start: set them, then start again.
MALLOC_SETTINGS = {
    "reuse_malloc": {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**33)},
    "huge_pages": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
}
# Timing of the threading layers per run mode: (sizes, repeats).
THREADING_RUNS = {"smoke": ((1_000,), 3), "quick": ((10_000, 100_000, 1_000_000), 100), "full": ((10_000, 100_000, 1_000_000), 400)}
# The wait policy and thread counts in model.fit per run mode: (workloads, budget,
# children per setting, settings; None: all of benchmarks.fit_threads.SETTINGS).
FIT_THREADS_RUNS = {
    "smoke": (("dense-regression",), {"rounds": 2, "seconds_per_epoch": 0.0, "min_steps": 1, "max_steps": 1, "smoke": True}, 1, 2),
    "quick": (("dense-regression",), {"rounds": 7, "seconds_per_epoch": 0.25, "min_steps": 2, "max_steps": 40}, 1, 2),
    "full": (("dense-regression",), {"rounds": 7, "seconds_per_epoch": 0.4, "min_steps": 3, "max_steps": 200}, 2, None),
}


def run_fit_threads(mode, stem, console):
    """``benchmarks.fit_threads`` as this mode runs it, into ``<stem>.md`` and ``<stem>.json``."""
    import json

    from . import fit, fit_threads

    workloads, budget, repeats, settings = FIT_THREADS_RUNS[mode]
    settings = fit_threads.SETTINGS[:settings] if settings else fit_threads.SETTINGS
    console.print(
        f"[bold]OpenMP wait policy and thread counts in model.fit[/] ({', '.join(workloads)}; "
        f"{len(settings)} settings x {repeats}, one child process each)"
    )
    measured = fit_threads.run(workloads, fit.FitBudget(**budget), repeats, settings)
    stem.with_suffix(".json").write_text(json.dumps(measured, indent=1), encoding="utf-8")
    table = fit_threads.markdown(measured)
    stem.with_suffix(".md").write_text(table, encoding="utf-8")
    console.print(table, markup=False, highlight=False)


# benchmarks.definitions per run mode: (rounds, Huber shape, time first calls in child processes).
DEFINITION_RUNS = {"smoke": (1, (10, 100), False), "quick": (9, (10_000, 1000), True), "full": (21, (10_000, 1000), True)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments(argv)
    if arguments.docs:
        return regenerate_docs()
    wanted = {}
    for option, settings in MALLOC_SETTINGS.items():
        if getattr(arguments, option):
            wanted.update(settings)
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *argv], {**os.environ, **wanted})
    from rich.console import Console

    from . import report  # TensorFlow comes with it: not for --help
    console = Console()
    console.width = max(console.width, 150)  # the table's 15 columns, also when piped
    arguments.output.mkdir(parents=True, exist_ok=True)
    name = run_name(arguments)
    json_path = arguments.output / f"{name}.json"
    # The main job is a run of its own, never an xdist worker: pytest-benchmark would
    # disable itself on seeing an inherited PYTEST_XDIST_WORKER (the smoke test runs it
    # from inside a parallel test run).
    for key in [key for key in os.environ if key.startswith("PYTEST_XDIST")]:
        del os.environ[key]
    plugin = ProgressPlugin(console)
    console.print(f"[bold]fusedloss CPU benchmarks[/], {arguments.mode} run -> {arguments.output}/")
    exit_code = pytest.main(
        [
            str(SUITE / "test_losses.py"),
            str(SUITE / "test_softmax.py"),
            *([str(SUITE / "test_fit.py")] if arguments.workloads.strip() != "none" else []),
            f"--rootdir={SUITE.parent}",
            "-o", "addopts=",
            "-p", "no:terminal",
            "-p", "no:cacheprovider",
            f"--run-mode={arguments.mode}",
            f"--losses={arguments.losses}",
            f"--providers={arguments.providers}",
            f"--workloads={arguments.workloads}",
            f"--benchmark-json={json_path}",
            "--benchmark-disable-gc",
            "--benchmark-quiet",
        ],
        plugins=[plugin],
    )
    for reason, count in plugin.skip_reasons.items():
        console.print(f"[yellow]skipped {count} cases[/]: {reason}")
    for nodeid, when, text in plugin.failures:
        console.rule(f"[red]FAILED {nodeid} ({when})")
        console.print(text, markup=False, highlight=False)
    if plugin.passed and json_path.exists():
        stem = arguments.output / name
        report.write(json_path, stem.with_suffix(".md"), stem.with_suffix(".png"), console, timed=arguments.mode != "smoke")
    if not plugin.failures:
        from . import threading_layers

        sizes, repeats = THREADING_RUNS[arguments.mode]
        console.print("[bold]numba threading layers[/] (Huber fwd+bwd, one child process per layer)")
        table = threading_layers.markdown(threading_layers.run(sizes, repeats))
        (arguments.output / f"{name}-threading.md").write_text(table, encoding="utf-8")
        console.print(table, markup=False, highlight=False)
        if arguments.workloads.strip() != "none":
            run_fit_threads(arguments.mode, arguments.output / f"{name}-fit-threads", console)
        from . import definitions

        rounds, shape, children = DEFINITION_RUNS[arguments.mode]
        console.print("[bold]writing a loss once[/] (define, first call cold / cached, generated vs hand-written Huber)")
        table = definitions.markdown(definitions.run(rounds, shape, children))
        (arguments.output / f"{name}-definitions.md").write_text(table, encoding="utf-8")
        console.print(table, markup=False, highlight=False)
    if plugin.failures:
        console.print(f"[bold red]{len(plugin.failures)} failed[/], {plugin.passed} passed")
    elif exit_code not in (0, pytest.ExitCode.NO_TESTS_COLLECTED):
        console.print(f"[bold red]pytest exited with {int(exit_code)}[/]")
    return int(exit_code) or (1 if plugin.failures else 0)


if __name__ == "__main__":
    sys.exit(main())
