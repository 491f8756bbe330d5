"""The report's PNG plots (matplotlib, headless), sized and labelled for a paper. Each returns its file name,
or None when the runs hold no data for it (CPU runs have no NVML figures, one GPU count has no scaling), so
no empty axes are ever written."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from report.columns import PROFILE_COLUMNS, ROUNDS_MARK, SHORT_MARK  # noqa: E402
from report.compare import FOLLOW_WORLD_SIZE, distinguishing  # noqa: E402
from report.formatting import fmt, label, model_title, placement  # noqa: E402
from report.rows import Row, study  # noqa: E402
from train.contract.experiment import PRECISIONS as PRECISION_ORDER  # noqa: E402
from train.contract.metrics import PROFILE_CLASS_NAMES, PROFILE_CLASSES  # noqa: E402

COLOURS = dict(zip(PRECISION_ORDER, ["#4c72b0", "#8172b3", "#dd8452", "#c44e52", "#55a868", "#937860", "#da8bc3",
                                     "#8c8c8c"]))


def _save(fig, out_dir: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=130)
    plt.close(fig)
    return name


def _precisions(rows):
    present = {r.precision for r in rows}
    return [p for p in PRECISION_ORDER if p in present] + sorted(present - set(PRECISION_ORDER))


def _legend(ax, rows, **kw):
    handles = [Patch(color=COLOURS.get(p, "grey"), label=p) for p in _precisions(rows)]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, **kw)


def _hbars(ax, rows: list[Row], column: str, names: list[str], unit: str = ""):
    """One horizontal bar per row: its median, labelled with its value, min–max over repeats as error bars."""
    ys = range(len(rows))
    values = [r.values[column] for r in rows]
    lo = [v - r.spread.get(column, (v, v))[0] for r, v in zip(rows, values)]
    hi = [r.spread.get(column, (v, v))[1] - v for r, v in zip(rows, values)]
    bars = ax.barh(ys, values, color=[COLOURS.get(r.precision, "grey") for r in rows])
    spread = [i for i in ys if lo[i] or hi[i]]  # a single run has no spread: no zero-width whisker
    if spread:
        ax.errorbar([values[i] for i in spread], spread, xerr=[[lo[i] for i in spread], [hi[i] for i in spread]],
                    fmt="none", capsize=3, elinewidth=1, ecolor="#333")
    for bar, r in zip(bars, rows):
        if r.short:
            bar.set_hatch("//")
    for y, r, v, up in zip(ys, rows, values, hi):  # past the error bar, so the two never overlap
        marks = (f" {ROUNDS_MARK}" if column in r.over_rounds else "") + (f" {SHORT_MARK}" if column in r.flagged else "")
        ax.annotate(fmt(column, v) + unit + marks, (v + up, y),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.invert_yaxis()  # first row on top, as in the table
    ax.margins(x=0.18)  # room for the value labels
    ax.spines[["top", "right"]].set_visible(False)


def _height(n: int) -> float:
    return max(2.6, 0.32 * n + 1.4)


def throughput(rows: list[Row], where: tuple[str, int], out_dir: str) -> str | None:
    rows = [r for r in rows if (r.device, r.gpus) == where and r.values.get("images_per_s")]
    if not rows:
        return None
    keys = distinguishing(rows)
    fig, ax = plt.subplots(figsize=(8, _height(len(rows))))
    _hbars(ax, rows, "images_per_s", [f"{model_title(r.model)} {label(r, keys)}" for r in rows])
    rounds = f", or over a benchmark's rounds {ROUNDS_MARK}" if any(r.over_rounds for r in rows) else ""
    ax.set_xlabel(f"images/s (median over repeats{rounds}; bars: min–max)")
    ax.set_title(f"Training throughput, {placement(*where)}")
    _legend(ax, rows)
    if any(r.short for r in rows):
        fig.text(0.99, 0.01, f"{SHORT_MARK} hatched: too short to measure", ha="right", va="bottom", fontsize=7)
    return _save(fig, out_dir, "throughput.png")


def scaling(rows: list[Row], model: str, out_dir: str) -> str | None:
    """Whole-job images/s against GPU count, per family of rows identical but for the GPU count."""
    rows = [r for r in rows if r.model == model and r.device != "cpu" and r.gpus and r.values.get("images_per_s")]
    families: dict[tuple, list[Row]] = {}
    for r in rows:
        families.setdefault(tuple((n, v) for n, v in r.key if n not in ("world_size", *FOLLOW_WORLD_SIZE)), []).append(r)
    families = {k: sorted(f, key=lambda r: r.gpus) for k, f in families.items() if len({r.gpus for r in f}) > 1}
    if not families:
        return None
    keys = distinguishing([f[0] for f in families.values()])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    counts = sorted({r.gpus for f in families.values() for r in f})
    for family in families.values():
        colour = COLOURS.get(family[0].precision, "grey")
        xs, ys = [r.gpus for r in family], [r.values["images_per_s"] for r in family]
        err = [[y - r.spread["images_per_s"][0] for r, y in zip(family, ys)],
               [r.spread["images_per_s"][1] - y for r, y in zip(family, ys)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=colour, label=label(family[0], keys))
        for r in family:
            if r.short or "scaling_efficiency" in r.flagged:
                ax.annotate(SHORT_MARK, (r.gpus, r.values["images_per_s"]), textcoords="offset points",
                            xytext=(5, 5), fontsize=9)
        one = next((r for r in family if r.gpus == 1), None)
        if one:  # ideal: N times the 1-GPU throughput
            ax.plot(counts, [one.values["images_per_s"] * n for n in counts], linestyle="--", color=colour,
                    alpha=0.45, linewidth=1)
    ax.plot([], [], linestyle="--", color="grey", label="ideal (N × 1 GPU)")
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("GPUs")
    ax.set_ylabel("images/s, whole job (median)")
    ax.set_title(f"Scaling with GPU count, {model_title(model)}")
    ax.legend(fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out_dir, "scaling.png")


MEMORY_PARTS = [("params_mib", "weights", "#4c72b0"), ("grads_mib", "gradients", "#dd8452"),
                ("optimizer_mib", "optimizer state", "#55a868"), ("activations_mib", "activations + workspace", "#c44e52"),
                ("other_mib", "data set + measurement copy", "#bbbbbb")]


def _stacked(ax, rows: list[Row], names: list[str]):
    """One stacked bar per row: where its training memory goes (medians of each part), total labelled."""
    ys = list(range(len(rows)))
    left = [0.0] * len(rows)
    for column, name, colour in MEMORY_PARTS:
        widths = [r.values.get(column) or 0.0 for r in rows]
        if any(widths):
            ax.barh(ys, widths, left=left, color=colour, label=name)
            left = [a + b for a, b in zip(left, widths)]
    for y, total in zip(ys, left):
        ax.annotate(f"{total:,.0f}", (total, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(ys, names, fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.18)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def memory_and_size(rows: list[Row], model: str, where: tuple[str, int], out_dir: str) -> str | None:
    """Where training memory goes (weights, gradients, optimizer state from the tensors; on GPUs activations and
    the rest of the allocator peak) as a stacked bar per row, beside the checkpoint size. Rows without the parts
    (older runs) show their allocator peak instead."""
    rows = study(rows, model, where)
    with_parts = [r for r in rows if r.values.get("params_mib") is not None]
    panels = []
    if with_parts:
        panels.append(("parts", "training memory by part (MiB)"))
    if any(r.values.get("peak_mem_gib") is not None for r in rows if r not in with_parts):
        panels.append(("peak_mem_gib", "peak memory, allocator (GiB)"))
    if any(r.values.get("ckpt_mib") is not None for r in rows):
        panels.append(("ckpt_mib", "checkpoint (MiB)"))
    if not panels:
        return None
    keys = distinguishing(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels) + (1.5 if with_parts else 0),
                                                      _height(len(rows))), squeeze=False)
    for ax, (column, title) in zip(axes[0], panels):
        if column == "parts":
            _stacked(ax, with_parts, [label(r, keys) for r in with_parts])
        else:
            have = [r for r in rows if r.values.get(column) is not None
                    and (column != "peak_mem_gib" or r not in with_parts)]
            _hbars(ax, have, column, [label(r, keys) for r in have])
        ax.set_xlabel(title)
    fig.suptitle(f"Memory and model size by precision, {model_title(model)}, {placement(*where)}")
    return _save(fig, out_dir, "memory_size.png")


def lost_updates(rows: list[Row], model: str, where: tuple[str, int], out_dir: str) -> str | None:
    """Share of weight elements whose update rounded away (non-zero gradient, weight unchanged), run mean."""
    rows = [r for r in study(rows, model, where) if r.values.get("lost_update_pct") is not None]
    if not rows:
        return None
    keys = distinguishing(rows)
    fig, ax = plt.subplots(figsize=(8, _height(len(rows))))
    _hbars(ax, rows, "lost_update_pct", [label(r, keys) for r in rows], unit="%")
    ax.set_xlabel("weight updates rounded away, % of elements per step (mean over the run)")
    ax.set_title(f"Lost updates by precision, {model_title(model)}, {placement(*where)}")
    return _save(fig, out_dir, "lost_updates.png")


def _target_lines(ax, pcts: list[str]):
    for pct in pcts:
        value = float(pct.replace("_", "."))
        ax.axhline(value, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"{value:g}%", (1, value), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=7, color="grey")


def accuracy_vs_time(rows: list[Row], out_dir: str, runs_by_label: dict | None = None) -> str | None:
    """Test accuracy against cumulative training time (evaluation excluded): one run per row of the study
    ({label: (precision, run)}) from its per-evaluation history, each target as a dotted line and each run's
    first crossing of it as a marker. Runs that logged no curve (older runs): best accuracy against total time,
    every run, with the targets marked."""
    pcts = sorted({pct for r in rows for pct in r.tta}, key=lambda p: float(p.replace("_", ".")))
    curves = {}
    for name, (precision, run) in (runs_by_label or {}).items():
        points = [(h["cum/train_s"], 100 * h["test/acc"]) for h in run.history(["cum/train_s"])
                  if isinstance(h.get("cum/train_s"), (int, float)) and isinstance(h.get("test/acc"), (int, float))]
        if points:
            hits = [(float(hit["time_s"]), float(pct.replace("_", "."))) for pct in pcts
                    if isinstance(hit := run.summary.get(f"time_to_acc/{pct}"), dict) and "time_s" in hit]
            curves[name] = (precision, points, hits)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if curves:
        for name, (precision, points, hits) in curves.items():
            ax.plot([x for x, _ in points], [y for _, y in points], marker=".", color=COLOURS.get(precision),
                    label=name)
            if hits:
                ax.scatter([x for x, _ in hits], [y for _, y in hits], marker="o", facecolors="none",
                           edgecolors=COLOURS.get(precision), s=60, zorder=3)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Test accuracy against training time (circles: first reached a target)")
    else:
        points = [(r, m) for r in rows for _, m in r.runs
                  if m.get("best_test_acc") is not None and m.get("train_time_s") is not None]
        if not points:
            plt.close(fig)
            return None
        for p in _precisions([r for r, _ in points]):
            xs = [m["train_time_s"] for r, m in points if r.precision == p]
            ys = [m["best_test_acc"] for r, m in points if r.precision == p]
            ax.scatter(xs, ys, label=p, color=COLOURS.get(p))
        ax.set_ylabel("best test accuracy (%)")
        ax.set_title("Accuracy against training time, every run")
    _target_lines(ax, pcts)
    ax.set_xlabel("training time (s), evaluation excluded")
    ax.legend(fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out_dir, "accuracy_time.png")


BANDWIDTH_KEYS = ["nvml/pcie_tx_bytes_per_s", "nvml/pcie_rx_bytes_per_s", "nvml/nvlink_tx_bytes_per_s",
                  "nvml/nvlink_rx_bytes_per_s", "comm/busbw_bytes_per_s"]


def bandwidth_over_steps(runs_by_label: dict, out_dir: str) -> str | None:
    """One run per row ({label: (precision, run)}): its link traffic per logged window, on the train/step axis.
    A series that is all zero is a figure not measured (busbw of one process), so it is not drawn."""
    series = {}
    for name, (precision, run) in runs_by_label.items():
        rows = run.history(BANDWIDTH_KEYS)
        for key in BANDWIDTH_KEYS:
            points = [(row["train/step"], row[key]) for row in rows
                      if isinstance(row.get(key), (int, float)) and "train/step" in row]
            if any(v for _, v in points):
                series[(name, precision, key)] = points
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    styles = {"pcie_tx": "-", "pcie_rx": "--", "nvlink_tx": "-.", "nvlink_rx": ":", "busbw": (0, (1, 3))}
    for (name, precision, key), points in series.items():
        short = key.split("/")[1].removesuffix("_bytes_per_s")
        ax.plot([s for s, _ in points], [v / 1e9 for _, v in points], label=f"{name} {short}",
                color=COLOURS.get(precision), linestyle=styles.get(short, "-"))
    ax.set_xlabel("train/step")
    ax.set_ylabel("GB/s")
    ax.set_title("Bandwidth over training steps")
    ax.legend(fontsize=7, ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out_dir, "bandwidth.png")


def step_breakdown(rows: list[Row], out_dir: str) -> str | None:
    """The profiled step by operation class, one stacked bar per profiled row: every precision, model and GPU
    count side by side (docs/profile.md). None when no run was profiled."""
    rows = [r for r in rows if r.values.get("prof_step_ms")]
    if not rows:
        return None
    keys = distinguishing(rows)
    colours = plt.get_cmap("tab20").colors
    fig, ax = plt.subplots(figsize=(9, _height(len(rows))))
    ys, left = list(range(len(rows))), [0.0] * len(rows)
    for i, (cls, column) in enumerate(zip(PROFILE_CLASSES, PROFILE_COLUMNS)):
        widths = [r.values.get(column) or 0.0 for r in rows]
        if any(widths):
            ax.barh(ys, widths, left=left, color=colours[i % len(colours)], label=PROFILE_CLASS_NAMES[cls])
            left = [a + b for a, b in zip(left, widths)]
    for y, total in zip(ys, left):
        ax.annotate(f"{total:,.0f} ms", (total, y), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize=8)
    ax.set_yticks(ys, [f"{model_title(r.model)}, {r.where}, {label(r, keys)}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.15)
    ax.set_xlabel("ms per profiled step (median over runs), by operation class")
    ax.set_title("Where the step's time goes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out_dir, "step_breakdown.png")
