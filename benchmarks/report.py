"""From pytest-benchmark's JSON to a console table, a Markdown report and a plot.

Speed-ups are native time / fusedloss time (> 1: fusedloss is faster). The crossover
of a loss is the size from which the fused kernel through the bridge is at least as
fast as native ``tf.function``; below ``fusedloss.min_fused_size()`` the ``fusedloss``
provider runs TensorFlow ops, so it should never be slower than native there either.
"""

import json
import math
from collections import defaultdict
from typing import NamedTuple

from .providers import NATIVE_PROVIDERS

# What the project claims, at 1e7 elements, forward+backward, on the CPU.
# (loss, quantity, bound): quantity "x_floor" must be <= bound, "vs tf-xla" >= bound.
TARGETS = (
    ("huber", "x_floor", 1.5),
    ("huber", "vs tf-xla", 2.0),
    ("contrastive", "vs tf-xla", 2.0),
    ("weighted_sigmoid_cross_entropy", "vs tf-xla", 1.5),
)
TARGET_LABEL = "1e+07"
# Timings on shared machines move by ~10% between neighbouring runs: "slower than
# native" is flagged only beyond that.
NOISE = 0.10


class Result(NamedTuple):
    op: str
    label: str
    mode: str
    provider: str
    reduction: str
    kind: str
    size: int
    path: str
    median_s: float
    spread: float
    gbps: float
    x_floor: float
    floor_s: float



def markdown_table(columns, rows, left_aligned):
    """A Markdown table's lines: text columns (``left_aligned(index, name)``) to the
    left, numbers to the right."""
    rule = "|".join("---" if left_aligned(i, column) else "---:" for i, column in enumerate(columns))
    return ["| " + " | ".join(columns) + " |", "|" + rule + "|"] + ["| " + " | ".join(row) + " |" for row in rows]


def _first_three_or_path(i, column):
    return i < 3 or column == "path"

def load(json_path):
    """``(results, data)``: the loss cases as ``Result`` and the whole JSON; the model.fit
    workloads are in ``data`` too (``fit_results(data)``)."""
    with open(json_path, encoding="utf-8") as file:
        data = json.load(file)
    results = []
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "median_s" not in info or info.get("kind") in ("fit", "softmax", "softmax-memory"):
            continue
        results.append(Result(*(info[field] for field in Result._fields)))
    return results, data


def fit_results(data):
    """The model.fit workloads' results (``benchmarks.fit.measure``'s dicts), in run order."""
    return [bench["extra_info"] for bench in data["benchmarks"] if bench["extra_info"].get("kind") == "fit"]


FIT_COLUMNS = (
    "workload", "y_pred per step", "fusedloss", "reference", "path", "rounds x steps",
    "fused step", "reference step", "speed-up", "IQR", "min-max",
)


def fit_rows(fits):
    """One row per workload: step times (medians over rounds), the median per-round
    speed-up (reference step / fused step), its interquartile range and its extremes."""
    return [
        [
            fit["workload"],
            f"{fit['elements']:.2g}",
            fit["fused_loss"],
            fit["reference_loss"],
            fit["path"],
            f"{fit['rounds']} x {fit['steps']}",
            format_time(fit["fused_step_s"]),
            format_time(fit["reference_step_s"]),
            f"{fit['speedup']:.2f}x",
            f"{fit['speedup_q1']:.2f}-{fit['speedup_q3']:.2f}",
            f"{fit['speedup_min']:.2f}-{fit['speedup_max']:.2f}",
        ]
        for fit in fits
    ]


def fit_markdown(fits):
    """The model.fit section of the report (empty when no workload ran)."""
    if not fits:
        return []
    lines = [
        "",
        "model.fit step time, fusedloss against the reference loss on the same model, data and "
        "starting weights (SGD; one batch repeated); each round fits one epoch of each, in "
        "alternating order; step = median over an epoch's steps (synced on the loss scalar); "
        "speed-up = reference step / fused step per round, its median, interquartile range "
        "and extremes over the rounds; `path`: what the fused loss runs at this size.",
        "",
    ]
    lines += markdown_table(FIT_COLUMNS, fit_rows(fits), lambda i, column: i < 6 and i != 1)
    lines += ["", "Workloads:", ""]
    lines += [f"- {fit['workload']}: {fit['description']}" for fit in fits]
    return lines


