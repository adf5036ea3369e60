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
from benchmarks import fit as fit_module
from benchmarks import fit_threads
from benchmarks.fit import FIT_WORKLOADS_BY_KEY
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
    ]  # a reference is asked for only once the rest is there (a definition gives one)


@pytest.mark.parametrize("spec", LOSSES, ids=lambda spec: spec.name)
def test_every_loss_of_the_suite_is_benchmarked(spec):
    # A loss the suite cannot find is skipped there, not failed: the focal loss's 59
    # cases were skipped once its kernel's name gained [gamma=2.0].
    assert missing_parts(spec) == []


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


def test_narrow_rows_are_compared_per_element_with_the_sweeps_rows():
    narrow = [
        _result("kernel", 9_999_936, 1.2e-2)._replace(kind="narrow", label="1e+07 rows of 64"),
        _result("fusedloss", 9_999_936, 2.0e-2)._replace(kind="narrow", label="1e+07 rows of 64"),
    ]
    results = [_result("kernel", 10_000_000, 1e-2), _result("fusedloss", 10_000_000, 1.25e-2), *narrow]
    lines = report.narrow_rows(results)
    kernel_ratio = (1.2e-2 / 9_999_936) / (1e-2 / 10_000_000)
    assert f"| huber | 1e+07 rows of 64 | fwd+bwd | {kernel_ratio:.2f} | 12.00 | 1.60 (MISSED) | 20.00 |" in lines
    assert report.narrow_rows(results[:2]) == []


def test_targets_say_met_or_missed():
    results = [
        _result("fusedloss", 10_000_000, 1.2e-3),  # x_floor 1.2
        _result("tf-xla", 10_000_000, 2.0e-3),  # only 1.67x faster than XLA
    ]
    lines = report.targets(results)
    assert "huber 1e7 fwd+bwd: x floor <= 1.5: 1.20 (met)" in lines
    assert "huber 1e7 fwd+bwd: speed-up vs tf-xla >= 2.0: 1.67 (MISSED)" in lines
    assert "contrastive vs tf-xla >= 2.0: not measured" in lines


def _fit(workload, ratios, **extra):
    q1, median, q3 = fit_module._quantiles(ratios)
    return {
        "kind": "fit", "workload": workload, "description": "d", "elements": 2_097_152, "fused_loss": "fusedloss.Huber",
        "reference_loss": "keras.losses.Huber", "path": "fused", "smoke": False, "rounds": len(ratios), "steps": 5,
        "fused_step_s": 0.02, "reference_step_s": 0.03, "ratios": ratios, "speedup": median, "speedup_q1": q1,
        "speedup_q3": q3, "speedup_min": min(ratios), "speedup_max": max(ratios), **extra,
    }


def test_fit_rows_show_the_median_speedup_its_iqr_and_extremes():
    fits = [_fit("dense-regression", [1.0, 1.2, 1.5, 2.0, 1.4, 1.3, 1.1])]
    [row] = report.fit_rows(fits)
    # sorted: 1.0 1.1 1.2 1.3 1.4 1.5 2.0 -> quartiles (inclusive) 1.15, 1.3, 1.45
    assert row == [
        "dense-regression", "2.1e+06", "fusedloss.Huber", "keras.losses.Huber", "fused", "7 x 5",
        "20 ms", "30 ms", "1.30x", "1.15-1.45", "1.00-2.00",
    ]
    data = {"benchmarks": [{"extra_info": {"op": "huber"}}, {"extra_info": fits[0]}]}
    assert report.fit_results(data) == fits
    section = "\n".join(report.fit_markdown(fits))
    assert "| dense-regression | 2.1e+06 |" in section and "- dense-regression: d" in section
    assert report.fit_markdown([]) == []


def test_fit_plot_is_written_with_or_without_the_loss_panels(tmp_path):
    fits = [_fit("a", [1.0, 2.0]), _fit("b", [0.9, 1.1])]
    for name, results in (("fits-only.png", []), ("both.png", [_result("fusedloss", 1_000, 1e-3), _result("tf-function", 1_000, 2e-3)])):
        report.plot(results, tmp_path / name, fits)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fit_workload_is_one_row_of_a_problem_and_two_loss_factories():
    # What the lead's sparse softmax CE row will look like, with Keras on both sides.
    import functools

    import keras

    row = fit_module.FitWorkload(
        "classifier",
        fit_module.classifier(256, 1000),
        functools.partial(keras.losses.SparseCategoricalCrossentropy, from_logits=True),
        fit_module._keras("SparseCategoricalCrossentropy", from_logits=True),
    )
    budget = fit_module.FitBudget(rounds=3, seconds_per_epoch=0.0, min_steps=2, max_steps=2, smoke=True)
    result = fit_module.measure(row, budget)
    assert result["fused_loss"] == "keras.SparseCategoricalCrossentropy"
    assert result["reference_loss"] == "keras.losses.SparseCategoricalCrossentropy"
    assert result["elements"] == 2 * 7 and result["steps"] == 2 and len(result["ratios"]) == 3
    # The same loss on both sides from the same weights: the same training.
    assert result["fused_last_loss"] == pytest.approx(result["reference_last_loss"], rel=1e-6)


