"""What OpenMP's wait policy and numba's thread count cost in ``model.fit``.

numba's OpenMP layer (libgomp) keeps its worker threads spinning for a while after
each parallel region (``OMP_WAIT_POLICY``: ``ACTIVE`` spins on, ``PASSIVE`` sleeps at
once; libgomp's default spins ~300 000 rounds, ``GOMP_SPINCOUNT``), while
TensorFlow's own threads want the same cores for the model's matmuls. Each setting is
timed in its own child process, because libgomp reads its environment once, when numba
first launches a parallel region; the children run in turn, the order rotated on every
repeat, and each child times ``benchmarks.fit`` workloads (fused loss against the
reference, interleaved epochs), so the within-child speed-up compares the fused step
against a reference step that runs no numba code.

``python -m benchmarks.fit_threads [--repeats 2] [--workloads dense-regression]`` prints
the table; the main job (``python -m benchmarks``) runs it after the suite and writes
``<mode>-fit-threads.md`` beside the other results.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple


class Setting(NamedTuple):
    label: str
    env: dict  # set in the child; the variables of THREAD_VARIABLES it does not name are removed
    tf_threads: tuple = (0, 0)  # TensorFlow (intra-op, inter-op) threads; 0: TensorFlow's default (one per core)


# What a user can set (fusedloss sets none of them: no setting measured better than libgomp's default).
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")

# "libgomp default" names libgomp's own default spin count explicitly (what it uses when
# OMP_WAIT_POLICY is unset), so the baseline stays libgomp's default even if fusedloss
# ever sets one where the user set nothing.
SETTINGS = (
    Setting("libgomp default (spin 300000)", {"GOMP_SPINCOUNT": "300000"}),
    Setting("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}),
    Setting("OMP_WAIT_POLICY=ACTIVE", {"OMP_WAIT_POLICY": "ACTIVE"}),
    Setting("NUMBA_NUM_THREADS=1", {"NUMBA_NUM_THREADS": "1"}),
    Setting("PASSIVE + TF intra-op 1", {"OMP_WAIT_POLICY": "PASSIVE"}, (1, 0)),
)
# Not in the table by default (today the same as the baseline): the user's environment
# with none of THREAD_VARIABLES, whatever fusedloss then does.
NOTHING_SET = Setting("nothing set", {})
SETTINGS_BY_LABEL = {setting.label: setting for setting in (*SETTINGS, NOTHING_SET)}

CHILD = r"""
import json, os, sys
from benchmarks import use_cpu_only
use_cpu_only()
import tensorflow as tf

arguments = json.loads(sys.argv[1])
intra, inter = arguments["tf_threads"]
tf.config.threading.set_intra_op_parallelism_threads(intra)
tf.config.threading.set_inter_op_parallelism_threads(inter)
import numba
import fusedloss
from benchmarks import fit

budget = fit.FitBudget(**arguments["budget"])
results = [fit.measure(fit.FIT_WORKLOADS_BY_KEY[key], budget) for key in arguments["workloads"]]
print(json.dumps({
    "numba_threads": numba.get_num_threads(),
    "threading_layer": numba.threading_layer(),
    "tf_threads": [tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads()],
    "environment": {k: os.environ[k] for k in arguments["variables"] if k in os.environ},
    "results": results,
}))
"""


def measure(setting, workloads, budget):
    """One child process under ``setting``: ``{"numba_threads", "threading_layer",
    "tf_threads", "environment", "results": [fit.measure dicts]}`` or ``{"error": text}``."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(setting.env)
    env.update({"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"})
    repository = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repository, env.get("PYTHONPATH")]))
    arguments = {
        "tf_threads": list(setting.tf_threads),
        "budget": budget._asdict(),
        "workloads": list(workloads),
        "variables": list(THREAD_VARIABLES),
    }
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(arguments)],
        env=env, capture_output=True, text=True, timeout=900, cwd=repository,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        return {"error": next((line for line in reversed(lines) if "Error" in line), lines[-1])}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(workloads, budget, repeats=1, settings=SETTINGS):
    """``{label: [child result, ...]}``: every setting once per repeat, the order rotated
    by one on each repeat so that no setting always runs first or last."""
    measured = {setting.label: [] for setting in settings}
    for repeat in range(repeats):
        shift = repeat % len(settings)
        for setting in settings[shift:] + settings[:shift]:
            measured[setting.label].append(measure(setting, workloads, budget))
    return measured


def _spread(values, scale=1.0, digits=3):
    if len(values) == 1:
        return ""
    return f"{min(values) * scale:.{digits}g}-{max(values) * scale:.{digits}g}"