# ---------------------------------------------------------------------------------
# The softmax cross-entropy family (benchmarks/softmax.py)

SOFTMAX_TIMED = ("kernel", "keras-eager", "keras-function", "keras-xla", "tf.nn-eager", "tf.nn-function", "tf.nn-xla")
SOFTMAX_VERSUS = ("keras-xla", "keras-function", "tf.nn-function")
SOFTMAX_COLUMNS = (
    "loss", "shape", "mode", "fusedloss", "±", "path", "GB/s", "x floor", *SOFTMAX_TIMED,
    *(f"vs {provider}" for provider in SOFTMAX_VERSUS),
)
# Issue 11's claims, sparse labels, forward+backward: (shapes, quantity, bound).
SOFTMAX_TARGETS = (
    (("1024x32768", "256x131072"), "x_floor", 3.0),
    (("1024x32768", "256x131072"), "keras-xla", 5.0),
    (("1024x32768", "256x131072"), "keras-function", 8.0),
    (("8192x100", "8192x1000"), "keras-xla", 2.0),
)
SOFTMAX_TARGET_LOSS = "sparse_categorical_crossentropy"


def softmax_results(data):
    """``({(op, label, mode): {provider: extra_info}}, [memory extra_info])`` in run order."""
    groups = defaultdict(dict)
    memory = []
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if info.get("kind") == "softmax" and "median_s" in info:
            groups[(info["op"], info["label"], info["mode"])][info["provider"]] = info
        elif info.get("kind") == "softmax-memory":
            memory.append(info)
    return groups, memory


def _versus(row, provider):
    fused, other = row.get("fusedloss"), row.get(provider)
    if fused is None or other is None:
        return None
    return other["median_s"] / fused["median_s"]


def softmax_rows(groups):
    rows = []
    for (op, label, mode), row in groups.items():
        fused = row.get("fusedloss")
        rows.append(
            [
                op, label, mode,
                format_time(fused["median_s"]) if fused else "",
                f"{100 * fused['spread']:.0f}%" if fused else "",
                fused["path"] if fused else "",
                f"{fused['gbps']:.1f}" if fused else "",
                f"{fused['x_floor']:.2f}" if fused else "",
                *(format_time(row[p]["median_s"]) if p in row else "" for p in SOFTMAX_TIMED),
                *(f"{v:.2f}x" if v is not None else "" for v in (_versus(row, p) for p in SOFTMAX_VERSUS)),
            ]
        )
    return rows


def softmax_targets(groups):
    lines = []
    for labels, quantity, bound in SOFTMAX_TARGETS:
        for label in labels:
            row = groups.get((SOFTMAX_TARGET_LOSS, label, "fwd+bwd"), {})
            if "fusedloss" not in row:
                lines.append(f"{label} fwd+bwd {quantity}: not measured")
                continue
            if quantity == "x_floor":
                value = row["fusedloss"]["x_floor"]
                met, text = value <= bound, f"x floor <= {bound:g}"
            else:
                value = _versus(row, quantity)
                met, text = value is not None and value >= bound, f"speed-up vs {quantity} >= {bound:g}"
            shown = "n/a" if value is None else f"{value:.2f}"
            lines.append(f"{label} fwd+bwd: {text}: {shown} ({'met' if met else 'MISSED'})")
    return lines


MEMORY_COLUMNS = ("loss", "shape", "provider", "peak MB", "resident after warm-up MB", "transient MB")


def softmax_memory_rows(memory):
    return [
        [m["op"], m["label"], m["provider"], f"{m['peak_mb']:.0f}", f"{m['warm_mb']:.0f}", f"{m['transient_mb']:.0f}"]
        for m in memory
    ]


def softmax_memory_check(memory):
    """Per shape: fusedloss's peak against the native losses' (Keras and tf.nn in
    tf.function); "above" beyond 5 % (page granularity and allocator noise)."""
    lines = []
    by_shape = defaultdict(dict)
    for m in memory:
        by_shape[(m["op"], m["label"])][m["provider"]] = m["peak_mb"]
    for (op, label), peaks in by_shape.items():
        natives = {p: v for p, v in peaks.items() if p in ("keras-function", "tf.nn-function")}
        if "fusedloss" not in peaks or not natives:
            continue
        lowest = min(natives.values())
        verdict = "not above" if peaks["fusedloss"] <= 1.05 * lowest + 1.0 else "ABOVE"
        lines.append(f"{op} {label}: fusedloss {peaks['fusedloss']:.0f} MB, {verdict} the native losses' "
                     + ", ".join(f"{p} {v:.0f} MB" for p, v in natives.items()))
    return lines