@pytest.mark.parametrize("workload", fit_module.FIT_WORKLOADS, ids=lambda w: w.key)
def test_every_fit_problem_is_built_at_its_stated_size(workload):
    built = workload.problem.build(False)
    model = built.model()
    import keras

    assert built.elements == workload.problem.elements
    output = model(list(built.x) if isinstance(built.x, tuple) else built.x)
    assert int(np.prod(keras.ops.shape(output))) == workload.problem.elements


def _child(numba_threads, fused_step_s, speedup, workload="dense-regression"):
    result = _fit(workload, [speedup * 0.9, speedup, speedup * 1.1], fused_step_s=fused_step_s, reference_step_s=fused_step_s * speedup)
    return {"numba_threads": numba_threads, "threading_layer": "omp", "tf_threads": [0, 0], "environment": {}, "results": [result]}


def test_fit_threads_summary_takes_medians_over_children_against_the_first_setting():
    measured = {
        "baseline": [_child(2, 0.020, 1.5), _child(2, 0.030, 1.3), _child(2, 0.025, 1.4)],
        "passive": [_child(2, 0.015, 1.9), _child(2, 0.020, 1.7), _child(2, 0.010, 2.1)],
        "broken": [{"error": "ValueError: no such thing"}],
    }
    rows = fit_threads.summary(measured)
    assert [row["setting"] for row in rows] == ["baseline", "passive", "broken"]
    baseline, passive, broken = rows
    assert baseline["fused_step_s"] == pytest.approx(0.025) and baseline["fused_range"] == "20-30"
    assert passive["fused_step_s"] == pytest.approx(0.015) and passive["speedup"] == pytest.approx(1.9)
    assert passive["fused_vs_baseline"] == pytest.approx(0.6)
    assert broken == {"setting": "broken", "error": "ValueError: no such thing"}
    table = fit_threads.markdown(measured)
    assert re.search(r"^\| passive \| dense-regression \(fused\) \| 2 \| default, default \| 3 x 5 x 3 \| 15 \(10-20\) \| .* \| 1.90x \(.*\) \| 0.60 \|$", table, re.MULTILINE), table
    assert "| broken | failed: ValueError: no such thing |" in table


def test_fit_threads_children_get_only_their_own_thread_settings(monkeypatch):
    # The parent's own settings must not leak into a child measuring another setting.
    seen = {}

    def fake_run(command, env, **options):
        seen.update(env)
        return subprocess.CompletedProcess(command, 1, "", "SystemExit: stop")

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    monkeypatch.setattr(fit_threads.subprocess, "run", fake_run)
    setting = fit_threads.SETTINGS_BY_LABEL["OMP_WAIT_POLICY=PASSIVE"]
    assert fit_threads.measure(setting, ["dense-regression"], fit_module.FitBudget(1, 0.0, 1, 1, True)) == {"error": "SystemExit: stop"}
    assert seen["OMP_WAIT_POLICY"] == "PASSIVE" and "NUMBA_NUM_THREADS" not in seen


# ---------------------------------------------------------------------------------
# The smoke run


# The suite's machinery over one loss of each kind of kernel: a generated row kernel, a
# hand-written one (the kernel= door), the embedding pairs, and a loss with static
# variants; every loss's values are the conformance suite's (and a smoke run of all of
# them takes minutes of XLA compiles).
SMOKE_LOSSES = ("huber", "weighted_sigmoid_cross_entropy", "embedding_contrastive", "binary_crossentropy")


