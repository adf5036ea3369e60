"""The benchmark suite's own checks: its correctness gate, its report, and its smoke run
(``python -m benchmarks --smoke``, the same command CI runs), which fails when any
provider disagrees with the float64 reference."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import providers, report
from benchmarks.specs import LOSSES, LossSpec, Tolerance, missing_parts

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = Tolerance(rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------
# The correctness gate


def test_assert_close_accepts_rounding_differences():
    expected = np.linspace(-2.0, 3.0, 41)
    providers.assert_close("loss", (expected * (1 + 5e-6)).astype(np.float32), expected, TOLERANCE)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda a: a.__setitem__(17, a[17] * 1.001), r"1 of 41 values off .* worst at \(17,\)"),
        (lambda a: a.__setitem__(3, np.nan), r"1 of 41 values off .* worst at \(3,\)"),
        (lambda a: a.__setitem__(slice(None), a[::-1]), r"values off"),
    ],
    ids=["one-value-off", "nan", "reversed"],
)
def test_assert_close_names_what_is_off(damage, message):
    expected = np.linspace(-2.0, 3.0, 41)
    actual = expected.copy()
    damage(actual)
    with pytest.raises(AssertionError, match=message):
        providers.assert_close("loss", actual, expected, TOLERANCE)


def test_assert_close_rejects_a_wrong_shape():
    with pytest.raises(AssertionError, match=r"shape \(4, 10\), expected \(40,\)"):
        providers.assert_close("gradient", np.zeros((4, 10)), np.zeros(40), TOLERANCE)


def test_a_loss_fusedloss_lacks_is_reported_by_name():
    spec = LossSpec("no_such_loss", "NoSuchLoss", None, None, None)
    assert missing_parts(spec) == [
        "fusedloss.no_such_loss",
        "fusedloss.NoSuchLoss",
        "fusedloss.kernels.cpu.no_such_loss",
        "fusedloss.kernels.reference.no_such_loss",
    ]


def test_huber_is_benchmarked():
    assert missing_parts(next(spec for spec in LOSSES if spec.name == "huber")) == []


# ---------------------------------------------------------------------------------
# The report


def _result(provider, size, seconds, mode="fwd+bwd", op="huber", path="fused"):
    return report.Result(
        op=op, label=f"{size:.0e}", mode=mode, provider=provider, reduction="mean", kind="sweep", size=size, path=path,
        median_s=seconds, spread=0.01, gbps=1.0, x_floor=seconds / 1e-3, floor_s=1e-3,
    )


def test_crossover_is_interpolated_between_the_bracketing_sizes():
    results = [
        _result("bridge", 1_000, 2e-4), _result("tf-function", 1_000, 1e-4),  # native 2x faster
        _result("bridge", 100_000, 5e-4), _result("tf-function", 100_000, 1e-3),  # bridge 2x faster
        _result("fusedloss", 10_000_000, 1e-2), _result("tf-function", 10_000_000, 1e-1),
    ]
    # ratio 0.5 at 1e3 and 2 at 1e5: 1 half-way in log(size), at 1e4.
    assert report.crossovers(results) == {("huber", "fwd+bwd"): "~1.0e+04 (between 1e+03 and 1e+05)"}


def test_fusedloss_slower_than_native_is_flagged_beyond_noise():
    results = [
        _result("fusedloss", 1_000, 1.05e-4, path="tf-ops"), _result("tf-function", 1_000, 1e-4),
        _result("fusedloss", 10_000, 1.5e-4, path="tf-ops"), _result("tf-function", 10_000, 1e-4),
    ]
    assert report.slower_than_native(results) == ["huber 1e+04 fwd+bwd: 0.67x tf.function (tf-ops)"]


def test_targets_say_met_or_missed():
    results = [
        _result("fusedloss", 10_000_000, 1.2e-3),  # x_floor 1.2
        _result("tf-xla", 10_000_000, 2.0e-3),  # only 1.67x faster than XLA
    ]
    lines = report.targets(results)
    assert "huber 1e7 fwd+bwd: x floor <= 1.5: 1.20 (met)" in lines
    assert "huber 1e7 fwd+bwd: speed-up vs tf-xla >= 2.0: 1.67 (MISSED)" in lines
    assert "contrastive vs tf-xla >= 2.0: not measured" in lines


# ---------------------------------------------------------------------------------
# The smoke run


def test_smoke_run_checks_every_provider_of_every_available_loss(tmp_path):
    # The suite's own settings: no simulator, and the default dispatch threshold.
    environment = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "FUSEDLOSS_MIN_FUSED_SIZE")}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(tmp_path)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    checked = {(b["extra_info"]["op"], b["extra_info"]["provider"], b["extra_info"]["mode"]) for b in data["benchmarks"]}
    available = [spec.name for spec in LOSSES if not missing_parts(spec)]
    assert checked == {(op, p, m) for op in available for p in providers.PROVIDERS for m in providers.MODES}
    paths = {b["extra_info"]["provider"]: b["extra_info"]["path"] for b in data["benchmarks"]}
    assert paths["bridge"] == paths["kernel"] == "fused"  # forced through the kernel
    assert paths["fusedloss"] == "tf-ops"  # 2000 elements: below the dispatch threshold
    assert (tmp_path / "smoke.md").read_text().count("| huber |") == 2
    assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The threading layers, each in its own process: OpenMP and workqueue come with numba.
    threading = (tmp_path / "smoke-threading.md").read_text()
    for layer in ("omp", "workqueue"):
        assert re.search(rf"^\| {layer} \| \d+ \| 1e\+03 \| [\d.]+ µs \| [\d.]+ µs \|$", threading, re.MULTILINE), threading


# ---------------------------------------------------------------------------------
# The README's results: one command regenerates every file it links


def test_docs_regenerates_every_result_file_the_readme_links():
    from benchmarks import __main__ as main
    from tests.test_readme import local_link_targets

    commands = main.docs_commands(python="python")
    assert all(command[-2:] == ["--output", str(main.DOCS_RESULTS)] for command in commands)
    stems = {main.run_name(main.parse_arguments(command[3:-2])) for command in commands}
    linked = [Path(p) for p in local_link_targets((ROOT / "README.md").read_text(encoding="utf-8"))]
    results = [p for p in linked if p.parent == main.DOCS_RESULTS]
    assert results, "the README links no results"
    # <stem>.md / .png, and the tables written beside them: <stem>-threading.md, ...
    produced = {p for p in results if p.stem in stems or p.stem.rsplit("-", 1)[0] in stems}
    assert produced == set(results), sorted(map(str, set(results) - produced))


def test_docs_takes_no_other_option():
    from benchmarks import __main__ as main

    with pytest.raises(SystemExit):
        main.parse_arguments(["--docs", "--quick"])
    assert main.parse_arguments(["--docs"]).docs