def softmax_markdown(data, timed=True):
    """The softmax family's section of the report (empty when none of it ran)."""
    groups, memory = softmax_results(data)
    if not groups and not memory:
        return []
    lines = [
        "",
        "Softmax cross-entropy (`benchmarks/softmax.py`): fusedloss's Keras class in "
        "tf.function against Keras's class and the mean of `tf.nn.(sparse_)softmax_cross_entropy_with_logits`, "
        "eagerly, in tf.function and under XLA; mean reduction; x floor = time / (bytes that must "
        "move / bandwidth); vs X = X's time / fusedloss's time.",
        "",
    ]
    lines += markdown_table(SOFTMAX_COLUMNS, softmax_rows(groups), _first_three_or_path)
    if memory:
        lines += [
            "",
            "Peak memory of fwd+bwd, one child process per provider: the resident high-water mark "
            "over the calls after a warm-up call (which traces and compiles), less the resident set "
            "before it (libraries loaded, inputs made); `resident after warm-up` is what stayed "
            "(TensorFlow's pools, fusedloss's pooled outputs, XLA's compiled code).",
            "",
        ]
        lines += markdown_table(MEMORY_COLUMNS, softmax_memory_rows(memory), lambda i, column: i < 3)
        lines += [""] + [f"- {line}" for line in softmax_memory_check(memory)]
    if timed and groups:
        lines += ["", "Softmax targets (sparse labels, forward+backward):", ""]
        lines += [f"- {line}" for line in softmax_targets(groups)]
    return lines


def _group(results):
    """``{(op, label, mode): {provider: Result}}`` in run order."""
    groups = defaultdict(dict)
    for result in results:
        groups[(result.op, result.label, result.mode)][result.provider] = result
    return groups


def format_time(seconds):
    if seconds is None:
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _speedup(row, native):
    fused, other = row.get("fusedloss"), row.get(native)
    if fused is None or other is None:
        return None
    return other.median_s / fused.median_s


def _bridge(row):
    """The bridge's time at this size: ``bridge`` where timed, else ``fusedloss`` on its
    fused path (the same code)."""
    if "bridge" in row:
        return row["bridge"]
    fused = row.get("fusedloss")
    return fused if fused is not None and fused.path == "fused" else None


def _own_cost(bridge, empty):
    """The bridge's time beyond an empty ``tf.numpy_function`` round trip (signed)."""
    if bridge is None or empty is None:
        return ""
    extra = bridge.median_s - empty.median_s
    return ("-" if extra < 0 else "") + format_time(abs(extra))


COLUMNS = (
    "loss", "size", "mode", "fusedloss", "±", "path", "GB/s", "x floor",
    "kernel", "bridge", "empty-bridge", "bridge - empty", "tf-eager", "tf-function", "tf-xla", "vs eager", "vs tf.function", "vs XLA",
)


def table_rows(results):
    rows = []
    for (op, label, mode), row in _group(results).items():
        fused = row.get("fusedloss")

        def time_of(provider):
            return format_time(row[provider].median_s) if provider in row else ""

        bridge = _bridge(row)
        speedups = [_speedup(row, native) for native in NATIVE_PROVIDERS]
        rows.append(
            [
                op,
                label,
                mode,
                time_of("fusedloss"),
                f"{100 * fused.spread:.0f}%" if fused else "",
                fused.path if fused else "",
                f"{fused.gbps:.1f}" if fused else "",
                f"{fused.x_floor:.2f}" if fused else "",
                time_of("kernel"),
                format_time(bridge.median_s) if bridge else "",
                time_of("empty-bridge"),
                _own_cost(bridge, row.get("empty-bridge")),
                *(time_of(native) for native in NATIVE_PROVIDERS),
                *(f"{s:.2f}x" if s is not None else "" for s in speedups),
            ]
        )
    return rows