def summary(measured):
    """Per setting and workload: the median over repeats of the child's median fused and
    reference step times and of its median speed-up, with the repeats' extremes, and
    the fused step relative to the first setting's (the baseline)."""
    rows = []
    baseline = {}
    for label, children in measured.items():
        if any("error" in child for child in children):
            rows.append({"setting": label, "error": next(c["error"] for c in children if "error" in c)})
            continue
        first = children[0]
        for index, workload in enumerate(result["workload"] for result in first["results"]):
            per_child = [child["results"][index] for child in children]
            fused = [r["fused_step_s"] for r in per_child]
            reference = [r["reference_step_s"] for r in per_child]
            speedup = [r["speedup"] for r in per_child]
            row = {
                "setting": label,
                "workload": workload,
                "path": per_child[0]["path"],
                "numba_threads": first["numba_threads"],
                "tf_threads": first["tf_threads"],
                "environment": first["environment"],
                "children": len(children),
                "rounds_x_steps": f"{per_child[0]['rounds']} x {per_child[0]['steps']}",
                "fused_step_s": statistics.median(fused),
                "fused_range": _spread(fused, 1e3),
                "reference_step_s": statistics.median(reference),
                "reference_range": _spread(reference, 1e3),
                "speedup": statistics.median(speedup),
                "speedup_range": _spread(speedup, 1, 3),
                "speedup_iqr": [statistics.median(r["speedup_q1"] for r in per_child), statistics.median(r["speedup_q3"] for r in per_child)],
            }
            baseline.setdefault(workload, row["fused_step_s"])
            row["fused_vs_baseline"] = row["fused_step_s"] / baseline[workload]
            rows.append(row)
    return rows


def markdown(measured):
    lines = [
        "| setting | workload | numba threads | TF intra, inter | rounds x steps x children | fused step [ms] | reference step [ms] "
        "| speed-up (IQR) | fused step / baseline's |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary(measured):
        if "error" in row:
            lines.append(f"| {row['setting']} | failed: {row['error'][:100]} | | | | | | | |")
            continue
        intra, inter = row["tf_threads"]
        fused_range = f" ({row['fused_range']})" if row["fused_range"] else ""
        reference_range = f" ({row['reference_range']})" if row["reference_range"] else ""
        q1, q3 = row["speedup_iqr"]
        lines.append(
            f"| {row['setting']} | {row['workload']} ({row['path']}) | {row['numba_threads']} | "
            f"{intra or 'default'}, {inter or 'default'} | {row['rounds_x_steps']} x {row['children']} | "
            f"{row['fused_step_s'] * 1e3:.3g}{fused_range} | {row['reference_step_s'] * 1e3:.3g}{reference_range} | "
            f"{row['speedup']:.2f}x ({q1:.2f}-{q3:.2f}) | {row['fused_vs_baseline']:.2f} |"
        )
    lines += [
        "",
        "Each setting in its own child process, run in turn (order rotated per repeat); step times are "
        "medians over the children (extremes in brackets) of each child's median over its rounds; speed-up: "
        "reference step / fused step, interleaved epochs within a child (IQR over rounds, median over children); "
        "the last column compares the fused step with the first setting's.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    from .fit import FIT_WORKLOADS_BY_KEY, FitBudget

    parser = argparse.ArgumentParser(prog="python -m benchmarks.fit_threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="dense-regression", help=f"comma-separated, of {', '.join(FIT_WORKLOADS_BY_KEY)}")
    parser.add_argument("--repeats", type=int, default=2, help="children per setting")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per child")
    parser.add_argument("--seconds-per-epoch", type=float, default=0.5)
    parser.add_argument("--settings", default="", help=f"comma-separated labels, of {', '.join(SETTINGS_BY_LABEL)} (default: the first {len(SETTINGS)})")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    arguments = parser.parse_args(argv)
    workloads = [key.strip() for key in arguments.workloads.split(",") if key.strip()]
    settings = [SETTINGS_BY_LABEL[label.strip()] for label in arguments.settings.split(",") if label.strip()] or SETTINGS
    budget = FitBudget(rounds=arguments.rounds, seconds_per_epoch=arguments.seconds_per_epoch, min_steps=3, max_steps=200)
    measured = run(workloads, budget, arguments.repeats, tuple(settings))
    if arguments.json:
        arguments.json.write_text(json.dumps(measured, indent=1), encoding="utf-8")
    print(markdown(measured), end="")


if __name__ == "__main__":
    main()