def test_smoke_run_checks_every_provider_of_every_available_loss(tmp_path):
    # The suite's own settings: no simulator, and the default dispatch threshold.
    environment = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "FUSEDLOSS_MIN_FUSED_SIZE")}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(tmp_path), f"--losses={','.join(SMOKE_LOSSES)}"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    cases = [b for b in data["benchmarks"] if b["extra_info"].get("kind") != "fit"]
    checked = {(b["extra_info"]["op"], b["extra_info"]["provider"], b["extra_info"]["mode"]) for b in cases}
    available = [spec.name for spec in LOSSES if not missing_parts(spec) and spec.name in SMOKE_LOSSES]
    assert len(available) == len(SMOKE_LOSSES)
    assert checked == {(op, p, m) for op in available for p in providers.PROVIDERS for m in providers.MODES}
    paths = {b["extra_info"]["provider"]: b["extra_info"]["path"] for b in cases}
    assert paths["bridge"] == paths["kernel"] == "fused"  # forced through the kernel
    assert paths["fusedloss"] == "tf-ops"  # 2000 elements: below the dispatch threshold
    assert (tmp_path / "smoke.md").read_text().count("| huber |") == 2
    assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The model.fit workloads, shrunk: every one ran both sides, fused at every size,
    # and reports its per-round speed-ups with their spread.
    fits = report.fit_results(data)
    assert [fit["workload"] for fit in fits] == list(FIT_WORKLOADS_BY_KEY)
    for fit in fits:
        assert fit["smoke"] and fit["path"] == "fused" and fit["elements"] > 0, fit
        assert fit["rounds"] == len(fit["ratios"]) == len(fit["fused_epochs_s"]) == len(fit["reference_epochs_s"]) >= 2
        assert fit["speedup_min"] <= fit["speedup_q1"] <= fit["speedup"] <= fit["speedup_q3"] <= fit["speedup_max"]
        assert fit["fused_step_s"] > 0 and fit["reference_step_s"] > 0
        assert np.isclose(fit["fused_last_loss"], fit["reference_last_loss"], rtol=1e-3), fit
    fit_table = (tmp_path / "smoke.md").read_text().split("model.fit step time", 1)[1]
    for key in FIT_WORKLOADS_BY_KEY:
        assert re.search(rf"^\| {key} \| .* \| fused \| 2 x 1 \| .*x \| [\d.]+-[\d.]+ \| [\d.]+-[\d.]+ \|$", fit_table, re.MULTILINE), fit_table
    # The wait policy in model.fit: the smoke run's two settings, each in its own process.
    fit_threads_table = (tmp_path / "smoke-fit-threads.md").read_text()
    for setting in fit_threads.SETTINGS[:2]:
        row = rf"^\| {re.escape(setting.label)} \| dense-regression \(fused\) \| \d+ \| default, default \| 2 x 1 x 1 \| "
        assert re.search(row, fit_threads_table, re.MULTILINE), fit_threads_table
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
    # <stem>.md / .png, and the tables written beside them: <stem>-threading.md, <stem>-fit-threads.md
    names = {f"{stem}{table}{suffix}" for stem in stems for table in ("", "-threading", "-fit-threads") for suffix in (".md", ".png")}
    produced = {p for p in results if p.name in names}
    assert produced == set(results), sorted(map(str, set(results) - produced))


def test_docs_takes_no_other_option():
    from benchmarks import __main__ as main

    with pytest.raises(SystemExit):
        main.parse_arguments(["--docs", "--quick"])
    assert main.parse_arguments(["--docs"]).docs


# ---------------------------------------------------------------------------------
# The softmax cross-entropy family


def test_softmax_floor_is_eight_bytes_per_logit_plus_labels_and_losses():
    from benchmarks import softmax

    sparse = softmax.SOFTMAX_LOSSES_BY_NAME["sparse_categorical_crossentropy"]
    labels, logits = softmax.make_inputs(sparse, (8, 5, 10))
    assert labels.dtype == np.int64 and labels.shape == (8, 5) and logits.dtype == np.float32
    entries, classes = 40, 10
    # logits read + gradient written (4 + 4 bytes a logit), labels read (8 bytes), losses written (4)
    assert softmax.bytes_moved("fwd+bwd", labels, logits) == entries * classes * 8 + entries * (8 + 4)
    assert softmax.bytes_moved("fwd", labels, logits) == entries * classes * 4 + entries * (8 + 4)
    dense = softmax.SOFTMAX_LOSSES_BY_NAME["categorical_crossentropy"]
    targets, logits = softmax.make_inputs(dense, (8, 10))
    assert np.array_equal(targets.sum(-1), np.ones(8)) and targets.dtype == np.float32
    assert softmax.bytes_moved("fwd+bwd", targets, logits) == 80 * 12 + 8 * 4