def crossovers(results):
    """``{(op, mode): text}``: the size from which the bridge is at least as fast as
    native ``tf.function`` at every larger size of the sweep (log-interpolated between
    the two sizes that bracket it)."""
    sweeps = defaultdict(list)
    for (op, label, mode), row in _group(results).items():
        bridge, native = _bridge(row), row.get("tf-function")
        if bridge is not None and native is not None and bridge.kind == "sweep":
            sweeps[(op, mode)].append((bridge.size, native.median_s / bridge.median_s))
    found = {}
    for key, points in sweeps.items():
        points.sort()
        if all(ratio >= 1 for _, ratio in points):
            found[key] = f"<= {points[0][0]:.0e} (the bridge wins at every size measured)"
            continue
        if points[-1][1] < 1:
            found[key] = f"> {points[-1][0]:.0e} (native tf.function wins at every size measured)"
            continue
        last_loss = max(i for i, (_, ratio) in enumerate(points) if ratio < 1)
        (small, r_small), (large, r_large) = points[last_loss], points[last_loss + 1]
        # ratio is ~linear in log(size) between neighbouring sizes: find where it is 1.
        fraction = (0 - math.log(r_small)) / (math.log(r_large) - math.log(r_small))
        crossing = math.exp(math.log(small) + fraction * (math.log(large) - math.log(small)))
        found[key] = f"~{crossing:.1e} (between {small:.0e} and {large:.0e})"
    return found


NARROW_TARGET = 1.3  # narrow rows: per element within this factor of the sweep's rows


def narrow_rows(results):
    """Table lines comparing narrow rows with the sweep's rows of ``ROW_LENGTH`` at the
    same size: time per element of the kernel alone and through the bridge, as a ratio
    to the sweep's (target <= ``NARROW_TARGET``), and x floor. Empty when none ran."""
    groups = _group(results)
    lines = []
    for (op, label, mode), row in groups.items():
        some = next(iter(row.values()))
        if some.kind != "narrow":
            continue
        sweep_sizes = [key for key, other in groups.items() if key[0] == op and key[2] == mode
                       and next(iter(other.values())).kind == "sweep"]
        wide = groups[max(sweep_sizes, key=lambda key: next(iter(groups[key].values())).size)] if sweep_sizes else {}
        cells = []
        for pick in (lambda r: r.get("kernel"), _bridge):
            narrow, reference = pick(row), pick(wide)
            if narrow is None or reference is None:
                cells += ["", ""]
                continue
            ratio = (narrow.median_s / narrow.size) / (reference.median_s / reference.size)
            cells += [f"{ratio:.2f}{'' if ratio <= NARROW_TARGET else ' (MISSED)'}", f"{narrow.x_floor:.2f}"]
        lines.append(f"| {op} | {label} | {mode} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return [
        "",
        f"Narrow rows: time per element over that of the sweep's rows at the same size "
        f"(target <= {NARROW_TARGET}), and x floor:",
        "",
        "| loss | rows | mode | kernel vs wide | kernel x floor | bridge vs wide | bridge x floor |",
        "|---|---|---|---:|---:|---:|---:|",
        *lines,
    ]


def slower_than_native(results):
    """Cases where ``fusedloss`` took more than ``1 + NOISE`` times native tf.function."""
    flagged = []
    for (op, label, mode), row in _group(results).items():
        speedup = _speedup(row, "tf-function")
        if speedup is not None and speedup < 1 / (1 + NOISE):
            flagged.append(f"{op} {label} {mode}: {speedup:.2f}x tf.function ({row['fusedloss'].path})")
    return flagged


def targets(results):
    lines = []
    groups = _group(results)
    for op, quantity, bound in TARGETS:
        row = groups.get((op, TARGET_LABEL, "fwd+bwd"))
        if not row or "fusedloss" not in row:
            lines.append(f"{op} {quantity} {'<=' if quantity == 'x_floor' else '>='} {bound}: not measured")
            continue
        if quantity == "x_floor":
            value, met, text = row["fusedloss"].x_floor, row["fusedloss"].x_floor <= bound, f"x floor <= {bound}"
        else:
            value = _speedup(row, quantity.split()[-1])
            met, text = value is not None and value >= bound, f"speed-up vs {quantity.split()[-1]} >= {bound}"
        shown = "n/a" if value is None else f"{value:.2f}"
        lines.append(f"{op} 1e7 fwd+bwd: {text}: {shown} ({'met' if met else 'MISSED'})")
    return lines


def markdown(results, data, timed=True):
    info = data["benchmarks"][0]["extra_info"] if data["benchmarks"] else {}
    versions = ", ".join(f"{name} {version}" for name, version in info.get("versions", {}).items())
    lines = [
        f"Device: {info.get('device', '?')}; memory bandwidth {info.get('bandwidth_gbps', 0):.1f} GB/s "
        f"({info.get('bandwidth_how', '?')}, best of 10); float32; glibc malloc: {info.get('malloc', 'default')}; "
        f"{versions}.",
        "",
        "Times are medians; ± is the interquartile range over the median; `path` is what "
        "`fusedloss` ran (the fused kernel or, below the dispatch threshold, TensorFlow ops); "
        "x floor = time / (bytes that must move / bandwidth); vs X = X's time / fusedloss's time.",
        "",
    ]
    lines += markdown_table(COLUMNS, table_rows(results), _first_three_or_path)
    lines += fit_markdown(fit_results(data))
    lines += softmax_markdown(data, timed)
    if not timed:
        return "\n".join(lines + ["", "Smoke run: one cold round per case; the times are not measurements."]) + "\n"
    lines += ["", "Crossover (bridge vs native tf.function):", ""]
    lines += [f"- {op} {mode}: {text}" for (op, mode), text in crossovers(results).items()]
    lines += narrow_rows(results)
    lines += ["", "Targets (1e7 elements, forward+backward):", ""]
    lines += [f"- {line}" for line in targets(results)]
    flagged = slower_than_native(results)
    lines += ["", f"fusedloss slower than native tf.function by more than {NOISE:.0%}:", ""]
    lines += [f"- {line}" for line in flagged] or ["- none"]
    return "\n".join(lines) + "\n"