def test_softmax_quick_run_stays_small_and_full_covers_issue_11():
    from benchmarks import softmax

    quick, full = softmax.SOFTMAX_RUNS["quick"], softmax.SOFTMAX_RUNS["full"]
    cases = softmax.cases(quick)
    assert len(cases) == 2 * 2 * len(softmax.SOFTMAX_PROVIDERS)  # two shapes, sparse only, two modes
    assert len(set(case.id for case in cases)) == len(cases)
    assert set(full.shapes) == {"8192x100", "8192x1000", "1024x32768", "256x131072", "32x128x2000"}
    assert softmax.shape_of("32x128x2000") == (32, 128, 2000)
    assert {c.provider for c in softmax.cases(full)} == set(softmax.SOFTMAX_PROVIDERS)
    assert softmax.cases(quick, losses=["huber"]) == []  # the other family's name picks nothing here


def _softmax_info(label, provider, seconds, mode="fwd+bwd", x_floor=2.0):
    return {"extra_info": {
        "kind": "softmax", "op": "sparse_categorical_crossentropy", "label": label, "mode": mode, "provider": provider,
        "median_s": seconds, "spread": 0.05, "path": "fused", "gbps": 10.0, "x_floor": x_floor,
    }}


def test_softmax_report_rows_targets_and_memory():
    data = {"benchmarks": [
        _softmax_info("1024x32768", "fusedloss", 0.02, x_floor=2.5),
        _softmax_info("1024x32768", "keras-xla", 0.08),  # 4x: short of 5x
        _softmax_info("1024x32768", "keras-function", 0.2),  # 10x
        _softmax_info("8192x100", "fusedloss", 0.001, x_floor=4.0),
        _softmax_info("8192x100", "keras-xla", 0.003),
        {"extra_info": {"kind": "softmax-memory", "op": "sparse_categorical_crossentropy", "label": "1024x32768",
                        "provider": "fusedloss", "peak_mb": 135.0, "warm_mb": 134.0, "transient_mb": 1.0}},
        {"extra_info": {"kind": "softmax-memory", "op": "sparse_categorical_crossentropy", "label": "1024x32768",
                        "provider": "keras-function", "peak_mb": 144.0, "warm_mb": 143.0, "transient_mb": 1.0}},
    ]}
    assert report.load.__doc__  # the loss table leaves the family out:
    groups, memory = report.softmax_results(data)
    [large, small] = report.softmax_rows(groups)[:2]
    assert large[:8] == ["sparse_categorical_crossentropy", "1024x32768", "fwd+bwd", "20 ms", "5%", "fused", "10.0", "2.50"]
    assert large[-3:] == ["4.00x", "10.00x", ""]
    lines = report.softmax_targets(groups)
    assert "1024x32768 fwd+bwd: x floor <= 3: 2.50 (met)" in lines
    assert "1024x32768 fwd+bwd: speed-up vs keras-xla >= 5: 4.00 (MISSED)" in lines
    assert "1024x32768 fwd+bwd: speed-up vs keras-function >= 8: 10.00 (met)" in lines
    assert "8192x100 fwd+bwd: speed-up vs keras-xla >= 2: 3.00 (met)" in lines
    assert "256x131072 fwd+bwd x_floor: not measured" in lines
    [check] = report.softmax_memory_check(memory)
    assert check.startswith("sparse_categorical_crossentropy 1024x32768: fusedloss 135 MB, not above")
    section = "\n".join(report.softmax_markdown(data))
    assert "| sparse_categorical_crossentropy | 1024x32768 | fwd+bwd | 20 ms |" in section
    assert "| sparse_categorical_crossentropy | 1024x32768 | fusedloss | 135 | 134 | 1 |" in section


def test_softmax_loss_table_and_softmax_section_do_not_mix(tmp_path):
    data = {"benchmarks": [_softmax_info("8192x100", "fusedloss", 0.001)]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    results, _ = report.load(path)
    assert results == []  # not a row of the elementwise losses' table
    assert report.softmax_markdown({"benchmarks": []}) == []


def test_softmax_peak_memory_child_reports_its_high_water_mark():
    from benchmarks import softmax

    measured = softmax.peak_memory("sparse_categorical_crossentropy", "tiny", "kernel", calls=1, timeout=300)
    assert "error" not in measured, measured
    assert measured["peak_mb"] >= measured["warm_mb"] - 1.0 and measured["baseline_mb"] > 0
    assert measured["calls"] == 1 and isinstance(measured["warm_up_excluded"], bool)