def _plot_fits(axis, fits):
    """Per workload, the median per-round speed-up, the interquartile range as the bar's
    error and the extremes as dots."""
    names = [f"{fit['workload']}\n({fit['path']})" for fit in fits]
    medians = [fit["speedup"] for fit in fits]
    positions = range(len(fits))
    errors = [[m - fit["speedup_q1"] for m, fit in zip(medians, fits)], [fit["speedup_q3"] - m for m, fit in zip(medians, fits)]]
    axis.barh(positions, medians, xerr=errors, color="tab:blue", alpha=0.7, capsize=4, label="median, IQR")
    for position, fit in zip(positions, fits):
        axis.plot([fit["speedup_min"], fit["speedup_max"]], [position, position], "k.", markersize=6)
    axis.plot([], [], "k.", label="min, max")
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.set_yticks(list(positions), names, fontsize=8)
    axis.invert_yaxis()
    axis.set(xlabel="model.fit step speed-up (reference step / fusedloss step, per round)", title="model.fit workloads")
    axis.grid(True, axis="x", alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")


def plot(results, png_path, fits=()):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = [r for r in results if r.kind == "sweep" and r.mode == "fwd+bwd"]
    ops = list(dict.fromkeys(r.op for r in sweep))
    if not ops and not fits:
        return
    columns = max(len(ops), 1)
    rows = (2 if ops else 0) + (1 if fits else 0)
    heights = ([1, 1] if ops else []) + ([0.35 + 0.12 * len(fits)] if fits else [])
    figure = plt.figure(figsize=(4.6 * max(columns, 2), 3.75 * sum(heights)))
    grid = figure.add_gridspec(rows, columns, height_ratios=heights)
    if fits:
        _plot_fits(figure.add_subplot(grid[rows - 1, :]), fits)
    if not ops:
        figure.tight_layout()
        figure.savefig(png_path, dpi=110)
        plt.close(figure)
        return
    axes = [[figure.add_subplot(grid[0, c]) for c in range(len(ops))]]
    axes.append([figure.add_subplot(grid[1, c], sharex=axes[0][c]) for c in range(len(ops))])
    for column, op in enumerate(ops):
        mine = [r for r in sweep if r.op == op]
        time_axis, speed_axis = axes[0][column], axes[1][column]
        for provider in dict.fromkeys(r.provider for r in mine):
            points = sorted((r.size, r.median_s) for r in mine if r.provider == provider)
            style = {"linewidth": 2.5} if provider == "fusedloss" else {"linewidth": 1.2}
            time_axis.plot(*zip(*points), marker="o", markersize=3, label=provider, **style)
        floor = sorted({(r.size, r.floor_s) for r in mine if r.provider == "fusedloss"})
        if floor:
            time_axis.plot(*zip(*floor), color="black", linestyle=":", label="memory floor")
        time_axis.set(xscale="log", yscale="log", title=f"{op}, forward+backward", ylabel="median time [s]")
        time_axis.grid(True, which="both", alpha=0.3)
        time_axis.legend(fontsize=7)
        groups = _group(mine)
        for native in NATIVE_PROVIDERS:
            points = sorted(
                (row["fusedloss"].size, _speedup(row, native))
                for row in groups.values()
                if "fusedloss" in row and native in row
            )
            if points:
                speed_axis.plot(*zip(*points), marker="o", markersize=3, label=f"vs {native}")
        bridge_points = sorted(
            (_bridge(row).size, row["tf-function"].median_s / _bridge(row).median_s)
            for row in groups.values()
            if _bridge(row) is not None and "tf-function" in row
        )
        if bridge_points:
            speed_axis.plot(*zip(*bridge_points), linestyle="--", color="grey", label="bridge vs tf-function")
        speed_axis.axhline(1.0, color="black", linewidth=0.8)
        speed_axis.set(xscale="log", yscale="log", xlabel="elements of y_pred", ylabel="fusedloss speed-up")
        speed_axis.grid(True, which="both", alpha=0.3)
        speed_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(png_path, dpi=110)
    plt.close(figure)


def write(json_path, markdown_path, png_path, console, timed=True):
    """Print the tables and write the Markdown and the plot. ``timed=False`` (a smoke
    run: one cold round per case) leaves out crossovers, targets and flags, which would
    only report noise."""
    from rich.table import Table

    results, data = load(json_path)
    fits = fit_results(data)
    rows = table_rows(results)
    for op in dict.fromkeys(row[0] for row in rows):
        table = Table(*COLUMNS[1:], title=f"{op}: fusedloss vs native TensorFlow (CPU, float32)")
        for row in rows:
            if row[0] == op:
                table.add_row(*row[1:])
        console.print(table)
    if fits:
        table = Table(*FIT_COLUMNS, title="model.fit step time: fusedloss vs the reference loss (interleaved epochs)")
        for row in fit_rows(fits):
            table.add_row(*row)
        console.print(table)
    softmax_groups, softmax_memory = softmax_results(data)
    if softmax_groups:
        table = Table(*SOFTMAX_COLUMNS, title="softmax cross-entropy: fusedloss vs Keras and tf.nn (CPU, float32)")
        for row in softmax_rows(softmax_groups):
            table.add_row(*row)
        console.print(table)
    if softmax_memory:
        table = Table(*MEMORY_COLUMNS, title="softmax cross-entropy fwd+bwd: peak memory (one child process each)")
        for row in softmax_memory_rows(softmax_memory):
            table.add_row(*row)
        console.print(table)
        for line in softmax_memory_check(softmax_memory):
            console.print(f"memory {line}")
    if timed:
        for line in softmax_targets(softmax_groups) if softmax_groups else []:
            console.print(f"softmax target {line}")
    if not timed:
        markdown_path.write_text(markdown(results, data, timed=False), encoding="utf-8")
        plot(results, png_path, fits)
        console.print("smoke run: every provider checked against the reference; one cold round each, times are not measurements")
        console.print(f"wrote {json_path}, {markdown_path}, {png_path}")
        return
    for (op, mode), text in crossovers(results).items():
        console.print(f"crossover {op} {mode}: {text}")
    for line in targets(results):
        console.print(f"target {line}")
    for line in slower_than_native(results):
        console.print(f"[yellow]slower than native tf.function[/]: {line}")
    markdown_path.write_text(markdown(results, data), encoding="utf-8")
    plot(results, png_path, fits)
    console.print(f"wrote {json_path}, {markdown_path}, {png_path}")
